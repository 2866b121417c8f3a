#!/usr/bin/env python3
"""cluster: scenarios for chat_server nodes joined through Redis (08_framework, issue 17).

Python 3 standard library only; reuses tests/lib/chat.py's Client and Room (one selector, many
sockets; a Room's port is only read when a Client connects, so one Room drives clients of
several nodes). Every subcommand prints `ok: ...` and exits 0, or `FAIL: ...` and exits 1.
Every wait has a deadline stretched by TIMEOUT_SCALE. --ports lists the nodes' ports; a node's
guest names are userN-NODE, NODE given by --nodes (same order).

  fanout --per-node K --lines M
        K clients on every node; each must see every later client's `* NAME joined` exactly
        once, then /who from every client lists the whole room; then every client sends M
        lines (text with tabs, UTF-8, printf directives): every other client receives each of
        them exactly once, byte for byte, in its sender's order; never its own
  names --ttl-ms T
        a name claimed on one node is refused on the others (any case), guest names are
        nobody's; two nodes asking for the same name at once: exactly one granted (5 rounds);
        a name freed by /quit is granted elsewhere at once (T is long: not by expiry); a
        member that leaves while its claim is pending has the name released when it is granted
  outage --redis-port P --redis-bin BIN --gone-s S
        names and lines across nodes, then Redis shut down: every client told `* room split`
        exactly once, local lines still delivered at once; during the split a name taken on
        two nodes; S seconds of split (reconnect attempts); Redis started again (by this
        script; stopped at its end): every client told `* room whole again` once, cross-node
        lines within 5 s, the held names claimed again in Redis, the split's double name
        resolved (Redis's holder keeps it, the other is a guest again, told so)
  subkill --redis-port P
        Redis drops the subscribers (CLIENT KILL TYPE pubsub, as it does a slow one): split,
        then whole again within 5 s and cross-node lines delivered again
  slowdrop --lines L --size B
        a reader that never reads on node 0 (its node's --max-output small), a flooder beside
        it, an observer on node 1: the observer gets every flood line in order, then
        `* SLOW dropped (too slow)` (not `left`); /who no longer lists it
  death --redis-port P --pid PID --signal SIG --within-ms W --ttl-ms T [--check-refresh]
        clients on every node (zed claimed on the last); with --check-refresh, twice the ttl T
        first: zed still held in Redis, nobody left (refresh and heartbeats); then PID (the
        last node) is sent SIG: every user of that node is announced `* NAME left` to the
        others within W ms (W as given: not stretched again), /who lists the others only
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chat import Client, Failure, Room, scaled  # noqa: E402

SPLIT = "* room split: other nodes unreachable, lines reach this node only"
WHOLE = "* room whole again"


# --------------------------------------------------------------------------- helpers

class Cluster:
    def __init__(self, ports, nodes):
        self.ports = ports
        self.nodes = nodes
        self.room = Room("127.0.0.1", ports[0])
        self.clients = []

    def connect(self, node, label):
        self.room.port = self.ports[node]
        c = Client(self.room, label)
        name = self.room.welcome(c)
        want = r"user\d+-%s" % re.escape(self.nodes[node])
        if not re.fullmatch(want, name):
            raise Failure("%s: welcome name %r, want a guest name %s" % (label, name, want))
        c.node = node
        self.clients.append(c)
        return c

    def join(self, specs, seconds=5.0):
        """Connects (node, label) of SPECS one at a time; every earlier client must see each
        one's `* NAME joined` before the next connects (a join published before a client
        connected may reach its node after it: one at a time, every client sees exactly the
        joins after its own)."""
        out = []
        for node, label in specs:
            c = self.connect(node, label)
            self.settle(c, [o.name for o in out], seconds)
            for o in out:
                self.expect(o, "* %s joined" % c.name, seconds)
            out.append(c)
        return out

    def settle(self, c, earlier, seconds=5.0):
        """Polls /who from C until its node knows every name of EARLIER: a join or rename of
        theirs that reaches C's node after C joined is told to C (once, allowed here); after
        that none can come."""
        late = set()
        deadline = time.monotonic() + scaled(seconds)
        while True:
            c.send_line("/who")
            while True:
                line = self.room.next_line(c, seconds)
                m = re.fullmatch(r"\* (\S+) joined|\* \S+ is now (\S+)", line)
                if m and (m.group(1) or m.group(2)) in earlier and line not in late:
                    late.add(line)
                    continue
                if not line.startswith("* users: "):
                    raise Failure("%s (%s): got %r, want a /who answer" % (c.label, c.name, line))
                break
            if set(earlier) <= set(line[len("* users: "):].split(" ")):
                return
            if time.monotonic() > deadline:
                raise Failure("%s: its node never learnt of %r: %r" % (c.label, earlier, line))
            time.sleep(0.02)

    def expect(self, c, want, seconds=5.0):
        line = self.room.next_line(c, seconds)
        if line != want:
            raise Failure("%s (%s): got %r, want %r" % (c.label, c.name, line, want))

    def expect_set(self, c, wants, seconds=5.0):
        """The next len(wants) lines of C are exactly WANTS, in any order."""
        left = list(wants)
        while left:
            line = self.room.next_line(c, seconds)
            if line not in left:
                raise Failure("%s (%s): got %r, want one of %r" % (c.label, c.name, line, left))
            left.remove(line)

    def quiet(self, seconds, clients=None):
        """Pumps for SECONDS: nobody (of CLIENTS) may receive a line."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.room.pump(min(0.05, max(0.0, deadline - time.monotonic())))
        for c in clients if clients is not None else self.clients:
            if c.lines:
                raise Failure("%s (%s): unexpected line %r" % (c.label, c.name, c.lines[0]))

    def who(self, c, names, seconds=5.0):
        c.send_line("/who")
        line = self.room.next_line(c, seconds)
        if not line.startswith("* users: "):
            raise Failure("%s: /who answered %r" % (c.label, line))
        got = line[len("* users: "):].split(" ")
        if sorted(got) != sorted(names):
            raise Failure("%s on node %s: /who lists %r, want %r (in any order)"
                          % (c.label, self.nodes[c.node], sorted(got), sorted(names)))

    def nick(self, c, name, others):
        old = c.name
        c.send_line("/nick " + name)
        self.expect(c, "* you are now " + name)
        c.name = name
        for o in others:
            if o is not c:
                self.expect(o, "* %s is now %s" % (old, name))

    def nick_once_free(self, c, name, why, seconds, skip=lambda line: False):
        """C asks for NAME until it is granted: `* NAME is taken` while another node's release
        has not reached Redis yet, for at most 3 s (scaled); any other answer fails. Lines
        SKIP accepts are passed over."""
        t0 = time.monotonic()
        deadline = t0 + scaled(3)
        while True:
            c.send_line("/nick " + name)
            line = self.room.next_line(c, seconds)
            while skip(line):
                line = self.room.next_line(c, seconds)
            if line == "* you are now " + name:
                return
            if line != "* %s is taken" % name or time.monotonic() > deadline:
                raise Failure("%s: /nick %s %s: %r (for %.1f s)"
                              % (c.label, name, why, line, time.monotonic() - t0))
            time.sleep(0.05)  # the release is on its way through Redis: ask again

    def close(self):
        for c in self.clients:
            c.close()


def redis_cmd(port, *args, timeout=2.0):
    """One command to redis-server on 127.0.0.1:PORT; its reply, decoded simply (None: nil)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout))
    try:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        f = s.makefile("rb")
        head = f.readline()
        if head.startswith(b"$-1"):
            return None
        if head.startswith(b"$"):
            return f.read(int(head[1:]) + 2)[:-2].decode()
        return head[1:].strip().decode()
    finally:
        s.close()


def text_of(name, i):
    # Every kind of byte a line may carry: a tab, UTF-8 (2, 3 and 4 bytes), printf directives.
    return "%s line %d\t\u00e9\u20ac\U0001F600 %%s %%n %%d 100%% {%d}" % (name, i, i * 7)


# --------------------------------------------------------------------------- fanout

def fanout(cl, per_node, nlines, timeout):
    # Joins: each client sees every later client's join exactly once (local or remote).
    clients = cl.join([(node, "n%dc%d" % (node, k)) for k in range(per_node)
                       for node in range(len(cl.ports))], timeout)
    names = [c.name for c in clients]
    for c in clients:
        cl.who(c, names, timeout)
    expect = {c.name: {o.name: 0 for o in clients if o is not c} for c in clients}
    errors = []

    def on_line(c, line):
        name, sep, text = line.partition(": ")
        if not sep or name not in expect[c.name]:
            errors.append("%s (%s) got %r: not a line of another member" % (c.label, c.name, line))
            return
        i = expect[c.name][name]
        if i >= nlines or text != text_of(name, i):
            errors.append("%s (%s) got %r from %s, want line %d: %r (a duplicate, a loss, "
                          "reordered or changed bytes)" % (c.label, c.name, line, name, i,
                                                           text_of(name, i) if i < nlines else None))
            return
        expect[c.name][name] = i + 1

    for c in clients:
        c.on_line = on_line
    for i in range(nlines):
        for c in clients:
            c.send_line(text_of(c.name, i))

    def done():
        return errors or all(v == nlines for e in expect.values() for v in e.values())

    def what():
        short = [(c.name, sum(e.values())) for c, e in ((c, expect[c.name]) for c in clients)]
        return "not every line arrived within %.0f s: received per client %r (want %d each)" % (
            scaled(timeout), short, nlines * (len(clients) - 1))

    cl.room.run_until(done, timeout, what)
    if errors:
        raise Failure(errors[0])
    # Nothing more (a second copy of a line published once) for a while.
    cl.quiet(scaled(0.3))
    if errors:
        raise Failure(errors[0])
    return "%d clients on %d nodes, %d lines each: every line once, in order, byte for byte" % (
        len(clients), len(cl.ports), nlines)


# --------------------------------------------------------------------------- names

def names_case(cl, rport, ttl_ms, timeout):
    a, b, c = everyone = cl.join([(0, "a"), (1, "b"), (2 % len(cl.ports), "c")], timeout)
    cl.nick(a, "alice", everyone)
    v = redis_cmd(rport, "GET", "chat:name:alice")
    ttl = int(redis_cmd(rport, "PTTL", "chat:name:alice"))
    if v != cl.nodes[0] or not 0 < ttl <= ttl_ms:
        raise Failure("after /nick alice on %s: chat:name:alice is %r with PTTL %d in Redis, "
                      "want %r and 1..%d" % (cl.nodes[0], v, ttl, cl.nodes[0], ttl_ms))
    # A name nobody's roster knows, held in Redis alone (another node's claim): only the
    # claim's NX can refuse it.
    redis_cmd(rport, "SET", "chat:name:eve", "elsewhere", "PX", str(ttl_ms))
    for who in (a, b):
        who.send_line("/nick EVE")
        cl.expect(who, "* EVE is taken", timeout)
    if redis_cmd(rport, "GET", "chat:name:eve") != "elsewhere":
        raise Failure("chat:name:eve changed by a refused claim")
    for who, asked in ((b, "ALICE"), (c, "alice"), (b, "Alice")):
        who.send_line("/nick " + asked)
        cl.expect(who, "* %s is taken" % asked, timeout)
    # /msg to a member of another node: to it alone, byte for byte; an unknown name refused.
    b.send_line("/msg ALICE psst \u00e9 %s\tx")
    cl.expect(a, "%s (private): psst \u00e9 %%s\tx" % b.name, timeout)
    b.send_line("/msg nobody hi")
    cl.expect(b, "* no such user nobody", timeout)
    cl.quiet(scaled(0.2))
    # Guest names: nobody's, on any node (ours, another node's, one nobody has yet).
    for asked in ("user1-%s" % cl.nodes[0], "user99-%s" % cl.nodes[1], "user7-zz"):
        b.send_line("/nick " + asked)
        cl.expect(b, "* %s is taken" % asked, timeout)
    # The same name asked on two nodes at once: exactly one gets it.
    for r in range(5):
        want = "bob%d" % r
        b.send_line("/nick " + want)
        c.send_line("/nick " + want)
        verdicts = ("* you are now " + want, "* %s is taken" % want)
        got, seen = {}, {}
        for o in (b, c):
            while o.label not in got:
                line = cl.room.next_line(o, timeout)
                if line in verdicts:
                    got[o.label] = line
                elif re.fullmatch(r"\* \S+ is now %s" % want, line) and o.label not in seen:
                    seen[o.label] = line  # the winner's rename, before the loser's verdict
                else:
                    raise Failure("round %d: %s got %r, want a verdict on /nick %s"
                                  % (r, o.label, line, want))
        if sorted(got.values()) != sorted(verdicts):
            raise Failure("round %d: /nick %s on two nodes at once: b %r, c %r, want one "
                          "granted and one taken" % (r, want, got["b"], got["c"]))
        winner, loser = (b, c) if got["b"] == verdicts[0] else (c, b)
        old = winner.name
        winner.name = want
        if winner.label in seen:
            raise Failure("round %d: the winner %s was told %r" % (r, winner.label, seen[winner.label]))
        if loser.label in seen:
            if seen[loser.label] != "* %s is now %s" % (old, want):
                raise Failure("round %d: %s got %r" % (r, loser.label, seen[loser.label]))
        else:
            cl.expect(loser, "* %s is now %s" % (old, want), timeout)
        cl.expect(a, "* %s is now %s" % (old, want), timeout)
    # A name freed by /quit is another node's at once (the ttl is long: not its expiry).
    a.send_line("/quit")
    cl.expect(a, "* bye", timeout)
    cl.expect(b, "* alice left", timeout)
    cl.expect(c, "* alice left", timeout)
    cl.nick_once_free(c, "alice", "after alice quit on another node", timeout)
    old, c.name = c.name, "alice"
    cl.expect(b, "* %s is now alice" % old, timeout)
    # A member that leaves while its claim is pending: the name is released once granted.
    d = cl.connect(0, "d")
    cl.settle(d, [b.name, c.name], timeout)
    cl.expect(b, "* %s joined" % d.name, timeout)
    cl.expect(c, "* %s joined" % d.name, timeout)  # a quit: na has nobody else
    # Its /quit in the same read as its /nick: it has left before Redis can answer; and Redis
    # holds every client's commands for a second (CLIENT PAUSE), so that no load can let the
    # answer come first.
    redis_cmd(rport, "CLIENT", "PAUSE", str(int(scaled(1.0) * 1000)), "ALL")
    d.send(b"/nick carol\n/quit\n")
    cl.expect(d, "* bye", timeout)
    d.close()
    cl.clients.remove(d)
    # d's leaving (and its rename, if granted first) may come before the answer.
    cl.nick_once_free(b, "carol", "after its claimer left while pending", timeout,
                      skip=lambda line: line.endswith(" left") or line == "* %s is now carol" % d.name)
    # c hears d leave and b become carol (in either order), and nothing else.
    b_old, b.name = b.name, "carol"
    owed = ["* %s left" % d.name, "* %s is now carol" % b_old]
    cl.expect_set(c, owed, timeout)
    # A rename frees the claimed name it leaves at once (not at its expiry, 30 s away), in
    # Redis and in every node's roster: c (alice, on the third node) becomes alicia; b, on
    # another node, may then take alice, and Redis holds each name for its node. Both /who
    # lists have the new names only.
    cl.nick(c, "alicia", [b, c])
    cl.nick_once_free(b, "alice", "after its holder became alicia", timeout)
    cl.expect(c, "* carol is now alice", timeout)
    b.name = "alice"
    for key, node in (("alice", b.node), ("alicia", c.node)):
        v = redis_cmd(rport, "GET", "chat:name:" + key)
        if v != cl.nodes[node]:
            raise Failure("after the renames, chat:name:%s is %r in Redis, want %r" % (key, v, cl.nodes[node]))
    # The release of carol went to Redis before b was told; it may still be on its way.
    deadline = time.monotonic() + scaled(2)
    while redis_cmd(rport, "GET", "chat:name:carol") is not None:
        if time.monotonic() > deadline:
            raise Failure("chat:name:carol still held %.1f s after carol became alice" % scaled(2))
        time.sleep(0.02)  # a poll with a deadline
    cl.who(b, [b.name, c.name], timeout)
    cl.who(c, [b.name, c.name], timeout)
    return "names unique across nodes (5 races, one winner each); freed by /quit, by a " \
        "pending claimer's leaving and by a rename at once"


# --------------------------------------------------------------------------- outage

def start_redis(binary, port):
    p = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + scaled(5)
    while True:
        try:
            if redis_cmd(port, "PING") == "PONG":
                return p
        except OSError:
            pass
        if time.monotonic() > deadline or p.poll() is not None:
            p.kill()
            raise Failure("redis-server on port %d did not answer PING within 5 s" % port)
        time.sleep(0.02)


def shutdown_redis(port):
    """SHUTDOWN NOSAVE: the server closes the connection as it goes (no reply)."""
    try:
        redis_cmd(port, "SHUTDOWN", "NOSAVE")
    except OSError:
        pass


def stop_redis(port, proc):
    """Shuts the restarted redis-server PROC down and reaps it (killed after 5 s, scaled)."""
    shutdown_redis(port)
    try:
        proc.wait(scaled(5))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def outage(cl, rport, rbin, gone_s, timeout):
    a, a2, b, c = everyone = cl.join([(0, "a"), (0, "a2"), (1, "b"), (2, "c")], timeout)
    cl.nick(a, "alice", everyone)
    cl.nick(b, "bob", everyone)
    a.send_line("before")
    for o in (a2, b, c):
        cl.expect(o, "alice: before", timeout)
    # Redis goes away.
    shutdown_redis(rport)
    for o in everyone:
        cl.expect(o, SPLIT, timeout)
    # Local delivery never stops; nothing crosses.
    a.send_line("during")
    cl.expect(a2, "alice: during", 1.0)
    # One name granted on two sides of the split.
    a2.send_line("/nick dave")
    cl.expect(a2, "* you are now dave", timeout)
    old_a2, a2.name = a2.name, "dave"
    cl.expect(a, "* %s is now dave" % old_a2, timeout)
    c.send_line("/nick dave")
    cl.expect(c, "* you are now dave", timeout)
    old_c, c.name = c.name, "dave"
    # A member who joins during the split is told so after its welcome; its node's members
    # see it join, the other nodes do not (yet).
    e = cl.connect(1, "e")
    cl.expect(e, SPLIT, timeout)
    cl.expect(b, "* %s joined" % e.name, timeout)
    everyone.append(e)
    # The split lasts: the nodes try to reconnect meanwhile; nobody hears more.
    cl.quiet(scaled(gone_s))
    red = start_redis(rbin, rport)
    t0 = time.monotonic()
    try:
        for o in everyone:
            cl.expect(o, WHOLE, 5.0)
        # The nodes exchange rosters: c's rename (dave), a2's and e's join reach the others as
        # the difference of a roster (left + joined); the name's conflict is resolved: exactly
        # one dave stays. Collect everybody's lines for a moment and judge.
        lines = {o.label: [] for o in everyone}
        deadline = time.monotonic() + scaled(1.5)
        while time.monotonic() < deadline:
            cl.room.pump(0.05)
            for o in everyone:
                lines[o.label] += o.lines
                o.lines = []
        lost = [o for o in (a2, c) if "* dave is taken on another node" in lines[o.label]]
        if len(lost) != 1:
            raise Failure("after the split, dave (granted on two nodes) lost by %d of them, "
                          "want exactly 1; lines: %r" % (len(lost), lines))
        loser = lost[0]
        guest = [ln for ln in lines[loser.label] if ln.startswith("* you are now ")]
        if len(guest) != 1 or not re.fullmatch(r"\* you are now user\d+-%s"
                                                % re.escape(cl.nodes[loser.node]), guest[0]):
            raise Failure("%s lost dave: want one '* you are now userN-NODE', got %r"
                          % (loser.label, lines[loser.label]))
        loser.name = guest[0][len("* you are now "):]
        for o in (a, a2, c):
            if "* %s joined" % e.name not in lines[o.label]:
                raise Failure("%s: no '* %s joined' once the room was whole (e joined nb during "
                              "the split): %r" % (o.label, e.name, lines[o.label]))
        for o in everyone:
            if sum(1 for ln in lines[o.label] if ln in (SPLIT, WHOLE)) != 0:
                raise Failure("%s: a second split or whole notice: %r" % (o.label, lines[o.label]))
        # Cross-node lines again, within 5 s of Redis's return (a line published before the
        # subscription is back is lost: retry until one passes, then all three in order).
        k = 0
        while True:
            a.send_line("after %d" % k)
            cl.expect(a2, "alice: after %d" % k, timeout)
            try:
                line = cl.room.next_line(b, 0.3)
            except Failure:
                line = None
            if line == "alice: after %d" % k:
                break
            if line is not None and not line.startswith("* "):
                raise Failure("b: got %r, want 'alice: after %d'" % (line, k))
            if time.monotonic() - t0 > scaled(5):
                raise Failure("no cross-node line within 5 s of Redis's return")
            k += 1
        took = time.monotonic() - t0
        for n in range(3):
            b.send_line("back %d" % n)
        for o in (a, a2, c):
            n = 0
            while n < 3:
                line = cl.room.next_line(o, timeout)
                if o is c and re.fullmatch(r"alice: after \d+", line):
                    continue  # an earlier try that reached c's node already
                if line != "bob: back %d" % n:
                    raise Failure("%s: got %r, want 'bob: back %d'" % (o.label, line, n))
                n += 1
        # The held names are claimed again in Redis, by their nodes.
        for name, node in (("alice", cl.nodes[0]), ("bob", cl.nodes[1])):
            v = redis_cmd(rport, "GET", "chat:name:" + name)
            if v != node:
                raise Failure("after the split, chat:name:%s is %r in Redis, want %r" % (name, v, node))
        v = redis_cmd(rport, "GET", "chat:name:dave")
        winner = c if loser is a2 else a2
        if v != cl.nodes[winner.node]:
            raise Failure("chat:name:dave is %r, want the winner's node %r" % (v, cl.nodes[winner.node]))
        return "split told once, local lines kept, whole again and cross-node lines %.2f s " \
            "after Redis returned; names claimed again, dave kept by %s" % (took, winner.label)
    finally:
        stop_redis(rport, red)


# --------------------------------------------------------------------------- subkill

def subkill(cl, rport, timeout):
    a, b = cl.join([(0, "a"), (1, "b")], timeout)
    n = redis_cmd(rport, "CLIENT", "KILL", "TYPE", "pubsub")
    if n != str(len(cl.ports)):
        raise Failure("CLIENT KILL TYPE pubsub killed %r subscribers, want %d" % (n, len(cl.ports)))
    t0 = time.monotonic()
    for o in (a, b):
        cl.expect(o, SPLIT, timeout)
    for o in (a, b):
        cl.expect(o, WHOLE, 5.0)
    a.send_line("again")
    cl.expect(b, "%s: again" % a.name, timeout)
    b.send_line("and back")
    cl.expect(a, "%s: and back" % b.name, timeout)
    return "subscribers dropped by Redis: split told, whole again and lines across %.2f s later" % (
        time.monotonic() - t0)


# --------------------------------------------------------------------------- slowdrop

def slowdrop(cl, lines, size, timeout):
    """A reader that never reads (SO_RCVBUF 4 KiB) on node 0, a flooder beside it, an
    observer on node 1: the slow one is dropped by node 0's cap, and the observer, on another
    node, is told `* NAME dropped (too slow)`, not `left`, after every flood line in order."""
    f, o = cl.join([(0, "f"), (1, "o")], timeout)
    cl.room.port = cl.ports[0]
    s = Client(cl.room, "slow", rcvbuf=4096)
    s.node = 0
    cl.room.welcome(s, timeout)
    cl.settle(s, [f.name, o.name], timeout)
    s.reading = False
    cl.room.update(s)
    cl.clients.append(s)
    cl.expect(f, "* %s joined" % s.name, timeout)
    cl.expect(o, "* %s joined" % s.name, timeout)
    pad = "y" * size
    sent = seen = 0
    deadline = time.monotonic() + scaled(timeout * 4)
    while True:
        while sent < lines and sent - seen < 64:
            f.send_line("%d %s" % (sent, pad))
            sent += 1
        line = cl.room.next_line(o, timeout)
        if line == "* %s dropped (too slow)" % s.name:
            break
        if line != "%s: %d %s" % (f.name, seen, pad):
            raise Failure("o: got %r, want flood line %d or '* %s dropped (too slow)'"
                          % (line[:80], seen, s.name))
        seen += 1
        if seen >= lines or time.monotonic() > deadline:
            raise Failure("the slow reader was not dropped after %d lines of %d bytes" % (seen, size))
    dropped_at = seen
    while seen < sent:  # the lines still in flight, in order, and nothing else
        line = cl.room.next_line(o, timeout)
        if line != "%s: %d %s" % (f.name, seen, pad):
            raise Failure("o: got %r after the drop, want flood line %d" % (line[:80], seen))
        seen += 1
    cl.who(o, [f.name, o.name], timeout)
    seen = dropped_at
    return "slow reader dropped after %d flood lines; the other node was told 'dropped (too slow)'" % seen


# --------------------------------------------------------------------------- death

def refreshed(cl, rport, a, ttl_ms, node, timeout):
    """Twice the ttl: the name zed is refreshed by its node every ttl/3 (still held, its
    expiry never below a third of the ttl, nor above it) and the nodes hear each other's
    heartbeats (nobody is announced as left)."""
    # Meanwhile zed's expiry, read every 50 ms, never runs low: refreshed every ttl/3, it
    # stays above 2/3 of the ttl but for a late beat (a refresh every ttl would let it reach 0).
    low = ttl_ms
    deadline = time.monotonic() + 2 * ttl_ms / 1000.0
    while time.monotonic() < deadline:
        cl.room.pump(0.05)
        low = min(low, int(redis_cmd(rport, "PTTL", "chat:name:zed")))
    for c in cl.clients:
        if c.lines:
            raise Failure("%s (%s): unexpected line %r" % (c.label, c.name, c.lines[0]))
    if low < ttl_ms / 3:
        raise Failure("chat:name:zed's PTTL fell to %d ms over twice the ttl (%d ms): not refreshed "
                      "every ttl/3" % (low, ttl_ms))
    v = redis_cmd(rport, "GET", "chat:name:zed")
    pttl = int(redis_cmd(rport, "PTTL", "chat:name:zed"))
    if v != cl.nodes[node] or not 0 < pttl <= ttl_ms:
        raise Failure("after twice the ttl, chat:name:zed is %r (PTTL %d) in Redis: not "
                      "refreshed by %s" % (v, pttl, cl.nodes[node]))
    a.send_line("/nick zed")
    cl.expect(a, "* zed is taken", timeout)


def death(cl, rport, pid, sig, within_ms, ttl_ms, check_refresh, timeout):
    last = len(cl.ports) - 1
    a, b, z1, z2 = cl.join([(0, "a"), (1, "b"), (last, "z1"), (last, "z2")], timeout)
    cl.nick(z1, "zed", [a, b, z1, z2])
    if check_refresh:
        refreshed(cl, rport, a, ttl_ms, last, timeout)
    os.kill(pid, sig)
    t0 = time.monotonic()
    for o in (a, b):
        cl.expect_set(o, ["* zed left", "* %s left" % z2.name], within_ms / 1000.0)
    took = time.monotonic() - t0
    if took * 1000 > within_ms:  # WITHIN_MS is stretched already (the ttl is the nodes')
        raise Failure("the dead node's users announced left after %.0f ms, want within %.0f ms"
                      % (took * 1000, within_ms))
    cl.quiet(scaled(0.2), [a, b])
    cl.who(a, [a.name, b.name], timeout)
    cl.who(b, [a.name, b.name], timeout)
    return "node gone (signal %d): its users announced left after %.0f ms (bound %.0f)" % (
        sig, took * 1000, within_ms)


def longsplit(cl, rport, rbin, ttl_ms, timeout, node_bin=None, node_log=None):
    """A split longer than the name ttl: nobody is heard during a split, so nobody is judged
    silent for it (a peer expires only while the room is whole). a (first node) and b (second)
    stay in each other's /who and hear no `left` for twice the ttl without Redis; a's /msg to b
    meanwhile is refused (`* no such user`: nothing crosses a split); with NODE_BIN, a third
    node starts during the split and c joins it. Once Redis is back, the room is whole, every
    node takes in the others' members silently where it hears of them first (the third node's
    c; a and b for c), /who lists them all, and lines cross again."""
    a, b = everyone = cl.join([(0, "a"), (1, "b")], timeout)
    shutdown_redis(rport)
    for o in everyone:
        cl.expect(o, SPLIT, timeout)
    # A private line to another node's member cannot cross a split: refused, not lost.
    a.send_line("/msg %s are you there" % b.name)
    cl.expect(a, "* no such user %s" % b.name, timeout)
    cl.quiet(2 * ttl_ms / 1000.0)
    # A third node starts meanwhile, never whole yet, and c joins it: nobody is told.
    third = None
    if node_bin:
        third = subprocess.Popen([node_bin, "-p", "0", "--redis", "127.0.0.1:%d" % rport, "--node", "nthird",
                                  "--name-ttl", str(ttl_ms)], stdout=subprocess.PIPE,
                                 stderr=open(node_log, "w"))
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", third.stdout.readline().decode())
        if not m:
            raise Failure("the third node did not say where it listens")
        cl.ports.append(int(m.group(1)))
        cl.nodes.append("nthird")
        c = cl.connect(len(cl.ports) - 1, "c")
        everyone.append(c)
    red = start_redis(rbin, rport)
    try:
        for o in (a, b):
            cl.expect(o, WHOLE, 5.0)
        if third:
            # Each node hears of the third for the first time: its member is taken into
            # /who silently, and c learns a and b silently (no `joined`: they were there
            # before; a node that starts learns the room without a flood of joins).
            names = [a.name, b.name, c.name]
            for o in everyone:
                deadline = time.monotonic() + scaled(5)
                while True:
                    o.send_line("/who")
                    line = cl.room.next_line(o, timeout)
                    if not line.startswith("* users: "):
                        raise Failure("%s: got %r, want a /who answer and nothing else" % (o.label, line))
                    if sorted(line[len("* users: "):].split(" ")) == sorted(names):
                        break
                    if time.monotonic() > deadline:
                        raise Failure("%s: /who never listed %r: %r" % (o.label, names, line))
                    time.sleep(0.05)  # the rosters are on their way: ask again
        else:
            cl.who(a, [a.name, b.name], timeout)
            cl.who(b, [a.name, b.name], timeout)
        # Lines cross again (one published before b's node is subscribed again is lost:
        # retry), and nothing else came meanwhile (no leaving, no joining).
        t0, k = time.monotonic(), 0
        while True:
            a.send_line("back %d" % k)
            try:
                line = cl.room.next_line(b, 0.3)
            except Failure:
                line = None
            if line == "%s: back %d" % (a.name, k):
                break
            if line is not None:
                raise Failure("b: got %r, want %r" % (line, "%s: back %d" % (a.name, k)))
            if time.monotonic() - t0 > scaled(5):
                raise Failure("no line from a to b within 5 s of Redis's return")
            k += 1
        if third:
            # c hears the tries from the one its node was subscribed for on, up to the last.
            while True:
                line = cl.room.next_line(c, timeout)
                mm = re.fullmatch(r"%s: back (\d+)" % re.escape(a.name), line)
                if not mm:
                    raise Failure("c: got %r, want a's lines" % line)
                if int(mm.group(1)) == k:
                    break
        cl.quiet(scaled(0.2))
        return "split for %.1f s (twice the ttl): nobody left, %s in /who, lines cross again" % (
            2 * ttl_ms / 1000.0, "a third node started meanwhile taken in silently, all" if third else "both")
    finally:
        if third:
            third.terminate()
            try:
                rc = third.wait(scaled(5))
            except subprocess.TimeoutExpired:
                third.kill()
                rc = third.wait()
            if rc != 0:
                raise Failure("the third node exited %d at SIGTERM, want 0" % rc)
        stop_redis(rport, red)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ports", required=True)
    ap.add_argument("--nodes", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--timeout", type=float, default=5.0, help="seconds per wait")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fanout", parents=[common])
    p.add_argument("--per-node", type=int, default=2)
    p.add_argument("--lines", type=int, default=50)
    p = sub.add_parser("names", parents=[common])
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--ttl-ms", type=int, required=True)
    p = sub.add_parser("outage", parents=[common])
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--redis-bin", default="redis-server")
    p.add_argument("--gone-s", type=float, default=1.0)
    p = sub.add_parser("longsplit", parents=[common])
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--redis-bin", default="redis-server")
    p.add_argument("--ttl-ms", type=int, required=True, help="the nodes' --name-ttl")
    p.add_argument("--node-bin", help="start a third node (chat_server) during the split")
    p.add_argument("--node-log", default=os.devnull, help="its stderr")
    p = sub.add_parser("subkill", parents=[common])
    p.add_argument("--redis-port", type=int, required=True)
    p = sub.add_parser("slowdrop", parents=[common])
    p.add_argument("--lines", type=int, default=5000)
    p.add_argument("--size", type=int, default=1000)
    p = sub.add_parser("death", parents=[common])
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--signal", default="KILL")
    p.add_argument("--within-ms", type=float, required=True)
    p.add_argument("--ttl-ms", type=int, required=True, help="the nodes' --name-ttl")
    p.add_argument("--check-refresh", action="store_true",
                   help="first twice the ttl: zed's name refreshed, nobody left")
    a = ap.parse_args(argv)
    cl = Cluster([int(x) for x in a.ports.split(",")], a.nodes.split(","))
    try:
        if a.cmd == "fanout":
            msg = fanout(cl, a.per_node, a.lines, a.timeout)
        elif a.cmd == "names":
            msg = names_case(cl, a.redis_port, a.ttl_ms, a.timeout)
        elif a.cmd == "outage":
            msg = outage(cl, a.redis_port, a.redis_bin, a.gone_s, a.timeout)
        elif a.cmd == "slowdrop":
            msg = slowdrop(cl, a.lines, a.size, a.timeout)
        elif a.cmd == "longsplit":
            msg = longsplit(cl, a.redis_port, a.redis_bin, a.ttl_ms, a.timeout, a.node_bin, a.node_log)
        elif a.cmd == "subkill":
            msg = subkill(cl, a.redis_port, a.timeout)
        else:
            msg = death(cl, a.redis_port, a.pid, getattr(signal, "SIG" + a.signal),
                        a.within_ms, a.ttl_ms, a.check_refresh, a.timeout)
    except Failure as e:
        print("FAIL: %s" % e)
        return 1
    finally:
        cl.close()
    print("ok: %s" % msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
