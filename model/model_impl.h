/* Internals of the model interface (model/model.h): the table of functions an architecture
 * fills, and the state every architecture shares (weights, gradient sink, hooks, batch
 * staging, the chunked loss head, memory accounting). model_core.c owns the shared state and
 * drives an architecture through its table; an architecture's file holds only what is
 * particular to it (model/gpt/gpt.c).
 *
 * Memory accounting: every device allocation goes through model_alloc with the plan term it
 * belongs to. zoff_gpt_plan runs the same allocation code in counting mode (no device), so the
 * plan printed before training is exactly what the model then allocates. */
#ifndef ZOFF_MODEL_MODEL_IMPL_H
#define ZOFF_MODEL_MODEL_IMPL_H

#include "model/model.h"

typedef enum model_term { TERM_WEIGHTS, TERM_GRADS, TERM_ACTIVATIONS, TERM_WORKSPACE } model_term;

typedef struct zoff_model_ops {
    const char *arch;
    /* The architecture's activations and workspace, through model_alloc (also in counting
     * mode, where pointers stay NULL). */
    int (*alloc)(zoff_model *m);
    /* Forward from the staged tokens up to the loss head's input m->head_in (B,T,C in the
     * activation dtype), calling model_params_needed before each group's first weight use. */
    int (*forward_body)(zoff_model *m, zoff_dev_stream *s, int B, int T);
    /* Backward from m->dhead (B,T,C fp32, the gradient of head_in) through every group,
     * between model_grad_begin_group and model_grad_end_group for each. */
    int (*backward_body)(zoff_model *m, zoff_dev_stream *s, int B, int T);
    int (*init_host)(const zoff_model *m, uint64_t seed, float *host);
    double (*train_flops)(const zoff_model *m, int B, int T);
    void (*destroy)(zoff_model *m); /* the architecture's own host state (not device memory) */
} zoff_model_ops;

struct zoff_model {
    const zoff_model_ops *ops;
    void *arch; /* the architecture's state */
    zoff_dev *dev;
    zoff_model_options opt;
    zoff_layout layout;
    int C;                /* width of head_in */
    int V;                /* vocabulary (rows of the head weight) */
    int head_tensor;      /* tensor index of the output projection (tied: also an input) */
    int tied_group;       /* group whose gradients are needed before the last group's are done
                             (the tied head's), -1 if none */
    zoff_dtype wdt;       /* weights on the device; also the activations' GEMM dtype */
    void *weights;        /* (layout.total) wdt; NULL with stream_weights */
    void **group_base;    /* (n_groups) each group's weights (into `weights`, or streamed) */
    bool counting;        /* plan mode: model_alloc only counts */
    zoff_device_plan mem; /* bytes per term, as allocated (or counted) */
    void **allocs;
    int n_allocs;

    /* gradients */
    float *flat_grads; /* (layout.total) fp32, zoff_model_alloc_grads */
    zoff_grad_sink sink;
    bool have_sink;
    void **gptr;         /* (n_tensors) this backward's gradient pointer per tensor */
    uint8_t *gstate;     /* (n_tensors) this backward: 0 untouched, 1 taken, 2 given */
    float *tied_scratch; /* (tied group's elements) fp32: 16-bit sinks only */

    zoff_model_params_needed_fn need_hook;
    void *need_ctx;

    /* activation offload (model_act_offload.c); kept_phase: 0 none, 1 forward, 2 backward */
    struct model_kept *kept;
    int kept_phase;

    /* staged batch: two pinned slots (tokens, targets, pos per slot, B*T each) so that the host
     * fills one while the stream may still copy the other */
    int32_t *h_stage[2];
    zoff_dev_event *stage_done[2];
    int stage_slot;
    int32_t *d_tokens, *d_targets, *d_pos; /* d_pos: NULL-able (no packed samples) */
    bool has_pos;
    int n_valid; /* targets of the current batch that carry loss */

    /* loss head */
    void *head_in;   /* (B,T,C) wdt, written by forward_body */
    float *dhead;    /* (B,T,C) fp32, the gradient of head_in */
    float *logits;   /* (chunk_rows, V) fp32 */
    void *dlogits16; /* (chunk_rows, V) wdt: 16-bit mode only */
    int chunk_rows;
    float *losses;   /* (B,T) device */
    float *h_losses; /* (B,T) pinned: the last loss head's per-row losses */
    zoff_dev_event *loss_ready; /* recorded behind their copy */
    int loss_valid;             /* their targets that carry loss */
    int cur_B, cur_T;
    bool have_fwd;
};

typedef struct model_kept model_kept;
/* Kept block inputs (activation checkpointing): an architecture allocates model_kept_count(m,
 * n) buffers of `bytes` at base for its n kept inputs (kept i: the input of group i+1) and
 * registers its pointer table; with offload_activations the device holds a few and the rest
 * go to pinned host memory (see model_act_offload.c). */
size_t model_kept_count(const zoff_model *m, size_t n);
int model_kept_register(zoff_model *m, float **res, size_t n, float *base, size_t bytes);
int model_kept_hook(zoff_model *m, zoff_dev_stream *s, int group);
void model_kept_free(zoff_model *m);

/* Device memory for the model, counted in the term (plan mode: counted only). */
int model_alloc(zoff_model *m, model_term term, size_t bytes, void *ptr);
/* A weight tensor's device pointer. */
void *model_weight(zoff_model *m, int tensor);
/* The compute stream waits for group g's weights (the params-needed hook). */
int model_params_needed(zoff_model *m, zoff_dev_stream *s, int group);
/* Gradients, tensor by tensor, so that the sink holds as few buffers at once as possible (the
 * offload engine has a few bucket slots): take a tensor's buffer right before the op that
 * writes its gradient, give it back as soon as the gradient is final. Both are idempotent
 * within a backward. A 16-bit sink's tied group accumulates in the fp32 scratch instead, and
 * reaches the sink, rounded once, at model_grad_end_group. */
int model_grad_take(zoff_model *m, zoff_dev_stream *s, int tensor);
int model_grad_give(zoff_model *m, zoff_dev_stream *s, int tensor);
/* The taken buffer (or scratch slice), and the dtype gradient ops must write into it. */
void *model_grad(zoff_model *m, int tensor);
zoff_dtype model_grad_dtype(const zoff_model *m, int group);
/* Group g's backward is over: every tensor of it given (the tied scratch rounded into the
 * sink's buffers first). */
int model_grad_end_group(zoff_model *m, zoff_dev_stream *s, int group);

/* Linear layers in the model's dtype. out (N,OC) = inp (N,K) @ w (OC,K)^T (+ bias) (+ res, an
 * fp32 (N,OC) residual, or NULL); out_type f32 or wdt. */
int model_linear_fwd(zoff_model *m, zoff_dev_stream *s, void *out, zoff_dtype out_type,
                     const void *inp, int w_tensor, int b_tensor, int N, int K, int OC,
                     const float *res);
/* dinp (N,K) = dout (N,OC) @ w (OC,K) (written, dinp_type); dw (OC,K) += dout^T @ inp;
 * dbias (OC) += column sums of dout. dout and inp are in wdt; dbias_src (dout's fp32 original,
 * if any) is summed for the bias instead of dout, for accuracy. dinp NULL: no input gradient. */
int model_linear_bwd(zoff_model *m, zoff_dev_stream *s, void *dinp, zoff_dtype dinp_type,
                     const void *dout, const float *dbias_src, const void *inp, int w_tensor,
                     int b_tensor, int N, int K, int OC);

/* The staged batch's position ids and sample starts on the device (B*T each), NULL when the
 * batch has no packed samples (positions are then 0..T-1 and attention is plainly causal). */
static inline const int32_t *model_positions(const zoff_model *m) {
    return m->has_pos ? m->d_pos : NULL;
}
static inline const int32_t *model_doc_start(const zoff_model *m) {
    return m->has_pos ? m->d_pos + (size_t)m->cur_B * m->cur_T : NULL;
}

/* Activation bytes of n elements in the model's dtype. */
static inline size_t model_act_bytes(const zoff_model *m, size_t n) {
    return n * zoff_dtype_size(m->wdt);
}

/* Shared creation: layout already built by the architecture; allocates weights, staging, the
 * loss head and the architecture's part (ops->alloc). */
int model_create_common(zoff_model *m);
/* The options every architecture checks: batch >= 1, 1 <= seq_len <= max_seq (named as the
 * architecture's config calls it), B*T*widest activation row within int32, a dtype, chunk rows. */
int model_check_options(const zoff_model_options *opt, int max_seq, const char *max_seq_name,
                        size_t widest);
/* The plan of a model an architecture's constructor built (counted, nothing allocated); m is
 * destroyed. */
int model_plan_of(zoff_model *m, zoff_device_plan *out);
/* Allocates a model an architecture's constructor built on dev; on failure m is destroyed, and
 * an out-of-memory error's detail carries the plan (computed beforehand by the caller). */
int model_open(zoff_model *m, zoff_dev *dev, const zoff_device_plan *plan, zoff_model **out);

#define MODEL_TRY(x)                                                                               \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_) return rc_;                                                                       \
    } while (0)

#endif
