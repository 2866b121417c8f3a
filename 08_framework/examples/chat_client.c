// chat_client.c: stage 07's chat client on the rx library: lines typed on stdin go to the
// server, what the server sends is printed on stdout safely (control bytes and bytes that are
// not UTF-8 as \xHH), and when the server goes away the library's connector reconnects with
// backoff (a random wait in [D/2, D], D doubling from --retry to --retry-max) while typed lines
// wait in a queue of at most 1 MiB. --bot TEXT sends TEXT every --every seconds (default 2).
//
// Threads: the library's main loop runs every callback; stdin is read by one thread of our
// own (the library has no stdin watch), which hands each line to the main loop with
// rx_loop_post and waits while 1 MiB of typed lines are not sent yet: stdin is then not read,
// so nothing is lost, the typist or the pipe waits.

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "options.h"
#include "rx.h"

// Typed lines held while the server cannot take them, at most (07: PENDING_MAX).
#define PENDING_MAX (1u << 20)
// The longest line the server sends, with room to spare (its lines are at most ~4.2 KiB).
#define LINE_MAX_IN (64 * 1024)

struct line {
    struct line *next;
    size_t len;
    char data[];  // without its "\n"
};

static struct {
    rx_server *srv;
    rx_loop *loop;
    rx_connector *conn;
    rx_connect_opts opts;
    const char *host;
    int port;
    const char *bot;       // --bot TEXT, or NULL
    uint64_t every_ms;     // --every
    rx_timer *bot_timer;   // while connected with --bot
    struct line *head, *tail;  // typed, not sent yet (main thread)
    size_t lines, bytes;       // in that queue
    bool stdin_eof;            // main thread: the reader said EOF
    bool quitting;             // /quit sent: what follows is not sent
    int farewell;              // the exit status a farewell notice asked for, or -1
    bool stopping;             // we asked the loop to stop (else a signal did)
    int status;                // the exit status
    // Shared with the reader thread, under mu.
    pthread_mutex_t mu;
    pthread_cond_t room;   // signalled when bytes of the queue are sent
    size_t inflight;       // bytes read from stdin and not sent yet
    bool closed;           // the loop is gone: the reader posts nothing more
} cl = {.mu = PTHREAD_MUTEX_INITIALIZER, .room = PTHREAD_COND_INITIALIZER, .farewell = -1};

// ---------------------------------------------------------------- printing safely

// The length of the valid UTF-8 sequence at P (N bytes left), or 0 if it is not one. C1
// controls (C2 80 to C2 9F) count as invalid here: they are escaped too.
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    unsigned cp = c & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
        return 0;
    return len;
}

// Prints one line the server sent, then "\n": C0 bytes but TAB, DEL, the C1 controls and
// bytes that are not UTF-8 as \xHH, one per byte; valid UTF-8 unchanged. Returns 0, or -1
// when stdout failed.
static int print_safe(const char *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        if (c == '\t' || (c >= 0x20 && c < 0x7f)) {
            putchar((int)c);
            i++;
            continue;
        }
        size_t len = c >= 0x80 ? utf8_len(p + i, n - i) : 0;
        if (len > 0) {
            fwrite(p + i, 1, len, stdout);
            i += len;
        } else {
            printf("\\x%02x", c);
            i++;
        }
    }
    putchar('\n');
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : -1;
}

// ---------------------------------------------------------------- stopping

static void stop(int status)
{
    if (cl.stopping)
        return;
    cl.stopping = true;
    cl.status = status;
    rx_server_stop(cl.srv);
}

// What was typed and never sent: said on stderr when it ends without sending it.
static void say_unsent(const char *why)
{
    if (cl.lines > 0)
        fprintf(stderr, "chat_client: %s; not sent: %zu line%s (%zu bytes)\n", why, cl.lines,
                cl.lines == 1 ? "" : "s", cl.bytes);
}

// Called once when the loop begins to stop: by us, or by SIGINT/SIGTERM (status 130).
static void on_stop(rx_server *srv, void *arg)
{
    (void)srv;
    (void)arg;
    if (!cl.stopping) {
        cl.stopping = true;
        cl.status = 130;
        say_unsent("interrupted");
    }
}

// ---------------------------------------------------------------- sending

static void line_pop(void)
{
    struct line *l = cl.head;
    cl.head = l->next;
    if (cl.head == NULL)
        cl.tail = NULL;
    cl.lines--;
    cl.bytes -= l->len + 1;
    pthread_mutex_lock(&cl.mu);
    cl.inflight -= l->len + 1;
    pthread_cond_signal(&cl.room);
    pthread_mutex_unlock(&cl.mu);
    free(l);
}

// Sends the queued lines while connected, in order. After /quit nothing more is sent.
static void pump(void)
{
    rx_session *s = rx_connector_session(cl.conn);
    while (s != NULL && cl.head != NULL && !cl.quitting) {
        struct line *l = cl.head;
        if (rx_send(s, l->data, l->len) != 0)
            return;  // closing: the rest waits for the next connection
        if (l->len == 5 && memcmp(l->data, "/quit", 5) == 0)
            cl.quitting = true;  // the server answers `* bye` and closes
        line_pop();
    }
    if (s != NULL && cl.stdin_eof && cl.head == NULL && !cl.quitting)
        stop(0);  // everything typed went out: the shutdown flushes it, then closes
}

// Main thread: a line the reader read (NULL: stdin ended).
static void take_line(void *arg)
{
    struct line *l = arg;
    if (l == NULL) {
        cl.stdin_eof = true;
        if (rx_connector_session(cl.conn) == NULL) {
            say_unsent("end of stdin with no server");
            stop(cl.lines > 0 ? 4 : 0);
            return;
        }
        pump();
        return;
    }
    if (cl.quitting || cl.stopping) {  // typed after /quit: not sent
        pthread_mutex_lock(&cl.mu);
        cl.inflight -= l->len + 1;
        pthread_cond_signal(&cl.room);
        pthread_mutex_unlock(&cl.mu);
        free(l);
        return;
    }
    bool quit = l->len == 5 && memcmp(l->data, "/quit", 5) == 0;
    if (quit && rx_connector_session(cl.conn) == NULL) {
        pthread_mutex_lock(&cl.mu);
        cl.inflight -= l->len + 1;
        pthread_mutex_unlock(&cl.mu);
        free(l);
        say_unsent("/quit with no server");
        stop(cl.lines > 0 ? 4 : 0);
        return;
    }
    l->next = NULL;
    if (cl.tail != NULL)
        cl.tail->next = l;
    else
        cl.head = l;
    cl.tail = l;
    cl.lines++;
    cl.bytes += l->len + 1;
    pump();
}

// Hands one line (or NULL: the end of stdin) to the main loop, waiting while PENDING_MAX bytes
// are not sent yet. Returns 0, or -1 once the loop is gone (L is freed).
static int post_line(struct line *l)
{
    pthread_mutex_lock(&cl.mu);
    while (l != NULL && cl.inflight >= PENDING_MAX && !cl.closed)
        pthread_cond_wait(&cl.room, &cl.mu);
    bool gone = cl.closed;
    if (!gone) {
        if (l != NULL)
            cl.inflight += l->len + 1;
        if (rx_loop_post(cl.loop, take_line, l) != 0)
            gone = true;
    }
    pthread_mutex_unlock(&cl.mu);
    if (gone)
        free(l);
    return gone ? -1 : 0;
}

static struct line *line_new(const char *p, size_t len)
{
    struct line *l = malloc(sizeof *l + len);
    if (l == NULL) {
        fprintf(stderr, "chat_client: out of memory for a typed line: dropped\n");
        return NULL;
    }
    l->len = len;
    memcpy(l->data, p, len);
    return l;
}

// The reader thread: stdin cut into lines with read(2) (not stdio: its lock would be held
// by this thread, blocked in a read, when the main thread exits), each posted to the main
// loop. A line longer than the buffer is sent in pieces of LINE_MAX_IN bytes.
static void *reader(void *arg)
{
    (void)arg;
    rx_thread_set_name("stdin");
    static char buf[LINE_MAX_IN];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(0, buf + have, sizeof buf - have);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == -1)
                fprintf(stderr, "chat_client: stdin: %s\n", strerror(errno));
            if (have > 0) {  // a last line without its newline is still a line
                struct line *l = line_new(buf, have);
                if (l != NULL && post_line(l) == -1)
                    return NULL;
            }
            (void)post_line(NULL);
            return NULL;
        }
        have += (size_t)n;
        size_t start = 0;
        for (char *nl; (nl = memchr(buf + start, '\n', have - start)) != NULL;) {
            struct line *l = line_new(buf + start, (size_t)(nl - (buf + start)));
            start = (size_t)(nl - buf) + 1;
            if (l != NULL && post_line(l) == -1)
                return NULL;
        }
        if (start == 0 && have == sizeof buf) {  // no newline in a full buffer: a piece
            struct line *l = line_new(buf, have);
            if (l != NULL && post_line(l) == -1)
                return NULL;
            start = have;
        }
        memmove(buf, buf + start, have - start);
        have -= start;
    }
}

// ---------------------------------------------------------------- the connection

static void bot_tick(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    (void)arg;
    rx_session *s = rx_connector_session(cl.conn);
    if (s != NULL && !cl.quitting)
        (void)rx_send(s, cl.bot, strlen(cl.bot));
}

static void on_opened(rx_session *s)
{
    fprintf(stderr, "* connected to %s\n", rx_session_peer(s));
    if (cl.bot != NULL) {
        cl.bot_timer = rx_timer_start(cl.loop, cl.every_ms, cl.every_ms, bot_tick, NULL);
        if (cl.bot_timer == NULL)
            fprintf(stderr, "chat_client: out of memory for the bot's timer\n");
    }
    pump();
}

// A farewell ends the client when the connection closes: `* bye` (status 0), or a reason a
// new session would meet again, `* idle timeout`, `* line too long` (status 3, no rejoin).
static void on_message(rx_session *s, const rx_frame *f)
{
    (void)s;
    if (print_safe(f->data, f->len) == -1) {
        fprintf(stderr, "chat_client: stdout: write failed\n");
        stop(1);
        return;
    }
#define IS(t) (f->len == sizeof(t) - 1 && memcmp(f->data, t, f->len) == 0)
    if (IS("* bye"))
        cl.farewell = 0;
    else if (IS("* idle timeout") || IS("* line too long"))
        cl.farewell = 3;
#undef IS
}

static void on_closed(rx_session *s, enum rx_close_reason why)
{
    (void)s;
    if (cl.bot_timer != NULL) {
        rx_timer_stop(cl.loop, cl.bot_timer);
        cl.bot_timer = NULL;
    }
    if (cl.stopping)
        return;
    if (cl.farewell >= 0) {
        if (cl.farewell == 3)
            say_unsent("the server ended the session");
        stop(cl.farewell);
        return;
    }
    if (cl.stdin_eof && cl.head == NULL) {
        stop(0);
        return;
    }
    fprintf(stderr, "* disconnected (%s); reconnecting\n", rx_close_reason_name(why));
}

static void on_failed(rx_connector *c, int err, unsigned attempt, void *arg)
{
    (void)c;
    (void)arg;
    fprintf(stderr, "* cannot connect (%s); attempt %u\n", strerror(err), attempt);
    if (cl.stdin_eof) {  // nothing more will be typed: no point in waiting for a server
        say_unsent("end of stdin with no server");
        stop(cl.lines > 0 ? 4 : 0);
    }
}

// ---------------------------------------------------------------- main

static void usage(FILE *to)
{
    fprintf(to,
            "usage: chat_client [-H HOST] [-p PORT] [--retry S] [--retry-max S]\n"
            "                   [--bot TEXT [--every S]]\n"
            "Stage 07's chat client on the rx library. Reads lines on stdin and sends them;\n"
            "prints what the server sends on stdout: bytes 0x00-0x1f (but tab), 0x7f, the\n"
            "UTF-8 C1 controls (c2 80 to c2 9f) and bytes that are not UTF-8 as \\xHH.\n"
            "When the server goes it reconnects, waiting a random time in [D/2, D], D doubling\n"
            "from --retry to --retry-max; lines typed meanwhile wait (up to 1 MiB, then stdin\n"
            "is not read) and are sent once it is back.\n"
            "  -H, --host HOST       server address (default 127.0.0.1)\n"
            "  -p, --port PORT       server port (default 7007)\n"
            "      --retry S         first wait before reconnecting (default 0.1)\n"
            "      --retry-max S     longest wait (default 5)\n"
            "      --bot TEXT        send the line TEXT every --every seconds while connected\n"
            "      --every S         the bot's period (default 2)\n"
            "  -h, --help            print this help and exit\n"
            "Exit status: 0 end of stdin (all sent) or /quit answered by `* bye`; 3 the server\n"
            "ended the session for a reason a new one would meet (`* idle timeout`, `* line too\n"
            "long`); 4 stdin ended or /quit with lines no server took (stderr says how many);\n"
            "130 SIGINT or SIGTERM; 1 an error; 2 a bad option.\n");
}

enum { OPT_RETRY = 300, OPT_RETRY_MAX, OPT_BOT, OPT_EVERY };

static void parse(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},     {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},           {"retry", required_argument, NULL, OPT_RETRY},
        {"retry-max", required_argument, NULL, OPT_RETRY_MAX},
        {"bot", required_argument, NULL, OPT_BOT},  {"every", required_argument, NULL, OPT_EVERY},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":H:p:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H': cl.host = optarg; break;
        case 'p': cl.port = (int)opt_uint(optarg, 1, 65535, "bad port (want 1 to 65535)"); break;
        case OPT_RETRY: cl.opts.retry_ms = opt_seconds_ms(optarg, 0, "bad --retry (want 0.001 to 31536000)"); break;
        case OPT_RETRY_MAX: cl.opts.retry_max_ms = opt_seconds_ms(optarg, 0, "bad --retry-max (want 0.001 to 31536000)"); break;
        case OPT_BOT:
            if (strchr(optarg, '\n') || optarg[0] == '\0')
                opt_fail("bad --bot (want one line of text)", optarg);
            cl.bot = optarg;
            break;
        case OPT_EVERY: cl.every_ms = opt_seconds_ms(optarg, 0, "bad --every (want 0.001 to 31536000)"); break;
        default: cli_opt_other(ch, argv);  // -h, a missing value, an unknown option
        }
    }
    cli_opt_end(argc, argv);
    cli_retry_check(&cl.opts, "--retry", "--retry-max");
}

int main(int argc, char **argv)
{
    cl.host = "127.0.0.1";
    cl.port = 7007;
    cl.every_ms = 2000;
    cl.opts = rx_connect_opts_default();
    cl.opts.failed = on_failed;
    opt_init("chat_client", usage);
    parse(argc, argv);

    rx_thread_set_name("main");
    rx_log_set_level(RX_LOG_WARN);  // stderr: our own notices, not the connector's attempts
    rx_config cfg = rx_config_default();
    cl.srv = rx_server_new(&cfg);  // blocks SIGINT and SIGTERM: the reader inherits the mask
    if (!cl.srv)
        return 1;
    cl.loop = rx_server_loop(cl.srv);
    rx_server_on_stop(cl.srv, on_stop, NULL);
    rx_codec line = rx_codec_line(LINE_MAX_IN);
    rx_factory f = {.opened = on_opened, .message = on_message, .closed = on_closed};
    cl.conn = cli_connect(cl.srv, cl.host, cl.port, &line, &f, &cl.opts);
    if (!cl.conn) {
        rx_server_free(cl.srv);
        return 1;
    }
    pthread_t t;
    int err = pthread_create(&t, NULL, reader, NULL);
    if (err != 0) {
        fprintf(stderr, "chat_client: pthread_create: %s\n", strerror(err));
        rx_connector_free(cl.conn);
        rx_server_free(cl.srv);
        return 1;
    }
    int rc = rx_server_run(cl.srv);
    // The reader may sit in a read of stdin for ever: it is detached, told the loop is gone,
    // and ends with the process.
    pthread_mutex_lock(&cl.mu);
    cl.closed = true;
    pthread_cond_signal(&cl.room);
    pthread_mutex_unlock(&cl.mu);
    pthread_detach(t);
    rx_connector_free(cl.conn);
    while (cl.head != NULL)
        line_pop();
    rx_server_free(cl.srv);
    return rc == 0 ? cl.status : 1;
}
