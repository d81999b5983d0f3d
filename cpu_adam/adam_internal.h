/* cpu_adam internals: the per-ISA kernel table and the constants a step precomputes.
 *
 * Every ISA file (adam_scalar.c, adam_avx2.c, adam_avx512.c) exports one zoff_adam_kernels
 * table. Kernels work on one range of elements on the calling thread; partitioning over the
 * pool happens in step.c and reduce.c. Vector kernels must compute every element with the same
 * instruction sequence (tails are padded into a full vector), so a result never depends on where
 * a range starts or ends.
 */
#ifndef ZOFF_CPU_ADAM_INTERNAL_H
#define ZOFF_CPU_ADAM_INTERNAL_H

#include "cpu_adam/cpu_adam.h"

/* Per-step constants, computed once in double and rounded to float (step.c). Every kernel
 * computes, per element (fp32):
 *   g = grad * grad_scale (+ l2 * p)
 *   m = beta1 m + m_coef g;  v = beta2 v + (v_coef g) g
 *   p = p * decay - step_size * m / (sqrt(v) + eps)
 * which is Adam's update with the bias corrections folded into step_size and eps as in Kingma
 * and Ba's own efficient form: step_size = lr sqrt(bc2) / bc1, eps = eps sqrt(bc2). Without an
 * L2 term (AdamW) the gradient multiplier is folded too (grad_scale = 1, m_coef = (1 - beta1)
 * scale, v_coef = (1 - beta2) scale^2), which saves a multiply per element; vector kernels rely
 * on it (when l2 is 0 they skip "* grad_scale"), so step.c runs the scalar kernel for the rare
 * step whose folded coefficients would leave the normal fp32 range. */
typedef struct zoff_adam_consts {
    float beta1, m_coef;
    float beta2, v_coef;
    float eps;
    float grad_scale;
    float l2;        /* weight_decay in L2 mode, else 0 */
    float decay;     /* 1 - lr * weight_decay in AdamW mode, else 1 */
    float step_size; /* lr sqrt(bc2) / bc1 (bc = 1 - beta^step, or 1 without bias correction) */
} zoff_adam_consts;

/* Output kind of a step: none, or out_dtype + 1. */
enum {
    ZOFF_ADAM_OUT_NONE = 0,
    ZOFF_ADAM_OUT_F32 = 1,
    ZOFF_ADAM_OUT_F16 = 2,
    ZOFF_ADAM_OUT_BF16 = 3
};

typedef struct zoff_adam_kernels {
    zoff_adam_isa isa;
    /* Updates elements [begin, end) of buf. */
    void (*step)(const zoff_adam_consts *c, const zoff_adam_buffers *buf, size_t begin, size_t end);
    /* Sum of squares of x[0..n) in double, in a fixed order for a given n. */
    double (*sumsq)(const void *x, zoff_dtype dtype, size_t n);
    size_t (*count_nonfinite)(const void *x, zoff_dtype dtype, size_t n);
    /* Converts n elements; src_dtype != dst_dtype. */
    void (*cast)(const void *src, zoff_dtype src_dtype, void *dst, zoff_dtype dst_dtype, size_t n);
} zoff_adam_kernels;

extern const zoff_adam_kernels zoff_adam_kernels_scalar;
extern const zoff_adam_kernels zoff_adam_kernels_avx2;
extern const zoff_adam_kernels zoff_adam_kernels_avx512;
extern const zoff_adam_kernels zoff_adam_kernels_avx512bf16;

/* The kernel table of an ISA (resolved, supported). Never NULL for a valid ISA. */
const zoff_adam_kernels *zoff_adam_kernels_for(zoff_adam_isa isa);

/* Shared by the thread pool wrappers: the kernels a pool (or NULL: best ISA) runs. */
const zoff_adam_kernels *zoff_adam_pool_kernels(const zoff_adam_pool *pool);
/* Runs fn on the pool's workers, or once as (arg, 0, 1) on the calling thread for a NULL pool or
 * when n (the elements the task covers) fits in one chunk: then the whole range belongs to
 * worker 0 anyway, and waking the pool would cost more than the work. Results are the same
 * either way (same kernels, same chunking). */
int zoff_adam_run(zoff_adam_pool *pool, size_t n, zoff_adam_task_fn fn, void *arg);

#endif
