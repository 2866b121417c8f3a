// kv_server.c: a small Redis on the rx library: RESP2 requests (lib/codec_resp.c), a hash
// table that grows, expiry by the library's timers. Enough of Redis that redis-cli and
// redis-benchmark work against it unchanged; every reply (errors included) is byte for byte
// what redis-server 7.0 sends for the same request.
//
// The course idea: a protocol codec cuts requests in the io threads, the application is one
// function per command in the main thread, and replies go out in the order the requests came,
// pipelined or not, because one session's frames reach `message` in order and each reply is
// queued before the next request is looked at.

#include <ctype.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "options.h"
#include "rx.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: kv_server [-H HOST] [-p PORT] [-t N] [--max-frame BYTES] [--max-output BYTES]\n"
            "                 [--soft-output BYTES] [--soft-seconds S] [--idle-timeout S]\n"
            "                 [--drain-ms MS]\n"
            "A key-value server speaking the Redis protocol (RESP2; default port 6380): PING,\n"
            "ECHO, SET (EX, PX, NX, XX, KEEPTTL, GET), GET, DEL, EXISTS, INCR, MGET, and enough\n"
            "of COMMAND and CONFIG GET for redis-cli and redis-benchmark. A request over\n"
            "--max-frame bytes or RX_RESP_MAX_ARGS (1024) arguments, or malformed, is answered\n"
            "\"-ERR Protocol error: ...\" (as redis does) and that client is closed; the others\n"
            "carry on.\n"
            "      --max-frame BYTES    the longest request, every byte counted (default 1048576)\n"
            SERVER_OPTS_HELP);
}

// ----------------------------------------------------------------------- the table

// One key. The key's bytes follow the struct; the value is its own block (a SET replaces it).
struct entry {
    struct entry *next;  // the bucket's chain
    uint64_t hash;
    char *val;
    size_t vlen, klen;
    rx_timer *timer;     // its expiry (NULL: none)
    uint64_t expire_ms;  // when, on the loop's clock (valid with timer)
    char key[];
};

static struct {
    struct entry **b;
    size_t nb;     // buckets: a power of two
    size_t n;      // keys
    uint64_t seed;
    rx_loop *loop;
    rx_resp_reply out;  // the reply being built (main thread only: every callback runs there)
    uint64_t expired, commands;
} kv;

// FNV-1a from a per-run seed: a client cannot pick keys that all land in one bucket without
// knowing the seed.
static uint64_t hash_key(const char *p, size_t n)
{
    uint64_t h = kv.seed;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return h ^ (h >> 29);
}

static struct entry **find_slot(const char *k, size_t klen, uint64_t h)
{
    struct entry **pp = &kv.b[h & (kv.nb - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->klen == klen && memcmp((*pp)->key, k, klen) == 0)
            return pp;
    return pp;
}

// Doubles the buckets when keys outnumber them: chains stay short at any size (the whole
// table is moved at once; at 100000 keys that is about a millisecond, once per doubling).
static void maybe_grow(void)
{
    if (kv.n < kv.nb)
        return;
    size_t nb = kv.nb * 2;
    struct entry **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return;  // longer chains, still correct
    for (size_t i = 0; i < kv.nb; i++) {
        struct entry *e = kv.b[i];
        while (e) {
            struct entry *next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    free(kv.b);
    kv.b = b;
    kv.nb = nb;
}

static void entry_unlink_free(struct entry **pp)
{
    struct entry *e = *pp;
    *pp = e->next;
    if (e->timer)
        rx_timer_stop(kv.loop, e->timer);
    free(e->val);
    free(e);
    kv.n--;
}

// The entry of KEY, or NULL; a key whose deadline has passed is gone even if its timer has not
// fired yet (the loop was busy): a GET never sees a value after its time.
static struct entry **lookup(const rx_resp_arg *key)
{
    uint64_t h = hash_key(key->p, key->len);
    struct entry **pp = find_slot(key->p, key->len, h);
    if (*pp && (*pp)->timer && rx_loop_now_ms(kv.loop) >= (*pp)->expire_ms) {
        entry_unlink_free(pp);
        kv.expired++;
        return NULL;
    }
    return *pp ? pp : NULL;
}

static void on_expire(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop, (void)t;
    struct entry *e = arg;
    e->timer = NULL;  // a one-shot timer is freed after this returns (rx.h, rule 5)
    struct entry **pp = find_slot(e->key, e->klen, e->hash);
    if (*pp == e) {
        entry_unlink_free(pp);
        kv.expired++;
    }
}

// Sets KEY to VAL; keeps the key's expiry when KEEP_TTL, else replaces it by TTL_MS (0: none).
// Returns 0, or -1 out of memory (nothing changed).
static int store(const rx_resp_arg *key, const char *val, size_t vlen, bool keep_ttl, uint64_t ttl_ms)
{
    char *v = malloc(vlen ? vlen : 1);
    if (v == NULL)
        return -1;
    memcpy(v, val, vlen);
    uint64_t h = hash_key(key->p, key->len);
    struct entry **pp = find_slot(key->p, key->len, h);
    struct entry *e = *pp;
    if (e == NULL) {
        e = malloc(sizeof *e + key->len);
        if (e == NULL) {
            free(v);
            return -1;
        }
        *e = (struct entry){.hash = h, .klen = key->len, .next = NULL};
        memcpy(e->key, key->p, key->len);
        *pp = e;
        kv.n++;
    } else {
        free(e->val);
    }
    e->val = v;
    e->vlen = vlen;
    if (!keep_ttl && e->timer) {  // an overwrite ends the old expiry (redis: SET without KEEPTTL)
        rx_timer_stop(kv.loop, e->timer);
        e->timer = NULL;
    }
    if (ttl_ms > 0) {
        e->timer = rx_timer_start(kv.loop, ttl_ms, 0, on_expire, e);
        e->expire_ms = rx_loop_now_ms(kv.loop) + ttl_ms;
        if (e->timer == NULL)  // out of memory: no expiry is worse than no value
            entry_unlink_free(find_slot(key->p, key->len, h));
    }
    maybe_grow();
    return 0;
}

// ----------------------------------------------------------------------- the commands

// Redis's number parsing (string2ll): an optional '-', digits without a leading zero, no
// spaces, no '+', at most 20 bytes, within long long. Returns 0 and sets *V, or -1.
static int parse_ll(const char *p, size_t n, long long *v)
{
    if (n == 0 || n > 20)
        return -1;
    if (n == 1 && p[0] == '0') {
        *v = 0;
        return 0;
    }
    size_t i = 0;
    bool neg = p[0] == '-';
    if (neg && ++i == n)
        return -1;
    if (p[i] < '1' || p[i] > '9')
        return -1;
    unsigned long long u = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        unsigned d = (unsigned)(p[i] - '0');
        if (u > (ULLONG_MAX - d) / 10)
            return -1;
        u = u * 10 + d;
    }
    if (neg) {
        if (u > (unsigned long long)LLONG_MAX + 1)
            return -1;
        *v = u == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)u;
    } else {
        if (u > (unsigned long long)LLONG_MAX)
            return -1;
        *v = (long long)u;
    }
    return 0;
}

static bool arg_is(const rx_resp_arg *a, const char *word)
{
    size_t n = strlen(word);
    return a->len == n && strncasecmp(a->p, word, n) == 0;
}

static void reply_arity(const char *name)
{
    rx_resp_errorf(&kv.out, "ERR wrong number of arguments for '%s' command", name);
}

static const char NOT_INT[] = "ERR value is not an integer or out of range";

static void cmd_ping(const rx_resp_arg *a, size_t n)
{
    if (n > 2)
        reply_arity("ping");
    else if (n == 2)
        rx_resp_bulk(&kv.out, a[1].p, a[1].len);
    else
        rx_resp_simple(&kv.out, "PONG");
}

static void cmd_echo(const rx_resp_arg *a, size_t n)
{
    if (n != 2)
        reply_arity("echo");
    else
        rx_resp_bulk(&kv.out, a[1].p, a[1].len);
}

static void cmd_get(const rx_resp_arg *a, size_t n)
{
    if (n != 2) {
        reply_arity("get");
        return;
    }
    struct entry **pp = lookup(&a[1]);
    if (pp)
        rx_resp_bulk(&kv.out, (*pp)->val, (*pp)->vlen);
    else
        rx_resp_null(&kv.out);
}

// SET key value [NX | XX] [GET] [EX seconds | PX milliseconds | KEEPTTL], redis 7.0's rules:
// the options are read first (a repeated one is allowed, two that conflict are a syntax
// error), then the expiry is judged (not a number; not positive or past LLONG_MAX ms from now).
static void cmd_set(const rx_resp_arg *a, size_t n)
{
    if (n < 3) {
        reply_arity("set");
        return;
    }
    enum { NX = 1, XX = 2, GET = 4, EX = 8, PX = 16, KEEPTTL = 32 };
    unsigned fl = 0;
    const rx_resp_arg *expire = NULL;
    for (size_t j = 3; j < n; j++) {
        const rx_resp_arg *o = &a[j];
        bool more = j + 1 < n;
        if (arg_is(o, "NX") && !(fl & XX))
            fl |= NX;
        else if (arg_is(o, "XX") && !(fl & NX))
            fl |= XX;
        else if (arg_is(o, "GET"))
            fl |= GET;
        else if (arg_is(o, "KEEPTTL") && !(fl & (EX | PX)))
            fl |= KEEPTTL;
        else if (arg_is(o, "EX") && !(fl & (KEEPTTL | PX)) && more)
            fl |= EX, expire = &a[++j];
        else if (arg_is(o, "PX") && !(fl & (KEEPTTL | EX)) && more)
            fl |= PX, expire = &a[++j];
        else {
            rx_resp_error(&kv.out, "ERR syntax error");
            return;
        }
    }
    uint64_t ttl_ms = 0;
    if (expire) {
        long long v;
        if (parse_ll(expire->p, expire->len, &v) == -1) {
            rx_resp_error(&kv.out, NOT_INT);
            return;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        if (v <= 0 || ((fl & EX) && v > LLONG_MAX / 1000) ||
            (fl & EX ? v * 1000 : v) > LLONG_MAX - now) {
            rx_resp_error(&kv.out, "ERR invalid expire time in 'set' command");
            return;
        }
        ttl_ms = (uint64_t)(fl & EX ? v * 1000 : v);
    }
    struct entry **pp = lookup(&a[1]);
    struct entry *old = pp ? *pp : NULL;
    if (((fl & NX) && old) || ((fl & XX) && !old)) {  // not set
        if ((fl & GET) && old)
            rx_resp_bulk(&kv.out, old->val, old->vlen);
        else
            rx_resp_null(&kv.out);
        return;
    }
    // GET: the old value is replied before it is replaced (the reply copies it).
    if (fl & GET) {
        if (old)
            rx_resp_bulk(&kv.out, old->val, old->vlen);
        else
            rx_resp_null(&kv.out);
    }
    if (store(&a[1], a[2].p, a[2].len, fl & KEEPTTL, ttl_ms) == -1) {
        kv.out.len = 0;  // an error instead of whatever GET added
        rx_resp_error(&kv.out, "ERR out of memory");
        return;
    }
    if (!(fl & GET))
        rx_resp_simple(&kv.out, "OK");
}

static void cmd_del(const rx_resp_arg *a, size_t n)
{
    if (n < 2) {
        reply_arity("del");
        return;
    }
    long long gone = 0;
    for (size_t i = 1; i < n; i++) {
        struct entry **pp = lookup(&a[i]);
        if (pp) {
            entry_unlink_free(pp);
            gone++;
        }
    }
    rx_resp_int(&kv.out, gone);
}

static void cmd_exists(const rx_resp_arg *a, size_t n)
{
    if (n < 2) {
        reply_arity("exists");
        return;
    }
    long long found = 0;  // a key named twice counts twice (redis does)
    for (size_t i = 1; i < n; i++)
        if (lookup(&a[i]))
            found++;
    rx_resp_int(&kv.out, found);
}

static void cmd_incr(const rx_resp_arg *a, size_t n)
{
    if (n != 2) {
        reply_arity("incr");
        return;
    }
    struct entry **pp = lookup(&a[1]);
    long long v = 0;
    if (pp && parse_ll((*pp)->val, (*pp)->vlen, &v) == -1) {
        rx_resp_error(&kv.out, NOT_INT);
        return;
    }
    if (v == LLONG_MAX) {
        rx_resp_error(&kv.out, "ERR increment or decrement would overflow");
        return;
    }
    v++;
    char num[24];
    int len = snprintf(num, sizeof num, "%lld", v);
    if (store(&a[1], num, (size_t)len, true, 0) == -1) {  // INCR keeps the key's expiry
        rx_resp_error(&kv.out, "ERR out of memory");
        return;
    }
    rx_resp_int(&kv.out, v);
}

static void cmd_mget(const rx_resp_arg *a, size_t n)
{
    if (n < 2) {
        reply_arity("mget");
        return;
    }
    rx_resp_array(&kv.out, n - 1);
    for (size_t i = 1; i < n; i++) {
        struct entry **pp = lookup(&a[i]);
        if (pp)
            rx_resp_bulk(&kv.out, (*pp)->val, (*pp)->vlen);
        else
            rx_resp_null(&kv.out);
    }
}

// COMMAND, COMMAND DOCS [name...], COMMAND COUNT: what redis-cli asks at start (DOCS, for its
// hints) gets an empty answer, which it takes as "no hints".
static void cmd_command(const rx_resp_arg *a, size_t n)
{
    if (n == 1 || arg_is(&a[1], "DOCS"))
        rx_resp_array(&kv.out, 0);
    else if (arg_is(&a[1], "COUNT") && n == 2)
        rx_resp_int(&kv.out, 10);
    else if (arg_is(&a[1], "COUNT"))
        reply_arity("command|count");
    else
        rx_resp_errorf(&kv.out, "ERR unknown subcommand '%.*s'. Try COMMAND HELP.",
                       a[1].len > 128 ? 128 : (int)a[1].len, a[1].p);
}

// CONFIG GET parameter... (glob patterns too): the two redis-benchmark reads at start, and
// nothing else (CONFIG GET * lists these two only).
static void cmd_config(const rx_resp_arg *a, size_t n)
{
    static const char *const params[][2] = {{"save", ""}, {"appendonly", "no"}};
    if (n < 2) {
        reply_arity("config");
        return;
    }
    if (!arg_is(&a[1], "GET")) {
        rx_resp_errorf(&kv.out, "ERR unknown subcommand '%.*s'. Try CONFIG HELP.",
                       a[1].len > 128 ? 128 : (int)a[1].len, a[1].p);
        return;
    }
    if (n < 3) {
        reply_arity("config|get");
        return;
    }
    // Each parameter once, in the table's order (redis answers from a dict: save comes
    // before appendonly however they are asked); an exact name as it was asked ("SAVE").
    size_t np = sizeof params / sizeof params[0];
    const rx_resp_arg *how[sizeof params / sizeof params[0]] = {NULL};  // what matched it
    bool exact[sizeof params / sizeof params[0]] = {false};
    size_t found = 0;
    for (size_t i = 2; i < n; i++) {
        char pat[129];
        size_t plen = a[i].len < 128 ? a[i].len : 128;
        memcpy(pat, a[i].p, plen);
        pat[plen] = '\0';
        for (size_t k = 0; k < np; k++) {
            if (how[k])
                continue;
            bool is = arg_is(&a[i], params[k][0]);
            if (is || fnmatch(pat, params[k][0], FNM_CASEFOLD) == 0) {
                how[k] = &a[i];
                exact[k] = is;
                found++;
            }
        }
    }
    rx_resp_array(&kv.out, found * 2);
    for (size_t k = 0; k < np; k++) {
        if (how[k] == NULL)
            continue;
        if (exact[k])  // an exact name is answered as it was asked ("SAVE")
            rx_resp_bulk(&kv.out, how[k]->p, how[k]->len);
        else
            rx_resp_bulk(&kv.out, params[k][0], strlen(params[k][0]));
        rx_resp_bulk(&kv.out, params[k][1], strlen(params[k][1]));
    }
}

// redis's words: the name (at most 128 bytes), then each argument quoted, until 128 bytes of
// them are written.
static void reply_unknown(const rx_resp_arg *a, size_t n)
{
    char args[512];
    size_t len = 0;
    for (size_t i = 1; i < n && len < 128; i++) {
        int room = 128 - (int)len;
        int w = snprintf(args + len, sizeof args - len, "'%.*s' ",
                         a[i].len < (size_t)room ? (int)a[i].len : room, a[i].p);
        if (w < 0 || (size_t)w >= sizeof args - len)
            break;
        len += (size_t)w;
    }
    args[len] = '\0';
    rx_resp_errorf(&kv.out, "ERR unknown command '%.*s', with args beginning with: %s",
                   a[0].len > 128 ? 128 : (int)a[0].len, a[0].p, args);
}

static const struct command {
    const char *name;
    void (*fn)(const rx_resp_arg *a, size_t n);
} commands[] = {
    {"GET", cmd_get},   {"SET", cmd_set},       {"PING", cmd_ping},       {"INCR", cmd_incr},
    {"MGET", cmd_mget}, {"DEL", cmd_del},       {"EXISTS", cmd_exists},   {"ECHO", cmd_echo},
    {"CONFIG", cmd_config}, {"COMMAND", cmd_command},
};

// Main thread. One request, one reply, queued before the next request is read: the order of
// replies is the order of requests, whatever a read held.
static void on_message(rx_session *s, const rx_frame *f)
{
    if (f->flags & RX_FRAME_REFUSED) {
        // The codec refused the input (its last frame: the reason in redis's words). redis
        // answers "-ERR Protocol error: ..." and closes after the reply: so does this (the
        // library's close lingers, so the reply survives a client still sending).
        rx_resp_errorf(&kv.out, "ERR %.*s", (int)f->len, f->data);
        rx_resp_send(s, &kv.out);
        rx_session_close(s, true);
        return;
    }
    rx_resp_arg argv[RX_RESP_MAX_ARGS];
    size_t n = rx_resp_args(f, argv, RX_RESP_MAX_ARGS);
    if (n == 0)
        return;
    kv.commands++;
    const struct command *c = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (arg_is(&argv[0], commands[i].name)) {
            c = &commands[i];
            break;
        }
    if (c)
        c->fn(argv, n);
    else
        reply_unknown(argv, n);
    if (rx_resp_send(s, &kv.out) != 0)
        rx_log(RX_LOG_DEBUG, "session %llu: reply not sent (closing)",
               (unsigned long long)rx_session_id(s));
}

static void on_stop(rx_server *srv, void *arg)
{
    (void)srv, (void)arg;
    rx_log(RX_LOG_INFO, "kv: %zu keys, %llu commands, %llu expired", kv.n,
           (unsigned long long)kv.commands, (unsigned long long)kv.expired);
}

static void table_free(void)
{
    for (size_t i = 0; i < kv.nb; i++)
        while (kv.b[i])
            entry_unlink_free(&kv.b[i]);
    free(kv.b);
    kv.b = NULL;
}

int main(int argc, char **argv)
{
    struct server_opts o;
    opt_init("kv_server", usage);
    server_opts_parse(argc, argv, 6380, WANT_MAX_FRAME, &o);

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    kv.seed = 0xcbf29ce484222325ULL ^ ((uint64_t)ts.tv_nsec << 16) ^ (uint64_t)ts.tv_sec;
    kv.nb = 1024;
    kv.b = calloc(kv.nb, sizeof *kv.b);
    if (kv.b == NULL) {
        fprintf(stderr, "kv_server: out of memory\n");
        return 1;
    }
    rx_thread_set_name("main");
    rx_server *srv = rx_server_new(&o.cfg);
    if (!srv) {
        free(kv.b);
        return 1;
    }
    kv.loop = rx_server_loop(srv);
    rx_codec resp = rx_codec_resp(o.max_frame);
    rx_factory factory = {.message = on_message};
    int port = rx_listen(srv, o.host, o.port, &resp, &factory);
    if (port < 0) {
        rx_server_free(srv);
        free(kv.b);
        return 1;
    }
    rx_server_on_stop(srv, on_stop, NULL);
    print_listening(o.host, port);
    int rc = rx_server_run(srv);
    table_free();  // before the server: its timers live on the main loop
    rx_server_free(srv);
    rx_resp_reply_free(&kv.out);
    return rc == 0 ? 0 : 1;
}
