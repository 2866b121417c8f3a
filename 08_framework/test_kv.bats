#!/usr/bin/env bats
# 08_framework: examples/kv_server on the RESP2 codec (README.md, section 9). The codec's unit
# test (lib/resp_test: every split point, limits at and one past, malformed input, the reply
# builder); then a raw-socket client (tests/lib/kv.py) that checks every reply byte for byte
# (the command table, errors included, as redis-server 7.0 answers it; pipelined requests cut
# at random points; expiry before and after its time, cancelled by an overwrite; the request
# limits at the boundary and one past, the bad client closed alone); then the real clients:
# redis-cli (each reply as it prints it) and redis-benchmark (-P 16 -r 100000, no error, no
# warning). At -t 0 and with io threads; every path proved from the server's stop lines.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"
bats_require_minimum_version 1.5.0

KVPY="$KIT_ROOT/tests/lib/kv.py"

# start_server names its logs after the binary: examples/kv_server.PID.out needs the folder.
setup() {
    mkdir -p "$BATS_TEST_TMPDIR/examples"
}

# kv SUBCMD [ARGS...]: the raw-socket client against the running server.
kv() {
    python3 "$KVPY" "$1" --port "$PORT" "${@:2}"
}

# counter NAME: the number after NAME in the library's stop line (call after stop_server).
counter() {
    local line n
    line=$(grep -m1 ' stopped: accepted ' "$SERVER_ERR") || fail "no 'stopped: accepted ...' line in the server's stderr" || return
    n=$(sed -n "s/.*[:,] $1 \([0-9][0-9]*\)\(,.*\)\{0,1\}$/\1/p" <<<"$line")
    [[ -n $n ]] || fail "no '$1' counter in: $line" || return
    echo "$n"
}

# kv_counter NAME: the number before NAME in kv_server's own stop line (`kv: K keys, C
# commands, E expired`), e.g. `kv_counter keys`.
kv_counter() {
    local line n
    line=$(grep -m1 ' kv: [0-9]* keys, ' "$SERVER_ERR") || fail "no 'kv: K keys, ...' line in the server's stderr" || return
    n=$(sed -n "s/.* \([0-9][0-9]*\) $1\(,.*\)\{0,1\}$/\1/p" <<<"$line")
    [[ -n $n ]] || fail "no '$1' counter in: $line" || return
    echo "$n"
}

need_redis_cli() {
    command -v redis-cli >/dev/null || skip "redis-cli is not installed (apt-get install redis-tools)"
}

need_redis_benchmark() {
    command -v redis-benchmark >/dev/null || skip "redis-benchmark is not installed (apt-get install redis-tools)"
}

# scaled_s SECONDS: SECONDS stretched by TIMEOUT_SCALE, for `timeout` and client options.
scaled_s() {
    awk -v s="$1" -v k="$TIMEOUT_SCALE" 'BEGIN { print s * k }'
}

# --- the codec ---------------------------------------------------------------------------

@test "kv: unit: resp_test (every split point, limits at and one past, malformed input, replies)" {
    local bin
    bin=$(stage_bin lib/resp_test)
    [[ -x $bin ]] || fail "no binary $bin: build it with: make -C $STAGE_DIR${SAN:+ SAN=$SAN}" || return
    run timeout "$(scaled_s 120)" "$bin"
    [[ $status -eq 0 ]] || fail "resp_test exited $status:" "$(grep -v '^ok' <<<"$output" | tail -n 30)" || return
    [[ $output == *" checks, 0 failed"* ]] || fail "resp_test printed no summary: $output" || return
}

# --- the contract ------------------------------------------------------------------------

@test "kv: --help exits 0 with the usage on stdout; a bad option exits 2 with the usage on stderr" {
    local bin
    bin=$(stage_bin examples/kv_server)
    run --separate-stderr "$bin" --help
    [[ $status -eq 0 && $output == usage:\ kv_server* && -z $stderr ]] || fail "--help: status $status, stdout: $output, stderr: $stderr" || return
    local arg
    for arg in "--max-frame 0" "--max-frame x" "--bogus" "-t 65" "extra"; do
        run --separate-stderr "$bin" $arg
        [[ $status -eq 2 && -z $output && $stderr == *"usage: kv_server"* ]] || fail "kv_server $arg: status $status, stdout '$output', stderr: $stderr" || return
    done
}

# --- every command, byte for byte ---------------------------------------------------------

@test "kv: every command of the table (errors too), each reply byte for byte as redis 7.0 sends it (-t 0 and -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/kv_server -t "$t"
        run kv table
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: $output"; } || return
        stop_server || return
        local bad
        bad=$(counter "bad frames") || return
        ((bad == 0)) || fail "-t $t: bad frames $bad, want 0" || return
    done
}

@test "kv: pipelining: 1000 requests cut at random points and in one write, every reply in order, byte for byte (-t 0 and -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/kv_server -t "$t"
        run kv pipeline --count 1000 --split random --max-piece 200
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t random splits: $output"; } || return
        run kv pipeline --count 1000 --split none
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t one write: $output"; } || return
        stop_server || return
        # The path ran: many requests per read (a server that read one request at a time, or
        # a client that waited for each reply, would show reads >= frames).
        local frames reads commands
        frames=$(counter frames) || return
        reads=$(counter reads) || return
        commands=$(kv_counter commands) || return
        ((frames == 2002)) || fail "-t $t: frames $frames, want 2002 (2 x 1000 and the two closing PINGs)" || return
        ((commands == 2002)) || fail "-t $t: kv: $commands commands, want 2002 (one per request)" || return
        ((reads * 2 < frames)) || fail "-t $t: reads $reads for $frames frames: nothing was pipelined" || return
    done
}

@test "kv: the table grows: 5000 keys set (3 doublings), every one read back, half deleted, the rest read back (kv: 2500 keys)" {
    start_server examples/kv_server
    run kv many-keys --keys 5000
    [[ $status -eq 0 ]] || { stop_server; fail "$output"; } || return
    stop_server || return
    local keys
    keys=$(kv_counter keys) || return
    ((keys == 2500)) || fail "kv: $keys keys at the end, want 2500" || return
}

@test "kv: many clients at once, each reply to its own client (-t 0 and -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/kv_server -t "$t"
        run kv clients --clients 20 --rounds 20
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: $output"; } || return
        stop_server || return
        local acc
        acc=$(counter accepted) || return
        ((acc == 20)) || fail "-t $t: accepted $acc, want 20" || return
    done
}

# --- expiry -------------------------------------------------------------------------------

@test "kv: expiry: a PX key is there before its time and gone after; an overwrite or DEL cancels it, KEEPTTL and INCR keep it; EX counts seconds" {
    start_server examples/kv_server
    run kv expiry --px-ms 400
    [[ $status -eq 0 ]] || { stop_server; fail "$output"; } || return
    stop_server || return
}

@test "kv: expiry by the timers: 50 PX keys never read again are gone at their time (kv: 1 keys, 50 expired); the overwritten one stays" {
    local t
    for t in 0 2; do
        start_server examples/kv_server -t "$t"
        run kv expire-quiet --px-ms 200 --keys 50
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: $output"; } || return
        stop_server || return
        local keys expired commands
        keys=$(kv_counter keys) || return
        expired=$(kv_counter expired) || return
        commands=$(kv_counter commands) || return
        ((keys == 1 && expired == 50 && commands == 52)) || fail "-t $t: keys $keys, expired $expired, commands $commands after the deadline; want 1, 50 and 52 (the timers remove what nobody reads)" || return
    done
}

# --- limits -------------------------------------------------------------------------------

@test "kv: limits: a request of exactly --max-frame bytes and 1024 arguments are taken; one past is answered -ERR Protocol error (redis's words) and that client closed, others carry on (-t 0 and -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/kv_server -t "$t" --max-frame 16384
        run kv limits --max-frame 16384
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: $output"; } || return
        assert_log 'resp: Protocol error: invalid bulk length' || { stop_server; return 1; }
        stop_server || return
        local bad refused
        bad=$(counter "bad frames") || return
        refused=$(counter refused) || return
        ((refused == 6 && bad == 0)) || fail "-t $t: refused $refused, bad frames $bad; want 6 (one per refused client) and 0 (each answered, not dropped)" || return
    done
}

@test "kv: the default limit (--max-frame 1048576, as the usage says) at the boundary and one past" {
    start_server examples/kv_server
    run kv limits --max-frame 1048576
    [[ $status -eq 0 ]] || { stop_server; fail "$output"; } || return
    stop_server || return
    local refused
    refused=$(counter refused) || return
    ((refused == 6)) || fail "refused $refused, want 6 (one per request one past the limit)" || return
}

@test "kv: a malformed request gets byte for byte what redis-server 7 sends (a real redis-server beside it), then EOF; a client still sending after it gets its -ERR in full, then EOF (lingering close; -t 0 and -t 2)" {
    command -v redis-server >/dev/null || skip "redis-server is not installed (apt-get install redis-server)"
    local rp t
    rp=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    start_bg redis redis-server --port "$rp" --bind 127.0.0.1 --save '' --appendonly no
    local redis_pid=$BG_PID
    wait_file_match "$BATS_TEST_TMPDIR/redis.out" 'Ready to accept connections'
    for t in 0 2; do
        start_server examples/kv_server -t "$t"
        run kv protoerr --peer "$rp"
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: $output"; } || return
        stop_server || return
        (($(counter lingered) >= 1)) || fail "-t $t: lingered $(counter lingered), want at least 1 (the client still sending)" || return
    done
    kill -TERM "$redis_pid"
    wait "$redis_pid" || true
}

# --- real clients -------------------------------------------------------------------------

@test "kv: redis-cli: every command's reply as redis-cli prints it, nothing on stderr" {
    need_redis_cli
    start_server examples/kv_server
    local -a cases=(
        "PING|PONG"
        "ECHO hi|\"hi\""
        "GET nokey|(nil)"
        "SET k v|OK"
        "GET k|\"v\""
        "SET k w NX|(nil)"
        "SET k w XX PX 100000|OK"
        "MGET k nokey|1) \"w\"
2) (nil)"
        "EXISTS k k nokey|(integer) 2"
        "INCR n|(integer) 1"
        "INCR k|(error) ERR value is not an integer or out of range"
        "DEL k n nokey|(integer) 2"
        "SET k v EX 0|(error) ERR invalid expire time in 'set' command"
        "GET|(error) ERR wrong number of arguments for 'get' command"
        "FOO bar|(error) ERR unknown command 'FOO', with args beginning with: 'bar' "
        "CONFIG GET save|1) \"save\"
2) \"\""
        "CONFIG GET appendonly|1) \"appendonly\"
2) \"no\""
        "COMMAND DOCS|(empty array)"
    )
    local c cmd want
    for c in "${cases[@]}"; do
        cmd=${c%%|*}
        want=${c#*|}
        run --separate-stderr timeout "$(scaled_s 10)" redis-cli -p "$PORT" --no-raw $cmd
        [[ $status -eq 0 && $output == "$want" && -z $stderr ]] ||
            { stop_server; fail "redis-cli $cmd: status $status, printed '$output' (want '$want'), stderr '$stderr'"; } || return
    done
    stop_server || return
}

@test "kv: redis-benchmark -P 16 -r 100000 and without -P: every test done, no error or warning; the table holds thousands of keys (-t 0 and -t 2)" {
    need_redis_benchmark
    local t p
    for t in 0 2; do
        start_server examples/kv_server -t "$t"
        for p in 1 16; do
            run --separate-stderr timeout "$(scaled_s 60)" redis-benchmark -p "$PORT" -c 20 -n $((p == 1 ? 2000 : 4000)) -P "$p" -r 100000 \
                -t ping_inline,ping_mbulk,set,get,incr -q
            [[ $status -eq 0 ]] || { stop_server; fail "-t $t -P $p: redis-benchmark exited $status: $output $stderr"; } || return
            [[ $output$stderr != *rror* && $output$stderr != *WARN* ]] ||
                { stop_server; fail "-t $t -P $p: redis-benchmark said: $output $stderr"; } || return
            local test
            for test in PING_INLINE PING_MBULK SET GET INCR; do
                grep -q "^$test: [0-9.]* requests per second" <<<"${output//$'\r'/$'\n'}" ||
                    { stop_server; fail "-t $t -P $p: no result line for $test in: $output"; } || return
            done
        done
        stop_server || return
        # 6000 SETs and 6000 INCRs of random keys among 100000 each: ~11600 distinct keys,
        # far past the table's first 1024 buckets.
        local keys bad
        keys=$(kv_counter keys) || return
        bad=$(counter "bad frames") || return
        ((keys > 7000 && bad == 0)) || fail "-t $t: $keys keys, bad frames $bad; want over 7000 keys and 0 bad frames" || return
    done
}

# --- rare paths: whole words, the lingering close without a peer, a read past the deadline ---

@test "kv: whole words only: GETX, SETX and NXX are not GET, SET and NX; conflicting SET options refused in either order; PX without a value is a syntax error; errors quote 128 bytes at most (as redis-server 7.0 answers)" {
    start_server examples/kv_server
    run kv table-more
    [[ $status -eq 0 ]] || { stop_server; fail "$output"; } || return
    stop_server || return
}

@test "kv: lingering close after a protocol error: 5 clients still sending after their bad request each get the whole -ERR, then EOF, never a reset (lingered 5; -t 0 and -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/kv_server -t "$t"
        run kv refusal-stream --count 5
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: $output"; } || return
        stop_server || return
        local lingered refused
        lingered=$(counter lingered) || return
        refused=$(counter refused) || return
        ((refused == 5 && lingered == 5)) || fail "-t $t: refused $refused, lingered $lingered; want 5 and 5 (each refused client still sending at its close)" || return
    done
}

@test "kv: a GET read past a key's deadline, in the turn before its timer's (a busy loop stopped inside a turn across the deadline), finds nothing and counts it expired (-t 0; kv: 0 keys, 1 expired)" {
    start_server examples/kv_server -t 0
    run kv expire-stopped --pid "$SERVER_PID" --px-ms 300
    [[ $status -eq 0 ]] || { kill -CONT "$SERVER_PID"; stop_server; fail "$output"; } || return
    # A try whose stop came too late is retried with a new key (said in the output): the
    # keys of those tries that their timers removed are counted in `expired` too.
    local early
    early=$(sed -n 's/.*earlier tries expired by their timers: \([0-9]*\).*/\1/p' <<<"$output")
    [[ -n $early ]] || { stop_server; fail "no 'earlier tries' figure in: $output"; } || return
    ((early == 0)) && [[ $output != *unreadable* ]] || harness_note "$output"
    stop_server || return
    local keys expired
    keys=$(kv_counter keys) || return
    expired=$(kv_counter expired) || return
    ((keys == 0 && expired == 1 + early)) || fail "keys $keys, expired $expired; want 0 and $((1 + early)) (the read found the key past its time and removed it, and counted it)" || return
}
