#!/usr/bin/env python3
"""stage07.py: the broadcast benchmark of 07_chat, side by side with redis PUBLISH/SUBSCRIBE.

K connections to one server, one publisher at a time, every message delivered to the K-1
others (tests/bench/chatload.c; README.md, "07_chat: broadcast"). For K = 10, 100, 500 and
three servers, each started once with an ephemeral port and stopped at the end:

  07_shared  07_chat/server --broadcast shared   (one reference-counted buffer per message)
  07_copy    07_chat/server --broadcast copy     (the bytes copied into every recipient's queue)
  redis      redis-server --save '' --appendonly no --bind 127.0.0.1 --port P, pubsub output
             buffers unlimited (skipped with a message where redis-server is not installed)

Runs alternate (every repetition rotates the order of the servers) and the median of each
figure is kept: deliveries/s, the server's CPU us per delivery (utime+stime from
/proc/PID/stat at the edges of the publish phase), chatload's CPU us per delivery. Then
system calls per delivery from `strace -c -f` over one short K = 100 run per server, where
strace exists. Writes tests/bench/results/stage07.md and stage07.csv (every run, then the
medians) and prints the markdown. A lost delivery is an error, never a figure: the run is
reported in the notes and the script exits 1.

  python3 tests/bench/stage07.py [--quick] [--repeat N] [--deliveries D] [--window W] [--size B]
"""

import argparse
import csv
import datetime
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

# Shared with the echo benchmark (run.py is importable: its work is under __main__).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import cpu_model, parse_strace_summary, sh  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
STAGE = os.path.join(ROOT, "07_chat")
RESULTS = os.environ.get("BENCH_OUT", os.path.join(HERE, "results"))
CHATLOAD = os.path.join(HERE, "chatload")
CLK_TCK = os.sysconf("SC_CLK_TCK")
KS = (10, 100, 500)
SIZE = 64            # payload bytes, the same for every server (--size)
STRACE_K = 100       # the K of the syscall count
FD_SPARE = 64        # descriptors a server or chatload needs besides the K sockets


def pinning():
    """Server on CPU 0, chatload on CPU 1, as run.py does (when there are 2 cores and taskset)."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return [], [], "not pinned (fewer than 2 cores, or no taskset)"
    if subprocess.run(["taskset", "-c", "1", "true"], stderr=subprocess.DEVNULL).returncode != 0:
        return [], [], "not pinned (taskset refused: a restricted CPU set?)"
    return ["taskset", "-c", "0"], ["taskset", "-c", "1"], "server on CPU 0, chatload on CPU 1"


SERVER_PIN, LOAD_PIN, PIN_NOTE = pinning()


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit; the servers and chatload inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15), all threads


def wait_at_rest(pid, timeout=10.0):
    """Until the server used no CPU for 100 ms (the previous run's leave lines are sent)."""
    end = time.monotonic() + timeout
    last = cpu_ticks(pid)
    while time.monotonic() < end:
        time.sleep(0.1)
        now = cpu_ticks(pid)
        if now is None or now == last:
            return
        last = now


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


class Server:
    def __init__(self, name, mode):
        self.name, self.mode = name, mode  # mode: chatload's -m (chat or redis)
        self.proc = self.port = None
        self.err_path = os.path.join(RESULTS, "logs", "stage07.%s.err" % name)
        self.dead = None                  # why its remaining runs are skipped

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class ChatServer(Server):
    def __init__(self, broadcast):
        super().__init__("07_" + broadcast, "chat")
        self.broadcast = broadcast

    def start(self):
        # --idle-timeout: the receivers send nothing for the whole run; the default (300 s)
        # would do, this says it out loud. --max-output stays at its default (1 MiB): the
        # window keeps every queue far below it (README.md).
        cmd = SERVER_PIN + [os.path.join(STAGE, "server"), "-p", "0", "--broadcast",
                            self.broadcast, "--idle-timeout", "3600"]
        self.errf = open(self.err_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.errf, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"listening on .*:(\d+)$", line.strip())
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("%s did not start: %r (see %s)" % (self.name, line, self.err_path))
        self.port = int(m.group(1))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "killed after 10 s"
        self.errf.close()
        with open(self.err_path) as f:
            tail = [l.strip() for l in f if l.strip()]
        return rc, tail[-1] if tail else ""


class RedisServer(Server):
    def __init__(self):
        super().__init__("redis", "redis")

    def start(self):
        # A free ephemeral port: bind to 0, read it, close (redis cannot print a port it chose).
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="stage07-redis-")
        # pubsub 0 0 0: no output-buffer limit for subscribers, so redis never drops one
        # (its default is 32 MB hard / 8 MB for 60 s; the window keeps us far below anyway).
        cmd = SERVER_PIN + ["redis-server", "--save", "", "--appendonly", "no", "--port",
                            str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
                            "--client-output-buffer-limit", "pubsub 0 0 0",
                            "--maxclients", "10000"]
        self.errf = open(self.err_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.errf, stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError("redis-server did not start on port %d (see %s)" % (self.port, self.err_path))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "killed after 10 s"
        self.errf.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        with open(self.err_path) as f:
            tail = [l.strip() for l in f if l.strip()]
        return rc, tail[-1] if tail else ""


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------


def per_publisher(k, deliveries):
    """M such that K*M*(K-1) is at least the target number of deliveries."""
    return max(1, -(-deliveries // (k * (k - 1))))


def chatload(server, k, m, window, timeout, prefix=()):
    cmd = list(prefix) + LOAD_PIN + [CHATLOAD, "-m", server.mode, "-p", str(server.port),
                                     "-c", str(k), "-n", str(m), "-s", str(SIZE), "-W",
                                     str(window), "-T", str(timeout), "-P", str(server.proc.pid)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    out = dict(kv.split("=", 1) for kv in p.stdout.split() if "=" in kv)
    if p.returncode != 0 or out.get("errors") != "0":
        msg = (p.stderr.strip() or "exit %d" % p.returncode).splitlines()
        return None, "; ".join(msg[:3]), " ".join(cmd[len(LOAD_PIN) + len(prefix):])
    return {"deliveries": int(out["deliveries"]), "secs": float(out["secs"]),
            "dps": float(out["deliveries_per_s"]),
            "srv_us": float(out["srv_cpu_us_per_delivery"]),
            "cli_us": float(out["cli_cpu_us_per_delivery"])}, "", ""


def strace_count(server, k, m, window, timeout):
    """System calls of the server per delivery over one short run, or None."""
    out = os.path.join(RESULTS, "logs", "stage07.strace.%s.txt" % server.name)
    st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(server.proc.pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # strace attaches to every thread first
    try:
        r, err, _ = chatload(server, k, m, window, timeout)
        wait_at_rest(server.proc.pid)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(timeout=10)
    if r is None:
        return None, err
    _, calls = parse_strace_summary(out)
    # The join phase and the leaves of the connections also happen under strace; they are
    # K(K-1)/2 + K(K-1)/2 short lines, small next to the run's deliveries, and included.
    d = r["deliveries"]
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    return {"deliveries": d, "calls": sum(calls.values()) / d,
            "top": ", ".join("%s %.3f" % (name, n / d) for name, n in top)}, ""


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def machine_lines(started, a, nofile):
    model = cpu_model()
    cc = os.environ.get("CC", "cc")
    redis = sh("redis-server --version 2>/dev/null") or "not installed"
    return [
        f"- date: {started:%Y-%m-%d %H:%M} (local time)",
        f"- cores: {os.cpu_count()} ({model or 'unknown model'}); {PIN_NOTE}",
        f"- kernel: {platform.release()}",
        f"- compiler: {sh(cc + ' --version 2>/dev/null | head -n1') or cc} "
        "(-std=c11 -O2 -g, every stage's Makefile; no sanitizer)",
        f"- redis: {redis}",
        f"- descriptor limit (soft, after raising it): {nofile}",
        f"- load average when the run started: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- runs: {a.repeat} per point, alternating, median kept; about {a.deliveries:,} "
        f"deliveries per run; payload {SIZE} B; window {a.window} messages",
    ]


def fmt(v, digits=2):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"


def main():
    global SIZE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run per point, 300k deliveries")
    ap.add_argument("--repeat", type=int, default=5, help="runs per (server, K); default 5")
    ap.add_argument("--deliveries", type=int, default=3000000, help="per run; default 3M")
    ap.add_argument("--window", type=int, default=32, help="messages in flight; default 32")
    ap.add_argument("--timeout", type=float, default=120, help="chatload's deadline per run")
    ap.add_argument("--size", type=int, default=SIZE, help="payload bytes (24-4000); default 64")
    a = ap.parse_args()
    SIZE = a.size
    if a.quick:
        a.repeat, a.deliveries = 1, 300000
    started = datetime.datetime.now()
    os.makedirs(os.path.join(RESULTS, "logs"), exist_ok=True)
    notes, failures = [], []

    if not os.path.exists(CHATLOAD):
        subprocess.run(["make", "-s", "-C", HERE, "SAN=", "chatload"], check=True)
    servers = []
    if os.path.exists(os.path.join(STAGE, "server")):
        servers += [ChatServer("shared"), ChatServer("copy")]
    else:
        notes.append("07_chat/server is not built (`make -C 07_chat`): only redis is measured")
    if shutil.which("redis-server"):
        servers.append(RedisServer())
    else:
        notes.append("redis-server is not installed (`make bench-deps` installs it): "
                     "no redis column, no ratios")
    if not servers:
        print("stage07: nothing to measure:", "; ".join(notes), file=sys.stderr)
        return 1

    nofile = raise_nofile()
    ks = []
    for k in KS:
        if k + FD_SPARE > nofile:
            notes.append(f"K = {k} skipped: it needs about {k + FD_SPARE} descriptors per "
                         f"process and the limit is {nofile} (raise `ulimit -Hn`)")
        else:
            ks.append(k)

    runs = []      # every run: dicts
    syscalls = {}  # server name -> strace result
    stops = {}
    live = []
    try:
        for s in servers:
            try:
                s.start()
                live.append(s)
            except RuntimeError as e:
                notes.append(str(e))
        for rep in range(a.repeat):
            order = live[rep % len(live):] + live[:rep % len(live)] if live else []
            for k in ks:
                m = per_publisher(k, a.deliveries)
                for s in order:
                    if s.dead:
                        continue
                    if not s.alive():
                        s.dead = "exited (status %s) before a run at K = %d" % (s.proc.poll(), k)
                        failures.append(f"{s.name}: {s.dead}")
                        continue
                    wait_at_rest(s.proc.pid)
                    r, err, cmd = chatload(s, k, m, a.window, a.timeout)
                    if r is None:
                        failures.append(f"{s.name} K = {k} (repetition {rep + 1}): {err} "
                                        f"[`{cmd}`]")
                        print(f"stage07: FAILED {s.name} K={k}: {err}", file=sys.stderr)
                        continue
                    r.update(server=s.name, k=k, m=m, rep=rep + 1)
                    runs.append(r)
                    print(f"stage07: {s.name:9} K={k:<4} rep {rep + 1}: {r['dps']:12,.0f} deliveries/s "
                          f"server {r['srv_us']:.3f} us/delivery", file=sys.stderr)
        if shutil.which("strace") and STRACE_K in ks:
            m = per_publisher(STRACE_K, min(a.deliveries, 300000))
            for s in live:
                if s.dead or not s.alive():
                    continue
                wait_at_rest(s.proc.pid)
                r, err = strace_count(s, STRACE_K, m, a.window, a.timeout * 4)
                if r is None:
                    failures.append(f"{s.name} under strace, K = {STRACE_K}: {err}")
                else:
                    syscalls[s.name] = r
        elif not shutil.which("strace"):
            notes.append("strace is not installed: no system-call count")
    finally:
        for s in live:
            if s.alive():
                stops[s.name] = s.stop()
            else:
                stops[s.name] = (s.proc.returncode, "(had exited)")

    # Medians per (server, K).
    med = {}
    for s in servers:
        for k in ks:
            rs = [r for r in runs if r["server"] == s.name and r["k"] == k]
            if rs:
                med[(s.name, k)] = {key: statistics.median(r[key] for r in rs)
                                    for key in ("dps", "srv_us", "cli_us")}
                med[(s.name, k)].update(n=len(rs), m=rs[0]["m"],
                                        lo=min(r["srv_us"] for r in rs),
                                        hi=max(r["srv_us"] for r in rs))

    names = [s.name for s in servers]
    md = ["# 07_chat broadcast benchmark (chatload, beside redis PUBLISH/SUBSCRIBE)", "",
          "## Machine", ""] + machine_lines(started, a, nofile)
    ratio_cols = [f"{n} / redis" for n in names if n != "redis" and "redis" in names]
    md += ["", "## Server CPU µs per delivery (median; lower is better)", "",
           "| K | " + " | ".join(names + ratio_cols) + " |",
           "|---|" + "---|" * (len(names) + len(ratio_cols))]
    for k in ks:
        row = [str(k)] + [fmt(med.get((n, k), {}).get("srv_us"), 3) for n in names]
        if "redis" in names:
            base = med.get(("redis", k), {}).get("srv_us")
            for n in names:
                if n != "redis":
                    v = med.get((n, k), {}).get("srv_us")
                    row.append(fmt(v / base if v and base else None, 2))
        md.append("| " + " | ".join(row) + " |")
    md += ["", "Spread of the server CPU figure (lowest - highest run):", "",
           "| K | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in ks:
        cells = []
        for n in names:
            v = med.get((n, k))
            cells.append(f"{v['lo']:.3f} - {v['hi']:.3f}" if v else "-")
        md.append("| %d | %s |" % (k, " | ".join(cells)))
    md += ["", "## Deliveries per second (median)", "",
           "| K | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in ks:
        md.append("| %d | %s |" % (k, " | ".join(fmt(med.get((n, k), {}).get("dps"), 0) for n in names)))
    md += ["", "## chatload CPU µs per delivery (median): which side set the pace", "",
           "| K | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in ks:
        md.append("| %d | %s |" % (k, " | ".join(fmt(med.get((n, k), {}).get("cli_us"), 3) for n in names)))
    md += ["", "Lines per publisher (M) and runs kept: " + "; ".join(
        f"K = {k}: M = {per_publisher(k, a.deliveries)}, "
        + ", ".join(f"{n} {med.get((n, k), {}).get('n', 0)}" for n in names) for k in ks)]
    if syscalls:
        md += ["", f"## System calls per delivery (`strace -c -f`, one run at K = {STRACE_K})", "",
               "| server | deliveries | calls / delivery | most frequent (per delivery) |",
               "|---|---|---|---|"]
        for n in names:
            if n in syscalls:
                r = syscalls[n]
                md.append(f"| {n} | {r['deliveries']:,} | {r['calls']:.3f} | {r['top']} |")
    md += ["", "## Notes", ""]
    for s in servers:
        if s.name in stops:
            rc, last = stops[s.name]
            md.append(f"- {s.name}: exit status {rc} on SIGTERM; last log line: `{last}`")
            # 07's own counters over its whole life (every run, joins and leaves included):
            # writes per delivery without strace slowing it down.
            d, w = re.search(r"(\d+) deliveries", last), re.search(r"(\d+) writes", last)
            if d and w and int(d.group(1)):
                md.append(f"  ({int(w.group(1)) / int(d.group(1)):.3f} writes per delivery, "
                          "from these counters)")
    md += [f"- {n}" for n in notes]
    md += [f"- FAILED: {f}" for f in failures]
    text = "\n".join(md) + "\n"

    with open(os.path.join(RESULTS, "stage07.md"), "w") as f:
        f.write(text)
    with open(os.path.join(RESULTS, "stage07.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "server", "k", "m", "rep", "deliveries", "secs", "deliveries_per_s",
                    "srv_cpu_us_per_delivery", "cli_cpu_us_per_delivery", "calls_per_delivery"])
        for r in runs:
            w.writerow(["run", r["server"], r["k"], r["m"], r["rep"], r["deliveries"],
                        "%.3f" % r["secs"], "%.0f" % r["dps"], "%.4f" % r["srv_us"],
                        "%.4f" % r["cli_us"], ""])
        for (n, k), v in sorted(med.items()):
            w.writerow(["median", n, k, v["m"], "", "", "", "%.0f" % v["dps"], "%.4f" % v["srv_us"],
                        "%.4f" % v["cli_us"], ""])
        for n, r in syscalls.items():
            w.writerow(["syscalls", n, STRACE_K, "", "", r["deliveries"], "", "", "", "",
                        "%.4f" % r["calls"]])
    print(text)
    bad = failures or any(rc != 0 for rc, _ in stops.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
