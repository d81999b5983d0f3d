/* Data parallelism for the training loop of zoff train / zoff sft: see train_dist.h. */
#include "cli/train_dist.h"
#include "zoff/zoff.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int zoff_train_dist_start(zoff_train_dist *td, double timeout_s) {
    memset(td, 0, sizeof *td);
    td->world = td->local_size = 1;
    zoff_dist_config c;
    zoff_dist_config_default(&c);
    if (timeout_s > 0) c.timeout_s = timeout_s;
    int rc = zoff_dist_init(&c, &td->d);
    if (rc) {
        fprintf(stderr, "zoff: joining the job's ranks (mpirun) failed: %s: %s\n",
                zoff_strerror(rc), zoff_last_error_detail());
        return -1;
    }
    td->rank = zoff_dist_rank(td->d);
    td->world = zoff_dist_size(td->d);
    td->local_rank = zoff_dist_local_rank(td->d);
    /* ranks sharing this node (Open MPI says; else assume all of them) */
    const char *ls = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    td->local_size = ls && atoi(ls) > 0 ? atoi(ls) : td->world;
    return 0;
}

void zoff_train_dist_end(zoff_train_dist *td, int ret) {
    /* bad usage (2) is the same on every rank: each says so and ends as a single process */
    if (td->world > 1 && ret != 0 && ret != 2) {
        fflush(stdout);
        zoff_dist_abort(td->d, ret, "the run failed on this rank: ending every rank");
    }
    zoff_dist_finalize(td->d);
    td->d = NULL;
}

int zoff_train_dist_agree(zoff_train_dist *td, int ret) {
    if (td->world == 1) return ret;
    int64_t v = ret;
    if (zoff_dist_allreduce_i64(td->d, &v, 1, ZOFF_DIST_MAX) != 0) return ret ? ret : 1;
    return (int)v;
}

void zoff_train_dist_fail(zoff_train_dist *td, const char *what) {
    if (td->world == 1) return;
    fflush(stdout);
    fflush(stderr);
    zoff_dist_abort(td->d, 1, what);
}

zoff_batch zoff_train_dist_slice(const zoff_train_dist *td, zoff_batch g) {
    if (td->world == 1) return g;
    int per = g.B / td->world;
    size_t off = (size_t)td->rank * (size_t)per * (size_t)g.T;
    g.tokens += off;
    if (g.targets) g.targets += off;
    if (g.doc_start) g.doc_start += off;
    g.B = per;
    return g;
}

int zoff_train_dist_step(zoff_train_dist *td, float *loss, bool *stop) {
    if (td->world == 1) return 0;
    double v[2] = {*loss, *stop ? 1.0 : 0.0};
    int rc = zoff_dist_allreduce_f64(td->d, v, 2, ZOFF_DIST_SUM);
    if (rc) return rc;
    *loss = (float)(v[0] / td->world);
    *stop = v[1] > 0;
    return 0;
}

int zoff_train_dist_sum2(zoff_train_dist *td, double *a, double *b) {
    if (td->world == 1) return 0;
    double v[2] = {*a, *b};
    int rc = zoff_dist_allreduce_f64(td->d, v, 2, ZOFF_DIST_SUM);
    *a = v[0];
    *b = v[1];
    return rc;
}

int zoff_train_dist_threads(const zoff_train_dist *td, int given) {
    if (given > 0 || td->world == 1) return given;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long per = (cores > 0 ? cores : 1) / td->local_size;
    return per > 0 ? (int)per : 1;
}

void zoff_train_dist_rank_file(const zoff_train_dist *td, const char *path, char *out, size_t n) {
    if (td->rank == 0) {
        snprintf(out, n, "%s", path);
        return;
    }
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    if (dot && (!slash || dot > slash + 1))
        snprintf(out, n, "%.*s.rank%d%s", (int)(dot - path), path, td->rank, dot);
    else
        snprintf(out, n, "%s.rank%d", path, td->rank);
}

void zoff_train_dist_debug_fault(const zoff_train_dist *td, int step) {
    const char *v = getenv("ZOFF_DEBUG_RANK_FAULT");
    int rank, at;
    char what[16];
    if (!v || sscanf(v, "%d:%d:%15s", &rank, &at, what) != 3 || rank != td->rank || at != step)
        return;
    fflush(stdout);
    if (strcmp(what, "kill") == 0) raise(SIGKILL);
    if (strcmp(what, "stall") == 0)
        for (;;)
            pause();
}
