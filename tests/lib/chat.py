#!/usr/bin/env python3
"""chat: a client for the chat room (07_chat), a library and a CLI: one thread, selectors, many sockets.

Python 3 standard library only. Every subcommand prints `ok: ...` and exits 0, or prints
`FAIL: ...` (the first violation, precisely) and exits 1. Every wait has a deadline;
TIMEOUT_SCALE (environment, default 1) stretches them all.

  script --step S [--step S ...]
                      a scripted session with named clients A, B, ...; each step is
                        `A+`        connect A and read its `* welcome NAME` line
                        `A> LINE`   A sends LINE
                        `A< LINE`   the next line A receives is exactly LINE
                        `A~ REGEX`  the next line A receives matches REGEX (re.fullmatch)
                        `A.`        A receives EOF next (nothing else first)
                        `A!`        A closes its connection
                        `A raw HEX` A sends these bytes (hex), no newline added
                      `{A}` in a LINE or REGEX is replaced by A's name from its welcome
  storm --clients N --lines M
                      N clients connect (each waits for its welcome, so all N are in the
                      room), then every client sends M lines at once; each must receive
                      every other client's M lines exactly once, in each sender's order,
                      and never its own
  slow --flooders F --lines L --size B
                      a client that never reads (SO_RCVBUF 4 KiB), an observer, and F
                      flooders sending L lines of B bytes each (a window keeps them within
                      what the observer has received): the slow one must be dropped, the
                      observer must see `* NAME dropped (too slow)` and every line in order
  latency --bytes B --probes K --under MS
                      a flooder sends B bytes of short lines as fast as the server takes
                      them while a quiet client sends `/who` probes: every probe answered
                      within MS milliseconds (the probes after the first flood line)
  shutdown --clients N
                      N clients connect, print `shutdown: N connected`, and wait: each must
                      receive `* server shutting down`, then EOF (the test sends SIGTERM)
  catchup --pid PID --lines L --size B --quiet S
                      a reader that reads nothing yet (SO_RCVBUF 4 KiB) and a sender of L
                      lines of B bytes; once a `/who` reply proves the server has queued them
                      all, the reader reads every line, in order (the server sends the queue
                      on EPOLLOUT); then both stay connected and silent for S s, and PID's
                      CPU time over that window must stay under a third of it: a server that
                      kept EPOLLOUT armed with nothing queued would spin
  idle --wait S       one client, silent: must get `* idle timeout`, then EOF, within S s
  drain --pid PID --lines L --size B
                      a reader that reads nothing yet (SO_RCVBUF 4 KiB) and a sender of L
                      lines of B bytes; once a `/who` reply proves the server has queued them
                      all, SIGTERM to PID; then the reader must get every line, in order,
                      then `* server shutting down`, then EOF
"""

import argparse
import os
import re
import selectors
import socket
import sys
import time

TIMEOUT_SCALE = float(os.environ.get("TIMEOUT_SCALE", "1") or "1")


class Failure(Exception):
    """A check did not hold; the message says what was expected and what happened."""


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


class Client:
    """One chat connection: non-blocking, lines in, lines out, driven by a Room's selector."""

    def __init__(self, room, label, rcvbuf=None):
        self.room = room
        self.label = label
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(scaled(5))
        s.connect((room.host, room.port))
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.inbuf = b""
        self.lines = []       # received, not consumed yet (str, without "\n")
        self.outbuf = b""
        self.eof = False
        self.reading = True   # False: never read (the slow consumer)
        self.name = None
        self.nbytes = 0
        self.on_line = None   # callback(client, line) instead of queueing lines
        self.discard = False  # True: count the bytes, split nothing (a flooder's replies)
        room.add(self)

    def send(self, data):
        self.outbuf += data
        self.room.update(self)

    def send_line(self, line):
        self.send(line.encode() + b"\n")

    def _readable(self):
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            self.room.update(self)
            return
        self.nbytes += len(data)
        if self.discard:
            return
        self.inbuf += data
        if b"\n" not in data:
            return
        *whole, self.inbuf = self.inbuf.split(b"\n")
        for raw in whole:
            line = raw.decode("utf-8", "replace")
            if self.on_line is not None:
                self.on_line(self, line)
            else:
                self.lines.append(line)

    def _writable(self):
        try:
            n = self.sock.send(self.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        self.outbuf = self.outbuf[n:]
        self.room.update(self)

    def events(self):
        ev = 0
        if self.reading and not self.eof:
            ev |= selectors.EVENT_READ
        if self.outbuf:
            ev |= selectors.EVENT_WRITE
        return ev

    def close(self):
        self.room.remove(self)
        self.sock.close()


class Room:
    """Many clients, one selector, one thread."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.sel = selectors.DefaultSelector()
        self.clients = []
        self.registered = {}

    def add(self, c):
        self.clients.append(c)
        self.update(c)

    def update(self, c):
        ev = c.events()
        have = self.registered.get(c)
        if have == ev:
            return
        if have:
            if ev:
                self.sel.modify(c.sock, ev, c)
            else:
                self.sel.unregister(c.sock)
        elif ev:
            self.sel.register(c.sock, ev, c)
        self.registered[c] = ev

    def remove(self, c):
        if self.registered.get(c):
            self.sel.unregister(c.sock)
        self.registered.pop(c, None)
        self.clients.remove(c)

    def pump(self, timeout):
        for key, mask in self.sel.select(timeout):
            c = key.data
            if mask & selectors.EVENT_READ:
                c._readable()
            if mask & selectors.EVENT_WRITE and c.outbuf:
                c._writable()

    def run_until(self, cond, seconds, what):
        """Pumps until cond() is true; Failure(what()) when the deadline passes."""
        deadline = time.monotonic() + scaled(seconds)
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(what() if callable(what) else what)
            self.pump(min(left, 0.05))

    def next_line(self, c, seconds=5.0):
        self.run_until(lambda: c.lines or c.eof, seconds,
                       lambda: "%s: no line within %.1f s (received so far: %r)"
                       % (c.label, scaled(seconds), c.inbuf[-200:]))
        if not c.lines:
            raise Failure("%s: EOF, wanted a line" % c.label)
        return c.lines.pop(0)

    def welcome(self, c, seconds=5.0):
        line = self.next_line(c, seconds)
        m = re.fullmatch(r"\* welcome (\S+)", line)
        if not m:
            raise Failure("%s: first line %r, want '* welcome NAME'" % (c.label, line))
        c.name = m.group(1)
        return c.name


# --------------------------------------------------------------------------- script

def script(host, port, steps, timeout):
    room = Room(host, port)
    clients = {}
    names = {}

    def subst(text):
        return re.sub(r"\{(\w+)\}", lambda m: names.get(m.group(1), m.group(0)), text)

    for i, step in enumerate(steps, 1):
        m = re.match(r"(\w+?)(\+|> |< |~ |\.|!| raw )(.*)$", step, re.S)
        if not m:
            raise Failure("step %d %r: not a step" % (i, step))
        who, op, arg = m.groups()
        where = "step %d (%s)" % (i, step)
        if op == "+":
            clients[who] = Client(room, who)
            names[who] = room.welcome(clients[who], timeout)
            continue
        c = clients.get(who)
        if c is None:
            raise Failure("%s: no client %s (connect it with %s+)" % (where, who, who))
        if op == "> ":
            c.send_line(subst(arg))
        elif op == " raw ":
            c.send(bytes.fromhex(arg))
        elif op in ("< ", "~ "):
            line = room.next_line(c, timeout)
            want = subst(arg)
            ok = line == want if op == "< " else re.fullmatch(want, line) is not None
            if not ok:
                raise Failure("%s: %s got %r, want %s%r" % (where, who, line,
                              "" if op == "< " else "a match of ", want))
        elif op == ".":
            room.run_until(lambda: c.lines or c.eof, timeout, "%s: %s: no EOF within %.1f s"
                           % (where, who, scaled(timeout)))
            if c.lines:
                raise Failure("%s: %s got %r, want EOF" % (where, who, c.lines[0]))
        elif op == "!":
            c.close()
    return "%d steps, %d clients" % (len(steps), len(clients))


# --------------------------------------------------------------------------- storm

def storm(host, port, nclients, nlines, timeout):
    room = Room(host, port)
    clients = []
    for i in range(nclients):
        c = Client(room, "client%d" % i)
        clients.append(c)
    for c in clients:
        room.welcome(c, timeout)
    by_name = {c.name: c for c in clients}
    # Per receiver: the next sequence number expected from each sender.
    expect = {c.name: {} for c in clients}
    got = {c.name: 0 for c in clients}
    first_error = []

    def on_line(c, line):
        if line.startswith("* "):
            return  # joins and the like
        name, sep, text = line.partition(": ")
        m = re.fullmatch(r"m (\d+)", text)
        if not sep or not m:
            first_error.append("%s (%s) got an unexpected line %r" % (c.label, c.name, line))
            return
        seq = int(m.group(1))
        if name == c.name:
            first_error.append("%s (%s) received its own line %r" % (c.label, c.name, line))
            return
        if name not in by_name:
            first_error.append("%s got a line from unknown sender %r: %r" % (c.name, name, line))
            return
        want = expect[c.name].get(name, 0)
        if seq != want:
            first_error.append("%s: from %s expected line %d, got %d (%s)" % (
                c.name, name, want, seq, "a duplicate or reordered line" if seq < want else
                "line(s) %d..%d lost or reordered" % (want, seq - 1)))
            return
        expect[c.name][name] = want + 1
        got[c.name] += 1

    for c in clients:
        c.on_line = on_line
        # The lines that came with the welcome (joins) were read already: drop them.
        for line in c.lines:
            on_line(c, line)
        c.lines = []
    for c in clients:
        c.send(b"".join(b"m %d\n" % k for k in range(nlines)))
    total = (nclients - 1) * nlines

    def done():
        return first_error or all(n == total for n in got.values())

    def what():
        short = sorted((n, name) for name, n in got.items())[:3]
        return "not every line arrived within %.0f s: the fewest received: %s (want %d each)" % (
            scaled(timeout), ", ".join("%s %d" % (name, n) for n, name in short), total)

    room.run_until(done, timeout, what)
    if first_error:
        raise Failure(first_error[0])
    for c in clients:
        if c.eof:
            raise Failure("%s was disconnected" % c.name)
    return "%d clients x %d lines: %d deliveries, each exactly once and in order, none to its sender" % (
        nclients, nlines, nclients * total)


# --------------------------------------------------------------------------- slow consumer

def slow(host, port, nflooders, nlines, size, window, timeout):
    room = Room(host, port)
    slowc = Client(room, "slow", rcvbuf=4096)
    room.welcome(slowc, timeout)
    slowc.reading = False
    room.update(slowc)
    obs = Client(room, "observer")
    room.welcome(obs, timeout)
    flooders = []
    for i in range(nflooders):
        f = Client(room, "flooder%d" % i)
        room.welcome(f, timeout)
        flooders.append(f)
    by_name = {f.name: f for f in flooders}
    seen = {f.name: 0 for f in flooders}
    dropped = []
    errors = []

    def on_obs(c, line):
        name, sep, text = line.partition(": ")
        if sep and name in by_name:
            seq = int(text.split(" ", 1)[0])
            if seq != seen[name]:
                errors.append("observer: from %s expected line %d, got %d" % (name, seen[name], seq))
            seen[name] = seq + 1
        elif line == "* %s dropped (too slow)" % slowc.name:
            dropped.append(sum(seen.values()))
        elif line.startswith("* ") and line.endswith(" dropped (too slow)"):
            errors.append("observer saw the wrong client dropped: %r" % line)

    obs.on_line = on_obs
    for line in obs.lines:
        on_obs(obs, line)
    obs.lines = []
    for f in flooders:
        f.on_line = lambda c, line: None
    pad = "x" * max(0, size - 12)
    sent = {f.name: 0 for f in flooders}

    def feed():
        for f in flooders:
            # The window: at most WINDOW lines ahead of what the observer has seen, so the
            # observer itself is never the slow one.
            while sent[f.name] < nlines and sent[f.name] - seen[f.name] < window and len(f.outbuf) < 1 << 20:
                f.send(("%d %s" % (sent[f.name], pad)).encode() + b"\n")
                sent[f.name] += 1

    deadline = time.monotonic() + scaled(timeout)
    while errors == [] and any(seen[n] < nlines for n in seen):
        if time.monotonic() > deadline:
            raise Failure("the observer got %s of %d lines per flooder within %.0f s" % (
                sorted(seen.values()), nlines, scaled(timeout)))
        feed()
        room.pump(0.05)
        if obs.eof:
            raise Failure("the observer was disconnected (it reads: only the slow one may be dropped)")
    if errors:
        raise Failure(errors[0])
    if not dropped:
        room.run_until(lambda: dropped, 2, "the observer never saw '* %s dropped (too slow)' "
                       "after all %d lines" % (slowc.name, nlines * nflooders))
    # The slow one: its connection is closed (EOF or reset once it reads).
    slowc.reading = True
    room.update(slowc)
    try:
        room.run_until(lambda: slowc.eof, 5, "the slow client's connection was not closed")
    except ConnectionResetError:
        pass
    total = nflooders * nlines * size
    return "slow client %s dropped after %d lines; observer got all %d lines (%d bytes) in order" % (
        slowc.name, dropped[0], nflooders * nlines, total)


# --------------------------------------------------------------------------- fairness

def latency(host, port, nbytes, probes, under, timeout):
    room = Room(host, port)
    quiet = Client(room, "quiet")
    room.welcome(quiet, timeout)
    flooder = Client(room, "flooder")
    room.welcome(flooder, timeout)
    quiet.lines = []
    # The flood: private messages from the flooder to itself, so that only the flooder
    # receives them (it counts the bytes, nothing more), and the quiet client's replies
    # never wait behind flood lines in its own socket: what the probes measure is the
    # server's turn, not the quiet client's reading.
    flooder.discard = True
    line = ("/msg %s " % flooder.name).encode() + b"f" * 40 + b"\n"
    block = line * (65536 // len(line))
    state = {"sent_at": None, "rtts": []}

    def on_quiet(c, text):
        if text.startswith("* users:") and state["sent_at"] is not None:
            state["rtts"].append((time.monotonic() - state["sent_at"]) * 1000)
            state["sent_at"] = None
        elif not text.startswith("* "):
            raise Failure("quiet: unexpected line %r" % text)

    quiet.on_line = on_quiet
    queued = 0
    deadline = time.monotonic() + scaled(timeout)
    last_probe = 0.0
    while len(state["rtts"]) < probes:
        if time.monotonic() > deadline:
            raise Failure("only %d of %d probes answered within %.0f s (rtts so far: %s)" % (
                len(state["rtts"]), probes, scaled(timeout),
                ", ".join("%.0f" % r for r in state["rtts"])))
        if queued < nbytes and len(flooder.outbuf) < 1 << 20:
            flooder.send(block)
            queued += len(block)
        now = time.monotonic()
        # Probes once the server is answering the flood (the flooder got its first reply).
        if flooder.nbytes > 0 and state["sent_at"] is None and now - last_probe > 0.02:
            quiet.send_line("/who")
            state["sent_at"] = last_probe = now
        room.pump(0.005)
        if quiet.eof or flooder.eof:
            raise Failure("%s was disconnected" % ("quiet" if quiet.eof else "the flooder"))
    still_flooding = queued < nbytes or bool(flooder.outbuf)
    rtts = sorted(state["rtts"])
    desc = "%d /who probes during a flood of %d bytes: worst %.1f ms, median %.1f ms" % (
        probes, queued, rtts[-1], rtts[len(rtts) // 2])
    if rtts[-1] > under:
        raise Failure(desc + "; want every probe under %.0f ms" % under)
    if not still_flooding:
        raise Failure(desc + ": the flood had ended before the last probe, so the probes "
                      "measured nothing; flood more (--bytes)")
    return desc + " (the flood still running)"


# --------------------------------------------------------------------------- shutdown, idle

def shutdown(host, port, n, timeout):
    room = Room(host, port)
    clients = [Client(room, "c%d" % i) for i in range(n)]
    for c in clients:
        room.welcome(c, timeout)
    print("shutdown: %d connected" % n, flush=True)
    for c in clients:
        while True:
            line = room.next_line(c, timeout)
            if line == "* server shutting down":
                break
            if not line.startswith("* "):
                raise Failure("%s: got %r before '* server shutting down'" % (c.name, line))
        room.run_until(lambda: c.lines or c.eof, timeout, "%s: no EOF after shutting down" % c.name)
        if c.lines:
            raise Failure("%s: got %r after '* server shutting down', want EOF" % (c.name, c.lines[0]))
    return "%d clients told '* server shutting down', then EOF" % n


def idle(host, port, wait, timeout):
    room = Room(host, port)
    c = Client(room, "idle")
    room.welcome(c, timeout)
    t0 = time.monotonic()
    line = room.next_line(c, wait)
    if line != "* idle timeout":
        raise Failure("got %r, want '* idle timeout'" % line)
    took = time.monotonic() - t0
    room.run_until(lambda: c.lines or c.eof, 2, "no EOF after '* idle timeout'")
    if c.lines:
        raise Failure("got %r after '* idle timeout', want EOF" % c.lines[0])
    return "'* idle timeout' after %.3f s of silence, then EOF" % took


def stalled_reader(host, port, nlines, size, timeout):
    """A reader with a 4 KiB SO_RCVBUF that stops reading, and a sender that sends it NLINES
    lines of SIZE bytes, then waits for its own /who reply: by then the server has read every
    line and queued what the reader's kernel buffers could not take. Returns (room, reader,
    sender, pad); the reader is not reading yet."""
    room = Room(host, port)
    reader = Client(room, "reader", rcvbuf=4096)
    room.welcome(reader, timeout)
    reader.reading = False
    room.update(reader)
    sender = Client(room, "sender")
    room.welcome(sender, timeout)
    pad = "y" * max(0, size - 12)
    sender.send(b"".join(("%d %s" % (i, pad)).encode() + b"\n" for i in range(nlines)))
    sender.send_line("/who")
    while True:
        line = room.next_line(sender, timeout)
        if line.startswith("* users:"):
            break
    return room, reader, sender, pad


def drain(host, port, pid, nlines, size, timeout):
    import signal
    room, reader, sender, pad = stalled_reader(host, port, nlines, size, timeout)
    os.kill(pid, signal.SIGTERM)
    reader.reading = True
    room.update(reader)
    seq = 0
    while True:
        line = room.next_line(reader, timeout)
        if line.startswith("* "):
            if line == "* server shutting down":
                break
            continue  # the sender's join
        name, _, text = line.partition(": ")
        got = int(text.split(" ", 1)[0])
        if name != sender.name or got != seq:
            raise Failure("reader: got line %d from %s, want line %d from %s" % (got, name, seq, sender.name))
        seq += 1
    if seq != nlines:
        raise Failure("reader: '* server shutting down' after %d of %d lines" % (seq, nlines))
    room.run_until(lambda: reader.lines or reader.eof, timeout, "reader: no EOF after shutting down")
    if reader.lines:
        raise Failure("reader: got %r after '* server shutting down', want EOF" % reader.lines[0])
    return "all %d lines (%d bytes) queued at SIGTERM arrived, then '* server shutting down', then EOF" % (
        nlines, nlines * size)


def cpu_ticks(pid):
    """utime + stime of PID, in clock ticks (/proc/PID/stat, fields 14 and 15)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def catchup(host, port, pid, nlines, size, quiet, timeout):
    room, reader, sender, pad = stalled_reader(host, port, nlines, size, timeout)
    reader.reading = True
    room.update(reader)
    seq = 0
    while seq < nlines:
        line = room.next_line(reader, timeout)
        if line.startswith("* "):
            continue  # the sender's join
        name, _, text = line.partition(": ")
        got = int(text.split(" ", 1)[0])
        if name != sender.name or got != seq:
            raise Failure("reader: got line %d from %s, want line %d from %s" % (got, name, seq, sender.name))
        seq += 1
    # Both connected, nothing to send or read: the server has no reason to run.
    hz = os.sysconf("SC_CLK_TCK")
    t0, w0 = cpu_ticks(pid), time.monotonic()
    end = w0 + quiet
    while time.monotonic() < end:  # the measurement window itself, not a readiness wait
        room.pump(end - time.monotonic())
    ticks, wall = cpu_ticks(pid) - t0, time.monotonic() - w0
    if reader.eof or sender.eof or reader.lines or sender.lines:
        raise Failure("the quiet window was not quiet: eof %s/%s, lines %r %r" % (
            reader.eof, sender.eof, reader.lines[:1], sender.lines[:1]))
    if ticks > wall * hz / 3:
        raise Failure("the server used %d CPU ticks in %.2f s of silence (%d ticks/s): it spins"
                      % (ticks, wall, hz))
    return "all %d lines (%d bytes) were queued, then read; then %d CPU ticks in %.2f s of silence" % (
        nlines, nlines * size, ticks, wall)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--timeout", type=float, default=5.0, help="seconds per wait (scaled)")
        return p

    p = add("script", "a scripted session")
    p.add_argument("--step", action="append", required=True)
    p = add("storm", "every client sends, every other one receives")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--lines", type=int, default=20)
    p = add("slow", "a client that never reads while others flood")
    p.add_argument("--flooders", type=int, default=1)
    p.add_argument("--lines", type=int, default=8192)
    p.add_argument("--size", type=int, default=4000)
    p.add_argument("--window", type=int, default=64)
    p = add("latency", "a quiet client's round trip while a flooder floods")
    p.add_argument("--bytes", type=int, default=64 << 20)
    p.add_argument("--probes", type=int, default=10)
    p.add_argument("--under", type=float, default=250.0)
    p = add("shutdown", "clients told the server is shutting down")
    p.add_argument("--clients", type=int, default=3)
    p = add("drain", "output queued at SIGTERM still arrives")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--lines", type=int, default=2048)
    p.add_argument("--size", type=int, default=4000)
    p = add("catchup", "a slow reader catches up; then the server is idle")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--lines", type=int, default=2048)
    p.add_argument("--size", type=int, default=4000)
    p.add_argument("--quiet", type=float, default=1.0)
    p = add("idle", "a silent client is timed out")
    p.add_argument("--wait", type=float, default=3.0)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "script":
            msg = script(a.host, a.port, a.step, a.timeout)
        elif a.cmd == "storm":
            msg = storm(a.host, a.port, a.clients, a.lines, a.timeout)
        elif a.cmd == "slow":
            msg = slow(a.host, a.port, a.flooders, a.lines, a.size, a.window, a.timeout)
        elif a.cmd == "latency":
            msg = latency(a.host, a.port, a.bytes, a.probes, a.under, a.timeout)
        elif a.cmd == "drain":
            msg = drain(a.host, a.port, a.pid, a.lines, a.size, a.timeout)
        elif a.cmd == "catchup":
            msg = catchup(a.host, a.port, a.pid, a.lines, a.size, a.quiet, a.timeout)
        elif a.cmd == "shutdown":
            msg = shutdown(a.host, a.port, a.clients, a.timeout)
        else:
            msg = idle(a.host, a.port, a.wait, a.timeout)
    except (Failure, OSError) as e:
        print("FAIL: %s: %s" % (a.cmd, e), flush=True)
        return 1
    print("ok: %s: %s" % (a.cmd, msg), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
