/* Host fused causal attention (see zoff_dev_op_flash_attention_fwd in gpu/device.h): nothing
 * of size T*T exists; a task scores a block of at most BR query rows at a time against the
 * keys they may see, in a (BR, T) tile of its thread's scratch, and the backward recomputes
 * the probabilities from the saved log-sum-exp, as FlashAttention does.
 *
 * Work split: the forward runs one task per (batch, query head); the backward one task per
 * (batch, key/value head), which owns the dk and dv rows of that head and the dq rows of its
 * query heads, so no two threads write the same element and every sum has a fixed order.
 * Each task first copies its head's k and v (strided, maybe 16-bit) into its scratch as fp32
 * rows (T, HS). The products of a block (scores, P.V, and in the backward dP, dV, dK, dQ) are
 * single-threaded sgemm calls on those tiles (OpenBLAS: its kernels reach the core's FMA peak
 * where row-at-a-time loops over 32-64 wide heads were bound by loads: 2.5 ms against 1.0 for
 * PyTorch's materialized bmm at the demo model's shape); the causal triangle of a block is
 * masked by zero probabilities, so at most BR extra columns per row are multiplied. The
 * exponentials are host_expf's (a vectorizing polynomial, about 1 ulp). Everything is computed
 * in fp32 and 16-bit outputs are rounded once. */
#include "gpu/host/host_parallel.h"
#include "core/half.h"
#include "gpu/host/host_expf.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>

/* Query rows per block: a (BR, T) score tile per thread. */
#define BR 64

typedef struct flash_args {
    zoff_dev_attn_shape sh;
    zoff_dtype type;
    const void *q, *k, *v, *dout;
    void *out, *dq, *dk, *dv;
    float *lse, *delta;
    const float *lse_in;
    const int32_t *doc_start;
    float *scratch; /* (nt, per_thread) */
    size_t per_thread;
    int nt;
} flash_args;

/* The first key query t of row b may see: its sample's first position, clamped to [0, t]. */
static inline int first_key(const flash_args *a, int b, int t) {
    if (!a->doc_start) return 0;
    int lo = a->doc_start[(size_t)b * a->sh.T + t];
    return lo < 0 ? 0 : lo > t ? t : lo;
}

/* A (rows, HS) fp32 matrix as sgemm takes it: p with row stride ld. */
typedef struct tile {
    float *p;
    int ld;
} tile;

/* n rows of HS values of a typed buffer, row r at element off + r * stride: the buffer itself
 * when it is fp32 (read in place, no copy), else an fp32 copy in scratch (n, HS). */
static tile rows_in(const flash_args *a, const void *buf, size_t off, size_t stride, int n,
                    float *scratch) {
    int HS = a->sh.HS;
    if (a->type == ZOFF_F32) return (tile){(float *)buf + off, (int)stride};
    for (int r = 0; r < n; r++)
        for (int i = 0; i < HS; i++)
            scratch[(size_t)r * HS + i] =
                zoff_load_as_f32(buf, a->type, off + (size_t)r * stride + (size_t)i);
    return (tile){scratch, HS};
}

/* Where n output rows are computed: in place when the output is fp32, else in scratch, to be
 * stored (rounded once) by rows_out_store. */
static tile rows_out(const flash_args *a, void *buf, size_t off, size_t stride, float *scratch) {
    if (a->type == ZOFF_F32) return (tile){(float *)buf + off, (int)stride};
    return (tile){scratch, a->sh.HS};
}

static void rows_out_store(const flash_args *a, void *buf, size_t off, size_t stride, int n,
                           tile t) {
    if (a->type == ZOFF_F32) return;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < a->sh.HS; i++)
            zoff_store_from_f32(buf, a->type, off + (size_t)r * stride + (size_t)i,
                                t.p[(size_t)r * t.ld + i]);
}

/* c (m, n; ldc) = [c +] op(x) op(y), single-threaded sgemm on fp32 tiles (row-major). */
static inline void mm(bool tx, bool ty, int m, int n, int k, const float *x, int ldx,
                      const float *y, int ldy, bool accumulate, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, tx ? CblasTrans : CblasNoTrans, ty ? CblasTrans : CblasNoTrans, m, n,
                k, 1.0f, x, ldx, y, ldy, accumulate ? 1.0f : 0.0f, c, ldc);
}

/* Row r of a block starting at query t0, scores s[0, n) (n = t0 + rows): the probabilities of
 * keys [lo, t] in place, zero elsewhere, from the row's own maximum (forward: *max, *sum
 * returned) or from a saved log-sum-exp (backward: lse given, max and sum NULL). */
static inline void probs_row(float *s, int n, int lo, int t, float scale, float lse, float *max,
                             float *sum) {
    for (int j = 0; j < lo; j++)
        s[j] = 0.0f;
    for (int j = t + 1; j < n; j++)
        s[j] = 0.0f;
    if (max) {
        float m = -INFINITY;
        for (int j = lo; j <= t; j++) {
            s[j] *= scale;
            m = s[j] > m ? s[j] : m;
        }
        for (int j = lo; j <= t; j++)
            s[j] = host_expf(s[j] - m);
        float z = 0.0f;
        for (int j = lo; j <= t; j++)
            z += s[j];
        *max = m, *sum = z;
    } else {
        for (int j = lo; j <= t; j++)
            s[j] = host_expf(s[j] * scale - lse);
    }
}

/* One (batch, query head) of the forward; scratch: the thread's. */
static void fwd_task(const flash_args *a, int b, int h, float *scratch) {
    const zoff_dev_attn_shape *sh = &a->sh;
    int T = sh->T, HS = sh->HS, NH = sh->NH, kvh = h / (sh->NH / sh->NKV);
    float *ks = scratch, *vs = ks + (size_t)T * HS, *qs = vs + (size_t)T * HS;
    float *os = qs + (size_t)BR * HS, *sc = os + (size_t)BR * HS; /* scores (BR, T) */
    size_t kv0 = (size_t)b * T * sh->kv_stride + (size_t)kvh * HS;
    tile k = rows_in(a, a->k, kv0, sh->kv_stride, T, ks);
    tile v = rows_in(a, a->v, kv0, sh->kv_stride, T, vs);
    for (int t0 = 0; t0 < T; t0 += BR) {
        int nr = T - t0 < BR ? T - t0 : BR, n = t0 + nr;
        size_t q0 = ((size_t)b * T + t0) * sh->q_stride + (size_t)h * HS;
        size_t o0 = (((size_t)b * T + t0) * NH + (size_t)h) * HS, ostride = (size_t)NH * HS;
        tile q = rows_in(a, a->q, q0, sh->q_stride, nr, qs);
        tile o = rows_out(a, a->out, o0, ostride, os);
        mm(false, true, nr, n, HS, q.p, q.ld, k.p, k.ld, false, sc, T); /* scores */
        float maxv[BR], sum[BR];
        for (int r = 0; r < nr; r++)
            probs_row(sc + (size_t)r * T, n, first_key(a, b, t0 + r), t0 + r, sh->scale, 0.0f,
                      &maxv[r], &sum[r]);
        mm(false, false, nr, HS, n, sc, T, v.p, v.ld, false, o.p, o.ld); /* P.V */
        for (int r = 0; r < nr; r++) {
            float inv = 1.0f / sum[r], *orow = o.p + (size_t)r * o.ld;
            for (int i = 0; i < HS; i++)
                orow[i] *= inv;
            a->lse[((size_t)b * NH + h) * T + t0 + r] = maxv[r] + logf(sum[r]);
        }
        rows_out_store(a, a->out, o0, ostride, nr, o);
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

/* One (batch, key/value head) of the backward; scratch: the thread's. Per block of query
 * rows of each of its query heads: P again from the scores and the saved log-sum-exp,
 * dP = dy v^T, dS = P (dP - D) scale, then dv += P^T dy, dk += dS^T q, dq = dS k.
 * D = sum_j P_j dP_j, which is rowsum(dy * out) in exact arithmetic (out = sum_j P_j v_j), taken
 * from the same dP tile so that a row's dS sums to zero up to one rounding: from out instead,
 * summed in another order than the sgemm's dP, a query that sees one key (dS exactly 0) got
 * a gradient of rounding noise; and out may be 16-bit, rounded, where P and dP are not.
 * dk and dv are summed in place when fp32 (this task owns their rows), else in scratch. */
static void bwd_task(const flash_args *a, int b, int kvh, float *scratch) {
    const zoff_dev_attn_shape *sh = &a->sh;
    int T = sh->T, HS = sh->HS, NH = sh->NH, NKV = sh->NKV, group = NH / NKV;
    float *ks = scratch, *vs = ks + (size_t)T * HS, *dks = vs + (size_t)T * HS;
    float *dvs = dks + (size_t)T * HS, *qs = dvs + (size_t)T * HS, *dys = qs + (size_t)BR * HS;
    float *dqs = dys + (size_t)BR * HS, *sc = dqs + (size_t)BR * HS, *dp = sc + (size_t)BR * T;
    size_t kv0 = (size_t)b * T * sh->kv_stride + (size_t)kvh * HS;
    tile k = rows_in(a, a->k, kv0, sh->kv_stride, T, ks);
    tile v = rows_in(a, a->v, kv0, sh->kv_stride, T, vs);
    tile dk = rows_out(a, a->dk, kv0, sh->kv_stride, dks);
    tile dv = rows_out(a, a->dv, kv0, sh->kv_stride, dvs);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < HS; i++)
            dk.p[(size_t)t * dk.ld + i] = dv.p[(size_t)t * dv.ld + i] = 0.0f;
    for (int h = kvh * group; h < (kvh + 1) * group; h++)
        for (int t0 = 0; t0 < T; t0 += BR) {
            int nr = T - t0 < BR ? T - t0 : BR, n = t0 + nr;
            size_t q0 = ((size_t)b * T + t0) * sh->q_stride + (size_t)h * HS;
            size_t y0 = (((size_t)b * T + t0) * NH + (size_t)h) * HS, ystride = (size_t)NH * HS;
            tile q = rows_in(a, a->q, q0, sh->q_stride, nr, qs);
            tile dy = rows_in(a, a->dout, y0, ystride, nr, dys);
            tile dq = rows_out(a, a->dq, q0, sh->q_stride, dqs);
            mm(false, true, nr, n, HS, q.p, q.ld, k.p, k.ld, false, sc, T);   /* scores */
            mm(false, true, nr, n, HS, dy.p, dy.ld, v.p, v.ld, false, dp, T); /* dP = dy v^T */
            for (int r = 0; r < nr; r++) {
                int t = t0 + r, lo = first_key(a, b, t);
                size_t hrow = ((size_t)b * NH + h) * T + t;
                float *pr = sc + (size_t)r * T, *dr = dp + (size_t)r * T, D = 0.0f;
                probs_row(pr, n, lo, t, sh->scale, a->lse_in[hrow], NULL, NULL);
                for (int j = lo; j <= t; j++)
                    D += pr[j] * dr[j];
                a->delta[hrow] = D;
                for (int j = 0; j < n; j++) /* dS, scaled; zero where P is */
                    dr[j] = j < lo || j > t ? 0.0f : pr[j] * (dr[j] - D) * sh->scale;
            }
            mm(true, false, n, HS, nr, sc, T, dy.p, dy.ld, true, dv.p, dv.ld); /* dv += P^T dy */
            mm(true, false, n, HS, nr, dp, T, q.p, q.ld, true, dk.p, dk.ld);   /* dk += dS^T q */
            mm(false, false, nr, HS, n, dp, T, k.p, k.ld, false, dq.p, dq.ld); /* dq = dS k */
            rows_out_store(a, a->dq, q0, sh->q_stride, nr, dq);
        }
    rows_out_store(a, a->dk, kv0, sh->kv_stride, T, dk);
    rows_out_store(a, a->dv, kv0, sh->kv_stride, T, dv);
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
    /* kf, vf (T, HS); q and out blocks (BR, HS); scores (BR, T) */
    return launch(stream, &a, run_flash_fwd, 2 * T * HS + 2 * BR * HS + BR * T,
                  "flash_attention_fwd");
}

int host_op_flash_attention_bwd(void *stream, void *dq, void *dk, void *dv, float *delta,
                                const void *dout, const void *out, const float *lse, const void *q,
                                const void *k, const void *v, zoff_dtype type,
                                const int32_t *doc_start, const zoff_dev_attn_shape *shape) {
    (void)out; /* D comes from P and dP here (bwd_task), not from the forward's output */
    flash_args a = {.sh = *shape,
                    .type = type,
                    .q = q,
                    .k = k,
                    .v = v,
                    .dout = dout,
                    .dq = dq,
                    .dk = dk,
                    .dv = dv,
                    .delta = delta,
                    .lse_in = lse,
                    .doc_start = doc_start};
    size_t T = (size_t)shape->T, HS = (size_t)shape->HS;
    /* kf, vf, dk, dv (T, HS); q, dy, dq blocks (BR, HS); P and dP (BR, T) */
    return launch(stream, &a, run_flash_bwd, 4 * T * HS + 3 * BR * HS + 2 * BR * T,
                  "flash_attention_bwd");
}
