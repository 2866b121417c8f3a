// codec_test.c: the four codecs of rx.h (codec.c) against their promises, fed as an io thread
// feeds them: whole, byte by byte and at random split points, every frame's bytes compared.
//
// The driver, feed(), is the io thread in miniature: an input buffer of fixed capacity (what
// the connection may hold), a read of some size into it, one decode call per read, then the
// consumed bytes dropped. Everything a codec emits is checked as it arrives (flags, total,
// type, pieces in order) and reassembled into a transcript of whole frames:
//     "F<type>:<len>:<bytes>\n" per frame, then "E\n" (decode returned -1), or at the end of
//     the input "R<n>\n" (n bytes left unconsumed) after "P<n>\n" when a streamed frame is
//     half delivered; "S\n" when the buffer is full and the codec consumes nothing (stuck).
// A transcript is compared with one written by hand or by a plain reference parser.
// Honest by construction: in "moving" mode every read moves the unread bytes to a new block
// and frees the old one, so a codec that keeps a pointer into IN between calls reads freed
// memory (ASan) or garbage (the transcript); a codec that forgets its state between calls
// loses the frame a split cuts.
// Random splits are seeded: CODEC_TEST_SEED=n repeats a run; the seed is printed.
#include "buffer.h"
#include "rx.h"
#include "rxbuf.h"
#include "test_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "codec_test: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

// splitmix64: small, seedable, good enough to pick split points.
static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// ---------------------------------------------------------------- growable strings

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
        char *q = realloc(s->p, cap);
        if (q == NULL) {
            fprintf(stderr, "codec_test: out of memory\n");
            exit(2);
        }
        s->p = q;
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
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    s_add(s, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void s_free(struct str *s)
{
    free(s->p);
    *s = (struct str){0};
}

static int s_eq(const struct str *a, const struct str *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

// Prints where two transcripts first differ, and the bytes around it (escaped).
static void show_diff(const char *what, const struct str *got, const struct str *want)
{
    size_t i = 0;
    while (i < got->len && i < want->len && got->p[i] == want->p[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    printf("  %s: transcripts differ at byte %zu (got %zu bytes, want %zu)\n", what, i, got->len,
           want->len);
    const struct str *v[2] = {got, want};
    for (int k = 0; k < 2; k++) {
        printf("    %s: ", k ? "want" : "got ");
        for (size_t j = from; j < v[k]->len && j < i + 40; j++) {
            unsigned char c = (unsigned char)v[k]->p[j];
            if (c >= 32 && c < 127 && c != '\\')
                putchar(c);
            else
                printf("\\x%02x", c);
        }
        printf("\n");
    }
}

// Hand-written frames (never through codec.c), so an encoder and a decoder that agree on a
// wrong format are still caught.
static void put_be32(struct str *s, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    s_add(s, b, 4);
}

// The byte at offset I of a generated body: shows a byte out of place.
static char byte_at(uint64_t i) { return (char)(i * 131 + (i >> 13)); }

// Appends a frame's transcript line, and fills BODY (LEN bytes, from SEED).
static void want_frame(struct str *w, uint16_t type, const char *body, size_t len)
{
    s_printf(w, "F%u:%zu:", type, len);
    s_add(w, body, len);
    s_add(w, "\n", 1);
}

static char *gen_body(size_t len, uint64_t seed)
{
    char *b = xmalloc(len);
    for (size_t i = 0; i < len; i++)
        b[i] = byte_at(seed * 7919 + i);
    return b;
}

// A len frame by hand, and its transcript line.
static void add_len(struct str *s, struct str *w, size_t len, uint64_t seed)
{
    char *b = gen_body(len, seed);
    put_be32(s, (uint32_t)len);
    s_add(s, b, len);
    if (w)
        want_frame(w, 0, b, len);
    free(b);
}

static void add_hdr(struct str *s, struct str *w, uint16_t type, size_t len, uint64_t seed)
{
    char *b = gen_body(len, seed);
    put_be32(s, (uint32_t)len);
    unsigned char t[2] = {(unsigned char)(type >> 8), (unsigned char)type};
    s_add(s, t, 2);
    s_add(s, b, len);
    if (w)
        want_frame(w, type, b, len);
    free(b);
}

// ---------------------------------------------------------------- the sink (emit)

struct sink {
    struct str out;  // the transcript
    struct str cur;  // the frame being reassembled from pieces
    int in_frame;
    uint64_t total;
    uint16_t type;
    unsigned long long emits, pieces;
    unsigned long long stop_at;  // EMIT returns -1 on this emit (1-based; 0: never)
    int bad;                     // the first protocol violation seen
    char why[160];
};

static void sink_fail(struct sink *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sink_fail(struct sink *k, const char *fmt, ...)
{
    if (k->bad++)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->why, sizeof k->why, fmt, ap);
    va_end(ap);
}

static int sink_emit(void *ctx, const rx_frame *f)
{
    struct sink *k = ctx;
    k->emits++;
    if (f->len > 0 && f->data == NULL)
        sink_fail(k, "emit %llu: NULL data", k->emits);
    if (f->flags & ~(unsigned)(RX_FRAME_FIRST | RX_FRAME_LAST))
        sink_fail(k, "emit %llu: unknown flags %#x", k->emits, f->flags);
    if (f->flags & RX_FRAME_FIRST) {
        if (k->in_frame)
            sink_fail(k, "emit %llu: FIRST inside a frame (%zu of %llu bytes had come)",
                      k->emits, k->cur.len, (unsigned long long)k->total);
        k->in_frame = 1;
        k->cur.len = 0;
        k->total = f->total;
        k->type = f->type;
    } else {
        if (!k->in_frame)
            sink_fail(k, "emit %llu: a piece without FIRST before it", k->emits);
        if (f->total != k->total || f->type != k->type)
            sink_fail(k, "emit %llu: total/type changed in a frame (%llu/%u, was %llu/%u)",
                      k->emits, (unsigned long long)f->total, f->type,
                      (unsigned long long)k->total, k->type);
    }
    if (f->len == 0 && f->flags != (RX_FRAME_FIRST | RX_FRAME_LAST))
        sink_fail(k, "emit %llu: an empty piece", k->emits);
    if (f->flags != (RX_FRAME_FIRST | RX_FRAME_LAST))
        k->pieces++;
    s_add(&k->cur, f->data, f->len);
    if (k->cur.len > k->total)
        sink_fail(k, "emit %llu: %zu bytes of a frame of %llu", k->emits, k->cur.len,
                  (unsigned long long)k->total);
    if (f->flags & RX_FRAME_LAST) {
        if (k->cur.len != k->total)
            sink_fail(k, "emit %llu: LAST after %zu bytes of %llu", k->emits, k->cur.len,
                      (unsigned long long)k->total);
        want_frame(&k->out, k->type, k->cur.p, k->cur.len);
        k->in_frame = 0;
        k->cur.len = 0;
    }
    return k->stop_at && k->emits == k->stop_at ? -1 : 0;
}

static void sink_free(struct sink *k)
{
    s_free(&k->out);
    s_free(&k->cur);
}

// ---------------------------------------------------------------- the driver

// How feed() sizes its reads: as much as the buffer holds, one byte, or random sizes (mostly
// small, some larger than the buffer: then as much as it holds).
enum split { WHOLE, BYTES, RANDOM };

struct feed_stats {
    size_t high;  // most bytes the buffer ever held
    unsigned long long calls;
};

// Feeds S[0..N) to a fresh decoder of C, reads sized by HOW, through a buffer of CAP bytes
// (MOVING: the unread bytes move to a new block on every read). The transcript goes to K.
static void feed(const rx_codec *c, const char *s, size_t n, enum split how, size_t cap,
                 int moving, struct sink *k, struct feed_stats *fs)
{
    void *st = c->create ? c->create(c) : NULL;
    if (c->create && st == NULL) {
        fprintf(stderr, "codec_test: create failed\n");
        exit(2);
    }
    char *buf = xmalloc(cap);
    size_t len = 0, pos = 0;
    int ended = 0;  // by -1, or stuck: no "R" line
    struct feed_stats local = {0};
    if (fs == NULL)
        fs = &local;
    // Bounded: each turn reads at least one byte, or ends the loop.
    while (pos < n) {
        size_t want = how == WHOLE ? n : how == BYTES ? 1 : 1 + (size_t)(rnd() % (rnd() % 4 ? 7 : 3 * cap));
        if (want > cap - len)
            want = cap - len;
        if (want > n - pos)
            want = n - pos;
        if (want == 0) {
            s_add(&k->out, "S\n", 2);  // full, and the codec took nothing: it waits for ever
            ended = 1;
            break;
        }
        if (moving) {
            char *nb = xmalloc(cap);
            memcpy(nb, buf, len);
            memset(buf, 0xA5, cap);
            free(buf);
            buf = nb;
        }
        memcpy(buf + len, s + pos, want);
        len += want;
        pos += want;
        if (len > fs->high)
            fs->high = len;
        fs->calls++;
        ssize_t r = c->decode(c, st, buf, len, sink_emit, k);
        if (r < 0) {
            s_add(&k->out, "E\n", 2);
            ended = 1;
            break;
        }
        if ((size_t)r > len) {
            sink_fail(k, "decode consumed %zd of %zu bytes", r, len);
            ended = 1;
            break;
        }
        memmove(buf, buf + r, len - (size_t)r);
        len -= (size_t)r;
    }
    if (!ended) {
        if (k->in_frame)
            s_printf(&k->out, "P%zu\n", k->cur.len);
        s_printf(&k->out, "R%zu\n", len);
    }
    free(buf);
    if (c->destroy)
        c->destroy(st);
}

// Feeds S whole, byte by byte, and RUNS times at random splits (half of them moving the
// buffer), each against the transcript WANT. Returns 1 when all agreed.
static int check_splits(const char *what, const rx_codec *c, const struct str *s,
                        const struct str *want, size_t cap, int runs)
{
    int ok = 1;
    for (int run = -2; run < runs && ok; run++) {
        enum split how = run == -2 ? WHOLE : run == -1 ? BYTES : RANDOM;
        struct sink k = {0};
        feed(c, s->p, s->len, how, cap, run >= 0 && run % 2, &k, NULL);
        if (k.bad) {
            printf("  %s (%s): %s\n", what, how == WHOLE ? "whole" : how == BYTES ? "bytes" : "random", k.why);
            ok = 0;
        } else if (!s_eq(&k.out, want)) {
            show_diff(what, &k.out, want);
            ok = 0;
        }
        sink_free(&k);
    }
    expect(ok, "%s: whole, byte by byte, and %d random splits agree (cap %zu)", what, runs, cap);
    return ok;
}

// One decode call on IN with state ST, EMIT stopping at emit STOP_AT (0: never).
static ssize_t decode_once(const rx_codec *c, void *st, const char *in, size_t len,
                           unsigned long long stop_at, struct sink *k)
{
    k->stop_at = stop_at;
    return c->decode(c, st, in, len, sink_emit, k);
}

// A second emit that records each call's flags, length and total, and the bytes in order.
struct rec_entry {
    unsigned flags;
    size_t len;
    uint64_t total;
    uint16_t type;
};

struct recorder {
    struct rec_entry v[16];
    size_t n;
    char bytes[512];
    size_t nbytes;
};

static int record_emit(void *ctx, const rx_frame *f)
{
    struct recorder *r = ctx;
    if (r->n < 16)
        r->v[r->n] = (struct rec_entry){f->flags, f->len, f->total, f->type};
    r->n++;
    size_t k = f->len < sizeof r->bytes - r->nbytes ? f->len : sizeof r->bytes - r->nbytes;
    memcpy(r->bytes + r->nbytes, f->data, k);
    r->nbytes += k;
    return 0;
}

// ---------------------------------------------------------------- line

#define LMAX 16  // the line limit of the vectors

// The reference: split at every "\n", the obvious way, the whole stream at once.
static void line_reference(const char *s, size_t n, size_t max, struct str *w)
{
    size_t i = 0;
    while (i < n) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t flen = (nl ? (size_t)(nl - s) : n) - i;
        if (flen > max) {
            s_add(w, "E\n", 2);
            return;
        }
        if (nl == NULL) {
            s_printf(w, "R%zu\n", flen);
            return;
        }
        want_frame(w, 0, s + i, flen);
        i += flen + 1;
    }
    s_add(w, "R0\n", 3);
}

static void test_line(void)
{
    rx_codec c = rx_codec_line(LMAX);
    struct str s = {0}, w = {0};

    // Every frame shape once, back to back: "\r" is data, NUL is data, exactly LMAX is fine.
    static const char vec[] = "hello\n\ncrlf\r\n\r\na\rb\n0123456789abcdef\nnul\0byte\n"
                              "0123456789abcde\r\nlast";
    s_add(&s, vec, sizeof vec - 1);
    want_frame(&w, 0, "hello", 5);
    want_frame(&w, 0, "", 0);
    want_frame(&w, 0, "crlf\r", 5);
    want_frame(&w, 0, "\r", 1);
    want_frame(&w, 0, "a\rb", 3);
    want_frame(&w, 0, "0123456789abcdef", 16);
    want_frame(&w, 0, "nul\0byte", 8);
    want_frame(&w, 0, "0123456789abcde\r", 16);
    s_add(&w, "R4\n", 3);
    struct str ref = {0};
    line_reference(s.p, s.len, LMAX, &ref);
    expect(s_eq(&ref, &w), "line: the reference splitter agrees with the hand-written transcript");
    s_free(&ref);
    check_splits("line vectors (8 frames, a line of exactly max, a \\r kept)", &c, &s, &w,
                 LMAX + 1, 300);

    // The limit, at it and one past, with and without its "\n" yet.
    struct { const char *in, *want, *what; } lim[] = {
        {"ok\n0123456789abcdef\nz\n", "F0:2:ok\nF0:16:0123456789abcdef\nF0:1:z\nR0\n",
         "a line of exactly max, then \\n: accepted"},
        {"ok\n0123456789abcdefg\nz\n", "F0:2:ok\nE\n", "max + 1 bytes then \\n: bad"},
        {"ok\n0123456789abcdefg", "F0:2:ok\nE\n",
         "max + 1 bytes, no \\n yet: bad at once, not waited for"},
        {"ok\n0123456789abcdef", "F0:2:ok\nR16\n", "max bytes, no \\n yet: waited for"},
        {"ok\n0123456789abcdef\r\n", "F0:2:ok\nE\n", "max bytes and \\r\\n: the \\r counts, bad"},
    };
    for (size_t i = 0; i < sizeof lim / sizeof *lim; i++) {
        struct str in = {0}, want = {0};
        s_add(&in, lim[i].in, strlen(lim[i].in));
        s_add(&want, lim[i].want, strlen(lim[i].want));
        char what[160];
        snprintf(what, sizeof what, "line limit %d: %s", LMAX, lim[i].what);
        // The tightest buffer an io thread may give a line codec: max + 1 bytes.
        check_splits(what, &c, &in, &want, LMAX + 1, 100);
        s_free(&in);
        s_free(&want);
    }

    // Judged from exactly max + 1 bytes: -1 with nothing emitted; max bytes: 0, nothing.
    void *st = c.create(&c);
    struct sink k = {0};
    ssize_t r1 = decode_once(&c, st, "0123456789abcdefg", LMAX + 1, 0, &k);
    c.destroy(st);
    st = c.create(&c);
    ssize_t r2 = decode_once(&c, st, "0123456789abcdef", LMAX, 0, &k);
    c.destroy(st);
    expect(r1 == -1 && r2 == 0 && k.emits == 0,
          "line: max + 1 bytes without \\n -> -1 (%zd), max bytes -> 0 consumed (%zd), %llu "
          "frames emitted (want 0)", r1, r2, k.emits);
    sink_free(&k);

    // Random bytes ("\n" one byte in 8) against the reference, max 16 and 200, buffer max+1.
    uint64_t seed = rng_state;
    int ok = 1;
    for (int run = 0; run < 300 && ok; run++) {
        size_t max = run % 2 ? LMAX : 200, n = 1 + (size_t)(rnd() % 3000);
        rx_codec cr = rx_codec_line(max);
        char *b = xmalloc(n);
        for (size_t i = 0; i < n; i++) {
            uint64_t x = rnd();
            b[i] = x % 8 == 0 ? '\n' : (char)(x >> 8);
        }
        struct str want = {0};
        line_reference(b, n, max, &want);
        struct sink rk = {0};
        feed(&cr, b, n, RANDOM, max + 1, run % 3 == 0, &rk, NULL);
        if (rk.bad || !s_eq(&rk.out, &want)) {
            printf("  run %d: %s\n", run, rk.bad ? rk.why : "");
            if (!rk.bad)
                show_diff("line random", &rk.out, &want);
            ok = 0;
        }
        sink_free(&rk);
        s_free(&want);
        free(b);
    }
    expect(ok, "line: 300 streams of random bytes at random splits agree with the reference "
              "(stream seed %#llx)", (unsigned long long)seed);
    s_free(&s);
    s_free(&w);
}

// ---------------------------------------------------------------- len

#define NMAX 300  // the len vectors' limit
#define CHUNK 16  // and their chunk: longer bodies stream

// The reference: the whole stream at once (STREAMED frames half there show as "P").
static void len_reference(const char *s, size_t n, size_t max, size_t chunk, struct str *w)
{
    size_t i = 0;
    for (;;) {
        size_t left = n - i;
        if (left < 4) {
            s_printf(w, "R%zu\n", left);
            return;
        }
        const unsigned char *u = (const unsigned char *)s + i;
        uint32_t len = (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
        if (len > max) {
            s_add(w, "E\n", 2);
            return;
        }
        if (left - 4 < len) {
            if (len <= chunk)
                s_printf(w, "R%zu\n", left);
            else if (left > 4)
                s_printf(w, "P%zu\nR0\n", left - 4);
            else
                s_add(w, "R0\n", 3);
            return;
        }
        want_frame(w, 0, s + i + 4, len);
        i += 4 + len;
    }
}

static void test_len(void)
{
    rx_codec c = rx_codec_len(NMAX, CHUNK);
    struct str s = {0}, w = {0};

    // Empty, small, exactly chunk (whole), chunk + 1 (streamed), 256 (its header 00 00 01 00:
    // read little-endian it is 65536, over the limit), exactly max, then a frame cut short.
    size_t lens[] = {0, 1, 5, CHUNK, CHUNK + 1, 2, 256, NMAX, 3};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
        add_len(&s, &w, lens[i], i);
    put_be32(&s, 10);
    s_add(&s, "part", 4);
    s_add(&w, "R8\n", 3);
    struct str ref = {0};
    len_reference(s.p, s.len, NMAX, CHUNK, &ref);
    expect(s_eq(&ref, &w), "len: the reference parser agrees with the hand-written transcript");
    s_free(&ref);
    check_splits("len vectors (empty, chunk, chunk + 1 streamed, 256, max)", &c, &s, &w,
                 CHUNK + 4, 300);

    // A streamed frame cut short: what came is emitted (P), nothing waits in the buffer.
    s.len = w.len = 0;
    add_len(&s, &w, 7, 50);
    add_len(&s, NULL, 100, 51);
    s.len -= 40;
    s_add(&w, "P60\nR0\n", 7);
    check_splits("len: a streamed frame cut short is handed over as far as it came", &c, &s, &w,
                 CHUNK + 4, 100);

    // The limit: max + 1 is bad from its 4 header bytes alone (no piece of it emitted, even
    // though it would stream); 4 GiB - 1 too.
    s.len = w.len = 0;
    add_len(&s, &w, 7, 52);
    add_len(&s, NULL, NMAX + 1, 53);
    s_add(&w, "E\n", 2);
    check_splits("len: a frame of max + 1 bytes is bad", &c, &s, &w, CHUNK + 4, 100);
    s.len = 0;
    put_be32(&s, NMAX + 1);
    void *st = c.create(&c);
    struct sink k = {0};
    ssize_t r1 = decode_once(&c, st, s.p, 4, 0, &k);
    c.destroy(st);
    s.len = 0;
    put_be32(&s, 0xFFFFFFFFu);
    st = c.create(&c);
    ssize_t r2 = decode_once(&c, st, s.p, 4, 0, &k);
    c.destroy(st);
    expect(r1 == -1 && r2 == -1 && k.emits == 0,
          "len: a header of max + 1 (%zd) or 4 GiB - 1 (%zd) alone is -1, nothing emitted",
          r1, r2);
    sink_free(&k);

    // The boundary between whole and streamed, the frame one byte short: a body of exactly
    // chunk is waited for (0 consumed, no emit); chunk + 1 streams what it has.
    s.len = 0;
    add_len(&s, NULL, CHUNK, 54);
    k = (struct sink){0};
    st = c.create(&c);
    ssize_t rw = decode_once(&c, st, s.p, s.len - 1, 0, &k);
    c.destroy(st);
    unsigned long long whole_emits = k.emits;
    s.len = 0;
    add_len(&s, NULL, CHUNK + 1, 55);
    st = c.create(&c);
    ssize_t rp = decode_once(&c, st, s.p, s.len - 1, 0, &k);
    c.destroy(st);
    expect(rw == 0 && whole_emits == 0 && rp == (ssize_t)s.len - 1 && k.emits == 1 &&
              k.in_frame && k.total == CHUNK + 1 && !k.bad,
          "len: a body of chunk one byte short waits (consumed %zd, %llu emits); chunk + 1 "
          "streams (consumed %zd of %zu, a FIRST piece of total %llu)",
          rw, whole_emits, rp, s.len - 1, (unsigned long long)k.total);
    sink_free(&k);

    // The pieces of one streamed frame, fed header + 5, then 5, then the last 7: their flags
    // are FIRST, none, LAST, their total 17 each; each call consumes all it was given (the
    // state, not the buffer, carries the length across).
    s.len = 0;
    add_len(&s, NULL, CHUNK + 1, 56);
    st = c.create(&c);
    struct recorder rec = {0};
    size_t at = 0, cuts[3] = {9, 5, 7};
    ssize_t got[3];
    for (int i = 0; i < 3; i++) {
        got[i] = c.decode(&c, st, s.p + at, cuts[i], record_emit, &rec);
        at += cuts[i];
    }
    c.destroy(st);
    expect(rec.n == 3 && got[0] == 9 && got[1] == 5 && got[2] == 7 &&
              rec.v[0].flags == RX_FRAME_FIRST && rec.v[1].flags == 0 &&
              rec.v[2].flags == RX_FRAME_LAST && rec.v[0].len == 5 && rec.v[1].len == 5 &&
              rec.v[2].len == 7 && rec.v[0].total == CHUNK + 1 && rec.v[1].total == CHUNK + 1 &&
              rec.v[2].total == CHUNK + 1 && memcmp(rec.bytes, s.p + 4, CHUNK + 1) == 0,
          "len: a streamed frame in 3 reads: pieces of 5/5/7 bytes (%zu pieces), flags "
          "FIRST/none/LAST (%u/%u/%u), total 17 on each, consumed 9/5/7 (%zd/%zd/%zd)",
          rec.n, rec.v[0].flags, rec.v[1].flags, rec.v[2].flags, got[0], got[1], got[2]);

    // Two connections, two states, their streamed frames interleaved: neither disturbs the
    // other's remaining length.
    struct str s2 = {0}, w2 = {0};
    w.len = s.len = 0;
    add_len(&s, &w, 100, 57);
    add_len(&s, &w, 3, 58);
    add_len(&s2, &w2, 50, 59);
    add_len(&s2, &w2, 200, 60);
    s_add(&w, "R0\n", 3);
    s_add(&w2, "R0\n", 3);
    void *sa = c.create(&c), *sb = c.create(&c);
    struct sink ka = {0}, kb = {0};
    size_t pa = 0, pb = 0, ea = 0, eb = 0;  // consumed, and read so far, per connection
    int ok = 1;
    for (int turn = 0; turn < 1000 && (pa < s.len || pb < s2.len); turn++) {
        // Reads of 7 and 11 bytes, alternating between the connections; what a call does not
        // consume stays in that connection's "buffer" (the bytes from pa to ea).
        ea = ea + 7 < s.len ? ea + 7 : s.len;
        eb = eb + 11 < s2.len ? eb + 11 : s2.len;
        ssize_t ra = c.decode(&c, sa, s.p + pa, ea - pa, sink_emit, &ka);
        ssize_t rb = c.decode(&c, sb, s2.p + pb, eb - pb, sink_emit, &kb);
        if (ra < 0 || rb < 0) {
            ok = 0;
            break;
        }
        pa += (size_t)ra;
        pb += (size_t)rb;
    }
    s_add(&ka.out, "R0\n", 3);
    s_add(&kb.out, "R0\n", 3);
    c.destroy(sa);
    c.destroy(sb);
    expect(ok && !ka.bad && !kb.bad && s_eq(&ka.out, &w) && s_eq(&kb.out, &w2),
          "len: two connections' states interleaved: each stream's frames come out whole");
    sink_free(&ka);
    sink_free(&kb);
    s_free(&s2);
    s_free(&w2);

    // Random frames (some over the limit, some empty) and random bytes against the reference.
    uint64_t seed = rng_state;
    ok = 1;
    for (int run = 0; run < 300 && ok; run++) {
        size_t chunk = run % 3 == 0 ? 0 : 1 + (size_t)(rnd() % 64), max = 1 + (size_t)(rnd() % 400);
        rx_codec cr = rx_codec_len(max, chunk);
        struct str in = {0}, want = {0};
        if (run % 4 == 3) {
            size_t n = (size_t)(rnd() % 200);
            for (size_t i = 0; i < n; i++) {
                char b = (char)(rnd() % 3 ? 0 : rnd());  // zeros: headers that parse
                s_add(&in, &b, 1);
            }
        } else {
            int frames = 1 + (int)(rnd() % 20);
            for (int f = 0; f < frames; f++) {
                size_t len = rnd() % 8 == 0 ? 0 : (size_t)(rnd() % (max + max / 20 + 2));
                add_len(&in, NULL, len, rnd());
            }
            in.len -= (size_t)(rnd() % 8 == 0 ? rnd() % (in.len + 1) : 0);
        }
        len_reference(in.p, in.len, max, chunk, &want);
        struct sink rk = {0};
        size_t cap = chunk + 4 > max + 4 ? max + 4 : chunk + 4;
        feed(&cr, in.p, in.len, RANDOM, cap, run % 2, &rk, NULL);
        if (rk.bad || !s_eq(&rk.out, &want)) {
            printf("  run %d (max %zu, chunk %zu): %s\n", run, max, chunk, rk.bad ? rk.why : "");
            if (!rk.bad)
                show_diff("len random", &rk.out, &want);
            ok = 0;
        }
        sink_free(&rk);
        s_free(&in);
        s_free(&want);
    }
    expect(ok, "len: 300 random streams (frames around the limit, empty, cut short; bytes) at "
              "random splits, buffer chunk + 4, agree with the reference (stream seed %#llx)",
          (unsigned long long)seed);
    s_free(&s);
    s_free(&w);
}

// ---------------------------------------------------------------- hdr

#define HMAX 100

static void hdr_reference(const char *s, size_t n, size_t max, struct str *w)
{
    size_t i = 0;
    for (;;) {
        size_t left = n - i;
        const unsigned char *u = (const unsigned char *)s + i;
        if (left < 4) {
            s_printf(w, "R%zu\n", left);
            return;
        }
        uint32_t len = (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
        if (len > max) {
            s_add(w, "E\n", 2);
            return;
        }
        if (left < 6 || left - 6 < len) {
            s_printf(w, "R%zu\n", left);
            return;
        }
        want_frame(w, (uint16_t)(u[4] << 8 | u[5]), s + i + 6, len);
        i += 6 + len;
    }
}

static void test_hdr(void)
{
    rx_codec c = rx_codec_hdr(HMAX);
    struct str s = {0}, w = {0};
    // Types 0, 1, 0x1234 (read little-endian: 0x3412) and 0xffff; empty, small, exactly max.
    add_hdr(&s, &w, 0, 0, 1);
    add_hdr(&s, &w, 1, 1, 2);
    add_hdr(&s, &w, 0x1234, 5, 3);
    add_hdr(&s, &w, 0xffff, HMAX, 4);
    add_hdr(&s, &w, 7, 0, 5);
    add_hdr(&s, NULL, 9, 10, 6);
    s.len -= 3;  // cut short: waited for, not streamed
    s_add(&w, "R13\n", 4);
    struct str ref = {0};
    hdr_reference(s.p, s.len, HMAX, &ref);
    expect(s_eq(&ref, &w), "hdr: the reference parser agrees with the hand-written transcript");
    s_free(&ref);
    check_splits("hdr vectors (types 0, 1, 0x1234, 0xffff; empty; exactly max)", &c, &s, &w,
                 HMAX + 6, 300);

    s.len = w.len = 0;
    add_hdr(&s, &w, 3, 7, 7);
    add_hdr(&s, NULL, 4, HMAX + 1, 8);
    s_add(&w, "E\n", 2);
    check_splits("hdr: a frame of max + 1 bytes is bad (and nothing of it emitted)", &c, &s, &w,
                 HMAX + 6, 100);
    s.len = 0;
    put_be32(&s, HMAX + 1);
    struct sink k = {0};
    ssize_t r1 = decode_once(&c, NULL, s.p, 4, 0, &k);
    expect(r1 == -1 && k.emits == 0,
          "hdr: the 4 length bytes of max + 1 alone are -1 (%zd), nothing emitted", r1);
    sink_free(&k);

    uint64_t seed = rng_state;
    int ok = 1;
    for (int run = 0; run < 300 && ok; run++) {
        size_t max = (size_t)(rnd() % 300);
        rx_codec cr = rx_codec_hdr(max);
        struct str in = {0}, want = {0};
        int frames = 1 + (int)(rnd() % 20);
        for (int f = 0; f < frames; f++) {
            size_t len = rnd() % 8 == 0 ? 0 : (size_t)(rnd() % (max + max / 20 + 2));
            add_hdr(&in, NULL, (uint16_t)rnd(), len, rnd());
        }
        in.len -= (size_t)(rnd() % 8 == 0 ? rnd() % (in.len + 1) : 0);
        hdr_reference(in.p, in.len, max, &want);
        struct sink rk = {0};
        feed(&cr, in.p, in.len, RANDOM, max + 6, run % 2, &rk, NULL);
        if (rk.bad || !s_eq(&rk.out, &want)) {
            printf("  run %d (max %zu): %s\n", run, max, rk.bad ? rk.why : "");
            if (!rk.bad)
                show_diff("hdr random", &rk.out, &want);
            ok = 0;
        }
        sink_free(&rk);
        s_free(&in);
        s_free(&want);
    }
    expect(ok, "hdr: 300 random streams (types, frames around the limit, cut short) at random "
              "splits, buffer max + 6, agree with the reference (stream seed %#llx)",
          (unsigned long long)seed);
    s_free(&s);
    s_free(&w);
}

// ---------------------------------------------------------------- raw

static void test_raw(void)
{
    rx_codec c = rx_codec_raw();
    struct recorder rec = {0};
    ssize_t r0 = c.decode(&c, NULL, "", 0, record_emit, &rec);
    size_t n0 = rec.n;
    ssize_t r1 = c.decode(&c, NULL, "hello", 5, record_emit, &rec);
    expect(r0 == 0 && n0 == 0 && r1 == 5 && rec.n == 1 &&
              rec.v[0].flags == (RX_FRAME_FIRST | RX_FRAME_LAST) && rec.v[0].len == 5 &&
              rec.v[0].total == 5 && memcmp(rec.bytes, "hello", 5) == 0,
          "raw: an empty input emits nothing (consumed %zd); 5 bytes are one whole frame of 5 "
          "(consumed %zd)", r0, r1);

    // At random splits: one frame per call, exactly the bytes of that read, in order.
    struct str in = {0};
    for (int i = 0; i < 5000; i++) {
        char b = byte_at((uint64_t)i);
        s_add(&in, &b, 1);
    }
    struct sink k = {0};
    struct feed_stats fs = {0};
    feed(&c, in.p, in.len, RANDOM, 600, 1, &k, &fs);
    // The transcript is one F line per call; their bodies, joined, are the input.
    struct str joined = {0};
    unsigned long long frames = 0;
    for (size_t i = 0; i < k.out.len && k.out.p[i] == 'F';) {
        size_t len = strtoul(strchr(k.out.p + i, ':') + 1, NULL, 10);
        const char *body = strchr(strchr(k.out.p + i, ':') + 1, ':') + 1;
        s_add(&joined, body, len);
        i = (size_t)(body - k.out.p) + len + 1;
        frames++;
    }
    expect(!k.bad && frames == fs.calls && s_eq(&joined, &in),
          "raw: 5000 bytes in %llu random reads: %llu frames, one per read, joined they are the "
          "input", fs.calls, frames);
    // EMIT stopping changes nothing: the bytes were handed over.
    struct sink ks = {.stop_at = 1};
    ssize_t rs = c.decode(&c, NULL, "abc", 3, sink_emit, &ks);
    expect(rs == 3 && ks.emits == 1, "raw: EMIT returning -1 still consumes the frame (%zd)", rs);
    sink_free(&ks);
    sink_free(&k);
    s_free(&joined);
    s_free(&in);
}

// Nothing in, nothing out: each codec returns 0 and emits nothing for 0 bytes.
static void test_empty_input(void)
{
    rx_codec cs[4] = {rx_codec_raw(), rx_codec_line(LMAX), rx_codec_len(NMAX, CHUNK),
                      rx_codec_hdr(HMAX)};
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        void *st = cs[i].create ? cs[i].create(&cs[i]) : NULL;
        struct sink k = {0};
        ssize_t r = decode_once(&cs[i], st, "x", 0, 0, &k);
        ok = ok && r == 0 && k.emits == 0;
        if (cs[i].destroy)
            cs[i].destroy(st);
        sink_free(&k);
    }
    expect(ok, "raw, line, len, hdr: 0 bytes in: 0 consumed, nothing emitted");
}

// ---------------------------------------------------------------- emit stopping

// Three frames; EMIT stops at the 2nd: decode returns the offset just after it, and a second
// call on the rest emits the 3rd. STATE is kept between the calls, as a connection's is.
static void stop_case(const char *what, const rx_codec *c, const struct str *s, size_t after2,
                      const struct str *want)
{
    void *st = c->create ? c->create(c) : NULL;
    struct sink k = {0};
    ssize_t r = decode_once(c, st, s->p, s->len, 2, &k);
    unsigned long long emits = k.emits;
    ssize_t r2 = r < 0 ? -1 : decode_once(c, st, s->p + r, s->len - (size_t)r, 0, &k);
    if (c->destroy)
        c->destroy(st);
    s_add(&k.out, "R0\n", 3);
    expect(r == (ssize_t)after2 && emits == 2 && r2 == (ssize_t)(s->len - after2) && !k.bad &&
              s_eq(&k.out, want),
          "%s: EMIT stopping at frame 2 of 3: decode returns %zd (want %zu, the end of frame "
          "2) after %llu emits; the next call gives frame 3", what, r, after2, emits);
    sink_free(&k);
}

static void test_emit_stop(void)
{
    struct str s = {0}, w = {0};
    rx_codec line = rx_codec_line(LMAX);
    s_add(&s, "one\ntwo\nthree\n", 14);
    want_frame(&w, 0, "one", 3);
    want_frame(&w, 0, "two", 3);
    want_frame(&w, 0, "three", 5);
    s_add(&w, "R0\n", 3);
    stop_case("line", &line, &s, 8, &w);

    rx_codec len = rx_codec_len(NMAX, CHUNK);
    s.len = w.len = 0;
    add_len(&s, &w, 3, 70);
    add_len(&s, &w, 0, 71);
    add_len(&s, &w, 5, 72);
    s_add(&w, "R0\n", 3);
    stop_case("len", &len, &s, 11, &w);

    // A streamed frame: stop on its first piece (header + 3 of 40 bytes read); the rest comes
    // as pieces without FIRST, and the frame is whole.
    s.len = w.len = 0;
    add_len(&s, &w, 40, 73);
    s_add(&w, "R0\n", 3);
    void *st = len.create(&len);
    struct sink k = {0};
    ssize_t r1 = decode_once(&len, st, s.p, 7, 1, &k);
    ssize_t r2 = decode_once(&len, st, s.p + 7, s.len - 7, 0, &k);
    len.destroy(st);
    s_add(&k.out, "R0\n", 3);
    expect(r1 == 7 && r2 == (ssize_t)s.len - 7 && !k.bad && s_eq(&k.out, &w),
          "len: EMIT stopping on a streamed frame's first piece: consumed %zd (header and "
          "piece), the rest follows as its later pieces", r1);
    sink_free(&k);

    rx_codec hdr = rx_codec_hdr(HMAX);
    s.len = w.len = 0;
    add_hdr(&s, &w, 1, 3, 74);
    add_hdr(&s, &w, 2, 0, 75);
    add_hdr(&s, &w, 3, 5, 76);
    s_add(&w, "R0\n", 3);
    stop_case("hdr", &hdr, &s, 15, &w);
    s_free(&s);
    s_free(&w);
}

// ---------------------------------------------------------------- 64 MiB through 16 KiB

#define BIG ((size_t)64 << 20)
#define BIG_CHUNK ((size_t)16 << 10)

// The stream: PRE (a small frame and the big frame's header), BIG generated body bytes, POST.
struct big_src {
    struct str pre, post;
};

static void big_fill(const struct big_src *src, char *dst, uint64_t pos, size_t n)
{
    for (size_t i = 0; i < n; i++, pos++) {
        if (pos < src->pre.len)
            dst[i] = src->pre.p[pos];
        else if (pos < src->pre.len + BIG)
            dst[i] = byte_at(pos - src->pre.len);
        else
            dst[i] = src->post.p[pos - src->pre.len - BIG];
    }
}

struct big_sink {
    struct sink k;        // the small frames
    int frame;            // frames finished so far; the 2nd (index 1) is the big one
    uint64_t got;         // its bytes so far, each compared
    unsigned long long pieces, firsts, lasts, bad_bytes, bad_total;
};

static int big_emit(void *ctx, const rx_frame *f)
{
    struct big_sink *b = ctx;
    if (b->frame != 1) {
        if (f->flags & RX_FRAME_LAST)
            b->frame++;
        return sink_emit(&b->k, f);
    }
    b->pieces++;
    b->firsts += (f->flags & RX_FRAME_FIRST) != 0;
    b->lasts += (f->flags & RX_FRAME_LAST) != 0;
    if ((f->flags & RX_FRAME_FIRST) != (b->got == 0 ? RX_FRAME_FIRST : 0u))
        b->bad_total++;
    b->bad_total += f->total != BIG;
    for (size_t i = 0; i < f->len; i++)
        b->bad_bytes += f->data[i] != byte_at(b->got + i);
    b->got += f->len;
    if ((f->flags & RX_FRAME_LAST) != (b->got == BIG ? RX_FRAME_LAST : 0u))
        b->bad_total++;
    if (f->flags & RX_FRAME_LAST)
        b->frame++;
    return 0;
}

static void test_len_big(void)
{
    rx_codec c = rx_codec_len(BIG, BIG_CHUNK);
    struct big_src src = {0};
    struct str w = {0};
    add_len(&src.pre, &w, 3, 80);
    put_be32(&src.pre, (uint32_t)BIG);
    add_len(&src.post, &w, BIG_CHUNK, 81);  // exactly chunk: whole, and it must fit
    add_len(&src.post, &w, 4, 82);
    s_add(&w, "R0\n", 3);
    uint64_t n = src.pre.len + BIG + src.post.len;

    // The io thread: a buffer of chunk + 4 bytes, reads of up to 64 KiB (as room allows),
    // one decode per read, the consumed bytes dropped.
    const size_t cap = BIG_CHUNK + 4;
    char *buf = xmalloc(cap);
    size_t len = 0, high = 0;
    uint64_t pos = 0;
    unsigned long long calls = 0;
    int stuck = 0, failed = 0;
    void *st = c.create(&c);
    struct big_sink b = {0};
    uint64_t seed = rng_state;
    while (pos < n && !stuck && !failed) {
        size_t want = 1 + (size_t)(rnd() % (64 << 10));
        if (want > cap - len)
            want = cap - len;
        if (want > n - pos)
            want = (size_t)(n - pos);
        if (want == 0) {
            stuck = 1;
            break;
        }
        big_fill(&src, buf + len, pos, want);
        len += want;
        pos += want;
        high = len > high ? len : high;
        calls++;
        ssize_t r = c.decode(&c, st, buf, len, big_emit, &b);
        if (r < 0 || (size_t)r > len) {
            failed = 1;
            break;
        }
        memmove(buf, buf + r, len - (size_t)r);
        len -= (size_t)r;
    }
    c.destroy(st);
    free(buf);
    s_printf(&b.k.out, "R%zu\n", len);
    // The reader never holds more than chunk + 4 bytes (it reads only into the room left);
    // a codec that waited for more would leave the buffer full and consuming nothing: stuck.
    expect(!stuck && !failed && !b.k.bad && b.got == BIG && b.bad_bytes == 0 &&
              b.firsts == 1 && b.lasts == 1 && b.bad_total == 0 && b.frame == 4 &&
              s_eq(&b.k.out, &w),
          "len: a 64 MiB frame (between small ones, one of exactly chunk) through a buffer of "
          "chunk + 4 = %zu bytes in %llu random reads (seed %#llx): never stuck (%s), %llu "
          "pieces, %llu FIRST, %llu LAST, %llu bad flags/totals, %llu of %zu bytes wrong, the "
          "buffer full at most %zu%s",
          cap, calls, (unsigned long long)seed, stuck ? "STUCK" : "yes", b.pieces, b.firsts,
          b.lasts, b.bad_total, b.bad_bytes, BIG, high, failed ? ", decode failed" : "");
    if (b.k.bad)
        printf("  %s\n", b.k.why);
    sink_free(&b.k);
    s_free(&w);
    s_free(&src.pre);
    s_free(&src.post);
}

// ---------------------------------------------------------------- encoding

static int buf_is(rx_buf *b, const char *want, size_t n)
{
    int ok = b != NULL && rx_buf_len(b) == n && memcmp(b->data, want, n) == 0;
    if (b != NULL)
        rx_buf_release(b);
    return ok;
}

static void test_encode(void)
{
    rx_codec raw = rx_codec_raw(), line = rx_codec_line(LMAX), len = rx_codec_len(NMAX, CHUNK),
             hdr = rx_codec_hdr(HMAX);
    char h[RX_HEAD_MAX];
    size_t hr = raw.head(&raw, 0, 3, h), hl = line.head(&line, 0, 3, h);
    size_t hn = len.head(&len, 0, 258, h);
    int len_ok = hn == 4 && memcmp(h, "\0\0\1\2", 4) == 0;
    size_t hh = hdr.head(&hdr, 0x0102, 0x01020304, h);
    int hdr_ok = hh == 6 && memcmp(h, "\1\2\3\4\1\2", 6) == 0;
    expect(hr == 0 && raw.tail_len == 0 && hl == 0 && line.tail_len == 1 &&
              memcmp(line.tail, "\n", 1) == 0 && len_ok && hdr_ok && len.tail_len == 0 &&
              hdr.tail_len == 0,
          "head(): raw none, line none with tail \\n, len 4 bytes big-endian, hdr 6 bytes "
          "(length, then type, big-endian)");

    int ok = buf_is(rx_buf_frame(&raw, 0, "abc", 3), "abc", 3) &&
             buf_is(rx_buf_frame(&line, 0, "abc", 3), "abc\n", 4) &&
             buf_is(rx_buf_frame(&len, 0, "abc", 3), "\0\0\0\3abc", 7) &&
             buf_is(rx_buf_frame(&hdr, 0x0102, "abc", 3), "\0\0\0\3\1\2abc", 9) &&
             buf_is(rx_buf_frame(&len, 0, "", 0), "\0\0\0\0", 4) &&
             buf_is(rx_buf_frame(&line, 0, "", 0), "\n", 1);
    expect(ok, "rx_buf_frame: head, body, tail for each codec (and empty messages)");

    errno = 0;
    rx_buf *b1 = rx_buf_frame(&len, 0, "x", (size_t)UINT32_MAX + 1);
    int e1 = errno;
    errno = 0;
    rx_buf *b2 = rx_buf_frame(&hdr, 0, "x", (size_t)UINT32_MAX + 1);
    int e2 = errno;
    expect(b1 == NULL && b2 == NULL && e1 == EMSGSIZE && e2 == EMSGSIZE,
          "rx_buf_frame: a message of 4 GiB cannot be framed by len or hdr (NULL, EMSGSIZE)");

    // What an io thread may rely on to size a connection's input buffer (conn.c): the most a
    // codec ever waits for is min(max_frame, chunk) plus its head and tail, at most
    // RX_HEAD_MAX + 1. Line waits for max + 1 bytes, hdr for max + 6, len for
    // min(max, chunk) + 4 (longer bodies stream).
    rx_codec small_len = rx_codec_len(10, 1000), line_big = rx_codec_line(1 << 20),
             hdr_big = rx_codec_hdr(1 << 20);
    struct { const rx_codec *c; size_t need; } bound[] = {
        {&line, LMAX + 1}, {&line_big, (1 << 20) + 1}, {&hdr, HMAX + 6},
        {&hdr_big, (1 << 20) + 6}, {&len, CHUNK + 4}, {&small_len, 10 + 4}};
    ok = 1;
    for (size_t i = 0; i < sizeof bound / sizeof *bound; i++) {
        const rx_codec *c = bound[i].c;
        size_t m = c->max_frame < c->chunk ? c->max_frame : c->chunk;
        if (m + RX_HEAD_MAX + 1 < bound[i].need) {
            printf("  %s (max %zu, chunk %zu) waits for %zu bytes, more than %zu\n", c->name,
                   c->max_frame, c->chunk, bound[i].need, m + RX_HEAD_MAX + 1);
            ok = 0;
        }
    }
    expect(ok, "every codec waits for at most min(max_frame, chunk) + RX_HEAD_MAX + 1 bytes "
              "(line and hdr say chunk = max_frame: they never stream)");

    // The round trip: random messages framed by rx_buf_frame, decoded at random splits.
    const rx_codec *codecs[3] = {&line, &len, &hdr};
    size_t caps[3] = {LMAX + 1, CHUNK + 4, HMAX + 6};
    uint64_t seed = rng_state;
    ok = 1;
    for (int ci = 0; ci < 3; ci++) {
        const rx_codec *c = codecs[ci];
        for (int run = 0; run < 50 && ok; run++) {
            struct str s = {0}, w = {0};
            int msgs = 1 + (int)(rnd() % 30);
            for (int m = 0; m < msgs; m++) {
                size_t n = (size_t)(rnd() % (c->max_frame + 1));
                uint16_t type = c == &hdr ? (uint16_t)rnd() : 0;
                char *body = gen_body(n, rnd());
                if (c == &line)
                    for (size_t i = 0; i < n; i++)
                        body[i] = body[i] == '\n' ? 'n' : body[i];
                rx_buf *b = rx_buf_frame(c, type, body, n);
                if (b == NULL) {
                    fprintf(stderr, "codec_test: rx_buf_frame failed\n");
                    exit(2);
                }
                s_add(&s, b->data, b->len);
                want_frame(&w, type, body, n);
                rx_buf_release(b);
                free(body);
            }
            s_add(&w, "R0\n", 3);
            struct sink k = {0};
            feed(c, s.p, s.len, RANDOM, caps[ci], run % 2, &k, NULL);
            if (k.bad || !s_eq(&k.out, &w)) {
                printf("  %s round trip, run %d: %s\n", c->name, run, k.bad ? k.why : "");
                if (!k.bad)
                    show_diff("round trip", &k.out, &w);
                ok = 0;
            }
            sink_free(&k);
            s_free(&s);
            s_free(&w);
        }
    }
    expect(ok, "round trip: line, len and hdr decode what rx_buf_frame encoded (50 runs each of "
              "up to 30 messages up to max, random splits, seed %#llx)", (unsigned long long)seed);
}

int main(void)
{
    alarm(300);  // a last resort: every loop here is bounded
    const char *env = getenv("CODEC_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid() << 20;
    rng_state = seed;
    printf("codec_test: seed %#llx (CODEC_TEST_SEED=%#llx repeats this run)\n",
           (unsigned long long)seed, (unsigned long long)seed);
    test_raw();
    test_line();
    test_len();
    test_hdr();
    test_empty_input();
    test_emit_stop();
    test_encode();
    test_len_big();
    unsigned long long alive = atomic_load(&rxbuf_alive);
    expect(alive == 0, "every rx_buf made was freed (%llu alive)", alive);
    printf("codec_test: %s (%d checks, %d failed, seed %#llx)\n", failures ? "FAILED" : "passed",
           checks, failures, (unsigned long long)seed);
    return failures ? 1 : 0;
}
