// server.c: one thread serves any number of clients with epoll, level- or edge-triggered (-m lt|et).
// The kernel keeps the list of sockets we watch and hands back only the ready ones: a turn costs O(ready).
//
// Read this file first, then buffer.h (the queues) and net.c (the plumbing).
//
// What changed since 03_poll, and why:
//  1. epoll instead of poll(): the interest list lives in the kernel. We add
//     a socket once (epoll_ctl ADD), change what we wait for only when that
//     changes (MOD, conn_watch), and epoll_wait() returns just the ready
//     sockets, each with its struct conn (data.ptr): no array to scan.
//  2. -m et: edge-triggered client sockets. epoll reports "new bytes
//     arrived" once, so we read until the kernel has nothing left (the
//     drain rule, conn_handle), or stop where something will bring us back.
//  3. Out of descriptors (EMFILE), a spare descriptor refuses one waiting
//     client at a time instead of spinning or sleeping (spare_fd).
//
// One turn of the loop, epoll_once():
//   1. epoll_pwait() sleeps until a watched socket is ready, a stop signal
//      arrives (SIGINT and SIGTERM are blocked everywhere else), or a
//      back-off ends (pause_accepting)
//   2. for each ready socket: the listening one -> accept_clients(); a
//      client -> conn_handle(): flush queued output, read and echo (LT: once;
//      ET: until the kernel is empty, at most --read-budget reads), close it
//      if it is finished, else conn_watch() tells epoll what it waits for,
//      if that changed
// On SIGINT/SIGTERM, drain_and_close_all() stops accepting and finishes
// the clients we have, for at most DRAIN_MS.
//
// Still not solved: one thread does the I/O and all the work, so a slow
// request stalls every client (05_threads_queue hands the work to a pool).

#include "buffer.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

// How much one recv() may read: the size of `scratch`, and the most one
// read can add to a client's output queue.
#define READ_CHUNK (64 * 1024)

// How many clients one turn may accept: a flood of new connections must not
// starve the ones we have. The rest of the backlog is reported next turn
// (the listening socket is level-triggered: main).
#define ACCEPTS_PER_TURN 64

// Out of descriptors and without a spare: how long the listening socket
// stays out of the epoll set (pause_accepting).
#define ACCEPT_BACKOFF_MS 100

// Ready sockets per epoll_wait(), at most; the others wait on the kernel's
// ready list for the next call. 128 events are 1.5 KiB of stack.
#define MAX_EVENTS 128

// After SIGINT/SIGTERM, how long pending echoes get to leave: the contract
// gives a server 2 s to exit, this keeps one as margin. And once only
// lingering clients are left (echo and FIN sent), how long a turn may pass
// with nothing happening before we close them anyway: a client that went
// quiet without closing need not hold the exit up for all of DRAIN_MS.
#define DRAIN_MS 1000
#define LINGER_QUIET_MS 100

// ---------------------------------------------------------------- connections

// Where a connection is in its life. READING and PAUSED alternate (back-
// pressure, conn_check_backpressure); the others only lead to the close.
// The last two are the server's stop: code tests them with >= CONN_STOPPING.
enum conn_state {
    CONN_READING,    // reading and echoing
    CONN_PAUSED,     // more than --max-output unsent: not reading until half has left
    CONN_CLOSING,    // EOF from the client: send what is queued, then close
    CONN_STOPPING,   // the server is stopping: send what is queued, read nothing
    CONN_LINGERING,  // stopping, queue sent, our FIN sent: discard input until EOF (conn_linger)
};

// One client: its own allocation, so that its address can live in the
// kernel as data.ptr. Idle, it owns nothing else: its output buffer holds
// NULL until bytes must wait in it (buffer.h, rule 1), and there is no input
// buffer (echo handles each byte as it is read: conn_read). 64 bytes.
struct conn {
    struct buffer out;         // echo the kernel has not taken yet
    struct conn *prev, *next;  // every open connection, for drain_and_close_all
    int fd;
    enum conn_state state;
    uint32_t events;  // what epoll watches for us right now (conn_watch)
    // Edge-triggered mode only, and independent of the state:
    bool unread;  // the kernel may hold bytes we have not read yet: set by
                  // an event, cleared when a read proves it empty (conn_read)
    bool rearm;   // we stopped reading before that proof (--read-budget), so
                  // the next conn_watch must MOD even if nothing changed
};

static int epfd = -1;        // the epoll instance
static bool edge;            // -m et
static size_t max_output;    // --max-output
static int read_budget;      // --read-budget
static struct conn *conns;   // every open connection (a doubly linked list)
static size_t nconns;

// Every recv() reads here, and echo sends from here. One is enough: one
// thread serves one client at a time, and what the kernel does not take is
// copied into that client's `out` before the next recv(). No allocation per read.
static char scratch[READ_CHUNK];

// The signal mask epoll_pwait() waits with (epoll_once): ours at start,
// with SIGINT and SIGTERM unblocked. Outside the wait they are blocked.
static sigset_t wait_mask;

// Counted for the "stopped after" line, so that a test can prove from the
// server which paths ran (test.bats reads them). Plain increments on the path.
static unsigned long long n_waits;        // epoll_pwait() calls
static unsigned long long n_recvs;        // recv() calls (conn_linger's included)
static unsigned long long n_mods;         // epoll_ctl(MOD) calls: they move no data
static unsigned long long n_short_sends;  // send() took less than offered (EAGAIN
                                          // included): the rest was queued
static unsigned long long n_flushes;      // conn_flush() calls on EPOLLOUT (or ERR/HUP)
static unsigned long long n_pauses;       // back-pressure: stopped reading a client
static unsigned long long n_resumes;      // ... and started again
static unsigned long long n_rearms;       // ET: MODs made because reading stopped
                                          // before the kernel was empty (c->rearm)

// Registers FD with epoll and links a new connection for it. Returns 0, or
// -1 after logging why (the caller still owns FD).
static int conn_add(int fd)
{
    struct conn *c = calloc(1, sizeof *c);  // zeroed: an empty buffer, CONN_READING
    if (c == NULL) {
        log_msg("fd %d: out of memory, closing", fd);
        return -1;
    }
    c->fd = fd;
    // EPOLLIN only: nothing to send yet. In ET mode, bytes the client sent
    // before we got here are not lost: ADD checks the socket at once and
    // reports them as the first edge. (EPOLLRDHUP: conn_read.)
    c->events = EPOLLIN | (edge ? EPOLLET | EPOLLRDHUP : 0);
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
        log_msg("fd %d: epoll_ctl(ADD): %s, closing", fd, strerror(errno));
        free(c);
        return -1;
    }
    c->next = conns;
    if (conns != NULL)
        conns->prev = c;
    conns = c;
    nconns++;
    return 0;
}

// Closes C's socket and frees everything C owns, C included.
static void conn_close(struct conn *c)
{
    // No EPOLL_CTL_DEL first. epoll registers the open socket, not the
    // number: closing its *last* descriptor takes it out of every epoll set.
    // While any other descriptor for it lives (a dup(), or a copy a child
    // inherited across fork(), and kept across exec() without close-on-exec)
    // the registration lives too, and epoll_wait would hand back C's address
    // after we freed it. Here every descriptor is opened close-on-exec, and
    // this server never dups and never forks, so ours is the last one; a
    // server that does either must DEL first (one system call per client).
    close_or_log(c->fd, "client");
    buf_free(&c->out);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    nconns--;
    free(c);
}

// Pauses reading from C once its queued echo passes --max-output, and
// resumes once half of it has drained. With one threshold, a slow reader
// would flip us between reading and not reading on every 64 KiB; the gap
// makes each pause count.
static void conn_check_backpressure(struct conn *c)
{
    size_t queued = buf_len(&c->out);
    if (c->state == CONN_READING && queued > max_output) {
        c->state = CONN_PAUSED;
        n_pauses++;
        log_msg("fd %d: %zu bytes unsent > --max-output %zu, not reading until it drains",
                c->fd, queued, max_output);
    } else if (c->state == CONN_PAUSED && queued <= max_output / 2) {
        c->state = CONN_READING;
        n_resumes++;
        log_msg("fd %d: output down to %zu bytes, reading again", c->fd, queued);
    }
}

// Registers WANT for C with epoll_ctl(MOD). Returns 0, or -1 after logging
// why C must be dropped.
static int conn_modify(struct conn *c, uint32_t want)
{
    // A MOD re-checks the socket at once and queues an event if it is ready:
    // what changed since our last EAGAIN is reported, even in ET mode. That
    // is what `rearm` relies on: bytes we left unread are reported again,
    // behind the sockets already waiting their turn.
    if (c->rearm)
        n_rearms++;
    c->rearm = false;
    n_mods++;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) == -1) {
        log_msg("fd %d: epoll_ctl(MOD): %s, dropping", c->fd, strerror(errno));
        return -1;
    }
    c->events = want;
    return 0;
}

// Tells epoll what C waits for next, from C's state alone, if that differs
// from what it is registered for. Returns 0, or -1 after logging why C must
// be dropped.
static int conn_watch(struct conn *c)
{
    // LAB BEGIN conn_watch: choose the events C waits for (EPOLLIN while it may read, EPOLLOUT only while output is queued, EPOLLET|EPOLLRDHUP in -m et) and call conn_modify only when they differ from c->events or c->rearm is set
    // LAB STUB: // not written: C keeps the events it was added with (EPOLLIN), so queued
    // LAB STUB: // output never gets its EPOLLOUT; only a re-arm is passed on
    // LAB STUB: return c->rearm ? conn_modify(c, c->events) : 0;
    uint32_t want = 0;
    if (c->state >= CONN_STOPPING) {
        // The queued output, then what the client still sends (conn_linger).
        want = buf_len(&c->out) > 0 ? EPOLLOUT : EPOLLIN;
    } else {
        // Level-triggered, unread bytes are reported on every turn: paused,
        // we must stop asking, or epoll_wait() returns at once, forever (a
        // busy loop). Edge-triggered, they are reported once per arrival, so
        // not reading is enough, and saves two MODs per pause.
        if (c->state == CONN_READING || (edge && c->state == CONN_PAUSED))
            want |= EPOLLIN;
        // EPOLLOUT only while something is queued: a socket is writable
        // nearly all the time, and (LT) would wake us every turn for nothing.
        if (buf_len(&c->out) > 0)
            want |= EPOLLOUT;
    }
    if (edge)
        want |= EPOLLET | EPOLLRDHUP;
    if (want == c->events && !c->rearm)
        return 0;  // the common case: nothing to tell the kernel
    return conn_modify(c, want);
    // LAB END
}

// One send() of N bytes at P to C, which is non-blocking: the kernel takes
// what fits in its send buffer and returns at once. Returns how many bytes
// it took (0: the buffer is full, EAGAIN), or -1 after logging why C must be
// dropped. A short send means the buffer is full now: trying again before
// EPOLLOUT would only earn an EAGAIN. Edge-triggered too: EPOLLOUT reports
// the end of exactly that condition, so one short send is as good as EAGAIN.
static ssize_t send_some(struct conn *c, const char *p, size_t n)
{
    ssize_t sent;
    do
        sent = send(c->fd, p, n, 0);
    while (sent == -1 && errno == EINTR);
    if (sent == -1) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            log_msg("fd %d: send: %s, dropping", c->fd, strerror(errno));
            return -1;
        }
        sent = 0;
    }
    if ((size_t)sent < n)
        n_short_sends++;
    return sent;
}

// Sends N bytes at P to client C: straight away if nothing is queued ahead
// of them (the usual case: no copy, no allocation), and queues whatever the
// kernel did not take. Returns 0, or -1 after logging why C must be dropped.
static int conn_write(struct conn *c, const char *p, size_t n)
{
    // With bytes already queued, these wait behind them (and the kernel
    // said "full" last time).
    if (buf_len(&c->out) == 0) {
        ssize_t sent = send_some(c, p, n);
        if (sent == -1)
            return -1;
        p += sent;
        n -= (size_t)sent;
    }
    if (n > 0 && buf_append(&c->out, p, n) == -1) {
        log_msg("fd %d: out of memory for %zu bytes of output, dropping", c->fd, n);
        return -1;
    }
    return 0;
}

// Sends what client C has queued, as much as the kernel takes. Returns 0,
// or -1 after logging why C must be dropped.
static int conn_flush(struct conn *c)
{
    // One send_some offers the whole queue (one contiguous run of bytes); a
    // short send means the kernel is full, and EPOLLOUT calls us back.
    ssize_t sent = send_some(c, buf_peek(&c->out), buf_len(&c->out));
    if (sent == -1)
        return -1;
    // Frees the buffer once it empties, or shrinks it (buffer.h).
    buf_consume(&c->out, (size_t)sent);
    return 0;
}

// Reads once from client C into `scratch`, up to READ_CHUNK, and echoes
// what came. At EOF, C goes to CONN_CLOSING. Clears `unread` (ET) once the
// read proves the kernel had nothing more: EAGAIN, EOF, or a short read
// while the client's FIN has not arrived (FIN_SEEN: the event said
// EPOLLRDHUP). Returns 0, or -1 after logging why C must be dropped.
static int conn_read(struct conn *c, bool fin_seen)
{
    ssize_t n;
    do {
        n_recvs++;
        n = recv(c->fd, scratch, sizeof scratch, 0);
    } while (n == -1 && errno == EINTR);
    if (n == -1) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            log_msg("fd %d: recv: %s, dropping", c->fd, strerror(errno));
            return -1;
        }
        c->unread = false;  // EAGAIN: the receive queue is empty
        return 0;
    }
    if (n == 0) {
        c->state = CONN_CLOSING;  // EOF: the echo still queued will follow
        c->unread = false;
        if (buf_len(&c->out) > 0)
            log_msg("fd %d: EOF with %zu bytes of echo still to send", c->fd, buf_len(&c->out));
        return 0;
    }
    // A short read on a TCP socket: recv() copies all that is queued, up to
    // what we asked, so the queue was empty, and what arrives later is a new
    // edge. That saves the recv() that would only say EAGAIN (one per small
    // message). Not once the FIN is in: no edge will follow it, so we read
    // on to EOF. (Not for every kind of descriptor: README.md, section 4.)
    if ((size_t)n < sizeof scratch && !fin_seen)
        c->unread = false;
    // The application: echo. A protocol would handle the whole messages here
    // and keep a partial one in a per-connection input buffer (06_codecs).
    if (conn_write(c, scratch, (size_t)n) == -1)
        return -1;
    conn_check_backpressure(c);
    return 0;
}

// The server is stopping and client C has had all its echo: may we close?
// Not while its bytes still arrive: close() with unread input sends a reset
// instead of a FIN, and the reset throws away the echo still in our send
// buffer, the very bytes the drain was for. So: send our FIN (the client
// reads its echo, then EOF), then read and discard what it still sends,
// until EAGAIN or for --read-budget reads (then re-armed, as in
// conn_handle). Returns true to keep waiting, false when closing is safe:
// EOF, an error, or nothing unread (a quiet client is closed at once; one
// that goes quiet later, after LINGER_QUIET_MS: drain_and_close_all).
static bool conn_linger(struct conn *c)
{
    if (c->state != CONN_LINGERING) {
        c->state = CONN_LINGERING;
        if (shutdown(c->fd, SHUT_WR) == -1)
            return false;  // the connection is gone already
    }
    bool got_some = false;
    for (int k = 0; k < read_budget; k++) {
        n_recvs++;
        ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
        if (n > 0)
            got_some = true;
        else if (n == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
            return false;  // EOF, or the connection failed
        else if (errno != EINTR)
            return got_some;  // EAGAIN: still sending? epoll brings us back
    }
    c->rearm = edge;
    return true;
}

// Serves client C after epoll reported REVENTS for it. Returns false when
// the client is finished (EOF and all echoed) or failed: the caller closes it.
static bool conn_handle(struct conn *c, uint32_t revents)
{
    // EPOLLERR and EPOLLHUP come unasked. As in 03, we do the I/O we would
    // do anyway, and the failing send() or recv() says what went wrong.
    bool readable = (revents & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) != 0;
    bool fin_seen = (revents & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) != 0;
    if (edge && readable)
        c->unread = true;

    // Output first: it frees room, and may lift the back-pressure on input.
    if ((revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && buf_len(&c->out) > 0) {
        n_flushes++;
        if (conn_flush(c) == -1)
            return false;
    }
    if (c->state >= CONN_STOPPING) {
        if (buf_len(&c->out) == 0 && !conn_linger(c)) {
            log_msg("fd %d closed (server stopping)", c->fd);
            return false;
        }
        return conn_watch(c) == 0;
    }
    conn_check_backpressure(c);

    // The drain rule, for -m et. An edge means "new bytes arrived", once:
    // stop before the kernel is empty and the rest stays there with no
    // further event. Two early stops are safe, because something brings us
    // back: back-pressure (`unread` stays set; the flush that lifts the pause,
    // on EPOLLOUT, reads on), and the budget: a client sending as fast as we
    // read never lets the kernel empty and would keep the loop to itself
    // (README.md, section 5), so after --read-budget reads we set `rearm` and
    // conn_watch's MOD has epoll report the socket again.
    if (edge) {
        // LAB BEGIN et_drain: call conn_read while c->unread and C is CONN_READING (until EAGAIN, EOF or a back-pressure pause); after read_budget reads stop and set c->rearm
        // LAB STUB: // not written: one read per event, then a re-arm (an epoll_ctl) every time
        // LAB STUB: if (readable && c->state == CONN_READING) {
        // LAB STUB:     if (conn_read(c, fin_seen) == -1)
        // LAB STUB:         return false;
        // LAB STUB:     c->rearm = true;
        // LAB STUB: }
        for (int budget = read_budget; c->unread && c->state == CONN_READING; budget--) {
            if (budget == 0) {
                c->rearm = true;
                break;
            }
            if (conn_read(c, fin_seen) == -1)
                return false;
        }
        // LAB END
    } else if (readable && c->state == CONN_READING) {
        // Once per turn: level-triggered, what we leave is reported again next
        // turn, and meanwhile the other clients get theirs. (EOF is
        // "readable" too, forever: after it conn_watch drops EPOLLIN.)
        if (conn_read(c, fin_seen) == -1)
            return false;
    }

    // EOF and nothing left to send: a half-closed client has had every byte.
    if (c->state == CONN_CLOSING && buf_len(&c->out) == 0) {
        log_msg("fd %d closed", c->fd);
        return false;
    }
    return conn_watch(c) == 0;
}

// ---------------------------------------------------------------- out of descriptors

// Out of descriptors, accept() fails with EMFILE (this process is at its
// limit) or ENFILE (the system is), and the client stays in the backlog. The
// listening socket stays readable: level-triggered, epoll reports it on
// every turn and every accept() fails again, 100% CPU doing nothing (edge-
// triggered, the backlog would not be looked at again until yet another
// client connects). Either way the waiting clients hang. The answer is this
// descriptor, open on /dev/null for one purpose (refuse_one_client): close
// it, which frees exactly one descriptor; accept the waiting client into it
// and close that at once; reopen the spare, which gets the same number back
// (nothing can take it in between: one thread). The client sees EOF, a
// clear "no" it can act on (or a reset, if it had already sent bytes:
// closing a socket with unread input resets it).
//
// If the spare is missing (it could not be reopened: another process took
// the number, ENFILE), we back off instead: the listening socket leaves the
// epoll set for ACCEPT_BACKOFF_MS, through epoll_wait's timeout, not a
// sleep (pause_accepting). Worse for the waiting clients, who hang in the
// backlog unanswered (README.md, section 4), so only the fallback.
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

// Out of descriptors, with the spare open: refuses one waiting client
// (spare_fd). Returns 0, or -1 with accept's errno (EAGAIN: nobody waits).
static int refuse_one_client(int listen_fd)
{
    // LAB BEGIN refuse_one_client: close the spare (close_or_log), accept the waiting client and close it at once, reopen the spare with open_spare; return -1 with accept's errno if accept failed
    // LAB STUB: (void)listen_fd;
    // LAB STUB: (void)open_spare;
    // LAB STUB: errno = ENOSYS;  // not written: nobody is refused
    // LAB STUB: return -1;
    close_or_log(spare_fd, "spare descriptor");
    spare_fd = -1;
    int fd = accept(listen_fd, NULL, NULL);  // closed at once: no flags to ask for
    int accept_err = errno;
    if (fd != -1)
        close_or_log(fd, "refused client");
    (void)open_spare();  // if it fails, the next EMFILE backs off, and says so
    errno = accept_err;
    return fd == -1 ? -1 : 0;
    // LAB END
}

// Out of descriptors with no spare (ERR is accept's errno): the listening
// socket leaves the epoll set until resume_accepting puts it back.
static void pause_accepting(int listen_fd, int err)
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

// How long epoll_wait may sleep: -1 (as long as it takes), or until a
// paused accept resumes.
static int accept_timeout_ms(void)
{
    if (accept_resume_at == -1)
        return -1;
    long long left = accept_resume_at - now_ms();
    return left > 0 ? (int)left : 0;
}

// Once a pause is over: reopen the spare if a descriptor is free now, and
// watch the listening socket again.
static void resume_accepting(int listen_fd)
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

// Accepts up to ACCEPTS_PER_TURN waiting clients. The listening socket is
// non-blocking, so an empty backlog is EAGAIN, not a sleep.
static void accept_clients(int listen_fd)
{
    for (int k = 0; k < ACCEPTS_PER_TURN; k++) {
        int fd = accept_client(listen_fd);  // non-blocking, close-on-exec, TCP_NODELAY
        if (fd != -1) {
            if (conn_add(fd) == -1)
                close_or_log(fd, "client");
            continue;
        }
        int err = errno;
        if (err != EMFILE && err != ENFILE)
            return;  // EAGAIN (nobody left), EINTR, or logged already
        if (open_spare() == -1) {  // a client may have left since the last try
            pause_accepting(listen_fd, err);
            return;
        }
        if (refuse_one_client(listen_fd) == -1) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_msg("accept: %s", strerror(errno));
            if (spare_fd == -1)
                pause_accepting(listen_fd, err);
            return;
        }
        log_msg("accept: %s; dropped one pending connection", strerror(err));
    }
}

// ---------------------------------------------------------------- the loop

// One turn: wait up to TIMEOUT_MS (-1: as long as it takes), then serve
// whatever is ready. Returns how many events it served (0 after a signal
// or the timeout), or -1 only if epoll_pwait() itself failed (a bug).
static int epoll_once(int listen_fd, int timeout_ms)
{
    struct epoll_event events[MAX_EVENTS];
    // Only the ready sockets come back, however many are watched: the
    // O(ready) that 03's poll() could not give. epoll_pwait() is epoll_wait()
    // plus a signal mask: while it waits, and only then, SIGINT and SIGTERM
    // are unblocked (wait_mask). A stop signal sent while we were busy waited,
    // pending, and is delivered as the wait starts: the handler sets
    // stop_requested, and epoll_pwait() returns EINTR. With the flag checked
    // before a plain epoll_wait(), a signal landing between the check and the
    // call would set it too late: an idle server would sleep on, forever.
    n_waits++;
    int ready = epoll_pwait(epfd, events, MAX_EVENTS, timeout_ms, &wait_mask);
    if (ready == -1) {
        if (errno == EINTR)
            return 0;  // the caller looks at stop_requested
        log_msg("epoll_wait: %s", strerror(errno));
        return -1;
    }

    for (int i = 0; i < ready; i++) {
        struct conn *c = events[i].data.ptr;
        if (c == NULL) {  // the listening socket's tag (main)
            accept_clients(listen_fd);
            continue;
        }
        // Freeing C here is safe with events[i+1..] still to serve: a batch
        // reports a socket once, and serving one client never closes
        // another. (Where it can, a chat, the free must wait for the end of
        // the batch: README.md, Exercises.)
        if (!conn_handle(c, events[i].events))
            conn_close(c);
    }
    return ready;
}

// Stopping: has every client left had its echo and our FIN?
static bool all_lingering(void)
{
    for (struct conn *c = conns; c != NULL; c = c->next)
        if (c->state != CONN_LINGERING)
            return false;
    return true;
}

// After SIGINT/SIGTERM: accept no one, echo nothing new, give the queued
// echoes up to DRAIN_MS to leave, then close whatever is left.
static void drain_and_close_all(int listen_fd)
{
    // No new clients from here on (if accepting is paused, the listening
    // socket is out of the set already).
    if (accept_resume_at == -1 && epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == -1)
        log_msg("epoll_ctl(DEL) listening socket: %s", strerror(errno));

    // How much echo is still ours to send: the drain test checks that it
    // was more than nothing, then that every byte of it arrived.
    size_t pending = 0;
    for (struct conn *c = conns; c != NULL; c = c->next)
        pending += buf_len(&c->out);
    log_msg("stopping: finishing %zu connection%s, %zu bytes pending, for up to %d ms", nconns,
            nconns == 1 ? "" : "s", pending, DRAIN_MS);

    for (struct conn *c = conns, *next; c != NULL; c = next) {
        next = c->next;  // conn_close(c) frees c; c->next must be read first
        if (c->state == CONN_CLOSING)
            continue;  // EOF seen: it closes itself once its echo is out
        c->state = CONN_STOPPING;
        if (buf_len(&c->out) == 0 && !conn_linger(c)) {
            log_msg("fd %d closed (server stopping)", c->fd);
            conn_close(c);
        } else if (conn_watch(c) == -1) {
            conn_close(c);
        }
    }

    // The same turns as before, with a deadline; conn_handle() closes each
    // connection once its queue is empty and conn_linger() agrees. A quiet
    // turn with only lingering clients left: they went quiet without
    // closing, and waiting for the deadline would change nothing.
    long long deadline = now_ms() + DRAIN_MS;
    while (nconns > 0) {
        long long left = deadline - now_ms();
        if (left <= 0)
            break;
        int ready = epoll_once(listen_fd, left < LINGER_QUIET_MS ? (int)left : LINGER_QUIET_MS);
        if (ready == -1 || (ready == 0 && all_lingering()))
            break;
    }
    while (conns != NULL) {
        if (buf_len(&conns->out) > 0)
            log_msg("fd %d: %zu bytes still unsent, closing", conns->fd, buf_len(&conns->out));
        else
            log_msg("fd %d: echo sent but no EOF from the client, closing", conns->fd);
        conn_close(conns);
    }
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    struct options opt;
    parse_options(argc, argv, "server", &opt);
    max_output = opt.max_output;
    edge = opt.edge_triggered;
    read_budget = opt.read_budget;

    // Handlers first, so that a SIGTERM sent as soon as we print "listening
    // on" finds them. Then SIGINT and SIGTERM are delivered only inside
    // epoll_pwait() (epoll_once says why); one that arrives before the block
    // just sets the flag, which the loop checks first.
    install_signal_handlers();
    if (block_stop_signals(&wait_mask) == -1)
        return 1;
    raise_fd_limit();  // we use epoll, not select: fds past 1023 are fine

    // EPOLL_CLOEXEC: a program we might exec must not inherit it.
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd == -1) {
        log_msg("epoll_create1: %s", strerror(errno));
        return 1;
    }
    int listen_fd = listen_on(opt.host, opt.port);
    if (listen_fd == -1) {
        close(epfd);
        return 1;
    }
    // The listening socket is level-triggered even with -m et, on purpose:
    // accept_clients stops early (ACCEPTS_PER_TURN, out of descriptors), and
    // level-triggered epoll reports the rest of the backlog next turn; with
    // EPOLLET, every early stop would strand the waiting clients until yet
    // another one connected. data.ptr == NULL tags it: no conn has that address.
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    bool ok = set_nonblocking(listen_fd) == 0;
    if (ok && epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) == -1) {
        log_msg("epoll_ctl(ADD) listening socket: %s", strerror(errno));
        ok = false;
    }
    if (!ok) {
        close(listen_fd);
        close(epfd);
        return 1;
    }
    if (open_spare() == -1)
        log_msg("open /dev/null (spare descriptor): %s", strerror(errno));
    log_msg("%s-triggered epoll, --max-output %zu, --read-budget %d", edge ? "edge" : "level",
            max_output, read_budget);

    // Checking the flag here, then waiting, is safe only because the stop
    // signals stay blocked in between (epoll_once).
    while (ok && !stop_requested) {
        ok = epoll_once(listen_fd, accept_timeout_ms()) >= 0;
        resume_accepting(listen_fd);
    }

    drain_and_close_all(listen_fd);
    // Closing the listening socket resets the connections still in its backlog.
    if (close(listen_fd) == -1) {
        log_msg("close: %s", strerror(errno));
        ok = false;
    }
    if (spare_fd != -1)
        close_or_log(spare_fd, "spare descriptor");
    close_or_log(epfd, "epoll");
    log_msg("stopped after %llu epoll_wait, %llu recv, %llu epoll_ctl(MOD) calls; "
            "%llu short sends, %llu flushes, %llu pauses, %llu resumes, %llu re-arms; "
            "%llu buffer allocations, %llu reallocations, %llu bytes moved",
            n_waits, n_recvs, n_mods, n_short_sends, n_flushes, n_pauses, n_resumes, n_rearms,
            buf_stats.allocs, buf_stats.resizes, buf_stats.moved);
    return ok ? 0 : 1;
}
