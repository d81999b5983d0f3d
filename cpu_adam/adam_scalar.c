/* The portable scalar Adam step and helpers: the reference every vector path is tested
 * against. Plain C, no FMA contraction (the build uses -std=c11, so -ffp-contract=off), 16-bit
 * conversions through core/half.h. Runs on the calling thread; stateless. */
#include "cpu_adam/adam_internal.h"
#include "core/half.h"

#include <math.h>
#include <string.h>

static void step_scalar(const zoff_adam_consts *c, const zoff_adam_buffers *b, size_t begin,
                        size_t end) {
    for (size_t i = begin; i < end; i++) {
        float p = b->param[i];
        float g = zoff_load_as_f32(b->grad, b->grad_dtype, i) * c->grad_scale;
        if (c->l2 != 0.0f) g = g + c->l2 * p; /* as the vector paths: no 0 * inf */
        float m = zoff_load_as_f32(b->m, b->moment_dtype, i);
        float v = zoff_load_as_f32(b->v, b->moment_dtype, i);
        m = c->beta1 * m + c->m_coef * g;
        v = c->beta2 * v + (c->v_coef * g) * g;
        p = p * c->decay - c->step_size * (m / (sqrtf(v) + c->eps));
        b->param[i] = p;
        zoff_store_from_f32(b->m, b->moment_dtype, i, m);
        zoff_store_from_f32(b->v, b->moment_dtype, i, v);
        if (b->param_out) zoff_store_from_f32(b->param_out, b->out_dtype, i, p);
    }
}

static double sumsq_scalar(const void *x, zoff_dtype t, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double f = zoff_load_as_f32(x, t, i);
        s += f * f;
    }
    return s;
}

static size_t count_nonfinite_scalar(const void *x, zoff_dtype t, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += !isfinite(zoff_load_as_f32(x, t, i));
    return count;
}

static void cast_scalar(const void *src, zoff_dtype st, void *dst, zoff_dtype dt, size_t n) {
    for (size_t i = 0; i < n; i++)
        zoff_store_from_f32(dst, dt, i, zoff_load_as_f32(src, st, i));
}

const zoff_adam_kernels zoff_adam_kernels_scalar = {
    .isa = ZOFF_ADAM_ISA_SCALAR,
    .step = step_scalar,
    .sumsq = sumsq_scalar,
    .count_nonfinite = count_nonfinite_scalar,
    .cast = cast_scalar,
};
