/* `mpirun -np N zoff train|sft ...`: data parallelism for the training loop (cmd_train.c).
 *
 * Every rank runs the same loop on the same global batches (ranks x --batch rows) and takes
 * its own slice of rows, so N ranks with --batch b train as one process with --batch N*b; the
 * offload engine reduce-scatters the gradients and keeps 1/N of the optimizer state per rank
 * (zoff_engine_config.dist). Rank 0 prints the progress, writes metrics and checkpoints; every
 * rank's errors carry its rank and end the whole job at once (the others would wait in their
 * next collective). Decisions that must be the same everywhere (stop on a signal, the loss
 * shown, set-up failures) are agreed through small host collectives. A process not started by
 * mpirun is a world of one and everything here is a no-op.
 * Threads: the main thread only (the engine has its own communicator). */
#ifndef ZOFF_CLI_TRAIN_DIST_H
#define ZOFF_CLI_TRAIN_DIST_H

#include "gpu/dist.h"
#include "model/model.h"

#include <stdbool.h>

typedef struct zoff_train_dist {
    zoff_dist *d;
    int rank, world, local_rank, local_size;
} zoff_train_dist;

/* Joins the job's world (timeout_s: --collective-timeout). Prints what is wrong, -1. */
int zoff_train_dist_start(zoff_train_dist *td, double timeout_s);
/* Ends the world: finalizes after a clean run (ret 0) or bad usage (2, which every rank
 * finds); after a run-time failure, ends the whole job at once so that no rank waits for the
 * others in a collective. */
void zoff_train_dist_end(zoff_train_dist *td, int ret);
/* The largest of every rank's ret (0 everywhere: 0): a set-up step that failed on one rank
 * fails on all. */
int zoff_train_dist_agree(zoff_train_dist *td, int ret);
/* After a failure reported on this rank (already printed): the job ends here when it has
 * several ranks; returns otherwise. */
void zoff_train_dist_fail(zoff_train_dist *td, const char *what);
/* This rank's rows of a global batch of world x B rows. */
zoff_batch zoff_train_dist_slice(const zoff_train_dist *td, zoff_batch global);
/* The step's mean loss over the ranks, and whether any rank was asked to stop. */
int zoff_train_dist_step(zoff_train_dist *td, float *loss, bool *stop);
/* Sums (in place) a validation's weighted loss and weight over the ranks. */
int zoff_train_dist_sum2(zoff_train_dist *td, double *a, double *b);
/* Threads for this rank when the flag left them to the machine (0): the cores shared among
 * the ranks on this node, at least 1. */
int zoff_train_dist_threads(const zoff_train_dist *td, int given);
/* Fault injection for the tests: ZOFF_DEBUG_RANK_FAULT=R:S:kill (rank R kills itself with
 * SIGKILL as step S begins) or R:S:stall (rank R stops responding there). */
void zoff_train_dist_debug_fault(const zoff_train_dist *td, int step);
/* path for rank 0; path with ".rank<R>" before its extension for the others (traces). */
void zoff_train_dist_rank_file(const zoff_train_dist *td, const char *path, char *out, size_t n);

#endif
