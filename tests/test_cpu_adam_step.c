/* cpu_adam fused step: every vector ISA against the scalar reference over all precision
 * combinations, odd sizes and unaligned buffers (fp32 within a tight tolerance, 16-bit outputs
 * bit-identical to core/half.h's rounding of the path's own fp32 weights, nothing written past
 * n); Adam and AdamW over several steps against a double-precision reference; bf16 moments
 * against fp32 moments; inf/nan propagation; parameter validation. */
#include "cpu_adam/cpu_adam.h"
#include "core/half.h"
#include "tests/test_util.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static unsigned long long rng = 12345;

static size_t dsize(zoff_dtype t) {
    return t == ZOFF_F32 ? 4 : 2;
}

static float get(const void *x, zoff_dtype t, size_t i) {
    if (t == ZOFF_F16) return zoff_f16_to_f32(((const uint16_t *)x)[i]);
    if (t == ZOFF_BF16) return zoff_bf16_to_f32(((const uint16_t *)x)[i]);
    return ((const float *)x)[i];
}
static void put(void *x, zoff_dtype t, size_t i, float f) {
    if (t == ZOFF_F16)
        ((uint16_t *)x)[i] = zoff_f32_to_f16(f);
    else if (t == ZOFF_BF16)
        ((uint16_t *)x)[i] = zoff_f32_to_bf16(f);
    else
        ((float *)x)[i] = f;
}

/* One test state: buffers with one element of misalignment and a canary tail. */
#define CANARY 64
typedef struct state {
    size_t n;
    unsigned char *mem[5];
    zoff_adam_buffers b;
} state;

static void state_init(state *s, size_t n, zoff_dtype gd, zoff_dtype md, int od) {
    memset(s, 0, sizeof(*s));
    s->n = n;
    size_t sizes[5] = {4, dsize(md), dsize(md), dsize(gd), od ? dsize((zoff_dtype)(od - 1)) : 2};
    for (int k = 0; k < 5; k++) {
        /* +1 element offset: unaligned for every vector width. */
        s->mem[k] = malloc((n + 1 + CANARY) * sizes[k]);
        memset(s->mem[k], 0xA5, (n + 1 + CANARY) * sizes[k]);
    }
    s->b.n = n;
    s->b.param = (float *)(s->mem[0] + 4);
    s->b.m = s->mem[1] + sizes[1];
    s->b.v = s->mem[2] + sizes[2];
    s->b.moment_dtype = md;
    s->b.grad = s->mem[3] + sizes[3];
    s->b.grad_dtype = gd;
    s->b.param_out = od ? s->mem[4] + sizes[4] : NULL;
    s->b.out_dtype = od ? (zoff_dtype)(od - 1) : ZOFF_F16;
    for (size_t i = 0; i < n; i++) {
        s->b.param[i] = zoff_test_randf(&rng, -1.0f, 1.0f);
        put(s->b.m, md, i, zoff_test_randf(&rng, -0.01f, 0.01f));
        put(s->b.v, md, i, zoff_test_randf(&rng, 0.0f, 1e-4f));
    }
}

static void state_grads(state *s, float scale) {
    for (size_t i = 0; i < s->n; i++)
        put((void *)s->b.grad, s->b.grad_dtype, i, zoff_test_randf(&rng, -scale, scale));
}

static void state_copy(state *dst, const state *src) {
    size_t sizes[5] = {4, dsize(src->b.moment_dtype), dsize(src->b.moment_dtype),
                       dsize(src->b.grad_dtype), src->b.param_out ? dsize(src->b.out_dtype) : 2};
    for (int k = 0; k < 5; k++)
        memcpy(dst->mem[k], src->mem[k], (src->n + 1 + CANARY) * sizes[k]);
}

static int canaries_ok(const state *s) {
    size_t sizes[5] = {4, dsize(s->b.moment_dtype), dsize(s->b.moment_dtype),
                       dsize(s->b.grad_dtype), s->b.param_out ? dsize(s->b.out_dtype) : 2};
    for (int k = 0; k < 5; k++) {
        for (size_t j = 0; j < sizes[k]; j++)
            if (s->mem[k][j] != 0xA5) return 0;
        for (size_t j = (s->n + 1) * sizes[k]; j < (s->n + 1 + CANARY) * sizes[k]; j++)
            if (s->mem[k][j] != 0xA5) return 0;
    }
    return 1;
}

static void state_free(state *s) {
    for (int k = 0; k < 5; k++)
        free(s->mem[k]);
}

static int close_rel(double a, double b, double rel, double abs_tol) {
    return fabs(a - b) <= abs_tol + rel * fmax(fabs(a), fabs(b));
}

/* A two-thread, unpinned pool running isa. */
static zoff_adam_pool *make_pool(zoff_adam_isa isa) {
    zoff_adam_pool_config cfg = zoff_adam_pool_config_default();
    cfg.n_threads = 2;
    cfg.pin = 0;
    cfg.isa = isa;
    zoff_adam_pool *pool = NULL;
    REQUIRE_OK(zoff_adam_pool_create(&cfg, &pool));
    return pool;
}

/* Vector ISA vs scalar, all combinations, several steps. */
static void test_isa_vs_scalar(zoff_adam_isa isa) {
    zoff_adam_pool *ref_pool = make_pool(ZOFF_ADAM_ISA_SCALAR), *pool = make_pool(isa);
    static const size_t sizes[] = {1, 7, 8, 15, 16, 17, 31, 33, 1000, 3 * ZOFF_ADAM_CHUNK + 5};
    int bad = 0;
    for (int gd = 0; gd < 3; gd++)
        for (int mdi = 0; mdi < 2; mdi++)
            for (int od = 0; od < 4; od++)
                for (size_t si = 0; si < ARRAY_LEN(sizes); si++) {
                    zoff_dtype md = mdi ? ZOFF_BF16 : ZOFF_F32;
                    size_t n = sizes[si];
                    state a, b;
                    state_init(&a, n, (zoff_dtype)gd, md, od);
                    state_init(&b, n, (zoff_dtype)gd, md, od);
                    zoff_adam_params p = zoff_adam_params_default();
                    p.weight_decay = 0.01f;
                    p.grad_scale = 0.5f;
                    p.mode = (od & 1) ? ZOFF_ADAM_L2 : ZOFF_ADAM_ADAMW;
                    for (int step = 1; step <= 3; step++) {
                        state_grads(&a, 2.0f);
                        if (step == 1)
                            state_copy(&b, &a);
                        else
                            memcpy(b.mem[3], a.mem[3], (n + 1 + CANARY) * dsize(a.b.grad_dtype));
                        p.step = step;
                        CHECK_OK(zoff_adam_step(ref_pool, &p, &a.b));
                        CHECK_OK(zoff_adam_step(pool, &p, &b.b));
                    }
                    for (size_t i = 0; i < n && bad < 10; i++) {
                        /* fp32: a few ulp (FMA vs separate rounding). bf16 moments: where
                         * the fp32 values straddle a rounding boundary the stored moment
                         * differs by one bf16 ulp, which later steps carry as an absolute
                         * error (m shrinks under cancellation) and which moves p by ~1% of
                         * one lr-sized update. |m| <= ~0.1 and v <= ~1e-3 here. */
                        int bf = md == ZOFF_BF16;
                        double mt = bf ? 1.0 / 128 : 1e-5, pt = bf ? 5e-5 : 1e-6;
                        double ma = bf ? 1e-3 : 1e-7, va = bf ? 1e-5 : 1e-10;
                        if (!close_rel(a.b.param[i], b.b.param[i], 1e-5, pt) ||
                            !close_rel(get(a.b.m, md, i), get(b.b.m, md, i), mt, ma) ||
                            !close_rel(get(a.b.v, md, i), get(b.b.v, md, i), mt, va)) {
                            fprintf(stderr,
                                    "%s g%d m%d o%d n=%zu i=%zu: p %.9g/%.9g m %.9g/%.9g v "
                                    "%.9g/%.9g\n",
                                    zoff_adam_isa_name(isa), gd, mdi, od, n, i, a.b.param[i],
                                    b.b.param[i], get(a.b.m, md, i), get(b.b.m, md, i),
                                    get(a.b.v, md, i), get(b.b.v, md, i));
                            bad++;
                        }
                        if (od) {
                            zoff_dtype ot = (zoff_dtype)(od - 1);
                            /* The 16-bit output is exactly the reference rounding of this
                             * path's own fp32 weight. */
                            for (int which = 0; which < 2; which++) {
                                const state *s = which ? &b : &a;
                                uint32_t want, got;
                                if (ot == ZOFF_F32) {
                                    memcpy(&want, &s->b.param[i], 4);
                                    memcpy(&got, (const float *)s->b.param_out + i, 4);
                                } else {
                                    want = ot == ZOFF_F16 ? zoff_f32_to_f16(s->b.param[i])
                                                          : zoff_f32_to_bf16(s->b.param[i]);
                                    got = ((const uint16_t *)s->b.param_out)[i];
                                }
                                if (want != got && bad++ < 10)
                                    fprintf(stderr, "%s out mismatch i=%zu: %x vs %x\n",
                                            which ? zoff_adam_isa_name(isa) : "scalar", i, got,
                                            want);
                            }
                        }
                    }
                    if (!canaries_ok(&a) || !canaries_ok(&b)) {
                        fprintf(stderr, "%s: write outside buffers g%d m%d o%d n=%zu\n",
                                zoff_adam_isa_name(isa), gd, mdi, od, n);
                        bad++;
                    }
                    state_free(&a);
                    state_free(&b);
                }
    CHECK(bad == 0);
    zoff_adam_pool_destroy(pool);
    zoff_adam_pool_destroy(ref_pool);
}

/* Several steps against a double-precision reference, Adam (L2) and AdamW, with weight decay
 * wd and gradients uniform in +-grad_mag times grad_scale. */
static void test_vs_double(zoff_adam_isa isa, zoff_adam_mode mode, zoff_dtype gd, float wd,
                           float grad_scale, float grad_mag) {
    zoff_adam_pool *pool = make_pool(isa);
    size_t n = 2 * ZOFF_ADAM_CHUNK + 77;
    state s;
    state_init(&s, n, gd, ZOFF_F32, 0);
    double *p = malloc(n * sizeof(double)), *m = malloc(n * sizeof(double)),
           *v = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        p[i] = s.b.param[i];
        m[i] = get(s.b.m, ZOFF_F32, i);
        v[i] = get(s.b.v, ZOFF_F32, i);
    }
    zoff_adam_params prm = zoff_adam_params_default();
    prm.lr = 1e-2f;
    prm.beta1 = 0.8f;
    prm.beta2 = 0.95f;
    prm.eps = 1e-6f;
    prm.weight_decay = wd;
    prm.mode = mode;
    prm.grad_scale = grad_scale;
    double maxerr = 0;
    for (int step = 1; step <= 6; step++) {
        state_grads(&s, grad_mag);
        prm.step = step;
        CHECK_OK(zoff_adam_step(pool, &prm, &s.b));
        double b1 = prm.beta1, b2 = prm.beta2, lr = prm.lr, dwd = prm.weight_decay;
        double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
        for (size_t i = 0; i < n; i++) {
            double g = (double)get(s.b.grad, gd, i) * (double)prm.grad_scale;
            if (mode == ZOFF_ADAM_L2)
                g += dwd * p[i];
            else
                p[i] *= 1 - lr * dwd;
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            p[i] -= lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + (double)prm.eps);
        }
    }
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(s.b.param[i] - p[i]);
        if (e > maxerr) maxerr = e;
        /* fp32 rounding of p (|p| <= ~1) over 6 steps, plus the fp32 constants. */
        if (!close_rel(s.b.param[i], p[i], 2e-6, 2e-6) ||
            !close_rel(get(s.b.m, ZOFF_F32, i), m[i], 1e-5, 1e-6) ||
            !close_rel(get(s.b.v, ZOFF_F32, i), v[i], 1e-5, 1e-10)) {
            if (bad++ < 5)
                fprintf(stderr, "%s mode %d g%d i=%zu: p %.9g vs %.9g\n", zoff_adam_isa_name(isa),
                        (int)mode, (int)gd, i, s.b.param[i], p[i]);
        }
    }
    CHECK(bad == 0);
    printf("  %s %s wd %g grad %s scale %g: max |p - p_double| = %.3g after 6 steps\n",
           zoff_adam_isa_name(isa), mode == ZOFF_ADAM_L2 ? "adam" : "adamw", (double)wd,
           zoff_dtype_name(gd), (double)grad_scale, maxerr);
    free(p);
    free(m);
    free(v);
    state_free(&s);
    zoff_adam_pool_destroy(pool);
}

/* bf16 moments vs fp32 moments: over 10 steps the weights' total change agrees within 2% of
 * the largest total change (bf16 keeps 8 significant bits; the update uses m / sqrt(v)). */
static void test_bf16_moments(void) {
    size_t n = 4096 + 3;
    state a, b;
    state_init(&a, n, ZOFF_F16, ZOFF_F32, 0);
    state_init(&b, n, ZOFF_F16, ZOFF_BF16, 0);
    memcpy(b.b.param, a.b.param, n * 4);
    for (size_t i = 0; i < n; i++) {
        put(a.b.m, ZOFF_F32, i, 0);
        put(a.b.v, ZOFF_F32, i, 0);
        put(b.b.m, ZOFF_BF16, i, 0);
        put(b.b.v, ZOFF_BF16, i, 0);
    }
    float *p0 = malloc(n * 4);
    memcpy(p0, a.b.param, n * 4);
    zoff_adam_params prm = zoff_adam_params_default();
    prm.lr = 1e-3f;
    for (int step = 1; step <= 10; step++) {
        state_grads(&a, 1.0f);
        memcpy(b.mem[3], a.mem[3], (n + 1 + CANARY) * 2);
        prm.step = step;
        CHECK_OK(zoff_adam_step(NULL, &prm, &a.b));
        CHECK_OK(zoff_adam_step(NULL, &prm, &b.b));
    }
    double maxd = 0, maxdiff = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a.b.param[i] - p0[i]);
        if (d > maxd) maxd = d;
        double diff = fabs((double)a.b.param[i] - b.b.param[i]);
        if (diff > maxdiff) maxdiff = diff;
    }
    printf("  bf16 vs fp32 moments: max weight difference %.3g = %.3g%% of max total update "
           "%.3g\n",
           maxdiff, 100 * maxdiff / maxd, maxd);
    CHECK(maxdiff <= 0.02 * maxd);
    free(p0);
    state_free(&a);
    state_free(&b);
}

/* bf16 rounding is bit-exact: with beta1 = beta2 = 0 the fp32 moments are exactly m = g and
 * v = fl(g * g) on every path, so stored bf16 moments must equal core/half.h's rounding of those,
 * and the bf16 output that of the fp32 weights, for ties, overflow, subnormals, infinities and
 * NaNs (payloads included). With fp32 moments the bf16 output is checked alone: its loop is the
 * same two-vector one. */
static void test_bf16_rounding(zoff_adam_isa isa, zoff_dtype md) {
    static const uint32_t special[] = {0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0xbf808000,
                                       0x7f7fffff, 0x7f7f8000, 0x00000001, 0x00018000, 0x7f800000,
                                       0xff800000, 0x7fc00000, 0x7fffffff, 0xffbfffff, 0x80000000,
                                       0x1f808000, 0x1f818000, 0x5f808000};
    zoff_adam_pool *pool = make_pool(isa);
    size_t n = 1000 + 5;
    state s;
    state_init(&s, n, ZOFF_F32, md, ZOFF_BF16 + 1);
    uint32_t *g = (uint32_t *)s.b.grad;
    for (size_t i = 0; i < n; i++) {
        unsigned long long r = zoff_test_rand(&rng);
        g[i] = r % 3 ? special[(r >> 8) % ARRAY_LEN(special)] : (uint32_t)(r >> 20);
        put(s.b.m, md, i, 0.0f);
        put(s.b.v, md, i, 0.0f);
    }
    zoff_adam_params prm = zoff_adam_params_default();
    prm.beta1 = 0.0f;
    prm.beta2 = 0.0f;
    CHECK_OK(zoff_adam_step(pool, &prm, &s.b));
    int bad = 0;
    for (size_t i = 0; md == ZOFF_BF16 && i < n; i++) {
        float gf = zoff_bits_f32(g[i]);
        float m = 0.0f * 0.0f + 1.0f * gf, v = (1.0f * gf) * gf + 0.0f * 0.0f;
        uint16_t em = zoff_f32_to_bf16(m), ev = zoff_f32_to_bf16(v);
        uint16_t gm = ((uint16_t *)s.b.m)[i], gv = ((uint16_t *)s.b.v)[i];
        if ((gm != em || gv != ev) && bad++ < 5)
            fprintf(stderr, "%s bf16 moments g=%08x: m %04x want %04x, v %04x want %04x\n",
                    zoff_adam_isa_name(isa), g[i], gm, em, gv, ev);
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t eo = zoff_f32_to_bf16(s.b.param[i]), go = ((uint16_t *)s.b.param_out)[i];
        if (eo != go && bad++ < 5)
            fprintf(stderr, "%s bf16 out (%s moments) p=%08x: %04x want %04x\n",
                    zoff_adam_isa_name(isa), zoff_dtype_name(md), zoff_f32_bits(s.b.param[i]), go,
                    eo);
    }
    CHECK(bad == 0);
    CHECK(canaries_ok(&s));
    state_free(&s);
    zoff_adam_pool_destroy(pool);
}

/* A non-finite gradient spoils only its own element; the helpers see it. */
static void test_nonfinite(zoff_adam_isa isa) {
    zoff_adam_pool *pool = make_pool(isa);
    for (int k = 0; k < 6; k++) {
        int gd = k % 3;
        zoff_dtype md = k < 3 ? ZOFF_F32 : ZOFF_BF16;
        size_t n = 100;
        state s;
        state_init(&s, n, (zoff_dtype)gd, md, ZOFF_F16 + 1);
        state_grads(&s, 1.0f);
        put((void *)s.b.grad, s.b.grad_dtype, 5, INFINITY);
        put((void *)s.b.grad, s.b.grad_dtype, 50, NAN);
        size_t count = 0;
        double ss = 0;
        CHECK_OK(zoff_adam_count_nonfinite(pool, s.b.grad, s.b.grad_dtype, n, &count));
        CHECK_EQ_INT(count, 2);
        CHECK_OK(zoff_adam_sumsq(pool, s.b.grad, s.b.grad_dtype, n, &ss));
        CHECK(!isfinite(ss));
        zoff_adam_params prm = zoff_adam_params_default();
        CHECK_OK(zoff_adam_step(pool, &prm, &s.b));
        for (size_t i = 0; i < n; i++) {
            int expect_bad = i == 5 || i == 50;
            CHECK((!isfinite(s.b.param[i])) == expect_bad);
            CHECK((!isfinite(get(s.b.m, md, i))) == expect_bad); /* never silently finite */
            CHECK((!isfinite(get(s.b.v, md, i))) == expect_bad);
            uint16_t h = ((uint16_t *)s.b.param_out)[i];
            CHECK(((h & 0x7c00) == 0x7c00) == expect_bad);
        }
        state_free(&s);
    }
    zoff_adam_pool_destroy(pool);
}

static void test_validation(void) {
    state s;
    state_init(&s, 10, ZOFF_F16, ZOFF_F32, 0);
    zoff_adam_params p = zoff_adam_params_default();
    p.step = 0;
    CHECK(zoff_adam_step(NULL, &p, &s.b) == -EINVAL);
    p = zoff_adam_params_default();
    p.beta1 = 1.0f;
    CHECK(zoff_adam_step(NULL, &p, &s.b) == ZOFF_ECONFIG);
    p = zoff_adam_params_default();
    p.lr = NAN;
    CHECK(zoff_adam_step(NULL, &p, &s.b) == ZOFF_ECONFIG);
    p = zoff_adam_params_default();
    zoff_adam_buffers b = s.b;
    b.moment_dtype = ZOFF_F16;
    CHECK(zoff_adam_step(NULL, &p, &b) == -EINVAL);
    b = s.b;
    b.grad = NULL;
    CHECK(zoff_adam_step(NULL, &p, &b) == -EINVAL);
    b = s.b;
    b.grad_dtype = (zoff_dtype)7;
    CHECK(zoff_adam_step(NULL, &p, &b) == -EINVAL);
    b = s.b;
    b.n = 0;
    CHECK_OK(zoff_adam_step(NULL, &p, &b));
    state_free(&s);
}

int main(void) {
    zoff_test_init();
    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_ERROR); /* validation errors are expected */
    static const zoff_adam_isa isas[] = {ZOFF_ADAM_ISA_SCALAR, ZOFF_ADAM_ISA_AVX2,
                                         ZOFF_ADAM_ISA_AVX512, ZOFF_ADAM_ISA_AVX512_BF16};
    for (size_t k = 0; k < ARRAY_LEN(isas); k++) {
        zoff_adam_isa isa = isas[k];
        if (!zoff_adam_isa_supported(isa)) {
            printf("  skipping %s: this CPU lacks it\n", zoff_adam_isa_name(isa));
            continue;
        }
        if (isa != ZOFF_ADAM_ISA_SCALAR) test_isa_vs_scalar(isa);
        for (int gd = 0; gd < 3; gd++) {
            test_vs_double(isa, ZOFF_ADAM_L2, (zoff_dtype)gd, 0.1f, 1.0f / 1024, 1024.0f);
            test_vs_double(isa, ZOFF_ADAM_ADAMW, (zoff_dtype)gd, 0.1f, 1.0f / 1024, 1024.0f);
            /* L2 mode without decay is AdamW's arithmetic (the folded multiplier) */
            test_vs_double(isa, ZOFF_ADAM_L2, (zoff_dtype)gd, 0.0f, 1.0f / 1024, 1024.0f);
        }
        /* A multiplier too small to fold into fp32 coefficients ((1 - beta2) 2^-160 underflows):
         * huge gradients clipped hard. f32 and bf16 gradients can be that large. */
        test_vs_double(isa, ZOFF_ADAM_ADAMW, ZOFF_F32, 0.1f, 0x1p-80f, 0x1p75f);
        test_vs_double(isa, ZOFF_ADAM_ADAMW, ZOFF_BF16, 0.1f, 0x1p-80f, 0x1p75f);
        test_nonfinite(isa);
        test_bf16_rounding(isa, ZOFF_BF16);
        test_bf16_rounding(isa, ZOFF_F32);
        printf("  %s: checked\n", zoff_adam_isa_name(isa));
    }
    test_bf16_moments();
    test_validation();
    return zoff_test_finish("test_cpu_adam_step");
}
