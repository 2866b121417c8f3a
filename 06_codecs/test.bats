#!/usr/bin/env bats
# 06_codecs: framing a byte stream. First the codec library in isolation: one unit-test program
# per codec (every frame in every split, limits at and one past, 10 MiB through 64 KiB, garbage)
# and one libFuzzer target per decoder (split and unsplit decoding must agree); then the
# server, `server --codec ...`, over the network.

load "$BATS_TEST_DIRNAME/../tests/lib/harness.bash"

# unit PROGRAM: runs a codec's unit-test program from the build under test (STAGE_BUILD / SAN);
# it prints "ok N - ..." / "not ok N - ..." and exits non-zero on any failure.
unit() {
    local bin
    bin=$(stage_bin "$1")
    [[ -x $bin ]] || fail "no binary $bin: build it with: make -C $STAGE_DIR${SAN:+ SAN=$SAN}" || return
    run "$bin"
    [[ $status -eq 0 ]] || fail "$1 failed:" "$(grep -v '^ok ' <<<"$output")" || return
    grep -q '^ok ' <<<"$output" || fail "$1 ran no test" || return
}

# fuzz_smoke TARGET: builds fuzz/TARGET.c with clang's libFuzzer (ASan + UBSan) and runs it over
# its seed corpus plus 3 s of new inputs (make fuzz-smoke). Skipped under SAN (the target is
# sanitized already) and where clang cannot build a libFuzzer binary.
fuzz_smoke() {
    [[ -z ${SAN:-} ]] || skip "fuzz targets carry their own sanitizers; run without SAN"
    command -v clang >/dev/null || skip "clang is not installed (Debian/Ubuntu: apt-get install clang)"
    local probe
    probe=$(mktemp -d)
    printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' >"$probe/p.c"
    clang -fsanitize=fuzzer,address,undefined -o "$probe/p" "$probe/p.c" 2>/dev/null ||
        { rm -rf "$probe"; skip "clang cannot link libFuzzer (Debian/Ubuntu: apt-get install clang; it needs libclang-rt-dev or libclang-common-dev)"; }
    rm -rf "$probe"
    run make -s -C "$STAGE_DIR" fuzz-smoke FUZZ_TARGETS="$1"
    [[ $status -eq 0 ]] || fail "make fuzz-smoke FUZZ_TARGETS=$1 failed:" "$(tail -n 40 <<<"$output")" || return
    grep -q "number_of_executed_units" <<<"$output" || fail "$1 reported no runs:" "$output" || return
}

@test "unit: fixed_test" { unit fixed_test; }
@test "unit: line_test" { unit line_test; }
@test "unit: lenframe_test" { unit lenframe_test; }
@test "unit: binio_test" { unit binio_test; }
@test "unit: resp_test" { unit resp_test; }
@test "unit: http_test" { unit http_test; }

@test "fuzz: fuzz_fixed" { fuzz_smoke fuzz_fixed; }
@test "fuzz: fuzz_line" { fuzz_smoke fuzz_line; }
@test "fuzz: fuzz_lenframe" { fuzz_smoke fuzz_lenframe; }
@test "fuzz: fuzz_binio" { fuzz_smoke fuzz_binio; }
@test "fuzz: fuzz_resp" { fuzz_smoke fuzz_resp; }
@test "fuzz: fuzz_http" { fuzz_smoke fuzz_http; }

# ---- network tests (server helper) ----
