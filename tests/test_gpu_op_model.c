/* The model kernels of the op table on one backend (argv[1]):
 *   - every forward against a naive double-precision reference written here, by normalized
 *     error (on cuda this is the CUDA-vs-host parity check, the host matching the same
 *     reference);
 *   - every backward against central finite differences of its forward, for the objective
 *     sum(out * w) with random w (so dout = w), at sampled coordinates;
 *   - gemm in all transpose combinations, fp32 and bf16/fp16 operands (against references
 *     on 16-bit-rounded inputs), and AdamW against its formula;
 *   - the typed variants (16-bit weights, gradients and outputs, rounded once) of every model
 *     kernel against double references on the same rounded inputs, including 16-bit GEMM
 *     outputs with beta != 0, gradients accumulated into non-zero 16-bit buffers, embedding
 *     position ids, and the fused loss with ignored targets. The fused attention has its own
 *     test (test_gpu_flash_attention.c). */
#include "core/half.h"
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <errno.h>
#include <math.h>
#include <string.h>

static zoff_dev *dev;
static zoff_dev_stream *st;
static unsigned long long rng = 1234;

/* --- small helpers ----------------------------------------------------------------------- */

static float *rnd(size_t n, float lo, float hi) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = zoff_test_randf(&rng, lo, hi);
    return x;
}

static void *up(const void *h, size_t bytes) {
    void *d;
    REQUIRE_OK(zoff_dev_malloc(dev, bytes ? bytes : 4, &d));
    if (bytes) REQUIRE_OK(zoff_dev_memcpy(dev, d, h, bytes, ZOFF_COPY_H2D));
    return d;
}
static float *upf(const float *h, size_t n) {
    return up(h, n * sizeof(float));
}
static float *zerof(size_t n) {
    float *z = calloc(n ? n : 1, sizeof *z);
    float *d = upf(z, n);
    free(z);
    return d;
}
static void down(float *h, const float *d, size_t n) {
    REQUIRE_OK(zoff_dev_synchronize(dev));
    REQUIRE_OK(zoff_dev_memcpy(dev, h, d, n * sizeof(float), ZOFF_COPY_D2H));
}
static void dfree(void *d) {
    CHECK_OK(zoff_dev_free(dev, d));
}

/* ||a - ref|| / max(||ref||, 1e-12) */
static double nerr(const float *a, const double *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-12);
}

static void check_close(const char *what, const float *a, const double *ref, size_t n, double tol) {
    double e = nerr(a, ref, n);
    if (!(e <= tol)) fprintf(stderr, "%s: normalized error %.3g > %.3g\n", what, e, tol);
    CHECK(e <= tol);
}

/* Finite-difference check: f() evaluates the objective with the current host input x (n);
 * g is the analytic gradient. Samples up to `samples` coordinates. */
typedef double (*objective_fn)(void *ctx);
static void fd_check(const char *what, objective_fn f, void *ctx, float *x, size_t n,
                     const float *g, int samples) {
    const float eps = 1e-2f;
    int bad = 0;
    for (int k = 0; k < samples; k++) {
        size_t i = (size_t)(zoff_test_rand(&rng) % n);
        float orig = x[i];
        x[i] = orig + eps;
        double fp = f(ctx);
        x[i] = orig - eps;
        double fm = f(ctx);
        x[i] = orig;
        double fd = (fp - fm) / (2.0 * eps);
        double tol = 2e-3 + 2e-2 * fabs(fd);
        if (fabs(fd - g[i]) > tol) {
            if (bad < 5)
                fprintf(stderr, "%s: d/dx[%zu]: analytic %.6g, finite difference %.6g\n", what, i,
                        g[i], fd);
            bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static double dot_w(const float *out, const float *w, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)out[i] * w[i];
    return s;
}

/* --- gemm ---------------------------------------------------------------------------------- */

static float round16(float v, zoff_dtype t) {
    if (t == ZOFF_BF16) return zoff_bf16_to_f32(zoff_f32_to_bf16(v));
    if (t == ZOFF_F16) return zoff_f16_to_f32(zoff_f32_to_f16(v));
    return v;
}

static void test_gemm(void) {
    static const zoff_dtype types[] = {ZOFF_F32, ZOFF_BF16, ZOFF_F16};
    const int M = 37, N = 29, K = 45;
    for (int ti = 0; ti < 3; ti++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                zoff_dtype t = types[ti];
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb;
                size_t nc = (size_t)M * ldc;
                float *A = rnd(na, -1, 1), *B = rnd(nb, -1, 1), *C = rnd(nc, -1, 1);
                uint16_t *A16 = malloc(na * 2), *B16 = malloc(nb * 2);
                for (size_t i = 0; i < na; i++) {
                    A[i] = round16(A[i], t);
                    A16[i] = t == ZOFF_BF16 ? zoff_f32_to_bf16(A[i]) : zoff_f32_to_f16(A[i]);
                }
                for (size_t i = 0; i < nb; i++) {
                    B[i] = round16(B[i], t);
                    B16[i] = t == ZOFF_BF16 ? zoff_f32_to_bf16(B[i]) : zoff_f32_to_f16(B[i]);
                }
                double *ref = malloc(nc * sizeof *ref);
                float alpha = 0.75f, beta = 0.5f;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < ldc; j++) {
                        size_t ci = (size_t)i * ldc + j;
                        if (j >= N) {
                            ref[ci] = C[ci]; /* outside the matrix: untouched */
                            continue;
                        }
                        double acc = 0;
                        for (int k = 0; k < K; k++) {
                            double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                            double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                            acc += a * b;
                        }
                        ref[ci] = alpha * acc + beta * C[ci];
                    }
                void *dA = t == ZOFF_F32 ? (void *)upf(A, na) : up(A16, na * 2);
                void *dB = t == ZOFF_F32 ? (void *)upf(B, nb) : up(B16, nb * 2);
                float *dC = upf(C, nc);
                CHECK_OK(zoff_dev_op_gemm(st, ta, tb, M, N, K, alpha, dA, lda, dB, ldb, t, beta, dC,
                                          ZOFF_F32, ldc));
                down(C, dC, nc);
                char what[64];
                snprintf(what, sizeof what, "gemm %s ta=%d tb=%d", zoff_dtype_name(t), ta, tb);
                check_close(what, C, ref, nc, 1e-5);
                dfree(dA);
                dfree(dB);
                dfree(dC);
                free(A);
                free(B);
                free(C);
                free(A16);
                free(B16);
                free(ref);
            }
    /* bad arguments are refused, not crashed on */
    CHECK(zoff_dev_op_gemm(st, false, false, 2, 2, 2, 1, NULL, 2, NULL, 2, ZOFF_F32, 0, NULL,
                           ZOFF_F32, 2) == -EINVAL);
}

/* --- elementwise: add, bias, gelu ------------------------------------------------------------ */

static double gelu_ref(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

typedef struct gelu_ctx {
    float *x, *w;
    size_t n;
} gelu_ctx;

static double gelu_obj(void *p) {
    gelu_ctx *c = p;
    float *dx = upf(c->x, c->n), *dy = zerof(c->n), *y = malloc(c->n * 4);
    CHECK_OK(zoff_dev_op_gelu_fwd(st, dy, dx, ZOFF_F32, c->n));
    down(y, dy, c->n);
    double r = dot_w(y, c->w, c->n);
    dfree(dx);
    dfree(dy);
    free(y);
    return r;
}

static void test_elementwise(void) {
    const size_t n = 1000;
    const int R = 13, OC = 70;
    float *a = rnd(n, -3, 3), *b = rnd(n, -3, 3), *out = malloc(n * 4);
    double *ref = malloc(n * sizeof *ref);
    float *da = upf(a, n), *db = upf(b, n);
    CHECK_OK(zoff_dev_op_add(st, da, da, db, n)); /* in place */
    down(out, da, n);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)a[i] + b[i];
    check_close("add", out, ref, n, 1e-7);

    /* bias init (bias + residual, in place over the residual; bias alone; residual alone into
     * another buffer) and bias grad on (R, OC) */
    float *bias = rnd(OC, -1, 1), *dbias0 = rnd(OC, -1, 1), *m = rnd((size_t)R * OC, -1, 1);
    float *dm = upf(m, (size_t)R * OC), *dbias = upf(bias, OC), *dgb = upf(dbias0, OC);
    float *got = malloc((size_t)R * OC * 4), *junk = rnd((size_t)R * OC, 50, 60);
    double *r2 = malloc((size_t)R * OC * sizeof *r2), gref[70];
    float *dother = upf(junk, (size_t)R * OC);
    CHECK_OK(zoff_dev_op_bias_init(st, dother, ZOFF_F32, dbias, ZOFF_F32, NULL, R, OC));
    down(got, dother, (size_t)R * OC);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < OC; j++)
            r2[i * OC + j] = bias[j];
    check_close("bias_init (bias only)", got, r2, (size_t)R * OC, 0);
    CHECK_OK(zoff_dev_op_bias_init(st, dother, ZOFF_F32, NULL, ZOFF_F32, dm, R, OC));
    down(got, dother, (size_t)R * OC);
    for (int i = 0; i < R * OC; i++)
        r2[i] = m[i];
    check_close("bias_init (residual only)", got, r2, (size_t)R * OC, 0);
    dfree(dother);
    CHECK_OK(zoff_dev_op_bias_init(st, dm, ZOFF_F32, dbias, ZOFF_F32, dm, R, OC));
    CHECK_OK(zoff_dev_op_bias_grad(st, dgb, ZOFF_F32, dm, ZOFF_F32, R, OC));
    down(got, dm, (size_t)R * OC);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < OC; j++)
            r2[i * OC + j] = (double)m[i * OC + j] + bias[j];
    check_close("bias_init (bias + residual, in place)", got, r2, (size_t)R * OC, 1e-7);
    free(junk);
    for (int j = 0; j < OC; j++) {
        gref[j] = dbias0[j];
        for (int i = 0; i < R; i++)
            gref[j] += r2[i * OC + j];
    }
    down(got, dgb, OC);
    check_close("bias_grad", got, gref, OC, 1e-6);

    /* gelu forward vs reference; backward vs finite differences */
    float *dx = upf(a, n), *dy = zerof(n);
    CHECK_OK(zoff_dev_op_gelu_fwd(st, dy, dx, ZOFF_F32, n));
    down(out, dy, n);
    for (size_t i = 0; i < n; i++)
        ref[i] = gelu_ref(a[i]);
    check_close("gelu_fwd", out, ref, n, 1e-6);
    float *w = rnd(n, -1, 1), *dw = upf(w, n), *dgx = zerof(n);
    CHECK_OK(zoff_dev_op_gelu_bwd(st, dgx, dx, dw, ZOFF_F32, n));
    down(out, dgx, n);
    gelu_ctx gc = {a, w, n};
    fd_check("gelu_bwd", gelu_obj, &gc, a, n, out, 30);

    dfree(da), dfree(db), dfree(dm), dfree(dbias), dfree(dgb), dfree(dx), dfree(dy), dfree(dw);
    dfree(dgx);
    free(a), free(b), free(out), free(ref), free(bias), free(dbias0), free(m), free(got);
    free(r2), free(w);
}

/* --- layernorm ------------------------------------------------------------------------------ */

typedef struct ln_ctx {
    float *x, *wt, *bs, *w;
    size_t N;
    int C;
} ln_ctx;

static double ln_obj(void *p) {
    ln_ctx *c = p;
    size_t n = c->N * c->C;
    float *dx = upf(c->x, n), *dwt = upf(c->wt, c->C), *dbs = upf(c->bs, c->C);
    float *dy = zerof(n), *dm = zerof(c->N), *dr = zerof(c->N), *y = malloc(n * 4);
    CHECK_OK(
        zoff_dev_op_layernorm_fwd(st, dy, ZOFF_F32, dm, dr, dx, dwt, dbs, ZOFF_F32, c->N, c->C));
    down(y, dy, n);
    double r = dot_w(y, c->w, n);
    dfree(dx), dfree(dwt), dfree(dbs), dfree(dy), dfree(dm), dfree(dr);
    free(y);
    return r;
}

static void test_layernorm(void) {
    const size_t N = 7;
    const int C = 72;
    size_t n = N * C;
    float *x = rnd(n, -2, 2), *wt = rnd(C, 0.5f, 1.5f), *bs = rnd(C, -0.5f, 0.5f);
    for (size_t i = 0; i < n; i++)
        x[i] += (float)(i / C); /* rows with different means */
    float *dx = upf(x, n), *dwt = upf(wt, C), *dbs = upf(bs, C), *dy = zerof(n);
    float *dm = zerof(N), *dr = zerof(N), *y = malloc(n * 4);
    double *ref = malloc(n * sizeof *ref);
    CHECK_OK(zoff_dev_op_layernorm_fwd(st, dy, ZOFF_F32, dm, dr, dx, dwt, dbs, ZOFF_F32, N, C));
    down(y, dy, n);
    for (size_t r = 0; r < N; r++) {
        double mu = 0, var = 0;
        for (int i = 0; i < C; i++)
            mu += x[r * C + i];
        mu /= C;
        for (int i = 0; i < C; i++)
            var += (x[r * C + i] - mu) * (x[r * C + i] - mu);
        var /= C;
        for (int i = 0; i < C; i++)
            ref[r * C + i] = (x[r * C + i] - mu) / sqrt(var + 1e-5) * wt[i] + bs[i];
    }
    check_close("layernorm_fwd", y, ref, n, 1e-5);

    float *w = rnd(n, -1, 1), *dw = upf(w, n);
    float *gdx = zerof(n), *gdw = zerof(C), *gdb = zerof(C);
    CHECK_OK(zoff_dev_op_layernorm_bwd(st, gdx, gdw, gdb, ZOFF_F32, dw, dx, dwt, ZOFF_F32, dm, dr,
                                       N, C));
    float *gx = malloc(n * 4), *gw = malloc(C * 4), *gb = malloc(C * 4);
    down(gx, gdx, n);
    down(gw, gdw, C);
    down(gb, gdb, C);
    ln_ctx c = {x, wt, bs, w, N, C};
    fd_check("layernorm_bwd dinp", ln_obj, &c, x, n, gx, 40);
    fd_check("layernorm_bwd dweight", ln_obj, &c, wt, C, gw, 20);
    fd_check("layernorm_bwd dbias", ln_obj, &c, bs, C, gb, 20);
    dfree(dx), dfree(dwt), dfree(dbs), dfree(dy), dfree(dm), dfree(dr), dfree(dw), dfree(gdx);
    dfree(gdw), dfree(gdb);
    free(x), free(wt), free(bs), free(y), free(ref), free(w), free(gx), free(gw), free(gb);
}

/* --- attention -------------------------------------------------------------------------------- */

typedef struct attn_ctx {
    float *qkv, *w;
    int B, T, C, NH;
} attn_ctx;

static double attn_obj(void *p) {
    attn_ctx *c = p;
    size_t nq = (size_t)c->B * c->T * 3 * c->C, no = (size_t)c->B * c->T * c->C;
    size_t na = (size_t)c->B * c->NH * c->T * c->T;
    float *dq = upf(c->qkv, nq), *dout = zerof(no), *datt = zerof(na), *y = malloc(no * 4);
    CHECK_OK(zoff_dev_op_attention_fwd(st, dout, datt, dq, c->B, c->T, c->C, c->NH));
    down(y, dout, no);
    double r = dot_w(y, c->w, no);
    dfree(dq), dfree(dout), dfree(datt);
    free(y);
    return r;
}

static void test_attention(void) {
    const int B = 2, T = 9, C = 24, NH = 3, hs = C / NH;
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    float *qkv = rnd(nq, -1.5f, 1.5f), *y = malloc(no * 4), *att = malloc(na * 4);
    double *ref = calloc(no, sizeof *ref), *aref = calloc(na, sizeof *aref);
    float *dq = upf(qkv, nq), *dout = zerof(no), *datt = zerof(na);
    CHECK_OK(zoff_dev_op_attention_fwd(st, dout, datt, dq, B, T, C, NH));
    down(y, dout, no);
    down(att, datt, na);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                double sc[64], mx = -1e300, sum = 0;
                for (int t2 = 0; t2 <= t; t2++) {
                    double d = 0;
                    for (int i = 0; i < hs; i++)
                        d += (double)qkv[((size_t)b * T + t) * 3 * C + h * hs + i] *
                             qkv[((size_t)b * T + t2) * 3 * C + C + h * hs + i];
                    sc[t2] = d / sqrt((double)hs);
                    mx = fmax(mx, sc[t2]);
                }
                for (int t2 = 0; t2 <= t; t2++)
                    sum += (sc[t2] = exp(sc[t2] - mx));
                for (int t2 = 0; t2 <= t; t2++) {
                    double pr = sc[t2] / sum;
                    aref[(((size_t)b * NH + h) * T + t) * T + t2] = pr;
                    for (int i = 0; i < hs; i++)
                        ref[((size_t)b * T + t) * C + h * hs + i] +=
                            pr * qkv[((size_t)b * T + t2) * 3 * C + 2 * C + h * hs + i];
                }
            }
    check_close("attention_fwd out", y, ref, no, 1e-5);
    check_close("attention_fwd att", att, aref, na, 1e-5);

    float *w = rnd(no, -1, 1), *dw = upf(w, no), *dg = zerof(nq), *scratch = zerof(na);
    CHECK_OK(zoff_dev_op_attention_bwd(st, dg, scratch, dw, dq, datt, B, T, C, NH));
    float *g = malloc(nq * 4);
    down(g, dg, nq);
    attn_ctx c = {qkv, w, B, T, C, NH};
    fd_check("attention_bwd", attn_obj, &c, qkv, nq, g, 60);
    dfree(dq), dfree(dout), dfree(datt), dfree(dw), dfree(dg), dfree(scratch);
    free(qkv), free(y), free(att), free(ref), free(aref), free(w), free(g);
}

/* --- softmax cross-entropy ----------------------------------------------------------------------
 */

typedef struct xent_ctx {
    float *logits;
    int32_t *targets;
    size_t N;
    int V;
} xent_ctx;

static double xent_obj(void *p) {
    xent_ctx *c = p;
    size_t n = c->N * c->V;
    float *dl = upf(c->logits, n), *dp = zerof(n), *dls = zerof(c->N), *ls = malloc(c->N * 4);
    int32_t *dt = up(c->targets, c->N * 4);
    CHECK_OK(zoff_dev_op_softmax_xent_fwd(st, dp, dls, dl, dt, c->N, c->V));
    down(ls, dls, c->N);
    double r = 0;
    for (size_t i = 0; i < c->N; i++)
        r += ls[i];
    dfree(dl), dfree(dp), dfree(dls), dfree(dt);
    free(ls);
    return r / c->N;
}

static void test_xent(void) {
    const size_t N = 6;
    const int V = 77;
    size_t n = N * V;
    float *logits = rnd(n, -4, 4), *probs = malloc(n * 4), *losses = malloc(N * 4);
    int32_t targets[6];
    for (size_t i = 0; i < N; i++)
        targets[i] = (int32_t)(zoff_test_rand(&rng) % V);
    double *pref = malloc(n * sizeof *pref), lref[6];
    for (size_t r = 0; r < N; r++) {
        double mx = -1e300, sum = 0;
        for (int i = 0; i < V; i++)
            mx = fmax(mx, logits[r * V + i]);
        for (int i = 0; i < V; i++)
            sum += exp(logits[r * V + i] - mx);
        for (int i = 0; i < V; i++)
            pref[r * V + i] = exp(logits[r * V + i] - mx) / sum;
        lref[r] = -log(pref[r * V + targets[r]]);
    }
    float *dl = upf(logits, n), *dls = zerof(N);
    int32_t *dt = up(targets, sizeof targets);
    /* in place: probabilities overwrite the logits */
    CHECK_OK(zoff_dev_op_softmax_xent_fwd(st, dl, dls, dl, dt, N, V));
    down(probs, dl, n);
    down(losses, dls, N);
    check_close("softmax_xent_fwd probs", probs, pref, n, 1e-5);
    check_close("softmax_xent_fwd losses", losses, lref, N, 1e-5);
    /* without targets: probabilities only */
    float *dl2 = upf(logits, n), *dp2 = zerof(n);
    CHECK_OK(zoff_dev_op_softmax_xent_fwd(st, dp2, NULL, dl2, NULL, N, V));
    down(probs, dp2, n);
    check_close("softmax_xent_fwd no targets", probs, pref, n, 1e-5);
    /* backward of the mean loss, in place over the probabilities */
    CHECK_OK(zoff_dev_op_softmax_xent_bwd(st, dl, dl, dt, 1.0f / N, N, V));
    float *g = malloc(n * 4);
    down(g, dl, n);
    xent_ctx c = {logits, targets, N, V};
    fd_check("softmax_xent_bwd", xent_obj, &c, logits, n, g, 40);
    dfree(dl), dfree(dls), dfree(dt), dfree(dl2), dfree(dp2);
    free(logits), free(probs), free(losses), free(pref), free(g);
}

/* --- embedding ----------------------------------------------------------------------------------
 */

static void test_embedding(void) {
    const int B = 3, T = 5, C = 70, V = 11, maxT = 8;
    int32_t tok[15];
    for (int i = 0; i < B * T; i++)
        tok[i] = (int32_t)(zoff_test_rand(&rng) % V);
    tok[3] = tok[4] = tok[9]; /* repeated tokens accumulate */
    float *wte = rnd((size_t)V * C, -1, 1), *wpe = rnd((size_t)maxT * C, -1, 1);
    size_t no = (size_t)B * T * C;
    float *out = malloc(no * 4);
    double *ref = malloc(no * sizeof *ref);
    float *dwte = upf(wte, (size_t)V * C), *dwpe = upf(wpe, (size_t)maxT * C), *dout = zerof(no);
    int32_t *dtok = up(tok, sizeof tok);
    CHECK_OK(zoff_dev_op_embedding_fwd(st, dout, dtok, NULL, dwte, dwpe, ZOFF_F32, B, T, C));
    down(out, dout, no);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < C; i++)
                ref[((size_t)b * T + t) * C + i] =
                    (double)wte[(size_t)tok[b * T + t] * C + i] + wpe[(size_t)t * C + i];
    check_close("embedding_fwd", out, ref, no, 1e-7);
    /* backward: the forward is linear, so the gradient is exact sums */
    float *w = rnd(no, -1, 1), *dw = upf(w, no);
    float *g0 = rnd((size_t)V * C, -1, 1), *gp0 = rnd((size_t)maxT * C, -1, 1);
    float *dg = upf(g0, (size_t)V * C), *dgp = upf(gp0, (size_t)maxT * C);
    CHECK_OK(zoff_dev_op_embedding_bwd(st, dg, dgp, ZOFF_F32, dw, dtok, NULL, B, T, C));
    float *g = malloc((size_t)V * C * 4), *gp = malloc((size_t)maxT * C * 4);
    down(g, dg, (size_t)V * C);
    down(gp, dgp, (size_t)maxT * C);
    double *gr = malloc((size_t)V * C * sizeof *gr), *gpr = malloc((size_t)maxT * C * sizeof *gpr);
    for (size_t i = 0; i < (size_t)V * C; i++)
        gr[i] = g0[i];
    for (size_t i = 0; i < (size_t)maxT * C; i++)
        gpr[i] = gp0[i];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int i = 0; i < C; i++) {
                gr[(size_t)tok[b * T + t] * C + i] += w[((size_t)b * T + t) * C + i];
                gpr[(size_t)t * C + i] += w[((size_t)b * T + t) * C + i];
            }
    check_close("embedding_bwd dwte", g, gr, (size_t)V * C, 1e-6);
    check_close("embedding_bwd dwpe", gp, gpr, (size_t)maxT * C, 1e-6);
    dfree(dwte), dfree(dwpe), dfree(dout), dfree(dtok), dfree(dw), dfree(dg), dfree(dgp);
    free(wte), free(wpe), free(out), free(ref), free(w), free(g0), free(gp0), free(g), free(gp);
    free(gr), free(gpr);
}

/* --- typed variants: 16-bit weights, gradients, outputs ---------------------------------------
 * Each against a double reference computed from the same (rounded) inputs; a 16-bit result is
 * compared within its rounding (normalized error), an fp32 one tightly. */

static double tol16(zoff_dtype t, double f32_tol) {
    return t == ZOFF_BF16 ? 4e-3 : t == ZOFF_F16 ? 6e-4 : f32_tol;
}

/* n floats into device memory as type t (a new allocation); the host copy is rounded to t. */
static void *upt(float *h, size_t n, zoff_dtype t) {
    size_t es = zoff_dtype_size(t);
    void *tmp = malloc(n ? n * es : 4);
    for (size_t i = 0; i < n; i++) {
        h[i] = round16(h[i], t);
        zoff_store_from_f32(tmp, t, i, h[i]);
    }
    void *d = up(tmp, n * es);
    free(tmp);
    return d;
}

static void downt(float *h, const void *d, size_t n, zoff_dtype t) {
    size_t es = zoff_dtype_size(t);
    void *tmp = malloc(n ? n * es : 4);
    REQUIRE_OK(zoff_dev_synchronize(dev));
    REQUIRE_OK(zoff_dev_memcpy(dev, tmp, d, n * es, ZOFF_COPY_D2H));
    for (size_t i = 0; i < n; i++)
        h[i] = zoff_load_as_f32(tmp, t, i);
    free(tmp);
}

static void check_typed(const char *op, zoff_dtype t, const float *a, const double *ref, size_t n,
                        double f32_tol) {
    char what[96];
    snprintf(what, sizeof what, "%s (%s)", op, zoff_dtype_name(t));
    check_close(what, a, ref, n, tol16(t, f32_tol));
}

/* C (c_type, 16-bit or not) = alpha op(A) op(B) + beta C with beta != 0, every pair of operand
 * and output types (cuBLAS takes some pairs, the CUDA backend's own kernel the others). */
static void test_gemm_typed_c(void) {
    static const zoff_dtype pairs[][2] = {
        {ZOFF_BF16, ZOFF_BF16}, {ZOFF_F16, ZOFF_F16},  {ZOFF_F32, ZOFF_BF16},
        {ZOFF_F32, ZOFF_F16},   {ZOFF_BF16, ZOFF_F16}, {ZOFF_F16, ZOFF_BF16},
    };
    const int M = 37, N = 29, K = 45;
    for (size_t pi = 0; pi < sizeof pairs / sizeof pairs[0]; pi++)
        for (int tt = 0; tt < 4; tt++) {
            zoff_dtype ab = pairs[pi][0], ct = pairs[pi][1];
            bool ta = tt & 1, tb = tt >> 1;
            int lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
            size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb;
            size_t nc = (size_t)M * ldc;
            float *A = rnd(na, -1, 1), *B = rnd(nb, -1, 1), *C = rnd(nc, -2, 2);
            void *dA = upt(A, na, ab), *dB = upt(B, nb, ab), *dC = upt(C, nc, ct);
            double *ref = malloc(nc * sizeof *ref);
            float alpha = 1.25f, beta = -0.75f;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < ldc; j++) {
                    size_t ci = (size_t)i * ldc + j;
                    double acc = 0;
                    for (int k = 0; j < N && k < K; k++)
                        acc += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                               (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                    ref[ci] = j < N ? alpha * acc + beta * C[ci] : C[ci];
                }
            CHECK_OK(zoff_dev_op_gemm(st, ta, tb, M, N, K, alpha, dA, lda, dB, ldb, ab, beta, dC,
                                      ct, ldc));
            float *got = malloc(nc * sizeof *got);
            downt(got, dC, nc, ct);
            char what[80];
            snprintf(what, sizeof what, "gemm %s -> C %s ta=%d tb=%d beta!=0", zoff_dtype_name(ab),
                     zoff_dtype_name(ct), ta, tb);
            check_close(what, got, ref, nc, tol16(ct, 1e-5));
            int pad_changed = 0; /* columns N..ldc of C are not the matrix: untouched */
            for (int i = 0; i < M; i++)
                for (int j = N; j < ldc; j++)
                    pad_changed += got[(size_t)i * ldc + j] != C[(size_t)i * ldc + j];
            CHECK_EQ_INT(pad_changed, 0);
            /* beta 0: C is not read (NaN in it does not leak into the result) */
            if (tt == 0) {
                float *nanc = malloc(nc * sizeof *nanc);
                for (size_t i = 0; i < nc; i++)
                    nanc[i] = NAN;
                void *dN = upt(nanc, nc, ct);
                CHECK_OK(zoff_dev_op_gemm(st, ta, tb, M, N, K, alpha, dA, lda, dB, ldb, ab, 0.0f,
                                          dN, ct, ldc));
                downt(got, dN, nc, ct);
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < ldc; j++) {
                        size_t ci = (size_t)i * ldc + j;
                        ref[ci] = j < N ? ref[ci] - beta * C[ci] : 0.0;
                        if (j >= N) got[ci] = 0.0f; /* padding keeps its NaN */
                    }
                snprintf(what, sizeof what, "gemm %s -> C %s beta=0 over NaN", zoff_dtype_name(ab),
                         zoff_dtype_name(ct));
                check_close(what, got, ref, nc, tol16(ct, 1e-5));
                dfree(dN);
                free(nanc);
            }
            dfree(dA), dfree(dB), dfree(dC);
            free(A), free(B), free(C), free(ref), free(got);
        }
}

static double gelu_grad_ref(double x) {
    double u = sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1.0 + th) +
           0.5 * x * (1.0 - th * th) * sqrt(2.0 / M_PI) * (1.0 + 3.0 * 0.044715 * x * x);
}

/* bias add and bias gradient with typed buffers: rows enough for the CUDA backend's two-stage
 * column sum, and a wide one for its single-pass form; GELU forward and backward (which writes,
 * in place over dout too). */
static void test_elementwise_typed(void) {
    static const zoff_dtype types[][2] = {/* out or g type, bias or dout type */
                                          {ZOFF_BF16, ZOFF_BF16},
                                          {ZOFF_F16, ZOFF_F16},
                                          {ZOFF_F32, ZOFF_BF16},
                                          {ZOFF_BF16, ZOFF_F32},
                                          {ZOFF_F32, ZOFF_F32}};
    static const int shapes[][2] = {{300, 70}, {70, 33000}, {1, 5}};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t si = 0; si < 3; si++) {
            zoff_dtype to = types[ti][0], tb = types[ti][1];
            size_t R = (size_t)shapes[si][0];
            int OC = shapes[si][1];
            size_t n = R * OC;
            float *m = rnd(n, -1, 1), *bias = rnd(OC, -1, 1), *g0 = rnd(OC, -4, 4);
            void *dm = upt(m, n, to), *db = upt(bias, OC, tb);
            /* bias init: out (to) = bias (tb) + a residual (fp32), rounded once */
            float *res = rnd(n, -1, 1), *dres = upf(res, n);
            CHECK_OK(zoff_dev_op_bias_init(st, dm, to, db, tb, dres, R, OC));
            float *got = malloc(n * sizeof *got);
            double *ref = malloc(n * sizeof *ref);
            downt(got, dm, n, to);
            for (size_t i = 0; i < n; i++)
                ref[i] = (double)res[i] + bias[i % OC];
            check_typed("bias_init", to, got, ref, n, 1e-7);
            dfree(dres), free(res);
            /* bias grad: g (to) += column sums of dout (tb), into a non-zero buffer */
            float *dout = rnd(n, -1, 1);
            void *ddo = upt(dout, n, tb), *dg = upt(g0, OC, to);
            CHECK_OK(zoff_dev_op_bias_grad(st, dg, to, ddo, tb, R, OC));
            downt(got, dg, OC, to);
            for (int j = 0; j < OC; j++) {
                ref[j] = g0[j];
                for (size_t r = 0; r < R; r++)
                    ref[j] += dout[r * OC + j];
            }
            check_typed("bias_grad", to, got, ref, OC, 1e-6);
            dfree(dm), dfree(db), dfree(ddo), dfree(dg);
            free(m), free(bias), free(g0), free(got), free(ref), free(dout);
        }
    static const zoff_dtype gtypes[] = {ZOFF_BF16, ZOFF_F16, ZOFF_F32};
    const size_t n = 3001;
    for (int ti = 0; ti < 3; ti++) {
        zoff_dtype t = gtypes[ti];
        float *x = rnd(n, -4, 4), *dy = rnd(n, -1, 1), *got = malloc(n * sizeof *got);
        double *ref = malloc(n * sizeof *ref);
        void *dx = upt(x, n, t), *dout = upt(dy, n, t);
        float *junk = rnd(n, 100, 200);
        void *y = upt(junk, n, t);
        CHECK_OK(zoff_dev_op_gelu_fwd(st, y, dx, t, n));
        downt(got, y, n, t);
        for (size_t i = 0; i < n; i++)
            ref[i] = gelu_ref(x[i]);
        check_typed("gelu_fwd", t, got, ref, n, 1e-6);
        /* backward into a buffer holding garbage (it writes), then in place over dout */
        void *dg = upt(junk, n, t);
        CHECK_OK(zoff_dev_op_gelu_bwd(st, dg, dx, dout, t, n));
        downt(got, dg, n, t);
        for (size_t i = 0; i < n; i++)
            ref[i] = gelu_grad_ref(x[i]) * dy[i];
        check_typed("gelu_bwd", t, got, ref, n, 1e-6);
        CHECK_OK(zoff_dev_op_gelu_bwd(st, dout, dx, dout, t, n));
        downt(got, dout, n, t);
        check_typed("gelu_bwd in place", t, got, ref, n, 1e-6);
        /* in-place forward */
        CHECK_OK(zoff_dev_op_gelu_fwd(st, dx, dx, t, n));
        downt(got, dx, n, t);
        for (size_t i = 0; i < n; i++)
            ref[i] = gelu_ref(x[i]);
        check_typed("gelu_fwd in place", t, got, ref, n, 1e-6);
        dfree(dx), dfree(dout), dfree(y), dfree(dg);
        free(x), free(dy), free(got), free(ref), free(junk);
    }
}

/* LayerNorm with 16-bit output and weights; backward accumulating into a non-zero dinp and
 * non-zero 16-bit dweight and dbias, over enough rows for a two-stage column sum. */
static void test_layernorm_typed(void) {
    static const zoff_dtype types[][3] = {/* out, w, g */
                                          {ZOFF_BF16, ZOFF_BF16, ZOFF_BF16},
                                          {ZOFF_F16, ZOFF_F16, ZOFF_F16},
                                          {ZOFF_F32, ZOFF_BF16, ZOFF_F32},
                                          {ZOFF_BF16, ZOFF_F32, ZOFF_F16},
                                          {ZOFF_F32, ZOFF_F32, ZOFF_F32}};
    const size_t N = 300;
    const int C = 72;
    const size_t n = N * C;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        zoff_dtype to = types[ti][0], tw = types[ti][1], tg = types[ti][2];
        float *x = rnd(n, -2, 2), *w = rnd(C, 0.5f, 1.5f), *bs = rnd(C, -0.5f, 0.5f);
        for (size_t i = 0; i < n; i++)
            x[i] += (float)(i / C % 5);
        float *dx = upf(x, n), *dm = zerof(N), *dr = zerof(N);
        float *fill = rnd(n, 9, 9); /* the output is written over this */
        void *dw = upt(w, C, tw), *dbs = upt(bs, C, tw), *dy = upt(fill, n, to);
        CHECK_OK(zoff_dev_op_layernorm_fwd(st, dy, to, dm, dr, dx, dw, dbs, tw, N, C));
        float *got = malloc(n * sizeof *got), *mean = malloc(N * 4), *rstd = malloc(N * 4);
        double *ref = malloc(n * sizeof *ref), *rm = malloc(N * 8), *rr = malloc(N * 8);
        downt(got, dy, n, to);
        down(mean, dm, N);
        down(rstd, dr, N);
        for (size_t r = 0; r < N; r++) {
            double mu = 0, var = 0;
            for (int i = 0; i < C; i++)
                mu += x[r * C + i];
            mu /= C;
            for (int i = 0; i < C; i++)
                var += (x[r * C + i] - mu) * (x[r * C + i] - mu);
            rm[r] = mu;
            rr[r] = 1.0 / sqrt(var / C + 1e-5);
            for (int i = 0; i < C; i++)
                ref[r * C + i] = (x[r * C + i] - mu) * rr[r] * w[i] + bs[i];
        }
        check_typed("layernorm_fwd out", to, got, ref, n, 1e-5);
        check_close("layernorm_fwd mean", mean, rm, N, 1e-6);
        check_close("layernorm_fwd rstd", rstd, rr, N, 1e-5);
        /* backward */
        float *dout = rnd(n, -1, 1), *dx0 = rnd(n, -1, 1), *gw0 = rnd(C, -3, 3),
              *gb0 = rnd(C, -3, 3);
        float *ddo = upf(dout, n), *ddx = upf(dx0, n);
        void *dgw = upt(gw0, C, tg), *dgb = upt(gb0, C, tg);
        CHECK_OK(zoff_dev_op_layernorm_bwd(st, ddx, dgw, dgb, tg, ddo, dx, dw, tw, dm, dr, N, C));
        double *rgw = malloc(C * 8), *rgb = malloc(C * 8);
        for (int i = 0; i < C; i++) {
            rgw[i] = gw0[i];
            rgb[i] = gb0[i];
        }
        for (size_t r = 0; r < N; r++) {
            double a = 0, b = 0;
            for (int i = 0; i < C; i++) {
                double norm = (x[r * C + i] - rm[r]) * rr[r], dn = (double)w[i] * dout[r * C + i];
                a += dn;
                b += dn * norm;
                rgw[i] += norm * dout[r * C + i];
                rgb[i] += dout[r * C + i];
            }
            a /= C;
            b /= C;
            for (int i = 0; i < C; i++) {
                double norm = (x[r * C + i] - rm[r]) * rr[r], dn = (double)w[i] * dout[r * C + i];
                ref[r * C + i] = dx0[r * C + i] + (dn - a - norm * b) * rr[r];
            }
        }
        down(got, ddx, n);
        check_typed("layernorm_bwd dinp", ZOFF_F32, got, ref, n, 1e-5);
        downt(got, dgw, C, tg);
        check_typed("layernorm_bwd dweight", tg, got, rgw, C, 1e-5);
        downt(got, dgb, C, tg);
        check_typed("layernorm_bwd dbias", tg, got, rgb, C, 1e-5);
        dfree(dx), dfree(dm), dfree(dr), dfree(dw), dfree(dbs), dfree(dy), dfree(ddo), dfree(ddx);
        dfree(dgw), dfree(dgb);
        free(x), free(w), free(bs), free(got), free(mean), free(rstd), free(ref), free(rm),
            free(fill);
        free(rr), free(dout), free(dx0), free(gw0), free(gb0), free(rgw), free(rgb);
    }
}

/* Embedding with position ids (or none), repeated tokens, with and without a position table,
 * typed tables and gradients; enough positions and channels for the CUDA backward's chunked
 * id scan and two channel tiles. */
static void test_embedding_typed(void) {
    typedef struct {
        zoff_dtype t;
        bool pos, wpe;
        int B, T, C;
    } emb_case;
    static const emb_case cases[] = {
        {ZOFF_F32, true, true, 3, 5, 70},      {ZOFF_BF16, false, false, 2, 9, 40},
        {ZOFF_F16, true, true, 2, 7, 33},      {ZOFF_BF16, true, false, 4, 300, 2100},
        {ZOFF_F32, false, true, 4, 300, 2100},
    };
    const int V = 23, maxpos = 400;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const emb_case *c = &cases[ci];
        int BT = c->B * c->T, C = c->C;
        zoff_dtype t = c->t;
        int32_t *tok = malloc(BT * sizeof *tok), *pos = malloc(BT * sizeof *pos);
        for (int i = 0; i < BT; i++) {
            tok[i] = (int32_t)(zoff_test_rand(&rng) % V); /* V small: tokens repeat */
            pos[i] = (int32_t)(zoff_test_rand(&rng) % maxpos);
        }
        if (BT > 4) pos[1] = pos[3] = pos[4]; /* repeated positions too */
        size_t nw = (size_t)V * C, np = (size_t)maxpos * C, no = (size_t)BT * C;
        float *wte = rnd(nw, -1, 1), *wpe = rnd(np, -1, 1), *out = malloc(no * 4);
        void *dwte = upt(wte, nw, t), *dwpe = c->wpe ? upt(wpe, np, t) : NULL;
        int32_t *dtok = up(tok, BT * 4), *dpos = c->pos ? up(pos, BT * 4) : NULL;
        float *dout = zerof(no);
        CHECK_OK(zoff_dev_op_embedding_fwd(st, dout, dtok, dpos, dwte, dwpe, t, c->B, c->T, C));
        down(out, dout, no);
        double *ref = malloc(no * sizeof *ref);
        for (int bt = 0; bt < BT; bt++) {
            int p = c->pos ? pos[bt] : bt % c->T;
            for (int i = 0; i < C; i++)
                ref[(size_t)bt * C + i] =
                    (double)wte[(size_t)tok[bt] * C + i] + (c->wpe ? wpe[(size_t)p * C + i] : 0.0);
        }
        check_typed("embedding_fwd", ZOFF_F32, out, ref, no, 1e-7);
        /* backward into non-zero gradients */
        float *w = rnd(no, -1, 1), *g0 = rnd(nw, -2, 2), *gp0 = rnd(np, -2, 2);
        float *dw = upf(w, no);
        void *dg = upt(g0, nw, t), *dgp = c->wpe ? upt(gp0, np, t) : NULL;
        CHECK_OK(zoff_dev_op_embedding_bwd(st, dg, dgp, t, dw, dtok, dpos, c->B, c->T, C));
        double *gr = malloc(nw * sizeof *gr), *gpr = malloc(np * sizeof *gpr);
        for (size_t i = 0; i < nw; i++)
            gr[i] = g0[i];
        for (size_t i = 0; i < np; i++)
            gpr[i] = gp0[i];
        for (int bt = 0; bt < BT; bt++) {
            int p = c->pos ? pos[bt] : bt % c->T;
            for (int i = 0; i < C; i++) {
                gr[(size_t)tok[bt] * C + i] += w[(size_t)bt * C + i];
                gpr[(size_t)p * C + i] += w[(size_t)bt * C + i];
            }
        }
        float *g = malloc((nw > np ? nw : np) * sizeof *g);
        downt(g, dg, nw, t);
        check_typed("embedding_bwd dwte", t, g, gr, nw, 1e-6);
        if (c->wpe) {
            downt(g, dgp, np, t);
            check_typed("embedding_bwd dwpe", t, g, gpr, np, 1e-6);
        }
        dfree(dwte), dfree(dwpe), dfree(dtok), dfree(dpos), dfree(dout), dfree(dw), dfree(dg);
        dfree(dgp);
        free(tok), free(pos), free(wte), free(wpe), free(out), free(ref), free(w), free(g0);
        free(gp0), free(gr), free(gpr), free(g);
    }
}

/* The fused loss: ignored targets (-100), the gradient in f32 over the logits themselves, in
 * bf16 and f16, or not at all. */
static void test_xent_fused(void) {
    const size_t N = 9;
    const int V = 1500;
    size_t n = N * V;
    int32_t targets[9];
    int counted = 0;
    for (size_t i = 0; i < N; i++) {
        targets[i] = i % 3 == 1 ? -100 : (int32_t)(zoff_test_rand(&rng) % V);
        counted += targets[i] >= 0;
    }
    float *logits = rnd(n, -6, 6);
    logits[4 * V + 7] = 30.0f; /* a confident row: the loss must stay finite and exact */
    float dloss = 1.0f / (float)counted;
    double *gref = malloc(n * sizeof *gref), lref[9];
    for (size_t r = 0; r < N; r++) {
        const float *x = logits + r * V;
        double mx = -1e300, sum = 0;
        for (int i = 0; i < V; i++)
            mx = fmax(mx, x[i]);
        for (int i = 0; i < V; i++)
            sum += exp(x[i] - mx);
        int t = targets[r];
        lref[r] = t < 0 ? 0.0 : log(sum) + mx - x[t];
        for (int i = 0; i < V; i++)
            gref[r * V + i] = t < 0 ? 0.0 : dloss * (exp(x[i] - mx) / sum - (i == t));
    }
    int32_t *dt = up(targets, sizeof targets);
    static const zoff_dtype types[] = {ZOFF_F32, ZOFF_BF16, ZOFF_F16};
    float *got = malloc(n * sizeof *got), losses[9];
    for (int mode = 0; mode < 4; mode++) {
        zoff_dtype t = mode < 3 ? types[mode] : ZOFF_F32;
        float *fill = rnd(n, 7, 8); /* losses and gradients are written over this */
        float *dl = upf(logits, n), *dls = upf(fill, N);
        void *dg = mode == 0   ? (void *)dl /* in place over the logits */
                   : mode == 3 ? NULL
                               : upt(fill, n, t);
        CHECK_OK(zoff_dev_op_xent_fused(st, dls, dg, t, dl, dt, dloss, N, V));
        down(losses, dls, N);
        check_close(mode == 3 ? "xent_fused losses (no gradient)" : "xent_fused losses", losses,
                    lref, N, 1e-5);
        for (size_t r = 0; r < N; r++)
            if (targets[r] < 0) CHECK(losses[r] == 0.0f);
        if (dg) {
            downt(got, dg, n, t);
            check_typed(mode == 0 ? "xent_fused dlogits in place" : "xent_fused dlogits", t, got,
                        gref, n, 1e-5);
            int nonzero_ignored = 0;
            for (size_t r = 0; r < N; r++)
                for (int i = 0; targets[r] < 0 && i < V; i++)
                    nonzero_ignored += got[r * V + i] != 0.0f;
            CHECK_EQ_INT(nonzero_ignored, 0);
        }
        if (dg && dg != dl) dfree(dg);
        dfree(dl), dfree(dls);
        free(fill);
    }
    /* a 16-bit gradient cannot overwrite fp32 logits */
    float *dl = upf(logits, n), *dls = zerof(N);
    CHECK(zoff_dev_op_xent_fused(st, dls, dl, ZOFF_BF16, dl, dt, dloss, N, V) == -EINVAL);
    dfree(dl), dfree(dls), dfree(dt);
    free(logits), free(gref), free(got);
}

/* --- adamw --------------------------------------------------------------------------------------
 */

static void test_adamw(void) {
    const size_t n = 5000;
    float *p = rnd(n, -1, 1), *g = rnd(n, -1, 1), *m = rnd(n, -0.1f, 0.1f), *v = rnd(n, 0, 0.01f);
    double *pr = malloc(n * sizeof *pr), *mr = malloc(n * sizeof *mr), *vr = malloc(n * 8);
    zoff_dev_adamw_args a = {.lr = 1e-2f,
                             .beta1 = 0.9f,
                             .beta2 = 0.95f,
                             .eps = 1e-8f,
                             .weight_decay = 0.1f,
                             .grad_scale = 0.5f,
                             .step = 3};
    for (size_t i = 0; i < n; i++) {
        double gi = g[i] * 0.5;
        mr[i] = 0.9 * m[i] + 0.1 * gi;
        vr[i] = 0.95 * v[i] + 0.05 * gi * gi;
        double mh = mr[i] / (1 - pow(0.9, 3)), vh = vr[i] / (1 - pow(0.95, 3));
        pr[i] = p[i] - 1e-2 * (mh / (sqrt(vh) + 1e-8) + 0.1 * p[i]);
    }
    float *dp = upf(p, n), *dg = upf(g, n), *dm = upf(m, n), *dv = upf(v, n);
    CHECK_OK(zoff_dev_op_adamw(st, dp, dg, dm, dv, n, &a));
    down(p, dp, n);
    down(m, dm, n);
    down(v, dv, n);
    check_close("adamw param", p, pr, n, 1e-6);
    check_close("adamw m", m, mr, n, 1e-6);
    check_close("adamw v", v, vr, n, 1e-6);
    dfree(dp), dfree(dg), dfree(dm), dfree(dv);
    free(p), free(g), free(m), free(v), free(pr), free(mr), free(vr);
}

int main(int argc, char **argv) {
    dev = zoff_test_open_device(argc, argv, 0);
    REQUIRE_OK(zoff_dev_stream_create(dev, &st));
    test_gemm();
    test_elementwise();
    test_layernorm();
    test_attention();
    test_xent();
    test_embedding();
    test_gemm_typed_c();
    test_elementwise_typed();
    test_layernorm_typed();
    test_embedding_typed();
    test_xent_fused();
    test_adamw();
    CHECK_OK(zoff_dev_stream_destroy(st));
    zoff_dev_close(dev);
    return zoff_test_finish("test_gpu_op_model");
}
