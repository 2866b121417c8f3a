// simple_client.c: an outbound connection on the rx connector: sends a line, prints every
// reply line, and reconnects with backoff whenever the server goes away and comes back.

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "options.h"
#include "rx.h"

struct simple {
    rx_server *srv;
    rx_connector *connector;
    rx_connect_opts opts;
    const char *host;
    int port;
    const char *text;      // what to send (NULL: nothing, only print what comes)
    uint64_t count;        // lines to send per connection; with exit_after, replies to wait for
    uint64_t interval_ms;
    bool exit_after;
    uint64_t sent;         // on this connection
    uint64_t replies;      // in all
    rx_timer *timer;       // the repeating send timer of this connection, or NULL
};

static struct simple app;

static void send_line(rx_session *s)
{
    if (rx_send(s, app.text, strlen(app.text)) == 0)
        app.sent++;
    else
        rx_log(RX_LOG_WARN, "send refused (closing)");
}

// Main thread, every --interval: the next line of this connection, until --count are sent.
static void on_tick(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)arg;
    rx_session *s = rx_connector_session(app.connector);
    if (s && app.sent < app.count)
        send_line(s);
    if (!s || app.sent >= app.count) {
        rx_timer_stop(loop, t);  // allowed from its own callback (rule 5)
        app.timer = NULL;
    }
}

static void stop_timer(void)
{
    if (app.timer) {
        rx_timer_stop(rx_server_loop(app.srv), app.timer);
        app.timer = NULL;
    }
}

static void on_opened(rx_session *s)
{
    rx_log(RX_LOG_INFO, "connected to %s (session %" PRIu64 ")", rx_session_peer(s), rx_session_id(s));
    app.sent = 0;
    if (!app.text)
        return;
    send_line(s);
    if (app.sent < app.count) {
        app.timer = rx_timer_start(rx_server_loop(app.srv), app.interval_ms, app.interval_ms, on_tick, NULL);
        if (!app.timer)
            rx_log(RX_LOG_ERROR, "out of memory for the send timer");
    }
}

// The line codec hands over the line without its "\n"; a "\r" before it is kept.
static void on_message(rx_session *s, const rx_frame *f)
{
    (void)s;
    printf("reply: %.*s\n", (int)f->len, f->data);
    fflush(stdout);
    app.replies++;
    if (app.exit_after && app.replies == app.count)
        rx_server_stop(app.srv);
}

// The connector logs its own attempts ("connector HOST:PORT: reconnecting in N ms", "connect
// failed (attempt N): ..."), and reconnects by itself unless the server is stopping.
static void on_closed(rx_session *s, enum rx_close_reason why)
{
    (void)s;
    stop_timer();
    rx_log(RX_LOG_INFO, "disconnected: %s", rx_close_reason_name(why));
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: simple_client -p PORT [-H HOST] [--send TEXT] [--count N] [--interval MS]\n"
            "                     [--exit-after] [--retry-ms MS] [--retry-max-ms MS]\n"
            "Connects to a line server, sends TEXT (a line) N times on each connection, one\n"
            "every MS milliseconds, and prints every line it gets back as `reply: LINE`. When\n"
            "the connection goes it reconnects, waiting a random [D/2, D] with D doubling from\n"
            "--retry-ms to --retry-max-ms. SIGINT or SIGTERM ends it (status 0).\n"
            "  -H, --host HOST       server address (default 127.0.0.1)\n"
            "  -p, --port PORT       server port, 1 to 65535 (required)\n"
            "      --send TEXT       the line to send (no newline in it)\n"
            "      --count N         lines per connection (default 1)\n"
            "      --interval MS     between two lines, 1 to 86400000 (default 1000)\n"
            "      --exit-after      exit 0 once N replies (--count) have come\n"
            CLI_RETRY_MS_USAGE
            "  -h, --help            print this help and exit\n");
}

enum { OPT_SEND = 300, OPT_COUNT, OPT_INTERVAL, OPT_EXIT_AFTER, OPT_RETRY, OPT_RETRY_MAX };

static void parse(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {"send", required_argument, NULL, OPT_SEND},
        {"count", required_argument, NULL, OPT_COUNT},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"exit-after", no_argument, NULL, OPT_EXIT_AFTER},
        {"retry-ms", required_argument, NULL, OPT_RETRY},
        {"retry-max-ms", required_argument, NULL, OPT_RETRY_MAX},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":H:p:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H': app.host = optarg; break;
        case 'p': app.port = (int)opt_uint(optarg, 1, 65535, "bad port (want 1 to 65535)"); break;
        case OPT_SEND:
            if (strchr(optarg, '\n'))
                opt_fail("bad --send (want one line, no newline)", optarg);
            app.text = optarg;
            break;
        case OPT_COUNT: app.count = opt_uint(optarg, 1, UINT32_MAX, "bad --count (want 1 to 4294967295)"); break;
        case OPT_INTERVAL: app.interval_ms = opt_uint(optarg, 1, 86400000, "bad --interval (want 1 to 86400000 ms)"); break;
        case OPT_EXIT_AFTER: app.exit_after = true; break;
        case OPT_RETRY: cli_retry_ms(&app.opts, 0, "--retry-ms", optarg); break;
        case OPT_RETRY_MAX: cli_retry_ms(&app.opts, 1, "--retry-max-ms", optarg); break;
        default: cli_opt_other(ch, argv);  // -h, a missing value, an unknown option
        }
    }
    cli_opt_end(argc, argv);
    if (!app.port)
        opt_fail("missing", "-p PORT");
    cli_retry_check(&app.opts, "--retry-ms", "--retry-max-ms");
}

int main(int argc, char **argv)
{
    app.host = "127.0.0.1";
    app.count = 1;
    app.interval_ms = 1000;
    app.opts = rx_connect_opts_default();
    opt_init("simple_client", usage);
    parse(argc, argv);

    rx_thread_set_name("main");
    rx_config cfg = rx_config_default();
    app.srv = rx_server_new(&cfg);
    if (!app.srv)
        return 1;
    rx_codec line = rx_codec_line(64 * 1024);
    rx_factory f = {.opened = on_opened, .message = on_message, .closed = on_closed};
    app.connector = cli_connect(app.srv, app.host, app.port, &line, &f, &app.opts);
    if (!app.connector) {
        rx_server_free(app.srv);
        return 1;
    }
    int rc = rx_server_run(app.srv);
    rx_connector_free(app.connector);
    rx_server_free(app.srv);
    return rc == 0 ? 0 : 1;
}
