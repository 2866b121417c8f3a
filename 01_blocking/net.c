// net.c: the socket plumbing the three blocking echo servers share.
// Read it after server.c: it holds the calls that server.c names in its loop.

// _GNU_SOURCE: accept4() and ppoll() are Linux calls (glibc declares them only with it), and
// this is the one file of the stage that makes them. It must come before the first #include.
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

atomic_int stop_requested = 0;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "a signal handler may only touch lock-free atomics");

// The signals whose handlers must end the wait for a client (wait_for_client): SIGINT and
// SIGTERM, and in server_fork SIGCHLD. install_signal_handlers empties it (a sigset_t is
// opaque: POSIX wants sigemptyset before first use, even for a zeroed static one), and
// set_handler adds every signal it gives a handler.
static sigset_t wake_signals;

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

// pthread_sigmask, not sigprocmask: server_thread has threads, and there sigprocmask is
// undefined. It fails only on a bad argument; it is checked anyway, because a mask left
// wrong would silently make the server deaf to SIGTERM.
static void set_signal_mask(int how, const sigset_t *set, sigset_t *old)
{
    int rc = pthread_sigmask(how, set, old);
    if (rc != 0) {
        log_msg("pthread_sigmask: %s", strerror(rc));
        exit(1);
    }
}

void set_handler(int sig, void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    // No SA_RESTART, on purpose. With it, the kernel would restart recv()
    // or send() after the handler ran and the server would block on, never
    // looking at stop_requested. Without it those calls fail with EINTR (or
    // return a short count) and the loop gets a chance to notice. (ppoll(),
    // the wait in wait_for_client, is never restarted, SA_RESTART or not.)
    sa.sa_flags = 0;
    if (sigaction(sig, &sa, NULL) == -1) {
        log_msg("sigaction(%d): %s", sig, strerror(errno));
        exit(1);
    }
    if (fn != SIG_IGN && fn != SIG_DFL) {
        sigaddset(&wake_signals, sig);
        // A blocked signal mask is inherited through fork() and exec(): a shell, a
        // supervisor or a test may start us with SIGTERM blocked. Then wait_for_client
        // would hand ppoll() that mask (it unblocks only what it blocked itself), recv()
        // would never see EINTR, and no SIGTERM could ever stop us. A signal we give a
        // handler must be able to arrive: unblock it here, once.
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        set_signal_mask(SIG_UNBLOCK, &one, NULL);
    }
}

void install_signal_handlers(void)
{
    sigemptyset(&wake_signals);
    set_handler(SIGINT, on_stop_signal);
    set_handler(SIGTERM, on_stop_signal);
    // Writing to a socket whose peer has gone raises SIGPIPE, and SIGPIPE's
    // default action is to kill the process: one client hanging up would kill
    // the whole server. Ignored, the same send() just fails with EPIPE, which
    // send_all reports and echo_client turns into "dropping" that one client.
    set_handler(SIGPIPE, SIG_IGN);
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

// Sleeps until a client is waiting on LISTEN_FD (returns 0) or a signal arrives (-1, errno
// EINTR; the caller looks at its flags).
//
// Why not just `if (stop_requested) break;` and then accept()? A SIGTERM that lands after
// that check and before accept() starts to sleep runs its handler, sets the flag, and is
// forgotten: accept() then sleeps until the next client, which on an idle server never
// comes. So the check and the sleep must be one step as far as signals are concerned:
//  1. block the signals: one that arrives now stays pending, its handler not yet run;
//  2. look at the flag: nothing can change it behind our back any more;
//  3. ppoll() installs the mask we had before (signals unblocked) and sleeps, atomically:
//     a signal already pending interrupts it at once (EINTR), as does one that comes later;
//  4. put the blocking back as it was, so that recv() and send() in echo_client can still
//     be interrupted.
static int wait_for_client(int listen_fd)
{
    // LAB BEGIN wait_for_client: block wake_signals, check stop_requested, ppoll() the listening socket with the old mask, restore the mask
    // LAB STUB: (void)listen_fd;  // not written: no wait, accept() blocks with the signals unblocked
    // LAB STUB: int ready = 0, err = 0;
    sigset_t old;
    set_signal_mask(SIG_BLOCK, &wake_signals, &old);
    int ready = -1, err = EINTR;
    if (!stop_requested) {
        struct pollfd pfd = {.fd = listen_fd, .events = POLLIN};
        ready = ppoll(&pfd, 1, NULL, &old);
        err = errno;
    }
    // Pending signals run their handlers as this unblocks them (the flag is set by then).
    set_signal_mask(SIG_SETMASK, &old, NULL);
    // LAB END
    if (ready == -1 && err != EINTR)
        log_msg("ppoll: %s", strerror(err));  // no memory for the wait: the caller tries again
    errno = err;
    return ready == -1 ? -1 : 0;
}

int accept_client(int listen_fd, char *peer, size_t peer_len)
{
    if (wait_for_client(listen_fd) == -1)
        return -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    // A client is queued (the kernel did the TCP handshake already and parked the connection
    // in the backlog), so accept() returns at once with a new descriptor for it. (It could
    // still sleep if another process took that client first; no server here shares its
    // listening socket, and a signal would still interrupt it.)
    // accept4 is accept with flags. SOCK_CLOEXEC: the descriptor closes itself if this
    // process ever exec()s another program, which must not inherit our clients. Set here, in
    // the same call, it leaves no moment when a fork+exec elsewhere could leak it.
    int fd = accept4(listen_fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
    if (fd == -1) {
        int err = errno;
        if (err == EINTR)
            return -1;  // a signal: the caller looks at its flags
        log_msg("accept: %s", strerror(err));
        if (err == EMFILE || err == ENFILE) {
            // Out of descriptors: accept() would fail again at once and the
            // loop would spin. Pause so clients can leave (04_epoll does better).
            struct timespec pause = {0, 100 * 1000 * 1000};
            nanosleep(&pause, NULL);  // EINTR here just ends the pause early
        }
        errno = err;
        return -1;
    }
    // TCP_NODELAY turns off Nagle's algorithm, which holds back a small segment while a
    // small one we sent is still unacknowledged. Our echo of a message leaves in several
    // send()s (one per recv()), and its last, short piece would wait for the client's
    // delayed ACK (up to 40 ms on Linux). Measured here with server_thread: 16500-byte
    // messages (a 16 KiB recv, then 116 bytes), one at a time on one connection, came
    // back 24 times a second with Nagle and about 18000 times a second without.
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1)
        log_msg("fd %d: TCP_NODELAY: %s (serving it anyway)", fd, strerror(errno));
    format_addr((struct sockaddr *)&ss, len, peer, peer_len);
    log_msg("%s connected (fd %d)", peer, fd);
    return fd;
}

// ---------------------------------------------------------------- closing

void close_or_log(int fd)
{
    if (close(fd) == -1)
        log_msg("fd %d: close: %s", fd, strerror(errno));
}

// ---------------------------------------------------------------- echo

int send_all(int fd, const void *buf, size_t len)
{
    // LAB BEGIN send_all: send all len bytes of buf; after a short count or EINTR log it and send the rest, unless stop_requested; return 0, or -1 with errno set
    // LAB STUB: // not written: one send(); what a signal cut short of it is lost, unsaid
    // LAB STUB: return send(fd, buf, len, 0) == -1 ? -1 : 0;
    const char *p = buf;
    while (len > 0) {
        // send() copies bytes into the kernel's send buffer and returns how
        // many it took. When the buffer is full (the client reads slower than
        // we write) a blocking send() sleeps until there is room. A signal
        // that arrives while it sleeps (its handler installed without
        // SA_RESTART) wakes it: it returns the bytes it took so far (a short
        // count), or -1 with EINTR if it took none. (A shutdown() of the
        // socket from another thread, server_thread's way to stop, wakes it
        // too: with a short count, or -1 with EPIPE, never EINTR.) The rest
        // is ours to send again, which is why this is a loop. We log each
        // time: it is rare, and the tests use the line to prove it happened.
        ssize_t n = send(fd, p, len, 0);
        if (n == -1 && errno != EINTR)
            return -1;  // EPIPE, ECONNRESET: the client is gone
        if (n == -1 || (size_t)n < len)
            log_msg("fd %d: send() cut short: %zd of %zu bytes", fd, n == -1 ? (ssize_t)0 : n, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        }
        // If the signal asked us to stop, stop here: with a client that never
        // reads, the next send() would sleep past the shutdown deadline.
        if (len > 0 && stop_requested) {
            errno = EINTR;
            return -1;
        }
    }
    return 0;
    // LAB END
}

void echo_client(int fd, const char *peer)
{
    // Any size works; bigger means fewer system calls per megabyte.
    char buf[16 * 1024];
    for (;;) {
        // LAB BEGIN echo_loop: (1 of 2) before each recv(): once stop_requested is set, log "<peer> closed (server stopping)" and return
        // LAB STUB: // not written: the flag is not looked at
        // Look at the flag right before each blocking call: a SIGTERM that came
        // while we were busy elsewhere (logging, sending) interrupted nothing,
        // so recv() would never see EINTR for it. One that lands between this
        // check and recv() is the window wait_for_client closes with ppoll();
        // here it stays open (README.md, "Simplified on purpose"): server_thread
        // wakes its workers with shutdown() and server_fork's parent ends a
        // child with SIGKILL after 1.5 s, so only `server` can miss it, and
        // only until its client sends a byte or leaves.
        if (stop_requested) {
            log_msg("%s closed (server stopping)", peer);
            return;
        }
        // LAB END
        // recv() blocks until at least one byte is there, then returns what
        // has arrived so far, up to sizeof buf. TCP is a byte stream: the 1 MiB
        // a client sent in one send() may arrive as 1 byte, then 64 KiB,
        // then... The sender's write boundaries are not kept, so we never
        // assume a recv() returns "a message"; we just echo whatever we got.
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        // LAB BEGIN echo_loop: (2 of 2) how recv() ended: 0 is EOF (log "<peer> closed", return); -1 with EINTR is a signal, not always a stop (go round again); any other error: log "fd N: recv: <strerror>, dropping" and return
        // LAB STUB: if (n <= 0) {  // not written: EOF, errors and signals all end the echo alike
        // LAB STUB:     log_msg("%s: echo_loop not written, dropping", peer);
        // LAB STUB:     return;
        // LAB STUB: }
        if (n == 0) {
            // 0 means EOF: the client closed or half-closed (shutdown SHUT_WR).
            // Everything it sent has been echoed already, so we are done.
            log_msg("%s closed", peer);
            return;
        }
        if (n == -1) {
            if (errno == EINTR)
                continue;  // a signal: the check at the top decides
            log_msg("fd %d: recv: %s, dropping", fd, strerror(errno));
            return;
        }
        // LAB END
        if (send_all(fd, buf, (size_t)n) == -1) {
            if (errno == EINTR)
                log_msg("%s closed (server stopping)", peer);
            else
                log_msg("fd %d: send: %s, dropping", fd, strerror(errno));
            return;
        }
    }
}
