// timer.h: deadlines in a binary min-heap, the earliest first. Each timer knows its place in the
// heap, so moving or removing one is a sift from where it is: O(log n), no search.
#ifndef TIMER_H
#define TIMER_H

#include <stddef.h>

// A timer, embedded in what it times (07: one per session). The heap holds
// pointers to timers and never allocates or frees one: a timer must be
// removed (timer_heap_del) before the memory holding it is freed.
struct timer {
    long long deadline;  // in the caller's clock (07: now_ns); the smallest comes first
    size_t idx;          // its index in the heap, kept right by every operation
};

// heap.v[0] is the earliest timer; each entry is no later than its
// children, v[2i+1] and v[2i+2]. Ties come out in no particular order.
struct timer_heap {
    struct timer **v;  // NULL while cap == 0
    size_t n;          // timers in the heap
    size_t cap;        // entries allocated
};

#define TIMER_HEAP_EMPTY {NULL, 0, 0}

// Adds T, not in the heap, at DEADLINE. O(log n). Returns 0, or -1 if out
// of memory (T is then not in the heap, and the heap is unchanged).
int timer_heap_add(struct timer_heap *h, struct timer *t, long long deadline);

// Removes T, which is in the heap: the last entry fills its place. O(log n).
void timer_heap_del(struct timer_heap *h, struct timer *t);

// Moves T, which is in the heap, to DEADLINE, earlier or later. O(log n).
void timer_heap_move(struct timer_heap *h, struct timer *t, long long deadline);

// The earliest timer, or NULL if the heap is empty. O(1).
struct timer *timer_heap_first(const struct timer_heap *h);

// Frees the heap's array (not the timers): H is empty again.
void timer_heap_free(struct timer_heap *h);

#endif
