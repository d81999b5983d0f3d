/* GPT-2 as an implementation of the model interface (model/model_impl.h): what is particular
 * to it - learned position embeddings, pre-LayerNorm blocks with fused causal attention and a
 * GELU MLP, the final LayerNorm, and the output projection tied to the token embedding.
 *
 * Activations (device): res[0..L] are the residual stream between blocks (B,T,C) fp32. Per
 * block, kept for backward: the post-attention residual res2 (B,T,C) fp32, the LayerNorm
 * outputs ln1, ln2 (B,T,C), qkv (B,T,3C), the attention output atty (B,T,C), the MLP's pre- and
 * post-GELU fch, fchg (B,T,4C), all in the model's dtype (16-bit in mixed precision), and fp32
 * norm statistics and the attention's log-sum-exp (B,NH,T): no (B,NH,T,T) buffer. With
 * activation checkpointing every block shares one set, and backward re-runs a block's forward
 * from res[l] before differentiating it. Activation gradients need one block's worth of
 * scratch: backward walks blocks in reverse with a running residual gradient `dres` (fp32). */
#include "core/log.h"
#include "model/model_impl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MOD "gpt"

typedef struct gpt_block {
    float *res2;                                     /* (B,T,C) fp32 */
    void *ln1, *qkv, *atty, *ln2, *fch, *fchg;       /* model dtype */
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd; /* (B,T) */
    float *lse;                                      /* (B,NH,T) */
} gpt_block;

typedef struct gpt_state {
    zoff_gpt_config cfg;
    float **res; /* L+1 pointers into one (L+1, B,T,C) allocation */
    gpt_block *blocks;
    float *lnf_mean, *lnf_rstd;
    /* backward scratch, one block's worth */
    float *dres, *dtmp;            /* (B,T,C) fp32 */
    void *dres16, *datty;          /* (B,T,C) model dtype; dres16 only in 16-bit mode */
    void *dqkv, *dfch, *dfchg;     /* (B,T,3C), (B,T,4C), (B,T,4C) model dtype */
    float *delta;                  /* (B,NH,T) */
} gpt_state;

static gpt_state *G(const zoff_model *m) {
    return m->arch;
}

/* Tensor index of a kind in a block. */
static int TI(const zoff_model *m, zoff_gpt_tensor_kind k, int l) {
    return (int)(zoff_gpt_layout_find(&m->layout, k, l) - m->layout.tensors);
}

static void *W(zoff_model *m, zoff_gpt_tensor_kind k, int l) {
    return model_weight(m, TI(m, k, l));
}

static void *GR(zoff_model *m, zoff_gpt_tensor_kind k, int l) {
    return model_grad(m, TI(m, k, l));
}

/* LayerNorm backward with its weight and bias gradients taken before and given after. */
static int ln_bwd(zoff_model *m, zoff_dev_stream *s, zoff_gpt_tensor_kind kw, int l, float *dinp,
                  const float *dout, const float *inp, const float *mean, const float *rstd,
                  int N, int C) {
    int tw = TI(m, kw, l), tb = TI(m, kw + 1, l); /* the bias follows its weight */
    MODEL_TRY(model_grad_take(m, s, tw));
    MODEL_TRY(model_grad_take(m, s, tb));
    MODEL_TRY(zoff_dev_op_layernorm_bwd(s, dinp, model_grad(m, tw), model_grad(m, tb),
                                        model_grad_dtype(m, m->layout.tensors[tw].group), dout,
                                        inp, model_weight(m, tw), m->wdt, mean, rstd, (size_t)N,
                                        C));
    MODEL_TRY(model_grad_give(m, s, tw));
    return model_grad_give(m, s, tb);
}

static void *off(const zoff_model *m, void *p, size_t elems) {
    return (char *)p + elems * zoff_dtype_size(m->wdt);
}

/* --- memory ---------------------------------------------------------------------------- */

#define ALLOC(term, bytes, ptr) MODEL_TRY(model_alloc(m, term, bytes, &(ptr)))

static int gpt_alloc(zoff_model *m) {
    gpt_state *g = G(m);
    size_t L = (size_t)g->cfg.n_layer, C = (size_t)g->cfg.n_embd, NH = (size_t)g->cfg.n_head;
    size_t B = (size_t)m->opt.batch, T = (size_t)m->opt.seq_len, BT = B * T;
    size_t f = sizeof(float);
    float *res_all;
    ALLOC(TERM_ACTIVATIONS, model_kept_count(m, L + 1) * BT * C * f, res_all);
    MODEL_TRY(model_kept_register(m, g->res, L + 1, res_all, BT * C * f));
    size_t distinct = m->opt.activation_checkpoint ? 1 : L;
    for (size_t l = 0; l < distinct; l++) {
        gpt_block *a = &g->blocks[l];
        ALLOC(TERM_ACTIVATIONS, BT * C * f, a->res2);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * C), a->ln1);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * 3 * C), a->qkv);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * C), a->atty);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * C), a->ln2);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * 4 * C), a->fch);
        ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * 4 * C), a->fchg);
        ALLOC(TERM_ACTIVATIONS, 4 * BT * f, a->ln1_mean);
        if (!m->counting) {
            a->ln1_rstd = a->ln1_mean + BT;
            a->ln2_mean = a->ln1_mean + 2 * BT;
            a->ln2_rstd = a->ln1_mean + 3 * BT;
        }
        ALLOC(TERM_ACTIVATIONS, B * NH * T * f, a->lse);
    }
    for (size_t l = distinct; !m->counting && l < L; l++)
        g->blocks[l] = g->blocks[0];
    ALLOC(TERM_ACTIVATIONS, model_act_bytes(m, BT * C), m->head_in); /* ln_f's output */
    ALLOC(TERM_ACTIVATIONS, 2 * BT * f, g->lnf_mean);
    if (!m->counting) g->lnf_rstd = g->lnf_mean + BT;
    ALLOC(TERM_WORKSPACE, 2 * BT * C * f, g->dres);
    if (!m->counting) g->dtmp = g->dres + BT * C;
    if (m->wdt != ZOFF_F32) ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * C), g->dres16);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * C), g->datty);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * 3 * C), g->dqkv);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * 4 * C), g->dfch);
    ALLOC(TERM_WORKSPACE, model_act_bytes(m, BT * 4 * C), g->dfchg);
    ALLOC(TERM_WORKSPACE, B * NH * T * f, g->delta);
    return 0;
}

/* --- forward ----------------------------------------------------------------------------- */

static zoff_dev_attn_shape attn_shape(const zoff_model *m, int B, int T) {
    const zoff_gpt_config *c = &G(m)->cfg;
    int hs = c->n_embd / c->n_head;
    zoff_dev_attn_shape sh = {.B = B,
                              .T = T,
                              .NH = c->n_head,
                              .NKV = c->n_head,
                              .HS = hs,
                              .q_stride = 3 * (size_t)c->n_embd,
                              .kv_stride = 3 * (size_t)c->n_embd,
                              .scale = 1.0f / sqrtf((float)hs)};
    return sh;
}

static int block_fwd(zoff_model *m, zoff_dev_stream *s, int l, int B, int T) {
    gpt_state *g = G(m);
    gpt_block *a = &g->blocks[l];
    int C = g->cfg.n_embd, BT = B * T;
    zoff_dtype dt = m->wdt;
    const float *x = g->res[l];
    MODEL_TRY(zoff_dev_op_layernorm_fwd(s, a->ln1, dt, a->ln1_mean, a->ln1_rstd, x,
                                        W(m, ZOFF_GPT_LN1_W, l), W(m, ZOFF_GPT_LN1_B, l), dt,
                                        (size_t)BT, C));
    MODEL_TRY(model_linear_fwd(m, s, a->qkv, dt, a->ln1, TI(m, ZOFF_GPT_QKV_W, l),
                               TI(m, ZOFF_GPT_QKV_B, l), BT, C, 3 * C, NULL));
    zoff_dev_attn_shape sh = attn_shape(m, B, T);
    MODEL_TRY(zoff_dev_op_flash_attention_fwd(s, a->atty, a->lse, a->qkv, off(m, a->qkv, C),
                                              off(m, a->qkv, 2 * (size_t)C), dt,
                                              model_doc_start(m), &sh));
    MODEL_TRY(model_linear_fwd(m, s, a->res2, ZOFF_F32, a->atty, TI(m, ZOFF_GPT_ATTPROJ_W, l),
                               TI(m, ZOFF_GPT_ATTPROJ_B, l), BT, C, C, x));
    MODEL_TRY(zoff_dev_op_layernorm_fwd(s, a->ln2, dt, a->ln2_mean, a->ln2_rstd, a->res2,
                                        W(m, ZOFF_GPT_LN2_W, l), W(m, ZOFF_GPT_LN2_B, l), dt,
                                        (size_t)BT, C));
    MODEL_TRY(model_linear_fwd(m, s, a->fch, dt, a->ln2, TI(m, ZOFF_GPT_FC_W, l),
                               TI(m, ZOFF_GPT_FC_B, l), BT, C, 4 * C, NULL));
    MODEL_TRY(zoff_dev_op_gelu_fwd(s, a->fchg, a->fch, dt, (size_t)BT * 4 * C));
    return model_linear_fwd(m, s, g->res[l + 1], ZOFF_F32, a->fchg, TI(m, ZOFF_GPT_FCPROJ_W, l),
                            TI(m, ZOFF_GPT_FCPROJ_B, l), BT, 4 * C, C, a->res2);
}

static int gpt_forward_body(zoff_model *m, zoff_dev_stream *s, int B, int T) {
    gpt_state *g = G(m);
    int L = g->cfg.n_layer, C = g->cfg.n_embd, BT = B * T;
    MODEL_TRY(model_params_needed(m, s, 0));
    MODEL_TRY(zoff_dev_op_embedding_fwd(s, g->res[0], m->d_tokens, model_positions(m),
                                        W(m, ZOFF_GPT_WTE, 0), W(m, ZOFF_GPT_WPE, 0), m->wdt, B, T,
                                        C));
    for (int l = 0; l < L; l++) {
        MODEL_TRY(model_params_needed(m, s, 1 + l));
        MODEL_TRY(block_fwd(m, s, l, B, T));
    }
    MODEL_TRY(model_params_needed(m, s, L + 1));
    return zoff_dev_op_layernorm_fwd(s, m->head_in, m->wdt, g->lnf_mean, g->lnf_rstd, g->res[L],
                                     W(m, ZOFF_GPT_LNF_W, 0), W(m, ZOFF_GPT_LNF_B, 0), m->wdt,
                                     (size_t)BT, C);
}

/* --- backward ---------------------------------------------------------------------------- */

/* dres (fp32) as a GEMM operand: itself in f32, else its 16-bit cast. */
static const void *dres_operand(zoff_model *m, zoff_dev_stream *s, size_t n, int *rc) {
    gpt_state *g = G(m);
    if (m->wdt == ZOFF_F32) return g->dres;
    *rc = zoff_dev_op_cast(s, g->dres16, m->wdt, g->dres, ZOFF_F32, n);
    return g->dres16;
}

static int block_bwd(zoff_model *m, zoff_dev_stream *s, int l, int B, int T) {
    gpt_state *g = G(m);
    gpt_block *a = &g->blocks[l];
    int C = g->cfg.n_embd, BT = B * T, rc = 0;
    zoff_dtype dt = m->wdt;
    /* MLP: y = res2 + fcproj(gelu(fc(ln2(res2)))); dres holds dy */
    const void *dy = dres_operand(m, s, (size_t)BT * C, &rc);
    MODEL_TRY(rc);
    MODEL_TRY(model_linear_bwd(m, s, g->dfchg, dt, dy, g->dres, a->fchg,
                               TI(m, ZOFF_GPT_FCPROJ_W, l), TI(m, ZOFF_GPT_FCPROJ_B, l), BT, 4 * C,
                               C));
    MODEL_TRY(zoff_dev_op_gelu_bwd(s, g->dfch, a->fch, g->dfchg, dt, (size_t)BT * 4 * C));
    MODEL_TRY(model_linear_bwd(m, s, g->dtmp, ZOFF_F32, g->dfch, NULL, a->ln2,
                               TI(m, ZOFF_GPT_FC_W, l), TI(m, ZOFF_GPT_FC_B, l), BT, C, 4 * C));
    MODEL_TRY(ln_bwd(m, s, ZOFF_GPT_LN2_W, l, g->dres, g->dtmp, a->res2, a->ln2_mean,
                     a->ln2_rstd, BT, C));
    /* attention: res2 = x + attproj(attn(qkv(ln1(x)))); dres now holds dres2 */
    dy = dres_operand(m, s, (size_t)BT * C, &rc);
    MODEL_TRY(rc);
    MODEL_TRY(model_linear_bwd(m, s, g->datty, dt, dy, g->dres, a->atty,
                               TI(m, ZOFF_GPT_ATTPROJ_W, l), TI(m, ZOFF_GPT_ATTPROJ_B, l), BT, C,
                               C));
    zoff_dev_attn_shape sh = attn_shape(m, B, T);
    MODEL_TRY(zoff_dev_op_flash_attention_bwd(
        s, g->dqkv, off(m, g->dqkv, C), off(m, g->dqkv, 2 * (size_t)C), g->delta, g->datty,
        a->atty, a->lse, a->qkv, off(m, a->qkv, C), off(m, a->qkv, 2 * (size_t)C), dt,
        model_doc_start(m), &sh));
    MODEL_TRY(model_linear_bwd(m, s, g->dtmp, ZOFF_F32, g->dqkv, NULL, a->ln1,
                               TI(m, ZOFF_GPT_QKV_W, l), TI(m, ZOFF_GPT_QKV_B, l), BT, C, 3 * C));
    return ln_bwd(m, s, ZOFF_GPT_LN1_W, l, g->dres, g->dtmp, g->res[l], a->ln1_mean,
                  a->ln1_rstd, BT, C);
}

static int gpt_backward_body(zoff_model *m, zoff_dev_stream *s, int B, int T) {
    gpt_state *g = G(m);
    int L = g->cfg.n_layer, C = g->cfg.n_embd, BT = B * T;
    MODEL_TRY(zoff_dev_memset_async(s, g->dres, 0, (size_t)BT * C * sizeof(float)));
    MODEL_TRY(model_params_needed(m, s, L + 1)); /* streamed weights: before each group's reads */
    MODEL_TRY(ln_bwd(m, s, ZOFF_GPT_LNF_W, 0, g->dres, m->dhead, g->res[L], g->lnf_mean,
                     g->lnf_rstd, BT, C));
    MODEL_TRY(model_grad_end_group(m, s, L + 1));
    for (int l = L - 1; l >= 0; l--) {
        MODEL_TRY(model_params_needed(m, s, 1 + l));
        if (m->opt.activation_checkpoint) MODEL_TRY(block_fwd(m, s, l, B, T)); /* recompute */
        MODEL_TRY(block_bwd(m, s, l, B, T));
        MODEL_TRY(model_grad_end_group(m, s, 1 + l));
    }
    MODEL_TRY(model_grad_take(m, s, TI(m, ZOFF_GPT_WTE, 0)));
    MODEL_TRY(model_grad_take(m, s, TI(m, ZOFF_GPT_WPE, 0)));
    MODEL_TRY(zoff_dev_op_embedding_bwd(s, GR(m, ZOFF_GPT_WTE, 0), GR(m, ZOFF_GPT_WPE, 0),
                                        model_grad_dtype(m, 0), g->dres, m->d_tokens,
                                        model_positions(m), B, T, C));
    return model_grad_end_group(m, s, 0);
}

/* --- parameters and FLOPs ------------------------------------------------------------------ */

static int gpt_init_host(const zoff_model *m, uint64_t seed, float *h) {
    const gpt_state *g = m->arch;
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 1;
    float resid_std = 0.02f / sqrtf(2.0f * (float)g->cfg.n_layer);
    for (int i = 0; i < m->layout.n_tensors; i++) {
        const zoff_tensor *t = &m->layout.tensors[i];
        float *p = h + t->offset;
        switch (t->kind) {
        case ZOFF_GPT_LN1_W:
        case ZOFF_GPT_LN2_W:
        case ZOFF_GPT_LNF_W:
            for (size_t j = 0; j < t->numel; j++)
                p[j] = 1.0f;
            break;
        case ZOFF_GPT_ATTPROJ_W:
        case ZOFF_GPT_FCPROJ_W:
            for (size_t j = 0; j < t->numel; j++)
                p[j] = resid_std * zoff_rng_normal(&rng);
            break;
        default:
            if (t->ndim == 2)
                for (size_t j = 0; j < t->numel; j++)
                    p[j] = 0.02f * zoff_rng_normal(&rng);
            break; /* biases stay 0 */
        }
    }
    return 0;
}

static double gpt_flops(const zoff_model *m, int B, int T) {
    return zoff_gpt_train_flops(&G(m)->cfg, B, T);
}

static void gpt_destroy(zoff_model *m) {
    gpt_state *g = m->arch;
    if (!g) return;
    free(g->res);
    free(g->blocks);
    free(g);
}

static const zoff_model_ops gpt_ops = {.arch = "gpt2",
                                       .alloc = gpt_alloc,
                                       .forward_body = gpt_forward_body,
                                       .backward_body = gpt_backward_body,
                                       .init_host = gpt_init_host,
                                       .train_flops = gpt_flops,
                                       .destroy = gpt_destroy};

const zoff_gpt_config *zoff_gpt_get_config(const zoff_model *m) {
    return m && m->ops == &gpt_ops ? &G(m)->cfg : NULL;
}

/* --- creation and the plan ----------------------------------------------------------------- */

static int check_options(const zoff_gpt_config *cfg, const zoff_model_options *opt) {
    int rc = zoff_gpt_config_validate(cfg);
    return rc ? rc
              : model_check_options(opt, cfg->seq_len, "the model's positions",
                                    4 * (size_t)cfg->n_embd);
}

/* The model struct with the GPT's layout and state, ready for model_create_common. */
static int gpt_new(const zoff_gpt_config *cfg, const zoff_model_options *opt, zoff_model **out) {
    *out = NULL;
    int rc = check_options(cfg, opt);
    if (rc) return rc;
    zoff_model *m = calloc(1, sizeof *m);
    gpt_state *g = calloc(1, sizeof *g);
    if (g) {
        g->res = calloc((size_t)cfg->n_layer + 1, sizeof *g->res);
        g->blocks = calloc((size_t)cfg->n_layer, sizeof *g->blocks);
    }
    if (!m || !g || !g->res || !g->blocks) {
        if (g) {
            free(g->res);
            free(g->blocks);
        }
        free(g);
        free(m);
        return -ENOMEM;
    }
    g->cfg = *cfg;
    m->ops = &gpt_ops;
    m->arch = g;
    m->opt = *opt;
    m->wdt = opt->matmul_dtype;
    m->C = cfg->n_embd;
    m->V = cfg->vocab_size;
    if ((rc = zoff_gpt_layout_build(cfg, &m->layout))) {
        zoff_model_destroy(m);
        return rc;
    }
    if (cfg->untied_head) { /* lm_head in the last group, given with it */
        m->head_tensor = TI(m, ZOFF_GPT_LM_HEAD, 0);
        m->tied_group = -1;
    } else { /* wte: the output projection's gradient comes first, the embedding's last */
        m->head_tensor = TI(m, ZOFF_GPT_WTE, 0);
        m->tied_group = 0;
    }
    *out = m;
    return 0;
}

int zoff_gpt_plan(const zoff_gpt_config *cfg, const zoff_model_options *opt,
                  zoff_device_plan *out) {
    zoff_model *m;
    int rc = gpt_new(cfg, opt, &m);
    return rc ? rc : model_plan_of(m, out);
}

int zoff_gpt_create(zoff_dev *dev, const zoff_gpt_config *cfg, const zoff_model_options *opt,
                    zoff_model **out) {
    zoff_model_options def;
    if (!opt) {
        zoff_model_options_default(&def);
        opt = &def;
    }
    if (!dev || !cfg || !out) return -EINVAL;
    zoff_device_plan plan;
    zoff_model *m;
    int rc = zoff_gpt_plan(cfg, opt, &plan);
    if (!rc) rc = gpt_new(cfg, opt, &m);
    return rc ? rc : model_open(m, dev, &plan, out);
}
