// poller_poll.c: the portable poller on poll(2) (make POLLER=poll). An array of pollfd, with
// an index by descriptor so add, mod and del are O(1); a wait is O(watched), as poll is.
#include "poller.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>

struct poller {
    struct pollfd *fds;  // the watched descriptors, packed: [0, n)
    void **data;         // data[i] goes with fds[i]
    int n, cap;
    int *slot;           // slot[fd]: fd's index in fds, -1 when not watched
    int nslot;
    int start;           // where the next wait starts reporting (see poller_wait)
};

struct poller *poller_new(void)
{
    return calloc(1, sizeof(struct poller));
}

void poller_free(struct poller *p)
{
    if (p == NULL)
        return;
    free(p->fds);
    free(p->data);
    free(p->slot);
    free(p);
}

const char *poller_backend(void)
{
    return "poll";
}

static short to_poll(unsigned events)
{
    return (short)((events & POLLER_IN ? POLLIN : 0) | (events & POLLER_OUT ? POLLOUT : 0));
}

// fds[i].fd of a quiet descriptor (EVENTS 0) is ~fd, negative, which poll skips: otherwise it
// would report POLLHUP and POLLERR on it at every wait (see poller_epoll.c). ~ gives it back.
static int real_fd(const struct pollfd *f)
{
    return f->fd < 0 ? ~f->fd : f->fd;
}

int poller_add(struct poller *p, int fd, unsigned events, void *data)
{
    if (fd < 0) {
        errno = EBADF;
        return -1;
    }
    if (fd >= p->nslot) {
        int nslot = p->nslot ? p->nslot : 64;
        while (nslot <= fd)
            nslot *= 2;
        int *slot = realloc(p->slot, (size_t)nslot * sizeof *slot);
        if (slot == NULL)
            return -1;
        for (int i = p->nslot; i < nslot; i++)
            slot[i] = -1;
        p->slot = slot;
        p->nslot = nslot;
    }
    if (p->slot[fd] != -1) {
        errno = EEXIST;  // as epoll_ctl says
        return -1;
    }
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        struct pollfd *fds = realloc(p->fds, (size_t)cap * sizeof *fds);
        if (fds == NULL)
            return -1;
        p->fds = fds;
        void **d = realloc(p->data, (size_t)cap * sizeof *d);
        if (d == NULL)
            return -1;  // fds grew, cap did not: the next add grows it again, no harm
        p->data = d;
        p->cap = cap;
    }
    int i = p->n++;
    p->fds[i] = (struct pollfd){events ? fd : ~fd, to_poll(events), 0};
    p->data[i] = data;
    p->slot[fd] = i;
    return 0;
}

int poller_mod(struct poller *p, int fd, unsigned events, void *data)
{
    if (fd < 0 || fd >= p->nslot || p->slot[fd] == -1) {
        errno = ENOENT;
        return -1;
    }
    int i = p->slot[fd];
    p->fds[i] = (struct pollfd){events ? fd : ~fd, to_poll(events), 0};
    p->data[i] = data;
    return 0;
}

int poller_del(struct poller *p, int fd, unsigned events)
{
    (void)events;  // a quiet descriptor keeps its slot here (negated fd): removed either way
    if (fd < 0 || fd >= p->nslot || p->slot[fd] == -1) {
        errno = ENOENT;
        return -1;
    }
    // The last entry moves into the hole: O(1), and the array stays packed for poll.
    int i = p->slot[fd], last = --p->n;
    if (i != last) {
        p->fds[i] = p->fds[last];
        p->data[i] = p->data[last];
        p->slot[real_fd(&p->fds[i])] = i;
    }
    p->slot[fd] = -1;
    return 0;
}

int poller_wait(struct poller *p, struct poller_event *out, int max, int timeout_ms)
{
    int ready = poll(p->fds, (nfds_t)p->n, timeout_ms);
    if (ready == -1)
        return errno == EINTR ? 0 : -1;
    // With more ready descriptors than MAX, the rest are reported by the next wait (poll is
    // level-triggered too); starting each scan where the last one stopped keeps the ones at
    // the end of the array from waiting behind the ones at the start every time.
    int got = 0;
    for (int k = 0; k < p->n && got < ready && got < max; k++) {
        int i = (p->start + k) % p->n;
        short e = p->fds[i].revents;
        if (e == 0)
            continue;
        unsigned r = 0;
        // POLLERR, POLLHUP and POLLNVAL are both readable and writable: the owner's next read
        // or write meets the error (POLLNVAL: the descriptor was closed while watched, a bug
        // in the owner that its failing read or write will now report).
        if (e & (POLLIN | POLLERR | POLLHUP | POLLNVAL))
            r |= POLLER_IN;
        if (e & (POLLOUT | POLLERR | POLLHUP | POLLNVAL))
            r |= POLLER_OUT;
        out[got++] = (struct poller_event){p->data[i], r};
        if (got == max)
            p->start = (i + 1) % p->n;
    }
    return got;
}
