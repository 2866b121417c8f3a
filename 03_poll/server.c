// server.c: one thread serves any number of clients with poll() and non-blocking sockets.
// Each connection queues what the kernel cannot take yet: a slow reader costs memory, not time.
//
// Read this file first, then buffer.h (the queues) and net.c (the plumbing).
//
// _GNU_SOURCE: glibc declares ppoll() (poll_once) only with it; ppoll is a
// Linux call (POSIX has it only since its 2024 edition).
//
// What changed since 02_select, and why:
//  1. poll() takes an array of struct pollfd instead of a fixed bitmap, so
//     there is no FD_SETSIZE: the array grows with the clients.
//  2. Client sockets are non-blocking. send() takes what fits in the kernel
//     and returns at once; the rest waits in the connection's output buffer,
//     and we ask poll() for POLLOUT ("tell me when there is room") only
//     while something waits. A client that stops reading stalls no one.
//  3. Back-pressure. Queuing is not free either: a client that sends and
//     never reads would make us queue without bound. So once its unsent echo
//     passes --max-output we stop reading from it (no POLLIN); its bytes back
//     up in the kernel, its own send() blocks, and it slows to its own pace.
//  4. One read buffer for everyone (scratch): echo reads into it and sends
//     from it, and only what the kernel did not take is copied into the
//     connection's own output buffer. A reading client costs no allocation.
//  5. The wait is ppoll(), with SIGINT and SIGTERM blocked everywhere else,
//     so a stop signal cannot slip in between checking the flag and going
//     to sleep (poll_once says how).
//
// One turn of the loop, poll_once():
//   1. ppoll() sleeps until a descriptor is ready (or a stop signal
//      arrives: SIGINT and SIGTERM are blocked everywhere but inside it)
//   2. every client with events: flush queued output, read and echo,
//      close it if it is finished
//   3. accept the clients waiting on the listening socket
// On SIGINT/SIGTERM, drain_and_close_all() stops accepting and finishes
// the clients we have, for at most DRAIN_MS.
//
// What is still O(n): each poll() call copies the whole array into the
// kernel, which checks every socket in it, and step 2 scans every entry,
// however few are busy. Idle connections cost on every turn; 04_epoll
// keeps the interest list in the kernel and gets back only the ready ones.

#define _GNU_SOURCE
#include "buffer.h"
#include "net.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// How much one recv() may read: the size of `scratch`. Bigger means fewer
// calls per megabyte; it is also the most one client can add to its output
// buffer per turn.
#define READ_CHUNK (64 * 1024)

// How many clients one turn may accept. A flood of new connections must
// not keep the loop from serving the ones it already has.
#define ACCEPTS_PER_TURN 64

// After SIGINT/SIGTERM, how long pending echoes get to leave. The contract
// gives a server 2 s to exit; this leaves the other second as margin.
#define DRAIN_MS 1000

// ---------------------------------------------------------------- connections

// One client. Idle, it owns nothing but this struct: its output buffer
// holds NULL until bytes have to wait in it (buffer.h, rule 1). There is
// no input buffer: echo handles every byte as it is read (conn_echo).
struct conn {
    struct buffer out;   // echo the kernel has not taken yet
    bool input_closed;   // EOF seen: read no more, close once `out` is empty
    char peer[PEER_LEN];
};

// Two parallel arrays: pfds[i] is what poll() sees of conns[i]. poll()
// wants a dense array of struct pollfd, so our own state cannot live in it.
// Entry 0 is the listening socket (conns[0] is unused). Entries 1..used-1
// are clients, in no particular order: closing one moves the last into its
// slot (conn_close), so the array never has holes.
static struct pollfd *pfds;
static struct conn *conns;
static size_t used;       // entries in use, the listening socket included
static size_t capacity;   // entries allocated
static size_t max_output; // --max-output

// Every recv() reads here, and echo sends from here. One is enough: one
// thread serves one client at a time, and whatever the kernel does not take
// is copied into that client's `out` before the next recv(). (A 64 KiB
// buffer per connection, allocated per read, would cost a malloc and a
// free per read; one per connection kept, 64 KiB per idle client.)
static char scratch[READ_CHUNK];

// The signal mask ppoll() waits with (poll_once): ours at start, with
// SIGINT and SIGTERM unblocked. Outside ppoll() they are blocked (main).
static sigset_t wait_mask;

// Counted for the "stopped after" line, so that a test can prove from the
// server which paths ran (test.bats reads them):
static unsigned long long n_polls;        // ppoll() calls
static unsigned long long n_recvs;        // recv() calls
static unsigned long long n_short_sends;  // send() took less than asked (EAGAIN included):
                                          // the rest had to be queued or stay queued
static unsigned long long n_flushes;      // conn_flush() calls on POLLOUT (or ERR/HUP)
static unsigned long long n_pauses;       // back-pressure: stopped reading a client
static unsigned long long n_resumes;      // ... and started again

// Adds FD at the end of the arrays, growing them if needed. Returns 0, or
// -1 after logging why (the caller still owns FD).
static int conn_add(int fd, const char *peer)
{
    if (used == capacity) {
        // Doubling: N clients cost O(log N) reallocations, and the arrays
        // are never more than half empty (they do not shrink, though).
        size_t new_cap = capacity > 0 ? capacity * 2 : 64;
        struct pollfd *p = realloc(pfds, new_cap * sizeof *p);
        if (p == NULL) {
            log_msg("fd %d: out of memory, closing", fd);
            return -1;
        }
        pfds = p;
        struct conn *c = realloc(conns, new_cap * sizeof *c);
        if (c == NULL) {
            log_msg("fd %d: out of memory, closing", fd);
            return -1;
        }
        conns = c;
        capacity = new_cap;
    }
    pfds[used] = (struct pollfd){.fd = fd, .events = POLLIN, .revents = 0};
    conns[used] = (struct conn){.out = BUFFER_EMPTY};
    snprintf(conns[used].peer, PEER_LEN, "%s", peer);
    used++;
    return 0;
}

// Closes client I and frees its buffers, then moves the last entry into
// slot I. Afterwards slot I holds a different client (or is past the end):
// a loop over the array must look at slot I again, not skip to I + 1.
static void conn_close(size_t i)
{
    if (close(pfds[i].fd) == -1)
        log_msg("fd %d: close: %s", pfds[i].fd, strerror(errno));
    buf_free(&conns[i].out);
    used--;
    if (i != used) {
        pfds[i] = pfds[used];
        conns[i] = conns[used];  // the buffer moves by value: still one owner
    }
}

// Decides what client I waits for next, from its state alone.
static void conn_watch(size_t i)
{
    // LAB BEGIN conn_watch: set pfds[i].events: POLLIN unless input is closed or the client is over --max-output (resume at half), POLLOUT only while output is queued; count and log each pause and resume
    // LAB STUB: // not written: reads until EOF, never pauses and never asks for POLLOUT, so
    // LAB STUB: // whatever the kernel could not take at once stays in the queue
    // LAB STUB: pfds[i].events = conns[i].input_closed ? 0 : POLLIN;
    struct conn *c = &conns[i];
    size_t queued = buf_len(&c->out);
    bool was_reading = (pfds[i].events & POLLIN) != 0;
    bool reading;
    if (c->input_closed)
        reading = false;
    else if (was_reading)
        reading = queued <= max_output;
    else
        // Paused by back-pressure: resume only once half has drained. With
        // one threshold, a slow reader would flip us between reading and
        // not reading on every 64 KiB; the gap makes each pause count.
        reading = queued <= max_output / 2;
    if (!c->input_closed && was_reading != reading) {
        if (reading) {
            n_resumes++;
            log_msg("fd %d: output down to %zu bytes, reading again", pfds[i].fd, queued);
        } else {
            n_pauses++;
            log_msg("fd %d: %zu bytes unsent > --max-output %zu, not reading until it drains",
                    pfds[i].fd, queued, max_output);
        }
    }

    short events = reading ? POLLIN : 0;
    // POLLOUT only while something is queued. A socket with room in its send
    // buffer is writable nearly all the time: watched with nothing to send,
    // it would make poll() return at once on every turn, a busy loop.
    if (queued > 0)
        events |= POLLOUT;
    pfds[i].events = events;
    // LAB END
}

// One send() of N bytes at P to client FD, which is non-blocking: the
// kernel takes what fits in its send buffer and returns at once. Returns
// how many bytes it took (0: none, the buffer is full: EAGAIN), or -1 after
// logging why the client must be dropped. Taking less than N is a short
// send: the buffer is full now, so trying again before POLLOUT says there
// is room would only earn an EAGAIN.
static ssize_t send_some(int fd, const char *p, size_t n)
{
    ssize_t sent;
    do
        sent = send(fd, p, n, 0);
    while (sent == -1 && errno == EINTR);
    if (sent == -1) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            log_msg("fd %d: send: %s, dropping", fd, strerror(errno));
            return -1;
        }
        sent = 0;
    }
    if ((size_t)sent < n)
        n_short_sends++;
    return sent;
}

// Appends the N bytes at P that the kernel did not take to C's queue, behind
// what is there already. Returns 0, or -1 after logging why C must be dropped.
static int conn_queue(struct conn *c, int fd, const char *p, size_t n)
{
    if (n > 0 && buf_append(&c->out, p, n) == -1) {
        log_msg("fd %d: out of memory for %zu bytes of output, dropping", fd, n);
        return -1;
    }
    return 0;
}

// Sends N bytes at P to client C: straight away if nothing is queued ahead
// of them (the usual case: no copy, no allocation), and queues whatever the
// kernel did not take. Returns 0, or -1 after logging why C must be dropped.
static int conn_write(struct conn *c, int fd, const char *p, size_t n)
{
    // LAB BEGIN conn_write: if nothing is queued, send_some() the bytes now and skip what the kernel took; conn_queue() the rest (all of it when something was queued already)
    // LAB STUB: // not written: every byte waits in the queue for POLLOUT, even when the kernel
    // LAB STUB: // had room for it (the right bytes, but a buffer allocated per read)
    // LAB STUB: return conn_queue(c, fd, p, n);
    // With bytes already queued, these must wait their turn behind them;
    // and the kernel said "full" last time, so trying again now is pointless.
    if (buf_len(&c->out) == 0) {
        ssize_t sent = send_some(fd, p, n);
        if (sent == -1)
            return -1;
        p += sent;
        n -= (size_t)sent;
    }
    return conn_queue(c, fd, p, n);
    // LAB END
}

// Sends what client C has queued, as much as the kernel takes. Returns 0,
// or -1 after logging why C must be dropped.
static int conn_flush(struct conn *c, int fd)
{
    // One send_some: the queue is one contiguous run of bytes, so one call
    // offers all of it, and a short send means the kernel is full (POLLOUT
    // calls us back).
    ssize_t sent = send_some(fd, buf_peek(&c->out), buf_len(&c->out));
    if (sent == -1)
        return -1;
    // Frees the buffer once it empties, or shrinks it (buffer.h).
    buf_consume(&c->out, (size_t)sent);
    return 0;
}

// Reads once from client C into `scratch`: whatever has arrived, up to
// READ_CHUNK. Returns how many bytes came, 0 if none did (EOF: then it sets
// input_closed; or EAGAIN: nothing had arrived), or -1 after logging why C
// must be dropped.
static ssize_t conn_read(struct conn *c, int fd)
{
    // Once per turn, not until EAGAIN: poll() is level-triggered, so what we
    // leave in the kernel is reported again next turn, and meanwhile every
    // other ready client gets its turn too.
    ssize_t n;
    do {
        n_recvs++;
        n = recv(fd, scratch, sizeof scratch, 0);
    } while (n == -1 && errno == EINTR);
    if (n == 0) {
        c->input_closed = true;  // EOF: the echo still queued will follow
        if (buf_len(&c->out) > 0)
            log_msg("fd %d: EOF with %zu bytes of echo still to send", fd, buf_len(&c->out));
    }
    if (n == -1) {
        // EAGAIN: poll() said readable but the data went (or never was:
        // poll may wake spuriously). A blocking socket would sleep here.
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        log_msg("fd %d: recv: %s, dropping", fd, strerror(errno));
        return -1;
    }
    return n;
}

// The application: echo the N bytes that just arrived (in `scratch`). A
// protocol would handle the whole messages here and keep a partial one in
// a per-connection input buffer until the rest arrives (06_codecs).
static int conn_echo(struct conn *c, int fd, size_t n)
{
    if (n == 0)
        return 0;
    return conn_write(c, fd, scratch, n);
}

// Serves client I after poll() reported REVENTS for it. Returns false when
// the client is finished (EOF and all echoed) or failed: the caller closes it.
static bool conn_handle(size_t i)
{
    struct conn *c = &conns[i];
    int fd = pfds[i].fd;
    short revents = pfds[i].revents;

    if (revents & POLLNVAL) {
        log_msg("fd %d: not an open descriptor (a bug), dropping", fd);
        return false;
    }
    // poll() reports POLLERR and POLLHUP even unasked. They are handled by
    // doing the I/O we were going to do anyway: the failing send() or recv()
    // then says exactly what went wrong, and the client is dropped.
    //
    // Output first: it frees room, and may lift the back-pressure on input.
    if ((revents & (POLLOUT | POLLERR | POLLHUP)) && buf_len(&c->out) > 0) {
        n_flushes++;
        if (conn_flush(c, fd) == -1)
            return false;
    }
    if ((revents & (POLLIN | POLLERR | POLLHUP)) && (pfds[i].events & POLLIN)) {
        ssize_t got = conn_read(c, fd);
        if (got == -1 || conn_echo(c, fd, (size_t)got) == -1)
            return false;
    }
    // EOF and nothing left to send: a half-closed client has now had every
    // byte back, so we close our side too.
    if (c->input_closed && buf_len(&c->out) == 0) {
        log_msg("%s closed", c->peer);
        return false;
    }
    conn_watch(i);
    return true;
}

// ---------------------------------------------------------------- the loop

// Accepts up to ACCEPTS_PER_TURN waiting clients. The listening socket is
// non-blocking, so an empty backlog is EAGAIN, not a sleep.
static void accept_clients(int listen_fd)
{
    for (int k = 0; k < ACCEPTS_PER_TURN; k++) {
        char peer[PEER_LEN];
        // Non-blocking from the start (accept_client uses accept4 with
        // SOCK_NONBLOCK), so that no send() or recv() on it can ever put the
        // whole server to sleep.
        int fd = accept_client(listen_fd, peer, sizeof peer);
        if (fd == -1)
            return;
        if (conn_add(fd, peer) == -1) {
            if (close(fd) == -1)
                log_msg("fd %d: close: %s", fd, strerror(errno));
        }
    }
}

// One turn: wait up to TIMEOUT_MS (-1: as long as it takes), then serve
// whatever is ready. Returns false only if ppoll() itself failed (a bug).
static bool poll_once(int listen_fd, int timeout_ms)
{
    struct timespec timeout = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    // ppoll() is poll() plus a signal mask: for as long as it waits, and
    // only then, the process has wait_mask, in which SIGINT and SIGTERM are
    // unblocked. A stop signal sent while we were busy has waited, pending,
    // and is delivered the moment ppoll() starts: the handler sets
    // stop_requested and ppoll() returns EINTR. With the flag checked before
    // a plain poll(), a signal landing between the check and the call would
    // set the flag too late, and poll() would sleep until the next event: on
    // an idle server, forever.
    //
    // ppoll() reads pfds[0..used-1].fd/.events and writes .revents. The whole
    // array crosses into the kernel on every call: this is the O(n).
    n_polls++;
    int ready = ppoll(pfds, (nfds_t)used, timeout_ms < 0 ? NULL : &timeout, &wait_mask);
    if (ready == -1) {
        if (errno == EINTR)
            return true;  // the caller looks at stop_requested
        log_msg("poll: %s", strerror(errno));
        return false;
    }

    for (size_t i = 1; i < used;) {
        if (pfds[i].revents == 0 || conn_handle(i)) {
            i++;
            continue;
        }
        conn_close(i);
        // Not i++: conn_close() moved the last entry into slot i, and it has
        // not been served yet. Its revents came from this same poll() call,
        // so it is valid. Skipping it would leave that client's event
        // unserved until the next turn (or, for EOF, forever).
    }

    // New clients go at the end with revents = 0, after the scan above, so
    // it never reads a stale revents and each client is served once per turn.
    if (pfds[0].revents & POLLIN)
        accept_clients(listen_fd);
    return true;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  // cannot fail with a valid clock id
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// Stopping: may client I be closed now? Only once its echo is all sent and
// nothing more of its input is arriving. close() on a socket with unread
// input sends a reset (RST) instead of a FIN, and a reset also throws away
// what is still in our send buffer: the echo we just flushed would never
// arrive. So, with the output queue empty, read and echo what has arrived
// until a read finds nothing (a few reads at most: a client that keeps
// sending is looked at again next turn). Returns true when I may be closed:
// quiet, EOF, or failed (already logged).
static bool conn_quiet(size_t i)
{
    struct conn *c = &conns[i];
    int fd = pfds[i].fd;
    for (int k = 0; k < 16 && buf_len(&c->out) == 0; k++) {
        if (c->input_closed) {
            log_msg("%s closed", c->peer);
            return true;
        }
        ssize_t got = conn_read(c, fd);
        if (got == -1 || conn_echo(c, fd, (size_t)got) == -1)
            return true;
        if (got == 0 && !c->input_closed) {
            log_msg("%s closed (server stopping)", c->peer);
            return true;
        }
    }
    conn_watch(i);
    return false;
}

// After SIGINT/SIGTERM: accept no one, keep echoing what clients have
// already sent, close each client once it is quiet and its echo is out,
// and after DRAIN_MS close whatever is left.
static void drain_and_close_all(int listen_fd)
{
    // poll() ignores entries with a negative fd: the listening socket stays
    // in slot 0 but is no longer watched (main closes it).
    pfds[0].fd = -1;
    if (used > 1) {
        // How much echo is still ours to send: the drain test checks that
        // it was more than nothing, then that every byte of it arrived.
        size_t pending = 0;
        for (size_t i = 1; i < used; i++)
            pending += buf_len(&conns[i].out);
        log_msg("stopping: finishing %zu connection%s, %zu bytes pending, for up to %d ms",
                used - 1, used == 2 ? "" : "s", pending, DRAIN_MS);
    }

    // The same turns as before, with a deadline, plus a sweep after each:
    // a quiet client produces no event, so poll() alone would never tell us
    // it is done.
    long long deadline = now_ms() + DRAIN_MS;
    for (;;) {
        for (size_t i = 1; i < used;) {
            if (buf_len(&conns[i].out) == 0 && conn_quiet(i))
                conn_close(i);  // same rule as in poll_once: look at slot i again
            else
                i++;
        }
        long long left = deadline - now_ms();
        if (used == 1 || left <= 0 || !poll_once(listen_fd, (int)left))
            break;
    }
    while (used > 1) {
        size_t last = used - 1;
        if (buf_len(&conns[last].out) > 0)
            log_msg("fd %d: %zu bytes still unsent, closing", pfds[last].fd,
                    buf_len(&conns[last].out));
        else
            log_msg("fd %d: still sending at the deadline, closing", pfds[last].fd);
        conn_close(last);
    }
}

// ---------------------------------------------------------------- main

// The soft limit on open descriptors is usually 1024, and low on purpose:
// a program using select() breaks past fd 1023 (02_select). We use poll(),
// so we may raise it, without privileges, up to the hard limit the
// administrator set. Failing to is not fatal: we just serve fewer clients.
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        log_msg("getrlimit: %s", strerror(errno));
        return;
    }
    if (rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
        // Linux refuses RLIM_INFINITY here (the ceiling is fs.nr_open).
        log_msg("cannot raise the open-file limit from %llu: %s", (unsigned long long)old,
                strerror(errno));
        return;
    }
    log_msg("open-file limit raised from %llu to %llu", (unsigned long long)old,
            (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
    struct options opt;
    parse_options(argc, argv, "server", &opt);
    max_output = opt.max_output;

    // Handlers first, so that a SIGTERM sent as soon as we print
    // "listening on" already finds them in place. Then block SIGINT and
    // SIGTERM: from here on they are delivered only inside ppoll(), which
    // waits with wait_mask (poll_once says why). A signal that arrives
    // before the block just sets the flag, which the loop checks first.
    install_signal_handlers();
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &stop_signals, &wait_mask) == -1) {
        log_msg("sigprocmask: %s", strerror(errno));
        return 1;
    }
    // Unblocked inside ppoll() even if whoever started us had blocked them.
    sigdelset(&wait_mask, SIGINT);
    sigdelset(&wait_mask, SIGTERM);
    raise_fd_limit();

    int listen_fd = listen_on(opt.host, opt.port);
    if (listen_fd == -1)
        return 1;
    // Non-blocking for the same reason as in 02_select: "readable" is a
    // hint, and a client that left before accept() must not put us to sleep.
    if (set_nonblocking(listen_fd) == -1 || conn_add(listen_fd, "") == -1) {
        close(listen_fd);
        free(pfds);
        free(conns);
        return 1;
    }

    bool ok = true;
    // Checking the flag here, then waiting, is safe only because the stop
    // signals stay blocked in between (poll_once).
    while (ok && !stop_requested)
        ok = poll_once(listen_fd, -1);

    drain_and_close_all(listen_fd);
    // Closing the listening socket makes the kernel reset every connection
    // still waiting in the backlog: those clients see "connection reset".
    if (close(listen_fd) == -1) {
        log_msg("close: %s", strerror(errno));
        ok = false;
    }
    free(pfds);
    free(conns);
    log_msg("stopped after %llu ppoll, %llu recv calls; %llu short sends, %llu flushes, "
            "%llu pauses, %llu resumes; %llu buffer allocations, %llu reallocations, "
            "%llu bytes moved",
            n_polls, n_recvs, n_short_sends, n_flushes, n_pauses, n_resumes, buf_stats.allocs,
            buf_stats.resizes, buf_stats.moved);
    return ok ? 0 : 1;
}
