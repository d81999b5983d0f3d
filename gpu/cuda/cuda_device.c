/* CUDA backend: streams, events, memory and copies on the CUDA runtime API.
 * Every CUDA status is checked and turned into a zoff error carrying CUDA's message.
 * Device memory comes from the device's default memory pool (cudaMallocAsync) with a
 * release threshold of "never", so freed blocks are cached for reuse like a caching
 * allocator; the dispatcher keeps the capacity and used/peak counters. Each call that
 * creates or allocates first makes the configured GPU current on the calling thread. */
#include "gpu/cuda/cuda_backend.h"
#include "gpu/device_impl.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MOD "cuda"

typedef struct cuda_device {
    int ordinal;
    cudaStream_t alloc_stream; /* orders pool allocations and frees */
} cuda_device;

int zoff_cuda_check(cudaError_t err, const char *what) {
    if (err == cudaSuccess) return 0;
    int code = err == cudaErrorMemoryAllocation                                   ? ZOFF_EDEVICE_OOM
               : (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) ? ZOFF_ENODEVICE
                                                                                  : ZOFF_ECUDA;
    return zoff_fail(code, MOD, "%s: %s (%s)", what, cudaGetErrorString(err),
                     cudaGetErrorName(err));
}

#define CK(call) zoff_cuda_check((call), #call)

int zoff_dev_cuda_gpu_count(int *count) {
    *count = 0;
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* clear the (non-sticky) error so later calls start clean */
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
    if ((rc = CK(cudaSetDevice(ordinal)))) return rc;
    size_t free_b = 0, total_b = 0;
    rc = CK(cudaMemGetInfo(&free_b, &total_b));
    out->free_mem = free_b;
    cudaSetDevice(prev);
    return rc;
}

static int use_gpu(zoff_dev *dev) {
    return CK(cudaSetDevice(((cuda_device *)dev->impl)->ordinal));
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
        CK(cudaStreamDestroy(c->alloc_stream));
    }
    free(c);
}

static int cuda_malloc(zoff_dev *dev, size_t bytes, void **ptr) {
    cuda_device *c = dev->impl;
    int rc = use_gpu(dev);
    if (rc) return rc;
    rc = CK(cudaMallocAsync(ptr, bytes, c->alloc_stream));
    if (rc == 0) rc = CK(cudaStreamSynchronize(c->alloc_stream));
    return rc;
}

static int cuda_free(zoff_dev *dev, void *ptr) {
    cuda_device *c = dev->impl;
    int rc = use_gpu(dev);
    if (rc) return rc;
    /* As cudaFree: work on any stream that may still use the block finishes first. */
    if ((rc = CK(cudaDeviceSynchronize()))) return rc;
    if ((rc = CK(cudaFreeAsync(ptr, c->alloc_stream)))) return rc;
    return CK(cudaStreamSynchronize(c->alloc_stream));
}

static int cuda_host_alloc(zoff_dev *dev, size_t bytes, void **ptr) {
    int rc = use_gpu(dev);
    return rc ? rc : CK(cudaHostAlloc(ptr, bytes, cudaHostAllocPortable | cudaHostAllocMapped));
}

static int cuda_host_free(zoff_dev *dev, void *ptr) {
    (void)dev;
    return CK(cudaFreeHost(ptr));
}

static int cuda_stream_create(zoff_dev *dev, void **impl) {
    cuda_stream *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->ordinal = ((cuda_device *)dev->impl)->ordinal;
    int rc = use_gpu(dev);
    if (!rc) rc = CK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    if (!rc) {
        rc = CK(cudaMalloc((void **)&s->scratch, ZOFF_CUDA_STREAM_SCRATCH_FLOATS * sizeof(float)));
        if (rc) cudaStreamDestroy(s->stream);
    }

    if (rc) {
        free(s);
        return rc;
    }
    *impl = s;
    return 0;
}

static int cuda_stream_destroy(zoff_dev *dev, void *impl) {
    cuda_stream *s = impl;
    int rc = use_gpu(dev);
    if (!rc) rc = CK(cudaStreamSynchronize(s->stream));
    zoff_cuda_cublas_destroy(s);
    int rc2 = CK(cudaFree(s->scratch));
    int rc3 = CK(cudaStreamDestroy(s->stream));
    free(s);
    return rc ? rc : rc2 ? rc2 : rc3;
}

static int cuda_stream_synchronize(void *impl) {
    return CK(cudaStreamSynchronize(((cuda_stream *)impl)->stream));
}

static int cuda_event_create(zoff_dev *dev, void **impl) {
    int rc = use_gpu(dev);
    return rc ? rc : CK(cudaEventCreateWithFlags((cudaEvent_t *)impl, cudaEventDefault));
}

static int cuda_event_destroy(void *impl) {
    int rc = CK(cudaEventSynchronize((cudaEvent_t)impl));
    int rc2 = CK(cudaEventDestroy((cudaEvent_t)impl));
    return rc ? rc : rc2;
}

static int cuda_event_record(void *event, void *stream) {
    return CK(cudaEventRecord((cudaEvent_t)event, ((cuda_stream *)stream)->stream));
}

static int cuda_stream_wait_event(void *stream, void *event) {
    return CK(cudaStreamWaitEvent(((cuda_stream *)stream)->stream, (cudaEvent_t)event, 0));
}

static int cuda_event_synchronize(void *event) {
    return CK(cudaEventSynchronize((cudaEvent_t)event));
}

static int cuda_event_query(void *event) {
    cudaError_t err = cudaEventQuery((cudaEvent_t)event);
    if (err == cudaErrorNotReady) return -EAGAIN;
    return zoff_cuda_check(err, "cudaEventQuery");
}

static int cuda_event_elapsed_ms(void *start, void *end, float *ms) {
    return CK(cudaEventElapsedTime(ms, (cudaEvent_t)start, (cudaEvent_t)end));
}

static int cuda_launch_host_fn(void *stream, zoff_dev_host_fn fn, void *arg) {
    return CK(cudaLaunchHostFunc(((cuda_stream *)stream)->stream, fn, arg));
}

static int cuda_stream_wait_value(void *stream, const uint32_t *flag, uint32_t value) {
    return zoff_cuda_launch_wait_value(stream, flag, value);
}

static int cuda_stream_write_value(void *stream, uint32_t *flag, uint32_t value) {
    return zoff_cuda_launch_write_value(stream, flag, value);
}

static int cuda_host_write_value(zoff_dev *dev, uint32_t *flag, uint32_t value) {
    (void)dev; /* mapped pinned memory: the polling kernel sees the store */
    __atomic_store_n(flag, value, __ATOMIC_RELEASE);
    return 0;
}

static int cuda_host_wait_value(zoff_dev *dev, const uint32_t *flag, uint32_t value) {
    (void)dev;
    /* Written by a kernel over PCIe: nothing to block on, so poll with a growing back-off
     * (a few microseconds at first, at most 200 us between looks). */
    long ns = 2000;
    while ((int32_t)(__atomic_load_n(flag, __ATOMIC_ACQUIRE) - value) < 0) {
        struct timespec ts = {0, ns};
        nanosleep(&ts, NULL);
        if (ns < 200000) ns += ns / 2;
    }
    return 0;
}

static int cuda_memcpy_async(void *stream, void *dst, const void *src, size_t bytes,
                             zoff_dev_copy_kind kind) {
    static const enum cudaMemcpyKind kinds[] = {cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                                                cudaMemcpyDeviceToDevice, cudaMemcpyHostToHost};
    return CK(cudaMemcpyAsync(dst, src, bytes, kinds[kind], ((cuda_stream *)stream)->stream));
}

static int cuda_memset_async(void *stream, void *dst, int value, size_t bytes) {
    return CK(cudaMemsetAsync(dst, value, bytes, ((cuda_stream *)stream)->stream));
}

static int cuda_op_cast(void *stream, void *dst, zoff_dtype dst_type, const void *src,
                        zoff_dtype src_type, size_t n) {
    return zoff_cuda_launch_cast(stream, dst, dst_type, src, src_type, n);
}

static int cuda_op_scale(void *stream, void *x, zoff_dtype type, float alpha, size_t n) {
    return zoff_cuda_launch_scale(stream, x, type, alpha, n);
}

static int cuda_op_sumsq_nonfinite(void *stream, const void *x, zoff_dtype type, size_t n,
                                   float *out) {
    return zoff_cuda_launch_sumsq_nonfinite(stream, x, type, n, out);
}

/* model kernels: the launchers live in ops_<family>.cu */
static int cuda_op_gemm(void *stream, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                        const void *A, int lda, const void *B, int ldb, zoff_dtype ab_type,
                        float beta, void *C, zoff_dtype c_type, int ldc) {
    return zoff_cuda_launch_gemm(stream, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, ab_type,
                                 beta, C, c_type, ldc);
}

static int cuda_op_bias_add(void *stream, void *out, zoff_dtype out_type, const void *bias,
                            zoff_dtype bias_type, size_t N, int OC) {
    return zoff_cuda_launch_bias_add(stream, out, out_type, bias, bias_type, N, OC);
}

static int cuda_op_bias_grad(void *stream, void *dbias, zoff_dtype g_type, const void *dout,
                             zoff_dtype dout_type, size_t N, int OC) {
    return zoff_cuda_launch_bias_grad(stream, dbias, g_type, dout, dout_type, N, OC);
}

static int cuda_op_add(void *stream, float *out, const float *a, const float *b, size_t n) {
    return zoff_cuda_launch_add(stream, out, a, b, n);
}

static int cuda_op_layernorm_fwd(void *stream, void *out, zoff_dtype out_type, float *mean,
                                 float *rstd, const float *inp, const void *weight,
                                 const void *bias, zoff_dtype w_type, size_t N, int C) {
    return zoff_cuda_launch_layernorm_fwd(stream, out, out_type, mean, rstd, inp, weight, bias,
                                          w_type, N, C);
}

static int cuda_op_layernorm_bwd(void *stream, float *dinp, void *dweight, void *dbias,
                                 zoff_dtype g_type, const float *dout, const float *inp,
                                 const void *weight, zoff_dtype w_type, const float *mean,
                                 const float *rstd, size_t N, int C) {
    return zoff_cuda_launch_layernorm_bwd(stream, dinp, dweight, dbias, g_type, dout, inp, weight,
                                          w_type, mean, rstd, N, C);
}

static int cuda_op_gelu_fwd(void *stream, void *out, const void *inp, zoff_dtype type, size_t n) {
    return zoff_cuda_launch_gelu_fwd(stream, out, inp, type, n);
}

static int cuda_op_gelu_bwd(void *stream, void *dinp, const void *inp, const void *dout,
                            zoff_dtype type, size_t n) {
    return zoff_cuda_launch_gelu_bwd(stream, dinp, inp, dout, type, n);
}

static int cuda_op_attention_fwd(void *stream, float *out, float *att, const float *qkv, int B,
                                 int T, int C, int NH) {
    return zoff_cuda_launch_attention_fwd(stream, out, att, qkv, B, T, C, NH);
}

static int cuda_op_attention_bwd(void *stream, float *dqkv, float *scratch, const float *dout,
                                 const float *qkv, const float *att, int B, int T, int C, int NH) {
    return zoff_cuda_launch_attention_bwd(stream, dqkv, scratch, dout, qkv, att, B, T, C, NH);
}

static int cuda_op_flash_attention_fwd(void *stream, void *out, float *lse, const void *q,
                                       const void *k, const void *v, zoff_dtype type,
                                       const int32_t *doc_start, const zoff_dev_attn_shape *shape) {
    return zoff_cuda_launch_flash_attention_fwd(stream, out, lse, q, k, v, type, doc_start, shape);
}

static int cuda_op_flash_attention_bwd(void *stream, void *dq, void *dk, void *dv, float *delta,
                                       const void *dout, const void *out, const float *lse,
                                       const void *q, const void *k, const void *v, zoff_dtype type,
                                       const int32_t *doc_start, const zoff_dev_attn_shape *shape) {
    return zoff_cuda_launch_flash_attention_bwd(stream, dq, dk, dv, delta, dout, out, lse, q, k, v,
                                                type, doc_start, shape);
}

static int cuda_op_softmax_xent_fwd(void *stream, float *probs, float *losses, const float *logits,
                                    const int32_t *targets, size_t N, int V) {
    return zoff_cuda_launch_softmax_xent_fwd(stream, probs, losses, logits, targets, N, V);
}

static int cuda_op_softmax_xent_bwd(void *stream, float *dlogits, const float *probs,
                                    const int32_t *targets, float dloss, size_t N, int V) {
    return zoff_cuda_launch_softmax_xent_bwd(stream, dlogits, probs, targets, dloss, N, V);
}

static int cuda_op_xent_fused(void *stream, float *losses, void *dlogits, zoff_dtype d_type,
                              const float *logits, const int32_t *targets, float dloss, size_t N,
                              int V) {
    return zoff_cuda_launch_xent_fused(stream, losses, dlogits, d_type, logits, targets, dloss, N,
                                       V);
}

static int cuda_op_embedding_fwd(void *stream, float *out, const int32_t *tokens,
                                 const int32_t *pos, const void *wte, const void *wpe,
                                 zoff_dtype w_type, int B, int T, int C) {
    return zoff_cuda_launch_embedding_fwd(stream, out, tokens, pos, wte, wpe, w_type, B, T, C);
}

static int cuda_op_embedding_bwd(void *stream, void *dwte, void *dwpe, zoff_dtype g_type,
                                 const float *dout, const int32_t *tokens, const int32_t *pos,
                                 int B, int T, int C) {
    return zoff_cuda_launch_embedding_bwd(stream, dwte, dwpe, g_type, dout, tokens, pos, B, T, C);
}

static int cuda_op_adamw(void *stream, float *param, const float *grad, float *m, float *v,
                         size_t n, const zoff_dev_adamw_args *args) {
    return zoff_cuda_launch_adamw(stream, param, grad, m, v, n, args);
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
    .op_cast = cuda_op_cast,
    .op_scale = cuda_op_scale,
    .op_sumsq_nonfinite = cuda_op_sumsq_nonfinite,
    .op_gemm = cuda_op_gemm,
    .op_bias_add = cuda_op_bias_add,
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
};

int zoff_dev_cuda_open(zoff_dev *dev) {
    int count = 0, rc = zoff_dev_cuda_gpu_count(&count);
    if (rc) return rc;
    int ord = dev->cfg.cuda_ordinal;
    if (ord < 0 || ord >= count)
        return zoff_fail(ZOFF_ENODEVICE, MOD, "CUDA device %d requested but %d present", ord,
                         count);
    zoff_dev_gpu_info info;
    if ((rc = zoff_dev_cuda_gpu_info(ord, &info))) return rc;
    cuda_device *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->ordinal = ord;
    if ((rc = CK(cudaSetDevice(ord)))) goto fail;
    if ((rc = CK(cudaStreamCreateWithFlags(&c->alloc_stream, cudaStreamNonBlocking)))) goto fail;
    cudaMemPool_t pool;
    if ((rc = CK(cudaDeviceGetDefaultMemPool(&pool, ord)))) goto fail_stream;
    uint64_t keep = UINT64_MAX; /* never return freed blocks to the driver: cache them */
    if ((rc = CK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep))))
        goto fail_stream;
    if (dev->cfg.capacity == 0 || dev->cfg.capacity > info.free_mem) {
        if (dev->cfg.capacity > info.free_mem)
            zoff_log(ZOFF_LOG_WARN, MOD, "capacity %zu bytes exceeds the GPU's free %zu: capped",
                     dev->cfg.capacity, info.free_mem);
        dev->cfg.capacity = info.free_mem;
    }
    dev->impl = c;
    dev->iface = &cuda_iface;
    snprintf(dev->name, sizeof dev->name, "%s (GPU %d, sm_%d%d, %.1f GiB)", info.name, ord,
             info.cc_major, info.cc_minor, (double)info.total_mem / (1u << 30));
    return 0;
fail_stream:
    cudaStreamDestroy(c->alloc_stream);
fail:
    free(c);
    return rc;
}
