/* bench_train: training throughput of the reference trainer (forward, backward, AdamW) for
 * one model shape on one backend, measured against the FLOP/s of one large GEMM on the same
 * backend in the same run, so the figure is a ratio that survives a noisy machine.
 * Prints one JSON line per measured point:
 *   tokens_per_s, model_flops_per_s (6*N*tokens + attention, the usual MFU accounting),
 *   gemm_flops_per_s (an M=N=K GEMM in the model's GEMM dtype), and their ratio.
 * usage: bench_train [--preset gpt2|demo] [--n-layer N --n-head N --n-embd N --vocab N
 *        --seq-len N] [--batch N] [--steps N] [--warmup N] [--dtype f32|bf16|f16]
 *        [--gemm N] [--device host|cuda] [--capacity SIZE] [--threads N] [--ckpt]
 * Defaults: the host target: GPT-2 124M shape, fp32, batch 4 x 64. */
#include "gpu/device.h"
#include "model/model.h"

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

/* FLOP/s of C (n,n) = A (n,n) @ B (n,n)^T in `type`, best of `reps` after one warm-up. */
static int gemm_flops(zoff_dev *dev, zoff_dev_stream *s, int n, zoff_dtype type, int reps,
                      double *out) {
    size_t es = zoff_dtype_size(type), nn = (size_t)n * n;
    void *a = NULL, *b = NULL;
    float *c = NULL, *h = malloc(nn * sizeof(float));
    int rc = h ? 0 : -12;
    if (!rc) rc = zoff_dev_malloc(dev, nn * 4, &a);
    if (!rc) rc = zoff_dev_malloc(dev, nn * 4, &b);
    if (!rc) rc = zoff_dev_malloc(dev, nn * 4, (void **)&c);
    if (rc) goto out;
    for (size_t i = 0; i < nn; i++)
        h[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    if ((rc = zoff_dev_memcpy(dev, c, h, nn * 4, ZOFF_COPY_H2D))) goto out;
    /* 16-bit operands: cast the fp32 data in place into the front of a and b */
    if ((rc = zoff_dev_memcpy(dev, a, h, nn * 4, ZOFF_COPY_H2D))) goto out;
    if ((rc = zoff_dev_memcpy(dev, b, h, nn * 4, ZOFF_COPY_H2D))) goto out;
    if (type != ZOFF_F32) {
        if ((rc = zoff_dev_op_cast(s, a, type, c, ZOFF_F32, nn))) goto out;
        if ((rc = zoff_dev_op_cast(s, b, type, c, ZOFF_F32, nn))) goto out;
    }
    (void)es;
    double best = 0;
    for (int r = 0; r <= reps; r++) {
        double t0 = now_s();
        if ((rc = zoff_dev_op_gemm(s, false, true, n, n, n, 1.0f, a, n, b, n, type, 0.0f, c, n)))
            goto out;
        if ((rc = zoff_dev_stream_synchronize(s))) goto out;
        double f = 2.0 * n * (double)n * n / (now_s() - t0);
        if (r > 0 && f > best) best = f; /* r == 0 warms up */
    }
    *out = best;
out:
    free(h);
    zoff_dev_free(dev, a);
    zoff_dev_free(dev, b);
    zoff_dev_free(dev, c);
    return rc;
}

int main(int argc, char **argv) {
    zoff_log_set_callback(zoff_log_to_stderr, NULL, ZOFF_LOG_WARN);
    zoff_gpt_config mc;
    zoff_gpt_config_gpt2_124m(&mc);
    int batch = 4, seq = 64, steps = 5, warmup = 2, gemm_n = 2048, threads = 0, ckpt = 0;
    zoff_dtype dtype = ZOFF_F32;
    zoff_dev_config dc;
    zoff_dev_config_default(&dc);
    dc.kind = ZOFF_DEV_HOST;
    dc.capacity = (size_t)8 << 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--ckpt") == 0) {
            ckpt = 1;
            continue;
        }
        if (!v) return usage(a);
        i++;
        char *end = NULL;
        long n = strtol(v, &end, 10);
        bool num_ok = end != v && *end == 0 && n > 0;
        if (strcmp(a, "--preset") == 0) {
            if (strcmp(v, "gpt2") == 0)
                zoff_gpt_config_gpt2_124m(&mc);
            else if (strcmp(v, "demo") == 0)
                zoff_gpt_config_default(&mc);
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
            mc.n_layer = (int)n;
        } else if (strcmp(a, "--n-head") == 0) {
            mc.n_head = (int)n;
        } else if (strcmp(a, "--n-embd") == 0) {
            mc.n_embd = (int)n;
        } else if (strcmp(a, "--vocab") == 0) {
            mc.vocab_size = (int)n;
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
    if (seq > mc.seq_len) mc.seq_len = seq;
    if (dc.kind == ZOFF_DEV_CUDA) dc.capacity = 0;
    dc.host_kernel_threads = threads;
    zoff_dev *dev;
    int rc = zoff_dev_open(&dc, &dev);
    if (rc) return die("opening the device", rc);
    zoff_dev_stream *s;
    if ((rc = zoff_dev_stream_create(dev, &s))) return die("stream", rc);

    /* the in-run baseline first, while memory is free */
    double gemm = 0;
    if ((rc = gemm_flops(dev, s, gemm_n, dtype, 3, &gemm))) return die("gemm baseline", rc);

    zoff_gpt_options go;
    zoff_gpt_options_default(&go);
    go.batch = batch;
    go.seq_len = seq;
    go.matmul_dtype = dtype;
    go.activation_checkpoint = ckpt;
    zoff_gpt *m;
    if ((rc = zoff_gpt_create(dev, &mc, &go, &m))) return die("model", rc);
    if ((rc = zoff_gpt_init_params(m, 1))) return die("init", rc);
    zoff_trainer_config tc;
    zoff_trainer_config_default(&tc);
    tc.total_steps = warmup + steps;
    zoff_trainer *tr;
    if ((rc = zoff_trainer_create(m, s, &tc, &tr))) return die("trainer", rc);
    int32_t *x = malloc((size_t)batch * seq * sizeof *x), *y = malloc((size_t)batch * seq * 4);
    uint64_t rng = 7;
    for (int i = 0; i < batch * seq; i++) {
        x[i] = (int32_t)(zoff_rng_next(&rng) % (uint64_t)mc.vocab_size);
        y[i] = (int32_t)(zoff_rng_next(&rng) % (uint64_t)mc.vocab_size);
    }
    double t0 = 0;
    zoff_step_stats st;
    for (int i = 0; i < warmup + steps; i++) {
        if (i == warmup) t0 = now_s();
        if ((rc = zoff_trainer_step(tr, x, y, batch, seq, &st))) return die("step", rc);
        if ((rc = zoff_dev_stream_synchronize(s))) return die("sync", rc);
    }
    double step_s = (now_s() - t0) / steps;
    double tokens = (double)batch * seq, flops = zoff_gpt_train_flops(&mc, batch, seq);
    zoff_dev_mem_stats ms;
    zoff_dev_mem_stats_get(dev, &ms);
    printf("{\"bench\":\"train\",\"backend\":\"%s\",\"device\":\"%s\",\"n_layer\":%d,"
           "\"n_head\":%d,\"n_embd\":%d,\"vocab_size\":%d,\"batch\":%d,\"seq_len\":%d,"
           "\"dtype\":\"%s\",\"activation_checkpoint\":%s,\"n_params\":%zu,\"steps\":%d,"
           "\"step_s\":%.4f,\"tokens_per_s\":%.1f,\"model_flops_per_step\":%.4g,"
           "\"model_flops_per_s\":%.4g,\"gemm_n\":%d,\"gemm_flops_per_s\":%.4g,"
           "\"ratio\":%.3f,\"mem_peak_bytes\":%zu,\"final_loss\":%.4f}\n",
           zoff_dev_kind_name(zoff_dev_get_kind(dev)), zoff_dev_name(dev), mc.n_layer, mc.n_head,
           mc.n_embd, mc.vocab_size, batch, seq, zoff_dtype_name(dtype), ckpt ? "true" : "false",
           zoff_gpt_get_layout(m)->n_params, steps, step_s, tokens / step_s, flops, flops / step_s,
           gemm_n, gemm, flops / step_s / gemm, ms.peak, st.loss);
    free(x);
    free(y);
    zoff_trainer_destroy(tr);
    zoff_gpt_destroy(m);
    zoff_dev_close(dev);
    return 0;
}
