// fuzz_http.c: libFuzzer target for the HTTP/1.1 request-head decoder (http.h). The first
// byte picks the limits (head 32..287 bytes; 1..8 headers; body 0..63 bytes, where 0 means
// the default) and the second the split; the rest is the stream (test_util.h,
// fuzz_differential). Each head's parsed fields go into the transcript (http_describe).
#include "../http.h"
#include "../test_util.h"

static size_t fuzz_head, fuzz_headers;
static unsigned long long fuzz_body;

static void op_reset(void *dec) { http_init(dec, fuzz_head, fuzz_headers, fuzz_body); }

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    struct http_decoder d;
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = http_decode_op,
                            .describe = http_describe};
    fuzz_head = 32 + data[0];
    fuzz_headers = 1 + data[0] % 8;
    fuzz_body = data[0] % 64;
    fuzz_differential(&ops, (const char *)data + 2, size - 2, data[1], 512);
    return 0;
}
