// timer_test.c: holds timer.h's heap and the loop's rx_timers to their promises: the heap on
// its own (as 07's test does), then timers on running loops. A test binary (test.bats runs it).
//
// The heap:
//   1. timers added in a shuffled order come out (first, then del) in deadline order;
//   2. a move earlier makes a timer the first; a move later puts it behind the others;
//   3. removing the first, the last or one in the middle keeps the rest in order;
//   4. 200 000 random adds, moves and removes, the heap order and every idx checked after
//      each, against a plain array of what must be in it.
// rx_timer on a running loop (times read with rx_loop_now_ms, the loop's own clock):
//   5. one-shots started in a shuffled order fire in deadline order, each once, never before
//      its time, not absurdly late, with no spinning while they wait; every one is freed
//      after it fired (the loop's timer count);
//   6. a repeating timer fires on its period (never early, no two fires in one turn, even
//      after its callback blocked the loop for 3.5 periods: missed periods are skipped, not
//      fired in a burst) and, stopped in its own callback, never fires again;
//   7. a one-shot stopped inside its own callback is freed once (ASan sees a double free);
//   8. a callback stops other timers: one due later, one due in the same turn, a repeating
//      one: none of them fires;
//   9. two loops in two threads, each with its own timers, fire on their own threads.
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "test_util.h"
#include "timer.h"

// ------------------------------------------------------------------------- test helpers

// Runs FN(ARG) on LOOP's thread and waits (with a deadline) until it has returned.
static sem_t ran;
static void (*run_fn)(void *);
static void run_task(void *arg)
{
    run_fn(arg);
    sem_post(&ran);
}
static void run_on(rx_loop *loop, void (*fn)(void *), void *arg)
{
    run_fn = fn;
    if (rx_loop_post(loop, run_task, arg) == -1)
        fail("rx_loop_post");
    wait_sem(&ran, 10, "a task on the loop");
}

// Loop thread: the loop's turn count (WHICH 0) or live timer count (1).
static unsigned long long stat_now(rx_loop *loop, int which)
{
    struct loop_stats st;
    loop_get_stats(loop, &st);
    return which == 0 ? st.turns : st.timers;
}

// Any thread: the live timer count of LOOP, read on its thread in a task (so after every
// timer callback of earlier turns has returned and its timer been freed).
static unsigned long long timer_count;
static void read_timer_count(void *arg)
{
    timer_count = stat_now(arg, 1);
}
static unsigned long long timers_of(rx_loop *loop)
{
    run_on(loop, read_timer_count, loop);
    return timer_count;
}

static rx_timer *start(rx_loop *loop, uint64_t after, uint64_t repeat, rx_timer_fn *fn, void *arg)
{
    rx_timer *t = rx_timer_start(loop, after, repeat, fn, arg);
    if (t == NULL)
        fail("rx_timer_start: out of memory");
    return t;
}

// Slack for "not absurdly late": the loop may be descheduled on a loaded machine.
static uint64_t late_ms(void)
{
    return (uint64_t)(2000 * scale);
}

// ------------------------------------------------------------------------------ the heap

#define N 1000

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

// Pops every timer (first, then del): true if they came out in deadline order and the heap
// stayed a heap after each pop.
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

static void test_heap(void)
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
        if (timer_heap_add(&h, &t[i], 1000 + (long long)i) == -1)
            fail("timer_heap_add: out of memory");
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
}

// ------------------------------------------------------------ 5. one-shots, in order

enum { SHOTS = 7 };
static const uint64_t shot_after[SHOTS] = {40, 10, 30, 0, 20, 10, 25};
static uint64_t shots_t0;                  // rx_loop_now_ms when they were started
static unsigned long long shots_turn0, shots_turns;  // the loop's turns from start to last fire
static uint64_t shot_at[SHOTS];            // when each fired (loop clock)
static unsigned shot_calls[SHOTS], shot_order[SHOTS], shots_fired;
static sem_t shots_done;

static void shot_cb(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)t;
    size_t i = (size_t)(uintptr_t)arg;
    shot_at[i] = rx_loop_now_ms(loop);
    shot_calls[i]++;
    shot_order[shots_fired++] = (unsigned)i;
    if (shots_fired == SHOTS) {
        shots_turns = stat_now(loop, 0) - shots_turn0;
        sem_post(&shots_done);
    }
}

static void start_shots(void *arg)
{
    rx_loop *loop = arg;
    shots_t0 = rx_loop_now_ms(loop);
    shots_turn0 = stat_now(loop, 0);
    for (size_t i = 0; i < SHOTS; i++)
        start(loop, shot_after[i], 0, shot_cb, (void *)(uintptr_t)i);
}

// A witness: a one-shot after MS, its callback posts WITNESS. Waiting for it lets timers
// that should not fire (any more) show that they do not, within a bounded time.
static sem_t witness;
static void witness_cb(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    (void)arg;
    sem_post(&witness);
}
static void start_witness(void *arg)
{
    rx_loop *loop = arg;
    start(loop, 50, 0, witness_cb, NULL);
}
static void wait_witness(rx_loop *loop)
{
    run_on(loop, start_witness, loop);
    wait_sem(&witness, 10, "a 50 ms witness timer");
}

static void test_one_shots(rx_loop *loop)
{
    printf("-- 5. one-shot timers\n");
    sem_init(&shots_done, 0, 0);
    unsigned long long base = timers_of(loop);
    run_on(loop, start_shots, loop);
    wait_sem(&shots_done, 10, "7 one-shot timers");
    bool in_order = true, on_time = true;
    for (size_t k = 0; k < SHOTS; k++) {
        size_t i = shot_order[k];
        if (k > 0 && shot_after[i] < shot_after[shot_order[k - 1]])
            in_order = false;
        uint64_t waited = shot_at[i] - shots_t0;
        if (waited < shot_after[i] || waited > shot_after[i] + late_ms())
            on_time = false;
        printf("   timer %zu (after %llu ms) fired after %llu ms\n", i,
               (unsigned long long)shot_after[i], (unsigned long long)waited);
    }
    check(in_order, "one-shots started in a shuffled order fire in deadline order");
    check(on_time, "each fires no earlier than its time (loop clock) and not absurdly late");
    // 6 distinct deadlines: a turn for each, and a spare each for a wait that ends a
    // millisecond early. A loop that spins while a timer is due soon takes hundreds.
    printf("   %llu turns from the start to the last fire\n", shots_turns);
    check(shots_turns <= 12, "the loop waits for its timers without spinning (at most 12 turns for 6 deadlines)");
    wait_witness(loop);
    bool once = true;
    for (size_t i = 0; i < SHOTS; i++)
        once = once && shot_calls[i] == 1;
    check(once && shots_fired == SHOTS, "each one-shot fired exactly once");
    check(timers_of(loop) == base, "every one-shot was freed after its callback (timer count)");
}

// ------------------------------------------------------------------- 6. a repeating timer

enum { PERIOD = 10, REPEATS = 20, BLOCK_AT = 5, BLOCK_MS = 35 };
static uint64_t rep_t0, rep_at[REPEATS + 1];
static unsigned long long rep_turn[REPEATS + 1];
static unsigned rep_calls;
static sem_t rep_done;

static void rep_cb(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)arg;
    rep_calls++;
    if (rep_calls > REPEATS)
        return;  // fired after it was stopped: the check below reports it
    rep_at[rep_calls] = rx_loop_now_ms(loop);
    rep_turn[rep_calls] = stat_now(loop, 0);
    if (rep_calls == BLOCK_AT) {
        // The loop is busy for 3.5 periods: 3 deadlines pass while no turn runs.
        struct timespec ts = {0, BLOCK_MS * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
    }
    if (rep_calls == REPEATS) {
        rx_timer_stop(loop, t);  // from inside its own callback: freed once it returns
        sem_post(&rep_done);
    }
}

static void start_rep(void *arg)
{
    rx_loop *loop = arg;
    rep_t0 = rx_loop_now_ms(loop);
    start(loop, PERIOD, PERIOD, rep_cb, NULL);
}

static void test_repeat(rx_loop *loop)
{
    printf("-- 6. a repeating timer\n");
    sem_init(&rep_done, 0, 0);
    unsigned long long base = timers_of(loop);
    run_on(loop, start_rep, loop);
    wait_sem(&rep_done, 20, "20 fires of a 10 ms repeating timer");
    bool never_early = true, one_per_turn = true;
    for (unsigned k = 1; k <= REPEATS; k++) {
        // The k-th fire: at least k periods after the start (skipped periods only push it on).
        if (rep_at[k] - rep_t0 < (uint64_t)k * PERIOD)
            never_early = false;
        if (k > 1 && rep_turn[k] <= rep_turn[k - 1])
            one_per_turn = false;
    }
    uint64_t span = rep_at[REPEATS] - rep_t0;
    printf("   20 fires in %llu ms (20 periods: 200 ms; the callback blocked %d ms once)\n",
           (unsigned long long)span, BLOCK_MS);
    for (unsigned k = BLOCK_AT; k <= BLOCK_AT + 3; k++)
        printf("   fire %u at %llu ms\n", k, (unsigned long long)(rep_at[k] - rep_t0));
    check(never_early, "the k-th fire comes no earlier than k periods after the start");
    check(one_per_turn, "never two fires in one turn, even after a callback blocked 3.5 periods");
    check(span <= (uint64_t)REPEATS * PERIOD + BLOCK_MS + late_ms(),
          "20 periods take no absurdly longer than 20 periods");
    // Missed periods skipped: after the block (fire 5 at >= 50 ms, then 35 ms asleep), fire 6
    // comes at >= 85 ms and is the only fire of its turn; fire 7 is then on the grid after it.
    check(rep_at[BLOCK_AT + 2] - rep_t0 >= (uint64_t)(BLOCK_AT + 4) * PERIOD,
          "the periods missed while the loop was blocked are skipped, not caught up");
    wait_witness(loop);
    check(rep_calls == REPEATS, "stopped in its own callback, it never fires again");
    check(timers_of(loop) == base, "... and it was freed (timer count)");
}

// ------------------------------------------------- 7. a one-shot stopped in its own callback

static unsigned self_stop_calls;
static void self_stop_cb(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)arg;
    self_stop_calls++;
    rx_timer_stop(loop, t);  // allowed once, inside its callback (rule 5)
    sem_post(&witness);
}
static void start_self_stop(void *arg)
{
    rx_loop *loop = arg;
    start(loop, 1, 0, self_stop_cb, NULL);
}

static void test_self_stop(rx_loop *loop)
{
    printf("-- 7. a one-shot stopped inside its own callback\n");
    unsigned long long base = timers_of(loop);
    run_on(loop, start_self_stop, loop);
    wait_sem(&witness, 10, "a one-shot that stops itself");
    wait_witness(loop);
    check(self_stop_calls == 1, "a one-shot that stops itself in its callback fired once");
    check(timers_of(loop) == base, "... and was freed once (timer count; ASan: no double free)");
}

// ------------------------------------------------------ 8. stopping other timers

static rx_timer *victim_later, *victim_same_turn, *victim_repeating;
static unsigned victim_calls, stopper_calls;

static void victim_cb(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    (void)arg;
    victim_calls++;
}

static void stopper_cb(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)t;
    (void)arg;
    stopper_calls++;
    rx_timer_stop(loop, victim_later);
    rx_timer_stop(loop, victim_same_turn);
    rx_timer_stop(loop, victim_repeating);
}

static void start_stopper(void *arg)
{
    rx_loop *loop = arg;
    start(loop, 10, 0, stopper_cb, NULL);
    victim_same_turn = start(loop, 11, 0, victim_cb, NULL);
    victim_later = start(loop, 40, 0, victim_cb, NULL);
    victim_repeating = start(loop, 12, 5, victim_cb, NULL);
    // Hold the loop past all of the first three deadlines: the next turn finds the stopper
    // and two victims due together, the stopper first (the earliest deadline).
    struct timespec ts = {0, 20 * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static void test_stop_others(rx_loop *loop)
{
    printf("-- 8. a callback stopping other timers\n");
    unsigned long long base = timers_of(loop);
    run_on(loop, start_stopper, loop);
    wait_witness(loop);  // 50 ms: the one due at 40 ms would have fired before it
    check(stopper_calls == 1, "the stopper fired");
    check(victim_calls == 0, "timers it stopped (due in the same turn, due later, repeating) never fire");
    check(timers_of(loop) == base, "... and all were freed (timer count)");
}

// -------------------------------------------------------------- 9. two loops, two threads

struct ticker {
    struct runner r;
    unsigned calls, foreign;
    sem_t done;
};

static void tick_cb(rx_loop *loop, rx_timer *t, void *arg)
{
    struct ticker *k = arg;
    if (rx_loop_current() != loop || loop != k->r.loop)
        k->foreign++;
    if (++k->calls == REPEATS) {
        rx_timer_stop(loop, t);
        sem_post(&k->done);
    }
}

static void start_tick(void *arg)
{
    struct ticker *k = arg;
    start(k->r.loop, 3, 3, tick_cb, k);
}

static void test_two_loops(void)
{
    printf("-- 9. two loops in two threads\n");
    static struct ticker k[2];
    for (int i = 0; i < 2; i++) {
        sem_init(&k[i].done, 0, 0);
        runner_start(&k[i].r, i ? "tick1" : "tick0");
    }
    for (int i = 0; i < 2; i++)
        if (rx_loop_post(k[i].r.loop, start_tick, &k[i]) == -1)
            fail("rx_loop_post");
    for (int i = 0; i < 2; i++)
        wait_sem(&k[i].done, 20, "a 3 ms repeating timer on each of two loops");
    struct loop_stats st[2];
    for (int i = 0; i < 2; i++)
        runner_finish(&k[i].r, &st[i]);
    check(k[0].calls == REPEATS && k[1].calls == REPEATS, "each loop's timer fired 20 times");
    check(k[0].foreign == 0 && k[1].foreign == 0, "every callback ran on its own loop's thread");
    check(st[0].timers_fired == REPEATS && st[1].timers_fired == REPEATS && st[0].timers == 0 &&
              st[1].timers == 0,
          "each loop counted its own fires, and freed its timer");
}

int main(void)
{
    scale_init();
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm((unsigned)(120 * scale));  // the last resort: every wait has its own deadline
    printf("timer_test: the timer heap, then rx_timer on running loops\n");
    test_heap();
    sem_init(&ran, 0, 0);
    sem_init(&witness, 0, 0);
    struct runner r;
    runner_start(&r, "timers");
    test_one_shots(r.loop);
    test_repeat(r.loop);
    test_self_stop(r.loop);
    test_stop_others(r.loop);
    struct loop_stats st;
    runner_finish(&r, &st);
    check(st.timers == 0, "no timer left on the loop");
    test_two_loops();
    printf("all ok\n");
    return 0;
}
