// RMSNorm forward/backward (Llama), statistics in fp32, typed weights (w_type), outputs and
// weight gradients (g_type). One warp per row for the forward and the input gradient; the
// weight gradient is a two-stage column reduction in one block per 32 columns: 32 row lanes
// each sum a strided subset of rows, then the block sums the lanes in a fixed order
// (deterministic, no atomics, no scratch outside the block).
#include "gpu/cuda/block_reduce.cuh"
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

__global__ void zoff_rms_fwd_kernel(void *out, zoff_dtype out_type, float *rstd, const float *inp,
                                    const void *w, zoff_dtype w_type, size_t N, int C, float eps) {
    size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + row * C;
    float ss = 0.0f;
    for (int i = lane; i < C; i += 32)
        ss += x[i] * x[i];
    float rs = 1.0f / sqrtf(zoff_warp_sum(ss) / C + eps);
    for (int i = lane; i < C; i += 32)
        zoff_store_f32(out, out_type, row * C + i, zoff_load_f32(w, w_type, i) * (x[i] * rs));
    if (lane == 0) rstd[row] = rs;
}

__global__ void zoff_rms_bwd_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                         const void *w, zoff_dtype w_type, const float *rstd,
                                         size_t N, int C) {
    size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (row >= N) return;
    const float *x = inp + row * C, *dy = dout + row * C;
    float rs = rstd[row], dot = 0.0f;
    for (int i = lane; i < C; i += 32)
        dot += zoff_load_f32(w, w_type, i) * dy[i] * x[i] * rs;
    dot = zoff_warp_sum(dot) / C;
    float *dx = dinp + row * C;
    for (int i = lane; i < C; i += 32)
        dx[i] += rs * (zoff_load_f32(w, w_type, i) * dy[i] - x[i] * rs * dot);
}

// block (32, 32): threadIdx.x a column of the block's 32, threadIdx.y a row lane
__global__ void zoff_rms_bwd_dw_kernel(void *dw, zoff_dtype g_type, const float *dout,
                                       const float *inp, const float *rstd, size_t N, int C) {
    __shared__ float part[32][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (j < C)
        for (size_t r = threadIdx.y; r < N; r += 32)
            acc += dout[r * C + j] * (inp[r * C + j] * rstd[r]);
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < C) {
        float s = 0.0f;
        for (int k = 0; k < 32; k++)
            s += part[k][threadIdx.x];
        zoff_store_f32(dw, g_type, j, zoff_load_f32(dw, g_type, j) + s);
    }
}

extern "C" int zoff_cuda_launch_rmsnorm_fwd(cuda_stream *s, void *out, zoff_dtype out_type,
                                            float *rstd, const float *inp, const void *weight,
                                            zoff_dtype w_type, size_t N, int C, float eps) {
    unsigned blocks = (unsigned)((N + 7) / 8);
    zoff_rms_fwd_kernel<<<blocks, 256, 0, s->stream>>>(out, out_type, rstd, inp, weight, w_type, N,
                                                       C, eps);
    return zoff_cuda_check(cudaGetLastError(), "rmsnorm_fwd kernel launch");
}

extern "C" int zoff_cuda_launch_rmsnorm_bwd(cuda_stream *s, float *dinp, void *dweight,
                                            zoff_dtype g_type, const float *dout, const float *inp,
                                            const void *weight, zoff_dtype w_type,
                                            const float *rstd, size_t N, int C) {
    unsigned blocks = (unsigned)((N + 7) / 8);
    zoff_rms_bwd_dinp_kernel<<<blocks, 256, 0, s->stream>>>(dinp, dout, inp, weight, w_type, rstd,
                                                            N, C);
    int rc = zoff_cuda_check(cudaGetLastError(), "rmsnorm_bwd kernel launch");
    if (rc) return rc;
    zoff_rms_bwd_dw_kernel<<<(unsigned)((C + 31) / 32), dim3(32, 32), 0, s->stream>>>(
        dweight, g_type, dout, inp, rstd, N, C);
    return zoff_cuda_check(cudaGetLastError(), "rmsnorm_bwd weight kernel launch");
}
