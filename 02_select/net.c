// net.c: the socket plumbing of the select() echo server.
// Read it after server.c: it holds the calls that server.c names in its loop.

// _GNU_SOURCE for accept4(), a Linux (and BSD) call that POSIX does not have:
// it sets the new socket's flags in the same call (see accept_client).
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t stop_requested = 0;

static const char *prog_name = "server";

// ---------------------------------------------------------------- options

static void usage(FILE *to)
{
    fprintf(to,
            "usage: %s [-H HOST] [-p PORT]\n"
            "  -H, --host HOST   address to listen on (default 127.0.0.1)\n"
            "  -p, --port PORT   TCP port, 0 = any free port (default " DEFAULT_PORT ")\n"
            "  -h, --help        print this help and exit\n",
            prog_name);
}

// A bad command line is the user's mistake, not a crash: say what, show the
// usage, and exit 2 (the usual "usage error" status of command-line tools).
_Noreturn static void usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s '%s'\n", prog_name, what, arg);
    usage(stderr);
    exit(2);
}

void parse_options(int argc, char **argv, const char *prog, struct options *opt)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    prog_name = prog;
    opt->host = "127.0.0.1";
    opt->port = DEFAULT_PORT;

    // The leading ':' and opterr = 0: we print the errors ourselves, in the
    // same "PROG: ..." form as every other message.
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":H:p:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'H':
            opt->host = optarg;
            break;
        case 'p': {
            char *end;
            errno = 0;
            long port = strtol(optarg, &end, 10);
            if (optarg[0] < '0' || optarg[0] > '9' || errno != 0 || *end != '\0' || port > 65535)
                usage_error("bad port", optarg);
            opt->port = optarg;
            break;
        }
        case 'h':
            usage(stdout);
            exit(0);
        case ':':
            usage_error("missing value for", argv[optind - 1]);
            break;
        default: {
            // optopt holds an unknown short option; for a long one it is 0
            // and the offending word is the one getopt_long just passed.
            char short_opt[] = {'-', (char)optopt, '\0'};
            usage_error("unknown option", optopt ? short_opt : argv[optind - 1]);
        }
        }
    }
    if (optind < argc)
        usage_error("unexpected argument", argv[optind]);
}

// ---------------------------------------------------------------- logging

void log_msg(const char *fmt, ...)
{
    // Build the whole line first and hand it to stdio in one call: threads
    // (and forked children sharing the same stderr) then never interleave
    // halves of their lines.
    char line[512];
    int n = snprintf(line, sizeof line, "%s: ", prog_name);
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}

// ---------------------------------------------------------------- signals

static void on_stop_signal(int sig)
{
    (void)sig;
    // Only async-signal-safe work in a handler: set the flag and return.
    // The main loop does the actual stopping.
    stop_requested = 1;
}

void set_handler(int sig, void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    // No SA_RESTART, as in 01, where it kept recv() and send() asleep after
    // a handler ran. Here it would change nothing: the stop handlers run only
    // inside pselect() (the signals are blocked everywhere else), and
    // select(), pselect(), poll() and ppoll() are never restarted after a
    // handler, SA_RESTART or not (signal(7)): they always fail with EINTR.
    // Left out anyway, so that a call added later cannot sleep through a stop.
    sa.sa_flags = 0;
    if (sigaction(sig, &sa, NULL) == -1) {
        log_msg("sigaction(%d): %s", sig, strerror(errno));
        exit(1);
    }
}

void install_signal_handlers(void)
{
    set_handler(SIGINT, on_stop_signal);
    set_handler(SIGTERM, on_stop_signal);
    // Writing to a socket whose peer has gone raises SIGPIPE, and SIGPIPE's
    // default action is to kill the process: one client hanging up would kill
    // the whole server. Ignored, the same send() just fails with EPIPE, which
    // send_all reports and serve_client turns into "dropping" that one client.
    set_handler(SIGPIPE, SIG_IGN);
}

void block_stop_signals(sigset_t *wait_mask)
{
    // Why block them at all. A loop that checks the flag and then sleeps,
    //     while (!stop_requested) { select(...); ... }
    // loses a signal that lands between the check and the moment select()
    // starts to sleep: the handler sets the flag, nobody looks at it, and an
    // idle server sleeps on. Blocked, the signal waits in the kernel
    // (pending) wherever it lands, and pselect(..., wait_mask) installs the
    // mask and sleeps in one step, so the pending signal interrupts it at
    // once (EINTR) and the loop sees the flag. (A self-pipe does the same
    // job portably: the handler writes a byte to a pipe that select() also
    // watches. It costs two descriptors and a read per signal.)
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &stop, wait_mask) == -1) {
        log_msg("sigprocmask: %s", strerror(errno));
        exit(1);
    }
    // The mask we had, minus the stop signals: unblocked while waiting
    // even if whoever started us had them blocked.
    sigdelset(wait_mask, SIGINT);
    sigdelset(wait_mask, SIGTERM);
}

// ---------------------------------------------------------------- addresses

// "127.0.0.1:53122" or "[::1]:53122": numeric, so no DNS lookup can block us.
static void format_addr(const struct sockaddr *sa, socklen_t len, char *out, size_t out_len)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];
    int rc = getnameinfo(sa, len, host, sizeof host, port, sizeof port,
                         NI_NUMERICHOST | NI_NUMERICSERV);
    if (rc != 0)
        snprintf(out, out_len, "?(%s)", gai_strerror(rc));
    else if (sa->sa_family == AF_INET6)
        snprintf(out, out_len, "[%s]:%s", host, port);
    else
        snprintf(out, out_len, "%s:%s", host, port);
}

// ---------------------------------------------------------------- listening

int listen_on(const char *host, const char *port)
{
    // getaddrinfo turns "127.0.0.1" or "::1" (or "localhost") into the
    // sockaddr the kernel wants, so one code path serves IPv4 and IPv6.
    struct addrinfo hints, *res;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        log_msg("%s: %s", host, gai_strerror(rc));
        return -1;
    }

    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd == -1) {
            err = errno;
            continue;
        }
        // After a server stops, the connections it closed first stay in
        // TIME_WAIT for about a minute, and without SO_REUSEADDR bind() fails
        // with "Address already in use" until they are gone. Setting it lets a
        // restarted server take its port back at once. (It does not let two
        // live servers share a port on Linux: that is SO_REUSEPORT.)
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            // The backlog: how many connections the kernel completes and queues
            // for us while we are not calling accept(). Linux caps it at
            // net.core.somaxconn; asking for SOMAXCONN means "as many as allowed".
            listen(fd, SOMAXCONN) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd == -1) {
        log_msg("cannot listen on %s:%s: %s", host, port, strerror(err));
        return -1;
    }

    // With -p 0 the kernel picked the port: ask it which one, so that whoever
    // started us (a test, a script) knows where to connect.
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1) {
        log_msg("getsockname: %s", strerror(errno));
        close(fd);
        return -1;
    }
    char where[PEER_LEN];
    format_addr((struct sockaddr *)&ss, len, where, sizeof where);
    // stdout is a pipe under a test harness, so fully buffered: without the
    // flush the line would sit in our buffer and the harness would wait forever.
    // Both can fail (stdout closed, or a full disk behind it): then whoever
    // waits for this line would never learn where we listen, so we say why on
    // stderr and give up instead of serving unseen.
    if (printf("listening on %s\n", where) < 0 || fflush(stdout) == EOF) {
        log_msg("cannot write \"listening on %s\" to stdout: %s", where, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

// ---------------------------------------------------------------- accepting

void close_or_log(int fd)
{
    if (close(fd) == -1)
        log_msg("fd %d: close: %s", fd, strerror(errno));
}

int set_nonblocking(int fd)
{
    // Read the flags first and add ours: setting O_NONBLOCK alone would
    // clear whatever other status flags the descriptor had.
    int flags = fcntl(fd, F_GETFL);
    if (flags == -1 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) {
        log_msg("fd %d: fcntl(O_NONBLOCK): %s", fd, strerror(errno));
        return -1;
    }
    return 0;
}

int accept_client(int listen_fd, char *peer, size_t peer_len)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    // The kernel did the TCP handshake already and queued the connection in
    // the backlog; accept4() takes it off the queue and returns a new
    // descriptor for it. LISTEN_FD is non-blocking here, so when the queue
    // is empty we get EAGAIN instead of sleeping.
    // SOCK_CLOEXEC: a program we exec()ed would not inherit the client
    // socket (we exec nothing, but a library might). No SOCK_NONBLOCK, on
    // purpose: with accept4 the new socket's flags are the ones we ask for,
    // never the listener's, so it is blocking on Linux and BSD alike.
    int fd = accept4(listen_fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
    if (fd == -1) {
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK)
            return -1;  // nobody left to accept: not an error
        log_msg("accept: %s", strerror(err));
        if (err == EMFILE || err == ENFILE) {
            // Out of descriptors: accept4() would fail again at once and the
            // loop would spin. Pause so clients can leave (04_epoll does better).
            struct timespec pause = {0, 100 * 1000 * 1000};
            nanosleep(&pause, NULL);  // the stop signals are blocked: it runs out
        }
        errno = err;
        return -1;
    }
    // TCP_NODELAY: an echo that needs several send()s (one per 16 KiB recv)
    // ends with a short piece, and Nagle's algorithm holds a short piece
    // back until the peer ACKs what went before; the peer delays that ACK
    // (up to 40 ms on Linux) hoping to piggyback it on a reply. Measured on
    // one connection with 16500-byte messages (two sends each): 44 ms per
    // message with Nagle, 0.03 ms without (README, section 5).
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1)
        log_msg("fd %d: TCP_NODELAY: %s (serving it anyway)", fd, strerror(errno));
    format_addr((struct sockaddr *)&ss, len, peer, peer_len);
    log_msg("%s connected (fd %d)", peer, fd);
    return fd;
}
