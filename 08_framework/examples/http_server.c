// http_server.c: HTTP/1.1 with keep-alive on the rx library's HTTP codec (rx_codec_http): the
// io threads cut and parse whole requests, the main thread routes each and answers it in one
// rx_send. Pipelined requests are answered in order because a session's frames and sends are.
//
//   GET /       a short text                    HEAD: the same headers, no body
//   GET /stats  JSON counters (connections, open, requests, bytes in and out)
//   other methods on those paths: 405 with "Allow: GET, HEAD"; any other path: 404
//   refused input (the codec's status): 400, 413, 431, 501, 505, then the connection closes
// "Connection: close" (or HTTP/1.0 without "Connection: keep-alive") closes after the answer.

#include <stdio.h>
#include <string.h>

#include "options.h"
#include "rx.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: http_server [-H HOST] [-p PORT] [-t N] [--max-head BYTES] [--max-body BYTES]\n"
            "                   [--idle-timeout S] [--max-output BYTES] [--soft-output BYTES]\n"
            "                   [--soft-seconds S] [--drain-ms MS]\n"
            "HTTP/1.1 with keep-alive (default port 8080): GET / is a short text, GET /stats the\n"
            "counters as JSON, HEAD the same without a body. Logs to stderr; SIGINT or SIGTERM\n"
            "stops it gracefully.\n"
            "      --max-head BYTES     request line and headers at most BYTES (1 to 1048576;\n"
            "                        default 8192): more is answered 431\n"
            "      --max-body BYTES     Content-Length at most BYTES (default 1048576): more is\n"
            "                        answered 413\n" SERVER_OPTS_HELP);
}

static const char hello[] = "Hello from the rx http_server.\n";

// The counters /stats shows; main thread only, like every callback.
static struct {
    rx_server *srv;
    uint64_t connections, open, requests, bytes_in, bytes_out, refused;
} g;

static void count_out(ssize_t n)
{
    if (n > 0)
        g.bytes_out += (uint64_t)n;
}

// /stats: requests and bytes_in count this request; bytes_out the answers sent before it.
static int stats_json(char *out, size_t cap)
{
    return snprintf(out, cap,
                    "{\"connections\":%llu,\"open\":%llu,\"requests\":%llu,\"bytes_in\":%llu,"
                    "\"bytes_out\":%llu}\n",
                    (unsigned long long)g.connections, (unsigned long long)g.open,
                    (unsigned long long)g.requests, (unsigned long long)g.bytes_in,
                    (unsigned long long)g.bytes_out);
}

// The path of a target: up to '?' (a query string does not change the resource here).
static size_t path_len(const rx_http_request *r)
{
    const char *q = memchr(r->target, '?', r->target_len);
    return q ? (size_t)(q - r->target) : r->target_len;
}

static bool path_is(const rx_http_request *r, const char *p)
{
    size_t n = strlen(p);
    return path_len(r) == n && memcmp(r->target, p, n) == 0;
}

// Answers R. FLAGS: RX_HTTP_CLOSE when the connection closes after it.
static void route(rx_session *s, const rx_http_request *r, unsigned flags)
{
    bool head = rx_http_method_is(r, "HEAD");
    bool get = head || rx_http_method_is(r, "GET");
    if (head)
        flags |= RX_HTTP_NO_BODY;  // the GET's Content-Length, no body (RFC 9110 9.3.2)
    if (path_is(r, "/") || path_is(r, "/stats")) {
        if (!get) {
            count_out(rx_http_send(s, 405, "Allow: GET, HEAD\r\n", "method not allowed\n", 19, flags));
            return;
        }
        if (path_is(r, "/")) {
            count_out(rx_http_send(s, 200, "Content-Type: text/plain\r\n", hello, sizeof hello - 1,
                                   flags));
        } else {
            char body[256];
            int n = stats_json(body, sizeof body);
            count_out(rx_http_send(s, 200, "Content-Type: application/json\r\n", body, (size_t)n,
                                   flags));
        }
        return;
    }
    count_out(rx_http_send(s, 404, "Content-Type: text/plain\r\n", "not found\n", 10, flags));
}

static void on_message(rx_session *s, const rx_frame *f)
{
    rx_http_request r;
    if (rx_http_view(f, &r) != 0) {  // cannot happen with rx_codec_http: a bug, not input
        rx_log(RX_LOG_ERROR, "session %llu: not an HTTP frame", (unsigned long long)rx_session_id(s));
        rx_session_close(s, false);
        return;
    }
    g.requests++;
    if (r.status != 0 && r.status != 100) {
        // The codec refused the input and reads no more of it: say why, then close.
        g.refused++;
        rx_log(RX_LOG_INFO, "session %llu (%s): %d %s: closing", (unsigned long long)rx_session_id(s),
               rx_session_peer(s), r.status, r.error);
        char body[128];
        int n = snprintf(body, sizeof body, "%s\n", r.error);
        count_out(rx_http_send(s, r.status, "Content-Type: text/plain\r\n", body, (size_t)n,
                               RX_HTTP_CLOSE));
        rx_session_close(s, true);
        return;
    }
    g.bytes_in += r.wire_len;
    // A status-100 frame: the client waits for "100 Continue" before its body. Nothing here
    // takes a body, so it gets its final answer now, and the connection closes (the body it
    // may still send would otherwise be read as the next request: RFC 9110 15.2.1).
    bool close = r.status == 100 || !r.keep_alive;
    route(s, &r, close ? RX_HTTP_CLOSE : 0);
    if (close)
        rx_session_close(s, true);
}

static void on_opened(rx_session *s)
{
    (void)s;
    g.connections++;
    g.open++;
}

static void on_closed(rx_session *s, enum rx_close_reason why)
{
    (void)s, (void)why;
    g.open--;
}

// http_server's own options, taken out of ARGV before the shared parser sees the rest: the
// request head's and body's limits (defaults 8192 and 1 MiB).
static const struct opt_own own_options[] = {{"--max-head", 1}, {"--max-body", 1}};
static size_t max_head = 8192, max_body = 1u << 20;

static void take_own(size_t k, const char *v)
{
    if (k == 0)
        max_head = (size_t)opt_uint(v, 1, RX_HTTP_MAX_HEAD_LIMIT,
                                    "bad --max-head (want 1 to 1048576)");
    else
        max_body = (size_t)opt_uint(v, 0, UINT32_MAX, "bad --max-body (want 0 to 4294967295)");
}

int main(int argc, char **argv)
{
    struct server_opts o;
    opt_init("http_server", usage);
    argc = opt_take_own(argc, argv, own_options, 2, take_own);
    server_opts_parse(argc, argv, 8080, 0, &o);

    rx_thread_set_name("main");
    rx_server *srv = rx_server_new(&o.cfg);
    if (!srv)
        return 1;
    g.srv = srv;
    rx_codec http = rx_codec_http(max_head, max_body);
    rx_factory factory = {.opened = on_opened, .message = on_message, .closed = on_closed};
    int port = rx_listen(srv, o.host, o.port, &http, &factory);
    if (port < 0) {
        rx_server_free(srv);
        return 1;
    }
    print_listening(o.host, port);
    int rc = rx_server_run(srv);
    rx_log(RX_LOG_INFO, "http: connections %llu, requests %llu, refused %llu, bytes in %llu, bytes out %llu",
           (unsigned long long)g.connections, (unsigned long long)g.requests,
           (unsigned long long)g.refused, (unsigned long long)g.bytes_in,
           (unsigned long long)g.bytes_out);
    rx_server_free(srv);
    return rc == 0 ? 0 : 1;
}
