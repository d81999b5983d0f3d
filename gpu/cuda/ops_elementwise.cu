// Elementwise model kernels: residual add, bias add, bias gradient (one thread per column,
// rows summed in order: deterministic), GELU forward/backward (tanh approximation).
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

#define GELU_SCALE 0.7978845608028654f

__global__ void zoff_add_kernel(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void zoff_bias_add_kernel(float *out, const float *bias, size_t N, int OC) {
    size_t n = N * (size_t)OC;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % OC];
}

__global__ void zoff_bias_grad_kernel(float *dbias, const float *dout, size_t N, int OC) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= OC) return;
    float acc = 0.0f;
    for (size_t r = 0; r < N; r++)
        acc += dout[r * OC + j];
    dbias[j] += acc;
}

__global__ void zoff_gelu_fwd_kernel(float *out, const float *inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = inp[i], cube = 0.044715f * x * x * x;
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + cube)));
    }
}

__global__ void zoff_gelu_bwd_kernel(float *dinp, const float *inp, const float *dout, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = inp[i], cube = 0.044715f * x * x * x;
        float th = tanhf(GELU_SCALE * (x + cube)), sech2 = 1.0f - th * th;
        float local =
            0.5f * (1.0f + th) + x * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += local * dout[i];
    }
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

extern "C" int zoff_cuda_launch_bias_add(cuda_stream *s, float *out, const float *bias, size_t N,
                                         int OC) {
    LAUNCH_EW(zoff_bias_add_kernel, N * (size_t)OC, "bias_add kernel launch", out, bias, N, OC);
}

extern "C" int zoff_cuda_launch_bias_grad(cuda_stream *s, float *dbias, const float *dout, size_t N,
                                          int OC) {
    zoff_bias_grad_kernel<<<(OC + 255) / 256, 256, 0, s->stream>>>(dbias, dout, N, OC);
    return zoff_cuda_check(cudaGetLastError(), "bias_grad kernel launch");
}

extern "C" int zoff_cuda_launch_gelu_fwd(cuda_stream *s, float *out, const float *inp, size_t n) {
    LAUNCH_EW(zoff_gelu_fwd_kernel, n, "gelu_fwd kernel launch", out, inp, n);
}

extern "C" int zoff_cuda_launch_gelu_bwd(cuda_stream *s, float *dinp, const float *inp,
                                         const float *dout, size_t n) {
    LAUNCH_EW(zoff_gelu_bwd_kernel, n, "gelu_bwd kernel launch", dinp, inp, dout, n);
}
