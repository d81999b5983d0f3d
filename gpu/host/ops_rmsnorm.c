/* Host RMSNorm forward/backward over the last dimension (Llama), statistics in fp32. Forward
 * and the input gradient split rows across threads; the weight gradient splits columns, so
 * each output element has one owner and a fixed summation order (deterministic, as the oracle
 * must be). 16-bit weights are widened once per call into the kernel's scratch. */
#include "gpu/host/host_parallel.h"
#include "core/half.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

typedef struct rms_args {
    void *out;          /* fwd, out_type */
    float *dinp, *rstd; /* bwd: dinp; fwd: rstd (written) */
    void *dweight;      /* bwd, g_type */
    const float *inp, *dout, *crstd;
    const void *weight; /* w_type */
    zoff_dtype out_type, w_type, g_type;
    float *scratch; /* (C) widened weight, 16-bit weights only */
    float eps;
    size_t N;
    int C, nt;
} rms_args;

static const float *widen_weight(rms_args *a) {
    if (a->w_type == ZOFF_F32) return a->weight;
    for (int i = 0; i < a->C; i++)
        a->scratch[i] = zoff_load_as_f32(a->weight, a->w_type, (size_t)i);
    return a->scratch;
}

static void run_rms_fwd(void *p) {
    rms_args *a = p;
    int C = a->C;
    const float *w = widen_weight(a);
#pragma omp parallel for num_threads(host_threads_for(a->nt, 6.0 * a->N * C)) schedule(static)
    for (size_t r = 0; r < a->N; r++) {
        const float *x = a->inp + r * (size_t)C;
        float ss = 0.0f;
        for (int i = 0; i < C; i++)
            ss += x[i] * x[i];
        float rs = 1.0f / sqrtf(ss / (float)C + a->eps);
        if (a->out_type == ZOFF_F32) {
            float *o = (float *)a->out + r * (size_t)C;
            for (int i = 0; i < C; i++)
                o[i] = w[i] * (x[i] * rs);
        } else {
            for (int i = 0; i < C; i++)
                zoff_store_from_f32(a->out, a->out_type, r * (size_t)C + (size_t)i,
                                    w[i] * (x[i] * rs));
        }
        a->rstd[r] = rs;
    }
    free(a->scratch);
}

int host_op_rmsnorm_fwd(void *stream, void *out, zoff_dtype out_type, float *rstd, const float *inp,
                        const void *weight, zoff_dtype w_type, size_t N, int C, float eps) {
    rms_args a = {.out = out,
                  .rstd = rstd,
                  .inp = inp,
                  .weight = weight,
                  .out_type = out_type,
                  .w_type = w_type,
                  .eps = eps,
                  .N = N,
                  .C = C,
                  .nt = host_stream_threads(stream)};
    if (w_type != ZOFF_F32 &&
        !(a.scratch = host_kernel_scratch("rmsnorm_fwd", (size_t)C * sizeof(float))))
        return -ENOMEM;
    int rc = host_op_enqueue(stream, HOST_OP_RMSNORM, run_rms_fwd, &a, sizeof a);
    if (rc) free(a.scratch);
    return rc;
}

/* y = w * n with n = x * r: dx = r * (w dy - n * mean(w dy * n)); dw += dy * n. */
static void run_rms_bwd(void *p) {
    rms_args *a = p;
    int C = a->C;
    int nt = host_threads_for(a->nt, 8.0 * a->N * C);
    const float *w = widen_weight(a);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t r = 0; r < a->N; r++) {
        const float *x = a->inp + r * (size_t)C, *dy = a->dout + r * (size_t)C;
        float *dx = a->dinp + r * (size_t)C;
        float rs = a->crstd[r], dot = 0.0f;
        for (int i = 0; i < C; i++)
            dot += w[i] * dy[i] * x[i] * rs;
        dot /= (float)C;
        for (int i = 0; i < C; i++)
            dx[i] += rs * (w[i] * dy[i] - x[i] * rs * dot);
    }
    int nblk = (C + 63) / 64;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * 64, j1 = j0 + 64 < C ? j0 + 64 : C;
        float dw[64] = {0};
        for (size_t r = 0; r < a->N; r++) {
            const float *x = a->inp + r * (size_t)C, *dy = a->dout + r * (size_t)C;
            float rs = a->crstd[r];
            for (int j = j0; j < j1; j++)
                dw[j - j0] += dy[j] * (x[j] * rs);
        }
        for (int j = j0; j < j1; j++)
            zoff_store_from_f32(a->dweight, a->g_type, (size_t)j,
                                zoff_load_as_f32(a->dweight, a->g_type, (size_t)j) + dw[j - j0]);
    }
    free(a->scratch);
}

int host_op_rmsnorm_bwd(void *stream, float *dinp, void *dweight, zoff_dtype g_type,
                        const float *dout, const float *inp, const void *weight, zoff_dtype w_type,
                        const float *rstd, size_t N, int C) {
    rms_args a = {.dinp = dinp,
                  .dweight = dweight,
                  .inp = inp,
                  .dout = dout,
                  .crstd = rstd,
                  .weight = weight,
                  .w_type = w_type,
                  .g_type = g_type,
                  .N = N,
                  .C = C,
                  .nt = host_stream_threads(stream)};
    if (w_type != ZOFF_F32 &&
        !(a.scratch = host_kernel_scratch("rmsnorm_bwd", (size_t)C * sizeof(float))))
        return -ENOMEM;
    int rc = host_op_enqueue(stream, HOST_OP_RMSNORM, run_rms_bwd, &a, sizeof a);
    if (rc) free(a.scratch);
    return rc;
}
