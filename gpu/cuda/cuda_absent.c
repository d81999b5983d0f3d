/* Stands in for the CUDA backend in builds without the CUDA toolkit (ZOFF_CUDA=OFF). */
#include "gpu/device_impl.h"
#include "core/log.h"

/* Quiet, as the real backend's "no CUDA device": --device auto probes here first and falls back
 * to the host backend; a caller that asked for cuda reports the error with its detail. */
int zoff_dev_cuda_open(zoff_dev *dev) {
    (void)dev;
    return zoff_fail_quiet(ZOFF_ENOBACKEND, "cuda", "this zoff was built without the CUDA backend");
}

int zoff_dev_cuda_gpu_count(int *count) {
    *count = 0;
    return ZOFF_ENOBACKEND;
}

int zoff_dev_cuda_gpu_info(int ordinal, zoff_dev_gpu_info *out) {
    (void)ordinal;
    (void)out;
    return ZOFF_ENOBACKEND;
}
