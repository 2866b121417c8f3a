// http_test.c: the HTTP/1.1 request-head decoder (http.h): every request of a vector set in
// every split (heads and Content-Length bodies back to back, keep-alive rules of 1.0 and 1.1,
// header lookup in any case, bare-LF lines), each error with its status (400, 413, 431, 501,
// 505), the head size and header count limits exactly at and one past, smuggling-shaped
// requests, and garbage.
// A test binary (make http_test; test.bats runs it): "ok N - ..." lines, exit 1 on failure.
#include "http.h"
#include "test_util.h"

static size_t test_head = 256, test_headers = 4;
static unsigned long long test_body = 64;

static void op_reset(void *dec) { http_init(dec, test_head, test_headers, test_body); }

int main(void)
{
    struct http_decoder d;
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = http_decode_op,
                            .describe = http_describe};

    // 1. The vectors, back to back (a keep-alive connection).
    static const char vec[] =
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        "POST /form HTTP/1.1\r\nhost: b\r\ncontent-length: 5\r\n\r\nhello"
        "GET /x?y=1 HTTP/1.1\r\nHost:c\r\nConnection: close\r\n\r\n"
        "GET / HTTP/1.0\r\n\r\n"
        "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
        "HEAD / HTTP/1.1\nHost: lf-only \t\nCONNECTION: upgrade, keep-alive\n\n"
        "PUT /p HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
        "GET /trunc";
    static const char want[] =
        "F27:GET / 1.1 ka=1 cl=0 host=a [Host=a]\n"
        "F51:POST /form 1.1 ka=1 cl=5 host=b [host=b] [content-length=5]\n"
        "P5:hello\n"
        "F50:GET /x?y=1 1.1 ka=0 cl=0 host=c [Host=c] [Connection=close]\n"
        "F18:GET / 1.0 ka=0 cl=0 host=-\n"
        "F42:GET / 1.0 ka=1 cl=0 host=- [Connection=Keep-Alive]\n"
        "F65:HEAD / 1.1 ka=1 cl=0 host=lf-only [Host=lf-only] [CONNECTION=upgrade, keep-alive]\n"
        "F66:PUT /p 1.1 ka=1 cl=3 host=e [Host=e] [Content-Length=3] [Content-Length=3]\n"
        "P3:abc\n"
        "R10 bytes left\n";
    check_splits("vectors", &ops, vec, sizeof vec - 1, want, 512, 0, 300);
    check_splits("vectors, the buffer moved on every read", &ops, vec, sizeof vec - 1, want, 512,
                 1, 300);

    // 1b. What headers mean: Connection token lists (any case, anywhere in the list, over
    // several lines; "closed" is another token), HTTP/1.2 .. 1.9 read as 1.1, Expect:
    // 100-continue in any case (and nothing else).
    static const struct {
        const char *what, *in, *want;
    } meaning[] = {
        {"Connection: keep-alive, close closes", "GET / HTTP/1.1\r\nHost: a\r\n"
         "Connection: keep-alive, close\r\n\r\n", "ka=0 cl=0 host=a"},
        {"Connection: foo, Close closes", "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n",
         "ka=0 cl=0 host=a"},
        {"Connection: ,close, closes", "GET / HTTP/1.1\r\nHost: a\r\nConnection: ,close,\r\n\r\n",
         "ka=0 cl=0 host=a"},
        {"close on a second Connection line closes", "GET / HTTP/1.1\r\nHost: a\r\n"
         "Connection: keep-alive\r\nConnection: CLOSE\r\n\r\n", "ka=0 cl=0 host=a"},
        {"close on a first Connection line closes, whatever the second says", "GET / HTTP/1.1\r\n"
         "Host: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n", "ka=0 cl=0 host=a"},
        {"1.0: keep-alive on a first Connection line keeps, whatever the second says",
         "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: foo\r\n\r\n", "ka=1 cl=0 host=-"},
        {"Connection: closed is not close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
         "ka=1 cl=0 host=a"},
        {"Connection: xclose, keep-alive is not close", "GET / HTTP/1.1\r\nHost: a\r\n"
         "Connection: xclose, keep-alive\r\n\r\n", "ka=1 cl=0 host=a"},
        {"a Closed: header is not Connection", "GET / HTTP/1.1\r\nHost: a\r\nClosed: close\r\n\r\n",
         "ka=1 cl=0 host=a"},
        {"1.0: Connection: foo, Keep-Alive keeps", "GET / HTTP/1.0\r\nConnection: foo, Keep-Alive\r\n\r\n",
         "ka=1 cl=0 host=-"},
        {"1.0: Connection: keep-alive, close closes", "GET / HTTP/1.0\r\n"
         "Connection: keep-alive, close\r\n\r\n", "ka=0 cl=0 host=-"},
        {"1.0: Connection: keep-alives is not keep-alive", "GET / HTTP/1.0\r\n"
         "Connection: keep-alives\r\n\r\n", "ka=0 cl=0 host=-"},
        {"HTTP/1.2 is read as 1.1", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", "1.1 ka=1 cl=0 host=a"},
        {"HTTP/1.9 is read as 1.1", "GET / HTTP/1.9\r\nHost: a\r\n\r\n", "1.1 ka=1 cl=0 host=a"},
        {"Expect: 100-Continue (any case) is seen", "POST / HTTP/1.1\r\nHost: a\r\n"
         "EXPECT: 100-Continue\r\nContent-Length: 1\r\n\r\nx", "ka=1 cl=1 100c host=a"},
        {"Expect: 100-continued is not 100-continue", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Expect: 100-continued\r\nContent-Length: 1\r\n\r\nx", "ka=1 cl=1 host=a"},
    };
    for (size_t i = 0; i < sizeof meaning / sizeof *meaning; i++) {
        http_init(&d, 0, 0, 0);
        struct codec_result r = http_decode(&d, meaning[i].in, strlen(meaning[i].in));
        struct tstr got = {0};
        if (r.status == CODEC_FRAME)
            http_describe(&d, meaning[i].in, &r, &got);
        else
            ts_printf(&got, "status %d %d %s", r.status, r.code, r.error ? r.error : "");
        t_check(got.p != NULL && strstr(got.p, meaning[i].want) != NULL, "%s: %s (want ...%s...)",
                meaning[i].what, got.p ? got.p : "", meaning[i].want);
        ts_free(&got);
    }

    // 2. Errors and their statuses, each after a good request (which still comes out).
    static const char ok_req[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    static const struct {
        const char *what, *in, *want;
    } errs[] = {
        {"Transfer-Encoding: chunked is 501", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Transfer-Encoding: chunked\r\n\r\n", "E501:Transfer-Encoding not implemented\n"},
        {"Content-Length with Transfer-Encoding is 400 (smuggling)",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
         "E400:both Transfer-Encoding and Content-Length\n"},
        {"two different Content-Length is 400 (smuggling)",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 4\r\n\r\n",
         "E400:conflicting Content-Length headers\n"},
        {"Content-Length not a number is 400", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Content-Length: 3x\r\n\r\n", "E400:bad Content-Length\n"},
        {"Content-Length one past the body limit is 413", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Content-Length: 65\r\n\r\n", "E413:body too large\n"},
        {"the body limit and one digit more (640) is 413: every digit counts", "POST / HTTP/1.1\r\n"
         "Host: a\r\nContent-Length: 640\r\n\r\n", "E413:body too large\n"},
        // Well-formed but too large is 413 however many digits (RFC 9110 8.6: 1*DIGIT, and
        // "anticipate potentially large decimal numerals"): a parser that overflows or caps
        // the digit count answers 400, or worse, wraps to a small length.
        {"a 12-digit Content-Length is 413", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Content-Length: 100000000000\r\n\r\n", "E413:body too large\n"},
        {"a 20-digit Content-Length (past 2^64) is 413, not wrapped", "POST / HTTP/1.1\r\n"
         "Host: a\r\nContent-Length: 18446744073709551617\r\n\r\n", "E413:body too large\n"},
        {"a 40-digit Content-Length is 413", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Content-Length: 1234567890123456789012345678901234567890\r\n\r\n",
         "E413:body too large\n"},
        {"leading zeros count for nothing: 22 digits of 65 is 413", "POST / HTTP/1.1\r\n"
         "Host: a\r\nContent-Length: 0000000000000000000065\r\n\r\n", "E413:body too large\n"},
        {"a negative Content-Length is 400", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Content-Length: -1\r\n\r\n", "E400:bad Content-Length\n"},
        {"an empty Content-Length is 400", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Content-Length:\r\n\r\n", "E400:bad Content-Length\n"},
        {"a space before the colon is 400", "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
         "E400:malformed header line\n"},
        {"a folded header line is 400", "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
         "E400:folded header line\n"},
        {"HTTP/1.1 without Host is 400", "GET / HTTP/1.1\r\n\r\n",
         "E400:HTTP/1.1 request without Host\n"},
        {"two Host lines is 400", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
         "E400:more than one Host\n"},
        {"a request line with two spaces is 400", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
         "E400:malformed request line\n"},
        {"a request line without a version is 400", "GET /\r\nHost: a\r\n\r\n",
         "E400:malformed request line\n"},
        {"a request line without a method (a leading space) is 400", " / HTTP/1.1\r\nHost: a\r\n\r\n",
         "E400:malformed request line\n"},
        {"a header line without a name is 400", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n",
         "E400:malformed header line\n"},
        {"a header line without a colon is 400", "GET / HTTP/1.1\r\nHost: a\r\nX-No-Colon\r\n\r\n",
         "E400:malformed header line\n"},
        {"HTTP/2.0 is 505", "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
         "E505:HTTP version not supported\n"},
        {"HTTP/0.9 is 505", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", "E505:HTTP version not supported\n"},
        {"HTTP/1.2 without Host is 400, as 1.1", "GET / HTTP/1.2\r\n\r\n",
         "E400:HTTP/1.1 request without Host\n"},
        {"HTTP/1.10 is 400", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", "E400:malformed request line\n"},
        {"HTTP/1.x is 400", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", "E400:malformed request line\n"},
        {"http/1.1 (lower case) is 400", "GET / http/1.1\r\nHost: a\r\n\r\n",
         "E400:malformed request line\n"},
        // Transfer-Encoding: any value, any case, in a list, in HTTP/1.0 too: 501; with a
        // Content-Length in either order: 400.
        {"transfer-encoding: CHUNKED is 501", "POST / HTTP/1.1\r\nHost: a\r\n"
         "transfer-encoding: CHUNKED\r\n\r\n", "E501:Transfer-Encoding not implemented\n"},
        {"Transfer-Encoding: gzip, chunked is 501", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Transfer-Encoding: gzip, chunked\r\n\r\n", "E501:Transfer-Encoding not implemented\n"},
        {"Transfer-Encoding: identity is 501", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Transfer-Encoding: identity\r\n\r\n", "E501:Transfer-Encoding not implemented\n"},
        {"an empty Transfer-Encoding is 501", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Transfer-Encoding:\r\n\r\n", "E501:Transfer-Encoding not implemented\n"},
        {"Transfer-Encoding in HTTP/1.0 is 501", "POST / HTTP/1.0\r\n"
         "TRANSFER-ENCODING: chunked\r\n\r\n", "E501:Transfer-Encoding not implemented\n"},
        {"Transfer-Encoding then Content-Length is 400", "POST / HTTP/1.1\r\nHost: a\r\n"
         "Transfer-Encoding: gzip, Chunked\r\nContent-Length: 3\r\n\r\nabc",
         "E400:both Transfer-Encoding and Content-Length\n"},
        // A bare CR anywhere in a head is invalid (RFC 9112 2.2), and so is any control byte
        // in a name or a value: 400 with a fixed reason.
        {"a bare CR in the method", "G\rET / HTTP/1.1\r\nHost: a\r\n\r\n", "E400:malformed request line\n"},
        {"a bare CR in the target", "GET /\r/ HTTP/1.1\r\nHost: a\r\n\r\n", "E400:malformed request line\n"},
        {"a bare CR after the version", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n",
         "E400:malformed request line\n"},
        {"a bare CR in a name", "GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n", "E400:malformed header line\n"},
        {"a bare CR ending a name", "GET / HTTP/1.1\r\nHost: a\r\nX\r: b\r\n\r\n",
         "E400:malformed header line\n"},
        {"a bare CR in a value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
         "E400:control character in header value\n"},
        {"a bare CR ending a value", "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
         "E400:control character in header value\n"},
        {"a bare CR as a line ending", "GET / HTTP/1.1\r\nHost: a\rX-Evil: 1\r\n\r\n",
         "E400:control character in header value\n"},
        {"a bare CR before the empty line", "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n\r\n",
         "E400:malformed header line\n"},
        {"an ESC in a name", "GET / HTTP/1.1\r\nHost: a\r\n\33[2J: c\r\n\r\n", "E400:malformed header line\n"},
        {"a DEL in a value", "GET / HTTP/1.1\r\nHost: a\177\r\n\r\n",
         "E400:control character in header value\n"},

        {"an empty line where the request line belongs is 400", "\r\nGET / HTTP/1.1\r\n\r\n",
         "E400:empty request line\n"},
        {"5 header lines (1 past the limit) is 431",
         "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
         "E431:too many header lines\n"},
        {"a control character in a value is 400", "GET / HTTP/1.1\r\nHost: a\1b\r\n\r\n",
         "E400:control character in header value\n"},
    };
    for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
        struct tstr in = {0}, w = {0};
        ts_printf(&in, "%s%s", ok_req, errs[i].in);
        ts_printf(&w, "F27:GET / 1.1 ka=1 cl=0 host=a [Host=a]\n%s", errs[i].want);
        check_splits(errs[i].what, &ops, in.p, in.len, w.p, 512, 1, 30);
        ts_free(&in);
        ts_free(&w);
    }

    // A NUL in a name or a value (written with its length: a C string would end there).
    static const char nul_name[] = "GET / HTTP/1.1\r\nHost: a\r\nX-\0: c\r\n\r\n";
    static const char nul_value[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    check_splits("a NUL in a name is 400", &ops, nul_name, sizeof nul_name - 1,
                 "E400:malformed header line\n", 512, 1, 30);
    check_splits("a NUL in a value is 400", &ops, nul_value, sizeof nul_value - 1,
                 "E400:control character in header value\n", 512, 1, 30);

    // 3. Limits exactly at and one past: 4 header lines; a body of exactly 64; a head of
    // exactly 256 bytes, and 257.
    static const char limits[] =
        "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nContent-Length: 64\r\n\r\n"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    check_splits("4 header lines (the limit) and a 64-byte body (the limit)", &ops, limits,
                 sizeof limits - 1,
                 "F59:GET / 1.1 ka=1 cl=64 host=a [Host=a] [A=1] [B=2] [Content-Length=64]\n"
                 "P64:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
                 512, 1, 50);
    struct tstr h = {0}, w = {0};
    ts_printf(&h, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    size_t value_at = h.len;
    while (h.len < 256 - 4)
        ts_add(&h, "v", 1);
    ts_add(&h, "\r\n\r\n", 4);
    ts_printf(&w, "F256:GET / 1.1 ka=1 cl=0 host=a [Host=a] [X=%.*s]\n", (int)(256 - 4 - value_at),
              h.p + value_at);
    check_splits("a head of exactly max_head (256) bytes", &ops, h.p, h.len, w.p, 512, 1, 50);
    h.len = 256 - 4;
    ts_add(&h, "v\r\n\r\n", 5);
    check_splits("a head of max_head + 1 bytes is 431", &ops, h.p, h.len,
                 "E431:request head too large\n", 512, 1, 50);
    check_splits("a head with no end in sight is 431 once max_head bytes are in", &ops, h.p, 256,
                 "E431:request head too large\n", 512, 1, 50);
    ts_free(&h);
    ts_free(&w);

    // 3b. The default limits (what the server runs with: http_init(d, 0, 0, 0)), at and one
    // past: an 8192-byte head, 100 header lines, a 1 MiB body.
    {
        struct tstr big = {0};
        ts_printf(&big, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
        while (big.len < HTTP_MAX_HEAD_DEFAULT - 4)
            ts_add(&big, "v", 1);
        ts_add(&big, "\r\n\r\n", 4);
        http_init(&d, 0, 0, 0);
        struct codec_result r8k = http_decode(&d, big.p, big.len);
        big.len = HTTP_MAX_HEAD_DEFAULT - 4;
        ts_add(&big, "v\r\n\r\n", 5);
        http_init(&d, 0, 0, 0);
        struct codec_result r8k1 = http_decode(&d, big.p, big.len);
        t_check(r8k.status == CODEC_FRAME && r8k.consumed == HTTP_MAX_HEAD_DEFAULT &&
                    r8k1.status == CODEC_ERROR && r8k1.code == 431,
                "defaults: a head of exactly %d bytes is a frame, one more is 431",
                HTTP_MAX_HEAD_DEFAULT);
        big.len = 0;
        ts_printf(&big, "GET / HTTP/1.1\r\nHost: a\r\n");
        for (int i = 1; i < HTTP_MAX_HEADERS; i++)
            ts_printf(&big, "H%d: v\r\n", i);
        size_t at_limit = big.len;
        ts_add(&big, "\r\n", 2);
        http_init(&d, 0, 0, 0);
        struct codec_result r100 = http_decode(&d, big.p, big.len);
        size_t n100 = d.req.nheaders;
        big.len = at_limit;
        ts_printf(&big, "H0: v\r\n\r\n");
        http_init(&d, 0, 0, 0);
        struct codec_result r101 = http_decode(&d, big.p, big.len);
        t_check(r100.status == CODEC_FRAME && n100 == HTTP_MAX_HEADERS &&
                    r101.status == CODEC_ERROR && r101.code == 431,
                "defaults: %d header lines are a frame, one more is 431", HTTP_MAX_HEADERS);
        static const char cl_max[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n";
        static const char cl_over[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n";
        http_init(&d, 0, 0, 0);
        struct codec_result rb = http_decode(&d, cl_max, sizeof cl_max - 1);
        unsigned long long cl = d.req.content_length;
        http_init(&d, 0, 0, 0);
        struct codec_result rb1 = http_decode(&d, cl_over, sizeof cl_over - 1);
        t_check(rb.status == CODEC_FRAME && cl == HTTP_MAX_BODY_DEFAULT &&
                    rb1.status == CODEC_ERROR && rb1.code == 413,
                "defaults: a Content-Length of %d is accepted, one more is 413",
                HTTP_MAX_BODY_DEFAULT);
        ts_free(&big);
    }

    // 4. Garbage: random bytes of HTTP's alphabet, one read against random splits.
    check_random_streams("random HTTP-ish bytes", &ops,
                         "GET / HTTP/1.1\r\n\r\nHost: aContent-Length: 3\n", 300, 400, 20, 512);

    // 5. Sticky errors; the defaults; the reasons.
    http_init(&d, 0, 0, 0);
    struct codec_result r = http_decode(&d, "BAD\r\n\r\n", 7);
    struct codec_result r2 = http_decode(&d, ok_req, sizeof ok_req - 1);
    t_check(r.status == CODEC_ERROR && r.code == 400 && r2.status == CODEC_ERROR &&
                r2.code == 400 && d.max_head == HTTP_MAX_HEAD_DEFAULT &&
                d.max_headers == HTTP_MAX_HEADERS && d.max_body == HTTP_MAX_BODY_DEFAULT,
            "an error is sticky (400 again); http_init(0, 0, 0) gives the defaults");
    t_check(strcmp(http_reason(431), "Request Header Fields Too Large") == 0 &&
                strcmp(http_reason(501), "Not Implemented") == 0 &&
                strcmp(http_reason(999), "Unknown") == 0,
            "http_reason names the statuses");
    return t_done();
}
