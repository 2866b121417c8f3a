// fuzz_binio.c: libFuzzer target for the binary reader and writer (binio.h). The first two
// bytes are a schema (8 fields of 2 bits: u8, u16, u32 or u64, a str every time the u64
// would follow a u64), the third a cut point; the rest is the message. Checks, beyond "no
// crash and no out-of-bounds read" (the message sits in a block of its exact size):
//  1. cut: reading the message from its first k bytes gives the same values as reading it
//     whole, for every field whose bytes all lie before k; the error is set exactly when the
//     whole read needed more than k bytes;
//  2. round trip: writing the values read gives back exactly the bytes they were read from.
#include "../binio.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { F_U8, F_U16, F_U32, F_U64, F_STR };

struct field {
    int kind;
    uint64_t v;
    const unsigned char *s;
    size_t slen;
    size_t end;  // reader position after the field (valid while no error)
    int ok;
};

static void read_fields(const unsigned char *p, size_t n, const int *kinds, struct field *f,
                        size_t *pos, int *err)
{
    struct binio_reader r;
    br_init(&r, p, n);
    for (int i = 0; i < 8; i++) {
        f[i].kind = kinds[i];
        f[i].s = NULL;
        f[i].slen = 0;
        switch (kinds[i]) {
        case F_U8: f[i].v = br_u8(&r); break;
        case F_U16: f[i].v = br_u16(&r); break;
        case F_U32: f[i].v = br_u32(&r); break;
        case F_U64: f[i].v = br_u64(&r); break;
        default: f[i].v = 0; f[i].s = br_str(&r, &f[i].slen); break;
        }
        f[i].ok = br_ok(&r);
        f[i].end = r.pos;
        if (!f[i].ok && (f[i].v != 0 || f[i].s != NULL || f[i].slen != 0))
            abort();  // a failed read must return 0 / NULL
    }
    *pos = r.pos;
    *err = !br_ok(&r);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 3)
        return 0;
    int kinds[8];
    unsigned schema = (unsigned)data[0] << 8 | data[1];
    for (int i = 0; i < 8; i++) {
        kinds[i] = (schema >> (2 * i)) & 3;
        if (i > 0 && kinds[i] == F_U64 && kinds[i - 1] == F_U64)
            kinds[i] = F_STR;
    }
    size_t n = size - 3;
    unsigned char *msg = malloc(n == 0 ? 1 : n);
    if (msg == NULL)
        return 0;
    memcpy(msg, data + 3, n);

    struct field whole[8], part[8];
    size_t pos, ppos;
    int err, perr;
    read_fields(msg, n, kinds, whole, &pos, &err);

    // 1. A cut at k: the exact-size prefix in its own block.
    size_t k = n == 0 ? 0 : data[2] % (n + 1);
    unsigned char *pre = malloc(k == 0 ? 1 : k);
    if (pre == NULL) {
        free(msg);
        return 0;
    }
    memcpy(pre, msg, k);
    read_fields(pre, k, kinds, part, &ppos, &perr);
    for (int i = 0; i < 8; i++) {
        int fits = whole[i].ok && whole[i].end <= k;
        if (fits != part[i].ok)
            abort();  // a field is readable from the prefix exactly when all its bytes are in it
        if (fits && (part[i].v != whole[i].v || part[i].slen != whole[i].slen ||
                     (whole[i].slen > 0 && memcmp(part[i].s, whole[i].s, whole[i].slen) != 0)))
            abort();
    }
    if (perr != (err || pos > k))
        abort();

    // 2. Round trip: the fields read without error, written again, are the bytes they came from.
    unsigned char *out = malloc(n == 0 ? 1 : n);
    if (out != NULL) {
        struct binio_writer w;
        bw_init(&w, out, n);
        size_t upto = 0;
        for (int i = 0; i < 8 && whole[i].ok; i++) {
            switch (whole[i].kind) {
            case F_U8: bw_u8(&w, (uint8_t)whole[i].v); break;
            case F_U16: bw_u16(&w, (uint16_t)whole[i].v); break;
            case F_U32: bw_u32(&w, (uint32_t)whole[i].v); break;
            case F_U64: bw_u64(&w, whole[i].v); break;
            default: bw_str(&w, whole[i].s, whole[i].slen); break;
            }
            upto = whole[i].end;
        }
        if (!bw_ok(&w) || w.len != upto || memcmp(out, msg, upto) != 0)
            abort();
        free(out);
    }
    free(pre);
    free(msg);
    return 0;
}
