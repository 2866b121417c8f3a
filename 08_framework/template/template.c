// template.c: a line server on the rx library, the smallest that is complete: two commands
// (PING, and DELAY, whose reply a timer sends), the server contract (-H, -p, --help, one
// `listening on HOST:PORT` line, SIGINT/SIGTERM exit 0) and a stop line with its counters.
// README.md says where a new command, a timer and a codec go.

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rx.h"

#define DEFAULT_PORT 8100
#define MAX_LINE 1024        // bytes before the "\n": a longer line drops the client (bad frame)
#define MAX_DELAY_MS 60000   // DELAY's longest wait

// The server's own counters, printed when it stops (tests read them). Main thread only: every
// callback runs there, so no lock.
struct app {
    rx_server *srv;
    unsigned long long pings, delays, delays_sent, delays_cancelled, errors;
};

// One per connection (rx_factory.create), freed in on_closed (rx.h, lifetime rule 1).
struct session {
    struct app *app;
    rx_session *s;
    rx_timer *delay;           // the pending DELAY, or NULL: at most one per session
    size_t text_len;
    char text[MAX_LINE];       // what it will send
};

// ------------------------------------------------------------------------------ commands

static void reply(rx_session *s, const char *text)
{
    // -1: the session is closing (or memory ran out): nothing useful to do about it here.
    (void)rx_send(s, text, strlen(text));
}

// A one-shot timer: the loop frees it after this returns (rule 5), so forget it first.
static void on_delay(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    struct session *st = arg;
    st->delay = NULL;
    st->app->delays_sent++;
    (void)rx_send(st->s, st->text, st->text_len);
}

// DELAY MS [TEXT]: TEXT (maybe empty) comes back after MS milliseconds; replies to other
// commands meanwhile go first. ARGS points after "DELAY ".
static void cmd_delay(struct session *st, const char *args, size_t len)
{
    size_t i = 0;
    unsigned long ms = 0;
    while (i < len && args[i] >= '0' && args[i] <= '9' && ms <= MAX_DELAY_MS)
        ms = ms * 10 + (unsigned long)(args[i++] - '0');
    if (i == 0 || ms > MAX_DELAY_MS || (i < len && args[i] != ' ')) {
        st->app->errors++;
        reply(st->s, "ERR usage: DELAY MS [TEXT], MS from 0 to 60000");
        return;
    }
    if (st->delay != NULL) {
        st->app->errors++;
        reply(st->s, "ERR busy: one DELAY at a time");
        return;
    }
    size_t from = i < len ? i + 1 : len;
    st->text_len = len - from;
    memcpy(st->text, args + from, st->text_len);
    st->delay = rx_timer_start(rx_loop_current(), ms, 0, on_delay, st);
    if (st->delay == NULL) {
        st->app->errors++;
        reply(st->s, "ERR out of memory");
        return;
    }
    st->app->delays++;
}

// Main thread, one whole line (the codec cut it; no "\n"). A new command is one more branch
// here and one more row in README.md's table.
static void on_message(rx_session *s, const rx_frame *f)
{
    struct session *st = rx_session_data(s);
    size_t len = f->len;
    if (len > 0 && f->data[len - 1] == '\r')  // `nc -C` and telnet end lines with "\r\n"
        len--;
    if (len == 4 && memcmp(f->data, "PING", 4) == 0) {
        st->app->pings++;
        reply(s, "PONG");
    } else if (len >= 5 && memcmp(f->data, "DELAY", 5) == 0 && (len == 5 || f->data[5] == ' ')) {
        size_t skip = len == 5 ? 5 : 6;
        cmd_delay(st, f->data + skip, len - skip);
    } else {
        st->app->errors++;
        reply(s, "ERR unknown command");
    }
}

// ------------------------------------------------------------------------------ sessions

static void *on_create(void *arg, rx_session *s)
{
    struct session *st = calloc(1, sizeof *st);
    if (st != NULL) {
        st->app = arg;
        st->s = s;
    }
    return st;
}

static void on_opened(rx_session *s)
{
    // create's NULL (out of memory) leaves a session with no state: refuse it.
    if (rx_session_data(s) == NULL)
        rx_session_close(s, false);
}

// The last callback (rule 1): a pending DELAY dies with its session, else its timer would
// fire on freed memory.
static void on_closed(rx_session *s, enum rx_close_reason why)
{
    (void)why;  // the library has logged it
    struct session *st = rx_session_data(s);
    if (st == NULL)
        return;
    if (st->delay != NULL) {
        rx_timer_stop(rx_server_loop(st->app->srv), st->delay);
        st->app->delays_cancelled++;
    }
    free(st);
}

// ------------------------------------------------------------------------------ main

static void usage(FILE *to)
{
    fprintf(to,
            "usage: template [-H HOST] [-p PORT] [-t N]\n"
            "A line server (default port %d). Commands, one per line:\n"
            "  PING            answers PONG\n"
            "  DELAY MS [TEXT] answers TEXT after MS milliseconds (0 to %d)\n"
            "A line longer than %d bytes drops the client. Logs to stderr; SIGINT or SIGTERM\n"
            "stops it gracefully.\n"
            "  -H, --host HOST     address to listen on (default 127.0.0.1)\n"
            "  -p, --port PORT     TCP port, 0 = any free port\n"
            "  -t, --threads N     io threads, 0 to 64 (default 0: the main loop does the I/O)\n"
            "  -h, --help          print this help and exit\n",
            DEFAULT_PORT, MAX_DELAY_MS, MAX_LINE);
}

_Noreturn static void usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "template: %s '%s'\n", what, arg);
    usage(stderr);
    exit(2);
}

// ARG as a whole number in [0, MAX], or a usage error: a digit first (strtol would accept
// " 5" and "-1"), nothing after the digits.
static int parse_int(const char *arg, long max, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (arg[0] < '0' || arg[0] > '9' || errno != 0 || *end != '\0' || v > max)
        usage_error(what, arg);
    return (int)v;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"port", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *host = "127.0.0.1";
    int port = DEFAULT_PORT;
    rx_config cfg = rx_config_default();
    opterr = 0;  // with the leading ':', we print the errors ourselves
    int c;
    while ((c = getopt_long(argc, argv, ":H:p:t:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'H':
            host = optarg;
            break;
        case 'p':
            port = parse_int(optarg, 65535, "bad port (want 0 to 65535)");
            break;
        case 't':
            cfg.io_threads = parse_int(optarg, 64, "bad thread count (want 0 to 64)");
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            usage_error("missing value for", argv[optind - 1]);
        default: {
            char short_opt[] = {'-', (char)optopt, '\0'};
            usage_error("unknown option", optopt ? short_opt : argv[optind - 1]);
        }
        }
    }
    if (optind < argc)
        usage_error("unexpected argument", argv[optind]);

    rx_thread_set_name("main");
    struct app app = {0};
    app.srv = rx_server_new(&cfg);
    if (app.srv == NULL)
        return 1;
    rx_codec line = rx_codec_line(MAX_LINE);
    rx_factory factory = {.arg = &app, .create = on_create, .opened = on_opened,
                          .message = on_message, .closed = on_closed};
    int bound = rx_listen(app.srv, host, port, &line, &factory);
    if (bound < 0) {
        rx_server_free(app.srv);
        return 1;
    }
    // The contract's one stdout line; the tests wait for it.
    if (strchr(host, ':') != NULL)
        printf("listening on [%s]:%d\n", host, bound);  // IPv6
    else
        printf("listening on %s:%d\n", host, bound);
    fflush(stdout);
    int rc = rx_server_run(app.srv);
    rx_log(RX_LOG_INFO, "template: pings %llu, delays %llu, delays sent %llu, delays cancelled %llu, errors %llu",
           app.pings, app.delays, app.delays_sent, app.delays_cancelled, app.errors);
    rx_server_free(app.srv);
    return rc == 0 ? 0 : 1;
}
