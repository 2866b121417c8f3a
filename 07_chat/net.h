// net.h: the socket plumbing of the chat server, kept out of server.c (the client uses its logging and signals).
// Options, the listening socket, signals, logging, accept, the clock and the fd limit.
#ifndef NET_H
#define NET_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#define DEFAULT_PORT "7007"
// The two output caps (redis's client-output-buffer-limit, hard and soft;
// server.c, session_deliver and session_judge, says how they are judged).
// --max-output, the hard cap: a session's queue never holds more; a line
// that would pass it is written first, and the session dropped as too slow
// if the kernel refuses enough of it. 1 MiB is hundreds of chat lines on
// top of the several MiB the kernel buffers: a client that reads at all
// never gets near it; one that stopped reading reaches it in a fraction of
// a second in a busy room, and then costs the server no more.
#define DEFAULT_MAX_OUTPUT ((size_t)1 << 20)
// --soft-output and --soft-seconds, the soft cap: a session whose queue
// stays over it, after the turn's writes, for that long is dropped too. It
// bounds what a stalled reader holds for long in a quiet room (the hard cap
// only bounds the peak), and forgives a reader that falls behind for a
// moment and catches up.
#define DEFAULT_SOFT_OUTPUT ((size_t)256 << 10)
#define DEFAULT_SOFT_SECONDS 10.0

// --idle-timeout: a session that sends nothing for this long is closed.
#define DEFAULT_IDLE_TIMEOUT_S 300.0

// How a broadcast reaches its recipients (--broadcast, server.c, fan_out).
enum broadcast_mode {
    BROADCAST_SHARED,  // one reference-counted buffer, queued by every recipient
    BROADCAST_COPY,    // the bytes copied into each recipient's own output buffer
};

// What the command line asked for. Host and port are strings because
// getaddrinfo() wants strings, and a port may legitimately be "0" (any free port).
struct options {
    const char *host;
    const char *port;
    size_t max_output;            // --max-output, the hard cap
    size_t soft_output;           // --soft-output, the soft cap ...
    long long soft_ns;            // ... held this long (--soft-seconds)
    long long idle_timeout_ns;    // --idle-timeout, in nanoseconds
    enum broadcast_mode broadcast;
};

// Set to 1 by the SIGINT/SIGTERM handler, which runs only inside
// epoll_pwait() (block_stop_signals); the loop checks it after each wait.
// A signal handler may only write to a `volatile sig_atomic_t` or to a
// lock-free atomic (C11 7.14.1.1). With one thread again (01's
// server_thread needed the atomic), the plain sig_atomic_t is enough:
// volatile stops the compiler from keeping it in a register across the loop.
extern volatile sig_atomic_t stop_requested;

// Parses -H/--host, -p/--port, -h/--help, --max-output, --soft-output,
// --soft-seconds, --idle-timeout and --broadcast. PROG names the binary in the usage text and in every log
// line. --help exits 0; a bad option exits 2.
void parse_options(int argc, char **argv, const char *prog, struct options *opt);

// Sets the PROG that log_msg puts before every line (parse_options does it
// for the server; the client parses its own options).
void set_prog_name(const char *prog);

// Logs "PROG: message" on stderr as one line.
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Installs FN for SIG with sigaction() and without SA_RESTART, so that a
// blocking call in progress returns EINTR when the signal arrives.
void set_handler(int sig, void (*fn)(int));

// SIGINT/SIGTERM set stop_requested; SIGPIPE is ignored.
void install_signal_handlers(void);

// Blocks SIGINT and SIGTERM, and stores in WAIT_MASK the mask to wait with:
// the one we had, with both unblocked. From then on they are delivered only
// inside a wait that installs WAIT_MASK (epoll_pwait: server.c, epoll_once
// says why). Returns 0, or -1 after logging why.
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
// plan for it: server.c, spare_fd), or anything else after logging a
// failure that only hurts this one attempt.
int accept_client(int listen_fd);

// close(FD), logging a failure as "close (WHAT): reason". Nothing else can
// be done about one: the descriptor is gone either way (close(2), NOTES).
void close_or_log(int fd, const char *what);

// Milliseconds, and nanoseconds, on the monotonic clock (which no one can
// set back: a timer keyed by it cannot fire early or late because someone
// changed the date).
long long now_ms(void);
long long now_ns(void);

// Raises the soft limit on open descriptors to the hard limit, logging
// what it did; failing to is not fatal (we just serve fewer clients).
void raise_fd_limit(void);

#endif
