#!/usr/bin/env python3
"""codecs: encoders, decoders and a test client for 06_codecs' five codecs, a library and a CLI.

Python 3 standard library only. Every subcommand prints `ok: ...` and exits 0, or prints
`FAIL: ...` and exits 1. Every wait has a deadline; TIMEOUT_SCALE (environment, default 1)
stretches them all. The codecs, as the server speaks them:

  fixed:N  frames of exactly N bytes
  line     a frame, then "\\n" (the server also accepts "\\r\\n" and answers "\\n")
  len      a 4-byte big-endian length, then that many bytes
  resp     RESP2 (Redis): requests are arrays of bulk strings; replies +simple, -error,
           :integer, $bulk (or $-1, null), *array
  http     HTTP/1.1 requests; responses with a Content-Length body

Subcommands (all take --port, --host, --timeout):
  echo --codec C --frames N --max-size B [--splits random|bytes|none] [--seed S] [--pause-ms M]
                      N frames of random sizes (1..B bytes, 0..B for len; fixed:N always N,
                      B itself one size in five), encoded back to
                      back into one stream and sent cut at random points (bytes: one byte per
                      send; none: the whole stream in one send, frames back to back in one
                      write), with random pauses up to M ms between pieces, while the echo is
                      read and decoded: every frame must come back equal, in order
  frame-at --codec line|len --size N (--accepted | --refused) [--crlf]
                      one frame of exactly N bytes (line: ended by "\\r\\n" with --crlf):
                      --accepted wants its echo; --refused wants the codec's error (line:
                      `ERR line too long`; len: nothing), then EOF
  big-len --size B [--rcvbuf R]
                      one len frame of B bytes, sent while its echo is read and checked
                      (through an R-byte SO_RCVBUF: a slow reader, which the server must
                      pause for)
  resp [--splits random|bytes|none] [--seed S]
                      a script of commands (PING, PING x, ECHO, SET, GET hit and miss, an
                      unknown command, wrong argument counts, an inline command), all
                      pipelined in one stream cut at random points; checks every reply
  resp-fill --keys N --limit L
                      on a fresh server: N SETs of new keys, pipelined: the first L get +OK,
                      the rest `-ERR table full (at most L keys)`; a replacement still works
  http                on one connection, keep-alive requests (HTTP/1.1 default, a 405 whose
                      body is read and skipped, a 404, a pipelined pair), then
                      `Connection: close` (the server must close after the response); on
                      others, HTTP/1.0 (closes by default; keeps the connection with
                      `Connection: keep-alive`)
  http-exact          scripts of requests (HEAD then GET pipelined, Connection token lists,
                      Transfer-Encoding values and lists, HTTP/1.2 and 2.0, Expect:
                      100-continue, bare CRs and control bytes in heads), each sent whole,
                      byte by byte and cut at random: every response byte exact, then EOF
  http-limits         the head's 8192 bytes, 100 header lines and 1 MiB body at and one past
  resp-exact          redis 7's error texts, RESP numbers as strict as redis's, the inline,
                      bulk, argument-count and 2 MiB request limits at and one past: every
                      reply byte exact, then EOF
  http-rules          more head rules, as http-exact: Host exactly once in HTTP/1.1 (none
                      needed in 1.0), equal and unequal Content-Length pairs, malformed
                      lengths, token characters in methods and names, tabs, the request
                      line's single spaces and its exact HTTP/ prefix
  resp-rules          inline words split on tabs as on spaces, empty inline lines, command
                      names in any case, GET's null bulk, SET replacing, empty bulks: every
                      reply byte exact (whole, byte by byte, cut at random), then EOF
  bad --codec C --case NAME [--max-frame B]
                      connection A is served once; connection B sends one malformed input
                      and must get exactly the protocol's error (or none), then EOF; A must then
                      be served again: the bad client hurt nobody else. Cases (BAD_CASES):
                        line: too-long            len: huge-header, over-limit
                        fixed:N: truncated (one byte, then EOF: no error frame exists)
                        resp: bad-bulk-length, huge-bulk, huge-array, no-crlf-after-bulk,
                              not-bulk, too-big-request
                        http: garbage, bad-content-length, no-host, smuggling (400),
                              huge-body, huge-body-20-digits (413), huge-head (431), chunked (501), bad-version (505)
"""

import argparse
import os
import random
import socket
import struct
import sys
import threading
import time

TIMEOUT_SCALE = float(os.environ.get("TIMEOUT_SCALE", "1") or "1")


class Failure(Exception):
    """A check did not hold; the message says what was expected and what happened."""


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def connect(host, port, timeout=5.0, rcvbuf=None):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(scaled(timeout))
    s.connect((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def show(data, n=40):
    return repr(bytes(data[:n])) + ("..." if len(data) > n else "")


# ---------------------------------------------------------------------------
# The codecs. Each decoder is fed bytes as they come (feed) and hands back the whole
# frames they complete (a list): the same split-anywhere contract as the C library's.
# ---------------------------------------------------------------------------

class FixedCodec:
    def __init__(self, size):
        self.size = size
        self.pending = bytearray()

    def encode(self, frame):
        assert len(frame) == self.size
        return bytes(frame)

    def feed(self, data):
        self.pending += data
        n = len(self.pending) // self.size * self.size
        frames = [bytes(self.pending[i:i + self.size]) for i in range(0, n, self.size)]
        del self.pending[:n]
        return frames


class LineCodec:
    """Lines end with "\\n"; a "\\r" before it is part of the ending, not of the frame."""

    def __init__(self):
        self.pending = bytearray()

    def encode(self, frame, crlf=False):
        return bytes(frame) + (b"\r\n" if crlf else b"\n")

    def feed(self, data):
        self.pending += data
        frames = []
        start = 0
        while True:
            nl = self.pending.find(b"\n", start)
            if nl < 0:
                break
            end = nl - 1 if nl > start and self.pending[nl - 1] == 13 else nl
            frames.append(bytes(self.pending[start:end]))
            start = nl + 1
        del self.pending[:start]
        return frames


class LenCodec:
    def __init__(self):
        self.pending = bytearray()

    def encode(self, frame):
        return struct.pack(">I", len(frame)) + bytes(frame)

    def feed(self, data):
        self.pending += data
        frames = []
        pos = 0
        while len(self.pending) - pos >= 4:
            (n,) = struct.unpack_from(">I", self.pending, pos)
            if len(self.pending) - pos - 4 < n:
                break
            frames.append(bytes(self.pending[pos + 4:pos + 4 + n]))
            pos += 4 + n
        del self.pending[:pos]
        return frames


def resp_command(*args):
    """A RESP2 request: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode() if isinstance(a, str) else bytes(a)
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespReplyDecoder:
    """Decodes RESP2 replies into Python values: ('+', str), ('-', str), (':', int),
    ('$', bytes or None), ('*', list or None)."""

    def __init__(self):
        self.pending = bytearray()

    def _parse(self, pos):
        """(value, next position), or None when more bytes are needed."""
        nl = self.pending.find(b"\r\n", pos)
        if nl < 0:
            return None
        kind = chr(self.pending[pos])
        line = bytes(self.pending[pos + 1:nl])
        pos = nl + 2
        if kind in "+-":
            return (kind, line.decode(errors="replace")), pos
        if kind == ":":
            return (":", int(line)), pos
        if kind == "$":
            n = int(line)
            if n < 0:
                return ("$", None), pos
            if len(self.pending) < pos + n + 2:
                return None
            if self.pending[pos + n:pos + n + 2] != b"\r\n":
                raise Failure("bulk reply of %d bytes not followed by CRLF: %s" % (n, show(self.pending[pos:])))
            return ("$", bytes(self.pending[pos:pos + n])), pos + n + 2
        if kind == "*":
            n = int(line)
            if n < 0:
                return ("*", None), pos
            items = []
            for _ in range(n):
                r = self._parse(pos)
                if r is None:
                    return None
                items.append(r[0])
                pos = r[1]
            return ("*", items), pos
        raise Failure("not a RESP reply: %s" % show(self.pending[pos - len(line) - 3:]))

    def feed(self, data):
        self.pending += data
        replies = []
        while self.pending:
            r = self._parse(0)
            if r is None:
                break
            replies.append(r[0])
            del self.pending[:r[1]]
        return replies


def http_request(method, path, version="1.1", headers=(), body=b""):
    lines = ["%s %s HTTP/%s" % (method, path, version), "Host: 127.0.0.1"]
    lines += ["%s: %s" % h for h in headers]
    if body:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class HttpResponseDecoder:
    """Decodes responses: (status, {lowercased header: value}, body). Every response of
    this server has a Content-Length (a response without one would end only at EOF)."""

    def __init__(self):
        self.pending = bytearray()

    def feed(self, data):
        self.pending += data
        out = []
        while True:
            end = self.pending.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(self.pending[:end]).decode("latin-1").split("\r\n")
            parts = head[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise Failure("bad status line %r" % head[0])
            headers = {}
            for h in head[1:]:
                k, _, v = h.partition(":")
                headers[k.strip().lower()] = v.strip()
            if "content-length" not in headers:
                raise Failure("response without Content-Length: %r" % head)
            n = int(headers["content-length"])
            if len(self.pending) < end + 4 + n:
                break
            body = bytes(self.pending[end + 4:end + 4 + n])
            del self.pending[:end + 4 + n]
            out.append((int(parts[1]), headers, body))
        return out


def make_codec(name):
    if name.startswith("fixed:"):
        return FixedCodec(int(name[6:]))
    if name == "line":
        return LineCodec()
    if name == "len":
        return LenCodec()
    raise SystemExit("codecs: echo codecs are fixed:N, line and len, not %r" % name)


# ---------------------------------------------------------------------------
# Sending in pieces while reading
# ---------------------------------------------------------------------------

def cut(rng, stream, splits):
    """The stream as a list of pieces: random cut points, one byte each, or whole."""
    if splits == "none":
        return [stream]
    if splits == "bytes":
        return [stream[i:i + 1] for i in range(len(stream))]
    pieces = []
    i = 0
    while i < len(stream):
        # Mostly small pieces (a header split from its body, a CRLF cut in two), some large.
        n = rng.choice([1, 2, 3, rng.randint(1, 64), rng.randint(1, 4096), rng.randint(1, 65536)])
        pieces.append(stream[i:i + n])
        i += n
    return pieces


class Sender(threading.Thread):
    """Sends the pieces, one send each, with a random pause up to pause_ms between some."""

    def __init__(self, sock, pieces, rng, pause_ms):
        super().__init__(daemon=True)
        self.sock, self.pieces, self.rng, self.pause_ms = sock, pieces, rng, pause_ms
        self.error = None

    def run(self):
        try:
            for p in self.pieces:
                self.sock.sendall(p)
                if self.pause_ms and self.rng.random() < 0.05:
                    time.sleep(self.rng.uniform(0, self.pause_ms) / 1000.0)  # the pacing under test
        except OSError as e:
            self.error = e


def read_frames(sock, decoder, want, timeout, name, check=None):
    """Reads until WANT decoded items arrived (CHECK(index, item) raises Failure on a wrong
    one, as it comes); returns them. Failure on EOF or when the deadline passes."""
    got = []
    deadline = time.monotonic() + scaled(timeout)
    while len(got) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("%s: %d of %d replies within %.1f s" % (name, len(got), want, scaled(timeout)))
        sock.settimeout(left)
        try:
            chunk = sock.recv(262144)
        except socket.timeout:
            continue
        if not chunk:
            raise Failure("%s: EOF after %d of %d replies" % (name, len(got), want))
        for item in decoder.feed(chunk):
            if check:
                check(len(got), item)
            got.append(item)
    return got


def expect_eof(sock, timeout, name, allow_reset=False):
    """The server must close: EOF (a FIN), nothing more before it."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("%s: the server did not close within %.1f s" % (name, scaled(timeout)))
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            if allow_reset:
                return "reset"
            raise Failure("%s: the connection was reset (RST), not closed (FIN)" % name)
        if not chunk:
            return "EOF"
        raise Failure("%s: unexpected bytes before EOF: %s" % (name, show(chunk)))


def frame_mismatch(k, want, got):
    off = next((i for i in range(min(len(want), len(got))) if want[i] != got[i]), min(len(want), len(got)))
    lo = max(0, off - 8)
    return ("frame %d (%d bytes) came back as %d bytes, first difference at offset %d: "
            "expected %s ... got %s" % (k, len(want), len(got), off,
                                        want[lo:off + 8].hex(" "), got[lo:off + 8].hex(" ")))


# ---------------------------------------------------------------------------
# The scenarios
# ---------------------------------------------------------------------------

def random_frame(rng, codec, max_size):
    if isinstance(codec, FixedCodec):
        return rng.randbytes(codec.size)
    size = rng.choice([0 if not isinstance(codec, LineCodec) else 1, 1, max_size,
                       rng.randint(1, max_size), rng.randint(1, min(max_size, 64))])
    if isinstance(codec, LineCodec):
        # No "\n" inside a line, and no "\r" (one at the end would read as CRLF).
        return bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 \t\x00\xff") for _ in range(size))
    return rng.randbytes(size)


def echo(host, port, codec_name, frames, max_size, splits, seed, pause_ms, timeout):
    rng = random.Random(seed)
    codec = make_codec(codec_name)
    sent = [random_frame(rng, codec, max_size) for _ in range(frames)]
    crlf = isinstance(codec, LineCodec)
    stream = b"".join(codec.encode(f, crlf=rng.random() < 0.3) if crlf else codec.encode(f) for f in sent)
    pieces = cut(rng, stream, splits)
    s = connect(host, port)
    try:
        sender = Sender(s, pieces, rng, pause_ms)
        sender.start()

        def check(k, frame):
            if frame != sent[k]:
                raise Failure(frame_mismatch(k, sent[k], frame))

        read_frames(s, make_codec(codec_name), frames, timeout, "echo", check)
        sender.join(scaled(timeout))
        if sender.error:
            raise Failure("echo: send failed: %s" % sender.error)
    finally:
        s.close()
    return "%d %s frames (%d bytes, %d pieces, splits %s) echoed, every one equal" % (
        frames, codec_name, len(stream), len(pieces), splits)


def frame_at(host, port, codec_name, size, accepted, timeout, crlf=False):
    codec = make_codec(codec_name)
    frame = b"x" * size
    s = connect(host, port)
    try:
        s.sendall(codec.encode(frame, crlf=True) if crlf else codec.encode(frame))
        if accepted:
            got = read_frames(s, make_codec(codec_name), 1, timeout, "frame-at")[0]
            if got != frame:
                raise Failure(frame_mismatch(0, frame, got))
            return "a %s frame of %d bytes was echoed" % (codec_name, size)
        want = b"ERR line too long\n" if codec_name == "line" else b""
        got = bytearray()
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("frame-at: not closed within %.1f s (got %s)" % (scaled(timeout), show(got)))
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                # Closed with our unread bytes in its socket: a reset, but only after the reply.
                break
            if not chunk:
                break
            got += chunk
        if bytes(got) != want:
            raise Failure("frame-at: a %d-byte %s frame got %s, want %s then EOF" % (size, codec_name, show(got), show(want)))
        return "a %s frame of %d bytes was refused (%s), then the connection closed" % (
            codec_name, size, show(want) if want else "no reply")
    finally:
        s.close()


def big_len(host, port, size, seed, timeout, rcvbuf=None, pause_ms=0):
    rng = random.Random(seed)
    body = rng.randbytes(size)
    s = connect(host, port, rcvbuf=rcvbuf)
    try:
        sender = Sender(s, cut(rng, struct.pack(">I", size) + body, "random"), rng, 0)
        sender.start()
        # Read the echo as it comes (the server streams it through in pieces), checking
        # every byte against the body: keeping it all is 10 MiB, comparing as we go is cheaper.
        header = bytearray()
        off = 0
        deadline = time.monotonic() + scaled(timeout)
        while off < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("big-len: %d of %d body bytes back within %.1f s" % (off, size, scaled(timeout)))
            s.settimeout(left)
            try:
                chunk = s.recv(262144)
            except socket.timeout:
                continue
            if not chunk:
                raise Failure("big-len: EOF after %d of %d body bytes" % (off, size))
            if pause_ms:
                time.sleep(pause_ms / 1000)  # a slow reader on purpose, however fast the server
            if len(header) < 4:
                take = 4 - len(header)
                header += chunk[:take]
                chunk = chunk[take:]
                if len(header) == 4 and struct.unpack(">I", header)[0] != size:
                    raise Failure("big-len: echoed header says %d bytes, want %d" % (struct.unpack(">I", header)[0], size))
            if chunk:
                if off + len(chunk) > size:
                    raise Failure("big-len: more than %d body bytes came back" % size)
                if chunk != body[off:off + len(chunk)]:
                    bad = next(i for i in range(len(chunk)) if chunk[i] != body[off + i])
                    raise Failure(frame_mismatch(0, body[off:off + len(chunk)], chunk) + " (at body offset %d)" % (off + bad))
                off += len(chunk)
        sender.join(scaled(timeout))
        if sender.error:
            raise Failure("big-len: send failed: %s" % sender.error)
    finally:
        s.close()
    return "one len frame of %d bytes echoed, header and every byte equal" % size


def short(v, n=60):
    r = repr(v)
    return r if len(r) <= n else r[:n] + "...(%d chars)" % len(r)


# The resp script: (command, expected reply). Expected errors are exact. The keys carry TAG,
# so that runs against one server (the table lives as long as the server) do not meet.
def resp_script(tag):
    big = "v" * 5000
    k = "k:" + tag
    bk = b"bin\x00key:" + tag.encode()
    return [
        (resp_command("PING"), ("+", "PONG")),
        (resp_command("ping", "hello"), ("$", b"hello")),
        (resp_command("ECHO", "hi there\r\n"), ("$", b"hi there\r\n")),
        (resp_command("GET", k), ("$", None)),
        (resp_command("SET", k, "v1"), ("+", "OK")),
        (resp_command("GET", k), ("$", b"v1")),
        (resp_command("SET", k, big), ("+", "OK")),
        (resp_command("get", k), ("$", big.encode())),
        (resp_command("SET", bk, b"\x00\xff\r\n"), ("+", "OK")),
        (resp_command("GET", bk), ("$", b"\x00\xff\r\n")),
        (resp_command("ECHO", ""), ("$", b"")),
        (resp_command("SET", k, "x" * 65536), ("+", "OK")),  # the largest value the table takes
        (resp_command("SET", k, "x" * 65537), ("-", "ERR value too long (at most 65536 bytes)")),
        (resp_command("SET", "y" * 257, "v"), ("-", "ERR key too long (at most 256 bytes)")),
        # redis 7's words: the name, then the arguments quoted, each followed by a space.
        (resp_command("STRLEN", k), ("-", "ERR unknown command 'STRLEN', with args beginning with: '%s' " % k)),
        (resp_command("FLUSHALL"), ("-", "ERR unknown command 'FLUSHALL', with args beginning with: ")),
        (resp_command("SET", "k"), ("-", "ERR wrong number of arguments for 'set' command")),
        (resp_command("GET"), ("-", "ERR wrong number of arguments for 'get' command")),
        (resp_command("ECHO", "a", "b"), ("-", "ERR wrong number of arguments for 'echo' command")),
        (resp_command("PING", "a", "b"), ("-", "ERR wrong number of arguments for 'ping' command")),
        (b"PING\r\n", ("+", "PONG")),  # an inline command, as telnet or nc would send it
        (b"ECHO inline\r\n", ("$", b"inline")),
    ]


def resp(host, port, splits, seed, timeout):
    rng = random.Random(seed)
    script = resp_script("%d.%d.%s" % (os.getpid(), seed, splits))
    stream = b"".join(c for c, _ in script)
    s = connect(host, port)
    try:
        sender = Sender(s, cut(rng, stream, splits), rng, 0)
        sender.start()

        def check(k, reply):
            if reply != script[k][1]:
                raise Failure("reply %d to %s: got %s, want %s" % (k, show(script[k][0]), short(reply), short(script[k][1])))

        read_frames(s, RespReplyDecoder(), len(script), timeout, "resp", check)
        sender.join(scaled(timeout))
    finally:
        s.close()
    return "%d RESP commands pipelined (splits %s), every reply as expected" % (len(script), splits)


def resp_fill(host, port, keys, limit, timeout):
    """On a fresh server: KEYS SETs of new keys, pipelined; the first LIMIT must get +OK, the
    rest the table-full error; then a SET of a key already there (a replacement, not a new
    key) must still get +OK, and a GET of the first and of the last accepted key their values."""
    cmds = [resp_command("SET", "fill:%d" % i, "v%d" % i) for i in range(keys)]
    want = [("+", "OK")] * min(keys, limit) + [("-", "ERR table full (at most %d keys)" % limit)] * max(0, keys - limit)
    cmds += [resp_command("SET", "fill:0", "again"), resp_command("GET", "fill:0"),
             resp_command("GET", "fill:%d" % (min(keys, limit) - 1))]
    want += [("+", "OK"), ("$", b"again"), ("$", b"v%d" % (min(keys, limit) - 1))]
    with connect(host, port) as s:
        s.sendall(b"".join(cmds))

        def check(k, reply):
            if reply != want[k]:
                raise Failure("reply %d: got %s, want %s" % (k, short(reply), short(want[k])))

        read_frames(s, RespReplyDecoder(), len(want), timeout, "resp-fill", check)
    return "%d SETs: %d stored, %d refused (table full); a replacement and two GETs still answered" % (
        keys, min(keys, limit), max(0, keys - limit))


def http_exchange(s, request, want, timeout, name):
    s.sendall(request)
    return http_read(s, want, timeout, name)


def http_read(s, want, timeout, name, decoder=None):
    decoder = decoder or HttpResponseDecoder()
    got = read_frames(s, decoder, len(want), timeout, name)
    for k, ((status, headers, body), (wstatus, wconn)) in enumerate(zip(got, want)):
        if status != wstatus:
            raise Failure("%s: response %d has status %d, want %d (%r)" % (name, k, status, wstatus, body[:80]))
        if wconn is not None and headers.get("connection", "").lower() != wconn:
            raise Failure("%s: response %d says Connection: %r, want %r" % (name, k, headers.get("connection"), wconn))
    return got


def http(host, port, timeout):
    s = connect(host, port)
    try:
        r = http_exchange(s, http_request("GET", "/"), [(200, "keep-alive")], timeout, "1.1 GET /")
        if not r[0][2]:
            raise Failure("GET / answered with an empty body")
        http_exchange(s, http_request("GET", "/nothing-here"), [(404, "keep-alive")], timeout, "1.1 404")
        # A body the server does not want must still be read past, or it would be taken
        # for the next request.
        http_exchange(s, http_request("POST", "/", body=b"GET /evil HTTP/1.1\r\n\r\n"),
                      [(405, "keep-alive")], timeout, "1.1 POST")
        # Two requests in one write: two responses, in order.
        http_exchange(s, http_request("GET", "/") + http_request("GET", "/x"),
                      [(200, "keep-alive"), (404, "keep-alive")], timeout, "1.1 pipelined")
        http_exchange(s, http_request("GET", "/", headers=[("Connection", "close")]),
                      [(200, "close")], timeout, "1.1 Connection: close")
        expect_eof(s, timeout, "after Connection: close")
    finally:
        s.close()
    with connect(host, port) as s:
        http_exchange(s, http_request("GET", "/", version="1.0"), [(200, "close")], timeout, "1.0 GET /")
        expect_eof(s, timeout, "after an HTTP/1.0 request")
    with connect(host, port) as s:
        http_exchange(s, http_request("GET", "/", version="1.0", headers=[("Connection", "keep-alive")]),
                      [(200, "keep-alive")], timeout, "1.0 keep-alive")
        http_exchange(s, http_request("GET", "/", version="1.0"), [(200, "close")], timeout, "1.0 then")
        expect_eof(s, timeout, "after the second HTTP/1.0 request")
    return ("1.1 keep-alive (200, 404, 405 with its body skipped, a pipelined pair), "
            "Connection: close, 1.0 default close and 1.0 keep-alive all answered as they should")


# bad cases: codec -> name -> (bytes to send (a function of max_frame), the exact reply, or
# for http the status; None: no reply at all)
def _too_long_line(max_frame):
    return b"y" * (max_frame + 1)


BAD_CASES = {
    "line": {
        "too-long": (_too_long_line, b"ERR line too long\n"),
    },
    "len": {
        "huge-header": (lambda m: b"\xff\xff\xff\xff", None),
        "over-limit": (lambda m: struct.pack(">I", m + 1) + b"z" * 100, None),
    },
    "resp": {
        "bad-bulk-length": (lambda m: b"*1\r\n$abc\r\n", b"-ERR Protocol error"),
        "huge-bulk": (lambda m: b"*1\r\n$2147483648\r\n", b"-ERR Protocol error"),
        "huge-array": (lambda m: b"*2147483647\r\n", b"-ERR Protocol error"),
        "no-crlf-after-bulk": (lambda m: b"*1\r\n$4\r\nPINGxx", b"-ERR Protocol error"),
        "not-bulk": (lambda m: b"*1\r\n:5\r\n", b"-ERR Protocol error"),
        # Two bulks of 1 MiB (each within resp.h's limit), more than the 2 MiB input buffer.
        "too-big-request": (lambda m: b"*3\r\n$4\r\nECHO\r\n" + (b"$1048576\r\n" + b"b" * 1048576 + b"\r\n") * 2,
                            b"-ERR Protocol error: request larger than the input buffer\r\n"),
    },
    "http": {
        "garbage": (lambda m: b"\x01\x02 not http at all\r\n\r\n", 400),
        "bad-content-length": (lambda m: b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n", 400),
        "huge-body": (lambda m: b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n", 413),
        # Well-formed, just too large, however many digits (RFC 9110 8.6): 413, never a wrap.
        "huge-body-20-digits": (lambda m: b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551617\r\n\r\n", 413),
        "huge-head": (lambda m: b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
        "chunked": (lambda m: b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
        "bad-version": (lambda m: b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        "no-host": (lambda m: b"GET / HTTP/1.1\r\n\r\n", 400),
        "smuggling": (lambda m: b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    },
    "fixed": {
        # No bad frame exists in fixed:N; EOF inside a frame is the only mistake.
        "truncated": (lambda m: b"t", None),
    },
}


def served_once(s, codec_name, timeout, name):
    """One request and its reply on S, in CODEC_NAME: proves the connection is served."""
    if codec_name == "resp":
        s.sendall(resp_command("PING"))
        r = read_frames(s, RespReplyDecoder(), 1, timeout, name)[0]
        if r != ("+", "PONG"):
            raise Failure("%s: PING got %r" % (name, r))
    elif codec_name == "http":
        http_exchange(s, http_request("GET", "/"), [(200, "keep-alive")], timeout, name)
    else:
        codec = make_codec(codec_name)
        frame = b"f" * codec.size if isinstance(codec, FixedCodec) else b"hello"
        s.sendall(codec.encode(frame))
        got = read_frames(s, make_codec(codec_name), 1, timeout, name)[0]
        if got != frame:
            raise Failure(frame_mismatch(0, frame, got))


def bad(host, port, codec_name, case, max_frame, timeout):
    family = codec_name.split(":")[0]
    if case not in BAD_CASES.get(family, {}):
        raise SystemExit("codecs: no bad case %r for %s (have: %s)" % (
            case, codec_name, ", ".join(BAD_CASES.get(family, {}))))
    make, want = BAD_CASES[family][case]
    a = connect(host, port)
    b = connect(host, port)
    try:
        served_once(a, codec_name, timeout, "the good client, before")
        b.sendall(make(max_frame))
        if family == "fixed":
            b.shutdown(socket.SHUT_WR)
        got = bytearray()
        how = None
        deadline = time.monotonic() + scaled(timeout)
        while how is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("bad %s: not closed within %.1f s (got %s)" % (case, scaled(timeout), show(got)))
            b.settimeout(left)
            try:
                chunk = b.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                how = "reset"  # closed with our bytes unread; the reply must have come first
                break
            if not chunk:
                how = "EOF"
            got += chunk
        if family == "http":
            line = bytes(got).split(b"\r\n", 1)[0]
            parts = line.split(b" ")
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise Failure("bad %s: want an HTTP error status line, got %s" % (case, show(got)))
            status = int(parts[1])
            if want is not None and status != want:
                raise Failure("bad %s: got status %d (%s), want %d" % (case, status, show(line), want))
            if want is None and status < 400:
                raise Failure("bad %s: got status %d, want an error" % (case, status))
            resps = HttpResponseDecoder().feed(bytes(got))
            if len(resps) != 1 or resps[0][1].get("connection", "").lower() != "close":
                raise Failure("bad %s: want one whole response with Connection: close, got %s" % (case, show(got, 200)))
            said = "HTTP %d" % status
        elif want is None:
            if got:
                raise Failure("bad %s: want no reply, got %s" % (case, show(got)))
            said = "no reply"
        else:
            if not bytes(got).startswith(want):
                raise Failure("bad %s: got %s, want %s..." % (case, show(got, 80), show(want)))
            if family == "resp" and (not got.endswith(b"\r\n") or got.count(b"\r\n") != 1):
                raise Failure("bad %s: want one error line, got %s" % (case, show(got, 120)))
            said = show(got, 80)
        served_once(a, codec_name, timeout, "the good client, after")
    finally:
        a.close()
        b.close()
    return "bad client (%s) got %s, then %s; the other client was served before and after" % (case, said, how)



# ---------------------------------------------------------------------------
# Exact bytes: every byte a client receives, pinned (http-exact, http-limits, resp-exact)
# ---------------------------------------------------------------------------

HTTP_BODIES = {
    200: b"hello from 06_codecs: one HTTP/1.1 request head, decoded\n",
    404: b"not found\n",
    405: b"method not allowed\n",
}
HTTP_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                413: "Content Too Large", 431: "Request Header Fields Too Large",
                501: "Not Implemented", 505: "HTTP Version Not Supported"}


def http_response(status, keep_alive=True, head=False, body=None):
    """The exact bytes the server answers with: the status line, Content-Type, Content-Length,
    Connection, Allow on a 405, the empty line, and the body unless HEAD asked (its
    Content-Length is still the body's). BODY: an error's reason (sent as reason + "\\n")."""
    body = HTTP_BODIES[status] if body is None else body.encode() + b"\n"
    return (("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
             "Connection: %s\r\n%s\r\n") % (status, HTTP_REASONS[status], len(body),
                                             "keep-alive" if keep_alive else "close",
                                             "Allow: GET\r\n" if status == 405 else "")).encode() + \
        (b"" if head else body)


def raw(method, target="/", version="1.1", headers=(("Host", "a"),), body=b""):
    """A request written exactly as given (http_request adds Host and Content-Length)."""
    h = "".join("%s: %s\r\n" % kv for kv in headers)
    return ("%s %s HTTP/%s\r\n%s\r\n" % (method, target, version, h)).encode("latin-1") + body


CLOSE = (("Host", "a"), ("Connection", "close"))

# (name, request bytes, the exact bytes of every response until the server's EOF, splits):
# splits "all" sends the requests in one write, then byte by byte, then cut at random; "one"
# sends them in one write only (for a request whose body is never sent).
HTTP_EXACT = [
    ("HEAD then GET, pipelined: no body after the HEAD's head",
     raw("HEAD") + raw("GET") + raw("HEAD", "/nope") + raw("GET", headers=CLOSE),
     http_response(405, head=True) + http_response(200) + http_response(405, head=True) +
     http_response(200, keep_alive=False), "all"),
    ("HEAD with a body: the body read past, the response still without one",
     raw("HEAD", headers=(("Host", "a"), ("Content-Length", "5")), body=b"GET /") + raw("GET", headers=CLOSE),
     http_response(405, head=True) + http_response(200, keep_alive=False), "all"),
    ("'head' and 'get' are other methods (methods are case-sensitive): 405, with a body",
     raw("head") + raw("get") + raw("GET", "/x", headers=CLOSE),
     http_response(405) + http_response(405) + http_response(404, keep_alive=False), "all"),
    ("a 404 and a POST's 405 (its body skipped), then Connection: close",
     raw("GET", "/nope") + raw("POST", headers=(("Host", "a"), ("Content-Length", "22")),
                               body=b"GET /evil HTTP/1.1\r\n\r\n") + raw("GET", headers=CLOSE),
     http_response(404) + http_response(405) + http_response(200, keep_alive=False), "all"),
    ("Connection: keep-alive, close closes; the pipelined request after it is not answered",
     raw("GET", headers=(("Host", "a"), ("Connection", "keep-alive, close"))) + raw("GET"),
     http_response(200, keep_alive=False), "all"),
    ("Connection: foo, Close closes (tokens in any case, anywhere in the list)",
     raw("GET", headers=(("Host", "a"), ("Connection", "foo, Close"))) + raw("GET"),
     http_response(200, keep_alive=False), "all"),
    ("two Connection lines, close in the second, closes",
     raw("GET", headers=(("Host", "a"), ("Connection", "keep-alive"), ("connection", "CLOSE"))) + raw("GET"),
     http_response(200, keep_alive=False), "all"),
    ("two Connection lines, close in the first, closes (a later line adds tokens, never removes one)",
     raw("GET", headers=(("Host", "a"), ("Connection", "close"), ("Connection", "keep-alive"))) + raw("GET"),
     http_response(200, keep_alive=False), "all"),
    ("Connection: closed and Connection: xclose are other tokens: the connection stays",
     raw("GET", headers=(("Host", "a"), ("Connection", "closed"))) +
     raw("GET", headers=(("Host", "a"), ("Connection", "xclose, keep-alive"))) + raw("GET", headers=CLOSE),
     http_response(200) + http_response(200) + http_response(200, keep_alive=False), "all"),
    ("HTTP/1.0 with Connection: foo, Keep-Alive stays; then 1.0 without it closes",
     raw("GET", version="1.0", headers=(("Connection", "foo, Keep-Alive"),)) + raw("GET", version="1.0") + raw("GET"),
     http_response(200) + http_response(200, keep_alive=False), "all"),
    ("HTTP/1.0 with Connection: keep-alive, close closes",
     raw("GET", version="1.0", headers=(("Connection", "keep-alive, close"),)) + raw("GET"),
     http_response(200, keep_alive=False), "all"),
    ("HTTP/1.2 and 1.9 are read as 1.1 (RFC 9110 2.5): kept open, Host required",
     raw("GET", version="1.2") + raw("GET", version="1.9", headers=()),
     http_response(200) + http_response(400, keep_alive=False, body="HTTP/1.1 request without Host"), "all"),
    ("a target in absolute form is taken as a path (a simplification: RFC 9112 3.2.2 says accept it)",
     raw("GET", "http://a/") + raw("GET", "*", headers=CLOSE),
     http_response(404) + http_response(404, keep_alive=False), "all"),
    ("an empty line before the request line is 400 (a simplification: RFC 9112 2.2 says skip it)",
     b"\r\n" + raw("GET"), http_response(400, keep_alive=False, body="empty request line"), "all"),
    ("HTTP/2.0 is 505", raw("GET", version="2.0"),
     http_response(505, keep_alive=False, body="HTTP version not supported"), "all"),
    ("HTTP/0.9 is 505", raw("GET", version="0.9"),
     http_response(505, keep_alive=False, body="HTTP version not supported"), "all"),
    ("a HEAD that fails (no Host) gets its 400 head without the body",
     raw("HEAD", headers=()),
     http_response(400, keep_alive=False, head=True, body="HTTP/1.1 request without Host"), "all"),
    ("a HEAD with a body too large gets its 413 head without the body",
     raw("HEAD", headers=(("Host", "a"), ("Content-Length", "1048577"))),
     http_response(413, keep_alive=False, head=True, body="body too large"), "all"),
    ("Expect: 100-continue with a body we do not want: the final status at once, and the close",
     raw("POST", headers=(("Host", "a"), ("Expect", "100-Continue"), ("Content-Length", "5"))),
     http_response(405, keep_alive=False), "one"),
    ("Expect: 100-continue on a GET with a body: 200 at once, and the close",
     raw("GET", headers=(("Host", "a"), ("expect", "100-continue"), ("Content-Length", "3"))),
     http_response(200, keep_alive=False), "one"),
    ("Expect: 100-continue without a body changes nothing",
     raw("GET", headers=(("Host", "a"), ("Expect", "100-continue"))) + raw("GET", headers=CLOSE),
     http_response(200) + http_response(200, keep_alive=False), "all"),
]
for _te in ("chunked", "CHUNKED", "gzip, chunked", "chunked, identity", "identity", ""):
    HTTP_EXACT.append(("Transfer-Encoding: %r is 501, whatever the value or its case" % _te,
                       raw("POST", headers=(("Host", "a"), ("transfer-ENCODING", _te))) + raw("GET"),
                       http_response(501, keep_alive=False, body="Transfer-Encoding not implemented"), "all"))
HTTP_EXACT += [
    ("Transfer-Encoding after Content-Length is 400",
     raw("POST", headers=(("Host", "a"), ("Content-Length", "3"), ("Transfer-Encoding", "Chunked"))) + b"abc",
     http_response(400, keep_alive=False, body="both Transfer-Encoding and Content-Length"), "all"),
    ("Content-Length after a Transfer-Encoding list is 400",
     raw("POST", version="1.0", headers=(("TRANSFER-ENCODING", "gzip, chunked"), ("content-length", "3"))) + b"abc",
     http_response(400, keep_alive=False, body="both Transfer-Encoding and Content-Length"), "all"),
]
# A bare CR anywhere in a head (RFC 9112 2.2: invalid), and control bytes in a name: 400, and
# the reply holds none of the request's bytes (a fixed reason, never the name or the value).
for _what, _req, _why in [
        ("in the method", b"G\rET / HTTP/1.1\r\nHost: a\r\n\r\n", "malformed request line"),
        ("in the target", b"GET /\r/ HTTP/1.1\r\nHost: a\r\n\r\n", "malformed request line"),
        ("after the version", b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", "malformed request line"),
        ("in a name", b"GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n", "malformed header line"),
        ("as a name's last byte", b"GET / HTTP/1.1\r\nHost: a\r\nX\r: b\r\n\r\n", "malformed header line"),
        ("in a value", b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", "control character in header value"),
        ("at a value's end", b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", "control character in header value"),
        ("as a line ending", b"GET / HTTP/1.1\r\nHost: a\rX-Evil: 1\r\n\r\n", "control character in header value"),
        ("before the empty line", b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n\r\n", "malformed header line"),
        ("a LF inside a name (two lines, one without a colon)", b"GET / HTTP/1.1\r\nHost: a\r\nX-A\nB: c\r\n\r\n", "malformed header line"),
        ("a NUL in a name", b"GET / HTTP/1.1\r\nHost: a\r\nX-\x00: c\r\n\r\n", "malformed header line"),
        ("an ESC in a name", b"GET / HTTP/1.1\r\nHost: a\r\n\x1b[2J: c\r\n\r\n", "malformed header line"),
        ("a DEL in a value", b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", "control character in header value"),
        ("a space before the colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "malformed header line"),
]:
    HTTP_EXACT.append(("a bare CR or a control byte %s is 400" % _what, _req, http_response(400, keep_alive=False, body=_why), "all"))


def read_to_eof(s, want_len, timeout, name):
    """Everything the server sends until its EOF (a reset after the last byte is EOF too)."""
    got = bytearray()
    deadline = time.monotonic() + scaled(timeout)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("%s: no EOF within %.1f s; got %d bytes (want %d): %s" % (
                name, scaled(timeout), len(got), want_len, show(got, 300)))
        s.settimeout(left)
        try:
            chunk = s.recv(262144)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk


def exact_mismatch(name, got, want):
    off = next((i for i in range(min(len(want), len(got))) if want[i] != got[i]), min(len(want), len(got)))
    return ("%s: %d bytes received, want %d; first difference at offset %d:\n  want %r\n  got  %r" % (
        name, len(got), len(want), off, bytes(want[max(0, off - 40):off + 60]), bytes(got[max(0, off - 40):off + 60])))


def exact_session(host, port, request, want, splits, seed, timeout, name):
    """Sends REQUEST (one write, one byte per send, or random cuts) and requires exactly WANT,
    then the server's EOF."""
    rng = random.Random(seed)
    s = connect(host, port)
    try:
        sender = Sender(s, cut(rng, request, splits), rng, 0)
        sender.start()
        got = read_to_eof(s, len(want), timeout, name)
        sender.join(scaled(timeout))
    finally:
        s.close()
    if got != want:
        raise Failure(exact_mismatch(name, got, want))


def http_exact(host, port, seed, timeout):
    return exact_table(host, port, seed, timeout, HTTP_EXACT, "http")


def http_limits(host, port, timeout):
    """http.h's limits at the server's defaults, each exactly at and one past."""
    def head_of(size, extra=()):
        base = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"%s: v\r\n" % h.encode() for h in extra)
        pad = size - len(base) - len(b"X: \r\n\r\n")
        return base + b"X: " + b"v" * pad + b"\r\n\r\n"
    cases = []
    h = head_of(8192)
    assert len(h) == 8192
    cases.append(("a head of exactly 8192 bytes", h + raw("GET", headers=CLOSE),
                  http_response(200) + http_response(200, keep_alive=False)))
    cases.append(("a head of 8193 bytes is 431", head_of(8193),
                  http_response(431, keep_alive=False, body="request head too large")))
    lines = [("H%d" % i, "v") for i in range(99)]
    cases.append(("100 header lines (Host and 99 more)", raw("GET", headers=[("Host", "a")] + lines) + raw("GET", headers=CLOSE),
                  http_response(200) + http_response(200, keep_alive=False)))
    cases.append(("101 header lines is 431", raw("GET", headers=[("Host", "a")] + lines + [("H99", "v")]),
                  http_response(431, keep_alive=False, body="too many header lines")))
    body = b"b" * 1048576
    cases.append(("a body of exactly 1 MiB is read past (405), the connection kept",
                  raw("POST", headers=(("Host", "a"), ("Content-Length", "1048576")), body=body) + raw("GET", headers=CLOSE),
                  http_response(405) + http_response(200, keep_alive=False)))
    cases.append(("a Content-Length of 1 MiB + 1 is 413 before any body byte",
                  raw("POST", headers=(("Host", "a"), ("Content-Length", "1048577"))),
                  http_response(413, keep_alive=False, body="body too large")))
    for name, request, want in cases:
        exact_session(host, port, request, want, "none", 1, timeout, name)
    return "head 8192/8193, 100/101 header lines, body 1 MiB / 1 MiB + 1: exact responses"


def resp_err(msg):
    return b"-" + msg.encode("latin-1") + b"\r\n"


def resp_proto(msg):
    return resp_err("ERR Protocol error: " + msg)


def resp_exact_cases():
    """(name, request bytes, the exact reply bytes until EOF). Every session ends with the
    server's close: a protocol error closes; otherwise the request ends with QUIT-like bad input."""
    end = b"*1\r\n$x\r\n"  # a protocol error: the server answers it and closes
    end_reply = resp_proto("invalid bulk length")
    nosuch = "ERR unknown command '%s', with args beginning with: %s"
    c = []
    c.append(("an unknown command: redis 7's words, its arguments quoted",
              resp_command("NOSUCH", "a", "b c") + b"nosuch\r\n" + end,
              resp_err(nosuch % ("NOSUCH", "'a' 'b c' ")) + resp_err(nosuch % ("nosuch", "")) + end_reply))
    c.append(("an unknown command's name cut at 128 bytes, its arguments at 128",
              resp_command("N" * 200, "a" * 100, "b" * 40, "c") + end,
              resp_err(nosuch % ("N" * 128, "'" + "a" * 100 + "' '" + "b" * 25 + "' ")) + end_reply))
    c.append(("CR, LF, ESC, NUL and 8-bit bytes in a name or an argument never reach the reply",
              resp_command(b"A\r\nB\x1b[2J\x00\xff", "x\ny") + end,
              resp_err(nosuch % ("A??B?[2J??", "'x?y' ")) + end_reply))
    c.append(("inline commands have no quoting: ECHO \"a b\" is three words",
              b'ECHO "a b"\r\nECHO "ab"\r\n' + end,
              resp_err("ERR wrong number of arguments for 'echo' command") + b'$4\r\n"ab"\r\n' + end_reply))
    c.append(("wrong argument counts", resp_command("SET", "k") + resp_command("get") +
              resp_command("ECHO") + resp_command("PING", "a", "b") + end,
              resp_err("ERR wrong number of arguments for 'set' command") +
              resp_err("ERR wrong number of arguments for 'get' command") +
              resp_err("ERR wrong number of arguments for 'echo' command") +
              resp_err("ERR wrong number of arguments for 'ping' command") + end_reply))
    c.append(("an integer where a bulk belongs", b"*1\r\n:5\r\n", resp_proto("expected '$', got ':'")))
    c.append(("an empty line where a bulk belongs", b"*1\r\n\r\n", resp_proto("expected '$', got '?'")))
    for bad_num, what in [(b"*1\r\n$04\r\nPING\r\n", "invalid bulk length"),
                          (b"*1\r\n$-0\r\n", "invalid bulk length"),
                          (b"*1\r\n$+4\r\nPING\r\n", "invalid bulk length"),
                          (b"*1\r\n$-1\r\n", "invalid bulk length"),
                          (b"*01\r\n$4\r\nPING\r\n", "invalid multibulk length"),
                          (b"*-0\r\n", "invalid multibulk length"),
                          (b"*00\r\n", "invalid multibulk length"),
                          (b"*1025\r\n", "invalid multibulk length"),
                          (b"*1\r\n$1048577\r\n", "invalid bulk length"),
                          (b"*1\r\n$" + b"1" * 21 + b"\r\n", "too big bulk count string"),
                          (b"*" + b"1" * 21 + b"\r\n", "too big mbulk count string")]:
        c.append(("%r is refused (redis 7 refuses it too)" % bad_num[:24], resp_command("PING") + bad_num,
                  b"+PONG\r\n" + resp_proto(what)))
    c.append(("*0, *-1 and *-5 are empty requests: no reply (redis ignores them)",
              b"*0\r\n*-1\r\n*-5\r\n\r\nPING\r\n" + end, b"+PONG\r\n" + end_reply))
    c.append(("a bulk not followed by CRLF", b"*1\r\n$4\r\nPINGxx", resp_proto("bulk not followed by CRLF")))
    inline = b"a" * 65536
    c.append(("an inline line of 65,536 bytes then LF is a request",
              inline + b"\n" + end, resp_err(nosuch % ("a" * 128, "")) + end_reply))
    c.append(("65,535 bytes then CRLF is a request", inline[1:] + b"\r\n" + end,
              resp_err(nosuch % ("a" * 128, "")) + end_reply))
    c.append(("65,536 bytes then CRLF is too big (redis 7 refuses it when the LF comes later)",
              inline + b"\r\n", resp_proto("too big inline request")))
    c.append(("65,537 bytes then LF is too big", inline + b"a\n", resp_proto("too big inline request")))
    c.append(("1024 arguments are a request", resp_command("PING", *(["x"] * 1023)) + end,
              resp_err("ERR wrong number of arguments for 'ping' command") + end_reply))
    mib = b"m" * 1048576
    c.append(("a bulk of exactly 1 MiB", resp_command("ECHO", mib) + end,
              b"$1048576\r\n" + mib + b"\r\n" + end_reply))
    # The whole request within RESP_INPUT_MAX (2 MiB): exactly, and one byte past.
    head = resp_command("NOSUCH")[:-len(b"$6\r\nNOSUCH\r\n")].replace(b"*1", b"*3") + b"$6\r\nNOSUCH\r\n"
    first = b"$1048576\r\n" + mib + b"\r\n"
    rest = 2097152 - len(head) - len(first) - len(b"$1048536\r\n\r\n")
    req = head + first + b"$%d\r\n" % rest + b"z" * rest + b"\r\n"
    assert len(req) == 2097152, len(req)
    c.append(("a request of exactly 2 MiB (the input buffer)", req + end,
              resp_err(nosuch % ("NOSUCH", "'" + "m" * 128 + "' ")) + end_reply))
    req1 = head + first + b"$%d\r\n" % (rest + 1) + b"z" * (rest + 1) + b"\r\n"
    c.append(("a request of 2 MiB + 1 byte", req1,
              resp_proto("request larger than the input buffer")))
    return c


def resp_exact(host, port, seed, timeout):
    cases = resp_exact_cases()
    n = 0
    for name, request, want in cases:
        for sp in (["none", "random"] if len(request) < 100000 else ["none"]):
            exact_session(host, port, request, want, sp, seed, timeout, "%s (splits %s)" % (name, sp))
            n += 1
    return "%d cases, %d sessions: every reply byte as expected, then the close" % (len(cases), n)

# What conn_linger promises after a bad frame (server.c, LINGER_MAX_BYTES = 1 MiB): the error
# reply, then our FIN, then the client's later bytes read and thrown away, so that the close
# never resets the connection while the client still sends (a reset would make the client's
# kernel drop the error reply unread); but at most 1 MiB of them, so a client that never stops
# sending cannot hold the connection.
LINGER_MAX = 1 << 20


def linger(host, port, timeout):
    err = b"ERR line too long\n"
    # 1. Below the limit: 3/4 MiB more after the bad line, then our FIN: exactly the error,
    # then EOF (never a reset), and every byte sent was taken.
    s = connect(host, port)
    try:
        s.sendall(_too_long_line(65536) + b"\n")
        junk = b"j" * 65536
        for _ in range(LINGER_MAX * 3 // 4 // len(junk)):
            s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("below the limit: no EOF within %.1f s; got %s" % (scaled(timeout), show(got)))
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                raise Failure("below the limit (3/4 MiB sent after the bad line): reset after %s, "
                              "want the error, then EOF" % show(got))
            if not chunk:
                break
            got += chunk
        if bytes(got) != err:
            raise Failure("below the limit: got %s, want exactly %r then EOF" % (show(got, 80), err))
    finally:
        s.close()
    # 2. Past it: a client that never stops sending is closed (a reset, or EPIPE) before it has
    # sent 1 MiB plus what both kernels buffer; 64 MiB is far past that.
    s = connect(host, port)
    sent = 0
    cap = 64 << 20
    try:
        s.sendall(_too_long_line(65536) + b"\n")
        junk = b"k" * 65536
        deadline = time.monotonic() + scaled(timeout)
        while sent < cap:
            if time.monotonic() > deadline:
                raise Failure("past the limit: the server neither closed nor read on after %d bytes "
                              "in %.1f s" % (sent, scaled(timeout)))
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                sent += s.send(junk)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            raise Failure("past the limit: %d MiB sent after the bad line and the connection still "
                          "open: the server throws away the bytes of a client it has finished with "
                          "forever (at most %d bytes)" % (cap >> 20, LINGER_MAX))
    finally:
        s.close()
    return ("the error then EOF with 3/4 MiB sent after it; closed after %d bytes of a client that "
            "never stops" % sent)


# More of RFC 9112's head rules, each pinned byte for byte like HTTP_EXACT's (same format):
# Host exactly once in 1.1 (RFC 9112 3.2: a second one is 400) and not needed in 1.0; equal
# Content-Length duplicates are one length, a malformed one is 400; optional whitespace around
# a value; every token character in a method or a name; a tab inside a value and around list
# tokens; the request line's single spaces and its exact "HTTP/" prefix.
HTTP_RULES = [
    ("two Host lines are 400 (RFC 9112 3.2)",
     raw("GET", headers=(("Host", "a"), ("Host", "a"))),
     http_response(400, keep_alive=False, body="more than one Host"), "all"),
    ("two Host lines in any case are 400",
     raw("GET", headers=(("host", "a"), ("X", "y"), ("HOST", "b"))),
     http_response(400, keep_alive=False, body="more than one Host"), "all"),
    ("HTTP/1.0 needs no Host: 200, then the close (1.0's default)",
     raw("GET", version="1.0", headers=()) + raw("GET"),
     http_response(200, keep_alive=False), "all"),
    ("two equal Content-Lengths are one length: the body read past once",
     raw("POST", headers=(("Host", "a"), ("Content-Length", "3"), ("content-length", "3")), body=b"abc") +
     raw("GET", headers=CLOSE),
     http_response(405) + http_response(200, keep_alive=False), "all"),
    ("two Content-Lengths that differ are 400",
     raw("POST", headers=(("Host", "a"), ("Content-Length", "3"), ("Content-Length", "4"))) + b"abcd",
     http_response(400, keep_alive=False, body="conflicting Content-Length headers"), "all"),
    ("spaces and tabs around a Content-Length are not part of it",
     raw("POST", headers=(("Host", "a"), ("Content-Length", " \t 3 \t"))) + b"xyz" + raw("GET", headers=CLOSE),
     http_response(405) + http_response(200, keep_alive=False), "all"),
]
for _cl in ("+3", "-3", "3 3", "0x3", "3,3", ""):
    HTTP_RULES.append(("Content-Length %r is 400" % _cl,
                       raw("POST", headers=(("Host", "a"), ("Content-Length", _cl))) + b"abc",
                       http_response(400, keep_alive=False, body="bad Content-Length"), "all"))
HTTP_RULES += [
    ("every token character in a header name is allowed",
     raw("GET", headers=(("Host", "a"), ("!#$%&'*+-.^_`|~09AZaz", "v"))) + raw("GET", headers=CLOSE),
     http_response(200) + http_response(200, keep_alive=False), "all"),
    ("a method of token characters other than GET is 405, with its body",
     raw("M-SEARCH") + raw("GET.") + raw("GET", headers=CLOSE),
     http_response(405) + http_response(405) + http_response(200, keep_alive=False), "all"),
    ("a tab inside a value is allowed, and tabs separate Connection tokens",
     raw("GET", headers=(("Host", "a"), ("X", "a\tb"))) +
     raw("GET", headers=(("Host", "a"), ("Connection", "\tfoo\t,\tclose\t"))) + raw("GET"),
     http_response(200) + http_response(200, keep_alive=False), "all"),
    ("a query or a second slash is another target: 404",
     raw("GET", "/?") + raw("GET", "//", headers=CLOSE),
     http_response(404) + http_response(404, keep_alive=False), "all"),
    ("two spaces in the request line are 400",
     b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
     http_response(400, keep_alive=False, body="malformed request line"), "all"),
    ("a space after the version is 400",
     b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
     http_response(400, keep_alive=False, body="malformed request line"), "all"),
    ("'http/1.1' in lower case is 400 (the name is case-sensitive)",
     b"GET / http/1.1\r\nHost: a\r\n\r\n",
     http_response(400, keep_alive=False, body="malformed request line"), "all"),
    ("HTTP/1.10 is 400 (one digit each side of the dot)",
     b"GET / HTTP/1.10\r\nHost: a\r\n\r\n",
     http_response(400, keep_alive=False, body="malformed request line"), "all"),
]


def exact_table(host, port, seed, timeout, cases, what):
    """Every (name, request, want[, splits]) of CASES as an exact session: sent whole, and,
    unless its splits say "one", byte by byte and in random pieces too."""
    n = 0
    for case in cases:
        name, request, want = case[:3]
        splits = case[3] if len(case) > 3 else "all"
        for sp in (["none", "bytes", "random"] if splits == "all" else ["none"]):
            exact_session(host, port, request, want, sp, seed, timeout, "%s (splits %s)" % (name, sp))
            n += 1
    return "%d %s, %d sessions: every %s byte as expected, then the close" % (
        len(cases), "scripts" if cases and len(cases[0]) > 3 else "cases", n,
        "response" if what == "http" else "reply")


def http_rules(host, port, seed, timeout):
    return exact_table(host, port, seed, timeout, HTTP_RULES, "http")


def resp_rules_cases():
    """(name, request bytes, the exact reply bytes until EOF), as resp_exact_cases: inline
    commands split on spaces and tabs alike, command names in any case, the table's replies."""
    end = b"*1\r\n$x\r\n"
    end_reply = resp_proto("invalid bulk length")
    nosuch = "ERR unknown command '%s', with args beginning with: %s"
    return [
        ("inline words are split on tabs as on spaces",
         b"ECHO\thi\r\n\t PING \t\r\nSET\tk\t v\r\nGET k\t\r\nFOO\ta\t\tb\r\n" + end,
         b"$2\r\nhi\r\n+PONG\r\n+OK\r\n$1\r\nv\r\n" + resp_err(nosuch % ("FOO", "'a' 'b' ")) + end_reply),
        ("an inline line of only spaces and tabs, or empty, gets no reply",
         b" \t \r\n\r\n\nPING\n" + end, b"+PONG\r\n" + end_reply),
        ("command names in any case; GET of a missing key is the null bulk; SET replaces",
         resp_command("eChO", "x") + resp_command("get", "nokey") + resp_command("Set", "k2", "one") +
         resp_command("SET", "k2", "two") + resp_command("GET", "k2") + resp_command("pInG") + end,
         b"$1\r\nx\r\n$-1\r\n+OK\r\n+OK\r\n$3\r\ntwo\r\n+PONG\r\n" + end_reply),
        ("empty bulks: ECHO of nothing, a key with an empty value",
         resp_command("ECHO", "") + resp_command("SET", "k3", "") + resp_command("GET", "k3") + end,
         b"$0\r\n\r\n+OK\r\n$0\r\n\r\n" + end_reply),
    ]


def resp_rules(host, port, seed, timeout):
    return exact_table(host, port, seed, timeout, resp_rules_cases(), "resp")


# ---------------------------------------------------------------------------
# More edges pinned byte for byte (06's second plausible-bug review): http-edges, resp-edges,
# eof-mid-frame. Additive: the lists and subcommands above are unchanged.
# ---------------------------------------------------------------------------

# (name, request bytes, the exact bytes of every response until the server's EOF, splits), as
# HTTP_EXACT: a Content-Length read to its last digit, the target's bytes, the keep-alive
# decision of a request whose body is read past (its response waits for the body's end).
HTTP_EDGES = [
    ("a Content-Length of exactly the limit then one digit more (10485760) is 413: every digit counts",
     raw("POST", headers=(("Host", "a"), ("Content-Length", "10485760"))),
     http_response(413, keep_alive=False, body="body too large"), "all"),
    ("the limit followed by ten zeros is 413",
     raw("POST", headers=(("Host", "a"), ("Content-Length", "1048576" + "0" * 10))),
     http_response(413, keep_alive=False, body="body too large"), "all"),
    ("a DEL in the target is 400 (a target is visible ASCII)",
     b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
     http_response(400, keep_alive=False, body="malformed request line"), "all"),
    ("an 8-bit byte in the target is 400",
     b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
     http_response(400, keep_alive=False, body="malformed request line"), "all"),
    ("Connection: close on a request with a body: its response, after the body, closes; the next request is not answered",
     raw("POST", headers=(("Host", "a"), ("Connection", "close"), ("Content-Length", "3")), body=b"abc") + raw("GET"),
     http_response(405, keep_alive=False), "all"),
    ("HTTP/1.0 with a body: the response after the body closes (1.0's default)",
     raw("POST", version="1.0", headers=(("Content-Length", "3"),), body=b"abc") + raw("GET"),
     http_response(405, keep_alive=False), "all"),
    ("HTTP/1.0 keep-alive with a body stays open",
     raw("POST", version="1.0", headers=(("Connection", "keep-alive"), ("Content-Length", "2")), body=b"ab") +
     raw("GET", headers=CLOSE),
     http_response(405) + http_response(200, keep_alive=False), "all"),
    ("a request line without a method (a leading space) is 400",
     b" / HTTP/1.1\r\nHost: a\r\n\r\n",
     http_response(400, keep_alive=False, body="malformed request line"), "all"),
    ("a header line without a name is 400",
     b"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n",
     http_response(400, keep_alive=False, body="malformed header line"), "all"),
    ("two Expect lines, 100-continue in the first: still answered at once, and the close",
     raw("POST", headers=(("Host", "a"), ("Expect", "100-continue"), ("Expect", "x-other"), ("Content-Length", "5"))),
     http_response(405, keep_alive=False), "one"),
    ("a HEAD with a body and Connection: close: the head without a body, after the body, then the close",
     raw("HEAD", headers=(("Host", "a"), ("Content-Length", "4"), ("Connection", "close")), body=b"GET ") + raw("GET"),
     http_response(405, keep_alive=False, head=True), "all"),
]


def http_edges(host, port, seed, timeout):
    return exact_table(host, port, seed, timeout, HTTP_EDGES, "http")


def resp_edges_cases():
    """(name, request bytes, the exact reply bytes until EOF), as resp_exact_cases: a command
    name matched whole, DEL shown as '?', the 128-byte cut of the arguments exactly at 128,
    empty numbers."""
    end = b"*1\r\n$x\r\n"
    end_reply = resp_proto("invalid bulk length")
    nosuch = "ERR unknown command '%s', with args beginning with: %s"
    return [
        ("a command name is matched whole: PINGX, GETS, SETNX, ECHOO and PIN are unknown",
         resp_command("PINGX") + resp_command("GETS", "k") + resp_command("SETNX", "k", "v") +
         resp_command("ECHOO", "x") + resp_command("PIN") + b"GETX k\r\n" + end,
         resp_err(nosuch % ("PINGX", "")) + resp_err(nosuch % ("GETS", "'k' ")) +
         resp_err(nosuch % ("SETNX", "'k' 'v' ")) + resp_err(nosuch % ("ECHOO", "'x' ")) +
         resp_err(nosuch % ("PIN", "")) + resp_err(nosuch % ("GETX", "'k' ")) + end_reply),
        ("a DEL byte in a name or an argument is shown as '?'",
         resp_command(b"X\x7fY", b"\x7f") + end, resp_err(nosuch % ("X?Y", "'?' ")) + end_reply),
        ("the arguments are shown while fewer than 128 bytes are: one that ends exactly at 128 is the last",
         resp_command("NOSUCH", "a" * 125, "b") + resp_command("NOSUCH", "a" * 124, "b", "c") + end,
         resp_err(nosuch % ("NOSUCH", "'" + "a" * 125 + "' ")) +
         resp_err(nosuch % ("NOSUCH", "'" + "a" * 124 + "' 'b' ")) + end_reply),
        ("an empty bulk length is refused", resp_command("PING") + b"*1\r\n$\r\n",
         b"+PONG\r\n" + resp_proto("invalid bulk length")),
        ("an empty count is refused", resp_command("PING") + b"*\r\n",
         b"+PONG\r\n" + resp_proto("invalid multibulk length")),
        ("a DEL where a bulk belongs is shown as '?'", resp_command("PING") + b"*1\r\n\x7f\r\n",
         b"+PONG\r\n" + resp_proto("expected '$', got '?'")),
    ]


def resp_edges(host, port, seed, timeout):
    return exact_table(host, port, seed, timeout, resp_edges_cases(), "resp")


def eof_mid_frame(host, port, codec_name, timeout):
    """A client that half-closes inside a frame whose bytes the server has already taken in
    full (a len frame streamed in pieces; an http body read past), so that nothing of it waits
    in the server's input buffer: the server must still see the frame cut short (it logs
    'EOF in the middle of a frame', which the bats test reads). The bytes back: len, the
    streamed echo so far (the whole frame's header, then the piece); http, nothing (the
    response waits for the body's end). Then EOF."""
    if codec_name == "len":
        body = bytes(random.Random(7).getrandbits(8) for _ in range(1000))
        request = struct.pack(">I", 100000) + body
        want = request
    elif codec_name == "http":
        request = raw("POST", headers=(("Host", "a"), ("Content-Length", "10"))) + b"abc"
        want = b""
    else:
        raise SystemExit("codecs: eof-mid-frame takes --codec len or http, not %r" % codec_name)
    with connect(host, port) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        got = read_to_eof(s, len(want), timeout, "eof-mid-frame")
    if got != want:
        raise Failure(exact_mismatch("eof-mid-frame %s" % codec_name, got, want))
    return "%s: %d bytes of a frame sent, then EOF; %d bytes back as expected, then the close" % (
        codec_name, len(request), len(got))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--timeout", type=float, default=10.0, help="seconds per wait (scaled)")
        p.add_argument("--seed", type=int, default=int(os.environ.get("SEED", "1")))
        return p

    p = add("echo", "random frames in random pieces, every echo checked")
    p.add_argument("--codec", required=True)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--max-size", type=int, default=4096)
    p.add_argument("--splits", choices=["random", "bytes", "none"], default="random")
    p.add_argument("--pause-ms", type=float, default=0)
    p = add("frame-at", "one frame of exactly N bytes")
    p.add_argument("--codec", required=True, choices=["line", "len"])
    p.add_argument("--size", type=int, required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--accepted", action="store_true")
    g.add_argument("--refused", action="store_true")
    p.add_argument("--crlf", action="store_true", help="line: end the line with \\r\\n")
    p = add("big-len", "one big len frame, streamed")
    p.add_argument("--size", type=int, default=10 << 20)
    p.add_argument("--rcvbuf", type=int, help="SO_RCVBUF: a small one makes a slow reader")
    p.add_argument("--pause-ms", type=float, default=0, help="sleep this long after each read")
    p = add("resp", "a pipelined RESP script")
    p.add_argument("--splits", choices=["random", "bytes", "none"], default="random")
    p = add("resp-fill", "SETs past the table's key limit")
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--limit", type=int, required=True)
    add("http", "keep-alive and close rules")
    add("http-exact", "every response byte: HEAD, Connection lists, Expect, versions, bad heads")
    add("http-limits", "head size, header count and body limits at and one past")
    add("resp-exact", "every reply byte: redis 7's error texts, strict numbers, RESP limits")
    add("linger", "line: after a bad frame, bytes up to 1 MiB are read and dropped, never past it")
    add("http-rules", "more head rules byte for byte: Host once, Content-Length forms, tokens, tabs")
    add("resp-rules", "inline words split on tabs, names in any case, the table's replies, byte for byte")
    add("http-edges", "Content-Length read to its last digit, the target's bytes, close after a body")
    add("resp-edges", "command names matched whole, DEL as '?', the 128-byte argument cut, empty numbers")
    p = add("eof-mid-frame", "half-close inside a frame the server has taken in full (len streamed, http body)")
    p.add_argument("--codec", required=True, choices=["len", "http"])
    p = add("bad", "one malformed input, while another client is served")
    p.add_argument("--codec", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--max-frame", type=int, default=65536)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "echo":
            msg = echo(a.host, a.port, a.codec, a.frames, a.max_size, a.splits, a.seed, a.pause_ms, a.timeout)
        elif a.cmd == "frame-at":
            msg = frame_at(a.host, a.port, a.codec, a.size, a.accepted, a.timeout, a.crlf)
        elif a.cmd == "big-len":
            msg = big_len(a.host, a.port, a.size, a.seed, a.timeout, a.rcvbuf, a.pause_ms)
        elif a.cmd == "resp":
            msg = resp(a.host, a.port, a.splits, a.seed, a.timeout)
        elif a.cmd == "resp-fill":
            msg = resp_fill(a.host, a.port, a.keys, a.limit, a.timeout)
        elif a.cmd == "http":
            msg = http(a.host, a.port, a.timeout)
        elif a.cmd == "http-exact":
            msg = http_exact(a.host, a.port, a.seed, a.timeout)
        elif a.cmd == "http-limits":
            msg = http_limits(a.host, a.port, a.timeout)
        elif a.cmd == "resp-exact":
            msg = resp_exact(a.host, a.port, a.seed, a.timeout)
        elif a.cmd == "linger":
            msg = linger(a.host, a.port, a.timeout)
        elif a.cmd == "http-rules":
            msg = http_rules(a.host, a.port, a.seed, a.timeout)
        elif a.cmd == "resp-rules":
            msg = resp_rules(a.host, a.port, a.seed, a.timeout)
        elif a.cmd == "http-edges":
            msg = http_edges(a.host, a.port, a.seed, a.timeout)
        elif a.cmd == "resp-edges":
            msg = resp_edges(a.host, a.port, a.seed, a.timeout)
        elif a.cmd == "eof-mid-frame":
            msg = eof_mid_frame(a.host, a.port, a.codec, a.timeout)
        else:
            msg = bad(a.host, a.port, a.codec, a.case, a.max_frame, a.timeout)
    except (Failure, OSError) as e:
        print("FAIL: %s: %s" % (a.cmd, e), flush=True)
        return 1
    print("ok: %s: %s" % (a.cmd, msg), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
