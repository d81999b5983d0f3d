/* How a host kernel spreads over the backend's kernel threads: each op runs on its stream's
 * worker thread, which opens an OpenMP team of hdev->kernel_threads threads for the loops
 * that are worth it. Work is split so that no two threads write the same output element,
 * which keeps every host kernel deterministic (the oracle must be reproducible). */
#ifndef ZOFF_GPU_HOST_PARALLEL_H
#define ZOFF_GPU_HOST_PARALLEL_H

#include "gpu/host/host_backend.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static inline int host_stream_threads(void *stream) {
    int n = ((host_stream *)stream)->hdev->kernel_threads;
    return n > 0 ? n : 1;
}

/* Threads worth using for `work` scalar operations: small kernels run on one thread. */
static inline int host_threads_for(int max_threads, double work) {
    if (work < 32768.0) return 1;
    return max_threads;
}

/* The calling thread's index in the current OpenMP team (0 without OpenMP): which slice of
 * a per-thread scratch it owns. */
static inline int host_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#endif
