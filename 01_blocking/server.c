// server.c: an iterative echo server, the smallest server that works.
// It serves one client at a time: accept, echo until EOF, close, accept the next.
//
// Read this file first, then net.c, which holds the calls named here.
//
// The life of a TCP server, as system calls:
//
//   socket()   make an endpoint                         -+
//   bind()     give it an address: 127.0.0.1 port 7001   +- listen_on()
//   listen()   let the kernel accept connections for us -+
//   accept()   take the next connection off the queue:   -- accept_client()
//              it returns a NEW descriptor for that client
//   recv()     read bytes from that connection          -+- echo_client()
//   send()     write bytes to it                        -+
//   close()    hang up; back to accept()
//
// Every one of these calls is *blocking*: when there is nothing to do yet
// (no client has connected, the client has not sent anything, the client
// reads so slowly that our send buffer is full) the call does not return. The kernel puts the
// process to sleep and wakes it when the call can make progress. That keeps
// the code a straight line, and it is also this server's limit: while it
// sleeps in recv() for client A, nobody calls accept(), so client B waits.
//
// Client B is not refused, though. Its connect() succeeds at once: the
// kernel completes the TCP handshake by itself and parks the connection in
// the listen backlog. B can even send; its bytes wait in the kernel's buffer.
// B just gets no reply until A leaves and the loop comes back to accept().
// 02_select removes that wait without adding processes or threads.

#include "net.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------- the loop

// Serves clients one after another until SIGINT or SIGTERM.
static void serve_forever(int listen_fd)
{
    // LAB BEGIN serve_one_by_one: accept one client, echo it until it leaves, close it, repeat until stop_requested
    // LAB STUB: // not written: serves the first client only, then returns (no loop): the second finds no server
    // LAB STUB: char peer[PEER_LEN];
    // LAB STUB: int fd = accept_client(listen_fd, peer, sizeof peer);
    // LAB STUB: if (fd != -1) {
    // LAB STUB:     echo_client(fd, peer);
    // LAB STUB:     close_or_log(fd);
    // LAB STUB: }
    while (!stop_requested) {
        char peer[PEER_LEN];
        // Sleeps until a client arrives. A signal makes it return -1 with
        // errno EINTR, and the while condition above sees stop_requested.
        // (accept_client looks at the flag once more itself, with the signals
        // blocked, so one landing between that test and the wait is not lost.)
        int fd = accept_client(listen_fd, peer, sizeof peer);
        if (fd == -1)
            continue;

        // The listening descriptor and the client's descriptor are different
        // sockets: listen_fd only ever produces connections; fd is one
        // conversation. While we are in here, listen_fd is not looked at.
        echo_client(fd, peer);

        // close() frees the descriptor and, as this was the last reference
        // to the socket, sends the client our FIN (or a reset if unread data
        // was still queued for us). Its result is worth checking even here.
        close_or_log(fd);
    }
    // LAB END
    // A note on the flag check: the while test alone is not enough. A signal
    // that lands after it but before accept() starts to sleep would be noticed
    // only when the next client arrives. accept_client closes that window: it
    // checks the flag with the signals blocked and unblocks them only inside
    // ppoll(), in one step (wait_for_client in net.c).
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

    serve_forever(listen_fd);

    // Closing the listening socket makes the kernel reset every connection
    // still waiting in the backlog: those clients see "connection reset".
    if (close(listen_fd) == -1) {
        log_msg("close: %s", strerror(errno));
        return 1;
    }
    log_msg("stopped");
    return 0;
}
