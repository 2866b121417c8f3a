// net.h: the socket plumbing of the poll() echo server, kept out of server.c.
// Options, the listening socket, signals, logging, non-blocking mode and accept.
#ifndef NET_H
#define NET_H

#include <signal.h>
#include <stddef.h>

#define DEFAULT_PORT "7003"
// --max-output: 4 MiB is several times what the kernel itself buffers on a
// loopback connection, so a client that reads about as fast as it sends
// rarely reaches it. One that reads slower does (a slow reader hit it 9 times
// in 3 s): that is back-pressure doing its job, pausing it, not dropping it.
#define DEFAULT_MAX_OUTPUT ((size_t)4 << 20)

// Room for "[ipv6-address]:port" plus the terminating NUL.
#define PEER_LEN 64

// What the command line asked for. Host and port are strings because
// getaddrinfo() wants strings, and a port may legitimately be "0" (any free port).
struct options {
    const char *host;
    const char *port;
    size_t max_output;  // stop reading from a client with more than this unsent
};

// Set to 1 by the SIGINT/SIGTERM handler, which runs only inside ppoll()
// (server.c blocks both signals everywhere else); the loop checks it
// after each wait. A signal handler may only write to a
// `volatile sig_atomic_t` or to a lock-free atomic (C11 7.14.1.1). With one
// thread again (01's server_thread needed the atomic), the plain
// sig_atomic_t is enough: volatile stops the compiler from keeping it in a
// register across the loop.
extern volatile sig_atomic_t stop_requested;

// Parses -H/--host, -p/--port, -h/--help and --max-output. PROG names
// the binary in the usage text and in every log line. --help exits 0; a
// bad option exits 2.
void parse_options(int argc, char **argv, const char *prog, struct options *opt);

// Logs "PROG: message" on stderr as one line.
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Installs FN for SIG with sigaction() and without SA_RESTART, so that a
// blocking call in progress returns EINTR when the signal arrives.
void set_handler(int sig, void (*fn)(int));

// SIGINT/SIGTERM set stop_requested; SIGPIPE is ignored.
void install_signal_handlers(void);

// Creates, binds and listens on HOST:PORT, then prints "listening on HOST:PORT"
// on stdout. Returns the listening descriptor, or -1 after logging why.
int listen_on(const char *host, const char *port);

// Puts FD in non-blocking mode: a call that would have to wait fails with
// EAGAIN instead. Returns 0, or -1 after logging why.
int set_nonblocking(int fd);

// Takes the next client off LISTEN_FD's queue. Returns its descriptor,
// non-blocking, close-on-exec and with TCP_NODELAY set (and its "addr:port"
// in PEER) after logging "connected", or -1: on EINTR (a
// signal arrived: the caller checks its flags), on EAGAIN (LISTEN_FD is
// non-blocking and nobody is waiting any more), or after logging a failure
// that only hurts this one attempt.
int accept_client(int listen_fd, char *peer, size_t peer_len);

#endif
