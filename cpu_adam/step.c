/* zoff_adam_step: validates a step's parameters and buffers, precomputes the per-step constants
 * once (in double), and runs the ISA kernel over the pool's static partition. Each worker owns a
 * disjoint element range of every buffer for the duration of the call. */
#include "cpu_adam/adam_internal.h"
#include "core/log.h"

#include <errno.h>
#include <math.h>

zoff_adam_params zoff_adam_params_default(void) {
    zoff_optimizer_defaults d = zoff_optimizer_get_defaults();
    zoff_adam_params p = {
        .lr = d.lr,
        .beta1 = d.beta1,
        .beta2 = d.beta2,
        .eps = d.eps,
        .weight_decay = d.weight_decay,
        .mode = ZOFF_ADAM_ADAMW,
        .bias_correction = 1,
        .step = 1,
        .grad_scale = 1.0f,
    };
    return p;
}

static int valid_dtype(zoff_dtype t) {
    return t == ZOFF_F32 || t == ZOFF_F16 || t == ZOFF_BF16;
}

static int check_step(const zoff_adam_params *p, const zoff_adam_buffers *b) {
    if (!p || !b) return zoff_fail(-EINVAL, "cpu_adam", "step: NULL params or buffers");
    if (b->n && (!b->param || !b->m || !b->v || !b->grad))
        return zoff_fail(-EINVAL, "cpu_adam", "step: NULL param, m, v or grad buffer");
    if (!valid_dtype(b->grad_dtype))
        return zoff_fail(-EINVAL, "cpu_adam", "step: invalid grad_dtype %d", (int)b->grad_dtype);
    if (b->moment_dtype != ZOFF_F32 && b->moment_dtype != ZOFF_BF16)
        return zoff_fail(-EINVAL, "cpu_adam", "step: moment_dtype must be f32 or bf16, not %s",
                         zoff_dtype_name(b->moment_dtype));
    if (b->param_out && !valid_dtype(b->out_dtype))
        return zoff_fail(-EINVAL, "cpu_adam", "step: invalid out_dtype %d", (int)b->out_dtype);
    if (p->step < 1)
        return zoff_fail(-EINVAL, "cpu_adam", "step: step %lld must be >= 1", (long long)p->step);
    if (p->mode != ZOFF_ADAM_L2 && p->mode != ZOFF_ADAM_ADAMW)
        return zoff_fail(-EINVAL, "cpu_adam", "step: invalid mode %d", (int)p->mode);
    if (!(p->beta1 >= 0.0f && p->beta1 < 1.0f) || !(p->beta2 >= 0.0f && p->beta2 < 1.0f))
        return zoff_fail(ZOFF_ECONFIG, "cpu_adam", "step: betas (%g, %g) must be in [0, 1)",
                         (double)p->beta1, (double)p->beta2);
    if (!(p->eps >= 0.0f) || !isfinite(p->eps))
        return zoff_fail(ZOFF_ECONFIG, "cpu_adam", "step: eps %g must be finite and >= 0",
                         (double)p->eps);
    if (!isfinite(p->lr) || !isfinite(p->weight_decay) || !isfinite(p->grad_scale))
        return zoff_fail(ZOFF_ECONFIG, "cpu_adam",
                         "step: lr %g, weight_decay %g and grad_scale %g must be finite",
                         (double)p->lr, (double)p->weight_decay, (double)p->grad_scale);
    return 0;
}

/* The folded AdamW coefficients stay well inside the normal range, so that c * grad stays normal
 * for every fp16 gradient (>= 2^-24); outside it the scalar kernel runs the unfolded form. */
static int foldable(double c) {
    return c == 0.0 || (fabs(c) >= 0x1p-100 && fabs(c) <= 0x1p100);
}

/* See adam_internal.h for the arithmetic. Without an L2 term (AdamW, or L2 mode with no weight
 * decay: the same update) the gradient multiplier goes into m_coef and v_coef when it can, and
 * grad_scale becomes 1. */
static zoff_adam_consts make_consts(const zoff_adam_params *p) {
    double b1 = p->beta1, b2 = p->beta2, lr = p->lr, wd = p->weight_decay;
    double scale = p->grad_scale;
    double bc1 = 1.0, bc2 = 1.0;
    if (p->bias_correction) {
        bc1 = 1.0 - pow(b1, (double)p->step);
        bc2 = 1.0 - pow(b2, (double)p->step);
    }
    /* beta1 = 0 gives bc1 = 1; bc2 > 0 since beta2 < 1 and step >= 1. */
    double sqrt_bc2 = sqrt(bc2);
    zoff_adam_consts c = {
        .beta1 = (float)b1,
        .m_coef = (float)(1.0 - b1),
        .beta2 = (float)b2,
        .v_coef = (float)(1.0 - b2),
        .eps = (float)(p->eps * sqrt_bc2),
        .grad_scale = p->grad_scale,
        .l2 = p->mode == ZOFF_ADAM_L2 ? (float)wd : 0.0f,
        .decay = p->mode == ZOFF_ADAM_ADAMW ? (float)(1.0 - lr * wd) : 1.0f,
        .step_size = (float)(lr * sqrt_bc2 / bc1),
    };
    double fm = (1.0 - b1) * scale, fv = (1.0 - b2) * scale * scale;
    if (c.l2 == 0.0f && foldable(fm) && foldable(fv)) {
        c.grad_scale = 1.0f;
        c.m_coef = (float)fm;
        c.v_coef = (float)fv;
    }
    return c;
}

typedef struct step_task {
    const zoff_adam_kernels *k;
    zoff_adam_consts c;
    const zoff_adam_buffers *buf;
} step_task;

static void step_run(void *p, int tid, int n_threads) {
    step_task *t = p;
    size_t b, e;
    zoff_adam_partition(t->buf->n, tid, n_threads, &b, &e);
    if (e > b) t->k->step(&t->c, t->buf, b, e);
}

int zoff_adam_step(zoff_adam_pool *pool, const zoff_adam_params *params,
                   const zoff_adam_buffers *buf) {
    int rc = check_step(params, buf);
    if (rc) return rc;
    if (buf->n == 0) return 0;
    step_task t = {zoff_adam_pool_kernels(pool), make_consts(params), buf};
    /* Without an L2 term vector kernels skip "* grad_scale": a step whose multiplier could not
     * be folded (|grad_scale| beyond about 2^+-45: a diverged step's clip coefficient) runs the
     * scalar kernel, same partition. */
    if (t.c.l2 == 0.0f && t.c.grad_scale != 1.0f) t.k = &zoff_adam_kernels_scalar;
    return zoff_adam_run(pool, buf->n, step_run, &t);
}
