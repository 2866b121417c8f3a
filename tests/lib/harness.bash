# harness.bash: what every stage's test.bats loads.
# Starts a stage's server on an ephemeral port, stops it and checks it stopped cleanly,
# and wraps the shared Python client (netkit.py) and the shared echo scenarios.
#
# Rules it enforces, so that no test has to remember them:
#   - no fixed ports: servers run with -p 0 and we read the real port from `listening on`;
#   - no sleeps as readiness checks: every wait polls a condition with a deadline;
#   - every deadline is multiplied by TIMEOUT_SCALE (default 1) for slow machines;
#   - a server must exit 0 within 2 s of SIGTERM and print no sanitizer report;
#   - whatever a test started is killed in teardown, even when the test failed.

KIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STAGE_DIR="${STAGE_DIR:-$BATS_TEST_DIRNAME}"
TIMEOUT_SCALE="${TIMEOUT_SCALE:-1}"
NETKIT="$KIT_ROOT/tests/lib/netkit.py"
MATRIX="$KIT_ROOT/tests/lib/matrix.py"
export TIMEOUT_SCALE

SERVER_PID=
SERVER_ERR=
SERVER_OUT=
PORT=

# --- small helpers -----------------------------------------------------------

# fail MESSAGE...: print to stderr and fail the current test.
fail() {
    printf '%s\n' "$*" >&2
    return 1
}
# Inside the harness every `fail` is followed by `|| return`: under bats `run` errexit is
# off, and a helper that printed a failure must still stop.

now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
}

# scaled_ms SECONDS: milliseconds, stretched by TIMEOUT_SCALE (SECONDS may be fractional).
scaled_ms() {
    awk -v s="$1" -v k="$TIMEOUT_SCALE" 'BEGIN { printf "%d", s * k * 1000 }'
}

# has_exited PID: true once PID is gone or a zombie waiting for us to reap it.
has_exited() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [[ ${stat:0:1} == Z ]]
}

# proc_children_ok: true when this kernel lists a task's children in /proc (CONFIG_PROC_CHILDREN).
# Without it, descendants() would find no children and the checks built on it (zombies,
# children left behind) would pass without looking; they fail or skip instead.
proc_children_ok() {
    [[ -r /proc/$$/task/$$/children ]]
}

# require_proc_children: skip the current test, saying why, where descendants() cannot work.
require_proc_children() {
    proc_children_ok || skip "this kernel has no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN): cannot see child processes"
}

# descendants PID: every process below PID, one per line. From /proc/PID/task/*/children
# where the kernel has it; otherwise from the parent pid in every /proc/N/stat (slower,
# but never an empty answer that would let a check pass without looking).
descendants() {
    local p child
    if proc_children_ok; then
        for p in /proc/"$1"/task/*/children; do
            for child in $(cat "$p" 2>/dev/null); do
                echo "$child"
                descendants "$child"
            done
        done
        return
    fi
    local stat rest
    for p in /proc/[0-9]*/stat; do
        stat=$(cat "$p" 2>/dev/null) || continue
        rest=${stat##*) }
        set -- "$1" $rest
        if [[ $3 == "$1" ]]; then
            child=${p#/proc/}
            child=${child%/stat}
            echo "$child"
            descendants "$child"
        fi
    done
}

# stage_bin NAME: the binary under test, honouring SAN (sanitized builds live in build-<san>/)
# and STAGE_BUILD (a build folder inside the stage, e.g. build-coverage for `make coverage`).
# HARNESS_SUBST="NAME=PATH ..." (paths without spaces) runs PATH wherever a test asks for the
# stage's NAME: 08's test_chat.bats runs 07's protocol tests against examples/chat_server so.
stage_bin() {
    local pair
    for pair in ${HARNESS_SUBST:-}; do
        if [[ ${pair%%=*} == "$1" ]]; then
            echo "${pair#*=}"
            return
        fi
    done
    if [[ -n ${STAGE_BUILD:-} ]]; then
        echo "$STAGE_DIR/$STAGE_BUILD/$1"
    elif [[ -n ${SAN:-} ]]; then
        echo "$STAGE_DIR/build-${SAN//,/-}/$1"
    else
        echo "$STAGE_DIR/$1"
    fi
}

# sanitizer_report FILE: print the first sanitizer report line in FILE, if any.
SANITIZER_RE='ERROR: (Address|Leak|Memory)Sanitizer|WARNING: ThreadSanitizer|runtime error:|ThreadSanitizer: (reported|unexpected)'
sanitizer_report() {
    grep -m1 -E "$SANITIZER_RE" "$1" 2>/dev/null
}

# sanitizer_head FILE: the head of the first sanitizer report in FILE: its `ERROR: ...` (or
# `runtime error:`, `WARNING: ThreadSanitizer`) line, the stacks that follow, up to its
# `SUMMARY:` line, at most 40 lines. Not the shadow-byte legend that ends an ASan report: the
# legend is the same for every bug; the first line and the first frames say which one it is.
sanitizer_head() {
    awk -v re="$SANITIZER_RE" '
        !on && $0 ~ re { on = 1 }
        on { print; if (++n >= 40 || /^SUMMARY: /) exit }' "$1" 2>/dev/null
}

# kept_dir: where a failed test's server logs are kept after bats deletes the test's own
# folder: TEST_OUT (tests/run sets it to its log folder) or tests/.out, then kept/.
kept_dir() {
    echo "${TEST_OUT:-$KIT_ROOT/tests/.out}/kept"
}

# keep_log FILE: copy FILE to kept_dir as <test file>-<test number>-<name>, print the new path.
keep_log() {
    local dir base
    dir=$(kept_dir)
    base=$(basename "${BATS_TEST_FILENAME:-test}" .bats)
    [[ $base == test ]] && base=$(basename "$(dirname "${BATS_TEST_FILENAME:-.}")")
    mkdir -p "$dir" 2>/dev/null && cp "$1" "$dir/$base-${BATS_TEST_NUMBER:-0}-$(basename "$1")" 2>/dev/null &&
        echo "$dir/$base-${BATS_TEST_NUMBER:-0}-$(basename "$1")"
}

# harness_note MESSAGE: a line in the test's output even when it passes (bats shows what a
# test writes to fd 3 as a `# ` comment; tests/run prints those under the test's name).
harness_note() {
    if { true >&3; } 2>/dev/null; then
        printf '# %s\n' "$*" >&3
    else
        printf '%s\n' "$*" >&2
    fi
}

# --- the server under test ---------------------------------------------------

# start_server NAME [ARGS...]: start NAME -p 0 ARGS in the background and wait for its
# `listening on HOST:PORT` line. Sets SERVER_PID, PORT, SERVER_OUT, SERVER_ERR.
start_server() {
    local name=$1
    shift
    local bin
    bin=$(stage_bin "$name")
    [[ -x $bin ]] || fail "no binary $bin: build it with: make -C $STAGE_DIR${SAN:+ SAN=$SAN}" || return
    SERVER_OUT="$BATS_TEST_TMPDIR/$name.$$.out"
    SERVER_ERR="$BATS_TEST_TMPDIR/$name.$$.err"
    # 3>&- : bats waits on fd 3; a server holding it would hang the whole run.
    # SERVER_NOFILE=N runs the server alone under `ulimit -n N` (EMFILE tests).
    (
        if [[ -n ${SERVER_NOFILE:-} ]]; then ulimit -n "$SERVER_NOFILE" || exit 99; fi
        exec "$bin" -p 0 "$@"
    ) >"$SERVER_OUT" 2>"$SERVER_ERR" 3>&- &
    SERVER_PID=$!
    # Also on disk: a start_server inside `run` is a subshell whose variables are lost.
    echo "$SERVER_PID" >>"$BATS_TEST_TMPDIR/harness.pids"
    echo "$SERVER_PID" >>"$BATS_TEST_TMPDIR/harness.servers"
    echo "$SERVER_ERR" >>"$BATS_TEST_TMPDIR/harness.errs"
    local deadline line
    deadline=$(($(now_ms) + $(scaled_ms 5)))
    while :; do
        line=$(grep -m1 '^listening on ' "$SERVER_OUT" 2>/dev/null) && break
        if has_exited "$SERVER_PID"; then
            local st=0
            wait "$SERVER_PID" || st=$?
            fail "$name exited (status $st) before printing 'listening on'; its stderr:" \
                "$(tail -n 20 "$SERVER_ERR")" || return
        fi
        if (($(now_ms) >= deadline)); then
            # It never became the server under test: end it here, not as a leftover.
            kill -KILL "$SERVER_PID" 2>/dev/null
            wait "$SERVER_PID" 2>/dev/null || true
            fail "$name printed no 'listening on HOST:PORT' line within 5 s" || return
        fi
        sleep 0.02   # poll interval of a loop with a deadline
    done
    PORT=${line##*:}
    [[ $PORT =~ ^[0-9]+$ && $PORT -gt 0 ]] || fail "bad 'listening on' line from $name: '$line'" || return
    local host=${line#listening on }
    host=${host%:*}
    host=${host#[}
    host=${host%]}
    # Told no -H, a server listens on 127.0.0.1 (the contract's default: loopback only, never
    # every address); told one, on that one; the line says where it really listens; and every
    # descriptor it has opened, the listening socket first, is close-on-exec.
    [[ " $* " == *" -H "* ]] || [[ $host == 127.0.0.1 ]] ||
        fail "$name was given no -H but says '$line' (the default is 127.0.0.1)" || return
    # /proc/net/tcp is read in pieces, and rows that other tests' sockets add or drop between
    # two reads can shift one out of the listing: a missing row is read again (3 reads).
    local why try
    for try in 1 2 3; do
        why=$(listens_on "$SERVER_PID" "$host" "$PORT") && break
        [[ $why == "no socket of process"* ]] || break
        sleep 0.05   # a fresh read of /proc/net/tcp, not a wait for the server
    done
    [[ -z $why ]] || fail "$name says '$line', but $why" || return
    why=$(made_cloexec "$SERVER_PID" "$BASHPID") || fail "$name: $why" || return
}

# made_cloexec PID SHELL: every descriptor PID has opened so far (its epoll, eventfd,
# signalfd, pipes, spare descriptor, sockets: all but 0-2) is close-on-exec (the contract: a
# program the server might exec inherits none of them). One it inherited from SHELL, the
# shell that started it (the same fd number, the same file, in SHELL), is not the server's.
# Under a sanitizer only sockets and anon inodes (epoll, eventfd, signalfd): its runtime opens
# files and pipes of its own. If not, says why on stdout.
made_cloexec() {
    local fd n target flags leak=
    for fd in /proc/"$1"/fd/*; do
        n=${fd##*/}
        ((n > 2)) || continue
        flags=$(sed -n 's/^flags:[[:space:]]*//p' "/proc/$1/fdinfo/$n" 2>/dev/null) || continue
        [[ -n $flags ]] && (((8#$flags & 8#2000000) == 0)) || continue
        target=$(readlink "$fd" 2>/dev/null) || continue
        [[ -z ${SAN:-} || $target == socket:* || $target == anon_inode:* ]] || continue
        [[ $(readlink "/proc/$2/fd/$n" 2>/dev/null) == "$target" ]] && continue   # inherited
        leak+=" $n ($target)"
    done
    [[ -z $leak ]] || { echo "descriptors it opened are not close-on-exec (no O_CLOEXEC in /proc/PID/fdinfo):$leak"; return 1; }
}

# listens_on PID HOST PORT: PID's listening sockets on PORT are bound to HOST (127.0.0.1 or
# ::1; others are not checked) and to nothing else: from /proc/net/tcp{,6}, the sockets that
# are descriptors of PID or its descendants (a wrapper's child). If not, says why on stdout.
listens_on() {
    local want fd f local st inode addr port bad= found=
    local -A fd_of=()
    case $2 in
        127.0.0.1) want=0100007F ;;
        ::1) want=00000000000000000000000001000000 ;;
        *) return 0 ;;
    esac
    for fd in /proc/"$1"/fd/* $(descendants "$1" | sed 's|.*|/proc/&/fd/*|'); do
        f=$(readlink "$fd" 2>/dev/null) || continue
        [[ $f == socket:\[*\] ]] && fd_of[${f//[^0-9]/}]=$fd
    done
    port=$(printf '%04X' "$3")
    for f in /proc/net/tcp /proc/net/tcp6; do
        # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        while read -r _ local _ st _ _ _ _ _ inode _; do
            [[ $st == 0A && ${local##*:} == "$port" && -n ${fd_of[$inode]:-} ]] || continue
            addr=${local%:*}
            if [[ $addr == "$want" ]]; then found=1; else bad+=" $local"; fi
        done < <(awk -v p=":$port" '$4 == "0A" && substr($2, length($2) - 4) == p' "$f" 2>/dev/null)
    done
    [[ -z $bad ]] || { echo "it listens on$bad too (hex, /proc/net/tcp), not only on $2"; return 1; }
    [[ -n $found ]] || { echo "no socket of process $1 listens on $2:$3 (/proc/net/tcp)"; return 1; }
}

# stop_server [SIGNAL]: send SIGTERM (or SIGNAL), require exit 0 within 2 s, no processes
# left behind, and no sanitizer report on its stderr.
stop_server() {
    local sig=${1:-TERM} pid=$SERVER_PID kids status deadline
    [[ -n $pid ]] || fail "stop_server: no server running" || return
    kids=$(descendants "$pid")
    kill -"$sig" "$pid" 2>/dev/null || true
    deadline=$(($(now_ms) + $(scaled_ms 2)))
    while ! has_exited "$pid"; do
        if (($(now_ms) > deadline)); then
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null || true
            SERVER_PID=
            fail "server did not exit within 2 s of SIG$sig; stderr:" "$(tail -n 20 "$SERVER_ERR")" || return
        fi
        sleep 0.02   # poll interval of a loop with a deadline
    done
    status=0
    wait "$pid" || status=$?
    SERVER_PID=
    echo "$pid" >>"$BATS_TEST_TMPDIR/harness.stopped"
    local report kept
    if report=$(sanitizer_report "$SERVER_ERR"); then
        echo "$SERVER_ERR" >>"$BATS_TEST_TMPDIR/harness.reported"
        kept=$(keep_log "$SERVER_ERR") || kept=$SERVER_ERR
        fail "sanitizer report in server stderr: $report" "$(sanitizer_head "$SERVER_ERR")" \
            "(the whole report: $kept)" || return
    fi
    ((status == 0)) || fail "server exited with status $status after SIG$sig (want 0); stderr:" \
        "$(tail -n 20 "$SERVER_ERR")" || return
    # Children (fork servers) must be gone too, within the same 2 s.
    local k
    for k in $kids; do
        while ! has_exited "$k"; do
            if (($(now_ms) > deadline)); then
                kill -KILL "$k" 2>/dev/null
                fail "server left child process $k running after it exited" || return
            fi
            sleep 0.02   # poll interval of a loop with a deadline
        done
    done
}

# cpu_ticks PID: how long PID (all its threads) has wanted a CPU so far, in ticks of 10 ms:
# the time it ran plus the time it sat runnable waiting for one (/proc/PID/task/*/schedstat,
# in ns). A busy loop wants the CPU all the time, so it scores ~100 ticks per second however
# many other processes share the machine; measured by CPU time alone (utime + stime), a
# starved busy loop on a loaded 2-core machine can score 25 and pass for idle. An idle
# server scores ~0 either way. Without schedstat: utime + stime from /proc/PID/stat.
cpu_ticks() {
    local f run wait n total=0 found=
    for f in /proc/"$1"/task/*/schedstat; do
        read -r run wait n <"$f" 2>/dev/null || continue
        total=$((total + run + wait))
        found=1
    done
    if [[ -n $found ]]; then
        echo $((total / 10000000))
        return
    fi
    local stat
    stat=$(cat "/proc/$1/stat") || return
    stat=${stat##*) }
    # Fields after the command: state is field 3, utime 14 and stime 15 (man 5 proc).
    set -- $stat
    echo $((${12} + ${13}))
}

# start_bg NAME CMD [ARGS...]: run CMD in the background (a client that must run while the
# test does something else), its stdout and stderr in $BATS_TEST_TMPDIR/NAME.out. Sets
# BG_PID. Teardown kills it if the test did not wait for it, even when the test failed.
start_bg() {
    local name=$1
    shift
    "$@" >"$BATS_TEST_TMPDIR/$name.out" 2>&1 3>&- &
    BG_PID=$!
    echo "$BG_PID" >>"$BATS_TEST_TMPDIR/harness.pids"
}

# wait_bg PID NAME: wait for a start_bg process; fail with its output if it failed.
wait_bg() {
    local st=0
    wait "$1" || st=$?
    ((st == 0)) || fail "$2 exited with status $st: $(tail -n 20 "$BATS_TEST_TMPDIR/$2.out")" || return
}

# wait_file_match FILE REGEX [SECONDS]: wait (default 5 s) until FILE has a line matching REGEX.
wait_file_match() {
    local deadline
    deadline=$(($(now_ms) + $(scaled_ms "${3:-5}")))
    until grep -qE -- "$2" "$1" 2>/dev/null; do
        (($(now_ms) < deadline)) || fail "$1 never matched /$2/ within ${3:-5} s; it holds:" "$(tail -n 10 "$1" 2>/dev/null)" || return
        sleep 0.02   # poll interval of a loop with a deadline
    done
}

# harness_teardown: kill whatever the test left running; show the server's stderr on failure.
# A test that passed but left a server running fails here: every test stops what it starts
# (stop_server checks the exit; a server only killed in teardown proved nothing about it).
harness_teardown() {
    local p k leftover=
    if [[ -n ${BATS_TEST_COMPLETED:-} ]]; then
        for p in $(cat "$BATS_TEST_TMPDIR/harness.servers" 2>/dev/null); do
            grep -qx "$p" "$BATS_TEST_TMPDIR/harness.stopped" 2>/dev/null && continue
            has_exited "$p" && continue
            leftover+=" $p"
        done
    fi
    for p in $(cat "$BATS_TEST_TMPDIR/harness.pids" 2>/dev/null); do
        if ! has_exited "$p"; then
            for k in $(descendants "$p"); do kill -KILL "$k" 2>/dev/null; done
            kill -KILL "$p" 2>/dev/null
        fi
        wait "$p" 2>/dev/null || true
    done
    if [[ -z ${BATS_TEST_COMPLETED:-} ]]; then
        harness_show_logs
    fi
    rm -f "$BATS_TEST_TMPDIR/harness.pids" "$BATS_TEST_TMPDIR/harness.servers" "$BATS_TEST_TMPDIR/harness.stopped" \
        "$BATS_TEST_TMPDIR/harness.errs" "$BATS_TEST_TMPDIR/harness.reported"
    if [[ -n $leftover ]]; then
        echo "the test passed but left its server running (pid$leftover): end it with stop_server" >&2
        return 1
    fi
    return 0
}

# harness_show_logs: after a failed test, keep every server's stderr (bats deletes the test's
# folder) and show what explains the failure: the head of a sanitizer report (a server that
# died of one mid-test makes the client fail first; the tail of its stderr is only ASan's
# shadow-byte legend), else the last lines of the last server's stderr.
harness_show_logs() {
    local f kept shown=
    for f in $(sort -u "$BATS_TEST_TMPDIR/harness.errs" 2>/dev/null); do
        [[ -s $f ]] || continue
        kept=$(keep_log "$f") || kept=$f
        grep -qxF "$f" "$BATS_TEST_TMPDIR/harness.reported" 2>/dev/null && { shown=1; continue; }
        if sanitizer_report "$f" >/dev/null; then
            echo "--- sanitizer report in $(basename "$f") (whole log kept: $kept) ---" >&2
            sanitizer_head "$f" >&2
            shown=1
        elif [[ $f == "$SERVER_ERR" && -z $shown ]]; then
            echo "--- last lines of the server's stderr (kept: $kept) ---" >&2
            tail -n 15 "$f" >&2
        fi
    done
}

teardown() {
    harness_teardown
}

# assert_log REGEX [SECONDS]: wait (default 2 s) until the server's stderr matches REGEX (extended).
assert_log() {
    local deadline
    deadline=$(($(now_ms) + $(scaled_ms "${2:-2}")))
    until grep -qE -- "$1" "$SERVER_ERR"; do
        (($(now_ms) < deadline)) || fail "server stderr never matched /$1/; it ends with:" "$(tail -n 10 "$SERVER_ERR")" || return
        sleep 0.02   # poll interval of a loop with a deadline
    done
}

# raise_nofile N: make sure this shell (and what it starts) may open N descriptors, or skip.
raise_nofile() {
    local want=$1 soft hard
    soft=$(ulimit -Sn)
    hard=$(ulimit -Hn)
    [[ $soft == unlimited ]] && return 0
    ((soft >= want)) && return 0
    if [[ $hard != unlimited ]] && ((hard < want)); then
        skip "needs $want file descriptors but the hard limit (ulimit -Hn) is $hard"
    fi
    ulimit -Sn "$want"
}

# --- the client ----------------------------------------------------------------

# netkit SUBCMD [ARGS...]: the shared Python client against the running server.
netkit() {
    python3 "$NETKIT" "$1" --port "$PORT" "${@:2}"
}

# --- shared scenarios (each expects a running server) ----------------------------

scenario_echo() {
    netkit echo --count 12 --max-size 1048576 --max-piece 65536
    netkit echo --count 30 --max-size 2048 --max-piece 1      # 1-byte writes
    netkit echo --count 8 --max-size 262144 --max-piece 7     # odd splits
}

scenario_concurrent() {
    raise_nofile $((${1:-100} * 2 + 64))
    netkit concurrent --clients "${1:-100}" --size 16384
}

scenario_half_close() {
    netkit half-close --size 1048576
    netkit half-close --size 1
}

scenario_reset() {
    netkit reset --size 8388608
    netkit echo --count 3 --max-size 65536
}

# scenario_sigterm: a connected client must not keep the server from exiting 0 within 2 s.
scenario_sigterm() {
    exec 5<>"/dev/tcp/127.0.0.1/$PORT"
    printf 'hello\n' >&5
    local reply
    read -r -t "$(awk -v k="$TIMEOUT_SCALE" 'BEGIN{print 2*k}')" reply <&5 || true
    [[ $reply == hello ]] || { exec 5>&-; fail "expected echo 'hello', got '$reply'"; } || return
    stop_server || { exec 5>&-; return 1; }
    exec 5>&-
}

# server_nofile [PID]: the soft open-file limit of the server (default: the one running).
server_nofile() {
    awk '/^Max open files/ { print $4 }' "/proc/${1:-$SERVER_PID}/limits"
}

# assert_server_nofile N: the running server may open N descriptors. A limit is inherited
# when a process starts, so a test that loads a server with many connections calls
# `raise_nofile N` BEFORE start_server; raising it afterwards leaves the server at the
# shell's limit (1024 on a stock machine) and the test measures the limit, not the server.
# (A server may raise its own limit, as 03 and 04 do; that passes too.)
assert_server_nofile() {
    local have
    have=$(server_nofile) || fail "cannot read /proc/$SERVER_PID/limits" || return
    [[ $have == unlimited ]] && return 0
    ((have >= $1)) || fail "the server may open only $have descriptors, the test needs $1: call raise_nofile $1 before start_server" || return
}

# MATRIX_NOFILE: what the hold_1100 probe needs, in the server and in the client.
MATRIX_NOFILE=1300

# start_matrix_server NAME [ARGS...]: start_server with the fd limit the probes need.
start_matrix_server() {
    raise_nofile "$MATRIX_NOFILE"
    start_server "$@"
}

# assert_matrix_row ROW: probe the running server and compare with tests/matrix/expected.txt.
assert_matrix_row() {
    raise_nofile "$MATRIX_NOFILE"
    assert_server_nofile "$MATRIX_NOFILE" || return
    python3 "$MATRIX" check "$1" --port "$PORT"
}

# --- the lost-signal window ------------------------------------------------------------

# delay_shim_path: build tests/lib/delay_shim.c for this test and print the library's path.
delay_shim_path() {
    local so="$BATS_TEST_TMPDIR/delay_shim.so"
    if [[ ! -f $so ]]; then
        "${CC:-cc}" -shared -fPIC -O2 -Wall -Wextra -Werror -o "$so" "$KIT_ROOT/tests/lib/delay_shim.c" -ldl \
            >"$BATS_TEST_TMPDIR/delay_shim.log" 2>&1 ||
            fail "cannot build the delay shim: $(cat "$BATS_TEST_TMPDIR/delay_shim.log")" || return
    fi
    echo "$so"
}

# The delayed wait: DELAY_WINDOW_S (500 ms), and while no signal has come, up to
# DELAY_WINDOW_MAX_S in all; both stretched by TIMEOUT_SCALE. On a busy machine the test
# itself may take longer than 500 ms to send its SIGTERM; the window then waits for it.
DELAY_WINDOW_S=0.5
DELAY_WINDOW_MAX_S=10.5

# start_server_delayed NAME [ARGS...]: start_server with the server's first blocking wait
# (accept, select, poll, epoll_wait, or their p- variants) delayed (tests/lib/delay_shim.c,
# DELAY_WINDOW_S above); returns once the delay has begun.
start_server_delayed() {
    # The sanitizers' runtimes insist on being the first library loaded and intercept the
    # same calls; the window is a property of the code, which the normal build shows.
    [[ -z ${SAN:-} ]] || skip "the delay shim is an LD_PRELOAD library, which the sanitizer runtimes refuse; run without SAN"
    local shim
    shim=$(delay_shim_path) || return
    # What scenario_sigterm_in_window needs to start the same server again.
    DELAYED_START=("$@")
    DELAYED_AT=${DELAY_SHIM_AT:-}
    LD_PRELOAD=$shim DELAY_SHIM_MS=$(scaled_ms "$DELAY_WINDOW_S") \
        DELAY_SHIM_MAX_MS=$(scaled_ms "$DELAY_WINDOW_MAX_S") start_server "$@" || return
    wait_file_match "$SERVER_ERR" '^delay-shim: delaying' 5
}

# DELAY_TRIES: how many times scenario_sigterm_in_window starts the server when its signal
# could not be put inside the window.
DELAY_TRIES=3

# scenario_sigterm_in_window: with the server inside its delayed first wait (start_server_delayed),
# SIGTERM must still end it with status 0 within 2 s; and the shim must confirm that the
# signal arrived during the delay (else the test proved nothing).
# A signal that came after the window had closed (the shim says `no signal arrived`) is a
# precondition the test could not arrange, not a fault of the server, which then exited
# cleanly: the server is started again, up to DELAY_TRIES times in all, and each retry is
# said in the test's output. A server that fails to stop fails at once, never retried.
scenario_sigterm_in_window() {
    local try
    for ((try = 1; ; try++)); do
        stop_server || return
        grep -q '^delay-shim: a signal arrived during the delay' "$SERVER_ERR" && return 0
        grep -q '^delay-shim: no signal arrived' "$SERVER_ERR" && ((try < DELAY_TRIES)) || break
        harness_note "retry $((try + 1)) of $DELAY_TRIES: the SIGTERM came after the delayed wait had ended" \
            "($(grep -m1 '^delay-shim: no signal' "$SERVER_ERR" | sed 's/^delay-shim: //'), so this attempt proved" \
            "nothing; the server then exited cleanly. A busy machine: TIMEOUT_SCALE=$TIMEOUT_SCALE."
        DELAY_SHIM_AT=$DELAYED_AT start_server_delayed "${DELAYED_START[@]}" || return
    done
    fail "the SIGTERM did not land inside the delayed wait (attempt $try of $DELAY_TRIES; the machine may be" \
        "too busy: try TIMEOUT_SCALE=$(awk -v k="$TIMEOUT_SCALE" 'BEGIN { k *= 3; printf "%d", k < 3 ? 3 : k }')); the server's stderr:" "$(tail -n 10 "$SERVER_ERR")" || return
}

# scenario_cloexec: the server's descriptor for a new connection is close-on-exec (checked
# in /proc/PID/fdinfo of the server and its children; sends nothing, so any stage).
scenario_cloexec() {
    netkit cloexec --pid "$SERVER_PID"
}

# --- added for 01_blocking and 02_select: the mask a server inherits, and the delay before the block ---

# start_server_delayed_at POINT NAME [ARGS...]: start_server_delayed with the delay moved to
# POINT (DELAY_SHIM_AT in tests/lib/delay_shim.c). POINT `sigmask`: the first sigprocmask or
# pthread_sigmask call that blocks SIGTERM is delayed, before it blocks anything; a server that
# checks its stop flag before blocking the signals then misses the SIGTERM sent inside it.
# A call that blocks SIGTERM before `listening on` would be delayed before the test could
# send the signal: scenario_sigterm_in_window then fails (the signal came after the delay).
start_server_delayed_at() {
    local at=$1
    shift
    DELAY_SHIM_AT=$at start_server_delayed "$@"
}

# start_server_masked NAME [ARGS...]: start_server with SIGTERM and SIGINT blocked in the
# server's signal mask from its first instruction on (a mask is inherited through exec, as
# when a supervisor or a shell starts a server with them blocked). The wrapper is checked
# first: a program it starts must see both blocked (SigBlk in /proc/self/status).
start_server_masked() {
    local name=$1
    shift
    local real dir
    real=$(stage_bin "$name")
    [[ -x $real ]] || fail "no binary $real: build it with: make -C $STAGE_DIR${SAN:+ SAN=$SAN}" || return
    dir="$BATS_TEST_TMPDIR/masked"
    mkdir -p "$dir"
    # sh, then python (to block the signals), then exec of the server: one pid all along.
    cat >"$dir/run-masked" <<'WRAP'
#!/bin/sh
exec python3 -c 'import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
os.execv(sys.argv[1], sys.argv[1:])' "$@"
WRAP
    chmod +x "$dir/run-masked"
    local blk
    blk=$("$dir/run-masked" /bin/cat /proc/self/status | sed -n 's/^SigBlk:[[:space:]]*//p') ||
        fail "the masking wrapper did not run" || return
    [[ $blk =~ ^[0-9a-fA-F]+$ ]] || fail "cannot read the mask the wrapper gives (SigBlk '$blk')" || return
    # SIGINT is 2 and SIGTERM 15: bits 1 and 14 of the mask, 0x4002.
    (((16#$blk & 16#4002) == 16#4002)) || fail "the wrapper did not block SIGTERM and SIGINT (SigBlk $blk)" || return
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$dir/run-masked" "$real" >"$dir/$name"
    chmod +x "$dir/$name"
    STAGE_DIR=$dir STAGE_BUILD= SAN= HARNESS_SUBST= start_server "$name" "$@"
}
