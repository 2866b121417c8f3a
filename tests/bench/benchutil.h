// benchutil.h: what the load generators (loadgen.c, chatload.c) share: the clock, the
// descriptor limit, CPU time from /proc and getrusage, and a connect with a deadline.
// Each call is safe from any thread; none keeps state.
#ifndef BENCHUTIL_H
#define BENCHUTIL_H

#include <netdb.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

// CLOCK_MONOTONIC in nanoseconds.
uint64_t now_ns(void);

// Makes sure the soft RLIMIT_NOFILE allows NEED descriptors, raising it to the hard limit
// if it does not (a desktop's default soft limit is often 1024). Returns 0, or -1 after
// saying why on stderr, prefixed with PROG.
int ensure_fd_limit(const char *prog, rlim_t need);

// Fields 14..17 of /proc/PID/stat (utime, stime, cutime, cstime) added up, in clock ticks,
// for every thread of PID. cutime/cstime hold the time of children the process has already
// waited for; returns -1 if the file cannot be read (the process is gone, or not Linux).
long long proc_cpu_ticks(long pid);

// This process's user + system CPU time, in seconds (getrusage); 0 if it cannot be read.
double cpu_seconds_self(void);

// Connects to AI within TIMEOUT_MS. Returns a non-blocking socket, or -1 with a reason in
// ERR. The connect is non-blocking so that a server that never accepts cannot hold us past
// our deadline.
int connect_nonblocking(const struct addrinfo *ai, int timeout_ms, char *err, size_t errlen);

#endif
