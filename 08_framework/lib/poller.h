// poller.h: the one interface both backends implement (poller_epoll.c, poller_poll.c; the
// Makefile's POLLER picks one at build time). A descriptor is added once with a pointer that
// comes back with its events; the backend knows nothing else about it.
#ifndef RX_POLLER_H
#define RX_POLLER_H

enum { POLLER_IN = 1, POLLER_OUT = 2 };  // the same values as LOOP_READ / LOOP_WRITE

struct poller_event {
    void *data;       // what was given to poller_add
    unsigned events;  // POLLER_IN and/or POLLER_OUT (an error or hang-up sets both)
};

struct poller;
// NULL on failure (errno set).
struct poller *poller_new(void);
void poller_free(struct poller *p);
const char *poller_backend(void);  // "epoll" or "poll"

// Each returns 0, or -1 with errno set. FD is watched for EVENTS (possibly 0). poller_del is
// told what FD is watched for now: epoll keeps a descriptor watched for nothing out of its
// set, so it has nothing to delete then (no system call, where a blind EPOLL_CTL_DEL would
// fail with ENOENT once per connection that stopped reading before it closed).
int poller_add(struct poller *p, int fd, unsigned events, void *data);
int poller_mod(struct poller *p, int fd, unsigned events, void *data);
int poller_del(struct poller *p, int fd, unsigned events);

// Waits up to TIMEOUT_MS (-1: no limit) and fills OUT with at most MAX events. Returns how
// many (0 on timeout or EINTR), or -1 on any other error (errno set).
int poller_wait(struct poller *p, struct poller_event *out, int max, int timeout_ms);

#endif
