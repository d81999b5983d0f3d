/* `zoff train --offload cpu|nvme`: engine configuration from the command's flags, and one
 * offloaded optimizer step (its micro-batches through the engine). */
#ifndef ZOFF_CLI_TRAIN_OFFLOAD_H
#define ZOFF_CLI_TRAIN_OFFLOAD_H

#include "model/model_offload.h"
#include "model/model.h"
#include "zoff/engine.h"

#include <stdbool.h>

typedef struct zoff_train_offload_flags {
    const char *offload;     /* none | cpu | nvme */
    const char *nvme_path;   /* swap directory for nvme */
    const char *schedule;    /* sync | overlap | dpu */
    const char *moments;     /* f32 | bf16 */
    const char *bucket_size; /* e.g. "32MiB", or "auto" (ec->bucket_bytes 0: the caller sizes it) */
    int dpu_warmup;          /* steps run as sync before DPU starts */
    const char *trace;       /* Chrome trace JSON file, or NULL */
} zoff_train_offload_flags;

/* Fills ec from the flags and the trainer's hyper-parameters; *enabled tells whether offload
 * is on. Prints what is wrong, naming the flag, and returns -1 on bad values. */
int zoff_train_offload_configure(const zoff_train_offload_flags *f, const zoff_trainer_config *tc,
                                 int grad_accum, zoff_engine_config *ec, bool *enabled);

/* Gives the next micro-batch. */
typedef void (*zoff_train_batch_fn)(void *ctx, zoff_batch *b);

/* One optimizer step (1-based `step`, for the learning-rate schedule) of grad_accum
 * micro-batches through the engine. st gets the mean loss and, from the last step the engine
 * has finished (this one with sync, one behind with DPU or while still running), the norm,
 * loss scale and skip flag; rep gets that step's report (rep->step -1 if none yet). */
int zoff_train_offload_step(zoff_model_offload *off, const zoff_trainer_config *tc, int step,
                            int grad_accum, zoff_train_batch_fn next_batch, void *ctx,
                            zoff_step_stats *st, zoff_engine_step_report *rep);

#endif
