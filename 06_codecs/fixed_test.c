// fixed_test.c: the fixed-size decoder (fixed.h): every frame of a vector set in every split,
// frames back to back in one read, a truncated last frame, sizes 1 and the buffer's size,
// and the encoder.
// A test binary (make fixed_test; test.bats runs it): "ok N - ..." lines, exit 1 on failure.
#include "fixed.h"
#include "test_util.h"

static size_t test_size = 5;

static void op_reset(void *dec) { fixed_init(dec, test_size); }

int main(void)
{
    struct fixed_decoder d;
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = fixed_decode_op};

    // 16 bytes (one a NUL): three frames, then one byte of a fourth.
    static const char vec[] = "hello\nworld\r\n\0xy";
    static const char want[] = "F5:hello\nF5:\nworl\nF5:d\r\n\0x\nR1 bytes left\n";
    check_splits_n("N = 5: three frames and a truncated one", &ops, vec, sizeof vec - 1, want,
                   sizeof want - 1, 64, 0, 200);
    check_splits_n("N = 5, the buffer moved on every read", &ops, vec, sizeof vec - 1, want,
                   sizeof want - 1, 64, 1, 200);
    test_size = 1;
    check_splits("N = 1: every byte a frame", &ops, "abc", 3, "F1:a\nF1:b\nF1:c\n", 64, 1, 20);
    // N equal to the buffer's capacity: the frame fills the buffer exactly, and still comes out.
    test_size = 64;
    static const char big[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                              "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    check_splits("N = the buffer's size (64), two frames", &ops, big, 128,
                 "F64:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
                 "F64:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
                 64, 1, 100);
    test_size = 5;

    fixed_init(&d, 0);
    struct codec_result r0 = fixed_decode(&d, "", 0);
    t_check(d.size == 1 && r0.status == CODEC_NEED_MORE && r0.consumed == 0,
            "fixed_init(0) means 1; no data is NEED_MORE, consuming nothing");

    fixed_init(&d, 3);
    char out[4] = "zzz";
    size_t n1 = fixed_encode(&d, out, 3, "abc", 3);
    size_t n2 = fixed_encode(&d, out, 3, "ab", 2);
    size_t n3 = fixed_encode(&d, out, 2, "xyz", 3);
    t_check(n1 == 3 && n2 == 0 && n3 == 3 && memcmp(out, "abc", 3) == 0,
            "fixed_encode: N bytes, 0 for a wrong length, nothing written when it does not fit");
    return t_done();
}
