/* Host LayerNorm forward/backward over the last dimension (eps 1e-5), statistics in fp32.
 * Forward and the input gradient split rows across threads; the weight and bias gradients
 * split columns, so each output element has one owner and a fixed summation order. 16-bit
 * weights are widened once per call into the kernel's scratch; 16-bit outputs and gradients
 * are rounded once when stored. A row's sums are taken in 8 interleaved partial sums combined in
 * a fixed order: the same bits at any vector width, and no serial chain of dependent adds (one
 * add per element in a chain was most of the kernel's time at the demo model's C = 128). */
#include "gpu/host/host_parallel.h"
#include "core/half.h"
#include "core/target_clones.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

typedef struct ln_args {
    void *out;                  /* fwd: out (out_type); unused in bwd */
    float *dinp, *mean, *rstd;  /* bwd: dinp; fwd: mean, rstd */
    void *dweight, *dbias;      /* bwd, g_type */
    const float *inp, *dout;    /* dout: bwd */
    const void *weight, *bias;  /* w_type; bias unused in bwd */
    const float *cmean, *crstd; /* bwd inputs */
    zoff_dtype out_type, w_type, g_type;
    float *scratch; /* (2C) widened weight and bias */
    size_t N;
    int C, nt;
} ln_args;

/* The weight (and bias) as fp32: the buffers themselves when they are fp32. */
static void widen_params(ln_args *a, const float **w, const float **b) {
    if (a->w_type == ZOFF_F32) {
        *w = a->weight;
        *b = a->bias;
        return;
    }
    for (int i = 0; i < a->C; i++) {
        a->scratch[i] = zoff_load_as_f32(a->weight, a->w_type, (size_t)i);
        if (a->bias) a->scratch[a->C + i] = zoff_load_as_f32(a->bias, a->w_type, (size_t)i);
    }
    *w = a->scratch;
    *b = a->scratch + a->C;
}

/* The 8 partial sums of a row, combined in a fixed order. */
#define LANES 8
static inline float combine(const float *s) {
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* Row r of the forward: mean, rstd and the normalized, scaled, shifted row. */
ZOFF_AVX2_CLONE static void ln_fwd_row(ln_args *a, size_t r, const float *w, const float *bias) {
    int C = a->C;
    const float *x = a->inp + r * (size_t)C;
    float s[LANES] = {0}, q[LANES] = {0};
    int i = 0;
    for (; i + LANES <= C; i += LANES)
        for (int k = 0; k < LANES; k++)
            s[k] += x[i + k];
    for (; i < C; i++)
        s[i % LANES] += x[i];
    float m = combine(s) / (float)C;
    for (i = 0; i + LANES <= C; i += LANES)
        for (int k = 0; k < LANES; k++) {
            float d = x[i + k] - m;
            q[k] += d * d;
        }
    for (; i < C; i++) {
        float d = x[i] - m;
        q[i % LANES] += d * d;
    }
    float var = combine(q) / (float)C;
    float rs = 1.0f / sqrtf(var + 1e-5f);
    if (a->out_type == ZOFF_F32) {
        float *o = (float *)a->out + r * (size_t)C;
        for (i = 0; i < C; i++)
            o[i] = (x[i] - m) * rs * w[i] + bias[i];
    } else {
        for (i = 0; i < C; i++)
            zoff_store_from_f32(a->out, a->out_type, r * (size_t)C + (size_t)i,
                                (x[i] - m) * rs * w[i] + bias[i]);
    }
    a->mean[r] = m;
    a->rstd[r] = rs;
}

static void run_ln_fwd(void *p) {
    ln_args *a = p;
    const float *w, *bias;
    widen_params(a, &w, &bias);
#pragma omp parallel for num_threads(host_threads_for(a->nt, 8.0 * a->N * a->C)) schedule(static)
    for (size_t r = 0; r < a->N; r++)
        ln_fwd_row(a, r, w, bias);
    free(a->scratch);
}

int host_op_layernorm_fwd(void *stream, void *out, zoff_dtype out_type, float *mean, float *rstd,
                          const float *inp, const void *weight, const void *bias, zoff_dtype w_type,
                          size_t N, int C) {
    ln_args a = {.out = out,
                 .mean = mean,
                 .rstd = rstd,
                 .inp = inp,
                 .weight = weight,
                 .bias = bias,
                 .out_type = out_type,
                 .w_type = w_type,
                 .N = N,
                 .C = C,
                 .nt = host_stream_threads(stream)};
    if (w_type != ZOFF_F32 &&
        !(a.scratch = host_kernel_scratch("layernorm_fwd", 2 * (size_t)C * sizeof(float))))
        return -ENOMEM;
    int rc = host_op_enqueue(stream, HOST_OP_LAYERNORM, run_ln_fwd, &a, sizeof a);
    if (rc) free(a.scratch);
    return rc;
}

/* Row r of the input gradient (accumulated into dinp). */
ZOFF_AVX2_CLONE static void ln_bwd_row(ln_args *a, size_t r, const float *w) {
    int C = a->C;
    const float *x = a->inp + r * (size_t)C, *dy = a->dout + r * (size_t)C;
    float *dx = a->dinp + r * (size_t)C;
    float m = a->cmean[r], rs = a->crstd[r];
    float s1[LANES] = {0}, s2[LANES] = {0};
    int i = 0;
    for (; i + LANES <= C; i += LANES)
        for (int k = 0; k < LANES; k++) {
            float norm = (x[i + k] - m) * rs, dnorm = w[i + k] * dy[i + k];
            s1[k] += dnorm;
            s2[k] += dnorm * norm;
        }
    for (; i < C; i++) {
        float norm = (x[i] - m) * rs, dnorm = w[i] * dy[i];
        s1[i % LANES] += dnorm;
        s2[i % LANES] += dnorm * norm;
    }
    float dnorm_mean = combine(s1) / (float)C, dnorm_norm_mean = combine(s2) / (float)C;
    for (i = 0; i < C; i++) {
        float norm = (x[i] - m) * rs, dnorm = w[i] * dy[i];
        dx[i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rs;
    }
}

static void run_ln_bwd(void *p) {
    ln_args *a = p;
    int C = a->C;
    int nt = host_threads_for(a->nt, 10.0 * a->N * C);
    const float *w, *unused;
    widen_params(a, &w, &unused);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t r = 0; r < a->N; r++)
        ln_bwd_row(a, r, w);
    int nblk = (C + 63) / 64;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * 64, j1 = j0 + 64 < C ? j0 + 64 : C;
        float dw[64] = {0}, db[64] = {0};
        for (size_t r = 0; r < a->N; r++) {
            const float *x = a->inp + r * (size_t)C, *dy = a->dout + r * (size_t)C;
            float m = a->cmean[r], rs = a->crstd[r];
            for (int j = j0; j < j1; j++) {
                dw[j - j0] += (x[j] - m) * rs * dy[j];
                db[j - j0] += dy[j];
            }
        }
        for (int j = j0; j < j1; j++) {
            zoff_store_from_f32(a->dweight, a->g_type, (size_t)j,
                                zoff_load_as_f32(a->dweight, a->g_type, (size_t)j) + dw[j - j0]);
            zoff_store_from_f32(a->dbias, a->g_type, (size_t)j,
                                zoff_load_as_f32(a->dbias, a->g_type, (size_t)j) + db[j - j0]);
        }
    }
    free(a->scratch);
}

int host_op_layernorm_bwd(void *stream, float *dinp, void *dweight, void *dbias, zoff_dtype g_type,
                          const float *dout, const float *inp, const void *weight,
                          zoff_dtype w_type, const float *mean, const float *rstd, size_t N,
                          int C) {
    ln_args a = {.dinp = dinp,
                 .dweight = dweight,
                 .dbias = dbias,
                 .inp = inp,
                 .weight = weight,
                 .dout = dout,
                 .cmean = mean,
                 .crstd = rstd,
                 .w_type = w_type,
                 .g_type = g_type,
                 .N = N,
                 .C = C,
                 .nt = host_stream_threads(stream)};
    if (w_type != ZOFF_F32 &&
        !(a.scratch = host_kernel_scratch("layernorm_bwd", 2 * (size_t)C * sizeof(float))))
        return -ENOMEM;
    int rc = host_op_enqueue(stream, HOST_OP_LAYERNORM, run_ln_bwd, &a, sizeof a);
    if (rc) free(a.scratch);
    return rc;
}
