// codec_http.c: the HTTP/1.1 request codec of rx.h (rx_codec_http): cuts one whole request,
// head and Content-Length body, per frame, and parses it once, in the io thread. Copied from
// 06_codecs/http.c (its rules, its smuggling defences) and grown: a frame is the parse (an
// index of offsets, struct wire) followed by the request's bytes, so the application's
// rx_http_view only reads offsets back, in whatever thread the frame crossed to.
//
// What it accepts, and the status a refusal carries (06's table):
//   request line "METHOD SP target SP HTTP/1.x"  else 400; HTTP/1.2 .. 1.9 are read as 1.1
//                (RFC 9110 2.5); a major version other than 1 is 505
//   header lines "name: value" (name a token, no space before ':', no folded lines)  else 400
//   the head (request line + headers + empty line) at most max_head bytes            else 431
//   at most RX_HTTP_MAX_HEADERS header lines                                         else 431
//   Content-Length: digits, at most max_body                              else 400 / 413
//   Transfer-Encoding (chunked or any other)                                          501
//   Content-Length and Transfer-Encoding together, or two different Content-Length    400
//   HTTP/1.1 without Host, or with two Host lines                                     400
//   a bare CR anywhere, a control byte in a name (not a token) or in a value           400
//   an empty line where the request line belongs                                      400
// (The two 400s against request smuggling: a proxy in front of us may pick one of two
// conflicting lengths and we the other; the bytes it thinks are body we would read as a
// second request, hidden from the proxy. RFC 9112 6.3 says to reject such a message.)
// Lines may end in "\n" alone (RFC 9112 2.2 lets a server accept that).
//
// Chunked bodies are refused (501), not decoded: a course server needs no uploads of unknown
// length, and every client that matters here (curl, wrk, browsers' GETs) sends none.
//
// Where the bytes wait: a partial head stays in the connection's input buffer (the codec's
// chunk is max_head, so the io thread holds no more); once the head is whole, a body still
// on its way is copied into the decoder's own state as it arrives (it consumes it), and the
// frame is emitted from there. A request that came whole in one read (the usual case) is
// copied once, into a buffer on the stack, behind its index.
#include "rx.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ------------------------------------------------------------------------ the frame

// The index at the start of every frame this codec emits: offsets into the request's bytes,
// which follow the index and its header table. Copied in and out with memcpy (a frame's data
// has no alignment promise).
#define WIRE_MAGIC 0x50545448u  // "HTTP" read as little-endian u32
struct wire {
    uint32_t magic;
    uint16_t status;   // 0, or the status of a refusal (or 100: the client waits for it)
    uint8_t minor;
    uint8_t flags;     // WIRE_KEEP_ALIVE, WIRE_EXPECT
    const char *error; // status != 0: static text
    uint32_t method_len, target_off, target_len, nheaders;
    uint32_t head_len; // the request's head bytes that follow the table
    uint64_t body_len; // Content-Length
    uint64_t body_here;  // body bytes that follow the head in this frame (0 in a 100 frame)
};
struct wire_header {
    uint32_t name_off, name_len, value_off, value_len;
};
enum { WIRE_KEEP_ALIVE = 1, WIRE_EXPECT = 2 };

// ------------------------------------------------------------------ decoder state

enum http_state {
    HS_HEAD,    // looking for the end of a head in the input
    HS_BODY,    // the head is whole: collecting its body in st->buf
    HS_FAILED,  // a refusal was emitted: everything else is swallowed
};

struct http_dec {
    enum http_state state;
    size_t scanned;     // HS_HEAD: bytes of the input already scanned for the head's end
    size_t line_start;  // HS_HEAD: offset of the line being scanned
    size_t lines;       // HS_HEAD: complete lines so far
    char *buf;          // HS_BODY: index, table, head, then the body as it arrives
    size_t have, need;  // HS_BODY: bytes in buf, bytes of the whole frame
};

// A parsed head, before it becomes a struct wire.
struct head {
    struct wire w;
    struct wire_header h[RX_HTTP_MAX_HEADERS];
};

static size_t max_head_of(const rx_codec *c)
{
    return c->chunk;
}

static uint64_t max_body_of(const rx_codec *c)
{
    return c->max_frame - c->chunk;
}

// ---- small parsing helpers (06's) ----

static int is_tchar(unsigned char c)  // RFC 9110 5.6.2: the characters of a token
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static unsigned char ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

// 1 if the N bytes at P equal the NUL-terminated NAME, ignoring ASCII case (RFC 9110 5.1).
static int name_eq(const char *p, size_t n, const char *name)
{
    if (strlen(name) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)p[i]) != ascii_lower((unsigned char)name[i]))
            return 0;
    return 1;
}

// Is the comma-separated list at P (N bytes) holding the token TOK (any case)?
static int list_has(const char *p, size_t n, const char *tok)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
            i++;
        size_t w = i;
        while (i < n && p[i] != ',' && p[i] != ' ' && p[i] != '\t')
            i++;
        if (i > w && name_eq(p + w, i - w, tok))
            return 1;
    }
    return 0;
}

// The line [from, nl) without a final '\r'.
static size_t line_stop(const char *data, size_t from, size_t nl)
{
    return nl > from && data[nl - 1] == '\r' ? nl - 1 : nl;
}

// ---- the request line and the headers, once the whole head is in ----

// "METHOD SP target SP HTTP/1.x" in data[0, stop). Returns 0, or the status to answer.
static int parse_request_line(struct wire *w, const char *data, size_t stop)
{
    size_t i = 0;
    while (i < stop && is_tchar((unsigned char)data[i]))
        i++;
    if (i == 0 || i >= stop || data[i] != ' ')
        return 400;
    w->method_len = (uint32_t)i;
    size_t t = ++i;
    while (i < stop && (unsigned char)data[i] > ' ' && (unsigned char)data[i] < 0x7f)
        i++;
    if (i == t || i >= stop || data[i] != ' ')
        return 400;
    w->target_off = (uint32_t)t;
    w->target_len = (uint32_t)(i - t);
    i++;
    const char *v = data + i;
    if (stop - i != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' ||
        v[5] > '9' || v[7] < '0' || v[7] > '9')
        return 400;
    if (v[5] != '1')
        return 505;
    w->minor = v[7] == '0' ? 0 : 1;  // 1.2 .. 1.9 read as 1.1 (RFC 9110 2.5)
    return 0;
}

// The header lines and the empty line in data[from, head_len). Fills q. Returns 0, or the
// status to answer with *MSG set.
static int parse_headers(struct head *q, uint64_t max_body, const char *data, size_t from,
                         size_t head_len, const char **msg)
{
    int has_cl = 0, has_te = 0, conn_close = 0, conn_keep = 0, hosts = 0;
    unsigned long long cl = 0;
    size_t i = from;
    for (;;) {
        const char *nl = memchr(data + i, '\n', head_len - i);
        size_t end = (size_t)(nl - data);  // the head ends in '\n': nl is never NULL
        size_t stop = line_stop(data, i, end);
        if (stop == i)
            break;  // the empty line
        if (data[i] == ' ' || data[i] == '\t')
            return *msg = "folded header line", 400;
        size_t n = i;
        while (n < stop && is_tchar((unsigned char)data[n]))
            n++;
        if (n == i || n == stop || data[n] != ':')
            return *msg = "malformed header line", 400;
        size_t v = n + 1, ve = stop;
        while (v < ve && (data[v] == ' ' || data[v] == '\t'))
            v++;
        while (ve > v && (data[ve - 1] == ' ' || data[ve - 1] == '\t'))
            ve--;
        for (size_t k = v; k < ve; k++)
            if (((unsigned char)data[k] < ' ' && data[k] != '\t') || data[k] == 0x7f)
                return *msg = "control character in header value", 400;
        // The head scan allowed at most RX_HTTP_MAX_HEADERS header lines.
        struct wire_header *h = &q->h[q->w.nheaders++];
        *h = (struct wire_header){(uint32_t)i, (uint32_t)(n - i), (uint32_t)v, (uint32_t)(ve - v)};
        const char *name = data + i, *val = data + v;
        size_t nlen = n - i, vlen = ve - v;
        if (name_eq(name, nlen, "Content-Length")) {
            // 1*DIGIT (RFC 9110 8.6), however many digits: a well-formed length too big for
            // us is 413, a malformed one (empty, a sign, a space inside) 400 (RFC 9112 6.3).
            // The value stops growing once it passes max_body, so 200 digits cannot
            // overflow it and still read as too large.
            unsigned long long x = 0;
            if (vlen == 0)
                return *msg = "bad Content-Length", 400;
            for (size_t k = 0; k < vlen; k++) {
                if (val[k] < '0' || val[k] > '9')
                    return *msg = "bad Content-Length", 400;
                if (x <= max_body)
                    x = x <= (ULLONG_MAX - 9) / 10 ? x * 10 + (unsigned)(val[k] - '0')
                                                   : ULLONG_MAX;
            }
            // Two lengths that disagree: which one a proxy in front of us believed is
            // unknowable, so the message cannot be framed safely (smuggling, above).
            if (has_cl && x != cl)
                return *msg = "conflicting Content-Length headers", 400;
            has_cl = 1;
            cl = x;
        } else if (name_eq(name, nlen, "Transfer-Encoding")) {
            has_te = 1;
        } else if (name_eq(name, nlen, "Connection")) {
            conn_close |= list_has(val, vlen, "close");
            conn_keep |= list_has(val, vlen, "keep-alive");
        } else if (name_eq(name, nlen, "Host")) {
            hosts++;
        } else if (name_eq(name, nlen, "Expect")) {
            if (name_eq(val, vlen, "100-continue"))
                q->w.flags |= WIRE_EXPECT;
        }
        i = end + 1;
    }
    // Both framings at once: a proxy may use one and us the other (smuggling, above).
    if (has_te && has_cl)
        return *msg = "both Transfer-Encoding and Content-Length", 400;
    if (has_te)
        return *msg = "Transfer-Encoding not implemented", 501;
    if (q->w.minor == 1 && hosts != 1)
        return *msg = hosts == 0 ? "HTTP/1.1 request without Host" : "more than one Host", 400;
    if (cl > max_body)
        return *msg = "body too large", 413;
    q->w.body_len = cl;
    if (q->w.minor == 1 ? !conn_close : conn_keep && !conn_close)
        q->w.flags |= WIRE_KEEP_ALIVE;
    return 0;
}

// Parses the whole head DATA[0, HEAD_LEN) into Q. Returns 0 or the status of a refusal.
static int parse_head(struct head *q, uint64_t max_body, const char *data, size_t head_len,
                      const char **msg)
{
    memset(&q->w, 0, sizeof q->w);
    q->w.magic = WIRE_MAGIC;
    q->w.head_len = (uint32_t)head_len;
    const char *nl = memchr(data, '\n', head_len);
    int status = parse_request_line(&q->w, data, line_stop(data, 0, (size_t)(nl - data)));
    if (status != 0) {
        *msg = status == 505 ? "HTTP version not supported" : "malformed request line";
        return status;
    }
    return parse_headers(q, max_body, data, (size_t)(nl - data) + 1, head_len, msg);
}

static size_t index_size(const struct head *q)
{
    return sizeof q->w + q->w.nheaders * sizeof q->h[0];
}

// Writes Q's index at DST; returns its size.
static size_t put_index(char *dst, const struct head *q)
{
    memcpy(dst, &q->w, sizeof q->w);
    memcpy(dst + sizeof q->w, q->h, q->w.nheaders * sizeof q->h[0]);
    return index_size(q);
}

// ---- the decoder ----

static void *http_create(const rx_codec *c)
{
    (void)c;
    return calloc(1, sizeof(struct http_dec));
}

static void http_destroy(void *state)
{
    struct http_dec *st = state;
    if (st != NULL)
        free(st->buf);
    free(st);
}

// Emits a refusal (STATUS, MSG): a frame holding the index alone, flagged RX_FRAME_REFUSED
// (the connection's close then lingers: the peer may be mid-body). Nothing more is decoded.
static int emit_refusal(struct http_dec *st, int status, const char *msg, rx_emit_fn *emit,
                        void *ctx)
{
    struct wire w = {.magic = WIRE_MAGIC, .status = (uint16_t)status, .error = msg};
    st->state = HS_FAILED;
    free(st->buf);
    st->buf = NULL;
    rx_frame f = {.data = (const char *)&w, .len = sizeof w, .type = (uint16_t)status,
                  .flags = RX_FRAME_FIRST | RX_FRAME_LAST | RX_FRAME_REFUSED, .total = sizeof w};
    return emit(ctx, &f);
}

static int emit_whole(const char *data, size_t len, uint16_t status, rx_emit_fn *emit, void *ctx)
{
    rx_frame f = {.data = data, .len = len, .type = status,
                  .flags = RX_FRAME_FIRST | RX_FRAME_LAST, .total = len};
    return emit(ctx, &f);
}

// Finds the end of the head that starts at IN (AVAIL bytes), resuming the scan of the last
// call. Returns its length, 0 when it has not ended yet, or -status (431, 400) for a refusal.
static long head_end(struct http_dec *st, size_t max_head, const char *in, size_t avail,
                     const char **msg)
{
    // Look no further than max_head bytes: a head that has not ended by then is too large.
    size_t limit = avail < max_head ? avail : max_head;
    for (;;) {
        const char *nl = st->scanned < limit
                             ? memchr(in + st->scanned, '\n', limit - st->scanned)
                             : NULL;
        if (nl == NULL) {
            st->scanned = limit;
            if (limit == max_head)
                return *msg = "request head too large", -431;
            return 0;
        }
        size_t end = (size_t)(nl - in);
        size_t line_start = st->line_start;
        st->line_start = st->scanned = end + 1;
        if (line_stop(in, line_start, end) == line_start) {
            if (st->lines == 0)
                return *msg = "empty request line", -400;
            st->scanned = st->line_start = st->lines = 0;  // the next head starts after it
            return (long)(end + 1);
        }
        if (++st->lines > RX_HTTP_MAX_HEADERS + 1)
            return *msg = "too many header lines", -431;
    }
}

static ssize_t http_decode(const rx_codec *c, void *state, const char *in, size_t len,
                           rx_emit_fn *emit, void *ctx)
{
    struct http_dec *st = state;
    size_t pos = 0;
    for (;;) {
        if (st->state == HS_FAILED)
            return (ssize_t)len;  // swallowed: the application answers and closes
        if (st->state == HS_BODY) {
            size_t n = len - pos < st->need - st->have ? len - pos : st->need - st->have;
            memcpy(st->buf + st->have, in + pos, n);
            st->have += n;
            pos += n;
            if (st->have < st->need)
                return (ssize_t)pos;
            char *buf = st->buf;
            size_t have = st->have;
            st->buf = NULL;
            st->have = st->need = 0;
            st->state = HS_HEAD;
            int stop = emit_whole(buf, have, 0, emit, ctx);
            free(buf);
            if (stop == -1)
                return (ssize_t)pos;
            continue;
        }
        if (pos == len)
            return (ssize_t)pos;
        const char *msg = NULL;
        long hl = head_end(st, max_head_of(c), in + pos, len - pos, &msg);
        if (hl == 0)
            return (ssize_t)pos;  // the partial head stays in the input
        if (hl < 0) {
            emit_refusal(st, (int)-hl, msg, emit, ctx);
            return (ssize_t)len;
        }
        size_t head_len = (size_t)hl;
        struct head q;
        int status = parse_head(&q, max_body_of(c), in + pos, head_len, &msg);
        if (status != 0) {
            emit_refusal(st, status, msg, emit, ctx);
            return (ssize_t)len;
        }
        size_t body = (size_t)q.w.body_len;  // at most max_body, a size_t
        size_t avail = len - pos - head_len;
        size_t isz = index_size(&q);
        if (avail >= body) {
            // The usual case: the whole request is here. Index and bytes, on the stack when
            // small (no allocation per request).
            q.w.body_here = body;
            size_t total = isz + head_len + body;
            char small[4096];
            char *out = total <= sizeof small ? small : malloc(total);
            if (out == NULL) {
                emit_refusal(st, 500, "out of memory", emit, ctx);
                return (ssize_t)len;
            }
            put_index(out, &q);
            memcpy(out + isz, in + pos, head_len + body);
            pos += head_len + body;
            int stop = emit_whole(out, total, 0, emit, ctx);
            if (out != small)
                free(out);
            if (stop == -1)
                return (ssize_t)pos;
            continue;
        }
        // The body is on its way: the client that asked for 100 Continue hears of it first
        // (a frame of status 100, its head only), then the whole request is collected here.
        if (avail == 0 && (q.w.flags & WIRE_EXPECT)) {
            q.w.status = 100;
            size_t total = isz + head_len;
            char *out = malloc(total);
            if (out == NULL) {
                emit_refusal(st, 500, "out of memory", emit, ctx);
                return (ssize_t)len;
            }
            put_index(out, &q);
            memcpy(out + isz, in + pos, head_len);
            int stop = emit_whole(out, total, 100, emit, ctx);
            free(out);
            q.w.status = 0;
            if (stop == -1)
                return (ssize_t)pos;  // the head is read again next time (and 100 again)
        }
        q.w.body_here = body;
        st->need = isz + head_len + body;
        st->buf = malloc(st->need);
        if (st->buf == NULL) {
            emit_refusal(st, 500, "out of memory", emit, ctx);
            return (ssize_t)len;
        }
        put_index(st->buf, &q);
        memcpy(st->buf + isz, in + pos, head_len + avail);
        st->have = isz + head_len + avail;
        st->state = HS_BODY;
        pos = len;
        return (ssize_t)pos;
    }
}

static size_t no_head(const rx_codec *c, uint16_t type, size_t len, char *head)
{
    (void)c, (void)type, (void)len, (void)head;
    return 0;
}

rx_codec rx_codec_http(size_t max_head, size_t max_body)
{
    if (max_head == 0 || max_head > RX_HTTP_MAX_HEAD_LIMIT)
        max_head = max_head == 0 ? 8192 : RX_HTTP_MAX_HEAD_LIMIT;
    if (max_body > SIZE_MAX / 4)
        max_body = SIZE_MAX / 4;
    return (rx_codec){.name = "http", .max_frame = max_head + max_body, .chunk = max_head,
                      .create = http_create, .destroy = http_destroy, .decode = http_decode,
                      .head = no_head};
}

// ------------------------------------------------------------------ the application's side

int rx_http_view(const rx_frame *f, rx_http_request *r)
{
    struct wire w;
    if (f->len < sizeof w)
        return -1;
    memcpy(&w, f->data, sizeof w);
    if (w.magic != WIRE_MAGIC || w.nheaders > RX_HTTP_MAX_HEADERS)
        return -1;
    memset(r, 0, offsetof(rx_http_request, headers));
    r->status = w.status;
    r->error = w.error;
    if (w.status != 0 && w.status != 100)
        return f->len == sizeof w ? 0 : -1;
    size_t isz = sizeof w + w.nheaders * sizeof(struct wire_header);
    if (f->len < isz || f->len - isz < w.head_len || f->len - isz - w.head_len != w.body_here)
        return -1;
    const char *raw = f->data + isz;
    r->method = raw;
    r->method_len = w.method_len;
    r->target = raw + w.target_off;
    r->target_len = w.target_len;
    r->minor = w.minor;
    r->keep_alive = (w.flags & WIRE_KEEP_ALIVE) != 0;
    r->expect_continue = (w.flags & WIRE_EXPECT) != 0;
    r->body_len = (size_t)w.body_len;
    r->body = w.body_here > 0 ? raw + w.head_len : NULL;
    r->wire_len = w.head_len + (size_t)w.body_len;
    r->nheaders = w.nheaders;
    for (uint32_t i = 0; i < w.nheaders; i++) {
        struct wire_header h;
        memcpy(&h, f->data + sizeof w + i * sizeof h, sizeof h);
        r->headers[i] = (rx_http_header){.name = raw + h.name_off, .name_len = h.name_len,
                                         .value = raw + h.value_off, .value_len = h.value_len};
    }
    return 0;
}

const char *rx_http_header_find(const rx_http_request *r, const char *name, size_t *len)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        const rx_http_header *h = &r->headers[i];
        if (name_eq(h->name, h->name_len, name)) {
            *len = h->value_len;
            return h->value;
        }
    }
    *len = 0;
    return NULL;
}

bool rx_http_method_is(const rx_http_request *r, const char *m)
{
    // Methods are case-sensitive (RFC 9110 9.1): "get" is not GET.
    size_t n = strlen(m);
    return r->method_len == n && memcmp(r->method, m, n) == 0;
}

const char *rx_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

size_t rx_http_response(char *out, size_t cap, int status, const char *headers,
                        const void *body, size_t body_len, unsigned flags)
{
    int n = snprintf(out, cap, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\nConnection: %s\r\n%s\r\n",
                     status, rx_http_reason(status), body_len,
                     (flags & RX_HTTP_CLOSE) ? "close" : "keep-alive", headers ? headers : "");
    if (n < 0)
        return SIZE_MAX;  // cannot happen with these formats; "too large" if it did
    size_t head = (size_t)n;
    size_t total = head + ((flags & RX_HTTP_NO_BODY) ? 0 : body_len);
    if (total > cap)
        return total;
    if (!(flags & RX_HTTP_NO_BODY) && body_len > 0)
        memcpy(out + head, body, body_len);
    return total;
}

ssize_t rx_http_send(rx_session *s, int status, const char *headers, const void *body,
                     size_t body_len, unsigned flags)
{
    char small[2048];
    size_t n = rx_http_response(small, sizeof small, status, headers, body, body_len, flags);
    if (n == SIZE_MAX || n > SSIZE_MAX)
        return -1;
    if (n <= sizeof small)
        return rx_send(s, small, n) == 0 ? (ssize_t)n : -1;
    char *big = malloc(n);
    if (big == NULL)
        return -1;
    size_t m = rx_http_response(big, n, status, headers, body, body_len, flags);
    int rc = m == n ? rx_send(s, big, n) : -1;
    free(big);
    return rc == 0 ? (ssize_t)n : -1;
}
