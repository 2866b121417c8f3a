#!/usr/bin/env python3
"""tests/lib/handout_run.py: what `make test` and `make grade` run inside a handout.

    python3 tests/lib/handout_run.py test  STAGE [LAB]   the stage's tests (tests/run); LAB: only its tests
    python3 tests/lib/handout_run.py grade STAGE [LAB]   the per-lab score (tests/lib/grade.py); LAB: only its tests
    python3 tests/lib/handout_run.py labs  STAGE         each lab with its weight and its tests

The handout's Makefile calls it (`make test LAB=conn_flush`, `make grade`). A lab's tests are
the ones its lines in STAGE/labs.txt match (the regexes the grader uses), run by their exact
names (BATS_FILTER for tests/run, GRADE_FILTER for the grader). `make grade` here is a
self-check: it grades this folder with this folder's own test files; your teacher grades
with the kit's copies.
"""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import grade  # noqa: E402  (the grader's own reading of labs.txt and of test names)


def die(msg, status=2):
    print("handout: %s" % msg, file=sys.stderr)
    sys.exit(status)


def stage_tests(stage):
    """[(file, name)] of STAGE's test*.bats files, in the order the grader takes them."""
    sdir = os.path.join(ROOT, stage)
    files = sorted(f for f in os.listdir(sdir) if re.match(r"^test.*\.bats$", f))
    return [(f, n) for f in files for n in grade.test_names(os.path.join(sdir, f))]


def lab_tests(stage, lab):
    """The names of the tests that grade LAB (as the grader counts them)."""
    labs = grade.read_labs(stage)
    known = []
    for name, _, _ in labs:
        if name not in known:
            known.append(name)
    if lab not in known:
        die("no lab %r in %s/labs.txt; the labs: %s" % (lab, stage, " ".join(known)))
    return [n for _, n in stage_tests(stage) if lab in grade.labs_of(n, labs)]


def exact_ere(names):
    """An extended regex matching exactly these names (bats --filter takes one)."""
    return "^(%s)$" % "|".join(re.sub(r"([][\\.^$*+?(){}|])", r"\\\1", n) for n in names)


def main(argv):
    if argv[:1] in (["-h"], ["--help"]) or len(argv) < 2 or argv[0] not in ("test", "grade", "labs"):
        print(__doc__.strip())
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    cmd, stage, lab = argv[0], argv[1].rstrip("/"), (argv[2] if len(argv) > 2 else "").strip()
    if not os.path.isfile(os.path.join(ROOT, stage, "Makefile")):
        die("no stage folder %r here" % stage)
    env = dict(os.environ)
    if cmd == "labs":
        labs = grade.read_labs(stage)
        seen = []
        for name, w, _ in labs:
            if name in seen:
                continue
            seen.append(name)
            names = lab_tests(stage, name)
            print("%s (%s points): %d test%s" % (name, grade.fmt(w), len(names), "" if len(names) == 1 else "s"))
            for n in names:
                print("    %s" % n)
        return 0
    names = lab_tests(stage, lab) if lab else None
    if names == []:
        die("lab %s has no tests" % lab)
    if cmd == "test":
        files = [os.path.join(stage, f) for f in sorted(os.listdir(os.path.join(ROOT, stage)))
                 if re.match(r"^test.*\.bats$", f)]
        if names:
            env["BATS_FILTER"] = exact_ere(names)
            print("handout: the %d test%s of lab %s" % (len(names), "" if len(names) == 1 else "s", lab))
        os.chdir(ROOT)
        os.execvpe(os.path.join(ROOT, "tests", "run"), ["tests/run"] + files, env)
    # grade: the grader on this folder's stage, output passed through as it comes.
    if names:
        env["GRADE_FILTER"] = exact_ere(names)
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "grade.py"), stage, os.path.join(ROOT, stage)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, errors="replace")
    for line in p.stdout:
        # The grader says so when the folder it grades is the kit's own copy of the stage:
        # here that copy is the student's work.
        if line.strip() == "(grading the reference itself)":
            continue
        sys.stdout.write(line)
        sys.stdout.flush()
    return p.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
