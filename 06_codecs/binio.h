// binio.h: a binary reader and writer over a byte range: explicit-width integers (u8, u16,
// u32, u64) in network byte order (big-endian), and length-prefixed strings (a u32 length,
// then the bytes). Bounds-checked with a sticky error flag: a read past the end (or a write
// past the capacity) sets `err`, and from then on every read returns 0 / NULL and every write
// does nothing, so a caller reads a whole message and checks br_ok() ONCE at the end. No call
// ever touches a byte outside the range. No allocation; not thread-safe (one per message).
#ifndef BINIO_H
#define BINIO_H

#include <stddef.h>
#include <stdint.h>

// A reader over LEN bytes at DATA. It keeps a pointer to DATA: it must not outlive the bytes
// (for a codec frame: use it before the caller drops the frame, codec.h rule 1).
struct binio_reader {
    const unsigned char *data;
    size_t len;   // bytes at data
    size_t pos;   // next byte to read
    int err;      // sticky: set by the first read that did not fit
};

void br_init(struct binio_reader *r, const void *data, size_t len);
uint8_t br_u8(struct binio_reader *r);
uint16_t br_u16(struct binio_reader *r);  // big-endian
uint32_t br_u32(struct binio_reader *r);  // big-endian
uint64_t br_u64(struct binio_reader *r);  // big-endian
// N raw bytes: a view into the reader's data, or NULL (and err set) if fewer remain.
const void *br_bytes(struct binio_reader *r, size_t n);
// A u32 length, then that many bytes: returns a view and sets *LEN, or returns NULL with
// *LEN = 0 (and err set) if the length or the bytes run past the end. A failed read of the
// bytes leaves pos at the end (nothing later can be read either).
const void *br_str(struct binio_reader *r, size_t *len);
// Bytes not yet read (0 after an error).
size_t br_remaining(const struct binio_reader *r);
// 1 while no read has failed, 0 after.
static inline int br_ok(const struct binio_reader *r) { return !r->err; }

// A writer into CAP bytes at BUF (owned by the caller).
struct binio_writer {
    unsigned char *buf;
    size_t cap;   // bytes at buf
    size_t len;   // bytes written so far
    int err;      // sticky: set by the first write that did not fit (it wrote nothing)
};

void bw_init(struct binio_writer *w, void *buf, size_t cap);
void bw_u8(struct binio_writer *w, uint8_t v);
void bw_u16(struct binio_writer *w, uint16_t v);
void bw_u32(struct binio_writer *w, uint32_t v);
void bw_u64(struct binio_writer *w, uint64_t v);
void bw_bytes(struct binio_writer *w, const void *p, size_t n);
// A u32 length then the N bytes at P (err if N > UINT32_MAX or it does not fit).
void bw_str(struct binio_writer *w, const void *p, size_t n);
static inline int bw_ok(const struct binio_writer *w) { return !w->err; }

#endif
