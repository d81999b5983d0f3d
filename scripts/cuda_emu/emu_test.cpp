// Runs the CUDA backend's kernels (through their launchers) on the CPU emulator and compares
// them with the host backend's ops on the same inputs, by normalized error: fp32 results to
// fp32 rounding, 16-bit ones to their rounding; the embedding backward and bias add exactly (same
// order of fp32 sums, one rounding). Shapes cover GQA, odd T and head sizes, doc_start masks,
// strided and fused q/k/v, the two-stage and single-pass column sums, the chunked id scan and
// two channel tiles of the embedding backward, ignored targets, and the GEMM kernel used for
// the (ab_type, c_type) pairs cuBLAS does not take. Exit status 1 if any comparison fails.
#include "emu.h"
extern "C" {
#include "gpu/device.h"
}
#include "gpu/cuda/cuda_backend.h"
#include <cstdint>
#include <string>

static zoff_dev *dev;
static zoff_dev_stream *st;
static cuda_stream cs;
static unsigned long long rng = 99;
static int fails;

static float frand(float lo, float hi) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 11) & 0xffffff) / 16777216.0f;
}
static unsigned urand() {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng >> 20);
}
static void *dalloc(size_t bytes) {
    void *p;
    if (zoff_dev_malloc(dev, bytes ? bytes : 4, &p)) abort();
    return p;
}
static void *typed_rand(size_t n, zoff_dtype t, float lo, float hi) {
    void *p = dalloc(n * zoff_dtype_size(t));
    for (size_t i = 0; i < n; i++)
        zoff_store_from_f32(p, t, i, frand(lo, hi));
    return p;
}
static void *clone(const void *src, size_t bytes) {
    void *p = dalloc(bytes);
    memcpy(p, src, bytes);
    return p;
}
static void cmp(const char *what, const void *a, const void *b, size_t n, zoff_dtype t,
                double tol) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double x = zoff_load_as_f32(a, t, i), y = zoff_load_as_f32(b, t, i);
        num += (x - y) * (x - y);
        den += y * y;
    }
    double e = sqrt(num) / fmax(sqrt(den), 1e-30);
    bool ok = e <= tol;
    if (!ok) fails++;
    printf("%-60s %s nerr %.3g\n", what, ok ? "ok  " : "FAIL", e);
}
static double tolt(zoff_dtype t) {
    return t == ZOFF_F32 ? 2e-5 : t == ZOFF_BF16 ? 8e-3 : 1.5e-3;
}
static void sync() {
    if (zoff_dev_synchronize(dev)) abort();
}

static void flash(int B, int T, int NH, int NKV, int HS, zoff_dtype t, bool fused, bool docs) {
    zoff_dev_attn_shape sh = {B, T, NH, NKV, HS, 0, 0, 1.0f / sqrtf((float)HS)};
    size_t es = zoff_dtype_size(t);
    sh.q_stride = fused ? (size_t)(NH + 2 * NKV) * HS : (size_t)NH * HS + 3;
    sh.kv_stride = fused ? sh.q_stride : (size_t)NKV * HS + 1;
    size_t nq = (size_t)B * T * sh.q_stride, nkv = (size_t)B * T * sh.kv_stride;
    size_t no = (size_t)B * T * NH * HS, nl = (size_t)B * NH * T;
    char *q = (char *)typed_rand(nq, t, -2, 2), *k, *v;
    if (fused) {
        k = q + (size_t)NH * HS * es;
        v = k + (size_t)NKV * HS * es;
    } else {
        k = (char *)typed_rand(nkv, t, -2, 2);
        v = (char *)typed_rand(nkv, t, -2, 2);
    }
    int32_t *doc = NULL;
    if (docs) {
        doc = (int32_t *)dalloc((size_t)B * T * 4);
        for (int b = 0; b < B; b++) {
            int s = 0;
            for (int i = 0; i < T; i++) {
                if (i && (urand() % 9 == 0)) s = i;
                doc[b * T + i] = s;
            }
        }
    }
    void *dout = typed_rand(no, t, -1, 1);
    void *o1 = dalloc(no * es), *o2 = dalloc(no * es);
    float *l1 = (float *)dalloc(nl * 4), *l2 = (float *)dalloc(nl * 4),
          *d1 = (float *)dalloc(nl * 4), *d2 = (float *)dalloc(nl * 4);
    if (zoff_dev_op_flash_attention_fwd(st, o1, l1, q, k, v, t, doc, &sh)) abort();
    sync();
    if (zoff_cuda_launch_flash_attention_fwd(&cs, o2, l2, q, k, v, t, doc, &sh)) abort();
    char what[128];
    snprintf(what, sizeof what, "flash B%d T%d NH%d NKV%d HS%d %s %s%s", B, T, NH, NKV, HS,
             zoff_dtype_name(t), fused ? "fused" : "sep", docs ? " docs" : "");
    std::string w(what);
    cmp((w + " out").c_str(), o2, o1, no, t, tolt(t));
    cmp((w + " lse").c_str(), l2, l1, nl, ZOFF_F32, 1e-6);
    // backward: gradient buffers of the q/k/v layouts, prefilled the same
    size_t gbytes = (fused ? nq : nq) * es, kvbytes = nkv * es;
    char *g1 = (char *)typed_rand(nq, t, 5, 6), *g2 = (char *)clone(g1, gbytes);
    char *gk1, *gv1, *gk2, *gv2;
    if (fused) {
        gk1 = g1 + (size_t)NH * HS * es;
        gv1 = gk1 + (size_t)NKV * HS * es;
        gk2 = g2 + (size_t)NH * HS * es;
        gv2 = gk2 + (size_t)NKV * HS * es;
    } else {
        gk1 = (char *)typed_rand(nkv, t, 5, 6);
        gv1 = (char *)typed_rand(nkv, t, 5, 6);
        gk2 = (char *)clone(gk1, kvbytes);
        gv2 = (char *)clone(gv1, kvbytes);
    }
    if (zoff_dev_op_flash_attention_bwd(st, g1, gk1, gv1, d1, dout, o1, l1, q, k, v, t, doc, &sh))
        abort();
    sync();
    if (zoff_cuda_launch_flash_attention_bwd(&cs, g2, gk2, gv2, d2, dout, o1, l1, q, k, v, t, doc,
                                             &sh))
        abort();
    cmp((w + " delta").c_str(), d2, d1, nl, ZOFF_F32, 1e-6);
    cmp((w + " dq (whole buffer)").c_str(), g2, g1, nq, t, tolt(t));
    if (!fused) {
        cmp((w + " dk").c_str(), gk2, gk1, nkv, t, tolt(t));
        cmp((w + " dv").c_str(), gv2, gv1, nkv, t, tolt(t));
    }
}

static void embedding(int B, int T, int C, int V, zoff_dtype t, bool pos, bool wpe) {
    int BT = B * T, maxpos = T + 5;
    int32_t *tok = (int32_t *)dalloc(BT * 4), *ps = pos ? (int32_t *)dalloc(BT * 4) : NULL;
    for (int i = 0; i < BT; i++) {
        tok[i] = urand() % V;
        if (ps) ps[i] = urand() % maxpos;
    }
    size_t es = zoff_dtype_size(t);
    void *wte = typed_rand((size_t)V * C, t, -1, 1),
         *wp = wpe ? typed_rand((size_t)maxpos * C, t, -1, 1) : NULL;
    float *o1 = (float *)dalloc((size_t)BT * C * 4), *o2 = (float *)dalloc((size_t)BT * C * 4);
    if (zoff_dev_op_embedding_fwd(st, o1, tok, ps, wte, wp, t, B, T, C)) abort();
    sync();
    zoff_cuda_launch_embedding_fwd(&cs, o2, tok, ps, wte, wp, t, B, T, C);
    char what[128];
    snprintf(what, sizeof what, "embedding B%d T%d C%d V%d %s%s%s", B, T, C, V, zoff_dtype_name(t),
             pos ? " pos" : "", wpe ? " wpe" : "");
    std::string w(what);
    cmp((w + " fwd").c_str(), o2, o1, (size_t)BT * C, ZOFF_F32, 0);
    float *dout = (float *)typed_rand((size_t)BT * C, ZOFF_F32, -1, 1);
    void *g1 = typed_rand((size_t)V * C, t, -1, 1), *g2 = clone(g1, (size_t)V * C * es);
    void *p1 = wpe ? typed_rand((size_t)maxpos * C, t, -1, 1) : NULL,
         *p2 = wpe ? clone(p1, (size_t)maxpos * C * es) : NULL;
    if (zoff_dev_op_embedding_bwd(st, g1, p1, t, dout, tok, ps, B, T, C)) abort();
    sync();
    zoff_cuda_launch_embedding_bwd(&cs, g2, p2, t, dout, tok, ps, B, T, C);
    // same order of fp32 sums, one rounding: bitwise equal
    cmp((w + " bwd dwte").c_str(), g2, g1, (size_t)V * C, t, 0);
    if (wpe) cmp((w + " bwd dwpe").c_str(), p2, p1, (size_t)maxpos * C, t, 0);
}

static void colsums(size_t N, int OC, zoff_dtype g, zoff_dtype d) {
    void *dout = typed_rand(N * OC, d, -1, 1);
    void *g1 = typed_rand(OC, g, -3, 3), *g2 = clone(g1, OC * zoff_dtype_size(g));
    if (zoff_dev_op_bias_grad(st, g1, g, dout, d, N, OC)) abort();
    sync();
    zoff_cuda_launch_bias_grad(&cs, g2, g, dout, d, N, OC);
    char what[128];
    snprintf(what, sizeof what, "bias_grad N%zu OC%d g %s dout %s", N, OC, zoff_dtype_name(g),
             zoff_dtype_name(d));
    cmp(what, g2, g1, OC, g, g == ZOFF_F32 ? 2e-6 : 8e-3);
}

static void layernorm(size_t N, int C, zoff_dtype to, zoff_dtype tw, zoff_dtype tg) {
    float *inp = (float *)typed_rand(N * C, ZOFF_F32, -2, 3);
    void *w = typed_rand(C, tw, 0.5, 1.5), *bs = typed_rand(C, tw, -1, 1);
    size_t eo = zoff_dtype_size(to), eg = zoff_dtype_size(tg);
    void *o1 = dalloc(N * C * eo), *o2 = dalloc(N * C * eo);
    float *m1 = (float *)dalloc(N * 4), *m2 = (float *)dalloc(N * 4), *r1 = (float *)dalloc(N * 4),
          *r2 = (float *)dalloc(N * 4);
    if (zoff_dev_op_layernorm_fwd(st, o1, to, m1, r1, inp, w, bs, tw, N, C)) abort();
    sync();
    zoff_cuda_launch_layernorm_fwd(&cs, o2, to, m2, r2, inp, w, bs, tw, N, C);
    char what[128];
    snprintf(what, sizeof what, "layernorm N%zu C%d out %s w %s g %s", N, C, zoff_dtype_name(to),
             zoff_dtype_name(tw), zoff_dtype_name(tg));
    std::string s(what);
    cmp((s + " out").c_str(), o2, o1, N * C, to, tolt(to));
    cmp((s + " mean").c_str(), m2, m1, N, ZOFF_F32, 1e-5); /* fp32 sums of C terms, other order */
    cmp((s + " rstd").c_str(), r2, r1, N, ZOFF_F32, 1e-5);
    float *dout = (float *)typed_rand(N * C, ZOFF_F32, -1, 1);
    float *dx1 = (float *)typed_rand(N * C, ZOFF_F32, -1, 1), *dx2 = (float *)clone(dx1, N * C * 4);
    void *dw1 = typed_rand(C, tg, -2, 2), *dw2 = clone(dw1, C * eg),
         *db1 = typed_rand(C, tg, -2, 2), *db2 = clone(db1, C * eg);
    if (zoff_dev_op_layernorm_bwd(st, dx1, dw1, db1, tg, dout, inp, w, tw, m1, r1, N, C)) abort();
    sync();
    zoff_cuda_launch_layernorm_bwd(&cs, dx2, dw2, db2, tg, dout, inp, w, tw, m1, r1, N, C);
    cmp((s + " dinp").c_str(), dx2, dx1, N * C, ZOFF_F32, 1e-5);
    cmp((s + " dweight").c_str(), dw2, dw1, C, tg, tg == ZOFF_F32 ? 1e-5 : 8e-3);
    cmp((s + " dbias").c_str(), db2, db1, C, tg, tg == ZOFF_F32 ? 1e-5 : 8e-3);
}

static void xent(size_t N, int V, zoff_dtype d, bool alias) {
    float *logits = (float *)typed_rand(N * V, ZOFF_F32, -5, 5),
          *l2 = (float *)clone(logits, N * V * 4);
    int32_t *tg = (int32_t *)dalloc(N * 4);
    for (size_t i = 0; i < N; i++)
        tg[i] = i % 4 == 2 ? -100 : (int32_t)(urand() % V);
    float *ls1 = (float *)dalloc(N * 4), *ls2 = (float *)dalloc(N * 4);
    size_t ed = zoff_dtype_size(d);
    void *g1 = alias ? (void *)logits : dalloc(N * V * ed),
         *g2 = alias ? (void *)l2 : dalloc(N * V * ed);
    if (zoff_dev_op_xent_fused(st, ls1, g1, d, logits, tg, 0.25f, N, V)) abort();
    sync();
    zoff_cuda_launch_xent_fused(&cs, ls2, g2, d, l2, tg, 0.25f, N, V);
    char what[96];
    snprintf(what, sizeof what, "xent_fused N%zu V%d %s%s", N, V, zoff_dtype_name(d),
             alias ? " in place" : "");
    std::string s(what);
    cmp((s + " losses").c_str(), ls2, ls1, N, ZOFF_F32, 1e-6);
    cmp((s + " dlogits").c_str(), g2, g1, N * V, d, tolt(d));
}

static void gemm(bool ta, bool tb, zoff_dtype ab, zoff_dtype ct, float beta) {
    int M = 37, N = 29, K = 45, lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    void *A = typed_rand(na, ab, -1, 1), *B = typed_rand(nb, ab, -1, 1);
    void *c1 = typed_rand(nc, ct, -1, 1), *c2 = clone(c1, nc * zoff_dtype_size(ct));
    if (zoff_dev_op_gemm(st, ta, tb, M, N, K, 0.5f, A, lda, B, ldb, ab, beta, c1, ct, ldc)) abort();
    sync();
    if (zoff_cuda_launch_gemm(&cs, ta, tb, M, N, K, 0.5f, A, lda, B, ldb, ab, beta, c2, ct, ldc))
        abort();
    char what[96];
    snprintf(what, sizeof what, "gemm tiled ta%d tb%d %s -> %s beta %g", ta, tb,
             zoff_dtype_name(ab), zoff_dtype_name(ct), beta);
    cmp(what, c2, c1, nc, ct, tolt(ct));
}

static void elementwise(zoff_dtype t) {
    size_t n = 5000;
    void *x = typed_rand(n, t, -4, 4), *dy = typed_rand(n, t, -1, 1);
    size_t es = zoff_dtype_size(t);
    void *a1 = dalloc(n * es), *a2 = dalloc(n * es);
    zoff_dev_op_gelu_fwd(st, a1, x, t, n);
    sync();
    zoff_cuda_launch_gelu_fwd(&cs, a2, x, t, n);
    std::string s = std::string("elementwise ") + zoff_dtype_name(t);
    cmp((s + " gelu fwd").c_str(), a2, a1, n, t, tolt(t));
    zoff_dev_op_gelu_bwd(st, a1, x, dy, t, n);
    sync();
    zoff_cuda_launch_gelu_bwd(&cs, a2, x, dy, t, n);
    cmp((s + " gelu bwd").c_str(), a2, a1, n, t, tolt(t));
    void *m1 = typed_rand(130 * 70, t, -1, 1), *m2 = clone(m1, 130 * 70 * es),
         *b = typed_rand(70, ZOFF_BF16, -1, 1);
    zoff_dev_op_bias_add(st, m1, t, b, ZOFF_BF16, 130, 70);
    sync();
    zoff_cuda_launch_bias_add(&cs, m2, t, b, ZOFF_BF16, 130, 70);
    cmp((s + " bias_add").c_str(), m2, m1, 130 * 70, t, 0);
}

int main() {
    zoff_dev_config cfg;
    zoff_dev_config_default(&cfg);
    cfg.kind = ZOFF_DEV_HOST;
    if (zoff_dev_open(&cfg, &dev) || zoff_dev_stream_create(dev, &st)) abort();
    cs.scratch = (float *)malloc(ZOFF_CUDA_STREAM_SCRATCH_FLOATS * sizeof(float));
    flash(2, 7, 4, 2, 12, ZOFF_F32, false, false);
    flash(1, 1, 2, 2, 12, ZOFF_F32, true, false);
    flash(1, 65, 6, 1, 40, ZOFF_F32, true, true);
    flash(2, 40, 4, 2, 64, ZOFF_F32, false, true);
    flash(1, 37, 2, 1, 128, ZOFF_BF16, false, true);
    flash(1, 21, 2, 2, 200, ZOFF_F16, true, false);
    flash(1, 50, 4, 2, 40, ZOFF_BF16, true, true);
    flash(1, 130, 2, 1, 64, ZOFF_F32, false, false);
    embedding(2, 9, 40, 5, ZOFF_F32, true, true);
    embedding(3, 300, 2100, 17, ZOFF_BF16, false, true);
    embedding(2, 150, 70, 300, ZOFF_F16, true, false);
    colsums(300, 70, ZOFF_F32, ZOFF_F32);
    colsums(300, 70, ZOFF_BF16, ZOFF_BF16);
    colsums(5000, 33, ZOFF_F16, ZOFF_F32);
    colsums(70, 33000, ZOFF_F32, ZOFF_BF16);
    colsums(1, 5, ZOFF_F32, ZOFF_F32);
    layernorm(300, 72, ZOFF_BF16, ZOFF_BF16, ZOFF_BF16);
    layernorm(2000, 40, ZOFF_F32, ZOFF_F32, ZOFF_F32);
    layernorm(7, 33000, ZOFF_F16, ZOFF_F32, ZOFF_F16);
    xent(9, 1500, ZOFF_F32, true);
    xent(9, 1500, ZOFF_BF16, false);
    xent(5, 77, ZOFF_F16, false);
    for (int tt = 0; tt < 4; tt++) {
        gemm(tt & 1, tt >> 1, ZOFF_F32, ZOFF_BF16, 0.75f);
        gemm(tt & 1, tt >> 1, ZOFF_BF16, ZOFF_F16, -1.0f);
        gemm(tt & 1, tt >> 1, ZOFF_F16, ZOFF_BF16, 0.0f);
    }
    elementwise(ZOFF_F32);
    elementwise(ZOFF_BF16);
    printf("%d failures\n", fails);
    return fails != 0;
}
