/* bench_train: training throughput of the reference trainer (forward, backward, AdamW) for
 * one model shape on one backend, measured against the FLOP/s the same backend's GEMM reaches
 * at the model's own GEMM shapes in the same run, so the figure is a ratio that survives a
 * noisy machine. Prints one JSON line per measured point:
 *   tokens_per_s, model_flops_per_s (6*N*tokens + attention, the usual MFU accounting),
 *   model_flops_per_step_by_family (the same total split by op family: each linear layer's
 *   forward, input-gradient and weight-gradient GEMMs, 3 * 2*BT*K*OC per layer, and attention,
 *   the rest of the model's formula), and gemm_flops_per_s: every GEMM call shape of a step
 *   (M, N, K and transposes as the model issues them, in the model's GEMM dtype; the head at
 *   full BT rows, which the model runs in row chunks, so never slower) run after every timed
 *   step, the best time of each shape kept, and the step's GEMM FLOPs divided by the sum of
 *   those best times: what this backend's GEMM does at these shapes, the ceiling for the
 *   step's GEMM work (attention, elementwise kernels and the optimizer are extra work on top,
 *   so ratio < 1 always; it says how much of the step is spent outside GEMM-speed work).
 *   gemm_square_flops_per_s is one --gemm N square GEMM, for reference. Timings use the best
 *   of the timed runs (the least disturbed), and the median step time is reported too.
 * --profile (host backend): ms_by_family, the time each op family's kernels took per timed step
 *   (mean over the timed steps; the GEMM baselines between steps are not counted), timed on the
 *   stream's worker thread around each kernel body; ms_by_family_sum against step_s_mean says
 *   how much of the step is spent outside the kernels (queueing, host waits).
 * Device bytes per parameter are reported without offload (the reference trainer: the model's
 * terms plus fp32 gradients and moments) and with the optimizer offloaded (the model's terms
 * plus the engine's gradient buckets, default engine settings).
 * usage: bench_train [--arch gpt2|llama] [--preset gpt2|demo|llama] [--n-layer N --n-head N
 *        --n-kv-head N --n-embd N --n-ffn N --vocab N --seq-len N] [--batch N] [--steps N]
 *        [--warmup N] [--dtype f32|bf16|f16] [--gemm N] [--device host|cuda]
 *        [--capacity SIZE] [--threads N] [--ckpt] [--profile]
 * Presets: gpt2 (GPT-2 124M), demo (the CLI's demo GPT), llama (a Llama-shaped model: 8
 * layers, 1024 wide, 16 heads with 4 KV heads (GQA 4:1), FFN 2816, vocab 32000); --arch llama
 * alone starts from the llama preset.
 * Defaults: the host target: GPT-2 124M shape, fp32, batch 4 x 64. */
#include "gpu/device.h"
#include "gpu/host/host_backend.h" /* the host kernels' per-family timing (--profile) */
#include "model/model.h"
#include "model/model_offload.h"

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
    fprintf(stderr, "bench_train: %s: %s: %s\n", what, zoff_strerror(rc), zoff_last_error_detail());
    return 1;
}

static int usage(const char *bad) {
    fprintf(stderr, "bench_train: bad or unknown option '%s' (see the header of bench_train.c)\n",
            bad);
    return 2;
}

/* The in-run baseline: C (n,n) = A (n,n) @ B (n,n)^T in the model's GEMM dtype. */
typedef struct gemm_probe {
    zoff_dev *dev;
    zoff_dev_stream *s;
    int n;
    zoff_dtype type;
    void *a, *b;
    float *c;
} gemm_probe;

static int probe_init(gemm_probe *g) {
    size_t nn = (size_t)g->n * g->n;
    float *h = malloc(nn * sizeof(float));
    if (!h) return -12;
    for (size_t i = 0; i < nn; i++)
        h[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    int rc = zoff_dev_malloc(g->dev, nn * 4, &g->a);
    if (!rc) rc = zoff_dev_malloc(g->dev, nn * 4, &g->b);
    if (!rc) rc = zoff_dev_malloc(g->dev, nn * 4, (void **)&g->c);
    if (!rc) rc = zoff_dev_memcpy(g->dev, g->c, h, nn * 4, ZOFF_COPY_H2D);
    if (!rc) rc = zoff_dev_memcpy(g->dev, g->a, h, nn * 4, ZOFF_COPY_H2D);
    if (!rc) rc = zoff_dev_memcpy(g->dev, g->b, h, nn * 4, ZOFF_COPY_H2D);
    if (!rc && g->type != ZOFF_F32) { /* 16-bit operands: cast the data into a and b */
        rc = zoff_dev_op_cast(g->s, g->a, g->type, g->c, ZOFF_F32, nn);
        if (!rc) rc = zoff_dev_op_cast(g->s, g->b, g->type, g->c, ZOFF_F32, nn);
        if (!rc) rc = zoff_dev_stream_synchronize(g->s);
    }
    free(h);
    return rc;
}

static int probe_run(gemm_probe *g, double *flops_per_s) {
    int n = g->n;
    double t0 = now_s();
    int rc = zoff_dev_op_gemm(g->s, false, true, n, n, n, 1.0f, g->a, n, g->b, n, g->type, 0.0f,
                              g->c, ZOFF_F32, n);
    if (!rc) rc = zoff_dev_stream_synchronize(g->s);
    *flops_per_s = 2.0 * n * (double)n * n / (now_s() - t0);
    return rc;
}

/* One linear family of the model: `count` layers of (BT,K) @ (K,OC); each runs forward
 * (BT,OC,K; B transposed), input gradient (BT,K,OC) and weight gradient (OC,K,BT; A transposed,
 * accumulating), as model_linear_fwd/_bwd and the head issue them. */
typedef struct gemm_family {
    const char *name;
    int K, OC, count;
    double best_s[3]; /* best time of each of the three calls, over the runs */
} gemm_family;

#define MAX_FAM 8

static int families_of(const zoff_model_config *mc, gemm_family *f) {
    int n = 0;
    if (mc->arch == ZOFF_ARCH_LLAMA) {
        const zoff_llama_config *c = &mc->llama;
        int C = c->n_embd, QD = c->n_head * c->head_dim, KD = c->n_kv_head * c->head_dim;
        int F = c->n_ffn, L = c->n_layer;
        f[n++] = (gemm_family){"q", C, QD, L, {0}};
        f[n++] = (gemm_family){"k", C, KD, L, {0}};
        f[n++] = (gemm_family){"v", C, KD, L, {0}};
        f[n++] = (gemm_family){"o", QD, C, L, {0}};
        f[n++] = (gemm_family){"gate", C, F, L, {0}};
        f[n++] = (gemm_family){"up", C, F, L, {0}};
        f[n++] = (gemm_family){"down", F, C, L, {0}};
        f[n++] = (gemm_family){"head", C, c->vocab_size, 1, {0}};
    } else {
        const zoff_gpt_config *c = &mc->gpt;
        int C = c->n_embd, L = c->n_layer;
        f[n++] = (gemm_family){"qkv", C, 3 * C, L, {0}};
        f[n++] = (gemm_family){"attn_proj", C, C, L, {0}};
        f[n++] = (gemm_family){"fc", C, 4 * C, L, {0}};
        f[n++] = (gemm_family){"fc_proj", 4 * C, C, L, {0}};
        f[n++] = (gemm_family){"head", C, c->vocab_size, 1, {0}};
    }
    return n;
}

/* Buffers big enough for every call shape: A (BT or OC rows), B, C; f32-sized. */
typedef struct shape_probe {
    zoff_dev_stream *s;
    zoff_dtype type;
    int BT;
    void *a, *b;
    float *c;
} shape_probe;

/* Runs each family's three calls once, keeping the best time of each. */
static int shapes_run(shape_probe *p, gemm_family *f, int nf) {
    int BT = p->BT;
    for (int i = 0; i < nf; i++) {
        int K = f[i].K, OC = f[i].OC;
        for (int k = 0; k < 3; k++) {
            double t0 = now_s();
            int rc;
            if (k == 0)
                rc = zoff_dev_op_gemm(p->s, false, true, BT, OC, K, 1.0f, p->a, K, p->b, K, p->type,
                                      0.0f, p->c, ZOFF_F32, OC);
            else if (k == 1)
                rc = zoff_dev_op_gemm(p->s, false, false, BT, K, OC, 1.0f, p->a, OC, p->b, K,
                                      p->type, 0.0f, p->c, ZOFF_F32, K);
            else
                rc = zoff_dev_op_gemm(p->s, true, false, OC, K, BT, 1.0f, p->a, OC, p->b, K,
                                      p->type, 1.0f, p->c, ZOFF_F32, K);
            if (!rc) rc = zoff_dev_stream_synchronize(p->s);
            if (rc) return rc;
            double t = now_s() - t0;
            if (f[i].best_s[k] == 0 || t < f[i].best_s[k]) f[i].best_s[k] = t;
        }
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    zoff_log_set_callback(zoff_log_to_stderr, NULL, ZOFF_LOG_WARN);
    /* the shape; the architecture's config is made from it after the flags */
    int arch_llama = 0, L = 12, NH = 12, NKV = 0, C = 768, F = 0, V = 50257;
    int batch = 4, seq = 64, steps = 5, warmup = 2, gemm_n = 2048, threads = 0, ckpt = 0;
    int profile = 0;
    zoff_dtype dtype = ZOFF_F32;
    zoff_dev_config dc;
    zoff_dev_config_default(&dc);
    dc.kind = ZOFF_DEV_HOST;
    dc.capacity = (size_t)8 << 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--ckpt") == 0 || strcmp(a, "--profile") == 0) {
            *(a[2] == 'c' ? &ckpt : &profile) = 1;
            continue;
        }
        if (!v) return usage(a);
        i++;
        char *end = NULL;
        long n = strtol(v, &end, 10);
        bool num_ok = end != v && *end == 0 && n > 0;
        bool llama_preset = strcmp(a, "--preset") == 0 && strcmp(v, "llama") == 0;
        if (llama_preset || (strcmp(a, "--arch") == 0 && strcmp(v, "llama") == 0)) {
            arch_llama = 1;
            L = 8, NH = 16, NKV = 4, C = 1024, F = 2816, V = 32000;
        } else if (strcmp(a, "--arch") == 0) {
            if (strcmp(v, "gpt2")) return usage(v);
            arch_llama = 0;
        } else if (strcmp(a, "--preset") == 0) {
            if (strcmp(v, "gpt2") == 0)
                L = 12, NH = 12, C = 768, V = 50257;
            else if (strcmp(v, "demo") == 0)
                L = 4, NH = 4, C = 128, V = 256;
            else
                return usage(v);
        } else if (strcmp(a, "--dtype") == 0) {
            if (zoff_dtype_parse(v, &dtype)) return usage(v);
        } else if (strcmp(a, "--device") == 0) {
            if (zoff_dev_kind_parse(v, &dc.kind)) return usage(v);
        } else if (strcmp(a, "--capacity") == 0) {
            if (zoff_parse_size(v, &dc.capacity)) return usage(v);
        } else if (!num_ok) {
            return usage(a);
        } else if (strcmp(a, "--n-layer") == 0) {
            L = (int)n;
        } else if (strcmp(a, "--n-head") == 0) {
            NH = (int)n;
        } else if (strcmp(a, "--n-kv-head") == 0) {
            NKV = (int)n;
        } else if (strcmp(a, "--n-embd") == 0) {
            C = (int)n;
        } else if (strcmp(a, "--n-ffn") == 0) {
            F = (int)n;
        } else if (strcmp(a, "--vocab") == 0) {
            V = (int)n;
        } else if (strcmp(a, "--seq-len") == 0) {
            seq = (int)n;
        } else if (strcmp(a, "--batch") == 0) {
            batch = (int)n;
        } else if (strcmp(a, "--steps") == 0) {
            steps = (int)n;
        } else if (strcmp(a, "--warmup") == 0) {
            warmup = (int)n;
        } else if (strcmp(a, "--gemm") == 0) {
            gemm_n = (int)n;
        } else if (strcmp(a, "--threads") == 0) {
            threads = (int)n;
        } else {
            return usage(a);
        }
    }
    zoff_model_config mc;
    memset(&mc, 0, sizeof mc);
    if (arch_llama) {
        mc.arch = ZOFF_ARCH_LLAMA;
        zoff_llama_config_default(&mc.llama);
        mc.llama.n_layer = L;
        mc.llama.n_head = NH;
        mc.llama.n_kv_head = NKV ? NKV : NH;
        mc.llama.n_embd = C;
        mc.llama.head_dim = C / NH;
        mc.llama.n_ffn = F ? F : (8 * C / 3 + 63) / 64 * 64;
        mc.llama.vocab_size = V;
        mc.llama.seq_len = seq;
    } else {
        mc.arch = ZOFF_ARCH_GPT2;
        mc.gpt = (zoff_gpt_config){L, NH, C, V, seq < 1024 ? 1024 : seq, false};
    }
    if (dc.kind == ZOFF_DEV_CUDA) dc.capacity = 0;
    dc.host_kernel_threads = threads;
    zoff_dev *dev;
    int rc = zoff_dev_open(&dc, &dev);
    if (rc) return die("opening the device", rc);
    zoff_dev_stream *s;
    if ((rc = zoff_dev_stream_create(dev, &s))) return die("stream", rc);

    /* the in-run baseline, interleaved with the steps below so that both see the same
     * machine; one warm-up run first */
    gemm_probe probe = {dev, s, gemm_n, dtype, NULL, NULL, NULL};
    double gemm = 0, g;
    if ((rc = probe_init(&probe)) || (rc = probe_run(&probe, &g))) return die("gemm baseline", rc);
    /* the model's GEMM shapes; operands are zero-filled (the values do not change the time) */
    gemm_family fam[MAX_FAM];
    int nfam = families_of(&mc, fam);
    shape_probe sp = {s, dtype, batch * seq, NULL, NULL, NULL};
    {
        size_t amax = 0, bmax = 0, cmax = 0;
        for (int i = 0; i < nfam; i++) {
            size_t K = (size_t)fam[i].K, OC = (size_t)fam[i].OC, BT = (size_t)sp.BT;
            size_t a = BT * (K > OC ? K : OC), b = (BT > OC ? BT : OC) * K;
            size_t c = BT * (K > OC ? K : OC) > OC * K ? BT * (K > OC ? K : OC) : OC * K;
            if (a > amax) amax = a;
            if (b > bmax) bmax = b;
            if (c > cmax) cmax = c;
        }
        if ((rc = zoff_dev_malloc(dev, amax * 4, &sp.a)) ||
            (rc = zoff_dev_malloc(dev, bmax * 4, &sp.b)) ||
            (rc = zoff_dev_malloc(dev, cmax * 4, (void **)&sp.c)) ||
            (rc = zoff_dev_memset_async(s, sp.a, 0, amax * 4)) ||
            (rc = zoff_dev_memset_async(s, sp.b, 0, bmax * 4)) ||
            (rc = zoff_dev_memset_async(s, sp.c, 0, cmax * 4)) || (rc = shapes_run(&sp, fam, nfam)))
            return die("gemm baseline at the model's shapes", rc);
        for (int i = 0; i < nfam; i++) /* the warm-up run does not count */
            fam[i].best_s[0] = fam[i].best_s[1] = fam[i].best_s[2] = 0;
    }

    zoff_model_options go;
    zoff_model_options_default(&go);
    go.batch = batch;
    go.seq_len = seq;
    go.matmul_dtype = dtype;
    go.activation_checkpoint = ckpt;
    zoff_model *m;
    if ((rc = zoff_model_config_create(dev, &mc, &go, &m))) return die("model", rc);
    if ((rc = zoff_model_init_params(m, 1))) return die("init", rc);
    zoff_trainer_config tc;
    zoff_trainer_config_default(&tc);
    tc.total_steps = warmup + steps;
    zoff_trainer *tr;
    if ((rc = zoff_trainer_create(m, s, &tc, NULL, &tr))) return die("trainer", rc);
    int32_t *x = malloc((size_t)batch * seq * sizeof *x), *y = malloc((size_t)batch * seq * 4);
    uint64_t rng = 7;
    for (int i = 0; i < batch * seq; i++) {
        x[i] = (int32_t)(zoff_rng_next(&rng) % (uint64_t)V);
        y[i] = (int32_t)(zoff_rng_next(&rng) % (uint64_t)V);
    }
    zoff_step_stats st;
    /* per-family kernel nanoseconds of the timed steps: counters read around each step */
    uint64_t fam_ns[HOST_OP_FAMILIES] = {0}, ns0[HOST_OP_FAMILIES], ns1[HOST_OP_FAMILIES];
    uint64_t calls0[HOST_OP_FAMILIES], calls1[HOST_OP_FAMILIES];
    bool host_profile = profile && zoff_dev_get_kind(dev) == ZOFF_DEV_HOST;
    if (host_profile) zoff_dev_host_profile_enable(true);
    double *times = calloc((size_t)steps, sizeof *times), *gemms = calloc((size_t)steps, 8);
    for (int i = 0; i < warmup + steps; i++) {
        zoff_dev_host_profile_read(ns0, calls0);
        double t0 = now_s();
        zoff_batch b = {.tokens = x, .targets = y, .B = batch, .T = seq};
        if ((rc = zoff_trainer_step(tr, &b, &st))) return die("step", rc);
        if ((rc = zoff_dev_stream_synchronize(s))) return die("sync", rc);
        if (i < warmup) continue;
        times[i - warmup] = now_s() - t0;
        zoff_dev_host_profile_read(ns1, calls1);
        for (int f = 0; f < HOST_OP_FAMILIES; f++)
            fam_ns[f] += ns1[f] - ns0[f];
        if ((rc = probe_run(&probe, &gemms[i - warmup]))) return die("gemm baseline", rc);
        if ((rc = shapes_run(&sp, fam, nfam))) return die("gemm baseline", rc);
    }
    zoff_dev_host_profile_enable(false);
    double step_mean = 0;
    for (int i = 0; i < steps; i++)
        step_mean += times[i] / steps;
    /* best of each (the least disturbed run of both), and the median step */
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    qsort(gemms, (size_t)steps, sizeof *gemms, cmp_double);
    double step_s = times[0], step_med = times[steps / 2];
    gemm = gemms[steps - 1];
    double tokens = (double)batch * seq, flops = zoff_model_config_train_flops(&mc, batch, seq);
    /* the step's GEMM FLOPs per family, and the time they take at the best measured rates */
    double fam_flops[MAX_FAM], gemm_flops = 0, gemm_time = 0;
    for (int i = 0; i < nfam; i++) {
        fam_flops[i] = 3.0 * 2.0 * tokens * fam[i].K * (double)fam[i].OC * fam[i].count;
        gemm_flops += fam_flops[i];
        gemm_time += fam[i].count * (fam[i].best_s[0] + fam[i].best_s[1] + fam[i].best_s[2]);
    }
    double gemm_shapes = gemm_flops / gemm_time;
    zoff_dev_mem_stats ms;
    zoff_dev_mem_stats_get(dev, &ms);
    zoff_device_plan plan; /* the model's terms as allocated, and the trainer's */
    zoff_model_memory(m, &plan);
    plan.grads = 0;
    zoff_device_plan off_plan = plan; /* the model's terms + the offload engine's buckets */
    zoff_trainer_plan(&plan, dtype);
    zoff_engine_config ec;
    zoff_engine_config_default(&ec);
    const zoff_layout *lay = zoff_model_get_layout(m);
    ec.bucket_bytes = zoff_model_offload_auto_bucket(lay->total * zoff_dtype_size(dtype));
    if ((rc = zoff_model_offload_plan(lay, dtype, &ec, &off_plan))) return die("offload plan", rc);
    double np = (double)lay->n_params;
    char fam_json[1024];
    size_t fj = 0;
    for (int i = 0; i < nfam; i++)
        fj += (size_t)snprintf(fam_json + fj, sizeof fam_json - fj, "\"%s\":%.6g,", fam[i].name,
                               fam_flops[i]);
    snprintf(fam_json + fj, sizeof fam_json - fj, "\"attention\":%.6g", flops - gemm_flops);
    char prof_json[1024] = "";
    if (host_profile) {
        double sum = 0;
        size_t pj = (size_t)snprintf(prof_json, sizeof prof_json, ",\"ms_by_family\":{");
        for (int f = 0; f < HOST_OP_FAMILIES; f++) {
            if (!fam_ns[f]) continue;
            double fms = fam_ns[f] * 1e-6 / steps;
            sum += fms;
            pj += (size_t)snprintf(prof_json + pj, sizeof prof_json - pj, "%s\"%s\":%.2f",
                                   prof_json[pj - 1] == '{' ? "" : ",",
                                   zoff_dev_host_profile_family_name((host_op_family)f), fms);
        }
        snprintf(prof_json + pj, sizeof prof_json - pj,
                 "},\"ms_by_family_sum\":%.2f,\"step_s_mean\":%.4f", sum, step_mean);
    }
    printf("{\"bench\":\"train\",\"backend\":\"%s\",\"device\":\"%s\",\"arch\":\"%s\","
           "\"n_layer\":%d,\"n_head\":%d,\"n_kv_head\":%d,\"n_embd\":%d,\"n_ffn\":%d,"
           "\"vocab_size\":%d,\"batch\":%d,\"seq_len\":%d,"
           "\"dtype\":\"%s\",\"activation_checkpoint\":%s,\"n_params\":%zu,\"steps\":%d,"
           "\"step_s\":%.4f,\"step_s_median\":%.4f,\"tokens_per_s\":%.1f,\"model_flops_per_step\":%"
           ".4g,"
           "\"model_flops_per_step_by_family\":{%s},\"gemm_flops_per_step\":%.6g,"
           "\"model_flops_per_s\":%.4g,\"gemm_flops_per_s\":%.4g,\"gemm_n\":%d,"
           "\"gemm_square_flops_per_s\":%.4g,\"ratio\":%.3f,\"mem_peak_bytes\":%zu,\"device_bytes_"
           "per_param_peak\":%.3f,"
           "\"device_plan_bytes_per_param\":{\"weights\":%.3f,\"master\":%.3f,\"grads\":%.3f,"
           "\"optimizer\":%.3f,\"activations\":%.3f,\"workspace\":%.3f,\"total\":%.3f},"
           "\"device_bytes_per_param_no_offload\":%.3f,\"device_bytes_per_param_offload\":%.3f,"
           "\"device_bytes_per_param_offload_without_activations\":%.3f,"
           "\"final_loss\":%.4f%s}\n",
           zoff_dev_kind_name(zoff_dev_get_kind(dev)), zoff_dev_name(dev),
           arch_llama ? "llama" : "gpt2", L, NH, arch_llama ? mc.llama.n_kv_head : NH, C,
           arch_llama ? mc.llama.n_ffn : 4 * C, V, batch, seq, zoff_dtype_name(dtype),
           ckpt ? "true" : "false", zoff_model_get_layout(m)->n_params, steps, step_s, step_med,
           tokens / step_s, flops, fam_json, gemm_flops, flops / step_s, gemm_shapes, gemm_n, gemm,
           flops / step_s / gemm_shapes, ms.peak, (double)ms.peak / np, plan.weights / np,
           plan.master / np, plan.grads / np, plan.optimizer / np, plan.activations / np,
           plan.workspace / np, plan.total / np, plan.total / np, off_plan.total / np,
           (off_plan.total - off_plan.activations) / np, st.loss, prof_json);
    free(x);
    free(y);
    free(times);
    free(gemms);
    zoff_dev_free(dev, probe.a);
    zoff_dev_free(dev, probe.b);
    zoff_dev_free(dev, probe.c);
    zoff_dev_free(dev, sp.a);
    zoff_dev_free(dev, sp.b);
    zoff_dev_free(dev, sp.c);
    zoff_trainer_destroy(tr);
    zoff_model_destroy(m);
    zoff_dev_close(dev);
    return 0;
}
