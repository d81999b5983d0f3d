// SwiGLU (Llama's MLP gate): out = silu(gate) * up and its backward, elementwise over typed
// buffers with fp32 arithmetic and one rounding per store (as the host kernel).
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

__global__ void zoff_swiglu_fwd_kernel(void *out, const void *gate, const void *up, zoff_dtype t,
                                       size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = zoff_load_f32(gate, t, i), u = zoff_load_f32(up, t, i);
        zoff_store_f32(out, t, i, g * (1.0f / (1.0f + expf(-g))) * u);
    }
}

__global__ void zoff_swiglu_bwd_kernel(void *dgate, void *dup, const void *dout, const void *gate,
                                       const void *up, zoff_dtype t, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = zoff_load_f32(gate, t, i), u = zoff_load_f32(up, t, i);
        float dy = zoff_load_f32(dout, t, i), s = 1.0f / (1.0f + expf(-g));
        zoff_store_f32(dgate, t, i, dy * u * (s + g * s * (1.0f - s)));
        zoff_store_f32(dup, t, i, dy * g * s);
    }
}

extern "C" int zoff_cuda_launch_swiglu_fwd(cuda_stream *s, void *out, const void *gate,
                                           const void *up, zoff_dtype type, size_t n) {
    zoff_swiglu_fwd_kernel<<<zoff_cuda_grid(n, 256), 256, 0, s->stream>>>(out, gate, up, type, n);
    return zoff_cuda_check(cudaGetLastError(), "swiglu_fwd kernel launch");
}

extern "C" int zoff_cuda_launch_swiglu_bwd(cuda_stream *s, void *dgate, void *dup, const void *dout,
                                           const void *gate, const void *up, zoff_dtype type,
                                           size_t n) {
    zoff_swiglu_bwd_kernel<<<zoff_cuda_grid(n, 256), 256, 0, s->stream>>>(dgate, dup, dout, gate,
                                                                          up, type, n);
    return zoff_cuda_check(cudaGetLastError(), "swiglu_bwd kernel launch");
}
