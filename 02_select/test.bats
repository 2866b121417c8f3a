#!/usr/bin/env bats
# 02_select: one thread, select(), blocking sends.
# The shared echo scenarios, then the two limits this stage exists to show:
# a client that stops reading stalls everyone, and fds >= FD_SETSIZE cannot be watched.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"
# run --separate-stderr (the options tests) needs bats 1.5; tests/run requires 1.4 for the rest.
bats_require_minimum_version 1.5.0

setup() {
    # ThreadSanitizer holds a signal until the thread enters a call it intercepts, and
    # pselect() is not one (google/sanitizers#838): SIGTERM would never stop the server.
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
    # accept4() says EAGAIN when the backlog is empty, the end of every turn's accepts: not an
    # error, never logged.
    ! grep -E '^server: accept:' "$SERVER_ERR" || fail "accept errors logged with no error to report"
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

@test "a client that resets while idle is dropped on recv's error; the others carry on" {
    start_server server
    # Served once (so it is accepted and in the set), then reset (SO_LINGER 0) with nothing
    # pending either way: the server learns it from recv(), not from a send.
    local me
    me=$(python3 -c '
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"x")
assert s.recv(1) == b"x", "no echo"
print(s.getsockname()[1])
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()' "$PORT") || fail "the client was not echoed before its reset" || return
    assert_log 'recv: Connection reset by peer, dropping'
    netkit echo --count 2 --max-size 4096
    stop_server
    # Dropped on that error, at once: never read again, so never logged as closed by EOF too.
    ! grep -q "^server: 127\.0\.0\.1:$me closed" "$SERVER_ERR" ||
        fail "the reset client was kept after its recv() error (later logged as closed):" "$(grep -E "recv:|:$me " "$SERVER_ERR")"
}

@test "SIGTERM with a client connected: exit 0 within 2 s" {
    start_server server
    scenario_sigterm
}

@test "SIGINT exits 0 too" {
    start_server server
    stop_server INT
}

# A signal mask is inherited through exec: started with SIGTERM and SIGINT blocked (by a
# supervisor, a shell, here a wrapper), the server must still unblock them inside pselect():
# block_stop_signals takes them out of the wait mask whatever the mask it started with.
@test "started with SIGTERM and SIGINT blocked, it still stops on SIGTERM" {
    start_server_masked server
    netkit echo --count 2 --max-size 4096
    stop_server
}

# block_stop_signals takes SIGINT out of the wait mask as it takes SIGTERM: both stop it.
@test "started with SIGTERM and SIGINT blocked, it still stops on SIGINT" {
    start_server_masked server
    netkit echo --count 1 --max-size 1024
    stop_server INT
}

# The lost-signal window: the shim delays the server's first pselect() by 500 ms and the
# SIGTERM lands inside the delay. A loop that checked its flag and then slept in select()
# would sleep on; here the signal is blocked outside pselect(), so it waits, pending, and the
# real pselect() returns EINTR for it at once.
@test "SIGTERM that lands just before the first wait still stops it" {
    start_server_delayed server
    scenario_sigterm_in_window
}

# stopped_after FIELD: the number before FIELD in the server's final "stopped after" line.
stopped_after() {
    local line
    line=$(grep -m1 'stopped after' "$SERVER_ERR") || fail "no 'stopped after' line in the server's stderr" || return
    sed -n "s/.*[ ,;]\([0-9][0-9]*\) $1.*/\1/p" <<<"$line" | head -n1
}

# drop_client must take a client out of the set before closing it: pselect() on a closed
# descriptor fails (EBADF) and the server could not go on. Each of the clients below leaves
# after its echo, so the next one's turn proves the set was clean.
@test "a client that leaves is taken out of the set: 20 in turn are each served and closed once" {
    start_server server
    netkit echo --count 20 --max-size 65536 --max-piece 4096
    netkit echo --count 1 --max-size 1024
    stop_server
    local closed
    closed=$(grep -cE '^server: 127\.0\.0\.1:[0-9]+ closed$' "$SERVER_ERR")
    ((closed == 21)) || fail "want 21 'closed' lines (one per client), got $closed"
    ! grep -q 'pselect:' "$SERVER_ERR" || fail "pselect failed: $(grep 'pselect:' "$SERVER_ERR")"
    # All 21 left before the stop: the count drop_client keeps is back to none, and the stop
    # has no client to close (its "stopping: closing N clients" line only when N > 0).
    ! grep -E 'stopping: closing' "$SERVER_ERR" || fail "every client had left, but the stop closed some"
}

# connect_echoed N: N clients connected over /dev/tcp, each echoed one line ("x0", "x1", ...);
# their descriptors in the caller's array FDS.
connect_echoed() {
    local i name reply
    fds=()
    for ((i = 0; i < $1; i++)); do
        exec {name}<>"/dev/tcp/127.0.0.1/$PORT" || fail "client $((i + 1)) could not connect" || return
        fds[i]=$name
        printf 'x%d\n' "$i" >&"$name"
        reply=
        read -r -t "$(scaled_s 2)" reply <&"$name" || true
        [[ $reply == "x$i" ]] || fail "client $((i + 1)) got '$reply' back, want 'x$i'" || return
    done
}

# pselect() watches descriptors 0..nfds-1, nfds = the highest client's + 1: drop_client walks
# max_client_fd down, or every turn pays for the highest descriptor ever served. Clients A, B,
# C (in that order: A < B < C as descriptors) are echoed once each, then leave: C first (the
# highest: the walk stops at B), then A (below the top: nothing to walk), then B (the walk goes
# past A's cleared bit, down to none). With every client gone the last pselect, the one SIGTERM
# ends, must watch the listening socket alone: fewer descriptors than A's number.
@test "clients that leave lower what pselect watches: with every client gone, the listening socket alone" {
    start_server server
    local name fds=() reply peers fd_a watched i
    connect_echoed 3 || return
    mapfile -t peers < <(sed -n 's/^server: \(.*\) connected (fd [0-9]*)$/\1/p' "$SERVER_ERR")
    fd_a=$(sed -n 's/^server: .* connected (fd \([0-9]*\))$/\1/p' "$SERVER_ERR" | head -n1)
    ((${#peers[@]} == 3)) || fail "want 3 'connected' lines, found ${#peers[@]}" || return
    for i in 2 0 1; do
        name=${fds[i]}
        exec {name}>&-
        assert_log "^server: ${peers[i]} closed$" || return
    done
    stop_server
    watched=$(stopped_after descriptors) || return
    ((watched > 0 && watched <= fd_a)) ||
        fail "with every client gone the last pselect watched $watched descriptors, want the listening socket's" \
            "alone (fewer than $fd_a, the lowest client's): drop_client must walk max_client_fd down past every" \
            "descriptor no longer in the set (clients left highest first, then lowest, then the middle one)"
}

@test "limit: a client that stops reading stalls every other client" {
    start_server server
    netkit slow-reader --expect-stall
    # Once the stuck client is gone (netkit resets it), service resumes.
    netkit echo --count 3 --max-size 65536
    stop_server
    # The stall is send_all asleep for client A, and A's reset ended it.
    local waits
    waits=$(stopped_after 'send waits')
    ((waits >= 1)) || fail "the server never waited in send_all (send waits: '$waits')"
    grep -qE 'send: (Connection reset by peer|Broken pipe), dropping' "$SERVER_ERR" ||
        fail "client A's reset did not end the blocked send: $(tail -n 5 "$SERVER_ERR")"
}

# The server is asleep in send_all's pselect() for a client whose buffers are full, with
# SIGTERM unblocked only there: the signal must end that wait, and the server says how many
# bytes of the echo it gave up on.
@test "SIGTERM while the server is stuck sending to a client that never reads: exit 0 within 2 s" {
    start_server server
    start_bg stuck netkit stuck --hold "$(awk -v k="$TIMEOUT_SCALE" 'BEGIN{print 6*k}')"
    local client=$BG_PID
    # The client says when the server has stopped taking its bytes (asleep in send_all).
    wait_file_match "$BATS_TEST_TMPDIR/stuck.out" '^stuck:' 10
    stop_server
    grep -qE 'fd [0-9]+: [1-9][0-9]* bytes not sent \(server stopping\)' "$SERVER_ERR" ||
        fail "SIGTERM did not end a send_all wait with bytes pending: $(tail -n 5 "$SERVER_ERR")"
    grep -qE 'closed \(server stopping\)' "$SERVER_ERR" || fail "no 'closed (server stopping)' line"
    wait_bg "$client" stuck
}

# stuck_clients N HOLD: N connections, each echoed one byte first (so the server has accepted
# all N and watches them), then filled in turn without reading until none takes more; prints
# `stuck: ...` and holds them HOLD seconds, then resets them. Started with start_bg (exec:
# BG_PID is then the client itself). A small SO_RCVBUF keeps their buffers alike in size.
stuck_clients() {
    exec python3 -c '
import selectors, socket, struct, sys, time
port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    socks.append(s)
for s in socks:
    s.sendall(b"x")
    assert s.recv(1) == b"x", "no echo"
    s.setblocking(False)
block, sent, quiet = b"z" * 65536, 0, time.monotonic()
sel = selectors.DefaultSelector()
for s in socks:
    sel.register(s, selectors.EVENT_WRITE)
deadline = time.monotonic() + 20
# Until no connection has taken a byte for 0.3 s: every buffer between us and the server is full.
while time.monotonic() - quiet < 0.3 and time.monotonic() < deadline:
    for key, _ in sel.select(0.05):
        try:
            sent += key.fileobj.send(block)
            quiet = time.monotonic()
        except BlockingIOError:
            pass
print("stuck: %d connections, sent %d bytes, reading none" % (n, sent), flush=True)
time.sleep(hold)
for s in socks:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()' "$PORT" "$1" "$2"
}

# Three clients that send and never read, all accepted first: the turn that sleeps in
# send_all for one of them has the others ready too. SIGTERM ends that wait (EINTR), and the
# scan goes on to the next ready client in the same turn: if its buffers are full as well,
# that wait must see the flag, because the signal that set it has been taken and no other
# will come. Whether a second client's buffers are full by then is the kernel's timing (about
# two runs in three here), so the test repeats the scenario (at most 8 times) until the
# server's log proves that a second wait happened after the stop: two clients given up on.
# The stop line's `send waits` are the waits that happened: the second client's send_all
# gives up without sleeping, so it counts none. strace (where it can attach) logs the
# server's pselect6() calls; each with a write set (`pselect6(N, NULL, [fd], ...`) is one.
@test "SIGTERM while the server is stuck sending to three clients that never read: exit 0 within 2 s" {
    local round gave_up=0 hold trace strace_pid= swaits waited
    hold=$(awk -v k="$TIMEOUT_SCALE" 'BEGIN{print 8*k}')
    for round in 1 2 3 4 5 6 7 8; do
        ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" start_server server
        trace=$BATS_TEST_TMPDIR/pselect$round.txt strace_pid=
        if command -v strace >/dev/null; then
            start_bg "strace$round" strace -p "$SERVER_PID" -e trace=pselect6 -e signal=none -s 0 -o "$trace"
            strace_pid=$BG_PID
            wait_file_match "$BATS_TEST_TMPDIR/strace$round.out" 'attached' 5 2>/dev/null ||
                { kill "$strace_pid" 2>/dev/null; wait "$strace_pid" 2>/dev/null; strace_pid=; }
        fi
        start_bg "stuck$round" stuck_clients 3 "$hold"
        wait_file_match "$BATS_TEST_TMPDIR/stuck$round.out" '^stuck:' 30
        stop_server
        kill "$BG_PID" 2>/dev/null
        wait "$BG_PID" 2>/dev/null || true
        gave_up=$(grep -cE 'fd [0-9]+: [1-9][0-9]* bytes not sent \(server stopping\)' "$SERVER_ERR")
        ((gave_up >= 1)) || fail "SIGTERM did not end a send_all wait with bytes pending: $(tail -n 5 "$SERVER_ERR")" || return
        if [[ -n $strace_pid ]]; then
            wait_bg "$strace_pid" "strace$round" || return
            swaits=$(stopped_after 'send waits') || return
            waited=$(grep -cE '^pselect6\([0-9]+, NULL, \[' "$trace") || true
            ((swaits == waited)) || fail "the stop line says $swaits send waits, strace saw $waited pselect() calls wait for a client's room ($gave_up clients given up on at the stop)" || return
        fi
        ((gave_up >= 2)) && break
    done
    ((gave_up >= 2)) || fail "in 8 runs the stop never found a second client with full buffers: the path was not forced"
    [[ -n $strace_pid ]] || harness_note "no strace here: the send waits were not counted against the server's calls"
}

# Each 16500-byte echo leaves the server in two send()s (serve_client reads 16 KiB at most);
# without TCP_NODELAY the 116-byte rest waits for the client's delayed ACK, about 40 ms each.
# The timing shows the cost, but TIMEOUT_SCALE stretches it on a busy machine until Nagle's
# 2 s fit: the option itself is read from inside the server, with netkit's pidfd_getfd copy
# of the server's descriptor.
@test "TCP_NODELAY: a reply that leaves in two pieces does not wait for a delayed ACK (the option read inside the server)" {
    local st=0 out
    start_server server
    out=$(netkit nodelay --pid "$SERVER_PID") || st=$?
    ((st == 0 || st == 3)) || fail "$out"
    ((st == 0)) || echo "# cannot look inside the server here ($out): the timing alone judges" >&3
    netkit round-trips --size 16500 --count 50 --within 0.5
    stop_server
}

# 1100 connections at once: descriptors up to about 1103. The first one that does not fit in
# an fd_set is 1024 (FD_SETSIZE); it and every later one must be turned away, and the
# server's own count of them must match its log and what the client saw. A descriptor that
# slipped into the set would corrupt what lies next to `clients` and `peers` (the client count,
# in the reference build) and its client would hang, neither served nor closed.
@test "limit: fds >= FD_SETSIZE are closed at once with a log line; the rest are served" {
    raise_nofile 1300
    start_server server
    assert_server_nofile 1300
    run netkit hold --conns 1100
    [[ $status -eq 1 ]] || fail "select server held 1100 connections: $output"
    local echoed
    echoed=$(sed -n 's/.* \([0-9]*\) echoed.*/\1/p' <<<"$output")
    ((echoed >= 1000 && echoed < 1100)) || fail "expected 1000..1099 echoed below the cap: $output"
    # netkit closed all 1100 before this echo connected, so the turn that serves it has seen
    # every one of them leave.
    netkit echo --count 3 --max-size 65536
    stop_server
    # Every client has left: the server must count none still connected.
    ! grep -E 'stopping: closing [0-9]+ client' "$SERVER_ERR" ||
        fail "every client has left, but the server's client count says otherwise"
    local away logged accepted low
    away=$(stopped_after 'turned away')
    accepted=$(stopped_after 'clients accepted')
    logged=$(grep -cE 'fd [0-9]+ >= FD_SETSIZE \(1024\), closing' "$SERVER_ERR")
    ((away == logged && away >= 1)) || fail "turned away: $away by the counter, $logged in the log"
    # The 1100, then netkit's 3 echo clients: every one accepted, and only those turned away
    # went unechoed.
    ((accepted == 1103)) || fail "the server accepted $accepted clients, want 1103"
    ((echoed == 1100 - away)) || fail "$echoed echoed, but the server turned away $away of 1100: the others hung"
    # Every descriptor turned away is >= 1024, and 1024 itself was the first.
    low=$(sed -n 's/.*fd \([0-9]*\) >= FD_SETSIZE.*/\1/p' "$SERVER_ERR" | sort -n | head -n1)
    ((low == 1024)) || fail "the lowest descriptor turned away is $low, want 1024"
}

# reset_in_close_wait: one client, echoed one byte; then the server is stopped (SIGSTOP) while the client sends 1000
# bytes and its FIN (the server's socket: CLOSE_WAIT, nothing read) and then resets; continued,
# the server reads those bytes (a reset keeps what was received) and its echo meets the error a
# reset in CLOSE_WAIT leaves: EPIPE, which raises SIGPIPE, whose default action ends a process.
reset_in_close_wait() {
    python3 - "$PORT" "$(dirname "$NETKIT")" "$SERVER_PID" <<'PY'
import glob, os, signal, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[3])
sys.path.insert(0, sys.argv[2])
import netkit
s = netkit.connect("127.0.0.1", port, timeout=5)
s.sendall(b"x")
if s.recv(1) != b"x":
    sys.exit("FAIL: no echo of the first byte")
me, stopped = s.getsockname()[1], []
pids = [pid] + [int(c) for f in glob.glob("/proc/%d/task/*/children" % pid) for c in open(f).read().split()]
try:
    for p in pids:
        os.kill(p, signal.SIGSTOP)
        stopped.append(p)
    for p in pids:
        netkit.wait_stopped(p)
    s.sendall(b"y" * 1000)
    s.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + netkit.scaled(5)
    while netkit.server_tcp_state(port, me) != "08":   # CLOSE_WAIT: our FIN is in
        if time.monotonic() > deadline:
            sys.exit("FAIL: the server's socket never reached CLOSE_WAIT (state %s)" % netkit.server_tcp_state(port, me))
        time.sleep(0.01)  # poll interval of a loop with a deadline
    unread = netkit.server_rx_queue(port, me)
    netkit.reset_close(s)
finally:
    for p in stopped:
        os.kill(p, signal.SIGCONT)
print("ok: reset in CLOSE_WAIT with %s bytes unread by the server" % unread)
PY
}

# The contract: SIGPIPE never kills a server; a failed send drops that one client with a log
# line. The server reads the bytes of a client that reset in CLOSE_WAIT and its send() meets
# EPIPE: it logs `send: Broken pipe, dropping` and serves the next client.
@test "SIGPIPE never kills it: a client resets in CLOSE_WAIT with bytes unread, the echo's send meets EPIPE, the client is dropped with a log line and the next is served" {
    start_server server
    reset_in_close_wait || fail "the scenario could not be arranged" || return
    assert_log '^server: fd [0-9]+: send: Broken pipe, dropping$' || {
        ! has_exited "$SERVER_PID" || fail "the server died when its send met EPIPE: SIGPIPE is not ignored"
        return 1
    }
    netkit echo --count 2 --max-size 4096
    stop_server
}

@test "matrix: server" {
    start_matrix_server server
    assert_matrix_row 02_select/server
    stop_server
}

@test "accepted sockets are close-on-exec (accept4 with SOCK_CLOEXEC)" {
    start_server server
    scenario_cloexec
    stop_server
}

# scaled_s SECONDS: SECONDS stretched by TIMEOUT_SCALE, for client options.
scaled_s() {
    awk -v s="$1" -v k="$TIMEOUT_SCALE" 'BEGIN { print s * k }'
}

# --- behaviour pinned at its boundaries (options, the port, the backlog, signals, limits) -----

# bounded CMD...: CMD, ended with SIGTERM after 5 s (scaled; status 124 then): a command line
# the server wrongly accepts starts a server that would otherwise never return.
bounded() {
    timeout "$(scaled_s 5)" "$@"
}

# Options at their boundaries. `-H 256.0.0.1` is not an address: a command line the parser
# accepted then fails in listen_on with status 1, one it refused exits 2 before that.
@test "options at their edges: -p 0..65535; usage errors on stderr, exit 2" {
    local bin arg
    bin=$(stage_bin server)
    for arg in "-p 65536" "-p 99999999999999999999" "-p -1" "-p 12x" "--max-output 1" "extra"; do
        run --separate-stderr bounded "$bin" $arg
        [[ $status -eq 2 ]] || fail "server $arg exited $status, want 2" || return
        [[ -z $output ]] || fail "server $arg wrote to stdout: $output" || return
        [[ $stderr == *usage:* ]] || fail "server $arg: no usage on stderr: $stderr" || return
    done
    # A port is digits only: strtol alone would take an empty word, a sign or leading blanks.
    for arg in "" "+1" " 1" "0x10"; do
        run --separate-stderr bounded "$bin" -p "$arg"
        [[ $status -eq 2 && -z $output && $stderr == *"bad port '$arg'"* ]] ||
            fail "server -p '$arg' exited $status, want 2 with \"bad port '$arg'\" on stderr: $stderr" || return
    done
    run --separate-stderr bounded "$bin" -p
    [[ $status -eq 2 && $stderr == *"missing value"* ]] || fail "-p with no value: status $status: $stderr"
    for arg in "-p 65535" "-p 0"; do
        run --separate-stderr bounded "$bin" $arg -H 256.0.0.1
        [[ $status -eq 1 ]] || fail "server $arg -H 256.0.0.1 exited $status, want 1 (options accepted, no such address): $stderr" || return
    done
    # The long spellings take their values too: --port checked as -p is, --host used as -H.
    run --separate-stderr bounded "$bin" --port 65536
    [[ $status -eq 2 && $stderr == *"bad port '65536'"* ]] || fail "--port 65536: status $status, want 2 (bad port): $stderr" || return
    run --separate-stderr bounded "$bin" --port 0 --host 256.0.0.1
    [[ $status -eq 1 && $stderr == *256.0.0.1* ]] || fail "--port 0 --host 256.0.0.1: status $status, want 1 (options accepted, no such address): $stderr" || return
    run --separate-stderr bounded "$bin" --help
    [[ $status -eq 0 && $output == usage:* && -z $stderr ]] || fail "--help: status $status, stdout '$output', stderr '$stderr'"
}

# time_wait_on PORT: true once a connection on local port PORT is in TIME_WAIT (06).
time_wait_on() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" 'NR > 1 && substr($2, length($2) - 4) == p && $4 == "06" { f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6
}

# The server closes first when it stops with a client connected, so that connection waits
# in TIME_WAIT on the server's port for a minute. Without SO_REUSEADDR, bind() on that port
# fails with "Address already in use" until it is gone.
@test "a restarted server takes its port back at once, with the old connection in TIME_WAIT (SO_REUSEADDR)" {
    start_server server
    local port=$PORT deadline
    scenario_sigterm
    deadline=$(($(now_ms) + $(scaled_ms 3)))
    until time_wait_on "$port"; do
        (($(now_ms) < deadline)) || fail "no connection in TIME_WAIT on port $port: the test proved nothing" || return
        sleep 0.02   # poll interval of a loop with a deadline
    done
    start_server server -p "$port"
    [[ $PORT == "$port" ]] || fail "restarted on port $PORT, asked for $port"
    netkit echo --count 2 --max-size 4096
    stop_server
}

# The backlog is what the kernel queues for a server that is not accepting right now (busy
# with a turn, or here stopped): listen_on asks for SOMAXCONN. 100 clients connect at once
# while the server is stopped; the kernel must complete every one.
@test "the listen backlog: 100 clients connecting while the server accepts nobody are all queued" {
    start_server server
    netkit backlog --pid "$SERVER_PID" --conns 100
    stop_server
}

@test "-H ::1: listens on IPv6, prints listening on [::1]:PORT, logs [::1]:PORT clients, echoes" {
    python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null ||
        skip "no IPv6 loopback on this machine"
    start_server server -H ::1
    grep -qE '^listening on \[::1\]:[0-9]+$' "$SERVER_OUT" || fail "listening line: $(cat "$SERVER_OUT")"
    netkit echo --host ::1 --count 3 --max-size 65536
    assert_log '^server: \[::1\]:[0-9]+ connected \(fd [0-9]+\)$'
    stop_server
}

# SIGINT is a stop signal as SIGTERM is: blocked outside the wait, or it can land in the
# window. The shim's verdict decides; a run where the signal missed the delay (a busy machine
# can hold the test back past it) proves nothing and is tried again, at most 3 times.
@test "SIGINT that lands just before the first wait still stops it" {
    local try
    for try in 1 2 3; do
        start_server_delayed server
        stop_server INT
        grep -q '^delay-shim: a signal arrived during the delay' "$SERVER_ERR" && return 0
    done
    fail "in 3 runs the SIGINT never landed inside the delayed wait"
}

# Out of descriptors, accept4() fails with EMFILE at once for as long as a client waits in
# the backlog: accept_client pauses 100 ms each time instead of spinning (04 refuses the
# client; the stop signals stay blocked in the pause, see accept_client). 32 descriptors (soft and hard: nothing to raise): 0-2 and the listening socket
# leave 28 for clients, and the flood of 100 overflows them. CPU is measured over one second
# of it; then the flood leaves and a new client must be served.
@test "out of descriptors: the server pauses instead of spinning, and serves again once clients leave" {
    raise_nofile 300
    SERVER_NOFILE=32 start_server server
    start_bg flood python3 "$NETKIT" flood --port "$PORT" --conns 100 --hold "$(scaled_s 3)"
    local flood=$BG_PID t0 t1
    wait_file_match "$BATS_TEST_TMPDIR/flood.out" '^flood: 100 connections opened' 10
    assert_log 'accept: Too many open files' 5
    # Each failed accept4() logs one line, then pauses 100 ms: in a window of W ms there are at
    # most W/100 + 1 such lines, however slow the machine (a pause never ends early but for a
    # signal). A pause in the wrong unit (100 us) logs hundreds; the CPU bound may not see it.
    local ms0 ms1 n0 n1
    ms0=$(now_ms)
    n0=$(grep -c 'accept: Too many open files' "$SERVER_ERR")
    t0=$(cpu_ticks "$SERVER_PID")
    sleep 1   # the measurement window itself, not a readiness wait
    t1=$(cpu_ticks "$SERVER_PID")
    n1=$(grep -c 'accept: Too many open files' "$SERVER_ERR")
    ms1=$(now_ms)
    ! has_exited "$flood" || fail "the flood client ended before the measurement window did: it measured nothing" || return
    wait_bg "$flood" flood
    ((n1 - n0 <= (ms1 - ms0) / 100 + 2)) ||
        fail "$((n1 - n0)) failed accepts logged in $((ms1 - ms0)) ms out of descriptors: a 100 ms pause allows $(((ms1 - ms0) / 100 + 1))" || return
    (((t1 - t0) < 30)) || fail "server used $((t1 - t0)) of 100 CPU ticks in 1 s while out of descriptors: it spins"
    netkit echo --count 3 --max-size 65536
    stop_server
    # A failed accept ends the turn's accepts (the clients it has come next): at most one
    # failure, and one pause, per pselect() turn. Trying again in the same turn would pause
    # 100 ms up to 64 times, with every client and SIGTERM waiting.
    local failed turns
    failed=$(grep -c 'accept: Too many open files' "$SERVER_ERR")
    turns=$(stopped_after pselect) || return
    ((failed <= turns)) || fail "$failed failed accepts logged in $turns pselect turns: a turn went on accepting after accept4() failed"
}

# The stop line is how the other tests prove a path ran, so its counters are pinned here:
# 200 messages of 64 bytes, one at a time, each alone in the socket: one pselect wake and one
# recv per message, one send each (the kernel takes 64 bytes whole), the EOF read, no send
# wait; plus the turn that accepted the client and the one SIGTERM ended.
@test "the stop line counts what ran: one recv and one send per small message, no send wait" {
    start_server server
    netkit round-trips --size 64 --count 200 --within 20
    stop_server
    local waits recvs sends swaits accepted away
    waits=$(stopped_after pselect) && recvs=$(stopped_after recv) && sends=$(stopped_after 'send calls') &&
        swaits=$(stopped_after 'send waits') && accepted=$(stopped_after 'clients accepted') &&
        away=$(stopped_after 'turned away') || return
    ((recvs >= 201 && recvs <= 206)) || fail "$recvs recv calls for 200 messages and an EOF (want 201, a few more at most)"
    ((sends == recvs - 1)) || fail "$sends send calls for $recvs recv calls: want one per recv that returned bytes"
    ((waits >= recvs + 2 && waits <= recvs + 12)) || fail "$waits pselect calls for $recvs recv calls (want one per recv, the accept and the stop)"
    ((swaits == 0 && accepted == 1 && away == 0)) || fail "send waits $swaits, accepted $accepted, turned away $away: want 0, 1, 0"
}

# send_all's short counts: a client that reads slowly through a small window makes the
# kernel take less than offered (MSG_DONTWAIT returns a short count, or EAGAIN and a wait in
# pselect), and the rest must go out from where the last send stopped. Every byte is checked;
# the stop line proves the path ran: more send calls than reads, and send waits.
@test "a slow reader gets every byte, through short sends and send waits (send_all's offset)" {
    start_server server
    netkit slow-drain --size 4194304 --rcvbuf 4096 --piece 16384 --pause-ms 1
    stop_server
    local recvs sends swaits
    recvs=$(stopped_after recv) && sends=$(stopped_after 'send calls') && swaits=$(stopped_after 'send waits') || return
    ((swaits > 0)) || fail "no send wait: the kernel never refused bytes (the test proved nothing)"
    ((sends > recvs)) || fail "$sends send calls for $recvs reads: no send came back short (the test proved nothing)"
}

# The stop line's `send calls` are every send() the server made, "however many bytes each
# took" (stats in server.c): the ones the kernel took whole, the short ones, and the ones that
# said EAGAIN before a send wait. The test above proves from them that short sends and waits
# happened, which a counter that skips EAGAIN (or counts a send only once its bytes are
# taken) would still let through: here strace, attached to the server, logs the sendto()
# calls it really made. The client sends without reading until that log shows a send that
# said EAGAIN (the server's buffers for it are full: the path is forced, whatever the load),
# then reads every byte back, checking each. (LeakSanitizer cannot run in a traced process:
# a sanitized server runs without it here; the other tests check for leaks.)
@test "a slow reader gets every byte, and the stop line counts every send() call, however many bytes it took (EAGAIN ones too: strace counts them)" {
    command -v strace >/dev/null || skip "no strace here"
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" start_server server
    local log=$BATS_TEST_TMPDIR/sendto.txt deadline
    start_bg strace strace -p "$SERVER_PID" -e trace=sendto -e signal=none -s 0 -o "$log"
    local strace_pid=$BG_PID
    deadline=$(($(now_ms) + $(scaled_ms 5)))
    until grep -q 'attached' "$BATS_TEST_TMPDIR/strace.out" 2>/dev/null; do
        if has_exited "$strace_pid" || (($(now_ms) > deadline)); then
            stop_server
            skip "strace cannot attach to the server here: $(cat "$BATS_TEST_TMPDIR/strace.out")"
        fi
        sleep 0.02   # poll interval of a loop with a deadline
    done
    python3 - "$PORT" "$log" "$TIMEOUT_SCALE" <<'PY' || return
import random, selectors, socket, sys, time
port, log, scale = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
size = 16 << 20   # more than the server's send buffer can grow to (tcp_wmem's 4 MiB)
payload = random.Random(2).randbytes(size)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
s.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(s, selectors.EVENT_WRITE)
sent, got, refused = 0, bytearray(), False
with open(log) as f:
    deadline = time.monotonic() + 10 * scale
    while not refused:   # 1. send, reading nothing, until the server's send() says EAGAIN
        if time.monotonic() > deadline or sent == size:
            sys.exit("FAIL: %d bytes sent, none read, and the server's send() never said EAGAIN" % sent)
        if sel.select(0.05) and sent < size:
            try:
                sent += s.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
        refused = "EAGAIN" in f.read()
sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
deadline = time.monotonic() + 30 * scale
while len(got) < size:   # 2. read it all back, sending the rest
    if time.monotonic() > deadline:
        sys.exit("FAIL: %d of %d bytes back (%d sent)" % (len(got), size, sent))
    for _, ev in sel.select(0.2):
        if ev & selectors.EVENT_WRITE:
            try:
                sent += s.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
            if sent == size:
                sel.modify(s, selectors.EVENT_READ)
        if ev & selectors.EVENT_READ:
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                sys.exit("FAIL: EOF after %d of %d bytes" % (len(got), size))
            off = len(got)
            got += chunk
            if got[off:] != payload[off:len(got)]:
                bad = next(i for i in range(off, len(got)) if got[i] != payload[i])
                sys.exit("FAIL: the echo differs at offset %d" % bad)
s.close()
print("ok: %d bytes echoed, every byte checked" % size)
PY
    stop_server
    wait_bg "$strace_pid" strace || return
    local sends swaits calls eagain short
    sends=$(stopped_after 'send calls') && swaits=$(stopped_after 'send waits') || return
    # sendto(4, ""..., LEN, MSG_DONTWAIT, NULL, 0) = N, or = -1 EAGAIN (...)
    calls=$(grep -c '^sendto(' "$log") || true
    eagain=$(grep -c '^sendto(.* = -1 EAGAIN' "$log") || true
    short=$(sed -nE 's/^sendto\(.*, ([0-9]+), [^,]*, NULL, 0\) = ([0-9]+)$/\1 \2/p' "$log" | awk '$2 < $1 { n++ } END { print n + 0 }')
    echo "# $calls sendto calls ($short short, $eagain EAGAIN); the stop line: $sends send calls, $swaits send waits" >&3
    ((sends == calls)) || fail "the stop line says $sends send calls, strace saw $calls ($short short, $eagain EAGAIN): 'send calls' counts every send(), however many bytes each took" || return
    ((swaits == eagain)) || fail "the stop line says $swaits send waits for $eagain sends that said EAGAIN: one wait follows each"
}

# The stop closes every client still connected, and says how many: client_count is kept by
# add_client and drop_client. Three clients are echoed once each, one leaves, then SIGTERM:
# `stopping: closing 2 clients`, and both see EOF. Then a server with one client:
# `stopping: closing 1 client`.
@test "SIGTERM closes the clients still connected and says how many: 2 of 3 after one left, then 1 alone" {
    local n want i name fds reply line st
    for n in 3 1; do
        start_server server
        connect_echoed "$n" || return
        want="stopping: closing 1 client"
        if ((n == 3)); then
            name=${fds[1]}
            exec {name}>&-
            assert_log '^server: 127\.0\.0\.1:[0-9]+ closed$' || return
            fds=("${fds[0]}" "${fds[2]}")
            want="stopping: closing 2 clients"
        fi
        stop_server || return
        line=$(grep 'stopping: closing' "$SERVER_ERR")
        [[ $line == "server: $want" ]] || fail "the stop logged '$line', want 'server: $want'" || return
        for name in "${fds[@]}"; do
            st=0
            read -r -t "$(scaled_s 2)" reply <&"$name" || st=$?
            exec {name}>&-
            # read's status: 1 at EOF, above 128 when it timed out.
            ((st == 1)) && [[ -z $reply ]] || fail "a client still connected at the stop read '$reply' (read status $st), want EOF" || return
        done
    done
}

# One turn accepts at most ACCEPTS_PER_TURN (64) clients, then serves the ready ones: a flood
# of newcomers must not keep the loop from the clients it has. X is served once, then the
# server is stopped (SIGSTOP) while 150 clients complete their handshake in the backlog and X
# closes; continued, the first turn accepts 64 of them and then serves X's EOF: the log has
# 64 `connected` lines between X's and its `closed`, no more, no fewer. (Accepting until EAGAIN would
# take all 150 first.) Then every newcomer is echoed.
@test "a turn accepts at most 64 clients: 150 waiting in the backlog do not hold back a client that is already served" {
    start_server server
    python3 - "$PORT" "$SERVER_PID" "$(dirname "$NETKIT")" "$SERVER_ERR" <<'PY' || fail "the backlog test failed" || return
import os, re, select, socket, sys, time
port, pid, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4]
sys.path.insert(0, sys.argv[3])
import netkit
n = 150
netkit.raise_nofile(n + 64)
x = socket.create_connection(("127.0.0.1", port), timeout=netkit.scaled(5))
x.sendall(b"x")
if x.recv(1) != b"x":
    sys.exit("FAIL: X got no echo")
xport = x.getsockname()[1]
socks, stopped = [], False
try:
    os.kill(pid, 19)  # SIGSTOP
    stopped = True
    netkit.wait_stopped(pid)
    socks = [netkit.nonblocking_connect("127.0.0.1", port) for _ in range(n)]
    deadline = time.monotonic() + netkit.scaled(5)
    ports = set()
    while True:
        for s in socks:
            try:
                ports.add(s.getsockname()[1])
            except OSError:
                pass
        if netkit.server_established(port, ports) >= n:
            break
        if time.monotonic() > deadline:
            sys.exit("FAIL: the kernel did not complete %d connections to the stopped server" % n)
        time.sleep(0.01)  # poll interval of a loop with a deadline
    x.close()   # its EOF waits, readable, with the 150 in the backlog
    for s in socks:
        s.send(b"x")
    os.kill(pid, 18)  # SIGCONT
    stopped = False
    waiting = set(socks)
    deadline = time.monotonic() + netkit.scaled(10)
    while waiting and time.monotonic() < deadline:
        r, _, _ = select.select(list(waiting), [], [], 0.1)
        for s in r:
            if s.recv(1) != b"x":
                sys.exit("FAIL: a newcomer got EOF or a wrong byte instead of its echo")
            waiting.discard(s)
    if waiting:
        sys.exit("FAIL: %d of %d newcomers not echoed" % (len(waiting), n))
finally:
    if stopped:
        os.kill(pid, 18)
    for s in socks:
        s.close()
lines = open(log).read().splitlines()
xname = "127.0.0.1:%d" % xport
start = next(i for i, l in enumerate(lines) if l.startswith("server: %s connected (fd" % xname))
end = next((i for i, l in enumerate(lines) if l == "server: %s closed" % xname), None)
if end is None:
    sys.exit("FAIL: no 'server: %s closed' line" % xname)
between = sum(1 for l in lines[start + 1:end] if re.fullmatch(r"server: \S+ connected \(fd \d+\)", l))
# 150 were waiting when the turn began: it takes as many as a turn may, 64, not fewer (a turn
# that accepts one leaves the backlog to drain one client per pselect), and not more.
if between != 64:
    sys.exit("FAIL: %d clients accepted before X's EOF was served, want 64 (one turn's accepts, with 150 waiting)" % between)
print("ok: %d newcomers accepted before X's EOF was served, then all %d echoed" % (between, n))
PY
    stop_server
}
