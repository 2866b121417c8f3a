// refbuf.h: a message encoded once and shared, reference-counted, by every output queue that
// holds it; and that queue (struct outq), a ring of (refbuf, offset) entries, oldest first.
#ifndef REFBUF_H
#define REFBUF_H

#include <stdarg.h>
#include <stddef.h>

// One message, encoded once, shared by every output queue that holds it.
//
//   refs: how many holders: the code that made it (until it has handed it
//   out: refbuf_release at the end of fan_out) plus one per output queue
//   entry that points to it. The last release frees it.
struct refbuf {
    unsigned refs;
    size_t len;
    char data[];  // len bytes, the "\n" included
};

// Counted for the server's stop line: a test reads them.
extern unsigned long long n_refbufs;        // refbufs allocated
extern unsigned long long n_refbufs_alive;  // ... and not freed yet (0 at exit)

// A new refbuf of LEN bytes (uninitialised), held once, by the caller.
// NULL if out of memory.
struct refbuf *refbuf_new(size_t len);

// A new refbuf holding the formatted line (FMT, and the "\n" added), held
// once, by the caller. NULL if out of memory.
struct refbuf *refbuf_vprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
struct refbuf *refbuf_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// One more holder. Inline: the fan-out calls it once per recipient.
static inline void refbuf_hold(struct refbuf *rb)
{
    rb->refs++;
}

// Drops one reference; the last one frees RB.
void refbuf_release(struct refbuf *rb);

// A session's output in --broadcast shared: a ring of (refbuf, offset)
// entries, oldest first; `off` is how much of the oldest one was sent.
struct out_entry {
    struct refbuf *rb;
    size_t off;
};

struct outq {
    struct out_entry *v;  // NULL while cap == 0
    size_t head;          // the oldest entry
    size_t n;             // entries queued
    size_t cap;           // entries allocated (a power of two, or 0)
};

// Appends an entry for RB; the queue takes over the reference the caller
// took for it (refbuf_hold). Returns 0, or -1 if out of memory (the caller
// still owns that reference).
int outq_push(struct outq *q, struct refbuf *rb);

// The I-th entry, oldest first (I < q->n). Inline: a send walks every entry.
static inline struct out_entry *outq_at(struct outq *q, size_t i)
{
    return &q->v[(q->head + i) & (q->cap - 1)];
}

// Drops the oldest entry (and its reference). Q must not be empty.
void outq_pop(struct outq *q);

// Drops every entry and frees the ring: Q is empty again.
void outq_free(struct outq *q);

#endif
