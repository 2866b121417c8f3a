// line_test.c: the delimited decoder (line.h) against its promises: every frame of a vector
// set in every split, back to back in one read, lines exactly at and one past the limit,
// truncated input, and random bytes against a plain reference splitter.
// A test binary (make line_test; test.bats runs it): prints "ok N - ..." lines, exits 1 on
// any failure.
#include "line.h"
#include "test_util.h"

#define MAX 16  // the limit the vectors are written for

static size_t test_max = MAX;  // the limit op_reset gives a fresh decoder

static void op_reset(void *dec) { line_init(dec, test_max); }

// The reference: split at every '\n', drop one '\r' before it, apply the limit, the obvious
// way (the whole stream at once). What line_decode must agree with for any input.
static void reference(const char *s, size_t n, size_t max, struct tstr *out)
{
    size_t i = 0;
    while (i < n) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t end = nl == NULL ? n : (size_t)(nl - s);
        size_t flen = end - i;
        if (nl != NULL && flen > 0 && s[end - 1] == '\r')
            flen--;
        if (flen > max && (nl != NULL || flen > max + 1 || s[n - 1] != '\r')) {
            ts_printf(out, "E0:line too long\n");
            return;
        }
        if (nl == NULL) {
            ts_printf(out, "R%zu bytes left\n", n - i);
            return;
        }
        ts_printf(out, "F%zu:", flen);
        ts_add(out, s + i, flen);
        ts_add(out, "\n", 1);
        i = end + 1;
    }
}

int main(void)
{
    struct line_decoder d;
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = line_decode_op};

    // 1. The vector set, back to back: every frame shape once.
    static const char vec[] = "hello\n"
                              "\n"
                              "crlf\r\n"
                              "\r\n"
                              "a\rb\n"                 // a '\r' inside a line is data
                              "0123456789abcdef\n"     // exactly MAX bytes
                              "0123456789abcdef\r\n"   // exactly MAX bytes, then "\r\n"
                              "nul\0byte\n"
                              "last";                  // truncated: no delimiter yet
    static const char want[] = "F5:hello\n"
                               "F0:\n"
                               "F4:crlf\n"
                               "F0:\n"
                               "F3:a\rb\n"
                               "F16:0123456789abcdef\n"
                               "F16:0123456789abcdef\n"
                               "F8:nul\0byte\n"
                               "R4 bytes left\n";
    // (want holds a NUL: compare it with its real length.)
    struct tstr w = {0};
    ts_add(&w, want, sizeof want - 1);
    struct tstr got = {0};
    feed(&ops, vec, sizeof vec - 1, NULL, 0, 4096, 0, &got, NULL);
    int same = got.len == w.len && memcmp(got.p, w.p, w.len) == 0;
    if (!same)
        t_show_diff("vectors", &got, &w);
    t_check(same, "vectors in one read: 8 frames back to back, the truncated tail left unread");

    struct tstr ref = {0};
    reference(vec, sizeof vec - 1, MAX, &ref);
    t_check(ref.len == w.len && memcmp(ref.p, w.p, w.len) == 0,
            "the reference splitter agrees with the hand-written transcript");
    ts_free(&ref);

    // check_splits takes the transcript as a C string: the vectors without the NUL frame.
    static const char vec2[] = "hello\n\ncrlf\r\n\r\na\rb\n0123456789abcdef\n"
                               "0123456789abcdef\r\nlast";
    static const char want2[] = "F5:hello\nF0:\nF4:crlf\nF0:\nF3:a\rb\nF16:0123456789abcdef\n"
                                "F16:0123456789abcdef\nR4 bytes left\n";
    check_splits("vectors", &ops, vec2, sizeof vec2 - 1, want2, 64, 0, 200);
    check_splits("vectors, the buffer moved on every read", &ops, vec2, sizeof vec2 - 1, want2,
                 64, 1, 200);

    // 2. The limit: MAX + 1 bytes is an error, with or without a delimiter yet, in any split.
    check_splits("a line of MAX + 1 bytes then \\n", &ops, "ok\n0123456789abcdefg\nnext\n",
                 25, "F2:ok\nE0:line too long\n", 64, 1, 50);
    check_splits("MAX + 1 bytes then \\r\\n", &ops, "0123456789abcdefg\r\n", 19,
                 "E0:line too long\n", 64, 1, 50);
    check_splits("MAX + 1 bytes, no delimiter yet (known too long already)", &ops,
                 "0123456789abcdefg", 17, "E0:line too long\n", 64, 1, 50);
    check_splits("MAX bytes then a lone \\r (it may still be \\r\\n)", &ops,
                 "0123456789abcdef\r", 17, "R17 bytes left\n", 64, 1, 50);
    check_splits("MAX bytes, \\r, then not \\n", &ops, "0123456789abcdef\rx", 18,
                 "E0:line too long\n", 64, 1, 50);

    // 3. After an error the decoder stays failed (codec.h rule 5).
    line_init(&d, MAX);
    struct codec_result r1 = line_decode(&d, "0123456789abcdefgh\n", 19);
    struct codec_result r2 = line_decode(&d, "ok\n", 3);
    t_check(r1.status == CODEC_ERROR && r2.status == CODEC_ERROR,
            "an error is sticky: a later short line is refused too");

    // 4. Garbage: random bytes (a '\n' or '\r' one byte in 8) against the reference, with
    // max 16 (errors are frequent) and max 200 (long runs of frames).
    unsigned long long seed = t_rand_state;
    int bad = 0;
    for (int run = 0; run < 300; run++) {
        size_t n = 1 + (size_t)(t_rand() % 2000);
        test_max = run % 2 ? MAX : 200;
        char *s = t_alloc(n);
        for (size_t i = 0; i < n; i++) {
            unsigned long long x = t_rand();
            s[i] = x % 8 == 0 ? '\n' : x % 8 == 1 ? '\r' : (char)(x >> 8);
        }
        struct tstr ref = {0}, out = {0};
        reference(s, n, test_max, &ref);
        size_t cuts[64];
        for (size_t k = 0; k < 64; k++)
            cuts[k] = 1 + (size_t)(t_rand() % 97);
        feed(&ops, s, n, cuts, 64, 4096, 1, &out, NULL);
        if (out.len != ref.len || memcmp(out.p, ref.p, ref.len) != 0) {
            if (bad++ < 3)
                t_show_diff("random bytes", &out, &ref);
        }
        ts_free(&ref);
        ts_free(&out);
        free(s);
    }
    test_max = MAX;
    t_check(bad == 0, "300 streams of random bytes split at random agree with the reference "
                      "(seed %#llx)", seed);

    // 5. A slow sender: a 4000-byte line arriving a byte at a time is scanned once in all,
    // not once per read (line.h): after every NEED_MORE, the decoder's state says that all
    // the bytes it was given are scanned, and the next scan starts there.
    line_init(&d, 8192);
    char *slow = t_alloc(4001);
    memset(slow, 'x', 4000);
    slow[4000] = '\n';
    int resumed = 1;
    struct codec_result rs = {0};
    for (size_t k = 1; k <= 4001 && resumed; k++) {
        rs = line_decode(&d, slow, k);
        if (k < 4001 && (rs.status != CODEC_NEED_MORE || d.scanned != k))
            resumed = 0;
    }
    t_check(resumed && rs.status == CODEC_FRAME && rs.len == 4000 && d.scanned == 0,
            "a line fed byte by byte: each call scans only the new byte (scanned == bytes "
            "given), and the frame comes out whole");
    free(slow);

    // 6. Encoding: the frame and '\n'; too small a buffer writes nothing.
    char out[8] = "xxxxxxx";
    size_t n1 = line_encode(out, sizeof out, "abc", 3);
    size_t n2 = line_encode(out + 4, 3, "abc", 3);
    t_check(n1 == 4 && memcmp(out, "abc\nxxx", 7) == 0 && n2 == 4,
            "line_encode writes the line and \\n, or nothing (returning the size it needs)");

    ts_free(&w);
    ts_free(&got);
    return t_done();
}
