#!/usr/bin/env bats
# 08_framework: the template and `make new`. `make new` (template/new.sh) makes a standalone
# project (the template renamed, plus a copy of the library) once per run, in a temporary folder
# outside the kit, and builds it there with the kit hidden (a private mount namespace with an
# empty tmpfs over the kit's folder, where `unshare` allows it). Then: the project's own
# `make test` passes with the kit hidden, no path in it leads back to the kit, the library
# copy is whole, and the server it builds keeps the contract and answers every command of its
# README's table with the exact bytes; new.sh refuses what it must refuse.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"
bats_require_minimum_version 1.5.0

NEW="$BATS_TEST_DIRNAME/template/new.sh"
NAME=myserver   # the generated program's name

# The project, made and built once for the file (setup_file); the tests read what it left.
proj_dir() { echo "$BATS_FILE_TMPDIR/projects/$NAME"; }

# hidden_kit CMD...: run CMD where the kit's folder is an empty tmpfs (user and mount
# namespaces: `unshare -rm`), so that any path into the kit fails. Status 97: the kit cannot
# be hidden here (no unshare, namespaces disabled, or the project lies inside the kit).
hidden_kit() {
    case "$(proj_dir)/" in "$KIT_ROOT"/*) return 97 ;; esac
    command -v unshare >/dev/null || return 97
    unshare -rm true 2>/dev/null || return 97
    unshare -rm sh -c 'mount -t tmpfs kit-hidden "$0" && [ -z "$(ls -A "$0")" ] && exec "$@"' "$KIT_ROOT" "$@"
}

setup_file() {
    local proj st
    proj=$(proj_dir)
    mkdir -p "$(dirname "$proj")"
    # `make new` where the 08 Makefile has the rule (it runs new.sh), new.sh itself until then.
    if make -C "$KIT_ROOT/08_framework" -n new NAME=x DIR=/nonexistent >/dev/null 2>&1; then
        make -s -C "$KIT_ROOT/08_framework" new NAME="$NAME" DIR="$proj" >"$BATS_FILE_TMPDIR/new.log" 2>&1 ||
            { echo "make new failed: $?" >>"$BATS_FILE_TMPDIR/new.log"; return 0; }
    else
        "$NEW" "$NAME" "$proj" >"$BATS_FILE_TMPDIR/new.log" 2>&1 || { echo "new.sh failed: $?" >>"$BATS_FILE_TMPDIR/new.log"; return 0; }
    fi
    # One build for every test, with the kit hidden when that is possible (else in plain sight:
    # the "no path into the kit" test still reads the files).
    st=0
    hidden_kit make -C "$proj" -j2 ${SAN:+SAN=$SAN} >"$BATS_FILE_TMPDIR/build.log" 2>&1 || st=$?
    if ((st == 97)); then
        echo "(the kit could not be hidden: built in plain sight)" >"$BATS_FILE_TMPDIR/build.hidden"
        st=0
        make -C "$proj" -j2 ${SAN:+SAN=$SAN} >"$BATS_FILE_TMPDIR/build.log" 2>&1 || st=$?
    fi
    echo "$st" >"$BATS_FILE_TMPDIR/build.status"
}

# built: fail, with new.sh's and make's output, unless setup_file made and built the project.
built() {
    [[ -d $(proj_dir) && -f $(proj_dir)/Makefile ]] ||
        fail "make new (new.sh) made no project in $(proj_dir):" "$(cat "$BATS_FILE_TMPDIR/new.log")" || return
    [[ $(cat "$BATS_FILE_TMPDIR/build.status" 2>/dev/null) == 0 ]] ||
        fail "the project did not build (make -C $(proj_dir)${SAN:+ SAN=$SAN}):" "$(tail -n 25 "$BATS_FILE_TMPDIR/build.log")" || return
}

setup() {
    built || return
    # start_server and stop_server (harness.bash) run the generated program from the project,
    # the sanitized build from its build-<san>/ folder as in the kit.
    STAGE_DIR=$(proj_dir)
    STAGE_BUILD=   # a kit build folder (coverage) is no folder of the project
}

# talk [N]s:BYTES | [N]e:BYTES | [N]eof | [N]close ...: a scripted client of the server on
# $PORT. N (default 1) picks a connection, opened at its first use. s: sends BYTES, e: reads
# exactly len(BYTES) bytes and wants them equal, eof: wants the connection closed with nothing
# before it, ready: prints "ready". BYTES is a Python bytes expression: b"PING\r\n", b"x" * 1024 + b"\n".
talk() {
    timeout "$(scaled_s 30)" python3 - "$PORT" "$@" <<'EOF'
import os, socket, sys, time
scale = float(os.environ.get("TIMEOUT_SCALE", "1"))
port, steps, conns = int(sys.argv[1]), sys.argv[2:], {}
for step in steps:
    n = "1"
    if step[0].isdigit():
        n, step = step[0], step[1:]
    if n not in conns:
        conns[n] = socket.create_connection(("127.0.0.1", port), timeout=5 * scale)
    c = conns[n]
    if step.startswith("s:"):
        c.sendall(eval(step[2:]))
    elif step.startswith("e:"):
        want, got, end = eval(step[2:]), b"", time.monotonic() + 5 * scale
        while len(got) < len(want) and time.monotonic() < end:
            c.settimeout(max(0.01, end - time.monotonic()))
            try:
                piece = c.recv(len(want) - len(got))
            except (socket.timeout, ConnectionResetError):
                break
            if not piece:
                break
            got += piece
        if got != want:
            sys.exit(f"connection {n}: want {want!r}, got {got!r} (then closed or 5 s passed)")
    elif step == "eof":
        c.settimeout(5 * scale)
        try:
            got = c.recv(4096)
        except ConnectionResetError:
            got = b""
        if got:
            sys.exit(f"connection {n}: want the connection closed, got {got!r}")
    elif step == "close":
        c.close()
    elif step == "ready":
        print("ready", flush=True)
    else:
        sys.exit(f"talk: bad step {step!r}")
EOF
}

scaled_s() {
    awk -v s="$1" -v k="$TIMEOUT_SCALE" 'BEGIN { print s * k }'
}

# app_counter NAME: the number after NAME in the program's own stop line (`myserver: pings
# P, delays D, delays sent S, delays cancelled C, errors E`); call after stop_server.
app_counter() {
    local line n
    line=$(grep -m1 " $NAME: pings " "$SERVER_ERR") || fail "no '$NAME: pings ...' line in the server's stderr" || return
    n=$(sed -n "s/.*[:,] $1 \([0-9][0-9]*\)\(,.*\)\{0,1\}$/\1/p" <<<"$line")
    [[ -n $n ]] || fail "no '$1' counter in: $line" || return
    echo "$n"
}

# want_counters "pings 2" "delays 1" ...: each of the program's counters as given.
want_counters() {
    local c got
    for c in "$@"; do
        got=$(app_counter "${c% *}") || return
        [[ $got == "${c##* }" ]] || fail "counter '${c% *}' is $got, want ${c##* }: $(grep -m1 " $NAME: pings " "$SERVER_ERR")" || return
    done
}

# --- the copy -------------------------------------------------------------------------------

@test "template: new.sh copies every library source and header, and no unit test" {
    local proj f base missing= differ=
    proj=$(proj_dir)
    for f in "$KIT_ROOT"/08_framework/lib/*.c "$KIT_ROOT"/08_framework/lib/*.h; do
        base=${f##*/}
        [[ $base == *_test.c ]] && continue
        if [[ ! -f $proj/lib/$base ]]; then
            missing+=" $base"
        elif ! cmp -s "$f" "$proj/lib/$base"; then
            differ+=" $base"
        fi
    done
    [[ -z $missing ]] || fail "lib/ of the project lacks:$missing" || return
    [[ -z $differ ]] || fail "lib/ of the project differs from the kit's in:$differ" || return
    run -0 find "$proj/lib" -name '*_test.c'
    [[ -z $output ]] || fail "unit tests copied into the project: $output" || return
    # The project's own files, the program renamed.
    for f in Makefile README.md test_server.py "$NAME.c" lib/VERSION; do
        [[ -s $proj/$f ]] || fail "the project has no $f" || return
    done
    [[ ! -e $proj/template.c ]] || fail "template.c kept its name (want $NAME.c)" || return
    # lib/VERSION names the kit's commit the copy came from (its next update starts there).
    local rev
    if rev=$(git -C "$KIT_ROOT" rev-parse --short HEAD 2>/dev/null); then
        grep -qE "^rx library copied from the course kit, commit $rev( with uncommitted changes to lib/)?, on [0-9]{4}-[0-9]{2}-[0-9]{2}\$" "$proj/lib/VERSION" ||
            fail "lib/VERSION does not name the kit's commit $rev:" "$(cat "$proj/lib/VERSION")" || return
    fi
    grep -q "^NAME *:= *$NAME\$" "$proj/Makefile" || fail "the Makefile does not build $NAME:" "$(grep -n NAME "$proj/Makefile")" || return
    run grep -rlw template "$proj" --include='*.c' --include='*.py' --include=Makefile --include='*.md'
    [[ -z $output ]] || fail "the word 'template' is left in (the program is $NAME):" "$output" || return
}

@test "template: the copy has no path into the kit" {
    local proj
    proj=$(proj_dir)
    # No link: a project that links to the kit's files breaks when the kit moves.
    run -0 find "$proj" -type l
    [[ -z $output ]] || fail "symbolic links in the project:" "$(ls -l $output)" || return
    # The kit's folder, spelled as given or resolved.
    run grep -rlF -e "$KIT_ROOT" -e "$(readlink -f "$KIT_ROOT")" "$proj"
    [[ $status -eq 1 ]] || fail "files name the kit's folder:" "$output" || return
    # No relative path out of the project: not in an include, not in what make runs.
    run grep -rnE '#[[:space:]]*include[[:space:]]*"[^"]*\.\./' "$proj" --include='*.c' --include='*.h'
    [[ $status -eq 1 ]] || fail "an #include leaves the project:" "$output" || return
    run -0 make -C "$proj" -n -B ${SAN:+SAN=$SAN} all
    run grep -nE '(^|[[:space:]=])(-[IL])?\.\./|/\.\./' <<<"$output"
    [[ $status -eq 1 ]] || fail "make uses a path out of the project:" "$output" || return
}

@test "template: the copy builds and passes its own make test with the kit hidden" {
    local st=0
    # Its test_server.py, unchanged, against the build setup_file made (the kit hidden there
    # too, when possible).
    hidden_kit make -C "$(proj_dir)" test ${SAN:+SAN=$SAN} TIMEOUT_SCALE="$TIMEOUT_SCALE" >"$BATS_TEST_TMPDIR/make-test.log" 2>&1 || st=$?
    if ((st == 97)); then
        harness_note "the kit could not be hidden here (unshare -rm): make test ran with the kit in sight"
        st=0
        make -C "$(proj_dir)" test ${SAN:+SAN=$SAN} >"$BATS_TEST_TMPDIR/make-test.log" 2>&1 || st=$?
    fi
    ((st == 0)) || fail "make test in the project exited $st:" "$(tail -n 20 "$BATS_TEST_TMPDIR/make-test.log")" || return
    grep -qE '^[1-9][0-9]* passed, 0 failed$' "$BATS_TEST_TMPDIR/make-test.log" ||
        fail "no 'N passed, 0 failed' line:" "$(tail -n 20 "$BATS_TEST_TMPDIR/make-test.log")" || return
    if [[ -f $BATS_FILE_TMPDIR/build.hidden ]]; then
        harness_note "$(cat "$BATS_FILE_TMPDIR/build.hidden")"
    fi
}

@test "template: the copy's Makefile: POLLER=poll builds the poll backend, SAN= a sanitized build, each in its own folder; make test rebuilds a changed source first" {
    local proj
    proj=$(proj_dir)
    # What make would run (-n, -B: every rule), without touching the build the tests use.
    # SAN and POLLER from the caller's environment would change the folders: not here.
    run -0 env -u SAN -u POLLER make -C "$proj" -n -B POLLER=poll all
    [[ $output == *" -c -o build-poll/lib/poller_poll.o lib/poller_poll.c"* && $output != *poller_epoll* &&
        $output == *" -o build-poll/$NAME build-poll/$NAME.o build-poll/lib/librx.a"* ]] ||
        fail "make POLLER=poll does not build the poll backend alone into build-poll/:" "$output" || return
    run -0 env -u SAN -u POLLER make -C "$proj" -n -B all
    [[ $output == *" -c -o lib/poller_epoll.o lib/poller_epoll.c"* && $output != *poller_poll* ]] ||
        fail "make does not build the epoll backend alone:" "$output" || return
    run -0 env -u SAN -u POLLER make -C "$proj" -n -B SAN=address,undefined all
    [[ $output == *"-fsanitize=address,undefined "*" -c -o build-address-undefined/$NAME.o $NAME.c"* &&
        $output == *" -o build-address-undefined/$NAME build-address-undefined/$NAME.o build-address-undefined/lib/librx.a"* ]] ||
        fail "make SAN=address,undefined does not build sanitized into build-address-undefined/:" "$output" || return
    # A source changed since the last build (-W: as if it were): make test compiles and links
    # it before it runs the tests, never the tests on the old program.
    run -0 env -u SAN -u POLLER make -C "$proj" -n -W "$NAME.c" test
    [[ $output =~ -c\ -o\ $NAME\.o\ $NAME\.c.*-o\ $NAME\ $NAME\.o.*python3\ test_server\.py ]] ||
        fail "make test does not rebuild a changed $NAME.c first:" "$output" || return
}

# --- new.sh's refusals ------------------------------------------------------------------------

# refused ARGS...: new.sh ARGS exits 2 with a message on stderr and nothing on stdout.
refused() {
    run --separate-stderr "$NEW" "$@"
    [[ $status -eq 2 ]] || fail "new.sh $* exited $status, want 2 (stdout: $output; stderr: $stderr)" || return
    [[ -n $stderr ]] || fail "new.sh $* said nothing on stderr" || return
    [[ -z $output ]] || fail "new.sh $* wrote to stdout: $output" || return
}

@test "template: new.sh refuses missing arguments with its usage (exit 2)" {
    local d="$BATS_TEST_TMPDIR/dir"
    refused
    [[ $stderr == *usage:* ]] || fail "no usage: $stderr" || return
    refused "$NAME"
    [[ $stderr == *usage:* ]] || fail "no usage: $stderr" || return
    refused "" "$d"
    refused "$NAME" ""
    refused "$NAME" "$d" extra
    [[ ! -e $d ]] || fail "a refused new.sh created $d" || return
}

@test "template: new.sh refuses a NAME that is not a C identifier or is the project's own" {
    local d="$BATS_TEST_TMPDIR/dir" n
    for n in 1abc my-server "my server" 'a$b' 'a/b' 'é' lib test all clean build Makefile README test_server; do
        refused "$n" "$d"
        [[ $stderr == *"'$n'"* ]] || fail "the refusal of '$n' does not name it: $stderr" || return
        [[ ! -e $d ]] || fail "new.sh '$n' was refused but created $d" || return
    done
    # The accepted extremes: '_' first, digits after the first character, a single letter.
    for n in _a1_B2 x; do
        run -0 "$NEW" "$n" "$d/$n"
        [[ -f $d/$n/$n.c ]] || fail "new.sh $n made no $n.c" || return
    done
}

@test "template: new.sh refuses a DIR that exists and is not empty, and takes an empty one" {
    local d="$BATS_TEST_TMPDIR/full"
    mkdir -p "$d"
    echo "keep me" >"$d/notes.txt"
    refused "$NAME" "$d"
    [[ $stderr == *"not empty"* ]] || fail "the refusal does not say why: $stderr" || return
    [[ $(ls -A "$d") == notes.txt && $(cat "$d/notes.txt") == "keep me" ]] || fail "new.sh touched a refused DIR: $(ls -A "$d")" || return
    mkdir -p "$BATS_TEST_TMPDIR/dotted"
    touch "$BATS_TEST_TMPDIR/dotted/.hidden"   # a dot file counts
    refused "$NAME" "$BATS_TEST_TMPDIR/dotted"
    echo x >"$BATS_TEST_TMPDIR/afile"
    refused "$NAME" "$BATS_TEST_TMPDIR/afile"
    [[ $stderr == *"not a folder"* ]] || fail "the refusal of a file as DIR does not say why: $stderr" || return
    [[ $(cat "$BATS_TEST_TMPDIR/afile") == x ]] || fail "new.sh changed a file given as DIR" || return
    # A symbolic link exists even when it leads nowhere: refused, and nothing made where it points.
    ln -s "$BATS_TEST_TMPDIR/nowhere" "$BATS_TEST_TMPDIR/dangling"
    refused "$NAME" "$BATS_TEST_TMPDIR/dangling"
    [[ ! -e $BATS_TEST_TMPDIR/nowhere ]] || fail "new.sh made the folder a dangling link as DIR points to" || return
    mkdir -p "$BATS_TEST_TMPDIR/empty"
    run -0 "$NEW" "$NAME" "$BATS_TEST_TMPDIR/empty"
    [[ -f $BATS_TEST_TMPDIR/empty/$NAME.c ]] || fail "new.sh made nothing in an empty DIR" || return
}

@test "template: make new NAME=x DIR=path, from the 08 Makefile and from the kit's root" {
    make -C "$KIT_ROOT/08_framework" -n new NAME=x DIR=/nonexistent >/dev/null 2>&1 ||
        fail "08_framework/Makefile has no 'new' rule" || return
    run -0 make -s -C "$KIT_ROOT/08_framework" new NAME=viamake DIR="$BATS_TEST_TMPDIR/m1"
    [[ -f $BATS_TEST_TMPDIR/m1/viamake.c && -f $BATS_TEST_TMPDIR/m1/lib/rx.h ]] || fail "make -C 08_framework new made no project: $output" || return
    run make -s -C "$KIT_ROOT/08_framework" new NAME=bad-name DIR="$BATS_TEST_TMPDIR/m2"
    [[ $status -ne 0 && ! -e $BATS_TEST_TMPDIR/m2 ]] || fail "make new with a bad NAME succeeded or wrote: $output" || return
    run make -s -C "$KIT_ROOT/08_framework" new
    [[ $status -ne 0 && $output == *usage:* ]] || fail "make new without NAME and DIR: status $status, $output" || return
    # From the root, a relative DIR is relative to the root (where make was typed).
    local rel
    rel=$(realpath --relative-to="$KIT_ROOT" "$BATS_TEST_TMPDIR/m3")
    run -0 make -s -C "$KIT_ROOT" new NAME=viaroot DIR="$rel"
    [[ -f $BATS_TEST_TMPDIR/m3/viaroot.c ]] || fail "make new from the root made no project in $rel: $output" || return
}

# --- the generated server -------------------------------------------------------------------

@test "template: the generated server keeps the contract (listening line, --help, usage errors, SIGTERM, SIGINT)" {
    local bin a
    bin=$(stage_bin "$NAME")
    run --separate-stderr "$bin" --help
    [[ $status -eq 0 && $output == "usage: $NAME "* && -z $stderr ]] || fail "--help: status $status, stdout '$output', stderr '$stderr'" || return
    [[ $output == *"PING"* && $output == *"DELAY MS [TEXT]"* ]] || fail "--help does not list the commands: $output" || return
    for a in --bogus "-p 65536" -p "-p -1" "-p 5x" "-p +5" "-t 65" "-t -1" extra; do
        run --separate-stderr "$bin" $a
        [[ $status -eq 2 && -z $output && $stderr == *"usage: $NAME "* ]] || fail "'$a': status $status (want 2), stdout '$output', stderr '$stderr'" || return
    done
    # The largest values are accepted: the options pass, then the address fails (exit 1).
    for a in "-p 65535" "-t 64" "-p 0 -t 0"; do
        run --separate-stderr "$bin" $a -H 256.0.0.1
        [[ $status -eq 1 && -z $output ]] || fail "'$a -H 256.0.0.1': status $status (want 1: options accepted, no such address), stdout '$output', stderr '$stderr'" || return
    done
    start_server "$NAME"
    [[ $(cat "$SERVER_OUT") == "listening on 127.0.0.1:$PORT" ]] || fail "stdout is not one listening line: $(cat "$SERVER_OUT")" || return
    talk 's:b"PING\n"' 'e:b"PONG\n"'
    stop_server TERM
    start_server "$NAME" -t 2
    talk 's:b"PING\n"' 'e:b"PONG\n"'
    stop_server INT
    want_counters "pings 1" "errors 0"
}

@test "template: the generated server runs -t N io threads (io-0 .. io-N-1), none at -t 0; -H ::1 listens on IPv6 and says [::1]:PORT" {
    local n got
    for n in 0 2 3; do
        start_server "$NAME" -t "$n"
        talk 's:b"PING\n"' 'e:b"PONG\n"'
        got=$(cat /proc/"$SERVER_PID"/task/*/comm 2>/dev/null | grep -c '^io-[0-9]*$') || true   # grep -c: status 1 when 0
        stop_server || return
        ((got == n)) || fail "-t $n: $got io threads (by name io-N, /proc/PID/task), want $n" || return
    done
    python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null ||
        skip "no IPv6 loopback on this machine"
    start_server "$NAME" -H ::1
    grep -qE '^listening on \[::1\]:[0-9]+$' "$SERVER_OUT" || fail "listening line: $(cat "$SERVER_OUT")" || return
    run timeout "$(scaled_s 10)" python3 -c '
import socket, sys
s = socket.create_connection(("::1", int(sys.argv[1])), timeout=5)
s.sendall(b"PING\n")
got = b""
while len(got) < 5:
    b = s.recv(5 - len(got))
    if not b:
        break
    got += b
print(got)' "$PORT"
    [[ $output == "b'PONG\\n'" ]] || fail "PING over IPv6: $output" || return
    stop_server
}

# Every row of the README's protocol table, with the exact bytes, at -t 0 and -t 2.
protocol_rows() {
    start_server "$NAME" "$@"
    talk 's:b"PING\n"' 'e:b"PONG\n"' \
        's:b"PING\r\n"' 'e:b"PONG\n"' \
        's:b"PI"' 's:b"NG\nPING\n"' 'e:b"PONG\nPONG\n"' \
        's:b"\nping\nPING \nPINGS\nDELAYS 1\nHELLO\n"' 'e:b"ERR unknown command\n" * 6' \
        's:b"DELAY\nDELAY \nDELAY x\nDELAY 5x\nDELAY -1\nDELAY 60001\nDELAY 99999999999999999999 a\n"' \
        'e:b"ERR usage: DELAY MS [TEXT], MS from 0 to 60000\n" * 7' \
        's:b"DELAY 0 now\n"' 'e:b"now\n"' \
        's:b"DELAY 0\n"' 'e:b"\n"' 's:b"DELAY 0 \n"' 'e:b"\n"' \
        's:b"DELAY 0 two  words \r\n"' 'e:b"two  words \n"' \
        's:b"PING\r\r\n"' 'e:b"ERR unknown command\n"' \
        's:b"DELAY 0 " + b"z" * 1016 + b"\n"' 'e:b"z" * 1016 + b"\n"' \
        's:b"DELAY 200 late\nDELAY 1 busy\nPING\n"' 'e:b"ERR busy: one DELAY at a time\nPONG\nlate\n"' \
        's:b"DELAY 60000 " + b"y" * 1012 + b"\n"' 's:b"PING\n"' 'e:b"PONG\n"' close
    stop_server
    want_counters "pings 6" "delays 7" "delays sent 6" "delays cancelled 1" "errors 15"
}

@test "template: the generated server answers every command with the exact bytes (-t 0)" {
    protocol_rows -t 0
}

@test "template: the generated server answers every command with the exact bytes (-t 2)" {
    protocol_rows -t 2
}

@test "template: DELAY answers after its time, not before (its timer)" {
    local t0 t1
    start_server "$NAME"
    t0=$(now_ms)
    talk 's:b"DELAY 400 x\n"' 'e:b"x\n"'
    t1=$(now_ms)
    stop_server
    ((t1 - t0 >= 400)) || fail "DELAY 400 answered after $((t1 - t0)) ms" || return
    want_counters "delays 1" "delays sent 1"
}

@test "template: a DELAY whose client left is cancelled, never sent; the server carries on" {
    local gone
    gone=$(scaled_ms 0.3)
    start_server "$NAME"
    talk "s:b\"DELAY $gone gone\\nPING\\n\"" 'e:b"PONG\n"' close \
        "2s:b\"DELAY $gone gone\\nPING\\n\"" '2e:b"PONG\n"' 2close
    # Timers fire earliest first: once a later one has answered, a timer left armed by a
    # closed session would have fired (on freed memory: the sanitized build reports it).
    talk "s:b\"DELAY $((gone + 100)) probe\\n\"" 'e:b"probe\n"'
    stop_server
    want_counters "delays 3" "delays sent 1" "delays cancelled 2"
}

@test "template: a DELAY pending at shutdown is cancelled, its client closed, exit 0" {
    start_server "$NAME" -t 1
    # The client holds its connection open with a DELAY pending until the server closes it.
    start_bg client talk 's:b"DELAY 60000 a\nPING\n"' 'e:b"PONG\n"' ready eof
    local client=$BG_PID
    wait_file_match "$BATS_TEST_TMPDIR/client.out" '^ready$'
    stop_server
    wait_bg "$client" client
    grep -q 'closed: shutdown' "$SERVER_ERR" || fail "the session was not closed by the shutdown:" "$(tail -n 5 "$SERVER_ERR")" || return
    want_counters "delays 1" "delays sent 0" "delays cancelled 1"
}

@test "template: a line of 1024 bytes is a command; 1025 drops that client only, with a log line" {
    start_server "$NAME"
    talk '2s:b"PING\n"' '2e:b"PONG\n"' \
        's:b"x" * 1024 + b"\n"' 'e:b"ERR unknown command\n"' \
        's:b"PING" + b"\r" * 1021 + b"\n"' eof close \
        '2s:b"PING\n"' '2e:b"PONG\n"'
    stop_server
    grep -q 'closed: bad frame' "$SERVER_ERR" || fail "no 'closed: bad frame' log line:" "$(tail -n 5 "$SERVER_ERR")" || return
    want_counters "pings 2" "errors 1"
}
