// Elementwise dtype kernels: cast between fp32/fp16/bf16 and in-place scale.
// Stream-ordered; one thread per element with grid-stride loops.
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

__global__ void zoff_cast_kernel(void *dst, zoff_dtype dt, const void *src, zoff_dtype st,
                                 size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        zoff_store_f32(dst, dt, i, zoff_load_f32(src, st, i));
}

__global__ void zoff_scale_kernel(void *x, zoff_dtype t, float alpha, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        zoff_store_f32(x, t, i, zoff_load_f32(x, t, i) * alpha);
}

extern "C" int zoff_cuda_launch_cast(cuda_stream *s, void *dst, zoff_dtype dst_type,
                                     const void *src, zoff_dtype src_type, size_t n) {
    if (dst_type == src_type)
        return zoff_cuda_check(cudaMemcpyAsync(dst, src, n * zoff_dtype_size(dst_type),
                                               cudaMemcpyDeviceToDevice, s->stream),
                               "cast: cudaMemcpyAsync");
    const unsigned block = 256;
    zoff_cast_kernel<<<zoff_cuda_grid(n, block), block, 0, s->stream>>>(dst, dst_type, src,
                                                                        src_type, n);
    return zoff_cuda_check(cudaGetLastError(), "cast kernel launch");
}

extern "C" int zoff_cuda_launch_scale(cuda_stream *s, void *x, zoff_dtype type, float alpha,
                                      size_t n) {
    const unsigned block = 256;
    zoff_scale_kernel<<<zoff_cuda_grid(n, block), block, 0, s->stream>>>(x, type, alpha, n);
    return zoff_cuda_check(cudaGetLastError(), "scale kernel launch");
}
