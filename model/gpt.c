/* GPT forward and backward as a sequence of device ops (see model/model.h for the model and
 * its flat layout). Everything is issued to the caller's stream in order; the only host
 * waits are for the token upload staging, the loss read-back and explicit copies.
 *
 * Activations (fp32, device): res[0..L] are the residual stream between blocks (B,T,C);
 * per block the LayerNorm outputs and statistics, qkv (B,T,3C), attention output (B,T,C) and
 * probabilities (B,NH,T,T), the post-attention residual (B,T,C) and the MLP's pre- and
 * post-GELU (B,T,4C). With activation checkpointing all blocks share one set of these and
 * backward re-runs a block's forward from res[l] before differentiating it. Activation
 * gradients need only one block's worth of scratch: backward walks blocks in reverse with a
 * running residual gradient `dres`. */
#include "model/model.h"
#include "core/log.h"

#include <errno.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MOD "model"

typedef struct block_acts {
    float *ln1, *ln1_mean, *ln1_rstd; /* (B,T,C), (B,T), (B,T) */
    float *qkv;                       /* (B,T,3C) */
    float *atty;                      /* (B,T,C) */
    float *att;                       /* (B,NH,T,T) */
    float *res2;                      /* (B,T,C) residual after attention */
    float *ln2, *ln2_mean, *ln2_rstd; /* (B,T,C), (B,T), (B,T) */
    float *fch, *fchg;                /* (B,T,4C) before and after GELU */
    /* 16-bit mode: the GEMM inputs ln1, atty, ln2 (B,T,C) and fchg (B,T,4C) are kept for
     * backward only as their 16-bit casts; the fp32 versions above are then one scratch set
     * shared by all blocks */
    void *ln1_16, *atty_16, *ln2_16, *fchg_16;
} block_acts;

struct zoff_model {
    zoff_dev *dev;
    zoff_gpt_config cfg;
    zoff_model_options opt;
    zoff_layout layout;
    float *params, *grads; /* (layout.total) */
    float **res;           /* L+1 pointers into one (L+1, B,T,C) allocation */
    block_acts *blocks;    /* L entries; all equal when checkpointing */
    float *lnf, *lnf_mean, *lnf_rstd;
    void *lnf_16;  /* 16-bit mode: lnf as the LM head's GEMM input */
    float *probs;  /* (B,T,V): logits, then probabilities, then dlogits in backward */
    float *losses; /* (B,T) */
    /* activation-gradient scratch, one block's worth */
    float *dres, *dtmp;  /* (B,T,C) */
    float *dqkv;         /* (B,T,3C) */
    float *dfchg, *dfch; /* (B,T,4C) */
    float *att_scratch;  /* (B,NH,T,T) */
    void *mm_a;          /* 16-bit mode: the output gradient as a GEMM operand */
    /* 16-bit copy of the flat parameters (matmul_dtype != f32), same offsets: the GEMMs read
     * their weights here. Refreshed from params by each forward unless params16_external. */
    uint16_t *params16;
    bool params16_external;
    int32_t *d_tokens, *d_targets;
    int32_t *h_tokens, *h_targets; /* pinned staging */
    float *h_losses;               /* pinned */
    int cur_B, cur_T;
    bool have_fwd, have_targets;
    zoff_gpt_grad_ready_fn hook;
    void *hook_ctx;
    zoff_gpt_params_needed_fn need_hook;
    void *need_ctx;
    void **allocs;
    int n_allocs;
    size_t bytes;
};

void zoff_model_options_default(zoff_model_options *opt) {
    memset(opt, 0, sizeof *opt);
    opt->batch = 8;
    opt->seq_len = 64;
    opt->matmul_dtype = ZOFF_F32;
    opt->activation_checkpoint = false;
}

static int dalloc(zoff_model *m, size_t bytes, void *out) {
    void *p = NULL;
    int rc = zoff_dev_malloc(m->dev, bytes, &p);
    if (rc) return rc;
    void **na = realloc(m->allocs, (size_t)(m->n_allocs + 1) * sizeof *na);
    if (!na) {
        zoff_dev_free(m->dev, p);
        return -ENOMEM;
    }
    m->allocs = na;
    m->allocs[m->n_allocs++] = p;
    m->bytes += bytes;
    *(void **)out = p;
    return 0;
}

#define FALLOC(ptr, n)                                                                             \
    do {                                                                                           \
        if ((rc = dalloc(m, (size_t)(n) * sizeof(float), &(ptr)))) goto fail;                      \
    } while (0)

/* Per-block activations; in 16-bit mode the fp32 GEMM inputs come from `shared`. */
static int alloc_block(zoff_model *m, block_acts *a, const block_acts *shared, size_t BT, size_t C,
                       size_t att_n) {
    int rc = 0;
    if (shared) {
        a->ln1 = shared->ln1;
        a->atty = shared->atty;
        a->ln2 = shared->ln2;
        a->fchg = shared->fchg;
        size_t es = zoff_dtype_size(m->opt.matmul_dtype);
        if ((rc = dalloc(m, BT * C * es, &a->ln1_16))) goto fail;
        if ((rc = dalloc(m, BT * C * es, &a->atty_16))) goto fail;
        if ((rc = dalloc(m, BT * C * es, &a->ln2_16))) goto fail;
        if ((rc = dalloc(m, BT * 4 * C * es, &a->fchg_16))) goto fail;
    } else {
        FALLOC(a->ln1, BT * C);
        FALLOC(a->atty, BT * C);
        FALLOC(a->ln2, BT * C);
        FALLOC(a->fchg, BT * 4 * C);
    }
    FALLOC(a->ln1_mean, BT);
    FALLOC(a->ln1_rstd, BT);
    FALLOC(a->qkv, BT * 3 * C);
    FALLOC(a->att, att_n);
    FALLOC(a->res2, BT * C);
    FALLOC(a->ln2_mean, BT);
    FALLOC(a->ln2_rstd, BT);
    FALLOC(a->fch, BT * 4 * C);
fail:
    return rc;
}

int zoff_gpt_create(zoff_dev *dev, const zoff_gpt_config *cfg, const zoff_model_options *opt,
                    zoff_model **out) {
    zoff_model_options def;
    if (!opt) {
        zoff_model_options_default(&def);
        opt = &def;
    }
    if (!dev || !cfg || !out) return -EINVAL;
    *out = NULL;
    int rc = zoff_gpt_config_validate(cfg);
    if (rc) return rc;
    if (opt->batch < 1) return zoff_fail(ZOFF_ECONFIG, MOD, "batch = %d: must be >= 1", opt->batch);
    if (opt->seq_len < 1 || opt->seq_len > cfg->seq_len)
        return zoff_fail(ZOFF_ECONFIG, MOD, "seq_len = %d: must be 1..%d (the model's positions)",
                         opt->seq_len, cfg->seq_len);
    if ((size_t)opt->batch * (size_t)opt->seq_len * 4u * (size_t)cfg->n_embd > (size_t)INT32_MAX ||
        (size_t)opt->batch * (size_t)opt->seq_len * (size_t)cfg->vocab_size >
            (size_t)INT32_MAX * 4u)
        return zoff_fail(ZOFF_ECONFIG, MOD, "batch %d x seq_len %d is too large for this model",
                         opt->batch, opt->seq_len);
    if (!zoff_dtype_size(opt->matmul_dtype))
        return zoff_fail(ZOFF_ECONFIG, MOD, "matmul dtype %d is not a dtype", opt->matmul_dtype);
    zoff_model *m = calloc(1, sizeof *m);
    if (!m) return -ENOMEM;
    m->dev = dev;
    m->cfg = *cfg;
    m->opt = *opt;
    if ((rc = zoff_gpt_layout_build(cfg, &m->layout))) {
        free(m);
        return rc;
    }
    size_t L = (size_t)cfg->n_layer, C = (size_t)cfg->n_embd, V = (size_t)cfg->vocab_size;
    size_t NH = (size_t)cfg->n_head, B = (size_t)opt->batch, T = (size_t)opt->seq_len;
    size_t BT = B * T, att_n = B * NH * T * T;
    FALLOC(m->params, m->layout.total);
    FALLOC(m->grads, m->layout.total);
    m->res = calloc(L + 1, sizeof *m->res);
    m->blocks = calloc(L, sizeof *m->blocks);
    if (!m->res || !m->blocks) {
        rc = -ENOMEM;
        goto fail;
    }
    float *res_all;
    FALLOC(res_all, (L + 1) * BT * C);
    for (size_t l = 0; l <= L; l++)
        m->res[l] = res_all + l * BT * C;
    bool mm16 = opt->matmul_dtype != ZOFF_F32;
    block_acts shared = {0};
    if (mm16) {
        FALLOC(shared.ln1, BT * C);
        FALLOC(shared.atty, BT * C);
        FALLOC(shared.ln2, BT * C);
        FALLOC(shared.fchg, BT * 4 * C);
    }
    for (size_t l = 0; l < L; l++) {
        if (opt->activation_checkpoint && l > 0) {
            m->blocks[l] = m->blocks[0];
            continue;
        }
        if ((rc = alloc_block(m, &m->blocks[l], mm16 ? &shared : NULL, BT, C, att_n))) goto fail;
    }
    FALLOC(m->lnf, BT * C);
    FALLOC(m->lnf_mean, BT);
    FALLOC(m->lnf_rstd, BT);
    FALLOC(m->probs, BT * V);
    FALLOC(m->losses, BT);
    FALLOC(m->dres, BT * C);
    FALLOC(m->dtmp, BT * C);
    FALLOC(m->dqkv, BT * 3 * C);
    FALLOC(m->dfchg, BT * 4 * C);
    FALLOC(m->dfch, BT * 4 * C);
    FALLOC(m->att_scratch, att_n);
    if (opt->matmul_dtype != ZOFF_F32) {
        size_t na = BT * (4 * C > V ? 4 * C : V);
        if ((rc = dalloc(m, na * 2, &m->mm_a))) goto fail;
        if ((rc = dalloc(m, BT * C * 2, &m->lnf_16))) goto fail;
        if ((rc = dalloc(m, m->layout.total * 2, &m->params16))) goto fail;
    }
    if ((rc = dalloc(m, BT * sizeof(int32_t), &m->d_tokens))) goto fail;
    if ((rc = dalloc(m, BT * sizeof(int32_t), &m->d_targets))) goto fail;
    if ((rc = zoff_dev_host_alloc(dev, BT * sizeof(int32_t), (void **)&m->h_tokens))) goto fail;
    if ((rc = zoff_dev_host_alloc(dev, BT * sizeof(int32_t), (void **)&m->h_targets))) goto fail;
    if ((rc = zoff_dev_host_alloc(dev, BT * sizeof(float), (void **)&m->h_losses))) goto fail;
    /* zero parameters and gradients (padding stays zero forever) */
    float *zero = calloc(m->layout.total, sizeof(float));
    if (!zero) {
        rc = -ENOMEM;
        goto fail;
    }
    size_t bytes = m->layout.total * sizeof(float);
    rc = zoff_dev_memcpy(dev, m->params, zero, bytes, ZOFF_COPY_H2D);
    if (!rc) rc = zoff_dev_memcpy(dev, m->grads, zero, bytes, ZOFF_COPY_H2D);
    free(zero);
    if (rc) goto fail;
    *out = m;
    return 0;
fail:
    zoff_model_destroy(m);
    return rc;
}

void zoff_model_destroy(zoff_model *m) {
    if (!m) return;
    zoff_dev_synchronize(m->dev);
    for (int i = 0; i < m->n_allocs; i++)
        zoff_dev_free(m->dev, m->allocs[i]);
    zoff_dev_host_free(m->dev, m->h_tokens);
    zoff_dev_host_free(m->dev, m->h_targets);
    zoff_dev_host_free(m->dev, m->h_losses);
    free(m->allocs);
    free(m->res);
    free(m->blocks);
    zoff_layout_free(&m->layout);
    free(m);
}

const zoff_gpt_config *zoff_gpt_get_config(const zoff_model *m) {
    return &m->cfg;
}
const zoff_layout *zoff_model_get_layout(const zoff_model *m) {
    return &m->layout;
}
const zoff_model_options *zoff_model_get_options(const zoff_model *m) {
    return &m->opt;
}
zoff_dev *zoff_model_get_dev(const zoff_model *m) {
    return m->dev;
}
float *zoff_model_params(zoff_model *m) {
    return m->params;
}
float *zoff_model_grads(zoff_model *m) {
    return m->grads;
}
size_t zoff_model_device_bytes(const zoff_model *m) {
    return m->bytes;
}
void *zoff_gpt_params16(zoff_model *m) {
    return m->params16;
}
void zoff_gpt_set_params16_external(zoff_model *m, bool external) {
    m->params16_external = external;
}
void zoff_model_set_params_needed_hook(zoff_model *m, zoff_gpt_params_needed_fn fn, void *ctx) {
    m->need_hook = fn;
    m->need_ctx = ctx;
}

void zoff_gpt_set_grad_ready_hook(zoff_model *m, zoff_gpt_grad_ready_fn fn, void *ctx) {
    m->hook = fn;
    m->hook_ctx = ctx;
}

/* --- parameters -------------------------------------------------------------------------- */

int zoff_model_init_params(zoff_model *m, uint64_t seed) {
    float *h = calloc(m->layout.total, sizeof *h);
    if (!h) return -ENOMEM;
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 1;
    float resid_std = 0.02f / sqrtf(2.0f * (float)m->cfg.n_layer);
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
    int rc = zoff_model_params_from_host(m, h);
    free(h);
    return rc;
}

int zoff_model_params_to_host(zoff_model *m, float *dst) {
    int rc = zoff_dev_synchronize(m->dev);
    return rc ? rc
              : zoff_dev_memcpy(m->dev, dst, m->params, m->layout.total * sizeof(float),
                                ZOFF_COPY_D2H);
}

int zoff_model_params_from_host(zoff_model *m, const float *src) {
    int rc = zoff_dev_synchronize(m->dev);
    return rc ? rc
              : zoff_dev_memcpy(m->dev, m->params, src, m->layout.total * sizeof(float),
                                ZOFF_COPY_H2D);
}

int zoff_model_grads_to_host(zoff_model *m, float *dst) {
    int rc = zoff_dev_synchronize(m->dev);
    return rc ? rc
              : zoff_dev_memcpy(m->dev, dst, m->grads, m->layout.total * sizeof(float),
                                ZOFF_COPY_D2H);
}

static float *P(zoff_model *m, zoff_gpt_tensor_kind k, int l) {
    return m->params + zoff_gpt_layout_find(&m->layout, k, l)->offset;
}
static float *G(zoff_model *m, zoff_gpt_tensor_kind k, int l) {
    return m->grads + zoff_gpt_layout_find(&m->layout, k, l)->offset;
}

/* --- linear layers ------------------------------------------------------------------------ */

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_) return rc_;                                                                       \
    } while (0)

/* The 16-bit copy of a weight given by its fp32 location in the flat buffer. */
static const void *W16(zoff_model *m, const float *w) {
    return m->params16 + (w - m->params);
}

/* out (N,OC) = beta*out + inp (N,K) @ w (OC,K)^T (+ bias). 16-bit mode rounds the operands:
 * inp is cast into inp16 (kept for the backward's weight gradient), w comes from params16. */
static int mm_fwd(zoff_model *m, zoff_dev_stream *s, float *out, const float *inp, void *inp16,
                  const float *w, const float *bias, int N, int K, int OC, float beta) {
    zoff_dtype dt = m->opt.matmul_dtype;
    if (dt == ZOFF_F32) {
        TRY(zoff_dev_op_gemm(s, false, true, N, OC, K, 1.0f, inp, K, w, K, ZOFF_F32, beta, out,
                             OC));
    } else {
        TRY(zoff_dev_op_cast(s, inp16, dt, inp, ZOFF_F32, (size_t)N * K));
        TRY(zoff_dev_op_gemm(s, false, true, N, OC, K, 1.0f, inp16, K, W16(m, w), K, dt, beta, out,
                             OC));
    }
    if (bias) TRY(zoff_dev_op_bias_add(s, out, bias, (size_t)N, OC));
    return 0;
}

/* dinp (N,K) = dout (N,OC) @ w (OC,K) (overwritten); dw (OC,K) += dout^T @ inp (N,K);
 * dbias (OC) += column sums of dout. 16-bit mode reads inp16 saved by mm_fwd. */
static int mm_bwd(zoff_model *m, zoff_dev_stream *s, float *dinp, float *dw, float *dbias,
                  const float *dout, const float *inp, const void *inp16, const float *w, int N,
                  int K, int OC) {
    zoff_dtype dt = m->opt.matmul_dtype;
    if (dt == ZOFF_F32) {
        TRY(zoff_dev_op_gemm(s, false, false, N, K, OC, 1.0f, dout, OC, w, K, ZOFF_F32, 0.0f, dinp,
                             K));
        TRY(zoff_dev_op_gemm(s, true, false, OC, K, N, 1.0f, dout, OC, inp, K, ZOFF_F32, 1.0f, dw,
                             K));
    } else {
        TRY(zoff_dev_op_cast(s, m->mm_a, dt, dout, ZOFF_F32, (size_t)N * OC));
        TRY(zoff_dev_op_gemm(s, false, false, N, K, OC, 1.0f, m->mm_a, OC, W16(m, w), K, dt, 0.0f,
                             dinp, K));
        TRY(zoff_dev_op_gemm(s, true, false, OC, K, N, 1.0f, m->mm_a, OC, inp16, K, dt, 1.0f, dw,
                             K));
    }
    if (dbias) TRY(zoff_dev_op_bias_grad(s, dbias, dout, (size_t)N, OC));
    return 0;
}

/* --- forward ------------------------------------------------------------------------------ */

static int block_fwd(zoff_model *m, zoff_dev_stream *s, int l, int B, int T) {
    block_acts *a = &m->blocks[l];
    int C = m->cfg.n_embd, NH = m->cfg.n_head, BT = B * T;
    const float *x = m->res[l];
    float *y = m->res[l + 1];
    TRY(zoff_dev_op_layernorm_fwd(s, a->ln1, a->ln1_mean, a->ln1_rstd, x, P(m, ZOFF_GPT_LN1_W, l),
                                  P(m, ZOFF_GPT_LN1_B, l), (size_t)BT, C));
    TRY(mm_fwd(m, s, a->qkv, a->ln1, a->ln1_16, P(m, ZOFF_GPT_QKV_W, l), P(m, ZOFF_GPT_QKV_B, l),
               BT, C, 3 * C, 0.0f));
    TRY(zoff_dev_op_attention_fwd(s, a->atty, a->att, a->qkv, B, T, C, NH));
    /* res2 = x + attproj(atty): copy x, then accumulate the projection (beta = 1) */
    TRY(zoff_dev_memcpy_async(s, a->res2, x, (size_t)BT * C * sizeof(float), ZOFF_COPY_D2D));
    TRY(mm_fwd(m, s, a->res2, a->atty, a->atty_16, P(m, ZOFF_GPT_ATTPROJ_W, l),
               P(m, ZOFF_GPT_ATTPROJ_B, l), BT, C, C, 1.0f));
    TRY(zoff_dev_op_layernorm_fwd(s, a->ln2, a->ln2_mean, a->ln2_rstd, a->res2,
                                  P(m, ZOFF_GPT_LN2_W, l), P(m, ZOFF_GPT_LN2_B, l), (size_t)BT, C));
    TRY(mm_fwd(m, s, a->fch, a->ln2, a->ln2_16, P(m, ZOFF_GPT_FC_W, l), P(m, ZOFF_GPT_FC_B, l), BT,
               C, 4 * C, 0.0f));
    TRY(zoff_dev_op_gelu_fwd(s, a->fchg, a->fch, (size_t)BT * 4 * C));
    TRY(zoff_dev_memcpy_async(s, y, a->res2, (size_t)BT * C * sizeof(float), ZOFF_COPY_D2D));
    TRY(mm_fwd(m, s, y, a->fchg, a->fchg_16, P(m, ZOFF_GPT_FCPROJ_W, l), P(m, ZOFF_GPT_FCPROJ_B, l),
               BT, 4 * C, C, 1.0f));
    return 0;
}

int zoff_model_forward(zoff_model *m, zoff_dev_stream *s, const int32_t *tokens, const int32_t *targets,
                     int B, int T, float *loss) {
    if (!m || !s || !tokens) return -EINVAL;
    if (B < 1 || B > m->opt.batch || T < 1 || T > m->opt.seq_len)
        return zoff_fail(-EINVAL, MOD, "forward on %dx%d tokens: the model was sized for %dx%d", B,
                         T, m->opt.batch, m->opt.seq_len);
    int V = m->cfg.vocab_size, C = m->cfg.n_embd, L = m->cfg.n_layer, BT = B * T;
    for (int i = 0; i < BT; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return zoff_fail(-EINVAL, MOD, "token %d at position %d is outside the vocabulary (%d)",
                             (int)tokens[i], i, V);
        if (targets && (targets[i] < 0 || targets[i] >= V))
            return zoff_fail(-EINVAL, MOD,
                             "target %d at position %d is outside the vocabulary (%d)",
                             (int)targets[i], i, V);
    }
    /* the staging buffers may still feed the previous forward's uploads */
    TRY(zoff_dev_stream_synchronize(s));
    memcpy(m->h_tokens, tokens, (size_t)BT * sizeof(int32_t));
    TRY(zoff_dev_memcpy_async(s, m->d_tokens, m->h_tokens, (size_t)BT * sizeof(int32_t),
                              ZOFF_COPY_H2D));
    if (targets) {
        memcpy(m->h_targets, targets, (size_t)BT * sizeof(int32_t));
        TRY(zoff_dev_memcpy_async(s, m->d_targets, m->h_targets, (size_t)BT * sizeof(int32_t),
                                  ZOFF_COPY_H2D));
    }
    m->have_fwd = false;
    if (m->params16 && !m->params16_external)
        TRY(zoff_dev_op_cast(s, m->params16, m->opt.matmul_dtype, m->params, ZOFF_F32,
                             m->layout.total));
    if (m->need_hook) m->need_hook(m->need_ctx, 0, s);
    TRY(zoff_dev_op_embedding_fwd(s, m->res[0], m->d_tokens, P(m, ZOFF_GPT_WTE, 0),
                                  P(m, ZOFF_GPT_WPE, 0), B, T, C));
    for (int l = 0; l < L; l++) {
        if (m->need_hook) m->need_hook(m->need_ctx, 1 + l, s);
        TRY(block_fwd(m, s, l, B, T));
    }
    if (m->need_hook) m->need_hook(m->need_ctx, L + 1, s);
    TRY(zoff_dev_op_layernorm_fwd(s, m->lnf, m->lnf_mean, m->lnf_rstd, m->res[L],
                                  P(m, ZOFF_GPT_LNF_W, 0), P(m, ZOFF_GPT_LNF_B, 0), (size_t)BT, C));
    TRY(mm_fwd(m, s, m->probs, m->lnf, m->lnf_16, P(m, ZOFF_GPT_WTE, 0), NULL, BT, C, V, 0.0f));
    TRY(zoff_dev_op_softmax_xent_fwd(s, m->probs, m->losses, m->probs,
                                     targets ? m->d_targets : NULL, (size_t)BT, V));
    m->cur_B = B;
    m->cur_T = T;
    m->have_fwd = true;
    m->have_targets = targets != NULL;
    if (targets && loss) {
        TRY(zoff_dev_memcpy_async(s, m->h_losses, m->losses, (size_t)BT * sizeof(float),
                                  ZOFF_COPY_D2H));
        TRY(zoff_dev_stream_synchronize(s));
        double sum = 0.0;
        for (int i = 0; i < BT; i++)
            sum += m->h_losses[i];
        *loss = (float)(sum / BT);
    }
    return 0;
}

/* --- backward ----------------------------------------------------------------------------- */

static int block_bwd(zoff_model *m, zoff_dev_stream *s, int l, int B, int T) {
    block_acts *a = &m->blocks[l];
    int C = m->cfg.n_embd, NH = m->cfg.n_head, BT = B * T;
    const float *x = m->res[l];
    /* MLP: y = res2 + fcproj(gelu(fc(ln2(res2)))); dres holds dy */
    TRY(mm_bwd(m, s, m->dfchg, G(m, ZOFF_GPT_FCPROJ_W, l), G(m, ZOFF_GPT_FCPROJ_B, l), m->dres,
               a->fchg, a->fchg_16, P(m, ZOFF_GPT_FCPROJ_W, l), BT, 4 * C, C));
    TRY(zoff_dev_memset_async(s, m->dfch, 0, (size_t)BT * 4 * C * sizeof(float)));
    TRY(zoff_dev_op_gelu_bwd(s, m->dfch, a->fch, m->dfchg, (size_t)BT * 4 * C));
    TRY(mm_bwd(m, s, m->dtmp, G(m, ZOFF_GPT_FC_W, l), G(m, ZOFF_GPT_FC_B, l), m->dfch, a->ln2,
               a->ln2_16, P(m, ZOFF_GPT_FC_W, l), BT, C, 4 * C));
    TRY(zoff_dev_op_layernorm_bwd(s, m->dres, G(m, ZOFF_GPT_LN2_W, l), G(m, ZOFF_GPT_LN2_B, l),
                                  m->dtmp, a->res2, P(m, ZOFF_GPT_LN2_W, l), a->ln2_mean,
                                  a->ln2_rstd, (size_t)BT, C));
    /* attention: res2 = x + attproj(attn(qkv(ln1(x)))); dres now holds dres2 */
    TRY(mm_bwd(m, s, m->dtmp, G(m, ZOFF_GPT_ATTPROJ_W, l), G(m, ZOFF_GPT_ATTPROJ_B, l), m->dres,
               a->atty, a->atty_16, P(m, ZOFF_GPT_ATTPROJ_W, l), BT, C, C));
    TRY(zoff_dev_memset_async(s, m->dqkv, 0, (size_t)BT * 3 * C * sizeof(float)));
    TRY(zoff_dev_op_attention_bwd(s, m->dqkv, m->att_scratch, m->dtmp, a->qkv, a->att, B, T, C,
                                  NH));
    TRY(mm_bwd(m, s, m->dtmp, G(m, ZOFF_GPT_QKV_W, l), G(m, ZOFF_GPT_QKV_B, l), m->dqkv, a->ln1,
               a->ln1_16, P(m, ZOFF_GPT_QKV_W, l), BT, C, 3 * C));
    TRY(zoff_dev_op_layernorm_bwd(s, m->dres, G(m, ZOFF_GPT_LN1_W, l), G(m, ZOFF_GPT_LN1_B, l),
                                  m->dtmp, x, P(m, ZOFF_GPT_LN1_W, l), a->ln1_mean, a->ln1_rstd,
                                  (size_t)BT, C));
    return 0;
}

int zoff_model_backward(zoff_model *m, zoff_dev_stream *s, float dloss_scale) {
    if (!m || !s) return -EINVAL;
    if (!m->have_fwd || !m->have_targets)
        return zoff_fail(-EINVAL, MOD, "backward needs a forward with targets first");
    int B = m->cur_B, T = m->cur_T, BT = B * T;
    int V = m->cfg.vocab_size, C = m->cfg.n_embd, L = m->cfg.n_layer;
    /* mean loss over B*T positions */
    TRY(zoff_dev_op_softmax_xent_bwd(s, m->probs, m->probs, m->d_targets, dloss_scale / BT,
                                     (size_t)BT, V));
    m->have_fwd = false; /* probs now hold dlogits */
    TRY(mm_bwd(m, s, m->dtmp, G(m, ZOFF_GPT_WTE, 0), NULL, m->probs, m->lnf, m->lnf_16,
               P(m, ZOFF_GPT_WTE, 0), BT, C, V));
    TRY(zoff_dev_memset_async(s, m->dres, 0, (size_t)BT * C * sizeof(float)));
    TRY(zoff_dev_op_layernorm_bwd(s, m->dres, G(m, ZOFF_GPT_LNF_W, 0), G(m, ZOFF_GPT_LNF_B, 0),
                                  m->dtmp, m->res[L], P(m, ZOFF_GPT_LNF_W, 0), m->lnf_mean,
                                  m->lnf_rstd, (size_t)BT, C));
    if (m->hook) m->hook(m->hook_ctx, L + 1, s);
    for (int l = L - 1; l >= 0; l--) {
        if (m->opt.activation_checkpoint) TRY(block_fwd(m, s, l, B, T)); /* recompute */
        TRY(block_bwd(m, s, l, B, T));
        if (m->hook) m->hook(m->hook_ctx, 1 + l, s);
    }
    TRY(zoff_dev_op_embedding_bwd(s, G(m, ZOFF_GPT_WTE, 0), G(m, ZOFF_GPT_WPE, 0), m->dres,
                                  m->d_tokens, B, T, C));
    if (m->hook) m->hook(m->hook_ctx, 0, s);
    return 0;
}

int zoff_model_zero_grads(zoff_model *m, zoff_dev_stream *s) {
    return zoff_dev_memset_async(s, m->grads, 0, m->layout.total * sizeof(float));
}

int zoff_model_probs_row(zoff_model *m, zoff_dev_stream *s, int b, int t, float *probs) {
    if (!m->have_fwd || b < 0 || b >= m->cur_B || t < 0 || t >= m->cur_T)
        return zoff_fail(-EINVAL, MOD, "no probabilities at (%d, %d) from the last forward", b, t);
    size_t V = (size_t)m->cfg.vocab_size;
    TRY(zoff_dev_memcpy_async(s, probs, m->probs + ((size_t)b * m->cur_T + t) * V,
                              V * sizeof(float), ZOFF_COPY_D2H));
    return zoff_dev_stream_synchronize(s);
}
