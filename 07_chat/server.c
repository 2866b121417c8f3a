// server.c: a chat room. One thread, epoll (level-triggered), a session table, broadcasts fanned
// out through reference-counted buffers, a timer heap for idle sessions, and a cap on slow consumers.
//
// Read this file first, then refbuf.h, line.h (the line codec, from 06_codecs), timer.h, buffer.h
// and net.c.
//
// What changed since 04_epoll (and 06_codecs, whose line codec is copied in), and why:
//  1. State shared across connections. Until now every connection was on its
//     own; here a line from one session goes to every other one. The session
//     table (the room) is a list in join order; a broadcast walks it (fan_out).
//  2. Sessions leave in the middle of things: a recipient can be dropped
//     while a broadcast is still walking the table. Nothing is freed during a
//     turn: a session that leaves is marked and freed at the end of the turn
//     (the lifetime rules, just before session_free).
//  3. One message, many queues. A broadcast is encoded once into a
//     reference-counted buffer (struct refbuf, refbuf.c) that every recipient's output
//     queue points to; it is freed when the last recipient has sent it.
//     --broadcast copy copies it into each recipient's own buffer instead,
//     so the difference can be measured (README.md, section 5).
//  4. Time. Every session has one timer (idle, or the last chance to leave
//     cleanly) in a binary min-heap (timer.c); epoll_pwait's timeout is
//     computed from the earliest one (next_timeout_ms).
//  5. Slow consumers are dropped, not waited for, judged on what the kernel
//     refused: a session with more than --max-output still queued after a
//     write, or over --soft-output after every write for --soft-seconds, is
//     closed, and the room is told (session_queue, session_judge).
//  6. Fairness: a session's lines are read up to TURN_BYTES per turn; the
//     rest waits for the next turn (session_read). The budget is in bytes,
//     so it does not decide how many lines one writev carries.
//
// One turn of the loop, loop_once():
//   1. epoll_pwait() sleeps until a socket is ready, a stop signal arrives,
//      or the earliest timer is due (its timeout: next_timeout_ms; 0 while a
//      session yielded lines it still holds)
//   2. run the expired timers (run_timers: idle timeouts, leaving sessions
//      that ran out of time)
//   3. first the sessions that yielded last turn (their lines wait in our
//      buffers, where epoll cannot see them), then the ready sockets: accept,
//      read lines and act on them (broadcasts and replies are only queued
//      here), flush on EPOLLOUT
//   4. tell the room who left this turn (announce_leavers), then send what
//      every session got this turn, one writev each (flush_pending)
//   5. free the sessions that closed this turn (reap_closed)
//
// Still one thread: every session, the table and the timers live in it, so
// nothing needs a lock (README.md, section 3; 08 splits the I/O off).

#include "buffer.h"
#include "line.h"
#include "net.h"
#include "refbuf.h"
#include "timer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

// The longest line a client may send, without its "\n" or "\r\n"; longer:
// `* line too long`, then the session is closed.
#define MAX_LINE 4096

// The longest name (/nick): short enough that a line never gets much longer
// than MAX_LINE once the name is put in front of it.
#define MAX_NAME 32

// How much one recv() may read into a session's input buffer.
#define READ_CHUNK (16 * 1024)

// Fairness: how many bytes of lines one session may have handled per turn,
// each line charged at least LINE_MIN_COST. A quiet session waits at most
// one turn, and a turn serves at most TURN_BYTES of every ready session's
// lines: 8 lines of 4 KiB, or 128 short ones. The lines left over wait in
// the session's input buffer, and the session on the yield list
// (session_read). A budget, not a count of lines, because a count also set
// how many lines a recipient's writev carries per turn (a publisher's burst
// of short lines cost one write per 16 lines, whatever the window).
#define TURN_BYTES (32 * 1024)

// What a line costs of TURN_BYTES at least: its fan-out costs a queue entry
// and a reference per recipient whatever its length, so a flood of short
// lines gets at most TURN_BYTES / LINE_MIN_COST = 128 lines a turn.
#define LINE_MIN_COST 256

// Output entries offered to one writev(): IOV_MAX on Linux (16 KiB of stack).
// A busy turn queues one entry per line per recipient (up to
// TURN_BYTES / LINE_MIN_COST from every sender), and they should all leave
// in one call, as the copy buffer of --broadcast copy leaves in one send().
#define IOV_PER_WRITE 1024

// How many clients one turn may accept (04: a flood of connections must not
// starve the sessions we have).
#define ACCEPTS_PER_TURN 64

// Out of descriptors and without a spare: how long the listening socket
// stays out of the epoll set (pause_accepting).
#define ACCEPT_BACKOFF_NS (100LL * 1000000)

// Ready sockets per epoll_wait(), at most.
#define MAX_EVENTS 128

// A session that leaves (/quit, idle, line too long, EOF, server stopping)
// gets this long to take its last lines and close: its timer moves to now +
// LEAVE_NS when it leaves, and when that fires, it is closed, sent or not.
#define LEAVE_NS (1000LL * 1000000)

// After SIGINT/SIGTERM, how long the sessions get to take `* server shutting
// down` and what was queued before it: the contract gives a server 2 s.
#define DRAIN_NS (1000LL * 1000000)

// ---------------------------------------------------------------- sessions

// Where a session is in its life. OPEN -> LEAVING -> CLOSED, or OPEN ->
// CLOSED; never back. Only OPEN sessions are in the room: they get
// broadcasts, and their lines are read and acted on.
enum session_state {
    S_OPEN,     // chatting
    S_LEAVING,  // left the room (why): its last output goes, then our FIN,
                // then we wait for its EOF (input is read and discarded: a
                // close with unread input would reset the connection and
                // could destroy that last output), at most LEAVE_NS
    S_CLOSED,   // done: nothing more is sent or read; freed at the end of the turn
};

// Why a session left the room: what the others are told (announce_leavers).
enum leave_reason {
    LEFT_QUIT,      // /quit
    LEFT_EOF,       // the client closed (or half-closed) the connection
    LEFT_IDLE,      // --idle-timeout
    LEFT_TOO_LONG,  // a line over MAX_LINE
    LEFT_ERROR,     // recv or send failed, or out of memory
    LEFT_SLOW,      // more than --max-output queued: dropped
    LEFT_SHUTDOWN,  // the server is stopping (no one is told: everyone is leaving)
};

// The log's words for each reason (reap_closed): a dropped client's line says why.
static const char *const leave_reason_name[] = {
    [LEFT_QUIT] = "/quit",           [LEFT_EOF] = "the client closed",
    [LEFT_IDLE] = "idle timeout",    [LEFT_TOO_LONG] = "line too long",
    [LEFT_ERROR] = "error",          [LEFT_SLOW] = "too slow",
    [LEFT_SHUTDOWN] = "server stopping",
};

struct session {
    int fd;
    enum session_state state;
    enum leave_reason why;  // once not S_OPEN
    // Independent of the state:
    bool eof;          // the client's FIN arrived: nothing more to read
    bool fin_sent;     // S_LEAVING: all sent, and shutdown(SHUT_WR) done
    bool announced;    // its leaving was told to the room (announce_leavers)
    bool on_flush;     // on the flush list: got output this turn
    bool on_yield;     // on the yield list: holds lines it was not given time for
    uint32_t events;   // what epoll watches for it now (session_watch)
    unsigned long long id;
    unsigned long long served_turn;  // the last turn its input was handled
    char name[MAX_NAME + 1];

    struct buffer in;        // bytes of a line not complete yet
    struct line_decoder dec; // where the line codec resumes its scan of `in`
    struct outq q;           // --broadcast shared: queued output
    struct buffer out;       // --broadcast copy: queued output
    size_t queued;           // bytes queued, either way (the output caps)

    struct timer timer;  // in `timers` (now_ns): idle, or the end of LEAVE_NS
    struct timer soft;   // in `soft_timers` while over_soft: the end of --soft-seconds
    bool over_soft;      // its queue was over --soft-output after its last write

    struct session *prev, *next;  // the room (every session not freed yet), join order
    struct session *flush_next;   // the flush list
    struct session *yield_next;   // the yield list
};

static int epfd = -1;
static size_t max_output;             // --max-output, the hard cap
static size_t soft_output;            // --soft-output, the soft cap ...
static long long soft_ns;             // ... held this long (--soft-seconds)
static long long idle_ns;             // --idle-timeout
static enum broadcast_mode broadcast;  // --broadcast
static bool stopping;                 // SIGINT/SIGTERM seen: draining

static struct session *room_head, *room_tail;  // every session, OPEN or not, join order
static size_t nsessions;
static unsigned long long next_id;
static unsigned long long turn;

static struct session *flush_list;  // sessions with output queued this turn
static struct session *yield_list;  // sessions holding lines for the next turn
static size_t nleft;                // sessions that left and are not announced yet

// The signal mask epoll_pwait() waits with: ours, with SIGINT and SIGTERM
// unblocked. Outside the wait they are blocked (04, epoll_once).
static sigset_t wait_mask;

// Counted for the "stopped after" line, so that a test can prove from the
// server which paths ran. Plain increments on the path.
static unsigned long long n_waits;        // epoll_pwait() calls
static unsigned long long n_sessions;     // sessions opened
static unsigned long long n_lines;        // lines received (empty ones included)
static unsigned long long n_refused;      // lines refused for a control character (text_refusal)
static unsigned long long n_recvs;        // recv() calls on sessions (session_recv)
static unsigned long long n_deliveries;   // lines queued to a session (every recipient counts)
static unsigned long long n_slow;         // sessions dropped as too slow (either cap)
static unsigned long long n_cap_writes;   // writes made mid-turn because a queue met --max-output
static unsigned long long n_soft;         // times a queue went over --soft-output (its clock started)
static unsigned long long n_idle;         // idle timeouts
static unsigned long long n_yields;       // a session stopped at TURN_BYTES with lines left
static unsigned long long n_writes;       // writev()/send() calls flushing output
static unsigned long long n_copied;       // bytes copied into per-session buffers (copy mode)
static unsigned long long n_timers;       // timers expired
static size_t peak_queued;                // the most one session had queued

// ---------------------------------------------------------------- the timer heap

// Every session has one timer (struct timer, in timer.h's binary min-heap):
// idle, or the end of LEAVE_NS. Moving it (a session spoke: its idle
// deadline moves on) is a sift from where it is: O(log n), no search.
// README.md, section 3, compares this with a timing wheel.
static struct timer_heap timers = TIMER_HEAP_EMPTY;

// The session whose timer T is.
static struct session *timer_session(struct timer *t)
{
    return (struct session *)((char *)t - offsetof(struct session, timer));
}

// The soft cap's clocks (session_judge): a second heap, so that a session's
// idle or leaving timer and its soft-cap clock never stand in for each other.
// A session is in it only while over_soft.
static struct timer_heap soft_timers = TIMER_HEAP_EMPTY;

static struct session *soft_session(struct timer *t)
{
    return (struct session *)((char *)t - offsetof(struct session, soft));
}

// ---------------------------------------------------------------- leaving, and the lifetime rules

// Puts S on the flush list: flush_pending sends its output at the end of
// the turn (and a LEAVING session's FIN once nothing is left).
static void flush_later(struct session *s)
{
    if (!s->on_flush) {
        s->on_flush = true;
        s->flush_next = flush_list;
        flush_list = s;
    }
}

// The lifetime rules of a struct session (what makes the fan-out safe):
//  1. A session is freed only by reap_closed, at the end of a turn, never
//     while anything may still hold its address: the turn's events array,
//     a fan_out walking the room, the flush list. The yield list outlives
//     the turn: session_free takes the session off it.
//  2. Leaving (session_leave, session_close) only changes its state and
//     queues it to be announced; a loop that meets a session not S_OPEN
//     skips it. So a broadcast may drop a recipient (too slow) and walk on
//     to r->next: r is still there.
//  3. A CLOSED session is never made OPEN again, and nothing is queued to it.

// S leaves the room for WHY: no more broadcasts to it; the room is told at
// the end of the turn. Its queued output still goes (S_LEAVING), for at
// most LEAVE_NS.
static void session_leave(struct session *s, enum leave_reason why)
{
    if (s->state != S_OPEN)
        return;
    s->state = S_LEAVING;
    s->why = why;
    nleft++;
    timer_heap_move(&timers, &s->timer, now_ns() + LEAVE_NS);
    flush_later(s);  // its last output, then its FIN (session_flush)
}

// S is done: nothing more is sent or read. If it was still in the room, it
// leaves it for WHY.
static void session_close(struct session *s, enum leave_reason why)
{
    if (s->state == S_OPEN) {
        s->why = why;
        nleft++;
    }
    s->state = S_CLOSED;
}

// ---------------------------------------------------------------- output

// Tells epoll what S waits for: EPOLLIN until the client's EOF (an OPEN
// session's lines, a LEAVING one's EOF; after it, level-triggered, a socket
// at EOF would be reported readable on every turn), EPOLLOUT only while
// output is queued (a writable socket would wake us on every turn, too).
// Returns 0, or -1 after logging why S must be closed.
static int session_watch(struct session *s)
{
    uint32_t want = (s->eof ? 0 : EPOLLIN) | (s->queued > 0 ? EPOLLOUT : 0);
    if (want == s->events)
        return 0;
    struct epoll_event ev = {.events = want, .data.ptr = s};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev) == -1) {
        log_msg("fd %d: epoll_ctl(MOD): %s, closing", s->fd, strerror(errno));
        return -1;
    }
    s->events = want;
    return 0;
}

static int session_flush(struct session *s);

// Queues RB (a whole line) for S, which must be S_OPEN or S_LEAVING; puts S
// on the flush list. The caller keeps its own reference. A NOTICE is a line
// the session is told on its way out (`* idle timeout`, `* server shutting
// down`, `* bye`, `* line too long`; it leaves right after): it is queued
// whatever the caps, so that a notice is never what drops a session.
//
// The hard cap (--max-output) is judged on what the kernel refuses, not on
// what this turn queued: one busy turn can queue more than the cap for a
// reader whose socket is empty (20 senders x 16 lines of 4 KiB), and the
// turn's own writes would take it all. So a queue that passes the cap is
// written at once, here, and the session is dropped only if more than the
// cap is still queued after that write. Below the cap, a turn only queues.
static void session_queue(struct session *s, struct refbuf *rb, bool notice)
{
    int rc;
    if (broadcast == BROADCAST_SHARED) {
        refbuf_hold(rb);  // the queue's reference, released once it is sent
        rc = outq_push(&s->q, rb);
        if (rc == -1)
            refbuf_release(rb);
    } else {
        rc = buf_append(&s->out, rb->data, rb->len);
        if (rc == 0)
            n_copied += rb->len;
    }
    if (rc == -1) {
        log_msg("fd %d: out of memory for its output, closing", s->fd);
        session_close(s, LEFT_ERROR);
        return;
    }
    n_deliveries++;
    s->queued += rb->len;
    if (s->queued > peak_queued)
        peak_queued = s->queued;
    flush_later(s);
    // LAB BEGIN output_cap: unless NOTICE, once S's queue passes max_output, write it now (session_flush, n_cap_writes++); drop S (session_close, LEFT_SLOW, n_slow++) if more than max_output is still queued after that write
    // LAB STUB: (void)notice;  // not written: no cap, a queue grows without bound
    if (notice || s->queued <= max_output)
        return;
    n_cap_writes++;
    if (session_flush(s) == -1) {
        session_close(s, LEFT_ERROR);
        return;
    }
    if (s->queued > max_output) {
        log_msg("fd %d (%s): %zu bytes still queued after a write, over --max-output %zu: "
                "dropped (too slow)",
                s->fd, s->name, s->queued, max_output);
        n_slow++;
        session_close(s, LEFT_SLOW);
    }
    // LAB END
}

// Queues RB for S under the caps: a reply or a broadcast.
static void session_deliver(struct session *s, struct refbuf *rb)
{
    session_queue(s, rb, false);
}

// The soft cap (--soft-output, --soft-seconds), judged after every write of
// S (session_flush): what the kernel refused is what is still queued. Over
// it, S's clock starts (a timer in soft_timers, run_timers drops S when it
// fires); back under it, or no longer OPEN, the clock is stopped, so that
// it measures one unbroken stretch over the cap. Returns 0, or -1 if out
// of memory.
static int session_judge(struct session *s)
{
    bool over = s->state == S_OPEN && s->queued > soft_output;
    if (over && !s->over_soft) {
        if (timer_heap_add(&soft_timers, &s->soft, now_ns() + soft_ns) == -1) {
            log_msg("fd %d: out of memory for its soft-cap clock, closing", s->fd);
            return -1;
        }
        s->over_soft = true;
        n_soft++;
        log_msg("fd %d (%s): %zu bytes still queued after the writes, over --soft-output %zu: "
                "dropped in %.3f s unless it drains",
                s->fd, s->name, s->queued, soft_output, soft_ns / 1e9);
    } else if (!over && s->over_soft) {
        timer_heap_del(&soft_timers, &s->soft);
        s->over_soft = false;
    }
    return 0;
}

// Queues a notice for S (session_queue): never dropped for it.
static void session_notice(struct session *s, const char *text)
{
    struct refbuf *rb = refbuf_printf("%s", text);
    if (rb == NULL) {
        session_close(s, LEFT_ERROR);
        return;
    }
    session_queue(s, rb, true);
    refbuf_release(rb);  // ours: the queue holds its own
}

// Queues the formatted line (FMT, "\n" added) for S alone.
static void session_printf(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void session_printf(struct session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct refbuf *rb = refbuf_vprintf(fmt, ap);
    va_end(ap);
    if (rb == NULL) {
        session_close(s, LEFT_ERROR);
        return;
    }
    session_deliver(s, rb);
    refbuf_release(rb);  // ours: the queue holds its own
}

// Sends RB to every session in the room but FROM (NULL: to all of them).
// The message was encoded once; each recipient's queue holds a reference
// (--broadcast copy: a copy). A recipient may be dropped on the way (too
// slow): it stays linked until the end of the turn, so r->next is valid.
static void fan_out(struct session *from, struct refbuf *rb)
{
    for (struct session *r = room_head; r != NULL; r = r->next) {
        if (r == from || r->state != S_OPEN)
            continue;
        session_deliver(r, rb);
    }
}

// fan_out of the formatted line, then the creator's reference dropped.
static void broadcast_printf(struct session *from, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void broadcast_printf(struct session *from, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct refbuf *rb = refbuf_vprintf(fmt, ap);
    va_end(ap);
    if (rb == NULL) {
        log_msg("out of memory for a broadcast: not sent");
        return;
    }
    fan_out(from, rb);
    refbuf_release(rb);  // the creator's reference: the queues hold theirs
}

// One writev()/send() of what S has queued, as much as the kernel takes;
// *OFFERED gets how many bytes it offered. Returns how many it took (0: the
// kernel is full, EAGAIN), or -1 after logging why S must be closed.
static ssize_t session_write_some(struct session *s, size_t *offered)
{
    ssize_t sent;
    *offered = 0;
    if (broadcast == BROADCAST_SHARED) {
        // One iovec per queued line, each pointing into its shared buffer:
        // the lines go out with no copy on our side.
        struct iovec iov[IOV_PER_WRITE];
        int n = 0;
        for (size_t i = 0; i < s->q.n && n < IOV_PER_WRITE; i++, n++) {
            struct out_entry *e = outq_at(&s->q, i);
            iov[n] = (struct iovec){e->rb->data + e->off, e->rb->len - e->off};
            *offered += iov[n].iov_len;
        }
        do
            sent = writev(s->fd, iov, n);
        while (sent == -1 && errno == EINTR);
    } else {
        *offered = buf_len(&s->out);
        do
            sent = send(s->fd, buf_peek(&s->out), *offered, 0);
        while (sent == -1 && errno == EINTR);
    }
    n_writes++;
    if (sent == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        log_msg("fd %d: send: %s, closing", s->fd, strerror(errno));
        return -1;
    }
    return sent;
}

// Drops the first N queued bytes of S (they were sent).
static void session_consume(struct session *s, size_t n)
{
    s->queued -= n;
    if (broadcast == BROADCAST_COPY) {
        buf_consume(&s->out, n);
        return;
    }
    while (n > 0) {
        struct out_entry *e = outq_at(&s->q, 0);
        size_t left = e->rb->len - e->off;
        if (n < left) {
            e->off += n;
            return;
        }
        n -= left;
        outq_pop(&s->q);  // sent whole: the queue's reference goes
    }
}

// Sends what S has queued until it is empty or the kernel is full; then a
// LEAVING session with nothing left sends its FIN, and is closed if the
// client's EOF came already. Returns 0, or -1 after logging why S must be closed.
static int session_flush(struct session *s)
{
    while (s->queued > 0) {
        size_t offered;
        ssize_t sent = session_write_some(s, &offered);
        if (sent == -1)
            return -1;
        session_consume(s, (size_t)sent);
        if ((size_t)sent < offered)
            break;  // the kernel is full: EPOLLOUT brings us back (session_watch)
    }
    if (session_judge(s) == -1)
        return -1;
    if (s->state == S_LEAVING && s->queued == 0 && !s->fin_sent) {
        s->fin_sent = true;
        if (shutdown(s->fd, SHUT_WR) == -1 || s->eof)
            s->state = S_CLOSED;  // gone already, or nothing more will come from it
    }
    return 0;
}

// ---------------------------------------------------------------- names and commands

// Names are compared without regard to case (ASCII: a name is letters, digits, '_' and '-'),
// so `Alice` and `alice` cannot both be in the room, nor `User2` beside `user2`. Finding one
// is a walk of the room: O(sessions) per /nick or /msg, cheap next to the broadcast, which is
// O(sessions) per line anyway.

// The session that holds NAME: one in the room, or one that left and whose `* NAME left`
// (or `dropped`) has not been queued yet (announce_leavers sets `announced`). A leaving
// session keeps its name until then, so nobody can see `* X is now NAME` before `* NAME left`.
static struct session *name_holder(const char *name)
{
    // LAB BEGIN name_holder: the session of the room (room_head, s->next) that holds NAME: names compare without regard to case, and a session that left keeps its name until its `* NAME left` has been queued (s->announced); NULL if nobody holds it
    // LAB STUB: (void)name;  // not written: every name is free
    // LAB STUB: return NULL;
    for (struct session *s = room_head; s != NULL; s = s->next)
        if (!s->announced && strcasecmp(s->name, name) == 0)
            return s;
    return NULL;
    // LAB END
}

// The session in the room called NAME (/msg): a session that left gets nothing more.
static struct session *find_in_room(const char *name)
{
    for (struct session *s = room_head; s != NULL; s = s->next)
        if (s->state == S_OPEN && strcasecmp(s->name, name) == 0)
            return s;
    return NULL;
}

// 1 to MAX_NAME letters, digits, '_' or '-'.
static bool valid_name(const char *p, size_t n)
{
    if (n == 0 || n > MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

// "user" and digits, in any case: the names new sessions get. Nobody may take one by
// /nick, or the next session to get that number would share it.
static bool reserved_name(const char *name)
{
    if (strncasecmp(name, "user", 4) != 0 || name[4] == '\0')
        return false;
    for (const char *p = name + 4; *p != '\0'; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

static void cmd_nick(struct session *s, const char *arg, size_t n)
{
    char name[MAX_NAME + 1];
    if (!valid_name(arg, n)) {
        session_printf(s, "* bad name (1-%d letters, digits, _ or -)", MAX_NAME);
        return;
    }
    memcpy(name, arg, n);
    name[n] = '\0';
    if (strcmp(name, s->name) == 0) {
        session_printf(s, "* you are %s already", name);
        return;
    }
    // Its own name in another case is S's to take (`/nick Alice` for alice); a userN name is
    // nobody's, not even the session that got it on joining.
    struct session *holder = name_holder(name);
    if ((holder != NULL && holder != s) || reserved_name(name)) {
        session_printf(s, "* %s is taken", name);
        return;
    }
    broadcast_printf(s, "* %s is now %s", s->name, name);
    memcpy(s->name, name, n + 1);
    session_printf(s, "* you are now %s", name);
}

static void cmd_who(struct session *s)
{
    // One line, however many sessions: built in a buffer, then one refbuf.
    struct buffer b = BUFFER_EMPTY;
    bool ok = buf_append(&b, "* users:", 8) == 0;
    for (struct session *r = room_head; ok && r != NULL; r = r->next)
        if (r->state == S_OPEN)
            ok = buf_append(&b, " ", 1) == 0 && buf_append(&b, r->name, strlen(r->name)) == 0;
    ok = ok && buf_append(&b, "\n", 1) == 0;
    struct refbuf *rb = ok ? refbuf_new(buf_len(&b)) : NULL;
    if (rb != NULL) {
        memcpy(rb->data, buf_peek(&b), buf_len(&b));
        session_deliver(s, rb);
        refbuf_release(rb);
    } else {
        session_close(s, LEFT_ERROR);
    }
    buf_free(&b);
}

static void cmd_msg(struct session *s, const char *arg, size_t n)
{
    const char *sp = memchr(arg, ' ', n);
    if (sp == NULL || sp == arg || sp + 1 == arg + n) {
        session_printf(s, "* usage: /msg NAME text");
        return;
    }
    size_t name_len = (size_t)(sp - arg);
    char name[MAX_NAME + 1];
    struct session *to = NULL;
    if (name_len <= MAX_NAME) {
        memcpy(name, arg, name_len);
        name[name_len] = '\0';
        to = find_in_room(name);
    }
    if (to == NULL) {
        session_printf(s, "* no such user %.*s", name_len <= MAX_NAME ? (int)name_len : MAX_NAME,
                       arg);
        return;
    }
    const char *text = sp + 1;
    struct refbuf *rb = refbuf_printf("%s (private): %.*s", s->name, (int)(arg + n - text), text);
    if (rb == NULL) {
        session_close(s, LEFT_ERROR);
        return;
    }
    session_deliver(to, rb);
    refbuf_release(rb);
}

// The text policy: a line that holds a control character is refused whole, with a notice to
// its sender, before it is read as a command; nothing of it reaches anyone. Lines reach other
// people's terminals, and a control character there is an instruction, not text: ESC starts
// a sequence that can retitle the window, clear the screen or move the cursor over another
// user's line; a bare CR returns to the start of the line to overwrite it; BEL rings; NUL
// would cut a C string short (`/msg alice\0zzz secret`). The control characters are every C0
// byte but TAB (0x00-0x1f), DEL (0x7f), and the C1 controls in UTF-8, C2 80 to C2 9F
// (U+0080-U+009F: U+009B is CSI to a terminal that decodes C1). Every other byte passes as
// it came: UTF-8 text, its continuation bytes 0x80-0xbf included, and bytes that are not
// UTF-8 at all (a terminal shows them as U+FFFD; this server does not check UTF-8).
// Refused, not escaped: what passes is exactly what the sender typed, and the sender learns
// at once why a line went nowhere (an escaped ESC would have to be told apart from a typed
// backslash, so backslashes would change too).
// Returns the offset of the first control character in P (N bytes), *CP its code point; or
// N if there is none.
static size_t text_refusal(const char *p, size_t n, unsigned *cp)
{
    // LAB BEGIN text_refusal: return the offset of the first control character in P (N bytes): a C0 byte but TAB (0x00-0x1f), DEL (0x7f), or a UTF-8 C1 control (the two bytes C2 80 to C2 9F); *CP gets its code point (the C0 byte or DEL, or the second byte of C2 xx); N if there is none
    // LAB STUB: (void)p;  // not written: nothing is refused
    // LAB STUB: (void)cp;
    // LAB STUB: return n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            *cp = c;
            return i;
        }
        if (c == 0xc2 && i + 1 < n && (unsigned char)p[i + 1] >= 0x80 &&
            (unsigned char)p[i + 1] <= 0x9f) {
            *cp = (unsigned char)p[i + 1];  // C2 xx encodes U+00xx
            return i;
        }
    }
    return n;
    // LAB END
}

// One line from S (without its ending), N bytes at P.
static void session_line(struct session *s, const char *p, size_t n)
{
    n_lines++;
    timer_heap_move(&timers, &s->timer, now_ns() + idle_ns);  // it spoke: its idle timer starts again
    if (n == 0)
        return;  // empty lines are ignored
    unsigned cp;
    size_t at = text_refusal(p, n, &cp);
    if (at < n) {
        n_refused++;
        session_printf(s, "* refused: control character U+%04X at offset %zu", cp, at);
        return;
    }
    if (p[0] != '/') {
        broadcast_printf(s, "%s: %.*s", s->name, (int)n, p);
        return;
    }
    const char *sp = memchr(p, ' ', n);
    size_t cmd_len = sp != NULL ? (size_t)(sp - p) : n;
    const char *arg = sp != NULL ? sp + 1 : p + n;
    size_t arg_len = (size_t)(p + n - arg);
#define IS(c) (cmd_len == sizeof(c) - 1 && memcmp(p, c, cmd_len) == 0)
    if (IS("/nick")) {
        cmd_nick(s, arg, arg_len);
    } else if (IS("/who") && arg_len == 0) {
        cmd_who(s);
    } else if (IS("/msg")) {
        cmd_msg(s, arg, arg_len);
    } else if (IS("/quit") && arg_len == 0) {
        session_notice(s, "* bye");
        session_leave(s, LEFT_QUIT);
    } else {
        session_printf(s, "* unknown command");
    }
#undef IS
}

// ---------------------------------------------------------------- input

// Puts S on the yield list: it holds lines the turn had no time for.
static void session_yield(struct session *s)
{
    n_yields++;
    if (!s->on_yield) {
        s->on_yield = true;
        s->yield_next = yield_list;
        yield_list = s;
    }
}

// One recv() into S's input buffer, of at most READ_CHUNK bytes, into a buffer that never
// grows past READ_CHUNK (buf_reserve_capped: what it holds when we read is at most a partial
// line, MAX_LINE + 2 bytes). Returns 2 (the recv filled the room it was offered: the kernel
// may hold more), 1 (fewer bytes came: the kernel had no more), 0 (nothing now, or EOF:
// s->eof), or -1 after logging why S must be closed.
//
// Why 1 and 2: a stream socket's recv returns less than it was offered only when the kernel
// had no more, so after a short read, asking again would cost a recv that returns EAGAIN on
// almost every input event (a line at a time, the common case). Level-triggered epoll
// reports the socket again if more came meanwhile.
static int session_recv(struct session *s)
{
    size_t room;
    char *at = buf_reserve_capped(&s->in, READ_CHUNK, READ_CHUNK, &room);
    if (at == NULL || room == 0) {
        log_msg("fd %d: %s for input, closing", s->fd, at == NULL ? "out of memory" : "no room");
        return -1;
    }
    ssize_t n;
    n_recvs++;
    do
        n = recv(s->fd, at, room, 0);
    while (n == -1 && errno == EINTR);
    if (n == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        log_msg("fd %d: recv: %s, closing", s->fd, strerror(errno));
        return -1;
    }
    if (n == 0) {
        s->eof = true;
        return 0;
    }
    buf_commit(&s->in, (size_t)n);
    return (size_t)n == room ? 2 : 1;
}

// Reads and handles S's lines: at most TURN_BYTES this turn (fairness),
// reading from the kernel only when no whole line is buffered.
static void session_read(struct session *s)
{
    s->served_turn = turn;
    size_t spent = 0;  // of TURN_BYTES
    int got = 2;       // the last session_recv's answer: 2 = ask again (no read yet this turn)
    while (s->state == S_OPEN) {
        // The codec (06_codecs, copied in) finds the next line in what is
        // buffered, resuming its scan where the last one stopped.
        struct codec_result r = line_decode(&s->dec, buf_peek(&s->in), buf_len(&s->in));
        if (r.status == CODEC_ERROR) {
            session_notice(s, "* line too long");
            session_leave(s, LEFT_TOO_LONG);
            return;
        }
        if (r.status == CODEC_FRAME) {
            // LAB BEGIN fairness_cap: handle the line and charge it (its bytes with the ending, at least LINE_MIN_COST); once TURN_BYTES are spent this turn, stop and session_yield if bytes are still buffered (the kernel's bytes LT epoll reports again)
            // LAB STUB: session_line(s, r.frame, r.len);  // not written: every line handled, no budget
            // LAB STUB: buf_consume(&s->in, r.consumed);
            // LAB STUB: (void)spent;
            // LAB STUB: (void)session_yield;
            session_line(s, r.frame, r.len);  // a view into `in`: used before the consume
            buf_consume(&s->in, r.consumed);
            spent += r.consumed > LINE_MIN_COST ? r.consumed : LINE_MIN_COST;
            if (spent >= TURN_BYTES) {
                if (buf_len(&s->in) > 0)
                    session_yield(s);
                return;
            }
            // LAB END
            continue;
        }
        // LINE_NEED_MORE: ask the kernel, unless it said it had no more (got < 2).
        if (s->eof || got < 2)
            break;
        got = session_recv(s);
        if (got == -1) {
            session_close(s, LEFT_ERROR);
            return;
        }
    }
    if (s->state == S_OPEN && s->eof)
        session_leave(s, LEFT_EOF);  // a partial last line is dropped with it
    // An idle session holds no input buffer (buffer.h, rule 1): buf_consume freed it when its
    // last line went; this frees one a recv found nothing for.
    if (buf_len(&s->in) == 0)
        buf_free(&s->in);
}

// S left: read and discard what the client still sends, until EOF (then,
// once our FIN is out too, it is closed) or the kernel is empty.
static void session_discard(struct session *s)
{
    for (int k = 0; k < TURN_BYTES / READ_CHUNK && !s->eof; k++) {
        buf_free(&s->in);
        int got = session_recv(s);
        if (got == -1) {
            session_close(s, LEFT_ERROR);
            return;
        }
        if (got < 2)
            break;  // the kernel had no more (session_recv)
    }
    buf_free(&s->in);
    if (s->eof && s->fin_sent)
        s->state = S_CLOSED;
}

// Serves S after epoll reported REVENTS for it.
static void session_io(struct session *s, uint32_t revents)
{
    if (s->state == S_CLOSED)
        return;  // closed earlier this turn (rule 1: still allocated)
    // Output first: it frees room in the kernel and in our queue.
    if ((revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && s->queued > 0 && session_flush(s) == -1) {
        session_close(s, LEFT_ERROR);
        return;
    }
    if (revents & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (s->state == S_OPEN && s->served_turn != turn)  // not had its share this turn yet
            session_read(s);
        else if (s->state == S_LEAVING)
            session_discard(s);
    }
    // Level-triggered, a socket at EOF is readable and one with nothing to
    // send is writable on every turn: once the flush above emptied the queue,
    // or the client's EOF came, stop asking (session_watch), or the loop
    // spins. A session with output from this turn is on the flush list, and
    // flush_pending sets its interest after the send: one epoll_ctl, not two.
    if (s->state != S_CLOSED && !s->on_flush && session_watch(s) == -1)
        session_close(s, LEFT_ERROR);
}

// ---------------------------------------------------------------- joining

static struct session *session_add(int fd)
{
    struct session *s = calloc(1, sizeof *s);  // zeroed: empty buffers and queue, S_OPEN
    if (s == NULL) {
        log_msg("fd %d: out of memory, closing", fd);
        return NULL;
    }
    s->fd = fd;
    s->id = ++next_id;
    snprintf(s->name, sizeof s->name, "user%llu", s->id);
    line_init(&s->dec, MAX_LINE);
    s->events = EPOLLIN;
    struct epoll_event ev = {.events = s->events, .data.ptr = s};
    if (timer_heap_add(&timers, &s->timer, now_ns() + idle_ns) == -1) {
        log_msg("fd %d: out of memory, closing", fd);
        free(s);
        return NULL;
    }
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
        log_msg("fd %d: epoll_ctl(ADD): %s, closing", fd, strerror(errno));
        timer_heap_del(&timers, &s->timer);
        free(s);
        return NULL;
    }
    s->prev = room_tail;
    if (room_tail != NULL)
        room_tail->next = s;
    else
        room_head = s;
    room_tail = s;
    nsessions++;
    n_sessions++;
    session_printf(s, "* welcome %s", s->name);
    broadcast_printf(s, "* %s joined", s->name);
    return s;
}

// Frees S and everything it owns. Only reap_closed and the last lines of
// main call it (the lifetime rules, above session_leave).
static void session_free(struct session *s)
{
    // No EPOLL_CTL_DEL first: closing the last descriptor of the socket takes
    // it out of the epoll set, and ours is the last one (close-on-exec, no
    // dup, no fork: 04, conn_close).
    close_or_log(s->fd, "client");
    timer_heap_del(&timers, &s->timer);
    if (s->over_soft)
        timer_heap_del(&soft_timers, &s->soft);
    // The yield list is the one that outlives a turn: take S off it.
    for (struct session **p = &yield_list; *p != NULL; p = &(*p)->yield_next)
        if (*p == s) {
            *p = s->yield_next;
            break;
        }
    buf_free(&s->in);
    buf_free(&s->out);
    outq_free(&s->q);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        room_head = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    else
        room_tail = s->prev;
    nsessions--;
    free(s);
}

// ---------------------------------------------------------------- the end of a turn

// Tells the room about every session that left since the last call. A
// broadcast may drop another session (too slow): it is announced by the
// same walk, since it is further along or the walk starts again.
static void announce_leavers(void)
{
    while (nleft > 0) {
        nleft = 0;
        for (struct session *s = room_head; s != NULL; s = s->next) {
            if (s->state == S_OPEN || s->announced)
                continue;
            s->announced = true;
            if (s->why == LEFT_SLOW)
                broadcast_printf(s, "* %s dropped (too slow)", s->name);
            else if (s->why != LEFT_SHUTDOWN)
                broadcast_printf(s, "* %s left", s->name);
        }
    }
}

// Sends what every session on the flush list got this turn: one writev
// per session for up to IOV_PER_WRITE lines, however many senders they came from.
static void flush_pending(void)
{
    while (flush_list != NULL) {
        struct session *s = flush_list;
        flush_list = s->flush_next;
        s->on_flush = false;
        if (s->state == S_CLOSED)
            continue;
        if (session_flush(s) == -1 || session_watch(s) == -1)
            session_close(s, LEFT_ERROR);
    }
}

// Frees the sessions that closed this turn (rule 1: the turn is over).
static void reap_closed(void)
{
    for (struct session *s = room_head, *next; s != NULL; s = next) {
        next = s->next;  // session_free(s) frees s: read it first
        if (s->state != S_CLOSED)
            continue;
        if (s->why != LEFT_SHUTDOWN)
            log_msg("fd %d (%s) closed: %s", s->fd, s->name, leave_reason_name[s->why]);
        session_free(s);
    }
}

// ---------------------------------------------------------------- timers

// Runs every timer due at NOW: an OPEN session idle that long is told and
// leaves; a LEAVING one ran out of LEAVE_NS and is closed.
static void run_timers(long long now)
{
    struct timer *t;
    while ((t = timer_heap_first(&timers)) != NULL && t->deadline <= now) {
        struct session *s = timer_session(t);
        n_timers++;
        if (s->state == S_OPEN) {
            n_idle++;
            log_msg("fd %d (%s): idle for %.3f s, closing", s->fd, s->name, idle_ns / 1e9);
            session_notice(s, "* idle timeout");
            session_leave(s, LEFT_IDLE);  // moves its timer to now + LEAVE_NS
        } else {
            session_close(s, s->why);
        }
        // Not due again before reap_closed frees it: a far deadline, so the
        // loop goes on to the next timer.
        if (s->state == S_CLOSED)
            timer_heap_move(&timers, &s->timer, LLONG_MAX);
    }
    // The soft cap's clocks: a session still over --soft-output after every
    // turn's writes since its clock started (session_judge stops the clock
    // when it drains under) is dropped.
    while ((t = timer_heap_first(&soft_timers)) != NULL && t->deadline <= now) {
        struct session *s = soft_session(t);
        n_timers++;
        timer_heap_del(&soft_timers, t);
        s->over_soft = false;
        if (s->state != S_OPEN)
            continue;
        log_msg("fd %d (%s): %zu bytes queued, over --soft-output %zu for %.3f s: "
                "dropped (too slow)",
                s->fd, s->name, s->queued, soft_output, soft_ns / 1e9);
        n_slow++;
        session_close(s, LEFT_SLOW);
    }
}

// ---------------------------------------------------------------- out of descriptors

// As in 04: out of descriptors, a spare descriptor open on /dev/null is
// closed to accept one waiting client and close it at once (it sees EOF, a
// clear "no"), then reopened; without a spare, the listening socket leaves
// the epoll set for ACCEPT_BACKOFF_NS (04's README.md, section 4).
static int spare_fd = -1;
static long long accept_resume_at = -1;  // backing off: when to resume (now_ns); else -1
static unsigned long accept_pauses;

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

static int refuse_one_client(int listen_fd)
{
    close_or_log(spare_fd, "spare descriptor");
    spare_fd = -1;
    int fd = accept(listen_fd, NULL, NULL);
    int accept_err = errno;
    if (fd != -1)
        close_or_log(fd, "refused client");
    (void)open_spare();
    errno = accept_err;
    return fd == -1 ? -1 : 0;
}

static void pause_accepting(int listen_fd, int err)
{
    if (epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == -1) {
        log_msg("epoll_ctl(DEL) listening socket: %s", strerror(errno));
        return;
    }
    accept_resume_at = now_ns() + ACCEPT_BACKOFF_NS;
    if (accept_pauses++ == 0)
        log_msg("accept: %s, and no spare descriptor: accepting paused, retrying every %lld ms",
                strerror(err), ACCEPT_BACKOFF_NS / 1000000);
}

static void resume_accepting(int listen_fd)
{
    if (accept_resume_at == -1 || now_ns() < accept_resume_at || stopping)
        return;
    (void)open_spare();
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) == -1) {
        log_msg("epoll_ctl(ADD) listening socket: %s", strerror(errno));
        accept_resume_at = now_ns() + ACCEPT_BACKOFF_NS;
        return;
    }
    accept_resume_at = -1;
}

static void accept_clients(int listen_fd)
{
    for (int k = 0; k < ACCEPTS_PER_TURN; k++) {
        int fd = accept_client(listen_fd);  // non-blocking, close-on-exec, TCP_NODELAY
        if (fd != -1) {
            if (session_add(fd) == NULL)
                close_or_log(fd, "client");
            continue;
        }
        int err = errno;
        if (err != EMFILE && err != ENFILE)
            return;  // EAGAIN (nobody left), EINTR, or logged already
        if (open_spare() == -1) {
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

// How long epoll_pwait may sleep: until the earliest deadline (a timer, a
// paused accept resuming, the end of the drain), rounded UP to the
// millisecond: rounded down, the wait would end just before the deadline,
// the timer would not be due yet, and the loop would spin on 0 ms waits
// until it is. 0 while a session yielded lines it still holds; -1 with no
// deadline at all.
static int next_timeout_ms(long long drain_deadline)
{
    if (yield_list != NULL)
        return 0;
    // The deadlines that are not timers: a paused accept resuming, the end of the drain.
    long long next = LLONG_MAX;
    if (accept_resume_at != -1)
        next = accept_resume_at;
    if (drain_deadline != -1 && drain_deadline < next)
        next = drain_deadline;
    struct timer *soft = timer_heap_first(&soft_timers);  // the soft cap's clocks
    if (soft != NULL && soft->deadline < next)
        next = soft->deadline;
    // LAB BEGIN next_timeout: the earliest of NEXT and the first timer's deadline (timer_heap_first, if any), as milliseconds from now rounded up (0 if it is due); -1 if there is no deadline at all
    // LAB STUB: (void)next;  // not written: no deadline, epoll_wait sleeps until a socket wakes it
    // LAB STUB: return -1;
    struct timer *first = timer_heap_first(&timers);
    if (first != NULL && first->deadline < next)
        next = first->deadline;
    if (next == LLONG_MAX)
        return -1;
    long long left = next - now_ns();
    long long ms = left <= 0 ? 0 : (left + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
    // LAB END
}

// One turn (the steps are numbered at the top of this file). Returns 0, or
// -1 only if epoll_pwait() itself failed (a bug).
static int loop_once(int listen_fd, long long drain_deadline)
{
    struct epoll_event events[MAX_EVENTS];
    int timeout = next_timeout_ms(drain_deadline);
    n_waits++;
    turn++;
    // 1. The wait. SIGINT and SIGTERM are unblocked only inside it (04).
    int ready = epoll_pwait(epfd, events, MAX_EVENTS, timeout, &wait_mask);
    if (ready == -1) {
        if (errno != EINTR) {
            log_msg("epoll_wait: %s", strerror(errno));
            return -1;
        }
        ready = 0;  // a signal: the caller looks at stop_requested
    }
    // 2. Timers before I/O. The wait's timeout was the earliest deadline, so
    // when it ends by timeout, the timers are what woke us: they run now,
    // late by the wait's rounding only, not by a batch of I/O that could
    // take MAX_EVENTS x TURN_BYTES of broadcasts. And a session whose
    // time ran out is closed before we spend time reading it (README.md,
    // section 3).
    run_timers(now_ns());
    // 3. I/O: first the sessions that yielded last turn (their lines wait
    // in our buffers, where epoll cannot see them), then the ready sockets.
    struct session *yielded = yield_list;
    yield_list = NULL;  // session_read puts a session that yields again on a new list
    while (yielded != NULL) {
        struct session *s = yielded;
        yielded = s->yield_next;
        s->on_yield = false;
        if (s->state == S_OPEN)
            session_read(s);
    }
    for (int i = 0; i < ready; i++) {
        struct session *s = events[i].data.ptr;
        if (s == NULL)  // the listening socket's tag
            accept_clients(listen_fd);
        else
            session_io(s, events[i].events);
    }
    // 4. Who left, then the output of the whole turn; a failing send closes
    // a session, which is announced, which is output: until nothing changes.
    do {
        announce_leavers();
        flush_pending();
    } while (nleft > 0);
    // 5. Frees.
    reap_closed();
    return 0;
}

// After SIGINT/SIGTERM: accept no one, tell everyone, give the output up to
// DRAIN_NS to leave (each session also has LEAVE_NS), then close what is left.
static void drain_and_close_all(int listen_fd)
{
    stopping = true;
    if (accept_resume_at == -1 && epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == -1)
        log_msg("epoll_ctl(DEL) listening socket: %s", strerror(errno));
    accept_resume_at = -1;

    // How much was queued when the signal came: the drain test checks it
    // was more than nothing, then that it all arrived. And how much input
    // buffer the sessions held: 0 when they are idle (session_read).
    size_t pending = 0, input = 0;
    for (struct session *s = room_head; s != NULL; s = s->next) {
        pending += s->queued;
        input += s->in.cap;
    }
    log_msg("stopping: %zu session%s, %zu bytes pending, %zu bytes of input buffers, for up "
            "to %lld ms",
            nsessions, nsessions == 1 ? "" : "s", pending, input, DRAIN_NS / 1000000);

    for (struct session *s = room_head; s != NULL; s = s->next) {
        if (s->state != S_OPEN)
            continue;
        session_notice(s, "* server shutting down");
        session_leave(s, LEFT_SHUTDOWN);
    }
    yield_list = NULL;  // no more lines are handled
    do {
        announce_leavers();
        flush_pending();
    } while (nleft > 0);
    reap_closed();

    long long deadline = now_ns() + DRAIN_NS;
    while (room_head != NULL && now_ns() < deadline)
        if (loop_once(listen_fd, deadline) == -1)
            break;
    while (room_head != NULL) {
        if (room_head->queued > 0)
            log_msg("fd %d: %zu bytes still unsent, closing", room_head->fd, room_head->queued);
        session_free(room_head);
    }
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    struct options opt;
    parse_options(argc, argv, "server", &opt);
    max_output = opt.max_output;
    soft_output = opt.soft_output;
    soft_ns = opt.soft_ns;
    idle_ns = opt.idle_timeout_ns;
    broadcast = opt.broadcast;

    // Handlers first, then SIGINT and SIGTERM are delivered only inside
    // epoll_pwait() (04, epoll_once, says why).
    install_signal_handlers();
    if (block_stop_signals(&wait_mask) == -1)
        return 1;
    raise_fd_limit();

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
    // Level-triggered, as every socket here: data.ptr == NULL tags it.
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
    log_msg("chat: --max-output %zu, --soft-output %zu for %.3f s, --idle-timeout %.3f s, "
            "--broadcast %s, %d bytes of lines per session per turn",
            max_output, soft_output, soft_ns / 1e9, idle_ns / 1e9,
            broadcast == BROADCAST_SHARED ? "shared" : "copy", TURN_BYTES);

    while (ok && !stop_requested) {
        ok = loop_once(listen_fd, -1) == 0;
        resume_accepting(listen_fd);
    }

    drain_and_close_all(listen_fd);
    if (close(listen_fd) == -1) {
        log_msg("close: %s", strerror(errno));
        ok = false;
    }
    if (spare_fd != -1)
        close_or_log(spare_fd, "spare descriptor");
    close_or_log(epfd, "epoll");
    timer_heap_free(&timers);
    timer_heap_free(&soft_timers);
    log_msg("stopped after %llu epoll_wait; %llu sessions, %llu lines in, %llu deliveries, "
            "%llu dropped (too slow), %llu idle timeouts, %llu timers, %llu fairness yields, "
            "%zu peak queued bytes, %llu writes, %llu bytes copied, %llu refbufs, "
            "%llu refbufs alive, %llu soft-cap clocks, %llu cap writes, %llu lines refused, "
            "%llu recv calls",
            n_waits, n_sessions, n_lines, n_deliveries, n_slow, n_idle, n_timers, n_yields,
            peak_queued, n_writes, n_copied, n_refbufs, n_refbufs_alive, n_soft, n_cap_writes,
            n_refused, n_recvs);
    return ok ? 0 : 1;
}
