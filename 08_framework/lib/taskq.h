// taskq.h: a loop's task queue: any thread pushes, the loop's thread takes everything at once.
// The lock covers a push and the swap, never the running of a task, so a task may push again
// (to its own loop too) without deadlock, and a slow task never blocks the producers.
#ifndef RX_TASKQ_H
#define RX_TASKQ_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct task {
    void (*fn)(void *arg);
    void *arg;
};

// A growable array of tasks, oldest first.
struct task_vec {
    struct task *v;
    size_t n, cap;
};

struct taskq {
    pthread_mutex_t lock;
    struct task_vec pending;  // under lock
};

int taskq_init(struct taskq *q);     // 0, or -1 (errno)
void taskq_destroy(struct taskq *q); // the pending tasks are dropped (not run)

// Any thread. Appends FN(ARG). Returns 1 when the queue was empty before (the caller then
// writes the wakeup: only then, so a busy loop is woken once, not once per task), 0 when it
// was not, -1 when out of memory (nothing appended).
int taskq_push(struct taskq *q, void (*fn)(void *arg), void *arg);

// Loop thread. Swaps the pending tasks with OUT (which must be empty: n == 0; its array is
// reused, so a steady loop allocates nothing). The caller runs OUT->v[0..n) outside any lock,
// then sets OUT->n = 0.
void taskq_take(struct taskq *q, struct task_vec *out);

void task_vec_free(struct task_vec *v);

#endif
