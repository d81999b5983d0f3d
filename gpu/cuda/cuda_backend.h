/* Internals of the CUDA backend: the stream object and the kernel launchers that the .cu
 * files export with C linkage. Each launcher enqueues on the given stream and returns 0 or
 * ZOFF_ECUDA (the launch error's text in the error detail). */
#ifndef ZOFF_GPU_CUDA_BACKEND_H
#define ZOFF_GPU_CUDA_BACKEND_H

#include "zoff/zoff.h"

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Partial sums of a reduction need scratch space; each stream owns its own so that
 * reductions on different streams never share it. */
#define ZOFF_CUDA_REDUCE_BLOCKS 512

typedef struct cuda_stream {
    cudaStream_t stream;
    float *scratch; /* (2, ZOFF_CUDA_REDUCE_BLOCKS) device floats: sumsq, nonfinite */
    int ordinal;
} cuda_stream;

/* Turns a CUDA error into ZOFF_ECUDA with "what: message" as detail (0 if err == success). */
int zoff_cuda_check(cudaError_t err, const char *what);

int zoff_cuda_launch_cast(cuda_stream *s, void *dst, zoff_dtype dst_type, const void *src,
                          zoff_dtype src_type, size_t n);
int zoff_cuda_launch_scale(cuda_stream *s, void *x, zoff_dtype type, float alpha, size_t n);
int zoff_cuda_launch_wait_value(cuda_stream *s, const uint32_t *flag, uint32_t value);
int zoff_cuda_launch_write_value(cuda_stream *s, uint32_t *flag, uint32_t value);
int zoff_cuda_launch_sumsq_nonfinite(cuda_stream *s, const void *x, zoff_dtype type, size_t n,
                                     float *out);

#ifdef __cplusplus
}
#endif
#endif
