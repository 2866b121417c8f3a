// hop_ring.c: the hop as a bounded single-producer single-consumer ring of pointers (hop.h's
// HOP_RING): no lock, two C11 atomic indices, and an eventfd of its own watched by the consumer.
//
// The producer owns `tail` (the next slot it fills), the consumer owns `head` (the next slot
// it takes); each only reads the other's. They sit on separate cache lines, so a push does not
// invalidate the line the consumer is reading from, and the other way round.
//
// Wakeups. The producer writes the eventfd only when the consumer had taken every pointer
// before its own; the consumer reads (resets) the eventfd BEFORE it takes what the ring holds,
// then looks at tail once more: if more came meanwhile, it writes the eventfd itself (those
// are the next turn's: see ring_take). Why no pointer is ever left in the ring with no wakeup
// to announce it: every access to head and tail below is seq_cst, so they all fall in one
// total order that agrees with each thread's program order. The producer stores tail = t + 1
// (publishing slot t), THEN loads head. The consumer's take ends when it has stored head = k,
// THEN loads tail:
//   - if that load saw t + 1, either the take had slot t, or the consumer rewrites the eventfd
//     and its next turn takes it;
//   - if it did not (it found tail = t, so k = t), that load comes before the producer's store
//     in the total order, so the producer's later load of head sees t (the consumer stored it
//     before its load, and will not move past t without seeing t + 1): head == t, and the
//     producer writes the eventfd. That write comes after the take's last load of tail, hence
//     after the eventfd read that began the take: the eventfd stays readable, the loop calls
//     ring_ready again, and that take has slot t.
// Reading the eventfd AFTER the take instead opens the window: the producer's write lands
// between the take's last load of tail and the read, the read swallows it, slot t waits with
// no wakeup left (bugs/ring-wakeup-after-drain.patch; hop_test's ping-pong catches it). Judging
// "empty" from a load of head made BEFORE the push is the producer's version of the same
// mistake: the consumer may take the last older pointer, find the ring empty and sleep between
// that load and the push.
//
// A full ring never blocks the producer and never drops: the pointer goes through the consumer
// loop's task queue (rx_loop_post) instead. To keep the order, every send after a fallback
// falls back too until the consumer has run the fallbacks (`fallbacks_in_flight` back to 0),
// and a fallback first takes what the ring holds (pushed before it) before its own pointer.
// Under an overload that lasts, the ring thus degrades to the task queue, the mutex backend.
#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "hop.h"

#define CACHE_LINE 64

struct hop_ring {
    struct hop head_;   // first: a struct hop * is a struct hop_ring *
    rx_loop *to;
    void (*fn)(void *p);
    void **slot;        // mask + 1 of them
    size_t mask;
    struct watch w;     // w.fd: the eventfd, watched by TO
    char name[24];
    // The producer's line.
    alignas(CACHE_LINE) atomic_size_t tail;
    atomic_uint fallbacks_in_flight;  // producer adds, the fallback task (consumer) subtracts
    uint64_t sends, ring, wakeups, fallbacks;  // the producer's counters
    // The consumer's line.
    alignas(CACHE_LINE) atomic_size_t head;
    uint64_t rearms;  // the consumer's: wakeups it wrote itself (more came while it took)
};

// A pointer sent through the task queue because the ring was full.
struct fallback {
    struct hop_ring *r;
    void *p;
};

// The consumer (the loop's thread, or the cleanup after both threads ended): FN on the
// pointers pushed before it looked at tail, oldest first. One look, like the task queue's one
// swap: a producer that pushes faster than FN runs must not hold the consumer's loop in this
// turn for ever (its turn-end hook, its timers, its other descriptors wait meanwhile). Returns
// true when the ring was empty after them (the look at tail that decides it is seq_cst: see
// the top of the file), false when more came meanwhile.
static bool ring_take(struct hop_ring *r)
{
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);  // ours
    size_t t = atomic_load(&r->tail);
    while (h != t) {
        void *p = r->slot[h & r->mask];
        atomic_store(&r->head, ++h);  // the slot is the producer's again (release)
        r->fn(p);
    }
    return atomic_load(&r->tail) == h;
}

static void wake(struct hop_ring *r)
{
    uint64_t one = 1;
    for (;;) {
        if (write(r->w.fd, &one, sizeof one) == (ssize_t)sizeof one)
            return;
        if (errno == EINTR)
            continue;
        // EAGAIN: the counter is near 2^64 - 1, a wakeup is pending already: nothing lost.
        if (errno != EAGAIN)
            rx_log(RX_LOG_ERROR, "hop %s: write(eventfd): %s", r->name, strerror(errno));
        return;
    }
}

// TO's handler for the eventfd: read it, then take what the ring holds (in that order: see the
// top of the file). What came meanwhile is the next turn's: the consumer writes the wakeup
// itself, so the ring still never holds a pointer with no wakeup pending.
static void ring_ready(struct watch *w, unsigned ready)
{
    (void)ready;
    struct hop_ring *r = (struct hop_ring *)((char *)w - offsetof(struct hop_ring, w));
    uint64_t n;
    ssize_t got;
    while ((got = read(r->w.fd, &n, sizeof n)) == -1 && errno == EINTR)
        ;
    if (got == -1 && errno != EAGAIN)
        rx_log(RX_LOG_ERROR, "hop %s: read(eventfd): %s", r->name, strerror(errno));
    if (!ring_take(r)) {
        r->rearms++;
        wake(r);
    }
}

// The consumer's thread: a pointer that went through the task queue. What was pushed into the
// ring before it runs first; then, with the last fallback done, the producer uses the ring again.
static void fallback_run(void *arg)
{
    struct fallback *f = arg;
    struct hop_ring *r = f->r;
    void *p = f->p;
    free(f);
    ring_take(r);  // the ring cannot grow meanwhile: the producer is falling back too
    r->fn(p);
    atomic_fetch_sub_explicit(&r->fallbacks_in_flight, 1, memory_order_release);
}

static int fallback(struct hop_ring *r, void *p)
{
    struct fallback *f = malloc(sizeof *f);
    if (f == NULL)
        return -1;
    *f = (struct fallback){r, p};
    atomic_fetch_add_explicit(&r->fallbacks_in_flight, 1, memory_order_relaxed);
    if (rx_loop_post(r->to, fallback_run, f) == -1) {
        atomic_fetch_sub_explicit(&r->fallbacks_in_flight, 1, memory_order_relaxed);
        free(f);
        return -1;
    }
    r->fallbacks++;
    r->sends++;
    return 0;
}

int hop_ring_send(struct hop *h, void *p)
{
    struct hop_ring *r = (struct hop_ring *)h;
    // Acquire: a fallback seen finished has run its pointer, so a push now comes after it.
    if (atomic_load_explicit(&r->fallbacks_in_flight, memory_order_acquire) != 0)
        return fallback(r, p);
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);  // ours
    if (t - atomic_load_explicit(&r->head, memory_order_acquire) > r->mask)
        return fallback(r, p);  // full: the consumer is mask + 1 batches behind
    r->slot[t & r->mask] = p;
    atomic_store(&r->tail, t + 1);  // seq_cst: publishes the slot, ordered before the load
    if (atomic_load(&r->head) == t) {
        r->wakeups++;
        wake(r);
    }
    r->ring++;
    r->sends++;
    return 0;
}

struct hop *hop_ring_new(rx_loop *to, void (*fn)(void *p), size_t slots, const char *name)
{
    if (slots == 0)
        slots = HOP_RING_SLOTS;
    if ((slots & (slots - 1)) != 0) {
        rx_log(RX_LOG_ERROR, "hop %s: %zu slots is not a power of two", name, slots);
        return NULL;
    }
    // aligned_alloc: the two indices' lines must really be separate lines.
    size_t size = (sizeof(struct hop_ring) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    struct hop_ring *r = aligned_alloc(CACHE_LINE, size);
    if (r == NULL) {
        rx_log(RX_LOG_ERROR, "hop %s: out of memory", name);
        return NULL;
    }
    memset(r, 0, size);
    r->head_.kind = HOP_RING;
    r->to = to;
    r->fn = fn;
    r->mask = slots - 1;
    snprintf(r->name, sizeof r->name, "%s", name);
    atomic_init(&r->tail, 0);
    atomic_init(&r->head, 0);
    atomic_init(&r->fallbacks_in_flight, 0);
    r->slot = calloc(slots, sizeof *r->slot);
    if (r->slot == NULL) {
        rx_log(RX_LOG_ERROR, "hop %s: out of memory", name);
        free(r);
        return NULL;
    }
    // NONBLOCK: ring_ready never blocks on a wakeup that was already read; CLOEXEC: a program
    // the application runs does not inherit it.
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd == -1) {
        rx_log(RX_LOG_ERROR, "hop %s: eventfd: %s", name, strerror(errno));
        free(r->slot);
        free(r);
        return NULL;
    }
    r->w = (struct watch){fd, 0, ring_ready};
    if (loop_watch(to, &r->w, LOOP_READ) == -1) {
        rx_log(RX_LOG_ERROR, "hop %s: watching its eventfd: %s", name, strerror(errno));
        close(fd);
        free(r->slot);
        free(r);
        return NULL;
    }
    return &r->head_;
}

void hop_ring_drain(struct hop *h)
{
    while (!ring_take((struct hop_ring *)h))
        ;
}

void hop_ring_free(struct hop *h)
{
    struct hop_ring *r = (struct hop_ring *)h;
    size_t left = atomic_load(&r->tail) - atomic_load(&r->head);
    if (left > 0)
        rx_log(RX_LOG_ERROR, "hop %s: freed with %zu batches never drained", r->name, left);
    if (r->fallbacks > 0)
        rx_log(RX_LOG_INFO, "hop %s: %llu of %llu batches went through the task queue (ring full)",
               r->name, (unsigned long long)r->fallbacks, (unsigned long long)r->sends);
    loop_unwatch(r->to, &r->w);
    if (close(r->w.fd) == -1)
        rx_log(RX_LOG_WARN, "hop %s: close(eventfd): %s", r->name, strerror(errno));
    free(r->slot);
    free(r);
}

void hop_ring_get_stats(const struct hop *h, struct hop_stats *out)
{
    const struct hop_ring *r = (const struct hop_ring *)h;
    *out = (struct hop_stats){.sends = r->sends, .ring = r->ring, .wakeups = r->wakeups,
                              .fallbacks = r->fallbacks, .rearms = r->rearms};
}
