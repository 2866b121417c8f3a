// codec_resp_reply.c: the other side of the Redis protocol (rx.h, "RESP2 replies"): the
// replies a client reads from redis-server, for an outbound session (the gateway's /kv). One
// frame is one whole top-level reply, nested arrays included; rx_resp_values reads its values
// back without copying. The decoder keeps codec.c's rules 1-5: offsets from the start of the
// reply it is in, never a pointer (the caller's buffer may move between calls), so a reply
// split anywhere resumes where it stopped and no byte is parsed twice.
#include "rx.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The longest ":<n>", "$<len>" or "*<n>" line, type byte and "\r\n" included: a sign and 19
// digits (any long long) fit; a longer line is garbage, not a number.
#define NUMBER_LINE (1 + 20 + 2)

struct reply_state {
    size_t pos;      // next byte to parse, from the start of the reply
    size_t scanned;  // in a line: bytes from pos on known to hold no '\n'
    bool in_bulk;    // a bulk's bytes (bulk of them, then "\r\n") are at pos
    size_t bulk;
    unsigned depth;  // arrays open
    long long left[RX_RESP_REPLY_MAX_DEPTH];  // elements still to come in each open array
};

static void *reply_create(const rx_codec *c)
{
    (void)c;
    return calloc(1, sizeof(struct reply_state));
}

static ssize_t reply_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static ssize_t reply_fail(const char *fmt, ...)
{
    char msg[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rx_log(RX_LOG_INFO, "resp reply: %s", msg);
    return -1;
}

// The number in p[from, to) (to: its "\r"): an optional '-', 1 to 19 digits, no leading zero,
// no "-0", within a long long. Returns 0 and sets *V, or -1.
static int parse_ll(const char *p, size_t from, size_t to, long long *v)
{
    bool neg = from < to && p[from] == '-';
    if (neg)
        from++;
    if (from == to || to - from > 19 || (p[from] == '0' && (to - from > 1 || neg)))
        return -1;
    unsigned long long n = 0, lim = neg ? 9223372036854775808ULL : 9223372036854775807ULL;
    for (size_t i = from; i < to; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        unsigned d = (unsigned)(p[i] - '0');
        if (n > (lim - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *v = neg ? (long long)(0 - n) : (long long)n;
    return 0;
}

// A value is complete: it counts against the innermost open array, which may complete in
// turn. Returns true when the top-level reply is whole.
static bool value_done(struct reply_state *st)
{
    while (st->depth > 0) {
        if (--st->left[st->depth - 1] > 0)
            return false;
        st->depth--;
    }
    return true;
}

static ssize_t reply_decode(const rx_codec *c, void *state, const char *in, size_t len,
                            rx_emit_fn *emit, void *ctx)
{
    struct reply_state *st = state;
    size_t max = c->max_frame, done = 0;
    for (;;) {
        const char *b = in + done;  // the reply being parsed starts here
        size_t avail = len - done;
        bool whole;
        if (st->in_bulk) {
            if (avail - st->pos < st->bulk + 2)
                return (ssize_t)done;
            if (b[st->pos + st->bulk] != '\r' || b[st->pos + st->bulk + 1] != '\n')
                return reply_fail("bulk of %zu bytes not followed by CRLF", st->bulk);
            st->pos += st->bulk + 2;
            st->in_bulk = false;
            whole = value_done(st);
        } else {
            if (st->pos >= avail)
                return (ssize_t)done;
            if (st->pos >= max)
                return reply_fail("reply longer than %zu bytes", max);
            char type = b[st->pos];
            if (type != '+' && type != '-' && type != ':' && type != '$' && type != '*')
                return reply_fail("unknown reply type byte 0x%02x", (unsigned char)type);
            // The line's '\n', within what the limit allows it (a number's: NUMBER_LINE too).
            size_t window = max - st->pos;  // pos < max: checked above
            window = type != '+' && type != '-' && window > NUMBER_LINE ? NUMBER_LINE : window;
            size_t limit = avail - st->pos < window ? avail : st->pos + window;
            size_t from = st->pos + 1 + st->scanned;
            const char *nl = from < limit ? memchr(b + from, '\n', limit - from) : NULL;
            if (!nl) {
                st->scanned = limit - st->pos - 1;
                if (limit - st->pos >= window)  // past a number line's limit, or the reply's
                    return window < max - st->pos ? reply_fail("number line too long (limit %d)", NUMBER_LINE)
                                                  : reply_fail("reply longer than %zu bytes", max);
                return (ssize_t)done;
            }
            st->scanned = 0;
            size_t end = (size_t)(nl - b);  // the '\n'
            if (end + 1 > max)
                return reply_fail("reply longer than %zu bytes", max);
            if (end < st->pos + 2 || b[end - 1] != '\r')
                return reply_fail("line not ending in CRLF");
            size_t body = st->pos + 1, cr = end - 1;
            long long n = 0;
            if (type == '+' || type == '-') {
                if (memchr(b + body, '\r', cr - body))
                    return reply_fail("CR inside a status line");
            } else if (parse_ll(b, body, cr, &n) != 0) {
                return reply_fail("bad number '%.*s'", (int)(cr - body), b + body);
            }
            st->pos = end + 1;
            if (type == '$' && n >= 0) {
                if ((unsigned long long)n > max || st->pos + (size_t)n + 2 > max)
                    return reply_fail("bulk of %lld bytes over the %zu-byte reply limit", n, max);
                st->in_bulk = true;
                st->bulk = (size_t)n;
                continue;
            }
            if ((type == '$' || type == '*') && n < -1)
                return reply_fail("bad length %lld", n);
            if (type == '*' && n > 0) {
                // Every element takes 3 bytes at least ("+\r\n").
                if ((unsigned long long)n > (max - st->pos) / 3)
                    return reply_fail("array of %lld elements cannot fit in %zu bytes", n, max);
                if (st->depth == RX_RESP_REPLY_MAX_DEPTH)
                    return reply_fail("arrays nested deeper than %d", RX_RESP_REPLY_MAX_DEPTH);
                st->left[st->depth++] = n;
                continue;
            }
            whole = value_done(st);
        }
        if (!whole)
            continue;
        rx_frame f = {.data = b, .len = st->pos, .type = (uint16_t)(unsigned char)b[0],
                      .flags = RX_FRAME_FIRST | RX_FRAME_LAST, .total = st->pos};
        done += st->pos;
        st->pos = 0;
        if (emit(ctx, &f) == -1)
            return (ssize_t)done;
    }
}

// Commands go out as the application built them: nothing around them.
static size_t reply_head(const rx_codec *c, uint16_t type, size_t len, char *head)
{
    (void)c, (void)type, (void)len, (void)head;
    return 0;
}

rx_codec rx_codec_resp_reply(size_t max_reply)
{
    // chunk = max: nothing is streamed, and the input buffer (conn.c: min(max_frame, chunk))
    // holds a whole reply. At least 3 bytes: the shortest reply ("+\r\n").
    if (max_reply < 3)
        max_reply = 3;
    return (rx_codec){.name = "resp-reply", .max_frame = max_reply, .chunk = max_reply,
                      .create = reply_create, .destroy = free, .decode = reply_decode,
                      .head = reply_head};
}

size_t rx_resp_values(const rx_frame *f, rx_resp_value *v, size_t max)
{
    const char *p = f->data;
    size_t len = f->len, pos = 0, n = 0;
    unsigned depth = 0;
    long long left[RX_RESP_REPLY_MAX_DEPTH];
    while (pos < len) {
        const char *nl = memchr(p + pos, '\n', len - pos);
        if (!nl)
            break;  // not a frame of rx_codec_resp_reply
        size_t end = (size_t)(nl - p), body = pos + 1, cr = end - 1;
        rx_resp_value x = {.type = p[pos], .depth = depth};
        size_t next = end + 1;
        if (x.type == '+' || x.type == '-') {
            x.p = p + body;
            x.len = cr - body;
        } else if (parse_ll(p, body, cr, &x.integer) != 0) {
            break;
        } else if (x.type == '$' || x.type == '*') {
            x.null = x.integer == -1;
            if (x.type == '$' && !x.null) {
                x.p = p + next;
                x.len = (size_t)x.integer;
                next += x.len + 2;
            }
        }
        if (n < max)
            v[n] = x;
        n++;
        pos = next;
        if (x.type == '*' && x.integer > 0 && depth < RX_RESP_REPLY_MAX_DEPTH) {
            left[depth++] = x.integer;
            continue;
        }
        while (depth > 0 && --left[depth - 1] == 0)
            depth--;
        if (depth == 0)
            break;
    }
    return n;
}
