// fuzz_http.c: libFuzzer target for the HTTP/1.1 request-head decoder (http.h). The first
// byte picks the limits (head 32..287 bytes; 1..8 headers; body 0..63 bytes, where 0 means
// the default) and the second the split; the rest is the stream (test_util.h,
// fuzz_differential). Each head's parsed fields go into the transcript.
#include "../http.h"
#include "../test_util.h"

static size_t fuzz_head, fuzz_headers;
static unsigned long long fuzz_body;

static void op_reset(void *dec) { http_init(dec, fuzz_head, fuzz_headers, fuzz_body); }

static struct codec_result op_decode(void *dec, const char *data, size_t len)
{
    return http_decode(dec, data, len);
}

static void op_describe(void *dec, const char *data, const struct codec_result *r,
                        struct tstr *out)
{
    struct http_decoder *d = dec;
    const struct http_request *q = &d->req;
    (void)r;
    ts_add(out, data + q->method.off, q->method.len);
    ts_add(out, " ", 1);
    ts_add(out, data + q->target.off, q->target.len);
    ts_printf(out, " 1.%d ka=%d cl=%llu", q->minor, q->keep_alive, q->content_length);
    for (size_t i = 0; i < q->nheaders; i++) {
        ts_add(out, " [", 2);
        ts_add(out, data + q->headers[i].name.off, q->headers[i].name.len);
        ts_add(out, "=", 1);
        ts_add(out, data + q->headers[i].value.off, q->headers[i].value.len);
        ts_add(out, "]", 1);
    }
    size_t n;
    const char *h = http_header(d, data, "content-LENGTH", &n);
    if (h != NULL)
        ts_add(out, h, n);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    struct http_decoder d;
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = op_decode,
                            .describe = op_describe};
    fuzz_head = 32 + data[0];
    fuzz_headers = 1 + data[0] % 8;
    fuzz_body = data[0] % 64;
    fuzz_differential(&ops, (const char *)data + 2, size - 2, data[1], 512);
    return 0;
}
