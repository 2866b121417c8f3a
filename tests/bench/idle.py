#!/usr/bin/env python3
"""idle.py: memory per idle connection, 08_framework's servers beside redis-server and nginx.

Each server is started alone; K connections are opened to it, each sends one request and
reads its whole answer (so that whatever a connection keeps after its first message is kept),
then all K stay open and silent. The figure is the growth of the server's resident memory
(VmRSS in /proc/PID/status; nginx: its one worker) from before the first connection to after
the last answer, divided by K: heap and everything else the process touched for them, kernel
socket buffers not included (they are not in RSS). Servers, one request each:

  echo_t0     08's examples/echo -t 0            8 bytes, echoed
  kv_t0       08's examples/kv_server -t 0       PING -> +PONG
  http_t0     08's examples/http_server -t 0     GET / (keep-alive) -> 200
  redis       redis-server --save '' --appendonly no   PING -> +PONG
  nginx       nginx, one worker, access log off  GET / (keep-alive) -> 200 (return 200)

A peer that is not installed is skipped, and the table says so. K defaults to 10000: the
script raises its open-file limit to the hard limit (the servers inherit it) and lowers K to
fit, saying so.

  python3 tests/bench/idle.py [--conns K] [--repeat N] [--servers echo_t0,kv_t0,http_t0,redis,nginx]

Each server is measured --repeat times (default 3), alternating (each repetition rotates the
order); the table gives the median with its range. Writes tests/bench/results/idle.md and
idle.csv, one row per run (BENCH_OUT: another folder).
"""
import argparse
import os
import resource
import selectors
import shutil
import socket
import statistics
import sys
import tempfile
import time

import peers
from peers import EX, RESULTS, rss_kib

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
SERVERS = {
    # name: (how it starts, the request, how to tell the answer is whole)
    "echo_t0": ("ours", [os.path.join(EX, "echo"), "-t", "0"], b"idle-one", lambda b: len(b) >= 8),
    "kv_t0": ("ours", [os.path.join(EX, "kv_server"), "-t", "0"], b"PING\r\n", lambda b: b.endswith(b"\r\n")),
    "http_t0": ("ours", [os.path.join(EX, "http_server"), "-t", "0"], GET, None),
    "redis": ("redis", None, b"PING\r\n", lambda b: b.endswith(b"\r\n")),
    "nginx": ("nginx", None, GET, None),
}

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
worker_rlimit_nofile %(nofile)d;
pid %(prefix)s/nginx.pid;
error_log %(prefix)s/error.log warn;
events { worker_connections %(conns)d; }
http {
    access_log off;
    client_body_temp_path %(prefix)s/body;
    keepalive_timeout 600s;
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
        location / {
            default_type text/plain;
            return 200 "hello\\n";
        }
    }
}
"""


def http_whole(b):
    """An HTTP response with a Content-Length body, read whole."""
    head, sep, body = b.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # poll interval of a loop with a deadline
    raise RuntimeError("nothing listens on port %d" % port)


def start(name, conns, tmp):
    """Returns (process, port, pid to measure)."""
    kind, argv, _, _ = SERVERS[name]
    if kind == "ours":
        p, port = peers.start_listening(argv + ["-p", "0"])
        return p, port, p.pid
    if kind == "redis":
        p, port = peers.start_redis(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                     "--maxclients", str(conns + 32), "--tcp-backlog", "4096"])
        return p, port, p.pid
    return peers.start_nginx(lambda prefix, port: NGINX_CONF % {
        "prefix": prefix, "port": port, "conns": conns + 64, "nofile": conns * 2 + 128}, tmp, wait_port)


def open_idle(port, conns, request, whole, timeout=120.0):
    """K connections, each with its first request answered whole; returns the sockets."""
    whole = whole or http_whole
    sel = selectors.DefaultSelector()
    socks, got = [], {}
    deadline = time.monotonic() + timeout
    for i in range(conns):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        got[s] = bytearray()
        sel.register(s, selectors.EVENT_WRITE)
        # At most 500 handshakes in flight: the listen backlog stays unfilled.
        while len(sel.get_map()) >= 500 or (i == conns - 1 and sel.get_map()):
            if time.monotonic() > deadline:
                raise RuntimeError("%d connections still unanswered after %.0f s" % (len(sel.get_map()), timeout))
            for key, ev in sel.select(1.0):
                c = key.fileobj
                if ev & selectors.EVENT_WRITE:
                    err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise RuntimeError("connect: %s" % os.strerror(err))
                    c.send(request)
                    sel.modify(c, selectors.EVENT_READ)
                else:
                    chunk = c.recv(65536)
                    if not chunk:
                        raise RuntimeError("the server closed a connection before answering")
                    got[c] += chunk
                    if whole(bytes(got[c])):
                        sel.unregister(c)
    sel.close()
    return socks


def measure(name, conns, tmp):
    p, port, pid = start(name, conns, tmp)
    socks = []
    try:
        time.sleep(0.2)  # the server settles after its start (allocations of its first turns)
        before = rss_kib(pid)
        socks = open_idle(port, conns, SERVERS[name][2], SERVERS[name][3])
        time.sleep(0.5)  # answers sent, buffers released at the ends of turns: the idle state
        after = rss_kib(pid)
        return before, after
    finally:
        for s in socks:
            s.close()
        peers.stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--servers", default="echo_t0,kv_t0,http_t0,redis,nginx")
    ap.add_argument("--repeat", type=int, default=3, help="runs per server, alternating (default 3)")
    a = ap.parse_args()
    load = peers.load_average()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * a.conns + 256  # ours and, on loopback, the server's ends in the same machine
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    conns = a.conns
    if soft < conns + 256:
        conns = max(100, soft - 256)
        print("idle.py: open-file limit %d: %d connections instead of %d" % (soft, conns, a.conns), file=sys.stderr)
    names, skipped = [], []
    for n in a.servers.split(","):
        kind = SERVERS[n][0]
        tool = {"redis": "redis-server", "nginx": "nginx"}.get(kind)
        if tool and shutil.which(tool) is None:
            skipped.append(n)
        elif kind == "ours" and not os.access(SERVERS[n][1][0], os.X_OK):
            skipped.append(n)
        else:
            names.append(n)
    runs = {n: [] for n in names}  # name -> [(run, before, after, bytes per connection)]
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeat):
            # Alternating: every repetition measures each server once, the order rotated.
            order = names[rep % len(names):] + names[:rep % len(names)] if names else []
            for n in order:
                before, after = measure(n, conns, tmp)
                per = (after - before) * 1024.0 / conns
                runs[n].append((rep + 1, before, after, per))
                print("idle.py: [%d/%d] %-8s %d -> %d KiB: %.0f bytes per idle connection"
                      % (rep + 1, a.repeat, n, before, after, per), file=sys.stderr)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "idle.csv"), "w") as f:
        f.write("server,run,conns,rss_before_kib,rss_after_kib,bytes_per_conn\n")
        for n in names:
            for rep, b, af, per in runs[n]:
                f.write("%s,%d,%d,%d,%d,%.0f\n" % (n, rep, conns, b, af, per))
    md = ["# Memory per idle connection: 08's servers beside redis-server and nginx", "",
          "%d connections, each answered once, then idle; the server's resident memory (VmRSS; "
          "nginx: its worker) before the first and after the last, divided by %d. Kernel socket "
          "buffers are not in it. %d runs per server, alternating; median (min–max). Load average "
          "at the start: %s. `python3 tests/bench/idle.py --conns %d --repeat %d`."
          % (conns, conns, a.repeat, load, conns, a.repeat), "",
          "| server | RSS before (KiB) | RSS after (KiB) | bytes per idle connection |", "|---|---|---|---|"]
    for n in names:
        per = [r[3] for r in runs[n]]
        md.append("| %s | %d | %d | %.0f (%.0f–%.0f) |" % (
            n, statistics.median(r[1] for r in runs[n]), statistics.median(r[2] for r in runs[n]),
            statistics.median(per), min(per), max(per)))
    if skipped:
        md += ["", "Skipped (not installed or not built): %s." % ", ".join(skipped)]
    with open(os.path.join(RESULTS, "idle.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        sys.exit("idle.py: %s" % e)
