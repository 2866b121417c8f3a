#!/usr/bin/env bash
# tests/valgrind.sh: 08's examples under valgrind for a short load (issue 18).
#
#   tests/valgrind.sh            (or: make valgrind)
#
# Builds 08_framework normally (valgrind and the sanitizers do not mix), then runs
# examples/echo (also with -t 2 io threads), kv_server, http_server and heartbeat_server
# under `valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite`.
# (chat_server passes too, `run_one chat_server "chat --stage08"`, but took 26 s to echo's 16 s
# and heartbeat_server's 11 s in one run at load 29: more than CI's budget has room for.)
# Each gets TRIPS (default 300) request/answer round trips from tests/lib/battery.py, every
# byte checked, then the battery's error paths (garbage, a 4 GiB frame header, a 1 MiB line,
# 100 connections at once, a reset in the middle of replies), then SIGTERM. Fails on any
# valgrind error, any definite leak, a wrong answer, or a server that does not exit 0.
# Deadlines: TIMEOUT_SCALE (default 1) times 5 for valgrind's slowdown. About a minute.
# Exit 0: all clean; 1: a failure (the valgrind log is printed); 2: valgrind missing.
set -u
case ${1:-} in
    -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "usage: tests/valgrind.sh [--help]   (TRIPS=N, TIMEOUT_SCALE=K in the environment)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
if ! command -v valgrind >/dev/null; then
    echo "tests/valgrind.sh: valgrind is not installed (Debian/Ubuntu: apt-get install valgrind)" >&2
    exit 2
fi
TRIPS=${TRIPS:-300}
export TIMEOUT_SCALE=$((${TIMEOUT_SCALE:-1} * 5))
make -s -C 08_framework SAN= >/dev/null || { echo "tests/valgrind.sh: make -C 08_framework failed" >&2; exit 1; }
# The client needs descriptors for the 100 connections; the server inherits the limit.
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || ulimit -Sn 4096 2>/dev/null || true

work=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# run_one NAME PROTO [SERVER ARGS...]   (PROTO: battery.py's --proto value, and any more
# battery options after it, split on spaces: "chat --stage08")
failed=0
run_one() {
    local name=$1 proto=$2
    shift 2
    local label="$name${*:+ $*}" log="$work/$name.vg" out="$work/$name.out" err="$work/$name.err"
    local t0=$SECONDS
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
        --log-file="$log" "08_framework/examples/$name" -p 0 "$@" >"$out" 2>"$err" &
    pid=$!
    local line= deadline=$((SECONDS + 6 * TIMEOUT_SCALE))
    until line=$(grep -m1 '^listening on ' "$out" 2>/dev/null); do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
            echo "FAIL $label: no 'listening on' line under valgrind; its stderr and valgrind log:"
            tail -n 20 "$err" "$log"
            kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=
            failed=1
            return
        fi
        sleep 0.1   # poll interval of a loop with a deadline
    done
    local port=${line##*:} st=0 why=
    timeout -k 5 "$((60 * TIMEOUT_SCALE / 5))" python3 tests/lib/battery.py --port "$port" --pid "$pid" \
        --log "$err" --proto $proto --trips "$TRIPS" --no-memory --conns 100 \
        --attacks garbage,header4g,longline,conns,reset >"$work/battery.out" 2>&1 || why="the battery failed"
    kill -TERM "$pid" 2>/dev/null
    deadline=$((SECONDS + 4 * TIMEOUT_SCALE))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS <= deadline)); do sleep 0.1; done   # poll with a deadline
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        why+="${why:+; }it did not exit within $((4 * TIMEOUT_SCALE)) s of SIGTERM"
    fi
    wait "$pid" || st=$?
    pid=
    ((st == 99)) && why+="${why:+; }valgrind found errors (exit 99)"
    ((st != 0 && st != 99)) && why+="${why:+; }it exited with status $st"
    grep -qE 'definitely lost: [1-9]|ERROR SUMMARY: [1-9]|Invalid (read|write|free)|uninitialised' "$log" &&
        why+="${why:+; }valgrind reported something"
    if [[ -n $why ]]; then
        echo "FAIL $label: $why ($((SECONDS - t0)) s); the battery said:"
        sed 's/^/  /' "$work/battery.out"
        echo "  valgrind's log:"
        head -n 60 "$log" | sed 's/^/  /'
        echo "  the server's stderr ends with:"
        tail -n 5 "$err" | sed 's/^/  /'
        failed=1
    else
        echo "ok $label: $TRIPS round trips and the error paths, no valgrind error, no definite leak, exit 0 ($((SECONDS - t0)) s)"
    fi
}

run_one echo echo
run_one echo echo -t 2
run_one kv_server kv
run_one http_server http
run_one heartbeat_server heartbeat
((failed == 0)) && echo "tests/valgrind.sh: clean" || echo "tests/valgrind.sh: FAILED"
exit "$failed"
