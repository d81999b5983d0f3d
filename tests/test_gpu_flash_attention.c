/* The fused causal attention (zoff_dev_op_flash_attention_fwd/bwd) on one backend (argv[1]):
 *   - against a naive double-precision reference written here: the output, the saved
 *     log-sum-exp, and dq, dk, dv for dout random, over grouped-query shapes (NH/NKV 4/2, 6/1),
 *     odd T (1, 7, 65, ...) up to 1024, odd head sizes (12, 40) and the larger ones each
 *     backend kernel variant serves (64, 128, 200), q/k/v as slices of one fused projection or
 *     as separate buffers with padded strides, doc_start masking with several samples per row,
 *     and f32, bf16 and f16 (the reference takes the rounded inputs, so only fp32 accumulation
 *     and the one final rounding separate the two);
 *   - against the materialized reference attention of the same backend (fp32, NKV == NH,
 *     contiguous qkv): same output, same gradients;
 *   - that neither op allocates device memory (used and peak unchanged), and that the backward
 *     writes (does not accumulate into) its gradients. */
#include "core/half.h"
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <math.h>
#include <string.h>

static zoff_dev *dev;
static zoff_dev_stream *st;
static unsigned long long rng = 777;

typedef struct fa_case {
    int B, T, NH, NKV, HS;
    zoff_dtype type;
    bool fused; /* q, k, v slices of one (B, T, (NH + 2 NKV) HS) buffer; else separate, padded */
    bool docs;  /* doc_start with several samples per row */
} fa_case;

static float round_to(float v, zoff_dtype t) {
    if (t == ZOFF_BF16) return zoff_bf16_to_f32(zoff_f32_to_bf16(v));
    if (t == ZOFF_F16) return zoff_f16_to_f32(zoff_f32_to_f16(v));
    return v;
}

static void *dev_alloc(size_t bytes) {
    void *d;
    REQUIRE_OK(zoff_dev_malloc(dev, bytes ? bytes : 4, &d));
    return d;
}

/* n floats as `t` into device memory (a new allocation). */
static void *upload(const float *h, size_t n, zoff_dtype t) {
    size_t es = zoff_dtype_size(t);
    void *tmp = malloc(n ? n * es : 4), *d = dev_alloc(n * es);
    for (size_t i = 0; i < n; i++)
        zoff_store_from_f32(tmp, t, i, h[i]);
    REQUIRE_OK(zoff_dev_memcpy(dev, d, tmp, n * es, ZOFF_COPY_H2D));
    free(tmp);
    return d;
}

static void download(float *h, const void *d, size_t n, zoff_dtype t) {
    size_t es = zoff_dtype_size(t);
    void *tmp = malloc(n ? n * es : 4);
    REQUIRE_OK(zoff_dev_synchronize(dev));
    REQUIRE_OK(zoff_dev_memcpy(dev, tmp, d, n * es, ZOFF_COPY_D2H));
    for (size_t i = 0; i < n; i++)
        h[i] = zoff_load_as_f32(tmp, t, i);
    free(tmp);
}

/* ||a - ref|| / ||ref|| over the elements where mask is set (all when mask is NULL). */
static double nerr(const float *a, const double *ref, const bool *mask, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (mask && !mask[i]) continue;
        double d = a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-12);
}

static void check_err(const char *what, const fa_case *c, double e, double tol) {
    if (!(e <= tol))
        fprintf(stderr, "%s (B %d T %d NH %d NKV %d HS %d %s %s%s): normalized error %.3g > %.3g\n",
                what, c->B, c->T, c->NH, c->NKV, c->HS, zoff_dtype_name(c->type),
                c->fused ? "fused" : "separate", c->docs ? " docs" : "", e, tol);
    CHECK(e <= tol);
}

/* Tolerance of a value rounded once to t, computed in fp32 from exact inputs. */
static double tol_for(zoff_dtype t, double f32_tol) {
    return t == ZOFF_BF16 ? 5e-3 : t == ZOFF_F16 ? 8e-4 : f32_tol;
}

static inline int first_key(const int32_t *doc, int T, int b, int t) {
    if (!doc) return 0;
    int lo = doc[(size_t)b * T + t];
    return lo < 0 ? 0 : lo > t ? t : lo;
}

/* The naive reference: out (B,T,NH,HS), lse (B,NH,T), and from dout and the out the op was given
 * (out_in, which for 16-bit types is the rounded forward output), dq, dk, dv in the q/k/v
 * layouts (elements outside the heads untouched: zero). */
static void reference(const fa_case *c, const zoff_dev_attn_shape *sh, const float *q,
                      const float *k, const float *v, const int32_t *doc, const float *dout,
                      const float *out_in, double *out, double *lse, double *dq, double *dk,
                      double *dv) {
    int T = c->T, HS = c->HS, NH = c->NH, group = c->NH / c->NKV;
    double *s = malloc((size_t)T * sizeof *s), *dp = malloc((size_t)T * sizeof *dp);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < NH; h++) {
            int kvh = h / group;
            for (int t = 0; t < T; t++) {
                const float *qt = q + ((size_t)b * T + t) * sh->q_stride + (size_t)h * HS;
                int lo = first_key(doc, T, b, t);
                double mx = -1e300, sum = 0;
                for (int j = lo; j <= t; j++) {
                    const float *kj = k + ((size_t)b * T + j) * sh->kv_stride + (size_t)kvh * HS;
                    double d = 0;
                    for (int i = 0; i < HS; i++)
                        d += (double)qt[i] * kj[i];
                    s[j] = d * sh->scale;
                    mx = fmax(mx, s[j]);
                }
                for (int j = lo; j <= t; j++)
                    sum += (s[j] = exp(s[j] - mx));
                size_t orow = (((size_t)b * T + t) * NH + h) * HS;
                lse[((size_t)b * NH + h) * T + t] = mx + log(sum);
                for (int i = 0; i < HS; i++)
                    out[orow + i] = 0;
                for (int j = lo; j <= t; j++) {
                    s[j] /= sum; /* now the probability */
                    const float *vj = v + ((size_t)b * T + j) * sh->kv_stride + (size_t)kvh * HS;
                    for (int i = 0; i < HS; i++)
                        out[orow + i] += s[j] * vj[i];
                }
                /* backward of this row */
                const float *dy = dout + orow, *o = out_in + orow;
                double D = 0;
                for (int i = 0; i < HS; i++)
                    D += (double)dy[i] * o[i];
                double *dqt = dq + ((size_t)b * T + t) * sh->q_stride + (size_t)h * HS;
                for (int j = lo; j <= t; j++) {
                    size_t koff = ((size_t)b * T + j) * sh->kv_stride + (size_t)kvh * HS;
                    double x = 0;
                    for (int i = 0; i < HS; i++)
                        x += (double)dy[i] * v[koff + i];
                    dp[j] = s[j] * (x - D) * sh->scale; /* dS, scaled */
                    for (int i = 0; i < HS; i++) {
                        dqt[i] += dp[j] * k[koff + i];
                        dk[koff + i] += dp[j] * qt[i];
                        dv[koff + i] += s[j] * dy[i];
                    }
                }
            }
        }
    free(s);
    free(dp);
}

/* Several samples per row: boundaries at random positions (about four per row, and one at T/2),
 * doc_start[b,t] = the first position of t's sample. */
static int32_t *make_docs(int B, int T) {
    int32_t *doc = malloc((size_t)B * T * sizeof *doc);
    unsigned every = T / 4 > 2 ? (unsigned)(T / 4) : 2;
    for (int b = 0; b < B; b++) {
        int start = 0;
        for (int t = 0; t < T; t++) {
            if (t > 0 && (zoff_test_rand(&rng) % every == 0 || t == T / 2)) start = t;
            doc[(size_t)b * T + t] = start;
        }
    }
    return doc;
}

static void run_case(const fa_case *c) {
    int B = c->B, T = c->T, NH = c->NH, NKV = c->NKV, HS = c->HS;
    zoff_dtype ty = c->type;
    size_t es = zoff_dtype_size(ty);
    zoff_dev_attn_shape sh = {
        .B = B, .T = T, .NH = NH, .NKV = NKV, .HS = HS, .scale = 1.0f / sqrtf((float)HS)};
    size_t nq, nkv, qoff = 0, koff = 0, voff = 0; /* element counts and offsets */
    if (c->fused) {
        sh.q_stride = sh.kv_stride = (size_t)(NH + 2 * NKV) * HS;
        nq = nkv = (size_t)B * T * sh.q_stride;
        koff = (size_t)NH * HS;
        voff = (size_t)(NH + NKV) * HS;
    } else {
        sh.q_stride = (size_t)NH * HS + 3;
        sh.kv_stride = (size_t)NKV * HS + 5;
        nq = (size_t)B * T * sh.q_stride;
        nkv = (size_t)B * T * sh.kv_stride;
    }
    size_t no = (size_t)B * T * NH * HS, nl = (size_t)B * NH * T;
    /* host inputs, rounded to the type: the reference sees what the op sees */
    float *hq = malloc(nq * sizeof *hq), *hk = malloc(nkv * sizeof *hk);
    float *hv = malloc(nkv * sizeof *hv), *hdo = malloc(no * sizeof *hdo);
    for (size_t i = 0; i < nq; i++)
        hq[i] = round_to(zoff_test_randf(&rng, -1.5f, 1.5f), ty);
    for (size_t i = 0; i < nkv; i++) {
        hk[i] = round_to(zoff_test_randf(&rng, -1.5f, 1.5f), ty);
        hv[i] = round_to(zoff_test_randf(&rng, -1.5f, 1.5f), ty);
    }
    for (size_t i = 0; i < no; i++)
        hdo[i] = round_to(zoff_test_randf(&rng, -1, 1), ty);
    int32_t *doc = c->docs ? make_docs(B, T) : NULL;
    /* In the fused layout one buffer holds q, k and v; k and v here are views of it. */
    float *hqkv = NULL;
    if (c->fused) {
        hqkv = malloc(nq * sizeof *hqkv);
        for (size_t r = 0; r < (size_t)B * T; r++)
            for (size_t i = 0; i < sh.q_stride; i++) {
                size_t e = r * sh.q_stride + i;
                hqkv[e] = i < koff ? hq[e] : i < voff ? hk[e] : hv[e];
            }
        memcpy(hq, hqkv, nq * sizeof *hq);
        memcpy(hk, hqkv, nq * sizeof *hk);
        memcpy(hv, hqkv, nq * sizeof *hv);
    }
    void *dq_in, *dk_in, *dv_in, *dgq, *dgk, *dgv;
    if (c->fused) {
        dq_in = upload(hqkv, nq, ty);
        dk_in = (char *)dq_in + koff * es;
        dv_in = (char *)dq_in + voff * es;
        /* gradient buffer of the same layout, prefilled with garbage: the op writes its heads */
        float *junk = malloc(nq * sizeof *junk);
        for (size_t i = 0; i < nq; i++)
            junk[i] = 1e3f;
        dgq = upload(junk, nq, ty);
        dgk = (char *)dgq + koff * es;
        dgv = (char *)dgq + voff * es;
        free(junk);
    } else {
        dq_in = upload(hq, nq, ty);
        dk_in = upload(hk, nkv, ty);
        dv_in = upload(hv, nkv, ty);
        float *junk = malloc((nq > nkv ? nq : nkv) * sizeof *junk);
        for (size_t i = 0; i < (nq > nkv ? nq : nkv); i++)
            junk[i] = -7.0f;
        dgq = upload(junk, nq, ty);
        dgk = upload(junk, nkv, ty);
        dgv = upload(junk, nkv, ty);
        free(junk);
    }
    void *dout_d = upload(hdo, no, ty), *out_d = dev_alloc(no * es);
    float *lse_d = dev_alloc(nl * sizeof(float)), *delta_d = dev_alloc(nl * sizeof(float));
    int32_t *doc_d = NULL;
    if (doc) {
        doc_d = dev_alloc((size_t)B * T * sizeof *doc_d);
        REQUIRE_OK(zoff_dev_memcpy(dev, doc_d, doc, (size_t)B * T * sizeof *doc, ZOFF_COPY_H2D));
    }

    /* forward and backward, and no device allocation by either */
    REQUIRE_OK(zoff_dev_synchronize(dev));
    zoff_dev_mem_reset_peak(dev);
    zoff_dev_mem_stats m0, m1;
    zoff_dev_mem_stats_get(dev, &m0);
    CHECK_OK(
        zoff_dev_op_flash_attention_fwd(st, out_d, lse_d, dq_in, dk_in, dv_in, ty, doc_d, &sh));
    CHECK_OK(zoff_dev_op_flash_attention_bwd(st, dgq, dgk, dgv, delta_d, dout_d, out_d, lse_d,
                                             dq_in, dk_in, dv_in, ty, doc_d, &sh));
    REQUIRE_OK(zoff_dev_synchronize(dev));
    zoff_dev_mem_stats_get(dev, &m1);
    CHECK_EQ_INT(m1.used, m0.used);
    CHECK_EQ_INT(m1.peak, m0.used);
    CHECK_EQ_INT(m1.n_allocs, m0.n_allocs);

    float *out = malloc(no * sizeof *out), *lse = malloc(nl * sizeof *lse);
    float *gq = malloc(nq * sizeof *gq), *gk = malloc(nkv * sizeof *gk);
    float *gv = malloc(nkv * sizeof *gv);
    download(out, out_d, no, ty);
    download(lse, lse_d, nl, ZOFF_F32);
    download(gq, dgq, nq, ty);
    if (c->fused) {
        memcpy(gk, gq, nq * sizeof *gk);
        memcpy(gv, gq, nq * sizeof *gv);
    } else {
        download(gk, dgk, nkv, ty);
        download(gv, dgv, nkv, ty);
    }
    double *rout = calloc(no, sizeof *rout), *rlse = calloc(nl, sizeof *rlse);
    double *rq = calloc(nq, sizeof *rq), *rk = calloc(nkv, sizeof *rk);
    double *rv = calloc(nkv, sizeof *rv);
    reference(c, &sh, hq + qoff, hk + koff, hv + voff, doc, hdo, out, rout, rlse, rq + qoff,
              rk + koff, rv + voff);
    /* masks: which elements of each gradient buffer belong to q, k or v heads */
    bool *mq = calloc(nq, 1), *mk = calloc(nkv, 1), *mv = calloc(nkv, 1);
    for (size_t r = 0; r < (size_t)B * T; r++) {
        for (size_t i = 0; i < (size_t)NH * HS; i++)
            mq[r * sh.q_stride + qoff + i] = true;
        for (size_t i = 0; i < (size_t)NKV * HS; i++) {
            mk[r * sh.kv_stride + koff + i] = true;
            mv[r * sh.kv_stride + voff + i] = true;
        }
    }
    check_err("flash fwd out", c, nerr(out, rout, NULL, no), tol_for(ty, 2e-6));
    check_err("flash fwd lse", c, nerr(lse, rlse, NULL, nl), 2e-6);
    check_err("flash bwd dq", c, nerr(gq, rq, mq, nq), tol_for(ty, 2e-5));
    check_err("flash bwd dk", c, nerr(gk, rk, mk, nkv), tol_for(ty, 2e-5));
    check_err("flash bwd dv", c, nerr(gv, rv, mv, nkv), tol_for(ty, 2e-5));
    /* what lies between the heads (padding) is left alone */
    if (!c->fused) {
        int touched = 0;
        for (size_t i = 0; i < nq; i++)
            touched += !mq[i] && gq[i] != -7.0f;
        for (size_t i = 0; i < nkv; i++)
            touched += !mk[i] && (gk[i] != -7.0f || gv[i] != -7.0f);
        CHECK_EQ_INT(touched, 0);
    }

    CHECK_OK(zoff_dev_free(dev, dq_in));
    CHECK_OK(zoff_dev_free(dev, dgq));
    if (!c->fused) {
        CHECK_OK(zoff_dev_free(dev, dk_in));
        CHECK_OK(zoff_dev_free(dev, dv_in));
        CHECK_OK(zoff_dev_free(dev, dgk));
        CHECK_OK(zoff_dev_free(dev, dgv));
    }
    CHECK_OK(zoff_dev_free(dev, dout_d));
    CHECK_OK(zoff_dev_free(dev, out_d));
    CHECK_OK(zoff_dev_free(dev, lse_d));
    CHECK_OK(zoff_dev_free(dev, delta_d));
    CHECK_OK(zoff_dev_free(dev, doc_d));
    free(hq), free(hk), free(hv), free(hdo), free(doc), free(hqkv), free(out), free(lse);
    free(gq), free(gk), free(gv), free(rout), free(rlse), free(rq), free(rk), free(rv);
    free(mq), free(mk), free(mv);
}

/* The fused attention equals the materialized one (fp32, NKV == NH, contiguous qkv (B,T,3C)). */
static void versus_materialized(int B, int T, int NH, int HS) {
    int C = NH * HS;
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C, na = (size_t)B * NH * T * T;
    size_t nl = (size_t)B * NH * T;
    float *hqkv = malloc(nqkv * sizeof *hqkv), *hdo = malloc(no * sizeof *hdo);
    for (size_t i = 0; i < nqkv; i++)
        hqkv[i] = zoff_test_randf(&rng, -2, 2);
    for (size_t i = 0; i < no; i++)
        hdo[i] = zoff_test_randf(&rng, -1, 1);
    float *qkv = upload(hqkv, nqkv, ZOFF_F32), *dout = upload(hdo, no, ZOFF_F32);
    float *out_m = dev_alloc(no * 4), *att = dev_alloc(na * 4), *scratch = dev_alloc(na * 4);
    float *dqkv_m = dev_alloc(nqkv * 4), *out_f = dev_alloc(no * 4), *dqkv_f = dev_alloc(nqkv * 4);
    float *lse = dev_alloc(nl * 4), *delta = dev_alloc(nl * 4);
    CHECK_OK(zoff_dev_memset_async(st, dqkv_m, 0, nqkv * 4)); /* the materialized bwd adds */
    CHECK_OK(zoff_dev_op_attention_fwd(st, out_m, att, qkv, B, T, C, NH));
    CHECK_OK(zoff_dev_op_attention_bwd(st, dqkv_m, scratch, dout, qkv, att, B, T, C, NH));
    zoff_dev_attn_shape sh = {.B = B,
                              .T = T,
                              .NH = NH,
                              .NKV = NH,
                              .HS = HS,
                              .q_stride = 3 * (size_t)C,
                              .kv_stride = 3 * (size_t)C,
                              .scale = 1.0f / sqrtf((float)HS)};
    CHECK_OK(zoff_dev_op_flash_attention_fwd(st, out_f, lse, qkv, qkv + C, qkv + 2 * C, ZOFF_F32,
                                             NULL, &sh));
    CHECK_OK(zoff_dev_op_flash_attention_bwd(st, dqkv_f, dqkv_f + C, dqkv_f + 2 * C, delta, dout,
                                             out_f, lse, qkv, qkv + C, qkv + 2 * C, ZOFF_F32, NULL,
                                             &sh));
    float *a = malloc(nqkv * 4), *b = malloc(nqkv * 4);
    double *ref = malloc(nqkv * sizeof *ref);
    fa_case c = {B, T, NH, NH, HS, ZOFF_F32, true, false};
    download(a, out_f, no, ZOFF_F32);
    download(b, out_m, no, ZOFF_F32);
    for (size_t i = 0; i < no; i++)
        ref[i] = b[i];
    check_err("flash vs materialized out", &c, nerr(a, ref, NULL, no), 2e-6);
    download(a, dqkv_f, nqkv, ZOFF_F32);
    download(b, dqkv_m, nqkv, ZOFF_F32);
    for (size_t i = 0; i < nqkv; i++)
        ref[i] = b[i];
    check_err("flash vs materialized dqkv", &c, nerr(a, ref, NULL, nqkv), 2e-5);
    void *bufs[] = {qkv, dout, out_m, att, scratch, dqkv_m, out_f, dqkv_f, lse, delta};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        CHECK_OK(zoff_dev_free(dev, bufs[i]));
    free(hqkv), free(hdo), free(a), free(b), free(ref);
}

int main(int argc, char **argv) {
    dev = zoff_test_open_device(argc, argv, 0);
    REQUIRE_OK(zoff_dev_stream_create(dev, &st));
    static const fa_case cases[] = {
        /* B  T    NH NKV HS  type       fused  docs */
        {2, 7, 4, 2, 12, ZOFF_F32, false, false},   {2, 1, 4, 2, 12, ZOFF_F32, true, false},
        {1, 65, 6, 1, 40, ZOFF_F32, true, true},    {2, 65, 4, 2, 40, ZOFF_F32, false, true},
        {2, 33, 2, 2, 64, ZOFF_F32, false, false},  {1, 40, 2, 1, 128, ZOFF_F32, true, true},
        {1, 19, 2, 2, 200, ZOFF_F32, false, false}, {2, 65, 4, 2, 40, ZOFF_BF16, true, true},
        {1, 47, 6, 1, 12, ZOFF_BF16, false, false}, {2, 65, 6, 1, 40, ZOFF_F16, false, true},
        {1, 33, 4, 2, 64, ZOFF_F16, true, false},   {1, 19, 2, 1, 200, ZOFF_BF16, true, true},
        {1, 1024, 2, 1, 64, ZOFF_F32, true, true},  {2, 300, 2, 2, 40, ZOFF_BF16, false, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
    versus_materialized(2, 65, 3, 40);
    versus_materialized(1, 130, 4, 64);
    /* bad shapes are refused, not crashed on */
    zoff_dev_attn_shape bad = {.B = 1,
                               .T = 4,
                               .NH = 3,
                               .NKV = 2,
                               .HS = 8,
                               .q_stride = 24,
                               .kv_stride = 16,
                               .scale = 0.35f};
    float *x = dev_alloc(4096);
    CHECK(zoff_dev_op_flash_attention_fwd(st, x, x, x, x, x, ZOFF_F32, NULL, &bad) < 0);
    bad.NKV = 3;
    bad.kv_stride = 8; /* below NKV * HS */
    CHECK(zoff_dev_op_flash_attention_fwd(st, x, x, x, x, x, ZOFF_F32, NULL, &bad) < 0);
    CHECK_OK(zoff_dev_free(dev, x));
    CHECK_OK(zoff_dev_stream_destroy(st));
    zoff_dev_close(dev);
    return zoff_test_finish("test_gpu_flash_attention");
}
