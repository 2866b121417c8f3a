"""peers.py: what the benchmark scripts of 08's examples share (standard library only).

kv.py, http.py, idle.py, chat08.py, heartbeat.py, gateway.py and stage08.py import it: where
the results go, pinning the server and the client to their own cores, a free port for a peer
that cannot take port 0, starting a server of the kit (its `listening on HOST:PORT` line),
redis-server and nginx on such a port, stopping any of them, and the kernel's figures of a
process (CPU ticks, resident memory, children). Nothing here measures by itself.
"""

import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EX = os.path.join(ROOT, "08_framework", "examples")
RESULTS = os.environ.get("BENCH_OUT") or os.path.join(HERE, "results")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pinning(client="the client"):
    """(server prefix, client prefix, a note): server on CPU 0, client on CPU 1 (taskset),
    where there are two cores and taskset works; else no prefix, and the note says why."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return [], [], "not pinned (fewer than 2 cores, or no taskset)"
    if subprocess.run(["taskset", "-c", "1", "true"], stderr=subprocess.DEVNULL).returncode != 0:
        return [], [], "not pinned (taskset refused)"
    return ["taskset", "-c", "0"], ["taskset", "-c", "1"], "server on CPU 0, %s on CPU 1" % client


def cpu_ticks(pid):
    """utime + stime of the whole process (all its threads), in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def cpu_ns(pid):
    """CPU time of the whole process (all its threads) in nanoseconds: the sum of each thread's
    sum_exec_runtime (the first field of /proc/PID/task/TID/schedstat). A thread that has
    ended is no longer counted, so use it on processes whose threads live as long as they do.
    utime + stime come in clock ticks (10 ms): a few seconds of a cheap server's work is only
    ten or twenty of them, and the tick decides a tenth of the figure. None without schedstat."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def wait_at_rest(pid, timeout=10.0):
    """Until the process used no CPU for 100 ms (or is gone, or timeout seconds passed)."""
    end = time.monotonic() + timeout
    try:
        last = cpu_ticks(pid)
        while time.monotonic() < end:
            time.sleep(0.1)  # the quiet interval itself, inside a loop with a deadline
            now = cpu_ticks(pid)
            if now == last:
                return
            last = now
    except OSError:
        return


def free_port():
    """A port the kernel has just found free, for a peer that cannot take port 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_listening(argv, stderr=subprocess.DEVNULL, timeout=10.0):
    """Starts a server of the kit (argv includes `-p 0`, and any taskset prefix) and reads the
    contract's first stdout line, `listening on HOST:PORT`. Returns (process, port)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True)
    line = ""
    if select.select([p.stdout], [], [], timeout)[0]:
        line = p.stdout.readline()
    if not line.startswith("listening on "):
        p.kill()
        _, err = p.communicate()
        raise RuntimeError("%s printed no listening line within %g s: %r %s"
                           % (os.path.basename(argv[-1] if argv[0] == "taskset" else argv[0]),
                              timeout, line, (err or "")[-1000:]))
    return p, int(line.rsplit(":", 1)[1])


def stop(p, timeout=10):
    """SIGTERM, then SIGKILL after timeout seconds; returns the exit status."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def wait_ping(port, deadline):
    """Until a RESP server on port answers PING with +PONG."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16) == b"+PONG\r\n":
                    return
        except OSError:
            pass
        time.sleep(0.05)  # poll interval of a loop with a deadline
    raise RuntimeError("no PONG from port %d" % port)


def start_redis(args, pin=()):
    """redis-server on a free port with args (persistence and the rest are the caller's);
    returns (process, port) once it answers PING."""
    port = free_port()
    p = subprocess.Popen(list(pin) + ["redis-server", "--port", str(port)] + args,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ping(port, time.monotonic() + 10)
    except RuntimeError:
        stop(p)
        raise
    return p, port


def start_nginx(conf, tmp, ready, pin=()):
    """nginx with one worker, its configuration conf(prefix, port) (a function: the prefix is a
    folder of its own under tmp, the port a free one); ready(port, deadline) waits until it
    answers. Returns (master process, port, the worker's pid)."""
    prefix = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(prefix, "body"), exist_ok=True)
    port = free_port()
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf(prefix, port))
    p = subprocess.Popen(list(pin) + ["nginx", "-p", prefix, "-c", path], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        ready(port, time.monotonic() + 10)
        deadline = time.monotonic() + 10
        while len(children(p.pid)) != 1:
            if time.monotonic() > deadline:
                raise RuntimeError("nginx has %d worker processes (want 1)" % len(children(p.pid)))
            time.sleep(0.05)  # poll interval of a loop with a deadline
    except RuntimeError:
        stop(p)
        raise
    return p, port, children(p.pid)[0]


def load_average():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def machine():
    """One line: cores, CPU model, kernel, compiler, and the flags every Makefile builds with."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cc = os.environ.get("CC", "cc")
    try:
        ver = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        ver = cc
    return "%d cores%s, Linux %s, %s, -O2 -g (no sanitizer)" % (
        os.cpu_count() or 1, " (%s)" % model if model else "", platform.release(), ver)
