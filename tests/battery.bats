#!/usr/bin/env bats
# The bad-input battery (issue 18): tests/lib/battery.py against every stage with a protocol:
# garbage bytes, a frame header announcing 4 GiB, a 1 MiB line with no newline, 1000
# connections opened and closed at once, a client sending one byte per second, a reset in the
# middle of replies. Each test: the server stays up, a healthy client's every answer is exact
# before, during and after each attack, a dropped client has its log line, the server's
# descriptors come back and its memory stays bounded (battery.py's docstring states the
# bounds; not under SAN, whose quarantine keeps freed memory), and it stops cleanly.

load "$BATS_TEST_DIRNAME/lib/harness.bash"

BATTERY="$KIT_ROOT/tests/lib/battery.py"

setup() {
    # start_server names its logs after the binary: examples/echo.PID.out needs the folder.
    mkdir -p "$BATS_TEST_TMPDIR/examples"
}

# battery STAGE BINARY [BATTERY ARGS...] -- [SERVER ARGS...]: start the stage's server with
# room for the 1000 connections, run the battery against it, stop it (exit 0, no sanitizer
# report). The battery's own lines are shown under the test's name.
battery() {
    local stage=$1 name=$2
    shift 2
    local bargs=()
    while (($#)) && [[ $1 != -- ]]; do
        bargs+=("$1")
        shift
    done
    shift
    [[ -d $KIT_ROOT/$stage ]] || skip "no stage $stage in this kit"
    raise_nofile 2200
    STAGE_DIR="$KIT_ROOT/$stage" start_server "$name" "$@" || return
    assert_server_nofile 1100 || { stop_server; return 1; }
    [[ -n ${SAN:-} ]] && bargs+=(--no-memory)
    local st=0 out
    # A whole-run limit on top of the battery's own deadlines (~10 s at TIMEOUT_SCALE 1).
    out=$(timeout -k 5 "$((60 * TIMEOUT_SCALE))" python3 "$BATTERY" --port "$PORT" --pid "$SERVER_PID" \
        --log "$SERVER_ERR" "${bargs[@]}" 2>&1) || st=$?
    local line
    while IFS= read -r line; do harness_note "$line"; done <<<"$out"
    stop_server || return
    ((st == 0)) || fail "the battery failed (status $st${st/#124/: the whole-run limit}):" "$out"
}

@test "battery: 05 server" {
    battery 05_threads_queue server --proto line --
}

@test "battery: 06 --codec fixed:16" {
    battery 06_codecs server --proto codec --codec fixed:16 -- --codec fixed:16
}

@test "battery: 06 --codec line" {
    battery 06_codecs server --proto codec --codec line -- --codec line
}

@test "battery: 06 --codec len" {
    battery 06_codecs server --proto codec --codec len -- --codec len
}

@test "battery: 06 --codec resp" {
    battery 06_codecs server --proto codec --codec resp -- --codec resp
}

@test "battery: 06 --codec http" {
    battery 06_codecs server --proto codec --codec http -- --codec http
}

@test "battery: 07 server" {
    battery 07_chat server --proto chat --
}

@test "battery: 08 chat_server" {
    battery 08_framework examples/chat_server --proto chat --stage08 --
}

@test "battery: 08 kv_server" {
    battery 08_framework examples/kv_server --proto kv --
}

@test "battery: 08 http_server" {
    battery 08_framework examples/http_server --proto http --
}

@test "battery: 08 heartbeat_server" {
    battery 08_framework examples/heartbeat_server --proto heartbeat --
}

@test "battery: 08 echo" {
    battery 08_framework examples/echo --proto echo --
}
