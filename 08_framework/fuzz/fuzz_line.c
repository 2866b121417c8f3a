// fuzz_line.c: libFuzzer target for rx_codec_line (lib/codec.c). The first byte picks MAX
// (0..63 bytes before the "\n"), the second the split; the rest is the stream (fuzz.h feeds it
// whole, split, in small pieces, a byte at a time and stopped after each frame).
#include "fuzz.h"

static const char *check_line(const rx_codec *c, const rx_frame *f)
{
    if (f->len > c->max_frame)
        return "a line longer than MAX";
    if (memchr(f->data, '\n', f->len) != NULL)
        return "a line with a \"\\n\" inside";
    if (f->type != 0 || (f->flags & RX_FRAME_REFUSED))
        return "a line with a type or refused";
    return NULL;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    fuzz_init();
    struct fuzz_spec spec = {.codec = rx_codec_line(data[0] % 64), .check = check_line,
                             .reframe = true};
    fuzz_codec(&spec, (const char *)data + 2, size - 2, data[1]);
    return 0;
}
