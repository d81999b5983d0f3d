/* The Llama-family kernels (RMSNorm, RoPE, SwiGLU) on one backend (argv[1]):
 *   - each forward against a naive double-precision reference written here (on cuda this is the
 *     CUDA-vs-host parity check, the host kernels matching the same reference), in fp32 and in
 *     bf16/f16 (outputs rounded once: a 16-bit-sized tolerance);
 *   - each backward against central finite differences of its forward (fp32), for the objective
 *     sum(out * R) with random R, at every coordinate of a small problem; RMSNorm's input
 *     gradient is checked to accumulate and its weight gradient to add to what is there;
 *   - RoPE with position ids (packed samples) and strided rows, and bwd(fwd(x)) == x. */
#include "core/half.h"
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <math.h>
#include <string.h>

static zoff_dev *dev;
static zoff_dev_stream *st;
static unsigned long long rng = 4321;

static float *rnd(size_t n, float lo, float hi) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = zoff_test_randf(&rng, lo, hi);
    return x;
}

/* host fp32 -> device buffer of type t (rounded) */
static void *up(const float *h, size_t n, zoff_dtype t) {
    size_t es = zoff_dtype_size(t);
    void *tmp = malloc(n * es), *d;
    for (size_t i = 0; i < n; i++)
        zoff_store_from_f32(tmp, t, i, h[i]);
    REQUIRE_OK(zoff_dev_malloc(dev, n * es, &d));
    REQUIRE_OK(zoff_dev_memcpy(dev, d, tmp, n * es, ZOFF_COPY_H2D));
    free(tmp);
    return d;
}

static void *dalloc(size_t n, zoff_dtype t) {
    void *d;
    REQUIRE_OK(zoff_dev_malloc(dev, n * zoff_dtype_size(t), &d));
    return d;
}

static void down(float *h, const void *d, size_t n, zoff_dtype t) {
    size_t es = zoff_dtype_size(t);
    void *tmp = malloc(n * es);
    REQUIRE_OK(zoff_dev_synchronize(dev));
    REQUIRE_OK(zoff_dev_memcpy(dev, tmp, d, n * es, ZOFF_COPY_D2H));
    for (size_t i = 0; i < n; i++)
        h[i] = zoff_load_as_f32(tmp, t, i);
    free(tmp);
}

/* values as the device sees them after rounding to t */
static void round_to(float *x, size_t n, zoff_dtype t) {
    uint32_t tmp;
    for (size_t i = 0; i < n; i++) {
        zoff_store_from_f32(&tmp, t, 0, x[i]);
        x[i] = zoff_load_as_f32(&tmp, t, 0);
    }
}

static double nerr(const float *a, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (a[i] - ref[i]) * (a[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-12);
}

static double tol_for(zoff_dtype t) {
    return t == ZOFF_F32 ? 2e-6 : t == ZOFF_F16 ? 2e-3 : 1e-2;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* --- RMSNorm ---------------------------------------------------------------------------- */

enum { RN = 9, RC = 40 };

static void rms_forward(const float *x, const float *w, zoff_dtype t, float *out, float *rstd) {
    float *dx = up(x, RN * RC, ZOFF_F32), *dr = dalloc(RN, ZOFF_F32);
    void *dw = up(w, RC, t), *dout = dalloc(RN * RC, t);
    REQUIRE_OK(zoff_dev_op_rmsnorm_fwd(st, dout, t, dr, dx, dw, t, RN, RC, 1e-5f));
    down(out, dout, RN * RC, t);
    down(rstd, dr, RN, ZOFF_F32);
    zoff_dev_free(dev, dx), zoff_dev_free(dev, dr), zoff_dev_free(dev, dw),
        zoff_dev_free(dev, dout);
}

static void check_rmsnorm(zoff_dtype t) {
    float *x = rnd(RN * RC, -2, 2), *w = rnd(RC, 0.5f, 1.5f), out[RN * RC], rstd[RN];
    round_to(w, RC, t);
    rms_forward(x, w, t, out, rstd);
    double ref[RN * RC], rref[RN];
    float rs_f[RN];
    for (int r = 0; r < RN; r++) {
        double ss = 0;
        for (int i = 0; i < RC; i++)
            ss += (double)x[r * RC + i] * x[r * RC + i];
        rref[r] = 1.0 / sqrt(ss / RC + 1e-5);
        rs_f[r] = (float)rref[r];
        for (int i = 0; i < RC; i++)
            ref[r * RC + i] = w[i] * x[r * RC + i] * rref[r];
    }
    double e = nerr(out, ref, RN * RC), er = nerr(rstd, rref, RN);
    printf("rmsnorm_fwd %s: nerr %.2e, rstd %.2e\n", zoff_dtype_name(t), e, er);
    CHECK(e <= tol_for(t));
    CHECK(er <= 2e-6);
    if (t != ZOFF_F32) {
        free(x), free(w);
        return;
    }
    /* backward: objective sum(out * R); dinp accumulates onto 1s, dweight onto 0.5s */
    float *R = rnd(RN * RC, -1, 1), dinp[RN * RC], dw[RC];
    for (int i = 0; i < RN * RC; i++)
        dinp[i] = 1.0f;
    for (int i = 0; i < RC; i++)
        dw[i] = 0.5f;
    float *d_dinp = up(dinp, RN * RC, ZOFF_F32), *d_dout = up(R, RN * RC, ZOFF_F32);
    float *d_x = up(x, RN * RC, ZOFF_F32), *d_rstd = up(rs_f, RN, ZOFF_F32);
    void *d_w = up(w, RC, t), *d_dw = up(dw, RC, t);
    REQUIRE_OK(zoff_dev_op_rmsnorm_bwd(st, d_dinp, d_dw, t, d_dout, d_x, d_w, t, d_rstd, RN, RC));
    down(dinp, d_dinp, RN * RC, ZOFF_F32);
    down(dw, d_dw, RC, t);
    double worst = 0;
    const float h = 1e-2f;
    for (int i = 0; i < RN * RC; i++) {
        float save = x[i], o[RN * RC], rr[RN];
        x[i] = save + h;
        rms_forward(x, w, t, o, rr);
        double lp = dot(o, R, RN * RC);
        x[i] = save - h;
        rms_forward(x, w, t, o, rr);
        double lm = dot(o, R, RN * RC);
        x[i] = save;
        double num = (lp - lm) / (2 * h), got = dinp[i] - 1.0;
        worst = fmax(worst, fabs(got - num) / fmax(fabs(num), 0.05));
    }
    for (int j = 0; j < RC; j++) {
        float save = w[j], o[RN * RC], rr[RN];
        w[j] = save + h;
        rms_forward(x, w, t, o, rr);
        double lp = dot(o, R, RN * RC);
        w[j] = save - h;
        rms_forward(x, w, t, o, rr);
        double lm = dot(o, R, RN * RC);
        w[j] = save;
        double num = (lp - lm) / (2 * h), got = dw[j] - 0.5;
        worst = fmax(worst, fabs(got - num) / fmax(fabs(num), 0.05));
    }
    printf("rmsnorm_bwd: worst finite-difference error %.2e\n", worst);
    CHECK(worst <= 2e-2);
    zoff_dev_free(dev, d_dinp), zoff_dev_free(dev, d_dout), zoff_dev_free(dev, d_x);
    zoff_dev_free(dev, d_rstd), zoff_dev_free(dev, d_w), zoff_dev_free(dev, d_dw);
    free(R), free(x), free(w);
}

/* --- RoPE ----------------------------------------------------------------------------------- */

enum { PB = 2, PT = 6, PNH = 3, PHS = 8, PSTRIDE = PNH * PHS + 5 };
#define PN ((size_t)PB * PT * PSTRIDE)

static const float inv_freq[PHS / 2] = {1.0f, 0.3f, 0.05f, 0.001f};

static void rope_run(float *x, zoff_dtype t, const int32_t *pos, bool backward) {
    void *dx = up(x, PN, t);
    float *dif = up(inv_freq, PHS / 2, ZOFF_F32);
    int32_t *dpos = NULL;
    if (pos) {
        REQUIRE_OK(zoff_dev_malloc(dev, PB * PT * sizeof(int32_t), (void **)&dpos));
        REQUIRE_OK(zoff_dev_memcpy(dev, dpos, pos, PB * PT * sizeof(int32_t), ZOFF_COPY_H2D));
    }
    if (backward)
        REQUIRE_OK(zoff_dev_op_rope_bwd(st, dx, t, PSTRIDE, dpos, dif, PB, PT, PNH, PHS));
    else
        REQUIRE_OK(zoff_dev_op_rope_fwd(st, dx, t, PSTRIDE, dpos, dif, PB, PT, PNH, PHS));
    down(x, dx, PN, t);
    zoff_dev_free(dev, dx), zoff_dev_free(dev, dif);
    if (dpos) zoff_dev_free(dev, dpos);
}

static void check_rope(zoff_dtype t, bool with_pos) {
    int32_t pos[PB * PT] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4, 5}; /* packed samples in row 0 */
    const int32_t *p = with_pos ? pos : NULL;
    float *x = rnd(PN, -1, 1), y[PN];
    round_to(x, PN, t);
    memcpy(y, x, sizeof y);
    rope_run(y, t, p, false);
    double ref[PN];
    for (size_t r = 0; r < (size_t)PB * PT; r++) {
        double ps = p ? p[r] : (double)(r % PT);
        for (int k = 0; k < PSTRIDE; k++)
            ref[r * PSTRIDE + k] = x[r * PSTRIDE + k]; /* the padding is left alone */
        for (int h = 0; h < PNH; h++)
            for (int i = 0; i < PHS / 2; i++) {
                double a = (double)(float)(ps * inv_freq[i]);
                size_t i0 = r * PSTRIDE + h * PHS + i, i1 = i0 + PHS / 2;
                ref[i0] = x[i0] * cos(a) - x[i1] * sin(a);
                ref[i1] = x[i1] * cos(a) + x[i0] * sin(a);
            }
    }
    double e = nerr(y, ref, PN);
    printf("rope_fwd %s%s: nerr %.2e\n", zoff_dtype_name(t), with_pos ? " (pos ids)" : "", e);
    CHECK(e <= tol_for(t));
    /* the backward is the transposed rotation: bwd(fwd(x)) == x, and a finite-difference check
     * of the objective sum(fwd(x) * R) (linear: exact up to rounding) */
    rope_run(y, t, p, true);
    double xr[PN];
    for (size_t i = 0; i < PN; i++)
        xr[i] = x[i];
    e = nerr(y, xr, PN);
    printf("rope_bwd(rope_fwd) %s: nerr %.2e\n", zoff_dtype_name(t), e);
    CHECK(e <= 2 * tol_for(t));
    if (t == ZOFF_F32) {
        float *R = rnd(PN, -1, 1), g[PN];
        memcpy(g, R, sizeof g);
        rope_run(g, t, p, true);
        double worst = 0;
        for (size_t i = 0; i < PN; i += 3) {
            float xp[PN], xm[PN];
            memcpy(xp, x, sizeof xp);
            memcpy(xm, x, sizeof xm);
            xp[i] += 0.01f;
            xm[i] -= 0.01f;
            rope_run(xp, t, p, false);
            rope_run(xm, t, p, false);
            double num = (dot(xp, R, PN) - dot(xm, R, PN)) / 0.02;
            worst = fmax(worst, fabs(g[i] - num) / fmax(fabs(num), 0.05));
        }
        printf("rope_bwd: worst finite-difference error %.2e\n", worst);
        CHECK(worst <= 1e-2);
        free(R);
    }
    free(x);
}

/* --- SwiGLU --------------------------------------------------------------------------------- */

enum { SN = 257 };

static void swiglu_run(const float *g, const float *u, zoff_dtype t, float *out) {
    void *dg = up(g, SN, t), *du = up(u, SN, t), *dout = dalloc(SN, t);
    REQUIRE_OK(zoff_dev_op_swiglu_fwd(st, dout, dg, du, t, SN));
    down(out, dout, SN, t);
    zoff_dev_free(dev, dg), zoff_dev_free(dev, du), zoff_dev_free(dev, dout);
}

static void check_swiglu(zoff_dtype t) {
    float *g = rnd(SN, -6, 6), *u = rnd(SN, -2, 2), out[SN];
    round_to(g, SN, t);
    round_to(u, SN, t);
    swiglu_run(g, u, t, out);
    double ref[SN];
    for (int i = 0; i < SN; i++)
        ref[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    double e = nerr(out, ref, SN);
    printf("swiglu_fwd %s: nerr %.2e\n", zoff_dtype_name(t), e);
    CHECK(e <= tol_for(t));
    if (t == ZOFF_F32) {
        float *R = rnd(SN, -1, 1), dg[SN], du[SN];
        void *d_g = up(g, SN, t), *d_u = up(u, SN, t), *d_R = up(R, SN, t);
        void *d_dg = up(R, SN, t), *d_du = up(R, SN, t);
        REQUIRE_OK(zoff_dev_op_swiglu_bwd(st, d_dg, d_du, d_R, d_g, d_u, t, SN));
        down(dg, d_dg, SN, t);
        down(du, d_du, SN, t);
        double worst = 0;
        for (int i = 0; i < SN; i++) {
            for (int which = 0; which < 2; which++) {
                float *v = which ? u : g, save = v[i], o[SN];
                v[i] = save + 1e-2f;
                swiglu_run(g, u, t, o);
                double lp = dot(o, R, SN);
                v[i] = save - 1e-2f;
                swiglu_run(g, u, t, o);
                double lm = dot(o, R, SN);
                v[i] = save;
                double num = (lp - lm) / 2e-2, got = which ? du[i] : dg[i];
                worst = fmax(worst, fabs(got - num) / fmax(fabs(num), 0.05));
            }
        }
        printf("swiglu_bwd: worst finite-difference error %.2e\n", worst);
        CHECK(worst <= 2e-2);
        zoff_dev_free(dev, d_g), zoff_dev_free(dev, d_u), zoff_dev_free(dev, d_R);
        zoff_dev_free(dev, d_dg), zoff_dev_free(dev, d_du);
        free(R);
    }
    /* dgate and dup may not alias each other */
    CHECK(zoff_dev_op_swiglu_bwd(st, out, out, out, g, u, t, SN) != 0);
    free(g), free(u);
}

int main(int argc, char **argv) {
    dev = zoff_test_open_device(argc, argv, 0);
    REQUIRE_OK(zoff_dev_stream_create(dev, &st));
    const zoff_dtype types[] = {ZOFF_F32, ZOFF_BF16, ZOFF_F16};
    for (int k = 0; k < 3; k++) {
        check_rmsnorm(types[k]);
        check_rope(types[k], false);
        check_rope(types[k], true);
        check_swiglu(types[k]);
    }
    CHECK_OK(zoff_dev_stream_destroy(st));
    zoff_dev_close(dev);
    return zoff_test_finish("test_gpu_llama_ops");
}
