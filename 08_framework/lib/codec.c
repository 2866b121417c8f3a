// codec.c: the four built-in codecs of rx.h (raw, line, len, hdr): how each cuts a byte stream
// into frames in the io thread, and what each writes around a message the main thread sends.
//
// The rules every decode here keeps (codec_test.c holds them to each):
//  1. It is given the unread bytes of the connection's input buffer and never copies them:
//     a frame handed to EMIT points into IN, valid during the call only.
//  2. It returns how many bytes it consumed: every frame it emitted, whole or as pieces, and
//     nothing of a frame it is still waiting for. The caller drops exactly that many and hands
//     back the rest with more bytes after its next read. Between calls a codec keeps counters
//     (in its per-connection state), never a pointer into IN: the buffer may move.
//  3. It cuts every frame it can in one call: the caller calls it once per read.
//  4. EMIT returning -1 stops it at once: it returns what it consumed up to and including the
//     frame (or piece) that EMIT was given, so nothing is handed over twice.
//  5. A bad frame returns -1, judged as early as the bytes allow, and nothing of the bad frame
//     is emitted first (frames before it in IN are, they were good). The connection closes.
#include "rx.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// A head() result larger than RX_HEAD_MAX: this message cannot be framed (rx_buf_frame fails
// with EMSGSIZE). The u32 length of len and hdr holds at most 4 GiB - 1 bytes.
#define HEAD_TOO_LONG ((size_t)-1)

static uint32_t read_be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | (uint32_t)u[3];
}

static void write_be32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

// raw and line: nothing before the message (a line has its "\n" after it, as the tail).
static size_t no_head(const rx_codec *c, uint16_t type, size_t len, char *head)
{
    (void)c, (void)type, (void)len, (void)head;
    return 0;
}

// ------------------------------------------------------------------------------ raw

// Each call hands IN over as one frame: a raw stream has no boundaries, so a "frame" is what
// one read brought (the io thread's read size bounds it; max_frame says so, nothing checks it).
static ssize_t raw_decode(const rx_codec *c, void *state, const char *in, size_t len,
                          rx_emit_fn *emit, void *ctx)
{
    (void)c, (void)state;
    if (len == 0)
        return 0;
    rx_frame f = {.data = in, .len = len, .flags = RX_FRAME_FIRST | RX_FRAME_LAST, .total = len};
    (void)emit(ctx, &f);  // stopping or not, the bytes were handed over (rule 4)
    return (ssize_t)len;
}

rx_codec rx_codec_raw(void)
{
    return (rx_codec){.name = "raw", .max_frame = 64 * 1024, .chunk = 64 * 1024,
                      .decode = raw_decode, .head = no_head};
}

// ----------------------------------------------------------------------------- line

// What a line connection remembers between calls: how far the unconsumed bytes were already
// searched for "\n", so a long line arriving in small reads is scanned once in all, not once
// per read (which would cost O(max^2) for a line sent a byte at a time).
struct line_state {
    size_t scanned;
};

static void *line_create(const rx_codec *c)
{
    (void)c;
    return calloc(1, sizeof(struct line_state));
}

static ssize_t line_decode(const rx_codec *c, void *state, const char *in, size_t len,
                           rx_emit_fn *emit, void *ctx)
{
    struct line_state *st = state;
    size_t max = c->max_frame;
    // A line is at most MAX bytes, then "\n": looking further than MAX + 1 bytes into a line
    // can only show that it is too long, which MAX + 1 bytes without "\n" already prove.
    size_t window = max < SIZE_MAX ? max + 1 : SIZE_MAX;
    size_t pos = 0;
    size_t from = st->scanned;  // of the first line only: later ones are new bytes
    st->scanned = 0;
    while (pos < len) {
        size_t avail = len - pos;
        size_t limit = avail < window ? avail : window;
        const char *nl = NULL;
        if (from < limit)
            nl = memchr(in + pos + from, '\n', limit - from);
        if (nl == NULL) {
            if (avail > max)
                return -1;  // MAX + 1 bytes and no "\n": too long already (rule 5)
            st->scanned = limit;  // wait for the rest; these bytes need no second look
            break;
        }
        size_t flen = (size_t)(nl - (in + pos));
        rx_frame f = {.data = in + pos, .len = flen, .flags = RX_FRAME_FIRST | RX_FRAME_LAST,
                      .total = flen};
        pos += flen + 1;
        from = 0;
        if (emit(ctx, &f) == -1)
            break;
    }
    return (ssize_t)pos;
}

rx_codec rx_codec_line(size_t max)
{
    // chunk = max: nothing is streamed, and an io thread sizing its input buffer by
    // min(max_frame, chunk) (conn.c) holds a whole line.
    return (rx_codec){.name = "line", .max_frame = max, .chunk = max, .create = line_create,
                      .destroy = free, .decode = line_decode, .head = no_head, .tail = "\n",
                      .tail_len = 1};
}

// ------------------------------------------------------------------------------ len

#define LEN_HEAD 4

// What a len connection remembers between calls: the frame being streamed, if any. Its
// header is consumed when streaming starts, so the state, not the buffer, knows the length.
struct len_state {
    uint64_t total;      // the streamed frame's length
    uint64_t remaining;  // its bytes not yet emitted (0: not inside a streamed frame)
};

static void *len_create(const rx_codec *c)
{
    (void)c;
    return calloc(1, sizeof(struct len_state));
}

static ssize_t len_decode(const rx_codec *c, void *state, const char *in, size_t len,
                          rx_emit_fn *emit, void *ctx)
{
    struct len_state *st = state;
    size_t pos = 0;
    for (;;) {
        size_t avail = len - pos;
        if (st->remaining > 0) {
            // Inside a streamed frame: whatever is here of it is the next piece.
            if (avail == 0)
                break;
            size_t n = avail < st->remaining ? avail : (size_t)st->remaining;
            rx_frame f = {.data = in + pos, .len = n, .total = st->total};
            if (st->remaining == st->total)
                f.flags |= RX_FRAME_FIRST;
            st->remaining -= n;
            if (st->remaining == 0)
                f.flags |= RX_FRAME_LAST;
            pos += n;
            if (emit(ctx, &f) == -1)
                break;
            continue;
        }
        if (avail < LEN_HEAD)
            break;
        uint32_t n = read_be32(in + pos);
        // The header is a claim: check it before waiting for (or streaming) a single byte.
        if (n > c->max_frame)
            return -1;
        if (n > c->chunk) {
            // Too long to wait for whole: stream it through the buffer, a piece per read.
            pos += LEN_HEAD;
            st->total = st->remaining = n;
            continue;
        }
        if (avail - LEN_HEAD < n)
            break;  // it will fit in CHUNK + 4 bytes: wait for it whole, consuming nothing
        rx_frame f = {.data = in + pos + LEN_HEAD, .len = n,
                      .flags = RX_FRAME_FIRST | RX_FRAME_LAST, .total = n};
        pos += LEN_HEAD + (size_t)n;
        if (emit(ctx, &f) == -1)
            break;
    }
    return (ssize_t)pos;
}

static size_t len_head(const rx_codec *c, uint16_t type, size_t len, char *head)
{
    (void)c, (void)type;
    if (len > UINT32_MAX)
        return HEAD_TOO_LONG;
    write_be32(head, (uint32_t)len);
    return LEN_HEAD;
}

rx_codec rx_codec_len(size_t max, size_t chunk)
{
    return (rx_codec){.name = "len", .max_frame = max, .chunk = chunk, .create = len_create,
                      .destroy = free, .decode = len_decode, .head = len_head};
}

// ------------------------------------------------------------------------------ hdr

#define HDR_HEAD 6

// {u32 length, u16 type, body}, stateless: every frame is waited for whole, so the input
// buffer must hold max_frame + 6 bytes, and max_frame is what bounds it.
static ssize_t hdr_decode(const rx_codec *c, void *state, const char *in, size_t len,
                          rx_emit_fn *emit, void *ctx)
{
    (void)state;
    size_t pos = 0;
    while (len - pos >= 4) {
        uint32_t n = read_be32(in + pos);
        if (n > c->max_frame)
            return -1;  // judged from the length alone, before the type has arrived
        if (len - pos < HDR_HEAD || len - pos - HDR_HEAD < n)
            break;
        const unsigned char *t = (const unsigned char *)in + pos + 4;
        rx_frame f = {.data = in + pos + HDR_HEAD, .len = n,
                      .type = (uint16_t)(t[0] << 8 | t[1]),
                      .flags = RX_FRAME_FIRST | RX_FRAME_LAST, .total = n};
        pos += HDR_HEAD + (size_t)n;
        if (emit(ctx, &f) == -1)
            break;
    }
    return (ssize_t)pos;
}

static size_t hdr_head(const rx_codec *c, uint16_t type, size_t len, char *head)
{
    (void)c;
    if (len > UINT32_MAX)
        return HEAD_TOO_LONG;
    write_be32(head, (uint32_t)len);
    head[4] = (char)(type >> 8);
    head[5] = (char)type;
    return HDR_HEAD;
}

rx_codec rx_codec_hdr(size_t max)
{
    // chunk = max: nothing is streamed (see rx_codec_line).
    return (rx_codec){.name = "hdr", .max_frame = max, .chunk = max, .decode = hdr_decode,
                      .head = hdr_head};
}
