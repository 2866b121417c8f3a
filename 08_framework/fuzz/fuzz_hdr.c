// fuzz_hdr.c: libFuzzer target for rx_codec_hdr (lib/codec.c): {u32 length, u16 type, body}.
// The first byte is MAX (0..255), the second the split; the rest is the stream (fuzz.h). Every
// frame framed again with head() (its type too) must be the stream's bytes.
#include "fuzz.h"

static const char *check_hdr(const rx_codec *c, const rx_frame *f)
{
    if (f->len > c->max_frame)
        return "a body longer than MAX";
    if (f->flags & RX_FRAME_REFUSED)
        return "a refused hdr frame (hdr refuses with -1)";
    return NULL;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    fuzz_init();
    struct fuzz_spec spec = {.codec = rx_codec_hdr(data[0]), .check = check_hdr, .reframe = true};
    fuzz_codec(&spec, (const char *)data + 2, size - 2, data[1]);
    return 0;
}
