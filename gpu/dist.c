/* The process world (MPI) and the host-memory collectives of gpu/dist.h.
 *
 * A process started by mpirun/mpiexec joins MPI with MPI_THREAD_MULTIPLE (the engine issues
 * device collectives from stream worker threads while the main thread issues these); any
 * other process is a world of one that never touches MPI. Host collectives run on `comm`, a
 * duplicate of the world with MPI_ERRORS_RETURN, so they never match the device
 * communicators' messages and an MPI error comes back as ZOFF_ECOMM instead of killing the job.
 *
 * Every collective is non-blocking and completed by zoff_dist_wait(), a polled wait with a
 * back-off (the ranks may share few cores: no hot spinning) and a deadline. Past the deadline
 * this library ends the job through MPI_Abort: the one exception to "a library never exits",
 * because a rank that gives up on a collective leaves its peers blocked in theirs for ever,
 * and only a job-wide abort releases them (mpirun then ends every rank with a non-zero exit).
 *
 * Sizes are size_t: transfers are cut into pieces of ZOFF_DIST_CHUNK_BYTES so that MPI's int
 * counts never overflow (checkpoint gathers move GBs).
 *
 * Threads: init and finalize on the main thread; the collectives one thread at a time per
 * zoff_dist (they share `comm`); the accessors from any thread.
 */
#include "gpu/dist_impl.h"
#include "core/log.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOD "dist"

struct zoff_dist {
    int rank, size, local_rank;
    bool mpi;       /* launched by mpirun: MPI is initialized */
    bool mpi_owned; /* this zoff_dist initialized MPI (and finalizes it) */
    MPI_Comm comm;  /* the host collectives' duplicate of the world (mpi only) */
    double timeout_s;
};

void zoff_dist_config_default(zoff_dist_config *c) {
    memset(c, 0, sizeof *c);
    c->timeout_s = 300.0;
}

int zoff_dist_mpi_fail(int mpi_rc, const char *what) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(mpi_rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "?");
    return zoff_fail(ZOFF_ECOMM, MOD, "%s: %s (MPI error %d)", what, text, mpi_rc);
}

/* Launched by an MPI starter: Open MPI sets OMPI_COMM_WORLD_SIZE, MPICH/Hydra PMI_SIZE, PMIx
 * launchers PMIX_RANK. Without one, MPI_Init would make a singleton world: not needed. */
static bool launched_by_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

int zoff_dist_init(const zoff_dist_config *cfg, zoff_dist **out) {
    zoff_dist_config def;
    if (!cfg) {
        zoff_dist_config_default(&def);
        cfg = &def;
    }
    if (!out) return -EINVAL;
    if (!(cfg->timeout_s > 0))
        return zoff_fail(ZOFF_ECONFIG, MOD, "collective timeout %g s must be positive",
                         cfg->timeout_s);
    zoff_dist *d = calloc(1, sizeof *d);
    if (!d) return -ENOMEM;
    d->size = 1;
    d->timeout_s = cfg->timeout_s;
    d->comm = MPI_COMM_NULL;
    if (!launched_by_mpi()) {
        *out = d;
        return 0;
    }
    int rc = 0, inited = 0, provided = 0;
    MPI_Comm node = MPI_COMM_NULL;
    MPI_Initialized(&inited);
    if (!inited) {
        int mrc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        if (mrc != MPI_SUCCESS) {
            rc = zoff_fail(ZOFF_ECOMM, MOD, "MPI_Init_thread failed (MPI error %d)", mrc);
            goto fail;
        }
        d->mpi_owned = true;
    } else {
        MPI_Query_thread(&provided);
    }
    d->mpi = true;
    if (provided < MPI_THREAD_MULTIPLE) {
        rc =
            zoff_fail(ZOFF_ECOMM, MOD,
                      "the MPI library gives thread level %d, zoff needs MPI_THREAD_MULTIPLE (%d): "
                      "use an MPI built with thread support (Open MPI: the default)",
                      provided, MPI_THREAD_MULTIPLE);
        goto fail;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    if ((rc = zoff_dist_dup_world(d, &d->comm))) goto fail;
    int mrc = MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
    if (mrc != MPI_SUCCESS) {
        rc = zoff_dist_mpi_fail(mrc, "MPI_Comm_split_type(SHARED)");
        goto fail;
    }
    MPI_Comm_rank(node, &d->local_rank);
    MPI_Comm_free(&node);
    if (d->size > 1) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "[rank %d] ", d->rank);
        zoff_log_set_prefix(prefix);
    }
    zoff_log(ZOFF_LOG_DEBUG, MOD, "rank %d of %d (local rank %d), collective timeout %g s", d->rank,
             d->size, d->local_rank, d->timeout_s);
    *out = d;
    return 0;
fail:
    if (d->comm != MPI_COMM_NULL) MPI_Comm_free(&d->comm);
    /* MPI cannot be initialized twice in a process: a failed init is the end of MPI here. */
    if (d->mpi_owned) MPI_Finalize();
    free(d);
    return rc;
}

void zoff_dist_finalize(zoff_dist *d) {
    if (!d) return;
    if (d->comm != MPI_COMM_NULL) MPI_Comm_free(&d->comm);
    if (d->mpi_owned) {
        zoff_log_set_prefix(NULL);
        MPI_Finalize();
    }
    free(d);
}

int zoff_dist_dup(zoff_dist *d, zoff_dist **out) {
    if (!out) return -EINVAL;
    *out = NULL;
    if (!d) return 0;
    zoff_dist *c = malloc(sizeof *c);
    if (!c) return -ENOMEM;
    *c = *d;
    c->mpi_owned = false; /* only the first handle finalizes MPI */
    c->comm = MPI_COMM_NULL;
    int rc = d->mpi ? zoff_dist_dup_world(d, &c->comm) : 0;
    if (rc) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int zoff_dist_rank(const zoff_dist *d) {
    return d ? d->rank : 0;
}

int zoff_dist_size(const zoff_dist *d) {
    return d ? d->size : 1;
}

int zoff_dist_local_rank(const zoff_dist *d) {
    return d ? d->local_rank : 0;
}

double zoff_dist_timeout_s(const zoff_dist *d) {
    return d ? d->timeout_s : 300.0;
}

bool zoff_dist_uses_mpi(const zoff_dist *d) {
    return d && d->mpi;
}

int zoff_dist_dup_world(zoff_dist *d, MPI_Comm *out) {
    if (!d || !d->mpi) return zoff_fail(-EINVAL, MOD, "no MPI world to duplicate");
    int mrc = MPI_Comm_dup(MPI_COMM_WORLD, out);
    if (mrc != MPI_SUCCESS) return zoff_dist_mpi_fail(mrc, "MPI_Comm_dup");
    MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN);
    return 0;
}

void zoff_dist_abort(zoff_dist *d, int code, const char *why) {
    int rc = code > 0 && code < 256 ? code : 1;
    if (!why) why = "(no reason given)";
    zoff_log(ZOFF_LOG_ERROR, MOD, "%s; aborting the job", why);
    /* The job is ending: when no log callback would show why, stderr does (the one print). */
    if (!zoff_log_enabled(ZOFF_LOG_ERROR))
        fprintf(stderr, "zoff: [rank %d] %s; aborting the job\n", d ? d->rank : 0, why);
    fflush(NULL);
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized) MPI_Abort(MPI_COMM_WORLD, rc);
    _Exit(rc); /* a world of one (or MPI_Abort returned): the job is this process */
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int zoff_dist_wait(zoff_dist *d, MPI_Request *reqs, int n, const char *name, size_t bytes) {
    if (n == 0) return 0;
    /* MPI's non-blocking collectives move their data only inside MPI calls (here, the
     * tests): yield-spin through the first 20 ms, where a bucket's transfer ends, so that a
     * sleep does not stall it; then back off to sleeps, for a peer that is far behind. */
    double start = now_s(), spin_until = start + 20e-3, deadline = start + d->timeout_s;
    long sleep_ns = 50000;
    for (;;) {
        int done = 0;
        int mrc = MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
        if (mrc != MPI_SUCCESS) {
            char what[96];
            snprintf(what, sizeof what, "collective %s of %zu bytes", name, bytes);
            return zoff_dist_mpi_fail(mrc, what);
        }
        if (done) return 0;
        double t = now_s();
        if (t > deadline) {
            /* the log prefix (zoff_dist_init) puts "[rank R] " before the line */
            char why[256];
            snprintf(why, sizeof why,
                     "collective %s of %zu bytes did not complete in %g s: a rank stopped "
                     "responding or died",
                     name, bytes, d->timeout_s);
            zoff_dist_abort(d, 1, why);
        }
        if (t < spin_until) {
            sched_yield();
        } else {
            struct timespec ts = {0, sleep_ns};
            nanosleep(&ts, NULL);
            if (sleep_ns < 200000) sleep_ns += 50000;
        }
    }
}

/* --- host collectives ----------------------------------------------------------------- */

static int check_root(const zoff_dist *d, int root, const char *name) {
    if (root < 0 || root >= d->size)
        return zoff_fail(-EINVAL, MOD, "%s: root %d is not a rank of a world of %d", name, root,
                         d->size);
    return 0;
}

static MPI_Op mpi_op(zoff_dist_op op) {
    switch (op) {
    case ZOFF_DIST_MAX:
        return MPI_MAX;
    case ZOFF_DIST_MIN:
        return MPI_MIN;
    default:
        return MPI_SUM;
    }
}

static int allreduce(zoff_dist *d, void *buf, size_t n, size_t elem, MPI_Datatype type,
                     zoff_dist_op op, const char *name) {
    if (!d) return -EINVAL;
    if ((unsigned)op > ZOFF_DIST_MIN) return zoff_fail(-EINVAL, MOD, "%s: bad op %d", name, op);
    if (n && !buf) return -EINVAL;
    if (d->size == 1 || n == 0) return 0;
    size_t chunk = ZOFF_DIST_CHUNK_BYTES / elem;
    for (size_t off = 0; off < n; off += chunk) {
        int cnt = (int)(n - off < chunk ? n - off : chunk);
        MPI_Request req;
        int mrc = MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + off * elem, cnt, type, mpi_op(op),
                                 d->comm, &req);
        if (mrc != MPI_SUCCESS) return zoff_dist_mpi_fail(mrc, name);
        int rc = zoff_dist_wait(d, &req, 1, name, (size_t)cnt * elem);
        if (rc) return rc;
    }
    return 0;
}

int zoff_dist_allreduce_f64(zoff_dist *d, double *buf, size_t n, zoff_dist_op op) {
    return allreduce(d, buf, n, sizeof(double), MPI_DOUBLE, op, "allreduce_f64");
}

int zoff_dist_allreduce_i64(zoff_dist *d, int64_t *buf, size_t n, zoff_dist_op op) {
    return allreduce(d, buf, n, sizeof(int64_t), MPI_INT64_T, op, "allreduce_i64");
}

int zoff_dist_bcast(zoff_dist *d, void *buf, size_t bytes, int root) {
    if (!d || (bytes && !buf)) return -EINVAL;
    int rc = check_root(d, root, "bcast");
    if (rc || d->size == 1 || bytes == 0) return rc;
    for (size_t off = 0; off < bytes; off += ZOFF_DIST_CHUNK_BYTES) {
        size_t len = bytes - off < ZOFF_DIST_CHUNK_BYTES ? bytes - off : ZOFF_DIST_CHUNK_BYTES;
        MPI_Request req;
        int mrc = MPI_Ibcast((char *)buf + off, (int)len, MPI_BYTE, root, d->comm, &req);
        if (mrc != MPI_SUCCESS) return zoff_dist_mpi_fail(mrc, "bcast");
        if ((rc = zoff_dist_wait(d, &req, 1, "bcast", len))) return rc;
    }
    return 0;
}

static size_t n_chunks(size_t bytes) {
    return (bytes + ZOFF_DIST_CHUNK_BYTES - 1) / ZOFF_DIST_CHUNK_BYTES;
}

/* Point-to-point under the hood: every rank's bytes go straight into recv + displs[r] in
 * pieces of ZOFF_DIST_CHUNK_BYTES (MPI_Igatherv's int displacements would cap the receive
 * buffer at 2 GiB). Messages between two ranks on one communicator arrive in order, so one
 * tag suffices; they never match a collective's. */
int zoff_dist_gatherv(zoff_dist *d, const void *send, size_t send_bytes, void *recv,
                      const size_t *counts, const size_t *displs, int root) {
    if (!d || (send_bytes && !send)) return -EINVAL;
    int rc = check_root(d, root, "gatherv");
    if (rc) return rc;
    const int tag = 0x7a6f;
    if (d->rank == root) {
        if (!counts || !displs || !recv)
            return zoff_fail(-EINVAL, MOD, "gatherv: root needs recv, counts and displs");
        if (counts[root] != send_bytes)
            return zoff_fail(-EINVAL, MOD, "gatherv: root sends %zu bytes but counts[%d] = %zu",
                             send_bytes, root, counts[root]);
        if (send_bytes) memcpy((char *)recv + displs[root], send, send_bytes);
        if (d->size == 1) return 0;
        size_t total = 0, nreq = 0;
        for (int r = 0; r < d->size; r++)
            if (r != root) {
                nreq += n_chunks(counts[r]);
                total += counts[r];
            }
        if (nreq > INT_MAX) return zoff_fail(-EINVAL, MOD, "gatherv: too many pieces");
        MPI_Request *reqs = calloc(nreq ? nreq : 1, sizeof *reqs);
        if (!reqs) return -ENOMEM;
        size_t k = 0;
        for (int r = 0; r < d->size && !rc; r++) {
            if (r == root) continue;
            for (size_t off = 0; off < counts[r]; off += ZOFF_DIST_CHUNK_BYTES) {
                size_t len = counts[r] - off < ZOFF_DIST_CHUNK_BYTES ? counts[r] - off
                                                                     : ZOFF_DIST_CHUNK_BYTES;
                int mrc = MPI_Irecv((char *)recv + displs[r] + off, (int)len, MPI_BYTE, r, tag,
                                    d->comm, &reqs[k]);
                if (mrc != MPI_SUCCESS) {
                    rc = zoff_dist_mpi_fail(mrc, "gatherv: MPI_Irecv");
                    break;
                }
                k++;
            }
        }
        /* on an error the posted receives are still waited for: their buffers are the caller's */
        int wrc = zoff_dist_wait(d, reqs, (int)k, "gatherv", total);
        free(reqs);
        return rc ? rc : wrc;
    }
    size_t nreq = n_chunks(send_bytes), k = 0;
    MPI_Request *reqs = calloc(nreq ? nreq : 1, sizeof *reqs);
    if (!reqs) return -ENOMEM;
    for (size_t off = 0; off < send_bytes; off += ZOFF_DIST_CHUNK_BYTES) {
        size_t len =
            send_bytes - off < ZOFF_DIST_CHUNK_BYTES ? send_bytes - off : ZOFF_DIST_CHUNK_BYTES;
        int mrc =
            MPI_Isend((const char *)send + off, (int)len, MPI_BYTE, root, tag, d->comm, &reqs[k]);
        if (mrc != MPI_SUCCESS) {
            rc = zoff_dist_mpi_fail(mrc, "gatherv: MPI_Isend");
            break;
        }
        k++;
    }
    int wrc = zoff_dist_wait(d, reqs, (int)k, "gatherv", send_bytes);
    free(reqs);
    return rc ? rc : wrc;
}

int zoff_dist_barrier(zoff_dist *d) {
    if (!d) return -EINVAL;
    if (d->size == 1) return 0;
    MPI_Request req;
    int mrc = MPI_Ibarrier(d->comm, &req);
    if (mrc != MPI_SUCCESS) return zoff_dist_mpi_fail(mrc, "barrier");
    return zoff_dist_wait(d, &req, 1, "barrier", 0);
}
