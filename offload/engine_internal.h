/* Internals of the offload engine (include/zoff/engine.h).
 *
 * Pipeline and who owns what:
 *   trainer thread  wait_params / grad_buffer / grad_done / end_micro. It issues, without ever
 *                   blocking on the pipeline: on its compute stream the waits for weights and
 *                   for free device bucket slots, the zeroing of slots and the per-bucket
 *                   sum of squares; on the d2h stream the copy of each full bucket into the
 *                   pinned gradient ring. It then queues a work item for the receiver.
 *   d2h stream      waits for the bucket's compute, for a free ring slot (counter `consumed`
 *                   written by the receiver), copies, then advances `slot_free[k]` and
 *                   `d2h_count` (both counters in pinned memory).
 *   receiver        (CPU thread) takes work items in order; waits (host) on `d2h_count`;
 *                   overlap: runs the fused Adam per bucket straight from the ring; sync/DPU:
 *                   copies (or fp32-accumulates) gradients out of the ring, and at a step's end
 *                   decides norm, clipping and fp16 overflow and hands the step on.
 *   updater         (CPU thread, sync/DPU) applies a step bucket by bucket in forward order
 *                   against the state store (CPU memory or NVMe, read ahead and written back),
 *                   writing 16-bit weights into the pinned weight ring; issues the H2D copy.
 *   h2d stream      (DPU: waits for the next step's backward to end), copies weights into the
 *                   device parameters, advances `h2d_count` and the bucket's `version`.
 * Counters only grow; stream waits on them are how the trainer's stream waits for work the
 * host has not issued yet (see zoff_dev_stream_wait_value).
 *
 * Streamed weights (cfg.params CPU or NVMe, param_store.c): the updater writes a streamed
 * bucket's new weights into the parameter store and advances its version from the host; the
 * trainer's acquire_group fetches a layer group into a device ring slot on the store's fetch
 * stream (which waits for the versions), and the compute stream waits for the fetch.
 */
#ifndef ZOFF_OFFLOAD_ENGINE_INTERNAL_H
#define ZOFF_OFFLOAD_ENGINE_INTERNAL_H

#include "cpu_adam/cpu_adam.h"
#include "gpu/device.h"
#include "gpu/dist.h"
#include "nvme/nvme.h"
#include "offload/trace.h"
#include "zoff/engine.h"

#include <pthread.h>
#include <stdbool.h>

#define MOD            "offload"
#define ENGINE_REPORTS 8 /* step reports kept for zoff_engine_report_of_step() */

typedef struct engine_bucket {
    size_t offset, numel; /* parameter range [offset, offset + numel) */
    /* Data parallelism: the bucket is cut into world blocks of `shard` elements (the last
     * ones may be short or empty); this rank owns [own_offset, own_offset + own_numel) and
     * keeps its optimizer state, CPU gradient copies and ring slots only for that block.
     * host_offset: where the block starts in the rank's compact host arrays (the sum of the
     * earlier buckets' own_numel). A single process owns the whole bucket. */
    size_t shard, own_offset, own_numel, host_offset;
    size_t first_tensor, n_tensors;
    /* trainer thread, per micro-batch */
    int slot;            /* device slot holding its gradient, -1 if none yet */
    size_t tensors_done; /* tensors whose gradient is final */
} engine_bucket;

/* ---------------------------------------------------------------- state store */

typedef struct state_store state_store;

/* Fp32 master weights and moments of every bucket, in CPU memory or on NVMe. */
int state_store_create(zoff_engine *e, const float *init_master, state_store **out);
void state_store_destroy(state_store *st);
/* Pointers to bucket b's p, m, v, loading them if needed (blocks on NVMe reads). */
int state_store_acquire(state_store *st, size_t b, float **p, void **m, void **v);
/* Starts loading bucket b if a staging buffer is free (NVMe; no-op in CPU memory). */
void state_store_prefetch(state_store *st, size_t b);
/* Bucket b was updated: write it back (NVMe, asynchronously). */
int state_store_release(state_store *st, size_t b);
/* Waits for all write-backs. */
int state_store_drain(state_store *st);
/* Copies bucket b's master weights into master (may be NULL) and its moments, widened to
 * fp32, into m and v (numel floats each). */
int state_store_read(state_store *st, size_t b, float *master, float *m, float *v);
/* Replaces bucket b's moments with m and v (fp32, narrowed as stored). */
int state_store_write_moments(state_store *st, size_t b, const float *m, const float *v);
size_t state_store_host_bytes(const state_store *st);
size_t state_store_nvme_bytes(const state_store *st);
/* NVMe bytes moved and time blocked since the last call (for step reports). */
void state_store_take_counters(state_store *st, uint64_t *read, uint64_t *written, double *wait_ms);

/* ---------------------------------------------------------------- parameter store */

typedef struct param_store param_store;
struct work_item;

/* Streamed weights (cfg.params CPU or NVMe): the 16-bit weights of every group in pinned CPU
 * memory (rounded from init_master), the resident groups' device copies and the device ring
 * of streamed groups. Trainer thread: acquire, release, end_micro. Updater: host_weights,
 * bucket writes. See param_store.c. */
int param_store_create(zoff_engine *e, const float *init_master, param_store **out);
void param_store_destroy(param_store *ps);
int param_store_acquire(param_store *ps, size_t group, zoff_dev_stream *s, void **base);
int param_store_release(param_store *ps, zoff_dev_stream *s);
/* End of a micro-batch (trainer): the group order seen becomes the prefetch schedule; the
 * micro-batch's fetch counters are added into w (the last micro-batch of a step) or kept. */
int param_store_end_micro(param_store *ps, zoff_dev_stream *s, struct work_item *w);
/* Where the updater writes bucket b's new 16-bit weights (numel elements), then commits them
 * (NVMe: written back, synchronously) before advancing the bucket's version. */
void *param_store_bucket_weights(param_store *ps, size_t b);
int param_store_commit(param_store *ps, size_t b);
/* NVMe weight bytes written back since the last call (updater). */
uint64_t param_store_take_nvme_written(param_store *ps);
/* Stops the NVMe reader (after the CPU worker threads), releasing what it waits for. */
void param_store_stop(param_store *ps);
/* Whether bucket b lies in a streamed group (its weights go to the store, not by H2D). */
bool param_store_bucket_streamed(const param_store *ps, size_t b);
/* Device address of resident bucket b's weights (the H2D target of its update). */
void *param_store_bucket_device(param_store *ps, size_t b);
size_t param_store_device_bytes(const param_store *ps);
size_t param_store_pinned_bytes(const param_store *ps);
/* Device bytes for cfg's groups: resident groups plus the ring. */
int param_store_plan_bytes(const zoff_engine_config *cfg, size_t esize, size_t *bytes);

/* ---------------------------------------------------------------- worker queue */

typedef enum work_kind {
    WORK_FILL = 0,     /* a bucket's gradient is on its way into the ring */
    WORK_STEP_END = 1, /* the last micro-batch of optimizer step `step` has ended */
    WORK_STOP = 2,
} work_kind;

typedef struct work_item {
    work_kind kind;
    uint32_t fill; /* WORK_FILL: sequence number of the D2H copy */
    size_t bucket;
    int micro;        /* micro-batch index within the accumulation */
    int64_t step;     /* optimizer step */
    float loss_scale; /* the scale the step's gradients carry */
    float lr;         /* learning rate of the step */
    /* decided by the receiver for the updater */
    int skip;
    float grad_scale; /* clip_coef / loss_scale */
    double grad_norm, clip_coef;
    /* WORK_STEP_END with streamed weights: the step's fetches (trainer side) */
    uint64_t fetch_bytes, refetch_bytes, fetches, nvme_read_bytes;
} work_item;

/* Counters in pinned memory, one cache line each would be nicer; they are few. */
typedef struct engine_counters {
    uint32_t d2h_count; /* D2H copies completed (d2h stream) */
    uint32_t consumed;  /* grad ring slots released (worker) */
    uint32_t h2d_count; /* H2D copies completed (h2d stream) */
    uint32_t step_end;  /* optimizer steps whose backward has ended (compute stream) */
    uint32_t decided;   /* steps whose overflow / loss scale decision is made (worker) */
} engine_counters;

struct zoff_engine {
    zoff_dev *dev;
    zoff_engine_config cfg;
    size_t esize; /* bytes per element of cfg.dtype */
    void *dparams;
    size_t n_params;
    zoff_engine_tensor *tensors;
    char **tensor_names;
    size_t n_tensors;
    size_t *tensor_bucket;
    engine_bucket *buckets;
    size_t n_buckets, bucket_elems_max;

    /* device */
    int n_slots;
    void **slot_buf;   /* (n_slots, bucket_elems_max) in dtype */
    float *slot_stats; /* (n_slots, 2): sumsq, nonfinite */
    int *slot_owner;   /* trainer: bucket in the slot this micro-batch, or -1 */
    bool *slot_open;   /* trainer: the owner's gradient is still being written */
    uint32_t *slot_uses;
    zoff_dev_event **slot_ready; /* recorded on the compute stream when a slot's bucket is full */
    bool *tensor_done;           /* trainer: per tensor, this micro-batch */
    zoff_dev_stream *d2h, *h2d;
    size_t slot_elems; /* elements of a device slot: world * the largest shard */

    /* data parallelism (world > 1); see the bucket's shard fields */
    int rank, world;
    size_t n_own, own_max;   /* elements this rank owns in all, and in its largest block */
    zoff_dist *dist;         /* the engine's own host communicator (global norm, save, load) */
    zoff_dev_comm *rs_comm;  /* reduce-scatters, issued by the trainer thread on `rs` */
    zoff_dev_comm *ag_comm;  /* all-gathers, issued by the applying thread on `h2d` */
    zoff_dev_stream *rs;     /* gradients: reduce-scatter and statistics of the own block */
    void *gather_buf;        /* (slot_elems) dtype: the all-gather's target */

    /* pinned */
    engine_counters *ctr;
    uint32_t *slot_free; /* (n_slots) D2H copies out of each slot completed */
    uint32_t *version;   /* (n_buckets) updates applied to the device weights */
    int n_grad_ring, n_param_ring;
    void **grad_ring;       /* (n_grad_ring, bucket_elems_max) */
    float *grad_ring_stats; /* (n_grad_ring, 2) */
    void **param_ring;      /* (n_param_ring, bucket_elems_max) */

    /* trainer thread */
    uint32_t fills_issued;
    int micro;
    int64_t step;          /* optimizer step being accumulated */
    int64_t step_base;     /* steps of the state load_state restored: DPU's warm-up counts them */
    float loss_scale_used; /* scale of the current step's gradients */
    float lr;              /* for steps ended from now on */

    /* CPU side. Gradients of a step land in one of n_sets buffer sets (two for DPU, where
     * step s+1's gradients arrive while step s is being applied). */
    zoff_adam_pool *pool;
    state_store *store;
    param_store *params; /* streamed weights only */
    zoff_nvme_swap *swap;
    int n_sets;
    void *grad_host[2];      /* sync/DPU without accumulation: (n_params) dtype */
    float *grad_accum[2];    /* accumulation: (n_params) fp32 sums */
    float *accum_scratch;    /* (bucket_elems_max) fp32 */
    double *bucket_sumsq[2]; /* (n_buckets) */
    bool *bucket_nonfinite[2];
    bool set_busy[2];              /* the updater still reads this set */
    int64_t set_step[2];           /* step whose gradients the set holds, -1 none */
    zoff_engine_step_report rx[2]; /* receiver's part of each set's step report */
    double rx_first_ms[2];
    size_t *next_arrival;  /* overlap: the bucket that arrived after each one last time */
    size_t last_arrival;   /* overlap: the bucket that arrived last (SIZE_MAX: none) */
    uint32_t h2d_issued;   /* updater */
    int64_t applied_steps; /* updates applied, for bias correction */
    float loss_scale;      /* receiver: scale for the steps not yet decided */
    int good_steps;
    bool warned_nonfinite;

    pthread_t receiver, updater;
    bool receiver_started, updater_started;
    pthread_mutex_t lock; /* guards the queues, set flags, reports and error */
    pthread_cond_t cond;
    work_item *queue; /* receiver's queue */
    size_t q_head, q_len, q_cap;
    work_item *uqueue; /* updater's queue (WORK_STEP_END with decision filled in) */
    size_t uq_head, uq_len, uq_cap;
    int64_t steps_completed; /* steps whose update (or skip) is fully issued */
    int error;
    char error_detail[512]; /* what the thread that failed first said */
    zoff_engine_step_report last_report;
    zoff_engine_step_report reports[ENGINE_REPORTS]; /* of step s at s % ENGINE_REPORTS */
    bool have_report;
    float decided_scale;

    zoff_trace *trace;
};

/* Device bytes of n_slots bucket slots of slot_bytes each, their statistics and (world > 1)
 * the all-gather buffer of one slot, as the device layer counts them (each allocation rounded
 * up to its 256-byte alignment). */
static inline size_t engine_device_bytes(int n_slots, size_t slot_bytes, int world) {
    size_t a = 256, stats = (size_t)n_slots * 2 * sizeof(float);
    size_t slot = (slot_bytes + a - 1) / a * a;
    return (size_t)n_slots * slot + (stats + a - 1) / a * a + (world > 1 ? slot : 0);
}

/* offload/buckets.c: the buckets, then each rank's block of them (e->rank, e->world set). */
int engine_build_buckets(zoff_engine *e);
/* offload/cpu_worker.c: the receiver takes gradients out of the ring and decides each step;
 * the updater (sync/DPU) applies the steps. */
void *engine_receiver_main(void *arg);
void *engine_updater_main(void *arg);
int engine_queue_push(zoff_engine *e, const work_item *w);
/* offload/grad_path.c: version a forward of the current step needs for bucket b. */
uint32_t engine_required_version(const zoff_engine *e);
int engine_worker_error(zoff_engine *e);
/* Sets the worker's error (first one wins) and wakes everyone. */
void engine_set_error(zoff_engine *e, int err);

#endif
