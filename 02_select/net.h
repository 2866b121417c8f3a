// net.h: the socket plumbing of the select() echo server, kept out of server.c.
// Options, the listening socket, signals, logging and accept.
#ifndef NET_H
#define NET_H

#include <signal.h>
#include <stddef.h>

#define DEFAULT_PORT "7002"

// Room for "[ipv6-address]:port" plus the terminating NUL.
#define PEER_LEN 64

// What the command line asked for. Both are strings because getaddrinfo()
// wants strings, and a port may legitimately be "0" (any free port).
struct options {
    const char *host;
    const char *port;
};

// Set to 1 by the SIGINT/SIGTERM handler; the loop checks it after pselect()
// was interrupted. A signal handler may only write to a
// `volatile sig_atomic_t` or to a lock-free atomic (C11 7.14.1.1). With one
// thread again (01's server_thread needed the atomic), the plain
// sig_atomic_t is enough: volatile stops the compiler from keeping it in a
// register across the loop.
extern volatile sig_atomic_t stop_requested;

// Parses -H/--host, -p/--port and -h/--help. PROG names the binary in the
// usage text and in every log line. --help exits 0; a bad option exits 2.
void parse_options(int argc, char **argv, const char *prog, struct options *opt);

// Logs "PROG: message" on stderr as one line.
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Installs FN for SIG with sigaction() and without SA_RESTART, so that a
// blocking call in progress returns EINTR when the signal arrives.
void set_handler(int sig, void (*fn)(int));

// SIGINT/SIGTERM set stop_requested; SIGPIPE is ignored.
void install_signal_handlers(void);

// Blocks SIGINT and SIGTERM from now on, and stores in WAIT_MASK the mask to
// sleep with in pselect(): the previous one without them. Outside pselect()
// a stop signal then stays pending instead of running its handler, so it can
// never land between a check of stop_requested and the sleep. Exits on failure.
void block_stop_signals(sigset_t *wait_mask);

// Creates, binds and listens on HOST:PORT, then prints "listening on HOST:PORT"
// on stdout. Returns the listening descriptor, or -1 after logging why.
int listen_on(const char *host, const char *port);

// Puts FD in non-blocking mode: a call that would have to wait fails with
// EAGAIN instead. Returns 0, or -1 after logging why.
int set_nonblocking(int fd);

// Closes FD, logging a failure. For a socket, close() fails only on a bad
// descriptor (a bug of ours) or EINTR (the descriptor is closed anyway on
// Linux): worth a log line, never a reason to stop.
void close_or_log(int fd);

// Takes the next client off LISTEN_FD's queue. Returns its descriptor (and
// its "addr:port" in PEER) after logging "connected", or -1: on EAGAIN
// (LISTEN_FD is non-blocking and nobody is waiting any more), or after
// logging a failure that only hurts this one attempt. The new socket is
// blocking, close-on-exec, and has TCP_NODELAY set.
int accept_client(int listen_fd, char *peer, size_t peer_len);

#endif
