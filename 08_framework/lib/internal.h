// internal.h: what the server's files share (main thread: server.c, session.c, listener.c,
// connector.c; an io thread: io.c and conn.c; table.c: lookup by id). Not installed.
//
// The threads talk only through two kinds of message, both batched once per loop turn:
//
//   io thread --- struct ev (frame, eof, closed, high water, drained) --->  main thread
//   io thread <-- struct cmd (adopt, send, notice, close, pause, resume) --- main thread
//
// With no io threads (io_threads 0) the main loop is also the one io loop, and neither kind
// is queued: an event is a direct call into server.c, a command a direct call into io.c.
#ifndef RX_INTERNAL_H
#define RX_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buffer.h"
#include "hop.h"
#include "loop.h"
#include "rx.h"
#include "rxbuf.h"

// ----------------------------------------------------------------- the table of ids

// A node of an id table, embedded in what it names (a session in main, a conn in an io).
struct tnode {
    uint64_t id;
    struct tnode *next;  // the bucket's chain
};
struct table {
    struct tnode **b;  // buckets: a power of two, or NULL
    size_t nb, n;
};
int table_put(struct table *t, struct tnode *node);  // 0, or -1 (ENOMEM); ids are unique
struct tnode *table_get(const struct table *t, uint64_t id);
void table_del(struct table *t, struct tnode *node);
void table_free(struct table *t);

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

// ---------------------------------------------------------------- messages

enum ev_type { EV_FRAME, EV_EOF, EV_CLOSED, EV_HIGH_WATER, EV_DRAINED };

// One event in a batch: the header, then LEN bytes of frame data, padded to 8.
struct ev {
    uint64_t id;
    uint64_t total;  // EV_FRAME: the frame's total; EV_HIGH_WATER: bytes queued
    uint32_t len;    // EV_FRAME: bytes that follow
    uint16_t ftype;  // EV_FRAME: the frame's type
    uint8_t type;    // enum ev_type
    uint8_t arg;     // EV_FRAME: flags; EV_EOF, EV_CLOSED: the reason
};

// The events an io loop gathered in one turn, handed to main in one post.
struct ev_batch {
    rx_server *srv;
    char *p;
    size_t len, cap;
};

// CMD_STOP_INPUT (the shutdown): read nothing more and answer with an EV_EOF, which main
// handles after every frame read before it: a barrier, so nothing read is left unanswered.
enum cmd_type {
    CMD_ADOPT, CMD_SEND, CMD_NOTICE, CMD_CLOSE, CMD_CLOSE_NOW, CMD_PAUSE, CMD_RESUME,
    CMD_STOP_INPUT,
};

// What an io needs to take over a connected socket.
struct adopt {
    int fd;
    const rx_codec *codec;  // lives as long as its origin (listener or connector)
};

struct cmd {
    uint64_t id;
    uint8_t type;    // enum cmd_type
    uint8_t reason;  // CMD_CLOSE, CMD_CLOSE_NOW: the reason the closed callback is told
    union {
        rx_buf *b;       // CMD_SEND, CMD_NOTICE: one reference, the io's now
        struct adopt a;  // CMD_ADOPT
    } u;
};

struct cmd_batch {
    struct io *io;
    struct cmd *v;
    size_t n, cap;
};

// ---------------------------------------------------------------- the server

// Where a session came from: the factory and codec its listener or connector was given.
struct origin {
    rx_codec codec;
    rx_factory factory;
    rx_connector *connector;  // NULL for a listener's sessions
};

enum session_state { SS_OPEN, SS_CLOSING };

struct rx_session {
    struct tnode node;  // node.id: the session's id
    rx_server *srv;
    struct io *io;
    struct origin *origin;
    void *data;
    enum session_state state;
    uint8_t close_reason;          // what was asked when it began closing
    bool opened;                   // its opened callback has run
    rx_session *prev, *next;       // the table's iteration order: opening order
    char peer[48];
};

struct io_stats {
    uint64_t accepted_conns, frames_in, bytes_in, bytes_out, reads, writes, dropped_commands;
    uint64_t too_slow, bad_frames, idle_closed, turn_yields, peak_queued, closed;
    uint64_t refused, lingered, linger_cut;
};

struct rx_server {
    rx_config cfg;
    rx_loop *loop;  // the main loop
    struct io **io;  // cfg.io_threads of them, or one (the main loop's) when it is 0
    int nio;
    unsigned next_io;  // round-robin
    uint64_t next_id;
    struct table sessions;
    rx_session *first, *last;
    size_t nsessions;
    struct listener *listeners;
    struct rx_connector *connectors;
    int sigfd;
    struct watch sigwatch;
    bool stopping;
    bool stop_forced;  // the shutdown's drain_ms has passed: closing at once
    rx_timer *stop_timer;
    void (*on_stop)(rx_server *, void *);
    void *on_stop_arg;
    struct io **dirty_io;  // ios with commands batched this turn (io threads only)
    size_t ndirty;
    rx_stats st;
};

// server.c, main thread: events from an io (direct with io_threads 0, else from a batch).
void server_on_frame(rx_server *srv, uint64_t id, const rx_frame *f);
void server_on_eof(rx_server *srv, uint64_t id, enum rx_close_reason why);
void server_on_closed(rx_server *srv, uint64_t id, enum rx_close_reason why);
void server_on_high_water(rx_server *srv, uint64_t id, size_t queued);
void server_on_drained(rx_server *srv, uint64_t id);
// session.c, main thread: a connected socket (accepted, or connected by a connector) becomes a
// session; the table (find, unlink); a command for the session's io.
rx_session *server_adopt(rx_server *srv, int fd, struct origin *o, const struct sockaddr *peer);
rx_session *session_find(const rx_server *srv, uint64_t id);  // NULL once it has closed
void session_unlink(rx_server *srv, rx_session *s);
void session_command(rx_session *s, uint8_t type, uint8_t reason, rx_buf *b);
void session_begin_close(rx_session *s, bool flush, enum rx_close_reason why);
// listener.c, main thread: stop accepting (the shutdown); free them (rx_server_free).
void close_listeners(rx_server *srv);
void free_listeners(rx_server *srv);
// hop.h: an io's channel to main (made by io_new), and its turn's events sent through it.
struct hop *server_hop_new(rx_server *srv, const char *name);
void server_post_batch(rx_server *srv, struct hop *to_main, struct ev_batch *b);

// io.c
struct io *io_new(rx_server *srv, rx_loop *loop, bool direct, int index);  // direct: main's loop
int io_start(struct io *io);   // starts its thread (not for a direct one)
void io_stop(struct io *io);   // ends its loop and joins its thread
void io_free(struct io *io);   // closes what is left, frees
rx_loop *io_loop(struct io *io);
struct hop *io_hop(struct io *io, bool to_main);  // its channel from main, or to main (NULL: direct)
bool io_direct(const struct io *io);
// Main thread: a command for IO (applied now when direct, else batched until main's turn end).
void io_command(rx_server *srv, struct io *io, const struct cmd *c);
void io_post_commands(struct io *io);  // main's turn end: the batch goes to IO's loop
void io_get_stats(const struct io *io, struct io_stats *out);
size_t io_queued_bytes(struct io *io);  // main's view at shutdown: an estimate (logged)

// connector.c
void connector_on_closed(rx_connector *c, enum rx_close_reason why);
void connector_set_session(rx_connector *c, rx_session *s);  // before create and opened run
void connector_stop_all(rx_server *srv);
void connector_free_all(rx_server *srv);

uint64_t mono_ms(void);

#endif
