#!/usr/bin/env bats
# The harness tests itself: each broken fake server (tests/lib/fake_server.py) must make
# the helper that guards against it fail. A harness that cannot fail proves nothing.

setup() {
    FAKE_DIR="$BATS_TEST_TMPDIR/fake"
    mkdir -p "$FAKE_DIR"
    for mode in good silent bad-exit slow-exit asan corrupt lossy; do
        printf '#!/bin/sh\nexec python3 %q %s "$@"\n' "$BATS_TEST_DIRNAME/lib/fake_server.py" "$mode" >"$FAKE_DIR/$mode"
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

@test "harness: stop_server fails on a sanitizer report" {
    start_server asan
    if stop_server 2>"$BATS_TEST_TMPDIR/err"; then fail "stop_server passed"; fi
    grep -q "AddressSanitizer" "$BATS_TEST_TMPDIR/err" || fail "$(cat "$BATS_TEST_TMPDIR/err")"
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
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" "$KIT_ROOT/tests/run" "$f"
    [[ $status -ne 0 ]] || fail "tests/run passed a file whose bats was killed: $output"
    [[ $output == *"died part way"* || $output == *"exited with status"* ]] || fail "$output"
}

@test "runner: a test that passes but leaves its server running fails" {
    local f
    f=$(nested_bats leftover 'TEST "forgets stop_server" { start_server good; }')
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" "$KIT_ROOT/tests/run" "$f"
    [[ $status -ne 0 ]] || fail "tests/run passed: $output"
    [[ $output == *"left its server running"* ]] || fail "$output"
}

@test "harness: a background client is stopped in teardown even when the test fails" {
    local f pid
    f=$(nested_bats bg 'TEST "starts a client and fails" { start_bg sleeper sleep 60; echo $BG_PID >'"$BATS_TEST_TMPDIR"'/bg.pid; false; }')
    run env -i PATH="$(clean_path)" HOME="$HOME" TEST_OUT="$BATS_TEST_TMPDIR/out" "$KIT_ROOT/tests/run" "$f"
    [[ $status -ne 0 ]] || fail "the failing nested test passed: $output"
    pid=$(cat "$BATS_TEST_TMPDIR/bg.pid")
    [[ -n $pid ]] || fail "the nested test did not record its client"
    ! kill -0 "$pid" 2>/dev/null || { kill -KILL "$pid"; fail "background client $pid outlived its test"; }
}
