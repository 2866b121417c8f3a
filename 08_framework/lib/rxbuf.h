// rxbuf.h: the shared, reference-counted message (struct rx_buf: framed once, held by every
// output queue it was sent to, in any thread; the count is atomic) and a connection's output
// queue (struct outq): a ring of (rx_buf, offset) entries, oldest first.
#ifndef RX_RXBUF_H
#define RX_RXBUF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "rx.h"

struct rx_buf {
    atomic_uint refs;
    size_t len;
    char data[];
};

// How many rx_bufs exist now (made and not yet freed), in the whole process: 0 once every
// holder has let go (buffer_test.c, and the server's stop line, check that nothing leaked).
extern atomic_ullong rxbuf_alive;

// A new buffer of LEN bytes (uninitialised), held once by the caller. NULL if out of memory.
rx_buf *rxbuf_new(size_t len);
// Any thread: one more holder.
void rxbuf_hold(rx_buf *b);
// Any thread: drops one reference; the last one frees B. (rx_buf_release is the public name.)
void rxbuf_release(rx_buf *b);

struct out_entry {
    rx_buf *b;
    size_t off;    // bytes of it already written
    bool notice;   // not counted against the caps (rx_send_notice)
};

// The ring starts inside the queue (ONE: a ring of 1) and moves to the heap only when a second
// entry is queued while the first is unsent: a connection answered one message at a time (an
// idle one after its reply) owns no ring memory. Never copy a struct outq (V may point into it).
struct outq {
    struct out_entry *v;  // NULL while cap == 0; &one while cap == 1; else the heap's
    size_t head, n, cap;  // cap: a power of two, or 0
    size_t bytes;         // unsent bytes of counted entries (what the caps judge)
    size_t notice_bytes;  // unsent bytes of notices
    struct out_entry one;
};

// Appends B; the queue takes over a reference the caller holds for it. 0, or -1 (ENOMEM).
int outq_push(struct outq *q, rx_buf *b, bool notice);
static inline struct out_entry *outq_at(struct outq *q, size_t i)
{
    return &q->v[(q->head + i) & (q->cap - 1)];
}
// Marks N bytes written from the front: drops entries written whole (and their references).
void outq_consume(struct outq *q, size_t n);
// Drops every entry and frees the ring.
void outq_free(struct outq *q);

#endif
