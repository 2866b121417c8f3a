#!/usr/bin/env python3
"""kv.py: 08_framework's kv_server beside redis-server under redis-benchmark.

  kv_t0       examples/kv_server -t 0        (the main loop does the I/O and the commands)
  redis       redis-server --save '' --appendonly no   (one thread does it all; persistence off)
  kv_t1       examples/kv_server -t 1        (one io thread moves the bytes, main runs commands)
  kv_t2       examples/kv_server -t 2
  redis_io2   redis-server ... --io-threads 2 --io-threads-do-reads yes

Load: `redis-benchmark -c 50 -n N -t TEST [-P 16]` for each TEST of ping_inline, ping_mbulk,
set and get, without and with pipelining (-P 16; N is 16 times larger there; redis_io2 runs
N/20, see FEWER). Figures: the
server's CPU time per request (utime + stime of the whole process from /proc/PID/stat, over
the run) and requests/s (redis-benchmark's). Runs alternate between the servers; the median of
--repeat runs, with the range of the CPU figure. Server on CPU 0, redis-benchmark on CPU 1
(taskset, where there are 2 cores). redis-server cannot take port 0: the script asks the
kernel for a free port and hands it over. Any redis-benchmark error is an error, never a
figure: the script exits 1. Writes results/kv.md and results/kv.csv.

  python3 tests/bench/kv.py [--repeat N] [--requests N] [--servers kv_t0,redis,...]
"""

import argparse
import csv
import datetime
import io
import os
import shutil
import statistics
import subprocess
import sys
import time

import peers
from peers import CLK_TCK, RESULTS, cpu_ticks

KV = os.path.join(peers.EX, "kv_server")
TESTS = ("ping_inline", "ping_mbulk", "set", "get")
REDIS_ARGS = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--protected-mode", "no",
              "--daemonize", "no", "--logfile", ""]
SERVERS = {
    "kv_t0": ("kv", ["-t", "0"]),
    "redis": ("redis", []),
    "kv_t1": ("kv", ["-t", "1"]),
    "kv_t2": ("kv", ["-t", "2"]),
    "redis_io2": ("redis", ["--io-threads", "2", "--io-threads-do-reads", "yes"]),
}
# redis_io2 runs 1/20 of the requests: its io threads busy-wait, and on the core the server is
# pinned to it serves about 1700 requests/s at 350 us of CPU each, so the full count would take
# an hour of `make bench`; a twentieth still spans as many clock ticks as the others' runs.
FEWER = {"redis_io2": 20}


def start(kind, args, pin):
    if kind != "kv":
        return peers.start_redis(REDIS_ARGS + args, pin)
    p, port = peers.start_listening(pin + [KV, "-p", "0"] + args)
    try:
        peers.wait_ping(port, time.monotonic() + 10)
    except RuntimeError:
        peers.stop(p)
        raise
    return p, port


def one_run(port, pid, test, pipeline, n, pin):
    cmd = pin + ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(n), "-t", test,
                 "-P", str(pipeline), "--csv"]
    t0 = cpu_ticks(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    ticks = cpu_ticks(pid) - t0
    rows = [r for r in csv.reader(io.StringIO(out.stdout)) if r and r[0] != "test"]
    if out.returncode != 0 or len(rows) != 1 or "rror" in out.stdout + out.stderr or "WARN" in out.stdout + out.stderr:
        raise RuntimeError("redis-benchmark %s -P %d failed (%d): %s %s"
                           % (test, pipeline, out.returncode, out.stdout.strip()[-300:], out.stderr.strip()[-300:]))
    return {"rps": float(rows[0][1]), "cpu_us": ticks * 1e6 / CLK_TCK / n}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100000, help="per run without -P (x16 with -P 16)")
    ap.add_argument("--servers", default=",".join(SERVERS))
    a = ap.parse_args()
    if not os.access(KV, os.X_OK):
        print("kv.py: no %s: build it with make -C 08_framework" % KV, file=sys.stderr)
        return 2
    if shutil.which("redis-benchmark") is None:
        print("kv.py: redis-benchmark is not installed (apt-get install redis-tools)", file=sys.stderr)
        return 2
    names = [s for s in a.servers.split(",") if s in SERVERS]
    skipped = []
    if shutil.which("redis-server") is None:
        skipped = [s for s in names if SERVERS[s][0] == "redis"]
        names = [s for s in names if s not in skipped]
    srv_pin, cli_pin, pin_note = peers.pinning("redis-benchmark")
    started = datetime.datetime.now()
    load = peers.load_average()
    runs = {}
    procs = {}
    points = [(t, p) for p in (1, 16) for t in TESTS]
    try:
        for name in names:
            procs[name] = start(SERVERS[name][0], SERVERS[name][1], srv_pin)
        for rep in range(a.repeat):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for test, pl in points:
                for name in order:
                    p, port = procs[name]
                    r = one_run(port, p.pid, test, pl, max(1, a.requests // FEWER.get(name, 1)) * pl, cli_pin)
                    runs.setdefault((name, test, pl), []).append(r)
                    print("  [%d/%d] %-10s %-11s -P %-2d %10.0f req/s  %.2f us CPU/req"
                          % (rep + 1, a.repeat, name, test, pl, r["rps"], r["cpu_us"]), file=sys.stderr)
    finally:
        for p, _ in procs.values():
            peers.stop(p)

    def med(name, test, pl, key):
        return statistics.median(r[key] for r in runs[(name, test, pl)])

    def rng(name, test, pl):
        v = [r["cpu_us"] for r in runs[(name, test, pl)]]
        return "%.2f–%.2f" % (min(v), max(v))

    cols = ["%s -P %d" % (t, p) for t, p in points]
    md = ["# 08_framework: kv_server beside redis-server (redis-benchmark)", "",
          "Produced by `python3 tests/bench/kv.py --repeat %d --requests %d%s`. `redis-benchmark -c 50 "
          "-n N -t TEST [-P 16]`, N = %d (x16 with -P 16; redis_io2: N/20); medians of %d runs in alternation; %s. "
          "Machine: %d cores, %s; load average at the start: %s. Started %s.%s"
          % (a.repeat, a.requests, "" if a.servers == ",".join(SERVERS) else " --servers " + a.servers,
             a.requests, a.repeat, pin_note, os.cpu_count() or 1, os.uname().release, load,
             started.strftime("%Y-%m-%d %H:%M"),
             " Skipped (not installed): %s." % ", ".join(skipped) if skipped else ""), ""]
    md += ["## Server CPU time per request, µs (range over the runs)", "",
           "| server | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name in names:
        md.append("| %s | %s |" % (name, " | ".join("%.2f (%s)" % (med(name, t, p, "cpu_us"), rng(name, t, p))
                                                     for t, p in points)))
    md += ["", "## Requests per second (redis-benchmark's)", "",
           "| server | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name in names:
        md.append("| %s | %s |" % (name, " | ".join("%.0f" % med(name, t, p, "rps") for t, p in points)))
    pairs = [("kv_t0", "redis"), ("kv_t1", "redis_io2"), ("kv_t2", "redis_io2")]
    pairs = [(x, y) for x, y in pairs if x in names and y in names]
    if pairs:
        md += ["", "## Ratios of server CPU per request (median / median; below 1: kv_server spends less)", "",
               "| pair | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for x, y in pairs:
            md.append("| %s / %s | %s |" % (x, y, " | ".join("%.2f" % (med(x, t, p, "cpu_us") / med(y, t, p, "cpu_us"))
                                                             for t, p in points)))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "kv.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(RESULTS, "kv.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["server", "test", "pipeline", "run", "requests_per_s", "server_cpu_us_per_request"])
        for (name, test, pl), rs in sorted(runs.items()):
            for i, r in enumerate(rs):
                w.writerow([name, test, pl, i + 1, "%.0f" % r["rps"], "%.3f" % r["cpu_us"]])
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print("kv.py: %s" % e, file=sys.stderr)
        sys.exit(1)
