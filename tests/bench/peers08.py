#!/usr/bin/env python3
"""peers08.py: one table and three SVG plots of 08's examples beside their peers.

Reads what kv.py, http.py, idle.py, chat08.py, heartbeat.py and gateway.py wrote (their CSV,
one row per run) from tests/bench/results/ (BENCH_OUT: another folder) and writes there:

  peers08.md        the table the top README shows: for each pair, both medians with their
                    range, and the ratio 08 / peer as the median of the ratios of runs made
                    side by side (the same repetition of the alternating loop), with its range
  peers08_*.dat     gnuplot's input, peers08.gp its script
  peers08_ratios.svg, peers08_cpu.svg, peers08_idle.svg   the plots (when gnuplot is installed)

It measures nothing itself: run the six scripts first (`make bench` does, then this). A script
whose CSV is missing is left out, and the table says so. Standard library only.

  python3 tests/bench/peers08.py [--code TEXT]   (TEXT: what was measured; default: git HEAD)
"""

import csv
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys

import peers
from peers import RESULTS

KV_TESTS = ("ping_inline", "ping_mbulk", "set", "get")


def read(name):
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def runs(rows, value, **match):
    """{run: value} of the rows whose columns equal match (run: the 'run' or 'rep' column)."""
    out = {}
    for r in rows:
        if all(str(r.get(k)) == str(v) for k, v in match.items()):
            out[r.get("run", r.get("rep", "1"))] = float(r[value])
    return out


class Row:
    """One comparison: 08's runs, the peer's, paired by run."""

    def __init__(self, group, what, load, unit, ours, peer, ours_name, peer_name, label):
        self.group, self.what, self.load, self.unit = group, what, load, unit
        self.ours, self.peer = ours, peer
        self.ours_name, self.peer_name, self.label = ours_name, peer_name, label
        self.ratios = [ours[k] / peer[k] for k in ours if k in peer and peer[k] > 0]

    def ok(self):
        return bool(self.ours) and bool(self.peer) and bool(self.ratios)


def spread(values, fmt):
    return "%s (%s–%s)" % (fmt % statistics.median(values), fmt % min(values), fmt % max(values))


def fmt_for(values):
    m = statistics.median(values)
    return "%.0f" if m >= 100 else "%.1f" if m >= 10 else "%.2f"


def collect():
    rows, missing = [], []
    kv = read("kv.csv")
    if kv is None:
        missing.append("kv.py")
    else:
        for pl in ("1", "16"):
            for t in KV_TESTS:
                rows.append(Row("kv", "kv_server -t 0 / redis-server", "redis-benchmark -c 50 -t %s -P %s" % (t, pl),
                                "server CPU µs per request",
                                runs(kv, "server_cpu_us_per_request", server="kv_t0", test=t, pipeline=pl),
                                runs(kv, "server_cpu_us_per_request", server="redis", test=t, pipeline=pl),
                                "kv_t0", "redis", "kv %s -P%s" % (t, pl)))
    http = read("http.csv")
    if http is None:
        missing.append("http.py")
    else:
        for mode in ("keep-alive", "close"):
            rows.append(Row("http", "http_server -t 0 / nginx (its worker)",
                            "wrk -t1 -c50, %s" % ("keep-alive" if mode == "keep-alive" else "Connection: close"),
                            "server CPU µs per request",
                            runs(http, "server_cpu_us_per_request", server="http_t0", mode=mode),
                            runs(http, "server_cpu_us_per_request", server="nginx", mode=mode),
                            "http_t0", "nginx", "http %s" % mode))
            rows.append(Row("http-rps", "http_server -t 0 / nginx", "wrk -t1 -c50, %s" % mode,
                            "requests/s (wrk's; above 1: 08 faster)",
                            runs(http, "requests_per_s", server="http_t0", mode=mode),
                            runs(http, "requests_per_s", server="nginx", mode=mode),
                            "http_t0", "nginx", None))
    idle = read("idle.csv")
    if idle is None:
        missing.append("idle.py")
    else:
        for ours, peer in (("echo_t0", "nginx"), ("kv_t0", "redis"), ("http_t0", "nginx")):
            n = idle[0]["conns"] if idle else "?"
            rows.append(Row("idle", "%s / %s" % (ours, peer), "%s idle connections" % n,
                            "bytes of RSS per idle connection",
                            runs(idle, "bytes_per_conn", server=ours), runs(idle, "bytes_per_conn", server=peer),
                            ours, peer, "idle %s/%s" % (ours.split("_")[0], peer)))
    chat = read("chat08.csv")
    if chat is None:
        missing.append("chat08.py")
    else:
        for k in sorted({r["k"] for r in chat}, key=int):
            for ours in ("08_t0", "08_t2"):
                rows.append(Row("chat", "chat_server -t %s / 07_chat/server" % ours[-1],
                                "chatload, K = %s, 64 B, window 32" % k, "server CPU µs per delivery",
                                runs(chat, "srv_cpu_us_per_delivery", server=ours, k=k),
                                runs(chat, "srv_cpu_us_per_delivery", server="07", k=k),
                                ours, "07", "chat %s K=%s" % (ours, k)))
    hb = read("heartbeat.csv")
    if hb is None:
        missing.append("heartbeat.py")
    else:
        c = hb[0]["clients"] if hb else "?"
        rows.append(Row("heartbeat", "heartbeat_server / pingpong_server", "%s clients, frames of 8 B" % c,
                        "server CPU µs per frame received",
                        runs(hb, "us_per_frame", server="heartbeat"), runs(hb, "us_per_frame", server="pingpong"),
                        "heartbeat", "pingpong", "heartbeat/pingpong"))
    gw = read("gateway_runs.csv")
    if gw is None:
        missing.append("gateway.py")
    else:
        d = gw[0]["delay_ms"] if gw else "?"
        rows.append(Row("gateway", "gateway / gateway --serial", "GET /profile alone, backends %s ms" % d,
                        "latency, ms", runs(gw, "latency_ms", gateway="parallel"),
                        runs(gw, "latency_ms", gateway="serial"), "parallel", "serial", "gateway par/serial"))
    return [r for r in rows if r.ok()], missing


def loads():
    """The 1-minute load average each script noted at its start (from its markdown)."""
    out = []
    for name in ("kv", "http", "chat08", "heartbeat", "idle"):
        try:
            text = open(os.path.join(RESULTS, name + ".md")).read()
        except OSError:
            continue
        m = re.search(r"load average[^0-9]*([\d.]+)|([\d.]+) load at", text, re.I)
        if m:
            out.append("%s %s" % (name, m.group(1) or m.group(2)))
    return out


def when():
    times = [os.path.getmtime(os.path.join(RESULTS, f)) for f in
             ("kv.csv", "http.csv", "idle.csv", "chat08.csv", "heartbeat.csv", "gateway_runs.csv")
             if os.path.exists(os.path.join(RESULTS, f))]
    if not times:
        return "?"
    a = datetime.datetime.utcfromtimestamp(min(times))
    b = datetime.datetime.utcfromtimestamp(max(times))
    return "%s %s–%s UTC" % (a.strftime("%Y-%m-%d"), a.strftime("%H:%M"), b.strftime("%H:%M"))


def code_version():
    """The commit measured: HEAD of this checkout, and whether 08's sources differ from it."""
    try:
        head = subprocess.run(["git", "-C", peers.ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", peers.ROOT, "status", "--porcelain", "--", "08_framework/lib",
                                "08_framework/examples", "07_chat"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "not a git checkout"
    if not head:
        return "not a git checkout"
    return "commit %s%s" % (head, " with uncommitted changes to 08's or 07's sources" if dirty else "")


def markdown(rows, missing, code):
    md = ["# 08's examples beside their peers", "",
          "Code: %s. Machine: %s. Scripts finished %s; the 1-minute load average each noted (at its start; "
          "chat08: at its end): %s. Every figure is the median of runs made in alternation with its peer "
          "(lowest–highest run in brackets); the ratio is the median of the ratios of the runs made "
          "side by side (the same repetition), with their range. `make bench` (tests/bench/run.sh) "
          "runs the scripts, then `python3 tests/bench/peers08.py` writes this table and the plots."
          % (code, peers.machine(), when(), ", ".join(loads()) or "not recorded"), ""]
    md += ["| pair (08 / peer) | load | figure | 08 | peer | 08 / peer | runs |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        f = fmt_for(list(r.ours.values()) + list(r.peer.values()))
        md.append("| %s | %s | %s | %s | %s | %s | %d |" % (
            r.what, r.load, r.unit, spread(list(r.ours.values()), f), spread(list(r.peer.values()), f),
            spread(r.ratios, "%.2f"), len(r.ratios)))
    if missing:
        md += ["", "Not run (no CSV): %s." % ", ".join(missing)]
    return md


def plots(rows):
    gp = shutil.which("gnuplot")
    if gp is None:
        print("peers08.py: gnuplot not installed: no SVG plots ('make bench-deps' installs it)", file=sys.stderr)
        return []
    # 1. Every ratio with its range; 1.0 is parity (below: 08 spends less, or waits less).
    with open(os.path.join(RESULTS, "peers08_ratios.dat"), "w") as f:
        f.write("# label median min max\n")
        for r in rows:
            if r.label:
                f.write('"%s" %.4f %.4f %.4f\n' % (r.label, statistics.median(r.ratios), min(r.ratios), max(r.ratios)))
    # 2. CPU per request, kv and http, 08 beside its peer (median, range).
    with open(os.path.join(RESULTS, "peers08_cpu.dat"), "w") as f:
        f.write("# label ours min max peer min max\n")
        for r in rows:
            if r.group in ("kv", "http"):
                o, p = list(r.ours.values()), list(r.peer.values())
                f.write('"%s" %.3f %.3f %.3f %.3f %.3f %.3f\n' % (
                    r.label.replace("kv ", "").replace("http ", "http "), statistics.median(o), min(o), max(o),
                    statistics.median(p), min(p), max(p)))
    # 3. Bytes per idle connection, each server (median, range).
    idle = read("idle.csv") or []
    with open(os.path.join(RESULTS, "peers08_idle.dat"), "w") as f:
        f.write("# server median min max\n")
        for s in dict.fromkeys(r["server"] for r in idle):
            v = [float(r["bytes_per_conn"]) for r in idle if r["server"] == s]
            f.write('"%s" %.0f %.0f %.0f\n' % (s, statistics.median(v), min(v), max(v)))
    script = """\
set terminal svg size 900,480 dynamic noenhanced font 'sans,12'
set grid ytics
set style fill solid 0.7 border -1
set boxwidth 0.8
set xtics rotate by -35
set rmargin 10
set bmargin 8
set output 'peers08_ratios.svg'
set title "08 / its peer: median of side-by-side runs (error bar: lowest-highest); below 1: 08 spends less"
set ylabel '08 / peer (log scale)'
set logscale y
set yrange [0.03:20]
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lw 2 dt 2
plot 'peers08_ratios.dat' using 0:2:xtic(1) with boxes notitle, \\
     '' using 0:2:3:4 with yerrorbars lc rgb 'black' pt 0 notitle
unset arrow 1
set output 'peers08_cpu.svg'
set title 'Server CPU time per request: kv_server vs redis-server, http_server vs nginx (median, lowest-highest)'
set ylabel 'server CPU µs per request (log scale)'
set yrange [*:*]
set key top left
set style data histograms
set style histogram errorbars gap 1 lw 1
plot 'peers08_cpu.dat' using 2:3:4:xtic(1) title '08 (kv_t0, http_t0)', '' using 5:6:7 title 'redis-server, nginx'
unset logscale y
set output 'peers08_idle.svg'
set title 'Resident memory per idle connection (median, lowest-highest)'
set ylabel 'bytes per idle connection'
set yrange [0:*]
set style histogram errorbars gap 1 lw 1
plot 'peers08_idle.dat' using 2:3:4:xtic(1) notitle
"""
    with open(os.path.join(RESULTS, "peers08.gp"), "w") as f:
        f.write(script)
    r = subprocess.run([gp, "peers08.gp"], cwd=RESULTS, capture_output=True, text=True)
    if r.returncode != 0:
        print("peers08.py: gnuplot failed: %s" % r.stderr.strip()[:500], file=sys.stderr)
        return []
    return ["peers08_ratios.svg", "peers08_cpu.svg", "peers08_idle.svg"]


def main():
    # --code TEXT: what was measured, when the scripts ran elsewhere (a snapshot of the tree).
    code = sys.argv[2] if len(sys.argv) == 3 and sys.argv[1] == "--code" else code_version()
    if len(sys.argv) > 1 and not (len(sys.argv) == 3 and sys.argv[1] == "--code"):
        print("usage: peers08.py [--code TEXT]", file=sys.stderr)
        return 2
    rows, missing = collect()
    if not rows:
        print("peers08.py: no results in %s: run kv.py, http.py, idle.py, chat08.py, heartbeat.py, "
              "gateway.py first" % RESULTS, file=sys.stderr)
        return 1
    md = markdown(rows, missing, code)
    svgs = plots(rows)
    if svgs:
        md += ["", "Plots: " + ", ".join("[%s](%s)" % (s, s) for s in svgs) + "."]
    with open(os.path.join(RESULTS, "peers08.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
