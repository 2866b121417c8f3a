// session.c: a session, the main thread's handle on one connection (internal.h: struct
// rx_session): the table that finds it by id, its accessors, rx_send and rx_session_close
// (commands for the io that owns the connection: io.c), and server_adopt, which turns a
// connected socket into a session. Main thread only, like every public function here.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"


rx_session *session_find(const rx_server *srv, uint64_t id)
{
    struct tnode *n = table_get(&srv->sessions, id);
    return n ? container_of(n, rx_session, node) : NULL;
}

rx_session *rx_session_find(rx_server *srv, uint64_t id)
{
    return session_find(srv, id);
}
rx_session *rx_session_first(rx_server *srv) { return srv->first; }
rx_session *rx_session_next(rx_session *s) { return s->next; }
size_t rx_session_count(const rx_server *srv) { return srv->nsessions; }
uint64_t rx_session_id(const rx_session *s) { return s->node.id; }
void *rx_session_data(const rx_session *s) { return s->data; }
const char *rx_session_peer(const rx_session *s) { return s->peer; }
const rx_codec *rx_session_codec(const rx_session *s) { return &s->origin->codec; }
bool rx_session_closing(const rx_session *s) { return s->state != SS_OPEN; }

void session_command(rx_session *s, uint8_t type, uint8_t reason, rx_buf *b)
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
    session_command(s, CMD_SEND, 0, b);
    return 0;
}

int rx_send_notice(rx_session *s, rx_buf *b)
{
    if (s->state != SS_OPEN)
        return -1;
    rxbuf_hold(b);
    session_command(s, CMD_NOTICE, 0, b);
    return 0;
}

int rx_send_typed(rx_session *s, uint16_t type, const void *msg, size_t len)
{
    if (s->state != SS_OPEN)
        return -1;
    rx_buf *b = rx_buf_frame(&s->origin->codec, type, msg, len);
    if (b == NULL)
        return -1;
    session_command(s, CMD_SEND, 0, b);  // the new buffer's one reference moves to the io
    return 0;
}

int rx_send(rx_session *s, const void *msg, size_t len)
{
    return rx_send_typed(s, 0, msg, len);
}

void session_begin_close(rx_session *s, bool flush, enum rx_close_reason why)
{
    if (s->state != SS_OPEN)
        return;
    s->state = SS_CLOSING;
    s->close_reason = (uint8_t)why;
    session_command(s, flush ? CMD_CLOSE : CMD_CLOSE_NOW, (uint8_t)why, NULL);
}

void rx_session_close(rx_session *s, bool flush)
{
    session_begin_close(s, flush, RX_CLOSE_LOCAL);
}

void rx_session_pause(rx_session *s)
{
    if (s->state == SS_OPEN)
        session_command(s, CMD_PAUSE, 0, NULL);
}

void rx_session_resume(rx_session *s)
{
    if (s->state == SS_OPEN)
        session_command(s, CMD_RESUME, 0, NULL);
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

void session_unlink(rx_server *srv, rx_session *s)
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
