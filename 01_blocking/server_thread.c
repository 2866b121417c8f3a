// server_thread.c: an echo server that starts one thread per client.
// Each thread runs the same blocking echo loop as server.c; main only accepts.
//
// Threads share one address space, so a thread is cheaper than a process:
// no copied page tables, and switching between two threads of one process
// keeps the same memory map. What they share they must not trample: the
// list of workers below is touched by main and by every worker, so a mutex
// guards it.
//
// Two rules make shutdown work:
//  1. Signals go to main only. A process-directed signal such as SIGTERM is
//     delivered to any one thread that does not block it; if a worker took
//     it, main would stay asleep in accept_client(). So workers block SIGINT and
//     SIGTERM (pthread_sigmask) and only main gets EINTR.
//  2. Main wakes the workers itself: shutdown(fd, SHUT_RDWR) on each
//     worker's socket makes its blocked recv() return 0 (EOF) and a blocked
//     send() fail, so every worker leaves its loop and main can join it.

#include "net.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// ---------------------------------------------------------------- workers

// One per client. Main allocates it, the worker uses it, and main frees it
// after pthread_join(): so it is never freed while its thread still runs.
struct worker {
    pthread_t thread;
    int fd;                // the client; -1 once the worker closed it (*)
    bool done;             // the worker has finished; main may join it (*)
    char peer[PEER_LEN];
    struct worker *next;   // the registry's list; main only
};
// (*) read and written only with registry_lock held (but the worker itself
//     may read its own fd without it: only the worker ever changes it).

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct worker *workers;  // every worker not yet joined

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    echo_client(w->fd, w->peer);

    // Close under the lock, and mark the fd gone in the same step. Otherwise
    // main could call shutdown() on this number just after we closed it and
    // the kernel reused it for a new client: main would hang up on a stranger.
    pthread_mutex_lock(&registry_lock);
    close_or_log(w->fd);
    w->fd = -1;
    w->done = true;
    pthread_mutex_unlock(&registry_lock);
    return NULL;
}

// Joins the workers that have finished. Like a zombie process, a finished
// but unjoined thread keeps its stack until someone calls pthread_join().
static void join_finished(void)
{
    struct worker *finished = NULL;
    pthread_mutex_lock(&registry_lock);
    for (struct worker **pw = &workers; *pw != NULL;) {
        struct worker *w = *pw;
        if (w->done) {
            *pw = w->next;           // unlink it...
            w->next = finished;      // ...and keep it for joining
            finished = w;
        } else {
            pw = &w->next;
        }
    }
    pthread_mutex_unlock(&registry_lock);

    // Join outside the lock: a worker that is finishing may still need it.
    while (finished != NULL) {
        struct worker *w = finished;
        finished = w->next;
        int rc = pthread_join(w->thread, NULL);
        if (rc != 0)
            log_msg("pthread_join: %s", strerror(rc));
        free(w);
    }
}

// Ends the connection on FD in both directions (see stop_workers). ENOTCONN:
// the client already reset it, so there is nothing to wake; any other error
// (a bad descriptor: a bug of ours) is logged.
static void shutdown_or_log(int fd)
{
    if (shutdown(fd, SHUT_RDWR) == -1 && errno != ENOTCONN)
        log_msg("fd %d: shutdown: %s", fd, strerror(errno));
}

// Wakes every worker still serving a client, then joins them all.
static void stop_workers(void)
{
    // LAB BEGIN wake_and_join_workers: shut down the socket of every live worker so it wakes up, then join them all
    // LAB STUB: (void)shutdown_or_log;  // not written: no worker is woken or joined
    // shutdown(), not close(): closing a descriptor another thread is blocked
    // on does not wake that thread on Linux, and the worker still owns it.
    // shutdown() ends the connection itself: the worker's recv() returns 0
    // and its send() fails with EPIPE, and it closes the fd as usual.
    pthread_mutex_lock(&registry_lock);
    for (struct worker *w = workers; w != NULL; w = w->next) {
        if (w->fd != -1)
            shutdown_or_log(w->fd);
        w->done = true;  // not yet, but it will be: join_finished() waits
    }
    pthread_mutex_unlock(&registry_lock);
    join_finished();
    // LAB END
}

// Starts a worker for the client on FD. Signals stay blocked in it: a new
// thread inherits the creating thread's signal mask, so we block them in
// main just around pthread_create() and unblock them again.
static void start_worker(int fd, const char *peer)
{
    struct worker *w = calloc(1, sizeof *w);
    if (w == NULL) {
        log_msg("%s: out of memory, dropping", peer);
        close_or_log(fd);
        return;
    }
    w->fd = fd;
    snprintf(w->peer, sizeof w->peer, "%s", peer);

    sigset_t stop_signals, old;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    // pthread functions return the error instead of setting errno. These
    // two can only fail on a bad argument, but then rule 1 would be broken
    // without a word, so they are checked like every other call.
    int rc = pthread_sigmask(SIG_BLOCK, &stop_signals, &old);
    if (rc != 0) {
        // The worker would inherit a mask that lets it take SIGTERM.
        log_msg("%s: pthread_sigmask: %s, dropping", peer, strerror(rc));
        close_or_log(fd);
        free(w);
        return;
    }
    rc = pthread_create(&w->thread, NULL, worker_main, w);
    int mask_rc = pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (mask_rc != 0) {
        // Main would keep SIGINT and SIGTERM blocked: no signal could stop
        // us any more. Stop now, the clean way, rather than run unstoppable.
        log_msg("pthread_sigmask: %s, stopping", strerror(mask_rc));
        stop_requested = 1;
    }

    if (rc != 0) {
        log_msg("%s: pthread_create: %s, dropping", peer, strerror(rc));
        close_or_log(fd);
        free(w);
        return;
    }
    pthread_mutex_lock(&registry_lock);
    w->next = workers;
    workers = w;
    pthread_mutex_unlock(&registry_lock);
}

// ---------------------------------------------------------------- the loop

static void serve_forever(int listen_fd)
{
    for (;;) {
        join_finished();
        // accept_client checks the flag again, safely: see serve_forever in server.c.
        if (stop_requested)
            break;
        char peer[PEER_LEN];
        int fd = accept_client(listen_fd, peer, sizeof peer);
        if (fd != -1)
            start_worker(fd, peer);
    }
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    struct options opt;
    parse_options(argc, argv, "server_thread", &opt);
    install_signal_handlers();

    int listen_fd = listen_on(opt.host, opt.port);
    if (listen_fd == -1)
        return 1;

    serve_forever(listen_fd);

    if (close(listen_fd) == -1)
        log_msg("close: %s", strerror(errno));
    stop_workers();
    log_msg("stopped");
    return 0;
}
