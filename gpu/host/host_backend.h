/* Internals of the host backend: the CPU stands in for a GPU.
 *
 * Each stream is a worker thread that runs a FIFO of commands in issue order. Commands carry
 * a sequence number; the stream publishes the number of the last command it finished
 * (`done_seq`) under its mutex and broadcasts its condition variable. An event record
 * captures (stream, seq of the last command issued), which gives CUDA's semantics: waits
 * and queries refer to the record current at the call, a re-record re-arms, and an event
 * never recorded is complete. Streams and events are reference counted because a pending
 * cross-stream wait or a timestamp command may outlive the handle the user destroyed.
 */
#ifndef ZOFF_GPU_HOST_BACKEND_H
#define ZOFF_GPU_HOST_BACKEND_H

#include "gpu/device_impl.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct host_cmd host_cmd;
typedef void (*host_cmd_fn)(void *payload);

typedef struct host_stream {
    atomic_int refs;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled on new work, on progress and on stop */
    host_cmd *head, *tail;
    uint64_t issued_seq; /* last seq handed out (issuing thread, under lock) */
    uint64_t done_seq;   /* last seq finished (worker, under lock) */
    int stop;
    pthread_t thread;
    struct host_device *hdev;
    /* fp32 copies of 16-bit GEMM operands (ops_gemm.c): grown by the issuing thread, used by
     * this stream's GEMMs one at a time, freed with the stream */
    float *gemm_scratch;
    size_t gemm_scratch_floats;
} host_stream;

typedef struct host_event {
    atomic_int refs;
    pthread_mutex_t lock;
    host_stream *stream; /* stream of the current record, referenced; NULL if never recorded */
    uint64_t seq;        /* the record's position in that stream */
    uint64_t record_id;  /* increments per record; the timestamp belongs to one record */
    uint64_t stamped_id; /* record_id whose completion time is in `stamp_ns` */
    uint64_t stamp_ns;
} host_event;

typedef struct host_device {
    int kernel_threads; /* threads a kernel may use */
    unsigned copy_delay_us; /* host_debug_copy_delay_us */
    bool bind;          /* stream workers bind to kernel_cpus (host_bind_kernel_cores) */
    cpu_set_t kernel_cpus;
    /* Counter signals (zoff_dev_stream_wait_value): writers store under value_lock and
     * broadcast value_cond; waiters re-check their counter on each wake-up. */
    pthread_mutex_t value_lock;
    pthread_cond_t value_cond;
} host_device;

/* Memory a kernel needs while it runs, allocated by the issuing thread (so that a failure is
 * reported to the caller, as a GPU kernel's launch would be) and freed by the kernel itself at
 * its end. NULL with a detail on failure. */
void *host_kernel_scratch(const char *op, size_t bytes);

/* Copies `size` bytes of payload into a new command and appends it to the stream.
 * 0 or -ENOMEM. */
int host_stream_enqueue(host_stream *s, host_cmd_fn fn, const void *payload, size_t size);
/* The same, also returning the command's sequence number in the stream. */
int host_stream_enqueue_seq(host_stream *s, host_cmd_fn fn, const void *payload, size_t size,
                            uint64_t *seq);

int host_stream_create(zoff_dev *dev, void **impl);
int host_stream_destroy(zoff_dev *dev, void *impl);
int host_stream_synchronize(void *impl);
int host_event_create(zoff_dev *dev, void **impl);
int host_event_destroy(void *impl);
int host_event_record(void *event, void *stream);
int host_stream_wait_event(void *stream, void *event);
int host_event_synchronize(void *event);
int host_event_query(void *event);
int host_event_elapsed_ms(void *start, void *end, float *ms);
int host_launch_host_fn(void *stream, zoff_dev_host_fn fn, void *arg);
int host_stream_wait_value(void *stream, const uint32_t *flag, uint32_t value);
int host_stream_write_value(void *stream, uint32_t *flag, uint32_t value);
int host_host_write_value(zoff_dev *dev, uint32_t *flag, uint32_t value);
int host_host_wait_value(zoff_dev *dev, const uint32_t *flag, uint32_t value);

/* collectives (host_comm.c): MPI, run on the stream's worker thread */
int host_comm_create(zoff_dev *dev, zoff_dist *dist, void **comm);
void host_comm_destroy(zoff_dev *dev, void *comm);
int host_comm_allreduce(void *stream, void *comm, const void *send, void *recv, size_t count,
                        zoff_dtype type);
int host_comm_reduce_scatter(void *stream, void *comm, const void *send, void *recv,
                             size_t recv_count, zoff_dtype type);
int host_comm_allgather(void *stream, void *comm, const void *send, void *recv, size_t send_count,
                        zoff_dtype type);
int host_comm_broadcast(void *stream, void *comm, void *buf, size_t count, zoff_dtype type,
                        int root);

/* kernels (host_ops.c) */
int host_memcpy_async(void *stream, void *dst, const void *src, size_t bytes,
                      zoff_dev_copy_kind kind);
int host_memset_async(void *stream, void *dst, int value, size_t bytes);
int host_op_cast(void *stream, void *dst, zoff_dtype dst_type, const void *src, zoff_dtype src_type,
                 size_t n);
int host_op_scale(void *stream, void *x, zoff_dtype type, float alpha, size_t n);
int host_op_sumsq_nonfinite(void *stream, const void *x, zoff_dtype type, size_t n, float *out);

/* model kernels (ops_<family>.c) */
int host_op_gemm(void *stream, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                 const void *A, int lda, const void *B, int ldb, zoff_dtype ab_type, float beta,
                 void *C, zoff_dtype c_type, int ldc);
int host_op_bias_init(void *stream, void *out, zoff_dtype out_type, const void *bias,
                      zoff_dtype bias_type, const float *res, size_t N, int OC);
int host_op_bias_grad(void *stream, void *dbias, zoff_dtype g_type, const void *dout,
                      zoff_dtype dout_type, size_t N, int OC);
int host_op_add(void *stream, float *out, const float *a, const float *b, size_t n);
int host_op_layernorm_fwd(void *stream, void *out, zoff_dtype out_type, float *mean, float *rstd,
                          const float *inp, const void *weight, const void *bias, zoff_dtype w_type,
                          size_t N, int C);
int host_op_layernorm_bwd(void *stream, float *dinp, void *dweight, void *dbias, zoff_dtype g_type,
                          const float *dout, const float *inp, const void *weight,
                          zoff_dtype w_type, const float *mean, const float *rstd, size_t N, int C);
int host_op_gelu_fwd(void *stream, void *out, const void *inp, zoff_dtype type, size_t n);
int host_op_gelu_bwd(void *stream, void *dinp, const void *inp, const void *dout, zoff_dtype type,
                     size_t n);
int host_op_attention_fwd(void *stream, float *out, float *att, const float *qkv, int B, int T,
                          int C, int NH);
int host_op_attention_bwd(void *stream, float *dqkv, float *scratch, const float *dout,
                          const float *qkv, const float *att, int B, int T, int C, int NH);
int host_op_flash_attention_fwd(void *stream, void *out, float *lse, const void *q, const void *k,
                                const void *v, zoff_dtype type, const int32_t *doc_start,
                                const zoff_dev_attn_shape *shape);
int host_op_flash_attention_bwd(void *stream, void *dq, void *dk, void *dv, float *delta,
                                const void *dout, const void *out, const float *lse, const void *q,
                                const void *k, const void *v, zoff_dtype type,
                                const int32_t *doc_start, const zoff_dev_attn_shape *shape);
int host_op_softmax_xent_fwd(void *stream, float *probs, float *losses, const float *logits,
                             const int32_t *targets, size_t N, int V);
int host_op_softmax_xent_bwd(void *stream, float *dlogits, const float *probs,
                             const int32_t *targets, float dloss, size_t N, int V);
int host_op_xent_fused(void *stream, float *losses, void *dlogits, zoff_dtype d_type,
                       const float *logits, const int32_t *targets, float dloss, size_t N, int V);
int host_op_embedding_fwd(void *stream, float *out, const int32_t *tokens, const int32_t *pos,
                          const void *wte, const void *wpe, zoff_dtype w_type, int B, int T, int C);
int host_op_embedding_bwd(void *stream, void *dwte, void *dwpe, zoff_dtype g_type,
                          const float *dout, const int32_t *tokens, const int32_t *pos, int B,
                          int T, int C);
int host_op_rmsnorm_fwd(void *stream, void *out, zoff_dtype out_type, float *rstd, const float *inp,
                        const void *weight, zoff_dtype w_type, size_t N, int C, float eps);
int host_op_rmsnorm_bwd(void *stream, float *dinp, void *dweight, zoff_dtype g_type,
                        const float *dout, const float *inp, const void *weight, zoff_dtype w_type,
                        const float *rstd, size_t N, int C);
int host_op_rope(void *stream, void *x, zoff_dtype type, size_t row_stride, const int32_t *pos,
                 const float *inv_freq, int B, int T, int NH, int HS, bool backward);
int host_op_swiglu_fwd(void *stream, void *out, const void *gate, const void *up, zoff_dtype type,
                       size_t n);
int host_op_swiglu_bwd(void *stream, void *dgate, void *dup, const void *dout, const void *gate,
                       const void *up, zoff_dtype type, size_t n);
int host_op_adamw(void *stream, float *param, const float *grad, float *m, float *v, size_t n,
                  const zoff_dev_adamw_args *args);

/* Per-family kernel timing, for a benchmark's breakdown of a step (bench_train --profile).
 * Off by default; when on, each op is queued behind a trampoline that times its kernel body on
 * the stream's worker thread and adds the nanoseconds to its family's process-wide counter
 * (atomic: several streams may run at once). Switching it on or off affects ops queued after
 * the call. */
typedef enum host_op_family {
    HOST_OP_GEMM,
    HOST_OP_LAYERNORM,
    HOST_OP_RMSNORM,
    HOST_OP_GELU,
    HOST_OP_SWIGLU,
    HOST_OP_ROPE,
    HOST_OP_ATTENTION,
    HOST_OP_XENT,
    HOST_OP_EMBEDDING,
    HOST_OP_ADAMW,
    HOST_OP_BIAS,
    HOST_OP_ADD,
    HOST_OP_MEMSET_COPY,
    HOST_OP_CAST,
    HOST_OP_GRAD_NORM,
    HOST_OP_OTHER,
    HOST_OP_FAMILIES
} host_op_family;

/* host_stream_enqueue for a kernel of family `fam`: timed when profiling is on. */
int host_op_enqueue(host_stream *s, host_op_family fam, host_cmd_fn fn, const void *payload,
                    size_t size);
void zoff_dev_host_profile_enable(bool on);
/* Nanoseconds spent in each family's kernels since the process started profiling, and how many
 * kernels ran: arrays of HOST_OP_FAMILIES. */
void zoff_dev_host_profile_read(uint64_t *ns, uint64_t *calls);
const char *zoff_dev_host_profile_family_name(host_op_family fam);

#endif
