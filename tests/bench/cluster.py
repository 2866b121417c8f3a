#!/usr/bin/env python3
"""cluster.py: what the Redis bus costs chat_server (08_framework, issue 17), per delivery.

K clients, each sending M lines in turn (at most W lines in flight: a line may be sent once
every line W before it has reached all K-1 others), every line delivered to the K-1 others
and checked (sender, sequence, count). The setups, each with the same K and M:

  single     one chat_server without --redis (07's room on the library)
  1-node     one chat_server --redis (every line also goes through Redis and back)
  2-nodes    two nodes, the K clients spread over them (round robin)
  3-nodes    three nodes
  redis      plain Redis pub/sub: one publisher connection, K-1 subscribers, K*M messages
             (the bus alone, the same deliveries)

Figure: server CPU per delivery, in microseconds: utime + stime (/proc/PID/stat) of every
node and of redis-server over the publish phase, divided by K*M*(K-1). The client is this
Python script (one thread, selectors): it bounds the throughput, not the CPU figure, which
counts the servers only. Runs alternate (each repetition rotates the order); the median of
each figure is kept with its range. Bounded: every run has a deadline; the whole takes well
under 2 minutes with the defaults. Writes results/cluster.md and results/cluster.csv.

  python3 tests/bench/cluster.py [--k 40] [--lines 100] [--window 32] [--repeat 3]
"""

import argparse
import csv
import datetime
import os
import platform
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time

from peers import CLK_TCK, EX, RESULTS, cpu_ticks, free_port, wait_ping

CHAT = os.path.join(EX, "chat_server")
PAD = "x" * 40


class Proc:
    def __init__(self, argv, logname):
        os.makedirs(os.path.join(RESULTS, "logs"), exist_ok=True)
        self.err = open(os.path.join(RESULTS, "logs", "cluster.%s.err" % logname), "w")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, text=True)
        self.pid = self.p.pid

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


def start_redis():
    port = free_port()
    r = Proc(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no"], "redis")
    try:
        wait_ping(port, time.monotonic() + 10)
    except RuntimeError:
        r.stop()
        sys.exit("cluster.py: redis-server did not start")
    return r, port


def start_node(args, logname):
    n = Proc([CHAT, "-p", "0"] + args, logname)
    line = n.p.stdout.readline()
    if not line.startswith("listening on "):
        n.stop()
        sys.exit("cluster.py: %s did not start: %r" % (logname, line))
    n.port = int(line.rsplit(":", 1)[1])
    if "--redis" in args:
        deadline = time.monotonic() + 10
        while "cluster: room whole" not in open(n.err.name).read():
            if time.monotonic() > deadline:
                n.stop()
                sys.exit("cluster.py: %s never joined the room" % logname)
            time.sleep(0.05)
    return n


class Conn:
    def __init__(self, port, idx):
        self.idx = idx
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = b""
        self.out = b""


def run_load(ports, k, m, window, redis_mode=False, timeout=60.0):
    """K connections round robin over PORTS; returns (deliveries, seconds). In redis mode,
    connection 0 publishes and the other K-1 subscribe. Raises on any lost or foreign line."""
    sel = selectors.DefaultSelector()
    conns = [Conn(ports[i % len(ports)], i) for i in range(k)]
    deadline = time.monotonic() + timeout
    if redis_mode:
        for c in conns[1:]:
            c.sock.setblocking(True)
            c.sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n")
            got = b""
            while b"bench\r\n:1\r\n" not in got:
                got += c.sock.recv(4096)
            c.sock.setblocking(False)
    else:
        # Every client waits until the room holds all K (its /who lists K names).
        for c in conns:
            c.sock.setblocking(True)
        ready = 0
        while ready < k:
            if time.monotonic() > deadline:
                raise RuntimeError("the room never held all %d clients" % k)
            ready = 0
            for c in conns:
                c.sock.sendall(b"/who\n")
                while b"* users:" not in c.buf or not c.buf.split(b"* users:", 1)[1].count(b"\n"):
                    c.buf += c.sock.recv(65536)
                line = c.buf.split(b"* users:", 1)[1].split(b"\n", 1)[0]
                c.buf = b""
                if len(line.split()) >= k:
                    ready += 1
            if ready < k:
                time.sleep(0.05)
        for c in conns:
            c.sock.setblocking(False)
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    total = k * m
    per = k - 1
    got = [0] * total  # deliveries of each message
    done = 0           # messages fully delivered, in order of sequence (the window's base)
    delivered = 0
    sent = 0
    pat = re.compile(rb"p(\d+) (\d+) x+")
    t0 = time.monotonic()
    while delivered < total * per:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError("deadline: %d of %d deliveries" % (delivered, total * per))
        while sent < total and sent - done < window:
            pub = 0 if redis_mode else sent % k
            text = b"p%d %d %s" % (pub, sent, PAD.encode())
            c = conns[pub]
            if redis_mode:
                c.sock.setblocking(True)
                c.sock.sendall(b"*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%d\r\n%s\r\n" % (len(text), text))
                c.sock.setblocking(False)
            else:
                c.sock.setblocking(True)
                c.sock.sendall(text + b"\n")
                c.sock.setblocking(False)
            sent += 1
        for key, _ in sel.select(0.5):
            c = key.data
            try:
                data = c.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                raise RuntimeError("connection %d closed" % c.idx)
            c.buf += data
            if redis_mode and c.idx == 0:
                c.buf = b""  # PUBLISH's integer replies
                continue
            for mt in pat.finditer(c.buf):
                seq = int(mt.group(2))
                if seq >= total or got[seq] >= per:
                    raise RuntimeError("a duplicate or foreign message %r" % mt.group(0))
                got[seq] += 1
                delivered += 1
            cut = c.buf.rfind(b"\n")
            if cut >= 0:
                c.buf = c.buf[cut + 1:]
        while done < total and got[done] == per:
            done += 1
    took = time.monotonic() - t0
    for c in conns:
        sel.unregister(c.sock)
        c.sock.close()
    return delivered, took


def measure(name, pids, ports, args, redis_mode=False):
    before = sum(cpu_ticks(p) for p in pids)
    n, secs = run_load(ports, args.k, args.lines, args.window, redis_mode)
    after = sum(cpu_ticks(p) for p in pids)
    us = (after - before) / CLK_TCK * 1e6 / n
    return {"setup": name, "deliveries": n, "seconds": secs, "cpu_us_per_delivery": us,
            "deliveries_per_s": n / secs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=40)
    ap.add_argument("--lines", type=int, default=100)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("cluster.py: redis-server is not installed (apt-get install redis-server)")
    if not os.access(CHAT, os.X_OK):
        sys.exit("cluster.py: build it first: make -C 08_framework")
    red, rport = start_redis()
    procs = [red]
    try:
        single = start_node([], "single")
        procs.append(single)
        nodes = []
        for i in range(3):
            nodes.append(start_node(["--redis", "127.0.0.1:%d" % rport, "--node", "b%d" % i],
                                    "node%d" % i))
            procs.append(nodes[-1])
        setups = [
            ("single", [single.pid], [single.port], False),
            ("1-node", [nodes[0].pid, red.pid], [nodes[0].port], False),
            ("2-nodes", [n.pid for n in nodes[:2]] + [red.pid], [n.port for n in nodes[:2]], False),
            ("3-nodes", [n.pid for n in nodes] + [red.pid], [n.port for n in nodes], False),
            ("redis", [red.pid], [rport], True),
        ]
        rows = []
        for r in range(args.repeat):
            order = setups[r % len(setups):] + setups[:r % len(setups)]
            for name, pids, ports, rm in order:
                row = measure(name, pids, ports, args, rm)
                row["repeat"] = r
                rows.append(row)
                print("  %-8s run %d: %.2f us CPU per delivery, %.0f deliveries/s" % (
                    name, r, row["cpu_us_per_delivery"], row["deliveries_per_s"]), flush=True)
    finally:
        for p in procs:
            p.stop()
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "cluster.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["setup", "repeat", "deliveries", "seconds",
                                          "cpu_us_per_delivery", "deliveries_per_s"])
        w.writeheader()
        for row in rows:
            w.writerow(row)
    base = statistics.median(r["cpu_us_per_delivery"] for r in rows if r["setup"] == "single")
    out = ["# chat_server over Redis: server CPU per delivery",
           "",
           "%s, %s, %d cores; K=%d clients, %d lines each (%d deliveries per run), window %d, "
           "%d runs alternating. Command: `python3 tests/bench/cluster.py --k %d --lines %d "
           "--window %d --repeat %d`" % (
               datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), platform.machine(),
               os.cpu_count() or 1, args.k, args.lines, args.k * args.lines * (args.k - 1),
               args.window, args.repeat, args.k, args.lines, args.window, args.repeat),
           "",
           "| setup | CPU per delivery (us), median [min-max] | vs single | deliveries/s (median) |",
           "|---|---|---|---|"]
    for name, *_ in setups:
        v = [r["cpu_us_per_delivery"] for r in rows if r["setup"] == name]
        t = [r["deliveries_per_s"] for r in rows if r["setup"] == name]
        out.append("| %s | %.2f [%.2f-%.2f] | %.2fx | %.0f |" % (
            name, statistics.median(v), min(v), max(v), statistics.median(v) / base if base else float("nan"),
            statistics.median(t)))
    text = "\n".join(out) + "\n"
    with open(os.path.join(RESULTS, "cluster.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
