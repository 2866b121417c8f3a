// rxbuf.c: the shared, reference-counted message (rx_buf) and a connection's output queue of
// them (outq, a power-of-two ring), as rxbuf.h describes. No sockets: conn.c writes what it holds.
#include "rxbuf.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- shared buffers

atomic_ullong rxbuf_alive;

rx_buf *rxbuf_new(size_t len)
{
    if (len > SIZE_MAX - sizeof(rx_buf)) {
        errno = ENOMEM;
        return NULL;
    }
    rx_buf *b = malloc(sizeof *b + len);
    if (b == NULL)
        return NULL;
    atomic_init(&b->refs, 1);  // the caller's reference
    b->len = len;
    atomic_fetch_add_explicit(&rxbuf_alive, 1, memory_order_relaxed);
    return b;
}

void rxbuf_hold(rx_buf *b)
{
    // Relaxed: whoever calls this already holds a reference, so the buffer cannot be freed
    // meanwhile, and taking one more publishes nothing (the bytes were written before the
    // buffer was handed over, and that hand-over, a task queue, synchronises).
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void rxbuf_release(rx_buf *b)
{
    // acq_rel: the release half orders this holder's last use of the bytes before the
    // decrement; the acquire half makes the thread that drops the last reference see every
    // other holder's uses as finished before it frees the memory.
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
        atomic_fetch_sub_explicit(&rxbuf_alive, 1, memory_order_relaxed);
        free(b);
    }
}

rx_buf *rx_buf_frame(const rx_codec *codec, uint16_t type, const void *msg, size_t len)
{
    char head[RX_HEAD_MAX];
    size_t hlen = codec->head != NULL ? codec->head(codec, type, len, head) : 0;
    // A head longer than RX_HEAD_MAX is a codec's way of saying that it cannot frame a
    // message this long (the u32 length of len and hdr holds at most 4 GiB - 1).
    if (hlen > RX_HEAD_MAX) {
        errno = EMSGSIZE;
        return NULL;
    }
    size_t tlen = codec->tail != NULL ? codec->tail_len : 0;
    if (len > SIZE_MAX - RX_HEAD_MAX - tlen - sizeof(rx_buf)) {
        errno = ENOMEM;
        return NULL;
    }
    rx_buf *b = rxbuf_new(hlen + len + tlen);
    if (b == NULL)
        return NULL;
    memcpy(b->data, head, hlen);
    if (len > 0)
        memcpy(b->data + hlen, msg, len);
    if (tlen > 0)
        memcpy(b->data + hlen + len, codec->tail, tlen);
    return b;
}

void rx_buf_release(rx_buf *b) { rxbuf_release(b); }

size_t rx_buf_len(const rx_buf *b) { return b->len; }

// ---------------------------------------------------------------- output queues

// An empty ring on the heap keeps its memory up to this many entries (8 x 24 bytes): a
// session sent two messages every turn would otherwise allocate and free its ring every turn.
// A bigger ring, grown by a burst, is freed as soon as it empties. One entry at a time needs
// no heap at all (the ring of 1 inside struct outq).
#define OUTQ_KEEP 8

int outq_push(struct outq *q, rx_buf *b, bool notice)
{
    if (q->cap == 0) {  // empty, and no ring yet: the one inside the queue
        q->v = &q->one;
        q->cap = 1;
        q->head = 0;
    }
    if (q->n == q->cap) {
        size_t cap = q->cap > 1 ? q->cap * 2 : OUTQ_KEEP;  // from the inline one: 8 at once
        if (cap > SIZE_MAX / sizeof *q->v) {
            errno = ENOMEM;
            return -1;
        }
        struct out_entry *v = malloc(cap * sizeof *v);
        if (v == NULL)
            return -1;
        // Unwrap the ring into the new block, oldest first: the indices stay a mask away.
        for (size_t i = 0; i < q->n; i++)
            v[i] = q->v[(q->head + i) & (q->cap - 1)];
        if (q->v != &q->one)
            free(q->v);
        q->v = v;
        q->head = 0;
        q->cap = cap;
    }
    q->v[(q->head + q->n) & (q->cap - 1)] = (struct out_entry){b, 0, notice};
    q->n++;
    if (notice)
        q->notice_bytes += b->len;
    else
        q->bytes += b->len;
    return 0;
}

// Drops the oldest entry (written whole) and its reference.
static void outq_pop(struct outq *q)
{
    rxbuf_release(q->v[q->head].b);
    q->head = (q->head + 1) & (q->cap - 1);
    q->n--;
    if (q->n == 0) {
        q->head = 0;
        if (q->cap > OUTQ_KEEP) {
            free(q->v);
            q->v = NULL;
            q->cap = 0;
        }
    }
}

void outq_consume(struct outq *q, size_t n)
{
    // A write that took N bytes may have ended anywhere: past several whole entries, then
    // inside one. Each entry's unsent bytes leave the counter it was counted in.
    while (n > 0) {
        assert(q->n > 0);  // N is at most what is queued
        struct out_entry *e = &q->v[q->head];
        size_t left = e->b->len - e->off;
        size_t k = n < left ? n : left;
        e->off += k;
        n -= k;
        if (e->notice)
            q->notice_bytes -= k;
        else
            q->bytes -= k;
        if (e->off == e->b->len)
            outq_pop(q);
        else
            break;  // inside this entry: N is spent
    }
    // Entries of zero bytes (an empty raw message) at the front are written whole too.
    while (q->n > 0 && q->v[q->head].off == q->v[q->head].b->len)
        outq_pop(q);
}

void outq_free(struct outq *q)
{
    for (size_t i = 0; i < q->n; i++)
        rxbuf_release(q->v[(q->head + i) & (q->cap - 1)].b);
    if (q->v != &q->one)
        free(q->v);
    *q = (struct outq){0};
}
