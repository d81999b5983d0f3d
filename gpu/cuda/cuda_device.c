/* CUDA backend: streams, events, memory, copies and counter signals on the CUDA runtime API.
 *
 * Errors: every CUDA status goes through zoff_cuda_check, which consumes the runtime's
 * per-thread error so that a failed or "not ready" call never makes the next launch report
 * it, and tells sticky errors (the context is lost) from the others.
 * Threads: each call first makes the device's GPU current on the calling thread (engine
 * threads start on GPU 0), and clears any error a third party left behind before a launch.
 * Memory: zoff's own stream-ordered pool on the GPU. An allocation is complete when malloc
 * returns; a free is stream-ordered after the work issued so far on every live stream, so it
 * never blocks the host (a device-wide synchronization could wait forever on a stream that
 * waits for a counter the calling thread has yet to write). The default capacity keeps a
 * headroom below the free memory for what the backend and libraries allocate themselves
 * (stream scratch, cuBLAS workspaces and kernels loaded lazily); close trims the pool.
 * Counter signals are CUDA stream memory operations (cuStreamWaitValue32 with the cyclic
 * >= comparison, cuStreamWriteValue32) on the device address of the mapped pinned counter,
 * taken from the driver through the runtime, so libzoff never links libcuda. A waiting
 * stream blocks its hardware queue, so zoff asks for 32 queues (CUDA_DEVICE_MAX_CONNECTIONS,
 * default 8, set before the first CUDA call unless the user set it): a writer queued later
 * on another stream must not share the waiter's queue; for that, destroyed streams are
 * parked and reused (cuda_backend.h). Host-side waits block rather than spin
 * (cudaDeviceScheduleBlockingSync, blocking-sync events): the CPU Adam needs the cores. */
#include "gpu/cuda/cuda_backend.h"
#include "gpu/device_impl.h"
#include "core/log.h"

#include <cudaTypedefs.h> /* driver entry point types only: libcuda is not linked */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MOD "cuda"

/* CUDA_DEVICE_MAX_CONNECTIONS: the most CUDA allows. */
#define CUDA_CONNECTIONS "32"

typedef struct cuda_event {
    cudaEvent_t event;
    int ordinal;
} cuda_event;

/* --- errors ---------------------------------------------------------------------------- */

int zoff_cuda_error_is_sticky(cudaError_t err) {
    switch (err) { /* "the process must be terminated and relaunched" (driver_types.h) */
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable:
    case cudaErrorContained:
    case cudaErrorTensorMemoryLeak:
    case cudaErrorMpsClientTerminated:
    case cudaErrorExternalDevice:
        return 1;
    default:
        return 0;
    }
}

int zoff_cuda_check(cudaError_t err, const char *what) {
    if (err == cudaSuccess) return 0;
    /* The runtime also keeps the error as this thread's "last error", which the next
     * launch's cudaGetLastError() would return: consume it here, where it is reported. */
    (void)cudaGetLastError();
    if (err == cudaErrorNotReady) return -EAGAIN;
    if (zoff_cuda_error_is_sticky(err))
        return zoff_fail(ZOFF_ECUDA, MOD,
                         "%s: %s (%s); this error is sticky: the CUDA context is lost and every "
                         "later CUDA call fails until the process restarts",
                         what, cudaGetErrorString(err), cudaGetErrorName(err));
    int code = err == cudaErrorMemoryAllocation                                   ? ZOFF_EDEVICE_OOM
               : (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) ? ZOFF_ENODEVICE
                                                                                  : ZOFF_ECUDA;
    return zoff_fail(code, MOD, "%s: %s (%s)", what, cudaGetErrorString(err),
                     cudaGetErrorName(err));
}

#define CK(call) zoff_cuda_check((call), #call)

int zoff_cuda_use_device(int ordinal) {
    return zoff_cuda_check(cudaSetDevice(ordinal), "cudaSetDevice");
}

/* Before a launch: the right GPU, and no error left behind by a call that was not ours
 * (a launcher checks itself with cudaGetLastError()). Every error of ours was consumed
 * where it was reported; a sticky one comes back from the launch itself. */
static int launch_begin(void *stream) {
    int rc = zoff_cuda_use_device(((cuda_stream *)stream)->ordinal);
    if (rc) return rc;
    (void)cudaGetLastError();
    return 0;
}

/* --- process set-up: before the first CUDA call ---------------------------------------- */

static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static void set_cuda_env(void) {
    /* Read when a context is created; a value the user set wins. */
    setenv("CUDA_DEVICE_MAX_CONNECTIONS", CUDA_CONNECTIONS, 0);
}

static void prepare_env(void) {
    pthread_once(&env_once, set_cuda_env);
}

static int connections_in_effect(void) {
    const char *v = getenv("CUDA_DEVICE_MAX_CONNECTIONS");
    int n = v ? atoi(v) : 8;
    return n < 1 ? 8 : n > 32 ? 32 : n; /* CUDA clamps it to [1, 32] */
}

static PFN_cuStreamWaitValue32_v11070 wait_value32;
static PFN_cuStreamWriteValue32_v11070 write_value32;
static pthread_once_t entry_once = PTHREAD_ONCE_INIT;
static int entry_rc;
static char entry_detail[256];

static void load_entry_points(void) {
    static const char *names[] = {"cuStreamWaitValue32", "cuStreamWriteValue32"};
    void *fns[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
        cudaError_t err =
            cudaGetDriverEntryPointByVersion(names[i], &fns[i], 12000, cudaEnableDefault, &q);
        if (err != cudaSuccess || q != cudaDriverEntryPointSuccess || !fns[i]) {
            if (err != cudaSuccess) (void)cudaGetLastError();
            snprintf(entry_detail, sizeof entry_detail,
                     "the CUDA driver does not provide %s (stream memory operations): %s, "
                     "query result %d; a driver for CUDA 12 or newer is needed",
                     names[i], cudaGetErrorString(err), (int)q);
            entry_rc = ZOFF_ECUDA;
            return;
        }
    }
    wait_value32 = (PFN_cuStreamWaitValue32_v11070)fns[0];
    write_value32 = (PFN_cuStreamWriteValue32_v11070)fns[1];
}

static int driver_check(CUresult r, const char *what) {
    if (r == CUDA_SUCCESS) return 0;
    return zoff_fail(r == CUDA_ERROR_OUT_OF_MEMORY ? ZOFF_EDEVICE_OOM : ZOFF_ECUDA, MOD,
                     "%s: CUDA driver error %d", what, (int)r);
}

/* --- GPUs ------------------------------------------------------------------------------ */

int zoff_dev_cuda_gpu_count(int *count) {
    prepare_env();
    *count = 0;
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError(); /* an expected outcome: later calls start clean */
        /* An expected outcome on machines without a GPU: no ERROR-level log. */
        if (err == cudaErrorInsufficientDriver && access("/dev/nvidiactl", F_OK) != 0)
            return zoff_fail_quiet(ZOFF_ENODEVICE, MOD,
                                   "no CUDA device: no NVIDIA driver is loaded (CUDA runtime "
                                   "says: %s)",
                                   cudaGetErrorString(err));
        return zoff_fail_quiet(ZOFF_ENODEVICE, MOD, "no CUDA device: %s", cudaGetErrorString(err));
    }
    if (n == 0)
        return zoff_fail_quiet(ZOFF_ENODEVICE, MOD, "no CUDA device: the driver reports 0 GPUs");
    *count = n;
    return 0;
}

int zoff_dev_cuda_gpu_info(int ordinal, zoff_dev_gpu_info *out) {
    prepare_env();
    struct cudaDeviceProp p;
    memset(out, 0, sizeof *out);
    int rc = CK(cudaGetDeviceProperties(&p, ordinal));
    if (rc) return rc;
    out->ordinal = ordinal;
    snprintf(out->name, sizeof out->name, "%s", p.name);
    out->total_mem = p.totalGlobalMem;
    out->cc_major = p.major;
    out->cc_minor = p.minor;
    out->sm_count = p.multiProcessorCount;
    if ((rc = CK(cudaDeviceGetPCIBusId(out->pci_bus_id, sizeof out->pci_bus_id, ordinal))))
        return rc;
    for (char *c = out->pci_bus_id; *c; c++) /* sysfs spells it in lower case */
        if (*c >= 'A' && *c <= 'F') *c = (char)(*c - 'A' + 'a');
    if ((rc = CK(cudaDriverGetVersion(&out->driver_version)))) return rc;
    if ((rc = CK(cudaRuntimeGetVersion(&out->runtime_version)))) return rc;
    int prev = 0;
    if ((rc = CK(cudaGetDevice(&prev)))) return rc;
    if ((rc = zoff_cuda_use_device(ordinal))) return rc;
    size_t free_b = 0, total_b = 0;
    rc = CK(cudaMemGetInfo(&free_b, &total_b));
    out->free_mem = free_b;
    int rc2 = zoff_cuda_use_device(prev);
    return rc ? rc : rc2;
}

static int use_gpu(zoff_dev *dev) {
    return zoff_cuda_use_device(((cuda_device *)dev->impl)->ordinal);
}

/* --- memory ---------------------------------------------------------------------------- */

size_t zoff_cuda_blas_workspace_bytes(const cuda_device *c) {
    return c->cc_major >= 9 ? (size_t)32 << 20 : (size_t)4 << 20;
}

/* Bytes kept free below the GPU's free memory at open: cuBLAS workspaces and handles, the
 * streams' scratch, kernels loaded on first use, the pool's rounding to its granularity. */
static size_t headroom_bytes(size_t free_mem) {
    size_t h = ((size_t)512 << 20) + free_mem / 100;
    return h < free_mem / 2 ? h : free_mem / 2;
}

int zoff_cuda_pool_alloc(cuda_device *c, size_t bytes, void **ptr) {
    int rc = zoff_cuda_use_device(c->ordinal);
    if (rc) return rc;
    cudaError_t err = cudaMallocFromPoolAsync(ptr, bytes, c->pool, c->alloc_stream);
    if (err == cudaErrorMemoryAllocation) {
        /* Frees still waiting for earlier work hold memory, and the pool keeps what was
         * freed: let the frees complete, give the unused memory back, and try once more.
         * (This one path blocks on the device, as cudaFree would.) */
        (void)cudaGetLastError();
        zoff_log(ZOFF_LOG_DEBUG, MOD, "pool allocation of %zu bytes failed: trimming, retrying",
                 bytes);
        pthread_mutex_lock(&c->free_lock);
        rc = CK(cudaStreamSynchronize(c->free_stream));
        pthread_mutex_unlock(&c->free_lock);
        if (!rc) rc = CK(cudaMemPoolTrimTo(c->pool, 0));
        if (rc) return rc;
        err = cudaMallocFromPoolAsync(ptr, bytes, c->pool, c->alloc_stream);
    }
    if ((rc = zoff_cuda_check(err, "cudaMallocFromPoolAsync"))) return rc;
    /* usable on every stream from here: the allocation has completed */
    return CK(cudaStreamSynchronize(c->alloc_stream));
}

int zoff_cuda_pool_free(cuda_device *c, void *ptr) {
    int rc = zoff_cuda_use_device(c->ordinal);
    if (rc) return rc;
    zoff_dev *dev = c->dev;
    pthread_mutex_lock(&c->free_lock);
    /* free_stream waits for everything issued so far on every live stream; dev->lock is not
     * held while waiting: recording and stream-side waits return at once. */
    pthread_mutex_lock(&dev->lock);
    for (zoff_dev_stream *s = dev->streams; s && !rc; s = s->next) {
        rc = CK(cudaEventRecord(c->free_fence, ((cuda_stream *)s->impl)->stream));
        if (!rc) rc = CK(cudaStreamWaitEvent(c->free_stream, c->free_fence, 0));
    }
    pthread_mutex_unlock(&dev->lock);
    if (!rc) rc = CK(cudaFreeAsync(ptr, c->free_stream));
    pthread_mutex_unlock(&c->free_lock);
    return rc;
}

static int cuda_synchronize(zoff_dev *dev) {
    int rc = use_gpu(dev);
    return rc ? rc : CK(cudaDeviceSynchronize());
}

static void cuda_close(zoff_dev *dev) {
    cuda_device *c = dev->impl;
    if (!c) return;
    if (use_gpu(dev) == 0) {
        CK(cudaDeviceSynchronize());
        /* the parked streams (the dispatcher destroyed every live one before) */
        while (c->idle) {
            cuda_stream *s = c->idle;
            c->idle = s->next;
            zoff_cuda_cublas_destroy(s);
            zoff_cuda_pool_free(c, s->scratch);
            CK(cudaStreamDestroy(s->stream));
            free(s);
        }
        CK(cudaDeviceSynchronize()); /* the frees */
        CK(cudaMemPoolTrimTo(c->pool, 0));
        CK(cudaMemPoolDestroy(c->pool));
        CK(cudaEventDestroy(c->free_fence));
        CK(cudaStreamDestroy(c->free_stream));
        CK(cudaStreamDestroy(c->alloc_stream));
    }
    pthread_mutex_destroy(&c->free_lock);
    pthread_mutex_destroy(&c->idle_lock);
    free(c);
}

static int cuda_malloc(zoff_dev *dev, size_t bytes, void **ptr) {
    return zoff_cuda_pool_alloc(dev->impl, bytes, ptr);
}

static int cuda_free(zoff_dev *dev, void *ptr) {
    return zoff_cuda_pool_free(dev->impl, ptr);
}

static int cuda_host_alloc(zoff_dev *dev, size_t bytes, void **ptr) {
    int rc = use_gpu(dev);
    if (rc) return rc;
    /* Mapped: a counter in it has a device address for the stream memory operations. */
    cudaError_t err = cudaHostAlloc(ptr, bytes, cudaHostAllocPortable | cudaHostAllocMapped);
    if (err == cudaErrorMemoryAllocation) { /* host memory, not the GPU's, ran out */
        (void)cudaGetLastError();
        return zoff_fail(ZOFF_EHOST_OOM, MOD,
                         "cudaHostAlloc of %zu bytes of pinned host memory failed: %s (check "
                         "free memory and `ulimit -l`)",
                         bytes, cudaGetErrorString(err));
    }
    return zoff_cuda_check(err, "cudaHostAlloc");
}

static int cuda_host_free(zoff_dev *dev, void *ptr) {
    int rc = use_gpu(dev);
    return rc ? rc : CK(cudaFreeHost(ptr));
}

/* --- streams and events ---------------------------------------------------------------- */

static int cuda_stream_create(zoff_dev *dev, void **impl) {
    cuda_device *c = dev->impl;
    pthread_mutex_lock(&c->idle_lock);
    cuda_stream *s = c->idle;
    if (s) c->idle = s->next;
    pthread_mutex_unlock(&c->idle_lock);
    if (s) { /* a parked stream: idle, with its queue, scratch and cuBLAS handle */
        s->next = NULL;
        *impl = s;
        return 0;
    }
    s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->ordinal = c->ordinal;
    s->owner = c;
    int rc = use_gpu(dev);
    if (!rc) rc = CK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    if (rc) {
        free(s);
        return rc;
    }
    rc = zoff_cuda_pool_alloc(c, ZOFF_CUDA_STREAM_SCRATCH_FLOATS * sizeof(float),
                              (void **)&s->scratch);
    if (rc) {
        cudaStreamDestroy(s->stream);
        free(s);
        return rc;
    }
    pthread_mutex_lock(&dev->lock);
    int n = ++c->n_streams;
    pthread_mutex_unlock(&dev->lock);
    if (n == c->connections + 1)
        zoff_log(ZOFF_LOG_WARN, MOD,
                 "%d CUDA streams on GPU %d share %d hardware queues "
                 "(CUDA_DEVICE_MAX_CONNECTIONS): a stream waiting on a counter may block a "
                 "writer queued behind it",
                 n, c->ordinal, c->connections);
    *impl = s;
    return 0;
}

static int cuda_stream_destroy(zoff_dev *dev, void *impl) {
    cuda_stream *s = impl;
    cuda_device *c = dev->impl;
    int rc = use_gpu(dev);
    if (!rc) rc = CK(cudaStreamSynchronize(s->stream));
    if (rc) { /* work may be pending: never hand this stream out again */
        zoff_log(ZOFF_LOG_WARN, MOD, "a stream that failed to synchronize is not reused: leaked");
        return rc;
    }
    /* Parked, not destroyed: nothing here synchronizes the device (see cuda_backend.h). */
    pthread_mutex_lock(&c->idle_lock);
    s->next = c->idle;
    c->idle = s;
    pthread_mutex_unlock(&c->idle_lock);
    return 0;
}

static int cuda_stream_synchronize(void *impl) {
    cuda_stream *s = impl;
    int rc = zoff_cuda_use_device(s->ordinal);
    return rc ? rc : CK(cudaStreamSynchronize(s->stream));
}

static int cuda_event_create(zoff_dev *dev, void **impl) {
    cuda_event *e = calloc(1, sizeof *e);
    if (!e) return -ENOMEM;
    e->ordinal = ((cuda_device *)dev->impl)->ordinal;
    int rc = use_gpu(dev);
    /* A host waiting on it sleeps instead of spinning on a core the CPU Adam needs. */
    if (!rc) rc = CK(cudaEventCreateWithFlags(&e->event, cudaEventBlockingSync));
    if (rc) {
        free(e);
        return rc;
    }
    *impl = e;
    return 0;
}

static int cuda_event_destroy(void *impl) {
    cuda_event *e = impl;
    int rc = zoff_cuda_use_device(e->ordinal);
    if (!rc) rc = CK(cudaEventSynchronize(e->event));
    int rc2 = CK(cudaEventDestroy(e->event));
    free(e);
    return rc ? rc : rc2;
}

static int cuda_event_record(void *event, void *stream) {
    cuda_event *e = event;
    int rc = zoff_cuda_use_device(e->ordinal);
    return rc ? rc : CK(cudaEventRecord(e->event, ((cuda_stream *)stream)->stream));
}

static int cuda_stream_wait_event(void *stream, void *event) {
    cuda_stream *s = stream;
    int rc = zoff_cuda_use_device(s->ordinal);
    return rc ? rc : CK(cudaStreamWaitEvent(s->stream, ((cuda_event *)event)->event, 0));
}

static int cuda_event_synchronize(void *event) {
    cuda_event *e = event;
    int rc = zoff_cuda_use_device(e->ordinal);
    return rc ? rc : CK(cudaEventSynchronize(e->event));
}

static int cuda_event_query(void *event) {
    cuda_event *e = event;
    int rc = zoff_cuda_use_device(e->ordinal);
    /* cudaErrorNotReady -> -EAGAIN, consumed so that the next launch does not see it */
    return rc ? rc : CK(cudaEventQuery(e->event));
}

static int cuda_event_elapsed_ms(void *start, void *end, float *ms) {
    cuda_event *a = start, *b = end;
    int rc = zoff_cuda_use_device(a->ordinal);
    return rc ? rc : CK(cudaEventElapsedTime(ms, a->event, b->event));
}

static int cuda_launch_host_fn(void *stream, zoff_dev_host_fn fn, void *arg) {
    cuda_stream *s = stream;
    int rc = zoff_cuda_use_device(s->ordinal);
    return rc ? rc : CK(cudaLaunchHostFunc(s->stream, fn, arg));
}

/* --- counter signals: stream memory operations ------------------------------------------ */

/* The device address of a counter in mapped pinned memory (any address inside a
 * zoff_dev_host_alloc block). */
static int counter_address(const uint32_t *flag, CUdeviceptr *out) {
    void *d = NULL;
    cudaError_t err = cudaHostGetDevicePointer(&d, (void *)flag, 0);
    if (err != cudaSuccess) {
        /* Not every driver resolves an address inside the block (the engine's counters
         * share one allocation): the pointer's attributes know its device address. */
        (void)cudaGetLastError();
        struct cudaPointerAttributes a;
        if (cudaPointerGetAttributes(&a, flag) == cudaSuccess && a.devicePointer) {
            d = a.devicePointer;
            err = cudaSuccess;
        } else {
            (void)cudaGetLastError();
        }
    }
    int rc = zoff_cuda_check(err, "the counter's device address (cudaHostGetDevicePointer): "
                                  "counters must be in memory from zoff_dev_host_alloc");
    if (rc) return rc;
    *out = (CUdeviceptr)(uintptr_t)d;
    return 0;
}

static int cuda_stream_wait_value(void *stream, const uint32_t *flag, uint32_t value) {
    cuda_stream *s = stream;
    CUdeviceptr addr;
    int rc = zoff_cuda_use_device(s->ordinal);
    if (!rc) rc = counter_address(flag, &addr);
    if (rc) return rc;
    /* GEQ is the cyclic (int32_t)(*addr - value) >= 0 of the device.h contract */
    return driver_check(wait_value32((CUstream)s->stream, addr, value, CU_STREAM_WAIT_VALUE_GEQ),
                        "cuStreamWaitValue32");
}

static int cuda_stream_write_value(void *stream, uint32_t *flag, uint32_t value) {
    cuda_stream *s = stream;
    CUdeviceptr addr;
    int rc = zoff_cuda_use_device(s->ordinal);
    if (!rc) rc = counter_address(flag, &addr);
    if (rc) return rc;
    /* the default flags fence the stream's earlier work (copies, kernels) before the write */
    return driver_check(
        write_value32((CUstream)s->stream, addr, value, CU_STREAM_WRITE_VALUE_DEFAULT),
        "cuStreamWriteValue32");
}

static int cuda_host_write_value(zoff_dev *dev, uint32_t *flag, uint32_t value) {
    (void)dev; /* mapped pinned memory: a stream's wait sees the store */
    __atomic_store_n(flag, value, __ATOMIC_RELEASE);
    return 0;
}

static int cuda_host_wait_value(zoff_dev *dev, const uint32_t *flag, uint32_t value) {
    (void)dev;
    /* Written by a stream over PCIe: nothing to block on, so poll with a growing back-off
     * (a few microseconds at first, at most 200 us between looks). */
    long ns = 2000;
    while ((int32_t)(__atomic_load_n(flag, __ATOMIC_ACQUIRE) - value) < 0) {
        struct timespec ts = {0, ns};
        nanosleep(&ts, NULL);
        if (ns < 200000) ns += ns / 2;
    }
    return 0;
}

/* --- copies ---------------------------------------------------------------------------- */

static int cuda_memcpy_async(void *stream, void *dst, const void *src, size_t bytes,
                             zoff_dev_copy_kind kind) {
    static const enum cudaMemcpyKind kinds[] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                                                cudaMemcpyDeviceToDevice, cudaMemcpyHostToHost};
    cuda_stream *s = stream;
    int rc = zoff_cuda_use_device(s->ordinal);
    return rc ? rc : CK(cudaMemcpyAsync(dst, src, bytes, kinds[kind], s->stream));
}

static int cuda_memset_async(void *stream, void *dst, int value, size_t bytes) {
    cuda_stream *s = stream;
    int rc = zoff_cuda_use_device(s->ordinal);
    return rc ? rc : CK(cudaMemsetAsync(dst, value, bytes, s->stream));
}

static int cuda_op_cast(void *stream, void *dst, zoff_dtype dst_type, const void *src,
                        zoff_dtype src_type, size_t n) {
    int rc = launch_begin(stream);
    return rc ? rc : zoff_cuda_launch_cast(stream, dst, dst_type, src, src_type, n);
}

static int cuda_op_scale(void *stream, void *x, zoff_dtype type, float alpha, size_t n) {
    int rc = launch_begin(stream);
    return rc ? rc : zoff_cuda_launch_scale(stream, x, type, alpha, n);
}

static int cuda_op_sumsq_nonfinite(void *stream, const void *x, zoff_dtype type, size_t n,
                                   float *out) {
    int rc = launch_begin(stream);
    return rc ? rc : zoff_cuda_launch_sumsq_nonfinite(stream, x, type, n, out);
}

/* model kernels: the launchers live in ops_<family>.cu */
static int cuda_op_gemm(void *stream, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                        const void *A, int lda, const void *B, int ldb, zoff_dtype ab_type,
                        float beta, void *C, zoff_dtype c_type, int ldc) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_gemm(stream, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                                      ab_type, beta, C, c_type, ldc);
}

static int cuda_op_bias_init(void *stream, void *out, zoff_dtype out_type, const void *bias,
                             zoff_dtype bias_type, const float *res, size_t N, int OC) {
    int rc = launch_begin(stream);
    return rc ? rc : zoff_cuda_launch_bias_init(stream, out, out_type, bias, bias_type, res, N, OC);
}

static int cuda_op_bias_grad(void *stream, void *dbias, zoff_dtype g_type, const void *dout,
                             zoff_dtype dout_type, size_t N, int OC) {
    int rc = launch_begin(stream);
    return rc ? rc : zoff_cuda_launch_bias_grad(stream, dbias, g_type, dout, dout_type, N, OC);
}

static int cuda_op_add(void *stream, float *out, const float *a, const float *b, size_t n) {
    int rc = launch_begin(stream);
    return rc ? rc : zoff_cuda_launch_add(stream, out, a, b, n);
}

static int cuda_op_layernorm_fwd(void *stream, void *out, zoff_dtype out_type, float *mean,
                                 float *rstd, const float *inp, const void *weight,
                                 const void *bias, zoff_dtype w_type, size_t N, int C) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_layernorm_fwd(stream, out, out_type, mean, rstd, inp, weight, bias,
                                               w_type, N, C);
}

static int cuda_op_layernorm_bwd(void *stream, float *dinp, void *dweight, void *dbias,
                                 zoff_dtype g_type, const float *dout, const float *inp,
                                 const void *weight, zoff_dtype w_type, const float *mean,
                                 const float *rstd, size_t N, int C) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_layernorm_bwd(stream, dinp, dweight, dbias, g_type, dout, inp,
                                               weight, w_type, mean, rstd, N, C);
}

static int cuda_op_gelu_fwd(void *stream, void *out, const void *inp, zoff_dtype type, size_t n) {
    int rc = launch_begin(stream);
    return rc ? rc : zoff_cuda_launch_gelu_fwd(stream, out, inp, type, n);
}

static int cuda_op_gelu_bwd(void *stream, void *dinp, const void *inp, const void *dout,
                            zoff_dtype type, size_t n) {
    int rc = launch_begin(stream);
    return rc ? rc : zoff_cuda_launch_gelu_bwd(stream, dinp, inp, dout, type, n);
}

static int cuda_op_attention_fwd(void *stream, float *out, float *att, const float *qkv, int B,
                                 int T, int C, int NH) {
    int rc = launch_begin(stream);
    return rc ? rc : zoff_cuda_launch_attention_fwd(stream, out, att, qkv, B, T, C, NH);
}

static int cuda_op_attention_bwd(void *stream, float *dqkv, float *scratch, const float *dout,
                                 const float *qkv, const float *att, int B, int T, int C, int NH) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_attention_bwd(stream, dqkv, scratch, dout, qkv, att, B, T, C, NH);
}

static int cuda_op_flash_attention_fwd(void *stream, void *out, float *lse, const void *q,
                                       const void *k, const void *v, zoff_dtype type,
                                       const int32_t *doc_start, const zoff_dev_attn_shape *shape) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_flash_attention_fwd(stream, out, lse, q, k, v, type, doc_start,
                                                     shape);
}

static int cuda_op_flash_attention_bwd(void *stream, void *dq, void *dk, void *dv, float *delta,
                                       const void *dout, const void *out, const float *lse,
                                       const void *q, const void *k, const void *v, zoff_dtype type,
                                       const int32_t *doc_start, const zoff_dev_attn_shape *shape) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_flash_attention_bwd(stream, dq, dk, dv, delta, dout, out, lse, q,
                                                     k, v, type, doc_start, shape);
}

static int cuda_op_softmax_xent_fwd(void *stream, float *probs, float *losses, const float *logits,
                                    const int32_t *targets, size_t N, int V) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_softmax_xent_fwd(stream, probs, losses, logits, targets, N, V);
}

static int cuda_op_softmax_xent_bwd(void *stream, float *dlogits, const float *probs,
                                    const int32_t *targets, float dloss, size_t N, int V) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_softmax_xent_bwd(stream, dlogits, probs, targets, dloss, N, V);
}

static int cuda_op_xent_fused(void *stream, float *losses, void *dlogits, zoff_dtype d_type,
                              const float *logits, const int32_t *targets, float dloss, size_t N,
                              int V) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_xent_fused(stream, losses, dlogits, d_type, logits, targets, dloss,
                                            N, V);
}

static int cuda_op_embedding_fwd(void *stream, float *out, const int32_t *tokens,
                                 const int32_t *pos, const void *wte, const void *wpe,
                                 zoff_dtype w_type, int B, int T, int C) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_embedding_fwd(stream, out, tokens, pos, wte, wpe, w_type, B, T, C);
}

static int cuda_op_embedding_bwd(void *stream, void *dwte, void *dwpe, zoff_dtype g_type,
                                 const float *dout, const int32_t *tokens, const int32_t *pos,
                                 int B, int T, int C) {
    int rc = launch_begin(stream);
    return rc ? rc
              : zoff_cuda_launch_embedding_bwd(stream, dwte, dwpe, g_type, dout, tokens, pos, B, T,
                                               C);
}

static int cuda_op_adamw(void *stream, float *param, const float *grad, float *m, float *v,
                         size_t n, const zoff_dev_adamw_args *args) {
    int rc = launch_begin(stream);
    return rc ? rc : zoff_cuda_launch_adamw(stream, param, grad, m, v, n, args);
}

/* Llama-family kernels: the launchers take the op table's arguments as they are */
static int cuda_op_rmsnorm_fwd(void *stream, void *out, zoff_dtype out_type, float *rstd,
                               const float *inp, const void *weight, zoff_dtype w_type, size_t N,
                               int C, float eps) {
    return zoff_cuda_launch_rmsnorm_fwd(stream, out, out_type, rstd, inp, weight, w_type, N, C,
                                        eps);
}

static int cuda_op_rmsnorm_bwd(void *stream, float *dinp, void *dweight, zoff_dtype g_type,
                               const float *dout, const float *inp, const void *weight,
                               zoff_dtype w_type, const float *rstd, size_t N, int C) {
    return zoff_cuda_launch_rmsnorm_bwd(stream, dinp, dweight, g_type, dout, inp, weight, w_type,
                                        rstd, N, C);
}

static int cuda_op_rope(void *stream, void *x, zoff_dtype type, size_t row_stride,
                        const int32_t *pos, const float *inv_freq, int B, int T, int NH, int HS,
                        bool backward) {
    return zoff_cuda_launch_rope(stream, x, type, row_stride, pos, inv_freq, B, T, NH, HS,
                                 backward);
}

static int cuda_op_swiglu_fwd(void *stream, void *out, const void *gate, const void *up,
                              zoff_dtype type, size_t n) {
    return zoff_cuda_launch_swiglu_fwd(stream, out, gate, up, type, n);
}

static int cuda_op_swiglu_bwd(void *stream, void *dgate, void *dup, const void *dout,
                              const void *gate, const void *up, zoff_dtype type, size_t n) {
    return zoff_cuda_launch_swiglu_bwd(stream, dgate, dup, dout, gate, up, type, n);
}

static const zoff_dev_iface cuda_iface = {
    .close = cuda_close,
    .synchronize = cuda_synchronize,
    .malloc = cuda_malloc,
    .free = cuda_free,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .stream_create = cuda_stream_create,
    .stream_destroy = cuda_stream_destroy,
    .stream_synchronize = cuda_stream_synchronize,
    .event_create = cuda_event_create,
    .event_destroy = cuda_event_destroy,
    .event_record = cuda_event_record,
    .stream_wait_event = cuda_stream_wait_event,
    .event_synchronize = cuda_event_synchronize,
    .event_query = cuda_event_query,
    .event_elapsed_ms = cuda_event_elapsed_ms,
    .launch_host_fn = cuda_launch_host_fn,
    .stream_wait_value = cuda_stream_wait_value,
    .stream_write_value = cuda_stream_write_value,
    .host_write_value = cuda_host_write_value,
    .host_wait_value = cuda_host_wait_value,
    .memcpy_async = cuda_memcpy_async,
    .memset_async = cuda_memset_async,
    .comm_create = zoff_cuda_comm_create,
    .comm_destroy = zoff_cuda_comm_destroy,
    .comm_allreduce = zoff_cuda_comm_allreduce,
    .comm_reduce_scatter = zoff_cuda_comm_reduce_scatter,
    .comm_allgather = zoff_cuda_comm_allgather,
    .comm_broadcast = zoff_cuda_comm_broadcast,
    .op_cast = cuda_op_cast,
    .op_scale = cuda_op_scale,
    .op_sumsq_nonfinite = cuda_op_sumsq_nonfinite,
    .op_gemm = cuda_op_gemm,
    .op_bias_init = cuda_op_bias_init,
    .op_bias_grad = cuda_op_bias_grad,
    .op_add = cuda_op_add,
    .op_layernorm_fwd = cuda_op_layernorm_fwd,
    .op_layernorm_bwd = cuda_op_layernorm_bwd,
    .op_gelu_fwd = cuda_op_gelu_fwd,
    .op_gelu_bwd = cuda_op_gelu_bwd,
    .op_attention_fwd = cuda_op_attention_fwd,
    .op_attention_bwd = cuda_op_attention_bwd,
    .op_flash_attention_fwd = cuda_op_flash_attention_fwd,
    .op_flash_attention_bwd = cuda_op_flash_attention_bwd,
    .op_softmax_xent_fwd = cuda_op_softmax_xent_fwd,
    .op_softmax_xent_bwd = cuda_op_softmax_xent_bwd,
    .op_xent_fused = cuda_op_xent_fused,
    .op_embedding_fwd = cuda_op_embedding_fwd,
    .op_embedding_bwd = cuda_op_embedding_bwd,
    .op_adamw = cuda_op_adamw,
    .op_rmsnorm_fwd = cuda_op_rmsnorm_fwd,
    .op_rmsnorm_bwd = cuda_op_rmsnorm_bwd,
    .op_rope = cuda_op_rope,
    .op_swiglu_fwd = cuda_op_swiglu_fwd,
    .op_swiglu_bwd = cuda_op_swiglu_bwd,
};

/* Blocking-sync scheduling: a host thread waiting in cudaStreamSynchronize or
 * cudaDeviceSynchronize sleeps instead of spinning on a core. Other flags are kept. */
static void set_blocking_sync(int ordinal) {
    unsigned flags = 0;
    cudaError_t err = cudaGetDeviceFlags(&flags);
    if (err == cudaSuccess) {
        flags &= cudaDeviceMapHost | cudaDeviceLmemResizeToMax | cudaDeviceSyncMemops;
        err = cudaSetDeviceFlags(flags | cudaDeviceScheduleBlockingSync);
    }
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        zoff_log(ZOFF_LOG_WARN, MOD,
                 "GPU %d: cannot select blocking synchronization (%s): host waits will spin",
                 ordinal, cudaGetErrorString(err));
    }
}

int zoff_dev_cuda_open(zoff_dev *dev) {
    int count = 0, rc = zoff_dev_cuda_gpu_count(&count);
    if (rc) return rc;
    int ord = dev->cfg.cuda_ordinal;
    if (ord < 0 || ord >= count)
        return zoff_fail(ZOFF_ENODEVICE, MOD, "CUDA device %d requested but %d present", ord,
                         count);
    zoff_dev_gpu_info info;
    if ((rc = zoff_dev_cuda_gpu_info(ord, &info))) return rc;
    pthread_once(&entry_once, load_entry_points);
    if (entry_rc) return zoff_fail(entry_rc, MOD, "%s", entry_detail);
    cuda_device *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->dev = dev;
    c->ordinal = ord;
    c->cc_major = info.cc_major;
    c->connections = connections_in_effect();
    pthread_mutex_init(&c->free_lock, NULL);
    pthread_mutex_init(&c->idle_lock, NULL);
    c->n_streams = 2; /* alloc_stream and free_stream */
    if ((rc = zoff_cuda_use_device(ord))) goto fail;
    set_blocking_sync(ord);

    int pools = 0;
    if ((rc = CK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, ord)))) goto fail;
    if (!pools) {
        rc = zoff_fail(ZOFF_ECUDA, MOD,
                       "GPU %d does not support stream-ordered memory pools "
                       "(cudaDevAttrMemoryPoolsSupported is 0), which zoff allocates from",
                       ord);
        goto fail;
    }
    /* zoff's own pool: its settings and its trimming touch no one else's allocations */
    struct cudaMemPoolProps props;
    memset(&props, 0, sizeof props);
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = ord;
    if ((rc = CK(cudaMemPoolCreate(&c->pool, &props)))) goto fail;
    uint64_t keep = UINT64_MAX; /* cache freed blocks for reuse; trimmed on OOM and at close */
    if ((rc = CK(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep))))
        goto fail;
    /* An allocation must not wait for pending frees (which wait for other streams' work):
     * a block is reused only once its free has completed. */
    int no = 0;
    if ((rc = CK(cudaMemPoolSetAttribute(c->pool, cudaMemPoolReuseAllowInternalDependencies, &no))))
        goto fail;
    if ((rc = CK(cudaStreamCreateWithFlags(&c->alloc_stream, cudaStreamNonBlocking)))) goto fail;
    if ((rc = CK(cudaStreamCreateWithFlags(&c->free_stream, cudaStreamNonBlocking)))) goto fail;
    if ((rc = CK(cudaEventCreateWithFlags(&c->free_fence, cudaEventDisableTiming)))) goto fail;

    size_t headroom = headroom_bytes(info.free_mem), avail = info.free_mem - headroom;
    if (dev->cfg.capacity == 0) {
        dev->cfg.capacity = avail;
    } else if (dev->cfg.capacity > avail) {
        zoff_log(ZOFF_LOG_WARN, MOD,
                 "capacity %zu bytes exceeds the GPU's free %zu less %zu kept for CUDA and "
                 "cuBLAS: capped at %zu",
                 dev->cfg.capacity, info.free_mem, headroom, avail);
        dev->cfg.capacity = avail;
    }
    dev->impl = c;
    dev->iface = &cuda_iface;
    snprintf(dev->name, sizeof dev->name, "%s (GPU %d, sm_%d%d, %.1f GiB)", info.name, ord,
             info.cc_major, info.cc_minor, (double)info.total_mem / (1u << 30));
    zoff_log(ZOFF_LOG_DEBUG, MOD,
             "GPU %d: capacity %zu bytes (%zu free, %zu headroom), %d hardware queues", ord,
             dev->cfg.capacity, info.free_mem, headroom, c->connections);
    return 0;
fail:
    if (c->free_fence) cudaEventDestroy(c->free_fence);
    if (c->free_stream) cudaStreamDestroy(c->free_stream);
    if (c->alloc_stream) cudaStreamDestroy(c->alloc_stream);
    if (c->pool) cudaMemPoolDestroy(c->pool);
    (void)cudaGetLastError();
    pthread_mutex_destroy(&c->free_lock);
    pthread_mutex_destroy(&c->idle_lock);
    free(c);
    return rc;
}
