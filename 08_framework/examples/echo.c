// echo.c: the raw echo server on the rx library, in the fewest lines that keep DESIGN.md's
// server contract: every byte back unchanged, in order; half-close and shutdown by the library,
// back-pressure by two callbacks (a client that sends but does not read is paused, not dropped).

#include <stdio.h>

#include "options.h"
#include "rx.h"

static void usage(FILE *to)
{
    fprintf(to,
            "usage: echo [-H HOST] [-p PORT] [-t N] [--high-water BYTES] [--max-output BYTES]\n"
            "            [--soft-output BYTES] [--soft-seconds S] [--idle-timeout S] [--drain-ms MS]\n"
            "Echoes every byte it receives (default port 7008, the stage's). Logs to stderr; SIGINT or\n"
            "SIGTERM stops it gracefully.\n"
            "      --high-water BYTES   stop reading a client whose echo has BYTES queued, until\n"
            "                        it is written out (0 = never; default 1048576)\n" SERVER_OPTS_HELP);
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

// Back-pressure (the lesson of stages 03 and 04): a client whose echo piles up is not read
// until the pile is gone; what it sends meanwhile waits in the kernel, and TCP slows it down.
// Without this, the caps would drop a client that merely sends faster than it reads.
static void on_high_water(rx_session *s, size_t queued)
{
    rx_log(RX_LOG_INFO, "session %llu: %zu bytes queued: reading paused",
           (unsigned long long)rx_session_id(s), queued);
    rx_session_pause(s);
}

static void on_drained(rx_session *s)
{
    rx_log(RX_LOG_INFO, "session %llu: written out: reading again", (unsigned long long)rx_session_id(s));
    rx_session_resume(s);
}

int main(int argc, char **argv)
{
    struct server_opts o;
    opt_init("echo", usage);
    server_opts_parse(argc, argv, 7008, WANT_HIGH_WATER, &o);

    rx_thread_set_name("main");
    rx_server *srv = rx_server_new(&o.cfg);
    if (!srv)
        return 1;
    rx_codec raw = rx_codec_raw();
    rx_factory factory = {.message = on_message, .high_water = on_high_water, .drained = on_drained};
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
