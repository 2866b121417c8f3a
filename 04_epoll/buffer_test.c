// buffer_test.c: holds buffer.h's memory policy to its promises, with buf_stats as the witness.
// A test binary (make buffer_test; test.bats runs it), not a server: no sockets, no system calls.
//
// The server's output queue sees one pattern above all: a client reading slower than it sends.
// The server appends what it read (up to 64 KiB per turn), the kernel takes a piece of it,
// and back-pressure pauses reading past --max-output and resumes at half of it. simulate()
// replays that pattern on one buffer, checking every byte that leaves it, and the checks
// below read buf_stats afterwards:
//   1. bytes moved per byte appended stay at most 1 (rule 2), whatever the reader's pace;
//   2. pause/resume cycles reallocate nothing once the buffer has grown (rule 4);
//   3. an empty buffer owns no memory (rules 1 and 3);
//   4. a growing queue moves no more bytes than its reader consumed (rule 2);
//   5. appends of any size onto a consumed prefix fit, and keep every byte in order;
//   6. rules 2 and 4 hold at their exact boundaries (compact at buf_len() == start, shrink at
//      a sixteenth full, not one byte more), read from the struct's cap and start.
#include "buffer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (64 * 1024)  // what the server appends per turn at most (READ_CHUNK)

static int failures;

static void check(int ok, const char *what)
{
    printf("%s: %s\n", ok ? "ok" : "FAIL", what);
    if (!ok)
        failures++;
}

// The byte at stream offset I: a pattern that shows a byte out of place (a
// compaction that moved the wrong range, a consume from the wrong end).
static unsigned char byte_at(unsigned long long i)
{
    return (unsigned char)(i * 131 + (i >> 13));
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
    static unsigned char chunk[CHUNK];
    struct buffer b = BUFFER_EMPTY;
    unsigned long long warm_resizes = 0, last_resizes = 0;
    int paused = 0;
    memset(r, 0, sizeof *r);
    while (r->appended < total || buf_len(&b) > 0) {
        if (!paused && r->appended < total) {
            for (size_t k = 0; k < CHUNK; k++)
                chunk[k] = byte_at(r->appended + k);
            if (buf_append(&b, chunk, CHUNK) == -1) {
                check(0, "buf_append: out of memory");
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
        for (size_t k = 0; k < n; k++) {
            if (p[k] != byte_at(r->consumed + k)) {
                printf("FAIL: byte %llu came out as %u, want %u\n", r->consumed + k, p[k],
                       byte_at(r->consumed + k));
                failures++;
                buf_free(&b);
                return -1;
            }
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
            unsigned long long total = (unsigned long long)64 << 20;
            if (simulate(maxes[m], pieces[p], total, &r) == -1)
                return;
            unsigned long long moved = buf_stats.moved - moved0;
            char what[200];
            snprintf(what, sizeof what,
                     "--max-output %zu, reader takes %zu per turn: %llu bytes moved for %llu "
                     "appended (%.3f per byte, want <= 1), %llu pauses",
                     maxes[m], pieces[p], moved, r.appended, (double)moved / (double)r.appended,
                     r.pauses);
            check(moved <= r.appended, what);
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
        unsigned long long total = (unsigned long long)maxes[m] * 60;
        if (simulate(maxes[m], CHUNK / 4, total, &r) == -1)
            return;
        char what[200];
        snprintf(what, sizeof what,
                 "--max-output %zu: %llu pause/resume cycles, %llu reallocations after the "
                 "first 2 (want 0), largest block %zu",
                 maxes[m], r.resumes, r.resizes_after_warmup, r.max_cap);
        check(r.resumes >= 20 && r.resizes_after_warmup == 0, what);
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
    check(ok && buf_stats.allocs == allocs0 + 1,
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
            check(0, "buf_append: out of memory");
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
    check(moved <= consumed, what);
    buf_free(&b);
}

// Random appends of any size (up to four times the block) and random consumes, checked
// byte for byte against the running sequence: an append that grows a block with a
// consumed prefix in front must still fit (run it under SAN=address to see an overflow
// as a report; the normal build checks the bytes and the room).
static void test_random_append_consume(void)
{
    struct buffer b = BUFFER_EMPTY;
    unsigned char chunk[300000];
    unsigned long long in = 0, out = 0;
    unsigned long long seed = 12345;
    int ok = 1;
    for (int step = 0; step < 20000 && ok; step++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t cap = b.cap ? b.cap : BUF_MIN_CAP;
        size_t n = (size_t)((seed >> 33) % (4 * cap < sizeof chunk ? 4 * cap : sizeof chunk));
        if ((seed >> 20) & 1) {
            for (size_t i = 0; i < n; i++)
                chunk[i] = byte_at(in + i);
            size_t room = 0;
            if (buf_reserve(&b, n, &room) == NULL || room < n) {
                ok = 0;
                break;
            }
            if (buf_append(&b, chunk, n) == -1) {
                ok = 0;
                break;
            }
            in += n;
        } else {
            size_t k = buf_len(&b) ? (size_t)((seed >> 7) % buf_len(&b)) + 1 : 0;
            for (size_t i = 0; i < k && ok; i++)
                ok = (unsigned char)buf_peek(&b)[i] == byte_at(out + i);
            buf_consume(&b, k);
            out += k;
        }
    }
    for (size_t i = 0; i < buf_len(&b) && ok; i++)
        ok = (unsigned char)buf_peek(&b)[i] == byte_at(out + i);
    buf_free(&b);
    check(ok, "random appends (up to 4x the block, onto a consumed prefix) and consumes keep every byte, in order");
}

// 6. Rules 2 and 4 at their exact boundaries, read from the struct itself (cap, start), so a
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
            chunk[i] = byte_at(*next + done + i);
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
        if (p[i] != byte_at(first + i))
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
        check(ok && b.cap == r2[i].cap && b.start == r2[i].start && holds_from(&b, r2[i].k), what);
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
        check(ok && b.cap == r4[i].want && holds_from(&b, r4[i].cap - r4[i].left), what);
        buf_free(&b);
    }
}

int main(void)
{
    test_empty_owns_nothing();
    test_moved_per_byte();
    test_pause_resume();
    test_growth_moves_only_what_was_consumed();
    test_random_append_consume();
    test_exact_boundaries();
    printf("buffer_test: %s (%llu allocations, %llu reallocations, %llu bytes moved in all)\n",
           failures ? "FAILED" : "passed", buf_stats.allocs, buf_stats.resizes, buf_stats.moved);
    return failures ? 1 : 0;
}
