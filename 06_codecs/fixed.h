// fixed.h: the fixed-size decoder: every frame is exactly N bytes, so the stream needs no
// header and no delimiter (sensor records, game ticks: both sides agree on N in advance).
// The rules of codec.h hold.
#ifndef FIXED_H
#define FIXED_H

#include "codec.h"

// One per connection; the size is all it keeps (a stream of N-byte frames needs no state:
// the caller drops N bytes per frame, so data always starts at a frame boundary).
struct fixed_decoder {
    size_t size;  // N, at least 1
};

// Sets D up for frames of SIZE bytes (SIZE >= 1; 0 is taken as 1). No allocation.
void fixed_init(struct fixed_decoder *d, size_t size);

// CODEC_FRAME with the first N bytes of DATA (r.consumed == N) once LEN >= N, else
// CODEC_NEED_MORE. Never an error: any N bytes are a frame.
struct codec_result fixed_decode(struct fixed_decoder *d, const char *data, size_t len);

// Writes the frame FRAME (LEN bytes, which must be exactly N) to OUT if it fits in CAP.
// Returns N (a return above CAP means nothing was written), or 0 if LEN != N (not a frame
// of this codec: nothing written).
size_t fixed_encode(const struct fixed_decoder *d, char *out, size_t cap, const char *frame,
                    size_t len);

#endif
