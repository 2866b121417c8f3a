// pingpong_server.c: length-prefixed messages ({u32 big-endian length, body}) echoed back
// whole: the server half of the course's load-test pair (pingpong_client is the other).

#include <stdio.h>

#include "options.h"
#include "rx.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pingpong_server [-H HOST] [-p PORT] [-t N] [--max-frame BYTES]\n"
            "                       [--max-output BYTES] [--soft-output BYTES]\n"
            "                       [--soft-seconds S] [--idle-timeout S] [--drain-ms MS]\n"
            "Sends every {u32 length, body} message back (default port 8009). A length over\n"
            "--max-frame is a bad frame: that client is dropped, the others carry on.\n"
            "      --max-frame BYTES    the longest body accepted (default 1048576)\n" SERVER_OPTS_HELP);
}

// Main thread. The codec's chunk is --max-frame, so every frame comes whole (FIRST|LAST);
// rx_send puts the length header back in front of the copy it queues.
static void on_message(rx_session *s, const rx_frame *f)
{
    if (rx_send(s, f->data, f->len) != 0)
        rx_log(RX_LOG_DEBUG, "session %llu: reply not sent (closing)",
               (unsigned long long)rx_session_id(s));
}

int main(int argc, char **argv)
{
    struct server_opts o;
    opt_init("pingpong_server", usage);
    server_opts_parse(argc, argv, 8009, WANT_MAX_FRAME, &o);

    rx_thread_set_name("main");
    rx_server *srv = rx_server_new(&o.cfg);
    if (!srv)
        return 1;
    rx_codec len = rx_codec_len(o.max_frame, o.max_frame);
    rx_factory factory = {.message = on_message};
    int port = rx_listen(srv, o.host, o.port, &len, &factory);
    if (port < 0) {
        rx_server_free(srv);
        return 1;
    }
    print_listening(o.host, port);
    int rc = rx_server_run(srv);
    rx_server_free(srv);
    return rc == 0 ? 0 : 1;
}
