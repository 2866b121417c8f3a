// server.c: one thread, an epoll reactor, that cuts each client's byte stream into frames with
// a codec (--codec fixed:N | line | len | resp | http) and answers frame by frame.
//
// Read this file first, then codec.h (what every decoder returns), then the codec you run.
//
// What changed since 05_threads_queue, and why:
//  1. One thread again: 04's level-triggered epoll loop, without the worker pool. The
//     lesson here is framing, not threads (07 and 08 bring the threads back).
//  2. An input buffer per connection (c->in). TCP delivers bytes, not messages: a read may
//     hold half a frame, or three and a half. The decoder is fed what the buffer holds,
//     says "need more", "a frame" (or a piece of a long one) or "an error", and we drop
//     exactly the bytes it consumed (conn_decode).
//  3. Replies are encoded into the output buffer, all the replies to one read together, and
//     sent with one send() (conn_decode, then the replies loop in conn_handle): a client
//     that pipelines 100 requests gets its 100 replies in one system call, not 100. One
//     send per read, exactly, while the replies stay within --max-output and the kernel
//     takes them all. Past --max-output, decoding pauses, and each send that lifts the
//     pause is followed by more decoding and another send (several per read); a short send
//     leaves the rest to EPOLLOUT flushes on later turns; and after a short send in this
//     turn, the replies wait for EPOLLOUT with no send at all.
//  4. A bad frame ends the connection: the protocol's error where it has one (conn_fail),
//     our FIN, and the rest of what the client sends read and thrown away (conn_linger).
//
// One turn of the loop, epoll_once():
//   1. epoll_pwait() sleeps until a watched socket is ready or a stop signal arrives
//      (SIGINT and SIGTERM are blocked everywhere else)
//   2. for each ready socket: the listening one -> accept_clients(); a client ->
//      conn_handle(): flush queued output, read once into c->in and decode every whole
//      frame in it (conn_read, conn_decode), flush the replies, close it if it is
//      finished, else conn_watch() tells epoll what it waits for, if that changed
// Level-triggered only (04's -m et is gone): one read per ready client per turn, and epoll
// reports what is left next turn. Edge-triggered would save nothing here worth a lesson.
// On SIGINT/SIGTERM, drain_and_close_all() stops accepting and finishes the clients we
// have, for at most DRAIN_MS.
//
// Still not solved: request/response only. A server that must send to a client that did
// not ask (a chat message, a timer firing) needs sessions and timers: 07_chat.

#include "buffer.h"
#include "fixed.h"
#include "http.h"
#include "lenframe.h"
#include "line.h"
#include "net.h"
#include "resp.h"
#include "table.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

// How much one recv() may read, at most: the most one read can add to c->in.
#define READ_CHUNK (64 * 1024)

// The input buffer's ceiling for len, http and fixed (fixed:N above it: N). A len frame
// longer than this minus its header is not waited for: it streams through in pieces
// (lenframe.h), so a 10 MiB frame costs 64 KiB here, not 10 MiB. Line and resp frames are
// handled whole, so their ceiling is the largest frame (in_limit, main).
#define INPUT_MAX (64 * 1024)
// resp: the largest request, all its bulks together (resp.h limits each bulk to 1 MiB).
#define RESP_INPUT_MAX (2 * 1024 * 1024)

#define ACCEPTS_PER_TURN 64   // a flood of new clients must not starve the ones we have (04)
#define ACCEPT_BACKOFF_MS 100 // out of descriptors and without a spare (04, pause_accepting)
#define MAX_EVENTS 128        // ready sockets per epoll_wait(), at most (04)

// After SIGINT/SIGTERM, how long pending replies get to leave (the contract gives 2 s), and
// how long a turn may pass with nothing happening while only lingering clients are left (04).
#define DRAIN_MS 1000
#define LINGER_QUIET_MS 100
// A client we are done with (its bad frame answered, our FIN sent) may go on sending: we read
// and discard it until its EOF, so that our close() never resets the connection before it
// has read our reply. At most this many bytes: past them, close anyway.
#define LINGER_MAX_BYTES (1024 * 1024)

// ---------------------------------------------------------------- connections

// Where a connection is in its life. READING and PAUSED alternate (back-pressure,
// conn_check_backpressure); the others only lead to the close.
enum conn_state {
    CONN_READING,    // reading, decoding and answering
    CONN_PAUSED,     // more than --max-output unsent: not decoding until half has left
    CONN_CLOSING,    // EOF from the client: send what is queued, then close
    CONN_FINISHING,  // no more requests (a bad frame, "Connection: close", the server
                     // stopping): send what is queued, then our FIN
    CONN_LINGERING,  // our FIN sent: discard input until EOF (conn_linger)
    CONN_BROKEN,     // out of memory for its replies: close at once (conn_handle)
};

// One client. The decoder is a union: one codec per server. Its size is the largest
// member's, http's (3.3 KiB: its header table is inline, so decoding allocates nothing).
struct conn {
    struct buffer in;          // bytes read, not yet consumed by the decoder
    struct buffer out;         // replies the kernel has not taken yet
    struct conn *prev, *next;  // every open connection, for drain_and_close_all
    int fd;
    enum conn_state state;
    uint32_t events;          // what epoll watches for us right now (conn_watch)
    size_t lingered;          // CONN_LINGERING: bytes read and thrown away
    // http: the response to the request whose body is being skipped, sent at its end.
    int http_status;          // 0: none waiting
    bool http_keep_alive;
    bool http_head;           // the request was HEAD: its response carries no body
    char peer[64];            // "127.0.0.1:54321", for the log lines
    union {
        struct fixed_decoder fixed;
        struct line_decoder line;
        struct lenframe_decoder len;
        struct resp_decoder resp;
        struct http_decoder http;
    } dec;
};

static int epfd = -1;
static struct options opt;   // the command line (net.h)
static size_t in_limit;      // the input buffer's ceiling for this codec (main)
static struct conn *conns;   // every open connection (a doubly linked list)
static size_t nconns;

// The signal mask epoll_pwait() waits with (epoll_once): ours at start, with SIGINT and
// SIGTERM unblocked. Outside the wait they are blocked.
static sigset_t wait_mask;

// Counted for the "stopped after" line, so that a test can prove from the server which
// paths ran (test.bats reads them). Plain increments on the path.
static unsigned long long n_waits;        // epoll_pwait() calls
static unsigned long long n_recvs;        // recv() calls (conn_linger's included)
static unsigned long long n_mods;         // epoll_ctl(MOD) calls
static unsigned long long n_sends;        // send() calls (conn_flush; an EINTR retry is one more)
static unsigned long long n_short_sends;  // send() took less than offered: the rest waited
static unsigned long long n_flushes;      // conn_flush() calls on EPOLLOUT (or ERR/HUP)
static unsigned long long n_pauses;       // back-pressure: stopped decoding a client
static unsigned long long n_resumes;      // ... and started again
static unsigned long long n_frames;       // whole frames (requests) decoded
static unsigned long long n_piece_frames; // frames streamed in pieces, counted at their BEGIN
                                          // piece: len frames too long to wait for, http bodies
static unsigned long long n_pieces;       // pieces of those frames (echo_piece, http_body_piece)
static unsigned long long n_bad;          // clients dropped for a bad frame (conn_fail)
static size_t in_peak;                    // the largest capacity any c->in reached

// The SET/GET table (resp): bounded, because every byte of it is a client's to fill (table.h).
static struct table table;

// ---------------------------------------------------------------- connections, continued

// Registers FD with epoll and links a new connection for it, with a decoder for the codec.
// Returns 0, or -1 after logging why (the caller still owns FD).
static int conn_add(int fd, const char *peer)
{
    struct conn *c = calloc(1, sizeof *c);  // zeroed: empty buffers, CONN_READING
    if (c == NULL) {
        log_msg("fd %d: out of memory, closing", fd);
        return -1;
    }
    c->fd = fd;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    switch (opt.codec) {
    case CODEC_FIXED:
        fixed_init(&c->dec.fixed, opt.fixed_size);
        break;
    case CODEC_LINE:
        line_init(&c->dec.line, opt.max_frame);
        break;
    case CODEC_LEN:
        // Bodies that fit the input buffer with their header come whole; longer ones in pieces.
        lenframe_init(&c->dec.len, (uint32_t)opt.max_frame, in_limit - LENFRAME_HEADER);
        break;
    case CODEC_RESP:
        resp_init(&c->dec.resp, 0, 0);  // resp.h's limits: 1 MiB per bulk, 1024 arguments
        break;
    case CODEC_HTTP:
        http_init(&c->dec.http, 0, 0, 0);  // http.h's: an 8 KiB head, 100 headers, 1 MiB body
        break;
    }
    c->events = EPOLLIN;
    struct epoll_event ev = {.events = c->events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
        log_msg("fd %d: epoll_ctl(ADD): %s, closing", fd, strerror(errno));
        free(c);  // nothing allocated yet: resp allocates on its first request
        return -1;
    }
    c->next = conns;
    if (conns != NULL)
        conns->prev = c;
    conns = c;
    nconns++;
    return 0;
}

// Closes C's socket and frees everything C owns, C included. (No EPOLL_CTL_DEL: closing
// the last descriptor of a socket takes it out of the epoll set; 04's conn_close says when
// that is not enough.)
static void conn_close(struct conn *c)
{
    close_or_log(c->fd, "client");
    buf_free(&c->in);
    buf_free(&c->out);
    if (opt.codec == CODEC_RESP)
        resp_free(&c->dec.resp);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    nconns--;
    free(c);
}

// Out of memory for C's replies: C is closed as soon as conn_handle sees it. The reply
// writers below then need no error returns: the decode loop stops on the state change.
static void conn_broken(struct conn *c, size_t n)
{
    log_msg("fd %d: out of memory for %zu bytes of output, dropping", c->fd, n);
    c->state = CONN_BROKEN;
}

// Room for N more bytes of output at the end of C's queue, or NULL (C is broken). The
// encoders write there, then buf_commit() says how much they wrote.
static char *out_reserve(struct conn *c, size_t n)
{
    size_t room;
    char *p = buf_reserve(&c->out, n, &room);
    if (p == NULL)
        conn_broken(c, n);
    return p;
}

// Appends N1 bytes at P1, then N2 at P2 (a header and a body), to C's output.
static void out_append2(struct conn *c, const void *p1, size_t n1, const void *p2, size_t n2)
{
    if (buf_append(&c->out, p1, n1) == -1 || buf_append(&c->out, p2, n2) == -1)
        conn_broken(c, n1 + n2);
}

// Pauses decoding C's input once its queued replies pass --max-output, and resumes once
// half of them have left (04: the gap makes each pause count).
static void conn_check_backpressure(struct conn *c)
{
    size_t queued = buf_len(&c->out);
    if (c->state == CONN_READING && queued > opt.max_output) {
        c->state = CONN_PAUSED;
        n_pauses++;
        log_msg("fd %d: %zu bytes unsent > --max-output %zu, not reading until it drains",
                c->fd, queued, opt.max_output);
    } else if (c->state == CONN_PAUSED && queued <= opt.max_output / 2) {
        c->state = CONN_READING;
        n_resumes++;
        log_msg("fd %d: output down to %zu bytes, reading again", c->fd, queued);
    }
}

// Tells epoll what C waits for next, from its state alone, if that differs from what it is
// registered for. Returns 0, or -1 after logging why C must be dropped.
static int conn_watch(struct conn *c)
{
    uint32_t want = 0;
    // EPOLLIN while we read: level-triggered, unread bytes are reported on every turn, so
    // a paused or finishing client must not ask for it, or epoll_wait() returns at once,
    // forever. EPOLLOUT only while something is queued (04).
    if (c->state == CONN_READING || c->state == CONN_LINGERING)
        want |= EPOLLIN;
    if (buf_len(&c->out) > 0)
        want |= EPOLLOUT;
    if (want == c->events)
        return 0;
    n_mods++;
    struct epoll_event ev = {.events = want, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) == -1) {
        log_msg("fd %d: epoll_ctl(MOD): %s, dropping", c->fd, strerror(errno));
        return -1;
    }
    c->events = want;
    return 0;
}

// Sends what C has queued, as much as the kernel takes. Returns 0, or -1 after logging why
// C must be dropped. A short send means the kernel is full: EPOLLOUT calls us back.
static int conn_flush(struct conn *c)
{
    size_t n = buf_len(&c->out);
    ssize_t sent;
    do {
        n_sends++;
        sent = send(c->fd, buf_peek(&c->out), n, 0);
    } while (sent == -1 && errno == EINTR);
    if (sent == -1) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            log_msg("fd %d: send: %s, dropping", c->fd, strerror(errno));
            return -1;
        }
        sent = 0;
    }
    if ((size_t)sent < n)
        n_short_sends++;
    buf_consume(&c->out, (size_t)sent);  // frees the buffer once it empties (buffer.h)
    return 0;
}

// ---------------------------------------------------------------- answering frames

// http: does the request at DATA (LEN bytes) start with the method HEAD? Methods are
// case-sensitive (RFC 9110 9.1): "head" is another method, answered 405 with a body.
static bool http_is_head(const char *data, size_t len)
{
    return len >= 5 && memcmp(data, "HEAD ", 5) == 0;
}

// A bad frame from C (REASON, and for http the status CODE): queue the protocol's error
// where it has one, log, and finish C: no more requests, our FIN once the error is out.
static void conn_fail(struct conn *c, const char *reason, int code)
{
    n_bad++;
    log_msg("client %s: %s, closing", c->peer, reason);
    c->state = CONN_FINISHING;
    char line[256];
    int n = 0;
    switch (opt.codec) {
    case CODEC_LINE:  // the one error a line can have: 05's reply to it
        n = snprintf(line, sizeof line, "ERR %s\n", reason);
        break;
    case CODEC_RESP:  // redis 7's words where redis has them, redis-style otherwise (resp.h)
        n = snprintf(line, sizeof line, "-ERR Protocol error: %s\r\n", reason);
        break;
    case CODEC_HTTP: {
        code = code != 0 ? code : 400;
        // A response to HEAD has no body (http_respond); the failed head is c->in's first bytes.
        bool head = http_is_head(buf_peek(&c->in), buf_len(&c->in));
        n = snprintf(line, sizeof line,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s%s",
                     code, http_reason(code), strlen(reason) + 1, head ? "" : reason,
                     head ? "" : "\n");
        break;
    }
    case CODEC_FIXED:  // any N bytes are a frame: no error to send
    case CODEC_LEN:    // no error frame in the protocol: the close is the answer
        break;
    }
    if (n > 0)
        out_append2(c, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1, "", 0);
}

// fixed, line, len: how many bytes FRAME (LEN bytes) takes re-encoded with the codec, and
// the encoding itself into OUT (NEED bytes, from echo_size). Returns the bytes written.
static size_t echo_size(size_t len)
{
    return opt.codec == CODEC_FIXED ? len
           : opt.codec == CODEC_LINE ? len + 1
                                     : LENFRAME_HEADER + len;
}

static size_t echo_encode(struct conn *c, char *out, size_t need, const char *frame, size_t len)
{
    if (opt.codec == CODEC_FIXED)
        return fixed_encode(&c->dec.fixed, out, need, frame, len);
    if (opt.codec == CODEC_LINE)
        return line_encode(out, need, frame, len);
    return lenframe_encode(out, need, frame, (uint32_t)len);
}

// Echoes FRAME (LEN bytes) re-encoded: written straight into C's output queue, one copy.
static void echo_frame(struct conn *c, const char *frame, size_t len)
{
    size_t need = echo_size(len);
    char *p = out_reserve(c, need);
    if (p != NULL)
        buf_commit(&c->out, echo_encode(c, p, need, frame, len));
}

// len: one piece of a frame too long to wait for. The echo streams too: the header (the
// whole frame's length, known from the first piece) before the first piece's bytes, then
// each piece's bytes as they come. The input buffer never holds more than one piece.
static void echo_piece(struct conn *c, const struct codec_result *r)
{
    // LAB BEGIN lenframe_decode: the echo of a frame delivered in pieces: on the BEGIN piece, count the frame and queue the 4-byte header for the whole frame (r->total, lenframe_header); then queue the piece's bytes (out_append2)
    // LAB STUB: (void)c;  // not written: the pieces are not echoed
    // LAB STUB: (void)r;
    n_pieces++;
    unsigned char hdr[LENFRAME_HEADER];
    size_t hlen = 0;
    if (r->flags & CODEC_PIECE_BEGIN) {
        n_piece_frames++;
        lenframe_header(hdr, (uint32_t)r->total);
        hlen = sizeof hdr;
    }
    out_append2(c, hdr, hlen, r->frame, r->len);
    // LAB END
}

// resp: the reply helpers. Each sizes its reply (an encoder called with CAP 0 writes
// nothing and says how much it needs: resp.h), reserves it, writes it.
static void reply_simple(struct conn *c, const char *s)
{
    size_t n = resp_simple(NULL, 0, s);
    char *p = out_reserve(c, n);
    if (p != NULL)
        buf_commit(&c->out, resp_simple(p, n, s));
}

static void reply_error(struct conn *c, const char *s)
{
    size_t n = resp_error(NULL, 0, s);
    char *p = out_reserve(c, n);
    if (p != NULL)
        buf_commit(&c->out, resp_error(p, n, s));
}

static void reply_bulk(struct conn *c, const char *s, size_t len)
{
    size_t n = resp_bulk(NULL, 0, s, len);
    char *p = out_reserve(c, n);
    if (p != NULL)
        buf_commit(&c->out, resp_bulk(p, n, s, len));
}

static void reply_null(struct conn *c)
{
    size_t n = resp_null(NULL, 0);
    char *p = out_reserve(c, n);
    if (p != NULL)
        buf_commit(&c->out, resp_null(p, n));
}

// Copies the N bytes at P to OUT, each byte outside printable ASCII as '?'. Returns N.
static size_t shown_bytes(char *out, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '?';
    return n;
}

// Is argument 0 (N bytes at P) the command NAME, in any case (as redis takes them)?
static bool is_command(const char *p, size_t n, const char *name)
{
    return n == strlen(name) && strncasecmp(p, name, n) == 0;
}

// resp: answers the request just decoded from DATA (d->argc arguments, resp.h).
static void resp_answer(struct conn *c, const char *data)
{
    const struct resp_decoder *d = &c->dec.resp;
    if (d->argc == 0)
        return;  // an empty line or "*0": redis answers nothing, and so do we
    size_t n0, n1, n2;
    const char *cmd = resp_arg(d, data, 0, &n0);
    const char *name = NULL;  // the command, for the wrong-arguments error
    if (is_command(cmd, n0, "PING")) {
        if (d->argc <= 2) {
            if (d->argc == 1) {
                reply_simple(c, "PONG");
            } else {
                const char *x = resp_arg(d, data, 1, &n1);
                reply_bulk(c, x, n1);
            }
            return;
        }
        name = "ping";
    } else if (is_command(cmd, n0, "ECHO")) {
        if (d->argc == 2) {
            const char *x = resp_arg(d, data, 1, &n1);
            reply_bulk(c, x, n1);
            return;
        }
        name = "echo";
    } else if (is_command(cmd, n0, "SET")) {
        if (d->argc == 3) {
            const char *k = resp_arg(d, data, 1, &n1);
            const char *v = resp_arg(d, data, 2, &n2);
            const char *err = table_set(&table, k, n1, v, n2);
            if (err != NULL)
                reply_error(c, err);
            else
                reply_simple(c, "OK");
            return;
        }
        name = "set";
    } else if (is_command(cmd, n0, "GET")) {
        if (d->argc == 2) {
            const char *k = resp_arg(d, data, 1, &n1);
            const char *v;
            if (table_get(&table, k, n1, &v, &n2))
                reply_bulk(c, v, n2);
            else
                reply_null(c);
            return;
        }
        name = "get";
    }
    char msg[512];
    if (name != NULL) {
        snprintf(msg, sizeof msg, "ERR wrong number of arguments for '%s' command", name);
    } else {
        // redis 7's words and cuts: the name (at most 128 bytes), then the arguments, each
        // quoted and followed by a space, until 128 bytes of them are shown. Any byte outside
        // printable ASCII is shown as '?': a CR or LF would end our reply line early, an
        // escape sequence would reach the client's terminal (redis turns CR and LF into
        // spaces and sends the others raw).
        size_t k = (size_t)snprintf(msg, sizeof msg, "ERR unknown command '");
        k += shown_bytes(msg + k, cmd, n0 < 128 ? n0 : 128);
        k += (size_t)snprintf(msg + k, sizeof msg - k, "', with args beginning with: ");
        size_t args_at = k;
        for (size_t i = 1; i < d->argc && k - args_at < 128; i++) {
            size_t room = 128 - (k - args_at);
            const char *a = resp_arg(d, data, i, &n1);
            msg[k++] = '\'';
            k += shown_bytes(msg + k, a, n1 < room ? n1 : room);
            msg[k++] = '\'';
            msg[k++] = ' ';
        }
        msg[k] = '\0';
    }
    reply_error(c, msg);
}

// http: queues a response with a text body. KEEP_ALIVE decides the Connection header; a
// response that closes also finishes C (no more requests are read). The response to a HEAD
// (c->http_head) has the same head, Content-Length included, and never a body (RFC 9112
// 6.3): a client reads no body after it, so a body sent anyway would be read as the start
// of the next response (curl: "Excess found").
static void http_respond(struct conn *c, int status, bool keep_alive, const char *body)
{
    // LAB BEGIN http_head: the response's head: status line, Content-Type, Content-Length, Connection (keep-alive or close), the empty line, the body; when not keep-alive, finish the connection after it
    // LAB STUB: (void)status;  // not written: no response, the connection ends
    // LAB STUB: (void)keep_alive;
    // LAB STUB: (void)body;
    // LAB STUB: (void)http_reason;
    // LAB STUB: c->state = CONN_FINISHING;
    char head[256];
    size_t blen = strlen(body);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: %s\r\n%s\r\n",
                     status, http_reason(status), blen, keep_alive ? "keep-alive" : "close",
                     status == 405 ? "Allow: GET\r\n" : "");
    if (!keep_alive)
        c->state = CONN_FINISHING;
    out_append2(c, head, (size_t)n, body, c->http_head ? 0 : blen);
    // LAB END
}

// The text each status we answer carries as its body.
static const char *http_body(int status)
{
    return status == 200   ? "hello from 06_codecs: one HTTP/1.1 request head, decoded\n"
           : status == 404 ? "not found\n"
                           : "method not allowed\n";
}

// http: the head just decoded from DATA. Decides the response; sends it now, or, when a body
// follows, once the body has been read past (http_body_piece): the response comes after the
// whole request, and the body's bytes are never taken for the next request.
static void http_answer(struct conn *c, const char *data)
{
    const struct http_request *req = &c->dec.http.req;
    const char *method = data + req->method.off;
    const char *target = data + req->target.off;
    int status;
    if (req->method.len != 3 || memcmp(method, "GET", 3) != 0)
        status = 405;
    else if (req->target.len == 1 && target[0] == '/')
        status = 200;
    else
        status = 404;
    c->http_status = status;
    c->http_keep_alive = req->keep_alive != 0;
    c->http_head = http_is_head(data, req->method.len + 1);
    if (req->content_length > 0 && req->expect_continue) {
        // The client waits for "100 Continue" before it sends the body (curl: up to 1 s).
        // We want no body, so we answer now instead; and close, because whether the body
        // still comes is the client's choice: the bytes after this head can no longer be
        // framed (RFC 9110 10.1.1).
        c->http_status = 0;
        http_respond(c, status, false, http_body(status));
        return;
    }
    if (req->content_length > 0)
        return;  // the body's END piece sends it
    c->http_status = 0;
    http_respond(c, status, c->http_keep_alive, http_body(status));
}

// http: a piece of a request body. We serve no request with a body, so it is skipped.
static void http_body_piece(struct conn *c, const struct codec_result *r)
{
    n_pieces++;
    if (r->flags & CODEC_PIECE_BEGIN)
        n_piece_frames++;  // a body is a frame streamed in pieces, as a long len frame is
    if (r->flags & CODEC_PIECE_END) {
        http_respond(c, c->http_status, c->http_keep_alive, http_body(c->http_status));
        c->http_status = 0;
    }
}

// Runs C's decoder once over DATA (LEN bytes: c->in's unread bytes).
static struct codec_result decode_once(struct conn *c, const char *data, size_t len)
{
    switch (opt.codec) {
    case CODEC_FIXED:
        return fixed_decode(&c->dec.fixed, data, len);
    case CODEC_LINE:
        return line_decode(&c->dec.line, data, len);
    case CODEC_LEN:
        return lenframe_decode(&c->dec.len, data, len);
    case CODEC_RESP:
        return resp_decode(&c->dec.resp, data, len);
    case CODEC_HTTP:
        return http_decode(&c->dec.http, data, len);
    }
    return codec_error("no codec", 0);  // not reached: main sets one
}

// Handles one frame or piece R, decoded from DATA: queues its reply.
static void handle_frame(struct conn *c, const char *data, const struct codec_result *r)
{
    if (r->status == CODEC_FRAME)
        n_frames++;
    if (opt.codec == CODEC_RESP)
        resp_answer(c, data);
    else if (opt.codec == CODEC_HTTP && r->status == CODEC_FRAME)
        http_answer(c, data);
    else if (opt.codec == CODEC_HTTP)
        http_body_piece(c, r);
    else if (r->status == CODEC_PIECE)
        echo_piece(c, r);
    else
        echo_frame(c, r->frame, r->len);
}

// Decodes every whole frame (and piece) in C's input buffer and queues the replies, until
// the decoder needs more bytes, or C is paused, finished (a bad frame: conn_fail) or broken.
static void conn_decode(struct conn *c)
{
    while (c->state == CONN_READING) {
        const char *data = buf_peek(&c->in);
        size_t len = buf_len(&c->in);
        struct codec_result r = decode_once(c, data, len);
        if (r.status == CODEC_NEED_MORE) {
            if (len >= in_limit)
                conn_fail(c, "request larger than the input buffer", 431);
            return;
        }
        if (r.status == CODEC_ERROR) {
            conn_fail(c, r.error, r.code);
            return;
        }
        // The frame is a view into c->in: handle it before the bytes are dropped
        // (buf_consume may move or free the buffer).
        handle_frame(c, data, &r);
        buf_consume(&c->in, r.consumed);
        conn_check_backpressure(c);
    }
}

// Is C in the middle of a frame: bytes of one in its input, or a long frame's pieces not
// all delivered? (An EOF then cut a frame short.)
static bool conn_mid_frame(const struct conn *c)
{
    if (buf_len(&c->in) > 0)
        return true;
    if (opt.codec == CODEC_LEN)
        return c->dec.len.remaining > 0;
    if (opt.codec == CODEC_HTTP)
        return c->dec.http.body_left > 0;
    return false;
}

// Reads once from C into its input buffer, up to READ_CHUNK (never past in_limit), and
// decodes what came. At EOF, C goes to CONN_CLOSING. Returns 0, or -1 after logging why C
// must be dropped.
static int conn_read(struct conn *c)
{
    size_t room;
    char *p = buf_reserve_capped(&c->in, READ_CHUNK, in_limit, &room);
    if (p == NULL) {
        log_msg("fd %d: out of memory for input, dropping", c->fd);
        return -1;
    }
    if (c->in.cap > in_peak)
        in_peak = c->in.cap;
    if (room == 0) {  // cannot happen: conn_decode fails a client whose buffer is full
        conn_fail(c, "request larger than the input buffer", 431);
        return 0;
    }
    ssize_t n;
    do {
        n_recvs++;
        n = recv(c->fd, p, room, 0);
    } while (n == -1 && errno == EINTR);
    if (n == -1) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        log_msg("fd %d: recv: %s, dropping", c->fd, strerror(errno));
        return -1;
    }
    if (n == 0) {
        c->state = CONN_CLOSING;  // EOF: the replies still queued will follow
        if (conn_mid_frame(c))
            log_msg("client %s: EOF in the middle of a frame (%zu bytes of it unread), closing",
                    c->peer, buf_len(&c->in));
        return 0;
    }
    buf_commit(&c->in, (size_t)n);
    conn_decode(c);
    return 0;
}

// Client C is FINISHING or LINGERING: once its output is out, send our FIN, then read and
// discard what it still sends: close() with unread input would send a reset, and a reset
// makes the client's kernel throw away what it has not read yet, our error reply included.
// Returns true to keep waiting, false when closing is safe: EOF, an error, or
// LINGER_MAX_BYTES thrown away. (A client that sends nothing and never closes is closed by
// the server's stop: drain_and_close_all.)
static bool conn_linger(struct conn *c)
{
    if (c->state != CONN_LINGERING) {
        c->state = CONN_LINGERING;
        if (shutdown(c->fd, SHUT_WR) == -1)
            return false;  // the connection is gone already
    }
    char sink[4096];  // the bytes are dropped: any buffer will do
    n_recvs++;
    ssize_t n = recv(c->fd, sink, sizeof sink, 0);
    if (n > 0) {
        c->lingered += (size_t)n;
        return c->lingered < LINGER_MAX_BYTES;
    }
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return true;  // nothing yet: epoll brings us back
    return false;     // EOF, or the connection failed
}

// Serves client C after epoll reported REVENTS for it. Returns false when C is finished
// or failed: the caller closes it.
static bool conn_handle(struct conn *c, uint32_t revents)
{
    // EPOLLERR and EPOLLHUP come unasked. As in 03, we do the I/O we would do anyway, and
    // the failing send() or recv() says what went wrong.
    bool readable = (revents & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) != 0;

    // Output first: it frees room, and may lift the back-pressure on input.
    bool kernel_full = false;  // a send this turn came up short: no point in another
    if ((revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && buf_len(&c->out) > 0) {
        n_flushes++;
        if (conn_flush(c) == -1)
            return false;
        kernel_full = buf_len(&c->out) > 0;
    }
    if (c->state == CONN_READING && readable) {
        // Once per turn: level-triggered, what we leave is reported again next turn, and
        // meanwhile the other clients get theirs.
        if (conn_read(c) == -1)
            return false;
    } else if (c->state == CONN_LINGERING && readable) {
        if (!conn_linger(c)) {
            log_msg("fd %d closed", c->fd);
            return false;
        }
    }
    // The replies to what we decoded: one send for all of them, now (unless a send came up
    // short this turn: then EPOLLOUT brings us back). If that lifts a pause, the requests
    // already in c->in are decoded now, not after the next read: the client may be waiting
    // for these very replies before it sends anything more, and then no read would ever
    // come. Each round decodes bytes that were waiting, so it ends.
    for (;;) {
        // LAB BEGIN conn_replies: send the replies just queued, in this turn, with one send for all of them (conn_flush), unless a send already came up short this turn (kernel_full: the kernel is full, EPOLLOUT brings us back); note whether this one came up short
        // LAB STUB: (void)kernel_full;  // not written: every reply waits for EPOLLOUT, a turn later
        if (buf_len(&c->out) > 0 && !kernel_full) {
            if (conn_flush(c) == -1)
                return false;
            kernel_full = buf_len(&c->out) > 0;
        }
        // LAB END
        if (c->state != CONN_PAUSED)
            break;
        conn_check_backpressure(c);
        if (c->state != CONN_READING)
            break;  // still paused: EPOLLOUT brings us back
        conn_decode(c);
    }
    if (c->state == CONN_BROKEN)
        return false;
    if (c->state == CONN_CLOSING && buf_len(&c->out) == 0) {
        log_msg("fd %d closed", c->fd);
        return false;
    }
    if (c->state == CONN_FINISHING && buf_len(&c->out) == 0 && !conn_linger(c)) {
        log_msg("fd %d closed", c->fd);
        return false;
    }
    return conn_watch(c) == 0;
}

// ---------------------------------------------------------------- out of descriptors

// Out of descriptors, accept() fails with EMFILE or ENFILE and the client stays in the
// backlog, which level-triggered epoll then reports on every turn: a busy loop. 04's answer,
// unchanged: a spare descriptor on /dev/null, closed to accept and refuse one waiting
// client at a time (refuse_one_client); without it, a back-off (pause_accepting). 04's
// server.c tells the whole story at its spare_fd.
static int spare_fd = -1;
static long long accept_resume_at = -1;  // backing off: when to resume (now_ms); else -1
static unsigned long accept_pauses;      // back-offs in a row, for one log line each way

static int open_spare(void)
{
    if (spare_fd != -1)
        return 0;
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (spare_fd == -1)
        return -1;
    if (accept_pauses > 0) {
        log_msg("spare descriptor open again after %lu accept pause%s", accept_pauses,
                accept_pauses == 1 ? "" : "s");
        accept_pauses = 0;
    }
    return 0;
}

static int refuse_one_client(int listen_fd)
{
    close_or_log(spare_fd, "spare descriptor");
    spare_fd = -1;
    int fd = accept(listen_fd, NULL, NULL);  // closed at once: no flags to ask for
    int accept_err = errno;
    if (fd != -1)
        close_or_log(fd, "refused client");
    (void)open_spare();  // if it fails, the next EMFILE backs off, and says so
    errno = accept_err;
    return fd == -1 ? -1 : 0;
}

static void pause_accepting(int listen_fd, int err)
{
    if (epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == -1) {
        log_msg("epoll_ctl(DEL) listening socket: %s", strerror(errno));
        return;
    }
    accept_resume_at = now_ms() + ACCEPT_BACKOFF_MS;
    if (accept_pauses++ == 0)
        log_msg("accept: %s, and no spare descriptor: accepting paused, retrying every %d ms",
                strerror(err), ACCEPT_BACKOFF_MS);
}

static int accept_timeout_ms(void)
{
    if (accept_resume_at == -1)
        return -1;
    long long left = accept_resume_at - now_ms();
    return left > 0 ? (int)left : 0;
}

static void resume_accepting(int listen_fd)
{
    if (accept_resume_at == -1 || now_ms() < accept_resume_at)
        return;
    (void)open_spare();
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};  // as in main
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) == -1) {
        log_msg("epoll_ctl(ADD) listening socket: %s", strerror(errno));
        accept_resume_at = now_ms() + ACCEPT_BACKOFF_MS;
        return;
    }
    accept_resume_at = -1;
}

// Accepts up to ACCEPTS_PER_TURN waiting clients (the listening socket is non-blocking).
static void accept_clients(int listen_fd)
{
    for (int k = 0; k < ACCEPTS_PER_TURN; k++) {
        char peer[64];
        int fd = accept_client(listen_fd, peer, sizeof peer);  // non-blocking, cloexec, NODELAY
        if (fd != -1) {
            if (conn_add(fd, peer) == -1)
                close_or_log(fd, "client");
            continue;
        }
        int err = errno;
        if (err != EMFILE && err != ENFILE)
            return;  // EAGAIN (nobody left), EINTR, or logged already
        if (open_spare() == -1) {
            pause_accepting(listen_fd, err);
            return;
        }
        if (refuse_one_client(listen_fd) == -1) {
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_msg("accept: %s", strerror(errno));
            if (spare_fd == -1)
                pause_accepting(listen_fd, err);
            return;
        }
        log_msg("accept: %s; dropped one pending connection", strerror(err));
    }
}

// ---------------------------------------------------------------- the loop

// One turn: wait up to TIMEOUT_MS (-1: as long as it takes), then serve whatever is ready.
// Returns how many events it served (0 after a signal or the timeout), or -1 only if
// epoll_pwait() itself failed (a bug).
static int epoll_once(int listen_fd, int timeout_ms)
{
    struct epoll_event events[MAX_EVENTS];
    // SIGINT and SIGTERM are unblocked only inside this call (wait_mask): a signal sent
    // while we were busy waits, pending, and is delivered as the wait starts (04 says why
    // a flag checked before a plain epoll_wait() would not do).
    n_waits++;
    int ready = epoll_pwait(epfd, events, MAX_EVENTS, timeout_ms, &wait_mask);
    if (ready == -1) {
        if (errno == EINTR)
            return 0;  // the caller looks at stop_requested
        log_msg("epoll_wait: %s", strerror(errno));
        return -1;
    }
    for (int i = 0; i < ready; i++) {
        struct conn *c = events[i].data.ptr;
        if (c == NULL) {  // the listening socket's tag (main)
            accept_clients(listen_fd);
            continue;
        }
        // Freeing C here is safe with events[i+1..] still to serve: a batch reports a
        // socket once, and serving one client never closes another.
        if (!conn_handle(c, events[i].events))
            conn_close(c);
    }
    return ready;
}

static bool all_lingering(void)
{
    for (struct conn *c = conns; c != NULL; c = c->next)
        if (c->state != CONN_LINGERING)
            return false;
    return true;
}

// After SIGINT/SIGTERM: accept no one, decode nothing new, give the queued replies up to
// DRAIN_MS to leave (then our FIN), then close whatever is left.
static void drain_and_close_all(int listen_fd)
{
    if (accept_resume_at == -1 && epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == -1)
        log_msg("epoll_ctl(DEL) listening socket: %s", strerror(errno));

    // How much is still ours to send: the drain test checks that it was more than nothing,
    // then that every byte of it arrived.
    size_t pending = 0;
    for (struct conn *c = conns; c != NULL; c = c->next)
        pending += buf_len(&c->out);
    // And how many frames were decoded so far: the stop line's count must be the same (a
    // stopping server decodes nothing new, a paused client's waiting requests included).
    log_msg("stopping: finishing %zu connection%s, %zu bytes pending, for up to %d ms; %llu frames so far",
            nconns, nconns == 1 ? "" : "s", pending, DRAIN_MS, n_frames);

    for (struct conn *c = conns, *next; c != NULL; c = next) {
        next = c->next;  // conn_close(c) frees c; c->next must be read first
        if (c->state == CONN_CLOSING || c->state == CONN_LINGERING)
            continue;  // on their way out already
        c->state = CONN_FINISHING;
        if (buf_len(&c->out) == 0 && !conn_linger(c)) {
            log_msg("fd %d closed (server stopping)", c->fd);
            conn_close(c);
        } else if (conn_watch(c) == -1) {
            conn_close(c);
        }
    }

    // The same turns as before, with a deadline. A quiet turn with only lingering clients
    // left: they went quiet without closing, and waiting for the deadline changes nothing.
    long long deadline = now_ms() + DRAIN_MS;
    while (nconns > 0) {
        long long left = deadline - now_ms();
        if (left <= 0)
            break;
        int ready = epoll_once(listen_fd, left < LINGER_QUIET_MS ? (int)left : LINGER_QUIET_MS);
        if (ready == -1 || (ready == 0 && all_lingering()))
            break;
    }
    while (conns != NULL) {
        if (buf_len(&conns->out) > 0)
            log_msg("fd %d: %zu bytes still unsent, closing", conns->fd, buf_len(&conns->out));
        else
            log_msg("fd %d: replies sent but no EOF from the client, closing", conns->fd);
        conn_close(conns);
    }
}

// ---------------------------------------------------------------- main

static const char *codec_name(void)
{
    static char name[32];
    switch (opt.codec) {
    case CODEC_FIXED:
        snprintf(name, sizeof name, "fixed:%zu", opt.fixed_size);
        return name;
    case CODEC_LINE:
        return "line";
    case CODEC_LEN:
        return "len";
    case CODEC_RESP:
        return "resp";
    case CODEC_HTTP:
        return "http";
    }
    return "?";
}

int main(int argc, char **argv)
{
    parse_options(argc, argv, "server", &opt);
    // The input buffer's ceiling (INPUT_MAX says why 64 KiB): line frames are held whole,
    // with their "\r\n"; fixed ones too.
    switch (opt.codec) {
    case CODEC_LINE:
        in_limit = opt.max_frame + 2;
        break;
    case CODEC_FIXED:
        in_limit = opt.fixed_size > INPUT_MAX ? opt.fixed_size : INPUT_MAX;
        break;
    case CODEC_RESP:
        in_limit = RESP_INPUT_MAX;
        break;
    case CODEC_LEN:
    case CODEC_HTTP:
        in_limit = INPUT_MAX;
        break;
    }

    // Handlers first, so that a SIGTERM sent as soon as we print "listening on" finds
    // them; then SIGINT and SIGTERM are delivered only inside epoll_pwait() (epoll_once).
    install_signal_handlers();
    if (block_stop_signals(&wait_mask) == -1)
        return 1;
    raise_fd_limit();  // epoll, not select: fds past 1023 are fine

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd == -1) {
        log_msg("epoll_create1: %s", strerror(errno));
        return 1;
    }
    int listen_fd = listen_on(opt.host, opt.port);
    if (listen_fd == -1) {
        close(epfd);
        return 1;
    }
    // data.ptr == NULL tags the listening socket: no conn has that address.
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    bool ok = set_nonblocking(listen_fd) == 0;
    if (ok && epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) == -1) {
        log_msg("epoll_ctl(ADD) listening socket: %s", strerror(errno));
        ok = false;
    }
    if (!ok) {
        close(listen_fd);
        close(epfd);
        return 1;
    }
    if (open_spare() == -1)
        log_msg("open /dev/null (spare descriptor): %s", strerror(errno));
    // --max-frame applies to line and len alone (net.h): named only for them.
    char max_frame[48] = "";
    if (opt.codec == CODEC_LINE || opt.codec == CODEC_LEN)
        snprintf(max_frame, sizeof max_frame, ", --max-frame %zu", opt.max_frame);
    log_msg("--codec %s%s, input buffer up to %zu bytes, --max-output %zu", codec_name(),
            max_frame, in_limit, opt.max_output);

    while (ok && !stop_requested) {
        ok = epoll_once(listen_fd, accept_timeout_ms()) >= 0;
        resume_accepting(listen_fd);
    }

    drain_and_close_all(listen_fd);
    if (close(listen_fd) == -1) {
        log_msg("close: %s", strerror(errno));
        ok = false;
    }
    if (spare_fd != -1)
        close_or_log(spare_fd, "spare descriptor");
    close_or_log(epfd, "epoll");
    table_free(&table);
    log_msg("stopped after %llu epoll_wait, %llu recv, %llu epoll_ctl(MOD) calls; "
            "%llu sends, %llu short sends, %llu flushes, %llu pauses, %llu resumes; "
            "%llu frames, %llu streamed in %llu pieces, %llu bad clients; "
            "input buffer peak %zu bytes; "
            "%llu buffer allocations, %llu reallocations, %llu bytes moved",
            n_waits, n_recvs, n_mods, n_sends, n_short_sends, n_flushes, n_pauses, n_resumes,
            n_frames, n_piece_frames, n_pieces, n_bad, in_peak, buf_stats.allocs,
            buf_stats.resizes, buf_stats.moved);
    return ok ? 0 : 1;
}
