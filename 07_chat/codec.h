// codec.h: the one result type every 06_codecs decoder returns (fixed, line, lenframe, resp,
// http), and the rules they all keep. Header only: no codec.c.
//
// How a server drives a decoder (one decoder per connection, one input buffer per connection):
//
//   on each read:  append the bytes read to the input buffer
//                  loop:
//                      r = X_decode(&dec, unread_bytes, unread_len)
//                      NEED_MORE -> stop looping; read again (compact the buffer if you like)
//                      FRAME     -> handle r.frame / r.len, then drop r.consumed bytes
//                      PIECE     -> handle one piece of a frame too long to wait for, drop
//                                   r.consumed
//                      ERROR     -> send the protocol's error (r.error, r.code), close
//
// The rules every decoder here keeps (codec_test programs hold them to it):
//  1. It is fed the unread bytes of the caller's buffer, (data, len), and never copies them:
//     r.frame points INTO data. The view is valid until the caller next changes its buffer
//     (drops bytes, compacts, appends, frees it): handle the frame first, drop r.consumed after.
//  2. Between two calls it keeps only offsets and counters, never a pointer into data: the
//     caller may move its buffer (compact it, realloc it) between calls. The next call's data
//     must start at the same stream byte the previous call's did, plus the previous
//     r.consumed (drop exactly r.consumed, nothing more, nothing less).
//  3. It never allocates per byte or per frame. (resp grows its argument table on demand,
//     geometrically, so a connection pays O(log max_args) allocations over its life; the
//     others never allocate at all.)
//  4. NEED_MORE never consumes: r.consumed is 0, so a caller may simply read again.
//  5. After an ERROR the decoder stays failed (every later call returns the same error):
//     the stream has lost its framing, and the only safe thing left is to close.
//  6. One decoder belongs to one connection and one thread: not thread-safe, no globals.
#ifndef CODEC_H
#define CODEC_H

#include <stddef.h>

enum codec_status {
    CODEC_NEED_MORE,  // no whole frame yet: read more, then call again with the longer data
    CODEC_FRAME,      // a whole frame: r.frame, r.len (a view into data)
    CODEC_PIECE,      // a piece of a frame delivered in pieces: r.frame, r.len, r.flags
    CODEC_ERROR,      // the stream is not this protocol, or breaks a limit: r.error, r.code
};

// r.flags of a CODEC_PIECE: the first piece of a frame has BEGIN, the last has END (a piece
// may have both). The pieces of a frame arrive in order, with nothing else in between.
#define CODEC_PIECE_BEGIN 1u
#define CODEC_PIECE_END 2u

struct codec_result {
    enum codec_status status;
    size_t consumed;            // bytes the caller drops from the front of its input now
    const char *frame;          // FRAME / PIECE: the payload, a view into data (rule 1)
    size_t len;                 // its length in bytes
    unsigned flags;             // PIECE: CODEC_PIECE_BEGIN / CODEC_PIECE_END
    unsigned long long total;   // PIECE: the whole frame's length (known from its header)
    const char *error;          // ERROR: a static message, e.g. "frame too large"
    int code;                   // ERROR: http: the status to answer (400, 413, 431, 501, 505);
                                //        others: 0
};

// The results, spelled once so each decoder reads like its protocol.
static inline struct codec_result codec_need_more(void)
{
    return (struct codec_result){.status = CODEC_NEED_MORE};
}

static inline struct codec_result codec_frame(const char *frame, size_t len, size_t consumed)
{
    return (struct codec_result){.status = CODEC_FRAME, .frame = frame, .len = len,
                                 .consumed = consumed, .total = len};
}

static inline struct codec_result codec_error(const char *msg, int code)
{
    return (struct codec_result){.status = CODEC_ERROR, .error = msg, .code = code};
}

#endif
