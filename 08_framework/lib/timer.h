// timer.h: deadlines in a binary min-heap, the earliest first (07's heap, unchanged). Each
// timer knows its place in the heap, so moving or removing one is a sift from where it is.
#ifndef RX_TIMER_H
#define RX_TIMER_H

#include <stddef.h>

// A timer, embedded in what it times. The heap holds pointers to timers and never allocates
// or frees one: a timer must be removed (timer_heap_del) before its memory is freed.
struct timer {
    long long deadline;  // in the caller's clock; the smallest comes first
    size_t idx;          // its index in the heap, kept right by every operation
};

struct timer_heap {
    struct timer **v;  // NULL while cap == 0
    size_t n;
    size_t cap;
};

#define TIMER_HEAP_EMPTY {NULL, 0, 0}

int timer_heap_add(struct timer_heap *h, struct timer *t, long long deadline);  // 0 or -1 (ENOMEM)
void timer_heap_del(struct timer_heap *h, struct timer *t);
void timer_heap_move(struct timer_heap *h, struct timer *t, long long deadline);
struct timer *timer_heap_first(const struct timer_heap *h);
void timer_heap_free(struct timer_heap *h);

#endif
