// resp.h: RESP2 (the Redis protocol), the request side, plus the reply encoders.
// A request is an array of bulk strings, "*<n>\r\n" then n times "$<len>\r\n<len bytes>\r\n"
// (length prefixes written as text lines), or an inline command: one line of words split on
// spaces and tabs ("PING\r\n", what telnet sends). The rules of codec.h hold.
//
// Limits (redis allows 512 MiB bulks and 2^31 elements: far too trusting for a teaching
// server, whose buffer must hold a whole request): RESP_MAX_BULK_DEFAULT bytes per bulk,
// RESP_MAX_ARGS_DEFAULT elements per request, RESP_MAX_INLINE bytes per inline line.
// Incremental: the decoder keeps its parse position (an offset) between calls, so a request
// split anywhere decodes the same, and a request that arrives in k reads is parsed once, not
// k times.
#ifndef RESP_H
#define RESP_H

#include "codec.h"

#define RESP_MAX_BULK_DEFAULT (1024 * 1024)  // 1 MiB per bulk string
#define RESP_MAX_ARGS_DEFAULT 1024           // elements per request
#define RESP_MAX_INLINE (64 * 1024)          // bytes before an inline line's '\n' (redis: the
                                             // same number, judged differently: below)

// An argument: OFF bytes from the start of the request (the data of the call that returned
// CODEC_FRAME), LEN bytes long. An offset, not a pointer: valid across a compaction; the bytes
// are valid until the caller drops the request (codec.h rule 1).
struct resp_arg {
    size_t off, len;
};

// One per connection.
struct resp_decoder {
    size_t max_bulk, max_args;
    // The parse position, all offsets from the start of the request (data[0]):
    int state;                // what comes next (resp.c, enum resp_state)
    size_t pos;               // next byte to parse
    size_t scanned;           // in a line: bytes from pos on known to hold no '\n'
    long long nargs;          // elements announced by "*<n>"
    long long bulk_len;       // the bulk being read: its announced length
    // The request's arguments: argv[0 .. argc-1] once CODEC_FRAME is returned.
    size_t argc;
    struct resp_arg *argv;    // grown on demand (doubling), owned by the decoder
    size_t argv_cap;
    unsigned long long allocs;  // allocations made so far (the benchmark reads it)
    int failed;               // codec.h rule 5
    const char *error;        // the error it failed with (returned again, rule 5)
    char errbuf[32];          // the text of an error that names a byte ("expected '$', ...")
};

// Sets D up with the limits (0: the defaults). No allocation yet; resp_free releases what
// decoding allocated.
void resp_init(struct resp_decoder *d, size_t max_bulk, size_t max_args);
void resp_free(struct resp_decoder *d);

// Decodes the first request of DATA (LEN bytes, the caller's unread input):
//   CODEC_FRAME: a whole request: d->argc arguments d->argv[i] (offsets into DATA);
//                r.frame = data, r.len = r.consumed = the request's length. argc may be 0
//                (an empty line, "*0\r\n" or "*-1\r\n": redis ignores those; so should you).
//   CODEC_NEED_MORE: the request is not complete yet (the part seen so far is remembered).
//   CODEC_ERROR: r.error, the message the server sends as "-ERR Protocol error: <msg>"
//                (valid as long as D). Checked against redis 7.0: these are redis's own words,
//                said for the same input: "invalid multibulk length", "invalid bulk length",
//                "expected '$', got 'X'" (a byte outside printable ASCII as '?': redis sends
//                it raw, CR and LF as spaces), "too big inline request"; these are redis's
//                words at our own, smaller limits (redis: 64 KiB without a '\n'): "too big
//                mbulk count string", "too big bulk count string"; and these are ours,
//                redis-style, for checks redis does not make: "bulk not followed by CRLF"
//                (redis skips the two bytes unread), "too many arguments in inline request",
//                "out of memory".
// Numbers are as strict as redis's: "$04", "*01", "$-0", "*-0" and "$+4" are refused.
// The inline line: at most RESP_MAX_INLINE bytes before its '\n' (a '\r' counts), however it
// is split. redis fails only when more than that many bytes are in its buffer without a '\n',
// so it takes longer lines that arrive with their '\n' in one read, and refuses the same
// line split before its '\n'; this decoder answers the same for every split. No quoting:
// redis reads `ECHO "a b"` as one argument, this decoder as two ("a and b").
// A request of exactly max_bulk / max_args is accepted; one more is an error.
struct codec_result resp_decode(struct resp_decoder *d, const char *data, size_t len);

// Argument I of the request just decoded, as a pointer into DATA (the same data as the call
// that returned CODEC_FRAME, before the caller changed its buffer), and its length in *LEN.
static inline const char *resp_arg(const struct resp_decoder *d, const char *data, size_t i,
                                   size_t *len)
{
    *len = d->argv[i].len;
    return data + d->argv[i].off;
}

// The reply encoders. Each writes to OUT if the whole reply fits in CAP bytes and returns the
// reply's length (above CAP: nothing written; call with CAP 0 to size it).
size_t resp_simple(char *out, size_t cap, const char *s);           // +s\r\n (s: no CR/LF)
size_t resp_error(char *out, size_t cap, const char *msg);          // -msg\r\n
size_t resp_integer(char *out, size_t cap, long long v);            // :v\r\n
size_t resp_bulk(char *out, size_t cap, const char *p, size_t n);   // $n\r\n<p>\r\n
size_t resp_bulk_header(char *out, size_t cap, size_t n);           // $n\r\n (body yourself)
size_t resp_null(char *out, size_t cap);                            // $-1\r\n
size_t resp_array(char *out, size_t cap, size_t n);                 // *n\r\n (then n replies)

#endif
