/* nvme internals shared by swap_space.c (requests, regions, files) and the two backends.
 *
 * Ownership and locking: swap->mu protects the run queue, every request's scheduling fields
 * (next_off, ops_inflight, err, state changes), regions' written bitmaps and checksums, and
 * the counters. A backend takes work with zoff_nvme_take_op() (under mu, called through the
 * _locked variant by pthread workers) and reports each finished operation with
 * zoff_nvme_op_done(), which completes the request when its last operation ends.
 */
#ifndef ZOFF_NVME_INTERNAL_H
#define ZOFF_NVME_INTERNAL_H

#include "nvme/nvme.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* REQ_VERIFY: a read with checksums has all its bytes; the first thread to wait on or poll
 * it moves it to REQ_VERIFYING, hashes the buffer without the lock, and completes it. */
enum { REQ_QUEUED = 0, REQ_RUNNING = 1, REQ_DONE = 2, REQ_VERIFY = 3, REQ_VERIFYING = 4 };

struct zoff_nvme_region {
    char *name;
    uint64_t base;     /* logical byte offset in the swap space */
    size_t size;       /* rounded up to ZOFF_NVME_ALIGN */
    uint64_t *written; /* bitmap, one bit per 4096-byte page */
    uint64_t *csums;   /* one XXH3 per checksum block (checksums on) */
    struct zoff_nvme_region *next;
};

struct zoff_nvme_request {
    zoff_nvme_swap *swap;
    zoff_nvme_region *region;
    uint64_t offset;
    uint8_t *buf;
    size_t len;
    int write;
    size_t next_off; /* bytes already handed out as operations */
    unsigned ops_inflight;
    int err;          /* first error of any operation */
    atomic_int state; /* REQ_* */
    atomic_int canceled;
    int result;   /* valid once state == REQ_DONE */
    int reported; /* the error was raised with zoff_fail on the caller's thread */
    int in_queue;
    uint64_t *csums; /* write: computed before it is queued; read: expected, copied at submission */
    size_t n_csums;
    char detail[192];
    struct zoff_nvme_request *qnext;               /* run queue */
    struct zoff_nvme_request *all_prev, *all_next; /* every live request, for destroy */
};

/* One I/O operation: a piece of a request within one stripe unit of one file. */
typedef struct zoff_nvme_op {
    zoff_nvme_request *req;
    int file;
    uint64_t file_off;
    uint8_t *buf;
    size_t len;
    size_t done;
    int buf_index;    /* io_uring fixed buffer index, -1 if none */
    unsigned seq;     /* operation number, for fault injection */
    int injected;     /* a fault was already injected into this operation */
    unsigned retries; /* -EAGAIN/-EINTR resubmissions so far (capped: never spin forever) */
} zoff_nvme_op;

typedef struct zoff_nvme_backend_ops {
    const char *name;
    void (*kick)(zoff_nvme_swap *swap); /* new work queued (called with mu held) */
    void (*stop)(zoff_nvme_swap *swap); /* drain and join (called without mu) */
} zoff_nvme_backend_ops;

struct zoff_nvme_swap {
    zoff_nvme_config cfg;
    unsigned n_files;
    int fds[ZOFF_NVME_MAX_DIRS];
    char *paths[ZOFF_NVME_MAX_DIRS];
    char *lock_paths[ZOFF_NVME_MAX_DIRS];
    int lock_fds[ZOFF_NVME_MAX_DIRS];
    int emergency_slot[ZOFF_NVME_MAX_DIRS]; /* in the signal-safe release table, -1 none */
    uint64_t file_size;
    int direct;
    unsigned n_stale;

    pthread_mutex_t mu;
    pthread_cond_t done_cv;
    zoff_nvme_request *q_head, *q_tail; /* requests with operations still to hand out */
    zoff_nvme_request *all;             /* every live request */
    zoff_nvme_region *regions;
    uint64_t next_base;
    int shutting_down;
    unsigned op_seq;

    _Atomic uint64_t bytes_read, bytes_written, short_requeued, retried, requests_failed;

    const zoff_nvme_backend_ops *be;
    void *be_state;
    const char *backend_name;
    int fixed_buffers, fixed_files, sqpoll_on;
};

/* Backends: 0 or -errno (io_uring refused: the caller falls back). */
int zoff_nvme_uring_start(zoff_nvme_swap *swap);
int zoff_nvme_pthread_start(zoff_nvme_swap *swap);

/* Hands out the next operation of the first runnable request (mu held). false if none. */
bool zoff_nvme_take_op_locked(zoff_nvme_swap *swap, zoff_nvme_op *op);
/* Ends one operation with 0 or -errno; detail says what failed (may be NULL). Takes mu. */
void zoff_nvme_op_done(zoff_nvme_swap *swap, zoff_nvme_op *op, int err);
/* Decides what an operation that moved `res` bytes (or -errno) needs next: 1 done,
 * 0 resubmit (short or retryable; op->done advanced), <0 the error to fail it with.
 * Applies the debug fault injection and counts requeues/retries. */
int zoff_nvme_op_result(zoff_nvme_swap *swap, zoff_nvme_op *op, long res);
/* Length to submit now for op (shorter when short I/O is being injected). */
size_t zoff_nvme_op_submit_len(zoff_nvme_swap *swap, const zoff_nvme_op *op);
/* Pool buffers registered with io_uring: (base, len) list, or 0 if none. */
size_t zoff_nvme_pool_buffers(zoff_nvme_pool *pool, void ***bases, size_t *buf_size);

#endif
