// resp.c: the RESP2 request decoder and reply encoders (resp.h). A request is parsed as a
// small state machine whose position (state, pos, the arguments so far) survives between
// calls: each call resumes where the last one stopped, so no byte is parsed twice.
#include "resp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// What comes next at d->pos.
enum resp_state {
    RS_START,    // the first byte of a request: '*' for an array, anything else inline
    RS_INLINE,   // an inline command's line, from 0 to its '\n'
    RS_COUNT,    // "*<n>\r\n", from 0
    RS_BULKLEN,  // "$<len>\r\n" at pos
    RS_BULK,     // <len> bytes then "\r\n" at pos
};

// The longest "*<n>" or "$<len>" line, without "\r\n": a sign and 18 digits leave room for
// any count a limit lets through; a longer line is garbage, not a count.
#define RESP_COUNT_LINE 20

void resp_init(struct resp_decoder *d, size_t max_bulk, size_t max_args)
{
    memset(d, 0, sizeof *d);
    d->max_bulk = max_bulk == 0 ? RESP_MAX_BULK_DEFAULT : max_bulk;
    d->max_args = max_args == 0 ? RESP_MAX_ARGS_DEFAULT : max_args;
    d->state = RS_START;
}

void resp_free(struct resp_decoder *d)
{
    free(d->argv);
    d->argv = NULL;
    d->argv_cap = 0;
}

static struct codec_result resp_fail(struct resp_decoder *d, const char *msg)
{
    d->failed = 1;
    d->error = msg;
    return codec_error(msg, 0);
}

// Appends the argument (OFF, LEN), growing the table by doubling (at most to max_args).
// Returns 0, or -1 out of memory.
static int resp_push(struct resp_decoder *d, size_t off, size_t len)
{
    if (d->argc == d->argv_cap) {
        size_t cap = d->argv_cap == 0 ? 8 : d->argv_cap * 2;
        if (cap > d->max_args)
            cap = d->max_args;
        struct resp_arg *a = realloc(d->argv, cap * sizeof *a);
        if (a == NULL)
            return -1;
        d->allocs++;
        d->argv = a;
        d->argv_cap = cap;
    }
    d->argv[d->argc++] = (struct resp_arg){off, len};
    return 0;
}

// Finds the '\n' that ends the line starting at d->pos, among the WINDOW bytes from pos on
// (the '\n' included), resuming at d->scanned. Returns 1 and sets *END to its offset, 0 if it
// is not in data yet, or -1 if the window is full without one: the line is too long.
static int resp_line_end(struct resp_decoder *d, const char *data, size_t len, size_t window,
                         size_t *end)
{
    size_t limit = d->pos + window;
    if (limit > len)
        limit = len;
    size_t from = d->pos + d->scanned;
    const char *nl = from < limit ? memchr(data + from, '\n', limit - from) : NULL;
    if (nl != NULL) {
        d->scanned = 0;
        *end = (size_t)(nl - data);
        return 1;
    }
    d->scanned = limit - d->pos;
    return d->scanned >= window ? -1 : 0;
}

// The number in data[from, to) followed by "\r" at to - 1, as strict as redis 7's string2ll:
// digits with an optional '-', no '+', no leading zero ("$04", "*01") and no "-0". Returns 0
// and sets *V, or -1 if it is not exactly that.
static int resp_number(const char *data, size_t from, size_t to, long long *v)
{
    if (to <= from || data[to - 1] != '\r')
        return -1;
    to--;
    int neg = from < to && data[from] == '-';
    if (neg)
        from++;
    if (from == to || to - from > 18)
        return -1;
    if (data[from] == '0' && (to - from > 1 || neg))
        return -1;  // "00", "04", "-0": redis refuses them too
    long long n = 0;
    for (size_t i = from; i < to; i++) {
        if (data[i] < '0' || data[i] > '9')
            return -1;
        n = n * 10 + (data[i] - '0');
    }
    *v = neg ? -n : n;
    return 0;
}

// An inline command: the line data[0, end) (without '\n'; a final '\r' dropped), split on
// spaces and tabs. No quoting (redis-cli sends arrays; inline is for telnet and nc).
static struct codec_result resp_inline(struct resp_decoder *d, const char *data, size_t end)
{
    size_t stop = end > 0 && data[end - 1] == '\r' ? end - 1 : end;
    size_t i = 0;
    while (i < stop) {
        while (i < stop && (data[i] == ' ' || data[i] == '\t'))
            i++;
        size_t w = i;
        while (i < stop && data[i] != ' ' && data[i] != '\t')
            i++;
        if (i > w) {
            if (d->argc == d->max_args)
                return resp_fail(d, "too many arguments in inline request");
            if (resp_push(d, w, i - w) == -1)
                return resp_fail(d, "out of memory");
        }
    }
    d->state = RS_START;
    return codec_frame(data, end + 1, end + 1);
}

struct codec_result resp_decode(struct resp_decoder *d, const char *data, size_t len)
{
    if (d->failed)
        return codec_error(d->error, 0);
    for (;;) {
        switch (d->state) {
        case RS_START:
            if (len == 0)
                return codec_need_more();
            d->argc = 0;
            d->pos = 0;
            d->scanned = 0;
            d->state = data[0] == '*' ? RS_COUNT : RS_INLINE;
            break;
        case RS_INLINE: {
            // At most RESP_MAX_INLINE bytes before the '\n' (a '\r' counts): redis 7 fails
            // once more than that many bytes are in without one (resp.h).
            size_t end;
            int found = resp_line_end(d, data, len, RESP_MAX_INLINE + 1, &end);
            if (found == -1)
                return resp_fail(d, "too big inline request");
            if (found == 0)
                return codec_need_more();
            return resp_inline(d, data, end);
        }
        case RS_COUNT: {
            size_t end;
            int found = resp_line_end(d, data, len, RESP_COUNT_LINE + 2, &end);
            if (found == -1)
                return resp_fail(d, "too big mbulk count string");
            if (found == 0)
                return codec_need_more();
            long long n;
            if (resp_number(data, 1, end, &n) == -1 || n > (long long)d->max_args)
                return resp_fail(d, "invalid multibulk length");
            d->pos = end + 1;
            if (n <= 0) {  // "*0" and "*-1": an empty request
                d->state = RS_START;
                return codec_frame(data, d->pos, d->pos);
            }
            d->nargs = n;
            d->state = RS_BULKLEN;
            break;
        }
        case RS_BULKLEN: {
            // LAB BEGIN resp_bulk: one bulk string: its "$<len>" line, its bytes, its CRLF
            // LAB STUB: return resp_fail(d, "resp_bulk not written");
            if (d->pos >= len)
                return codec_need_more();
            if (data[d->pos] != '$') {
                // redis 7's words, with the byte found; one outside printable ASCII as '?'
                // (redis sends it raw, CR and LF as spaces): it goes into a reply line.
                unsigned char got = (unsigned char)data[d->pos];
                snprintf(d->errbuf, sizeof d->errbuf, "expected '$', got '%c'",
                         got >= 0x20 && got < 0x7f ? got : '?');
                return resp_fail(d, d->errbuf);
            }
            size_t end;
            int found = resp_line_end(d, data, len, RESP_COUNT_LINE + 2, &end);
            if (found == -1)
                return resp_fail(d, "too big bulk count string");
            if (found == 0)
                return codec_need_more();
            long long n;
            if (resp_number(data, d->pos + 1, end, &n) == -1 || n < 0 ||
                n > (long long)d->max_bulk)
                return resp_fail(d, "invalid bulk length");
            d->bulk_len = n;
            d->pos = end + 1;
            d->state = RS_BULK;
            break;
            // LAB END
        }
        case RS_BULK: {
            size_t n = (size_t)d->bulk_len;
            // LAB BEGIN resp_bulk: (its bytes, then the CRLF the length promised)
            if (len - d->pos < n + 2)
                return codec_need_more();
            // The length said where the bytes end; the CRLF after them proves the sender
            // meant it. Without this check a wrong length silently shifts every later byte.
            if (data[d->pos + n] != '\r' || data[d->pos + n + 1] != '\n')
                return resp_fail(d, "bulk not followed by CRLF");
            // LAB END
            if (resp_push(d, d->pos, n) == -1)
                return resp_fail(d, "out of memory");
            // LAB BEGIN resp_bulk: step past the bulk and its CRLF; is the request whole?
            // LAB STUB: return resp_fail(d, "resp_bulk not written");
            d->pos += n + 2;
            if ((long long)d->argc < d->nargs) {
                d->state = RS_BULKLEN;
                break;
            }
            d->state = RS_START;
            return codec_frame(data, d->pos, d->pos);
            // LAB END
        }
        default:
            return resp_fail(d, "decoder state corrupt");
        }
    }
}

// ---- reply encoders ----

// Writes PREFIX, then BODY (N bytes), then "\r\n" if it all fits in CAP; returns the length.
static size_t resp_put(char *out, size_t cap, const char *prefix, size_t plen, const char *body,
                       size_t n)
{
    size_t need = plen + n + 2;
    if (need <= cap) {
        memcpy(out, prefix, plen);
        if (n > 0)
            memcpy(out + plen, body, n);
        memcpy(out + plen + n, "\r\n", 2);
    }
    return need;
}

// "<c><number>\r\n" (":42", "$5", "*3").
static size_t resp_put_number(char *out, size_t cap, char c, long long v)
{
    char num[32];
    int n = snprintf(num, sizeof num, "%c%lld", c, v);
    return resp_put(out, cap, num, (size_t)n, NULL, 0);
}

size_t resp_simple(char *out, size_t cap, const char *s)
{
    return resp_put(out, cap, "+", 1, s, strlen(s));
}

size_t resp_error(char *out, size_t cap, const char *msg)
{
    return resp_put(out, cap, "-", 1, msg, strlen(msg));
}

size_t resp_integer(char *out, size_t cap, long long v)
{
    return resp_put_number(out, cap, ':', v);
}

size_t resp_bulk_header(char *out, size_t cap, size_t n)
{
    return resp_put_number(out, cap, '$', (long long)n);
}

size_t resp_bulk(char *out, size_t cap, const char *p, size_t n)
{
    char hdr[32];
    size_t h = resp_bulk_header(hdr, sizeof hdr, n);
    return resp_put(out, cap, hdr, h, p, n);
}

size_t resp_null(char *out, size_t cap)
{
    return resp_put(out, cap, "$-1", 3, NULL, 0);
}

size_t resp_array(char *out, size_t cap, size_t n)
{
    return resp_put_number(out, cap, '*', (long long)n);
}
