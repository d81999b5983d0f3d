/* Partitions the registered tensors into gradient buckets: contiguous parameter ranges in
 * forward order, each holding whole tensors, filled greedily up to the bucket size. A tensor
 * larger than the bucket size gets a bucket of its own, so every tensor lies in exactly one
 * bucket and the trainer gets one contiguous gradient pointer per tensor. Buckets tile the
 * range from the first tensor to the end of the last one without holes. With streamed weights
 * a bucket never straddles two layer groups, so each bucket's weights go to one place (the
 * store of a streamed group, or a resident group's device copy). */
#include "offload/engine_internal.h"
#include "core/log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

/* The layer group holding element `offset` (streamed weights), or 0. */
static size_t group_of(const zoff_engine_config *c, size_t offset) {
    size_t g = 0;
    while (c->params != ZOFF_PARAMS_DEVICE && g + 1 < c->n_groups &&
           offset >= c->group_begin[g + 1])
        g++;
    return g;
}

int engine_build_buckets(zoff_engine *e) {
    size_t target = e->cfg.bucket_bytes / e->esize;
    if (target == 0) target = 1;
    e->buckets = calloc(e->n_tensors, sizeof *e->buckets); /* at most one per tensor */
    e->tensor_bucket = calloc(e->n_tensors, sizeof *e->tensor_bucket);
    if (!e->buckets || !e->tensor_bucket) return -ENOMEM;
    size_t nb = 0;
    for (size_t t = 0; t < e->n_tensors; t++) {
        const zoff_engine_tensor *ten = &e->tensors[t];
        engine_bucket *cur = nb ? &e->buckets[nb - 1] : NULL;
        size_t end = ten->offset + ten->numel;
        bool new_group = cur && group_of(&e->cfg, ten->offset) != group_of(&e->cfg, cur->offset);
        if (!cur || end - cur->offset > target || new_group) {
            cur = &e->buckets[nb++];
            cur->offset = ten->offset;
            cur->first_tensor = t;
            cur->n_tensors = 0;
        }
        cur->numel = end - cur->offset;
        cur->n_tensors++;
        cur->slot = -1;
        e->tensor_bucket[t] = nb - 1;
    }
    /* buckets tile the range without holes: padding between them goes with the one before */
    for (size_t b = 0; b + 1 < nb; b++)
        e->buckets[b].numel = e->buckets[b + 1].offset - e->buckets[b].offset;
    e->n_buckets = nb;
    e->bucket_elems_max = e->slot_elems = e->n_own = e->own_max = 0;
    size_t world = e->world > 1 ? (size_t)e->world : 1, rank = (size_t)e->rank;
    for (size_t b = 0; b < nb; b++) {
        engine_bucket *bk = &e->buckets[b];
        if (bk->numel > e->bucket_elems_max) e->bucket_elems_max = bk->numel;
        /* world blocks of equal size, as reduce-scatter and all-gather need; the padding past
         * numel is reduced but never read */
        bk->shard = (bk->numel + world - 1) / world;
        size_t start = rank * bk->shard < bk->numel ? rank * bk->shard : bk->numel;
        size_t end = start + bk->shard < bk->numel ? start + bk->shard : bk->numel;
        bk->own_offset = bk->offset + start;
        bk->own_numel = end - start;
        bk->host_offset = e->n_own;
        e->n_own += bk->own_numel;
        if (bk->own_numel > e->own_max) e->own_max = bk->own_numel;
        if (bk->shard * world > e->slot_elems) e->slot_elems = bk->shard * world;
    }
    zoff_log(ZOFF_LOG_DEBUG, MOD, "%zu tensors in %zu buckets of at most %zu elements",
             e->n_tensors, nb, e->bucket_elems_max);
    return 0;
}

int zoff_engine_plan_device_bytes(const zoff_engine_config *cfg, const zoff_engine_tensor *tensors,
                                  size_t n_tensors, size_t *bytes) {
    if (!cfg || !tensors || !n_tensors || !bytes || !zoff_dtype_size(cfg->dtype)) return -EINVAL;
    /* the same partition the engine will make, on a scratch engine that holds only it */
    zoff_engine e = {.cfg = *cfg,
                     .esize = zoff_dtype_size(cfg->dtype),
                     .n_tensors = n_tensors,
                     .world = zoff_dist_size(cfg->dist)};
    e.tensors = (zoff_engine_tensor *)tensors;
    int rc = engine_build_buckets(&e);
    if (!rc) *bytes = engine_device_bytes(cfg->device_slots, e.slot_elems * e.esize, e.world);
    free(e.buckets);
    free(e.tensor_bucket);
    return rc;
}

int zoff_engine_plan_param_bytes(const zoff_engine_config *cfg, size_t *bytes) {
    if (!cfg || !bytes || !zoff_dtype_size(cfg->dtype)) return -EINVAL;
    *bytes = 0;
    if (cfg->params == ZOFF_PARAMS_DEVICE) return 0;
    return param_store_plan_bytes(cfg, zoff_dtype_size(cfg->dtype), bytes);
}
