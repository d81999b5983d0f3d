/* Host fused causal attention (see zoff_dev_op_flash_attention_fwd in gpu/device.h): nothing
 * of size T*T exists; each query row's scores live in a T-float row of the thread's scratch,
 * and the backward recomputes them from the saved log-sum-exp, as FlashAttention does.
 *
 * Work split: the forward runs one task per (batch, query head); the backward one task per
 * (batch, key/value head), which owns the dk and dv rows of that head and the dq rows of its
 * query heads, so no two threads write the same element and the summation order is fixed.
 * Each task first copies its head's k and v (strided, maybe 16-bit) into its scratch as fp32,
 * both as rows (T, HS) and transposed (HS, T): a query's scores against keys [lo, t] are then
 * summed over the head dimension in the outer loop with the keys in the inner one, a loop the
 * compiler vectorizes (a dot product per key would be a serial chain of adds), while each
 * score keeps the same summation order. The exponentials are host_expf's (a vectorizing
 * polynomial, about 1 ulp: libm's expf per element was half of the forward). Everything is
 * computed in fp32 and 16-bit outputs are rounded once. */
#include "gpu/host/host_parallel.h"
#include "core/half.h"
#include "core/target_clones.h"
#include "gpu/host/host_expf.h"

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

/* k and v rows [0, T) of key/value head kvh in batch b into kf, vf (T, HS) when not NULL, and
 * transposed into kt, vt (HS, T) when not NULL. */
static void load_kv(const flash_args *a, int b, int kvh, float *kf, float *vf, float *kt, float *vt,
                    float *tmp) {
    const zoff_dev_attn_shape *sh = &a->sh;
    int T = sh->T, HS = sh->HS;
    for (int t = 0; t < T; t++) {
        size_t off = ((size_t)b * T + t) * sh->kv_stride + (size_t)kvh * HS;
        for (int pass = 0; pass < 2; pass++) {
            float *rows = pass ? vf : kf, *cols = pass ? vt : kt;
            float *row = rows ? rows + (size_t)t * HS : tmp;
            load_row(row, pass ? a->v : a->k, a->type, off, HS);
            if (cols)
                for (int i = 0; i < HS; i++)
                    cols[(size_t)i * T + t] = row[i];
        }
    }
}

/* s[j] = x . m[:, j] for j in [lo, hi], m (HS, T): the dot products of x with rows lo..hi of
 * the transposed matrix, each summed over i in order. */
static inline void dots_t(float *s, const float *x, const float *m, int HS, int T, int lo, int hi) {
    for (int j = lo; j <= hi; j++)
        s[j] = 0.0f;
    for (int i = 0; i < HS; i++) {
        float xi = x[i];
        const float *mi = m + (size_t)i * T;
        for (int j = lo; j <= hi; j++)
            s[j] += xi * mi[j];
    }
}

static inline float dot(const float *x, const float *y, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++)
        s += x[i] * y[i];
    return s;
}

/* One (batch, query head) of the forward; kt: the thread's scratch. AVX2 clone: the same
 * operations in the same order at twice the width (ISO C contracts no FMAs), so the same bits
 * on every machine; 10-15% faster at the demo model's shape. */
ZOFF_AVX2_CLONE static void
fwd_task(const flash_args *a, int b, int h, float *kt) {
    const zoff_dev_attn_shape *sh = &a->sh;
    int T = sh->T, HS = sh->HS, NH = sh->NH, group = sh->NH / sh->NKV;
    float *vf = kt + (size_t)T * HS, *row = vf + (size_t)T * HS, *q = row + T, *o = q + HS;
    load_kv(a, b, h / group, NULL, vf, kt, NULL, o);
    for (int t = 0; t < T; t++) {
        size_t bt = (size_t)b * T + t;
        load_row(q, a->q, a->type, bt * sh->q_stride + (size_t)h * HS, HS);
        int lo = first_key(a, b, t);
        dots_t(row, q, kt, HS, T, lo, t);
        float maxv = -INFINITY;
        for (int j = lo; j <= t; j++) {
            row[j] *= sh->scale;
            maxv = row[j] > maxv ? row[j] : maxv;
        }
        for (int j = lo; j <= t; j++) /* the weights, then their sum in order */
            row[j] = host_expf(row[j] - maxv);
        float sum = 0.0f;
        for (int j = lo; j <= t; j++)
            sum += row[j];
        for (int i = 0; i < HS; i++)
            o[i] = 0.0f;
        for (int j = lo; j <= t; j++) {
            float w = row[j];
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

/* A kernel's (batch, head) tasks over the kernel threads, each thread with its scratch: heads
 * query heads (forward) or key/value heads (backward) per row, `work` scalar operations in all. */
typedef void (*flash_task_fn)(const flash_args *a, int b, int head, float *scratch);
static void run_tasks(flash_args *a, int heads, double work, flash_task_fn fn) {
    int tasks = a->sh.B * heads;
#pragma omp parallel for num_threads(host_threads_for(a->nt, work)) schedule(static)
    for (int task = 0; task < tasks; task++)
        fn(a, task / heads, task % heads, a->scratch + (size_t)host_thread_id() * a->per_thread);
    free(a->scratch);
}

static void run_flash_fwd(void *p) {
    flash_args *a = p;
    const zoff_dev_attn_shape *sh = &a->sh;
    run_tasks(a, sh->NH, (double)sh->B * sh->NH * sh->T * sh->T * sh->HS * 2.0, fwd_task);
}

/* One query row's contribution to key row j: dv_j += p dy, dk_j += ds q, dq += ds k_j. */
static inline void bwd_update1(float *restrict dkj, float *restrict dvj, float *restrict dq,
                               const float *restrict kj, const float *restrict q,
                               const float *restrict dy, float p, float ds, int HS) {
    for (int i = 0; i < HS; i++) {
        dvj[i] += p * dy[i];
        dq[i] += ds * kj[i];
        dkj[i] += ds * q[i];
    }
}

/* Two consecutive query rows' contributions to key row j in one pass over dk_j and dv_j, added
 * in row order: the same sums, bit for bit, as two calls of bwd_update1, with half the traffic
 * over the key rows (which is what bounds this loop). */
static inline void bwd_update2(float *restrict dkj, float *restrict dvj, float *restrict dq0,
                               float *restrict dq1, const float *restrict kj,
                               const float *restrict q0, const float *restrict q1,
                               const float *restrict dy0, const float *restrict dy1, float p0,
                               float ds0, float p1, float ds1, int HS) {
    for (int i = 0; i < HS; i++) {
        dvj[i] = (dvj[i] + p0 * dy0[i]) + p1 * dy1[i];
        dkj[i] = (dkj[i] + ds0 * q0[i]) + ds1 * q1[i];
        dq0[i] += ds0 * kj[i];
        dq1[i] += ds1 * kj[i];
    }
}

/* Query rows are taken two at a time (rows t and t + 1 of head h): each scores its keys
 * [lo, t] like the forward, then both update the key rows they share in one pass. */
/* One (batch, key/value head) of the backward; kf: the thread's scratch. AVX2 clone as
 * fwd_task. */
ZOFF_AVX2_CLONE static void
bwd_task(const flash_args *a, int b, int kvh, float *kf) {
    const zoff_dev_attn_shape *sh = &a->sh;
    int T = sh->T, HS = sh->HS, NH = sh->NH, NKV = sh->NKV, group = NH / NKV;
    float *kt = kf + (size_t)T * HS, *vt = kt + (size_t)T * HS, *dkf = vt + (size_t)T * HS;
    float *dvf = dkf + (size_t)T * HS, *rows = dvf + (size_t)T * HS;
    float *sc[2] = {rows, rows + T}, *dp[2] = {rows + 2 * T, rows + 3 * T};
    float *vec = rows + 4 * (size_t)T; /* q, dy, o, dq of the two rows: (2, 4, HS) */
    float *q[2], *dy[2], *o[2], *dq[2];
    for (int r = 0; r < 2; r++) {
        q[r] = vec + (size_t)(4 * r) * HS;
        dy[r] = q[r] + HS;
        o[r] = dy[r] + HS;
        dq[r] = o[r] + HS;
    }
    load_kv(a, b, kvh, kf, NULL, kt, vt, o[0]);
    for (size_t i = 0; i < 2 * (size_t)T * HS; i++)
        dkf[i] = 0.0f; /* dkf and dvf */
    for (int h = kvh * group; h < (kvh + 1) * group; h++)
        for (int t0 = 0; t0 < T; t0 += 2) {
            int nr = t0 + 1 < T ? 2 : 1, lo[2] = {0, 0};
            for (int r = 0; r < nr; r++) {
                int t = t0 + r;
                size_t bt = (size_t)b * T + t, qoff = bt * sh->q_stride + (size_t)h * HS;
                size_t ooff = (bt * NH + (size_t)h) * HS, hrow = ((size_t)b * NH + h) * T + t;
                load_row(q[r], a->q, a->type, qoff, HS);
                load_row(dy[r], a->dout, a->type, ooff, HS);
                load_row(o[r], a->out_in, a->type, ooff, HS);
                float D = dot(dy[r], o[r], HS), lse = a->lse_in[hrow];
                a->delta[hrow] = D;
                lo[r] = first_key(a, b, t);
                dots_t(sc[r], q[r], kt, HS, T, lo[r], t);  /* scores */
                dots_t(dp[r], dy[r], vt, HS, T, lo[r], t); /* dP = dout . v */
                for (int j = lo[r]; j <= t; j++) {
                    sc[r][j] = host_expf(sc[r][j] * sh->scale - lse); /* P */
                    dp[r][j] = sc[r][j] * (dp[r][j] - D) * sh->scale; /* dS, scaled */
                }
                for (int i = 0; i < HS; i++)
                    dq[r][i] = 0.0f;
            }
            int jlo = nr == 2 && lo[1] < lo[0] ? lo[1] : lo[0];
            for (int j = jlo; j < t0 + nr; j++) {
                bool in0 = j >= lo[0] && j <= t0, in1 = nr == 2 && j >= lo[1];
                const float *kj = kf + (size_t)j * HS;
                float *dkj = dkf + (size_t)j * HS, *dvj = dvf + (size_t)j * HS;
                if (in0 && in1)
                    bwd_update2(dkj, dvj, dq[0], dq[1], kj, q[0], q[1], dy[0], dy[1], sc[0][j],
                                dp[0][j], sc[1][j], dp[1][j], HS);
                else if (in0 || in1)
                    bwd_update1(dkj, dvj, dq[in1], kj, q[in1], dy[in1], sc[in1][j], dp[in1][j],
                                HS);
            }
            for (int r = 0; r < nr; r++) {
                size_t qoff = ((size_t)b * T + t0 + r) * sh->q_stride + (size_t)h * HS;
                store_row(a->dq, a->type, qoff, dq[r], HS);
            }
        }
    for (int t = 0; t < T; t++) {
        size_t off = ((size_t)b * T + t) * sh->kv_stride + (size_t)kvh * HS;
        store_row(a->dk, a->type, off, dkf + (size_t)t * HS, HS);
        store_row(a->dv, a->type, off, dvf + (size_t)t * HS, HS);
    }
}

static void run_flash_bwd(void *p) {
    flash_args *a = p;
    const zoff_dev_attn_shape *sh = &a->sh;
    run_tasks(a, sh->NKV, (double)sh->B * sh->NH * sh->T * sh->T * sh->HS * 4.0, bwd_task);
}

static int launch(void *stream, flash_args *a, host_cmd_fn fn, size_t per_thread, const char *op) {
    a->nt = host_stream_threads(stream);
    a->per_thread = per_thread;
    a->scratch = host_kernel_scratch(op, (size_t)a->nt * per_thread * sizeof(float));
    if (!a->scratch) return -ENOMEM;
    int rc = host_op_enqueue(stream, HOST_OP_ATTENTION, fn, a, sizeof *a);
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
    return launch(stream, &a, run_flash_bwd, 5 * T * HS + 4 * T + 8 * HS, "flash_attention_bwd");
}
