// fuzz_resp.c: libFuzzer target for the RESP2 request decoder (resp.h). The first byte picks
// the limits (bulk 1..64 bytes, 1..16 elements) and the second the split; the rest is the
// stream (test_util.h, fuzz_differential). Each request's arguments go into the transcript,
// so a split that changes any argument is caught, not only a crash.
#include "../resp.h"
#include "../test_util.h"

static size_t fuzz_bulk, fuzz_args;

static void op_reset(void *dec)
{
    resp_free(dec);
    resp_init(dec, fuzz_bulk, fuzz_args);
}

static struct codec_result op_decode(void *dec, const char *data, size_t len)
{
    return resp_decode(dec, data, len);
}

static void op_describe(void *dec, const char *data, const struct codec_result *r,
                        struct tstr *out)
{
    struct resp_decoder *d = dec;
    (void)r;
    ts_printf(out, "%zu", d->argc);
    for (size_t i = 0; i < d->argc; i++) {
        size_t n;
        const char *a = resp_arg(d, data, i, &n);
        ts_printf(out, "[%zu:", n);
        ts_add(out, a, n);
        ts_add(out, "]", 1);
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    struct resp_decoder d;
    resp_init(&d, 1, 1);
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = op_decode,
                            .describe = op_describe};
    fuzz_bulk = 1 + data[0] % 64;
    fuzz_args = 1 + (data[0] >> 6) * 5;
    fuzz_differential(&ops, (const char *)data + 2, size - 2, data[1], 512);
    resp_free(&d);
    return 0;
}
