// Warp and block reductions shared by the model kernels (sum and max of fp32). A block
// reduction needs blockDim.x to be a multiple of 32, at most 1024; every thread gets the
// result.
#pragma once

__device__ __forceinline__ float zoff_warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ float zoff_warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// shared must hold 32 floats; the call ends with a barrier so shared can be reused.
__device__ __forceinline__ float zoff_block_sum(float v, float *shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = zoff_warp_sum(v);
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nwarps ? shared[lane] : 0.0f;
    v = zoff_warp_sum(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ float zoff_block_max(float v, float *shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = zoff_warp_max(v);
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nwarps ? shared[lane] : -INFINITY;
    v = zoff_warp_max(v);
    __syncthreads();
    return v;
}
