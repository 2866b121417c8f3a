// hop_mutex.c: the hop through the consumer loop's task queue (hop.h's HOP_MUTEX): a send is
// rx_loop_post, a mutex around the push and the loop's eventfd written when the queue was empty.
#include <stdio.h>
#include <stdlib.h>

#include "hop.h"

struct hop_mutex {
    struct hop head;  // first: a struct hop * is a struct hop_mutex *
    rx_loop *to;
    void (*fn)(void *p);
    uint64_t sends;  // the producer's
};

struct hop *hop_mutex_new(rx_loop *to, void (*fn)(void *p), const char *name)
{
    struct hop_mutex *m = calloc(1, sizeof *m);
    if (m == NULL) {
        rx_log(RX_LOG_ERROR, "hop %s: out of memory", name);
        return NULL;
    }
    m->head.kind = HOP_MUTEX;
    m->to = to;
    m->fn = fn;
    return &m->head;
}

int hop_mutex_send(struct hop *h, void *p)
{
    struct hop_mutex *m = (struct hop_mutex *)h;
    if (rx_loop_post(m->to, m->fn, p) == -1)
        return -1;
    m->sends++;
    return 0;
}

void hop_mutex_free(struct hop *h)
{
    free(h);
}

void hop_mutex_get_stats(const struct hop *h, struct hop_stats *out)
{
    const struct hop_mutex *m = (const struct hop_mutex *)h;
    *out = (struct hop_stats){.sends = m->sends};
}
