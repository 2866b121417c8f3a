// fuzz_resp.c: libFuzzer target for rx_codec_resp (lib/codec_resp.c), Redis requests. The
// first byte picks MAX_REQUEST (8..262 bytes; 255: 64 KiB, room for the 1024-argument limit),
// the second the split; the rest is the stream (fuzz.h). Each request is read back with
// rx_resp_args: its argument count is the frame's type and every argument lies inside it; a
// refusal is one "Protocol error: ..." frame.
#include "fuzz.h"

static const char *check_resp(const rx_codec *c, const rx_frame *f)
{
    (void)c;
    if (f->flags & RX_FRAME_REFUSED) {
        if (f->type != 0 || f->len < 16 || memcmp(f->data, "Protocol error: ", 16) != 0)
            return "a refusal that is not \"Protocol error: ...\" of type 0";
        return NULL;
    }
    if (f->type == 0 || f->type > RX_RESP_MAX_ARGS)
        return "a request with no argument, or over RX_RESP_MAX_ARGS";
    if (f->len == 0 || f->data[f->len - 1] != '\n')
        return "a request that does not end its last line";
    static rx_resp_arg argv[RX_RESP_MAX_ARGS];
    size_t n = rx_resp_args(f, argv, RX_RESP_MAX_ARGS);
    if (n != f->type)
        return "rx_resp_args reads another argument count than the frame's type";
    for (size_t i = 0; i < n; i++)
        if (argv[i].p < f->data || argv[i].len > f->len || argv[i].p + argv[i].len > f->data + f->len)
            return "an argument outside its frame";
    return NULL;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    fuzz_init();
    size_t max = data[0] == 255 ? 65536 : 8 + (size_t)data[0];
    struct fuzz_spec spec = {.codec = rx_codec_resp(max), .check = check_resp};
    fuzz_codec(&spec, (const char *)data + 2, size - 2, data[1]);
    return 0;
}
