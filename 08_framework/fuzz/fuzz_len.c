// fuzz_len.c: libFuzzer target for rx_codec_len (lib/codec.c): {u32 big-endian length, body}.
// The first byte picks MAX (0..63) and CHUNK (1, 9, 17 or 25: bodies longer are streamed in
// pieces), the second the split; the rest is the stream (fuzz.h). The pieces of a streamed
// frame, joined, must be the frame a whole feed cuts, and every frame framed again with
// head() must be the stream's bytes.
#include "fuzz.h"

static const char *check_len(const rx_codec *c, const rx_frame *f)
{
    if (f->total > c->max_frame)
        return "a body longer than MAX";
    if (f->type != 0 || (f->flags & RX_FRAME_REFUSED))
        return "a len frame with a type or refused";
    return NULL;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    fuzz_init();
    struct fuzz_spec spec = {.codec = rx_codec_len(data[0] & 0x3f, 1 + (size_t)(data[0] >> 6) * 8),
                             .check = check_len, .reframe = true};
    fuzz_codec(&spec, (const char *)data + 2, size - 2, data[1]);
    return 0;
}
