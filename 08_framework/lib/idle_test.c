// idle_test.c: the heap an idle connection costs, against the target (at most 512
// bytes beyond the kernel's buffers). An in-process echo server (rx.h, the raw codec, or the
// RESP codec with -k resp: its per-connection state is kv_server's) with T io threads; a
// client thread opens C connections in batches, each sends one message (raw: 16 bytes; resp:
// a 16-byte request, "*1\r\n$6\r\nNNNNNN\r\n", echoed as its frame) and reads its echo whole,
// and leaves it open. In the server's own thread, between two turns, the heap
// in use (mallinfo2: uordblks + hblkhd, with one malloc arena for every thread) is read before
// the first connection and once all are idle: (after - before) / C must be at most MAX.
// Under a sanitizer (its allocator is not malloc's) it says so and checks nothing.
//   idle_test [-k raw|resp] [-t IO_THREADS] [-c CONNECTIONS] [-m MAX_BYTES]
//                                                  (defaults raw, 0, 10000, 512)
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "rx.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifdef SANITIZED
static const bool sanitized = true;
#else
static const bool sanitized = false;
#endif

enum { MSG = 16, BATCH = 250 };

static rx_server *srv;
static int port;
static int nconns = 10000;
static bool resp;  // -k resp: the RESP codec (a state per connection, kept while idle)
static int *fds;
static sem_t measured;
static size_t heap_before, heap_after;
static atomic_int echoed_frames;

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

// Tasks on the main loop (rx_loop_post from the client thread).
static void measure(void *arg)
{
    *(size_t *)arg = heap_in_use();
    sem_post(&measured);
}

static void stop(void *arg)
{
    (void)arg;
    rx_server_stop(srv);
}

static void on_message(rx_session *s, const rx_frame *f)
{
    atomic_fetch_add(&echoed_frames, 1);
    if (rx_send(s, f->data, f->len) == -1)
        fail("rx_send refused an open session's echo");
}

static void post(void (*fn)(void *), void *arg)
{
    if (rx_loop_post(rx_server_loop(srv), fn, arg) == -1)
        fail("rx_loop_post");
}

// Connection I's message: MSG bytes (and a NUL) at OUT.
static void make_msg(char out[MSG + 1], int i)
{
    if (resp)
        snprintf(out, MSG + 1, "*1\r\n$6\r\n%06u\r\n", (unsigned)i % 1000000u);
    else
        snprintf(out, MSG + 1, "%015d", i);  // 15 digits and the NUL: 16 bytes sent
}

// Reads exactly N bytes from FD within SECONDS (x TIMEOUT_SCALE) and checks them.
static void read_echo(int fd, const char *want, int i)
{
    char got[MSG];
    size_t have = 0;
    double deadline = now_s() + 10 * scale;
    while (have < MSG) {
        int left_ms = (int)((deadline - now_s()) * 1000);
        if (left_ms <= 0)
            fail("connection %d: %zu of %d echoed bytes within %.0f s", i, have, MSG, 10 * scale);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, left_ms);
        if (r == -1 && errno != EINTR)
            fail("poll: %s", strerror(errno));
        if (r <= 0)
            continue;
        ssize_t n = read(fd, got + have, MSG - have);
        if (n <= 0)
            fail("connection %d: %s after %zu echoed bytes", i, n == 0 ? "EOF" : strerror(errno),
                 have);
        have += (size_t)n;
    }
    if (memcmp(got, want, MSG) != 0)
        fail("connection %d: its echo differs from what it sent", i);
}

static void *client(void *arg)
{
    (void)arg;
    post(measure, &heap_before);
    wait_sem(&measured, 10, "the heap measured before the first connection");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    for (int base = 0; base < nconns; base += BATCH) {
        int end = base + BATCH < nconns ? base + BATCH : nconns;
        char msg[MSG + 1];
        for (int i = base; i < end; i++) {
            fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fds[i] == -1 || connect(fds[i], (struct sockaddr *)&a, sizeof a) == -1)
                fail("connection %d: %s", i, strerror(errno));
            make_msg(msg, i);
            if (write(fds[i], msg, MSG) != MSG)
                fail("connection %d: write: %s", i, strerror(errno));
        }
        for (int i = base; i < end; i++) {
            make_msg(msg, i);
            read_echo(fds[i], msg, i);
        }
    }
    // Every echo arrived, so every reply has left its output queue: the connections are idle.
    post(measure, &heap_after);
    wait_sem(&measured, 10, "the heap measured with every connection idle");
    for (int i = 0; i < nconns; i++)
        close(fds[i]);
    post(stop, NULL);
    return NULL;
}

int main(int argc, char **argv)
{
    int io_threads = 0;
    long max_bytes = 512;
    for (int i = 1; i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: %s [-k raw|resp] [-t IO_THREADS] [-c CONNECTIONS] [-m MAX_BYTES]\n"
                   "  the heap per idle connection after one echo (raw codec, or resp: "
                   "kv_server's); exits 0 when at most MAX_BYTES (512)\n", argv[0]);
            return 0;
        }
        if (v == NULL || (strcmp(argv[i], "-t") && strcmp(argv[i], "-c") && strcmp(argv[i], "-m") &&
                          strcmp(argv[i], "-k"))) {
            fprintf(stderr, "idle_test: bad argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
        if (argv[i][1] == 'k') {
            if (strcmp(v, "raw") && strcmp(v, "resp")) {
                fprintf(stderr, "idle_test: -k raw or -k resp, not '%s'\n", v);
                return 2;
            }
            resp = strcmp(v, "resp") == 0;
            continue;
        }
        long n = strtol(v, NULL, 10);
        if (argv[i][1] == 't')
            io_threads = (int)n;
        else if (argv[i][1] == 'c')
            nconns = (int)n;
        else
            max_bytes = n;
    }
    if (io_threads < 0 || io_threads > 64 || nconns < 1 || nconns > 100000 || max_bytes < 1) {
        fprintf(stderr, "idle_test: -t 0..64, -c 1..100000, -m 1.. (see --help)\n");
        return 2;
    }
    scale_init();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (sanitized) {
        printf("idle_test: skipped: a sanitizer's allocator is not malloc's (mallinfo2 does not see it)\n");
        return 0;
    }
    alarm((unsigned)(120 * scale));  // the last resort: every wait has its own deadline
    // The client's sockets and the server's, both in this process.
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        fail("getrlimit: %s", strerror(errno));
    rlim_t want = 2 * (rlim_t)nconns + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
            fail("setrlimit: %s", strerror(errno));
    }
    if (rl.rlim_cur < want) {
        int fit = (int)((rl.rlim_cur - 64) / 2);
        if (fit < 1000)
            fail("a descriptor limit of %llu leaves room for %d connections: raise ulimit -n",
                 (unsigned long long)rl.rlim_cur, fit);
        printf("the descriptor limit (%llu) holds %d connections, not %d\n",
               (unsigned long long)rl.rlim_cur, fit, nconns);
        nconns = fit;
    }
    // One arena: an io thread's connections are counted with main's (mallinfo2 reads only the
    // main arena).
    if (mallopt(M_ARENA_MAX, 1) != 1)
        fail("mallopt(M_ARENA_MAX, 1)");
    fds = malloc((size_t)nconns * sizeof *fds);
    if (fds == NULL || sem_init(&measured, 0, 0) == -1)
        fail("out of memory");
    rx_log_set_level(RX_LOG_WARN);
    rx_config cfg = rx_config_default();
    cfg.io_threads = io_threads;
    srv = rx_server_new(&cfg);
    if (srv == NULL)
        fail("rx_server_new");
    rx_codec codec = resp ? rx_codec_resp(1u << 20) : rx_codec_raw();  // kv_server's default
    rx_factory f = {.message = on_message};
    port = rx_listen(srv, "127.0.0.1", 0, &codec, &f);
    if (port < 0)
        fail("rx_listen");
    pthread_t th;
    int err = pthread_create(&th, NULL, client, NULL);
    if (err != 0)
        fail("pthread_create: %s", strerror(err));
    if (rx_server_run(srv) != 0)
        fail("rx_server_run");
    if ((err = pthread_join(th, NULL)) != 0)
        fail("pthread_join: %s", strerror(err));
    rx_stats st;
    rx_server_stats(srv, &st);
    rx_server_free(srv);
    free(fds);
    check(atomic_load(&echoed_frames) >= nconns && st.accepted == (uint64_t)nconns,
          "%d connections accepted, each echoed (%d frames: a frame may come in pieces)", nconns,
          atomic_load(&echoed_frames));
    double per = ((double)heap_after - (double)heap_before) / nconns;
    check(per <= (double)max_bytes,
          "io threads %d, %s codec: %.0f bytes of heap per idle connection after one echo (at "
          "most %ld): %zu bytes in use before the first, %zu with %d idle",
          io_threads, resp ? "resp" : "raw", per, max_bytes, heap_before, heap_after, nconns);
    return 0;
}
