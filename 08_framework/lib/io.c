// io.c: an io loop's side of the server. It owns its connections (conn.c reads, decodes with
// each connection's codec, writes and judges the output caps), applies main's commands to them,
// and tells the main thread what happened. It never runs application code (with no io threads,
// the main loop is this loop as well).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"

// -------------------------------------------------------------------- events to main

// Appends one event (and LEN bytes of DATA) to this turn's batch. With no room (out of
// memory) the connection cannot be told about: it is closed, as a failure of its own.
int ev_push(struct io *io, uint8_t type, uint64_t id, uint8_t arg, uint16_t ftype,
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

// -------------------------------------------------------------------- commands

static void apply(struct io *io, const struct cmd *m)
{
    if (m->type == CMD_ADOPT) {
        conn_new(io, m->id, &m->u.a);
        return;
    }
    struct tnode *node = table_get(&io->conns, m->id);
    struct conn *c = node ? container_of(node, struct conn, node) : NULL;
    // A lingering one is gone for every command but the shutdown's close-now: its session's
    // output is all written (main sends nothing to a closing session anyway).
    if (c == NULL || c->state == C_DEAD || (c->state == C_LINGER && m->type != CMD_CLOSE_NOW)) {
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
    io->sweep = rx_timer_start(io->loop, every, every, conn_sweep, io);
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
