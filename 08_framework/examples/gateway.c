// gateway.c: the asynchronous multi-step request on the rx library. The gateway speaks HTTP to
// its clients; each request runs a sequence of *states*, each state fans out *actions* in
// parallel to backends (outbound sessions made by rx_connect, kept open and reused, replies
// matched to requests in order), each action with its own timeout (a library timer); the next
// state starts when every action of the current one is done or timed out. One context (struct
// req) per request travels through all the states and is freed exactly once: when its answer
// has been sent, or when its client leaves mid-request. A reply that comes after its action
// timed out, or after its request was freed, finds a tombstone in the backend's queue and is
// dropped (counted as late): nothing points from a backend to a freed context.
//
//   GET /profile?user=ID   state 1: followers, posts, bio at once; state 2: score from the
//                          followers and posts answers. 200 with JSON; a failed action gives
//                          its field null and an entry in "errors".
//   POST /kv               body "key=K&value=V": SET K V, then GET K, against redis-server
//                          (RESP over an outbound session, lib/codec_resp_reply.c). 200 with
//                          {"key":K,"value":V}; Redis unreachable or too slow: 503.
// --serial runs the actions of a state one after another instead (the sequential cost).

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"
#include "rx.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: gateway [-H HOST] [-p PORT] [--followers PORT] [--posts PORT] [--bio PORT]\n"
            "               [--score PORT] [--redis PORT] [--timeout MS] [--serial] [-t N]\n"
            "               [--idle-timeout S] [--max-output BYTES] [--drain-ms MS]\n"
            "An HTTP gateway (default port 8090) that answers each request by asking backends\n"
            "on 127.0.0.1 (examples/backend, redis-server), in states of parallel actions:\n"
            "  GET /profile?user=ID  followers, posts and bio at once, then score: JSON\n"
            "  POST /kv              body key=K&value=V: SET then GET on redis-server: JSON\n"
            "Logs to stderr; SIGINT or SIGTERM stops it and logs its counters.\n"
            "      --followers PORT, --posts PORT, --bio PORT, --score PORT\n"
            "                        the backends (examples/backend --name NAME); one not given\n"
            "                        makes its action fail (\"no backend\")\n"
            "      --redis PORT         redis-server for /kv\n"
            "      --timeout MS         each action's timeout (1 to 600000; default 1000)\n"
            "      --serial             run a state's actions one after another, not at once\n"
            SERVER_OPTS_HELP);
}

// ---------------------------------------------------------------------------- backends

enum { BK_FOLLOWERS, BK_POSTS, BK_BIO, BK_SCORE, BK_REDIS, BK_COUNT };
static const char *const bk_names[BK_COUNT] = {"followers", "posts", "bio", "score", "redis"};

struct action;

// One request sent to a backend, waiting for its reply: the backend's queue holds them in the
// order they were sent, and a reply belongs to the head. A = NULL: a tombstone (the action
// timed out or its request is gone); its reply, when it comes, is dropped.
struct pending {
    struct pending *next;
    struct action *a;
};

struct backend {
    int id;
    int port;  // 0: not configured
    rx_connector *conn;
    struct pending *head, *tail;
};

#define MAX_QUEUED 8        // requests one HTTP client may have waiting before it is paused
#define MAX_KEY 256
#define MAX_VALUE 4096
#define MAX_ERROR 96

static struct {
    rx_server *srv;
    rx_loop *loop;
    uint64_t timeout_ms;
    bool serial;
    struct backend bk[BK_COUNT];
    rx_resp_reply cmd;  // the action message being built (reused)
    // counters, for the stop line
    uint64_t requests, answered, created, freed, actions, timeouts, late, unavailable,
        client_gone;
} g;

// --------------------------------------------------------------------- contexts, actions

struct req;

struct action {
    struct req *r;
    int backend;            // BK_*
    struct pending *node;   // while its reply is awaited
    rx_timer *timer;        // its timeout, while it runs
    bool done, failed;
    int status;             // failed: the HTTP status it means for /kv (503, or 502)
    bool null;              // /kv's GET: the key has no value
    char *reply;            // the backend's answer (a line without "OK ", or a RESP reply)
    size_t reply_len;
    char error[MAX_ERROR];  // failed: why
};

// R_ANSWER: an answer known at once (an error), queued like the others so that a client
// that pipelines gets its answers in the order of its requests.
enum req_kind { R_PROFILE, R_KV, R_ANSWER };

struct client;

// The context of one HTTP request: from the moment it is read until its answer is sent (or
// its client has gone). Its actions live in it (acts[]), so they go with it.
struct req {
    struct client *c;
    struct req *next;  // in the client's queue
    enum req_kind kind;
    int state;         // 0 before the first
    size_t first, end, next_act, pending;  // the current state's actions: acts[first, end)
    struct action acts[4];
    uint64_t user;
    char key[MAX_KEY], value[MAX_VALUE];
    size_t key_len, value_len;
    bool close;        // Connection: close after the answer
    int status;        // R_ANSWER: the status and body to send
    char body[160];
    const char *allow;  // a 405's Allow value
};

// An HTTP client: its requests, answered in the order they came (the head runs).
struct client {
    rx_session *s;
    struct req *head, *tail;
    size_t queued;
    bool paused;
    bool eof;  // the client sent EOF (nc -N): it asks nothing more; close after the last answer
};

static void step(struct req *r);

static void action_stop(struct action *a)
{
    if (a->timer) {
        rx_timer_stop(g.loop, a->timer);
        a->timer = NULL;
    }
    if (a->node) {
        a->node->a = NULL;  // a tombstone: the backend's late reply will find nothing
        a->node = NULL;
    }
}

// Frees R, once: every action's timer stopped, every awaited reply tombstoned.
static void req_free(struct req *r)
{
    for (size_t i = 0; i < sizeof r->acts / sizeof r->acts[0]; i++) {
        action_stop(&r->acts[i]);
        free(r->acts[i].reply);
    }
    g.freed++;
    free(r);
}

// A's outcome is known (reply, error, timeout): the state moves on once all are.
static void action_finish(struct action *a)
{
    action_stop(a);
    a->done = true;
    struct req *r = a->r;
    if (--r->pending == 0)
        step(r);  // may free R: nothing after this
}

static void action_fail(struct action *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void action_fail(struct action *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->error, sizeof a->error, fmt, ap);
    va_end(ap);
    a->failed = true;
    a->status = 503;  // unreachable, gone or too slow; a reply that is an error says 502
}

static void on_action_timeout(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop, (void)t;
    struct action *a = arg;
    a->timer = NULL;  // one-shot: freed after this callback (rule 5)
    g.timeouts++;
    action_fail(a, "timeout after %" PRIu64 " ms", g.timeout_ms);
    action_finish(a);
}

// Sends A's request to its backend. Returns 0 when it is on its way (its reply or its timeout
// will finish it), or -1 when it failed at once (A->error says why; A is done).
static int action_start(struct action *a, const char *msg, size_t len)
{
    struct backend *b = &g.bk[a->backend];
    g.actions++;
    rx_session *s = b->conn ? rx_connector_session(b->conn) : NULL;
    if (!b->conn) {
        action_fail(a, "no backend");
    } else if (!s || rx_session_closing(s)) {
        g.unavailable++;
        action_fail(a, "unavailable");
    } else {
        struct pending *p = calloc(1, sizeof *p);
        a->timer = p ? rx_timer_start(g.loop, g.timeout_ms, 0, on_action_timeout, a) : NULL;
        int sent = -1;
        // The line codec adds the "\n"; the RESP reply codec frames nothing (MSG is a
        // whole RESP command already).
        if (a->timer)
            sent = rx_send(s, msg, len);
        if (sent == 0) {
            p->a = a;
            a->node = p;
            if (b->tail)
                b->tail->next = p;
            else
                b->head = p;
            b->tail = p;
            return 0;
        }
        free(p);
        if (a->timer) {
            rx_timer_stop(g.loop, a->timer);
            a->timer = NULL;
        }
        action_fail(a, "send failed");
    }
    a->done = true;
    return -1;
}

// ------------------------------------------------------------------------ the states

// A number of 1 to 18 digits, the whole of [P, P + N).
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

// The request line or RESP command of action I of R: in *MSG, *LEN (valid until the next
// call). Returns -1 when out of memory.
static int action_message(struct req *r, size_t i, const char **msg, size_t *len)
{
    static char line[64];
    rx_resp_reply *m = &g.cmd;
    m->len = 0;
    if (r->kind == R_KV) {
        // A RESP command is an array of bulk strings: what the reply builder makes.
        rx_resp_array(m, i == 0 ? 3 : 2);
        rx_resp_bulk(m, i == 0 ? "SET" : "GET", 3);
        rx_resp_bulk(m, r->key, r->key_len);
        if (i == 0)
            rx_resp_bulk(m, r->value, r->value_len);
        *msg = m->data, *len = m->len;
        if (m->failed) {
            m->failed = false;
            return -1;
        }
        return 0;
    }
    int n;
    if (i < 3)
        n = snprintf(line, sizeof line, "%" PRIu64, r->user);
    else  // score: from the followers and posts answers (numbers, checked when they came)
        n = snprintf(line, sizeof line, "%.*s %.*s", (int)r->acts[0].reply_len, r->acts[0].reply,
                     (int)r->acts[1].reply_len, r->acts[1].reply);
    *msg = line, *len = (size_t)n;  // 18 digits, or two of them: always fits
    return 0;
}

// Sets up the next state of R: its actions in acts[first, end). Returns false when there is
// none (R is complete).
static bool next_state(struct req *r)
{
    r->state++;
    if (r->kind == R_PROFILE) {
        if (r->state == 1) {
            r->first = 0, r->end = 3;
        } else if (r->state == 2) {
            r->first = 3, r->end = 4;
            struct action *f = &r->acts[0], *p = &r->acts[1];
            if (f->failed || p->failed) {  // score needs both: not asked
                action_fail(&r->acts[3], "needs followers and posts");
                r->acts[3].done = true;
            }
        } else {
            return false;
        }
    } else if (r->kind == R_KV && r->state <= 2 && !(r->state == 2 && r->acts[0].failed)) {
        r->first = (size_t)r->state - 1, r->end = (size_t)r->state;  // SET, then GET
    } else {
        return false;
    }
    r->next_act = r->first;
    return true;
}

// Starts the actions of R's current state from next_act: all of them, or (--serial) until
// one is on its way. Returns true when the state is complete (every action done).
static bool launch(struct req *r)
{
    while (r->next_act < r->end) {
        struct action *a = &r->acts[r->next_act++];
        if (a->done)
            continue;
        const char *msg;
        size_t len;
        if (action_message(r, (size_t)(a - r->acts), &msg, &len) != 0) {
            action_fail(a, "out of memory");
            a->done = true;
            continue;
        }
        if (action_start(a, msg, len) == 0) {
            r->pending++;
            if (g.serial)
                return false;
        }
    }
    return r->pending == 0;
}

static void finish(struct req *r);

// R's current state has no action running: start the rest of it, or the next state, or
// answer. Called at R's start and when its last running action finishes.
static void step(struct req *r)
{
    while (launch(r)) {
        if (!next_state(r)) {
            finish(r);
            return;
        }
    }
}

// ----------------------------------------------------------------------------- answers

struct out {
    char *p;
    size_t len, cap;
    bool failed;
};

static void out_put(struct out *o, const char *s, size_t n)
{
    if (o->failed)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = (o->len + n + 1) * 2;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->failed = true;
            return;
        }
        o->p = p, o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void out_str(struct out *o, const char *s)
{
    out_put(o, s, strlen(s));
}

// S as a JSON string, quotes included: '"' and '\\' escaped, control bytes as \u00XX.
static void out_json(struct out *o, const char *s, size_t n)
{
    out_put(o, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            out_put(o, e, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", ch);
            out_put(o, e, 6);
        } else {
            out_put(o, (const char *)&ch, 1);
        }
    }
    out_put(o, "\"", 1);
}

static void profile_json(struct req *r, struct out *o)
{
    static const char *const fields[] = {"followers", "posts", "bio", "score"};
    char num[32];
    snprintf(num, sizeof num, "{\"user\":%" PRIu64, r->user);
    out_str(o, num);
    for (size_t i = 0; i < 4; i++) {
        struct action *a = &r->acts[i];
        out_str(o, ",\"");
        out_str(o, fields[i]);
        out_str(o, "\":");
        if (a->failed)
            out_str(o, "null");
        else if (i == 2)
            out_json(o, a->reply, a->reply_len);
        else
            out_put(o, a->reply, a->reply_len);
    }
    bool any = false;
    for (size_t i = 0; i < 4; i++) {
        struct action *a = &r->acts[i];
        if (!a->failed)
            continue;
        out_str(o, any ? ",\"" : ",\"errors\":{\"");
        any = true;
        out_str(o, fields[i]);
        out_str(o, "\":");
        out_json(o, a->error, strlen(a->error));
    }
    out_str(o, any ? "}}\n" : "}\n");
}

// /kv's answer: {"key":K,"value":V} after SET and GET, or the first failure's status and
// {"error":"redis: WHY"}. Returns the status.
static int kv_json(struct req *r, struct out *o)
{
    for (size_t i = 0; i < 2; i++) {
        struct action *a = &r->acts[i];
        if (a->failed) {
            out_str(o, "{\"error\":");
            char e[MAX_ERROR + 16];
            snprintf(e, sizeof e, "redis: %s", a->error);
            out_json(o, e, strlen(e));
            out_str(o, "}\n");
            return a->status;
        }
    }
    out_str(o, "{\"key\":");
    out_json(o, r->key, r->key_len);
    out_str(o, ",\"value\":");
    if (r->acts[1].null)
        out_str(o, "null");
    else
        out_json(o, r->acts[1].reply, r->acts[1].reply_len);
    out_str(o, "}\n");
    return 200;
}

static void client_next(struct client *c);

// R is complete: its answer goes out, R is freed, the client's next request starts.
static void finish(struct req *r)
{
    struct client *c = r->c;
    struct out o = {0};
    int status = 200;
    if (r->kind == R_ANSWER) {
        status = r->status;
        out_str(&o, r->body);
    } else if (r->kind == R_KV) {
        status = kv_json(r, &o);
    } else {
        profile_json(r, &o);
    }
    unsigned flags = r->close ? RX_HTTP_CLOSE : 0;
    if (o.failed) {
        status = 500;
        o.len = 0;
        out_str(&o, "{\"error\":\"out of memory\"}\n");
    }
    char headers[96];
    snprintf(headers, sizeof headers, "%s%s%sContent-Type: application/json\r\n",
             r->allow ? "Allow: " : "", r->allow ? r->allow : "", r->allow ? "\r\n" : "");
    if (rx_http_send(c->s, status, headers, o.p, o.failed ? 0 : o.len, flags) >= 0)
        g.answered++;
    free(o.p);
    if (r->close)
        rx_session_close(c->s, true);
    c->head = r->next;
    if (!c->head)
        c->tail = NULL;
    c->queued--;
    req_free(r);
    if (c->eof && !c->head) {  // the last answer it was owed (rx.h, rule 8)
        rx_session_close(c->s, true);
        return;
    }
    client_next(c);
}

// Starts C's next request, if any, and resumes a paused client.
static void client_next(struct client *c)
{
    if (c->paused && c->queued < MAX_QUEUED && !rx_session_closing(c->s)) {
        rx_session_resume(c->s);
        c->paused = false;
    }
    if (c->head && c->head->state == 0 && !rx_session_closing(c->s)) {
        struct req *r = c->head;
        next_state(r);
        step(r);
    }
}

// ------------------------------------------------------------------ backend sessions

static void *bk_create(void *arg, rx_session *s)
{
    (void)s;
    return arg;
}

static void bk_opened(rx_session *s)
{
    struct backend *b = rx_session_data(s);
    rx_log(RX_LOG_INFO, "%s: connected (%s)", bk_names[b->id], rx_session_peer(s));
}

// The head of B's queue, taken out: the request this reply answers. NULL when none.
static struct pending *bk_pop(struct backend *b)
{
    struct pending *p = b->head;
    if (p) {
        b->head = p->next;
        if (!b->head)
            b->tail = NULL;
    }
    return p;
}

// A line backend answered: "OK <value>" or "ERR <reason>".
static void bk_line(rx_session *s, const rx_frame *f)
{
    struct backend *b = rx_session_data(s);
    struct pending *p = bk_pop(b);
    if (!p) {
        rx_log(RX_LOG_WARN, "%s: a reply nobody asked for: closing", bk_names[b->id]);
        rx_session_close(s, false);
        return;
    }
    struct action *a = p->a;
    free(p);
    if (!a) {
        g.late++;
        rx_log(RX_LOG_INFO, "%s: late reply dropped (its action timed out or its request is gone)",
               bk_names[b->id]);
        return;
    }
    a->node = NULL;
    size_t n = f->len;
    if (n > 0 && f->data[n - 1] == '\r')
        n--;
    uint64_t v;
    if (n >= 4 && memcmp(f->data, "ERR ", 4) == 0) {
        action_fail(a, "%.*s", (int)(n - 4), f->data + 4);
    } else if (n < 3 || memcmp(f->data, "OK ", 3) != 0 ||
               (b->id != BK_BIO && !parse_num(f->data + 3, n - 3, &v))) {
        action_fail(a, "bad reply from %s", bk_names[b->id]);
    } else if (!(a->reply = malloc(n - 3 + 1))) {
        action_fail(a, "out of memory");
    } else {
        memcpy(a->reply, f->data + 3, n - 3);
        a->reply_len = n - 3;
    }
    action_finish(a);
}

// Redis answered (one whole RESP reply): SET wants +OK, GET a bulk string or the null bulk;
// an error reply ("-ERR ...") is the action's error (502).
static void bk_resp(rx_session *s, const rx_frame *f)
{
    struct backend *b = rx_session_data(s);
    struct pending *p = bk_pop(b);
    if (!p) {
        rx_log(RX_LOG_WARN, "redis: a reply nobody asked for: closing");
        rx_session_close(s, false);
        return;
    }
    struct action *a = p->a;
    free(p);
    if (!a) {
        g.late++;
        rx_log(RX_LOG_INFO, "redis: late reply dropped (its action timed out or its request is gone)");
        return;
    }
    a->node = NULL;
    rx_resp_value v;
    bool set = a == &a->r->acts[0];
    if (rx_resp_values(f, &v, 1) < 1) {
        action_fail(a, "bad reply");
        a->status = 502;
    } else if (v.type == '-') {
        action_fail(a, "%.*s", (int)v.len, v.p);
        a->status = 502;
    } else if (set && v.type == '+' && v.len == 2 && memcmp(v.p, "OK", 2) == 0) {
        // stored
    } else if (!set && v.type == '$' && v.null) {
        a->null = true;
    } else if (!set && v.type == '$') {
        if ((a->reply = malloc(v.len + 1)) != NULL) {
            memcpy(a->reply, v.p, v.len);
            a->reply_len = v.len;
        } else {
            action_fail(a, "out of memory");
        }
    } else {
        action_fail(a, "unexpected reply to %s", set ? "SET" : "GET");
        a->status = 502;
    }
    action_finish(a);
}

// B's session is gone: every awaited reply fails now (the connector reconnects by itself).
static void bk_closed(rx_session *s, enum rx_close_reason why)
{
    struct backend *b = rx_session_data(s);
    rx_log(RX_LOG_INFO, "%s: disconnected (%s)", bk_names[b->id], rx_close_reason_name(why));
    // Detach the queue first: a finishing action may start the next state, on this backend too.
    struct pending *p = b->head;
    b->head = b->tail = NULL;
    while (p) {
        struct pending *next = p->next;
        struct action *a = p->a;
        free(p);
        if (a) {
            a->node = NULL;
            action_fail(a, "closed the connection");
            action_finish(a);  // may free other actions' requests: they tombstone nodes in P
        }
        p = next;
    }
}

// ------------------------------------------------------------------------ HTTP clients

static void *cl_create(void *arg, rx_session *s)
{
    (void)arg;
    struct client *c = calloc(1, sizeof *c);
    if (c)
        c->s = s;
    return c;
}

static void cl_opened(rx_session *s)
{
    if (!rx_session_data(s)) {
        rx_log(RX_LOG_ERROR, "session %" PRIu64 ": out of memory", rx_session_id(s));
        rx_session_close(s, false);
    }
}

// The client sent EOF: it asks nothing more, but what it asked is still answered (a /profile
// answers after its backends: rx.h, rule 8). The session closes after its last answer (finish),
// or now when nothing is pending.
static void cl_eof(rx_session *s)
{
    struct client *c = rx_session_data(s);
    if (c)
        c->eof = true;
    if (!c || !c->head)
        rx_session_close(s, true);
}

// The client left: its requests are freed now, mid-state or not (their late replies will
// find tombstones).
static void cl_closed(rx_session *s, enum rx_close_reason why)
{
    (void)why;
    struct client *c = rx_session_data(s);
    if (!c)
        return;
    while (c->head) {
        struct req *r = c->head;
        c->head = r->next;
        if (r->state != 0)
            g.client_gone++;
        req_free(r);
    }
    free(c);
}

static size_t path_len(const rx_http_request *r)
{
    const char *q = memchr(r->target, '?', r->target_len);
    return q ? (size_t)(q - r->target) : r->target_len;
}

static bool path_is(const rx_http_request *r, const char *p)
{
    size_t n = strlen(p);
    return path_len(r) == n && memcmp(r->target, p, n) == 0;
}


// /kv's body: "key=K&value=V", K from after "key=" to the first '&' (1 to MAX_KEY bytes),
// V all after "value=" (at most MAX_VALUE bytes, '&' allowed). No percent-decoding: the
// bytes are stored as sent. Returns 0, or -1 when BODY is not that.
static int kv_parse(struct req *r, const char *body, size_t len)
{
    if (len < 4 || memcmp(body, "key=", 4) != 0)
        return -1;
    const char *k = body + 4, *amp = memchr(k, '&', len - 4);
    if (!amp || amp == k || (size_t)(amp - k) > MAX_KEY)
        return -1;
    const char *v = amp + 1, *end = body + len;
    if (end - v < 6 || memcmp(v, "value=", 6) != 0 || (size_t)(end - v - 6) > MAX_VALUE)
        return -1;
    r->key_len = (size_t)(amp - k);
    memcpy(r->key, k, r->key_len);
    r->value_len = (size_t)(end - v - 6);
    memcpy(r->value, v + 6, r->value_len);
    return 0;
}

// A new context for request HR of C (close: Connection: close after its answer). NULL when
// out of memory.
static struct req *req_new(struct client *c, const rx_http_request *hr, bool close)
{
    struct req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    g.created++;
    r->c = c;
    r->close = close;
    r->acts[0].backend = BK_FOLLOWERS;
    r->acts[1].backend = BK_POSTS;
    r->acts[2].backend = BK_BIO;
    r->acts[3].backend = BK_SCORE;
    for (size_t i = 0; i < 4; i++)
        r->acts[i].r = r;
    r->kind = R_ANSWER;
    if (hr->status != 0) {  // the codec refused it: answer, then close
        r->status = hr->status;
        r->close = true;
        snprintf(r->body, sizeof r->body, "{\"error\":\"%s\"}\n", hr->error);
    } else if (path_is(hr, "/profile")) {
        size_t pl = path_len(hr);
        const char *q = hr->target + pl, *end = hr->target + hr->target_len;
        if (!rx_http_method_is(hr, "GET")) {
            r->status = 405;
            r->allow = "GET";
            snprintf(r->body, sizeof r->body, "{\"error\":\"method not allowed\"}\n");
        } else if (!(end - q > 6 && memcmp(q, "?user=", 6) == 0 &&
                     parse_num(q + 6, (size_t)(end - q - 6), &r->user))) {
            r->status = 400;
            snprintf(r->body, sizeof r->body,
                     "{\"error\":\"want /profile?user=ID (1 to 18 digits)\"}\n");
        } else {
            r->kind = R_PROFILE;
        }
    } else if (path_is(hr, "/kv")) {
        if (!rx_http_method_is(hr, "POST")) {
            r->status = 405;
            r->allow = "POST";
            snprintf(r->body, sizeof r->body, "{\"error\":\"method not allowed\"}\n");
        } else if (kv_parse(r, hr->body, hr->body_len) != 0) {
            r->status = 400;
            snprintf(r->body, sizeof r->body,
                     "{\"error\":\"want key=K&value=V (K 1 to %d bytes, V at most %d)\"}\n",
                     MAX_KEY, MAX_VALUE);
        } else {
            r->kind = R_KV;
            r->acts[0].backend = r->acts[1].backend = BK_REDIS;
        }
    } else {
        r->status = 404;
        snprintf(r->body, sizeof r->body, "{\"error\":\"not found\"}\n");
    }
    return r;
}

static void cl_message(rx_session *s, const rx_frame *f)
{
    struct client *c = rx_session_data(s);
    rx_http_request hr;
    if (!c || rx_session_closing(s))
        return;
    if (rx_http_view(f, &hr) != 0) {  // cannot happen with rx_codec_http: a bug, not input
        rx_log(RX_LOG_ERROR, "session %" PRIu64 ": not an HTTP frame", rx_session_id(s));
        rx_session_close(s, false);
        return;
    }
    if (hr.status == 100) {
        // The client waits for this before its body; later, the whole request comes. Only
        // when nothing is ahead of it (else its answer would cut into another's).
        if (!c->head)
            rx_send(s, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        return;
    }
    g.requests++;
    if (hr.status != 0)
        rx_log(RX_LOG_INFO, "session %" PRIu64 " (%s): %d %s: closing after the answer",
               rx_session_id(s), rx_session_peer(s), hr.status, hr.error);
    struct req *r = req_new(c, &hr, !hr.keep_alive);
    if (!r) {
        rx_log(RX_LOG_ERROR, "session %" PRIu64 ": out of memory: closing", rx_session_id(s));
        rx_session_close(s, false);
        return;
    }
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->queued++;
    if (c->queued >= MAX_QUEUED && !c->paused) {
        rx_session_pause(s);
        c->paused = true;
    }
    if (c->head == r)
        client_next(c);
}

// ------------------------------------------------------------------------------ main

enum { OPT_FOLLOWERS = 400, OPT_POSTS, OPT_BIO, OPT_SCORE, OPT_REDIS, OPT_TIMEOUT, OPT_SERIAL };

// The gateway's own options, in the order take_own reads their indexes.
static const struct opt_own own_options[] = {
    {"--followers", 1}, {"--posts", 1}, {"--bio", 1},   {"--score", 1},
    {"--redis", 1},     {"--timeout", 1}, {"--serial", 0},
};
static const int own_ids[] = {BK_FOLLOWERS, BK_POSTS, BK_BIO, BK_SCORE, BK_REDIS, OPT_TIMEOUT,
                              OPT_SERIAL};

static void take_own(size_t k, const char *v)
{
    if (own_ids[k] == OPT_SERIAL)
        g.serial = true;
    else if (own_ids[k] == OPT_TIMEOUT)
        g.timeout_ms = opt_uint(v, 1, 600000, "bad --timeout (want 1 to 600000 ms)");
    else
        g.bk[own_ids[k]].port = (int)opt_uint(v, 1, 65535, "bad backend port (want 1 to 65535)");
}

int main(int argc, char **argv)
{
    struct server_opts o;
    g.timeout_ms = 1000;
    opt_init("gateway", usage);
    argc = opt_take_own(argc, argv, own_options, sizeof own_options / sizeof own_options[0],
                        take_own);
    server_opts_parse(argc, argv, 8090, 0, &o);

    rx_thread_set_name("main");
    rx_server *srv = rx_server_new(&o.cfg);
    if (!srv)
        return 1;
    g.srv = srv;
    g.loop = rx_server_loop(srv);

    // Backends: kept open and reused; reconnect soon after a loss (50 ms, up to 1 s).
    rx_connect_opts copts = rx_connect_opts_default();
    copts.retry_ms = 50;
    copts.retry_max_ms = 1000;
    copts.timeout_ms = 1000;
    rx_codec line = rx_codec_line(1024);
    rx_codec resp = rx_codec_resp_reply(2 * MAX_VALUE);  // GET's bulk, with room to spare
    int rc = 1;
    for (int i = 0; i < BK_COUNT; i++) {
        struct backend *b = &g.bk[i];
        b->id = i;
        if (!b->port)
            continue;
        rx_factory f = {.arg = b, .create = bk_create, .opened = bk_opened,
                        .message = i == BK_REDIS ? bk_resp : bk_line, .closed = bk_closed};
        b->conn = rx_connect(srv, "127.0.0.1", b->port, i == BK_REDIS ? &resp : &line, &f, &copts);
        if (!b->conn) {
            fprintf(stderr, "gateway: rx_connect: out of memory\n");
            goto out;
        }
    }
    rx_codec http = rx_codec_http(8192, MAX_KEY + MAX_VALUE + 64);
    rx_factory factory = {.create = cl_create, .opened = cl_opened, .message = cl_message,
                          .closed = cl_closed, .eof = cl_eof};
    int port = rx_listen(srv, o.host, o.port, &http, &factory);
    if (port < 0)
        goto out;
    rx_log(RX_LOG_INFO, "gateway: action timeout %" PRIu64 " ms, %s", g.timeout_ms,
           g.serial ? "serial" : "parallel");
    print_listening(o.host, port);
    rc = rx_server_run(srv) == 0 ? 0 : 1;
    rx_log(RX_LOG_INFO,
           "gateway: requests %" PRIu64 ", answered %" PRIu64 ", contexts created %" PRIu64
           ", freed %" PRIu64 ", client gone %" PRIu64 ", actions %" PRIu64 ", timeouts %" PRIu64
           ", late replies %" PRIu64 ", unavailable %" PRIu64,
           g.requests, g.answered, g.created, g.freed, g.client_gone, g.actions, g.timeouts,
           g.late, g.unavailable);
out:
    for (int i = 0; i < BK_COUNT; i++)
        if (g.bk[i].conn)
            rx_connector_free(g.bk[i].conn);
    rx_server_free(srv);
    rx_resp_reply_free(&g.cmd);
    return rc;
}
