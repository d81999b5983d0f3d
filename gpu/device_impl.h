/* Internals of the device layer shared by the dispatcher (device.c) and the backends.
 *
 * The dispatcher owns what is common to every backend: argument checks, the capacity
 * limit and memory counters, the pointer->size map of live allocations, and the lists of
 * live streams and events (so that close can reclaim them). A backend fills a
 * zoff_dev_iface table, ggml-backend style, and sees only its own `impl` pointers.
 */
#ifndef ZOFF_GPU_DEVICE_IMPL_H
#define ZOFF_GPU_DEVICE_IMPL_H

#include "gpu/device.h"
#include "gpu/ptr_map.h"

#include <pthread.h>

typedef struct zoff_dev_iface {
    void (*close)(zoff_dev *dev);
    int (*synchronize)(zoff_dev *dev);
    int (*malloc)(zoff_dev *dev, size_t bytes, void **ptr);
    int (*free)(zoff_dev *dev, void *ptr);
    int (*host_alloc)(zoff_dev *dev, size_t bytes, void **ptr);
    int (*host_free)(zoff_dev *dev, void *ptr);

    int (*stream_create)(zoff_dev *dev, void **impl);
    int (*stream_destroy)(zoff_dev *dev, void *impl);
    int (*stream_synchronize)(void *impl);
    int (*event_create)(zoff_dev *dev, void **impl);
    int (*event_destroy)(void *impl);
    int (*event_record)(void *event, void *stream);
    int (*stream_wait_event)(void *stream, void *event);
    int (*event_synchronize)(void *event);
    int (*event_query)(void *event);
    int (*event_elapsed_ms)(void *start, void *end, float *ms);
    int (*launch_host_fn)(void *stream, zoff_dev_host_fn fn, void *arg);
    int (*stream_wait_value)(void *stream, const uint32_t *flag, uint32_t value);
    int (*stream_write_value)(void *stream, uint32_t *flag, uint32_t value);
    int (*host_write_value)(zoff_dev *dev, uint32_t *flag, uint32_t value);
    int (*host_wait_value)(zoff_dev *dev, const uint32_t *flag, uint32_t value);
    int (*memcpy_async)(void *stream, void *dst, const void *src, size_t bytes,
                        zoff_dev_copy_kind kind);
    int (*memset_async)(void *stream, void *dst, int value, size_t bytes);

    /* collectives: made only for worlds of more than one rank (the dispatcher turns a world of
     * one into copies); arguments validated, `comm` is the backend's communicator */
    int (*comm_create)(zoff_dev *dev, zoff_dist *dist, void **comm);
    void (*comm_destroy)(zoff_dev *dev, void *comm);
    int (*comm_allreduce)(void *stream, void *comm, const void *send, void *recv, size_t count,
                          zoff_dtype type);
    int (*comm_reduce_scatter)(void *stream, void *comm, const void *send, void *recv,
                               size_t recv_count, zoff_dtype type);
    int (*comm_allgather)(void *stream, void *comm, const void *send, void *recv, size_t send_count,
                          zoff_dtype type);
    int (*comm_broadcast)(void *stream, void *comm, void *buf, size_t count, zoff_dtype type,
                          int root);

    /* kernels (the op table); arguments already validated by the dispatcher */
    int (*op_cast)(void *stream, void *dst, zoff_dtype dst_type, const void *src,
                   zoff_dtype src_type, size_t n);
    int (*op_scale)(void *stream, void *x, zoff_dtype type, float alpha, size_t n);
    int (*op_sumsq_nonfinite)(void *stream, const void *x, zoff_dtype type, size_t n, float *out);
    int (*op_gemm)(void *stream, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                   const void *A, int lda, const void *B, int ldb, zoff_dtype ab_type, float beta,
                   void *C, zoff_dtype c_type, int ldc);
    int (*op_bias_init)(void *stream, void *out, zoff_dtype out_type, const void *bias,
                        zoff_dtype bias_type, const float *res, size_t N, int OC);
    int (*op_bias_grad)(void *stream, void *dbias, zoff_dtype g_type, const void *dout,
                        zoff_dtype dout_type, size_t N, int OC);
    int (*op_add)(void *stream, float *out, const float *a, const float *b, size_t n);
    int (*op_layernorm_fwd)(void *stream, void *out, zoff_dtype out_type, float *mean, float *rstd,
                            const float *inp, const void *weight, const void *bias,
                            zoff_dtype w_type, size_t N, int C);
    int (*op_layernorm_bwd)(void *stream, float *dinp, void *dweight, void *dbias,
                            zoff_dtype g_type, const float *dout, const float *inp,
                            const void *weight, zoff_dtype w_type, const float *mean,
                            const float *rstd, size_t N, int C);
    int (*op_gelu_fwd)(void *stream, void *out, const void *inp, zoff_dtype type, size_t n);
    int (*op_gelu_bwd)(void *stream, void *dinp, const void *inp, const void *dout,
                       zoff_dtype type, size_t n);
    int (*op_attention_fwd)(void *stream, float *out, float *att, const float *qkv, int B, int T,
                            int C, int NH);
    int (*op_attention_bwd)(void *stream, float *dqkv, float *scratch, const float *dout,
                            const float *qkv, const float *att, int B, int T, int C, int NH);
    int (*op_flash_attention_fwd)(void *stream, void *out, float *lse, const void *q,
                                  const void *k, const void *v, zoff_dtype type,
                                  const int32_t *doc_start, const zoff_dev_attn_shape *shape);
    int (*op_flash_attention_bwd)(void *stream, void *dq, void *dk, void *dv, float *delta,
                                  const void *dout, const void *out, const float *lse,
                                  const void *q, const void *k, const void *v, zoff_dtype type,
                                  const int32_t *doc_start, const zoff_dev_attn_shape *shape);
    int (*op_softmax_xent_fwd)(void *stream, float *probs, float *losses, const float *logits,
                               const int32_t *targets, size_t N, int V);
    int (*op_softmax_xent_bwd)(void *stream, float *dlogits, const float *probs,
                               const int32_t *targets, float dloss, size_t N, int V);
    int (*op_xent_fused)(void *stream, float *losses, void *dlogits, zoff_dtype d_type,
                         const float *logits, const int32_t *targets, float dloss, size_t N,
                         int V);
    int (*op_embedding_fwd)(void *stream, float *out, const int32_t *tokens, const int32_t *pos,
                            const void *wte, const void *wpe, zoff_dtype w_type, int B, int T,
                            int C);
    int (*op_embedding_bwd)(void *stream, void *dwte, void *dwpe, zoff_dtype g_type,
                            const float *dout, const int32_t *tokens, const int32_t *pos, int B,
                            int T, int C);
    int (*op_rmsnorm_fwd)(void *stream, void *out, zoff_dtype out_type, float *rstd,
                          const float *inp, const void *weight, zoff_dtype w_type, size_t N, int C,
                          float eps);
    int (*op_rmsnorm_bwd)(void *stream, float *dinp, void *dweight, zoff_dtype g_type,
                          const float *dout, const float *inp, const void *weight,
                          zoff_dtype w_type, const float *rstd, size_t N, int C);
    int (*op_rope)(void *stream, void *x, zoff_dtype type, size_t row_stride, const int32_t *pos,
                   const float *inv_freq, int B, int T, int NH, int HS, bool backward);
    int (*op_swiglu_fwd)(void *stream, void *out, const void *gate, const void *up, zoff_dtype type,
                         size_t n);
    int (*op_swiglu_bwd)(void *stream, void *dgate, void *dup, const void *dout, const void *gate,
                         const void *up, zoff_dtype type, size_t n);
    int (*op_adamw)(void *stream, float *param, const float *grad, float *m, float *v, size_t n,
                    const zoff_dev_adamw_args *args);
} zoff_dev_iface;

struct zoff_dev_stream {
    zoff_dev *dev;
    void *impl;
    zoff_dev_stream *next; /* in dev->streams */
};

struct zoff_dev_event {
    zoff_dev *dev;
    void *impl;
    zoff_dev_event *next; /* in dev->events */
};

/* A device communicator: the dispatcher's view. impl is the backend's, NULL for a world of
 * one. */
struct zoff_dev_comm {
    zoff_dev *dev;
    zoff_dist *dist;
    int rank, size;
    void *impl;
};

struct zoff_dev {
    const zoff_dev_iface *iface;
    zoff_dev_kind kind;
    zoff_dev_config cfg;
    char name[384];
    void *impl;

    pthread_mutex_t lock; /* guards everything below */
    zoff_dev_mem_stats stats;
    zoff_ptr_map device_allocs; /* ptr -> bytes */
    zoff_ptr_map pinned_allocs;
    zoff_dev_stream *streams;
    zoff_dev_event *events;
    zoff_dev_stream *sync_stream; /* for zoff_dev_memcpy */
};

/* Backend constructors: fill dev->iface, dev->impl, dev->name and cfg.capacity defaults.
 * A backend that is not built returns ZOFF_ENOBACKEND. */
int zoff_dev_host_open(zoff_dev *dev);
int zoff_dev_cuda_open(zoff_dev *dev);

#define ZOFF_DEV_ALIGN 256

#endif
