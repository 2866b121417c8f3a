// server.c: one thread serves any number of clients with epoll, level- or edge-triggered (-m lt|et).
// The kernel keeps the list of sockets we watch and hands back only the ready ones: a turn costs O(ready).
//
// Read this file first, then buffer.h (the queues) and net.c (the plumbing).
//
// What changed since 03_poll, and why:
//  1. epoll instead of poll(). The interest list lives in the kernel: we
//     add a socket once (epoll_ctl ADD), change what we wait for only when
//     it changes (MOD), and epoll_wait() returns just the ready sockets. An
//     idle connection costs nothing per turn; 03 paid for it on every poll().
//  2. Each connection is its own allocation, and epoll hands its address
//     back with every event (epoll_event.data.ptr): no array to scan, no
//     lookup from descriptor to connection.
//  3. The interest we registered is remembered (conn.events) and epoll_ctl
//     is called only when it must change. Each call is a system call; a
//     loop that re-registers on every message pays one more per message.
//  4. -m et: edge-triggered client sockets. epoll then reports "something
//     new arrived" once, not "there is something to read" on every turn,
//     so we must read until EAGAIN (the drain rule, conn_handle), or stop
//     early only where something is sure to bring us back.
//  5. Out of descriptors (EMFILE), a spare descriptor lets us refuse one
//     waiting client at a time instead of spinning or sleeping (03 slept
//     100 ms, stalling every client): accept_clients. Only if the spare
//     itself is missing do we back off, without stalling anyone:
//     pause_accepting.
//  6. struct conn is smaller: no copy of the peer's address (log lines name
//     the descriptor), so an idle connection costs 112 bytes of heap.
//
// One turn of the loop, epoll_once():
//   1. epoll_wait() sleeps until a watched socket is ready (or a signal
//      arrives, or a back-off ends: pause_accepting) and returns up to
//      MAX_EVENTS ready ones, nothing else
//   2. for each: the listening socket -> accept_clients(); a client ->
//      conn_handle(): flush queued output, read and echo (LT: once;
//      ET: until EAGAIN, at most 1 MiB), close it if it is finished,
//      otherwise tell epoll what it waits for next, if that changed
//   3. back to 1
//
// What is still not solved: one thread does the I/O and all the work, so
// a client whose request takes long to handle stalls every other one
// (05_threads_queue hands the work to a pool).

#include "buffer.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// How much one recv() may read. Bigger means fewer calls per megabyte; it
// is also the most one client can add to its output buffer per read.
#define READ_CHUNK (64 * 1024)

// How many recv() calls one edge-triggered client may make per turn: 16 x
// READ_CHUNK = 1 MiB. Draining to EAGAIN is the rule, but a client that
// sends as fast as we read never lets recv() say EAGAIN, and would keep
// the loop to itself: another client's 64-byte echo waited over a second
// (README.md, section 5). Past this budget we stop and re-arm instead.
#define READS_PER_TURN 16

// How many clients one turn may accept. A flood of new connections must
// not keep the loop from serving the ones it already has. The listening
// socket is level-triggered in both modes, so epoll reports the rest of
// the backlog again on the next turn (see main).
#define ACCEPTS_PER_TURN 64

// Out of descriptors with no spare descriptor to refuse a client with, how
// long the listening socket stays out of the epoll set (pause_accepting).
#define ACCEPT_BACKOFF_MS 100

// How many ready sockets one epoll_wait() returns at most. Not a limit on
// clients: the others stay on the kernel's ready list for the next call.
// Bigger means fewer epoll_wait() calls under load; 128 events are 1.5 KiB
// of stack.
#define MAX_EVENTS 128

// After SIGINT/SIGTERM, how long pending echoes get to leave. The contract
// gives a server 2 s to exit; this leaves the other second as margin.
#define DRAIN_MS 1000

// ---------------------------------------------------------------- connections

// One client. Idle, it owns nothing but this struct: both buffers hold
// NULL until bytes have to wait in them (buffer.h, rule 1).
struct conn {
    struct buffer in;          // read from the client, not handled yet
    struct buffer out;         // echo the kernel has not taken yet
    struct conn *prev, *next;  // every open connection, for drain_and_close_all
    int fd;
    uint32_t events;    // what epoll watches for us right now (conn_watch)
    bool input_closed;  // EOF seen: read no more, close once `out` is empty
    bool paused;        // more than --max-output unsent: not reading for now
    bool unread;        // ET only: the kernel may hold bytes we have not read
                        // yet; set by an event, cleared only by EAGAIN or EOF
    bool rearm;         // ET only: stopped before EAGAIN (READS_PER_TURN), so
                        // the next conn_watch must MOD even if nothing changed
    bool stopping;      // the server is stopping: flush `out`, echo nothing
                        // new (see drain_and_close_all)
    bool fin_sent;      // stopping, and shutdown(SHUT_WR) is done
};

static int epfd = -1;           // the epoll instance
static bool edge;               // -m et
static size_t max_output;       // --max-output
static struct conn *conns;      // every open connection (a doubly linked list)
static size_t nconns;

// Counted for the "stopped" line: how many epoll_wait() and recv() calls the
// loop made, and how many epoll_ctl(MOD), which move no data at all
// (README.md, section 5, compares them with the messages moved).
static unsigned long long n_waits, n_recvs, n_mods;

// Registers FD with epoll and links a new connection for it. Returns 0, or
// -1 after logging why (the caller still owns FD).
static int conn_add(int fd)
{
    struct conn *c = calloc(1, sizeof *c);  // zeroed: two empty buffers
    if (c == NULL) {
        log_msg("fd %d: out of memory, closing", fd);
        return -1;
    }
    c->fd = fd;
    // EPOLLIN only: there is nothing to send yet. In ET mode a client that
    // sent before we got here is not lost: ADD checks the socket at once
    // and reports what is already waiting, as the first edge.
    c->events = EPOLLIN | (edge ? EPOLLET : 0);
    // data.ptr comes back with every event for this socket: that is how
    // epoll_once finds the connection without searching for it.
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
    // No EPOLL_CTL_DEL first: closing the last descriptor of a socket takes
    // it out of every epoll set by itself. (Last: a dup() of it would keep
    // it registered. We never dup, so this saves a system call per client.)
    if (close(c->fd) == -1)
        log_msg("fd %d: close: %s", c->fd, strerror(errno));
    buf_free(&c->in);
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
    if (c->input_closed)
        return;
    size_t queued = buf_len(&c->out);
    if (!c->paused && queued > max_output) {
        c->paused = true;
        log_msg("fd %d: %zu bytes unsent > --max-output %zu, not reading until it drains",
                c->fd, queued, max_output);
    } else if (c->paused && queued <= max_output / 2) {
        c->paused = false;
        log_msg("fd %d: output down to %zu bytes, reading again", c->fd, queued);
    }
}

// Tells epoll what C waits for next, from C's state alone, if that differs
// from what it is registered for. Returns 0, or -1 after logging why C must
// be dropped.
static int conn_watch(struct conn *c)
{
    // LAB BEGIN conn_watch: choose the events C waits for (EPOLLIN while it may read, EPOLLOUT only while output is queued, EPOLLET in -m et) and call epoll_ctl(MOD) only when they differ from c->events
    uint32_t want = 0;
    if (c->stopping) {
        // First the queued output, then whatever the client still sends,
        // read only to be thrown away (conn_linger).
        want = buf_len(&c->out) > 0 ? EPOLLOUT : EPOLLIN;
    } else {
        // Level-triggered, a socket with unread bytes is reported on every
        // turn: while paused we must stop asking, or epoll_wait() returns at
        // once, forever (a busy loop). Edge-triggered, it is reported once
        // per arrival, so not reading is enough, and it saves two MODs per
        // pause (the kernel stops the client anyway once its buffer is full).
        if (!c->input_closed && (edge || !c->paused))
            want |= EPOLLIN;
        // EPOLLOUT only while something is queued: a socket with room in its
        // send buffer is writable nearly all the time, and (level-triggered)
        // would wake us on every turn with nothing to send.
        if (buf_len(&c->out) > 0)
            want |= EPOLLOUT;
    }
    if (edge)
        want |= EPOLLET;
    if (want == c->events && !c->rearm)
        return 0;  // the common case: nothing to tell the kernel

    // A MOD also re-checks the socket at once, and queues an event if it is
    // ready: a change that happened between our EAGAIN and this call (room
    // freed, bytes arrived) is reported, not missed, even in ET mode. That is
    // also what `rearm` relies on: bytes we left unread are reported again,
    // after the sockets that were already waiting their turn.
    c->rearm = false;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    n_mods++;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) == -1) {
        log_msg("fd %d: epoll_ctl(MOD): %s, dropping", c->fd, strerror(errno));
        return -1;
    }
    c->events = want;
    return 0;
    // LAB END
}

// Sends N bytes at P to client C: straight away if nothing is queued ahead
// of them (the usual case: no copy, no allocation), and queues whatever the
// kernel did not take. Returns 0, or -1 after logging why C must be dropped.
static int conn_write(struct conn *c, const char *p, size_t n)
{
    // With bytes already queued, these must wait their turn behind them;
    // and the kernel said "full" last time, so trying again now is pointless.
    // Otherwise: until done or EAGAIN, which is also what ET mode needs.
    while (n > 0 && buf_len(&c->out) == 0) {
        ssize_t sent = send(c->fd, p, n, 0);
        if (sent == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;  // the kernel's send buffer is full: queue the rest
            log_msg("fd %d: send: %s, dropping", c->fd, strerror(errno));
            return -1;
        }
        p += sent;
        n -= (size_t)sent;
    }
    if (n > 0 && buf_append(&c->out, p, n) == -1) {
        log_msg("fd %d: out of memory for %zu bytes of output, dropping", c->fd, n);
        return -1;
    }
    return 0;
}

// Sends what client C has queued, until the queue is empty or the kernel is
// full. Returns 0, or -1 after logging why C must be dropped.
static int conn_flush(struct conn *c)
{
    // LAB BEGIN conn_flush: send the queued output until it is empty or send() says EAGAIN; consume what was sent; drop the client on any other error
    while (buf_len(&c->out) > 0) {
        ssize_t sent = send(c->fd, buf_peek(&c->out), buf_len(&c->out), 0);
        if (sent == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;  // full again: EPOLLOUT will call us back
            log_msg("fd %d: send: %s, dropping", c->fd, strerror(errno));
            return -1;
        }
        // Frees the buffer once it empties, or shrinks it (buffer.h).
        buf_consume(&c->out, (size_t)sent);
    }
    return 0;
    // LAB END
}

// Reads once from client C into its input buffer: whatever has arrived, up
// to READ_CHUNK. Sets input_closed at EOF, and clears `unread` when the
// kernel has nothing more (EAGAIN, EOF). Returns 0, or -1 after logging
// why C must be dropped.
static int conn_read(struct conn *c)
{
    size_t room;
    char *dst = buf_reserve(&c->in, READ_CHUNK, &room);
    if (dst == NULL) {
        log_msg("fd %d: out of memory for input, dropping", c->fd);
        return -1;
    }
    if (room > READ_CHUNK)
        room = READ_CHUNK;
    ssize_t n;
    do {
        n_recvs++;
        n = recv(c->fd, dst, room, 0);
    } while (n == -1 && errno == EINTR);
    if (n > 0)
        buf_commit(&c->in, (size_t)n);
    else if (buf_len(&c->in) == 0)
        buf_free(&c->in);  // nothing came: do not keep an empty allocation
    if (n == 0) {
        c->input_closed = true;  // EOF: the echo still queued will follow
        c->unread = false;
        return 0;
    }
    if (n == -1) {
        // EAGAIN: the kernel's receive buffer is empty. For ET mode this is
        // the only proof that we have seen everything the last edge announced.
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->unread = false;
            return 0;
        }
        log_msg("fd %d: recv: %s, dropping", c->fd, strerror(errno));
        return -1;
    }
    return 0;
}

// The application: echo everything that arrived. A protocol would consume
// only whole messages here and leave a partial one in c->in for next time.
static int conn_echo(struct conn *c)
{
    size_t n = buf_len(&c->in);
    if (n == 0)
        return 0;
    int rc = conn_write(c, buf_peek(&c->in), n);
    buf_consume(&c->in, n);  // empties it, so it frees it (buffer.h rule 3)
    return rc;
}

// The server is stopping and client C has had all its echo: may we close?
// Not while its bytes are still arriving. close() on a socket with unread
// input sends a reset (RST) instead of a FIN, and a reset makes the kernel
// throw away the echo still queued in our send buffer: the client would
// lose the very bytes the drain was for. So: send our FIN first (the client
// reads its echo, then EOF), and read and discard what it still sends,
// until EAGAIN (in ET mode nothing would remind us of what we left) or for
// READS_PER_TURN reads at most (then re-armed, as in conn_handle): a client
// that never stops sending must not keep us here past the drain deadline.
// Returns true to keep waiting, false when closing is safe now: EOF, an
// error, or nothing unread at this moment (a quiet client is closed at once).
static bool conn_linger(struct conn *c)
{
    if (!c->fin_sent) {
        c->fin_sent = true;
        if (shutdown(c->fd, SHUT_WR) == -1)
            return false;  // the connection is gone already
    }
    char scrap[4096];
    bool got_some = false;
    for (int k = 0; k < READS_PER_TURN; k++) {
        n_recvs++;
        ssize_t n = recv(c->fd, scrap, sizeof scrap, 0);
        if (n > 0) {
            got_some = true;
            continue;
        }
        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return got_some;  // still sending: epoll brings us back for more
        return false;         // EOF, or the connection failed
    }
    c->rearm = edge;
    return true;
}

// Serves client C after epoll reported REVENTS for it. Returns false when
// the client is finished (EOF and all echoed) or failed: the caller closes it.
static bool conn_handle(struct conn *c, uint32_t revents)
{
    // epoll reports EPOLLERR and EPOLLHUP even unasked. As in 03 they are
    // handled by doing the I/O we were going to do anyway: the failing
    // send() or recv() then says exactly what went wrong, and the client is
    // dropped. (Ignoring them would be a busy loop: they are reported on
    // every turn until the socket is closed.)
    bool readable = (revents & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0;
    if (edge && readable)
        c->unread = true;

    // Output first: it frees room, and may lift the back-pressure on input.
    if ((revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && buf_len(&c->out) > 0) {
        if (conn_flush(c) == -1)
            return false;
    }
    if (c->stopping) {
        if (buf_len(&c->out) == 0 && !conn_linger(c)) {
            log_msg("fd %d closed (server stopping)", c->fd);
            return false;
        }
        return conn_watch(c) == 0;
    }
    conn_check_backpressure(c);

    // LAB BEGIN conn_read_echo: read and echo: LT, one recv() per event (epoll reports what is left next turn); ET, until recv() says EAGAIN (c->unread), EOF, back-pressure pauses us, or READS_PER_TURN is spent (then set c->rearm)
    if (edge) {
        // The drain rule. An edge means "new bytes arrived", once. Stop
        // before EAGAIN and the rest stays in the kernel with no further
        // event: the client waits for an echo that never comes. Two ways
        // to stop early are safe, because something will bring us back:
        // back-pressure (`unread` stays set, and the flush that lifts the
        // pause, above on EPOLLOUT, reads on), and the budget (`rearm`:
        // conn_watch re-registers, and epoll reports the socket again).
        int budget = READS_PER_TURN;
        while (c->unread && !c->input_closed && !c->paused) {
            if (budget-- == 0) {
                c->rearm = true;
                break;
            }
            if (conn_read(c) == -1 || conn_echo(c) == -1)
                return false;
            conn_check_backpressure(c);
        }
    } else if (readable && !c->input_closed && !c->paused) {
        // Once per turn, not until EAGAIN: level-triggered, what we leave in
        // the kernel is reported again next turn, and meanwhile every other
        // ready client gets its turn too. (EOF also reads as "readable", so
        // after it we must not ask again: conn_watch drops EPOLLIN.)
        if (conn_read(c) == -1 || conn_echo(c) == -1)
            return false;
        conn_check_backpressure(c);
    }
    // LAB END

    // EOF and nothing left to send: a half-closed client has now had every
    // byte back, so we close our side too.
    if (c->input_closed && buf_len(&c->out) == 0) {
        log_msg("fd %d closed", c->fd);
        return false;
    }
    return conn_watch(c) == 0;
}

// ---------------------------------------------------------------- accepting

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  // cannot fail with a valid clock id
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// A descriptor kept open on /dev/null for one purpose: to be closed when we
// run out of descriptors, so that we can take a waiting client off the
// backlog and close it (see refuse_one_client).
static int spare_fd = -1;

// Without a spare, the fallback is to back off (pause_accepting): the time
// (now_ms) to put the listening socket back into the epoll set, or -1 while
// it is in it; and how many pauses in a row, so that the log gets one line
// when they start and one when they end, not ten a second.
static long long accept_resume_at = -1;
static unsigned long accept_pauses;

// Opens the spare descriptor unless it is open already. Returns 0, or -1
// with errno set (the caller logs, or not: see refuse_one_client).
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

// accept() failed with EMFILE or ENFILE (ERR): no descriptor to put the
// next client in. Returns 0 after refusing one waiting client, -1 if it
// could not: nothing left to refuse, or no spare (then spare_fd is -1 and
// accept_clients backs off).
//
// Why: the client stays in the backlog and the listening socket stays
// readable, so a level-triggered epoll reports it on every turn and every
// accept() fails again: 100% CPU doing nothing. (Edge-triggered, it would
// be the opposite: no new edge, so the backlog is not looked at again until
// yet another client connects.) Either way the waiting clients hang.
// Closing the spare frees exactly one descriptor; accept() takes that
// client, we close it at once (it sees EOF, a clear "no" it can act on),
// and reopen the spare, which gets the same descriptor back. Nothing else
// can take it in between: this process has one thread. README.md compares
// this with backing off.
static int refuse_one_client(int listen_fd, int err)
{
    // LAB BEGIN refuse_one_client: free the spare descriptor, accept the waiting client and close it at once, reopen the spare; log the drop
    // No spare: it could not be opened at start, or the last reopen failed
    // (ENFILE: another process took the descriptor). A client may have left
    // since, so try again, quietly: if it fails, the back-off logs.
    if (open_spare() == -1)
        return -1;
    if (close(spare_fd) == -1)
        log_msg("close (spare descriptor): %s", strerror(errno));
    spare_fd = -1;
    int fd = accept(listen_fd, NULL, NULL);
    int accept_err = errno;
    if (fd != -1 && close(fd) == -1)
        log_msg("fd %d: close: %s", fd, strerror(errno));
    if (open_spare() == -1)
        log_msg("open /dev/null (spare descriptor): %s", strerror(errno));
    if (fd == -1) {
        // EAGAIN: the client gave up meanwhile, and the backlog is empty.
        if (accept_err != EAGAIN && accept_err != EWOULDBLOCK)
            log_msg("accept: %s", strerror(accept_err));
        return -1;
    }
    log_msg("accept: %s; dropped one pending connection", strerror(err));
    return 0;
    // LAB END
}

// The fallback when we are out of descriptors and have no spare (ERR is
// accept's errno): take the listening socket out of the epoll set, and let
// main put it back ACCEPT_BACKOFF_MS later (resume_accepting), through
// epoll_wait's timeout, not a sleep, so the clients we have are served
// meanwhile. Simply returning is not an option: the listening socket is
// level-triggered and stays readable, so epoll_wait would report it again
// at once, on every turn: the 100% CPU the spare exists to prevent. Backing
// off is the worse answer for the waiting clients (they hang in the backlog
// instead of being refused: README.md, section 4), so it is only the
// fallback, and each resume tries to reopen the spare first.
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

// How long epoll_wait may sleep: as long as it takes (-1), or while
// accepting is paused, until it resumes.
static int accept_timeout_ms(void)
{
    if (accept_resume_at == -1)
        return -1;
    long long left = accept_resume_at - now_ms();
    return left > 0 ? (int)left : 0;
}

// Once a pause is over: reopen the spare if a descriptor is free now (so
// that the next EMFILE refuses a client instead of pausing again), and put
// the listening socket back into the epoll set; if clients are still
// waiting, the next epoll_wait reports it at once.
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
        char peer[PEER_LEN];
        int fd = accept_client(listen_fd, peer, sizeof peer);
        if (fd == -1) {
            int err = errno;
            if (err != EMFILE && err != ENFILE)
                return;  // EAGAIN (nobody left), EINTR, or logged already
            if (refuse_one_client(listen_fd, err) == 0)
                continue;  // the next one may fit: a client may have left
            if (spare_fd == -1)
                pause_accepting(listen_fd, err);
            return;  // with a spare: the backlog emptied (EAGAIN) or accept failed, logged
        }
        // Non-blocking, so that no send() or recv() on it can ever put the
        // whole server to sleep. Edge-triggered mode depends on it: it reads
        // until the call that would block, and that call must say EAGAIN.
        if (set_nonblocking(fd) == -1 || conn_add(fd) == -1) {
            if (close(fd) == -1)
                log_msg("fd %d: close: %s", fd, strerror(errno));
        }
    }
}

// ---------------------------------------------------------------- the loop

// One turn: wait up to TIMEOUT_MS (-1: as long as it takes), then serve
// whatever is ready. Returns false only if epoll_wait() itself failed (a bug).
static bool epoll_once(int listen_fd, int timeout_ms)
{
    struct epoll_event events[MAX_EVENTS];
    // Only the ready sockets come back, however many are watched: this is
    // the O(ready) that 03's poll() could not give.
    n_waits++;
    int ready = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
    if (ready == -1) {
        if (errno == EINTR)
            return true;  // the caller looks at stop_requested
        log_msg("epoll_wait: %s", strerror(errno));
        return false;
    }

    for (int i = 0; i < ready; i++) {
        struct conn *c = events[i].data.ptr;
        if (c == NULL) {  // the listening socket's tag (main)
            accept_clients(listen_fd);
            continue;
        }
        // Freeing C here is safe although events[i+1..] are still to be
        // served: one epoll_wait() reports a socket at most once, and
        // serving one client never closes another, so no later event in
        // this batch can carry C's address. (A server where one client can
        // close another, a chat, must defer the free to the end of the
        // batch: README.md, Exercises.)
        if (!conn_handle(c, events[i].events))
            conn_close(c);
    }
    return true;
}

// After SIGINT/SIGTERM: accept no one, echo nothing new, give the queued
// echoes up to DRAIN_MS to leave, then close whatever is left.
static void drain_and_close_all(int listen_fd)
{
    // Stop watching the listening socket: no new clients from here on. The
    // kernel still completes handshakes until main closes it. (If accepting
    // is paused, it is out of the set already.)
    if (accept_resume_at == -1 && epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == -1)
        log_msg("epoll_ctl(DEL) listening socket: %s", strerror(errno));

    for (struct conn *c = conns, *next; c != NULL; c = next) {
        next = c->next;  // conn_close(c) frees c; c->next must be read first
        c->stopping = true;
        if (buf_len(&c->out) == 0 && !conn_linger(c)) {
            log_msg("fd %d closed (server stopping)", c->fd);
            conn_close(c);
        } else if (conn_watch(c) == -1) {
            conn_close(c);
        }
    }
    if (nconns > 0)
        log_msg("stopping: flushing %zu connection%s for up to %d ms", nconns,
                nconns == 1 ? "" : "s", DRAIN_MS);

    // The same turns as before, with a deadline; conn_handle() closes each
    // connection once its queue is empty and conn_linger() agrees.
    long long deadline = now_ms() + DRAIN_MS;
    while (nconns > 0) {
        long long left = deadline - now_ms();
        if (left <= 0 || !epoll_once(listen_fd, (int)left))
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

// The soft limit on open descriptors is usually 1024, and low on purpose:
// a program using select() breaks past fd 1023 (02_select). We use epoll,
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
    edge = opt.edge_triggered;

    // Handlers first, so that a SIGTERM sent as soon as we print
    // "listening on" already finds them in place.
    install_signal_handlers();
    raise_fd_limit();

    // EPOLL_CLOEXEC: were we ever to exec a program, it should not inherit
    // our epoll instance (nor, below, the spare descriptor).
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
    // accept_clients stops after ACCEPTS_PER_TURN (fairness) or when out of
    // descriptors, and level-triggered epoll reports the rest of the backlog
    // next turn. With EPOLLET here, every early stop would strand the
    // waiting clients until yet another one connected. data.ptr == NULL
    // tags it: no connection has that address.
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
    log_msg("%s-triggered epoll, --max-output %zu", edge ? "edge" : "level", max_output);

    while (ok && !stop_requested) {
        ok = epoll_once(listen_fd, accept_timeout_ms());
        resume_accepting(listen_fd);
    }
    // As in 03, a signal landing between the test above and epoll_wait()
    // is only seen on the next event; epoll_pwait(2) closes that window.

    drain_and_close_all(listen_fd);
    // Closing the listening socket makes the kernel reset every connection
    // still waiting in the backlog: those clients see "connection reset".
    if (close(listen_fd) == -1) {
        log_msg("close: %s", strerror(errno));
        ok = false;
    }
    if (spare_fd != -1 && close(spare_fd) == -1)
        log_msg("close (spare descriptor): %s", strerror(errno));
    if (close(epfd) == -1)
        log_msg("close (epoll): %s", strerror(errno));
    log_msg("stopped after %llu epoll_wait, %llu recv, %llu epoll_ctl(MOD) calls", n_waits,
            n_recvs, n_mods);
    return ok ? 0 : 1;
}
