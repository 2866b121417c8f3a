#!/usr/bin/env python3
"""tests/grade STAGE DIR: grade a student's copy of a stage, per lab, with a score to trust.

    tests/grade 04 ~/lab04                (or: make grade STAGE=04 DIR=~/lab04)
    GRADE_FILTER=regex tests/grade 04 DIR   only the tests whose names match

DIR is a copy of the stage (from `make lab`, or the reference itself). Nothing runs inside
DIR: the kit is copied to a scratch folder, DIR's own sources (its top-level *.c and *.h,
not the unit tests) replace the stage's, and everything else comes from the kit: the test
files (test*.bats), the Makefile, the unit tests (*_test.c, test_*.h), the fuzz targets and
corpora (fuzz/), the harness (tests/). Editing any of them in DIR changes nothing.

Each test runs alone (`bats --filter '^name$'`), in a session of its own, with a time limit
(GRADE_TEST_SECS, default 300, times TIMEOUT_SCALE); the whole run has one too
(GRADE_RUN_SECS, default 3600 or 30 a test if more, times TIMEOUT_SCALE). A test passes when bats' exit status
says so and its TAP stream holds exactly that one result: a test that writes its own
`ok 1` line on bats' descriptor 3 adds a line and fails. After each test every process it
left is killed: its session, and any process whose environment carries this run's marker,
whose working folder or program lies in the scratch folder (a `setsid` double fork keeps
the marker unless it empties its environment; limits: CONTRIBUTING.md, "Labs").
The unit-test binaries are linked with a guard (tests/lib/grade_guard.c) that closes every
descriptor above 2 before any of the student's code runs (their constructors included) and
turns an exit() or _exit() called before main() into exit status 86.

GRADE_JOBS=N runs N tests side by side (default 1: a whole grading of 08 takes most of an
hour alone), each in a copy of the built kit of its own (the tests of a file assume they
run one at a time) with its own time limit, session and marker; what a test leaves running
is killed after it by those two, and by its folder when the whole run ends.

A skipped test (a tool missing) is not passed: its reason is shown. The stage's labs.txt
says which tests grade which lab, with the lab's weight; the report gives per lab
`name: passed X/Y (P/W points)`, each failing test's own messages (its seed included), the
total, and GRADE_JSON (default: results.json in the current folder, `-` for none) in the
format Gradescope-style autograders read. Exit status: 0 at full marks, 1 below, 2 on a
usage error or a kit problem.
"""

import concurrent.futures
import json
import queue
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUARD_EXIT = 86


def die(msg, status=2):
    print("tests/grade: %s" % msg, file=sys.stderr)
    sys.exit(status)


def usage():
    die("usage: tests/grade STAGE DIR   (e.g. tests/grade 04 ~/lab04)")


def stage_dir(arg):
    arg = arg.rstrip("/")
    for name in sorted(os.listdir(ROOT)):
        if re.match(r"^\d\d_", name) and os.path.isdir(os.path.join(ROOT, name)) and \
                (name == arg or name.split("_")[0] == arg):
            return name
    return None


def timeout_scale():
    """TIMEOUT_SCALE as given, else from the load as tests/run chooses it (at most 6)."""
    v = os.environ.get("TIMEOUT_SCALE")
    if v:
        try:
            return max(1.0, float(v))
        except ValueError:
            die("TIMEOUT_SCALE=%r is not a number" % v)
    try:
        load1 = float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        return 1.0
    per = load1 / (os.cpu_count() or 1)
    f = 1 if per <= 1 else (int(per) if per == int(per) else int(per) + 1)
    return float(min(f, 6))


def env_secs(name, default, scale):
    v = os.environ.get(name, "")
    try:
        s = float(v) if v else default
    except ValueError:
        die("%s=%r is not a number of seconds" % (name, v))
    return s * scale


# ---------------------------------------------------------------- labs.txt

def read_labs(stage):
    """[(lab, weight, regex)] from STAGE/labs.txt: `lab weight regex` lines, # comments.
    A lab may take several lines (the same weight on each)."""
    path = os.path.join(ROOT, stage, "labs.txt")
    labs = []
    if not os.path.exists(path):
        return labs
    seen = {}
    for n, line in enumerate(open(path), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) != 3:
            die("%s:%d: want `lab weight regex`" % (path, n))
        try:
            w = float(parts[1])
            rx = re.compile(parts[2])
        except (ValueError, re.error) as e:
            die("%s:%d: %s" % (path, n, e))
        if seen.setdefault(parts[0], w) != w:
            die("%s:%d: lab %s has two weights" % (path, n, parts[0]))
        labs.append((parts[0], w, rx))
    return labs


def labs_of(name, labs):
    """The labs test NAME grades: every lab with a matching line, else "contract" if one of
    its lines matches; [] if none does (labs.txt is incomplete)."""
    hit = []
    for lab, _, rx in labs:
        if lab != "contract" and rx.search(name) and lab not in hit:
            hit.append(lab)
    if not hit and any(rx.search(name) for lab, _, rx in labs if lab == "contract"):
        hit = ["contract"]
    return hit


def test_names(bats_file):
    """The test names of a bats file, in order (its @test lines)."""
    names = []
    for line in open(bats_file):
        m = re.match(r'^@test\s+"((?:[^"\\]|\\.)*)"\s*\{', line) or re.match(r"^@test\s+'([^']*)'\s*\{", line)
        if m:
            # bats shows the name with the shell's quoting undone: \" -> ", \\ -> \, \$ -> $
            names.append(re.sub(r'\\(["\\$`])', r"\1", m.group(1)))
    return names


def as_written(name):
    """NAME as its @test line writes it between double quotes: bats 1.8's --filter matches
    that text, not the name it shows (a name holding \\ or \" would otherwise run nothing)."""
    return re.sub(r'(["\\$`])', r"\\\1", name)


# ---------------------------------------------------------------- processes

def pids_left(sid, marker, scratch, me):
    """Processes of this run still alive: in session SID, carrying MARKER in their
    environment, or with their cwd or program in SCRATCH."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) in me:
            continue
        pid = int(p)
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] == "Z":
                continue
            if sid is not None and int(fields[3]) == sid:
                found.append(pid)
                continue
            with open("/proc/%d/environ" % pid, "rb") as f:
                if marker in f.read():
                    found.append(pid)
                    continue
            for link in ("cwd", "exe") if scratch else ():
                t = os.readlink("/proc/%d/%s" % (pid, link))
                if t == scratch or t.startswith(scratch + "/"):
                    found.append(pid)
                    break
        except (OSError, ValueError, IndexError):
            continue
    return found


def kill_left(sid, marker, scratch):
    """SIGKILL every process of this run, until none is left (bounded). Returns how many."""
    me = {os.getpid()}
    killed = set()
    for _ in range(50):
        if sid is not None:
            try:
                os.killpg(sid, signal.SIGKILL)
            except OSError:
                pass
        left = pids_left(sid, marker, scratch, me)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.05)
    return len(killed)


def run_limited(cmd, cwd, env, limit, marker, scratch, out_path):
    """Runs CMD in a new session, output to OUT_PATH, for at most LIMIT seconds; then kills
    everything of the run. Returns (status or None on timeout, processes killed after)."""
    with open(out_path, "wb") as out:
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        try:
            status = p.wait(timeout=max(limit, 0.1))
        except subprocess.TimeoutExpired:
            status = None
    killed = kill_left(p.pid, marker, scratch)
    if status is None:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    return status, killed


# ---------------------------------------------------------------- the copy

PINNED = re.compile(r"(^|/)(test[^/]*\.bats|Makefile|[^/]*_test\.c|test_[^/]*\.h)$|^fuzz/")


def assemble(stage, student, scratch):
    """The kit in SCRATCH/kit, with STUDENT's sources in place of STAGE's."""
    kit = os.path.join(scratch, "kit")
    excl = ["--exclude=./.git", "--exclude=build-*", "--exclude=*.o", "--exclude=*.d",
            "--exclude=./tests/.out", "--exclude=*.gcda", "--exclude=*.gcno",
            "--exclude=./tests/bench/results", "--exclude=__pycache__", "--exclude=*.orig",
            "--exclude=*.rej"]
    os.makedirs(kit)
    # The harness (tests/) and the stage, plus the files of another stage its tests name
    # ($KIT_ROOT/07_chat/test.bats: 08 runs 07's protocol tests against its chat_server)
    # and the kit's root Makefile (08's template test runs `make -C "$KIT_ROOT" new`), the
    # kit's own copies; a stage's tests use nothing else of the kit.
    others = {"./Makefile"} if os.path.isfile(os.path.join(ROOT, "Makefile")) else set()
    for f in os.listdir(os.path.join(ROOT, stage)):
        if re.match(r"^test.*\.bats$", f):
            for m in re.finditer(r"\$KIT_ROOT/(\d\d_[A-Za-z0-9_]+/[A-Za-z0-9_./-]*[A-Za-z0-9_])",
                                 open(os.path.join(ROOT, stage, f)).read()):
                if m.group(1).split("/")[0] != stage and os.path.isfile(os.path.join(ROOT, m.group(1))):
                    others.add("./" + m.group(1))
    tar = subprocess.Popen(["tar", "-C", ROOT] + excl + ["-cf", "-", "./tests", "./" + stage] + sorted(others),
                           stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", kit, "-xf", "-"], stdin=tar.stdout, check=True)
    tar.stdout.close()
    if tar.wait() != 0:
        die("could not copy the kit")
    sdir = os.path.join(kit, stage)
    subprocess.run(["make", "-s", "-C", sdir, "clean"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    # The stage's own sources go; the pinned files (tests, Makefile, fuzz/) stay. Sources in
    # subfolders count too (08's lib/, examples/), never fuzz/, bugs/ or build folders.
    def sources(top):
        for dirpath, dirnames, filenames in os.walk(top):
            rel = os.path.relpath(dirpath, top)
            dirnames[:] = [d for d in dirnames if d not in ("fuzz", "bugs", ".git") and not d.startswith("build-")]
            for f in filenames:
                r = os.path.normpath(os.path.join(rel, f))
                if f.endswith((".c", ".h")) and not PINNED.search(r):
                    yield r
    for r in list(sources(sdir)):
        os.unlink(os.path.join(sdir, r))
    taken = []
    for r in sorted(sources(student)):
        src = os.path.join(student, r)
        if os.path.isfile(src) and not os.path.islink(src):
            os.makedirs(os.path.dirname(os.path.join(sdir, r)), exist_ok=True)
            shutil.copyfile(src, os.path.join(sdir, r))
            taken.append(r)
    return kit, sdir, taken


def guard_flags(scratch):
    """Compiles tests/lib/grade_guard.c; the link flags that put it in a binary."""
    obj = os.path.join(scratch, "grade_guard.o")
    r = subprocess.run(["cc", "-std=c11", "-O2", "-c", "-o", obj, os.path.join(ROOT, "tests/lib/grade_guard.c")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        die("cannot build the guard: %s" % r.stderr.strip())
    return "%s -Wl,--wrap=main,--wrap=exit,--wrap=_exit,--wrap=_Exit" % obj


def make_vars(sdir, var):
    for line in open(os.path.join(sdir, "Makefile")):
        m = re.match(r"^%s\s*:?=\s*(.*)$" % var, line)
        if m:
            return m.group(1).split()
    return []


def unit_targets(sdir):
    """The unit-test binaries' make targets (the names in TESTS that end in _test, where
    their sources are: 08 keeps them in lib/). A TESTS the Makefile computes ($(wildcard ...))
    is read from the sources themselves."""
    names = make_vars(sdir, "TESTS")
    if any("$" in n for n in names):
        names = [f[:-2] for d in (".", "lib") if os.path.isdir(os.path.join(sdir, d))
                 for f in sorted(os.listdir(os.path.join(sdir, d))) if f.endswith("_test.c")]
    out = []
    for n in names:
        if not n.endswith("_test"):
            continue
        for d in ("", "lib/"):
            if os.path.exists(os.path.join(sdir, d + n + ".c")):
                out.append(d + n)
                break
    return out


# ---------------------------------------------------------------- main

def main(argv):
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    if argv[:1] == ["--check"] and len(argv) == 2:
        return check(argv[1])
    if len(argv) != 2:
        usage()
    stage = stage_dir(argv[0])
    if stage is None:
        die("no stage '%s' here" % argv[0])
    student = os.path.abspath(argv[1])
    if not os.path.isdir(student):
        die("no folder '%s'" % argv[1])
    if not any(f.endswith(".c") for _, _, fs in os.walk(student) for f in fs):
        die("%s has no .c files: is it a copy of %s?" % (student, stage))
    if os.path.realpath(student) == os.path.realpath(os.path.join(ROOT, stage)):
        print("(grading the reference itself)")
    scale = timeout_scale()
    test_secs = env_secs("GRADE_TEST_SECS", 300, scale)
    build_secs = env_secs("GRADE_BUILD_SECS", 300, scale)
    flt = os.environ.get("GRADE_FILTER", "")
    try:
        frx = re.compile(flt) if flt else None
    except re.error as e:
        die("GRADE_FILTER: %s" % e)
    json_path = os.environ.get("GRADE_JSON", "results.json")
    v = os.environ.get("GRADE_JOBS", "") or "1"
    if not v.isdigit() or int(v) < 1:
        die("GRADE_JOBS=%r is not a count of tests (1 or more)" % v)
    jobs = int(v)

    bats_files = sorted(f for f in os.listdir(os.path.join(ROOT, stage)) if re.match(r"^test.*\.bats$", f))
    tests = [(f, n) for f in bats_files for n in test_names(os.path.join(ROOT, stage, f))]
    if frx:
        tests = [(f, n) for f, n in tests if frx.search(n)]
    if not tests:
        die("no test of %s matches GRADE_FILTER=%r" % (stage, flt))
    labs = read_labs(stage)
    weights = {lab: w for lab, w, _ in labs}
    # The whole run's limit is a backstop against tests that each use up their own: an hour,
    # or 30 s a test for a stage with more than 120 (08: 146 tests, most of an hour alone).
    run_secs = env_secs("GRADE_RUN_SECS", max(3600, 30 * len(tests)), scale)
    run_deadline = time.monotonic() + run_secs

    scratch = os.path.realpath(tempfile.mkdtemp(prefix="kit-grade."))
    marker_val = secrets.token_hex(12)
    marker = ("KIT_GRADE_RUN=%s" % marker_val).encode()
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "COVERAGE", "STAGE_BUILD", "SAN",
                        "HARNESS_SUBST", "BATS_FILTER", "TEST_OUT", "TEST_RERUN", "GRADE_JSON")}
    env["KIT_GRADE_RUN"] = marker_val
    env["TIMEOUT_SCALE"] = ("%g" % scale)
    env["TMPDIR"] = os.path.join(scratch, "tmp")
    os.makedirs(env["TMPDIR"])
    try:
        kit, sdir, taken = assemble(stage, student, scratch)
        todo = []
        for f in taken:
            for n, line in enumerate(open(os.path.join(student, f), errors="replace"), 1):
                m = re.match(r"^\s*//\s*LAB TODO ([A-Za-z_0-9]+):", line)
                if m:
                    todo.append("  %s (%s)" % (m.group(1), f))
        print("== grading %s as %s (TIMEOUT_SCALE=%g: %ds a test, %ds in all%s)"
              % (student, stage, scale, test_secs, run_secs, ", %d tests at a time" % jobs if jobs > 1 else ""))
        results = {}   # name -> (passed, reason lines)
        build_log = os.path.join(scratch, "build.log")
        status, killed = run_limited(["make", "-s", "-C", sdir], kit, env, build_secs, marker, scratch, build_log)
        built = status == 0
        if built:
            # The unit tests again, each with the guard linked in.
            units = unit_targets(sdir)
            if units:
                for u in units:
                    try:
                        os.unlink(os.path.join(sdir, u))
                    except OSError:
                        pass
                status, _ = run_limited(["make", "-s", "-C", sdir, "LDFLAGS=" + guard_flags(scratch)] + units,
                                        kit, env, build_secs, marker, scratch, build_log + ".guard")
                built = status == 0
                if not built:
                    build_log += ".guard"
        if not built:
            why = "the build took longer than %ds" % build_secs if status is None else "the build failed"
            lines = [l.replace(kit + "/", "") for l in open(build_log, errors="replace").read().splitlines()
                     if re.search(r"error|undefined reference", l)][:8]
            print("BUILD FAILED (%s); the compiler's first complaints:" % why)
            for l in lines:
                print("  " + l)
            for _, n in tests:
                results[n] = (False, ["not built: " + why] + lines)
        else:
            # Side by side, each test runs in a copy of the built kit of its own (one per
            # slot): a stage's tests assume they run one at a time (they build fuzz targets,
            # install, write files in the stage folder), as tests/run runs them.
            kits = [kit]
            for k in range(1, jobs):
                copy = "%s.%d" % (kit, k)
                subprocess.run(["cp", "-a", kit, copy], check=True)
                kits.append(copy)
            free = queue.Queue()
            for k in kits:
                free.put(k)

            def one(i, f, n):
                left = run_deadline - time.monotonic()
                if left <= 0:
                    return False, ["not run: the whole run's time limit (%ds) was spent" % run_secs]
                limit = min(test_secs, left)
                log = os.path.join(scratch, "test.%d.tap" % i)
                cmd = ["bats", "--tap", "--filter", "^%s$" % re.escape(as_written(n)), os.path.join(stage, f)]
                if jobs == 1:
                    st, killed = run_limited(cmd, kit, env, limit, marker, scratch, log)
                else:
                    # A test's leftovers are found by its own marker and session only (the
                    # other tests' processes work in the scratch folder too); what escapes
                    # both is killed when the run ends.
                    tenv = dict(env, KIT_GRADE_RUN="%s.%d" % (marker_val, i))
                    where = free.get()
                    try:
                        st, killed = run_limited(cmd, where, tenv, limit,
                                                 b"KIT_GRADE_RUN=%s.%d\0" % (marker_val.encode(), i), None, log)
                    finally:
                        free.put(where)
                out = open(log, errors="replace").read().splitlines()
                return judge(st, out, limit, killed)
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
            try:
                running = [pool.submit(one, i, f, n) for i, (f, n) in enumerate(tests)]
                for (f, n), fut in zip(tests, running):
                    results[n] = fut.result()
                    ok, why = results[n]
                    print("  %s  %s" % ("PASS" if ok else ("SKIP" if why and why[0].startswith("skipped") else "FAIL"), n),
                          flush=True)
            finally:
                # Stopped early (Ctrl-C, SIGTERM): start nothing more; the `finally` below
                # kills what runs, which ends the tests still waited for.
                pool.shutdown(wait=False, cancel_futures=True)
        report(stage, student, tests, labs, weights, results, todo, json_path)
        full = all(results[n][0] for _, n in tests)
        return 0 if full else 1
    finally:
        kill_left(None, marker, scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def check(arg):
    """--check STAGE: labs.txt covers the stage: every test in a lab or in "contract", every
    LAB region's name a lab, every line matching some test. Prints each problem; 0 if none."""
    stage = stage_dir(arg)
    if stage is None:
        die("no stage '%s' here" % arg)
    labs = read_labs(stage)
    if not labs:
        print("%s: no labs.txt" % stage)
        return 1
    names = [n for f in sorted(os.listdir(os.path.join(ROOT, stage))) if re.match(r"^test.*\.bats$", f)
             for n in test_names(os.path.join(ROOT, stage, f))]
    problems = []
    for n in names:
        if not labs_of(n, labs):
            problems.append("test in no lab: %s" % n)
    regions = set()
    # Sources in subfolders count too (08's lib/), as for the grading: never fuzz/, bugs/, build-*.
    srcs = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, stage)):
        dirnames[:] = [d for d in dirnames if d not in ("fuzz", "bugs", ".git") and not d.startswith("build-")]
        srcs += [os.path.join(dirpath, f) for f in filenames]
    for f in srcs:
        if f.endswith((".c", ".h")):
            for line in open(f, errors="replace"):
                m = re.match(r"^\s*//\s*LAB BEGIN ([A-Za-z_0-9]+):", line)
                if m:
                    regions.add(m.group(1))
    declared = {lab for lab, _, _ in labs}
    for r in sorted(regions - declared):
        problems.append("LAB region with no line in labs.txt: %s" % r)
    for lab in sorted(declared - regions - {"contract"}):
        problems.append("labs.txt names a lab with no LAB region: %s" % lab)
    for lab, _, rx in labs:
        if not any(rx.search(n) for n in names):
            problems.append("labs.txt line matches no test: %s %s" % (lab, rx.pattern))
    for lab in sorted(declared):
        if not any(lab in labs_of(n, labs) for n in names):
            problems.append("lab %s grades no test (each of its tests is taken by another lab?)" % lab)
    for p in problems:
        print("%s: %s" % (stage, p))
    return 1 if problems else 0


def judge(status, out, limit, killed):
    """(passed, reasons) for one test from bats' exit status and its TAP lines."""
    results = [l for l in out if re.match(r"^(not )?ok \d+", l)]
    msgs = [l[2:] if l.startswith("# ") else l for l in out
            if l.startswith("#") and not l.startswith("# bats warning")]
    extra = ["(%d process%s it left running were killed)" % (killed, "es" if killed > 1 else "")] if killed else []
    if status is None:
        return False, ["timed out after %ds (the test, or a process it started, was still running)" % limit] + msgs + extra
    if len(results) != 1 or not re.match(r"^1\.\.1$", out[0] if out else ""):
        return False, ["bats reported %d results for one test (exit %d): output on bats' own descriptor?"
                       % (len(results), status)] + results[:3] + msgs + extra
    line = results[0]
    m = re.search(r"# skip\b ?\(?(.*?)\)?$", line)
    if m:
        return False, ["skipped: %s (a skipped test is not passed)" % (m.group(1) or "no reason given")] + extra
    if status == 0 and line.startswith("ok "):
        return True, extra
    if any(re.search(r"\bexit(ed)? (status )?%d\b" % GUARD_EXIT, m) for m in msgs):
        extra.append("(status %d: the program exited before its main() ran, from a constructor:"
                     " tests/lib/grade_guard.c)" % GUARD_EXIT)
    return False, msgs + (["bats exit %d" % status] if not msgs else []) + extra


def report(stage, student, tests, labs, weights, results, todo, json_path):
    by_lab = {}
    order = []
    for lab, _, _ in labs:
        if lab not in by_lab:
            by_lab[lab] = []
            order.append(lab)
    for _, n in tests:
        for lab in (labs_of(n, labs) if labs else []) or ["other" if labs else "tests"]:
            if lab not in by_lab:
                by_lab[lab] = []
                order.append(lab)
            by_lab[lab].append(n)
    order = [lab for lab in order if by_lab[lab]]
    failing = [(n, results[n][1]) for _, n in tests if not results[n][0]]
    if failing:
        print("Why the failing tests failed:")
        for n, why in failing:
            print("  %s" % n)
            for l in why[:25]:
                print("      %s" % l)
    total = score = 0.0
    gs = []
    print("Per lab:")
    for lab in order:
        names = by_lab[lab]
        w = weights.get(lab, float(len(names)))
        passed = sum(1 for n in names if results[n][0])
        pts = w * passed / len(names)
        total += w
        score += pts
        print("  %s: passed %d/%d (%s/%s points)" % (lab, passed, len(names), fmt(pts), fmt(w)))
        for n in names:
            ok, why = results[n]
            gs.append({"name": "%s: %s" % (lab, n), "score": w / len(names) if ok else 0.0,
                       "max_score": w / len(names), "output": "\n".join(why)})
    if todo:
        print("LAB regions still TODO in %s:" % student)
        print("\n".join(todo))
    print("Score: %s/%s" % (fmt(score), fmt(total)))
    if json_path != "-":
        doc = {"score": round(score, 4), "max_score": round(total, 4), "tests": gs,
               "output": "%s: %s/%s" % (stage, fmt(score), fmt(total))}
        try:
            with open(json_path, "w") as f:
                json.dump(doc, f, indent=1)
        except OSError as e:
            print("tests/grade: cannot write %s: %s" % (json_path, e), file=sys.stderr)


def fmt(x):
    return ("%.2f" % x).rstrip("0").rstrip(".")


def stopped(signum, _frame):
    # SIGTERM (a teacher's `kill`, a CI timeout) ends the run like Ctrl-C does: through
    # main's `finally`, which kills every process of the run and removes the scratch folder.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stopped)
    sys.exit(main(sys.argv[1:]))
