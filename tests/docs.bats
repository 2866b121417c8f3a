#!/usr/bin/env bats
# The notes are half the product: every stage's README has the sections DESIGN.md asks
# for, no figure left to fill in, and the top README's matrix is the expected one.

load "$BATS_TEST_DIRNAME/lib/harness.bash"

SECTIONS=("The decision" "Run it" "How it works" "Walk through the code" "Limits, measured"
    "What changed since the previous stage" "Exercises" "Further reading")

@test "docs: every stage README has the eight sections, in order" {
    local readme n=0
    for readme in "$KIT_ROOT"/[0-9][0-9]_*/README.md; do
        n=$((n + 1))
        local last=0 s line
        for s in "${SECTIONS[@]}"; do
            line=$(grep -n -m1 -E "^## ([0-9]+\. )?$s" "$readme" | cut -d: -f1)
            [[ -n $line ]] || fail "$readme: no '## $s' section"
            ((line > last)) || fail "$readme: '## $s' is out of order"
            last=$line
        done
    done
    ((n > 0)) || fail "no stage README found"
}

@test "docs: every stage README opens with prerequisites, time and simplifications" {
    local readme
    for readme in "$KIT_ROOT"/[0-9][0-9]_*/README.md; do
        head -n 12 "$readme" | grep -qE '^\*\*Prerequisites' || fail "$readme: no 'Prerequisites' line at the top"
        head -n 12 "$readme" | grep -qE '^\*\*Time' || fail "$readme: no '**Time:**' line at the top"
        head -n 12 "$readme" | grep -qE '^\*\*Simplif' || fail "$readme: no 'Simplifications' line at the top"
    done
}

@test "docs: no figure left to fill in" {
    run grep -n 'FIGURE-TODO' "$KIT_ROOT"/[0-9][0-9]_*/README.md "$KIT_ROOT/README.md"
    [[ $status -eq 1 ]] || fail "unfilled figures: $output"
}

@test "docs: the top README's capability matrix is tests/matrix/expected.txt" {
    python3 "$MATRIX" readme-check "$KIT_ROOT/README.md"
}

@test "docs: every stage listed in the matrix has a test file and a README" {
    local stage
    for stage in $(awk '!/^#/ && NF && $1 != "server" { split($1, a, "/"); print a[1] }' \
        "$KIT_ROOT/tests/matrix/expected.txt" | sort -u); do
        [[ -d $KIT_ROOT/$stage ]] || continue
        [[ -f $KIT_ROOT/$stage/test.bats ]] || fail "$stage has no test.bats"
        [[ -f $KIT_ROOT/$stage/README.md ]] || fail "$stage has no README.md"
    done
}

@test "docs: make diff in each later stage shows the lesson as a diff of sources" {
    local mk prev
    for mk in "$KIT_ROOT"/[0-9][0-9]_*/Makefile; do
        prev=$(sed -n 's/^PREV *:= *//p' "$mk")
        [[ -n $prev ]] || continue
        [[ -d $KIT_ROOT/$prev ]] || fail "$mk: PREV names $prev, which does not exist"
        run make -s -C "$(dirname "$mk")" diff
        [[ $status -eq 0 ]] || fail "make diff in $(dirname "$mk") exited $status"
        [[ $output == *"+++ b/server.c"* ]] || fail "make diff in $(dirname "$mk") shows no change to server.c"
    done
    # The lesson first: a diffstat, then server.c; files dropped are named in one line.
    if [[ -d $KIT_ROOT/02_select ]]; then
        run make -s -C "$KIT_ROOT/02_select" diff
        [[ ${lines[1]} == *"server.c"* ]] || fail "make diff in 02_select does not open with server.c's diffstat: ${lines[1]}"
        [[ $output == *"only in 01_blocking (not carried over): server_fork.c server_thread.c"* ]] ||
            fail "make diff in 02_select does not name the files only 01 has"
        [[ $output != *"--- a/server_fork.c"* ]] || fail "make diff in 02_select prints the dropped server_fork.c"
    fi
    # A file new in a stage must show in full: 03 introduces buffer.c.
    if [[ -d $KIT_ROOT/03_poll ]]; then
        run make -s -C "$KIT_ROOT/03_poll" diff
        [[ $output == *"+++ b/buffer.c"* ]] || fail "make diff in 03_poll does not show the new buffer.c"
    fi
}

@test "docs: the design and the glossary the notes point to are in the repository" {
    [[ -f $KIT_ROOT/DESIGN.md ]] || fail "no DESIGN.md"
    [[ -f $KIT_ROOT/GLOSSARY.md ]] || fail "no GLOSSARY.md"
    local f
    for f in README.md CONTRIBUTING.md; do
        grep -q 'DESIGN.md' "$KIT_ROOT/$f" || fail "$f does not point to DESIGN.md"
    done
}

@test "docs: every bug patch has a header naming the bug, the symptom and the test that catches it" {
    local p n=0 field
    for p in "$KIT_ROOT"/[0-9][0-9]_*/bugs/*.patch; do
        [[ -f $p ]] || continue
        n=$((n + 1))
        for field in Bug Symptom Caught-by; do
            sed -n '/^---/q; p' "$p" | grep -qE "^$field: .+" || fail "$p: no '$field:' line in its header"
        done
    done
    ((n > 0)) || fail "no bugs/*.patch in any stage"
}

@test "docs: every bug patch still applies to the tree as it is (a gallery patch that no longer applies is a bug the gallery no longer shows)" {
    local p bad=()
    for p in "$KIT_ROOT"/[0-9][0-9]_*/bugs/*.patch; do
        [[ -f $p ]] || continue
        (cd "$KIT_ROOT" && patch -p1 --dry-run -s -f <"$p" >/dev/null 2>&1) || bad+=("${p#"$KIT_ROOT"/}")
    done
    ((${#bad[@]} == 0)) || fail "${#bad[@]} patches do not apply (regenerate them against the code they break):" "${bad[@]}"
}

@test "docs: every LAB region has a name and an end" {
    local f
    for f in "$KIT_ROOT"/[0-9][0-9]_*/*.c "$KIT_ROOT"/[0-9][0-9]_*/*.h; do
        [[ -f $f ]] || continue
        if grep -nE 'LAB BEGIN *:' "$f"; then fail "$f: a LAB BEGIN without a name (LAB BEGIN <name>: <task>)"; fi
        (($(grep -c 'LAB BEGIN' "$f") == $(grep -c 'LAB END' "$f"))) || fail "$f: LAB BEGIN and LAB END do not pair up"
    done
}

@test "docs: the top README's set-up commands run as written (no variable the reader never set)" {
    # A new user pastes these: `git clone "$KIT_URL"` with KIT_URL unset cloned nothing.
    local block
    block=$(awk '/^## Set up/ { on = 1; next } /^## / { on = 0 } on && /^```/ { code = !code; next } on && code' "$KIT_ROOT/README.md")
    [[ -n $block ]] || fail "no shell block in the README's 'Set up' section"
    if grep -nE '\$[A-Za-z_{]' <<<"$block"; then fail "a set-up command uses a shell variable the reader never set"; fi
    grep -qE '^cd kit' <<<"$block" || fail "the set-up commands never enter the kit's folder (cd kit)"
}

@test "docs: make tour, piped: one heading per stage, every claim shown, the matrix, no escape codes, exit 0" {
    # tests/tour itself fails (exit 1, the stage named) when a demonstration does not show its
    # claim; here: the shape a reader sees. Bounded: 120 s, stretched by TIMEOUT_SCALE.
    local out="$BATS_TEST_TMPDIR/tour.out" stage n row
    run timeout -s TERM "$(($(scaled_ms 120) / 1000))" "$KIT_ROOT/tests/tour"
    printf '%s\n' "$output" >"$out"
    [[ $status -eq 0 ]] || fail "tests/tour exited $status:" "$(tail -n 20 "$out")" || return
    if grep -n $'\033' "$out"; then fail "escape codes in the tour's piped output"; return 1; fi
    for stage in "$KIT_ROOT"/[0-9][0-9]_*/; do
        stage=$(basename "$stage")
        n=$(grep -c "^$stage  " "$out")
        ((n == 1)) || fail "$n heading lines for $stage (one expected):" "$(head -n 5 "$out")" || return
    done
    grep -q '^capability matrix' "$out" || fail "no capability matrix in the tour" || return
    for row in $(awk '!/^#/ && NF && $1 != "server" { print $1 }' "$KIT_ROOT/tests/matrix/expected.txt"); do
        [[ -d $KIT_ROOT/${row%%/*} ]] || continue
        grep -qE "^  $row +(yes|no)" "$out" || fail "the tour's matrix has no row for $row" || return
    done
    grep -q 'NOT SHOWN' "$out" && { fail "a claim not shown, yet exit 0"; return 1; }
    grep -qE '^tour done in [0-9]+ s' "$out" || fail "no 'tour done' line" || return
    n=$(wc -l <"$out")
    ((n <= 60)) || fail "the tour takes $n lines; one screen is about 50" || return
}

@test "docs: the tour fails, naming the stage, when a demonstration does not show its claim" {
    # A kit whose 02_select/server is 03_poll's: the stall the tour claims for 02 cannot happen.
    local kit="$BATS_TEST_TMPDIR/kit"
    local sub=${SAN:+build-${SAN//,/-}/}
    mkdir -p "$kit/tests" "$kit/02_select/$sub"
    cp -r "$KIT_ROOT/tests/tour" "$KIT_ROOT/tests/lib" "$KIT_ROOT/tests/matrix" "$kit/tests/"
    ln -s "$KIT_ROOT/03_poll/${sub}server" "$kit/02_select/${sub}server"
    run timeout -s TERM "$(($(scaled_ms 60) / 1000))" "$kit/tests/tour" 02_select
    [[ $status -eq 1 ]] || fail "tests/tour exited $status, not 1:" "$output" || return
    grep -q '^tour: FAILED: 02_select: client B was echoed' <<<"$output" || fail "no failure naming 02_select's stall:" "$output" || return
    grep -q 'NOT SHOWN' <<<"$output" || fail "the result line does not say NOT SHOWN:" "$output" || return
}
