// server.c: one thread serves every client at once, by asking pselect() which sockets are ready.
// Naive on purpose: replies go out with blocking sends, so a client that stops reading stalls all.
//
// Read this file first, then net.c, which holds the calls named here.
//
// 01_blocking slept inside recv() for one client while the others waited.
// Here the thread sleeps in one place only, pselect(), which watches every
// socket at once and returns when at least one of them has something for us:
//
//   pselect(listening socket + every client)     sleep until something is ready
//     listening socket ready  -> accept()         a new client: add it to the set
//     client ready            -> recv() once      it will not block: data is there
//                                send_all()       echo it back (this CAN block)
//     recv() returned 0       -> close()          the client is done
//
// Three limits come with it, and the README measures each:
//  1. send_all() blocks. A client that sends but never reads fills its
//     socket buffers; then send_all sleeps for it, and with it the whole
//     server: nobody else is served until that client reads or leaves.
//  2. An fd_set is a fixed bitmap of FD_SETSIZE (1024) bits. A descriptor
//     numbered 1024 or more cannot go in it (FD_SET would write past its end),
//     so such a client is turned away: see add_client().
//  3. Every call costs O(highest fd): we copy the whole set in, the kernel
//     checks every descriptor in it, and we scan every bit on the way out,
//     however few clients are actually busy.
// 03_poll lifts the cap and makes sends non-blocking; 04_epoll removes the scan.
//
// SIGINT and SIGTERM are blocked all the time except inside the two pselect()
// calls (the loop's and send_all's), which unblock them only while they sleep:
// see block_stop_signals in net.c for why a plain select() would lose one.

#include "net.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

// How many clients one turn may accept. Accepting until EAGAIN would let a
// flood of new connections keep the loop from ever reaching the clients it
// already has. The listening socket stays readable while clients wait, so
// pselect() reports the rest of the backlog on the next turn.
#define ACCEPTS_PER_TURN 64

// What the server did, printed in its last log line ("stopped after ..."), so
// that a test can prove from the server itself that the path it names ran.
static struct {
    unsigned long waits;        // pselect() calls of the loop (one per turn)
    unsigned long recvs;        // recv() calls (one per ready client per turn)
    unsigned long sends;        // send() calls, however many bytes each took
    unsigned long send_waits;   // times send_all slept for one client's full buffers
    unsigned long accepted;     // clients accepted, including those turned away
    unsigned long turned_away;  // clients closed at once: fd >= FD_SETSIZE
    int nfds;                   // descriptors the last pselect() watched (its nfds)
} stats;

// The mask pselect() sleeps with: ours, minus SIGINT and SIGTERM (main).
static sigset_t wait_mask;

// ---------------------------------------------------------------- the clients

// Every client we serve, as one bit per descriptor number: bit fd is set
// while fd is a client of ours. pselect() wants the highest descriptor + 1,
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
    // LAB BEGIN add_client: turn away a descriptor >= FD_SETSIZE: log "fd N >= FD_SETSIZE (1024), closing", close it, count it in stats.turned_away, and return
    // LAB STUB: // not written: every descriptor goes into the set, even one past its end
    // FD_SET(1024, &set) would set a bit past the end of the 128-byte
    // bitmap: undefined behaviour, in practice a silent write over whatever
    // lies next to it. The kernel handed us the lowest free number, so this
    // only happens once 1024 descriptors are open; the clients already in
    // the set keep being served.
    if (fd >= FD_SETSIZE) {
        log_msg("fd %d >= FD_SETSIZE (%d), closing", fd, FD_SETSIZE);
        close_or_log(fd);
        stats.turned_away++;
        return;
    }
    // LAB END
    FD_SET(fd, &clients);
    if (fd > max_client_fd)
        max_client_fd = fd;
    client_count++;
    snprintf(peers[fd], PEER_LEN, "%s", peer);
}

// Stops serving FD and closes it.
static void drop_client(int fd)
{
    // Out of the set first: pselect() on a closed descriptor fails with
    // EBADF, and a later client given the same number would be served
    // through a stale bit.
    FD_CLR(fd, &clients);
    client_count--;
    close_or_log(fd);
    // LAB BEGIN drop_client: if FD was the highest client, walk max_client_fd down to the highest one still in the set (-1: none left), so that pselect() watches no more descriptors than it must
    // LAB STUB: // not written: max_client_fd stays at the highest descriptor ever served
    // If it was the highest, walk down to the next one still in the set.
    while (max_client_fd >= 0 && !FD_ISSET(max_client_fd, &clients))
        max_client_fd--;
    // LAB END
}

// Accepts up to ACCEPTS_PER_TURN clients waiting in the backlog. The
// listening socket is non-blocking (see main), so accept4() says EAGAIN when
// the queue is empty instead of putting the whole server to sleep.
static void accept_clients(int listen_fd)
{
    for (int k = 0; k < ACCEPTS_PER_TURN; k++) {
        char peer[PEER_LEN];
        // A blocking socket, whatever the listener is (accept4 without
        // SOCK_NONBLOCK): serve_client's recv() relies on it (net.h).
        int fd = accept_client(listen_fd, peer, sizeof peer);
        if (fd == -1)
            return;
        stats.accepted++;
        add_client(fd, peer);
    }
}

// ---------------------------------------------------------------- sending

// Sends all LEN bytes to FD, sleeping as long as it takes: the naive part.
// Returns 0, or -1 with errno set: EINTR when a stop signal arrived while it
// slept (the bytes not sent are logged), anything else when the client failed.
static int send_all(int fd, const char *p, size_t len)
{
    // LAB BEGIN send_all: send every byte; when the kernel takes no more, sleep in pselect() on this one client's socket with the stop signals unblocked, and give up with EINTR once a stop was asked for
    // LAB STUB: // not written: 01's blocking send() loop: it sleeps in send() with the stop signals
    // LAB STUB: // blocked, so nothing ends its wait for a client that never reads, not even SIGTERM
    // LAB STUB: while (len > 0) {
    // LAB STUB:     stats.sends++;
    // LAB STUB:     ssize_t n = send(fd, p, len, 0);
    // LAB STUB:     if (n == -1)
    // LAB STUB:         return -1;
    // LAB STUB:     p += n;
    // LAB STUB:     len -= (size_t)n;
    // LAB STUB: }
    // LAB STUB: return 0;
    while (len > 0) {
        // MSG_DONTWAIT makes this one call return EAGAIN instead of
        // sleeping when the buffers are full; the socket itself stays
        // blocking. We do the sleeping ourselves, below, because a send()
        // asleep with SIGTERM blocked would never wake for it.
        stats.sends++;
        ssize_t n = send(fd, p, len, MSG_DONTWAIT);
        if (n >= 0) {
            // A short count is normal: the kernel took what fitted.
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;  // EPIPE, ECONNRESET: the client is gone
        // The weak spot: sleep until THIS client makes room. If it never
        // reads, that is never, and every other client waits with it. The
        // stop signals are unblocked while we sleep, so SIGTERM still ends
        // it: their handlers are the only ones that can interrupt us, so
        // EINTR means "stop" (other errors cannot happen on a valid fd).
        // But look at the flag first: the SIGTERM that set it may have been
        // taken already, by this client's earlier wait or by another
        // client's in the same turn of the loop, and none is left to wake
        // this one. (No window between this test and the sleep: the signals
        // are blocked here, so one that comes now stays pending until
        // pselect() unblocks it.)
        if (!stop_requested) {
            stats.send_waits++;
            fd_set writable;
            FD_ZERO(&writable);
            FD_SET(fd, &writable);
            if (pselect(fd + 1, NULL, &writable, NULL, NULL, &wait_mask) != -1)
                continue;  // room again: send the rest
        }
        // A stop (the flag, or EINTR: only the stop handlers can interrupt us), or
        // pselect() failing by itself (ENOMEM), which drops just this client.
        int err = stop_requested ? EINTR : errno;
        if (err == EINTR)
            log_msg("fd %d: %zu bytes not sent (server stopping)", fd, len);
        // log_msg's fprintf may have changed errno: the caller reads it.
        errno = err;
        return -1;
    }
    return 0;
    // LAB END
}

// Serves one ready client: one recv(), then echo what it returned.
// Returns false when the client is finished and must be dropped.
static bool serve_client(int fd)
{
    char buf[16 * 1024];
    // One recv() per readiness, not a loop until the client goes quiet: the
    // socket is blocking, so a second recv() would sleep if nothing more had
    // come, and a busy client must not keep the others waiting anyway.
    // Whatever is left in the kernel, pselect() will report again next turn.
    // (No EINTR here: the stop signals are blocked outside pselect.)
    stats.recvs++;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) {
        // EOF. Every byte it sent is already back on its way, because
        // send_all() only returns once the kernel has taken all of it.
        log_msg("%s closed", peers[fd]);
        return false;
    }
    if (n == -1) {
        log_msg("fd %d: recv: %s, dropping", fd, strerror(errno));
        return false;
    }
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
// pselect() itself fails, which only a bug can cause (returns false).
static bool serve_forever(int listen_fd)
{
    // Checking the flag and then sleeping is safe only because the stop
    // signals are blocked here: one that arrives after this test stays
    // pending, and pselect() returns EINTR for it at once.
    while (!stop_requested) {
        // pselect() overwrites the set we pass with the subset that is ready,
        // so it gets a copy, rebuilt from our own set on every call. That copy,
        // the kernel's walk over descriptors 0..nfds-1 and our scan below are
        // the O(n) of select: they cost the same with 1 busy client or 1000.
        fd_set readable = clients;
        FD_SET(listen_fd, &readable);
        int nfds = (listen_fd > max_client_fd ? listen_fd : max_client_fd) + 1;

        stats.waits++;
        stats.nfds = nfds;
        // LAB BEGIN select_wait: sleep until a descriptor in `readable` is ready, with SIGINT and SIGTERM unblocked only while asleep, so that one sent before the wait ends it at once
        // LAB STUB: // not written: unblocks the signals, then select(): one that lands in between
        // LAB STUB: // is handled before select() sleeps, and select() then sleeps on regardless
        // LAB STUB: sigset_t blocked;
        // LAB STUB: sigprocmask(SIG_SETMASK, &wait_mask, &blocked);
        // LAB STUB: int ready = select(nfds, &readable, NULL, NULL, NULL);
        // LAB STUB: int select_errno = errno;
        // LAB STUB: sigprocmask(SIG_SETMASK, &blocked, NULL);
        // LAB STUB: errno = select_errno;
        // No timeout (NULL): sleep until a descriptor is ready or a stop
        // signal arrives; &wait_mask unblocks those only while we sleep.
        // Only the read set: a client's send waits in send_all instead.
        int ready = pselect(nfds, &readable, NULL, NULL, NULL, &wait_mask);
        // LAB END
        if (ready == -1) {
            if (errno == EINTR)
                continue;  // the while test looks at stop_requested
            log_msg("pselect: %s", strerror(errno));
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
    }
    return true;
}

// ---------------------------------------------------------------- main

int main(int argc, char **argv)
{
    struct options opt;
    parse_options(argc, argv, "server", &opt);

    // Handlers first, then the mask, both before "listening on": a SIGTERM
    // sent as soon as that line appears finds the handler in place and
    // waits, blocked, for the next pselect().
    install_signal_handlers();
    block_stop_signals(&wait_mask);

    int listen_fd = listen_on(opt.host, opt.port);
    if (listen_fd == -1)
        return 1;
    // pselect() saying "readable" for a listening socket means "a connection
    // was waiting when I looked". If the client gives up before we call
    // accept4(), some systems remove it from the queue, and a blocking
    // accept4() would then sleep with every client waiting. Non-blocking, it
    // just says EAGAIN.
    if (set_nonblocking(listen_fd) == -1) {
        close(listen_fd);
        return 1;
    }

    bool stopped = serve_forever(listen_fd);

    // Nothing is pending: every send completed (or was cut off by the stop,
    // and send_all logged what was left), so closing is all there is to do.
    if (client_count > 0)
        log_msg("stopping: closing %d client%s", client_count, client_count == 1 ? "" : "s");
    for (int fd = 0; fd <= max_client_fd; fd++)
        if (FD_ISSET(fd, &clients))
            close_or_log(fd);
    // Closing the listening socket makes the kernel reset every connection
    // still waiting in the backlog: those clients see "connection reset".
    if (close(listen_fd) == -1) {
        log_msg("close: %s", strerror(errno));
        return 1;
    }
    log_msg("stopped after %lu pselect, %lu recv, %lu send calls; %lu send waits; "
            "%lu clients accepted, %lu turned away (fd >= FD_SETSIZE); the last pselect watched %d descriptors",
            stats.waits, stats.recvs, stats.sends, stats.send_waits, stats.accepted,
            stats.turned_away, stats.nfds);
    return stopped ? 0 : 1;
}
