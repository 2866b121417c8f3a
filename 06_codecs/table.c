// table.c: the bounded sorted key/value array of table.h.
#include "table.h"

#include <stdlib.h>
#include <string.h>

// Keys compare as byte strings: memcmp over the shorter length, then the shorter key first.
static int key_cmp(const struct table_entry *e, const char *key, size_t klen)
{
    size_t n = e->klen < klen ? e->klen : klen;
    int cmp = n > 0 ? memcmp(e->key, key, n) : 0;  // memcmp with a NULL key is undefined
    if (cmp == 0)
        cmp = e->klen < klen ? -1 : e->klen > klen;
    return cmp;
}

// The index of KEY, or where it would go (*FOUND says which).
static size_t table_find(const struct table *t, const char *key, size_t klen, bool *found)
{
    size_t lo = 0, hi = t->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = key_cmp(&t->e[mid], key, klen);
        if (cmp == 0) {
            *found = true;
            return mid;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

const char *table_set(struct table *t, const char *key, size_t klen, const char *value,
                      size_t vlen)
{
    if (klen > TABLE_MAX_KEY)
        return "ERR key too long (at most 256 bytes)";
    if (vlen > TABLE_MAX_VALUE)
        return "ERR value too long (at most 65536 bytes)";
    bool found;
    size_t i = table_find(t, key, klen, &found);
    if (!found && t->len == TABLE_MAX_KEYS)
        return "ERR table full (at most 1000 keys)";
    char *block = malloc(klen + vlen + 1);  // + 1: malloc(0) may return NULL
    if (block == NULL)
        return "ERR out of memory";
    if (klen > 0)
        memcpy(block, key, klen);
    if (vlen > 0)
        memcpy(block + klen, value, vlen);
    if (found) {
        free(t->e[i].key);
    } else {
        memmove(&t->e[i + 1], &t->e[i], (t->len - i) * sizeof t->e[0]);
        t->len++;
    }
    t->e[i] = (struct table_entry){block, block + klen, klen, vlen};
    return NULL;
}

bool table_get(const struct table *t, const char *key, size_t klen, const char **value,
               size_t *vlen)
{
    bool found;
    size_t i = table_find(t, key, klen, &found);
    if (found) {
        *value = t->e[i].value;
        *vlen = t->e[i].vlen;
    }
    return found;
}

void table_free(struct table *t)
{
    for (size_t i = 0; i < t->len; i++)
        free(t->e[i].key);
    t->len = 0;
}
