#!/usr/bin/env bats
# The lab tools test themselves: `tests/lab` cuts exactly the LAB regions asked for, and
# `tests/grade` gives the reference full marks, a broken copy less, and ignores a student's
# edits to the test files. Stage 03_poll is the subject (small, quick to build).

load "$BATS_TEST_DIRNAME/lib/harness.bash"

setup() {
    unset SAN STAGE_BUILD
    LAB="$BATS_TEST_TMPDIR/lab"
    # A few quick tests of 03: a broken conn_write, conn_watch or buffer fails them.
    export GRADE_FILTER='^queued output|^--max-output 0: a reader|^half-close: everything|^buffer unit test'
    export GRADE_JSON=-   # no results.json left in the folder the tests run from
}

@test "lab: cuts only the named region, leaves the others and drops bugs/" {
    run "$KIT_ROOT/tests/lab" 03 "$LAB" conn_write
    [[ $status -eq 0 ]] || fail "tests/lab failed: $output"
    grep -q '// LAB TODO conn_write: ' "$LAB/server.c" || fail "no TODO for conn_write"
    ! grep -q 'LAB BEGIN conn_write' "$LAB/server.c" || fail "conn_write's region is still there"
    grep -q 'LAB BEGIN conn_watch' "$LAB/server.c" || fail "conn_watch was cut too"
    [[ ! -e $LAB/bugs && ! -e $LAB/server && -f $LAB/test.bats && -f $LAB/Makefile ]] ||
        fail "the copy has bugs/ or a built binary, or lacks test.bats/Makefile: $(ls "$LAB")"
    # Every region when none is named; a name that does not exist is an error.
    run "$KIT_ROOT/tests/lab" 03 "$LAB.all"
    [[ $status -eq 0 ]] || fail "$output"
    ! grep -q 'LAB BEGIN' "$LAB.all"/*.c || fail "a region survived: $(grep -n 'LAB BEGIN' "$LAB.all"/*.c)"
    run "$KIT_ROOT/tests/lab" 03 "$LAB.bad" no_such_region
    [[ $status -eq 2 && $output == *"no LAB region named no_such_region"* && ! -e $LAB.bad ]] || fail "$output"
}

@test "lab: never copies patch leftovers, editor backups or built files; make lab BUG= is refused" {
    # A scratch kit (tests/lab and 03_poll) with what a hand-applied gallery patch, an
    # editor and a build leave in the stage folder: each would hand out reference code.
    local kit="$BATS_TEST_TMPDIR/kit" f
    mkdir -p "$kit/tests"
    cp "$KIT_ROOT/tests/lab" "$kit/tests/"
    tar -C "$KIT_ROOT" --exclude='build-*' -cf - 03_poll | tar -C "$kit" -xf -
    for f in server.c.orig buffer.c.rej net.c~ .server.c.swp '#server.c#' server.c.bak core \
        server.o server.d buffer.gcda server buffer_test build-address-undefined/server.o; do
        mkdir -p "$(dirname "$kit/03_poll/$f")"
        cp "$KIT_ROOT/03_poll/server.c" "$kit/03_poll/$f"
    done
    # A program not named in the Makefile's PROGS/TESTS (an old build, a renamed binary) holds
    # the reference code compiled in: anything ELF stays out too.
    cp "$KIT_ROOT/03_poll/server" "$kit/03_poll/server_old"
    run "$kit/tests/lab" 03 "$LAB"
    [[ $status -eq 0 ]] || fail "$output"
    local left
    left=$(cd "$LAB" && find . -type f | sort | tr '\n' ' ')
    [[ $left != *orig* && $left != *rej* && $left != *'~'* && $left != *swp* && $left != *'#'* &&
        $left != *.bak* && $left != *core* && $left != *.o\ * && $left != *.d\ * && $left != *gcda* &&
        $left != *build-* && $left != *'./server '* && $left != *'./buffer_test '* &&
        $left != *server_old* ]] ||
        fail "the starter holds leftovers: $left"
    [[ -f $LAB/server.c && -f $LAB/buffer.c && -f $LAB/test.bats ]] || fail "sources missing: $left"
    ! grep -rq --include='*.[ch]' 'LAB BEGIN' "$LAB" || fail "reference code in the starter: $(grep -rl 'LAB BEGIN' "$LAB")"
    # `make lab BUG=...` (a starter with a gallery bug: not yet written) says so, exit 2.
    run make -s -C "$KIT_ROOT" lab STAGE=03 OUT="$LAB.bug" BUG=no-backpressure
    [[ $status -eq 2 && $output == *"BUG= is not supported"* && ! -e $LAB.bug ]] || fail "status $status: $output"
}

# The LAB regions of stage STAGE (01 .. 08), one "name file" line each, the file's path from
# the stage's folder (08's are in lib/; a name may mark several regions of one lab).
lab_regions() {
    grep -HoE '// LAB BEGIN [A-Za-z_0-9]+' "$KIT_ROOT"/"$1"_*/*.[ch] "$KIT_ROOT"/"$1"_*/lib/*.[ch] 2>/dev/null |
        sed -E 's|^.*/[0-9][0-9]_[^/]+/([^:]+):// LAB BEGIN (.*)$|\2 \1|' | sort -u
}

@test "lab: every starter compiles: each region cut alone, and all of a stage's cut at once (gcc; clang for 03)" {
    # A starter must build with the stage's own flags (-Wall -Wextra -Werror), the stubs
    # (LAB STUB lines) standing in for the code: a hole the student has not filled yet must
    # cost that lab's tests, never the whole build. Each file holding a region is compiled
    # (make FILE.o: the stage's own rule and flags), with that region cut and with all of
    # the stage's cut (that one at -O2, as the student builds it; each region alone at
    # -O0, for time). The whole starters, linked, are built by tests/labcheck; 08's with all
    # cut is built whole here (its library, unit tests and examples: about 15 s of CPU).
    local s name file files n=0 deadline=$(($(now_ms) + $(scaled_ms 150)))
    for s in 01 02 03 04 05 06 07 08; do
        "$KIT_ROOT/tests/lab" "$s" "$LAB.$s.all" >/dev/null || fail "tests/lab $s failed"
        files=$(lab_regions "$s" | awk '$2 ~ /\.c$/ { sub(/\.c$/, ".o", $2); print $2 }' | sort -u)
        # 08's regions are in its library, which every unit test and example links: all of it.
        [[ $s != 08 ]] || files=all
        (($(lab_regions "$s" | cut -d' ' -f1 | sort -u | wc -l) >= 2)) ||
            fail "$s has fewer than two labs: $(lab_regions "$s" | tr '\n' ' ')"
        make -s -C "$LAB.$s.all" -j2 $files >"$LAB.$s.all.log" 2>&1 ||
            fail "$s with every region cut does not compile: $(grep -m5 error "$LAB.$s.all.log")"
        while read -r name file; do
            rm -rf "$LAB.one"
            "$KIT_ROOT/tests/lab" "$s" "$LAB.one" "$name" >/dev/null || fail "tests/lab $s $name failed"
            make -s -C "$LAB.one" CFLAGS=-O0 "${file%.c}.o" >"$LAB.one.log" 2>&1 ||
                fail "$s with $name cut does not compile ($file): $(grep -m5 error "$LAB.one.log")"
            n=$((n + 1))
            (($(now_ms) < deadline)) || fail "out of time after $n regions"
        done < <(lab_regions "$s" | grep '\.c$')
    done
    if command -v clang >/dev/null; then
        make -s -C "$LAB.03.all" clean >/dev/null
        make -s -C "$LAB.03.all" -j2 CC=clang >"$LAB.03.clang.log" 2>&1 ||
            fail "03 with every region cut does not build with clang: $(grep -m5 error "$LAB.03.clang.log")"
    fi
}

@test "grade: the reference gets full marks (alone, and two tests at a time)" {
    run "$KIT_ROOT/tests/grade" 03 "$KIT_ROOT/03_poll"
    [[ $status -eq 0 ]] || fail "$output"
    [[ $output =~ Score:\ ([0-9]+)/([0-9]+) && ${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" && ${BASH_REMATCH[2]} -ge 2 ]] ||
        fail "no full score: $output"
    local alone=$output
    run env GRADE_JOBS=2 "$KIT_ROOT/tests/grade" 03 "$KIT_ROOT/03_poll"
    [[ $status -eq 0 && $output == *"2 tests at a time"* ]] || fail "GRADE_JOBS=2: status $status: $output"
    # The same verdicts in the same order, only faster.
    [[ $(grep '^  PASS' <<<"$output") == "$(grep '^  PASS' <<<"$alone")" ]] || fail "GRADE_JOBS=2 changed the list: $output"
    [[ $output =~ Score:\ ([0-9]+)/([0-9]+) && ${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" && ${BASH_REMATCH[2]} -ge 2 ]] ||
        fail "no full score: $output"
}

@test "grade: a starter builds; its cut lab scores 0, the other labs full marks; TODO regions named; results.json" {
    "$KIT_ROOT/tests/lab" 03 "$LAB" conn_write >/dev/null
    run env GRADE_JSON="$BATS_TEST_TMPDIR/results.json" "$KIT_ROOT/tests/grade" 03 "$LAB"
    [[ $status -eq 1 ]] || fail "status $status: $output"
    [[ $output == *"conn_write: passed 0/1 (0/10 points)"* && $output == *"conn_watch: passed 1/1 (15/15 points)"* &&
        $output == *"contract: passed 2/2 (5/5 points)"* && $output == *"Score: 20/30"* &&
        $output == *"conn_write (server.c)"* ]] || fail "$output"
    # The failing test's own explanation reaches the student: what should have happened.
    [[ $output == *"should go straight to send() and leave nothing queued"* ]] || fail "no reason shown: $output"
    python3 - "$BATS_TEST_TMPDIR/results.json" <<'PY' || fail "results.json: $(cat "$BATS_TEST_TMPDIR/results.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["score"] == 20 and d["max_score"] == 30, d
t = {x["name"].split(": ", 1)[0]: x for x in d["tests"]}
assert t["conn_write"]["score"] == 0 and t["conn_write"]["max_score"] == 10, t
assert "leave nothing queued" in t["conn_write"]["output"], t["conn_write"]
assert t["conn_watch"]["score"] == 15 and sum(x["score"] for x in d["tests"] if x["name"].startswith("contract")) == 5, t
PY
}

@test "grade: a wrong answer loses points, and editing the tests does not help" {
    cp -r "$KIT_ROOT/03_poll" "$LAB"
    rm -rf "$LAB"/build-* "$LAB"/*.o
    # The student's buffer never gives memory back at the right time (a real bug: 03's
    # bugs/buffer-shrink-flip.patch), which 03's unit test buffer_test.c catches,
    (cd "$LAB/.." && sed 's|03_poll/|lab/|g' "$KIT_ROOT/03_poll/bugs/buffer-shrink-flip.patch" | patch -s -p1) ||
        fail "the bug patch does not apply"
    # and they "fixed" the tests: the unit test passes whatever happens, every bats test skips.
    printf 'int main(void) { return 0; }\n' >"$LAB/buffer_test.c"
    sed -i 's/^@test \(.*\) {$/@test \1 {\n    skip cheating/' "$LAB/test.bats"
    grep -q 'skip cheating' "$LAB/test.bats" || fail "the test edit did not take"
    run "$KIT_ROOT/tests/grade" 03 "$LAB"
    [[ $status -eq 1 ]] || fail "status $status: $output"
    [[ $output == *"FAIL  buffer unit test"* && $output == *"PASS  queued output"* && $output != *cheating* ]] ||
        fail "$output"
    # (a lab's points are split among its tests: a score may be fractional, as 27.5/30)
    [[ $output =~ Score:\ ([0-9.]+)/([0-9.]+) && ${BASH_REMATCH[1]} != "${BASH_REMATCH[2]}" ]] || fail "$output"
}

@test "labs.txt: every test of 01-08 grades a lab or the contract; every LAB region is a lab; every line matches a test" {
    local s names count
    for s in 01 02 03 04 05 06 07 08; do
        run python3 "$KIT_ROOT/tests/lib/grade.py" --check "$s"
        [[ $status -eq 0 ]] || fail "$output"
        # The grader reads test names from the @test lines: as many as bats counts.
        names=$(cd "$KIT_ROOT" && python3 -c 'import sys; sys.path.insert(0, "tests/lib"); import grade
print(len(grade.test_names(sys.argv[1])))' "$s"_*/test.bats)
        count=$(bats --count "$KIT_ROOT/$s"_*/test.bats)
        [[ $names == "$count" ]] || fail "$s: the grader reads $names test names, bats counts $count"
    done
    # The check sees a test no line takes, and a region without a lab.
    local kit="$BATS_TEST_TMPDIR/kit"
    mkdir -p "$kit/tests/lib"
    cp "$KIT_ROOT/tests/lib/grade.py" "$kit/tests/lib/"
    cp -r "$KIT_ROOT/03_poll" "$kit/03_poll"
    printf '@test "a test nobody grades" {\n    true\n}\n' >>"$kit/03_poll/test.bats"
    sed -i '/^conn_watch /d' "$kit/03_poll/labs.txt"
    run python3 "$kit/tests/lib/grade.py" --check 03
    [[ $status -eq 1 && $output == *"test in no lab: a test nobody grades"* &&
        $output == *"LAB region with no line in labs.txt: conn_watch"* ]] || fail "$output"
}

# hostile_lab NAME C-CODE: a copy of 03_poll in $LAB.NAME whose buffer.c ends with C-CODE
# (03's buffer unit test, buffer_test, links buffer.c: the code runs inside the kit's test).
hostile_lab() {
    local d="$LAB.$1"
    mkdir -p "$d"
    cp "$KIT_ROOT"/03_poll/*.c "$KIT_ROOT"/03_poll/*.h "$d/"
    printf '%s\n' "$2" >>"$d/buffer.c"
}

# no_process_left MARK: no process carries MARK in its environment.
no_process_left() {
    local p left=
    for p in /proc/[0-9]*; do
        grep -qs -- "$1" "$p/environ" 2>/dev/null && left+=" ${p#/proc/}($(tr '\0' ' ' <"$p/cmdline" 2>/dev/null))"
    done
    [[ -z $left ]] || fail "processes left running:$left"
}

@test "grade: an infinite loop, a child that never exits, a setsid double fork and stdout noise: each run ends within its limit, 0 points, nothing left" {
    export GRADE_FILTER='^buffer unit test' GRADE_TEST_SECS=3 GRADE_JSON=- HOSTILE_MARK="hostile-$RANDOM$RANDOM"
    local limit_ms=$(($(scaled_ms 3) + $(scaled_ms 60))) t0
    hostile_lab loop '__attribute__((constructor)) static void spin(void) { for (;;) { } }'
    hostile_lab linger '#include <signal.h>
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void linger(void)
{
    printf("ok 1 all good\nScore: 100/100\n");
    fflush(stdout);
    if (fork() == 0) {               /* a child that ignores SIGTERM and keeps stdout open */
        signal(SIGTERM, SIG_IGN);
        for (;;)
            pause();
    }
    if (fork() == 0) {               /* setsid, fork again, the middle one exits */
        setsid();
        if (fork() == 0) {
            signal(SIGTERM, SIG_IGN);
            close(0); close(1); close(2);
            for (;;)
                pause();
        }
        _exit(0);
    }
}'
    local case jobs
    # linger:2: the same, graded two tests at a time (each test's leftovers are found by its
    # own marker and session, the rest when the run ends).
    for case in loop linger linger:2; do
        jobs=1
        [[ $case == *:* ]] && jobs=${case#*:}
        t0=$(now_ms)
        run env GRADE_JOBS="$jobs" "$KIT_ROOT/tests/grade" 03 "$LAB.${case%:*}"
        (($(now_ms) - t0 < limit_ms)) || fail "$case: the grader took $(($(now_ms) - t0)) ms: $output"
        [[ $status -eq 1 && $output == *"FAIL  buffer unit test"* && $output == *"timed out after"* &&
            $output == *"Score: 0/5"* && $output != *"Score: 100"*"Score: 0"* ]] || fail "$case: status $status: $output"
        no_process_left "$HOSTILE_MARK"
    done
}

@test "grade: SIGTERM to the grader mid-run (alone, and two tests at a time) kills what the tests started and removes its scratch folder" {
    export GRADE_FILTER='^buffer unit test' GRADE_TEST_SECS=300 GRADE_JSON=- HOSTILE_MARK="hostile-$RANDOM$RANDOM"
    hostile_lab linger '#include <signal.h>
#include <unistd.h>
__attribute__((constructor)) static void linger(void)
{
    if (fork() == 0) {
        signal(SIGTERM, SIG_IGN);
        for (;;)
            pause();
    }
}'
    local jobs pid i p tmp
    for jobs in 1 2; do
        tmp="$BATS_TEST_TMPDIR/tmp.$jobs"
        mkdir -p "$tmp"
        TMPDIR=$tmp GRADE_JOBS=$jobs "$KIT_ROOT/tests/grade" 03 "$LAB.linger" >"$tmp.out" 2>&1 &
        pid=$!
        # Until the test's lingering child runs (it carries the mark), at most 120 s scaled.
        for ((i = 0; i < $(scaled_ms 120) / 50; i++)); do
            for p in $(pgrep -x buffer_test); do
                grep -qs -- "$HOSTILE_MARK" "/proc/$p/environ" && break 2
            done
            kill -0 "$pid" 2>/dev/null || fail "GRADE_JOBS=$jobs: the grader ended first: $(cat "$tmp.out")"
            sleep 0.05
        done
        kill -TERM "$pid"
        for ((i = 0; i < $(scaled_ms 10) / 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid"
            fail "GRADE_JOBS=$jobs: the grader still ran 10 s after SIGTERM: $(cat "$tmp.out")"
        fi
        wait "$pid" || true
        no_process_left "$HOSTILE_MARK"
        [[ -z $(ls -A "$tmp") ]] || fail "GRADE_JOBS=$jobs: left in its TMPDIR: $(ls -A "$tmp")"
    done
}

@test "grade: _exit(0) or a forged 'ok 1' on descriptor 3 from a constructor does not pass a wrong buffer" {
    export GRADE_FILTER='^buffer unit test' GRADE_TEST_SECS=30 GRADE_JSON=- HOSTILE_MARK="hostile-$RANDOM$RANDOM"
    local case code
    for case in exit forge; do
        [[ $case == exit ]] && code='#include <unistd.h>
__attribute__((constructor)) static void leave(void) { _exit(0); }'
        [[ $case == forge ]] && code='#include <unistd.h>
__attribute__((constructor)) static void forge(void) { (void)!write(3, "ok 1 buffer unit test\n", 22); }'
        hostile_lab "$case" "$code"
        # The buffer is wrong too (03's bugs/buffer-shrink-flip.patch): buffer_test fails on it.
        patch -s -p2 -d "$LAB.$case" --no-backup-if-mismatch <"$KIT_ROOT/03_poll/bugs/buffer-shrink-flip.patch" ||
            fail "the bug patch does not apply"
        run "$KIT_ROOT/tests/grade" 03 "$LAB.$case"
        [[ $status -eq 1 && $output == *"FAIL  buffer unit test"* && $output == *"Score: 0/5"* ]] ||
            fail "$case: status $status: $output"
        no_process_left "$HOSTILE_MARK"
    done
}

@test "grade: _exit(0) from a constructor in 08's library does not pass timer_stop's starter (08's unit tests get the guard too)" {
    # 08's unit tests (lib/*_test.c, a TESTS its Makefile computes) link the library's objects:
    # the grader relinks them with tests/lib/grade_guard.c too. timer_test fails on the starter
    # of timer_stop; a constructor in lib/timer.c calling _exit(0) would end it with status 0.
    export GRADE_FILTER='^unit: timer_test$' GRADE_TEST_SECS=60 HOSTILE_MARK="hostile-$RANDOM$RANDOM"
    "$KIT_ROOT/tests/lab" 08 "$LAB" timer_stop >/dev/null || fail "tests/lab 08 timer_stop failed"
    printf '%s\n' '#include <unistd.h>' \
        '__attribute__((constructor)) static void leave(void) { _exit(0); }' >>"$LAB/lib/timer.c"
    run "$KIT_ROOT/tests/grade" 08 "$LAB"
    [[ $status -eq 1 && $output == *"FAIL  unit: timer_test"* && $output == *"Score: 0/10"* &&
        $output == *"timer_stop: passed 0/1 (0/10 points)"* ]] || fail "status $status: $output"
    [[ $output == *"timer_test"*"exited 86"* && $output == *"(status 86: the program exited before its main() ran"* ]] ||
        fail "the guard's exit status is not named: $output"
    no_process_left "$HOSTILE_MARK"
}

@test "grade: the student's copies of test files, unit tests and fuzz targets are never used (06)" {
    # The grader's own assembly of the scratch kit, without building it: every pinned file
    # is the kit's, the student's sources are the student's.
    cp -r "$KIT_ROOT/06_codecs" "$LAB"
    rm -rf "$LAB"/build-* "$LAB"/*.o "$LAB"/*.d
    local f
    for f in test.bats Makefile line_test.c test_util.h fuzz/fuzz_line.c; do
        [[ -f $LAB/$f ]] || fail "06 has no $f"
        echo '/* edited by the student */' >>"$LAB/$f"
    done
    echo '/* the student s line.c */' >>"$LAB/line.c"
    run python3 -c 'import sys, os; sys.path.insert(0, sys.argv[1] + "/tests/lib"); import grade
kit, sdir, taken = grade.assemble("06_codecs", sys.argv[2], sys.argv[3])
print(sdir)' "$KIT_ROOT" "$LAB" "$BATS_TEST_TMPDIR/scratch"
    [[ $status -eq 0 ]] || fail "$output"
    local sdir=${lines[-1]}
    for f in test.bats Makefile line_test.c test_util.h fuzz/fuzz_line.c; do
        cmp -s "$sdir/$f" "$KIT_ROOT/06_codecs/$f" || fail "the grader took the student's $f"
    done
    grep -q "the student s line.c" "$sdir/line.c" || fail "the grader did not take the student's line.c"
}
