/* Pointer -> size hash map with linear probing and tombstones (see ptr_map.h). */
#include "gpu/ptr_map.h"

#include <errno.h>
#include <stdlib.h>

#define EMPTY 0u
#define TOMB  1u

static size_t slot_of(uintptr_t k, size_t cap) {
    uint64_t h = (uint64_t)k * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

void zoff_ptr_map_init(zoff_ptr_map *m) {
    m->keys = NULL;
    m->values = NULL;
    m->cap = m->count = m->tombstones = 0;
}

void zoff_ptr_map_free(zoff_ptr_map *m) {
    free(m->keys);
    free(m->values);
    zoff_ptr_map_init(m);
}

static int grow(zoff_ptr_map *m) {
    size_t cap = m->cap ? m->cap * 2 : 64;
    if (m->count * 4 < m->cap) cap = m->cap; /* mostly tombstones: rehash in place size */
    uintptr_t *keys = calloc(cap, sizeof *keys);
    size_t *values = calloc(cap, sizeof *values);
    if (!keys || !values) {
        free(keys);
        free(values);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] <= TOMB) continue;
        size_t j = slot_of(m->keys[i], cap);
        while (keys[j] != EMPTY)
            j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i];
        values[j] = m->values[i];
    }
    free(m->keys);
    free(m->values);
    m->keys = keys;
    m->values = values;
    m->cap = cap;
    m->tombstones = 0;
    return 0;
}

int zoff_ptr_map_put(zoff_ptr_map *m, const void *key, size_t value) {
    uintptr_t k = (uintptr_t)key;
    if ((m->count + m->tombstones + 1) * 4 > m->cap * 3) {
        int rc = grow(m);
        if (rc) return rc;
    }
    size_t j = slot_of(k, m->cap);
    while (m->keys[j] > TOMB)
        j = (j + 1) & (m->cap - 1);
    if (m->keys[j] == TOMB) m->tombstones--;
    m->keys[j] = k;
    m->values[j] = value;
    m->count++;
    return 0;
}

int zoff_ptr_map_take(zoff_ptr_map *m, const void *key, size_t *value) {
    uintptr_t k = (uintptr_t)key;
    if (!m->cap || k <= TOMB) return -ENOENT;
    for (size_t j = slot_of(k, m->cap), n = 0; n < m->cap; j = (j + 1) & (m->cap - 1), n++) {
        if (m->keys[j] == EMPTY) return -ENOENT;
        if (m->keys[j] == k) {
            *value = m->values[j];
            m->keys[j] = TOMB;
            m->count--;
            m->tombstones++;
            return 0;
        }
    }
    return -ENOENT;
}

void zoff_ptr_map_each(const zoff_ptr_map *m, void (*fn)(void *, size_t, void *), void *ctx) {
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] > TOMB) fn((void *)m->keys[i], m->values[i], ctx);
}
