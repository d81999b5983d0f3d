/* bench_attention: the fused causal attention (zoff_dev_op_flash_attention_fwd/bwd) against the
 * materialized reference attention (zoff_dev_op_attention_fwd/bwd) on the same shapes, forward
 * plus backward, on one backend. The materialized attention is the in-run baseline: the figure
 * to read is the ratio fused / materialized, which survives a noisy machine.
 * Prints one JSON line per sequence length T:
 *   fused_ms, materialized_ms: the best (least disturbed) of the timed fwd+bwd runs, the two
 *   methods' runs interleaved so that both see the same load, and their medians;
 *   ratio = fused_ms / materialized_ms (below 1: the fused one is faster);
 *   fused_bytes, materialized_bytes: the device bytes each holds besides the inputs and
 *   gradients they share (qkv, dout, dqkv): att and its gradient scratch (B,NH,T,T) and the
 *   output for the materialized one; the output, lse and delta for the fused one;
 *   fused_extra_peak_bytes, materialized_extra_peak_bytes: device memory allocated while each
 *   runs (the backend's own, if any; the ops are meant to allocate nothing: 0);
 *   max_abs_diff: between the two outputs and between the two gradients (fp32).
 * usage: bench_attention [--device host|cuda|auto] [--batch B] [--heads NH] [--head-size HS]
 *        [--seq-lens T1,T2,...] [--iters N] [--warmup N] [--capacity SIZE] [--threads N]
 * Defaults: GPT-2 124M attention (NH 12, HS 64), B 4, T 64,128,256,512,1024, fp32, the host
 * backend (or ZOFF_DEVICE). */
#include "gpu/device.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int die(const char *what, int rc) {
    fprintf(stderr, "bench_attention: %s: %s: %s\n", what, zoff_strerror(rc),
            zoff_last_error_detail());
    return 1;
}

static int usage(const char *bad) {
    fprintf(stderr,
            "bench_attention: bad or unknown option '%s' (see the header of "
            "bench_attention.c)\n",
            bad);
    return 2;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct point {
    zoff_dev *dev;
    zoff_dev_stream *s;
    int B, T, NH, HS, C;
    /* shared */
    float *qkv, *dout, *dqkv;
    /* materialized */
    float *out_m, *att, *scratch;
    /* fused */
    float *out_f, *lse, *delta;
    zoff_dev_attn_shape sh;
} point;

static int run_materialized(point *p) {
    int rc = zoff_dev_memset_async(p->s, p->dqkv, 0, (size_t)p->B * p->T * 3 * p->C * 4);
    if (!rc)
        rc = zoff_dev_op_attention_fwd(p->s, p->out_m, p->att, p->qkv, p->B, p->T, p->C, p->NH);
    if (!rc)
        rc = zoff_dev_op_attention_bwd(p->s, p->dqkv, p->scratch, p->dout, p->qkv, p->att, p->B,
                                       p->T, p->C, p->NH);
    return rc ? rc : zoff_dev_stream_synchronize(p->s);
}

static int run_fused(point *p) {
    const float *q = p->qkv, *k = p->qkv + p->C, *v = p->qkv + 2 * p->C;
    int rc =
        zoff_dev_op_flash_attention_fwd(p->s, p->out_f, p->lse, q, k, v, ZOFF_F32, NULL, &p->sh);
    if (!rc)
        rc = zoff_dev_op_flash_attention_bwd(p->s, p->dqkv, p->dqkv + p->C, p->dqkv + 2 * p->C,
                                             p->delta, p->dout, p->out_f, p->lse, q, k, v, ZOFF_F32,
                                             NULL, &p->sh);
    return rc ? rc : zoff_dev_stream_synchronize(p->s);
}

/* Times the two methods' runs interleaved (materialized, fused, materialized, ...) so that both
 * see the same machine: after `warmup` rounds, `iters` timed rounds; best and median of each in
 * ms, and the most device memory each allocated while running (peak above `base`). */
typedef struct timing {
    double best, median;
    size_t peak_above;
} timing;

static int time_interleaved(point *p, int warmup, int iters, size_t base, timing *mat,
                            timing *fused) {
    int (*fns[2])(point *) = {run_materialized, run_fused};
    timing *out[2] = {mat, fused};
    double *t = malloc(2 * (size_t)iters * sizeof *t);
    if (!t) return -12;
    int rc = 0;
    for (int i = 0; i < warmup && !rc; i++)
        for (int m = 0; m < 2 && !rc; m++)
            rc = fns[m](p);
    for (int m = 0; m < 2; m++)
        out[m]->peak_above = 0;
    for (int i = 0; i < iters && !rc; i++)
        for (int m = 0; m < 2 && !rc; m++) {
            zoff_dev_mem_reset_peak(p->dev);
            double t0 = now_s();
            rc = fns[m](p);
            t[m * iters + i] = (now_s() - t0) * 1e3;
            zoff_dev_mem_stats ms;
            zoff_dev_mem_stats_get(p->dev, &ms);
            if (ms.peak - base > out[m]->peak_above) out[m]->peak_above = ms.peak - base;
        }
    for (int m = 0; !rc && m < 2; m++) {
        qsort(t + m * iters, (size_t)iters, sizeof *t, cmp_double);
        out[m]->best = t[m * iters];
        out[m]->median = t[m * iters + iters / 2];
    }
    free(t);
    return rc;
}

static double max_abs_diff(zoff_dev *dev, const float *a, const float *b, size_t n, int *rc) {
    float *ha = malloc(n * 4), *hb = malloc(n * 4);
    double m = 0;
    if (!ha || !hb) {
        *rc = -12;
    } else {
        *rc = zoff_dev_memcpy(dev, ha, a, n * 4, ZOFF_COPY_D2H);
        if (!*rc) *rc = zoff_dev_memcpy(dev, hb, b, n * 4, ZOFF_COPY_D2H);
        for (size_t i = 0; !*rc && i < n; i++)
            m = fmax(m, fabs((double)ha[i] - hb[i]));
    }
    free(ha);
    free(hb);
    return m;
}

static int dalloc(zoff_dev *dev, float **p, size_t floats) {
    return zoff_dev_malloc(dev, floats * sizeof(float), (void **)p);
}

static int bench_point(zoff_dev *dev, zoff_dev_stream *s, int B, int T, int NH, int HS, int warmup,
                       int iters) {
    point p = {.dev = dev, .s = s, .B = B, .T = T, .NH = NH, .HS = HS, .C = NH * HS};
    size_t n3 = (size_t)B * T * 3 * p.C, no = (size_t)B * T * p.C;
    size_t na = (size_t)B * NH * T * T, nl = (size_t)B * NH * T;
    p.sh = (zoff_dev_attn_shape){.B = B,
                                 .T = T,
                                 .NH = NH,
                                 .NKV = NH,
                                 .HS = HS,
                                 .q_stride = 3 * (size_t)p.C,
                                 .kv_stride = 3 * (size_t)p.C,
                                 .scale = 1.0f / sqrtf((float)HS)};
    int rc = dalloc(dev, &p.qkv, n3);
    if (!rc) rc = dalloc(dev, &p.dout, no);
    if (!rc) rc = dalloc(dev, &p.dqkv, n3);
    float *dq_m = NULL; /* a copy of the fused gradient, to compare with the materialized one */
    if (!rc) rc = dalloc(dev, &dq_m, n3);
    float *h = rc ? NULL : malloc(n3 * 4);
    if (!rc && !h) rc = -12;
    unsigned long long x = 88172645463325252ull;
    for (size_t i = 0; !rc && i < n3; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        h[i] = (float)(x >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
    }
    if (!rc) rc = zoff_dev_memcpy(dev, p.qkv, h, n3 * 4, ZOFF_COPY_H2D);
    if (!rc) rc = zoff_dev_memcpy(dev, p.dout, h + n3 - no, no * 4, ZOFF_COPY_H2D);
    zoff_dev_mem_stats m0, m1, m2;
    zoff_dev_mem_stats_get(dev, &m0);
    if (!rc) rc = dalloc(dev, &p.out_m, no);
    if (!rc) rc = dalloc(dev, &p.att, na);
    if (!rc) rc = dalloc(dev, &p.scratch, na);
    zoff_dev_mem_stats_get(dev, &m1);
    if (!rc) rc = dalloc(dev, &p.out_f, no);
    if (!rc) rc = dalloc(dev, &p.lse, nl);
    if (!rc) rc = dalloc(dev, &p.delta, nl);
    zoff_dev_mem_stats_get(dev, &m2);
    if (rc) {
        rc = die("allocating the buffers", rc);
        goto out;
    }
    size_t mat_bytes = m1.used - m0.used, fused_bytes = m2.used - m1.used;
    timing tm, tf;
    if ((rc = time_interleaved(&p, warmup, iters, m2.used, &tm, &tf))) {
        rc = die("running attention", rc);
        goto out;
    }
    /* the fused run came last: keep its gradient, redo the materialized one for comparison */
    if ((rc = zoff_dev_memcpy(dev, dq_m, p.dqkv, n3 * 4, ZOFF_COPY_D2D)) ||
        (rc = run_materialized(&p))) {
        rc = die("running attention", rc);
        goto out;
    }
    double d_out = max_abs_diff(dev, p.out_f, p.out_m, no, &rc);
    double d_grad = rc ? 0 : max_abs_diff(dev, dq_m, p.dqkv, n3, &rc);
    if (rc) {
        rc = die("reading results back", rc);
        goto out;
    }
    printf("{\"bench\":\"attention\",\"device\":\"%s\",\"dtype\":\"f32\",\"B\":%d,\"T\":%d,"
           "\"NH\":%d,\"HS\":%d,\"iters\":%d,\"fused_ms\":%.3f,\"materialized_ms\":%.3f,"
           "\"ratio\":%.3f,\"fused_median_ms\":%.3f,\"materialized_median_ms\":%.3f,"
           "\"fused_bytes\":%zu,\"materialized_bytes\":%zu,\"fused_extra_peak_bytes\":%zu,"
           "\"materialized_extra_peak_bytes\":%zu,\"max_abs_diff_out\":%.3g,\"max_abs_diff_grad\":%"
           ".3g}"
           "\n",
           zoff_dev_kind_name(zoff_dev_get_kind(dev)), B, T, NH, HS, iters, tf.best, tm.best,
           tf.best / tm.best, tf.median, tm.median, fused_bytes, mat_bytes, tf.peak_above,
           tm.peak_above, d_out, d_grad);
    fflush(stdout);
out:
    free(h);
    float *bufs[] = {p.qkv,     p.dout,  p.dqkv, p.out_m, p.att,
                     p.scratch, p.out_f, p.lse,  p.delta, dq_m};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        zoff_dev_free(dev, bufs[i]);
    return rc;
}

int main(int argc, char **argv) {
    zoff_dev_config cfg;
    zoff_dev_config_default(&cfg);
    cfg.kind = ZOFF_DEV_HOST; /* unless ZOFF_DEVICE or --device says otherwise */
    const char *env_kind = getenv("ZOFF_DEVICE");
    if (env_kind && zoff_dev_kind_parse(env_kind, &cfg.kind)) return usage(env_kind);
    int B = 4, NH = 12, HS = 64, warmup = 1, iters = 5;
    int seq[32] = {64, 128, 256, 512, 1024}, nseq = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage(a);
        if (!strcmp(a, "--device")) {
            if (zoff_dev_kind_parse(v, &cfg.kind)) return usage(v);
        } else if (!strcmp(a, "--batch")) {
            B = atoi(v);
        } else if (!strcmp(a, "--heads")) {
            NH = atoi(v);
        } else if (!strcmp(a, "--head-size")) {
            HS = atoi(v);
        } else if (!strcmp(a, "--iters")) {
            iters = atoi(v);
        } else if (!strcmp(a, "--warmup")) {
            warmup = atoi(v);
        } else if (!strcmp(a, "--threads")) {
            cfg.host_kernel_threads = atoi(v);
        } else if (!strcmp(a, "--capacity")) {
            if (zoff_parse_size(v, &cfg.capacity)) return usage(v);
        } else if (!strcmp(a, "--seq-lens")) {
            nseq = 0;
            for (const char *c = v; *c && nseq < 32; c = strchr(c, ',') ? strchr(c, ',') + 1 : "")
                seq[nseq++] = atoi(c);
        } else {
            return usage(a);
        }
        i++;
    }
    if (B < 1 || NH < 1 || HS < 1 || iters < 1 || warmup < 0 || nseq < 1) return usage("shape");
    for (int i = 0; i < nseq; i++)
        if (seq[i] < 1) return usage("--seq-lens");
    zoff_dev *dev;
    int rc = zoff_dev_open(&cfg, &dev);
    if (rc) return die("opening the device", rc);
    zoff_dev_stream *s;
    if ((rc = zoff_dev_stream_create(dev, &s))) {
        zoff_dev_close(dev);
        return die("creating a stream", rc);
    }
    int status = 0;
    for (int i = 0; i < nseq && !status; i++)
        status = bench_point(dev, s, B, seq[i], NH, HS, warmup, iters);
    zoff_dev_stream_destroy(s);
    zoff_dev_close(dev);
    return status;
}
