// client.c: a chat client that survives the server going away. One thread, poll() over stdin,
// the socket, a signal pipe and a timer; lines typed while disconnected are queued and sent
// after reconnecting; what the server sends is printed with control bytes made visible.
//
//   client [-H HOST] [-p PORT] [--retry SEC] [--retry-max SEC] [--bot TEXT --every SEC]
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
// How it ends (client_end; the exit statuses are enum client_exit):
//   - EOF on stdin: the queue is sent, then our FIN (shutdown SHUT_WR); the
//     server answers the last lines and closes; exit 0. No new connection is
//     tried after stdin ended: with no server, it says what was not sent.
//   - `/quit` on stdin: the same, and stdin is read no further.
//   - `* idle timeout`, `* line too long`, or dropped as too slow: the server
//     ended this session for a reason a new one would repeat: no rejoin.
//   - SIGINT, SIGTERM: at once, saying what was not sent.
// Reconnects back off (backoff_ms): exponentially, capped, with jitter, so
// that a room of clients does not come back all in the same millisecond.
// Bytes the kernel had accepted when a connection dropped are lost with it:
// the queue holds what was not sent yet, not what was not delivered
// (README.md, section 3).

#define _GNU_SOURCE  // getopt_long's and pipe2's declarations, with _POSIX_C_SOURCE
#include "buffer.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

// The most stdin bytes queued while they cannot be sent: 1 MiB is thousands
// of typed lines; a pipe that feeds faster than that waits (stdin is not
// read while the queue is full).
#define PENDING_MAX ((size_t)1 << 20)

// One recv, one read of stdin. A recv that fills the whole chunk means the
// socket held at least this much: we are behind the server (client_recv).
#define READ_CHUNK 65536

// The cap of the backoff when --retry-max is not given (or, if --retry is
// larger, --retry itself).
#define RETRY_MAX_MS 30000

enum client_exit {
    EXIT_DONE = 0,      // everything sent and answered; or /quit answered
    EXIT_FAILED = 1,    // stdout or a system call failed
    EXIT_USAGE = 2,     // a bad option
    EXIT_ENDED = 3,     // the server ended the session: idle timeout, line too long, too slow
    EXIT_UNSENT = 4,    // input ended (EOF, /quit) with lines no server took
    // SIGINT, SIGTERM: 128 + the signal's number, as a shell reports it
};

enum client_state { CONNECTING, CONNECTED, WAITING };

struct client {
    const char *host, *port;
    long long retry_ms;      // --retry: the first wait
    long long retry_max_ms;  // --retry-max: the cap
    const char *bot;         // --bot TEXT, or NULL
    long long every_ms;      // --every
    enum client_state state;
    int fd;                  // the socket; -1 while WAITING
    bool stdin_done;         // stdin ended, or said /quit: it is read no more
    bool quit;               // ... and it was /quit
    size_t quit_len;         // the /quit line's bytes, at the end of `pending`
    bool fin_sent;           // shutdown(SHUT_WR) done on this connection
    unsigned attempt;        // failed attempts since the last `* welcome`
    long long retry_at;      // WAITING: when to connect again (now_ms)
    long long bot_at;        // --bot: when the next line is due
    struct buffer pending;   // stdin bytes (and bot lines) not sent yet
    char in_head[8];         // the start of the stdin line being read (for /quit)
    size_t in_len;           // its length so far
    // What the server sent on this connection (client_recv):
    char line[32];           // the start of the line being received
    size_t line_len;         // its length so far
    char last[32];           // the last whole line (cut to 31 bytes), for its farewell
    unsigned lines_in;       // whole lines received
    bool behind;             // a recv filled READ_CHUNK, and the socket was not seen empty since
    unsigned char carry[4];  // an incomplete UTF-8 sequence at the end of the last recv
    size_t carry_len;
    uint64_t rng;            // the jitter's generator state
    char down[160];          // why the last connection failed or ended
};

static volatile sig_atomic_t got_signal;  // SIGINT or SIGTERM, once one came
static int signal_pipe[2] = {-1, -1};     // the handler writes a byte: poll wakes up

static void usage(FILE *to)
{
    fprintf(to,
            "usage: client [-H HOST] [-p PORT] [--retry SEC] [--retry-max SEC]\n"
            "              [--bot TEXT --every SEC]\n"
            "  -H, --host HOST    server address (default 127.0.0.1)\n"
            "  -p, --port PORT    server port (default " DEFAULT_PORT ")\n"
            "  -h, --help         print this help and exit\n"
            "      --retry SEC    the first wait before reconnecting (default 1)\n"
            "      --retry-max SEC  the longest wait (default 30, or --retry if larger)\n"
            "      --bot TEXT     send the line TEXT every --every seconds (a demo load)\n"
            "      --every SEC    the bot's period (default 1)\n"
            "\n"
            "Reads lines on stdin and sends them; prints what the server sends on stdout.\n"
            "Lines typed while disconnected are queued (up to 1 MiB) and sent after\n"
            "reconnecting. Printing: bytes 0x00-0x1f (except newline and tab), 0x7f, the\n"
            "UTF-8 C1 controls (c2 80 to c2 9f) and bytes that are not valid UTF-8 are\n"
            "printed as \\xHH, one per byte; valid UTF-8 passes unchanged.\n"
            "\n"
            "Reconnecting: after the Nth failure in a row (a refused connect, a lost\n"
            "connection; a `* welcome` ends the row) it waits a random time in [D/2, D],\n"
            "D = min(retry-max, retry * 2^(N-1)). Its stderr says why and how long:\n"
            "`* disconnected (WHY); retry N in S s`, `* cannot connect (WHY); ...`.\n"
            "\n"
            "How it ends, and its exit status:\n"
            "  0    end of stdin: what was queued is sent, then it waits for the server\n"
            "       to close; or /quit, answered by `* bye`\n"
            "  3    the server ended the session for a reason a new one would repeat:\n"
            "       `* idle timeout`, `* line too long`, or the connection closed while\n"
            "       we were behind by a full read (dropped as too slow); no reconnect\n"
            "  4    stdin ended (or said /quit) while no server could take what was\n"
            "       queued: no new connection is tried; stderr says how many lines and\n"
            "       bytes were not sent\n"
            "  130, 143  SIGINT (Ctrl-C), SIGTERM: at once, saying what was not sent\n"
            "  1    an error (stdout closed, ...); 2 a bad option\n");
}

_Noreturn static void usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "client: %s '%s'\n", what, arg);
    usage(stderr);
    exit(EXIT_USAGE);
}

// SEC as milliseconds (0.001 to a day), or a usage error. Digits and a point only: strtod
// also takes " 5", "inf", "nan", "1e3" and the hex float "0x10".
static long long parse_seconds(const char *arg, const char *what)
{
    char *end;
    errno = 0;
    double sec = strtod(arg, &end);
    if (arg[0] < '0' || arg[0] > '9' || arg[strspn(arg, "0123456789.")] != '\0' || errno != 0 ||
        *end != '\0' ||
        !(sec >= 0.001 && sec <= 86400))
        usage_error(what, arg);
    return (long long)(sec * 1000 + 0.999);  // rounded up to the millisecond
}

enum { OPT_RETRY = 256, OPT_RETRY_MAX, OPT_BOT, OPT_EVERY };

static void parse_client_options(int argc, char **argv, struct client *c)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},  {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},        {"retry", required_argument, NULL, OPT_RETRY},
        {"retry-max", required_argument, NULL, OPT_RETRY_MAX},
        {"bot", required_argument, NULL, OPT_BOT}, {"every", required_argument, NULL, OPT_EVERY},
        {NULL, 0, NULL, 0},
    };
    c->host = "127.0.0.1";
    c->port = DEFAULT_PORT;
    c->retry_ms = 1000;
    c->retry_max_ms = -1;
    c->bot = NULL;
    c->every_ms = 1000;
    bool every = false;
    const char *retry_max_arg = NULL;
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
        case OPT_RETRY_MAX:
            c->retry_max_ms = parse_seconds(optarg, "bad --retry-max (want seconds, 0.001 to 86400)");
            retry_max_arg = optarg;
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
    if (retry_max_arg == NULL)
        c->retry_max_ms = c->retry_ms > RETRY_MAX_MS ? c->retry_ms : RETRY_MAX_MS;
    else if (c->retry_max_ms < c->retry_ms)
        usage_error("--retry-max below --retry", retry_max_arg);
}

// ---------------------------------------------------------------- the end

// The bytes and lines of `pending` not sent (a line cut short counts as
// one); a /quit at its end is not counted: it was the way out, not a line.
static void unsent(const struct client *c, size_t *lines, size_t *bytes)
{
    size_t n = buf_len(&c->pending);
    n -= c->quit_len < n ? c->quit_len : n;
    const char *p = buf_peek(&c->pending);
    size_t nl = 0;
    for (size_t i = 0; i < n; i++)
        nl += p[i] == '\n';
    *lines = nl + (n > 0 && p[n - 1] != '\n');
    *bytes = n;
}

// Ends the program with STATUS, after a line on stderr saying WHY and what
// was not sent (WHY NULL: nothing to say, and nothing unsent).
_Noreturn static void client_end(struct client *c, int status, const char *why)
{
    size_t lines, bytes;
    unsent(c, &lines, &bytes);
    if (bytes > 0)
        log_msg("%s; not sent: %zu line%s (%zu bytes)", why, lines, lines == 1 ? "" : "s", bytes);
    else if (why != NULL)
        log_msg("%s; nothing was left unsent", why);
    if (c->fd != -1)
        close_or_log(c->fd, "socket");
    buf_free(&c->pending);
    exit(status);
}

// ---------------------------------------------------------------- printing safely

// The length of the valid UTF-8 sequence at P (N bytes available): 1 to 4;
// 0 if P does not start one (a stray continuation byte, an overlong form, a
// surrogate, past U+10FFFF); SIZE_MAX if the N bytes are a valid start cut
// short. The table is RFC 3629's, section 4.
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char b = p[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (b < 0x80)
        return 1;
    else if (b >= 0xC2 && b <= 0xDF)
        need = 2;
    else if (b == 0xE0)
        need = 3, lo = 0xA0;
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF)
        need = 3;
    else if (b == 0xED)
        need = 3, hi = 0x9F;  // not a UTF-16 surrogate
    else if (b == 0xF0)
        need = 4, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3)
        need = 4;
    else if (b == 0xF4)
        need = 4, hi = 0x8F;  // not past U+10FFFF
    else
        return 0;
    for (size_t i = 1; i < need; i++) {
        if (i >= n)
            return SIZE_MAX;
        if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xBF))
            return 0;
    }
    return need;
}

static char *put_hex(char *o, unsigned char b)
{
    static const char hex[] = "0123456789abcdef";
    *o++ = '\\';
    *o++ = 'x';
    *o++ = hex[b >> 4];
    *o++ = hex[b & 15];
    return o;
}

// Writes N bytes to stdout, all of them (stdout may be a slow pipe), or
// exits. A signal ends the program at once, even in the middle.
static void write_stdout(struct client *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w == -1 && errno == EINTR) {
            if (got_signal)
                return;  // the loop ends the program
            continue;
        }
        if (w == -1) {
            log_msg("stdout: %s", strerror(errno));
            client_end(c, EXIT_FAILED, NULL);
        }
        p += w;
        n -= (size_t)w;
    }
}

// Prints what the server sent, so that it cannot drive the terminal: a byte
// a terminal acts on (C0 controls but newline and tab, DEL, a C1 control
// encoded in UTF-8: c2 9b is CSI to some terminals) and a byte that is not
// valid UTF-8 (raw 0x80-0x9f are C1 controls to an 8-bit terminal) come out
// as \xHH; valid UTF-8 passes unchanged. A sequence cut by the end of a recv
// waits in `carry` for the next one; at the end of a connection (FINAL) it
// is printed escaped. Tab passes: it moves the cursor right to a tab stop,
// nothing more, and chat text uses it.
static void print_safe(struct client *c, const char *data, size_t n, bool final)
{
    static unsigned char in[sizeof c->carry + READ_CHUNK];
    static char out[4 * sizeof in];
    memcpy(in, c->carry, c->carry_len);
    memcpy(in + c->carry_len, data, n);
    n += c->carry_len;
    c->carry_len = 0;
    char *o = out;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq(in + i, n - i);
        if (len == SIZE_MAX && !final) {
            memcpy(c->carry, in + i, n - i);
            c->carry_len = n - i;
            break;
        }
        unsigned char b = in[i];
        if (len == 1 && ((b < 0x20 && b != '\n' && b != '\t') || b == 0x7F)) {
            o = put_hex(o, b);
        } else if (len == 2 && b == 0xC2 && in[i + 1] <= 0x9F) {
            o = put_hex(o, b);
            o = put_hex(o, in[i + 1]);
        } else if (len == 0 || len == SIZE_MAX) {
            o = put_hex(o, b);
            len = 1;
        } else {
            memcpy(o, in + i, len);
            o += len;
        }
        i += len;
    }
    write_stdout(c, out, (size_t)(o - out));
}

// ---------------------------------------------------------------- the connection

// The next jitter draw: splitmix64, seeded in main from the clock and the
// pid, so clients started together draw differently.
static uint64_t next_random(struct client *c)
{
    uint64_t z = (c->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The wait before the next attempt, the ATTEMPT-th failure in a row:
// D = min(retry_max, retry * 2^(attempt-1)), then a random point in [D/2, D]
// ("equal jitter"). Doubling spaces the attempts against a server that stays
// away; the cap keeps the wait short enough to notice it is back; the jitter
// spreads clients that lost the same server at the same instant, so that
// they do not all come back in one burst (each join is announced to
// everyone already back: N clients at once cost O(N^2) deliveries).
static long long backoff_ms(struct client *c)
{
    long long d = c->retry_ms;
    for (unsigned i = 1; i < c->attempt && d < c->retry_max_ms; i++)
        d *= 2;
    if (d > c->retry_max_ms)
        d = c->retry_max_ms;
    long long half = d / 2;
    return d - half + (long long)(next_random(c) % (uint64_t)(half + 1));
}

// Forgets what the last connection received (its line, carry, farewell).
static void client_reset_input(struct client *c)
{
    c->line_len = 0;
    c->last[0] = '\0';
    c->lines_in = 0;
    c->behind = false;
    c->carry_len = 0;
}

// stdin is over (or said /quit) and no connection is coming: the end. No
// new attempt after the end of input: a pipe into a client whose server is
// gone would otherwise wait for ever, and a typist's Ctrl-D means "done".
_Noreturn static void client_give_up(struct client *c)
{
    size_t lines, bytes;
    unsent(c, &lines, &bytes);
    if (bytes == 0)
        client_end(c, EXIT_DONE, NULL);
    char msg[300];
    snprintf(msg, sizeof msg, "%s while disconnected (%s)",
             c->quit ? "/quit" : "end of input", c->down);
    client_end(c, EXIT_UNSENT, msg);
}

// The connection attempt failed (WHAT: "cannot connect" or "disconnected",
// WHY) and no farewell ended the session: waits, backing off, before the
// next one. After stdin ended there is no next one: the end.
static void client_wait(struct client *c, const char *what, const char *why)
{
    if (c->fd != -1)
        close_or_log(c->fd, "socket");
    c->fd = -1;
    c->state = WAITING;
    c->fin_sent = false;
    client_reset_input(c);
    snprintf(c->down, sizeof c->down, "%s: %s", what, why);
    if (c->stdin_done)
        client_give_up(c);
    c->attempt++;
    long long wait = backoff_ms(c);
    c->retry_at = now_ms() + wait;
    fprintf(stderr, "* %s (%s); retry %u in %.3f s\n", what, why, c->attempt, wait / 1000.0);
}

// Starts a non-blocking connect: CONNECTING (or WAITING, if it failed at once).
static void client_connect(struct client *c)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(c->host, c->port, &hints, &res);
    if (rc != 0) {
        client_wait(c, "cannot connect", gai_strerror(rc));
        return;
    }
    // Non-blocking, so that stdin is still read (and queued) while the
    // handshake takes its time, or the SYN goes unanswered.
    c->fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   res->ai_protocol);
    if (c->fd == -1) {
        freeaddrinfo(res);
        client_wait(c, "cannot connect", strerror(errno));
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
        client_wait(c, "cannot connect", strerror(err));
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
        client_wait(c, "cannot connect", strerror(err));
        return;
    }
    c->state = CONNECTED;
    fprintf(stderr, "* connected to %s:%s\n", c->host, c->port);
}

// The server closed the connection (WHY: how we saw it). Its last line
// says whether it ended the session on purpose, and whether to come back.
static void client_lost(struct client *c, const char *why)
{
    print_safe(c, "", 0, true);  // a sequence cut short, escaped
    size_t lines, bytes;
    unsent(c, &lines, &bytes);
    if (c->quit && bytes == 0)
        client_end(c, EXIT_DONE, NULL);  // said /quit; the server answered and closed
    if (strcmp(c->last, "* idle timeout") == 0 || strcmp(c->last, "* line too long") == 0) {
        char msg[80];
        snprintf(msg, sizeof msg, "the server ended the session (%s); not reconnecting",
                 c->last + 2);
        client_end(c, EXIT_ENDED, msg);
    }
    if (strcmp(c->last, "* bye") == 0)  // a /quit that did not come from stdin (--bot)
        client_end(c, EXIT_DONE, NULL);
    if (c->behind && strcmp(c->last, "* server shutting down") != 0)
        // No farewell: it can say none to a client whose socket is full.
        client_end(c, EXIT_ENDED,
                   "the server closed the connection while we were a full read behind "
                   "(dropped as too slow); not reconnecting");
    client_wait(c, "disconnected",
                strcmp(c->last, "* server shutting down") == 0 ? "the server is shutting down"
                                                               : why);
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
                client_lost(c, strerror(errno));
            return;
        }
        buf_consume(&c->pending, (size_t)n);
        if (c->quit_len > buf_len(&c->pending))  // the /quit line is the queue's end
            c->quit_len = buf_len(&c->pending);
    }
    if (c->stdin_done && !c->fin_sent) {
        c->fin_sent = true;
        if (shutdown(c->fd, SHUT_WR) == -1)
            client_lost(c, strerror(errno));
    }
}

// Follows the lines the server sends: the last whole one (its farewell),
// and the first, whose `* welcome` resets the backoff.
static void track_lines(struct client *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') {
            if (c->line_len < sizeof c->line - 1)
                c->line[c->line_len] = p[i];
            c->line_len++;
            continue;
        }
        size_t len = c->line_len < sizeof c->line - 1 ? c->line_len : sizeof c->line - 1;
        memcpy(c->last, c->line, len);
        c->last[len] = '\0';
        if (c->lines_in++ == 0 && strncmp(c->last, "* welcome ", 10) == 0)
            c->attempt = 0;
        c->line_len = 0;
    }
}

// Reads what the server sent and prints it.
static void client_recv(struct client *c)
{
    char buf[READ_CHUNK];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            c->behind = false;
        else if (errno != EINTR)
            client_lost(c, strerror(errno));
        return;
    }
    if (n == 0) {
        client_lost(c, "the server closed the connection");
        return;
    }
    if (n == READ_CHUNK)
        c->behind = true;
    track_lines(c, buf, (size_t)n);
    print_safe(c, buf, (size_t)n, false);
}

// Reads stdin into the queue (at most to PENDING_MAX). A `/quit` line ends
// the reading: what follows it in the same read is dropped, with a word.
static void client_read_stdin(struct client *c)
{
    size_t room;
    size_t want = PENDING_MAX - buf_len(&c->pending);
    char *at = buf_reserve(&c->pending, want < READ_CHUNK ? want : READ_CHUNK, &room);
    if (at == NULL) {
        log_msg("out of memory");
        client_end(c, EXIT_FAILED, NULL);
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
    if (n == 0) {
        c->stdin_done = true;
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (at[i] != '\n') {
            if (c->in_len < sizeof c->in_head)
                c->in_head[c->in_len] = at[i];
            c->in_len++;
            continue;
        }
        // The server's rule (server.c, session_line): "/quit", or "/quit "
        // with an empty argument; its line decoder drops a '\r' before '\n'.
        size_t raw = c->in_len + 1, len = c->in_len;
        if (len > 0 && len <= sizeof c->in_head && c->in_head[len - 1] == '\r')
            len--;
        c->in_len = 0;
        if ((len == 5 || len == 6) && memcmp(c->in_head, "/quit ", len) == 0) {
            c->stdin_done = c->quit = true;
            c->quit_len = raw;
            buf_commit(&c->pending, (size_t)i + 1);
            if (i + 1 < n)
                log_msg("/quit: %zd bytes typed after it are not sent", n - i - 1);
            return;
        }
    }
    buf_commit(&c->pending, (size_t)n);
}

static void on_signal(int sig)
{
    int saved = errno;
    got_signal = sig;
    if (write(signal_pipe[1], "", 1) == -1) {
        // Full: a byte is there already, poll will wake up anyway.
    }
    errno = saved;
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    struct client c = {.fd = -1};
    set_prog_name("client");
    parse_client_options(argc, argv, &c);
    signal(SIGPIPE, SIG_IGN);  // a send to a closed socket fails with EPIPE instead
    // A self-pipe: a signal that lands just before poll still wakes it. The
    // handler has no SA_RESTART (set_handler), so a write to a stalled
    // stdout returns EINTR too: Ctrl-C is never stuck behind a full pipe.
    if (pipe2(signal_pipe, O_NONBLOCK | O_CLOEXEC) == -1) {
        log_msg("pipe: %s", strerror(errno));
        return EXIT_FAILED;
    }
    set_handler(SIGINT, on_signal);
    set_handler(SIGTERM, on_signal);
    c.rng = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    c.bot_at = now_ms() + c.every_ms;
    client_connect(&c);

    for (;;) {
        if (got_signal)
            client_end(&c, 128 + got_signal,
                       got_signal == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)");
        // stdin is over (or said /quit) and no connection is coming: the end
        // (client_wait says what was left).
        if (c.stdin_done && c.state == WAITING)
            client_give_up(&c);
        struct pollfd p[3] = {{.fd = -1}, {.fd = -1},
                              {.fd = signal_pipe[0], .events = POLLIN}};
        if (!c.stdin_done && buf_len(&c.pending) < PENDING_MAX)
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
        int n = poll(p, 3, timeout);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            log_msg("poll: %s", strerror(errno));
            client_end(&c, EXIT_FAILED, NULL);
        }
        if (got_signal)
            continue;  // ends at the top
        long long now = now_ms();
        if (c.bot != NULL && now >= c.bot_at) {
            c.bot_at = now + c.every_ms;
            // While connected only: a demo load, not something to catch up on.
            if (c.state == CONNECTED && !c.stdin_done &&
                buf_len(&c.pending) + strlen(c.bot) + 1 <= PENDING_MAX &&
                (buf_append(&c.pending, c.bot, strlen(c.bot)) == -1 ||
                 buf_append(&c.pending, "\n", 1) == -1)) {
                log_msg("out of memory");
                client_end(&c, EXIT_FAILED, NULL);
            }
        }
        if (c.state == WAITING && now >= c.retry_at)
            client_connect(&c);
        if (p[0].revents)
            client_read_stdin(&c);
        if (p[1].fd != -1 && p[1].fd == c.fd) {
            if (c.state == CONNECTING && p[1].revents)
                client_connected(&c);
            else if (c.state == CONNECTED && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
                client_recv(&c);
            else if (c.state == CONNECTED)
                c.behind = false;  // poll found nothing to read: we have caught up
        }
        if (c.state == CONNECTED)
            client_send(&c);
    }
}
