#!/usr/bin/env python3
"""rxflow: more clients for 08_framework's echo (flow control and close reasons): a client
paused and resumed twice on one connection, a queue that dips over the soft cap and back,
a reset while the server is blocked writing. Shares frames.py's helpers.

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
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from frames import Failure, connect, mismatch, recv_exact, scaled  # noqa: E402


def connect_small(port):
    """A connection with small kernel buffers on our side (64 KiB to send, 4 KiB to
    receive): what the server echoes queues in the server, and a stall comes soon."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(scaled(5))
    s.connect(("127.0.0.1", port))
    return s


def send_until_stalled(s, rng, limit, timeout=10.0):
    """Sends random bytes on S without reading until the server stops taking them (S stays
    unwritable for 0.3 s: every buffer between us and the server is full). Returns them."""
    sent = bytearray()
    chunk = rng.randbytes(65536)
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_WRITE)
    deadline = time.monotonic() + scaled(timeout)
    try:
        while len(sent) < limit and sel.select(scaled(0.3)):
            if time.monotonic() > deadline:
                raise Failure("still taking bytes after %.0f s (%d sent)" % (scaled(timeout), len(sent)))
            try:
                n = s.send(chunk)
            except BlockingIOError:
                continue
            sent += chunk[:n]
    finally:
        sel.close()
        s.setblocking(True)
        s.settimeout(scaled(timeout))
    if len(sent) >= limit:
        raise Failure("the server took all %d bytes without stalling (was reading not paused?)" % limit)
    return bytes(sent)


def pause_twice(port, rounds, limit, rng):
    """One connection, ROUNDS times: send without reading until the server stops reading
    (paused at its high water), then read the echo of every byte sent, in order. The second
    stall proves that the high water is reported again after a drain."""
    total = 0
    with connect_small(port) as s:
        for r in range(rounds):
            try:
                sent = send_until_stalled(s, rng, limit)
            except (BrokenPipeError, ConnectionResetError) as e:
                raise Failure("round %d: %s while sending (dropped instead of paused?)" % (r + 1, type(e).__name__))
            got = recv_exact(s, len(sent), "round %d echo" % (r + 1))
            if got != sent:
                raise Failure(mismatch(sent, got, "round %d echo" % (r + 1)))
            total += len(sent)
    return "%d stalls on one connection, %d bytes sent unread and all echoed in order" % (rounds, total)


def soft_dip(port, size, hold, rng):
    """A (4 KiB receive buffer) sends SIZE bytes without reading, so its echo queues in the
    server past the soft cap; then it reads all of it (the queue goes back under the cap) and
    echoes 1 KiB every 100 ms for HOLD seconds, longer than --soft-seconds: a queue that went
    back under the soft cap stops its clock, so A is never dropped."""
    with connect_small(port) as a:
        data = rng.randbytes(size)
        t0 = time.monotonic()
        a.sendall(data)
        # Over the cap now; read the echo through a wide window, so that the queue comes back
        # under the cap soon (8 MiB through 4 KiB took 1.6 s at load: past --soft-seconds).
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        got = recv_exact(a, size, "A's echo")
        if got != data:
            raise Failure(mismatch(data, got, "A's echo"))
        dip = time.monotonic() - t0
        end = time.monotonic() + hold
        trips = 0
        while time.monotonic() < end:
            p = rng.randbytes(1024)
            try:
                a.sendall(p)
                got = recv_exact(a, len(p), "A's echo %d after the dip" % trips)
            except (BrokenPipeError, ConnectionResetError) as e:
                raise Failure("A dropped (%s) %.2f s after its queue went back under the soft cap"
                              % (type(e).__name__, time.monotonic() - t0 - dip))
            if got != p:
                raise Failure(mismatch(p, got, "A's echo %d after the dip" % trips))
            trips += 1
            time.sleep(0.1)  # the pace of a client that talks a little, not a wait for anything
    return ("%d bytes echoed through a queue over the soft cap (%.2f s), then %d round trips in %.1f s: kept"
            % (size, dip, trips, hold))


def reset_stalled(port, limit, rng):
    """Send without reading until the server stops reading (paused at its high water, its
    output queued towards us), then reset (SO_LINGER 0): the server learns of it from a write."""
    s = connect_small(port)
    try:
        sent = send_until_stalled(s, rng, limit)
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    return "reset after %d bytes sent and none read" % len(sent)


def half_close_each(port, count, size, rng):
    """COUNT connections one after another, each: SIZE bytes sent, shutdown(SHUT_WR), and the
    whole echo (byte for byte) then EOF (netkit's half-close). Against a server with a drain of
    0 ms: the close that follows the EOF still writes what the kernel takes at once."""
    import netkit
    for i in range(count):
        try:
            netkit.half_close("127.0.0.1", port, size, rng.randrange(1 << 30))
        except Exception as e:  # netkit's own Failure, or a socket error
            raise Failure("connection %d of %d: %s" % (i + 1, count, e))
    return "%d connections: %d bytes each echoed after shutdown(SHUT_WR), then EOF" % (count, size)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="rxflow", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--seed", type=int, default=None)
        return p

    p = add("pause-twice", "stall the server's reading ROUNDS times on one connection, read every echo each time")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--limit", type=int, default=48 << 20, help="most bytes sent in a round")
    p = add("soft-dip", "a queue over the soft cap for a moment, then a client that keeps up: kept")
    p.add_argument("--size", type=int, default=8 << 20)
    p.add_argument("--hold", type=float, required=True, help="seconds of talk after the dip")
    p = add("reset-stalled", "send unread until the server stops reading, then reset")
    p.add_argument("--limit", type=int, default=32 << 20)
    p = add("half-close-each", "COUNT connections in turn, each sends SIZE, half-closes, gets every byte then EOF")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--size", type=int, default=300000)

    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else int(os.environ.get("NETKIT_SEED", time.time_ns() % 1000000))
    rng = random.Random(seed)
    try:
        if a.cmd == "pause-twice":
            msg = pause_twice(a.port, a.rounds, a.limit, rng)
        elif a.cmd == "soft-dip":
            msg = soft_dip(a.port, a.size, a.hold, rng)
        elif a.cmd == "reset-stalled":
            msg = reset_stalled(a.port, a.limit, rng)
        elif a.cmd == "half-close-each":
            msg = half_close_each(a.port, a.count, a.size, rng)
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
