/* gpu/dist.h in a build without MPI: every process is a world of one. The collectives are
 * no-ops or copies, as in gpu/dist.c for a world of one, so that the CLI, the engine and the
 * device communicators run unchanged. A process that mpirun started with several ranks is
 * refused: each would otherwise train alone and write over the others' output. */
#include "core/log.h"
#include "gpu/dist.h"
#include "zoff/zoff.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "dist"

struct zoff_dist {
    double timeout_s;
};

void zoff_dist_config_default(zoff_dist_config *c) {
    memset(c, 0, sizeof *c);
    c->timeout_s = 300.0;
}

/* The world size an MPI starter announced (Open MPI, MPICH/Hydra), 1 if none. */
static int launched_size(void) {
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");
    if (!v) v = getenv("PMI_SIZE");
    return v && atoi(v) > 1 ? atoi(v) : 1;
}

int zoff_dist_init(const zoff_dist_config *cfg, zoff_dist **out) {
    if (!out) return -EINVAL;
    int n = launched_size();
    if (n > 1)
        return zoff_fail(ZOFF_ECOMM, MOD,
                         "started by mpirun with %d ranks, but this zoff was built without MPI: "
                         "install the Debian packages libopenmpi-dev and openmpi-bin and rebuild",
                         n);
    if (cfg && !(cfg->timeout_s > 0))
        return zoff_fail(ZOFF_ECONFIG, MOD, "collective timeout %g s must be positive",
                         cfg->timeout_s);
    zoff_dist *d = calloc(1, sizeof *d);
    if (!d) return -ENOMEM;
    d->timeout_s = cfg ? cfg->timeout_s : 300.0;
    *out = d;
    return 0;
}

void zoff_dist_finalize(zoff_dist *d) {
    free(d);
}

int zoff_dist_dup(zoff_dist *d, zoff_dist **out) {
    if (!out) return -EINVAL;
    *out = NULL;
    if (!d) return 0;
    if (!(*out = malloc(sizeof **out))) return -ENOMEM;
    **out = *d;
    return 0;
}

int zoff_dist_rank(const zoff_dist *d) {
    (void)d;
    return 0;
}

int zoff_dist_size(const zoff_dist *d) {
    (void)d;
    return 1;
}

int zoff_dist_local_rank(const zoff_dist *d) {
    (void)d;
    return 0;
}

double zoff_dist_timeout_s(const zoff_dist *d) {
    return d ? d->timeout_s : 300.0;
}

static int check_root(int root, const char *name) {
    return root == 0 ? 0
                     : zoff_fail(-EINVAL, MOD, "%s: root %d is not a rank of a world of 1", name,
                                 root);
}

int zoff_dist_allreduce_f64(zoff_dist *d, double *buf, size_t n, zoff_dist_op op) {
    (void)d, (void)n;
    return !buf || (unsigned)op > ZOFF_DIST_MIN ? -EINVAL : 0;
}

int zoff_dist_allreduce_i64(zoff_dist *d, int64_t *buf, size_t n, zoff_dist_op op) {
    (void)d, (void)n;
    return !buf || (unsigned)op > ZOFF_DIST_MIN ? -EINVAL : 0;
}

int zoff_dist_bcast(zoff_dist *d, void *buf, size_t bytes, int root) {
    (void)d, (void)buf, (void)bytes;
    return check_root(root, "bcast");
}

int zoff_dist_gatherv(zoff_dist *d, const void *send, size_t send_bytes, void *recv,
                      const size_t *counts, const size_t *displs, int root) {
    (void)d, (void)counts;
    int rc = check_root(root, "gatherv");
    if (!rc && send_bytes && recv && displs)
        memmove((char *)recv + displs[0], send, send_bytes);
    return rc;
}

int zoff_dist_barrier(zoff_dist *d) {
    (void)d;
    return 0;
}

void zoff_dist_abort(zoff_dist *d, int code, const char *why) {
    (void)d;
    zoff_log(ZOFF_LOG_ERROR, MOD, "%s; aborting", why ? why : "(no reason given)");
    fflush(NULL);
    _Exit(code > 0 && code < 256 ? code : 1);
}
