/* The device layer: the one interface through which zoff touches an accelerator.
 *
 * A zoff_dev is an opened backend (host or cuda) with memory counters, streams, events,
 * async copies and an op table of kernels. It follows CUDA's model so that code written
 * against it runs unchanged on both backends:
 *   - work issued to one stream runs in issue order; different streams run concurrently;
 *   - an event marks the work issued to a stream before zoff_dev_event_record(); a later
 *     record re-arms it. A wait (stream or host) refers to the record current at the time
 *     of the wait call; an event never recorded counts as complete;
 *   - device memory has a capacity; exceeding it fails with ZOFF_EDEVICE_OOM and leaves
 *     every existing allocation intact;
 *   - pointers passed to async calls must stay valid until the work completes.
 * Handles are not thread-safe per se except where noted: one thread issues to a stream at a
 * time; memory allocation and event queries may be called from any thread.
 */
#ifndef ZOFF_GPU_DEVICE_H
#define ZOFF_GPU_DEVICE_H

#include "gpu/dist.h"
#include "zoff/zoff.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct zoff_dev zoff_dev;
typedef struct zoff_dev_stream zoff_dev_stream;
typedef struct zoff_dev_event zoff_dev_event;

typedef enum zoff_dev_kind {
    ZOFF_DEV_AUTO = 0, /* cuda when a GPU is usable, else host */
    ZOFF_DEV_HOST = 1,
    ZOFF_DEV_CUDA = 2,
} zoff_dev_kind;

typedef struct zoff_dev_config {
    zoff_dev_kind kind;
    /* Device memory capacity in bytes. host: the arena's size (default 2 GiB); cuda: a cap
     * below the GPU's free memory, 0 = the GPU's free memory at open less a headroom (512 MiB
     * + 1%) for what CUDA and cuBLAS allocate themselves; a larger cap is lowered to that. */
    size_t capacity;
    int cuda_ordinal;        /* which GPU, default 0 */
    int host_kernel_threads; /* host backend: threads for a kernel, 0 = all cores */
    /* host backend: the device's threads (its streams' workers, which run its kernels and its
     * copies, and their kernel teams) bound to the first host_kernel_threads cores, in hwloc's
     * logical order: the cores a CPU Adam pool with reserve_cores = host_kernel_threads leaves
     * free. Then the device's work never runs on the Adam's cores, as a GPU's kernels and copy
     * engines take no CPU core. Off by default: several processes on one machine would all
     * bind to the same first cores. */
    bool host_bind_kernel_cores;
    /* host backend, for tests: every asynchronous copy ends this much later (it sleeps after
     * copying), so that what a stream does after it, such as signalling that the data is
     * there, comes late. A reader on another stream let through without that signal then
     * reads the data during the gap, a race ThreadSanitizer reports, where normally the
     * interleaving is rare. 0 (default): none. */
    unsigned host_debug_copy_delay_us;
} zoff_dev_config;

void zoff_dev_config_default(zoff_dev_config *cfg);
/* "auto" | "cuda" | "host" -> kind; -EINVAL otherwise. */
int zoff_dev_kind_parse(const char *name, zoff_dev_kind *out);
const char *zoff_dev_kind_name(zoff_dev_kind kind);
/* Whether this library was built with the backend (host: always). */
bool zoff_dev_backend_built(zoff_dev_kind kind);

/* Opens a backend. For AUTO, tries cuda, falls back to host, and logs the choice and why. */
int zoff_dev_open(const zoff_dev_config *cfg, zoff_dev **out);
/* Waits for all work, destroys remaining streams and events, frees remaining memory
 * (logging a warning for leaked allocations). */
void zoff_dev_close(zoff_dev *dev);
zoff_dev_kind zoff_dev_get_kind(const zoff_dev *dev);
const char *zoff_dev_name(const zoff_dev *dev); /* e.g. "host (2 cores)", "NVIDIA H100 ..." */
/* Blocks until all work on all streams is done. */
int zoff_dev_synchronize(zoff_dev *dev);

/* What `zoff info` shows of each CUDA GPU. */
typedef struct zoff_dev_gpu_info {
    int ordinal;
    char name[256];
    size_t total_mem, free_mem;
    int cc_major, cc_minor;
    int sm_count;
    char pci_bus_id[32]; /* "0000:3b:00.0", for sysfs look-ups (PCIe link, NUMA node) */
    int driver_version, runtime_version; /* e.g. 13000 */
} zoff_dev_gpu_info;

/* Number of usable CUDA GPUs: 0 and *count set, or ZOFF_ENOBACKEND (not built) or
 * ZOFF_ENODEVICE (no driver or no GPU; the detail says which). Never crashes. */
int zoff_dev_cuda_gpu_count(int *count);
int zoff_dev_cuda_gpu_info(int ordinal, zoff_dev_gpu_info *out);

/* --- memory ---------------------------------------------------------------------------- */
typedef struct zoff_dev_mem_stats {
    size_t capacity;    /* device bytes that may be allocated */
    size_t used;        /* device bytes allocated now */
    size_t peak;        /* high-water mark of used */
    size_t pinned_used; /* pinned host bytes allocated now */
    size_t pinned_peak;
    uint64_t n_allocs; /* device allocations that succeeded */
    uint64_t n_oom;    /* device allocations refused for capacity */
} zoff_dev_mem_stats;

/* Device memory, 256-byte aligned. Capacity exceeded: ZOFF_EDEVICE_OOM, *ptr untouched. */
int zoff_dev_malloc(zoff_dev *dev, size_t bytes, void **ptr);
/* Frees device memory. Work issued before the call on any stream may still use the block:
 * it is reused only after that work completes (host: the call waits for it; cuda: the free is
 * stream-ordered and the call does not block). -EINVAL for a pointer this device did not
 * allocate. NULL is a no-op. */
int zoff_dev_free(zoff_dev *dev, void *ptr);
/* Page-locked ("pinned") host memory usable by async copies; page-aligned; mapped into the
 * device's address space (counters for the value signals live in it). Out of pinned memory:
 * ZOFF_EHOST_OOM (cuda) or -ENOMEM (host). */
int zoff_dev_host_alloc(zoff_dev *dev, size_t bytes, void **ptr);
int zoff_dev_host_free(zoff_dev *dev, void *ptr);
void zoff_dev_mem_stats_get(zoff_dev *dev, zoff_dev_mem_stats *out);
void zoff_dev_mem_reset_peak(zoff_dev *dev);

/* --- streams and events ---------------------------------------------------------------- */
int zoff_dev_stream_create(zoff_dev *dev, zoff_dev_stream **out);
/* Waits for the stream's pending work, then destroys it. */
int zoff_dev_stream_destroy(zoff_dev_stream *s);
int zoff_dev_stream_synchronize(zoff_dev_stream *s);

int zoff_dev_event_create(zoff_dev *dev, zoff_dev_event **out);
/* Waits for the event's current record to complete, then destroys it. */
int zoff_dev_event_destroy(zoff_dev_event *e);
int zoff_dev_event_record(zoff_dev_event *e, zoff_dev_stream *s);
/* Work issued to s after this call waits until e's current record has completed. */
int zoff_dev_stream_wait_event(zoff_dev_stream *s, zoff_dev_event *e);
/* Host blocks until e's current record completes. */
int zoff_dev_event_synchronize(zoff_dev_event *e);
/* 0 if complete, -EAGAIN if not yet, another negative code on error. Any thread. */
int zoff_dev_event_query(zoff_dev_event *e);
/* Milliseconds between two completed records. */
int zoff_dev_event_elapsed_ms(zoff_dev_event *start, zoff_dev_event *end, float *ms);

/* Runs fn(arg) on a host thread when the stream reaches this point; fn must not call into
 * the device layer (as with cudaLaunchHostFunc). */
typedef void (*zoff_dev_host_fn)(void *arg);
int zoff_dev_launch_host_fn(zoff_dev_stream *s, zoff_dev_host_fn fn, void *arg);

/* Stream-ordered signals through 32-bit counters in pinned host memory (from
 * zoff_dev_host_alloc): a stream can wait for a counter that a host thread or another stream
 * will advance later, which an event cannot express (a wait on an event refers to its record
 * at the time of the call). Counters only grow (modulo 2^32); a wait ends once
 * (int32_t)(*flag - value) >= 0. This is how the offload engine makes the compute stream
 * wait for weights that the CPU has not produced yet, without blocking the host thread. */
int zoff_dev_stream_wait_value(zoff_dev_stream *s, const uint32_t *flag, uint32_t value);
int zoff_dev_stream_write_value(zoff_dev_stream *s, uint32_t *flag, uint32_t value);
/* Host-side write of a counter, waking streams waiting on it. Any thread. */
int zoff_dev_host_write_value(zoff_dev *dev, uint32_t *flag, uint32_t value);
/* Host thread blocks until the counter reaches value (same comparison as the stream wait). */
int zoff_dev_host_wait_value(zoff_dev *dev, const uint32_t *flag, uint32_t value);

/* --- copies ---------------------------------------------------------------------------- */
typedef enum zoff_dev_copy_kind {
    ZOFF_COPY_H2D = 0,
    ZOFF_COPY_D2H = 1,
    ZOFF_COPY_D2D = 2,
    ZOFF_COPY_H2H = 3,
} zoff_dev_copy_kind;

int zoff_dev_memcpy_async(zoff_dev_stream *s, void *dst, const void *src, size_t bytes,
                          zoff_dev_copy_kind kind);
int zoff_dev_memset_async(zoff_dev_stream *s, void *dst, int value, size_t bytes);
/* Synchronous helpers for tests and set-up code: issue on an internal stream and wait. */
int zoff_dev_memcpy(zoff_dev *dev, void *dst, const void *src, size_t bytes,
                    zoff_dev_copy_kind kind);

/* --- ops: kernels, all asynchronous on a stream; pointers are device memory ------------- */
/* dst[i] = (dst_type) src[i], rounding to nearest even. */
int zoff_dev_op_cast(zoff_dev_stream *s, void *dst, zoff_dtype dst_type, const void *src,
                     zoff_dtype src_type, size_t n);
/* x[i] *= alpha, in place. */
int zoff_dev_op_scale(zoff_dev_stream *s, void *x, zoff_dtype type, float alpha, size_t n);
/* out[0] (fp32 device memory) = sum of x[i]^2 accumulated in fp32 per block, then summed;
 * out[1] = 1.0f if any x[i] is inf or NaN, else 0.0f. The engine's per-bucket check. */
int zoff_dev_op_sumsq_nonfinite(zoff_dev_stream *s, const void *x, zoff_dtype type, size_t n,
                                float *out);

/* --- model kernels ----------------------------------------------------------------------
 * What a transformer forward/backward needs. Weights and weight gradients are typed: in 16-bit
 * training the device holds only 16-bit weights (w_type bf16/f16) and the gradients go straight
 * into 16-bit buffers (g_type) such as the offload engine's buckets, or into fp32 buffers (the
 * reference trainer). Activations that feed GEMMs are kept in the GEMM dtype (a_type); the
 * residual stream, norm statistics, softmax and loss stay fp32. Every op computes in fp32 and
 * rounds once (to nearest even) when it stores a 16-bit value. Tensors are row-major and
 * contiguous unless a stride is given; shape comments use B batch, T time, C channels, NH heads,
 * V vocabulary, N rows. Token ids are int32 in device memory and lie in [0, V) (checked by the
 * caller). Backward ops ACCUMULATE (+=) into the weight gradients they produce, as in llm.c,
 * so that a buffer zeroed once collects every contribution; activation gradients are WRITTEN
 * unless the op says otherwise. */

/* C (M,N) = alpha * op(A) @ op(B) + beta * C. op(A) is (M,K): A is stored (M,K) with row
 * stride lda, or (K,M) when trans_a. op(B) is (K,N): B stored (K,N), or (N,K) when trans_b.
 * A and B share ab_type (f32, bf16 or f16); products are accumulated in fp32 and C (c_type)
 * is read, combined and rounded once. */
int zoff_dev_op_gemm(zoff_dev_stream *s, bool trans_a, bool trans_b, int M, int N, int K,
                     float alpha, const void *A, int lda, const void *B, int ldb,
                     zoff_dtype ab_type, float beta, void *C, zoff_dtype c_type, int ldc);
/* out (N,OC) = bias (OC) broadcast over rows + res (N,OC) fp32, each term optional (NULL:
 * none; not both), rounded once. The C of a GEMM with beta 1 that then adds a linear layer's
 * product: its bias and a residual connection ride in the pass the GEMM's C takes anyway,
 * instead of two more passes over the output after it. res may be out itself (fp32). */
int zoff_dev_op_bias_init(zoff_dev_stream *s, void *out, zoff_dtype out_type, const void *bias,
                          zoff_dtype bias_type, const float *res, size_t N, int OC);
/* dbias (OC) += column sums of dout (N,OC). */
int zoff_dev_op_bias_grad(zoff_dev_stream *s, void *dbias, zoff_dtype g_type, const void *dout,
                          zoff_dtype dout_type, size_t N, int OC);
/* out[i] = a[i] + b[i] (fp32); out may alias a or b (residual add). */
int zoff_dev_op_add(zoff_dev_stream *s, float *out, const float *a, const float *b, size_t n);

/* LayerNorm over the last dimension, eps 1e-5: inp (N,C) fp32 -> out (N,C) in out_type, mean
 * (N), rstd (N); weight and bias (C) in w_type. */
int zoff_dev_op_layernorm_fwd(zoff_dev_stream *s, void *out, zoff_dtype out_type, float *mean,
                              float *rstd, const float *inp, const void *weight, const void *bias,
                              zoff_dtype w_type, size_t N, int C);
/* dinp (N,C) fp32 += from dout (N,C) fp32 and the forward's inp, mean, rstd; dweight and dbias
 * (C, g_type) +=. */
int zoff_dev_op_layernorm_bwd(zoff_dev_stream *s, float *dinp, void *dweight, void *dbias,
                              zoff_dtype g_type, const float *dout, const float *inp,
                              const void *weight, zoff_dtype w_type, const float *mean,
                              const float *rstd, size_t N, int C);

/* GELU, tanh approximation (GPT-2): out[i] = gelu(inp[i]), all of `type`; out may alias inp. */
int zoff_dev_op_gelu_fwd(zoff_dev_stream *s, void *out, const void *inp, zoff_dtype type, size_t n);
/* dinp[i] = gelu'(inp[i]) * dout[i] (WRITES), all of `type`; dinp may alias dout. */
int zoff_dev_op_gelu_bwd(zoff_dev_stream *s, void *dinp, const void *inp, const void *dout,
                         zoff_dtype type, size_t n);

/* Reference causal multi-head attention, materialized: qkv (B,T,3C) fp32 holds q, k, v side by
 * side, each (B,T,NH,C/NH); att (B,NH,T,T) receives the softmax probabilities (entries above
 * the diagonal are written as 0); out (B,T,C) = att @ v per head. Scale 1/sqrt(C/NH). Kept as
 * the oracle of the fused attention below (tests, benchmarks); the models use the fused one. */
int zoff_dev_op_attention_fwd(zoff_dev_stream *s, float *out, float *att, const float *qkv, int B,
                              int T, int C, int NH);
/* dqkv (B,T,3C) += from dout (B,T,C), the forward's qkv and att. scratch (B,NH,T,T) is
 * overwritten (the gradient of the pre-softmax scores). */
int zoff_dev_op_attention_bwd(zoff_dev_stream *s, float *dqkv, float *scratch, const float *dout,
                              const float *qkv, const float *att, int B, int T, int C, int NH);

/* Fused causal attention (FlashAttention-style online softmax): nothing of size T*T is stored.
 * q is (B,T,NH,HS) and k, v are (B,T,NKV,HS) (grouped-query attention: query head h reads
 * key/value head h / (NH/NKV)), each with its own row stride between consecutive tokens, so
 * that q, k and v can be slices of one fused qkv projection (stride 3C) or separate buffers.
 * doc_start, when not NULL, is (B,T) int32: query t attends only to keys in
 * [doc_start[b,t], t] (samples packed into one row do not see each other). */
typedef struct zoff_dev_attn_shape {
    int B, T, NH, NKV, HS;
    size_t q_stride, kv_stride; /* elements between token t and t+1 of q, and of k and v */
    float scale;                /* usually 1/sqrt(HS) */
} zoff_dev_attn_shape;
/* out (B,T,NH,HS) contiguous = softmax(q k^T * scale) v, in `type` (f32, bf16, f16) like q, k,
 * v; lse (B,NH,T) fp32 receives each query row's log-sum-exp of the scaled scores, all that
 * the backward needs besides the inputs. */
int zoff_dev_op_flash_attention_fwd(zoff_dev_stream *s, void *out, float *lse, const void *q,
                                    const void *k, const void *v, zoff_dtype type,
                                    const int32_t *doc_start, const zoff_dev_attn_shape *shape);
/* dq, dk, dv (same layouts and strides as q, k, v; `type`) are WRITTEN from dout (B,T,NH,HS),
 * the forward's out and lse, and q, k, v. delta (B,NH,T) fp32 is scratch (rowsum(dout*out)). */
int zoff_dev_op_flash_attention_bwd(zoff_dev_stream *s, void *dq, void *dk, void *dv, float *delta,
                                    const void *dout, const void *out, const float *lse,
                                    const void *q, const void *k, const void *v, zoff_dtype type,
                                    const int32_t *doc_start, const zoff_dev_attn_shape *shape);

/* Softmax over V for each of N rows of fp32 logits into probs (may alias logits), and, when
 * targets is not NULL, losses[i] = -log probs[i, targets[i]]. For sampling and as the oracle
 * of the fused loss below. */
int zoff_dev_op_softmax_xent_fwd(zoff_dev_stream *s, float *probs, float *losses,
                                 const float *logits, const int32_t *targets, size_t N, int V);
/* dlogits (N,V) = (probs - onehot(targets)) * dloss: WRITES (may alias probs). */
int zoff_dev_op_softmax_xent_bwd(zoff_dev_stream *s, float *dlogits, const float *probs,
                                 const int32_t *targets, float dloss, size_t N, int V);

/* The loss of one chunk of rows, fused: for each of N rows of fp32 logits (N,V),
 * losses[i] = logsumexp(logits[i]) - logits[i, targets[i]], or 0 when targets[i] < 0 (ignored,
 * e.g. -100). When dlogits is not NULL it receives (WRITES) the gradient
 * dloss * (softmax(logits[i]) - onehot(targets[i])) in d_type, a zero row for an ignored
 * target; it may alias logits when d_type is f32. */
int zoff_dev_op_xent_fused(zoff_dev_stream *s, float *losses, void *dlogits, zoff_dtype d_type,
                           const float *logits, const int32_t *targets, float dloss, size_t N,
                           int V);

/* out (B,T,C) fp32 = wte[tokens[b,t]] + wpe[pos[b,t]], wte (V,C) and wpe (>=maxpos,C) in
 * w_type; pos NULL means pos[b,t] = t; wpe NULL adds no position embedding. */
int zoff_dev_op_embedding_fwd(zoff_dev_stream *s, float *out, const int32_t *tokens,
                              const int32_t *pos, const void *wte, const void *wpe,
                              zoff_dtype w_type, int B, int T, int C);
/* dwte (V,C) and dwpe (g_type; dwpe may be NULL) += from dout (B,T,C) fp32. */
int zoff_dev_op_embedding_bwd(zoff_dev_stream *s, void *dwte, void *dwpe, zoff_dtype g_type,
                              const float *dout, const int32_t *tokens, const int32_t *pos, int B,
                              int T, int C);

/* --- Llama-family kernels ---------------------------------------------------------------- */
/* RMSNorm over the last dimension: rstd (N) = 1/sqrt(mean(inp^2) + eps), out (N,C) in out_type
 * = inp * rstd * weight; inp fp32, weight (C) in w_type. */
int zoff_dev_op_rmsnorm_fwd(zoff_dev_stream *s, void *out, zoff_dtype out_type, float *rstd,
                            const float *inp, const void *weight, zoff_dtype w_type, size_t N,
                            int C, float eps);
/* dinp (N,C) fp32 += from dout (N,C) fp32 and the forward's inp and rstd; dweight (C, g_type)
 * += column sums of dout * inp * rstd. */
int zoff_dev_op_rmsnorm_bwd(zoff_dev_stream *s, float *dinp, void *dweight, zoff_dtype g_type,
                            const float *dout, const float *inp, const void *weight,
                            zoff_dtype w_type, const float *rstd, size_t N, int C);

/* Rotary position embedding (Hugging Face's rotate_half convention), IN PLACE on x: x is
 * (B,T,NH,HS) in `type` with row_stride elements between tokens t and t+1 (heads contiguous);
 * for i < HS/2, with a = pos[b,t] * inv_freq[i] (pos NULL: pos = t):
 *   x[i] <- x[i] cos a - x[i+HS/2] sin a,  x[i+HS/2] <- x[i+HS/2] cos a + x[i] sin a.
 * inv_freq (HS/2) fp32, device memory. The backward applies the transposed rotation (angle
 * -a) to a gradient in place. */
int zoff_dev_op_rope_fwd(zoff_dev_stream *s, void *x, zoff_dtype type, size_t row_stride,
                         const int32_t *pos, const float *inv_freq, int B, int T, int NH, int HS);
int zoff_dev_op_rope_bwd(zoff_dev_stream *s, void *dx, zoff_dtype type, size_t row_stride,
                         const int32_t *pos, const float *inv_freq, int B, int T, int NH, int HS);

/* SwiGLU: out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)); all of `type`. */
int zoff_dev_op_swiglu_fwd(zoff_dev_stream *s, void *out, const void *gate, const void *up,
                           zoff_dtype type, size_t n);
/* dgate[i] = dout[i] * up[i] * silu'(gate[i]), dup[i] = dout[i] * silu(gate[i]) (WRITTEN; they
 * may not alias the inputs). */
int zoff_dev_op_swiglu_bwd(zoff_dev_stream *s, void *dgate, void *dup, const void *dout,
                           const void *gate, const void *up, zoff_dtype type, size_t n);

/* AdamW (decoupled weight decay), fp32 state, for the non-offloaded reference trainer:
 * g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * param -= lr * (m/(1-b1^step) / (sqrt(v/(1-b2^step)) + eps) + weight_decay * param). */
typedef struct zoff_dev_adamw_args {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_scale; /* 1, or a clipping / loss-scale factor */
    int step;         /* 1-based */
} zoff_dev_adamw_args;
int zoff_dev_op_adamw(zoff_dev_stream *s, float *param, const float *grad, float *m, float *v,
                      size_t n, const zoff_dev_adamw_args *args);

/* --- collectives ------------------------------------------------------------------------
 * A communicator of the world's ranks (gpu/dist.h) over this device's memory. Collectives are
 * enqueued on a stream like any op (stream-ordered) and run when the stream reaches them. One
 * communicator orders its collectives: every rank must issue them in the same order; use one
 * communicator per issuing thread/stream (two streams sharing one communicator may run their
 * collectives in different orders on different ranks and deadlock).
 *   host: an MPI communicator duplicated from the world, each collective run on the stream's
 *         worker thread (MPI non-blocking + timed poll, as in gpu/dist.h; a timeout aborts the
 *         job); 16-bit sums widen to fp32, add and round to nearest even once per pairwise
 *         reduction (bf16 and f16).
 *   cuda: an NCCL communicator (one GPU per rank: the device's cuda_ordinal), launched on the
 *         stream's cudaStream_t; bf16/f16/f32 native.
 * A world of one: create succeeds and every collective is a stream-ordered D2D copy (or no-op
 * when in place). Types: ZOFF_F32, ZOFF_BF16, ZOFF_F16. Pointers: device memory of this device. */
typedef struct zoff_dev_comm zoff_dev_comm;
/* Collective over every rank of dist (all ranks must call it). dist NULL: a world of one. */
int zoff_dev_comm_create(zoff_dev *dev, zoff_dist *dist, zoff_dev_comm **out);
/* Waits for the collectives issued, then frees the communicator; NULL ok. Before
 * zoff_dev_close and zoff_dist_finalize. */
void zoff_dev_comm_destroy(zoff_dev_comm *c);
int zoff_dev_comm_rank(const zoff_dev_comm *c);
int zoff_dev_comm_size(const zoff_dev_comm *c);
/* recv[i] = sum over ranks of send[i], count elements. In place when send == recv. */
int zoff_dev_allreduce(zoff_dev_stream *s, zoff_dev_comm *c, const void *send, void *recv,
                       size_t count, zoff_dtype type);
/* send: size*recv_count elements; rank r gets the sum of every rank's block r in recv
 * (recv_count elements). In place when recv == send + rank*recv_count (NCCL's convention). */
int zoff_dev_reduce_scatter(zoff_dev_stream *s, zoff_dev_comm *c, const void *send, void *recv,
                            size_t recv_count, zoff_dtype type);
/* recv: size*send_count elements, block r from rank r. In place when
 * send == recv + rank*send_count. */
int zoff_dev_allgather(zoff_dev_stream *s, zoff_dev_comm *c, const void *send, void *recv,
                       size_t send_count, zoff_dtype type);
/* buf (count elements) on every rank = root's buf. */
int zoff_dev_broadcast(zoff_dev_stream *s, zoff_dev_comm *c, void *buf, size_t count,
                       zoff_dtype type, int root);

#endif
