// net.h: the socket plumbing of the codec server, kept out of server.c (04's, with 06's options).
// Options, the listening socket, signals, logging, accept, the clock and the fd limit.
#ifndef NET_H
#define NET_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#define DEFAULT_PORT "7006"
// --max-output: 4 MiB is several times what the kernel itself buffers on a
// loopback connection, so a client that reads about as fast as it sends
// rarely reaches it. One that reads slower does: that is back-pressure
// doing its job, pausing it, not dropping it.
#define DEFAULT_MAX_OUTPUT ((size_t)4 << 20)

// --max-frame: the longest line (without its ending) or len frame (without
// its 4-byte header) a client may send. A frame size is a claim about memory
// the sender wants us to spend, so the bound is ours, not theirs (README.md,
// section 3). A line is held whole in the input buffer: 64 KiB, 05's line
// limit. A len frame streams through that buffer in pieces (server.c,
// echo_piece), so it may be far longer than the buffer: 16 MiB.
#define DEFAULT_MAX_LINE ((size_t)64 << 10)
#define DEFAULT_MAX_LEN ((size_t)16 << 20)
// --max-frame may not exceed this: the len codec's header is a u32, and a
// larger cap would only postpone the limit to the 4 GiB the header can say.
#define MAX_MAX_FRAME ((size_t)1 << 30)
// fixed:N: N from 1 to this (one frame is buffered whole before it is echoed).
#define MAX_FIXED_SIZE ((size_t)1 << 20)

// Which codec a server process speaks (--codec): one per process.
enum codec_kind { CODEC_LINE, CODEC_FIXED, CODEC_LEN, CODEC_RESP, CODEC_HTTP };

// What the command line asked for. Host and port are strings because
// getaddrinfo() wants strings, and a port may legitimately be "0" (any free port).
struct options {
    const char *host;
    const char *port;
    size_t max_output;      // stop reading from a client with more than this unsent
    enum codec_kind codec;  // --codec
    size_t fixed_size;      // --codec fixed:N: N
    size_t max_frame;       // --max-frame (line and len), or the codec's default
};

// Set to 1 by the SIGINT/SIGTERM handler, which runs only inside
// epoll_pwait() (block_stop_signals); the loop checks it after each wait.
// A signal handler may only write to a `volatile sig_atomic_t` or to a
// lock-free atomic (C11 7.14.1.1). With one thread again (01's
// server_thread needed the atomic), the plain sig_atomic_t is enough:
// volatile stops the compiler from keeping it in a register across the loop.
extern volatile sig_atomic_t stop_requested;

// Parses -H/--host, -p/--port, -h/--help, -c/--codec, --max-frame and
// --max-output. PROG names the binary in the usage text and in every log
// line. --help exits 0; a bad option exits 2.
void parse_options(int argc, char **argv, const char *prog, struct options *opt);

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
// "ADDR:PORT connected (fd N)" and storing "ADDR:PORT" in PEER (PEER_LEN
// bytes, 64 are enough), or -1 with errno set: EINTR (a signal
// arrived), EAGAIN (LISTEN_FD is non-blocking and nobody is waiting any
// more), EMFILE or ENFILE (out of descriptors: not logged, the caller has a
// plan for it: server.c, refuse_one_client), or anything else after logging a
// failure that only hurts this one attempt.
int accept_client(int listen_fd, char *peer, size_t peer_len);

// close(FD), logging a failure as "close (WHAT): reason". Nothing else can
// be done about one: the descriptor is gone either way (close(2), NOTES).
void close_or_log(int fd, const char *what);

// Milliseconds on the monotonic clock (which no one can set back).
long long now_ms(void);

// Raises the soft limit on open descriptors to the hard limit, logging
// what it did; failing to is not fatal (we just serve fewer clients).
void raise_fd_limit(void);

#endif
