// server.c: the main thread's side. It accepts, owns the session table, runs every
// application callback, turns rx_send and rx_session_close into commands for the io that owns
// the connection, and shuts everything down on SIGINT/SIGTERM.
//
// A turn of the main loop (with io threads):
//   1. the listener and the signalfd are handled; accepted sockets become sessions (opened
//      callbacks run) and are handed to io threads round-robin;
//   2. tasks: the event batches the io threads posted are dispatched, in order, each event
//      to its session's callback (a session closed meanwhile is skipped: its id is gone);
//   3. timers (the application's, the shutdown's deadline);
//   4. the end of the turn (server_turn_end): the commands the callbacks produced go to each
//      io in one post per io, so a broadcast to 1000 sessions costs each io one wakeup.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

struct listener {
    struct watch w;
    rx_server *srv;
    struct origin origin;
    int spare_fd;  // kept open for EMFILE (see accept_ready)
    struct listener *next;
};

uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

rx_config rx_config_default(void)
{
    return (rx_config){
        .io_threads = 0,
        .max_output = 64u << 20,
        .soft_output = 8u << 20,
        .soft_ms = 10000,
        .high_water = 0,
        .idle_ms = 0,
        .drain_ms = 1500,
        .turn_bytes = 64u << 10,
    };
}

const char *rx_close_reason_name(enum rx_close_reason why)
{
    static const char *const names[] = {"peer", "reset", "error", "idle timeout",
                                        "too slow", "bad frame", "shutdown", "local"};
    return (unsigned)why < sizeof names / sizeof names[0] ? names[why] : "?";
}

// ---------------------------------------------------------------------- sessions

static rx_session *find(const rx_server *srv, uint64_t id)
{
    struct tnode *n = table_get(&srv->sessions, id);
    return n ? container_of(n, rx_session, node) : NULL;
}

rx_session *rx_session_find(rx_server *srv, uint64_t id)
{
    return find(srv, id);
}
rx_session *rx_session_first(rx_server *srv) { return srv->first; }
rx_session *rx_session_next(rx_session *s) { return s->next; }
size_t rx_session_count(const rx_server *srv) { return srv->nsessions; }
uint64_t rx_session_id(const rx_session *s) { return s->node.id; }
void *rx_session_data(const rx_session *s) { return s->data; }
const char *rx_session_peer(const rx_session *s) { return s->peer; }
const rx_codec *rx_session_codec(const rx_session *s) { return &s->origin->codec; }
bool rx_session_closing(const rx_session *s) { return s->state != SS_OPEN; }

static void command(rx_session *s, uint8_t type, uint8_t reason, rx_buf *b)
{
    struct cmd m = {.id = s->node.id, .type = type, .reason = reason};
    m.u.b = b;
    io_command(s->srv, s->io, &m);
}

int rx_send_buf(rx_session *s, rx_buf *b)
{
    if (s->state != SS_OPEN)
        return -1;
    rxbuf_hold(b);
    command(s, CMD_SEND, 0, b);
    return 0;
}

int rx_send_notice(rx_session *s, rx_buf *b)
{
    if (s->state != SS_OPEN)
        return -1;
    rxbuf_hold(b);
    command(s, CMD_NOTICE, 0, b);
    return 0;
}

int rx_send_typed(rx_session *s, uint16_t type, const void *msg, size_t len)
{
    if (s->state != SS_OPEN)
        return -1;
    rx_buf *b = rx_buf_frame(&s->origin->codec, type, msg, len);
    if (b == NULL)
        return -1;
    command(s, CMD_SEND, 0, b);  // the new buffer's one reference moves to the io
    return 0;
}

int rx_send(rx_session *s, const void *msg, size_t len)
{
    return rx_send_typed(s, 0, msg, len);
}

static void begin_close(rx_session *s, bool flush, enum rx_close_reason why)
{
    if (s->state != SS_OPEN)
        return;
    s->state = SS_CLOSING;
    s->close_reason = (uint8_t)why;
    command(s, flush ? CMD_CLOSE : CMD_CLOSE_NOW, (uint8_t)why, NULL);
}

void rx_session_close(rx_session *s, bool flush)
{
    begin_close(s, flush, RX_CLOSE_LOCAL);
}

void rx_session_pause(rx_session *s)
{
    if (s->state == SS_OPEN)
        command(s, CMD_PAUSE, 0, NULL);
}

void rx_session_resume(rx_session *s)
{
    if (s->state == SS_OPEN)
        command(s, CMD_RESUME, 0, NULL);
}

static void format_peer(const struct sockaddr *sa, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
        snprintf(out, size, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
        snprintf(out, size, "[%s]:%d", host, port);
    } else {
        snprintf(out, size, "?");
    }
}

rx_session *server_adopt(rx_server *srv, int fd, struct origin *o, const struct sockaddr *peer)
{
    rx_session *s = calloc(1, sizeof *s);
    if (s != NULL) {
        s->node.id = ++srv->next_id;  // 64 bits: never wraps, so never reused
        if (table_put(&srv->sessions, &s->node) == -1) {
            free(s);
            s = NULL;
        }
    }
    if (s == NULL) {
        rx_log(RX_LOG_ERROR, "out of memory for a session: connection closed");
        close(fd);
        return NULL;
    }
    s->srv = srv;
    s->origin = o;
    s->state = SS_OPEN;
    s->io = srv->io[srv->next_io++ % (unsigned)srv->nio];  // round-robin
    format_peer(peer, s->peer, sizeof s->peer);
    s->prev = srv->last;
    if (srv->last)
        srv->last->next = s;
    else
        srv->first = s;
    srv->last = s;
    srv->nsessions++;
    srv->st.accepted++;
    // The io takes the socket first, so whatever `opened` sends comes after it.
    struct cmd m = {.id = s->node.id, .type = CMD_ADOPT};
    m.u.a = (struct adopt){.fd = fd, .codec = &o->codec};
    io_command(srv, s->io, &m);
    if (o->connector)  // rx_connector_session is right inside create and opened
        connector_set_session(o->connector, s);
    if (o->factory.create)
        s->data = o->factory.create(o->factory.arg, s);
    s->opened = true;
    if (o->factory.opened)
        o->factory.opened(s);
    return s;
}

static void session_unlink(rx_server *srv, rx_session *s)
{
    table_del(&srv->sessions, &s->node);
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->first = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        srv->last = s->prev;
    srv->nsessions--;
}

static void maybe_finish(rx_server *srv);

// ------------------------------------------------------------- events from the ios

void server_on_frame(rx_server *srv, uint64_t id, const rx_frame *f)
{
    rx_session *s = find(srv, id);
    if (s == NULL || s->state != SS_OPEN)
        return;  // closing: the application said it wants nothing more
    srv->st.frames_in += (f->flags & RX_FRAME_LAST) != 0;
    s->origin->factory.message(s, f);
}

void server_on_eof(rx_server *srv, uint64_t id, enum rx_close_reason why)
{
    rx_session *s = find(srv, id);
    if (s != NULL)
        begin_close(s, true, why);  // its replies (already queued) go first
}

void server_on_high_water(rx_server *srv, uint64_t id, size_t queued)
{
    rx_session *s = find(srv, id);
    if (s != NULL && s->state == SS_OPEN && s->origin->factory.high_water)
        s->origin->factory.high_water(s, queued);
}

void server_on_drained(rx_server *srv, uint64_t id)
{
    rx_session *s = find(srv, id);
    if (s != NULL && s->state == SS_OPEN && s->origin->factory.drained)
        s->origin->factory.drained(s);
}

void server_on_closed(rx_server *srv, uint64_t id, enum rx_close_reason why)
{
    rx_session *s = find(srv, id);
    if (s == NULL)
        return;
    session_unlink(srv, s);
    srv->st.closed++;
    rx_log(why == RX_CLOSE_PEER || why == RX_CLOSE_LOCAL ? RX_LOG_DEBUG : RX_LOG_INFO,
           "session %llu (%s) closed: %s", (unsigned long long)id, s->peer,
           rx_close_reason_name(why));
    s->state = SS_CLOSING;  // rx_send from the callback is refused
    if (s->origin->factory.closed)
        s->origin->factory.closed(s, why);
    if (s->origin->connector)
        connector_on_closed(s->origin->connector, why);
    free(s);
    maybe_finish(srv);
}

// An io thread's turn of events: a task on the main loop (see the top of the file).
static void dispatch_batch(void *arg)
{
    struct ev_batch *b = arg;
    rx_server *srv = b->srv;
    srv->st.batches++;
    // LAB BEGIN dispatch_batch: walk the batch's events in order (each a struct ev, then its LEN bytes padded to 8) and hand each to server_on_frame / _eof / _closed / _high_water / _drained
    for (size_t off = 0; off < b->len;) {
        const struct ev *e = (const struct ev *)(b->p + off);
        off += sizeof *e + ((e->len + 7) & ~(size_t)7);
        switch (e->type) {
        case EV_FRAME: {
            rx_frame f = {.data = (const char *)(e + 1), .len = e->len, .type = e->ftype,
                          .flags = e->arg, .total = e->total};
            server_on_frame(srv, e->id, &f);
            break;
        }
        case EV_EOF: server_on_eof(srv, e->id, e->arg); break;
        case EV_CLOSED: server_on_closed(srv, e->id, e->arg); break;
        case EV_HIGH_WATER: server_on_high_water(srv, e->id, e->total); break;
        case EV_DRAINED: server_on_drained(srv, e->id); break;
        default: break;
        }
    }
    // LAB END
    free(b->p);
    free(b);
}

// Main thread, before the loops run: an io thread's channel to main (hop.h; the build's
// backend, HOP_DEFAULT), whose batches dispatch_batch walks.
struct hop *server_hop_new(rx_server *srv, const char *name)
{
    return hop_new(HOP_DEFAULT, srv->loop, dispatch_batch, 0, name);
}

// io thread: this turn's events go to main in one send through its channel (hop.h).
void server_post_batch(rx_server *srv, struct hop *to_main, struct ev_batch *b)
{
    (void)srv;
    if (hop_send(to_main, b) == -1) {
        rx_log(RX_LOG_ERROR, "out of memory posting %zu bytes of events: dropped", b->len);
        free(b->p);
        free(b);
    }
}

// The end of a main turn, with io threads: each io's commands go in one post.
static void server_turn_end(void *arg)
{
    rx_server *srv = arg;
    size_t n = srv->ndirty;
    srv->ndirty = 0;
    for (size_t i = 0; i < n; i++)
        io_post_commands(srv->dirty_io[i]);
}

// ----------------------------------------------------------------- accepting

// Accepts what is waiting, up to 64 a turn (a flood of connections must not starve the
// events of those already open).
static void accept_ready(struct watch *w, unsigned ready)
{
    (void)ready;
    struct listener *l = container_of(w, struct listener, w);
    rx_server *srv = l->srv;
    for (int i = 0; i < 64 && !srv->stopping; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(w->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if ((errno == EMFILE || errno == ENFILE) && l->spare_fd != -1) {
                // Out of descriptors: the pending connection would stay ready forever and the
                // loop would spin on it. Give back the spare, accept and close at once (the
                // client sees its connection closed, not a hang), take the spare again.
                close(l->spare_fd);
                int c = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC);
                if (c != -1)
                    close(c);  // first: the spare takes its number back
                l->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (c == -1)
                    return;  // nobody was waiting (accept4 says EMFILE before it looks)
                rx_log(RX_LOG_WARN, "accept: out of descriptors: a connection refused");
                continue;
            }
            rx_log(RX_LOG_ERROR, "accept: %s", strerror(errno));
            return;
        }
        // Replies written in pieces must not wait for the peer's delayed ACK.
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1)
            rx_log(RX_LOG_WARN, "setsockopt(TCP_NODELAY): %s", strerror(errno));
        server_adopt(srv, fd, &l->origin, (struct sockaddr *)&ss);
    }
}

int rx_listen(rx_server *srv, const char *host, int port, const rx_codec *codec,
              const rx_factory *factory)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (port < 0 || port > 65535 || factory == NULL || factory->message == NULL) {
        rx_log(RX_LOG_ERROR, "rx_listen: bad arguments (port %d)", port);
        return -1;
    }
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        len = sizeof *in;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        len = sizeof *in6;
    } else {
        rx_log(RX_LOG_ERROR, "rx_listen: %s is not a numeric IPv4 or IPv6 address", host);
        return -1;
    }
    struct listener *l = calloc(1, sizeof *l);
    if (l == NULL)
        return -1;
    l->srv = srv;
    l->origin = (struct origin){.codec = *codec, .factory = *factory};
    l->spare_fd = -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1 ||
        bind(fd, (struct sockaddr *)&ss, len) == -1 || listen(fd, SOMAXCONN) == -1 ||
        getsockname(fd, (struct sockaddr *)&ss, &len) == -1) {
        rx_log(RX_LOG_ERROR, "listen on %s:%d: %s", host, port, strerror(errno));
        if (fd != -1)
            close(fd);
        free(l);
        return -1;
    }
    l->w.fd = fd;
    l->w.cb = accept_ready;
    l->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (loop_watch(srv->loop, &l->w, LOOP_READ) == -1) {
        rx_log(RX_LOG_ERROR, "listen: watching the socket: %s", strerror(errno));
        close(fd);
        if (l->spare_fd != -1)
            close(l->spare_fd);
        free(l);
        return -1;
    }
    l->next = srv->listeners;
    srv->listeners = l;
    return ntohs(ss.ss_family == AF_INET ? in->sin_port : in6->sin6_port);
}

static void close_listeners(rx_server *srv)
{
    for (struct listener *l = srv->listeners; l != NULL; l = l->next) {
        if (l->w.fd == -1)
            continue;
        loop_unwatch(srv->loop, &l->w);
        close(l->w.fd);
        l->w.fd = -1;
        if (l->spare_fd != -1)
            close(l->spare_fd);
        l->spare_fd = -1;
    }
}

// ------------------------------------------------------------------- shutdown

// Shutdown, in steps. 1: stop accepting and connecting; the application's on_stop (its
// notices); every session stops reading, has the frames it had read answered, then closes
// after its output has gone. 2: drain_ms later, those still
// flushing close at once. 3: when the table is empty the main loop ends; rx_server_run joins
// the io threads. A hard deadline (drain_ms + 400 ms) ends the loop whatever is left, so the
// process exits within 2 s of the signal with the default drain of 1500 ms.
static void stop_expired(rx_loop *loop, rx_timer *t, void *arg)
{
    rx_server *srv = arg;
    if (!srv->stop_forced) {  // step 2
        srv->stop_forced = true;
        for (rx_session *s = srv->first; s != NULL; s = s->next) {
            s->state = SS_CLOSING;
            command(s, CMD_CLOSE_NOW, RX_CLOSE_SHUTDOWN, NULL);
        }
        return;
    }
    srv->stop_timer = NULL;
    rx_log(RX_LOG_WARN, "shutdown: %zu sessions still open after the deadline", srv->nsessions);
    rx_timer_stop(loop, t);
    loop_stop(loop);
}

void rx_server_stop(rx_server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    close_listeners(srv);
    connector_stop_all(srv);
    rx_log(RX_LOG_INFO, "stopping: %zu sessions", srv->nsessions);
    if (srv->on_stop)
        srv->on_stop(srv, srv->on_stop_arg);
    // Not begin_close: frames already read (in a batch on its way) would find the session
    // closing and go unanswered. The io stops reading and answers with an EOF that comes
    // after them (CMD_STOP_INPUT); server_on_eof then closes the session after its replies.
    for (rx_session *s = srv->first; s != NULL; s = s->next)
        if (s->state == SS_OPEN)
            command(s, CMD_STOP_INPUT, RX_CLOSE_SHUTDOWN, NULL);
    // Fires at drain_ms (step 2), then every 400 ms: the second time is past the deadline.
    srv->stop_timer = rx_timer_start(srv->loop, srv->cfg.drain_ms, 400, stop_expired, srv);
    maybe_finish(srv);
}

static void maybe_finish(rx_server *srv)
{
    if (srv->stopping && srv->nsessions == 0) {
        if (srv->stop_timer) {
            rx_timer_stop(srv->loop, srv->stop_timer);
            srv->stop_timer = NULL;
        }
        loop_stop(srv->loop);
    }
}

void rx_server_on_stop(rx_server *srv, void (*fn)(rx_server *, void *), void *arg)
{
    srv->on_stop = fn;
    srv->on_stop_arg = arg;
}

static void signal_ready(struct watch *w, unsigned ready)
{
    (void)ready;
    rx_server *srv = container_of(w, rx_server, sigwatch);
    struct signalfd_siginfo si;
    ssize_t n = read(w->fd, &si, sizeof si);
    if (n != (ssize_t)sizeof si)
        return;  // EAGAIN: another reader took it (there is none), or EINTR
    rx_log(RX_LOG_INFO, "%s: shutting down", strsignal((int)si.ssi_signo));
    rx_server_stop(srv);
}

// ------------------------------------------------------------------- life

rx_server *rx_server_new(const rx_config *cfg)
{
    rx_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return NULL;
    srv->cfg = cfg ? *cfg : rx_config_default();
    srv->sigfd = -1;
    if (srv->cfg.io_threads < 0 || srv->cfg.io_threads > 256 || srv->cfg.turn_bytes < 512) {
        rx_log(RX_LOG_ERROR, "rx_server_new: io_threads must be 0..256 and turn_bytes >= 512");
        free(srv);
        return NULL;
    }
    // The signals arrive only through the signalfd, read by the main loop: blocked here, and
    // in every io thread, which inherits this mask. No flag is ever checked before a wait.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0 ||
        (srv->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) == -1) {
        rx_log(RX_LOG_ERROR, "signalfd: %s", strerror(errno));
        free(srv);
        return NULL;
    }
    // A write to a peer that has gone returns EPIPE instead of killing the process.
    struct sigaction sa = {.sa_handler = SIG_IGN};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
    rx_thread_set_name("main");
    srv->loop = loop_new("main");
    if (srv->loop == NULL)
        goto fail;
    loop_bind_thread(srv->loop);
    srv->sigwatch.fd = srv->sigfd;
    srv->sigwatch.cb = signal_ready;
    if (loop_watch(srv->loop, &srv->sigwatch, LOOP_READ) == -1)
        goto fail;
    srv->nio = srv->cfg.io_threads > 0 ? srv->cfg.io_threads : 1;
    srv->io = calloc((size_t)srv->nio, sizeof *srv->io);
    srv->dirty_io = calloc((size_t)srv->nio, sizeof *srv->dirty_io);
    if (srv->io == NULL || srv->dirty_io == NULL)
        goto fail;
    if (srv->cfg.io_threads == 0) {
        if ((srv->io[0] = io_new(srv, srv->loop, true, 0)) == NULL)
            goto fail;
    } else {
        loop_on_turn_end(srv->loop, server_turn_end, srv);
        for (int i = 0; i < srv->nio; i++) {
            char name[16];
            snprintf(name, sizeof name, "io-%d", i);
            rx_loop *l = loop_new(name);
            if (l == NULL || (srv->io[i] = io_new(srv, l, false, i)) == NULL) {
                if (l)
                    loop_free(l);
                goto fail;
            }
        }
    }
    return srv;
fail:
    rx_log(RX_LOG_ERROR, "rx_server_new: %s", strerror(errno ? errno : ENOMEM));
    rx_server_free(srv);
    return NULL;
}

rx_loop *rx_server_loop(rx_server *srv)
{
    return srv->loop;
}

static void add_io_stats(rx_server *srv)
{
    for (int i = 0; i < srv->nio; i++) {
        struct io_stats s;
        io_get_stats(srv->io[i], &s);
        srv->st.bytes_in += s.bytes_in;
        srv->st.bytes_out += s.bytes_out;
        srv->st.reads += s.reads;
        srv->st.writes += s.writes;
        srv->st.dropped_commands += s.dropped_commands;
        srv->st.too_slow += s.too_slow;
        srv->st.bad_frames += s.bad_frames;
        srv->st.idle_closed += s.idle_closed;
        srv->st.turn_yields += s.turn_yields;
        if (s.peak_queued > srv->st.peak_queued)
            srv->st.peak_queued = s.peak_queued;
        struct loop_stats ls;
        loop_get_stats(io_loop(srv->io[i]), &ls);
        if (!io_direct(srv->io[i])) {
            srv->st.posts += ls.posts;
            srv->st.wakeups += ls.wakeups_written;
        }
        // The rings' own sends and eventfd writes (hop.h; the loops counted the mutex's).
        for (int dir = 0; dir < 2; dir++) {
            struct hop *h = io_hop(srv->io[i], dir);
            struct hop_stats hs;
            if (h == NULL)
                continue;
            hop_get_stats(h, &hs);
            srv->st.posts += hs.ring;
            srv->st.wakeups += hs.wakeups + hs.rearms;
        }
    }
    struct loop_stats ls;
    loop_get_stats(srv->loop, &ls);
    srv->st.posts += ls.posts;
    srv->st.wakeups += ls.wakeups_written;
}

int rx_server_run(rx_server *srv)
{
    int rc = 0;
    int started = 0;
    for (; started < srv->nio; started++)
        if (io_start(srv->io[started]) == -1) {
            rc = -1;
            break;
        }
    if (rc == 0 && loop_run(srv->loop) == -1)
        rc = -1;
    // The io threads end, then whatever they posted to main and main posted to them is run
    // (it frees the batches and the buffers they hold; every id in them is gone by now).
    // With HOP=ring the batches may also wait in the rings (hop_drain; its fallbacks are tasks).
    for (int i = 0; i < started; i++)
        io_stop(srv->io[i]);
    for (int i = 0; i < started; i++)
        if (!io_direct(srv->io[i])) {
            hop_drain(io_hop(srv->io[i], false));
            loop_run_pending(io_loop(srv->io[i]));
        }
    server_turn_end(srv);
    for (int i = 0; i < srv->nio; i++)
        if (!io_direct(srv->io[i])) {
            hop_drain(io_hop(srv->io[i], false));
            loop_run_pending(io_loop(srv->io[i]));
        }
    for (int i = 0; i < srv->nio; i++)
        hop_drain(io_hop(srv->io[i], true));
    loop_run_pending(srv->loop);
    // Sessions still open (the deadline passed): their state is the application's to free.
    while (srv->first != NULL) {
        rx_session *s = srv->first;
        server_on_closed(srv, s->node.id, RX_CLOSE_SHUTDOWN);
    }
    add_io_stats(srv);
    const rx_stats *st = &srv->st;
    rx_log(RX_LOG_INFO,
           "stopped: accepted %llu, closed %llu, frames %llu, bytes in %llu, bytes out %llu, "
           "reads %llu, writes %llu, posts %llu, wakeups %llu, batches %llu, dropped commands "
           "%llu, too slow %llu, bad frames %llu, idle %llu, turn yields %llu, peak queued %llu",
           (unsigned long long)st->accepted, (unsigned long long)st->closed,
           (unsigned long long)st->frames_in, (unsigned long long)st->bytes_in,
           (unsigned long long)st->bytes_out, (unsigned long long)st->reads,
           (unsigned long long)st->writes, (unsigned long long)st->posts,
           (unsigned long long)st->wakeups, (unsigned long long)st->batches,
           (unsigned long long)st->dropped_commands, (unsigned long long)st->too_slow,
           (unsigned long long)st->bad_frames, (unsigned long long)st->idle_closed,
           (unsigned long long)st->turn_yields, (unsigned long long)st->peak_queued);
    return rc;
}

void rx_server_stats(const rx_server *srv, rx_stats *out)
{
    *out = srv->st;
}

void rx_server_free(rx_server *srv)
{
    if (srv == NULL)
        return;
    close_listeners(srv);
    // The ios first: a connection left in one points to its origin's codec (a listener's or
    // a connector's), freed below.
    for (int i = 0; srv->io && i < srv->nio; i++) {
        if (srv->io[i] == NULL)
            continue;
        rx_loop *l = io_loop(srv->io[i]);
        bool direct = io_direct(srv->io[i]);
        io_free(srv->io[i]);
        if (!direct)
            loop_free(l);
    }
    connector_free_all(srv);
    while (srv->listeners) {
        struct listener *l = srv->listeners;
        srv->listeners = l->next;
        free(l);
    }
    free(srv->io);
    free(srv->dirty_io);
    table_free(&srv->sessions);
    if (srv->loop) {
        if (srv->sigfd != -1)
            loop_unwatch(srv->loop, &srv->sigwatch);
        loop_free(srv->loop);
    }
    if (srv->sigfd != -1)
        close(srv->sigfd);
    free(srv);
}
