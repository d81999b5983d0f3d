/* Pinned/aligned buffer pool with a fixed byte budget, shared by the swapper and the engine.
 *
 * All budget / buffer_size buffers are allocated at creation, through the caller's allocator
 * (e.g. CUDA pinned memory, one call per buffer) or as one huge-page-advised slab with mlock
 * attempted (a failure, e.g. under RLIMIT_MEMLOCK, logs one warning); acquiring never allocates, it
 * waits for a release. This is what keeps pinned host memory bounded. One mutex guards the free
 * stack and the counters; waiters sleep on a condition variable.
 */
#include "nvme/nvme_internal.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define MOD "nvme"

struct zoff_nvme_pool {
    zoff_nvme_pool_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void **bufs;        /* every buffer, by index */
    unsigned char *out; /* 1 while buffer i is acquired */
    size_t *free_stack, n_free, n;
    size_t high_water;
    int locked;
    void *slab; /* default allocator: one 2 MiB-aligned block carved into the buffers */
    size_t slab_bytes;
};

zoff_nvme_pool_config zoff_nvme_pool_config_default(void) {
    zoff_nvme_pool_config c;
    memset(&c, 0, sizeof c);
    c.budget = (size_t)64 << 20;
    c.buffer_size = (size_t)4 << 20;
    return c;
}

void *zoff_nvme_huge_alloc(size_t bytes, size_t *rounded) {
    const size_t huge = (size_t)2 << 20;
    size_t n = (bytes + huge - 1) / huge * huge;
    void *p = NULL;
    if (n == 0 || posix_memalign(&p, huge, n) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, n, MADV_HUGEPAGE); /* advice only: fine if refused */
#endif
    memset(p, 0, n); /* fault the pages in now, not in the first transfer */
    if (rounded) *rounded = n;
    return p;
}

void zoff_nvme_huge_free(void *p) {
    free(p);
}

/* One slab for all buffers (zoff_nvme_huge_alloc), with fewer pages to pin than 4 KiB ones. */
static int default_slab(zoff_nvme_pool *p) {
    size_t bytes;
    p->slab = zoff_nvme_huge_alloc(p->n * p->cfg.buffer_size, &bytes);
    if (!p->slab) return ZOFF_EHOST_OOM;
    p->slab_bytes = bytes;
    if (mlock(p->slab, bytes) == 0) {
        p->locked = 1;
    } else {
        zoff_log(ZOFF_LOG_WARN, MOD,
                 "mlock of the %zu-byte buffer pool failed (%s, RLIMIT_MEMLOCK?); buffers are "
                 "aligned but not pinned",
                 bytes, strerror(errno));
    }
    for (size_t i = 0; i < p->n; i++)
        p->bufs[i] = (char *)p->slab + i * p->cfg.buffer_size;
    return 0;
}

void zoff_nvme_pool_destroy(zoff_nvme_pool *p) {
    if (!p) return;
    if (p->slab) {
        if (p->locked) munlock(p->slab, p->slab_bytes);
        zoff_nvme_huge_free(p->slab);
    } else if (p->cfg.alloc) {
        for (size_t i = 0; i < p->n; i++)
            if (p->bufs[i]) p->cfg.free(p->bufs[i], p->cfg.buffer_size, p->cfg.user);
    }
    free(p->bufs);
    free(p->out);
    free(p->free_stack);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int zoff_nvme_pool_create(const zoff_nvme_pool_config *cfg, zoff_nvme_pool **out) {
    *out = NULL;
    if (!cfg->buffer_size || cfg->buffer_size % ZOFF_NVME_ALIGN)
        return zoff_fail(ZOFF_ECONFIG, MOD, "pool buffer_size %zu is not a multiple of 4096",
                         cfg->buffer_size);
    if (cfg->budget < cfg->buffer_size)
        return zoff_fail(ZOFF_ECONFIG, MOD, "pool budget %zu is below one %zu-byte buffer",
                         cfg->budget, cfg->buffer_size);
    if (cfg->alloc && !cfg->free)
        return zoff_fail(ZOFF_ECONFIG, MOD, "pool allocator given without a free function");
    zoff_nvme_pool *p = calloc(1, sizeof *p);
    if (!p) return zoff_fail(-ENOMEM, MOD, "buffer pool");
    p->cfg = *cfg;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->n = cfg->budget / cfg->buffer_size;
    p->bufs = calloc(p->n, sizeof *p->bufs);
    p->out = calloc(p->n, 1);
    p->free_stack = calloc(p->n, sizeof *p->free_stack);
    if (!p->bufs || !p->out || !p->free_stack) {
        size_t n = p->n;
        p->n = 0;
        zoff_nvme_pool_destroy(p);
        return zoff_fail(-ENOMEM, MOD, "buffer pool tables for %zu buffers", n);
    }
    if (!cfg->alloc) {
        int rc = default_slab(p);
        if (rc) {
            size_t n = p->n;
            zoff_nvme_pool_destroy(p);
            return zoff_fail(rc, MOD, "buffer pool: cannot allocate %zu buffers of %zu bytes", n,
                             cfg->buffer_size);
        }
    }
    for (size_t i = 0; i < p->n; i++) {
        if (cfg->alloc) {
            void *b = cfg->alloc(cfg->buffer_size, cfg->user);
            if (!b || (uintptr_t)b % ZOFF_NVME_ALIGN) {
                if (b) cfg->free(b, cfg->buffer_size, cfg->user);
                int rc = zoff_fail(b ? -EINVAL : ZOFF_EHOST_OOM, MOD,
                                   "buffer pool: allocating buffer %zu of %zu (%zu bytes each) %s",
                                   i, p->n, cfg->buffer_size,
                                   b ? "gave memory not aligned to 4096" : "failed");
                zoff_nvme_pool_destroy(p);
                return rc;
            }
            p->bufs[i] = b;
        }
        p->free_stack[p->n_free++] = p->n - 1 - i;
    }
    *out = p;
    return 0;
}

static int take_locked(zoff_nvme_pool *p, void **buf) {
    size_t i = p->free_stack[--p->n_free];
    p->out[i] = 1;
    *buf = p->bufs[i];
    size_t used = p->n - p->n_free;
    if (used > p->high_water) p->high_water = used;
    return 0;
}

int zoff_nvme_pool_acquire(zoff_nvme_pool *p, void **buf) {
    pthread_mutex_lock(&p->mu);
    while (p->n_free == 0)
        pthread_cond_wait(&p->cv, &p->mu);
    take_locked(p, buf);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

int zoff_nvme_pool_try_acquire(zoff_nvme_pool *p, void **buf) {
    pthread_mutex_lock(&p->mu);
    int rc = p->n_free ? take_locked(p, buf) : -EAGAIN;
    pthread_mutex_unlock(&p->mu);
    if (rc) *buf = NULL;
    return rc;
}

int zoff_nvme_pool_acquire_timeout(zoff_nvme_pool *p, unsigned timeout_ms, void **buf) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    while (p->n_free == 0 && rc == 0)
        rc = pthread_cond_timedwait(&p->cv, &p->mu, &dl);
    if (p->n_free)
        rc = take_locked(p, buf);
    else
        rc = ZOFF_EHOST_OOM;
    pthread_mutex_unlock(&p->mu);
    if (rc) {
        *buf = NULL;
        return zoff_fail(rc, MOD, "no pool buffer free within %u ms (%zu buffers of %zu bytes)",
                         timeout_ms, p->n, p->cfg.buffer_size);
    }
    return 0;
}

int zoff_nvme_pool_release(zoff_nvme_pool *p, void *buf) {
    pthread_mutex_lock(&p->mu);
    size_t i = 0;
    while (i < p->n && p->bufs[i] != buf)
        i++;
    if (i == p->n || !p->out[i]) {
        pthread_mutex_unlock(&p->mu);
        return zoff_fail(-EINVAL, MOD, "release of %p: not an acquired buffer of this pool", buf);
    }
    p->out[i] = 0;
    p->free_stack[p->n_free++] = i;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void zoff_nvme_pool_get_stats(zoff_nvme_pool *p, zoff_nvme_pool_stats *o) {
    pthread_mutex_lock(&p->mu);
    o->budget = p->n * p->cfg.buffer_size;
    o->buffer_size = p->cfg.buffer_size;
    o->n_buffers = p->n;
    o->in_use = p->n - p->n_free;
    o->high_water = p->high_water;
    o->high_water_bytes = p->high_water * p->cfg.buffer_size;
    o->locked = p->locked;
    pthread_mutex_unlock(&p->mu);
}

size_t zoff_nvme_pool_buffers(zoff_nvme_pool *p, void ***bases, size_t *buf_size) {
    *bases = malloc(p->n * sizeof(void *));
    if (!*bases) return 0;
    memcpy(*bases, p->bufs, p->n * sizeof(void *));
    *buf_size = p->cfg.buffer_size;
    return p->n;
}
