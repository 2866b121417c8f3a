// pingpong_client.c: the load-test client of the course's sources on the rx connector: C
// connections, one length-prefixed message in flight on each, every byte of every reply checked.

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "options.h"
#include "rx.h"

struct client;

// One connection: its connector, and the message it has in flight.
struct conn {
    struct client *cl;
    unsigned idx;
    rx_connector *connector;
    uint64_t sent;      // messages sent so far; the one in flight is number sent - 1
    uint64_t sent_ns;   // when it was sent
    bool in_flight;
    bool finished;      // we closed it ourselves: its closed callback is not an error
    bool done;          // counted in client.done (closed, or its connect failed)
};

struct client {
    rx_server *srv;
    const char *host;
    int port;
    struct conn *conns;
    unsigned nconns, done;
    size_t size;
    uint64_t count;        // messages per connection (0: until --duration is up)
    uint64_t duration_ms;
    uint64_t timeout_ms;   // a reply later than this is an error
    uint64_t seed;
    bool time_up;
    char *out, *expect;    // scratch: the message sent, the reply wanted
    uint32_t *lat_us;      // one latency per reply
    size_t nlat, cap;
    uint64_t errors;
    uint64_t start_ns, end_ns;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  // cannot fail with this clock
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// splitmix64: the seed of each message's bytes, so that a reply can be recomputed and
// checked byte for byte, and a reply meant for another connection or counter differs.
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

static void fill_payload(char *buf, size_t size, uint64_t seed, unsigned idx, uint64_t counter)
{
    uint64_t st = mix(seed ^ mix(((uint64_t)idx << 40) ^ counter));
    for (size_t i = 0; i < size; i += 8) {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        size_t n = size - i < 8 ? size - i : 8;
        memcpy(buf + i, &st, n);
    }
}

// Counts C as over (once); the last one stops the server, which ends rx_server_run.
static void conn_done(struct conn *c)
{
    if (c->done)
        return;
    c->done = true;
    struct client *cl = c->cl;
    if (++cl->done == cl->nconns) {
        cl->end_ns = now_ns();
        rx_server_stop(cl->srv);
    }
}

static void conn_send_next(struct conn *c, rx_session *s)
{
    struct client *cl = c->cl;
    fill_payload(cl->out, cl->size, cl->seed, c->idx, c->sent);
    if (rx_send(s, cl->out, cl->size) != 0) {
        rx_log(RX_LOG_ERROR, "conn %u: send refused", c->idx);
        cl->errors++;
        c->finished = true;
        rx_session_close(s, false);
        return;
    }
    c->sent++;
    c->sent_ns = now_ns();
    c->in_flight = true;
}

static void conn_finish(struct conn *c, rx_session *s)
{
    c->finished = true;
    c->in_flight = false;
    rx_session_close(s, true);
}

// --------------------------------------------------------------------- callbacks (main)

// The factory's arg is the connection (one factory per connector): it is the session's state.
static void *on_create(void *arg, rx_session *s)
{
    (void)s;
    return arg;
}

static void on_opened(rx_session *s)
{
    conn_send_next(rx_session_data(s), s);
}

static void on_message(rx_session *s, const rx_frame *f)
{
    struct conn *c = rx_session_data(s);
    struct client *cl = c->cl;
    if (c->finished)
        return;
    if (!c->in_flight) {
        rx_log(RX_LOG_ERROR, "conn %u: a reply of %zu bytes with no message in flight", c->idx, f->len);
        cl->errors++;
        conn_finish(c, s);
        return;
    }
    if ((f->flags & (RX_FRAME_FIRST | RX_FRAME_LAST)) != (RX_FRAME_FIRST | RX_FRAME_LAST) ||
        f->len != cl->size) {
        rx_log(RX_LOG_ERROR, "conn %u: reply %" PRIu64 " has %zu bytes (flags %u), want %zu whole",
               c->idx, c->sent - 1, f->len, f->flags, cl->size);
        cl->errors++;
        conn_finish(c, s);
        return;
    }
    fill_payload(cl->expect, cl->size, cl->seed, c->idx, c->sent - 1);
    if (memcmp(cl->expect, f->data, cl->size) != 0) {
        size_t off = 0;
        while (cl->expect[off] == f->data[off])
            off++;
        rx_log(RX_LOG_ERROR, "conn %u: reply %" PRIu64 " differs at offset %zu of %zu: want 0x%02x, got 0x%02x",
               c->idx, c->sent - 1, off, cl->size, (unsigned char)cl->expect[off],
               (unsigned char)f->data[off]);
        cl->errors++;
        conn_finish(c, s);
        return;
    }
    c->in_flight = false;
    if (cl->nlat == cl->cap) {
        size_t cap = cl->cap ? cl->cap * 2 : 4096;
        uint32_t *p = realloc(cl->lat_us, cap * sizeof *p);
        if (!p) {
            rx_log(RX_LOG_ERROR, "out of memory for latencies");
            cl->errors++;
            conn_finish(c, s);
            return;
        }
        cl->lat_us = p;
        cl->cap = cap;
    }
    uint64_t us = (now_ns() - c->sent_ns) / 1000;
    cl->lat_us[cl->nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    if ((cl->count && c->sent >= cl->count) || cl->time_up)
        conn_finish(c, s);
    else
        conn_send_next(c, s);
}

static void on_closed(rx_session *s, enum rx_close_reason why)
{
    struct conn *c = rx_session_data(s);
    if (!c->finished) {
        rx_log(RX_LOG_ERROR, "conn %u: closed (%s) after %" PRIu64 " messages", c->idx,
               rx_close_reason_name(why), c->sent);
        c->cl->errors++;
    }
    conn_done(c);
}

// Reconnect is off: one failed attempt ends the connection. ARG is the factory's: the conn.
static void on_failed(rx_connector *connector, int err, unsigned attempt, void *arg)
{
    (void)connector;
    (void)attempt;
    struct conn *c = arg;
    rx_log(RX_LOG_ERROR, "conn %u: connect to %s:%d failed: %s", c->idx, c->cl->host, c->cl->port,
           strerror(err));
    c->cl->errors++;
    conn_done(c);
}

static void on_time_up(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    ((struct client *)arg)->time_up = true;
}

// Every 100 ms: a message in flight for longer than --timeout is an error (the run is
// bounded even when the server stops answering).
static void on_watchdog(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    struct client *cl = arg;
    uint64_t now = now_ns();
    for (unsigned i = 0; i < cl->nconns; i++) {
        struct conn *c = &cl->conns[i];
        if (!c->in_flight || c->finished || now - c->sent_ns < cl->timeout_ms * 1000000u)
            continue;
        rx_log(RX_LOG_ERROR, "conn %u: no reply to message %" PRIu64 " within %" PRIu64 " ms", i,
               c->sent - 1, cl->timeout_ms);
        cl->errors++;
        rx_session *s = rx_connector_session(c->connector);
        c->finished = true;
        c->in_flight = false;
        if (s)
            rx_session_close(s, false);
        else
            conn_done(c);
    }
}

// ------------------------------------------------------------------------------ main

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pingpong_client [-H HOST] [-p PORT] [-c CONNS] [-s SIZE] [-t N]\n"
            "                       [--count N | --duration S] [--timeout S] [--seed N]\n"
            "Opens CONNS connections to a pingpong_server, keeps one {u32 length, body} message\n"
            "in flight on each, checks every byte of every reply, then prints\n"
            "  pingpong: C conns, M msgs, X msgs/s, p50 U us, p99 V us, errors E\n"
            "and exits 0, or 1 on any wrong reply, lost connection or failed connect.\n"
            "  -H, --host HOST       server address (default 127.0.0.1)\n"
            "  -p, --port PORT       server port, 1 to 65535 (default 8009)\n"
            "  -c, --conns C         connections, 1 to 100000 (default 1)\n"
            "  -s, --size SIZE       message body bytes, 1 to 16777216 (default 64)\n"
            "  -t, --threads N       io threads, 0 to 64 (default 0)\n"
            "      --count N         messages per connection (default 1000)\n"
            "      --duration S      instead: send for S seconds\n"
            "      --timeout S       a reply later than this is an error (default 10)\n"
            "      --seed N          the payloads' seed (default 1)\n"
            "  -h, --help            print this help and exit\n");
}

enum { OPT_COUNT = 300, OPT_DURATION, OPT_TIMEOUT, OPT_SEED };

static void parse_client(int argc, char **argv, struct client *cl, rx_config *cfg)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},   {"port", required_argument, NULL, 'p'},
        {"conns", required_argument, NULL, 'c'},  {"size", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
        {"count", required_argument, NULL, OPT_COUNT},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"seed", required_argument, NULL, OPT_SEED},
        {NULL, 0, NULL, 0},
    };
    bool count_given = false;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":H:p:c:s:t:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H': cl->host = optarg; break;
        case 'p': cl->port = (int)opt_uint(optarg, 1, 65535, "bad port (want 1 to 65535)"); break;
        case 'c': cl->nconns = (unsigned)opt_uint(optarg, 1, 100000, "bad -c (want 1 to 100000)"); break;
        case 's': cl->size = opt_uint(optarg, 1, 16u << 20, "bad -s (want 1 to 16777216)"); break;
        case 't': cfg->io_threads = (int)opt_uint(optarg, 0, 64, "bad thread count (want 0 to 64)"); break;
        case OPT_COUNT:
            cl->count = opt_uint(optarg, 1, UINT64_MAX / 2, "bad --count (want 1 or more)");
            count_given = true;
            break;
        case OPT_DURATION:
            cl->duration_ms = opt_seconds_ms(optarg, 0, "bad --duration (want 0.001 to 31536000 s)");
            break;
        case OPT_TIMEOUT:
            cl->timeout_ms = opt_seconds_ms(optarg, 0, "bad --timeout (want 0.001 to 31536000 s)");
            break;
        case OPT_SEED: cl->seed = opt_uint(optarg, 0, UINT64_MAX, "bad --seed"); break;
        default: cli_opt_other(ch, argv);  // -h, a missing value, an unknown option
        }
    }
    cli_opt_end(argc, argv);
    if (count_given && cl->duration_ms)
        opt_fail("--count and --duration exclude each other", "--duration");
    if (cl->duration_ms)
        cl->count = 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t percentile(const uint32_t *sorted, size_t n, unsigned p)
{
    return n ? sorted[(n - 1) * p / 100] : 0;
}

int main(int argc, char **argv)
{
    struct client cl = {
        .host = "127.0.0.1", .port = 8009, .nconns = 1, .size = 64, .count = 1000,
        .timeout_ms = 10000, .seed = 1,
    };
    rx_config cfg = rx_config_default();
    opt_init("pingpong_client", usage);
    parse_client(argc, argv, &cl, &cfg);

    rx_thread_set_name("main");
    cl.conns = calloc(cl.nconns, sizeof *cl.conns);
    cl.out = malloc(cl.size);
    cl.expect = malloc(cl.size);
    if (!cl.conns || !cl.out || !cl.expect) {
        fprintf(stderr, "pingpong_client: out of memory\n");
        return 1;
    }
    cl.srv = rx_server_new(&cfg);
    if (!cl.srv)
        return 1;
    rx_loop *loop = rx_server_loop(cl.srv);
    rx_codec len = rx_codec_len(cl.size, cl.size);  // replies come whole
    rx_connect_opts copts = rx_connect_opts_default();
    copts.reconnect = false;
    copts.failed = on_failed;
    int rc = 0;
    for (unsigned i = 0; i < cl.nconns; i++) {
        struct conn *c = &cl.conns[i];
        c->cl = &cl;
        c->idx = i;
        rx_factory f = {.arg = c, .create = on_create, .opened = on_opened,
                        .message = on_message, .closed = on_closed};
        c->connector = cli_connect(cl.srv, cl.host, cl.port, &len, &f, &copts);
        if (!c->connector)
            return 1;
    }
    if ((cl.duration_ms && !rx_timer_start(loop, cl.duration_ms, 0, on_time_up, &cl)) ||
        !rx_timer_start(loop, 100, 100, on_watchdog, &cl)) {
        fprintf(stderr, "pingpong_client: out of memory\n");
        return 1;
    }
    cl.start_ns = now_ns();
    if (rx_server_run(cl.srv) != 0)
        rc = 1;
    if (!cl.end_ns)
        cl.end_ns = now_ns();
    if (cl.done < cl.nconns) {
        // Stopped by a signal before every connection was over.
        fprintf(stderr, "pingpong_client: stopped with %u of %u connections unfinished\n",
                cl.nconns - cl.done, cl.nconns);
        cl.errors++;
    }
    for (unsigned i = 0; i < cl.nconns; i++)
        rx_connector_free(cl.conns[i].connector);
    rx_server_free(cl.srv);

    if (cl.nlat > 0)  // qsort's pointer must be valid even for 0 elements
        qsort(cl.lat_us, cl.nlat, sizeof *cl.lat_us, cmp_u32);
    double secs = (double)(cl.end_ns - cl.start_ns) / 1e9;
    cli_stats_line("pingpong: %u conns, %zu msgs, %.0f msgs/s, p50 %u us, p99 %u us, errors %" PRIu64,
                   cl.nconns, cl.nlat, secs > 0 ? (double)cl.nlat / secs : 0.0,
                   percentile(cl.lat_us, cl.nlat, 50), percentile(cl.lat_us, cl.nlat, 99), cl.errors);
    free(cl.lat_us);
    free(cl.out);
    free(cl.expect);
    free(cl.conns);
    return rc || cl.errors ? 1 : 0;
}
