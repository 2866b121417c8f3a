#!/usr/bin/env bats
# The harness tests itself: each broken fake server (tests/lib/fake_server.py) must make
# the helper that guards against it fail. A harness that cannot fail proves nothing.

setup() {
    FAKE_DIR="$BATS_TEST_TMPDIR/fake"
    mkdir -p "$FAKE_DIR"
    # The interpreter itself, not a wrapper script (pyenv's python3 is a chain of bash
    # scripts): under the delay shim every process of a chain has its first wait delayed.
    local python
    python=$(python3 -c 'import sys; print(sys.executable)')
    for mode in good silent bad-exit slow-exit asan asan-crash corrupt lossy leaky; do
        printf '#!/bin/sh\nexec %q %q %s "$@"\n' "$python" "$BATS_TEST_DIRNAME/lib/fake_server.py" "$mode" >"$FAKE_DIR/$mode"
        chmod +x "$FAKE_DIR/$mode"
    done
    export STAGE_DIR=$FAKE_DIR
    unset SAN
}

load "$BATS_TEST_DIRNAME/lib/harness.bash"

@test "harness: a good server starts, echoes and stops cleanly" {
    start_server good
    netkit echo --count 3 --max-size 4096
    stop_server
}

@test "harness: start_server fails when the server has opened a descriptor without O_CLOEXEC, not for one it inherited" {
    run start_server leaky
    [[ $status -ne 0 ]] || fail "start_server passed a server with a descriptor that is not close-on-exec"
    [[ $output == *"not close-on-exec"*"pipe:"* ]] || fail "$output"
    # `run` was a subshell: end the server it started (the last one written down).
    local leaky deadline
    leaky=$(tail -n 1 "$BATS_TEST_TMPDIR/harness.servers")
    kill "$leaky"
    deadline=$(($(now_ms) + $(scaled_ms 5)))
    until has_exited "$leaky"; do
        (($(now_ms) < deadline)) || fail "the leaky server did not exit on SIGTERM" || return
        sleep 0.02   # poll interval of a loop with a deadline
    done
    # A descriptor the test's shell holds open (not close-on-exec) is inherited: not the server's.
    exec 7</dev/null
    start_server good
    exec 7<&-
    stop_server
}

@test "harness: start_server fails when no 'listening on' line comes" {
    export TIMEOUT_SCALE=0.2
    run start_server silent
    [[ $status -ne 0 ]]
    [[ $output == *"no 'listening on"* ]]
}

@test "harness: stop_server fails on a non-zero exit after SIGTERM" {
    start_server bad-exit
    # Not `run`: that is a subshell, which cannot `wait` for the server.
    if stop_server 2>"$BATS_TEST_TMPDIR/err"; then fail "stop_server passed"; fi
    grep -q "status 3" "$BATS_TEST_TMPDIR/err" || fail "$(cat "$BATS_TEST_TMPDIR/err")"
}

@test "harness: stop_server fails when the server ignores SIGTERM for 2 s" {
    start_server slow-exit
    if stop_server 2>"$BATS_TEST_TMPDIR/err"; then fail "stop_server passed"; fi
    grep -q "did not exit within 2 s" "$BATS_TEST_TMPDIR/err" || fail "$(cat "$BATS_TEST_TMPDIR/err")"
}

@test "harness: stop_server fails on a sanitizer report, shows its head and keeps the log" {
    export TEST_OUT="$BATS_TEST_TMPDIR/out"
    start_server asan
    if stop_server 2>"$BATS_TEST_TMPDIR/err"; then fail "stop_server passed"; fi
    local err
    err=$(cat "$BATS_TEST_TMPDIR/err")
    # The head: the bug's name, the first frames, the summary; not the legend.
    [[ $err == *"ERROR: AddressSanitizer: heap-use-after-free"* ]] || fail "$err"
    [[ $err == *"#0 0x55d0c0de1234 in conn_flush_output fake_server.c:42"* ]] || fail "no first frame: $err"
    [[ $err == *"SUMMARY: AddressSanitizer"* ]] || fail "no SUMMARY line: $err"
    [[ $err != *"Shadow byte legend"* ]] || fail "the legend is shown: $err"
    # The whole report is kept, and the message says where.
    local kept
    kept=$(ls "$TEST_OUT"/kept/*asan* 2>/dev/null | head -n1)
    [[ -n $kept ]] || fail "no log kept in $TEST_OUT/kept: $err"
    grep -q "Shadow byte legend" "$kept" || fail "the kept log $kept is not the whole report"
    [[ $err == *"$kept"* ]] || fail "the failure does not say where the log is kept: $err"
}

@test "netkit: a corrupted echo fails and names the first differing offset" {
    start_server corrupt
    run netkit echo --count 1 --max-size 5000 --max-piece 64 --seed 1
    [[ $status -eq 1 ]]
    [[ $output == *"differs at offset 1000"* ]] || fail "$output"
    stop_server
}

@test "matrix: a server that does better than its row fails the check" {
    start_server good
    # The good fake serves clients at once; pretending it is the iterative server must fail.
    run python3 "$MATRIX" check 01_blocking/server --port "$PORT" --only one,two_at_once
    [[ $status -eq 1 ]]
    [[ $output == *"better than the matrix says"* ]] || fail "$output"
    stop_server
}

@test "matrix: a probe that errors (server gone) is never taken for an expected 'no'" {
    start_server good
    local port=$PORT
    stop_server
    # 01_blocking/server is expected to say "no" to two_at_once; a dead server must not pass.
    run python3 "$MATRIX" check 01_blocking/server --port "$port" --only two_at_once
    [[ $status -eq 1 ]] || fail "$output"
    [[ $output == *"error: "* ]] || fail "$output"
}

@test "harness: a SIGTERM lost in the window before the first wait fails the delay-shim test" {
    [[ -z ${SAN:-} ]] || skip "the delay shim is not used under SAN"
    start_server_delayed lossy
    if scenario_sigterm_in_window 2>"$BATS_TEST_TMPDIR/err"; then fail "a server that lost the signal passed"; fi
    grep -q "did not exit within 2 s" "$BATS_TEST_TMPDIR/err" || fail "$(cat "$BATS_TEST_TMPDIR/err")"
}

@test "harness: a server that handles the signal in the window passes the delay-shim test" {
    [[ -z ${SAN:-} ]] || skip "the delay shim is not used under SAN"
    start_server_delayed good
    scenario_sigterm_in_window
}

@test "harness: a SIGTERM that came after the window is tried again, and the retry is said" {
    [[ -z ${SAN:-} ]] || skip "the delay shim is not used under SAN"
    # A window that closes before the test sends its signal: the shim says so.
    DELAY_WINDOW_MAX_S=$DELAY_WINDOW_S
    start_server_delayed good
    wait_file_match "$SERVER_ERR" '^delay-shim: no signal arrived' 20
    # The retry gets the normal window again, and its signal lands.
    DELAY_WINDOW_MAX_S=10.5
    scenario_sigterm_in_window 3>"$BATS_TEST_TMPDIR/notes"
    grep -q "retry 2 of $DELAY_TRIES: the SIGTERM came after the delayed wait had ended" "$BATS_TEST_TMPDIR/notes" ||
        fail "no retry said in the test's output: $(cat "$BATS_TEST_TMPDIR/notes")"
}

@test "harness: a SIGTERM that never lands in the window fails after the last try, naming TIMEOUT_SCALE" {
    [[ -z ${SAN:-} ]] || skip "the delay shim is not used under SAN"
    DELAY_TRIES=1
    DELAY_WINDOW_MAX_S=$DELAY_WINDOW_S
    start_server_delayed good
    wait_file_match "$SERVER_ERR" '^delay-shim: no signal arrived' 20
    if scenario_sigterm_in_window 2>"$BATS_TEST_TMPDIR/err" 3>"$BATS_TEST_TMPDIR/notes"; then
        fail "a test whose signal never landed in the window passed"
    fi
    grep -q "did not land inside the delayed wait (attempt 1 of 1" "$BATS_TEST_TMPDIR/err" || fail "$(cat "$BATS_TEST_TMPDIR/err")"
    grep -q "TIMEOUT_SCALE=" "$BATS_TEST_TMPDIR/err" || fail "no TIMEOUT_SCALE named: $(cat "$BATS_TEST_TMPDIR/err")"
}

# clean_path: PATH without the bats-core folder that bats puts first (a nested `bats` must
# be the user's one, which sets up its own helpers).
clean_path() {
    tr ':' '\n' <<<"$PATH" | grep -v 'bats-core' | paste -sd: -
}

# nested_bats NAME BODY: a bats file (loading the harness) with BODY as its tests. It runs
# under `env -i`: a bats started inside a bats test must not see the outer run's BATS_*.
nested_bats() {
    local f="$BATS_TEST_TMPDIR/$1.bats"
    # BODY writes TEST for @test: bats rewrites every line of this file that starts with
    # @test, even inside a string.
    printf 'load %q\nexport STAGE_DIR=%q\n%s\n' "$KIT_ROOT/tests/lib/harness.bash" "$FAKE_DIR" "${2//TEST \"/@test \"}" >"$f"
    echo "$f"
}

@test "runner: a bats file that dies part way is a failure, with the reason" {
    local f
    f=$(nested_bats dies 'TEST "one" { true; }
TEST "two kills bats" { kill -KILL $PPID; }
TEST "three" { true; }')
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TEST_RERUN=0 "$KIT_ROOT/tests/run" "$f"
    [[ $status -ne 0 ]] || fail "tests/run passed a file whose bats was killed: $output"
    [[ $output == *"died part way"* || $output == *"exited with status"* ]] || fail "$output"
}

@test "runner: a test that passes but leaves its server running fails" {
    local f
    f=$(nested_bats leftover 'TEST "forgets stop_server" { start_server good; }')
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TEST_RERUN=0 "$KIT_ROOT/tests/run" "$f"
    [[ $status -ne 0 ]] || fail "tests/run passed: $output"
    [[ $output == *"left its server running"* ]] || fail "$output"
}

@test "harness: a background client is stopped in teardown even when the test fails" {
    local f pid
    f=$(nested_bats bg 'TEST "starts a client and fails" { start_bg sleeper sleep 60; echo $BG_PID >'"$BATS_TEST_TMPDIR"'/bg.pid; false; }')
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TEST_RERUN=0 "$KIT_ROOT/tests/run" "$f"
    [[ $status -ne 0 ]] || fail "the failing nested test passed: $output"
    pid=$(cat "$BATS_TEST_TMPDIR/bg.pid")
    [[ -n $pid ]] || fail "the nested test did not record its client"
    ! kill -0 "$pid" 2>/dev/null || { kill -KILL "$pid"; fail "background client $pid outlived its test"; }
}

@test "harness: a server that dies of a sanitizer report mid-test: the failure shows the report's head, the log is kept" {
    local f out="$BATS_TEST_TMPDIR/out"
    f=$(nested_bats crash 'TEST "talks to a server that crashes" { start_server asan-crash; netkit echo --count 1 --max-size 100; stop_server; }')
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$out" TEST_RERUN=0 "$KIT_ROOT/tests/run" "$f"
    [[ $status -ne 0 ]] || fail "tests/run passed: $output"
    [[ $output == *"ERROR: AddressSanitizer: heap-use-after-free"* ]] || fail "no report head: $output"
    [[ $output == *"#0 0x55d0c0de1234 in conn_flush_output"* ]] || fail "no first frame: $output"
    [[ $output != *"Shadow byte legend"* ]] || fail "the legend shown instead of the head: $output"
    grep -lq "Shadow byte legend" "$out"/kept/* 2>/dev/null || fail "the server's log is not kept in $out/kept: $output"
}

# SCALE_TEST: a nested test that passes only with deadlines at least 3 times the default.
SCALE_TEST='TEST "needs deadlines 3 times as long" { (($(scaled_ms 1) >= 3000)) || fail "deadline $(scaled_ms 1) ms at TIMEOUT_SCALE=$TIMEOUT_SCALE"; }
TEST "passes" { true; }'

# once_test: a nested test that fails on its first run and passes on any later one (a
# marker file in this test's own folder), as a test that lost to a neighbour does.
once_test() {
    echo 'TEST "fails on its first try" {
    [[ -e '"$BATS_TEST_TMPDIR"'/tried ]] && return 0
    touch '"$BATS_TEST_TMPDIR"'/tried
    fail "first try"
}
TEST "passes" { true; }'
}

@test "runner: a test that fails once and passes alone is named as passing only on a second try" {
    local f
    f=$(nested_bats once "$(once_test)")
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TIMEOUT_SCALE=1 "$KIT_ROOT/tests/run" "$f"
    [[ $status -eq 0 ]] || fail "tests/run failed: $output"
    [[ ${lines[-1]} == "2 passed, 0 failed, 0 skipped" ]] || fail "last line: ${lines[-1]}; $output"
    [[ $output == *"passed only on a second try, alone, at the same TIMEOUT_SCALE=1"* ]] ||
        fail "no list of tests passed on a second try: $output"
    [[ $output == *"once.bats: 1 fails on its first try"* ]] || fail "the test is not named: $output"
    [[ $output == *"  FAIL 1 fails on its first try"* ]] || fail "the first failure is not shown: $output"
}

@test "runner: the second try does not stretch deadlines: a test that needs 3 times the time still fails" {
    # A server that is only slow (a drain of 3 s where the contract says 2) must not pass on
    # a second try with longer deadlines.
    local f
    f=$(nested_bats scale "$SCALE_TEST")
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TIMEOUT_SCALE=1 "$KIT_ROOT/tests/run" "$f"
    [[ $status -ne 0 ]] || fail "tests/run passed a test that needs longer deadlines: $output"
    [[ ${lines[-1]} == "1 passed, 1 failed, 0 skipped" ]] || fail "last line: ${lines[-1]}; $output"
    [[ $output == *"again: FAIL 1 needs deadlines 3 times as long"* ]] || fail "no second try shown: $output"
    [[ $output == *"at TIMEOUT_SCALE=1"* ]] || fail "the second try's own output is not shown: $output"
}

@test "runner: with TEST_RERUN=0 a failed test fails, and the summary names TIMEOUT_SCALE and how to rerun" {
    local f
    f=$(nested_bats once "$(once_test)")
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TIMEOUT_SCALE=1 TEST_RERUN=0 "$KIT_ROOT/tests/run" "$f"
    [[ $status -ne 0 ]] || fail "tests/run passed: $output"
    [[ ${lines[-1]} == "1 passed, 1 failed, 0 skipped" ]] || fail "last line: ${lines[-1]}; $output"
    [[ $output == *"TIMEOUT_SCALE stretches every deadline (this run: 1)"* ]] || fail "TIMEOUT_SCALE not named: $output"
    [[ $output == *"TIMEOUT_SCALE=3 BATS_FILTER="* ]] || fail "no command to rerun: $output"
    [[ $output != *"second try"* ]] || fail "a second try with TEST_RERUN=0: $output"
}

@test "runner: a test that always fails still fails after its second try" {
    local f
    f=$(nested_bats always 'TEST "always fails" { fail "at TIMEOUT_SCALE=$TIMEOUT_SCALE"; }')
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TIMEOUT_SCALE=1 "$KIT_ROOT/tests/run" "$f"
    [[ $status -ne 0 ]] || fail "tests/run passed: $output"
    [[ ${lines[-1]} == "0 passed, 1 failed, 0 skipped" ]] || fail "last line: ${lines[-1]}; $output"
    [[ $output == *"again: FAIL 1 always fails"* ]] || fail "no second try shown: $output"
    [[ $output == *"at TIMEOUT_SCALE=1"* ]] || fail "the second try's own output is not shown: $output"
    [[ $output == *"1 of them failed again on a second try"* ]] || fail "$output"
}

@test "runner: files start longest first by the last whole run's times, which that run records" {
    local a b c out=$BATS_TEST_TMPDIR/out
    a=$(nested_bats quick 'TEST "quick" { echo quick >>'"$BATS_TEST_TMPDIR"'/order; }')
    b=$(nested_bats long 'TEST "long" { echo long >>'"$BATS_TEST_TMPDIR"'/order; }')
    c=$(nested_bats new 'TEST "new" { echo new >>'"$BATS_TEST_TMPDIR"'/order; }')
    mkdir -p "$out"
    printf '3 %s\n40 %s\n' "$a" "$b" >"$out/durations"
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$out" TIMEOUT_SCALE=1 TEST_JOBS=1 "$KIT_ROOT/tests/run" "$a" "$b" "$c"
    [[ $status -eq 0 ]] || fail "$output"
    # A file with no time yet may be the longest: it starts first, then the known ones.
    [[ $(paste -sd' ' "$BATS_TEST_TMPDIR/order") == "new long quick" ]] || fail "order: $(paste -sd' ' "$BATS_TEST_TMPDIR/order")"
    # The results are still reported in the order given, and the run recorded all three.
    [[ $(grep -n '^== ' <<<"$output" | paste -sd' ') == *quick.bats*long.bats*new.bats* ]] || fail "$output"
    for f in "$a" "$b" "$c"; do
        grep -qE "^[0-9]+ $f\$" "$out/durations" || fail "no time for $f: $(cat "$out/durations")"
    done
    # A filtered run does not record its times (they are not the whole file's).
    cp "$out/durations" "$BATS_TEST_TMPDIR/before"
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$out" TIMEOUT_SCALE=1 BATS_FILTER=quick "$KIT_ROOT/tests/run" "$a"
    cmp -s "$out/durations" "$BATS_TEST_TMPDIR/before" || fail "a filtered run changed the times"
}

# scale_line: the runner's line that says which TIMEOUT_SCALE it uses (in $output).
scale_line() {
    grep -m1 '^tests/run: TIMEOUT_SCALE=' <<<"$output"
}

@test "runner: without TIMEOUT_SCALE it sets one from the load, says so, and the tests get it" {
    local f n
    n=$(nproc)
    f=$(nested_bats scale4 'TEST "sees the chosen scale" { [[ $TIMEOUT_SCALE == 4 ]] || fail "TIMEOUT_SCALE=$TIMEOUT_SCALE"; }')
    # A load of 3.5 runnable tasks per core (1-minute average) asks for 4; what runs now, less.
    awk -v n="$n" 'BEGIN { printf "%.2f 1.00 1.00 %d/300 4242\n", 3.5 * n, n + 1 }' >"$BATS_TEST_TMPDIR/loadavg"
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TEST_RERUN=0 \
        TEST_LOADAVG="$BATS_TEST_TMPDIR/loadavg" "$KIT_ROOT/tests/run" "$f"
    [[ $status -eq 0 ]] || fail "$output"
    [[ $(scale_line) == "tests/run: TIMEOUT_SCALE=4, from the load: "*" on $n cores (set TIMEOUT_SCALE to choose)" ]] || fail "$(scale_line)"
    # The tasks runnable now count too, when higher; an idle machine gets 1; 6 at most.
    awk -v n="$n" 'BEGIN { printf "0.10 1.00 1.00 %d/300 4242\n", 2 * n + 1 }' >"$BATS_TEST_TMPDIR/loadavg"
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TEST_RERUN=0 \
        TEST_LOADAVG="$BATS_TEST_TMPDIR/loadavg" "$KIT_ROOT/tests/run" "$f"
    [[ $(scale_line) == "tests/run: TIMEOUT_SCALE=2, "* ]] || fail "$(scale_line)"
    echo "0.00 0.00 0.00 1/300 4242" >"$BATS_TEST_TMPDIR/loadavg"
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TEST_RERUN=0 \
        TEST_LOADAVG="$BATS_TEST_TMPDIR/loadavg" "$KIT_ROOT/tests/run" "$f"
    [[ $(scale_line) == "tests/run: TIMEOUT_SCALE=1, "* ]] || fail "$(scale_line)"
    echo "99.00 0.00 0.00 1/300 4242" >"$BATS_TEST_TMPDIR/loadavg"
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TEST_RERUN=0 \
        TEST_LOADAVG="$BATS_TEST_TMPDIR/loadavg" "$KIT_ROOT/tests/run" "$f"
    [[ $(scale_line) == "tests/run: TIMEOUT_SCALE=6, "* ]] || fail "$(scale_line)"
    # Given by the user, it is used as given.
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" TEST_RERUN=0 TIMEOUT_SCALE=4 \
        TEST_LOADAVG="$BATS_TEST_TMPDIR/loadavg" "$KIT_ROOT/tests/run" "$f"
    [[ $status -eq 0 && $(scale_line) == "tests/run: TIMEOUT_SCALE=4, as set" ]] || fail "$(scale_line); $output"
}
