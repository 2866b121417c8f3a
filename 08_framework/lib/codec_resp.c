// codec_resp.c: the RESP2 codec of rx.h (the Redis protocol, the request side) and the reply
// builder. Grown from 06_codecs/resp.c (copied, not included: each stage stands alone): the
// same state machine and the same error words, checked against redis 7.0, but in the rx codec
// shape (codec.c's rules 1-5): a frame is one whole request, its bytes as sent, and the
// application reads its arguments from those bytes with rx_resp_args (no copy, no table kept
// in the decoder: a request of 1024 arguments costs the io thread no allocation).
//
// The decoder keeps offsets from the start of the request it is in (never a pointer: the
// caller's buffer may move between calls, rule 2): the unconsumed bytes it is handed again
// start with that request, so a request split anywhere resumes where it stopped and no byte
// is parsed twice.
#include "rx.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// What comes next at st->pos.
enum resp_next {
    RS_START,    // the first byte of a request: '*' for an array, anything else inline
    RS_INLINE,   // an inline command's line, from 0 to its '\n'
    RS_COUNT,    // "*<n>\r\n", from 0
    RS_BULKLEN,  // "$<len>\r\n" at pos
    RS_BULK,     // <len> bytes then "\r\n" at pos
    RS_FAILED,   // refused: everything else is swallowed (the application answers and closes)
};

// The longest "*<n>" or "$<len>" line, without "\r\n": a sign and 18 digits leave room for
// any count a limit lets through; a longer line is garbage, not a count.
#define RESP_COUNT_LINE 20

// Every connection holds one from its first byte to its close, idle or not: 40 bytes, a 48-byte
// block of glibc's malloc (lib/idle_test -k resp bounds what an idle one costs). The counts
// are 32 bits (at most RX_RESP_MAX_ARGS), and the refusal's words live on resp_fail's stack
// (a frame's bytes are valid during the callback only, rx.h), not here.
struct resp_state {
    enum resp_next next;
    uint32_t nargs;   // elements announced by "*<n>" (at most RX_RESP_MAX_ARGS)
    uint32_t argc;    // elements read so far
    size_t pos;       // next byte to parse, from the start of the request
    size_t scanned;   // in a line: bytes from pos on known to hold no '\n'
    size_t bulk_len;  // the bulk being read: its announced length
};
_Static_assert(RX_RESP_MAX_ARGS <= UINT32_MAX, "argument counts are 32 bits");

static void *resp_create(const rx_codec *c)
{
    (void)c;
    return calloc(1, sizeof(struct resp_state));  // RS_START, pos 0
}

// A bad request: "Protocol error: MSG" in redis 7's words (redis sends it as "-ERR Protocol
// error: MSG" and closes), logged, and handed over as one last frame flagged RX_FRAME_REFUSED
// (type 0, no argument) for the application to answer. From now on everything is swallowed.
// Returns what resp_decode returns: all of IN consumed (LEN).
static ssize_t resp_fail(struct resp_state *st, size_t len, rx_emit_fn *emit, void *ctx,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static ssize_t resp_fail(struct resp_state *st, size_t len, rx_emit_fn *emit, void *ctx,
                         const char *fmt, ...)
{
    char msg[48];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rx_log(RX_LOG_INFO, "resp: Protocol error: %s", msg);
    char why[64];
    int n = snprintf(why, sizeof why, "Protocol error: %s", msg);
    st->next = RS_FAILED;
    rx_frame f = {.data = why, .len = (size_t)n, .type = 0,
                  .flags = RX_FRAME_FIRST | RX_FRAME_LAST | RX_FRAME_REFUSED, .total = (size_t)n};
    emit(ctx, &f);
    return (ssize_t)len;
}

// Finds the '\n' that ends the line starting at st->pos among the WINDOW bytes from pos on
// (the '\n' included), resuming at st->scanned. Returns 1 and sets *END to its offset, 0 if
// it is not in IN yet, or -1 if the window is full without one: the line is too long.
static int line_end(struct resp_state *st, const char *in, size_t len, size_t window, size_t *end)
{
    size_t limit = len - st->pos < window ? len : st->pos + window;
    size_t from = st->pos + st->scanned;
    const char *nl = from < limit ? memchr(in + from, '\n', limit - from) : NULL;
    if (nl != NULL) {
        st->scanned = 0;
        *end = (size_t)(nl - in);
        return 1;
    }
    st->scanned = limit - st->pos;
    return st->scanned >= window ? -1 : 0;
}

// The number in in[from, to) followed by "\r" at to - 1, as strict as redis 7's string2ll:
// digits with an optional '-', no '+', no leading zero ("$04", "*01") and no "-0". Returns 0
// and sets *V, or -1 if it is not exactly that.
static int parse_number(const char *in, size_t from, size_t to, long long *v)
{
    if (to <= from || in[to - 1] != '\r')
        return -1;
    to--;
    int neg = from < to && in[from] == '-';
    if (neg)
        from++;
    if (from == to || to - from > 18)
        return -1;
    if (in[from] == '0' && (to - from > 1 || neg))
        return -1;
    long long n = 0;
    for (size_t i = from; i < to; i++) {
        if (in[i] < '0' || in[i] > '9')
            return -1;
        n = n * 10 + (in[i] - '0');
    }
    *v = neg ? -n : n;
    return 0;
}

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

// The words of an inline line in[0, end) (without its '\n'; a final '\r' dropped). Stores at
// most MAX of them in ARGV (NULL: only counts) and returns how many there are.
static size_t inline_words(const char *in, size_t end, rx_resp_arg *argv, size_t max)
{
    size_t stop = end > 0 && in[end - 1] == '\r' ? end - 1 : end;
    size_t n = 0, i = 0;
    while (i < stop) {
        while (i < stop && is_space(in[i]))
            i++;
        size_t w = i;
        while (i < stop && !is_space(in[i]))
            i++;
        if (i > w) {
            if (argv != NULL && n < max)
                argv[n] = (rx_resp_arg){in + w, i - w};
            n++;
        }
    }
    return n;
}

// Cuts every whole request of IN (codec.c's rules). Each is emitted whole: data = its bytes,
// type = its argument count. Empty ones ("*0", "*-1", a blank line) are consumed silently.
static ssize_t resp_decode(const rx_codec *c, void *state, const char *in, size_t len,
                           rx_emit_fn *emit, void *ctx)
{
    struct resp_state *st = state;
    size_t max = c->max_frame;
    size_t base = 0;  // where the request being parsed starts in IN: st's offsets are from it
    for (;;) {
        const char *req = in + base;
        size_t have = len - base;
        size_t end, window;
        long long n;
        int found;
        switch (st->next) {
        case RS_FAILED:
            return (ssize_t)len;  // swallowed: the refusal was handed over
        case RS_START:
            if (have == 0)
                return (ssize_t)base;
            st->pos = st->scanned = st->argc = 0;
            st->next = req[0] == '*' ? RS_COUNT : RS_INLINE;
            continue;
        case RS_INLINE:
            // The line, its '\n' included, is at most MAX bytes.
            found = line_end(st, req, have, max, &end);
            if (found == -1)
                return resp_fail(st, len, emit, ctx, "too big inline request");
            if (found == 0)
                return (ssize_t)base;
            n = (long long)inline_words(req, end, NULL, 0);
            if (n > RX_RESP_MAX_ARGS)
                return resp_fail(st, len, emit, ctx, "too many arguments in inline request");
            st->argc = st->nargs = (uint32_t)n;
            st->pos = end + 1;
            break;  // a whole request (or an empty line)
        case RS_COUNT:
            // At most 22 bytes, and within MAX (pos, after the line, may not pass MAX).
            window = max < RESP_COUNT_LINE + 2 ? max : RESP_COUNT_LINE + 2;
            found = line_end(st, req, have, window, &end);
            if (found == -1)
                return resp_fail(st, len, emit, ctx, "too big mbulk count string");
            if (found == 0)
                return (ssize_t)base;
            if (parse_number(req, 1, end, &n) == -1 || n > RX_RESP_MAX_ARGS)
                return resp_fail(st, len, emit, ctx, "invalid multibulk length");
            st->pos = end + 1;
            if (st->pos > max)
                return resp_fail(st, len, emit, ctx, "invalid multibulk length");
            st->nargs = n > 0 ? (uint32_t)n : 0;  // "*0" and "*-1": an empty request
            if (st->nargs == 0)
                break;
            st->next = RS_BULKLEN;
            continue;
        case RS_BULKLEN:
            if (st->pos >= have)
                return (ssize_t)base;
            if (req[st->pos] != '$') {
                // redis 7's words, with the byte found; one outside printable ASCII as '?'.
                unsigned char got = (unsigned char)req[st->pos];
                return resp_fail(st, len, emit, ctx, "expected '$', got '%c'",
                                 got >= 0x20 && got < 0x7f ? got : '?');
            }
            // At most 22 bytes, and ending where a bulk ("\r\n" at least) still fits in MAX.
            window = max - st->pos < RESP_COUNT_LINE + 4 ? max - st->pos : RESP_COUNT_LINE + 4;
            found = line_end(st, req, have, window > 3 ? window - 2 : 1, &end);
            if (found == -1)
                return resp_fail(st, len, emit, ctx, "too big bulk count string");
            if (found == 0)
                return (ssize_t)base;
            // The length is a claim: one that cannot fit in MAX is refused at its line, before
            // a byte of the bulk is waited for (or held).
            if (parse_number(req, st->pos + 1, end, &n) == -1 || n < 0 ||
                (unsigned long long)n > max || end + 1 + (size_t)n + 2 > max)
                return resp_fail(st, len, emit, ctx, "invalid bulk length");
            st->bulk_len = (size_t)n;
            st->pos = end + 1;
            st->next = RS_BULK;
            continue;
        case RS_BULK:
            if (have - st->pos < st->bulk_len + 2)
                return (ssize_t)base;
            // The CRLF after the bytes proves the length was meant (redis skips it unread: a
            // wrong length would then silently shift every later byte).
            if (req[st->pos + st->bulk_len] != '\r' || req[st->pos + st->bulk_len + 1] != '\n')
                return resp_fail(st, len, emit, ctx, "bulk not followed by CRLF");
            st->pos += st->bulk_len + 2;
            if (++st->argc < st->nargs) {
                st->next = RS_BULKLEN;
                continue;
            }
            break;  // the last bulk: a whole request
        }
        // A whole request of st->pos bytes (argc arguments; none: an empty one, not emitted).
        size_t flen = st->pos;
        size_t argc = st->argc;
        st->next = RS_START;
        st->pos = st->scanned = st->argc = 0;
        base += flen;
        if (argc == 0)
            continue;
        rx_frame f = {.data = req, .len = flen, .type = (uint16_t)argc,
                      .flags = RX_FRAME_FIRST | RX_FRAME_LAST, .total = flen};
        if (emit(ctx, &f) == -1)
            return (ssize_t)base;  // rule 4: up to and including the frame emitted
    }
}

// Replies are whole messages the application wrote: nothing goes around them.
static size_t resp_head(const rx_codec *c, uint16_t type, size_t len, char *head)
{
    (void)c, (void)type, (void)len, (void)head;
    return 0;
}

rx_codec rx_codec_resp(size_t max_request)
{
    // chunk = max: nothing is streamed, and the input buffer (conn.c: min(max_frame, chunk))
    // holds a whole request.
    return (rx_codec){.name = "resp", .max_frame = max_request, .chunk = max_request,
                      .create = resp_create, .destroy = free, .decode = resp_decode,
                      .head = resp_head};
}

size_t rx_resp_args(const rx_frame *f, rx_resp_arg *argv, size_t max)
{
    const char *p = f->data;
    size_t len = f->len;
    if (len == 0 || (f->flags & RX_FRAME_REFUSED))
        return 0;
    if (p[0] != '*') {
        size_t end = p[len - 1] == '\n' ? len - 1 : len;
        size_t n = inline_words(p, end, argv, max);
        return n < max ? n : max;
    }
    // A frame this codec cut: "*<n>\r\n" then n times "$<len>\r\n<bytes>\r\n", all checked.
    // Walked again with every step bounded by LEN all the same: a frame from elsewhere gives
    // fewer arguments, never a read past its end.
    size_t i = 1, n = 0;
    while (i < len && p[i] != '\r')
        i++;
    i += 2;
    while (i < len && n < max && p[i] == '$') {
        size_t blen = 0;
        i++;
        while (i < len && p[i] >= '0' && p[i] <= '9' && blen < len)
            blen = blen * 10 + (size_t)(p[i++] - '0');
        i += 2;  // "\r\n"
        if (i > len || len - i < blen)
            break;
        argv[n++] = (rx_resp_arg){p + i, blen};
        i += blen + 2;
    }
    return n;
}

// ------------------------------------------------------------------------- replies

// Makes room for N more bytes in R; returns where they go, or NULL (R->failed set).
static char *reply_room(rx_resp_reply *r, size_t n)
{
    if (r->failed)
        return NULL;
    if (r->cap - r->len < n) {
        size_t cap = r->cap < 256 ? 256 : r->cap;
        while (cap - r->len < n) {
            if (cap > SIZE_MAX / 2) {
                r->failed = true;
                return NULL;
            }
            cap *= 2;
        }
        char *d = realloc(r->data, cap);
        if (d == NULL) {
            r->failed = true;
            return NULL;
        }
        r->data = d;
        r->cap = cap;
    }
    return r->data + r->len;
}

// Appends PREFIX, then BODY (N bytes), then "\r\n".
static void reply_put(rx_resp_reply *r, const char *prefix, size_t plen, const void *body, size_t n)
{
    char *d = reply_room(r, plen + n + 2);
    if (d == NULL)
        return;
    memcpy(d, prefix, plen);
    if (n > 0)
        memcpy(d + plen, body, n);
    memcpy(d + plen + n, "\r\n", 2);
    r->len += plen + n + 2;
}

// "<c><number>\r\n" (":42", "$5", "*3"), the digits written by hand: this runs per reply.
static void reply_number(rx_resp_reply *r, char c, long long v)
{
    char num[24];
    char *e = num + sizeof num, *q = e;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0)
        *--q = '-';
    *--q = c;
    reply_put(r, q, (size_t)(e - q), NULL, 0);
}

void rx_resp_simple(rx_resp_reply *r, const char *s)
{
    reply_put(r, "+", 1, s, strlen(s));
}

void rx_resp_error(rx_resp_reply *r, const char *msg)
{
    reply_put(r, "-", 1, msg, strlen(msg));
}

void rx_resp_errorf(rx_resp_reply *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) {
        r->failed = true;
        return;
    }
    // A CR or LF would end the line early and desync the client: never in an error.
    for (char *q = msg; *q; q++)
        if (*q == '\r' || *q == '\n')
            *q = ' ';
    rx_resp_error(r, msg);
}

void rx_resp_int(rx_resp_reply *r, long long v)
{
    reply_number(r, ':', v);
}

void rx_resp_bulk(rx_resp_reply *r, const void *p, size_t n)
{
    reply_number(r, '$', (long long)n);
    reply_put(r, "", 0, p, n);
}

void rx_resp_null(rx_resp_reply *r)
{
    reply_put(r, "$-1", 3, NULL, 0);
}

void rx_resp_array(rx_resp_reply *r, size_t n)
{
    reply_number(r, '*', (long long)n);
}

int rx_resp_send(rx_session *s, rx_resp_reply *r)
{
    int rc = r->failed ? -1 : r->len == 0 ? 0 : rx_send(s, r->data, r->len);
    r->len = 0;
    r->failed = false;
    return rc;
}

void rx_resp_reply_free(rx_resp_reply *r)
{
    free(r->data);
    *r = (rx_resp_reply){0};
}
