#!/usr/bin/env python3
"""stage08.py: the pingpong benchmark of 08_framework (its README, section 5).

08's own load-test pair: examples/pingpong_client keeps one length-prefixed message in flight
on each of C connections and checks every byte. For C = 1, 10 and 100 it is run against:

  04_epoll    04_epoll/server -m lt             (a raw echo: it echoes the frames unchanged)
  libevent    tests/bench/peers/libevent_echo   (skipped where libevent is not installed)
  08_echo_t0  08_framework/examples/echo -t 0   (raw codec, the main loop does the I/O)
  08_pp_t0    08_framework/examples/pingpong_server -t 0   (length codec: frames, not bytes)
  08_pp_t1    08_framework/examples/pingpong_server -t 1   (one io thread: the hop)

Server on CPU 0, client on CPU 1 (taskset, where there are 2 cores), runs in alternation, the
median of --repeat runs per point: msgs/s, p50 and p99 (the client's), and the server's CPU
time per message (utime + stime from /proc/PID/stat over the run). A wrong byte or a failed
connect is an error, never a figure: the script exits 1. Writes results/stage08.md.

  python3 tests/bench/stage08.py [--repeat N] [--secs S] [--size B]
"""

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys

import peers
from peers import CLK_TCK, RESULTS, ROOT, cpu_ticks

CLIENT = os.path.join(peers.EX, "pingpong_client")
SERVERS = [
    ("04_epoll", "04_epoll/server", ["-m", "lt"]),
    ("libevent", "tests/bench/peers/libevent_echo", []),
    ("08_echo_t0", "08_framework/examples/echo", ["-t", "0"]),
    ("08_pp_t0", "08_framework/examples/pingpong_server", ["-t", "0"]),
    ("08_pp_t1", "08_framework/examples/pingpong_server", ["-t", "1"]),
]
CONNS = (1, 10, 100)
LINE = re.compile(r"pingpong: (\d+) conns, (\d+) msgs, (\d+) msgs/s, p50 (\d+) us, p99 (\d+) us, errors (\d+)")


def start(path, args, pin):
    return peers.start_listening(pin + [os.path.join(ROOT, path), "-p", "0"] + args)


def stop(p):
    peers.stop(p, timeout=5)


def one_run(port, pid, conns, secs, size, pin):
    t0 = cpu_ticks(pid)
    out = subprocess.run(pin + [CLIENT, "-p", str(port), "-c", str(conns), "-s", str(size),
                                "--duration", str(secs)],
                         capture_output=True, text=True, timeout=secs + 30)
    ticks = cpu_ticks(pid) - t0
    m = LINE.search(out.stdout)
    if out.returncode != 0 or not m or int(m.group(6)) != 0:
        raise RuntimeError("pingpong_client failed (%d): %s %s" % (out.returncode, out.stdout.strip(), out.stderr.strip()[-300:]))
    msgs = int(m.group(2))
    return {"msgs_per_s": int(m.group(3)), "p50": int(m.group(4)), "p99": int(m.group(5)),
            "cpu_us": ticks * 1e6 / CLK_TCK / msgs if msgs else 0.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--secs", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    if not os.access(CLIENT, os.X_OK):
        print("stage08.py: no %s: build it with make -C 08_framework" % CLIENT, file=sys.stderr)
        return 2
    srv_pin, cli_pin, pin_note = peers.pinning("client")
    servers = [s for s in SERVERS if os.access(os.path.join(ROOT, s[1]), os.X_OK)]
    skipped = [s[0] for s in SERVERS if s not in servers]
    started = datetime.datetime.now()
    runs = {}
    procs = {}
    try:
        for name, path, args in servers:
            procs[name] = start(path, args, srv_pin)
        for rep in range(a.repeat):
            order = servers[rep % len(servers):] + servers[:rep % len(servers)]
            for conns in CONNS:
                for name, _, _ in order:
                    p, port = procs[name]
                    r = one_run(port, p.pid, conns, a.secs, a.size, cli_pin)
                    runs.setdefault((name, conns), []).append(r)
                    print("  [%d/%d] %-11s %3d conns  %8d msgs/s  p50 %5d us  p99 %6d us  %.2f us CPU/msg"
                          % (rep + 1, a.repeat, name, conns, r["msgs_per_s"], r["p50"], r["p99"], r["cpu_us"]),
                          file=sys.stderr)
    finally:
        for p, _ in procs.values():
            stop(p)

    def med(name, conns, key):
        return statistics.median(r[key] for r in runs[(name, conns)])

    def spread(name, conns, key):
        v = [r[key] for r in runs[(name, conns)]]
        return "%g–%g" % (min(v), max(v)) if key != "cpu_us" else "%.2f–%.2f" % (min(v), max(v))

    md = ["# 08_framework: pingpong (examples/pingpong_client)", "",
          "Produced by `python3 tests/bench/stage08.py` (`make bench` runs it). Medians of %d runs "
          "of %g s per point, in alternation; %d-byte messages, one in flight per connection; %s. "
          "Machine: %d cores, %s; load average at the start: %s."
          % (a.repeat, a.secs, a.size, pin_note, os.cpu_count() or 1, os.uname().release,
             " ".join(open("/proc/loadavg").read().split()[:3])),
          "", "Started %s.%s" % (started.strftime("%Y-%m-%d %H:%M"),
                                  " Skipped (not built or not installed): %s." % ", ".join(skipped) if skipped else ""), ""]
    for key, title, digits in (("msgs_per_s", "Messages per second", 0), ("p50", "p50 latency, µs", 0),
                               ("p99", "p99 latency, µs", 0), ("cpu_us", "Server CPU time per message, µs (range over the runs)", 2)):
        md += ["## " + title, "", "| server | " + " | ".join("%d conns" % c for c in CONNS) + " |",
               "|---|" + "---:|" * len(CONNS)]
        for name, _, _ in servers:
            cells = []
            for c in CONNS:
                v = med(name, c, key)
                cells.append(("%.*f" % (digits, v)) + (" (%s)" % spread(name, c, key) if key == "cpu_us" else ""))
            md.append("| %s | %s |" % (name, " | ".join(cells)))
        md.append("")
    if "04_epoll" in procs:
        md += ["## Ratios to 04_epoll (server CPU per message)", "", "| server | " + " | ".join("%d conns" % c for c in CONNS) + " |",
               "|---|" + "---:|" * len(CONNS)]
        for name, _, _ in servers:
            md.append("| %s | %s |" % (name, " | ".join("%.2f" % (med(name, c, "cpu_us") / med("04_epoll", c, "cpu_us"))
                                                    for c in CONNS)))
        md.append("")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "stage08.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print("stage08.py: %s" % e, file=sys.stderr)
        sys.exit(1)
