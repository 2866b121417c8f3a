// delay_shim.c: an LD_PRELOAD library that widens the race a server's shutdown must survive.
// The first blocking wait the process makes (accept, select, poll, epoll_wait and their
// signal-mask variants) is delayed by DELAY_SHIM_MS (default 500) milliseconds, after a line
// on stderr that the test waits for before it sends SIGTERM.
//
// DELAY_SHIM_MAX_MS (default: DELAY_SHIM_MS) lets the window stay open longer for a signal
// that is late: when DELAY_SHIM_MS has passed with no SIGTERM or SIGINT yet, the delay goes
// on until one arrives, at most DELAY_SHIM_MAX_MS in all, and ends as soon as it does. On a
// busy machine the test may need more than 500 ms between reading the line and sending the
// signal; the window then waits for it instead of closing before it comes. Either way the
// shim says on stderr whether a signal arrived in the window, and the test requires it. It
// knows from its wrapper around the server's SIGTERM/SIGINT handlers (sigaction, below),
// which sees a handler run in any thread, or from the signal pending while blocked.
//
// A server that checks a stop flag and then blocks loses a signal that lands between the
// two: the handler sets the flag, and the wait that follows sleeps until the next event,
// which on an idle server never comes. The delay puts the signal exactly there. A server
// that waits with the signal blocked outside the wait (pselect, ppoll, epoll_pwait), or
// wakes through a self-pipe or signalfd, still sees it once the real wait starts.
//
// DELAY_SHIM_AT=sigmask moves the delay (the waits then run untouched): to the first
// sigprocmask or pthread_sigmask call that BLOCKS SIGTERM (SIG_BLOCK, or SIG_SETMASK with
// SIGTERM in the set), before the real call. That is where a server that checks its flag
// first and blocks the signals after it loses the signal: the handler runs in the delay and
// sets the flag after the check, and the wait that follows sleeps. A server that blocks first
// and then checks sees the flag set. (Calls that unblock, or restore a mask without SIGTERM,
// pass untouched, so a server may unblock the stop signals before it listens.)
//
// Built by the harness (tests/lib/harness.bash, delay_shim_path); not part of any stage.

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static atomic_int delayed;  // the first wait only: later ones run untouched

// 1 when DELAY_SHIM_AT=sigmask: delay the first call that blocks SIGTERM instead of a wait.
static int at_sigmask(void)
{
    const char *at = getenv("DELAY_SHIM_AT");
    return at != NULL && strcmp(at, "sigmask") == 0;
}

static void say(const char *msg)
{
    // write(2), not stdio: the server's stderr may be shared with its own log lines.
    ssize_t r = write(2, msg, strlen(msg));
    (void)r;
}

// seen_handler: set by the wrapper around the server's SIGTERM/SIGINT handlers (sigaction,
// below), so that a handler run by any thread counts, not only one that interrupts our sleep.
static atomic_int seen_handler;

static long env_ms(const char *name, long fallback)
{
    const char *env = getenv(name);
    return env != NULL && *env != '\0' ? strtol(env, NULL, 10) : fallback;
}

static long elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

// Did SIGTERM or SIGINT arrive? Its handler ran (in any thread: seen_handler; in this one it
// also interrupted nanosleep), or it is blocked and pending.
static const char *signal_seen(int interrupted)
{
    if (interrupted || atomic_load(&seen_handler))
        return "its handler ran";
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    if (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT))
        return "blocked, pending";
    return NULL;
}

// Sleeps DELAY_SHIM_MS out (a handler interrupting nanosleep does not shorten it), then, while
// no signal has come, goes on in 5 ms steps up to DELAY_SHIM_MAX_MS; then says whether a signal
// arrived meanwhile, so that the test can prove it hit the window.
static void delay_first(const char *name)
{
    if (atomic_exchange(&delayed, 1))
        return;
    long ms = env_ms("DELAY_SHIM_MS", 500);
    long max_ms = env_ms("DELAY_SHIM_MAX_MS", ms);
    if (max_ms < ms)
        max_ms = ms;
    char line[200];
    if (max_ms > ms)
        snprintf(line, sizeof line,
                 "delay-shim: delaying the first %s by %ld ms (up to %ld ms until a signal comes)\n",
                 name, ms, max_ms);
    else
        snprintf(line, sizeof line, "delay-shim: delaying the first %s by %ld ms\n", name, ms);
    say(line);
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
    int interrupted = 0;
    while (nanosleep(&left, &left) == -1 && errno == EINTR)
        interrupted = 1;  // a handler ran: the signal landed in the window
    const char *how;
    while ((how = signal_seen(interrupted)) == NULL && elapsed_ms(&start) < max_ms) {
        struct timespec step = {0, 5 * 1000000L};
        if (nanosleep(&step, NULL) == -1 && errno == EINTR)
            interrupted = 1;
    }
    if (how != NULL)
        snprintf(line, sizeof line, "delay-shim: a signal arrived during the delay (%s)\n", how);
    else
        snprintf(line, sizeof line, "delay-shim: no signal arrived during the delay (%ld ms)\n",
                 elapsed_ms(&start));
    say(line);
}

// The server's own handlers for SIGTERM and SIGINT, each called through handler_wrapper,
// which first notes that a stop signal's handler ran. sigaction() is wrapped so that the
// server sees its own handler when it asks, and this stays invisible to it.
static struct sigaction server_action[2];  // [0] SIGTERM, [1] SIGINT

static int stop_slot(int sig)
{
    return sig == SIGTERM ? 0 : sig == SIGINT ? 1 : -1;
}

static void handler_wrapper(int sig, siginfo_t *info, void *ctx)
{
    atomic_store(&seen_handler, 1);
    const struct sigaction *sa = &server_action[stop_slot(sig)];
    if (sa->sa_flags & SA_SIGINFO)
        sa->sa_sigaction(sig, info, ctx);
    else if (sa->sa_handler != SIG_IGN && sa->sa_handler != SIG_DFL)
        sa->sa_handler(sig);
}

#define REAL(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

// A wait: delayed in the default mode only.
static void delay_wait(const char *name)
{
    if (!at_sigmask())
        delay_first(name);
}

// A mask change: delayed in the sigmask mode, when it blocks SIGTERM.
static void delay_mask(const char *name, int how, const sigset_t *set)
{
    if (at_sigmask() && set != NULL && (how == SIG_BLOCK || how == SIG_SETMASK) &&
        sigismember(set, SIGTERM) == 1)
        delay_first(name);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    int slot = stop_slot(sig);
    if (slot < 0)
        return REAL(sigaction)(sig, act, old);
    struct sigaction saved = server_action[slot];
    // Only a real handler is wrapped: SIG_IGN and SIG_DFL stay what they are.
    int wrapped = act != NULL && ((act->sa_flags & SA_SIGINFO) ||
                                  (act->sa_handler != SIG_IGN && act->sa_handler != SIG_DFL));
    struct sigaction real = act != NULL ? *act : (struct sigaction){0};
    if (wrapped) {
        real.sa_flags |= SA_SIGINFO;
        real.sa_sigaction = handler_wrapper;
    }
    if (act != NULL)
        server_action[slot] = *act;  // before the real call: the handler may run at once
    int r = REAL(sigaction)(sig, act != NULL ? &real : NULL, old);
    if (r == -1 && act != NULL)
        server_action[slot] = saved;
    if (r == 0 && old != NULL && old->sa_flags & SA_SIGINFO && old->sa_sigaction == handler_wrapper)
        *old = saved;  // the server's own handler, not the wrapper
    return r;
}

int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
    delay_mask("sigprocmask", how, set);
    return REAL(sigprocmask)(how, set, old);
}

int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
    delay_mask("pthread_sigmask", how, set);
    return REAL(pthread_sigmask)(how, set, old);
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    delay_wait("accept");
    return REAL(accept)(fd, addr, len);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    delay_wait("accept4");
    return REAL(accept4)(fd, addr, len, flags);
}

int select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *t)
{
    delay_wait("select");
    return REAL(select)(n, r, w, e, t);
}

int pselect(int n, fd_set *r, fd_set *w, fd_set *e, const struct timespec *t, const sigset_t *m)
{
    delay_wait("pselect");
    return REAL(pselect)(n, r, w, e, t, m);
}

int poll(struct pollfd *fds, nfds_t n, int t)
{
    delay_wait("poll");
    return REAL(poll)(fds, n, t);
}

int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *m)
{
    delay_wait("ppoll");
    return REAL(ppoll)(fds, n, t, m);
}

int epoll_wait(int ep, struct epoll_event *ev, int n, int t)
{
    delay_wait("epoll_wait");
    return REAL(epoll_wait)(ep, ev, n, t);
}

int epoll_pwait(int ep, struct epoll_event *ev, int n, int t, const sigset_t *m)
{
    delay_wait("epoll_pwait");
    return REAL(epoll_pwait)(ep, ev, n, t, m);
}
