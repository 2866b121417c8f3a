// fuzz_resp_reply.c: libFuzzer target for rx_codec_resp_reply (lib/codec_resp_reply.c), what
// redis-server answers. The first byte is MAX_REPLY (3..254; 255: 64 KiB), the second the
// split; the rest is the stream (fuzz.h). Each reply is read back with rx_resp_values: one
// top-level value first, of the frame's type, the frame ending in "\r\n".
#include "fuzz.h"

static const char *check_reply(const rx_codec *c, const rx_frame *f)
{
    (void)c;
    if (f->flags & RX_FRAME_REFUSED)
        return "a refused reply (resp-reply refuses with -1)";
    if (f->len < 3 || f->data[f->len - 2] != '\r' || f->data[f->len - 1] != '\n')
        return "a reply that does not end in \"\\r\\n\"";
    if (f->type != (unsigned char)f->data[0] || strchr("+-:$*", f->data[0]) == NULL)
        return "a reply whose type is not its first byte, one of + - : $ *";
    rx_resp_value v[8];
    size_t n = rx_resp_values(f, v, 8);
    if (n == 0 || v[0].depth != 0 || v[0].type != f->data[0])
        return "rx_resp_values does not read the reply's first value back";
    for (size_t i = 0; i < n && i < 8; i++)
        if (v[i].p != NULL && (v[i].p < f->data || v[i].p + v[i].len > f->data + f->len))
            return "a value outside its frame";
    return NULL;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    fuzz_init();
    size_t max = data[0] == 255 ? 65536 : data[0];
    struct fuzz_spec spec = {.codec = rx_codec_resp_reply(max), .check = check_reply};
    fuzz_codec(&spec, (const char *)data + 2, size - 2, data[1]);
    return 0;
}
