// resp_test.c: the RESP2 request decoder and reply encoders (resp.h): every request of a
// vector set in every split, arrays and inline commands back to back, limits exactly at and
// one past (bulk length, element count, inline length), each bulk's CRLF checked, garbage
// and truncated input, no allocation per request, and the exact bytes of every reply.
// A test binary (make resp_test; test.bats runs it): "ok N - ..." lines, exit 1 on failure.
#include "resp.h"
#include "test_util.h"

#define MAX_BULK 16
#define MAX_ARGS 8

// A fresh decoder per run (the table from the previous run is freed first).
static void op_reset(void *dec)
{
    resp_free(dec);
    resp_init(dec, MAX_BULK, MAX_ARGS);
}

int main(void)
{
    struct resp_decoder d;
    resp_init(&d, MAX_BULK, MAX_ARGS);
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = resp_decode_op,
                            .describe = resp_describe};

    // 1. The vectors, back to back in one stream.
    static const char vec[] = "*1\r\n$4\r\nPING\r\n"
                              "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"  // an empty bulk
                              "*2\r\n$4\r\nECHO\r\n$6\r\na\r\nb\n\r\r\n"   // CR/LF inside a bulk
                              "PING\r\n"                                   // inline
                              "ECHO  hello \tworld\n"                      // inline, bare \n
                              "\r\n"                                       // empty inline
                              "*0\r\n*-1\r\n"                              // empty arrays
                              "*1\r\n$16\r\n0123456789abcdef\r\n"          // bulk at the limit
                              "*8\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n"
                              "$1\r\ne\r\n$1\r\nf\r\n$1\r\ng\r\n$1\r\nh\r\n"  // 8 args: the limit
                              "*2\r\n$3\r\nGET\r\n$1\r\n";                 // truncated
    static const char want[] = "F14:1[PING]\n"
                               "F26:3[SET][k][]\n"
                               "F26:2[ECHO][a\r\nb\n\r]\n"
                               "F6:1[PING]\n"
                               "F19:3[ECHO][hello][world]\n"
                               "F2:0\n"
                               "F4:0\n"
                               "F5:0\n"
                               "F27:1[0123456789abcdef]\n"
                               "F60:8[a][b][c][d][e][f][g][h]\n"
                               "R17 bytes left\n";
    check_splits("vectors", &ops, vec, sizeof vec - 1, want, 256, 0, 300);
    check_splits("vectors, the buffer moved on every read", &ops, vec, sizeof vec - 1, want, 256,
                 1, 300);

    // 2. Errors, each after a good request (which still comes out), in every split.
    static const struct {
        const char *what, *in, *want;
    } errs[] = {
        {"a bulk whose length is off by one (no CRLF where it says)",
         "*1\r\n$4\r\nPING\r\n*1\r\n$3\r\nPING\r\n", "E0:bulk not followed by CRLF\n"},
        {"a bulk followed by garbage instead of CRLF", "*1\r\n$4\r\nPING\r\n*1\r\n$3\r\nfooXY",
         "E0:bulk not followed by CRLF\n"},
        {"a bulk of MAX_BULK + 1", "*1\r\n$4\r\nPING\r\n*1\r\n$17\r\n",
         "E0:invalid bulk length\n"},
        {"MAX_ARGS + 1 elements", "*1\r\n$4\r\nPING\r\n*9\r\n", "E0:invalid multibulk length\n"},
        {"a count that is not a number", "*1\r\n$4\r\nPING\r\n*x\r\n",
         "E0:invalid multibulk length\n"},
        {"a count line without \\r", "*1\r\n$4\r\nPING\r\n*1\n", "E0:invalid multibulk length\n"},
        {"a bulk length that is negative", "*1\r\n$4\r\nPING\r\n*1\r\n$-1\r\n",
         "E0:invalid bulk length\n"},
        // Long numbers: resp_number takes at most 18 digits, so nothing it accepts can
        // overflow a long long; 19 digits (2^63 here) is garbage, not a huge length.
        {"a bulk length of 2^63 (19 digits)", "*1\r\n$4\r\nPING\r\n*1\r\n$9223372036854775808\r\n",
         "E0:invalid bulk length\n"},
        {"a bulk length of 18 nines (no overflow, over the limit)",
         "*1\r\n$4\r\nPING\r\n*1\r\n$999999999999999999\r\n", "E0:invalid bulk length\n"},
        {"a count of 2^63 (19 digits)", "*1\r\n$4\r\nPING\r\n*9223372036854775808\r\n",
         "E0:invalid multibulk length\n"},
        {"a bulk length that is only a sign", "*1\r\n$4\r\nPING\r\n*1\r\n$-\r\n",
         "E0:invalid bulk length\n"},
        {"an empty bulk length", "*1\r\n$4\r\nPING\r\n*1\r\n$\r\n", "E0:invalid bulk length\n"},
        {"an empty count", "*1\r\n$4\r\nPING\r\n*\r\n", "E0:invalid multibulk length\n"},
        {"a bulk length with a '+'", "*1\r\n$4\r\nPING\r\n*1\r\n$+3\r\n",
         "E0:invalid bulk length\n"},
        {"an integer where a bulk belongs", "*1\r\n$4\r\nPING\r\n*1\r\n:1\r\n",
         "E0:expected '$', got ':'\n"},
        {"an empty line where a bulk belongs (the byte shown as '?')",
         "*1\r\n$4\r\nPING\r\n*1\r\n\r\n", "E0:expected '$', got '?'\n"},
        {"an 8-bit byte where a bulk belongs", "*1\r\n$4\r\nPING\r\n*1\r\n\377\r\n",
         "E0:expected '$', got '?'\n"},
        // Numbers as strict as redis 7's string2ll: no leading zero, no "-0", no '+'.
        {"a bulk length with a leading zero ($04)", "*1\r\n$4\r\nPING\r\n*1\r\n$04\r\nPING\r\n",
         "E0:invalid bulk length\n"},
        {"a bulk length of 00", "*1\r\n$4\r\nPING\r\n*1\r\n$00\r\n\r\n", "E0:invalid bulk length\n"},
        {"a bulk length of -0", "*1\r\n$4\r\nPING\r\n*1\r\n$-0\r\n", "E0:invalid bulk length\n"},
        {"a count with a leading zero (*01)", "*1\r\n$4\r\nPING\r\n*01\r\n$4\r\nPING\r\n",
         "E0:invalid multibulk length\n"},
        {"a count of -0", "*1\r\n$4\r\nPING\r\n*-0\r\n", "E0:invalid multibulk length\n"},
        {"a count of -01", "*1\r\n$4\r\nPING\r\n*-01\r\n", "E0:invalid multibulk length\n"},
        {"a count with a '+'", "*1\r\n$4\r\nPING\r\n*+1\r\n", "E0:invalid multibulk length\n"},
        {"a count line of 21 digits", "*1\r\n$4\r\nPING\r\n*111111111111111111111\r\n",
         "E0:too big mbulk count string\n"},
        {"a count line of 20 characters ('*' and 19 digits) is read, and refused as a number",
         "*1\r\n$4\r\nPING\r\n*1111111111111111111\r\n", "E0:invalid multibulk length\n"},
        {"a count line of 21 characters is too long", "*1\r\n$4\r\nPING\r\n*11111111111111111111\r\n",
         "E0:too big mbulk count string\n"},
        {"a count line that never ends", "*1\r\n$4\r\nPING\r\n*11111111111111111111111",
         "E0:too big mbulk count string\n"},
        {"a bulk length line that never ends", "*1\r\n$4\r\nPING\r\n*1\r\n$0000000000000000000000",
         "E0:too big bulk count string\n"},
        {"9 inline words (MAX_ARGS + 1)", "PING\na b c d e f g h i\n",
         "E0:too many arguments in inline request\n"},
    };
    for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
        struct tstr w = {0};
        ts_printf(&w, "%s%s", errs[i].in[0] == '*' ? "F14:1[PING]\n" : "F5:1[PING]\n",
                  errs[i].want);
        check_splits(errs[i].what, &ops, errs[i].in, strlen(errs[i].in), w.p, 256, 1, 50);
        ts_free(&w);
    }

    // 3. Inline: at most RESP_MAX_INLINE bytes before the '\n', a '\r' included (redis 7 fails
    // once more than that many are in without a '\n'), fed whole and byte by byte.
    size_t n = RESP_MAX_INLINE + 2;
    char *big = t_alloc(n);
    static const struct {
        size_t before;   // bytes before the '\n' ('a's, then the '\r' if crlf)
        int crlf, ok;
    } inl[] = {
        {RESP_MAX_INLINE, 0, 1},      // 65536 'a's, LF: a request
        {RESP_MAX_INLINE, 1, 1},      // 65535 'a's, CRLF: a request
        {RESP_MAX_INLINE + 1, 1, 0},  // 65536 'a's, CRLF: too big
        {RESP_MAX_INLINE + 1, 0, 0},  // 65537 'a's, LF: too big
    };
    struct codec_result r;
    for (size_t i = 0; i < sizeof inl / sizeof *inl; i++) {
        memset(big, 'a', inl[i].before);
        if (inl[i].crlf)
            big[inl[i].before - 1] = '\r';
        big[inl[i].before] = '\n';
        size_t words = inl[i].before - (size_t)inl[i].crlf;
        int ok = 1;
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            resp_free(&d);
            resp_init(&d, MAX_BULK, MAX_ARGS);
            if (bytewise) {  // the same line one byte more per call (same data, longer)
                r = codec_need_more();
                for (size_t k = 1; k <= inl[i].before + 1 && r.status == CODEC_NEED_MORE; k++)
                    r = resp_decode(&d, big, k);
            } else {
                r = resp_decode(&d, big, inl[i].before + 1);
            }
            ok = ok && (inl[i].ok ? r.status == CODEC_FRAME && d.argc == 1 &&
                                        d.argv[0].len == words
                                  : r.status == CODEC_ERROR &&
                                        strcmp(r.error, "too big inline request") == 0);
        }
        t_check(ok, "an inline line of %zu bytes then %s: %s", words, inl[i].crlf ? "CRLF" : "LF",
                inl[i].ok ? "a request" : "too big inline request");
    }
    free(big);

    // 4. No allocation per request: 10000 requests of 3 arguments grow the table once (to 8
    // entries) and never again; a 1000-argument request grows it by doubling: 8 -> 1024.
    resp_free(&d);
    resp_init(&d, 0, 0);
    unsigned long long requests = 0;
    for (int i = 0; i < 10000; i++) {
        static const char set[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
        r = resp_decode(&d, set, sizeof set - 1);
        requests += r.status == CODEC_FRAME && d.argc == 3;
    }
    unsigned long long small_allocs = d.allocs;
    struct tstr many = {0};
    ts_printf(&many, "*1000\r\n");
    for (int i = 0; i < 1000; i++)
        ts_printf(&many, "$1\r\nx\r\n");
    r = resp_decode(&d, many.p, many.len);
    t_check(requests == 10000 && small_allocs == 1 && r.status == CODEC_FRAME &&
                d.argc == 1000 && d.allocs == 1 + 7,
            "10000 requests: %llu allocation(s); then 1000 arguments: %llu in all (doubling)",
            small_allocs, d.allocs);

    // 5. The same 1000-argument request byte by byte through a buffer that moves on every
    // read (by hand: op_reset's limits are the small ones): one request, every argument right.
    resp_free(&d);
    resp_init(&d, 0, 0);
    struct inbuf b;
    inbuf_init(&b, 16384, 1);
    int ok = 1;
    size_t fed = 0;
    unsigned long long calls = 0;
    while (fed < many.len) {
        fed += inbuf_append(&b, many.p + fed, 1);
        r = resp_decode(&d, inbuf_peek(&b), inbuf_len(&b));
        calls++;
        if (r.status == CODEC_ERROR || (r.status == CODEC_FRAME && fed != many.len))
            ok = 0;
    }
    ok = ok && r.status == CODEC_FRAME && d.argc == 1000 && r.consumed == many.len;
    for (size_t i = 0; ok && i < d.argc; i++) {
        size_t alen;
        const char *a = resp_arg(&d, inbuf_peek(&b), i, &alen);
        ok = alen == 1 && a[0] == 'x';
    }
    t_check(ok, "a 1000-argument request fed byte by byte through a moving buffer: %llu calls, "
                "one request of %zu bytes",
            calls, many.len);
    inbuf_free(&b);
    ts_free(&many);

    // 6. Garbage: random bytes from RESP's alphabet, one read against random splits.
    check_random_streams("random RESP-ish bytes", &ops, "*$\r\n0123-x :+", 300, 300, 20, 512);

    // 7. An error is sticky.
    resp_free(&d);
    resp_init(&d, MAX_BULK, MAX_ARGS);
    r = resp_decode(&d, "*x\r\n", 4);
    struct codec_result r2 = resp_decode(&d, "PING\r\n", 6);
    t_check(r.status == CODEC_ERROR && r2.status == CODEC_ERROR && r2.error == r.error,
            "after an error the decoder stays failed, with the same message");
    resp_free(&d);

    // 8. The reply encoders: exact bytes; too small a buffer writes nothing.
    char out[64];
    struct tstr all = {0};
    size_t k;
    k = resp_simple(out, sizeof out, "OK"), ts_add(&all, out, k);
    k = resp_error(out, sizeof out, "ERR unknown command"), ts_add(&all, out, k);
    k = resp_integer(out, sizeof out, -42), ts_add(&all, out, k);
    k = resp_bulk(out, sizeof out, "a\r\nb", 4), ts_add(&all, out, k);
    k = resp_bulk(out, sizeof out, "", 0), ts_add(&all, out, k);
    k = resp_null(out, sizeof out), ts_add(&all, out, k);
    k = resp_array(out, sizeof out, 2), ts_add(&all, out, k);
    k = resp_bulk_header(out, sizeof out, 1000), ts_add(&all, out, k);
    static const char replies[] = "+OK\r\n-ERR unknown command\r\n:-42\r\n$4\r\na\r\nb\r\n"
                                  "$0\r\n\r\n$-1\r\n*2\r\n$1000\r\n";
    memset(out, 'z', sizeof out);
    size_t need = resp_bulk(out, 9, "hello", 5);  // needs 11
    t_check(all.len == sizeof replies - 1 && memcmp(all.p, replies, all.len) == 0 && need == 11 &&
                out[0] == 'z',
            "reply encoders: simple, error, integer, bulk, empty bulk, null, array, bulk header");
    ts_free(&all);
    return t_done();
}
