// conn.c: one connection of an io loop (conn.h): reading and decoding with its codec, writing
// what main queued for it and judging the output caps on what the kernel refused, the idle
// and soft-cap sweep, and closing. Everything here runs in the io's thread (with no io
// threads, in the main loop), and nothing here frees a connection: conn_kill marks it dead and
// the end of the turn (io.c: io_turn_end) frees it.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "conn.h"


// ------------------------------------------------------------------------- lists

static void lru_unlink(struct io *io, struct conn *c)
{
    if (c->lru_prev)
        c->lru_prev->lru_next = c->lru_next;
    else if (io->lru_head == c)
        io->lru_head = c->lru_next;
    if (c->lru_next)
        c->lru_next->lru_prev = c->lru_prev;
    else if (io->lru_tail == c)
        io->lru_tail = c->lru_prev;
    c->lru_prev = c->lru_next = NULL;
}

static void lru_touch(struct io *io, struct conn *c)
{
    c->last_read_ms = rx_loop_now_ms(io->loop);
    if (io->lru_tail == c)
        return;
    lru_unlink(io, c);
    c->lru_prev = io->lru_tail;
    if (io->lru_tail)
        io->lru_tail->lru_next = c;
    else
        io->lru_head = c;
    io->lru_tail = c;
}

static void soft_unlink(struct io *io, struct conn *c)
{
    if (c->soft_since == 0)
        return;
    if (c->soft_prev)
        c->soft_prev->soft_next = c->soft_next;
    else
        io->soft_head = c->soft_next;
    if (c->soft_next)
        c->soft_next->soft_prev = c->soft_prev;
    c->soft_prev = c->soft_next = NULL;
    c->soft_since = 0;
}

void mark_dirty(struct io *io, struct conn *c)
{
    if (c->dirty || c->state == C_DEAD)
        return;
    c->dirty = true;
    c->turn_next = io->dirty;
    io->dirty = c;
}

// ------------------------------------------------------------------ closing

// Closes C now: its descriptor goes, its id leaves the table (a command that still names it
// is dropped), and main is told. The memory waits for the end of the turn.
void conn_kill(struct conn *c, enum rx_close_reason why)
{
    struct io *io = c->io;
    if (c->state == C_DEAD)
        return;
    if (c->out.n > 0 && why != RX_CLOSE_TOO_SLOW)
        rx_log(RX_LOG_DEBUG, "session %llu: %zu bytes unsent at close",
               (unsigned long long)c->node.id, c->out.bytes + c->out.notice_bytes);
    c->state = C_DEAD;
    c->reason = (uint8_t)why;
    loop_unwatch(io->loop, &c->w);
    if (close(c->w.fd) == -1)
        rx_log(RX_LOG_WARN, "session %llu: close: %s", (unsigned long long)c->node.id,
               strerror(errno));
    c->w.fd = -1;
    table_del(&io->conns, &c->node);
    lru_unlink(io, c);
    soft_unlink(io, c);
    if (c->drain_timer) {
        rx_timer_stop(io->loop, c->drain_timer);
        c->drain_timer = NULL;
    }
    // Its buffers are freed with it, at the end of the turn (conn_free): a decode loop may
    // still be walking its input (rx_session_close from inside `message` with no io threads).
    io->st.closed++;
    switch (why) {
    case RX_CLOSE_TOO_SLOW: io->st.too_slow++; break;
    case RX_CLOSE_BAD_FRAME: io->st.bad_frames++; break;
    case RX_CLOSE_IDLE: io->st.idle_closed++; break;
    default: break;
    }
    // Not yet on the dead list if it is on the dirty one: the flush skips dead ones, and
    // io_turn_end puts every dead one on the dead list (see conn_reap).
    c->turn_next = c->dirty ? c->turn_next : io->dead;
    if (!c->dirty)
        io->dead = c;
    if (!io->direct && ev_push(io, EV_CLOSED, c->node.id, (uint8_t)why, 0, 0, NULL, 0) == -1)
        rx_log(RX_LOG_ERROR, "session %llu: out of memory: main is not told it closed",
               (unsigned long long)c->node.id);
}


static void drain_expired(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    struct conn *c = arg;
    c->drain_timer = NULL;  // a one-shot timer is freed after this returns (rx.h, rule 5)
    conn_flush(c);  // what the kernel takes now still goes (drain_ms 0: before the turn's end)
    if (c->state != C_DRAINING)
        return;  // written out whole, and closed
    rx_log(RX_LOG_INFO, "session %llu: %zu bytes still unsent after %llu ms, closing",
           (unsigned long long)c->node.id, c->out.bytes + c->out.notice_bytes,
           (unsigned long long)cfg(c->io)->drain_ms);
    conn_kill(c, c->reason);
}

// Closes C once its output has gone, within drain_ms. It reads nothing more.
void conn_drain(struct conn *c, enum rx_close_reason why)
{
    struct io *io = c->io;
    if (c->state != C_OPEN)
        return;
    c->state = C_DRAINING;
    c->reason = (uint8_t)why;
    soft_unlink(io, c);  // a closing session is not judged by the caps: its timer bounds it
    // Written (and closed) at the end of this turn, with whatever else the turn queues: the
    // write is tried first, and only what the kernel refuses makes conn_flush watch for
    // WRITE (a short connection's reply goes out with no epoll_ctl). Its interest stays as
    // it was until then: no wait comes between here and the turn's end, so a READ still in
    // it cannot spin. The timer bounds only what the kernel refuses (it starts from the
    // turn's end: drain_ms 0 still writes what the kernel takes at once); with nothing
    // queued there is nothing to bound.
    mark_dirty(io, c);
    if (c->out.n == 0)
        return;
    c->drain_timer = rx_timer_start(io->loop, cfg(io)->drain_ms, 0, drain_expired, c);
    if (c->drain_timer == NULL)
        conn_kill(c, why);
}

// ------------------------------------------------------------- lingering close

static void linger_expired(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    struct conn *c = arg;
    c->drain_timer = NULL;  // one-shot: freed after this returns
    c->io->st.linger_cut++;
    rx_log(RX_LOG_INFO, "session %llu: lingering close: the peer still sending after %llu ms "
           "(%lu bytes discarded): closing", (unsigned long long)c->node.id,
           (unsigned long long)cfg(c->io)->linger_ms, (unsigned long)c->lingered);
    conn_kill(c, c->reason);
}

// Reads and discards what the peer of a lingering C sends (one read a turn, like any
// connection): its EOF ends the linger; linger_bytes cuts it.
static void linger_read(struct conn *c)
{
    struct io *io = c->io;
    ssize_t n = read(c->w.fd, io->scratch, cfg(io)->turn_bytes);
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n > 0) {
        io->st.reads++;
        io->st.bytes_in += (uint64_t)n;
        // 32 bits (struct conn's padding): past 4 GiB it stays at UINT32_MAX, over any bound.
        c->lingered = (size_t)n > UINT32_MAX - c->lingered ? UINT32_MAX : c->lingered + (uint32_t)n;
        if (c->lingered < cfg(io)->linger_bytes && c->lingered < UINT32_MAX)
            return;
        io->st.linger_cut++;
        rx_log(RX_LOG_INFO, "session %llu: lingering close: %lu bytes discarded, over "
               "linger_bytes %zu: closing", (unsigned long long)c->node.id,
               (unsigned long)c->lingered, cfg(io)->linger_bytes);
    }
    conn_kill(c, c->reason);  // EOF (the peer read our reply and closed), a bound, or an error
}

// C's output has all gone to the kernel (or there was none) and it closes. A close() with the
// peer's bytes unread makes the kernel answer with a reset, which can destroy the reply still
// in flight (a 413 while the client streams its body). So, as nginx's lingering_close and RFC
// 9112 section 9.6: when the peer may still be sending, shut the write side (the reply ends
// with our FIN) and read and discard until the peer closes, at most linger_bytes and
// linger_ms (rule 7 of rx.h). "May still be sending", as nginx judges it, with no system call:
// its codec refused its input (the peer is likely mid-body), it is mid-frame (bytes held), or
// its last read filled what it asked for (more may wait). A short connection, whose request
// came in a read with room to spare, closes at once. Runs at a turn's end or from a timer,
// never inside a decode (linger_read reads into the io's scratch).
static void conn_finish(struct conn *c)
{
    struct io *io = c->io;
    const rx_config *k = cfg(io);
    if (c->eof || k->linger_ms == 0 || k->linger_bytes == 0 ||
        !(c->refused || c->more || buf_len(&c->in) > 0)) {
        conn_kill(c, c->reason);
        return;
    }
    if (c->drain_timer) {
        rx_timer_stop(io->loop, c->drain_timer);
        c->drain_timer = NULL;
    }
    if (shutdown(c->w.fd, SHUT_WR) == -1 || loop_rewatch(io->loop, &c->w, LOOP_READ) == -1 ||
        (c->drain_timer = rx_timer_start(io->loop, k->linger_ms, 0, linger_expired, c)) == NULL) {
        conn_kill(c, c->reason);
        return;
    }
    c->state = C_LINGER;
    io->st.lingered++;
    rx_log(RX_LOG_DEBUG, "session %llu: lingering close", (unsigned long long)c->node.id);
}

// ---------------------------------------------------------------------- writing

// Writes what C has queued until the kernel refuses, then judges the caps on what is left:
// a reader that keeps up never meets them, however much one turn queued for it.
void conn_flush(struct conn *c)
{
    struct io *io = c->io;
    const rx_config *k = cfg(io);
    if (c->high_report) {  // io_threads 0 (see apply): the callback runs here, not in rx_send
        c->high_report = false;
        server_on_high_water(io->srv, c->node.id, c->out.bytes + c->out.notice_bytes);
        if (c->state == C_DEAD)
            return;
    }
    // Replies written in pieces must not wait for the peer's delayed ACK: TCP_NODELAY, set
    // before the first write of a connection that stays open (as nginx's tcp_nodelay, for
    // keep-alive connections only). One answered and closed (Connection: close) goes without
    // it and saves the system call: nothing follows its answer but the FIN, and the close
    // sends a segment Nagle held back at once.
    if (!c->nodelay && c->out.n > 0 && c->state == C_OPEN) {
        int one = 1;
        c->nodelay = true;
        if (setsockopt(c->w.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1)
            rx_log(RX_LOG_WARN, "session %llu: setsockopt(TCP_NODELAY): %s",
                   (unsigned long long)c->node.id, strerror(errno));
    }
    while (c->out.n > 0) {
        struct iovec iov[64];
        size_t n = c->out.n < 64 ? c->out.n : 64, want = 0;
        for (size_t i = 0; i < n; i++) {
            struct out_entry *e = outq_at(&c->out, i);
            iov[i].iov_base = e->b->data + e->off;
            iov[i].iov_len = e->b->len - e->off;
            want += iov[i].iov_len;
        }
        ssize_t w = writev(c->w.fd, iov, (int)n);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_kill(c, errno == EPIPE || errno == ECONNRESET ? RX_CLOSE_RESET : RX_CLOSE_ERROR);
            return;
        }
        io->st.writes++;
        io->st.bytes_out += (uint64_t)w;
        if (k->idle_ms > 0 && w > 0 && c->state == C_OPEN)
            lru_touch(io, c);  // a peer taking a long reply is not idle
        outq_consume(&c->out, (size_t)w);
        if ((size_t)w < want)
            break;  // the kernel took part: it is full, another writev would say EAGAIN
    }
    size_t queued = c->out.bytes;
    if (queued + c->out.notice_bytes > io->st.peak_queued)
        io->st.peak_queued = queued + c->out.notice_bytes;
    if (c->out.n == 0 && c->state == C_DRAINING) {
        conn_finish(c);
        return;
    }
    // WRITE only while the kernel refuses bytes; READ while open, unpaused and before EOF (a
    // closing one reads nothing: a READ left in would spin the level-triggered loop). No
    // system call when that is what it watches already (loop_rewatch).
    bool reading = c->state == C_OPEN && !c->paused && !c->eof;
    unsigned want = (c->out.n > 0 ? LOOP_WRITE : 0) | (reading ? LOOP_READ : 0);
    if (loop_rewatch(io->loop, &c->w, want) == -1) {
        conn_kill(c, RX_CLOSE_ERROR);
        return;
    }
    if (c->state != C_OPEN)
        return;
    if (k->max_output > 0 && queued > k->max_output) {
        rx_log(RX_LOG_INFO, "session %llu: %zu bytes queued after a write, over max_output %zu",
               (unsigned long long)c->node.id, queued, k->max_output);
        conn_kill(c, RX_CLOSE_TOO_SLOW);
        return;
    }
    if (k->soft_ms > 0 && queued > k->soft_output) {
        if (c->soft_since == 0) {  // the clock starts
            c->soft_since = rx_loop_now_ms(io->loop);
            c->soft_prev = NULL;
            c->soft_next = io->soft_head;
            if (io->soft_head)
                io->soft_head->soft_prev = c;
            io->soft_head = c;
        }
    } else {
        soft_unlink(io, c);  // under it again: the clock stops
    }
    if (c->high && c->out.n == 0) {  // written out whole after a high water
        c->high = false;  // the next crossing is reported again
        if (io->direct)
            server_on_drained(io->srv, c->node.id);
        else
            ev_push(io, EV_DRAINED, c->node.id, 0, 0, 0, NULL, 0);
    }
}

// ---------------------------------------------------------------------- reading


static int conn_emit(void *ctx, const rx_frame *f)
{
    struct conn *c = ctx;
    struct io *io = c->io;
    if (c->state != C_OPEN)
        return -1;  // closed from a callback: nothing more is delivered
    if (f->flags & RX_FRAME_LAST)
        io->st.frames_in++;
    if (f->flags & RX_FRAME_REFUSED) {
        c->refused = true;  // the peer may well keep sending: the close will linger
        io->st.refused++;
    }
    if (io->direct) {
        server_on_frame(io->srv, c->node.id, f);
        return c->state == C_OPEN ? 0 : -1;  // closed from the callback: decode no further
    }
    if (ev_push(io, EV_FRAME, c->node.id, (uint8_t)f->flags, f->type, f->total, f->data,
                f->len) == -1) {
        rx_log(RX_LOG_ERROR, "session %llu: out of memory for a frame", (unsigned long long)c->node.id);
        conn_kill(c, RX_CLOSE_ERROR);
        return -1;
    }
    return 0;
}

// Decodes IN[0..LEN) and returns how many bytes are left over (to keep), or -1 when C closed.
// How much input a connection may hold: a partial frame, bounded by the codec (max_frame, or
// chunk when it streams; a codec that does not stream may leave chunk 0), plus a header.
static size_t input_limit(const rx_codec *k)
{
    size_t cap = k->chunk == 0 || k->max_frame < k->chunk ? k->max_frame : k->chunk;
    return cap > SIZE_MAX - RX_HEAD_MAX - 1 ? SIZE_MAX : cap + RX_HEAD_MAX + 1;
}

// Keeps the LEN bytes of a partial frame at P in C's (empty) input buffer, within its limit.
static int keep_partial(struct conn *c, const char *p, size_t len)
{
    size_t room;
    char *dst = buf_reserve_capped(&c->in, len, input_limit(c->codec), &room);
    if (dst == NULL || room < len) {
        rx_log(RX_LOG_ERROR, "session %llu: %s", (unsigned long long)c->node.id,
               dst == NULL ? "out of memory for input" : "input over the codec's limit");
        conn_kill(c, dst == NULL ? RX_CLOSE_ERROR : RX_CLOSE_BAD_FRAME);
        return -1;
    }
    memcpy(dst, p, len);
    buf_commit(&c->in, len);
    return 0;
}

static ssize_t conn_decode(struct conn *c, const char *in, size_t len)
{
    ssize_t used = c->codec->decode(c->codec, c->cstate, in, len, conn_emit, c);
    if (c->state != C_OPEN)
        return -1;
    if (used < 0) {
        rx_log(RX_LOG_INFO, "session %llu: bad frame (%s codec): closing",
               (unsigned long long)c->node.id, c->codec->name);
        conn_kill(c, RX_CLOSE_BAD_FRAME);
        return -1;
    }
    return (ssize_t)len - used;
}

static void conn_read(struct conn *c)
{
    struct io *io = c->io;
    size_t budget = cfg(io)->turn_bytes;
    bool idle = buf_len(&c->in) == 0;
    char *p;
    size_t room;
    if (idle) {  // the common case: read into the loop's scratch, keep only a partial frame
        p = io->scratch;
        room = budget;
    } else {
        p = buf_reserve_capped(&c->in, budget, input_limit(c->codec), &room);
        if (p == NULL || room == 0) {
            rx_log(RX_LOG_ERROR, "session %llu: %s", (unsigned long long)c->node.id,
                   p == NULL ? "out of memory for input" : "input over the codec's limit");
            conn_kill(c, p == NULL ? RX_CLOSE_ERROR : RX_CLOSE_BAD_FRAME);
            return;
        }
        if (room > budget)
            room = budget;
    }
    ssize_t n = read(c->w.fd, p, room);
    if (n > 0) {
        c->more = (size_t)n == room;  // a full read: more may wait in the kernel (conn_finish)
        io->st.reads++;
        io->st.bytes_in += (size_t)n;
        if ((size_t)n == budget)
            io->st.turn_yields++;  // there may be more: level-triggered, it is read next turn
        if (cfg(io)->idle_ms > 0)
            lru_touch(io, c);
        if (idle) {
            ssize_t left = conn_decode(c, p, (size_t)n);
            if (left > 0)
                keep_partial(c, p + n - left, (size_t)left);
        } else {
            buf_commit(&c->in, (size_t)n);
            size_t have = buf_len(&c->in);
            ssize_t left = conn_decode(c, buf_peek(&c->in), have);
            if (left >= 0)
                buf_consume(&c->in, have - (size_t)left);
        }
        return;
    }
    if (n == 0) {  // EOF: what was decoded is delivered; main closes it after its replies
        conn_end_input(c, RX_CLOSE_PEER);
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return;
    conn_kill(c, errno == ECONNRESET ? RX_CLOSE_RESET : RX_CLOSE_ERROR);
}

// No more reading from C: the peer's EOF (PEER), or the shutdown's barrier (SHUTDOWN). Main
// gets an EV_EOF after every frame read before it, answers them, and closes with WHY.
void conn_end_input(struct conn *c, enum rx_close_reason why)
{
    struct io *io = c->io;
    c->eof = true;
    if (loop_rewatch(io->loop, &c->w, c->out.n > 0 ? LOOP_WRITE : 0) == -1) {
        conn_kill(c, RX_CLOSE_ERROR);
        return;
    }
    if (io->direct)
        server_on_eof(io->srv, c->node.id, why);
    else if (ev_push(io, EV_EOF, c->node.id, (uint8_t)why, 0, 0, NULL, 0) == -1)
        conn_kill(c, RX_CLOSE_ERROR);
}

static void conn_ready(struct watch *w, unsigned ready)
{
    struct conn *c = container_of(w, struct conn, w);
    if ((ready & LOOP_READ) && c->state == C_OPEN && !c->paused && !c->eof)
        conn_read(c);
    else if ((ready & LOOP_READ) && c->state == C_LINGER)
        linger_read(c);
    if ((ready & LOOP_WRITE) && c->state != C_DEAD)
        mark_dirty(c->io, c);  // written at the end of the turn, with what the turn adds
}

// ------------------------------------------------------------------ opening

struct late_close {
    rx_server *srv;
    uint64_t id;
};

static void report_late_close(void *arg)
{
    struct late_close *lc = arg;
    server_on_closed(lc->srv, lc->id, RX_CLOSE_ERROR);
    free(lc);
}

void conn_new(struct io *io, uint64_t id, const struct adopt *a)
{
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        goto fail;
    c->w.fd = a->fd;
    c->w.cb = conn_ready;
    c->node.id = id;
    c->io = io;
    c->codec = a->codec;
    if (a->codec->create && (c->cstate = a->codec->create(a->codec)) == NULL)
        goto fail;
    if (table_put(&io->conns, &c->node) == -1)
        goto fail;
    if (loop_watch(io->loop, &c->w, LOOP_READ) == -1) {
        table_del(&io->conns, &c->node);
        goto fail;
    }
    io->st.accepted_conns++;
    if (cfg(io)->idle_ms > 0)
        lru_touch(io, c);
    return;
fail:
    rx_log(RX_LOG_ERROR, "session %llu: cannot take its connection: %s", (unsigned long long)id,
           strerror(errno ? errno : ENOMEM));
    if (c && c->cstate)
        a->codec->destroy(c->cstate);
    free(c);
    close(a->fd);
    if (!io->direct) {
        ev_push(io, EV_CLOSED, id, RX_CLOSE_ERROR, 0, 0, NULL, 0);
        return;
    }
    // No io threads: this runs inside server_adopt, before the session's opened callback;
    // its close is reported in a later turn, as rule 1 wants (a task of the main loop).
    struct late_close *lc = malloc(sizeof *lc);
    if (lc == NULL || rx_loop_post(io->loop, report_late_close, lc) == -1) {
        free(lc);
        rx_log(RX_LOG_ERROR, "session %llu: out of memory: its close is never reported",
               (unsigned long long)id);
        return;
    }
    *lc = (struct late_close){io->srv, id};
}

// ------------------------------------------------------------ the sweep, freeing

void conn_sweep(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)t;
    struct io *io = arg;
    uint64_t now = rx_loop_now_ms(loop);
    const rx_config *k = cfg(io);
    if (k->idle_ms > 0) {
        while (io->lru_head && now - io->lru_head->last_read_ms >= k->idle_ms) {
            struct conn *c = io->lru_head;
            lru_unlink(io, c);
            if (c->state != C_OPEN)
                continue;
            rx_log(RX_LOG_INFO, "session %llu: nothing read or written for %llu ms: idle timeout",
                   (unsigned long long)c->node.id, (unsigned long long)(now - c->last_read_ms));
            conn_drain(c, RX_CLOSE_IDLE);  // counted by conn_kill, when it closes
        }
    }
    for (struct conn *c = io->soft_head, *next; c != NULL; c = next) {
        next = c->soft_next;
        if (now - c->soft_since >= k->soft_ms) {
            rx_log(RX_LOG_INFO, "session %llu: over soft_output %zu for %llu ms: too slow",
                   (unsigned long long)c->node.id, k->soft_output,
                   (unsigned long long)(now - c->soft_since));
            conn_kill(c, RX_CLOSE_TOO_SLOW);
        }
    }
}

void conn_free(struct conn *c)
{
    outq_free(&c->out);
    buf_free(&c->in);
    if (c->cstate)
        c->codec->destroy(c->cstate);
    free(c);
}
