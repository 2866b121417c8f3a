// timer.c: the binary min-heap of timer.h (07_chat's, copied unchanged). It orders deadlines
// and never allocates or frees a timer; loop.c builds rx_timer (callbacks, repeats) on it.
#include "timer.h"

#include <stdlib.h>

static void heap_set(struct timer_heap *h, size_t i, struct timer *t)
{
    h->v[i] = t;
    t->idx = i;
}

// Restores the heap order around v[I], whose deadline just changed (or
// which just took another entry's place): up while it is earlier than its
// parent, else down while a child is earlier.
static void heap_sift(struct timer_heap *h, size_t i)
{
    struct timer *t = h->v[i];
    while (i > 0 && h->v[(i - 1) / 2]->deadline > t->deadline) {
        heap_set(h, i, h->v[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1]->deadline < h->v[c]->deadline)
            c++;
        if (h->v[c]->deadline >= t->deadline)
            break;
        heap_set(h, i, h->v[c]);
        i = c;
    }
    heap_set(h, i, t);
}

int timer_heap_add(struct timer_heap *h, struct timer *t, long long deadline)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        struct timer **v = realloc(h->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    t->deadline = deadline;
    heap_set(h, h->n++, t);
    heap_sift(h, t->idx);
    return 0;
}

void timer_heap_del(struct timer_heap *h, struct timer *t)
{
    size_t i = t->idx;
    struct timer *last = h->v[--h->n];
    if (last != t) {
        heap_set(h, i, last);
        heap_sift(h, i);  // the last entry may belong above or below the hole
    }
}

void timer_heap_move(struct timer_heap *h, struct timer *t, long long deadline)
{
    t->deadline = deadline;
    heap_sift(h, t->idx);
}

struct timer *timer_heap_first(const struct timer_heap *h)
{
    return h->n > 0 ? h->v[0] : NULL;
}

void timer_heap_free(struct timer_heap *h)
{
    free(h->v);
    *h = (struct timer_heap)TIMER_HEAP_EMPTY;
}
