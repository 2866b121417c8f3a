#!/usr/bin/env bats
# 01_blocking: the three blocking echo servers.
# Shared echo scenarios for all three, the iterative server's limit (a second client
# waits), and 50 clients at once for the fork and thread servers.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"

SERVERS=(server server_fork server_thread)

# --- the contract -------------------------------------------------------------------

@test "--help prints usage and exits 0; a bad option exits 2" {
    for s in "${SERVERS[@]}"; do
        run "$(stage_bin "$s")" --help
        [[ $status -eq 0 ]] || fail "$s --help exited $status"
        [[ $output == *-p* && $output == *-H* ]] || fail "$s --help does not mention -H and -p: $output"
        run "$(stage_bin "$s")" --no-such-option
        [[ $status -eq 2 ]] || fail "$s --no-such-option exited $status, want 2"
        run "$(stage_bin "$s")" -p notaport
        [[ $status -eq 2 ]] || fail "$s -p notaport exited $status, want 2"
    done
}

@test "a port already in use is a clear error, not a crash" {
    start_server server
    run "$(stage_bin server)" -p "$PORT"
    [[ $status -ne 0 && $status -lt 128 ]] || fail "second server on port $PORT exited $status"
    [[ $output == *"in use"* ]] || fail "no 'in use' in: $output"
    stop_server
}

# --- echo scenarios, for each server ----------------------------------------------------

@test "server: echo of random sizes in random pieces" {
    start_server server
    scenario_echo
    stop_server
}

@test "server_fork: echo of random sizes in random pieces" {
    start_server server_fork
    scenario_echo
    stop_server
}

@test "server_thread: echo of random sizes in random pieces" {
    start_server server_thread
    scenario_echo
    stop_server
}

@test "half-close: every server sends everything back after the client's EOF, then closes" {
    for s in "${SERVERS[@]}"; do
        start_server "$s"
        scenario_half_close
        stop_server
    done
}

@test "a client that resets mid-reply does not kill any server" {
    for s in "${SERVERS[@]}"; do
        start_server "$s"
        scenario_reset
        assert_log 'reset|Broken pipe|dropping'
        stop_server
    done
}

@test "SIGTERM with a client connected: every server exits 0 within 2 s" {
    for s in "${SERVERS[@]}"; do
        start_server "$s"
        scenario_sigterm
    done
}

@test "SIGINT exits 0 too" {
    start_server server_thread
    stop_server INT
}

# --- the lesson: what each concurrency model can and cannot do -----------------------------

@test "iterative server: a second client waits until the first leaves" {
    start_server server
    netkit stall --expect waits
    stop_server
}

@test "server_fork: 50 clients at once" {
    start_server server_fork
    scenario_concurrent 50
    stop_server
}

@test "server_thread: 50 clients at once" {
    start_server server_thread
    scenario_concurrent 50
    stop_server
}

@test "server_fork: children are reaped (no zombies) once clients leave" {
    start_server server_fork
    netkit concurrent --clients 20 --size 1024
    local deadline zombies live k
    deadline=$(($(now_ms) + $(scaled_ms 2)))
    while :; do
        zombies=0
        for k in $(descendants "$SERVER_PID"); do
            [[ $(cat "/proc/$k/stat" 2>/dev/null) == *") Z "* ]] && zombies=$((zombies + 1))
        done
        live=$(descendants "$SERVER_PID" | wc -l)
        ((live == 0)) && break
        (($(now_ms) < deadline)) || fail "$live children still there 2 s after their clients left ($zombies zombies)"
        sleep 0.05   # poll interval of a loop with a deadline
    done
    stop_server
}

# --- the capability matrix --------------------------------------------------------------

@test "matrix: server" {
    start_matrix_server server
    assert_matrix_row 01_blocking/server
    stop_server
}

@test "matrix: server_fork" {
    start_matrix_server server_fork
    assert_matrix_row 01_blocking/server_fork
    stop_server
}

@test "matrix: server_thread" {
    start_matrix_server server_thread
    assert_matrix_row 01_blocking/server_thread
    stop_server
}
