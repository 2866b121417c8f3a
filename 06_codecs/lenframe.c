// lenframe.c: the length-prefixed decoder (lenframe.h): read the 4-byte header, check it
// against the limit, then return the body whole or deliver it in pieces.
#include "lenframe.h"

#include <string.h>

void lenframe_init(struct lenframe_decoder *d, uint32_t max, size_t whole_max)
{
    d->max = max == 0 ? LENFRAME_MAX_DEFAULT : max;
    d->whole_max = whole_max;
    d->total = 0;
    d->remaining = 0;
    d->failed = 0;
}

static const char frame_too_large[] = "frame too large";

// The header's value: four bytes, most significant first (network byte order), assembled
// with shifts so the host's own byte order never matters.
static uint32_t read_be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | (uint32_t)u[3];
}

struct codec_result lenframe_decode(struct lenframe_decoder *d, const char *data, size_t len)
{
    if (d->failed)
        return codec_error(frame_too_large, 0);
    struct codec_result r = {.status = CODEC_PIECE};
    // LAB BEGIN lenframe_decode: continue a frame delivered in pieces, or start the next one
    // LAB STUB: (void)read_be32;
    // LAB STUB: (void)r;
    // LAB STUB: uint32_t n = 0;
    // LAB STUB: if (n == 0)
    // LAB STUB:     return codec_error("lenframe_decode not written", 0);
    if (d->remaining > 0) {
        // Inside a long frame: every byte in data up to its end is the next piece.
        if (len == 0)
            return codec_need_more();
        size_t n = len < d->remaining ? len : d->remaining;
        d->remaining -= (uint32_t)n;
        r.frame = data;
        r.len = r.consumed = n;
        r.total = d->total;
        r.flags = d->remaining == 0 ? CODEC_PIECE_END : 0;
        return r;
    }
    if (len < LENFRAME_HEADER)
        return codec_need_more();
    uint32_t n = read_be32(data);
    // LAB END
    // LAB BEGIN lenframe_decode: the header is a claim: check it before trusting it
    if (n > d->max) {
        d->failed = 1;
        return codec_error(frame_too_large, 0);
    }
    // LAB END
    // LAB BEGIN lenframe_decode: a whole frame as a view, or the first piece of a long one
    // LAB STUB: (void)len;
    // LAB STUB: (void)data;
    // LAB STUB: (void)r;
    // LAB STUB: return codec_error("lenframe_decode not written", 0);
    size_t avail = len - LENFRAME_HEADER;
    if (avail >= n)
        return codec_frame(data + LENFRAME_HEADER, n, LENFRAME_HEADER + (size_t)n);
    if (n <= d->whole_max || avail == 0)
        return codec_need_more();  // it will fit: wait for it (or for its first body byte)
    d->total = n;
    d->remaining = n - (uint32_t)avail;
    r.frame = data + LENFRAME_HEADER;
    r.len = avail;
    r.consumed = len;
    r.total = n;
    r.flags = CODEC_PIECE_BEGIN;
    return r;
    // LAB END
}

void lenframe_header(unsigned char out[LENFRAME_HEADER], uint32_t len)
{
    out[0] = (unsigned char)(len >> 24);
    out[1] = (unsigned char)(len >> 16);
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
}

size_t lenframe_encode(char *out, size_t cap, const char *frame, uint32_t len)
{
    size_t need = LENFRAME_HEADER + (size_t)len;
    if (need <= cap) {
        lenframe_header((unsigned char *)out, len);
        memcpy(out + LENFRAME_HEADER, frame, len);
    }
    return need;
}

void lenframe_iov(struct iovec iov[2], unsigned char hdr[LENFRAME_HEADER], const char *frame,
                  uint32_t len)
{
    lenframe_header(hdr, len);
    iov[0].iov_base = hdr;
    iov[0].iov_len = LENFRAME_HEADER;
    iov[1].iov_base = (void *)frame;  // writev does not write through it
    iov[1].iov_len = len;
}
