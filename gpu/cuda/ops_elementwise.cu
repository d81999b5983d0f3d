// Elementwise model kernels: residual add (fp32), bias init and GELU forward/backward (tanh
// approximation) on typed operands: each element is loaded as fp32, computed in fp32 and
// rounded once when stored. The bias gradient, a column sum, lives in ops_reduce.cu.
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

#define GELU_SCALE 0.7978845608028654f

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                        \
         i += (size_t)gridDim.x * blockDim.x)

__global__ void zoff_add_kernel(float *out, const float *a, const float *b, size_t n) {
    GRID_STRIDE(i, n)
    out[i] = a[i] + b[i];
}

// out (N,OC) = bias (OC, or NULL) broadcast over rows + res (N,OC fp32, or NULL), one element
// per thread (grid-stride loop); res may be out (each element is read before written).
__global__ void zoff_bias_init_kernel(void *out, zoff_dtype out_type, const void *bias,
                                      zoff_dtype bias_type, const float *res, size_t N, int OC) {
    size_t n = N * (size_t)OC;
    GRID_STRIDE(i, n) {
        float b = bias ? zoff_load_f32(bias, bias_type, i % (size_t)OC) : 0.0f;
        zoff_store_f32(out, out_type, i, (res ? res[i] : 0.0f) + b);
    }
}

__device__ __forceinline__ float gelu_f(float x) {
    float cube = 0.044715f * x * x * x;
    return 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + cube)));
}

__device__ __forceinline__ float gelu_grad_f(float x) {
    float cube = 0.044715f * x * x * x;
    float th = tanhf(GELU_SCALE * (x + cube)), sech2 = 1.0f - th * th;
    return 0.5f * (1.0f + th) + x * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
}

__global__ void zoff_gelu_fwd_kernel(void *out, const void *inp, zoff_dtype t, size_t n) {
    GRID_STRIDE(i, n)
    zoff_store_f32(out, t, i, gelu_f(zoff_load_f32(inp, t, i)));
}

// dinp = gelu'(inp) * dout, WRITTEN; dinp may alias dout (each element is read before written).
__global__ void zoff_gelu_bwd_kernel(void *dinp, const void *inp, const void *dout, zoff_dtype t,
                                     size_t n) {
    GRID_STRIDE(i, n)
    zoff_store_f32(dinp, t, i, gelu_grad_f(zoff_load_f32(inp, t, i)) * zoff_load_f32(dout, t, i));
}

#define LAUNCH_EW(kernel, n, name, ...)                                                            \
    do {                                                                                           \
        const unsigned block = 256;                                                                \
        kernel<<<zoff_cuda_grid((n), block), block, 0, s->stream>>>(__VA_ARGS__);                  \
        return zoff_cuda_check(cudaGetLastError(), name);                                          \
    } while (0)

extern "C" int zoff_cuda_launch_add(cuda_stream *s, float *out, const float *a, const float *b,
                                    size_t n) {
    LAUNCH_EW(zoff_add_kernel, n, "add kernel launch", out, a, b, n);
}

extern "C" int zoff_cuda_launch_bias_init(cuda_stream *s, void *out, zoff_dtype out_type,
                                          const void *bias, zoff_dtype bias_type, const float *res,
                                          size_t N, int OC) {
    LAUNCH_EW(zoff_bias_init_kernel, N * (size_t)OC, "bias_init kernel launch", out, out_type, bias,
              bias_type, res, N, OC);
}

extern "C" int zoff_cuda_launch_gelu_fwd(cuda_stream *s, void *out, const void *inp,
                                         zoff_dtype type, size_t n) {
    LAUNCH_EW(zoff_gelu_fwd_kernel, n, "gelu_fwd kernel launch", out, inp, type, n);
}

extern "C" int zoff_cuda_launch_gelu_bwd(cuda_stream *s, void *dinp, const void *inp,
                                         const void *dout, zoff_dtype type, size_t n) {
    LAUNCH_EW(zoff_gelu_bwd_kernel, n, "gelu_bwd kernel launch", dinp, inp, dout, type, n);
}
