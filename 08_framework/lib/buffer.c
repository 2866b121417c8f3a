// buffer.c: the growable byte queue of buffer.h, and its memory policy.
// No system calls here, only malloc/realloc/free: the policy is the interesting part.
#include "buffer.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

_Thread_local struct buf_stats buf_stats;

// Moves the pending bytes to the front, so the dead prefix becomes free space.
static void buf_compact(struct buffer *b)
{
    size_t len = buf_len(b);
    if (b->start > 0 && len > 0) {
        memmove(b->data, b->data + b->start, len);
        buf_stats.moved += len;
    }
    b->start = 0;
    b->end = len;
}

// Reallocates to exactly NEW_CAP bytes (>= buf_len()). Returns 0 or -1.
static int buf_resize(struct buffer *b, size_t new_cap)
{
    // A smaller block must hold the pending bytes from its start. A bigger
    // one keeps them where they are: realloc copies what it must (and for
    // big blocks glibc remaps pages instead of copying at all), and the dead
    // prefix is reclaimed by a later compaction, when that is cheap (rule 2).
    if (b->end > new_cap)
        buf_compact(b);
    char *p = realloc(b->data, new_cap);
    if (p == NULL)
        return -1;
    if (b->data == NULL)
        buf_stats.allocs++;
    else
        buf_stats.resizes++;
    b->data = p;
    b->cap = new_cap;
    return 0;
}

char *buf_reserve(struct buffer *b, size_t n, size_t *room)
{
    size_t len = buf_len(b);
    if (len == 0) {
        // Nothing pending: the whole buffer is free, no bytes to move.
        b->start = b->end = 0;
    }
    if (b->cap - b->end < n) {
        if (n > SIZE_MAX / 4 - b->end || b->cap > SIZE_MAX / 4)
            return NULL;  // would overflow size_t: as good as out of memory
        if (b->cap - len >= n && len <= b->start) {
            // Rule 2: reclaiming the dead prefix makes room, and moves no
            // more bytes than it frees.
            buf_compact(b);
        } else {
            // Rule 2, otherwise: double, even when compacting alone would
            // make room. Compacting a buffer that is mostly pending bytes
            // frees little and would have to be done again soon: a full
            // 4 MiB queue drained by a slow reader would move 4 MiB for
            // every 64 KiB appended.
            // Growing keeps the dead prefix (buf_resize), so the room is what
            // lies past `end`, not past `len`: sizing for len + n would write
            // past the block when a consumed prefix is still in front.
            size_t new_cap = b->cap > 0 ? b->cap * 2 : BUF_MIN_CAP;
            while (new_cap - b->end < n)
                new_cap *= 2;  // cannot overflow: end + n <= SIZE_MAX / 4
            if (buf_resize(b, new_cap) == -1)
                return NULL;
        }
    }
    assert(b->cap - b->end >= n);
    *room = b->cap - b->end;
    return b->data + b->end;
}

char *buf_reserve_capped(struct buffer *b, size_t n, size_t limit, size_t *room)
{
    size_t len = buf_len(b);
    if (limit < BUF_MIN_CAP)
        limit = BUF_MIN_CAP;
    if (len >= limit) {
        *room = 0;
        return b->data + b->end;  // not NULL: len > 0, so the buffer owns memory
    }
    if (n > limit - len)
        n = limit - len;
    if (len == 0)
        b->start = b->end = 0;
    if (b->cap - b->end < n) {
        if (b->cap - len >= n && (len <= b->start || b->cap >= limit)) {
            // Rule 2's compaction; or at the cap, the only way to make room.
            buf_compact(b);
        } else {
            size_t new_cap = b->cap > 0 ? b->cap * 2 : BUF_MIN_CAP;
            while (new_cap < limit && new_cap - b->end < n)
                new_cap *= 2;
            if (new_cap >= limit) {
                // The last growth: every byte of it may be needed, the dead prefix too.
                new_cap = limit;
                buf_compact(b);
            }
            if (buf_resize(b, new_cap) == -1)
                return NULL;
        }
    }
    assert(b->cap - b->end >= n && b->cap <= limit);
    size_t free_space = b->cap - b->end;
    *room = free_space < limit - len ? free_space : limit - len;
    return b->data + b->end;
}

void buf_commit(struct buffer *b, size_t n)
{
    assert(n <= b->cap - b->end);
    b->end += n;
}

int buf_append(struct buffer *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    size_t room;
    char *dst = buf_reserve(b, n, &room);
    if (dst == NULL)
        return -1;
    memcpy(dst, p, n);
    buf_commit(b, n);
    return 0;
}

void buf_consume(struct buffer *b, size_t n)
{
    assert(n <= buf_len(b));
    b->start += n;
    if (b->start == b->end) {
        // Rule 3: empty again, so give the memory back. An idle connection
        // then holds no buffer at all, whatever it once queued.
        buf_free(b);
    } else if (b->cap > BUF_SHRINK_MIN && buf_len(b) <= b->cap / 16) {
        // Rule 4: mostly empty. Halve, as often as the rule allows, in one
        // realloc, until the result is more than an eighth full (or
        // BUF_SHRINK_MIN big). If the smaller block cannot be had, keeping
        // the big one is fine.
        size_t new_cap = b->cap / 2;
        while (new_cap > BUF_SHRINK_MIN && buf_len(b) <= new_cap / 8)
            new_cap /= 2;
        (void)buf_resize(b, new_cap);
    }
}

void buf_free(struct buffer *b)
{
    free(b->data);
    *b = BUFFER_EMPTY;
}
