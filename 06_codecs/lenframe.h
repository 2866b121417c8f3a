// lenframe.h: the length-prefixed decoder: a 4-byte big-endian length, then that many bytes.
// The rules of codec.h hold. The length is checked against the maximum frame size as soon as
// its 4 bytes are in, before anything else is done with it: the header is the peer's claim,
// and a claim of 4 GiB must cost us nothing.
//
// Frames up to `whole_max` bytes are returned whole (CODEC_FRAME: the caller's buffer must
// hold LENFRAME_HEADER + whole_max bytes). A longer frame (up to `max`) is not waited for:
// it is delivered in pieces as its bytes arrive (CODEC_PIECE, BEGIN ... END), each piece a view
// of the bytes the caller has, so a 10 MiB frame passes through a 64 KiB buffer. Any frame that
// is already whole in data is returned whole (0 bytes copied), however long.
#ifndef LENFRAME_H
#define LENFRAME_H

#include "codec.h"

#include <stdint.h>
#include <sys/uio.h>

#define LENFRAME_HEADER 4                       // bytes of the length prefix
#define LENFRAME_MAX_DEFAULT (16u * 1024 * 1024) // largest frame accepted: 16 MiB

// One per connection: it is stateful (the position inside a frame being delivered in pieces).
struct lenframe_decoder {
    uint32_t max;          // largest frame body accepted; a header above it is an error
    size_t whole_max;      // bodies up to this are returned whole, longer ones in pieces
    uint32_t total;        // piece mode: the body length of the frame in progress
    uint32_t remaining;    // piece mode: its bytes not yet delivered (0: not in piece mode)
    int failed;            // codec.h rule 5
};

// Sets D up: frames of at most MAX body bytes (0: LENFRAME_MAX_DEFAULT); bodies up to
// WHOLE_MAX are returned whole (pass your input buffer's capacity minus LENFRAME_HEADER).
// No allocation.
void lenframe_init(struct lenframe_decoder *d, uint32_t max, size_t whole_max);

// Decodes from DATA (LEN bytes, the caller's unread input):
//   CODEC_FRAME: a whole frame; r.frame/r.len is the body (header not included); r.consumed
//                is LENFRAME_HEADER + r.len.
//   CODEC_PIECE: the next piece of a long frame: r.frame/r.len (at least 1 byte), r.flags
//                (BEGIN on the first, END on the last), r.total the whole body's length.
//                r.consumed covers the piece (and the header, on the BEGIN piece).
//   CODEC_NEED_MORE: not enough bytes for the next frame or piece.
//   CODEC_ERROR "frame too large": the header announces more than max.
struct codec_result lenframe_decode(struct lenframe_decoder *d, const char *data, size_t len);

// Writes LEN as a 4-byte big-endian header to OUT (the header for a writev of header + body).
void lenframe_header(unsigned char out[LENFRAME_HEADER], uint32_t len);

// Writes header + FRAME (LEN bytes) to OUT if they fit in CAP. Returns LENFRAME_HEADER + LEN
// (above CAP: nothing written).
size_t lenframe_encode(char *out, size_t cap, const char *frame, uint32_t len);

// Fills IOV[0] with HDR (written by this call) and IOV[1] with FRAME/LEN, for writev: the body
// is not copied. HDR must stay alive until the write is done.
void lenframe_iov(struct iovec iov[2], unsigned char hdr[LENFRAME_HEADER], const char *frame,
                  uint32_t len);

#endif
