/* Host LayerNorm forward/backward over the last dimension (eps 1e-5), statistics in fp32.
 * Forward and the input gradient split rows across threads; the weight and bias gradients
 * split columns, so each output element has one owner and a fixed summation order. */
#include "gpu/host/host_parallel.h"

#include <math.h>

typedef struct ln_args {
    float *out, *mean, *rstd;          /* fwd outputs; bwd: out = dinp */
    float *dweight, *dbias;            /* bwd */
    const float *inp, *weight, *bias;  /* bias unused in bwd */
    const float *dout, *cmean, *crstd; /* bwd inputs */
    size_t N;
    int C, nt;
} ln_args;

static void run_ln_fwd(void *p) {
    ln_args *a = p;
    int C = a->C;
#pragma omp parallel for num_threads(host_threads_for(a->nt, 8.0 * a->N * C)) schedule(static)
    for (size_t r = 0; r < a->N; r++) {
        const float *x = a->inp + r * (size_t)C;
        float *o = a->out + r * (size_t)C;
        float m = 0.0f;
        for (int i = 0; i < C; i++)
            m += x[i];
        m /= (float)C;
        float var = 0.0f;
        for (int i = 0; i < C; i++) {
            float d = x[i] - m;
            var += d * d;
        }
        var /= (float)C;
        float rs = 1.0f / sqrtf(var + 1e-5f);
        for (int i = 0; i < C; i++)
            o[i] = (x[i] - m) * rs * a->weight[i] + a->bias[i];
        a->mean[r] = m;
        a->rstd[r] = rs;
    }
}

int host_op_layernorm_fwd(void *stream, float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, size_t N, int C) {
    ln_args a = {.out = out,
                 .mean = mean,
                 .rstd = rstd,
                 .inp = inp,
                 .weight = weight,
                 .bias = bias,
                 .N = N,
                 .C = C,
                 .nt = host_stream_threads(stream)};
    return host_stream_enqueue(stream, run_ln_fwd, &a, sizeof a);
}

static void run_ln_bwd(void *p) {
    ln_args *a = p;
    int C = a->C;
    int nt = host_threads_for(a->nt, 10.0 * a->N * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t r = 0; r < a->N; r++) {
        const float *x = a->inp + r * (size_t)C, *dy = a->dout + r * (size_t)C;
        float *dx = a->out + r * (size_t)C;
        float m = a->cmean[r], rs = a->crstd[r];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * rs, dnorm = a->weight[i] * dy[i];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= (float)C;
        dnorm_norm_mean /= (float)C;
        for (int i = 0; i < C; i++) {
            float norm = (x[i] - m) * rs, dnorm = a->weight[i] * dy[i];
            dx[i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rs;
        }
    }
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
            a->dweight[j] += dw[j - j0];
            a->dbias[j] += db[j - j0];
        }
    }
}

int host_op_layernorm_bwd(void *stream, float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp, const float *weight,
                          const float *mean, const float *rstd, size_t N, int C) {
    ln_args a = {.out = dinp,
                 .dweight = dweight,
                 .dbias = dbias,
                 .inp = inp,
                 .weight = weight,
                 .dout = dout,
                 .cmean = mean,
                 .crstd = rstd,
                 .N = N,
                 .C = C,
                 .nt = host_stream_threads(stream)};
    return host_stream_enqueue(stream, run_ln_bwd, &a, sizeof a);
}
