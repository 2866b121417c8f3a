// common.h: what the example client programs share (heartbeat_client, chat_client,
// simple_client, pingpong_client): the end of their getopt loops (--help, a missing value, an
// unknown option, a stray argument), the connector's backoff options (--retry-ms and
// --retry-max-ms, or in seconds) and their check, connecting with the out-of-memory message,
// and the one stats line a client prints on stdout when it stops. Header-only (static inline),
// like options.h (which it builds on), so that each example stays one .c file.
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H

#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "options.h"
#include "rx.h"

// The usage lines of --retry-ms and --retry-max-ms (the connector's defaults, 100 and 5000).
#define CLI_RETRY_MS_USAGE                                                       \
    "      --retry-ms MS     first wait before reconnecting (default 100)\n"     \
    "      --retry-max-ms MS longest wait (default 5000)\n"

// The cases every client's getopt_long loop (optstring starting with ':') ends with:
// -h/--help prints the usage on stdout and exits 0; a missing value or an unknown option is a
// usage error (exit 2). Call it from `default:` (with 'h' not handled before it).
_Noreturn static inline void cli_opt_other(int ch, char **argv)
{
    if (ch == 'h') {
        if (opt_usage_fn)
            opt_usage_fn(stdout);
        exit(0);
    }
    if (ch == ':')
        opt_fail("missing value for", argv[optind - 1]);
    char short_opt[] = {'-', (char)optopt, '\0'};
    opt_fail("unknown option", optopt ? short_opt : argv[optind - 1]);
}

// After the loop: an argument that is not an option is a usage error.
static inline void cli_opt_end(int argc, char **argv)
{
    if (optind < argc)
        opt_fail("unexpected argument", argv[optind]);
}

// --retry-ms and --retry-max-ms: MS in [1, 86400000] into the connector's options; NAME is
// the option as typed in messages ("--retry-ms"). MAX says which of the two it is.
static inline void cli_retry_ms(rx_connect_opts *o, int max, const char *name, const char *arg)
{
    char what[64];
    snprintf(what, sizeof what, "bad %s (want 1 to 86400000)", name);
    uint64_t ms = opt_uint(arg, 1, 86400000, what);
    if (max)
        o->retry_max_ms = ms;
    else
        o->retry_ms = ms;
}

// The longest wait below the first is a usage error, named with the options as typed.
static inline void cli_retry_check(const rx_connect_opts *o, const char *first, const char *longest)
{
    if (o->retry_max_ms < o->retry_ms) {
        char what[96];
        snprintf(what, sizeof what, "%s below %s", longest, first);
        opt_fail(what, longest);
    }
}

// rx_connect, or NULL after saying "PROG: rx_connect: out of memory" on stderr.
static inline rx_connector *cli_connect(rx_server *srv, const char *host, int port, const rx_codec *codec,
                                        const rx_factory *f, const rx_connect_opts *opts)
{
    rx_connector *c = rx_connect(srv, host, port, codec, f, opts);
    if (!c)
        fprintf(stderr, "%s: rx_connect: out of memory\n", opt_prog);
    return c;
}

// The one line a client prints on stdout when it stops (its counts), flushed at once: a test
// or a script reads it while the process ends. Returns 0, or -1 when stdout failed.
__attribute__((format(printf, 1, 2))) static inline int cli_stats_line(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    return fflush(stdout) == 0 && !ferror(stdout) ? 0 : -1;
}

#endif
