/* nvme: the swapper that keeps training state on NVMe (ZeRO-Infinity style).
 *
 * A swap space spans one or more directories (one per drive); its logical address space is
 * striped across one preallocated file per directory, RAID-0 style. The engine defines named
 * regions in it ("bucket 17: m") and writes or reads byte ranges of a region from or into its
 * own 4096-aligned buffers. Every submission returns a request handle to poll or wait on;
 * each request ends with its own result: 0, -errno (-ENOSPC, -EIO, -EFBIG, -EROFS, ...),
 * ZOFF_ECHECKSUM, ZOFF_ENOTWRITTEN or ZOFF_ECANCELED. Nothing is silent: a read of a range
 * never written, a short transfer that cannot be completed, or data whose checksum no longer
 * matches, all end the request with an error; the library never aborts or prints.
 *
 * Backends (chosen at creation, never from the environment):
 *   io_uring + O_DIRECT  the fast path: fixed files, fixed buffers for pool buffers, batched
 *                        submission, optional SQPOLL, every cqe->res checked, short I/O
 *                        requeued, -EAGAIN/-EINTR retried;
 *   io_uring buffered    when the file system refuses O_DIRECT (EINVAL: ramfs, tmpfs before
 *                        Linux 6.6), one warning;
 *   pthread              pread/pwrite worker threads, when io_uring is refused (ENOSYS/EPERM).
 *
 * Threads: all functions are thread-safe except zoff_nvme_swap_destroy, which must not race
 * with other calls on the same swap (requests still in flight are canceled or drained first).
 * I/O runs on the swapper's own thread(s); the caller's buffer belongs to the swapper from
 * submission until the request is complete.
 */
#ifndef ZOFF_NVME_NVME_H
#define ZOFF_NVME_NVME_H

#include "zoff/zoff.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Alignment of buffers, offsets and lengths of every request (O_DIRECT's logical block). */
#define ZOFF_NVME_ALIGN    4096u
#define ZOFF_NVME_MAX_DIRS 16

/* ---------------------------------------------------------------- buffer pool */

/* Host memory for O_DIRECT transfers: 2 MiB aligned, advised as transparent huge pages and
 * faulted in (zeroed). A 1 MiB transfer into huge pages is one physical segment instead of 256
 * pages, so the device's segment limit (virtio: 254) does not split it; and on a virtual machine
 * a 4 KiB-page buffer that the disk just wrote was measured slow for the CPU to read too (the
 * CPU Adam over NVMe state staged in 4 KiB pages: 0.75-0.85 of its speed over the same state
 * held in memory). The size is rounded up to 2 MiB (into *rounded unless NULL: all of it
 * usable). NULL when out of memory. Free with zoff_nvme_huge_free (NULL is fine). */
void *zoff_nvme_huge_alloc(size_t bytes, size_t *rounded);
void zoff_nvme_huge_free(void *p);

/* Optional allocator for pool memory, e.g. CUDA pinned host memory. Must return memory
 * aligned to ZOFF_NVME_ALIGN, or NULL. */
typedef void *(*zoff_nvme_alloc_fn)(size_t bytes, void *user);
typedef void (*zoff_nvme_free_fn)(void *ptr, size_t bytes, void *user);

typedef struct zoff_nvme_pool_config {
    size_t budget;            /* total bytes the pool may hold (default 64 MiB) */
    size_t buffer_size;       /* bytes per buffer, multiple of 4096 (default 4 MiB) */
    zoff_nvme_alloc_fn alloc; /* NULL: posix_memalign + mlock attempt */
    zoff_nvme_free_fn free;   /* required when alloc is set */
    void *user;
} zoff_nvme_pool_config;

typedef struct zoff_nvme_pool_stats {
    size_t budget; /* bytes held by the pool (all buffers are allocated up front) */
    size_t buffer_size;
    size_t n_buffers;
    size_t in_use;     /* buffers handed out now */
    size_t high_water; /* most buffers ever handed out at once */
    size_t high_water_bytes;
    int locked; /* 1 when the default allocator's mlock succeeded */
} zoff_nvme_pool_stats;

typedef struct zoff_nvme_pool zoff_nvme_pool;

zoff_nvme_pool_config zoff_nvme_pool_config_default(void);
/* Allocates budget / buffer_size buffers now (at least one); -ENOMEM/ZOFF_EHOST_OOM if the
 * allocator fails, ZOFF_ECONFIG for bad sizes. */
int zoff_nvme_pool_create(const zoff_nvme_pool_config *cfg, zoff_nvme_pool **out);
/* Frees every buffer; buffers still acquired become invalid. NULL is a no-op. */
void zoff_nvme_pool_destroy(zoff_nvme_pool *pool);
/* Waits until a buffer is free; never allocates. */
int zoff_nvme_pool_acquire(zoff_nvme_pool *pool, void **buf);
/* As acquire, but -EAGAIN at once when none is free. */
int zoff_nvme_pool_try_acquire(zoff_nvme_pool *pool, void **buf);
/* As acquire, but ZOFF_EHOST_OOM after timeout_ms. */
int zoff_nvme_pool_acquire_timeout(zoff_nvme_pool *pool, unsigned timeout_ms, void **buf);
/* Returns a buffer; -EINVAL if it is not one of this pool's acquired buffers. */
int zoff_nvme_pool_release(zoff_nvme_pool *pool, void *buf);
void zoff_nvme_pool_get_stats(zoff_nvme_pool *pool, zoff_nvme_pool_stats *out);

/* --------------------------------------------------------------------- swap space */

typedef enum zoff_nvme_backend {
    ZOFF_NVME_BACKEND_AUTO = 0,           /* io_uring+O_DIRECT, degrading as described above */
    ZOFF_NVME_BACKEND_URING = 1,          /* io_uring, O_DIRECT (buffered if refused) */
    ZOFF_NVME_BACKEND_URING_BUFFERED = 2, /* io_uring through the page cache */
    ZOFF_NVME_BACKEND_PTHREAD = 3,        /* pread/pwrite thread pool (O_DIRECT if possible) */
} zoff_nvme_backend;

/* "auto", "uring", "uring-buffered", "pthread" (for the CLI's flags); -EINVAL otherwise. */
int zoff_nvme_backend_parse(const char *text, zoff_nvme_backend *out);
const char *zoff_nvme_backend_name(zoff_nvme_backend b); /* the same names; "?" if invalid */

typedef struct zoff_nvme_config {
    const char *dirs[ZOFF_NVME_MAX_DIRS]; /* swap directories; must exist and be writable */
    unsigned n_dirs;
    size_t capacity;       /* logical bytes of swap space (default 256 MiB) */
    size_t stripe_size;    /* bytes per stripe unit, multiple of 4096 (default 1 MiB) */
    size_t block_size;     /* largest single I/O operation, multiple of 4096 (default 1 MiB) */
    unsigned queue_depth;  /* operations in flight (default 32, at most 4096) */
    int sqpoll;            /* io_uring SQPOLL (default 0: it costs a polling core) */
    int checksums;         /* XXH3 per checksum block, verified on read (default 1) */
    size_t checksum_block; /* bytes per checksum, multiple of 4096 (default 64 KiB) */
    zoff_nvme_backend backend;
    int preallocate;          /* fallocate the files at creation (default 1) */
    int remove_stale;         /* stale files of a dead run are reclaimed anyway when their owner
                                 PID is gone; 1: also when a process with that PID runs (reused
                                 PID) (default 0) */
    unsigned pthread_threads; /* workers of the pthread backend (default 4) */
    zoff_nvme_pool *pool;     /* optional: its buffers are registered as io_uring fixed buffers */
    /* Fault injection for tests (0 = off): every Nth operation is submitted short (half its
     * length, aligned), answered -EAGAIN once, or fails with -inject_errno. */
    unsigned debug_short_every;
    unsigned debug_eagain_every;
    unsigned debug_error_every;
    int debug_error_errno;
} zoff_nvme_config;

typedef struct zoff_nvme_swap zoff_nvme_swap;
typedef struct zoff_nvme_region zoff_nvme_region;
typedef struct zoff_nvme_request zoff_nvme_request;

typedef struct zoff_nvme_swap_info {
    const char *backend; /* "io_uring", "io_uring buffered", "pthread", "pthread buffered" */
    int direct;          /* O_DIRECT in use */
    int fixed_buffers;   /* pool buffers registered with io_uring */
    int fixed_files;     /* the swap files registered with io_uring */
    int sqpoll;
    unsigned n_stale_found; /* stale swap files of dead runs seen at creation */
    size_t capacity, used;  /* bytes; used = sum of region sizes (rounded) */
    uint64_t bytes_read, bytes_written;
    uint64_t short_requeued; /* short transfers resubmitted for the rest */
    uint64_t retried;        /* -EAGAIN/-EINTR resubmissions */
    uint64_t requests_failed;
    unsigned n_files;                      /* one swap file per directory */
    const char *files[ZOFF_NVME_MAX_DIRS]; /* their paths, valid until the swap is destroyed
                                              (e.g. for a baseline tool run on the same file) */
    uint64_t file_size;                    /* bytes of each file */
} zoff_nvme_swap_info;

zoff_nvme_config zoff_nvme_config_default(void);
/* Opens (O_DIRECT if allowed) and preallocates one file per directory, takes a lock file per
 * directory, reclaims stale files of crashed runs whose PID is gone (logged), and
 * starts the backend. Errors name the directory: -ENOSPC (preallocation), -EROFS, -EACCES,
 * ZOFF_ECONFIG. */
int zoff_nvme_swap_create(const zoff_nvme_config *cfg, zoff_nvme_swap **out);
/* Cancels queued requests, drains those in flight, stops the threads, closes and removes the
 * swap and lock files, and frees every request and region. NULL is a no-op. */
void zoff_nvme_swap_destroy(zoff_nvme_swap *swap);
/* Unlinks the swap and lock files of every swap this process holds, without freeing or
 * stopping anything: for a signal handler about to _exit (async-signal-safe). */
void zoff_nvme_release_files_now(void);
void zoff_nvme_swap_get_info(zoff_nvme_swap *swap, zoff_nvme_swap_info *out);
/* Tests: from now on every Nth operation fails with -error_errno (as debug_error_every and
 * debug_error_errno at creation, which would also hit the set-up's writes). Call with no
 * request in flight. */
void zoff_nvme_swap_debug_faults(zoff_nvme_swap *swap, unsigned error_every, int error_errno);

/* Defines a named region of `bytes` (rounded up to 4096). -EEXIST for a duplicate name,
 * -ENOSPC when capacity is exhausted. The region lives until the swap is destroyed. */
int zoff_nvme_region_define(zoff_nvme_swap *swap, const char *name, size_t bytes,
                            zoff_nvme_region **out);
/* -ENOENT if no region has that name. */
int zoff_nvme_region_lookup(zoff_nvme_swap *swap, const char *name, zoff_nvme_region **out);
size_t zoff_nvme_region_size(const zoff_nvme_region *region);
const char *zoff_nvme_region_name(const zoff_nvme_region *region);

/* One transfer: buf, offset and len multiples of 4096; with checksums on, offset a multiple
 * of checksum_block and len too unless the range ends at the region's end. */
typedef struct zoff_nvme_io {
    zoff_nvme_region *region;
    uint64_t offset;
    void *buf;
    size_t len;
    int write; /* 1: buf -> swap; 0: swap -> buf */
} zoff_nvme_io;

/* Submit: -EINVAL (alignment, range outside the region) or ZOFF_ECANCELED (swap shutting
 * down) come back at once and *out is NULL; every other outcome is the request's result. */
int zoff_nvme_submit_write(zoff_nvme_swap *swap, zoff_nvme_region *region, uint64_t offset,
                           const void *buf, size_t len, zoff_nvme_request **out);
int zoff_nvme_submit_read(zoff_nvme_swap *swap, zoff_nvme_region *region, uint64_t offset,
                          void *buf, size_t len, zoff_nvme_request **out);
/* Submits n transfers with one wake-up of the backend. On an -EINVAL for ios[i], nothing is
 * submitted and every out[] is NULL. */
int zoff_nvme_submit_batch(zoff_nvme_swap *swap, const zoff_nvme_io *ios, size_t n,
                           zoff_nvme_request **out);

/* With checksums on, a read's blocks are verified on the first thread that waits on or
 * polls it once its data has arrived (hashing is spread over the consumers instead of
 * serializing the I/O thread); the request is complete only after that.
 * 1 and *result set when the request is complete, else 0. Never sleeps. */
int zoff_nvme_poll(zoff_nvme_request *req, int *result);
/* Waits for completion; returns the request's result. */
int zoff_nvme_wait(zoff_nvme_request *req);
/* Waits for all; results[i] (may be NULL) gets each result; returns the first nonzero. */
int zoff_nvme_wait_all(zoff_nvme_request *const *reqs, size_t n, int *results);
/* Waits until at least one of reqs[0..n) (non-NULL entries) is complete; returns its index
 * and its result in *result. -EINVAL if every entry is NULL. */
int zoff_nvme_wait_any(zoff_nvme_request *const *reqs, size_t n, int *result);
/* Asks for cancellation: a request not yet started ends with ZOFF_ECANCELED at once; one in
 * flight stops issuing operations and ends with ZOFF_ECANCELED once those drain, unless it
 * had already transferred everything. A canceled or failed write leaves its range unwritten. */
void zoff_nvme_cancel(zoff_nvme_request *req);
/* Text naming the file, offset and failing operation of a failed request ("" if none). */
const char *zoff_nvme_request_detail(const zoff_nvme_request *req);
/* Frees a request; if it is not complete it is canceled and waited for first. */
void zoff_nvme_request_free(zoff_nvme_request *req);

/* ---------------------------------------------------------------------- probe */

/* What `zoff info --nvme-path DIR` prints: what the swapper would do in DIR. The probe
 * writes and removes one small temporary file there. */
typedef struct zoff_nvme_probe_result {
    int uring_ok;        /* io_uring_queue_init and a read through it worked */
    int uring_errno;     /* positive errno when !uring_ok (ENOSYS, EPERM, ...) */
    int direct_ok;       /* O_DIRECT open and aligned write/read worked in dir */
    int direct_errno;    /* positive errno when !direct_ok (EINVAL: ramfs, tmpfs < 6.6) */
    uint64_t free_bytes; /* available to unprivileged users (statvfs f_bavail) */
    uint64_t total_bytes;
    char fs_type[32]; /* "ext4", "xfs", "btrfs", "tmpfs", "overlay", ... or "0x<magic>" */
    char backend[48]; /* what AUTO picks: "io_uring+O_DIRECT", "io_uring buffered",
                         "pthread+O_DIRECT", "pthread buffered" */
} zoff_nvme_probe_result;

/* 0 on success (the result says what works); -errno if dir cannot be used at all (named). */
int zoff_nvme_probe(const char *dir, zoff_nvme_probe_result *out);

/* ------------------------------------------------------------------- checksum */

/* XXH3-64 of a buffer (libxxhash). */
uint64_t zoff_nvme_checksum(const void *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif
