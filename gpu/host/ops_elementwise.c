/* Host elementwise kernels of the model: residual add, bias add and bias gradient, GELU
 * forward/backward (tanh approximation, as GPT-2). Loops are written so the compiler can
 * vectorize them; rows (or columns, for the bias gradient) are split across threads. */
#include "gpu/host/host_parallel.h"

#include <math.h>

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

/* tanh through one expf: glibc's tanhf (via expm1f) cost several times more and showed in
 * profiles. Absolute error ~1e-7; saturates correctly (expf overflow gives 1, underflow -1). */
static inline float fast_tanhf(float u) {
    return 1.0f - 2.0f / (expf(2.0f * u) + 1.0f);
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
    return host_stream_enqueue(stream, run_add, &e, sizeof e);
}

static void run_bias_add(void *p) {
    ew_args *e = p;
    size_t N = e->n;
    int OC = e->oc;
#pragma omp parallel for num_threads(host_threads_for(e->nt, (double)N *OC)) schedule(static)
    for (size_t r = 0; r < N; r++) {
        float *o = e->out + r * (size_t)OC;
        const float *bias = e->a;
        for (int j = 0; j < OC; j++)
            o[j] += bias[j];
    }
}

int host_op_bias_add(void *stream, float *out, const float *bias, size_t N, int OC) {
    ew_args e = {out, bias, NULL, N, OC, host_stream_threads(stream)};
    return host_stream_enqueue(stream, run_bias_add, &e, sizeof e);
}

/* Column blocks of 64 per task: each thread owns its dbias entries (no races, fixed order). */
static void run_bias_grad(void *p) {
    ew_args *e = p;
    size_t N = e->n;
    int OC = e->oc, nblk = (OC + 63) / 64;
#pragma omp parallel for num_threads(host_threads_for(e->nt, (double)N *OC)) schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * 64, j1 = j0 + 64 < OC ? j0 + 64 : OC;
        float acc[64] = {0};
        for (size_t r = 0; r < N; r++) {
            const float *d = e->a + r * (size_t)OC;
            for (int j = j0; j < j1; j++)
                acc[j - j0] += d[j];
        }
        for (int j = j0; j < j1; j++)
            e->out[j] += acc[j - j0];
    }
}

int host_op_bias_grad(void *stream, float *dbias, const float *dout, size_t N, int OC) {
    ew_args e = {dbias, dout, NULL, N, OC, host_stream_threads(stream)};
    return host_stream_enqueue(stream, run_bias_grad, &e, sizeof e);
}

static void run_gelu_fwd(void *p) {
    ew_args *e = p;
    float *out = e->out;
    const float *x = e->a;
    size_t n = e->n;
#pragma omp parallel for num_threads(host_threads_for(e->nt, 20.0 * n)) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float cube = 0.044715f * v * v * v;
        out[i] = 0.5f * v * (1.0f + fast_tanhf(GELU_SCALE * (v + cube)));
    }
}

int host_op_gelu_fwd(void *stream, float *out, const float *inp, size_t n) {
    ew_args e = {out, inp, NULL, n, 0, host_stream_threads(stream)};
    return host_stream_enqueue(stream, run_gelu_fwd, &e, sizeof e);
}

static void run_gelu_bwd(void *p) {
    ew_args *e = p;
    float *dinp = e->out;
    const float *x = e->a, *dout = e->b;
    size_t n = e->n;
#pragma omp parallel for num_threads(host_threads_for(e->nt, 30.0 * n)) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float cube = 0.044715f * v * v * v;
        float th = fast_tanhf(GELU_SCALE * (v + cube));
        float sech2 = 1.0f - th * th;
        float local =
            0.5f * (1.0f + th) + v * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * v * v);
        dinp[i] += local * dout[i];
    }
}

int host_op_gelu_bwd(void *stream, float *dinp, const float *inp, const float *dout, size_t n) {
    ew_args e = {dinp, inp, dout, n, 0, host_stream_threads(stream)};
    return host_stream_enqueue(stream, run_gelu_bwd, &e, sizeof e);
}
