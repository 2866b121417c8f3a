// fuzz_lenframe.c: libFuzzer target for the length-prefixed decoder (lenframe.h). The first
// byte picks the maximum frame size (0..255), the second the split; the rest is the stream.
// The buffer is 64 bytes, so frames over 60 bytes come in pieces in some splits and whole in
// others: the transcripts must still agree (test_util.h, fuzz_differential).
#include "../lenframe.h"
#include "../test_util.h"

static uint32_t fuzz_max;

static void op_reset(void *dec) { lenframe_init(dec, fuzz_max, 64 - LENFRAME_HEADER); }

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    struct lenframe_decoder d;
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = lenframe_decode_op,
                            .pieces_are_frames = 1};
    fuzz_max = data[0] == 0 ? 1 : data[0];  // 0 would mean the 16 MiB default
    fuzz_differential(&ops, (const char *)data + 2, size - 2, data[1], 64);
    return 0;
}
