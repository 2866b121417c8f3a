// net.h: what the three blocking echo servers of this stage share.
// Options, the listening socket, signals, logging, accept, send_all and the echo loop.
#ifndef NET_H
#define NET_H

#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>

#define DEFAULT_PORT "7001"

// Room for "[ipv6-address]:port" plus the terminating NUL.
#define PEER_LEN 64

// What the command line asked for. Both are strings because getaddrinfo()
// wants strings, and a port may legitimately be "0" (any free port).
struct options {
    const char *host;
    const char *port;
};

// Set to 1 by the SIGINT/SIGTERM handler; every loop checks it after a
// blocking call was interrupted. A signal handler may only write to a
// `volatile sig_atomic_t` or to a lock-free atomic (C11 7.14.1.1). We need
// the atomic: in server_thread.c the handler runs in main while a worker
// thread may read the flag in send_all, and between threads only atomics
// are free of data races (ThreadSanitizer would rightly flag the other).
extern atomic_int stop_requested;

// Parses -H/--host, -p/--port and -h/--help. PROG names the binary in the
// usage text and in every log line. --help exits 0; a bad option exits 2.
void parse_options(int argc, char **argv, const char *prog, struct options *opt);

// Logs "PROG: message" on stderr as one line.
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Installs FN for SIG with sigaction() and without SA_RESTART, so that a
// blocking call in progress returns EINTR when the signal arrives. A signal
// given a handler (not SIG_IGN) is unblocked (it may have been inherited
// blocked) and also ends accept_client's wait. Call install_signal_handlers first.
void set_handler(int sig, void (*fn)(int));

// SIGINT/SIGTERM set stop_requested; SIGPIPE is ignored.
void install_signal_handlers(void);

// Creates, binds and listens on HOST:PORT, then prints "listening on HOST:PORT"
// on stdout. Returns the listening descriptor, or -1 after logging why.
int listen_on(const char *host, const char *port);

// Waits for the next client. Returns its descriptor (close-on-exec, with
// TCP_NODELAY) and its "addr:port" in PEER after logging "connected", or -1:
// on EINTR (a signal arrived, or stop_requested was already set: the caller
// checks its flags) or after logging a failure that only hurts this one
// attempt. The caller loops. A stop signal is never lost while it waits, even
// one that lands just before the wait begins (see wait_for_client in net.c).
// Main thread only: it changes the calling thread's signal mask while it waits.
int accept_client(int listen_fd, char *peer, size_t peer_len);

// Sends all LEN bytes, however many send() calls it takes (a signal cuts a
// blocking send() short: each time is logged). Returns 0, or -1 with errno set
// (EINTR once stop_requested is set).
int send_all(int fd, const void *buf, size_t len);

// Closes FD, logging a failure. For a socket, close() fails only on a bad
// descriptor (a bug of ours) or EINTR (the descriptor is closed anyway on
// Linux): worth a log line, never a reason to stop.
void close_or_log(int fd);

// Echoes everything FD sends until EOF, an error, or a stop request, and
// logs how it ended. It does not close FD: the caller owns the descriptor.
void echo_client(int fd, const char *peer);

#endif
