/* Internals of gpu/dist.c shared with the device communicators' MPI backend (host_comm.c) and
 * the NCCL bootstrap (cuda_comm.c): the MPI error text, the world duplicate, and the one timed
 * wait that every non-blocking collective goes through. Threads: as in gpu/dist.h; the wait
 * may run on any thread (MPI_THREAD_MULTIPLE), one request set per call. */
#ifndef ZOFF_GPU_DIST_IMPL_H
#define ZOFF_GPU_DIST_IMPL_H

#include "gpu/dist.h"

#include <mpi.h>
#include <stdbool.h>

/* The largest piece (bytes) one MPI call moves: counts are int, so bigger transfers are cut. */
#define ZOFF_DIST_CHUNK_BYTES ((size_t)1 << 30)

/* Whether this process runs under MPI (it was launched by mpirun, even as a world of one). */
bool zoff_dist_uses_mpi(const zoff_dist *d);
/* A duplicate of the world with MPI_ERRORS_RETURN (collective over the world: every rank calls
 * it, in the same order). 0 or ZOFF_ECOMM. */
int zoff_dist_dup_world(zoff_dist *d, MPI_Comm *out);
/* ZOFF_ECOMM with "what: MPI's text" as the detail. */
int zoff_dist_mpi_fail(int mpi_rc, const char *what);
/* Polls the n requests until all complete (spinning ~50 us with sched_yield, then sleeping
 * 50-200 us between tests). 0, or ZOFF_ECOMM on an MPI error. Past the world's timeout it logs
 * "[rank R] collective <name> of <bytes> bytes did not complete in <T> s: ..." and aborts the
 * job (never returns). */
int zoff_dist_wait(zoff_dist *d, MPI_Request *reqs, int n, const char *name, size_t bytes);

#endif
