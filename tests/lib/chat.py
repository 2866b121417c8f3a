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
                        `A#`        A resets its connection (SO_LINGER 0: an RST, no FIN)
                        `A raw HEX` A sends these bytes (hex), no newline added
                        `A got HEX` the next line A receives is exactly these bytes (hex,
                                    without its "\n"): for bytes that are not UTF-8 text
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
  shutdown --clients N [--speak]
                      N clients connect, print `shutdown: N connected`, and wait: each must
                      receive `* server shutting down`, then EOF (the test sends SIGTERM);
                      with --speak each says a line after the notice, which nobody may get
  catchup --pid PID --lines L --size B --quiet S
                      a reader that reads nothing yet (SO_RCVBUF 4 KiB) and a sender of L
                      lines of B bytes; once a `/who` reply proves the server has queued them
                      all, the reader reads every line, in order (the server sends the queue
                      on EPOLLOUT); then both stay connected and silent for S s, and PID's
                      CPU time over that window must stay under a third of it: a server that
                      kept EPOLLOUT armed with nothing queued would spin
  idle --wait S       one client, silent: must get `* idle timeout`, then EOF, within S s
  namehold --pid PID  alice leaves (/quit, then close) and another asks for her name in the
                      same turn (PID stopped while both send): taken until `* alice left`
                      went out, an observer sees nothing else; free after
  idlemem --pid PID --sessions N --size B --bound-kib K
                      N sessions each read one B-byte line, then go quiet: PID's RSS growth
                      per session must stay under K KiB (an idle session holds no input buffer)
  text                the text policy: a line with a control character (C0 but TAB, DEL,
                      UTF-8 C1) is refused with a notice to its sender, every other line
                      passes byte for byte (every byte value, every C2 xx, in commands too)
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
import struct
import sys
import time

TIMEOUT_SCALE = float(os.environ.get("TIMEOUT_SCALE", "1") or "1")


class Failure(Exception):
    """A check did not hold; the message says what was expected and what happened."""


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


class Client:
    """One chat connection: non-blocking, lines in, lines out, driven by a Room's selector."""

    def __init__(self, room, label, rcvbuf=None, mss=None):
        self.room = room
        self.label = label
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss:
            # Advertised in the SYN: the server sends segments of MSS bytes at most, and its
            # kernel send buffer, sized by segments, stays small (not megabytes on loopback).
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
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
            # surrogateescape: bytes that are not UTF-8 survive the round trip, so a test can
            # compare every byte (line.encode("utf-8", "surrogateescape")).
            line = raw.decode("utf-8", "surrogateescape")
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
        m = re.match(r"(\w+?)(\+|> |< |~ |\.|!|#| raw | got )(.*)$", step, re.S)
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
        elif op == " got ":
            line = room.next_line(c, timeout).encode("utf-8", "surrogateescape")
            if line != bytes.fromhex(arg):
                raise Failure("%s: %s got %r, want %r" % (where, who, line, bytes.fromhex(arg)))
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
        elif op == "#":
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
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

def shutdown(host, port, n, timeout, speak=False):
    """SPEAK: once every client has its `* server shutting down`, each says a line: they have
    all left the room (S_LEAVING), so it reaches nobody, and each still gets EOF."""
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
    if speak:
        for c in clients:
            c.send_line("late words from %s" % c.name)
        room.run_until(lambda: not any(c.outbuf for c in clients), timeout,
                       "the late lines not sent")
    for c in clients:
        room.run_until(lambda: c.lines or c.eof, timeout, "%s: no EOF after shutting down" % c.name)
        if c.lines:
            raise Failure("%s: got %r after '* server shutting down', want EOF" % (c.name, c.lines[0]))
    return "%d clients told '* server shutting down', then EOF%s" % (
        n, "; a line from each after it reached nobody" if speak else "")


def fill(host, port, lines, size, timeout):
    """Joins, sends LINES lines of SIZE bytes ("NNNNN yyy..."), then /who, and waits for its
    reply: by then the server has broadcast every line to the others (it answers in order).
    Prints `fill: ...`, then stays until the server closes (its shutdown) or TIMEOUT."""
    room = Room(host, port)
    c = Client(room, "filler")
    room.welcome(c, timeout)
    for i in range(lines):
        c.send_line("%05d " % i + "y" * (size - 6))
    c.send_line("/who")
    while not room.next_line(c, timeout).startswith("* users:"):
        pass
    print("fill: %d lines of %d bytes sent and broadcast" % (lines, size), flush=True)
    room.run_until(lambda: c.eof, timeout, "filler: the server never closed")
    return "%d lines of %d bytes" % (lines, size)


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


def drain(host, port, pid, log, nlines, size, timeout):
    """Lines of SIZE bytes to a reader that reads nothing, 16 at a time, until the kernel
    refuses some (/proc/net/tcp: the server holds part of them; at most NLINES), so that the
    queue in the server at SIGTERM is small enough for the 1 s drain on a busy machine, yet
    not empty; then SIGTERM, and, once the server has begun its drain (LOG says `stopping:`
    and it waits in epoll_wait again, with output still queued for the reader), the reader
    must get every line, every byte, then `* server shutting down`, then EOF."""
    import signal
    room, reader, sender, send, ping, texts = stalled_pair(host, port, size, timeout)
    reader_port = reader.sock.getsockname()[1]
    while True:
        if len(texts) >= nlines:
            raise Failure("the kernel took all %d lines: nothing queued in the server" % nlines)
        send(16, size)
        ping()
        held = kernel_held(port, reader_port)
        if held is not None and sum(len(t) + 4 for t in texts) > held:
            break
    os.kill(pid, signal.SIGTERM)
    # The reader reads only once the server is draining (back in epoll_wait after its
    # `stopping:` line): a server that closed sessions with output queued has done so by then.
    wait_stopped_and_waiting(log, pid, timeout)
    reader.reading = True
    room.update(reader)
    read_lines(room, reader, texts, 0, timeout)
    line = room.next_line(reader, timeout)
    if line != "* server shutting down":
        raise Failure("reader: got %r after its %d lines, want '* server shutting down'" % (
            line, len(texts)))
    room.run_until(lambda: reader.lines or reader.eof, timeout, "reader: no EOF after shutting down")
    if reader.lines:
        raise Failure("reader: got %r after '* server shutting down', want EOF" % reader.lines[0])
    return "all %d lines (%d bytes) sent before SIGTERM arrived, then '* server shutting down', then EOF" % (
        len(texts), sum(len(t) + 4 for t in texts))


# --------------------------------------------------------------------------- text policy

def refusal(cp, offset):
    """The notice a line with a control character gets (07_chat's text policy)."""
    return b"* refused: control character U+%04X at offset %d" % (cp, offset)


def control_at(line):
    """(code point, offset) of the first control character of LINE (bytes) under 07's text
    policy: a C0 byte but TAB, DEL, or a UTF-8 C1 control (C2 80..C2 9F); None if none.
    Written apart from the server's code, byte by byte, to compare against it."""
    for i, b in enumerate(line):
        if (b < 0x20 and b != 0x09) or b == 0x7F:
            return b, i
        if b == 0xC2 and i + 1 < len(line) and 0x80 <= line[i + 1] <= 0x9F:
            return line[i + 1], i
    return None


def text(host, port, timeout):
    """A sends lines holding every byte value, every C2 xx pair, multi-byte UTF-8 around the
    C1 range, control characters first, last, at the 4096th byte, in /nick, /msg, /who and
    /quit, CR before CRLF; B must receive exactly the lines that pass, byte for byte, in order,
    and A exactly one refusal notice per refused line, in order, and nothing else."""
    room = Room(host, port)
    a = Client(room, "A")
    room.welcome(a, timeout)
    b = Client(room, "B")
    room.welcome(b, timeout)
    want_join = "* %s joined" % b.name
    line = room.next_line(a, timeout)
    if line != want_join:
        raise Failure("A got %r, want %r" % (line, want_join))
    an, bn = a.name.encode(), b.name.encode()
    lines = []      # (what A sends: a line without its ending, ending)
    for v in range(256):
        if v != 0x0A:
            lines.append(b"x" + bytes([v]) + b"y")
    for v in range(256):
        if v != 0x0A:
            lines.append(b"a\xc2" + bytes([v]) + b"b")
    lines += [
        b"\x1bz", b"z\x1b", b"\x00", b"\x7f", b"z\x7f", b"\x1b]0;pwned\x07\x1b[2Jbob: password?",
        b"\xc2\x9b2J", b"ab\xc2\x85", b"ab\xc2", b"\xc2\xc2\x9b", b"\xc3\xa9t\xc3\xa9 \xe2\x82\xac",
        b"\xe2\x80\x9b quote", b"\xc4\x80\xc3\x80\xc3\x9f", b"\xc2\xa0nbsp\xc2\xbf", b"\x9b\x80\xbf raw",
        b"\xc1\x9b overlong", b"tab\there",
        b"/nick al\x1bice", b"/nick bob\x7f", b"/who\x00", b"/quit\x1b", b"/dance\x07",
        b"/msg " + bn + b"\x00zzz secret", b"/msg " + bn + b" hi\x07", b"/msg " + bn + b" \xc2\x9b",
        b"/msg " + bn + b" tab\there \xc3\xa9\x9b",
        b"\xc3\xa9" * 2048, b"e" * 4095 + b"\x1b", b"e" * 4094 + b"\xc2\x9b", b"e" * 4095 + b"\xc2",
    ]
    endings = [b"\n"] * len(lines)
    # The codec takes one '\r' before the '\n' as part of the ending, never two.
    lines += [b"crlf", b"cr\r", b"", b"", b"\r"]
    endings += [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r\n"]
    want_a, want_b = [], []
    for ln in lines:
        if ln == b"":
            continue  # an empty line: ignored, no reply
        hit = control_at(ln)
        if hit is not None:
            want_a.append(refusal(*hit))
        elif ln.startswith(b"/msg " + bn + b" "):
            want_b.append(an + b" (private): " + ln[len(b"/msg " + bn + b" "):])
        elif ln.startswith(b"/"):
            raise Failure("test bug: %r" % ln)
        else:
            want_b.append(an + b": " + ln)
    a.send(b"".join(ln + e for ln, e in zip(lines, endings)) + b"last\n/who\n")
    want_b.append(an + b": last")
    want_a.append(b"* users: " + an + b" " + bn)
    for c, want in ((a, want_a), (b, want_b)):
        for k, w in enumerate(want):
            got = room.next_line(c, timeout).encode("utf-8", "surrogateescape")
            if got != w:
                raise Failure("%s: line %d of %d: got %r, want %r" % (c.label, k + 1, len(want), got[:120], w[:120]))
    if a.lines or b.lines:
        raise Failure("more lines than expected: A %r, B %r" % (a.lines[:2], b.lines[:2]))
    return "%d lines sent: %d passed byte for byte, %d refused with their notice" % (
        len(lines), len(want_b) - 1, len(want_a) - 1)


# --------------------------------------------------------------------------- a leaving session's name

def server_side(port, sock):
    """(state, rx_queue) of the server's end of SOCK's connection to PORT, from /proc/net/tcp
    (state 1 ESTABLISHED, 8 CLOSE_WAIT: the client's FIN came); None if not found."""
    end = server_end(port, sock.getsockname()[1])
    return end and end[:2]


def server_end(port, cport):
    """(state, rx_queue, tx_queue) of the server's end of the connection from local port CPORT
    to PORT, from /proc/net/tcp; None if not found (the server has closed it)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and int(fields[2].split(":")[1], 16) == cport:
                tx, rx = (int(v, 16) for v in fields[4].split(":"))
                return int(fields[3], 16), rx, tx
    return None


def proc_state(pid):
    """The state letter of /proc/PID/stat (R, S, T, ...)."""
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def namehold(host, port, pid, timeout):
    """A leaving session keeps its name until its `* NAME left` has gone out. alice leaves
    (by /quit, then by closing) and, in the same turn of the server, B asks for her name (in
    another case the second time): B must be told it is taken, and an observer must see
    `* alice left` and nothing else; once that went out, the name is free. The same turn is
    forced: the server is stopped (SIGSTOP) while both lines are sent, alice's first, so one
    epoll_wait reports both sockets, hers first."""
    import signal
    room = Room(host, port)
    obs = Client(room, "observer")
    room.welcome(obs, timeout)
    b = Client(room, "B")
    bname = room.welcome(b, timeout)
    for how, ask in (("/quit", "alice"), ("close", "ALICE")):
        a = Client(room, "alice")
        room.welcome(a, timeout)
        a.send_line("/nick alice")
        want = {obs: ["* %s joined" % a.name, "* %s is now alice" % a.name],
                b: ["* %s joined" % a.name, "* %s is now alice" % a.name],
                a: ["* you are now alice"]}
        if how == "/quit" and obs.lines[:1] == ["* %s joined" % b.name]:
            obs.lines.pop(0)
        for c, lines in want.items():
            for w in lines:
                got = room.next_line(c, timeout)
                if got != w:
                    raise Failure("%s: %s got %r, want %r" % (how, c.label, got, w))
        os.kill(pid, signal.SIGSTOP)
        try:
            # The signal takes effect when the server next enters the kernel: wait until it
            # is stopped (state T), or its own turn could read alice's line first.
            deadline = time.monotonic() + scaled(timeout)
            while proc_state(pid) not in "Tt":
                if time.monotonic() > deadline:
                    raise Failure("the server did not stop on SIGSTOP")
                time.sleep(0.001)  # a poll with a deadline
            aport = a.sock.getsockname()[1]
            if how == "/quit":
                a.sock.sendall(b"/quit\n")
            else:
                a.close()
            b.sock.sendall(("/nick %s\n" % ask).encode())

            class Gone:  # a closed socket's address, for server_side
                def getsockname(self):
                    return ("127.0.0.1", aport)

            # Both must be in the server's kernel before it runs again: alice's line (or FIN)
            # and B's, as /proc/net/tcp shows the server's ends.
            def queued():
                sa, sb = server_side(port, Gone()), server_side(port, b.sock)
                return (sa is not None and (sa[1] > 0 if how == "/quit" else sa[0] == 8)
                        and sb is not None and sb[1] > 0)
            while not queued():
                if time.monotonic() > deadline:
                    raise Failure("alice's and B's lines never reached the server's sockets")
                time.sleep(0.001)  # a poll with a deadline
        finally:
            os.kill(pid, signal.SIGCONT)
        want = {b: ["* %s is taken" % ask, "* alice left"], obs: ["* alice left"]}
        if how == "/quit":
            want[a] = ["* bye"]
        for c, lines in want.items():
            for w in lines:
                got = room.next_line(c, timeout)
                if got != w:
                    raise Failure("%s, then %s's /nick %s in the same turn: %s got %r, want %r"
                                  % (how, b.label, ask, c.label, got, w))
        if how == "/quit":
            room.run_until(lambda: a.lines or a.eof, timeout, "alice: no EOF after * bye")
            if a.lines:
                raise Failure("alice got %r after * bye, want EOF" % a.lines[0])
            a.close()
        # Now that `* alice left` went out, the name is free; B gives it back after.
        for old, new in ((bname, ask), (ask, "b-" + how[-4:])):
            b.send_line("/nick %s" % new)
            for c, w in ((b, "* you are now %s" % new), (obs, "* %s is now %s" % (old, new))):
                got = room.next_line(c, timeout)
                if got != w:
                    raise Failure("after alice left: %s got %r, want %r" % (c.label, got, w))
        bname = "b-" + how[-4:]
    return "alice's name stayed hers until * alice left went out (/quit, and close), then was free"


# --------------------------------------------------------------------------- idle memory

def vm_kib(pid, field):
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise Failure("no %s in /proc/%d/status" % (field, pid))


def idlemem(host, port, pid, n, size, bound_kib, read_bound, hold, timeout):
    """N sessions join, each sends a line of SIZE bytes (`/nick` and a name far too long: the
    server reads it whole and answers `* bad name (...)`, a short reply, so that its output
    costs next to nothing), gets its answer, and goes quiet. The server's RSS growth from before the first
    connection, per session, must stay under BOUND_KIB (07's notes derive what an idle
    session holds: its struct, its output ring, its timer's slot); and the growth while they
    read their lines, per session, under READ_BOUND bytes (reading a line leaves nothing
    behind: no input buffer). A bound of 0: only report it. HOLD: then print the figure and keep every session until the server closes
    it (`* server shutting down`, EOF), so the test can stop it while they are idle."""
    rss0 = vm_kib(pid, "VmRSS")
    room = Room(host, port)
    # All connect first, then each reads its welcome: the server accepts them in batches
    # while we wait, rather than one round trip per session.
    clients = [Client(room, "c%d" % i) for i in range(n)]
    for c in clients:
        room.welcome(c, timeout)
    got = {}

    def on_line(c, line):
        if line.startswith("* bad name"):
            got[c.name] = line

    for c in clients:
        c.lines = []
        c.on_line = on_line
    rss_joined = vm_kib(pid, "VmRSS")
    for c in clients:
        c.send(b"/nick " + b"p" * (size - 6) + b"\n")
    room.run_until(lambda: len(got) == n, timeout, lambda: "%d of %d sessions got their answer" % (len(got), n))
    bad = [name for name, line in got.items() if line != "* bad name (1-32 letters, digits, _ or -)"]
    if bad:
        raise Failure("%s got %r" % (bad[0], got[bad[0]]))
    rss1 = vm_kib(pid, "VmRSS")
    per = (rss1 - rss0) * 1024.0 / n
    per_read = (rss1 - rss_joined) * 1024.0 / n
    desc = ("%d idle sessions (each read a %d-byte line): server RSS %d KiB at start, %d joined, "
            "%d after the lines: %.0f bytes per session, %.0f of them from reading the line" % (
                n, size, rss0, rss_joined, rss1, per, per_read))
    if bound_kib > 0 and per > bound_kib * 1024:
        raise Failure(desc + "; want at most %g KiB per session" % bound_kib)
    if read_bound > 0 and per_read > read_bound:
        raise Failure(desc + "; want at most %d bytes per session from reading a line" % read_bound)
    desc += (" (bounds %g KiB, %d bytes)" % (bound_kib, read_bound) if bound_kib > 0
             else " (not checked)")
    if hold:
        print("idlemem: " + desc, flush=True)
        for c in clients:
            c.on_line = None
        room.run_until(lambda: all(c.eof for c in clients), hold,
                       lambda: "%d of %d sessions not closed by the server" % (
                           sum(not c.eof for c in clients), n))
        for c in clients:
            if c.lines != ["* server shutting down"]:
                raise Failure("%s got %r while idle, want '* server shutting down' then EOF" % (c.name, c.lines[:3]))
    for c in clients:
        c.close()
    return desc


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
        want = "%s: %d %s" % (sender.name, seq, pad)   # every byte, not only the number
        if line != want:
            raise first_difference("reader, line %d" % seq, line, want)
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


# --------------------------------------------------------------------------- output caps and coalescing

def pad_text(seq, size, tag=0):
    """The text of line SEQ: "SEQ " and a filler up to SIZE bytes, whose letter depends on SEQ
    and TAG (the sender): a line in the wrong place, or one changed byte, is seen."""
    head = "%d " % seq
    return (head + chr(97 + (seq * 7 + tag) % 26) * max(0, size - len(head)))[:size]


def first_difference(who, got, want):
    """Failure naming the first offset where GOT and WANT (lines) differ, and the bytes around it."""
    n = min(len(got), len(want))
    i = next((k for k in range(n) if got[k] != want[k]), n)
    return Failure("%s: line differs at offset %d (lengths %d, want %d): got %r, want %r" % (
        who, i, len(got), len(want), got[max(0, i - 16):i + 16], want[max(0, i - 16):i + 16]))


def burst(host, port, nsenders, nlines, size, warm, timeout):
    """NSENDERS clients, each reading everything as fast as it can. First WARM bytes of lines
    from the first client to all (so the kernel's buffers of every connection have grown,
    as a busy room's have), then every client sends NLINES lines of SIZE bytes at once. Each
    must receive every other client's lines, every byte, in each sender's order, and nobody
    may be disconnected."""
    room = Room(host, port)
    clients = [Client(room, "c%d" % i) for i in range(nsenders)]
    for c in clients:
        room.welcome(c, timeout)
    tag = {c.name: i for i, c in enumerate(clients)}
    expect = {c.name: {} for c in clients}   # receiver -> sender -> its next line
    got = {c.name: 0 for c in clients}
    errors = []

    def on_line(c, line):
        if errors:
            return
        if line.startswith("* ") and line.endswith(" joined"):
            return
        name, sep, text = line.partition(": ")
        if not sep or name not in tag or name == c.name:
            errors.append(Failure("%s (%s) got %r" % (c.label, c.name, line)))
            return
        seq = expect[c.name].get(name, 0)
        want = pad_text(seq, size, tag[name])
        if text != want:
            errors.append(first_difference("%s from %s, line %d" % (c.name, name, seq), text, want))
            return
        expect[c.name][name] = seq + 1
        got[c.name] += 1

    for c in clients:
        c.on_line = on_line
        for line in c.lines:
            on_line(c, line)
        c.lines = []
    w = -(-warm // size) if warm > 0 else 0
    if w:
        clients[0].send(b"".join(pad_text(k, size, 0).encode() + b"\n" for k in range(w)))
        room.run_until(lambda: errors or all(got[c.name] == w for c in clients[1:]), timeout,
                       lambda: "warm-up: not every client got the %d lines" % w)
    for i, c in enumerate(clients):
        first = w if i == 0 else 0
        c.send(b"".join(pad_text(k, size, i).encode() + b"\n" for k in range(first, first + nlines)))
    total = (nsenders - 1) * nlines
    want_got = {c.name: total + (w if i > 0 else 0) for i, c in enumerate(clients)}

    def done():
        return errors or any(c.eof for c in clients) or all(got[n] == want_got[n] for n in got)

    room.run_until(done, timeout, lambda: "not every line arrived within %.0f s: fewest %s" % (
        scaled(timeout), min(got.values())))
    if errors:
        raise errors[0]
    gone = [c.name for c in clients if c.eof]
    if gone:
        raise Failure("%d of %d readers were disconnected: %s" % (len(gone), nsenders, " ".join(gone)))
    return "%d senders x %d lines of %d bytes: every reader got all %d lines, every byte, in order" % (
        nsenders, nlines, size, total)


class Unarranged(Exception):
    """A precondition the test could not arrange (the kernel took more than it could know):
    not a failure of the server; the caller may retry (exit status 3)."""


def log_matches(path, regex):
    """Every match of REGEX in the server's log at PATH, in order."""
    with open(path, errors="replace") as f:
        return [m for m in (re.search(regex, line) for line in f) if m]


def in_epoll_wait(pid):
    """Whether process PID (its main thread) is blocked in epoll_wait, read from /proc:
    wchan names the kernel function (ep_poll); where it is hidden ("0"), the system call
    number (epoll_wait 232 or epoll_pwait 281 on x86_64, epoll_pwait 22 on aarch64)."""
    nrs = {"x86_64": ("232", "281"), "aarch64": ("22",)}.get(os.uname().machine, ())
    try:
        with open("/proc/%d/wchan" % pid) as f:
            wchan = f.read()
        with open("/proc/%d/syscall" % pid) as f:
            sysno = f.read().split(" ")[0]
    except OSError:
        return False
    return "ep_poll" in wchan or sysno in nrs


def wait_stopped_and_waiting(log, pid, timeout):
    """After SIGTERM: until the server has logged `stopping:` and sits in epoll_wait again,
    that is, has queued every notice and written what the kernel took (bounded, scaled)."""
    deadline = time.monotonic() + scaled(timeout)
    # A server that has exited is done too: what it sent is what the reader gets.
    while not (log_matches(log, r"stopping: ") and
               (in_epoll_wait(pid) or not os.path.exists("/proc/%d" % pid))):
        if time.monotonic() > deadline:
            raise Failure("the server did not log `stopping:` and wait again within %.1f s"
                          % scaled(timeout))
        time.sleep(0.01)  # poll interval of a loop with a deadline


def stalled_pair(host, port, size, timeout, mss=None):
    """A reader (SO_RCVBUF 4 KiB) that has read its welcome and the sender's arrival, then
    stops reading, and a sender named `s`. Returns room, reader, sender, send(n, size) (the
    sender's next N lines of text SIZE, numbered on) and ping() (a /who round trip; two,
    so that the turn that queued the lines has finished its writes)."""
    room = Room(host, port)
    reader = Client(room, "reader", rcvbuf=4096, mss=mss)
    room.welcome(reader, timeout)
    sender = Client(room, "sender")
    room.welcome(sender, timeout)
    sender.send_line("/nick s")
    if room.next_line(sender, timeout) != "* you are now s":
        raise Failure("sender: /nick s refused")
    for want in ("* %s joined" % sender.name, "* %s is now s" % sender.name):
        line = room.next_line(reader, timeout)
        if line != want:
            raise Failure("reader: got %r, want %r" % (line, want))
    sender.name = "s"
    reader.reading = False
    room.update(reader)
    state = {"seq": 0, "texts": []}

    def send(n, tsize):
        data = []
        for _ in range(n):
            t = pad_text(state["seq"], tsize)
            state["texts"].append(t)
            data.append(t.encode() + b"\n")
            state["seq"] += 1
        sender.send(b"".join(data))

    def ping():
        for _ in range(2):
            sender.send_line("/who")
            while True:
                line = room.next_line(sender, timeout)
                if line.startswith("* users:"):
                    break
                if "dropped" in line or " left" in line:
                    raise Failure("sender: %r while filling the reader's queue" % line)

    return room, reader, sender, send, ping, state["texts"]


def read_lines(room, reader, texts, start, timeout):
    """The reader reads lines START.. of TEXTS, checking every byte; returns the next index."""
    i = start
    while i < len(texts):
        line = room.next_line(reader, timeout)
        want = "s: " + texts[i]
        if line != want:
            raise first_difference("reader, line %d" % i, line, want)
        i += 1
    return i


def softcap(host, port, log, soft_s, size, timeout):
    """The soft cap's clock: the reader's queue goes over --soft-output (the server logs it),
    the reader catches up and stops again, its queue goes over a second time: it must be
    dropped SOFT_S after the second crossing, not SOFT_S after the first (a clock that was
    not stopped when it drained), and not before."""
    room, reader, sender, send, ping, texts = stalled_pair(host, port, size, timeout)
    crossing = r"\(user1\): (\d+) bytes still queued after the writes, over --soft-output"

    def fill(k):
        for _ in range(4096):
            if len(log_matches(log, crossing)) >= k:
                return
            send(8, size)
            ping()
        raise Failure("the reader's queue never went over --soft-output (%d lines sent)" % len(texts))

    t_a0 = time.monotonic()
    fill(1)
    reader.reading = True
    room.update(reader)
    done = read_lines(room, reader, texts, 0, timeout)
    ping()  # its queue was sent: the clock is stopped by now
    t_caught = time.monotonic()
    if t_caught - t_a0 > soft_s * 0.8:
        raise Unarranged("the reader took %.2f s to catch up (the clock runs %.2f s)" % (
            t_caught - t_a0, soft_s))
    reader.reading = False
    room.update(reader)
    t_b0 = time.monotonic()
    fill(2)
    t_b1 = time.monotonic()
    # Still stalled, and the room goes on talking for half the time (a short line now and
    # then: a clock restarted on every write while over the cap would fire late), then falls
    # silent (a clock the loop's timeout ignores would fire only when something else wakes it).
    want = "* user1 dropped (too slow)"
    end = time.monotonic() + soft_s + scaled(5)
    last = 0.0
    while not sender.lines:
        now = time.monotonic()
        if now > end:
            raise Failure("sender: no '%s' within %.1f s of the second crossing" % (want, now - t_b1))
        if now - last > soft_s / 8 and now < t_b1 + soft_s / 2:
            send(1, 16)
            last = now
        room.pump(0.01)
    line = sender.lines.pop(0)
    t_drop = time.monotonic()
    if line != want:
        raise Failure("sender: got %r, want %r" % (line, want))
    if t_drop < t_b0 + soft_s - 0.005:
        raise Failure("dropped %.3f s after its queue went over the soft cap the second time "
                      "(at most %.3f s after the first), want %.3f s: the clock was not stopped "
                      "when it drained, or fired early" % (t_drop - t_b0, t_drop - t_a0, soft_s))
    if t_drop > t_b1 + soft_s * 1.25:
        raise Failure("dropped %.3f s after its queue went over the soft cap, want %.3f s" % (
            t_drop - t_b1, soft_s))
    # What it got before the drop: a prefix of the lines, every byte right, then EOF.
    reader.reading = True
    room.update(reader)
    room.run_until(lambda: reader.eof, timeout, "reader: no EOF after it was dropped")
    for i, line in enumerate(reader.lines):
        want = "s: " + texts[done + i] if done + i < len(texts) else None
        if line != want:
            raise first_difference("reader after the drop, line %d" % (done + i), line, want or "")
    return ("dropped %.3f s after its queue went over --soft-output again (soft %.3f s), "
            "%.3f s after the first time" % (t_drop - t_b1, soft_s, t_drop - t_a0))


def kernel_held(server_port, reader_port):
    """Bytes the kernel holds between the server and the reader: the server side's send queue
    (not yet acknowledged) plus the reader side's receive queue (not yet read), from one read
    of /proc/net/tcp; None if either socket is not there."""
    tx = rx = None
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            fields = row.split()
            local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
            txq, rxq = (int(v, 16) for v in fields[4].split(":"))
            if local == server_port and remote == reader_port:
                tx = txq
            elif local == reader_port and remote == server_port:
                rx = rxq
    return None if tx is None or rx is None else tx + rx


def capfill(host, port, log, pid, cap, then, timeout):
    """The hard cap at its boundary. The reader's queue in the server is filled to exactly CAP
    bytes: what was sent to it since it stopped reading, less what the kernel holds
    (/proc/net/tcp, read until it is steady, ACKs included). Then `over`: one more line of
    5 bytes drops it, with CAP + 5 queued (the server's log says); or `notice`: SIGTERM, and
    `* server shutting down` is queued beyond the cap: the reader still gets every line, the
    notice, then EOF, and the server's `stopping:` line says CAP bytes were pending."""
    import signal
    room, reader, sender, send, ping, texts = stalled_pair(host, port, 4000, timeout)
    reader_port = reader.sock.getsockname()[1]

    def queued():
        last = None
        for _ in range(100):
            room.pump(0.06)  # ACKs settle (a delayed ACK waits up to 40 ms)
            held = kernel_held(port, reader_port)
            if held is None:
                raise Failure("the reader's connection is not in /proc/net/tcp")
            if held == last:
                return sum(len(t) + 4 for t in texts) - held
            last = held
        raise Unarranged("the kernel's queues never held still")

    def top_up(left):       # lines of 5..4004 bytes ("s: " TEXT "\n") adding up to LEFT
        while left > 0:
            n = min(left, 4004)
            if 0 < left - n < 5:
                n = left - 5
            send(1, n - 4)
            left -= n
        ping()

    for _ in range(4096):   # until the kernel refuses: the server holds some of it
        send(16, 4000)
        ping()
        held = kernel_held(port, reader_port)
        if held is not None and sum(len(t) + 4 for t in texts) > held:
            q = queued()
            break
    else:
        raise Failure("the kernel took %d lines without refusing any" % len(texts))

    def fill_to_cap(q):     # top up to exactly CAP queued; the kernel may take some each time
        for _ in range(20):
            if q > cap:
                raise Unarranged("%d bytes queued at first, over --max-output %d" % (q, cap))
            if q == cap:
                return
            if cap - q < 5:
                raise Unarranged("%d bytes queued, within 5 of --max-output %d" % (q, cap))
            top_up(cap - q)
            q = queued()
        raise Unarranged("the queue never held still at %d bytes (last %d)" % (cap, q))

    fill_to_cap(q)
    if log_matches(log, r"dropped \(too slow\)|over --max-output"):
        raise Failure("the reader was dropped with its queue at most --max-output %d" % cap)
    if then == "over":
        want = "* user1 dropped (too slow)"
        # The kernel's send buffer grows after a write it refused (autotuning, at the next ACK,
        # up to net.ipv4.tcp_wmem's maximum), so the line's write may find room the queue's
        # measure did not: then the queue is measured and filled again, a few times at most.
        for _ in range(6):
            send(1, 1)
            try:
                line = room.next_line(sender, 2.0)  # the drop is that line's own turn
                break
            except Failure:
                # No word: either the server kept a queue over the cap (the bug this looks
                # for), or the kernel took more of the queue after it was measured, and the
                # line left it at most at the cap. The kernel's queues again say which.
                q2 = queued()
                if q2 > cap:
                    line = room.next_line(sender, timeout)
                    break
                fill_to_cap(q2)
        else:
            raise Unarranged("the kernel took more of the queue at each of 6 lines over the cap")
        if line != want:
            raise Failure("sender: got %r after one more line, want %r" % (line, want))
        m = log_matches(log, r"\(user1\): (\d+) bytes still queued after a write, over --max-output")
        q = int(m[0].group(1)) if m else -1
        if q != cap + 5:
            if cap < q < cap + 5:
                raise Unarranged("the kernel took %d bytes more of the queue" % (cap + 5 - q))
            raise Failure("dropped with %d bytes queued after the write, want exactly %d "
                          "(--max-output %d, then a line of 5)" % (q, cap + 5, cap))
        reader.reading = True
        room.update(reader)
        room.run_until(lambda: reader.eof, timeout, "reader: no EOF after it was dropped")
        for i, line in enumerate(reader.lines):
            if i >= len(texts) or line != "s: " + texts[i]:
                raise first_difference("reader after the drop, line %d" % i, line,
                                       "s: " + texts[i] if i < len(texts) else "")
        return "kept with exactly %d bytes queued, dropped with %d" % (cap, cap + 5)
    os.kill(pid, signal.SIGTERM)
    # The reader reads only once the server has queued the notices and is back in epoll_wait:
    # a notice judged under the cap meets a full kernel then, and drops the reader.
    wait_stopped_and_waiting(log, pid, timeout)
    reader.reading = True
    room.update(reader)
    read_lines(room, reader, texts, 0, timeout)
    line = room.next_line(reader, timeout)
    if line != "* server shutting down":
        raise Failure("reader: got %r after its %d lines, want '* server shutting down'" % (
            line, len(texts)))
    room.run_until(lambda: reader.lines or reader.eof, timeout, "reader: no EOF after the notice")
    if reader.lines:
        raise Failure("reader: got %r after '* server shutting down', want EOF" % reader.lines[0])
    m = log_matches(log, r"stopping: \d+ sessions?, (\d+) bytes pending")
    q = int(m[0].group(1)) if m else -1
    if q != cap:
        if cap - 23 < q < cap:
            raise Unarranged("the kernel took %d bytes more of the queue" % (cap - q))
        raise Failure("%d bytes pending at SIGTERM, want exactly --max-output %d" % (q, cap))
    return "with exactly %d bytes queued (--max-output), SIGTERM: every line, the notice, EOF" % cap


def leaving(host, port, log, timeout, chatter=False):
    """LEAVE_NS: the reader stops reading until the kernel refuses, then sends /quit and
    neither reads nor closes: its `* bye` and its FIN cannot go, so only its leaving timer can
    close it: 1 s after the /quit, not before (the server logs the close). The sender is told
    `* user1 left` at once (not `dropped`). CHATTER: the reader goes on sending a line every
    50 ms after its /quit (the server reads and discards them): the timer still counts from
    the /quit, not from its last bytes."""
    room, reader, sender, send, ping, texts = stalled_pair(host, port, 4000, timeout)
    reader_port = reader.sock.getsockname()[1]
    for _ in range(4096):
        send(16, 4000)
        ping()
        held = kernel_held(port, reader_port)
        if held is not None and sum(len(t) + 4 for t in texts) > held:
            break
    else:
        raise Failure("the kernel took %d lines without refusing any" % len(texts))
    closed = r"\(user1\) closed"
    t0 = time.monotonic()
    reader.send_line("/quit")
    room.run_until(lambda: not reader.outbuf, timeout, "reader: /quit not sent")
    line = room.next_line(sender, timeout)
    if line != "* user1 left":
        raise Failure("sender: got %r after the reader's /quit, want '* user1 left'" % line)
    deadline = time.monotonic() + 1.0 + scaled(2.0)
    said, next_say = 0, time.monotonic()
    while not log_matches(log, closed):
        if time.monotonic() > deadline:
            raise Failure("the leaving reader was not closed within %.1f s of its /quit%s" % (
                deadline - t0, " (it sent %d lines after it)" % said if chatter else ""))
        if chatter and time.monotonic() >= next_say:
            reader.send_line("still here %d" % said)
            said += 1
            next_say = time.monotonic() + 0.05
        room.pump(0.005)
    if chatter and said < 5:
        raise Unarranged("the reader sent only %d lines after its /quit" % said)
    took = time.monotonic() - t0
    if took < 1.0 - 0.005:
        raise Failure("the leaving reader was closed %.3f s after its /quit, before its 1 s" % took)
    # What it was sent: a prefix of the lines, every byte right, maybe its `* bye`, then EOF
    # (or a reset: it was closed with its input unread).
    reader.reading = True
    room.update(reader)
    room.run_until(lambda: reader.eof, timeout, "reader: no EOF after it was closed")
    for i, line in enumerate(reader.lines):
        want = "s: " + texts[i] if i < len(texts) else "* bye"
        if line != want:
            raise first_difference("reader, line %d" % i, line, want)
    return "closed %.3f s after its /quit (LEAVE_NS is 1 s), %d of %d lines read%s" % (
        took, len(reader.lines), len(texts),
        ", %d lines sent after the /quit" % said if chatter else "")


def halfclose(host, port, nlines, timeout):
    """A client's EOF (shutdown SHUT_WR) is a way out: the session leaves (LEFT_EOF), what it
    was owed still goes, then the server's FIN, and the room hears `* NAME left`. B sends two
    lines and a partial third, then its FIN: A gets B's line and `* B left` (never the partial
    line), B its /who reply, then EOF. C sends NLINES commands and its FIN at once (more than
    one recv of 16 KiB, more than one turn's budget): every reply comes, in order, then EOF.
    The caller checks the stop line: no timer expired (each was closed on its EOF, not by its
    leaving timer) and the lines counted."""
    room = Room(host, port)
    a = Client(room, "A")
    room.welcome(a, timeout)

    def half_close(c, data):
        c.send(data)
        room.run_until(lambda: not c.outbuf, timeout, "%s: its bytes not sent" % c.label)
        c.sock.shutdown(socket.SHUT_WR)

    def expect(c, want):
        for i, w in enumerate(want):
            line = room.next_line(c, timeout)
            if line != w:
                raise first_difference("%s, line %d" % (c.label, i), line, w)

    def expect_eof(c):
        room.run_until(lambda: c.lines or c.eof, timeout, "%s: no EOF after its FIN" % c.label)
        if c.lines or c.inbuf:
            raise Failure("%s: got %r after its last reply, want EOF" % (
                c.label, (c.lines + [c.inbuf])[0]))

    b = Client(room, "B")
    room.welcome(b, timeout)
    expect(a, ["* %s joined" % b.name])
    half_close(b, b"hello\n/who\npartial")
    expect(b, ["* users: %s %s" % (a.name, b.name)])
    expect_eof(b)
    expect(a, ["%s: hello" % b.name, "* %s left" % b.name])
    c = Client(room, "C")
    room.welcome(c, timeout)
    expect(a, ["* %s joined" % c.name])
    half_close(c, b"".join(b"/who %d\n" % i for i in range(nlines)))
    expect(c, ["* unknown command"] * nlines)
    expect_eof(c)
    expect(a, ["* %s left" % c.name])
    a.send_line("/who")
    expect(a, ["* users: %s" % a.name])
    return "B and C half-closed: every reply, then EOF; the room saw both leave"


def fill_past_kernel(port, reader, send, ping, texts):
    """The sender of a stalled_pair says lines until the kernel refuses 256 KiB of them to the
    stalled reader: they wait in the server's own queue."""
    reader_port = reader.sock.getsockname()[1]
    for _ in range(4096):
        send(16, 4000)
        ping()
        held = kernel_held(port, reader_port)
        # A margin: the client's FIN makes the kernel take some more (180 KB seen).
        if held is not None and sum(len(t) + 4 for t in texts) > held + 262144:
            return
    raise Failure("the kernel took %d lines without refusing 256 KiB" % len(texts))


def halfreset(host, port, pid, timeout):
    """SIGPIPE never kills the server. A stalled reader with lines queued for it in the server
    (past what the kernel holds) sends its FIN; once the sender hears `* user1 left` (the
    server has read the EOF: its socket is in CLOSE_WAIT) it resets (SO_LINGER 0) while the
    server still has its lines to send. A reset that finds a socket in CLOSE_WAIT leaves EPIPE
    as its error, so the server's next send to it fails with EPIPE and raises SIGPIPE, whose
    default action ends a server that does not ignore it. The server must live on: the sender
    still gets its /who answered."""
    room, reader, sender, send, ping, texts = stalled_pair(host, port, 4000, timeout, mss=536)
    fill_past_kernel(port, reader, send, ping, texts)
    reader_port = reader.sock.getsockname()[1]
    reader.sock.shutdown(socket.SHUT_WR)
    line = room.next_line(sender, timeout)
    if line != "* user1 left":
        raise Failure("sender: got %r after the reader's FIN, want '* user1 left'" % line)
    end = server_end(port, reader_port)
    if end is None or end[0] != 8 or end[2] == 0:
        raise Failure("the server's end of the reader's connection is %r (want CLOSE_WAIT, 8, with "
                      "bytes queued): the test proved nothing" % (end,))
    room.remove(reader)
    reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reader.sock.close()
    # The server writes to the reader again (its lines are still queued) and meets EPIPE.
    deadline = time.monotonic() + scaled(timeout)
    while server_end(port, reader_port) is not None:
        if time.monotonic() > deadline:
            raise Failure("the server kept the reset reader's socket: it never sent to it again")
        time.sleep(0.01)  # poll interval of a loop with a deadline
    try:
        state = proc_state(pid)
    except OSError:
        state = "gone"
    if state in ("Z", "X", "gone"):
        raise Failure("the server died when it sent to a reader that had reset (SIGPIPE not ignored?)")
    sender.send_line("/who")
    while True:
        line = room.next_line(sender, timeout)
        if line.startswith("* users:"):
            break
    if line != "* users: s":
        raise Failure("sender: /who answered %r, want '* users: s'" % line)
    return "a reader reset in CLOSE_WAIT with %d lines queued: the server lives, /who answered" % len(texts)


def halfslow(host, port, log, how, hold, timeout, closed_fmt=None):
    """A slow reader that leaves by its FIN with output still queued in the server: the reader
    stops reading until the kernel refuses 256 KiB of the sender's lines (they wait in the
    server's queue), then sends its FIN (HOW "eof"), or `/quit` and its FIN (HOW "quit"),
    and reads nothing for HOLD seconds more (not scaled: it must stay under the 1 s leaving
    timer). The sender hears `* user1 left` at once, and says a line the reader must never
    get (it left the room). The server must not close the reader in that time (a leaving
    session is kept until its output is sent or LEAVE_NS is up: closed on the client's FIN,
    it would lose its queue). Then the reader reads: a prefix of the
    lines, every byte right (all of them, and `* bye` for quit, unless its leaving timer ran
    out while it read: then a prefix, maybe with part of a line), then EOF; the server logs
    the close with its reason (CLOSED_FMT: the log line's regex, "{reason}" standing for the
    reason's words, escaped; default 07's). The caller
    checks the server's turns: a session at EOF is no longer watched for input
    (level-triggered, it would spin)."""
    # A 536-byte MSS keeps the server's kernel send buffer small (tens of KB, not the 2.8 MB a
    # loopback MSS of 64 KiB gives): what waits is in the server's queue, and the reader reads
    # it well within its 1 s leaving timer even on a busy machine.
    room, reader, sender, send, ping, texts = stalled_pair(host, port, 4000, timeout, mss=536)
    fill_past_kernel(port, reader, send, ping, texts)
    if how == "quit":
        reader.send_line("/quit")
        room.run_until(lambda: not reader.outbuf, timeout, "reader: /quit not sent")
    closed = r"\(user1\) closed"
    t0 = time.monotonic()
    reader.sock.shutdown(socket.SHUT_WR)
    line = room.next_line(sender, timeout)
    if line != "* user1 left":
        raise Failure("sender: got %r after the reader's %s, want '* user1 left'" % (
            line, "/quit and FIN" if how == "quit" else "FIN"))
    # The room talks on: a leaving session is out of it, so this line never reaches the reader.
    sender.send_line("after user1 left")
    end = t0 + hold
    while time.monotonic() < end:   # the reader's stall, not a readiness wait
        room.pump(end - time.monotonic())
    early = log_matches(log, closed)
    took = time.monotonic() - t0
    if took >= 1.0:
        raise Unarranged("the reader's %.1f s stall took %.2f s, past the 1 s leaving timer" % (
            hold, took))
    if early:
        raise Failure("the reader was closed within %.3f s of its FIN, with its lines still "
                      "queued in the server (a leaving session waits for its output, up to "
                      "1 s)" % took)
    reader.reading = True
    room.update(reader)
    room.run_until(lambda: reader.eof, timeout, "reader: no EOF")
    want = ["s: " + t for t in texts] + (["* bye"] if how == "quit" else [])
    # Whole lines only: a leaving timer that runs out while the reader reads (a busy machine)
    # closes it wherever its last write ended, maybe in the middle of a line.
    got = reader.lines
    for i, line in enumerate(got):
        if i >= len(want):
            raise Failure("reader: got %r after its last line, want EOF" % line)
        if line != want[i]:
            raise first_difference("reader, line %d" % i, line, want[i])
    reason = "/quit" if how == "quit" else "the client closed"
    fmt = closed_fmt or r"\(user1\) closed: {reason}$"
    if not log_matches(log, fmt.replace("{reason}", re.escape(reason))):
        raise Failure("no '%s' in the server's log" % fmt.replace("{reason}", reason))
    return "not closed in the %.3f s after its FIN; then %d of %d lines, every byte right, then EOF" % (
        took, len(got), len(want))


OUTPUT_CMDS = {
    "halfslow": lambda a: halfslow(a.host, a.port, a.log, a.how, a.hold, a.timeout, a.closed),
    "halfclose": lambda a: halfclose(a.host, a.port, a.lines, a.timeout),
    "halfreset": lambda a: halfreset(a.host, a.port, a.pid, a.timeout),
    "burst": lambda a: burst(a.host, a.port, a.senders, a.lines, a.size, a.warm, a.timeout),
    "softcap": lambda a: softcap(a.host, a.port, a.log, a.soft, a.size, a.timeout),
    "capfill": lambda a: capfill(a.host, a.port, a.log, a.pid, a.cap, a.then, a.timeout),
    "leaving": lambda a: leaving(a.host, a.port, a.log, a.timeout, a.chatter),
}


def add_output_cmds(add):
    p = add("burst", "many senders at once to readers that keep up: nobody dropped")
    p.add_argument("--senders", type=int, default=20)
    p.add_argument("--lines", type=int, default=16)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--warm", type=int, default=0, help="bytes of warm-up lines first")
    p = add("softcap", "the soft cap's clock: stopped when the queue drains, fires on time")
    p.add_argument("--log", required=True, help="the server's stderr")
    p.add_argument("--soft", type=float, required=True, help="the server's --soft-seconds")
    p.add_argument("--pid", type=int, help="(not used)")
    p.add_argument("--size", type=int, default=4000)
    p = add("capfill", "the hard cap at its boundary; a notice beyond it")
    p.add_argument("--log", required=True, help="the server's stderr")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--cap", type=int, required=True, help="the server's --max-output")
    p.add_argument("--then", choices=("over", "notice"), required=True)
    p = add("leaving", "a leaving session that cannot be sent to is closed after 1 s")
    p.add_argument("--log", required=True, help="the server's stderr")
    p.add_argument("--chatter", action="store_true",
                   help="the reader goes on sending lines after its /quit")
    p = add("halfclose", "a client's FIN: its replies, then EOF, and the room told")
    p.add_argument("--lines", type=int, default=3000)
    p = add("halfreset", "a slow reader's FIN, then its reset, with output queued: SIGPIPE kills nothing")
    p.add_argument("--pid", type=int, required=True)
    p = add("halfslow", "a slow reader's FIN with output queued: the queue still goes")
    p.add_argument("--log", required=True, help="the server's stderr")
    p.add_argument("--pid", type=int, help="(not used)")
    p.add_argument("--how", choices=("eof", "quit"), required=True)
    p.add_argument("--hold", type=float, default=0.3, help="seconds the reader stays stalled")
    p.add_argument("--closed", help="the close's log line, a regex; {reason} stands for the "
                   "reason's words (default 07's: '\\(user1\\) closed: {reason}$')")


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
    p = add("fill", "send lines to the room, wait until broadcast, stay until the server closes")
    p.add_argument("--lines", type=int, default=40)
    p.add_argument("--size", type=int, default=4000)
    p = add("shutdown", "clients told the server is shutting down")
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--speak", action="store_true",
                   help="after the notice, each client says a line that must reach nobody")
    p = add("drain", "output queued at SIGTERM still arrives")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--log", required=True, help="the server's stderr")
    p.add_argument("--lines", type=int, default=2048)
    p.add_argument("--size", type=int, default=4000)
    p = add("catchup", "a slow reader catches up; then the server is idle")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--lines", type=int, default=2048)
    p.add_argument("--size", type=int, default=4000)
    p.add_argument("--quiet", type=float, default=1.0)
    p = add("text", "control characters refused, every other byte passes")
    p = add("namehold", "a leaving session keeps its name until it is announced")
    p.add_argument("--pid", type=int, required=True)
    p = add("idlemem", "memory per idle session")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--sessions", type=int, default=400)
    p.add_argument("--size", type=int, default=4000)
    p.add_argument("--bound-kib", type=float, default=2.0)
    p.add_argument("--read-bound", type=int, default=256, help="bytes per session")
    p.add_argument("--hold", type=float, default=0, help="then wait up to this long (scaled) for the server to close them")
    add_output_cmds(add)
    p = add("idle", "a silent client is timed out")
    p.add_argument("--wait", type=float, default=3.0)
    a = ap.parse_args(argv)
    try:
        if a.cmd in OUTPUT_CMDS:
            msg = OUTPUT_CMDS[a.cmd](a)
        elif a.cmd == "script":
            msg = script(a.host, a.port, a.step, a.timeout)
        elif a.cmd == "storm":
            msg = storm(a.host, a.port, a.clients, a.lines, a.timeout)
        elif a.cmd == "slow":
            msg = slow(a.host, a.port, a.flooders, a.lines, a.size, a.window, a.timeout)
        elif a.cmd == "latency":
            msg = latency(a.host, a.port, a.bytes, a.probes, a.under, a.timeout)
        elif a.cmd == "drain":
            msg = drain(a.host, a.port, a.pid, a.log, a.lines, a.size, a.timeout)
        elif a.cmd == "catchup":
            msg = catchup(a.host, a.port, a.pid, a.lines, a.size, a.quiet, a.timeout)
        elif a.cmd == "namehold":
            msg = namehold(a.host, a.port, a.pid, a.timeout)
        elif a.cmd == "idlemem":
            msg = idlemem(a.host, a.port, a.pid, a.sessions, a.size, a.bound_kib, a.read_bound,
                          a.hold, a.timeout)
        elif a.cmd == "text":
            msg = text(a.host, a.port, a.timeout)
        elif a.cmd == "shutdown":
            msg = shutdown(a.host, a.port, a.clients, a.timeout, a.speak)
        elif a.cmd == "fill":
            msg = fill(a.host, a.port, a.lines, a.size, a.timeout)
        else:
            msg = idle(a.host, a.port, a.wait, a.timeout)
    except Unarranged as e:
        print("UNARRANGED: %s: %s" % (a.cmd, e), flush=True)
        return 3
    except (Failure, OSError) as e:
        print("FAIL: %s: %s" % (a.cmd, e), flush=True)
        return 1
    print("ok: %s: %s" % (a.cmd, msg), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
