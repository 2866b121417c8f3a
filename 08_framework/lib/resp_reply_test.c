// resp_reply_test.c: the RESP2 reply codec (codec_resp_reply.c) against its promises (rx.h,
// "RESP2 replies"), fed as an io thread feeds it: whole, at every split point (one and two
// splits), byte by byte, every reply's bytes and values compared; the limits at their
// boundary and one past (bytes, nesting, a bulk or an array that cannot fit, judged at its
// line); malformed input refused without a crash (run it under ASan); emit stopping.
//
// The driver, feed(), moves the unread bytes to a fresh block before every decode call and
// frees the old one, so a decoder that keeps a pointer into its input between calls reads
// freed memory (ASan) or garbage (the transcript).
#include "rx.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

// A transcript: per frame "<type><len>{values}" with each value "<depth><type>[...]"; "E" when
// decode returned -1; "R<n>" for the bytes left unconsumed at the end.
struct text {
    char p[65536];
    size_t len;
};

static void putf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->p + t->len, sizeof t->p - t->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len += (size_t)n < sizeof t->p - t->len ? (size_t)n : sizeof t->p - t->len - 1;
}

struct sink {
    struct text *t;
    int stop_after;  // emit returns -1 at this frame (1-based); 0: never
    int frames;
};

static int on_frame(void *ctx, const rx_frame *f)
{
    struct sink *k = ctx;
    struct text *t = k->t;
    rx_resp_value v[64];
    size_t n = rx_resp_values(f, v, 64);
    putf(t, "%c%zu{", (char)f->type, f->len);
    for (size_t i = 0; i < n && i < 64; i++) {
        putf(t, "%u%c", v[i].depth, v[i].type);
        if (v[i].null)
            putf(t, "null");
        else if (v[i].type == '+' || v[i].type == '-' || v[i].type == '$')
            putf(t, "[%.*s]", (int)v[i].len, v[i].p);
        else
            putf(t, "%lld", v[i].integer);
        putf(t, " ");
    }
    putf(t, "}");
    if (f->flags != (RX_FRAME_FIRST | RX_FRAME_LAST) || f->total != f->len)
        putf(t, "!flags");
    k->frames++;
    return k->stop_after && k->frames == k->stop_after ? -1 : 0;
}

// Feeds IN[0, LEN) cut at the CUTS offsets (increasing), as an io thread would: after each
// read the unconsumed bytes plus the new ones go to a fresh block. The transcript into T.
static void feed(const rx_codec *c, const char *in, size_t len, const size_t *cuts, size_t ncuts,
                 int stop_after, struct text *t)
{
    void *st = c->create ? c->create(c) : NULL;
    struct sink k = {.t = t, .stop_after = stop_after};
    char *buf = NULL;
    size_t have = 0, at = 0;
    t->len = 0;
    t->p[0] = '\0';
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        char *nb = malloc(have + (to - at) + 1);
        if (!nb)
            abort();
        if (have)
            memcpy(nb, buf, have);
        memcpy(nb + have, in + at, to - at);
        free(buf);
        buf = nb;
        have += to - at;
        at = to;
        ssize_t r = c->decode(c, st, buf, have, on_frame, &k);
        if (r < 0) {
            putf(t, "E");
            free(buf);
            if (c->destroy)
                c->destroy(st);
            return;
        }
        memmove(buf, buf + r, have - (size_t)r);
        have -= (size_t)r;
        if (stop_after && k.frames >= stop_after)
            break;
    }
    putf(t, "R%zu", have);
    free(buf);
    if (c->destroy)
        c->destroy(st);
}

static const char sample[] =
    "+OK\r\n"
    "-ERR wrong type\r\n"
    ":0\r\n"
    ":-9223372036854775808\r\n"
    "$5\r\nhe\r\nl\r\n"
    "$0\r\n\r\n"
    "$-1\r\n"
    "*-1\r\n"
    "*0\r\n"
    "*3\r\n:1\r\n*2\r\n$1\r\na\r\n+\r\n$-1\r\n"
    ":9223372036854775807\r\n";

static const char sample_want[] =
    "+5{0+[OK] }"
    "-17{0-[ERR wrong type] }"
    ":4{0:0 }"
    ":23{0:-9223372036854775808 }"
    "$11{0$[he\r\nl] }"
    "$6{0$[] }"
    "$5{0$null }"
    "*5{0*null }"
    "*4{0*0 }"
    "*27{0*3 1:1 1*2 2$[a] 2+[] 1$null }"
    ":22{0:9223372036854775807 }"
    "R0";

static void test_splits(void)
{
    rx_codec c = rx_codec_resp_reply(1024);
    struct text t;
    size_t len = sizeof sample - 1;
    feed(&c, sample, len, NULL, 0, 0, &t);
    expect(strcmp(t.p, sample_want) == 0, "whole: %s", t.p);
    int bad = 0;
    for (size_t i = 0; i <= len; i++) {
        size_t cuts[1] = {i};
        feed(&c, sample, len, cuts, 1, 0, &t);
        if (strcmp(t.p, sample_want) != 0 && bad++ < 3)
            expect(0, "split at %zu: %s", i, t.p);
    }
    expect(bad == 0, "every single split point (%zu)", len + 1);
    bad = 0;
    for (size_t i = 0; i <= len; i++)
        for (size_t j = i; j <= len; j++) {
            size_t cuts[2] = {i, j};
            feed(&c, sample, len, cuts, 2, 0, &t);
            if (strcmp(t.p, sample_want) != 0 && bad++ < 3)
                expect(0, "splits at %zu, %zu: %s", i, j, t.p);
        }
    expect(bad == 0, "every pair of split points");
    size_t cuts[sizeof sample];
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    feed(&c, sample, len, cuts, len - 1, 0, &t);
    expect(strcmp(t.p, sample_want) == 0, "byte by byte: %s", t.p);
    // A partial reply is kept whole (nothing consumed) until its last byte.
    feed(&c, "*2\r\n:1\r\n$3\r\nab", 15, NULL, 0, 0, &t);
    expect(strcmp(t.p, "R15") == 0, "partial reply unconsumed: %s", t.p);
}

// Emit returning -1 stops the decoder after that frame: what it consumed ends there.
static void test_emit_stop(void)
{
    rx_codec c = rx_codec_resp_reply(1024);
    struct text t;
    feed(&c, "+A\r\n:2\r\n+C\r\n", 12, NULL, 0, 1, &t);
    expect(strcmp(t.p, "+4{0+[A] }R8") == 0, "emit stop after the 1st: %s", t.p);
}

static void expect_feed(size_t max, const char *in, size_t len, const char *want, const char *name)
{
    rx_codec c = rx_codec_resp_reply(max);
    struct text t;
    feed(&c, in, len, NULL, 0, 0, &t);
    expect(strcmp(t.p, want) == 0, "%s: got %s, want %s", name, t.p, want);
}

static void test_limits(void)
{
    // Bytes: a reply of exactly MAX bytes passes, one more is refused.
    expect_feed(10, "+12345678\r\n", 11, "E", "status line of max+1 bytes");
    expect_feed(11, "+12345678\r\n", 11, "+11{0+[12345678] }R0", "status line of max bytes");
    expect_feed(10, "$3\r\nabc\r\n", 9, "$9{0$[abc] }R0", "bulk within max");
    expect_feed(8, "$3\r\nabc\r\n", 4, "E", "bulk that cannot fit: refused at its line");
    expect_feed(9, "$3\r\nabc\r\n", 9, "$9{0$[abc] }R0", "bulk of exactly max");
    expect_feed(9, "*2\r\n:1\r\n:2\r\n", 12, "E", "array over max");
    expect_feed(12, "*2\r\n:1\r\n:2\r\n", 12, "*12{0*2 1:1 1:2 }R0", "array of exactly max");
    expect_feed(12, "*3\r\n", 4, "E", "array of 3 cannot fit in 12 bytes: refused at its line");
    expect_feed(13, "*3\r\n", 4, "R4", "array of 3 can fit in 13 bytes: waits");
    expect_feed(1024, "$9999999999999999999\r\n", 22, "E", "huge bulk length");
    expect_feed(1u << 20, "*9223372036854775807\r\n", 22, "E", "huge array count");
    // Nesting: RX_RESP_REPLY_MAX_DEPTH arrays open passes, one more is refused.
    char deep[512];
    size_t n = 0;
    for (int i = 0; i < RX_RESP_REPLY_MAX_DEPTH; i++)
        n += (size_t)snprintf(deep + n, sizeof deep - n, "*1\r\n");
    n += (size_t)snprintf(deep + n, sizeof deep - n, ":7\r\n");
    rx_codec c = rx_codec_resp_reply(1024);
    struct text t;
    feed(&c, deep, n, NULL, 0, 0, &t);
    char want[32];
    snprintf(want, sizeof want, "*%zu{", n);
    expect(strncmp(t.p, want, strlen(want)) == 0 && strstr(t.p, "}R0") != NULL,
          "%d arrays deep: accepted: %s", RX_RESP_REPLY_MAX_DEPTH, t.p);
    rx_resp_value v[40];
    rx_frame f = {.data = deep, .len = n};
    size_t nv = rx_resp_values(&f, v, 40);
    expect(nv == RX_RESP_REPLY_MAX_DEPTH + 1 && v[nv - 1].type == ':' && v[nv - 1].integer == 7 &&
              v[nv - 1].depth == RX_RESP_REPLY_MAX_DEPTH,
          "values of the deepest reply: %zu", nv);
    char deeper[512] = "*1\r\n";
    memcpy(deeper + 4, deep, n);
    feed(&c, deeper, n + 4, NULL, 0, 0, &t);
    expect(strcmp(t.p, "E") == 0, "%d arrays deep: refused: %s", RX_RESP_REPLY_MAX_DEPTH + 1, t.p);
    // A number line: 20 characters pass, a longer one is refused before its end.
    expect_feed(1024, ":-9223372036854775808\r\n", 23, ":23{0:-9223372036854775808 }R0", "longest number");
    expect_feed(1024, ":0000000000000000000000", 23, "E", "number line of 23 bytes, no CRLF: too long");
    expect_feed(1024, ":000000000000000000000", 22, "R22", "number line of 22 bytes, no CRLF: waits");
    expect_feed(1024, ":9223372036854775808\r\n", 22, "E", "integer overflow");
}

static void test_malformed(void)
{
    static const struct {
        const char *in, *name;
    } bad[] = {
        {"%1\r\n", "RESP3 map type"},
        {"_\r\n", "RESP3 null type"},
        {"OK\r\n", "no type byte"},
        {"+OK\n", "LF without CR"},
        {"+O\rK\r\n", "CR inside a status line"},
        {":12a\r\n", "bad integer"},
        {":\r\n", "empty integer"},
        {":01\r\n", "leading zero"},
        {":-0\r\n", "minus zero"},
        {":+1\r\n", "plus sign"},
        {"$3\r\nabcX\r\n", "bulk not followed by CRLF"},
        {"$3\r\nabc\n\r", "bulk followed by LF CR"},
        {"$3\r\nabcX\n", "bulk followed by a byte and LF"},
        {"$3\r\nabc\n\n", "bulk followed by LF LF"},
        {"$-2\r\n", "bulk length -2"},
        {"*-2\r\n", "array count -2"},
        {"$01\r\nx\r\n", "bulk length with a leading zero"},
        {"*1\r\n?\r\n", "bad element"},
        {"\r\n", "empty line"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_feed(1024, bad[i].in, strlen(bad[i].in), "E", bad[i].name);
    // Good replies before a bad one are handed over first.
    expect_feed(1024, "+OK\r\n!", 6, "+5{0+[OK] }E", "good then bad");
}

int main(void)
{
    rx_log_set_level(RX_LOG_WARN);  // the refusals' info lines would drown the output
    test_splits();
    test_emit_stop();
    test_limits();
    test_malformed();
    printf("resp_reply_test: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
