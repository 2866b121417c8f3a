// taskq.c: a loop's task queue. Producers append under a mutex; the loop's thread swaps the
// whole array out under the same mutex and runs it outside, so the lock is held for a few
// stores, never for the work (taskq.h says why that matters: a task may push again).
#include "taskq.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

int taskq_init(struct taskq *q)
{
    int err = pthread_mutex_init(&q->lock, NULL);
    if (err != 0) {
        errno = err;
        return -1;
    }
    q->pending = (struct task_vec){NULL, 0, 0};
    return 0;
}

void taskq_destroy(struct taskq *q)
{
    task_vec_free(&q->pending);
    pthread_mutex_destroy(&q->lock);
}

int taskq_push(struct taskq *q, void (*fn)(void *arg), void *arg)
{
    int ret = -1;
    pthread_mutex_lock(&q->lock);
    struct task_vec *v = &q->pending;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;  // doubling: a push is amortised O(1)
        struct task *nv = realloc(v->v, cap * sizeof *nv);
        if (nv != NULL) {
            v->v = nv;
            v->cap = cap;
        }
    }
    if (v->n < v->cap) {
        ret = v->n == 0;
        v->v[v->n++] = (struct task){fn, arg};
    }
    pthread_mutex_unlock(&q->lock);
    return ret;
}

void taskq_take(struct taskq *q, struct task_vec *out)
{
    assert(out->n == 0);
    pthread_mutex_lock(&q->lock);
    // LAB BEGIN task_queue: swap q->pending with *OUT (OUT is empty: its array goes back to the producers, so a steady loop allocates nothing)
    // LAB STUB: (void)out;  // not written: nothing is taken (run_tasks' stub runs the queue in place)
    struct task_vec t = q->pending;
    q->pending = *out;
    *out = t;
    // LAB END
    pthread_mutex_unlock(&q->lock);
}

void task_vec_free(struct task_vec *v)
{
    free(v->v);
    *v = (struct task_vec){NULL, 0, 0};
}
