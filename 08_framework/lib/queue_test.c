// queue_test.c: holds a loop's task queue, its eventfd wakeups and its descriptor dispatch to
// loop.h's promises, on real loops in real threads. A test binary (test.bats runs it).
//
//   1. a task that posts to its own loop (1000 times in a chain): no deadlock, each runs in a
//      later turn, without waiting, with no wakeup written;
//   2. a timer callback that posts to its own loop: the task runs in a later turn;
//   3. 8 producer threads post 20000 tasks each to one loop: every task runs once, on the
//      loop's thread, each producer's in the order posted; wakeups written <= posts;
//   4. posts to a loop that is busy (asleep in a task) write exactly one wakeup per
//      empty -> non-empty transition of its queue, and the loop reads each;
//   5. lost wakeups: one task posted, waited for, 100000 times (or for 20 s); then two
//      producers posting in bursts (a lost wakeup leaves a task unrun: the wait's deadline
//      fails the test);
//   6. descriptors: a hang-up alone (pipe writer closed: EPOLLHUP/POLLHUP without IN) is
//      readable; an error alone (pipe reader closed under a full pipe: EPOLLERR) is
//      writable; a watch for nothing (0) is quiet until rewatched; a watch removed by an
//      earlier handler of the same turn is not called;
//   7. 100 pipes watched, unwatched, rewatched and written at random for 300 turns: each turn
//      reports exactly the ones watched for reading with data waiting, once each;
//   8. loop_stop from another thread ends a loop waiting for a far timer, at once; loop_free
//      frees the timer still armed.
// Every wait has a deadline (x TIMEOUT_SCALE) and a watchdog bounds every part, so a deadlock
// or a lost wakeup fails the test instead of hanging it.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "poller.h"
#include "test_util.h"

// ------------------------------------------------------------------------- test helpers

// Arms the watchdog (test_util.h) for the part WHAT: SECONDS (x TIMEOUT_SCALE) from now.
static void part(const char *what, double seconds)
{
    dog_arm(what, seconds);
    printf("-- %s\n", what);
    fflush(stdout);
}

static void post(rx_loop *loop, void (*fn)(void *), void *arg)
{
    if (rx_loop_post(loop, fn, arg) == -1)
        fail("rx_loop_post: out of memory");
}

// The current turn of the loop the calling thread runs (loop thread only).
static unsigned long long turn_now(void)
{
    struct loop_stats st;
    loop_get_stats(rx_loop_current(), &st);
    return st.turns;
}

static unsigned long long written_now(void)
{
    struct loop_stats st;
    loop_get_stats(rx_loop_current(), &st);
    return st.wakeups_written;
}

// ------------------------------------------------------- 1. a task posting to its own loop

enum { CHAIN = 1000 };

static sem_t chain_done;
static unsigned long long chain_turn, chain_written;
static unsigned long chain_len, chain_bad_turns;

static void chain_task(void *arg)
{
    (void)arg;
    unsigned long long t = turn_now();
    if (chain_len > 0 && t <= chain_turn)
        chain_bad_turns++;  // ran in the turn that posted it
    chain_turn = t;
    if (chain_len == 0)
        chain_written = written_now();
    if (++chain_len == CHAIN) {
        chain_written = written_now() - chain_written;
        sem_post(&chain_done);
        return;
    }
    post(rx_loop_current(), chain_task, NULL);
}

static void test_self_post(void)
{
    part("1. a task posting to its own loop", 30);
    sem_init(&chain_done, 0, 0);
    struct runner r;
    runner_start(&r, "self");
    // The loop has no timers and no other descriptor: if a self-posted task waited for a
    // wakeup, nothing would ever come, and the deadline fails the test.
    post(r.loop, chain_task, NULL);
    wait_sem(&chain_done, 10, "a chain of 1000 tasks each posted by the one before");
    struct loop_stats st;
    runner_finish(&r, &st);
    check(chain_len == CHAIN, "a task posted to its own loop runs (no deadlock), 1000 in a chain");
    check(chain_bad_turns == 0, "each ran in a later turn than the task that posted it");
    check(chain_written == 0, "posts from the loop's own thread wrote no wakeup");
}

// ------------------------------------------------- 2. a timer callback posting to its loop

static sem_t timer_done;
static unsigned long long timer_turn, timer_task_turn;

static void after_timer_task(void *arg)
{
    (void)arg;
    timer_task_turn = turn_now();
    sem_post(&timer_done);
}

static void post_from_timer(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)t;
    (void)arg;
    timer_turn = turn_now();
    post(loop, after_timer_task, NULL);
}

static void start_timer_task(void *arg)
{
    (void)arg;
    if (rx_timer_start(rx_loop_current(), 5, 0, post_from_timer, NULL) == NULL)
        fail("rx_timer_start");
}

static void test_post_from_timer(void)
{
    part("2. a timer callback posting to its own loop", 30);
    sem_init(&timer_done, 0, 0);
    struct runner r;
    runner_start(&r, "timerpost");
    post(r.loop, start_timer_task, NULL);
    wait_sem(&timer_done, 10, "a task posted by a one-shot timer's callback (no timer left)");
    struct loop_stats st;
    runner_finish(&r, &st);
    check(timer_task_turn > timer_turn, "a task posted from a timer callback runs, in a later turn");
    check(st.timers_fired == 1 && st.timers == 0, "the one-shot timer fired once and was freed");
}

// ------------------------------------------------------------ 3. many producers, one loop

enum { PRODUCERS = 8, PER_PRODUCER = 20000 };

static rx_loop *order_loop;
static size_t next_seq[PRODUCERS];  // loop thread only
static unsigned long order_errors, foreign_thread;
static pthread_barrier_t go;

static void order_task(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    size_t p = v / PER_PRODUCER, seq = v % PER_PRODUCER;
    if (rx_loop_current() != order_loop)
        foreign_thread++;
    if (seq != next_seq[p])
        order_errors++;
    next_seq[p] = seq + 1;
}

static void *producer(void *arg)
{
    uintptr_t p = (uintptr_t)arg;
    pthread_barrier_wait(&go);  // all at once: the queue's lock is contended
    for (uintptr_t i = 0; i < PER_PRODUCER; i++)
        post(order_loop, order_task, (void *)(p * PER_PRODUCER + i));
    return NULL;
}

static void test_producers(void)
{
    part("3. 8 producers, one loop", 40);
    struct runner r;
    runner_start(&r, "consumer");
    order_loop = r.loop;
    pthread_t th[PRODUCERS];
    pthread_barrier_init(&go, NULL, PRODUCERS);
    for (uintptr_t p = 0; p < PRODUCERS; p++)
        if (pthread_create(&th[p], NULL, producer, (void *)p) != 0)
            fail("pthread_create");
    for (int p = 0; p < PRODUCERS; p++)
        pthread_join(th[p], NULL);
    pthread_barrier_destroy(&go);
    struct loop_stats st;
    runner_finish(&r, &st);
    unsigned long long want = (unsigned long long)PRODUCERS * PER_PRODUCER + 1;  // + the stop
    int all = 1;
    for (int p = 0; p < PRODUCERS; p++)
        all = all && next_seq[p] == PER_PRODUCER;
    printf("   %llu posts, %llu tasks run, %llu wakeups written, %llu read, %llu turns\n",
           st.posts, st.tasks_run, st.wakeups_written, st.wakeups_read, st.turns);
    check(st.posts == want && st.tasks_run == want, "every one of 160001 posted tasks ran once");
    check(all && order_errors == 0, "each producer's tasks ran in the order it posted them");
    check(foreign_thread == 0, "every task ran on the loop's thread (rx_loop_current)");
    check(st.wakeups_written <= st.posts, "at most one wakeup written per post");
    check(st.wakeups_read <= st.wakeups_written, "no more wakeups read than written");
}

// ------------------------------------------------ 4. exactly one wakeup per transition

enum { ROUNDS = 200, BATCH = 50 };

static sem_t gate_entered, gate_open, batch_done;
static unsigned long batch_runs;  // loop thread only

static void gate_task(void *arg)
{
    (void)arg;
    sem_post(&gate_entered);
    wait_sem(&gate_open, 10, "the gate task's release");
}

static void batch_task(void *arg)
{
    batch_runs++;
    if (arg != NULL)
        sem_post(&batch_done);
}

static void test_exact_wakeups(void)
{
    part("4. one wakeup per empty -> non-empty transition", 40);
    sem_init(&gate_entered, 0, 0);
    sem_init(&gate_open, 0, 0);
    sem_init(&batch_done, 0, 0);
    struct runner r;
    runner_start(&r, "sleeper");
    for (int round = 0; round < ROUNDS; round++) {
        // The loop is idle (or ending the last round's turn): its queue is empty, so this
        // post writes a wakeup. The gate task then holds the loop in step 3, after its swap:
        // the batch lands in an empty queue and only its first post may write a wakeup.
        post(r.loop, gate_task, NULL);
        wait_sem(&gate_entered, 10, "the gate task");
        for (int i = 0; i < BATCH; i++)
            post(r.loop, batch_task, i == BATCH - 1 ? &batch_done : NULL);
        sem_post(&gate_open);
        wait_sem(&batch_done, 10, "a batch posted to a busy loop");
    }
    struct loop_stats st;
    runner_finish(&r, &st);
    unsigned long long transitions = 2 * ROUNDS + 1;  // gate, batch per round; the stop
    printf("   %llu posts, %llu wakeups written, %llu read, %llu turns\n", st.posts,
           st.wakeups_written, st.wakeups_read, st.turns);
    check(batch_runs == (unsigned long)ROUNDS * BATCH, "every batched task ran");
    check(st.wakeups_written == transitions,
          "exactly one wakeup written per empty -> non-empty transition (401 for 10201 posts)");
    check(st.wakeups_read == st.wakeups_written, "... and each one read by the loop");
    sem_destroy(&gate_entered);
    sem_destroy(&gate_open);
    sem_destroy(&batch_done);
}

// ---------------------------------------------------------------- 5. lost wakeups

enum { PINGS = 100000, BURSTERS = 2, BURSTS = 300, BURST = 64 };

static sem_t pong;

static void ping_task(void *arg)
{
    sem_post(arg);
}

static rx_loop *burst_loop;
static sem_t burst_done[BURSTERS];

static void *burster(void *arg)
{
    uintptr_t b = (uintptr_t)arg;
    for (int i = 0; i < BURSTS; i++) {
        for (int k = 0; k < BURST; k++)
            post(burst_loop, k == BURST - 1 ? ping_task : batch_task,
                 k == BURST - 1 ? (void *)&burst_done[b] : NULL);
        wait_sem(&burst_done[b], 10, "a burst's last task (lost wakeup?)");
    }
    return NULL;
}

// Producers that never wait for their tasks, but space their posts by a random 0-4 us spin:
// the loop keeps waking, swapping and reading while pushes land at random points of its
// turn, many of them on a queue just emptied. One lost wakeup stalls the loop for good
// (every later push finds the queue non-empty and writes nothing): the final wait fails.
enum { TRICKLERS = 4, TRICKLE = 100000 };
static atomic_ulong trickle_runs;
static sem_t trickle_done;

static void trickle_task(void *arg)
{
    (void)arg;
    if (atomic_fetch_add(&trickle_runs, 1) + 1 == (unsigned long)TRICKLERS * TRICKLE)
        sem_post(&trickle_done);
}

static void *trickler(void *arg)
{
    unsigned long long seed = 0x9E3779B97F4A7C15ULL * ((uintptr_t)arg + 1);
    for (int i = 0; i < TRICKLE; i++) {
        post(burst_loop, trickle_task, NULL);
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        double until = now_s() + (double)(seed % 4000) * 1e-9;
        while (now_s() < until)
            ;  // a spin, not a sleep: a sleep's wakeup would take longer than the loop's turn
    }
    return NULL;
}

static void test_lost_wakeups(void)
{
    part("5. lost wakeups: post, wait, 100000 times", 45);
    sem_init(&pong, 0, 0);
    struct runner r;
    runner_start(&r, "pingpong");
    double t0 = now_s(), dt = 0;
    int pings = 0;
    // At most 20 s (x TIMEOUT_SCALE): on a loaded machine each round trip waits for a CPU.
    while (pings < PINGS && (pings % 1000 != 0 || (dt = now_s() - t0) < 20 * scale)) {
        post(r.loop, ping_task, &pong);
        // The loop waits with no timer: a lost wakeup leaves this task unrun for good.
        wait_sem(&pong, 10, "a task posted to an idle loop (lost wakeup)");
        pings++;
    }
    dt = now_s() - t0;
    struct loop_stats st;
    runner_finish(&r, &st);
    printf("   %d round trips in %.2f s (%.1f us each), %llu wakeups written\n", pings, dt,
           dt * 1e6 / pings, st.wakeups_written);
    check(st.tasks_run == (unsigned long long)pings + 1,
          "tasks posted one at a time to an idle loop, each waited for, all ran");

    part("5b. lost wakeups: two producers posting in bursts", 40);
    batch_runs = 0;
    runner_start(&r, "bursts");
    burst_loop = r.loop;
    pthread_t th[BURSTERS];
    for (uintptr_t b = 0; b < BURSTERS; b++) {
        sem_init(&burst_done[b], 0, 0);
        if (pthread_create(&th[b], NULL, burster, (void *)b) != 0)
            fail("pthread_create");
    }
    for (int b = 0; b < BURSTERS; b++)
        pthread_join(th[b], NULL);
    runner_finish(&r, &st);
    printf("   %llu posts, %llu wakeups written, %llu turns\n", st.posts, st.wakeups_written,
           st.turns);
    check(st.tasks_run == (unsigned long long)BURSTERS * BURSTS * BURST + 1,
          "2 x 300 bursts of 64 posts racing the loop's swap all ran");

    part("5c. lost wakeups: four producers posting at random moments", 40);
    sem_init(&trickle_done, 0, 0);
    runner_start(&r, "trickle");
    burst_loop = r.loop;
    pthread_t tt[TRICKLERS];
    for (uintptr_t b = 0; b < TRICKLERS; b++)
        if (pthread_create(&tt[b], NULL, trickler, (void *)b) != 0)
            fail("pthread_create");
    for (int b = 0; b < TRICKLERS; b++)
        pthread_join(tt[b], NULL);
    wait_sem(&trickle_done, 10, "the last of 400000 tasks (lost wakeup?)");
    runner_finish(&r, &st);
    printf("   %llu posts, %llu wakeups written, %llu turns\n", st.posts, st.wakeups_written,
           st.turns);
    check(st.tasks_run == (unsigned long long)TRICKLERS * TRICKLE + 1,
          "4 x 100000 posts at random moments of the loop's turns all ran");
}

// ----------------------------------------------------------------------- 6. descriptors

struct probe {
    struct watch w;
    unsigned ready;  // the events of its last call
    unsigned calls;
    sem_t called;
};

static void probe_cb(struct watch *w, unsigned ready)
{
    struct probe *p = (struct probe *)w;
    p->ready = ready;
    p->calls++;
    loop_unwatch(rx_loop_current(), w);  // once is enough (level-triggered: else every turn)
    sem_post(&p->called);
}

static struct probe hup_probe, err_probe;
static int hup_fds[2], err_fds[2];
static sem_t watching;

static void make_pipe(int fds[2])
{
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1)
        fail("pipe2: %s", strerror(errno));
}

static void watch_task(void *arg)
{
    struct probe *p = arg;
    if (loop_watch(rx_loop_current(), &p->w, p->w.events) == -1)
        fail("loop_watch: %s", strerror(errno));
    sem_post(&watching);
}

static void probe_init(struct probe *p, int fd, unsigned events)
{
    memset(p, 0, sizeof *p);
    p->w = (struct watch){fd, events, probe_cb};
    sem_init(&p->called, 0, 0);
}

// Quiet watch: its descriptor has hung up, but it is watched for nothing. A 50 ms timer
// counts the loop's turns meanwhile: a hang-up still reported (level-triggered, every wait)
// would spin the loop through thousands of turns even if no handler were called.
static struct probe quiet_probe;
static int quiet_fds[2];
static unsigned quiet_calls_before;
static unsigned long long quiet_turn0, quiet_turns;

static void quiet_timer(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)t;
    (void)arg;
    quiet_turns = turn_now() - quiet_turn0;
    quiet_calls_before = quiet_probe.calls;
    // Now asked for reading: the hang-up is reported.
    if (loop_rewatch(loop, &quiet_probe.w, LOOP_READ) == -1)
        fail("loop_rewatch: %s", strerror(errno));
}

static void quiet_off(void *arg)
{
    (void)arg;
    if (loop_rewatch(rx_loop_current(), &quiet_probe.w, 0) == -1)
        fail("loop_rewatch: %s", strerror(errno));
    sem_post(&watching);
}

static void quiet_task(void *arg)
{
    (void)arg;
    quiet_turn0 = turn_now();
    if (rx_timer_start(rx_loop_current(), 50, 0, quiet_timer, NULL) == NULL)
        fail("rx_timer_start");
}

// Two readable pipes reported in one turn; whichever handler runs first removes and frees
// the other's watch (ASan would see a call through the freed watch).
struct victim {
    struct watch w;
    int fds[2];
};
static struct victim *victims[2];
static unsigned victim_calls;
static sem_t victims_done;

static void victim_cb(struct watch *w, unsigned ready)
{
    (void)ready;
    victim_calls++;
    for (int i = 0; i < 2; i++) {
        struct victim *v = victims[i];
        if (v != NULL) {
            loop_unwatch(rx_loop_current(), &v->w);
            close(v->fds[0]);
            close(v->fds[1]);
            free(v);
            victims[i] = NULL;
        }
    }
    (void)w;  // freed above
    sem_post(&victims_done);
}

static void victims_task(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2; i++) {
        struct victim *v = calloc(1, sizeof *v);
        if (v == NULL)
            fail("calloc");
        make_pipe(v->fds);
        if (write(v->fds[1], "x", 1) != 1)
            fail("write: %s", strerror(errno));
        v->w = (struct watch){v->fds[0], 0, victim_cb};
        if (loop_watch(rx_loop_current(), &v->w, LOOP_READ) == -1)
            fail("loop_watch: %s", strerror(errno));
        victims[i] = v;
    }
}

static void test_descriptors(void)
{
    part("6. descriptors: hang-up, error, quiet watches, unwatch in a turn", 40);
    sem_init(&watching, 0, 0);
    struct runner r;
    runner_start(&r, "fds");

    // A pipe's read end, its writer closed, no data: the kernel reports a hang-up alone.
    make_pipe(hup_fds);
    probe_init(&hup_probe, hup_fds[0], LOOP_READ);
    post(r.loop, watch_task, &hup_probe);
    wait_sem(&watching, 10, "loop_watch");
    close(hup_fds[1]);
    wait_sem(&hup_probe.called, 10, "the read end of a pipe whose writer closed (HUP alone)");
    check(hup_probe.ready == LOOP_READ, "a hang-up alone is reported as readable");
    close(hup_fds[0]);

    // A full pipe's write end, its reader closed: an error alone (no room, so no OUT).
    make_pipe(err_fds);
    char junk[4096] = {0};
    while (write(err_fds[1], junk, sizeof junk) > 0)
        ;
    if (errno != EAGAIN)
        fail("filling a pipe: %s", strerror(errno));
    probe_init(&err_probe, err_fds[1], LOOP_WRITE);
    post(r.loop, watch_task, &err_probe);
    wait_sem(&watching, 10, "loop_watch");
    close(err_fds[0]);
    wait_sem(&err_probe.called, 10, "the write end of a full pipe whose reader closed (ERR alone)");
    check(err_probe.ready == LOOP_WRITE, "an error alone is reported as writable");
    close(err_fds[1]);

    // Watched for nothing: a hang-up on it must not be reported (nor spin the loop).
    // Watched for reading, then for nothing (the change that takes it out of epoll's set),
    // then its writer closes.
    make_pipe(quiet_fds);
    probe_init(&quiet_probe, quiet_fds[0], LOOP_READ);
    post(r.loop, watch_task, &quiet_probe);
    wait_sem(&watching, 10, "loop_watch");
    post(r.loop, quiet_off, NULL);
    wait_sem(&watching, 10, "loop_rewatch to 0");
    close(quiet_fds[1]);
    post(r.loop, quiet_task, NULL);
    wait_sem(&quiet_probe.called, 10, "a quiet watch rewatched for reading");
    printf("   %llu turns in the 50 ms the hung-up descriptor was watched for nothing\n",
           quiet_turns);
    check(quiet_calls_before == 0, "a watch for nothing (0) is not called on a hang-up");
    check(quiet_turns <= 5, "... nor does its hang-up wake the loop (at most 5 turns in 50 ms)");
    check(quiet_probe.ready == LOOP_READ, "... and reports it once rewatched for reading");
    close(quiet_fds[0]);

    sem_init(&victims_done, 0, 0);
    post(r.loop, victims_task, NULL);
    wait_sem(&victims_done, 10, "two readable pipes");
    struct loop_stats st;
    runner_finish(&r, &st);
    check(victim_calls == 1, "a watch removed by an earlier handler of the same turn is not called");
    sem_destroy(&watching);
}

// ------------------------------------------------------- 7. many descriptors, random changes

// 100 pipes whose read ends are watched, unwatched, rewatched for reading or for nothing at
// random, and written at random; each turn, exactly the ones watched for reading with data
// waiting must be reported, once. A chain of tasks does it on the loop's thread: each task
// checks the turn before it (the wait of its own turn reported on the changes the previous
// task made), then changes and writes again.
enum { PIPES = 100, MIX_ROUNDS = 300 };
struct mixed {
    struct watch w;
    int fds[2];
    bool watched, has_data;
    unsigned calls;  // this turn
};
static struct mixed mix[PIPES];
static unsigned mix_round, mix_wrong, mix_reported;
static unsigned long long mix_seed = 0x2545F4914F6CDD1DULL;
static sem_t mix_done;

static unsigned mix_rand(unsigned n)
{
    mix_seed ^= mix_seed << 13, mix_seed ^= mix_seed >> 7, mix_seed ^= mix_seed << 17;
    return (unsigned)(mix_seed % n);
}

static void mix_cb(struct watch *w, unsigned ready)
{
    struct mixed *m = (struct mixed *)w;
    if (ready != LOOP_READ)
        mix_wrong++;
    m->calls++;
}

static void mix_task(void *arg)
{
    (void)arg;
    rx_loop *loop = rx_loop_current();
    if (mix_round > 0) {
        for (int i = 0; i < PIPES; i++) {
            struct mixed *m = &mix[i];
            bool want = m->watched && m->w.events == LOOP_READ && m->has_data;
            if (m->calls != (want ? 1u : 0u))
                mix_wrong++;
            mix_reported += m->calls;
            m->calls = 0;
        }
    }
    if (++mix_round > MIX_ROUNDS) {
        for (int i = 0; i < PIPES; i++)
            if (mix[i].watched)
                loop_unwatch(loop, &mix[i].w);
        sem_post(&mix_done);
        return;
    }
    for (int k = 0; k < 30; k++) {
        struct mixed *m = &mix[mix_rand(PIPES)];
        unsigned op = mix_rand(4);
        if (!m->watched) {
            if (loop_watch(loop, &m->w, op % 2 ? LOOP_READ : 0) == -1)
                fail("loop_watch: %s", strerror(errno));
            m->watched = true;
        } else if (op == 0) {
            loop_unwatch(loop, &m->w);
            m->watched = false;
        } else if (loop_rewatch(loop, &m->w, op % 2 ? LOOP_READ : 0) == -1) {
            fail("loop_rewatch: %s", strerror(errno));
        }
        char c;
        if (op == 3 && m->has_data) {  // drained
            if (read(m->fds[0], &c, 1) != 1)
                fail("read: %s", strerror(errno));
            m->has_data = false;
        } else if (op == 2 && !m->has_data) {
            if (write(m->fds[1], "x", 1) != 1)
                fail("write: %s", strerror(errno));
            m->has_data = true;
        }
    }
    post(loop, mix_task, NULL);  // the next turn: its wait (no timeout) reports this state
}

static void test_many_descriptors(void)
{
    part("7. 100 descriptors watched, changed and written at random", 40);
    sem_init(&mix_done, 0, 0);
    for (int i = 0; i < PIPES; i++) {
        make_pipe(mix[i].fds);
        mix[i].w = (struct watch){mix[i].fds[0], 0, mix_cb};
    }
    struct runner r;
    runner_start(&r, "mix");
    post(r.loop, mix_task, NULL);
    wait_sem(&mix_done, 20, "300 rounds of random watch changes");
    struct loop_stats st;
    runner_finish(&r, &st);
    for (int i = 0; i < PIPES; i++) {
        close(mix[i].fds[0]);
        close(mix[i].fds[1]);
    }
    printf("   %u reports over %d rounds\n", mix_reported, MIX_ROUNDS);
    check(mix_wrong == 0 && mix_reported > 0,
          "each turn reports exactly the descriptors watched for reading with data, once each");
}

// ------------------------------------------------------------ 8. loop_stop from outside

static pid_t stop_tid;  // the loop thread's id, for /proc

static void start_far_timer(void *arg)
{
    (void)arg;
    stop_tid = (pid_t)syscall(SYS_gettid);
    if (rx_timer_start(rx_loop_current(), 600000, 0, post_from_timer, NULL) == NULL)
        fail("rx_timer_start");
    sem_post(&watching);
}

static void test_stop(void)
{
    part("8. loop_stop from another thread", 30);
    sem_init(&watching, 0, 0);
    struct runner r;
    runner_start(&r, "stopme");
    // The loop waits for a timer 10 minutes away, with nothing else to do.
    post(r.loop, start_far_timer, NULL);
    wait_sem(&watching, 10, "a task");
    // Stopped only once it sleeps in its wait (its thread's state in /proc is S): a stop
    // that lands while it still ends the task's turn would be seen without any wakeup.
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)stop_tid);
    for (double dl = now_s() + 10 * scale;;) {
        FILE *f = fopen(path, "r");
        if (f == NULL)
            fail("%s: %s", path, strerror(errno));
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        const char *paren = strrchr(stat, ')');
        if (paren != NULL && paren[1] == ' ' && paren[2] == 'S')
            break;
        if (now_s() > dl)
            fail("the loop thread never slept in its wait: %s", stat);
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);  // the poll interval of a check with a deadline
    }
    loop_stop(r.loop);
    struct timespec dl = realtime_in(10);
    int err = pthread_timedjoin_np(r.thread, NULL, &dl);
    if (err != 0)
        fail("loop_stop from another thread did not end a waiting loop: %s", strerror(err));
    struct loop_stats st;
    loop_get_stats(r.loop, &st);
    check(r.rc == 0, "loop_stop from another thread ends a loop that waits (loop_run returns 0)");
    check(st.timers_fired == 0 && st.timers == 1, "... at once: its timer has not fired");
    loop_free(r.loop);  // frees the armed timer too (ASan: no leak)
    sem_destroy(&watching);
}

int main(void)
{
    scale_init();
    setvbuf(stdout, NULL, _IOLBF, 0);
    dog_start();
    printf("queue_test: loop task queue, wakeups and descriptors (poller: %s)\n", poller_backend());
    test_self_post();  // first: its deadlock (a queue run under its lock) is the clearest
    test_post_from_timer();
    test_producers();
    test_exact_wakeups();
    test_lost_wakeups();
    test_descriptors();
    test_many_descriptors();
    test_stop();
    printf("all ok\n");
    return 0;
}
