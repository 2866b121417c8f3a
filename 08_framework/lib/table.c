// table.c: ids to objects, a chained hash table that doubles as it fills. The main thread's
// session table and each io thread's connection table are one of these each; ids are 64-bit
// and never reused, so a lookup that finds nothing means "gone", never "someone else".
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

// Ids are consecutive, so the low bits alone spread them evenly; the mix keeps it true for
// ids handed out round-robin to several io threads (each sees every Nth id).
static size_t slot(const struct table *t, uint64_t id)
{
    id ^= id >> 29;
    id *= 0xbf58476d1ce4e5b9ULL;
    id ^= id >> 32;
    return (size_t)id & (t->nb - 1);
}

static int grow(struct table *t)
{
    size_t nb = t->nb ? t->nb * 2 : 64;
    struct tnode **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return -1;
    struct table nt = {b, nb, t->n};
    for (size_t i = 0; i < t->nb; i++) {
        struct tnode *n = t->b[i], *next;
        for (; n != NULL; n = next) {
            next = n->next;
            size_t s = slot(&nt, n->id);
            n->next = b[s];
            b[s] = n;
        }
    }
    free(t->b);
    *t = nt;
    return 0;
}

int table_put(struct table *t, struct tnode *node)
{
    // At most one node per bucket on average: a lookup is one or two pointer hops.
    if (t->n >= t->nb && grow(t) == -1) {
        errno = ENOMEM;
        return -1;
    }
    size_t s = slot(t, node->id);
    node->next = t->b[s];
    t->b[s] = node;
    t->n++;
    return 0;
}

struct tnode *table_get(const struct table *t, uint64_t id)
{
    if (t->nb == 0)
        return NULL;
    for (struct tnode *n = t->b[slot(t, id)]; n != NULL; n = n->next)
        if (n->id == id)
            return n;
    return NULL;
}

void table_del(struct table *t, struct tnode *node)
{
    struct tnode **pp = &t->b[slot(t, node->id)];
    while (*pp != node)
        pp = &(*pp)->next;
    *pp = node->next;
    t->n--;
}

void table_free(struct table *t)
{
    free(t->b);
    *t = (struct table){NULL, 0, 0};
}
