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
    const char *params;      /* weights: none (resident) | cpu | nvme | auto (what does not fit
                                streams from CPU memory) */
    int prefetch;            /* streamed weights: groups fetched ahead */
} zoff_train_offload_flags;

/* Fills ec from the flags and the trainer's hyper-parameters; *enabled tells whether offload
 * is on. Prints what is wrong, naming the flag, and returns -1 on bad values. */
int zoff_train_offload_configure(const zoff_train_offload_flags *f, const zoff_trainer_config *tc,
                                 int grad_accum, zoff_engine_config *ec, bool *enabled);

/* --offload-params auto: which layer groups stay resident (resident[g] = 1) so that the plan
 * fits in capacity, front groups first (each saves its forward fetch and backward re-fetch);
 * plan is the plan with every group streamed and is updated. All resident: ec->params goes
 * back to ZOFF_PARAMS_DEVICE (the caller then creates the model with its weights). */
int zoff_train_offload_fit(const zoff_layout *lay, zoff_dtype dt, size_t capacity,
                           zoff_engine_config *ec, unsigned char *resident, zoff_device_plan *plan);
/* One line: where the weights live, groups resident and streamed, and the bytes each link
 * carries per step (estimated from the ring: the backward re-fetches all but the streamed
 * groups still in the ring after the forward). */
void zoff_train_offload_describe_params(const zoff_layout *lay, zoff_dtype dt,
                                        const zoff_engine_config *ec, char *buf, size_t n);

/* Gives the next micro-batch. */
typedef void (*zoff_train_batch_fn)(void *ctx, zoff_batch *b);

/* One optimizer step (1-based `step`, for the learning-rate schedule) of grad_accum
 * micro-batches through the engine. st gets the mean loss and the lr; the norm, loss scale
 * and skip flag come with the step's report (zoff_train_offload_report); rep is cleared. */
int zoff_train_offload_step(zoff_model_offload *off, const zoff_trainer_config *tc, int step,
                            int grad_accum, zoff_train_batch_fn next_batch, void *ctx,
                            zoff_step_stats *st, zoff_engine_step_report *rep);
/* The report of the engine's step engine_step (0-based since the engine's creation), waiting
 * for the CPU worker to finish it, and its norm, loss scale and skip flag into st. With DPU,
 * ask after the next step has been issued, or the wait serializes the pipeline. */
int zoff_train_offload_report(zoff_model_offload *off, int64_t engine_step, zoff_step_stats *st,
                              zoff_engine_step_report *rep);

#endif
