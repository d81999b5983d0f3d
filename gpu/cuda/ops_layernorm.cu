// LayerNorm forward/backward (eps 1e-5), statistics in fp32. One warp per row for the
// forward and the input gradient; the weight and bias gradients use one thread per column
// summing rows in order (deterministic, no atomics).
#include "gpu/cuda/block_reduce.cuh"
#include "gpu/cuda/cuda_backend.h"

__global__ void zoff_ln_fwd_kernel(float *out, float *mean, float *rstd, const float *inp,
                                   const float *w, const float *b, size_t N, int C) {
    size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + row * C;
    float s = 0.0f;
    for (int i = lane; i < C; i += 32)
        s += x[i];
    float m = zoff_warp_sum(s) / C;
    float v = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float d = x[i] - m;
        v += d * d;
    }
    float rs = rsqrtf(zoff_warp_sum(v) / C + 1e-5f);
    float *o = out + row * C;
    for (int i = lane; i < C; i += 32)
        o[i] = (x[i] - m) * rs * w[i] + b[i];
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = rs;
    }
}

__global__ void zoff_ln_bwd_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                        const float *w, const float *mean, const float *rstd,
                                        size_t N, int C) {
    size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + row * C, *dy = dout + row * C;
    float m = mean[row], rs = rstd[row], a = 0.0f, b = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float norm = (x[i] - m) * rs, dn = w[i] * dy[i];
        a += dn;
        b += dn * norm;
    }
    a = zoff_warp_sum(a) / C;
    b = zoff_warp_sum(b) / C;
    float *dx = dinp + row * C;
    for (int i = lane; i < C; i += 32) {
        float norm = (x[i] - m) * rs, dn = w[i] * dy[i];
        dx[i] += (dn - a - norm * b) * rs;
    }
}

__global__ void zoff_ln_bwd_params_kernel(float *dw, float *db, const float *dout, const float *inp,
                                          const float *mean, const float *rstd, size_t N, int C) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    float aw = 0.0f, ab = 0.0f;
    for (size_t r = 0; r < N; r++) {
        float d = dout[r * C + j];
        aw += (inp[r * C + j] - mean[r]) * rstd[r] * d;
        ab += d;
    }
    dw[j] += aw;
    db[j] += ab;
}

extern "C" int zoff_cuda_launch_layernorm_fwd(cuda_stream *s, float *out, float *mean, float *rstd,
                                              const float *inp, const float *weight,
                                              const float *bias, size_t N, int C) {
    unsigned blocks = (unsigned)((N + 7) / 8);
    zoff_ln_fwd_kernel<<<blocks, 256, 0, s->stream>>>(out, mean, rstd, inp, weight, bias, N, C);
    return zoff_cuda_check(cudaGetLastError(), "layernorm_fwd kernel launch");
}

extern "C" int zoff_cuda_launch_layernorm_bwd(cuda_stream *s, float *dinp, float *dweight,
                                              float *dbias, const float *dout, const float *inp,
                                              const float *weight, const float *mean,
                                              const float *rstd, size_t N, int C) {
    unsigned blocks = (unsigned)((N + 7) / 8);
    zoff_ln_bwd_dinp_kernel<<<blocks, 256, 0, s->stream>>>(dinp, dout, inp, weight, mean, rstd, N,
                                                           C);
    int rc = zoff_cuda_check(cudaGetLastError(), "layernorm_bwd kernel launch");
    if (rc) return rc;
    zoff_ln_bwd_params_kernel<<<(C + 255) / 256, 256, 0, s->stream>>>(dweight, dbias, dout, inp,
                                                                      mean, rstd, N, C);
    return zoff_cuda_check(cudaGetLastError(), "layernorm_bwd params kernel launch");
}
