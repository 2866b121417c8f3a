// fuzz.h: what the libFuzzer targets of 08's codecs (fuzz/fuzz_*.c) share: a driver that feeds
// a stream to a codec's decode the way the io thread does (lib/conn.c: conn_read, conn_decode,
// keep_partial), and checks the rules of lib/codec.c on every call. Not part of the library.
//
// The same stream goes through the decoder five times: whole (one read), split in two at a
// point the input picks, in pieces of 1..16 bytes, one byte at a time, and whole again with an
// EMIT that says stop (-1) after every frame, the decoder called again at once on what it left
// (rule 4). The five transcripts (the frames, each whole: a streamed frame's pieces joined; a
// bad frame; what was left over) must be the same, and on every call:
//   - decode returns -1 or 0..LEN, and what it leaves is less than the connection's input limit
//     (conn.c's input_limit: min(max_frame, chunk) + RX_HEAD_MAX + 1): a codec judges its own
//     limit before the buffer's cap does;
//   - a streamed frame's pieces come FIRST .. LAST with one TOTAL, adding up to it; a whole
//     frame's LEN is its TOTAL, at most max_frame (unless the codec's frame carries more than
//     the body: http's index; or it is a refusal, whose bytes are the reason);
//   - after a refused frame (RX_FRAME_REFUSED) nothing more is emitted and every call consumes
//     all it is given; after -1 nothing is fed;
//   - each frame passes the target's own check (its bytes re-read with the codec's reader).
// Every decode gets its bytes in a fresh allocation of exactly LEN bytes, so ASan sees a read
// past them, and a pointer kept into an earlier buffer (rule 2) is a use after free.
// A broken rule prints what differed and aborts: libFuzzer saves the input as a crash.
#ifndef RX_FUZZ_H
#define RX_FUZZ_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rx.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

struct fuzz_spec {
    rx_codec codec;
    // NULL, or why F (a whole frame, pieces joined; its flags and type as given) is wrong.
    const char *(*check)(const rx_codec *c, const rx_frame *f);
    // NULL, or false for a frame that is not part of the transcript (http's 100 Continue: it is
    // sent only when the head came without its body, which depends on the split).
    bool (*keep)(const rx_frame *f);
    bool frame_over_max_ok;  // a frame's LEN may exceed max_frame (http: the index before it)
    bool reframe;            // head() + data + tail of every frame rebuilds the stream (line, len, hdr)
};

// ---- a growing byte string ----
struct fz_str {
    char *p;
    size_t len, cap;
};

static void fz_put(struct fz_str *s, const void *p, size_t n)
{
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n)
            cap *= 2;
        s->p = realloc(s->p, cap);
        if (s->p == NULL)
            abort();
        s->cap = cap;
    }
    if (n > 0)
        memcpy(s->p + s->len, p, n);
    s->len += n;
}

static void fz_put_u64(struct fz_str *s, uint64_t v)
{
    fz_put(s, &v, sizeof v);
}

// ---- one run of the stream through a fresh decoder ----
struct fz_run {
    const struct fuzz_spec *spec;
    const char *mode;
    struct fz_str ts;       // the transcript
    struct fz_str pending;  // the streamed frame being joined
    bool in_frame;          // pieces of a streamed frame have come, not its LAST
    uint64_t total;         // its TOTAL
    bool refused, bad;
    bool stop;              // EMIT returns -1 after every kept frame (or piece)
    bool emitted;           // this call emitted something
    struct fz_str rebuilt;  // reframe: head + data + tail of every frame
};

static _Noreturn void fz_broken(const struct fz_run *r, const char *what)
{
    fprintf(stderr, "fuzz %s (%s feed): %s\n", r->spec->codec.name, r->mode, what);
    abort();
}

static void fz_frame_done(struct fz_run *r, const rx_frame *whole)
{
    const struct fuzz_spec *sp = r->spec;
    // (A refusal's bytes are its reason, not the peer's: no limit applies to them.)
    if (!sp->frame_over_max_ok && !(whole->flags & RX_FRAME_REFUSED) && whole->len > sp->codec.max_frame)
        fz_broken(r, "a frame longer than max_frame");
    if (sp->check != NULL) {
        const char *why = sp->check(&sp->codec, whole);
        if (why != NULL)
            fz_broken(r, why);
    }
    fz_put(&r->ts, "F", 1);
    fz_put_u64(&r->ts, whole->type);
    fz_put_u64(&r->ts, (whole->flags & RX_FRAME_REFUSED) != 0);
    fz_put_u64(&r->ts, whole->len);
    fz_put(&r->ts, whole->data, whole->len);
    if (sp->reframe && !(whole->flags & RX_FRAME_REFUSED)) {
        char head[RX_HEAD_MAX];
        size_t h = sp->codec.head(&sp->codec, whole->type, whole->len, head);
        if (h > RX_HEAD_MAX)
            fz_broken(r, "a decoded frame that head() cannot frame");
        fz_put(&r->rebuilt, head, h);
        fz_put(&r->rebuilt, whole->data, whole->len);
        fz_put(&r->rebuilt, sp->codec.tail, sp->codec.tail_len);
    }
}

static int fz_emit(void *ctx, const rx_frame *f)
{
    struct fz_run *r = ctx;
    if (r->refused)
        fz_broken(r, "a frame emitted after a refusal");
    if (f->len > 0 && f->data == NULL)
        fz_broken(r, "a frame with bytes and no data pointer");
    if (r->spec->keep != NULL && !r->spec->keep(f))
        return 0;
    r->emitted = true;
    bool first = f->flags & RX_FRAME_FIRST, last = f->flags & RX_FRAME_LAST;
    if (f->flags & RX_FRAME_REFUSED) {
        if (!first || !last || r->in_frame)
            fz_broken(r, "a refusal that is not one whole last frame");
        r->refused = true;
    }
    if (first && r->in_frame)
        fz_broken(r, "a FIRST piece inside a streamed frame");
    if (!first && !r->in_frame)
        fz_broken(r, "a piece without FIRST outside a streamed frame");
    if (first && last) {
        if (f->len != f->total)
            fz_broken(r, "a whole frame whose LEN is not its TOTAL");
        fz_frame_done(r, f);
    } else {
        if (first) {
            r->in_frame = true;
            r->total = f->total;
            r->pending.len = 0;
        } else if (f->total != r->total) {
            fz_broken(r, "the pieces of one frame with different TOTALs");
        }
        fz_put(&r->pending, f->data, f->len);
        if (r->pending.len > r->total)
            fz_broken(r, "pieces adding up to more than their TOTAL");
        if (last) {
            if (r->pending.len != r->total)
                fz_broken(r, "pieces adding up to less than their TOTAL at LAST");
            r->in_frame = false;
            rx_frame whole = {.data = r->pending.p, .len = r->pending.len, .type = f->type,
                              .flags = RX_FRAME_FIRST | RX_FRAME_LAST | (f->flags & RX_FRAME_REFUSED),
                              .total = r->total};
            fz_frame_done(r, &whole);
        }
    }
    return r->stop ? -1 : 0;
}

// conn.c's input_limit: how much a connection may hold of a partial frame.
static size_t fz_input_limit(const rx_codec *k)
{
    size_t cap = k->chunk == 0 || k->max_frame < k->chunk ? k->max_frame : k->chunk;
    return cap > SIZE_MAX - RX_HEAD_MAX - 1 ? SIZE_MAX : cap + RX_HEAD_MAX + 1;
}

// One decode call on a fresh copy of IN[0..LEN); returns what it consumed, or -1.
static ssize_t fz_decode(struct fz_run *r, void *state, const char *in, size_t len)
{
    const rx_codec *c = &r->spec->codec;
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        abort();
    if (len > 0)
        memcpy(copy, in, len);
    bool was_refused = r->refused;
    r->emitted = false;
    ssize_t used = c->decode(c, state, copy, len, fz_emit, r);
    free(copy);
    if (used < -1 || used > (ssize_t)len)
        fz_broken(r, "decode returned less than -1 or more than it was given");
    if (used >= 0 && (was_refused || r->refused) && (size_t)used != len)
        fz_broken(r, "after a refusal, a call that did not consume everything");
    // (A call stopped by EMIT leaves the rest to be decoded at once, not held.)
    if (used >= 0 && !(r->stop && r->emitted) && len - (size_t)used >= fz_input_limit(c))
        fz_broken(r, "left over as much as the connection may hold: the codec did not judge its limit");
    return used;
}

// Feeds STREAM[0..N) in reads of the sizes in CUTS (cycled; NCUTS 0: one read of everything),
// holding what the decoder leaves like conn.c does (a read into a non-empty buffer gets at
// most the room left under the input limit). Returns the transcript.
static struct fz_str fz_feed(const struct fuzz_spec *spec, const char *mode, const char *stream,
                             size_t n, const size_t *cuts, size_t ncuts, bool stop,
                             struct fz_str *rebuilt, size_t *consumed)
{
    const rx_codec *c = &spec->codec;
    struct fz_run r = {.spec = spec, .mode = mode, .stop = stop};
    void *state = c->create ? c->create(c) : NULL;
    if (c->create != NULL && state == NULL)
        abort();
    struct fz_str held = {0};
    size_t off = 0, k = 0, eaten = 0;
    size_t limit = fz_input_limit(c);
    while (off < n && !r.bad) {
        size_t piece = ncuts == 0 ? n - off : cuts[k++ % ncuts];
        if (piece > n - off)
            piece = n - off;
        if (held.len > 0 && piece > limit - held.len)
            piece = limit - held.len;  // the room conn_read's buf_reserve_capped leaves
        fz_put(&held, stream + off, piece);
        off += piece;
        // Stopped by EMIT, the caller decodes again what is left: each call must move on.
        for (unsigned tries = 0;; tries++) {
            ssize_t used = fz_decode(&r, state, held.p, held.len);
            if (used < 0) {
                r.bad = true;
                fz_put(&r.ts, "B", 1);
                break;
            }
            memmove(held.p, held.p + used, held.len - (size_t)used);
            held.len -= (size_t)used;
            eaten += (size_t)used;
            if (!stop || !r.emitted || held.len == 0 || r.refused)
                break;
            if (tries > n + 2)
                fz_broken(&r, "a decoder stopped by EMIT that never moves on");
        }
    }
    if (r.in_frame) {
        fz_put(&r.ts, "P", 1);
        fz_put(&r.ts, r.pending.p, r.pending.len);
        if (spec->reframe) {  // its head was consumed, and the pieces so far
            char head[RX_HEAD_MAX];
            size_t h = c->head(c, 0, r.total, head);
            fz_put(&r.rebuilt, head, h <= RX_HEAD_MAX ? h : 0);
            fz_put(&r.rebuilt, r.pending.p, r.pending.len);
        }
    }
    if (!r.bad) {
        fz_put(&r.ts, "L", 1);
        fz_put_u64(&r.ts, held.len);
    }
    if (c->destroy != NULL)
        c->destroy(state);
    free(held.p);
    free(r.pending.p);
    if (rebuilt != NULL)
        *rebuilt = r.rebuilt;
    else
        free(r.rebuilt.p);
    if (consumed != NULL)
        *consumed = r.bad ? SIZE_MAX : eaten;
    return r.ts;
}

static void fz_compare(const struct fuzz_spec *spec, const char *mode, const struct fz_str *got,
                       const struct fz_str *want, size_t cut)
{
    if (got->len == want->len && memcmp(got->p, want->p, want->len) == 0)
        return;
    size_t i = 0;
    while (i < got->len && i < want->len && got->p[i] == want->p[i])
        i++;
    fprintf(stderr, "fuzz %s: the %s feed (cut at %zu) gives another transcript than the whole "
            "feed: they differ at transcript byte %zu (lengths %zu and %zu)\n",
            spec->codec.name, mode, cut, i, got->len, want->len);
    abort();
}

// The driver: SPEC's codec over STREAM, cut as SEED says.
static void fuzz_codec(const struct fuzz_spec *spec, const char *stream, size_t n, unsigned seed)
{
    size_t cut = n == 0 ? 0 : seed % (n + 1);
    size_t two[2] = {cut ? cut : 1, n + 1};
    size_t small[64], one = 1;
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < 64; i++) {
        x = x * 1103515245u + 12345u;
        small[i] = 1 + (x >> 16) % 16;
    }
    struct fz_str rebuilt;
    size_t consumed;
    struct fz_str whole = fz_feed(spec, "whole", stream, n, NULL, 0, false, &rebuilt, &consumed);
    if (spec->reframe) {
        // Every frame, framed again, is the stream's bytes (a prefix: the rest is a partial
        // frame, or the bad one); when nothing was bad, the bytes consumed, but for the head
        // of a streamed frame none of whose pieces has come yet.
        if (rebuilt.len > n || (rebuilt.len > 0 && memcmp(rebuilt.p, stream, rebuilt.len) != 0) ||
            (consumed != SIZE_MAX && (consumed < rebuilt.len || consumed - rebuilt.len > RX_HEAD_MAX))) {
            fprintf(stderr, "fuzz %s: the frames framed again (%zu bytes) are not the %zu bytes "
                    "consumed of the stream\n", spec->codec.name, rebuilt.len, consumed);
            abort();
        }
    }
    free(rebuilt.p);
    struct {
        const char *mode;
        const size_t *cuts;
        size_t ncuts;
        bool stop;
    } feeds[] = {
        {"split in two", two, 2, false},
        {"small pieces", small, 64, false},
        {"byte at a time", &one, 1, false},
        {"stop after each frame", NULL, 0, true},
    };
    for (size_t i = 0; i < sizeof feeds / sizeof *feeds; i++) {
        struct fz_str t = fz_feed(spec, feeds[i].mode, stream, n, feeds[i].cuts, feeds[i].ncuts,
                                  feeds[i].stop, NULL, NULL);
        fz_compare(spec, feeds[i].mode, &t, &whole, cut);
        free(t.p);
    }
    free(whole.p);
}

// The library logs refusals ("resp: Protocol error: ..."): formatted (that code runs), not printed.
static void fz_quiet(void *ctx, enum rx_log_level level, const char *thread, const char *line)
{
    (void)ctx, (void)level, (void)thread, (void)line;
}

static void fuzz_init(void)
{
    static bool done;
    if (!done) {
        rx_log_set_sink(fz_quiet, NULL);
        rx_log_set_level(RX_LOG_DEBUG);
        done = true;
    }
}

#endif
