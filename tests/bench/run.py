#!/usr/bin/env python3
# run.py: the benchmark: the same echo loads against every stage server present and the peers,
# in alternation, medians of several runs; writes results/ (CSV, markdown table, SVG plots).
"""Run the kit's echo benchmark. Standard library only.

Environment knobs (all optional):
  BENCH_REPEAT=3        runs per (server, load) point; the median is kept
  BENCH_SECS=2          measured seconds per run (the loadgen's -d)
  BENCH_WARMUP=0.5      warm-up seconds per run (the loadgen's -w)
  BENCH_THREADS=N       loadgen client threads (-t); default: one per core left to it (below)
  BENCH_IDLE_MEM=5000   idle connections opened to measure resident memory per connection
  BENCH_SERVERS=a,b     only these servers (names as in the table, e.g. 03_poll,04_epoll_lt)
  BENCH_POINTS=a,b      only these loads (e.g. 50x64; the headline 04-vs-min_echo point)
  BENCH_STRACE=0|1      syscalls per message with strace -c -f (default: 1 when strace exists)
  BENCH_STRACE_CONNS=50 connections during the strace run
  BENCH_LOADGEN=path    another loadgen binary (e.g. build-address-undefined/loadgen)
  BENCH_OUT=dir         where results go (default tests/bench/results)
"""

import csv
import datetime
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# ---------------------------------------------------------------------------------------------
# What is measured
# ---------------------------------------------------------------------------------------------

# name, binary (relative to the repo root), extra arguments, descriptor cap (None = none).
# 02_select keeps every descriptor in an fd_set, which holds descriptors below FD_SETSIZE
# (1024 on Linux) only: loads that would need more are skipped for it.
FD_SETSIZE = 1024
SERVERS = [
    ("01_thread", "01_blocking/server_thread", [], None),
    ("02_select", "02_select/server", [], FD_SETSIZE),
    ("03_poll", "03_poll/server", [], None),
    ("04_epoll_lt", "04_epoll/server", ["-m", "lt"], None),
    ("04_epoll_et", "04_epoll/server", ["-m", "et"], None),
    ("08_t0", "08_framework/examples/echo", ["-t", "0"], None),
    ("08_t1", "08_framework/examples/echo", ["-t", "1"], None),
    ("08_t2", "08_framework/examples/echo", ["-t", "2"], None),
    # 08 built with HOP=ring (run.sh builds it): the hop through SPSC rings, not the task queue.
    ("08_t1_ring", "08_framework/build-ring/examples/echo", ["-t", "1"], None),
    ("08_t2_ring", "08_framework/build-ring/examples/echo", ["-t", "2"], None),
    ("min_echo", "tests/bench/peers/min_echo", [], None),
    ("libevent", "tests/bench/peers/libevent_echo", [], None),
]

# name, active connections, message size, idle connections.
POINTS = [
    ("1x64", 1, 64, 0),
    ("50x64", 50, 64, 0),
    ("50x4096", 50, 4096, 0),
    ("10x64+0idle", 10, 64, 0),
    ("10x64+1000idle", 10, 64, 1000),
    ("10x64+5000idle", 10, 64, 5000),
]
IDLE_POINTS = [p for p in POINTS if p[0].startswith("10x64+")]

# Descriptors a process needs besides its connections: stdio, the listening socket, an
# epoll or two, log files. Generous on purpose: a skip is better than a run that fails.
FD_SLACK = 24


def env_float(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        sys.exit(f"run.py: {name} must be a number")


REPEAT = max(1, int(env_float("BENCH_REPEAT", 3)))
SECS = env_float("BENCH_SECS", 2)
WARMUP = env_float("BENCH_WARMUP", 0.5)
# The machine's cores, split: the server gets the first half (at least one), the loadgen the
# rest, one client thread each. On 2 cores that is one and one; on 8, four and four, and 08's
# echo also runs with as many io threads as its cores (08_tN below), which is where the
# io-thread scaling a 2-core machine cannot show appears.
CORES = os.cpu_count() or 1
SERVER_CORES = max(1, CORES // 2)
THREADS = max(1, int(env_float("BENCH_THREADS", max(1, CORES - SERVER_CORES))))
if SERVER_CORES > 2:
    SERVERS.insert([s[0] for s in SERVERS].index("08_t2") + 1,
                   ("08_t%d" % SERVER_CORES, "08_framework/examples/echo", ["-t", str(SERVER_CORES)], None))
IDLE_MEM = max(1, int(env_float("BENCH_IDLE_MEM", 5000)))
OUT = os.environ.get("BENCH_OUT", os.path.join(HERE, "results"))
LOADGEN = os.environ.get("BENCH_LOADGEN", os.path.join(HERE, "loadgen"))
STRACE = shutil.which("strace") if os.environ.get("BENCH_STRACE", "1") != "0" else None

# How long a server may take to print "listening on", and to exit after SIGTERM (the contract).
START_DEADLINE = 5.0
STOP_DEADLINE = 2.0
# How long a server may take to close the connections of the previous run.
SETTLE_DEADLINE = 10.0

notes = []  # skips, failures and oddities: they go at the end of results.md


def note(msg):
    notes.append(msg)
    print(f"run.py: note: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Processes: pinning, /proc readings
# ---------------------------------------------------------------------------------------------


def pinning():
    """The taskset prefixes for the server and the loadgen, or empty ones: one core each keeps
    them from trading places on a CPU and makes the server's CPU time a cleaner figure."""
    if CORES < 2 or shutil.which("taskset") is None:
        return [], [], "not pinned (fewer than 2 cores, or no taskset)"
    srv = "0" if SERVER_CORES == 1 else "0-%d" % (SERVER_CORES - 1)
    gen = str(SERVER_CORES) if CORES - SERVER_CORES == 1 else "%d-%d" % (SERVER_CORES, CORES - 1)
    ok = subprocess.run(["taskset", "-c", gen, "true"], stderr=subprocess.DEVNULL).returncode == 0
    if not ok:
        return [], [], "not pinned (taskset refused: a restricted CPU set?)"
    return (["taskset", "-c", srv], ["taskset", "-c", gen],
            "server on CPU %s, loadgen on CPU %s (%d thread%s)" % (srv, gen, THREADS, "s" if THREADS > 1 else ""))


SERVER_PIN, LOADGEN_PIN, PIN_NOTE = pinning()


def proc_children(pid):
    """PIDs of PID's children, through every thread (a thread may be the one that forked)."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def tree_rss_kib(pid):
    """VmRSS of PID and all its descendants, in KiB (a fork-per-client server keeps each
    client's memory in a child)."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total = int(line.split()[1])
    except OSError:
        return 0
    return total + sum(tree_rss_kib(k) for k in proc_children(pid))


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def thread_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return -1


def cpu_ticks(pid):
    """utime + stime of PID (all its threads), in clock ticks; -1 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    except (OSError, IndexError, ValueError):
        return -1


def raise_fd_limit():
    """Soft RLIMIT_NOFILE up to the hard limit; servers and loadgen inherit it. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (OSError, ValueError):
        return soft


# ---------------------------------------------------------------------------------------------
# Servers: start, settle, stop
# ---------------------------------------------------------------------------------------------


class Server:
    def __init__(self, name, path, args, fd_cap):
        self.name, self.path, self.args, self.fd_cap = name, path, args, fd_cap
        self.proc = None
        self.port = None
        self.base_fds = 0
        self.base_threads = 1
        self.dead = False
        self.log_path = os.path.join(OUT, "logs", f"{name}.stderr")

    def start(self):
        cmd = SERVER_PIN + [os.path.join(ROOT, self.path), "-p", "0"] + self.args
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        # Read the port from "listening on HOST:PORT", with a deadline: a server that never
        # prints it must not hang the benchmark.
        deadline = time.monotonic() + START_DEADLINE
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                break
            chunk = os.read(self.proc.stdout.fileno(), 256)
            if not chunk:
                break
            line += chunk
        m = re.match(rb"listening on (.+):(\d+)\n", line)
        if not m:
            self.stop()
            self.dead = True
            note(f"{self.name}: no 'listening on HOST:PORT' line within {START_DEADLINE:.0f} s "
                 f"(got {line[:80]!r}); skipped")
            return False
        self.port = int(m.group(2))
        time.sleep(0.05)  # let it reach its loop before its fd count becomes the baseline
        self.base_fds = fd_count(self.proc.pid)
        self.base_threads = thread_count(self.proc.pid)
        return True

    def alive(self):
        if self.proc is None or self.proc.poll() is not None:
            if not self.dead:
                self.dead = True
                note(f"{self.name}: the server exited (status {self.proc.returncode}) during the "
                     f"benchmark; its later points are missing (see logs/{self.name}.stderr)")
            return False
        return True

    def settle(self):
        """Waits until the server is back at rest, so that one run's teardown (5000 closes,
        5000 threads exiting) is not billed to the next run: the previous run's descriptors
        closed and its threads gone; then one throwaway echo; then no CPU used for 100 ms."""
        pid = self.proc.pid
        deadline = time.monotonic() + SETTLE_DEADLINE
        while time.monotonic() < deadline and self.alive():
            if fd_count(pid) <= self.base_fds + 2 and thread_count(pid) <= self.base_threads:
                break
            time.sleep(0.02)
        # Some cleanup waits for the next connection: glibc frees the stacks of exited
        # detached threads when the next thread is created, which after 5000 idle
        # connections is 5000 munmap calls (about 0.5 s of CPU here). The throwaway echo
        # triggers it now, and the quiet-CPU test waits for it to end.
        if self.alive():
            self.poke()
        while time.monotonic() < deadline and self.alive():
            t0 = cpu_ticks(pid)
            time.sleep(0.1)
            if cpu_ticks(pid) == t0:
                return
        if self.alive():
            note(f"{self.name}: not at rest {SETTLE_DEADLINE:.0f} s after a run "
                 f"({fd_count(pid) - self.base_fds} extra descriptors, "
                 f"{thread_count(pid)} threads)")

    def poke(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
                c.sendall(b"x")
                c.recv(1)
        except OSError as e:
            note(f"{self.name}: a one-byte echo between runs failed: {e}")

    def stop(self):
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(STOP_DEADLINE)
                if rc != 0:
                    note(f"{self.name}: exited with status {rc} after SIGTERM (contract: 0)")
            except subprocess.TimeoutExpired:
                note(f"{self.name}: still running {STOP_DEADLINE:.0f} s after SIGTERM; killed")
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


# ---------------------------------------------------------------------------------------------
# One loadgen run
# ---------------------------------------------------------------------------------------------

FIELDS = ["msgs", "msgs_per_s", "MiB_per_s", "p50_us", "p99_us", "srv_cpu_us_per_msg",
          "cli_cpu_us_per_msg", "errors"]
# Derived per run: how busy each side's core was (CPU per message x messages per second).
# A side near 100% set the pace; both far below 100% means the round trips were held up by
# something else: scheduling, other work on a shared machine.
DERIVED = ["srv_busy_pct", "cli_busy_pct"]
# What results.csv holds per point: the median of each over the runs.
METRICS = FIELDS[1:-1] + DERIVED


def loadgen_cmd(srv, conns, size, idle, warmup, secs):
    return LOADGEN_PIN + [LOADGEN, "-p", str(srv.port), "-c", str(conns), "-s", str(size),
                          "-i", str(idle), "-w", str(warmup), "-d", str(secs),
                          "-t", str(THREADS), "-P", str(srv.proc.pid)]


def parse_line(text):
    vals = dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
    out = {k: float(vals[k]) for k in FIELDS if k in vals}
    rate = out.get("msgs_per_s", 0)
    for side in ("srv", "cli"):
        cpu = out.get(f"{side}_cpu_us_per_msg", -1)
        if cpu >= 0 and rate > 0:
            out[f"{side}_busy_pct"] = cpu * rate / 1e4
    return out


def run_load(srv, conns, size, idle, warmup=None, secs=None):
    """One loadgen run against SRV. Returns (values, error text or None)."""
    warmup = WARMUP if warmup is None else warmup
    secs = SECS if secs is None else secs
    srv.settle()
    if not srv.alive():
        return None, "server dead"
    # The loadgen stops itself after warm-up + measure (+ its own watchdog); this timeout
    # is a second fence.
    try:
        p = subprocess.run(loadgen_cmd(srv, conns, size, idle, warmup, secs),
                           capture_output=True, text=True, timeout=warmup + secs + 60)
    except subprocess.TimeoutExpired:
        return None, "loadgen timed out"
    lines = p.stdout.strip().splitlines()
    vals = parse_line(lines[-1]) if lines else {}
    if p.returncode != 0 or "msgs" not in vals:
        err = " | ".join(p.stderr.strip().splitlines()[-3:])
        return vals or None, f"loadgen exit {p.returncode}: {err}"
    return vals, None


def fd_need(conns, idle):
    return conns + idle + FD_SLACK


def skip_reason(srv, conns, idle, fd_limit):
    if srv.fd_cap is not None and fd_need(conns, idle) - FD_SLACK + 8 > srv.fd_cap:
        return f"needs descriptors above FD_SETSIZE ({srv.fd_cap})"
    if fd_need(conns, idle) > fd_limit:
        return f"needs {fd_need(conns, idle)} descriptors, the fd limit is {fd_limit}"
    return None


# ---------------------------------------------------------------------------------------------
# The extra measurements: memory per idle connection, syscalls per message
# ---------------------------------------------------------------------------------------------


def measure_memory(srv, fd_limit):
    """Resident memory per idle connection: VmRSS (with children) before, and while K idle
    connections are open, all accepted (each echoed one byte). Returns a dict or None."""
    k = IDLE_MEM
    if srv.fd_cap is not None:
        k = min(k, srv.fd_cap - 24)
    k = min(k, fd_limit - FD_SLACK)
    srv.settle()
    if not srv.alive():
        return None
    before = tree_rss_kib(srv.proc.pid)
    cmd = loadgen_cmd(srv, 0, 1, k, 0, 0.3)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    after = None
    deadline = time.monotonic() + 30
    err_lines = []
    # The loadgen says on stderr when all K are open and echoed; it then holds them 0.3 s.
    while time.monotonic() < deadline:
        if not select.select([p.stderr], [], [], deadline - time.monotonic())[0]:
            break
        line = p.stderr.readline()
        if not line:
            break
        err_lines.append(line.strip())
        if "idle connections open" in line:
            after = tree_rss_kib(srv.proc.pid)
            break
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    if after is None or p.returncode != 0:
        note(f"{srv.name}: memory per idle connection not measured: "
             f"{' | '.join((err_lines + err.splitlines())[-2:])}")
        return None
    return {"server": srv.name, "idle_conns": k, "rss_before_kib": before,
            "rss_after_kib": after, "kib_per_conn": (after - before) / k}


def parse_strace_summary(path):
    """(total calls, {syscall: calls}) from the table strace -c writes."""
    calls, total = {}, 0
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 5 or not parts[3].isdigit():
                continue
            if parts[-1] == "total":
                total = int(parts[3])
            else:
                calls[parts[-1]] = int(parts[3])
    return total, calls


STRACE_CONNS = int(os.environ.get("BENCH_STRACE_CONNS", "50"))


def measure_syscalls(srv):
    """System calls per message, from strace -c -f attached to the running server for a
    short run of STRACE_CONNS connections x 64 B (no warm-up, so nearly every traced call
    belongs to a counted message). 50 connections, the point the CPU figure is compared
    at: with one connection every message wakes the loop, and one epoll_wait per message
    hides what the loop itself costs. strace slows the server down many times; the count
    per message is what it is for, not the speed."""
    srv.settle()
    if not srv.alive():
        return None
    out = os.path.join(OUT, "logs", f"{srv.name}.strace")
    st = subprocess.Popen([STRACE, "-c", "-f", "-o", out, "-p", str(srv.proc.pid)],
                          stderr=subprocess.PIPE, text=True)
    # Wait for "Process N attached" before sending load, or the first messages go untraced.
    deadline = time.monotonic() + 5
    attached = False
    while time.monotonic() < deadline:
        if not select.select([st.stderr], [], [], deadline - time.monotonic())[0]:
            break
        line = st.stderr.readline()
        if not line:
            break
        if "attached" in line:
            attached = True
            break
    vals = err = None
    if attached:
        vals, err = run_load(srv, STRACE_CONNS, 64, 0, warmup=0, secs=1.0)
    st.send_signal(signal.SIGINT)  # strace detaches and writes its summary
    try:
        st.wait(10)
    except subprocess.TimeoutExpired:
        st.kill()
        st.wait()
    st.stderr.close()
    if not attached or err or not vals or not vals.get("msgs"):
        note(f"{srv.name}: syscalls per message not measured "
             f"({'strace could not attach' if not attached else err or 'no messages'})")
        return None
    total, calls = parse_strace_summary(out)
    msgs = vals["msgs"]
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    return {"server": srv.name, "msgs": int(msgs), "calls": total,
            "calls_per_msg": total / msgs,
            "top": " ".join(f"{name}:{n / msgs:.2f}" for name, n in top)}


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, shell=True).stdout.strip()
    except OSError:
        return ""


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, or "" (stage07.py uses it too)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine_lines(started):
    model = cpu_model()
    cc = os.environ.get("CC", "cc")
    libevent = sh("pkg-config --modversion libevent 2>/dev/null") or "not installed"
    return [
        f"- date: {started:%Y-%m-%d %H:%M} (local time)",
        f"- cores: {os.cpu_count()} ({model or 'unknown model'}); {PIN_NOTE}",
        f"- kernel: {platform.release()}",
        f"- compiler: {sh(cc + ' --version 2>/dev/null | head -n1') or cc}",
        "- flags: -std=c11 -Wall -Wextra -Werror -O2 -g -D_POSIX_C_SOURCE=200809L "
        "(every stage's Makefile; no sanitizer)",
        f"- libevent: {libevent}",
        f"- load average when the run started: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- runs: {REPEAT} per point, median kept; warm-up {WARMUP:g} s, measured {SECS:g} s; "
        f"loadgen threads: {THREADS}",
    ]


def fmt(v, digits=1):
    if v is None:
        return "-"
    if digits == 0 or abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def write_reports(started, servers, medians, mem, sysc):
    names = [s.name for s in servers]
    point_names = [p[0] for p in POINTS]

    with open(os.path.join(OUT, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["server", "point", "conns", "idle", "size", "runs"] + METRICS + ["errors"])
        for s in names:
            for pname, conns, size, idle in POINTS:
                m = medians.get((s, pname))
                if m is None:
                    continue
                w.writerow([s, pname, conns, idle, size, m["runs"]] +
                           [m.get(k, "") for k in METRICS] + [m.get("errors", 0)])
    with open(os.path.join(OUT, "mem.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["server", "idle_conns", "rss_before_kib", "rss_after_kib", "kib_per_conn"])
        for r in mem.values():
            w.writerow([r["server"], r["idle_conns"], r["rss_before_kib"], r["rss_after_kib"],
                        f"{r['kib_per_conn']:.2f}"])
    if sysc:
        with open(os.path.join(OUT, "syscalls.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["server", "msgs", "calls", "calls_per_msg", "top"])
            for r in sysc.values():
                w.writerow([r["server"], r["msgs"], r["calls"], f"{r['calls_per_msg']:.2f}",
                            r["top"]])

    def val(s, p, k):
        m = medians.get((s, p))
        return m.get(k) if m else None

    def pivot(title, key, digits):
        out = [f"### {title}", "", "| server | " + " | ".join(point_names) + " |",
               "|---|" + "---:|" * len(point_names)]
        for s in names:
            out.append(f"| {s} | " + " | ".join(fmt(val(s, p, key), digits)
                                                 for p in point_names) + " |")
        return out + [""]

    md = ["# Echo benchmark results", "",
          "Produced by `make bench` (tests/bench/run.py); how to read it: tests/bench/README.md.",
          "Every figure is the median of the runs of one point; the servers were run in "
          "alternation, so noise on this machine hit all of them alike. Compare servers "
          "within one table, never with figures from another run or machine.", "",
          "## Machine", ""] + machine_lines(started) + [""]
    md += ["## Results", "",
           "Loads: `AxS` = A active connections, one S-byte message in flight each; "
           "`+K idle` = K more connections open and silent.", ""]
    md += pivot("Server CPU time per message, µs (the headline: lower is better)",
                "srv_cpu_us_per_msg", 2)
    md += pivot("Messages per second (limited by the loadgen on a small machine)",
                "msgs_per_s", 0)
    md += pivot("Round-trip latency p50, µs", "p50_us", 1)
    md += pivot("Round-trip latency p99, µs", "p99_us", 1)
    md += pivot("Loadgen CPU time per message, µs", "cli_cpu_us_per_msg", 2)
    md += ["### How busy each core was: server % / loadgen %", "",
           "CPU per message x messages per second. A side near 100% set the pace; both well "
           "below means the round trips waited on something else (on a shared machine: "
           "other jobs), and msgs/s says little about the servers.", "",
           "| server | " + " | ".join(point_names) + " |", "|---|" + "---:|" * len(point_names)]
    for s in names:
        md.append(f"| {s} | " + " | ".join(
            f"{fmt(val(s, p, 'srv_busy_pct'), 0)} / {fmt(val(s, p, 'cli_busy_pct'), 0)}"
            if medians.get((s, p)) else "-" for p in point_names) + " |")
    md += [""]

    md += ["### Resident memory per idle connection", "",
           "| server | idle conns | VmRSS before (KiB) | VmRSS with them (KiB) | KiB per conn |",
           "|---|---:|---:|---:|---:|"]
    for s in names:
        r = mem.get(s)
        if r:
            md.append(f"| {s} | {r['idle_conns']} | {r['rss_before_kib']} | "
                      f"{r['rss_after_kib']} | {r['kib_per_conn']:.2f} |")
        else:
            md.append(f"| {s} | - | - | - | - |")
    md += ["", "Kernel socket buffers are not in VmRSS: this is the server's own memory "
           "(buffers, connection records, thread stacks)."]
    if sysc:
        md += ["", f"### System calls per message (strace -c -f, {STRACE_CONNS} connections x 64 B, 1 s)", "",
               "| server | msgs | calls | calls per msg | top calls per msg |",
               "|---|---:|---:|---:|---|"]
        for s in names:
            r = sysc.get(s)
            if r:
                md.append(f"| {s} | {r['msgs']} | {r['calls']} | {r['calls_per_msg']:.2f} | "
                          f"{r['top']} |")
    md += [""]

    # Ratios the notes quote. A/B for both figures: msgs/s above 1 means A is faster; CPU
    # above 1 means A spends more CPU per message.
    pairs = [("04_epoll_lt", "min_echo"), ("04_epoll_et", "min_echo"),
             ("04_epoll_lt", "03_poll"), ("04_epoll_et", "03_poll"), ("03_poll", "02_select"),
             ("04_epoll_lt", "libevent"), ("04_epoll_et", "libevent"),
             ("02_select", "01_thread"),
             # 08: the framework beside the minimal loop and stage 04 (-t 0), the cost of the
             # hop to an io thread (-t 1 / -t 0), and the libevent peer.
             ("08_t0", "04_epoll_lt"), ("08_t0", "min_echo"), ("08_t0", "libevent"),
             ("08_t1", "08_t0"), ("08_t2", "08_t0"),
             *([("08_t%d" % SERVER_CORES, "08_t0")] if SERVER_CORES > 2 else []),
             # the hop measured two ways: the SPSC rings against the task queue
             ("08_t1_ring", "08_t1"), ("08_t2_ring", "08_t2")]
    md += ["## Ratios (side by side, this run)", "",
           "A / B. msgs/s above 1: A served more messages per second. CPU above 1: A spent "
           "more server CPU per message.", "",
           "| A / B | load | msgs/s ratio | CPU/msg ratio |", "|---|---|---:|---:|"]
    for a, b in pairs:
        if a not in names or b not in names:
            continue
        for p in point_names:
            r1 = ratio(val(a, p, "msgs_per_s"), val(b, p, "msgs_per_s"))
            r2 = ratio(val(a, p, "srv_cpu_us_per_msg"), val(b, p, "srv_cpu_us_per_msg"))
            if r1 is not None or r2 is not None:
                md.append(f"| {a} / {b} | {p} | {fmt(r1, 2)} | {fmt(r2, 2)} |")
    md += ["", "| server | 5000 idle / 0 idle: msgs/s | CPU/msg | "
           "1000 idle / 0 idle: msgs/s | CPU/msg |", "|---|---:|---:|---:|---:|"]
    for s in names:
        cells = []
        for k in ("10x64+5000idle", "10x64+1000idle"):
            cells.append(fmt(ratio(val(s, k, "msgs_per_s"), val(s, "10x64+0idle", "msgs_per_s")), 2))
            cells.append(fmt(ratio(val(s, k, "srv_cpu_us_per_msg"),
                                   val(s, "10x64+0idle", "srv_cpu_us_per_msg")), 2))
        md.append(f"| {s} | " + " | ".join(cells) + " |")
    md += [""]

    md += ["## All figures", "",
           "| server | load | runs | msgs/s | MiB/s | p50 µs | p99 µs | server CPU µs/msg | "
           "loadgen CPU µs/msg | errors |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in point_names:
        for s in names:
            m = medians.get((s, p))
            if m is None:
                continue
            md.append(f"| {s} | {p} | {m['runs']} | {fmt(m.get('msgs_per_s'), 0)} | "
                      f"{fmt(m.get('MiB_per_s'), 2)} | {fmt(m.get('p50_us'))} | "
                      f"{fmt(m.get('p99_us'))} | {fmt(m.get('srv_cpu_us_per_msg'), 2)} | "
                      f"{fmt(m.get('cli_cpu_us_per_msg'), 2)} | {int(m.get('errors', 0))} |")
    md += ["", "## Notes", ""] + ([f"- {n}" for n in notes] or ["- none"])
    md += ["", "Raw runs: runs.csv; medians: results.csv; memory: mem.csv; "
           "syscalls: syscalls.csv; server logs: logs/.", ""]
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write("\n".join(md))
    return names


def write_plots(names, medians):
    gp = shutil.which("gnuplot")
    if gp is None:
        print("run.py: gnuplot not installed: no SVG plots ('make bench-deps' installs it)",
              file=sys.stderr)
        return []
    # Data: one row per idle count, one column per server; '?' where a point is missing.
    with open(os.path.join(OUT, "plot_idle.dat"), "w") as f:
        f.write("# idle " + " ".join(names) + "\n")
        for pname, _, _, idle in IDLE_POINTS:
            row = [str(idle)]
            for s in names:
                m = medians.get((s, pname))
                row.append(f"{m['msgs_per_s']:.0f}" if m and "msgs_per_s" in m else "?")
            for s in names:
                m = medians.get((s, pname))
                row.append(f"{m['srv_cpu_us_per_msg']:.3f}"
                           if m and "srv_cpu_us_per_msg" in m else "?")
            f.write(" ".join(row) + "\n")
    # The loads without idle connections, less 1x64: its wake-up cost per message dwarfs
    # the others and would flatten them (the table has it).
    cpu_points = [p[0] for p in POINTS if p[3] == 0 and p[1] > 1]
    with open(os.path.join(OUT, "plot_cpu.dat"), "w") as f:
        f.write("# server " + " ".join(cpu_points) + "\n")
        for s in names:
            row = [s]
            for p in cpu_points:
                m = medians.get((s, p))
                row.append(f"{m['srv_cpu_us_per_msg']:.3f}"
                           if m and "srv_cpu_us_per_msg" in m else "?")
            f.write(" ".join(row) + "\n")
    n = len(names)
    # noenhanced: server names have underscores, which would otherwise become subscripts.
    common = ("set terminal svg size 820,480 dynamic noenhanced font 'sans,12'\n"
              "set datafile missing '?'\nset key outside right top\nset grid ytics\n")
    lines_msgs = ", ".join(f"'plot_idle.dat' using 1:{i + 2} with linespoints lw 2 "
                           f"title '{s}'" for i, s in enumerate(names))
    lines_cpu = ", ".join(f"'plot_idle.dat' using 1:{i + 2 + n} with linespoints lw 2 "
                          f"title '{s}'" for i, s in enumerate(names))
    bars = ", ".join(f"'plot_cpu.dat' using {i + 2}:xtic(1) title '{p}'"
                     for i, p in enumerate(cpu_points))
    script = common + (
        "set output 'idle_msgs.svg'\n"
        "set title 'Messages per second, 10 active connections x 64 B, vs idle connections'\n"
        "set xlabel 'idle connections'\nset ylabel 'msgs/s'\nset yrange [0:*]\n"
        "set xtics (0, 1000, 5000)\n"
        f"plot {lines_msgs}\n"
        "set output 'idle_cpu.svg'\n"
        "set title 'Server CPU time per message vs idle connections (10 active x 64 B)'\n"
        "set ylabel 'server CPU µs per message'\n"
        f"plot {lines_cpu}\n"
        "set output 'cpu.svg'\n"
        "unset xlabel\nset xtics auto\nset xtics rotate by -20\n"
        "set title 'Server CPU time per message (lower is better)'\n"
        "set ylabel 'server CPU µs per message'\n"
        "set style data histograms\nset style histogram clustered gap 1\n"
        "set style fill solid 0.8 border -1\nset boxwidth 0.9\n"
        f"plot {bars}\n")
    with open(os.path.join(OUT, "plots.gp"), "w") as f:
        f.write(script)
    r = subprocess.run([gp, "plots.gp"], cwd=OUT, capture_output=True, text=True)
    if r.returncode != 0:
        note(f"gnuplot failed: {r.stderr.strip()[:300]}")
        return []
    return ["idle_msgs.svg", "idle_cpu.svg", "cpu.svg"]


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def main():
    if len(sys.argv) > 1:
        print(__doc__)
        return 0 if sys.argv[1] in ("-h", "--help") else 2
    if not os.access(LOADGEN, os.X_OK):
        print(f"run.py: no loadgen at {LOADGEN}: run 'make -C tests/bench' first",
              file=sys.stderr)
        return 1
    os.makedirs(os.path.join(OUT, "logs"), exist_ok=True)
    started = datetime.datetime.now()
    fd_limit = raise_fd_limit()
    wanted = [x for x in os.environ.get("BENCH_SERVERS", "").split(",") if x]

    servers = []
    for name, path, args, cap in SERVERS:
        if wanted and name not in wanted:
            continue
        if not os.access(os.path.join(ROOT, path), os.X_OK):
            note(f"{name}: {path} not built; skipped")
            continue
        servers.append(Server(name, path, args, cap))
    if not servers:
        print("run.py: no server to measure", file=sys.stderr)
        return 1

    global POINTS
    points_wanted = [x for x in os.environ.get("BENCH_POINTS", "").split(",") if x]
    if points_wanted:
        POINTS = [p for p in POINTS if p[0] in points_wanted]
        if not POINTS:
            print("run.py: BENCH_POINTS names no known load", file=sys.stderr)
            return 1
    runs_per_pass = len(servers) * len(POINTS)
    # Per run: warm-up + measure, setup and the closing drain, settling; per server: strace
    # and memory.
    estimate = REPEAT * runs_per_pass * (WARMUP + SECS + 0.6) + len(servers) * 5
    print(f"run.py: {len(servers)} servers x {len(POINTS)} loads x {REPEAT} runs, "
          f"about {estimate / 60:.1f} min; {PIN_NOTE}", file=sys.stderr)

    results = {}  # (server, point) -> list of value dicts
    errors = {}   # (server, point) -> error count
    mem, sysc = {}, {}
    raw = open(os.path.join(OUT, "runs.csv"), "w", newline="")
    raw_w = csv.writer(raw)
    raw_w.writerow(["rep", "server", "point", "conns", "idle", "size"] + FIELDS + DERIVED +
                   ["error"])
    try:
        for s in servers:
            s.start()
        live = [s for s in servers if not s.dead]

        # Syscalls and memory first, while every server is fresh: a thread-per-client
        # server that has just ended 5000 threads frees their cached stacks when it next
        # creates one, and those munmap calls would be billed to the traced messages.
        if STRACE:
            for s in live:
                r = measure_syscalls(s)
                if r:
                    sysc[s.name] = r
        for s in live:
            r = measure_memory(s, fd_limit)
            if r:
                mem[s.name] = r

        for rep in range(REPEAT):
            for pname, conns, size, idle in POINTS:
                # Rotate the order each repetition so no server is always first after a
                # heavy point (the previous run's teardown, a warm cache).
                order = live[rep % len(live):] + live[:rep % len(live)] if live else []
                for s in order:
                    if not s.alive():
                        continue
                    why = skip_reason(s, conns, idle, fd_limit)
                    if why:
                        if rep == 0:
                            note(f"{s.name}: {pname} skipped: {why}")
                        continue
                    vals, err = run_load(s, conns, size, idle)
                    vals = vals or {}
                    raw_w.writerow([rep + 1, s.name, pname, conns, idle, size] +
                                   [vals.get(k, "") for k in FIELDS + DERIVED] + [err or ""])
                    raw.flush()
                    errors[(s.name, pname)] = errors.get((s.name, pname), 0) + \
                        int(vals.get("errors", 0)) + (1 if err and not vals.get("errors") else 0)
                    if err:
                        note(f"{s.name}: {pname} run {rep + 1}: {err}")
                        continue
                    results.setdefault((s.name, pname), []).append(vals)
                    print(f"  [{rep + 1}/{REPEAT}] {s.name:12} {pname:15} "
                          f"{vals['msgs_per_s']:>9,.0f} msgs/s  "
                          f"{vals.get('srv_cpu_us_per_msg', -1):6.2f} µs CPU/msg",
                          file=sys.stderr)
    except KeyboardInterrupt:
        note("interrupted: the tables hold what was measured so far")
    finally:
        raw.close()
        for s in servers:
            s.stop()

    medians = {}
    for key, runs in results.items():
        m = {"runs": len(runs), "errors": errors.get(key, 0)}
        for k in METRICS:
            xs = [r[k] for r in runs if k in r and r[k] >= 0]
            if xs:
                m[k] = statistics.median(xs)
        medians[key] = m
    for key, n in errors.items():
        if key not in medians and n:
            medians[key] = {"runs": 0, "errors": n}

    names = write_reports(started, servers, medians, mem, sysc)
    plots = write_plots(names, medians)
    if plots:
        with open(os.path.join(OUT, "results.md"), "a") as f:
            f.write("## Plots\n\n" + "".join(f"![{p}]({p})\n\n" for p in plots))
    print(f"run.py: wrote {os.path.join(OUT, 'results.md')} "
          f"({time.monotonic() - T0:.0f} s)", file=sys.stderr)
    return 1 if any(errors.values()) else 0


def on_signal(signum, frame):
    # SIGTERM from a parent (make interrupted, a CI timeout) takes the same way out as
    # Ctrl-C: the finally block in main() stops every server we started.
    raise KeyboardInterrupt


if __name__ == "__main__":
    T0 = time.monotonic()
    signal.signal(signal.SIGTERM, on_signal)
    sys.exit(main())
