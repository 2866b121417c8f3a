#!/usr/bin/env python3
"""frames: clients for 08_framework's examples (length-prefixed frames, idle timeouts,
bursts, slow readers, streams cut by a shutdown, a fake pingpong server).

Python 3 standard library only. Each subcommand prints `ok: ...` and exits 0, or
`FAIL: ...` and exits 1. Every wait has a deadline; TIMEOUT_SCALE stretches them all.
"""

import argparse
import os
import random
import selectors
import socket
import struct
import sys
import threading
import time

TIMEOUT_SCALE = float(os.environ.get("TIMEOUT_SCALE", "1") or "1")


class Failure(Exception):
    pass


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def connect(port, rcvbuf=None, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(scaled(timeout))
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def mismatch(want, got, name):
    off = next((i for i in range(min(len(want), len(got))) if want[i] != got[i]), min(len(want), len(got)))
    if off < min(len(want), len(got)):
        lo = max(0, off - 8)
        return ("%s: differs at offset %d of %d: want %s, got %s (bytes %d..)"
                % (name, off, len(want), want[lo:off + 8].hex(" "), got[lo:off + 8].hex(" "), lo))
    return "%s: got %d bytes, want %d" % (name, len(got), len(want))


def recv_exact(s, n, name):
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = s.recv(min(n - len(buf), 1 << 20))
        except socket.timeout:
            raise Failure("%s: %d of %d bytes within the deadline" % (name, len(buf), n))
        except ConnectionResetError:
            raise Failure("%s: reset after %d of %d bytes" % (name, len(buf), n))
        if not chunk:
            raise Failure("%s: EOF after %d of %d bytes" % (name, len(buf), n))
        buf += chunk
    return bytes(buf)


def expect_closed(s, name, timeout=3.0):
    """No byte, then EOF or a reset, within the deadline."""
    s.settimeout(scaled(timeout))
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        raise Failure("%s: still open %.1f s later" % (name, scaled(timeout)))
    except ConnectionResetError:
        return "reset"
    if chunk:
        raise Failure("%s: %d bytes instead of the close: %r" % (name, len(chunk), chunk[:32]))
    return "EOF"


def send_pieces(s, data, rng, max_piece):
    off = 0
    while off < len(data):
        n = rng.randint(1, max_piece)
        s.sendall(data[off:off + n])
        off += n


# ----------------------------------------------------------------------- length frames

def len_echo(port, sizes, rng, max_piece):
    """One connection: each size as {u32 length, body}, sent in random pieces, echoed whole."""
    with connect(port) as s:
        for n in sizes:
            body = rng.randbytes(n)
            frame = struct.pack(">I", n) + body
            send_pieces(s, frame, rng, max_piece)
            got = recv_exact(s, len(frame), "frame of %d bytes" % n)
            if got != frame:
                raise Failure(mismatch(frame, got, "frame of %d bytes" % n))
    return "%d frames (%s bytes) echoed whole" % (len(sizes), ",".join(map(str, sizes)))


def len_bad(port, size, good_size, rng):
    """B is served; A sends a header of SIZE (over the limit) and part of a body: A is closed
    with no reply; B, connected all along, is served before and after."""
    b = connect(port)
    a = connect(port)
    try:
        body = rng.randbytes(good_size)
        frame = struct.pack(">I", good_size) + body
        b.sendall(frame)
        if recv_exact(b, len(frame), "B before") != frame:
            raise Failure("B before: wrong echo")
        a.sendall(struct.pack(">I", size) + rng.randbytes(min(size, 1000)))
        how = expect_closed(a, "A (header %d)" % size)
        body = rng.randbytes(good_size)
        frame = struct.pack(">I", good_size) + body
        send_pieces(b, frame, rng, 97)
        got = recv_exact(b, len(frame), "B after")
        if got != frame:
            raise Failure(mismatch(frame, got, "B after"))
    finally:
        a.close()
        b.close()
    return "header %d: closed (%s) with no reply; the other client served before and after" % (size, how)


# ----------------------------------------------------------------------- idle timeout

def idle(port, idle_s, rng):
    """Q: one echo, then silence: EOF must come idle_s after its last byte, not before.
    T, at the same time: a byte every idle_s/4 for 2*idle_s, each echoed: never closed."""
    q = connect(port)
    t = connect(port)
    errors = []

    def talker():
        try:
            end = time.monotonic() + 2 * idle_s
            n = 0
            while time.monotonic() < end:
                b = bytes([rng.randrange(256)])
                t.sendall(b)
                if recv_exact(t, 1, "talker") != b:
                    raise Failure("talker: wrong echo")
                n += 1
                time.sleep(idle_s / 4)  # the talker's pace: a quarter of the idle timeout
            if n < 4:
                raise Failure("talker: only %d round trips in %.2f s" % (n, 2 * idle_s))
        except (Failure, OSError) as e:
            errors.append(str(e))

    th = threading.Thread(target=talker)
    try:
        # The server's clock starts at its read of our byte: after our send, before our echo
        # came (at load, the echo has come 30 ms after the read). So "not before" is timed
        # from the send, "not much after" from the echo.
        sent = time.monotonic()
        q.sendall(b"x")
        if recv_exact(q, 1, "quiet client") != b"x":
            raise Failure("quiet client: wrong echo")
        t0 = time.monotonic()
        th.start()
        how = expect_closed(q, "quiet client", idle_s + scaled(3))
        end = time.monotonic()
        elapsed, since_send = end - t0, end - sent
        th.join(scaled(10) + 2 * idle_s)
        if errors:
            raise Failure(errors[0])
        if since_send < idle_s - 0.005:  # the server's timers have 1 ms resolution
            raise Failure("quiet client closed %.3f s after its byte was sent, before the %.3f s "
                          "idle timeout" % (since_send, idle_s))
        if elapsed > idle_s + scaled(1.0):
            raise Failure("quiet client closed only after %.3f s (idle timeout %.3f s)" % (elapsed, idle_s))
    finally:
        q.close()
        t.close()
    return "quiet client closed (%s) %.3f s after its echo (idle timeout %.3f s); the talker kept its connection" % (how, elapsed, idle_s)


# ----------------------------------------------------------------------- bursts and slow readers

def burst(port, clients, size, rounds, rng):
    """CLIENTS connections each send SIZE bytes in one send and read their echo; all at once,
    ROUNDS times. The receive buffers hold the whole echo, so nothing needs to queue."""
    socks = [connect(port, rcvbuf=4 * size + 65536) for _ in range(clients)]
    try:
        for r in range(rounds):
            payloads = [rng.randbytes(size) for _ in socks]
            for s, p in zip(socks, payloads):
                s.sendall(p)
            for i, (s, p) in enumerate(zip(socks, payloads)):
                got = recv_exact(s, size, "client %d round %d" % (i, r))
                if got != p:
                    raise Failure(mismatch(p, got, "client %d round %d" % (i, r)))
    finally:
        for s in socks:
            s.close()
    return "%d clients x %d rounds of %d bytes sent at once, every byte echoed" % (clients, rounds, size)


def too_slow(port, size, rng, pace_ms=0):
    """A (4 KiB receive buffer) sends up to SIZE bytes and never reads: it must be dropped.
    B echoes 4 KiB round trips all along, and after. PACE_MS: A waits that long after each
    64 KiB (a slow sender, whose echo queues slowly)."""
    a = connect(port, rcvbuf=4096)
    b = connect(port)
    state = {"sent": 0, "how": None}

    def flood():
        chunk = rng.randbytes(65536)
        a.settimeout(scaled(10))
        try:
            while state["sent"] < size:
                state["sent"] += a.send(chunk)
                if pace_ms:
                    time.sleep(pace_ms / 1000.0)  # the pace of a slow sender, not a wait for anything
        except (BrokenPipeError, ConnectionResetError) as e:
            state["how"] = type(e).__name__
        except socket.timeout:
            state["how"] = "timeout"

    th = threading.Thread(target=flood)
    th.start()
    trips = 0
    brng = random.Random(rng.random())
    try:
        while th.is_alive() and trips < 100000:
            p = brng.randbytes(4096)
            b.sendall(p)
            got = recv_exact(b, len(p), "B during")
            if got != p:
                raise Failure(mismatch(p, got, "B during"))
            trips += 1
        th.join(scaled(15))
        if state["how"] not in ("BrokenPipeError", "ConnectionResetError"):
            raise Failure("A was not dropped: sent %d bytes, reading none (%s)" % (state["sent"], state["how"]))
        p = brng.randbytes(4096)
        b.sendall(p)
        if recv_exact(b, len(p), "B after") != p:
            raise Failure("B after: wrong echo")
    finally:
        a.close()
        b.close()
    return "A dropped after sending %d bytes (%s); B served %d round trips meanwhile, and after" % (state["sent"], state["how"], trips)


# ----------------------------------------------------------------------- a stream cut by shutdown

def stream(port, clients, ready_file, rng, timeout=10.0):
    """CLIENTS connections send random bytes and read their echo, non-stop. Once each has had
    some echo back, touch READY_FILE (the test then stops the server). Until every connection
    ends (EOF or reset): what each got back must be a prefix of what it sent."""
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(clients):
        s = connect(port)
        s.setblocking(False)
        c = {"i": i, "s": s, "sent": bytearray(), "got": bytearray(), "open": True, "wr": True}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    ready = False
    deadline = time.monotonic() + scaled(timeout)
    left = clients
    try:
        while left:
            if time.monotonic() > deadline:
                raise Failure("%d of %d connections still open %.1f s on" % (left, clients, scaled(timeout)))
            for key, ev in sel.select(0.2):
                c = key.data
                s = c["s"]
                if ev & selectors.EVENT_READ:
                    try:
                        chunk = s.recv(65536)
                    except ConnectionResetError:
                        chunk = b""
                    except BlockingIOError:
                        chunk = None
                    if chunk == b"":
                        sel.unregister(s)
                        c["open"] = False
                        left -= 1
                        continue
                    if chunk:
                        n = len(c["got"])
                        if bytes(c["sent"][n:n + len(chunk)]) != chunk:
                            want = bytes(c["sent"][n:n + len(chunk)])
                            raise Failure(mismatch(want, chunk, "client %d at offset %d" % (c["i"], n)))
                        c["got"] += chunk
                if ev & selectors.EVENT_WRITE and c["wr"]:
                    # Keep at most 256 KiB unanswered: a stream, not a flood.
                    if len(c["sent"]) - len(c["got"]) < 262144:
                        data = rng.randbytes(rng.randint(1, 16384))
                        try:
                            n = s.send(data)
                            c["sent"] += data[:n]
                        except BlockingIOError:
                            pass
                        except (BrokenPipeError, ConnectionResetError):
                            c["wr"] = False
                            sel.modify(s, selectors.EVENT_READ, c)
                    else:
                        sel.modify(s, selectors.EVENT_READ, c)
                        c["wr"] = "paused"
                if c["open"] and c["wr"] == "paused" and len(c["sent"]) - len(c["got"]) < 131072:
                    c["wr"] = True
                    sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
            if not ready and all(len(c["got"]) >= 65536 for c in conns):
                ready = True
                with open(ready_file, "w") as f:
                    f.write("streaming\n")
        if not ready:
            raise Failure("the connections closed before each had 64 KiB of echo")
    finally:
        sel.close()
        for c in conns:
            c["s"].close()
    total = sum(len(c["got"]) for c in conns)
    return "%d streams cut by the shutdown: each got a prefix of what it sent (%d bytes echoed in all)" % (clients, total)


# ----------------------------------------------------------------------- a fake pingpong server

def fake_pingpong(corrupt_reply, corrupt_offset):
    """A pingpong server that echoes {u32 length, body} frames but flips one byte of the
    CORRUPT_REPLY-th reply (counted from 0 over all connections) at body offset CORRUPT_OFFSET.
    Prints `listening on 127.0.0.1:PORT`; runs until killed."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    print("listening on 127.0.0.1:%d" % ls.getsockname()[1], flush=True)
    lock = threading.Lock()
    count = [0]

    def serve(s):
        with s:
            buf = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 4:
                    n = struct.unpack(">I", buf[:4])[0]
                    if len(buf) < 4 + n:
                        break
                    frame = bytearray(buf[:4 + n])
                    del buf[:4 + n]
                    with lock:
                        k = count[0]
                        count[0] += 1
                    if k == corrupt_reply and corrupt_offset < n:
                        frame[4 + corrupt_offset] ^= 0x40
                    s.sendall(frame)

    while True:
        s, _ = ls.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


# ----------------------------------------------------------------------- the connector's backoff

def backoff_check(log, retry, retry_max):
    """In a log of the rx connector (lines `connector X: reconnecting in N ms`, `connect failed
    (attempt K)`, `connected`, with ISO times to the millisecond): after a close the wait is
    in [R/2, R]; after failed attempt K it is in [D/2, D], D = min(R * 2^(K-1), MAX); and the
    next attempt really came no sooner than N ms later."""
    import re
    stamp = re.compile(r"T(\d\d):(\d\d):(\d\d)\.(\d\d\d)Z")
    events = []
    for line in open(log, errors="replace"):
        m = stamp.search(line)
        if not m:
            continue
        t = ((int(m.group(1)) * 60 + int(m.group(2))) * 60 + int(m.group(3))) * 1000 + int(m.group(4))
        if "disconnected:" in line:
            events.append(("closed", t, 1))
        elif (f := re.search(r"connect failed \(attempt (\d+)\)", line)):
            events.append(("failed", t, int(f.group(1))))
        elif (w := re.search(r"reconnecting in (\d+) ms", line)):
            events.append(("wait", t, int(w.group(1))))
        elif "connector" in line and line.rstrip().endswith("connected"):
            events.append(("connected", t, 0))
    waits = 0
    for i, (kind, t, n) in enumerate(events):
        if kind != "wait":
            continue
        prev = next((e for e in reversed(events[:i]) if e[0] in ("closed", "failed")), None)
        if prev is None:
            raise Failure("a wait of %d ms with no close or failure before it" % n)
        k = 1 if prev[0] == "closed" else prev[2]
        d = min(retry * 2 ** (k - 1), retry_max)
        if not (d // 2 <= n <= d):
            raise Failure("after %s %d: a wait of %d ms, want %d..%d" % (prev[0], k, n, d // 2, d))
        nxt = next((e for e in events[i + 1:] if e[0] in ("failed", "connected")), None)
        # The wait runs from the turn's start (rx_loop_now_ms), the log line is stamped a little
        # later in that turn: on a busy machine the gap in the log is a few ms short of N. Half
        # of N (the least equal jitter allows) still tells a wait from none.
        if nxt is not None and nxt[1] - t < n // 2:
            raise Failure("said it waits %d ms, tried again %d ms later" % (n, nxt[1] - t))
        waits += 1
    if waits < 3:
        raise Failure("only %d waits in the log: the backoff was not exercised" % waits)
    return "%d waits, each within [D/2, D] of its backoff and really waited" % waits


def backoff_sequence(log, retry, retry_max):
    """The doubling, counted here rather than read from the log's attempt numbers: in a log of
    the rx connector, the i-th wait since the last close (or since the start) is in [D/2, D],
    D = min(R * 2^(i-1), MAX): the first wait after a connection that worked is the shortest,
    and every failure after it doubles the next (rx.h: retry_ms "doubles each failure")."""
    import re
    i = 0
    after_close = 0
    for line in open(log, errors="replace"):
        if "disconnected:" in line:
            i = 0
        elif (w := re.search(r"connector .*reconnecting in (\d+) ms", line)):
            i += 1
            n = int(w.group(1))
            d = min(retry * 2 ** (i - 1), retry_max)
            if not (d // 2 <= n <= d):
                raise Failure("wait %d since the last close (or the start): %d ms, want %d..%d "
                              "(D = min(%d * 2^%d, %d))" % (i, n, d // 2, d, retry, i - 1, retry_max))
            after_close = max(after_close, i)
    if after_close < 4:
        raise Failure("at most %d waits in a row: the doubling was not exercised" % after_close)
    return "up to %d waits in a row, the i-th within [D/2, D] of D = min(%d * 2^(i-1), %d)" % (
        after_close, retry, retry_max)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="frames", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--seed", type=int, default=None)
        return p

    p = add("len-echo", "frames of the given sizes on one connection, in random pieces, echoed whole")
    p.add_argument("--sizes", required=True, help="comma-separated body sizes")
    p.add_argument("--max-piece", type=int, default=65536)
    p = add("len-bad", "a header over the limit: that client closed, no reply; another served")
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--good-size", type=int, default=1000)
    p = add("idle", "a quiet client closed after the idle timeout, not before; a talker kept")
    p.add_argument("--idle", type=float, required=True, help="the server's --idle-timeout, seconds")
    p = add("burst", "clients send SIZE at once and read it back, ROUNDS times")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--size", type=int, default=16384)
    p.add_argument("--rounds", type=int, default=5)
    p = add("too-slow", "a client that never reads (4 KiB SO_RCVBUF) is dropped; another served throughout")
    p.add_argument("--size", type=int, default=256 << 20)
    p.add_argument("--pace-ms", type=float, default=0)
    p = add("stream", "clients stream until the server ends them: each gets a prefix of what it sent")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--timeout", type=float, default=10.0)
    p = sub.add_parser("backoff-check", help="the connector's waits in a log: bounds and really waited")
    p.add_argument("--log", required=True)
    p.add_argument("--retry", type=int, required=True)
    p.add_argument("--retry-max", type=int, required=True)
    p.add_argument("--seed", type=int, default=None)
    p = sub.add_parser("backoff-sequence", help="the connector's waits in a log: the i-th since a close doubles from --retry")
    p.add_argument("--log", required=True)
    p.add_argument("--retry", type=int, required=True)
    p.add_argument("--retry-max", type=int, required=True)
    p.add_argument("--seed", type=int, default=None)
    p = sub.add_parser("fake-pingpong", help="a pingpong server that corrupts one reply byte")
    p.add_argument("--corrupt-reply", type=int, default=5)
    p.add_argument("--corrupt-offset", type=int, default=3)
    p.add_argument("--seed", type=int, default=None)

    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else int(os.environ.get("NETKIT_SEED", time.time_ns() % 1000000))
    rng = random.Random(seed)
    try:
        if a.cmd == "len-echo":
            msg = len_echo(a.port, [int(x) for x in a.sizes.split(",")], rng, a.max_piece)
        elif a.cmd == "len-bad":
            msg = len_bad(a.port, a.size, a.good_size, rng)
        elif a.cmd == "idle":
            msg = idle(a.port, a.idle, rng)
        elif a.cmd == "burst":
            msg = burst(a.port, a.clients, a.size, a.rounds, rng)
        elif a.cmd == "too-slow":
            msg = too_slow(a.port, a.size, rng, a.pace_ms)
        elif a.cmd == "stream":
            msg = stream(a.port, a.clients, a.ready_file, rng, a.timeout)
        elif a.cmd == "backoff-check":
            msg = backoff_check(a.log, a.retry, a.retry_max)
        elif a.cmd == "backoff-sequence":
            msg = backoff_sequence(a.log, a.retry, a.retry_max)
        elif a.cmd == "fake-pingpong":
            fake_pingpong(a.corrupt_reply, a.corrupt_offset)
            return 0
    except Failure as e:
        print("FAIL: %s (seed %d)" % (e, seed), flush=True)
        return 1
    except OSError as e:
        print("FAIL: %s: %s (seed %d)" % (a.cmd, e, seed), flush=True)
        return 1
    print("ok: %s" % msg, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
