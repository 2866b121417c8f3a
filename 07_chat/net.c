// net.c: the socket plumbing of the chat server (and the client's logging and signals).
// Read it after server.c: it holds the calls that server.c names in its loop.

// _GNU_SOURCE: glibc declares accept4() (accept_client) only with it; it is
// a Linux call (POSIX has it only since its 2024 edition).
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t stop_requested = 0;

static const char *prog_name = "server";

// ---------------------------------------------------------------- options

static void usage(FILE *to)
{
    fprintf(to,
            "usage: %s [-H HOST] [-p PORT] [--max-output BYTES] [--soft-output BYTES]\n"
            "          [--soft-seconds SEC] [--idle-timeout SEC] [--broadcast shared|copy]\n"
            "  -H, --host HOST   address to listen on (default 127.0.0.1)\n"
            "  -p, --port PORT   TCP port, 0 = any free port (default " DEFAULT_PORT ")\n"
            "  -h, --help        print this help and exit\n"
            "      --max-output BYTES\n"
            "                    the hard cap: drop a session (too slow) when a line would\n"
            "                    leave more than BYTES of its output waiting even after a\n"
            "                    write (default %zu = 1 MiB)\n"
            "      --soft-output BYTES, --soft-seconds SEC\n"
            "                    the soft cap: drop a session that still has more than BYTES\n"
            "                    waiting after the writes of every turn for SEC seconds\n"
            "                    (default %zu = 256 KiB for %.0f s)\n"
            "      --idle-timeout SEC\n"
            "                    close a session that sends nothing for SEC seconds\n"
            "                    (fractions allowed; default %.0f)\n"
            "      --broadcast shared|copy\n"
            "                    shared (default): one reference-counted buffer per message,\n"
            "                    queued by every recipient; copy: the bytes copied into each\n"
            "                    recipient's own output buffer (to measure the difference)\n",
            prog_name, DEFAULT_MAX_OUTPUT, DEFAULT_SOFT_OUTPUT, DEFAULT_SOFT_SECONDS,
            DEFAULT_IDLE_TIMEOUT_S);
}

// A bad command line is the user's mistake, not a crash: say what, show the
// usage, and exit 2 (the usual "usage error" status of command-line tools).
_Noreturn static void usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s '%s'\n", prog_name, what, arg);
    usage(stderr);
    exit(2);
}

// The long options with no one-letter form; getopt_long returns these for
// them (any values that are not characters of the short-option string).
enum { OPT_MAX_OUTPUT = 256, OPT_SOFT_OUTPUT, OPT_SOFT_SECONDS, OPT_IDLE_TIMEOUT, OPT_BROADCAST };

void set_prog_name(const char *prog)
{
    prog_name = prog;
}

void parse_options(int argc, char **argv, const char *prog, struct options *opt)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {"max-output", required_argument, NULL, OPT_MAX_OUTPUT},
        {"soft-output", required_argument, NULL, OPT_SOFT_OUTPUT},
        {"soft-seconds", required_argument, NULL, OPT_SOFT_SECONDS},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"broadcast", required_argument, NULL, OPT_BROADCAST},
        {NULL, 0, NULL, 0},
    };
    prog_name = prog;
    opt->host = "127.0.0.1";
    opt->port = DEFAULT_PORT;
    opt->max_output = DEFAULT_MAX_OUTPUT;
    opt->soft_output = DEFAULT_SOFT_OUTPUT;
    opt->soft_ns = (long long)(DEFAULT_SOFT_SECONDS * 1e9);
    opt->idle_timeout_ns = (long long)(DEFAULT_IDLE_TIMEOUT_S * 1e9);
    opt->broadcast = BROADCAST_SHARED;

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
        case OPT_MAX_OUTPUT:
        case OPT_SOFT_OUTPUT: {
            char *end;
            errno = 0;
            unsigned long long bytes = strtoull(optarg, &end, 10);
            // A digit first: strtoull would skip spaces and read "-1" as a
            // huge number. The cap keeps sums of sizes far from overflow.
            if (optarg[0] < '0' || optarg[0] > '9' || errno != 0 || *end != '\0' ||
                bytes > SIZE_MAX / 4)
                usage_error("bad byte count", optarg);
            if (c == OPT_MAX_OUTPUT)
                opt->max_output = (size_t)bytes;
            else
                opt->soft_output = (size_t)bytes;
            break;
        }
        case OPT_SOFT_SECONDS:
        case OPT_IDLE_TIMEOUT: {
            char *end;
            errno = 0;
            double sec = strtod(optarg, &end);
            // At least a millisecond (the loop's clock), at most a year;
            // digits and a point only: strtod also takes " 5", "inf", "nan",
            // "1e3" and the hex float "0x10".
            if (optarg[0] < '0' || optarg[0] > '9' || optarg[strspn(optarg, "0123456789.")] != '\0' ||
                errno != 0 || *end != '\0' ||
                !(sec >= 0.001 && sec <= 365.0 * 86400))
                usage_error("bad time (want seconds, 0.001 to 31536000)", optarg);
            if (c == OPT_IDLE_TIMEOUT)
                opt->idle_timeout_ns = (long long)(sec * 1e9);
            else
                opt->soft_ns = (long long)(sec * 1e9);
            break;
        }
        case OPT_BROADCAST:
            if (strcmp(optarg, "shared") == 0)
                opt->broadcast = BROADCAST_SHARED;
            else if (strcmp(optarg, "copy") == 0)
                opt->broadcast = BROADCAST_COPY;
            else
                usage_error("bad broadcast mode (want shared or copy)", optarg);
            break;
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
    // No SA_RESTART, on purpose. With it, the kernel would restart accept()
    // or recv() after the handler ran and the server would block on, never
    // looking at stop_requested. Without it those calls fail with EINTR and
    // the loop gets a chance to notice.
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
    // session_flush (server.c) turns into dropping that one session.
    set_handler(SIGPIPE, SIG_IGN);
}

int block_stop_signals(sigset_t *wait_mask)
{
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &stop_signals, wait_mask) == -1) {
        log_msg("sigprocmask: %s", strerror(errno));
        return -1;
    }
    // Unblocked inside the wait even if whoever started us had blocked them.
    sigdelset(wait_mask, SIGINT);
    sigdelset(wait_mask, SIGTERM);
    return 0;
}

// ---------------------------------------------------------------- addresses

// "127.0.0.1:53122" or "[::1]:53122": numeric, so no DNS lookup can block us.
static void format_addr(const struct sockaddr *sa, socklen_t len, char *out, size_t out_len)
{
    char host[48], port[8];
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
    char where[64];  // "[ipv6-address]:port"
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

int accept_client(int listen_fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    // The kernel did the TCP handshake already and queued the connection in
    // the backlog; accept4() takes it off the queue and returns a new
    // descriptor for it. LISTEN_FD is non-blocking here, so when the queue
    // is empty we get EAGAIN instead of sleeping. accept4 is accept plus
    // flags for the new descriptor, set as it is created, which saves the two
    // fcntl() calls per client that setting them afterwards would cost:
    // SOCK_NONBLOCK, because no send() or recv() may ever put this one-thread
    // server to sleep (one stalled session would stall the whole room);
    // SOCK_CLOEXEC, because a program we might exec must not inherit our
    // clients (server.c, session_free, says what an inherited copy would do
    // to epoll).
    int fd = accept4(listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd == -1) {
        int err = errno;
        if (err == EINTR || err == EAGAIN || err == EWOULDBLOCK)
            return -1;  // a signal, or nobody left to accept: not an error
        // Out of descriptors: server.c (accept_clients) deals with it and
        // logs what it did, so no line here.
        if (err != EMFILE && err != ENFILE)
            log_msg("accept: %s", strerror(err));
        errno = err;
        return -1;
    }
    // TCP_NODELAY turns off Nagle's algorithm, which holds back a small
    // segment while an earlier one is unacknowledged. A chat line sent while
    // the previous one is still unacknowledged would then wait for the
    // client's ACK, which a client may delay by up to 40 ms: every line of a
    // conversation, late. Failing costs speed only, not data.
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1)
        log_msg("fd %d: setsockopt(TCP_NODELAY): %s", fd, strerror(errno));
    char peer[64];  // "[ipv6-address]:port"
    format_addr((struct sockaddr *)&ss, len, peer, sizeof peer);
    log_msg("%s connected (fd %d)", peer, fd);
    return fd;
}

void close_or_log(int fd, const char *what)
{
    if (close(fd) == -1)
        log_msg("close (%s): %s", what, strerror(errno));
}

// ---------------------------------------------------------------- the clock and the fd limit

long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  // cannot fail with a valid clock id
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// The soft limit on open descriptors is usually 1024, and low on purpose:
// a program using select() breaks past fd 1023 (02_select). We use epoll,
// so we may raise it, without privileges, up to the hard limit the
// administrator set.
void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        log_msg("getrlimit: %s", strerror(errno));
        return;
    }
    if (rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
        // Linux refuses RLIM_INFINITY here (the ceiling is fs.nr_open).
        log_msg("cannot raise the open-file limit from %llu: %s", (unsigned long long)old,
                strerror(errno));
        return;
    }
    log_msg("open-file limit raised from %llu to %llu", (unsigned long long)old,
            (unsigned long long)rl.rlim_cur);
}
