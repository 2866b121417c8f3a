// listener.c: a listening socket of the main loop (rx_listen): accepting, the spare
// descriptor that keeps EMFILE from spinning the loop, and handing each connection to
// server_adopt (session.c), which gives it to an io round-robin. Main thread only.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"


struct listener {
    struct watch w;
    rx_server *srv;
    struct origin origin;
    int spare_fd;  // kept open for EMFILE (see accept_ready)
    struct listener *next;
};

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
        // TCP_NODELAY: conn_flush sets it before the first write of a connection that stays
        // open (none for one answered and closed).
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

void close_listeners(rx_server *srv)
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

void free_listeners(rx_server *srv)
{
    while (srv->listeners) {
        struct listener *l = srv->listeners;
        srv->listeners = l->next;
        free(l);
    }
}
