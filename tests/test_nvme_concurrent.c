/* nvme swapper under concurrency (run under TSan): several threads share one swap space,
 * each writing and reading its own regions through buffers from one shared pool (registered
 * as io_uring fixed buffers), with random sizes, batches and polling, checked against each
 * thread's model; one more thread cancels its own requests. Both backends; the io_uring one
 * skips (77) when io_uring is refused. */
#include "nvme/nvme.h"
#include "tests/test_util.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NT       4
#define REG      (256u << 10)
#define NREG_PER 2
#define ITERS    40

static char g_root[256];
static zoff_nvme_swap *g_swap;
static zoff_nvme_pool *g_pool;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

typedef struct {
    int id;
    int failures;
} targ;

static void *worker(void *arg) {
    targ *a = arg;
    zoff_nvme_region *reg[NREG_PER];
    uint8_t *model[NREG_PER];
    uint8_t valid[NREG_PER] = {0};
    for (int r = 0; r < NREG_PER; r++) {
        char name[32];
        snprintf(name, sizeof name, "t%d r%d", a->id, r);
        if (zoff_nvme_region_define(g_swap, name, REG, &reg[r])) {
            a->failures++;
            return NULL;
        }
        model[r] = malloc(REG);
    }
    unsigned long long seed = 777 + (unsigned)a->id;
    for (int it = 0; it < ITERS; it++) {
        void *b1, *b2;
        zoff_nvme_pool_acquire(g_pool, &b1);
        zoff_nvme_pool_acquire(g_pool, &b2);
        int r = (int)(zoff_test_rand(&seed) % NREG_PER);
        uint8_t *p1 = b1, *p2 = b2;
        if (!valid[r] || zoff_test_rand(&seed) % 2) {
            /* write the region as two halves in one batch */
            for (size_t i = 0; i < REG / 2; i++) {
                p1[i] = (uint8_t)zoff_test_rand(&seed);
                p2[i] = (uint8_t)(p1[i] ^ 0x5a);
            }
            zoff_nvme_io ios[2] = {{reg[r], 0, b1, REG / 2, 1}, {reg[r], REG / 2, b2, REG / 2, 1}};
            zoff_nvme_request *q[2];
            if (zoff_nvme_submit_batch(g_swap, ios, 2, q) || zoff_nvme_wait_all(q, 2, NULL))
                a->failures++;
            zoff_nvme_request_free(q[0]);
            zoff_nvme_request_free(q[1]);
            memcpy(model[r], p1, REG / 2);
            memcpy(model[r] + REG / 2, p2, REG / 2);
            valid[r] = 1;
        } else {
            zoff_nvme_request *q1, *q2;
            if (zoff_nvme_submit_read(g_swap, reg[r], 0, b1, REG / 2, &q1) ||
                zoff_nvme_submit_read(g_swap, reg[r], REG / 2, b2, REG / 2, &q2)) {
                a->failures++;
            } else {
                /* wait for either, then poll or wait for the other */
                int res = 1, res2 = 1;
                zoff_nvme_request *both[2] = {q1, q2};
                int first = zoff_nvme_wait_any(both, 2, &res);
                if (first == 0) {
                    while (!zoff_nvme_poll(q2, &res2))
                        sched_yield();
                } else {
                    res2 = zoff_nvme_wait(q1);
                }
                if (first < 0 || res || res2) a->failures++;
                if (memcmp(p1, model[r], REG / 2) || memcmp(p2, model[r] + REG / 2, REG / 2))
                    a->failures++;
                zoff_nvme_request_free(q1);
                zoff_nvme_request_free(q2);
            }
        }
        zoff_nvme_pool_release(g_pool, b1);
        zoff_nvme_pool_release(g_pool, b2);
    }
    for (int r = 0; r < NREG_PER; r++)
        free(model[r]);
    return NULL;
}

static void *canceler(void *arg) {
    targ *a = arg;
    zoff_nvme_region *g;
    if (zoff_nvme_region_define(g_swap, "cancel", REG, &g)) {
        a->failures++;
        return NULL;
    }
    void *b;
    zoff_nvme_pool_acquire(g_pool, &b);
    memset(b, 1, REG / 2);
    for (int it = 0; it < ITERS; it++) {
        zoff_nvme_request *q;
        if (zoff_nvme_submit_write(g_swap, g, 0, b, REG / 2, &q)) {
            a->failures++;
            break;
        }
        if (it % 2) zoff_nvme_cancel(q);
        int rc = zoff_nvme_wait(q);
        if (rc != 0 && rc != ZOFF_ECANCELED) a->failures++;
        zoff_nvme_request_free(q);
    }
    zoff_nvme_pool_release(g_pool, b);
    return NULL;
}

static int run(zoff_nvme_backend be) {
    char d0[300], d1[300];
    snprintf(d0, sizeof d0, "%s/a", g_root);
    snprintf(d1, sizeof d1, "%s/b", g_root);
    mkdir(d0, 0700);
    mkdir(d1, 0700);
    zoff_nvme_config c = zoff_nvme_config_default();
    c.dirs[0] = d0;
    c.dirs[1] = d1;
    c.n_dirs = 2;
    c.capacity = 8 << 20;
    c.stripe_size = 64 << 10;
    c.block_size = 32 << 10;
    c.queue_depth = 16;
    c.checksum_block = 32 << 10;
    c.backend = be;
    c.pool = g_pool;
    int rc = zoff_nvme_swap_create(&c, &g_swap);
    if ((rc == -ENOSYS || rc == -EPERM) && be != ZOFF_NVME_BACKEND_PTHREAD) return 77;
    REQUIRE_OK(rc);
    pthread_t t[NT + 1];
    targ a[NT + 1];
    for (int i = 0; i <= NT; i++) {
        a[i] = (targ){i, 0};
        pthread_create(&t[i], NULL, i < NT ? worker : canceler, &a[i]);
    }
    for (int i = 0; i <= NT; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ_INT(a[i].failures, 0);
    }
    zoff_nvme_swap_info info;
    zoff_nvme_swap_get_info(g_swap, &info);
    printf("%s: %llu bytes written, %llu read\n", info.backend,
           (unsigned long long)info.bytes_written, (unsigned long long)info.bytes_read);
    zoff_nvme_swap_destroy(g_swap);
    return 0;
}

int main(void) {
    zoff_test_init();
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/zoff-test-nvme-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(g_root)) return 1;
    zoff_nvme_pool_config pc = zoff_nvme_pool_config_default();
    pc.buffer_size = REG / 2;
    pc.budget = (2 * NT + 1) * (REG / 2); /* one pair per worker + one: acquires contend */
    REQUIRE_OK(zoff_nvme_pool_create(&pc, &g_pool));
    CHECK_EQ_INT(run(ZOFF_NVME_BACKEND_PTHREAD), 0);
    int skipped = run(ZOFF_NVME_BACKEND_URING) == 77;
    zoff_nvme_pool_stats st;
    zoff_nvme_pool_get_stats(g_pool, &st);
    CHECK_EQ_INT(st.in_use, 0);
    zoff_nvme_pool_destroy(g_pool);
    nftw(g_root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    int rc = zoff_test_finish("test_nvme_concurrent");
    if (rc == 0 && skipped) {
        printf("io_uring case skipped: io_uring is refused on this machine\n");
        return 77;
    }
    return rc;
}
