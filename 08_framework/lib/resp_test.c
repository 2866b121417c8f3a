// resp_test.c: the RESP2 codec (codec_resp.c) against its promises (rx.h, "the RESP2 codec"),
// fed as an io thread feeds it: whole, at every split point, byte by byte, at random splits,
// every request's bytes and arguments compared; the limits at their boundary and one past;
// malformed input refused without a crash (run it under ASan); the reply builder's bytes.
//
// The driver, feed(), is the io thread in miniature: the unread bytes are moved to a fresh
// block before every decode call and the old one freed, so a decoder that keeps a pointer
// into its input between calls reads freed memory (ASan) or garbage (the transcript); one
// that forgets its place between calls loses or garbles the request a split cuts.
// Random splits are seeded: RESP_TEST_SEED=n repeats a run; the seed is printed.
#include "rx.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

// A transcript: "<argc>[<len>:<bytes>]...;" per request, "E" for a refusal (an RX_FRAME_REFUSED
// frame: nothing after it is decoded), "N" if decode ever returned -1 (the codec refuses by a
// frame, never so), then "R<n>" for the bytes left unconsumed at the end.
struct text {
    char *p;
    size_t len, cap;
};

static void put(struct text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->p = realloc(t->p, t->cap);
        if (t->p == NULL) {
            perror("realloc");
            exit(1);
        }
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void putf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct text *t, const char *fmt, ...)
{
    char b[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    put(t, b, (size_t)n);
}

struct sink {
    struct text *t;
    int stop_after;     // emit returns -1 on this frame (1-based; 0: never)
    int frames;
    const char *whole;  // the input, to check that a frame's bytes are a slice of it as sent
    size_t whole_len, bad_slices;
    size_t offset;      // where the current decode call's IN starts in WHOLE
    const char *in;
    int refused;        // an RX_FRAME_REFUSED frame came
};

static char last_reason[64];  // the last refusal's bytes

static size_t last_len;
static unsigned overconsumed;  // decode calls that consumed more than they were given  // the length of the transcript feed() returned last (it may hold NULs)

static int on_emit(void *ctx, const rx_frame *f)
{
    struct sink *k = ctx;
    k->frames++;
    if (f->flags & RX_FRAME_REFUSED) {
        // The reason, in redis's words: "Protocol error: ...", type 0, one whole frame.
        if (f->flags != (RX_FRAME_FIRST | RX_FRAME_LAST | RX_FRAME_REFUSED) || f->type != 0 ||
            f->total != f->len || f->len >= sizeof last_reason || f->len < 16 ||
            memcmp(f->data, "Protocol error: ", 16) != 0 || k->refused)
            k->bad_slices++;
        rx_resp_arg argv[1];
        if (rx_resp_args(f, argv, 1) != 0)
            k->bad_slices++;  // a refusal has no arguments
        size_t n = f->len < sizeof last_reason ? f->len : sizeof last_reason - 1;
        memcpy(last_reason, f->data, n);
        last_reason[n] = '\0';
        k->refused = 1;
        put(k->t, "E", 1);
        return k->frames == k->stop_after ? -1 : 0;
    }
    if (k->refused)
        k->bad_slices++;  // nothing is decoded after a refusal
    // A frame is the request's bytes as sent: the same bytes at the same place of the input.
    size_t at = k->offset + (size_t)(f->data - k->in);
    if (f->flags != (RX_FRAME_FIRST | RX_FRAME_LAST) || f->total != f->len ||
        at + f->len > k->whole_len || memcmp(k->whole + at, f->data, f->len) != 0)
        k->bad_slices++;
    rx_resp_arg argv[RX_RESP_MAX_ARGS];
    size_t n = rx_resp_args(f, argv, RX_RESP_MAX_ARGS);
    if (n != f->type)
        k->bad_slices++;
    putf(k->t, "%zu", n);
    for (size_t i = 0; i < n; i++) {
        putf(k->t, "[%zu:", argv[i].len);
        put(k->t, argv[i].p, argv[i].len);
        put(k->t, "]", 1);
    }
    put(k->t, ";", 1);
    return k->frames == k->stop_after ? -1 : 0;
}

// Feeds IN (LEN bytes) to a fresh decoder in reads of the sizes SIZES gives (NULL: one read),
// as conn.c does: read, decode once, keep what was not consumed. Returns the transcript.
static char *feed(const rx_codec *c, const char *in, size_t len, const size_t *sizes, size_t nsizes,
                  int stop_after, size_t *bad)
{
    struct text t = {0};
    void *st = c->create(c);
    char *held = NULL;  // the unread bytes, in a block of their own
    size_t hlen = 0, pos = 0, si = 0;
    struct sink k = {.t = &t, .stop_after = stop_after, .whole = in, .whole_len = len};
    int dead = 0;
    while (pos < len && !dead) {
        size_t n = sizes && si < nsizes ? sizes[si++] : len - pos;
        if (n > len - pos)
            n = len - pos;
        char *blk = malloc(hlen + n + 1);  // a new block every time: no stale pointer works
        if (blk == NULL)
            exit(1);
        if (hlen)
            memcpy(blk, held, hlen);
        memcpy(blk + hlen, in + pos, n);
        free(held);
        held = blk;
        k.offset = pos - hlen;
        k.in = blk;
        hlen += n;
        pos += n;
        ssize_t used = c->decode(c, st, blk, hlen, on_emit, &k);
        if (used < 0) {
            put(&t, "N", 1);
            dead = 1;
            break;
        }
        if (k.refused) {
            // A refusal consumes all it was given, and swallows whatever follows.
            static const char more[] = "*1\r\n$4\r\nPING\r\n";
            int frames = k.frames;
            ssize_t swallowed = c->decode(c, st, more, sizeof more - 1, on_emit, &k);
            if ((size_t)used != hlen || swallowed != (ssize_t)(sizeof more - 1) || k.frames != frames)
                k.bad_slices++;
            dead = 1;
            break;
        }
        if ((size_t)used > hlen) {
            overconsumed++;  // consumed more than it was given
            put(&t, "X", 1);
            dead = 1;
            break;
        }
        memmove(blk, blk + used, hlen - (size_t)used);
        hlen -= (size_t)used;
        if (k.frames == stop_after && stop_after > 0)
            break;
    }
    if (!dead)
        putf(&t, "R%zu", hlen + (len - pos));
    free(held);
    c->destroy(st);
    if (bad)
        *bad += k.bad_slices;
    last_len = t.len;
    return t.p ? t.p : calloc(1, 1);
}

static int feed_is(const rx_codec *c, const char *in, size_t len, const char *want, const char *what)
{
    size_t bad = 0;
    char *got = feed(c, in, len, NULL, 0, 0, &bad);
    int ok = strcmp(got, want) == 0 && bad == 0;
    expect(ok, "%s", what);
    if (!ok)
        printf("    want %s\n    got  %s (bad slices %zu)\n", want, got, bad);
    free(got);
    return ok;
}

// A pipelined stream of every kind of request, and the transcript it must give.
static const char STREAM[] =
    "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n"       // an array
    "PING\r\n"                                            // inline
    "*0\r\n"                                              // empty: never handed over
    "*2\r\n$4\r\nECHO\r\n$6\r\na\r\nb\r\n\r\n"           // CRLF inside a bulk
    "\r\n"                                                // a blank inline line
    "  GET \t key   \n"                                   // inline, spaces, tabs, bare \n
    "*-1\r\n"                                             // empty
    "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"                      // an empty bulk
    "*1\r\n$4\r\nP\0NG\r\n"                               // a NUL byte
    "ECHO $3\r\n"                                         // inline: '$' is a word like any
    "*3\r\n$3\r\nDEL\r\n$10\r\n0123456789\r\n$1\r\n*\r\n" // a 10-byte bulk, a "*" bulk
    "*1\r\n$4\r\nPI";                                     // a partial request: left over
static const char STREAM_WANT[] =
    "3[3:SET][1:k][5:hello];1[4:PING];2[4:ECHO][6:a\r\nb\r\n];2[3:GET][3:key];"
    "2[4:ECHO][0:];1[4:P\0NG];2[4:ECHO][2:$3];3[3:DEL][10:0123456789][1:*];R10";

static int transcript_eq(const char *a, const char *b, size_t n)
{
    return last_len == n && memcmp(a, b, n) == 0;
}

static void test_splits(const rx_codec *c, unsigned seed)
{
    size_t len = sizeof STREAM - 1, wlen = sizeof STREAM_WANT - 1, bad = 0;
    char *whole = feed(c, STREAM, len, NULL, 0, 0, &bad);
    int ok = transcript_eq(whole, STREAM_WANT, wlen) && bad == 0;
    expect(ok, "a pipelined stream in one read: %zu requests, each whole, in order, its bytes as sent", (size_t)8);
    if (!ok)
        printf("    got %s\n", whole);
    free(whole);

    // Every split point: two reads.
    int all = 1;
    for (size_t at = 1; at < len; at++) {
        size_t sizes[2] = {at, len - at};
        char *got = feed(c, STREAM, len, sizes, 2, 0, &bad);
        if (!transcript_eq(got, STREAM_WANT, wlen) || bad) {
            if (all)
                printf("    split at %zu: %s\n", at, got);
            all = 0;
        }
        free(got);
    }
    expect(all, "every split point of the stream (%zu) gives the same requests", len - 1);

    // Every pair of split points: three reads.
    all = 1;
    for (size_t a = 1; a < len && all; a++)
        for (size_t b = a + 1; b < len && all; b++) {
            size_t sizes[3] = {a, b - a, len - b};
            char *got = feed(c, STREAM, len, sizes, 3, 0, &bad);
            if (!transcript_eq(got, STREAM_WANT, wlen) || bad) {
                printf("    splits at %zu, %zu: %s\n", a, b, got);
                all = 0;
            }
            free(got);
        }
    expect(all, "every pair of split points gives the same requests");

    size_t ones[sizeof STREAM];
    for (size_t i = 0; i < len; i++)
        ones[i] = 1;
    char *got = feed(c, STREAM, len, ones, len, 0, &bad);
    expect(transcript_eq(got, STREAM_WANT, wlen) && !bad, "byte by byte gives the same requests");
    free(got);

    srand(seed);
    all = 1;
    for (int r = 0; r < 2000 && all; r++) {
        size_t sizes[sizeof STREAM], n = 0, left = len;
        while (left > 0) {
            size_t s = 1 + (size_t)rand() % 12;
            sizes[n++] = s < left ? s : left;
            left -= sizes[n - 1];
        }
        got = feed(c, STREAM, len, sizes, n, 0, &bad);
        if (!transcript_eq(got, STREAM_WANT, wlen) || bad) {
            printf("    random run %d: %s\n", r, got);
            all = 0;
        }
        free(got);
    }
    expect(all, "2000 random splits (seed %u) give the same requests", seed);
}

// EMIT returning -1 stops at once: consumed counts up to and including that request.
static void test_emit_stop(const rx_codec *c)
{
    const char in[] = "PING\r\n*1\r\n$4\r\nPING\r\nECHO x\r\n";
    struct text t = {0};
    struct sink k = {.t = &t, .stop_after = 2, .whole = in, .whole_len = sizeof in - 1, .in = in};
    void *st = c->create(c);
    ssize_t used = c->decode(c, st, in, sizeof in - 1, on_emit, &k);
    expect(used == 6 + 14 && k.frames == 2, "emit returning -1 stops after that request (consumed %zd, want 20)", used);
    // What follows is decoded from there by the next call, as the caller hands it back.
    k.stop_after = 0;
    k.offset = (size_t)used;
    k.in = in + used;
    used = c->decode(c, st, in + 20, sizeof in - 1 - 20, on_emit, &k);
    expect(used == 8 && t.p && strcmp(t.p, "1[4:PING];1[4:PING];2[4:ECHO][1:x];") == 0,
          "the next call goes on with the next request");
    c->destroy(st);
    free(t.p);
}

// A request of N arguments "a" as an array; its length in *LEN.
static char *array_of(size_t n, size_t *len)
{
    char *p = malloc(32 + n * 7);
    size_t o = (size_t)sprintf(p, "*%zu\r\n", n);
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(p + o, "$1\r\na\r\n");
    *len = o;
    return p;
}

static void test_limits(void)
{
    // Bytes: "*1\r\n$N\r\n<N>\r\n" is N + 11 bytes for N of 1 to 9 digits... built exactly.
    rx_codec c = rx_codec_resp(100);
    char req[256], want[256];
    // A request of exactly 100 bytes: *1\r\n (4) + $88\r\n (5) + 88 + \r\n (2) = 99; add one
    // digit: ECHO of 89 bytes is 4 + 5 + 89 + 2 = 100.
    int n = sprintf(req, "*1\r\n$89\r\n%089d\r\n", 0);
    sprintf(want, "1[89:%089d];R0", 0);
    feed_is(&c, req, (size_t)n, want, "a request of exactly max_request (100) bytes is taken");
    n = sprintf(req, "*1\r\n$90\r\n%090d\r\n", 0);
    feed_is(&c, req, (size_t)n, "E", "a request of max_request + 1 (101) bytes is a bad frame");
    // Judged at the "$<len>" line, before any byte of the bulk: the header alone is refused.
    feed_is(&c, "*1\r\n$90\r\n", 9, "E", "a bulk that cannot fit is refused at its length line");
    feed_is(&c, "*1\r\n$89\r\n", 9, "R9", "one that fits is waited for");
    // Two bulks: the limit counts the whole request, not one bulk.
    n = sprintf(req, "*2\r\n$40\r\n%040d\r\n$40\r\n%040d\r\n", 0, 0);  // 4 + 2 * 47 = 98
    feed_is(&c, req, (size_t)n, "2[40:0000000000000000000000000000000000000000][40:0000000000000000000000000000000000000000];R0", "two bulks within max_request");
    n = sprintf(req, "*2\r\n$40\r\n%040d\r\n$42\r\n%042d\r\n", 0, 0);  // 4 + 47 + 49 = 100
    feed_is(&c, req, (size_t)n, "2[40:0000000000000000000000000000000000000000][42:000000000000000000000000000000000000000000];R0", "two bulks of exactly max_request bytes in all");
    n = sprintf(req, "*2\r\n$40\r\n%040d\r\n$43\r\n%043d\r\n", 0, 0);  // 101
    feed_is(&c, req, (size_t)n, "E", "two bulks one byte past max_request in all");
    // Inline: the line with its "\n" is at most max_request bytes, however it is split.
    memset(req, 'a', 99);
    memcpy(req + 99, "\n", 1);
    sprintf(want, "1[99:%.*s];R0", 99, req);
    feed_is(&c, req, 100, want, "an inline line of exactly max_request bytes (its \\n included)");
    memset(req, 'a', 100);
    memcpy(req + 100, "\n", 1);
    feed_is(&c, req, 101, "E", "an inline line of max_request + 1 bytes");
    feed_is(&c, req, 100, "E", "max_request bytes without a \\n: refused before the \\n comes");
    feed_is(&c, req, 99, "R99", "99 bytes without a \\n: waited for");

    // Arguments: RX_RESP_MAX_ARGS taken, one more refused, judged at the "*<n>" line.
    rx_codec big = rx_codec_resp(1 << 20);
    size_t len;
    char *a = array_of(RX_RESP_MAX_ARGS, &len);
    size_t bad = 0;
    char *got = feed(&big, a, len, NULL, 0, 0, &bad);
    expect(strncmp(got, "1024[1:a]", 9) == 0 && strcmp(got + strlen(got) - 3, ";R0") == 0 && !bad,
          "an array of RX_RESP_MAX_ARGS (1024) arguments is taken, each one read");
    free(got);
    free(a);
    a = array_of(RX_RESP_MAX_ARGS + 1, &len);
    got = feed(&big, a, 8, NULL, 0, 0, &bad);  // "*1025\r\n" and one byte
    expect(strcmp(got, "E") == 0, "1025 arguments: refused at the count line (%s)", got);
    free(got);
    free(a);
    char *line = malloc(RX_RESP_MAX_ARGS * 2 + 4);
    for (size_t i = 0; i < RX_RESP_MAX_ARGS; i++)
        memcpy(line + 2 * i, "a ", 2);
    memcpy(line + 2 * RX_RESP_MAX_ARGS, "\r\n", 2);
    got = feed(&big, line, 2 * RX_RESP_MAX_ARGS + 2, NULL, 0, 0, &bad);
    expect(strncmp(got, "1024[1:a]", 9) == 0, "an inline line of 1024 words is taken");
    free(got);
    memcpy(line + 2 * RX_RESP_MAX_ARGS, "a\r\n", 3);
    got = feed(&big, line, 2 * RX_RESP_MAX_ARGS + 3, NULL, 0, 0, &bad);
    expect(strcmp(got, "E") == 0, "an inline line of 1025 words is a bad frame");
    free(got);
    free(line);

    // rx_resp_args with less room than arguments: the first MAX, never more.
    rx_frame f = {.data = "*3\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nz\r\n", .len = 25, .type = 3};
    rx_resp_arg two[2];
    size_t got_n = rx_resp_args(&f, two, 2);
    expect(got_n == 2 && two[1].len == 1 && two[1].p[0] == 'y', "rx_resp_args stores at most MAX arguments");
    rx_frame g = {.data = "SET  a\tb\r\n", .len = 10, .type = 3};
    got_n = rx_resp_args(&g, two, 2);
    expect(got_n == 2 && two[0].len == 3 && two[1].p[0] == 'a', "rx_resp_args on inline: at most MAX");
}

static void test_malformed(void)
{
    rx_codec c = rx_codec_resp(1 << 20);
    static const struct {
        const char *in, *want, *what;
    } cases[] = {
        {"*1\r\n$-1\r\n", "E", "a negative bulk length ($-1)"},
        {"*1\r\n$-5\r\nabc\r\n", "E", "a negative bulk length ($-5)"},
        {"*1\r\n$3\r\nabcd\r\n", "E", "a bulk not followed by CRLF (one byte too many)"},
        {"*1\r\n$3\r\nab\r\n\r\n", "E", "a bulk not followed by CRLF (one byte short)"},
        {"*1\r\n$3\r\nabc\n\r", "E", "a bulk followed by LF CR"},
        {"*1\r\n$3abc\r\n", "E", "a length line with bytes after the digits"},
        {"*1\r\n$04\r\nabcd\r\n", "E", "a length with a leading zero ($04)"},
        {"*1\r\n$+4\r\nabcd\r\n", "E", "a length with a '+' ($+4)"},
        {"*1\r\n$\r\n", "E", "an empty length ($)"},
        {"*1\r\n$4\n", "E", "a length line without its CR"},
        {"*1\r\n:4\r\n", "E", "an element that is not a bulk (expected '$')"},
        {"*1\r\n\x01", "E", "an element starting with a control byte"},
        {"*abc\r\n", "E", "a count that is not a number"},
        {"*01\r\n", "E", "a count with a leading zero"},
        {"*-0\r\n", "E", "a count of -0"},
        {"*99999999999999999999\r\n", "E", "a huge count (20 digits)"},
        {"*9223372036854775807\r\n", "E", "a count of LLONG_MAX"},
        {"*2147483648\r\n", "E", "a count of 2^31"},
        {"*1\r\n$99999999999999999999\r\n", "E", "a huge bulk length"},
        {"*1\r\n$9223372036854775807\r\n", "E", "a bulk length of LLONG_MAX"},
        {"*1\r\n$18446744073709551615\r\n", "E", "a bulk length of 2^64 - 1"},
        {"*11111111111111111111111", "E", "a count line too long without CRLF"},
        {"*1\r\n$11111111111111111111111", "E", "a length line too long without CRLF"},
        {"*-5\r\nPING\r\n", "1[4:PING];R0", "a negative count is an empty request (redis ignores it)"},
        {"*1\r\n$4\r\nPING\r\n*1\r\n$-1\r\n", "1[4:PING];E", "the good request before a bad one is handed over"},
        {"*", "R1", "a lone '*' is waited on"},
        {"*1\r\n$4\r\nPI", "R10", "a partial bulk is waited on, nothing consumed"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        feed_is(&c, cases[i].in, strlen(cases[i].in), cases[i].want, cases[i].what);

    // Random garbage never crashes, never consumes more than given (ASan watches the rest).
    unsigned seed = 12345;
    srand(seed);
    int ok = 1;
    for (int r = 0; r < 20000; r++) {
        char buf[64];
        size_t n = 1 + (size_t)rand() % sizeof buf;
        static const char alphabet[] = "*$\r\n0123456789-+ aX";
        for (size_t i = 0; i < n; i++)
            buf[i] = (rand() % 8 == 0) ? (char)rand() : alphabet[(size_t)rand() % (sizeof alphabet - 1)];
        size_t sizes[4] = {1 + (size_t)rand() % 8, 1 + (size_t)rand() % 8, 1 + (size_t)rand() % 8, 64};
        char *got = feed(&c, buf, n, sizes, 4, 0, NULL);
        free(got);
    }
    ok = overconsumed == 0;
    expect(ok, "20000 random malformed inputs: no crash, never more consumed than given");
}

// Each refusal's words, byte for byte what redis-server 7.0 sends after "-ERR " for the same
// input (checked against redis-server 7.0.15: `printf IN | nc -N 127.0.0.1 PORT`), except the
// last, which redis does not check.
static void test_reasons(void)
{
    rx_codec c = rx_codec_resp(64);
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"*1\r\n$abc\r\n", "Protocol error: invalid bulk length"},
        {"*abc\r\n", "Protocol error: invalid multibulk length"},
        {"*2\r\n$4\r\nECHO\r\n$-3\r\nabc\r\n", "Protocol error: invalid bulk length"},
        {"*1\r\n$01\r\nx\r\n", "Protocol error: invalid bulk length"},
        {"*2\r\n$4\r\nECHO\r\nx3\r\n", "Protocol error: expected '$', got 'x'"},
        {"*2\r\n$4\r\nECHO\r\n\x01", "Protocol error: expected '$', got '?'"},
        {"*1\r\n$60\r\n", "Protocol error: invalid bulk length"},
        {"*1025\r\n", "Protocol error: invalid multibulk length"},
        {"*11111111111111111111111", "Protocol error: too big mbulk count string"},
        {"*1\r\n$11111111111111111111111", "Protocol error: too big bulk count string"},
        {"ECHO aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "Protocol error: too big inline request"},
        {"*1\r\n$3\r\nabcd\r\n", "Protocol error: bulk not followed by CRLF"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        last_reason[0] = '\0';
        size_t bad = 0;
        char *got = feed(&c, cases[i].in, strlen(cases[i].in), NULL, 0, 0, &bad);
        expect(strcmp(got, "E") == 0 && bad == 0 && strcmp(last_reason, cases[i].want) == 0,
               "refused with \"%s\" (got %s \"%s\")", cases[i].want, got, last_reason);
        free(got);
    }
}

static void test_replies(void)
{
    rx_resp_reply r = {0};
    rx_resp_simple(&r, "OK");
    rx_resp_error(&r, "ERR x");
    rx_resp_int(&r, 0);
    rx_resp_int(&r, -42);
    rx_resp_int(&r, 9223372036854775807LL);
    rx_resp_int(&r, -9223372036854775807LL - 1);
    rx_resp_bulk(&r, "a\r\nb", 4);
    rx_resp_bulk(&r, "", 0);
    rx_resp_null(&r);
    rx_resp_array(&r, 2);
    rx_resp_array(&r, 0);
    rx_resp_errorf(&r, "ERR %s and %d", "bad\r\nline", 7);
    static const char want[] = "+OK\r\n-ERR x\r\n:0\r\n:-42\r\n:9223372036854775807\r\n"
                               ":-9223372036854775808\r\n$4\r\na\r\nb\r\n$0\r\n\r\n$-1\r\n*2\r\n*0\r\n"
                               "-ERR bad  line and 7\r\n";
    int ok = r.len == sizeof want - 1 && memcmp(r.data, want, r.len) == 0 && !r.failed;
    expect(ok, "the reply builder: every type's bytes (CR/LF in an error become spaces)");
    if (!ok)
        printf("    got %.*s\n", (int)r.len, r.data);
    // A large bulk grows the buffer; the bytes survive the growth.
    size_t big = 100000;
    char *p = malloc(big);
    memset(p, 'z', big);
    r.len = 0;
    rx_resp_simple(&r, "A");
    rx_resp_bulk(&r, p, big);
    ok = r.len == 4 + 9 + big + 2 && memcmp(r.data, "+A\r\n$100000\r\n", 13) == 0 &&
         r.data[13 + big - 1] == 'z' && memcmp(r.data + 13 + big, "\r\n", 2) == 0;
    expect(ok, "a 100000-byte bulk after a small reply: one buffer, every byte");
    free(p);
    rx_resp_reply_free(&r);
    expect(r.data == NULL && r.len == 0, "rx_resp_reply_free leaves an empty reply");
}

int main(void)
{
    unsigned seed = (unsigned)time(NULL);
    const char *env = getenv("RESP_TEST_SEED");
    if (env)
        seed = (unsigned)strtoul(env, NULL, 10);
    rx_log_set_level(RX_LOG_WARN);  // the codec logs every refusal at INFO: thousands here
    printf("seed %u (RESP_TEST_SEED=%u repeats this run)\n", seed, seed);
    rx_codec c = rx_codec_resp(1 << 20);
    expect(strcmp(c.name, "resp") == 0 && c.max_frame == 1 << 20 && c.chunk >= c.max_frame,
          "rx_codec_resp: named resp, max_frame the request limit, never streamed");
    test_splits(&c, seed);
    test_emit_stop(&c);
    test_limits();
    test_malformed();
    test_reasons();
    test_replies();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
