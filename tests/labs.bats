#!/usr/bin/env bats
# The lab tools test themselves: `tests/lab` cuts exactly the LAB regions asked for, and
# `tests/grade` gives the reference full marks, a broken copy less, and ignores a student's
# edits to the test files. Stage 03_poll is the subject (small, quick to build).

load "$BATS_TEST_DIRNAME/lib/harness.bash"

setup() {
    unset SAN STAGE_BUILD
    LAB="$BATS_TEST_TMPDIR/lab"
    # A few quick tests of 03: a broken conn_flush or buffer fails them.
    export GRADE_FILTER='^queued output|^half-close: everything|^buffer unit test'
}

@test "lab: cuts only the named region, leaves the others and drops bugs/" {
    run "$KIT_ROOT/tests/lab" 03 "$LAB" conn_flush
    [[ $status -eq 0 ]] || fail "tests/lab failed: $output"
    grep -q '// LAB TODO conn_flush: ' "$LAB/server.c" || fail "no TODO for conn_flush"
    ! grep -q 'LAB BEGIN conn_flush' "$LAB/server.c" || fail "conn_flush's region is still there"
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
    run "$kit/tests/lab" 03 "$LAB"
    [[ $status -eq 0 ]] || fail "$output"
    local left
    left=$(cd "$LAB" && find . -type f | sort | tr '\n' ' ')
    [[ $left != *orig* && $left != *rej* && $left != *'~'* && $left != *swp* && $left != *'#'* &&
        $left != *.bak* && $left != *core* && $left != *.o\ * && $left != *.d\ * && $left != *gcda* &&
        $left != *build-* && $left != *'./server '* && $left != *'./buffer_test '* ]] ||
        fail "the starter holds leftovers: $left"
    [[ -f $LAB/server.c && -f $LAB/buffer.c && -f $LAB/test.bats ]] || fail "sources missing: $left"
    ! grep -rq --include='*.[ch]' 'LAB BEGIN' "$LAB" || fail "reference code in the starter: $(grep -rl 'LAB BEGIN' "$LAB")"
    # `make lab BUG=...` (a starter with a gallery bug: not yet written) says so, exit 2.
    run make -s -C "$KIT_ROOT" lab STAGE=03 OUT="$LAB.bug" BUG=no-backpressure
    [[ $status -eq 2 && $output == *"BUG= is not supported"* && ! -e $LAB.bug ]] || fail "status $status: $output"
}

# The LAB regions of stage STAGE (01 .. 07), one "name file" line each (a name may mark
# several regions of one lab).
lab_regions() {
    grep -HoE '// LAB BEGIN [A-Za-z_0-9]+' "$KIT_ROOT"/"$1"_*/*.c "$KIT_ROOT"/"$1"_*/*.h 2>/dev/null |
        sed -E 's|^.*/([^/]+):// LAB BEGIN (.*)$|\2 \1|' | sort -u
}

@test "lab: every starter compiles: each region cut alone, and all of a stage's cut at once (gcc; clang for 03)" {
    # A starter must build with the stage's own flags (-Wall -Wextra -Werror), the stubs
    # (LAB STUB lines) standing in for the code: a hole the student has not filled yet must
    # cost that lab's tests, never the whole build. Each file holding a region is compiled
    # (make FILE.o: the stage's own rule and flags), with that region cut and with all of
    # the stage's cut (that one at -O2, as the student builds it; each region alone at
    # -O0, for time). The whole starters, linked, are built by tests/labcheck.
    local s name file files n=0 deadline=$(($(now_ms) + $(scaled_ms 120)))
    for s in 01 02 03 04 05 06 07; do
        "$KIT_ROOT/tests/lab" "$s" "$LAB.$s.all" >/dev/null || fail "tests/lab $s failed"
        files=$(lab_regions "$s" | awk '$2 ~ /\.c$/ { sub(/\.c$/, ".o", $2); print $2 }' | sort -u)
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
    ((n >= 40)) || fail "only $n regions found in 01-07"
    if command -v clang >/dev/null; then
        make -s -C "$LAB.03.all" clean >/dev/null
        make -s -C "$LAB.03.all" -j2 CC=clang >"$LAB.03.clang.log" 2>&1 ||
            fail "03 with every region cut does not build with clang: $(grep -m5 error "$LAB.03.clang.log")"
    fi
}

@test "grade: the reference gets full marks" {
    run "$KIT_ROOT/tests/grade" 03 "$KIT_ROOT/03_poll"
    [[ $status -eq 0 ]] || fail "$output"
    [[ $output =~ Score:\ ([0-9]+)/([0-9]+) && ${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" && ${BASH_REMATCH[2]} -ge 2 ]] ||
        fail "no full score: $output"
}

@test "grade: a starter copy scores 0 and names its TODO regions" {
    "$KIT_ROOT/tests/lab" 03 "$LAB" conn_flush >/dev/null
    run "$KIT_ROOT/tests/grade" 03 "$LAB"
    [[ $status -eq 1 ]] || fail "status $status: $output"
    [[ $output == *"Score: 0/"* && $output == *"conn_flush (server.c)"* ]] || fail "$output"
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
    [[ $output =~ Score:\ ([0-9]+)/([0-9]+) && ${BASH_REMATCH[1]} -lt ${BASH_REMATCH[2]} ]] || fail "$output"
}
