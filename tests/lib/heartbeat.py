#!/usr/bin/env python3
"""heartbeat: fake peers for 08_framework's heartbeat_server and heartbeat_client.

Frames are {u32 big-endian length, u16 big-endian type, body}: PING (1) and PONG (2) carry 8
bytes (a big-endian sequence), DATA (3) anything. A fake peer checks every byte of every
frame it gets (the header too), answers the PINGs a pattern says to answer and no others,
and judges when the other side closed it: right after the third PING in a row it left
unanswered, not one PING sooner or later, and 3 intervals after the first of them.

Python 3 standard library only. Each subcommand prints `ok: ...` and exits 0, or `FAIL: ...`
and exits 1. Every wait has a deadline; TIMEOUT_SCALE stretches them all.
"""

import argparse
import collections
import os
import random
import selectors
import shlex
import socket
import struct
import sys
import threading
import time

TIMEOUT_SCALE = float(os.environ.get("TIMEOUT_SCALE", "1") or "1")
PING, PONG, DATA = 1, 2, 3
MISSES = 3


class Failure(Exception):
    pass


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def frame(ftype, body):
    return struct.pack(">IH", len(body), ftype) + body


def mismatch(want, got, name):
    n = min(len(want), len(got))
    off = next((i for i in range(n) if want[i] != got[i]), n)
    lo = max(0, off - 8)
    return ("%s: differs at offset %d of %d: want %s, got %s (bytes %d..)"
            % (name, off, len(want), want[lo:off + 8].hex(" "), got[lo:off + 8].hex(" "), lo))


def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def expected_close(pattern):
    """The PING (0-based) after which a peer answering PINGs as PATTERN says ('a' answer; 's'
    skip, 'l' a late answer and the end of the pattern count as unanswered) must be closed: the third of the first 3 skips in a row."""
    run = 0
    for i in range(len(pattern) + MISSES):
        if i < len(pattern) and pattern[i] == "a":
            run = 0
        else:
            run += 1
            if run == MISSES:
                return i
    raise AssertionError("unreachable")


class Peer:
    """One connection of the fake peer. It reads and checks every frame; answers PING number i
    (0-based) when PATTERN[i] is 'a', with the PONG of the PING before it when 'l' (late: it
    must count as unanswered), not at all when 's' or past the pattern's end; with PING_MS sends its own PINGs and checks each PONG,
    with DATA_MS sends DATA of random sizes up to MAX_DATA and checks each echo. HOLD: close
    it ourselves after that many PINGs (once every PONG and echo is in); else wait to be closed."""

    def __init__(self, sock, name, pattern, interval, rng, ping_ms=0, data_ms=0, max_data=1000, hold=0):
        self.s = sock
        self.name = name
        self.pattern = pattern
        self.interval = interval
        self.rng = rng
        self.ping_ms = ping_ms
        self.data_ms = data_ms
        self.max_data = max_data
        self.hold = hold
        self.buf = bytearray()
        self.pings = []          # receipt times of the PINGs we got
        self.want = collections.deque()  # frames we wait for: PONGs and echoes, in order
        self.our_seq = 0
        self.pongs_in = self.data_in = self.data_out = self.pings_out = 0
        self.sizes = []
        self.echo = False         # DATA received is echoed (fake-server --echo)
        self.echoed = 0
        self.corrupt = self.corrupt_offset = 0

    def send(self, data):
        # Random pieces: the codec must put frames together across reads.
        off = 0
        while off < len(data):
            n = self.rng.randint(1, max(1, len(data)))
            self.s.sendall(data[off:off + n])
            off += n

    def on_frame(self, hdr, body, now):
        length, ftype = struct.unpack(">IH", hdr)
        whole = hdr + body
        if ftype == PING:
            want = frame(PING, struct.pack(">Q", len(self.pings) + 1))
            if whole != want:
                raise Failure(mismatch(want, whole, "%s: PING %d (want sequence %d)"
                                       % (self.name, len(self.pings) + 1, len(self.pings) + 1)))
            i = len(self.pings)
            self.pings.append(now)
            act = self.pattern[i] if i < len(self.pattern) else "s"
            if act == "a":
                self.s.sendall(frame(PONG, body))
            elif act == "l":  # late: the answer to the PING before this one
                self.s.sendall(frame(PONG, struct.pack(">Q", i)))
            return
        if ftype == DATA and self.echo:
            # A server's part: send it back, byte BYTE of echo number N flipped if asked.
            self.echoed += 1
            out = bytearray(whole)
            if self.echoed == self.corrupt and len(body) > 0:
                out[6 + min(self.corrupt_offset, len(body) - 1)] ^= 0x20
            self.s.sendall(bytes(out))
            return
        if ftype not in (PONG, DATA):
            raise Failure("%s: a frame of unknown type 0x%04x (%d bytes): header %s"
                          % (self.name, ftype, length, hdr.hex(" ")))
        if not self.want:
            raise Failure("%s: a %s frame with none in flight: %s" % (self.name, "PONG" if ftype == PONG else "DATA",
                                                                    whole[:32].hex(" ")))
        want = self.want.popleft()
        if whole != want:
            raise Failure(mismatch(want, whole, "%s: %s" % (self.name, "PONG" if want[5] == PONG else "DATA echo")))
        if ftype == PONG:
            self.pongs_in += 1
        else:
            self.data_in += 1

    def parse(self, now):
        while len(self.buf) >= 6:
            length = struct.unpack(">I", self.buf[:4])[0]
            if length > 16 << 20:
                raise Failure("%s: a frame header with length %d: %s" % (self.name, length, bytes(self.buf[:6]).hex(" ")))
            if len(self.buf) < 6 + length:
                return
            hdr, body = bytes(self.buf[:6]), bytes(self.buf[6:6 + length])
            del self.buf[:6 + length]
            self.on_frame(hdr, body, now)

    def send_ping(self):
        self.our_seq += 1
        f = frame(PING, struct.pack(">Q", self.our_seq))
        self.want.append(frame(PONG, struct.pack(">Q", self.our_seq)))
        self.send(f)
        self.pings_out += 1

    def send_data(self):
        n = self.rng.choice([0, 1, self.max_data, self.rng.randint(0, self.max_data)])
        f = frame(DATA, self.rng.randbytes(n))
        self.want.append(f)
        self.send(f)
        self.data_out += 1
        self.sizes.append(n)

    def run(self, deadline_s):
        sel = selectors.DefaultSelector()
        self.s.setblocking(False)
        sel.register(self.s, selectors.EVENT_READ)
        start = time.monotonic()
        end = start + deadline_s
        next_ping = start + self.ping_ms / 1000 if self.ping_ms else None
        next_data = start + self.data_ms / 1000 if self.data_ms else None
        closed = None
        held_at = None
        try:
            while closed is None:
                now = time.monotonic()
                if now > end:
                    raise Failure("%s: still open after %.2f s, %d PINGs received"
                                  % (self.name, deadline_s, len(self.pings)))
                if self.hold and len(self.pings) >= self.hold and held_at is None:
                    held_at = now
                    next_ping = next_data = None  # stop sending; wait for what is in flight
                if held_at is not None and not self.want:
                    return "held"
                if held_at is not None and now - held_at > scaled(3):
                    raise Failure("%s: %d answers still missing %.1f s after the last send"
                                  % (self.name, len(self.want), scaled(3)))
                if next_ping is not None and now >= next_ping:
                    self.s.setblocking(True)
                    self.send_ping()
                    self.s.setblocking(False)
                    next_ping += self.ping_ms / 1000
                if next_data is not None and now >= next_data:
                    self.s.setblocking(True)
                    self.send_data()
                    self.s.setblocking(False)
                    next_data += self.data_ms / 1000
                wake = [end] + [t for t in (next_ping, next_data) if t is not None]
                timeout = max(0.0, min(wake) - time.monotonic())
                for _ in sel.select(min(timeout, 0.05)):
                    try:
                        chunk = self.s.recv(1 << 16)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        closed = "reset"
                        break
                    now = time.monotonic()
                    if not chunk:
                        closed = "EOF"
                        break
                    self.buf += chunk
                    self.parse(now)
        except (ConnectionResetError, BrokenPipeError):
            # One of our sends (a PING, a PONG, a DATA) met the server's close: it closed with
            # bytes of ours unread, which the kernel answers with a reset (the library does
            # not linger). A close all the same: judged by when it came, like an EOF.
            closed = "reset"
        finally:
            sel.close()
        if self.buf:
            raise Failure("%s: closed in the middle of a frame: %s" % (self.name, bytes(self.buf[:16]).hex(" ")))
        return closed

    def judge_close(self, how, t_close):
        """The close must come right after the third PING in a row left unanswered, 3
        intervals (give or take half of one) after the first of them."""
        last = expected_close(self.pattern)
        got = len(self.pings)
        if got < last + 1:
            raise Failure("%s: closed (%s) after %d PINGs: want %d (3 in a row unanswered: PINGs %d..%d)"
                          % (self.name, how, got, last + 1, last - 1, last + 1))
        if got > last + 1:
            raise Failure("%s: closed (%s) only after %d PINGs: want %d (it got PING %d after 3 in a row unanswered)"
                          % (self.name, how, got, last + 1, last + 2))
        first = self.pings[last - MISSES + 1]
        gap = t_close - first
        lo, hi = (MISSES - 0.5) * self.interval, (MISSES + 0.5) * self.interval + scaled(0.3)
        if not lo <= gap <= hi:
            raise Failure("%s: closed %.3f s after the first of the 3 unanswered PINGs: want %.3f to %.3f (interval %.3f s)"
                          % (self.name, gap, lo, hi, self.interval))
        return ("closed (%s) right after PING %d, the 3rd unanswered in a row, %.3f s (%.2f intervals) after the 1st of them"
                % (how, last + 1, gap, gap / self.interval))

    def summary(self):
        return ("%d PINGs received; ours: %d PINGs sent, %d PONGs back; DATA: %d sent, %d echoed whole"
                % (len(self.pings), self.pings_out, self.pongs_in, self.data_out, self.data_in))


def session(sock, name, a, rng):
    """One fake connection as the command line says; returns its ok line."""
    p = Peer(sock, name, a.pattern, a.interval_ms / 1000, rng, a.ping_ms, a.data_ms, a.max_data, a.hold)
    p.echo = getattr(a, "echo", False)
    p.corrupt = getattr(a, "corrupt", 0)
    p.corrupt_offset = getattr(a, "corrupt_offset", 0)
    budget = (len(a.pattern) + MISSES + 2) * a.interval_ms / 1000 + scaled(5)
    how = p.run(budget)
    t_close = time.monotonic()
    if how == "held":
        if a.ping_ms and p.pongs_in == 0:
            raise Failure("%s: no PONG to our PINGs" % name)
        if a.data_ms and p.data_in == 0:
            raise Failure("%s: no DATA echoed" % name)
        echo = "; %d DATA echoed%s" % (p.echoed, " (echo %d corrupted)" % p.corrupt if p.corrupt else "") if p.echo else ""
        return "%s: open across %d PINGs (pattern %s); %s%s" % (name, len(p.pings), a.pattern or "-", p.summary(), echo)
    # Closed by the other side. What we sent in its last moments may be unanswered, the rest
    # was answered (p.want holds only the tail).
    return "%s: %s; %s" % (name, p.judge_close(how, t_close), p.summary())


def cmd_peer(a):
    rng = random.Random(a.seed)
    with connect(a.port) as s:
        return session(s, "peer", a, rng)


def peer_options(p):
    p.add_argument("--interval-ms", type=int, required=True, help="the other side's --interval")
    p.add_argument("--pattern", default="", help="one per PING received: 'a' answer, 's' skip, 'l' answer late; skip after")
    p.add_argument("--hold", type=int, default=0, help="close ourselves after N PINGs")
    p.add_argument("--ping-ms", type=int, default=0, help="send our own PINGs this often")
    p.add_argument("--data-ms", type=int, default=0, help="send DATA this often")
    p.add_argument("--max-data", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)


def cmd_multi(a):
    """Several fake clients at once, one thread each: --peer 'NAME [peer options]' (the
    interval is shared). One `ok:` line for each; any failure fails the whole."""
    sub = argparse.ArgumentParser(prog="--peer", add_help=False)
    peer_options(sub)
    specs = []
    for i, spec in enumerate(a.peer):
        words = shlex.split(spec)
        if not words:
            raise Failure("an empty --peer")
        o = sub.parse_args(["--interval-ms", str(a.interval_ms), "--seed", str(i + 1)] + words[1:])
        if set(o.pattern) - set("asl"):
            raise Failure("--peer %s: --pattern takes only 'a', 's' and 'l'" % words[0])
        specs.append((words[0], o))
    results = [None] * len(specs)

    def one(i, name, o):
        try:
            with connect(a.port) as s:
                results[i] = "ok: " + session(s, name, o, random.Random(o.seed))
        except (Failure, OSError) as e:
            results[i] = "FAIL: %s: %s" % (name, e)

    threads = [threading.Thread(target=one, args=(i, n, o)) for i, (n, o) in enumerate(specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = [r for r in results if not r or not r.startswith("ok: ")]
    for r in results:
        if r and r.startswith("ok: "):
            print(r, flush=True)
    if bad:
        raise Failure("; ".join(r or "a peer did not finish" for r in bad))
    return "%d peers at once" % len(specs)


def fake_listener():
    """A loopback listening socket on a free port, said on stdout ("listening on ...") for the
    test to read; accept() waits at most 10 s (scaled)."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    print("listening on 127.0.0.1:%d" % ls.getsockname()[1], flush=True)
    ls.settimeout(scaled(10))
    return ls


def cmd_fake_server(a):
    """Listens; the client's first connection is the peer of the command line; with
    --reconnect its next connection must come (the connector) and start again at PING 1."""
    rng = random.Random(a.seed)
    ls = fake_listener()
    try:
        c, _ = ls.accept()
        with c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if a.bad_type is not None:
                # After its first PING, a frame of a type the protocol does not have.
                c.settimeout(scaled(5))
                expect_frame(c, frame(PING, struct.pack(">Q", 1)), "client: PING 1")
                c.sendall(frame(a.bad_type, b"x"))
                line = "client: closed (%s) after a frame of type 0x%04x" % (expect_closed(c, "client"), a.bad_type)
            elif a.stray is not None:
                # After its first PING, a DATA it never sent (the echo its first DATA would
                # get, byte for byte), then our close.
                c.settimeout(scaled(5))
                expect_frame(c, frame(PING, struct.pack(">Q", 1)), "client: PING 1")
                c.sendall(frame(DATA, a.stray.encode()))
                line = "client: sent a DATA %r it never sent, then closed" % a.stray
            else:
                line = session(c, "client", a, rng)
        if a.reconnect:
            c, _ = ls.accept()
            with c:
                c.settimeout(scaled(5) + 2 * a.interval_ms / 1000)
                # PINGs 1 and 2 of the new connection, one interval apart: numbered afresh,
                # and no timer of the old connection still ticking beside the new one.
                expect_frame(c, frame(PING, struct.pack(">Q", 1)), "reconnected client: PING 1")
                t1 = time.monotonic()
                c.sendall(frame(PONG, struct.pack(">Q", 1)))
                expect_frame(c, frame(PING, struct.pack(">Q", 2)), "reconnected client: PING 2")
                gap = time.monotonic() - t1
                if gap < 0.5 * a.interval_ms / 1000:
                    raise Failure("reconnected client: PING 2 came %.3f s after PING 1 (interval %.3f s)"
                                  % (gap, a.interval_ms / 1000))
            line += "; it reconnected: PINGs 1 and 2 again, %.3f s apart" % gap
    except socket.timeout:
        raise Failure("timed out: no connection, or no frame, from the client")
    finally:
        ls.close()
    return line


def read_frame(s, name):
    buf = b""
    while len(buf) < 6:
        chunk = s.recv(6 - len(buf))
        if not chunk:
            raise Failure("%s: EOF instead of a frame" % name)
        buf += chunk
    length = struct.unpack(">I", buf[:4])[0]
    while len(buf) < 6 + length:
        chunk = s.recv(6 + length - len(buf))
        if not chunk:
            raise Failure("%s: EOF in a frame" % name)
        buf += chunk
    return buf


def expect_frame(s, want, name):
    got = read_frame(s, name)
    if got != want:
        raise Failure(mismatch(want, got, name))


def expect_closed(s, name):
    s.settimeout(scaled(3))
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        raise Failure("%s: still open %.1f s later" % (name, scaled(3)))
    except ConnectionResetError:
        return "reset"
    if chunk:
        raise Failure("%s: %d bytes instead of the close: %s" % (name, len(chunk), chunk[:32].hex(" ")))
    return "EOF"


def cmd_bad(a):
    """Each bad frame on a connection of its own (after the server's first PING): closed with
    no reply. The frames at the limits are served; a connection open all along is served after."""
    rng = random.Random(a.seed)
    m = a.max_frame
    bad = [
        ("type 0", frame(0, b"")),
        ("type 4", frame(4, b"abc")),
        ("type 0x0100 (PING byte-swapped)", frame(0x0100, struct.pack(">Q", 1))),
        ("type 0xffff", frame(0xFFFF, b"x" * 8)),
        ("PING of 7 bytes", frame(PING, b"1234567")),
        ("PING of 9 bytes", frame(PING, b"123456789")),
        ("PONG of 0 bytes", frame(PONG, b"")),
        ("DATA of max-frame + 1 bytes", struct.pack(">IH", m + 1, DATA) + b"y" * min(m, 1000)),
        ("length 0xffffffff", struct.pack(">IH", 0xFFFFFFFF, DATA) + b"z" * 10),
    ]
    first = frame(PING, struct.pack(">Q", 1))
    g = connect(a.port)
    lines = []
    try:
        g.settimeout(scaled(5))
        expect_frame(g, first, "the good client's first PING")
        for what, data in bad:
            with connect(a.port) as s:
                s.settimeout(scaled(5))
                expect_frame(s, first, "%s: the first PING" % what)
                s.sendall(data)
                lines.append("%s: closed (%s)" % (what, expect_closed(s, what)))
        # At the limits, on one connection: served, and a PONG for no PING is no bad frame.
        with connect(a.port) as s:
            s.settimeout(scaled(5))
            expect_frame(s, first, "limits: the first PING")
            s.sendall(frame(PONG, struct.pack(">Q", 77)))
            for n in (m, 0, 1):
                f = frame(DATA, rng.randbytes(n))
                s.sendall(f)
                expect_frame(s, f, "DATA of %d bytes echoed" % n)
            p = frame(PING, rng.randbytes(8))
            s.sendall(p)
            expect_frame(s, frame(PONG, p[6:]), "the PONG to a PING")
        f = frame(DATA, rng.randbytes(100))
        g.sendall(f)
        expect_frame(g, f, "the good client's DATA after them")
    finally:
        g.close()
    return ("%d bad frames each closed their connection with no reply (%s); DATA of %d, 0 and 1 bytes echoed, "
            "a stray PONG ignored, a PING answered; the client open all along served after"
            % (len(bad), "; ".join(lines), m))


def cmd_data_restart(a):
    """heartbeat_client --data TEXT --data-ms D against us, on two connections. On each, its
    DATA must be numbered from 1 ("1 TEXT", "2 TEXT", ..., every byte checked), each echoed,
    its PINGs answered. The first connection we close once DATA FIRST + 1 has come (it stays
    unanswered: in flight at the close). On the second, COUNT DATA must take at least COUNT - 3
    periods after its PING 1 (the data timer starts with it): one timer's pace, not two (a
    timer of the old connection left running beside the new one's doubles it)."""
    ls = fake_listener()
    text, period = a.text.encode(), a.data_ms / 1000
    spans = []
    try:
        for conn, last in ((1, a.first + 1), (2, a.count)):
            c, _ = ls.accept()
            with c:
                c.settimeout(scaled(5) + 2 * period * last)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                expect_frame(c, frame(PING, struct.pack(">Q", 1)), "connection %d: PING 1" % conn)
                t0 = time.monotonic()
                c.sendall(frame(PONG, struct.pack(">Q", 1)))
                n = 0
                while n < last:
                    got = read_frame(c, "connection %d" % conn)
                    ftype = struct.unpack(">H", got[4:6])[0]
                    if ftype == PING:
                        c.sendall(frame(PONG, got[6:]))
                        continue
                    n += 1
                    want = frame(DATA, b"%d %s" % (n, text))
                    if got != want:
                        raise Failure(mismatch(want, got, "connection %d: DATA %d" % (conn, n)))
                    if conn == 1 and n == last:
                        break  # left unanswered: in flight when we close
                    c.sendall(got)
                spans.append(time.monotonic() - t0)
        if spans[1] < (a.count - 3) * period:
            raise Failure("connection 2: %d DATA in %.3f s after its PING 1, want at least %.3f "
                          "(one every %.3f s: a second timer sends too?)"
                          % (a.count, spans[1], (a.count - 3) * period, period))
    except socket.timeout:
        raise Failure("timed out: no connection, or no frame, from the client")
    finally:
        ls.close()
    return ("DATA numbered from 1 on both connections (%d, then %d), every byte as sent; "
            "%d DATA in %.3f s on the second (period %.3f s)" % (a.first + 1, a.count, a.count, spans[1], period))


def cmd_churn(a):
    """N connections one after another, each gone once it has its first PING: sessions that
    close before their first tick (a timer left behind would fire for a freed session)."""
    want = frame(PING, struct.pack(">Q", 1))
    for i in range(a.clients):
        with connect(a.port) as s:
            s.settimeout(scaled(5))
            expect_frame(s, want, "client %d: PING 1" % i)
    return "%d clients each got PING 1 and left" % a.clients


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("peer", "connect to a heartbeat_server as a fake client"),
                        ("fake-server", "listen, and be the server of one heartbeat_client")):
        p = sub.add_parser(name, help=help_)
        if name == "peer":
            p.add_argument("--port", type=int, required=True)
        else:
            p.add_argument("--reconnect", action="store_true", help="then wait for its reconnection")
            p.add_argument("--echo", action="store_true", help="send back the DATA it gets")
            p.add_argument("--bad-type", type=lambda v: int(v, 0), help="instead: send one frame of this type")
            p.add_argument("--stray", help="instead: send one DATA frame with this body, then close")
            p.add_argument("--corrupt", type=int, default=0, help="flip a byte of echo number N")
            p.add_argument("--corrupt-offset", type=int, default=0, help="that byte (in the body)")
        peer_options(p)
    p = sub.add_parser("multi", help="several fake clients at once (threads)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--interval-ms", type=int, required=True)
    p.add_argument("--peer", action="append", required=True, help="'NAME [peer options]'")
    p = sub.add_parser("bad", help="bad types and lengths close only their connection")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-frame", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("data-restart", help="be the server of heartbeat_client --data twice: DATA numbered from 1, one timer's pace")
    p.add_argument("--text", required=True, help="the client's --data")
    p.add_argument("--data-ms", type=int, required=True, help="the client's --data-ms")
    p.add_argument("--first", type=int, default=5, help="DATA echoed on the first connection before we close it")
    p.add_argument("--count", type=int, default=10, help="DATA on the second connection")
    p = sub.add_parser("churn", help="clients that leave after their first PING")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, default=20)
    a = ap.parse_args(argv)
    if getattr(a, "pattern", "") and set(a.pattern) - set("asl"):
        ap.error("--pattern: only 'a', 's' and 'l'")
    try:
        line = {"peer": cmd_peer, "fake-server": cmd_fake_server, "bad": cmd_bad, "churn": cmd_churn, "multi": cmd_multi,
                "data-restart": cmd_data_restart}[a.cmd](a)
    except (Failure, OSError) as e:
        print("FAIL: %s" % e, flush=True)
        return 1
    print("ok: %s" % line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
