#!/usr/bin/env bats
# 08_framework: examples/http_server on the HTTP/1.1 codec (README.md, section 9). The
# codec's unit test (lib/http_test: every split, pipelining, limits, garbage); then real
# clients: curl (status, headers and body bytes, HEAD, a connection reused by two URLs) and wrk
# (no non-2xx, no socket errors); and a raw-socket client (tests/lib/http.py) that checks every
# response byte for byte: every error status, keep-alive rules of 1.0 and 1.1, pipelined
# requests cut at random points, the head and body limits at the boundary and one past, a bad
# client closed alone, /stats exact, the idle timeout. At -t 0 and with io threads.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"
bats_require_minimum_version 1.5.0

HTTPPY="$KIT_ROOT/tests/lib/http.py"

# start_server names its logs after the binary: examples/http_server.PID.out needs the folder.
setup() {
    mkdir -p "$BATS_TEST_TMPDIR/examples"
}

# http SUBCMD [ARGS...]: the raw-socket client against the running server.
http() {
    python3 "$HTTPPY" "$1" --port "$PORT" "${@:2}"
}

# counter NAME: the number after NAME in the library's stop line (call after stop_server).
counter() {
    local line n
    line=$(grep -m1 ' stopped: accepted ' "$SERVER_ERR") || fail "no 'stopped: accepted ...' line in the server's stderr" || return
    n=$(sed -n "s/.*[:,] $1 \([0-9][0-9]*\)\(,.*\)\{0,1\}$/\1/p" <<<"$line")
    [[ -n $n ]] || fail "no '$1' counter in: $line" || return
    echo "$n"
}

# http_counter NAME: the number after NAME in http_server's own line (`http: connections C,
# requests R, refused F, bytes in I, bytes out O`).
http_counter() {
    local line n
    line=$(grep -m1 ' http: connections ' "$SERVER_ERR") || fail "no 'http: connections ...' line in the server's stderr" || return
    n=$(sed -n "s/.* http: .*[:,] $1 \([0-9][0-9]*\)\(,.*\)\{0,1\}$/\1/p;s/.* http: $1 \([0-9][0-9]*\),.*/\1/p" <<<"$line")
    [[ -n $n ]] || fail "no '$1' counter in: $line" || return
    echo "$n"
}

need_curl() {
    command -v curl >/dev/null || skip "curl is not installed (apt-get install curl)"
}

need_wrk() {
    command -v wrk >/dev/null || skip "wrk is not installed (apt-get install wrk)"
}

# unit NAME: a unit test program of lib/, which prints what it checked and exits 0.
unit() {
    local bin
    bin=$(stage_bin "lib/$1")
    [[ -x $bin ]] || fail "no binary $bin: build it with: make -C $STAGE_DIR${SAN:+ SAN=$SAN}" || return
    run timeout 120 "$bin"
    [[ $status -eq 0 ]] || fail "$1 exited $status:" "$(grep -v '^ok' <<<"$output" | tail -n 30)" || return
}

HELLO='Hello from the rx http_server.\n'

@test "http: unit: http_test (the codec at every split point, pipelined, limits, refusals, garbage)" {
    unit http_test
}

@test "http: --help exits 0; a bad option exits 2 with the usage on stderr" {
    local bin
    bin=$(stage_bin examples/http_server)
    run --separate-stderr "$bin" --help
    [[ $status -eq 0 && $output == usage:* ]] || fail "--help: status $status, output: $output"
    for bad in "--max-head 0" "--max-head 1048577" "--max-body -1" "--max-body 4294967296" "--max-head" "--bogus" "-t 65"; do
        run --separate-stderr "$bin" $bad
        [[ $status -eq 2 && -z $output && $stderr == *usage:* ]] || fail "'$bad': status $status, stdout '$output', stderr: $stderr"
    done
}

@test "http: curl GET / and /stats: status, headers and body bytes exact" {
    need_curl
    start_server examples/http_server
    local d=$BATS_TEST_TMPDIR
    curl -s --max-time 5 -D "$d/h1" -o "$d/b1" "http://127.0.0.1:$PORT/"
    printf "$HELLO" >"$d/want"
    cmp "$d/b1" "$d/want" || fail "GET / body: $(od -c "$d/b1" | head)"
    printf 'HTTP/1.1 200 OK\r\nContent-Length: 31\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n\r\n' >"$d/wanth"
    cmp "$d/h1" "$d/wanth" || fail "GET / headers: $(cat -A "$d/h1")"
    curl -s --max-time 5 -D "$d/h2" -o "$d/b2" "http://127.0.0.1:$PORT/stats"
    # The second connection, its one request (the first connection made one too).
    grep -qx '{"connections":2,"open":[12],"requests":2,"bytes_in":[0-9]*,"bytes_out":[0-9]*}' "$d/b2" || fail "GET /stats body: $(cat "$d/b2")"
    grep -q $'^Content-Type: application/json\r$' "$d/h2" || fail "GET /stats headers: $(cat -A "$d/h2")"
    grep -q "^Content-Length: $(stat -c %s "$d/b2")"$'\r$' "$d/h2" || fail "GET /stats Content-Length is not the body's $(stat -c %s "$d/b2") bytes: $(cat -A "$d/h2")"
    run curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/nothing"
    [[ $output == 404 ]] || fail "GET /nothing: $output"
    run curl -s --max-time 5 -o /dev/null -w '%{http_code}' -X DELETE "http://127.0.0.1:$PORT/"
    [[ $output == 405 ]] || fail "DELETE /: $output"
    stop_server
}

@test "http: curl -I (HEAD) has the GET's headers and no body; the next request on its connection is intact" {
    need_curl
    start_server examples/http_server
    local d=$BATS_TEST_TMPDIR
    run curl -sv --max-time 5 -I "http://127.0.0.1:$PORT/" --next -s --max-time 5 -o "$d/b" "http://127.0.0.1:$PORT/"
    [[ $status -eq 0 ]] || fail "curl exited $status: $output"
    grep -q 'Re-using existing connection' <<<"$output" || fail "curl opened a second connection (a HEAD body would spoil the first): $output"
    ! grep -qi 'excess' <<<"$output" || fail "curl saw bytes after the HEAD response: $output"
    grep -q '^< Content-Length: 31' <<<"$output" || fail "HEAD: no Content-Length of the GET body: $output"
    printf "$HELLO" >"$d/want"
    cmp "$d/b" "$d/want" || fail "the GET after HEAD: $(od -c "$d/b" | head)"
    stop_server
    [[ $(counter accepted) -eq 1 ]] || fail "accepted $(counter accepted) connections, want 1"
}

@test "http: curl keep-alive: two URLs in one curl reuse the connection (Re-using), the server saw one" {
    need_curl
    start_server examples/http_server -t 2
    run curl -sv --max-time 5 "http://127.0.0.1:$PORT/" "http://127.0.0.1:$PORT/stats"
    [[ $status -eq 0 ]] || fail "curl exited $status: $output"
    grep -q 'Re-using existing connection' <<<"$output" || fail "no connection reuse: $output"
    grep -q '"connections":1,"open":1,"requests":2' <<<"$output" || fail "/stats on the reused connection: $output"
    stop_server
    [[ $(counter accepted) -eq 1 ]] || fail "accepted $(counter accepted), want 1"
}

@test "http: every error status, exact bytes, then a clean close (only errors close) -t 0" {
    start_server examples/http_server --max-head 512 --max-body 1000
    run http errors --max-head 512 --max-body 1000
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
    # Refusals are answered, not dropped as bad frames; each one logged with its reason.
    [[ $(counter "bad frames") -eq 0 ]] || fail "bad frames $(counter "bad frames"), want 0"
    [[ $(http_counter refused) -eq 10 ]] || fail "refused $(http_counter refused), want 10"
    grep -q ': 431 request head too large: closing' "$SERVER_ERR" || fail "no log line for the 431"
}

@test "http: every error status, exact bytes, then a clean close -t 2" {
    start_server examples/http_server -t 2 --max-head 300 --max-body 10
    run http errors --max-head 300 --max-body 10
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
}

@test "http: keep-alive, Connection: close and HTTP/1.0 (exact bytes, close or not)" {
    start_server examples/http_server
    run http keepalive
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
}

@test "http: pipelined requests cut at random points are answered in order -t 0" {
    # First the connection that sends its 61 requests in one write, alone on its server: many
    # requests in one read, so more frames than reads (with the cut connections beside it,
    # their reads could outnumber every frame and hide that).
    start_server examples/http_server
    run http pipeline --count 60 --connections 1
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
    (($(counter frames) > $(counter reads))) || fail "frames $(counter frames) <= reads $(counter reads): nothing was pipelined" || return
    start_server examples/http_server
    run http pipeline --count 60 --connections 6
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
}

@test "http: requests pipelined behind Connection: close, HTTP/1.0 or a refusal are never answered: the answers up to it, then EOF (requests 4, refused 1; -t 0 and -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/http_server -t "$t"
        run http after_close
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: $output"; } || return
        stop_server || return
        (($(http_counter requests) == 4 && $(http_counter refused) == 1)) ||
            fail "-t $t: requests $(http_counter requests), refused $(http_counter refused); want 4 and 1 (nothing read after the closing request reaches the application)" || return
    done
}

@test "http: pipelined requests cut at random points are answered in order -t 2" {
    start_server examples/http_server -t 2
    run http pipeline --count 60 --connections 6 --max-piece 7
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
}

@test "http: head and body limits at the boundary and one past (--max-head 600 --max-body 700)" {
    start_server examples/http_server --max-head 600 --max-body 700
    run http limits --max-head 600 --max-body 700
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
    # 431 (head), 413 (max-body + 1), 413 (max-body x 10; 600 bytes leave no room for the
    # 101-header-lines case): answered, not dropped.
    [[ $(http_counter refused) -eq 3 && $(counter "bad frames") -eq 0 ]] ||
        fail "refused $(http_counter refused), bad frames $(counter "bad frames"); want 3 and 0"
}

@test "http: --max-body 0 takes no body: a request without one is answered, Content-Length 1 is 413" {
    need_curl
    start_server examples/http_server --max-body 0
    local t
    t=$(awk -v k="$TIMEOUT_SCALE" 'BEGIN { print 5 * k }')
    run curl -s --max-time "$t" -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/"
    [[ $output == 200 ]] || { stop_server; fail "GET /: $output"; } || return
    run curl -s --max-time "$t" -w '%{http_code}' --data x "http://127.0.0.1:$PORT/"
    [[ $output == $'body too large\n413' ]] || { stop_server; fail "POST / with 1 byte: $output"; } || return
    stop_server
    [[ $(http_counter refused) -eq 1 ]] || fail "refused $(http_counter refused), want 1"
}

@test "http: the widest limits the options take (--max-head 1048576 --max-body 4294967295) at the boundary and one past" {
    start_server examples/http_server --max-head 1048576 --max-body 4294967295
    run http widest --max-head 1048576 --max-body 4294967295
    [[ $status -eq 0 ]] || { stop_server; fail "$output"; } || return
    stop_server || return
    (($(http_counter refused) == 2)) || fail "refused $(http_counter refused), want 2 (the 431 and the 413)" || return
}

@test "http: the default limits (8192-byte head, 1 MiB body) at the boundary and one past -t 1" {
    start_server examples/http_server -t 1
    run http limits --max-head 8192 --max-body 1048576
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
}

@test "http: a bad request closes only that client" {
    start_server examples/http_server -t 1
    run http isolated
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
    [[ $(http_counter refused) -eq 1 ]] || fail "refused $(http_counter refused), want 1"
}

@test "http: /stats counts connections, open, requests and bytes exactly" {
    start_server examples/http_server
    run http stats
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
}

@test "http: --idle-timeout closes an idle keep-alive connection, not a busy one (reason idle)" {
    local idle
    idle=$(awk -v k="$TIMEOUT_SCALE" 'BEGIN { print 0.2 * k }')
    start_server examples/http_server --idle-timeout "$idle"
    run http idle --idle "$idle"
    [[ $status -eq 0 ]] || fail "$output"
    stop_server
    [[ $(counter idle) -eq 1 ]] || fail "idle $(counter idle), want 1"
}

@test "http: wrk -t1 -c10 -d1s: no non-2xx responses, no socket errors (-t 0 and -t 2)" {
    need_wrk
    local t
    for t in 0 2; do
        start_server examples/http_server -t "$t"
        run timeout "$(awk -v k="$TIMEOUT_SCALE" 'BEGIN { print 10 * k }')" wrk -t1 -c10 -d1s "http://127.0.0.1:$PORT/"
        [[ $status -eq 0 ]] || fail "wrk exited $status: $output"
        ! grep -q 'Non-2xx' <<<"$output" || fail "-t $t: $output"
        ! grep -q 'Socket errors' <<<"$output" || fail "-t $t: $output"
        local n
        n=$(sed -n 's/^ *\([0-9][0-9]*\) requests in .*/\1/p' <<<"$output")
        ((n > 0)) || fail "-t $t: no requests: $output"
        stop_server
        # wrk counts what it got answered; the server answered at least that many.
        (($(http_counter requests) >= n)) || fail "-t $t: server answered $(http_counter requests), wrk counted $n"
    done
}

@test "http: SIGTERM with keep-alive clients connected exits 0 at once" {
    start_server examples/http_server -t 1
    exec {c1}<>/dev/tcp/127.0.0.1/"$PORT"
    printf 'GET / HTTP/1.1\r\nHost: t\r\n\r\n' >&$c1
    local line
    IFS= read -r -t "$(awk -v k="$TIMEOUT_SCALE" 'BEGIN { print 5 * k }')" line <&$c1 || fail "no answer"
    [[ $line == $'HTTP/1.1 200 OK\r' ]] || fail "answer: $line"
    stop_server
    exec {c1}<&-
}

# --- closing: lingering, half-closed clients, short connections ---------------------------

@test "http: lingering close: 20 clients streaming a body after its 413 each get the whole 413, then EOF, never a reset; each close lingered (-t 0 and -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/http_server -t "$t" --max-body 1000
        run http linger --mode full --count 20 --max-body 1000
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: $output"; } || return
        stop_server || return
        (($(counter refused) == 20)) || fail "-t $t: refused $(counter refused), want 20" || return
        (($(counter lingered) == 20)) || fail "-t $t: lingered $(counter lingered), want 20 (one per refused client)" || return
        (($(counter "linger cut") == 0)) || fail "-t $t: linger cut $(counter "linger cut"), want 0 (every client closed first)" || return
    done
}

@test "http: a lingering close ends at its bounds: a peer that never stops sending is cut at 1 MiB discarded; one sending a byte every 50 ms at 2 s (log lines; linger cut 2)" {
    start_server examples/http_server -t 1 --max-body 1000
    run http linger --mode bytes --max-body 1000
    [[ $status -eq 0 ]] || { stop_server; fail "bytes: $output"; } || return
    wait_file_match "$SERVER_ERR" 'lingering close: [0-9]* bytes discarded, over linger_bytes 1048576: closing'
    # Cut at the first read past the bound: at most one read (64 KiB) over it.
    local cut
    cut=$(sed -n 's/.*lingering close: \([0-9]*\) bytes discarded, over linger_bytes.*/\1/p' "$SERVER_ERR")
    ((cut >= 1048576 && cut <= 1048576 + 65536)) || { stop_server; fail "cut after $cut bytes discarded, want 1048576 to 1114112"; } || return
    run http linger --mode time --linger 2 --max-body 1000
    [[ $status -eq 0 ]] || { stop_server; fail "time: $output"; } || return
    wait_file_match "$SERVER_ERR" 'lingering close: the peer still sending after 2000 ms \([0-9]* bytes discarded\): closing'
    # By the server's own clock: from its 413 to the cut, 2 s (the timer), not much more.
    local took
    took=$(python3 - "$SERVER_ERR" <<'PY'
import datetime, re, sys
t = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)Z .*session (\d+)[ :].*(413 body too large|still sending after)", line)
    if m:
        t.setdefault(m.group(3), {})[m.group(2)] = datetime.datetime.fromisoformat(m.group(1))
sid = next(iter(t["still sending after"]))
print("%.3f" % (t["still sending after"][sid] - t["413 body too large"][sid]).total_seconds())
PY
)
    awk -v t="$took" -v k="$TIMEOUT_SCALE" 'BEGIN { exit !(t >= 1.99 && t <= 2 + 0.5 * k) }' ||
        { stop_server; fail "the linger lasted $took s by the server's log, want 2 s (at most 2 + 0.5 x TIMEOUT_SCALE)"; } || return
    stop_server
    (($(counter "linger cut") == 2)) || fail "linger cut $(counter "linger cut"), want 2"
    (($(counter lingered) == 2)) || fail "lingered $(counter lingered), want 2"
}

@test "http: short connections: 50 GETs with Connection: close are answered with no epoll_ctl MOD (rewatches 0: the write is tried first) and no linger (nothing unread) (-t 0 and -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/http_server -t "$t"
        run http short --count 50
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: $output"; } || return
        stop_server || return
        (($(counter accepted) == 50)) || fail "-t $t: accepted $(counter accepted), want 50" || return
        (($(counter rewatches) == 0)) || fail "-t $t: rewatches $(counter rewatches), want 0: a reply the kernel took at once needs no WRITE watch" || return
        (($(counter lingered) == 0)) || fail "-t $t: lingered $(counter lingered), want 0: nothing was left unread" || return
    done
}

@test "http: GET / then shutdown(SHUT_WR) (nc -N): the whole answer, then EOF (-t 0 and -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/http_server -t "$t"
        run http sendeof
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: $output"; } || return
        stop_server || return
    done
}
