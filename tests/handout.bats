#!/usr/bin/env bats
# `make handout` (tests/handout): the tarball a student gets. It unpacks to one folder that
# builds and tests away from the kit, holds no line of the code the student must write (nor
# the notes' quotes of it, nor pointers to bugs/ or other stages), lists every lab with its
# tests in LAB.md, and with BUG= hands out the whole stage with one gallery bug that nothing
# names. Subjects: 03_poll (small) and 06_codecs (many labs, unit tests, fuzz targets).

load "$BATS_TEST_DIRNAME/lib/harness.bash"

setup() {
    unset SAN STAGE_BUILD HARNESS_SUBST
    OUT="$BATS_TEST_TMPDIR/out"
    # The unpacked handout must not sit inside the kit: its ../tests would be the kit's.
    case "$BATS_TEST_TMPDIR" in "$KIT_ROOT"/*) fail "BATS_TEST_TMPDIR is inside the kit: $BATS_TEST_TMPDIR" ;; esac
}

# in_handout DIR SECONDS CMD...: CMD in DIR with the environment a student has (none of the
# kit's runner: its log folder, filters, SAN), for at most SECONDS (times TIMEOUT_SCALE).
in_handout() {
    local dir=$1 secs=$(($(scaled_ms "$2") / 1000))
    shift 2
    local unset=() v
    # Nor this bats' own variables: a bats started with them finds the wrong libexec.
    for v in $(compgen -e | grep -E '^(BATS_|TEST_OUT$|GRADE_|SAN$|STAGE_BUILD$|HARNESS_SUBST$|MAKEFLAGS$|MAKELEVEL$|MFLAGS$)'); do
        unset+=(-u "$v")
    done
    # bats puts its libexec folder first in PATH: the `bats` found there needs what the one in
    # the student's PATH sets up.
    local path
    path=$(tr ':' '\n' <<<"$PATH" | grep -v 'bats-core' | paste -sd: -)
    (cd "$dir" && env "${unset[@]}" PATH="$path" TEST_RERUN=0 GRADE_JSON=- timeout -k 5 "$secs" "$@")
}

# unpack TARBALL: unpacks it into a fresh folder outside the kit, checks that it holds one
# top folder and nothing that names the kit's path; prints that folder.
unpack() {
    local into="$BATS_TEST_TMPDIR/unpacked.$RANDOM" tops
    mkdir -p "$into"
    tar -C "$into" -xzf "$1" || fail "cannot unpack $1" || return
    tops=$(tar -tzf "$1" | cut -d/ -f1 | sort -u)
    [[ $(wc -l <<<"$tops") -eq 1 && -d $into/$tops ]] || fail "the tarball has more than one top entry: $tops" || return
    ! grep -rqF "$KIT_ROOT" "$into/$tops" || fail "files name the kit's path: $(grep -rlF "$KIT_ROOT" "$into/$tops")" || return
    echo "$into/$tops"
}

# no_answers DIR STAGE [LAB...]: no line of the LAB regions cut (all, or the LABs named) of
# the kit's STAGE appears in any file under DIR. A line counts when it is 12 characters or
# more once its blanks are squeezed and the kit holds it nowhere outside those regions (nor
# as a stub): `return 0;` gives nothing away. In .md files a line holding one counts too.
no_answers() {
    python3 - "$KIT_ROOT/$2" "$1" "${@:3}" <<'PY'
import os, re, sys
stage, hand, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
B = re.compile(r"^\s*//\s*LAB BEGIN (\w+):")
E = re.compile(r"^\s*//\s*LAB END")
S = re.compile(r"^\s*//\s*LAB STUB:(.*)$")
norm = lambda s: " ".join(s.split())
body, outside = set(), set()
for dp, dn, fn in os.walk(stage):
    dn[:] = [d for d in dn if d != "bugs" and not d.startswith("build-")]
    for f in fn:
        if not f.endswith((".c", ".h")):
            continue
        cut = None
        for line in open(os.path.join(dp, f), errors="replace"):
            m = B.match(line)
            if m:
                cut = not wanted or m.group(1) in wanted
                continue
            if E.match(line):
                cut = None
                continue
            s = S.match(line)
            if s:
                outside.add(norm(s.group(1)))
            elif cut:
                body.add(norm(line))
            else:
                outside.add(norm(line))
leaks = {l for l in body - outside if len(l) >= 12 and not l.startswith("//")}
assert leaks, "no reference line found: is this the right stage?"
found = []
for dp, dn, fn in os.walk(hand):
    for f in fn:
        p = os.path.join(dp, f)
        data = open(p, "rb").read()
        if b"\0" in data[:8192]:
            continue
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            l = norm(line)
            if l in leaks or (f.endswith(".md") and any(x in l for x in leaks if len(x) >= 20)):
                found.append("%s:%d: %s" % (os.path.relpath(p, hand), n, l))
if found:
    sys.exit("reference code in the handout:\n  " + "\n  ".join(found[:10]))
print("%d reference lines, none in the handout" % len(leaks))
PY
}

# readme_clean FILE: the handout's notes point at nothing the handout lacks.
readme_clean() {
    local bad
    bad=$(grep -nE 'bugs/|\.\./0[0-9]|tests/bench|make (bench|bugs|diff|coverage)\b|\.patch\b' "$1") || return 0
    fail "$1 points at what the handout does not hold: $bad"
}

# lab_tests STAGE LAB: the names of the tests that grade LAB, as the kit's grader counts them.
lab_tests() {
    python3 - "$KIT_ROOT" "$1" "$2" <<'PY'
import os, re, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tests", "lib"))
import grade
stage, lab = grade.stage_dir(sys.argv[2]), sys.argv[3]
labs = grade.read_labs(stage)
for f in sorted(os.listdir(os.path.join(grade.ROOT, stage))):
    if re.match(r"^test.*\.bats$", f):
        for n in grade.test_names(os.path.join(grade.ROOT, stage, f)):
            if lab in grade.labs_of(n, labs):
                print(n)
PY
}

# lab_md_lists DIR STAGE LAB...: LAB.md has a section per LAB, each with every test of it.
lab_md_lists() {
    local dir=$1 stage=$2 lab t n
    shift 2
    for lab in "$@"; do
        grep -qF "## Lab \`$lab\`" "$dir/LAB.md" || fail "LAB.md has no section for $lab" || return
        n=0
        while IFS= read -r t; do
            # The test's line within the lab's own section.
            awk -v lab="## Lab \`$lab\`" -v t="- $t" 'index($0, lab) == 1 { on = 1; next }
                /^## / { on = 0 } on && $0 == t { found = 1 } END { exit !found }' "$dir/LAB.md" ||
                fail "LAB.md's section $lab does not list its test '$t'" || return
            n=$((n + 1))
        done < <(lab_tests "$stage" "$lab")
        ((n > 0)) || fail "labs.txt gives $lab no test" || return
        grep -qF "make test LAB=$lab" "$dir/LAB.md" || fail "LAB.md does not say how to run $lab's tests" || return
    done
}

@test "handout: --help; a bad stage, lab, bug or OUT is a usage error (exit 2); an existing OUT is refused" {
    run "$KIT_ROOT/tests/handout" --help
    [[ $status -eq 0 && $output == *"unpacks to one folder"* ]] || fail "--help: $output"
    local args
    for args in "99 $OUT/x.tar.gz" "03 $OUT/x.zip" "03 $OUT/x.tar.gz --labs no_such_lab" \
        "03 $OUT/x.tar.gz --bug no-such-bug" "03 $OUT/x.tar.gz --bug ../../04_epoll/bugs/et-reads-once" \
        "03" "03 $OUT/x.tar.gz --frobnicate"; do
        run "$KIT_ROOT/tests/handout" $args
        [[ $status -eq 2 && -n $output ]] || fail "tests/handout $args: status $status: $output"
        [[ ! -e $OUT/x.tar.gz ]] || fail "tests/handout $args left $OUT/x.tar.gz"
    done
    run make -s -C "$KIT_ROOT" handout STAGE=03
    [[ $status -ne 0 && $output == *"usage: make handout"* ]] || fail "make handout without OUT: $status: $output"
    # OUT's folder is made; a second run does not overwrite the first.
    run "$KIT_ROOT/tests/handout" 03 "$OUT/new/folder/lab03.tar.gz" --labs conn_write
    [[ $status -eq 0 && -s $OUT/new/folder/lab03.tar.gz ]] || fail "$output"
    run "$KIT_ROOT/tests/handout" 03 "$OUT/new/folder/lab03.tar.gz"
    [[ $status -eq 2 && $output == *exists* ]] || fail "an existing OUT: status $status: $output"
    run make -s -C "$KIT_ROOT" lab STAGE=03 OUT="$OUT/lab" BUG=no-backpressure
    [[ $status -eq 2 && $output == *"make handout"* && ! -e $OUT/lab ]] || fail "make lab BUG=: $status: $output"
}

@test "handout 03, one lab cut: builds away from the kit; its test fails, another lab's passes; make test LAB= runs exactly that lab's tests" {
    run make -s -C "$KIT_ROOT" handout STAGE=03 LABS=conn_write OUT="$OUT/lab03.tar.gz"
    [[ $status -eq 0 ]] || fail "$output"
    local dir
    dir=$(unpack "$OUT/lab03.tar.gz") || return
    [[ $(basename "$dir") == lab03 && -f $dir/Makefile && -f $dir/LAB.md && -x $dir/tests/run &&
        -f $dir/tests/lib/harness.bash && -f $dir/03_poll/test.bats ]] || fail "missing pieces: $(cd "$dir" && find . -type f)"
    # Nothing of the kit it does not need: no gallery, no other stage, no benchmark, nothing built.
    local extra
    extra=$(cd "$dir" && find . \( -name bugs -o -name '*.patch' -o -name '0[0-9]_*' -o -name bench -o -name '*.o' \
        -o -name '*.orig' -o -name server -o -name buffer_test \) ! -path ./03_poll -print)
    [[ -z $extra ]] || fail "the handout holds: $extra"
    grep -q '// LAB TODO conn_write:' "$dir/03_poll/server.c" || fail "conn_write is not cut"
    grep -q 'LAB BEGIN conn_watch' "$dir/03_poll/server.c" || fail "conn_watch was cut too"
    ! grep -q 'tests/grade' "$dir/03_poll/server.c" || fail "the TODO names the teacher's command: $(grep -n 'tests/grade' "$dir/03_poll/server.c")"
    no_answers "$dir" 03_poll conn_write || return
    in_handout "$dir" 120 make -s -j2 >"$OUT/build.log" 2>&1 || fail "make failed in the handout: $(tail -n 20 "$OUT/build.log")"
    [[ -x $dir/03_poll/server ]] || fail "no server built"
    # One conn_write test (the stub queues every echo: a client that keeps up is paused at
    # --max-output 0, so it fails) and one conn_watch test.
    run in_handout "$dir" 120 env BATS_FILTER='^(queued output: a slow reader|--max-output 0: a reader that keeps up)' make -s test
    [[ $output == *"FAIL "?" --max-output 0: a reader that keeps up"* ]] || fail "the cut lab's test did not fail: $output"
    [[ $output == *"pass "?" queued output"* && $output == *"1 passed, 1 failed"* ]] || fail "the written lab's test did not pass: $output"
    [[ $output == *"leave nothing queued"* ]] || fail "the failure does not say why: $output"
    # make test LAB=conn_write hands tests/run a filter that takes exactly conn_write's tests
    # (a stand-in runner prints what it was given; bats counts what the filter selects).
    printf '#!/bin/sh\nprintf "%%s\\n" "$BATS_FILTER" >"$0.filter"; echo "$@" >"$0.args"\n' >"$dir/tests/run"
    in_handout "$dir" 60 make -s test LAB=conn_write >/dev/null || fail "make test LAB=conn_write failed"
    [[ $(cat "$dir/tests/run.args") == "03_poll/test.bats" ]] || fail "runner args: $(cat "$dir/tests/run.args")"
    local filter want got
    filter=$(cat "$dir/tests/run.filter")
    want=$(lab_tests 03 conn_write | sort)
    got=$(python3 -c 'import re, sys; rx = re.compile(sys.argv[1]); [print(n) for n in sys.stdin.read().splitlines() if rx.search(n)]' \
        "$filter" < <(sed -nE 's/^@test "(.*)" \{.*/\1/p' "$KIT_ROOT/03_poll/test.bats") | sort)
    [[ -n $want && $got == "$want" ]] || fail "make test LAB=conn_write selects:"$'\n'"$got"$'\n'"the lab's tests:"$'\n'"$want"
    [[ $(bats --count --filter "$filter" "$dir/03_poll/test.bats") -eq $(wc -l <<<"$want") ]] || fail "bats counts another number for: $filter"
    run in_handout "$dir" 60 make -s test LAB=no_such_lab
    [[ $status -ne 0 && $output == *"no lab 'no_such_lab'"* ]] || fail "an unknown LAB: $status: $output"
}

@test "handout 03 and 06, every lab cut: no reference line anywhere; the notes clean; LAB.md lists every lab with its tests" {
    local s dir labs
    for s in 03_poll 06_codecs; do
        run "$KIT_ROOT/tests/handout" "${s%%_*}" "$OUT/$s.tar.gz"
        [[ $status -eq 0 ]] || fail "$output"
        dir=$(unpack "$OUT/$s.tar.gz") || return
        no_answers "$dir" "$s" || return
        readme_clean "$dir/$s/README.md" || return
        # The notes quote some of the cut code: each quote became a pointer to LAB.md.
        grep -q 'LAB.md' "$dir/$s/README.md" || fail "$s's notes point nowhere at LAB.md: were its quotes of the cut code kept?"
        labs=$(grep -ohE '// LAB BEGIN [A-Za-z_0-9]+' "$KIT_ROOT/$s"/*.c | awk '{ print $4 }' | sort -u)
        [[ $(wc -l <<<"$labs") -ge 2 ]] || fail "$s: labs found: $labs"
        lab_md_lists "$dir" "$s" $labs || return
        ! grep -rq --include='*.[ch]' 'LAB BEGIN' "$dir" || fail "$s: a region survived"
    done
    # 06's fuzz targets and unit tests are there (its tests run them).
    [[ -f $dir/06_codecs/fuzz/fuzz_line.c && -f $dir/06_codecs/line_test.c && -f $dir/tests/lib/codecs.py ]] ||
        fail "06's handout lacks its fuzz targets, unit tests or codec client"
}

@test "handout 06, every lab cut: builds away from the kit; a cut codec's unit test fails, the contract's passes" {
    run "$KIT_ROOT/tests/handout" 06 "$OUT/lab06.tar.gz"
    [[ $status -eq 0 ]] || fail "$output"
    local dir
    dir=$(unpack "$OUT/lab06.tar.gz") || return
    in_handout "$dir" 240 make -s -j2 >"$OUT/build.log" 2>&1 || fail "make failed in the handout: $(tail -n 20 "$OUT/build.log")"
    run in_handout "$dir" 120 env BATS_FILTER='^unit: (line_test|table_test)$' make -s test
    [[ $output =~ FAIL\ [0-9]+\ unit:\ line_test && $output =~ pass\ [0-9]+\ unit:\ table_test &&
        $output == *"1 passed, 1 failed"* ]] || fail "$output"
}

# bug_handout STAGE PATCH: makes the BUG= handout of PATCH and checks that nothing names it;
# prints the unpacked folder.
bug_handout() {
    local stage=$1 name=$2 patch="$KIT_ROOT/$1/bugs/$2.patch" dir line
    [[ -f $patch ]] || fail "$patch is gone: choose another patch of $stage whose added lines carry a comment" || return
    grep -qE '^\+[^+].*(//|/\*)' "$patch" || fail "$name: its added lines carry no comment: not the case to test" || return
    # The tarball's name is the folder's: a neutral one (the tool refuses one naming the bug).
    run "$KIT_ROOT/tests/handout" "${stage%%_*}" "$OUT/bug${stage%%_*}.tar.gz" --bug "$name.patch"
    [[ $status -eq 0 ]] || fail "$output" || return
    dir=$(unpack "$OUT/bug${stage%%_*}.tar.gz") || return
    [[ -z $(cd "$dir" && find . -name bugs -o -name '*.patch' -o -name '*.orig' -o -name '*.rej') ]] ||
        fail "a patch or bugs/ in the handout" || return
    ! grep -rqF -- "$name" "$dir" || fail "the handout names the patch: $(grep -rnF -- "$name" "$dir" | head -3)" || return
    # Its header (Bug:, Symptom:) and the comments its added lines carry are nowhere.
    while IFS= read -r line; do
        [[ ${#line} -ge 16 ]] || continue
        ! grep -rqF -- "$line" "$dir" || fail "the handout holds the patch's words: '$line' in $(grep -rlF -- "$line" "$dir")" || return
    done < <(sed -nE 's/^(Bug|Symptom): *//p' "$patch"
        sed -nE '/^\+[^+]/{ s#^.*//[ ]*##p; }' "$patch"
        sed -nE '/^\+[^+].*\/\*/{ s#^.*/\*[ ]*##; s#[ ]*\*/.*$##; p; }' "$patch")
    # The bug is in: each added line's code (its comment cut off) is in the stage's sources.
    while IFS= read -r line; do
        [[ ${#line} -ge 8 ]] || continue
        grep -rqF --include='*.[ch]' -- "$line" "$dir/$stage" || fail "the patch's line is not in the handout: $line" || return
    done < <(sed -nE '/^\+[^+]/{ s/^\+//; s#[ ]*//.*$##; s#[ ]*/\*.*$##; s/^[ \t]*//; p; }' "$patch")
    ! grep -rq --include='*.[ch]' 'LAB \(BEGIN\|END\|STUB\|TODO\)' "$dir" || fail "LAB markers left in a debugging handout" || return
    grep -q 'one plausible bug is in this server; the tests show its symptom; find and fix it' "$dir/LAB.md" ||
        grep -qi 'one plausible bug is in this server' "$dir/LAB.md" || fail "LAB.md: $(head -n 5 "$dir/LAB.md")" || return
    readme_clean "$dir/$stage/README.md" || return
    echo "$dir"
}

@test "handout BUG=: two gallery patches with comments in their added lines: the bug is in, its Caught-by test fails, nothing names it" {
    local dir
    # 06: a library patch whose three added comments say what it does; caught by a unit test.
    dir=$(bug_handout 06_codecs lenframe-header-trusted) || return
    in_handout "$dir" 240 make -s -j2 >"$OUT/build06.log" 2>&1 || fail "make failed: $(tail -n 20 "$OUT/build06.log")"
    run in_handout "$dir" 120 env BATS_FILTER='^unit: (lenframe_test|table_test)$' make -s test
    [[ $output =~ FAIL\ [0-9]+\ unit:\ lenframe_test && $output =~ pass\ [0-9]+\ unit:\ table_test ]] ||
        fail "06 with the bug: $output"
    # 03: a server patch with a comment that justifies it; graded by the handout's own make grade.
    dir=$(bug_handout 03_poll pollout-left-on) || return
    in_handout "$dir" 120 make -s -j2 >"$OUT/build03.log" 2>&1 || fail "make failed: $(tail -n 20 "$OUT/build03.log")"
    run in_handout "$dir" 240 env GRADE_FILTER='^(POLLOUT is off once the output drained|echo of random sizes)' make -s grade
    [[ $status -ne 0 && $output == *"FAIL  POLLOUT is off once the output drained"* && $output == *"PASS  echo of random sizes"* &&
        $output == *"Score: "* ]] || fail "03 with the bug, make grade: $status: $output"
    [[ $output != *"grading the reference itself"* ]] || fail "make grade calls the student's folder the reference: $output"
}
