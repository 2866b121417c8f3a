// http.h: the HTTP/1.1 request head, then its Content-Length body in pieces. HTTP combines
// the two other framings: a delimited head (lines ending in "\r\n", then an empty line) and
// a length-prefixed body (the length is a header). The rules of codec.h hold.
//
// What it accepts, and the status the server answers with when not (r.code):
//   request line "METHOD SP target SP HTTP/1.x"  else 400; HTTP/1.2 .. 1.9 are read as 1.1
//                (RFC 9110 2.5: a higher minor version is processed as the highest one we
//                implement); a major version other than 1 is 505
//   header lines "name: value" (name a token, no space before ':', no folded lines)  else 400
//   the head (request line + headers + empty line) at most max_head bytes            else 431
//   at most max_headers header lines                                                 else 431
//   Content-Length: digits, at most max_body                              else 400 / 413
//   Transfer-Encoding (chunked or any other)                                          501
//   Content-Length and Transfer-Encoding together, or two different Content-Length    400
//   HTTP/1.1 without Host, or with two Host lines                                     400
//   a bare CR anywhere, a control byte in a name (not a token) or in a value           400
//   an empty line where the request line belongs (RFC 9112 2.2 lets a server skip one:
//   this one does not)                                                                400
// (The two 400s against request smuggling: a proxy in front of us may pick one of two
// conflicting lengths and we the other; the bytes it thinks are body we would read as a
// second request, hidden from the proxy. RFC 9112 6.3 says to reject such a message.)
// Lines may end in "\n" alone (RFC 9112 2.2 lets a server accept that).
// Connection is a list of tokens, in any case (keep_alive); "Expect: 100-continue" is flagged
// (expect_continue) for the server to decide: this server answers at once and closes.
#ifndef HTTP_H
#define HTTP_H

#include "codec.h"

#define HTTP_MAX_HEAD_DEFAULT 8192         // bytes of head (nginx: 8 KiB per line at most)
#define HTTP_MAX_HEADERS 100               // header lines per request
#define HTTP_MAX_BODY_DEFAULT (1024 * 1024) // Content-Length accepted

// A part of the head: OFF bytes from its start (the data of the call that returned the head
// as CODEC_FRAME), LEN bytes long.
struct http_span {
    size_t off, len;
};

struct http_header {
    struct http_span name, value;   // value without its leading and trailing spaces/tabs
};

// The head just decoded (valid until the next call to http_decode).
struct http_request {
    struct http_span method, target;
    int minor;                      // HTTP/1.<minor>: 0, or 1 for 1.1 .. 1.9 (RFC 9110 2.5)
    int keep_alive;                 // 1.1: 1 unless "Connection: close"; 1.0: 0 unless
                                    // "Connection: keep-alive"
    unsigned long long content_length;  // body bytes that follow the head (0: none)
    int expect_continue;            // "Expect: 100-continue" (any case): the client waits
                                    // for "100 Continue" or a final status before its body
    size_t nheaders;
    struct http_header headers[HTTP_MAX_HEADERS];
};

// One per connection (about 3.3 KiB: the header table is inline, nothing is allocated).
struct http_decoder {
    size_t max_head, max_headers;
    unsigned long long max_body;
    int state;                      // head or body (http.c, enum http_state)
    size_t scanned;                 // head: bytes from data[0] already scanned for its end
    size_t line_start;              // head: offset of the line being scanned
    size_t lines;                   // head: complete lines so far
    unsigned long long body_left;   // body: bytes still to deliver
    struct http_request req;
    int failed;                     // codec.h rule 5: the status it failed with (0: none)
    const char *error;              // and its message
};

// Sets D up (0 for any limit: its default; max_headers is at most HTTP_MAX_HEADERS).
void http_init(struct http_decoder *d, size_t max_head, size_t max_headers,
               unsigned long long max_body);

// Decodes from DATA (LEN bytes, the caller's unread input). A request comes out as:
//   CODEC_FRAME: the head; d->req describes it (spans are offsets into DATA); r.consumed is
//                the head's length. Use d->req and the spans BEFORE dropping r.consumed.
//   then, if d->req.content_length > 0, one or more CODEC_PIECE: the body's bytes as they
//                arrive (BEGIN on the first, END on the last; r.total = content_length).
//   CODEC_NEED_MORE: the head is not complete yet, or no body byte is in DATA.
//   CODEC_ERROR: r.code is the status to answer (see the table above), r.error the reason;
//                answer with "Connection: close" and close.
struct codec_result http_decode(struct http_decoder *d, const char *data, size_t len);

// The value of header NAME (case-insensitive, as header names are), the first if repeated:
// a pointer into DATA (the head's data) with its length in *LEN, or NULL.
const char *http_header(const struct http_decoder *d, const char *data, const char *name,
                        size_t *len);

// The reason phrase for the statuses this decoder returns and the usual replies
// (200 "OK", 400 "Bad Request", 404 "Not Found", 413 "Content Too Large",
// 431 "Request Header Fields Too Large", 501 "Not Implemented", 505 ...); "Unknown" otherwise.
const char *http_reason(int status);

#endif
