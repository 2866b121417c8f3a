// binio_test.c: the binary reader and writer (binio.h): the exact bytes of each width in
// network order, a round trip, a message read from every truncation of itself (the sticky
// error set exactly when bytes are missing, the values before it unchanged, nothing read out
// of bounds: the message sits in a block of exactly its size, so ASan sees any overread),
// hostile string lengths, and a writer that runs out of room.
// A test binary (make binio_test; test.bats runs it): "ok N - ..." lines, exit 1 on failure.
#include "binio.h"
#include "test_util.h"

#include <stdint.h>

// The test message: every kind of field once.
static void write_msg(struct binio_writer *w)
{
    bw_u8(w, 0xA1);
    bw_u16(w, 0xB1B2);
    bw_u32(w, 0xC1C2C3C4u);
    bw_u64(w, 0xD1D2D3D4D5D6D7D8ull);
    bw_str(w, "hello", 5);
    bw_bytes(w, "\0\1\2", 3);
    bw_str(w, "", 0);
}

static const unsigned char msg_bytes[] = {
    0xA1,                                            // u8
    0xB1, 0xB2,                                      // u16, most significant byte first
    0xC1, 0xC2, 0xC3, 0xC4,                          // u32
    0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8,  // u64
    0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o',             // str: u32 length, bytes
    0, 1, 2,                                         // 3 raw bytes
    0, 0, 0, 0,                                      // an empty str
};

// Reads the message back field by field into V (0 / empty where a read failed). Returns
// how many fields read successfully before the first failure (9 if none failed).
struct msg {
    uint8_t a;
    uint16_t b;
    uint32_t c;
    uint64_t d;
    const void *s;
    size_t slen;
    const void *raw;
    const void *e;
    size_t elen;
};

static int read_msg(struct binio_reader *r, struct msg *m)
{
    int ok = 0;
    m->a = br_u8(r);
    ok += br_ok(r);
    m->b = br_u16(r);
    ok += br_ok(r);
    m->c = br_u32(r);
    ok += br_ok(r);
    m->d = br_u64(r);
    ok += br_ok(r);
    m->s = br_str(r, &m->slen);
    ok += br_ok(r);
    m->raw = br_bytes(r, 3);
    ok += br_ok(r);
    m->e = br_str(r, &m->elen);
    ok += br_ok(r);
    return ok;
}

int main(void)
{
    // 1. The writer's bytes are exactly the network-order layout.
    unsigned char buf[64];
    struct binio_writer w;
    bw_init(&w, buf, sizeof buf);
    write_msg(&w);
    t_check(bw_ok(&w) && w.len == sizeof msg_bytes && memcmp(buf, msg_bytes, w.len) == 0,
            "the writer lays out u8/u16/u32/u64/str/bytes big-endian (%zu bytes)", w.len);

    // 2. The reader gets every value back from those bytes.
    unsigned char *exact = t_alloc(sizeof msg_bytes);
    memcpy(exact, msg_bytes, sizeof msg_bytes);
    struct binio_reader r;
    struct msg m;
    br_init(&r, exact, sizeof msg_bytes);
    int fields = read_msg(&r, &m);
    t_check(fields == 7 && br_ok(&r) && m.a == 0xA1 && m.b == 0xB1B2 && m.c == 0xC1C2C3C4u &&
                m.d == 0xD1D2D3D4D5D6D7D8ull && m.slen == 5 && memcmp(m.s, "hello", 5) == 0 &&
                memcmp(m.raw, "\0\1\2", 3) == 0 && m.elen == 0 && br_remaining(&r) == 0,
            "the reader reads each width in network order (u32 0x%08x, u64 0x%016llx)",
            (unsigned)m.c, (unsigned long long)m.d);
    free(exact);

    // 3. Every truncation: a message cut after k bytes sets the error iff k < its length,
    // and a field is read right exactly when all its bytes are there. Each prefix lives in a
    // block of exactly k bytes: one byte of overread is an ASan report.
    static const size_t field_end[7] = {1, 3, 7, 15, 24, 27, 31};
    int bad = 0;
    for (size_t k = 0; k <= sizeof msg_bytes; k++) {
        unsigned char *p = t_alloc(k);
        memcpy(p, msg_bytes, k);
        br_init(&r, p, k);
        fields = read_msg(&r, &m);
        int want = 0;
        while (want < 7 && field_end[want] <= k)
            want++;
        int good = fields == want && br_ok(&r) == (k == sizeof msg_bytes);
        // The values read before the error are right; the failed field reads as 0 / NULL.
        if (want >= 3 && m.c != 0xC1C2C3C4u)
            good = 0;
        if (want == 2 && m.c != 0)
            good = 0;
        if (want == 4 && (m.s != NULL || m.slen != 0))
            good = 0;
        if (!br_ok(&r) && br_remaining(&r) != 0)
            good = 0;
        if (!good && bad++ < 3)
            printf("# cut at %zu bytes: %d fields read, want %d, error %d\n", k, fields, want,
                   !br_ok(&r));
        free(p);
    }
    t_check(bad == 0, "a message cut at each of its %zu + 1 lengths: the error exactly when "
                      "bytes are missing, no read past the end", sizeof msg_bytes);

    // 4. The error is sticky: after a failed read, later reads that would fit return 0.
    static const unsigned char two[] = {0x12, 0x34};
    br_init(&r, two, sizeof two);
    uint32_t x = br_u32(&r);
    uint8_t y = br_u8(&r);
    uint16_t z = br_u16(&r);
    t_check(x == 0 && y == 0 && z == 0 && !br_ok(&r),
            "after a failed u32 on 2 bytes, a u8 and a u16 that would fit still read 0");

    // 5. Hostile string lengths: 4 GiB - 1, and one past the bytes there.
    static const unsigned char huge[] = {0xFF, 0xFF, 0xFF, 0xFF, 'a', 'b'};
    static const unsigned char over[] = {0, 0, 0, 3, 'a', 'b'};
    size_t len = 99;
    br_init(&r, huge, sizeof huge);
    const void *s1 = br_str(&r, &len);
    size_t len2 = 99;
    struct binio_reader r2;
    br_init(&r2, over, sizeof over);
    const void *s2 = br_str(&r2, &len2);
    t_check(s1 == NULL && len == 0 && !br_ok(&r) && s2 == NULL && len2 == 0 && !br_ok(&r2),
            "a string length of 4 GiB - 1, or one byte more than there is, is an error");
    t_check(r.pos == r.len && r2.pos == r2.len && br_remaining(&r) == 0 && br_remaining(&r2) == 0,
            "a failed string read leaves pos at the end (binio.h): nothing after it is read");
    br_init(&r, over, sizeof over);
    t_check(br_bytes(&r, (size_t)-1) == NULL && !br_ok(&r),
            "br_bytes(SIZE_MAX) fails without wrapping the bounds check");

    // 6. The writer: out of room is sticky and writes nothing past the capacity.
    unsigned char small[8];
    memset(small, 0xEE, sizeof small);
    bw_init(&w, small, 7);
    bw_u32(&w, 0x01020304u);
    bw_u64(&w, 1);  // needs 8: 3 left
    bw_u8(&w, 9);   // would fit, but the error is sticky
    t_check(!bw_ok(&w) && w.len == 4 && small[4] == 0xEE && small[7] == 0xEE,
            "a writer out of room: the u64 writes nothing, the later u8 neither");
    // Room for its first half but not its second: still nothing written (binio.h: a write that
    // does not fit writes nothing), not 4 bytes of a u64 left behind with err set.
    memset(small, 0xEE, sizeof small);
    bw_init(&w, small, 7);
    bw_u64(&w, 0x0102030405060708ull);  // needs 8: 7 left
    t_check(!bw_ok(&w) && w.len == 0 && small[0] == 0xEE && small[3] == 0xEE,
            "a u64 with room for 7 bytes writes none of them");
    bw_init(&w, small, 7);
    bw_str(&w, "abc", 3);
    bw_str(&w, "abc", 3);  // 7 more would be needed
    t_check(!bw_ok(&w) && w.len == 7 && small[6] == 'c', "bw_str: all of it or nothing");

    // 7. A round trip of random values, each width at its extremes too.
    static const uint64_t edge[] = {0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0xFFFFFFFFull,
                                    0x100000000ull, UINT64_MAX};
    bad = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t v = i < 10 ? edge[i] : t_rand();
        unsigned char b2[15];
        bw_init(&w, b2, sizeof b2);
        bw_u8(&w, (uint8_t)v);
        bw_u16(&w, (uint16_t)v);
        bw_u32(&w, (uint32_t)v);
        bw_u64(&w, v);
        br_init(&r, b2, w.len);
        if (br_u8(&r) != (uint8_t)v || br_u16(&r) != (uint16_t)v ||
            br_u32(&r) != (uint32_t)v || br_u64(&r) != v || !br_ok(&r) || !bw_ok(&w))
            bad++;
    }
    t_check(bad == 0, "1000 values (edges and random) survive a write and a read");
    return t_done();
}
