/* zoff offload engine: the trainer-facing API.
 *
 * A trainer keeps its 16-bit (or fp32) parameters in one flat device buffer and registers it
 * with its tensor layout. The engine owns the optimizer: fp32 master weights and Adam moments
 * live in CPU memory or on NVMe. Each step the trainer
 *   1. before a tensor's weights are used, calls zoff_engine_wait_params() - the compute
 *      stream (not the host) waits until the weights of the current step are in place;
 *   2. in backward, asks zoff_engine_grad_buffer() where to accumulate a tensor's gradient
 *      (zeroed device memory inside an engine bucket) and calls zoff_engine_grad_done() once
 *      the gradient is final and the tensor's weights are no longer read in this step;
 *   3. calls zoff_engine_end_micro() after each micro-batch's backward.
 * Full buckets stream to the CPU in 16 bits, the fused CPU Adam updates the state, and the
 * updated 16-bit weights stream back, overlapped with compute as the schedule allows.
 * No call blocks the trainer's thread on the pipeline, except where noted.
 *
 * Threads: the trainer-facing calls come from one thread. The engine runs its own CPU
 * worker thread (plus the cpu_adam pool and the NVMe swapper's threads).
 */
#ifndef ZOFF_ENGINE_H
#define ZOFF_ENGINE_H

#include "zoff/zoff.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zoff_dev zoff_dev;
typedef struct zoff_dev_stream zoff_dev_stream;
typedef struct zoff_dist zoff_dist;
typedef struct zoff_engine zoff_engine;

typedef enum zoff_offload_target {
    ZOFF_OFFLOAD_CPU = 1,  /* optimizer state in CPU memory */
    ZOFF_OFFLOAD_NVME = 2, /* optimizer state on NVMe through the swapper */
} zoff_offload_target;

/* Where the 16-bit weights live between uses (parameter offload, ZeRO-Infinity style). */
typedef enum zoff_param_location {
    ZOFF_PARAMS_DEVICE = 0, /* the trainer's flat device buffer, all resident (default) */
    ZOFF_PARAMS_CPU = 1,    /* pinned CPU memory; layer groups streamed through a device ring */
    ZOFF_PARAMS_NVME = 2,   /* on NVMe through the swapper, bounded pinned staging; streamed */
} zoff_param_location;

typedef enum zoff_schedule {
    ZOFF_SCHEDULE_SYNC = 0,    /* after backward, update buckets in forward order */
    ZOFF_SCHEDULE_OVERLAP = 1, /* update each bucket as it arrives (no clipping, no fp16) */
    ZOFF_SCHEDULE_DPU = 2,     /* delayed parameter update: weights one step stale */
} zoff_schedule;

/* One tensor of the flat parameter buffer, in elements. Tensors are given in increasing
 * offset order (forward order), must not overlap, and may leave gaps (alignment). */
typedef struct zoff_engine_tensor {
    const char *name;
    size_t offset, numel;
    int layer;           /* for reports and traces; -1 if none */
    int no_weight_decay; /* 1: AdamW's weight decay skips it (biases, norms) */
} zoff_engine_tensor;

typedef struct zoff_engine_config {
    zoff_offload_target target;
    zoff_schedule schedule;
    int dpu_warmup_steps;    /* DPU: steps run as sync first (default 2) */
    zoff_dtype dtype;        /* of the device parameters and gradients: bf16 (default), f16, f32 */
    zoff_dtype moment_dtype; /* f32 (default) or bf16 */
    size_t bucket_bytes;     /* gradient bucket size in bytes of dtype (default 32 MiB) */
    int device_slots;        /* device bucket buffers (default 3, at least 2) */
    int grad_ring_slots;     /* pinned host buffers for gradients (default 3) */
    int param_ring_slots;    /* pinned host buffers for weights (default 2; DPU: all buckets) */

    /* AdamW (defaults: zoff_optimizer_get_defaults(), shared with the reference trainer) */
    float lr, beta1, beta2, eps, weight_decay;
    int adamw;            /* 1: decoupled weight decay (default), 0: L2 (Adam) */
    float clip_norm;      /* clip by global gradient norm; 0 = off (default 1: overlap needs 0) */
    int grad_accum_steps; /* micro-batches per optimizer step (default 1) */

    /* fp16 dynamic loss scaling (dtype f16 only) */
    float loss_scale_init; /* default 65536 */
    int loss_scale_window; /* steps without overflow before the scale doubles (1000) */
    float loss_scale_min;  /* default 1 */

    int cpu_threads;   /* cpu_adam workers, 0 = all cores less reserve_cores */
    int reserve_cores; /* cores kept for the trainer's threads (default 0) */
    int cpu_isa;       /* zoff_adam_isa value; -1 = best (default) */

    /* NVMe target */
    const char *nvme_dirs[16];
    unsigned n_nvme_dirs;
    int nvme_checksums;        /* default 1 */
    int nvme_backend;          /* zoff_nvme_backend value, 0 = auto */
    unsigned nvme_queue_depth; /* default 32 */

    const char *trace_path; /* Chrome/Perfetto trace JSON written at destroy; NULL = off */
    /* Measurement only (default 0): every step skipped as an overflowed one is (weights and
     * optimizer state untouched, no CPU Adam, no weight upload, no state I/O; gradients still
     * copied down and their norm taken), so that a run costs the pipeline without the update:
     * set against a run that updates, what the update adds to the step (bench_offload). */
    int skip_updates;

    /* Data parallelism, ZeRO stage 2 with offload: the job's world (gpu/dist.h); NULL or a
     * world of one: a single process. Every rank runs the same model on its own slice of the
     * batch and creates its engine with the same configuration and tensors. Each bucket's
     * gradient is reduce-scattered in cfg.dtype as it completes, so each rank copies down,
     * keeps and updates only its 1/world block of the optimizer state; the updated weights are
     * all-gathered back into every rank's device parameters. The gradients are averaged over
     * the ranks; the norm, clipping and fp16 overflow use the global gradient. Weights must be
     * resident (params device). */
    zoff_dist *dist;

    /* Parameter offload. With params CPU or NVMe the engine owns the 16-bit weights: the
     * trainer passes no device buffer, describes its layer groups (contiguous element ranges
     * in forward order) and gets each group's device address from zoff_engine_acquire_group. */
    zoff_param_location params;
    int prefetch_depth;        /* groups fetched ahead of their use (default 2) */
    int ring_groups;           /* device slots for streamed groups, 0 = prefetch_depth + 2 */
    size_t n_groups;           /* layer groups (streamed weights only) */
    const size_t *group_begin; /* n_groups + 1 element offsets; read at create */
    const unsigned char *group_resident; /* NULL, or per group 1: kept on the device */
    /* Fault injection for tests (0 = off): every Nth NVMe operation on the weights' swap
     * fails with -nvme_debug_error_errno. */
    unsigned nvme_debug_error_every;
    int nvme_debug_error_errno;
} zoff_engine_config;

void zoff_engine_config_default(zoff_engine_config *cfg);
const char *zoff_schedule_name(zoff_schedule s);
int zoff_schedule_parse(const char *text, zoff_schedule *out);
const char *zoff_offload_target_name(zoff_offload_target t);
const char *zoff_param_location_name(zoff_param_location p); /* "none", "cpu", "nvme" */

/* Registers the device parameter buffer (dtype elements, n_params) and its tensors.
 * init_master: n_params fp32 master weights on the host; NULL: taken from the device
 * parameters. Errors name the bad field or tensor. */
int zoff_engine_create(zoff_dev *dev, const zoff_engine_config *cfg, void *device_params,
                       size_t n_params, const zoff_engine_tensor *tensors, size_t n_tensors,
                       const float *init_master, zoff_engine **out);
/* Waits for the pipeline to drain (zoff_engine_flush), writes the trace if asked, frees all. */
void zoff_engine_destroy(zoff_engine *e);

/* Streamed weights (cfg.params CPU or NVMe): layer group `group` is read on s from here on,
 * until the next acquire (or zoff_engine_release_groups), which releases it. Makes the group
 * resident (fetched on the engine's own copy stream if it is not in the ring at the current
 * step's version), makes s wait (stream-side) for it, prefetches the next prefetch_depth
 * groups in the order the previous micro-batch used them, and returns the group's device
 * address (its element group_begin[group]). Non-blocking. */
int zoff_engine_acquire_group(zoff_engine *e, size_t group, zoff_dev_stream *s, void **base);
/* No group is read on s any more (after the work issued so far). */
int zoff_engine_release_groups(zoff_engine *e, zoff_dev_stream *s);

/* Compute stream s waits until tensor's weights for the current step are in place. */
int zoff_engine_wait_params(zoff_engine *e, size_t tensor, zoff_dev_stream *s);
/* Device memory (tensor numel elements of cfg.dtype) where the tensor's gradient is to be
 * accumulated on s; zero on first use in a micro-batch. */
int zoff_engine_grad_buffer(zoff_engine *e, size_t tensor, zoff_dev_stream *s, void **grad);
/* The tensor's gradient is final for this micro-batch (work issued on s so far). */
int zoff_engine_grad_done(zoff_engine *e, size_t tensor, zoff_dev_stream *s);
/* Ends the micro-batch whose backward was issued on s. Every tensor must be done. After the
 * last micro-batch of an accumulation, the optimizer step is queued. */
int zoff_engine_end_micro(zoff_engine *e, zoff_dev_stream *s);

/* The learning rate for the optimizer steps ended from now on (a schedule's value). */
int zoff_engine_set_lr(zoff_engine *e, float lr);

/* The factor the trainer multiplies the loss by for the coming micro-batch: the fp16 loss scale
 * (waits for the previous step's overflow check; 1 for other dtypes) over the number of ranks,
 * so that the ranks' summed 16-bit gradients are their mean and overflow only where one
 * process's would. */
int zoff_engine_loss_scale(zoff_engine *e, float *scale);

/* What happened in one optimizer step, and what it cost. */
typedef struct zoff_engine_step_report {
    int64_t step;                            /* 0-based optimizer step */
    int skipped;                             /* fp16 overflow: no update */
    double grad_norm;                        /* global norm of the (unscaled) gradient */
    float loss_scale;                        /* the scale its gradients carried */
    double clip_coef;                        /* multiplier applied for clipping (1 = none) */
    uint64_t pcie_d2h_bytes, pcie_h2d_bytes; /* h2d: updated resident weights + fetches */
    uint64_t param_fetch_bytes;     /* streamed weights fetched to the device (all micro-batches) */
    uint64_t param_refetch_bytes;   /* of which groups fetched again within a micro-batch */
    uint64_t param_fetches;         /* group fetches */
    uint64_t param_nvme_read_bytes; /* streamed weights read from NVMe */
    uint64_t param_nvme_write_bytes; /* updated weights written back to NVMe */
    uint64_t nvme_read_bytes, nvme_write_bytes;
    uint64_t collective_bytes; /* bytes this rank sent in the step's reduce-scatters and
                                * all-gathers (ring algorithm: (world-1) blocks each) */
    uint64_t cpu_pass_bytes;   /* bytes the CPU's passes read plus wrote in host memory: the
                                * fused step (gradient, p, m, v, the 16-bit weights), gradient
                                * copies, casts and sums out of the ring, delayed weight copies;
                                * not DMA (PCIe, NVMe) */
    double cpu_adam_ms;        /* CPU busy in the fused step */
    double cpu_wait_grad_ms;   /* CPU worker idle, waiting for gradients to arrive */
    double nvme_wait_ms;       /* CPU worker blocked on NVMe reads or write-backs */
    double step_ms;            /* from the first gradient's arrival to the last weight sent */
} zoff_engine_step_report;

/* Waits until every queued step is applied and its weights are on the device. */
int zoff_engine_flush(zoff_engine *e, zoff_dev_stream *s);
/* The optimizer state for a checkpoint, over the flat layout (n_params floats each; padding
 * outside the buckets reads as 0): master weights, Adam moments as fp32, the number of updates
 * applied and the loss scale. Flushes first. master may be NULL. With several ranks every rank
 * calls it (a collective): rank 0 receives the whole state, gathered from the ranks' blocks;
 * the other ranks' outputs are not written and may be NULL. */
int zoff_engine_save_state(zoff_engine *e, zoff_dev_stream *s, float *master, float *m, float *v,
                           int64_t *updates, float *loss_scale);
/* Restores moments, update count (bias correction continues from it) and loss scale, e.g.
 * to resume; the master weights are the ones given at creation. Flushes first. With several
 * ranks every rank passes the whole state and keeps its blocks. */
int zoff_engine_load_state(zoff_engine *e, zoff_dev_stream *s, const float *m, const float *v,
                           int64_t updates, float loss_scale);

/* The report of the last completed step (-EAGAIN if none yet). Does not block. */
int zoff_engine_last_report(zoff_engine *e, zoff_engine_step_report *out);
/* The report of optimizer step `step` (0-based, counted from this engine's creation), waiting
 * (host) until the CPU worker has finished it: -EINVAL for a step not yet ended, -ENOENT once
 * it is older than the last 8. With DPU, ask for a step only after the next one has ended, or
 * the wait serializes the pipeline. */
int zoff_engine_report_of_step(zoff_engine *e, int64_t step, zoff_engine_step_report *out);
/* Copies the fp32 master weights to host memory (n_params floats); flushes first. Several
 * ranks: a collective, as zoff_engine_save_state. */
int zoff_engine_get_master(zoff_engine *e, zoff_dev_stream *s, float *out);

/* Trace spans of the trainer's own work (forward, backward) on stream s, shown beside the
 * engine's copies and CPU work when cfg.trace_path is set; no-ops otherwise. */
int zoff_engine_trace_begin(zoff_engine *e, zoff_dev_stream *s, const char *name);
void zoff_engine_trace_end(zoff_engine *e, zoff_dev_stream *s, int id);
/* A span of host work (any thread) on its own lane, from t0_us to t1_us by
 * zoff_engine_trace_now_us (0 when not tracing, or e NULL). lane and name are kept as given
 * (string literals). Thread-safe. */
double zoff_engine_trace_now_us(const zoff_engine *e);
void zoff_engine_trace_host(zoff_engine *e, const char *lane, const char *name, double t0_us,
                            double t1_us);

/* Sizes the engine holds, for the user to see. */
typedef struct zoff_engine_memory {
    size_t device_bytes;       /* bucket buffers and per-bucket statistics */
    size_t param_device_bytes; /* streamed weights: the ring and the resident groups */
    size_t pinned_bytes;       /* gradient and weight staging rings */
    size_t host_bytes;         /* optimizer state in CPU memory (or NVMe staging) and grad copies */
    size_t nvme_bytes;         /* swap space */
    size_t n_buckets, bucket_elems_max;
    size_t n_params; /* parameters the buckets cover: first tensor to the end of the last */
} zoff_engine_memory;
void zoff_engine_get_memory(const zoff_engine *e, zoff_engine_memory *out);
/* The device bytes (zoff_engine_memory.device_bytes) an engine with this configuration and
 * these tensors will allocate, computed without creating it: for a device plan shown before
 * anything is allocated. */
int zoff_engine_plan_device_bytes(const zoff_engine_config *cfg, const zoff_engine_tensor *tensors,
                                  size_t n_tensors, size_t *bytes);
/* Streamed weights: the device bytes of the ring and the resident groups
 * (zoff_engine_memory.param_device_bytes) for cfg's groups in cfg->dtype. */
int zoff_engine_plan_param_bytes(const zoff_engine_config *cfg, size_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
