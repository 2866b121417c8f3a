// grade_guard.c: linked into every unit-test binary that tests/grade builds (tests/lib/grade.py).
//
// 1. Before any of the student's code runs (a constructor of priority 101 runs before every
//    constructor of default priority), every descriptor above 2 is closed: bats' result
//    stream (descriptor 3) cannot be written by the code under test.
// 2. main is wrapped (-Wl,--wrap=main): until it runs, exit(), _exit() and _Exit() called
//    from the linked objects end the program with status 86 instead of the one asked for,
//    so a constructor that calls _exit(0) cannot pass for a successful test run.
// Limits: a raw exit_group system call (syscall(2), inline assembly) is not caught.
#define _GNU_SOURCE
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

enum { GUARD_EXIT = 86 };
static volatile int in_main;

__attribute__((constructor(101))) static void guard_close_fds(void)
{
    // /proc/self/fd lists what is open; close_range(2) would do, but older kernels lack it.
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        return;
    }
    int self = dirfd(d);
    int fds[1024], n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 1024) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != self)
            fds[n++] = fd;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

int __real_main(int argc, char **argv, char **envp);
int __wrap_main(int argc, char **argv, char **envp)
{
    in_main = 1;
    return __real_main(argc, argv, envp);
}

_Noreturn void __real_exit(int status);
_Noreturn void __wrap_exit(int status)
{
    __real_exit(in_main ? status : GUARD_EXIT);
}

_Noreturn void __real__exit(int status);
_Noreturn void __wrap__exit(int status)
{
    __real__exit(in_main ? status : GUARD_EXIT);
}

_Noreturn void __real__Exit(int status);
_Noreturn void __wrap__Exit(int status)
{
    __real__Exit(in_main ? status : GUARD_EXIT);
}
