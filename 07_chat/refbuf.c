// refbuf.c: the shared, reference-counted message buffers of refbuf.h, and the output queue of
// them (a power-of-two ring). No sockets: server.c sends what the queue points to.
#include "refbuf.h"

#include <stdio.h>
#include <stdlib.h>

// ---------------------------------------------------------------- shared buffers

unsigned long long n_refbufs;
unsigned long long n_refbufs_alive;

// A new refbuf of LEN bytes (uninitialised), held once, by the caller.
// NULL if out of memory.
struct refbuf *refbuf_new(size_t len)
{
    struct refbuf *rb = malloc(sizeof *rb + len);
    if (rb == NULL)
        return NULL;
    rb->refs = 1;  // the caller's reference
    rb->len = len;
    n_refbufs++;
    n_refbufs_alive++;
    return rb;
}

// A new refbuf holding the formatted line (FMT, and the "\n" added), held
// once, by the caller. NULL if out of memory. Formatted twice (once for the
// length, once into the buffer), so the buffer is exactly the line's size.
struct refbuf *refbuf_vprintf(const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    struct refbuf *rb = n < 0 ? NULL : refbuf_new((size_t)n + 1);
    if (rb != NULL) {
        vsnprintf(rb->data, (size_t)n + 1, fmt, again);  // writes the '\0' where the '\n' goes
        rb->data[n] = '\n';
    }
    va_end(again);
    return rb;
}

struct refbuf *refbuf_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct refbuf *rb = refbuf_vprintf(fmt, ap);
    va_end(ap);
    return rb;
}

// Drops one reference; the last one frees RB.
void refbuf_release(struct refbuf *rb)
{
    // LAB BEGIN refbuf_release: drop one reference to RB and free it (counting n_refbufs_alive down) when that was the last one
    // LAB STUB: (void)rb;  // not written: nothing is ever freed
    if (--rb->refs == 0) {
        n_refbufs_alive--;
        free(rb);
    }
    // LAB END
}

// ---------------------------------------------------------------- output queues

// An empty ring keeps its memory up to this many entries (1 KiB): a session
// that gets a line every turn would otherwise allocate and free it every turn.
#define OUTQ_KEEP 64

// Appends an entry for RB (the caller has taken the reference it holds).
// Returns 0, or -1 if out of memory.
int outq_push(struct outq *q, struct refbuf *rb)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 8;
        struct out_entry *v = malloc(cap * sizeof *v);
        if (v == NULL)
            return -1;
        for (size_t i = 0; i < q->n; i++)  // unwrap the ring into the new block
            v[i] = q->v[(q->head + i) & (q->cap - 1)];
        free(q->v);
        q->v = v;
        q->head = 0;
        q->cap = cap;
    }
    q->v[(q->head + q->n) & (q->cap - 1)] = (struct out_entry){rb, 0};
    q->n++;
    return 0;
}

// Drops the oldest entry (and its reference).
void outq_pop(struct outq *q)
{
    refbuf_release(q->v[q->head].rb);
    q->head = (q->head + 1) & (q->cap - 1);
    q->n--;
    if (q->n == 0 && q->cap > OUTQ_KEEP) {
        free(q->v);
        *q = (struct outq){NULL, 0, 0, 0};
    }
}

void outq_free(struct outq *q)
{
    while (q->n > 0)
        outq_pop(q);
    free(q->v);
    *q = (struct outq){NULL, 0, 0, 0};
}

