// client.c: a chat client that survives the server going away. One thread, poll() over stdin,
// the socket and a timer; lines typed while disconnected are queued and sent after reconnecting.
//
//   client [-H HOST] [-p PORT] [--retry SEC] [--bot TEXT --every SEC]
//
// Three states (struct client, state): CONNECTING (a non-blocking connect in
// progress: poll says POLLOUT when it is decided), CONNECTED, and WAITING (the
// connection dropped or was refused: the timer says when to try again). stdin
// is read in every state into one queue, `pending`, which the socket drains
// while connected: so a line typed while the server is away waits its turn
// and is sent after reconnecting. The queue is bounded (PENDING_MAX): once
// full, stdin is not read until it drains, so nothing is lost, the typist
// (or the pipe feeding us) just waits.
//
// EOF on stdin: the queue is sent (after reconnecting, if need be), then our
// FIN (shutdown SHUT_WR); the server answers the last lines and closes, and
// we exit 0 once it has. Bytes the kernel had accepted when a connection
// dropped are lost with it: the queue holds what was not sent yet, not what
// was not delivered (README.md, section 3).

#define _GNU_SOURCE  // getopt_long's declaration, with _POSIX_C_SOURCE
#include "buffer.h"
#include "net.h"

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// The most stdin bytes queued while they cannot be sent: 1 MiB is thousands
// of typed lines; a pipe that feeds faster than that waits (stdin is not
// read while the queue is full).
#define PENDING_MAX ((size_t)1 << 20)

#define READ_CHUNK 65536

enum client_state { CONNECTING, CONNECTED, WAITING };

struct client {
    const char *host, *port;
    long long retry_ms;  // --retry
    const char *bot;     // --bot TEXT, or NULL
    long long every_ms;  // --every
    enum client_state state;
    int fd;                  // the socket; -1 while WAITING
    bool stdin_eof;          // stdin ended: send what is queued, then FIN, then exit
    bool fin_sent;           // shutdown(SHUT_WR) done on this connection
    long long retry_at;      // WAITING: when to connect again (now_ms)
    long long bot_at;        // --bot: when the next line is due
    struct buffer pending;   // stdin bytes (and bot lines) not sent yet
};

static void usage(FILE *to)
{
    fprintf(to,
            "usage: client [-H HOST] [-p PORT] [--retry SEC] [--bot TEXT --every SEC]\n"
            "  -H, --host HOST   server address (default 127.0.0.1)\n"
            "  -p, --port PORT   server port (default " DEFAULT_PORT ")\n"
            "  -h, --help        print this help and exit\n"
            "      --retry SEC   when the connection drops or is refused, try again every\n"
            "                    SEC seconds (default 3); lines typed meanwhile are queued\n"
            "                    (up to 1 MiB) and sent after reconnecting\n"
            "      --bot TEXT    send the line TEXT every --every seconds (a demo load)\n"
            "      --every SEC   the bot's period (default 1)\n"
            "Reads lines on stdin and sends them; prints what the server sends. At the end\n"
            "of stdin: sends what is queued, then waits for the server to close, exit 0.\n");
}

_Noreturn static void usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "client: %s '%s'\n", what, arg);
    usage(stderr);
    exit(2);
}

// SEC as milliseconds (0.001 to a day), or a usage error.
static long long parse_seconds(const char *arg, const char *what)
{
    char *end;
    errno = 0;
    double sec = strtod(arg, &end);
    if (arg[0] < '0' || arg[0] > '9' || errno != 0 || *end != '\0' ||
        !(sec >= 0.001 && sec <= 86400))
        usage_error(what, arg);
    return (long long)(sec * 1000 + 0.999);  // rounded up to the millisecond
}

enum { OPT_RETRY = 256, OPT_BOT, OPT_EVERY };

static void parse_client_options(int argc, char **argv, struct client *c)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},  {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},        {"retry", required_argument, NULL, OPT_RETRY},
        {"bot", required_argument, NULL, OPT_BOT}, {"every", required_argument, NULL, OPT_EVERY},
        {NULL, 0, NULL, 0},
    };
    c->host = "127.0.0.1";
    c->port = DEFAULT_PORT;
    c->retry_ms = 3000;
    c->bot = NULL;
    c->every_ms = 1000;
    bool every = false;
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, ":H:p:h", longopts, NULL)) != -1) {
        switch (o) {
        case 'H':
            c->host = optarg;
            break;
        case 'p': {
            char *end;
            long port = strtol(optarg, &end, 10);
            if (optarg[0] < '0' || optarg[0] > '9' || *end != '\0' || port < 1 || port > 65535)
                usage_error("bad port", optarg);
            c->port = optarg;
            break;
        }
        case OPT_RETRY:
            c->retry_ms = parse_seconds(optarg, "bad --retry (want seconds, 0.001 to 86400)");
            break;
        case OPT_BOT:
            if (optarg[0] == '\0' || strchr(optarg, '\n') != NULL)
                usage_error("bad --bot text (want one non-empty line)", optarg);
            c->bot = optarg;
            break;
        case OPT_EVERY:
            c->every_ms = parse_seconds(optarg, "bad --every (want seconds, 0.001 to 86400)");
            every = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case ':':
            usage_error("missing value for", argv[optind - 1]);
            break;
        default: {
            char short_opt[] = {'-', (char)optopt, '\0'};
            usage_error("unknown option", optopt ? short_opt : argv[optind - 1]);
        }
        }
    }
    if (optind < argc)
        usage_error("unexpected argument", argv[optind]);
    if (every && c->bot == NULL)
        usage_error("--every without --bot", "--every");
}

// ---------------------------------------------------------------- the connection

// Drops the connection (if any) and waits --retry before the next attempt.
static void client_wait(struct client *c, const char *why)
{
    if (c->fd != -1)
        close_or_log(c->fd, "socket");
    c->fd = -1;
    c->state = WAITING;
    c->fin_sent = false;
    c->retry_at = now_ms() + c->retry_ms;
    fprintf(stderr, "* disconnected, retrying in %g s (%s)\n", c->retry_ms / 1000.0, why);
}

// Starts a non-blocking connect: CONNECTING (or WAITING, if it failed at once).
static void client_connect(struct client *c)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(c->host, c->port, &hints, &res);
    if (rc != 0) {
        client_wait(c, gai_strerror(rc));
        return;
    }
    // Non-blocking, so that stdin is still read (and queued) while the
    // handshake takes its time, or the SYN goes unanswered.
    c->fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   res->ai_protocol);
    if (c->fd == -1) {
        freeaddrinfo(res);
        client_wait(c, strerror(errno));
        return;
    }
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // speed only
    rc = connect(c->fd, res->ai_addr, res->ai_addrlen);
    int err = errno;
    freeaddrinfo(res);
    if (rc == 0) {
        c->state = CONNECTED;
        fprintf(stderr, "* connected to %s:%s\n", c->host, c->port);
    } else if (err == EINPROGRESS) {
        c->state = CONNECTING;
    } else {
        client_wait(c, strerror(err));
    }
}

// CONNECTING and poll said POLLOUT: the handshake is decided; SO_ERROR says how.
static void client_connected(struct client *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
        err = errno;
    if (err != 0) {
        client_wait(c, strerror(err));
        return;
    }
    c->state = CONNECTED;
    fprintf(stderr, "* connected to %s:%s\n", c->host, c->port);
}

// Sends what is queued, as much as the kernel takes; then, at the end of
// stdin with nothing left, our FIN.
static void client_send(struct client *c)
{
    while (buf_len(&c->pending) > 0) {
        ssize_t n = send(c->fd, buf_peek(&c->pending), buf_len(&c->pending), MSG_NOSIGNAL);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                client_wait(c, strerror(errno));
            return;
        }
        buf_consume(&c->pending, (size_t)n);
    }
    if (c->stdin_eof && !c->fin_sent) {
        c->fin_sent = true;
        if (shutdown(c->fd, SHUT_WR) == -1)
            client_wait(c, strerror(errno));
    }
}

// Reads what the server sent and prints it. Returns false when the program
// is done (the server closed after our FIN).
static bool client_recv(struct client *c)
{
    char buf[READ_CHUNK];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n == -1) {
        if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            client_wait(c, strerror(errno));
        return true;
    }
    if (n == 0) {
        if (c->fin_sent && buf_len(&c->pending) == 0)
            return false;  // everything sent, and the server has answered it all
        client_wait(c, "the server closed the connection");
        return true;
    }
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(STDOUT_FILENO, buf + off, (size_t)(n - off));
        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1) {
            log_msg("stdout: %s", strerror(errno));
            exit(1);
        }
        off += w;
    }
    return true;
}

// Reads stdin into the queue (at most to PENDING_MAX).
static void client_read_stdin(struct client *c)
{
    size_t room;
    size_t want = PENDING_MAX - buf_len(&c->pending);
    char *at = buf_reserve(&c->pending, want < READ_CHUNK ? want : READ_CHUNK, &room);
    if (at == NULL) {
        log_msg("out of memory");
        exit(1);
    }
    if (room > want)
        room = want;
    ssize_t n = read(STDIN_FILENO, at, room);
    if (n == -1) {
        if (errno == EINTR || errno == EAGAIN)
            return;
        log_msg("stdin: %s", strerror(errno));
        n = 0;  // as good as its end
    }
    if (n == 0)
        c->stdin_eof = true;
    else
        buf_commit(&c->pending, (size_t)n);
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    struct client c = {.fd = -1};
    set_prog_name("client");
    parse_client_options(argc, argv, &c);
    signal(SIGPIPE, SIG_IGN);  // a send to a closed socket fails with EPIPE instead
    c.bot_at = now_ms() + c.every_ms;
    client_connect(&c);

    for (;;) {
        // The end: stdin is over, and nothing is left to send (and, if we
        // were connected, the server has closed: client_recv returns false).
        if (c.stdin_eof && buf_len(&c.pending) == 0 && c.state == WAITING) {
            buf_free(&c.pending);
            return 0;
        }
        struct pollfd p[2] = {{.fd = -1}, {.fd = -1}};
        if (!c.stdin_eof && buf_len(&c.pending) < PENDING_MAX)
            p[0] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
        if (c.state == CONNECTING)
            p[1] = (struct pollfd){.fd = c.fd, .events = POLLOUT};
        else if (c.state == CONNECTED)
            p[1] = (struct pollfd){.fd = c.fd,
                                   .events = POLLIN | (buf_len(&c.pending) > 0 ? POLLOUT : 0)};
        // The timer: the retry while WAITING, and the bot's next line.
        long long next = -1;
        if (c.state == WAITING)
            next = c.retry_at;
        if (c.bot != NULL && (next == -1 || c.bot_at < next))
            next = c.bot_at;
        int timeout = -1;
        if (next != -1) {
            long long left = next - now_ms();
            timeout = left <= 0 ? 0 : left > 86400000 ? 86400000 : (int)left;
        }
        int n = poll(p, 2, timeout);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            log_msg("poll: %s", strerror(errno));
            return 1;
        }
        long long now = now_ms();
        if (c.bot != NULL && now >= c.bot_at) {
            c.bot_at = now + c.every_ms;
            // While connected only: a demo load, not something to catch up on.
            if (c.state == CONNECTED && !c.stdin_eof &&
                buf_len(&c.pending) + strlen(c.bot) + 1 <= PENDING_MAX &&
                (buf_append(&c.pending, c.bot, strlen(c.bot)) == -1 ||
                 buf_append(&c.pending, "\n", 1) == -1)) {
                log_msg("out of memory");
                return 1;
            }
        }
        if (c.state == WAITING && now >= c.retry_at)
            client_connect(&c);
        if (p[0].revents)
            client_read_stdin(&c);
        if (p[1].fd != -1 && p[1].revents) {
            if (c.state == CONNECTING)
                client_connected(&c);
            else if (c.state == CONNECTED && (p[1].revents & (POLLIN | POLLHUP | POLLERR)) &&
                     !client_recv(&c)) {
                close_or_log(c.fd, "socket");
                buf_free(&c.pending);
                return 0;
            }
        }
        if (c.state == CONNECTED)
            client_send(&c);
    }
}
