/* cpu_adam thread pool (label "concurrent", run under TSan): every worker runs each task exactly
 * once; step, sum of squares and casts are bitwise identical for 1..5 threads; reserve_cores
 * and pinning; one pool shared by two calling threads; first touch; create/destroy cycles. */
#include "cpu_adam/cpu_adam.h"
#include "tests/test_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

static unsigned long long rng = 4242;

typedef struct count_task {
    atomic_int runs[16];
    atomic_int bad_n;
    int expect_n;
} count_task;

static void count_run(void *p, int tid, int n_threads) {
    count_task *t = p;
    if (n_threads != t->expect_n) atomic_fetch_add(&t->bad_n, 1);
    atomic_fetch_add(&t->runs[tid], 1);
}

static void test_run_once(void) {
    for (int n = 1; n <= 4; n++) {
        zoff_adam_pool_config cfg = zoff_adam_pool_config_default();
        cfg.n_threads = n;
        zoff_adam_pool *pool;
        REQUIRE_OK(zoff_adam_pool_create(&cfg, &pool));
        CHECK_EQ_INT(zoff_adam_pool_threads(pool), n);
        count_task t;
        memset(&t, 0, sizeof(t));
        t.expect_n = n;
        for (int call = 0; call < 200; call++)
            CHECK_OK(zoff_adam_pool_run(pool, count_run, &t));
        for (int i = 0; i < n; i++)
            CHECK_EQ_INT(atomic_load(&t.runs[i]), 200);
        CHECK_EQ_INT(atomic_load(&t.bad_n), 0);
        zoff_adam_pool_destroy(pool);
    }
}

static void test_partition(void) {
    static const size_t sizes[] = {0, 1, ZOFF_ADAM_CHUNK, 3 * ZOFF_ADAM_CHUNK + 1, 1000000};
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
        for (int T = 1; T <= 7; T++) {
            size_t next = 0;
            for (int t = 0; t < T; t++) {
                size_t b, e;
                zoff_adam_partition(sizes[si], t, T, &b, &e);
                CHECK(b == next && e >= b && (b % ZOFF_ADAM_CHUNK == 0 || b == sizes[si]));
                next = e;
            }
            CHECK(next == sizes[si]);
        }
}

/* Same inputs through pools of 1..5 threads: outputs bitwise equal (weights, moments, 16-bit
 * output, sum of squares, casts), for the given ISA and moment dtype. */
static void test_thread_independence(zoff_adam_isa isa, zoff_dtype md) {
    size_t n = 7 * ZOFF_ADAM_CHUNK + 333, ms = md == ZOFF_F32 ? 4 : 2;
    float *p0 = malloc(n * 4), *m0 = malloc(n * 4), *v0 = malloc(n * 4);
    uint16_t *g = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        p0[i] = zoff_test_randf(&rng, -1, 1);
        m0[i] = zoff_test_randf(&rng, -0.01f, 0.01f);
        v0[i] = zoff_test_randf(&rng, 0, 1e-4f);
        g[i] = (uint16_t)(0x3c00 ^ (zoff_test_rand(&rng) & 0x83ff)); /* f16 in (-2, 2) */
    }
    float *p = malloc(n * 4);
    unsigned char *m = malloc(n * ms), *v = malloc(n * ms);
    uint16_t *out = malloc(n * 2), *bf = malloc(n * 2);
    unsigned char *ref = malloc(n * (4 + 2 * ms + 2 + 2));
    double ref_ss = 0;
    for (int T = 1; T <= 5; T++) {
        zoff_adam_pool_config cfg = zoff_adam_pool_config_default();
        cfg.n_threads = T;
        cfg.isa = isa;
        zoff_adam_pool *pool;
        REQUIRE_OK(zoff_adam_pool_create(&cfg, &pool));
        memcpy(p, p0, n * 4);
        CHECK_OK(zoff_adam_cast(NULL, m0, ZOFF_F32, m, md, n));
        CHECK_OK(zoff_adam_cast(NULL, v0, ZOFF_F32, v, md, n));
        zoff_adam_buffers b = {.n = n,
                               .param = p,
                               .m = m,
                               .v = v,
                               .moment_dtype = md,
                               .grad = g,
                               .grad_dtype = ZOFF_F16,
                               .param_out = out,
                               .out_dtype = ZOFF_F16};
        zoff_adam_params prm = zoff_adam_params_default();
        prm.weight_decay = 0.01f;
        for (int s = 1; s <= 2; s++) {
            prm.step = s;
            CHECK_OK(zoff_adam_step(pool, &prm, &b));
        }
        double ss;
        CHECK_OK(zoff_adam_sumsq(pool, g, ZOFF_F16, n, &ss));
        CHECK_OK(zoff_adam_cast(pool, p, ZOFF_F32, bf, ZOFF_BF16, n));
        unsigned char *r = ref;
        const void *parts[5] = {p, m, v, out, bf};
        size_t sizes[5] = {n * 4, n * ms, n * ms, n * 2, n * 2};
        for (int k = 0; k < 5; k++) {
            if (T == 1)
                memcpy(r, parts[k], sizes[k]);
            else if (memcmp(r, parts[k], sizes[k]) != 0) {
                fprintf(stderr, "%s %s: buffer %d differs with %d threads\n",
                        zoff_adam_isa_name(isa), zoff_dtype_name(md), k, T);
                zoff_test_failures++;
            }
            r += sizes[k];
        }
        if (T == 1)
            ref_ss = ss;
        else
            CHECK(memcmp(&ref_ss, &ss, sizeof(double)) == 0);
        zoff_adam_pool_destroy(pool);
    }
    free(p0), free(m0), free(v0), free(g), free(p), free(m), free(v), free(out), free(bf);
    free(ref);
}

static void test_reserve(void) {
    zoff_adam_pool_config cfg = zoff_adam_pool_config_default();
    zoff_adam_pool *pool;
    REQUIRE_OK(zoff_adam_pool_create(&cfg, &pool));
    int cores = zoff_adam_pool_threads(pool); /* one worker per core by default */
    CHECK(cores >= 1);
    for (int t = 0; t < cores; t++)
        CHECK_EQ_INT(zoff_adam_pool_core(pool, t), t);
    zoff_adam_pool_destroy(pool);

    cfg.reserve_cores = cores;
    pool = NULL;
    CHECK(zoff_adam_pool_create(&cfg, &pool) == ZOFF_ECONFIG && pool == NULL);
    if (cores >= 2) {
        cfg.reserve_cores = cores - 1;
        REQUIRE_OK(zoff_adam_pool_create(&cfg, &pool));
        CHECK_EQ_INT(zoff_adam_pool_threads(pool), 1);
        CHECK_EQ_INT(zoff_adam_pool_core(pool, 0), cores - 1);
        zoff_adam_pool_destroy(pool);
    }
    cfg = zoff_adam_pool_config_default();
    cfg.pin = 0;
    cfg.n_threads = 2;
    REQUIRE_OK(zoff_adam_pool_create(&cfg, &pool));
    CHECK_EQ_INT(zoff_adam_pool_core(pool, 0), -1);
    zoff_adam_pool_destroy(pool);
    cfg.n_threads = -1;
    CHECK(zoff_adam_pool_create(&cfg, &pool) == ZOFF_ECONFIG);
    cfg.n_threads = 1;
    cfg.reserve_cores = -2;
    CHECK(zoff_adam_pool_create(&cfg, &pool) == ZOFF_ECONFIG);
    printf("  %d cores; reserve_cores checked\n", cores);
}

typedef struct caller_arg {
    zoff_adam_pool *pool;
    float *x;
    size_t n;
    double result;
    int rc;
} caller_arg;

static void *caller_main(void *p) {
    caller_arg *a = p;
    for (int i = 0; i < 50 && a->rc == 0; i++)
        a->rc = zoff_adam_sumsq(a->pool, a->x, ZOFF_F32, a->n, &a->result);
    return NULL;
}

/* Two threads using one pool at once: calls are serialized, results right. */
static void test_shared_pool(void) {
    zoff_adam_pool_config cfg = zoff_adam_pool_config_default();
    cfg.n_threads = 2;
    zoff_adam_pool *pool;
    REQUIRE_OK(zoff_adam_pool_create(&cfg, &pool));
    size_t n = 3 * ZOFF_ADAM_CHUNK;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        x[i] = 1.0f, y[i] = 2.0f;
    caller_arg a = {pool, x, n, 0, 0}, b = {pool, y, n, 0, 0};
    pthread_t ta, tb;
    CHECK(pthread_create(&ta, NULL, caller_main, &a) == 0);
    CHECK(pthread_create(&tb, NULL, caller_main, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK_OK(a.rc);
    CHECK_OK(b.rc);
    CHECK(a.result == (double)n && b.result == 4.0 * (double)n);
    free(x);
    free(y);
    zoff_adam_pool_destroy(pool);
}

static void test_first_touch(void) {
    zoff_adam_pool_config cfg = zoff_adam_pool_config_default();
    cfg.n_threads = 2;
    zoff_adam_pool *pool;
    REQUIRE_OK(zoff_adam_pool_create(&cfg, &pool));
    size_t n = 5 * ZOFF_ADAM_CHUNK + 9;
    uint16_t *buf = malloc(n * 2);
    memset(buf, 0xff, n * 2);
    CHECK_OK(zoff_adam_first_touch(pool, buf, n, 2));
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++)
        nonzero += buf[i] != 0;
    CHECK_EQ_INT(nonzero, 0);
    CHECK(zoff_adam_first_touch(pool, NULL, n, 2) == -EINVAL);
    free(buf);
    zoff_adam_pool_destroy(pool);
}

int main(void) {
    zoff_test_init();
    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_ERROR); /* config errors are expected */
    test_partition();
    test_run_once();
    test_thread_independence(ZOFF_ADAM_ISA_SCALAR, ZOFF_F32);
    test_thread_independence(ZOFF_ADAM_ISA_AUTO, ZOFF_F32);
    test_thread_independence(ZOFF_ADAM_ISA_AUTO, ZOFF_BF16);
    test_reserve();
    test_shared_pool();
    test_first_touch();
    for (int i = 0; i < 20; i++) { /* create/destroy cycles, including never-used pools */
        zoff_adam_pool_config cfg = zoff_adam_pool_config_default();
        cfg.n_threads = 1 + i % 3;
        zoff_adam_pool *pool;
        REQUIRE_OK(zoff_adam_pool_create(&cfg, &pool));
        zoff_adam_pool_destroy(pool);
    }
    return zoff_test_finish("test_cpu_adam_pool");
}
