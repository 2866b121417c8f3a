// codec_bench.c: the codec micro-benchmark (make bench). Feeds each decoder 64 MiB of
// back-to-back frames in 64 KiB reads through a compacting input buffer, as a server does,
// and prints per decoder: MB/s, bytes copied per input byte (the buffer's compactions: the
// decoders themselves copy nothing), and allocations per frame (every malloc/calloc/realloc
// made while decoding, counted by the linker wrappers below). A bare memchr pass over the
// line decoder's data is the reference for it (the target: within 2x): the two alternate,
// LINE_ROUNDS rounds of the decoder then memchr, and the ratio printed is the median of the
// rounds' own ratios, so that load on the machine lands on both sides alike.
//
//   codec_bench [--mib N] [--out FILE]     N MiB per decoder (default 64); FILE: markdown
#include "binio.h"
#include "fixed.h"
#include "http.h"
#include "lenframe.h"
#include "line.h"
#include "resp.h"
#include "test_util.h"

#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <sys/utsname.h>

#define READ_SIZE (64 * 1024)  // a server's read, and its input buffer
#define LINE_ROUNDS 9          // rounds of line decoder, then memchr (main): odd, for a median

// ---- counting every allocation (the Makefile links with -Wl,--wrap=malloc,...) ----

static unsigned long long bench_allocs;

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t k);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t k);
void *__wrap_realloc(void *p, size_t n);

void *__wrap_malloc(size_t n)
{
    bench_allocs++;
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t k)
{
    bench_allocs++;
    return __real_calloc(n, k);
}

void *__wrap_realloc(void *p, size_t n)
{
    bench_allocs++;
    return __real_realloc(p, n);
}

// ---- the streams: a block of whole frames, repeated up to the size ----

// Appends frame I of codec KIND to S.
enum kind { K_FIXED, K_LINE, K_LEN, K_LEN_BIG, K_RESP, K_HTTP, K_KINDS };

static const char *kind_name[K_KINDS] = {
    "fixed:64", "line (9..128 B lines)", "len (48..524 B frames)", "len (1 MiB frames, in pieces)",
    "resp (SET k v)", "http (GET heads)",
};

static void add_frame(struct tstr *s, enum kind k, unsigned i)
{
    char body[1024];
    size_t n = 8 + (i * 7919u) % 120;  // line and len: varied sizes
    for (size_t j = 0; j < sizeof body; j++)
        body[j] = (char)('a' + (i + j) % 26);
    switch (k) {
    case K_FIXED:
        ts_add(s, body, 64);
        break;
    case K_LINE:
        ts_add(s, body, n);
        ts_add(s, "\n", 1);
        break;
    case K_LEN: {
        unsigned char hdr[LENFRAME_HEADER];
        uint32_t len = (uint32_t)(n * 4 + 16);
        lenframe_header(hdr, len);
        ts_add(s, hdr, sizeof hdr);
        for (uint32_t j = 0; j < len; j += (uint32_t)sizeof body)
            ts_add(s, body, len - j < sizeof body ? len - j : sizeof body);
        break;
    }
    case K_LEN_BIG: {
        unsigned char hdr[LENFRAME_HEADER];
        uint32_t len = 1u << 20;
        lenframe_header(hdr, len);
        ts_add(s, hdr, sizeof hdr);
        for (uint32_t j = 0; j < len; j += (uint32_t)sizeof body)
            ts_add(s, body, sizeof body);
        break;
    }
    case K_RESP:
        ts_printf(s, "*3\r\n$3\r\nSET\r\n$%u\r\nkey:%05u\r\n$%zu\r\n", 9u, i % 100000, n);
        ts_add(s, body, n);
        ts_add(s, "\r\n", 2);
        break;
    case K_HTTP:
        ts_printf(s, "GET /item/%u HTTP/1.1\r\nHost: localhost:7006\r\nUser-Agent: bench/1.0\r\n"
                     "Accept: */*\r\nConnection: keep-alive\r\n\r\n", i);
        break;
    default:
        break;
    }
}

// A stream of about MIB MiB: a block of frames (about 1 MiB) repeated.
static void make_stream(struct tstr *s, enum kind k, size_t mib)
{
    struct tstr block = {0};
    for (unsigned i = 0; block.len < ((size_t)1 << 20); i++)
        add_frame(&block, k, i);
    while (s->len < (mib << 20))
        ts_add(s, block.p, block.len);
    ts_free(&block);
}

// ---- the decoders behind one interface ----

struct bench_dec {
    struct fixed_decoder fixed;
    struct line_decoder line;
    struct lenframe_decoder len;
    struct resp_decoder resp;
    struct http_decoder http;
};

static void dec_init(struct bench_dec *d, enum kind k)
{
    switch (k) {
    case K_FIXED: fixed_init(&d->fixed, 64); break;
    case K_LINE: line_init(&d->line, 0); break;
    case K_LEN:
    case K_LEN_BIG: lenframe_init(&d->len, 0, READ_SIZE - LENFRAME_HEADER); break;
    case K_RESP: resp_init(&d->resp, 0, 0); break;
    case K_HTTP: http_init(&d->http, 0, 0, 0); break;
    default: break;
    }
}

static struct codec_result dec_decode(struct bench_dec *d, enum kind k, const char *p, size_t n)
{
    switch (k) {
    case K_FIXED: return fixed_decode(&d->fixed, p, n);
    case K_LINE: return line_decode(&d->line, p, n);
    case K_LEN:
    case K_LEN_BIG: return lenframe_decode(&d->len, p, n);
    case K_RESP: return resp_decode(&d->resp, p, n);
    default: return http_decode(&d->http, p, n);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct result {
    double mbs;                    // best of 3 runs (line: of LINE_ROUNDS)
    unsigned long long frames;     // frames (a piece sequence counts once) per run
    unsigned long long copied;     // bytes the buffer's compactions moved, per run
    unsigned long long allocs;     // allocations while decoding, per run
    unsigned long long checksum;   // sum of frame lengths (so nothing is optimised away)
    int failed;
};

// One run: the stream in READ_SIZE reads through a READ_SIZE buffer (a server's loop).
static void run_once(enum kind k, const struct tstr *s, struct result *r, double *secs)
{
    struct bench_dec d;
    struct inbuf b;
    inbuf_init(&b, READ_SIZE, 0);
    dec_init(&d, k);
    unsigned long long allocs0 = bench_allocs;
    unsigned long long frames = 0, sum = 0;
    double t0 = now_s();
    size_t off = 0;
    while (off < s->len && !r->failed) {
        size_t want = s->len - off < READ_SIZE ? s->len - off : READ_SIZE;
        off += inbuf_append(&b, s->p + off, want);
        for (;;) {
            struct codec_result c = dec_decode(&d, k, inbuf_peek(&b), inbuf_len(&b));
            if (c.status == CODEC_NEED_MORE)
                break;
            if (c.status == CODEC_ERROR) {
                fprintf(stderr, "codec_bench: %s: error %s\n", kind_name[k], c.error);
                r->failed = 1;
                break;
            }
            sum += c.len;
            if (c.status == CODEC_FRAME || (c.flags & CODEC_PIECE_END))
                frames += !(k == K_HTTP && c.status == CODEC_PIECE);
            inbuf_drop(&b, c.consumed);
        }
    }
    *secs = now_s() - t0;
    r->allocs = bench_allocs - allocs0;
    r->frames = frames;
    r->copied = b.copied;
    r->checksum = sum;
    if (k == K_RESP)
        resp_free(&d.resp);
    inbuf_free(&b);
}

// The reference for the line decoder: memchr over the same bytes, in the same 64 KiB reads
// (copied into BUF, READ_SIZE bytes, as a recv would), counting the '\n's. Returns the seconds.
static double memchr_once(const struct tstr *s, char *buf, unsigned long long *lines)
{
    unsigned long long n = 0;
    double t0 = now_s();
    for (size_t off = 0; off < s->len; off += READ_SIZE) {
        size_t len = s->len - off < READ_SIZE ? s->len - off : READ_SIZE;
        memcpy(buf, s->p + off, len);
        const char *p = buf, *end = buf + len;
        while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
            n++;
            p++;
        }
    }
    *lines = n;
    return now_s() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    size_t mib = 64;
    const char *outpath = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc)
            mib = (size_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            outpath = argv[++i];
        else {
            fprintf(stderr, "usage: codec_bench [--mib N] [--out FILE]\n");
            return 2;
        }
    }
    if (mib == 0)
        mib = 1;

    struct tstr md = {0};
    struct utsname u;
    char cpu[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f != NULL) {
        char line[512];
        while (fgets(line, sizeof line, f) != NULL) {
            char *c = strchr(line, ':');
            if (strncmp(line, "model name", 10) == 0 && c != NULL) {
                snprintf(cpu, sizeof cpu, "%s", c + 2);
                cpu[strcspn(cpu, "\n")] = '\0';
                break;
            }
        }
        fclose(f);
    }
    uname(&u);
    ts_printf(&md, "# Stage 06: codec micro-benchmark (codec_bench)\n\n");
    ts_printf(&md, "Machine: %s, %ld cores online, %s %s %s; compiler: %s%s.\n\n", cpu,
              sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release, u.machine, __VERSION__,
#ifdef __OPTIMIZE__
              ", optimised (make's CFLAGS, -O2 -g by default)"
#else
              ", NOT optimised"
#endif
    );
    ts_printf(&md, "Each decoder gets %zu MiB of back-to-back frames in 64 KiB reads through a "
                   "64 KiB compacting input buffer (test_util.h, struct inbuf), best of 3 runs "
                   "(the line decoder: best of %d, alternated with the memchr reference). "
                   "Copied: bytes moved by the buffer's compactions per input byte (the "
                   "decoders return views and copy nothing). Allocations: every malloc, "
                   "calloc and realloc while decoding (linker wrappers), per frame.\n\n",
              mib, LINE_ROUNDS);
    ts_printf(&md, "| decoder | MB/s | frames | copied per input byte | allocations per frame |\n"
                   "|---|---:|---:|---:|---:|\n");
    printf("%-32s %10s %12s %10s %12s\n", "decoder", "MB/s", "frames", "copied/B", "allocs/frame");

    double line_mbs = 0, ref_mbs = 0, ratio_med = 0, ratio_lo = 0, ratio_hi = 0;
    int failed = 0;
    for (int k = 0; k < K_KINDS; k++) {
        struct tstr s = {0};
        make_stream(&s, (enum kind)k, mib);
        struct result r = {0};
        // The line decoder and its memchr reference alternate, LINE_ROUNDS rounds of one
        // then the other over the same data, so that a burst of load on the machine lands
        // on both alike; the ratio is each round's own, and the median of them is printed.
        int rounds = k == K_LINE ? LINE_ROUNDS : 3;
        double ratios[LINE_ROUNDS];
        char *ref_buf = k == K_LINE ? t_alloc(READ_SIZE) : NULL;
        for (int rep = 0; rep < rounds; rep++) {
            double secs;
            run_once((enum kind)k, &s, &r, &secs);
            double mbs = (double)s.len / 1e6 / secs;
            if (mbs > r.mbs)
                r.mbs = mbs;
            if (k == K_LINE) {
                unsigned long long lines;
                double ref_secs = memchr_once(&s, ref_buf, &lines);
                double ref = (double)s.len / 1e6 / ref_secs;
                if (ref > ref_mbs)
                    ref_mbs = ref;
                ratios[rep] = secs / ref_secs;
                if (lines != r.frames)
                    failed = 1;
            }
        }
        failed |= r.failed;
        double copied = (double)r.copied / (double)s.len;
        double apf = r.frames ? (double)r.allocs / (double)r.frames : 0;
        printf("%-32s %10.0f %12llu %10.4f %12.6f\n", kind_name[k], r.mbs, r.frames, copied, apf);
        ts_printf(&md, "| %s | %.0f | %llu | %.4f | %.6f (%llu in all) |\n", kind_name[k], r.mbs,
                  r.frames, copied, apf, r.allocs);
        if (k == K_LINE) {
            line_mbs = r.mbs;
            qsort(ratios, LINE_ROUNDS, sizeof ratios[0], cmp_double);
            ratio_med = ratios[LINE_ROUNDS / 2];
            ratio_lo = ratios[0];
            ratio_hi = ratios[LINE_ROUNDS - 1];
            free(ref_buf);
        }
        ts_free(&s);
    }
    printf("%-32s %10.0f   (best of %d, alternated with the line decoder's %d runs)\n",
           "memchr over the line data", ref_mbs, LINE_ROUNDS, LINE_ROUNDS);
    printf("line decoder vs a bare memchr pass: %.2fx slower (median of %d rounds, each the line "
           "decoder then memchr over the same data; rounds from %.2fx to %.2fx; best vs best "
           "%.2fx)\n",
           ratio_med, LINE_ROUNDS, ratio_lo, ratio_hi, ref_mbs / line_mbs);
    ts_printf(&md, "| memchr over the line data (reference) | %.0f | | | |\n\n", ref_mbs);
    ts_printf(&md, "Line decoder vs a bare memchr pass: %.2fx slower (target: within 2x): the median "
                   "of %d rounds, each the line decoder then memchr over the same data, back to "
                   "back (rounds from %.2fx to %.2fx; best vs best %.2fx).\n",
              ratio_med, LINE_ROUNDS, ratio_lo, ratio_hi, ref_mbs / line_mbs);
    if (outpath != NULL) {
        FILE *o = fopen(outpath, "w");
        if (o == NULL || fwrite(md.p, 1, md.len, o) != md.len || fclose(o) != 0) {
            perror(outpath);
            return 1;
        }
        printf("written to %s\n", outpath);
    }
    ts_free(&md);
    return failed;
}
