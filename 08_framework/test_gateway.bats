#!/usr/bin/env bats
# 08_framework: gateway and backend (README.md, section 9). Four backends on port 0 (followers,
# posts, bio, score) answer after --delay; the gateway's /profile answers are checked byte for
# byte (tests/lib/gateway.py) with the values the backends' formulas give. Parallel states
# take about two delays and --serial about four, measured side by side in one test; a backend
# that never answers (SIGSTOP) gives an error field within the action timeout, and its late
# reply is not given to the next request; a client that leaves mid-request leaves no sanitizer
# report and every context freed once (the gateway's stop line); /kv against a real
# redis-server that is stopped and restarted.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"
bats_require_minimum_version 1.5.0

GW="$KIT_ROOT/tests/lib/gateway.py"

setup() {
    # The backends' delay: 100 ms. Not a deadline: the tests that measure against it (the
    # parallel-vs-serial and mid-request ones) stretch it by TIMEOUT_SCALE so that it stays
    # far above a loaded machine's noise; the others keep the whole file short.
    DELAY=100
}

# start_as NAME BINARY ARGS...: start_server under the name NAME (its logs NAME.PID.err, so
# several servers of one binary do not share files); NAME_PID, NAME_PORT, NAME_ERR set.
start_as() {
    local name=$1 bin
    bin=$(stage_bin "$2")
    HARNESS_SUBST="$name=$bin" start_server "$name" "${@:3}" || return
    printf -v "${name}_PID" %s "$SERVER_PID"
    printf -v "${name}_PORT" %s "$PORT"
    printf -v "${name}_ERR" %s "$SERVER_ERR"
}

# stop_as NAME [SIGNAL]: stop_server on the server started as NAME.
stop_as() {
    local v=${1}_PID e=${1}_ERR
    SERVER_PID=${!v}
    SERVER_ERR=${!e}
    stop_server "${2:-TERM}"
}

# backends [DELAY_BIO]: the four backends, all with DELAY (bio with DELAY_BIO if given).
backends() {
    start_as followers examples/backend --name followers --delay "$DELAY" || return
    start_as posts examples/backend --name posts --delay "$DELAY" || return
    start_as bio examples/backend --name bio --delay "${1:-$DELAY}" || return
    start_as score examples/backend --name score --delay "$DELAY" || return
}

stop_backends() {
    local n
    for n in followers posts bio score; do stop_as "$n" || return; done
}

# gateway NAME ARGS...: a gateway on the four backends. Its action timeout is 2 s stretched by
# TIMEOUT_SCALE (far above DELAY) unless ARGS give one (the last --timeout counts).
gateway() {
    start_as "$1" examples/gateway --followers "$followers_PORT" --posts "$posts_PORT" \
        --bio "$bio_PORT" --score "$score_PORT" --timeout "$(scaled_ms 2)" "${@:2}" || return
    # Its four connections are up before a test relies on them.
    local e=${1}_ERR n
    for n in followers posts bio score; do
        wait_file_match "${!e}" "$n: connected" || return
    done
}

# stop_line FILE: the gateway's (or a backend's) counters line.
stop_line() {
    grep -E 'gateway: requests|backend [a-z]+: connections' "$1" | tail -n 1
}

# counter LINE NAME: the number after NAME in a stop line ("contexts created 3" -> 3).
num() {
    [[ $1 =~ (^|[ ,:])$2\ ([0-9]+) ]] || fail "no '$2' in: $1" || return
    echo "${BASH_REMATCH[2]}"
}

# The backends' answers for user ID, as examples/backend.c computes them.
followers_of() { echo $(($1 * 37 % 1000)); }
posts_of() { echo $(($1 * 11 % 100)); }
profile_json() {
    local id=$1 f p
    f=$(followers_of "$id")
    p=$(posts_of "$id")
    printf '{"user":%s,"followers":%s,"posts":%s,"bio":"I am user %s \\\\o/ \\"hi\\"","score":%s}' \
        "$id" "$f" "$p" "$id" $((f + 2 * p))
}

# gw ARGS...: tests/lib/gateway.py, its ok:/FAIL: line shown on failure.
gw() {
    python3 "$GW" "$@"
}

@test "gateway: unit: resp_reply_test (the RESP2 reply codec at every split point, limits at and one past, malformed input)" {
    local bin
    bin=$(stage_bin lib/resp_reply_test)
    [[ -x $bin ]] || fail "no binary $bin: build it with: make -C $STAGE_DIR${SAN:+ SAN=$SAN}"
    run timeout 120 "$bin"
    ((status == 0)) || fail "resp_reply_test exited $status:" "$(tail -n 30 <<<"$output")"
}

@test "gateway: --help exits 0, a bad option exits 2 with usage on stderr (gateway and backend); the largest --timeout and --delay pass" {
    local b
    for b in examples/gateway examples/backend; do
        run --separate-stderr "$(stage_bin $b)" --help
        ((status == 0)) && [[ $output == usage:* ]] || fail "$b --help: $status $output"
        run --separate-stderr "$(stage_bin $b)" --bogus
        ((status == 2)) && [[ -z $output && $stderr == *"unknown option '--bogus'"*usage:* ]] ||
            fail "$b --bogus: status $status, stdout '$output', stderr '$stderr'"
    done
    run --separate-stderr "$(stage_bin examples/backend)" --name nobody
    ((status == 2)) && [[ $stderr == *"bad --name"* ]] || fail "backend --name nobody: $status $stderr"
    run --separate-stderr "$(stage_bin examples/backend)" --delay 60001
    ((status == 2)) || fail "backend --delay 60001: $status"
    run --separate-stderr "$(stage_bin examples/gateway)" --timeout 0
    ((status == 2)) || fail "gateway --timeout 0: $status"
    run --separate-stderr "$(stage_bin examples/gateway)" --timeout 600001
    ((status == 2)) || fail "gateway --timeout 600001: $status"
    # The largest values pass: the options are taken, then the address fails (exit 1).
    run --separate-stderr "$(stage_bin examples/gateway)" --timeout 600000 -H 256.0.0.1
    ((status == 1)) || fail "gateway --timeout 600000 (the largest): status $status, want 1: $stderr"
    run --separate-stderr "$(stage_bin examples/backend)" --delay 60000 -H 256.0.0.1
    ((status == 1)) || fail "backend --delay 60000 (the largest): status $status, want 1: $stderr"
}

@test "backend: answers each line after --delay, in order, every byte; a client that leaves cancels its timers" {
    # The client that leaves must close within the delay: 500 ms (stretched), not 100, so
    # a loaded machine that runs it late does not see its requests answered.
    local DELAY
    DELAY=$(scaled_ms 0.5)
    start_as bio examples/backend --name bio --delay "$DELAY"
    start_as score examples/backend --name score --delay 0
    # An ID is 1 to 18 digits: 19 is a bad request.
    run gw lines --port "$bio_PORT" --line 42 --line 10 --line x --line 7 --line 123456789012345678 \
        --line 1234567890123456789 --min-ms "$DELAY" \
        --want 'OK I am user 42 \o/ "hi"' --want 'ERR no bio for user 10' --want 'ERR bad request' \
        --want 'OK I am user 7 \o/ "hi"' --want 'OK I am user 123456789012345678 \o/ "hi"' --want 'ERR bad request'
    [[ $output == ok:* ]] || fail "$output"
    run gw lines --port "$score_PORT" --line '554 62' --line '554' --line '1 2 3' --want 'OK 678' \
        --want 'ERR bad request' --want 'ERR bad request'
    [[ $output == ok:* ]] || fail "$output"
    # Two more requests, and the client leaves before their delay: both cancelled, none sent.
    run gw lines --port "$bio_PORT" --close-after 2
    [[ $output == ok:* ]] || fail "$output"
    wait_file_match "$bio_ERR" 'requests cancelled'
    # One more, on a new connection: by its answer the cancelled requests' delay has passed
    # too (a timer left running on a freed request would have fired).
    run gw lines --port "$bio_PORT" --line 3 --want 'OK I am user 3 \o/ "hi"' --min-ms "$DELAY"
    [[ $output == ok:* ]] || fail "$output"
    stop_as bio
    stop_as score
    local line
    line=$(stop_line "$bio_ERR")
    [[ $(num "$line" requests) == 9 && $(num "$line" answered) == 7 && $(num "$line" cancelled) == 2 &&
        $(num "$line" errors) == 3 ]] || fail "bio's stop line: $line"
}

@test "backend: a CR before the LF is ignored; a line of 1024 bytes is a request, 1025 drops the client; --delay is 100 ms when not given" {
    local l1024
    l1024=$(printf '1%.0s' {1..1024})
    start_as bio examples/backend --name bio
    # No --delay: 100 ms, a bound that does not stretch (answers never come early).
    run gw lines --port "$bio_PORT" --line $'42\r' --line "$l1024" --line $'7\r' --min-ms 100 \
        --want 'OK I am user 42 \o/ "hi"' --want 'ERR bad request' --want 'OK I am user 7 \o/ "hi"'
    [[ $output == ok:* ]] || fail "$output" || return
    # One byte past the codec's limit: the client is dropped, answered nothing.
    run gw lines --port "$bio_PORT" --line "${l1024}1" --want-eof
    [[ $output == ok:* ]] || fail "a line of 1025 bytes: $output" || return
    stop_as bio || return
    local line
    line=$(stop_line "$bio_ERR")
    [[ $(num "$line" requests) == 3 && $(num "$line" answered) == 3 && $(num "$line" errors) == 1 ]] ||
        fail "bio's stop line: $line" || return
    grep -qE 'bad frames 1,' "$bio_ERR" || fail "the library's stop line counts no bad frame: $(grep 'stopped:' "$bio_ERR")"
}

@test "gateway: /profile answers every byte from its four backends; errors, 404, 405, 400 in order" {
    backends
    gateway gw
    run gw get --port "$gw_PORT" --req 'GET /profile?user=42' --want "200 $(profile_json 42)"
    [[ $output == ok:* ]] || fail "$output"
    # user 10 has no bio: the field is null and says why; the rest is there.
    local f p
    f=$(followers_of 10) p=$(posts_of 10)
    run gw get --port "$gw_PORT" --close \
        --req 'GET /profile?user=123456789012345678' --want "200 $(profile_json 123456789012345678)" \
        --req 'GET /profile?user=10' \
        --want "200 {\"user\":10,\"followers\":$f,\"posts\":$p,\"bio\":null,\"score\":$((f + 2 * p)),\"errors\":{\"bio\":\"no bio for user 10\"}}" \
        --req 'GET /nope' --want '404 {"error":"not found"}' \
        --req 'POST /profile?user=1' --want '405 {"error":"method not allowed"}' \
        --req 'GET /profile?user=1234567890123456789' --want '400 {"error":"want /profile?user=ID (1 to 18 digits)"}' \
        --req 'GET /profile?user=' --want '400 {"error":"want /profile?user=ID (1 to 18 digits)"}' \
        --req 'GET /profile?id=3' --want '400 {"error":"want /profile?user=ID (1 to 18 digits)"}' \
        --req 'GET /profile?user=3' --want "200 $(profile_json 3)"
    [[ $output == ok:* ]] || fail "$output"
    stop_as gw
    local line
    line=$(stop_line "$gw_ERR")
    # 4 profiles of 4 actions each (user 10's bio fails, score is still asked); nothing late,
    # unavailable or left.
    [[ $(num "$line" requests) == 9 && $(num "$line" answered) == 9 && $(num "$line" "contexts created") == 9 &&
        $(num "$line" freed) == 9 && $(num "$line" timeouts) == 0 && $(num "$line" actions) == 16 &&
        $(num "$line" "late replies") == 0 && $(num "$line" unavailable) == 0 &&
        $(num "$line" "client gone") == 0 ]] || fail "gateway's stop line: $line"
    stop_backends
    # Each backend asked once per profile (4 profiles), score only with followers and posts.
    for n in followers posts bio score; do
        local e=${n}_ERR
        line=$(stop_line "${!e}")
        [[ $(num "$line" requests) == 4 && $(num "$line" connections) == 1 ]] ||
            fail "$n asked other than 4 times on 1 kept-open connection: $line"
    done
}

@test "gateway: a backend not given says no backend, one that hangs up says closed the connection, score is not asked without followers; /kv's key and value limits at and one past; a refused request gets its status, then the close; --serial goes past an action that fails at once" {
    start_as posts examples/backend --name posts --delay 0
    start_as score examples/backend --name score --delay 0
    # bio: a peer that reads the request and hangs up without a reply.
    start_bg hangup python3 "$GW" hangup
    local hangup_pid=$BG_PID hangup_port
    wait_file_match "$BATS_TEST_TMPDIR/hangup.out" '^listening on ' || return
    hangup_port=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$BATS_TEST_TMPDIR/hangup.out")
    # No --followers and no --redis: those actions fail at once, without a timer.
    start_as gw examples/gateway --posts "$posts_PORT" --bio "$hangup_port" --score "$score_PORT" --timeout "$(scaled_ms 2)"
    local n
    for n in posts bio score; do wait_file_match "$gw_ERR" "$n: connected" || return; done
    local p k256 k257 v4096 v4097 want400
    p=$(posts_of 42)
    k256=$(printf 'k%.0s' {1..256}) k257=${k256}k
    v4096=$(printf 'v%.0s' {1..4096}) v4097=${v4096}v
    want400='400 {"error":"want key=K&value=V (K 1 to 256 bytes, V at most 4096)"}'
    # A key of 256 bytes and a value of 4096 pass the parse (then fail on the missing redis);
    # one byte more is a 400. The refusal (HTTP/2.0) is the codec's: 505, and the close.
    run gw get --port "$gw_PORT" --close \
        --req 'GET /profile?user=42' \
        --want "200 {\"user\":42,\"followers\":null,\"posts\":$p,\"bio\":null,\"score\":null,\"errors\":{\"followers\":\"no backend\",\"bio\":\"closed the connection\",\"score\":\"needs followers and posts\"}}" \
        --req 'POST /kv key=a&value=b' --want '503 {"error":"redis: no backend"}' \
        --req "POST /kv key=$k256&value=b" --want '503 {"error":"redis: no backend"}' \
        --req "POST /kv key=$k257&value=b" --want "$want400" \
        --req "POST /kv key=a&value=$v4096" --want '503 {"error":"redis: no backend"}' \
        --req "POST /kv key=a&value=$v4097" --want "$want400" \
        --req 'RAW GET /profile?user=1 HTTP/2.0\r\nHost: a\r\n\r\n' --want '505 {"error":"HTTP version not supported"}'
    [[ $output == ok:* ]] || fail "$output"
    stop_as gw
    local line
    line=$(stop_line "$gw_ERR")
    # Actions: the profile's followers, posts and bio (score never started), and SET for each
    # of the three /kv requests that parsed (GET never started).
    [[ $(num "$line" requests) == 7 && $(num "$line" answered) == 7 && $(num "$line" "contexts created") == 7 &&
        $(num "$line" freed) == 7 && $(num "$line" actions) == 6 && $(num "$line" timeouts) == 0 &&
        $(num "$line" unavailable) == 0 ]] || fail "gateway's stop line: $line"
    # --serial: an action that fails at once (no backend) lets the next one start, before and
    # after one that runs (posts).
    start_as ser examples/gateway --posts "$posts_PORT" --score "$score_PORT" --timeout "$(scaled_ms 2)" --serial
    for n in posts score; do wait_file_match "$ser_ERR" "$n: connected" || return; done
    run gw get --port "$ser_PORT" --req 'GET /profile?user=42' \
        --want "200 {\"user\":42,\"followers\":null,\"posts\":$p,\"bio\":null,\"score\":null,\"errors\":{\"followers\":\"no backend\",\"bio\":\"no backend\",\"score\":\"needs followers and posts\"}}"
    [[ $output == ok:* ]] || { stop_as ser; fail "--serial: $output"; } || return
    stop_as ser || return
    for n in posts score; do stop_as "$n" || return; done
    kill -TERM "$hangup_pid"
    wait_bg "$hangup_pid" hangup || return
    grep -qx 'hangup 1' "$BATS_TEST_TMPDIR/hangup.out" || fail "bio never got its request: $(cat "$BATS_TEST_TMPDIR/hangup.out")" || return
    line=$(stop_line "$score_ERR")
    [[ $(num "$line" requests) == 0 ]] || fail "score was asked without followers: $line"
}

@test "gateway: a client with 8 requests queued is paused (a 9th waits unread in the kernel) until an answer goes, then served; only whole paths match (/profiles, /kv/x: 404)" {
    DELAY=$(scaled_ms 0.1)
    backends
    gateway gw
    # Eight in one write, the first a /profile (two delays): the eighth queued pauses the
    # client; the ninth, sent once the gateway has read the eight, stays in its socket
    # (/proc/net/tcp rx_queue) until the first answer, and is answered after the resume.
    run gw get --port "$gw_PORT" --split 8 --held-ms $((DELAY / 2)) \
        --req 'GET /profile?user=11' --want "200 $(profile_json 11)" \
        --req 'GET /profiles?user=11' --want '404 {"error":"not found"}' \
        --req 'GET /profile/?user=11' --want '404 {"error":"not found"}' \
        --req 'POST /kvs key=a&value=b' --want '404 {"error":"not found"}' \
        --req 'POST /kv/x key=a&value=b' --want '404 {"error":"not found"}' \
        --req 'GET /prof' --want '404 {"error":"not found"}' \
        --req 'GET /Profile?user=11' --want '404 {"error":"not found"}' \
        --req 'GET /' --want '404 {"error":"not found"}' \
        --req 'GET /profile?user=12' --want "200 $(profile_json 12)"
    [[ $output == ok:* ]] || { stop_as gw; fail "$output"; } || return
    harness_note "$(grep '^held:' <<<"$output")"
    stop_as gw || return
    local line
    line=$(stop_line "$gw_ERR")
    [[ $(num "$line" requests) == 9 && $(num "$line" answered) == 9 && $(num "$line" freed) == 9 &&
        $(num "$line" actions) == 8 ]] || fail "gateway's stop line: $line" || return
    stop_backends
}

@test "gateway: clients at once share the backends' connections: each gets its own answer (replies matched to requests in the order sent)" {
    # Three /profiles sent together from three connections: each backend has three requests
    # of the gateway in flight on its one connection (DELAY far above the time to send them).
    DELAY=$(scaled_ms 0.3)
    backends
    gateway gw
    run gw multi --port "$gw_PORT" \
        --req 'GET /profile?user=31' --want "200 $(profile_json 31)" \
        --req 'GET /profile?user=42' --want "200 $(profile_json 42)" \
        --req 'GET /profile?user=53' --want "200 $(profile_json 53)"
    [[ $output == ok:* ]] || { stop_as gw; fail "$output"; } || return
    stop_as gw || return
    local line n e
    line=$(stop_line "$gw_ERR")
    [[ $(num "$line" answered) == 3 && $(num "$line" freed) == 3 && $(num "$line" "late replies") == 0 ]] ||
        fail "gateway's stop line: $line" || return
    stop_backends || return
    for n in followers posts bio score; do
        e=${n}_ERR
        line=$(stop_line "${!e}")
        [[ $(num "$line" requests) == 3 && $(num "$line" connections) == 1 ]] ||
            fail "$n: not 3 requests on 1 connection: $line" || return
    done
}

@test "gateway: /kv answers GET's reply, not the value it sent (null when Redis has none); a reply Redis's protocol allows but the command does not want is 502 (a fake Redis)" {
    start_bg fakeredis python3 "$GW" redis
    local fake=$BG_PID rp
    wait_file_match "$BATS_TEST_TMPDIR/fakeredis.out" '^listening on ' || return
    rp=$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$BATS_TEST_TMPDIR/fakeredis.out")
    start_as gw examples/gateway --redis "$rp" --timeout "$(scaled_ms 2)"
    wait_file_match "$gw_ERR" 'redis: connected' || return
    # The key chooses the fake's reply (tests/lib/gateway.py redis).
    run gw get --port "$gw_PORT" \
        --req 'POST /kv key=other&value=v1' --want '200 {"key":"other","value":"v1!"}' \
        --req 'POST /kv key=null&value=v2' --want '200 {"key":"null","value":null}' \
        --req 'POST /kv key=queued&value=v3' --want '502 {"error":"redis: unexpected reply to SET"}' \
        --req 'POST /kv key=int&value=v4' --want '502 {"error":"redis: unexpected reply to GET"}' \
        --req 'POST /kv key=gerr&value=v5' --want '502 {"error":"redis: ERR gone"}' \
        --req 'POST /kv key=k&value=a b' --want '200 {"key":"k","value":"a b"}'
    [[ $output == ok:* ]] || { stop_as gw; fail "$output"; } || return
    stop_as gw || return
    kill -TERM "$fake"
    wait_bg "$fake" fakeredis || return
    # Every command as RESP frames it, SET then GET, and no GET after a SET that failed.
    local want got
    want=$'SET other v1\nGET other\nSET null v2\nGET null\nSET queued v3\nSET int v4\nGET int\nSET gerr v5\nGET gerr\nSET k a b\nGET k'
    got=$(sed 1d "$BATS_TEST_TMPDIR/fakeredis.out")
    [[ $got == "$want" ]] || fail "the fake Redis got:" "$got" || return
    local line
    line=$(stop_line "$gw_ERR")
    [[ $(num "$line" requests) == 6 && $(num "$line" answered) == 6 && $(num "$line" freed) == 6 &&
        $(num "$line" actions) == 11 && $(num "$line" "late replies") == 0 ]] || fail "gateway's stop line: $line"
}

@test "gateway: a state's actions run in parallel (about 2 delays) and --serial one by one (about 4)" {
    DELAY=$(scaled_ms 0.1)
    backends
    gateway par
    gateway ser --serial
    local i ms par=() ser=()
    for i in 1 2 3; do
        run gw get --port "$par_PORT" --req "GET /profile?user=$i" --want "200 $(profile_json $i)" \
            --min-ms $((2 * DELAY))
        [[ $output == ok:* ]] || fail "parallel: $output"
        par+=("${output##*ms }")
        run gw get --port "$ser_PORT" --req "GET /profile?user=$i" --want "200 $(profile_json $i)" \
            --min-ms $((4 * DELAY))
        [[ $output == ok:* ]] || fail "serial: $output"
        ser+=("${output##*ms }")
    done
    local pm sm
    pm=$(printf '%s\n' "${par[@]}" | sort -n | sed -n 2p)
    sm=$(printf '%s\n' "${ser[@]}" | sort -n | sed -n 2p)
    echo "parallel ${par[*]} ms (median $pm), serial ${ser[*]} ms (median $sm)"
    # Two states of 100 ms against four delays in a row: the medians, measured side by side.
    ((pm * 4 < sm * 3)) || fail "parallel median $pm ms is not below 0.75 x serial $sm ms"
    stop_as par
    stop_as ser
    stop_backends
}

@test "gateway: a backend that never answers gives its error field within the timeout; its late reply goes to nobody" {
    backends
    local t
    t=$(scaled_ms 0.4)
    gateway gw --timeout "$t"
    kill -STOP "$bio_PID"
    local f p
    f=$(followers_of 42) p=$(posts_of 42)
    run gw get --port "$gw_PORT" --req 'GET /profile?user=42' --min-ms "$t" --max-ms $((t + 2 * DELAY + t)) \
        --want "200 {\"user\":42,\"followers\":$f,\"posts\":$p,\"bio\":null,\"score\":$((f + 2 * p)),\"errors\":{\"bio\":\"timeout after $t ms\"}}"
    kill -CONT "$bio_PID"
    [[ $output == ok:* ]] || fail "$output"
    # bio answers user 42 now, late: the gateway drops it, and user 43 gets its own bio.
    wait_file_match "$gw_ERR" 'bio: late reply dropped'
    run gw get --port "$gw_PORT" --req 'GET /profile?user=43' --want "200 $(profile_json 43)"
    [[ $output == ok:* ]] || fail "$output"
    # A whole timeout later: the answered actions' timers were stopped, none fires now.
    sleep "$(awk -v t="$t" 'BEGIN { print 1.5 * t / 1000 }')"   # a timer's span: nothing to poll
    stop_as gw
    local line
    line=$(stop_line "$gw_ERR")
    [[ $(num "$line" timeouts) == 1 && $(num "$line" "late replies") == 1 && $(num "$line" freed) == 2 ]] ||
        fail "gateway's stop line: $line"
    stop_backends
}

@test "gateway: the first of two parallel actions failing leaves the context to the second" {
    # bio fails at once (user 10 has none, delay 0) while followers and posts take DELAY.
    backends 0
    gateway gw
    local f p
    f=$(followers_of 20) p=$(posts_of 20)
    run gw get --port "$gw_PORT" --req 'GET /profile?user=20' --min-ms $((2 * DELAY)) \
        --want "200 {\"user\":20,\"followers\":$f,\"posts\":$p,\"bio\":null,\"score\":$((f + 2 * p)),\"errors\":{\"bio\":\"no bio for user 20\"}}" \
        --req 'GET /profile?user=21' --want "200 $(profile_json 21)"
    [[ $output == ok:* ]] || fail "$output"
    stop_as gw
    local line
    line=$(stop_line "$gw_ERR")
    [[ $(num "$line" "contexts created") == 2 && $(num "$line" freed) == 2 && $(num "$line" "late replies") == 0 ]] ||
        fail "gateway's stop line: $line"
    stop_backends
}

@test "gateway: a client that leaves mid-request frees its context once; late replies and timers find nothing; one that only closes (an EOF) is answered, its context freed by the answer" {
    DELAY=$(scaled_ms 0.1)
    backends
    local t
    t=$(scaled_ms 0.3)
    gateway gw --timeout "$t"
    # Leaves with a reset in state 1 (three replies on their way), and in state 2 (score's).
    gw leave --port "$gw_PORT" --req 'GET /profile?user=5' --after-ms $((DELAY / 2)) --reset
    gw leave --port "$gw_PORT" --req 'GET /profile?user=6' --after-ms $((DELAY * 3 / 2)) --reset
    # A plain close in state 1 is only an EOF to the gateway (a half-closed client looks the
    # same: rx.h rule 8): the request runs on, is answered into the closed socket, and its
    # context is freed once, by the answer, with no late reply.
    gw leave --port "$gw_PORT" --req 'GET /profile?user=9' --after-ms $((DELAY / 2))
    # Every reply has come back (4 + 4 requests less the one score never got) and been dropped.
    wait_file_match "$gw_ERR" 'score: late reply dropped'
    local deadline
    deadline=$(($(now_ms) + $(scaled_ms 5)))
    until (($(grep -c 'late reply dropped' "$gw_ERR") >= 4)); do
        (($(now_ms) < deadline)) || fail "late replies: $(grep -c 'late reply dropped' "$gw_ERR") of 4"
        sleep 0.02
    done
    # Past the action timeout: a timer left running on a freed context would fire by now.
    sleep "$(awk -v t="$t" 'BEGIN { print 2 * t / 1000 }')"   # a timer's whole span: nothing to poll
    run gw get --port "$gw_PORT" --req 'GET /profile?user=7' --want "200 $(profile_json 7)"
    [[ $output == ok:* ]] || fail "$output"
    stop_as gw
    local line
    line=$(stop_line "$gw_ERR")
    [[ $(num "$line" "contexts created") == 4 && $(num "$line" freed) == 4 && $(num "$line" "client gone") == 2 &&
        $(num "$line" timeouts) == 0 && $(num "$line" "late replies") == 4 && $(num "$line" answered) == 2 ]] ||
        fail "gateway's stop line: $line"
    stop_backends
}

@test "gateway: a client that leaves with one request running and one queued behind it: both contexts freed, the queued one never started (client gone 1)" {
    DELAY=$(scaled_ms 0.2)
    backends
    gateway gw
    # Reset in state 1 of user 5: three replies on their way; user 6 waits behind it.
    gw leave --port "$gw_PORT" --req 'GET /profile?user=5' --req 'GET /profile?user=6' --after-ms $((DELAY / 2)) --reset
    local deadline
    deadline=$(($(now_ms) + $(scaled_ms 5)))
    until (($(grep -c 'late reply dropped' "$gw_ERR") >= 3)); do
        (($(now_ms) < deadline)) || fail "late replies: $(grep -c 'late reply dropped' "$gw_ERR") of 3" || return
        sleep 0.02   # poll interval of a loop with a deadline
    done
    stop_as gw || return
    local line n e
    line=$(stop_line "$gw_ERR")
    [[ $(num "$line" requests) == 2 && $(num "$line" "contexts created") == 2 && $(num "$line" freed) == 2 &&
        $(num "$line" "client gone") == 1 && $(num "$line" answered) == 0 && $(num "$line" actions) == 3 &&
        $(num "$line" "late replies") == 3 ]] || fail "gateway's stop line: $line" || return
    stop_backends || return
    for n in followers posts bio; do
        e=${n}_ERR
        line=$(stop_line "${!e}")
        [[ $(num "$line" requests) == 1 ]] || fail "$n: asked other than once (user 6 never started): $line" || return
    done
}

# free_port: a TCP port on 127.0.0.1 nobody listens on now (the kernel's pick, released).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# redis_start PORT: redis-server on 127.0.0.1:PORT, no persistence; REDIS_PID set once it is
# ready (its "Ready to accept connections" line).
redis_start() {
    start_bg "redis$2" redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no
    REDIS_PID=$BG_PID
    wait_file_match "$BATS_TEST_TMPDIR/redis$2.out" 'Ready to accept connections'
}

redis_stop() {
    kill -TERM "$REDIS_PID"
    wait "$REDIS_PID" || true
}

@test "gateway: /kv runs SET then GET on a real redis-server; Redis stopped: 503 within the timeout; back: 200 within 5 s" {
    command -v redis-server >/dev/null || skip "redis-server is not installed (apt-get install redis-server)"
    local rp t v
    rp=$(free_port)
    redis_start "$rp" 1
    t=$(scaled_ms 0.5)
    start_as gw examples/gateway --redis "$rp" --timeout "$t"
    wait_file_match "$gw_ERR" 'redis: connected'
    # Every byte of the answer, a value with quotes, a backslash and '&' in it; the errors.
    run gw get --port "$gw_PORT" \
        --req 'POST /kv key=k1&value=v "1" \ & more' --want '200 {"key":"k1","value":"v \"1\" \\ & more"}' \
        --req 'POST /kv key=k1&value=' --want '200 {"key":"k1","value":""}' \
        --req 'POST /kv key=k2&value=2' --want '200 {"key":"k2","value":"2"}' \
        --req $'POST /kv key=c&value=\x01\t\x1f\x7f/' --want '200 {"key":"c","value":"\u0001\u0009\u001f\u007f/"}' \
        --req 'GET /kv' --want '405 {"error":"method not allowed"}' \
        --req 'POST /kv key=&value=1' --want '400 {"error":"want key=K&value=V (K 1 to 256 bytes, V at most 4096)"}' \
        --req 'POST /kv value=1&key=k' --want '400 {"error":"want key=K&value=V (K 1 to 256 bytes, V at most 4096)"}' \
        --req 'POST /kv key=k3' --want '400 {"error":"want key=K&value=V (K 1 to 256 bytes, V at most 4096)"}'
    [[ $output == ok:* ]] || fail "$output"
    if command -v redis-cli >/dev/null; then
        # Stored in Redis itself, not only echoed.
        v=$(redis-cli -p "$rp" get k2)
        [[ $v == 2 ]] || fail "redis-cli get k2: '$v'"
        # An error reply (-OOM: Redis over its maxmemory) is 502, with Redis's words.
        [[ $(redis-cli -p "$rp" config set maxmemory 1) == OK ]] || fail "redis-cli config set maxmemory 1"
        run gw get --port "$gw_PORT" --req 'POST /kv key=m&value=1' \
            --want "502 {\"error\":\"redis: OOM command not allowed when used memory > 'maxmemory'.\"}"
        [[ $output == ok:* ]] || fail "$output"
        [[ $(redis-cli -p "$rp" config set maxmemory 0) == OK ]] || fail "redis-cli config set maxmemory 0"
    else
        echo "# redis-cli is not installed: the checks in Redis itself did not run (apt-get install redis-tools)" >&3
    fi
    # Redis gone: 503 at once (no session to send on), within the action timeout.
    redis_stop
    wait_file_match "$gw_ERR" 'redis: disconnected'
    run gw get --port "$gw_PORT" --max-ms "$t" --req 'POST /kv key=a&value=b' \
        --want '503 {"error":"redis: unavailable"}'
    [[ $output == ok:* ]] || fail "$output"
    # Back on the same port: the connector reconnects, and /kv works again within 5 s.
    redis_start "$rp" 2
    local deadline
    deadline=$(($(now_ms) + $(scaled_ms 5)))
    until run gw get --port "$gw_PORT" --req 'POST /kv key=a&value=back' --want '200 {"key":"a","value":"back"}' &&
        [[ $output == ok:* ]]; do
        (($(now_ms) < deadline)) || fail "no 200 within 5 s of Redis's restart: $output"
        sleep 0.05   # poll interval of a loop with a deadline
    done
    # Redis that does not answer (stopped): 503 once the action's timeout has passed.
    kill -STOP "$REDIS_PID"
    run gw get --port "$gw_PORT" --min-ms "$t" --max-ms $((3 * t)) --req 'POST /kv key=a&value=c' \
        --want "503 {\"error\":\"redis: timeout after $t ms\"}"
    kill -CONT "$REDIS_PID"
    [[ $output == ok:* ]] || fail "$output"
    # Its late reply (SET's +OK) is dropped; the next request gets its own answers.
    wait_file_match "$gw_ERR" 'redis: late reply dropped'
    run gw get --port "$gw_PORT" --req 'POST /kv key=a&value=d' --want '200 {"key":"a","value":"d"}'
    [[ $output == ok:* ]] || fail "$output"
    stop_as gw
    redis_stop
    local line
    line=$(stop_line "$gw_ERR")
    # unavailable: the request while Redis was down (and any before the connector was back).
    [[ $(num "$line" "contexts created") == $(num "$line" freed) && $(num "$line" timeouts) == 1 &&
        $(num "$line" "late replies") == 1 && $(num "$line" unavailable) -ge 1 ]] || fail "gateway's stop line: $line"
}

@test "gateway: curl and wrk: the real clients get every byte, and wrk's load leaves every context freed" {
    command -v curl >/dev/null || skip "curl is not installed (apt-get install curl)"
    backends
    gateway gw
    local out
    out=$(curl -s --max-time "$(scaled_ms 5)e-3" "http://127.0.0.1:$gw_PORT/profile?user=42")
    [[ $out == "$(profile_json 42)" ]] || fail "curl /profile: '$out'"
    out=$(curl -s -o /dev/null -w '%{http_code} %{content_type}' --max-time "$(scaled_ms 5)e-3" \
        -X DELETE "http://127.0.0.1:$gw_PORT/profile?user=42")
    [[ $out == '405 application/json' ]] || fail "curl DELETE: '$out'"
    if command -v wrk >/dev/null; then
        # Keep-alive load from 10 connections for 1 s: only 200s, and the stop line balances.
        run wrk -t1 -c10 -d1s "http://127.0.0.1:$gw_PORT/profile?user=7"
        ((status == 0)) || fail "wrk: $output"
        [[ $output != *"Non-2xx"* && $output =~ ([0-9]+)\ requests\ in ]] || fail "wrk: $output"
        ((BASH_REMATCH[1] > 0)) || fail "wrk completed no request: $output"
    else
        echo "# wrk is not installed: its part of this test did not run (apt-get install wrk, or make bench-deps)" >&3
    fi
    stop_as gw
    local line
    line=$(stop_line "$gw_ERR")
    [[ $(num "$line" "contexts created") == $(num "$line" freed) && $(num "$line" timeouts) == 0 ]] ||
        fail "gateway's stop line: $line"
    stop_backends
}

@test "gateway: a client that sends its requests then shutdown(SHUT_WR) (nc -N) still gets every answer, the later /profile's included, then EOF (-t 0 and -t 2)" {
    backends
    local t
    for t in 0 2; do
        gateway gw -t "$t"
        # A /profile answers after its backends (2 delays): the EOF is read long before.
        run gw get --port "$gw_PORT" --shut \
            --req 'GET /profile?user=7' --want "200 $(profile_json 7)" \
            --req 'GET /nope' --want '404 {"error":"not found"}' \
            --req 'GET /profile?user=8' --want "200 $(profile_json 8)"
        [[ $output == ok:* ]] || { stop_as gw; fail "-t $t: $output"; } || return
        # Nothing pending at its EOF: closed at once, nothing sent.
        run gw get --port "$gw_PORT" --shut
        [[ $output == ok:* ]] || { stop_as gw; fail "-t $t, no request: $output"; } || return
        stop_as gw || return
        local line
        line=$(stop_line "$gw_ERR")
        [[ $(num "$line" requests) == 3 && $(num "$line" answered) == 3 && $(num "$line" freed) == 3 &&
            $(num "$line" "client gone") == 0 ]] || fail "-t $t: gateway's stop line: $line" || return
    done
    stop_backends
}

@test "gateway: Expect: 100-continue: exactly 'HTTP/1.1 100 Continue' then the body's answer on a kept connection; over the body limit a 413 at once, no 100; curl asked to send it (-H 'Expect: 100-continue': curl 7.88 adds it by itself only past 1 MiB, over this limit) gets its 100 and the answer; behind a request still pending, no 100 at all" {
    backends
    gateway gw
    local bad='{"error":"want key=K&value=V (K 1 to 256 bytes, V at most 4096)"}'
    run gw expect --port "$gw_PORT" --req 'POST /kv key=&value=12' --want "400 $bad"
    [[ $output == ok:* ]] || { stop_as gw; fail "$output"; } || return
    # Behind a /profile still running: no 100 at all (it would come before that answer).
    run gw expect --port "$gw_PORT" --behind 'GET /profile?user=7' --behind-want "200 $(profile_json 7)" \
        --req 'POST /kv key=&value=12' --want "400 $bad"
    [[ $output == ok:* ]] || { stop_as gw; fail "behind a pending request: $output"; } || return
    if command -v curl >/dev/null; then
        local v out
        v=$(printf 'v%.0s' {1..2000})
        out=$(curl -sS -v --max-time "$(awk -v k="$TIMEOUT_SCALE" 'BEGIN { print 10 * k }')" \
            -H 'Expect: 100-continue' -d "key=&value=$v" "http://127.0.0.1:$gw_PORT/kv" 2>"$BATS_TEST_TMPDIR/curl.err") ||
            { stop_as gw; fail "curl failed: $(cat "$BATS_TEST_TMPDIR/curl.err")"; } || return
        [[ $out == "$bad" ]] || { stop_as gw; fail "curl's answer: $out"; } || return
        grep -q '^> Expect: 100-continue' "$BATS_TEST_TMPDIR/curl.err" || { stop_as gw; fail "curl sent no Expect: $(cat "$BATS_TEST_TMPDIR/curl.err")"; } || return
        grep -q '^< HTTP/1.1 100 Continue' "$BATS_TEST_TMPDIR/curl.err" || { stop_as gw; fail "curl got no 100 Continue: $(cat "$BATS_TEST_TMPDIR/curl.err")"; } || return
        grep -q '^< HTTP/1.1 400 Bad Request' "$BATS_TEST_TMPDIR/curl.err" || { stop_as gw; fail "curl's status: $(cat "$BATS_TEST_TMPDIR/curl.err")"; } || return
    fi
    stop_as gw || return
    local line
    line=$(stop_line "$gw_ERR")
    # The raw client's 400, 404 and 413, and curl's 400 (when installed): each request once.
    [[ $(num "$line" requests) -ge 3 && $(num "$line" answered) == $(num "$line" requests) ]] || fail "gateway's stop line: $line"
    stop_backends
}
