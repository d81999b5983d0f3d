/* Optimizer state of the offload engine: fp32 master weights and Adam moments per bucket,
 * of this rank's block of each bucket only (the whole bucket in a single process).
 *
 * CPU target: three flat arrays over all parameters, placed by first touch from the
 * cpu_adam pool's workers (NUMA-aware), handed out in place.
 * NVMe target: three swap regions per bucket ("b<i>.p", "b<i>.m", "b<i>.v") and a few
 * staging buffers in huge pages (zoff_nvme_huge_alloc), each holding one bucket's p, m, v. A
 * buffer is FREE, READING (a read is in flight), READY (loaded or being updated), or WRITING
 * (write-back in flight). With three buffers the worker updates one bucket while the next is
 * read ahead and the previous is written back. Only the CPU worker thread calls into the store.
 */
#include "core/log.h"
#include "offload/engine_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_STAGES 3

typedef enum { STAGE_FREE, STAGE_READING, STAGE_READY, STAGE_WRITING } stage_state;

typedef struct stage {
    stage_state state;
    size_t bucket;
    void *buf[3];              /* p, m, v: 2 MiB-aligned, huge pages */
    zoff_nvme_request *req[3]; /* reads or writes in flight */
} stage;

struct state_store {
    zoff_engine *e;
    size_t msize; /* bytes per moment element */
    /* CPU target */
    float *master;
    void *m, *v;
    /* NVMe target */
    zoff_nvme_region **regions; /* (n_buckets, 3) */
    stage stages[N_STAGES];
    size_t stage_bytes[3];
    uint64_t bytes_read, bytes_written;
    double wait_ms;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static size_t round_up(size_t x, size_t a) {
    return (x + a - 1) / a * a;
}

static size_t part_bytes(const state_store *st, size_t numel, int part) {
    return round_up(numel * (part == 0 ? 4 : st->msize), ZOFF_NVME_ALIGN);
}

/* Waits for a stage's requests and returns the first error. */
static int stage_wait(state_store *st, stage *sg) {
    int rc = 0;
    double t0 = now_ms();
    for (int i = 0; i < 3; i++) {
        if (!sg->req[i]) continue;
        int r = zoff_nvme_wait(sg->req[i]);
        if (r && !rc)
            rc = zoff_fail(r, MOD, "NVMe %s of bucket %zu state failed: %s",
                           sg->state == STAGE_WRITING ? "write-back" : "read", sg->bucket,
                           zoff_nvme_request_detail(sg->req[i]));
        zoff_nvme_request_free(sg->req[i]);
        sg->req[i] = NULL;
    }
    st->wait_ms += now_ms() - t0;
    return rc;
}

static int stage_submit(state_store *st, stage *sg, size_t b, int write) {
    const engine_bucket *bk = &st->e->buckets[b];
    sg->bucket = b;
    sg->state = write ? STAGE_WRITING : STAGE_READING;
    for (int i = 0; i < 3; i++) {
        zoff_nvme_region *r = st->regions[b * 3 + (size_t)i];
        size_t len = part_bytes(st, bk->own_numel, i);
        int rc = write ? zoff_nvme_submit_write(st->e->swap, r, 0, sg->buf[i], len, &sg->req[i])
                       : zoff_nvme_submit_read(st->e->swap, r, 0, sg->buf[i], len, &sg->req[i]);
        if (rc) {
            stage_wait(st, sg);
            sg->state = STAGE_FREE;
            return zoff_fail(rc, MOD, "cannot submit NVMe %s of bucket %zu",
                             write ? "write" : "read", b);
        }
        if (write)
            st->bytes_written += len;
        else
            st->bytes_read += len;
    }
    return 0;
}

static stage *find_stage(state_store *st, size_t b) {
    for (int i = 0; i < N_STAGES; i++)
        if (st->stages[i].state != STAGE_FREE && st->stages[i].bucket == b) return &st->stages[i];
    return NULL;
}

/* A stage to load into: a free one, else the oldest write-back once it completes. */
/* Whether every request of a stage has completed successfully (without blocking). */
static int stage_done(stage *sg) {
    for (int i = 0; i < 3; i++) {
        int res = 0;
        if (sg->req[i] && (!zoff_nvme_poll(sg->req[i], &res) || res != 0)) return 0;
    }
    return 1;
}

static stage *claim_stage(state_store *st, int may_wait) {
    for (int i = 0; i < N_STAGES; i++)
        if (st->stages[i].state == STAGE_FREE) return &st->stages[i];
    /* a write-back that has already finished frees its stage at no cost */
    for (int i = 0; i < N_STAGES; i++)
        if (st->stages[i].state == STAGE_WRITING && stage_done(&st->stages[i])) {
            stage_wait(st, &st->stages[i]);
            st->stages[i].state = STAGE_FREE;
            return &st->stages[i];
        }
    if (!may_wait) return NULL;
    for (int i = 0; i < N_STAGES; i++)
        if (st->stages[i].state == STAGE_WRITING) {
            if (stage_wait(st, &st->stages[i])) return NULL;
            st->stages[i].state = STAGE_FREE;
            return &st->stages[i];
        }
    return NULL;
}

static int nvme_init_state(state_store *st, const float *init_master) {
    zoff_engine *e = st->e;
    zoff_nvme_config nc = zoff_nvme_config_default();
    nc.n_dirs = e->cfg.n_nvme_dirs;
    for (unsigned i = 0; i < nc.n_dirs; i++)
        nc.dirs[i] = e->cfg.nvme_dirs[i];
    nc.checksums = e->cfg.nvme_checksums;
    nc.backend = (zoff_nvme_backend)e->cfg.nvme_backend;
    if (e->cfg.nvme_queue_depth) nc.queue_depth = e->cfg.nvme_queue_depth;
    size_t cap = 0;
    for (size_t b = 0; b < e->n_buckets; b++)
        for (int i = 0; i < 3; i++)
            cap += round_up(part_bytes(st, e->buckets[b].own_numel, i), nc.stripe_size);
    nc.capacity = cap + nc.stripe_size * nc.n_dirs;
    int rc = zoff_nvme_swap_create(&nc, &e->swap);
    if (rc) return zoff_fail(rc, MOD, "cannot create the NVMe swap space in %s", nc.dirs[0]);
    st->regions = calloc(e->n_buckets * 3, sizeof *st->regions);
    if (!st->regions) return -ENOMEM;
    static const char parts[3] = {'p', 'm', 'v'};
    for (size_t b = 0; b < e->n_buckets; b++)
        for (int i = 0; e->buckets[b].own_numel && i < 3; i++) { /* an empty block has none */
            char name[48];
            snprintf(name, sizeof name, "b%zu.%c", b, parts[i]);
            rc = zoff_nvme_region_define(e->swap, name, part_bytes(st, e->buckets[b].own_numel, i),
                                         &st->regions[b * 3 + (size_t)i]);
            if (rc) return zoff_fail(rc, MOD, "cannot define swap region %s", name);
        }
    for (int i = 0; i < 3; i++)
        st->stage_bytes[i] = part_bytes(st, e->own_max ? e->own_max : 1, i);
    for (int s = 0; s < N_STAGES; s++)
        for (int i = 0; i < 3; i++) {
            st->stages[s].buf[i] = zoff_nvme_huge_alloc(st->stage_bytes[i], NULL);
            if (!st->stages[s].buf[i]) return zoff_fail(-ENOMEM, MOD, "no memory for NVMe staging");
        }
    /* Write every bucket's initial state: master weights, zero moments. */
    for (size_t b = 0; b < e->n_buckets; b++) {
        if (!e->buckets[b].own_numel) continue;
        stage *sg = claim_stage(st, 1);
        if (!sg) return zoff_fail(-EIO, MOD, "NVMe write-back failed while writing initial state");
        const engine_bucket *bk = &e->buckets[b];
        for (int i = 0; i < 3; i++)
            memset(sg->buf[i], 0, part_bytes(st, bk->own_numel, i));
        memcpy(sg->buf[0], init_master + bk->own_offset, bk->own_numel * sizeof(float));
        if ((rc = stage_submit(st, sg, b, 1))) return rc;
    }
    rc = state_store_drain(st);
    st->bytes_read = st->bytes_written = 0; /* set-up is not a step's traffic */
    st->wait_ms = 0;
    return rc;
}

int state_store_create(zoff_engine *e, const float *init_master, state_store **out) {
    state_store *st = calloc(1, sizeof *st);
    if (!st) return -ENOMEM;
    st->e = e;
    st->msize = zoff_dtype_size(e->cfg.moment_dtype);
    int rc = 0;
    if (e->cfg.target == ZOFF_OFFLOAD_NVME) {
        rc = nvme_init_state(st, init_master);
    } else {
        size_t n = e->n_own ? e->n_own : 1; /* compact: bucket host_offset */
        st->master = aligned_alloc(64, round_up(n * 4, 64));
        st->m = aligned_alloc(64, round_up(n * st->msize, 64));
        st->v = aligned_alloc(64, round_up(n * st->msize, 64));
        if (!st->master || !st->m || !st->v) {
            rc = zoff_fail(-ENOMEM, MOD, "no host memory for optimizer state of %zu parameters", n);
        } else {
            /* first touch by the workers that will update each range */
            rc = zoff_adam_first_touch(e->pool, st->master, n, 4);
            if (!rc) rc = zoff_adam_first_touch(e->pool, st->m, n, st->msize);
            if (!rc) rc = zoff_adam_first_touch(e->pool, st->v, n, st->msize);
            for (size_t b = 0; !rc && b < e->n_buckets; b++) {
                const engine_bucket *bk = &e->buckets[b];
                memcpy(st->master + bk->host_offset, init_master + bk->own_offset,
                       bk->own_numel * sizeof(float));
            }
        }
    }
    if (rc) {
        state_store_destroy(st);
        return rc;
    }
    *out = st;
    return 0;
}

void state_store_destroy(state_store *st) {
    if (!st) return;
    for (int s = 0; s < N_STAGES; s++) {
        stage_wait(st, &st->stages[s]);
        for (int i = 0; i < 3; i++)
            zoff_nvme_huge_free(st->stages[s].buf[i]);
    }
    free(st->regions);
    free(st->master);
    free(st->m);
    free(st->v);
    free(st);
}

int state_store_acquire(state_store *st, size_t b, float **p, void **m, void **v) {
    if (!st->regions) {
        size_t off = st->e->buckets[b].host_offset;
        *p = st->master + off;
        *m = (char *)st->m + off * st->msize;
        *v = (char *)st->v + off * st->msize;
        return 0;
    }
    stage *sg = find_stage(st, b);
    if (sg && sg->state == STAGE_WRITING) { /* updated again before its write-back ended */
        int rc = stage_wait(st, sg);
        if (rc) return rc;
        sg->state = STAGE_READY;
    }
    if (!sg) {
        sg = claim_stage(st, 1);
        if (!sg) return zoff_fail(-EIO, MOD, "no NVMe staging buffer for bucket %zu", b);
        int rc = stage_submit(st, sg, b, 0);
        if (rc) return rc;
    }
    if (sg->state == STAGE_READING) {
        int rc = stage_wait(st, sg);
        if (rc) {
            sg->state = STAGE_FREE;
            return rc;
        }
        sg->state = STAGE_READY;
    }
    *p = sg->buf[0];
    *m = sg->buf[1];
    *v = sg->buf[2];
    return 0;
}

void state_store_prefetch(state_store *st, size_t b) {
    if (!st->regions || find_stage(st, b)) return;
    stage *sg = claim_stage(st, 0);
    if (sg) stage_submit(st, sg, b, 0); /* a failure shows again at acquire */
}

int state_store_release(state_store *st, size_t b) {
    if (!st->regions) return 0;
    stage *sg = find_stage(st, b);
    if (!sg || sg->state != STAGE_READY)
        return zoff_fail(-EINVAL, MOD, "bucket %zu was not acquired", b);
    return stage_submit(st, sg, b, 1);
}

int state_store_drain(state_store *st) {
    int rc = 0;
    for (int s = 0; s < N_STAGES; s++) {
        stage *sg = &st->stages[s];
        if (sg->state == STAGE_FREE) continue;
        int r = stage_wait(st, sg);
        if (r && !rc) rc = r;
        sg->state = STAGE_FREE; /* a READY stage holds no unwritten data after release */
    }
    return rc;
}

/* Gives a stage that was only read back (not updated) without writing it. */
static void forget_stage(state_store *st, size_t b) {
    stage *sg = st->regions ? find_stage(st, b) : NULL;
    if (sg) sg->state = STAGE_FREE;
}

int state_store_read(state_store *st, size_t b, float *master, float *m, float *v) {
    float *p;
    void *sm, *sv;
    size_t n = st->e->buckets[b].own_numel;
    int rc = state_store_acquire(st, b, &p, &sm, &sv);
    if (rc) return rc;
    if (master) memcpy(master, p, n * sizeof(float));
    zoff_dtype md = st->e->cfg.moment_dtype;
    if (m) rc = zoff_adam_cast(st->e->pool, sm, md, m, ZOFF_F32, n);
    if (!rc && v) rc = zoff_adam_cast(st->e->pool, sv, md, v, ZOFF_F32, n);
    forget_stage(st, b);
    return rc;
}

int state_store_write_moments(state_store *st, size_t b, const float *m, const float *v) {
    float *p;
    void *sm, *sv;
    size_t n = st->e->buckets[b].own_numel;
    int rc = state_store_acquire(st, b, &p, &sm, &sv);
    if (rc) return rc;
    zoff_dtype md = st->e->cfg.moment_dtype;
    rc = zoff_adam_cast(st->e->pool, m, ZOFF_F32, sm, md, n);
    if (!rc) rc = zoff_adam_cast(st->e->pool, v, ZOFF_F32, sv, md, n);
    if (rc) {
        forget_stage(st, b);
        return rc;
    }
    rc = state_store_release(st, b);
    return rc ? rc : state_store_drain(st);
}

size_t state_store_host_bytes(const state_store *st) {
    if (!st->regions) return st->e->n_own * (4 + 2 * st->msize);
    return N_STAGES * (st->stage_bytes[0] + st->stage_bytes[1] + st->stage_bytes[2]);
}

size_t state_store_nvme_bytes(const state_store *st) {
    if (!st->regions) return 0;
    size_t n = 0;
    for (size_t b = 0; b < st->e->n_buckets; b++)
        for (int i = 0; i < 3; i++)
            n += part_bytes(st, st->e->buckets[b].own_numel, i);
    return n;
}

void state_store_take_counters(state_store *st, uint64_t *read, uint64_t *written,
                               double *wait_ms) {
    *read = st->bytes_read;
    *written = st->bytes_written;
    *wait_ms = st->wait_ms;
    st->bytes_read = st->bytes_written = 0;
    st->wait_ms = 0;
}
