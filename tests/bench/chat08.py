#!/usr/bin/env python3
"""chat08.py: 08's chat_server (the chat of 07 on the rx library) beside 07's server.

The same broadcast load as stage07.py (tests/bench/chatload.c: K sessions, the publishers
taking turns, every line delivered to the K-1 others, at most W in flight) against:

  07         07_chat/server                      (one thread, epoll, shared buffers)
  08_t0      08_framework/examples/chat_server -t 0   (the library, I/O in the main loop)
  08_t2      08_framework/examples/chat_server -t 2   (the library, two io threads)

Each server is started once on an ephemeral port and stopped at the end; the runs alternate
(every repetition rotates the order) and the median of each figure is kept with its range:
the server's CPU per delivery (utime+stime of all its threads, /proc/PID/stat, over the
publish phase) and deliveries per second. Writes tests/bench/results/chat08.md and chat08.csv
(every run, then the medians) and prints the markdown. A lost delivery is an error (chatload
exits 1): the script stops and says so.

  python3 tests/bench/chat08.py [--repeat N] [--ks 10,100] [--deliveries D] [--window W]
"""

import argparse
import csv
import datetime
import os
import platform
import statistics
import subprocess
import sys

import peers
from peers import HERE, RESULTS, ROOT, wait_at_rest

CHATLOAD = os.path.join(HERE, "chatload")
SIZE = 64


# Server on CPU 0, chatload on CPU 1 (as run.py and stage07.py), where possible.
SERVER_PIN, LOAD_PIN, PIN_NOTE = peers.pinning("chatload")


class Server:
    def __init__(self, name, cmd):
        self.name, self.cmd = name, cmd
        self.proc = self.port = None

    def start(self):
        os.makedirs(os.path.join(RESULTS, "logs"), exist_ok=True)
        self.err_path = os.path.join(RESULTS, "logs", "chat08.%s.err" % self.name)
        self.errf = open(self.err_path, "w")
        try:
            self.proc, self.port = peers.start_listening(
                SERVER_PIN + self.cmd + ["-p", "0", "--idle-timeout", "3600"], stderr=self.errf)
        except RuntimeError as e:
            raise RuntimeError("%s did not start: %s (see %s)" % (self.name, e, self.err_path))

    def stop(self):
        rc = peers.stop(self.proc)
        self.errf.close()
        return rc


def run_once(server, k, per, window, timeout):
    wait_at_rest(server.proc.pid)
    cmd = LOAD_PIN + [CHATLOAD, "-p", str(server.port), "-c", str(k), "-n", str(per), "-s",
                      str(SIZE), "-W", str(window), "-T", str(timeout), "-P", str(server.proc.pid)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s K=%d: chatload failed: %s" % (server.name, k, (r.stderr or r.stdout).strip()))
    fields = dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv)
    return {"server": server.name, "k": k, "deliveries": int(fields["deliveries"]),
            "deliveries_per_s": float(fields["deliveries_per_s"]),
            "srv_us": float(fields["srv_cpu_us_per_delivery"])}


def spread(xs, fmt):
    return "%s (%s-%s)" % (fmt % statistics.median(xs), fmt % min(xs), fmt % max(xs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ks", default="10,100")
    ap.add_argument("--deliveries", type=int, default=200000, help="per run, about")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--timeout", type=int, default=120)
    a = ap.parse_args()
    for need in (CHATLOAD, os.path.join(ROOT, "07_chat", "server"),
                 os.path.join(ROOT, "08_framework", "examples", "chat_server")):
        if not os.access(need, os.X_OK):
            sys.exit("chat08.py: %s is not built (make -C tests/bench; make -C 07_chat; "
                     "make -C 08_framework)" % need)
    servers = [Server("07", [os.path.join(ROOT, "07_chat", "server")]),
               Server("08_t0", [os.path.join(ROOT, "08_framework", "examples", "chat_server"), "-t", "0"]),
               Server("08_t2", [os.path.join(ROOT, "08_framework", "examples", "chat_server"), "-t", "2"])]
    ks = [int(x) for x in a.ks.split(",")]
    rows = []
    try:
        for s in servers:
            s.start()
        for rep in range(a.repeat):
            order = servers[rep % len(servers):] + servers[:rep % len(servers)]
            for k in ks:
                per = max(1, a.deliveries // (k * (k - 1)))
                for s in order:
                    row = run_once(s, k, per, a.window, a.timeout)
                    row["rep"] = rep
                    rows.append(row)
                    print("  %-6s K=%-4d %8.0f deliveries/s  %.3f us server CPU per delivery" % (
                        s.name, k, row["deliveries_per_s"], row["srv_us"]), file=sys.stderr)
    finally:
        for s in servers:
            if s.proc is not None:
                s.stop()
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "chat08.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rep", "server", "k", "deliveries", "deliveries_per_s", "srv_cpu_us_per_delivery"])
        for r in rows:
            w.writerow([r["rep"], r["server"], r["k"], r["deliveries"], "%.0f" % r["deliveries_per_s"],
                        "%.4f" % r["srv_us"]])
    lines = ["# chat_server (08, rx library) beside 07_chat/server", "",
             "%s, %s, %d CPUs, %s; %s; %d runs per cell, alternating; median (min-max). "
             "Payload %d bytes, window %d. Command: `python3 tests/bench/chat08.py --repeat %d --ks %s "
             "--deliveries %d --window %d`."
             % (datetime.date.today().isoformat(), platform.machine(), os.cpu_count() or 0,
                open("/proc/loadavg").read().split()[0] + " load at the end", PIN_NOTE,
                a.repeat, SIZE, a.window, a.repeat, a.ks, a.deliveries, a.window), "",
             "| K | server | server CPU us/delivery | ratio to 07 | deliveries/s |",
             "|---|---|---|---|---|"]
    for k in ks:
        for s in servers:
            us = [r["srv_us"] for r in rows if r["k"] == k and r["server"] == s.name]
            ds = [r["deliveries_per_s"] for r in rows if r["k"] == k and r["server"] == s.name]
            # The ratio of each repetition's pair (same rep, same K): side by side in time.
            ratios = [r["srv_us"] / b["srv_us"] for r in rows for b in rows
                      if r["k"] == k and b["k"] == k and r["rep"] == b["rep"] and r["server"] == s.name
                      and b["server"] == "07" and b["srv_us"] > 0]
            lines.append("| %d | %s | %s | %s | %s |" % (
                k, s.name, spread(us, "%.3f"), spread(ratios, "%.2f") if ratios else "-",
                spread(ds, "%.0f")))
    md = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, "chat08.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
