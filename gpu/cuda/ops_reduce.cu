// Reductions: sum of squares and the inf/nan flag of a buffer, the engine's per-bucket
// check before a gradient bucket leaves the GPU. Deterministic: a fixed grid writes one
// partial per block into the stream's scratch, then one block sums the partials in a fixed
// order, so the result does not depend on scheduling.
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

#define REDUCE_THREADS 256

__device__ __forceinline__ float block_sum(float v, float *shared) {
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, off);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = threadIdx.x < blockDim.x / 32 ? shared[threadIdx.x] : 0.0f;
    if (warp == 0)
        for (int off = 16; off > 0; off >>= 1)
            v += __shfl_down_sync(0xffffffffu, v, off);
    __syncthreads();
    return v;
}

__global__ void zoff_sumsq_partial_kernel(const void *x, zoff_dtype t, size_t n, float *partial) {
    __shared__ float shared[32];
    float acc = 0.0f, bad = 0.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = zoff_load_f32(x, t, i);
        if (isfinite(v))
            acc = fmaf(v, v, acc);
        else
            bad = 1.0f;
    }
    acc = block_sum(acc, shared);
    bad = block_sum(bad, shared);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = acc;
        partial[ZOFF_CUDA_REDUCE_BLOCKS + blockIdx.x] = bad;
    }
}

__global__ void zoff_sumsq_final_kernel(const float *partial, unsigned nblocks, float *out) {
    __shared__ float shared[32];
    float acc = 0.0f, bad = 0.0f;
    for (unsigned i = threadIdx.x; i < nblocks; i += blockDim.x) {
        acc += partial[i];
        bad += partial[ZOFF_CUDA_REDUCE_BLOCKS + i];
    }
    acc = block_sum(acc, shared);
    bad = block_sum(bad, shared);
    if (threadIdx.x == 0) {
        out[0] = acc;
        out[1] = bad > 0.0f ? 1.0f : 0.0f;
    }
}

extern "C" int zoff_cuda_launch_sumsq_nonfinite(cuda_stream *s, const void *x, zoff_dtype type,
                                                size_t n, float *out) {
    size_t want = (n + REDUCE_THREADS * 8 - 1) / (REDUCE_THREADS * 8);
    unsigned blocks = (unsigned)(want < 1                         ? 1
                                 : want > ZOFF_CUDA_REDUCE_BLOCKS ? ZOFF_CUDA_REDUCE_BLOCKS
                                                                  : want);
    zoff_sumsq_partial_kernel<<<blocks, REDUCE_THREADS, 0, s->stream>>>(x, type, n, s->scratch);
    int rc = zoff_cuda_check(cudaGetLastError(), "sumsq partial kernel launch");
    if (rc) return rc;
    zoff_sumsq_final_kernel<<<1, REDUCE_THREADS, 0, s->stream>>>(s->scratch, blocks, out);
    return zoff_cuda_check(cudaGetLastError(), "sumsq final kernel launch");
}
