#!/usr/bin/env python3
"""gateway: a raw-socket HTTP/1.1 client for 08_framework's examples/gateway and a line client
for examples/backend (08_framework/README.md, section 9).

Python 3 standard library only. Every response is checked byte for byte: status line,
Content-Length, Connection, Allow (405), Content-Type, the empty line, the body. Each
subcommand prints `ok: ...` and exits 0, or `FAIL: ...` and exits 1. Every wait has a
deadline; TIMEOUT_SCALE stretches them all.

  get      send every --req in one write (pipelined), check each answer against its --want,
           in order (--req 'RAW BYTES': bytes as they are, Python escapes); --min-ms/--max-ms
           bound the time to the last answer; prints its ms; --shut: shutdown(SHUT_WR) right
           after the requests (as nc -N does): every answer still comes, then EOF; --split N:
           the first N requests in one write, their answers, then the rest on the same
           connection; with --held-ms M the rest waits unread in the gateway's socket
           (/proc/net/tcp rx_queue) until the first answer comes, at least M ms (a paused client)
  multi    one connection per --req, all sent at once (their actions in flight together on
           the backends' shared connections), each answer checked against its --want
  leave    send every --req (pipelined), then close after --after-ms without reading (--reset:
           with a RST)
  lines    send --line lines to a backend in one write, check each reply against its --want;
           prints the time to the last one (--close-after N: send N more and leave;
           --want-eof: the backend then closes the connection, nothing more sent)
  hangup   a backend that reads a request line and closes without a reply
  expect   "Expect: 100-continue": the head alone gets exactly "HTTP/1.1 100 Continue\r\n\r\n",
           the body then the final answer (--req 'POST /kv BODY', --want), keep-alive intact;
           a body over the limit gets its 413 at once, no 100 before it, then EOF;
           --behind REQ --behind-want WANT: REQ first, then the head with Expect on the same
           connection: no 100 at all (REQ is pending), REQ's answer, then the body's answer
  redis    a fake redis-server (RESP2), until SIGTERM: SET K V stores V, GET K answers it, but
           the key chooses a reply Redis would not give: "null" (GET: $-1), "other" (GET: a
           value other than the one SET stored), "queued" (SET: +QUEUED), "int" (GET: :7),
           "gerr" (GET: -ERR gone); prints `listening on`, then one line per command
           (`SET K V`, `GET K`) and `FAIL: ...` for a command not as RESP frames it
"""

import argparse
import os
import select
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netkit  # noqa: E402  (server_rx_queue: /proc/net/tcp)

TIMEOUT_SCALE = float(os.environ.get("TIMEOUT_SCALE", "1") or "1")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           413: "Content Too Large", 431: "Request Header Fields Too Large", 501: "Not Implemented",
           505: "HTTP Version Not Supported", 502: "Bad Gateway", 503: "Service Unavailable",
           500: "Internal Server Error"}
ALLOW = {"/profile": "GET", "/kv": "POST"}


class Failure(Exception):
    pass


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def request_bytes(req, close):
    """'METHOD TARGET [BODY]' as HTTP/1.1 bytes; 'RAW BYTES' sends BYTES as they are (Python
    escapes: RAW GET / HTTP/2.0\\r\\n...), for input the HTTP codec refuses."""
    if req.startswith("RAW "):
        return req[4:].encode("latin-1").decode("unicode_escape").encode("latin-1"), "/"
    parts = req.split(" ", 2)
    if len(parts) < 2:
        raise Failure("bad --req %r (want 'METHOD TARGET [BODY]')" % req)
    method, target = parts[0], parts[1]
    body = parts[2].encode() if len(parts) == 3 else b""
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, target)
    if body or method == "POST":
        head += "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n" % len(body)
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body, target.split("?")[0]


def response_bytes(want, path, close):
    """'STATUS BODY' as the gateway's whole answer (BODY gets its final newline)."""
    status, _, body = want.partition(" ")
    status = int(status)
    body = body.encode() + b"\n"
    head = "HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: %s\r\n" % (
        status, REASONS.get(status, "Unknown"), len(body), "close" if close else "keep-alive")
    if status == 405:
        head += "Allow: %s\r\n" % ALLOW.get(path, "GET")
    head += "Content-Type: application/json\r\n\r\n"
    return head.encode() + body


def recv_exact(s, n, deadline, what):
    got = b""
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("%s: timed out after %d of %d bytes: %r" % (what, len(got), n, got))
        s.settimeout(left)
        try:
            b = s.recv(n - len(got))
        except socket.timeout:
            continue
        if not b:
            raise Failure("%s: EOF after %d of %d bytes: %r" % (what, len(got), n, got))
        got += b
    return got


def cmd_get(a):
    if len(a.req) != len(a.want):
        raise Failure("as many --want as --req")
    s = connect(a.port)
    data, wants = b"", []
    for i, (r, w) in enumerate(zip(a.req, a.want)):
        close = a.close and i == len(a.req) - 1
        rb, path = request_bytes(r, close)
        data += rb
        wants.append(response_bytes(w, path, close))
    t0 = time.monotonic()
    deadline = t0 + scaled(a.deadline)
    split = len(data) if a.split is None else sum(len(request_bytes(r, a.close and i == len(a.req) - 1)[0])
                                                   for i, r in enumerate(a.req[:a.split]))
    s.sendall(data[:split])
    held = None
    if split < len(data) and a.held_ms is not None:
        held = held_check(s, a.port, data[split:], deadline, a.held_ms)
    if a.shut and split == len(data):
        s.shutdown(socket.SHUT_WR)
    for i, want in enumerate(wants):
        if i == a.split and split < len(data) and a.held_ms is None:
            s.sendall(data[split:])
        got = recv_exact(s, len(want), deadline, "answer %d" % (i + 1))
        if got != want:
            raise Failure("answer %d:\n got  %r\n want %r" % (i + 1, got, want))
    ms = (time.monotonic() - t0) * 1000
    if a.close or a.shut:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            if s.recv(1) != b"":
                raise Failure("bytes after the last answer (%s)" % ("Connection: close" if a.close else "after our EOF"))
        except socket.timeout:
            raise Failure("no EOF after the last answer (%s)" % ("Connection: close" if a.close else "after our EOF"))
    else:
        # Nothing more than what we asked for.
        s.settimeout(0.05)
        try:
            extra = s.recv(100)
            if extra:
                raise Failure("bytes after the last answer: %r" % extra)
            raise Failure("the gateway closed a keep-alive connection")
        except socket.timeout:
            pass
    s.close()
    # The library's clock is whole milliseconds read when a turn starts (rx_loop_now_ms), so a
    # timer of T ms may fire up to 1 ms before T real milliseconds have passed since our send.
    if a.min_ms is not None and ms < a.min_ms - 1:
        raise Failure("answered in %.1f ms, before %d ms" % (ms, a.min_ms))
    if a.max_ms is not None and ms > a.max_ms:
        raise Failure("answered in %.0f ms, after %d ms" % (ms, a.max_ms))
    print("ok: %d answers in %.0f ms" % (len(wants), ms))
    print("ms %d" % round(ms))
    if held:
        print(held)


def rx_queue(gw_port, s):
    """Bytes of ours the gateway has not read from its end of connection S."""
    q = netkit.server_rx_queue(gw_port, s.getsockname()[1])
    if q is None:
        raise Failure("no socket of port %d for our connection in /proc/net/tcp" % gw_port)
    return q


def held_check(s, port, rest, deadline, held_ms):
    """The gateway has read everything we sent (its rx_queue is 0); then REST is sent and must
    stay unread in its socket until the first answer's bytes come, at least HELD_MS ms."""
    while rx_queue(port, s) != 0:
        if time.monotonic() > deadline:
            raise Failure("the gateway never read the first requests (rx_queue %d)" % rx_queue(port, s))
        time.sleep(0.005)
    s.sendall(rest)
    t = time.monotonic()
    seen = False  # REST seen whole in the gateway's socket (loopback: at once, or soon after)
    while True:
        q = rx_queue(port, s)
        r, _, _ = select.select([s], [], [], 0)
        if r:  # the first answer is here: the gateway may resume reading from now on
            break
        since = (time.monotonic() - t) * 1000
        if q == len(rest):
            seen = True
        elif seen or since > 100:
            raise Failure("the gateway read %d of the %d bytes sent after the first requests, "
                          "%.0f ms before their first answer: it was not paused"
                          % (len(rest) - q, len(rest), since))
        if time.monotonic() > deadline:
            raise Failure("no first answer in time")
        time.sleep(0.002)
    held = (time.monotonic() - t) * 1000
    if held < held_ms:
        raise Failure("the first answer came %.0f ms after the rest was sent: too soon to tell "
                      "a paused gateway from a slow one (want %d)" % (held, held_ms))
    return "held: %d bytes unread for %.0f ms, until the first answer" % (len(rest), held)


def cmd_multi(a):
    if len(a.req) != len(a.want) or not a.req:
        raise Failure("as many --want as --req")
    socks = [connect(a.port) for _ in a.req]
    t0 = time.monotonic()
    deadline = t0 + scaled(a.deadline)
    wants = []
    for s, r, w in zip(socks, a.req, a.want):
        rb, path = request_bytes(r, False)
        wants.append(response_bytes(w, path, False))
        s.sendall(rb)
    for i, (s, want) in enumerate(zip(socks, wants)):
        got = recv_exact(s, len(want), deadline, "connection %d's answer" % (i + 1))
        if got != want:
            raise Failure("connection %d's answer:\n got  %r\n want %r" % (i + 1, got, want))
        s.close()
    print("ok: %d connections at once, every answer its own, in %.0f ms" % (len(socks), (time.monotonic() - t0) * 1000))


def cmd_leave(a):
    s = connect(a.port)
    s.sendall(b"".join(request_bytes(r, False)[0] for r in a.req))
    time.sleep(a.after_ms / 1000.0)  # the gateway is mid-request: that is the point
    if a.reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    print("ok: left after %d ms" % a.after_ms)


def cmd_lines(a):
    s = connect(a.port)
    t0 = time.monotonic()
    s.sendall(b"".join(l.encode() + b"\n" for l in a.line))
    deadline = t0 + scaled(a.deadline)
    buf = b""
    for i, want in enumerate(a.want):
        while b"\n" not in buf:
            buf += recv_exact(s, 1, deadline, "reply %d" % (i + 1))
        line, buf = buf.split(b"\n", 1)
        if line != want.encode():
            raise Failure("reply %d: got %r, want %r" % (i + 1, line, want))
    ms = (time.monotonic() - t0) * 1000
    if buf:
        raise Failure("bytes after the last reply: %r" % buf)
    if a.want_eof:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            b = s.recv(100)
        except ConnectionResetError:
            b = b""
        except socket.timeout:
            raise Failure("the backend did not close the connection")
        if b:
            raise Failure("bytes instead of the close: %r" % b)
    if a.min_ms is not None and ms < a.min_ms - 1:   # whole milliseconds: see cmd_get
        raise Failure("answered in %.1f ms, before %d ms" % (ms, a.min_ms))
    if a.close_after:
        s.sendall(b"".join(b"%d\n" % (i + 1) for i in range(a.close_after)))
    s.close()
    print("ok: %d replies in %.0f ms" % (len(a.want), ms))


def cmd_hangup(a):
    """A backend that reads one request line, then closes without a reply; forever, until
    SIGTERM. Prints `listening on 127.0.0.1:PORT`, then `hangup N` after each hang-up."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    print("listening on 127.0.0.1:%d" % ls.getsockname()[1], flush=True)
    n = 0
    while True:
        c, _ = ls.accept()
        c.settimeout(None)  # a kept-open connection waits for its request as long as it takes
        buf = b""
        while b"\n" not in buf:
            b = c.recv(4096)
            if not b:
                break
            buf += b
        c.close()
        if b"\n" in buf:
            n += 1
            print("hangup %d" % n, flush=True)


def cmd_expect(a):
    if len(a.req) != 1 or len(a.want) != 1:
        raise Failure("expect: one --req 'POST /kv BODY' and one --want")
    rb, path = request_bytes(a.req[0], False)
    head, _, body = rb.partition(b"\r\n\r\n")
    if not body:
        raise Failure("expect: --req needs a body")
    s = connect(a.port)
    deadline = time.monotonic() + scaled(a.deadline)
    cont = b"HTTP/1.1 100 Continue\r\n\r\n"
    if a.behind:
        # A request still pending ahead of the head: no 100 at all (it would cut into that
        # answer); we send the body after our own wait, as curl does, once that answer is in.
        rb2, path2 = request_bytes(a.behind, False)
        s.sendall(rb2 + head + b"\r\nExpect: 100-continue\r\n\r\n")
        want = response_bytes(a.behind_want, path2, False)
        got = recv_exact(s, len(want), deadline, "the answer to the request ahead")
        if got != want:
            raise Failure("the answer to the request ahead (no 100 Continue before it, nor after):\n got  %r\n want %r" % (got, want))
        s.sendall(body)
        want = response_bytes(a.want[0], path, False)
        got = recv_exact(s, len(want), deadline, "the final answer")
        if got != want:
            raise Failure("the final answer (no 100 Continue before it):\n got  %r\n want %r" % (got, want))
        s.settimeout(0.05)
        try:
            extra = s.recv(100)
            raise Failure("bytes after the last answer: %r" % extra)
        except socket.timeout:
            pass
        s.close()
        print("ok: no 100 Continue behind a pending request; both answers, in order")
        return
    s.sendall(head + b"\r\nExpect: 100-continue\r\n\r\n")
    got = recv_exact(s, len(cont), deadline, "the interim answer")
    if got != cont:
        raise Failure("the interim answer: got %r, want %r" % (got, cont))
    s.sendall(body)
    want = response_bytes(a.want[0], path, False)
    got = recv_exact(s, len(want), deadline, "the final answer")
    if got != want:
        raise Failure("the final answer:\n got  %r\n want %r" % (got, want))
    # The connection is kept, and in step: the next request's answer is the next bytes.
    s.sendall(b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    want = response_bytes('404 {"error":"not found"}', "/nope", False)
    got = recv_exact(s, len(want), deadline, "the next answer on the connection")
    if got != want:
        raise Failure("the next answer:\n got  %r\n want %r" % (got, want))
    s.close()
    # Over the body limit: refused from the head, with no "100 Continue" before the 413.
    s = connect(a.port)
    s.sendall(b"POST /kv HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
              b"Expect: 100-continue\r\n\r\n")
    want = response_bytes('413 {"error":"body too large"}', "/kv", True)
    got = recv_exact(s, len(want), deadline, "the 413")
    if got != want:
        raise Failure("the 413 (no 100 Continue before it):\n got  %r\n want %r" % (got, want))
    s.settimeout(max(0.1, deadline - time.monotonic()))
    if s.recv(1) != b"":
        raise Failure("bytes after the 413")
    s.close()
    print("ok: 100 Continue, then the body's answer, the connection kept; over the limit: 413 at once, then EOF")


def resp_command(buf):
    """One RESP array of bulk strings at the start of BUF: (list of bytes, rest), or None
    when more bytes are needed. Raises Failure on anything else."""
    def line(at):
        end = buf.find(b"\r\n", at)
        return (None, None) if end < 0 else (buf[at:end], end + 2)
    head, at = line(0)
    if head is None:
        return None
    if not head.startswith(b"*") or not head[1:].isdigit():
        raise Failure("not a RESP array: %r" % head)
    args = []
    for _ in range(int(head[1:])):
        h, at2 = line(at)
        if h is None:
            return None
        if not h.startswith(b"$") or not h[1:].isdigit():
            raise Failure("not a bulk string: %r" % h)
        n = int(h[1:])
        if len(buf) < at2 + n + 2:
            return None
        if buf[at2 + n:at2 + n + 2] != b"\r\n":
            raise Failure("a bulk string not ended by CRLF")
        args.append(buf[at2:at2 + n])
        at = at2 + n + 2
    return args, buf[at:]


def cmd_redis(a):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    print("listening on 127.0.0.1:%d" % ls.getsockname()[1], flush=True)
    store, conns, bufs = {}, [ls], {}
    while True:
        r, _, _ = select.select(conns, [], [])
        for c in r:
            if c is ls:
                n, _ = ls.accept()
                conns.append(n)
                bufs[n] = b""
                continue
            b = c.recv(65536)
            if not b:
                conns.remove(c)
                c.close()
                continue
            bufs[c] += b
            while True:
                try:
                    got = resp_command(bufs[c])
                except Failure as e:
                    print("FAIL: %s" % e, flush=True)
                    sys.exit(1)
                if got is None:
                    break
                args, bufs[c] = got
                name = args[0].decode("latin-1") if args else ""
                print(" ".join(x.decode("latin-1") for x in args), flush=True)
                if name == "SET" and len(args) == 3:
                    out = b"+QUEUED\r\n" if args[1] == b"queued" else b"+OK\r\n"
                    store[args[1]] = args[2]
                elif name == "GET" and len(args) == 2:
                    k = args[1]
                    if k == b"null":
                        out = b"$-1\r\n"
                    elif k == b"int":
                        out = b":7\r\n"
                    elif k == b"gerr":
                        out = b"-ERR gone\r\n"
                    else:
                        v = store.get(k, b"") + (b"!" if k == b"other" else b"")
                        out = b"$%d\r\n%s\r\n" % (len(v), v)
                else:
                    print("FAIL: unexpected command %r" % args, flush=True)
                    out = b"-ERR unknown\r\n"
                c.sendall(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("get", "leave", "lines", "hangup", "expect", "multi", "redis"):
        q = sub.add_parser(name)
        q.add_argument("--port", type=int, required=name not in ("hangup", "redis"))
        q.add_argument("--req", action="append", default=[])
        q.add_argument("--want", action="append", default=[])
        q.add_argument("--line", action="append", default=[])
        q.add_argument("--close", action="store_true")
        q.add_argument("--shut", action="store_true")
        q.add_argument("--min-ms", type=int)
        q.add_argument("--max-ms", type=int)
        q.add_argument("--deadline", type=float, default=10)
        q.add_argument("--after-ms", type=int, default=50)
        q.add_argument("--reset", action="store_true")
        q.add_argument("--close-after", type=int, default=0)
        q.add_argument("--want-eof", action="store_true")
        q.add_argument("--split", type=int)
        q.add_argument("--held-ms", type=int)
        q.add_argument("--behind")
        q.add_argument("--behind-want")
    a = p.parse_args()
    try:
        {"get": cmd_get, "leave": cmd_leave, "lines": cmd_lines, "hangup": cmd_hangup,
         "expect": cmd_expect, "multi": cmd_multi, "redis": cmd_redis}[a.cmd](a)
    except (Failure, OSError) as e:
        print("FAIL: %s" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
