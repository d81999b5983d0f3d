// Rotary position embedding in place on q or k rows (zoff_dev_op_rope_fwd/bwd): one thread per
// (row, head, i < HS/2) pair. The angle pos * inv_freq[i] is an fp32 product and its sine and
// cosine are the accurate sincosf (not the fast intrinsics), as on the host.
#include "gpu/cuda/cuda_backend.h"
#include "gpu/cuda/dtype_access.cuh"

__global__ void zoff_rope_kernel(void *x, zoff_dtype type, size_t row_stride, const int32_t *pos,
                                 const float *inv_freq, size_t rows, int T, int NH, int HS,
                                 float sgn) {
    int half = HS / 2;
    size_t total = rows * (size_t)NH * half;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total;
         e += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(e % half);
        size_t rh = e / half;
        int h = (int)(rh % NH);
        size_t r = rh / NH;
        float p = (float)(pos ? pos[r] : (int32_t)(r % (size_t)T));
        float sn, c;
        sincosf(p * inv_freq[i], &sn, &c);
        sn *= sgn;
        size_t i0 = r * row_stride + (size_t)h * HS + i, i1 = i0 + half;
        float x0 = zoff_load_f32(x, type, i0), x1 = zoff_load_f32(x, type, i1);
        zoff_store_f32(x, type, i0, x0 * c - x1 * sn);
        zoff_store_f32(x, type, i1, x1 * c + x0 * sn);
    }
}

extern "C" int zoff_cuda_launch_rope(cuda_stream *s, void *x, zoff_dtype type, size_t row_stride,
                                     const int32_t *pos, const float *inv_freq, int B, int T,
                                     int NH, int HS, bool backward) {
    size_t rows = (size_t)B * T, n = rows * (size_t)NH * (HS / 2);
    zoff_rope_kernel<<<zoff_cuda_grid(n, 256), 256, 0, s->stream>>>(
        x, type, row_stride, pos, inv_freq, rows, T, NH, HS, backward ? -1.0f : 1.0f);
    return zoff_cuda_check(cudaGetLastError(), "rope kernel launch");
}
