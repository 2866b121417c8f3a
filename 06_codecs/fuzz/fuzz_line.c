// fuzz_line.c: libFuzzer target for the delimited decoder (line.h). The first byte picks the
// maximum frame length (1..64) and the split; the rest is the stream, which must decode the
// same in one read, split in two, and in small pieces (test_util.h, fuzz_differential).
#include "../line.h"
#include "../test_util.h"

static size_t fuzz_max;

static void op_reset(void *dec) { line_init(dec, fuzz_max); }

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    struct line_decoder d;
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = line_decode_op};
    fuzz_max = 1 + data[0] % 64;
    fuzz_differential(&ops, (const char *)data + 2, size - 2, data[1], 128);
    return 0;
}
