// server.c: one thread serves every client at once, by asking select() which sockets are ready.
// Naive on purpose: replies go out with blocking sends, so a client that stops reading stalls all.
//
// Read this file first, then net.c, which holds the calls named here.
//
// 01_blocking slept inside recv() for one client while the others waited.
// Here the thread sleeps in one place only, select(), which watches every
// socket at once and returns when at least one of them has something for us:
//
//   select(listening socket + every client)      sleep until something is ready
//     listening socket ready  -> accept()         a new client: add it to the set
//     client ready            -> recv() once      it will not block: data is there
//                                send_all()       echo it back (this CAN block)
//     recv() returned 0       -> close()          the client is done
//
// Three limits come with it, and the README measures each:
//  1. send_all() blocks. A client that sends but never reads fills its
//     socket buffers; then our send() sleeps for it, and with it the whole
//     server: nobody else is served until that client reads or leaves.
//  2. An fd_set is a fixed bitmap of FD_SETSIZE (1024) bits. A descriptor
//     numbered 1024 or more cannot go in it (FD_SET would write past its end),
//     so such a client is turned away: see add_client().
//  3. Every call costs O(highest fd): we copy the whole set in, the kernel
//     checks every descriptor in it, and we scan every bit on the way out,
//     however few clients are actually busy.
// 03_poll lifts the cap and makes sends non-blocking; 04_epoll removes the scan.

#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

// How many clients one turn may accept. Accepting until EAGAIN would let a
// flood of new connections keep the loop from ever reaching the clients it
// already has. The listening socket stays readable while clients wait, so
// select() reports the rest of the backlog on the next turn.
#define ACCEPTS_PER_TURN 64

// ---------------------------------------------------------------- the clients

// Every client we serve, as one bit per descriptor number: bit fd is set
// while fd is a client of ours. select() wants the highest descriptor + 1,
// so we keep track of it instead of always passing FD_SETSIZE.
static fd_set clients;
static int max_client_fd = -1;   // -1: no clients
static int client_count;

// The peer's "addr:port" for the log lines, indexed by descriptor. The same
// cap that limits the fd_set bounds this table.
static char peers[FD_SETSIZE][PEER_LEN];

// Starts serving FD, or turns it away when it does not fit in an fd_set.
static void add_client(int fd, const char *peer)
{
    // FD_SET(1024, &set) would set a bit past the end of the 128-byte
    // bitmap: undefined behaviour, in practice a silent write over whatever
    // lies next to it. The kernel handed us the lowest free number, so this
    // only happens once 1024 descriptors are open; the clients already in
    // the set keep being served.
    if (fd >= FD_SETSIZE) {
        log_msg("fd %d >= FD_SETSIZE (%d), closing", fd, FD_SETSIZE);
        if (close(fd) == -1)
            log_msg("fd %d: close: %s", fd, strerror(errno));
        return;
    }
    FD_SET(fd, &clients);
    if (fd > max_client_fd)
        max_client_fd = fd;
    client_count++;
    snprintf(peers[fd], PEER_LEN, "%s", peer);
}

// Stops serving FD and closes it.
static void drop_client(int fd)
{
    FD_CLR(fd, &clients);
    client_count--;
    if (close(fd) == -1)
        log_msg("fd %d: close: %s", fd, strerror(errno));
    // If it was the highest, walk down to the next one still in the set.
    while (max_client_fd >= 0 && !FD_ISSET(max_client_fd, &clients))
        max_client_fd--;
}

// Makes FD blocking: the reverse of set_nonblocking (net.c), and like it,
// it keeps the descriptor's other status flags. Returns 0, or -1 after
// logging why.
static int set_blocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags == -1 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == -1) {
        log_msg("fd %d: fcntl(~O_NONBLOCK): %s", fd, strerror(errno));
        return -1;
    }
    return 0;
}

// Accepts up to ACCEPTS_PER_TURN clients waiting in the backlog. The
// listening socket is non-blocking (see main), so accept() says EAGAIN when
// the queue is empty instead of putting the whole server to sleep.
static void accept_clients(int listen_fd)
{
    for (int k = 0; k < ACCEPTS_PER_TURN; k++) {
        char peer[PEER_LEN];
        int fd = accept_client(listen_fd, peer, sizeof peer);
        if (fd == -1)
            return;
        // serve_client and send_all expect a blocking socket: send_all
        // sleeps until the kernel took every byte (the naive part). On
        // Linux, accept() never passes the listener's O_NONBLOCK on to the
        // new socket; on BSD and macOS it does, and send_all would then
        // fail with EAGAIN and drop the client. One fcntl makes it blocking
        // everywhere.
        if (set_blocking(fd) == -1) {
            if (close(fd) == -1)
                log_msg("fd %d: close: %s", fd, strerror(errno));
            continue;
        }
        add_client(fd, peer);
    }
}

// Serves one ready client: one recv(), then echo what it returned.
// Returns false when the client is finished and must be dropped.
static bool serve_client(int fd)
{
    char buf[16 * 1024];
    // One recv() per readiness, not a loop until the client goes quiet: the
    // socket is blocking, so a second recv() would sleep if nothing more had
    // come, and a busy client must not keep the others waiting anyway.
    // Whatever is left in the kernel, select() will report again next turn.
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) {
        // EOF. Every byte it sent is already back on its way, because
        // send_all() only returns once the kernel has taken all of it.
        log_msg("%s closed", peers[fd]);
        return false;
    }
    if (n == -1) {
        if (errno == EINTR)
            return true;  // a signal; the loop looks at stop_requested
        log_msg("fd %d: recv: %s, dropping", fd, strerror(errno));
        return false;
    }
    // The weak spot: this sleeps until the client's receive buffer and our
    // send buffer have room for all n bytes. If the client does not read,
    // that is never, and every other client waits with it.
    if (send_all(fd, buf, (size_t)n) == -1) {
        if (errno == EINTR)
            log_msg("%s closed (server stopping)", peers[fd]);
        else
            log_msg("fd %d: send: %s, dropping", fd, strerror(errno));
        return false;
    }
    return true;
}

// ---------------------------------------------------------------- the loop

// Serves every client until SIGINT or SIGTERM (returns true) or until
// select() itself fails, which only a bug can cause (returns false).
static bool serve_forever(int listen_fd)
{
    while (!stop_requested) {
        // LAB BEGIN: wait with select() for the listening socket and every client; accept new clients, serve each ready one, drop the finished
        // select() overwrites the set we pass with the subset that is ready,
        // so it gets a copy, rebuilt from our own set on every call. That copy,
        // the kernel's walk over descriptors 0..nfds-1 and our scan below are
        // the O(n) of select: they cost the same with 1 busy client or 1000.
        fd_set readable = clients;
        FD_SET(listen_fd, &readable);
        int nfds = (listen_fd > max_client_fd ? listen_fd : max_client_fd) + 1;

        // No timeout (NULL): sleep until a descriptor is ready or a signal
        // arrives. Only the read set: we never wait to write, because our
        // sends block instead (the naive part).
        int ready = select(nfds, &readable, NULL, NULL, NULL);
        if (ready == -1) {
            if (errno == EINTR)
                continue;  // the while test looks at stop_requested
            log_msg("select: %s", strerror(errno));
            return false;
        }

        if (FD_ISSET(listen_fd, &readable))
            accept_clients(listen_fd);

        // Scan every descriptor up to the highest. New clients accepted just
        // above are not in `readable`, and a dropped one is only cleared from
        // `clients`, so changing the set while we scan is safe.
        for (int fd = 0; fd < nfds; fd++) {
            if (fd == listen_fd || !FD_ISSET(fd, &readable))
                continue;
            if (!serve_client(fd))
                drop_client(fd);
        }
        // LAB END
    }
    // A note on the flag check: a signal that lands after the while test but
    // before select() starts to sleep is only noticed when a client next does
    // something. pselect(2) closes that window by unblocking the signal and
    // waiting in one step; this stage accepts the few-instruction race.
    return true;
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    struct options opt;
    parse_options(argc, argv, "server", &opt);

    // Handlers first, so that a SIGTERM sent as soon as we print
    // "listening on" already finds them in place.
    install_signal_handlers();

    int listen_fd = listen_on(opt.host, opt.port);
    if (listen_fd == -1)
        return 1;
    // select() saying "readable" for a listening socket means "a connection
    // was waiting when I looked". If the client gives up before we call
    // accept(), some systems remove it from the queue, and a blocking
    // accept() would then sleep with every client waiting. Non-blocking, it
    // just says EAGAIN.
    if (set_nonblocking(listen_fd) == -1) {
        close(listen_fd);
        return 1;
    }

    bool stopped = serve_forever(listen_fd);

    // Nothing is pending: every send completed (or was interrupted by the
    // stop), so closing is all that is left to do.
    if (client_count > 0)
        log_msg("stopping: closing %d client%s", client_count, client_count == 1 ? "" : "s");
    for (int fd = 0; fd <= max_client_fd; fd++)
        if (FD_ISSET(fd, &clients) && close(fd) == -1)
            log_msg("fd %d: close: %s", fd, strerror(errno));
    // Closing the listening socket makes the kernel reset every connection
    // still waiting in the backlog: those clients see "connection reset".
    if (close(listen_fd) == -1) {
        log_msg("close: %s", strerror(errno));
        return 1;
    }
    log_msg("stopped");
    return stopped ? 0 : 1;
}
