// fuzz_http.c: libFuzzer target for rx_codec_http (lib/codec_http.c). The first byte picks
// MAX_HEAD (16..520 bytes) and MAX_BODY (0, 40, 80 or 120), the second the split; the rest is
// the stream (fuzz.h). Each frame is read back with rx_http_view: a request within the limits
// (method, target, a body of its Content-Length), or a refusal of a status the codec
// documents. A 100 Continue frame is left out of the transcript: it is sent only when the
// head came without its body, which depends on the split.
#include "fuzz.h"

static bool keep_http(const rx_frame *f)
{
    return f->type != 100;
}

static const char *check_http(const rx_codec *c, const rx_frame *f)
{
    static rx_http_request r;
    if (rx_http_view(f, &r) != 0)
        return "rx_http_view cannot read a frame of the codec";
    if (f->flags & RX_FRAME_REFUSED) {
        if (r.status != f->type || r.error == NULL ||
            (r.status != 400 && r.status != 413 && r.status != 431 && r.status != 501 &&
             r.status != 505 && r.status != 500))
            return "a refusal of a status the codec does not document";
        return NULL;
    }
    size_t max_head = c->chunk, max_body = c->max_frame - c->chunk;
    if (r.status != 0 || f->type != 0)
        return "a request frame with a status";
    if (r.method_len == 0 || r.target_len == 0 || r.minor < 0 || r.minor > 1)
        return "a request without method or target, or of another version";
    if (r.body_len > max_body || r.wire_len - r.body_len > max_head)
        return "a request over MAX_HEAD or MAX_BODY";
    if (r.body_len > 0 && r.body == NULL)
        return "a request whose body is not in its frame";
    if (r.nheaders > RX_HTTP_MAX_HEADERS)
        return "more headers than RX_HTTP_MAX_HEADERS";
    for (size_t i = 0; i < r.nheaders; i++)
        if (r.headers[i].name_len == 0)
            return "a header without a name";
    return NULL;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    fuzz_init();
    struct fuzz_spec spec = {.codec = rx_codec_http(16 + (size_t)(data[0] & 0x3f) * 8,
                                                    (size_t)(data[0] >> 6) * 40),
                             .check = check_http, .keep = keep_http, .frame_over_max_ok = true};
    fuzz_codec(&spec, (const char *)data + 2, size - 2, data[1]);
    return 0;
}
