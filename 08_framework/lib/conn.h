// conn.h: what io.c and conn.c share: an io loop (struct io: io.c runs its turns, its
// commands and its life) and its connections (struct conn: conn.c reads, decodes, writes,
// judges the caps and closes them). Not installed; only these two files include it.
#ifndef RX_CONN_H
#define RX_CONN_H

#include <pthread.h>
#include <sys/types.h>

#include "internal.h"

enum conn_state {
    C_OPEN,      // reading and writing
    C_DRAINING,  // closing once its output has gone (or its drain timer fires); not reading
    C_LINGER,    // its output has gone, its write side is shut: reading and discarding until
                 // the peer's EOF, linger_bytes or linger_ms (conn.c: conn_linger)
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
    bool refused;  // its codec emitted an RX_FRAME_REFUSED frame: its close lingers
    bool more;     // its last read filled the room it had: more input may wait unread
    uint32_t lingered;  // C_LINGER: the peer's bytes discarded (saturates; in the padding)
    bool high_report;  // io_threads 0: a high water to report at the end of the turn
    bool nodelay;      // TCP_NODELAY is set (conn_flush: before its first write while open)
    uint64_t last_read_ms;  // the last read or write: for the idle timeout
    uint64_t soft_since;    // when its queue went over soft_output (0: it is not)
    rx_timer *drain_timer;  // C_DRAINING: drain_ms; C_LINGER: linger_ms
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

static inline const rx_config *cfg(const struct io *io)
{
    return &io->srv->cfg;
}

// io.c: appends one event (and LEN bytes of DATA) to this turn's batch for main. -1 when out
// of memory (the caller closes the connection it was about).
int ev_push(struct io *io, uint8_t type, uint64_t id, uint8_t arg, uint16_t ftype,
            uint64_t total, const void *data, size_t len);

// conn.c: one connection, in its io's thread.
void conn_new(struct io *io, uint64_t id, const struct adopt *a);  // takes a->fd (closes it on failure)
void conn_free(struct conn *c);   // its memory: at the end of the turn it died in
void conn_kill(struct conn *c, enum rx_close_reason why);       // closes now; freed at turn end
void conn_drain(struct conn *c, enum rx_close_reason why);      // closes once its output has gone
void conn_flush(struct conn *c);  // writes until the kernel refuses, then judges the caps
void conn_end_input(struct conn *c, enum rx_close_reason why);  // reads no more; main gets an EOF
void mark_dirty(struct io *io, struct conn *c);  // to be flushed at the end of the turn
void conn_sweep(rx_loop *loop, rx_timer *t, void *arg);  // ARG: the io; idle timeouts, soft caps

#endif
