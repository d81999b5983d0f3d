/* The model kernels of the op table on one backend (argv[1]):
 *   - every forward against a naive double-precision reference written here, by normalized
 *     error (on cuda this is the CUDA-vs-host parity check, the host matching the same
 *     reference);
 *   - every backward against central finite differences of its forward, for the objective
 *     sum(out * w) with random w (so dout = w), at sampled coordinates;
 *   - gemm in all transpose combinations, fp32 and bf16/fp16 operands (against references
 *     on 16-bit-rounded inputs), and AdamW against its formula. */
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
    CHECK(zoff_dev_op_gemm(st, false, false, 2, 2, 2, 1, NULL, 2, NULL, 2, ZOFF_F32, 0, NULL, ZOFF_F32, 2) ==
          -EINVAL);
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

    /* bias add and bias grad on (R, OC) */
    float *bias = rnd(OC, -1, 1), *dbias0 = rnd(OC, -1, 1), *m = rnd((size_t)R * OC, -1, 1);
    float *dm = upf(m, (size_t)R * OC), *dbias = upf(bias, OC), *dgb = upf(dbias0, OC);
    CHECK_OK(zoff_dev_op_bias_add(st, dm, ZOFF_F32, dbias, ZOFF_F32, R, OC));
    CHECK_OK(zoff_dev_op_bias_grad(st, dgb, ZOFF_F32, dm, ZOFF_F32, R, OC));
    float *got = malloc((size_t)R * OC * 4);
    double *r2 = malloc((size_t)R * OC * sizeof *r2), gref[70];
    down(got, dm, (size_t)R * OC);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < OC; j++)
            r2[i * OC + j] = (double)m[i * OC + j] + bias[j];
    check_close("bias_add", got, r2, (size_t)R * OC, 1e-7);
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
    CHECK_OK(zoff_dev_op_layernorm_fwd(st, dy, ZOFF_F32, dm, dr, dx, dwt, dbs, ZOFF_F32, c->N, c->C));
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
    CHECK_OK(zoff_dev_op_layernorm_bwd(st, gdx, gdw, gdb, ZOFF_F32, dw, dx, dwt, ZOFF_F32, dm, dr, N, C));
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
    test_adamw();
    CHECK_OK(zoff_dev_stream_destroy(st));
    zoff_dev_close(dev);
    return zoff_test_finish("test_gpu_op_model");
}
