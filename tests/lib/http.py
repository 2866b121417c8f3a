#!/usr/bin/env python3
"""http: a raw-socket HTTP/1.1 client for 08_framework's examples/http_server.

Python 3 standard library only. Every response is checked byte for byte against the one
the server documents (README.md, section 9): status line, Content-Length, Connection,
the route's headers, the empty line, the body. Each subcommand prints `ok: ...` and exits 0,
or `FAIL: ...` and exits 1. Every wait has a deadline; TIMEOUT_SCALE stretches them all.

  errors     every refusal and error status, exact bytes, then a clean close (EOF, no reset)
  keepalive  1.1 keeps, "Connection: close" closes, 1.0 closes unless it asks keep-alive
  pipeline   N mixed requests in one stream cut at random points, answered in order
  limits     head of max-head bytes and one more, body of max-body bytes and one more
  isolated   a bad request closes its own connection only
  stats      /stats counters against what this client sent and received
  idle       an idle keep-alive connection is closed after --idle seconds, not before
  linger     a client streaming a body the server refused (413): --mode full, the whole 413
             then EOF, never a reset (--count runs); --mode bytes, it then never stops
             sending: reset once the server has discarded its bound; --mode time, one byte
             every 50 ms after the 413: reset about --linger seconds after it
  sendeof    GET / then shutdown(SHUT_WR): the whole answer, then EOF
  short      --count connections, each one GET / with "Connection: close": the answer, EOF
"""

import argparse
import errno
import json
import os
import random
import select
import socket
import sys
import time

TIMEOUT_SCALE = float(os.environ.get("TIMEOUT_SCALE", "1") or "1")
HELLO = b"Hello from the rx http_server.\n"


class Failure(Exception):
    pass


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def response(status, reason, body, ctype="text/plain", close=False, extra="", head=False):
    """The exact bytes http_server sends (rx_http_response's order: Content-Length,
    Connection, then the route's headers)."""
    h = "HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: %s\r\n%s" % (
        status, reason, len(body), "close" if close else "keep-alive", extra)
    if ctype:
        h += "Content-Type: %s\r\n" % ctype
    return (h + "\r\n").encode() + (b"" if head else body)


def hello(close=False, head=False):
    return response(200, "OK", HELLO, close=close, head=head)


def not_found(close=False, head=False):
    return response(404, "Not Found", b"not found\n", close=close, head=head)


def not_allowed(close=False):
    return response(405, "Method Not Allowed", b"method not allowed\n", ctype=None, close=close,
                    extra="Allow: GET, HEAD\r\n")


REASONS = {400: "Bad Request", 413: "Content Too Large", 431: "Request Header Fields Too Large",
           501: "Not Implemented", 505: "HTTP Version Not Supported"}


def refusal(status, msg):
    return response(status, REASONS[status], (msg + "\n").encode(), close=True)


def show(b):
    return repr(bytes(b[:160]))


def recv_exact(s, n, name):
    buf = bytearray()
    deadline = time.monotonic() + scaled(5)
    while len(buf) < n:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(n - len(buf))
        except socket.timeout:
            raise Failure("%s: %d of %d bytes within the deadline: %s" % (name, len(buf), n, show(buf)))
        except ConnectionResetError:
            raise Failure("%s: reset after %d of %d bytes: %s" % (name, len(buf), n, show(buf)))
        if not chunk:
            raise Failure("%s: EOF after %d of %d bytes: %s" % (name, len(buf), n, show(buf)))
        buf += chunk
    return bytes(buf)


def expect(s, want, name):
    got = recv_exact(s, len(want), name)
    if got != want:
        off = next(i for i in range(len(want)) if want[i] != got[i])
        raise Failure("%s: differs at byte %d:\n  want %r\n  got  %r" % (name, off, want, got))


def expect_eof(s, name):
    """The server closes cleanly: EOF with no byte more, and no reset."""
    s.settimeout(scaled(5))
    try:
        extra = s.recv(4096)
    except socket.timeout:
        raise Failure("%s: the connection stayed open (want a close)" % name)
    except ConnectionResetError:
        raise Failure("%s: reset (want a clean close)" % name)
    if extra:
        raise Failure("%s: %d bytes more before the close: %s" % (name, len(extra), show(extra)))


def expect_open(s, port, name):
    """The connection stays open: a second request on it gets its answer."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    expect(s, hello(), name + " (then a GET / on the same connection)")


def exchange(port, req, want, name, closed):
    s = connect(port)
    try:
        s.sendall(req)
        expect(s, want, name)
        if closed:
            expect_eof(s, name)
        else:
            expect_open(s, port, name)
    finally:
        s.close()


# ---------------------------------------------------------------------------- scenarios

def cmd_errors(a):
    H = "Host: t\r\n"
    cases = [
        # (name, request, response, closed)
        ("GET / is the text", b"GET / HTTP/1.1\r\n" + H.encode() + b"\r\n", hello(), False),
        ("HEAD / has the GET's headers and no body", b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n",
         hello(head=True), False),
        ("a query string is the same path", b"GET /?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", hello(), False),
        ("GET /nothing is 404", b"GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n", not_found(), False),
        ("GET /statsx is 404", b"GET /statsx HTTP/1.1\r\nHost: t\r\n\r\n", not_found(), False),
        ("GET /stats/ is 404", b"GET /stats/ HTTP/1.1\r\nHost: t\r\n\r\n", not_found(), False),
        ("HEAD /nothing is 404 without a body", b"HEAD /nothing HTTP/1.1\r\nHost: t\r\n\r\n",
         not_found(head=True), False),
        ("POST / is 405 with Allow", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab",
         not_allowed(), False),
        ("DELETE /stats is 405 with Allow", b"DELETE /stats HTTP/1.1\r\nHost: t\r\n\r\n",
         not_allowed(), False),
        ("get (lowercase) / is 405: methods are case-sensitive", b"get / HTTP/1.1\r\nHost: t\r\n\r\n",
         not_allowed(), False),
        ("a malformed request line is 400, then close", b"GET /\r\n\r\n",
         refusal(400, "malformed request line"), True),
        ("HTTP/1.1 without Host is 400, then close", b"GET / HTTP/1.1\r\n\r\n",
         refusal(400, "HTTP/1.1 request without Host"), True),
        ("Content-Length with Transfer-Encoding is 400, then close",
         b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
         refusal(400, "both Transfer-Encoding and Content-Length"), True),
        ("two different Content-Lengths are 400, then close",
         b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
         refusal(400, "conflicting Content-Length headers"), True),
        ("a folded header is 400, then close", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n",
         refusal(400, "folded header line"), True),
        ("a DEL byte (0x7f) in a header value is 400, then close",
         b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x7fb\r\n\r\n", refusal(400, "control character in header value"), True),
        ("a tab inside a header value is taken", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\tb\r\n\r\n", hello(), False),
        ("Transfer-Encoding: chunked is 501, then close",
         b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
         refusal(501, "Transfer-Encoding not implemented"), True),
        ("HTTP/2.0 is 505, then close", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
         refusal(505, "HTTP version not supported"), True),
        ("a body of max-body + 1 is 413 from its head, then close",
         b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (a.max_body + 1),
         refusal(413, "body too large"), True),
        ("a head of max-head + 1 bytes is 431, then close", head_of(a.max_head + 1),
         refusal(431, "request head too large"), True),
        ("Expect: 100-continue on / gets its final 405 at once, then close",
         b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
         not_allowed(close=True), True),
    ]
    for name, req, want, closed in cases:
        exchange(a.port, req, want, name, closed)
    print("ok: %d exact exchanges (errors close, others keep the connection)" % len(cases))


def head_of(n, method=b"GET", path=b"/"):
    """A request whose head is exactly N bytes (one padding header)."""
    start = method + b" " + path + b" HTTP/1.1\r\nHost: t\r\nX: "
    pad = n - len(start) - 4
    if pad < 0:
        raise Failure("head_of(%d) is too short" % n)
    return start + b"p" * pad + b"\r\n\r\n"


def cmd_keepalive(a):
    cases = [
        ("1.1 keeps the connection", b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", hello(), False),
        ("1.1 Connection: close closes", b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
         hello(close=True), True),
        ("1.1 Connection: Keep-Alive, CLOSE closes",
         b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", hello(close=True), True),
        ("1.1 Connection: keep-alive,close (no space after the comma) closes",
         b"GET / HTTP/1.1\r\nHost: t\r\nConnection: keep-alive,close\r\n\r\n", hello(close=True), True),
        ("1.1 HEAD with Connection: close closes, no body",
         b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", hello(close=True, head=True), True),
        ("1.1 404 with Connection: close closes",
         b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", not_found(close=True), True),
        ("1.0 closes", b"GET / HTTP/1.0\r\n\r\n", hello(close=True), True),
        ("1.0 Connection: keep-alive keeps", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
         hello(), False),
        ("1.0 Connection: keep-alive, close closes (close wins)",
         b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", hello(close=True), True),
        ("1.0 Connection: closed (not keep-alive) closes", b"GET / HTTP/1.0\r\nConnection: closed\r\n\r\n",
         hello(close=True), True),
    ]
    for name, req, want, closed in cases:
        exchange(a.port, req, want, name, closed)
    print("ok: %d keep-alive cases" % len(cases))


def sendall_split(s, data, rnd, max_piece):
    """DATA in pieces of random sizes (1..MAX_PIECE), each its own send (TCP_NODELAY)."""
    i = 0
    pieces = 0
    while i < len(data):
        n = rnd.randint(1, max_piece)
        s.sendall(data[i:i + n])
        i += n
        pieces += 1
    return pieces


def pipeline_batch(rnd, n):
    reqs, wants = [], []
    for _ in range(n):
        k = rnd.randrange(6)
        if k == 0:
            reqs.append(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"); wants.append(hello())
        elif k == 1:
            reqs.append(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"); wants.append(hello(head=True))
        elif k == 2:
            p = b"/n%d" % rnd.randrange(1000)
            reqs.append(b"GET " + p + b" HTTP/1.1\r\nHost: t\r\n\r\n"); wants.append(not_found())
        elif k == 3:
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64)))
            reqs.append(b"PUT / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            wants.append(not_allowed())
        elif k == 4:
            body = b"x" * rnd.randrange(0, 32)
            reqs.append(b"GET /?q HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            wants.append(hello())
        else:
            reqs.append(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"); wants.append(hello())
    return reqs, wants


def cmd_pipeline(a):
    rnd = random.Random(a.seed)
    total = 0
    for conn in range(a.connections):
        reqs, wants = pipeline_batch(rnd, a.count)
        # The last one closes: the answer to it, then EOF, proves nothing is left unanswered.
        reqs.append(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        wants.append(hello(close=True))
        data = b"".join(reqs)
        s = connect(a.port)
        try:
            if conn == 0:
                s.sendall(data)  # all at once: many requests in one read
            else:
                sendall_split(s, data, rnd, a.max_piece)
            expect(s, b"".join(wants), "pipeline connection %d (seed %d), %d requests" % (conn, a.seed, len(reqs)))
            expect_eof(s, "pipeline connection %d" % conn)
        finally:
            s.close()
        total += len(reqs)
    print("ok: %d pipelined requests on %d connections answered in order (seed %d)"
          % (total, a.connections, a.seed))


def cmd_limits(a):
    # A head of exactly max-head bytes is read and answered, twice on one connection.
    exchange(a.port, head_of(a.max_head) + head_of(a.max_head), hello() + hello(),
             "two heads of exactly max-head (%d) bytes" % a.max_head, False)
    exchange(a.port, head_of(a.max_head + 1), refusal(431, "request head too large"),
             "a head of max-head + 1 bytes", True)
    body = bytes(range(256)) * (a.max_body // 256 + 1)
    exchange(a.port, b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % a.max_body
             + body[:a.max_body], hello(), "a body of exactly max-body (%d) bytes" % a.max_body, False)
    exchange(a.port, b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (a.max_body + 1),
             refusal(413, "body too large"), "a body of max-body + 1 bytes", True)
    # A Content-Length whose first digits are exactly max-body, then one more digit: ten times
    # the limit (a parse that stops counting at the limit would take it for max-body).
    exchange(a.port, b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: %d0\r\n\r\n" % a.max_body,
             refusal(413, "body too large"), "a Content-Length of max-body x 10", True)
    # Header lines: 100 are read, 101 are 431 (where max-head leaves room for them).
    lines = b"".join(b"H%d: v\r\n" % i for i in range(99))
    if len(lines) + 64 <= a.max_head:
        exchange(a.port, b"GET / HTTP/1.1\r\nHost: t\r\n" + lines + b"\r\n", hello(),
                 "100 header lines", False)
        exchange(a.port, b"GET / HTTP/1.1\r\nHost: t\r\nH99: v\r\n" + lines + b"\r\n",
                 refusal(431, "too many header lines"), "101 header lines", True)
    # The body of max-body bytes a byte at a time: collected across reads, then answered.
    s = connect(a.port)
    try:
        req = b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % a.max_body + body[:a.max_body]
        piece = max(3, a.max_body // 200)
        sendall_split(s, req, random.Random(1), piece)
        expect(s, hello(), "a body of max-body bytes in pieces of 1..%d bytes" % piece)
        expect_open(s, a.port, "a body of max-body bytes in pieces")
    finally:
        s.close()
    print("ok: head limit %d and body limit %d at the boundary and one past" % (a.max_head, a.max_body))


def cmd_isolated(a):
    good = connect(a.port)
    try:
        good.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        expect(good, hello(), "the good client's first request")
        exchange(a.port, b"\x16\x03\x01 garbage\r\n\r\n", refusal(400, "malformed request line"),
                 "the bad client", True)
        good.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        expect(good, hello(), "the good client's request after the bad one")
    finally:
        good.close()
    print("ok: a bad request closed its own connection only")


def get_stats(s):
    s.sendall(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n")
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        head += recv_exact(s, 1, "the /stats head")
    n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    body = recv_exact(s, n, "the /stats body")
    return bytes(head), body


def cmd_stats(a):
    """A fresh server: the counters must equal what this client did, exactly."""
    sent = recvd = reqs = 0
    conns = 0
    rnd = random.Random(a.seed)
    closers = []
    for i in range(3):
        s = connect(a.port)
        conns += 1
        reqs_i, wants = pipeline_batch(rnd, 5)
        data = b"".join(reqs_i)
        s.sendall(data)
        expect(s, b"".join(wants), "stats: batch %d" % i)
        sent += len(data)
        recvd += sum(len(w) for w in wants)
        reqs += len(reqs_i)
        closers.append(s)
    # One connection closed by its request, one by the client: "open" counts what is left.
    s = closers.pop()
    req = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    s.sendall(req)
    expect(s, hello(close=True), "stats: a closing request")
    expect_eof(s, "stats: a closing request")
    s.close()
    sent += len(req)
    recvd += len(hello(close=True))
    reqs += 1
    # A refusal: answered and counted as a request; its bytes are not a request's (bytes_in).
    bad = connect(a.port)
    conns += 1
    try:
        bad.sendall(b"BAD\r\n\r\n")
        want_bad = refusal(400, "malformed request line")
        expect(bad, want_bad, "stats: a refused request")
        expect_eof(bad, "stats: a refused request")
    finally:
        bad.close()
    recvd += len(want_bad)
    reqs += 1
    q = connect(a.port)
    conns += 1
    try:
        # The server sees the client's close in its own time: wait for the count to settle.
        want_open = len(closers) + 1
        deadline = time.monotonic() + scaled(5)
        while True:
            head, body = get_stats(q)
            reqs += 1
            stats_req = len(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n")
            sent += stats_req
            got = json.loads(body)
            if got["open"] == want_open or time.monotonic() > deadline:
                break
            recvd += len(head) + len(body)
            time.sleep(0.02)  # poll interval of a loop with a deadline
        want = {"connections": conns, "open": want_open, "requests": reqs, "bytes_in": sent,
                "bytes_out": recvd}
        if got != want or list(got) != list(want):
            raise Failure("stats: got %s, want %s" % (body.decode(errors="replace").strip(),
                                                      json.dumps(want, separators=(",", ":"))))
        exact = response(200, "OK", body, ctype="application/json")
        if head + body != exact:
            raise Failure("stats: response %r, want %r" % (head + body, exact))
        # HEAD /stats: the same headers, the Content-Length of the JSON it would send.
        q.sendall(b"HEAD /stats HTTP/1.1\r\nHost: t\r\n\r\n")
        head2 = bytearray()
        while not head2.endswith(b"\r\n\r\n"):
            head2 += recv_exact(q, 1, "HEAD /stats")
        n = int(bytes(head2).split(b"Content-Length: ")[1].split(b"\r\n")[0])
        if n < len(body) or not bytes(head2).startswith(b"HTTP/1.1 200 OK\r\n"):
            raise Failure("HEAD /stats: %r" % bytes(head2))
        expect_open(q, a.port, "HEAD /stats")
    finally:
        q.close()
        for s in closers:
            s.close()
    print("ok: /stats %s" % body.decode().strip())


def cmd_idle(a):
    s = connect(a.port)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        expect(s, hello(), "idle: the first request")
        t0 = time.monotonic()
        s.settimeout(scaled(a.idle * 4 + 5))
        try:
            extra = s.recv(4096)
        except socket.timeout:
            raise Failure("idle: still open %.1f s after --idle-timeout %.2f" % (time.monotonic() - t0, a.idle))
        except ConnectionResetError:
            raise Failure("idle: reset (want a clean close)")
        waited = time.monotonic() - t0
        if extra:
            raise Failure("idle: %d bytes instead of a close" % len(extra))
        if waited < a.idle * 0.9:
            raise Failure("idle: closed after %.3f s, before the %.2f s timeout" % (waited, a.idle))
    finally:
        s.close()
    # A connection that sends a request every third of the timeout is never idle: it is still
    # answered after one and a half timeouts.
    s = connect(a.port)
    try:
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 1.5 * a.idle:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            expect(s, hello(), "idle: a busy connection's request %d" % (n + 1))
            n += 1
            time.sleep(a.idle / 3)  # the client's pace: what keeps it from being idle
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        expect(s, hello(), "idle: a busy connection after %.2f s" % (time.monotonic() - t0))
        # The idle close counts like any other: of the 2 connections, 1 is open (this one).
        _, body = get_stats(s)
        got = json.loads(body)
        if got["connections"] != 2 or got["open"] != 1:
            raise Failure("idle: /stats %s, want connections 2 and open 1" % body.decode(errors="replace").strip())
    finally:
        s.close()
    print("ok: an idle connection closed after %.3f s (timeout %.2f s); a busy one kept (%d requests)"
          % (waited, a.idle, n + 1))


# ------------------------------------------------------------------- lingering close

def stream_refused(port, max_body, name, want_len, stop=True):
    """Sends a head announcing a body over MAX_BODY, then streams that body as fast as the
    server takes it (a 64 KiB send buffer), reading all the while; with STOP it stops sending
    once WANT_LEN bytes of answer have come, as curl does when a final answer cuts its upload.
    Returns (the socket, the bytes read, the bytes sent) at the server's EOF. A reset (on a
    read or a send) before that EOF is a failure: the server closed with our bytes unread,
    and a reset can destroy the answer in flight (curl reports "(55) Send failure")."""
    s = connect(port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    s.setblocking(False)
    head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (max_body + (64 << 20))
    out = head + b"b" * (256 << 10)
    chunk = b"b" * (64 << 10)
    got = bytearray()
    sent = 0
    deadline = time.monotonic() + scaled(10)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("%s: no EOF within %.1f s (got %s)" % (name, scaled(10), show(got)))
        sending = not (stop and len(got) >= want_len)
        r, w, _ = select.select([s], [s] if sending else [], [], left)
        try:
            if r:
                data = s.recv(65536)
                if not data:
                    return s, bytes(got), sent
                got += data
            if w and sending:
                n = s.send(out)
                sent += n
                out = out[n:] if n < len(out) else chunk
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE):
                raise Failure("%s: %s after %d bytes sent, before the EOF (read %d bytes: %s)"
                              % (name, os.strerror(e.errno), sent, len(got), show(got)))
            raise


def wait_reset(s, gap, name, limit):
    """Keeps sending on S (a byte every GAP seconds, or as fast as it goes when GAP is 0) until
    the server's reset; returns (seconds, bytes sent). LIMIT seconds at most."""
    start = time.monotonic()
    sent = 0
    s.setblocking(True)
    s.settimeout(scaled(1))
    payload = b"x" if gap else b"x" * (64 << 10)
    while time.monotonic() - start < limit:
        try:
            sent += s.send(payload)
        except socket.timeout:
            continue
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE):
                return time.monotonic() - start, sent
            raise
        if gap:
            time.sleep(gap)
    raise Failure("%s: still no reset after %.1f s, %d bytes sent" % (name, limit, sent))


def cmd_linger(a):
    want = refusal(413, "body too large")
    if a.mode == "full":
        for i in range(a.count):
            name = "run %d of %d" % (i + 1, a.count)
            s, got, sent = stream_refused(a.port, a.max_body, name, len(want))
            s.close()
            if got != want:
                raise Failure("%s: got %s, want %s then EOF" % (name, show(got), show(want)))
        print("ok: %d clients streaming a refused body each got the whole 413, then EOF, no reset"
              % a.count)
        return
    s, got, sent = stream_refused(a.port, a.max_body, a.mode, len(want), stop=False)
    if got != want:
        raise Failure("%s: got %s, want %s then EOF" % (a.mode, show(got), show(want)))
    try:
        took, more = wait_reset(s, 0.05 if a.mode == "time" else 0, a.mode, scaled(a.linger * 5 + 10))
    finally:
        s.close()
    if a.mode == "time" and took < a.linger * 0.9:
        raise Failure("time: reset %.3f s after the 413's EOF, before the linger bound %.3f s"
                      % (took, a.linger))
    print("ok: %s: the 413 in full, then EOF; the server reset the connection %.3f s later, "
          "after %d bytes more (%d before the EOF)" % (a.mode, took, more, sent))


def cmd_sendeof(a):
    s = connect(a.port)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        expect(s, hello(), "GET / then SHUT_WR")
        expect_eof(s, "GET / then SHUT_WR")
    finally:
        s.close()
    print("ok: GET / then shutdown(SHUT_WR): the whole answer, then EOF")


def cmd_short(a):
    for i in range(a.count):
        exchange(a.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", hello(close=True),
                 "short connection %d" % (i + 1), closed=True)
    print("ok: %d short connections (Connection: close): each its answer, then EOF" % a.count)


def cmd_widest(a):
    """The widest limits the options take (--max-head 1048576 --max-body 4294967295), at the
    boundary and one past: a head of exactly max-head bytes is answered, one byte more is 431;
    a Content-Length of exactly max-body is taken (with Expect: 100-continue the server answers
    from the head, so no 4 GiB are sent: 405 and close), one more is 413."""
    mh, mb = a.max_head, a.max_body
    exchange(a.port, head_of(mh), hello(), "a head of exactly max-head (%d) bytes" % mh, False)
    exchange(a.port, head_of(mh + 1), refusal(431, "request head too large"),
             "a head of max-head + 1 bytes", True)
    cont = b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
    exchange(a.port, cont % mb, not_allowed(close=True),
             "Expect: 100-continue with a Content-Length of exactly max-body (%d)" % mb, True)
    exchange(a.port, cont % (mb + 1), refusal(413, "body too large"),
             "Expect: 100-continue with a Content-Length of max-body + 1", True)
    print("ok: head limit %d and body limit %d at the boundary and one past" % (mh, mb))


def cmd_after_close(a):
    """Requests pipelined behind the one that ends the connection (Connection: close, HTTP/1.0
    without keep-alive, a refused one), in the same write: only the answers up to that one,
    byte for byte, then EOF: nothing is answered after the answer that said close."""
    H = b"Host: t\r\n"
    after = b"GET /x HTTP/1.1\r\n" + H + b"\r\nGET /stats HTTP/1.1\r\n" + H + b"\r\n"
    cases = [
        ("Connection: close, then two more", b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n" + after,
         hello(close=True)),
        ("HTTP/1.0 without keep-alive, then two more", b"GET / HTTP/1.0\r\n\r\n" + after, hello(close=True)),
        ("a GET, a refused request, then two more", b"GET / HTTP/1.1\r\n" + H + b"\r\nBAD\r\n\r\n" + after,
         hello() + refusal(400, "malformed request line")),
    ]
    for name, req, want in cases:
        s = connect(a.port)
        try:
            s.sendall(req)
            expect(s, want, name)
            expect_eof(s, name)
        finally:
            s.close()
    print("ok: %d pipelined batches answered up to the closing request, then EOF" % len(cases))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["errors", "keepalive", "pipeline", "limits", "isolated", "stats", "idle",
                                   "linger", "sendeof", "short", "widest", "after_close"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-head", type=int, default=8192)
    p.add_argument("--max-body", type=int, default=1 << 20)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--max-piece", type=int, default=40)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--idle", type=float, default=0.5)
    p.add_argument("--mode", choices=["full", "bytes", "time"], default="full")
    p.add_argument("--linger", type=float, default=2.0, help="the server's linger_ms, in seconds")
    a = p.parse_args()
    if a.seed is None:
        a.seed = random.randrange(1 << 30)
    try:
        globals()["cmd_" + a.cmd](a)
    except Failure as e:
        print("FAIL: %s" % e)
        sys.exit(1)
    except OSError as e:
        print("FAIL: %s: %s" % (a.cmd, e))
        sys.exit(1)


if __name__ == "__main__":
    main()
