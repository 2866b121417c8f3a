// table.h: the SET/GET table of `server --codec resp`: keys and values of any bytes, in a
// bounded sorted array. Its limits are the point: every byte of it is a client's to fill.
// One table per server, one thread (the loop's); no locking.
#ifndef TABLE_H
#define TABLE_H

#include <stdbool.h>
#include <stddef.h>

// Without a limit one client's SETs could take all our memory: at most TABLE_MAX_KEYS
// entries of at most TABLE_MAX_KEY + TABLE_MAX_VALUE bytes, about 65 MiB at worst.
#define TABLE_MAX_KEYS 1000
#define TABLE_MAX_KEY 256
#define TABLE_MAX_VALUE (64 * 1024)

// A sorted array: a lookup is a binary search, an insertion a memmove of at most
// TABLE_MAX_KEYS entries. At this size that is as fast as a hash table, and a reader sees
// the whole of it at once.
struct table_entry {
    char *key, *value;   // one allocation: the key, then the value
    size_t klen, vlen;
};

struct table {
    struct table_entry e[TABLE_MAX_KEYS];  // e[0 .. len) sorted by key (memcmp, then length)
    size_t len;
};

// A zeroed struct table is empty.

// Sets KEY (KLEN bytes) to VALUE (VLEN bytes), both copied. Returns NULL, or the redis-style
// error to answer ("ERR key too long ...", "ERR value too long ...", "ERR table full ...",
// "ERR out of memory"); on an error the table is unchanged. Overwriting a key always has room.
const char *table_set(struct table *t, const char *key, size_t klen, const char *value,
                      size_t vlen);

// Finds KEY: true and *VALUE / *VLEN (a view, valid until the next table_set or table_free),
// or false.
bool table_get(const struct table *t, const char *key, size_t klen, const char **value,
               size_t *vlen);

// Frees every entry and leaves T empty.
void table_free(struct table *t);

#endif
