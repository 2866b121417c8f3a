// buffer_test.c: holds buffer.h's memory policy to its promises, with buf_stats as the witness,
// and rxbuf.h's shared buffers and output queue (struct outq) to theirs, with rxbuf_alive.
// A test binary (make lib/buffer_test; test.bats runs it as "unit: buffer_test"): no sockets.
//
// Part 1, the byte queue (buffer.c, as 07 tested it). A queue sees one pattern above all: a client reading slower than it sends.
// The server appends what it read (up to 64 KiB per turn), the kernel takes a piece of it,
// and back-pressure pauses reading past --max-output and resumes at half of it. simulate()
// replays that pattern on one buffer, checking every byte that leaves it, and the checks
// below read buf_stats afterwards:
//   1. bytes moved per byte appended stay at most 1 (rule 2), whatever the reader's pace;
//   2. pause/resume cycles reallocate nothing once the buffer has grown (rule 4);
//   3. an empty buffer owns no memory (rules 1 and 3);
//   4. a growing queue moves no more bytes than its reader consumed (rule 2);
//   5. appends of any size onto a consumed prefix fit, and keep every byte in order;
//   6. buf_reserve_capped (the io thread's input buffer) never grows past its ceiling, gives
//      room until the buffer holds LIMIT bytes and none at LIMIT, and keeps every byte in order;
//   7. buf_stats is per thread: another thread's buffers never show in this thread's counters.
//   8. rules 2 and 4 hold at their exact boundaries (compact at buf_len() == start, shrink at
//      a sixteenth full, not one byte more), read from the struct's cap and start.
// Part 2, the output queue (rxbuf.c), against a plain model of it: random pushes (counted and
// notices, shared by two queues as a broadcast shares them), random partial consumes across
// entries, the ring growing while it wraps; after every step the entries, their offsets, the
// unsent bytes, `bytes` and `notice_bytes` must match the model exactly, and every rx_buf must
// hold exactly the references its holders took (released exactly once: rxbuf_alive returns to
// where it started, and never an early free, which ASan would report). And hold/release from
// several threads at once (SAN=thread checks the atomics).
#include "buffer.h"
#include "rxbuf.h"
#include "test_util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (64 * 1024)  // what the server appends per turn at most (READ_CHUNK)

// The bytes of the stream: a pattern that shows a byte out of place (a compaction that moved
// the wrong range, a consume from the wrong end). It repeats every PERIOD bytes, a prime, so
// no power-of-two shift (what a buffer bug makes) maps it onto itself; and it lies in one
// table, so a run of N stream bytes is one pointer: appended and compared with memcpy and
// memcmp, not byte by byte (the SAN=thread build would take a minute otherwise).
#define PERIOD 65521
#define RUN_MAX (512 * 1024)  // the longest run asked for at once
static unsigned char pattern[PERIOD + RUN_MAX];

static void pattern_init(void)
{
    for (size_t i = 0; i < sizeof pattern; i++) {
        size_t j = i % PERIOD;
        pattern[i] = (unsigned char)(j * 131 + (j >> 13));
    }
}

// Stream bytes [I, I + N), for N <= RUN_MAX.
static const unsigned char *bytes_at(unsigned long long i) { return pattern + i % PERIOD; }

// 1 if P holds stream bytes [I, I + N), any N.
static int bytes_ok(const void *p, unsigned long long i, size_t n)
{
    const char *q = p;
    for (size_t done = 0; done < n; done += RUN_MAX) {
        size_t k = n - done < RUN_MAX ? n - done : RUN_MAX;
        if (memcmp(q + done, bytes_at(i + done), k) != 0)
            return 0;
    }
    return 1;
}

struct run {
    unsigned long long appended, consumed;
    unsigned long long pauses, resumes;
    unsigned long long resizes_after_warmup;  // reallocations from the 2nd resume to the last
    size_t max_cap;
};

// Appends CHUNK bytes per turn while not paused and consumes PIECE bytes per
// turn (the reader's pace), pausing past MAX queued and resuming at MAX / 2, as
// 03's conn_watch does, until TOTAL bytes went in. Returns 0, or -1 after a
// FAIL line (out of memory, or a byte that came out wrong).
static int simulate(size_t max, size_t piece, unsigned long long total, struct run *r)
{
    struct buffer b = BUFFER_EMPTY;
    unsigned long long warm_resizes = 0, last_resizes = 0;
    int paused = 0;
    memset(r, 0, sizeof *r);
    while (r->appended < total || buf_len(&b) > 0) {
        if (!paused && r->appended < total) {
            if (buf_append(&b, bytes_at(r->appended), CHUNK) == -1) {
                expect(0, "buf_append: out of memory");
                buf_free(&b);
                return -1;
            }
            r->appended += CHUNK;
            if (buf_len(&b) > max) {
                paused = 1;
                r->pauses++;
            }
        }
        if (b.cap > r->max_cap)
            r->max_cap = b.cap;
        size_t n = buf_len(&b) < piece ? buf_len(&b) : piece;
        const unsigned char *p = (const unsigned char *)buf_peek(&b);
        if (!bytes_ok(p, r->consumed, n)) {
            size_t k = 0;
            while (p[k] == bytes_at(r->consumed)[k])
                k++;
            printf("FAIL: byte %llu came out as %u, want %u\n", r->consumed + k, p[k],
                   bytes_at(r->consumed)[k]);
            failures++;
            buf_free(&b);
            return -1;
        }
        buf_consume(&b, n);
        r->consumed += n;
        if (paused && buf_len(&b) <= max / 2) {
            paused = 0;
            if (++r->resumes == 2)
                warm_resizes = buf_stats.resizes;
            last_resizes = buf_stats.resizes;
        }
    }
    // Not counting the final drain to empty: shrinking then is rule 4 doing its job.
    r->resizes_after_warmup = r->resumes >= 2 ? last_resizes - warm_resizes : 0;
    buf_free(&b);
    return 0;
}

// 1. Rule 2: bytes moved per byte appended, for readers of several paces.
static void test_moved_per_byte(void)
{
    static const size_t maxes[] = {(size_t)4 << 20, (size_t)1 << 20, 65536, 1024};
    static const size_t pieces[] = {1024, 16 * 1024, 48 * 1024, 63 * 1024};
    for (size_t m = 0; m < sizeof maxes / sizeof *maxes; m++) {
        for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
            struct run r;
            unsigned long long moved0 = buf_stats.moved;
            // Enough for a few fill-and-drain cycles at every limit (8 MiB, or 4x the limit):
            // the bound holds at every moment, so more bytes prove no more, and the SAN=thread
            // build checks each byte about 20 times slower.
            unsigned long long total = (unsigned long long)8 << 20;
            if (total < 4ULL * maxes[m])
                total = 4ULL * maxes[m];
            if (simulate(maxes[m], pieces[p], total, &r) == -1)
                return;
            unsigned long long moved = buf_stats.moved - moved0;
            char what[200];
            snprintf(what, sizeof what,
                     "--max-output %zu, reader takes %zu per turn: %llu bytes moved for %llu "
                     "appended (%.3f per byte, want <= 1), %llu pauses",
                     maxes[m], pieces[p], moved, r.appended, (double)moved / (double)r.appended,
                     r.pauses);
            expect(moved <= r.appended, "%s", what);
        }
    }
}

// 2. Rule 4: once grown, pausing at --max-output and resuming at half of it
// must not reallocate on every cycle (the buffer flipping between two sizes).
static void test_pause_resume(void)
{
    static const size_t maxes[] = {(size_t)4 << 20, (size_t)1 << 20, 256 * 1024, 65536};
    for (size_t m = 0; m < sizeof maxes / sizeof *maxes; m++) {
        struct run r;
        // The reader takes a quarter of a chunk per turn: the queue climbs to
        // the pause, then drains to the resume, over and over.
        unsigned long long total = (unsigned long long)maxes[m] * 30;
        if (simulate(maxes[m], CHUNK / 4, total, &r) == -1)
            return;
        char what[200];
        snprintf(what, sizeof what,
                 "--max-output %zu: %llu pause/resume cycles, %llu reallocations after the "
                 "first 2 (want 0), largest block %zu",
                 maxes[m], r.resumes, r.resizes_after_warmup, r.max_cap);
        expect(r.resumes >= 20 && r.resizes_after_warmup == 0, "%s", what);
    }
}

// 3. Rules 1 and 3: an empty buffer owns nothing, however much it held.
static void test_empty_owns_nothing(void)
{
    static char big[200000];
    struct buffer b = BUFFER_EMPTY;
    unsigned long long allocs0 = buf_stats.allocs;
    int ok = buf_append(&b, big, sizeof big) == 0 && b.data != NULL;
    buf_consume(&b, 1000);
    buf_consume(&b, buf_len(&b));
    ok = ok && b.data == NULL && b.cap == 0 && buf_len(&b) == 0;
    expect(ok && buf_stats.allocs == allocs0 + 1,
          "a buffer that held 200000 bytes owns no memory once they are consumed");
    buf_free(&b);
}

// 4. Rule 2's promise where growing is the temptation: a queue that keeps
// growing while its reader takes only a little (1 KiB per 64 KiB appended,
// up to 32 MiB). Every byte moved must be paid for by a byte consumed.
// Compacting before each doubling would move the whole queue every time
// (about 64 MiB in all) to reclaim a dead prefix of a few KiB that realloc
// keeps at no cost anyway.
static void test_growth_moves_only_what_was_consumed(void)
{
    static char chunk[CHUNK];
    struct buffer b = BUFFER_EMPTY;
    unsigned long long moved0 = buf_stats.moved, appended = 0, consumed = 0;
    while (buf_len(&b) < (size_t)32 << 20) {
        if (buf_append(&b, chunk, CHUNK) == -1) {
            expect(0, "buf_append: out of memory");
            buf_free(&b);
            return;
        }
        appended += CHUNK;
        buf_consume(&b, 1024);
        consumed += 1024;
    }
    unsigned long long moved = buf_stats.moved - moved0;
    char what[200];
    snprintf(what, sizeof what,
             "a queue growing to %zu bytes, its reader taking 1 KiB per 64 KiB: %llu bytes moved "
             "for %llu appended and %llu consumed (want <= consumed)",
             buf_len(&b), moved, appended, consumed);
    expect(moved <= consumed, "%s", what);
    buf_free(&b);
}

// Random appends of any size (up to four times the block) and random consumes, checked
// byte for byte against the running sequence: an append that grows a block with a
// consumed prefix in front must still fit (run it under SAN=address to see an overflow
// as a report; the normal build checks the bytes and the room).
static void test_random_append_consume(void)
{
    struct buffer b = BUFFER_EMPTY;
    const size_t most = 300000;  // the largest append
    unsigned long long in = 0, out = 0;
    unsigned long long seed = 12345, resizes0 = buf_stats.resizes;
    int ok = 1;
    // 1000 steps (each copies and checks up to 300 KB: more cost seconds, not coverage); the
    // check below requires that the buffer was reallocated often enough to mean something.
    for (int step = 0; step < 1000 && ok; step++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t cap = b.cap ? b.cap : BUF_MIN_CAP;
        size_t n = (size_t)((seed >> 33) % (4 * cap < most ? 4 * cap : most));
        if ((seed >> 20) & 1) {
            size_t room = 0;
            if (buf_reserve(&b, n, &room) == NULL || room < n) {
                ok = 0;
                break;
            }
            if (buf_append(&b, bytes_at(in), n) == -1) {
                ok = 0;
                break;
            }
            in += n;
        } else {
            size_t k = buf_len(&b) ? (size_t)((seed >> 7) % buf_len(&b)) + 1 : 0;
            ok = bytes_ok(buf_peek(&b), out, k);
            buf_consume(&b, k);
            out += k;
        }
    }
    ok = ok && bytes_ok(buf_peek(&b), out, buf_len(&b));
    buf_free(&b);
    unsigned long long resizes = buf_stats.resizes - resizes0;
    char what[200];
    snprintf(what, sizeof what,
             "random appends (up to 4x the block, onto a consumed prefix) and consumes keep "
             "every byte, in order (%llu MiB in, %llu reallocations)", in >> 20, resizes);
    expect(ok && resizes >= 20, "%s", what);
}

// 6. buf_reserve_capped: random reserves (of up to twice the limit), commits of part or all
// of the room, and consumes, for limits below BUF_MIN_CAP, between, and at a power of two.
// The capacity must stay at or below max(LIMIT, BUF_MIN_CAP) at every step, the room must be
// at least 1 and at most LIMIT - buf_len() below the limit, and 0 at it; and the buffer
// must reach its ceiling (else the test proved nothing about it).
static void test_reserve_capped(void)
{
    static const size_t limits[] = {100, 10000, 65536, 100000};
    for (size_t l = 0; l < sizeof limits / sizeof *limits; l++) {
        size_t limit = limits[l], ceiling = limit > BUF_MIN_CAP ? limit : BUF_MIN_CAP;
        struct buffer b = BUFFER_EMPTY;
        unsigned long long in = 0, out = 0, seed = 777 + l;
        size_t max_cap = 0;
        int ok = 1, full = 0;
        for (int step = 0; step < 20000 && ok; step++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            if ((seed >> 20) % 3 != 0) {  // two reserves for each consume: it fills up
                size_t n = (size_t)((seed >> 33) % (2 * ceiling)) + 1, room = 99;
                char *p = buf_reserve_capped(&b, n, limit, &room);
                size_t len = buf_len(&b);
                if (b.cap > max_cap)
                    max_cap = b.cap;
                if (p == NULL || b.cap > ceiling) {
                    ok = 0;
                    break;
                }
                if (len >= ceiling) {
                    ok = room == 0 && len == ceiling;
                    full = 1;
                    continue;
                }
                if (room < 1 || room > ceiling - len || b.cap - b.end < room) {
                    ok = 0;
                    break;
                }
                size_t k = (seed >> 5) & 1 ? room : (size_t)((seed >> 9) % room) + 1;
                memcpy(p, bytes_at(in), k);
                buf_commit(&b, k);
                in += k;
            } else {
                size_t k = buf_len(&b) ? (size_t)((seed >> 7) % buf_len(&b)) + 1 : 0;
                ok = bytes_ok(buf_peek(&b), out, k);
                buf_consume(&b, k);
                out += k;
            }
        }
        ok = ok && bytes_ok(buf_peek(&b), out, buf_len(&b));
        buf_free(&b);
        char what[200];
        snprintf(what, sizeof what,
                 "buf_reserve_capped, limit %zu: capacity at most %zu (largest %zu), room 0 only "
                 "when full (reached: %s), every byte in order",
                 limit, ceiling, max_cap, full ? "yes" : "no");
        expect(ok && full && max_cap <= ceiling, "%s", what);
    }
}

// 7. buf_stats is _Thread_local (io threads use buffers at once): a thread's counters see
// only its own buffers.
static void *other_thread(void *arg)
{
    unsigned long long *seen = arg;
    struct buffer b = BUFFER_EMPTY;
    static char bytes[10000];
    unsigned long long allocs0 = buf_stats.allocs;
    for (int i = 0; i < 100; i++) {
        if (buf_append(&b, bytes, sizeof bytes) == -1)
            break;
        buf_consume(&b, buf_len(&b));
    }
    *seen = buf_stats.allocs - allocs0;
    buf_free(&b);
    return NULL;
}

static void test_stats_per_thread(void)
{
    unsigned long long mine0 = buf_stats.allocs, theirs = 0;
    pthread_t t;
    if (pthread_create(&t, NULL, other_thread, &theirs) != 0) {
        expect(0, "pthread_create");
        return;
    }
    pthread_join(t, NULL);
    char what[200];
    snprintf(what, sizeof what,
             "buf_stats is per thread: another thread's 100 allocations show in its counters "
             "(%llu) and not in this thread's (%llu)", theirs, buf_stats.allocs - mine0);
    expect(theirs == 100 && buf_stats.allocs == mine0, "%s", what);
}

// ------------------------------------------------------------------ part 2: the output queue

static unsigned refs_of(rx_buf *b) { return atomic_load(&b->refs); }

// The model: every entry pushed, oldest first, with its offset; the references the test holds.
#define MODEL_MAX 20000
struct model {
    struct out_entry e[MODEL_MAX];
    size_t head, n;
};

static uint64_t seed_state = 0x5eed;
static uint64_t rnd(void)
{
    seed_state = seed_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return seed_state >> 17;
}

// Compares Q with M: entries, offsets, notice flags, and both counters. Returns 1 when equal.
static int outq_matches(struct outq *q, const struct model *m, char *why, size_t whylen)
{
    size_t bytes = 0, notice = 0;
    if (q->n != m->n) {
        snprintf(why, whylen, "%zu entries, want %zu", q->n, m->n);
        return 0;
    }
    if (q->n > q->cap || (q->cap & (q->cap - 1)) != 0) {
        snprintf(why, whylen, "%zu entries in a ring of %zu", q->n, q->cap);
        return 0;
    }
    for (size_t i = 0; i < m->n; i++) {
        const struct out_entry *w = &m->e[m->head + i];
        struct out_entry *g = outq_at(q, i);
        if (g->b != w->b || g->off != w->off || g->notice != w->notice) {
            snprintf(why, whylen, "entry %zu: buffer %p off %zu notice %d, want %p %zu %d", i,
                     (void *)g->b, g->off, g->notice, (void *)w->b, w->off, w->notice);
            return 0;
        }
        if (w->notice)
            notice += w->b->len - w->off;
        else
            bytes += w->b->len - w->off;
    }
    if (q->bytes != bytes || q->notice_bytes != notice) {
        snprintf(why, whylen, "bytes %zu notice_bytes %zu, want %zu and %zu", q->bytes,
                 q->notice_bytes, bytes, notice);
        return 0;
    }
    return 1;
}

// The model's consume: N bytes from the front, whole entries dropped.
static void model_consume(struct model *m, size_t n)
{
    while (m->n > 0) {
        struct out_entry *e = &m->e[m->head];
        size_t k = n < e->b->len - e->off ? n : e->b->len - e->off;
        e->off += k;
        n -= k;
        if (e->off < e->b->len)
            break;
        m->head++;
        m->n--;
    }
}

// Two queues (a broadcast pushes the same rx_buf to both), random pushes of counted entries
// and notices (some empty), random consumes that end anywhere (inside an entry, on a
// boundary, across many), checked against the model after every step, with the reference
// counts: each buffer holds 1 (the test's) + one per queue entry still holding it.
static void test_outq_model(void)
{
    static struct model m[2];
    static rx_buf *made[MODEL_MAX];
    size_t nmade = 0;
    unsigned long long alive0 = atomic_load(&rxbuf_alive);
    struct outq q[2] = {{0}, {0}};
    memset(m, 0, sizeof m);
    char why[200] = "";
    int ok = 1, grew_wrapped = 0;
    size_t max_cap = 0, consumes = 0, across = 0, inside = 0;
    for (int step = 0; step < 6000 && ok; step++) {
        uint64_t r = rnd();
        // Bursts of pushes (the ring grows), then bursts of consumes (it drains and wraps).
        int pushing = (step / 50) % 3 != 2 ? r % 4 != 0 : r % 4 == 0;
        if (pushing && nmade < MODEL_MAX) {
            size_t len = r % 16 == 0 ? 0 : (size_t)(rnd() % 300);
            rx_buf *b = rxbuf_new(len);
            if (b == NULL) {
                expect(0, "rxbuf_new: out of memory");
                return;
            }
            for (size_t i = 0; i < len; i++)
                b->data[i] = (char)(nmade * 7 + i);
            made[nmade++] = b;  // the test's own reference, released at the end
            bool notice = rnd() % 5 == 0;
            int both = rnd() % 2;
            for (int k = 0; k < 1 + both; k++) {
                int qi = both ? k : (int)(rnd() % 2);
                struct outq *oq = &q[qi];
                bool wrapped = oq->n > 0 && oq->n == oq->cap && oq->head != 0;
                rxbuf_hold(b);
                if (outq_push(oq, b, notice) == -1) {
                    expect(0, "outq_push: out of memory");
                    return;
                }
                grew_wrapped += wrapped;
                m[qi].e[m[qi].head + m[qi].n++] = (struct out_entry){b, 0, notice};
                if (oq->cap > max_cap)
                    max_cap = oq->cap;
            }
        } else {
            int qi = (int)(r % 2);
            size_t unsent = q[qi].bytes + q[qi].notice_bytes;
            size_t n = unsent == 0 ? 0 : rnd() % 3 == 0 ? unsent : (size_t)(rnd() % (unsent + 1));
            size_t front_left = m[qi].n ? m[qi].e[m[qi].head].b->len - m[qi].e[m[qi].head].off : 0;
            across += n > front_left;
            inside += n < front_left;
            // What a writev of N bytes would have sent: the queue's unsent bytes, in order.
            outq_consume(&q[qi], n);
            model_consume(&m[qi], n);
            consumes++;
        }
        for (int k = 0; k < 2 && ok; k++)
            ok = outq_matches(&q[k], &m[k], why, sizeof why);
        // References: 1 (the test's) + the queue entries holding the buffer.
        if (ok && step % 97 == 0) {
            for (size_t i = 0; i < nmade && ok; i++) {
                unsigned want = 1;
                for (int k = 0; k < 2; k++)
                    for (size_t j = 0; j < m[k].n; j++)
                        want += m[k].e[m[k].head + j].b == made[i];
                if (refs_of(made[i]) != want) {
                    snprintf(why, sizeof why, "buffer %zu holds %u references, want %u", i,
                             refs_of(made[i]), want);
                    ok = 0;
                }
            }
        }
    }
    char what[400];
    snprintf(what, sizeof what,
             "outq against its model: %zu buffers, %zu consumes (%zu across entries, %zu inside "
             "one), ring up to %zu entries, %d growths while wrapped: entries, offsets, bytes "
             "and notice_bytes exact, references exact%s%s",
             nmade, consumes, across, inside, max_cap, grew_wrapped, ok ? "" : ": ", why);
    expect(ok && grew_wrapped > 0 && across > 100 && inside > 100, "%s", what);

    // outq_free drops the queues' references (each once); the test drops its own: every
    // buffer is freed, none twice (ASan would see a double free).
    outq_free(&q[0]);
    outq_free(&q[1]);
    int ones = 1;
    for (size_t i = 0; i < nmade; i++)
        ones = ones && refs_of(made[i]) == 1;
    unsigned long long before = atomic_load(&rxbuf_alive) - alive0;
    for (size_t i = 0; i < nmade; i++)
        rxbuf_release(made[i]);
    unsigned long long after = atomic_load(&rxbuf_alive) - alive0;
    snprintf(what, sizeof what,
             "outq_free releases each queued reference once (every buffer back to 1 reference: "
             "%s); %llu buffers alive before the test's releases, %llu after (want %zu, 0); "
             "the queues are empty and own no memory (%s)",
             ones ? "yes" : "no", before, after, nmade,
             q[0].v == NULL && q[1].v == NULL && q[0].n == 0 && q[0].cap == 0 ? "yes" : "no");
    expect(ones && before == nmade && after == 0 && q[0].v == NULL && q[1].v == NULL &&
              q[0].n == 0 && q[1].cap == 0 && q[0].bytes == 0 && q[1].notice_bytes == 0,
          "%s", what);
}

// The hand-made cases the model run might reach only by chance: a consume that ends exactly on
// an entry's end, one spanning a notice between two counted entries, empty entries dropped as
// they reach the front, and the ring's memory once it drains.
static void test_outq_cases(void)
{
    unsigned long long alive0 = atomic_load(&rxbuf_alive);
    struct outq q = {0};
    rx_buf *a = rxbuf_new(10), *n = rxbuf_new(5), *e = rxbuf_new(0), *b = rxbuf_new(7);
    if (!a || !n || !e || !b) {
        expect(0, "rxbuf_new: out of memory");
        return;
    }
    outq_push(&q, a, false);
    outq_push(&q, n, true);
    outq_push(&q, e, false);
    outq_push(&q, b, false);
    int ok = q.n == 4 && q.bytes == 17 && q.notice_bytes == 5;
    outq_consume(&q, 10);  // exactly the first entry: it goes, the notice is next
    ok = ok && q.n == 3 && outq_at(&q, 0)->b == n && q.bytes == 7 && q.notice_bytes == 5;
    outq_consume(&q, 3);   // inside the notice
    ok = ok && q.n == 3 && outq_at(&q, 0)->off == 3 && q.bytes == 7 && q.notice_bytes == 2;
    outq_consume(&q, 4);   // the notice's last 2, the empty entry, 2 of the last
    ok = ok && q.n == 1 && outq_at(&q, 0)->b == b && outq_at(&q, 0)->off == 2 && q.bytes == 5 &&
         q.notice_bytes == 0;
    outq_consume(&q, 5);
    ok = ok && q.n == 0 && q.bytes == 0 && q.notice_bytes == 0;
    unsigned long long alive = atomic_load(&rxbuf_alive) - alive0;
    expect(ok && alive == 0,
          "outq: a consume ending on an entry's end, one inside a notice, one across a notice, "
          "an empty entry and into the next: counters exact, every buffer freed");

    // The ring's memory: a small ring is kept when it drains (a session sent a message every
    // turn does not allocate every turn), a burst's big ring is given back.
    for (int i = 0; i < 3; i++)
        outq_push(&q, rxbuf_new(1), false);
    outq_consume(&q, 3);
    int kept = q.v != NULL && q.cap == 8;
    for (int i = 0; i < 100; i++)
        outq_push(&q, rxbuf_new(1), false);
    size_t big = q.cap;
    outq_consume(&q, 100);
    expect(kept && big == 128 && q.v == NULL && q.cap == 0 && atomic_load(&rxbuf_alive) == alive0,
          "outq: a drained ring of 8 entries is kept, a drained ring of 128 is freed");
    outq_free(&q);

    // One entry at a time (a reply written before the next is queued) lives in the ring of 1
    // inside the queue: no heap, however many times; a second entry queued meanwhile moves
    // both, oldest first, to a ring of 8 on the heap.
    int inline_only = 1;
    for (int i = 0; i < 5; i++) {
        outq_push(&q, rxbuf_new(4), false);
        inline_only = inline_only && q.cap == 1 && q.v == &q.one;
        outq_consume(&q, 4);
        inline_only = inline_only && q.n == 0 && q.cap == 1 && q.v == &q.one;
    }
    rx_buf *first = rxbuf_new(3), *second = rxbuf_new(2);
    outq_push(&q, first, false);
    outq_consume(&q, 1);
    outq_push(&q, second, true);
    int moved = q.cap == 8 && q.v != &q.one && q.n == 2 && outq_at(&q, 0)->b == first &&
                outq_at(&q, 0)->off == 1 && outq_at(&q, 1)->b == second && q.bytes == 2 &&
                q.notice_bytes == 2;
    outq_free(&q);
    expect(inline_only && moved && q.v == NULL && atomic_load(&rxbuf_alive) == alive0,
           "outq: one entry at a time stays in the queue's own slot (no heap); a second one "
           "moves both, in order and with the first's offset, to a ring of 8");
}

// Shared buffers across threads, as a broadcast shares them with io threads: each thread
// holds and releases every buffer many times; the main thread drops its reference while the
// others still hold theirs. Each buffer must be freed exactly once, by whoever let go last.
#define SHARE_THREADS 4
#define SHARE_BUFS 64

struct share {
    rx_buf **bufs;
    pthread_barrier_t *start;
};

static void *share_thread(void *arg)
{
    struct share *s = arg;
    pthread_barrier_wait(s->start);
    for (int round = 0; round < 2000; round++) {
        for (int i = 0; i < SHARE_BUFS; i++)
            rxbuf_hold(s->bufs[i]);
        for (int i = 0; i < SHARE_BUFS; i++) {
            volatile char c = s->bufs[i]->data[round % 16];  // a use, before letting go
            (void)c;
            rxbuf_release(s->bufs[i]);
        }
    }
    // Our own reference, taken before we started: the last of these frees each buffer.
    for (int i = 0; i < SHARE_BUFS; i++)
        rxbuf_release(s->bufs[i]);
    return NULL;
}

static void test_shared_threads(void)
{
    unsigned long long alive0 = atomic_load(&rxbuf_alive);
    rx_buf *bufs[SHARE_BUFS];
    for (int i = 0; i < SHARE_BUFS; i++) {
        bufs[i] = rxbuf_new(16);
        if (bufs[i] == NULL) {
            expect(0, "rxbuf_new: out of memory");
            return;
        }
        memset(bufs[i]->data, i, 16);
        for (int t = 0; t < SHARE_THREADS; t++)
            rxbuf_hold(bufs[i]);  // one reference per thread, handed over with it
    }
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, SHARE_THREADS + 1);
    pthread_t th[SHARE_THREADS];
    struct share s = {bufs, &start};
    int started = 0;
    for (int t = 0; t < SHARE_THREADS; t++)
        if (pthread_create(&th[t], NULL, share_thread, &s) == 0)
            started++;
    if (started < SHARE_THREADS) {
        expect(0, "pthread_create");
        exit(1);  // the barrier would wait for ever
    }
    pthread_barrier_wait(&start);
    for (int i = 0; i < SHARE_BUFS; i++)
        rxbuf_release(bufs[i]);  // the main thread lets go while the others still work
    for (int t = 0; t < SHARE_THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    unsigned long long alive = atomic_load(&rxbuf_alive) - alive0;
    char what[200];
    snprintf(what, sizeof what,
             "%d buffers shared by %d threads, 2000 holds and releases each: all freed, once "
             "(%llu alive, want 0)", SHARE_BUFS, SHARE_THREADS, alive);
    expect(alive == 0, "%s", what);
}

// 8. Rules 2 and 4 at their exact boundaries, read from the struct itself (cap, start), so a
// `<` for `<=` or a sixteenth for an eighth shows at once. Rule 2: a full BUF_MIN_CAP block
// with K bytes consumed compacts for one more byte exactly when buf_len() <= start (K = half)
// and doubles when K is one less; and compacts only if that makes room (cap - len >= n).
// Rule 4: a block over BUF_SHRINK_MIN shrinks when buf_consume leaves it at most a sixteenth
// full, not one byte more; never at BUF_SHRINK_MIN itself; and halves while the result would
// be at most an eighth full. Every byte is checked after each step.
static struct buffer filled(size_t n, unsigned long long *next)
{
    static unsigned char chunk[CHUNK];
    struct buffer b = BUFFER_EMPTY;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < CHUNK ? n - done : CHUNK;
        for (size_t i = 0; i < k; i++)
            chunk[i] = *bytes_at(*next + done + i);
        if (buf_append(&b, chunk, k) == -1)
            break;
        done += k;
    }
    *next += n;
    return b;
}

static int holds_from(const struct buffer *b, unsigned long long first)
{
    const unsigned char *p = (const unsigned char *)buf_peek(b);
    for (size_t i = 0; i < buf_len(b); i++)
        if (p[i] != *bytes_at(first + i))
            return 0;
    return 1;
}

static void test_exact_boundaries(void)
{
    char what[200];
    // Rule 2: cap BUF_MIN_CAP, full; consume K; ask for N more.
    static const struct { size_t k, n, cap, start; } r2[] = {
        {BUF_MIN_CAP / 2, 1, BUF_MIN_CAP, 0},              // len == start: compact
        {BUF_MIN_CAP / 2 - 1, 1, 2 * BUF_MIN_CAP, BUF_MIN_CAP / 2 - 1},  // len == start + 2: double
        {3000, 3000, BUF_MIN_CAP, 0},                      // compacting makes exactly enough room
        {3000, 3001, 2 * BUF_MIN_CAP, 3000},               // one byte more than it would make
    };
    for (size_t i = 0; i < sizeof r2 / sizeof *r2; i++) {
        unsigned long long next = 0;
        struct buffer b = filled(BUF_MIN_CAP, &next);
        size_t room;
        buf_consume(&b, r2[i].k);
        int ok = b.cap == BUF_MIN_CAP && buf_reserve(&b, r2[i].n, &room) != NULL;
        snprintf(what, sizeof what,
                 "rule 2: a full %d-byte block, %zu consumed, %zu asked for: cap %zu start %zu "
                 "(want cap %zu start %zu), bytes in order",
                 BUF_MIN_CAP, r2[i].k, r2[i].n, b.cap, b.start, r2[i].cap, r2[i].start);
        check(ok && b.cap == r2[i].cap && b.start == r2[i].start && holds_from(&b, r2[i].k), "%s", what);
        buf_free(&b);
    }
    // Rule 4: a block of CAP bytes, full; consume all but LEFT; the capacity after.
    static const struct { size_t cap, left, want; } r4[] = {
        {2 * BUF_SHRINK_MIN, 2 * BUF_SHRINK_MIN / 16, BUF_SHRINK_MIN},  // a sixteenth: shrinks
        {2 * BUF_SHRINK_MIN, 2 * BUF_SHRINK_MIN / 16 + 1, 2 * BUF_SHRINK_MIN},  // one more: not
        {BUF_SHRINK_MIN, 1, BUF_SHRINK_MIN},                 // not bigger than BUF_SHRINK_MIN
        {64 * BUF_SHRINK_MIN, 64 * BUF_SHRINK_MIN / 32, 8 * BUF_SHRINK_MIN},      // a quarter full
        {64 * BUF_SHRINK_MIN, 64 * BUF_SHRINK_MIN / 32 + 1, 16 * BUF_SHRINK_MIN}, // an eighth+
        {64 * BUF_SHRINK_MIN, 1, BUF_SHRINK_MIN},            // halves down to BUF_SHRINK_MIN
    };
    for (size_t i = 0; i < sizeof r4 / sizeof *r4; i++) {
        unsigned long long next = 0;
        struct buffer b = filled(r4[i].cap, &next);
        int ok = b.cap == r4[i].cap;
        buf_consume(&b, r4[i].cap - r4[i].left);
        snprintf(what, sizeof what,
                 "rule 4: a full %zu-byte block consumed down to %zu bytes: cap %zu (want %zu), "
                 "bytes in order",
                 r4[i].cap, r4[i].left, b.cap, r4[i].want);
        check(ok && b.cap == r4[i].want && holds_from(&b, r4[i].cap - r4[i].left), "%s", what);
        buf_free(&b);
    }
}

int main(void)
{
    alarm(600);  // a last resort: every loop here is bounded
    pattern_init();
    test_empty_owns_nothing();
    test_moved_per_byte();
    test_pause_resume();
    test_growth_moves_only_what_was_consumed();
    test_random_append_consume();
    test_reserve_capped();
    test_stats_per_thread();
    test_exact_boundaries();
    test_outq_cases();
    test_outq_model();
    test_shared_threads();
    printf("buffer_test: %s (%llu allocations, %llu reallocations, %llu bytes moved in all)\n",
           failures ? "FAILED" : "passed", buf_stats.allocs, buf_stats.resizes, buf_stats.moved);
    return failures ? 1 : 0;
}
