/* nvme swapper, functional: random writes and reads of several regions checked against an
 * in-memory model, for every backend (io_uring O_DIRECT, io_uring buffered, pthread), with
 * checksums on and off, striped over three directories with small stripes and blocks so
 * that requests split into many operations; batched submission, polling, registered pool
 * buffers, never-written ranges, region bookkeeping, argument checks and file cleanup.
 * The io_uring cases skip (exit 77 at the end, after the pthread cases passed) when io_uring
 * is refused here. */
#include "nvme/nvme.h"
#include "tests/test_util.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define NREG      4
#define REG_BYTES (512u << 10)

static char g_root[256];
static int g_sqpoll;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static void *aalloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 4096, n)) exit(1);
    return p;
}

/* Runs the random pattern; returns 0, or 77 if this backend is refused here. */
static int run_case(zoff_nvme_backend be, int checksums, zoff_nvme_pool *pool) {
    char dirs[3][300];
    zoff_nvme_config cfg = zoff_nvme_config_default();
    for (int i = 0; i < 3; i++) {
        snprintf(dirs[i], sizeof dirs[i], "%s/d%d", g_root, i);
        mkdir(dirs[i], 0700);
        cfg.dirs[i] = dirs[i];
    }
    cfg.n_dirs = 3;
    cfg.capacity = NREG * REG_BYTES + (1u << 20);
    cfg.stripe_size = 16 << 10;
    cfg.block_size = 8 << 10;
    cfg.queue_depth = 8;
    cfg.checksums = checksums;
    cfg.checksum_block = 16 << 10;
    cfg.backend = be;
    cfg.pool = pool;
    cfg.sqpoll = g_sqpoll;
    zoff_nvme_swap *swap = NULL;
    int rc = zoff_nvme_swap_create(&cfg, &swap);
    if ((rc == -ENOSYS || rc == -EPERM) && be != ZOFF_NVME_BACKEND_PTHREAD) {
        printf("skip: io_uring refused here (%s)\n", zoff_strerror(rc));
        return 77;
    }
    REQUIRE_OK(rc);
    zoff_nvme_swap_info info;
    zoff_nvme_swap_get_info(swap, &info);
    printf("backend %s direct %d fixed_buffers %d sqpoll %d checksums %d\n", info.backend,
           info.direct, info.fixed_buffers, info.sqpoll, checksums);
    CHECK_EQ_INT(count_files(dirs[0]), 2); /* one .dat and one .lock per directory */

    zoff_nvme_region *reg[NREG];
    uint8_t *model[NREG];
    uint8_t *valid[NREG]; /* per 16 KiB unit: written? */
    const size_t unit = 16 << 10, nunits = REG_BYTES / unit;
    for (int r = 0; r < NREG; r++) {
        char name[32];
        snprintf(name, sizeof name, "bucket %d: m", r);
        REQUIRE_OK(zoff_nvme_region_define(swap, name, REG_BYTES - (r == 3 ? 4096 : 0), &reg[r]));
        model[r] = calloc(REG_BYTES, 1);
        valid[r] = calloc(nunits, 1);
    }
    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_ERROR); /* the errors below are expected */
    zoff_nvme_region *dup = NULL;
    CHECK_EQ_INT(zoff_nvme_region_define(swap, "bucket 1: m", 4096, &dup), -EEXIST);
    CHECK_EQ_INT(zoff_nvme_region_define(swap, "huge", (size_t)1 << 30, &dup), -ENOSPC);
    zoff_nvme_region *found = NULL;
    CHECK_OK(zoff_nvme_region_lookup(swap, "bucket 2: m", &found));
    CHECK(found == reg[2]);
    CHECK_EQ_INT(zoff_nvme_region_lookup(swap, "nope", &found), -ENOENT);
    CHECK_EQ_INT(zoff_nvme_region_size(reg[3]), REG_BYTES - 4096);

    /* never written: a distinct error, not garbage */
    uint8_t *buf = pool ? NULL : aalloc(REG_BYTES);
    void *pbuf = NULL;
    if (pool) {
        REQUIRE_OK(zoff_nvme_pool_acquire(pool, &pbuf));
        buf = pbuf;
    }
    zoff_nvme_request *req = NULL;
    REQUIRE_OK(zoff_nvme_submit_read(swap, reg[0], 0, buf, unit, &req));
    CHECK_EQ_INT(zoff_nvme_wait(req), ZOFF_ENOTWRITTEN);
    zoff_nvme_request_free(req);

    /* argument checks come back at once */
    CHECK_EQ_INT(zoff_nvme_submit_read(swap, reg[0], 100, buf, unit, &req), -EINVAL);
    CHECK(req == NULL);
    CHECK_EQ_INT(zoff_nvme_submit_write(swap, reg[0], 0, buf + 8, unit, &req), -EINVAL);
    CHECK_EQ_INT(zoff_nvme_submit_write(swap, reg[0], REG_BYTES - unit, buf, 2 * unit, &req),
                 -EINVAL);
    if (checksums)
        CHECK_EQ_INT(zoff_nvme_submit_write(swap, reg[0], 4096, buf, unit, &req), -EINVAL);
    zoff_test_init();

    int n_unwritten = 1; /* the read above */
    unsigned long long seed = 12345 + (unsigned)be * 7 + (unsigned)checksums;
    for (int it = 0; it < 60; it++) {
        int r = (int)(zoff_test_rand(&seed) % NREG);
        size_t rsize = zoff_nvme_region_size(reg[r]);
        size_t rn = (rsize + unit - 1) / unit;
        size_t u0 = zoff_test_rand(&seed) % rn;
        size_t nu = 1 + zoff_test_rand(&seed) % (rn - u0);
        size_t off = u0 * unit, len = nu * unit;
        if (off + len > rsize) len = rsize - off;
        if (zoff_test_rand(&seed) % 2) {
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)zoff_test_rand(&seed);
            REQUIRE_OK(zoff_nvme_submit_write(swap, reg[r], off, buf, len, &req));
            CHECK_OK(zoff_nvme_wait(req));
            zoff_nvme_request_free(req);
            memcpy(model[r] + off, buf, len);
            memset(valid[r] + u0, 1, nu);
        } else {
            int all = 1;
            for (size_t u = u0; u < u0 + nu; u++)
                all &= valid[r][u];
            memset(buf, 0xee, len);
            REQUIRE_OK(zoff_nvme_submit_read(swap, reg[r], off, buf, len, &req));
            int res = zoff_nvme_wait(req);
            if (all) {
                CHECK_OK(res);
                CHECK(memcmp(buf, model[r] + off, len) == 0);
            } else {
                CHECK_EQ_INT(res, ZOFF_ENOTWRITTEN);
                n_unwritten++;
            }
            zoff_nvme_request_free(req);
        }
    }

    /* batch: write every region whole from separate buffers, read back in one batch */
    uint8_t *bufs[NREG];
    zoff_nvme_io ios[NREG];
    zoff_nvme_request *reqs[NREG];
    for (int r = 0; r < NREG; r++) {
        bufs[r] = aalloc(REG_BYTES);
        size_t sz = zoff_nvme_region_size(reg[r]);
        for (size_t i = 0; i < sz; i++)
            bufs[r][i] = (uint8_t)(i * 7 + (size_t)r);
        memcpy(model[r], bufs[r], sz);
        ios[r] = (zoff_nvme_io){reg[r], 0, bufs[r], sz, 1};
    }
    REQUIRE_OK(zoff_nvme_submit_batch(swap, ios, NREG, reqs));
    int results[NREG];
    CHECK_OK(zoff_nvme_wait_all(reqs, NREG, results));
    for (int r = 0; r < NREG; r++) {
        zoff_nvme_request_free(reqs[r]);
        memset(bufs[r], 0, REG_BYTES);
        ios[r].write = 0;
    }
    REQUIRE_OK(zoff_nvme_submit_batch(swap, ios, NREG, reqs));
    for (int r = 0; r < NREG; r++) { /* poll until done */
        int res = 1;
        while (!zoff_nvme_poll(reqs[r], &res))
            usleep(100);
        CHECK_OK(res);
        CHECK(memcmp(bufs[r], model[r], zoff_nvme_region_size(reg[r])) == 0);
        zoff_nvme_request_free(reqs[r]);
        free(bufs[r]);
    }
    /* with checksums, a write completed by polling alone, one freed unwaited after its
     * transfer had time to end, and writes reaped with wait_any all keep their data and
     * checksums (read back verified) */
    if (checksums) {
        uint8_t *wb = aalloc(REG_BYTES), *rb = aalloc(REG_BYTES);
        size_t sz = zoff_nvme_region_size(reg[1]);
        for (int round = 0; round < 3; round++) {
            for (size_t i = 0; i < sz; i++)
                wb[i] = (uint8_t)(i * 13 + (size_t)round * 101);
            if (round < 2) {
                REQUIRE_OK(zoff_nvme_submit_write(swap, reg[1], 0, wb, sz, &req));
                if (round == 0) {
                    int res = 1;
                    while (!zoff_nvme_poll(req, &res))
                        usleep(100);
                    CHECK_OK(res);
                } else {
                    usleep(300 * 1000);
                }
                zoff_nvme_request_free(req);
            } else {
                zoff_nvme_request *w[4];
                size_t q = sz / 4 / unit * unit;
                for (int k = 0; k < 4; k++) {
                    size_t off = (size_t)k * q, len = k == 3 ? sz - off : q;
                    REQUIRE_OK(zoff_nvme_submit_write(swap, reg[1], off, wb + off, len, &w[k]));
                }
                for (int k = 0; k < 4; k++) {
                    int res = 1, i = zoff_nvme_wait_any(w, 4, &res);
                    CHECK(i >= 0 && i < 4);
                    if (i < 0 || i >= 4) break;
                    CHECK_OK(res);
                    zoff_nvme_request_free(w[i]);
                    w[i] = NULL;
                }
            }
            memcpy(model[1], wb, sz);
            memset(rb, 0, sz);
            REQUIRE_OK(zoff_nvme_submit_read(swap, reg[1], 0, rb, sz, &req));
            CHECK_OK(zoff_nvme_wait(req));
            zoff_nvme_request_free(req);
            CHECK(memcmp(rb, wb, sz) == 0);
        }
        free(wb);
        free(rb);
    }
    /* striping: region 0 starts at logical 0, so its second 16 KiB stripe unit is the first
     * 16 KiB of the second directory's file, and its fourth is the second of the first's */
    for (int d = 0; d < 2; d++) {
        DIR *dd = opendir(dirs[d]);
        struct dirent *e;
        char path[1200] = "";
        while (dd && (e = readdir(dd)))
            if (strstr(e->d_name, ".dat")) snprintf(path, sizeof path, "%s/%s", dirs[d], e->d_name);
        if (dd) closedir(dd);
        FILE *f = fopen(path, "rb");
        CHECK(f != NULL);
        if (!f) continue;
        uint8_t tmpb[16 << 10];
        long foff = d == 1 ? 0 : 16 << 10;
        size_t loff = d == 1 ? 16 << 10 : 48 << 10;
        CHECK(fseek(f, foff, SEEK_SET) == 0 && fread(tmpb, 1, sizeof tmpb, f) == sizeof tmpb);
        CHECK(memcmp(tmpb, model[0] + loff, sizeof tmpb) == 0);
        fclose(f);
    }
    zoff_nvme_swap_get_info(swap, &info);
    CHECK(info.bytes_written >= NREG * (uint64_t)REG_BYTES - 4096);
    CHECK(info.bytes_read >= NREG * (uint64_t)REG_BYTES - 4096);
    CHECK_EQ_INT(info.requests_failed, n_unwritten);

    zoff_nvme_swap_destroy(swap);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(count_files(dirs[i]), 0); /* files removed */
    for (int r = 0; r < NREG; r++) {
        free(model[r]);
        free(valid[r]);
    }
    if (pool)
        CHECK_OK(zoff_nvme_pool_release(pool, pbuf));
    else
        free(buf);
    return 0;
}

int main(void) {
    zoff_test_init();
    const char *tmp = getenv("TMPDIR");
    snprintf(g_root, sizeof g_root, "%s/zoff-test-nvme-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 1;
    }
    /* the checksum is XXH3-64 exactly, whichever vector path computes it */
    for (size_t n = 1; n <= (1u << 20); n *= 7) {
        uint8_t *d = malloc(n);
        for (size_t i = 0; i < n; i++)
            d[i] = (uint8_t)(i * 131 + n);
        CHECK(zoff_nvme_checksum(d, n) == XXH3_64bits(d, n));
        free(d);
    }
    zoff_nvme_backend b;
    CHECK_OK(zoff_nvme_backend_parse("uring-buffered", &b));
    CHECK_EQ_INT(b, ZOFF_NVME_BACKEND_URING_BUFFERED);
    CHECK_EQ_INT(zoff_nvme_backend_parse("fast", &b), -EINVAL);
    CHECK(strcmp(zoff_nvme_backend_name(ZOFF_NVME_BACKEND_PTHREAD), "pthread") == 0);
    int skipped = 0;
    for (int cs = 0; cs < 2; cs++) {
        CHECK_EQ_INT(run_case(ZOFF_NVME_BACKEND_PTHREAD, cs, NULL), 0);
        skipped |= run_case(ZOFF_NVME_BACKEND_URING, cs, NULL) == 77;
        skipped |= run_case(ZOFF_NVME_BACKEND_URING_BUFFERED, cs, NULL) == 77;
    }
    /* registered (fixed) buffers: the pool's buffers are io_uring fixed buffers */
    zoff_nvme_pool_config pc = zoff_nvme_pool_config_default();
    pc.budget = 2 * REG_BYTES;
    pc.buffer_size = REG_BYTES;
    zoff_nvme_pool *pool = NULL;
    REQUIRE_OK(zoff_nvme_pool_create(&pc, &pool));
    skipped |= run_case(ZOFF_NVME_BACKEND_URING, 1, pool) == 77;
    g_sqpoll = 1; /* SQPOLL (falls back to normal submission with a warning if refused) */
    skipped |= run_case(ZOFF_NVME_BACKEND_URING, 1, pool) == 77;
    g_sqpoll = 0;
    CHECK_EQ_INT(run_case(ZOFF_NVME_BACKEND_PTHREAD, 1, pool), 0);
    zoff_nvme_pool_destroy(pool);
    nftw(g_root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    int rc = zoff_test_finish("test_nvme_basic");
    if (rc == 0 && skipped) {
        printf("io_uring cases skipped: io_uring is refused on this machine\n");
        return 77;
    }
    return rc;
}
