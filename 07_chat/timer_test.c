// timer_test.c: holds timer.h's heap to its promises: timers come out earliest first, a moved or
// removed timer is where the heap says, and every entry's idx is right after any mix of operations.
// A test binary (make timer_test; test.bats runs it), not a server: no sockets, no clock.
//
//   1. timers added in a shuffled order come out (first, then del) in deadline order;
//   2. a move earlier makes a timer the first; a move later puts it behind the others;
//   3. removing the first, the last or one in the middle keeps the rest in order;
//   4. 200 000 random adds, moves (earlier and later) and removes, the heap order and
//      every idx checked after each, against a plain array of what must be in it;
//   5. out of memory is not tested here (realloc failing leaves the heap unchanged: the code
//      shows it in four lines).
#include "timer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#define N 1000

static int failures;

static void check(bool ok, const char *what)
{
    printf("%s: %s\n", ok ? "ok" : "FAIL", what);
    if (!ok)
        failures++;
}

// The heap invariant, and every entry's idx pointing back at its slot.
static bool heap_ok(const struct timer_heap *h)
{
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i]->idx != i)
            return false;
        if (i > 0 && h->v[(i - 1) / 2]->deadline > h->v[i]->deadline)
            return false;
    }
    return true;
}

// Pops every timer (first, then del): true if they came out in deadline
// order and the heap stayed a heap after each pop.
static bool drains_in_order(struct timer_heap *h, size_t want)
{
    long long last = -1;
    size_t got = 0;
    struct timer *t;
    while ((t = timer_heap_first(h)) != NULL) {
        if (t->deadline < last)
            return false;
        last = t->deadline;
        timer_heap_del(h, t);
        got++;
        if (!heap_ok(h))
            return false;
    }
    return got == want;
}

// A small deterministic generator (xorshift64): the same run on every machine.
static unsigned long long rng = 88172645463325252ULL;
static unsigned long long next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(void)
{
    static struct timer t[N];
    struct timer_heap h = TIMER_HEAP_EMPTY;

    // 1. Shuffled adds, ordered drain; duplicates included (deadline i / 2).
    size_t order[N];
    for (size_t i = 0; i < N; i++)
        order[i] = i;
    for (size_t i = N - 1; i > 0; i--) {
        size_t j = next_rand() % (i + 1);
        size_t k = order[i];
        order[i] = order[j];
        order[j] = k;
    }
    bool ok = true;
    for (size_t i = 0; i < N; i++)
        ok = ok && timer_heap_add(&h, &t[order[i]], (long long)order[i] / 2) == 0 && heap_ok(&h);
    check(ok && h.n == N, "1000 shuffled adds keep the heap order and every idx");
    check(timer_heap_first(&h)->deadline == 0, "the first timer has the earliest deadline");
    check(drains_in_order(&h, N), "removing the first, 1000 times, yields them in deadline order");
    check(timer_heap_first(&h) == NULL, "an emptied heap has no first timer");

    // 2. Moves.
    for (size_t i = 0; i < 100; i++)
        timer_heap_add(&h, &t[i], 1000 + (long long)i);
    timer_heap_move(&h, &t[73], 5);
    check(timer_heap_first(&h) == &t[73] && heap_ok(&h), "a timer moved earlier than all becomes the first");
    timer_heap_move(&h, &t[73], 5000);
    check(timer_heap_first(&h) == &t[0] && heap_ok(&h), "moved later than all, it is no longer the first");
    timer_heap_move(&h, &t[0], 1050);
    check(timer_heap_first(&h) == &t[1] && heap_ok(&h), "the first moved to the middle: the next one is first");
    // 3. Removes: the first, the one in the last slot, one in the middle.
    timer_heap_del(&h, &t[1]);
    timer_heap_del(&h, h.v[h.n - 1]);
    timer_heap_del(&h, h.v[h.n / 2]);
    check(h.n == 97 && heap_ok(&h), "removing the first, the last slot and a middle one keeps the heap");
    check(drains_in_order(&h, 97), "... and the rest still come out in order");
    check(drains_in_order(&h, 0), "an empty heap drains to nothing");

    // 4. Random operations against a model: in[i] says whether t[i] is in the heap.
    static bool in[N];
    size_t count = 0;
    ok = true;
    for (long step = 0; step < 200000 && ok; step++) {
        size_t i = next_rand() % N;
        long long d = (long long)(next_rand() % 100000);
        if (!in[i]) {
            ok = timer_heap_add(&h, &t[i], d) == 0;
            in[i] = true;
            count++;
        } else if (next_rand() % 3 == 0) {
            timer_heap_del(&h, &t[i]);
            in[i] = false;
            count--;
        } else {
            timer_heap_move(&h, &t[i], d);  // earlier or later, at random
        }
        ok = ok && h.n == count && heap_ok(&h) && (!in[i] || h.v[t[i].idx] == &t[i]);
    }
    check(ok, "200000 random adds, moves and removes: the heap order and every idx hold after each");
    ok = true;
    for (size_t i = 0; i < N; i++)
        if (in[i])
            ok = ok && t[i].idx < h.n && h.v[t[i].idx] == &t[i];
    check(ok, "every timer the model holds is in the heap where its idx says");
    check(drains_in_order(&h, count), "after them, the timers still come out in deadline order");

    timer_heap_free(&h);
    check(h.v == NULL && h.n == 0 && h.cap == 0, "timer_heap_free leaves an empty heap");
    printf("%s\n", failures ? "FAILED" : "all ok");
    return failures ? 1 : 0;
}
