/* The process world of a data-parallel job, and host-memory collectives over it (MPI).
 *
 * A job launched by mpirun/mpiexec (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK in the
 * environment) joins MPI's world with MPI_THREAD_MULTIPLE; any other process is a world of one
 * and never initializes MPI. The host collectives below use their own communicator (a duplicate
 * of the world), so they never interleave with the device communicators of gpu/device.h.
 *
 * One zoff_dist per process (MPI can be initialized and finalized once).
 * Threads: zoff_dist_init/finalize from the main thread. Each host collective may be called
 * from any thread, but only ONE thread at a time issues on a given zoff_dist (they share one
 * communicator, and every rank must issue them in the same order).
 *
 * Timeouts: every collective is issued non-blocking and polled until config.timeout_s; when
 * that passes it logs "[rank R] collective <name> of <n> bytes did not complete in <T> s: a
 * rank stopped responding or died" and calls zoff_dist_abort(): the whole job ends with a
 * non-zero exit. This is the one place where the library exits: a failed collective leaves the
 * peers blocked in theirs, and only a job-wide abort releases them.
 */
#ifndef ZOFF_GPU_DIST_H
#define ZOFF_GPU_DIST_H

#include <stddef.h>
#include <stdint.h>

typedef struct zoff_dist zoff_dist;

typedef enum zoff_dist_op { ZOFF_DIST_SUM = 0, ZOFF_DIST_MAX = 1, ZOFF_DIST_MIN = 2 } zoff_dist_op;

typedef struct zoff_dist_config {
    double timeout_s; /* a collective not done after this long fails the job (default 300) */
} zoff_dist_config;

void zoff_dist_config_default(zoff_dist_config *c);

/* Joins the job's world. Launched by mpirun/mpiexec (OMPI_COMM_WORLD_SIZE, PMI_SIZE or
 * PMIX_RANK in the environment): MPI_Init_thread(MPI_THREAD_MULTIPLE), refused (ZOFF_ECOMM)
 * if the MPI library gives less. Otherwise: a world of one, MPI is never initialized. Sets the
 * log prefix "[rank R] " for every log line when size > 1 (zoff_log_set_prefix). cfg NULL:
 * defaults. */
int zoff_dist_init(const zoff_dist_config *cfg, zoff_dist **out);
/* MPI_Finalize when it initialized MPI; NULL ok. Every device communicator must be destroyed
 * before. */
void zoff_dist_finalize(zoff_dist *d);
/* A second handle on the same world with a communicator of its own, for the host collectives
 * of another thread (the offload engine's CPU worker beside the trainer's thread). Collective:
 * every rank calls it in the same order. zoff_dist_finalize frees it without finalizing MPI.
 * d NULL: *out NULL (a world of one). */
int zoff_dist_dup(zoff_dist *d, zoff_dist **out);
int zoff_dist_rank(const zoff_dist *d);       /* 0 for NULL */
int zoff_dist_size(const zoff_dist *d);       /* 1 for NULL */
int zoff_dist_local_rank(const zoff_dist *d); /* rank among the ranks on this node; 0 for NULL */
/* The timeout of this world's collectives, seconds (also used by the device communicators). */
double zoff_dist_timeout_s(const zoff_dist *d);

/* Host-memory collectives over the world, one thread at a time per zoff_dist. No-ops
 * (allreduce/bcast) or plain copies (gather) when size is 1. All time out (above). */
int zoff_dist_allreduce_f64(zoff_dist *d, double *buf, size_t n, zoff_dist_op op);  /* in place */
int zoff_dist_allreduce_i64(zoff_dist *d, int64_t *buf, size_t n, zoff_dist_op op); /* in place */
int zoff_dist_bcast(zoff_dist *d, void *buf, size_t bytes, int root);
/* Rank r sends send_bytes bytes of send; root receives rank r's bytes into recv + displs[r];
 * counts[r] is rank r's byte count (equal to its send_bytes); counts, displs and recv are read
 * on root only. Sizes may exceed 2 GiB. */
int zoff_dist_gatherv(zoff_dist *d, const void *send, size_t send_bytes, void *recv,
                      const size_t *counts, const size_t *displs, int root);
int zoff_dist_barrier(zoff_dist *d);
/* Ends the whole job after logging why (MPI_Abort with `code` when 1..255, else 1; a world of
 * one exits with that status): for failures that leave peers blocked in a collective. Never
 * returns. */
void zoff_dist_abort(zoff_dist *d, int code, const char *why);

#endif
