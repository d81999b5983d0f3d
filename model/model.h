/* The GPT model module: configuration, the flat parameter layout, forward/backward as device
 * ops, the reference (non-offloaded) trainer, checkpoints and data.
 *
 * GPT-2 family decoder: token + learned position embeddings, n_layer pre-LayerNorm blocks
 * (causal multi-head attention, GELU MLP), a final LayerNorm and an output projection tied to
 * the token embedding. The model talks only to the device layer (gpu/device.h), so the same
 * code runs on the host and cuda backends.
 *
 * FLAT PARAMETER LAYOUT (what the offload engine partitions into buckets)
 * All parameters live in ONE fp32 device buffer; gradients in a second buffer with the SAME
 * layout (same offsets), and optimizer moments likewise. Tensors appear in this order, each
 * starting at an element offset that is a multiple of ZOFF_LAYOUT_ALIGN (64 elements: 256 bytes
 * in fp32, 128 in 16-bit); the gap before an aligned offset is zero padding:
 *   group 0            wte (V,C), wpe (maxT,C)                           embeddings
 *   group 1+l, l<L     h.l.ln_1.weight (C), h.l.ln_1.bias (C),
 *                      h.l.attn.c_attn.weight (3C,C), h.l.attn.c_attn.bias (3C),
 *                      h.l.attn.c_proj.weight (C,C), h.l.attn.c_proj.bias (C),
 *                      h.l.ln_2.weight (C), h.l.ln_2.bias (C),
 *                      h.l.mlp.c_fc.weight (4C,C), h.l.mlp.c_fc.bias (4C),
 *                      h.l.mlp.c_proj.weight (C,4C), h.l.mlp.c_proj.bias (C)     block l
 *   group L+1          ln_f.weight (C), ln_f.bias (C)                    final norm
 * Group g spans elements [group_begin[g], group_begin[g+1]) and is contiguous, so a block is
 * one slice. Matrices are stored (out, in) (PyTorch nn.Linear order), which is the transpose
 * of Hugging Face GPT-2's Conv1D (in, out); the checkpoint code transposes. Names are those
 * of the Hugging Face checkpoint (without the "transformer." prefix).
 *
 * GRADIENT ORDER: backward visits group L+1, then blocks L-1 .. 0, then group 0. A group's
 * gradients are final once the backward has passed it, except wte: tied to the output
 * projection, it receives gradient first (from the logits) and last (from the embedding), so
 * group 0 is final only at the end. The grad-ready hook reports each group as it completes.
 *
 * OFFLOAD ENGINE INTEGRATION (how the engine drives this model without knowing GPT)
 *   - buckets: partition [0, layout.total) at group_begin[] boundaries (or finer, at tensor
 *     offsets, all 64-element aligned); the gradient buffer uses the same offsets;
 *   - gradients leaving early: zoff_gpt_set_grad_ready_hook() is called on the issuing thread
 *     as each group's gradients are issued; record an event on the given stream there, and
 *     a copy stream can wait on it and move that slice (zoff_dev_op_cast to 16 bits first,
 *     zoff_dev_op_sumsq_nonfinite for the per-bucket norm/overflow check);
 *   - the step: zoff_trainer_set_optimizer() replaces the device AdamW; the hook receives the
 *     flat buffers, the step number, the scheduled lr and grad_scale (clip x loss-scale
 *     un-scaling x micro-batch mean) and must leave updated fp32 parameters in `params`
 *     (e.g. 16-bit H2D into staging, then zoff_dev_op_cast into the flat slice);
 *   - phases: zoff_trainer_compute_grads() (any number of micro-batches) is separate from
 *     zoff_trainer_optimizer_step(), which computes the global norm before calling the hook.
 *
 * Threads: a zoff_model is used by one thread at a time; its work goes to the stream passed
 * to each call.
 */
#ifndef ZOFF_MODEL_MODEL_H
#define ZOFF_MODEL_MODEL_H

#include "gpu/device.h"
#include "zoff/zoff.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- configuration ------------------------------------------------------------------- */
typedef struct zoff_gpt_config {
    int n_layer;    /* L */
    int n_head;     /* NH, divides n_embd */
    int n_embd;     /* C */
    int vocab_size; /* V */
    int seq_len;    /* maxT: rows of the position embedding, the longest sequence */
} zoff_gpt_config;

/* The built-in demo model: 4 layers, 4 heads, 128 wide, byte vocabulary (256), 64 tokens. */
void zoff_gpt_config_default(zoff_gpt_config *cfg);
/* GPT-2 small: 12 layers, 12 heads, 768 wide, vocab 50257, 1024 positions. */
void zoff_gpt_config_gpt2_124m(zoff_gpt_config *cfg);
/* 0, or ZOFF_ECONFIG with a detail naming the field. */
int zoff_gpt_config_validate(const zoff_gpt_config *cfg);

/* --- flat layout ----------------------------------------------------------------------- */
#define ZOFF_LAYOUT_ALIGN 64 /* elements */

typedef enum zoff_gpt_tensor_kind {
    ZOFF_GPT_WTE = 0,
    ZOFF_GPT_WPE,
    ZOFF_GPT_LN1_W,
    ZOFF_GPT_LN1_B,
    ZOFF_GPT_QKV_W,
    ZOFF_GPT_QKV_B,
    ZOFF_GPT_ATTPROJ_W,
    ZOFF_GPT_ATTPROJ_B,
    ZOFF_GPT_LN2_W,
    ZOFF_GPT_LN2_B,
    ZOFF_GPT_FC_W,
    ZOFF_GPT_FC_B,
    ZOFF_GPT_FCPROJ_W,
    ZOFF_GPT_FCPROJ_B,
    ZOFF_GPT_LNF_W,
    ZOFF_GPT_LNF_B,
    ZOFF_GPT_KIND_COUNT
} zoff_gpt_tensor_kind;

typedef struct zoff_tensor {
    char name[64]; /* Hugging Face name, e.g. "h.3.attn.c_attn.weight" */
    zoff_gpt_tensor_kind kind;
    int layer;     /* block index; -1 for embeddings, n_layer for ln_f */
    int group;     /* 0 embeddings, 1+layer for a block, n_layer+1 final norm */
    size_t offset; /* element offset in the flat buffer, multiple of 64 */
    size_t numel;
    int ndim;          /* 1 or 2 */
    int64_t shape[2];  /* as stored here: matrices (out, in) */
    bool weight_decay; /* matrices and embeddings: yes; biases and norms: no */
} zoff_tensor;

typedef struct zoff_layout {
    int n_tensors;
    zoff_tensor *tensors; /* in layout order */
    int n_groups;             /* n_layer + 2 */
    size_t *group_begin;      /* n_groups + 1 entries; group_begin[n_groups] == total */
    size_t total;             /* elements, including alignment padding */
    size_t n_params;          /* elements excluding padding */
} zoff_layout;

int zoff_gpt_layout_build(const zoff_gpt_config *cfg, zoff_layout *out);
void zoff_layout_free(zoff_layout *layout);
/* The tensor of a kind in a block (layer ignored for embeddings and ln_f); NULL if none. */
const zoff_tensor *zoff_gpt_layout_find(const zoff_layout *layout,
                                            zoff_gpt_tensor_kind kind, int layer);
const zoff_tensor *zoff_layout_find_name(const zoff_layout *layout, const char *name);

/* --- the model -------------------------------------------------------------------------- */
typedef struct zoff_model zoff_model;

typedef struct zoff_model_options {
    int batch;                  /* B: the largest batch a forward may use */
    int seq_len;                /* T: the longest sequence a forward may use (<= cfg.seq_len) */
    zoff_dtype matmul_dtype;    /* f32, or bf16/f16: GEMMs take 16-bit operands with fp32
                                   accumulation; weights come from a 16-bit flat copy and the
                                   activations that feed GEMMs are saved only in 16 bits;
                                   master weights, gradients, norms, softmax, loss stay fp32 */
    bool activation_checkpoint; /* keep each block's input only; recompute it in backward */
} zoff_model_options;
void zoff_model_options_default(zoff_model_options *opt);

/* Called on the host thread issuing the backward, right after the work that completes
 * group g's gradients has been issued to stream s (record an event there to know when). */
typedef void (*zoff_gpt_grad_ready_fn)(void *ctx, int group, zoff_dev_stream *s);

/* Allocates parameters, gradients and activations in device memory (ZOFF_EDEVICE_OOM when
 * they do not fit). Parameters are zero until initialized or loaded. */
int zoff_gpt_create(zoff_dev *dev, const zoff_gpt_config *cfg, const zoff_model_options *opt,
                    zoff_model **out);
void zoff_model_destroy(zoff_model *m);
const zoff_gpt_config *zoff_gpt_get_config(const zoff_model *m);
const zoff_layout *zoff_model_get_layout(const zoff_model *m);
const zoff_model_options *zoff_model_get_options(const zoff_model *m);
zoff_dev *zoff_model_get_dev(const zoff_model *m);
float *zoff_model_params(zoff_model *m); /* device, layout.total fp32 */
float *zoff_model_grads(zoff_model *m);  /* device, layout.total fp32 */
/* 16-bit GEMMs (matmul_dtype bf16/f16): the GEMMs read weights from a 16-bit copy of the flat
 * buffer (layout.total elements of matmul_dtype, same offsets); NULL in f32 mode. By default
 * each forward refreshes it from the fp32 parameters; an owner that keeps it current itself
 * (the offload engine uploading 16-bit weights) sets external = true. */
void *zoff_gpt_params16(zoff_model *m);
void zoff_gpt_set_params16_external(zoff_model *m, bool external);
/* Bytes of device memory the model holds (parameters, gradients, activations, scratch). */
size_t zoff_model_device_bytes(const zoff_model *m);
void zoff_gpt_set_grad_ready_hook(zoff_model *m, zoff_gpt_grad_ready_fn fn, void *ctx);
/* Called on the host thread issuing a forward, before the work that first reads group g's
 * weights is issued to s: the offload engine makes s wait for them there. */
typedef void (*zoff_gpt_params_needed_fn)(void *ctx, int group, zoff_dev_stream *s);
void zoff_model_set_params_needed_hook(zoff_model *m, zoff_gpt_params_needed_fn fn, void *ctx);

/* GPT-2 initialization from a seed: weights N(0, 0.02), residual output projections
 * N(0, 0.02/sqrt(2L)), biases 0, norm weights 1. Synchronous. */
int zoff_model_init_params(zoff_model *m, uint64_t seed);
/* Whole flat buffer between host memory (layout.total floats) and the device. Synchronous. */
int zoff_model_params_to_host(zoff_model *m, float *dst);
int zoff_model_params_from_host(zoff_model *m, const float *src);
int zoff_model_grads_to_host(zoff_model *m, float *dst);

/* Forward on B <= batch sequences of T <= seq_len tokens (host arrays of B*T int32, ids in
 * [0, V), checked); targets may be NULL (inference: no loss, no backward). The token arrays are
 * copied into pinned staging first (after waiting for s to finish its previous use of it), so
 * the caller may reuse them on return. The rest is issued on s; when loss is not NULL, waits
 * for s and returns the mean cross-entropy. Probabilities of the last forward stay available
 * until the next backward. */
int zoff_model_forward(zoff_model *m, zoff_dev_stream *s, const int32_t *tokens, const int32_t *targets,
                     int B, int T, float *loss);
/* Backward of the last forward (which must have had targets), accumulating into grads.
 * dloss_scale multiplies the loss gradient (1, or a loss scale for fp16). */
int zoff_model_backward(zoff_model *m, zoff_dev_stream *s, float dloss_scale);
int zoff_model_zero_grads(zoff_model *m, zoff_dev_stream *s);
/* Next-token probabilities (V floats) at (b, t) of the last forward, copied to host. Sync. */
int zoff_model_probs_row(zoff_model *m, zoff_dev_stream *s, int b, int t, float *probs);
/* Model FLOPs of one training step (forward + backward) on B*T tokens: 6*N*tokens for the
 * matrices plus attention's 12*L*T*C per token (the usual MFU accounting). */
double zoff_gpt_train_flops(const zoff_gpt_config *cfg, int B, int T);

/* --- the reference trainer ------------------------------------------------------------- */
typedef struct zoff_trainer_config {
    float lr;          /* peak learning rate */
    float min_lr_frac; /* cosine decay floor as a fraction of lr */
    int warmup_steps;  /* linear warm-up */
    int total_steps;   /* for the schedule */
    float beta1, beta2, eps, weight_decay;
    float grad_clip; /* global norm clip; 0 = off */
    /* fp16 dynamic loss scaling (used when the model's matmul_dtype is f16) */
    float loss_scale_init;
    int loss_scale_window; /* steps without overflow before doubling */
} zoff_trainer_config;
void zoff_trainer_config_default(zoff_trainer_config *cfg);

/* The optimizer step as a replaceable hook: the offload engine installs its own and takes
 * over the step. Receives the flat fp32 parameter and gradient buffers (device memory, the
 * layout above); the gradients are complete and already include every micro-batch. grad_scale
 * is what to multiply gradients by before use (clipping and loss-scale un-scaling combined);
 * lr is this step's scheduled learning rate; step is 1-based. Work may be issued to s or done
 * synchronously; return 0 or a negative error. */
typedef struct zoff_optimizer_step_args {
    float *params, *grads;
    const zoff_layout *layout;
    int step;
    float lr, grad_scale;
    const zoff_trainer_config *cfg;
} zoff_optimizer_step_args;
typedef int (*zoff_optimizer_step_fn)(void *ctx, zoff_dev_stream *s,
                                      const zoff_optimizer_step_args *args);

typedef struct zoff_trainer zoff_trainer;

typedef struct zoff_step_stats {
    float loss;      /* mean loss of the step's micro-batches */
    float grad_norm; /* global gradient norm (after un-scaling) */
    float lr;
    float loss_scale; /* 1 unless fp16 */
    bool skipped;     /* non-finite gradients: the step was skipped (fp16 overflow) */
} zoff_step_stats;

/* The trainer owns AdamW moments (device, flat layout) unless a hook replaces the step. */
int zoff_trainer_create(zoff_model *m, zoff_dev_stream *s, const zoff_trainer_config *cfg,
                        zoff_trainer **out);
void zoff_trainer_destroy(zoff_trainer *tr);
/* Replaces the built-in device AdamW; fn NULL restores it. */
void zoff_trainer_set_optimizer(zoff_trainer *tr, zoff_optimizer_step_fn fn, void *ctx);
/* Phase 1: zero grads (when first_micro_batch), forward with targets, backward. Adds the
 * micro-batch's loss to the step's tally. */
int zoff_trainer_compute_grads(zoff_trainer *tr, const int32_t *tokens, const int32_t *targets,
                               int B, int T, bool first_micro_batch, float *loss);
/* Phase 2: global norm + inf/nan check of the flat grad buffer, clip, lr schedule, then the
 * optimizer step (hook or built-in AdamW). Advances the step counter unless skipped. */
int zoff_trainer_optimizer_step(zoff_trainer *tr, zoff_step_stats *stats);
/* Both phases with one micro-batch. */
int zoff_trainer_step(zoff_trainer *tr, const int32_t *tokens, const int32_t *targets, int B, int T,
                      zoff_step_stats *stats);
int zoff_trainer_get_step(const zoff_trainer *tr); /* steps taken so far */
float zoff_trainer_lr_at(const zoff_trainer_config *cfg, int step);

/* --- checkpoints ------------------------------------------------------------------------ */
/* Hugging Face config.json (GPT2Config keys n_layer, n_head, n_embd, vocab_size, n_positions
 * or n_ctx). Errors name the file and the key. */
int zoff_gpt_config_load_json(const char *path, zoff_gpt_config *cfg);
int zoff_gpt_config_save_json(const char *path, const zoff_gpt_config *cfg);
/* Parses config JSON text (for --config files and tests); `what` names the source. */
int zoff_gpt_config_parse_json(const char *text, const char *what, zoff_gpt_config *cfg);

/* safetensors with Hugging Face GPT-2 names and shapes (Conv1D weights (in, out)); loads
 * F32, F16 or BF16 tensors, accepts a "transformer." prefix and ignores extra tensors such
 * as "h.N.attn.bias". Errors name the file and the tensor. Host memory: params is a
 * layout.total float array (padding zeroed). */
int zoff_safetensors_load(const char *path, const zoff_layout *layout, float *params);
int zoff_safetensors_save(const char *path, const zoff_layout *layout, const float *params);
/* Parses a whole safetensors image already in memory (the fuzz target's entry point). */
int zoff_safetensors_parse(const uint8_t *data, size_t size, const char *what,
                               const zoff_layout *layout, float *params);
/* llm.c's gpt2_124M.bin (magic 20240326, version 3 fp32 or 5 bf16). Reads the config from
 * its header; params (layout.total floats) may be NULL to read the config only. */
int zoff_llmc_load_gpt(const char *path, zoff_gpt_config *cfg, const zoff_layout *layout,
                       float *params);
int zoff_llmc_save_gpt(const char *path, const zoff_gpt_config *cfg, const zoff_layout *layout,
                       const float *params);
/* A directory checkpoint: DIR/model.safetensors + DIR/config.json (created as needed). */
int zoff_model_checkpoint_save(zoff_model *m, const char *dir);
/* Loads weights into m from a directory (config.json + model.safetensors), a .safetensors
 * file, or an llm.c .bin; the stored config must equal m's. */
int zoff_model_checkpoint_load(zoff_model *m, const char *path);
/* Reads only the config of a checkpoint (directory, .safetensors with config.json beside
 * it, or .bin). */
int zoff_gpt_checkpoint_config(const char *path, zoff_gpt_config *cfg);

/* The built-in AdamW's state for exact resumption: DIR/optimizer.safetensors ("adamw.m",
 * "adamw.v": F32 over the flat layout; step and loss scale in the metadata). Host arrays of
 * n = layout.total floats. Errors name the file and the tensor. */
int zoff_optimizer_state_save(const char *path, const float *m, const float *v, size_t n, int step,
                              float loss_scale);
int zoff_optimizer_state_load(const char *path, float *m, float *v, size_t n, int *step,
                              float *loss_scale);
/* The trainer's own state (moments, step, loss scale) to and from such a file. Only
 * meaningful with the built-in optimizer (a hook keeps its own state). */
int zoff_trainer_save_state(zoff_trainer *tr, const char *path);
int zoff_trainer_load_state(zoff_trainer *tr, const char *path);

/* --- data ------------------------------------------------------------------------------- */
typedef struct zoff_dataset {
    int32_t *tokens; /* all tokens */
    size_t n_tokens;
    size_t n_train; /* tokens [0, n_train) train, [n_train, n_tokens) validation */
    int max_token;  /* largest id present */
    bool is_text;   /* byte-level text (vocab 256) */
} zoff_dataset;

/* llm.c token files (.bin: 256 int32 header, magic 20240520, version 1, uint16 tokens) by
 * magic; anything else is raw text with byte tokens. val_frac of the tokens (at the end) is
 * the validation split; each split must hold at least seq_len+1 tokens. */
int zoff_dataset_load(const char *path, float val_frac, int seq_len, zoff_dataset *out);
void zoff_dataset_free(zoff_dataset *ds);
/* B random windows of T+1 tokens from a split (seeded xorshift state in *rng): inputs and
 * the next-token targets, B*T each. */
void zoff_dataset_batch(const zoff_dataset *ds, bool validation, int B, int T, uint64_t *rng,
                        int32_t *inputs, int32_t *targets);

uint64_t zoff_rng_next(uint64_t *state); /* xorshift64* */
float zoff_rng_uniform(uint64_t *state); /* [0, 1) */
float zoff_rng_normal(uint64_t *state);  /* N(0, 1) */
/* Samples from probs (V entries, summing to ~1) after temperature and top-k (0 = all). */
int zoff_sample_token(const float *probs, int V, float temperature, int top_k, uint64_t *rng);

#endif
