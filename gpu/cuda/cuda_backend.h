/* Internals of the CUDA backend: the device and stream objects, the one error-checking helper,
 * and the kernel launchers that the .cu files export with C linkage. Each launcher enqueues on
 * the given stream and returns 0 or a zoff error (the CUDA error's text in the error detail).
 *
 * Threads: any thread may issue to a stream (one at a time per stream, as device.h says), so
 * every backend call that touches a stream, an event or memory first makes the stream's GPU
 * current on the calling thread (zoff_cuda_use_device): the engine's worker threads would
 * otherwise use GPU 0. */
#ifndef ZOFF_GPU_CUDA_BACKEND_H
#define ZOFF_GPU_CUDA_BACKEND_H

#include "gpu/device.h"
#include "zoff/zoff.h"

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Partial sums of a reduction need scratch space; each stream owns its own so that
 * reductions on different streams never share it. */
#define ZOFF_CUDA_REDUCE_BLOCKS 512
/* The scratch's size: the sum of squares uses its first 2 * ZOFF_CUDA_REDUCE_BLOCKS floats, the
 * column sums (bias and LayerNorm parameter gradients) up to all of it for their partial sums
 * (256 KiB per stream, allocated with the stream, never per call). */
#define ZOFF_CUDA_STREAM_SCRATCH_FLOATS (64 * 1024)

/* A stream of the CUDA backend. CUDA assigns each new stream to one of its hardware queues
 * (CUDA_DEVICE_MAX_CONNECTIONS) in turn, and a stream waiting on a counter blocks its queue:
 * two live streams that share a queue can deadlock when one waits for the other. So a
 * destroyed stream is parked, idle, on its device and the next stream created takes it: the
 * device never makes more CUDA streams than it has live at once, and those get distinct
 * queues as long as they are no more than the queues. A parked stream keeps its scratch and
 * cuBLAS handle; only close destroys them (cublasDestroy and cudaFree synchronize the whole
 * device, which must never happen while a stream waits on a counter). */
typedef struct cuda_stream {
    cudaStream_t stream;
    float *scratch; /* (ZOFF_CUDA_STREAM_SCRATCH_FLOATS) device floats */
    int ordinal;
    void *cublas;           /* cublasHandle_t bound to this stream, made at its first GEMM */
    void *cublas_workspace; /* its workspace, from the device's pool */
    struct cuda_device *owner;
    struct cuda_stream *next; /* in owner->idle while parked */
} cuda_stream;

typedef struct cuda_device {
    zoff_dev *dev;
    int ordinal;
    int cc_major;
    cudaMemPool_t pool;        /* zoff's own stream-ordered pool on this GPU */
    cudaStream_t alloc_stream; /* orders pool allocations (synchronized by each malloc) */
    cudaStream_t free_stream;  /* orders frees after the work issued before them */
    cudaEvent_t free_fence;    /* recorded on each stream by a free, waited on by free_stream */
    pthread_mutex_t free_lock; /* serializes frees (free_fence, free_stream) */
    pthread_mutex_t idle_lock; /* guards idle */
    cuda_stream *idle;         /* parked streams */
    int connections;           /* CUDA_DEVICE_MAX_CONNECTIONS in effect */
    int n_streams;             /* CUDA streams made, parked ones included (dev->lock) */
} cuda_device;

/* The one checking helper for CUDA runtime statuses. 0 for cudaSuccess; -EAGAIN, silently,
 * for cudaErrorNotReady (a query that found work pending). Any other error is consumed from
 * the runtime's per-thread "last error" (so the next launch's cudaGetLastError() does not
 * report it again) and becomes ZOFF_EDEVICE_OOM, ZOFF_ENODEVICE or ZOFF_ECUDA with
 * "what: message (name)" as detail; a sticky error (a kernel fault: the context is lost and
 * every later call fails) is said to be one. */
int zoff_cuda_check(cudaError_t err, const char *what);
/* Whether err leaves the CUDA context unusable until the process restarts. */
int zoff_cuda_error_is_sticky(cudaError_t err);
/* Makes GPU `ordinal` current on the calling thread. */
int zoff_cuda_use_device(int ordinal);
/* Device memory from the device's pool, ready for use on any stream when this returns. */
int zoff_cuda_pool_alloc(cuda_device *c, size_t bytes, void **ptr);
/* Returns memory to the pool once the work issued so far on every stream has completed. */
int zoff_cuda_pool_free(cuda_device *c, void *ptr);
/* The workspace cuBLAS gets per handle: 32 MiB from Hopper on, 4 MiB before (NVIDIA's
 * recommendation); it lies in the headroom kept below the device's capacity. */
size_t zoff_cuda_blas_workspace_bytes(const cuda_device *c);

/* Collectives over NCCL (cuda_comm.c); the dispatcher's zoff_dev_iface entries. */
int zoff_cuda_comm_create(zoff_dev *dev, zoff_dist *dist, void **comm);
void zoff_cuda_comm_destroy(zoff_dev *dev, void *comm);
int zoff_cuda_comm_allreduce(void *stream, void *comm, const void *send, void *recv, size_t count,
                             zoff_dtype type);
int zoff_cuda_comm_reduce_scatter(void *stream, void *comm, const void *send, void *recv,
                                  size_t recv_count, zoff_dtype type);
int zoff_cuda_comm_allgather(void *stream, void *comm, const void *send, void *recv,
                             size_t send_count, zoff_dtype type);
int zoff_cuda_comm_broadcast(void *stream, void *comm, void *buf, size_t count, zoff_dtype type,
                             int root);

int zoff_cuda_launch_cast(cuda_stream *s, void *dst, zoff_dtype dst_type, const void *src,
                          zoff_dtype src_type, size_t n);
int zoff_cuda_launch_scale(cuda_stream *s, void *x, zoff_dtype type, float alpha, size_t n);
int zoff_cuda_launch_sumsq_nonfinite(cuda_stream *s, const void *x, zoff_dtype type, size_t n,
                                     float *out);

/* cuBLAS (ops_gemm.cu): create makes s's handle, bound to s with a workspace from the pool
 * (so cuBLAS allocates nothing lazily); destroy, at close, destroys it and frees that. */
int zoff_cuda_cublas_create(cuda_stream *s);
void zoff_cuda_cublas_destroy(cuda_stream *s);

/* the model kernels, one .cu file per family */
int zoff_cuda_launch_gemm(cuda_stream *s, bool trans_a, bool trans_b, int M, int N, int K,
                          float alpha, const void *A, int lda, const void *B, int ldb,
                          zoff_dtype ab_type, float beta, void *C, zoff_dtype c_type, int ldc);
int zoff_cuda_launch_add(cuda_stream *s, float *out, const float *a, const float *b, size_t n);
int zoff_cuda_launch_bias_init(cuda_stream *s, void *out, zoff_dtype out_type, const void *bias,
                               zoff_dtype bias_type, const float *res, size_t N, int OC);
int zoff_cuda_launch_bias_grad(cuda_stream *s, void *dbias, zoff_dtype g_type, const void *dout,
                               zoff_dtype dout_type, size_t N, int OC);
int zoff_cuda_launch_gelu_fwd(cuda_stream *s, void *out, const void *inp, zoff_dtype type,
                              size_t n);
int zoff_cuda_launch_gelu_bwd(cuda_stream *s, void *dinp, const void *inp, const void *dout,
                              zoff_dtype type, size_t n);
int zoff_cuda_launch_layernorm_fwd(cuda_stream *s, void *out, zoff_dtype out_type, float *mean,
                                   float *rstd, const float *inp, const void *weight,
                                   const void *bias, zoff_dtype w_type, size_t N, int C);
int zoff_cuda_launch_layernorm_bwd(cuda_stream *s, float *dinp, void *dweight, void *dbias,
                                   zoff_dtype g_type, const float *dout, const float *inp,
                                   const void *weight, zoff_dtype w_type, const float *mean,
                                   const float *rstd, size_t N, int C);
int zoff_cuda_launch_attention_fwd(cuda_stream *s, float *out, float *att, const float *qkv, int B,
                                   int T, int C, int NH);
int zoff_cuda_launch_attention_bwd(cuda_stream *s, float *dqkv, float *scratch, const float *dout,
                                   const float *qkv, const float *att, int B, int T, int C, int NH);
int zoff_cuda_launch_flash_attention_fwd(cuda_stream *s, void *out, float *lse, const void *q,
                                         const void *k, const void *v, zoff_dtype type,
                                         const int32_t *doc_start,
                                         const zoff_dev_attn_shape *shape);
int zoff_cuda_launch_flash_attention_bwd(cuda_stream *s, void *dq, void *dk, void *dv, float *delta,
                                         const void *dout, const void *out, const float *lse,
                                         const void *q, const void *k, const void *v,
                                         zoff_dtype type, const int32_t *doc_start,
                                         const zoff_dev_attn_shape *shape);
int zoff_cuda_launch_softmax_xent_fwd(cuda_stream *s, float *probs, float *losses,
                                      const float *logits, const int32_t *targets, size_t N, int V);
int zoff_cuda_launch_softmax_xent_bwd(cuda_stream *s, float *dlogits, const float *probs,
                                      const int32_t *targets, float dloss, size_t N, int V);
int zoff_cuda_launch_xent_fused(cuda_stream *s, float *losses, void *dlogits, zoff_dtype d_type,
                                const float *logits, const int32_t *targets, float dloss, size_t N,
                                int V);
int zoff_cuda_launch_embedding_fwd(cuda_stream *s, float *out, const int32_t *tokens,
                                   const int32_t *pos, const void *wte, const void *wpe,
                                   zoff_dtype w_type, int B, int T, int C);
int zoff_cuda_launch_embedding_bwd(cuda_stream *s, void *dwte, void *dwpe, zoff_dtype g_type,
                                   const float *dout, const int32_t *tokens, const int32_t *pos,
                                   int B, int T, int C);
/* Column sums of LayerNorm's parameter gradients (ops_reduce.cu, with the bias gradient's):
 * dw[c] += sum over rows of (inp[r,c] - mean[r]) * rstd[r] * dout[r,c], db[c] += sum of dout[r,c].
 * Tiles of rows reduce in parallel into partial sums in the stream's scratch, then one pass per
 * column adds them in a fixed order and rounds once: deterministic, and the whole GPU works. */
int zoff_cuda_launch_colsum_ln(cuda_stream *s, void *dw, void *db, zoff_dtype g_type,
                               const float *dout, const float *inp, const float *mean,
                               const float *rstd, size_t N, int C);
/* Llama-family kernels (ops_rmsnorm.cu, ops_rope.cu, ops_swiglu.cu) */
int zoff_cuda_launch_rmsnorm_fwd(cuda_stream *s, void *out, zoff_dtype out_type, float *rstd,
                                 const float *inp, const void *weight, zoff_dtype w_type, size_t N,
                                 int C, float eps);
int zoff_cuda_launch_rmsnorm_bwd(cuda_stream *s, float *dinp, void *dweight, zoff_dtype g_type,
                                 const float *dout, const float *inp, const void *weight,
                                 zoff_dtype w_type, const float *rstd, size_t N, int C);
int zoff_cuda_launch_rope(cuda_stream *s, void *x, zoff_dtype type, size_t row_stride,
                          const int32_t *pos, const float *inv_freq, int B, int T, int NH, int HS,
                          bool backward);
int zoff_cuda_launch_swiglu_fwd(cuda_stream *s, void *out, const void *gate, const void *up,
                                zoff_dtype type, size_t n);
int zoff_cuda_launch_swiglu_bwd(cuda_stream *s, void *dgate, void *dup, const void *dout,
                                const void *gate, const void *up, zoff_dtype type, size_t n);
int zoff_cuda_launch_adamw(cuda_stream *s, float *param, const float *grad, float *m, float *v,
                           size_t n, const zoff_dev_adamw_args *args);

#ifdef __cplusplus
}
#endif
#endif
