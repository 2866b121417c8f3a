#!/usr/bin/env python3
"""gateway: 08_framework's gateway, its states run in parallel beside --serial, one run.

Starts four examples/backend (followers, posts, bio, score; --delay MS) and two gateways on
them, one parallel and one --serial, then alternates: one /profile request on each, N times
(latency of one request alone), then C clients at once on each for --seconds (requests in
flight in one main thread). Prints a markdown table (median, min-max) and writes CSV to
tests/bench/results/gateway.csv (the medians) and gateway_runs.csv (every request alone).
Standard library only.

  python3 tests/bench/gateway.py [--delay 100] [-n 20] [-c 50] [--seconds 2]
"""

import argparse
import os
import socket
import statistics
import sys
import threading
import time

import peers

BIN = peers.EX


def start(args):
    try:
        return peers.start_listening(args + ["-p", "0"])
    except RuntimeError as e:
        sys.exit("no 'listening on' from %s: %s" % (args[0], e))


def request(port, user, s=None):
    own = s is None
    if own:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    t0 = time.monotonic()
    s.sendall(b"GET /profile?user=%d HTTP/1.1\r\nHost: b\r\n\r\n" % user)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, body = buf.split(b"\r\n\r\n", 1)
    n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    while len(body) < n:
        body += s.recv(4096)
    if not head.startswith(b"HTTP/1.1 200") or b"errors" in body:
        sys.exit("bad answer: %r" % (head + body))
    if own:
        s.close()
    return (time.monotonic() - t0) * 1000


def load(port, clients, seconds):
    done = [0] * clients
    stop = time.monotonic() + seconds

    def run(i):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        while time.monotonic() < stop:
            request(port, 10 * i + 1, s)
            done[i] += 1
        s.close()

    th = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in th:
        t.start()
    for t in th:
        t.join()
    return sum(done) / (time.monotonic() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay", type=int, default=100)
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("-c", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=2)
    a = ap.parse_args()
    procs, ports = [], {}
    try:
        for name in ("followers", "posts", "bio", "score"):
            p, ports[name] = start([os.path.join(BIN, "backend"), "--name", name, "--delay", str(a.delay)])
            procs.append(p)
        base = [os.path.join(BIN, "gateway")] + sum([["--" + k, str(v)] for k, v in ports.items()], [])
        gp, par = start(base)
        procs.append(gp)
        gs, ser = start(base + ["--serial"])
        procs.append(gs)
        time.sleep(0.3)  # their four connections each (a benchmark, not a test)
        lat = {"parallel": [], "serial": []}
        for i in range(a.n):
            lat["parallel"].append(request(par, 10 * i + 1))
            lat["serial"].append(request(ser, 10 * i + 1))
        rps = {"parallel": load(par, a.c, a.seconds), "serial": load(ser, a.c, a.seconds)}
    finally:
        for p in procs:
            peers.stop(p)
    rows = []
    for k in ("parallel", "serial"):
        v = lat[k]
        rows.append((k, statistics.median(v), min(v), max(v), rps[k]))
    ratio = rows[0][1] / rows[1][1]
    print("gateway /profile, backends --delay %d ms, %d requests alone each, then %d clients for %g s"
          % (a.delay, a.n, a.c, a.seconds))
    print()
    print("| gateway | latency median ms | min-max | requests/s with %d clients |" % a.c)
    print("|---|---|---|---|")
    for r in rows:
        print("| %s | %.1f | %.1f-%.1f | %.0f |" % r)
    print()
    print("parallel / serial latency: %.2f" % ratio)
    out = peers.RESULTS
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gateway.csv"), "w") as f:
        f.write("gateway,delay_ms,latency_median_ms,latency_min_ms,latency_max_ms,clients,rps\n")
        for r in rows:
            f.write("%s,%d,%.1f,%.1f,%.1f,%d,%.0f\n" % (r[0], a.delay, r[1], r[2], r[3], a.c, r[4]))
    # Every request alone, in the order they alternated (request i: parallel, then serial).
    with open(os.path.join(out, "gateway_runs.csv"), "w") as f:
        f.write("gateway,run,delay_ms,latency_ms\n")
        for k in ("parallel", "serial"):
            for i, ms in enumerate(lat[k]):
                f.write("%s,%d,%d,%.2f\n" % (k, i + 1, a.delay, ms))


if __name__ == "__main__":
    main()
