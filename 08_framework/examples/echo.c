// echo.c: the raw echo server on the rx library, in the fewest lines that keep DESIGN.md's
// server contract: every byte back unchanged, in order; half-close and shutdown by the library.

#include <stdio.h>

#include "options.h"
#include "rx.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: echo [-H HOST] [-p PORT] [-t N] [--max-output BYTES] [--soft-output BYTES]\n"
            "            [--soft-seconds S] [--idle-timeout S] [--drain-ms MS]\n"
            "Echoes every byte it receives (default port 8008). Logs to stderr; SIGINT or\n"
            "SIGTERM stops it gracefully.\n" SERVER_OPTS_HELP);
}

// Main thread, like every callback. The raw codec hands over what one read() got; rx_send
// copies it into the session's output (rule 4), so F may go once we return. After the
// peer's EOF the library delivers what it read before it, sends what is queued, then closes
// (reason "peer"): the half-close contract needs no code here.
static void on_message(rx_session *s, const rx_frame *f)
{
    if (rx_send(s, f->data, f->len) != 0)
        rx_log(RX_LOG_DEBUG, "session %llu: echo not sent (closing)",
               (unsigned long long)rx_session_id(s));
}

int main(int argc, char **argv)
{
    struct server_opts o;
    opt_init("echo", usage);
    server_opts_parse(argc, argv, 8008, 0, &o);

    rx_thread_set_name("main");
    rx_server *srv = rx_server_new(&o.cfg);
    if (!srv)
        return 1;
    rx_codec raw = rx_codec_raw();
    rx_factory factory = {.message = on_message};
    int port = rx_listen(srv, o.host, o.port, &raw, &factory);
    if (port < 0) {
        rx_server_free(srv);
        return 1;
    }
    print_listening(o.host, port);
    int rc = rx_server_run(srv);
    rx_server_free(srv);
    return rc == 0 ? 0 : 1;
}
