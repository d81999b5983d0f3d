/* bench_offload: a GPT training step through the offload engine, per schedule and target,
 * against the same model's forward+backward alone measured in the same run (the in-run
 * baseline: what a step would cost if offloading were free).
 *
 * One JSON line per (target, schedule). The baseline and the offloaded run are interleaved:
 * --repeats R rounds of (baseline steps, then a fresh engine's steps), each round giving a
 * median; the line reports the median over the rounds and their spread (min, max) for the
 * step, the baseline and their ratio. Then the same pipeline with every update skipped
 * (step_no_update_ms: gradients still copied down and their norm taken, but no CPU Adam, no
 * weight upload, no optimizer-state I/O) and the exposed time (step - compute) split into what
 * the update adds (exposed_update_ms: step - step_no_update; of it NVMe waits first, then the
 * CPU step) and the rest (exposed_transfer_ms: the pipeline's own copies, norm and waits), the
 * overlap efficiency (1 - exposed_update_ms / (cpu_adam_ms + nvme_wait_ms): how much of the
 * update's work the step hid), the CPU step's share of the step (cpu_step_share:
 * cpu_adam_ms / step_ms), the same Adam step run standalone on the same threads
 * (cpu_adam_standalone_ms, and its ratio to the in-training cpu_adam_ms), the CPU step of a run
 * drained after every step, so that no device kernel runs beside it (cpu_adam_device_idle_ms:
 * on the host backend the device's kernels share the CPU's DRAM and last-level cache with the
 * Adam, which a GPU's do not), and the bytes per
 * parameter on each link: PCIe (counted by the engine), NVMe (counted by the swapper) and CPU DRAM
 * (counted by the engine's CPU passes: the step report's cpu_pass_bytes).
 *
 * On the host backend the device's kernels and the CPU Adam get separate cores
 * (--kernel-threads K, default 1; the Adam pool takes the rest, pinned, keeping K cores free
 * for the kernels, and every device thread, copies included, is bound to those K), so that
 * overlapping the two is physically possible and is what the overlap figures measure
 * (adam_threads 0: all cores but the kernels'). The default model
 * (8 layers, 512 wide, 25 M parameters, batch 1 x 32 tokens) is chosen so that the CPU step is
 * a real share of the step on a small host: few tokens per parameter.
 *
 *   bench_offload [--device host|cuda] [--layers L] [--embd C] [--heads H] [--vocab V]
 *                 [--seq T] [--batch B] [--steps N] [--warmup W] [--dtype bf16|f16|f32]
 *                 [--schedules sync,overlap,dpu] [--targets cpu,nvme] [--nvme-path DIR]
 *                 [--capacity SIZE] [--params none,cpu,nvme] [--prefetch K]
 *                 [--activation-checkpoint 0|1] [--repeats R] [--kernel-threads K]
 *                 [--adam-threads N] [--ranks N] [--trace FILE]
 *
 * --trace FILE: the engine's Chrome/Perfetto trace of each point's last round (the file holds
 * the last point's).
 *
 * --ranks N: data parallelism across N ranks with the optimizer state partitioned (ZeRO-2):
 * bench_offload runs itself under mpirun (one device per rank) and measures what
 * bench_offload_ranks.c describes, instead of the points above.
 *
 * --params: where the 16-bit weights live. none: resident on the device. cpu / nvme: streamed a
 * layer group at a time (prefetch depth K) on a second device whose capacity is the streamed
 * plan (the weights are several times larger than it for a deep model); each such point also
 * gives its step time against the resident point of the same target and schedule (run first)
 * as the exposed fetch time and their ratio, and the fetch bytes per parameter.
 */
#include "bench/bench_offload.h"
#include "core/half.h"
#include "cpu_adam/cpu_adam.h"

#include <errno.h>
#include <unistd.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void bench_die(const char *what, int rc) {
    fprintf(stderr, "bench_offload: %s: %s (%s)\n", what, zoff_strerror(rc),
            zoff_last_error_detail());
    exit(1);
}

static int int_arg(const char *flag, const char *v) {
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x <= 0 || x > 1 << 24) {
        fprintf(stderr, "bench_offload: %s needs a positive integer, got '%s'\n", flag, v);
        exit(2);
    }
    return (int)x;
}

/* The resident point's step time per (target, schedule), for the streamed points after it. */
static double g_resident_ms[2][3];

void bench_random_batch(int32_t *x, int n, int vocab, uint64_t *rng) {
    for (int i = 0; i < n; i++)
        x[i] = (int32_t)(zoff_rng_next(rng) % (uint64_t)vocab);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

spread bench_spread(double *v, int n) {
    double med = bench_median(v, n);
    return (spread){med, v[0], v[n - 1]};
}

/* The baseline's gradient sink: every tensor writes its gradient, in the model's dtype, into
 * one zeroed scratch the size of the largest tensor (the values are thrown away), so the
 * baseline does the very compute of an offloaded step with no full-model gradient buffer. */
typedef struct discard_sink {
    void *buf;
    size_t bytes;
} discard_sink;

static int discard_buffer(void *ctx, int t, zoff_dev_stream *s, void **g) {
    discard_sink *d = ctx;
    (void)t;
    *g = d->buf;
    return zoff_dev_memset_async(s, d->buf, 0, d->bytes);
}

static int discard_done(void *ctx, int t, zoff_dev_stream *s) {
    (void)ctx, (void)t, (void)s;
    return 0;
}

/* The baseline: forward + backward alone, median ms per step, measured right before each
 * point so that both see the same machine. */
static double compute_baseline(zoff_model *m, zoff_dev_stream *s, const opts *o, int32_t *tok,
                               int32_t *tgt) {
    const zoff_layout *l = zoff_model_get_layout(m);
    discard_sink d = {0};
    for (int i = 0; i < l->n_tensors; i++)
        if (l->tensors[i].numel > d.bytes) d.bytes = l->tensors[i].numel;
    d.bytes *= zoff_dtype_size(zoff_model_weight_dtype(m));
    int rc = zoff_dev_malloc(zoff_model_get_dev(m), d.bytes, &d.buf);
    if (rc) bench_die("baseline gradient scratch", rc);
    zoff_grad_sink sink = {zoff_model_weight_dtype(m), discard_buffer, discard_done, &d};
    zoff_model_set_grad_sink(m, &sink);
    double *t = malloc(sizeof(double) * (size_t)o->steps);
    zoff_batch b = {.tokens = tok, .targets = tgt, .B = o->batch, .T = o->seq};
    for (int i = 0; i < o->warmup + o->steps; i++) {
        float loss;
        double t0 = bench_now_ms();
        rc = zoff_model_forward_backward(m, s, &b, 1.0f, &loss);
        if (!rc) rc = zoff_dev_stream_synchronize(s);
        if (rc) bench_die("baseline step", rc);
        if (i >= o->warmup) t[i - o->warmup] = bench_now_ms() - t0;
    }
    zoff_model_set_grad_sink(m, NULL);
    zoff_dev_free(zoff_model_get_dev(m), d.buf);
    double med = bench_median(t, o->steps);
    free(t);
    return med;
}

/* The same CPU Adam step standalone: a pool made as the engine makes its own (same threads,
 * same reserved cores), n parameters with fp32 master and moments, gradients and new weights in
 * dtype. Set up once per point; each round times one step per run after a warm-up (the median
 * ms). Set against the engine's cpu_adam_ms it says how much slower the step runs inside
 * training (sharing memory bandwidth and caches with the device's kernels) than alone. */
typedef struct standalone_adam {
    zoff_adam_pool *pool;
    zoff_adam_buffers b;
    double *t; /* per timed step */
} standalone_adam;

static void standalone_adam_create(standalone_adam *sa, size_t n, const opts *o,
                                   const zoff_engine_config *ec) {
    zoff_adam_pool_config pc = zoff_adam_pool_config_default();
    pc.n_threads = ec->cpu_threads;
    pc.reserve_cores = ec->reserve_cores;
    int rc = zoff_adam_pool_create(&pc, &sa->pool);
    if (rc) bench_die("standalone Adam pool", rc);
    size_t es = zoff_dtype_size(o->dtype);
    float *p = malloc(n * 4), *m = calloc(n, 4), *v = calloc(n, 4);
    void *g = malloc(n * es), *out = calloc(n, es);
    sa->t = malloc(sizeof(double) * (size_t)o->steps);
    if (!p || !m || !v || !g || !out || !sa->t) bench_die("standalone Adam buffers", -ENOMEM);
    /* Weights and gradients written, as training's are: a gradient left from calloc would be
     * the kernel's one shared zero page, read from cache instead of DRAM, which would flatter
     * the standalone step by the gradient's bytes. */
    uint64_t rng = 11;
    for (size_t i = 0; i < n; i++) {
        float u = (float)(zoff_rng_next(&rng) >> 40) / (float)(1 << 24) - 0.5f;
        p[i] = 0.02f * u;
        zoff_store_from_f32(g, o->dtype, i, 1e-3f * u);
    }
    sa->b = (zoff_adam_buffers){.n = n,
                                .param = p,
                                .m = m,
                                .v = v,
                                .moment_dtype = ZOFF_F32,
                                .grad = g,
                                .grad_dtype = o->dtype,
                                .param_out = out,
                                .out_dtype = o->dtype};
}

static double standalone_adam_ms(standalone_adam *sa, const opts *o) {
    zoff_adam_params prm = zoff_adam_params_default();
    prm.weight_decay = 0.01f;
    for (int i = 0; i < o->warmup + o->steps; i++) {
        prm.step = i + 1;
        double t0 = bench_now_ms();
        int rc = zoff_adam_step(sa->pool, &prm, &sa->b);
        if (rc) bench_die("standalone Adam step", rc);
        if (i >= o->warmup) sa->t[i - o->warmup] = bench_now_ms() - t0;
    }
    return bench_median(sa->t, o->steps);
}

static void standalone_adam_destroy(standalone_adam *sa) {
    zoff_adam_pool_destroy(sa->pool);
    free(sa->b.param), free(sa->b.m), free(sa->b.v), free((void *)sa->b.grad);
    free(sa->b.param_out), free(sa->t);
}

/* One round of the offloaded run: a fresh engine, warm-up and timed steps; the median step
 * and the median CPU Adam time, and the per-step averages of the report's byte counters.
 * flush_each: the pipeline drained after every step (only its CPU Adam time is of use). */
typedef struct round_result {
    double step_ms, adam_ms, nvme_ms;
    uint64_t pcie, nvme, fetch, cpu_pass; /* bytes per step */
    zoff_engine_memory mem;
    zoff_device_plan dp;
} round_result;

static void run_round(zoff_model *m, zoff_dev_stream *s, const float *init, const opts *o,
                      const zoff_engine_config *ecfg, int32_t *tok, int32_t *tgt, bool flush_each,
                      round_result *out) {
    zoff_model_offload *off;
    zoff_dev_mem_reset_peak(zoff_model_get_dev(m));
    int rc = zoff_model_offload_create(m, s, ecfg, init, &off);
    if (rc) bench_die("engine create", rc);
    zoff_engine *e = zoff_model_offload_engine(off);
    /* per step: the step's time, and its CPU Adam time (from the reports, which lag) */
    double *times = malloc(sizeof(double) * (size_t)o->steps * 2), *adams = times + o->steps;
    double nvme = 0;
    uint64_t pcie = 0, nr = 0, nw = 0, fetch = 0, cpu = 0;
    int counted = 0;
    int64_t last_counted = o->warmup - 1; /* reports lag the trainer: count each step once */
    for (int i = 0; i <= o->warmup + o->steps; i++) {
        zoff_engine_step_report rep;
        /* after the last step: its report too; flush_each: after every step, so that no
         * device work runs beside the CPU step */
        if (i == o->warmup + o->steps || (flush_each && i > 0)) {
            if ((rc = zoff_engine_flush(e, s))) bench_die("flush", rc);
        }
        if (zoff_engine_last_report(e, &rep) == 0 && rep.step > last_counted) {
            last_counted = rep.step;
            if (counted < o->steps) adams[counted] = rep.cpu_adam_ms;
            nvme += rep.nvme_wait_ms;
            pcie += rep.pcie_d2h_bytes + rep.pcie_h2d_bytes;
            nr += rep.nvme_read_bytes + rep.param_nvme_read_bytes;
            nw += rep.nvme_write_bytes + rep.param_nvme_write_bytes;
            fetch += rep.param_fetch_bytes;
            cpu += rep.cpu_pass_bytes;
            counted++;
        }
        if (i == o->warmup + o->steps) break;
        float loss;
        double t0 = bench_now_ms();
        zoff_batch b = {.tokens = tok, .targets = tgt, .B = o->batch, .T = o->seq};
        rc = zoff_model_offload_micro_batch(off, &b, &loss);
        if (rc) bench_die("offloaded step", rc);
        if (i >= o->warmup) times[i - o->warmup] = bench_now_ms() - t0;
    }
    zoff_engine_get_memory(e, &out->mem);
    zoff_model_memory(m, &out->dp); /* the model's terms as allocated, and the engine's slots */
    out->dp.buckets = out->mem.device_bytes;
    out->dp.weights += out->mem.param_device_bytes; /* streamed: the ring and resident groups */
    zoff_device_plan_sum(&out->dp);
    zoff_model_offload_destroy(off);
    out->step_ms = bench_median(times, o->steps);
    int c = counted ? counted : 1;
    /* the median, as the standalone step's is: a step the machine's other tenants slowed
     * would otherwise weigh on the in-training figure alone */
    out->adam_ms = counted ? bench_median(adams, counted < o->steps ? counted : o->steps) : 0;
    free(times);
    out->nvme_ms = nvme / c;
    out->pcie = pcie / (uint64_t)c;
    out->nvme = (nr + nw) / (uint64_t)c;
    out->fetch = fetch / (uint64_t)c;
    out->cpu_pass = cpu / (uint64_t)c;
}

/* m: the resident model (its compute is the baseline); sm: NULL, or the model with streamed
 * weights (on its own smaller device) that the point trains, from init (fp32 master). */
static void run_point(zoff_model *m, zoff_model *sm, zoff_dev_stream *s, zoff_dev_stream *ss,
                      const float *init, const opts *o, zoff_param_location where,
                      zoff_offload_target target, zoff_schedule sched, int32_t *tok, int32_t *tgt) {
    zoff_model *rm = m; /* the resident model: the baseline's compute */
    zoff_dev_stream *rs = s;
    if (sm) {
        m = sm;
        s = ss;
    }
    zoff_engine_config ec;
    zoff_engine_config_default(&ec);
    ec.target = target;
    ec.schedule = sched;
    ec.dtype = o->dtype;
    ec.lr = 1e-4f;
    ec.cpu_threads = o->adam_threads;
    ec.reserve_cores = o->kernel_threads; /* the host backend's kernels keep their own cores */
    /* slots sized as zoff train sizes them (an eighth of the weights, 1..32 MiB) */
    ec.bucket_bytes = zoff_model_offload_auto_bucket(zoff_model_get_layout(m)->total *
                                                     zoff_dtype_size(zoff_model_weight_dtype(m)));
    if (sched == ZOFF_SCHEDULE_OVERLAP) ec.clip_norm = 0; /* it updates before the norm is known */
    if (target == ZOFF_OFFLOAD_NVME) {
        ec.nvme_dirs[0] = o->nvme_path;
        ec.n_nvme_dirs = 1;
    }
    ec.params = where;
    ec.prefetch_depth = o->prefetch;
    if (where == ZOFF_PARAMS_NVME) {
        ec.nvme_dirs[0] = o->nvme_path;
        ec.n_nvme_dirs = 1;
    }
    /* interleaved rounds, R times: the baseline; the offloaded run; the offloaded run drained
     * after every step (its CPU Adam runs with no device kernel beside it); the CPU Adam alone */
    int R = o->repeats;
    double *st = malloc(sizeof(double) * (size_t)R * 7), *ct = st + R, *rt = ct + R, *ad = rt + R;
    double *ai = ad + R, *al = ai + R, *nu = al + R;
    round_result rr = {0}, acc = {0}, ri;
    standalone_adam alone;
    standalone_adam_create(&alone, (size_t)zoff_model_get_layout(m)->total, o, &ec);
    for (int r = 0; r < R; r++) {
        ct[r] = compute_baseline(rm, rs, o, tok, tgt);
        run_round(m, s, sm ? init : NULL, o, &ec, tok, tgt, true, &ri);
        ai[r] = ri.adam_ms;
        al[r] = standalone_adam_ms(&alone, o);
        ec.skip_updates = 1; /* the pipeline without the update: what the update adds */
        run_round(m, s, sm ? init : NULL, o, &ec, tok, tgt, false, &ri);
        ec.skip_updates = 0;
        nu[r] = ri.step_ms;
        /* the last round of the point traced: each point's file replaces the one before */
        ec.trace_path = r == R - 1 ? o->trace : NULL;
        run_round(m, s, sm ? init : NULL, o, &ec, tok, tgt, false, &rr);
        st[r] = rr.step_ms;
        rt[r] = rr.step_ms / ct[r];
        ad[r] = rr.adam_ms;
        acc.nvme_ms += rr.nvme_ms / R;
        acc.pcie += rr.pcie / (uint64_t)R;
        acc.nvme += rr.nvme / (uint64_t)R;
        acc.fetch += rr.fetch / (uint64_t)R;
        acc.cpu_pass += rr.cpu_pass / (uint64_t)R;
    }
    standalone_adam_destroy(&alone);
    spread sp_step = bench_spread(st, R), sp_comp = bench_spread(ct, R),
           sp_ratio = bench_spread(rt, R);
    spread sp_adam = bench_spread(ad, R), sp_idle = bench_spread(ai, R);
    spread sp_alone = bench_spread(al, R), sp_noup = bench_spread(nu, R);
    free(st);
    double alone_ms = sp_alone.med, idle_ms = sp_idle.med;
    double step = sp_step.med, compute_ms = sp_comp.med, adam = sp_adam.med, nvme = acc.nvme_ms;
    zoff_dev_mem_stats ms;
    zoff_dev_mem_stats_get(zoff_model_get_dev(m), &ms);
    const zoff_device_plan dp = rr.dp;
    const zoff_engine_memory mem = rr.mem;
    double n = (double)zoff_model_get_layout(m)->total;
    /* exposed: what the step costs beyond its compute; of it, what the update adds (the step
     * against the same pipeline with every update skipped), split into NVMe waits and the CPU
     * step; the rest is the pipeline's own work (gradient copies and norm, transfer waits) */
    double exposed = fmax(0.0, step - compute_ms);
    double ex_update = fmin(exposed, fmax(0.0, step - sp_noup.med));
    double ex_nvme = fmin(ex_update, nvme), ex_cpu = ex_update - ex_nvme;
    double ex_xfer = exposed - ex_update;
    /* how much of the update's work (the CPU step and its NVMe waits) the step hid */
    double eff = adam + nvme > 0 ? 1.0 - ex_update / (adam + nvme) : 1.0;
    eff = fmax(0.0, fmin(1.0, eff));
    int ti = target == ZOFF_OFFLOAD_NVME, si = (int)sched;
    if (where == ZOFF_PARAMS_DEVICE) g_resident_ms[ti][si] = step;
    double res_ms = g_resident_ms[ti][si];
    char streamed[512] = "";
    if (where != ZOFF_PARAMS_DEVICE && res_ms > 0)
        snprintf(streamed, sizeof streamed,
                 ",\"resident_step_ms\":%.3f,\"exposed_fetch_ms\":%.3f,"
                 "\"slowdown_vs_resident\":%.3f,\"weights_over_capacity\":%.2f",
                 res_ms, step - res_ms, step / res_ms,
                 n * zoff_dtype_size(o->dtype) / (double)ms.capacity);
    else if (where != ZOFF_PARAMS_DEVICE) /* no resident point ran (--params without none) */
        snprintf(streamed, sizeof streamed,
                 ",\"resident_step_ms\":null,\"exposed_fetch_ms\":null,"
                 "\"slowdown_vs_resident\":null,\"weights_over_capacity\":%.2f",
                 n * zoff_dtype_size(o->dtype) / (double)ms.capacity);
    const zoff_gpt_config *c = zoff_gpt_get_config(m);
    printf("{\"bench\":\"offload\",\"device\":\"%s\",\"model\":{\"n_layer\":%d,\"n_embd\":%d,"
           "\"n_head\":%d,\"vocab\":%d},\"batch\":%d,\"seq\":%d,\"params\":%.0f,"
           "\"weights_location\":\"%s\",\"prefetch\":%d,\"device_capacity\":%zu,"
           "\"target\":\"%s\",\"schedule\":\"%s\",\"dtype\":\"%s\",\"steps\":%d,\"repeats\":%d,"
           "\"kernel_threads\":%d,\"adam_threads\":%d,"
           "\"step_ms\":%.3f,\"step_ms_min\":%.3f,\"step_ms_max\":%.3f,"
           "\"compute_ms\":%.3f,\"compute_ms_min\":%.3f,\"compute_ms_max\":%.3f,"
           "\"step_no_update_ms\":%.3f,\"step_no_update_ms_min\":%.3f,"
           "\"step_no_update_ms_max\":%.3f,\"exposed_ms\":%.3f,\"exposed_update_ms\":%.3f,"
           "\"exposed_nvme_ms\":%.3f,"
           "\"exposed_cpu_step_ms\":%.3f,\"exposed_transfer_ms\":%.3f,\"cpu_adam_ms\":%.3f,"
           "\"cpu_adam_ms_min\":%.3f,\"cpu_adam_ms_max\":%.3f,\"cpu_adam_standalone_ms\":%.3f,"
           "\"cpu_adam_standalone_ms_min\":%.3f,\"cpu_adam_standalone_ms_max\":%.3f,"
           "\"cpu_adam_standalone_over_in_training\":%.3f,\"cpu_adam_device_idle_ms\":%.3f,"
           "\"cpu_adam_device_idle_ms_min\":%.3f,\"cpu_adam_device_idle_ms_max\":%.3f,"
           "\"cpu_adam_standalone_over_device_idle\":%.3f,\"cpu_step_share\":%.3f,"
           "\"nvme_wait_ms\":%.3f,\"overlap_efficiency\":%.3f,\"slowdown_vs_compute\":%.3f,"
           "\"slowdown_vs_compute_min\":%.3f,\"slowdown_vs_compute_max\":%.3f,"
           "\"pcie_bytes_per_param\":%.3f,\"nvme_bytes_per_param\":%.3f,"
           "\"cpu_dram_bytes_per_param\":%.3f,\"pinned_bytes\":%zu,\"engine_device_bytes\":%zu,"
           "\"device_peak_bytes\":%zu,\"device_bytes_per_param_peak\":%.3f,"
           "\"device_bytes_per_param\":{\"weights\":%.3f,\"buckets\":%.3f,\"activations\":%.3f,"
           "\"workspace\":%.3f,\"total\":%.3f,\"without_activations\":%.3f},"
           "\"fetch_bytes_per_param\":%.3f%s}\n",
           zoff_dev_name(zoff_model_get_dev(m)), c->n_layer, c->n_embd, c->n_head, c->vocab_size,
           o->batch, o->seq, n, zoff_param_location_name(where),
           where == ZOFF_PARAMS_DEVICE ? 0 : o->prefetch, ms.capacity,
           zoff_offload_target_name(target), zoff_schedule_name(sched), zoff_dtype_name(o->dtype),
           o->steps, R, o->kernel_threads, o->adam_threads, step, sp_step.min, sp_step.max,
           compute_ms, sp_comp.min, sp_comp.max, sp_noup.med, sp_noup.min, sp_noup.max, exposed,
           ex_update, ex_nvme, ex_cpu, ex_xfer, adam, sp_adam.min, sp_adam.max, alone_ms,
           sp_alone.min, sp_alone.max, adam > 0 ? alone_ms / adam : 0.0, idle_ms, sp_idle.min,
           sp_idle.max, idle_ms > 0 ? alone_ms / idle_ms : 0.0, step > 0 ? adam / step : 0.0, nvme,
           eff, sp_ratio.med, sp_ratio.min, sp_ratio.max, (double)acc.pcie / n,
           (double)acc.nvme / n, (double)acc.cpu_pass / n, mem.pinned_bytes, mem.device_bytes,
           ms.peak, ms.peak / n, dp.weights / n, dp.buckets / n, dp.activations / n,
           dp.workspace / n, dp.total / n, (dp.total - dp.activations) / n, (double)acc.fetch / n,
           streamed);
    fflush(stdout);
}

/* --ranks N outside an mpirun job: runs this very command under mpirun with N ranks (and
 * does not return); inside one, returns. */
static void relaunch_under_mpirun(int argc, char **argv, int ranks) {
#ifndef ZOFF_MPIEXEC
    (void)argc, (void)argv, (void)ranks;
    fprintf(stderr, "bench_offload: --ranks needs a zoff built with MPI (install libopenmpi-dev "
                    "and openmpi-bin, then reconfigure)\n");
    exit(2);
#else
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK")) return;
    char np[16];
    snprintf(np, sizeof np, "%d", ranks);
    const char **av = calloc((size_t)argc + 10, sizeof *av);
    int k = 0;
    av[k++] = ZOFF_MPIEXEC;
    if (geteuid() == 0) av[k++] = "--allow-run-as-root";
    av[k++] = "--oversubscribe";
    av[k++] = "--bind-to";
    av[k++] = "none";
    av[k++] = "-np";
    av[k++] = np;
    for (int i = 0; i < argc; i++)
        av[k++] = argv[i];
    fflush(stdout);
    execv(ZOFF_MPIEXEC, (char *const *)av);
    fprintf(stderr, "bench_offload: --ranks: cannot run %s: %s\n", ZOFF_MPIEXEC, strerror(errno));
    exit(1);
#endif
}

int main(int argc, char **argv) {
    opts o = {.device = "auto",
              .nvme_path = "/tmp",
              .schedules = "sync,overlap,dpu",
              .targets = "cpu,nvme",
              .batch = 4,
              .seq = 64,
              .steps = 5,
              .warmup = 2,
              .dtype = ZOFF_BF16,
              .params = "none",
              .prefetch = 2,
              .repeats = 3,
              .kernel_threads = -1};
    zoff_gpt_config_default(&o.cfg);
    o.cfg.n_layer = 8;
    o.cfg.n_embd = 512;
    o.cfg.n_head = 8;
    o.batch = 1;
    o.seq = 32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_offload: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--device"))
            o.device = v;
        else if (!strcmp(a, "--nvme-path"))
            o.nvme_path = v;
        else if (!strcmp(a, "--schedules"))
            o.schedules = v;
        else if (!strcmp(a, "--targets"))
            o.targets = v;
        else if (!strcmp(a, "--params"))
            o.params = v;
        else if (!strcmp(a, "--trace"))
            o.trace = v;
        else if (!strcmp(a, "--prefetch"))
            o.prefetch = int_arg(a, v);
        else if (!strcmp(a, "--repeats"))
            o.repeats = int_arg(a, v);
        else if (!strcmp(a, "--kernel-threads"))
            o.kernel_threads = int_arg(a, v);
        else if (!strcmp(a, "--ranks"))
            o.ranks = int_arg(a, v);
        else if (!strcmp(a, "--adam-threads"))
            o.adam_threads = int_arg(a, v);
        else if (!strcmp(a, "--activation-checkpoint"))
            o.ckpt = !strcmp(v, "1") || !strcmp(v, "on");
        else if (!strcmp(a, "--layers"))
            o.cfg.n_layer = int_arg(a, v);
        else if (!strcmp(a, "--embd"))
            o.cfg.n_embd = int_arg(a, v);
        else if (!strcmp(a, "--heads"))
            o.cfg.n_head = int_arg(a, v);
        else if (!strcmp(a, "--vocab"))
            o.cfg.vocab_size = int_arg(a, v);
        else if (!strcmp(a, "--seq"))
            o.seq = o.cfg.seq_len = int_arg(a, v);
        else if (!strcmp(a, "--batch"))
            o.batch = int_arg(a, v);
        else if (!strcmp(a, "--steps"))
            o.steps = int_arg(a, v);
        else if (!strcmp(a, "--warmup"))
            o.warmup = int_arg(a, v);
        else if (!strcmp(a, "--capacity")) {
            if (zoff_parse_size(v, &o.capacity)) {
                fprintf(stderr, "bench_offload: --capacity needs a size like 8GiB\n");
                return 2;
            }
        } else if (!strcmp(a, "--dtype")) {
            if (zoff_dtype_parse(v, &o.dtype)) {
                fprintf(stderr, "bench_offload: --dtype must be bf16, f16 or f32\n");
                return 2;
            }
        } else {
            fprintf(stderr, "bench_offload: unknown option %s\n", a);
            return 2;
        }
    }
    zoff_log_set_callback(zoff_log_to_stderr, NULL, ZOFF_LOG_WARN);
    zoff_dist *dist = NULL;
    if (o.ranks > 1) {
        relaunch_under_mpirun(argc, argv, o.ranks); /* returns in the ranks of the job */
        int rc = zoff_dist_init(NULL, &dist);
        if (rc) bench_die("joining the ranks", rc);
        if (zoff_dist_size(dist) != o.ranks) {
            fprintf(stderr, "bench_offload: --ranks %d but the job has %d ranks\n", o.ranks,
                    zoff_dist_size(dist));
            return 2;
        }
        /* the node's cores shared among the ranks: per rank the kernels' one and the rest for
         * its Adam pool */
        long cores = sysconf(_SC_NPROCESSORS_ONLN) / o.ranks;
        if (o.adam_threads == 0) o.adam_threads = cores > 1 ? (int)cores - 1 : 1;
    }
    zoff_dev_config dc;
    zoff_dev_config_default(&dc);
    if (zoff_dev_kind_parse(o.device, &dc.kind)) {
        fprintf(stderr, "bench_offload: --device must be auto, host or cuda\n");
        return 2;
    }
    /* host: an arena large enough for GPT-2 124M; cuda: the GPU's free memory */
    dc.capacity = o.capacity ? o.capacity : dc.kind == ZOFF_DEV_HOST ? (size_t)8 << 30 : 0;
    /* host: the kernels on their own cores (default 1), the Adam pool on the rest */
    if (o.kernel_threads < 0) o.kernel_threads = dc.kind == ZOFF_DEV_CUDA ? 0 : 1;
    dc.host_kernel_threads = o.kernel_threads;
    /* one process: the device's threads (kernels and copies) on the kernel cores, none on the
     * Adam pool's (ranks share the machine's first cores, so they stay unbound) */
    dc.host_bind_kernel_cores = !o.ranks || o.ranks == 1;
    if (dist && dc.kind != ZOFF_DEV_HOST) dc.cuda_ordinal = zoff_dist_local_rank(dist);
    zoff_dev *dev;
    int rc = zoff_dev_open(&dc, &dev);
    if (rc) bench_die("device", rc);
    if ((rc = zoff_gpt_config_validate(&o.cfg))) bench_die("model config", rc);
    zoff_model_options mo;
    zoff_model_options_default(&mo);
    mo.batch = o.batch;
    mo.seq_len = o.seq;
    mo.matmul_dtype = o.dtype == ZOFF_F32 ? ZOFF_F32 : o.dtype;
    mo.activation_checkpoint = o.ckpt;
    zoff_model *m;
    if ((rc = zoff_gpt_create(dev, &o.cfg, &mo, &m))) bench_die("model", rc);
    if ((rc = zoff_model_init_params(m, 1))) bench_die("init", rc);
    zoff_dev_stream *s;
    if ((rc = zoff_dev_stream_create(dev, &s))) bench_die("stream", rc);
    if (dist) {
#ifdef ZOFF_MPIEXEC
        bench_offload_ranks(&o, dist, m, s);
#endif
        zoff_dev_stream_destroy(s);
        zoff_model_destroy(m);
        zoff_dev_close(dev);
        zoff_dist_finalize(dist);
        return 0;
    }
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)o.batch * o.seq);
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)o.batch * o.seq);
    uint64_t rng = 7;
    bench_random_batch(tok, o.batch * o.seq, o.cfg.vocab_size, &rng);
    bench_random_batch(tgt, o.batch * o.seq, o.cfg.vocab_size, &rng);
    /* streamed weights: the same model without device weights, on a device of the streamed
     * plan's size */
    zoff_dev *sdev = NULL;
    zoff_model *sm = NULL;
    zoff_dev_stream *ss = NULL;
    float *init = NULL;
    if (strstr(o.params, "cpu") || strstr(o.params, "nvme")) {
        zoff_model_options so = mo;
        so.stream_weights = true;
        zoff_device_plan p;
        zoff_engine_config pc;
        zoff_engine_config_default(&pc);
        pc.params = ZOFF_PARAMS_CPU;
        pc.prefetch_depth = o.prefetch;
        const zoff_layout *L = zoff_model_get_layout(m);
        if ((rc = zoff_gpt_plan(&o.cfg, &so, &p))) bench_die("streamed plan", rc);
        if ((rc = zoff_model_offload_plan(L, o.dtype, &pc, &p))) bench_die("streamed plan", rc);
        zoff_dev_config sc = dc;
        sc.capacity = p.total + ((size_t)1 << 20); /* and backend scratch */
        if ((rc = zoff_dev_open(&sc, &sdev))) bench_die("streamed device", rc);
        if ((rc = zoff_gpt_create(sdev, &o.cfg, &so, &sm))) bench_die("streamed model", rc);
        if ((rc = zoff_dev_stream_create(sdev, &ss))) bench_die("stream", rc);
        if (!(init = malloc(L->total * sizeof(float)))) bench_die("init", -ENOMEM);
        if ((rc = zoff_model_init_host(m, 1, init))) bench_die("init", rc);
    }
    static const zoff_offload_target targets[] = {ZOFF_OFFLOAD_CPU, ZOFF_OFFLOAD_NVME};
    static const zoff_param_location wheres[] = {ZOFF_PARAMS_DEVICE, ZOFF_PARAMS_CPU,
                                                 ZOFF_PARAMS_NVME};
    for (int ti = 0; ti < 2; ti++) {
        if (!strstr(o.targets, zoff_offload_target_name(targets[ti]))) continue;
        for (int si = 0; si <= ZOFF_SCHEDULE_DPU; si++) {
            zoff_schedule sched = (zoff_schedule)si;
            if (!strstr(o.schedules, zoff_schedule_name(sched))) continue;
            for (int wi = 0; wi < 3; wi++) {
                if (!strstr(o.params, zoff_param_location_name(wheres[wi]))) continue;
                bool streamed = wheres[wi] != ZOFF_PARAMS_DEVICE;
                run_point(m, streamed ? sm : NULL, s, ss, init, &o, wheres[wi], targets[ti], sched,
                          tok, tgt);
            }
        }
    }
    free(init);
    if (ss) zoff_dev_stream_destroy(ss);
    zoff_model_destroy(sm);
    if (sdev) zoff_dev_close(sdev);
    free(tok);
    free(tgt);
    zoff_dev_stream_destroy(s);
    zoff_model_destroy(m);
    zoff_dev_close(dev);
    return 0;
}
