/* cpu_adam: the fused, vectorized CPU Adam/AdamW step and the helpers the engine runs on the
 * gradients it receives from the GPU (sum of squares, inf/nan count, dtype casts), executed on a
 * persistent pool of hwloc-pinned threads.
 *
 * One step is one pass over memory: per element it reads the gradient (f32, f16 or bf16), the
 * fp32 master weight and the moments m, v (fp32, or bf16 with round-to-nearest-even), applies one
 * combined gradient multiplier (1/loss_scale x clip coefficient), updates p, m, v in place and
 * writes the updated weight as fp16/bf16 (or fp32) into a separate output buffer.
 *
 * Invariants:
 *  - Results never depend on the number of threads: work is split on fixed chunk boundaries
 *    (ZOFF_ADAM_CHUNK elements), every element of a vector path goes through the same vector
 *    code (tails are padded, not done in scalar), and reductions are per-chunk partials summed
 *    in chunk order.
 *  - 16-bit outputs are bit-identical to core/half.h's rounding of the path's own fp32 values.
 *  - The scalar path is the reference; vector paths agree with it to a tight relative tolerance
 *    in fp32 (they use FMA).
 *  - The library never reads the environment: callers choose an ISA in the pool config
 *    (bench/ and tests/ read ZOFF_ISA).
 *
 * Threads: a pool is used by one caller at a time (calls on one pool are serialized by a mutex);
 * different pools are independent. Functions taking a NULL pool run on the calling thread with
 * zoff_adam_isa_best(); calls covering at most ZOFF_ADAM_CHUNK elements also run on the calling
 * thread (with the pool's ISA), since waking the workers would cost more than the work.
 */
#ifndef ZOFF_CPU_ADAM_H
#define ZOFF_CPU_ADAM_H

#include "zoff/zoff.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Elements per partition chunk: the unit of static partitioning and of reduction partials. */
#define ZOFF_ADAM_CHUNK 8192

/* ---- Instruction set dispatch ---------------------------------------------------------- */

typedef enum zoff_adam_isa {
    ZOFF_ADAM_ISA_AUTO = -1,       /* config value only: the best one this CPU supports */
    ZOFF_ADAM_ISA_SCALAR = 0,      /* portable C, the reference */
    ZOFF_ADAM_ISA_AVX2 = 1,        /* AVX2 + FMA + F16C */
    ZOFF_ADAM_ISA_AVX512 = 2,      /* AVX-512 F/BW/VL (+F16C) */
    ZOFF_ADAM_ISA_AVX512_BF16 = 3, /* the same with AVX512-BF16's rounding for bf16 stores */
} zoff_adam_isa;

/* The best ISA this CPU (and this build) supports. */
zoff_adam_isa zoff_adam_isa_best(void);
/* "scalar", "avx2", "avx512", "avx512bf16", "auto"; "?" for an invalid value. */
const char *zoff_adam_isa_name(zoff_adam_isa isa);
/* Parses "scalar", "avx2", "avx512", "avx512bf16" or "auto" (case-insensitive). 0 or -EINVAL. */
int zoff_adam_isa_parse(const char *name, zoff_adam_isa *out);
/* 1 if this CPU can run the ISA (AUTO and SCALAR: always), else 0. */
int zoff_adam_isa_supported(zoff_adam_isa isa);
/* Resolves AUTO to the best ISA; 0, or ZOFF_ECONFIG (with detail naming the missing CPU
 * features) when the CPU lacks the ISA, -EINVAL for an invalid value. */
int zoff_adam_isa_resolve(zoff_adam_isa isa, zoff_adam_isa *out);

/* ---- Thread pool ------------------------------------------------------------------------ */

typedef struct zoff_adam_pool zoff_adam_pool;

typedef struct zoff_adam_pool_config {
    int n_threads;     /* worker threads; 0: one per core left after reserve_cores */
    int reserve_cores; /* cores kept free for other work (GPU feeding, I/O): the first
                          reserve_cores physical cores in hwloc's logical order get no worker */
    int pin;           /* 1: pin each worker to one core (its first PU) through hwloc */
    zoff_adam_isa isa; /* ZOFF_ADAM_ISA_AUTO, or a forced ISA (error if the CPU lacks it) */
} zoff_adam_pool_config;

zoff_adam_pool_config zoff_adam_pool_config_default(void);

/* Starts the workers (they persist until destroy). Errors: ZOFF_ECONFIG (bad thread/reserve
 * counts, unsupported ISA), -ENOMEM, -errno from pthread_create, -EIO if hwloc fails. */
int zoff_adam_pool_create(const zoff_adam_pool_config *cfg, zoff_adam_pool **out);
void zoff_adam_pool_destroy(zoff_adam_pool *pool); /* NULL is fine */
int zoff_adam_pool_threads(const zoff_adam_pool *pool);
zoff_adam_isa zoff_adam_pool_isa(const zoff_adam_pool *pool);
/* The hwloc logical index of the core worker tid is pinned to, or -1 if it is not pinned. */
int zoff_adam_pool_core(const zoff_adam_pool *pool, int tid);

/* Runs fn(arg, tid, n_threads) once on every worker and returns when all have finished.
 * Dispatch costs a condition-variable wake-up (~10-20 us); do not call it from inside a task of
 * the same pool (it would wait for itself). */
typedef void (*zoff_adam_task_fn)(void *arg, int tid, int n_threads);
int zoff_adam_pool_run(zoff_adam_pool *pool, zoff_adam_task_fn fn, void *arg);

/* The static partition: elements [*begin, *end) of n belong to worker tid of n_threads. Ranges
 * start on multiples of ZOFF_ADAM_CHUNK and depend only on (n, tid, n_threads). */
void zoff_adam_partition(size_t n, int tid, int n_threads, size_t *begin, size_t *end);

/* NUMA first touch: zero-fills buf (n elements of elem_size bytes) with each worker writing the
 * elements it will own in zoff_adam_step, so the pages land on that worker's NUMA node. Call it
 * on freshly allocated (untouched) state buffers, before any other write. */
int zoff_adam_first_touch(zoff_adam_pool *pool, void *buf, size_t n, size_t elem_size);

/* ---- The fused step --------------------------------------------------------------------- */

typedef enum zoff_adam_mode {
    ZOFF_ADAM_L2 = 0,    /* Adam: weight_decay * p is added to the gradient */
    ZOFF_ADAM_ADAMW = 1, /* AdamW: p *= 1 - lr * weight_decay (decoupled) */
} zoff_adam_mode;

typedef struct zoff_adam_params {
    float lr;
    float beta1, beta2;
    float eps;
    float weight_decay;
    zoff_adam_mode mode;
    int bias_correction; /* 1: divide by 1 - beta^step (as PyTorch) */
    int64_t step;        /* 1-based index of this update */
    float grad_scale;    /* combined multiplier: (1 / loss_scale) * clip coefficient */
} zoff_adam_params;

/* zoff_optimizer_get_defaults()'s lr, betas, eps and weight decay; AdamW, bias correction,
 * step 1, grad_scale 1. */
zoff_adam_params zoff_adam_params_default(void);

/* One contiguous partition of parameters. All buffers hold n elements and must not overlap;
 * no alignment is required. */
typedef struct zoff_adam_buffers {
    size_t n;
    float *param;            /* (n) fp32 master weights, updated in place */
    void *m, *v;             /* (n) moments in moment_dtype, updated in place */
    zoff_dtype moment_dtype; /* ZOFF_F32 or ZOFF_BF16 (rounded to nearest even) */
    const void *grad;        /* (n) gradients in grad_dtype, not modified */
    zoff_dtype grad_dtype;   /* ZOFF_F32, ZOFF_F16 or ZOFF_BF16 */
    void *param_out;         /* (n) updated weights in out_dtype, or NULL for none */
    zoff_dtype out_dtype;    /* ZOFF_F16, ZOFF_BF16 or ZOFF_F32 */
} zoff_adam_buffers;

/* Per element (fp32):  g = grad * grad_scale (+ weight_decay * p in L2 mode)
 *   m = beta1 m + (1-beta1) g;  v = beta2 v + (1-beta2) g^2
 *   p = p * (1 - lr wd) [AdamW]  -  (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
 *   out = p rounded to out_dtype
 * Non-finite gradients are not filtered: they propagate into p, m, v (check first with
 * zoff_adam_sumsq or zoff_adam_count_nonfinite). Errors: -EINVAL (NULL buffer, bad dtype,
 * step < 1), ZOFF_ECONFIG (beta outside [0,1), eps < 0, non-finite lr/scale). */
int zoff_adam_step(zoff_adam_pool *pool, const zoff_adam_params *params,
                   const zoff_adam_buffers *buf);

/* ---- Helpers on gradient buffers ------------------------------------------------------- */

/* Sum of squares of x (n elements of dtype), accumulated in double. Deterministic: per-chunk
 * partials summed in chunk order, so it does not depend on the thread count (it may differ
 * between ISAs in the last bits). Non-finite iff some element is non-finite. */
int zoff_adam_sumsq(zoff_adam_pool *pool, const void *x, zoff_dtype dtype, size_t n, double *out);
/* Number of inf/nan elements in x. */
int zoff_adam_count_nonfinite(zoff_adam_pool *pool, const void *x, zoff_dtype dtype, size_t n,
                              size_t *count);
/* dst[i] = src[i] converted (round to nearest even, as core/half.h); any pair of F32/F16/BF16.
 * 16-bit to 16-bit goes through fp32. src and dst must not overlap unless equal dtype and
 * pointer. */
int zoff_adam_cast(zoff_adam_pool *pool, const void *src, zoff_dtype src_dtype, void *dst,
                   zoff_dtype dst_dtype, size_t n);

#ifdef __cplusplus
}
#endif
#endif
