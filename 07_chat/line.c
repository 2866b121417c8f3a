// line.c: the delimited decoder (line.h): scan for '\n' with memchr, resuming where the last
// scan stopped, and give the line back as a view into the caller's data.
#include "line.h"

#include <string.h>

void line_init(struct line_decoder *d, size_t max)
{
    d->max = max == 0 ? LINE_MAX_DEFAULT : max;
    d->scanned = 0;
    d->failed = 0;
}

static const char line_too_long[] = "line too long";

struct codec_result line_decode(struct line_decoder *d, const char *data, size_t len)
{
    if (d->failed)
        return codec_error(line_too_long, 0);
    // Never look further than max + 2 bytes: a '\n' beyond that ends a line that is too long
    // whatever precedes it (max bytes, then "\r\n", is the longest legal frame).
    size_t window = d->max + 2;
    size_t limit = len < window ? len : window;
    const char *nl = NULL;
    if (d->scanned < limit)
        nl = memchr(data + d->scanned, '\n', limit - d->scanned);
    if (nl == NULL) {
        d->scanned = limit;
        // No '\n' in the first `limit` bytes. The line is already too long if those bytes
        // hold more than max bytes of content (a final '\r' may still be half of "\r\n").
        size_t content = limit;
        if (content > 0 && data[content - 1] == '\r')
            content--;
        if (content > d->max) {
            d->failed = 1;
            return codec_error(line_too_long, 0);
        }
        return codec_need_more();
    }
    size_t end = (size_t)(nl - data);  // offset of the '\n'
    size_t flen = end;
    if (flen > 0 && data[flen - 1] == '\r')
        flen--;
    if (flen > d->max) {
        d->failed = 1;
        return codec_error(line_too_long, 0);
    }
    d->scanned = 0;  // the next call's data starts after this line
    return codec_frame(data, flen, end + 1);
}

size_t line_encode(char *out, size_t cap, const char *frame, size_t len)
{
    if (len < cap) {
        memcpy(out, frame, len);
        out[len] = '\n';
    }
    return len + 1;
}
