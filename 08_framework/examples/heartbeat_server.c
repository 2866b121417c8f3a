// heartbeat_server.c: typed messages over the header codec ({u32 length, u16 type, body}):
// PING is answered with PONG, DATA is sent back as DATA, and a client that leaves 3 PINGs in a
// row without a PONG is closed. The protocol and the heartbeat logic are in heartbeat.h.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heartbeat.h"
#include "options.h"
#include "rx.h"

static struct hb_counts counts;
static uint64_t interval_ms = 10000;
static rx_server *srv;

static void usage(FILE *to)
{
    fprintf(to,
            "usage: heartbeat_server [-H HOST] [-p PORT] [-t N] [--interval MS] [--max-frame BYTES]\n"
            "                        [--max-output BYTES] [--soft-output BYTES] [--soft-seconds S]\n"
            "                        [--idle-timeout S] [--drain-ms MS]\n"
            "Speaks {u32 length, u16 type, body} frames (default port 8010): PING (1) is answered\n"
            "with PONG (2) and the same 8 bytes, DATA (3) is sent back as DATA. It sends each\n"
            "client a PING every --interval; 3 in a row without a PONG close that client. Another\n"
            "type, a PING or PONG that is not 8 bytes, or a length over --max-frame is a bad frame:\n"
            "that client is dropped, the others carry on.\n"
            "      --interval MS        between two PINGs, 1 to 86400000 (default 10000)\n"
            "      --max-frame BYTES    the longest body accepted (default 1048576)\n" SERVER_OPTS_HELP);
}

// Takes --interval MS (or --interval=MS) out of ARGV before options.h parses the server
// options, which know nothing of it. Returns the new argc.
static int take_interval(int argc, char **argv)
{
    int out = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (strcmp(a, "--") == 0) {  // the end of the options: the rest is not ours
            while (i < argc)
                argv[out++] = argv[i++];
            break;
        }
        if (strcmp(a, "--interval") == 0) {
            if (i + 1 >= argc)
                opt_fail("missing value for", a);
            v = argv[++i];
        } else if (strncmp(a, "--interval=", 11) == 0) {
            v = a + 11;
        }
        if (v)
            interval_ms = opt_uint(v, 1, 86400000, "bad --interval (want 1 to 86400000 ms)");
        else
            argv[out++] = argv[i];
    }
    argv[out] = NULL;
    return out;
}

// --------------------------------------------------------------- callbacks (main thread)

static void *on_create(void *arg, rx_session *s)
{
    (void)arg;
    (void)s;
    return calloc(1, sizeof(struct hb_peer));  // NULL: the library closes the connection
}

static void on_opened(rx_session *s)
{
    struct hb_peer *p = rx_session_data(s);
    if (!p) {
        rx_log(RX_LOG_ERROR, "session %" PRIu64 ": out of memory: closing", rx_session_id(s));
        rx_session_close(s, false);
        return;
    }
    hb_start(p, s, rx_server_loop(srv), interval_ms, &counts);
}

static void on_message(rx_session *s, const rx_frame *f)
{
    struct hb_peer *p = rx_session_data(s);
    if (p && hb_message(p, f))
        hb_send(p, HB_DATA, f->data, f->len);
}

static void on_closed(rx_session *s, enum rx_close_reason why)
{
    (void)why;  // the library has logged it
    struct hb_peer *p = rx_session_data(s);
    if (p)
        hb_stop(p);
    free(p);
}

int main(int argc, char **argv)
{
    struct server_opts o;
    opt_init("heartbeat_server", usage);
    argc = take_interval(argc, argv);
    server_opts_parse(argc, argv, 8010, WANT_MAX_FRAME, &o);

    rx_thread_set_name("main");
    srv = rx_server_new(&o.cfg);
    if (!srv)
        return 1;
    rx_codec hdr = rx_codec_hdr(o.max_frame);
    rx_factory factory = {.create = on_create, .opened = on_opened, .message = on_message,
                          .closed = on_closed};
    int port = rx_listen(srv, o.host, o.port, &hdr, &factory);
    if (port < 0) {
        rx_server_free(srv);
        return 1;
    }
    print_listening(o.host, port);
    int rc = rx_server_run(srv);
    rx_log(RX_LOG_INFO,
           "heartbeat: received ping %" PRIu64 ", pong %" PRIu64 ", data %" PRIu64 "; sent ping %" PRIu64
           ", pong %" PRIu64 ", data %" PRIu64 "; timeouts %" PRIu64 ", bad frames %" PRIu64,
           counts.in[HB_PING], counts.in[HB_PONG], counts.in[HB_DATA], counts.out[HB_PING],
           counts.out[HB_PONG], counts.out[HB_DATA], counts.timeouts, counts.bad_frames);
    rx_server_free(srv);
    return rc == 0 ? 0 : 1;
}
