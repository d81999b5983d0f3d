/* The Llama family (Llama 2/3, Mistral, Qwen2) as an implementation of the model interface
 * (model/model_impl.h): token embedding without position embeddings, pre-RMSNorm blocks with
 * rotary position embeddings and grouped-query attention (the fused attention of the model
 * core), a SwiGLU MLP, the final RMSNorm, and an untied (or tied) output projection.
 *
 * Layout (Hugging Face names): group 0 model.embed_tokens; group 1+l model.layers.l.*
 * (input_layernorm, q/k/v/o projections with optional biases, post_attention_layernorm,
 * gate/up/down projections with optional biases); the last group model.norm and, untied,
 * lm_head. Tied, the embedding is the head and group 0 is the tied group.
 *
 * Activations (device): res[0..L] (B,T,C) fp32 residual stream; per block, kept for backward:
 * res2 (B,T,C) fp32 after attention, the RMSNorm outputs ln1, ln2 (B,T,C), q (B,T,NH*HS) and
 * k, v (B,T,NKV*HS) after RoPE, the attention output atty (B,T,NH*HS), the MLP's gate, up and
 * silu(gate)*up (B,T,F), all in the model's dtype, and fp32 rstd (B,T) x2 and the attention's
 * log-sum-exp (B,NH,T). Activation checkpointing keeps res[] only and recomputes a block in
 * backward. Backward walks blocks in reverse with a running fp32 residual gradient dres. */
#include "core/log.h"
#include "model/model_impl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "llama"

enum llama_kind {
    K_EMBED = 0,
    K_IN_NORM,
    K_Q_W,
    K_Q_B,
    K_K_W,
    K_K_B,
    K_V_W,
    K_V_B,
    K_O_W,
    K_O_B,
    K_POST_NORM,
    K_GATE_W,
    K_GATE_B,
    K_UP_W,
    K_UP_B,
    K_DOWN_W,
    K_DOWN_B,
    K_NORM,
    K_HEAD,
    K_COUNT
};

typedef struct llama_block {
    float *res2;                                        /* (B,T,C) fp32 */
    void *ln1, *q, *k, *v, *atty, *ln2, *gate, *up, *h; /* model dtype */
    float *rstd1, *rstd2;                               /* (B,T) */
    float *lse;                                         /* (B,NH,T) */
} llama_block;

typedef struct llama_state {
    zoff_llama_config cfg;
    int *tix; /* (L+2, K_COUNT) tensor index, -1 if absent; row L+1 holds embed, norm, head */
    float **res;
    llama_block *blocks;
    float *rstdf;    /* (B,T) final norm */
    float *inv_freq; /* (HS/2) device */
    /* backward scratch, one block's worth */
    float *dres, *dtmp;     /* (B,T,C) fp32 */
    void *dres16;           /* (B,T,C) model dtype, 16-bit mode only */
    void *datty, *dq;       /* (B,T,NH*HS) */
    void *dk, *dv;          /* (B,T,NKV*HS) */
    void *dh, *dgate, *dup; /* (B,T,F) */
    float *delta;           /* (B,NH,T) */
} llama_state;

static llama_state *G(const zoff_model *m) {
    return m->arch;
}

/* Tensor index of a kind in block l (l ignored for embed, norm, head); -1 if absent. */
static int TI(const zoff_model *m, int kind, int l) {
    const llama_state *g = G(m);
    int row = kind == K_EMBED || kind == K_NORM || kind == K_HEAD ? g->cfg.n_layer + 1 : l;
    return g->tix[(size_t)row * K_COUNT + (size_t)kind];
}

static void *W(zoff_model *m, int kind, int l) {
    return model_weight(m, TI(m, kind, l));
}

/* --- configuration and layout ------------------------------------------------------------- */

static size_t align_up(size_t x) {
    return (x + ZOFF_LAYOUT_ALIGN - 1) / ZOFF_LAYOUT_ALIGN * ZOFF_LAYOUT_ALIGN;
}

typedef struct spec {
    int kind;
    const char *name;
    int64_t rows, cols; /* cols 0: a vector */
} spec;

static int add_tensor(zoff_layout *lay, int *tix, int row, const spec *sp, int layer, int group,
                      size_t *off) {
    zoff_tensor *t = &lay->tensors[lay->n_tensors];
    t->kind = sp->kind;
    t->layer = layer;
    t->group = group;
    t->offset = *off;
    t->shape[0] = sp->rows;
    t->shape[1] = sp->cols;
    t->ndim = sp->cols ? 2 : 1;
    t->numel = (size_t)sp->rows * (sp->cols ? (size_t)sp->cols : 1);
    t->weight_decay = t->ndim == 2;
    if (row == layer) /* a block's tensor */
        snprintf(t->name, sizeof t->name, "model.layers.%d.%s", layer, sp->name);
    else
        snprintf(t->name, sizeof t->name, "%s", sp->name);
    tix[(size_t)row * K_COUNT + (size_t)sp->kind] = lay->n_tensors;
    lay->n_params += t->numel;
    *off = align_up(*off + t->numel);
    lay->n_tensors++;
    return 0;
}

static int layout_build(const zoff_llama_config *c, zoff_layout *out, int *tix) {
    memset(out, 0, sizeof *out);
    int L = c->n_layer;
    int64_t C = c->n_embd, V = c->vocab_size, F = c->n_ffn;
    int64_t QD = (int64_t)c->n_head * c->head_dim, KD = (int64_t)c->n_kv_head * c->head_dim;
    int max_tensors = 1 + 16 * L + 2;
    out->n_groups = L + 2;
    out->tensors = calloc((size_t)max_tensors, sizeof *out->tensors);
    out->group_begin = calloc((size_t)out->n_groups + 1, sizeof *out->group_begin);
    if (!out->tensors || !out->group_begin) {
        zoff_layout_free(out);
        return -ENOMEM;
    }
    const spec block[] = {{K_IN_NORM, "input_layernorm.weight", C, 0},
                          {K_Q_W, "self_attn.q_proj.weight", QD, C},
                          {K_Q_B, "self_attn.q_proj.bias", QD, 0},
                          {K_K_W, "self_attn.k_proj.weight", KD, C},
                          {K_K_B, "self_attn.k_proj.bias", KD, 0},
                          {K_V_W, "self_attn.v_proj.weight", KD, C},
                          {K_V_B, "self_attn.v_proj.bias", KD, 0},
                          {K_O_W, "self_attn.o_proj.weight", C, QD},
                          {K_O_B, "self_attn.o_proj.bias", C, 0},
                          {K_POST_NORM, "post_attention_layernorm.weight", C, 0},
                          {K_GATE_W, "mlp.gate_proj.weight", F, C},
                          {K_GATE_B, "mlp.gate_proj.bias", F, 0},
                          {K_UP_W, "mlp.up_proj.weight", F, C},
                          {K_UP_B, "mlp.up_proj.bias", F, 0},
                          {K_DOWN_W, "mlp.down_proj.weight", C, F},
                          {K_DOWN_B, "mlp.down_proj.bias", C, 0}};
    size_t off = 0;
    out->group_begin[0] = 0;
    const spec embed = {K_EMBED, "model.embed_tokens.weight", V, C};
    add_tensor(out, tix, L + 1, &embed, -1, 0, &off);
    for (int l = 0; l < L; l++) {
        out->group_begin[1 + l] = off;
        for (size_t j = 0; j < sizeof block / sizeof block[0]; j++) {
            int k = block[j].kind;
            bool present = true;
            if (k == K_Q_B || k == K_K_B || k == K_V_B) present = c->qkv_bias;
            if (k == K_O_B) present = c->o_bias;
            if (k == K_GATE_B || k == K_UP_B || k == K_DOWN_B) present = c->mlp_bias;
            if (present) add_tensor(out, tix, l, &block[j], l, 1 + l, &off);
        }
    }
    out->group_begin[L + 1] = off;
    const spec norm = {K_NORM, "model.norm.weight", C, 0}, head = {K_HEAD, "lm_head.weight", V, C};
    add_tensor(out, tix, L + 1, &norm, L, L + 1, &off);
    if (!c->tie_word_embeddings) add_tensor(out, tix, L + 1, &head, L, L + 1, &off);
    out->group_begin[L + 2] = off;
    out->total = off;
    return 0;
}

int zoff_llama_layout_build(const zoff_llama_config *cfg, zoff_layout *out) {
    memset(out, 0, sizeof *out);
    int rc = zoff_llama_config_validate(cfg);
    if (rc) return rc;
    int *tix = malloc(((size_t)cfg->n_layer + 2) * K_COUNT * sizeof *tix);
    if (!tix) return -ENOMEM;
    rc = layout_build(cfg, out, tix);
    free(tix);
    return rc;
}

/* --- memory ----------------------------------------------------------------------------------- */

#define ALLOC(term, bytes, ptr) MODEL_TRY(model_alloc(m, term, bytes, &(ptr)))

static int llama_alloc(zoff_model *m) {
    llama_state *g = G(m);
    const zoff_llama_config *c = &g->cfg;
    size_t L = (size_t)c->n_layer, C = (size_t)c->n_embd, NH = (size_t)c->n_head;
    size_t QD = NH * (size_t)c->head_dim, KD = (size_t)c->n_kv_head * (size_t)c->head_dim;
    size_t F = (size_t)c->n_ffn;
    size_t B = (size_t)m->opt.batch, T = (size_t)m->opt.seq_len, BT = B * T, f = sizeof(float);
    float *res_all;
    ALLOC(TERM_ACTIVATIONS, model_kept_count(m, L + 1) * BT * C * f, res_all);
    MODEL_TRY(model_kept_register(m, g->res, L + 1, res_all, BT * C * f));
    size_t distinct = m->opt.activation_checkpoint ? 1 : L;
    for (size_t l = 0; l < distinct; l++) {
        llama_block *a = &g->blocks[l];
        ALLOC(TERM_ACTIVATIONS, BT * C * f, a->res2);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * C), a->ln1);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * QD), a->q);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * KD), a->k);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * KD), a->v);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * QD), a->atty);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * C), a->ln2);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * F), a->gate);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * F), a->up);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * F), a->h);
        ALLOC(TERM_ACTIVATIONS, 2 * BT * f, a->rstd1);
        if (!m->counting) a->rstd2 = a->rstd1 + BT;
        ALLOC(TERM_ACTIVATIONS, B * NH * T * f, a->lse);
    }
    for (size_t l = distinct; !m->counting && l < L; l++)
        g->blocks[l] = g->blocks[0];
    ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * C), m->head_in); /* the final norm's output */
    ALLOC(TERM_ACTIVATIONS, BT * f, g->rstdf);
    ALLOC(TERM_WORKSPACE, (size_t)c->head_dim / 2 * f, g->inv_freq);
    ALLOC(TERM_WORKSPACE, 2 * BT * C * f, g->dres);
    if (!m->counting) g->dtmp = g->dres + BT * C;
    if (m->wdt != ZOFF_F32) ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * C), g->dres16);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * QD), g->datty);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * QD), g->dq);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * KD), g->dk);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * KD), g->dv);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * F), g->dh);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * F), g->dgate);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * F), g->dup);
    ALLOC(TERM_WORKSPACE, B * NH * T * f, g->delta);
    if (m->counting) return 0;
    float *h = malloc((size_t)c->head_dim / 2 * f);
    if (!h) return -ENOMEM;
    zoff_llama_rope_inv_freq(c, h);
    int rc = zoff_dev_memcpy(m->dev, g->inv_freq, h, (size_t)c->head_dim / 2 * f, ZOFF_COPY_H2D);
    free(h);
    return rc;
}

/* --- forward ------------------------------------------------------------------------------ */

static zoff_dev_attn_shape attn_shape(const zoff_model *m, int B, int T) {
    const zoff_llama_config *c = &G(m)->cfg;
    zoff_dev_attn_shape sh = {.B = B,
                              .T = T,
                              .NH = c->n_head,
                              .NKV = c->n_kv_head,
                              .HS = c->head_dim,
                              .q_stride = (size_t)c->n_head * c->head_dim,
                              .kv_stride = (size_t)c->n_kv_head * c->head_dim,
                              .scale = 1.0f / sqrtf((float)c->head_dim)};
    return sh;
}

static int lin_fwd(zoff_model *m, zoff_dev_stream *s, void *out, zoff_dtype ot, const void *inp,
                   int kw, int kb, int l, int N, int K, int OC, const float *res) {
    return model_linear_fwd(m, s, out, ot, inp, TI(m, kw, l), TI(m, kb, l), N, K, OC, res);
}

static int block_fwd(zoff_model *m, zoff_dev_stream *s, int l, int B, int T) {
    llama_state *g = G(m);
    const zoff_llama_config *c = &g->cfg;
    llama_block *a = &g->blocks[l];
    int C = c->n_embd, BT = B * T, F = c->n_ffn, HS = c->head_dim;
    int QD = c->n_head * HS, KD = c->n_kv_head * HS;
    zoff_dtype dt = m->wdt;
    const float *x = g->res[l];
    const int32_t *pos = model_positions(m);
    MODEL_TRY(zoff_dev_op_rmsnorm_fwd(s, a->ln1, dt, a->rstd1, x, W(m, K_IN_NORM, l), dt,
                                      (size_t)BT, C, c->rms_eps));
    MODEL_TRY(lin_fwd(m, s, a->q, dt, a->ln1, K_Q_W, K_Q_B, l, BT, C, QD, NULL));
    MODEL_TRY(lin_fwd(m, s, a->k, dt, a->ln1, K_K_W, K_K_B, l, BT, C, KD, NULL));
    MODEL_TRY(lin_fwd(m, s, a->v, dt, a->ln1, K_V_W, K_V_B, l, BT, C, KD, NULL));
    MODEL_TRY(zoff_dev_op_rope_fwd(s, a->q, dt, (size_t)QD, pos, g->inv_freq, B, T, c->n_head, HS));
    MODEL_TRY(
        zoff_dev_op_rope_fwd(s, a->k, dt, (size_t)KD, pos, g->inv_freq, B, T, c->n_kv_head, HS));
    zoff_dev_attn_shape sh = attn_shape(m, B, T);
    MODEL_TRY(zoff_dev_op_flash_attention_fwd(s, a->atty, a->lse, a->q, a->k, a->v, dt,
                                              model_doc_start(m), &sh));
    MODEL_TRY(lin_fwd(m, s, a->res2, ZOFF_F32, a->atty, K_O_W, K_O_B, l, BT, QD, C, x));
    MODEL_TRY(zoff_dev_op_rmsnorm_fwd(s, a->ln2, dt, a->rstd2, a->res2, W(m, K_POST_NORM, l), dt,
                                      (size_t)BT, C, c->rms_eps));
    MODEL_TRY(lin_fwd(m, s, a->gate, dt, a->ln2, K_GATE_W, K_GATE_B, l, BT, C, F, NULL));
    MODEL_TRY(lin_fwd(m, s, a->up, dt, a->ln2, K_UP_W, K_UP_B, l, BT, C, F, NULL));
    MODEL_TRY(zoff_dev_op_swiglu_fwd(s, a->h, a->gate, a->up, dt, (size_t)BT * F));
    return lin_fwd(m, s, g->res[l + 1], ZOFF_F32, a->h, K_DOWN_W, K_DOWN_B, l, BT, F, C, a->res2);
}

static int llama_forward_body(zoff_model *m, zoff_dev_stream *s, int B, int T) {
    llama_state *g = G(m);
    const zoff_llama_config *c = &g->cfg;
    int L = c->n_layer, BT = B * T;
    MODEL_TRY(model_params_needed(m, s, 0));
    MODEL_TRY(zoff_dev_op_embedding_fwd(s, g->res[0], m->d_tokens, NULL, W(m, K_EMBED, 0), NULL,
                                        m->wdt, B, T, c->n_embd));
    for (int l = 0; l < L; l++) {
        MODEL_TRY(model_params_needed(m, s, 1 + l));
        MODEL_TRY(block_fwd(m, s, l, B, T));
    }
    MODEL_TRY(model_params_needed(m, s, L + 1));
    return zoff_dev_op_rmsnorm_fwd(s, m->head_in, m->wdt, g->rstdf, g->res[L], W(m, K_NORM, 0),
                                   m->wdt, (size_t)BT, c->n_embd, c->rms_eps);
}

/* --- backward ----------------------------------------------------------------------------- */

/* RMSNorm backward with its weight gradient taken before and given after. */
static int rms_bwd(zoff_model *m, zoff_dev_stream *s, int kind, int l, const float *dout,
                   const float *inp, const float *rstd, int N) {
    llama_state *g = G(m);
    int tw = TI(m, kind, l);
    MODEL_TRY(model_grad_take(m, s, tw));
    MODEL_TRY(zoff_dev_op_rmsnorm_bwd(s, g->dres, model_grad(m, tw),
                                      model_grad_dtype(m, m->layout.tensors[tw].group), dout, inp,
                                      model_weight(m, tw), m->wdt, rstd, (size_t)N, g->cfg.n_embd));
    return model_grad_give(m, s, tw);
}

/* A linear layer's backward whose input gradient (fp32) is written, or added to dinp when
 * `accumulate` (q, k and v share their input, as do gate and up). */
static int lin_bwd(zoff_model *m, zoff_dev_stream *s, void *dinp, zoff_dtype dinp_type,
                   bool accumulate, const void *dout, const float *dbias_src, const void *inp,
                   int kw, int kb, int l, int N, int K, int OC) {
    int w = TI(m, kw, l), b = TI(m, kb, l);
    if (accumulate) {
        MODEL_TRY(zoff_dev_op_gemm(s, false, false, N, K, OC, 1.0f, dout, OC, model_weight(m, w), K,
                                   m->wdt, 1.0f, dinp, dinp_type, K));
        dinp = NULL;
    }
    return model_linear_bwd(m, s, dinp, dinp_type, dout, dbias_src, inp, w, b, N, K, OC);
}

/* dres (fp32) as a GEMM operand: itself in f32, else its 16-bit cast. */
static const void *dres_operand(zoff_model *m, zoff_dev_stream *s, size_t n, int *rc) {
    llama_state *g = G(m);
    if (m->wdt == ZOFF_F32) return g->dres;
    *rc = zoff_dev_op_cast(s, g->dres16, m->wdt, g->dres, ZOFF_F32, n);
    return g->dres16;
}

static int block_bwd(zoff_model *m, zoff_dev_stream *s, int l, int B, int T) {
    llama_state *g = G(m);
    const zoff_llama_config *c = &g->cfg;
    llama_block *a = &g->blocks[l];
    int C = c->n_embd, BT = B * T, F = c->n_ffn, HS = c->head_dim, rc = 0;
    int QD = c->n_head * HS, KD = c->n_kv_head * HS;
    zoff_dtype dt = m->wdt;
    const int32_t *pos = model_positions(m);
    /* MLP: y = res2 + down(silu(gate(ln2)) * up(ln2)); dres holds dy */
    const void *dy = dres_operand(m, s, (size_t)BT * C, &rc);
    MODEL_TRY(rc);
    MODEL_TRY(lin_bwd(m, s, g->dh, dt, false, dy, g->dres, a->h, K_DOWN_W, K_DOWN_B, l, BT, F, C));
    MODEL_TRY(
        zoff_dev_op_swiglu_bwd(s, g->dgate, g->dup, g->dh, a->gate, a->up, dt, (size_t)BT * F));
    MODEL_TRY(lin_bwd(m, s, g->dtmp, ZOFF_F32, false, g->dgate, NULL, a->ln2, K_GATE_W, K_GATE_B, l,
                      BT, C, F));
    MODEL_TRY(
        lin_bwd(m, s, g->dtmp, ZOFF_F32, true, g->dup, NULL, a->ln2, K_UP_W, K_UP_B, l, BT, C, F));
    MODEL_TRY(rms_bwd(m, s, K_POST_NORM, l, g->dtmp, a->res2, a->rstd2, BT));
    /* attention: res2 = x + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1))); dres holds dres2 */
    dy = dres_operand(m, s, (size_t)BT * C, &rc);
    MODEL_TRY(rc);
    MODEL_TRY(lin_bwd(m, s, g->datty, dt, false, dy, g->dres, a->atty, K_O_W, K_O_B, l, BT, QD, C));
    zoff_dev_attn_shape sh = attn_shape(m, B, T);
    MODEL_TRY(zoff_dev_op_flash_attention_bwd(s, g->dq, g->dk, g->dv, g->delta, g->datty, a->atty,
                                              a->lse, a->q, a->k, a->v, dt, model_doc_start(m),
                                              &sh));
    MODEL_TRY(
        zoff_dev_op_rope_bwd(s, g->dq, dt, (size_t)QD, pos, g->inv_freq, B, T, c->n_head, HS));
    MODEL_TRY(
        zoff_dev_op_rope_bwd(s, g->dk, dt, (size_t)KD, pos, g->inv_freq, B, T, c->n_kv_head, HS));
    MODEL_TRY(
        lin_bwd(m, s, g->dtmp, ZOFF_F32, false, g->dq, NULL, a->ln1, K_Q_W, K_Q_B, l, BT, C, QD));
    MODEL_TRY(
        lin_bwd(m, s, g->dtmp, ZOFF_F32, true, g->dk, NULL, a->ln1, K_K_W, K_K_B, l, BT, C, KD));
    MODEL_TRY(
        lin_bwd(m, s, g->dtmp, ZOFF_F32, true, g->dv, NULL, a->ln1, K_V_W, K_V_B, l, BT, C, KD));
    return rms_bwd(m, s, K_IN_NORM, l, g->dtmp, g->res[l], a->rstd1, BT);
}

static int llama_backward_body(zoff_model *m, zoff_dev_stream *s, int B, int T) {
    llama_state *g = G(m);
    int L = g->cfg.n_layer, C = g->cfg.n_embd, BT = B * T;
    MODEL_TRY(zoff_dev_memset_async(s, g->dres, 0, (size_t)BT * C * sizeof(float)));
    MODEL_TRY(model_params_needed(m, s, L + 1)); /* streamed weights: before each group's reads */
    MODEL_TRY(rms_bwd(m, s, K_NORM, 0, m->dhead, g->res[L], g->rstdf, BT));
    MODEL_TRY(model_grad_end_group(m, s, L + 1)); /* with an untied head, its gradient too */
    for (int l = L - 1; l >= 0; l--) {
        MODEL_TRY(model_params_needed(m, s, 1 + l));
        if (m->opt.activation_checkpoint) MODEL_TRY(block_fwd(m, s, l, B, T)); /* recompute */
        MODEL_TRY(block_bwd(m, s, l, B, T));
        MODEL_TRY(model_grad_end_group(m, s, 1 + l));
    }
    int te = TI(m, K_EMBED, 0);
    MODEL_TRY(model_grad_take(m, s, te));
    MODEL_TRY(zoff_dev_op_embedding_bwd(s, model_grad(m, te), NULL, model_grad_dtype(m, 0), g->dres,
                                        m->d_tokens, NULL, B, T, C));
    return model_grad_end_group(m, s, 0);
}

/* --- parameters and FLOPs ----------------------------------------------------------------- */

/* As transformers' LlamaPreTrainedModel: N(0, 0.02) matrices and embeddings, zero biases,
 * unit norm weights. */
static int llama_init_host(const zoff_model *m, uint64_t seed, float *h) {
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 7;
    for (int i = 0; i < m->layout.n_tensors; i++) {
        const zoff_tensor *t = &m->layout.tensors[i];
        float *p = h + t->offset;
        if (t->kind == K_IN_NORM || t->kind == K_POST_NORM || t->kind == K_NORM) {
            for (size_t j = 0; j < t->numel; j++)
                p[j] = 1.0f;
        } else if (t->ndim == 2) {
            for (size_t j = 0; j < t->numel; j++)
                p[j] = 0.02f * zoff_rng_normal(&rng);
        }
    }
    return 0;
}

static double llama_flops(const zoff_model *m, int B, int T) {
    return zoff_llama_train_flops(&G(m)->cfg, B, T);
}

static void llama_destroy(zoff_model *m) {
    llama_state *g = m->arch;
    if (!g) return;
    free(g->tix);
    free(g->res);
    free(g->blocks);
    free(g);
}

static const zoff_model_ops llama_ops = {.arch = "llama",
                                         .alloc = llama_alloc,
                                         .forward_body = llama_forward_body,
                                         .backward_body = llama_backward_body,
                                         .init_host = llama_init_host,
                                         .train_flops = llama_flops,
                                         .destroy = llama_destroy};

const zoff_llama_config *zoff_llama_get_config(const zoff_model *m) {
    return m && m->ops == &llama_ops ? &G(m)->cfg : NULL;
}

/* --- creation and the plan ---------------------------------------------------------------- */

static int check_options(const zoff_llama_config *c, const zoff_model_options *opt) {
    int rc = zoff_llama_config_validate(c);
    if (rc) return rc;
    size_t widest = (size_t)c->n_ffn;
    if ((size_t)c->n_head * c->head_dim > widest) widest = (size_t)c->n_head * c->head_dim;
    if ((size_t)c->n_embd > widest) widest = (size_t)c->n_embd;
    if ((rc = model_check_options(opt, c->seq_len, "max_position_embeddings", widest))) return rc;
    if (c->sliding_window && opt->seq_len > c->sliding_window)
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "sliding_window = %d: sequences of %d tokens need it, which is not "
                         "supported (use --seq-len <= %d)",
                         c->sliding_window, opt->seq_len, c->sliding_window);
    return 0;
}

static int llama_new(const zoff_llama_config *cfg, const zoff_model_options *opt,
                     zoff_model **out) {
    *out = NULL;
    int rc = check_options(cfg, opt);
    if (rc) return rc;
    size_t L = (size_t)cfg->n_layer;
    zoff_model *m = calloc(1, sizeof *m);
    llama_state *g = calloc(1, sizeof *g);
    if (!m || !g) {
        free(g);
        free(m);
        return -ENOMEM;
    }
    m->ops = &llama_ops;
    m->arch = g;
    g->cfg = *cfg;
    g->res = calloc(L + 1, sizeof *g->res);
    g->blocks = calloc(L, sizeof *g->blocks);
    g->tix = malloc((L + 2) * K_COUNT * sizeof *g->tix);
    if (!g->res || !g->blocks || !g->tix) {
        zoff_model_destroy(m);
        return -ENOMEM;
    }
    for (size_t i = 0; i < (L + 2) * K_COUNT; i++)
        g->tix[i] = -1;
    m->opt = *opt;
    m->wdt = opt->matmul_dtype;
    m->C = cfg->n_embd;
    m->V = cfg->vocab_size;
    if ((rc = layout_build(cfg, &m->layout, g->tix))) {
        zoff_model_destroy(m);
        return rc;
    }
    if (cfg->tie_word_embeddings) {
        m->head_tensor = TI(m, K_EMBED, 0);
        m->tied_group = 0;
    } else {
        m->head_tensor = TI(m, K_HEAD, 0);
        m->tied_group = -1;
    }
    *out = m;
    return 0;
}

int zoff_llama_plan(const zoff_llama_config *cfg, const zoff_model_options *opt,
                    zoff_device_plan *out) {
    zoff_model *m;
    int rc = llama_new(cfg, opt, &m);
    return rc ? rc : model_plan_of(m, out);
}

int zoff_llama_create(zoff_dev *dev, const zoff_llama_config *cfg, const zoff_model_options *opt,
                      zoff_model **out) {
    zoff_model_options def;
    if (!opt) {
        zoff_model_options_default(&def);
        opt = &def;
    }
    if (!dev || !cfg || !out) return -EINVAL;
    zoff_device_plan plan;
    zoff_model *m;
    int rc = zoff_llama_plan(cfg, opt, &plan);
    if (!rc) rc = llama_new(cfg, opt, &m);
    return rc ? rc : model_open(m, dev, &plan, out);
}
