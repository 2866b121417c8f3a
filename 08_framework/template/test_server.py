#!/usr/bin/env python3
"""test_server.py: the tests of template, standard library only: python3 test_server.py ./template

Each test starts the server on a free port (-p 0), talks to it over loopback and checks every
byte it answers, then stops it with SIGTERM and checks its exit status (0 within 2 s), its
stop line's counters and that its stderr holds no sanitizer report. TIMEOUT_SCALE=3 stretches
every deadline on a slow machine. Prints one line per test and exits 1 if any failed.
A new command gets a test here: copy test_ping and change the bytes.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

SCALE = float(os.environ.get("TIMEOUT_SCALE", "1"))
MAX_LINE = 1024
SANITIZER = re.compile(r"ERROR: (Address|Leak|Memory)Sanitizer|WARNING: ThreadSanitizer|runtime error:")


def deadline(seconds):
    return time.monotonic() + seconds * SCALE


class Server:
    """The server under test: started with -p 0 ARGS, stopped with stop()."""

    def __init__(self, binary, *args):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary, "-p", "0", *args], stdout=subprocess.PIPE,
                                     stderr=self.err)
        line = self.proc.stdout.readline().decode()  # the contract's first and only line
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"want 'listening on 127.0.0.1:PORT', got {line!r}; "
                                 f"stderr: {self.stderr()[-2000:]}")
        self.port = int(m.group(1))

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def stop(self):
        """SIGTERM: exit 0 within 2 s, no sanitizer report. Returns the stop line's counters."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=2 * SCALE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("no exit within 2 s of SIGTERM")
        err = self.stderr()
        report = SANITIZER.search(err)
        assert not report, f"sanitizer report in stderr:\n{err[report.start():][:3000]}"
        assert status == 0, f"exit status {status} after SIGTERM (want 0); stderr:\n{err[-2000:]}"
        assert self.proc.stdout.read() == b"", "more than the listening line on stdout"
        m = re.search(r"template: (pings .*)", err)
        assert m, f"no stop line 'template: pings ...' in stderr:\n{err[-2000:]}"
        counters = {}
        for item in m.group(1).split(", "):  # "pings 3" -> {"pings": 3}
            name, value = item.rsplit(" ", 1)
            counters[name] = int(value)
        return counters

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5 * SCALE)

    def send(self, data):
        self.sock.sendall(data)

    def expect(self, want, seconds=5):
        """Reads exactly len(WANT) bytes and requires them to be WANT."""
        got = b""
        end = deadline(seconds)
        while len(got) < len(want):
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = self.sock.recv(len(want) - len(got))
            except socket.timeout:
                chunk = None
            if not chunk:
                break
            got += chunk
        assert got == want, f"want {want!r}, got {got!r}" + ("" if chunk is not None else " (timed out)")

    def expect_eof(self, seconds=5):
        """The server closes the connection, and sends nothing before it."""
        self.sock.settimeout(seconds * SCALE)
        try:
            got = self.sock.recv(4096)
        except ConnectionResetError:
            got = b""
        assert got == b"", f"want the connection closed, got {got!r}"

    def close(self):
        self.sock.close()


# --- the tests: each gets the binary and the io thread count ---------------------------------

def test_ping(binary, threads):
    srv = Server(binary, "-t", threads)
    try:
        c = Client(srv.port)
        c.send(b"PING\n")
        c.expect(b"PONG\n")
        c.send(b"PING\r\n")               # nc -C, telnet
        c.expect(b"PONG\n")
        c.send(b"PI")                     # a command split across reads is one line
        time.sleep(0.05)                  # lets the first piece arrive alone (not a readiness wait)
        c.send(b"NG\nPING\nPING\n")       # several in one read: one answer each, in order
        c.expect(b"PONG\nPONG\nPONG\n")
        c.close()
        st = srv.stop()
        assert st["pings"] == 5, st
    finally:
        srv.kill()


def test_errors(binary, threads):
    srv = Server(binary, "-t", threads)
    try:
        c = Client(srv.port)
        for line in (b"", b"ping", b"PING ", b"PINGS", b"DELAYS 5", b"HELLO"):
            c.send(line + b"\n")
            c.expect(b"ERR unknown command\n")
        for line in (b"DELAY", b"DELAY ", b"DELAY x", b"DELAY 5x", b"DELAY -1", b"DELAY 60001",
                     b"DELAY 99999999999999999999 a"):
            c.send(line + b"\n")
            c.expect(b"ERR usage: DELAY MS [TEXT], MS from 0 to 60000\n")
        c.send(b"PING\n")                 # still served
        c.expect(b"PONG\n")
        c.close()
        st = srv.stop()
        assert st["errors"] == 13 and st["pings"] == 1 and st["delays"] == 0, st
    finally:
        srv.kill()


def test_delay(binary, threads):
    srv = Server(binary, "-t", threads)
    try:
        c = Client(srv.port)
        c.send(b"DELAY 0 now\n")
        c.expect(b"now\n")
        c.send(b"DELAY 0\n")              # no text: an empty line
        c.expect(b"\n")
        c.send(b"DELAY 0 \n")             # empty text too
        c.expect(b"\n")
        c.send(b"DELAY 0 two  words \r\n")  # the text as sent, spaces kept, "\r" not
        c.expect(b"two  words \n")
        # The timer answers later; a command sent meanwhile is answered first.
        start = time.monotonic()
        c.send(b"DELAY 300 late\nDELAY 5 busy\n")  # one at a time
        c.expect(b"ERR busy: one DELAY at a time\n")
        c.send(b"PING\n")
        c.expect(b"PONG\n")
        c.expect(b"late\n")
        took = time.monotonic() - start
        assert took >= 0.29, f"DELAY 300 answered after {took * 1000:.0f} ms"
        c.send(b"DELAY 60000 " + b"x" * (MAX_LINE - 12) + b"\n")  # the longest line, the longest wait
        c.send(b"PING\n")
        c.expect(b"PONG\n")
        c.close()                         # its DELAY dies with it
        c2 = Client(srv.port)             # and the server carries on
        c2.send(b"DELAY 1 after\n")
        c2.expect(b"after\n")
        c2.close()
        st = srv.stop()
        assert st == {"pings": 2, "delays": 7, "delays sent": 6, "delays cancelled": 1,
                      "errors": 1}, st
    finally:
        srv.kill()


def test_delay_cancelled(binary, threads):
    """A client that leaves with a DELAY pending: its timer is stopped (never fires on freed
    memory), and the server serves the next client. Timers fire earliest first, so once a
    later DELAY has answered, any timer left armed would have fired."""
    srv = Server(binary, "-t", threads)
    try:
        gone = int(300 * SCALE)
        for _ in range(3):
            c = Client(srv.port)
            c.send(b"DELAY %d gone\nPING\n" % gone)
            c.expect(b"PONG\n")
            c.close()
        c = Client(srv.port)
        c.send(b"DELAY %d probe\n" % (gone + 100))
        c.expect(b"probe\n", seconds=5 + gone / 1000)
        c.send(b"DELAY 60000 pending at shutdown\nPING\n")
        c.expect(b"PONG\n")
        st = srv.stop()                   # the shutdown closes it: cancelled too
        c.expect_eof()
        c.close()
        assert st["delays"] == 5 and st["delays sent"] == 1 and st["delays cancelled"] == 4, st
    finally:
        srv.kill()


def test_line_limit(binary, threads):
    srv = Server(binary, "-t", threads)
    try:
        other = Client(srv.port)
        c = Client(srv.port)
        c.send(b"x" * MAX_LINE + b"\n")   # the longest line: an answer
        c.expect(b"ERR unknown command\n")
        c.send(b"PING" + b"\r" * (MAX_LINE - 4) + b"\r\n")  # one past ("\r" counts): dropped
        c.expect_eof()
        c.close()
        other.send(b"PING\n")             # the others carry on
        other.expect(b"PONG\n")
        other.close()
        st = srv.stop()
        assert st["pings"] == 1 and st["errors"] == 1, st
        assert "closed: bad frame" in srv.stderr(), "no log line for the dropped client"
    finally:
        srv.kill()


def test_contract(binary):
    r = subprocess.run([binary, "--help"], capture_output=True, timeout=5 * SCALE)
    assert r.returncode == 0 and r.stdout.startswith(b"usage: template ") and r.stderr == b"", r
    for args in (["--bogus"], ["-p", "65536"], ["-p", "-1"], ["-p"], ["-t", "65"], ["extra"]):
        r = subprocess.run([binary, *args], capture_output=True, timeout=5 * SCALE)
        assert r.returncode == 2 and r.stdout == b"" and b"usage: template " in r.stderr, (args, r)
    srv = Server(binary)                 # SIGTERM with no client, and SIGINT, exit 0
    try:
        srv.stop()
    finally:
        srv.kill()
    srv = Server(binary, "-t", "2")
    try:
        c = Client(srv.port)
        c.send(b"PING\n")
        c.expect(b"PONG\n")
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(timeout=2 * SCALE) == 0, "exit status after SIGINT"
        c.close()
    finally:
        srv.kill()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 test_server.py ./template")
    binary = sys.argv[1]
    tests = [(test_contract.__name__, lambda: test_contract(binary))]
    for t in (test_ping, test_errors, test_delay, test_delay_cancelled, test_line_limit):
        for threads in ("0", "2"):
            tests.append((f"{t.__name__} -t {threads}", lambda t=t, n=threads: t(binary, n)))
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print(f"ok      {name}")
        except Exception as e:  # one test's failure (or crash) never stops the others
            failed += 1
            print(f"FAILED  {name}: {type(e).__name__}: {e}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
