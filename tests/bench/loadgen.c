// loadgen.c: the benchmark's echo load generator: N connections, each with exactly one message
// in flight, every echoed byte verified; prints msgs/s, MiB/s and latency percentiles on one line.
//
// Shape of a run (all on one timeline, bounded by W + D seconds plus a short grace):
//
//   setup: open K idle connections (each echoes 1 byte once, then stays silent)
//          open N active connections, share them among T threads
//   warm-up (W s): every thread drives its connections; nothing is counted
//   measure (D s): completed messages are counted, their round trips go in a histogram
//   stop:  threads leave their loop, half-close, take the echo in flight and wait for the
//          server's close (at most 1 s); the main thread prints one line and exits
//
// Each thread owns an epoll instance and its share of the connections: no locks on the hot path.
// The only shared word is the phase (warm-up, measure, stop), written by the main thread.

// epoll is Linux-only; it needs no feature macro, but everything else here is plain POSIX.
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

#define PROG "loadgen"

// How long one connect() may take before it counts as a failure. On loopback a connect
// completes in microseconds unless the server's accept queue is full and the kernel drops
// our SYN; then the kernel retries after 1 s, 3 s, ... so 5 s allows a couple of retries.
#define CONNECT_TIMEOUT_MS 5000

// How long the idle connections may take, all together, to echo their one priming byte.
#define IDLE_PRIME_TIMEOUT_MS 10000

// Extra seconds the watchdog allows on top of W + D for setup (connecting thousands of
// sockets, a thread-per-client server creating thousands of threads) and teardown.
#define WATCHDOG_GRACE_S 30

// Descriptors we need besides the sockets: stdin/out/err, one epoll per thread (counted
// separately), /proc files read at the window edges, and headroom for libc.
#define FD_HEADROOM 16

// A worker wakes at least this often to notice the stop phase even when its server is silent.
#define EPOLL_TIMEOUT_MS 50

// After the run, how long the server may take to echo what is in flight and close.
#define DRAIN_TIMEOUT_MS 1000

// ---------------------------------------------------------------------------------------------
// Latency histogram
//
// Log-linear buckets (the HdrHistogram idea, much reduced): values below 32 ns get one bucket
// each; above, every power of two [2^e, 2^(e+1)) is split into 32 equal sub-buckets. A bucket's
// width is at most 1/32 of its lower bound, so a reported percentile (the bucket's midpoint)
// is within about 1.6% of the true value. Adding a sample is a few instructions and no
// allocation, so recording every message costs nothing we could measure.
// ---------------------------------------------------------------------------------------------

#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct histogram {
    uint64_t count[HIST_BUCKETS];
    uint64_t total;
};

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); // position of the top bit, >= 5 here
    unsigned sub = (unsigned)(v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1);
    return (e - HIST_SUB_BITS + 1) * HIST_SUB + sub;
}

// Lowest value that lands in bucket IDX, and the bucket's width.
static void hist_bucket_range(unsigned idx, uint64_t *low, uint64_t *width)
{
    if (idx < HIST_SUB) {
        *low = idx;
        *width = 1;
        return;
    }
    unsigned e = idx / HIST_SUB + HIST_SUB_BITS - 1;
    uint64_t sub = idx % HIST_SUB;
    *low = (HIST_SUB + sub) << (e - HIST_SUB_BITS);
    *width = (uint64_t)1 << (e - HIST_SUB_BITS);
}

static void hist_add(struct histogram *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    h->total++;
}

static void hist_merge(struct histogram *into, const struct histogram *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->count[i] += from->count[i];
    into->total += from->total;
}

// The value below which a fraction P of the samples lie (midpoint of its bucket), or 0.
static double hist_percentile(const struct histogram *h, double p)
{
    if (h->total == 0)
        return 0;
    // The rank of the sample we want, rounded up: the median of 3 samples is the 2nd.
    double exact = p * (double)h->total;
    uint64_t rank = (uint64_t)exact;
    if ((double)rank < exact || rank < 1)
        rank++;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            uint64_t low, width;
            hist_bucket_range(i, &low, &width);
            return (double)low + (double)(width - 1) / 2.0;
        }
    }
    return 0; // not reached: the counts add up to total
}

// ---------------------------------------------------------------------------------------------
// Data structures
// ---------------------------------------------------------------------------------------------

struct options {
    const char *host;
    const char *port;
    long conns;      // active connections
    long idle;       // idle connections opened first
    long size;       // message size in bytes
    long threads;    // client threads
    double duration; // measured seconds
    double warmup;   // seconds before counting starts
    long server_pid; // 0, or a PID whose CPU time to report per message
};

// One active connection. Owned by exactly one worker thread.
struct conn {
    int fd;
    unsigned id;            // 0..conns-1: part of every payload, so a misrouted reply is caught
    int dead;               // an error was reported; the connection is out of the run
    int closed;             // after the run: the server has closed its side
    int want_out;           // EPOLLOUT is registered (only while a send is incomplete)
    uint64_t msg_no;        // the message in flight: part of the payload, so a stale reply is caught
    size_t sent;            // bytes of it sent so far
    size_t received;        // bytes of its echo received (and verified) so far
    uint64_t started_ns;    // when its first byte was handed to send()
    unsigned char *payload; // the message in flight, which is also the echo we expect back
};

struct worker {
    pthread_t thread;
    int epfd;
    struct conn *conns;
    size_t nconns;
    size_t live;            // connections not dead
    size_t size;            // message size
    unsigned char *scratch; // recv() lands here, then is compared with the payload
    size_t scratch_len;
    uint64_t msgs;          // messages completed during the measured window
    uint64_t errors;
    struct histogram hist;  // their round trips, in nanoseconds
};

// The phase every worker reads after each completed message. Written only by the main thread.
enum { PHASE_WARMUP, PHASE_MEASURE, PHASE_STOP };
static atomic_int phase = PHASE_WARMUP;

// ---------------------------------------------------------------------------------------------
// Helpers: sleep, payload, server CPU (the clock, descriptors and /proc: benchutil.c)
// ---------------------------------------------------------------------------------------------

static void sleep_seconds(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    // nanosleep reports the time left when a signal interrupts it: sleep that remainder.
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

// splitmix64's finaliser: every input bit flips about half of the output bits.
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

// Fills BUF with message MSG_NO of connection CONN_ID. Every 8-byte word depends on the
// connection, the message number and the word's offset, so an echo that belongs to another
// connection, to an earlier message, or comes back shifted or reordered, differs at once.
static void fill_payload(unsigned char *buf, size_t len, unsigned conn_id, uint64_t msg_no)
{
    uint64_t key = mix64(((uint64_t)conn_id << 40) ^ msg_no);
    for (size_t off = 0; off < len; off += 8) {
        uint64_t word = mix64(key + off);
        size_t n = len - off < 8 ? len - off : 8;
        memcpy(buf + off, &word, n);
    }
}

// CPU ticks of PID plus those of its live children (a fork-per-client server's work is done
// in them). Children are listed in /proc/PID/task/PID/children on kernels that have it.
static long long server_cpu_ticks(long pid)
{
    long long total = proc_cpu_ticks(pid);
    if (total < 0)
        return -1;
    char path[96];
    snprintf(path, sizeof path, "/proc/%ld/task/%ld/children", pid, pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return total; // no such file: count the process alone
    long child;
    while (fscanf(f, "%ld", &child) == 1) {
        long long t = proc_cpu_ticks(child);
        if (t > 0)
            total += t;
    }
    fclose(f);
    return total;
}

// ---------------------------------------------------------------------------------------------
// Idle connections: open, prove the server accepted them, then leave them alone
// ---------------------------------------------------------------------------------------------

// A connect() completes in the kernel before the server calls accept(), so an open socket
// does not prove the server is watching it. Each idle connection therefore echoes one byte
// once: after that the server has accepted it and holds it in its poll set (or in a thread),
// which is the cost we want to measure. Returns 0, or -1 after saying why on stderr.
static int prime_idle(const int *fds, long k)
{
    int epfd = epoll_create1(0);
    if (epfd < 0) {
        fprintf(stderr, "%s: epoll_create1: %s\n", PROG, strerror(errno));
        return -1;
    }
    int rc = -1;
    for (long i = 0; i < k; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fds[i], &ev) != 0) {
            fprintf(stderr, "%s: idle conn %ld: epoll_ctl: %s\n", PROG, i, strerror(errno));
            goto out;
        }
        ssize_t n;
        do
            n = send(fds[i], "i", 1, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n != 1) {
            fprintf(stderr, "%s: idle conn %ld: send: %s\n", PROG, i,
                    n < 0 ? strerror(errno) : "sent nothing");
            goto out;
        }
    }
    long pending = k;
    uint64_t deadline = now_ns() + (uint64_t)IDLE_PRIME_TIMEOUT_MS * 1000000u;
    struct epoll_event evs[256];
    while (pending > 0) {
        uint64_t now = now_ns();
        if (now >= deadline) {
            fprintf(stderr, "%s: %ld of %ld idle connections got no echo within %d ms\n", PROG,
                    pending, k, IDLE_PRIME_TIMEOUT_MS);
            goto out;
        }
        int n = epoll_wait(epfd, evs, 256, (int)((deadline - now) / 1000000u) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "%s: epoll_wait: %s\n", PROG, strerror(errno));
            goto out;
        }
        for (int j = 0; j < n; j++) {
            long i = (long)evs[j].data.u64;
            char c;
            ssize_t r;
            do
                r = recv(fds[i], &c, 1, 0);
            while (r < 0 && errno == EINTR);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                continue;
            if (r != 1 || c != 'i') {
                fprintf(stderr, "%s: idle conn %ld: priming echo: %s\n", PROG, i,
                        r < 0    ? strerror(errno)
                        : r == 0 ? "closed by the server"
                                 : "wrong byte");
                goto out;
            }
            // Done with this one: stop watching it so it is never reported again.
            if (epoll_ctl(epfd, EPOLL_CTL_DEL, fds[i], NULL) != 0) {
                fprintf(stderr, "%s: epoll_ctl(DEL): %s\n", PROG, strerror(errno));
                goto out;
            }
            pending--;
        }
    }
    rc = 0;
out:
    close(epfd);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Active connections: one message in flight each
// ---------------------------------------------------------------------------------------------

static void conn_fail(struct worker *w, struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Reports the connection's first (and only) error and takes it out of the run.
static void conn_fail(struct worker *w, struct conn *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: conn %u (fd %d), message %" PRIu64 ": %s\n", PROG, c->id, c->fd,
            c->msg_no, msg);
    // Closing would do, but an fd number freed here could be reused while the main thread
    // still counts descriptors; deregistering is enough, and cleanup closes it.
    if (epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL) != 0)
        fprintf(stderr, "%s: epoll_ctl(DEL): %s\n", PROG, strerror(errno));
    c->dead = 1;
    w->live--;
    w->errors++;
}

static int conn_watch(struct worker *w, struct conn *c, int want_out)
{
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        conn_fail(w, c, "epoll_ctl(MOD): %s", strerror(errno));
        return -1;
    }
    c->want_out = want_out;
    return 0;
}

// Sends what is left of the message in flight. A short send (the socket buffer is full,
// which large messages can cause) is finished later when epoll reports EPOLLOUT; we watch
// EPOLLOUT only during such a send, or epoll would wake us for it all the time.
static void conn_send(struct worker *w, struct conn *c)
{
    while (c->sent < w->size) {
        ssize_t n = send(c->fd, c->payload + c->sent, w->size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out)
                conn_watch(w, c, 1);
            return;
        }
        conn_fail(w, c, "send at offset %zu: %s", c->sent,
                  n < 0 ? strerror(errno) : "sent nothing");
        return;
    }
    if (c->want_out)
        conn_watch(w, c, 0);
}

static void conn_start_message(struct worker *w, struct conn *c, uint64_t now)
{
    (void)now;
    fill_payload(c->payload, w->size, c->id, c->msg_no);
    c->sent = 0;
    c->received = 0;
    // After fill_payload: a latency is the server's and the network's, not the time this
    // process took to make the bytes (200 KB of payload costs tens of microseconds).
    c->started_ns = now_ns();
    conn_send(w, c);
}

// Reads what has arrived of the echo and checks it against the message we sent. Bytes may
// come back while we are still sending (a large message fills both socket buffers), so the
// read side does not wait for the send side to finish.
static void conn_receive(struct worker *w, struct conn *c)
{
    for (;;) {
        size_t want = w->size - c->received;
        if (want > w->scratch_len)
            want = w->scratch_len;
        ssize_t n = recv(c->fd, w->scratch, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            conn_fail(w, c, "recv after %zu of %zu bytes: %s", c->received, w->size,
                      strerror(errno));
            return;
        }
        if (n == 0) {
            conn_fail(w, c, "closed by the server after %zu of %zu echoed bytes", c->received,
                      w->size);
            return;
        }
        if (memcmp(w->scratch, c->payload + c->received, (size_t)n) != 0) {
            size_t i = 0;
            while (w->scratch[i] == c->payload[c->received + i])
                i++;
            conn_fail(w, c, "echo differs at offset %zu of %zu: got 0x%02x, expected 0x%02x",
                      c->received + i, w->size, w->scratch[i], c->payload[c->received + i]);
            return;
        }
        c->received += (size_t)n;
        if (c->received == w->size) {
            uint64_t now = now_ns();
            if (atomic_load_explicit(&phase, memory_order_relaxed) == PHASE_MEASURE) {
                w->msgs++;
                hist_add(&w->hist, now - c->started_ns);
            }
            c->msg_no++;
            conn_start_message(w, c, now);
            return; // the next echo cannot be here yet: let epoll say when it is
        }
        if ((size_t)n < want)
            return; // the socket is drained for now; a level-triggered epoll reports the rest
    }
}

// The run is over: leave politely. Half-close every connection, read (and drop) the echo
// still in flight, and wait for the server to close its side. Closing with unread data
// would make the kernel send a reset instead, and every run would end with each server
// logging dropped clients: the benchmark should exercise the normal goodbye.
static void worker_drain(struct worker *w)
{
    size_t open = 0;
    for (size_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->dead)
            continue;
        if (c->want_out && conn_watch(w, c, 0) != 0)
            continue;
        if (shutdown(c->fd, SHUT_WR) != 0) {
            conn_fail(w, c, "shutdown: %s", strerror(errno));
            continue;
        }
        open++;
    }
    uint64_t deadline = now_ns() + (uint64_t)DRAIN_TIMEOUT_MS * 1000000u;
    struct epoll_event evs[64];
    while (open > 0) {
        uint64_t now = now_ns();
        if (now >= deadline)
            return; // cleanup closes what is left; a silent server costs us one second
        int n = epoll_wait(w->epfd, evs, 64, (int)((deadline - now) / 1000000u) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return;
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->dead || c->closed)
                continue;
            ssize_t r;
            do
                r = recv(c->fd, w->scratch, w->scratch_len, 0);
            while (r < 0 && errno == EINTR);
            if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)))
                continue; // level-triggered: the rest, or the EOF, is reported again
            // EOF, or an error: either way this connection is finished.
            if (epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL) != 0)
                fprintf(stderr, "%s: epoll_ctl(DEL): %s\n", PROG, strerror(errno));
            c->closed = 1;
            open--;
        }
    }
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[64];
    uint64_t now = now_ns();

    for (size_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
            fprintf(stderr, "%s: conn %u: epoll_ctl(ADD): %s\n", PROG, c->id, strerror(errno));
            c->dead = 1;
            w->live--;
            w->errors++;
            continue;
        }
        conn_start_message(w, c, now);
    }

    while (w->live > 0 && atomic_load_explicit(&phase, memory_order_relaxed) != PHASE_STOP) {
        int n = epoll_wait(w->epfd, evs, 64, EPOLL_TIMEOUT_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "%s: epoll_wait: %s\n", PROG, strerror(errno));
            w->errors++;
            break;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            // EPOLLERR/EPOLLHUP: recv() reports what happened.
            if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                conn_receive(w, c);
            if (!c->dead && (evs[i].events & EPOLLOUT))
                conn_send(w, c);
        }
    }
    worker_drain(w);
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

static void usage(FILE *out)
{
    fprintf(out,
            "usage: %s -p PORT [options]\n"
            "Drives an echo server: every active connection keeps one message in flight,\n"
            "verifies every echoed byte, and sends the next. After the warm-up it counts for\n"
            "the measured seconds, then prints one line:\n"
            "  conns=.. size=.. secs=.. msgs=.. msgs_per_s=.. MiB_per_s=.. p50_us=.. p99_us=.. "
            "errors=..\n"
            "\n"
            "  -H, --host HOST       server address (default 127.0.0.1)\n"
            "  -p, --port PORT       server port (required)\n"
            "  -c, --conns N         active connections (default 1; 0 with -i only holds idle ones)\n"
            "  -s, --size BYTES      message size (default 64)\n"
            "  -d, --duration SECS   measured seconds, decimals allowed (default 2)\n"
            "  -w, --warmup SECS     seconds before counting starts (default 0.5)\n"
            "  -t, --threads T       client threads, each with an epoll and a share of the\n"
            "                        connections (default 1)\n"
            "  -i, --idle K          first open K idle connections; each echoes one byte once\n"
            "                        (so the server has surely accepted it), then stays silent\n"
            "  -P, --server-pid PID  also report the server's CPU time per message (utime+stime\n"
            "                        of PID and its children from /proc over the measured window)\n"
            "                        and ours: adds srv_cpu_us_per_msg=.. cli_cpu_us_per_msg=..\n"
            "  -h, --help            this text\n"
            "\n"
            "Latency is the round trip of one message, from handing its first byte to send()\n"
            "to receiving its last; percentiles come from a log-linear histogram with 32\n"
            "sub-buckets per power of two (within about 1.6%%). MiB_per_s counts payload one way.\n"
            "Any wrong byte, early close or failed connect is an error: it is described on\n"
            "stderr and the exit status is 1. A bad option exits 2.\n",
            PROG);
}

static void bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", PROG);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    usage(stderr);
    exit(2);
}

static long parse_long(const char *s, long min, long max, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        bad_usage(what, s);
    return v;
}

static double parse_seconds(const char *s, double min, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    // 3600 s is far beyond any sensible run; it also keeps the watchdog's alarm() in range.
    if (errno != 0 || end == s || *end != '\0' || !(v >= min) || v > 3600)
        bad_usage(what, s);
    return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},     {"port", required_argument, NULL, 'p'},
        {"conns", required_argument, NULL, 'c'},    {"size", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'}, {"warmup", required_argument, NULL, 'w'},
        {"threads", required_argument, NULL, 't'},  {"idle", required_argument, NULL, 'i'},
        {"server-pid", required_argument, NULL, 'P'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct options){.host = "127.0.0.1", .conns = 1, .size = 64, .threads = 1,
                          .duration = 2.0, .warmup = 0.5};
    opterr = 0; // we print our own message, then the usage
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:c:s:d:w:t:i:P:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H': o->host = optarg; break;
        case 'p': o->port = optarg; break;
        case 'c': o->conns = parse_long(optarg, 0, 1000000, "bad connection count '%s'"); break;
        case 's': o->size = parse_long(optarg, 1, 64L << 20, "bad message size '%s'"); break;
        case 'd': o->duration = parse_seconds(optarg, 0.01, "bad duration '%s'"); break;
        case 'w': o->warmup = parse_seconds(optarg, 0, "bad warm-up '%s'"); break;
        case 't': o->threads = parse_long(optarg, 1, 256, "bad thread count '%s'"); break;
        case 'i': o->idle = parse_long(optarg, 0, 1000000, "bad idle count '%s'"); break;
        case 'P': o->server_pid = parse_long(optarg, 1, INT_MAX, "bad pid '%s'"); break;
        case 'h': usage(stdout); exit(0);
        default:
            bad_usage("unknown option or missing value: '%s'",
                      optind > 0 && optind <= argc ? argv[optind - 1] : "?");
        }
    }
    if (optind < argc)
        bad_usage("unexpected argument '%s'", argv[optind]);
    if (o->port == NULL)
        bad_usage("%s", "a port is required (-p PORT)");
    if (o->conns == 0 && o->idle == 0)
        bad_usage("%s", "nothing to do: -c 0 needs -i K");
    if (o->threads > o->conns)
        o->threads = o->conns; // a thread with no connection would only spin
}

// ---------------------------------------------------------------------------------------------
// The run: setup, the measured window, the report
// ---------------------------------------------------------------------------------------------

// Everything one run owns, so that a setup step can fail and cleanup still frees it all.
struct run {
    struct options o;
    struct addrinfo *ai;
    int *idle_fds;
    long nidle;               // idle connections opened so far
    struct conn *conns;
    long nconn;               // active connections opened so far
    unsigned char *payloads;  // conns x size bytes: every connection's message in flight
    struct worker *workers;
    long nthreads;            // threads started so far
    uint64_t errors;
};

// What the measured window saw.
struct window {
    double secs;
    uint64_t msgs;
    long long srv_ticks;      // server CPU over the window, or -1 if /proc could not say
    double cli_secs;          // our CPU over the window
    struct histogram *hist;   // all threads' round trips, merged
};

static int run_init(struct run *r)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(r->o.host, r->o.port, &hints, &r->ai);
    if (gai != 0) {
        fprintf(stderr, "%s: %s:%s: %s\n", PROG, r->o.host, r->o.port, gai_strerror(gai));
        r->ai = NULL;
        return -1;
    }
    // +1 everywhere: calloc(0) may return NULL, which would read as out of memory.
    r->idle_fds = calloc((size_t)r->o.idle + 1, sizeof *r->idle_fds);
    r->conns = calloc((size_t)r->o.conns + 1, sizeof *r->conns);
    r->payloads = malloc((size_t)r->o.conns * (size_t)r->o.size + 1);
    r->workers = calloc((size_t)r->o.threads + 1, sizeof *r->workers);
    if (r->idle_fds == NULL || r->conns == NULL || r->payloads == NULL || r->workers == NULL) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        return -1;
    }
    return 0;
}

// 1. Idle connections first, so the server carries them for the whole measured run.
static int open_idle(struct run *r)
{
    char err[160];
    for (; r->nidle < r->o.idle; r->nidle++) {
        r->idle_fds[r->nidle] = connect_nonblocking(r->ai, CONNECT_TIMEOUT_MS, err, sizeof err);
        if (r->idle_fds[r->nidle] < 0) {
            fprintf(stderr, "%s: idle conn %ld: %s\n", PROG, r->nidle, err);
            return -1;
        }
    }
    if (r->o.idle == 0)
        return 0;
    if (prime_idle(r->idle_fds, r->o.idle) != 0)
        return -1;
    // run.py waits for this line to measure the server's memory with them all open.
    fprintf(stderr, "%s: %ld idle connections open\n", PROG, r->o.idle);
    return 0;
}

// 2. The active connections.
static int open_active(struct run *r)
{
    char err[160];
    for (; r->nconn < r->o.conns; r->nconn++) {
        struct conn *c = &r->conns[r->nconn];
        c->fd = connect_nonblocking(r->ai, CONNECT_TIMEOUT_MS, err, sizeof err);
        if (c->fd < 0) {
            fprintf(stderr, "%s: conn %ld: %s\n", PROG, r->nconn, err);
            return -1;
        }
        c->id = (unsigned)r->nconn;
        c->payload = r->payloads + (size_t)r->nconn * (size_t)r->o.size;
        // One message per round trip: never let Nagle hold the tail of one back.
        int one = 1;
        if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
            fprintf(stderr, "%s: conn %ld: TCP_NODELAY: %s\n", PROG, r->nconn, strerror(errno));
            r->nconn++; // its descriptor is open: count it so cleanup closes it
            return -1;
        }
    }
    return 0;
}

// 3. Deal connection i to thread i % T, regrouping conns[] so that each worker owns one
// contiguous slice and never touches another's; then start the threads: the warm-up begins.
static int start_workers(struct run *r)
{
    struct conn *grouped = calloc((size_t)r->o.conns + 1, sizeof *grouped);
    if (grouped == NULL) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        return -1;
    }
    size_t at = 0;
    for (long t = 0; t < r->o.threads; t++) {
        r->workers[t].conns = grouped + at;
        for (long i = t; i < r->o.conns; i += r->o.threads)
            grouped[at++] = r->conns[i];
        r->workers[t].nconns = (size_t)(grouped + at - r->workers[t].conns);
    }
    free(r->conns);
    r->conns = grouped;

    size_t size = (size_t)r->o.size;
    for (; r->nthreads < r->o.threads; r->nthreads++) {
        struct worker *w = &r->workers[r->nthreads];
        w->size = size;
        w->live = w->nconns;
        w->scratch_len = size < 65536 ? size : 65536;
        w->scratch = malloc(w->scratch_len);
        w->epfd = epoll_create1(0);
        int rc = w->scratch == NULL ? ENOMEM
                 : w->epfd < 0      ? errno
                                    : pthread_create(&w->thread, NULL, worker_run, w);
        if (rc != 0) {
            fprintf(stderr, "%s: thread %ld: %s\n", PROG, r->nthreads, strerror(rc));
            free(w->scratch);
            if (w->epfd >= 0)
                close(w->epfd);
            return -1;
        }
    }
    return 0;
}

// 4. The measured window, then the threads' results. Runs even after a setup failure
// (with an empty window) so that the one result line is printed in every case.
static void measure_window(struct run *r, struct window *win)
{
    long long srv0 = r->o.server_pid ? server_cpu_ticks(r->o.server_pid) : -1;
    double cli0 = cpu_seconds_self();
    uint64_t t0 = now_ns();
    atomic_store(&phase, PHASE_MEASURE);
    if (r->errors == 0)
        sleep_seconds(r->o.duration);
    atomic_store(&phase, PHASE_STOP);
    uint64_t t1 = now_ns();
    long long srv1 = r->o.server_pid ? server_cpu_ticks(r->o.server_pid) : -1;
    win->cli_secs = cpu_seconds_self() - cli0;
    win->secs = (double)(t1 - t0) / 1e9;
    win->srv_ticks = srv0 >= 0 && srv1 >= 0 ? srv1 - srv0 : -1;
    if (r->o.server_pid && win->srv_ticks < 0)
        fprintf(stderr, "%s: cannot read the CPU time of pid %ld from /proc\n", PROG,
                r->o.server_pid);

    win->hist = calloc(1, sizeof *win->hist);
    for (long t = 0; t < r->nthreads; t++) {
        struct worker *w = &r->workers[t];
        int rc = pthread_join(w->thread, NULL);
        if (rc != 0)
            fprintf(stderr, "%s: pthread_join: %s\n", PROG, strerror(rc));
        win->msgs += w->msgs;
        r->errors += w->errors;
        if (win->hist != NULL)
            hist_merge(win->hist, &w->hist);
        free(w->scratch);
        close(w->epfd);
    }
    if (r->errors == 0 && r->o.conns > 0 && win->msgs == 0) {
        fprintf(stderr, "%s: no message completed in %.2f s: is the server echoing?\n", PROG,
                r->o.duration);
        r->errors++;
    }
}

static void print_result(const struct run *r, const struct window *win)
{
    double per_s = win->secs > 0 ? (double)win->msgs / win->secs : 0;
    printf("conns=%ld size=%ld secs=%.2f msgs=%" PRIu64 " msgs_per_s=%.0f MiB_per_s=%.2f "
           "p50_us=%.1f p99_us=%.1f errors=%" PRIu64,
           r->o.conns, r->o.size, win->secs, win->msgs, per_s,
           per_s * (double)r->o.size / (1024.0 * 1024.0),
           win->hist ? hist_percentile(win->hist, 0.50) / 1000.0 : 0,
           win->hist ? hist_percentile(win->hist, 0.99) / 1000.0 : 0, r->errors);
    if (r->o.server_pid) {
        long hz = sysconf(_SC_CLK_TCK);
        double m = (double)win->msgs;
        printf(" srv_cpu_us_per_msg=%.2f cli_cpu_us_per_msg=%.2f",
               win->srv_ticks >= 0 && hz > 0 && m > 0
                   ? (double)win->srv_ticks / (double)hz * 1e6 / m
                   : -1.0,
               m > 0 ? win->cli_secs * 1e6 / m : -1.0);
    }
    printf("\n");
    fflush(stdout);
}

static void run_free(struct run *r)
{
    for (long i = 0; i < r->nidle; i++)
        close(r->idle_fds[i]);
    for (long i = 0; i < r->nconn; i++)
        if (r->conns[i].fd >= 0)
            close(r->conns[i].fd);
    free(r->idle_fds);
    free(r->conns);
    free(r->payloads);
    free(r->workers);
    if (r->ai)
        freeaddrinfo(r->ai);
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

// The last line of defence for "always stops": if setup or a thread hangs far past the
// planned end, say so and leave. _exit and write are async-signal-safe; stdio is not.
static void on_watchdog(int sig)
{
    (void)sig;
    static const char msg[] = PROG ": watchdog: the run overran its time limit, giving up\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
    _exit(3);
}

int main(int argc, char **argv)
{
    struct run r = {0};
    parse_options(argc, argv, &r.o);

    // A server that resets a connection must show up as an error on that connection, not
    // kill us: every send() already passes MSG_NOSIGNAL, this covers anything else.
    struct sigaction ign = {.sa_handler = SIG_IGN}, dog = {.sa_handler = on_watchdog};
    sigemptyset(&ign.sa_mask);
    sigemptyset(&dog.sa_mask);
    if (sigaction(SIGPIPE, &ign, NULL) != 0 || sigaction(SIGALRM, &dog, NULL) != 0) {
        fprintf(stderr, "%s: sigaction: %s\n", PROG, strerror(errno));
        return 1;
    }
    alarm((unsigned)(r.o.warmup + r.o.duration) + DRAIN_TIMEOUT_MS / 1000 + WATCHDOG_GRACE_S);

    if (ensure_fd_limit(PROG, (rlim_t)(r.o.conns + r.o.idle + r.o.threads + FD_HEADROOM)) != 0 ||
        run_init(&r) != 0) {
        run_free(&r);
        return 1;
    }
    for (long i = 0; i < r.o.conns; i++)
        r.conns[i].fd = -1;

    // Steps 1-3; the first failure skips to the (empty) window and the report.
    if (open_idle(&r) == 0 && open_active(&r) == 0 && start_workers(&r) == 0)
        sleep_seconds(r.o.warmup);
    else
        r.errors++;

    struct window win = {0};
    measure_window(&r, &win);
    print_result(&r, &win);
    free(win.hist);
    run_free(&r);
    return r.errors == 0 ? 0 : 1;
}
