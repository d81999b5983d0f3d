/* The parameter store of the offload engine (streamed weights, ZeRO-Infinity style): the 16-bit
 * weights of every layer group live in pinned CPU memory, and the device holds only the
 * resident groups (cfg.group_resident) and a ring of slots for the streamed ones.
 *
 * Who owns what:
 *   trainer thread  acquire / release / end_micro: picks slots, issues fetches on the fetch
 *                   stream and the compute stream's waits. All slot bookkeeping is its own.
 *   fetch stream    per fetch: waits until the slot's previous group is released (counter
 *                   `released[k]`, written by the compute stream) and until the versions of
 *                   the group's buckets reach the step's (written by the updater when it has
 *                   stored the bucket's new weights), copies the group up, then advances
 *                   `fetched[k]`; the compute stream waits on it before reading the slot.
 *   updater         (CPU worker) writes each streamed bucket's new 16-bit weights into the
 *                   store (param_store_bucket_weights) and then advances its version
 *                   host-side; resident buckets go up by H2D into their group's device copy
 *                   as in the resident engine.
 * A slot's content is used only if it was fetched at the current step's required version;
 * the store's data of a bucket is rewritten only after the bucket's gradient is final, which
 * is after every read of it in that step (the compute stream waited for the fetch before
 * reading, and read before writing the gradient), so a used slot never holds torn weights.
 *
 * NVMe (cfg.params NVME): no full copy in CPU memory. Each bucket's 16-bit weights are a swap
 * region ("w<b>", checksummed); each ring slot has a pinned staging buffer (bounded: ring slots x
 * the largest group). A fetch is a job for the reader thread, which waits (host) until the
 * slot's staging buffer is free (`drained[k]`, which the fetch stream advances after its copies
 * out of it) and the group's buckets hold the step's version, reads them, and advances
 * `staged[k]`, on which the fetch stream waits before its copies. The
 * updater writes each updated bucket back (synchronously, through one aligned buffer) before
 * advancing its version. A failed read or a checksum mismatch sets the engine's error naming
 * the group, and the counters still move so that no stream waits forever.
 *
 * Prefetch: the order in which groups were acquired in the previous micro-batch is replayed:
 * while the current micro-batch follows it, the next prefetch_depth groups of that order are
 * fetched ahead; eviction picks the slot whose group is needed farthest ahead in it (or not
 * again in this micro-batch), least recently used first, never one about to be used. The
 * backward thus re-fetches only the groups that the end of the forward pushed out.
 */
#include "core/log.h"
#include "offload/engine_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct param_store {
    zoff_engine *e;
    size_t n_groups;
    size_t *gbeg;                      /* (n_groups + 1) element offsets */
    bool *resident;                    /* (n_groups) */
    size_t *gbucket_first, *gbucket_n; /* (n_groups) buckets of each group */
    size_t *bucket_group;              /* (n_buckets) */
    void *host;                        /* (n_params) dtype, pinned: the 16-bit weights */
    void **gdev;                       /* (n_groups) resident groups' device copies */

    /* the ring (trainer thread) */
    int n_slots;
    size_t slot_elems;
    void **slot_buf;
    int *slot_group;         /* group held, -1 none */
    uint32_t *slot_ver;      /* required version it was fetched at */
    uint64_t *slot_last_use; /* acquire tick of its last use (LRU) */
    uint32_t *slot_fetches;  /* fetches issued into it */
    uint32_t *slot_uses;     /* acquires of it issued */
    uint32_t *ctr;           /* pinned: fetched, released, staged, drained [n_slots] each */
    int *group_slot;         /* (n_groups) slot holding it, -1 none */
    zoff_dev_stream *fetch;
    int cur_slot;     /* slot of the group being read on the compute stream, -1 none */
    size_t cur_group; /* SIZE_MAX: none */
    uint64_t tick;

    /* prefetch schedule */
    size_t *order, n_order; /* previous micro-batch's acquires */
    size_t *seen, n_seen;   /* this micro-batch's */
    size_t cap_seen;
    bool follows;             /* this micro-batch matches `order` so far */
    bool *fetched_this_micro; /* (n_groups) */

    /* fetch counters of the step being accumulated (trainer) */
    uint64_t fetch_bytes, refetch_bytes, fetches, nvme_read_bytes;

    /* NVMe */
    bool nvme;
    zoff_nvme_swap *swap;
    zoff_nvme_region **bregion; /* (n_buckets) */
    size_t *bstage_off;         /* (n_buckets) byte offset in its group's staging layout */
    size_t stage_bytes;
    void **stage, **stage_raw; /* (n_slots) pinned, 4096-aligned */
    void *wbuf;                /* updater: one bucket, 4096-aligned */
    uint64_t nvme_written;     /* updater: weight bytes written back since the last take */
    pthread_t reader;
    bool reader_started;
    pthread_mutex_t lock; /* guards the job queue */
    pthread_cond_t cond;
    struct read_job *jobs;
    size_t j_head, j_len, j_cap;
    bool stop;
    bool sync_made; /* lock and cond initialized */
};

typedef struct read_job {
    size_t group;
    int slot;
    uint32_t fetch_no; /* slot_fetches[slot] of this fetch */
    uint32_t version;  /* the group's buckets must hold it */
} read_job;

static uint32_t *fetched_ctr(param_store *ps, int k) {
    return &ps->ctr[k];
}
static uint32_t *released_ctr(param_store *ps, int k) {
    return &ps->ctr[ps->n_slots + k];
}
static uint32_t *staged_ctr(param_store *ps, int k) {
    return &ps->ctr[2 * ps->n_slots + k];
}
/* The fetch stream's copies out of slot k's staging buffer are done (NVMe), up to this fetch:
 * what the reader waits for before it reads into that buffer again. Its own counter, not
 * fetched[k]: stopping releases the reader through it, and releasing fetched[k] instead let
 * the compute stream read a slot while a copy into it still ran. */
static uint32_t *drained_ctr(param_store *ps, int k) {
    return &ps->ctr[3 * ps->n_slots + k];
}

static size_t align4k(size_t x) {
    return (x + ZOFF_NVME_ALIGN - 1) / ZOFF_NVME_ALIGN * ZOFF_NVME_ALIGN;
}

static size_t group_elems(const param_store *ps, size_t g) {
    return ps->gbeg[g + 1] - ps->gbeg[g];
}

static size_t round_dev(size_t bytes) {
    return (bytes + 255) / 256 * 256 /* the device layer's allocation granule */;
}

static int ring_slots(const zoff_engine_config *c) {
    return c->ring_groups > 0 ? c->ring_groups : c->prefetch_depth + 2;
}

int param_store_plan_bytes(const zoff_engine_config *c, size_t esize, size_t *bytes) {
    if (!c->group_begin || c->n_groups == 0) return -EINVAL;
    size_t resident = 0, slot = 0;
    bool any_streamed = false;
    for (size_t g = 0; g < c->n_groups; g++) {
        size_t n = c->group_begin[g + 1] - c->group_begin[g];
        if (c->group_resident && c->group_resident[g]) {
            resident += round_dev(n * esize);
        } else {
            any_streamed = true;
            if (n > slot) slot = n;
        }
    }
    *bytes = resident + (any_streamed ? (size_t)ring_slots(c) * round_dev(slot * esize) : 0);
    return 0;
}

static int check_groups(const zoff_engine *e) {
    const zoff_engine_config *c = &e->cfg;
    if (!c->group_begin || c->n_groups == 0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "streamed weights need the layer groups (group_begin)");
    if (c->prefetch_depth < 0) return zoff_fail(ZOFF_ECONFIG, MOD, "prefetch_depth must be >= 0");
    if (c->ring_groups && c->ring_groups < c->prefetch_depth + 2)
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "ring_groups %d: must hold the group in use, %d prefetched and one "
                         "being replaced (at least %d)",
                         c->ring_groups, c->prefetch_depth, c->prefetch_depth + 2);
    for (size_t g = 0; g < c->n_groups; g++)
        if (c->group_begin[g + 1] <= c->group_begin[g])
            return zoff_fail(ZOFF_ECONFIG, MOD, "layer group %zu is empty or out of order", g);
    if (c->group_begin[c->n_groups] < e->n_params || c->group_begin[0] > e->tensors[0].offset)
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "layer groups [%zu, %zu) do not cover the %zu parameters",
                         c->group_begin[0], c->group_begin[c->n_groups], e->n_params);
    return 0;
}

/* --- NVMe: the swap regions, the reader thread, write-back ------------------------------- */

static int push_job(param_store *ps, const read_job *j) {
    pthread_mutex_lock(&ps->lock);
    if (ps->j_len == ps->j_cap) {
        size_t ncap = ps->j_cap ? 2 * ps->j_cap : 64;
        read_job *nj = malloc(ncap * sizeof *nj);
        if (!nj) {
            pthread_mutex_unlock(&ps->lock);
            return zoff_fail(-ENOMEM, MOD, "no memory to queue a weight read");
        }
        for (size_t i = 0; i < ps->j_len; i++)
            nj[i] = ps->jobs[(ps->j_head + i) % ps->j_cap];
        free(ps->jobs);
        ps->jobs = nj;
        ps->j_head = 0;
        ps->j_cap = ncap;
    }
    ps->jobs[(ps->j_head + ps->j_len++) % ps->j_cap] = *j;
    pthread_cond_broadcast(&ps->cond);
    pthread_mutex_unlock(&ps->lock);
    return 0;
}

/* Reads group g's buckets into slot k's staging buffer (reader thread): once the previous
 * copy out of that buffer is done and the buckets hold the version asked for. */
static int read_group(param_store *ps, const read_job *j) {
    zoff_engine *e = ps->e;
    size_t g = j->group, nb = ps->gbucket_n[g], b0 = ps->gbucket_first[g];
    int rc = zoff_dev_host_wait_value(e->dev, drained_ctr(ps, j->slot), j->fetch_no - 1);
    for (size_t i = 0; !rc && i < nb; i++)
        rc = zoff_dev_host_wait_value(e->dev, &e->version[b0 + i], j->version);
    if (rc || engine_worker_error(e)) return rc;
    enum { BATCH = 64 };
    zoff_nvme_request *req[BATCH];
    for (size_t i0 = 0; i0 < nb && !rc; i0 += BATCH) {
        size_t n = nb - i0 < BATCH ? nb - i0 : BATCH;
        for (size_t i = 0; i < n; i++)
            req[i] = NULL;
        for (size_t i = 0; i < n && !rc; i++) {
            size_t b = b0 + i0 + i;
            rc = zoff_nvme_submit_read(ps->swap, ps->bregion[b], 0,
                                       (char *)ps->stage[j->slot] + ps->bstage_off[b],
                                       zoff_nvme_region_size(ps->bregion[b]), &req[i]);
            if (rc)
                rc = zoff_fail(rc, MOD, "cannot submit the NVMe read of layer group %zu's weights",
                               g);
        }
        for (size_t i = 0; i < n; i++) {
            if (!req[i]) continue;
            int r = zoff_nvme_wait(req[i]);
            if (r && !rc)
                rc = zoff_fail(r, MOD,
                               "NVMe read of the weights of layer group %zu (bucket %zu) failed: "
                               "%s",
                               g, b0 + i0 + i, zoff_nvme_request_detail(req[i]));
            zoff_nvme_request_free(req[i]);
        }
    }
    return rc;
}

static void *reader_main(void *arg) {
    param_store *ps = arg;
    zoff_engine *e = ps->e;
    for (;;) {
        pthread_mutex_lock(&ps->lock);
        while (ps->j_len == 0 && !ps->stop)
            pthread_cond_wait(&ps->cond, &ps->lock);
        if (ps->j_len == 0) {
            pthread_mutex_unlock(&ps->lock);
            break;
        }
        read_job j = ps->jobs[ps->j_head];
        ps->j_head = (ps->j_head + 1) % ps->j_cap;
        ps->j_len--;
        bool stop = ps->stop;
        pthread_mutex_unlock(&ps->lock);
        double t0 = e->trace ? zoff_trace_now_us(e->trace) : 0;
        int rc = stop ? 0 : read_group(ps, &j);
        if (rc) engine_set_error(e, rc);
        if (e->trace && !stop) {
            char name[48];
            snprintf(name, sizeof name, "nvme read g%zu", j.group);
            zoff_trace_host_span(e->trace, "nvme weights", name, t0, zoff_trace_now_us(e->trace));
        }
        /* moves even after a failure: the fetch stream must not wait forever */
        rc = zoff_dev_host_write_value(e->dev, staged_ctr(ps, j.slot), j.fetch_no);
        if (rc) engine_set_error(e, rc);
    }
    return NULL;
}

/* Writes bucket b's weights (in wbuf) to its swap region and waits (updater). */
static int write_bucket(param_store *ps, size_t b) {
    zoff_nvme_request *req = NULL;
    size_t len = zoff_nvme_region_size(ps->bregion[b]);
    int rc = zoff_nvme_submit_write(ps->swap, ps->bregion[b], 0, ps->wbuf, len, &req);
    if (!rc) rc = zoff_nvme_wait(req);
    if (rc)
        rc = zoff_fail(rc, MOD,
                       "NVMe write-back of the weights of layer group %zu (bucket %zu) failed: %s",
                       ps->bucket_group[b], b, req ? zoff_nvme_request_detail(req) : "");
    zoff_nvme_request_free(req);
    if (!rc) ps->nvme_written += len;
    return rc;
}

/* The swap for the streamed buckets, their initial weights (from ps->host, which is then
 * freed), the pinned staging of each ring slot and the reader thread. */
static int nvme_create(param_store *ps) {
    zoff_engine *e = ps->e;
    size_t es = e->esize;
    zoff_nvme_config nc = zoff_nvme_config_default();
    nc.n_dirs = e->cfg.n_nvme_dirs;
    for (unsigned i = 0; i < nc.n_dirs; i++)
        nc.dirs[i] = e->cfg.nvme_dirs[i];
    nc.checksums = e->cfg.nvme_checksums;
    nc.backend = (zoff_nvme_backend)e->cfg.nvme_backend;
    if (e->cfg.nvme_queue_depth) nc.queue_depth = e->cfg.nvme_queue_depth;
    ps->bregion = calloc(e->n_buckets, sizeof *ps->bregion);
    ps->bstage_off = calloc(e->n_buckets, sizeof *ps->bstage_off);
    ps->stage = calloc((size_t)ps->n_slots + 1, sizeof *ps->stage);
    ps->stage_raw = calloc((size_t)ps->n_slots + 1, sizeof *ps->stage_raw);
    if (!ps->bregion || !ps->bstage_off || !ps->stage || !ps->stage_raw) return -ENOMEM;
    size_t cap = 0, wmax = ZOFF_NVME_ALIGN;
    for (size_t g = 0; g < ps->n_groups; g++) {
        if (ps->resident[g]) continue;
        size_t off = 0;
        for (size_t i = 0; i < ps->gbucket_n[g]; i++) {
            size_t b = ps->gbucket_first[g] + i, len = align4k(e->buckets[b].numel * es);
            ps->bstage_off[b] = off;
            off += len;
            cap += (len + nc.stripe_size - 1) / nc.stripe_size * nc.stripe_size;
            if (len > wmax) wmax = len;
        }
        if (off > ps->stage_bytes) ps->stage_bytes = off;
    }
    nc.capacity = cap + nc.stripe_size * nc.n_dirs;
    int rc = zoff_nvme_swap_create(&nc, &ps->swap);
    if (rc)
        return zoff_fail(rc, MOD, "cannot create the NVMe swap space for the weights in %s",
                         nc.dirs[0]);
    if (!(ps->wbuf = aligned_alloc(ZOFF_NVME_ALIGN, wmax))) return -ENOMEM;
    for (int k = 0; k < ps->n_slots; k++) {
        if ((rc =
                 zoff_dev_host_alloc(e->dev, ps->stage_bytes + ZOFF_NVME_ALIGN, &ps->stage_raw[k])))
            return zoff_fail(rc, MOD, "cannot allocate %zu bytes of pinned weight staging",
                             ps->stage_bytes);
        ps->stage[k] = (void *)(((uintptr_t)ps->stage_raw[k] + ZOFF_NVME_ALIGN - 1) &
                                ~(uintptr_t)(ZOFF_NVME_ALIGN - 1));
    }
    for (size_t b = 0; b < e->n_buckets; b++) {
        if (ps->resident[ps->bucket_group[b]]) continue;
        char name[40];
        snprintf(name, sizeof name, "w%zu", b);
        size_t bytes = e->buckets[b].numel * es;
        if ((rc = zoff_nvme_region_define(ps->swap, name, bytes, &ps->bregion[b])))
            return zoff_fail(rc, MOD, "cannot define swap region %s", name);
        memset(ps->wbuf, 0, align4k(bytes));
        memcpy(ps->wbuf, (char *)ps->host + e->buckets[b].offset * es, bytes);
        if ((rc = write_bucket(ps, b))) return rc;
    }
    ps->nvme_written = 0; /* set-up is not a step's traffic */
    free(ps->host);       /* no full copy in CPU memory from here on */
    ps->host = NULL;
    if (e->cfg.nvme_debug_error_every) { /* tests: faults from here on, not in the set-up */
        zoff_nvme_swap_debug_faults(ps->swap, e->cfg.nvme_debug_error_every,
                                    e->cfg.nvme_debug_error_errno);
    }
    pthread_mutex_init(&ps->lock, NULL);
    pthread_cond_init(&ps->cond, NULL);
    ps->sync_made = true;
    if ((rc = -pthread_create(&ps->reader, NULL, reader_main, ps))) return rc;
    ps->reader_started = true;
    return 0;
}

void param_store_stop(param_store *ps) {
    if (!ps || !ps->reader_started) return;
    zoff_engine *e = ps->e;
    pthread_mutex_lock(&ps->lock);
    ps->stop = true;
    pthread_cond_broadcast(&ps->cond);
    pthread_mutex_unlock(&ps->lock);
    /* a read waiting for a version or a copy that will not come: release it (the reader only:
     * the streams' own waits are met by the streams, which go on to their ends) */
    for (size_t b = 0; b < e->n_buckets; b++)
        zoff_dev_host_write_value(e->dev, &e->version[b],
                                  __atomic_load_n(&e->version[b], __ATOMIC_ACQUIRE) + (1u << 20));
    for (int k = 0; k < ps->n_slots; k++)
        zoff_dev_host_write_value(e->dev, drained_ctr(ps, k), ps->slot_fetches[k] + (1u << 20));
    pthread_join(ps->reader, NULL);
    ps->reader_started = false;
}

int param_store_commit(param_store *ps, size_t b) {
    return ps->nvme ? write_bucket(ps, b) : 0;
}

uint64_t param_store_take_nvme_written(param_store *ps) {
    uint64_t n = ps->nvme_written;
    ps->nvme_written = 0;
    return n;
}

int param_store_create(zoff_engine *e, const float *init_master, param_store **out) {
    int rc = check_groups(e);
    if (rc) return rc;
    if (!init_master)
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "streamed weights need the initial master weights (init_master)");
    param_store *ps = calloc(1, sizeof *ps);
    if (!ps) return -ENOMEM;
    *out = ps; /* destroyed by the caller's failure path too */
    const zoff_engine_config *c = &e->cfg;
    size_t G = c->n_groups, es = e->esize;
    ps->e = e;
    ps->n_groups = G;
    ps->cur_slot = -1;
    ps->cur_group = SIZE_MAX;
    ps->gbeg = malloc((G + 1) * sizeof *ps->gbeg);
    ps->resident = calloc(G, sizeof *ps->resident);
    ps->gbucket_first = calloc(G, sizeof(size_t));
    ps->gbucket_n = calloc(G, sizeof(size_t));
    ps->bucket_group = calloc(e->n_buckets, sizeof(size_t));
    ps->gdev = calloc(G, sizeof *ps->gdev);
    ps->group_slot = malloc(G * sizeof *ps->group_slot);
    ps->order = malloc(G * 4 * sizeof *ps->order);
    ps->cap_seen = G * 4;
    ps->seen = malloc(ps->cap_seen * sizeof *ps->seen);
    ps->fetched_this_micro = calloc(G, sizeof(bool));
    if (!ps->gbeg || !ps->resident || !ps->gbucket_first || !ps->gbucket_n || !ps->bucket_group ||
        !ps->gdev || !ps->group_slot || !ps->order || !ps->seen || !ps->fetched_this_micro)
        return -ENOMEM;
    memcpy(ps->gbeg, c->group_begin, (G + 1) * sizeof *ps->gbeg);
    bool any_streamed = false;
    for (size_t g = 0; g < G; g++) {
        ps->resident[g] = c->group_resident && c->group_resident[g];
        ps->group_slot[g] = -1;
        if (!ps->resident[g]) {
            any_streamed = true;
            if (group_elems(ps, g) > ps->slot_elems) ps->slot_elems = group_elems(ps, g);
        }
    }
    for (size_t b = 0, g = 0; b < e->n_buckets; b++) {
        while (g + 1 < G && e->buckets[b].offset >= ps->gbeg[g + 1])
            g++;
        ps->bucket_group[b] = g;
        if (ps->gbucket_n[g]++ == 0) ps->gbucket_first[g] = b;
    }

    /* the 16-bit weights: the master's rounding, as the fused Adam writes them (NVMe: a
     * temporary copy, written to the swap once the slots exist) */
    size_t total = ps->gbeg[G];
    ps->nvme = c->params == ZOFF_PARAMS_NVME;
    if (ps->nvme) {
        if (!(ps->host = calloc(total, es))) return -ENOMEM;
    } else {
        if ((rc = zoff_dev_host_alloc(e->dev, total * es, &ps->host)))
            return zoff_fail(rc, MOD, "cannot allocate %zu bytes of pinned memory for the weights",
                             total * es);
        memset(ps->host, 0, total * es);
    }
    if ((rc = zoff_adam_cast(e->pool, init_master, ZOFF_F32, ps->host, c->dtype, e->n_params)))
        return rc;
    for (size_t g = 0; g < G; g++) {
        if (!ps->resident[g]) continue;
        size_t bytes = group_elems(ps, g) * es;
        if ((rc = zoff_dev_malloc(e->dev, bytes, &ps->gdev[g])))
            return zoff_fail(rc, MOD, "no device memory for resident layer group %zu (%zu bytes)",
                             g, bytes);
        if ((rc = zoff_dev_memcpy(e->dev, ps->gdev[g], (char *)ps->host + ps->gbeg[g] * es, bytes,
                                  ZOFF_COPY_H2D)))
            return rc;
    }
    ps->n_slots = any_streamed ? ring_slots(c) : 0;
    int n = ps->n_slots;
    ps->slot_buf = calloc((size_t)n + 1, sizeof *ps->slot_buf);
    ps->slot_group = calloc((size_t)n + 1, sizeof *ps->slot_group);
    ps->slot_ver = calloc((size_t)n + 1, sizeof *ps->slot_ver);
    ps->slot_last_use = calloc((size_t)n + 1, sizeof *ps->slot_last_use);
    ps->slot_fetches = calloc((size_t)n + 1, sizeof *ps->slot_fetches);
    ps->slot_uses = calloc((size_t)n + 1, sizeof *ps->slot_uses);
    if (!ps->slot_buf || !ps->slot_group || !ps->slot_ver || !ps->slot_last_use ||
        !ps->slot_fetches || !ps->slot_uses)
        return -ENOMEM;
    for (int k = 0; k < n; k++) {
        ps->slot_group[k] = -1;
        if ((rc = zoff_dev_malloc(e->dev, ps->slot_elems * es, &ps->slot_buf[k])))
            return zoff_fail(rc, MOD, "no device memory for %d weight ring slots of %zu bytes", n,
                             ps->slot_elems * es);
    }
    if ((rc = zoff_dev_host_alloc(e->dev, 4 * (size_t)n * sizeof(uint32_t), (void **)&ps->ctr)))
        return rc;
    memset(ps->ctr, 0, 4 * (size_t)n * sizeof(uint32_t));
    if ((rc = zoff_dev_stream_create(e->dev, &ps->fetch))) return rc;
    return ps->nvme ? nvme_create(ps) : 0;
}

void param_store_destroy(param_store *ps) {
    if (!ps) return;
    zoff_engine *e = ps->e;
    param_store_stop(ps);
    for (int k = 0; ps->stage_raw && k < ps->n_slots; k++)
        if (ps->stage_raw[k]) zoff_dev_host_free(e->dev, ps->stage_raw[k]);
    free(ps->stage_raw);
    free(ps->stage);
    free(ps->wbuf);
    free(ps->bregion);
    free(ps->bstage_off);
    free(ps->jobs);
    if (ps->sync_made) {
        pthread_mutex_destroy(&ps->lock);
        pthread_cond_destroy(&ps->cond);
    }
    zoff_nvme_swap_destroy(ps->swap);
    if (ps->nvme) {
        free(ps->host); /* not pinned: NVMe keeps no full copy after creation */
        ps->host = NULL;
    }
    for (int k = 0; ps->slot_buf && k < ps->n_slots; k++)
        zoff_dev_free(e->dev, ps->slot_buf[k]);
    for (size_t g = 0; ps->gdev && g < ps->n_groups; g++)
        zoff_dev_free(e->dev, ps->gdev[g]);
    if (ps->fetch) zoff_dev_stream_destroy(ps->fetch);
    if (ps->ctr) zoff_dev_host_free(e->dev, ps->ctr);
    if (ps->host) zoff_dev_host_free(e->dev, ps->host);
    free(ps->gbeg);
    free(ps->resident);
    free(ps->gbucket_first);
    free(ps->gbucket_n);
    free(ps->bucket_group);
    free(ps->gdev);
    free(ps->group_slot);
    free(ps->order);
    free(ps->seen);
    free(ps->fetched_this_micro);
    free(ps->slot_buf);
    free(ps->slot_group);
    free(ps->slot_ver);
    free(ps->slot_last_use);
    free(ps->slot_fetches);
    free(ps->slot_uses);
    free(ps);
}

/* --- the updater's side ------------------------------------------------------------------- */

void *param_store_bucket_weights(param_store *ps, size_t b) {
    if (ps->nvme) return ps->wbuf;
    return (char *)ps->host + ps->e->buckets[b].offset * ps->e->esize;
}

bool param_store_bucket_streamed(const param_store *ps, size_t b) {
    return !ps->resident[ps->bucket_group[b]];
}

void *param_store_bucket_device(param_store *ps, size_t b) {
    size_t g = ps->bucket_group[b];
    return (char *)ps->gdev[g] + (ps->e->buckets[b].offset - ps->gbeg[g]) * ps->e->esize;
}

size_t param_store_device_bytes(const param_store *ps) {
    size_t bytes = 0;
    for (size_t g = 0; g < ps->n_groups; g++)
        if (ps->resident[g]) bytes += round_dev(group_elems(ps, g) * ps->e->esize);
    return bytes + (size_t)ps->n_slots * round_dev(ps->slot_elems * ps->e->esize);
}

size_t param_store_pinned_bytes(const param_store *ps) {
    if (ps->nvme) return (size_t)ps->n_slots * (ps->stage_bytes + ZOFF_NVME_ALIGN);
    return ps->gbeg[ps->n_groups] * ps->e->esize;
}

/* --- the trainer's side ------------------------------------------------------------------- */

/* Stream s waits until every bucket of group g holds the current step's weights. */
static int wait_versions(param_store *ps, size_t g, zoff_dev_stream *s) {
    uint32_t v = engine_required_version(ps->e);
    for (size_t i = 0; i < ps->gbucket_n[g]; i++) {
        int rc = zoff_dev_stream_wait_value(s, &ps->e->version[ps->gbucket_first[g] + i], v);
        if (rc) return rc;
    }
    return 0;
}

/* The position, after the current one, at which the schedule next needs g (SIZE_MAX: not in
 * this micro-batch, as far as the schedule tells). */
static size_t next_use(const param_store *ps, size_t g) {
    if (!ps->follows) return SIZE_MAX;
    for (size_t i = ps->n_seen; i < ps->n_order; i++)
        if (ps->order[i] == g) return i;
    return SIZE_MAX;
}

/* Whether g is among the groups the next `depth` acquires of the schedule need. */
static bool upcoming(const param_store *ps, size_t g) {
    if (!ps->follows) return false;
    size_t end = ps->n_seen + (size_t)ps->e->cfg.prefetch_depth;
    for (size_t i = ps->n_seen; i < ps->n_order && i < end; i++)
        if (ps->order[i] == g) return true;
    return false;
}

/* A slot to fetch into: an empty one, else the one whose group is needed farthest ahead,
 * least recently used first; never the group in use or one about to be. -1 if none. */
static int pick_slot(param_store *ps) {
    int best = -1;
    size_t best_next = 0;
    for (int k = 0; k < ps->n_slots; k++) {
        if (ps->slot_group[k] < 0) return k;
        size_t g = (size_t)ps->slot_group[k];
        if (k == ps->cur_slot || upcoming(ps, g)) continue;
        size_t nx = next_use(ps, g);
        if (best < 0 || nx > best_next ||
            (nx == best_next && ps->slot_last_use[k] < ps->slot_last_use[best])) {
            best = k;
            best_next = nx;
        }
    }
    return best;
}

static bool valid_in_ring(const param_store *ps, size_t g) {
    int k = ps->group_slot[g];
    return k >= 0 && ps->slot_ver[k] == engine_required_version(ps->e);
}

/* Fetches streamed group g into a slot; *slot_out: the slot, or -1 when the ring has none to
 * give (only a prefetch may meet that). */
static int fetch_group(param_store *ps, size_t g, int *slot_out) {
    zoff_engine *e = ps->e;
    int k = ps->group_slot[g] >= 0 ? ps->group_slot[g] : pick_slot(ps);
    *slot_out = k;
    if (k < 0) return 0;
    int old = ps->slot_group[k];
    if (old >= 0 && (size_t)old != g) ps->group_slot[old] = -1;
    char name[64];
    if (old >= 0 && (size_t)old != g)
        snprintf(name, sizeof name, "fetch g%zu (evicts g%d)", g, old);
    else
        snprintf(name, sizeof name, "fetch g%zu", g);
    size_t bytes = group_elems(ps, g) * e->esize;
    uint32_t no = ps->slot_fetches[k] + 1;
    int rc = zoff_dev_stream_wait_value(ps->fetch, released_ctr(ps, k), ps->slot_uses[k]);
    if (!rc && ps->nvme) { /* the reader stages it (having waited for the versions) */
        read_job j = {.group = g, .slot = k, .fetch_no = no, .version = engine_required_version(e)};
        rc = push_job(ps, &j);
        for (size_t i = 0; !rc && i < ps->gbucket_n[g]; i++)
            ps->nvme_read_bytes += zoff_nvme_region_size(ps->bregion[ps->gbucket_first[g] + i]);
        if (!rc) rc = zoff_dev_stream_wait_value(ps->fetch, staged_ctr(ps, k), no);
    } else if (!rc) {
        rc = wait_versions(ps, g, ps->fetch);
    }
    int span = rc ? -1 : zoff_trace_device_begin(e->trace, ps->fetch, "fetch", name);
    for (size_t i = 0; !rc && ps->nvme && i < ps->gbucket_n[g]; i++) {
        size_t b = ps->gbucket_first[g] + i;
        char *dst = (char *)ps->slot_buf[k] + (e->buckets[b].offset - ps->gbeg[g]) * e->esize;
        rc = zoff_dev_memcpy_async(ps->fetch, dst, (char *)ps->stage[k] + ps->bstage_off[b],
                                   e->buckets[b].numel * e->esize, ZOFF_COPY_H2D);
    }
    if (!rc && !ps->nvme)
        rc = zoff_dev_memcpy_async(ps->fetch, ps->slot_buf[k],
                                   (char *)ps->host + ps->gbeg[g] * e->esize, bytes, ZOFF_COPY_H2D);
    zoff_trace_device_end(e->trace, ps->fetch, span);
    if (!rc && ps->nvme) rc = zoff_dev_stream_write_value(ps->fetch, drained_ctr(ps, k), no);
    if (!rc) rc = zoff_dev_stream_write_value(ps->fetch, fetched_ctr(ps, k), no);
    if (rc) return rc;
    ps->slot_fetches[k] = no;
    ps->slot_group[k] = (int)g;
    ps->group_slot[g] = k;
    ps->slot_ver[k] = engine_required_version(e);
    ps->slot_last_use[k] = ++ps->tick;
    ps->fetch_bytes += bytes;
    ps->fetches++;
    if (ps->fetched_this_micro[g]) ps->refetch_bytes += bytes;
    ps->fetched_this_micro[g] = true;
    return 0;
}

int param_store_release(param_store *ps, zoff_dev_stream *s) {
    int k = ps->cur_slot;
    ps->cur_slot = -1;
    ps->cur_group = SIZE_MAX;
    if (k < 0) return 0;
    return zoff_dev_stream_write_value(s, released_ctr(ps, k), ps->slot_uses[k]);
}

static int prefetch(param_store *ps) {
    if (!ps->follows) return 0;
    size_t end = ps->n_seen + (size_t)ps->e->cfg.prefetch_depth;
    for (size_t i = ps->n_seen; i < ps->n_order && i < end; i++) {
        size_t g = ps->order[i];
        if (ps->resident[g] || valid_in_ring(ps, g)) continue;
        int k;
        int rc = fetch_group(ps, g, &k);
        if (rc || k < 0) return rc;
    }
    return 0;
}

int param_store_acquire(param_store *ps, size_t g, zoff_dev_stream *s, void **base) {
    if (g >= ps->n_groups)
        return zoff_fail(-EINVAL, MOD, "layer group %zu out of range (%zu groups)", g,
                         ps->n_groups);
    if (g == ps->cur_group) { /* still held */
        *base = ps->resident[g] ? ps->gdev[g] : ps->slot_buf[ps->cur_slot];
        return 0;
    }
    int rc = param_store_release(ps, s);
    if (rc) return rc;
    /* follow the schedule */
    if (ps->n_seen == ps->cap_seen) {
        size_t *ns = realloc(ps->seen, 2 * ps->cap_seen * sizeof *ns);
        if (!ns) return -ENOMEM;
        ps->seen = ns;
        ps->cap_seen *= 2;
    }
    if (ps->follows && (ps->n_seen >= ps->n_order || ps->order[ps->n_seen] != g))
        ps->follows = false;
    ps->seen[ps->n_seen++] = g;
    ps->cur_group = g;
    if (ps->resident[g]) {
        if ((rc = wait_versions(ps, g, s))) return rc;
        *base = ps->gdev[g];
        return prefetch(ps);
    }
    int k = ps->group_slot[g];
    if (!valid_in_ring(ps, g) && (rc = fetch_group(ps, g, &k))) return rc;
    if (k < 0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "no weight ring slot free for layer group %zu", g);
    ps->cur_slot = k;
    ps->slot_last_use[k] = ++ps->tick;
    ps->slot_uses[k]++;
    if ((rc = zoff_dev_stream_wait_value(s, fetched_ctr(ps, k), ps->slot_fetches[k]))) return rc;
    *base = ps->slot_buf[k];
    return prefetch(ps);
}

int param_store_end_micro(param_store *ps, zoff_dev_stream *s, work_item *w) {
    int rc = param_store_release(ps, s);
    /* the order seen becomes the schedule of the next micro-batch */
    size_t n = ps->n_seen;
    if (n > ps->n_groups * 4) n = ps->n_groups * 4;
    memcpy(ps->order, ps->seen, n * sizeof *ps->order);
    ps->n_order = n;
    ps->n_seen = 0;
    ps->follows = n > 0;
    memset(ps->fetched_this_micro, 0, ps->n_groups * sizeof(bool));
    if (w) {
        w->fetch_bytes = ps->fetch_bytes;
        w->refetch_bytes = ps->refetch_bytes;
        w->fetches = ps->fetches;
        w->nvme_read_bytes = ps->nvme_read_bytes;
        ps->fetch_bytes = ps->refetch_bytes = ps->fetches = ps->nvme_read_bytes = 0;
    }
    return rc;
}
