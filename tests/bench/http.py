#!/usr/bin/env python3
"""http.py: 08_framework's http_server beside nginx under wrk.

  http_t0   examples/http_server -t 0   (the main loop does the I/O and the routing)
  nginx     nginx, one worker, access log off, `return 200 "<the same text>"`, in its own
            temporary prefix and config (keepalive_requests raised so that, like http_server,
            it never closes a keep-alive connection on its own during a run)

Load: `wrk -t1 -c50 -d3s http://127.0.0.1:PORT/`, keep-alive, and the same with
`-H 'Connection: close'` (a new connection per request). Figures: the server's CPU time per
request (the process's CPU time over the run, in nanoseconds from /proc/PID/task/*/schedstat,
utime + stime in clock ticks where that is missing: the http_server process; nginx's worker
process) and requests/s (wrk's). Runs alternate between the servers; medians of
--repeat runs, with the range of the CPU figure. Server on CPU 0, wrk on CPU 1 (taskset, where
there are 2 cores). nginx cannot take port 0: the script asks the kernel for a free port and
hands it over. A wrk run with socket errors or non-2xx answers is an error, never a figure:
the script exits 1. Writes results/http.md and results/http.csv, and prints the table.

  python3 tests/bench/http.py [--repeat N] [--duration S] [--servers http_t0,nginx]
                              [--also NAME=PATH ...]

--also NAME=PATH adds another http_server build (started like http_t0, with PATH) to the
alternation, e.g. the commit before a change built in a scratch clone: its figures and its ratio
to nginx come from the same runs, side by side. The ratio rows are the median of the ratios of
the runs made side by side (the same repetition), with their range.
"""

import argparse
import csv
import datetime
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import peers
from peers import CLK_TCK, RESULTS, cpu_ns, cpu_ticks

HTTP = os.path.join(peers.EX, "http_server")
BODY = "Hello from the rx http_server.\n"  # http_server's GET / (examples/http_server.c)
MODES = (("keep-alive", []), ("close", ["-H", "Connection: close"]))

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid %(prefix)s/nginx.pid;
error_log %(prefix)s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %(prefix)s/body;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            default_type text/plain;
            return 200 "%(body)s";
        }
    }
}
"""


def wait_get(port, deadline):
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                got = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                if got.startswith(b"HTTP/1.1 200") and got.endswith(BODY.encode()):
                    return
        except OSError:
            pass
        time.sleep(0.05)  # poll interval of a loop with a deadline
    raise RuntimeError("no 200 with the body from port %d" % port)


def start(name, pin, tmp, binary=HTTP):
    """Returns (process, port, pid to measure)."""
    if name == "nginx":
        body = BODY.replace("\n", "\\n")
        return peers.start_nginx(lambda prefix, port: NGINX_CONF % {"prefix": prefix, "port": port, "body": body},
                                 tmp, wait_get, pin)
    p, port = peers.start_listening(pin + [binary, "-p", "0", "-t", "0"])
    try:
        wait_get(port, time.monotonic() + 10)
    except RuntimeError:
        peers.stop(p)
        raise
    return p, port, p.pid


def one_run(port, pid, extra, duration, pin):
    cmd = pin + ["wrk", "-t1", "-c50", "-d%ds" % duration] + extra + ["http://127.0.0.1:%d/" % port]
    t0, n0 = cpu_ticks(pid), cpu_ns(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration * 10 + 30)
    ticks, n1 = cpu_ticks(pid) - t0, cpu_ns(pid)
    # Nanoseconds where schedstat is there (a 3 s run at this cost is only 10-20 ticks).
    cpu_s = (n1 - n0) / 1e9 if n0 is not None and n1 is not None else ticks / CLK_TCK
    text = out.stdout + out.stderr
    n = re.search(r"^\s*(\d+) requests in", text, re.M)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    if out.returncode != 0 or not n or not rps or "Socket errors" in text or "Non-2xx" in text:
        raise RuntimeError("wrk %s failed (%d): %s" % (" ".join(extra), out.returncode, text.strip()[-400:]))
    n = int(n.group(1))
    return {"rps": float(rps.group(1)), "cpu_us": cpu_s * 1e6 / max(n, 1), "requests": n}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run (default 3)")
    ap.add_argument("--servers", default="http_t0,nginx")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=PATH",
                    help="another http_server binary in the alternation (repeatable)")
    a = ap.parse_args()
    also = {}
    for spec in a.also:
        name, sep, path = spec.partition("=")
        if not sep or not name or name in ("http_t0", "nginx") or not os.access(path, os.X_OK):
            print("http.py: --also wants NAME=PATH, a new name and an executable: %r" % spec, file=sys.stderr)
            return 2
        also[name] = path
    if not os.access(HTTP, os.X_OK):
        print("http.py: no %s: build it with make -C 08_framework" % HTTP, file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("http.py: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    names = [s for s in a.servers.split(",") if s in ("http_t0", "nginx")] + list(also)
    skipped = []
    if "nginx" in names and shutil.which("nginx") is None:
        skipped.append("nginx")
        names.remove("nginx")
    srv_pin, cli_pin, pin_note = peers.pinning("wrk")
    started = datetime.datetime.now()
    load = peers.load_average()
    runs = {}
    procs = {}
    tmp = tempfile.mkdtemp(prefix="bench-http.")
    try:
        for name in names:
            procs[name] = start(name, srv_pin, tmp, also.get(name, HTTP))
        for rep in range(a.repeat):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for mode, extra in MODES:
                for name in order:
                    p, port, pid = procs[name]
                    r = one_run(port, pid, extra, a.duration, cli_pin)
                    runs.setdefault((name, mode), []).append(r)
                    print("  [%d/%d] %-8s %-10s %9.0f req/s  %.2f us CPU/req"
                          % (rep + 1, a.repeat, name, mode, r["rps"], r["cpu_us"]), file=sys.stderr)
    finally:
        for p, _, _ in procs.values():
            peers.stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name, mode, key):
        return statistics.median(r[key] for r in runs[(name, mode)])

    def rng(name, mode, key):
        v = [r[key] for r in runs[(name, mode)]]
        return "%.2f–%.2f" % (min(v), max(v)) if key == "cpu_us" else "%.0f–%.0f" % (min(v), max(v))

    modes = [m for m, _ in MODES]
    md = ["# 08_framework: http_server beside nginx (wrk)", "",
          "Produced by `python3 tests/bench/http.py --repeat %d --duration %d`. `wrk -t1 -c50 -d%ds`, "
          "keep-alive and with `-H 'Connection: close'`; medians of %d runs in alternation (range in "
          "brackets); %s. nginx: one worker, access log off, `return 200` of the same %d-byte body "
          "(its answer also carries Server and Date headers). CPU: the http_server process, nginx's "
          "worker (schedstat, in ns). Machine: %d cores, %s; load average at the start: %s. Started %s.%s"
          % (a.repeat, a.duration, a.duration, a.repeat, pin_note, len(BODY), os.cpu_count() or 1,
             os.uname().release, load, started.strftime("%Y-%m-%d %H:%M"),
             " Skipped (not installed): %s." % ", ".join(skipped) if skipped else ""), "",
          "| server | " + " | ".join("CPU µs/req, %s" % m for m in modes) + " | "
          + " | ".join("req/s, %s" % m for m in modes) + " |",
          "|---|" + "---:|" * (2 * len(modes))]
    for name in names:
        md.append("| %s | %s | %s |" % (
            name, " | ".join("%.2f (%s)" % (med(name, m, "cpu_us"), rng(name, m, "cpu_us")) for m in modes),
            " | ".join("%.0f (%s)" % (med(name, m, "rps"), rng(name, m, "rps")) for m in modes)))
    def ratio(name, mode, key):
        """The median (min–max) of the ratios NAME / nginx of the runs of one repetition."""
        v = [r[key] / p[key] for r, p in zip(runs[(name, mode)], runs[("nginx", mode)])]
        return "%.2f (%.2f–%.2f)" % (statistics.median(v), min(v), max(v))

    for name in names:
        if name != "nginx" and "nginx" in names:
            md.append("| %s / nginx | %s | %s |" % (
                name, " | ".join(ratio(name, m, "cpu_us") for m in modes),
                " | ".join(ratio(name, m, "rps") for m in modes)))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "http.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(RESULTS, "http.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["server", "mode", "run", "requests_per_s", "server_cpu_us_per_request", "requests"])
        for (name, mode), rs in sorted(runs.items()):
            for i, r in enumerate(rs):
                w.writerow([name, mode, i + 1, "%.0f" % r["rps"], "%.3f" % r["cpu_us"], r["requests"]])
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print("http.py: %s" % e, file=sys.stderr)
        sys.exit(1)
