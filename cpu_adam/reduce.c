/* Single-pass helpers over gradient buffers: sum of squares (for the global gradient norm),
 * inf/nan count (for dynamic loss scaling) and dtype casts, each split over the pool on the same
 * static partition as the step. Sums are deterministic: every ZOFF_ADAM_CHUNK-element chunk gets
 * its own partial (written by the worker owning the chunk), and the caller adds the partials in
 * chunk order after the workers finish. */
#include "cpu_adam/adam_internal.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int valid_dtype(zoff_dtype t) {
    return t == ZOFF_F32 || t == ZOFF_F16 || t == ZOFF_BF16;
}

typedef struct reduce_task {
    const zoff_adam_kernels *k;
    const void *x;
    zoff_dtype dtype;
    size_t n;
    double *partials; /* sumsq: one per chunk */
    size_t *counts;   /* count_nonfinite: one per chunk */
    void *dst;        /* cast */
    zoff_dtype dst_dtype;
} reduce_task;

static void sumsq_run(void *p, int tid, int n_threads) {
    reduce_task *t = p;
    size_t b, e, es = zoff_dtype_size(t->dtype);
    zoff_adam_partition(t->n, tid, n_threads, &b, &e);
    for (size_t i = b; i < e; i += ZOFF_ADAM_CHUNK) {
        size_t len = e - i < ZOFF_ADAM_CHUNK ? e - i : ZOFF_ADAM_CHUNK;
        t->partials[i / ZOFF_ADAM_CHUNK] = t->k->sumsq((const char *)t->x + i * es, t->dtype, len);
    }
}

int zoff_adam_sumsq(zoff_adam_pool *pool, const void *x, zoff_dtype dtype, size_t n, double *out) {
    if (!out || (!x && n) || !valid_dtype(dtype))
        return zoff_fail(-EINVAL, "cpu_adam", "sumsq: NULL buffer or invalid dtype %d", (int)dtype);
    *out = 0.0;
    if (n == 0) return 0;
    size_t chunks = (n + ZOFF_ADAM_CHUNK - 1) / ZOFF_ADAM_CHUNK;
    double *partials = malloc(chunks * sizeof(double));
    if (!partials) return -ENOMEM;
    reduce_task t = {
        .k = zoff_adam_pool_kernels(pool), .x = x, .dtype = dtype, .n = n, .partials = partials};
    int rc = zoff_adam_run(pool, n, sumsq_run, &t);
    double s = 0.0;
    for (size_t c = 0; c < chunks; c++)
        s += partials[c];
    free(partials);
    if (rc == 0) *out = s;
    return rc;
}

static void nonfinite_run(void *p, int tid, int n_threads) {
    reduce_task *t = p;
    size_t b, e, es = zoff_dtype_size(t->dtype);
    zoff_adam_partition(t->n, tid, n_threads, &b, &e);
    /* Partitions are chunk-aligned and the partition count bounded by n_threads. */
    t->counts[tid] =
        e > b ? t->k->count_nonfinite((const char *)t->x + b * es, t->dtype, e - b) : 0;
}

int zoff_adam_count_nonfinite(zoff_adam_pool *pool, const void *x, zoff_dtype dtype, size_t n,
                              size_t *count) {
    if (!count || (!x && n) || !valid_dtype(dtype))
        return zoff_fail(-EINVAL, "cpu_adam", "count_nonfinite: NULL buffer or invalid dtype %d",
                         (int)dtype);
    *count = 0;
    if (n == 0) return 0;
    int threads = zoff_adam_pool_threads(pool);
    size_t *counts = calloc((size_t)threads, sizeof(size_t));
    if (!counts) return -ENOMEM;
    reduce_task t = {
        .k = zoff_adam_pool_kernels(pool), .x = x, .dtype = dtype, .n = n, .counts = counts};
    int rc = zoff_adam_run(pool, n, nonfinite_run, &t);
    size_t total = 0;
    for (int i = 0; i < threads; i++)
        total += counts[i];
    free(counts);
    if (rc == 0) *count = total;
    return rc;
}

static void cast_run(void *p, int tid, int n_threads) {
    reduce_task *t = p;
    size_t b, e, ss = zoff_dtype_size(t->dtype), ds = zoff_dtype_size(t->dst_dtype);
    zoff_adam_partition(t->n, tid, n_threads, &b, &e);
    if (e <= b) return;
    const char *src = (const char *)t->x + b * ss;
    char *dst = (char *)t->dst + b * ds;
    if (t->dtype == t->dst_dtype)
        memmove(dst, src, (e - b) * ss);
    else
        t->k->cast(src, t->dtype, dst, t->dst_dtype, e - b);
}

int zoff_adam_cast(zoff_adam_pool *pool, const void *src, zoff_dtype src_dtype, void *dst,
                   zoff_dtype dst_dtype, size_t n) {
    if ((!src || !dst) && n) return zoff_fail(-EINVAL, "cpu_adam", "cast: NULL buffer");
    if (!valid_dtype(src_dtype) || !valid_dtype(dst_dtype))
        return zoff_fail(-EINVAL, "cpu_adam", "cast: invalid dtype (%d -> %d)", (int)src_dtype,
                         (int)dst_dtype);
    if (n == 0 || (src == dst && src_dtype == dst_dtype)) return 0;
    reduce_task t = {.k = zoff_adam_pool_kernels(pool),
                     .x = src,
                     .dtype = src_dtype,
                     .n = n,
                     .dst = dst,
                     .dst_dtype = dst_dtype};
    return zoff_adam_run(pool, n, cast_run, &t);
}
