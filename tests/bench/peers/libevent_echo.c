// libevent_echo.c: a libevent (bufferevent) echo server, the benchmark's outside yardstick.
// Same command-line contract as the kit's servers: -H, -p, --help, "listening on", SIGTERM exits 0.
//
// It is written the way a libevent user would write it, not tuned: one event_base, an
// evconnlistener for accept, one bufferevent per client, and the echo as a move of the whole
// input buffer to the output buffer (evbuffer_add_buffer moves chunks, it copies no bytes).
// Like 03 and 04 it applies back-pressure: a client that sends without reading has its
// reading paused once 1 MiB of echo is waiting for it, so memory stays bounded.

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#define PROG "libevent_echo"
#define DEFAULT_PORT "7100"

// Echo waiting to be sent to one client before we stop reading from it. Big enough that a
// client that reads normally never meets it; small enough that one that never reads costs
// a bounded amount of memory.
#define OUTPUT_LIMIT (1u << 20)

// ---------------------------------------------------------------------------------------------
// Data structures
// ---------------------------------------------------------------------------------------------

// One client. All clients are on a doubly linked list so that shutdown can free them.
struct client {
    struct bufferevent *bev;
    struct server *srv;
    int closing; // the client sent EOF: close once the echo still pending has gone out
    struct client *prev, *next;
};

struct server {
    struct event_base *base;
    struct client *clients;
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

static void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void log_msg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", PROG);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void client_free(struct client *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->srv->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev); // BEV_OPT_CLOSE_ON_FREE: this closes the socket too
    free(c);
}

// ---------------------------------------------------------------------------------------------
// The callbacks: libevent's loop calls these
// ---------------------------------------------------------------------------------------------

// Input arrived: move all of it to the output. libevent writes it when the socket allows.
static void on_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *out = bufferevent_get_output(bev);
    if (evbuffer_add_buffer(out, bufferevent_get_input(bev)) != 0) {
        log_msg("fd %d: evbuffer_add_buffer failed, dropping", (int)bufferevent_getfd(bev));
        client_free(arg);
        return;
    }
    // Back-pressure: stop reading until the output drains (on_write turns reading back on).
    if (evbuffer_get_length(out) >= OUTPUT_LIMIT)
        bufferevent_disable(bev, EV_READ);
}

// The output drained to empty (the default write low-water mark is 0).
static void on_write(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->closing) {
        client_free(c);
        return;
    }
    if (!(bufferevent_get_enabled(bev) & EV_READ))
        bufferevent_enable(bev, EV_READ);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct client *c = arg;
    int fd = (int)bufferevent_getfd(bev);
    if (what & BEV_EVENT_ERROR) {
        log_msg("fd %d: %s, dropping", fd, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        client_free(c);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        // The echo contract: send everything still pending, then close.
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
            log_msg("fd %d: closed by peer", fd);
            client_free(c);
        } else {
            log_msg("fd %d: closed by peer, flushing", fd);
            c->closing = 1;
            bufferevent_disable(bev, EV_READ);
        }
    }
}

static void on_accept(struct evconnlistener *lst, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lst;
    (void)sa;
    (void)salen;
    struct server *srv = arg;
    struct client *c = calloc(1, sizeof *c);
    struct bufferevent *bev =
        c ? bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (bev == NULL) {
        log_msg("fd %d: out of memory, dropping", (int)fd);
        free(c);
        evutil_closesocket(fd);
        return;
    }
    c->bev = bev;
    c->srv = srv;
    c->next = srv->clients;
    if (c->next)
        c->next->prev = c;
    srv->clients = c;
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    if (bufferevent_enable(bev, EV_READ | EV_WRITE) != 0) {
        log_msg("fd %d: bufferevent_enable failed, dropping", (int)fd);
        client_free(c);
        return;
    }
    log_msg("connected (fd %d)", (int)fd);
}

static void on_listener_pause_over(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (evconnlistener_enable(arg) != 0)
        log_msg("cannot resume accepting");
}

// accept() failed. On EMFILE and friends the pending connection stays queued, the listener
// stays readable and the loop would spin on it; pausing accept for 100 ms is the simple,
// honest fix (04_epoll shows the spare-descriptor trick instead).
static void on_accept_error(struct evconnlistener *lst, void *arg)
{
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_msg("accept: %s", evutil_socket_error_to_string(err));
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        struct timeval tv = {0, 100000};
        if (evconnlistener_disable(lst) != 0 ||
            event_base_once(evconnlistener_get_base(lst), -1, EV_TIMEOUT, on_listener_pause_over,
                            lst, &tv) != 0)
            log_msg("cannot pause accepting");
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct server *srv = arg;
    log_msg("%s, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    event_base_loopbreak(srv->base);
}

// ---------------------------------------------------------------------------------------------
// Options and main
// ---------------------------------------------------------------------------------------------

static void usage(FILE *out)
{
    fprintf(out,
            "usage: %s [-H HOST] [-p PORT]\n"
            "A libevent echo server for the benchmark.\n"
            "  -H, --host HOST  address to listen on (default 127.0.0.1)\n"
            "  -p, --port PORT  port (default " DEFAULT_PORT ", 0 = any free port)\n"
            "  -h, --help       this text\n",
            PROG);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *host = "127.0.0.1", *port = DEFAULT_PORT;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H': host = optarg; break;
        case 'p': port = optarg; break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "%s: unknown option or missing value: '%s'\n", PROG,
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", PROG, argv[optind]);
        usage(stderr);
        return 2;
    }

    // A client that resets while we write must cost only that client.
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        log_msg("signal(SIGPIPE): %s", strerror(errno));
        return 1;
    }

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        log_msg("%s:%s: %s", host, port, gai_strerror(gai));
        return 1;
    }

    struct server srv = {0};
    int rc = 1;
    struct evconnlistener *lst = NULL;
    struct event *ev_int = NULL, *ev_term = NULL;
    srv.base = event_base_new();
    if (srv.base == NULL) {
        log_msg("event_base_new failed");
        goto out;
    }
    lst = evconnlistener_new_bind(srv.base, on_accept, &srv,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, SOMAXCONN, ai->ai_addr,
                                  (int)ai->ai_addrlen);
    if (lst == NULL) {
        log_msg("listen on %s:%s: %s", host, port, strerror(errno));
        goto out;
    }
    evconnlistener_set_error_cb(lst, on_accept_error);

    // libevent turns signals into events (a self-pipe), so the handler runs in the loop
    // like any callback and may call anything.
    ev_int = evsignal_new(srv.base, SIGINT, on_signal, &srv);
    ev_term = evsignal_new(srv.base, SIGTERM, on_signal, &srv);
    if (!ev_int || !ev_term || evsignal_add(ev_int, NULL) != 0 || evsignal_add(ev_term, NULL) != 0) {
        log_msg("cannot watch SIGINT/SIGTERM");
        goto out;
    }

    // The real port (with -p 0 the kernel chose it) comes from the bound socket.
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof ss;
    char hbuf[64], pbuf[16]; // an IPv6 address and a port fit (NI_MAXHOST is not POSIX)
    if (getsockname(evconnlistener_get_fd(lst), (struct sockaddr *)&ss, &sslen) != 0 ||
        getnameinfo((struct sockaddr *)&ss, sslen, hbuf, sizeof hbuf, pbuf, sizeof pbuf,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        log_msg("cannot read the bound address: %s", strerror(errno));
        goto out;
    }
    printf("listening on %s:%s\n", hbuf, pbuf);
    fflush(stdout);

    if (event_base_dispatch(srv.base) < 0) {
        log_msg("event_base_dispatch failed");
        goto out;
    }
    rc = 0;

out:
    // Free everything we own so LeakSanitizer stays quiet: clients, listener, signal
    // events, the base, then libevent's own globals.
    while (srv.clients)
        client_free(srv.clients);
    if (ev_int)
        event_free(ev_int);
    if (ev_term)
        event_free(ev_term);
    if (lst)
        evconnlistener_free(lst);
    if (srv.base)
        event_base_free(srv.base);
    libevent_global_shutdown();
    freeaddrinfo(ai);
    return rc;
}
