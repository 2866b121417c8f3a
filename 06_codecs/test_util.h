// test_util.h: what the codec unit tests (*_test.c) and codec_bench.c share: an input buffer
// that behaves like a server's (append, decode, drop, compact), a driver that feeds a byte
// stream to a decoder in a given split and writes what came out as a transcript, and the
// split patterns (whole, byte by byte, every two-piece split, random splits).
//
// Honest by construction: the driver feeds a decoder exactly as a server does, so
//   - a decoder that keeps a pointer into the buffer between calls reads freed memory:
//     in "moving" mode every append moves the unread bytes to a NEW block and poisons and
//     frees the old one (ASan reports it; without ASan the poison shows in the transcript);
//   - a decoder that resets its state on every call loses the split frame: the transcript
//     differs from the one-read transcript;
//   - the buffer has a fixed capacity and never grows: a decoder that waits for a frame
//     bigger than it gets "buffer full" in its transcript.
// Header only (static functions): each test program includes it once.
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include "codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- results: "ok N - name" / "not ok N - name", exit status 1 on any failure ----

static int t_count, t_failures;

static inline void t_check(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s %d - ", ok ? "ok" : "not ok", ++t_count);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    if (!ok)
        t_failures++;
    fflush(stdout);
}

static inline int t_done(void)
{
    printf("# %d tests, %d failed\n", t_count, t_failures);
    return t_failures == 0 ? 0 : 1;
}

// Out of memory in a test is not a result: stop.
static inline void *t_alloc(size_t n)
{
    void *p = malloc(n == 0 ? 1 : n);
    if (p == NULL) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

// ---- a growable string (transcripts, test streams) ----

struct tstr {
    char *p;
    size_t len, cap;
};

static inline void ts_add(struct tstr *s, const void *p, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap == 0 ? 256 : s->cap;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *q = realloc(s->p, cap);
        if (q == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
        s->p = q;
        s->cap = cap;
    }
    if (n > 0)
        memcpy(s->p + s->len, p, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static inline void ts_printf(struct tstr *s, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    ts_add(s, tmp, n < (int)sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

// 1 if A and B hold the same bytes (an empty tstr has p == NULL).
static inline int ts_eq(const struct tstr *a, const struct tstr *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static inline void ts_free(struct tstr *s)
{
    free(s->p);
    *s = (struct tstr){0};
}

// ---- the input buffer: a server's per-connection input, fixed capacity ----

struct inbuf {
    char *data;
    size_t cap;          // fixed: it never grows
    size_t start, end;   // the unread bytes are data[start, end)
    int moving;          // every append moves the unread bytes to a new block
    size_t high;         // most bytes it ever held (never above cap)
    unsigned long long copied;  // bytes moved by compactions (the benchmark reports it)
};

static inline void inbuf_init(struct inbuf *b, size_t cap, int moving)
{
    *b = (struct inbuf){.data = t_alloc(cap), .cap = cap, .moving = moving};
}

static inline void inbuf_free(struct inbuf *b)
{
    free(b->data);
    b->data = NULL;
}

static inline const char *inbuf_peek(const struct inbuf *b) { return b->data + b->start; }
static inline size_t inbuf_len(const struct inbuf *b) { return b->end - b->start; }

static inline void inbuf_drop(struct inbuf *b, size_t n)
{
    b->start += n;
    if (b->start == b->end)
        b->start = b->end = 0;  // empty: the next append starts at the front, no copy
}

// Appends up to N bytes of P (what fits); returns how many. Compacts first, as a server does
// before a read: the unread bytes go to the front (a new block, in moving mode).
static inline size_t inbuf_append(struct inbuf *b, const char *p, size_t n)
{
    size_t unread = inbuf_len(b);
    if (b->moving) {
        char *fresh = t_alloc(b->cap);
        memcpy(fresh, b->data + b->start, unread);
        memset(b->data, 0xA5, b->cap);  // poison what a kept pointer would read
        free(b->data);
        b->data = fresh;
        b->copied += unread;
        b->start = 0;
        b->end = unread;
    } else if (b->start > 0 && b->cap - b->end < n) {
        memmove(b->data, b->data + b->start, unread);
        b->copied += unread;
        b->start = 0;
        b->end = unread;
    }
    size_t room = b->cap - b->end;
    size_t k = n < room ? n : room;
    memcpy(b->data + b->end, p, k);
    b->end += k;
    if (inbuf_len(b) > b->high)
        b->high = inbuf_len(b);
    return k;
}

// ---- the driver: a stream, a split, a decoder -> a transcript ----

// A broken rule of codec.h: a "! <what>" line in the transcript, and one more in *BROKEN.
static inline void t_broke(struct tstr *out, int *broken, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    ts_printf(out, "! %s", tmp);
    (*broken)++;
}

// A decoder under test. describe() writes a CODEC_FRAME's content into the transcript (NULL:
// its bytes); pieces_are_frames: a piece sequence BEGIN..END is the same frame as a CODEC_FRAME
// (lenframe: whether a long frame comes whole or in pieces depends on the split).
struct codec_ops {
    void *dec;
    void (*reset)(void *dec);
    struct codec_result (*decode)(void *dec, const char *data, size_t len);
    void (*describe)(void *dec, const char *data, const struct codec_result *r, struct tstr *out);
    int pieces_are_frames;
};

struct feed_stats {
    unsigned long long calls, frames, pieces;
    unsigned long long copied;  // bytes the buffer's compactions moved
    size_t high;                // most bytes the buffer held at once
    int broken;                 // "!" lines: rules of codec.h the decoder broke
};

// Feeds STREAM (N bytes) to OPS in pieces of the sizes CUTS[0..NCUTS-1] (then the rest in one
// piece), through a buffer of CAP bytes, and writes the transcript to OUT:
//   "F<len>:<content>\n" a frame;  "P<total>:<bytes>\n" a piece sequence (its bytes joined);
//   "E<code>:<message>\n" an error (the stream stops there);  "X buffer full\n";
//   "R<n> bytes left\n" unread at the end;  "T piece sequence cut short\n";
//   "! <what>\n" a broken rule of codec.h (consumed past the data, a view outside it, ...).
static inline void feed(const struct codec_ops *ops, const char *stream, size_t n,
                        const size_t *cuts, size_t ncuts, size_t cap, int moving,
                        struct tstr *out, struct feed_stats *st)
{
    struct inbuf b;
    inbuf_init(&b, cap, moving);
    ops->reset(ops->dec);
    struct tstr piece = {0};
    int in_piece = 0, stop = 0, broken = 0;
    unsigned long long total = 0;
    size_t off = 0, cut = 0;
    while (!stop && off < n) {
        size_t want = cut < ncuts ? cuts[cut++] : n - off;
        if (want > n - off)
            want = n - off;
        while (want > 0 && !stop) {
            size_t k = inbuf_append(&b, stream + off, want);
            off += k;
            want -= k;
            for (;;) {
                const char *data = inbuf_peek(&b);
                size_t len = inbuf_len(&b);
                struct codec_result r = ops->decode(ops->dec, data, len);
                if (st != NULL)
                    st->calls++;
                if (r.consumed > len) {
                    t_broke(out, &broken, "consumed %zu of %zu\n", r.consumed, len);
                    stop = 1;
                    break;
                }
                if ((r.status == CODEC_FRAME || r.status == CODEC_PIECE) &&
                    (r.frame < data || r.len > len || r.frame + r.len > data + len)) {
                    t_broke(out, &broken, "view outside the data\n");
                    stop = 1;
                    break;
                }
                if (r.status == CODEC_NEED_MORE) {
                    if (r.consumed != 0)
                        t_broke(out, &broken, "NEED_MORE consumed %zu\n", r.consumed);
                    if (k == 0 && len == b.cap) {
                        ts_printf(out, "X buffer full\n");
                        stop = 1;
                    }
                    break;
                }
                if (r.status == CODEC_ERROR) {
                    ts_printf(out, "E%d:%s\n", r.code, r.error ? r.error : "(null)");
                    stop = 1;
                    break;
                }
                if (r.status == CODEC_FRAME) {
                    if (st != NULL)
                        st->frames++;
                    if (in_piece)
                        t_broke(out, &broken, "a frame inside a piece sequence\n");
                    ts_printf(out, "F%zu:", r.len);
                    if (ops->describe != NULL)
                        ops->describe(ops->dec, data, &r, out);
                    else
                        ts_add(out, r.frame, r.len);
                    ts_add(out, "\n", 1);
                } else if (r.status == CODEC_PIECE) {
                    if (st != NULL)
                        st->pieces++;
                    int begin = (r.flags & CODEC_PIECE_BEGIN) != 0;
                    if (begin == in_piece || (in_piece && r.total != total) || r.len == 0)
                        t_broke(out, &broken, "piece flags %u (in a sequence: %d), len %zu\n",
                                  r.flags, in_piece, r.len);
                    in_piece = 1;
                    total = r.total;
                    ts_add(&piece, r.frame, r.len);
                    if (r.flags & CODEC_PIECE_END) {
                        if (piece.len != total)
                            t_broke(out, &broken, "pieces joined: %zu bytes, total said %llu\n",
                                      piece.len, total);
                        ts_printf(out, "%c%llu:", ops->pieces_are_frames ? 'F' : 'P', total);
                        ts_add(out, piece.p, piece.len);
                        ts_add(out, "\n", 1);
                        piece.len = 0;
                        in_piece = 0;
                    }
                } else {
                    t_broke(out, &broken, "status %d\n", (int)r.status);
                    stop = 1;
                    break;
                }
                inbuf_drop(&b, r.consumed);
                // A caller with no byte left stops calling; a decoder that consumed nothing
                // after a result would loop forever: that is a broken rule too.
                if (r.consumed == 0) {
                    t_broke(out, &broken, "a result that consumed nothing\n");
                    stop = 1;
                    break;
                }
            }
        }
    }
    if (!stop && in_piece)
        ts_printf(out, "T piece sequence cut short\n");
    if (!stop && inbuf_len(&b) > 0)
        ts_printf(out, "R%zu bytes left\n", inbuf_len(&b));
    if (b.high > b.cap)
        t_broke(out, &broken, "the buffer grew\n");
    if (st != NULL) {
        st->broken += broken;
        st->copied += b.copied;
        st->high = b.high;
    }
    ts_free(&piece);
    inbuf_free(&b);
}

// The first offset where A and B differ, with the bytes around it, for a failure message.
static inline void t_show_diff(const char *what, const struct tstr *got,
                               const struct tstr *want)
{
    size_t i = 0;
    while (i < got->len && i < want->len && got->p[i] == want->p[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    int gl = (int)((got->len - from) < 80 ? got->len - from : 80);
    int wl = (int)((want->len - from) < 80 ? want->len - from : 80);
    printf("# %s: transcripts differ at offset %zu (got %zu bytes, want %zu)\n"
           "#   got:  ...%.*s...\n#   want: ...%.*s...\n",
           what, i, got->len, want->len, gl, got->p + from, wl, want->p + from);
}

// A small deterministic generator: the same seed, the same splits on every machine.
static unsigned long long t_rand_state = 0x06c0dec5ULL;

static inline unsigned long long t_rand(void)
{
    unsigned long long x = t_rand_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return t_rand_state = x;
}

// Feeds STREAM to OPS in every split pattern and checks each transcript equals WANT:
// one read; byte by byte; every two-piece split (streams up to 4096 bytes); RANDOM random
// splits (pieces of 1..64 bytes, then 1..4096), seed printed. CAP: the buffer's size;
// MOVING: move the buffer on every append. WANT_LEN: the transcript's length (it may hold
// NUL bytes; check_splits takes a C string). Returns the number of patterns that differed.
static inline int check_splits_n(const char *name, const struct codec_ops *ops,
                                 const char *stream, size_t n, const char *want_text,
                                 size_t want_len, size_t cap, int moving, int random)
{
    struct tstr want = {0}, got = {0};
    ts_add(&want, want_text, want_len);
    size_t *cuts = t_alloc((n + 1) * sizeof *cuts);
    memset(cuts, 0, (n + 1) * sizeof *cuts);
    int bad = 0, patterns = 0;
    char what[200];

    feed(ops, stream, n, NULL, 0, cap, moving, &got, NULL);
    patterns++;
    if (!ts_eq(&got, &want)) {
        snprintf(what, sizeof what, "%s, one read", name);
        t_show_diff(what, &got, &want);
        bad++;
    }

    for (size_t i = 0; i < n; i++)
        cuts[i] = 1;
    got.len = 0;
    feed(ops, stream, n, cuts, n, cap, moving, &got, NULL);
    patterns++;
    if (!ts_eq(&got, &want)) {
        snprintf(what, sizeof what, "%s, byte by byte", name);
        t_show_diff(what, &got, &want);
        bad++;
    }

    if (n <= 4096) {
        for (size_t k = 1; k < n; k++) {
            cuts[0] = k;
            got.len = 0;
            feed(ops, stream, n, cuts, 1, cap, moving, &got, NULL);
            patterns++;
            if (!ts_eq(&got, &want)) {
                if (bad < 3) {
                    snprintf(what, sizeof what, "%s, split at %zu", name, k);
                    t_show_diff(what, &got, &want);
                }
                bad++;
            }
        }
    }

    unsigned long long seed = t_rand_state;
    for (int r = 0; r < random; r++) {
        size_t nc = 0, sum = 0;
        size_t maxpiece = r % 2 == 0 ? 64 : 4096;
        while (sum < n) {
            cuts[nc] = 1 + (size_t)(t_rand() % maxpiece);
            sum += cuts[nc++];
        }
        got.len = 0;
        feed(ops, stream, n, cuts, nc, cap, moving, &got, NULL);
        patterns++;
        if (!ts_eq(&got, &want)) {
            if (bad < 3) {
                snprintf(what, sizeof what, "%s, random split %d (seed %#llx)", name, r, seed);
                t_show_diff(what, &got, &want);
            }
            bad++;
        }
    }
    t_check(bad == 0, "%s: the same frames in all %d splits (%zu bytes; %d random, seed %#llx)",
            name, patterns, n, random, seed);
    free(cuts);
    ts_free(&want);
    ts_free(&got);
    return bad;
}

static inline int check_splits(const char *name, const struct codec_ops *ops,
                               const char *stream, size_t n, const char *want_text, size_t cap,
                               int moving, int random)
{
    return check_splits_n(name, ops, stream, n, want_text, strlen(want_text), cap, moving,
                          random);
}

// Feeds RUNS random streams of 1..MAXLEN bytes to OPS, each in one read and in random pieces
// of 1..MAXPIECE bytes through a buffer of CAP bytes that moves on every read: the two
// transcripts must agree (errors included) and no rule of codec.h may break. The bytes come
// from ALPHA (a C string), or with ALPHA NULL are any byte, a NUL one time in four (small
// length headers). Prints one result line, with the seed.
static inline void check_random_streams(const char *name, const struct codec_ops *ops,
                                        const char *alpha, int runs, size_t maxlen,
                                        size_t maxpiece, size_t cap)
{
    unsigned long long seed = t_rand_state;
    int bad = 0;
    for (int run = 0; run < runs; run++) {
        size_t n = 1 + (size_t)(t_rand() % maxlen);
        struct tstr g = {0}, one = {0}, split = {0};
        struct feed_stats st = {0};
        for (size_t i = 0; i < n; i++) {
            unsigned long long x = t_rand();
            char c = alpha != NULL ? alpha[x % strlen(alpha)] : (char)(x % 4 == 0 ? 0 : x >> 8);
            ts_add(&g, &c, 1);
        }
        size_t cuts[64];
        for (int k = 0; k < 64; k++)
            cuts[k] = 1 + (size_t)(t_rand() % maxpiece);
        feed(ops, g.p, g.len, NULL, 0, cap, 0, &one, &st);
        feed(ops, g.p, g.len, cuts, 64, cap, 1, &split, &st);
        if ((!ts_eq(&one, &split) || st.broken > 0) && bad++ < 3)
            t_show_diff(name, &split, &one);
        ts_free(&g);
        ts_free(&one);
        ts_free(&split);
    }
    t_check(bad == 0, "%s: %d random streams, random splits agree with one read (seed %#llx)",
            name, runs, seed);
}

// ---- each decoder as a codec_ops.decode (each where its header came first) ----

#define T_DECODE_OP(codec)                                                                  \
    static inline struct codec_result codec##_decode_op(void *dec, const char *data,       \
                                                        size_t len)                        \
    {                                                                                       \
        return codec##_decode(dec, data, len);                                              \
    }
#ifdef FIXED_H
T_DECODE_OP(fixed)
#endif
#ifdef LINE_H
T_DECODE_OP(line)
#endif
#ifdef LENFRAME_H
T_DECODE_OP(lenframe)
#endif
#ifdef RESP_H
T_DECODE_OP(resp)
#endif
#ifdef HTTP_H
T_DECODE_OP(http)
#endif

// ---- transcript writers of the two protocols (each where its header came first) ----

#ifdef RESP_H
// A request: "<argc>[arg][arg]..." (resp_test.c and fuzz/fuzz_resp.c).
static inline void resp_describe(void *dec, const char *data, const struct codec_result *r,
                                 struct tstr *out)
{
    struct resp_decoder *d = dec;
    (void)r;
    ts_printf(out, "%zu", d->argc);
    for (size_t i = 0; i < d->argc; i++) {
        size_t n;
        const char *a = resp_arg(d, data, i, &n);
        ts_add(out, "[", 1);
        ts_add(out, a, n);
        ts_add(out, "]", 1);
    }
}
#endif

#ifdef HTTP_H
static inline void http_add_span(struct tstr *out, const char *data, struct http_span s)
{
    ts_add(out, data + s.off, s.len);
}

// A head: "METHOD TARGET 1.x ka=K cl=N[ 100c] host=H [name=value]..." (100c: Expect: 100-continue) (http_test.c and
// fuzz/fuzz_http.c). host= is looked up as "HOST": the lookup must ignore case.
static inline void http_describe(void *dec, const char *data, const struct codec_result *r,
                                 struct tstr *out)
{
    struct http_decoder *d = dec;
    const struct http_request *q = &d->req;
    (void)r;
    http_add_span(out, data, q->method);
    ts_add(out, " ", 1);
    http_add_span(out, data, q->target);
    ts_printf(out, " 1.%d ka=%d cl=%llu%s host=", q->minor, q->keep_alive, q->content_length,
              q->expect_continue ? " 100c" : "");
    size_t hl;
    const char *h = http_header(d, data, "HOST", &hl);
    ts_add(out, h != NULL ? h : "-", h != NULL ? hl : 1);
    for (size_t i = 0; i < q->nheaders; i++) {
        ts_add(out, " [", 2);
        http_add_span(out, data, q->headers[i].name);
        ts_add(out, "=", 1);
        http_add_span(out, data, q->headers[i].value);
        ts_add(out, "]", 1);
    }
}
#endif

// ---- the fuzz targets' differential check (fuzz/fuzz_*.c) ----

// Feeds STREAM (N bytes) to OPS three ways: in one read; split in two at a point derived from
// SEED; in pieces of 1..16 bytes (sizes derived from SEED) through a buffer that moves on
// every read. All three transcripts must be identical and no rule of codec.h broken: else it
// prints both and aborts (libFuzzer then saves the input as a crash).
static inline void fuzz_differential(const struct codec_ops *ops, const char *stream, size_t n,
                                     unsigned seed, size_t cap)
{
    struct tstr one = {0}, two = {0}, many = {0};
    struct feed_stats st = {0};
    size_t cut = n == 0 ? 0 : seed % (n + 1);
    size_t cuts[256];
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        x = x * 1103515245u + 12345u;
        cuts[i] = 1 + (x >> 16) % 16;
    }
    feed(ops, stream, n, NULL, 0, cap, 0, &one, &st);
    feed(ops, stream, n, &cut, 1, cap, 0, &two, &st);
    feed(ops, stream, n, cuts, sizeof cuts / sizeof *cuts, cap, 1, &many, &st);
    const struct tstr *bad = NULL;
    if (!ts_eq(&two, &one))
        bad = &two;
    else if (!ts_eq(&many, &one))
        bad = &many;
    if (bad != NULL || st.broken > 0) {
        t_show_diff(bad == &two ? "split in two" : "small pieces", bad ? bad : &one, &one);
        fprintf(stderr, "differential check failed: %s (split at %zu, %d broken rules)\n",
                bad != NULL ? "transcripts differ" : "a rule of codec.h broken", cut,
                st.broken);
        abort();
    }
    ts_free(&one);
    ts_free(&two);
    ts_free(&many);
}

#endif
