// log.c: rx_log and its sink. A line is formatted in the calling thread, then handed to the
// sink under one lock, so lines from many threads never interleave and the sink needs no lock.
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rx.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static rx_log_sink *log_sink;  // under log_lock; NULL: default_sink
static void *log_ctx;          // under log_lock
static atomic_int log_level = RX_LOG_INFO;

// The calling thread's name in log lines: "?" until rx_thread_set_name (loops name theirs).
static _Thread_local char thread_name[16] = "?";

const char *rx_level_name(enum rx_log_level level)
{
    switch (level) {
    case RX_LOG_DEBUG: return "DEBUG";
    case RX_LOG_INFO: return "INFO";
    case RX_LOG_WARN: return "WARN";
    case RX_LOG_ERROR: return "ERROR";
    }
    return "?";
}

void rx_thread_set_name(const char *name)
{
    snprintf(thread_name, sizeof thread_name, "%s", name);
    // The OS name too (top -H, gdb, /proc/PID/task/*/comm); it also holds 15 bytes. A failure
    // changes nothing that matters, so it is not reported.
    (void)pthread_setname_np(pthread_self(), thread_name);
}

void rx_log_set_sink(rx_log_sink *sink, void *ctx)
{
    pthread_mutex_lock(&log_lock);
    log_sink = sink;
    log_ctx = ctx;
    pthread_mutex_unlock(&log_lock);
}

void rx_log_set_level(enum rx_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

// The default sink: "2026-12-06T19:52:36.123Z INFO  main: text\n" on stderr, one write(2)
// per line, so even another process writing to the same stderr cannot split a line (lines
// are shorter than PIPE_BUF).
static void default_sink(enum rx_log_level level, const char *thread, const char *line)
{
    struct timespec ts;
    struct tm tm;
    char stamp[32] = "?";
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && gmtime_r(&ts.tv_sec, &tm) != NULL) {
        size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
    }
    char out[RX_LOG_LINE_MAX + 64];
    int len = snprintf(out, sizeof out, "%s %-5s %s: %s\n", stamp, rx_level_name(level), thread,
                       line);
    if (len < 0)
        return;
    size_t left = (size_t)len < sizeof out ? (size_t)len : sizeof out - 1;
    const char *p = out;
    while (left > 0) {
        ssize_t w = write(STDERR_FILENO, p, left);
        if (w == -1 && errno == EINTR)
            continue;
        if (w <= 0)
            return;  // nowhere left to report it
        p += w;
        left -= (size_t)w;
    }
}

void rx_vlog(enum rx_log_level level, const char *fmt, va_list ap)
{
    if ((int)level < atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    int saved = errno;  // a caller may log, then still look at errno
    char line[RX_LOG_LINE_MAX + 1];
    int n = vsnprintf(line, sizeof line, fmt, ap);
    if (n < 0)
        snprintf(line, sizeof line, "(bad log format: %s)", fmt);
    else if ((size_t)n > RX_LOG_LINE_MAX)
        memcpy(line + RX_LOG_LINE_MAX - 3, "...", 4);  // cut, and said to be cut
    pthread_mutex_lock(&log_lock);
    if (log_sink != NULL)
        log_sink(log_ctx, level, thread_name, line);
    else
        default_sink(level, thread_name, line);
    pthread_mutex_unlock(&log_lock);
    errno = saved;
}

void rx_log(enum rx_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rx_vlog(level, fmt, ap);
    va_end(ap);
}
