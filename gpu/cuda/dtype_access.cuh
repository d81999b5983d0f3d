// Load/store of zoff_dtype elements as fp32 inside kernels; conversions round to nearest
// even (__float2half_rn, __float2bfloat16_rn), matching core/half.h on the host.
#pragma once
#include "zoff/zoff.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float zoff_load_f32(const void *x, zoff_dtype t, size_t i) {
    switch (t) {
    case ZOFF_F16:
        return __half2float(((const __half *)x)[i]);
    case ZOFF_BF16:
        return __bfloat162float(((const __nv_bfloat16 *)x)[i]);
    default:
        return ((const float *)x)[i];
    }
}

__device__ __forceinline__ void zoff_store_f32(void *x, zoff_dtype t, size_t i, float v) {
    switch (t) {
    case ZOFF_F16:
        ((__half *)x)[i] = __float2half_rn(v);
        break;
    case ZOFF_BF16:
        ((__nv_bfloat16 *)x)[i] = __float2bfloat16_rn(v);
        break;
    default:
        ((float *)x)[i] = v;
        break;
    }
}

// A grid for an elementwise kernel over n elements with grid-stride loops.
static inline unsigned zoff_cuda_grid(size_t n, unsigned block) {
    size_t g = (n + block - 1) / block;
    return (unsigned)(g > 65535u * 16u ? 65535u * 16u : (g ? g : 1));
}
