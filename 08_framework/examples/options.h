// options.h: the command line the example programs share: DESIGN.md's server contract (-H,
// -p, --help, a usage error on stderr with exit 2) and the flow-control knobs of rx_config.
// Header-only (static inline) so that each example stays one .c file the Makefile links alone.
#ifndef EXAMPLES_OPTIONS_H
#define EXAMPLES_OPTIONS_H

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rx.h"

// The command name in messages, and the usage text of the program (set by opt_init).
static const char *opt_prog = "example";
static void (*opt_usage_fn)(FILE *to);

static inline void opt_init(const char *prog, void (*usage)(FILE *to))
{
    opt_prog = prog;
    opt_usage_fn = usage;
}

// A bad command line is the user's mistake, not a crash: say what, show the usage on stderr
// and exit 2 (the usual status of a usage error). Nothing goes to stdout.
_Noreturn static inline void opt_fail(const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s '%s'\n", opt_prog, what, arg);
    if (opt_usage_fn)
        opt_usage_fn(stderr);
    exit(2);
}

// A program's own options (the gateway's backend ports, chat_server's --redis), taken out of
// ARGV before server_opts_parse sees the rest: `NAME VALUE` or `NAME=VALUE`, or `NAME` alone
// for a flag (VALUE false). TAKE gets the entry's index in OWN and its value (NULL for a flag);
// everything else, and all after `--`, stays in order for the shared parser. Returns the new
// argc (ARGV[argc] is NULL). A value missing at the end is a usage error.
struct opt_own {
    const char *name;
    int value;  // takes a value
};

static inline int opt_take_own(int argc, char **argv, const struct opt_own *own, size_t n,
                               void (*take)(size_t k, const char *value))
{
    int out = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (strcmp(a, "--") == 0) {
            while (i < argc)
                argv[out++] = argv[i++];
            break;
        }
        size_t k;
        for (k = 0; k < n; k++) {
            size_t l = strlen(own[k].name);
            if (strncmp(a, own[k].name, l) == 0 && (a[l] == '\0' || (own[k].value && a[l] == '='))) {
                v = a[l] == '=' ? a + l + 1 : NULL;
                break;
            }
        }
        if (k == n) {
            argv[out++] = argv[i];
            continue;
        }
        if (own[k].value && v == NULL) {
            if (i + 1 >= argc)
                opt_fail("missing value for", a);
            v = argv[++i];
        }
        take(k, v);
    }
    argv[out] = NULL;
    return out;
}

// ARG as a whole number in [MIN, MAX], or a usage error saying WHAT. Strict: a digit first
// (strtoull would skip spaces and read "-1" as a huge number), nothing after the digits.
static inline uint64_t opt_uint(const char *arg, uint64_t min, uint64_t max, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (arg[0] < '0' || arg[0] > '9' || errno != 0 || *end != '\0' || v < min || v > max)
        opt_fail(what, arg);
    return (uint64_t)v;
}

// ARG as seconds (fractions allowed) in milliseconds: 0 (ALLOW_ZERO: "never"), or 0.001 to a
// year. Digits and a point only: strtod would also take " 5", "inf", "nan", "1e3" and the hex
// float "0x10".
static inline uint64_t opt_seconds_ms(const char *arg, int allow_zero, const char *what)
{
    char *end;
    errno = 0;
    double sec = strtod(arg, &end);
    if (arg[0] < '0' || arg[0] > '9' || arg[strspn(arg, "0123456789.")] != '\0' || errno != 0 ||
        *end != '\0')
        opt_fail(what, arg);
    if (sec == 0 && allow_zero)
        return 0;
    if (!(sec >= 0.001 && sec <= 365.0 * 86400))
        opt_fail(what, arg);
    return (uint64_t)(sec * 1000 + 0.5);
}

// The options every example server takes; --max-frame and --high-water only where WANT says.
enum { WANT_MAX_FRAME = 1, WANT_HIGH_WATER = 2 };
struct server_opts {
    const char *host;
    int port;
    rx_config cfg;
    size_t max_frame;
};

enum {
    OPT_MAX_OUTPUT = 256,
    OPT_SOFT_OUTPUT,
    OPT_SOFT_SECONDS,
    OPT_IDLE_TIMEOUT,
    OPT_DRAIN_MS,
    OPT_MAX_FRAME,
    OPT_HIGH_WATER,
};

// The options' help, for the usage texts of the servers.
#define SERVER_OPTS_HELP                                                                        \
    "  -H, --host HOST       address to listen on (default 127.0.0.1)\n"                         \
    "  -p, --port PORT       TCP port, 0 = any free port\n"                                      \
    "  -t, --threads N       io threads, 0 to 64 (default 0: the main loop does the I/O)\n"      \
    "      --max-output BYTES   hard cap: more than BYTES still queued after a write drops\n"     \
    "                        the session as too slow (0 = none; default 64 MiB)\n"               \
    "      --soft-output BYTES  soft cap: more than BYTES queued ...\n"                          \
    "      --soft-seconds S     ... for S seconds drops it (0 = no soft cap; default 8 MiB\n"    \
    "                        for 10 s)\n"                                                        \
    "      --idle-timeout S     close a session that sends nothing for S seconds (0 = never,\n"  \
    "                        the default; fractions allowed)\n"                                  \
    "      --drain-ms MS        how long a closing session's output, and the shutdown, may\n"    \
    "                        take (0 to 60000; default 1500)\n"                                  \
    "  -h, --help            print this help and exit\n"

// Parses the server options into O (defaults: DEFAULT_PORT, rx_config_default()); exits 0
// after --help and 2 on a usage error. WANT: the optional options this program takes.
static inline void server_opts_parse(int argc, char **argv, int default_port, unsigned want,
                                     struct server_opts *o)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"max-output", required_argument, NULL, OPT_MAX_OUTPUT},
        {"soft-output", required_argument, NULL, OPT_SOFT_OUTPUT},
        {"soft-seconds", required_argument, NULL, OPT_SOFT_SECONDS},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"drain-ms", required_argument, NULL, OPT_DRAIN_MS},
        {"max-frame", required_argument, NULL, OPT_MAX_FRAME},
        {"high-water", required_argument, NULL, OPT_HIGH_WATER},
        {NULL, 0, NULL, 0},
    };
    o->host = "127.0.0.1";
    o->port = default_port;
    o->cfg = rx_config_default();
    o->max_frame = 1u << 20;
    if (want & WANT_HIGH_WATER)
        o->cfg.high_water = 1u << 20;  // back-pressure from 1 MiB queued (--high-water)
    // The leading ':' and opterr = 0: we print the errors ourselves.
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":H:p:t:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'H':
            o->host = optarg;
            break;
        case 'p':
            o->port = (int)opt_uint(optarg, 0, 65535, "bad port (want 0 to 65535)");
            break;
        case 't':
            o->cfg.io_threads = (int)opt_uint(optarg, 0, 64, "bad thread count (want 0 to 64)");
            break;
        case OPT_MAX_OUTPUT:
            // SIZE_MAX / 4: sums of sizes stay far from overflow.
            o->cfg.max_output = opt_uint(optarg, 0, SIZE_MAX / 4, "bad --max-output (want bytes)");
            break;
        case OPT_SOFT_OUTPUT:
            o->cfg.soft_output = opt_uint(optarg, 0, SIZE_MAX / 4, "bad --soft-output (want bytes)");
            break;
        case OPT_SOFT_SECONDS:
            o->cfg.soft_ms = opt_seconds_ms(optarg, 1, "bad --soft-seconds (want 0, or 0.001 to 31536000)");
            break;
        case OPT_IDLE_TIMEOUT:
            o->cfg.idle_ms = opt_seconds_ms(optarg, 1, "bad --idle-timeout (want 0, or 0.001 to 31536000)");
            break;
        case OPT_DRAIN_MS:
            o->cfg.drain_ms = opt_uint(optarg, 0, 60000, "bad --drain-ms (want 0 to 60000)");
            break;
        case OPT_MAX_FRAME:
            if (!(want & WANT_MAX_FRAME))
                opt_fail("unknown option", "--max-frame");
            // The length field is 32 bits.
            o->max_frame = opt_uint(optarg, 1, UINT32_MAX, "bad --max-frame (want 1 to 4294967295)");
            break;
        case OPT_HIGH_WATER:
            if (!(want & WANT_HIGH_WATER))
                opt_fail("unknown option", "--high-water");
            o->cfg.high_water = opt_uint(optarg, 0, SIZE_MAX / 4, "bad --high-water (want bytes)");
            break;
        case 'h':
            opt_usage_fn(stdout);
            exit(0);
        case ':':
            opt_fail("missing value for", argv[optind - 1]);
        default: {
            // optopt holds an unknown short option; for a long one it is 0 and the offending
            // word is the one getopt_long just passed.
            char short_opt[] = {'-', (char)optopt, '\0'};
            opt_fail("unknown option", optopt ? short_opt : argv[optind - 1]);
        }
        }
    }
    if (optind < argc)
        opt_fail("unexpected argument", argv[optind]);
}

// Prints the contract's one stdout line, `listening on HOST:PORT` (brackets around an IPv6
// address), and flushes it: the harness waits for it.
static inline void print_listening(const char *host, int port)
{
    if (strchr(host, ':'))
        printf("listening on [%s]:%d\n", host, port);
    else
        printf("listening on %s:%d\n", host, port);
    fflush(stdout);
}

#endif
