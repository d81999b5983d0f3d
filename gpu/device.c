/* The device layer's dispatcher: backend choice, argument checks, the capacity limit and
 * memory counters, and bookkeeping of live streams and events. Backends see only checked
 * calls. dev->lock guards the counters, allocation maps and handle lists; it is never held
 * while waiting for device work. */
#include "gpu/device_impl.h"
#include "core/log.h"
#include "zoff_build_config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MOD "device"

void zoff_dev_config_default(zoff_dev_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = ZOFF_DEV_AUTO;
    cfg->capacity = 0; /* backend default: host 2 GiB, cuda the GPU's free memory */
    cfg->cuda_ordinal = 0;
    cfg->host_kernel_threads = 0;
}

int zoff_dev_kind_parse(const char *name, zoff_dev_kind *out) {
    if (!name) return -EINVAL;
    if (strcmp(name, "auto") == 0)
        *out = ZOFF_DEV_AUTO;
    else if (strcmp(name, "host") == 0)
        *out = ZOFF_DEV_HOST;
    else if (strcmp(name, "cuda") == 0)
        *out = ZOFF_DEV_CUDA;
    else
        return -EINVAL;
    return 0;
}

const char *zoff_dev_kind_name(zoff_dev_kind kind) {
    switch (kind) {
    case ZOFF_DEV_AUTO:
        return "auto";
    case ZOFF_DEV_HOST:
        return "host";
    case ZOFF_DEV_CUDA:
        return "cuda";
    }
    return "?";
}

bool zoff_dev_backend_built(zoff_dev_kind kind) {
    return kind == ZOFF_DEV_HOST || (kind == ZOFF_DEV_CUDA && ZOFF_HAVE_CUDA);
}

static int open_kind(const zoff_dev_config *cfg, zoff_dev_kind kind, zoff_dev **out) {
    zoff_dev *dev = calloc(1, sizeof *dev);
    if (!dev) return -ENOMEM;
    dev->cfg = *cfg;
    dev->kind = kind;
    pthread_mutex_init(&dev->lock, NULL);
    zoff_ptr_map_init(&dev->device_allocs);
    zoff_ptr_map_init(&dev->pinned_allocs);
    int rc = kind == ZOFF_DEV_CUDA ? zoff_dev_cuda_open(dev) : zoff_dev_host_open(dev);
    if (rc) goto fail;
    dev->stats.capacity = dev->cfg.capacity;
    rc = zoff_dev_stream_create(dev, &dev->sync_stream);
    if (rc) {
        dev->iface->close(dev);
        goto fail;
    }
    *out = dev;
    return 0;
fail:
    pthread_mutex_destroy(&dev->lock);
    free(dev);
    return rc;
}

int zoff_dev_open(const zoff_dev_config *cfg, zoff_dev **out) {
    zoff_dev_config def;
    if (!cfg) {
        zoff_dev_config_default(&def);
        cfg = &def;
    }
    if (!out) return -EINVAL;
    *out = NULL;
    if (cfg->kind != ZOFF_DEV_AUTO) {
        int rc = open_kind(cfg, cfg->kind, out);
        if (rc == 0)
            zoff_log(ZOFF_LOG_INFO, MOD, "using %s backend: %s", zoff_dev_kind_name(cfg->kind),
                     (*out)->name);
        return rc;
    }
    int rc = open_kind(cfg, ZOFF_DEV_CUDA, out);
    if (rc == 0) {
        zoff_log(ZOFF_LOG_INFO, MOD, "auto: using cuda backend: %s", (*out)->name);
        return 0;
    }
    const char *why =
        rc == ZOFF_ENOBACKEND ? "this zoff was built without CUDA" : zoff_last_error_detail();
    rc = open_kind(cfg, ZOFF_DEV_HOST, out);
    if (rc == 0)
        zoff_log(ZOFF_LOG_INFO, MOD, "auto: using host backend (%s): cuda unavailable: %s",
                 (*out)->name, why);
    return rc;
}

static void warn_leak(void *ptr, size_t bytes, void *ctx) {
    zoff_dev *dev = ctx;
    zoff_log(ZOFF_LOG_WARN, MOD, "%s: %zu bytes at %p still allocated at close",
             zoff_dev_kind_name(dev->kind), bytes, ptr);
}

static void free_device_block(void *ptr, size_t bytes, void *ctx) {
    zoff_dev *dev = ctx;
    (void)bytes;
    dev->iface->free(dev, ptr);
}

static void free_pinned_block(void *ptr, size_t bytes, void *ctx) {
    zoff_dev *dev = ctx;
    (void)bytes;
    dev->iface->host_free(dev, ptr);
}

void zoff_dev_close(zoff_dev *dev) {
    if (!dev) return;
    dev->iface->synchronize(dev);
    while (dev->events)
        zoff_dev_event_destroy(dev->events);
    while (dev->streams)
        zoff_dev_stream_destroy(dev->streams);
    zoff_ptr_map_each(&dev->device_allocs, warn_leak, dev);
    zoff_ptr_map_each(&dev->device_allocs, free_device_block, dev);
    zoff_ptr_map_each(&dev->pinned_allocs, free_pinned_block, dev);
    zoff_ptr_map_free(&dev->device_allocs);
    zoff_ptr_map_free(&dev->pinned_allocs);
    dev->iface->close(dev);
    pthread_mutex_destroy(&dev->lock);
    free(dev);
}

zoff_dev_kind zoff_dev_get_kind(const zoff_dev *dev) {
    return dev->kind;
}
const char *zoff_dev_name(const zoff_dev *dev) {
    return dev->name;
}
int zoff_dev_synchronize(zoff_dev *dev) {
    return dev->iface->synchronize(dev);
}

/* --- memory ---------------------------------------------------------------------------- */

int zoff_dev_malloc(zoff_dev *dev, size_t bytes, void **ptr) {
    if (!dev || !ptr) return -EINVAL;
    if (bytes == 0) bytes = 1;
    if (bytes > SIZE_MAX - ZOFF_DEV_ALIGN) return -EINVAL;
    size_t rounded = (bytes + ZOFF_DEV_ALIGN - 1) / ZOFF_DEV_ALIGN * ZOFF_DEV_ALIGN;
    /* Reserve the bytes first so that concurrent callers cannot overshoot the capacity. */
    pthread_mutex_lock(&dev->lock);
    if (rounded > dev->stats.capacity - dev->stats.used) {
        dev->stats.n_oom++;
        size_t used = dev->stats.used, cap = dev->stats.capacity;
        pthread_mutex_unlock(&dev->lock);
        return zoff_fail(ZOFF_EDEVICE_OOM, MOD,
                         "%s device out of memory: asked for %zu bytes with %zu of %zu in use",
                         zoff_dev_kind_name(dev->kind), bytes, used, cap);
    }
    dev->stats.used += rounded;
    pthread_mutex_unlock(&dev->lock);

    void *p = NULL;
    int rc = dev->iface->malloc(dev, rounded, &p);
    pthread_mutex_lock(&dev->lock);
    if (rc == 0) rc = zoff_ptr_map_put(&dev->device_allocs, p, rounded);
    if (rc) {
        dev->stats.used -= rounded;
        if (rc == ZOFF_EDEVICE_OOM) dev->stats.n_oom++;
    } else {
        dev->stats.n_allocs++;
        if (dev->stats.used > dev->stats.peak) dev->stats.peak = dev->stats.used;
    }
    pthread_mutex_unlock(&dev->lock);
    if (rc) {
        if (p) dev->iface->free(dev, p);
        return rc;
    }
    *ptr = p;
    return 0;
}

int zoff_dev_free(zoff_dev *dev, void *ptr) {
    if (!dev) return -EINVAL;
    if (!ptr) return 0;
    size_t bytes;
    pthread_mutex_lock(&dev->lock);
    int rc = zoff_ptr_map_take(&dev->device_allocs, ptr, &bytes);
    if (rc == 0) dev->stats.used -= bytes;
    pthread_mutex_unlock(&dev->lock);
    if (rc)
        return zoff_fail(-EINVAL, MOD, "free of %p, which is not device memory of this %s device",
                         ptr, zoff_dev_kind_name(dev->kind));
    return dev->iface->free(dev, ptr);
}

int zoff_dev_host_alloc(zoff_dev *dev, size_t bytes, void **ptr) {
    if (!dev || !ptr) return -EINVAL;
    if (bytes == 0) bytes = 1;
    void *p = NULL;
    int rc = dev->iface->host_alloc(dev, bytes, &p);
    if (rc) return rc;
    pthread_mutex_lock(&dev->lock);
    rc = zoff_ptr_map_put(&dev->pinned_allocs, p, bytes);
    if (rc == 0) {
        dev->stats.pinned_used += bytes;
        if (dev->stats.pinned_used > dev->stats.pinned_peak)
            dev->stats.pinned_peak = dev->stats.pinned_used;
    }
    pthread_mutex_unlock(&dev->lock);
    if (rc) {
        dev->iface->host_free(dev, p);
        return rc;
    }
    *ptr = p;
    return 0;
}

int zoff_dev_host_free(zoff_dev *dev, void *ptr) {
    if (!dev) return -EINVAL;
    if (!ptr) return 0;
    size_t bytes;
    pthread_mutex_lock(&dev->lock);
    int rc = zoff_ptr_map_take(&dev->pinned_allocs, ptr, &bytes);
    if (rc == 0) dev->stats.pinned_used -= bytes;
    pthread_mutex_unlock(&dev->lock);
    if (rc)
        return zoff_fail(-EINVAL, MOD, "host_free of %p, which is not pinned memory of this device",
                         ptr);
    return dev->iface->host_free(dev, ptr);
}

void zoff_dev_mem_stats_get(zoff_dev *dev, zoff_dev_mem_stats *out) {
    pthread_mutex_lock(&dev->lock);
    *out = dev->stats;
    pthread_mutex_unlock(&dev->lock);
}

void zoff_dev_mem_reset_peak(zoff_dev *dev) {
    pthread_mutex_lock(&dev->lock);
    dev->stats.peak = dev->stats.used;
    dev->stats.pinned_peak = dev->stats.pinned_used;
    pthread_mutex_unlock(&dev->lock);
}

/* --- streams and events ---------------------------------------------------------------- */

int zoff_dev_stream_create(zoff_dev *dev, zoff_dev_stream **out) {
    if (!dev || !out) return -EINVAL;
    zoff_dev_stream *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->dev = dev;
    int rc = dev->iface->stream_create(dev, &s->impl);
    if (rc) {
        free(s);
        return rc;
    }
    pthread_mutex_lock(&dev->lock);
    s->next = dev->streams;
    dev->streams = s;
    pthread_mutex_unlock(&dev->lock);
    *out = s;
    return 0;
}

int zoff_dev_stream_destroy(zoff_dev_stream *s) {
    if (!s) return 0;
    zoff_dev *dev = s->dev;
    pthread_mutex_lock(&dev->lock);
    for (zoff_dev_stream **pp = &dev->streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    if (dev->sync_stream == s) dev->sync_stream = NULL;
    pthread_mutex_unlock(&dev->lock);
    int rc = dev->iface->stream_destroy(dev, s->impl);
    free(s);
    return rc;
}

int zoff_dev_stream_synchronize(zoff_dev_stream *s) {
    if (!s) return -EINVAL;
    return s->dev->iface->stream_synchronize(s->impl);
}

int zoff_dev_event_create(zoff_dev *dev, zoff_dev_event **out) {
    if (!dev || !out) return -EINVAL;
    zoff_dev_event *e = calloc(1, sizeof *e);
    if (!e) return -ENOMEM;
    e->dev = dev;
    int rc = dev->iface->event_create(dev, &e->impl);
    if (rc) {
        free(e);
        return rc;
    }
    pthread_mutex_lock(&dev->lock);
    e->next = dev->events;
    dev->events = e;
    pthread_mutex_unlock(&dev->lock);
    *out = e;
    return 0;
}

int zoff_dev_event_destroy(zoff_dev_event *e) {
    if (!e) return 0;
    zoff_dev *dev = e->dev;
    pthread_mutex_lock(&dev->lock);
    for (zoff_dev_event **pp = &dev->events; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    pthread_mutex_unlock(&dev->lock);
    int rc = dev->iface->event_destroy(e->impl);
    free(e);
    return rc;
}

static int same_dev(zoff_dev_stream *s, zoff_dev_event *e) {
    if (!s || !e) return -EINVAL;
    if (s->dev != e->dev)
        return zoff_fail(-EINVAL, MOD, "stream and event belong to different devices");
    return 0;
}

int zoff_dev_event_record(zoff_dev_event *e, zoff_dev_stream *s) {
    int rc = same_dev(s, e);
    return rc ? rc : s->dev->iface->event_record(e->impl, s->impl);
}

int zoff_dev_stream_wait_event(zoff_dev_stream *s, zoff_dev_event *e) {
    int rc = same_dev(s, e);
    return rc ? rc : s->dev->iface->stream_wait_event(s->impl, e->impl);
}

int zoff_dev_event_synchronize(zoff_dev_event *e) {
    return e ? e->dev->iface->event_synchronize(e->impl) : -EINVAL;
}

int zoff_dev_event_query(zoff_dev_event *e) {
    return e ? e->dev->iface->event_query(e->impl) : -EINVAL;
}

int zoff_dev_event_elapsed_ms(zoff_dev_event *start, zoff_dev_event *end, float *ms) {
    if (!start || !end || !ms || start->dev != end->dev) return -EINVAL;
    return start->dev->iface->event_elapsed_ms(start->impl, end->impl, ms);
}

int zoff_dev_launch_host_fn(zoff_dev_stream *s, zoff_dev_host_fn fn, void *arg) {
    if (!s || !fn) return -EINVAL;
    return s->dev->iface->launch_host_fn(s->impl, fn, arg);
}

int zoff_dev_stream_wait_value(zoff_dev_stream *s, const uint32_t *flag, uint32_t value) {
    if (!s || !flag || ((uintptr_t)flag & 3)) return -EINVAL;
    return s->dev->iface->stream_wait_value(s->impl, flag, value);
}

int zoff_dev_stream_write_value(zoff_dev_stream *s, uint32_t *flag, uint32_t value) {
    if (!s || !flag || ((uintptr_t)flag & 3)) return -EINVAL;
    return s->dev->iface->stream_write_value(s->impl, flag, value);
}

int zoff_dev_host_write_value(zoff_dev *dev, uint32_t *flag, uint32_t value) {
    if (!dev || !flag || ((uintptr_t)flag & 3)) return -EINVAL;
    return dev->iface->host_write_value(dev, flag, value);
}

int zoff_dev_host_wait_value(zoff_dev *dev, const uint32_t *flag, uint32_t value) {
    if (!dev || !flag || ((uintptr_t)flag & 3)) return -EINVAL;
    return dev->iface->host_wait_value(dev, flag, value);
}

/* --- copies ---------------------------------------------------------------------------- */

int zoff_dev_memcpy_async(zoff_dev_stream *s, void *dst, const void *src, size_t bytes,
                          zoff_dev_copy_kind kind) {
    if (!s || (unsigned)kind > ZOFF_COPY_H2H) return -EINVAL;
    if (bytes == 0) return 0;
    if (!dst || !src)
        return zoff_fail(-EINVAL, MOD, "memcpy of %zu bytes with a NULL pointer", bytes);
    return s->dev->iface->memcpy_async(s->impl, dst, src, bytes, kind);
}

int zoff_dev_memset_async(zoff_dev_stream *s, void *dst, int value, size_t bytes) {
    if (!s) return -EINVAL;
    if (bytes == 0) return 0;
    if (!dst) return -EINVAL;
    return s->dev->iface->memset_async(s->impl, dst, value, bytes);
}

int zoff_dev_memcpy(zoff_dev *dev, void *dst, const void *src, size_t bytes,
                    zoff_dev_copy_kind kind) {
    if (!dev || !dev->sync_stream) return -EINVAL;
    int rc = zoff_dev_memcpy_async(dev->sync_stream, dst, src, bytes, kind);
    return rc ? rc : zoff_dev_stream_synchronize(dev->sync_stream);
}

/* --- ops ------------------------------------------------------------------------------- */

static int check_dtype(zoff_dtype t) {
    return zoff_dtype_size(t) ? 0 : zoff_fail(-EINVAL, MOD, "invalid dtype %d", (int)t);
}

int zoff_dev_op_cast(zoff_dev_stream *s, void *dst, zoff_dtype dst_type, const void *src,
                     zoff_dtype src_type, size_t n) {
    if (!s || check_dtype(dst_type) || check_dtype(src_type)) return -EINVAL;
    if (n == 0) return 0;
    if (!dst || !src) return -EINVAL;
    return s->dev->iface->op_cast(s->impl, dst, dst_type, src, src_type, n);
}

int zoff_dev_op_scale(zoff_dev_stream *s, void *x, zoff_dtype type, float alpha, size_t n) {
    if (!s || check_dtype(type)) return -EINVAL;
    if (n == 0) return 0;
    if (!x) return -EINVAL;
    return s->dev->iface->op_scale(s->impl, x, type, alpha, n);
}

int zoff_dev_op_sumsq_nonfinite(zoff_dev_stream *s, const void *x, zoff_dtype type, size_t n,
                                float *out) {
    if (!s || !out || check_dtype(type)) return -EINVAL;
    if (n && !x) return -EINVAL;
    return s->dev->iface->op_sumsq_nonfinite(s->impl, x, type, n, out);
}

/* --- model kernels --------------------------------------------------------------------- */

/* A backend may not implement every kernel yet: say so instead of crashing. */
#define NEED_OP(s, op)                                                                             \
    do {                                                                                           \
        if (!(s)->dev->iface->op)                                                                  \
            return zoff_fail(-ENOSYS, MOD, "%s backend has no %s kernel",                          \
                             zoff_dev_kind_name((s)->dev->kind), #op);                             \
    } while (0)

static int bad_args(const char *op) {
    return zoff_fail(-EINVAL, MOD, "%s: invalid arguments (NULL pointer or bad shape)", op);
}

static int check_types(const char *op, int n, const zoff_dtype *t) {
    for (int i = 0; i < n; i++)
        if (!zoff_dtype_size(t[i]))
            return zoff_fail(-EINVAL, MOD, "%s: invalid dtype %d", op, (int)t[i]);
    return 0;
}
#define CHECK_TYPES(op, ...)                                                                       \
    do {                                                                                           \
        const zoff_dtype types_[] = {__VA_ARGS__};                                                 \
        int rc_ = check_types(op, (int)(sizeof types_ / sizeof types_[0]), types_);                \
        if (rc_) return rc_;                                                                       \
    } while (0)

int zoff_dev_op_gemm(zoff_dev_stream *s, bool trans_a, bool trans_b, int M, int N, int K,
                     float alpha, const void *A, int lda, const void *B, int ldb,
                     zoff_dtype ab_type, float beta, void *C, zoff_dtype c_type, int ldc) {
    if (!s) return -EINVAL;
    CHECK_TYPES("gemm", ab_type, c_type);
    if (M < 0 || N < 0 || K < 0) return bad_args("gemm");
    if (M == 0 || N == 0) return 0;
    int a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
    if (!A || !B || !C || lda < (a_cols ? a_cols : 1) || ldb < (b_cols ? b_cols : 1) || ldc < N)
        return bad_args("gemm");
    NEED_OP(s, op_gemm);
    return s->dev->iface->op_gemm(s->impl, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                                  ab_type, beta, C, c_type, ldc);
}

int zoff_dev_op_bias_init(zoff_dev_stream *s, void *out, zoff_dtype out_type, const void *bias,
                          zoff_dtype bias_type, const float *res, size_t N, int OC) {
    if (!s) return -EINVAL;
    CHECK_TYPES("bias_init", out_type, bias_type);
    if (N == 0) return 0;
    if (!out || (!bias && !res) || OC <= 0) return bad_args("bias_init");
    NEED_OP(s, op_bias_init);
    return s->dev->iface->op_bias_init(s->impl, out, out_type, bias, bias_type, res, N, OC);
}

int zoff_dev_op_bias_grad(zoff_dev_stream *s, void *dbias, zoff_dtype g_type, const void *dout,
                          zoff_dtype dout_type, size_t N, int OC) {
    if (!s) return -EINVAL;
    CHECK_TYPES("bias_grad", g_type, dout_type);
    if (N == 0) return 0;
    if (!dbias || !dout || OC <= 0) return bad_args("bias_grad");
    NEED_OP(s, op_bias_grad);
    return s->dev->iface->op_bias_grad(s->impl, dbias, g_type, dout, dout_type, N, OC);
}

int zoff_dev_op_add(zoff_dev_stream *s, float *out, const float *a, const float *b, size_t n) {
    if (!s) return -EINVAL;
    if (n == 0) return 0;
    if (!out || !a || !b) return bad_args("add");
    NEED_OP(s, op_add);
    return s->dev->iface->op_add(s->impl, out, a, b, n);
}

int zoff_dev_op_layernorm_fwd(zoff_dev_stream *s, void *out, zoff_dtype out_type, float *mean,
                              float *rstd, const float *inp, const void *weight, const void *bias,
                              zoff_dtype w_type, size_t N, int C) {
    if (!s) return -EINVAL;
    CHECK_TYPES("layernorm_fwd", out_type, w_type);
    if (N == 0) return 0;
    if (!out || !mean || !rstd || !inp || !weight || !bias || C <= 0)
        return bad_args("layernorm_fwd");
    NEED_OP(s, op_layernorm_fwd);
    return s->dev->iface->op_layernorm_fwd(s->impl, out, out_type, mean, rstd, inp, weight, bias,
                                           w_type, N, C);
}

int zoff_dev_op_layernorm_bwd(zoff_dev_stream *s, float *dinp, void *dweight, void *dbias,
                              zoff_dtype g_type, const float *dout, const float *inp,
                              const void *weight, zoff_dtype w_type, const float *mean,
                              const float *rstd, size_t N, int C) {
    if (!s) return -EINVAL;
    CHECK_TYPES("layernorm_bwd", g_type, w_type);
    if (N == 0) return 0;
    if (!dinp || !dweight || !dbias || !dout || !inp || !weight || !mean || !rstd || C <= 0)
        return bad_args("layernorm_bwd");
    NEED_OP(s, op_layernorm_bwd);
    return s->dev->iface->op_layernorm_bwd(s->impl, dinp, dweight, dbias, g_type, dout, inp, weight,
                                           w_type, mean, rstd, N, C);
}

int zoff_dev_op_gelu_fwd(zoff_dev_stream *s, void *out, const void *inp, zoff_dtype type,
                         size_t n) {
    if (!s) return -EINVAL;
    CHECK_TYPES("gelu_fwd", type);
    if (n == 0) return 0;
    if (!out || !inp) return bad_args("gelu_fwd");
    NEED_OP(s, op_gelu_fwd);
    return s->dev->iface->op_gelu_fwd(s->impl, out, inp, type, n);
}

int zoff_dev_op_gelu_bwd(zoff_dev_stream *s, void *dinp, const void *inp, const void *dout,
                         zoff_dtype type, size_t n) {
    if (!s) return -EINVAL;
    CHECK_TYPES("gelu_bwd", type);
    if (n == 0) return 0;
    if (!dinp || !inp || !dout) return bad_args("gelu_bwd");
    NEED_OP(s, op_gelu_bwd);
    return s->dev->iface->op_gelu_bwd(s->impl, dinp, inp, dout, type, n);
}

static int attn_shape_ok(int B, int T, int C, int NH) {
    return B > 0 && T > 0 && C > 0 && NH > 0 && C % NH == 0;
}

int zoff_dev_op_attention_fwd(zoff_dev_stream *s, float *out, float *att, const float *qkv, int B,
                              int T, int C, int NH) {
    if (!s) return -EINVAL;
    if (!out || !att || !qkv || !attn_shape_ok(B, T, C, NH)) return bad_args("attention_fwd");
    NEED_OP(s, op_attention_fwd);
    return s->dev->iface->op_attention_fwd(s->impl, out, att, qkv, B, T, C, NH);
}

int zoff_dev_op_attention_bwd(zoff_dev_stream *s, float *dqkv, float *scratch, const float *dout,
                              const float *qkv, const float *att, int B, int T, int C, int NH) {
    if (!s) return -EINVAL;
    if (!dqkv || !scratch || !dout || !qkv || !att || !attn_shape_ok(B, T, C, NH))
        return bad_args("attention_bwd");
    NEED_OP(s, op_attention_bwd);
    return s->dev->iface->op_attention_bwd(s->impl, dqkv, scratch, dout, qkv, att, B, T, C, NH);
}

static int flash_shape_check(const char *op, const zoff_dev_attn_shape *a) {
    if (!a || a->B < 1 || a->T < 1 || a->NH < 1 || a->NKV < 1 || a->HS < 1 ||
        a->NH % a->NKV != 0 || a->q_stride < (size_t)a->NH * a->HS ||
        a->kv_stride < (size_t)a->NKV * a->HS || !(a->scale > 0.0f))
        return zoff_fail(-EINVAL, MOD,
                         "%s: bad shape (B %d, T %d, NH %d, NKV %d, HS %d, strides %zu/%zu)", op,
                         a ? a->B : 0, a ? a->T : 0, a ? a->NH : 0, a ? a->NKV : 0,
                         a ? a->HS : 0, a ? a->q_stride : 0, a ? a->kv_stride : 0);
    return 0;
}

int zoff_dev_op_flash_attention_fwd(zoff_dev_stream *s, void *out, float *lse, const void *q,
                                    const void *k, const void *v, zoff_dtype type,
                                    const int32_t *doc_start, const zoff_dev_attn_shape *shape) {
    if (!s) return -EINVAL;
    CHECK_TYPES("flash_attention_fwd", type);
    int rc = flash_shape_check("flash_attention_fwd", shape);
    if (rc) return rc;
    if (!out || !lse || !q || !k || !v) return bad_args("flash_attention_fwd");
    NEED_OP(s, op_flash_attention_fwd);
    return s->dev->iface->op_flash_attention_fwd(s->impl, out, lse, q, k, v, type, doc_start,
                                                 shape);
}

int zoff_dev_op_flash_attention_bwd(zoff_dev_stream *s, void *dq, void *dk, void *dv,
                                    float *delta, const void *dout, const void *out,
                                    const float *lse, const void *q, const void *k, const void *v,
                                    zoff_dtype type, const int32_t *doc_start,
                                    const zoff_dev_attn_shape *shape) {
    if (!s) return -EINVAL;
    CHECK_TYPES("flash_attention_bwd", type);
    int rc = flash_shape_check("flash_attention_bwd", shape);
    if (rc) return rc;
    if (!dq || !dk || !dv || !delta || !dout || !out || !lse || !q || !k || !v)
        return bad_args("flash_attention_bwd");
    NEED_OP(s, op_flash_attention_bwd);
    return s->dev->iface->op_flash_attention_bwd(s->impl, dq, dk, dv, delta, dout, out, lse, q, k,
                                                 v, type, doc_start, shape);
}

int zoff_dev_op_softmax_xent_fwd(zoff_dev_stream *s, float *probs, float *losses,
                                 const float *logits, const int32_t *targets, size_t N, int V) {
    if (!s) return -EINVAL;
    if (N == 0) return 0;
    if (!probs || !logits || V <= 0 || (targets && !losses)) return bad_args("softmax_xent_fwd");
    NEED_OP(s, op_softmax_xent_fwd);
    return s->dev->iface->op_softmax_xent_fwd(s->impl, probs, losses, logits, targets, N, V);
}

int zoff_dev_op_softmax_xent_bwd(zoff_dev_stream *s, float *dlogits, const float *probs,
                                 const int32_t *targets, float dloss, size_t N, int V) {
    if (!s) return -EINVAL;
    if (N == 0) return 0;
    if (!dlogits || !probs || !targets || V <= 0) return bad_args("softmax_xent_bwd");
    NEED_OP(s, op_softmax_xent_bwd);
    return s->dev->iface->op_softmax_xent_bwd(s->impl, dlogits, probs, targets, dloss, N, V);
}

int zoff_dev_op_xent_fused(zoff_dev_stream *s, float *losses, void *dlogits, zoff_dtype d_type,
                           const float *logits, const int32_t *targets, float dloss, size_t N,
                           int V) {
    if (!s) return -EINVAL;
    CHECK_TYPES("xent_fused", d_type);
    if (N == 0) return 0;
    if (!losses || !logits || !targets || V <= 0 ||
        (dlogits == (const void *)logits && d_type != ZOFF_F32))
        return bad_args("xent_fused");
    NEED_OP(s, op_xent_fused);
    return s->dev->iface->op_xent_fused(s->impl, losses, dlogits, d_type, logits, targets, dloss,
                                        N, V);
}

int zoff_dev_op_embedding_fwd(zoff_dev_stream *s, float *out, const int32_t *tokens,
                              const int32_t *pos, const void *wte, const void *wpe,
                              zoff_dtype w_type, int B, int T, int C) {
    if (!s) return -EINVAL;
    CHECK_TYPES("embedding_fwd", w_type);
    if (!out || !tokens || !wte || B <= 0 || T <= 0 || C <= 0) return bad_args("embedding_fwd");
    NEED_OP(s, op_embedding_fwd);
    return s->dev->iface->op_embedding_fwd(s->impl, out, tokens, pos, wte, wpe, w_type, B, T, C);
}

int zoff_dev_op_embedding_bwd(zoff_dev_stream *s, void *dwte, void *dwpe, zoff_dtype g_type,
                              const float *dout, const int32_t *tokens, const int32_t *pos, int B,
                              int T, int C) {
    if (!s) return -EINVAL;
    CHECK_TYPES("embedding_bwd", g_type);
    if (!dwte || !dout || !tokens || B <= 0 || T <= 0 || C <= 0) return bad_args("embedding_bwd");
    NEED_OP(s, op_embedding_bwd);
    return s->dev->iface->op_embedding_bwd(s->impl, dwte, dwpe, g_type, dout, tokens, pos, B, T,
                                           C);
}

int zoff_dev_op_adamw(zoff_dev_stream *s, float *param, const float *grad, float *m, float *v,
                      size_t n, const zoff_dev_adamw_args *args) {
    if (!s || !args) return -EINVAL;
    if (n == 0) return 0;
    if (!param || !grad || !m || !v || args->step < 1) return bad_args("adamw");
    NEED_OP(s, op_adamw);
    return s->dev->iface->op_adamw(s->impl, param, grad, m, v, n, args);
}

/* --- Llama-family kernels --------------------------------------------------------------- */

int zoff_dev_op_rmsnorm_fwd(zoff_dev_stream *s, void *out, zoff_dtype out_type, float *rstd,
                            const float *inp, const void *weight, zoff_dtype w_type, size_t N,
                            int C, float eps) {
    if (!s) return -EINVAL;
    CHECK_TYPES("rmsnorm_fwd", out_type, w_type);
    if (N == 0) return 0;
    if (!out || !rstd || !inp || !weight || C <= 0 || !(eps >= 0.0f))
        return bad_args("rmsnorm_fwd");
    NEED_OP(s, op_rmsnorm_fwd);
    return s->dev->iface->op_rmsnorm_fwd(s->impl, out, out_type, rstd, inp, weight, w_type, N, C,
                                         eps);
}

int zoff_dev_op_rmsnorm_bwd(zoff_dev_stream *s, float *dinp, void *dweight, zoff_dtype g_type,
                            const float *dout, const float *inp, const void *weight,
                            zoff_dtype w_type, const float *rstd, size_t N, int C) {
    if (!s) return -EINVAL;
    CHECK_TYPES("rmsnorm_bwd", g_type, w_type);
    if (N == 0) return 0;
    if (!dinp || !dweight || !dout || !inp || !weight || !rstd || C <= 0)
        return bad_args("rmsnorm_bwd");
    NEED_OP(s, op_rmsnorm_bwd);
    return s->dev->iface->op_rmsnorm_bwd(s->impl, dinp, dweight, g_type, dout, inp, weight, w_type,
                                         rstd, N, C);
}

static int rope(zoff_dev_stream *s, void *x, zoff_dtype type, size_t row_stride, const int32_t *pos,
                const float *inv_freq, int B, int T, int NH, int HS, bool backward) {
    const char *op = backward ? "rope_bwd" : "rope_fwd";
    if (!s) return -EINVAL;
    CHECK_TYPES(op, type);
    if (!x || !inv_freq || B <= 0 || T <= 0 || NH <= 0 || HS <= 0 || HS % 2 ||
        row_stride < (size_t)NH * HS)
        return bad_args(op);
    NEED_OP(s, op_rope);
    return s->dev->iface->op_rope(s->impl, x, type, row_stride, pos, inv_freq, B, T, NH, HS,
                                  backward);
}

int zoff_dev_op_rope_fwd(zoff_dev_stream *s, void *x, zoff_dtype type, size_t row_stride,
                         const int32_t *pos, const float *inv_freq, int B, int T, int NH, int HS) {
    return rope(s, x, type, row_stride, pos, inv_freq, B, T, NH, HS, false);
}

int zoff_dev_op_rope_bwd(zoff_dev_stream *s, void *dx, zoff_dtype type, size_t row_stride,
                         const int32_t *pos, const float *inv_freq, int B, int T, int NH, int HS) {
    return rope(s, dx, type, row_stride, pos, inv_freq, B, T, NH, HS, true);
}

int zoff_dev_op_swiglu_fwd(zoff_dev_stream *s, void *out, const void *gate, const void *up,
                           zoff_dtype type, size_t n) {
    if (!s) return -EINVAL;
    CHECK_TYPES("swiglu_fwd", type);
    if (n == 0) return 0;
    if (!out || !gate || !up) return bad_args("swiglu_fwd");
    NEED_OP(s, op_swiglu_fwd);
    return s->dev->iface->op_swiglu_fwd(s->impl, out, gate, up, type, n);
}

int zoff_dev_op_swiglu_bwd(zoff_dev_stream *s, void *dgate, void *dup, const void *dout,
                           const void *gate, const void *up, zoff_dtype type, size_t n) {
    if (!s) return -EINVAL;
    CHECK_TYPES("swiglu_bwd", type);
    if (n == 0) return 0;
    if (!dgate || !dup || !dout || !gate || !up || dgate == dup) return bad_args("swiglu_bwd");
    NEED_OP(s, op_swiglu_bwd);
    return s->dev->iface->op_swiglu_bwd(s->impl, dgate, dup, dout, gate, up, type, n);
}

/* --- collectives ------------------------------------------------------------------------
 * The checks a GPU would fault on (pointers outside this device's allocations, overlapping
 * buffers other than the in-place conventions), then the backend; a world of one never reaches
 * the backend: its collectives are stream-ordered D2D copies. */

typedef struct range_probe {
    uintptr_t lo, hi;
    bool found;
} range_probe;

static void probe_alloc(void *key, size_t bytes, void *ctx) {
    range_probe *p = ctx;
    uintptr_t a = (uintptr_t)key;
    if (p->lo >= a && p->hi <= a + bytes) p->found = true;
}

/* Whether [ptr, ptr+bytes) lies inside one live device allocation of dev. A walk of the
 * allocation table: collectives are few per step and the table holds hundreds of entries. */
static bool dev_owns_range(zoff_dev *dev, const void *ptr, size_t bytes) {
    range_probe p = {(uintptr_t)ptr, (uintptr_t)ptr + bytes, false};
    pthread_mutex_lock(&dev->lock);
    zoff_ptr_map_each(&dev->device_allocs, probe_alloc, &p);
    pthread_mutex_unlock(&dev->lock);
    return p.found;
}

int zoff_dev_comm_create(zoff_dev *dev, zoff_dist *dist, zoff_dev_comm **out) {
    if (!dev || !out) return -EINVAL;
    zoff_dev_comm *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->dev = dev;
    c->dist = dist;
    c->rank = zoff_dist_rank(dist);
    c->size = zoff_dist_size(dist);
    if (c->size > 1) {
        int rc = dev->iface->comm_create
                     ? dev->iface->comm_create(dev, dist, &c->impl)
                     : zoff_fail(-ENOSYS, MOD, "the %s backend has no collectives",
                                 zoff_dev_kind_name(dev->kind));
        if (rc) {
            free(c);
            return rc;
        }
    }
    *out = c;
    return 0;
}

void zoff_dev_comm_destroy(zoff_dev_comm *c) {
    if (!c) return;
    if (c->impl) c->dev->iface->comm_destroy(c->dev, c->impl);
    free(c);
}

int zoff_dev_comm_rank(const zoff_dev_comm *c) {
    return c ? c->rank : 0;
}

int zoff_dev_comm_size(const zoff_dev_comm *c) {
    return c ? c->size : 1;
}

/* Common checks; *elem receives the element size. 1: nothing to do (count 0). */
static int comm_check(const char *op, zoff_dev_stream *s, zoff_dev_comm *c, size_t count,
                      zoff_dtype type, size_t *elem) {
    if (!s || !c) return zoff_fail(-EINVAL, MOD, "%s: NULL stream or communicator", op);
    if (s->dev != c->dev)
        return zoff_fail(-EINVAL, MOD, "%s: stream and communicator belong to different devices",
                         op);
    if (type != ZOFF_F32 && type != ZOFF_BF16 && type != ZOFF_F16)
        return zoff_fail(-EINVAL, MOD, "%s: dtype %d is not f32, bf16 or f16", op, (int)type);
    *elem = zoff_dtype_size(type);
    if (count == 0) return 1;
    /* the whole buffer of size*count elements must be addressable */
    if (count > SIZE_MAX / *elem / (size_t)c->size)
        return zoff_fail(-EOVERFLOW, MOD, "%s: %zu elements times %d ranks overflow", op, count,
                         c->size);
    return 0;
}

static int comm_owns(const char *op, zoff_dev *dev, const char *what, const void *p, size_t bytes) {
    if (!p) return zoff_fail(-EINVAL, MOD, "%s: %s is NULL", op, what);
    if (!dev_owns_range(dev, p, bytes))
        return zoff_fail(-EINVAL, MOD,
                         "%s: %s %p (%zu bytes) is not inside a device allocation of this device",
                         op, what, p, bytes);
    return 0;
}

static bool overlap(const void *a, size_t an, const void *b, size_t bn) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y + bn && y < x + an;
}

int zoff_dev_allreduce(zoff_dev_stream *s, zoff_dev_comm *c, const void *send, void *recv,
                       size_t count, zoff_dtype type) {
    size_t elem = 0, bytes;
    int rc = comm_check("allreduce", s, c, count, type, &elem);
    if (rc) return rc < 0 ? rc : 0;
    bytes = count * elem;
    if ((rc = comm_owns("allreduce", s->dev, "send", send, bytes)) ||
        (rc = comm_owns("allreduce", s->dev, "recv", recv, bytes)))
        return rc;
    if (send != recv && overlap(send, bytes, recv, bytes))
        return zoff_fail(-EINVAL, MOD, "allreduce: send and recv overlap without being equal");
    if (c->size == 1)
        return send == recv
                   ? 0
                   : s->dev->iface->memcpy_async(s->impl, recv, send, bytes, ZOFF_COPY_D2D);
    return s->dev->iface->comm_allreduce(s->impl, c->impl, send, recv, count, type);
}

int zoff_dev_reduce_scatter(zoff_dev_stream *s, zoff_dev_comm *c, const void *send, void *recv,
                            size_t recv_count, zoff_dtype type) {
    size_t elem = 0;
    int rc = comm_check("reduce_scatter", s, c, recv_count, type, &elem);
    if (rc) return rc < 0 ? rc : 0;
    size_t rbytes = recv_count * elem, sbytes = rbytes * (size_t)c->size;
    if ((rc = comm_owns("reduce_scatter", s->dev, "send", send, sbytes)) ||
        (rc = comm_owns("reduce_scatter", s->dev, "recv", recv, rbytes)))
        return rc;
    const char *mine = (const char *)send + (size_t)c->rank * rbytes;
    bool in_place = (const char *)recv == mine;
    if (!in_place && overlap(send, sbytes, recv, rbytes))
        return zoff_fail(-EINVAL, MOD,
                         "reduce_scatter: recv overlaps send but is not send + rank*recv_count");
    if (c->size == 1)
        return in_place ? 0
                        : s->dev->iface->memcpy_async(s->impl, recv, send, rbytes, ZOFF_COPY_D2D);
    return s->dev->iface->comm_reduce_scatter(s->impl, c->impl, send, recv, recv_count, type);
}

int zoff_dev_allgather(zoff_dev_stream *s, zoff_dev_comm *c, const void *send, void *recv,
                       size_t send_count, zoff_dtype type) {
    size_t elem = 0;
    int rc = comm_check("allgather", s, c, send_count, type, &elem);
    if (rc) return rc < 0 ? rc : 0;
    size_t sbytes = send_count * elem, rbytes = sbytes * (size_t)c->size;
    if ((rc = comm_owns("allgather", s->dev, "send", send, sbytes)) ||
        (rc = comm_owns("allgather", s->dev, "recv", recv, rbytes)))
        return rc;
    const char *mine = (const char *)recv + (size_t)c->rank * sbytes;
    bool in_place = (const char *)send == mine;
    if (!in_place && overlap(send, sbytes, recv, rbytes))
        return zoff_fail(-EINVAL, MOD,
                         "allgather: send overlaps recv but is not recv + rank*send_count");
    if (c->size == 1)
        return in_place ? 0
                        : s->dev->iface->memcpy_async(s->impl, recv, send, sbytes, ZOFF_COPY_D2D);
    return s->dev->iface->comm_allgather(s->impl, c->impl, send, recv, send_count, type);
}

int zoff_dev_broadcast(zoff_dev_stream *s, zoff_dev_comm *c, void *buf, size_t count,
                       zoff_dtype type, int root) {
    size_t elem = 0;
    int rc = comm_check("broadcast", s, c, count, type, &elem);
    if (rc < 0) return rc;
    if (root < 0 || root >= c->size)
        return zoff_fail(-EINVAL, MOD, "broadcast: root %d is not a rank of %d", root, c->size);
    if (rc) return 0;
    if ((rc = comm_owns("broadcast", s->dev, "buf", buf, count * elem))) return rc;
    if (c->size == 1) return 0;
    return s->dev->iface->comm_broadcast(s->impl, c->impl, buf, count, type, root);
}
