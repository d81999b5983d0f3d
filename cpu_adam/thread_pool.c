/* The persistent worker pool that runs cpu_adam's kernels.
 *
 * n workers are started once and pinned (through hwloc) to one core each, skipping the first
 * reserve_cores cores so the caller can keep them for GPU feeding and I/O threads. A call hands
 * every worker the same task (fn, arg) and blocks until all have run it; each worker derives its
 * share from its id alone (zoff_adam_partition), so the split never depends on scheduling.
 *
 * Ownership and synchronization: all shared fields (generation, pending, stop, task) are guarded
 * by mu; workers sleep on work_cv, the caller on done_cv. call_mu serializes callers, so a pool
 * runs one task at a time. The hwloc topology is written only during create and read-only after.
 */
#include "cpu_adam/adam_internal.h"
#include "core/log.h"

#include <errno.h>
#include <hwloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct pool_worker {
    zoff_adam_pool *pool;
    pthread_t thread;
    int tid;
    int core;              /* hwloc logical core index, -1 if not pinned */
    hwloc_bitmap_t cpuset; /* the PU it binds to, or NULL */
} pool_worker;

struct zoff_adam_pool {
    int n;
    zoff_adam_isa isa;
    const zoff_adam_kernels *kernels;
    hwloc_topology_t topo;      /* NULL if pinning is off */
    hwloc_obj_type_t core_type; /* HWLOC_OBJ_CORE, or HWLOC_OBJ_PU where cores are not exposed */
    pool_worker *workers;
    int started; /* workers successfully created */

    pthread_mutex_t call_mu; /* one caller at a time */
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    unsigned long generation; /* bumped for each task */
    int pending;              /* workers still running the current task */
    int stop;
    zoff_adam_task_fn fn;
    void *arg;
};

zoff_adam_pool_config zoff_adam_pool_config_default(void) {
    zoff_adam_pool_config c = {
        .n_threads = 0,
        .reserve_cores = 0,
        .pin = 1,
        .isa = ZOFF_ADAM_ISA_AUTO,
    };
    return c;
}

void zoff_adam_partition(size_t n, int tid, int n_threads, size_t *begin, size_t *end) {
    size_t chunks = (n + ZOFF_ADAM_CHUNK - 1) / ZOFF_ADAM_CHUNK;
    size_t t = (size_t)tid, T = n_threads > 0 ? (size_t)n_threads : 1;
    size_t c0 = chunks * t / T, c1 = chunks * (t + 1) / T;
    size_t b = c0 * ZOFF_ADAM_CHUNK, e = c1 * ZOFF_ADAM_CHUNK;
    *begin = b < n ? b : n;
    *end = e < n ? e : n;
}

static void *worker_main(void *p) {
    pool_worker *w = p;
    zoff_adam_pool *pool = w->pool;
    if (w->cpuset && hwloc_set_cpubind(pool->topo, w->cpuset, HWLOC_CPUBIND_THREAD) != 0)
        zoff_log(ZOFF_LOG_WARN, "cpu_adam", "worker %d: binding to core %d failed: %s", w->tid,
                 w->core, zoff_strerror(-errno)); /* thread-safe, unlike strerror */
    unsigned long seen = 0;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (pool->generation == seen && !pool->stop)
            pthread_cond_wait(&pool->work_cv, &pool->mu);
        if (pool->stop) break;
        seen = pool->generation;
        zoff_adam_task_fn fn = pool->fn;
        void *arg = pool->arg;
        int n = pool->n;
        pthread_mutex_unlock(&pool->mu);
        fn(arg, w->tid, n);
        pthread_mutex_lock(&pool->mu);
        if (--pool->pending == 0) pthread_cond_signal(&pool->done_cv);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

/* Chooses each worker's core: the cores after the reserved ones, round-robin. */
static int pool_plan_cores(zoff_adam_pool *pool, int reserve, int *n_threads) {
    int rc;
    if (hwloc_topology_init(&pool->topo) != 0) {
        pool->topo = NULL;
        return zoff_fail(-EIO, "cpu_adam", "hwloc_topology_init failed");
    }
    if (hwloc_topology_load(pool->topo) != 0) {
        rc = zoff_fail(-EIO, "cpu_adam", "hwloc_topology_load failed: %s", zoff_strerror(-errno));
        goto fail;
    }
    /* Some virtual machines expose no core objects: fall back to processing units. */
    pool->core_type = HWLOC_OBJ_CORE;
    int cores = hwloc_get_nbobjs_by_type(pool->topo, HWLOC_OBJ_CORE);
    if (cores <= 0) {
        pool->core_type = HWLOC_OBJ_PU;
        cores = hwloc_get_nbobjs_by_type(pool->topo, HWLOC_OBJ_PU);
    }
    if (cores <= 0) {
        rc = zoff_fail(-EIO, "cpu_adam", "hwloc reports no cores or processing units");
        goto fail;
    }
    if (reserve >= cores) {
        rc = zoff_fail(ZOFF_ECONFIG, "cpu_adam",
                       "reserve_cores %d leaves no core for workers (this machine has %d)", reserve,
                       cores);
        goto fail;
    }
    int avail = cores - reserve;
    if (*n_threads == 0) *n_threads = avail;
    if (*n_threads > avail)
        zoff_log(ZOFF_LOG_WARN, "cpu_adam", "%d workers on %d free cores: cores are shared",
                 *n_threads, avail);
    return avail;
fail:
    hwloc_topology_destroy(pool->topo);
    pool->topo = NULL;
    return rc;
}

int zoff_adam_pool_create(const zoff_adam_pool_config *cfg, zoff_adam_pool **out) {
    int rc;
    if (!cfg || !out) return -EINVAL;
    *out = NULL;
    if (cfg->n_threads < 0 || cfg->n_threads > 4096)
        return zoff_fail(ZOFF_ECONFIG, "cpu_adam", "n_threads %d out of range [0, 4096]",
                         cfg->n_threads);
    if (cfg->reserve_cores < 0)
        return zoff_fail(ZOFF_ECONFIG, "cpu_adam", "reserve_cores %d is negative",
                         cfg->reserve_cores);
    zoff_adam_isa isa;
    if ((rc = zoff_adam_isa_resolve(cfg->isa, &isa)) != 0) return rc;

    zoff_adam_pool *pool = calloc(1, sizeof(*pool));
    if (!pool) return -ENOMEM;
    pool->isa = isa;
    pool->kernels = zoff_adam_kernels_for(isa);
    pthread_mutex_init(&pool->call_mu, NULL);
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->work_cv, NULL);
    pthread_cond_init(&pool->done_cv, NULL);

    int n = cfg->n_threads;
    int avail = 0;
    if (cfg->pin || n == 0 || cfg->reserve_cores > 0) {
        if ((rc = pool_plan_cores(pool, cfg->reserve_cores, &n)) < 0) goto fail;
        avail = rc;
    }
    pool->n = n;
    pool->workers = calloc((size_t)n, sizeof(*pool->workers));
    if (!pool->workers) {
        rc = -ENOMEM;
        goto fail;
    }
    for (int t = 0; t < n; t++) {
        pool_worker *w = &pool->workers[t];
        w->pool = pool;
        w->tid = t;
        w->core = -1;
        if (cfg->pin) {
            int core = cfg->reserve_cores + t % avail;
            hwloc_obj_t obj = hwloc_get_obj_by_type(pool->topo, pool->core_type, (unsigned)core);
            if (obj && obj->cpuset && (w->cpuset = hwloc_bitmap_dup(obj->cpuset))) {
                hwloc_bitmap_singlify(w->cpuset); /* one PU: no migration between siblings */
                w->core = core;
            }
        }
    }
    for (int t = 0; t < n; t++) {
        int err = pthread_create(&pool->workers[t].thread, NULL, worker_main, &pool->workers[t]);
        if (err) {
            rc = zoff_fail(-err, "cpu_adam", "pthread_create for worker %d failed: %s", t,
                           zoff_strerror(-err));
            goto fail;
        }
        pool->started++;
    }
    zoff_log(ZOFF_LOG_DEBUG, "cpu_adam", "pool: %d workers, isa %s, %d cores reserved, pin %d", n,
             zoff_adam_isa_name(isa), cfg->reserve_cores, cfg->pin);
    *out = pool;
    return 0;
fail:
    zoff_adam_pool_destroy(pool);
    return rc;
}

void zoff_adam_pool_destroy(zoff_adam_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);
    for (int t = 0; t < pool->started; t++)
        pthread_join(pool->workers[t].thread, NULL);
    if (pool->workers)
        for (int t = 0; t < pool->n; t++)
            if (pool->workers[t].cpuset) hwloc_bitmap_free(pool->workers[t].cpuset);
    free(pool->workers);
    if (pool->topo) hwloc_topology_destroy(pool->topo);
    pthread_cond_destroy(&pool->done_cv);
    pthread_cond_destroy(&pool->work_cv);
    pthread_mutex_destroy(&pool->mu);
    pthread_mutex_destroy(&pool->call_mu);
    free(pool);
}

int zoff_adam_pool_threads(const zoff_adam_pool *pool) {
    return pool ? pool->n : 1;
}

zoff_adam_isa zoff_adam_pool_isa(const zoff_adam_pool *pool) {
    return pool ? pool->isa : zoff_adam_isa_best();
}

int zoff_adam_pool_core(const zoff_adam_pool *pool, int tid) {
    if (!pool || tid < 0 || tid >= pool->n) return -1;
    return pool->workers[tid].core;
}

const zoff_adam_kernels *zoff_adam_pool_kernels(const zoff_adam_pool *pool) {
    return pool ? pool->kernels : zoff_adam_kernels_for(zoff_adam_isa_best());
}

int zoff_adam_pool_run(zoff_adam_pool *pool, zoff_adam_task_fn fn, void *arg) {
    if (!pool || !fn) return -EINVAL;
    pthread_mutex_lock(&pool->call_mu);
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->arg = arg;
    pool->pending = pool->n;
    pool->generation++;
    pthread_cond_broadcast(&pool->work_cv);
    while (pool->pending > 0)
        pthread_cond_wait(&pool->done_cv, &pool->mu);
    pool->fn = NULL;
    pool->arg = NULL;
    pthread_mutex_unlock(&pool->mu);
    pthread_mutex_unlock(&pool->call_mu);
    return 0;
}

int zoff_adam_run(zoff_adam_pool *pool, size_t n, zoff_adam_task_fn fn, void *arg) {
    if (!pool || n <= ZOFF_ADAM_CHUNK) {
        fn(arg, 0, 1);
        return 0;
    }
    return zoff_adam_pool_run(pool, fn, arg);
}

typedef struct touch_task {
    char *buf;
    size_t n, elem_size;
} touch_task;

static void touch_run(void *p, int tid, int n_threads) {
    touch_task *t = p;
    size_t b, e;
    zoff_adam_partition(t->n, tid, n_threads, &b, &e);
    if (e > b) memset(t->buf + b * t->elem_size, 0, (e - b) * t->elem_size);
}

int zoff_adam_first_touch(zoff_adam_pool *pool, void *buf, size_t n, size_t elem_size) {
    if ((!buf && n) || elem_size == 0)
        return zoff_fail(-EINVAL, "cpu_adam", "first_touch: NULL buffer or zero element size");
    touch_task t = {buf, n, elem_size};
    /* Always on the workers: the point is which thread touches the pages. */
    return pool ? zoff_adam_pool_run(pool, touch_run, &t) : zoff_adam_run(NULL, n, touch_run, &t);
}
