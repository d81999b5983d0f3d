/* The vector Adam step, sum of squares and casts, written once over a small set of primitives
 * that each ISA file (adam_avx2.c, adam_avx512.c) defines before including this file:
 *
 *   ZOFF_SIMD_W                       lanes per vector (8 or 16)
 *   vf                                fp32 vector type; vd: fp64 vector accumulator type
 *   vf_set1, vf_add, vf_mul, vf_div, vf_sqrt
 *   vf_fmadd(a, b, c) = a*b + c,  vf_fnmadd(a, b, c) = c - a*b   (fused)
 *   vf_load_f32/f16/bf16(ptr), vf_store_f32/f16/bf16(ptr, x)     (unaligned)
 *   vd_zero(), vd_acc_sq(acc_lo, acc_hi, x), vd_hsum(a, b)
 *   optional: ZOFF_SIMD_HAVE_BF16_PAIR with vf_any_nan2(a, b) (nonzero when a lane of a or b is
 *             NaN), a type vh of 2 * ZOFF_SIMD_W 16-bit values, vh_zero(), vh_store(ptr, x) and
 *             vh_bf16_pair(a0, a1, may_nan) (a0, a1 rounded to bf16, in order; may_nan = 0
 *             promises no NaN lane): then every step with bf16 moments or bf16 output runs two
 *             vectors per iteration (same per-element operations)
 *   ZOFF_SIMD_NAME(x)                 suffixes a symbol with the ISA name
 *
 * Every element goes through the same vector instruction sequence: the last partial vector of a
 * range is copied into a zero-padded block, computed as a full vector and copied back. So an
 * element's result does not depend on how a range was split between threads. Functions here
 * are static; the ISA file exports them in its kernel table. Runs on the calling thread only.
 */
#include <stdint.h>
#include <string.h>

#define ZOFF_SIMD_INLINE static inline __attribute__((always_inline))

/* Elements ahead of the current one that the bf16-moment loop prefetches (2 KiB of p). The
 * address is computed as an integer: it may lie past the end of the buffer. */
#define ZOFF_SIMD_PREFETCH 512
#define SIMD_PREFETCH(base, i, esize, rw)                                                          \
    __builtin_prefetch((const void *)((uintptr_t)(base) + ((i) + ZOFF_SIMD_PREFETCH) * (esize)), rw)

ZOFF_SIMD_INLINE size_t simd_dsize(int t) {
    return t == ZOFF_F32 ? 4 : 2;
}

ZOFF_SIMD_INLINE vf simd_load(const void *x, int t, size_t i) {
    if (t == ZOFF_F32) return vf_load_f32((const float *)x + i);
    if (t == ZOFF_F16) return vf_load_f16((const uint16_t *)x + i);
    return vf_load_bf16((const uint16_t *)x + i);
}

ZOFF_SIMD_INLINE void simd_store(void *x, int t, size_t i, vf f) {
    if (t == ZOFF_F32)
        vf_store_f32((float *)x + i, f);
    else if (t == ZOFF_F16)
        vf_store_f16((uint16_t *)x + i, f);
    else
        vf_store_bf16((uint16_t *)x + i, f);
}

typedef struct simd_consts {
    vf beta1, mcoef, beta2, vcoef, eps, scale, l2, decay, step_size;
} simd_consts;

/* One vector of elements starting at index i: updates p (stored, with the 16-bit output) and
 * returns it, and the new moments in *mo, *vo for the caller to store. p is NaN wherever m or v
 * is (a NaN m or v reaches p through m / denom). gd, md: zoff_dtype of grad and moments; od:
 * ZOFF_ADAM_OUT_* kind. Same operation order as adam_scalar.c, with FMA. Without an L2 term
 * grad_scale is 1 (step.c folds it into mcoef and vcoef), so its multiply is skipped. */
ZOFF_SIMD_INLINE vf simd_step_pmv(const simd_consts *k, float *param, const void *m_,
                                  const void *v_, const void *grad, void *out, size_t i, int gd,
                                  int md, int od, int l2, vf *mo, vf *vo) {
    vf p = vf_load_f32(param + i);
    vf g = simd_load(grad, gd, i);
    if (l2)
        g = vf_fmadd(k->l2, p, vf_mul(g, k->scale)); /* Adam: decay is 1 */
    else
        p = vf_mul(p, k->decay); /* AdamW: l2 is 0, grad_scale is 1 */
    vf m = simd_load(m_, md, i);
    vf v = simd_load(v_, md, i);
    m = vf_fmadd(k->beta1, m, vf_mul(k->mcoef, g));
    v = vf_fmadd(vf_mul(k->vcoef, g), g, vf_mul(k->beta2, v));
    p = vf_fnmadd(k->step_size, vf_div(m, vf_add(vf_sqrt(v), k->eps)), p);
    vf_store_f32(param + i, p);
    if (od != ZOFF_ADAM_OUT_NONE) simd_store(out, od - 1, i, p);
    *mo = m;
    *vo = v;
    return p;
}

/* One vector of elements starting at index i, moments stored. */
ZOFF_SIMD_INLINE void simd_step_vec(const simd_consts *k, float *param, void *m_, void *v_,
                                    const void *grad, void *out, size_t i, int gd, int md, int od,
                                    int l2) {
    vf m, v;
    simd_step_pmv(k, param, m_, v_, grad, out, i, gd, md, od, l2, &m, &v);
    simd_store(m_, md, i, m);
    simd_store(v_, md, i, v);
}

#ifdef ZOFF_SIMD_HAVE_BF16_PAIR
/* The bf16 streams of a pair of vectors: the weights (p0, p1) when the output is bf16, and the
 * moments when they are bf16, rounded into *ph, *mh, *vh_. may_nan is a constant at each call, so
 * the NaN-free case, the common one, gets straight-line code. */
ZOFF_SIMD_INLINE void simd_bf16_pairs(int md, int od, vf p0, vf p1, vf m0, vf m1, vf v0, vf v1,
                                      int may_nan, vh *ph, vh *mh, vh *vh_) {
    if (od == ZOFF_ADAM_OUT_BF16) *ph = vh_bf16_pair(p0, p1, may_nan);
    if (md == ZOFF_BF16) {
        *mh = vh_bf16_pair(m0, m1, may_nan);
        *vh_ = vh_bf16_pair(v0, v1, may_nan);
    }
}
#endif

/* Full vectors of [i, end) from i on; returns where they end. The buffer pointers are local
 * copies: the compiler then keeps them in registers (stores through 16-bit pointers could
 * otherwise alias the zoff_adam_buffers struct). */
ZOFF_SIMD_INLINE size_t simd_step_loop(const simd_consts *k, float *param, void *m_, void *v_,
                                       const void *grad, void *out, size_t i, size_t end, int gd,
                                       int md, int od, int l2) {
#ifdef ZOFF_SIMD_HAVE_BF16_PAIR
    /* bf16 moments or bf16 output: two vectors per iteration, so that each bf16 stream takes
     * one full-width store and one NaN test (of the two p vectors) covers them all: p is NaN
     * wherever m or v is. Each element sees the same operations as in simd_step_vec (the
     * rounding is exact integer arithmetic either way). */
    if (md == ZOFF_BF16 || od == ZOFF_ADAM_OUT_BF16) {
        const int pod = od == ZOFF_ADAM_OUT_BF16 ? ZOFF_ADAM_OUT_NONE : od; /* bf16: in pairs */
        for (; i + 2 * ZOFF_SIMD_W <= end; i += 2 * ZOFF_SIMD_W) {
            /* Software prefetch for bf16 moments: that loop does more work per byte than the
             * fp32-moment one, and without it does not keep enough misses in flight to reach
             * the bandwidth (measured on Zen 2; fp32 moments gain nothing from it). With 8
             * lanes: one line of p per iteration, and every other iteration the lines of m and
             * v or of grad. Addresses past the end are fine: prefetches never fault. */
            if (md == ZOFF_BF16) {
                SIMD_PREFETCH(param, i, 4, 1);
                if (i & 2 * ZOFF_SIMD_W) {
                    SIMD_PREFETCH(m_, i, 2, 1);
                    SIMD_PREFETCH(v_, i, 2, 1);
                } else {
                    SIMD_PREFETCH(grad, i, simd_dsize(gd), 0);
                }
            }
            vf m0, v0, m1, v1;
            vf p0 = simd_step_pmv(k, param, m_, v_, grad, out, i, gd, md, pod, l2, &m0, &v0);
            vf p1 = simd_step_pmv(k, param, m_, v_, grad, out, i + ZOFF_SIMD_W, gd, md, pod, l2,
                                  &m1, &v1);
            if (md != ZOFF_BF16) {
                simd_store(m_, md, i, m0);
                simd_store(v_, md, i, v0);
                simd_store(m_, md, i + ZOFF_SIMD_W, m1);
                simd_store(v_, md, i + ZOFF_SIMD_W, v1);
            }
            /* Rounded in the branches, stored after them: with the stores inside, GCC sinks
             * the weight stores past the test and spills (measured 4% slower on Zen 2). */
            vh ph = vh_zero(), mh = vh_zero(), vh_ = vh_zero();
            if (__builtin_expect(vf_any_nan2(p0, p1), 0))
                simd_bf16_pairs(md, od, p0, p1, m0, m1, v0, v1, 1, &ph, &mh, &vh_);
            else
                simd_bf16_pairs(md, od, p0, p1, m0, m1, v0, v1, 0, &ph, &mh, &vh_);
            if (od == ZOFF_ADAM_OUT_BF16) vh_store((uint16_t *)out + i, ph);
            if (md == ZOFF_BF16) {
                vh_store((uint16_t *)m_ + i, mh);
                vh_store((uint16_t *)v_ + i, vh_);
            }
        }
    }
#endif
    for (; i + ZOFF_SIMD_W <= end; i += ZOFF_SIMD_W)
        simd_step_vec(k, param, m_, v_, grad, out, i, gd, md, od, l2);
    return i;
}

ZOFF_SIMD_INLINE void simd_step_range(const zoff_adam_consts *c, const zoff_adam_buffers *b,
                                      size_t begin, size_t end, int gd, int md, int od) {
    simd_consts k = {
        .beta1 = vf_set1(c->beta1),
        .mcoef = vf_set1(c->m_coef),
        .beta2 = vf_set1(c->beta2),
        .vcoef = vf_set1(c->v_coef),
        .eps = vf_set1(c->eps),
        .scale = vf_set1(c->grad_scale),
        .l2 = vf_set1(c->l2),
        .decay = vf_set1(c->decay),
        .step_size = vf_set1(c->step_size),
    };
    float *param = b->param;
    void *m_ = b->m, *v_ = b->v, *out = b->param_out;
    const void *grad = b->grad;
    size_t i;
    /* Exactly one of l2 (Adam) and decay (AdamW) is active: skip the other's operation. */
    if (c->l2 != 0.0f)
        i = simd_step_loop(&k, param, m_, v_, grad, out, begin, end, gd, md, od, 1);
    else
        i = simd_step_loop(&k, param, m_, v_, grad, out, begin, end, gd, md, od, 0);
    if (i < end) {
        size_t r = end - i, gs = simd_dsize(gd), ms = simd_dsize(md);
        size_t os = od == ZOFF_ADAM_OUT_F32 ? 4 : 2;
        float p[ZOFF_SIMD_W] = {0}, m[ZOFF_SIMD_W] = {0}, v[ZOFF_SIMD_W] = {0};
        float g[ZOFF_SIMD_W] = {0}, o[ZOFF_SIMD_W] = {0};
        memcpy(p, param + i, r * 4);
        memcpy(m, (const char *)m_ + i * ms, r * ms);
        memcpy(v, (const char *)v_ + i * ms, r * ms);
        memcpy(g, (const char *)grad + i * gs, r * gs);
        simd_step_vec(&k, p, m, v, g, o, 0, gd, md, od, c->l2 != 0.0f);
        memcpy(param + i, p, r * 4);
        memcpy((char *)m_ + i * ms, m, r * ms);
        memcpy((char *)v_ + i * ms, v, r * ms);
        if (od != ZOFF_ADAM_OUT_NONE) memcpy((char *)out + i * os, o, r * os);
    }
}

#define SIMD_STEP_OD(GD, MD)                                                                       \
    switch (od) {                                                                                  \
    case ZOFF_ADAM_OUT_NONE:                                                                       \
        simd_step_range(c, b, begin, end, GD, MD, ZOFF_ADAM_OUT_NONE);                             \
        break;                                                                                     \
    case ZOFF_ADAM_OUT_F32:                                                                        \
        simd_step_range(c, b, begin, end, GD, MD, ZOFF_ADAM_OUT_F32);                              \
        break;                                                                                     \
    case ZOFF_ADAM_OUT_F16:                                                                        \
        simd_step_range(c, b, begin, end, GD, MD, ZOFF_ADAM_OUT_F16);                              \
        break;                                                                                     \
    default:                                                                                       \
        simd_step_range(c, b, begin, end, GD, MD, ZOFF_ADAM_OUT_BF16);                             \
        break;                                                                                     \
    }
#define SIMD_STEP_GD(MD)                                                                           \
    switch (gd) {                                                                                  \
    case ZOFF_F32:                                                                                 \
        SIMD_STEP_OD(ZOFF_F32, MD) break;                                                          \
    case ZOFF_F16:                                                                                 \
        SIMD_STEP_OD(ZOFF_F16, MD) break;                                                          \
    default:                                                                                       \
        SIMD_STEP_OD(ZOFF_BF16, MD) break;                                                         \
    }

/* Each (grad, moment, out) combination gets its own loop: the dtype tests fold away. */
static void ZOFF_SIMD_NAME(step)(const zoff_adam_consts *c, const zoff_adam_buffers *b,
                                 size_t begin, size_t end) {
    int gd = (int)b->grad_dtype;
    int od = b->param_out ? (int)b->out_dtype + 1 : ZOFF_ADAM_OUT_NONE;
    if (b->moment_dtype == ZOFF_BF16) {
        SIMD_STEP_GD(ZOFF_BF16)
    } else {
        SIMD_STEP_GD(ZOFF_F32)
    }
}

ZOFF_SIMD_INLINE double simd_sumsq(const void *x, int t, size_t n) {
    vd a0 = vd_zero(), a1 = vd_zero(), a2 = vd_zero(), a3 = vd_zero();
    size_t i = 0;
    for (; i + 2 * ZOFF_SIMD_W <= n; i += 2 * ZOFF_SIMD_W) {
        vd_acc_sq(&a0, &a1, simd_load(x, t, i));
        vd_acc_sq(&a2, &a3, simd_load(x, t, i + ZOFF_SIMD_W));
    }
    if (i + ZOFF_SIMD_W <= n) {
        vd_acc_sq(&a0, &a1, simd_load(x, t, i));
        i += ZOFF_SIMD_W;
    }
    if (i < n) {
        float pad[ZOFF_SIMD_W] = {0};
        memcpy(pad, (const char *)x + i * simd_dsize(t), (n - i) * simd_dsize(t));
        vd_acc_sq(&a2, &a3, simd_load(pad, t, 0));
    }
    return vd_hsum(a0, a1) + vd_hsum(a2, a3);
}

static double ZOFF_SIMD_NAME(sumsq)(const void *x, zoff_dtype t, size_t n) {
    switch (t) {
    case ZOFF_F32:
        return simd_sumsq(x, ZOFF_F32, n);
    case ZOFF_F16:
        return simd_sumsq(x, ZOFF_F16, n);
    default:
        return simd_sumsq(x, ZOFF_BF16, n);
    }
}

ZOFF_SIMD_INLINE void simd_cast(const void *src, int st, void *dst, int dt, size_t n) {
    size_t i = 0;
    for (; i + ZOFF_SIMD_W <= n; i += ZOFF_SIMD_W)
        simd_store(dst, dt, i, simd_load(src, st, i));
    if (i < n) {
        float in[ZOFF_SIMD_W] = {0}, out[ZOFF_SIMD_W] = {0};
        memcpy(in, (const char *)src + i * simd_dsize(st), (n - i) * simd_dsize(st));
        simd_store(out, dt, 0, simd_load(in, st, 0));
        memcpy((char *)dst + i * simd_dsize(dt), out, (n - i) * simd_dsize(dt));
    }
}

static void ZOFF_SIMD_NAME(cast)(const void *src, zoff_dtype st, void *dst, zoff_dtype dt,
                                 size_t n) {
#define SIMD_CAST_DT(ST)                                                                           \
    switch (dt) {                                                                                  \
    case ZOFF_F32:                                                                                 \
        simd_cast(src, ST, dst, ZOFF_F32, n);                                                      \
        break;                                                                                     \
    case ZOFF_F16:                                                                                 \
        simd_cast(src, ST, dst, ZOFF_F16, n);                                                      \
        break;                                                                                     \
    default:                                                                                       \
        simd_cast(src, ST, dst, ZOFF_BF16, n);                                                     \
        break;                                                                                     \
    }
    switch (st) {
    case ZOFF_F32:
        SIMD_CAST_DT(ZOFF_F32) break;
    case ZOFF_F16:
        SIMD_CAST_DT(ZOFF_F16) break;
    default:
        SIMD_CAST_DT(ZOFF_BF16) break;
    }
#undef SIMD_CAST_DT
}
