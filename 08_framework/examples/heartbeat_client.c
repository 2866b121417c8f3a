// heartbeat_client.c: the other side of heartbeat_server on the rx connector: PINGs every
// --interval and answers the server's, closes a server that leaves 3 PINGs in a row without a
// PONG, sends DATA and checks every byte of every echo, reconnects with backoff, and counts.

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heartbeat.h"
#include "common.h"
#include "options.h"
#include "rx.h"

// One connection at a time (one connector): its state is reset by each `opened`.
struct conn {
    struct hb_peer hb;
    rx_timer *data_timer;  // repeating, every --data-ms; stopped in `closed`
    uint64_t data_sent;    // DATA sent on this connection (numbered from 1)
    uint64_t data_echoed;  // echoes received on it
};

static struct {
    rx_server *srv;
    rx_connector *connector;
    rx_connect_opts opts;
    const char *host;
    int port;
    int threads;
    uint64_t interval_ms;
    const char *text;      // DATA body after its number (NULL: no DATA)
    uint64_t data_ms;
    uint64_t count;        // exit once this many echoes came (0: run until a signal)
    char *body, *want;     // scratch: a DATA body sent, the echo wanted
    size_t body_max;
    struct conn conn;
    struct hb_counts counts;
    uint64_t connects, errors;
} app;

// DATA number N of a connection: "N TEXT". Its echo is recomputed from N and checked whole.
static size_t data_body(char *buf, uint64_t n)
{
    return (size_t)snprintf(buf, app.body_max, "%" PRIu64 " %s", n, app.text);
}

static void on_data_tick(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    struct conn *c = arg;
    if (rx_session_closing(c->hb.s))
        return;
    size_t len = data_body(app.body, c->data_sent + 1);
    if (hb_send(&c->hb, HB_DATA, app.body, len) == 0)
        c->data_sent++;
}

static void data_echo(struct conn *c, const rx_frame *f)
{
    if (c->data_echoed == c->data_sent) {
        rx_log(RX_LOG_ERROR, "a DATA of %zu bytes with none in flight", f->len);
        app.errors++;
        return;
    }
    uint64_t n = ++c->data_echoed;
    size_t len = data_body(app.want, n);
    if (f->len != len || memcmp(f->data, app.want, len) != 0) {
        size_t off = 0;
        while (off < len && off < f->len && f->data[off] == app.want[off])
            off++;
        rx_log(RX_LOG_ERROR, "DATA echo %" PRIu64 " differs at offset %zu (%zu bytes, want %zu)", n, off,
               f->len, len);
        app.errors++;
    }
    if (app.count && app.counts.in[HB_DATA] >= app.count)
        rx_server_stop(app.srv);
}

// ------------------------------------------------------------------ callbacks (main thread)

static void *on_create(void *arg, rx_session *s)
{
    (void)arg;
    (void)s;
    return &app.conn;
}

static void on_opened(rx_session *s)
{
    struct conn *c = &app.conn;
    *c = (struct conn){0};
    app.connects++;
    rx_log(RX_LOG_INFO, "connected to %s (session %" PRIu64 ")", rx_session_peer(s), rx_session_id(s));
    rx_loop *loop = rx_server_loop(app.srv);
    if (hb_start(&c->hb, s, loop, app.interval_ms, &app.counts) != 0)
        return;
    if (app.text) {
        c->data_timer = rx_timer_start(loop, app.data_ms, app.data_ms, on_data_tick, c);
        if (!c->data_timer) {
            rx_log(RX_LOG_ERROR, "out of memory for the DATA timer: closing");
            rx_session_close(s, false);
        }
    }
}

static void on_message(rx_session *s, const rx_frame *f)
{
    struct conn *c = rx_session_data(s);
    if (hb_message(&c->hb, f))
        data_echo(c, f);
}

// The connector reconnects by itself (it logs "reconnecting in N ms") unless we are stopping.
static void on_closed(rx_session *s, enum rx_close_reason why)
{
    struct conn *c = rx_session_data(s);
    hb_stop(&c->hb);
    if (c->data_timer) {
        rx_timer_stop(rx_server_loop(app.srv), c->data_timer);
        c->data_timer = NULL;
    }
    rx_log(RX_LOG_INFO, "disconnected: %s", rx_close_reason_name(why));
}

// ------------------------------------------------------------------------------ main

static void usage(FILE *to)
{
    fprintf(to,
            "usage: heartbeat_client -p PORT [-H HOST] [-t N] [--interval MS] [--data TEXT]\n"
            "                        [--data-ms MS] [--count N] [--retry-ms MS] [--retry-max-ms MS]\n"
            "Connects to a heartbeat_server: sends a PING every --interval and answers the\n"
            "server's PINGs; 3 PINGs in a row without a PONG close the connection. With --data\n"
            "it sends DATA \"N TEXT\" every --data-ms and checks each echo byte for byte. When the\n"
            "connection goes it reconnects, waiting a random [D/2, D] with D doubling from\n"
            "--retry-ms to --retry-max-ms. On exit (SIGINT, SIGTERM, --count) it prints\n"
            "  heartbeat_client: connects C; sent ping P, pong Q, data D; received ping P,\n"
            "  pong Q, data D; timeouts T, bad frames B, errors E\n"
            "(one line) and exits 0, or 1 when an echo was wrong (errors > 0).\n"
            "  -H, --host HOST       server address (default 127.0.0.1)\n"
            "  -p, --port PORT       server port, 1 to 65535 (required)\n"
            "  -t, --threads N       io threads, 0 to 64 (default 0)\n"
            "      --interval MS     between two PINGs, 1 to 86400000 (default 10000)\n"
            "      --data TEXT       send DATA frames \"N TEXT\" (N counts from 1 on each connection)\n"
            "      --data-ms MS      between two DATA frames, 1 to 86400000 (default 1000)\n"
            "      --count N         exit once N DATA echoes have come (default: never)\n"
            CLI_RETRY_MS_USAGE
            "  -h, --help            print this help and exit\n");
}

enum { OPT_INTERVAL = 300, OPT_DATA, OPT_DATA_MS, OPT_COUNT, OPT_RETRY, OPT_RETRY_MAX };

static void parse(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"data", required_argument, NULL, OPT_DATA},
        {"data-ms", required_argument, NULL, OPT_DATA_MS},
        {"count", required_argument, NULL, OPT_COUNT},
        {"retry-ms", required_argument, NULL, OPT_RETRY},
        {"retry-max-ms", required_argument, NULL, OPT_RETRY_MAX},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":H:p:t:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H': app.host = optarg; break;
        case 'p': app.port = (int)opt_uint(optarg, 1, 65535, "bad port (want 1 to 65535)"); break;
        case 't': app.threads = (int)opt_uint(optarg, 0, 64, "bad thread count (want 0 to 64)"); break;
        case OPT_INTERVAL: app.interval_ms = opt_uint(optarg, 1, 86400000, "bad --interval (want 1 to 86400000 ms)"); break;
        case OPT_DATA:
            if (strlen(optarg) > 65536)
                opt_fail("bad --data (want at most 65536 bytes)", "...");
            app.text = optarg;
            break;
        case OPT_DATA_MS: app.data_ms = opt_uint(optarg, 1, 86400000, "bad --data-ms (want 1 to 86400000 ms)"); break;
        case OPT_COUNT: app.count = opt_uint(optarg, 1, UINT32_MAX, "bad --count (want 1 to 4294967295)"); break;
        case OPT_RETRY: cli_retry_ms(&app.opts, 0, "--retry-ms", optarg); break;
        case OPT_RETRY_MAX: cli_retry_ms(&app.opts, 1, "--retry-max-ms", optarg); break;
        default: cli_opt_other(ch, argv);  // -h, a missing value, an unknown option
        }
    }
    cli_opt_end(argc, argv);
    if (!app.port)
        opt_fail("missing", "-p PORT");
    if (app.count && !app.text)
        opt_fail("--count needs --data", "--count");
    cli_retry_check(&app.opts, "--retry-ms", "--retry-max-ms");
}

int main(int argc, char **argv)
{
    app.host = "127.0.0.1";
    app.interval_ms = 10000;
    app.data_ms = 1000;
    app.opts = rx_connect_opts_default();
    opt_init("heartbeat_client", usage);
    parse(argc, argv);

    rx_thread_set_name("main");
    app.body_max = (app.text ? strlen(app.text) : 0) + 24;  // "N " with N up to 20 digits
    app.body = malloc(app.body_max);
    app.want = malloc(app.body_max);
    if (!app.body || !app.want) {
        fprintf(stderr, "heartbeat_client: out of memory\n");
        return 1;
    }
    rx_config cfg = rx_config_default();
    cfg.io_threads = app.threads;
    app.srv = rx_server_new(&cfg);
    if (!app.srv)
        return 1;
    rx_codec hdr = rx_codec_hdr(app.body_max);  // nothing longer is ours: a bad frame
    rx_factory f = {.create = on_create, .opened = on_opened, .message = on_message,
                    .closed = on_closed};
    app.connector = cli_connect(app.srv, app.host, app.port, &hdr, &f, &app.opts);
    if (!app.connector) {
        rx_server_free(app.srv);
        return 1;
    }
    int rc = rx_server_run(app.srv);
    rx_connector_free(app.connector);
    rx_server_free(app.srv);
    cli_stats_line("heartbeat_client: connects %" PRIu64 "; sent ping %" PRIu64 ", pong %" PRIu64
                   ", data %" PRIu64 "; received ping %" PRIu64 ", pong %" PRIu64 ", data %" PRIu64
                   "; timeouts %" PRIu64 ", bad frames %" PRIu64 ", errors %" PRIu64,
                   app.connects, app.counts.out[HB_PING], app.counts.out[HB_PONG], app.counts.out[HB_DATA],
                   app.counts.in[HB_PING], app.counts.in[HB_PONG], app.counts.in[HB_DATA], app.counts.timeouts,
                   app.counts.bad_frames, app.errors);
    free(app.body);
    free(app.want);
    return rc != 0 || app.errors ? 1 : 0;
}
