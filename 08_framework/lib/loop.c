// loop.c: one event loop per thread (rx_loop): a poller, a timer heap, a task queue and the
// eventfd that wakes the loop when another thread posts. The turn is loop_run's five steps.
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "poller.h"
#include "taskq.h"
#include "timer.h"

// How many ready descriptors one wait hands back. More ready than this are not lost: the
// poller is level-triggered and reports the rest on the next turn.
#define LOOP_MAX_EVENTS 256

struct rx_loop {
    char name[16];
    struct poller *poller;
    struct timer_heap timers;   // of struct rx_timer (below), by deadline
    struct taskq q;             // any thread pushes; this loop's thread swaps it out
    struct task_vec running;    // the tasks of the current step 3 (its array reused)
    bool self_posted;           // this thread posted since the last swap: do not wait
    int wake_fd;                // eventfd: written by a post that found the queue empty
    struct watch wake;          // ... and watched for reading like any descriptor
    atomic_bool stop;           // loop_stop (any thread)
    uint64_t now_ms;            // rx_loop_now_ms: the monotonic clock at the turn's start
    void (*turn_end)(void *arg);
    void *turn_end_arg;
    // The ready descriptors of the turn being handled: loop_unwatch clears a watch's later
    // entries, so a watch freed by an earlier handler of the same turn is never called.
    struct poller_event ready[LOOP_MAX_EVENTS];
    int n_ready, i_ready;
    // Statistics (loop_stats). The first two are counted by any thread.
    atomic_ullong posts, wakeups_written;
    unsigned long long turns, wakeups_read, tasks_run, timers_fired, n_timers, rewatches;
};

// A timer: the heap entry plus what to call. Owned by the loop from rx_timer_start until it
// is freed: after a one-shot's callback, or by rx_timer_stop.
struct rx_timer {
    struct timer t;      // first: the heap's struct timer * is also the rx_timer *
    rx_timer_fn *fn;
    void *arg;
    uint64_t repeat_ms;  // 0: one-shot
    bool firing;         // its callback is running: rx_timer_stop only marks it ...
    bool stopped;        // ... stopped, and the firing code frees it once the callback returns
};

static _Thread_local rx_loop *current_loop;

static uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  // cannot fail with a valid clock and pointer
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

// ------------------------------------------------------------------------------- wakeups

// Any thread. One write of 1 to the eventfd: the loop's next wait returns at once.
static void wake(rx_loop *loop)
{
    // Counted before the write, so the loop it wakes never sees the wakeup uncounted.
    atomic_fetch_add(&loop->wakeups_written, 1);
    uint64_t one = 1;
    for (;;) {
        if (write(loop->wake_fd, &one, sizeof one) == (ssize_t)sizeof one)
            break;
        if (errno == EINTR)
            continue;
        // EAGAIN: the counter is near 2^64 - 1, so a wakeup is already pending: nothing lost.
        if (errno != EAGAIN)
            rx_log(RX_LOG_ERROR, "loop %s: write(eventfd): %s", loop->name, strerror(errno));
        break;
    }
}

// Step 2's handler for the eventfd: reads (resets) it and nothing else; the tasks it announced
// run in step 3. That order is what makes the wakeup impossible to lose: see rx_loop_post.
static void wake_cb(struct watch *w, unsigned ready)
{
    (void)ready;
    rx_loop *loop = (rx_loop *)((char *)w - offsetof(rx_loop, wake));
    uint64_t n;
    ssize_t r;
    while ((r = read(loop->wake_fd, &n, sizeof n)) == -1 && errno == EINTR)
        ;
    if (r == (ssize_t)sizeof n)
        loop->wakeups_read++;
    else if (r == -1 && errno != EAGAIN)
        rx_log(RX_LOG_ERROR, "loop %s: read(eventfd): %s", loop->name, strerror(errno));
}

int rx_loop_post(rx_loop *loop, void (*fn)(void *arg), void *arg)
{
    atomic_fetch_add_explicit(&loop->posts, 1, memory_order_relaxed);
    int was_empty = taskq_push(&loop->q, fn, arg);
    if (was_empty == -1)
        return -1;
    // LAB BEGIN task_queue: wake the loop (wake) only when the queue was empty before (was_empty == 1) and the caller is another thread; from the loop's own thread set loop->self_posted instead
    // LAB STUB: wake(loop);  // not written: every post writes a wakeup, from any thread, whatever the queue held
    if (current_loop == loop) {
        // The loop's own thread (a task, a timer, a handler): it is not waiting, and step 1
        // of its next turn will not wait either (self_posted), so no wakeup is needed.
        loop->self_posted = true;
    } else if (was_empty == 1) {
        // The push comes first, the wakeup after it. The loop reads the eventfd (step 2)
        // before it swaps the queue (step 3); so either the swap sees this task, or the swap
        // came first, left the queue empty, and this push found it empty and writes a fresh
        // wakeup the loop has not read yet. Reading after the swap, or writing before the
        // push, opens a window where the task waits with no wakeup left to announce it.
        // A queue that was not empty has a wakeup in flight already (or a swap to come).
        wake(loop);
    }
    // LAB END
    return 0;
}

// --------------------------------------------------------------------------------- timers

uint64_t rx_loop_now_ms(const rx_loop *loop)
{
    return loop->now_ms;
}

rx_loop *rx_loop_current(void)
{
    return current_loop;
}

rx_timer *rx_timer_start(rx_loop *loop, uint64_t after_ms, uint64_t repeat_ms, rx_timer_fn *fn,
                         void *arg)
{
    rx_timer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    // Set up before the loop runs (from another thread): the cached time may be stale.
    if (current_loop != loop)
        loop->now_ms = clock_ms();
    // Delays past RX_TIMER_MAX_MS (about 146 million years) are that: a "never" sentinel
    // such as UINT64_MAX must not wrap the deadline into the past and fire at once.
    if (after_ms > RX_TIMER_MAX_MS)
        after_ms = RX_TIMER_MAX_MS;
    if (repeat_ms > RX_TIMER_MAX_MS)
        repeat_ms = RX_TIMER_MAX_MS;
    t->fn = fn;
    t->arg = arg;
    t->repeat_ms = repeat_ms;
    if (timer_heap_add(&loop->timers, &t->t, (long long)(loop->now_ms + after_ms)) == -1) {
        free(t);
        return NULL;
    }
    loop->n_timers++;
    return t;
}

static void timer_free(rx_loop *loop, rx_timer *t)
{
    loop->n_timers--;
    free(t);
}

void rx_timer_stop(rx_loop *loop, rx_timer *t)
{
    if (t->stopped)
        return;  // stopped inside its callback already (rule 5 allows one stop; be kind)
    if (!(t->firing && t->repeat_ms == 0))
        timer_heap_del(&loop->timers, &t->t);  // a firing one-shot is out of the heap already
    // LAB BEGIN timer_stop: if T's callback is running (t->firing), only mark it stopped: run_timers frees it once the callback returns; else free it now (timer_free)
    // LAB STUB: timer_free(loop, t);  // not written: freed at once, even from inside its own callback
    if (t->firing)
        t->stopped = true;
    else
        timer_free(loop, t);
    // LAB END
}

// Step 4: runs every timer whose deadline has come (deadline <= now), earliest first. A timer
// a callback starts with after_ms 0 is due at once and runs in this same step.
static void run_timers(rx_loop *loop)
{
    long long now = (long long)loop->now_ms;
    struct timer *first;
    while ((first = timer_heap_first(&loop->timers)) != NULL && first->deadline <= now) {
        rx_timer *t = (rx_timer *)first;
        if (t->repeat_ms == 0) {
            timer_heap_del(&loop->timers, first);
        } else {
            // Re-armed from its own deadline, not from now, so it keeps its grid (no drift
            // from late turns); a period missed entirely (the loop was busy for longer) is
            // skipped, not fired in a catch-up burst: the next deadline is the first grid
            // point after now, so a timer fires at most once per turn.
            long long p = (long long)t->repeat_ms;
            long long next = first->deadline + p;
            if (next <= now)
                next += ((now - next) / p + 1) * p;
            timer_heap_move(&loop->timers, first, next);
        }
        t->firing = true;
        loop->timers_fired++;
        t->fn(loop, t, t->arg);
        t->firing = false;
        // One free, here, whichever way it ends: a one-shot always, a repeating timer if its
        // callback stopped it (rx_timer_stop took it out of the heap and left it to us).
        if (t->repeat_ms == 0 || t->stopped)
            timer_free(loop, t);
    }
}

// Step 1's timeout: until the earliest deadline, 0 if it has passed, -1 with no timers.
static int timer_timeout(const rx_loop *loop, uint64_t now)
{
    const struct timer *first = timer_heap_first(&loop->timers);
    if (first == NULL)
        return -1;
    if (first->deadline <= (long long)now)
        return 0;
    long long ms = first->deadline - (long long)now;
    return ms > 24 * 3600 * 1000 ? 24 * 3600 * 1000 : (int)ms;  // poller takes an int
}

// ---------------------------------------------------------------------------- the loop

rx_loop *loop_new(const char *name)
{
    rx_loop *loop = calloc(1, sizeof *loop);
    if (loop == NULL) {
        rx_log(RX_LOG_ERROR, "loop %s: out of memory", name);
        return NULL;
    }
    snprintf(loop->name, sizeof loop->name, "%s", name);
    loop->wake_fd = -1;
    if (taskq_init(&loop->q) == -1) {
        rx_log(RX_LOG_ERROR, "loop %s: mutex: %s", name, strerror(errno));
        free(loop);
        return NULL;
    }
    loop->poller = poller_new();
    if (loop->poller == NULL) {
        rx_log(RX_LOG_ERROR, "loop %s: %s: %s", name, poller_backend(), strerror(errno));
        goto fail;
    }
    // NONBLOCK: the read in wake_cb must not block if another handler read it first; CLOEXEC:
    // a program the application runs must not inherit it.
    loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd == -1) {
        rx_log(RX_LOG_ERROR, "loop %s: eventfd: %s", name, strerror(errno));
        goto fail;
    }
    loop->wake = (struct watch){loop->wake_fd, 0, wake_cb};
    if (loop_watch(loop, &loop->wake, LOOP_READ) == -1) {
        rx_log(RX_LOG_ERROR, "loop %s: watching the eventfd: %s", name, strerror(errno));
        goto fail;
    }
    timer_heap_free(&loop->timers);  // the empty heap
    loop->now_ms = clock_ms();
    return loop;
fail:
    if (loop->wake_fd != -1)
        close(loop->wake_fd);
    poller_free(loop->poller);
    taskq_destroy(&loop->q);
    free(loop);
    return NULL;
}

void loop_free(rx_loop *loop)
{
    if (loop == NULL)
        return;
    // The loop owns its timers: those still armed are freed with it.
    struct timer *t;
    while ((t = timer_heap_first(&loop->timers)) != NULL) {
        timer_heap_del(&loop->timers, t);
        timer_free(loop, (rx_timer *)t);
    }
    timer_heap_free(&loop->timers);
    poller_free(loop->poller);
    close(loop->wake_fd);
    taskq_destroy(&loop->q);
    task_vec_free(&loop->running);
    if (current_loop == loop)
        current_loop = NULL;
    free(loop);
}

const char *loop_name(const rx_loop *loop)
{
    return loop->name;
}

int loop_watch(rx_loop *loop, struct watch *w, unsigned events)
{
    if (poller_add(loop->poller, w->fd, events, w) == -1)
        return -1;
    w->events = events;
    return 0;
}

int loop_rewatch(rx_loop *loop, struct watch *w, unsigned events)
{
    if (events == w->events)
        return 0;  // no system call: a connection rewatched every turn costs nothing
    if (poller_mod(loop->poller, w->fd, events, w) == -1)
        return -1;
    loop->rewatches++;
    w->events = events;
    return 0;
}

void loop_unwatch(rx_loop *loop, struct watch *w)
{
    if (poller_del(loop->poller, w->fd, w->events) == -1)
        rx_log(RX_LOG_WARN, "loop %s: unwatching fd %d: %s", loop->name, w->fd, strerror(errno));
    w->events = 0;
    // Its events later in this turn's list are dropped: the owner may free W right after.
    for (int i = loop->i_ready + 1; i < loop->n_ready; i++)
        if (loop->ready[i].data == w)
            loop->ready[i].data = NULL;
}

void loop_on_turn_end(rx_loop *loop, void (*fn)(void *arg), void *arg)
{
    loop->turn_end = fn;
    loop->turn_end_arg = arg;
}

void loop_bind_thread(rx_loop *loop)
{
    current_loop = loop;
    rx_thread_set_name(loop->name);
}

// Step 3: the tasks posted since the last swap, oldest first.
static void run_tasks(rx_loop *loop)
{
    loop->self_posted = false;
    // LAB BEGIN task_queue: swap the queue out (taskq_take into loop->running) and run its tasks outside the lock, oldest first (count them in loop->tasks_run); then empty loop->running (its array is reused)
    // LAB STUB: for (;;) {  // not written: one task at a time off the front, under the lock, until none is left
    // LAB STUB:     pthread_mutex_lock(&loop->q.lock);
    // LAB STUB:     struct task_vec *v = &loop->q.pending;
    // LAB STUB:     if (v->n == 0) {
    // LAB STUB:         pthread_mutex_unlock(&loop->q.lock);
    // LAB STUB:         break;
    // LAB STUB:     }
    // LAB STUB:     struct task t = v->v[0];
    // LAB STUB:     memmove(v->v, v->v + 1, --v->n * sizeof *v->v);
    // LAB STUB:     pthread_mutex_unlock(&loop->q.lock);
    // LAB STUB:     t.fn(t.arg);
    // LAB STUB:     loop->tasks_run++;
    // LAB STUB: }
    taskq_take(&loop->q, &loop->running);
    for (size_t i = 0; i < loop->running.n; i++)
        loop->running.v[i].fn(loop->running.v[i].arg);
    loop->tasks_run += loop->running.n;
    loop->running.n = 0;
    // LAB END
}

int loop_run(rx_loop *loop)
{
    loop_bind_thread(loop);
    do {
        // 1. Wait: not at all when this thread posted tasks (nobody will write the eventfd
        //    for them), else until the earliest timer.
        int timeout = loop->self_posted ? 0 : timer_timeout(loop, clock_ms());
        int n = poller_wait(loop->poller, loop->ready, LOOP_MAX_EVENTS, timeout);
        if (n == -1) {
            rx_log(RX_LOG_ERROR, "loop %s: %s wait: %s", loop->name, poller_backend(),
                   strerror(errno));
            return -1;
        }
        loop->now_ms = clock_ms();
        loop->turns++;
        // 2. The ready descriptors (the eventfd among them: wake_cb only reads it). A watch's
        //    events are masked by what it watches now: an earlier handler may have changed it.
        loop->n_ready = n;
        for (loop->i_ready = 0; loop->i_ready < n; loop->i_ready++) {
            struct watch *w = loop->ready[loop->i_ready].data;
            unsigned ready = w ? loop->ready[loop->i_ready].events & w->events : 0;
            if (ready)
                w->cb(w, ready);
        }
        loop->n_ready = 0;
        // 3. The tasks, swapped out under the lock and run outside it.
        run_tasks(loop);
        // 4. The timers that are due.
        run_timers(loop);
        // 5. The turn-end hook.
        if (loop->turn_end)
            loop->turn_end(loop->turn_end_arg);
    } while (!atomic_exchange(&loop->stop, false));
    return 0;
}

void loop_stop(rx_loop *loop)
{
    atomic_store(&loop->stop, true);
    if (current_loop != loop)
        wake(loop);  // it may be waiting; from its own thread it is not
}

void loop_get_stats(const rx_loop *loop, struct loop_stats *out)
{
    *out = (struct loop_stats){
        .turns = loop->turns,
        .posts = atomic_load(&loop->posts),
        .wakeups_written = atomic_load(&loop->wakeups_written),
        .wakeups_read = loop->wakeups_read,
        .tasks_run = loop->tasks_run,
        .timers_fired = loop->timers_fired,
        .timers = loop->n_timers,
        .rewatches = loop->rewatches,
    };
}

// (added by the coordinator for the server's cleanup: see loop.h)
void loop_run_pending(rx_loop *loop)
{
    // A task may post again (a batch applied late closes a session, whose event is posted):
    // bounded rounds, each of which runs what the previous one left.
    for (int round = 0; round < 16; round++) {
        unsigned long long before = loop->tasks_run;
        run_tasks(loop);
        if (loop->tasks_run == before)
            break;
    }
}
