// loop.h: the library's view of a loop (rx_loop): descriptors watched through the poller,
// timers, the task queue and its eventfd wakeup, and a hook run at the end of every turn.
// Applications see only rx_loop_post and the timers (rx.h).
#ifndef RX_LOOP_H
#define RX_LOOP_H

#include "rx.h"

enum { LOOP_READ = 1, LOOP_WRITE = 2 };

// A descriptor watched by a loop, embedded in what owns the descriptor (a connection, the
// listener, a connector). CB gets LOOP_READ and/or LOOP_WRITE; an error or hang-up is
// reported as both, so the owner's next read or write sees it.
struct watch {
    int fd;
    unsigned events;  // what is watched now (0: registered but quiet)
    void (*cb)(struct watch *w, unsigned ready);
};

// Loop thread (or before the loop runs). A new loop named NAME (log lines, thread name).
// NULL on failure (logged).
rx_loop *loop_new(const char *name);
// After the loop's thread has ended: frees it. Tasks never run are dropped (their args leak
// unless their owner frees them: the server drains every loop's queue before this).
void loop_free(rx_loop *loop);
const char *loop_name(const rx_loop *loop);

// Loop thread. Watches W->fd for EVENTS (0 allowed). Returns 0, or -1 (errno set, logged by
// the caller).
int loop_watch(rx_loop *loop, struct watch *w, unsigned events);
// Loop thread. Changes what W waits for; costs a system call only when EVENTS differ.
int loop_rewatch(rx_loop *loop, struct watch *w, unsigned events);
// Loop thread. Stops watching W (before its descriptor is closed).
void loop_unwatch(rx_loop *loop, struct watch *w);

// Loop thread. FN(ARG) runs at the end of every turn: after the ready descriptors, the
// tasks and the timers (the io threads flush their event batches and writes there).
void loop_on_turn_end(rx_loop *loop, void (*fn)(void *arg), void *arg);

// The loop's thread runs this: turns until loop_stop. Each turn, in order:
//   1. wait in the poller, at most until the earliest timer (0 when tasks are pending);
//   2. handle the ready descriptors (the wakeup eventfd among them: it is only read);
//   3. swap the task queue out under its lock and run the tasks outside it;
//   4. run the timers that are due;
//   5. the turn-end hook.
// Returns 0 after loop_stop, -1 on a poller error (logged).
int loop_run(rx_loop *loop);
// Any thread. The loop ends after its current turn (woken if it waits).
void loop_stop(rx_loop *loop);
// After the loop's thread has ended (or in it): runs the tasks still queued, in the calling
// thread, until none is left. The server's cleanup: a task often owns memory (a batch).
void loop_run_pending(rx_loop *loop);
// Loop thread: makes the calling thread LOOP's (rx_loop_current); loop_run does it too.
void loop_bind_thread(rx_loop *loop);

// Counters (read after the loop's thread ended, or in it).
struct loop_stats {
    unsigned long long turns, posts, wakeups_written, wakeups_read, tasks_run, timers_fired;
    unsigned long long timers;  // armed now (started, not yet freed)
    unsigned long long rewatches;  // loop_rewatch calls that changed the interest (a system call)
};
void loop_get_stats(const rx_loop *loop, struct loop_stats *out);

#endif
