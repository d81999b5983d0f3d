/* Host elementwise kernels of the model: residual add, bias init and bias gradient, GELU
 * forward/backward (tanh approximation, as GPT-2), with 16-bit operands widened and rounded
 * once per element. Loops are written so the compiler can
 * vectorize them; rows (or columns, for the bias gradient) are split across threads. */
#include "gpu/host/host_parallel.h"
#include "gpu/host/host_expf.h"
#include "core/half.h"
#include "core/target_clones.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

/* tanh through one exponential: glibc's tanhf (via expm1f) cost several times more and showed
 * in profiles. Absolute error under 2e-7; saturates to +-1. */
static inline float fast_tanhf(float u) {
    return 1.0f - 2.0f / (host_expf(2.0f * u) + 1.0f);
}

typedef struct ew_args {
    float *out;
    const float *a, *b;
    size_t n;
    int oc, nt;
} ew_args;

static void run_add(void *p) {
    ew_args *e = p;
    float *out = e->out;
    const float *a = e->a, *b = e->b;
    size_t n = e->n;
#pragma omp parallel for num_threads(host_threads_for(e->nt, (double)n)) schedule(static)
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

int host_op_add(void *stream, float *out, const float *a, const float *b, size_t n) {
    ew_args e = {out, a, b, n, 0, host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_ADD, run_add, &e, sizeof e);
}

/* Typed operands: x of type tx, y of type ty, out of type to. */
typedef struct typed_args {
    void *out;
    const void *x, *y;
    zoff_dtype to, tx, ty;
    size_t n;
    int oc, nt;
} typed_args;

/* out = bias (x, may be NULL) broadcast + res (y, fp32, may be NULL); the fp32 case, the
 * model's usual one, in a loop the compiler vectorizes. */
static void run_bias_init(void *p) {
    typed_args *e = p;
    size_t N = e->n;
    int OC = e->oc;
#pragma omp parallel for num_threads(host_threads_for(e->nt, (double)N *OC)) schedule(static)
    for (size_t r = 0; r < N; r++) {
        const float *res = e->y ? (const float *)e->y + r * (size_t)OC : NULL;
        if (e->to == ZOFF_F32 && (!e->x || e->tx == ZOFF_F32)) {
            float *o = (float *)e->out + r * (size_t)OC;
            const float *bias = e->x;
            if (bias && res)
                for (int j = 0; j < OC; j++)
                    o[j] = res[j] + bias[j];
            else if (bias)
                memcpy(o, bias, (size_t)OC * sizeof *o);
            else if (o != res)
                memcpy(o, res, (size_t)OC * sizeof *o);
            continue;
        }
        for (int j = 0; j < OC; j++) {
            float v =
                (res ? res[j] : 0.0f) + (e->x ? zoff_load_as_f32(e->x, e->tx, (size_t)j) : 0.0f);
            zoff_store_from_f32(e->out, e->to, r * (size_t)OC + (size_t)j, v);
        }
    }
}

int host_op_bias_init(void *stream, void *out, zoff_dtype out_type, const void *bias,
                      zoff_dtype bias_type, const float *res, size_t N, int OC) {
    typed_args e = {out, bias, res, out_type, bias_type, ZOFF_F32, N, OC,
                    host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_BIAS, run_bias_init, &e, sizeof e);
}

/* Column blocks of 64 per task: each thread owns its dbias entries (no races, fixed order). */
static void run_bias_grad(void *p) {
    typed_args *e = p;
    size_t N = e->n;
    int OC = e->oc, nblk = (OC + 63) / 64;
#pragma omp parallel for num_threads(host_threads_for(e->nt, (double)N *OC)) schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * 64, j1 = j0 + 64 < OC ? j0 + 64 : OC;
        float acc[64] = {0};
        for (size_t r = 0; r < N; r++) {
            if (e->tx == ZOFF_F32) {
                const float *d = (const float *)e->x + r * (size_t)OC;
                for (int j = j0; j < j1; j++)
                    acc[j - j0] += d[j];
            } else {
                for (int j = j0; j < j1; j++)
                    acc[j - j0] += zoff_load_as_f32(e->x, e->tx, r * (size_t)OC + (size_t)j);
            }
        }
        for (int j = j0; j < j1; j++)
            zoff_store_from_f32(e->out, e->to, (size_t)j,
                                zoff_load_as_f32(e->out, e->to, (size_t)j) + acc[j - j0]);
    }
}

int host_op_bias_grad(void *stream, void *dbias, zoff_dtype g_type, const void *dout,
                      zoff_dtype dout_type, size_t N, int OC) {
    typed_args e = {dbias, dout, NULL, g_type, dout_type, ZOFF_F32, N, OC,
                    host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_BIAS, run_bias_grad, &e, sizeof e);
}

static inline float gelu(float v) {
    float cube = 0.044715f * v * v * v;
    return 0.5f * v * (1.0f + fast_tanhf(GELU_SCALE * (v + cube)));
}

static inline float gelu_grad(float v) {
    float cube = 0.044715f * v * v * v;
    float th = fast_tanhf(GELU_SCALE * (v + cube));
    float sech2 = 1.0f - th * th;
    return 0.5f * (1.0f + th) + v * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * v * v);
}

/* fp32 GELU over [lo, hi): AVX2 clones of the vectorized loops (the same operations per
 * element, so the same bits on every machine), a third faster than the SSE2 baseline. */
ZOFF_AVX2_CLONE static void
gelu_fwd_f32(float *out, const float *x, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++)
        out[i] = gelu(x[i]);
}

ZOFF_AVX2_CLONE static void
gelu_bwd_f32(float *dinp, const float *x, const float *dout, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++)
        dinp[i] = gelu_grad(x[i]) * dout[i];
}

static void run_gelu_fwd(void *p) {
    typed_args *e = p;
    size_t n = e->n;
    zoff_dtype t = e->to;
    if (t == ZOFF_F32) {
        int k = host_threads_for(e->nt, 20.0 * n);
#pragma omp parallel for num_threads(k) schedule(static)
        for (int c = 0; c < k; c++)
            gelu_fwd_f32(e->out, e->x, n * (size_t)c / (size_t)k, n * (size_t)(c + 1) / (size_t)k);
        return;
    }
#pragma omp parallel for num_threads(host_threads_for(e->nt, 20.0 * n)) schedule(static)
    for (size_t i = 0; i < n; i++)
        zoff_store_from_f32(e->out, t, i, gelu(zoff_load_as_f32(e->x, t, i)));
}

int host_op_gelu_fwd(void *stream, void *out, const void *inp, zoff_dtype type, size_t n) {
    typed_args e = {out, inp, NULL, type, type, type, n, 0, host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_GELU, run_gelu_fwd, &e, sizeof e);
}

static void run_gelu_bwd(void *p) {
    typed_args *e = p;
    size_t n = e->n;
    zoff_dtype t = e->to;
    if (t == ZOFF_F32) {
        int k = host_threads_for(e->nt, 30.0 * n);
#pragma omp parallel for num_threads(k) schedule(static)
        for (int c = 0; c < k; c++)
            gelu_bwd_f32(e->out, e->x, e->y, n * (size_t)c / (size_t)k,
                         n * (size_t)(c + 1) / (size_t)k);
        return;
    }
#pragma omp parallel for num_threads(host_threads_for(e->nt, 30.0 * n)) schedule(static)
    for (size_t i = 0; i < n; i++)
        zoff_store_from_f32(e->out, t, i,
                            gelu_grad(zoff_load_as_f32(e->x, t, i)) * zoff_load_as_f32(e->y, t, i));
}

int host_op_gelu_bwd(void *stream, void *dinp, const void *inp, const void *dout, zoff_dtype type,
                     size_t n) {
    typed_args e = {dinp, inp, dout, type, type, type, n, 0, host_stream_threads(stream)};
    return host_op_enqueue(stream, HOST_OP_GELU, run_gelu_bwd, &e, sizeof e);
}
