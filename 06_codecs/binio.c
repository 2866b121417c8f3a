// binio.c: the bounds-checked binary reader and writer (binio.h). Integers are assembled and
// split with shifts, most significant byte first, so the host's byte order never matters.
#include "binio.h"

#include <string.h>

void br_init(struct binio_reader *r, const void *data, size_t len)
{
    r->data = data;
    r->len = len;
    r->pos = 0;
    r->err = 0;
}

// LAB BEGIN binio_read: the bounds check every read goes through
// LAB STUB: static const unsigned char *br_take(struct binio_reader *r, size_t n)
// LAB STUB: {
// LAB STUB:     (void)n;
// LAB STUB:     r->err = 1;  // not written: every read fails
// LAB STUB:     return NULL;
// LAB STUB: }
// The next N bytes, or NULL (and the sticky error) if fewer than N remain. Written as
// `n > len - pos`, never `pos + n > len`: pos <= len always holds, so the subtraction cannot
// wrap, while pos + n can (a u32 length of 4 GiB on a 32-bit size_t).
static const unsigned char *br_take(struct binio_reader *r, size_t n)
{
    if (r->err || n > r->len - r->pos) {
        r->err = 1;
        return NULL;
    }
    const unsigned char *p = r->data + r->pos;
    r->pos += n;
    return p;
}
// LAB END

// LAB BEGIN binio_read: network byte order (big-endian), whatever the host's
// LAB STUB: uint8_t br_u8(struct binio_reader *r)
// LAB STUB: {
// LAB STUB:     r->err = 1;  // not written: every read fails
// LAB STUB:     return 0;
// LAB STUB: }
// LAB STUB:
// LAB STUB: uint16_t br_u16(struct binio_reader *r)
// LAB STUB: {
// LAB STUB:     r->err = 1;
// LAB STUB:     return 0;
// LAB STUB: }
// LAB STUB:
// LAB STUB: uint32_t br_u32(struct binio_reader *r)
// LAB STUB: {
// LAB STUB:     r->err = 1;
// LAB STUB:     return 0;
// LAB STUB: }
// LAB STUB:
// LAB STUB: uint64_t br_u64(struct binio_reader *r)
// LAB STUB: {
// LAB STUB:     r->err = 1;
// LAB STUB:     return 0;
// LAB STUB: }
uint8_t br_u8(struct binio_reader *r)
{
    const unsigned char *p = br_take(r, 1);
    return p == NULL ? 0 : p[0];
}

uint16_t br_u16(struct binio_reader *r)
{
    const unsigned char *p = br_take(r, 2);
    return p == NULL ? 0 : (uint16_t)(p[0] << 8 | p[1]);
}

uint32_t br_u32(struct binio_reader *r)
{
    const unsigned char *p = br_take(r, 4);
    if (p == NULL)
        return 0;
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

uint64_t br_u64(struct binio_reader *r)
{
    uint64_t hi = br_u32(r);
    uint64_t lo = br_u32(r);
    return r->err ? 0 : hi << 32 | lo;
}
// LAB END

const void *br_bytes(struct binio_reader *r, size_t n)
{
    return br_take(r, n);
}

const void *br_str(struct binio_reader *r, size_t *len)
{
    size_t n = br_u32(r);
    const void *p = br_take(r, n);
    if (p == NULL) {
        r->pos = r->len;  // a bad length: nothing after it can be trusted
        *len = 0;
        return NULL;
    }
    *len = n;
    return p;
}

size_t br_remaining(const struct binio_reader *r)
{
    return r->err ? 0 : r->len - r->pos;
}

void bw_init(struct binio_writer *w, void *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->err = 0;
}

// Room for N more bytes at the end, or NULL (and the sticky error; nothing written).
static unsigned char *bw_room(struct binio_writer *w, size_t n)
{
    if (w->err || n > w->cap - w->len) {
        w->err = 1;
        return NULL;
    }
    unsigned char *p = w->buf + w->len;
    w->len += n;
    return p;
}

void bw_u8(struct binio_writer *w, uint8_t v)
{
    unsigned char *p = bw_room(w, 1);
    if (p != NULL)
        p[0] = v;
}

void bw_u16(struct binio_writer *w, uint16_t v)
{
    unsigned char *p = bw_room(w, 2);
    if (p != NULL) {
        p[0] = (unsigned char)(v >> 8);
        p[1] = (unsigned char)v;
    }
}

void bw_u32(struct binio_writer *w, uint32_t v)
{
    unsigned char *p = bw_room(w, 4);
    if (p != NULL) {
        p[0] = (unsigned char)(v >> 24);
        p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8);
        p[3] = (unsigned char)v;
    }
}

void bw_u64(struct binio_writer *w, uint64_t v)
{
    // Both halves or neither: check the room for 8 before writing the first 4.
    if (!w->err && 8 > w->cap - w->len) {
        w->err = 1;
        return;
    }
    bw_u32(w, (uint32_t)(v >> 32));
    bw_u32(w, (uint32_t)v);
}

void bw_bytes(struct binio_writer *w, const void *p, size_t n)
{
    unsigned char *dst = bw_room(w, n);
    if (dst != NULL && n > 0)
        memcpy(dst, p, n);
}

void bw_str(struct binio_writer *w, const void *p, size_t n)
{
    if (!w->err && (n > UINT32_MAX || n > w->cap - w->len || 4 > w->cap - w->len - n)) {
        w->err = 1;
        return;
    }
    bw_u32(w, (uint32_t)n);
    bw_bytes(w, p, n);
}
