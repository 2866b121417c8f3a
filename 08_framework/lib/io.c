// io.c: an io loop's side of the server. It owns its connections: it reads, decodes with each
// connection's codec, writes, judges the output caps, and tells the main thread what happened.
// It never runs application code (with no io threads, the main loop is this loop as well).
//
// A turn of an io loop, and the one idea of this file: a turn only marks and queues; its end
// writes, frees and reports. Nothing is freed in the middle of a turn, so no pointer held by a
// caller further up the stack (a decode loop, an application callback) can dangle.
//   1. ready sockets are read (at most turn_bytes each) and decoded; each frame becomes an
//      event for main (or, with no io threads, a direct call of the message callback);
//   2. tasks: command batches from main are applied (queue output, close, pause);
//   3. timers: the sweep (idle timeouts, soft caps), drain deadlines;
//   4. the end of the turn (io_turn_end): every connection with new output is written once
//      (one writev, whatever the turn queued: coalescing is never capped), the caps are judged
//      on what the kernel refused, the connections closed this turn are freed, and the turn's
//      events go to main in one post.
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

enum conn_state {
    C_OPEN,      // reading and writing
    C_DRAINING,  // closing once its output has gone (or its drain timer fires); not reading
    C_DEAD,      // closed: its descriptor is gone, it is freed at the end of the turn
};

struct conn {
    struct watch w;  // w.fd: the socket
    struct tnode node;
    struct io *io;
    const rx_codec *codec;
    void *cstate;  // the codec's per-connection state
    struct buffer in;  // bytes read, not yet a whole frame (empty, and unallocated, when idle)
    struct outq out;
    enum conn_state state;
    uint8_t reason;  // C_DRAINING, C_DEAD: why it closes
    bool paused, eof, dirty, high;
    bool high_report;  // io_threads 0: a high water to report at the end of the turn
    uint64_t last_read_ms;  // for the idle timeout
    uint64_t soft_since;    // when its queue went over soft_output (0: it is not)
    rx_timer *drain_timer;
    struct conn *lru_prev, *lru_next;    // least recently read first (the idle sweep)
    struct conn *soft_prev, *soft_next;  // over soft_output now
    struct conn *turn_next;              // on the dirty or the dead list
};

struct io {
    rx_server *srv;
    rx_loop *loop;
    bool direct;  // the main loop: events are calls, commands are applied at once
    char name[16];
    pthread_t thread;
    bool started;
    struct table conns;
    char *scratch;  // turn_bytes: an idle connection is read here, not into a buffer of its own
    struct conn *dirty, *dead;
    struct conn *lru_head, *lru_tail;
    struct conn *soft_head;
    rx_timer *sweep;
    struct ev_batch *ev;     // this turn's events for main (io threads only)
    struct cmd_batch *cmds;  // main's commands for this io, this turn (main thread's)
    struct hop *in, *out;    // hop.h: main's command batches to it, its event batches to main
    struct io_stats st;
};

static const rx_config *cfg(const struct io *io)
{
    return &io->srv->cfg;
}

// -------------------------------------------------------------------- events to main

// Appends one event (and LEN bytes of DATA) to this turn's batch. With no room (out of
// memory) the connection cannot be told about: it is closed, as a failure of its own.
static int ev_push(struct io *io, uint8_t type, uint64_t id, uint8_t arg, uint16_t ftype,
                   uint64_t total, const void *data, size_t len)
{
    struct ev_batch *b = io->ev;
    if (b == NULL) {
        b = calloc(1, sizeof *b);
        if (b == NULL)
            return -1;
        b->srv = io->srv;
        io->ev = b;
    }
    size_t need = sizeof(struct ev) + ((len + 7) & ~(size_t)7);
    if (b->cap - b->len < need) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < need)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    struct ev *e = (struct ev *)(b->p + b->len);
    *e = (struct ev){.id = id, .total = total, .len = (uint32_t)len, .ftype = ftype,
                     .type = type, .arg = arg};
    if (len > 0)
        memcpy(e + 1, data, len);
    b->len += need;
    return 0;
}

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

static void mark_dirty(struct io *io, struct conn *c)
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
static void conn_kill(struct conn *c, enum rx_close_reason why)
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

static void conn_flush(struct conn *c);

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
static void conn_drain(struct conn *c, enum rx_close_reason why)
{
    struct io *io = c->io;
    if (c->state != C_OPEN)
        return;
    c->state = C_DRAINING;
    c->reason = (uint8_t)why;
    soft_unlink(io, c);  // a closing session is not judged by the caps: its timer bounds it
    if (c->out.n == 0) {
        conn_kill(c, why);
        return;
    }
    if (loop_rewatch(io->loop, &c->w, LOOP_WRITE) == -1) {
        conn_kill(c, RX_CLOSE_ERROR);
        return;
    }
    // Written at the end of this turn, with whatever else the turn queues; the timer bounds
    // only what the kernel then refuses (it starts from the turn's end: drain_ms 0 still
    // writes what the kernel takes at once).
    mark_dirty(io, c);
    c->drain_timer = rx_timer_start(io->loop, cfg(io)->drain_ms, 0, drain_expired, c);
    if (c->drain_timer == NULL)
        conn_kill(c, why);
}

// ---------------------------------------------------------------------- writing

// Writes what C has queued until the kernel refuses, then judges the caps on what is left:
// a reader that keeps up never meets them, however much one turn queued for it.
static void conn_flush(struct conn *c)
{
    struct io *io = c->io;
    const rx_config *k = cfg(io);
    if (c->high_report) {  // io_threads 0 (see apply): the callback runs here, not in rx_send
        c->high_report = false;
        server_on_high_water(io->srv, c->node.id, c->out.bytes + c->out.notice_bytes);
        if (c->state == C_DEAD)
            return;
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
    if (c->out.n == 0) {
        if (c->state == C_DRAINING) {
            conn_kill(c, c->reason);
            return;
        }
        if ((c->w.events & LOOP_WRITE) &&
            loop_rewatch(io->loop, &c->w, c->paused || c->eof ? 0 : LOOP_READ) == -1) {
            conn_kill(c, RX_CLOSE_ERROR);
            return;
        }
    } else if (!(c->w.events & LOOP_WRITE)) {
        unsigned ev = LOOP_WRITE | (c->state == C_OPEN && !c->paused && !c->eof ? LOOP_READ : 0);
        if (loop_rewatch(io->loop, &c->w, ev) == -1) {
            conn_kill(c, RX_CLOSE_ERROR);
            return;
        }
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

static void conn_end_input(struct conn *c, enum rx_close_reason why);

static int conn_emit(void *ctx, const rx_frame *f)
{
    struct conn *c = ctx;
    struct io *io = c->io;
    if (c->state != C_OPEN)
        return -1;  // closed from a callback: nothing more is delivered
    if (f->flags & RX_FRAME_LAST)
        io->st.frames_in++;
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
static void conn_end_input(struct conn *c, enum rx_close_reason why)
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
    if ((ready & LOOP_WRITE) && c->state != C_DEAD)
        mark_dirty(c->io, c);  // written at the end of the turn, with what the turn adds
}

// -------------------------------------------------------------------- commands

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

static void conn_new(struct io *io, uint64_t id, const struct adopt *a)
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

static void apply(struct io *io, const struct cmd *m)
{
    if (m->type == CMD_ADOPT) {
        conn_new(io, m->id, &m->u.a);
        return;
    }
    struct tnode *node = table_get(&io->conns, m->id);
    struct conn *c = node ? container_of(node, struct conn, node) : NULL;
    if (c == NULL || (c->state == C_DEAD)) {
        // Gone (rule 3): its id is in no table, so nothing reaches the descriptor number
        // that a newer connection may have been given.
        io->st.dropped_commands++;
        if (m->type == CMD_SEND || m->type == CMD_NOTICE)
            rxbuf_release(m->u.b);
        return;
    }
    switch (m->type) {
    case CMD_SEND:
    case CMD_NOTICE:
        if (c->state == C_DEAD || outq_push(&c->out, m->u.b, m->type == CMD_NOTICE) == -1) {
            rxbuf_release(m->u.b);
            if (c->state != C_DEAD)
                conn_kill(c, RX_CLOSE_ERROR);
            return;
        }
        mark_dirty(io, c);
        size_t hw = cfg(io)->high_water;
        if (hw > 0 && !c->high && c->out.bytes + c->out.notice_bytes >= hw) {
            c->high = true;
            size_t q = c->out.bytes + c->out.notice_bytes;
            if (io->direct)
                c->high_report = true;  // from conn_flush, at the turn's end: never nested in rx_send
            else
                ev_push(io, EV_HIGH_WATER, c->node.id, 0, 0, q, NULL, 0);
        }
        break;
    case CMD_CLOSE:
        conn_drain(c, m->reason);
        break;
    case CMD_CLOSE_NOW:
        conn_kill(c, m->reason);
        break;
    case CMD_STOP_INPUT:
        if (c->state == C_OPEN && !c->eof)
            conn_end_input(c, m->reason);
        break;  // its EOF is on its way to main already
    case CMD_PAUSE:
    case CMD_RESUME:
        c->paused = m->type == CMD_PAUSE;
        if (c->state == C_OPEN && !c->eof &&
            loop_rewatch(io->loop, &c->w,
                         (c->paused ? 0 : LOOP_READ) | (c->out.n > 0 ? LOOP_WRITE : 0)) == -1)
            conn_kill(c, RX_CLOSE_ERROR);
        break;
    default:
        break;
    }
}

static void apply_batch(void *arg)
{
    struct cmd_batch *b = arg;
    for (size_t i = 0; i < b->n; i++)
        apply(b->io, &b->v[i]);
    free(b->v);
    free(b);
}

void io_command(rx_server *srv, struct io *io, const struct cmd *m)
{
    if (io->direct) {
        apply(io, m);
        return;
    }
    struct cmd_batch *b = io->cmds;
    if (b == NULL) {
        b = calloc(1, sizeof *b);
        if (b == NULL)
            goto oom;
        b->io = io;
        io->cmds = b;
        srv->dirty_io[srv->ndirty++] = io;  // posted at the end of main's turn
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        struct cmd *v = realloc(b->v, cap * sizeof *v);
        if (v == NULL)
            goto oom;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = *m;
    return;
oom:
    rx_log(RX_LOG_ERROR, "session %llu: out of memory for a command: dropped",
           (unsigned long long)m->id);
    if (m->type == CMD_SEND || m->type == CMD_NOTICE)
        rxbuf_release(m->u.b);
    if (m->type == CMD_ADOPT)
        close(m->u.a.fd);
}

void io_post_commands(struct io *io)
{
    struct cmd_batch *b = io->cmds;
    if (b == NULL)
        return;
    io->cmds = NULL;
    if (hop_send(io->in, b) == -1) {  // hop.h: the task queue or a ring, by the build
        rx_log(RX_LOG_ERROR, "%s: out of memory posting %zu commands: applied late", io->name, b->n);
        io->cmds = b;  // kept for the next turn
        io->srv->dirty_io[io->srv->ndirty++] = io;
    }
}

// ---------------------------------------------------------------------- the turn

static void sweep(rx_loop *loop, rx_timer *t, void *arg)
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
            rx_log(RX_LOG_INFO, "session %llu: nothing read for %llu ms: idle timeout",
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

static void conn_free(struct conn *c)
{
    outq_free(&c->out);
    buf_free(&c->in);
    if (c->cstate)
        c->codec->destroy(c->cstate);
    free(c);
}

// The end of every turn of this loop (see the top of the file).
static void io_turn_end(void *arg)
{
    struct io *io = arg;
    // Rounds: with no io threads a closed callback may queue output or close others.
    while (io->dirty || io->dead) {
        struct conn *c = io->dirty;
        io->dirty = NULL;
        while (c != NULL) {
            struct conn *next = c->turn_next;
            c->dirty = false;
            if (c->state == C_DEAD) {
                c->turn_next = io->dead;  // killed while on the dirty list
                io->dead = c;
            } else {
                conn_flush(c);
            }
            c = next;
        }
        c = io->dead;
        io->dead = NULL;
        while (c != NULL) {
            struct conn *next = c->turn_next;
            uint64_t id = c->node.id;
            enum rx_close_reason why = c->reason;
            // Freed first: its codec lives in its origin, which a connector's closed callback
            // may free (rx_connector_free from `closed`).
            conn_free(c);
            if (io->direct)
                server_on_closed(io->srv, id, why);
            c = next;
        }
        if (!io->direct)
            break;  // an io thread runs no callbacks: nothing can have been added
    }
    if (io->ev != NULL) {
        struct ev_batch *b = io->ev;
        io->ev = NULL;
        server_post_batch(io->srv, io->out, b);
    }
}

// ------------------------------------------------------------------------- life

struct io *io_new(rx_server *srv, rx_loop *loop, bool direct, int index)
{
    struct io *io = calloc(1, sizeof *io);
    if (io == NULL)
        return NULL;
    io->srv = srv;
    io->loop = loop;
    io->direct = direct;
    snprintf(io->name, sizeof io->name, direct ? "main" : "io-%d", index);
    io->scratch = malloc(srv->cfg.turn_bytes);
    if (io->scratch == NULL) {
        free(io);
        return NULL;
    }
    // Its two channels (hop.h), made before either thread runs.
    if (!direct) {
        char name[24];
        snprintf(name, sizeof name, "main>io-%d", index);
        io->in = hop_new(HOP_DEFAULT, loop, apply_batch, 0, name);
        snprintf(name, sizeof name, "io-%d>main", index);
        io->out = io->in ? server_hop_new(srv, name) : NULL;
        if (io->out == NULL) {
            hop_free(io->in);
            free(io->scratch);
            free(io);
            return NULL;
        }
    }
    loop_on_turn_end(loop, io_turn_end, io);
    return io;
}

// The sweep (idle timeouts and soft caps) runs a few times per the shorter of the two, so a
// timeout fires late by at most an eighth of itself (and at least every 250 ms).
static int start_sweep(struct io *io)
{
    const rx_config *k = cfg(io);
    uint64_t every = 0;
    if (k->idle_ms > 0)
        every = k->idle_ms;
    if (k->soft_ms > 0 && (every == 0 || k->soft_ms < every))
        every = k->soft_ms;
    if (every == 0)
        return 0;
    every /= 8;
    every = every < 5 ? 5 : every > 250 ? 250 : every;
    io->sweep = rx_timer_start(io->loop, every, every, sweep, io);
    return io->sweep ? 0 : -1;
}

static void *io_main(void *arg)
{
    struct io *io = arg;
    rx_thread_set_name(io->name);
    loop_bind_thread(io->loop);
    if (start_sweep(io) == -1)
        rx_log(RX_LOG_ERROR, "%s: cannot start its sweep timer: no idle timeouts", io->name);
    if (loop_run(io->loop) == -1)
        rx_log(RX_LOG_ERROR, "%s: its loop failed", io->name);
    if (io->sweep)
        rx_timer_stop(io->loop, io->sweep);
    io->sweep = NULL;
    return NULL;
}

int io_start(struct io *io)
{
    if (io->direct)
        return start_sweep(io);
    int err = pthread_create(&io->thread, NULL, io_main, io);
    if (err != 0) {
        rx_log(RX_LOG_ERROR, "%s: pthread_create: %s", io->name, strerror(err));
        return -1;
    }
    io->started = true;
    return 0;
}

void io_stop(struct io *io)
{
    if (io->direct) {
        if (io->sweep)
            rx_timer_stop(io->loop, io->sweep);
        io->sweep = NULL;
        return;
    }
    if (!io->started)
        return;
    loop_stop(io->loop);
    int err = pthread_join(io->thread, NULL);
    if (err != 0)
        rx_log(RX_LOG_ERROR, "%s: pthread_join: %s", io->name, strerror(err));
    io->started = false;
}

// After its thread has ended (or, direct, after the main loop has): whatever is left is
// closed without telling anyone (the server has given up on it: its deadline passed).
void io_free(struct io *io)
{
    if (io == NULL)
        return;
    for (size_t i = 0; i < io->conns.nb; i++) {
        struct tnode *n = io->conns.b[i], *next;
        for (; n != NULL; n = next) {
            next = n->next;
            struct conn *c = container_of(n, struct conn, node);
            loop_unwatch(io->loop, &c->w);
            close(c->w.fd);
            conn_free(c);
        }
    }
    for (struct conn *c = io->dead, *next; c != NULL; c = next) {
        next = c->turn_next;
        conn_free(c);
    }
    table_free(&io->conns);
    if (io->ev) {
        free(io->ev->p);
        free(io->ev);
    }
    if (io->cmds) {
        for (size_t i = 0; i < io->cmds->n; i++) {
            struct cmd *m = &io->cmds->v[i];
            if (m->type == CMD_SEND || m->type == CMD_NOTICE)
                rxbuf_release(m->u.b);
            else if (m->type == CMD_ADOPT)
                close(m->u.a.fd);
        }
        free(io->cmds->v);
        free(io->cmds);
    }
    hop_free(io->in);  // drained by rx_server_run's cleanup
    hop_free(io->out);
    free(io->scratch);
    free(io);
}

rx_loop *io_loop(struct io *io)
{
    return io->loop;
}

struct hop *io_hop(struct io *io, bool to_main)
{
    return to_main ? io->out : io->in;
}

bool io_direct(const struct io *io)
{
    return io->direct;
}

void io_get_stats(const struct io *io, struct io_stats *out)
{
    *out = io->st;
}

