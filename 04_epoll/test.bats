#!/usr/bin/env bats
# 04_epoll: epoll, level-triggered (-m lt) and edge-triggered (-m et).
# Every scenario runs in both modes: an edge-triggered loop that forgets to drain fails the
# large random-split echoes and the half-close. Then the hard paths, forced and proved from
# the server's counters (its `stopped after ...` line): queued output flushed on EPOLLOUT,
# back-pressure pausing and resuming, a burst past the ET read budget re-armed, one recv and
# no epoll_ctl per small message; EMFILE without spinning; and stopping: a SIGTERM in the
# lost-signal window, and a drain that still delivers output pending in the server.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"

MODES=(lt et)

# counter NAME: the number just before NAME in the server's stop line (call after stop_server),
# e.g. `counter "short sends"` for `... 37 short sends, ...`.
counter() {
    local line n
    line=$(grep -m1 'stopped after' "$SERVER_ERR") || fail "no 'stopped after' line in the server's stderr" || return
    n=$(sed -n "s/.*[^0-9]\([0-9][0-9]*\) $1[,;]*.*/\1/p" <<<"$line")
    [[ -n $n ]] || fail "no '$1' counter in: $line" || return
    echo "$n"
}

# scaled_s SECONDS: SECONDS stretched by TIMEOUT_SCALE, for `read -t` and client options.
scaled_s() {
    awk -v s="$1" -v k="$TIMEOUT_SCALE" 'BEGIN { print s * k }'
}

@test "--help prints usage and exits 0; bad options exit 2" {
    run "$(stage_bin server)" --help
    [[ $status -eq 0 && $output == *"-m"* && $output == *--read-budget* ]] || fail "--help: status $status: $output"
    run "$(stage_bin server)" -m xx
    [[ $status -eq 2 ]] || fail "-m xx exited $status, want 2"
    run "$(stage_bin server)" --max-output nope
    [[ $status -eq 2 ]] || fail "--max-output nope exited $status, want 2"
    run "$(stage_bin server)" --read-budget 0
    [[ $status -eq 2 ]] || fail "--read-budget 0 exited $status, want 2"
}

@test "buffer unit test: at most 1 byte moved per byte appended, none to grow, no reallocation per pause/resume cycle, any append fits" {
    run "$(stage_bin buffer_test)"
    [[ $status -eq 0 ]] || fail "buffer_test exited $status:" "$output"
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

@test "lt and et: small messages cost one recv each and no epoll_ctl (ET's short read, conn_watch's comparison)" {
    # One 64-byte message at a time: the client sends the next only after the whole echo,
    # so each message is alone in the socket, and each recv() that returns it is short.
    # LT reads once per event; ET stops at the short read (no recv() just to hear EAGAIN);
    # the echo always fits in the kernel, so what epoll watches never changes. 2000
    # messages: 2001 recv (the last one reads the EOF), 0 epoll_ctl(MOD). The bounds allow
    # a spurious wake-up per hundred messages, not a second recv per message.
    local m recvs mods
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        netkit round-trips --size 64 --count 2000 --within 20
        stop_server
        recvs=$(counter "recv") && mods=$(counter 'epoll_ctl(MOD) calls') || return
        ((recvs <= 2000 + 20 + 1)) || fail "$m: $recvs recv calls for 2000 messages (want about 2001: one per message)"
        ((recvs >= 2000)) || fail "$m: only $recvs recv calls for 2000 messages: the count is wrong"
        ((mods <= 20)) || fail "$m: $mods epoll_ctl(MOD) calls for 2000 messages that never queued (want 0)"
    done
}

@test "lt and et: accepted sockets have TCP_NODELAY (an echo in pieces is not held back by Nagle)" {
    # Asked from inside the server (netkit copies its descriptor with pidfd_getfd): on
    # loopback a missing TCP_NODELAY shows only as noise in the timings (README.md, section 4).
    local m st out
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        st=0
        out=$(netkit nodelay --pid "$SERVER_PID") || st=$?
        stop_server
        ((st != 3)) || skip "cannot look inside the server here: $out"
        ((st == 0)) || fail "$m: $out"
    done
}

@test "lt: queued output: a slow reader gets every byte, through short sends and EPOLLOUT flushes" {
    start_server server -m lt
    # 8 MiB through a 4 KiB receive buffer: more than the kernel buffers hold (its send
    # buffer grows to 4 MiB here, tcp_wmem), so the server's send() comes up short and the
    # rest waits in its queue for EPOLLOUT.
    netkit slow-drain --size 8388608 --rcvbuf 4096 --piece 65536 --pause-ms 0
    stop_server
    local short flushes
    short=$(counter "short sends") && flushes=$(counter "flushes") || return
    ((short > 0)) || fail "no short send: the server never had to queue (the test proved nothing)"
    ((flushes > 0)) || fail "no flush on EPOLLOUT: queued output was never sent from the queue"
}

@test "et: queued output: a slow reader gets every byte, through short sends and EPOLLOUT flushes" {
    start_server server -m et
    netkit slow-drain --size 8388608 --rcvbuf 4096 --piece 65536 --pause-ms 0
    stop_server
    local short flushes
    short=$(counter "short sends") && flushes=$(counter "flushes") || return
    ((short > 0)) || fail "no short send: the server never had to queue (the test proved nothing)"
    ((flushes > 0)) || fail "no flush on EPOLLOUT: queued output was never sent from the queue"
}

@test "lt: EPOLLOUT is off once the output drained: an idle client costs no CPU" {
    start_server server -m lt
    start_bg idle netkit drain-idle --size 8388608 --rcvbuf 4096 --piece 65536 --pause-ms 0 --hold "$(scaled_s 2.5)"
    local idle=$BG_PID
    wait_file_match "$BATS_TEST_TMPDIR/idle.out" '^drained:' 30
    # One second of a connected client with nothing queued and nothing to read. A
    # level-triggered server that still asks for EPOLLOUT gets it at once on every turn:
    # ~100 ticks.
    local t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    sleep 1   # the measurement window itself, not a readiness wait
    t1=$(cpu_ticks "$SERVER_PID")
    wait_bg "$idle" idle
    stop_server
    local short
    short=$(counter "short sends") || return
    ((short > 0)) || fail "no short send: the output was never queued, so EPOLLOUT was never asked for"
    (((t1 - t0) < 30)) || fail "server used $((t1 - t0)) of 100 CPU ticks in 1 s with one idle client: a busy loop"
}

@test "lt: a paused client costs no CPU (EPOLLIN is off while its output is over --max-output)" {
    start_server server -m lt --max-output 1048576
    # The client sends until every buffer is full and reads nothing: the server pauses it,
    # with its unread bytes still in the kernel. Level-triggered, a socket with unread
    # bytes is reported on every turn, so a server still asking for EPOLLIN spins (~100 ticks).
    start_bg stuck netkit stuck --size 67108864 --hold "$(scaled_s 2.5)"
    local stuck=$BG_PID
    wait_file_match "$BATS_TEST_TMPDIR/stuck.out" '^stuck:' 30
    assert_log 'not reading until it drains'
    local t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    sleep 1   # the measurement window itself, not a readiness wait
    t1=$(cpu_ticks "$SERVER_PID")
    has_exited "$stuck" && fail "the stuck client left before the window ended: the measurement proves nothing"
    wait_bg "$stuck" stuck
    stop_server
    (((t1 - t0) < 30)) || fail "server used $((t1 - t0)) of 100 CPU ticks in 1 s with one paused client: a busy loop"
}

@test "lt and et: a tiny --max-output pauses and resumes reading, and still delivers every byte" {
    local m pauses resumes
    for m in "${MODES[@]}"; do
        start_server server -m "$m" --max-output 16384
        netkit slow-drain --size 8388608 --rcvbuf 4096 --piece 65536 --pause-ms 0
        stop_server
        pauses=$(counter "pauses") && resumes=$(counter "resumes") || return
        ((pauses > 0)) || fail "$m: the server never paused reading: back-pressure did not engage"
        ((resumes > 0)) || fail "$m: the server paused ($pauses) but never resumed reading"
        # And the random splits, with a limit smaller than one read.
        start_server server -m "$m" --max-output 1024
        netkit echo --count 6 --max-size 1048576 --max-piece 65536
        stop_server
    done
}

@test "lt and et: a burst past --read-budget, found whole in the kernel, is echoed in full (ET re-arms)" {
    # The client proves it is served, SIGSTOPs the server, waits until it is stopped
    # (/proc: until then a woken epoll_wait could take the first bytes as an edge of their
    # own), sends 100,000 bytes (they fit in the stopped server's receive buffer: netkit
    # waits until /proc/net/tcp shows them all unread), SIGCONTs it and sends nothing more.
    # With --read-budget 1, ET reads 64 KiB, spends its budget, and must re-arm: the rest
    # arrived with the same edge, and no other event will come for it. Three bursts per
    # mode, each on a new connection: every one must re-arm.
    local m i rearms bursts=3
    for m in "${MODES[@]}"; do
        start_server server -m "$m" --read-budget 1
        for ((i = 0; i < bursts; i++)); do
            netkit stopped-burst --pid "$SERVER_PID" --size 100000
        done
        stop_server
        rearms=$(counter "re-arms") || return
        if [[ $m == et ]]; then
            ((rearms >= bursts)) || fail "et: $rearms re-arms for $bursts bursts: a burst never outlasted the read budget (the test proved nothing)"
        fi
    done
}

@test "lt and et: bytes and the FIN found together in the kernel are echoed, then EOF (ET short read, EPOLLRDHUP)" {
    # The same SIGSTOP trick, with our FIN after 1000 bytes: the server's socket is in
    # CLOSE_WAIT with the bytes unread when it resumes. ET's one read comes back short;
    # taken alone as "the kernel is empty", it would leave the FIN unread forever (no
    # edge follows it): the event's EPOLLRDHUP says to read on to EOF.
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        netkit stopped-burst --pid "$SERVER_PID" --size 1000 --then-eof
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

@test "lt and et: a client that resets while idle is dropped on recv's error; the others carry on" {
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        # Served once (so it is accepted and registered), then reset (SO_LINGER 0) with
        # nothing queued either way: the server learns it from recv().
        python3 -c '
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"x")
assert s.recv(1) == b"x", "no echo"
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()' "$PORT"
        assert_log 'recv: Connection reset by peer, dropping'
        netkit echo --count 2 --max-size 4096
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
    local pauses
    for m in "${MODES[@]}"; do
        ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=0" start_server server -m "$m" --max-output 1048576
        netkit backpressure --pid "$SERVER_PID" --size 67108864 --limit-kib 16384
        stop_server
        pauses=$(counter "pauses") || return
        ((pauses > 0)) || fail "$m: the server never paused reading the client that does not read"
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

@test "EMFILE: out of descriptors, the server refuses the extra clients at once, neither spins nor stops serving" {
    raise_nofile 300
    # 32 descriptors: 0-2, the epoll instance, the listening socket and the spare leave 26
    # for clients; the one below takes one, the flood 25, and the other 75 must be refused.
    SERVER_NOFILE=32 start_server server
    # A client served before the flood (its echo proves it was accepted) must keep being
    # served throughout.
    exec 5<>"/dev/tcp/127.0.0.1/$PORT"
    local reply=
    printf 'before\n' >&5
    read -r -t "$(scaled_s 2)" reply <&5 || true
    [[ $reply == before ]] || { exec 5>&-; fail "the client connected before the flood got '$reply', want 'before'"; } || return
    start_bg flood python3 "$NETKIT" flood --port "$PORT" --conns 100 --hold "$(scaled_s 4)"
    local flood=$BG_PID
    # Generous: the flood client is a fresh Python process, slow to start on a busy machine.
    wait_file_match "$BATS_TEST_TMPDIR/flood.out" '^flood: 100 connections opened' 10
    assert_log 'Too many open files' 5
    # Measure CPU over one second while the flood is held open: a server that retries
    # accept() in a tight loop burns ~100 ticks; a well-behaved one stays near 0.
    local t0 t1
    t0=$(cpu_ticks "$SERVER_PID")
    sleep 1   # the measurement window itself, not a readiness wait
    t1=$(cpu_ticks "$SERVER_PID")
    ! has_exited "$flood" || { exec 5>&-; fail "the flood client ended before the measurement window did: it measured nothing"; } || return
    printf 'ping\n' >&5
    reply=
    read -r -t "$(scaled_s 2)" reply <&5 || true
    exec 5>&-
    wait_bg "$flood" flood
    (((t1 - t0) < 30)) || fail "server used $((t1 - t0)) of 100 CPU ticks in 1 s while out of fds: it is spinning"
    [[ $reply == ping ]] || fail "the client connected before the flood got '$reply' during it, want 'ping'"
    # Refused clients must hear "no" at once (EOF), not hang in the backlog.
    local closed
    closed=$(sed -n 's/.*the server closed \([0-9]*\) of them.*/\1/p' "$BATS_TEST_TMPDIR/flood.out")
    ((closed > 0)) || fail "no flooding client was closed by the server: $(cat "$BATS_TEST_TMPDIR/flood.out")"
    grep -q 'dropped one pending connection' "$SERVER_ERR" || fail "no 'dropped one pending connection' line in the log"
    netkit echo --count 3 --max-size 65536
    stop_server
}

@test "lt and et: SIGTERM with a client connected exits 0 within 2 s" {
    for m in "${MODES[@]}"; do
        start_server server -m "$m"
        scenario_sigterm
    done
}

@test "lt and et: SIGTERM that lands just before the first wait still stops it" {
    for m in "${MODES[@]}"; do
        start_server_delayed server -m "$m"
        scenario_sigterm_in_window
    done
}

@test "lt and et: SIGTERM flushes output still pending in the server, every byte" {
    # drain-on-term sends SIGTERM itself once the server has read all 8 MiB (reading none
    # of the echo until then), then reads it through a 4 KiB window: every byte must
    # arrive, then EOF. 8 MiB: the kernel's send buffer holds up to 4 MiB here
    # (tcp_wmem), so several MiB are still in the server's own queue when the signal
    # lands; --max-output 16 MiB, so that back-pressure does not stop the server from
    # reading all of it first. A drain that closed every connection at once would lose
    # those bytes.
    local m pending
    for m in "${MODES[@]}"; do
        start_server server -m "$m" --max-output 16777216
        netkit drain-on-term --pid "$SERVER_PID" --size 8388608
        stop_server
        pending=$(sed -n 's/.*stopping: .*, \([0-9][0-9]*\) bytes pending.*/\1/p' "$SERVER_ERR")
        [[ -n $pending ]] || fail "$m: no 'stopping: ... N bytes pending' line:" "$(tail -n 5 "$SERVER_ERR")"
        ((pending > 0)) || fail "$m: nothing was pending in the server at SIGTERM: the drain was not tested"
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

@test "accepted sockets are close-on-exec (accept4 with SOCK_CLOEXEC)" {
    start_server server
    scenario_cloexec
    stop_server
}
