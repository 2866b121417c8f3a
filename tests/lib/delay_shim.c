// delay_shim.c: an LD_PRELOAD library that widens the race a server's shutdown must survive.
// The first blocking wait the process makes (accept, select, poll, epoll_wait and their
// signal-mask variants) is delayed by DELAY_SHIM_MS (default 500) milliseconds, after a line
// on stderr that the test waits for before it sends SIGTERM.
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

// Sleeps the delay out (a handler interrupting nanosleep does not shorten it), then
// says whether a signal arrived meanwhile, so that the test can prove it hit the window.
static void delay_first(const char *name)
{
    if (atomic_exchange(&delayed, 1))
        return;
    const char *env = getenv("DELAY_SHIM_MS");
    long ms = env ? strtol(env, NULL, 10) : 500;
    char line[160];
    snprintf(line, sizeof line, "delay-shim: delaying the first %s by %ld ms\n", name, ms);
    say(line);
    struct timespec left = {ms / 1000, (ms % 1000) * 1000000L};
    int interrupted = 0;
    while (nanosleep(&left, &left) == -1 && errno == EINTR)
        interrupted = 1;  // a handler ran: the signal landed in the window
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    int blocked = sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT);
    if (interrupted || blocked) {
        snprintf(line, sizeof line, "delay-shim: a signal arrived during the delay (%s)\n",
                 interrupted ? "its handler ran" : "blocked, pending");
        say(line);
    }
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
