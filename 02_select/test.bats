#!/usr/bin/env bats
# 02_select: one thread, select(), blocking sends.
# The shared echo scenarios, then the two limits this stage exists to show:
# a client that stops reading stalls everyone, and fds >= FD_SETSIZE cannot be watched.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"

setup() {
    # ThreadSanitizer holds a signal until the thread enters a call it intercepts, and
    # select() is not one (google/sanitizers#838): SIGTERM would never stop the server.
    # This stage has one thread, so ThreadSanitizer has no race to look for anyway.
    if [[ ${SAN:-} == *thread* ]]; then
        skip "single-threaded, and ThreadSanitizer cannot deliver signals during select()"
    fi
}

@test "--help prints usage and exits 0; a bad option exits 2" {
    run "$(stage_bin server)" --help
    [[ $status -eq 0 && $output == *-p* ]] || fail "--help: status $status: $output"
    run "$(stage_bin server)" --bogus
    [[ $status -eq 2 ]] || fail "--bogus exited $status, want 2"
    run "$(stage_bin server)" -p 70000
    [[ $status -eq 2 ]] || fail "-p 70000 exited $status, want 2"
}

@test "echo of random sizes in random pieces (1-byte writes included)" {
    start_server server
    scenario_echo
    stop_server
}

@test "100 clients at once" {
    start_server server
    scenario_concurrent 100
    stop_server
}

@test "half-close: everything comes back after the client's EOF, then the server closes" {
    start_server server
    scenario_half_close
    stop_server
}

@test "a client that resets mid-reply is dropped; the others carry on" {
    start_server server
    scenario_reset
    stop_server
}

@test "SIGTERM with a client connected: exit 0 within 2 s" {
    start_server server
    scenario_sigterm
}

@test "limit: a client that stops reading stalls every other client" {
    start_server server
    netkit slow-reader --expect-stall
    # Once the stuck client is gone (netkit resets it), service resumes.
    netkit echo --count 3 --max-size 65536
    stop_server
}

@test "SIGTERM while the server is stuck sending to a client that never reads: exit 0 within 2 s" {
    start_server server
    local out="$BATS_TEST_TMPDIR/stuck.out"
    netkit stuck --hold "$(awk -v k="$TIMEOUT_SCALE" 'BEGIN{print 6*k}')" >"$out" 2>&1 3>&- &
    local client=$!
    # The client says when the server has stopped taking its bytes (blocked in send_all).
    local deadline=$(($(now_ms) + $(scaled_ms 10)))
    until grep -q '^stuck:' "$out"; do
        (($(now_ms) < deadline)) || fail "the client never filled the connection: $(cat "$out")"
        sleep 0.02   # poll interval of a loop with a deadline
    done
    stop_server
    wait "$client" || fail "client: $(cat "$out")"
}

@test "limit: fds >= FD_SETSIZE are closed at once with a log line; the rest are served" {
    raise_nofile 1300
    start_server server
    run netkit hold --conns 1100
    [[ $status -eq 1 ]] || fail "select server held 1100 connections: $output"
    local echoed
    echoed=$(sed -n 's/.* \([0-9]*\) echoed.*/\1/p' <<<"$output")
    ((echoed >= 1000 && echoed < 1100)) || fail "expected 1000..1099 echoed below the cap: $output"
    assert_log 'FD_SETSIZE'
    netkit echo --count 3 --max-size 65536
    stop_server
}

@test "matrix: server" {
    start_matrix_server server
    assert_matrix_row 02_select/server
    stop_server
}
