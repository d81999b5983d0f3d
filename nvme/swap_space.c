/* Swap space: files, lock files and stale-file detection, regions, striping, and the request
 * life cycle shared by both backends (submit, hand out operations, complete, wait, cancel).
 *
 * Invariants: a region's written bit for a page is set only after a write covering it
 * completed successfully (and cleared when a write to it failed or was canceled, since the
 * page may be torn); with checksums on, the region's checksum for a block is the XXH3 of the
 * bytes last successfully written there. A request moves QUEUED -> RUNNING -> DONE exactly
 * once, under swap->mu; its result is immutable once DONE.
 * Threads: any caller thread submits/waits/cancels; the backend's threads take operations
 * and complete them; destroy runs alone.
 */
#include "nvme/nvme_internal.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define MOD  "nvme"
#define PAGE ((uint64_t)ZOFF_NVME_ALIGN)

static atomic_uint g_instance;

zoff_nvme_config zoff_nvme_config_default(void) {
    zoff_nvme_config c;
    memset(&c, 0, sizeof c);
    c.capacity = (size_t)256 << 20;
    c.stripe_size = (size_t)1 << 20;
    c.block_size = (size_t)1 << 20;
    c.queue_depth = 32;
    c.checksums = 1;
    c.checksum_block = (size_t)64 << 10;
    c.backend = ZOFF_NVME_BACKEND_AUTO;
    c.preallocate = 1;
    c.pthread_threads = 4;
    return c;
}

static const char *const k_backend_names[] = {"auto", "uring", "uring-buffered", "pthread"};

int zoff_nvme_backend_parse(const char *text, zoff_nvme_backend *out) {
    for (unsigned i = 0; text && i < 4; i++)
        if (strcmp(text, k_backend_names[i]) == 0) {
            *out = (zoff_nvme_backend)i;
            return 0;
        }
    return -EINVAL;
}

const char *zoff_nvme_backend_name(zoff_nvme_backend b) {
    return (unsigned)b < 4 ? k_backend_names[b] : "?";
}

static int aligned(uint64_t v) {
    return (v % PAGE) == 0;
}

static int check_config(const zoff_nvme_config *c) {
    if (c->n_dirs == 0 || c->n_dirs > ZOFF_NVME_MAX_DIRS)
        return zoff_fail(ZOFF_ECONFIG, MOD, "n_dirs %u: need 1..%d swap directories", c->n_dirs,
                         ZOFF_NVME_MAX_DIRS);
    for (unsigned i = 0; i < c->n_dirs; i++)
        if (!c->dirs[i] || !c->dirs[i][0])
            return zoff_fail(ZOFF_ECONFIG, MOD, "swap directory %u is not set", i);
    if (!c->stripe_size || !aligned(c->stripe_size))
        return zoff_fail(ZOFF_ECONFIG, MOD, "stripe_size %zu is not a nonzero multiple of 4096",
                         c->stripe_size);
    if (!c->block_size || !aligned(c->block_size) || c->block_size > ((size_t)1 << 30))
        return zoff_fail(ZOFF_ECONFIG, MOD, "block_size %zu is not a multiple of 4096 in 4K..1G",
                         c->block_size);
    if (c->queue_depth == 0 || c->queue_depth > 4096)
        return zoff_fail(ZOFF_ECONFIG, MOD, "queue_depth %u is not in 1..4096", c->queue_depth);
    if (c->checksums && (!c->checksum_block || !aligned(c->checksum_block)))
        return zoff_fail(ZOFF_ECONFIG, MOD, "checksum_block %zu is not a nonzero multiple of 4096",
                         c->checksum_block);
    if (c->capacity == 0) return zoff_fail(ZOFF_ECONFIG, MOD, "capacity is 0");
    if ((unsigned)c->backend > ZOFF_NVME_BACKEND_PTHREAD)
        return zoff_fail(ZOFF_ECONFIG, MOD, "backend %d is not a zoff_nvme_backend", c->backend);
    if (c->backend == ZOFF_NVME_BACKEND_PTHREAD && c->pthread_threads == 0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "pthread_threads is 0");
    return 0;
}

/* ------------------------------------------------------------ stale files */

static int lock_is_held(const char *path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return 0;
    int held = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd); /* closing drops a lock we may have taken */
    return held;
}

/* The PID in "zoff-swap.<pid>.<instance>...", or -1. */
static long owner_pid(const char *name) {
    char *end;
    long pid = strtol(name + 10, &end, 10);
    return end != name + 10 && *end == '.' && pid > 0 ? pid : -1;
}

/* Swap files are "zoff-swap.<pid>.<instance>.<i>.dat" guarded by "zoff-swap.<pid>.<instance>.lock",
 * flock-held for the swap's lifetime. A file whose lock is held belongs to a live swap and is
 * never touched. One whose lock is missing or not held belongs to a run that died without
 * cleaning up (killed, or crashed): it is reclaimed at once when its owner PID is gone; when
 * a process with that PID still runs (a zoff that lost its lock, or a reused PID) it is left
 * in place, naming the PID, unless remove_stale asks to remove it anyway. */
static unsigned scan_stale(const char *dir, int remove) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    unsigned n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *name = e->d_name;
        if (strncmp(name, "zoff-swap.", 10) != 0) continue;
        size_t ln = strlen(name);
        int is_lock = ln > 5 && strcmp(name + ln - 5, ".lock") == 0;
        int is_dat = ln > 4 && strcmp(name + ln - 4, ".dat") == 0;
        if (!is_lock && !is_dat) continue;
        char lock[4096], path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        if (is_lock) {
            snprintf(lock, sizeof lock, "%s", path);
        } else {
            /* strip ".<i>.dat" */
            char prefix[1024];
            snprintf(prefix, sizeof prefix, "%s", name);
            char *dot = strrchr(prefix, '.');
            if (dot) *dot = 0;
            dot = strrchr(prefix, '.');
            if (dot) *dot = 0;
            snprintf(lock, sizeof lock, "%s/%s.lock", dir, prefix);
        }
        if (lock_is_held(lock)) continue;
        n++;
        struct stat st;
        long long sz = stat(path, &st) == 0 ? (long long)st.st_size : -1;
        long pid = owner_pid(name);
        int owner_alive =
            pid > 0 && pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
        if (!owner_alive || remove) {
            int rc = unlink(path);
            zoff_log(ZOFF_LOG_WARN, MOD,
                     "reclaimed stale swap file %s (%lld bytes) of a dead run (PID %ld%s)%s", path,
                     sz, pid, owner_alive ? ", a PID now reused" : ", gone",
                     rc ? " (unlink failed)" : "");
        } else {
            zoff_log(ZOFF_LOG_WARN, MOD,
                     "swap file %s (%lld bytes) without its lock belongs to PID %ld, which is "
                     "still running: left in place (stop that process, or set remove_stale if "
                     "the PID was reused)",
                     path, sz, pid);
        }
    }
    closedir(d);
    return n;
}

/* Swap and lock files of this process's live swaps, for zoff_nvme_release_files_now(), which
 * a signal handler may call: fixed storage, no locks, each slot published with an atomic. */
#define EMERGENCY_SLOTS 64
static char g_emergency_path[EMERGENCY_SLOTS][2][4096];
static atomic_int g_emergency_used[EMERGENCY_SLOTS];

static int emergency_register(const char *dat, const char *lock) {
    for (int k = 0; k < EMERGENCY_SLOTS; k++) {
        int expected = 0;
        if (!atomic_compare_exchange_strong(&g_emergency_used[k], &expected, 2)) continue;
        snprintf(g_emergency_path[k][0], sizeof g_emergency_path[k][0], "%s", dat);
        snprintf(g_emergency_path[k][1], sizeof g_emergency_path[k][1], "%s", lock);
        atomic_store(&g_emergency_used[k], 1);
        return k;
    }
    return -1; /* more swaps than slots: only the next run's reclaim covers the rest */
}

static void emergency_unregister(int k) {
    if (k >= 0) atomic_store(&g_emergency_used[k], 0);
}

void zoff_nvme_release_files_now(void) {
    for (int k = 0; k < EMERGENCY_SLOTS; k++)
        if (atomic_load(&g_emergency_used[k]) == 1) {
            unlink(g_emergency_path[k][0]);
            unlink(g_emergency_path[k][1]);
        }
}

/* ------------------------------------------------------------ create / destroy */

static int open_file(zoff_nvme_swap *s, unsigned i, int want_direct, int *warned) {
    int flags = O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC;
    int fd = -1;
    if (want_direct && s->direct) {
        fd = open(s->paths[i], flags | O_DIRECT, 0600);
        if (fd < 0 && errno == EINVAL) {
            if (!*warned)
                zoff_log(ZOFF_LOG_WARN, MOD,
                         "%s: the file system refuses O_DIRECT (EINVAL); using buffered I/O",
                         s->cfg.dirs[i]);
            *warned = 1;
            s->direct = 0;
        } else if (fd < 0) {
            return zoff_fail(-errno, MOD, "cannot create swap file %s", s->paths[i]);
        }
    }
    if (fd < 0) {
        /* a refused O_DIRECT open may still have created the file: no O_EXCL here (the
         * name is unique to this process and instance) */
        fd = open(s->paths[i], want_direct ? flags & ~O_EXCL : flags, 0600);
        if (fd < 0) return zoff_fail(-errno, MOD, "cannot create swap file %s", s->paths[i]);
    }
    s->fds[i] = fd;
    return 0;
}

static void close_files(zoff_nvme_swap *s) {
    for (unsigned i = 0; i < ZOFF_NVME_MAX_DIRS; i++) {
        emergency_unregister(s->emergency_slot[i]);
        s->emergency_slot[i] = -1;
        if (s->fds[i] >= 0) {
            close(s->fds[i]);
            if (unlink(s->paths[i]) != 0)
                zoff_log(ZOFF_LOG_WARN, MOD, "cannot remove swap file %s: %s", s->paths[i],
                         strerror(errno));
        }
        if (s->lock_fds[i] >= 0) {
            unlink(s->lock_paths[i]); /* unlink before close: nobody sees it unheld */
            close(s->lock_fds[i]);
        }
        free(s->paths[i]);
        free(s->lock_paths[i]);
        s->fds[i] = s->lock_fds[i] = -1;
        s->paths[i] = s->lock_paths[i] = NULL;
    }
}

static void free_regions(zoff_nvme_swap *s) {
    zoff_nvme_region *r = s->regions;
    while (r) {
        zoff_nvme_region *n = r->next;
        free(r->name);
        free(r->written);
        free(r->csums);
        free(r);
        r = n;
    }
    s->regions = NULL;
}

int zoff_nvme_swap_create(const zoff_nvme_config *cfg, zoff_nvme_swap **out) {
    *out = NULL;
    int rc = check_config(cfg);
    if (rc) return rc;
    zoff_nvme_swap *s = calloc(1, sizeof *s);
    if (!s) return zoff_fail(-ENOMEM, MOD, "swap space struct");
    s->cfg = *cfg;
    for (unsigned i = 0; i < ZOFF_NVME_MAX_DIRS; i++) {
        s->fds[i] = s->lock_fds[i] = -1;
        s->emergency_slot[i] = -1;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->done_cv, NULL);
    s->n_files = cfg->n_dirs;
    uint64_t S = cfg->stripe_size;
    uint64_t stripes = (cfg->capacity + S - 1) / S;
    s->file_size = (stripes + s->n_files - 1) / s->n_files * S;
    s->direct = cfg->backend != ZOFF_NVME_BACKEND_URING_BUFFERED;
    unsigned inst = atomic_fetch_add(&g_instance, 1);
    int warned = 0;

    for (unsigned i = 0; i < s->n_files; i++) {
        const char *dir = cfg->dirs[i];
        struct stat st;
        if (stat(dir, &st) != 0) {
            rc = zoff_fail(-errno, MOD, "swap directory %s", dir);
            goto fail;
        }
        if (!S_ISDIR(st.st_mode)) {
            rc = zoff_fail(-ENOTDIR, MOD, "swap directory %s is not a directory", dir);
            goto fail;
        }
        s->n_stale += scan_stale(dir, cfg->remove_stale);
        char buf[4096];
        snprintf(buf, sizeof buf, "%s/zoff-swap.%d.%u.lock", dir, (int)getpid(), inst);
        s->lock_paths[i] = strdup(buf);
        snprintf(buf, sizeof buf, "%s/zoff-swap.%d.%u.%u.dat", dir, (int)getpid(), inst, i);
        s->paths[i] = strdup(buf);
        if (!s->lock_paths[i] || !s->paths[i]) {
            rc = zoff_fail(-ENOMEM, MOD, "path names");
            goto fail;
        }
        /* locked under a temporary name, then renamed: a scanner in another process never
         * sees this lock file unheld */
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", s->lock_paths[i]);
        int lfd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (lfd < 0) {
            rc = zoff_fail(-errno, MOD, "cannot create lock file %s (is %s writable?)", tmp, dir);
            goto fail;
        }
        if (flock(lfd, LOCK_EX | LOCK_NB) != 0 || rename(tmp, s->lock_paths[i]) != 0) {
            rc = zoff_fail(-errno, MOD, "cannot lock %s", s->lock_paths[i]);
            close(lfd);
            unlink(tmp);
            goto fail;
        }
        s->lock_fds[i] = lfd;
        char pid[32];
        int pl = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
        if (write(lfd, pid, (size_t)pl) != pl)
            zoff_log(ZOFF_LOG_WARN, MOD, "cannot write pid into %s", s->lock_paths[i]);

        rc = open_file(s, i, s->direct, &warned);
        if (rc) goto fail;
        s->emergency_slot[i] = emergency_register(s->paths[i], s->lock_paths[i]);
        if (cfg->preallocate) {
            if (fallocate(s->fds[i], 0, 0, (off_t)s->file_size) != 0) {
                int e = errno;
                if (e == EOPNOTSUPP) {
                    zoff_log(ZOFF_LOG_WARN, MOD, "%s: fallocate unsupported; space not reserved",
                             dir);
                    if (ftruncate(s->fds[i], (off_t)s->file_size) != 0) {
                        rc = zoff_fail(-errno, MOD, "cannot size swap file %s to %llu bytes",
                                       s->paths[i], (unsigned long long)s->file_size);
                        goto fail;
                    }
                } else {
                    struct statvfs vs;
                    unsigned long long avail =
                        statvfs(dir, &vs) == 0 ? (unsigned long long)vs.f_bavail * vs.f_frsize : 0;
                    rc = zoff_fail(-e, MOD,
                                   "cannot preallocate %llu bytes for swap file %s (%llu bytes "
                                   "available in %s)",
                                   (unsigned long long)s->file_size, s->paths[i], avail, dir);
                    goto fail;
                }
            }
        }
    }
    /* All files use the same mode: if a later directory refused O_DIRECT, reopen earlier
     * ones buffered so that every operation has the same alignment semantics. */
    if (!s->direct) {
        for (unsigned i = 0; i < s->n_files; i++) {
            int fl = fcntl(s->fds[i], F_GETFL);
            if (fl >= 0 && (fl & O_DIRECT)) fcntl(s->fds[i], F_SETFL, fl & ~O_DIRECT);
        }
    }

    rc = -ENOSYS;
    if (cfg->backend != ZOFF_NVME_BACKEND_PTHREAD) {
        rc = zoff_nvme_uring_start(s);
        if (rc && cfg->backend != ZOFF_NVME_BACKEND_AUTO) goto fail;
        if (rc)
            zoff_log(ZOFF_LOG_WARN, MOD, "io_uring refused (%s); using the pthread backend",
                     zoff_strerror(rc));
    }
    if (rc) {
        rc = zoff_nvme_pthread_start(s);
        if (rc) goto fail;
    }
    zoff_log(ZOFF_LOG_INFO, MOD, "swap space: %u file(s) of %llu bytes, backend %s%s", s->n_files,
             (unsigned long long)s->file_size, s->backend_name,
             s->direct ? " (O_DIRECT)" : " (buffered)");
    *out = s;
    return 0;
fail:
    close_files(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->done_cv);
    free(s);
    return rc;
}

/* ------------------------------------------------------------ completion */

static void set_written(zoff_nvme_region *g, uint64_t off, size_t len, int on) {
    for (uint64_t p = off / PAGE; p < (off + len) / PAGE; p++) {
        if (on)
            g->written[p / 64] |= 1ull << (p % 64);
        else
            g->written[p / 64] &= ~(1ull << (p % 64));
    }
}

static int all_written(const zoff_nvme_region *g, uint64_t off, size_t len) {
    for (uint64_t p = off / PAGE; p < (off + len) / PAGE; p++)
        if (!(g->written[p / 64] & (1ull << (p % 64)))) return 0;
    return 1;
}

static void unqueue_locked(zoff_nvme_swap *s, zoff_nvme_request *r) {
    if (!r->in_queue) return;
    zoff_nvme_request **pp = &s->q_head, *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (*pp) {
        *pp = r->qnext;
        if (s->q_tail == r) s->q_tail = prev;
    }
    r->qnext = NULL;
    r->in_queue = 0;
}

/* Final bookkeeping and wake-up (mu held). */
static void complete_locked(zoff_nvme_swap *s, zoff_nvme_request *r, int result) {
    zoff_nvme_region *g = r->region;
    if (r->write) {
        if (result == 0) {
            set_written(g, r->offset, r->len, 1);
            if (r->csums)
                memcpy(g->csums + r->offset / s->cfg.checksum_block, r->csums,
                       r->n_csums * sizeof *r->csums);
        } else if (r->next_off > 0) {
            set_written(g, r->offset, r->len, 0); /* possibly torn */
        }
    }
    if (result == 0) {
        atomic_fetch_add(r->write ? &s->bytes_written : &s->bytes_read, r->len);
    } else {
        atomic_fetch_add(&s->requests_failed, 1);
        if (!r->detail[0])
            snprintf(r->detail, sizeof r->detail, "%s of region '%s' bytes %llu+%zu: %s",
                     r->write ? "write" : "read", g->name, (unsigned long long)r->offset, r->len,
                     zoff_strerror(result));
    }
    r->result = result;
    atomic_store_explicit(&r->state, REQ_DONE, memory_order_release);
    pthread_cond_broadcast(&s->done_cv);
}

/* The length of r's checksum block i (the last one may be short). */
static size_t block_len(const zoff_nvme_swap *s, const zoff_nvme_request *r, size_t i) {
    size_t cb = s->cfg.checksum_block, off = i * cb;
    return r->len - off < cb ? r->len - off : cb;
}

/* The checksum of r's data in checksum block i. */
static uint64_t block_checksum(const zoff_nvme_swap *s, const zoff_nvme_request *r, size_t i) {
    return zoff_nvme_checksum(r->buf + i * s->cfg.checksum_block, block_len(s, r, i));
}

static int verify(zoff_nvme_swap *s, zoff_nvme_request *r) {
    for (size_t i = 0; i < r->n_csums; i++) {
        uint64_t h = block_checksum(s, r, i);
        if (h != r->csums[i]) {
            size_t off = i * s->cfg.checksum_block, n = block_len(s, r, i);
            snprintf(r->detail, sizeof r->detail,
                     "checksum mismatch in region '%s' at byte %llu (%zu-byte block): stored "
                     "%016llx, read back %016llx",
                     r->region->name, (unsigned long long)(r->offset + off), n,
                     (unsigned long long)r->csums[i], (unsigned long long)h);
            return ZOFF_ECHECKSUM;
        }
    }
    return 0;
}

static int final_result(const zoff_nvme_request *r) {
    if (r->err) return r->err;
    if (atomic_load(&r->canceled) && r->next_off < r->len) return ZOFF_ECANCELED;
    return 0;
}

void zoff_nvme_op_done(zoff_nvme_swap *s, zoff_nvme_op *op, int err) {
    zoff_nvme_request *r = op->req;
    pthread_mutex_lock(&s->mu);
    if (err && !r->err) {
        r->err = err;
        snprintf(r->detail, sizeof r->detail,
                 "%s of region '%s' failed in %s at file offset %llu (%zu bytes, %zu done): %s",
                 r->write ? "write" : "read", r->region->name, s->paths[op->file],
                 (unsigned long long)op->file_off, op->len, op->done, zoff_strerror(err));
    }
    r->ops_inflight--;
    int stopped = r->err || atomic_load(&r->canceled);
    int last = r->ops_inflight == 0 && (r->next_off == r->len || stopped);
    if (last) unqueue_locked(s, r);
    if (!last) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    int result = final_result(r);
    if (result == 0 && !r->write && r->csums) {
        /* hashing is left to the consumer's thread (wait/poll), not the I/O thread */
        atomic_store_explicit(&r->state, REQ_VERIFY, memory_order_release);
        pthread_cond_broadcast(&s->done_cv);
    } else {
        complete_locked(s, r, result);
    }
    pthread_mutex_unlock(&s->mu);
}

/* Verifies a REQ_VERIFY read if nobody else is; mu held on entry and exit. */
static void claim_verify_locked(zoff_nvme_swap *s, zoff_nvme_request *r) {
    if (atomic_load(&r->state) != REQ_VERIFY) return;
    atomic_store(&r->state, REQ_VERIFYING);
    pthread_mutex_unlock(&s->mu);
    int result = verify(s, r); /* r is out of the queue: only this thread touches it */
    pthread_mutex_lock(&s->mu);
    complete_locked(s, r, result);
}

bool zoff_nvme_take_op_locked(zoff_nvme_swap *s, zoff_nvme_op *op) {
    zoff_nvme_request *r;
    while ((r = s->q_head)) {
        if (r->err || atomic_load(&r->canceled)) {
            unqueue_locked(s, r);
            if (r->ops_inflight == 0) complete_locked(s, r, final_result(r));
            continue;
        }
        uint64_t S = s->cfg.stripe_size;
        uint64_t logical = r->region->base + r->offset + r->next_off;
        uint64_t stripe = logical / S, within = logical % S;
        size_t len = r->len - r->next_off;
        if (len > S - within) len = (size_t)(S - within);
        if (len > s->cfg.block_size) len = s->cfg.block_size;
        op->req = r;
        op->file = (int)(stripe % s->n_files);
        op->file_off = stripe / s->n_files * S + within;
        op->buf = r->buf + r->next_off;
        op->len = len;
        op->done = 0;
        op->buf_index = -1;
        op->seq = s->op_seq++;
        op->injected = 0;
        op->retries = 0;
        r->next_off += len;
        r->ops_inflight++;
        atomic_store(&r->state, REQ_RUNNING);
        if (r->next_off == r->len) unqueue_locked(s, r);
        return true;
    }
    return false;
}

static int inject_now(unsigned every, const zoff_nvme_op *op) {
    return every && !op->injected && op->seq % every == every - 1;
}

size_t zoff_nvme_op_submit_len(zoff_nvme_swap *s, const zoff_nvme_op *op) {
    size_t rest = op->len - op->done;
    if (inject_now(s->cfg.debug_short_every, op) && rest >= 2 * PAGE) return rest / 2 / PAGE * PAGE;
    return rest;
}

int zoff_nvme_op_result(zoff_nvme_swap *s, zoff_nvme_op *op, long res) {
    if (res >= 0 && inject_now(s->cfg.debug_error_every, op) && s->cfg.debug_error_errno > 0) {
        op->injected = 1;
        return -s->cfg.debug_error_errno;
    }
    if (res >= 0 && inject_now(s->cfg.debug_eagain_every, op)) {
        op->injected = 1;
        res = -EAGAIN; /* the transfer happened; redoing it is harmless */
    }
    if (res == -EAGAIN || res == -EINTR) {
        atomic_fetch_add(&s->retried, 1);
        if (++op->retries > 100000) return (int)res; /* a device that never makes progress */
        return 0;
    }
    if (res < 0) return (int)res;
    if (res == 0) return -EIO; /* no progress: unexpected end of file or device */
    if (inject_now(s->cfg.debug_short_every, op)) op->injected = 1;
    op->done += (size_t)res;
    if (op->done < op->len) {
        atomic_fetch_add(&s->short_requeued, 1);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ regions */

int zoff_nvme_region_define(zoff_nvme_swap *s, const char *name, size_t bytes,
                            zoff_nvme_region **out) {
    *out = NULL;
    if (!name || !bytes) return zoff_fail(-EINVAL, MOD, "region needs a name and a nonzero size");
    uint64_t size = (bytes + PAGE - 1) / PAGE * PAGE;
    zoff_nvme_region *g = calloc(1, sizeof *g);
    if (!g) return zoff_fail(-ENOMEM, MOD, "region '%s'", name);
    g->name = strdup(name);
    g->size = size;
    size_t pages = size / PAGE;
    g->written = calloc((pages + 63) / 64, sizeof(uint64_t));
    if (s->cfg.checksums)
        g->csums =
            calloc((size + s->cfg.checksum_block - 1) / s->cfg.checksum_block, sizeof(uint64_t));
    if (!g->name || !g->written || (s->cfg.checksums && !g->csums)) {
        free(g->name);
        free(g->written);
        free(g->csums);
        free(g);
        return zoff_fail(-ENOMEM, MOD, "region '%s' of %llu bytes", name, (unsigned long long)size);
    }
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    for (zoff_nvme_region *o = s->regions; o; o = o->next)
        if (strcmp(o->name, name) == 0) rc = -EEXIST;
    uint64_t align = size >= s->cfg.stripe_size ? s->cfg.stripe_size : PAGE;
    uint64_t base = (s->next_base + align - 1) / align * align;
    if (!rc && base + size > s->cfg.capacity) rc = -ENOSPC;
    if (!rc) {
        g->base = base;
        s->next_base = base + size;
        g->next = s->regions;
        s->regions = g;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        free(g->name);
        free(g->written);
        free(g->csums);
        free(g);
        if (rc == -EEXIST) return zoff_fail(rc, MOD, "region '%s' is already defined", name);
        return zoff_fail(rc, MOD,
                         "region '%s' (%llu bytes) does not fit: swap capacity %zu bytes, %llu "
                         "used",
                         name, (unsigned long long)size, s->cfg.capacity,
                         (unsigned long long)s->next_base);
    }
    *out = g;
    return 0;
}

int zoff_nvme_region_lookup(zoff_nvme_swap *s, const char *name, zoff_nvme_region **out) {
    *out = NULL;
    pthread_mutex_lock(&s->mu);
    for (zoff_nvme_region *g = s->regions; g; g = g->next)
        if (strcmp(g->name, name) == 0) *out = g;
    pthread_mutex_unlock(&s->mu);
    return *out ? 0 : zoff_fail(-ENOENT, MOD, "no region named '%s'", name);
}

size_t zoff_nvme_region_size(const zoff_nvme_region *g) {
    return g->size;
}
const char *zoff_nvme_region_name(const zoff_nvme_region *g) {
    return g->name;
}

/* ------------------------------------------------------------ requests */

static int validate(zoff_nvme_swap *s, const zoff_nvme_io *io) {
    const zoff_nvme_region *g = io->region;
    if (!g || !io->buf) return zoff_fail(-EINVAL, MOD, "request without region or buffer");
    if ((uintptr_t)io->buf % PAGE || !aligned(io->offset) || !aligned(io->len) || !io->len)
        return zoff_fail(-EINVAL, MOD,
                         "region '%s': buffer %p, offset %llu and length %zu must be nonzero "
                         "multiples of 4096",
                         g->name, io->buf, (unsigned long long)io->offset, io->len);
    if (io->offset > g->size || io->len > g->size - io->offset)
        return zoff_fail(-EINVAL, MOD, "range %llu+%zu is outside region '%s' (%zu bytes)",
                         (unsigned long long)io->offset, io->len, g->name, g->size);
    size_t cb = s->cfg.checksum_block;
    if (s->cfg.checksums && (io->offset % cb || (io->len % cb && io->offset + io->len != g->size)))
        return zoff_fail(-EINVAL, MOD,
                         "region '%s': with checksums on, range %llu+%zu must be aligned to "
                         "the %zu-byte checksum block (or end at the region's end)",
                         g->name, (unsigned long long)io->offset, io->len, cb);
    return 0;
}

static zoff_nvme_request *make_request(zoff_nvme_swap *s, const zoff_nvme_io *io) {
    zoff_nvme_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->swap = s;
    r->region = io->region;
    r->offset = io->offset;
    r->buf = io->buf;
    r->len = io->len;
    r->write = io->write;
    if (s->cfg.checksums) {
        size_t cb = s->cfg.checksum_block;
        r->n_csums = (io->len + cb - 1) / cb;
        r->csums = malloc(r->n_csums * sizeof *r->csums);
        if (!r->csums) {
            free(r);
            return NULL;
        }
    }
    return r;
}

static void free_request_mem(zoff_nvme_request *r) {
    free(r->csums);
    free(r);
}

int zoff_nvme_submit_batch(zoff_nvme_swap *s, const zoff_nvme_io *ios, size_t n,
                           zoff_nvme_request **out) {
    for (size_t i = 0; i < n; i++)
        out[i] = NULL;
    for (size_t i = 0; i < n; i++) {
        int rc = validate(s, &ios[i]);
        if (rc) return rc;
    }
    for (size_t i = 0; i < n; i++) {
        out[i] = make_request(s, &ios[i]);
        if (!out[i]) {
            for (size_t j = 0; j < i; j++)
                free_request_mem(out[j]);
            for (size_t j = 0; j < n; j++)
                out[j] = NULL;
            return zoff_fail(-ENOMEM, MOD, "request structs");
        }
    }
    /* A write's checksums, on the caller's thread, before it is queued. Hashing while the
     * transfer already ran (overlapping the two) measured 20% slower than this on a virtual
     * disk (bench_nvme, 1 MiB, depth 32, huge-page buffers: 0.80 of fio against 0.99-1.01):
     * hashed just before, the buffer is still in cache when the transfer reads it. With
     * queue_depth operations in flight the device does not wait for the hash. */
    for (size_t i = 0; i < n; i++) {
        zoff_nvme_request *r = out[i];
        if (!r->write || !r->csums) continue;
        for (size_t k = 0; k < r->n_csums; k++)
            r->csums[k] = block_checksum(s, r, k);
    }
    pthread_mutex_lock(&s->mu);
    if (s->shutting_down) {
        pthread_mutex_unlock(&s->mu);
        for (size_t i = 0; i < n; i++) {
            free_request_mem(out[i]);
            out[i] = NULL;
        }
        return zoff_fail(ZOFF_ECANCELED, MOD, "swap space is shutting down");
    }
    int queued = 0;
    for (size_t i = 0; i < n; i++) {
        zoff_nvme_request *r = out[i];
        r->all_next = s->all;
        if (s->all) s->all->all_prev = r;
        s->all = r;
        if (!r->write) {
            if (!all_written(r->region, r->offset, r->len)) {
                snprintf(r->detail, sizeof r->detail,
                         "read of region '%s' bytes %llu+%zu: part of the range was never "
                         "written",
                         r->region->name, (unsigned long long)r->offset, r->len);
                complete_locked(s, r, ZOFF_ENOTWRITTEN);
                continue;
            }
            if (r->csums)
                memcpy(r->csums, r->region->csums + r->offset / s->cfg.checksum_block,
                       r->n_csums * sizeof *r->csums);
        }
        r->in_queue = 1;
        if (s->q_tail)
            s->q_tail->qnext = r;
        else
            s->q_head = r;
        s->q_tail = r;
        queued++;
    }
    if (queued) s->be->kick(s);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int zoff_nvme_submit_write(zoff_nvme_swap *s, zoff_nvme_region *g, uint64_t offset, const void *buf,
                           size_t len, zoff_nvme_request **out) {
    zoff_nvme_io io = {g, offset, (void *)buf, len, 1};
    return zoff_nvme_submit_batch(s, &io, 1, out);
}

int zoff_nvme_submit_read(zoff_nvme_swap *s, zoff_nvme_region *g, uint64_t offset, void *buf,
                          size_t len, zoff_nvme_request **out) {
    zoff_nvme_io io = {g, offset, buf, len, 0};
    return zoff_nvme_submit_batch(s, &io, 1, out);
}

int zoff_nvme_poll(zoff_nvme_request *r, int *result) {
    int st = atomic_load_explicit(&r->state, memory_order_acquire);
    if (st == REQ_VERIFY) {
        pthread_mutex_lock(&r->swap->mu);
        claim_verify_locked(r->swap, r);
        pthread_mutex_unlock(&r->swap->mu);
        st = atomic_load_explicit(&r->state, memory_order_acquire);
    }
    if (st != REQ_DONE) return 0;
    if (result) *result = r->result;
    return 1;
}

int zoff_nvme_wait(zoff_nvme_request *r) {
    zoff_nvme_swap *s = r->swap;
    pthread_mutex_lock(&s->mu);
    while (atomic_load(&r->state) != REQ_DONE) {
        if (atomic_load(&r->state) == REQ_VERIFY)
            claim_verify_locked(s, r);
        else
            pthread_cond_wait(&s->done_cv, &s->mu);
    }
    int result = r->result, report = result && !r->reported;
    r->reported = 1;
    pthread_mutex_unlock(&s->mu);
    /* ZOFF_ENOTWRITTEN and cancellation are answers, not faults: no error log for them. */
    if (report && result != ZOFF_ECANCELED && result != ZOFF_ENOTWRITTEN)
        zoff_fail(result, MOD, "%s", r->detail);
    return result;
}

int zoff_nvme_wait_all(zoff_nvme_request *const *reqs, size_t n, int *results) {
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = zoff_nvme_wait(reqs[i]);
        if (results) results[i] = rc;
        if (rc && !first) first = rc;
    }
    return first;
}

int zoff_nvme_wait_any(zoff_nvme_request *const *reqs, size_t n, int *result) {
    zoff_nvme_swap *s = NULL;
    for (size_t i = 0; i < n && !s; i++)
        if (reqs[i]) s = reqs[i]->swap;
    if (!s) return zoff_fail(-EINVAL, MOD, "wait_any on no request");
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (size_t i = 0; i < n; i++) {
            zoff_nvme_request *r = reqs[i];
            if (!r) continue;
            if (atomic_load(&r->state) == REQ_VERIFY) claim_verify_locked(s, r);
            if (atomic_load(&r->state) == REQ_DONE) {
                pthread_mutex_unlock(&s->mu);
                *result = zoff_nvme_wait(r); /* done: returns at once, raises the detail */
                return (int)i;
            }
        }
        pthread_cond_wait(&s->done_cv, &s->mu);
    }
}

void zoff_nvme_cancel(zoff_nvme_request *r) {
    zoff_nvme_swap *s = r->swap;
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&r->state) != REQ_DONE) {
        atomic_store(&r->canceled, 1);
        if (r->ops_inflight == 0 && r->next_off == 0) {
            unqueue_locked(s, r);
            complete_locked(s, r, ZOFF_ECANCELED);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

const char *zoff_nvme_request_detail(const zoff_nvme_request *r) {
    return atomic_load_explicit(&((zoff_nvme_request *)r)->state, memory_order_acquire) == REQ_DONE
               ? r->detail
               : "";
}

void zoff_nvme_request_free(zoff_nvme_request *r) {
    if (!r) return;
    zoff_nvme_swap *s = r->swap;
    if (atomic_load_explicit(&r->state, memory_order_acquire) != REQ_DONE) {
        zoff_nvme_cancel(r);
        pthread_mutex_lock(&s->mu);
        while (atomic_load(&r->state) != REQ_DONE) {
            if (atomic_load(&r->state) == REQ_VERIFY) /* nobody will look: skip the hash */
                complete_locked(s, r, ZOFF_ECANCELED);
            else
                pthread_cond_wait(&s->done_cv, &s->mu);
        }
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&s->mu);
    if (r->all_prev)
        r->all_prev->all_next = r->all_next;
    else
        s->all = r->all_next;
    if (r->all_next) r->all_next->all_prev = r->all_prev;
    pthread_mutex_unlock(&s->mu);
    free_request_mem(r);
}

void zoff_nvme_swap_debug_faults(zoff_nvme_swap *s, unsigned error_every, int error_errno) {
    pthread_mutex_lock(&s->mu);
    s->cfg.debug_error_every = error_every;
    s->cfg.debug_error_errno = error_errno;
    s->op_seq = 0; /* counted from here */
    pthread_mutex_unlock(&s->mu);
}

void zoff_nvme_swap_get_info(zoff_nvme_swap *s, zoff_nvme_swap_info *o) {
    memset(o, 0, sizeof *o);
    pthread_mutex_lock(&s->mu);
    o->backend = s->backend_name;
    o->direct = s->direct;
    o->fixed_buffers = s->fixed_buffers;
    o->fixed_files = s->fixed_files;
    o->sqpoll = s->sqpoll_on;
    o->n_stale_found = s->n_stale;
    o->capacity = s->cfg.capacity;
    o->used = (size_t)s->next_base;
    o->n_files = s->n_files;
    for (unsigned i = 0; i < s->n_files; i++)
        o->files[i] = s->paths[i];
    o->file_size = s->file_size;
    pthread_mutex_unlock(&s->mu);
    o->bytes_read = atomic_load(&s->bytes_read);
    o->bytes_written = atomic_load(&s->bytes_written);
    o->short_requeued = atomic_load(&s->short_requeued);
    o->retried = atomic_load(&s->retried);
    o->requests_failed = atomic_load(&s->requests_failed);
}

void zoff_nvme_swap_destroy(zoff_nvme_swap *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->shutting_down = 1;
    for (zoff_nvme_request *r = s->q_head; r; r = r->qnext)
        atomic_store(&r->canceled, 1);
    zoff_nvme_request *r = s->q_head;
    while (r) {
        zoff_nvme_request *n = r->qnext;
        if (r->ops_inflight == 0 && r->next_off == 0) {
            unqueue_locked(s, r);
            complete_locked(s, r, ZOFF_ECANCELED);
        }
        r = n;
    }
    s->be->kick(s);
    pthread_mutex_unlock(&s->mu);
    s->be->stop(s); /* drains operations in flight and joins the backend's threads */
    close_files(s);
    r = s->all;
    while (r) {
        zoff_nvme_request *n = r->all_next;
        free_request_mem(r);
        r = n;
    }
    free_regions(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->done_cv);
    free(s);
}
