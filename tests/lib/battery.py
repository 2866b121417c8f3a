#!/usr/bin/env python3
"""battery.py: the bad-input battery (issue 18), one CLI for every stage with a protocol.

    battery.py --port P --pid PID --proto PROTO [--codec C] [--log FILE] [--seed S]
               [--attacks a,b,...] [--conns N]

PROTO says how a healthy client talks to the server and what a frame header is:
  line       05's requests: `ECHO x` -> `x`
  chat       07's room and 08's chat_server: a line goes to everyone else as `NAME: line`
  codec      06's server, with --codec fixed:N|line|len|resp|http (as given to its -c)
  kv         08's kv_server (RESP: SET, GET, PING)
  http       08's http_server (HTTP/1.1 keep-alive, GET /)
  heartbeat  08's heartbeat_server ({u32 length, u16 type, body}; DATA is sent back)
  echo       08's examples/echo (raw bytes)

The attacks, in order (each runs while a healthy client keeps one session open and checks
every byte of its answers before, during and after the attack):
  garbage    random bytes; echoed back exactly where the protocol echoes bytes; where the
             server closes the connection, the log must say so
  header4g   a frame header announcing 4 GiB (0xffffffff, or 4294967296 in text) and 256 KiB
             of its body: the server must drop that client (and log it), not buffer it
  longline   1 MiB + 1 bytes with no newline (no CRLF, no frame end): a line protocol drops
             the client (and logs it); echo and fixed frames echo every byte back
  conns      N (default 1000) connections opened at once, then closed at once (half with a
             reset): the server's descriptor count returns to where it was
  slow       a request sent one byte per second for its first 3 bytes, then the rest: the
             healthy client is answered within its deadline after every byte, and the slow
             request's answer is exact
  reset      a request whose replies are large, a few bytes of them read, then a reset
             (SO_LINGER 0) in the middle of the replies
After the battery: the server is alive, its RSS (/proc/PID/status VmRSS) is at most the RSS
measured before the first attack + RSS_SLACK_KIB (8 MiB) within a scaled deadline, and its
peak (VmHWM) at most that RSS + PEAK_SLACK_KIB (64 MiB): a server that buffered a 4 GiB frame
or kept each dropped client's 1 MiB fails one of the two.

Deadlines stretch with TIMEOUT_SCALE (netkit.scaled). Exit 0: every attack held; 1: one
failed (the message names the attack, what was expected and what came, and the seed); 2: usage.
"""

import argparse
import os
import random
import re
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netkit  # noqa: E402
from netkit import Failure, scaled  # noqa: E402

HOST = "127.0.0.1"
LONG_LINE = 1024 * 1024 + 1
HEADER_BODY = 256 * 1024
RSS_SLACK_KIB = 8 * 1024
PEAK_SLACK_KIB = 64 * 1024
SLOW_BYTES = 3
SLOW_PAUSE = 1.0  # the attack's pace, not a deadline: not scaled
ATTACKS = ["garbage", "header4g", "longline", "conns", "slow", "reset"]


# ---------------------------------------------------------------------------
# A socket with a read buffer and deadlines
# ---------------------------------------------------------------------------

class Conn:
    def __init__(self, port, name, timeout=2.0):
        self.name = name
        self.s = netkit.connect(HOST, port, timeout)
        self.s.setblocking(False)
        self.buf = b""
        self.eof = False

    def send(self, data, timeout=2.0):
        deadline = time.monotonic() + scaled(timeout)
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure("%s: could not send %d more bytes within %.1f s"
                              % (self.name, len(view), scaled(timeout)))
            _, w, _ = select.select([], [self.s], [], left)
            if w:
                try:
                    n = self.s.send(view)
                except BlockingIOError:
                    continue
                view = view[n:]

    def fill(self, deadline):
        """One recv into buf, waiting until deadline. False on timeout."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.s], [], [], left)
        if not r:
            return False
        try:
            data = self.s.recv(262144)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise Failure("%s: the server closed the connection (%d bytes unread: %r)"
                          % (self.name, len(self.buf), self.buf[:80]))
        self.buf += data
        return True

    def take(self, n, timeout, what):
        deadline = time.monotonic() + scaled(timeout)
        while len(self.buf) < n:
            if not self.fill(deadline):
                raise Failure("%s: %s: %d of %d bytes came within %.1f s: %r"
                              % (self.name, what, len(self.buf), n, scaled(timeout), self.buf[:80]))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self, timeout, what, end=b"\n"):
        deadline = time.monotonic() + scaled(timeout)
        while end not in self.buf:
            if not self.fill(deadline):
                raise Failure("%s: %s: no complete line within %.1f s; have %r"
                              % (self.name, what, scaled(timeout), self.buf[:80]))
        i = self.buf.index(end) + len(end)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def expect(self, want, timeout, what):
        got = self.take(len(want), timeout, what)
        if got != want:
            i = next(k for k in range(len(want)) if got[k] != want[k])
            raise Failure("%s: %s: %s" % (self.name, what, netkit.describe_mismatch(want, got, i)))

    def drain(self):
        """What is readable now, without waiting (EOF raises Failure)."""
        while True:
            r, _, _ = select.select([self.s], [], [], 0)
            if not r:
                return
            self.fill(time.monotonic() + 0.001)

    def close(self):
        self.s.close()


def wait_dropped(sock, timeout, what):
    """Read from sock until the server closes it (EOF or reset); return what came first."""
    deadline = time.monotonic() + scaled(timeout)
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("%s: the server did not close this connection within %.1f s "
                          "(it should drop the client); %d bytes came: %r"
                          % (what, scaled(timeout), len(got), got[:80]))
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            continue
        try:
            data = sock.recv(262144)
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return got
        if not data:
            return got
        got += data


def closed_within(sock, timeout):
    """Like wait_dropped, but a timeout answers None instead of failing."""
    try:
        return wait_dropped(sock, timeout, "")
    except Failure:
        return None


def shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def send_in_background(sock, data):
    """Send data on a blocking duplicate of sock from a thread; errors (the server dropped
    us) end it quietly. Returns the thread."""
    dup = sock.dup()
    dup.setblocking(True)

    def run():
        try:
            dup.sendall(data)
        except OSError:
            pass
        finally:
            dup.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------------------
# The protocols: a healthy session, and what each attack sends and expects
# ---------------------------------------------------------------------------

class Proto:
    """One request/answer exchange per roundtrip(), every byte checked."""
    header4g = None        # bytes announcing 4 GiB, or None: no frame header (n/a)
    longline_drop = True   # False: the bytes are echoed back
    # What a dropped client is told before the close, per attack: (how, bytes), how one of
    # "exact" (all it receives), "prefix", "last" (its last line; chat: the room's lines may
    # come first). Default: nothing at all.
    told = {}
    garbage_echo = False   # garbage comes back exactly
    drop_re = None         # the server's log line for a dropped bad client
    echo_unit = 1          # garbage and long lines are sent in multiples of this
    burst_bytes = 4 << 20  # the reset attack's requests: bytes of burst() repeated

    def __init__(self, port, rng):
        self.port = port
        self.rng = rng
        self.n = 0

    def open(self):
        self.c = Conn(self.port, "healthy client")

    def close(self):
        self.c.close()

    def told_error(self, attack, got):
        how, want = self.told.get(attack, ("exact", b""))
        if how == "exact" and got == want:
            return None
        if how == "prefix" and got.startswith(want):
            return None
        if how == "last" and got.endswith(want) and (got == want or got[:-len(want)].endswith(b"\n")):
            return None
        return "want %s %r, got %r" % ({"exact": "exactly", "prefix": "a reply starting",
                                        "last": "a last line"}[how], want, got[:200])

    def tag(self):
        self.n += 1
        return b"h%d-%s" % (self.n, self.rng.randbytes(6).hex().encode())

    def longline(self):
        return b"a" * LONG_LINE

    def slow_request(self, c):
        """(bytes to send on attacker c, check(c) that reads and checks the answer)."""
        raise NotImplementedError

    def burst(self):
        """A request with large replies (the reset attack): bytes."""
        raise NotImplementedError

    def burst_reply(self):
        """burst()'s exact reply, where it is known: the replies read before the reset
        must be copies of it, in order. None: not checked."""
        return None


class LineProto(Proto):  # 05: ECHO x -> x
    drop_re = r"request line over \d+ bytes, closing"
    told = {"longline": ("exact", b"ERR line too long\n")}

    def roundtrip(self, timeout):
        t = self.tag()
        self.c.send(b"ECHO " + t + b"\n")
        self.c.expect(t + b"\n", timeout, "ECHO %s" % t.decode())

    def slow_request(self, c):
        def check(timeout):
            c.expect(b"slowpoke\n", timeout, "the slow ECHO")
        return b"ECHO slowpoke\n", check

    def burst(self):
        return b"ECHO " + b"x" * 1000 + b"\n"

    def burst_reply(self):
        return b"x" * 1000 + b"\n"


class CodecLine(Proto):  # 06 -c line: lines echoed with \n
    drop_re = r"client \S+: .*, closing"
    told = {"longline": ("exact", b"ERR line too long\n")}

    def roundtrip(self, timeout):
        t = self.tag()
        self.c.send(t + b"\r\n")
        self.c.expect(t + b"\n", timeout, "line %s" % t.decode())

    def slow_request(self, c):
        def check(timeout):
            c.expect(b"slowpoke\n", timeout, "the slow line")
        return b"slowpoke\n", check

    def burst(self):
        return b"x" * 1000 + b"\n"

    def burst_reply(self):
        return self.burst()


class CodecFixed(Proto):  # 06 -c fixed:N: frames of N bytes echoed
    longline_drop = False
    garbage_echo = True
    drop_re = r"client \S+: .*, closing"

    def __init__(self, port, rng, size):
        super().__init__(port, rng)
        self.size = self.echo_unit = size

    def frame(self, t):
        return (t * (self.size // len(t) + 1))[:self.size]

    def roundtrip(self, timeout):
        f = self.frame(self.tag())
        self.c.send(f)
        self.c.expect(f, timeout, "a %d-byte frame" % self.size)

    def longline(self):
        return b"a" * (LONG_LINE // self.size * self.size + self.size)

    def slow_request(self, c):
        f = self.frame(b"slowpoke")

        def check(timeout):
            c.expect(f, timeout, "the slow frame")
        return f, check

    def burst(self):
        return self.frame(b"x") * (4096 // self.size + 1)

    def burst_reply(self):
        return self.burst()


class CodecLen(Proto):  # 06 -c len: u32 big-endian length, body; echoed
    header4g = b"\xff\xff\xff\xff"
    drop_re = r"client \S+: .*, closing"

    def roundtrip(self, timeout):
        t = self.tag()
        f = struct.pack(">I", len(t)) + t
        self.c.send(f)
        self.c.expect(f, timeout, "a %d-byte frame" % len(t))

    def slow_request(self, c):
        f = struct.pack(">I", 8) + b"slowpoke"

        def check(timeout):
            c.expect(f, timeout, "the slow frame")
        return f, check

    def burst(self):
        return struct.pack(">I", 1000) + b"x" * 1000

    def burst_reply(self):
        return self.burst()


def resp_cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Resp(Proto):  # 06 -c resp, and 08's kv_server
    header4g = b"*1\r\n$4294967296\r\n"
    told = {"header4g": ("exact", b"-ERR Protocol error: invalid bulk length\r\n"),
            "longline": ("exact", b"-ERR Protocol error: too big inline request\r\n")}

    def __init__(self, port, rng, kv):
        super().__init__(port, rng)
        self.kv = kv
        self.drop_re = r"resp: Protocol error|bad frame" if kv else r"client \S+: .*, closing"

    def roundtrip(self, timeout):
        t = self.tag()
        if self.kv:
            self.c.send(resp_cmd(b"SET", b"battery", t) + resp_cmd(b"GET", b"battery"))
            self.c.expect(b"+OK\r\n$%d\r\n%s\r\n" % (len(t), t), timeout, "SET then GET %s" % t.decode())
        else:
            self.c.send(resp_cmd(b"ECHO", t))
            self.c.expect(b"$%d\r\n%s\r\n" % (len(t), t), timeout, "ECHO %s" % t.decode())

    def slow_request(self, c):
        def check(timeout):
            c.expect(b"$8\r\nslowpoke\r\n", timeout, "the slow ECHO")
        return resp_cmd(b"ECHO", b"slowpoke"), check

    def burst(self):
        return resp_cmd(b"PING")

    def burst_reply(self):
        return b"+PONG\r\n"


class Http(Proto):  # 06 -c http, and 08's http_server
    header4g = b"POST / HTTP/1.1\r\nHost: battery\r\nContent-Length: 4294967296\r\n\r\n"
    REQ = b"GET / HTTP/1.1\r\nHost: battery\r\n\r\n"

    def __init__(self, port, rng, stage08):
        super().__init__(port, rng)
        self.body = None
        if stage08:
            self.drop_re = r"session \d+ \(.*\): 4\d\d .*: closing"
        else:
            self.drop_re = r"client \S+: .*, closing"
        self.told = {"header4g": ("prefix", b"HTTP/1.1 413 "), "longline": ("prefix", b"HTTP/1.1 431 ")}

    def response(self, c, timeout, what):
        head = c.line(timeout, what, end=b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise Failure("%s: %s: want `HTTP/1.1 200`, got %r" % (c.name, what, head[:80]))
        m = re.search(rb"(?im)^content-length:\s*(\d+)\r$", head)
        if not m:
            raise Failure("%s: %s: no Content-Length in %r" % (c.name, what, head))
        body = c.take(int(m.group(1)), timeout, what + " (body)")
        if self.body is None:
            self.body = body
        elif body != self.body:
            raise Failure("%s: %s: the body changed: first %r, now %r" % (c.name, what, self.body, body))

    def roundtrip(self, timeout):
        self.c.send(self.REQ)
        self.response(self.c, timeout, "GET / #%d" % self.n)
        self.n += 1

    def longline(self):
        return b"GET /" + b"a" * (LONG_LINE - 5)

    def slow_request(self, c):
        def check(timeout):
            self.response(c, timeout, "the slow GET /")
        return self.REQ, check

    def burst(self):
        return self.REQ


class Heartbeat(Proto):  # 08: {u32 length, u16 type, body}; DATA (3) comes back
    header4g = b"\xff\xff\xff\xff\x00\x03"
    drop_re = r"bad frame"

    def frame(self, body, type_=3):
        return struct.pack(">IH", len(body), type_) + body

    def told_error(self, attack, got):
        # The server's PINGs ({8, 1, sequence}), nothing else: never a DATA of the attack.
        rest = got
        while rest:
            if len(rest) < 14 or rest[:6] != b"\x00\x00\x00\x08\x00\x01":
                return "want only the server's PING frames, got %r" % got[:80]
            rest = rest[14:]
        return None

    def read_data(self, c, timeout, what):
        while True:  # the server's PINGs are answered, never counted as the reply
            length, type_ = struct.unpack(">IH", c.take(6, timeout, what))
            body = c.take(length, timeout, what)
            if type_ == 1 and length == 8:
                c.send(self.frame(body, 2))
                continue
            return self.frame(body, type_)

    def roundtrip(self, timeout):
        f = self.frame(self.tag())
        self.c.send(f)
        got = self.read_data(self.c, timeout, "DATA")
        if got != f:
            raise Failure("healthy client: DATA: want %r, got %r" % (f, got))

    def slow_request(self, c):
        f = self.frame(b"slowpoke")

        def check(timeout):
            got = self.read_data(c, timeout, "the slow DATA")
            if got != f:
                raise Failure("slow client: want %r, got %r" % (f, got))
        return f, check

    def burst(self):
        return self.frame(b"x" * 65536)


class Echo(Proto):  # 08's examples/echo
    longline_drop = False
    garbage_echo = True

    def roundtrip(self, timeout):
        t = self.tag()
        self.c.send(t)
        self.c.expect(t, timeout, "echo of %s" % t.decode())

    def slow_request(self, c):
        def check(timeout):
            c.expect(b"slowpoke", timeout, "the slow echo")
        return b"slowpoke", check

    def burst(self):
        return b"x" * 65536

    def burst_reply(self):
        return self.burst()


class Chat(Proto):  # 07 and 08's chat_server: two members, a line from A reaches B
    drop_re = None  # set in __init__

    OTHER = re.compile(rb"^(\* .*|[^ :]+: .*)\n\Z", re.S)

    def __init__(self, port, rng, stage08):
        super().__init__(port, rng)
        self.told = {"longline": ("last", b"* line too long\n")}
        # 07 logs a too-long line as any other close, `fd N (NAME) closed` (no reason);
        # 08 names the reason.
        self.drop_re = (r"session \d+ \(.*\) closed: local \(line too long\)" if stage08
                        else r"fd \d+ \(.*\) closed: line too long")

    def welcome(self, c):
        line = c.line(2, "welcome")
        m = re.match(rb"\* welcome (\S+)\n\Z", line)
        if not m:
            raise Failure("%s: want `* welcome NAME`, got %r" % (c.name, line))
        return m.group(1)

    def open(self):
        self.a = Conn(self.port, "healthy member A")
        self.aname = self.welcome(self.a)
        self.b = Conn(self.port, "healthy member B")
        self.bname = self.welcome(self.b)
        self.c = self.a

    def close(self):
        self.a.close()
        self.b.close()

    def check_others(self, c, lines, own):
        for line in lines:
            if not self.OTHER.match(line):
                raise Failure("%s: a line that is neither a notice nor a message: %r" % (c.name, line[:80]))
            if line.startswith(own + b": "):
                raise Failure("%s: got its own line back: %r" % (c.name, line[:80]))

    def drain_a(self):
        self.a.drain()
        lines = self.a.buf.split(b"\n")
        self.a.buf = lines.pop()
        self.check_others(self.a, [x + b"\n" for x in lines], self.aname)

    def await_line(self, c, want, timeout, what, own):
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = max(0.001, deadline - time.monotonic()) / (scaled(1) or 1)  # line() scales it
            line = c.line(left, what)
            if line == want:
                return
            if line.split(b": ", 1)[-1] == want.split(b": ", 1)[-1]:
                raise Failure("%s: %s: want %r, got %r" % (c.name, what, want, line))
            self.check_others(c, [line], own)
            if time.monotonic() > deadline:
                raise Failure("%s: %s: %r did not come within %.1f s" % (c.name, what, want, scaled(timeout)))

    def roundtrip(self, timeout):
        t = self.tag()
        self.drain_a()
        self.a.send(b"hb " + t + b"\n")
        self.await_line(self.b, self.aname + b": hb " + t + b"\n", timeout, "A's line hb %s" % t.decode(), self.bname)
        self.drain_a()

    def slow_request(self, c):
        name = self.welcome(c)
        # B sees it: the check is on B, so that a slow line that never came is seen there.

        def check(timeout):
            self.await_line(self.b, name + b": slowpoke\n", timeout, "the slow member's line", self.bname)
        return b"slowpoke\n", check

    # 07's hard cap drops a member with over 1 MiB of replies queued: 64 KiB of /who
    # (13107 lines of `* users: ...`, under 1 MiB) stays under it.
    burst_bytes = 64 << 10

    def burst(self):
        return b"/who\n"


def make_proto(args, rng):
    p = args.port
    if args.proto == "line":
        return LineProto(p, rng)
    if args.proto == "chat":
        return Chat(p, rng, args.stage08)
    if args.proto == "kv":
        return Resp(p, rng, kv=True)
    if args.proto == "http":
        return Http(p, rng, stage08=True)
    if args.proto == "heartbeat":
        return Heartbeat(p, rng)
    if args.proto == "echo":
        return Echo(p, rng)
    codec = args.codec or ""
    if codec.startswith("fixed:"):
        return CodecFixed(p, rng, int(codec[6:]))
    if codec == "line":
        return CodecLine(p, rng)
    if codec == "len":
        return CodecLen(p, rng)
    if codec == "resp":
        return Resp(p, rng, kv=False)
    if codec == "http":
        return Http(p, rng, stage08=False)
    raise SystemExit("battery.py: --proto codec needs --codec fixed:N|line|len|resp|http (got %r)" % codec)


# ---------------------------------------------------------------------------
# The server: alive, its log, its descriptors, its memory
# ---------------------------------------------------------------------------

class Server:
    def __init__(self, pid, log):
        self.pid = pid
        self.log = log

    def alive(self, what):
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "gone"
        if state in ("Z", "X", "gone"):
            raise Failure("%s: the server (pid %d) is no longer running%s"
                          % (what, self.pid, self.log_tail()))

    def log_tail(self):
        if not self.log:
            return ""
        try:
            with open(self.log, errors="replace") as f:
                return "; its log ends with:\n  " + "\n  ".join(f.read().splitlines()[-8:])
        except OSError:
            return ""

    def log_count(self, regex):
        if not self.log or not regex:
            return 0
        with open(self.log, errors="replace") as f:
            return sum(1 for line in f if re.search(regex, line))

    def wait_log(self, regex, before, timeout, what):
        """A new log line matching regex (more than `before` of them) within timeout."""
        if not self.log or not regex:
            return
        deadline = time.monotonic() + scaled(timeout)
        while self.log_count(regex) <= before:
            if time.monotonic() > deadline:
                raise Failure("%s: the client was dropped but the server's log has no new line "
                              "matching /%s/ within %.1f s%s"
                              % (what, regex, scaled(timeout), self.log_tail()))
            time.sleep(0.02)  # poll interval of a loop with a deadline

    def fds(self):
        try:
            return len(os.listdir("/proc/%d/fd" % self.pid))
        except OSError as e:
            self.alive("counting its descriptors")
            raise Failure("cannot count the server's descriptors: %s" % e)

    def wait_fds(self, base, timeout, what):
        deadline = time.monotonic() + scaled(timeout)
        while True:
            now = self.fds()
            if now <= base:
                return
            if time.monotonic() > deadline:
                raise Failure("%s: the server holds %d descriptors after %.1f s, %d more than at "
                              "the battery's start" % (what, now, scaled(timeout), now - base))
            time.sleep(0.05)  # poll interval of a loop with a deadline

    def status_kib(self, field):
        self.alive("reading its memory")
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise Failure("no %s in /proc/%d/status" % (field, self.pid))


# ---------------------------------------------------------------------------
# The attacks
# ---------------------------------------------------------------------------

class Battery:
    def __init__(self, args, proto, server, rng):
        self.args = args
        self.p = proto
        self.srv = server
        self.rng = rng
        self.trips = 0

    def healthy(self, what, timeout=2.0):
        try:
            self.p.roundtrip(timeout)
        except Failure as e:
            raise Failure("%s: the healthy client was hurt: %s" % (what, e))
        self.trips += 1
        self.srv.alive(what)

    def attacker(self, what):
        try:
            return Conn(self.args.port, what)
        except OSError as e:
            raise Failure("%s: cannot connect: %s" % (what, e))

    def dropped(self, c, what, before, timeout=4.0):
        got = wait_dropped(c.s, timeout, what)
        got = c.buf + got
        err = self.p.told_error(what, got)
        if err:
            raise Failure("%s: what the dropped client was told before the close: %s" % (what, err))
        self.srv.wait_log(self.p.drop_re, before, 2, what)
        return got

    def garbage(self):
        what = "garbage"
        unit = self.p.echo_unit
        data = self.rng.randbytes(16384 // unit * unit)
        before = self.srv.log_count(self.p.drop_re)
        c = self.attacker(what)
        if isinstance(self.p, Chat):
            self.p.welcome(c)
        c.send(data)
        self.healthy(what + " (during)")
        if self.p.garbage_echo:
            c.expect(data, 3, "the garbage echoed back")
            outcome = "echoed back exactly"
            c.close()
        else:
            # Dropped or kept: either may be right (16 KiB of noise may parse); a drop must
            # be logged. The wait only tells the two apart: at most 2 s however slow.
            got = closed_within(c.s, min(0.5, 2.0 / (scaled(1) or 1)))
            if got is None:
                outcome = "kept (the server answered or waits for more)"
                netkit.reset_close(c.s)
            else:
                self.srv.wait_log(self.p.drop_re, before, 2, what)
                outcome = "dropped, logged"
                c.close()
        self.healthy(what + " (after)")
        return outcome

    def header4g(self):
        what = "header4g"
        if self.p.header4g is None:
            return None
        before = self.srv.log_count(self.p.drop_re)
        c = self.attacker(what)
        c.send(self.p.header4g)
        t = send_in_background(c.s, self.rng.randbytes(HEADER_BODY))
        self.healthy(what + " (during)")
        told = self.dropped(c, what, before)
        shut(c.s)  # wakes the sender thread, whose duplicate would keep the connection open
        t.join(scaled(2))
        c.close()
        self.healthy(what + " (after)")
        return "dropped, logged; told %r" % told[:40]

    def longline(self):
        what = "longline"
        data = self.p.longline()
        before = self.srv.log_count(self.p.drop_re)
        c = self.attacker(what)
        if isinstance(self.p, Chat):
            self.p.welcome(c)
        t = send_in_background(c.s, data)
        self.healthy(what + " (during)")
        if self.p.longline_drop:
            told = self.dropped(c, what, before)
            outcome = "dropped, logged; told %r" % told[:40]
        else:
            c.expect(data, 10, "the %d bytes echoed back" % len(data))
            outcome = "echoed back exactly"
        shut(c.s)  # wakes the sender thread, whose duplicate would keep the connection open
        t.join(scaled(2))
        c.close()
        self.healthy(what + " (after)")
        return outcome

    def conns(self):
        what = "conns"
        n = self.args.conns
        have = netkit.raise_nofile(n + 64)
        if have < n + 64:
            return "skipped: the client may open only %d descriptors (%d needed)" % (have, n + 64)
        # The earlier attackers' connections closed: the descriptors of the battery's start.
        base = self.fds0
        self.srv.wait_fds(base, 5, what + " (before: the earlier attackers' connections)")
        socks = []
        try:
            for _ in range(n):
                socks.append(netkit.nonblocking_connect(HOST, self.args.port))
            # Wait until every connect has completed (writable), the deadline scaled.
            deadline = time.monotonic() + scaled(5)
            pending = list(socks)
            while pending and time.monotonic() < deadline:
                poller = select.poll()
                for s in pending:
                    poller.register(s, select.POLLOUT)
                ready = {fd for fd, _ in poller.poll(100)}
                pending = [s for s in pending if s.fileno() not in ready]
            connected = n - len(pending)
            if connected < n:
                raise Failure("%s: %d of %d connections completed within %.1f s"
                              % (what, connected, n, scaled(5)))
            # The server has accepted every one of them (they are open at once there too).
            while self.srv.fds() < base + n:
                if time.monotonic() > deadline:
                    raise Failure("%s: the server holds %d descriptors, %d before: it has not "
                                  "accepted the %d connections within %.1f s (its open-file limit: "
                                  "/proc/%d/limits)" % (what, self.srv.fds(), base, n, scaled(5), self.srv.pid))
                time.sleep(0.02)  # poll interval of a loop with a deadline
            self.healthy(what + " (during, %d open)" % n)
        finally:
            for i, s in enumerate(socks):
                if i % 2:
                    netkit.reset_close(s)
                else:
                    s.close()
        # Every one of them closed by the server: its descriptor count back to the start.
        self.srv.wait_fds(base, 5, "%s: %d connections opened and closed" % (what, n))
        self.healthy(what + " (after)")
        return "%d opened and closed; descriptors back to %d" % (n, base)

    def slow(self):
        what = "slow"
        c = self.attacker(what)
        req, check = self.p.slow_request(c)
        for i in range(SLOW_BYTES):
            c.send(req[i:i + 1])
            t0 = time.monotonic()
            self.healthy(what + " (after its byte %d)" % (i + 1), timeout=1.0)
            time.sleep(max(0.0, SLOW_PAUSE - (time.monotonic() - t0)))  # the attack's pace
        c.send(req[SLOW_BYTES:])
        check(2)
        c.close()
        self.healthy(what + " (after)")
        return "%d bytes at %.0f s each, answered exactly" % (SLOW_BYTES, SLOW_PAUSE)

    def reset(self):
        what = "reset"
        c = self.attacker(what)
        one = self.p.burst()
        data = one * max(1, self.p.burst_bytes // len(one))
        # As much as the server takes in 0.5 s (it may stop reading while its replies queue).
        deadline = time.monotonic() + 0.5
        view = memoryview(data)
        while view and time.monotonic() < deadline:
            _, w, _ = select.select([], [c.s], [], 0.05)
            if w:
                try:
                    view = view[c.s.send(view):]
                except (BlockingIOError, InterruptedError):
                    pass
                except (ConnectionResetError, BrokenPipeError) as e:
                    raise Failure("%s: the server closed the connection while it was sent %d "
                                  "bytes of requests: %s" % (what, len(data) - len(view), e))
        sent = len(data) - len(view)
        got = c.take(1, 3, "the first byte of the replies")  # the replies have begun
        got += c.buf
        unit = self.p.burst_reply()
        if unit is not None:
            want = unit * (len(got) // len(unit) + 1)
            if not want.startswith(got):
                i = next(k for k in range(len(got)) if got[k] != want[k])
                netkit.reset_close(c.s)
                raise Failure("%s: the replies before the reset: %s"
                              % (what, netkit.describe_mismatch(want[:len(got)], got, i)))
        netkit.reset_close(c.s)
        self.healthy(what + " (after)")
        return "%d bytes of requests sent, reset after %d bytes of replies%s" % (
            sent, len(got), "" if unit is None else ", every one right")

    def run(self):
        self.healthy("the start")  # the healthy session is accepted and served
        if self.args.trips:
            t0 = time.monotonic()
            for i in range(self.args.trips):
                self.healthy("load (round trip %d of %d)" % (i + 1, self.args.trips), timeout=5.0)
            print("ok load     %d round trips (%.1f s)" % (self.args.trips, time.monotonic() - t0), flush=True)
        rss0 = self.srv.status_kib("VmRSS")
        self.fds0 = self.srv.fds()
        results = []
        for name in self.args.attacks:
            if name not in ATTACKS:
                raise SystemExit("battery.py: unknown attack %r (known: %s)" % (name, ", ".join(ATTACKS)))
            t0 = time.monotonic()
            outcome = getattr(self, name)()
            self.srv.alive(name)
            results.append(name)
            print("ok %-8s %s (%.1f s)" % (name, outcome if outcome else "n/a: this protocol has no frame header",
                                          time.monotonic() - t0), flush=True)
        if self.args.no_memory:
            self.healthy("the end")
            print("ok memory   not checked (--no-memory); %d healthy round trips" % self.trips, flush=True)
            return
        # Memory: back under the bound once everything is closed, and the peak bounded.
        bound = rss0 + RSS_SLACK_KIB
        deadline = time.monotonic() + scaled(3)
        while True:
            rss = self.srv.status_kib("VmRSS")
            if rss <= bound:
                break
            if time.monotonic() > deadline:
                raise Failure("memory: the server's RSS is %d KiB after the battery, over %d KiB "
                              "(%d KiB before it + %d KiB)" % (rss, bound, rss0, RSS_SLACK_KIB))
            time.sleep(0.05)  # poll interval of a loop with a deadline
        hwm = self.srv.status_kib("VmHWM")
        if hwm > rss0 + PEAK_SLACK_KIB:
            raise Failure("memory: the server's peak RSS (VmHWM) was %d KiB, over %d KiB (%d KiB "
                          "before the battery + %d KiB)" % (hwm, rss0 + PEAK_SLACK_KIB, rss0, PEAK_SLACK_KIB))
        self.healthy("the end")
        print("ok memory   RSS %d KiB before, %d KiB after (bound %d), peak %d KiB (bound %d); "
              "%d healthy round trips" % (rss0, rss, bound, hwm, rss0 + PEAK_SLACK_KIB, self.trips), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server's pid (/proc: memory, descriptors)")
    ap.add_argument("--proto", required=True, choices=["line", "chat", "codec", "kv", "http", "heartbeat", "echo"])
    ap.add_argument("--codec", help="06's codec, as given to its -c (fixed:N, line, len, resp, http)")
    ap.add_argument("--stage08", action="store_true", help="chat: 08's chat_server (its log lines)")
    ap.add_argument("--log", help="the server's stderr: a dropped bad client must have its line there")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated, default all")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--trips", type=int, default=0,
                    help="first, this many healthy round trips (a load: tests/valgrind.sh)")
    ap.add_argument("--no-memory", action="store_true",
                    help="skip the RSS bounds (sanitized builds: ASan keeps freed memory in quarantine)")
    args = ap.parse_args(argv)
    args.attacks = [a for a in args.attacks.split(",") if a]
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 20)
    rng = random.Random(args.seed)
    proto = make_proto(args, rng)
    server = Server(args.pid, args.log)
    try:
        proto.open()
        try:
            Battery(args, proto, server, rng).run()
        finally:
            proto.close()
    except (Failure, OSError) as e:
        print("FAIL %s (seed %d; rerun with --seed %d)" % (e, args.seed, args.seed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
