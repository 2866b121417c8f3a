// lifetime_test.c: the lifetime rules of rx.h checked in one process: a line server on
// 127.0.0.1:0 whose callbacks act out each case, driven by a client thread on plain sockets.
//
// Usage: lifetime_test [IO_THREADS]   (default 0; the tests run it with 0, 1 and 4)
// Cases (each prints one line when it passed; the first failure exits 1 with a message):
//  (a) session B closed from inside session A's message callback, then B's pointer used in
//      the same callback (id, rx_send refused, closing, still in the table): B's closed
//      callback runs once, later; B's client gets nothing more, then EOF.
//  (b) a send after the close is queued: after rx_session_close(flush) rx_send is refused and
//      the client gets what was sent before the close, then EOF (b1); with io threads, the
//      connection reset and its descriptor closed and taken by another socket while main is
//      still busy: the late send and close reach no socket (b2).
//  (c) a send by id to a session whose descriptor a new connection has since been given:
//      sends from a timer every millisecond until the old one closes, and a lookup right
//      after its closed callback; the new client gets exactly its own bytes.
//  (d) rx_timer_stop from inside its own callback (repeating), and a timer that stops another
//      due in the same turn: neither fires again.
// Bounded: every socket wait has a deadline, alarm() ends a hung run.

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rx.h"
#include "test_util.h"

static int io_threads;
static rx_server *srv;
static int port;

_Noreturn static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lifetime_test (io threads %d): FAIL: ", io_threads);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static unsigned scaled(unsigned ms)
{
    return (unsigned)(ms * scale);
}

// ================================================================ the server (main thread)

// What outlives a session, for the checks after its closed callback: one per session.
struct rec {
    uint64_t id;
    char name[16];
    int opened, closed;
    enum rx_close_reason why;
};
static struct rec recs[256];
static int nrecs;

#define MAGIC 0x5e55104u
struct sess {
    unsigned magic;  // zeroed before the free: a use after closed shows as a wrong magic
    struct rec *rec;
};

// A failure found in a callback: the first one is kept and reported after the run.
static char server_fail[512];
static void sfail(const char *fmt, ...)
{
    if (server_fail[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(server_fail, sizeof server_fail, fmt, ap);
    va_end(ap);
    rx_server_stop(srv);
}

static struct rec *rec_by_name(const char *name)
{
    for (int i = 0; i < nrecs; i++)
        if (strcmp(recs[i].name, name) == 0)
            return &recs[i];
    return NULL;
}

static rx_session *find_by_name(const char *name)
{
    struct rec *r = rec_by_name(name);
    return r ? rx_session_find(srv, r->id) : NULL;
}

static void *on_create(void *arg, rx_session *s)
{
    (void)arg;
    if (nrecs == (int)(sizeof recs / sizeof recs[0]))
        die("more sessions than the test expects");
    struct sess *st = malloc(sizeof *st);
    if (!st)
        die("out of memory");
    st->magic = MAGIC;
    st->rec = &recs[nrecs++];
    st->rec->id = rx_session_id(s);
    return st;
}

static void on_opened(rx_session *s)
{
    struct sess *st = rx_session_data(s);
    st->rec->opened++;
}

// (c): the lookup right after the old session's closed callback.
static void after_close(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    struct rec *r = arg;
    rx_session *s = rx_session_find(srv, r->id);
    if (s) {
        sfail("(c) rx_session_find(%llu) found session %s after its closed callback",
              (unsigned long long)r->id, r->name);
        rx_send(s, "for-old", 7);
    }
}

static void on_closed(rx_session *s, enum rx_close_reason why)
{
    struct sess *st = rx_session_data(s);
    if (!st || st->magic != MAGIC) {
        sfail("closed callback of session %llu with its state already gone",
              (unsigned long long)rx_session_id(s));
        return;
    }
    st->rec->closed++;
    st->rec->why = why;
    if (st->rec->name[0] == 'F' && !rx_timer_start(rx_server_loop(srv), 0, 0, after_close, st->rec))
        sfail("out of memory for a timer");
    st->magic = 0;
    free(st);
}

// ---- (c) the spam timer: every millisecond, a line to the session named spam_name, found by id.
static uint64_t spam_id;
static bool spam_off, spam_active;
static unsigned spam_sent;

static void on_spam(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)arg;
    if (spam_off) {
        rx_timer_stop(loop, t);  // from inside its own callback (rule 5)
        spam_active = false;
        return;
    }
    rx_session *s = rx_session_find(srv, spam_id);
    if (s && rx_send(s, "for-F", 5) == 0)
        spam_sent++;
}

// ---- (d) timers stopping themselves and each other.
static int t1_fires, xy_fires;
static rx_timer *tx, *ty;
static uint64_t control_id, timers_started_ms, t1_stopped_ms;

static void on_t1(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)arg;
    if (++t1_fires == 3) {
        rx_timer_stop(loop, t);
        t1_stopped_ms = rx_loop_now_ms(loop);
    }
    else if (t1_fires > 3)
        sfail("(d) a repeating timer fired again after rx_timer_stop from its own callback");
}

static void on_xy(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)arg;
    xy_fires++;
    rx_timer *other = t == tx ? ty : tx;
    tx = ty = NULL;
    if (other)
        rx_timer_stop(loop, other);  // due in this same turn, not fired yet: it never will
}

// Every 10 ms: once the repeating timer has stopped and 30 ms more have passed (time for a
// wrong fourth firing), or after 5 s, the counts go to the driver; then it stops itself.
static void on_timers_check(rx_loop *loop, rx_timer *t, void *arg)
{
    (void)arg;
    uint64_t now = rx_loop_now_ms(loop);
    bool settled = t1_fires >= 3 && xy_fires >= 1 && now >= t1_stopped_ms + 30;
    if (!settled && now < timers_started_ms + scaled(5000))
        return;
    rx_timer_stop(loop, t);
    rx_session *c = rx_session_find(srv, control_id);
    char line[96];
    int n = snprintf(line, sizeof line, "timers %d %d", t1_fires, xy_fires);
    if (c)
        rx_send(c, line, (size_t)n);
}

// ---- (b2) main held inside a callback while the driver acts.
static atomic_int holding, go;

static void cmd_close_b(rx_session *a, const char *name)
{
    struct rec *rb = rec_by_name(name);
    rx_session *b = rb ? rx_session_find(srv, rb->id) : NULL;
    if (!b) {
        sfail("(a) no session %s to close", name);
        return;
    }
    struct sess *bst = rx_session_data(b);
    rx_session_close(b, false);
    // B is still valid for the rest of this callback (rule 2).
    if (rx_session_id(b) != rb->id)
        sfail("(a) B's id changed after its close");
    if (rx_send(b, "after close", 11) != -1)
        sfail("(a) rx_send to a closing session returned 0, want -1");
    if (!rx_session_closing(b))
        sfail("(a) rx_session_closing(B) is false after rx_session_close");
    if (rx_session_data(b) != bst || bst->magic != MAGIC)
        sfail("(a) B's state was freed by rx_session_close");
    if (rb->closed != 0)
        sfail("(a) B's closed callback ran inside A's callback");
    bool listed = false;
    for (rx_session *it = rx_session_first(srv); it; it = rx_session_next(it))
        listed |= it == b;
    if (!listed)
        sfail("(a) B left the table before its closed callback");
    rx_session_close(b, false);  // twice: still one closed callback
    rx_send(a, "done", 4);
}

static void cmd_close_flush(rx_session *c, const char *name)
{
    rx_session *d = find_by_name(name);
    if (!d) {
        sfail("(b1) no session %s", name);
        return;
    }
    if (rx_send(d, "before", 6) != 0)
        sfail("(b1) rx_send before the close returned -1");
    rx_session_close(d, true);
    if (rx_send(d, "after", 5) != -1)
        sfail("(b1) rx_send after rx_session_close(flush) returned 0, want -1");
    rx_send(c, "done", 4);
}

static void cmd_hold(rx_session *c, const char *name)
{
    rx_session *d = find_by_name(name);
    if (!d) {
        sfail("(b2) no session %s", name);
        return;
    }
    uint64_t id = rx_session_id(d);
    atomic_store(&holding, 1);
    // Blocks the main loop on purpose: the driver resets D's connection meanwhile, its io
    // thread closes the descriptor and queues the closed event, which main cannot run yet.
    uint64_t end = mono_ms() + scaled(5000);
    while (!atomic_load(&go) && mono_ms() < end)
        sleep_ms(1);
    atomic_store(&holding, 0);
    // Main has not seen D close: D is still in the table, a send and a close still go out to
    // its io thread, which must drop them (rule 3), whoever has D's descriptor number now.
    rx_session *again = rx_session_find(srv, id);
    if (again != d)
        sfail("(b2) the session changed under a callback that was still running");
    rx_send(d, "late", 4);
    rx_session_close(d, true);
    rx_send(c, "done", 4);
}

static void on_message(rx_session *s, const rx_frame *f)
{
    struct sess *st = rx_session_data(s);
    char line[128];
    if (f->len >= sizeof line) {
        sfail("a line of %zu bytes", f->len);
        return;
    }
    memcpy(line, f->data, f->len);
    line[f->len] = '\0';
    const char *arg = strchr(line, ' ') ? strchr(line, ' ') + 1 : "";
    if (strncmp(line, "I ", 2) == 0) {
        snprintf(st->rec->name, sizeof st->rec->name, "%s", arg);
        if (strcmp(arg, "C") == 0)
            control_id = rx_session_id(s);
        char reply[32];
        int n = snprintf(reply, sizeof reply, "ok %s", arg);
        rx_send(s, reply, (size_t)n);
    } else if (strncmp(line, "close ", 6) == 0) {
        cmd_close_b(s, arg);
    } else if (strncmp(line, "closeflush ", 11) == 0) {
        cmd_close_flush(s, arg);
    } else if (strncmp(line, "hold ", 5) == 0) {
        cmd_hold(s, arg);
    } else if (strncmp(line, "spam ", 5) == 0) {
        struct rec *r = rec_by_name(arg);
        spam_id = r ? r->id : 0;
        spam_off = false;
        // One spam timer at a time: the last round's may still be running, to stop itself.
        if (!spam_active && !rx_timer_start(rx_server_loop(srv), 1, 1, on_spam, NULL))
            sfail("out of memory for a timer");
        spam_active = true;
        rx_send(s, "done", 4);
    } else if (strcmp(line, "unspam") == 0) {
        spam_off = true;
        rx_send(s, "done", 4);
    } else if (strncmp(line, "greet ", 6) == 0) {
        rx_session *g = find_by_name(arg);
        char reply[32];
        int n = snprintf(reply, sizeof reply, "hello %s", arg);
        if (!g || rx_send(g, reply, (size_t)n) != 0)
            sfail("(c) cannot greet %s", arg);
        rx_send(s, "done", 4);
    } else if (strcmp(line, "timers") == 0) {
        rx_loop *loop = rx_server_loop(srv);
        timers_started_ms = rx_loop_now_ms(loop);
        tx = rx_timer_start(loop, 5, 0, on_xy, NULL);
        ty = rx_timer_start(loop, 5, 0, on_xy, NULL);
        if (!tx || !ty || !rx_timer_start(loop, 2, 2, on_t1, NULL) ||
            !rx_timer_start(loop, 10, 10, on_timers_check, NULL))
            sfail("out of memory for a timer");
    } else if (strcmp(line, "stop") == 0) {
        rx_server_stop(srv);
    } else {
        sfail("session %s sent an unexpected line '%s'", st->rec->name, line);
    }
}

// ================================================================ the driver (client thread)

static int cconnect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect: %s", strerror(errno));
    return fd;
}

static int local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("getsockname: %s", strerror(errno));
    return ntohs(a.sin_port);
}

// The server's descriptor for the connection whose client end is CLIENT (this is one
// process): the socket whose local port is the server's and whose peer is CLIENT's port.
static int server_fd_of(int client)
{
    int cport = local_port(client);
    for (int fd = 3; fd < 65536; fd++) {
        struct sockaddr_in l, p;
        socklen_t ll = sizeof l, pl = sizeof p;
        if (getsockname(fd, (struct sockaddr *)&l, &ll) != 0) {
            if (errno == EBADF && fd > 4096)
                break;
            continue;
        }
        if (getpeername(fd, (struct sockaddr *)&p, &pl) == 0 && l.sin_family == AF_INET &&
            ntohs(l.sin_port) == port && ntohs(p.sin_port) == cport)
            return fd;
    }
    return -1;
}

static void csend(int fd, const char *s)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("send '%s': %s", s, strerror(errno));
        off += (size_t)n;
    }
}

// Reads up to CAP bytes that arrive within MS; returns how many (0 at EOF or a reset, -1 when
// nothing came within MS).
static ssize_t cread(int fd, char *buf, size_t cap, unsigned ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do
        r = poll(&p, 1, (int)ms);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        die("poll: %s", strerror(errno));
    if (r == 0)
        return -1;
    ssize_t n;
    do
        n = recv(fd, buf, cap, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == ECONNRESET || errno == EPIPE))
        return 0;
    if (n < 0)
        die("recv: %s", strerror(errno));
    return n;
}

// Exactly WANT arrives on FD (every byte compared), within 5 s scaled.
static void cexpect(int fd, const char *who, const char *want)
{
    size_t len = strlen(want), got = 0;
    char buf[256];
    uint64_t end = mono_ms() + scaled(5000);
    while (got < len) {
        uint64_t now = mono_ms();
        if (now >= end)
            die("%s: got %zu of the %zu bytes of '%s' within 5 s", who, got, len, want);
        ssize_t n = cread(fd, buf, len - got < sizeof buf ? len - got : sizeof buf, (unsigned)(end - now));
        if (n == 0)
            die("%s: EOF after %zu of the %zu bytes of '%s'", who, got, len, want);
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != want[got + (size_t)i])
                die("%s: byte %zu of '%s' is 0x%02x, want 0x%02x ('%.*s' came)", who,
                    got + (size_t)i, want, (unsigned char)buf[i], (unsigned char)want[got + (size_t)i],
                    (int)n, buf);
        if (n > 0)
            got += (size_t)n;
    }
}

// Not one byte, then EOF (or a reset), within 5 s scaled.
static void cexpect_eof(int fd, const char *who)
{
    char buf[256];
    ssize_t n = cread(fd, buf, sizeof buf, scaled(5000));
    if (n < 0)
        die("%s: no EOF within 5 s", who);
    if (n > 0)
        die("%s: %zd bytes instead of EOF: '%.*s'", who, n, (int)n, buf);
}

// Not one byte for MS.
static void cexpect_silence(int fd, const char *who, unsigned ms)
{
    char buf[256];
    ssize_t n = cread(fd, buf, sizeof buf, ms);
    if (n > 0)
        die("%s: %zd unexpected bytes: '%.*s'", who, n, (int)n, buf);
    if (n == 0)
        die("%s: unexpected EOF", who);
}

static int client(const char *name)
{
    int fd = cconnect();
    char line[32], reply[32];
    snprintf(line, sizeof line, "I %s\n", name);
    snprintf(reply, sizeof reply, "ok %s\n", name);
    csend(fd, line);
    cexpect(fd, name, reply);
    return fd;
}

// A command on the control connection C, answered by "done".
static void command(int c, const char *cmd)
{
    csend(c, cmd);
    csend(c, "\n");
    cexpect(c, cmd, "done\n");
}

static void reset_close(int fd)
{
    struct linger lg = {1, 0};
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0)
        die("SO_LINGER: %s", strerror(errno));
    close(fd);
}

static atomic_int reused_c, rounds_c, b2_arranged;

// A connected loopback pair of our own (a listener of the test's, not the server's): *NEAR
// and *PEER; what is written to one shows at the other.
static void own_pair(int *near, int *peer)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) != 0)
        die("a listener of our own: %s", strerror(errno));
    *near = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*near < 0 || connect(*near, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect to our own listener: %s", strerror(errno));
    *peer = accept(l, NULL, NULL);
    if (*peer < 0)
        die("accept: %s", strerror(errno));
    close(l);
}

// Waits (1 s scaled at most) until descriptor FD is closed; true if it was.
static bool wait_closed(int fd)
{
    uint64_t end = mono_ms() + scaled(1000);
    while (fcntl(fd, F_GETFD) != -1) {
        if (mono_ms() > end)
            return false;
        sleep_ms(1);
    }
    return true;
}

static void case_b2(int c)
{
    int d = client("D2");
    int sfd = server_fd_of(d);
    if (sfd < 0)
        die("(b2) cannot find the server's descriptor of D2");
    int near, peer;
    own_pair(&near, &peer);
    csend(c, "hold D2\n");
    uint64_t end = mono_ms() + scaled(5000);
    while (!atomic_load(&holding)) {
        if (mono_ms() > end)
            die("(b2) main never held");
        sleep_ms(1);
    }
    reset_close(d);
    // Its io thread sees the reset and closes the descriptor while main still holds. Then the
    // number is given to our own connected socket: whatever is written to it shows at PEER.
    bool taken = false;
    if (wait_closed(sfd)) {
        if (dup2(near, sfd) != sfd)
            die("(b2) dup2: %s", strerror(errno));
        taken = true;
        atomic_store(&b2_arranged, 1);
    }
    atomic_store(&go, 1);
    cexpect(c, "hold D2", "done\n");
    // The late send and the close after flush went to D2's io thread: neither may touch the
    // socket that has D2's number now (no byte, no close: PEER would see EOF).
    cexpect_silence(peer, "(b2) the socket that took D2's descriptor", scaled(200));
    if (taken && fcntl(sfd, F_GETFD) == -1)
        die("(b2) the socket that took D2's descriptor number was closed by the server");
    if (taken)
        close(sfd);
    close(near);
    close(peer);
}

// Opens /dev/null on every free descriptor number below FD; returns how many (in PLUGS).
static int plug_below(int fd, int *plugs, int cap)
{
    int n = 0;
    while (n < cap) {
        int x = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (x < 0)
            die("open /dev/null: %s", strerror(errno));
        if (x >= fd) {
            close(x);
            break;
        }
        plugs[n++] = x;
    }
    return n;
}

static void *driver(void *arg)
{
    (void)arg;
    int c = client("C");

    // (a) B closed from A's callback, then used there.
    int b = client("B");
    int a = client("A");
    command(a, "close B");
    cexpect_eof(b, "(a) B");
    close(b);

    // (b1) close after flush, then a send: refused; the client gets "before", then EOF.
    int d1 = client("D1");
    command(c, "closeflush D1");
    cexpect(d1, "(b1) D1", "before\n");
    cexpect_eof(d1, "(b1) D1");
    close(d1);

    // (b2) the connection gone (and its number taken) while main still holds it.
    if (io_threads > 0)
        case_b2(c);

    // (c) ten rounds: F gets a line every millisecond, sent by id; F resets; G connects and,
    // every lower number plugged, the server accepts it on F's old descriptor.
    for (int i = 0; i < 10; i++) {
        char fname[16], gname[16], hello[32], greet[32], spam[32];
        snprintf(fname, sizeof fname, "F%d", i);
        snprintf(gname, sizeof gname, "G%d", i);
        int f = client(fname);
        int ffd = server_fd_of(f);
        if (ffd < 0)
            die("(c) cannot find the server's descriptor of %s", fname);
        snprintf(spam, sizeof spam, "spam %s", fname);
        command(c, spam);
        cexpect(f, fname, "for-F\nfor-F\n");  // the sends reach F while it is there
        int g = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (g < 0)
            die("socket: %s", strerror(errno));
        reset_close(f);
        int plugs[64], nplugs = 0;
        if (wait_closed(ffd))
            nplugs = plug_below(ffd, plugs, 64);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(g, (struct sockaddr *)&a, sizeof a) != 0)
            die("connect: %s", strerror(errno));
        csend(g, "I ");
        csend(g, gname);
        csend(g, "\n");
        snprintf(hello, sizeof hello, "ok %s\n", gname);
        cexpect(g, gname, hello);
        while (nplugs > 0)
            close(plugs[--nplugs]);
        if (server_fd_of(g) == ffd)
            atomic_fetch_add(&reused_c, 1);
        cexpect_silence(g, gname, scaled(30));
        command(c, "unspam");
        snprintf(greet, sizeof greet, "greet %s", gname);
        command(c, greet);
        snprintf(hello, sizeof hello, "hello %s\n", gname);
        cexpect(g, gname, hello);
        cexpect_silence(g, gname, scaled(20));
        close(g);
        atomic_fetch_add(&rounds_c, 1);
    }

    // (d) timers.
    csend(c, "timers\n");
    cexpect(c, "(d) timers", "timers 3 1\n");

    close(a);
    csend(c, "stop\n");
    cexpect_eof(c, "control after stop");
    close(c);
    return NULL;
}

// ================================================================ main

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))) {
        printf("usage: lifetime_test [IO_THREADS]   (0 to 64, default 0)\n");
        return argc > 2 ? 2 : 0;
    }
    if (argc == 2) {
        char *end;
        long n = strtol(argv[1], &end, 10);
        if (argv[1][0] < '0' || argv[1][0] > '9' || *end || n > 64) {
            fprintf(stderr, "lifetime_test: bad io thread count '%s'\n", argv[1]);
            return 2;
        }
        io_threads = (int)n;
    }
    scale_init();
    alarm((unsigned)(30 * scale));  // the last resort: every wait below has its own deadline

    rx_config cfg = rx_config_default();
    cfg.io_threads = io_threads;
    srv = rx_server_new(&cfg);
    if (!srv)
        die("rx_server_new failed");
    rx_codec line = rx_codec_line(100);
    rx_factory factory = {.create = on_create, .opened = on_opened, .message = on_message,
                          .closed = on_closed};
    port = rx_listen(srv, "127.0.0.1", 0, &line, &factory);
    if (port < 0)
        die("rx_listen failed");
    pthread_t th;
    if ((errno = pthread_create(&th, NULL, driver, NULL)) != 0)
        die("pthread_create: %s", strerror(errno));
    if (rx_server_run(srv) != 0)
        die("rx_server_run failed");
    if ((errno = pthread_join(th, NULL)) != 0)
        die("pthread_join: %s", strerror(errno));
    rx_server_free(srv);

    if (server_fail[0])
        die("%s", server_fail);
    for (int i = 0; i < nrecs; i++) {
        struct rec *r = &recs[i];
        if (r->opened != 1 || r->closed != 1)
            die("session %s (id %llu): opened %d times, closed %d times (want once each)", r->name,
                (unsigned long long)r->id, r->opened, r->closed);
        for (int j = 0; j < i; j++)
            if (recs[j].id >= r->id)
                die("session ids not increasing: %llu then %llu", (unsigned long long)recs[j].id,
                    (unsigned long long)r->id);
    }
    struct rec *rb = rec_by_name("B"), *rd = rec_by_name("D1"), *rc = rec_by_name("C");
    if (!rb || rb->why != RX_CLOSE_LOCAL)
        die("(a) B closed with reason %s, want local", rb ? rx_close_reason_name(rb->why) : "?");
    if (!rd || rd->why != RX_CLOSE_LOCAL)
        die("(b1) D1 closed with reason %s, want local", rd ? rx_close_reason_name(rd->why) : "?");
    if (!rc || rc->why != RX_CLOSE_SHUTDOWN)
        die("C closed with reason %s, want shutdown", rc ? rx_close_reason_name(rc->why) : "?");
    printf("lifetime_test (io threads %d): %d sessions, each opened once and closed once, ids increasing\n",
           io_threads, nrecs);
    printf("(a) B closed from A's callback: id, refused send, closing, table kept in that callback; "
           "closed once, later (local); B's client got nothing more, then EOF\n");
    printf("(b1) after rx_session_close(flush): rx_send refused; the client got the bytes sent before, then EOF\n");
    if (io_threads > 0) {
        struct rec *r2 = rec_by_name("D2");
        if (!r2 || r2->why != RX_CLOSE_RESET)
            die("(b2) D2 closed with reason %s, want reset", r2 ? rx_close_reason_name(r2->why) : "?");
        printf("(b2) a send and a close after the reset, while main held: closed once (reset); %s\n",
               atomic_load(&b2_arranged) ? "its descriptor number was taken by another socket, which got nothing"
                                         : "its descriptor was not closed by the io thread in time (reuse not arranged)");
    } else {
        printf("(b2) skipped: with no io threads main does the I/O, and holding it holds the reset too\n");
    }
    if (atomic_load(&reused_c) == 0)
        die("(c) in %d rounds the new client never got the old one's descriptor: nothing was tested",
            atomic_load(&rounds_c));
    printf("(c) %d rounds, %d with the descriptor reused: %u sends by id, none reached the new client; "
           "rx_session_find(old id) NULL right after closed\n",
           atomic_load(&rounds_c), atomic_load(&reused_c), spam_sent);
    printf("(d) rx_timer_stop from its own callback: a repeating timer fired 3 times; of two timers due "
           "together, the first stopped the second\n");
    return 0;
}
