// fuzz_resp.c: libFuzzer target for the RESP2 request decoder (resp.h). The first byte picks
// the limits (bulk 1..64 bytes, 1..16 elements) and the second the split; the rest is the
// stream (test_util.h, fuzz_differential). Each request's arguments go into the transcript
// (resp_describe), so a split that changes any argument is caught, not only a crash.
#include "../resp.h"
#include "../test_util.h"

static size_t fuzz_bulk, fuzz_args;

static void op_reset(void *dec)
{
    resp_free(dec);
    resp_init(dec, fuzz_bulk, fuzz_args);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    struct resp_decoder d;
    resp_init(&d, 1, 1);
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = resp_decode_op,
                            .describe = resp_describe};
    fuzz_bulk = 1 + data[0] % 64;
    fuzz_args = 1 + (data[0] >> 6) * 5;
    fuzz_differential(&ops, (const char *)data + 2, size - 2, data[1], 512);
    resp_free(&d);
    return 0;
}
