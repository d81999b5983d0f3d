/* Training a model with the offload engine: the glue between the model interface and the
 * engine's trainer-facing API (include/zoff/engine.h), written once for every architecture.
 *
 * The device holds the model's weights in the exchange dtype (16 bits in mixed precision) and
 * nothing else of the optimizer: the engine keeps the fp32 master weights and Adam moments in
 * CPU memory or on NVMe and updates exactly those device weights. Before each layer group's
 * forward the compute stream waits for the group's weights; the model's backward writes each
 * tensor's gradient straight into the engine's bucket slot (the model's gradient sink), so no
 * full-model gradient buffer exists on the device: weights (2 B/param) + bucket slots +
 * activations + workspace. PCIe carries 4 bytes per parameter (2 down, 2 up) in 16-bit mode.
 *
 * Streamed weights (cfg->params CPU or NVMe, a model created with stream_weights): the engine
 * owns the 16-bit weights too, and the params-needed hook acquires each layer group from the
 * engine's ring and points the model's group at it (zoff_model_set_group_weights). The plan's
 * weights term is then the ring plus the resident groups (cfg->group_resident).
 */
#ifndef ZOFF_MODEL_MODEL_OFFLOAD_H
#define ZOFF_MODEL_MODEL_OFFLOAD_H

#include "model/model.h"
#include "zoff/engine.h"

typedef struct zoff_model_offload zoff_model_offload;

/* The engine's tensors for a model (biases and norms without weight decay); *out is freed by
 * the caller. */
int zoff_model_offload_tensors(const zoff_model *m, zoff_engine_tensor **out);
/* A bucket size for a model whose device weights take weight_bytes: an eighth of them, between
 * 1 MiB and 32 MiB (the engine keeps three slots, so small models do not pay 3x their weights
 * in slots, and large ones get buckets big enough to keep PCIe and the CPU Adam efficient). */
size_t zoff_model_offload_auto_bucket(size_t weight_bytes);
/* Adds the engine's bucket slots to a device plan (cfg->dtype is taken from the model's weights). */
int zoff_model_offload_plan(const zoff_layout *layout, zoff_dtype weight_dtype,
                            const zoff_engine_config *cfg, zoff_device_plan *plan);

/* Creates the engine for model m. init_master: layout.total fp32 master weights on the host
 * (from an initialization or a checkpoint); NULL takes the model's device weights, widened. The
 * model's weight dtype is the exchange format (cfg->dtype is ignored). Installs the model's
 * gradient sink and params-needed hook. */
int zoff_model_offload_create(zoff_model *m, zoff_dev_stream *s, const zoff_engine_config *cfg,
                              const float *init_master, zoff_model_offload **out);
/* Flushes the engine and frees it (the device weights are then the final ones). */
int zoff_model_offload_finish(zoff_model_offload *o);
void zoff_model_offload_destroy(zoff_model_offload *o);
zoff_engine *zoff_model_offload_engine(zoff_model_offload *o);

/* One micro-batch: forward (waiting per layer group for its weights), backward (each group's
 * gradients into the engine's buckets), end of micro-batch. loss: NULL, or the micro-batch's
 * mean loss (waits for the stream). */
int zoff_model_offload_micro_batch(zoff_model_offload *o, const zoff_batch *b, float *loss);
/* The optimizer state in the trainer's checkpoint format (optimizer.safetensors: fp32 moments
 * over the flat layout, update count, loss scale), so that an offloaded run and a
 * non-offloaded one can resume each other. master: NULL, or layout.total floats that receive
 * the fp32 master weights (for the model checkpoint beside it). Several ranks (cfg.dist): a
 * collective; rank 0 gathers the ranks' blocks and writes path, the others only send theirs
 * (their path and master are not used). Loading: every rank reads the whole file and keeps
 * its blocks, so a checkpoint does not depend on the number of ranks. */
int zoff_model_offload_save_state(zoff_model_offload *o, const char *path, float *master);
int zoff_model_offload_load_state(zoff_model_offload *o, const char *path);
/* The step count of the state load_state restored (0 if none): a resumed run continues after
 * it. */
int zoff_model_offload_resumed_step(const zoff_model_offload *o);
/* The current fp32 master weights (layout.total floats, padding 0) after a flush. Several
 * ranks: a collective; rank 0 receives them. */
int zoff_model_offload_get_master(zoff_model_offload *o, float *dst);

#endif
