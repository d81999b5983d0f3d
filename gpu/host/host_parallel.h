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

/* Threads worth using for `work` scalar operations: kernels under about a million (a few
 * hundred microseconds on one core) run on one thread. A parallel region is cheap on an idle
 * machine, but when the cores are shared (other jobs, or the engine's own CPU threads) each one
 * waits until every team thread is scheduled again, so the small kernels of a step (bias, residual
 * add, the optimizer on bias and norm tensors) cost tens of times their work under load when
 * spread (bench_train --profile, demo model, a loaded two-core machine: its bias kernels took
 * 1000 ms a step spread, 5 ms on one thread). On an idle machine this costs a few milliseconds a
 * step at most: each kernel it keeps on one thread is a fraction of a millisecond of work. */
#define HOST_PARALLEL_MIN_WORK 1048576.0

static inline int host_threads_for(int max_threads, double work) {
    if (work < HOST_PARALLEL_MIN_WORK) return 1;
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
