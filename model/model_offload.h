/* Training the GPT model with the offload engine: the glue between model/ and the engine's
 * trainer-facing API (include/zoff/engine.h), nothing else.
 *
 * The model keeps fp32 weights and gradients on the device and, in mixed precision, a 16-bit
 * copy of the weights that its GEMMs read. The engine keeps the optimizer state off the device
 * and updates exactly that 16-bit copy (the model no longer refreshes it itself); before
 * each layer group's forward the compute stream waits for the group's weights and widens them
 * into the fp32 weights the other ops read, and as the backward completes each group its
 * fp32 gradients are narrowed into the engine's buckets. The device then holds 10 bytes per
 * parameter (fp32 weights and gradients, 16-bit weights) against 18 for the non-offloaded
 * trainer, which also keeps both Adam moments there; PCIe carries 4 bytes per parameter.
 * With f32 GEMMs the engine updates the model's fp32 weights (8 B/param of PCIe).
 */
#ifndef ZOFF_MODEL_GPT_OFFLOAD_H
#define ZOFF_MODEL_GPT_OFFLOAD_H

#include "model/model.h"
#include "zoff/engine.h"

typedef struct zoff_model_offload zoff_model_offload;

/* Creates the engine for model m: its current weights become the fp32 master weights, the
 * layout's tensors the engine's (biases and norms without weight decay), and the model's GEMM
 * dtype the exchange format (cfg->dtype is ignored). Installs the model hooks through which forward
 * and backward reach the engine. */
int zoff_model_offload_create(zoff_model *m, zoff_dev_stream *s, const zoff_engine_config *cfg,
                            zoff_model_offload **out);
/* Flushes the engine, copies the final master weights into the model, frees everything. */
int zoff_model_offload_finish(zoff_model_offload *o);
void zoff_model_offload_destroy(zoff_model_offload *o);
zoff_engine *zoff_model_offload_engine(zoff_model_offload *o);

/* One micro-batch: forward (waiting per layer group for its weights), backward (streaming
 * each group's gradients), end of micro-batch. loss: the micro-batch's mean loss. */
int zoff_model_offload_micro_batch(zoff_model_offload *o, const int32_t *tokens, const int32_t *targets,
                                 int B, int T, float *loss);
/* The optimizer state in the trainer's checkpoint format (optimizer.safetensors: fp32 moments
 * over the flat layout, update count, loss scale), so that an offloaded run and a
 * non-offloaded one can resume each other. Save also copies the master weights into the
 * model, for the model checkpoint beside it. */
int zoff_model_offload_save_state(zoff_model_offload *o, const char *path);
int zoff_model_offload_load_state(zoff_model_offload *o, const char *path);
/* The step count of the state load_state restored (0 if none): a resumed run continues after
 * it. */
int zoff_model_offload_resumed_step(const zoff_model_offload *o);

/* Copies the current master weights into the model's parameters (after a flush), e.g. for a
 * checkpoint or a validation pass with exact weights. */
int zoff_model_offload_sync_model(zoff_model_offload *o);

#endif
