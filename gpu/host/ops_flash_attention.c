/* Host fused causal attention (see zoff_dev_op_flash_attention_fwd in gpu/device.h): nothing
 * of size T*T exists; each query row's scores live in a T-float row of the thread's scratch,
 * and the backward recomputes them from the saved log-sum-exp, as FlashAttention does.
 *
 * Work split: the forward runs one task per (batch, query head); the backward one task per
 * (batch, key/value head), which owns the dk and dv rows of that head and the dq rows of its
 * query heads, so no two threads write the same element and the summation order is fixed.
 * Each task first copies its head's k and v rows (strided, maybe 16-bit) into contiguous fp32
 * rows of its scratch; everything is computed in fp32 and 16-bit outputs are rounded once. */
#include "gpu/host/host_parallel.h"
#include "core/half.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

typedef struct flash_args {
    zoff_dev_attn_shape sh;
    zoff_dtype type;
    const void *q, *k, *v, *dout, *out_in; /* out_in: the forward's output (bwd) */
    void *out, *dq, *dk, *dv;
    float *lse, *delta;
    const float *lse_in;
    const int32_t *doc_start;
    float *scratch; /* (nt, per_thread) */
    size_t per_thread;
    int nt;
} flash_args;

/* n values of a typed buffer starting at element `off`, as fp32 into dst. */
static inline void load_row(float *dst, const void *src, zoff_dtype t, size_t off, int n) {
    if (t == ZOFF_F32) {
        const float *s = (const float *)src + off;
        for (int i = 0; i < n; i++)
            dst[i] = s[i];
    } else {
        for (int i = 0; i < n; i++)
            dst[i] = zoff_load_as_f32(src, t, off + (size_t)i);
    }
}

static inline void store_row(void *dst, zoff_dtype t, size_t off, const float *src, int n) {
    if (t == ZOFF_F32) {
        float *d = (float *)dst + off;
        for (int i = 0; i < n; i++)
            d[i] = src[i];
    } else {
        for (int i = 0; i < n; i++)
            zoff_store_from_f32(dst, t, off + (size_t)i, src[i]);
    }
}

/* The first key query t of row b may see: its sample's first position, clamped to [0, t]. */
static inline int first_key(const flash_args *a, int b, int t) {
    if (!a->doc_start) return 0;
    int lo = a->doc_start[(size_t)b * a->sh.T + t];
    return lo < 0 ? 0 : lo > t ? t : lo;
}

/* k and v rows [0, T) of key/value head kvh in batch b into kf, vf (T, HS). */
static void load_kv(const flash_args *a, int b, int kvh, float *kf, float *vf) {
    const zoff_dev_attn_shape *sh = &a->sh;
    for (int t = 0; t < sh->T; t++) {
        size_t off = ((size_t)b * sh->T + t) * sh->kv_stride + (size_t)kvh * sh->HS;
        load_row(kf + (size_t)t * sh->HS, a->k, a->type, off, sh->HS);
        load_row(vf + (size_t)t * sh->HS, a->v, a->type, off, sh->HS);
    }
}

static inline float dot(const float *x, const float *y, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

static void run_flash_fwd(void *p) {
    flash_args *a = p;
    const zoff_dev_attn_shape *sh = &a->sh;
    int T = sh->T, HS = sh->HS, NH = sh->NH, group = sh->NH / sh->NKV;
    int tasks = sh->B * NH;
    double work = (double)sh->B * NH * T * T * HS * 2.0;
#pragma omp parallel for num_threads(host_threads_for(a->nt, work)) schedule(static)
    for (int task = 0; task < tasks; task++) {
        int b = task / NH, h = task % NH;
        float *kf = a->scratch + (size_t)host_thread_id() * a->per_thread;
        float *vf = kf + (size_t)T * HS, *row = vf + (size_t)T * HS, *q = row + T, *o = q + HS;
        load_kv(a, b, h / group, kf, vf);
        for (int t = 0; t < T; t++) {
            size_t bt = (size_t)b * T + t;
            load_row(q, a->q, a->type, bt * sh->q_stride + (size_t)h * HS, HS);
            int lo = first_key(a, b, t);
            float maxv = -INFINITY;
            for (int j = lo; j <= t; j++) {
                float sc = dot(q, kf + (size_t)j * HS, HS) * sh->scale;
                row[j] = sc;
                maxv = sc > maxv ? sc : maxv;
            }
            float sum = 0.0f;
            for (int i = 0; i < HS; i++)
                o[i] = 0.0f;
            for (int j = lo; j <= t; j++) {
                float w = expf(row[j] - maxv);
                sum += w;
                const float *vj = vf + (size_t)j * HS;
                for (int i = 0; i < HS; i++)
                    o[i] += w * vj[i];
            }
            float inv = 1.0f / sum;
            for (int i = 0; i < HS; i++)
                o[i] *= inv;
            store_row(a->out, a->type, (bt * NH + (size_t)h) * HS, o, HS);
            a->lse[((size_t)b * NH + h) * T + t] = maxv + logf(sum);
        }
    }
    free(a->scratch);
}

static void run_flash_bwd(void *p) {
    flash_args *a = p;
    const zoff_dev_attn_shape *sh = &a->sh;
    int T = sh->T, HS = sh->HS, NH = sh->NH, NKV = sh->NKV, group = NH / NKV;
    int tasks = sh->B * NKV;
    double work = (double)sh->B * NH * T * T * HS * 4.0;
#pragma omp parallel for num_threads(host_threads_for(a->nt, work)) schedule(static)
    for (int task = 0; task < tasks; task++) {
        int b = task / NKV, kvh = task % NKV;
        float *kf = a->scratch + (size_t)host_thread_id() * a->per_thread;
        float *vf = kf + (size_t)T * HS, *dkf = vf + (size_t)T * HS, *dvf = dkf + (size_t)T * HS;
        float *q = dvf + (size_t)T * HS, *dy = q + HS, *o = dy + HS, *dq = o + HS;
        load_kv(a, b, kvh, kf, vf);
        for (size_t i = 0; i < 2 * (size_t)T * HS; i++)
            dkf[i] = 0.0f; /* dkf and dvf */
        for (int h = kvh * group; h < (kvh + 1) * group; h++)
            for (int t = 0; t < T; t++) {
                size_t bt = (size_t)b * T + t, qoff = bt * sh->q_stride + (size_t)h * HS;
                size_t ooff = (bt * NH + (size_t)h) * HS, hrow = ((size_t)b * NH + h) * T + t;
                load_row(q, a->q, a->type, qoff, HS);
                load_row(dy, a->dout, a->type, ooff, HS);
                load_row(o, a->out_in, a->type, ooff, HS);
                float D = dot(dy, o, HS), lse = a->lse_in[hrow];
                a->delta[hrow] = D;
                for (int i = 0; i < HS; i++)
                    dq[i] = 0.0f;
                for (int j = first_key(a, b, t); j <= t; j++) {
                    const float *kj = kf + (size_t)j * HS, *vj = vf + (size_t)j * HS;
                    float *dkj = dkf + (size_t)j * HS, *dvj = dvf + (size_t)j * HS;
                    float pj = expf(dot(q, kj, HS) * sh->scale - lse);
                    float ds = pj * (dot(dy, vj, HS) - D) * sh->scale;
                    for (int i = 0; i < HS; i++) {
                        dvj[i] += pj * dy[i];
                        dq[i] += ds * kj[i];
                        dkj[i] += ds * q[i];
                    }
                }
                store_row(a->dq, a->type, qoff, dq, HS);
            }
        for (int t = 0; t < T; t++) {
            size_t off = ((size_t)b * T + t) * sh->kv_stride + (size_t)kvh * HS;
            store_row(a->dk, a->type, off, dkf + (size_t)t * HS, HS);
            store_row(a->dv, a->type, off, dvf + (size_t)t * HS, HS);
        }
    }
    free(a->scratch);
}

static int launch(void *stream, flash_args *a, host_cmd_fn fn, size_t per_thread,
                  const char *op) {
    a->nt = host_stream_threads(stream);
    a->per_thread = per_thread;
    a->scratch = host_kernel_scratch(op, (size_t)a->nt * per_thread * sizeof(float));
    if (!a->scratch) return -ENOMEM;
    int rc = host_stream_enqueue(stream, fn, a, sizeof *a);
    if (rc) free(a->scratch);
    return rc;
}

int host_op_flash_attention_fwd(void *stream, void *out, float *lse, const void *q, const void *k,
                                const void *v, zoff_dtype type, const int32_t *doc_start,
                                const zoff_dev_attn_shape *shape) {
    flash_args a = {.sh = *shape,
                    .type = type,
                    .q = q,
                    .k = k,
                    .v = v,
                    .out = out,
                    .lse = lse,
                    .doc_start = doc_start};
    size_t T = (size_t)shape->T, HS = (size_t)shape->HS;
    return launch(stream, &a, run_flash_fwd, 2 * T * HS + T + 2 * HS, "flash_attention_fwd");
}

int host_op_flash_attention_bwd(void *stream, void *dq, void *dk, void *dv, float *delta,
                                const void *dout, const void *out, const float *lse, const void *q,
                                const void *k, const void *v, zoff_dtype type,
                                const int32_t *doc_start, const zoff_dev_attn_shape *shape) {
    flash_args a = {.sh = *shape,
                    .type = type,
                    .q = q,
                    .k = k,
                    .v = v,
                    .dout = dout,
                    .out_in = out,
                    .dq = dq,
                    .dk = dk,
                    .dv = dv,
                    .delta = delta,
                    .lse_in = lse,
                    .doc_start = doc_start};
    size_t T = (size_t)shape->T, HS = (size_t)shape->HS;
    return launch(stream, &a, run_flash_bwd, 4 * T * HS + 4 * HS, "flash_attention_bwd");
}
