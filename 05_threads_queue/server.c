// server.c: one epoll I/O thread serves every socket; a pool of worker threads does the slow work.
// They meet only in two queues (jobs.h), and the workers wake the I/O thread through an eventfd.
//
// Read this file first, then jobs.h (the queues and the pool), then net.c (the plumbing).
//
// The protocol: one request per line ("\n", a "\r" before it is ignored), one reply line each.
//   ECHO <text>  -> <text>               answered on the I/O thread: cheap
//   SLEEP <ms>   -> slept <ms>           0..10000: stands for a blocking call (a database)
//   PRIMES <n>   -> the count of primes <= n    1..50000000: stands for CPU-heavy work
//   anything else -> ERR unknown command; a bad number -> ERR bad argument; no room in the
//   job queue -> ERR busy; a line over 64 KiB -> ERR line too long, then the connection closes.
// Replies leave in request order on each connection, whichever job finishes first.
//
// What changed since 04_epoll, and why:
//  1. Work leaves the I/O thread. In 04 a request that took 500 ms (here SLEEP 500)
//     would stop every client for 500 ms. Now the I/O thread turns it into a struct
//     job, pushes it on a bounded queue, and goes back to epoll at once; a worker
//     runs it. -w 0 keeps 04's way (every job inline), so one binary shows both.
//  2. Results come back on a second queue, and the worker writes an eventfd that
//     sits in the epoll set next to the sockets: epoll_pwait wakes for "a result is
//     ready" as it wakes for "a socket is readable" (deliver_results).
//  3. Replies are kept in request order per connection (struct reply, conn_release_replies):
//     a later job may finish first, and its reply must wait for the earlier ones.
//  4. A job names its connection by id (conn_find): the connection may be closed and
//     freed while its job runs, and its result is then dropped, never delivered to
//     freed memory or to a new connection that got the same descriptor. Its jobs
//     still queued leave the queue with it (conn_cancel_jobs).
//  5. A full job queue answers "ERR busy" (back-pressure) instead of growing.
//  6. A line protocol: input is split into lines, and a partial line waits in c->in.
//     (06_codecs makes framing a topic of its own.)
//  7. A connection has a state (enum conn_state) instead of a handful of flags.
//
// One turn of the loop, epoll_once():
//   1. epoll_pwait() sleeps until a socket is ready, a worker wrote the eventfd, or
//      SIGINT/SIGTERM arrives (the only place they are unblocked: block_stop_signals)
//   2. each ready socket: the listening one -> accept_clients(); a client ->
//      conn_handle(): read, split into lines, answer or hand out jobs, write
//   3. if the eventfd was among them: deliver_results() takes every finished job in
//      one swap and writes their replies (after the sockets: see epoll_once)
//
// What is still not solved: replies are lines of text and requests stand alone. A
// protocol with real framing (length prefixes, binary fields) is 06_codecs; clients
// that know each other (sessions, broadcast, timers) are 07_chat.

#include "buffer.h"
#include "jobs.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// How much one recv() may read: into `scratch`, shared by every connection,
// so no read allocates anything (only a partial line is kept, in c->in).
#define READ_CHUNK (64 * 1024)

// The longest request line, without its "\n". A client that sends more
// without a newline is not speaking the protocol: we answer and close.
#define MAX_LINE (64 * 1024)

// Replies a connection may have waiting (for a job, or behind one) before we
// stop reading its requests: one client pipelining thousands of SLEEPs must
// not hold thousands of reply slots. Reading resumes at half.
#define MAX_WAITING 64

// As in 04: clients accepted per turn, events per epoll_pwait.
#define ACCEPTS_PER_TURN 64
#define MAX_EVENTS 128

// After SIGINT/SIGTERM, how long running jobs get to finish and their replies
// to leave. The contract gives a server 2 s to exit; the rest is margin for
// aborting the jobs that are still running (jobs.h, pool_abort) and joining.
#define DRAIN_MS 1000

// Stopping, with every running job finished and every client sent its
// replies and our FIN (CONN_LINGERING): a turn this long with nothing from
// any of them ends the drain early (as in 04): a client that is connected
// but quiet would otherwise hold the exit up for all of DRAIN_MS.
#define LINGER_QUIET_MS 100

// After the aborted jobs are joined, how long their "ERR stopping" replies
// get to leave and the clients' EOF to arrive (FIN first, then discarding
// input: CONN_LINGERING), before everything closes. DRAIN_MS + this + the
// join stay inside the contract's 2 s.
#define FINAL_LINGER_MS 300

// Out of descriptors with no spare: how long the listening socket stays
// out of the epoll set before we try again (pause_accepting, as in 04).
#define ACCEPT_BACKOFF_MS 100

// ---------------------------------------------------------------- connections

// One reply that cannot be written yet: its job is still running, or an
// earlier reply on the same connection is. A connection's replies form a
// FIFO in request order; conn_release_replies writes them from the head
// while the head is ready.
struct reply {
    struct reply *next;
    uint64_t seq;  // the job's seq (struct job), so that its result finds this slot
    bool ready;    // text holds the reply line
    size_t len;
    char text[];   // the line, "\n" included
};

// Room for any job's reply ("slept 10000\n", "ERR out of memory\n", a count).
#define JOB_REPLY_ROOM 32

enum conn_state {
    CONN_OPEN,       // reading requests
    CONN_CLOSING,    // no more requests (EOF, a line too long, the server stopping):
                     // every waiting reply is written, then we close (conn_update)
    CONN_LINGERING,  // our FIN is sent; reading and discarding until the client's EOF,
                     // because close() with unread input would send a reset and the
                     // client could lose the replies still in flight (as in 04)
};

struct conn {
    struct buffer in;             // a partial request line, or lines a pause left (conn_read)
    struct buffer out;            // replies the kernel has not taken yet
    struct reply *waiting, *waiting_tail;  // replies not in `out` yet, in request order
    size_t nwaiting;
    size_t held;                  // bytes of the ready replies in `waiting` (--max-output
                                  // counts them with `out`: conn_check_backpressure)
    size_t njobs;                 // its jobs in the pool (queued or running, not back yet):
                                  // conn_close walks the job queue only when this is not 0
    struct conn *prev, *next;     // every open connection, for stop_serving
    struct conn *touched_next;    // deliver_results: the connections one batch touched
    uint64_t id;                  // unique for the life of the process (conn_find)
    uint64_t next_seq;            // the seq of its next job
    int fd;
    uint32_t events;              // what epoll watches for us right now (conn_watch)
    enum conn_state state;
    bool eof;                     // the client's FIN has arrived: nothing more to read
    bool paused;                  // too much waiting (conn_check_backpressure): not reading
    bool touched;                 // on deliver_results' list
};

static int epfd = -1;
static struct conn *conns;        // every open connection (a doubly linked list)
static size_t nconns;
static uint64_t next_conn_id = 1;
// The connection on each descriptor, for conn_find: a job's result carries
// (fd, id), and the table says whether that fd still holds that id.
static struct conn **by_fd;
static size_t by_fd_len;

static size_t max_output;         // --max-output
static int reply_delay_ms;        // --reply-delay-ms
static bool use_pool;             // -w 1 or more
static struct pool pool;
static unsigned long in_flight;   // jobs handed to the pool and not back yet
static int listen_fd = -1;
static sigset_t wait_mask;        // the signal mask inside epoll_pwait

// Every read lands here first (one per process, not per connection or per read).
static char scratch[READ_CHUNK];

// The epoll tags of the two descriptors that are not clients: data.ptr is a
// struct conn * for clients, NULL for the listening socket, and this
// address (no connection has it) for the eventfd.
static char wake_tag;

// Counted for the stop line (tests read it): requests parsed; jobs handed to
// the pool and run inline; "ERR busy" replies; queued jobs cancelled (their
// connection closed: conn_cancel_jobs; or the server stopped: stop_serving);
// results taken back; results dropped because their connection had closed;
// eventfd wakeups (deliver_results calls that found results) and the most
// results one of them took; epoll_pwait calls; back-pressure pauses.
static unsigned long long n_requests, n_pooled, n_inline, n_busy, n_cancelled, n_results,
    n_dropped, n_wakeups, n_max_batch, n_waits, n_pauses;

// The connection with id ID on FD, or NULL if it has closed since (rule 2 of
// jobs.h). The fd alone is not enough: the kernel hands a closed fd's number
// to the next accept(), and the result would go to a stranger.
static struct conn *conn_find(int fd, uint64_t id)
{
    if (fd < 0 || (size_t)fd >= by_fd_len || by_fd[fd] == NULL || by_fd[fd]->id != id)
        return NULL;
    return by_fd[fd];
}

// Registers FD with epoll and links a new connection for it. Returns 0, or
// -1 after logging why (the caller still owns FD).
static int conn_add(int fd)
{
    if ((size_t)fd >= by_fd_len) {
        size_t len = by_fd_len ? by_fd_len : 64;
        while (len <= (size_t)fd)
            len *= 2;
        struct conn **t = realloc(by_fd, len * sizeof *t);
        if (t == NULL) {
            log_msg("fd %d: out of memory, closing", fd);
            return -1;
        }
        memset(t + by_fd_len, 0, (len - by_fd_len) * sizeof *t);
        by_fd = t;
        by_fd_len = len;
    }
    struct conn *c = calloc(1, sizeof *c);  // zeroed: empty buffers, no replies
    if (c == NULL) {
        log_msg("fd %d: out of memory, closing", fd);
        return -1;
    }
    c->fd = fd;
    c->id = next_conn_id++;
    c->state = CONN_OPEN;
    c->events = EPOLLIN;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
        log_msg("fd %d: epoll_ctl(ADD): %s, closing", fd, strerror(errno));
        free(c);
        return -1;
    }
    by_fd[fd] = c;
    c->next = conns;
    if (conns != NULL)
        conns->prev = c;
    conns = c;
    nconns++;
    return 0;
}

// C is closing with jobs in the pool: those still queued are taken out and
// freed, so that a client that leaves does not keep its places in the queue
// that everyone shares (one that pipelined SLEEP 10000s and reset would
// otherwise hold them for minutes, and everyone else would hear ERR busy).
// Those already running are a worker's: they run to their end, and their
// results find no connection with C's id and are dropped (deliver_results).
static void conn_cancel_jobs(struct conn *c)
{
    unsigned long k = 0;
    for (struct job *j = jq_cancel(&pool.jobs, c->id), *next; j != NULL; j = next) {
        next = j->next;
        free(j);
        k++;
    }
    in_flight -= k;
    n_cancelled += k;
    c->njobs -= k;
    if (k > 0 || c->njobs > 0)
        log_msg("fd %d: %lu queued job%s cancelled, %zu running (%s dropped)", c->fd, k,
                k == 1 ? "" : "s", c->njobs, c->njobs == 1 ? "its result" : "their results");
}

// Closes C's socket and frees everything C owns, C included, and cancels
// its jobs still queued (conn_cancel_jobs).
static void conn_close(struct conn *c)
{
    if (c->njobs > 0)
        conn_cancel_jobs(c);
    // No EPOLL_CTL_DEL first: closing the last descriptor of a socket takes
    // it out of the epoll set. Last: a copy inherited across fork() would
    // keep it registered (04's notes); we never fork, and SOCK_CLOEXEC keeps
    // a program we might exec from inheriting it.
    if (close(c->fd) == -1)
        log_msg("fd %d: close: %s", c->fd, strerror(errno));
    by_fd[c->fd] = NULL;
    buf_free(&c->in);
    buf_free(&c->out);
    for (struct reply *r = c->waiting, *next; r != NULL; r = next) {
        next = r->next;
        free(r);
    }
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    nconns--;
    free(c);
}

// Tells epoll what C waits for next, from its state alone, if that differs
// from what it is registered for. Returns 0, or -1 after logging why.
static int conn_watch(struct conn *c)
{
    uint32_t want = 0;
    // Requests while open and not paused; in LINGERING, whatever the client
    // still sends, to be thrown away. CLOSING reads nothing: what it will
    // still get is decided already. (With no EPOLLIN, a reset is still
    // reported: epoll always reports EPOLLERR and EPOLLHUP.)
    if ((c->state == CONN_OPEN && !c->paused && !c->eof) || c->state == CONN_LINGERING)
        want |= EPOLLIN;
    // EPOLLOUT only while something is queued, as in 04.
    if (buf_len(&c->out) > 0)
        want |= EPOLLOUT;
    if (want == c->events)
        return 0;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) == -1) {
        log_msg("fd %d: epoll_ctl(MOD): %s, dropping", c->fd, strerror(errno));
        return -1;
    }
    c->events = want;
    return 0;
}

// Sends what C has queued, until the queue is empty or the kernel is full.
// Returns 0, or -1 after logging why C must be dropped.
static int conn_flush(struct conn *c)
{
    while (buf_len(&c->out) > 0) {
        ssize_t sent = send(c->fd, buf_peek(&c->out), buf_len(&c->out), 0);
        if (sent == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;  // full: EPOLLOUT will call us back
            log_msg("fd %d: send: %s, dropping", c->fd, strerror(errno));
            return -1;
        }
        buf_consume(&c->out, (size_t)sent);
    }
    return 0;
}

// ---------------------------------------------------------------- replies, in order

// Adds a reply slot at the tail of C's waiting list: ready with the line
// TEXT (LEN bytes, without its "\n"), or, with TEXT NULL, empty until job
// SEQ's result fills it (conn_fill_reply). Returns it, or NULL if out of memory.
static struct reply *conn_add_reply(struct conn *c, uint64_t seq, const char *text, size_t len)
{
    struct reply *r = malloc(sizeof *r + (text != NULL ? len + 1 : JOB_REPLY_ROOM));
    if (r == NULL)
        return NULL;
    r->next = NULL;
    r->seq = seq;
    r->ready = text != NULL;
    r->len = 0;
    if (text != NULL) {
        memcpy(r->text, text, len);
        r->text[len] = '\n';
        r->len = len + 1;
        c->held += r->len;
    }
    if (c->waiting_tail != NULL)
        c->waiting_tail->next = r;
    else
        c->waiting = r;
    c->waiting_tail = r;
    c->nwaiting++;
    return r;
}

// Appends the line TEXT (LEN bytes) and its "\n" to C's output. Returns 0,
// or -1 if out of memory.
static int conn_out_line(struct conn *c, const char *text, size_t len)
{
    if (buf_append(&c->out, text, len) == -1 || buf_append(&c->out, "\n", 1) == -1)
        return -1;
    return 0;
}

// Answers C's current request with the line TEXT (LEN bytes, no "\n").
// Returns 0, or -1 if out of memory (C must be dropped).
static int conn_reply(struct conn *c, const char *text, size_t len)
{
    // LAB BEGIN reply_in_order: a ready reply may go straight to c->out only if no earlier reply of C is still waiting; otherwise it waits at the tail of C's list
    // LAB STUB: return conn_out_line(c, text, len);  // not written: straight out, whatever waits ahead
    if (c->waiting == NULL)
        return conn_out_line(c, text, len);  // nothing ahead of it: the common case
    return conn_add_reply(c, 0, text, len) == NULL ? -1 : 0;
    // LAB END
}

// Moves the reply at the head of C's list (ready) into c->out: unlinked,
// no longer held, freed. Returns 0, or -1 if out of memory.
static int conn_release_head(struct conn *c)
{
    struct reply *r = c->waiting;
    int rc = buf_append(&c->out, r->text, r->len);
    c->waiting = r->next;
    if (c->waiting == NULL)
        c->waiting_tail = NULL;
    c->nwaiting--;
    c->held -= r->len;
    free(r);
    return rc;
}

// Moves the replies at the head of C's list that are ready into c->out, in
// order, and stops at the first that is not: everything behind it waits.
// Returns 0, or -1 if out of memory.
static int conn_release_replies(struct conn *c)
{
    int rc = 0;
    // LAB BEGIN release_replies: release the head of c->waiting (conn_release_head) while there is one and it is ready: a reply leaves as soon as every reply before it has left; stop at the first that is not ready (everything behind it waits, ready or not)
    // LAB STUB: for (struct reply *r = c->waiting; r != NULL; r = r->next)  // not written as asked: nothing leaves until every reply waiting is ready
    // LAB STUB:     if (!r->ready)
    // LAB STUB:         return 0;
    // LAB STUB: while (rc == 0 && c->waiting != NULL)
    // LAB STUB:     rc = conn_release_head(c);
    while (rc == 0 && c->waiting != NULL && c->waiting->ready)
        rc = conn_release_head(c);
    // LAB END
    return rc;
}

// The reply line for finished job J, into OUT (JOB_REPLY_ROOM bytes).
static size_t job_reply(const struct job *j, char *out)
{
    int n;
    if (j->status == JOB_ABORTED)
        n = snprintf(out, JOB_REPLY_ROOM, "ERR stopping\n");
    else if (j->status == JOB_NOMEM)
        n = snprintf(out, JOB_REPLY_ROOM, "ERR out of memory\n");
    else if (j->kind == JOB_SLEEP)
        n = snprintf(out, JOB_REPLY_ROOM, "slept %lu\n", j->arg);
    else
        n = snprintf(out, JOB_REPLY_ROOM, "%lu\n", j->result);
    return (size_t)n;
}

// Job J's result is back and C (J's connection) is still open: fill J's slot.
static void conn_fill_reply(struct conn *c, const struct job *j)
{
    for (struct reply *r = c->waiting; r != NULL; r = r->next) {
        if (r->seq == j->seq && !r->ready) {
            r->len = job_reply(j, r->text);
            r->ready = true;
            c->held += r->len;
            return;
        }
    }
    // Not reached: a job's slot leaves the list only once it is ready.
}

// ---------------------------------------------------------------- requests

// For -w 0: a job run on the I/O thread ends early if SIGINT/SIGTERM is
// waiting (they are blocked here, so pending until epoll_pwait), so that a
// long SLEEP cannot hold a stopping server past its 2 s.
static bool stop_signal_pending(void *ctx)
{
    (void)ctx;
    sigset_t pending;
    return sigpending(&pending) == 0 &&
           (sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1);
}

// Runs a SLEEP or PRIMES for C: on a worker (answered later, in order), or
// with -w 0 right here. Returns 0, or -1 if out of memory.
static int conn_submit(struct conn *c, enum job_kind kind, unsigned long arg)
{
    struct job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return -1;
    j->kind = kind;
    j->arg = arg;
    if (!use_pool) {
        // 04's way: the whole server waits for this job.
        n_inline++;
        job_run(j, stop_signal_pending, NULL);
        char text[JOB_REPLY_ROOM];
        size_t len = job_reply(j, text);
        free(j);
        return conn_reply(c, text, len - 1);  // without the "\n" job_reply added
    }
    j->conn_id = c->id;
    j->fd = c->fd;
    j->seq = c->next_seq++;
    // The slot first, so that the queue never holds a job whose reply has no
    // place to go; then the push, which may say no.
    struct reply *r = conn_add_reply(c, j->seq, NULL, 0);
    if (r == NULL) {
        free(j);
        return -1;
    }
    if (jq_try_push(&pool.jobs, j)) {
        n_pooled++;
        in_flight++;
        c->njobs++;
        return 0;
    }
    // Full (or closed, when stopping): the slot becomes the refusal, in order.
    n_busy++;
    free(j);
    r->len = (size_t)snprintf(r->text, JOB_REPLY_ROOM, "ERR busy\n");
    r->ready = true;
    c->held += r->len;
    return 0;
}

// Reads "0".."MAX" (decimal digits only) at P (LEN bytes) into *V.
static bool parse_number(const char *p, size_t len, unsigned long min, unsigned long max,
                         unsigned long *v)
{
    if (len == 0 || len > 9)
        return false;
    unsigned long n = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        n = n * 10 + (unsigned long)(p[i] - '0');
    }
    if (n < min || n > max)
        return false;
    *v = n;
    return true;
}

// conn_reply with a string literal.
#define REPLY(c, s) conn_reply((c), s, sizeof s - 1)

// Handles one request LINE (LEN bytes, its "\n" and any "\r" removed).
// Returns 0, or -1 if out of memory (C must be dropped).
static int conn_request(struct conn *c, const char *line, size_t len)
{
    n_requests++;
    const char *sp = memchr(line, ' ', len);
    size_t cmd_len = sp != NULL ? (size_t)(sp - line) : len;
    const char *arg = sp != NULL ? sp + 1 : line + len;
    size_t arg_len = len - (size_t)(arg - line);
    unsigned long n;

    if (cmd_len == 4 && memcmp(line, "ECHO", 4) == 0) {
        // Answered here: copying a line costs less than the trip to a worker
        // and back (a lock, a wakeup, a second lock: README.md, section 5).
        return conn_reply(c, arg, arg_len);
    }
    if (cmd_len == 5 && memcmp(line, "SLEEP", 5) == 0) {
        if (!parse_number(arg, arg_len, 0, 10000, &n))
            return REPLY(c, "ERR bad argument");
        return conn_submit(c, JOB_SLEEP, n);
    }
    if (cmd_len == 6 && memcmp(line, "PRIMES", 6) == 0) {
        if (!parse_number(arg, arg_len, 1, 50000000, &n))
            return REPLY(c, "ERR bad argument");
        return conn_submit(c, JOB_PRIMES, n);
    }
    return REPLY(c, "ERR unknown command");
}

// Stops reading C's requests while too much waits (MAX_WAITING replies, or
// more than --max-output bytes of replies: unsent in c->out, or ready in a
// slot behind one that is not), and starts again at half: with one
// threshold a client at the limit would flip us on every reply.
static void conn_check_backpressure(struct conn *c)
{
    size_t bytes = buf_len(&c->out) + c->held;
    bool over = c->nwaiting >= MAX_WAITING || bytes > max_output;
    bool under = c->nwaiting <= MAX_WAITING / 2 && bytes <= max_output / 2;
    if (!c->paused && over) {
        c->paused = true;
        n_pauses++;
        // Too many slots is a client pipelining deeply, and normal; too
        // many bytes is one that does not read what it asked for: say so.
        if (bytes > max_output)
            log_msg("fd %d: %zu bytes of replies waiting (--max-output %zu), not reading until "
                    "half have left", c->fd, bytes, max_output);
    } else if (c->paused && under) {
        c->paused = false;
    }
}

// Handles the whole lines at P (N bytes) while C is open and not paused.
// Returns how many bytes it used (a partial line stays for later), or -1 if
// out of memory.
static ssize_t conn_take_lines(struct conn *c, const char *p, size_t n)
{
    size_t used = 0;
    while (c->state == CONN_OPEN && !c->paused && used < n) {
        const char *line = p + used;
        size_t left = n - used;
        // The longest request, MAX_LINE bytes, may end in "\r\n": its "\n"
        // can be the (MAX_LINE + 2)th byte, so that is how far we look.
        const char *nl = memchr(line, '\n', left > MAX_LINE + 2 ? MAX_LINE + 2 : left);
        // The request's length: up to the "\n" (or all we have of it), less a
        // "\r" before it (without a "\n" yet, it may come in the next read).
        size_t len = nl != NULL ? (size_t)(nl - line) : left;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (len > MAX_LINE) {
            // Too long, with its "\n" or without (still coming): answer, in
            // order after the replies still due, and close, reading no more.
            log_msg("fd %d: request line over %d bytes, closing", c->fd, MAX_LINE);
            if (REPLY(c, "ERR line too long") == -1)
                return -1;
            c->state = CONN_CLOSING;
            return (ssize_t)n;  // the rest is thrown away
        }
        if (nl == NULL)
            break;  // a partial line: wait for the rest
        used += (size_t)(nl - line) + 1;
        if (conn_request(c, line, len) == -1)
            return -1;
        conn_check_backpressure(c);
    }
    return (ssize_t)used;
}

// ---------------------------------------------------------------- one connection's turn

// Reads once from C into `scratch` and handles the whole lines; a partial
// line, or the lines a pause left unread, go to c->in. Returns 0, or -1
// after logging why C must be dropped.
static int conn_read(struct conn *c)
{
    ssize_t n;
    do
        n = recv(c->fd, scratch, sizeof scratch, 0);
    while (n == -1 && errno == EINTR);
    if (n == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        log_msg("fd %d: recv: %s, dropping", c->fd, strerror(errno));
        return -1;
    }
    if (n == 0) {
        // EOF: the client sends no more, but it may still read: answer what
        // it asked (a partial last line is ignored), then close (conn_update).
        c->eof = true;
        if (c->state == CONN_OPEN)
            c->state = CONN_CLOSING;
        buf_free(&c->in);
        return 0;
    }
    if (c->state == CONN_LINGERING)
        return 0;  // read only to be thrown away
    ssize_t used = 0;
    if (buf_len(&c->in) == 0) {
        // The usual case: whole lines straight from scratch, nothing copied.
        used = conn_take_lines(c, scratch, (size_t)n);
        if (used == -1)
            goto oom;
    }
    if (c->state == CONN_OPEN && buf_append(&c->in, scratch + used, (size_t)(n - used)) == -1)
        goto oom;
    return 0;
oom:
    log_msg("fd %d: out of memory, dropping", c->fd);
    return -1;
}

// After anything happened to C (it was read, a result arrived, output
// left): move what is ready to c->out, handle the lines a pause left in
// c->in, send, and decide what comes next. Returns false when C must be
// closed (done, or failed: logged).
static bool conn_update(struct conn *c)
{
    for (;;) {
        if (conn_release_replies(c) == -1)
            goto oom;
        conn_check_backpressure(c);
        if (c->state == CONN_OPEN && !c->paused && buf_len(&c->in) > 0) {
            // Lines that arrived while we were paused: no event will announce
            // them again (they are ours, not the kernel's), so handle them now.
            ssize_t used = conn_take_lines(c, buf_peek(&c->in), buf_len(&c->in));
            if (used == -1)
                goto oom;
            if (used > 0) {
                buf_consume(&c->in, (size_t)used);
                continue;
            }
        }
        // All the replies of this turn leave in one send(), not one per line.
        if (conn_flush(c) == -1)
            return false;
        // What the kernel took may end a pause: judged before the send, the
        // bytes it took still counted. Ended, with lines left in c->in, they
        // are handled now: no event would come for them (nothing left to
        // send, no new input), and the connection would wait forever.
        bool was_paused = c->paused;
        conn_check_backpressure(c);
        if (!was_paused || c->paused || c->state != CONN_OPEN || buf_len(&c->in) == 0)
            break;
    }
    if (c->state == CONN_CLOSING && c->waiting == NULL && buf_len(&c->out) == 0) {
        if (c->eof) {
            log_msg("fd %d closed", c->fd);
            return false;
        }
        // We close first (a line too long, or the server stopping): FIN,
        // then read until the client's EOF (CONN_LINGERING says why).
        buf_free(&c->in);
        c->state = CONN_LINGERING;
        if (shutdown(c->fd, SHUT_WR) == -1)
            return false;  // the connection is gone already
    }
    return conn_watch(c) == 0;
oom:
    log_msg("fd %d: out of memory, dropping", c->fd);
    return false;
}

// Serves C after epoll reported REVENTS for it. Returns false when C must be
// closed.
static bool conn_handle(struct conn *c, uint32_t revents)
{
    // EPOLLERR or EPOLLHUP: the connection is reset, or closed both ways.
    // Nothing we write can arrive, and (level-triggered, reported on every
    // turn) waiting on would spin: drop it, even with jobs still running.
    // (LINGERING expects the HUP: our FIN, then the client's; read its EOF.)
    if ((revents & EPOLLERR) || ((revents & EPOLLHUP) && c->state != CONN_LINGERING)) {
        log_msg("fd %d: connection %s, dropping%s", c->fd,
                revents & EPOLLERR ? "reset" : "closed", c->nwaiting ? " (replies pending)" : "");
        return false;
    }
    if ((revents & EPOLLIN) && conn_read(c) == -1)
        return false;
    if (c->state == CONN_LINGERING && c->eof) {
        log_msg("fd %d closed", c->fd);
        return false;
    }
    return conn_update(c);
}

// ---------------------------------------------------------------- results

// The eventfd woke us: take every finished job in one swap and deliver each
// result to its connection, if it still exists. Each connection the batch
// touched is then updated once: one send() for all its replies, not one per
// result (a pipelining client gets many results per wakeup).
static void deliver_results(void)
{
    struct job *list = cq_take_all(&pool.done);
    if (list == NULL)
        return;  // a wakeup for results an earlier swap took already
    n_wakeups++;
    unsigned long long batch = 0;
    struct conn *touched = NULL;
    for (struct job *j = list, *next; j != NULL; j = next) {
        next = j->next;
        batch++;
        in_flight--;
        n_results++;
        // --reply-delay-ms: a reply path that takes time (a big reply to
        // encode, a slow log). No lock is held here (cq_take_all released it),
        // so the workers go on finishing jobs meanwhile: a test measures it.
        if (reply_delay_ms > 0) {
            struct timespec d = {reply_delay_ms / 1000, (reply_delay_ms % 1000) * 1000000L};
            while (nanosleep(&d, &d) == -1 && errno == EINTR)
                ;
        }
        struct conn *c = conn_find(j->fd, j->conn_id);
        if (c == NULL) {
            n_dropped++;  // it closed while the job ran: nobody to tell
        } else {
            c->njobs--;
            conn_fill_reply(c, j);
            if (!c->touched) {
                c->touched = true;
                c->touched_next = touched;
                touched = c;
            }
        }
        free(j);
    }
    if (batch > n_max_batch)
        n_max_batch = batch;
    // Only now may a connection close (conn_update): the jobs above looked
    // connections up by id, and none of them may have been freed meanwhile.
    for (struct conn *c = touched, *next; c != NULL; c = next) {
        next = c->touched_next;
        c->touched = false;
        if (!conn_update(c))
            conn_close(c);
    }
}

// ---------------------------------------------------------------- accepting

// As in 04: a descriptor kept open on /dev/null, closed when we run out of
// descriptors so that one waiting client can be taken and refused (EOF),
// instead of the listening socket being reported ready forever.
//
// If the spare is missing (it could not be reopened: ENFILE, or the limit
// was lowered under us), we back off instead: the listening socket leaves
// the epoll set for ACCEPT_BACKOFF_MS, through epoll_pwait's timeout, not a
// sleep (pause_accepting), and then comes back whether or not a connection
// closed meanwhile (resume_accepting): the descriptor we lacked may have
// been freed by anyone, or the shortage may be the whole system's.
static int spare_fd = -1;
static long long accept_resume_at = -1;  // backing off: when to resume (now_ms); else -1
static unsigned long accept_pauses;      // back-offs in a row: one log line as they
                                         // start, one as they end, not ten a second

// Opens the spare unless it is open. Returns 0, or -1 with errno set.
static int open_spare(void)
{
    if (spare_fd != -1)
        return 0;
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (spare_fd == -1)
        return -1;
    if (accept_pauses > 0) {
        log_msg("spare descriptor open again after %lu accept pause%s", accept_pauses,
                accept_pauses == 1 ? "" : "s");
        accept_pauses = 0;
    }
    return 0;
}

// Out of descriptors, with the spare open: refuses one waiting client.
// Returns 0, or -1 with accept's errno (EAGAIN: nobody waits).
static int refuse_one_client(void)
{
    close_or_log(spare_fd, "spare descriptor");
    spare_fd = -1;
    // Plain accept(): this descriptor is closed again at once, by this one
    // thread, so no exec can inherit it.
    int fd = accept(listen_fd, NULL, NULL);
    int accept_err = errno;
    if (fd != -1)
        close_or_log(fd, "refused client");
    (void)open_spare();  // if it fails, the next EMFILE backs off, and says so
    errno = accept_err;
    return fd == -1 ? -1 : 0;
}

// Out of descriptors with no spare (ERR is accept's errno): the listening
// socket leaves the epoll set until resume_accepting puts it back.
static void pause_accepting(int err)
{
    if (epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == -1) {
        log_msg("epoll_ctl(DEL) listening socket: %s", strerror(errno));
        return;
    }
    accept_resume_at = now_ms() + ACCEPT_BACKOFF_MS;
    if (accept_pauses++ == 0)
        log_msg("accept: %s, and no spare descriptor: accepting paused, retrying every %d ms",
                strerror(err), ACCEPT_BACKOFF_MS);
}

// How long epoll_pwait may sleep when it would wait forever: -1, or until a
// paused accept resumes.
static int accept_timeout_ms(void)
{
    if (accept_resume_at == -1)
        return -1;
    long long left = accept_resume_at - now_ms();
    return left > 0 ? (int)left : 0;
}

// Once a pause is over: reopen the spare if a descriptor is free now, and
// watch the listening socket again (the next EMFILE pauses again).
static void resume_accepting(void)
{
    if (accept_resume_at == -1 || now_ms() < accept_resume_at)
        return;
    (void)open_spare();  // failing is expected here: the next EMFILE pauses again
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};  // as in main
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) == -1) {
        // ENOMEM or ENOSPC (max_user_watches): try again after another pause.
        log_msg("epoll_ctl(ADD) listening socket: %s", strerror(errno));
        accept_resume_at = now_ms() + ACCEPT_BACKOFF_MS;
        return;
    }
    accept_resume_at = -1;
}

// Accepts up to ACCEPTS_PER_TURN waiting clients.
static void accept_clients(void)
{
    for (int k = 0; k < ACCEPTS_PER_TURN; k++) {
        int fd = accept_client(listen_fd);
        if (fd != -1) {
            if (conn_add(fd) == -1)
                close_or_log(fd, "client");
            continue;
        }
        int err = errno;
        if (err != EMFILE && err != ENFILE)
            return;  // EAGAIN (nobody left), EINTR, or logged already
        if (open_spare() == -1) {  // a client may have left since the last try
            pause_accepting(err);
            return;
        }
        if (refuse_one_client() == -1) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_msg("accept: %s", strerror(errno));
            if (spare_fd == -1)
                pause_accepting(err);
            return;
        }
        log_msg("accept: out of descriptors; dropped one pending connection");
    }
}

// ---------------------------------------------------------------- the loop

// One turn: wait up to TIMEOUT_MS (-1: as long as it takes), then serve
// whatever is ready. Returns how many descriptors were ready (0: the wait
// timed out, a quiet turn; a signal counts as 1, the turn was not quiet),
// or -1 only if epoll_pwait() itself failed.
static int epoll_once(int timeout_ms)
{
    struct epoll_event events[MAX_EVENTS];
    n_waits++;
    // epoll_pwait installs wait_mask (SIGINT/SIGTERM unblocked) for the wait
    // only, atomically. A signal that arrived since the last wait is pending
    // (blocked), so it is delivered the moment this call starts and the call
    // returns EINTR: it cannot slip in between the loop's test of
    // stop_requested and the wait, which would then sleep on it (issue 7).
    int ready = epoll_pwait(epfd, events, MAX_EVENTS, timeout_ms, &wait_mask);
    if (ready == -1) {
        if (errno == EINTR)
            return 1;  // the caller looks at stop_requested
        log_msg("epoll_pwait: %s", strerror(errno));
        return -1;
    }
    bool results = false;
    for (int i = 0; i < ready; i++) {
        void *tag = events[i].data.ptr;
        if (tag == NULL) {
            accept_clients();
        } else if (tag == &wake_tag) {
            results = true;
        } else {
            // Closing C here is safe although events[i+1..] are still to be
            // served: a socket is reported once per call, and serving one
            // client never closes another.
            struct conn *c = tag;
            if (!conn_handle(c, events[i].events))
                conn_close(c);
        }
    }
    // Results last: delivering one may close its connection (its last reply
    // written, EOF seen), and that connection may be one of events[] above.
    // Delivered first, events[] would hold a freed pointer.
    if (results)
        deliver_results();
    return ready;
}

// Stopping: does any connection still wait for a job's result?
static bool any_job_awaited(void)
{
    for (struct conn *c = conns; c != NULL; c = c->next)
        if (c->njobs > 0)
            return true;
    return false;
}

// Stopping: has every client left had its replies and our FIN?
static bool all_lingering(void)
{
    for (struct conn *c = conns; c != NULL; c = c->next)
        if (c->state != CONN_LINGERING)
            return false;
    return true;
}

// The CPU time this process has used, in microseconds (or 0 if unknown).
static long long cpu_us(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t) == -1)
        return 0;
    return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

// Stopping, the workers joined: turns until every connection has closed
// (the client's EOF after our FIN), a quiet turn with all of them
// lingering, or DEADLINE (now_ms).
static void linger_until(long long deadline)
{
    while (nconns > 0) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return;
        int ready = epoll_once(left < LINGER_QUIET_MS ? (int)left : LINGER_QUIET_MS);
        if (ready == -1 || (ready == 0 && all_lingering()))
            return;
    }
}

// After SIGINT/SIGTERM: accept no one and read no new request; cancel the
// jobs still queued ("ERR stopping"); give the running ones DRAIN_MS to
// finish and their replies to leave; then abort what is left and join.
static void stop_serving(void)
{
    // (If accepting is paused, the listening socket is out of the set already.)
    if (accept_resume_at == -1 && epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == -1)
        log_msg("epoll_ctl(DEL) listening socket: %s", strerror(errno));

    unsigned long cancelled = 0;
    if (use_pool) {
        // Closed, the queue takes no more jobs (conn_submit then says "ERR
        // busy", but no request is read any more) and wakes idle workers.
        for (struct job *j = jq_close(&pool.jobs), *next; j != NULL; j = next) {
            next = j->next;
            j->status = JOB_ABORTED;  // its reply: "ERR stopping"
            struct conn *c = conn_find(j->fd, j->conn_id);
            if (c != NULL) {
                c->njobs--;
                conn_fill_reply(c, j);
            }
            in_flight--;
            cancelled++;
            free(j);
        }
        n_cancelled += cancelled;
    }
    size_t n = nconns, pending = 0;
    for (struct conn *c = conns, *next; c != NULL; c = next) {
        next = c->next;  // conn_close(c) frees c
        if (c->state == CONN_OPEN)
            c->state = CONN_CLOSING;
        buf_free(&c->in);
        if (!conn_update(c))
            conn_close(c);
        else
            pending += buf_len(&c->out) + c->held;
    }
    // The bytes of replies still in our buffers once the kernel took what it would (the
    // unsent output, and the ready replies held behind a running job): a test of the drain
    // reads here that there was something to drain.
    log_msg("stopping: %zu connection%s, %lu job%s running, %lu queued job%s cancelled, "
            "%zu bytes pending", n, n == 1 ? "" : "s", in_flight, in_flight == 1 ? "" : "s",
            cancelled, cancelled == 1 ? "" : "s", pending);

    // The same turns as before, with a deadline. A quiet turn with no job
    // running and only lingering clients left (replies and FIN sent): they
    // went quiet without closing, and waiting for the deadline would change
    // nothing (as in 04).
    long long t0 = now_ms(), deadline = t0 + DRAIN_MS;
    while (in_flight > 0 || nconns > 0) {
        if (in_flight > 0 && !any_job_awaited()) {
            // Every job still running belongs to a connection that has gone:
            // waiting for them would deliver nothing to anyone.
            log_msg("stopping: no client waits for the %lu job%s running: aborting at once",
                    in_flight, in_flight == 1 ? "" : "s");
            break;
        }
        long long left = deadline - now_ms();
        if (left <= 0)
            break;
        int ready = epoll_once(left < LINGER_QUIET_MS ? (int)left : LINGER_QUIET_MS);
        if (ready == -1)
            break;
        if (ready == 0 && in_flight == 0 && all_lingering()) {
            log_msg("stopping: every client quiet after %lld ms, closing", now_ms() - t0);
            break;
        }
    }
    long long drained_ms = now_ms() - t0, lingered_ms = 0;
    if (use_pool) {
        // Results back but not delivered yet are not running: taken first, the
        // count below names only the jobs a worker still runs.
        deliver_results();
        // The CPU the process spends from the abort to the join is what the
        // aborted jobs took to notice it (this thread only waits): a figure
        // the machine's load does not stretch, unlike the time (a test reads it).
        long long cpu0 = -1;
        if (in_flight > 0) {
            if (any_job_awaited())
                log_msg("%lu job%s still running after %d ms: aborting", in_flight,
                        in_flight == 1 ? "" : "s", DRAIN_MS);
            cpu0 = cpu_us();
            pool_abort(&pool);
        }
        long long t_abort = now_ms();
        pool_join(&pool);
        if (cpu0 != -1)
            log_msg("aborted: workers joined after %lld ms, %lld us of CPU", now_ms() - t_abort,
                    cpu_us() - cpu0);
        // What finished since the last turn, or was aborted ("ERR stopping"):
        // delivered like any result (conn_update sends it, then our FIN).
        deliver_results();
        // And then lingered on like any reply, for a short bounded while: a
        // close() now, with unread input, would reset the connection and
        // could destroy the replies just sent (CONN_LINGERING).
        long long t_linger = now_ms();
        linger_until(t_linger + FINAL_LINGER_MS);
        lingered_ms = now_ms() - t_linger;
    }
    // Clients still here were never quiet (they kept sending): both waits ran to their
    // deadlines. The two figures, on this thread's own clock, let a test hold each to its
    // bound without timing the exit from outside (which the machine's load stretches).
    if (conns != NULL)
        log_msg("stopping: %zu client%s left after a drain of %lld ms and a last linger of %lld ms",
                nconns, nconns == 1 ? "" : "s", drained_ms, lingered_ms);
    while (conns != NULL) {
        log_msg("fd %d: %zu replies not sent, closing", conns->fd,
                conns->nwaiting + (buf_len(&conns->out) > 0));
        conn_close(conns);
    }
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    struct options opt;
    parse_options(argc, argv, "server", &opt);
    max_output = opt.max_output;
    reply_delay_ms = opt.reply_delay_ms;
    use_pool = opt.workers > 0;

    install_signal_handlers();
    // Before any thread exists: the workers inherit the blocked mask, so a
    // SIGTERM can only be taken by the I/O thread, inside epoll_pwait. Were
    // a worker to take it, the handler would set the flag while the I/O
    // thread slept on in epoll, and an idle server would never stop.
    if (block_stop_signals(&wait_mask) == -1)
        return 1;
    raise_fd_limit();

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd == -1) {
        log_msg("epoll_create1: %s", strerror(errno));
        return 1;
    }
    listen_fd = listen_on(opt.host, opt.port);
    if (listen_fd == -1 || set_nonblocking(listen_fd) == -1) {
        if (listen_fd != -1)
            close(listen_fd);
        close(epfd);
        return 1;
    }
    if (use_pool && pool_start(&pool, opt.workers, opt.queue_cap) == -1) {
        close(listen_fd);
        close(epfd);
        return 1;
    }
    if (use_pool) {
        // The test knobs (net.h): read by this thread only, so set here freely.
        pool.jobs.wake_all = opt.wake_all;
        pool.done.swap_delay_ms = opt.swap_delay_ms;
    }
    // The listening socket (tag NULL) and, with workers, the eventfd (tag
    // &wake_tag): level-triggered both, so a wakeup not yet taken is
    // reported again on every turn until cq_take_all reads it.
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &wake_tag};
    bool ok = epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &lev) == 0 &&
              (!use_pool || epoll_ctl(epfd, EPOLL_CTL_ADD, pool.done.wake_fd, &wev) == 0);
    if (!ok)
        log_msg("epoll_ctl(ADD): %s", strerror(errno));
    if (open_spare() == -1)
        log_msg("open /dev/null (spare descriptor): %s", strerror(errno));
    if (use_pool)
        log_msg("%d worker thread%s, job queue of %zu, --max-output %zu", opt.workers,
                opt.workers == 1 ? "" : "s", opt.queue_cap, max_output);
    else
        log_msg("no worker threads (-w 0): every job runs on the I/O thread, --max-output %zu",
                max_output);

    while (ok && !stop_requested) {
        ok = epoll_once(accept_timeout_ms()) != -1;
        resume_accepting();
    }

    stop_serving();  // joins the workers: nothing but this thread touches the pool after it
    unsigned long long wakes = use_pool ? atomic_load(&pool.done.wakes) : 0;
    unsigned long long max_wait = use_pool ? pool.done.max_wait_us : 0;
    unsigned long long aborted = use_pool ? atomic_load(&pool.n_aborted) : 0;
    unsigned long long late = use_pool ? atomic_load(&pool.n_late) : 0;
    if (use_pool)
        pool_destroy(&pool);
    if (close(listen_fd) == -1) {
        log_msg("close: %s", strerror(errno));
        ok = false;
    }
    if (spare_fd != -1)
        close_or_log(spare_fd, "spare descriptor");
    close_or_log(epfd, "epoll");
    free(by_fd);
    log_msg("stopped after %llu requests, %llu jobs queued, %llu inline, %llu busy, "
            "%llu cancelled, %llu results, %llu dropped, %llu wakeups, %llu eventfd writes, "
            "%llu most per wakeup, %llu us longest lock wait, %llu epoll_wait, %llu pauses, "
            "%llu aborted, %llu finished after the abort",
            n_requests, n_pooled, n_inline, n_busy, n_cancelled, n_results, n_dropped, n_wakeups,
            wakes, n_max_batch, max_wait, n_waits, n_pauses, aborted, late);
    return ok ? 0 : 1;
}
