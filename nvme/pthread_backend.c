/* pthread backend: pread/pwrite on a pool of worker threads, for where io_uring is refused
 * (ENOSYS/EPERM in restricted containers) or forced by the config for tests.
 *
 * Each worker takes one operation at a time under swap->mu, transfers it without the lock
 * (looping over short transfers and -EAGAIN/-EINTR through zoff_nvme_op_result, as the
 * io_uring backend does with cqe->res), and reports it with zoff_nvme_op_done. Workers sleep
 * on work_cv (with swap->mu) and leave when the swap shuts down and the queue is empty.
 */
#include "nvme/nvme_internal.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define MOD "nvme"

typedef struct pthread_state {
    pthread_cond_t work_cv;
    pthread_t *threads;
    unsigned n_threads;
} pthread_state;

static void transfer(zoff_nvme_swap *s, zoff_nvme_op *op) {
    int fd = s->fds[op->file];
    for (;;) {
        size_t len = zoff_nvme_op_submit_len(s, op);
        uint8_t *buf = op->buf + op->done;
        off_t off = (off_t)(op->file_off + op->done);
        ssize_t n = op->req->write ? pwrite(fd, buf, len, off) : pread(fd, buf, len, off);
        int rc = zoff_nvme_op_result(s, op, n < 0 ? -(long)errno : (long)n);
        if (rc == 0) continue;
        zoff_nvme_op_done(s, op, rc == 1 ? 0 : rc);
        return;
    }
}

static void *worker(void *arg) {
    zoff_nvme_swap *s = arg;
    pthread_state *st = s->be_state;
    zoff_nvme_op op;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (zoff_nvme_take_op_locked(s, &op)) {
            pthread_mutex_unlock(&s->mu);
            transfer(s, &op);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (s->shutting_down) break;
        pthread_cond_wait(&st->work_cv, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void pt_kick(zoff_nvme_swap *s) {
    pthread_state *st = s->be_state;
    pthread_cond_broadcast(&st->work_cv);
}

static void pt_stop(zoff_nvme_swap *s) {
    pthread_state *st = s->be_state;
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&st->work_cv);
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < st->n_threads; i++)
        pthread_join(st->threads[i], NULL);
    pthread_cond_destroy(&st->work_cv);
    free(st->threads);
    free(st);
    s->be_state = NULL;
}

static const zoff_nvme_backend_ops pt_ops = {"pthread", pt_kick, pt_stop};
static const zoff_nvme_backend_ops pt_buffered_ops = {"pthread buffered", pt_kick, pt_stop};

int zoff_nvme_pthread_start(zoff_nvme_swap *s) {
    unsigned n = s->cfg.pthread_threads ? s->cfg.pthread_threads : 4;
    pthread_state *st = calloc(1, sizeof *st);
    if (!st) return zoff_fail(-ENOMEM, MOD, "pthread backend state");
    st->threads = calloc(n, sizeof *st->threads);
    if (!st->threads) {
        free(st);
        return zoff_fail(-ENOMEM, MOD, "pthread backend threads");
    }
    pthread_cond_init(&st->work_cv, NULL);
    s->be_state = st;
    s->be = s->direct ? &pt_ops : &pt_buffered_ops;
    s->backend_name = s->be->name;
    for (unsigned i = 0; i < n; i++) {
        int rc = pthread_create(&st->threads[i], NULL, worker, s);
        if (rc) {
            pthread_mutex_lock(&s->mu);
            s->shutting_down = 1; /* nothing is queued yet: the started workers just leave */
            pthread_mutex_unlock(&s->mu);
            pt_stop(s);
            return zoff_fail(-rc, MOD, "cannot start pthread backend worker %u of %u", i, n);
        }
        st->n_threads = i + 1;
    }
    return 0;
}
