// lenframe_test.c: the length-prefixed decoder (lenframe.h) against its promises: every frame
// of a vector set in every split, frames at and one past the limit, a 4 GiB header refused
// before anything trusts it, a 10 MiB frame through a 64 KiB buffer (its bytes, the buffer's
// size, the bytes copied), truncated and garbage input, and the encoders.
// A test binary (make lenframe_test; test.bats runs it): "ok N - ..." lines, exit 1 on failure.
#include "lenframe.h"
#include "test_util.h"

#define MAX 100  // the frame limit of the vector tests
#define CAP 64   // their buffer: bodies up to CAP - 4 come whole, longer ones in pieces

static uint32_t test_max = MAX;
static size_t test_cap = CAP;

static void op_reset(void *dec) { lenframe_init(dec, test_max, test_cap - LENFRAME_HEADER); }

// Appends a frame of LEN bytes (byte i is FILL + i) to S, and its transcript line to W.
static void add_frame(struct tstr *s, struct tstr *w, uint32_t len, char fill)
{
    unsigned char hdr[LENFRAME_HEADER];
    lenframe_header(hdr, len);
    ts_add(s, hdr, sizeof hdr);
    size_t at = s->len;
    for (uint32_t i = 0; i < len; i++) {
        char c = (char)(fill + (char)i);
        ts_add(s, &c, 1);
    }
    if (w != NULL) {
        ts_printf(w, "F%u:", len);
        ts_add(w, s->p + at, len);
        ts_add(w, "\n", 1);
    }
}

static void add_header(struct tstr *s, uint32_t len)
{
    unsigned char hdr[LENFRAME_HEADER];
    lenframe_header(hdr, len);
    ts_add(s, hdr, sizeof hdr);
}

int main(void)
{
    struct lenframe_decoder d;
    struct codec_ops ops = {.dec = &d, .reset = op_reset, .decode = lenframe_decode_op,
                            .pieces_are_frames = 1};

    // 1. The vectors, back to back: empty, small, exactly the whole-frame size, one past it
    // (pieces), exactly the limit (pieces), then a truncated frame.
    struct tstr s = {0}, w = {0};
    add_frame(&s, &w, 0, 'a');
    add_frame(&s, &w, 1, 'b');
    add_frame(&s, &w, 5, 'c');
    add_frame(&s, &w, CAP - LENFRAME_HEADER, 'd');
    add_frame(&s, &w, CAP - LENFRAME_HEADER + 1, 'e');
    add_frame(&s, &w, 2, 'f');
    add_frame(&s, &w, MAX, 'g');
    add_frame(&s, &w, 3, 'h');
    add_header(&s, 10);
    ts_add(&s, "part", 4);
    ts_printf(&w, "R8 bytes left\n");
    check_splits_n("vectors (whole frames and pieces, at the limit)", &ops, s.p, s.len, w.p, w.len,
                   CAP, 0, 300);
    check_splits_n("vectors, the buffer moved on every read", &ops, s.p, s.len, w.p, w.len, CAP,
                   1, 300);

    // 1b. The boundary between whole and in pieces, with the frame cut short: a body of
    // exactly whole_max (CAP - 4) is waited for (NEED_MORE, nothing consumed), one byte more
    // starts streaming (a BEGIN piece). Whole reads hide the difference; a cut read shows it.
    {
        struct tstr f = {0};
        add_frame(&f, NULL, CAP - LENFRAME_HEADER, 'w');
        lenframe_init(&d, MAX, CAP - LENFRAME_HEADER);
        struct codec_result rw = lenframe_decode(&d, f.p, f.len - 1);
        f.len = 0;
        add_frame(&f, NULL, CAP - LENFRAME_HEADER + 1, 'p');
        lenframe_init(&d, MAX, CAP - LENFRAME_HEADER);
        struct codec_result rp = lenframe_decode(&d, f.p, f.len - 1);
        t_check(rw.status == CODEC_NEED_MORE && rw.consumed == 0 && rp.status == CODEC_PIECE &&
                    (rp.flags & CODEC_PIECE_BEGIN) && rp.total == CAP - LENFRAME_HEADER + 1,
                "a body of exactly whole_max, one byte short, is waited for; one byte more streams");
        ts_free(&f);
    }

    // 2. One past the limit, in a stream (the frame before it still comes out).
    s.len = w.len = 0;
    add_frame(&s, &w, 7, 'i');
    add_frame(&s, NULL, MAX + 1, 'j');
    ts_printf(&w, "E0:frame too large\n");
    check_splits_n("a frame of MAX + 1 bytes is refused", &ops, s.p, s.len, w.p, w.len, CAP, 1,
                   100);

    // 3. A header announcing 4 GiB - 1: refused from its 4 bytes alone, before any body
    // byte is waited for or handed out (the long-frame path must check the limit too).
    s.len = 0;
    add_header(&s, 0xFFFFFFFFu);
    ts_add(&s, "xyz", 3);
    check_splits("a 4 GiB header is refused at once", &ops, s.p, s.len, "E0:frame too large\n",
                 CAP, 1, 50);
    s.len = 0;
    add_header(&s, 0xFFFFFFFFu);
    lenframe_init(&d, MAX, CAP - LENFRAME_HEADER);
    struct codec_result r = lenframe_decode(&d, s.p, s.len);
    struct codec_result r2 = lenframe_decode(&d, s.p, s.len);
    t_check(r.status == CODEC_ERROR && r2.status == CODEC_ERROR && r.consumed == 0,
            "the 4 GiB header alone is an error, and the error is sticky");

    // 4. Garbage: random bytes as headers and bodies (max 100): every split agrees with one
    // read, errors included.
    check_random_streams("random bytes", &ops, NULL, 200, 600, 40, CAP);

    // 5. 10 MiB through 64 KiB: a 10 MiB frame between two small ones, in 64 KiB reads and in
    // random splits. Every byte checked (the transcript), the buffer never above 64 KiB, and
    // almost nothing copied: the pieces are views, only a header cut by a read is moved.
    test_max = LENFRAME_MAX_DEFAULT;
    test_cap = 64 * 1024;
    s.len = w.len = 0;
    add_frame(&s, &w, 3, 'k');
    add_frame(&s, &w, 10u << 20, 'l');
    add_frame(&s, &w, 4, 'm');
    size_t cuts64[200];
    for (int k = 0; k < 200; k++)
        cuts64[k] = 64 * 1024;
    struct tstr got = {0};
    struct feed_stats st = {0};
    feed(&ops, s.p, s.len, cuts64, 200, test_cap, 0, &got, &st);
    int same = got.len == w.len && memcmp(got.p, w.p, w.len) == 0;
    if (!same)
        t_show_diff("10 MiB", &got, &w);
    t_check(same && st.high <= test_cap && st.copied <= 2 * LENFRAME_HEADER,
            "10 MiB frame in 64 KiB reads through a 64 KiB buffer: every byte right (%s), "
            "buffer high-water %zu bytes, %llu bytes copied, %llu pieces",
            same ? "yes" : "no", st.high, st.copied, st.pieces);
    check_splits_n("10 MiB frame, random splits, 64 KiB buffer", &ops, s.p, s.len, w.p, w.len,
                   test_cap, 0, 4);

    // 6. Small frames back to back in 64 KiB reads: each byte copied at most once (only a
    // frame cut by the end of a read is moved, to the front of the buffer).
    s.len = w.len = 0;
    for (int i = 0; i < 20000; i++)
        add_frame(&s, &w, (uint32_t)(i % 300), (char)i);
    got.len = 0;
    st = (struct feed_stats){0};
    feed(&ops, s.p, s.len, cuts64, 200, test_cap, 0, &got, &st);
    same = got.len == w.len && memcmp(got.p, w.p, w.len) == 0;
    t_check(same && st.copied <= s.len,
            "%llu small frames (%zu bytes) in 64 KiB reads: right (%s), %llu bytes copied "
            "(%.4f per byte, want <= 1), 0 pieces (%llu)",
            st.frames, s.len, same ? "yes" : "no", st.copied, (double)st.copied / (double)s.len,
            st.pieces);

    // 7. The encoders.
    char out[16];
    unsigned char hdr[LENFRAME_HEADER];
    struct iovec iov[2];
    size_t n1 = lenframe_encode(out, sizeof out, "abc", 3);
    size_t n2 = lenframe_encode(out, 6, "abc", 3);
    lenframe_iov(iov, hdr, "abc", 3);
    lenframe_header(hdr + 0, 0x01020304u);
    t_check(n1 == 7 && memcmp(out, "\0\0\0\3abc", 7) == 0 && n2 == 7 &&
                iov[0].iov_len == 4 && iov[1].iov_len == 3 && iov[0].iov_base == hdr &&
                memcmp(hdr, "\1\2\3\4", 4) == 0,
            "lenframe_encode/_iov/_header: a big-endian header, then the body");

    ts_free(&s);
    ts_free(&w);
    ts_free(&got);
    return t_done();
}
