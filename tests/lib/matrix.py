#!/usr/bin/env python3
"""matrix: the capability matrix, expected (tests/matrix/expected.txt) and measured.

  matrix.py expected            print the expected table as markdown
  matrix.py check ROW --port P [--only PROBE,...]
                                probe the server running on P, compare with ROW's expectations
  matrix.py measure             start every built server, probe it, print the measured table;
                                exit 1 if any cell differs from the expected one
  matrix.py readme-check FILE   FILE's table between the matrix markers equals the expected one
  matrix.py readme-update FILE  rewrite that table from the expected file
"""

import os
import random
import re
import select
import subprocess
import tempfile
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netkit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPECTED = os.path.join(ROOT, "tests", "matrix", "expected.txt")
BEGIN = ("<!-- matrix:begin (written by `python3 tests/lib/matrix.py readme-update README.md` "
         "from tests/matrix/expected.txt; do not edit by hand) -->")
END = "<!-- matrix:end -->"


def load_expected(path=EXPECTED):
    """Return (columns, rows): rows is an ordered list of (server, {probe: bool})."""
    columns, rows = None, []
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if columns is None:
                columns = fields[1:]
                known = [n for n, _, _ in netkit.PROBES]
                for c in columns:
                    if c not in known:
                        sys.exit("matrix: %s: unknown probe column %r (known: %s)" % (path, c, ", ".join(known)))
                continue
            if len(fields) != len(columns) + 1 or any(v not in ("yes", "no") for v in fields[1:]):
                sys.exit("matrix: %s: bad row: %s" % (path, raw.rstrip()))
            rows.append((fields[0], {c: v == "yes" for c, v in zip(columns, fields[1:])}))
    return columns, rows


def markdown(columns, rows):
    titles = {n: t for n, t, _ in netkit.PROBES}
    out = ["| server | " + " | ".join(titles[c] for c in columns) + " |",
           "|---|" + "---|" * len(columns)]
    for server, cells in rows:
        out.append("| `%s` | " % server + " | ".join(
            ("yes" if cells[c] else "no") if isinstance(cells[c], bool) else cells[c] for c in columns) + " |")
    return "\n".join(out)


def probe_all(port, columns, seed):
    """{probe: True | False | "error: ..."}: a probe that fails for a reason other than the
    capability itself (the server is gone, a refused connect) is an error, never a "no"."""
    fns = {n: f for n, _, f in netkit.PROBES}
    out = {}
    for c in columns:
        try:
            out[c] = fns[c]("127.0.0.1", port, seed)
        except Exception as e:  # noqa: BLE001 - reported, never swallowed
            out[c] = "error: %s: %s" % (type(e).__name__, e)
    return out


def cell(v):
    return v if isinstance(v, str) else ("yes" if v else "no")


def compare(server, columns, want, got):
    diffs = []
    for c in columns:
        if isinstance(got[c], str):
            diffs.append("%s: %s (expected %s)" % (c, got[c], cell(want[c])))
        elif want[c] != got[c]:
            diffs.append("%s: %s (expected %s; %s than the matrix says)" % (
                c, cell(got[c]), cell(want[c]), "better" if got[c] else "worse"))
    return diffs


def cmd_check(server, port, only=None):
    columns, rows = load_expected()
    if only:
        columns = [c for c in columns if c in only]
    want = dict(rows).get(server)
    if want is None:
        sys.exit("matrix: no row %r in %s" % (server, EXPECTED))
    got = probe_all(port, columns, random.randrange(1 << 30))
    for c in columns:
        print("%-12s %s" % (c, cell(got[c])))
    diffs = compare(server, columns, want, got)
    for d in diffs:
        print("FAIL: %s %s" % (server, d))
    return 1 if diffs else 0


def binary_path(server):
    stage, name = server.split("/", 1)
    san = os.environ.get("SAN", "")
    if san:
        return os.path.join(ROOT, stage, "build-" + san.replace(",", "-"), name)
    return os.path.join(ROOT, stage, name)


def start(path):
    """Start a server on an ephemeral port; return (process, port)."""
    return start_args([path, "-p", "0"])


def start_args(argv):
    """Start argv (which must ask for an ephemeral port); return (process, port)."""
    # stderr goes to a file so a sanitizer report can be found after the run (see stop()).
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
    proc.errfile = err
    try:
        return proc, wait_listening(proc)
    except BaseException:
        proc.kill()                       # never leave a server behind, whatever went wrong
        proc.wait()
        raise


def wait_listening(proc):
    """Read the server's stdout until `listening on HOST:PORT`; return PORT."""
    deadline = time.monotonic() + netkit.scaled(5)
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.05)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break                     # stdout closed: the server died
            buf += chunk
            m = re.search(rb"^listening on .*:(\d+)$", buf, re.M)
            if m:
                return int(m.group(1))
    raise RuntimeError("%s did not print 'listening on' within 5 s" % proc.args[0])


SANITIZER = re.compile(rb"ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|runtime error:")


def stop(proc):
    """SIGTERM; return None if the server exited 0 within 2 s with no sanitizer report,
    else a sentence saying what went wrong."""
    proc.terminate()
    try:
        proc.wait(timeout=netkit.scaled(2))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "did not exit within 2 s of SIGTERM"
    proc.errfile.seek(0)
    m = SANITIZER.search(proc.errfile.read())
    proc.errfile.close()
    if m:
        return "sanitizer report on stderr: %s" % m.group(0).decode()
    if proc.returncode != 0:
        return "exited with status %d after SIGTERM" % proc.returncode
    return None


def cmd_measure():
    columns, rows = load_expected()
    netkit.raise_nofile(1300)
    measured, bad = [], []
    for server, want in rows:
        path = binary_path(server)
        if not os.path.isdir(os.path.join(ROOT, server.split("/")[0])):
            continue                      # stage not written yet
        if not os.access(path, os.X_OK):
            print("matrix: %s is not built (run make)" % path, file=sys.stderr)
            bad.append(server)
            continue
        proc, port = start(path)
        try:
            got = probe_all(port, columns, random.randrange(1 << 30))
        finally:
            problem = stop(proc)
        diffs = compare(server, columns, want, got)
        if problem:
            diffs.append("server " + problem)
        cells = {c: cell(got[c]) + (" (expected %s)" % cell(want[c]) if got[c] != want[c] else "")
                 for c in columns}
        measured.append((server, cells))
        if diffs:
            bad.append(server)
            for d in diffs:
                print("matrix: %s %s" % (server, d), file=sys.stderr)
    print(markdown(columns, measured))
    return 1 if bad else 0


def readme_table(text):
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        return None
    return text[i + len(BEGIN):j].strip()


def cmd_readme(path, update):
    columns, rows = load_expected()
    present = [(s, c) for s, c in rows if os.path.isdir(os.path.join(ROOT, s.split("/")[0]))]
    table = markdown(columns, present)
    with open(path) as f:
        text = f.read()
    current = readme_table(text)
    if current is None:
        print("matrix: %s has no %s ... %s section" % (path, BEGIN, END))
        return 1
    if update:
        i, j = text.find(BEGIN), text.find(END)
        with open(path, "w") as f:
            f.write(text[:i + len(BEGIN)] + "\n" + table + "\n" + text[j:])
        return 0
    if current != table:
        print("matrix: the table in %s differs from tests/matrix/expected.txt; run: "
              "python3 tests/lib/matrix.py readme-update %s\n--- README has:\n%s\n--- expected:\n%s"
              % (path, path, current, table))
        return 1
    return 0


def main(argv):
    if len(argv) >= 1 and argv[0] == "expected":
        columns, rows = load_expected()
        print(markdown(columns, rows))
        return 0
    if len(argv) in (4, 6) and argv[0] == "check" and argv[2] == "--port":
        only = argv[5].split(",") if len(argv) == 6 and argv[4] == "--only" else None
        return cmd_check(argv[1], int(argv[3]), only)
    if argv == ["measure"]:
        return cmd_measure()
    if len(argv) == 2 and argv[0] in ("readme-check", "readme-update"):
        return cmd_readme(argv[1], argv[0] == "readme-update")
    print(__doc__.strip(), file=sys.stderr if argv not in (["-h"], ["--help"]) else sys.stdout)
    return 0 if argv in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
