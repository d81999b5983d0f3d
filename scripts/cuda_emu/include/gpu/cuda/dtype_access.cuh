// emulator stand-in: typed loads/stores through core/half.h (round to nearest even)
#pragma once
#include "emu.h"
__device__ __forceinline__ float zoff_load_f32(const void *x, zoff_dtype t, size_t i) {
    return zoff_load_as_f32(x, t, i);
}
__device__ __forceinline__ void zoff_store_f32(void *x, zoff_dtype t, size_t i, float v) {
    zoff_store_from_f32(x, t, i, v);
}
static inline unsigned zoff_cuda_grid(size_t n, unsigned block) {
    size_t g = (n + block - 1) / block;
    return (unsigned)(g > 65535u * 16u ? 65535u * 16u : (g ? g : 1));
}
