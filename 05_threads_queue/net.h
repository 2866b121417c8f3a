// net.h: the socket plumbing of the threaded server, kept out of server.c.
// Options, the listening socket, signals, logging, accept, the clock and the fd limit.
#ifndef NET_H
#define NET_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#define DEFAULT_PORT "7005"
// --max-output: past this many unsent reply bytes, we stop reading a
// client's requests until half of them have left (back-pressure, as in 04).
#define DEFAULT_MAX_OUTPUT ((size_t)4 << 20)

// --queue: how many jobs may wait for a worker. Past it, a request is
// answered "ERR busy" at once (jobs.h, struct job_queue, says why a bound).
#define DEFAULT_QUEUE 1024

// -w: at most this many worker threads (each one costs a stack, 8 MiB of
// address space by default, and a scheduler entry).
#define MAX_WORKERS 256

// What the command line asked for. Host and port are strings because
// getaddrinfo() wants strings, and a port may legitimately be "0" (any free port).
struct options {
    const char *host;
    const char *port;
    size_t max_output;   // stop reading from a client with more than this unsent
    int workers;         // -w: worker threads; 0 = run every job on the I/O thread
    size_t queue_cap;    // --queue: jobs that may wait for a worker
    int reply_delay_ms;  // --reply-delay-ms: a test knob, 0 normally (server.c,
                         // deliver_results, says what it stands for)
    int swap_delay_ms;   // --swap-delay-ms: a test knob, 0 normally (jobs.c, cq_take_all)
    bool wake_all;       // --wake-all: a test knob, false normally (jobs.c, jq_wake)
};

// Set to 1 by the SIGINT/SIGTERM handler, which runs only inside
// epoll_pwait() on the I/O thread (block_stop_signals); the loop checks it
// after each wait. A signal handler may only write to a `volatile
// sig_atomic_t` or to a lock-free atomic (C11 7.14.1.1). Threads again, but
// only the I/O thread reads it (the workers are told to stop through their
// queue: jobs.h), so the plain sig_atomic_t is still enough.
extern volatile sig_atomic_t stop_requested;

// Parses -H/--host, -p/--port, -h/--help, -w/--workers, --queue,
// --max-output, --reply-delay-ms and the test knobs --swap-delay-ms and --wake-all. PROG names the binary in the usage text and in every log
// line. --help exits 0; a bad option exits 2.
void parse_options(int argc, char **argv, const char *prog, struct options *opt);

// -w's default: one worker per online core (at least 1, at most MAX_WORKERS).
long default_workers(void);

// Logs "PROG: message" on stderr as one line. Any thread.
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Installs FN for SIG with sigaction() and without SA_RESTART, so that a
// blocking call in progress returns EINTR when the signal arrives.
void set_handler(int sig, void (*fn)(int));

// SIGINT/SIGTERM set stop_requested; SIGPIPE is ignored.
void install_signal_handlers(void);

// Blocks SIGINT and SIGTERM in the calling thread, and stores in WAIT_MASK
// the mask to wait with: the one we had, with both unblocked. Call it before
// creating any thread: threads inherit the mask, so the workers never take
// these signals, and they are delivered only inside a wait that installs
// WAIT_MASK (epoll_pwait: server.c, epoll_once, says why). Returns 0, or -1
// after logging why.
int block_stop_signals(sigset_t *wait_mask);

// Creates, binds and listens on HOST:PORT, then prints "listening on HOST:PORT"
// on stdout. Returns the listening descriptor, or -1 after logging why.
int listen_on(const char *host, const char *port);

// Puts FD in non-blocking mode: a call that would have to wait fails with
// EAGAIN instead. Returns 0, or -1 after logging why.
int set_nonblocking(int fd);

// Takes the next client off LISTEN_FD's queue. Returns its descriptor,
// non-blocking, close-on-exec and with TCP_NODELAY set, after logging
// "ADDR:PORT connected (fd N)", or -1 with errno set: EINTR (a signal
// arrived), EAGAIN (LISTEN_FD is non-blocking and nobody is waiting any
// more), EMFILE or ENFILE (out of descriptors: not logged, the caller has a
// plan for it: server.c, refuse_one_client), or anything else after logging a
// failure that only hurts this one attempt.
int accept_client(int listen_fd);

// close(FD), logging a failure as "close (WHAT): reason". Nothing else can
// be done about one: the descriptor is gone either way (close(2), NOTES).
void close_or_log(int fd, const char *what);

// Milliseconds on the monotonic clock (which no one can set back).
long long now_ms(void);

// Raises the soft limit on open descriptors to the hard limit, logging
// what it did; failing to is not fatal (we just serve fewer clients).
void raise_fd_limit(void);

#endif
