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
 * Prefetch: the order in which groups were acquired in the previous micro-batch is replayed:
 * while the current micro-batch follows it, the next prefetch_depth groups of that order are
 * fetched ahead; eviction picks the slot whose group is needed farthest ahead in it (or not
 * again in this micro-batch), least recently used first, never one about to be used. The
 * backward thus re-fetches only the groups that the end of the forward pushed out.
 */
#include "core/log.h"
#include "offload/engine_internal.h"

#include <errno.h>
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
    uint32_t *ctr;           /* pinned: fetched[n_slots], released[n_slots] */
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
    uint64_t fetch_bytes, refetch_bytes, fetches;
};

static uint32_t *fetched_ctr(param_store *ps, int k) {
    return &ps->ctr[k];
}
static uint32_t *released_ctr(param_store *ps, int k) {
    return &ps->ctr[ps->n_slots + k];
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

    /* the 16-bit weights: the master's rounding, as the fused Adam writes them */
    size_t total = ps->gbeg[G];
    if ((rc = zoff_dev_host_alloc(e->dev, total * es, &ps->host)))
        return zoff_fail(rc, MOD, "cannot allocate %zu bytes of pinned memory for the weights",
                         total * es);
    memset(ps->host, 0, total * es);
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
    if ((rc = zoff_dev_host_alloc(e->dev, (2 * (size_t)n + 1) * sizeof(uint32_t),
                                  (void **)&ps->ctr)))
        return rc;
    memset(ps->ctr, 0, (2 * (size_t)n + 1) * sizeof(uint32_t));
    if ((rc = zoff_dev_stream_create(e->dev, &ps->fetch))) return rc;
    return 0;
}

void param_store_destroy(param_store *ps) {
    if (!ps) return;
    zoff_engine *e = ps->e;
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
    int rc = zoff_dev_stream_wait_value(ps->fetch, released_ctr(ps, k), ps->slot_uses[k]);
    if (!rc) rc = wait_versions(ps, g, ps->fetch);
    int span = rc ? -1 : zoff_trace_device_begin(e->trace, ps->fetch, "fetch", name);
    if (!rc)
        rc = zoff_dev_memcpy_async(ps->fetch, ps->slot_buf[k],
                                   (char *)ps->host + ps->gbeg[g] * e->esize, bytes, ZOFF_COPY_H2D);
    zoff_trace_device_end(e->trace, ps->fetch, span);
    if (!rc) rc = zoff_dev_stream_write_value(ps->fetch, fetched_ctr(ps, k), ++ps->slot_fetches[k]);
    if (rc) return rc;
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
        ps->fetch_bytes = ps->refetch_bytes = ps->fetches = 0;
    }
    return rc;
}
