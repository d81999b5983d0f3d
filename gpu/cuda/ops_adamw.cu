// AdamW on fp32 parameters and moments, elementwise (the reference trainer's step).
#include "gpu/cuda/cuda_backend.h"
#include "gpu/device.h"

__global__ void zoff_adamw_kernel(float *param, const float *grad, float *m, float *v, size_t n,
                                  float lr, float b1, float b2, float eps, float wd, float gs,
                                  float c1, float c2) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i] * gs;
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float p = param[i];
        param[i] = p - lr * ((mi / c1) / (sqrtf(vi / c2) + eps) + wd * p);
    }
}

extern "C" int zoff_cuda_launch_adamw(cuda_stream *s, float *param, const float *grad, float *m,
                                      float *v, size_t n, const zoff_dev_adamw_args *a) {
    float c1 = 1.0f - powf(a->beta1, (float)a->step), c2 = 1.0f - powf(a->beta2, (float)a->step);
    size_t g = (n + 255) / 256;
    unsigned grid = (unsigned)(g > 65535u * 16u ? 65535u * 16u : (g ? g : 1));
    zoff_adamw_kernel<<<grid, 256, 0, s->stream>>>(param, grad, m, v, n, a->lr, a->beta1, a->beta2,
                                                   a->eps, a->weight_decay, a->grad_scale, c1, c2);
    return zoff_cuda_check(cudaGetLastError(), "adamw kernel launch");
}
