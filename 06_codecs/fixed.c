// fixed.c: the fixed-size decoder (fixed.h): a frame is the next N bytes, whatever they are.
#include "fixed.h"

#include <string.h>

void fixed_init(struct fixed_decoder *d, size_t size)
{
    d->size = size == 0 ? 1 : size;
}

struct codec_result fixed_decode(struct fixed_decoder *d, const char *data, size_t len)
{
    if (len < d->size)
        return codec_need_more();
    return codec_frame(data, d->size, d->size);
}

size_t fixed_encode(const struct fixed_decoder *d, char *out, size_t cap, const char *frame,
                    size_t len)
{
    if (len != d->size)
        return 0;
    if (len <= cap)
        memcpy(out, frame, len);
    return len;
}
