// table_test.c: the SET/GET table (table.h): lookups and overwrites, keys that are prefixes of
// each other or hold NUL bytes, each limit exactly at and one past, a full table that still
// takes overwrites, and random operations checked against a naive model, with the sorted
// order (what the binary search relies on) checked after every one.
// A test binary (make table_test; test.bats runs it): "ok N - ..." lines, exit 1 on failure.
#include "table.h"
#include "test_util.h"

#include <stdio.h>
#include <string.h>

static struct table t;  // 32 KiB: static, not on the stack

static bool get_is(const char *k, size_t kl, const char *want, size_t wl)
{
    const char *v;
    size_t vl;
    if (!table_get(&t, k, kl, &v, &vl))
        return want == NULL;
    return want != NULL && vl == wl && (wl == 0 || memcmp(v, want, wl) == 0);
}

// Is e[0 .. len) strictly increasing (bytes, then length)?
static bool sorted(void)
{
    for (size_t i = 1; i < t.len; i++) {
        const struct table_entry *a = &t.e[i - 1], *b = &t.e[i];
        size_t n = a->klen < b->klen ? a->klen : b->klen;
        int cmp = n > 0 ? memcmp(a->key, b->key, n) : 0;
        if (cmp > 0 || (cmp == 0 && a->klen >= b->klen))
            return false;
    }
    return true;
}

int main(void)
{
    t_check(!table_get(&t, "a", 1, &(const char *){0}, &(size_t){0}) && t.len == 0,
            "an empty table finds nothing");

    t_check(table_set(&t, "ab", 2, "1", 1) == NULL && table_set(&t, "a", 1, "2", 1) == NULL &&
                table_set(&t, "", 0, "3", 1) == NULL && table_set(&t, "a\0b", 3, "", 0) == NULL,
            "set: 'ab', 'a', the empty key, a key with a NUL (empty value)");
    t_check(t.len == 4 && get_is("ab", 2, "1", 1) && get_is("a", 1, "2", 1) &&
                get_is("", 0, "3", 1) && get_is("a\0b", 3, "", 0) && !get_is("a\0", 2, "", 0) &&
                sorted(),
            "prefixes and NULs are distinct keys; 'a\\0' is not 'a\\0b'; sorted");
    t_check(table_set(&t, "a", 1, "two", 3) == NULL && t.len == 4 && get_is("a", 1, "two", 3),
            "an overwrite replaces the value and adds no entry");
    table_free(&t);
    t_check(t.len == 0 && !get_is("a", 1, "two", 3), "table_free empties it");

    static char big[TABLE_MAX_VALUE + 1];
    memset(big, 'v', sizeof big);
    t_check(table_set(&t, big, TABLE_MAX_KEY, "x", 1) == NULL &&
                get_is(big, TABLE_MAX_KEY, "x", 1),
            "a key of exactly TABLE_MAX_KEY bytes is taken");
    const char *e = table_set(&t, big, TABLE_MAX_KEY + 1, "x", 1);
    t_check(e != NULL && strstr(e, "key too long") != NULL && t.len == 1,
            "one byte more: 'key too long', table unchanged (%s)", e ? e : "NULL");
    t_check(table_set(&t, "k", 1, big, TABLE_MAX_VALUE) == NULL &&
                get_is("k", 1, big, TABLE_MAX_VALUE),
            "a value of exactly TABLE_MAX_VALUE bytes is taken");
    e = table_set(&t, "k", 1, big, TABLE_MAX_VALUE + 1);
    t_check(e != NULL && strstr(e, "value too long") != NULL &&
                get_is("k", 1, big, TABLE_MAX_VALUE),
            "one byte more: 'value too long', the old value kept (%s)", e ? e : "NULL");
    table_free(&t);

    char key[32];
    int bad = 0;
    for (int i = 0; i < TABLE_MAX_KEYS; i++) {
        int n = snprintf(key, sizeof key, "key%d", (i * 7919) % TABLE_MAX_KEYS);
        bad += table_set(&t, key, (size_t)n, key, (size_t)n) != NULL;
    }
    t_check(bad == 0 && t.len == TABLE_MAX_KEYS && sorted(),
            "TABLE_MAX_KEYS keys in scrambled order: all taken, sorted");
    e = table_set(&t, "one-more", 8, "x", 1);
    t_check(e != NULL && strstr(e, "table full") != NULL && t.len == TABLE_MAX_KEYS &&
                !get_is("one-more", 8, "x", 1),
            "one key more: 'table full', not stored (%s)", e ? e : "NULL");
    t_check(table_set(&t, "key999", 6, "new", 3) == NULL && get_is("key999", 6, "new", 3),
            "a full table still takes an overwrite");
    table_free(&t);

    // Random SETs and GETs over 300 short keys against a naive model: every answer agrees
    // and the order holds after every operation.
    enum { NKEYS = 300, OPS = 100000 };
    static char model[NKEYS][16];
    static size_t model_len[NKEYS];
    static bool model_set[NKEYS];
    int wrong = 0, unsorted = 0;
    for (int op = 0; op < OPS; op++) {
        int k = (int)(t_rand() % NKEYS);
        int n = snprintf(key, sizeof key, "%x", k * 2654435761u % 100000);  // scrambled order
        if (t_rand() % 2) {
            size_t vl = (size_t)(t_rand() % sizeof model[0]);
            for (size_t j = 0; j < vl; j++)
                model[k][j] = (char)t_rand();
            if (table_set(&t, key, (size_t)n, model[k], vl) != NULL)
                wrong++;
            model_len[k] = vl;
            model_set[k] = true;
            unsorted += !sorted();
        } else if (!get_is(key, (size_t)n, model_set[k] ? model[k] : NULL, model_len[k])) {
            wrong++;
        }
    }
    size_t live = 0;
    for (int k = 0; k < NKEYS; k++)
        live += model_set[k];
    t_check(wrong == 0 && unsorted == 0 && t.len == live,
            "%d random operations agree with a naive model (%d wrong, %d times unsorted, "
            "%zu entries, want %zu)", OPS, wrong, unsorted, t.len, live);
    table_free(&t);
    return t_done();
}
