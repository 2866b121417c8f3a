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

# The reset lands while the server (or its child, or its worker) sleeps in recv(): recv()
# fails with ECONNRESET and that client alone is dropped, with a log line that says why.
@test "a client that resets while the server waits in recv() is dropped with a log line" {
    for s in "${SERVERS[@]}"; do
        start_server "$s"
        netkit reset-idle
        assert_log "$s: fd [0-9]+: recv: Connection reset by peer, dropping"
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
    for s in "${SERVERS[@]}"; do
        start_server "$s"
        stop_server INT
    done
}

# A signal mask is inherited through exec: a server started with SIGTERM and SIGINT blocked
# (by a supervisor, a shell, here a wrapper) must unblock them itself, or wait_for_client's
# ppoll() would sleep with them blocked and nothing could stop it. Each server also serves a
# client first, so the echo loop runs with that mask too.
@test "started with SIGTERM and SIGINT blocked, every server still stops on SIGTERM" {
    for s in "${SERVERS[@]}"; do
        start_server_masked "$s"
        netkit echo --count 2 --max-size 4096
        stop_server
    done
}

# The lost-signal window: the shim delays each server's first wait for a client by 500 ms and
# the SIGTERM lands inside the delay. A server that checked its flag and then blocked in
# accept() would sleep on; accept_client's ppoll() unblocks the signal only inside the wait.
@test "server: SIGTERM that lands just before the first wait still stops it" {
    start_server_delayed server
    scenario_sigterm_in_window
}

@test "server_fork: SIGTERM that lands just before the first wait still stops it" {
    start_server_delayed server_fork
    scenario_sigterm_in_window
}

@test "server_thread: SIGTERM that lands just before the first wait still stops it" {
    start_server_delayed server_thread
    scenario_sigterm_in_window
}

# The same window one step earlier: the shim delays the first call that blocks SIGTERM
# (wait_for_client's pthread_sigmask) and the signal lands before the block. A
# wait_for_client that checked stop_requested first and blocked after would miss the flag the
# handler set in the delay and sleep in ppoll(); checked after the block, it sees it set.
# (No call before `listening on` blocks SIGTERM: set_handler only unblocks.)
@test "server: SIGTERM that lands just before the signals are blocked still stops it" {
    start_server_delayed_at sigmask server
    scenario_sigterm_in_window
}

@test "server_fork: SIGTERM that lands just before the signals are blocked still stops it" {
    start_server_delayed_at sigmask server_fork
    scenario_sigterm_in_window
}

@test "server_thread: SIGTERM that lands just before the signals are blocked still stops it" {
    start_server_delayed_at sigmask server_thread
    scenario_sigterm_in_window
}

# A client that never reads leaves the server (server), its child (server_fork) or its worker
# (server_thread) asleep in send(): SIGTERM must still end it, through send_all's stop check
# after the signal cut send() short (server, server_fork: a child that ignores it would be
# killed after 1.5 s, which the test refuses) or main's shutdown() of the worker's socket.
@test "SIGTERM while blocked sending to a client that does not read: every server exits 0 within 2 s" {
    for s in "${SERVERS[@]}"; do
        start_server "$s"
        start_bg "stuck-$s" netkit stuck --hold 10
        wait_file_match "$BATS_TEST_TMPDIR/stuck-$s.out" '^stuck:' 15
        stop_server
        # The shutdown() that wakes a worker cuts its send() short (then it sees the flag)
        # or makes it fail with EPIPE, depending on whether it had taken some bytes.
        local want='closed \(server stopping\)'
        [[ $s == server_thread ]] && want+='|send: (Broken pipe|Connection reset by peer), dropping'
        grep -qE "$want" "$SERVER_ERR" ||
            fail "$s: the blocked send() did not end the client's echo loop; stderr:" "$(tail -n 5 "$SERVER_ERR")"
        ! grep -q 'did not stop, killing it' "$SERVER_ERR" ||
            fail "$s: the child ignored SIGTERM and had to be killed"
    done
}

# wait_state PID STATE: wait (2 s) until PID's state in /proc/PID/stat is STATE (S: asleep).
wait_state() {
    local stat deadline
    deadline=$(($(now_ms) + $(scaled_ms 2)))
    while :; do
        stat=$(cat "/proc/$1/stat" 2>/dev/null) || fail "process $1 is gone" || return
        stat=${stat##*) }
        [[ ${stat:0:1} == "$2" ]] && return 0
        (($(now_ms) < deadline)) || fail "process $1 never reached state $2 (it is ${stat:0:1})" || return
        sleep 0.02   # poll interval of a loop with a deadline
    done
}

# wait_log_count REGEX N: wait (2 s) until the server's stderr has N lines matching REGEX.
wait_log_count() {
    local deadline
    deadline=$(($(now_ms) + $(scaled_ms 2)))
    until (($(grep -cE -- "$1" "$SERVER_ERR") >= $2)); do
        (($(now_ms) < deadline)) || fail "server stderr has fewer than $2 lines matching /$1/:" "$(tail -n 5 "$SERVER_ERR")" || return
        sleep 0.02   # poll interval of a loop with a deadline
    done
}

# A blocking send() sleeping on a full buffer returns early when a signal's handler runs: with
# the bytes it took (a short count) or, if it took none, -1 and EINTR. A fork child inherits the
# parent's SIGCHLD handler, a signal that does not ask it to stop: send_all must send the rest.
@test "server_fork: a send() cut short by a signal still sends the rest" {
    require_proc_children
    start_server server_fork
    local resume="$BATS_TEST_TMPDIR/resume" client child i
    start_bg paused netkit pause-read --resume-file "$resume"
    client=$BG_PID
    wait_file_match "$BATS_TEST_TMPDIR/paused.out" '^stalled:' 15
    child=$(descendants "$SERVER_PID")
    [[ $child =~ ^[0-9]+$ ]] || fail "want the one child serving the client, found: '$child'"
    # Twice, so that the rest of a piece is sent after a short count too. Each time the
    # child must be asleep in send() (state S: nothing else in its loop sleeps) when the
    # signal lands. (Whether a signal finds send() with some bytes taken, a short count, or
    # none, -1 and EINTR, is the kernel's timing; in practice it has taken some.)
    for i in 1 2; do
        wait_state "$child" S
        kill -CHLD "$child"
        wait_log_count 'send\(\) cut short: [0-9]+ of [0-9]+ bytes' "$i"
    done
    touch "$resume"
    wait_bg "$client" paused
    grep -qE 'send\(\) cut short: [1-9][0-9]* of' "$SERVER_ERR" || fail "no send() came back short with some bytes taken"
    stop_server
}

# Each 16500-byte echo leaves the server in two send()s (its read buffer is 16 KiB); without
# TCP_NODELAY the 116-byte rest waits for the client's delayed ACK, about 40 ms a message.
@test "TCP_NODELAY: a reply that leaves in two pieces does not wait for a delayed ACK" {
    for s in "${SERVERS[@]}"; do
        start_server "$s"
        netkit round-trips --size 16500 --count 50 --within 0.5
        stop_server
    done
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
    require_proc_children   # else descendants() would see no children and prove nothing
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

@test "accepted sockets are close-on-exec (accept4 with SOCK_CLOEXEC), in every server" {
    local b
    for b in server server_fork server_thread; do
        start_server "$b"
        scenario_cloexec
        stop_server
    done
}
