// buffer.h: a byte queue that grows on demand and gives its memory back as it empties.
// A connection's input buffer: bytes read but not yet cut into frames by its codec.
//
// Thread rule: a struct buffer belongs to one thread at a time (its connection's io thread);
// nothing here locks. The one global, buf_stats, is per thread (see below).
#ifndef RX_BUFFER_H
#define RX_BUFFER_H

#include <stddef.h>

// The layout. Bytes enter at `end` and leave at `start`:
//
//   data           start                  end                 cap
//    |               |                     |                   |
//    v               v                     v                   v
//    +---------------+---------------------+-------------------+
//    |  consumed     |  pending bytes      |  free space       |
//    |  (dead)       |  buf_peek()         |  buf_reserve()    |
//    +---------------+---------------------+-------------------+
//                    |<---- buf_len() ---->|
//
//   buf_append / buf_commit   move `end` right   (bytes came in)
//   buf_consume               moves `start` right (bytes went out)
//
// Memory policy, so that a connection pays for what it holds right now,
// not for the most it ever held, and no byte is copied more than it must be:
//  1. A buffer that holds nothing owns no memory: data == NULL, cap == 0.
//     An idle connection costs its struct and nothing more.
//  2. It grows on demand. When the free space at the end is too small, the
//     dead prefix is reclaimed by moving the pending bytes to the front, but
//     only when that moves no more bytes than it frees (buf_len() <= start):
//     every dead byte is then paid for by the byte that was consumed there,
//     so over a buffer's life it moves at most as many bytes as it consumed.
//     Otherwise it doubles (from BUF_MIN_CAP), so N bytes cost O(log N)
//     reallocations.
//  3. The moment buf_consume takes the last byte, the memory is freed.
//  4. When buf_consume leaves it at most a sixteenth full and it is bigger
//     than BUF_SHRINK_MIN, it halves until it is between an eighth and a
//     quarter full. Rule 2 grows it only once it is about half full, so after
//     a shrink it must about double its contents before it grows again, and
//     after a growth lose about three quarters of them before it shrinks: a
//     client swinging between --max-output and half of it (03's back-
//     pressure, pause and resume) never makes it flip between two sizes.
//     (buffer_test.c holds it to both promises.)
// buf_reserve has no ceiling: how much a buffer may hold is the caller's
// decision. An input buffer, whose holding the codec bounds (max_frame plus
// a header, or a streaming codec's chunk), uses buf_reserve_capped, which
// never grows past its LIMIT (buffer_test.c checks that too).

// Smallest allocation: below this, the allocator's own overhead dominates.
#define BUF_MIN_CAP 4096
// Buffers up to this size are not shrunk until they empty (rule 4): a
// reallocation to save less than this costs more than it saves.
#define BUF_SHRINK_MIN (64 * 1024)

struct buffer {
    char *data;    // NULL while cap == 0
    size_t start;  // first pending byte
    size_t end;    // one past the last pending byte
    size_t cap;    // bytes allocated at data
};

// A zeroed struct buffer is a valid empty buffer; this spells it out.
#define BUFFER_EMPTY ((struct buffer){NULL, 0, 0, 0})

// How many bytes are pending.
static inline size_t buf_len(const struct buffer *b) { return b->end - b->start; }

// The first pending byte (valid for buf_len() bytes, until the next call
// that changes B). NULL when the buffer owns no memory.
static inline const char *buf_peek(const struct buffer *b)
{
    return b->data == NULL ? NULL : b->data + b->start;
}

// Makes room for at least N more bytes at the end and returns where they
// go; *ROOM gets how many bytes may be written there (>= N). Write them,
// then buf_commit() how many you wrote. Returns NULL if out of memory
// (the buffer is unchanged).
char *buf_reserve(struct buffer *b, size_t n, size_t *room);

// buf_reserve for an input buffer, whose holding is bounded by the protocol: room for up to
// N more bytes (fewer when LIMIT - buf_len() is less), with the capacity kept at or below
// max(LIMIT, BUF_MIN_CAP). Below it, rule 2 as in buf_reserve; at it, the dead prefix is
// reclaimed whatever it costs (growing is not allowed, so moving is the only way left: at
// most LIMIT bytes moved per call). Returns where to write, with *ROOM >= 1; or, when the
// buffer already holds LIMIT bytes, a non-NULL pointer with *ROOM == 0 (the caller's
// request is larger than its limit); NULL if out of memory (the buffer is unchanged).
char *buf_reserve_capped(struct buffer *b, size_t n, size_t limit, size_t *room);

// Adds N bytes just written into the space buf_reserve() returned.
void buf_commit(struct buffer *b, size_t n);

// Copies N bytes from P to the end. Returns 0, or -1 if out of memory
// (the buffer is unchanged).
int buf_append(struct buffer *b, const void *p, size_t n);

// Drops the first N pending bytes (N <= buf_len()), then applies rules 3 and 4.
void buf_consume(struct buffer *b, size_t n);

// Frees the memory and leaves B empty (and valid).
void buf_free(struct buffer *b);

// What the buffers of the calling thread have cost so far, for buffer_test.c
// and the benchmarks. _Thread_local, not atomic: every io thread works on its
// own buffers, so a per-thread counter costs a plain increment and no cache
// line bounces between cores. A thread reads only its own; whoever wants a
// process total has each thread report its counters before it ends.
struct buf_stats {
    unsigned long long allocs;   // blocks allocated for an empty buffer (rule 1 -> 2)
    unsigned long long resizes;  // reallocations of a block in use (rules 2 and 4)
    unsigned long long moved;    // bytes memmoved to the front (rule 2, and before a resize)
};
extern _Thread_local struct buf_stats buf_stats;

#endif
