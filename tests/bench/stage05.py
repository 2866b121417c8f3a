#!/usr/bin/env python3
"""stage05.py: the benchmark of 05_threads_queue (standard library only).

Two measurements, each against a fresh `05_threads_queue/server -p 0 -w W`:

1. Latency under CPU-heavy load: 10 clients send `ECHO` (one in flight each) while 4 others
   send `PRIMES 2000000` in a loop; ECHO p50/p99 for -w 0, 1, 2, 4. With -w 0 an ECHO waits
   for the PRIMES the I/O thread is computing; with workers it does not.
2. The cost of the hop: server CPU time (utime + stime from /proc/PID/stat) per request for
   -w 0 vs -w 1, with 10 connections each keeping 8 requests pipelined: `ECHO x` (answered on
   the I/O thread in both modes, the reference) and `SLEEP 0` (a job that does nothing: inline
   with -w 0, a trip through the job queue, a worker, the completion queue and the eventfd
   with -w 1). Then system calls per request from `strace -c -f` over a short run, if strace
   is installed.

3. futex calls per job: `strace -f -e trace=futex` on `-w 1` while one client sends `SLEEP 0`
   with one request in flight (nothing shared, each job pays its whole trip), counted per
   thread (the I/O thread, the worker) and per operation (FUTEX_WAIT, FUTEX_WAKE); N rounds,
   median and range. `--futex-only` runs just this; `--server PATH` measures another build
   (a patched copy) the same way.

All clients run in one thread on one selectors loop (no GIL contention between clients).
Writes tests/bench/results/stage05.md, stage05.csv and stage05_latency.svg (a bar chart of the
latency table, log scale) and prints the markdown.

  python3 tests/bench/stage05.py [--seconds S] [--quick] [--futex-only] [--server PATH]
"""

import argparse
import csv
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time

# Shared with the echo benchmark (run.py is importable: its work is under __main__).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import parse_strace_summary  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGE = os.path.join(ROOT, "05_threads_queue")
RESULTS = os.path.join(ROOT, "tests", "bench", "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")


SERVER = os.path.join(STAGE, "server")


def start_server(workers, extra=()):
    binary = SERVER
    if binary == os.path.join(STAGE, "server") and not os.path.exists(binary):
        subprocess.run(["make", "-s", "-C", STAGE], check=True)
    p = subprocess.Popen([binary, "-p", "0", "-w", str(workers), *extra], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.match(r"listening on .*:(\d+)$", line.strip())
    if not m:
        p.kill()
        raise SystemExit("server did not start: %r %s" % (line, p.stderr.read()))
    return p, int(m.group(1))


def stop_server(p):
    p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        raise SystemExit("server did not stop")
    if p.returncode != 0:
        raise SystemExit("server exited %d: %s" % (p.returncode, err[-500:]))
    return err


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


class Client:
    """One connection that keeps DEPTH copies of LINE in flight and times every reply."""

    def __init__(self, port, line, depth, record):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.line = line.encode() + b"\n"
        self.depth = depth
        self.record = record
        self.sent_at = []
        self.buf = b""
        self.done = 0
        self.out = b""

    def fill(self):
        while len(self.sent_at) < self.depth:
            self.out += self.line
            self.sent_at.append(time.perf_counter())
        self.flush()

    def flush(self):
        if self.out:
            try:
                n = self.sock.send(self.out)
                self.out = self.out[n:]
            except BlockingIOError:
                pass

    def on_readable(self, lat):
        data = self.sock.recv(1 << 16)
        if not data:
            raise SystemExit("server closed a benchmark connection")
        self.buf += data
        now = time.perf_counter()
        while b"\n" in self.buf:
            _, self.buf = self.buf.split(b"\n", 1)
            t0 = self.sent_at.pop(0)
            self.done += 1
            if self.record:
                lat.append(now - t0)


def drive(port, groups, seconds):
    """groups: list of (line, clients, depth, record). Returns (latencies of recorded, total replies)."""
    sel = selectors.DefaultSelector()
    clients = []
    for line, n, depth, record in groups:
        for _ in range(n):
            c = Client(port, line, depth, record)
            clients.append(c)
            sel.register(c.sock, selectors.EVENT_READ, c)
    lat = []
    for c in clients:
        c.fill()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for key, _ in sel.select(timeout=0.1):
            c = key.data
            c.on_readable(lat)
            c.fill()
        for c in clients:
            c.flush()
    total = sum(c.done for c in clients)
    for c in clients:
        sel.unregister(c.sock)
        c.sock.close()
    return lat, total


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))
    return values[k]


def latency_run(workers, seconds):
    p, port = start_server(workers)
    try:
        lat, _ = drive(port, [("PRIMES 2000000", 4, 1, False), ("ECHO x", 10, 1, True)], seconds)
    finally:
        err = stop_server(p)
    m = re.search(r"(\d+) jobs queued, (\d+) inline", err)
    return {"workers": workers, "echoes": len(lat), "p50_ms": pct(lat, 50) * 1000,
            "p99_ms": pct(lat, 99) * 1000, "primes_jobs": int(m.group(1)) + int(m.group(2))}


def cpu_run(workers, line, seconds):
    p, port = start_server(workers)
    try:
        c0 = cpu_seconds(p.pid)
        _, total = drive(port, [(line, 10, 8, False)], seconds)
        c1 = cpu_seconds(p.pid)
    finally:
        err = stop_server(p)
    wakes = re.search(r"(\d+) wakeups", err)
    return {"workers": workers, "request": line, "requests": total,
            "cpu_us_per_req": (c1 - c0) / total * 1e6 if total else float("nan"),
            "wakeups": int(wakes.group(1)) if wakes else 0}


def strace_run(workers, line, seconds):
    if shutil.which("strace") is None:
        return None
    p, port = start_server(workers)
    out = os.path.join(RESULTS, "stage05.strace.%d.txt" % workers)
    st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(p.pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # strace attaches to every thread; give it time before the load starts
    try:
        _, total = drive(port, [(line, 10, 8, False)], seconds)
        time.sleep(0.2)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(timeout=10)
        stop_server(p)
    _, calls = parse_strace_summary(out)
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
    return {"workers": workers, "request": line, "requests": total,
            "calls_per_req": sum(calls.values()) / total if total else float("nan"),
            "top": ", ".join("%s %.2f" % (k, v / total) for k, v in top)}


def futex_run(seconds):
    """futex calls per job, by thread and operation, one SLEEP 0 in flight on -w 1."""
    p, port = start_server(1)
    out = os.path.join(RESULTS, "stage05.futex.txt")
    st = subprocess.Popen(["strace", "-f", "-e", "trace=futex", "-o", out, "-p", str(p.pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # strace attaches to every thread; give it time before the load starts
    try:
        _, total = drive(port, [("SLEEP 0", 1, 1, False)], seconds)
        time.sleep(0.2)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(timeout=10)
        stop_server(p)
    counts = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"(\d+)\s+futex\(0x[0-9a-f]+, (FUTEX_\w+?)(?:_PRIVATE)?\b", line)
            if not m:
                continue
            who = "I/O thread" if int(m.group(1)) == p.pid else "worker"
            op = m.group(2).replace("_BITSET", "")
            counts[(who, op)] = counts.get((who, op), 0) + 1
    return total, counts


def futex_table(rounds, seconds):
    import statistics
    per = {}
    totals = []
    for _ in range(rounds):
        total, counts = futex_run(seconds)
        for k, v in counts.items():
            per.setdefault(k, []).append(v / total)
        for k in per:
            if k not in counts:
                per[k].append(0.0)
        totals.append(sum(counts.values()) / total)
    md = ["", "## futex calls per job (`strace -f -e trace=futex`, -w 1, one `SLEEP 0` in flight, "
          "%d rounds of %.0f s; median [min-max])" % (rounds, seconds), "",
          "Server: `%s`" % os.path.relpath(SERVER, ROOT), "",
          "| thread | operation | per job |", "|---|---|---|"]
    for (who, op), v in sorted(per.items()):
        md.append("| %s | %s | %.2f [%.2f-%.2f] |" % (who, op, statistics.median(v), min(v), max(v)))
    md.append("| all | all | %.2f [%.2f-%.2f] |" % (statistics.median(totals), min(totals), max(totals)))
    return md


def svg_latency(rows, path):
    """A bar chart of ECHO p50 and p99 per -w, log scale (no gnuplot needed)."""
    import math
    w, h, left, bottom, top = 520, 300, 60, 40, 30
    lo, hi = 0.01, 1000.0  # ms, the log axis
    def y(v):
        v = min(max(v, lo), hi)
        return top + (h - top - bottom) * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (w, h),
           '<text x="%d" y="18" font-size="13">05: ECHO latency while 4 clients loop PRIMES 2000000</text>' % left]
    for e in range(-2, 4):
        yy = y(10 ** e)
        out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, w - 10, yy, yy))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%g ms</text>' % (left - 4, yy + 4, 10 ** e))
    slot = (w - left - 10) / len(rows)
    for i, r in enumerate(rows):
        x0 = left + i * slot + slot * 0.15
        for k, (key, colour) in enumerate((("p50_ms", "#4477aa"), ("p99_ms", "#ee6677"))):
            yy = y(r[key])
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %.2f ms</title></rect>'
                       % (x0 + k * slot * 0.35, yy, slot * 0.33, h - bottom - yy, colour, key[:3], r[key]))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">-w %d</text>' % (x0 + slot * 0.35, h - bottom + 15, r["workers"]))
    out.append('<text x="%d" y="%d" fill="#4477aa">p50</text><text x="%d" y="%d" fill="#ee6677">p99</text>'
               % (w - 80, top + 10, w - 50, top + 10))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def machine():
    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()
    return "%d cores, Linux %s, %s, -O2 -g" % (os.cpu_count(), platform.release(),
                                              cc[0] if cc else "cc ?")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="per run")
    ap.add_argument("--quick", action="store_true", help="1 s runs")
    ap.add_argument("--futex-only", action="store_true", help="only the futex count, printed")
    ap.add_argument("--rounds", type=int, default=5, help="futex count: rounds")
    ap.add_argument("--server", help="the server binary to measure (default: the stage's)")
    a = ap.parse_args()
    secs = 1.0 if a.quick else a.seconds
    os.makedirs(RESULTS, exist_ok=True)
    global SERVER
    if a.server:
        SERVER = os.path.abspath(a.server)
    if a.futex_only:
        if shutil.which("strace") is None:
            raise SystemExit("strace is not installed")
        print("\n".join(futex_table(a.rounds, 2.0)))
        return

    lat = [latency_run(w, secs) for w in (0, 1, 2, 4)]
    cpu = [cpu_run(w, line, secs) for line in ("ECHO x", "SLEEP 0") for w in (0, 1)]
    sc = [r for r in (strace_run(w, line, 1.0) for line in ("ECHO x", "SLEEP 0") for w in (0, 1)) if r]

    md = ["# 05_threads_queue benchmark", "", "Machine: " + machine(), "",
          "## ECHO latency while 4 clients loop `PRIMES 2000000` (10 ECHO clients, 1 in flight each)", "",
          "| -w | ECHOs | p50 ms | p99 ms | PRIMES done |", "|---|---|---|---|---|"]
    for r in lat:
        md.append("| %d | %d | %.2f | %.2f | %d |" % (r["workers"], r["echoes"], r["p50_ms"], r["p99_ms"], r["primes_jobs"]))
    md += ["", "## Server CPU per request (10 connections x 8 pipelined)", "",
           "| request | -w | requests | CPU us/request | eventfd wakeups |", "|---|---|---|---|---|"]
    for r in cpu:
        md.append("| `%s` | %d | %d | %.2f | %d |" % (r["request"], r["workers"], r["requests"], r["cpu_us_per_req"], r["wakeups"]))
    by = {(r["request"], r["workers"]): r["cpu_us_per_req"] for r in cpu}
    md.append("")
    md.append("Ratio -w 1 / -w 0: ECHO %.2f, SLEEP 0 %.2f" % (by[("ECHO x", 1)] / by[("ECHO x", 0)],
                                                            by[("SLEEP 0", 1)] / by[("SLEEP 0", 0)]))
    if sc:
        md += ["", "## System calls per request (`strace -c -f`, 1 s)", "",
               "| request | -w | requests | calls/request | most frequent (per request) |", "|---|---|---|---|---|"]
        for r in sc:
            md.append("| `%s` | %d | %d | %.2f | %s |" % (r["request"], r["workers"], r["requests"], r["calls_per_req"], r["top"]))
        md += futex_table(a.rounds, 2.0)
    text = "\n".join(md) + "\n"
    svg_latency(lat, os.path.join(RESULTS, "stage05_latency.svg"))
    with open(os.path.join(RESULTS, "stage05.md"), "w") as f:
        f.write(text)
    with open(os.path.join(RESULTS, "stage05.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["table", "request", "workers", "count", "p50_ms", "p99_ms", "cpu_us_per_req", "calls_per_req"])
        for r in lat:
            w.writerow(["latency", "ECHO x", r["workers"], r["echoes"], "%.3f" % r["p50_ms"], "%.3f" % r["p99_ms"], "", ""])
        for r in cpu:
            w.writerow(["cpu", r["request"], r["workers"], r["requests"], "", "", "%.3f" % r["cpu_us_per_req"], ""])
        for r in sc:
            w.writerow(["syscalls", r["request"], r["workers"], r["requests"], "", "", "", "%.3f" % r["calls_per_req"]])
    print(text)


if __name__ == "__main__":
    main()
