// Counter signals between streams and host threads (zoff_dev_stream_wait_value): a
// one-thread kernel polls a 32-bit counter in mapped pinned host memory, or stores one.
// The poll uses system-scope volatile loads and backs off with __nanosleep so that it
// costs one warp slot on one SM and little PCIe traffic while it waits.
#include "gpu/cuda/cuda_backend.h"

#include <stdint.h>

__global__ void zoff_wait_value_kernel(const volatile uint32_t *flag, uint32_t value) {
    unsigned ns = 64;
    while ((int32_t)(*flag - value) < 0) {
        __nanosleep(ns);
        if (ns < 4096) ns *= 2;
    }
    __threadfence_system(); // later work on this stream sees what the writer published
}

__global__ void zoff_write_value_kernel(volatile uint32_t *flag, uint32_t value) {
    __threadfence_system(); // earlier copies and kernels on this stream are visible first
    *flag = value;
}

extern "C" int zoff_cuda_launch_wait_value(cuda_stream *s, const uint32_t *flag, uint32_t value) {
    zoff_wait_value_kernel<<<1, 1, 0, s->stream>>>(flag, value);
    return zoff_cuda_check(cudaGetLastError(), "wait_value kernel launch");
}

extern "C" int zoff_cuda_launch_write_value(cuda_stream *s, uint32_t *flag, uint32_t value) {
    zoff_write_value_kernel<<<1, 1, 0, s->stream>>>(flag, value);
    return zoff_cuda_check(cudaGetLastError(), "write_value kernel launch");
}
