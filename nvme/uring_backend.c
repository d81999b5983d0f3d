/* io_uring backend: one I/O thread owns the ring (both submission and completion queues), so
 * short transfers and -EAGAIN/-EINTR are resubmitted by the same thread that reaps them.
 *
 * Callers queue requests under swap->mu and wake the thread through an eventfd whose read is
 * always armed in the ring, only when the thread said it was idle (st->sleeping, under mu).
 * The thread keeps at most queue_depth operations in flight, in fixed slots whose index is
 * the sqe's user_data; files are registered (fixed files) and, when the config names a
 * buffer pool, its buffers too (read_fixed/write_fixed for operations inside them).
 * Every cqe->res goes through zoff_nvme_op_result: done, resubmit the rest, or fail.
 *
 * Each operation is submitted by its own io_uring_enter, as fio does, not several in one call:
 * the block layer plugs the operations of one call together and merges neighbours (a
 * sequential swap-out of 1 MiB blocks becomes 4 MiB device requests), so the device would see
 * other requests than the configured block size. On a virtio disk that merging cost 20% of
 * the throughput (1 MiB, depth 32: 3.6 GB/s written batched, 4.6 GB/s one per call, as fio
 * got); a system call per block of a megabyte is nothing beside the transfer.
 */
#include "nvme/nvme_internal.h"
#include "core/log.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#define MOD    "nvme"
#define EV_TAG UINT64_MAX

typedef struct fixed_buf {
    uintptr_t base;
    size_t len;
} fixed_buf;

typedef struct uring_state {
    struct io_uring ring;
    pthread_t thread;
    int thread_started;
    int efd;
    uint64_t ev_buf;
    zoff_nvme_op *ops;
    unsigned *free_slots, n_free;
    unsigned *requeue, n_requeue;
    unsigned *fresh, n_fresh; /* slots just taken, to prep outside the lock */
    unsigned inflight;
    int sleeping; /* under swap->mu */
    int fixed_files;
    fixed_buf *bufs;
    size_t n_bufs;
} uring_state;

static int find_fixed(const uring_state *st, const uint8_t *p, size_t len) {
    uintptr_t a = (uintptr_t)p;
    for (size_t i = 0; i < st->n_bufs; i++)
        if (a >= st->bufs[i].base && a + len <= st->bufs[i].base + st->bufs[i].len) return (int)i;
    return -1;
}

static void arm_eventfd(uring_state *st) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&st->ring);
    if (!sqe) {
        io_uring_submit(&st->ring);
        sqe = io_uring_get_sqe(&st->ring);
    }
    io_uring_prep_read(sqe, st->efd, &st->ev_buf, sizeof st->ev_buf, 0);
    io_uring_sqe_set_data64(sqe, EV_TAG);
}

/* Prepares slot's operation and submits it alone (see the top of the file); an sqe the
 * kernel refuses for now (-EAGAIN/-EBUSY) stays queued and goes with the next submission. */
static void prep_op(zoff_nvme_swap *s, uring_state *st, unsigned slot) {
    zoff_nvme_op *op = &st->ops[slot];
    struct io_uring_sqe *sqe = io_uring_get_sqe(&st->ring);
    if (!sqe) { /* cannot happen with entries >= queue_depth + 1, but never lose an op */
        io_uring_submit(&st->ring);
        sqe = io_uring_get_sqe(&st->ring);
    }
    size_t len = zoff_nvme_op_submit_len(s, op);
    uint8_t *buf = op->buf + op->done;
    uint64_t off = op->file_off + op->done;
    int fd = st->fixed_files ? op->file : s->fds[op->file];
    if (op->req->write) {
        if (op->buf_index >= 0)
            io_uring_prep_write_fixed(sqe, fd, buf, (unsigned)len, off, op->buf_index);
        else
            io_uring_prep_write(sqe, fd, buf, (unsigned)len, off);
    } else {
        if (op->buf_index >= 0)
            io_uring_prep_read_fixed(sqe, fd, buf, (unsigned)len, off, op->buf_index);
        else
            io_uring_prep_read(sqe, fd, buf, (unsigned)len, off);
    }
    if (st->fixed_files) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, (uint64_t)slot);
    io_uring_submit(&st->ring);
}

static void handle_cqe(zoff_nvme_swap *s, uring_state *st, struct io_uring_cqe *cqe) {
    uint64_t tag = io_uring_cqe_get_data64(cqe);
    if (tag == EV_TAG) {
        /* the eventfd read: woken by a caller; re-arm (an error here only means a spurious
         * wake-up, so it is not fatal, but it is logged) */
        if (cqe->res < 0 && cqe->res != -EINTR && cqe->res != -EAGAIN && cqe->res != -ECANCELED)
            zoff_log(ZOFF_LOG_WARN, MOD, "eventfd read in io_uring failed: %s",
                     zoff_strerror(cqe->res));
        arm_eventfd(st);
        return;
    }
    unsigned slot = (unsigned)tag;
    zoff_nvme_op *op = &st->ops[slot];
    int rc = zoff_nvme_op_result(s, op, cqe->res);
    if (rc == 0) {
        st->requeue[st->n_requeue++] = slot; /* short or retryable: submit the rest */
        return;
    }
    st->inflight--;
    st->free_slots[st->n_free++] = slot;
    zoff_nvme_op_done(s, op, rc == 1 ? 0 : rc);
}

static void *uring_thread(void *arg) {
    zoff_nvme_swap *s = arg;
    uring_state *st = s->be_state;
    unsigned fails = 0;
    arm_eventfd(st);
    for (;;) {
        while (st->n_requeue)
            prep_op(s, st, st->requeue[--st->n_requeue]);
        pthread_mutex_lock(&s->mu);
        st->sleeping = 0;
        st->n_fresh = 0;
        while (st->n_free) {
            unsigned slot = st->free_slots[st->n_free - 1];
            if (!zoff_nvme_take_op_locked(s, &st->ops[slot])) break;
            st->n_free--;
            st->fresh[st->n_fresh++] = slot;
        }
        int exit_now = s->shutting_down && !s->q_head && st->inflight == 0 && st->n_fresh == 0;
        if (st->n_free) st->sleeping = 1;
        pthread_mutex_unlock(&s->mu);
        if (exit_now) break;
        for (unsigned i = 0; i < st->n_fresh; i++) {
            unsigned slot = st->fresh[i];
            zoff_nvme_op *op = &st->ops[slot];
            op->buf_index = find_fixed(st, op->buf, op->len);
            prep_op(s, st, slot);
            st->inflight++;
        }
        int rc = io_uring_submit_and_wait(&st->ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            if (fails++ % 1000 == 0)
                zoff_log(ZOFF_LOG_ERROR, MOD, "io_uring_enter failed: %s; retrying",
                         zoff_strerror(rc));
            usleep(1000);
        } else {
            fails = 0;
        }
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&st->ring, head, cqe) {
            handle_cqe(s, st, cqe);
            n++;
        }
        io_uring_cq_advance(&st->ring, n);
    }
    return NULL;
}

static void uring_kick(zoff_nvme_swap *s) {
    uring_state *st = s->be_state;
    if (!st->sleeping && !s->shutting_down) return;
    st->sleeping = 0;
    uint64_t one = 1;
    ssize_t w;
    do {
        w = write(st->efd, &one, sizeof one);
    } while (w < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated: a wake-up is pending anyway */
}

static void uring_free(uring_state *st, int ring_up) {
    if (ring_up) io_uring_queue_exit(&st->ring);
    if (st->efd >= 0) close(st->efd);
    free(st->ops);
    free(st->free_slots);
    free(st->requeue);
    free(st->fresh);
    free(st->bufs);
    free(st);
}

static void uring_stop(zoff_nvme_swap *s) {
    uring_state *st = s->be_state;
    pthread_mutex_lock(&s->mu);
    uring_kick(s);
    pthread_mutex_unlock(&s->mu);
    pthread_join(st->thread, NULL);
    uring_free(st, 1);
    s->be_state = NULL;
}

static const zoff_nvme_backend_ops uring_ops = {"io_uring", uring_kick, uring_stop};
static const zoff_nvme_backend_ops uring_buffered_ops = {"io_uring buffered", uring_kick,
                                                         uring_stop};

static int ring_init(zoff_nvme_swap *s, uring_state *st, unsigned entries) {
    struct io_uring_params p;
    if (s->cfg.sqpoll) {
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_SQPOLL;
        p.sq_thread_idle = 100; /* ms before the kernel thread sleeps */
        int rc = io_uring_queue_init_params(entries, &st->ring, &p);
        if (rc == 0) {
            s->sqpoll_on = 1;
            return 0;
        }
        zoff_log(ZOFF_LOG_WARN, MOD, "io_uring SQPOLL refused (%s); using normal submission",
                 zoff_strerror(rc));
    }
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_COOP_TASKRUN;
    int rc = io_uring_queue_init_params(entries, &st->ring, &p);
    if (rc == -EINVAL) { /* kernel older than 5.19 */
        memset(&p, 0, sizeof p);
        rc = io_uring_queue_init_params(entries, &st->ring, &p);
    }
    return rc;
}

int zoff_nvme_uring_start(zoff_nvme_swap *s) {
    uring_state *st = calloc(1, sizeof *st);
    if (!st) return -ENOMEM;
    st->efd = -1;
    unsigned qd = s->cfg.queue_depth;
    st->ops = calloc(qd, sizeof *st->ops);
    st->free_slots = calloc(qd, sizeof(unsigned));
    st->requeue = calloc(qd, sizeof(unsigned));
    st->fresh = calloc(qd, sizeof(unsigned));
    if (!st->ops || !st->free_slots || !st->requeue || !st->fresh) {
        uring_free(st, 0);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < qd; i++)
        st->free_slots[i] = qd - 1 - i;
    st->n_free = qd;
    int rc = ring_init(s, st, qd + 1);
    if (rc < 0) {
        uring_free(st, 0);
        return rc; /* -ENOSYS / -EPERM in restricted containers: the caller falls back */
    }
    st->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->efd < 0) {
        rc = zoff_fail(-errno, MOD, "eventfd for the io_uring thread");
        uring_free(st, 1);
        return rc;
    }
    rc = io_uring_register_files(&st->ring, s->fds, s->n_files);
    st->fixed_files = rc == 0;
    s->fixed_files = st->fixed_files;
    if (rc) zoff_log(ZOFF_LOG_INFO, MOD, "io_uring fixed files refused (%s)", zoff_strerror(rc));
    if (s->cfg.pool) {
        void **bases = NULL;
        size_t bsz = 0, n = zoff_nvme_pool_buffers(s->cfg.pool, &bases, &bsz);
        struct iovec *iov = n ? calloc(n, sizeof *iov) : NULL;
        st->bufs = n ? calloc(n, sizeof *st->bufs) : NULL;
        if (iov && st->bufs) {
            for (size_t i = 0; i < n; i++) {
                iov[i].iov_base = bases[i];
                iov[i].iov_len = bsz;
                st->bufs[i].base = (uintptr_t)bases[i];
                st->bufs[i].len = bsz;
            }
            rc = io_uring_register_buffers(&st->ring, iov, (unsigned)n);
            if (rc == 0) {
                st->n_bufs = n;
                s->fixed_buffers = 1;
            } else {
                zoff_log(ZOFF_LOG_INFO, MOD,
                         "io_uring fixed buffers refused (%s); using plain reads and writes",
                         zoff_strerror(rc));
            }
        }
        free(iov);
        free(bases);
    }
    s->be_state = st;
    s->be = s->direct ? &uring_ops : &uring_buffered_ops;
    s->backend_name = s->be->name;
    rc = pthread_create(&st->thread, NULL, uring_thread, s);
    if (rc) {
        s->be_state = NULL;
        uring_free(st, 1);
        return zoff_fail(-rc, MOD, "cannot start the io_uring thread");
    }
    st->thread_started = 1;
    return 0;
}
