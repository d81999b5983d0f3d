/* The offload engine against a non-offloaded reference, on one backend (argv[1]: host, or
 * cuda where a GPU is present, 77 otherwise; argv[2] "quick" for fewer steps), with a toy
 * trainer: the "forward" reads the device weights the engine provides, the "backward"
 * computes a gradient from them on the host and writes it into the engine's buckets. The
 * reference keeps fp32 master weights and moments itself and applies the same fused Adam.
 * Because Adam is elementwise and both sides use the same arithmetic, the weights each step
 * observes must be bitwise identical for every schedule (sync, overlap, DPU against a
 * reference that applies each update one step late), for CPU- and NVMe-held state, with
 * gradient accumulation and with the fp16 overflow skip; with clipping the global norm is
 * summed in another order, so there a tight tolerance applies. It also checks that exactly
 * 4 bytes per parameter cross PCIe per step with 16-bit weights. */
#include "core/half.h"
#include "cpu_adam/cpu_adam.h"
#include "tests/device_test_util.h"
#include "tests/test_util.h"
#include "zoff/engine.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

static const size_t tensor_sizes[] = {1000, 3000, 70000, 5000, 123, 40000, 777};
#define N_TENSORS (sizeof tensor_sizes / sizeof tensor_sizes[0])
#define WARMUP    2

typedef struct test_case {
    const char *name;
    zoff_offload_target target;
    zoff_schedule schedule;
    zoff_dtype dtype, moments;
    int accum;
    float clip;
    int overflow_step; /* fp16: step whose first micro-batch gets an inf; -1 none */
    int steps;
    int skip_updates; /* the engine's measurement mode: every step skipped, weights unchanged */
} test_case;

static zoff_dev_kind backend = ZOFF_DEV_HOST; /* from argv[1] */

/* A device of the backend under test; 0 = the backend's default capacity. */
static zoff_dev *open_dev(size_t capacity) {
    zoff_dev_config dc;
    zoff_dev_config_default(&dc);
    dc.kind = backend;
    dc.capacity = capacity;
    zoff_dev *dev;
    REQUIRE_OK(zoff_dev_open(&dc, &dev));
    return dev;
}

static size_t n_params(void) {
    size_t n = 0;
    for (size_t i = 0; i < N_TENSORS; i++)
        n += tensor_sizes[i];
    return n;
}

static float noise(int step, int micro, size_t i) {
    uint64_t x = ((uint64_t)step * 1315423911u) ^ ((uint64_t)micro * 2654435761u) ^ (i * 40503u);
    x ^= x >> 13;
    x *= 0x9e3779b97f4a7c15ull;
    return (float)((x >> 40) & 0xffff) / 65536.0f * 0.02f - 0.01f;
}

/* The toy loss's gradient at the observed weights, scaled and stored in dtype. */
static void make_grad(const test_case *tc, const void *w, int step, int micro, float scale,
                      void *g) {
    size_t n = n_params();
    for (size_t i = 0; i < n; i++) {
        float target = 0.25f * sinf((float)i * 0.01f);
        float a = 1.0f + (float)(i % 7);
        zoff_store_from_f32(
            g, tc->dtype, i,
            (a * (zoff_load_as_f32(w, tc->dtype, i) - target) + noise(step, micro, i)) * scale);
    }
    if (step == tc->overflow_step && micro == 0) zoff_store_from_f32(g, tc->dtype, 4321, INFINITY);
}

static int required(const test_case *tc, int step) {
    return tc->schedule == ZOFF_SCHEDULE_DPU && step > WARMUP ? step - 1 : step;
}

static float *initial_master(void) {
    size_t n = n_params();
    float *m = malloc(n * sizeof(float));
    unsigned long long rng = 99;
    for (size_t i = 0; i < n; i++)
        m[i] = zoff_test_randf(&rng, -1.0f, 1.0f);
    return m;
}

/* Runs the engine; obs gets the weights each step's forward saw. */
static void run_engine(const test_case *tc, const char *nvme_dir, unsigned char *obs,
                       float *master_out, zoff_engine_step_report *last) {
    size_t n = n_params(), es = zoff_dtype_size(tc->dtype);
    zoff_dev *dev = open_dev(64u << 20);
    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    void *dparams, *w, *g;
    REQUIRE_OK(zoff_dev_malloc(dev, n * es, &dparams));
    REQUIRE_OK(zoff_dev_host_alloc(dev, n * es, &w));
    REQUIRE_OK(zoff_dev_host_alloc(dev, n * es, &g));
    float *master = initial_master();
    for (size_t i = 0; i < n; i++)
        zoff_store_from_f32(w, tc->dtype, i, master[i]);
    REQUIRE_OK(zoff_dev_memcpy(dev, dparams, w, n * es, ZOFF_COPY_H2D));

    zoff_engine_tensor tens[N_TENSORS];
    size_t off = 0;
    for (size_t t = 0; t < N_TENSORS; t++) {
        /* odd tensors are "biases": no weight decay */
        tens[t] = (zoff_engine_tensor){"t", off, tensor_sizes[t], (int)t, (int)(t & 1)};
        off += tensor_sizes[t];
    }
    zoff_engine_config cfg;
    zoff_engine_config_default(&cfg);
    cfg.target = tc->target;
    cfg.schedule = tc->schedule;
    cfg.dpu_warmup_steps = WARMUP;
    cfg.dtype = tc->dtype;
    cfg.moment_dtype = tc->moments;
    cfg.bucket_bytes = 64u << 10;
    cfg.grad_accum_steps = tc->accum;
    cfg.clip_norm = tc->clip;
    cfg.lr = 1e-2f;
    cfg.weight_decay = 0.01f;
    cfg.loss_scale_init = 1024.0f;
    cfg.cpu_threads = 2;
    cfg.skip_updates = tc->skip_updates;
    cfg.nvme_dirs[0] = nvme_dir;
    cfg.n_nvme_dirs = nvme_dir ? 1 : 0;
    zoff_engine *e;
    REQUIRE_OK(zoff_engine_create(dev, &cfg, dparams, n, tens, N_TENSORS, master, &e));
    for (int step = 0; step < tc->steps; step++)
        for (int micro = 0; micro < tc->accum; micro++) {
            for (size_t t = 0; t < N_TENSORS; t++)
                CHECK_OK(zoff_engine_wait_params(e, t, s));
            CHECK_OK(zoff_dev_memcpy_async(s, w, dparams, n * es, ZOFF_COPY_D2H));
            CHECK_OK(zoff_dev_stream_synchronize(s));
            if (micro == 0) memcpy(obs + (size_t)step * n * es, w, n * es);
            float scale = 0;
            CHECK_OK(zoff_engine_loss_scale(e, &scale));
            make_grad(tc, w, step, micro, scale, g);
            for (size_t t = N_TENSORS; t-- > 0;) {
                void *dg;
                CHECK_OK(zoff_engine_grad_buffer(e, t, s, &dg));
                CHECK_OK(zoff_dev_memcpy_async(s, dg, (char *)g + tens[t].offset * es,
                                               tens[t].numel * es, ZOFF_COPY_H2D));
                CHECK_OK(zoff_engine_grad_done(e, t, s));
            }
            CHECK_OK(zoff_engine_end_micro(e, s));
            CHECK_OK(zoff_dev_stream_synchronize(s)); /* g is rewritten next micro-batch */
        }
    CHECK_OK(zoff_engine_get_master(e, s, master_out));
    CHECK_OK(zoff_engine_last_report(e, last));
    /* each step's own report, for the last 8; not for a step not yet ended, nor older ones */
    for (int step = tc->steps > 8 ? tc->steps - 8 : 0; step < tc->steps; step++) {
        zoff_engine_step_report r;
        CHECK_OK(zoff_engine_report_of_step(e, step, &r));
        CHECK_EQ_INT(r.step, step);
    }
    zoff_engine_step_report r;
    CHECK_EQ_INT(zoff_engine_report_of_step(e, tc->steps, &r), -EINVAL);
    if (tc->steps > 8) CHECK_EQ_INT(zoff_engine_report_of_step(e, 0, &r), -ENOENT);
    zoff_engine_destroy(e);
    free(master);
    CHECK_OK(zoff_dev_free(dev, dparams));
    CHECK_OK(zoff_dev_host_free(dev, w));
    CHECK_OK(zoff_dev_host_free(dev, g));
    zoff_dev_close(dev);
}

/* The same training without offload: fp32 master and moments here, updates applied at once,
 * the weights a step sees chosen by the schedule's staleness. */
static void run_reference(const test_case *tc, unsigned char *obs, float *master) {
    size_t n = n_params(), es = zoff_dtype_size(tc->dtype), ms = zoff_dtype_size(tc->moments);
    float *init = initial_master();
    memcpy(master, init, n * sizeof(float));
    free(init);
    void *m = calloc(n, ms), *v = calloc(n, ms), *g = malloc(n * es);
    float *acc = malloc(n * sizeof(float));
    unsigned char *after = malloc((size_t)(tc->steps + 1) * n * es); /* weights after k steps */
    for (size_t i = 0; i < n; i++)
        zoff_store_from_f32(after, tc->dtype, i, master[i]);
    float scale = tc->dtype == ZOFF_F16 ? 1024.0f : 1.0f;
    int64_t applied = 0;
    for (int step = 0; step < tc->steps; step++) {
        const unsigned char *w = after + (size_t)required(tc, step) * n * es;
        memcpy(obs + (size_t)step * n * es, w, n * es);
        int bad = 0;
        for (int micro = 0; micro < tc->accum; micro++) {
            make_grad(tc, w, step, micro, scale, g);
            for (size_t i = 0; i < n; i++) {
                float x = zoff_load_as_f32(g, tc->dtype, i);
                if (!isfinite(x)) bad = 1;
                acc[i] = micro == 0 ? x : acc[i] + x;
            }
        }
        double sq = 0;
        for (size_t i = 0; i < n; i++)
            sq += (double)acc[i] * acc[i];
        double norm = sqrt(sq) / scale, clip = 1.0;
        if (tc->clip > 0 && norm > tc->clip) clip = tc->clip / (norm + 1e-6);
        unsigned char *next = after + (size_t)(step + 1) * n * es;
        if (bad || tc->skip_updates) {
            memcpy(next, after + (size_t)step * n * es, n * es);
            if (bad) scale = fmaxf(scale * 0.5f, 1.0f);
            continue;
        }
        zoff_adam_params ap = zoff_adam_params_default();
        ap.lr = 1e-2f;
        ap.step = ++applied;
        ap.grad_scale = (float)(clip / scale);
        size_t off = 0, gs = tc->accum > 1 ? 4 : es;
        for (size_t t = 0; t < N_TENSORS; off += tensor_sizes[t], t++) {
            ap.weight_decay = (t & 1) ? 0.0f : 0.01f; /* odd tensors: no decay */
            zoff_adam_buffers b = {.n = tensor_sizes[t],
                                   .param = master + off,
                                   .m = (char *)m + off * ms,
                                   .v = (char *)v + off * ms,
                                   .moment_dtype = tc->moments,
                                   .grad = tc->accum > 1 ? (const void *)(acc + off)
                                                         : (const void *)((char *)g + off * gs),
                                   .grad_dtype = tc->accum > 1 ? ZOFF_F32 : tc->dtype,
                                   .param_out = next + off * es,
                                   .out_dtype = tc->dtype};
            CHECK_OK(zoff_adam_step(NULL, &ap, &b));
        }
    }
    free(m);
    free(v);
    free(g);
    free(acc);
    free(after);
}

static void run_case(const test_case *tc, const char *nvme_dir) {
    size_t n = n_params(), es = zoff_dtype_size(tc->dtype);
    unsigned char *obs_e = calloc((size_t)tc->steps, n * es),
                  *obs_r = calloc((size_t)tc->steps, n * es);
    float *me = malloc(n * sizeof(float)), *mr = malloc(n * sizeof(float));
    zoff_engine_step_report rep = {0};
    run_engine(tc, nvme_dir, obs_e, me, &rep);
    run_reference(tc, obs_r, mr);
    int first_bad = -1;
    double worst = 0;
    for (int s = 0; s < tc->steps; s++) {
        size_t o = (size_t)s * n * es;
        if (tc->clip > 0) {
            for (size_t i = 0; i < n; i++) {
                double d = fabs(zoff_load_as_f32(obs_e + o, tc->dtype, i) -
                                zoff_load_as_f32(obs_r + o, tc->dtype, i));
                if (d > worst) worst = d;
            }
        } else if (first_bad < 0 && memcmp(obs_e + o, obs_r + o, n * es) != 0) {
            first_bad = s;
        }
    }
    int master_same = memcmp(me, mr, n * sizeof(float)) == 0;
    printf("%-28s steps %d: weights %s, master %s, last step: norm %.4g scale %g skipped %d, "
           "PCIe %.2f B/param/micro-batch\n",
           tc->name, tc->steps,
           tc->clip > 0    ? (worst < 2e-2 ? "close" : "DIFFER")
           : first_bad < 0 ? "identical"
                           : "DIFFER",
           master_same ? "identical" : "differs", rep.grad_norm, rep.loss_scale, rep.skipped,
           (double)(rep.pcie_d2h_bytes / tc->accum + rep.pcie_h2d_bytes) / (double)n);
    if (first_bad >= 0)
        fprintf(stderr, "%s: weights differ first at step %d\n", tc->name, first_bad);
    CHECK_EQ_INT(first_bad, -1);
    if (tc->clip > 0) {
        CHECK(worst < 2e-2);
        CHECK(rep.clip_coef < 1.0);
    } else {
        CHECK(master_same);
    }
    /* 16-bit: 2 B/param down per micro-batch, 2 B/param up per step */
    CHECK_EQ_INT(rep.pcie_d2h_bytes, (size_t)tc->accum * es * n);
    if (!rep.skipped) CHECK_EQ_INT(rep.pcie_h2d_bytes, es * n);
    if (tc->skip_updates) {
        CHECK_EQ_INT(rep.skipped, 1);
        CHECK_EQ_INT(rep.pcie_h2d_bytes, 0);
        CHECK(rep.cpu_adam_ms == 0.0);
    }
    /* CPU passes: the fused step (gradient; p, m and v read and written; 16-bit weights
     * written); sync and DPU first copy the gradient out of the ring; accumulation casts each
     * micro-batch to fp32, sums it from the second on, and reads the sum for the norm */
    if (!rep.skipped) {
        size_t ms = zoff_dtype_size(tc->moments), gs = tc->accum > 1 ? 4 : es;
        size_t want = n * (gs + 8 + 4 * ms + es), acc = (size_t)tc->accum;
        if (acc > 1)
            want += n * ((es + 4) * acc + 12 * (acc - 1) + 4);
        else if (tc->schedule != ZOFF_SCHEDULE_OVERLAP)
            want += 2 * es * n;
        CHECK_EQ_INT(rep.cpu_pass_bytes, want);
    }
    CHECK_EQ_INT(rep.step, tc->steps - 1);
    free(obs_e);
    free(obs_r);
    free(me);
    free(mr);
}

/* Truncates every swap data file in dir (a disk that lost our data). */
static int truncate_swap_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        size_t len = strlen(de->d_name);
        if (strncmp(de->d_name, "zoff-swap.", 10) || len < 4 ||
            strcmp(de->d_name + len - 4, ".dat"))
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        n += truncate(path, 0) == 0;
    }
    if (d) closedir(d);
    return n;
}

/* NVMe state lost mid-training: the trainer's calls return the error, naming the region,
 * instead of hanging or training on garbage; tear-down is clean. */
static void test_nvme_failure(const char *dir) {
    zoff_dev *dev = open_dev(64u << 20);
    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    size_t n = n_params();
    void *p;
    REQUIRE_OK(zoff_dev_malloc(dev, n * 2, &p));
    CHECK_OK(zoff_dev_memset_async(s, p, 0, n * 2));
    CHECK_OK(zoff_dev_stream_synchronize(s));
    zoff_engine_tensor tens[N_TENSORS];
    size_t off = 0;
    for (size_t t = 0; t < N_TENSORS; t++) {
        tens[t] = (zoff_engine_tensor){"t", off, tensor_sizes[t], (int)t, 0};
        off += tensor_sizes[t];
    }
    zoff_engine_config cfg;
    zoff_engine_config_default(&cfg);
    cfg.target = ZOFF_OFFLOAD_NVME;
    cfg.nvme_dirs[0] = dir;
    cfg.n_nvme_dirs = 1;
    cfg.bucket_bytes = 16u << 10; /* more buckets than staging buffers: state is re-read */
    cfg.cpu_threads = 1;
    zoff_engine *e;
    float *master = initial_master(); /* non-zero state: a hole in the file reads differently */
    REQUIRE_OK(zoff_engine_create(dev, &cfg, p, n, tens, N_TENSORS, master, &e));
    free(master);
    int rc = 0, step;
    for (step = 0; step < 10 && !rc; step++) {
        if (step == 2) CHECK(truncate_swap_files(dir) > 0);
        for (size_t t = 0; t < N_TENSORS && !rc; t++)
            rc = zoff_engine_wait_params(e, t, s);
        for (size_t t = N_TENSORS; t-- > 0 && !rc;) {
            void *g;
            rc = zoff_engine_grad_buffer(e, t, s, &g);
            if (!rc) rc = zoff_engine_grad_done(e, t, s);
        }
        if (!rc) rc = zoff_engine_end_micro(e, s);
        if (!rc) rc = zoff_engine_flush(e, s);
    }
    printf("swap files truncated before step 2: step %d returned %d (%s: %s)\n", step - 1, rc,
           zoff_strerror(rc), zoff_last_error_detail());
    /* EIO past the end of the file, or a checksum mismatch where writes still in flight
     * re-extended it: either way the region is named */
    CHECK(rc == -EIO || rc == ZOFF_ECHECKSUM);
    CHECK(strstr(zoff_last_error_detail(), "region 'b") != NULL);
    zoff_engine_destroy(e);
    CHECK_OK(zoff_dev_free(dev, p));
    CHECK_OK(zoff_dev_stream_destroy(s));
    zoff_dev_close(dev);
}

/* Bad configurations and layouts are refused with ZOFF_ECONFIG naming the field. */
static void test_bad_config(void) {
    zoff_dev *dev = open_dev(64u << 20);
    void *p;
    REQUIRE_OK(zoff_dev_malloc(dev, 4096 * 2, &p));
    zoff_engine_tensor ok[2] = {{"a", 0, 1000, 0, 0}, {"b", 1024, 1000, 1, 0}};
    zoff_engine_tensor overlap[2] = {{"a", 0, 1000, 0, 0}, {"b", 999, 10, 1, 0}};
    zoff_engine_tensor past[1] = {{"big", 0, 5000, 0, 0}};
    zoff_engine_config cfg;
    zoff_engine *e = NULL;
    zoff_engine_config_default(&cfg);
    cfg.schedule = ZOFF_SCHEDULE_OVERLAP;
    cfg.clip_norm = 1.0f;
    CHECK_EQ_INT(zoff_engine_create(dev, &cfg, p, 4096, ok, 2, NULL, &e), ZOFF_ECONFIG);
    CHECK(strstr(zoff_last_error_detail(), "overlap") != NULL);
    zoff_engine_config_default(&cfg);
    cfg.target = ZOFF_OFFLOAD_NVME;
    CHECK_EQ_INT(zoff_engine_create(dev, &cfg, p, 4096, ok, 2, NULL, &e), ZOFF_ECONFIG);
    CHECK(strstr(zoff_last_error_detail(), "nvme_dirs") != NULL);
    zoff_engine_config_default(&cfg);
    cfg.device_slots = 1;
    CHECK_EQ_INT(zoff_engine_create(dev, &cfg, p, 4096, ok, 2, NULL, &e), ZOFF_ECONFIG);
    zoff_engine_config_default(&cfg);
    CHECK_EQ_INT(zoff_engine_create(dev, &cfg, p, 4096, overlap, 2, NULL, &e), ZOFF_ECONFIG);
    CHECK(strstr(zoff_last_error_detail(), "'b'") != NULL);
    CHECK_EQ_INT(zoff_engine_create(dev, &cfg, p, 4096, past, 1, NULL, &e), ZOFF_ECONFIG);
    CHECK(strstr(zoff_last_error_detail(), "'big'") != NULL);
    /* an unusable swap directory fails at creation, naming it */
    cfg.target = ZOFF_OFFLOAD_NVME;
    cfg.nvme_dirs[0] = "/nonexistent/zoff-swap";
    cfg.n_nvme_dirs = 1;
    CHECK(zoff_engine_create(dev, &cfg, p, 4096, ok, 2, NULL, &e) < 0);
    CHECK(strstr(zoff_last_error_detail(), "/nonexistent/zoff-swap") != NULL);
    zoff_engine_config_default(&cfg);
    CHECK(e == NULL);

    /* misuse of the step protocol is reported, not hung on */
    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    CHECK_OK(zoff_dev_memset_async(s, p, 0, 4096 * 2));
    CHECK_OK(zoff_dev_stream_synchronize(s)); /* the engine reads the weights on its own */
    char trace_path[96];                      /* the host and cuda runs may run at once */
    snprintf(trace_path, sizeof trace_path, "/tmp/zoff-test-engine-trace-%s-%d.json",
             zoff_dev_kind_name(backend), (int)getpid());
    cfg.trace_path = trace_path;
    REQUIRE_OK(zoff_engine_create(dev, &cfg, p, 4096, ok, 2, NULL, &e));
    void *g;
    CHECK_EQ_INT(zoff_engine_end_micro(e, s), -EINVAL); /* no gradient done yet */
    CHECK(strstr(zoff_last_error_detail(), "'a'") != NULL);
    CHECK_EQ_INT(zoff_engine_grad_buffer(e, 7, s, &g), -EINVAL);
    for (int step = 0; step < 3; step++) {
        int span = zoff_engine_trace_begin(e, s, "backward");
        for (size_t t = 2; t-- > 0;) {
            CHECK_OK(zoff_engine_wait_params(e, t, s));
            CHECK_OK(zoff_engine_grad_buffer(e, t, s, &g));
            CHECK_OK(zoff_engine_grad_done(e, t, s));
        }
        CHECK_EQ_INT(zoff_engine_grad_done(e, 0, s), -EINVAL); /* twice */
        zoff_engine_trace_end(e, s, span);
        CHECK_OK(zoff_engine_end_micro(e, s));
    }
    CHECK_OK(zoff_engine_set_lr(e, 5e-4f));
    CHECK_EQ_INT(zoff_engine_set_lr(e, NAN), ZOFF_ECONFIG);
    CHECK_OK(zoff_engine_flush(e, s));
    zoff_engine_destroy(e);
    /* the trace is JSON with the pipeline's lanes */
    FILE *f = fopen(cfg.trace_path, "r");
    CHECK(f != NULL);
    if (f) {
        char buf[1 << 16];
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        buf[len] = 0;
        fclose(f);
        CHECK(strstr(buf, "\"traceEvents\"") != NULL);
        CHECK(strstr(buf, "\"d2h b0\"") != NULL);
        CHECK(strstr(buf, "\"h2d b0\"") != NULL);
        CHECK(strstr(buf, "adam b0") != NULL);
        CHECK(strstr(buf, "\"backward\"") != NULL);
        unlink(cfg.trace_path);
    }
    CHECK_OK(zoff_dev_stream_destroy(s));
    CHECK_OK(zoff_dev_free(dev, p));
    zoff_dev_close(dev);
}

int main(int argc, char **argv) {
    /* skips (77) when the backend is not usable here */
    zoff_dev_close(zoff_test_open_device(argc, argv, 64u << 20));
    if (argc > 1) REQUIRE_OK(zoff_dev_kind_parse(argv[1], &backend));
    int quick = argc > 2 && strcmp(argv[2], "quick") == 0; /* for slow sanitizer builds */
    int steps = quick ? 8 : 20;
    char dir[] = "/tmp/zoff-engine-test-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    const test_case cases[] = {
        {"sync bf16 cpu", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_SYNC, ZOFF_BF16, ZOFF_F32, 1, 0, -1,
         steps, 0},
        {"overlap bf16 cpu", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_OVERLAP, ZOFF_BF16, ZOFF_F32, 1, 0, -1,
         steps, 0},
        {"dpu bf16 cpu", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_DPU, ZOFF_BF16, ZOFF_F32, 1, 0, -1, steps,
         0},
        {"sync f32 cpu", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_SYNC, ZOFF_F32, ZOFF_F32, 1, 0, -1, steps,
         0},
        {"sync bf16 nvme", ZOFF_OFFLOAD_NVME, ZOFF_SCHEDULE_SYNC, ZOFF_BF16, ZOFF_F32, 1, 0, -1,
         steps, 0},
        {"dpu bf16 nvme bf16-moments", ZOFF_OFFLOAD_NVME, ZOFF_SCHEDULE_DPU, ZOFF_BF16, ZOFF_BF16,
         1, 0, -1, steps, 0},
        {"overlap bf16 nvme accum3", ZOFF_OFFLOAD_NVME, ZOFF_SCHEDULE_OVERLAP, ZOFF_BF16, ZOFF_F32,
         3, 0, -1, steps, 0},
        {"sync bf16 cpu accum3", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_SYNC, ZOFF_BF16, ZOFF_F32, 3, 0,
         -1, steps, 0},
        {"sync fp16 cpu overflow", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_SYNC, ZOFF_F16, ZOFF_F32, 1, 0,
         3, steps, 0},
        {"dpu fp16 cpu overflow", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_DPU, ZOFF_F16, ZOFF_F32, 1, 0, 4,
         steps, 0},
        {"sync bf16 cpu clip", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_SYNC, ZOFF_BF16, ZOFF_F32, 1, 0.5f,
         -1, steps, 0},
        {"sync bf16 cpu skip-updates", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_SYNC, ZOFF_BF16, ZOFF_F32, 1,
         0, -1, 6, 1},
        {"overlap bf16 cpu skip-updates", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_OVERLAP, ZOFF_BF16,
         ZOFF_F32, 1, 0, -1, 6, 1},
        {"dpu bf16 nvme skip-updates", ZOFF_OFFLOAD_NVME, ZOFF_SCHEDULE_DPU, ZOFF_BF16, ZOFF_F32, 1,
         0, -1, 6, 1},
        {"overlap bf16 cpu accum2 skip-updates", ZOFF_OFFLOAD_CPU, ZOFF_SCHEDULE_OVERLAP, ZOFF_BF16,
         ZOFF_F32, 2, 0, -1, 6, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i], cases[i].target == ZOFF_OFFLOAD_NVME ? dir : NULL);
    test_nvme_failure(dir);
    rmdir(dir);
    test_bad_config();
    return zoff_test_finish("test_offload_engine");
}
