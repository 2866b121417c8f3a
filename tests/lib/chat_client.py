#!/usr/bin/env python3
"""chat_client: stand-in servers and checks for 07_chat's client (07_chat/test.bats, "the client").

Python 3 standard library only. Every subcommand prints `ok: ...` and exits 0, or prints
`FAIL: ...` and exits 1. Every wait has a deadline; TIMEOUT_SCALE (environment, default 1)
stretches them all. A stand-in server prints `door: listening on PORT` first (flushed).

  door-refuse         holds a port bound but not listening, so that every connect to it is
                      refused and no other program can take it; prints `door: refusing on
                      PORT`, then waits to be killed (at most --timeout seconds)
  door-close --accepts K
                      a server that keeps failing: accepts K connections and closes each at
                      once, before any welcome; prints `door: accept I at MS` for each (ms
                      since it started listening)
  door-restart --clients N --retry SEC [--port P] [--min-spread MS]
                      closes the first N connections at once (a failure on each client's
                      count); then N clients connect and are welcomed (`* welcome cI`); it prints
                      `door: N welcomed`, then tells them all `* server shutting down` and
                      closes them at one instant, as a restarting server would; then it
                      accepts the N coming back (welcoming each) and requires that none came
                      back sooner than SEC/2 and that the first and last came back at least
                      MIN-SPREAD ms apart (jitter: without it they all return in the same
                      few ms)
  door-say --step send:HEX|wait:HEX|fill:N|waitfile:PATH|txq-below:N|recv:HEX|lines|hold|close
           [--out FILE] [--mss BYTES] [--rcvbuf BYTES]
                      one connection: sends bytes (HEX, or N bytes of 64-byte lines, then
                      prints `door: filled N`: on loopback they are then in the client's
                      socket, as far as its buffer goes),
                      waits until FILE (the client's stdout) holds the given bytes, waits
                      until PATH exists, receives the given bytes from the client, receives
                      numbered lines (`lines`, as `writer` writes them) until the client's
                      EOF and prints `door: N lines in order`, holds the connection until
                      the client closes it, closes; `txq-below:N` fails unless the client's
                      kernel holds fewer than N bytes of its sends (/proc/net/tcp tx_queue).
                      --mss advertises a small segment size (TCP_MAXSEG on the listener) and
                      --rcvbuf sets a small window, so that the client's send buffer stays small
  writer --fifo PATH --stop FILE
                      writes numbered 1024-byte lines (`%01023d\\n`) into PATH until FILE
                      exists, then prints `writer: N lines` and closes it
  backoff-check --err FILE --door FILE --retry SEC --retry-max SEC --count K
                      FILE is a client's stderr against `door-close`: its lines
                      `* disconnected (...); retry I in S s` for I = 1..K must each say a
                      delay within [D/2, D], D = min(retry-max, retry * 2^(I-1)), reach the
                      cap, and the door's accepts must be at least that far apart
  pipe-empty --fifo PATH [--full N]
                      waits until the fifo PATH holds no unread bytes (the client read them),
                      or with --full, at least N (nobody reads it and it is full)
"""

import argparse
import fcntl
import os
import re
import socket
import struct
import sys
import termios
import time

TIMEOUT_SCALE = float(os.environ.get("TIMEOUT_SCALE", "1") or "1")


class Failure(Exception):
    """A check did not hold; the message says what was expected and what happened."""


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def listen(port=0, mss=0, rcvbuf=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if mss:
        # Advertised in the SYN-ACK: the client's segments, and so the send buffer the kernel
        # sizes from them (a few segments' worth), stay small. On loopback the MSS is ~64 KiB
        # and the client's send buffer can grow past everything it ever queues.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    if rcvbuf:
        # A small window too: a sender's buffer grows with its congestion window, which
        # grows only while the window lets it (here: 4 MiB without either, ~120 KiB with both).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    print("door: listening on %d" % s.getsockname()[1], flush=True)
    return s


def accept(lsock, deadline, what):
    left = deadline - time.monotonic()
    if left <= 0:
        raise Failure(what)
    lsock.settimeout(left)
    try:
        conn, _ = lsock.accept()
    except socket.timeout:
        raise Failure(what)
    return conn


def door_refuse(timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    print("door: refusing on %d" % s.getsockname()[1], flush=True)
    time.sleep(scaled(timeout))  # the holding itself: the test kills us when it is done
    return "held the port for %.0f s" % scaled(timeout)


def door_close(accepts, timeout, say=None):
    """Accepts ACCEPTS connections and closes each at once (after the line SAY, if given: a
    server that answers but never welcomes, so the client's backoff must go on growing)."""
    lsock = listen()
    t0 = time.monotonic()
    deadline = t0 + scaled(timeout)
    for i in range(accepts):
        conn = accept(lsock, deadline, "only %d of %d connections within %.1f s" % (i, accepts, scaled(timeout)))
        at = (time.monotonic() - t0) * 1000
        if say is not None:
            conn.sendall(say.encode() + b"\n")
        conn.close()
        print("door: accept %d at %.1f" % (i, at), flush=True)
    return "%d connections accepted and closed at once" % accepts


def door_restart(port, nclients, retry, min_spread, timeout):
    lsock = listen(port)
    deadline = time.monotonic() + scaled(timeout)
    # First a failure each: the first N connections are closed before any welcome, so
    # every client has a failed attempt on its count when it is welcomed next.
    for i in range(nclients):
        accept(lsock, deadline, "only %d of %d clients connected" % (i, nclients)).close()
    conns = []
    for i in range(nclients):
        c = accept(lsock, deadline, "only %d of %d clients connected" % (i, nclients))
        c.sendall(b"* welcome c%d\n" % i)
        conns.append(c)
    print("door: %d welcomed" % nclients, flush=True)
    # Each client prints its `* connected` before we could welcome it; the test waits for
    # this line, then for nothing else: the restart is now.
    for c in conns:
        c.sendall(b"* server shutting down\n")
    t0 = time.monotonic()
    for c in conns:
        c.close()
    back = []
    for i in range(nclients):
        c = accept(lsock, time.monotonic() + scaled(timeout),
                   "only %d of %d clients came back (at %s ms)" % (i, nclients, back))
        back.append((time.monotonic() - t0) * 1000)
        c.sendall(b"* welcome c%d\n" % (nclients + i))
        conns.append(c)
    desc = "%d clients came back %.1f to %.1f ms after the restart (spread %.1f ms): %s" % (
        nclients, back[0], back[-1], back[-1] - back[0], " ".join("%.1f" % t for t in back))
    # A small allowance below SEC/2: the clients saw the close a little after t0, never before.
    if back[0] < retry * 1000 / 2 - 1:
        raise Failure(desc + "; the first came back sooner than --retry/2 = %.0f ms" % (retry * 500))
    if back[-1] - back[0] < min_spread:
        raise Failure(desc + "; want them spread over at least %.0f ms (jitter)" % min_spread)
    for c in conns:
        c.close()
    return desc


def client_tx_queue(conn):
    """Bytes the client's kernel holds unsent or unacknowledged on this connection (the
    tx_queue of its socket in /proc/net/tcp), or None if the socket is not found."""
    mine, peer = conn.getsockname()[1], conn.getpeername()[1]
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if (int(fields[1].rsplit(":", 1)[1], 16) == peer
                    and int(fields[2].rsplit(":", 1)[1], 16) == mine):
                return int(fields[4].split(":")[0], 16)
    return None


def door_say(steps, out, timeout, mss=0, rcvbuf=0):
    lsock = listen(mss=mss, rcvbuf=rcvbuf)
    deadline = time.monotonic() + scaled(timeout)
    conn = accept(lsock, deadline, "the client did not connect")
    for step in steps:
        op, _, arg = step.partition(":")
        if op == "send":
            conn.sendall(bytes.fromhex(arg))
        elif op == "wait":
            want = bytes.fromhex(arg)
            while True:
                with open(out, "rb") as f:
                    have = f.read()
                if want in have:
                    break
                if time.monotonic() > deadline:
                    raise Failure("the client's stdout never held %r; it holds %r" % (want, have[-200:]))
                time.sleep(0.01)  # poll interval of a loop with a deadline
        elif op == "fill":
            line = b"f" * 63 + b"\n"
            conn.sendall(line * (int(arg) // len(line)))
            print("door: filled %s" % arg, flush=True)
        elif op == "waitfile":
            while not os.path.exists(arg):
                if time.monotonic() > deadline:
                    raise Failure("%s never appeared" % arg)
                time.sleep(0.01)  # poll interval of a loop with a deadline
        elif op == "txq-below":
            # The client's own queue is full (1 MiB) when the test gets here: its kernel
            # holding less means the next send() must come up short.
            txq = client_tx_queue(conn)
            if txq is None or txq >= int(arg):
                raise Failure("the client's kernel send queue holds %s bytes, want under %s: "
                              "its sends would not come up short" % (txq, arg))
            print("door: the client's kernel send queue holds %d bytes" % txq, flush=True)
        elif op == "recv":
            want, got = bytes.fromhex(arg), b""
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            while len(got) < len(want):
                try:
                    data = conn.recv(len(want) - len(got))
                except socket.timeout:
                    data = b""
                if not data:
                    raise Failure("received %r from the client, want %r" % (got, want))
                got += data
            if got != want:
                raise Failure("received %r from the client, want %r" % (got, want))
        elif op == "lines":
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            buf, n = b"", 0
            while True:
                try:
                    data = conn.recv(1 << 20)
                except socket.timeout:
                    raise Failure("no EOF from the client after %d lines" % n)
                if not data:
                    break
                buf += data
                whole = len(buf) // 1024 * 1024
                for off in range(0, whole, 1024):
                    if buf[off:off + 1024] != b"%01023d\n" % n:
                        raise Failure("line %d is %r" % (n, buf[off:off + 40]))
                    n += 1
                buf = buf[whole:]
            if buf:
                raise Failure("after %d lines, %d bytes of a cut line: %r" % (n, len(buf), buf[:40]))
            print("door: %d lines in order" % n, flush=True)
        elif op == "hold":
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                while conn.recv(65536):
                    pass
            except ConnectionResetError:
                pass
            except socket.timeout:
                raise Failure("the client did not close the connection")
        elif op == "close":
            conn.close()
        else:
            raise Failure("not a step: %r" % step)
    return "%d steps" % len(steps)


RETRY_LINE = re.compile(r"\* disconnected \(the server closed the connection\); retry (\d+) in (\d+\.\d{3}) s")


def backoff_check(err, door, retry, retry_max, count):
    with open(err) as f:
        lines = f.read().splitlines()
    delays = []
    for line in lines:
        if len(delays) == count:
            break  # what came later (the door gone: refused) is not this check's
        if line.startswith("* connected to "):
            continue
        m = RETRY_LINE.fullmatch(line)
        if not m:
            raise Failure("client stderr: unexpected line %r" % line)
        if int(m.group(1)) != len(delays) + 1:
            raise Failure("client stderr: %r, want retry %d" % (line, len(delays) + 1))
        delays.append(float(m.group(2)))
    if len(delays) < count:
        raise Failure("only %d retries in the client's stderr, want %d: %r" % (len(delays), count, lines))
    with open(door) as f:
        accepts = [float(m.group(1)) for m in re.finditer(r"door: accept \d+ at (\d+\.\d)", f.read())]
    if len(accepts) < count + 1:
        raise Failure("only %d accepts in the door's log, want %d" % (len(accepts), count + 1))
    capped = 0
    for i, got in enumerate(delays[:count]):
        d = min(retry_max, retry * 2 ** i)
        if not d / 2 - 0.0015 <= got <= d + 0.0005:
            raise Failure("retry %d: %.3f s, want within [%.3f, %.3f] (D = min(%g, %g * 2^%d))" % (
                i + 1, got, d / 2, d, retry_max, retry, i))
        capped += d == retry_max
        gap = (accepts[i + 1] - accepts[i]) / 1000
        # The client waited at least what it said (less 2 ms: the two clocks' rounding).
        if gap < got - 0.002:
            raise Failure("retry %d said %.3f s, but it came back after %.3f s" % (i + 1, got, gap))
    if capped < 2:
        raise Failure("the delays %s never reached the cap twice: count more retries" % delays)
    return "delays %s s, each within [D/2, D] and waited" % " ".join("%.3f" % d for d in delays[:count])


def writer(path, stop, timeout):
    n = 0
    deadline = time.monotonic() + scaled(timeout)
    with open(path, "wb", buffering=0) as f:
        while not os.path.exists(stop):
            if time.monotonic() > deadline:
                raise Failure("%s never appeared (%d lines written)" % (stop, n))
            f.write(b"".join(b"%01023d\n" % i for i in range(n, n + 64)))
            n += 64
    print("writer: %d lines" % n, flush=True)
    return "%d lines" % n


def pipe_empty(path, full, timeout):
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        # Full is at most the pipe's size: a user past fs.pipe-user-pages-soft (a busy machine
        # with many pipes open) gets new pipes of one page, which never hold 64 KiB. And a
        # full pipe holds up to a page less: a reader that stopped in the middle of a page
        # leaves that page's slot taken, the writer blocked, and FIONREAD short of the size
        # (the client stops reading stdin at its 1 MiB mark, wherever that falls).
        if full:
            full = min(full, fcntl.fcntl(fd, 1032)) - os.sysconf("SC_PAGE_SIZE") + 1  # F_GETPIPE_SZ
        deadline = time.monotonic() + scaled(timeout)
        while True:
            n = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            if (n >= full) if full else n == 0:
                return "the fifo holds %d bytes" % n
            if time.monotonic() > deadline:
                raise Failure("%d bytes unread in %s, want %s" % (n, path, ">= %d" % full if full else 0))
            time.sleep(0.01)  # poll interval of a loop with a deadline
    finally:
        os.close(fd)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name):
        p = sub.add_parser(name)
        p.add_argument("--timeout", type=float, default=10.0, help="seconds per wait (scaled)")
        return p

    add("door-refuse")
    p = add("door-close")
    p.add_argument("--accepts", type=int, required=True)
    p.add_argument("--say", help="a line sent to each connection before closing it")
    p = add("door-restart")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--retry", type=float, required=True)
    p.add_argument("--min-spread", type=float, default=15.0)
    p = add("door-say")
    p.add_argument("--step", action="append", required=True)
    p.add_argument("--out")
    p.add_argument("--mss", type=int, default=0)
    p.add_argument("--rcvbuf", type=int, default=0)
    p = add("backoff-check")
    p.add_argument("--err", required=True)
    p.add_argument("--door", required=True)
    p.add_argument("--retry", type=float, required=True)
    p.add_argument("--retry-max", type=float, required=True)
    p.add_argument("--count", type=int, required=True)
    p = add("writer")
    p.add_argument("--fifo", required=True)
    p.add_argument("--stop", required=True)
    p = add("pipe-empty")
    p.add_argument("--fifo", required=True)
    p.add_argument("--full", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "door-refuse":
            msg = door_refuse(a.timeout)
        elif a.cmd == "door-close":
            msg = door_close(a.accepts, a.timeout, a.say)
        elif a.cmd == "door-restart":
            msg = door_restart(a.port, a.clients, a.retry, a.min_spread, a.timeout)
        elif a.cmd == "door-say":
            msg = door_say(a.step, a.out, a.timeout, a.mss, a.rcvbuf)
        elif a.cmd == "backoff-check":
            msg = backoff_check(a.err, a.door, a.retry, a.retry_max, a.count)
        elif a.cmd == "writer":
            msg = writer(a.fifo, a.stop, a.timeout)
        else:
            msg = pipe_empty(a.fifo, a.full, a.timeout)
    except (Failure, OSError) as e:
        print("FAIL: %s: %s" % (a.cmd, e), flush=True)
        return 1
    print("ok: %s: %s" % (a.cmd, msg), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
