// test_util.h: what the library's unit tests (lib/*_test.c) share, so each test file holds
// only its checks. A failed check() ends the program at once (another thread may be stuck:
// that can be the failure), expect() counts and goes on; every wait has a deadline stretched
// by TIMEOUT_SCALE; a watchdog bounds each part, whatever thread is stuck; a loop can run in a
// thread of its own (runner). Static functions only: each test is one program, and a test
// that does not use a helper gets no warning for it. Not part of the library.
#ifndef RX_TEST_UTIL_H
#define RX_TEST_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

#define TU_UNUSED __attribute__((unused))

// ------------------------------------------------------------------------ checks

// TIMEOUT_SCALE (tests/run sets it from the load): every deadline here is multiplied by it.
static double scale TU_UNUSED = 1;

static inline void scale_init(void)
{
    const char *s = getenv("TIMEOUT_SCALE");
    if (s != NULL && strtod(s, NULL) > 0)
        scale = strtod(s, NULL);
}

// Prints "FAIL: " and the message, then ends the program now: _exit, so a stuck thread (a
// deadlock can be the failure) is not waited for.
static inline _Noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline _Noreturn void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    _exit(1);
}

// OK, or the test fails here. Prints "ok: " and the message (the bats test reads them).
static inline void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void check(bool ok, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (!ok)
        fail("%s", what);
    printf("ok: %s\n", what);
    fflush(stdout);
}

// A check that goes on after a failure (the test reports them all and exits 1 at its end).
static int checks TU_UNUSED, failures TU_UNUSED;

static inline void expect(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void expect(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", ok ? "ok" : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    checks++;
    if (!ok)
        failures++;
}

// ------------------------------------------------------------------------- time

static inline double now_s(void)  // monotonic seconds
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

// The CLOCK_REALTIME moment SECONDS (x TIMEOUT_SCALE) from now: a deadline for the waits
// that take one (sem_timedwait, pthread_timedjoin_np).
static inline struct timespec realtime_in(double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double s = ts.tv_nsec / 1e9 + seconds * scale;
    ts.tv_sec += (time_t)s;
    ts.tv_nsec = (long)((s - (double)(time_t)s) * 1e9);
    return ts;
}

// Waits for S, at most SECONDS (x TIMEOUT_SCALE); fails with WHAT after that.
static inline void wait_sem(sem_t *s, double seconds, const char *what)
{
    struct timespec dl = realtime_in(seconds);
    while (sem_timedwait(s, &dl) == -1) {
        if (errno == ETIMEDOUT)
            fail("%s: not within %.1f s", what, seconds * scale);
        if (errno != EINTR)
            fail("sem_timedwait: %s", strerror(errno));
    }
}

// ---------------------------------------------------------------------- watchdog

// Fails the test when a part runs past its deadline (a deadlock in a post, a lost wakeup),
// whatever thread is stuck. dog_start once, then dog_arm at the start of every part.
static pthread_mutex_t dog_lock TU_UNUSED = PTHREAD_MUTEX_INITIALIZER;
static char dog_what[128] TU_UNUSED;
static double dog_deadline TU_UNUSED;  // monotonic seconds; 0: disarmed

static inline void *dog_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&dog_lock);
        if (dog_deadline > 0 && now_s() > dog_deadline)
            fail("%s: still running at its deadline (a deadlock or a lost wakeup?)", dog_what);
        pthread_mutex_unlock(&dog_lock);
        struct timespec tick = {0, 50 * 1000 * 1000};
        nanosleep(&tick, NULL);
    }
    return NULL;
}

static inline void dog_start(void)
{
    pthread_t dog;
    int err = pthread_create(&dog, NULL, dog_main, NULL);
    if (err != 0)
        fail("pthread_create (watchdog): %s", strerror(err));
    pthread_detach(dog);
}

// The part WHAT must end within SECONDS (x TIMEOUT_SCALE) from now.
static inline void dog_arm(const char *what, double seconds)
{
    pthread_mutex_lock(&dog_lock);
    snprintf(dog_what, sizeof dog_what, "%s", what);
    dog_deadline = now_s() + seconds * scale;
    pthread_mutex_unlock(&dog_lock);
}

// ------------------------------------------------------------ a loop in a thread

struct runner {
    rx_loop *loop;
    pthread_t thread;
    int rc;
};

static inline void *runner_main(void *arg)
{
    struct runner *r = arg;
    r->rc = loop_run(r->loop);
    return NULL;
}

static inline void runner_start(struct runner *r, const char *name)
{
    r->loop = loop_new(name);
    if (r->loop == NULL)
        fail("loop_new");
    int err = pthread_create(&r->thread, NULL, runner_main, r);
    if (err != 0)
        fail("pthread_create: %s", strerror(err));
}

static inline void stop_task(void *arg)
{
    loop_stop(arg);
}

// Posts loop_stop to R's loop, joins its thread (within 10 s x TIMEOUT_SCALE), fills ST,
// frees the loop.
static inline void runner_finish(struct runner *r, struct loop_stats *st)
{
    if (rx_loop_post(r->loop, stop_task, r->loop) == -1)
        fail("rx_loop_post(stop)");
    struct timespec dl = realtime_in(10);
    int err = pthread_timedjoin_np(r->thread, NULL, &dl);
    if (err != 0)
        fail("the loop thread did not end within 10 s of loop_stop (a lost wakeup?): %s",
             strerror(err));
    if (r->rc != 0)
        fail("loop_run returned %d", r->rc);
    loop_get_stats(r->loop, st);
    loop_free(r->loop);
}

#endif
