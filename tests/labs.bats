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
