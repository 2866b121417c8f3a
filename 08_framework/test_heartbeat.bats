#!/usr/bin/env bats
# 08_framework: heartbeat_server and heartbeat_client (README.md, section 9). A fake peer
# (tests/lib/heartbeat.py) checks every byte of every frame it gets and answers the PINGs a
# pattern says to answer: it is closed right after the 3rd PING in a row it left unanswered (not
# the 2nd, not the 4th), 3 intervals after the 1st of them; a peer that answers stays up. Bad
# types and lengths drop only their connection; a closed session's timer is gone; the client
# reconnects after a server restart and its counters match the servers'. At -t 0 and -t 2.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"
bats_require_minimum_version 1.5.0

HB="$KIT_ROOT/tests/lib/heartbeat.py"

# start_server names its logs after the binary: examples/NAME.PID.out needs the folder.
setup() {
    mkdir -p "$BATS_TEST_TMPDIR/examples"
    # The heartbeat interval of the timing tests: 100 ms, stretched by TIMEOUT_SCALE (the
    # fake peer allows half an interval either way around 3 intervals).
    IV=$(scaled_ms 0.1)
}

# scaled_s SECONDS: SECONDS stretched by TIMEOUT_SCALE, for `timeout` and `read -t`.
scaled_s() {
    awk -v s="$1" -v k="$TIMEOUT_SCALE" 'BEGIN { print s * k }'
}

# hb SUBCMD [ARGS...]: the fake peer against the running server; its `ok:`/`FAIL:` line shown.
hb() {
    python3 "$HB" "$1" --port "$PORT" "${@:2}"
}

# hb_num LINE NAME: a number in a counts line, the server's (`heartbeat: received ping P,
# pong Q, data D; sent ping ...; timeouts T, bad frames B`) or the client's (`heartbeat_client:
# connects C; sent ...; received ...; timeouts T, bad frames B, errors E`). NAME: `sent ping`,
# `received data`, `timeouts`, `connects`...
hb_num() {
    local line=${1##*heartbeat: } name=$2 head= sec item secs items
    line=${line##*heartbeat_client: }
    if [[ $name == sent\ * || $name == received\ * ]]; then
        head=${name%% *}
        name=${name#* }
    fi
    IFS=';' read -ra secs <<<"$line"
    for sec in "${secs[@]}"; do
        sec=${sec# }
        if [[ -n $head ]]; then
            [[ $sec == "$head "* ]] || continue
            sec=${sec#"$head "}
        fi
        IFS=',' read -ra items <<<"$sec"
        for item in "${items[@]}"; do
            item=${item# }
            if [[ $item =~ ^$name\ ([0-9]+)$ ]]; then
                echo "${BASH_REMATCH[1]}"
                return 0
            fi
        done
    done
    fail "no '$2' counter in: $1" || return
}

# hb_counter NAME [FILE]: NAME in the server's counts line (after stop_server; FILE: another
# server's stderr).
hb_counter() {
    local line
    line=$(grep -m1 ' heartbeat: received ping ' "${2:-$SERVER_ERR}") || fail "no 'heartbeat: received ping ...' line in ${2:-$SERVER_ERR}" || return
    hb_num "$line" "$1"
}

# lib_counter NAME: the number after NAME in the library's `stopped: accepted ...` line.
lib_counter() {
    local line n
    line=$(grep -m1 ' stopped: accepted ' "$SERVER_ERR") || fail "no 'stopped: accepted ...' line" || return
    n=$(sed -n "s/.*[:,] $1 \([0-9][0-9]*\)\(,.*\)\{0,1\}$/\1/p" <<<"$line")
    [[ -n $n ]] || fail "no '$1' counter in: $line" || return
    echo "$n"
}

# clean NAME FILE: no sanitizer report in FILE (a client example's output).
clean() {
    local r
    r=$(grep -m1 -E "$SANITIZER_RE" "$2") || return 0
    fail "$1: sanitizer report: $r" "$(grep -A 12 -m1 -E "$SANITIZER_RE" "$2")" || return
}

# wait_exit PID NAME [SECONDS]: wait_bg, once PID has exited within SECONDS (default 5).
wait_exit() {
    local deadline=$(($(now_ms) + $(scaled_ms "${3:-5}")))
    while ! has_exited "$1"; do
        (($(now_ms) < deadline)) || fail "$2 did not exit within ${3:-5} s: $(tail -n 5 "$BATS_TEST_TMPDIR/$2.out")" || return
        sleep 0.02   # poll interval of a loop with a deadline
    done
    wait_bg "$1" "$2"
}

# fake_start ARGS...: the fake peer (tests/lib/heartbeat.py ARGS) in the background; once it
# says where it listens, FAKE_PID and FAKE_PORT.
fake_start() {
    start_bg fake python3 "$HB" "$@"
    FAKE_PID=$BG_PID
    wait_file_match "$BATS_TEST_TMPDIR/fake.out" '^listening on ' 10 || return
    FAKE_PORT=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$BATS_TEST_TMPDIR/fake.out")
}

# fake_done FAKE_PID CLIENT_PID CLIENT_OUT: once the fake has ended its script (within 30 s),
# its lines as notes, the client stopped with SIGTERM and checked for a sanitizer report; its
# exit status in CLIENT_STATUS.
fake_done() {
    wait_exit "$1" fake 30 || return
    sed 's/^/# /' "$BATS_TEST_TMPDIR/fake.out" >&3
    kill -TERM "$2"
    CLIENT_STATUS=0
    wait "$2" || CLIENT_STATUS=$?
    clean heartbeat_client "$3"
}

# --- the contract ------------------------------------------------------------------------

@test "heartbeat: --help exits 0; bad options (--interval 0, past a day, no value; client: no -p, --count without --data) exit 2 with usage on stderr" {
    local bin arg ex
    for ex in heartbeat_server heartbeat_client; do
        bin=$(stage_bin "examples/$ex")
        run --separate-stderr timeout "$(scaled_s 5)" "$bin" --help
        [[ $status -eq 0 && $output == usage:* && $output == *--interval* && -z $stderr ]] ||
            fail "$ex --help: status $status, stdout '$output', stderr '$stderr'" || return
    done
    bin=$(stage_bin examples/heartbeat_server)
    for arg in "--interval 0" "--interval 86400001" "--interval x" "--interval -5" "--interval" "--interval=" "--bogus" \
        "-p 65536" "--max-frame 0" "--high-water 5" "extra" "--intervalx100 -H 256.0.0.1" "--interval=5x"; do
        run --separate-stderr timeout "$(scaled_s 5)" "$bin" $arg
        [[ $status -eq 2 && -z $output && $stderr == *usage:* ]] || fail "heartbeat_server $arg exited $status, want 2: $stderr" || return
    done
    for arg in "--interval 1" "--interval=86400000" "--interval 5 -t 2 --max-frame 10"; do
        run --separate-stderr timeout "$(scaled_s 5)" "$bin" $arg -H 256.0.0.1
        [[ $status -eq 1 ]] || fail "heartbeat_server $arg -H 256.0.0.1 exited $status, want 1 (options accepted, no such address): $stderr" || return
    done
    bin=$(stage_bin examples/heartbeat_client)
    for arg in "" "-p 0" "-p 1 --interval 0" "-p 1 --count 3" "-p 1 --data x --data-ms 0" "-p 1 --retry-ms 100 --retry-max-ms 50" \
        "-p 1 -t 65" "-p 1 extra"; do
        run --separate-stderr timeout "$(scaled_s 5)" "$bin" $arg
        [[ $status -eq 2 && -z $output && $stderr == *usage:* ]] || fail "heartbeat_client $arg exited $status, want 2: $stderr" || return
    done
}

# --- the server's heartbeat, seen from a fake client ---------------------------------------

# Five fake clients at once, one python process (tests/lib/heartbeat.py multi).
@test "heartbeat: 5 fake clients at once (-t 0, -t 2): one that never answers and one that sends PINGs and DATA but no PONG are closed right after their 3rd PING, 3 intervals after the 1st (not 2, not 4); one that answers stays up across 9 intervals, every frame checked byte for byte; one that answers 1 PING in 3 is kept (a PONG resets the count), then closed 3 PINGs after it stops; a late PONG is no answer" {
    local t
    for t in 0 2; do
        start_server examples/heartbeat_server -t "$t" --interval "$IV"
        run python3 "$HB" multi --port "$PORT" --interval-ms "$IV" \
            --peer mute \
            --peer "busy --ping-ms $((IV / 3)) --data-ms $((IV / 4))" \
            --peer "steady --pattern aaaaaaaaa --hold 9 --ping-ms $((IV / 3)) --data-ms $((IV / 4)) --max-data 70000" \
            --peer "third --pattern ssassa --ping-ms $((IV / 2))" \
            --peer "late --pattern alll"
        [[ $status -eq 0 ]] || { stop_server; fail "-t $t: the fake clients:" "$output"; } || return
        sed 's/^/# /' <<<"$output" >&3
        stop_server || return
        local n to pi po di do_
        n=$(grep -c "no PONG to 3 PINGs in a row (interval $IV ms): closing" "$SERVER_ERR")
        ((n == 4)) || fail "-t $t: $n 'no PONG to 3 PINGs in a row' lines, want 4 (mute, busy, third, late)" || return
        to=$(hb_counter timeouts) && pi=$(hb_counter "received ping") && po=$(hb_counter "sent pong") &&
            di=$(hb_counter "received data") && do_=$(hb_counter "sent data") || return
        ((to == 4)) || fail "-t $t: timeouts $to, want 4 (steady kept)" || return
        ((pi == po && pi > 0 && di == do_ && di > 0)) ||
            fail "-t $t: received ping $pi, sent pong $po; received data $di, sent data $do_ (every PING answered, every DATA echoed)" || return
    done
}

@test "heartbeat: bad frames (unknown types, PING or PONG not 8 bytes, a length over --max-frame) close only their connection with a log line; DATA of --max-frame and 0 bytes is echoed; only good frames counted as received (-t 0, -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/heartbeat_server -t "$t" --interval 60000 --max-frame 4096
        hb bad --max-frame 4096 || { stop_server; return 1; }
        stop_server || return
        local n bad lib
        n=$(grep -c 'bad frame: unknown type (type 0x' "$SERVER_ERR")
        ((n == 4)) || fail "-t $t: $n 'bad frame: unknown type' lines, want 4" || return
        n=$(grep -c -E 'bad frame: (PING|PONG) body is not 8 bytes' "$SERVER_ERR")
        ((n == 3)) || fail "-t $t: $n 'body is not 8 bytes' lines, want 3" || return
        bad=$(hb_counter "bad frames") && lib=$(lib_counter "bad frames") || return
        ((bad == 7 && lib == 2)) || fail "-t $t: bad frames: heartbeat $bad (want 7), codec $lib (want 2)" || return
        # What was received is counted once it is judged good: the PONG for no PING, one PING
        # (each bad PING and PONG counts as a bad frame only), 4 DATA (max, 0, 1, the good
        # client's 100); sent: a PONG, 4 echoes, and the first PING on each of 11 connections.
        local k v want
        for k in "received ping:1" "received pong:1" "received data:4" "sent pong:1" "sent data:4" "sent ping:11"; do
            v=$(hb_counter "${k%:*}") || return
            want=${k##*:}
            ((v == want)) || fail "-t $t: ${k%:*} $v, want $want" || return
        done
        assert_log 'closed: bad frame' || return
    done
}

@test "heartbeat: a closed session's timer is stopped: 20 clients leave before their first tick, the server then PINGs no one (sent ping 20) and frees everything" {
    start_server examples/heartbeat_server -t 0 --interval 50
    hb churn --clients 20 || { stop_server; return 1; }
    # Four intervals with no client: a timer left behind would fire for a freed session.
    sleep "$(scaled_s 0.2)"
    stop_server || return
    local sp to
    sp=$(hb_counter "sent ping") && to=$(hb_counter timeouts) || return
    ((sp == 20 && to == 0)) || fail "sent ping $sp (want 20: one at each open), timeouts $to (want 0)"
}

# --- the client -------------------------------------------------------------------------------

@test "heartbeat: heartbeat_client closes a server that stops answering right after its 3rd unanswered PING, 3 intervals after the 1st; then reconnects and PINGs afresh (-t 0, -t 2)" {
    local t
    for t in 0 2; do
        local fake port
        fake_start fake-server --interval-ms "$IV" --pattern asa --ping-ms $((IV / 2)) --reconnect || return
        fake=$FAKE_PID port=$FAKE_PORT
        start_bg client "$(stage_bin examples/heartbeat_client)" -p "$port" -t "$t" --interval "$IV" --retry-ms 20 --retry-max-ms 100
        local cl=$BG_PID out="$BATS_TEST_TMPDIR/client.out"
        wait_exit "$fake" fake 30 || return
        sed 's/^/# /' "$BATS_TEST_TMPDIR/fake.out" >&3
        kill -TERM "$cl"
        wait_exit "$cl" client 2 || return
        clean heartbeat_client "$out" || return
        grep -q "no PONG to 3 PINGs in a row (interval $IV ms): closing" "$out" || fail "-t $t: no timeout line in the client's log:" "$(tail -n 5 "$out")" || return
        local line c to pi po
        line=$(grep '^heartbeat_client: ' "$out") || fail "-t $t: no counts line:" "$(tail -n 5 "$out")" || return
        c=$(hb_num "$line" connects) && to=$(hb_num "$line" timeouts) &&
            pi=$(hb_num "$line" "received ping") && po=$(hb_num "$line" "sent pong") || return
        ((c == 2 && to == 1 && pi == po && pi > 0)) || fail "-t $t: want connects 2, timeouts 1, every PING answered: $line" || return
    done
}

@test "heartbeat: heartbeat_client against heartbeat_server: it reconnects after a server restart on the same port; what it received is what the two servers sent, type by type (-t 0, -t 2)" {
    local t
    for t in 0 2; do
        start_server examples/heartbeat_server -t "$t" --interval "$IV"
        local port=$PORT out="$BATS_TEST_TMPDIR/client.out"
        start_bg client "$(stage_bin examples/heartbeat_client)" -p "$port" -t "$t" --interval $((IV / 2)) --data "hello $t" \
            --data-ms 10 --retry-ms 20 --retry-max-ms 100
        local cl=$BG_PID
        wait_file_match "$out" 'connected to 127\.0\.0\.1' 5 || return
        sleep "$(scaled_s 0.2)"   # traffic for 0.2 s: a few PINGs each way, about 20 DATA
        stop_server || return
        # The restarted server's log takes the same name (start_server): keep this one.
        local s1="$BATS_TEST_TMPDIR/server1.err"
        cp "$SERVER_ERR" "$s1" || return
        wait_file_match "$out" 'disconnected: (peer|reset)$' 5 || return
        wait_file_match "$out" 'connect failed \(attempt [0-9]+\)' 5 || return
        start_server examples/heartbeat_server -t "$t" --interval "$IV" -p "$port" || return
        [[ $PORT == "$port" ]] || fail "the new server listens on $PORT, not $port" || return
        local deadline=$(($(now_ms) + $(scaled_ms 5)))
        until (($(grep -c 'connected to 127\.0\.0\.1' "$out") >= 2)); do
            (($(now_ms) < deadline)) || fail "-t $t: not reconnected within 5 s:" "$(tail -n 5 "$out")" || return
            sleep 0.02   # poll interval of a loop with a deadline
        done
        sleep "$(scaled_s 0.2)"
        stop_server || return
        local s2=$SERVER_ERR
        deadline=$(($(now_ms) + $(scaled_ms 5)))
        until (($(grep -c -E 'disconnected: (peer|reset)$' "$out") >= 2)); do
            (($(now_ms) < deadline)) || fail "-t $t: no second disconnect:" "$(tail -n 5 "$out")" || return
            sleep 0.02   # poll interval of a loop with a deadline
        done
        kill -TERM "$cl"
        wait_exit "$cl" client 2 || return
        clean heartbeat_client "$out" || return
        local line k v1 v2 got slack resets
        # A server that stops with the client's last frames unread in its socket closes with
        # a reset, not a FIN; a client whose next write meets the reset closes before reading
        # the server's last frames. Then "received" is at most what was sent, else exactly.
        resets=$(grep -c 'disconnected: reset$' "$out") || true
        ((resets == 0)) || harness_note "-t $t: $resets of the 2 servers closed with a reset: received <= sent"
        line=$(grep '^heartbeat_client: ' "$out") || fail "-t $t: no counts line:" "$(tail -n 5 "$out")" || return
        [[ $(hb_num "$line" connects) == 2 && $(hb_num "$line" timeouts) == 0 && $(hb_num "$line" errors) == 0 ]] ||
            fail "-t $t: want connects 2, timeouts 0, errors 0: $line" || return
        for k in ping pong data; do
            v1=$(hb_counter "sent $k" "$s1") && v2=$(hb_counter "sent $k" "$s2") && got=$(hb_num "$line" "received $k") || return
            if ((resets == 0)); then
                ((v1 > 0 && v2 > 0 && got == v1 + v2)) || fail "-t $t: received $k $got, the servers sent $v1 + $v2: $line" || return
            else
                ((v1 > 0 && v2 > 0 && got <= v1 + v2 && got > 0)) || fail "-t $t: received $k $got, the servers sent $v1 + $v2: $line" || return
            fi
            v1=$(hb_counter "received $k" "$s1") && v2=$(hb_counter "received $k" "$s2") && got=$(hb_num "$line" "sent $k") || return
            # What the client sent as a server stopped may never have been read: a few frames.
            slack=$([[ $k == data ]] && echo 25 || echo 4)
            ((v1 > 0 && v2 > 0 && got >= v1 + v2 && got <= v1 + v2 + slack)) ||
                fail "-t $t: sent $k $got, the servers received $v1 + $v2: $line" || return
        done
        for k in "$s1" "$s2"; do
            v1=$(hb_counter "received data" "$k") && v2=$(hb_counter "sent data" "$k") || return
            ((v1 == v2)) || fail "-t $t: a server received $v1 DATA and sent $v2 back" || return
        done
        harness_note "-t $t: $line"
    done
}

@test "heartbeat: heartbeat_client --count N exits 0 after N DATA echoes, each checked, and prints its counts" {
    start_server examples/heartbeat_server -t 1 --interval 1000
    run --separate-stderr timeout "$(scaled_s 20)" "$(stage_bin examples/heartbeat_client)" -p "$PORT" --data 'a b c' --data-ms 5 --count 25
    stop_server || return
    [[ $status -eq 0 ]] || fail "status $status: $output $stderr" || return
    [[ $output =~ ^heartbeat_client:\ connects\ 1\;\ sent\ ping\ [0-9]+,\ pong\ [0-9]+,\ data\ 2[5-9]\;\ received\ ping\ [0-9]+,\ pong\ [0-9]+,\ data\ 25\;\ timeouts\ 0,\ bad\ frames\ 0,\ errors\ 0$ ]] ||
        fail "counts line: $output" || return
    local di
    di=$(hb_counter "received data") || return
    ((di >= 25)) || fail "the server received $di DATA, want at least 25"
}

@test "heartbeat: heartbeat_client checks every byte of every DATA echo: a fake server that flips the last byte of echo 5 is reported (echo 5, offset 6) and the client exits 1 with errors 1 (-t 1)" {
    local fake port
    fake_start fake-server --interval-ms "$IV" --pattern aaaa --hold 4 --echo --corrupt 5 --corrupt-offset 6 || return
    fake=$FAKE_PID port=$FAKE_PORT
    start_bg client "$(stage_bin examples/heartbeat_client)" -p "$port" -t 1 --interval "$IV" --data hello --data-ms $((IV / 10))
    local cl=$BG_PID out="$BATS_TEST_TMPDIR/client.out"
    local st
    fake_done "$fake" "$cl" "$out" || return
    st=$CLIENT_STATUS
    ((st == 1)) || fail "the client exited $st, want 1:" "$(tail -n 5 "$out")" || return
    grep -q 'DATA echo 5 differs at offset 6 (7 bytes, want 7)' "$out" || fail "no 'DATA echo 5 differs at offset 6' in:" "$(grep -v connector "$out" | tail -n 8)" || return
    local line
    line=$(grep '^heartbeat_client: ' "$out") || fail "no counts line" || return
    [[ $(hb_num "$line" errors) == 1 ]] || fail "want errors 1: $line"
}

@test "heartbeat: heartbeat_client drops a server that sends a frame of an unknown type (logged, counted in bad frames) and reconnects, PINGs numbered from 1 again (-t 0)" {
    local fake port
    fake_start fake-server --interval-ms "$IV" --bad-type 0x0009 --reconnect || return
    fake=$FAKE_PID port=$FAKE_PORT
    start_bg client "$(stage_bin examples/heartbeat_client)" -p "$port" -t 0 --interval "$IV" --retry-ms 20 --retry-max-ms 100
    local cl=$BG_PID out="$BATS_TEST_TMPDIR/client.out"
    wait_exit "$fake" fake 30 || return
    sed 's/^/# /' "$BATS_TEST_TMPDIR/fake.out" >&3
    kill -TERM "$cl"
    wait_exit "$cl" client 2 || return
    clean heartbeat_client "$out" || return
    grep -q 'bad frame: unknown type (type 0x0009, 1 bytes): closing' "$out" || fail "no bad frame line in the client's log:" "$(grep -v connector "$out" | tail -n 5)" || return
    local line
    line=$(grep '^heartbeat_client: ' "$out") || fail "no counts line" || return
    [[ $(hb_num "$line" "bad frames") == 1 && $(hb_num "$line" connects) == 2 && $(hb_num "$line" timeouts) == 0 ]] ||
        fail "want bad frames 1, connects 2, timeouts 0: $line"
}

@test "heartbeat: heartbeat_client counts a DATA it never sent as an error, even one equal to the echo its first DATA would get; exit 1 (-t 0)" {
    local fake port
    fake_start fake-server --interval-ms "$IV" --stray '1 hello' || return
    fake=$FAKE_PID port=$FAKE_PORT
    # Its first DATA is due a minute after the connect: none is in flight when the stray comes.
    start_bg client "$(stage_bin examples/heartbeat_client)" -p "$port" -t 0 --interval "$IV" --data hello --data-ms 60000 \
        --retry-ms 20 --retry-max-ms 100
    local cl=$BG_PID out="$BATS_TEST_TMPDIR/client.out"
    wait_exit "$fake" fake 30 || return
    wait_file_match "$out" 'disconnected: (peer|reset)$' 5 || return
    kill -TERM "$cl"
    local st=0
    wait "$cl" || st=$?
    clean heartbeat_client "$out" || return
    ((st == 1)) || fail "the client exited $st, want 1:" "$(grep -v connector "$out" | tail -n 5)" || return
    grep -q 'a DATA of 7 bytes with none in flight' "$out" || fail "no 'a DATA of 7 bytes with none in flight' in:" "$(grep -v connector "$out" | tail -n 5)" || return
    local line
    line=$(grep '^heartbeat_client: ' "$out") || fail "no counts line" || return
    [[ $(hb_num "$line" errors) == 1 && $(hb_num "$line" "received data") == 1 && $(hb_num "$line" "sent data") == 0 ]] ||
        fail "want errors 1, received data 1, sent data 0: $line"
}

# The client's DATA belong to one connection: after a reconnect they are numbered from 1 again
# (the usage: "N counts from 1 on each connection"), and the closed connection's DATA timer is
# gone, not ticking beside the new one's (twice the DATA on the next connection). The fake
# server closes the first connection with a DATA in flight; the client counts no error.
@test "heartbeat: heartbeat_client numbers its DATA from 1 on each connection, one timer's pace after a reconnect, a DATA lost in flight no error (-t 0)" {
    local fake port
    fake_start data-restart --text 'hi there' --data-ms $((IV / 2)) --first 5 --count 10 || return
    fake=$FAKE_PID port=$FAKE_PORT
    start_bg client "$(stage_bin examples/heartbeat_client)" -p "$port" -t 0 --interval 60000 --data 'hi there' --data-ms $((IV / 2)) \
        --retry-ms 20 --retry-max-ms 100
    local cl=$BG_PID out="$BATS_TEST_TMPDIR/client.out"
    local st
    fake_done "$fake" "$cl" "$out" || return
    st=$CLIENT_STATUS
    local line
    line=$(grep '^heartbeat_client: ' "$out") || fail "no counts line:" "$(grep -v connector "$out" | tail -n 5)" || return
    ((st == 0)) && [[ $(hb_num "$line" errors) == 0 && $(hb_num "$line" connects) -ge 2 ]] ||
        fail "exit $st; want 0, errors 0, connects 2 or more: $line" "$(grep -v connector "$out" | tail -n 5)"
}
