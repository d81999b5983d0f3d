/* The model module: the model interface every architecture implements (GPT-2 is the first,
 * model/gpt/), its flat parameter layout, the reference (non-offloaded) trainer, checkpoints
 * and data.
 *
 * THE MODEL INTERFACE. A zoff_model is one architecture behind a small table of functions
 * (model/model_impl.h): it describes its parameters as a tensor table (zoff_layout: Hugging Face
 * names, shapes, layer group, weight-decay flag, offset in the flat layout) and runs forward and
 * backward as device ops over layer groups. What is common to every architecture lives here
 * once: the weights buffer, gradient sinks, hooks, batch staging, the chunked loss, the device
 * plan, checkpoints, the trainer and the offload adapter (model/model_offload.h).
 *
 * FLAT PARAMETER LAYOUT (what the offload engine partitions into buckets). All weights live in
 * ONE device buffer of the model's weight dtype, in layout order, each tensor starting at an
 * element offset that is a multiple of ZOFF_LAYOUT_ALIGN (64 elements; the gap is zero
 * padding). Group g spans elements [group_begin[g], group_begin[g+1]) and is contiguous: for a
 * transformer, group 0 holds the embeddings, groups 1..L the blocks, the last group the final
 * norm (and an untied head). Matrices are stored (out, in) (PyTorch nn.Linear order).
 *
 * MEMORY (what the device holds; see zoff_model_plan). In 16-bit mode (matmul dtype bf16/f16)
 * the device holds the weights in 16 bits only - norm weights and biases included - and the
 * activations that feed GEMMs in 16 bits; fp32 master weights exist only where the optimizer
 * lives (the reference trainer on the device, the offload engine on the CPU or NVMe). f32 mode
 * keeps everything fp32 and is the exact oracle. Nothing grows with T*T (fused attention) or
 * with B*T*V (the loss runs over chunks of rows).
 *
 * GRADIENTS GO ONE WAY. Backward writes each tensor's gradient into the buffer its gradient
 * sink provides (zoff_grad_sink): the reference trainer's flat fp32 gradient buffer
 * (zoff_model_alloc_grads), or the offload engine's 16-bit bucket slots, so that with offload no
 * full-model gradient buffer exists on the device. The model asks for a tensor's buffer before
 * the group's backward and reports it done when the group's gradients are final, in backward
 * order (last group first); a tied tensor (GPT-2's wte, also the output projection) is asked
 * for first and done last. A 16-bit sink must hand out zeroed buffers; the model then sums the
 * tied tensor's contributions in an fp32 scratch of its size and stores it rounded once.
 *
 * Threads: a zoff_model is used by one thread at a time; its work goes to the stream passed to
 * each call.
 */
#ifndef ZOFF_MODEL_MODEL_H
#define ZOFF_MODEL_MODEL_H

#include "gpu/device.h"
#include "zoff/zoff.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- GPT-2 configuration ---------------------------------------------------------------- */
typedef struct zoff_gpt_config {
    int n_layer;    /* L */
    int n_head;     /* NH, divides n_embd */
    int n_embd;     /* C */
    int vocab_size; /* V */
    int seq_len;    /* maxT: rows of the position embedding, the longest sequence */
    bool untied_head; /* tie_word_embeddings false: a separate lm_head (V,C) in the last group */
} zoff_gpt_config;

/* The built-in demo model: 4 layers, 4 heads, 128 wide, byte vocabulary (256), 64 tokens. */
void zoff_gpt_config_default(zoff_gpt_config *cfg);
/* GPT-2 small: 12 layers, 12 heads, 768 wide, vocab 50257, 1024 positions. */
void zoff_gpt_config_gpt2_124m(zoff_gpt_config *cfg);
/* 0, or ZOFF_ECONFIG with a detail naming the field. */
int zoff_gpt_config_validate(const zoff_gpt_config *cfg);

/* --- Llama-family configuration (Llama 2/3, Mistral, Qwen2; model/llama/) ----------------- */
typedef enum zoff_rope_type {
    ZOFF_ROPE_DEFAULT = 0, /* inv_freq[i] = theta^(-2i/HS) */
    ZOFF_ROPE_LINEAR,      /* divided by factor */
    ZOFF_ROPE_LLAMA3       /* Llama 3.1's frequency-dependent scaling */
} zoff_rope_type;

typedef struct zoff_llama_config {
    char model_type[16]; /* "llama", "mistral" or "qwen2": what config.json is written as */
    int n_layer;         /* L: num_hidden_layers */
    int n_head;          /* NH: num_attention_heads */
    int n_kv_head;       /* NKV: num_key_value_heads, divides NH (grouped-query attention) */
    int n_embd;          /* C: hidden_size */
    int head_dim;        /* HS: head_dim (even), default C / NH */
    int n_ffn;           /* F: intermediate_size */
    int vocab_size;      /* V */
    int seq_len;         /* max_position_embeddings */
    float rms_eps;       /* rms_norm_eps */
    double rope_theta;
    zoff_rope_type rope_type;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor; /* linear, llama3 */
    int rope_original_max_pos; /* llama3: original_max_position_embeddings */
    bool tie_word_embeddings;
    bool qkv_bias, o_bias, mlp_bias; /* Llama attention_bias: q,k,v,o; Qwen2: q,k,v */
    int sliding_window; /* 0: none; else each query sees at most this many keys (refused unless
                           the sequence fits in it) */
} zoff_llama_config;

/* A small Llama: 4 layers, 4 heads (2 KV), 128 wide, FFN 352, byte vocabulary, 64 tokens. */
void zoff_llama_config_default(zoff_llama_config *cfg);
/* 0, or ZOFF_ECONFIG with a detail naming the field. */
int zoff_llama_config_validate(const zoff_llama_config *cfg);
/* Hugging Face config.json (LlamaConfig, MistralConfig, Qwen2Config) text: every field that
 * changes the computation is honoured or refused with an error naming the field and value. */
int zoff_llama_config_parse_json(const char *text, const char *what, zoff_llama_config *cfg);
int zoff_llama_config_save_json(const char *path, const zoff_llama_config *cfg);
/* RoPE inverse frequencies (head_dim/2 floats) exactly as transformers computes them for the
 * config's rope type. */
void zoff_llama_rope_inv_freq(const zoff_llama_config *cfg, float *inv_freq);
double zoff_llama_train_flops(const zoff_llama_config *cfg, int B, int T);
/* Field by field (padding aside). */
bool zoff_llama_config_equal(const zoff_llama_config *a, const zoff_llama_config *b);

/* --- the tensor table (flat layout) ------------------------------------------------------ */
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
    ZOFF_GPT_LM_HEAD, /* untied head only */
    ZOFF_GPT_KIND_COUNT
} zoff_gpt_tensor_kind;

typedef struct zoff_tensor {
    char name[96]; /* Hugging Face name, e.g. "h.3.attn.c_attn.weight" */
    int kind;      /* the architecture's own tensor kind (zoff_gpt_tensor_kind for GPT) */
    int layer;     /* block index; -1 for embeddings, n_layer for the final norm */
    int group;     /* layer group: 0 embeddings, 1+layer for a block, n_layer+1 final */
    size_t offset; /* element offset in the flat buffer, multiple of ZOFF_LAYOUT_ALIGN */
    size_t numel;
    int ndim;          /* 1 or 2 */
    int64_t shape[2];  /* as stored here: matrices (out, in) */
    bool weight_decay; /* matrices and embeddings: yes; biases and norms: no */
    bool hf_transposed; /* stored (in, out) in Hugging Face checkpoints (GPT-2's Conv1D) */
} zoff_tensor;

typedef struct zoff_layout {
    int n_tensors;
    zoff_tensor *tensors; /* in layout order */
    int n_groups;
    size_t *group_begin; /* n_groups + 1 entries; group_begin[n_groups] == total */
    size_t total;        /* elements, including alignment padding */
    size_t n_params;     /* elements excluding padding */
} zoff_layout;

int zoff_gpt_layout_build(const zoff_gpt_config *cfg, zoff_layout *out);
void zoff_layout_free(zoff_layout *layout);
/* The GPT tensor of a kind in a block (layer ignored for embeddings and ln_f); NULL if none. */
const zoff_tensor *zoff_gpt_layout_find(const zoff_layout *layout, zoff_gpt_tensor_kind kind,
                                        int layer);
const zoff_tensor *zoff_layout_find_name(const zoff_layout *layout, const char *name);

/* --- the model ------------------------------------------------------------------------------ */
typedef struct zoff_model zoff_model;

typedef struct zoff_model_options {
    int batch;                  /* B: the largest batch a forward may use */
    int seq_len;                /* T: the longest sequence a forward may use (<= the model's) */
    zoff_dtype matmul_dtype;    /* f32, or bf16/f16: the weights on the device, GEMM operands
                                   and the activations that feed GEMMs are 16-bit (fp32
                                   accumulation); residual stream, norm statistics, softmax and
                                   loss stay fp32 */
    bool activation_checkpoint; /* keep each block's input only; recompute it in backward */
    int loss_chunk_rows;        /* rows of logits per chunk of the loss; 0 = auto (about 16M
                                   logits, at most B*T) */
    bool offload_activations;   /* with activation_checkpoint: the kept block inputs live in
                                   pinned CPU memory, a few on the device, copied out in
                                   forward and back ahead of the backward, overlapped */
    bool stream_weights;        /* the model allocates no weights: each layer group's device
                                   address comes from the params-needed hook
                                   (zoff_model_set_group_weights), e.g. the offload engine's
                                   ring of streamed groups */
} zoff_model_options;
void zoff_model_options_default(zoff_model_options *opt);

/* What the device holds, term by term, in bytes (zoff_model_plan, the trainer and the offload
 * adapter fill their terms; cli and benchmarks print it before the first step). */
typedef struct zoff_device_plan {
    size_t weights;     /* the model's weights on the device (weight dtype) */
    size_t master;      /* fp32 master weights on the device (reference trainer, 16-bit mode) */
    size_t grads;       /* full-model gradient buffer (reference trainer) */
    size_t optimizer;   /* Adam moments on the device (reference trainer) */
    size_t buckets;     /* offload engine: gradient bucket slots and their statistics */
    size_t activations; /* kept for backward: block inputs and the outputs backward reads */
    size_t workspace;   /* one block's backward scratch, the loss chunk, the tied-gradient
                           scratch, token staging, backend workspaces */
    size_t total;       /* the sum */
    size_t n_params;
} zoff_device_plan;
void zoff_device_plan_sum(zoff_device_plan *p);
/* The model's own terms (weights, activations, workspace) for a configuration, without
 * allocating anything. */
int zoff_gpt_plan(const zoff_gpt_config *cfg, const zoff_model_options *opt,
                  zoff_device_plan *out);
/* Adds the reference trainer's terms (fp32 gradients and moments; fp32 master in 16-bit). */
void zoff_trainer_plan(zoff_device_plan *p, zoff_dtype matmul_dtype);
/* Writes a few lines describing the plan (each term, bytes per parameter) into buf. */
void zoff_device_plan_format(const zoff_device_plan *p, char *buf, size_t n);

/* A batch: B sequences of T tokens (host arrays, B*T int32 each, ids in [0, V), checked).
 * targets NULL: no loss; a target < 0 (e.g. -100) carries no loss. doc_start NULL, or the
 * position in its row where each token's sample begins (packed samples: positions restart
 * there and attention stays inside the sample). */
typedef struct zoff_batch {
    const int32_t *tokens, *targets, *doc_start;
    int B, T;
} zoff_batch;

/* Where backward puts the gradients (see GRADIENTS above). buffer: device memory of `dtype`,
 * tensor numel elements, into which tensor t's gradient accumulates; done: the gradient is
 * final (work issued to s so far). Both return 0 or a negative code, which stops the backward. */
typedef struct zoff_grad_sink {
    zoff_dtype dtype;
    int (*buffer)(void *ctx, int tensor, zoff_dev_stream *s, void **grad);
    int (*done)(void *ctx, int tensor, zoff_dev_stream *s);
    void *ctx;
} zoff_grad_sink;

/* Creates a GPT-2 model: weights (zero until initialized or loaded), activations and
 * workspace in device memory (ZOFF_EDEVICE_OOM with the plan in the detail when they do not
 * fit). No gradient buffer: see zoff_model_alloc_grads and zoff_model_set_grad_sink. */
int zoff_gpt_create(zoff_dev *dev, const zoff_gpt_config *cfg, const zoff_model_options *opt,
                    zoff_model **out);
/* Creates a Llama-family model (see zoff_gpt_create); zoff_llama_plan: its device terms. */
int zoff_llama_create(zoff_dev *dev, const zoff_llama_config *cfg, const zoff_model_options *opt,
                      zoff_model **out);
int zoff_llama_plan(const zoff_llama_config *cfg, const zoff_model_options *opt,
                    zoff_device_plan *out);
/* The configuration of a Llama-family model (NULL for another architecture). */
const zoff_llama_config *zoff_llama_get_config(const zoff_model *m);
void zoff_model_destroy(zoff_model *m);
const char *zoff_model_arch(const zoff_model *m); /* "gpt2", "llama" */
/* The GPT configuration of a GPT model (NULL for another architecture). */
const zoff_gpt_config *zoff_gpt_get_config(const zoff_model *m);
const zoff_layout *zoff_model_get_layout(const zoff_model *m);
const zoff_model_options *zoff_model_get_options(const zoff_model *m);
zoff_dev *zoff_model_get_dev(const zoff_model *m);
/* The device weights: layout.total elements of zoff_model_weight_dtype (the matmul dtype). */
void *zoff_model_weights(zoff_model *m);
zoff_dtype zoff_model_weight_dtype(const zoff_model *m);
/* The model's own device bytes, term by term, as allocated (the plan's model terms). */
void zoff_model_memory(const zoff_model *m, zoff_device_plan *out);

/* A flat fp32 gradient buffer over the layout, owned by the model, installed as its gradient
 * sink (the reference trainer and tests use it); gradients accumulate across backwards until
 * zoff_model_zero_grads. NULL from zoff_model_grads until allocated. */
int zoff_model_alloc_grads(zoff_model *m);
float *zoff_model_grads(zoff_model *m);
int zoff_model_zero_grads(zoff_model *m, zoff_dev_stream *s);
int zoff_model_grads_to_host(zoff_model *m, float *dst);
/* Replaces the gradient sink (NULL: back to the flat buffer, if any). */
void zoff_model_set_grad_sink(zoff_model *m, const zoff_grad_sink *sink);

/* Called on the host thread issuing a forward or a backward, before the work that reads group
 * g's weights is issued to s (the offload engine makes s wait for them there), each time
 * another group's reads begin: forward 0..n-1, the loss head's group, backward n-1..1 (each
 * block's recompute included). Reads of the previous group are over when it is called (the
 * streamed engine then releases that group's ring slot). A non-zero return stops the pass. */
typedef int (*zoff_model_params_needed_fn)(void *ctx, int group, zoff_dev_stream *s);
void zoff_model_set_params_needed_hook(zoff_model *m, zoff_model_params_needed_fn fn, void *ctx);
/* offload_activations: bytes of kept block inputs copied to the host and back so far. */
void zoff_model_activation_traffic(const zoff_model *m, uint64_t *d2h, uint64_t *h2d);
/* stream_weights: group g's weights are at base (device memory, the group's elements from
 * layout.group_begin[g]) for the reads that follow; called from the params-needed hook. */
void zoff_model_set_group_weights(zoff_model *m, int group, void *base);

/* fp32 values for every weight from a seed (GPT-2: N(0, 0.02), residual projections
 * N(0, 0.02/sqrt(2L)), biases 0, norm weights 1) into host memory (layout.total floats,
 * padding zero): the master weights; zoff_model_params_from_host puts them on the device. */
int zoff_model_init_host(const zoff_model *m, uint64_t seed, float *host);
/* Initializes the device weights from a seed (init_host + params_from_host). Synchronous. */
int zoff_model_init_params(zoff_model *m, uint64_t seed);
/* The device weights widened to fp32 (layout.total floats), and back (rounded to the weight
 * dtype). Synchronous. */
int zoff_model_params_to_host(zoff_model *m, float *dst);
int zoff_model_params_from_host(zoff_model *m, const float *src);

/* Forward without gradients (evaluation, sampling): B <= batch, T <= seq_len. The tokens are
 * copied into pinned staging (double-buffered: the caller may reuse its arrays on return). With
 * targets and loss not NULL, waits for s and returns the mean loss over the targets that are
 * not ignored. Keeps the final hidden states for zoff_model_probs_row. */
int zoff_model_forward(zoff_model *m, zoff_dev_stream *s, const zoff_batch *b, float *loss);
/* Forward and backward of one micro-batch (targets required): the gradient of
 * dloss_scale * (mean loss over non-ignored targets) accumulates through the gradient sink.
 * The loss head's gradient is computed as each chunk of rows' loss is (no logits are kept).
 * loss: NULL, or waits for s and returns the micro-batch's mean loss. */
int zoff_model_forward_backward(zoff_model *m, zoff_dev_stream *s, const zoff_batch *b,
                                float dloss_scale, float *loss);
/* The mean loss of the last forward with targets: waits only until that forward's loss head
 * is done (an event), not for work queued behind it - a caller reads the loss while the
 * backward still runs. */
int zoff_model_loss_wait(zoff_model *m, zoff_dev_stream *s, float *loss);
/* Next-token probabilities (V floats) at (b, t) of the last forward, copied to host. Sync. */
int zoff_model_probs_row(zoff_model *m, zoff_dev_stream *s, int b, int t, float *probs);
/* The output logits (V floats) at (b, t) of the last forward, copied to host. Synchronous. */
int zoff_model_logits_row(zoff_model *m, zoff_dev_stream *s, int b, int t, float *logits);
/* Model FLOPs of one training step (forward + backward) on B*T tokens: 6*N*tokens for the
 * matrices plus attention's score and value products (causal: half of T*T). */
double zoff_model_train_flops(const zoff_model *m, int B, int T);
double zoff_gpt_train_flops(const zoff_gpt_config *cfg, int B, int T);

/* --- any architecture ------------------------------------------------------------------------ */
typedef enum zoff_arch { ZOFF_ARCH_GPT2 = 0, ZOFF_ARCH_LLAMA } zoff_arch;
typedef struct zoff_model_config {
    zoff_arch arch;
    zoff_gpt_config gpt;     /* arch GPT2 */
    zoff_llama_config llama; /* arch LLAMA (Llama, Mistral, Qwen2) */
} zoff_model_config;
/* The architecture and config of a checkpoint (see zoff_checkpoint_arch). */
int zoff_model_config_from_checkpoint(const char *path, zoff_model_config *c);
int zoff_model_config_validate(const zoff_model_config *c);
int zoff_model_config_plan(const zoff_model_config *c, const zoff_model_options *opt,
                           zoff_device_plan *out);
int zoff_model_config_create(zoff_dev *dev, const zoff_model_config *c,
                             const zoff_model_options *opt, zoff_model **out);
int zoff_model_config_layout(const zoff_model_config *c, zoff_layout *out);
double zoff_model_config_train_flops(const zoff_model_config *c, int B, int T);
/* One line: the architecture and its shape. */
void zoff_model_config_describe(const zoff_model_config *c, char *buf, size_t n);
/* The flat layout of a Llama-family configuration (what zoff_llama_create builds). */
int zoff_llama_layout_build(const zoff_llama_config *cfg, zoff_layout *out);

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

/* The optimizer step as a replaceable hook (tests install their own). Receives the flat fp32
 * master weights and gradients (device memory, the layout above); the gradients are complete
 * and include every micro-batch. grad_scale is what to multiply gradients by before use
 * (clipping and loss-scale un-scaling combined); lr is this step's scheduled learning rate;
 * step is 1-based. The trainer copies the master weights into the model's weights after the
 * hook. Work may be issued to s or done synchronously; return 0 or a negative error. */
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

/* The trainer keeps what mixed-precision training needs on the device: the fp32 master weights
 * (the model's own weights in f32 mode; a separate copy in 16-bit mode, initialized from
 * `master` if not NULL, else from the model's weights), the fp32 gradient buffer and the AdamW
 * moments (allocated at the first built-in step). */
int zoff_trainer_create(zoff_model *m, zoff_dev_stream *s, const zoff_trainer_config *cfg,
                        const float *master, zoff_trainer **out);
void zoff_trainer_destroy(zoff_trainer *tr);
/* Replaces the built-in device AdamW; fn NULL restores it. */
void zoff_trainer_set_optimizer(zoff_trainer *tr, zoff_optimizer_step_fn fn, void *ctx);
/* Phase 1: zero grads (when first_micro_batch), forward and backward. Adds the micro-batch's
 * loss to the step's tally. */
int zoff_trainer_compute_grads(zoff_trainer *tr, const zoff_batch *b, bool first_micro_batch,
                               float *loss);
/* Phase 2: global norm + inf/nan check of the flat grad buffer, clip, lr schedule, then the
 * optimizer step (hook or built-in AdamW). Advances the step counter unless skipped. */
int zoff_trainer_optimizer_step(zoff_trainer *tr, zoff_step_stats *stats);
/* Both phases with one micro-batch. */
int zoff_trainer_step(zoff_trainer *tr, const zoff_batch *b, zoff_step_stats *stats);
int zoff_trainer_get_step(const zoff_trainer *tr); /* steps taken so far */
float zoff_trainer_lr_at(const zoff_trainer_config *cfg, int step);
/* The fp32 master weights (layout.total floats) to host memory. Synchronous. */
int zoff_trainer_master_to_host(zoff_trainer *tr, float *dst);

/* --- checkpoints ------------------------------------------------------------------------ */
/* Hugging Face config.json (GPT2Config keys n_layer, n_head, n_embd, vocab_size, n_positions
 * or n_ctx, tie_word_embeddings). Fields that change the computation and that zoff does not
 * implement (layer_norm_epsilon other than 1e-5, activation_function other than gelu_new,
 * n_inner other than 4 n_embd, scale_attn_weights false, scale_attn_by_inverse_layer_idx true)
 * are refused naming the field and value. Errors name the file and the key. */
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
/* A directory checkpoint: DIR/model.safetensors + DIR/config.json (created as needed).
 * master: the fp32 weights to save (layout.total floats: the optimizer's master copy); NULL
 * saves the device weights widened. */
int zoff_model_checkpoint_save(zoff_model *m, const char *dir, const float *master);
/* How a checkpoint's weights are written: the stored dtype (f32, bf16, f16) and the largest
 * shard; above it, model-0000K-of-0000N.safetensors + model.safetensors.index.json as
 * transformers writes them. Default f32, 5 GB (5e9 bytes). */
typedef struct zoff_save_options {
    zoff_dtype dtype;
    uint64_t max_shard_bytes;
} zoff_save_options;
void zoff_save_options_default(zoff_save_options *o);
/* The layout's tensors (Hugging Face names and shapes) into DIR, sharded as o says. */
int zoff_safetensors_save_dir(const char *dir, const zoff_layout *layout, const float *params,
                              const zoff_save_options *o);
/* zoff_model_checkpoint_save with save options (NULL: defaults). */
int zoff_model_checkpoint_save_opts(zoff_model *m, const char *dir, const float *master,
                                    const zoff_save_options *opts);
/* Reads fp32 weights from a directory (config.json + model.safetensors), a .safetensors file,
 * or an llm.c .bin into host memory (layout.total floats; the stored config must equal m's),
 * and, when to_device, into the model's weights too. */
int zoff_model_checkpoint_read(zoff_model *m, const char *path, float *host, bool to_device);
/* Loads weights into m (checkpoint_read through a temporary host buffer). */
int zoff_model_checkpoint_load(zoff_model *m, const char *path);
/* Reads only the config of a checkpoint (directory, .safetensors with config.json beside
 * it, or .bin). */
int zoff_gpt_checkpoint_config(const char *path, zoff_gpt_config *cfg);

/* The architecture of a checkpoint (directory, .safetensors beside its config.json, or .bin):
 * "gpt2" or "llama" (model_type llama, mistral, qwen2); anything else refused by name. */
int zoff_checkpoint_arch(const char *path, char *arch, size_t n);
/* The Llama-family config of a checkpoint (its config.json, read strictly). */
int zoff_llama_checkpoint_config(const char *path, zoff_llama_config *cfg);
/* Loads a sharded checkpoint: index is model.safetensors.index.json; its shards (beside it)
 * are read one at a time straight into params (layout.total floats). */
int zoff_safetensors_load_sharded(const char *index, const zoff_layout *layout, float *params);

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
