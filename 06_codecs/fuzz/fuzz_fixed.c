// fuzz_fixed.c: libFuzzer target for the fixed-size decoder (fixed.h). The first byte picks
// N (1..32) and the second the split; the rest is the stream (test_util.h, fuzz_differential).
#include "../fixed.h"
#include "../test_util.h"

static size_t fuzz_size;

static void op_reset(void *dec) { fixed_init(dec, fuzz_size); }

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    struct fixed_decoder d;
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = fixed_decode_op};
    fuzz_size = 1 + data[0] % 32;
    fuzz_differential(&ops, (const char *)data + 2, size - 2, data[1], 64);
    return 0;
}
