// poller_epoll.c: the poller on Linux epoll, level-triggered. A descriptor watched for nothing
// is taken out of the kernel's set, so an error or hang-up on it cannot wake the loop.
#include "poller.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

struct poller {
    int epfd;
    struct epoll_event *evs;  // poller_wait's buffer, grown to the largest MAX asked for
    int cap;
};

struct poller *poller_new(void)
{
    struct poller *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    // CLOEXEC: a program the application runs must not inherit the loop's epoll descriptor.
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd == -1) {
        int err = errno;
        free(p);
        errno = err;
        return NULL;
    }
    return p;
}

void poller_free(struct poller *p)
{
    if (p == NULL)
        return;
    close(p->epfd);
    free(p->evs);
    free(p);
}

const char *poller_backend(void)
{
    return "epoll";
}

// Level-triggered (no EPOLLET): a handler that stops early (its per-turn budget spent) is told
// again next turn, with no drain-until-EAGAIN rule to get wrong.
static int ctl(struct poller *p, int op, int fd, unsigned events, void *data)
{
    struct epoll_event ev = {0};
    ev.events = (events & POLLER_IN ? EPOLLIN : 0) | (events & POLLER_OUT ? EPOLLOUT : 0);
    ev.data.ptr = data;
    return epoll_ctl(p->epfd, op, fd, &ev);
}

// epoll reports EPOLLERR and EPOLLHUP even for a descriptor watched for nothing, and keeps
// reporting them (level-triggered): a quiet descriptor (EVENTS 0) would spin the loop. So a
// descriptor watched for nothing is not in the epoll set at all (as redis's ae does for
// AE_NONE): poller_add with 0 costs no call, poller_mod to 0 deletes, from 0 adds back.
int poller_add(struct poller *p, int fd, unsigned events, void *data)
{
    if (events == 0)
        return 0;
    return ctl(p, EPOLL_CTL_ADD, fd, events, data);
}

int poller_mod(struct poller *p, int fd, unsigned events, void *data)
{
    if (events == 0) {
        if (epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL) == -1 && errno != ENOENT)
            return -1;
        return 0;
    }
    if (ctl(p, EPOLL_CTL_MOD, fd, events, data) == 0)
        return 0;
    if (errno != ENOENT)
        return -1;
    return ctl(p, EPOLL_CTL_ADD, fd, events, data);  // it was quiet (not in the set)
}

int poller_del(struct poller *p, int fd, unsigned events)
{
    if (events == 0)
        return 0;  // quiet: not in the set (poller_add and poller_mod above)
    return epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
}

int poller_wait(struct poller *p, struct poller_event *out, int max, int timeout_ms)
{
    if (max > p->cap) {
        struct epoll_event *evs = realloc(p->evs, (size_t)max * sizeof *evs);
        if (evs == NULL)
            return -1;
        p->evs = evs;
        p->cap = max;
    }
    int n = epoll_wait(p->epfd, p->evs, max, timeout_ms);
    if (n == -1)
        return errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) {
        uint32_t e = p->evs[i].events;
        unsigned r = 0;
        // An error or a hang-up is both readable and writable: the owner's next read or write
        // meets it (a pipe whose writer closed reports EPOLLHUP alone, without EPOLLIN).
        if (e & (EPOLLIN | EPOLLERR | EPOLLHUP))
            r |= POLLER_IN;
        if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            r |= POLLER_OUT;
        out[i] = (struct poller_event){p->evs[i].data.ptr, r};
    }
    return n;
}
