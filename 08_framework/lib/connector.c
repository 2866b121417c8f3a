// connector.c: outbound connections (rx_connect). The main loop connects asynchronously
// (a non-blocking connect, then the socket's first writability), bounded by a timeout; the
// connected socket becomes a session exactly like an accepted one, handed to an io thread.
// When it fails or later closes, the connector tries again after a backoff with jitter.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

struct rx_connector {
    rx_server *srv;
    struct origin origin;  // the sessions it makes point here: it outlives them
    rx_connect_opts opts;
    struct sockaddr_storage addr;
    socklen_t alen;
    char name[64];  // "127.0.0.1:6379", for the log
    struct watch w;  // w.fd: the socket while connecting, else -1
    rx_timer *timer;  // the connect timeout, or the wait before the next attempt
    unsigned attempt;  // failures in a row (0 after a connection that worked)
    unsigned rng;
    rx_session *session;
    bool stopped;  // no more attempts (shutdown, or rx_connector_free)
    bool freed;    // rx_connector_free was called: freed when its session has closed
    bool in_failed;  // its `failed` callback runs: rx_connector_free there only marks it
    rx_connector *next;
};

rx_connect_opts rx_connect_opts_default(void)
{
    return (rx_connect_opts){.timeout_ms = 3000, .retry_ms = 100, .retry_max_ms = 5000,
                             .reconnect = true};
}

static void attempt(rx_connector *c);
static void unlink_and_free(rx_connector *c);

static void stop_timer(rx_connector *c)
{
    if (c->timer) {
        rx_timer_stop(c->srv->loop, c->timer);
        c->timer = NULL;
    }
}

static void drop_socket(rx_connector *c)
{
    if (c->w.fd == -1)
        return;
    loop_unwatch(c->srv->loop, &c->w);
    close(c->w.fd);
    c->w.fd = -1;
}

static void retry_due(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    rx_connector *c = arg;
    c->timer = NULL;  // one-shot: freed after this returns
    attempt(c);
}

// The wait before attempt N+1 after N failures: D = min(retry_max, retry * 2^(N-1)), then
// uniform in [D/2, D] ("equal jitter"): clients that lost the same server at the same moment
// do not all come back in the same millisecond, and none waits less than half the backoff.
static void schedule_retry(rx_connector *c)
{
    if (c->stopped || !c->opts.reconnect)
        return;
    uint64_t d = c->opts.retry_ms;
    for (unsigned i = 1; i < c->attempt && d < c->opts.retry_max_ms; i++)
        d *= 2;
    if (d > c->opts.retry_max_ms)
        d = c->opts.retry_max_ms;
    uint64_t wait = d / 2 + (d - d / 2 > 0 ? (uint64_t)rand_r(&c->rng) % (d - d / 2 + 1) : 0);
    rx_log(RX_LOG_INFO, "connector %s: reconnecting in %llu ms", c->name,
           (unsigned long long)wait);
    c->timer = rx_timer_start(c->srv->loop, wait, 0, retry_due, c);
    if (c->timer == NULL)
        rx_log(RX_LOG_ERROR, "connector %s: out of memory for its timer: stopped", c->name);
}

static void failed(rx_connector *c, int err)
{
    drop_socket(c);
    stop_timer(c);
    c->attempt++;
    rx_log(RX_LOG_INFO, "connector %s: connect failed (attempt %u): %s", c->name, c->attempt,
           strerror(err));
    if (c->opts.failed) {
        c->in_failed = true;
        c->opts.failed(c, err, c->attempt, c->origin.factory.arg);
        c->in_failed = false;
        if (c->freed) {  // rx_connector_free from the callback: now it can go
            unlink_and_free(c);
            return;
        }
    }
    schedule_retry(c);
}

static void connected(rx_connector *c)
{
    int fd = c->w.fd;
    loop_unwatch(c->srv->loop, &c->w);
    c->w.fd = -1;
    stop_timer(c);  // TCP_NODELAY: conn_flush, before the session's first write
    c->attempt = 0;
    rx_log(RX_LOG_INFO, "connector %s: connected", c->name);
    // server_adopt sets c->session (connector_set_session) before the session's create and
    // opened run, so rx_connector_free from `opened` takes the close path; C is not touched
    // after it returns.
    if (server_adopt(c->srv, fd, &c->origin, (struct sockaddr *)&c->addr) == NULL) {
        c->attempt = 1;
        schedule_retry(c);
    }
}

void connector_set_session(rx_connector *c, rx_session *s)
{
    c->session = s;
}

static void connect_ready(struct watch *w, unsigned ready)
{
    (void)ready;
    rx_connector *c = container_of(w, rx_connector, w);
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
        err = errno;
    if (err != 0)
        failed(c, err);
    else
        connected(c);
}

static void connect_timeout(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    rx_connector *c = arg;
    c->timer = NULL;
    failed(c, ETIMEDOUT);
}

static void attempt(rx_connector *c)
{
    if (c->stopped)
        return;
    int fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        failed(c, errno);
        return;
    }
    c->w.fd = fd;
    int r;
    do
        r = connect(fd, (struct sockaddr *)&c->addr, c->alen);
    while (r == -1 && errno == EINTR);
    if (r == 0) {  // loopback can connect at once
        connected(c);
        return;
    }
    if (errno != EINPROGRESS) {
        failed(c, errno);
        return;
    }
    if (loop_watch(c->srv->loop, &c->w, LOOP_WRITE) == -1) {
        failed(c, errno);
        return;
    }
    if (c->opts.timeout_ms == 0)
        return;  // 0: no timeout, like every 0 of the API (the kernel's own, ~2 min, remains)
    c->timer = rx_timer_start(c->srv->loop, c->opts.timeout_ms, 0, connect_timeout, c);
    if (c->timer == NULL)
        failed(c, ENOMEM);
}

rx_connector *rx_connect(rx_server *srv, const char *host, int port, const rx_codec *codec,
                         const rx_factory *factory, const rx_connect_opts *opts)
{
    if (port <= 0 || port > 65535 || factory == NULL || factory->message == NULL)
        return NULL;
    rx_connector *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->srv = srv;
    c->origin = (struct origin){.codec = *codec, .factory = *factory, .connector = c};
    c->opts = opts ? *opts : rx_connect_opts_default();
    if (c->opts.retry_ms == 0)
        c->opts.retry_ms = 1;
    if (c->opts.retry_max_ms < c->opts.retry_ms)
        c->opts.retry_max_ms = c->opts.retry_ms;
    c->w.fd = -1;
    c->w.cb = connect_ready;
    c->rng = (unsigned)(mono_ms() ^ (uintptr_t)c ^ (unsigned)getpid());
    struct sockaddr_in *in = (struct sockaddr_in *)&c->addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&c->addr;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        c->alen = sizeof *in;
        snprintf(c->name, sizeof c->name, "%s:%d", host, port);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        c->alen = sizeof *in6;
        snprintf(c->name, sizeof c->name, "[%s]:%d", host, port);
    } else {
        rx_log(RX_LOG_ERROR, "rx_connect: %s is not a numeric IPv4 or IPv6 address", host);
        free(c);
        return NULL;
    }
    c->next = srv->connectors;
    srv->connectors = c;
    // The first attempt starts from the loop (a 0 ms timer), never inside rx_connect: a
    // `failed` callback must never run before the application holds the connector.
    if (srv->stopping)
        c->stopped = true;
    else if ((c->timer = rx_timer_start(srv->loop, 0, 0, retry_due, c)) == NULL) {
        unlink_and_free(c);
        return NULL;
    }
    return c;
}

rx_session *rx_connector_session(const rx_connector *c)
{
    return c->session;
}

static void unlink_and_free(rx_connector *c)
{
    rx_connector **pp = &c->srv->connectors;
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    free(c);
}

static void stop(rx_connector *c)
{
    c->stopped = true;
    stop_timer(c);
    drop_socket(c);
}

void rx_connector_free(rx_connector *c)
{
    if (c == NULL || c->freed)
        return;
    stop(c);
    c->freed = true;
    if (c->session != NULL)
        rx_session_close(c->session, true);  // freed in connector_on_closed
    else if (!c->in_failed)
        unlink_and_free(c);  // (from inside `failed`: freed when it returns)
}

// Main thread, from server_on_closed, after the session's closed callback.
void connector_on_closed(rx_connector *c, enum rx_close_reason why)
{
    (void)why;
    c->session = NULL;
    if (c->freed) {
        unlink_and_free(c);
        return;
    }
    c->attempt = 1;  // it worked before: the first wait is the shortest
    schedule_retry(c);
}

void connector_stop_all(rx_server *srv)
{
    for (rx_connector *c = srv->connectors; c != NULL; c = c->next)
        stop(c);
}

void connector_free_all(rx_server *srv)
{
    while (srv->connectors) {
        rx_connector *c = srv->connectors;
        stop(c);
        srv->connectors = c->next;
        free(c);
    }
}
