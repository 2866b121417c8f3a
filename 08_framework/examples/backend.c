// backend.c: a slow line server for the gateway (examples/gateway.c) to fan out to: each request
// line is answered after --delay milliseconds, by a library timer per request (cancelled when
// the client leaves), in the order the requests came. --name decides the answer, always the
// same for the same request, so a test knows every byte the gateway should build from it.
//
//   protocol: one request per line ("\n", a "\r" before it is ignored), one reply line each:
//     followers  "ID" -> "OK <(ID * 37) % 1000>"
//     posts      "ID" -> "OK <(ID * 11) % 100>"
//     bio        "ID" -> "OK I am user ID \o/ \"hi\"" (quotes and a backslash: JSON must escape
//                        them); "ERR no bio for user ID" when ID is a multiple of 10
//     score      "F P" -> "OK <F + 2 * P>"
//   ID, F, P: decimal, 1 to 18 digits. Anything else: "ERR bad request".
// Requests on one connection are answered in order (the gateway matches replies to requests
// that way): all have the same delay, and an answer whose timer fires is held until the ones
// before it have gone.

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"
#include "rx.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: backend [-H HOST] [-p PORT] [--name NAME] [--delay MS] [-t N] [--idle-timeout S]\n"
            "               [--max-output BYTES] [--soft-output BYTES] [--soft-seconds S] [--drain-ms MS]\n"
            "A line server that answers each request line after MS milliseconds (default port\n"
            "9100), for the gateway to fan out to. NAME says what it answers, from the line:\n"
            "  followers  ID   -> OK (ID*37)%%1000\n"
            "  posts      ID   -> OK (ID*11)%%100\n"
            "  bio        ID   -> OK I am user ID \\o/ \"hi\"   (ERR no bio for user ID when ID%%10 == 0)\n"
            "  score      F P  -> OK F+2*P\n"
            "Anything else is answered \"ERR bad request\"; a line over 1024 bytes drops the client.\n"
            "Logs to stderr; SIGINT or SIGTERM stops it and logs its counters.\n"
            "      --name NAME          followers, posts, bio or score (default followers)\n"
            "      --delay MS           answer each request after MS ms (0 to 60000; default 100)\n" SERVER_OPTS_HELP);
}

enum backend_kind { B_FOLLOWERS, B_POSTS, B_BIO, B_SCORE };
static const char *const kind_names[] = {"followers", "posts", "bio", "score"};

#define LINE_MAX_BYTES 1024
#define REPLY_MAX 128

static struct {
    rx_server *srv;
    enum backend_kind kind;
    uint64_t delay_ms;
    uint64_t connections, requests, answered, cancelled, errors;
} g;

// One request waiting for its timer. Kept in the session's FIFO until it has been sent.
struct pending {
    struct pending *next;
    struct client *c;
    rx_timer *timer;  // NULL once it fired
    bool ready;
    char reply[REPLY_MAX];
    size_t len;
};

struct client {
    struct pending *head, *tail;
    rx_session *s;
};

// A decimal number of 1 to 18 digits, the whole of [P, P + N).
static bool parse_num(const char *p, size_t n, uint64_t *v)
{
    if (n == 0 || n > 18)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(p[i] - '0');
    }
    *v = x;
    return true;
}

// The reply to the request line [P, P + N) (its "\r" already cut), into OUT.
static size_t answer(const char *p, size_t n, char *out)
{
    uint64_t id, f, pp;
    int len;
    switch (g.kind) {
    case B_FOLLOWERS:
    case B_POSTS:
    case B_BIO:
        if (!parse_num(p, n, &id))
            break;
        if (g.kind == B_FOLLOWERS)
            len = snprintf(out, REPLY_MAX, "OK %" PRIu64, id * 37 % 1000);
        else if (g.kind == B_POSTS)
            len = snprintf(out, REPLY_MAX, "OK %" PRIu64, id * 11 % 100);
        else if (id % 10 == 0)
            len = snprintf(out, REPLY_MAX, "ERR no bio for user %" PRIu64, id);
        else
            len = snprintf(out, REPLY_MAX, "OK I am user %" PRIu64 " \\o/ \"hi\"", id);
        return (size_t)len;
    case B_SCORE: {
        const char *sp = memchr(p, ' ', n);
        if (!sp || !parse_num(p, (size_t)(sp - p), &f) ||
            !parse_num(sp + 1, n - (size_t)(sp - p) - 1, &pp))
            break;
        return (size_t)snprintf(out, REPLY_MAX, "OK %" PRIu64, f + 2 * pp);
    }
    }
    return (size_t)snprintf(out, REPLY_MAX, "ERR bad request");
}

// Sends the ready answers at the head of C's FIFO, in order; stops at the first not ready.
static void flush_ready(struct client *c)
{
    while (c->head && c->head->ready) {
        struct pending *p = c->head;
        c->head = p->next;
        if (!c->head)
            c->tail = NULL;
        if (rx_send(c->s, p->reply, p->len) == 0)
            g.answered++;
        free(p);
    }
}

static void on_due(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop, (void)t;
    struct pending *p = arg;
    p->timer = NULL;  // a one-shot timer is freed after this callback (rule 5)
    p->ready = true;
    flush_ready(p->c);
}

static void *on_create(void *arg, rx_session *s)
{
    (void)arg;
    struct client *c = calloc(1, sizeof *c);
    if (c)
        c->s = s;
    return c;
}

static void on_opened(rx_session *s)
{
    g.connections++;
    if (!rx_session_data(s)) {
        rx_log(RX_LOG_ERROR, "session %" PRIu64 ": out of memory", rx_session_id(s));
        rx_session_close(s, false);
    }
}

static void on_message(rx_session *s, const rx_frame *f)
{
    struct client *c = rx_session_data(s);
    if (!c || rx_session_closing(s))
        return;
    size_t n = f->len;
    if (n > 0 && f->data[n - 1] == '\r')
        n--;
    g.requests++;
    struct pending *p = calloc(1, sizeof *p);
    if (!p) {
        rx_log(RX_LOG_ERROR, "session %" PRIu64 ": out of memory: closing", rx_session_id(s));
        rx_session_close(s, false);
        return;
    }
    p->c = c;
    p->len = answer(f->data, n, p->reply);
    if (memcmp(p->reply, "ERR", 3) == 0)
        g.errors++;
    p->timer = rx_timer_start(rx_server_loop(g.srv), g.delay_ms, 0, on_due, p);
    if (!p->timer) {
        free(p);
        rx_log(RX_LOG_ERROR, "session %" PRIu64 ": out of memory: closing", rx_session_id(s));
        rx_session_close(s, false);
        return;
    }
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
}

// The client left: its unanswered requests are dropped, their timers stopped (never fired).
static void on_closed(rx_session *s, enum rx_close_reason why)
{
    struct client *c = rx_session_data(s);
    if (!c)
        return;
    uint64_t dropped = 0;
    while (c->head) {
        struct pending *p = c->head;
        c->head = p->next;
        if (p->timer)
            rx_timer_stop(rx_server_loop(g.srv), p->timer);
        dropped++;
        free(p);
    }
    g.cancelled += dropped;
    if (dropped)
        rx_log(RX_LOG_INFO, "session %" PRIu64 " closed (%s): %" PRIu64 " requests cancelled",
               rx_session_id(s), rx_close_reason_name(why), dropped);
    free(c);
}

// backend's own options, taken out of ARGV before the shared parser sees the rest.
static const struct opt_own own_options[] = {{"--name", 1}, {"--delay", 1}};

static void take_own(size_t k, const char *v)
{
    if (k == 1) {
        g.delay_ms = opt_uint(v, 0, 60000, "bad --delay (want 0 to 60000 ms)");
        return;
    }
    size_t n;
    for (n = 0; n < sizeof kind_names / sizeof kind_names[0]; n++)
        if (strcmp(v, kind_names[n]) == 0)
            break;
    if (n == sizeof kind_names / sizeof kind_names[0])
        opt_fail("bad --name (want followers, posts, bio or score)", v);
    g.kind = (enum backend_kind)n;
}

int main(int argc, char **argv)
{
    struct server_opts o;
    g.delay_ms = 100;
    opt_init("backend", usage);
    argc = opt_take_own(argc, argv, own_options, 2, take_own);
    server_opts_parse(argc, argv, 9100, 0, &o);

    rx_thread_set_name("main");
    rx_server *srv = rx_server_new(&o.cfg);
    if (!srv)
        return 1;
    g.srv = srv;
    rx_codec line = rx_codec_line(LINE_MAX_BYTES);
    rx_factory factory = {.create = on_create, .opened = on_opened, .message = on_message,
                          .closed = on_closed};
    int port = rx_listen(srv, o.host, o.port, &line, &factory);
    if (port < 0) {
        rx_server_free(srv);
        return 1;
    }
    rx_log(RX_LOG_INFO, "backend %s: answering after %" PRIu64 " ms", kind_names[g.kind], g.delay_ms);
    print_listening(o.host, port);
    int rc = rx_server_run(srv);
    rx_log(RX_LOG_INFO,
           "backend %s: connections %" PRIu64 ", requests %" PRIu64 ", answered %" PRIu64
           ", cancelled %" PRIu64 ", errors %" PRIu64,
           kind_names[g.kind], g.connections, g.requests, g.answered, g.cancelled, g.errors);
    rx_server_free(srv);
    return rc == 0 ? 0 : 1;
}
