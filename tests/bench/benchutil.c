// benchutil.c: the helpers loadgen.c and chatload.c share (benchutil.h says what each does).
#include "benchutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

uint64_t now_ns(void)
{
    struct timespec ts;
    // CLOCK_MONOTONIC never jumps, unlike the wall clock; clock_gettime cannot fail with
    // this clock id and a valid pointer, so its result is not checked.
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -1;
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int ensure_fd_limit(const char *prog, rlim_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "%s: getrlimit(RLIMIT_NOFILE): %s\n", prog, strerror(errno));
        return -1;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= need)
        return 0;
    if (rl.rlim_cur == RLIM_INFINITY)
        return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        fprintf(stderr,
                "%s: needs %llu file descriptors but the hard limit is %llu; "
                "raise it (ulimit -Hn, as root) or ask for fewer connections\n",
                prog, (unsigned long long)need, (unsigned long long)rl.rlim_max);
        return -1;
    }
    // An unlimited hard limit may still be capped by the kernel (fs.nr_open): ask only for NEED.
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "%s: setrlimit(RLIMIT_NOFILE, %llu): %s\n", prog,
                (unsigned long long)rl.rlim_cur, strerror(errno));
        return -1;
    }
    return 0;
}

long long proc_cpu_ticks(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n;
    do
        n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    // Field 2 is the command name in parentheses and may itself contain spaces or ')':
    // the fields we want are counted from the last ')'.
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    long long total = 0;
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok != NULL; tok = strtok(NULL, " ")) {
        field++;
        if (field >= 14 && field <= 17)
            total += strtoll(tok, NULL, 10);
        if (field == 17)
            return total;
    }
    return -1;
}

double cpu_seconds_self(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int connect_nonblocking(const struct addrinfo *ai, int timeout_ms, char *err, size_t errlen)
{
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (set_nonblocking(fd) != 0) {
        snprintf(err, errlen, "fcntl(O_NONBLOCK): %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            snprintf(err, errlen, "connect: %s", strerror(errno));
            close(fd);
            return -1;
        }
        // In progress: it is done when the socket is writable; SO_ERROR says how it ended.
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int r;
        do
            r = poll(&pfd, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        if (r <= 0) {
            snprintf(err, errlen, "connect: %s",
                     r == 0 ? "timed out (is the server accepting?)" : strerror(errno));
            close(fd);
            return -1;
        }
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
            snprintf(err, errlen, "connect: %s", strerror(soerr ? soerr : errno));
            close(fd);
            return -1;
        }
    }
    return fd;
}
