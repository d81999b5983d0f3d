// LayerNorm forward/backward (eps 1e-5), statistics in fp32. One warp per row for the forward
// and the input gradient; weights may be 16-bit (w_type) and the forward's output too
// (out_type), rounded once. The weight and bias gradients are column sums over the rows,
// reduced in tiles of rows across the whole GPU and added to g_type buffers with one rounding
// (zoff_cuda_launch_colsum_ln in ops_reduce.cu): deterministic, no atomics.
#include "gpu/cuda/block_reduce.cuh"
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

#define LN_ROWS_PER_BLOCK 8 // warps of a 256-thread block

__global__ void zoff_ln_fwd_kernel(void *out, zoff_dtype out_type, float *mean, float *rstd,
                                   const float *inp, const void *w, const void *b,
                                   zoff_dtype w_type, size_t N, int C) {
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
    for (int i = lane; i < C; i += 32)
        zoff_store_f32(out, out_type, row * C + i,
                       (x[i] - m) * rs * zoff_load_f32(w, w_type, i) + zoff_load_f32(b, w_type, i));
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = rs;
    }
}

// dinp (N,C) += the input gradient, from dout, the forward's inp, mean and rstd.
__global__ void zoff_ln_bwd_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                        const void *w, zoff_dtype w_type, const float *mean,
                                        const float *rstd, size_t N, int C) {
    size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + row * C, *dy = dout + row * C;
    float m = mean[row], rs = rstd[row], a = 0.0f, b = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float norm = (x[i] - m) * rs, dn = zoff_load_f32(w, w_type, i) * dy[i];
        a += dn;
        b += dn * norm;
    }
    a = zoff_warp_sum(a) / C;
    b = zoff_warp_sum(b) / C;
    float *dx = dinp + row * C;
    for (int i = lane; i < C; i += 32) {
        float norm = (x[i] - m) * rs, dn = zoff_load_f32(w, w_type, i) * dy[i];
        dx[i] += (dn - a - norm * b) * rs;
    }
}

static unsigned ln_blocks(size_t N) {
    return (unsigned)((N + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
}

extern "C" int zoff_cuda_launch_layernorm_fwd(cuda_stream *s, void *out, zoff_dtype out_type,
                                              float *mean, float *rstd, const float *inp,
                                              const void *weight, const void *bias,
                                              zoff_dtype w_type, size_t N, int C) {
    zoff_ln_fwd_kernel<<<ln_blocks(N), 32 * LN_ROWS_PER_BLOCK, 0, s->stream>>>(
        out, out_type, mean, rstd, inp, weight, bias, w_type, N, C);
    return zoff_cuda_check(cudaGetLastError(), "layernorm_fwd kernel launch");
}

extern "C" int zoff_cuda_launch_layernorm_bwd(cuda_stream *s, float *dinp, void *dweight,
                                              void *dbias, zoff_dtype g_type, const float *dout,
                                              const float *inp, const void *weight,
                                              zoff_dtype w_type, const float *mean,
                                              const float *rstd, size_t N, int C) {
    zoff_ln_bwd_dinp_kernel<<<ln_blocks(N), 32 * LN_ROWS_PER_BLOCK, 0, s->stream>>>(
        dinp, dout, inp, weight, w_type, mean, rstd, N, C);
    int rc = zoff_cuda_check(cudaGetLastError(), "layernorm_bwd kernel launch");
    if (rc) return rc;
    return zoff_cuda_launch_colsum_ln(s, dweight, dbias, g_type, dout, inp, mean, rstd, N, C);
}
