// line.h: the delimited decoder: frames ended by '\n' ("\r\n" accepted: the '\r' is not part
// of the frame), with a maximum frame length. The rules of codec.h hold; it depends on nothing
// else, so a later stage can copy line.c, line.h and codec.h as they are.
#ifndef LINE_H
#define LINE_H

#include "codec.h"

// A line longer than this (without its delimiter) is an error unless line_init says otherwise.
#define LINE_MAX_DEFAULT 4096

// One per connection. Its state is one offset: how far the unread data is already known to
// hold no '\n', so a slow sender's long line is scanned once in total, not once per read.
struct line_decoder {
    size_t max;      // longest frame accepted, in bytes, without the delimiter
    size_t scanned;  // bytes at the front of data already scanned: no '\n' among them
    int failed;      // codec.h rule 5
};

// Sets D up for frames of at most MAX bytes (0 means LINE_MAX_DEFAULT). No allocation:
// nothing to free.
void line_init(struct line_decoder *d, size_t max);

// Decodes the first line of DATA (LEN bytes, the caller's unread input):
//   CODEC_FRAME: r.frame/r.len is the line without "\n" or "\r\n"; r.consumed includes the
//                delimiter. A line of exactly max bytes is a frame; max + 1 is an error.
//   CODEC_NEED_MORE: no '\n' yet, and the line may still fit.
//   CODEC_ERROR "line too long": max + 1 bytes seen with no delimiter that could end it.
struct codec_result line_decode(struct line_decoder *d, const char *data, size_t len);

// Writes FRAME (LEN bytes) and a '\n' to OUT if they fit in CAP bytes. Returns LEN + 1, the
// bytes it needs (like snprintf: a return above CAP means nothing was written).
size_t line_encode(char *out, size_t cap, const char *frame, size_t len);

#endif
