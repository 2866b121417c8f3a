#!/usr/bin/env python3
"""netkit: the kit's test client, a library and a command line in one file.

Every scenario the stage tests use (echo with random sizes and splits, many clients at
once, half-close, reset, slow reader, capability probes, memory per connection) is a
function here and a subcommand of the CLI. Python 3 standard library only.

Each subcommand prints `ok: ...` and exits 0, or prints `FAIL: ...` and exits 1.
Every wait has a deadline; TIMEOUT_SCALE (environment, default 1) stretches them all.
"""

import argparse
import errno
import math
import os
import random
import resource
import select
import selectors
import socket
import struct
import sys
import threading
import time

TIMEOUT_SCALE = float(os.environ.get("TIMEOUT_SCALE", "1") or "1")


class Failure(Exception):
    """A check did not hold; the message says what was expected and what happened."""


class ProbeError(Exception):
    """A probe could not ask its question: its precondition failed (the server did not
    serve the first client, the client ran out of descriptors). Never read as a "no"."""


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def scaled(seconds):
    return seconds * TIMEOUT_SCALE


def raise_nofile(wanted):
    """Raise the soft fd limit to `wanted` (capped by the hard limit); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def connect(host, port, timeout=2.0):
    """A blocking, connected TCP socket with Nagle off (so each send is its own segment)."""
    s = socket.create_connection((host, port), timeout=scaled(timeout))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def nonblocking_connect(host, port):
    """A socket whose connect() has been started but not waited for (EINPROGRESS).

    For opening many connections at once: the caller waits for them all together.
    Raises Failure if the connect fails at once (e.g. no route, fd limit).
    """
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    err = s.connect_ex((host, port))
    if err not in (0, errno.EINPROGRESS):
        s.close()
        raise Failure("connect to %s:%d failed: %s" % (host, port, os.strerror(err)))
    return s


def reset_close(sock):
    """Close with SO_LINGER {on, 0}: the kernel sends RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def make_payload(rng, size):
    return rng.randbytes(size)


def describe_mismatch(expected, got, offset):
    """Say where an echo went wrong: the first differing offset and the bytes around it."""
    lo = max(0, offset - 8)
    hi = offset + 8
    return ("echo differs at offset %d of %d: expected %s ... got %s (showing bytes %d..%d)"
            % (offset, len(expected), expected[lo:hi].hex(" "), got[lo:hi].hex(" "), lo, hi - 1))



def require_all_back(payload, got, short):
    """Raises Failure unless GOT is PAYLOAD: at the first differing byte, or, when what came is
    a prefix, with SHORT ("... %d of %d ...": the bytes received and expected)."""
    got = bytes(got)
    if got == payload:
        return
    n = min(len(got), len(payload))
    off = next((i for i in range(n) if got[i] != payload[i]), n)
    if off < n:
        raise Failure(describe_mismatch(payload, got, off))
    raise Failure(short % (len(got), len(payload)))

def random_sizes(rng, count, max_size):
    """Sizes spread evenly on a log scale from 1 to max_size; the extremes always included."""
    if count <= 0:
        return []
    sizes = [max_size, 1][:count]
    while len(sizes) < count:
        exp = rng.uniform(0, math.log2(max(2, max_size)))
        sizes.append(max(1, min(max_size, int(2 ** exp))))
    rng.shuffle(sizes)
    return sizes


# ---------------------------------------------------------------------------
# The echo engine: drives many echo exchanges at once in one selector loop
# ---------------------------------------------------------------------------

class EchoJob:
    """One connection sending `payload` in random pieces and checking the echo.

    half_close: after the last byte, shutdown(SHUT_WR) and require EOF after the echo.
    """

    def __init__(self, sock, payload, rng, max_piece, half_close=False, name="client"):
        self.sock = sock
        self.payload = payload
        self.rng = rng
        self.max_piece = max(1, max_piece)
        self.half_close = half_close
        self.name = name
        self.sent = 0
        self.pending_piece = 0      # bytes left of the piece being written
        self.received = bytearray()
        self.done = False
        self.shut = False

    def want(self):
        ev = selectors.EVENT_READ
        if self.sent < len(self.payload):
            ev |= selectors.EVENT_WRITE
        return ev

    def on_writable(self):
        # One send() per random piece: this is what makes the server see random splits.
        # At most 16 KiB per call, so the loop gets back to reading the echo and to its
        # deadline even when the pieces are 1 byte long.
        budget = 16384
        while self.sent < len(self.payload) and budget > 0:
            if self.pending_piece == 0:
                self.pending_piece = self.rng.randint(1, self.max_piece)
            end = min(len(self.payload), self.sent + self.pending_piece)
            try:
                n = self.sock.send(self.payload[self.sent:end])
            except BlockingIOError:
                return
            except OSError as e:
                raise Failure("%s: send failed after %d of %d bytes: %s"
                              % (self.name, self.sent, len(self.payload), e))
            self.sent += n
            budget -= n
            self.pending_piece -= n
            if self.pending_piece > 0 and self.sent < len(self.payload):
                return                # short write: the socket buffer is full
        if self.half_close and not self.shut and self.sent == len(self.payload):
            self.sock.shutdown(socket.SHUT_WR)
            self.shut = True

    def on_readable(self):
        try:
            chunk = self.sock.recv(262144)
        except BlockingIOError:
            return
        except OSError as e:
            raise Failure("%s: recv failed after %d of %d bytes echoed: %s"
                          % (self.name, len(self.received), len(self.payload), e))
        if not chunk:
            if len(self.received) == len(self.payload) and self.half_close:
                self.done = True
                return
            raise Failure("%s: server closed the connection after echoing %d of %d bytes"
                          % (self.name, len(self.received), len(self.payload)))
        start = len(self.received)
        if start + len(chunk) > len(self.payload):
            raise Failure("%s: server echoed %d bytes, only %d were sent"
                          % (self.name, start + len(chunk), len(self.payload)))
        expected = self.payload[start:start + len(chunk)]
        if chunk != expected:
            self.received += chunk
            off = start + next(i for i in range(len(chunk)) if chunk[i] != expected[i])
            raise Failure("%s: %s" % (self.name, describe_mismatch(self.payload, bytes(self.received), off)))
        self.received += chunk
        if len(self.received) == len(self.payload) and not self.half_close:
            self.done = True


def run_jobs(jobs, timeout):
    """Drive every job to completion, all at once; raise Failure on the first problem."""
    sel = selectors.DefaultSelector()
    for job in jobs:
        job.sock.setblocking(False)
        sel.register(job.sock, job.want(), job)
    deadline = time.monotonic() + scaled(timeout)
    left = len(jobs)
    try:
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stuck = [j for j in jobs if not j.done]
                j = stuck[0]
                raise Failure("timeout after %.1fs: %d of %d clients unfinished; first: %s sent %d of %d, got %d back"
                              % (scaled(timeout), len(stuck), len(jobs), j.name, j.sent, len(j.payload), len(j.received)))
            for key, events in sel.select(min(remaining, 0.5)):
                job = key.data
                if events & selectors.EVENT_WRITE:
                    job.on_writable()
                if events & selectors.EVENT_READ and not job.done:
                    job.on_readable()
                if job.done:
                    sel.unregister(job.sock)
                    left -= 1
                else:
                    sel.modify(job.sock, job.want(), job)
    finally:
        sel.close()


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------

def echo(host, port, count, max_size, max_piece, seed, timeout=10.0):
    """`count` connections one after another, random sizes, random splits."""
    rng = random.Random(seed)
    total = 0
    for i, size in enumerate(random_sizes(rng, count, max_size)):
        with connect(host, port) as s:
            job = EchoJob(s, make_payload(rng, size), rng, max_piece, name="client %d (%d B)" % (i, size))
            run_jobs([job], timeout)
        total += size
    return "%d connections, %d bytes echoed, pieces of 1..%d bytes" % (count, total, max_piece)


def concurrent(host, port, clients, size, seed, timeout=20.0):
    """Open all connections first, then drive every echo at once.

    An iterative server cannot pass this: client 2 is never served while client 1 waits.
    """
    rng = random.Random(seed)
    raise_nofile(clients + 64)
    socks = []
    try:
        for i in range(clients):
            socks.append(connect(host, port))
        jobs = [EchoJob(s, make_payload(rng, size), rng, 4096, name="client %d" % i)
                for i, s in enumerate(socks)]
        run_jobs(jobs, timeout)
    finally:
        for s in socks:
            s.close()
    return "%d clients at once, %d bytes each" % (clients, size)


def half_close(host, port, size, seed, timeout=10.0):
    """Send, shutdown(SHUT_WR), and expect the whole echo followed by EOF."""
    rng = random.Random(seed)
    with connect(host, port) as s:
        job = EchoJob(s, make_payload(rng, size), rng, 65536, half_close=True, name="half-closing client")
        run_jobs([job], timeout)
    return "%d bytes echoed after shutdown(SHUT_WR), then EOF" % size


def fill_without_reading(sock, limit, quiet=0.3, timeout=10.0):
    """Send up to `limit` bytes without ever reading, until the connection stops taking more.

    Returns the number of bytes sent. "Stops taking more" means the socket stayed
    unwritable for `quiet` seconds: every buffer between us and the server is full.
    """
    sock.setblocking(False)
    block = b"\x5a" * 65536
    sent = 0
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_WRITE)
    deadline = time.monotonic() + scaled(timeout)
    try:
        while sent < limit and time.monotonic() < deadline:
            if not sel.select(scaled(quiet)):
                break
            try:
                sent += sock.send(block[:min(len(block), limit - sent)])
            except BlockingIOError:
                continue
            except OSError:
                break            # the server dropped us: that is its right
    finally:
        sel.close()
    return sent


def stuck(host, port, size, hold_secs):
    """Send until the server stops taking bytes (it is stuck writing to us), say so, hold, reset.

    For tests that stop a server while it is blocked sending to a client that never reads.
    """
    a = connect(host, port)
    try:
        sent = fill_without_reading(a, size)
        print("stuck: sent %d bytes, reading none" % sent, flush=True)
        time.sleep(hold_secs)  # holding the connection open is the point; the caller acts meanwhile
    finally:
        reset_close(a)
    return "held a connection that never reads for %.1f s after sending %d bytes" % (hold_secs, sent)


def reset(host, port, size, seed, timeout=10.0):
    """A client sends a lot, never reads, then resets; the server must go on serving others."""
    a = connect(host, port)
    sent = fill_without_reading(a, size, quiet=0.2, timeout=5.0)
    reset_close(a)
    # The server may still be busy with the dead connection; give it the timeout to notice.
    detail = echo(host, port, 1, 4096, 4096, seed, timeout)
    return "reset after sending %d bytes; next client served (%s)" % (sent, detail)


def reset_after_send(host, port, count, size, seed, timeout=10.0):
    """`count` clients in turn each send `size` bytes and reset (SO_LINGER 0) at once, before
    any echo can come back; then a new client must be served.

    The reset reaches the server with the bytes still unread in its socket: it reads them,
    and the send() of their echo fails (ECONNRESET or EPIPE). A server that mishandles that
    failure crashes, spins or stops serving."""
    rng = random.Random(seed)
    for _ in range(count):
        s = connect(host, port)
        s.sendall(make_payload(rng, size))
        reset_close(s)
    detail = echo(host, port, 1, 4096, 4096, seed, timeout)
    return "%d clients reset right after sending %d bytes; next client served (%s)" % (count, size, detail)


def slow_reader(host, port, size, seed, expect_stall=False, timeout=3.0):
    """Client A sends up to `size` bytes and never reads; is client B still served?

    Returns (served, message).
    """
    rng = random.Random(seed)
    a = connect(host, port)
    b = None
    try:
        sent = fill_without_reading(a, size)
        b = connect(host, port)
        job = EchoJob(b, make_payload(rng, 4096), rng, 4096, name="client B")
        try:
            run_jobs([job], timeout)
            served = True
            why = "client B was echoed while client A (%d bytes sent, none read) stayed connected" % sent
        except Failure as e:
            served = False
            why = "client B was not served while client A (%d bytes sent, none read) stayed connected: %s" % (sent, e)
    finally:
        reset_close(a)           # RST unblocks a server stuck writing to A
        if b is not None:
            b.close()
    return served, why


def stall(host, port, seed, timeout=2.0):
    """Client A is connected and has been served; does client B get served while A stays?

    Returns (served_while_a_connected, served_after_a_left, message).
    """
    rng = random.Random(seed)
    a = connect(host, port)
    b = None
    try:
        try:
            run_jobs([EchoJob(a, b"ping", rng, 4, name="client A")], timeout)
        except Failure as e:
            raise ProbeError("client A, alone, was not served: %s" % e)
        a.setblocking(True)
        b = connect(host, port)
        job = EchoJob(b, make_payload(rng, 1024), rng, 1024, name="client B")
        try:
            run_jobs([job], timeout)
            return True, True, "client B was served while client A stayed connected"
        except Failure as e:
            first = str(e)
        a.close()
        a = None
        # B's bytes are already in the kernel; once A leaves, the echo must arrive.
        rest = EchoJob(b, job.payload, rng, 1024, name="client B")
        rest.sent = job.sent
        rest.received = job.received
        try:
            run_jobs([rest], timeout * 2)
            return False, True, "client B waited while A was connected (%s), and was served once A left" % first
        except Failure as e:
            return False, False, "client B waited while A was connected and was not served after: %s" % e
    finally:
        if a is not None:
            a.close()
        if b is not None:
            b.close()


def hold(host, port, conns, timeout=30.0, stall_after=3.0):
    """Open `conns` connections at once, then echo one byte on every one.

    Returns (all_echoed, message). Uses non-blocking connects so a server that stops
    accepting costs one wait, not one per connection. The wait ends when everything is
    echoed, when nothing has progressed for `stall_after` seconds (a server that will
    never get there, like an iterative one), or after `timeout` seconds in all: a busy
    machine that forks slowly still gets there, a stuck server is not waited on for long.
    """
    raise_nofile(conns + 64)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < conns + 16:
        raise ProbeError("cannot open %d connections: this client's fd limit is %d (raise `ulimit -n`)" % (conns, soft))
    sel = selectors.DefaultSelector()
    socks = []
    connected = echoed = 0
    try:
        for _ in range(conns):
            s = nonblocking_connect(host, port)
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE)
        end = time.monotonic() + scaled(timeout)
        last_progress = time.monotonic()
        waiting = len(socks)          # connects, then echoes, still outstanding
        while waiting and time.monotonic() < end and time.monotonic() - last_progress < scaled(stall_after):
            for key, events in sel.select(0.2):
                s = key.fileobj
                last_progress = time.monotonic()
                if events & selectors.EVENT_WRITE:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                        sel.unregister(s)
                        waiting -= 1
                        continue
                    connected += 1
                    try:
                        s.send(b"!")
                        sel.modify(s, selectors.EVENT_READ)
                    except OSError:
                        sel.unregister(s)
                        waiting -= 1
                    continue
                sel.unregister(s)
                waiting -= 1
                try:
                    if s.recv(16) == b"!":
                        echoed += 1
                except OSError:
                    pass
    finally:
        sel.close()
        for s in socks:
            s.close()
    return echoed == conns, "%d of %d connections opened, %d echoed" % (connected, conns, echoed)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Failure("no VmRSS for pid %d" % pid)


def backpressure(host, port, pid, size, limit_kib, seed):
    """Client A sends `size` bytes and never reads: the server's memory must stay bounded.

    A server without back-pressure keeps reading A's bytes into an output buffer that A
    never drains, and grows by `size`. Returns a message; raises Failure over the limit.
    """
    before = rss_kib(pid)
    a = connect(host, port)
    try:
        sent = fill_without_reading(a, size)
        grown = rss_kib(pid) - before
        if grown > limit_kib:
            raise Failure("server RSS grew by %d KiB while a client sent %d bytes without reading (limit %d KiB)"
                          % (grown, sent, limit_kib))
        # The server must still serve others meanwhile.
        detail = echo(host, port, 1, 4096, 4096, seed, timeout=3.0)
    finally:
        reset_close(a)
    return "client sent %d bytes without reading; server RSS grew by only %d KiB; others still served (%s)" % (
        sent, grown, detail)


def flood(host, port, conns, hold_secs):
    """Open `conns` connections and just hold them for `hold_secs` seconds (no data)."""
    raise_nofile(conns + 64)
    socks = []
    try:
        for _ in range(conns):
            socks.append(nonblocking_connect(host, port))
        # The caller waits for this line, then measures while the connections are held.
        print("flood: %d connections opened, holding them %.1f s" % (conns, hold_secs), flush=True)
        time.sleep(hold_secs)  # holding the connections is the point; the caller measures meanwhile
        closed = 0
        for s in socks:
            try:
                if s.recv(1) == b"":
                    closed += 1
            except OSError:
                pass
    finally:
        for s in socks:
            s.close()
    return "held %d connections for %.1f s; the server closed %d of them" % (conns, hold_secs, closed)


def slow_drain(host, port, size, rcvbuf, piece, pause_ms, seed, timeout=30.0):
    """Queued output, forced: send `size` bytes as fast as the server takes them while
    reading the echo slowly, `piece` bytes at a time with `pause_ms` between reads, through a
    receive buffer of `rcvbuf` bytes (set before connect, so the window stays small).

    Sending more than every kernel buffer on the way can hold, while reading slower than
    sending, leaves the server no choice: its send() comes up short or says EAGAIN, it
    must queue the rest, wait for writability and flush in pieces (and pause reading
    if it has back-pressure). Every byte is verified. The caller asserts from the
    server's own counters that it did queue.
    """
    rng = random.Random(seed)
    payload = make_payload(rng, size)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(scaled(5.0))
    s.connect((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    got = bytearray()
    sent = 0
    sel = selectors.DefaultSelector()
    registered = 0
    deadline = time.monotonic() + scaled(timeout)
    next_read = 0.0
    try:
        while len(got) < size:
            now = time.monotonic()
            if now > deadline:
                raise Failure("slow reader: %d of %d bytes back after %.0f s (%d sent)"
                              % (len(got), size, scaled(timeout), sent))
            want = (selectors.EVENT_WRITE if sent < size else 0) | (selectors.EVENT_READ if now >= next_read else 0)
            if want != registered:
                if registered and want:
                    sel.modify(s, want)
                elif want:
                    sel.register(s, want)
                else:
                    sel.unregister(s)
                registered = want
            if not want:
                time.sleep(next_read - now)  # the reader's pace, not a readiness wait
                continue
            wait = 0.2 if want & selectors.EVENT_READ else min(0.2, max(0.0, next_read - now))
            for _, ev in sel.select(wait):
                if ev & selectors.EVENT_WRITE:
                    try:
                        sent += s.send(payload[sent:sent + 65536])
                    except BlockingIOError:
                        pass
                if ev & selectors.EVENT_READ:
                    try:
                        chunk = s.recv(piece)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        raise Failure("slow reader: EOF after %d of %d bytes" % (len(got), size))
                    off = len(got)
                    got += chunk
                    if got[off:] != payload[off:len(got)]:
                        bad = next(i for i in range(off, len(got)) if got[i] != payload[i])
                        raise Failure(describe_mismatch(payload, bytes(got), bad))
                    next_read = time.monotonic() + pause_ms / 1000.0
    finally:
        sel.close()
        s.close()
    return "%d bytes echoed to a reader taking %d bytes every %d ms through a %d-byte SO_RCVBUF" % (
        size, piece, pause_ms, rcvbuf)


def _slow_reader_socket(host, port, rcvbuf):
    """A connected socket with a `rcvbuf`-byte receive buffer (set before connect, so the
    window stays small) and Nagle off."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(scaled(5.0))
        s.connect((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        s.close()
        raise
    return s


def _send_in_background(s, payload, shut_wr=False):
    """sendall(payload) on a thread (then shutdown(SHUT_WR) if asked), so that the caller
    can read meanwhile; returns (thread, errors list)."""
    errors = []

    def run():
        try:
            s.sendall(payload)
            if shut_wr:
                s.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def _read_slowly(s, payload, piece, pause_ms, timeout, name, want_eof=False):
    """Read the echo of `payload`, `piece` bytes per recv with `pause_ms` between, verifying
    every byte; with want_eof, then require EOF."""
    got = bytearray()
    size = len(payload)
    deadline = time.monotonic() + scaled(timeout)
    while len(got) < size or want_eof:
        if time.monotonic() > deadline:
            raise Failure("%s: %d of %d bytes back after %.0f s%s" % (
                name, len(got), size, scaled(timeout), ", no EOF" if len(got) == size else ""))
        try:
            chunk = s.recv(piece)
        except socket.timeout:
            continue
        if not chunk:
            if len(got) == size and want_eof:
                return
            raise Failure("%s: EOF after %d of %d bytes" % (name, len(got), size))
        off = len(got)
        got += chunk
        if len(got) > size:
            raise Failure("%s: the server echoed %d bytes, only %d were sent" % (name, len(got), size))
        if got[off:] != payload[off:len(got)]:
            bad = next(i for i in range(off, len(got)) if got[i] != payload[i])
            raise Failure(describe_mismatch(payload, bytes(got), bad))
        time.sleep(pause_ms / 1000.0)  # the reader's pace, not a readiness wait


def drain_idle(host, port, size, rcvbuf, piece, pause_ms, hold_secs, seed, timeout=30.0):
    """A queued echo, then silence: send `size` bytes while reading the echo slowly,
    `piece` bytes at a time with `pause_ms` between reads, through a `rcvbuf`-byte receive
    buffer (as slow-drain does: the server must queue and wait for writability), verify
    every byte, print `drained: ...`, then keep the connection open and silent for
    `hold_secs` seconds and check that the server sent nothing more and kept it open.

    For tests that measure the server while a client it queued for sits idle: a server
    that still watches for writability with nothing to send spins meanwhile.
    """
    payload = make_payload(random.Random(seed), size)
    s = _slow_reader_socket(host, port, rcvbuf)
    try:
        sender, errors = _send_in_background(s, payload)
        _read_slowly(s, payload, piece, pause_ms, timeout, "drain-idle")
        sender.join(scaled(5.0))
        if errors:
            raise Failure("drain-idle: send failed: %s" % errors[0])
        print("drained: %d bytes echoed; holding the connection idle for %.1f s" % (size, hold_secs), flush=True)
        time.sleep(hold_secs)  # holding the idle connection is the point; the caller measures meanwhile
        s.setblocking(False)
        try:
            extra = s.recv(1)
            raise Failure("drain-idle: while idle the server %s" % ("sent more bytes" if extra else "closed the connection"))
        except BlockingIOError:
            pass
    finally:
        s.close()
    return "%d bytes echoed through a %d-byte SO_RCVBUF, then %.1f s idle with the connection open" % (
        size, rcvbuf, hold_secs)


def half_close_slow(host, port, size, rcvbuf, piece, pause_ms, seed, timeout=30.0):
    """Half-close while the echo is still queued in the server: send `size` bytes and
    shutdown(SHUT_WR) as fast as the server takes them, while reading the echo slowly
    through a `rcvbuf`-byte receive buffer. The server sees EOF with output still queued;
    it must send all of it (verified byte for byte), then close (EOF)."""
    payload = make_payload(random.Random(seed), size)
    s = _slow_reader_socket(host, port, rcvbuf)
    try:
        sender, errors = _send_in_background(s, payload, shut_wr=True)
        _read_slowly(s, payload, piece, pause_ms, timeout, "half-close-slow", want_eof=True)
        sender.join(scaled(5.0))
        if errors:
            raise Failure("half-close-slow: send failed: %s" % errors[0])
    finally:
        s.close()
    return "%d bytes sent then shutdown(SHUT_WR); all echoed to a slow reader, then EOF" % size


def tcp_sockets(server_port):
    """Yields (client_port, state, rx_queue, inode) for every socket in /proc/net/tcp{,6} whose
    local port is `server_port`: the server's ends of its connections, seen from outside.
    state is hex as the kernel writes it ("01" ESTABLISHED, "08" CLOSE_WAIT); rx_queue the
    bytes the server has not read yet."""
    for fields in tcp_rows(server_port):
        yield (int(fields[2].rsplit(":", 1)[1], 16), fields[3],
               int(fields[4].split(":")[1], 16), fields[9])


def tcp_rows(server_port):
    """The /proc/net/tcp{,6} lines (split in fields) whose local port is `server_port`."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == server_port:
                yield fields


def server_rx_queue(server_port, client_port):
    """Bytes waiting unread in the server-side socket of this connection, or None if not found."""
    for port, _, rx, _ in tcp_sockets(server_port):
        if port == client_port:
            return rx
    return None


def server_tx_queue(server_port, client_port):
    """Bytes the server-side socket of this connection holds unsent or unacknowledged
    (/proc/net/tcp tx_queue), or None if not found."""
    for fields in tcp_rows(server_port):
        if int(fields[2].rsplit(":", 1)[1], 16) == client_port:
            return int(fields[4].split(":")[0], 16)
    return None


def server_tcp_state(server_port, client_port):
    """The TCP state (hex, as in /proc/net/tcp: "01" ESTABLISHED, "08" CLOSE_WAIT) of the
    server-side socket of this connection, or None if not found."""
    for port, state, _, _ in tcp_sockets(server_port):
        if port == client_port:
            return state
    return None


def wait_stopped(pid, timeout=3.0):
    """Waits until every thread of process PID is stopped (state T in
    /proc/PID/task/*/stat). kill(SIGSTOP) returns before the stop takes effect: the
    process stops only when it next runs, and until then a busy machine may let it take
    one more event. epoll_wait, woken by the signal, harvests any ready event before it
    looks at the signal: bytes sent right after kill() could be taken as one edge before
    the stop and the rest as a second edge after it, hiding a missing re-arm."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        states = []
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                pass  # a thread that just exited
        if states and all(st in ("T", "t") for st in states):
            return
        if time.monotonic() > deadline:
            raise Failure("process %d did not stop within %.1f s of SIGSTOP (states %s)"
                          % (pid, scaled(timeout), " ".join(states)))
        time.sleep(0.001)  # poll interval of a loop with a deadline


def stopped_burst(host, port, pid, size, seed, then_eof=False, timeout=3.0, term=False, warm_up=0):
    """A burst that must wait in the kernel until the server reads it: connect, prove the
    server serves us (a 1-byte echo), SIGSTOP the server, send `size` bytes (and, with
    `then_eof`, our FIN), wait until the server's socket holds them all unread
    (/proc/net/tcp: the bytes in its receive queue, CLOSE_WAIT once the FIN is in), SIGCONT
    it, then expect the whole echo (and then EOF) within `timeout` seconds while sending
    nothing more.

    With `term`, SIGTERM is sent too while the server is stopped (it finds the signal and the
    unread burst together when it runs again): a stopping server still reads, echoes, and then
    closes (EOF) a client whose bytes had arrived; the whole echo must come back, then EOF.
    `warm_up` bytes echoed in 64 KiB round trips first let the kernel grow the server's
    receive buffer (autotuning), so that a burst of several reads' worth fits in it.

    For an edge-triggered server: the bytes (and the FIN) arrived as one edge. With a read
    budget smaller than the burst, the bytes left after the budget are reported again only
    if the server re-arms. With a burst smaller than one read, the read comes back short,
    and a server that takes that as "empty" must know the FIN is in (EPOLLRDHUP) or it
    never reads the EOF. Either way, nothing else will wake it.
    """
    rng = random.Random(seed)
    payload = make_payload(rng, size)
    s = connect(host, port)
    stopped = False
    got = bytearray()
    try:
        s.sendall(b"!")
        if s.recv(1) != b"!":
            raise Failure("no 1-byte echo before the burst")
        block = b"w" * 65536
        s.settimeout(scaled(timeout))
        for _ in range(warm_up // len(block)):
            s.sendall(block)
            n = 0
            while n < len(block):
                chunk = s.recv(len(block) - n)
                if not chunk:
                    raise Failure("EOF during the warm-up")
                n += len(chunk)
        client_port = s.getsockname()[1]
        os.kill(pid, 19)  # SIGSTOP
        stopped = True
        wait_stopped(pid)  # then the whole burst is one edge
        s.sendall(payload)  # fits in the server's receive buffer, or times out
        if then_eof:
            s.shutdown(socket.SHUT_WR)
        # The FIN takes one sequence number: the receive queue then counts it too.
        queued = size + (1 if then_eof else 0)
        deadline = time.monotonic() + scaled(timeout)
        while (server_rx_queue(port, client_port) != queued
               or (then_eof and server_tcp_state(port, client_port) != "08")):
            if time.monotonic() > deadline:
                raise Failure("the stopped server's socket holds %s of the %d bytes sent: send fewer"
                              % (server_rx_queue(port, client_port), queued))
            time.sleep(0.01)  # poll interval of a loop with a deadline
        if term:
            os.kill(pid, 15)  # SIGTERM: pending until the server runs again
        os.kill(pid, 18)  # SIGCONT
        stopped = False
        s.settimeout(scaled(timeout))
        deadline = time.monotonic() + scaled(timeout)
        while len(got) < size:
            try:
                chunk = s.recv(262144)
            except socket.timeout:
                chunk = None
            except ConnectionResetError:
                if not term:
                    raise
                raise Failure("%d of the %d bytes of the burst came back, then a reset: the server "
                              "closed with the rest of the burst unread" % (len(got), size))
            if not chunk or time.monotonic() > deadline:
                raise Failure("%d of the %d bytes of the burst came back within %.1f s (%s)"
                              % (len(got), size, scaled(timeout), "EOF" if chunk == b"" else "then nothing"))
            got += chunk
        if then_eof or term:
            try:
                extra = s.recv(1)
            except socket.timeout:
                raise Failure("the whole echo came back, but no EOF within %.1f s: %s" % (
                    scaled(timeout), "the server never read ours" if then_eof else "the stopping server never closed"))
            if extra:
                raise Failure("more bytes than were sent came back")
    finally:
        if stopped:
            os.kill(pid, 18)
        s.close()
    if bytes(got) != payload:
        bad = next(i for i in range(size) if got[i] != payload[i])
        raise Failure(describe_mismatch(payload, bytes(got), bad))
    return "%d bytes%s sent while the server was stopped%s, all echoed after SIGCONT%s" % (
        size, " and our FIN" if then_eof else "", ", then SIGTERM" if term else "",
        ", then EOF" if then_eof or term else "")


def server_established(server_port, client_ports):
    """How many of `client_ports` have a server-side socket in ESTABLISHED (or CLOSE_WAIT)
    state on `server_port` (/proc/net/tcp{,6}): connections the kernel has completed, whether
    or not the server has accepted them yet."""
    return sum(1 for port, state, _, _ in tcp_sockets(server_port)
               if port in client_ports and state in ("01", "08"))


def backlog(host, port, pid, conns, timeout=5.0):
    """The listen backlog, seen from outside: SIGSTOP the server (so it accepts nobody),
    start `conns` connects at once, and require the kernel to complete every one of them
    (each has a server-side socket in /proc/net/tcp) while the server is stopped; then
    SIGCONT it, close them all, and require one more client to be served.

    A connection the kernel completed waits in the listening socket's accept queue, whose
    length is the backlog given to listen() (capped by net.core.somaxconn). A server that
    asked for a short one (listen(fd, 1)) has its queue full after two: the kernel drops
    the SYNs of the rest, which retry after 1 s, 3 s, 7 s..., and a burst of clients stalls
    even though the server is only busy for a moment."""
    raise_nofile(conns + 64)
    socks = []
    stopped = False
    try:
        os.kill(pid, 19)  # SIGSTOP
        stopped = True
        wait_stopped(pid)
        for _ in range(conns):
            socks.append(nonblocking_connect(host, port))
        ports = set()
        deadline = time.monotonic() + scaled(timeout)
        done = 0
        while True:
            if not ports or len(ports) < conns:
                for s in socks:
                    try:
                        ports.add(s.getsockname()[1])
                    except OSError:
                        pass
            done = server_established(port, ports)
            if done >= conns:
                break
            if time.monotonic() > deadline:
                raise Failure("with the server stopped, the kernel completed %d of %d connections "
                              "within %.1f s: the listen backlog is too short" % (done, conns, scaled(timeout)))
            time.sleep(0.01)  # poll interval of a loop with a deadline
        os.kill(pid, 18)  # SIGCONT
        stopped = False
    finally:
        if stopped:
            os.kill(pid, 18)
        for s in socks:
            s.close()
    detail = echo(host, port, 1, 4096, 4096, 1, timeout=10.0)
    return "%d connections completed by the kernel while the server was stopped; then %s" % (conns, detail)


def drain_on_term_many(host, port, pid, clients, size, seed, timeout=10.0):
    """drain-on-term for several clients at once, one of them gone before the signal: a
    client that connected first is served and leaves (the server has closed its socket),
    then `clients` clients each send `size` bytes reading nothing (a 4 KiB receive window
    keeps most of each echo in the server), SIGTERM once the server has read every byte,
    then every client reads: each must get its own echo, every byte in order, then EOF.

    A drain that walks its connections and skips one (an index off by one, a list broken by
    the close of the one that left) leaves that client without its echo."""
    rng = random.Random(seed)
    leaver = connect(host, port)
    socks, payloads = [], []
    try:
        leaver.sendall(b"!")
        if leaver.recv(1) != b"!":
            raise Failure("no 1-byte echo for the first client")
        for i in range(clients):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(scaled(timeout))
            s.connect((host, port))
            payloads.append(make_payload(rng, size))
        # The one that connected first leaves, and the server must have closed it (its
        # side of the connection is past CLOSE_WAIT) before the signal.
        lport = leaver.getsockname()[1]
        leaver.close()
        leaver = None
        deadline = time.monotonic() + scaled(timeout)
        while server_tcp_state(port, lport) in ("01", "08"):
            if time.monotonic() > deadline:
                raise Failure("the server did not close the connection of the client that left")
            time.sleep(0.01)  # poll interval of a loop with a deadline
        for s, payload in zip(socks, payloads):
            s.sendall(payload)
        for s in socks:
            wait_server_read_all(port, s.getsockname()[1], timeout)
        os.kill(pid, 15)
        for s in socks:  # pending now; read through wide windows (as drain_on_term)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        results = [None] * clients

        def read_all(i):
            got = bytearray()
            try:
                while True:
                    chunk = socks[i].recv(262144)
                    if not chunk:
                        break
                    got += chunk
            except OSError as e:
                results[i] = "client %d: %s after %d of %d bytes" % (i, e, len(got), size)
                return
            if bytes(got) != payloads[i]:
                n = min(len(got), size)
                off = next((j for j in range(n) if got[j] != payloads[i][j]), n)
                if off < n:
                    results[i] = "client %d: %s" % (i, describe_mismatch(payloads[i], bytes(got), off))
                else:
                    results[i] = "client %d: %d of %d pending bytes, then EOF" % (i, len(got), size)

        threads = [threading.Thread(target=read_all, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(scaled(timeout) + 1)
        bad = [r for r in results if r]
        if any(t.is_alive() for t in threads):
            bad.append("a reader did not finish within %.1f s" % scaled(timeout))
        if bad:
            raise Failure("after SIGTERM: " + "; ".join(bad))
    finally:
        if leaver is not None:
            leaver.close()
        for s in socks:
            s.close()
    return "%d clients with %d bytes pending each at SIGTERM (one client gone before it): every byte arrived, then EOF" % (
        clients, size)


def drain_refuses_new(host, port, pid, size, window, log, timeout=10.0):
    """A stopping server accepts nobody: client A leaves `size` bytes of echo pending (a 4 KiB
    receive window, reading none), SIGTERM, and once the server's log (file `log`) says
    `stopping:` (a client that came before the server saw the signal may rightly be served)
    client B connects and sends one byte while the server is still draining A (it cannot
    finish: A reads nothing). For `window` seconds (not scaled: it must end inside the drain)
    B must get no echo; the server must still be running at the end of the window (else the
    check proved nothing: ProbeError). Then A and B are closed."""
    a = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    b = None
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a.settimeout(scaled(timeout))
        a.connect((host, port))
        a.sendall(b"a" * size)
        wait_server_read_all(port, a.getsockname()[1], timeout)
        os.kill(pid, 15)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            with open(log) as f:
                if any(line.startswith("server: stopping:") for line in f):
                    break
            if time.monotonic() > deadline:
                raise Failure("no 'stopping:' line in %s within %.1f s of SIGTERM" % (log, scaled(timeout)))
            time.sleep(0.005)  # poll interval of a loop with a deadline
        b = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        # Not scaled: the window must end inside the server's drain, whose 1 s (DRAIN_MS) no
        # TIMEOUT_SCALE stretches; and an echo to B, the bug, would come within milliseconds.
        b.settimeout(window)
        try:
            b.connect((host, port))
            b.sendall(b"x")
            got = b.recv(1)
        except socket.timeout:
            got = None   # nothing came back: what a stopping server owes a new client
        except OSError:
            got = b""    # refused or reset: the listening socket is gone
        if got:
            raise Failure("a client that connected after SIGTERM got its byte echoed: the stopping server accepted it")
        try:
            with open("/proc/%d/stat" % pid) as f:
                alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            alive = False
        if got is None and not alive:
            raise ProbeError("the server exited before the window ended")
        if got == b"" or not alive:
            raise ProbeError("the drain ended before client B could ask (B got %s)" % ("EOF" if got == b"" else "nothing"))
    finally:
        reset_close(a)
        if b is not None:
            b.close()
    return "client B, connected after SIGTERM while A was still draining, got no echo in %.1f s" % window


class CannotInspect(Exception):
    """This machine does not let us look at another process's socket (no pidfd_getfd, or
    not permitted): the caller skips rather than fails."""


def server_socket_inode(server_port, client_port):
    """The inode of the server-side socket of this connection (/proc/net/tcp{,6}), or None."""
    for port, _, _, inode in tcp_sockets(server_port):
        if port == client_port:
            return inode
    return None


def server_socket_option(pid, server_port, client_port, level, option):
    """getsockopt(level, option) on the server-side socket of this connection, read from
    inside process `pid` or a child of it: find the socket's inode in /proc/net/tcp, the descriptor with that
    inode in /proc/PID/fd, take a copy of it with pidfd_getfd(2) (Linux 5.6; needs the right
    to ptrace PID), ask, and close the copy (the server's own descriptor is untouched). Call
    it while the connection is open: a copy still alive when the server closes its own
    descriptor would keep the socket, and its epoll registration, alive."""
    import ctypes
    inode = server_socket_inode(server_port, client_port)
    if inode is None:
        raise Failure("no server-side socket for client port %d in /proc/net/tcp" % client_port)
    # The server or one of its children (a fork server's child holds the connection).
    holder = target = None
    for p in process_tree(pid):
        try:
            names = os.listdir("/proc/%d/fd" % p)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink("/proc/%d/fd/%s" % (p, name)) == "socket:[%s]" % inode:
                    holder, target = p, int(name)
            except OSError:
                pass
        if target is not None:
            break
    if target is None:
        raise Failure("the server (pid %d) and its children hold no descriptor for socket inode %s" % (pid, inode))
    if not hasattr(os, "pidfd_open"):
        raise CannotInspect("this Python has no os.pidfd_open")
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(holder)
    try:
        copy = libc.syscall(438, pidfd, target, 0)  # SYS_pidfd_getfd
        if copy < 0:
            raise CannotInspect("pidfd_getfd: %s" % os.strerror(ctypes.get_errno()))
    finally:
        os.close(pidfd)
    with socket.socket(fileno=copy) as sk:
        return sk.getsockopt(level, option)


def cloexec(host, port, pid, timeout=5.0):
    """The server's descriptor for a new connection must be close-on-exec (accept4 with
    SOCK_CLOEXEC): read from /proc/P/fdinfo/FD, in the server or any of its children (a fork
    server's child holds it). Nothing is sent, so any protocol will do."""
    with connect(host, port) as s:
        client_port = s.getsockname()[1]
        deadline = time.monotonic() + scaled(timeout)
        while True:
            inode = server_socket_inode(port, client_port)
            found = []
            if inode is not None:
                for p in process_tree(pid):
                    try:
                        names = os.listdir("/proc/%d/fd" % p)
                    except OSError:
                        continue
                    for name in names:
                        try:
                            if os.readlink("/proc/%d/fd/%s" % (p, name)) == "socket:[%s]" % inode:
                                found.append((p, int(name)))
                        except OSError:
                            pass
            if found:
                break
            if time.monotonic() > deadline:
                raise Failure("the server (pid %d) never took this connection: no descriptor for it" % pid)
            time.sleep(0.01)  # poll interval of a loop with a deadline
        bad = []
        for p, fd in found:
            with open("/proc/%d/fdinfo/%d" % (p, fd)) as f:
                flags = next(int(line.split()[1], 8) for line in f if line.startswith("flags:"))
            if not flags & 0o2000000:   # O_CLOEXEC
                bad.append("pid %d fd %d (flags %o)" % (p, fd, flags))
    if bad:
        raise Failure("the server's descriptor for this connection is not close-on-exec: %s" % ", ".join(bad))
    return "the server's descriptor%s for this connection %s close-on-exec (%s)" % (
        "s" if len(found) > 1 else "", "are" if len(found) > 1 else "is",
        ", ".join("pid %d fd %d" % pf for pf in found))


def nodelay(host, port, pid, send=b"!"):
    """A connection the server has served once: its server-side socket must have
    TCP_NODELAY set (asked from inside the server: server_socket_option). `send` is a
    request that gets an answer (an echo server's 1 byte; a line protocol's line; b"" for a
    server that greets first): the first byte back says the server has taken the connection
    and set its options."""
    with connect(host, port) as s:
        if send:
            s.sendall(send)
        first = s.recv(1)
        if not first:
            raise Failure("EOF before the server's first byte (sent %r)" % send)
        if send == b"!" and first != b"!":
            raise Failure("no 1-byte echo")
        value = server_socket_option(pid, port, s.getsockname()[1], socket.IPPROTO_TCP, socket.TCP_NODELAY)
    if not value:
        raise Failure("the server's socket for this client has TCP_NODELAY off (Nagle's algorithm on)")
    return "the server's socket for this client has TCP_NODELAY on"


# ---------------------------------------------------------------------------
# Capability probes (the matrix): each answers yes or no
# ---------------------------------------------------------------------------

def probe_one(host, port, seed):
    try:
        echo(host, port, 1, 1024, 1024, seed, timeout=3.0)
        return True
    except Failure:
        return False


def probe_two_at_once(host, port, seed):
    """yes: B served while A stays; no: B waits, and is served once A leaves; anything else
    (B never served at all) is an error, not a capability."""
    try:
        now, later, msg = stall(host, port, seed, timeout=1.5)
    except Failure as e:
        raise ProbeError(str(e))
    if not now and not later:
        raise ProbeError(msg)
    return now


def probe_hold_1100(host, port, seed):
    try:
        return hold(host, port, 1100)[0]
    except Failure:
        return False


def probe_slow_reader(host, port, seed):
    try:
        return slow_reader(host, port, 64 << 20, seed, timeout=2.0)[0]
    except Failure:
        return False


def probe_reset(host, port, seed):
    try:
        reset(host, port, 8 << 20, seed, timeout=3.0)
        return True
    except Failure:
        return False


# Order and wording here are the matrix's columns.
PROBES = [
    ("one", "serves one client", probe_one),
    ("two_at_once", "serves 2+ clients at once", probe_two_at_once),
    ("hold_1100", "holds 1100 connections", probe_hold_1100),
    ("slow_reader", "keeps serving others while one client stops reading", probe_slow_reader),
    ("reset", "survives a client reset", probe_reset),
]


# ---------------------------------------------------------------------------
# Memory per connection
# ---------------------------------------------------------------------------

def process_tree(pid):
    """pid and all its descendants (via /proc/PID/task/*/children)."""
    if not os.path.exists("/proc/self/task/%d/children" % os.getpid()):
        raise Failure("this kernel has no /proc/PID/task/TID/children: cannot find child processes")
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, tid)) as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def pss_kib(pid):
    """Proportional set size of pid and its descendants: shared pages are split, not double counted.

    Raises Failure when the server's own smaps_rollup cannot be read (an old kernel, no
    permission): a memory check that reads 0 would pass without measuring anything.
    A child that exits meanwhile is skipped."""
    total = 0
    for p in process_tree(pid):
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                found = False
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        found = True
                if not found and p == pid:
                    raise Failure("/proc/%d/smaps_rollup has no Pss line: cannot measure memory" % pid)
        except OSError as e:
            if p == pid:
                raise Failure("cannot read /proc/%d/smaps_rollup (%s): cannot measure memory" % (pid, e))
    return total


def mem(host, port, pid, conns, settle=0.5):
    """PSS before and after `conns` idle (but echo-verified) connections; returns bytes per connection."""
    before = pss_kib(pid)
    raise_nofile(conns + 64)
    socks = []
    try:
        rng = random.Random(1)
        for i in range(conns):
            s = connect(host, port)
            socks.append(s)
        # Make sure every connection is really being served (threads started, children forked).
        run_jobs([EchoJob(s, b"m", rng, 1, name="client %d" % i) for i, s in enumerate(socks)], 20.0)
        time.sleep(settle)  # let the kernel account the pages; a measurement pause, not a readiness wait
        after = pss_kib(pid)
        procs = len(process_tree(pid))
    finally:
        for s in socks:
            s.close()
    per = (after - before) * 1024 / conns
    return per, "PSS %d KiB -> %d KiB with %d connections (%d processes): %.1f KiB per connection" % (
        before, after, conns, procs, per / 1024)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

# Restored: removed by mistake in 04cfc56 (the tcp_sockets refactor); drain-on-term,
# pause-read, reset-idle and round-trips still call them.
def wait_server_read_all(server_port, client_port, timeout):
    deadline = time.monotonic() + scaled(timeout)
    while True:
        q = server_rx_queue(server_port, client_port)
        if q == 0:
            return
        if time.monotonic() > deadline:
            raise Failure("the server left %s bytes unread in its socket for %.1f s" % (q, scaled(timeout)))
        time.sleep(0.01)  # poll interval of a loop with a deadline


def reset_in_close_wait(host, port, pid, size, seed, timeout=20.0):
    """SIGPIPE never kills a server. Send `size` bytes reading nothing (a 4 KiB receive
    buffer: the echo stays queued in the server), half-close, wait until the server has read
    every byte and our FIN (its socket: nothing unread, CLOSE_WAIT) with its echo still
    queued, then reset (SO_LINGER 0). A reset that finds a socket in CLOSE_WAIT leaves EPIPE
    as its error (Linux's tcp_reset), so the server's next send() to us fails with EPIPE, and
    raises SIGPIPE, whose default action ends the process, unless it is ignored (or the send
    says MSG_NOSIGNAL). The server must still be running after it and serve a new client.
    Proves the path: the echo must still be queued in the server when we reset (its socket's
    send queue not empty, or the server blocked in a send)."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(scaled(timeout))
        s.connect((host, port))
        s.sendall(make_payload(random.Random(seed), size))
        s.shutdown(socket.SHUT_WR)
        me = s.getsockname()[1]
        deadline = time.monotonic() + scaled(timeout)
        while True:
            rx, state = server_rx_queue(port, me), server_tcp_state(port, me)
            if rx == 0 and state == "08":
                break
            if rx is None:
                raise Failure("the server closed the connection before it had read our FIN")
            if time.monotonic() > deadline:
                raise Failure("the server left %s bytes unread (state %s) for %.1f s" % (rx, state, scaled(timeout)))
            time.sleep(0.01)  # poll interval of a loop with a deadline
        tx = server_tx_queue(port, me)
        if not tx:
            raise Failure("nothing of the echo was queued in the server's socket when we reset: "
                          "the test proved nothing (send more: --size)")
        reset_close(s)
    finally:
        s.close()
    # The server sends again once the reset is in (it still had echo to send), and meets EPIPE.
    deadline = time.monotonic() + scaled(5)
    while server_tcp_state(port, me) is not None:
        if time.monotonic() > deadline:
            raise Failure("the server kept the reset connection for 5 s: it never sent to it again")
        time.sleep(0.01)  # poll interval of a loop with a deadline
    try:
        os.kill(pid, 0)
        state = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    if state in ("Z", "X", "gone"):
        raise Failure("the server died when it sent to a client that had reset (SIGPIPE not ignored?)")
    # A new client: 4096 bytes (a whole frame for 06's fixed:4096 too), echoed exactly.
    c = connect(host, port)
    try:
        c.settimeout(scaled(timeout))
        msg = make_payload(random.Random(seed + 1), 4096)
        c.sendall(msg)
        got = bytearray()
        while len(got) < len(msg):
            chunk = c.recv(len(msg) - len(got))
            if not chunk:
                break
            got += chunk
    finally:
        c.close()
    if bytes(got) != msg:
        raise Failure("after the reset, a new client got %d of 4096 bytes back, not its echo" % len(got))
    return "reset in CLOSE_WAIT with %d bytes of echo queued in the server's socket; the server lives and served a new client" % tx


def half_close_held(host, port, size, seed, timeout=20.0):
    """Half-close with the echo held in the server itself: send `size` bytes (more than
    tcp_wmem's maximum plus our fixed 64 KiB receive buffer: the caller sizes it) reading
    nothing, then shutdown(SHUT_WR) at once; read nothing until the server has read every
    byte and our FIN (its socket: nothing unread, CLOSE_WAIT), so that it reads our EOF with
    the rest of the echo still in its own output buffer; then read: every byte, then EOF.
    (The server must not be paused meanwhile: start it with a --max-output above `size`.)"""
    payload = make_payload(random.Random(seed), size)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    got = bytearray()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(scaled(timeout))
        s.connect((host, port))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        me = s.getsockname()[1]
        deadline = time.monotonic() + scaled(timeout)
        while True:
            rx, state = server_rx_queue(port, me), server_tcp_state(port, me)
            if rx is None or (rx == 0 and state in ("08", "09")):
                break   # read to our FIN (or closed already: what it sent is all we get)
            if time.monotonic() > deadline:
                raise Failure("the server left %s bytes unread (state %s) for %.1f s" % (rx, state, scaled(timeout)))
            time.sleep(0.01)  # poll interval of a loop with a deadline
        while True:
            try:
                chunk = s.recv(262144)
            except ConnectionResetError:
                raise Failure("reset after %d of %d echoed bytes" % (len(got), size))
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        raise Failure("no EOF within %.1f s (%d of %d bytes back)" % (scaled(timeout), len(got), size))
    finally:
        s.close()
    require_all_back(payload, got, "after our FIN the server sent %d of %d echoed bytes, then closed")
    return "%d bytes echoed after our FIN, read once the server had read it, then EOF" % size


def read_to_eof(s):
    """Everything S receives until the peer's EOF (its timeout bounds each recv)."""
    got = bytearray()
    while True:
        chunk = s.recv(262144)
        if not chunk:
            return bytes(got)
        got += chunk


def wait_signal_taken(pid, signum, timeout):
    """Until signal SIGNUM sent to process PID is pending no more (/proc/PID/status ShdPnd):
    a handler ran, or a signalfd read it. A process that is gone has taken it too."""
    bit = 1 << (signum - 1)
    deadline = time.monotonic() + scaled(timeout)
    while True:
        try:
            with open("/proc/%d/status" % pid) as f:
                shd = next((int(l.split()[1], 16) for l in f if l.startswith("ShdPnd:")), 0)
        except (OSError, ValueError):
            return
        if not shd & bit:
            return
        if time.monotonic() > deadline:
            raise Failure("signal %d still pending for process %d after %.1f s" % (signum, pid, scaled(timeout)))
        time.sleep(0.002)  # poll interval of a loop with a deadline


def drain_on_term(host, port, pid, size, seed, timeout=5.0):
    """Leave output pending in the server, SIGTERM it, then read: every byte must arrive, then EOF."""
    rng = random.Random(seed)
    payload = make_payload(rng, size)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    got = bytearray()
    try:
        # A small receive window keeps most of the reply pending in the server, not in our kernel.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(scaled(timeout))
        s.connect((host, port))
        s.sendall(payload)
        # SIGTERM only once the server has read every byte we sent (its socket's receive
        # queue, seen from outside in /proc/net/tcp, is empty): what it must flush is then
        # in its own buffers, and the test does not race the server's reads.
        wait_server_read_all(port, s.getsockname()[1], timeout)
        os.kill(pid, 15)
        # Only once the server has taken the signal (no longer pending for it): opened
        # before, the window let a loaded server, not yet woken for the signal, flush
        # everything first, and nothing was pending at SIGTERM (seen at load 20).
        wait_signal_taken(pid, 15, timeout)
        # Pending now; read it through a wide window: 8 MiB through 4 KiB takes 0.6 s alone,
        # past the server's 1 s drain at load (then the test fails for the machine's sake).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        while True:
            chunk = s.recv(262144)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        raise Failure("no EOF within %.1f s after SIGTERM (%d of %d bytes back)" % (scaled(timeout), len(got), size))
    finally:
        s.close()
    require_all_back(payload, got, "after SIGTERM the server sent %d of %d pending bytes, then closed")
    return "%d bytes pending at SIGTERM all arrived, then EOF" % size


def drain_paused_on_term(host, port, pid, size, server_err, seed, timeout=10.0):
    """SIGTERM while the server has stopped reading this client (back-pressure: its replies
    are over --max-output), with requests still waiting in the server and in the kernel.

    Send (at most `size` bytes) reading nothing through a 4 KiB window, 64 KiB at a time,
    until the server logs that it stopped reading ("not reading until it drains"); send no
    more, SIGTERM it, end our write side, then read. What arrives must be the echo of a prefix
    of what was sent, in order, then EOF. (Sending stops at the pause so that what the server
    must throw away after its FIN stays under its linger bound: past it, its close would reset
    the connection and destroy replies still in flight.) The caller checks from the server's
    log that it decoded nothing after the signal: a paused client resumed in the drain would
    be answered for requests that were waiting."""
    payload = make_payload(random.Random(seed), size)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(scaled(timeout))
    s.connect((host, port))
    got = bytearray()
    sent = 0
    try:
        s.setblocking(False)
        deadline = time.monotonic() + scaled(timeout)
        lport = s.getsockname()[1]

        def paused():
            with open(server_err) as f:
                return "not reading until it drains" in f.read()

        # 64 KiB at a time, the next only once the server has read the last (its socket's
        # receive queue empty in /proc/net/tcp) or has paused: at the pause, at most one
        # piece waits in its kernel besides its own input buffer.
        while not paused():
            if time.monotonic() > deadline or sent == size:
                raise Failure("the server never stopped reading (no 'not reading until it drains' line; %d of %d bytes sent)"
                              % (sent, size))
            if select.select([], [s], [], 0.05)[1]:
                try:
                    sent += s.send(payload[sent:sent + 65536])
                except BlockingIOError:
                    pass
            while server_rx_queue(port, lport) and not paused():
                if time.monotonic() > deadline:
                    raise Failure("the server neither read nor paused within %.0f s" % scaled(timeout))
                time.sleep(0.002)  # poll interval of a loop with a deadline
        os.kill(pid, 15)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(scaled(timeout))
        try:
            while True:
                chunk = s.recv(262144)
                if not chunk:
                    break
                got += chunk
        except socket.timeout:
            raise Failure("no EOF within %.1f s after SIGTERM (%d bytes back)" % (scaled(timeout), len(got)))
        except ConnectionResetError:
            raise Failure("the connection was reset after %d of the %d bytes sent came back: replies destroyed"
                          % (len(got), sent))
    finally:
        s.close()
    n = min(len(got), sent)
    off = next((i for i in range(n) if got[i] != payload[i]), n)
    if off < n or len(got) > sent:
        raise Failure(describe_mismatch(payload[:sent], bytes(got), off))
    print("drain-paused: %d bytes back of %d sent, then EOF" % (len(got), sent), flush=True)
    return "%d of %d bytes echoed after SIGTERM to a client the server had paused, then EOF" % (len(got), sent)


def pause_read(host, port, size, resume_file, seed, timeout=10.0):
    """Send random bytes without reading until the server stops taking them (it is then
    blocked in send() towards us), print `stalled: ...`, wait until `resume_file` exists
    (the caller signals the server meanwhile), then half-close and read: the echo of every
    byte sent must come back in order, then EOF.

    For tests of a blocking send() cut short by a signal: a send_all that drops the rest of
    a short count, or gives up on EINTR, loses bytes here.
    """
    rng = random.Random(seed)
    payload = make_payload(rng, size)
    s = connect(host, port)
    sent = 0
    got = bytearray()
    try:
        s.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_WRITE)
        deadline = time.monotonic() + scaled(timeout)
        # Stalled: unwritable for 0.3 s, so every buffer between us and the server is full.
        while sent < size and time.monotonic() < deadline and sel.select(scaled(0.3)):
            try:
                sent += s.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
        sel.close()
        if sent == size:
            raise Failure("the server took all %d bytes without stalling: send more" % size)
        print("stalled: sent %d bytes, reading none" % sent, flush=True)
        deadline = time.monotonic() + scaled(timeout)
        while not os.path.exists(resume_file):
            if time.monotonic() > deadline:
                raise Failure("%s did not appear within %.0f s" % (resume_file, scaled(timeout)))
            time.sleep(0.02)  # poll interval of a loop with a deadline
        s.setblocking(True)
        s.settimeout(scaled(timeout))
        s.shutdown(socket.SHUT_WR)
        while True:
            try:
                chunk = s.recv(262144)
            except socket.timeout:
                raise Failure("no EOF within %.0f s: %d of %d bytes back" % (scaled(timeout), len(got), sent))
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    n = min(len(got), sent)
    bad = next((i for i in range(n) if got[i] != payload[i]), None)
    if bad is not None:
        raise Failure(describe_mismatch(payload[:sent], bytes(got), bad))
    if len(got) != sent:
        raise Failure("%d of the %d bytes sent came back, then EOF" % (len(got), sent))
    return "%d bytes sent before reading, all echoed in order after the pause" % sent


def reset_idle(host, port, seed, timeout=5.0):
    """Echo one byte, then reset (SO_LINGER 0) while the server waits in recv() for more:
    its recv() fails with ECONNRESET. Then a new client must be served."""
    with connect(host, port, timeout) as s:
        s.sendall(b"r")
        if s.recv(1) != b"r":
            raise Failure("no echo of the first byte")
        reset_close(s)
    detail = echo(host, port, 1, 4096, 4096, seed, timeout)
    return "reset an idle connection; next client served (%s)" % detail


def round_trips(host, port, size, count, within):
    """`count` messages of `size` bytes, one at a time on one connection (send one, read its
    whole echo, send the next); FAIL if they take more than `within` seconds (scaled).

    With a size just above the server's read buffer, each echo leaves the server in two
    send()s, the second one short. With Nagle's algorithm on (no TCP_NODELAY on the
    server's socket) that short piece waits for our delayed ACK, about 40 ms per message on
    Linux: 50 messages then take 2 s instead of a few ms.
    """
    msg = bytes(range(256)) * (size // 256) + bytes(size % 256)
    with connect(host, port, timeout=within) as s:
        t0 = time.monotonic()
        for i in range(count):
            s.sendall(msg)
            got = bytearray()
            while len(got) < size:
                chunk = s.recv(size - len(got))
                if not chunk:
                    raise Failure("EOF after %d of %d bytes of message %d" % (len(got), size, i))
                got += chunk
            if got != msg:
                bad = next(j for j in range(size) if got[j] != msg[j])
                raise Failure(describe_mismatch(msg, bytes(got), bad))
        took = time.monotonic() - t0
    if took > scaled(within):
        raise Failure("%d round trips of %d bytes took %.2f s (%.1f ms each; allowed %.2f s): "
                      "does each reply wait for a delayed ACK (Nagle)?"
                      % (count, size, took, took * 1000 / count, scaled(within)))
    return "%d round trips of %d bytes in %.3f s (%.2f ms each)" % (count, size, took, took * 1000 / count)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="netkit", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--seed", type=int, default=None, help="random seed (default: from NETKIT_SEED or time)")
        return p

    p = add("echo", "K connections in turn, random sizes, random splits, byte-exact echo")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--max-size", type=int, default=1 << 20)
    p.add_argument("--max-piece", type=int, default=65536)
    p = add("concurrent", "N connections opened first, then all echo at once")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--size", type=int, default=16384)
    p = add("half-close", "send, shutdown(SHUT_WR), expect the whole echo then EOF")
    p.add_argument("--size", type=int, default=1 << 20)
    p = add("reset", "reset (SO_LINGER 0) mid-stream, then a new client must be served")
    p.add_argument("--size", type=int, default=8 << 20)
    p = add("reset-after-send", "K clients each send B bytes and reset at once; then a new client must be served")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--size", type=int, default=1000)
    p = add("slow-reader", "client A never reads; client B must be served (or, --expect-stall, must not)")
    p.add_argument("--size", type=int, default=64 << 20)
    p.add_argument("--expect-stall", action="store_true")
    p = add("stuck", "send until the server stops taking bytes, print 'stuck: ...', hold, reset")
    p.add_argument("--size", type=int, default=64 << 20)
    p.add_argument("--hold", type=float, default=5.0)
    p = add("stall", "A connected: is B served now (--expect served) or only after A leaves (--expect waits)?")
    p.add_argument("--expect", choices=["served", "waits"], required=True)
    p = add("hold", "open N connections at once, echo one byte on each")
    p.add_argument("--conns", type=int, default=1100)
    p = add("backpressure", "client A sends a lot and never reads: server memory must stay bounded")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--size", type=int, default=64 << 20)
    p.add_argument("--limit-kib", type=int, default=16384)
    p = add("flood", "open N connections and hold them (no data) for S seconds")
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--hold", type=float, default=3.0)
    p = add("slow-drain", "send a lot while reading slowly through a small SO_RCVBUF: the server must queue")
    p.add_argument("--size", type=int, default=8 << 20)
    p.add_argument("--rcvbuf", type=int, default=4096)
    p.add_argument("--piece", type=int, default=16384)
    p.add_argument("--pause-ms", type=int, default=1)
    p = add("drain-idle", "slow-drain's queued echo, then print 'drained: ...' and hold the connection idle")
    p.add_argument("--size", type=int, default=4 << 20)
    p.add_argument("--rcvbuf", type=int, default=4096)
    p.add_argument("--piece", type=int, default=16384)
    p.add_argument("--pause-ms", type=int, default=1)
    p.add_argument("--hold", type=float, default=3.0)
    p = add("half-close-slow", "send, shutdown(SHUT_WR), read the echo slowly: all of it, then EOF")
    p.add_argument("--size", type=int, default=8 << 20)
    p.add_argument("--rcvbuf", type=int, default=4096)
    p.add_argument("--piece", type=int, default=16384)
    p.add_argument("--pause-ms", type=int, default=1)
    p = add("half-close-held", "send, shutdown(SHUT_WR), read only once the server has read it all: all, then EOF")
    p.add_argument("--size", type=int, default=8 << 20)
    p = add("reset-in-close-wait", "half-close, then reset while the echo is queued: the server's next send meets EPIPE (SIGPIPE); it lives and serves")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--size", type=int, default=2 << 20)
    p = add("drain-on-term", "leave output pending, SIGTERM the server: everything must still arrive")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--size", type=int, default=4 << 20)
    p = add("drain-paused-on-term", "SIGTERM while the server has paused reading this client: a prefix echoed, then EOF")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--server-err", required=True)
    p.add_argument("--size", type=int, default=4 << 20)
    p = add("probe", "one capability probe; prints yes or no")
    p.add_argument("name", choices=[n for n, _, _ in PROBES])
    p = add("probe-all", "every capability probe; prints NAME=yes|no per line")
    p = add("pause-read", "send without reading until the server stalls, wait for a file, then read: every byte back")
    p.add_argument("--size", type=int, default=64 << 20)
    p.add_argument("--resume-file", required=True)
    p = add("reset-idle", "echo a byte, reset while the server waits in recv(), then a new client must be served")
    p = add("round-trips", "N messages one at a time on one connection, within S seconds (Nagle check)")
    p.add_argument("--size", type=int, default=16500)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--within", type=float, default=0.5)
    p = add("stopped-burst", "SIGSTOP the server, send a burst it must find in the kernel, SIGCONT: all echoed")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--size", type=int, default=100000)
    p.add_argument("--then-eof", action="store_true", help="send our FIN with the burst; expect EOF after the echo")
    p.add_argument("--term", action="store_true", help="SIGTERM the stopped server too; expect the whole echo, then EOF")
    p.add_argument("--warm-up", type=int, default=0, help="echo this many bytes first (the server's receive buffer grows)")
    p = add("cloexec", "the server's descriptor for a new connection is close-on-exec (/proc fdinfo)")
    p.add_argument("--pid", type=int, required=True)
    p = add("nodelay", "the server's socket for a served client must have TCP_NODELAY (looked at with pidfd_getfd)")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--send", default="!", help="a request that gets an answer (\\n for a newline; '' for a server that greets first)")
    p = add("backlog", "SIGSTOP the server, connect N at once: the kernel must complete all N (listen backlog)")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--conns", type=int, default=100)
    p = add("drain-on-term-many", "one client leaves, N leave output pending, SIGTERM: each gets every byte, then EOF")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--size", type=int, default=2 << 20)
    p = add("drain-refuses-new", "leave output pending, SIGTERM, then a new client must get no echo while the server drains")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--size", type=int, default=8 << 20)
    p.add_argument("--window", type=float, default=0.3)
    p.add_argument("--log", required=True, help="the server's stderr: B connects once it says 'stopping:'")
    p = add("mem", "memory (PSS of PID and children) per idle connection")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--conns", type=int, default=100)

    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else int(os.environ.get("NETKIT_SEED", time.time_ns() % 1000000))
    h, port = a.host, a.port
    try:
        if a.cmd == "echo":
            msg = echo(h, port, a.count, a.max_size, a.max_piece, seed)
        elif a.cmd == "concurrent":
            msg = concurrent(h, port, a.clients, a.size, seed)
        elif a.cmd == "half-close":
            msg = half_close(h, port, a.size, seed)
        elif a.cmd == "reset":
            msg = reset(h, port, a.size, seed)
        elif a.cmd == "reset-after-send":
            msg = reset_after_send(h, port, a.count, a.size, seed)
        elif a.cmd == "slow-reader":
            served, msg = slow_reader(h, port, a.size, seed)
            if served == a.expect_stall:
                raise Failure(msg)
        elif a.cmd == "stuck":
            msg = stuck(h, port, a.size, a.hold)
        elif a.cmd == "stall":
            now, later, msg = stall(h, port, seed)
            if a.expect == "served" and not now:
                raise Failure(msg)
            if a.expect == "waits" and (now or not later):
                raise Failure(msg)
        elif a.cmd == "hold":
            good, msg = hold(h, port, a.conns)
            if not good:
                raise Failure(msg)
        elif a.cmd == "backpressure":
            msg = backpressure(h, port, a.pid, a.size, a.limit_kib, seed)
        elif a.cmd == "flood":
            msg = flood(h, port, a.conns, a.hold)
        elif a.cmd == "slow-drain":
            msg = slow_drain(h, port, a.size, a.rcvbuf, a.piece, a.pause_ms, seed)
        elif a.cmd == "drain-idle":
            msg = drain_idle(h, port, a.size, a.rcvbuf, a.piece, a.pause_ms, a.hold, seed)
        elif a.cmd == "half-close-slow":
            msg = half_close_slow(h, port, a.size, a.rcvbuf, a.piece, a.pause_ms, seed)
        elif a.cmd == "half-close-held":
            msg = half_close_held(h, port, a.size, seed)
        elif a.cmd == "reset-in-close-wait":
            msg = reset_in_close_wait(h, port, a.pid, a.size, seed)
        elif a.cmd == "drain-on-term":
            msg = drain_on_term(h, port, a.pid, a.size, seed)
        elif a.cmd == "drain-paused-on-term":
            msg = drain_paused_on_term(h, port, a.pid, a.size, a.server_err, seed)
        elif a.cmd == "probe":
            fn = next(f for n, _, f in PROBES if n == a.name)
            print("yes" if fn(h, port, seed) else "no")
            return 0
        elif a.cmd == "probe-all":
            for name, _, fn in PROBES:
                print("%s=%s" % (name, "yes" if fn(h, port, seed) else "no"), flush=True)
            return 0
        elif a.cmd == "mem":
            _, msg = mem(h, port, a.pid, a.conns)
        elif a.cmd == "nodelay":
            try:
                msg = nodelay(h, port, a.pid, a.send.replace("\\n", "\n").encode())
            except CannotInspect as e:
                print("cannot inspect: %s" % e)
                return 3
        elif a.cmd == "stopped-burst":
            msg = stopped_burst(h, port, a.pid, a.size, seed, a.then_eof, term=a.term, warm_up=a.warm_up)
        elif a.cmd == "pause-read":
            msg = pause_read(h, port, a.size, a.resume_file, seed)
        elif a.cmd == "reset-idle":
            msg = reset_idle(h, port, seed)
        elif a.cmd == "cloexec":
            msg = cloexec(h, port, a.pid)
        elif a.cmd == "backlog":
            msg = backlog(h, port, a.pid, a.conns)
        elif a.cmd == "drain-on-term-many":
            msg = drain_on_term_many(h, port, a.pid, a.clients, a.size, seed)
        elif a.cmd == "drain-refuses-new":
            msg = drain_refuses_new(h, port, a.pid, a.size, a.window, a.log)
        elif a.cmd == "round-trips":
            msg = round_trips(h, port, a.size, a.count, a.within)
    except Failure as e:
        print("FAIL: %s (seed %d; rerun with --seed %d)" % (e, seed, seed))
        return 1
    except ProbeError as e:
        print("FAIL: the probe could not ask its question: %s (seed %d)" % (e, seed))
        return 1
    except OSError as e:
        print("FAIL: %s: %s (seed %d)" % (a.cmd, e, seed))
        return 1
    print("ok: %s" % msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
