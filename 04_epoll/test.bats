#!/usr/bin/env bats
# 04_epoll: epoll, level-triggered (-m lt) and edge-triggered (-m et).
# Every scenario runs in both modes: an edge-triggered loop that forgets to drain to
# EAGAIN fails the large random-split echoes and the half-close. Then EMFILE without spinning.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"

MODES=(lt et)

@test "--help prints usage and exits 0; bad options exit 2" {
    run "$(stage_bin server)" --help
    [[ $status -eq 0 && $output == *"-m"* ]] || fail "--help: status $status: $output"
    run "$(stage_bin server)" -m xx
    [[ $status -eq 2 ]] || fail "-m xx exited $status, want 2"
    run "$(stage_bin server)" --max-output nope
    [[ $status -eq 2 ]] || fail "--max-output nope exited $status, want 2"
}

@test "lt: echo of random sizes in random pieces (1-byte writes included)" {
    start_server server -m lt
    scenario_echo
    stop_server
}

@test "et: echo of random sizes in random pieces (1-byte writes included)" {
    start_server server -m et
    scenario_echo
    stop_server
}

@test "lt and et: a tiny --max-output still delivers every byte" {
    for m in "${MODES[@]}"; do
        start_server server -m "$m" --max-output 1024
        netkit echo --count 6 --max-size 1048576 --max-piece 65536
        stop_server
    done
}

@test "lt and et: 100 clients at once" {
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        scenario_concurrent 100
        stop_server
    done
}

@test "lt and et: half-close delivers everything back, then the server closes" {
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        scenario_half_close
        stop_server
    done
}

@test "lt and et: a client that resets mid-reply is dropped; the others carry on" {
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        scenario_reset
        stop_server
    done
}

@test "lt and et: a client that stops reading does not stall the others" {
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        netkit slow-reader
        stop_server
    done
}

@test "lt and et: back-pressure keeps memory bounded under a client that never reads" {
    for m in "${MODES[@]}"; do
        ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=0" start_server server -m "$m" --max-output 1048576
        netkit backpressure --pid "$SERVER_PID" --size 67108864 --limit-kib 16384
        stop_server
    done
}

@test "lt and et: 1100 connections at once, every one echoed" {
    raise_nofile 1300
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        netkit hold --conns 1100
        stop_server
    done
}

@test "lt and et: idle connections hold no buffer memory once their echo is sent" {
    [[ -z ${SAN:-} ]] || skip "memory is measured on the normal build (ASan keeps freed blocks in quarantine)"
    raise_nofile 2200
    local per
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        run netkit mem --pid "$SERVER_PID" --conns 2000
        [[ $status -eq 0 ]] || fail "$output"
        per=$(sed -n 's/.*: \([0-9.]*\) KiB per connection.*/\1/p' <<<"$output")
        awk -v p="$per" 'BEGIN { exit !(p < 1.0) }' || fail "$m: idle connection costs $per KiB (want < 1): $output"
        stop_server
    done
}

@test "EMFILE: out of descriptors, the server neither spins nor stops serving" {
    raise_nofile 300
    SERVER_NOFILE=32 start_server server
    # A client connected before the flood must keep being served throughout.
    exec 5<>"/dev/tcp/127.0.0.1/$PORT"
    netkit flood --conns 100 --hold "$(awk -v k="$TIMEOUT_SCALE" 'BEGIN{print 4*k}')" >"$BATS_TEST_TMPDIR/flood.out" 2>&1 3>&- &
    local flood=$!
    # Generous: the flood client is a fresh Python process, slow to start on a busy machine.
    assert_log 'Too many open files' 10
    # Measure CPU over one second while the flood is held open: a server that retries
    # accept() in a tight loop burns ~100 ticks; a well-behaved one stays near 0.
    local t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    sleep 1   # the measurement window itself, not a readiness wait
    t1=$(cpu_ticks "$SERVER_PID")
    printf 'ping\n' >&5
    local reply
    read -r -t "$(awk -v k="$TIMEOUT_SCALE" 'BEGIN{print 2*k}')" reply <&5 || true
    exec 5>&-
    wait "$flood" || fail "flood client failed: $(cat "$BATS_TEST_TMPDIR/flood.out")"
    (((t1 - t0) < 30)) || fail "server used $((t1 - t0)) of 100 CPU ticks in 1 s while out of fds: it is spinning"
    [[ $reply == ping ]] || fail "the client connected before the flood got '$reply', want 'ping'"
    # Refused clients must hear "no" at once (EOF), not hang in the backlog.
    local closed
    closed=$(sed -n 's/.*the server closed \([0-9]*\) of them.*/\1/p' "$BATS_TEST_TMPDIR/flood.out")
    ((closed > 0)) || fail "no flooding client was closed by the server: $(cat "$BATS_TEST_TMPDIR/flood.out")"
    netkit echo --count 3 --max-size 65536
    stop_server
}

@test "lt and et: SIGTERM with a client connected exits 0 within 2 s" {
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        scenario_sigterm
    done
}

@test "lt and et: SIGTERM flushes output still pending for a client" {
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        netkit drain-on-term --pid "$SERVER_PID" --size 2097152
        stop_server
    done
}

@test "matrix: server (level-triggered, the default)" {
    start_matrix_server server
    assert_matrix_row 04_epoll/server
    stop_server
}

@test "matrix: server -m et meets the same row" {
    start_matrix_server server -m et
    assert_matrix_row 04_epoll/server
    stop_server
}
