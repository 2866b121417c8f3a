#!/usr/bin/env bats
# 08_framework: chat_server --redis, chat nodes joined through Redis pub/sub (issue 17; notes:
# README.md, section 9, "chat_server --redis"). A real redis-server on an ephemeral loopback
# port, started and stopped by each test (skipped with a message where it is not installed); three nodes; the scenarios
# are tests/lib/cluster.py's (every byte a client receives compared). Short name expiries
# (--name-ttl) keep the file fast; the production default (15 s) is in the notes.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"
bats_require_minimum_version 1.5.0

CLUSTER="$KIT_ROOT/tests/lib/cluster.py"

setup() {
    mkdir -p "$BATS_TEST_TMPDIR/examples"
}

# free_port: a TCP port on 127.0.0.1 nobody listens on now (the kernel's pick, released).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# redis_start: redis-server on a free loopback port, no persistence; RP and REDIS_PID set once
# it is ready (its "Ready to accept connections" line).
redis_start() {
    command -v redis-server >/dev/null || skip "redis-server is not installed (apt-get install redis-server)"
    RP=$(free_port)
    start_bg redis redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no
    REDIS_PID=$BG_PID
    wait_file_match "$BATS_TEST_TMPDIR/redis.out" 'Ready to accept connections'
}

# redis_stop: the test's redis-server (if it still runs: a scenario may have shut it down).
redis_stop() {
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
}

# node NAME TTL_MS [ARGS...]: chat_server --redis on the test's Redis as node NAME; waits for
# its `cluster: room whole` line. Sets NAME_PID, NAME_PORT, NAME_ERR; adds to PORTS and NODES.
node() {
    local name=$1 ttl=$2 bin
    bin=$(stage_bin examples/chat_server)
    HARNESS_SUBST="$name=$bin" start_server "$name" --redis "127.0.0.1:$RP" --node "$name" \
        --name-ttl "$ttl" "${@:3}" || return
    printf -v "${name}_PID" %s "$SERVER_PID"
    printf -v "${name}_PORT" %s "$PORT"
    printf -v "${name}_ERR" %s "$SERVER_ERR"
    PORTS+="${PORTS:+,}$PORT"
    NODES+="${NODES:+,}$name"
    wait_file_match "$SERVER_ERR" 'cluster: room whole'
}

# stop_node NAME: stop_server on node NAME (exit 0 within 2 s, no sanitizer report).
stop_node() {
    local v=${1}_PID e=${1}_ERR
    SERVER_PID=${!v}
    SERVER_ERR=${!e}
    stop_server TERM
}

# ccount NODE NAME: the number before NAME in NODE's `cluster: stopped after ...` line.
ccount() {
    local e=${1}_ERR line n
    line=$(grep -m1 'cluster: stopped after ' "${!e}") || fail "$1: no 'cluster: stopped after' line" || return
    n=$(sed -n "s/.*[^0-9]\([0-9][0-9]*\) $2[,;]*.*/\1/p" <<<"$line")
    [[ -n $n ]] || fail "$1: no '$2' counter in: $line" || return
    echo "$n"
}

# cluster SUBCMD ARGS...: tests/lib/cluster.py against the running nodes.
cluster() {
    python3 "$CLUSTER" --ports "$PORTS" --nodes "$NODES" "$@"
}

@test "cluster: --redis, --node and --name-ttl: bad values exit 2 with the usage, --help names them" {
    local bin bad
    bin=$(stage_bin examples/chat_server)
    run --separate-stderr "$bin" --help
    [[ $status -eq 0 && $output == *"--redis HOST:PORT"* && $output == *"--node NAME"* &&
        $output == *"--name-ttl MS"*"default 15000"* ]] || fail "--help: $output" || return
    for bad in "--redis" "--redis 127.0.0.1" "--redis :6379" "--redis 127.0.0.1:0" \
        "--redis 127.0.0.1:70000" "--redis localhost:6379" "--redis [::1]" "--node a.b" "--node 12345678901234567" "--name-ttl 299" \
        "--name-ttl 3600001" "--name-ttl x"; do
        # shellcheck disable=SC2086  # the words of BAD are separate arguments
        run --separate-stderr timeout "$(awk -v k="$TIMEOUT_SCALE" 'BEGIN { print 5 * k }')" "$bin" -p 0 $bad
        [[ $status -eq 2 && $stderr == *"usage: chat_server"* && -z $output ]] ||
            fail "chat_server $bad: status $status (want 2), stdout '$output', stderr '$stderr'" || return
    done
}

@test "cluster: a line reaches every user on every node exactly once, in its sender's order, byte for byte; /who from any node lists everyone" {
    redis_start
    local n
    # nb with two io threads: the cluster runs in the main thread whatever -t says.
    node na 30000 && node nb 30000 -t 2 && node nc 30000 || return
    run cluster fanout --per-node 2 --lines 60 --timeout 10
    [[ $output == ok:* ]] || fail "$output" || return
    for n in na nb nc; do stop_node "$n" || return; done
    redis_stop
    # Each node delivered the other four members' lines (4 x 60) as remote lines, and skipped
    # its own 2 x 60 when they came back from Redis (it had delivered them itself).
    for n in na nb nc; do
        [[ $(ccount "$n" "remote lines") == 240 ]] || fail "$n: remote lines $(ccount "$n" "remote lines"), want 240" || return
        (($(ccount "$n" "own skipped") >= 120)) || fail "$n: own skipped $(ccount "$n" "own skipped"), want at least 120" || return
    done
}

@test "cluster: a name is unique across nodes (any case, at once on two nodes: one winner); freed at once by /quit, by a pending claimer's leaving and by a rename; every /who has the new names" {
    redis_start
    local n
    for n in na nb nc; do node "$n" 30000 || return; done
    run cluster names --redis-port "$RP" --ttl-ms 30000 --timeout 5
    [[ $output == ok:* ]] || fail "$output" || return
    # d's claim of carol was answered after d had left (the path the scenario means to force).
    grep -q 'cluster: carol granted to a member that left: released' "$na_ERR" ||
        fail "na never released a claim granted after its member left (d left before Redis answered?)" || return
    for n in na nb nc; do stop_node "$n" || return; done
    redis_stop
    # Every /nick that passed the local checks went to Redis: alice, eve twice, the races'
    # winners (and losers that had not heard of the winner yet), alice again, carol.
    (($(ccount na claims) + $(ccount nb claims) + $(ccount nc claims) >= 10)) ||
        fail "claims: na $(ccount na claims), nb $(ccount nb claims), nc $(ccount nc claims)"
}

@test "cluster: Redis restarted mid-test: split told once, local delivery never stops, whole again and cross-node lines within 5 s, names claimed again (a double name: Redis's holder keeps it)" {
    redis_start
    local n ttl
    ttl=$(scaled_ms 3)
    for n in na nb nc; do node "$n" "$ttl" || return; done
    run cluster outage --redis-port "$RP" --gone-s 1.5 --timeout 5
    [[ $output == ok:* ]] || fail "$output" || return
    wait "$REDIS_PID" 2>/dev/null || true   # shut down by the scenario
    for n in na nb nc; do stop_node "$n" || return; done
    for n in na nb nc; do
        local e=${n}_ERR fails
        # The split lasted several reconnect attempts, and was told once all the same.
        fails=$(grep -c 'connect failed' "${!e}")
        ((fails >= 2)) || fail "$n: $fails failed reconnect attempts during the outage, want at least 2" || return
        [[ $(ccount "$n" splits) == 2 && $(ccount "$n" wholes) == 2 ]] ||
            fail "$n: splits $(ccount "$n" splits), wholes $(ccount "$n" wholes): want 2 (the outage, and Redis stopped at the end) and 2" || return
    done
    [[ $(($(ccount na lost) + $(ccount nc lost))) == 1 ]] || fail "lost names: na $(ccount na lost), nc $(ccount nc lost): want 1 in all"
}

@test "cluster: Redis drops the subscribers (as it drops a slow one): split, re-subscribed, whole again within 5 s" {
    redis_start
    local n
    for n in na nb; do node "$n" 30000 || return; done
    run cluster subkill --redis-port "$RP" --timeout 5
    [[ $output == ok:* ]] || fail "$output" || return
    for n in na nb; do stop_node "$n" || return; done
    redis_stop
    for n in na nb; do
        local e=${n}_ERR
        [[ $(grep -c 'cluster: subscribed to chat:room' "${!e}") == 2 ]] || fail "$n: not subscribed twice" || return
    done
}

@test "cluster: a slow reader dropped by its node's cap is announced '* NAME dropped (too slow)' on the other nodes too" {
    redis_start
    node na 30000 --max-output 65536 --soft-seconds 0 && node nb 30000 || return
    run cluster slowdrop --lines 5000 --size 1000 --timeout 5
    [[ $output == ok:* ]] || fail "$output" || return
    stop_node na && stop_node nb || return
    redis_stop
    # The drop was the library's cap (the path the test means), on na.
    grep -q 'dropped (too slow)' "$na_ERR" || fail "na did not log a drop as too slow"
}

@test "cluster: names refreshed and nodes heard for twice the ttl; a node killed with SIGKILL: its users' '* NAME left' reach the others within the name ttl and a beat; its names expire" {
    redis_start
    local n ttl
    ttl=$(scaled_ms 1.5)
    for n in na nb nc; do node "$n" "$ttl" || return; done
    # Silent for ttl, judged at the next beat (ttl/3), and some room for the loaded machine.
    run cluster death --redis-port "$RP" --pid "$nc_PID" --signal KILL --within-ms $((ttl + ttl / 3 + $(scaled_ms 1))) --ttl-ms "$ttl" --check-refresh --timeout 5
    [[ $output == ok:* ]] || fail "$output" || return
    # Its claimed name expires within the ttl of its last refresh.
    local deadline v
    deadline=$(($(now_ms) + ttl + $(scaled_ms 1)))
    while v=$(python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import cluster; print(cluster.redis_cmd(int(sys.argv[2]), "GET", "chat:name:zed"))' \
        "$KIT_ROOT/tests/lib" "$RP") && [[ $v != None ]]; do
        (($(now_ms) < deadline)) || fail "chat:name:zed still '$v' in Redis after the ttl" || return
        sleep 0.05   # poll interval of a loop with a deadline
    done
    for n in na nb; do stop_node "$n" || return; done
    redis_stop
    [[ $(ccount na expired) == 1 && $(ccount nb expired) == 1 ]] || fail "expired: na $(ccount na expired), nb $(ccount nb expired)"
}

@test "cluster: a node stopped with SIGTERM: its users left for the others at once, long before the ttl" {
    redis_start
    local n
    for n in na nb nc; do node "$n" 60000 || return; done
    run cluster death --redis-port "$RP" --pid "$nc_PID" --signal TERM --within-ms "$(scaled_ms 2)" --ttl-ms 60000 --timeout 5
    [[ $output == ok:* ]] || fail "$output" || return
    for n in nc na nb; do stop_node "$n" || return; done
    redis_stop
    [[ $(ccount na expired) == 0 ]] || fail "na: expired $(ccount na expired): the node's goodbye was not heard"
}

@test "cluster: a split longer than the name ttl: nobody is judged silent while nobody can be heard, a /msg to another node refused; whole again, a node started meanwhile taken in silently, /who lists all, lines cross" {
    redis_start
    local n ttl
    ttl=$(scaled_ms 1)
    for n in na nb; do node "$n" "$ttl" || return; done
    run cluster longsplit --redis-port "$RP" --ttl-ms "$ttl" --timeout 5 \
        --node-bin "$(stage_bin examples/chat_server)" --node-log "$BATS_TEST_TMPDIR/nthird.err"
    [[ $output == ok:* ]] || fail "$output" "the third node's log:" "$(tail -n 5 "$BATS_TEST_TMPDIR/nthird.err")" || return
    harness_note "$output"
    ! grep -q -E "$SANITIZER_RE" "$BATS_TEST_TMPDIR/nthird.err" || fail "the third node:" "$(grep -A 12 -m1 -E "$SANITIZER_RE" "$BATS_TEST_TMPDIR/nthird.err")" || return
    grep -q 'cluster: stopped after ' "$BATS_TEST_TMPDIR/nthird.err" || fail "the third node did not stop cleanly:" "$(tail -n 5 "$BATS_TEST_TMPDIR/nthird.err")" || return
    wait "$REDIS_PID" 2>/dev/null || true   # shut down by the scenario
    for n in na nb; do stop_node "$n" || return; done
    for n in na nb; do
        # The split really lasted past the ttl: beats came and found the room split.
        [[ $(ccount "$n" expired) == 0 && $(ccount "$n" splits) -ge 1 ]] ||
            fail "$n: expired $(ccount "$n" expired) (want 0), splits $(ccount "$n" splits)" || return
    done
}
