// min_echo.c: the smallest correct epoll echo loop, the benchmark's physical limit.
// Every stage is compared with it: what a stage costs beyond this is what its design costs.
//
// One thread, level-triggered, one recv() into a stack buffer per readable event and one
// send() of what came: two system calls per message, which is the floor for an echo over a
// socket (the kernel must be told once to give bytes and once to take them). Only a short
// send's leftover is queued (one heap block per connection, freed once sent), and only then
// is EPOLLOUT watched, so a client that reads keeps the loop at two calls per message.
// No back-pressure beyond that: while a connection has a leftover it is not read (its
// EPOLLIN is dropped), so the queue never holds more than one read's worth.
//
// Same command-line contract as the kit's servers: -H, -p, --help, "listening on",
// SIGINT/SIGTERM exit 0 (signals blocked, delivered inside epoll_pwait only).

#define _GNU_SOURCE  // accept4
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PROG "min_echo"
#define READ_CHUNK (64 * 1024)
#define MAX_EVENTS 128

struct conn {
    int fd;
    char *left;   // a short send's leftover, or NULL
    size_t off, len;
    struct conn *prev, *next;  // every open connection, so that a stop can free them
};

static struct conn *conns;

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static void usage(FILE *f)
{
    fprintf(f, "usage: %s [-H HOST] [-p PORT]\n"
               "  the minimal level-triggered epoll echo loop (benchmark peer); default 127.0.0.1:7101\n",
            PROG);
}

// Freeing C inside the event batch is safe: one epoll_pwait reports a socket once, and
// serving one client never closes another.
static void conn_close(struct conn *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    close(c->fd);
    free(c->left);
    free(c);
}

static int watch(int ep, struct conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

// Sends N bytes at P; keeps what the kernel did not take. Returns -1 to drop C.
static int conn_send(int ep, struct conn *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k == -1 && errno == EINTR)
            continue;
        if (k == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        return -1;
    }
    if (n == 0)
        return 0;
    c->left = malloc(n);
    if (c->left == NULL)
        return -1;
    memcpy(c->left, p, n);
    c->off = 0;
    c->len = n;
    return watch(ep, c, EPOLLOUT);  // stop reading until the leftover is gone
}

static int conn_flush(int ep, struct conn *c)
{
    while (c->off < c->len) {
        ssize_t k = send(c->fd, c->left + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (k > 0) {
            c->off += (size_t)k;
            continue;
        }
        if (k == -1 && errno == EINTR)
            continue;
        if (k == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return -1;
    }
    free(c->left);
    c->left = NULL;
    return watch(ep, c, EPOLLIN);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 7101;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "-H") && i + 1 < argc) {
            host = argv[++i];
        } else if (!strcmp(argv[i], "-p") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 0 || v > 65535) {
                fprintf(stderr, "%s: bad port '%s'\n", PROG, argv[i]);
                usage(stderr);
                return 2;
            }
            port = (int)v;
        } else {
            fprintf(stderr, "%s: unknown option '%s'\n", PROG, argv[i]);
            usage(stderr);
            return 2;
        }
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &waitmask);  // waitmask: the mask to wait with
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGTERM);

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "%s: -H wants an IPv4 address, got '%s'\n", PROG, host);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    socklen_t alen = sizeof addr;
    if (lfd == -1 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1 ||
        bind(lfd, (struct sockaddr *)&addr, sizeof addr) == -1 || listen(lfd, 4096) == -1 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) == -1) {
        fprintf(stderr, "%s: %s:%d: %s\n", PROG, host, port, strerror(errno));
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (ep == -1 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) == -1) {
        fprintf(stderr, "%s: epoll: %s\n", PROG, strerror(errno));
        return 1;
    }
    printf("listening on %s:%d\n", host, ntohs(addr.sin_port));
    fflush(stdout);

    char buf[READ_CHUNK];
    struct epoll_event evs[MAX_EVENTS];
    while (!stop) {
        int ready = epoll_pwait(ep, evs, MAX_EVENTS, -1, &waitmask);
        if (ready == -1) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "%s: epoll_pwait: %s\n", PROG, strerror(errno));
            break;
        }
        for (int i = 0; i < ready; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c == NULL) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) != -1) {
                    // An echo that leaves in two sends must not wait for a delayed ACK.
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    if (c == NULL || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
                        free(c);
                        close(fd);
                        continue;
                    }
                    c->fd = fd;
                    c->next = conns;
                    if (conns != NULL)
                        conns->prev = c;
                    conns = c;
                }
                continue;
            }
            int drop = 0;
            if (c->left != NULL) {
                drop = conn_flush(ep, c) == -1;
            } else {
                ssize_t k = recv(c->fd, buf, sizeof buf, 0);
                if (k > 0)
                    drop = conn_send(ep, c, buf, (size_t)k) == -1;
                else
                    drop = k == 0 || (errno != EAGAIN && errno != EINTR);
            }
            if (drop)
                conn_close(c);
        }
    }
    while (conns != NULL)
        conn_close(conns);
    close(ep);
    close(lfd);
    return 0;
}
