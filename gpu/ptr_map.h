/* A small open-addressing hash map from pointer to size, for the device layer's tables
 * of live allocations. Not thread-safe: the owner holds its lock. */
#ifndef ZOFF_GPU_PTR_MAP_H
#define ZOFF_GPU_PTR_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct zoff_ptr_map {
    uintptr_t *keys; /* 0 = empty, 1 = tombstone */
    size_t *values;
    size_t cap, count, tombstones;
} zoff_ptr_map;

void zoff_ptr_map_init(zoff_ptr_map *m);
void zoff_ptr_map_free(zoff_ptr_map *m);
/* 0, or -ENOMEM. The key must not be present. */
int zoff_ptr_map_put(zoff_ptr_map *m, const void *key, size_t value);
/* Removes key and stores its value in *value: 0, or -ENOENT when absent. */
int zoff_ptr_map_take(zoff_ptr_map *m, const void *key, size_t *value);
/* Calls fn for each entry (no changes to the map during the walk). */
void zoff_ptr_map_each(const zoff_ptr_map *m, void (*fn)(void *key, size_t value, void *ctx),
                       void *ctx);

#endif
