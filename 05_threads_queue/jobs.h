// jobs.h: the work that leaves the I/O thread, the two queues it travels on, and the worker pool.
// The only place where threads meet: everything here is either locked or owned by one thread.
//
//      I/O thread (server.c)                          worker threads (-w N)
//      ---------------------                          ---------------------
//   a request line -> struct job
//        |  jq_try_push (full: "ERR busy")
//        v
//   +--------------------------+   jq_pop (sleeps on not_empty)
//   | job queue: bounded, FIFO | ------------------------------>  job_run(job)
//   +--------------------------+                                     |
//                                                                    | cq_push
//   +--------------------------+  <----------------------------------+
//   | completion queue         |   and, if it was empty: write(eventfd)
//   +--------------------------+
//        |  cq_take_all: read(eventfd), then swap the whole list out under the lock
//        v
//   epoll_pwait returns (the eventfd is in its set) -> deliver the replies, in request order
//
// Ownership, the rule that makes it safe (numbered so the notes can point at them):
//  1. A job belongs to exactly one side at a time: the I/O thread until jq_try_push
//     succeeds, then the queue and the one worker that pops it, then the completion
//     queue, then the I/O thread again (cq_take_all). Nobody touches a job it does
//     not own, so the fields of struct job need no lock of their own.
//  2. A job names its connection by id, never by pointer: the connection may close
//     and be freed while the job runs (server.c, conn_find, looks the id up and drops
//     the result of a connection that is gone).
//  3. The queues' locks are held for a few pointer moves, never while working: a
//     worker does not hold a lock while it runs a job, the I/O thread does not hold
//     one while it writes replies (cq_take_all swaps the list out first).
#ifndef JOBS_H
#define JOBS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// What a worker does. ECHO is not here: it is cheaper to answer on the I/O
// thread than to send anywhere (server.c, conn_request, says why).
enum job_kind {
    JOB_SLEEP,   // stands for a blocking call: a database, another service
    JOB_PRIMES,  // stands for CPU-heavy work
};

enum job_status {
    JOB_DONE,     // `result` holds the answer
    JOB_ABORTED,  // the server stopped it before it finished (pool_abort)
    JOB_NOMEM,    // PRIMES could not get its sieve
};

struct job {
    struct job *next;       // the link of whichever queue holds it (rule 1)
    uint64_t conn_id;       // whose request (rule 2): with fd, what conn_find needs
    int fd;
    uint64_t seq;           // which of that connection's requests: its reply's place
    enum job_kind kind;
    unsigned long arg;      // SLEEP: milliseconds; PRIMES: n
    unsigned long result;   // PRIMES: how many primes are <= n (set by job_run)
    enum job_status status; // set by job_run
};

// Runs J where the caller stands: a worker, or the I/O thread itself with -w 0.
// SHOULD_STOP(CTX) is asked now and then (every 20 ms of a SLEEP, every
// 65,536 steps of a PRIMES); when it says true the job ends as JOB_ABORTED.
void job_run(struct job *j, bool (*should_stop)(void *ctx), void *ctx);

// ---------------------------------------------------------------- the job queue

// A bounded multi-producer multi-consumer FIFO: a mutex and a condition
// variable. Bounded on purpose: without a bound, a client that sends faster
// than the workers finish would grow it until the process runs out of
// memory, and every job in it would be answered later and later (README.md,
// section 5). With one, the producer learns at once that it must say no.
// The producer here is the I/O thread, which must never sleep, so pushing
// never blocks: it fails when the queue is full. (A producer that may wait
// would sleep on a second condition variable, not_full, signalled by pop.)
struct job_queue {
    pthread_mutex_t lock;
    pthread_cond_t not_empty;  // workers sleep here until there is a job, or the close
    struct job *head, *tail;
    size_t len;                // jobs waiting (not counting the ones running)
    size_t cap;                // --queue
    bool closed;               // jq_close: pops return NULL from now on
    bool wake_all;             // --wake-all (a test knob): jq_wake broadcasts; set and
                               // read by the I/O thread only (the one that pushes)
};

// Returns 0, or an error number (pthread_*_init can fail, in theory).
int jq_init(struct job_queue *q, size_t cap);
void jq_destroy(struct job_queue *q);

// Any thread. Appends J, or returns false (J still the caller's) when the
// queue holds `cap` jobs already or is closed.
bool jq_try_push(struct job_queue *q, struct job *j);

// Workers. Sleeps until a job is waiting and returns it (the oldest), or
// returns NULL once the queue is closed.
struct job *jq_pop(struct job_queue *q);

// The I/O thread, when connection CONN_ID closes. Removes its jobs that no
// worker has taken yet and returns them (a list, oldest first), the caller's
// again. Its jobs already running are not touched (a worker owns them).
struct job *jq_cancel(struct job_queue *q, uint64_t conn_id);

// Any thread, once. Closes Q, wakes every sleeping worker, and returns the
// jobs no worker took (a list, oldest first), which are the caller's again.
struct job *jq_close(struct job_queue *q);

// ---------------------------------------------------------------- the completion queue

// Where finished jobs wait for the I/O thread, plus an eventfd(2) that is
// readable while they do, so that the I/O thread's epoll_pwait wakes for
// them as it wakes for a socket. An eventfd is a 64-bit counter in the
// kernel: write() adds to it, read() returns it and resets it to 0. One
// descriptor instead of a pipe's two, and eight bytes however many writes.
struct completion_queue {
    pthread_mutex_t lock;
    struct job *head, *tail;
    int wake_fd;  // the eventfd (non-blocking, close-on-exec)
    int swap_delay_ms;  // --swap-delay-ms (a test knob): cq_take_all pauses between its
                        // two steps; set and read by the I/O thread only

    // For the server's stop line and the tests, read by the I/O thread once
    // the workers were joined. `wakes` is counted by every write (atomic:
    // the writes happen after the unlock), max_wait_us under `lock`.
    atomic_ullong wakes;             // eventfd writes (one per empty -> non-empty)
    unsigned long long max_wait_us;  // longest a worker waited for `lock` in cq_push
};

// Returns 0, or an error number.
int cq_init(struct completion_queue *q);
void cq_destroy(struct completion_queue *q);

// Workers. Appends J, and writes the eventfd if the queue was empty (if it
// was not, a write is on its way already and the I/O thread has not taken
// the list yet: one wakeup serves the whole batch).
void cq_push(struct completion_queue *q, struct job *j);

// The I/O thread. Returns every finished job (a list, in the order they
// finished) and leaves the queue empty. Reads the eventfd first, then takes
// the list: the other order could reset a wakeup meant for a job pushed in
// between and leave that job stranded (README.md, section 4).
struct job *cq_take_all(struct completion_queue *q);

// ---------------------------------------------------------------- the pool

struct pool {
    struct job_queue jobs;
    struct completion_queue done;
    pthread_t *threads;
    int nthreads;
    atomic_bool abort;  // pool_abort: running jobs end early (job_run asks)
    // Counted by the workers for the stop line (the shutdown test compares the
    // clients' replies with them): jobs that ended JOB_ABORTED, and jobs that
    // ended in full with the abort flag already up (they did not notice it,
    // or were in their last steps when it rose).
    atomic_ulong n_aborted, n_late;
};

// Starts WORKERS threads (1 or more) on a job queue of CAP. The caller must
// have blocked SIGINT/SIGTERM first (net.h, block_stop_signals): the threads
// inherit the mask. Returns 0, or -1 after logging why (nothing left running).
int pool_start(struct pool *p, int workers, size_t cap);

// Any thread: asks the running jobs to end now (they finish as JOB_ABORTED).
void pool_abort(struct pool *p);

// The I/O thread, after jq_close: waits for every worker to return, then frees
// the threads. Finished jobs are left in p->done for the caller to take.
void pool_join(struct pool *p);

// After pool_join and a last cq_take_all: closes the eventfd, frees the rest.
void pool_destroy(struct pool *p);

#endif
