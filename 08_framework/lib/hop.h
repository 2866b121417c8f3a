// hop.h: the hop, one direction of one thread pair: a channel that carries batch pointers from
// one producer thread to one consumer loop (main's commands to io-k, io-k's events to main).
//
// Two backends, both in the library; the build picks the one the server uses (make HOP=...):
//   HOP_MUTEX (hop_mutex.c): rx_loop_post of the consumer function, i.e. the loop's task queue,
//             a mutex around a push and the swap, and the loop's eventfd written when the
//             queue was empty (muduo, and the course's sources).
//   HOP_RING  (hop_ring.c): a bounded single-producer single-consumer ring of pointers with
//             C11 atomics and an eventfd of its own, written only when the consumer has taken
//             everything before the new pointer (Valkey 8's io threads). Never blocks, never
//             drops: when the ring is full the pointer goes through rx_loop_post instead, in
//             order (see hop_ring.c).
// The consumer function runs on the consumer loop's thread, each pointer once, in the order
// sent. README.md, section 5 ("The hop, measured two ways"), compares the two.
#ifndef RX_HOP_H
#define RX_HOP_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"

enum hop_kind { HOP_MUTEX, HOP_RING };

// The server's backend: -DRX_HOP_RING (make HOP=ring) picks the ring.
#ifdef RX_HOP_RING
#define HOP_DEFAULT HOP_RING
#else
#define HOP_DEFAULT HOP_MUTEX
#endif

// The ring's size: a batch is one loop turn of one thread, so 1024 is that many turns of lag.
#define HOP_RING_SLOTS 1024

// The head of each backend's channel (the backends embed it first).
struct hop {
    enum hop_kind kind;
};

struct hop_stats {
    uint64_t sends;      // hop_send calls that succeeded
    uint64_t ring;       // ... of them through the ring (0 for HOP_MUTEX)
    uint64_t wakeups;    // the producer's writes of the ring's eventfd (the mutex's: the loop's)
    uint64_t fallbacks;  // ring full (or a fallback still in flight): sent with rx_loop_post
    uint64_t rearms;     // the consumer's own writes: more came while it took what was there
};

// The backends (hop_mutex.c, hop_ring.c). Callers use the hop_* functions below, which pick
// one by H->kind (an inlined branch that always goes the same way).
struct hop *hop_mutex_new(rx_loop *to, void (*fn)(void *p), const char *name);
int hop_mutex_send(struct hop *h, void *p);
void hop_mutex_free(struct hop *h);
void hop_mutex_get_stats(const struct hop *h, struct hop_stats *out);
struct hop *hop_ring_new(rx_loop *to, void (*fn)(void *p), size_t slots, const char *name);
int hop_ring_send(struct hop *h, void *p);
void hop_ring_drain(struct hop *h);
void hop_ring_free(struct hop *h);
void hop_ring_get_stats(const struct hop *h, struct hop_stats *out);

// Before the consumer loop runs, or on its thread. A channel of KIND to the loop TO, which
// will call FN(p) for each pointer sent, on its thread. SLOTS: the ring's size (a power of
// two; 0 for HOP_RING_SLOTS; ignored by HOP_MUTEX). NAME: for log lines. NULL on failure
// (logged).
static inline struct hop *hop_new(enum hop_kind kind, rx_loop *to, void (*fn)(void *p),
                                  size_t slots, const char *name)
{
    return kind == HOP_RING ? hop_ring_new(to, fn, slots, name) : hop_mutex_new(to, fn, name);
}

// The producer thread (one thread per channel, the same for its whole life, or another one
// after it has been joined). Sends P: FN(P) will run on TO's thread. 0, or -1 when out of
// memory (nothing sent: P is still the caller's).
static inline int hop_send(struct hop *h, void *p)
{
    return h->kind == HOP_RING ? hop_ring_send(h, p) : hop_mutex_send(h, p);
}

// After both threads have ended (the server's cleanup), or on the consumer's thread: runs FN
// on what is in the ring, in the calling thread. The fallbacks are tasks of TO: run them with
// loop_run_pending. No-op for HOP_MUTEX (everything it sent is a task of TO).
static inline void hop_drain(struct hop *h)
{
    if (h != NULL && h->kind == HOP_RING)
        hop_ring_drain(h);
}

// After both threads have ended and everything was drained (NULL allowed). Stops watching
// the eventfd.
static inline void hop_free(struct hop *h)
{
    if (h != NULL)
        h->kind == HOP_RING ? hop_ring_free(h) : hop_mutex_free(h);
}

// After both threads have ended.
static inline void hop_get_stats(const struct hop *h, struct hop_stats *out)
{
    h->kind == HOP_RING ? hop_ring_get_stats(h, out) : hop_mutex_get_stats(h, out);
}

static inline const char *hop_kind_name(enum hop_kind kind)
{
    return kind == HOP_RING ? "ring" : "mutex";
}

#endif
