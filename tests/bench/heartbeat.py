#!/usr/bin/env python3
"""heartbeat.py: what a heartbeat costs 08_framework's heartbeat_server, beside pingpong_server.

  heartbeat   examples/heartbeat_server -t 0 --interval I, with C heartbeat_client processes
              (--interval I): every interval each side sends a PING and answers the other's,
              so the server receives 2 frames per client per interval (a PING and a PONG), runs
              one timer tick per client, and sends 2 (its PING, its PONG).
  pingpong    examples/pingpong_server -t 0 with pingpong_client -c C -s 8 (an 8-byte message
              in flight on each connection): one frame in, one out, as fast as it goes.

The figure is the server's CPU time (utime + stime, /proc/PID/stat) per frame received, over
the whole run; runs alternate, the median of --repeat with its range. The ratio says what the
heartbeat's timer and its typed, checked frames cost over a bare echo of frames of the same size.
A client error (a wrong byte, a lost connection) is an error, never a figure: the script exits 1.
Writes results/heartbeat.md and results/heartbeat.csv.

  python3 tests/bench/heartbeat.py [--repeat N] [--secs S] [--clients C] [--interval-ms I]
"""

import argparse
import datetime
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time

import peers
from peers import CLK_TCK, EX, RESULTS, cpu_ticks


def start_server(name, args):
    # stderr is read at the stop: the server's counters are its last lines.
    try:
        return peers.start_listening([os.path.join(EX, name), "-p", "0"] + args, stderr=subprocess.PIPE)
    except RuntimeError as e:
        sys.exit("%s did not start: %s" % (name, e))


def stop_server(p):
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=10)
    if p.returncode != 0:
        sys.exit("server exited %d: %s" % (p.returncode, err[-2000:]))
    return err


def run_heartbeat(a):
    srv, port = start_server("heartbeat_server", ["-t", "0", "--interval", str(a.interval_ms)])
    t0 = cpu_ticks(srv.pid)
    clients = [subprocess.Popen([os.path.join(EX, "heartbeat_client"), "-p", str(port), "--interval",
                                 str(a.interval_ms)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for _ in range(a.clients)]
    time.sleep(a.secs)  # the length of the run, not a readiness check
    for c in clients:
        c.send_signal(signal.SIGTERM)
    errors = timeouts = 0
    for c in clients:
        out, _ = c.communicate(timeout=10)
        m = re.search(r"timeouts (\d+), bad frames (\d+), errors (\d+)", out)
        # A heartbeat timeout is the protocol working (an overloaded machine can starve a
        # client for 3 intervals); a bad frame or a wrong echo is an error.
        if c.returncode != 0 or not m or int(m.group(2)) or int(m.group(3)):
            errors += 1
        elif m:
            timeouts += int(m.group(1))
    ticks = cpu_ticks(srv.pid) - t0
    err = stop_server(srv)
    m = re.search(r"heartbeat: received ping (\d+), pong (\d+), data (\d+);", err)
    if errors or not m:
        sys.exit("heartbeat run: %d clients failed; server: %s" % (errors, err[-1000:]))
    frames = int(m.group(1)) + int(m.group(2))
    n = re.search(r"; timeouts (\d+),", err)
    run_heartbeat.timeouts += timeouts + int(n.group(1))
    return frames, ticks


run_heartbeat.timeouts = 0


def run_pingpong(a):
    srv, port = start_server("pingpong_server", ["-t", "0"])
    t0 = cpu_ticks(srv.pid)
    r = subprocess.run([os.path.join(EX, "pingpong_client"), "-p", str(port), "-c", str(a.clients), "-s", "8",
                        "--duration", str(a.secs)], capture_output=True, text=True, timeout=a.secs + 30)
    ticks = cpu_ticks(srv.pid) - t0
    stop_server(srv)
    m = re.search(r"pingpong: \d+ conns, (\d+) msgs,.* errors (\d+)", r.stdout)
    if r.returncode != 0 or not m or m.group(2) != "0":
        sys.exit("pingpong run failed: %s %s" % (r.stdout, r.stderr[-1000:]))
    return int(m.group(1)), ticks


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--interval-ms", type=int, default=100)
    a = ap.parse_args()
    runs = {"heartbeat": [], "pingpong": []}
    for i in range(a.repeat):
        for name, fn in (("heartbeat", run_heartbeat), ("pingpong", run_pingpong)):
            frames, ticks = fn(a)
            us = ticks / CLK_TCK * 1e6 / frames if frames else float("nan")
            runs[name].append((frames, ticks, us))
            print("run %d %-9s %8d frames in, server CPU %5.2f s, %.2f us/frame" % (i + 1, name, frames,
                                                                                ticks / CLK_TCK, us), flush=True)
    med = {k: statistics.median(r[2] for r in v) for k, v in runs.items()}
    cmd = "python3 tests/bench/heartbeat.py --repeat %d --secs %g --clients %d --interval-ms %d" % (
        a.repeat, a.secs, a.clients, a.interval_ms)
    load = open("/proc/loadavg").read().split()[0]
    lines = [
        "# heartbeat_server beside pingpong_server: server CPU per frame received",
        "",
        "%s; %s, %d cores, kernel %s; load average %s at the start. Command: `%s`." % (
            datetime.date.today().isoformat(), platform.machine(), os.cpu_count() or 1, platform.release(), load, cmd),
        "",
        "| server | clients | frames in (median) | server CPU per frame, µs: median (min–max) | ratio to pingpong |",
        "|---|---|---|---|---|",
    ]
    for k, v in runs.items():
        us = [r[2] for r in v]
        lines.append("| %s | %d | %d | %.2f (%.2f–%.2f) | %.2f× |" % (
            k, a.clients, statistics.median(r[0] for r in v), med[k], min(us), max(us), med[k] / med["pingpong"]))
    lines += ["", "Heartbeat timeouts over the heartbeat runs (either side; each is a reconnect): %d." % run_heartbeat.timeouts]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "heartbeat.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(RESULTS, "heartbeat.csv"), "w") as f:
        f.write("server,run,clients,frames_in,server_cpu_ticks,us_per_frame\n")
        for k, v in runs.items():
            for i, (frames, ticks, us) in enumerate(v):
                f.write("%s,%d,%d,%d,%d,%.3f\n" % (k, i + 1, a.clients, frames, ticks, us))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
