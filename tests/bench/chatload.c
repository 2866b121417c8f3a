// chatload.c: the broadcast load generator: K connections to a chat server (or K to redis,
// one publisher and K-1 subscribers), M lines per publisher, every delivery counted and checked.
//
// Shape of a run (one thread, one epoll instance; bounded by --timeout):
//
//   join:    open K connections; chat: wait for K `* welcome` lines and K(K-1)/2 `* userN
//            joined` lines (every pair of sessions yields exactly one, whatever the accept
//            order); redis: K-1 SUBSCRIBE confirmations
//   publish: message s (s = 0 .. K*M-1) is sent by publisher s / M (chat: session s / M, so
//            the K sessions take turns, M lines each; redis: the one publisher connection);
//            at most W messages are in flight: message s may be sent only once every message
//            before s - W + 1 has reached all K-1 of its receivers (the window)
//   end:     when all K*M*(K-1) deliveries have arrived; a lost, duplicated, reordered or
//            foreign line, a close, or the deadline is an error: stderr says which, exit 1
//
// The measured window is the publish phase: the server's CPU (utime+stime from /proc/PID/stat,
// proc_cpu_ticks in benchutil.c) and ours (getrusage) are read at its two edges.
//
// Every payload is SIZE bytes of text: "<publisher> <seq> " then filler. A receiver knows
// which messages it must see, and in which order (each publisher's, in the order it sent
// them), so a gap is found at the first line after it, not only in the final count.

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "benchutil.h"

#define PROG "chatload"

// Same reasoning as loadgen.c: a dropped SYN is retried after 1 s, 3 s, ...
#define CONNECT_TIMEOUT_MS 5000

// Descriptors besides the sockets: stdio, the epoll instance, /proc reads, libc headroom.
#define FD_HEADROOM 16

// Per-connection input buffer. The longest line we expect is a chat line: a name of at most
// 32 bytes, ": ", the payload and "\n"; anything that does not fit is an error, not a resize.
#define IN_CAP 8192

// The redis channel every subscriber listens on.
#define CHANNEL "bench"

enum mode { MODE_CHAT, MODE_REDIS };

struct options {
    const char *host;
    const char *port;
    enum mode mode;
    long conns;      // K: connections to the server
    long per_pub;    // M: lines per publisher (chat); redis sends K*M from its one publisher
    long size;       // payload bytes
    long window;     // W: messages in flight at most
    double timeout;  // seconds for the whole run, join included
    long server_pid; // 0, or a PID whose CPU time to report per delivery
};

struct conn {
    int fd;
    long id;               // 0..K-1; in redis mode K-1 is the publisher
    char in[IN_CAP];
    size_t inlen;
    char *out;             // pending output (publishers only)
    size_t outlen, outoff, outcap;
    int want_out;          // EPOLLOUT registered
    // chat: join bookkeeping
    int welcomed;
    // redis: RESP frame parser state (see redis_line)
    int subscribed;
    int frame_line;        // lines seen of the current frame; -1 between frames
    int frame_kind;        // 1 subscribe, 2 message
    long bulk_len;
    // every receiver: how many messages of each publisher it has had (chat: K counters,
    // redis: one), so it knows the seq the next line from that publisher must carry
    uint32_t *seen;
    uint64_t received;
};

static struct options opt;
static struct conn *conns;
static int epfd = -1;
static long receivers;          // K-1 in both modes
static uint64_t total_msgs;     // K*M
static uint64_t next_send;      // next message to publish
static uint64_t done_upto;      // every message below this has reached all its receivers
static uint32_t *ring;          // deliveries so far of message s, at ring[s % W]
static uint64_t deliveries;
static uint64_t welcomes, joins; // chat join phase
static long subscribed;          // redis join phase
static uint64_t pub_replies;     // redis: PUBLISH replies read
static int failed;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Reports the first error (later ones are usually its consequences) and ends the run.
static void fail(const char *fmt, ...)
{
    if (failed++)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", PROG);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

// ---------------------------------------------------------------------------------------------
// Output: a publisher's queue, flushed as the socket takes it
// ---------------------------------------------------------------------------------------------

static void conn_watch(struct conn *c, int want_out)
{
    if (c->want_out == want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        fail("conn %ld: epoll_ctl(MOD): %s", c->id, strerror(errno));
    c->want_out = want_out;
}

static void conn_flush(struct conn *c)
{
    while (c->outoff < c->outlen) {
        ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (n > 0) {
            c->outoff += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_watch(c, 1);
            return;
        }
        fail("conn %ld: send: %s", c->id, n < 0 ? strerror(errno) : "sent nothing");
        return;
    }
    c->outoff = c->outlen = 0;
    conn_watch(c, 0);
}

static void conn_queue(struct conn *c, const char *data, size_t len)
{
    if (c->outlen + len > c->outcap) {
        size_t cap = c->outcap ? c->outcap : 4096;
        while (cap < c->outlen + len)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (p == NULL) {
            fail("out of memory");
            return;
        }
        c->out = p;
        c->outcap = cap;
    }
    memcpy(c->out + c->outlen, data, len);
    c->outlen += len;
}

// The payload of message S from publisher P: "P S " and filler up to SIZE bytes. No byte of
// it is '\r' or '\n', so it is one chat line and one RESP bulk string with no escaping.
static size_t make_payload(char *buf, long p, uint64_t s)
{
    int n = snprintf(buf, (size_t)opt.size + 1, "%ld %" PRIu64 " ", p, s);
    for (long i = n; i < opt.size; i++)
        buf[i] = (char)('a' + (s + (uint64_t)i) % 26);
    return (size_t)opt.size;
}

// Sends every message the window allows. Chat: message s goes out from session s / M;
// redis: from the publisher connection, as `PUBLISH bench <payload>` in RESP.
static void publish_allowed(void)
{
    char payload[4096], frame[4200];
    while (!failed && next_send < total_msgs && next_send < done_upto + (uint64_t)opt.window) {
        uint64_t s = next_send++;
        if (opt.mode == MODE_CHAT) {
            long p = (long)(s / (uint64_t)opt.per_pub);
            size_t n = make_payload(payload, p, s);
            payload[n++] = '\n';
            conn_queue(&conns[p], payload, n);
            conn_flush(&conns[p]);
        } else {
            size_t n = make_payload(payload, 0, s);
            int h = snprintf(frame, sizeof frame, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%s\r\n$%zu\r\n",
                             strlen(CHANNEL), CHANNEL, n);
            memcpy(frame + h, payload, n);
            memcpy(frame + h + n, "\r\n", 2);
            struct conn *pub = &conns[opt.conns - 1];
            conn_queue(pub, frame, (size_t)h + n + 2);
            conn_flush(pub);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Input: every line a receiver gets is checked against what it must get next
// ---------------------------------------------------------------------------------------------

// Receiver C got PAYLOAD (LEN bytes). Checks it, counts it, and moves the window.
static void delivered(struct conn *c, const char *payload, size_t len)
{
    char copy[64];
    size_t k = len < sizeof copy - 1 ? len : sizeof copy - 1;
    memcpy(copy, payload, k);
    copy[k] = '\0';
    char *end;
    long p = strtol(copy, &end, 10);
    uint64_t s = end != copy && *end == ' ' ? strtoull(end + 1, &end, 10) : UINT64_MAX;
    long publishers = opt.mode == MODE_CHAT ? opt.conns : 1;
    if ((long)len != opt.size || s == UINT64_MAX || p < 0 || p >= publishers) {
        fail("conn %ld: unexpected payload (%zu bytes): '%.40s'", c->id, len, copy);
        return;
    }
    if (opt.mode == MODE_CHAT && p == c->id) {
        fail("conn %ld: received its own message %" PRIu64 " (the sender must be skipped)",
             c->id, s);
        return;
    }
    // The seq the next line from publisher P must carry: its first message plus what C has had.
    uint64_t first = opt.mode == MODE_CHAT ? (uint64_t)p * (uint64_t)opt.per_pub : 0;
    uint64_t want = first + c->seen[p];
    if (s != want) {
        fail("conn %ld: from publisher %ld got message %" PRIu64 ", expected %" PRIu64 " (%s)",
             c->id, p, s, want, s > want ? "a delivery was lost" : "duplicated or reordered");
        return;
    }
    if (s >= next_send) {
        fail("conn %ld: got message %" PRIu64 " that was never sent", c->id, s);
        return;
    }
    c->seen[p]++;
    c->received++;
    deliveries++;
    ring[s % (uint64_t)opt.window]++;
    while (done_upto < next_send && ring[done_upto % (uint64_t)opt.window] == (uint32_t)receivers) {
        ring[done_upto % (uint64_t)opt.window] = 0;
        done_upto++;
    }
}

static void chat_line(struct conn *c, const char *line, size_t len)
{
    if (len >= 2 && line[0] == '*' && line[1] == ' ') {
        if (len > 10 && memcmp(line, "* welcome ", 10) == 0 && !c->welcomed) {
            c->welcomed = 1;
            welcomes++;
        } else if (len > 9 && memcmp(line + len - 7, " joined", 7) == 0) {
            joins++;
        } else {
            // `* userN left`, `* ... dropped (too slow)`, `* idle timeout`: none belongs in a run.
            fail("conn %ld: unexpected server line: '%.*s'", c->id, (int)(len > 80 ? 80 : len),
                 line);
        }
        return;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || colon + 1 >= line + len || colon[1] != ' ') {
        fail("conn %ld: not a chat line: '%.*s'", c->id, (int)(len > 80 ? 80 : len), line);
        return;
    }
    delivered(c, colon + 2, (size_t)(line + len - colon - 2));
}

// RESP, only as much of it as pub/sub sends here: a subscriber gets
//   *3 $9 subscribe $5 bench :1        (the confirmation, 6 lines)
//   *3 $7 message $5 bench $64 <64 B>  (one delivery, 7 lines)
// and the publisher gets `:N` (N = subscribers that received the message) per PUBLISH.
static void redis_line(struct conn *c, const char *line, size_t len)
{
    if (c->id == opt.conns - 1) {
        char *end;
        long n = len > 1 && line[0] == ':' ? strtol(line + 1, &end, 10) : -1;
        if (n != receivers) {
            fail("publisher: PUBLISH reply '%.*s', expected :%ld", (int)(len > 80 ? 80 : len),
                 line, receivers);
            return;
        }
        pub_replies++;
        return;
    }
    int i = c->frame_line < 0 ? 0 : c->frame_line;
    int ok = 1;
    if (i == 0)
        ok = len == 2 && memcmp(line, "*3", 2) == 0;
    else if (i == 1 || i == 3)
        ok = len > 1 && line[0] == '$';
    else if (i == 2) {
        c->frame_kind = len == 9 && memcmp(line, "subscribe", 9) == 0 ? 1
                        : len == 7 && memcmp(line, "message", 7) == 0 ? 2
                                                                       : 0;
        ok = c->frame_kind != 0;
    } else if (i == 4)
        ok = len == strlen(CHANNEL) && memcmp(line, CHANNEL, len) == 0;
    else if (i == 5 && c->frame_kind == 1) {
        ok = len == 2 && memcmp(line, ":1", 2) == 0 && !c->subscribed;
        if (ok) {
            c->subscribed = 1;
            subscribed++;
        }
        c->frame_line = -1;
        if (!ok)
            fail("subscriber %ld: unexpected RESP line '%.*s'", c->id, (int)len, line);
        return;
    } else if (i == 5) {
        c->bulk_len = len > 1 && line[0] == '$' ? strtol(line + 1, NULL, 10) : -1;
        ok = c->bulk_len >= 0;
    } else if (i == 6) {
        ok = (long)len == c->bulk_len;
        c->frame_line = -1;
        if (ok)
            delivered(c, line, len);
        else
            fail("subscriber %ld: bulk of %zu bytes, announced %ld", c->id, len, c->bulk_len);
        return;
    }
    if (!ok) {
        fail("subscriber %ld: unexpected RESP line %d: '%.*s'", c->id, i,
             (int)(len > 80 ? 80 : len), line);
        return;
    }
    c->frame_line = i + 1;
}

// Reads what is there and hands each complete line (without its \n or \r\n) to the parser.
static void conn_read(struct conn *c)
{
    for (;;) {
        if (c->inlen == IN_CAP) {
            fail("conn %ld: a line longer than %d bytes", c->id, IN_CAP);
            return;
        }
        ssize_t n = recv(c->fd, c->in + c->inlen, IN_CAP - c->inlen, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            fail("conn %ld: %s after %" PRIu64 " deliveries", c->id,
                 n == 0 ? "closed by the server" : strerror(errno), c->received);
            return;
        }
        size_t start = 0, end = c->inlen + (size_t)n;
        c->inlen = end;
        for (;;) {
            char *nl = memchr(c->in + start, '\n', end - start);
            if (nl == NULL)
                break;
            size_t len = (size_t)(nl - (c->in + start));
            if (opt.mode == MODE_REDIS && len > 0 && c->in[start + len - 1] == '\r')
                len--;
            if (opt.mode == MODE_CHAT)
                chat_line(c, c->in + start, len);
            else
                redis_line(c, c->in + start, len);
            if (failed)
                return;
            start = (size_t)(nl - c->in) + 1;
        }
        memmove(c->in, c->in + start, end - start);
        c->inlen = end - start;
        if ((size_t)n < IN_CAP - (end - (size_t)n)) // a short read: the socket is drained
            return;
    }
}

// One turn of the loop: wait (at most until DEADLINE), read what came, flush what is pending.
static void loop_turn(uint64_t deadline)
{
    struct epoll_event evs[256];
    uint64_t now = now_ns();
    int ms = now >= deadline ? 0 : (int)((deadline - now) / 1000000u) + 1;
    int n = epoll_wait(epfd, evs, 256, ms > 100 ? 100 : ms);
    if (n < 0 && errno != EINTR)
        fail("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n && !failed; i++) {
        struct conn *c = evs[i].data.ptr;
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            conn_read(c);
        if (!failed && (evs[i].events & EPOLLOUT))
            conn_flush(c);
    }
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

static void usage(FILE *to)
{
    fprintf(to,
            "usage: %s -p PORT [-m chat|redis] [-c K] [-n M] [-s BYTES] [-W W] [-P PID]\n"
            "\n"
            "Broadcast load: K connections; the publishers take turns, M lines each, at most W\n"
            "messages in flight (a message is in flight until all K-1 receivers have it).\n"
            "  chat:  K sessions of a 07_chat-style server; session i sends lines\n"
            "         i*M .. i*M+M-1, every other session must receive each exactly once\n"
            "  redis: K-1 subscribers of channel '" CHANNEL "' and one publisher connection\n"
            "         sending K*M PUBLISH commands: the same K-1 deliveries per message\n"
            "Prints one line:\n"
            "  mode=.. conns=.. msgs=.. size=.. window=.. deliveries=.. secs=.. "
            "deliveries_per_s=.. errors=..\n"
            "\n"
            "  -H, --host HOST        server address (default 127.0.0.1)\n"
            "  -p, --port PORT        server port (required)\n"
            "  -m, --mode MODE        chat (default) or redis\n"
            "  -c, --conns K          connections (default 10, at least 2)\n"
            "  -n, --per-publisher M  lines per publisher (default 100)\n"
            "  -s, --size BYTES       payload bytes (default 64, at least 24)\n"
            "  -W, --window W         messages in flight at most (default 32)\n"
            "  -T, --timeout SECS     the whole run's deadline, join included (default 60)\n"
            "  -P, --server-pid PID   also report CPU per delivery: the server's (utime+stime\n"
            "                         of PID from /proc) and ours, over the publish phase:\n"
            "                         adds srv_cpu_us_per_delivery=.. cli_cpu_us_per_delivery=..\n"
            "  -h, --help             this text\n"
            "\n"
            "A lost, duplicated, reordered or foreign line, a closed connection, or a run that\n"
            "misses its deadline is an error: described on stderr, exit status 1. A bad option\n"
            "exits 2.\n",
            PROG);
}

static void bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", PROG);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    usage(stderr);
    exit(2);
}

static long parse_long(const char *s, long min, long max, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        bad_usage(what, s);
    return v;
}

static void parse_options(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},       {"port", required_argument, NULL, 'p'},
        {"mode", required_argument, NULL, 'm'},       {"conns", required_argument, NULL, 'c'},
        {"per-publisher", required_argument, NULL, 'n'}, {"size", required_argument, NULL, 's'},
        {"window", required_argument, NULL, 'W'},     {"timeout", required_argument, NULL, 'T'},
        {"server-pid", required_argument, NULL, 'P'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    opt = (struct options){.host = "127.0.0.1", .mode = MODE_CHAT, .conns = 10, .per_pub = 100,
                           .size = 64, .window = 32, .timeout = 60};
    opterr = 0;
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "H:p:m:c:n:s:W:T:P:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H': opt.host = optarg; break;
        case 'p': opt.port = optarg; break;
        case 'm':
            if (strcmp(optarg, "chat") == 0)
                opt.mode = MODE_CHAT;
            else if (strcmp(optarg, "redis") == 0)
                opt.mode = MODE_REDIS;
            else
                bad_usage("bad mode '%s' (chat or redis)", optarg);
            break;
        case 'c': opt.conns = parse_long(optarg, 2, 100000, "bad connection count '%s'"); break;
        case 'n': opt.per_pub = parse_long(optarg, 1, 10000000, "bad line count '%s'"); break;
        // 24 bytes hold "P S " for any P and S we can reach; 4000 keeps a chat line under 4 KiB.
        case 's': opt.size = parse_long(optarg, 24, 4000, "bad payload size '%s'"); break;
        case 'W': opt.window = parse_long(optarg, 1, 1000000, "bad window '%s'"); break;
        case 'T':
            opt.timeout = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(opt.timeout > 0) || opt.timeout > 3600)
                bad_usage("bad timeout '%s'", optarg);
            break;
        case 'P': opt.server_pid = parse_long(optarg, 1, INT_MAX, "bad pid '%s'"); break;
        case 'h': usage(stdout); exit(0);
        default:
            bad_usage("unknown option or missing value: '%s'",
                      optind > 0 && optind <= argc ? argv[optind - 1] : "?");
        }
    }
    if (optind < argc)
        bad_usage("unexpected argument '%s'", argv[optind]);
    if (opt.port == NULL)
        bad_usage("%s", "a port is required (-p PORT)");
}

// ---------------------------------------------------------------------------------------------
// main: connect, join, publish, report
// ---------------------------------------------------------------------------------------------

// Leaves politely, as loadgen does: half-close every connection and read (and discard) what
// still comes, the other sessions' `* userN left` lines, until the server closes each one.
// Closing with unread data would make the kernel send a reset, and every run would end with
// the server failing sends to dead sockets. Bounded: DRAIN_TIMEOUT_MS, then close anyway.
#define DRAIN_TIMEOUT_MS 2000

static void goodbye(long opened)
{
    long open_left = 0;
    for (long i = 0; i < opened; i++)
        if (conns[i].fd >= 0 && shutdown(conns[i].fd, SHUT_WR) == 0)
            open_left++;
    uint64_t deadline = now_ns() + (uint64_t)DRAIN_TIMEOUT_MS * 1000000u;
    char sink[65536];
    while (open_left > 0 && now_ns() < deadline) {
        struct epoll_event evs[256];
        int n = epoll_wait(epfd, evs, 256, 50);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            ssize_t r = recv(c->fd, sink, sizeof sink, 0);
            if (r > 0 || (r < 0 && (errno == EINTR || errno == EAGAIN)))
                continue;
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL); // the server closed it (or reset it)
            close(c->fd);
            c->fd = -1;
            open_left--;
        }
    }
}

static int joined(void)
{
    if (opt.mode == MODE_CHAT)
        return welcomes == (uint64_t)opt.conns &&
               joins == (uint64_t)opt.conns * (uint64_t)(opt.conns - 1) / 2;
    return subscribed == receivers;
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    signal(SIGPIPE, SIG_IGN); // a reset shows up as a send error on that connection
    uint64_t deadline = now_ns() + (uint64_t)(opt.timeout * 1e9);
    receivers = opt.conns - 1;
    total_msgs = (uint64_t)opt.conns * (uint64_t)opt.per_pub;
    long publishers = opt.mode == MODE_CHAT ? opt.conns : 1;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int gai = getaddrinfo(opt.host, opt.port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "%s: %s:%s: %s\n", PROG, opt.host, opt.port, gai_strerror(gai));
        return 1;
    }
    if (ensure_fd_limit(PROG, (rlim_t)opt.conns + FD_HEADROOM) != 0)
        return 1;
    conns = calloc((size_t)opt.conns, sizeof *conns);
    ring = calloc((size_t)opt.window, sizeof *ring);
    epfd = epoll_create1(0);
    if (conns == NULL || ring == NULL || epfd < 0) {
        fprintf(stderr, "%s: setup: %s\n", PROG, conns && ring ? strerror(errno) : "out of memory");
        return 1;
    }

    // 1. Connect (and, for redis, subscribe) every connection; the reads happen in the loop.
    char err[160];
    long opened = 0;
    for (; opened < opt.conns && !failed; opened++) {
        struct conn *c = &conns[opened];
        c->id = opened;
        c->frame_line = -1;
        c->seen = calloc((size_t)publishers, sizeof *c->seen);
        c->fd = connect_nonblocking(ai, CONNECT_TIMEOUT_MS, err, sizeof err);
        if (c->seen == NULL || c->fd < 0) {
            fail("conn %ld: %s", opened, c->seen ? err : "out of memory");
            break;
        }
        // A publisher's lines go out as they are allowed, never held back by Nagle.
        int one = 1;
        if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
            fail("conn %ld: TCP_NODELAY: %s", opened, strerror(errno));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            fail("conn %ld: epoll_ctl(ADD): %s", opened, strerror(errno));
        if (opt.mode == MODE_REDIS && opened < opt.conns - 1) {
            static const char sub[] = "SUBSCRIBE " CHANNEL "\r\n";
            conn_queue(c, sub, sizeof sub - 1);
            conn_flush(c);
        }
        // Keep up with the join lines while connecting, so no socket buffer fills meanwhile.
        if (opened % 64 == 63)
            loop_turn(now_ns());
    }
    freeaddrinfo(ai);

    // 2. Wait until every session is known to the server (chat) or subscribed (redis).
    while (!failed && !joined()) {
        if (now_ns() >= deadline) {
            fail("join: %" PRIu64 " of %ld welcomes, %" PRIu64 " of %ld joins, %ld of %ld "
                 "subscriptions within %.0f s",
                 welcomes, opt.mode == MODE_CHAT ? opt.conns : 0, joins,
                 opt.mode == MODE_CHAT ? opt.conns * (opt.conns - 1) / 2 : 0, subscribed,
                 opt.mode == MODE_REDIS ? receivers : 0, opt.timeout);
            break;
        }
        loop_turn(deadline);
    }

    // 3. The measured window: publish until every delivery has arrived.
    long hz = sysconf(_SC_CLK_TCK);
    long long srv0 = opt.server_pid ? proc_cpu_ticks(opt.server_pid) : -1;
    double cli0 = cpu_seconds_self();
    uint64_t t0 = now_ns();
    uint64_t expected = total_msgs * (uint64_t)receivers;
    while (!failed && (deliveries < expected ||
                       (opt.mode == MODE_REDIS && pub_replies < total_msgs))) {
        publish_allowed();
        if (failed)
            break;
        if (now_ns() >= deadline) {
            long short_of = 0, first = -1;
            for (long i = 0; i < opt.conns; i++) {
                uint64_t want = opt.mode == MODE_CHAT ? total_msgs - (uint64_t)opt.per_pub
                                : i < opt.conns - 1   ? total_msgs
                                                      : 0;
                if (conns[i].received < want) {
                    short_of++;
                    if (first < 0)
                        first = i;
                }
            }
            fail("deadline (%.0f s): %" PRIu64 " of %" PRIu64 " deliveries; %ld receivers short, "
                 "the first conn %ld with %" PRIu64 "; %" PRIu64 " of %" PRIu64 " messages sent",
                 opt.timeout, deliveries, expected, short_of, first,
                 first >= 0 ? conns[first].received : 0, next_send, total_msgs);
            break;
        }
        loop_turn(deadline);
    }
    uint64_t t1 = now_ns();
    long long srv1 = opt.server_pid ? proc_cpu_ticks(opt.server_pid) : -1;
    double cli = cpu_seconds_self() - cli0;
    double secs = (double)(t1 - t0) / 1e9;

    printf("mode=%s conns=%ld msgs=%" PRIu64 " size=%ld window=%ld deliveries=%" PRIu64
           " secs=%.3f deliveries_per_s=%.0f errors=%d",
           opt.mode == MODE_CHAT ? "chat" : "redis", opt.conns, total_msgs, opt.size, opt.window,
           deliveries, secs, secs > 0 ? (double)deliveries / secs : 0, failed);
    if (opt.server_pid) {
        double d = (double)deliveries;
        if (srv0 < 0 || srv1 < 0)
            fprintf(stderr, "%s: cannot read the CPU time of pid %ld from /proc\n", PROG,
                    opt.server_pid);
        printf(" srv_cpu_us_per_delivery=%.4f cli_cpu_us_per_delivery=%.4f",
               srv0 >= 0 && srv1 >= 0 && d > 0 ? (double)(srv1 - srv0) / (double)hz * 1e6 / d
                                                : -1.0,
               d > 0 ? cli * 1e6 / d : -1.0);
    }
    printf("\n");
    fflush(stdout);

    goodbye(opened);
    for (long i = 0; i < opened; i++) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
        free(conns[i].seen);
        free(conns[i].out);
    }
    free(conns);
    free(ring);
    close(epfd);
    return failed ? 1 : 0;
}
