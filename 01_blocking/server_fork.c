// server_fork.c: an echo server that forks one process per client.
// Each child runs the same blocking echo loop as server.c: clients no longer wait for each other.
//
// After accept() the parent calls fork(): the child is a copy of the parent,
// open descriptors included. The child closes the listening socket and
// echoes its client; the parent closes its copy of the client socket and
// goes straight back to accept(). A slow client now blocks only its own
// process. The price: a whole process (page tables, kernel structures, the
// pages it writes to) per client, and a process switch every time the
// kernel moves between clients. README.md measures both.
//
// The parent owes two duties to its children:
//  1. Reap them. A child that exits stays a "zombie" (its exit status kept
//     in the process table) until its parent calls waitpid() for it.
//  2. Stop them on shutdown: on SIGTERM it signals every child it started,
//     waits for them (with a deadline), and only then exits.

#include "net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// How long a stopping parent waits for its children before SIGKILL. The
// contract gives the whole server 2 s to exit; this leaves room to spare.
#define CHILD_GRACE_MS 1500

// ---------------------------------------------------------------- children

// The pids of the children still alive (or exited but not yet reaped).
// Only the main loop touches this array, never a signal handler.
static pid_t *children;
static size_t n_children, cap_children;

static int add_child(pid_t pid)
{
    if (n_children == cap_children) {
        size_t cap = cap_children ? 2 * cap_children : 16;
        pid_t *p = realloc(children, cap * sizeof *p);
        if (p == NULL)
            return -1;
        children = p;
        cap_children = cap;
    }
    children[n_children++] = pid;
    return 0;
}

static void remove_child(pid_t pid)
{
    for (size_t i = 0; i < n_children; i++)
        if (children[i] == pid) {
            children[i] = children[--n_children];  // order does not matter
            return;
        }
}

// Collects every child that has exited, without waiting for the others.
static void reap_children(void)
{
    pid_t pid;
    int status;
    // One SIGCHLD may stand for several exits (signals do not queue), so
    // loop until WNOHANG says "none left right now" (0) or "no children" (-1).
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        remove_child(pid);
}

// Why a SIGCHLD handler that does nothing, and reaping in the loop?
// - Reaping only in the loop, with no handler, leaves zombies until the next
//   client connects: the parent sleeps in accept() meanwhile.
// - Reaping inside the handler would update `children` while the loop may be
//   halfway through changing it; a handler may only set simple flags.
// - SIG_IGN for SIGCHLD reaps automatically, but then we can no longer tell
//   which pids are ours and alive: on shutdown we might signal a recycled pid.
// So the handler's only job is to end the wait in accept_client with EINTR
// (no SA_RESTART; set_handler adds SIGCHLD to the signals that wait unblocks,
// so a child that exits just before the wait begins still ends it), and the
// loop reaps.
static void on_sigchld(int sig)
{
    (void)sig;
}

// Milliseconds since T0, or -1 if the clock cannot be read. clock_gettime fails only for a
// clock the system lacks; every Linux has CLOCK_MONOTONIC, so that is a bug worth a line.
static long ms_since(const struct timespec *t0)
{
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) == -1) {
        log_msg("clock_gettime: %s", strerror(errno));
        return -1;
    }
    return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

// SIGTERM to every child we started (never kill(0, ...): that would hit our
// whole process group, possibly the test runner that started us), then wait.
static void stop_children(void)
{
    for (size_t i = 0; i < n_children; i++)
        if (kill(children[i], SIGTERM) == -1)
            log_msg("kill %d: %s", (int)children[i], strerror(errno));

    // No clock, no grace (waited -1): straight to SIGKILL below.
    struct timespec start, tick = {0, 10 * 1000 * 1000};
    long waited = 0;
    if (clock_gettime(CLOCK_MONOTONIC, &start) == -1) {
        log_msg("clock_gettime: %s", strerror(errno));
        waited = -1;
    }
    while (n_children > 0 && waited >= 0 && waited < CHILD_GRACE_MS) {
        reap_children();
        if (n_children > 0)
            nanosleep(&tick, NULL);  // EINTR (a SIGCHLD) just ends it early
        waited = ms_since(&start);
    }
    // A child that ignored SIGTERM for 1.5 s is stuck; SIGKILL cannot be ignored.
    while (n_children > 0) {
        pid_t pid = children[0];
        log_msg("child %d did not stop, killing it", (int)pid);
        if (kill(pid, SIGKILL) == -1)
            log_msg("kill %d: %s", (int)pid, strerror(errno));
        while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
            ;
        remove_child(pid);
    }
}

// After fork(), in the parent: PID is the new child (recorded for reaping and
// for stop_children), or -1 if fork() failed (the client is dropped: the
// parent closes its socket next).
static void track_child(pid_t pid, const char *peer)
{
    if (pid == -1) {
        log_msg("%s: fork: %s, dropping", peer, strerror(errno));
    } else if (add_child(pid) == -1) {
        // A child we cannot track is one we could not stop on shutdown.
        log_msg("%s: out of memory, dropping", peer);
        if (kill(pid, SIGTERM) == -1)
            log_msg("kill %d: %s", (int)pid, strerror(errno));
    }
}

#ifdef KIT_COVERAGE
void __gcov_dump(void);  // libgcov: write this process's line counts now
#endif

// How a child ends: _exit, not exit(). exit() would run atexit handlers and
// flush stdio buffers inherited from the parent, doing the parent's work a
// second time. (Under SAN=address it would also run a leak check in every
// child: slow enough to fail the 1100-client test.) The coverage build
// (make coverage) keeps its counts in memory until exit() writes them, so
// there a child writes its own first, or its lines would count as never run.
_Noreturn static void child_exit(void)
{
#ifdef KIT_COVERAGE
    __gcov_dump();
#endif
    _exit(0);
}

// ---------------------------------------------------------------- the loop

static void serve_forever(int listen_fd)
{
    // LAB BEGIN fork_per_client: accept clients, fork a child to echo each one, reap exited children
    // LAB STUB: // not written: no fork; the parent serves the first client itself, then returns
    // LAB STUB: (void)track_child;
    // LAB STUB: (void)child_exit;
    // LAB STUB: char peer[PEER_LEN];
    // LAB STUB: int fd = accept_client(listen_fd, peer, sizeof peer);
    // LAB STUB: if (fd != -1) {
    // LAB STUB:     echo_client(fd, peer);
    // LAB STUB:     close_or_log(fd);
    // LAB STUB: }
    for (;;) {
        reap_children();
        // accept_client checks the flag again, safely: see serve_forever in server.c.
        if (stop_requested)
            break;
        char peer[PEER_LEN];
        int fd = accept_client(listen_fd, peer, sizeof peer);
        if (fd == -1)
            continue;  // EINTR from SIGCHLD or SIGTERM: reap, check, go on

        pid_t pid = fork();
        if (pid == 0) {
            // The child. The listening socket is the parent's business: close
            // our copy so the port closes as soon as the parent closes its own.
            close_or_log(listen_fd);
            echo_client(fd, peer);
            close_or_log(fd);
            child_exit();  // never back to the accept loop
        }
        track_child(pid, peer);  // the parent: remember the child (or say fork failed)
        // The parent's copy of the client socket: the child has its own. If we
        // kept it, the client would never see EOF when the child closes, and
        // the parent would run out of descriptors after ~1000 clients.
        close_or_log(fd);
    }
    // LAB END
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    struct options opt;
    parse_options(argc, argv, "server_fork", &opt);
    // Children inherit these handlers through fork(): a child blocked in
    // recv() gets EINTR on SIGTERM and leaves echo_client() at once.
    install_signal_handlers();
    set_handler(SIGCHLD, on_sigchld);

    int listen_fd = listen_on(opt.host, opt.port);
    if (listen_fd == -1)
        return 1;

    serve_forever(listen_fd);

    // Stop accepting first, so no new child is born while we stop the others.
    if (close(listen_fd) == -1)
        log_msg("close: %s", strerror(errno));
    stop_children();
    free(children);
    log_msg("stopped");
    return 0;
}
