// http_test.c: the HTTP/1.1 codec (codec_http.c, rx.h "the HTTP/1.1 codec") fed as an io
// thread feeds it: every request of a vector set back to back (pipelined) at every split
// point, byte by byte and at random splits, each read into a buffer of the size the io
// thread allows (conn.c input_limit: the codec's chunk + RX_HEAD_MAX + 1), the unread bytes
// moved to a new block on every read (a codec that kept a pointer into its input reads freed
// memory: ASan). What comes out is read back through rx_http_view and written as a
// transcript, compared with one written by hand. Then every refusal with its status, the
// limits at and one past, what follows a refusal (swallowed), a stopping emit, 100-continue,
// the response helper's exact bytes, and garbage (never a crash; the same transcript
// whatever the splits). Random splits are seeded: HTTP_TEST_SEED=n repeats a run.
#include "rx.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "http_test: out of memory\n");
        exit(2);
    }
    return p;
}

static uint64_t rng_state;
static uint64_t rnd(void)  // splitmix64
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// ---------------------------------------------------------------- transcripts

struct str {
    char *p;
    size_t len, cap;
};

static void s_add(struct str *s, const void *p, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1)
            cap *= 2;
        s->p = realloc(s->p, cap);
        if (s->p == NULL)
            exit(2);
        s->cap = cap;
    }
    if (n)
        memcpy(s->p + s->len, p, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void s_printf(struct str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_printf(struct str *s, const char *fmt, ...)
{
    char tmp[16384];  // the longest line here is a 100-header transcript (about 1 KiB)
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        fprintf(stderr, "http_test: a transcript line over %zu bytes\n", sizeof tmp);
        exit(2);
    }
    s_add(s, tmp, (size_t)n);
}

static void s_free(struct str *s)
{
    free(s->p);
    *s = (struct str){0};
}

static void show_diff(const char *got, const char *want)
{
    size_t i = 0;
    while (got[i] && got[i] == want[i])
        i++;
    printf("  differ at byte %zu\n  got:  %.120s\n  want: %.120s\n", i, got + (i > 30 ? i - 30 : 0),
           want + (i > 30 ? i - 30 : 0));
}

// ---------------------------------------------------------------- the sink (emit)

struct sink {
    struct str out;
    int skip_continue;          // leave status-100 frames out (they depend on the splits)
    unsigned long long emits;
    unsigned long long stop_at; // EMIT returns -1 on this emit (1-based; 0: never)
    int refused;                // a refusal was emitted
    int after_refusal;          // a frame after it (never allowed)
};

static void put_bytes(struct str *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 32 && c < 127 && c != '\\')
            s_add(s, &p[i], 1);
        else
            s_printf(s, "\\x%02x", c);
    }
}

static int sink_emit(void *ctx, const rx_frame *f)
{
    struct sink *k = ctx;
    k->emits++;
    if (k->refused)
        k->after_refusal = 1;
    rx_http_request r;
    if (rx_http_view(f, &r) != 0) {
        s_printf(&k->out, "VIEW-FAILED len %zu\n", f->len);
    } else if (f->type != (uint16_t)r.status || f->total != f->len ||
               f->flags != (RX_FRAME_FIRST | RX_FRAME_LAST |
                            (r.status != 0 && r.status != 100 ? RX_FRAME_REFUSED : 0))) {
        s_printf(&k->out, "BAD-FRAME-FIELDS type %u status %d\n", f->type, r.status);
    } else if (r.status != 0 && r.status != 100) {
        k->refused = 1;
        s_printf(&k->out, "ERR %d %s\n", r.status, r.error ? r.error : "(null)");
    } else if (r.status == 100 && k->skip_continue) {
        // left out
    } else {
        s_add(&k->out, r.status == 100 ? "CONT " : "REQ ", r.status == 100 ? 5 : 4);
        put_bytes(&k->out, r.method, r.method_len);
        s_add(&k->out, " ", 1);
        put_bytes(&k->out, r.target, r.target_len);
        s_printf(&k->out, " 1.%d ka=%d%s cl=%zu wire=%zu", r.minor, r.keep_alive,
                 r.expect_continue ? " 100c" : "", r.body_len, r.wire_len);
        for (size_t i = 0; i < r.nheaders; i++) {
            s_add(&k->out, " [", 2);
            put_bytes(&k->out, r.headers[i].name, r.headers[i].name_len);
            s_add(&k->out, "=", 1);
            put_bytes(&k->out, r.headers[i].value, r.headers[i].value_len);
            s_add(&k->out, "]", 1);
        }
        if (r.body != NULL) {
            s_add(&k->out, " body=", 6);
            put_bytes(&k->out, r.body, r.body_len);
        }
        s_add(&k->out, "\n", 1);
    }
    return k->stop_at != 0 && k->emits == k->stop_at ? -1 : 0;
}

// ---------------------------------------------------------------- the driver

// How reads are cut: SPLIT_AT (two reads at AT), ONE (a byte each), RANDOM (1..64 bytes).
enum split { WHOLE, SPLIT_AT, ONE, RANDOM };

// Feeds IN (LEN bytes) to a fresh decoder of codec C, read by read, like conn.c conn_read: an
// empty input buffer decodes the read in place and keeps the leftover; a non-empty one gets
// the read appended (at most its limit) and decodes the whole. Every read goes into a fresh
// block of exactly its size and the kept bytes move to a fresh block, so a pointer kept into
// IN, or a read past its end, is caught by ASan. Returns the transcript (to free).
static struct str feed(const rx_codec *c, const char *in, size_t len, enum split how, size_t at,
                       int skip_continue)
{
    struct sink k = {.skip_continue = skip_continue};
    void *st = c->create ? c->create(c) : NULL;
    size_t limit = c->chunk + RX_HEAD_MAX + 1;  // conn.c input_limit (chunk <= max_frame)
    char *kept = NULL;
    size_t nkept = 0, pos = 0;
    int over = 0, bad = 0;
    while (pos < len && !bad) {
        size_t want = how == WHOLE ? len - pos
                      : how == SPLIT_AT ? (pos < at ? at - pos : len - pos)
                      : how == ONE ? 1
                                   : 1 + (size_t)(rnd() % 64);
        if (want > len - pos)
            want = len - pos;
        if (nkept > 0 && want > limit - nkept)
            want = limit - nkept;  // the io thread reads no more than its buffer holds
        if (want == 0) {
            over = 1;  // the buffer is full and the codec consumes nothing: stuck
            break;
        }
        char *buf = xmalloc(nkept + want);
        if (nkept)
            memcpy(buf, kept, nkept);
        memcpy(buf + nkept, in + pos, want);
        free(kept);
        pos += want;
        size_t have = nkept + want;
        ssize_t used = c->decode(c, st, buf, have, sink_emit, &k);
        if (used < 0 || (size_t)used > have) {
            s_printf(&k.out, "DECODE-RETURNED %zd of %zu\n", used, have);
            bad = 1;
            used = (ssize_t)have;
        }
        nkept = have - (size_t)used;
        kept = NULL;
        if (nkept > 0) {
            kept = xmalloc(nkept);
            memcpy(kept, buf + used, nkept);
        }
        free(buf);
    }
    if (over)
        s_printf(&k.out, "STUCK %zu\n", nkept);
    else if (nkept > 0)
        s_printf(&k.out, "R%zu\n", nkept);
    if (k.after_refusal)
        s_add(&k.out, "FRAME-AFTER-REFUSAL\n", 20);
    free(kept);
    if (c->destroy)
        c->destroy(st);
    return k.out;
}

// Checks WANT for IN fed whole, at every split point (up to MAX_SPLITS of them, evenly
// spread), a byte at a time and at ROUNDS random splits.
static void check_splits(const char *what, const rx_codec *c, const char *in, size_t len,
                         const char *want, int rounds)
{
    int bad = 0;
    struct str t = feed(c, in, len, WHOLE, 0, 1);
    if (strcmp(t.p ? t.p : "", want) != 0) {
        show_diff(t.p ? t.p : "", want);
        bad++;
    }
    s_free(&t);
    for (size_t at = 1; at < len && bad == 0; at++) {
        t = feed(c, in, len, SPLIT_AT, at, 1);
        if (strcmp(t.p ? t.p : "", want) != 0) {
            printf("  split at %zu:\n", at);
            show_diff(t.p ? t.p : "", want);
            bad++;
        }
        s_free(&t);
    }
    if (bad == 0) {
        t = feed(c, in, len, ONE, 0, 1);
        if (strcmp(t.p ? t.p : "", want) != 0) {
            printf("  a byte at a time:\n");
            show_diff(t.p ? t.p : "", want);
            bad++;
        }
        s_free(&t);
    }
    for (int r = 0; r < rounds && bad == 0; r++) {
        t = feed(c, in, len, RANDOM, 0, 1);
        if (strcmp(t.p ? t.p : "", want) != 0) {
            printf("  random round %d:\n", r);
            show_diff(t.p ? t.p : "", want);
            bad++;
        }
        s_free(&t);
    }
    expect(bad == 0, "%s: whole, at all %zu split points, a byte at a time, %d random splits",
          what, len > 0 ? len - 1 : 0, rounds);
}

// WANT may hold one "%zu": the length of IN (the request's wire size).
static void check_one(const char *what, const rx_codec *c, const char *in, const char *want)
{
    struct str w = {0};
    const char *at = strstr(want, "%zu");
    if (at != NULL) {
        s_add(&w, want, (size_t)(at - want));
        s_printf(&w, "%zu%s", strlen(in), at + 3);
    } else {
        s_add(&w, want, strlen(want));
    }
    check_splits(what, c, in, strlen(in), w.p, 20);
    s_free(&w);
}

// ---------------------------------------------------------------- the cases

static void test_vectors(void)
{
    rx_codec c = rx_codec_http(256, 64);
    // Pipelined on one connection: bodies, Connection rules of 1.0 and 1.1, bare-LF lines,
    // a repeated equal Content-Length, spaces around values, then a partial request.
    static const char vec[] =
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        "POST /form HTTP/1.1\r\nhost: b\r\ncontent-length: 5\r\n\r\nhello"
        "GET /x?y=1 HTTP/1.1\r\nHost:c\r\nConnection: close\r\n\r\n"
        "GET / HTTP/1.0\r\n\r\n"
        "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
        "HEAD / HTTP/1.1\nHost: lf-only \t\nCONNECTION: upgrade, keep-alive\n\n"
        "PUT /p HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
        "POST /z HTTP/1.1\r\nHost: f\r\nContent-Length: 0\r\n\r\n"
        "GET /trunc";
    static const char want[] =
        "REQ GET / 1.1 ka=1 cl=0 wire=27 [Host=a]\n"
        "REQ POST /form 1.1 ka=1 cl=5 wire=56 [host=b] [content-length=5] body=hello\n"
        "REQ GET /x?y=1 1.1 ka=0 cl=0 wire=50 [Host=c] [Connection=close]\n"
        "REQ GET / 1.0 ka=0 cl=0 wire=18\n"
        "REQ GET / 1.0 ka=1 cl=0 wire=42 [Connection=Keep-Alive]\n"
        "REQ HEAD / 1.1 ka=1 cl=0 wire=65 [Host=lf-only] [CONNECTION=upgrade, keep-alive]\n"
        "REQ PUT /p 1.1 ka=1 cl=3 wire=69 [Host=e] [Content-Length=3] [Content-Length=3] body=abc\n"
        "REQ POST /z 1.1 ka=1 cl=0 wire=48 [Host=f] [Content-Length=0]\n"
        "R10\n";
    check_splits("pipelined vectors", &c, vec, sizeof vec - 1, want, 300);

    // What headers mean (06's cases): Connection token lists over several lines, versions.
    static const struct {
        const char *what, *in, *want;
    } meaning[] = {
        {"Connection: keep-alive, close closes",
         "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n",
         "REQ GET / 1.1 ka=0 cl=0 wire=%zu [Host=a] [Connection=keep-alive, close]\n"},
        {"close on a second Connection line closes",
         "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: CLOSE\r\n\r\n",
         "REQ GET / 1.1 ka=0 cl=0 wire=%zu [Host=a] [Connection=keep-alive] [Connection=CLOSE]\n"},
        {"Connection: closed is not close",
         "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
         "REQ GET / 1.1 ka=1 cl=0 wire=%zu [Host=a] [Connection=closed]\n"},
        {"1.0: Connection: keep-alives is not keep-alive",
         "GET / HTTP/1.0\r\nConnection: keep-alives\r\n\r\n",
         "REQ GET / 1.0 ka=0 cl=0 wire=%zu [Connection=keep-alives]\n"},
        {"1.0: Connection: keep-alive, close closes",
         "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
         "REQ GET / 1.0 ka=0 cl=0 wire=%zu [Connection=keep-alive, close]\n"},
        {"HTTP/1.9 is read as 1.1", "GET / HTTP/1.9\r\nHost: a\r\n\r\n",
         "REQ GET / 1.1 ka=1 cl=0 wire=%zu [Host=a]\n"},
        // The target takes every visible ASCII byte (0x21 .. 0x7e; RFC 9112 3.2), '~' too.
        {"every visible ASCII byte, '!' to '~', passes in a target",
         "GET /!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~ HTTP/1.1\r\nHost: a\r\n\r\n",
         "REQ GET /!\"#$%&'()*+,-./09:;<=>?@AZ[\\x5c]^_`az{|}~ 1.1 ka=1 cl=0 wire=%zu [Host=a]\n"},
        {"Expect: 100-continue with its body at once: no 100 frame",
         "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx",
         "REQ POST / 1.1 ka=1 100c cl=1 wire=%zu [Host=a] [Expect=100-Continue] "
         "[Content-Length=1] body=x\n"},
    };
    for (size_t i = 0; i < sizeof meaning / sizeof meaning[0]; i++)
        check_one(meaning[i].what, &c, meaning[i].in, meaning[i].want);
}

static void test_refusals(void)
{
    rx_codec c = rx_codec_http(256, 64);
    // Each refusal is the last frame: a good request after it is swallowed (no REQ, no R).
    static const struct {
        const char *what, *in, *want;
    } bad[] = {
        {"Content-Length and Transfer-Encoding together is 400 (smuggling)",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
         "ERR 400 both Transfer-Encoding and Content-Length\n"},
        {"Transfer-Encoding then Content-Length is 400 too",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
         "ERR 400 both Transfer-Encoding and Content-Length\n"},
        {"two different Content-Lengths are 400",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
         "ERR 400 conflicting Content-Length headers\n"},
        {"Content-Length with a sign is 400",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", "ERR 400 bad Content-Length\n"},
        {"Content-Length '3 3' is 400",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 3\r\n\r\nabc", "ERR 400 bad Content-Length\n"},
        {"an empty Content-Length is 400",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", "ERR 400 bad Content-Length\n"},
        {"Content-Length as a list '3, 3' is 400",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", "ERR 400 bad Content-Length\n"},
        // Every digit counts: a length that passes max_body (64) only at its last digit.
        {"Content-Length 640 (the body limit 64 and one digit more) is 413, not read as 64",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 640\r\n\r\n", "ERR 413 body too large\n"},
        {"Transfer-Encoding alone is 501",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "ERR 501 Transfer-Encoding not implemented\n"},
        {"a folded header line (obs-fold) is 400",
         "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", "ERR 400 folded header line\n"},
        {"a space before the colon is 400",
         "GET / HTTP/1.1\r\nHost : a\r\n\r\n", "ERR 400 malformed header line\n"},
        {"a header line without a name (': x') is 400",
         "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", "ERR 400 malformed header line\n"},
        {"a header line without a colon (one token) is 400",
         "GET / HTTP/1.1\r\nHost: a\r\nX-No-Colon\r\n\r\n", "ERR 400 malformed header line\n"},
        {"a header line without a colon (words) is 400",
         "GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n", "ERR 400 malformed header line\n"},
        {"a bare CR in a value is 400",
         "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", "ERR 400 control character in header value\n"},
        {"a bare CR ending the request line is 400",
         "GET / HTTP/1.1\r\rHost: a\r\n\r\n", "ERR 400 malformed request line\n"},
        {"HTTP/1.1 without Host is 400", "GET / HTTP/1.1\r\n\r\n",
         "ERR 400 HTTP/1.1 request without Host\n"},
        {"two Host lines are 400", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
         "ERR 400 more than one Host\n"},
        {"an empty line first is 400", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
         "ERR 400 empty request line\n"},
        {"a lowercase version is 400", "GET / http/1.1\r\nHost: a\r\n\r\n",
         "ERR 400 malformed request line\n"},
        {"a request line without a method (a leading space) is 400",
         " / HTTP/1.1\r\nHost: a\r\n\r\n", "ERR 400 malformed request line\n"},
        {"a DEL in the target is 400", "GET /a\177 HTTP/1.1\r\nHost: a\r\n\r\n",
         "ERR 400 malformed request line\n"},
        {"8-bit bytes in the target (UTF-8 'caf\303\251') are 400",
         "GET /caf\303\251 HTTP/1.1\r\nHost: a\r\n\r\n", "ERR 400 malformed request line\n"},
        {"a byte 0x80 alone in the target is 400", "GET /\200 HTTP/1.1\r\nHost: a\r\n\r\n",
         "ERR 400 malformed request line\n"},
        {"two spaces after the method are 400", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
         "ERR 400 malformed request line\n"},
        {"HTTP/2.0 is 505", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", "ERR 505 HTTP version not supported\n"},
        {"a good request, then a bad one: both frames, in order, then nothing",
         "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nBAD\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
         "REQ GET /ok 1.1 ka=1 cl=0 wire=29 [Host=a]\nERR 400 malformed request line\n"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct str in = {0};
        s_add(&in, bad[i].in, strlen(bad[i].in));
        s_add(&in, "GET /after HTTP/1.1\r\nHost: a\r\n\r\n", 33);
        check_splits(bad[i].what, &c, in.p, in.len, bad[i].want, 20);
        s_free(&in);
    }
}

// A request whose head is exactly N bytes (N >= 30): padded with one header.
static void head_of(struct str *s, size_t n)
{
    static const char start[] = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    size_t pad = n - (sizeof start - 1) - 4;
    s_add(s, start, sizeof start - 1);
    for (size_t i = 0; i < pad; i++)
        s_add(s, "p", 1);
    s_add(s, "\r\n\r\n", 4);
}

static void test_limits(void)
{
    char want[64];
    for (size_t max = 64; max <= 512; max *= 8) {
        rx_codec c = rx_codec_http(max, 16);
        struct str in = {0};
        head_of(&in, max);
        struct str two = {0}, w = {0};
        s_add(&two, in.p, in.len);
        s_add(&two, in.p, in.len);  // two heads of max bytes back to back
        for (int i = 0; i < 2; i++)
            s_printf(&w, "REQ GET / 1.1 ka=1 cl=0 wire=%zu [Host=a] [X=%.*s]\n", max,
                     (int)(max - 32), in.p + 28);
        check_splits("a head of exactly max_head bytes, twice pipelined", &c, two.p, two.len, w.p,
                     20);
        s_free(&w);
        s_free(&in);
        s_free(&two);
        head_of(&in, max + 1);
        check_splits("a head of max_head + 1 bytes is 431", &c, in.p, in.len,
                     "ERR 431 request head too large\n", 20);
        // Without its end: max_head bytes are enough to know (no waiting for more).
        check_splits("max_head bytes without the head's end are 431 at once", &c, in.p, max,
                     "ERR 431 request head too large\n", 5);
        snprintf(want, sizeof want, "R%zu\n", max - 1);
        check_splits("max_head - 1 bytes without the head's end wait", &c, in.p, max - 1, want, 5);
        s_free(&in);
    }
    // The body: Content-Length max_body is read whole; max_body + 1 is 413 from the head alone.
    rx_codec c = rx_codec_http(256, 16);
    check_one("a body of exactly max_body bytes",  &c,
              "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 16\r\n\r\n0123456789abcdef",
              "REQ POST / 1.1 ka=1 cl=16 wire=%zu [Host=a] [Content-Length=16] body=0123456789abcdef\n");
    check_one("a body of max_body + 1 bytes is 413 (judged from the head)", &c,
              "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 17\r\n\r\n",
              "ERR 413 body too large\n");
    check_one("Content-Length 160 (max_body 16 and one digit more) is 413: every digit read", &c,
              "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 160\r\n\r\n",
              "ERR 413 body too large\n");
    check_one("a 200-digit Content-Length is 413, not an overflow", &c,
              "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: "
              "1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
              "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
              "\r\n\r\n", "ERR 413 body too large\n");
    check_one("Content-Length 18446744073709551617 (2^64 + 1) is 413", &c,
              "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551617\r\n\r\n",
              "ERR 413 body too large\n");
    // Header lines: RX_HTTP_MAX_HEADERS are read; one more is 431.
    for (int extra = 0; extra <= 1; extra++) {
        rx_codec big = rx_codec_http(8192, 16);
        struct str in = {0}, w = {0};
        s_add(&in, "GET / HTTP/1.1\r\nHost: a\r\n", 25);
        s_add(&w, "REQ GET / 1.1 ka=1 cl=0 wire=", 29);
        struct str hs = {0};
        s_add(&hs, " [Host=a]", 9);
        for (int i = 1; i < RX_HTTP_MAX_HEADERS + extra; i++) {
            s_printf(&in, "H%d: %d\r\n", i, i);
            s_printf(&hs, " [H%d=%d]", i, i);
        }
        s_add(&in, "\r\n", 2);
        s_printf(&w, "%zu%s\n", in.len, hs.p);
        if (extra) {
            s_free(&w);
            s_add(&w, "ERR 431 too many header lines\n", 30);
        }
        check_splits(extra ? "RX_HTTP_MAX_HEADERS + 1 header lines are 431"
                           : "RX_HTTP_MAX_HEADERS header lines are read, each in the view",
                     &big, in.p, in.len, w.p, 5);
        s_free(&in);
        s_free(&w);
        s_free(&hs);
    }
}

// 100-continue: a head whose body has not come yet gives a status-100 frame first.
static void test_continue(void)
{
    rx_codec c = rx_codec_http(256, 16);
    static const char head[] = "POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    struct str in = {0};
    s_add(&in, head, sizeof head - 1);
    s_add(&in, "hi", 2);
    struct str t = feed(&c, in.p, in.len, SPLIT_AT, sizeof head - 1, 0);
    const char *want =
        "CONT POST /up 1.1 ka=1 100c cl=2 wire=73 [Host=a] [Expect=100-continue] [Content-Length=2]\n"
        "REQ POST /up 1.1 ka=1 100c cl=2 wire=73 [Host=a] [Expect=100-continue] [Content-Length=2] body=hi\n";
    expect(strcmp(t.p, want) == 0, "100-continue: the head alone gives a 100 frame, then the whole request");
    if (strcmp(t.p, want) != 0)
        show_diff(t.p, want);
    s_free(&t);
    t = feed(&c, in.p, in.len, SPLIT_AT, sizeof head, 0);  // one body byte came with the head
    expect(strstr(t.p, "CONT") == NULL && strstr(t.p, "body=hi") != NULL,
          "100-continue: no 100 frame once a body byte has come");
    s_free(&t);
    s_free(&in);
}

// An emit that returns -1 stops the decoder at once: what it consumed covers that frame only.
static void test_stop(void)
{
    rx_codec c = rx_codec_http(256, 16);
    static const char two[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\n"
                              "Content-Length: 1\r\n\r\nxGET /3 HTTP/1.1\r\nHost: a\r\n\r\n";
    for (unsigned long long stop = 1; stop <= 3; stop++) {
        struct sink k = {.stop_at = stop};
        void *st = c.create(&c);
        ssize_t used = c.decode(&c, st, two, sizeof two - 1, sink_emit, &k);
        size_t want = stop == 1 ? 28 : stop == 2 ? 28 + 49 : sizeof two - 1;
        expect(used == (ssize_t)want && k.emits == stop,
              "an emit returning -1 on frame %llu: %zd bytes consumed (want %zu), %llu emits", stop,
              used, want, k.emits);
        c.destroy(st);
        s_free(&k.out);
    }
}

static void test_response(void)
{
    char out[256];
    size_t n = rx_http_response(out, sizeof out, 200, "Content-Type: text/plain\r\n", "hi\n", 3, 0);
    static const char w1[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
                             "Content-Type: text/plain\r\n\r\nhi\n";
    expect(n == sizeof w1 - 1 && memcmp(out, w1, n) == 0, "response: 200 with a body, keep-alive");
    n = rx_http_response(out, sizeof out, 404, NULL, "no\n", 3, RX_HTTP_CLOSE | RX_HTTP_NO_BODY);
    static const char w2[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\n";
    expect(n == sizeof w2 - 1 && memcmp(out, w2, n) == 0,
          "response: NO_BODY keeps the body's Content-Length and sends no body; CLOSE");
    n = rx_http_response(out, 10, 200, NULL, "hi\n", 3, 0);
    expect(n == sizeof w1 - 1 - 26, "response: too small a buffer returns the length needed (%zu)", n);
    static char big[5000], bigout[5200];
    memset(big, 'b', sizeof big);
    n = rx_http_response(bigout, sizeof bigout, 200, NULL, big, sizeof big, 0);
    static const char w3[] = "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nConnection: keep-alive\r\n\r\n";
    expect(n == sizeof w3 - 1 + sizeof big && memcmp(bigout, w3, sizeof w3 - 1) == 0 &&
              memcmp(bigout + sizeof w3 - 1, big, sizeof big) == 0,
          "response: a 5000-byte body whole after its head");
    expect(strcmp(rx_http_reason(413), "Content Too Large") == 0 &&
              strcmp(rx_http_reason(431), "Request Header Fields Too Large") == 0 &&
              strcmp(rx_http_reason(999), "Unknown") == 0,
          "reason phrases");
}

// Keeps a copy of the first request's view and of its frame (the view points into it).
static char capture_frame[8192];
static int capture_emit(void *ctx, const rx_frame *f)
{
    struct capture {
        rx_http_request *r;
        int n;
    } *cap = ctx;
    if (cap->n++ == 0 && f->len <= sizeof capture_frame) {
        memcpy(capture_frame, f->data, f->len);
        rx_frame copy = *f;
        copy.data = capture_frame;
        if (rx_http_view(&copy, cap->r) != 0)
            cap->n = 100;
    }
    return 0;
}

static void test_view(void)
{
    rx_frame f = {.data = "GET / HTTP/1.1\r\n\r\n", .len = 18};
    rx_http_request r;
    expect(rx_http_view(&f, &r) == -1, "rx_http_view refuses a frame of another codec");
    f.len = 0;
    expect(rx_http_view(&f, &r) == -1, "rx_http_view refuses an empty frame");
    // A real frame, then the lookup helpers.
    rx_codec c = rx_codec_http(256, 16);
    static const char in[] = "DELETE /k HTTP/1.1\r\nHOST: h\r\nx-Y:  v  \r\n\r\n";
    struct sink k = {0};
    void *st = c.create(&c);
    c.decode(&c, st, in, sizeof in - 1, sink_emit, &k);
    c.destroy(st);
    // The lookups, on a view kept by capture_emit (the sink only keeps a transcript).
    struct {
        int found_any_case, missing_null, first_of_two, method_exact;
    } pr = {0};
    static const char two[] = "GET / HTTP/1.1\r\nHost: h\r\nX: 1\r\nx: 2\r\n\r\n";
    st = c.create(&c);
    static rx_http_request got;
    struct capture {
        rx_http_request *r;
        int n;
    } cap = {&got, 0};
    c.decode(&c, st, two, sizeof two - 1, capture_emit, &cap);
    c.destroy(st);
    if (cap.n == 1) {
        size_t len;
        const char *v = rx_http_header_find(&got, "HOST", &len);
        pr.found_any_case = v != NULL && len == 1 && v[0] == 'h';
        v = rx_http_header_find(&got, "Hos", &len);
        pr.missing_null = v == NULL && len == 0;
        v = rx_http_header_find(&got, "x", &len);
        pr.first_of_two = v != NULL && len == 1 && v[0] == '1';
        pr.method_exact = rx_http_method_is(&got, "GET") && !rx_http_method_is(&got, "get") &&
                          !rx_http_method_is(&got, "GE") && !rx_http_method_is(&got, "GETS");
    }
    expect(cap.n == 1 && pr.found_any_case && pr.missing_null && pr.first_of_two && pr.method_exact,
          "rx_http_header_find (any case, the first of two, NULL for a prefix) and "
          "rx_http_method_is (exact, case-sensitive)");
    expect(k.out.p && strcmp(k.out.p, "REQ DELETE /k 1.1 ka=1 cl=0 wire=42 [HOST=h] [x-Y=v]\n") == 0,
          "a value loses its spaces: %s", k.out.p ? k.out.p : "");
    s_free(&k.out);
}

// Garbage and mutations: never a crash, never a frame after a refusal, the same transcript
// whatever the splits, and never stuck with a full buffer.
static void test_garbage(int rounds)
{
    rx_codec c = rx_codec_http(128, 32);
    static const char base[] =
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    static const char alphabet[] = "\r\n :\t0123456789GET HTTP/1.1Content-Length";
    int bad = 0;
    char buf[512];
    for (int r = 0; r < rounds && !bad; r++) {
        size_t len;
        if (r % 3 == 0) {  // pure noise
            len = (size_t)(rnd() % sizeof buf);
            for (size_t i = 0; i < len; i++)
                buf[i] = (char)rnd();
        } else {  // the base, with a few bytes changed, dropped or drawn from the alphabet
            len = sizeof base - 1;
            memcpy(buf, base, len);
            int m = 1 + (int)(rnd() % 4);
            for (int j = 0; j < m; j++) {
                size_t at = (size_t)(rnd() % len);
                if (rnd() % 2)
                    buf[at] = alphabet[rnd() % (sizeof alphabet - 1)];
                else
                    buf[at] = (char)rnd();
            }
        }
        struct str whole = feed(&c, buf, len, WHOLE, 0, 1);
        struct str one = feed(&c, buf, len, ONE, 0, 1);
        struct str rand = feed(&c, buf, len, RANDOM, 0, 1);
        const char *w = whole.p ? whole.p : "", *o = one.p ? one.p : "", *x = rand.p ? rand.p : "";
        if (strcmp(w, o) != 0 || strcmp(w, x) != 0 || strstr(w, "STUCK") ||
            strstr(w, "AFTER-REFUSAL") || strstr(w, "VIEW-FAILED") || strstr(w, "DECODE-RETURNED")) {
            printf("  round %d:\n", r);
            show_diff(strcmp(w, o) != 0 ? o : x, w);
            bad = 1;
        }
        s_free(&whole);
        s_free(&one);
        s_free(&rand);
    }
    expect(!bad, "%d garbage and mutated inputs: no crash, the same frames whatever the splits",
          rounds);
}

int main(void)
{
    const char *seed = getenv("HTTP_TEST_SEED");
    rng_state = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL);
    printf("seed %llu (HTTP_TEST_SEED=%llu repeats it)\n", (unsigned long long)rng_state,
           (unsigned long long)rng_state);
    test_vectors();
    test_refusals();
    test_limits();
    test_continue();
    test_stop();
    test_response();
    test_view();
    test_garbage(3000);
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
