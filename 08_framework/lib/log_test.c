// log_test.c: holds rx_log to rx.h's promises: one whole line per call, to one sink at a time,
// from any thread, filtered by level, named by thread, cut at RX_LOG_LINE_MAX. A test binary.
//
//   1. the default level is INFO; rx_log_set_level filters below it; rx_level_name;
//   2. 8 threads log 2000 lines each to a custom sink: every line arrives exactly once,
//      whole, with its thread's name, each thread's in order, and never two sink calls at once;
//   3. a sink swapped again and again while 4 threads log: every line goes to exactly one sink,
//      always with that sink's own context;
//   4. thread names: "?" until set, at most 15 bytes kept, also the OS thread name;
//   5. truncation: RX_LOG_LINE_MAX bytes pass whole, one more is cut to RX_LOG_LINE_MAX
//      ending in "...";
//   6. errno survives a call to rx_log;
//   7. the default sink (stderr sent to a file): "2026-12-06T19:52:36.123Z INFO  main: text",
//      one line per call, whole, from 8 threads at once; the time is UTC, about now.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rx.h"
#include "test_util.h"

// ------------------------------------------------------------------- a recording sink

enum { THREADS = 8, LINES = 2000, MAX_REC = THREADS * LINES + 64 };

struct rec {
    enum rx_log_level level;
    char thread[32];
    char *line;
    void *ctx;
};

static struct rec recs[MAX_REC];  // written by the sink, under the library's lock
static size_t nrec;
static atomic_int in_sink;        // > 1: two calls at once
static atomic_int overlaps;

static void record_sink(void *ctx, enum rx_log_level level, const char *thread, const char *line)
{
    if (atomic_fetch_add(&in_sink, 1) != 0)
        atomic_fetch_add(&overlaps, 1);
    if (nrec % 97 == 0)
        sched_yield();  // widen the window a missing lock would leave open
    if (nrec < MAX_REC) {
        struct rec *r = &recs[nrec++];
        r->level = level;
        snprintf(r->thread, sizeof r->thread, "%s", thread);
        r->line = strdup(line);
        r->ctx = ctx;
        if (r->line == NULL)
            fail("strdup");
    }
    atomic_fetch_sub(&in_sink, 1);
}

static void clear_recs(void)
{
    for (size_t i = 0; i < nrec; i++)
        free(recs[i].line);
    nrec = 0;
}

// The payload of line N of thread T: a length and letters that depend on both, so a line cut
// short, spliced with another or delivered twice is seen.
static void payload(int t, int n, char *out, size_t cap)
{
    size_t len = (size_t)((t * 131 + n * 17) % 300);
    if (len >= cap)
        len = cap - 1;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)('a' + (t + n + (int)i) % 26);
    out[len] = '\0';
}

// ------------------------------------------------------------------------ 1. levels

static void test_levels(void)
{
    printf("-- 1. levels\n");
    rx_log_set_sink(record_sink, NULL);
    rx_log(RX_LOG_DEBUG, "debug %d", 1);
    rx_log(RX_LOG_INFO, "info %d", 1);
    check(nrec == 1 && strcmp(recs[0].line, "info 1") == 0 && recs[0].level == RX_LOG_INFO,
          "by default DEBUG is dropped and INFO kept");
    clear_recs();
    rx_log_set_level(RX_LOG_WARN);
    rx_log(RX_LOG_DEBUG, "d");
    rx_log(RX_LOG_INFO, "i");
    rx_log(RX_LOG_WARN, "w");
    rx_log(RX_LOG_ERROR, "e");
    check(nrec == 2 && strcmp(recs[0].line, "w") == 0 && recs[0].level == RX_LOG_WARN &&
              strcmp(recs[1].line, "e") == 0 && recs[1].level == RX_LOG_ERROR,
          "at level WARN only WARN and ERROR reach the sink, with their level");
    clear_recs();
    rx_log_set_level(RX_LOG_DEBUG);
    rx_log(RX_LOG_DEBUG, "d");
    check(nrec == 1 && recs[0].level == RX_LOG_DEBUG, "at level DEBUG, DEBUG is kept");
    clear_recs();
    rx_log_set_level(RX_LOG_INFO);
    check(strcmp(rx_level_name(RX_LOG_DEBUG), "DEBUG") == 0 &&
              strcmp(rx_level_name(RX_LOG_INFO), "INFO") == 0 &&
              strcmp(rx_level_name(RX_LOG_WARN), "WARN") == 0 &&
              strcmp(rx_level_name(RX_LOG_ERROR), "ERROR") == 0,
          "rx_level_name names the four levels");
}

// ---------------------------------------------------------------- 2. many threads

static pthread_barrier_t go;

static void *writer(void *arg)
{
    int t = (int)(intptr_t)arg;
    char name[16], p[400];
    snprintf(name, sizeof name, "w%d", t);
    rx_thread_set_name(name);
    pthread_barrier_wait(&go);
    for (int n = 0; n < LINES; n++) {
        payload(t, n, p, sizeof p);
        rx_log(n % 2 ? RX_LOG_WARN : RX_LOG_INFO, "w%d n%05d %s", t, n, p);
    }
    return NULL;
}

static void test_threads(void)
{
    printf("-- 2. 8 threads, one sink\n");
    pthread_t th[THREADS];
    pthread_barrier_init(&go, NULL, THREADS);
    for (intptr_t t = 0; t < THREADS; t++)
        if (pthread_create(&th[t], NULL, writer, (void *)t) != 0)
            fail("pthread_create");
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&go);
    static unsigned char seen[THREADS][LINES];
    int next[THREADS] = {0};
    bool whole = true, named = true, ordered = true, once = true;
    char p[400], want[512];
    for (size_t i = 0; i < nrec; i++) {
        int t, n;
        if (sscanf(recs[i].line, "w%d n%d", &t, &n) != 2 || t < 0 || t >= THREADS || n < 0 ||
            n >= LINES) {
            whole = false;
            continue;
        }
        payload(t, n, p, sizeof p);
        snprintf(want, sizeof want, "w%d n%05d %s", t, n, p);
        if (strcmp(recs[i].line, want) != 0)
            whole = false;
        if (recs[i].level != (n % 2 ? RX_LOG_WARN : RX_LOG_INFO))
            whole = false;
        snprintf(want, sizeof want, "w%d", t);
        if (strcmp(recs[i].thread, want) != 0)
            named = false;
        if (n != next[t])
            ordered = false;
        next[t] = n + 1;
        if (seen[t][n]++)
            once = false;
    }
    check(nrec == THREADS * LINES && once, "16000 lines from 8 threads: each reached the sink exactly once");
    check(whole, "every line arrived whole (no cut, no splice), with its level");
    check(named, "each line carries the name of the thread that logged it");
    check(ordered, "each thread's lines arrived in the order it logged them");
    check(atomic_load(&overlaps) == 0, "the sink was never called by two threads at once");
    clear_recs();
}

// ------------------------------------------------------------- 3. swapping the sink

static int ctx_a, ctx_b;
static unsigned long a_lines, b_lines, wrong_ctx;

static void sink_a(void *ctx, enum rx_log_level level, const char *thread, const char *line)
{
    (void)level, (void)thread, (void)line;
    a_lines++;
    if (ctx != &ctx_a)
        wrong_ctx++;
}

static void sink_b(void *ctx, enum rx_log_level level, const char *thread, const char *line)
{
    (void)level, (void)thread, (void)line;
    b_lines++;
    if (ctx != &ctx_b)
        wrong_ctx++;
}

enum { SWAP_WRITERS = 4, SWAP_LINES = 20000 };
static atomic_int writers_done;

static void *swap_writer(void *arg)
{
    (void)arg;
    for (int n = 0; n < SWAP_LINES; n++) {
        rx_log(RX_LOG_INFO, "line %d", n);
        if (n % 16 == 0)
            sched_yield();  // let the swapper in: a mutex favours the thread that holds it
    }
    atomic_fetch_add(&writers_done, 1);
    return NULL;
}

static void test_swap(void)
{
    printf("-- 3. the sink swapped while 4 threads log\n");
    rx_log_set_sink(sink_a, &ctx_a);
    pthread_t th[SWAP_WRITERS];
    for (int t = 0; t < SWAP_WRITERS; t++)
        if (pthread_create(&th[t], NULL, swap_writer, NULL) != 0)
            fail("pthread_create");
    unsigned long swaps = 0;
    while (atomic_load(&writers_done) < SWAP_WRITERS) {
        swaps++;
        rx_log_set_sink(swaps % 2 ? sink_b : sink_a, swaps % 2 ? &ctx_b : &ctx_a);
    }
    for (int t = 0; t < SWAP_WRITERS; t++)
        pthread_join(th[t], NULL);
    rx_log_set_sink(record_sink, NULL);
    printf("   %d lines, %lu swaps: %lu to sink A, %lu to sink B\n", SWAP_WRITERS * SWAP_LINES,
           swaps, a_lines, b_lines);
    check(a_lines + b_lines == SWAP_WRITERS * SWAP_LINES,
          "every line went to exactly one of the sinks");
    check(wrong_ctx == 0, "each sink always got its own context (function and context swap together)");
}

// ----------------------------------------------------------------------- 4. names

static char fresh_name[64], long_name[64], os_name[64];

static void *namer(void *arg)
{
    (void)arg;
    rx_log(RX_LOG_INFO, "fresh");
    snprintf(fresh_name, sizeof fresh_name, "%s", recs[nrec - 1].thread);
    rx_thread_set_name("a-very-long-thread-name");
    rx_log(RX_LOG_INFO, "named");
    snprintf(long_name, sizeof long_name, "%s", recs[nrec - 1].thread);
    if (pthread_getname_np(pthread_self(), os_name, sizeof os_name) != 0)
        snprintf(os_name, sizeof os_name, "(pthread_getname_np failed)");
    return NULL;
}

static void test_names(void)
{
    printf("-- 4. thread names\n");
    pthread_t th;
    if (pthread_create(&th, NULL, namer, NULL) != 0)
        fail("pthread_create");
    pthread_join(th, NULL);
    check(strcmp(fresh_name, "?") == 0, "a thread never named logs as \"?\"");
    check(strcmp(long_name, "a-very-long-thr") == 0, "a long name is kept to its first 15 bytes");
    check(strcmp(os_name, "a-very-long-thr") == 0, "... and is the OS thread name too");
    rx_thread_set_name("main");
    rx_log(RX_LOG_INFO, "x");
    check(strcmp(recs[nrec - 1].thread, "main") == 0, "a name set in one thread is its own");
    clear_recs();
}

// ------------------------------------------------------------------- 5. truncation

static void test_truncation(void)
{
    printf("-- 5. truncation at RX_LOG_LINE_MAX (%d)\n", RX_LOG_LINE_MAX);
    static char big[5000];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = (char)('A' + i % 26);
    big[sizeof big - 1] = '\0';
    size_t lens[] = {RX_LOG_LINE_MAX - 1, RX_LOG_LINE_MAX, RX_LOG_LINE_MAX + 1, sizeof big - 1};
    for (size_t k = 0; k < 4; k++) {
        rx_log(RX_LOG_INFO, "%.*s", (int)lens[k], big);
        const char *l = recs[nrec - 1].line;
        size_t n = strlen(l);
        if (lens[k] <= RX_LOG_LINE_MAX) {
            check(n == lens[k] && memcmp(l, big, n) == 0, "a %zu-byte line arrives whole",
                  lens[k]);
        } else {
            check(n == RX_LOG_LINE_MAX && memcmp(l, big, RX_LOG_LINE_MAX - 3) == 0 &&
                      strcmp(l + RX_LOG_LINE_MAX - 3, "...") == 0,
                  "a %zu-byte line is cut to %d bytes: its first %d, then \"...\"", lens[k],
                  RX_LOG_LINE_MAX, RX_LOG_LINE_MAX - 3);
        }
    }
    clear_recs();
}

// ------------------------------------------------------------------ 7. the default sink

static void *stderr_writer(void *arg)
{
    int t = (int)(intptr_t)arg;
    char name[16], p[400];
    snprintf(name, sizeof name, "e%d", t);
    rx_thread_set_name(name);
    pthread_barrier_wait(&go);
    for (int n = 0; n < 200; n++) {
        payload(t, n, p, sizeof p);
        rx_log(RX_LOG_ERROR, "e%d n%05d %s", t, n, p);
    }
    return NULL;
}

static void test_default_sink(void)
{
    printf("-- 7. the default sink (stderr)\n");
    char path[] = "/tmp/log_test.XXXXXX";
    int fd = mkstemp(path);
    if (fd == -1)
        fail("mkstemp: %s", strerror(errno));
    unlink(path);
    int saved = dup(STDERR_FILENO);
    if (saved == -1 || dup2(fd, STDERR_FILENO) == -1)
        fail("dup2: %s", strerror(errno));
    rx_log_set_sink(NULL, NULL);
    time_t before = time(NULL);
    rx_thread_set_name("main");
    rx_log(RX_LOG_INFO, "hello %d", 42);
    rx_log(RX_LOG_WARN, "%s", "warned");
    static char big[3000];
    memset(big, 'x', sizeof big - 1);
    rx_log(RX_LOG_INFO, "%s", big);
    pthread_t th[THREADS];
    pthread_barrier_init(&go, NULL, THREADS);
    for (intptr_t t = 0; t < THREADS; t++)
        if (pthread_create(&th[t], NULL, stderr_writer, (void *)t) != 0)
            fail("pthread_create");
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&go);
    time_t after = time(NULL);
    if (dup2(saved, STDERR_FILENO) == -1)
        fail("dup2: %s", strerror(errno));
    close(saved);

    off_t size = lseek(fd, 0, SEEK_END);
    char *text = malloc((size_t)size + 1);
    if (text == NULL || pread(fd, text, (size_t)size, 0) != size)
        fail("reading the captured stderr");
    text[size] = '\0';
    close(fd);
    bool ends_in_newline = size > 0 && text[size - 1] == '\n';

    regex_t re;
    if (regcomp(&re,
                "^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\\.[0-9]{3}Z "
                "(DEBUG|INFO |WARN |ERROR) ([^ :]+): (.*)$",
                REG_EXTENDED) != 0)
        fail("regcomp");
    int lines = 0, bad = 0, times_ok = 0;
    static unsigned char seen[THREADS][200];
    bool once = true, first_ok = false, second_ok = false, long_ok = false;
    char p[400], want[512];
    for (char *line = text, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        lines++;
        regmatch_t m[10];
        if (regexec(&re, line, 10, m, 0) != 0) {
            if (bad++ == 0)
                printf("   not in the format: \"%.80s\"\n", line);
            continue;
        }
        struct tm tm = {0};
        tm.tm_year = atoi(line + m[1].rm_so) - 1900;
        tm.tm_mon = atoi(line + m[2].rm_so) - 1;
        tm.tm_mday = atoi(line + m[3].rm_so);
        tm.tm_hour = atoi(line + m[4].rm_so);
        tm.tm_min = atoi(line + m[5].rm_so);
        tm.tm_sec = atoi(line + m[6].rm_so);
        time_t t = timegm(&tm);  // the stamp read as UTC must be the time of the run
        if (t >= before - 1 && t <= after + 1)
            times_ok++;
        const char *level = line + m[7].rm_so, *name = line + m[8].rm_so, *msg = line + m[9].rm_so;
        line[m[8].rm_eo] = '\0';
        if (lines == 1)
            first_ok = strncmp(level, "INFO  main", 10) == 0 && strcmp(name, "main") == 0 &&
                       strcmp(msg, "hello 42") == 0;
        else if (lines == 2)
            second_ok = strncmp(level, "WARN ", 5) == 0 && strcmp(msg, "warned") == 0;
        else if (lines == 3)
            long_ok = strlen(msg) == RX_LOG_LINE_MAX &&
                      strcmp(msg + RX_LOG_LINE_MAX - 3, "...") == 0;
        else {
            int th_i, n;
            if (sscanf(msg, "e%d n%d", &th_i, &n) != 2 || th_i < 0 || th_i >= THREADS || n < 0 ||
                n >= 200) {
                bad++;
                continue;
            }
            payload(th_i, n, p, sizeof p);
            snprintf(want, sizeof want, "e%d n%05d %s", th_i, n, p);
            char tname[16];
            snprintf(tname, sizeof tname, "e%d", th_i);
            if (strcmp(msg, want) != 0 || strcmp(name, tname) != 0 ||
                strncmp(level, "ERROR", 5) != 0)
                bad++;
            if (seen[th_i][n]++)
                once = false;
        }
    }
    regfree(&re);
    check(first_ok, "\"2026-12-06T19:52:36.123Z INFO  main: hello 42\": time, level padded to 5, thread name, text");
    check(second_ok, "a WARN line says WARN");
    check(long_ok, "a 2999-byte line reaches stderr cut to RX_LOG_LINE_MAX, ending in \"...\"");
    check(lines == 3 + THREADS * 200 && bad == 0 && once,
          "1600 lines from 8 threads: one line each, whole, in the format, none twice");
    check(times_ok == lines, "every time stamp is UTC and the time of the run");
    check(ends_in_newline, "the last line ends in a newline");
    free(text);
    rx_log_set_sink(record_sink, NULL);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    scale_init();
    alarm((unsigned)(120 * scale));  // the last resort: nothing here waits but for its threads
    printf("log_test: rx_log, its sinks, levels, thread names and line limit\n");
    test_levels();
    test_threads();
    test_swap();
    test_names();
    test_truncation();

    printf("-- 6. errno\n");
    errno = ENOSPC;
    rx_log(RX_LOG_INFO, "errno is %d", errno);
    check(errno == ENOSPC, "rx_log leaves errno as it found it");
    rx_log_set_level(RX_LOG_ERROR);
    errno = ENOSPC;
    rx_log(RX_LOG_INFO, "dropped");
    check(errno == ENOSPC, "... also when the line is dropped by level");
    rx_log_set_level(RX_LOG_INFO);
    clear_recs();

    test_default_sink();
    clear_recs();
    printf("all ok\n");
    return 0;
}
