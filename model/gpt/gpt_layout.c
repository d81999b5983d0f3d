/* GPT configuration checks and the flat parameter layout (documented in model/model.h):
 * tensor order, names, shapes and 64-element-aligned offsets, grouped by block. */
#include "model/model.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define MOD "model"

void zoff_gpt_config_default(zoff_gpt_config *cfg) {
    cfg->n_layer = 4;
    cfg->n_head = 4;
    cfg->n_embd = 128;
    cfg->vocab_size = 256;
    cfg->seq_len = 64;
}

void zoff_gpt_config_gpt2_124m(zoff_gpt_config *cfg) {
    cfg->n_layer = 12;
    cfg->n_head = 12;
    cfg->n_embd = 768;
    cfg->vocab_size = 50257;
    cfg->seq_len = 1024;
}

int zoff_gpt_config_validate(const zoff_gpt_config *c) {
    static const int max_dim = 1 << 20;
    if (c->n_layer < 1 || c->n_layer > 4096)
        return zoff_fail(ZOFF_ECONFIG, MOD, "n_layer = %d: must be 1..4096", c->n_layer);
    if (c->n_embd < 1 || c->n_embd > 65536)
        return zoff_fail(ZOFF_ECONFIG, MOD, "n_embd = %d: must be 1..65536", c->n_embd);
    if (c->n_head < 1 || c->n_embd % c->n_head != 0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "n_head = %d: must be >= 1 and divide n_embd = %d",
                         c->n_head, c->n_embd);
    if (c->vocab_size < 1 || c->vocab_size > max_dim)
        return zoff_fail(ZOFF_ECONFIG, MOD, "vocab_size = %d: must be 1..%d", c->vocab_size,
                         max_dim);
    if (c->seq_len < 1 || c->seq_len > 65536)
        return zoff_fail(ZOFF_ECONFIG, MOD, "seq_len = %d: must be 1..65536", c->seq_len);
    return 0;
}

static size_t align_up(size_t x) {
    return (x + ZOFF_LAYOUT_ALIGN - 1) / ZOFF_LAYOUT_ALIGN * ZOFF_LAYOUT_ALIGN;
}

int zoff_gpt_layout_build(const zoff_gpt_config *cfg, zoff_layout *out) {
    memset(out, 0, sizeof *out);
    int rc = zoff_gpt_config_validate(cfg);
    if (rc) return rc;
    int L = cfg->n_layer;
    size_t C = (size_t)cfg->n_embd, V = (size_t)cfg->vocab_size, maxT = (size_t)cfg->seq_len;
    out->n_tensors = 2 + 12 * L + 2;
    out->n_groups = L + 2;
    out->tensors = calloc((size_t)out->n_tensors, sizeof *out->tensors);
    out->group_begin = calloc((size_t)out->n_groups + 1, sizeof *out->group_begin);
    if (!out->tensors || !out->group_begin) {
        zoff_layout_free(out);
        return -ENOMEM;
    }
    static const char *block_names[12] = {
        "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
        "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
        "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias"};
    const int64_t block_shapes[12][2] = {{(int64_t)C, 0},
                                         {(int64_t)C, 0},
                                         {(int64_t)(3 * C), (int64_t)C},
                                         {(int64_t)(3 * C), 0},
                                         {(int64_t)C, (int64_t)C},
                                         {(int64_t)C, 0},
                                         {(int64_t)C, 0},
                                         {(int64_t)C, 0},
                                         {(int64_t)(4 * C), (int64_t)C},
                                         {(int64_t)(4 * C), 0},
                                         {(int64_t)C, (int64_t)(4 * C)},
                                         {(int64_t)C, 0}};
    size_t off = 0;
    int n = 0;
    for (int g = 0; g < out->n_groups; g++) {
        out->group_begin[g] = off;
        int count = g == 0 ? 2 : g == L + 1 ? 2 : 12;
        for (int j = 0; j < count; j++) {
            zoff_tensor *t = &out->tensors[n++];
            t->group = g;
            t->offset = off;
            if (g == 0) {
                t->kind = j == 0 ? ZOFF_GPT_WTE : ZOFF_GPT_WPE;
                t->layer = -1;
                snprintf(t->name, sizeof t->name, "%s", j == 0 ? "wte.weight" : "wpe.weight");
                t->shape[0] = (int64_t)(j == 0 ? V : maxT);
                t->shape[1] = (int64_t)C;
            } else if (g == L + 1) {
                t->kind = j == 0 ? ZOFF_GPT_LNF_W : ZOFF_GPT_LNF_B;
                t->layer = L;
                snprintf(t->name, sizeof t->name, "%s", j == 0 ? "ln_f.weight" : "ln_f.bias");
                t->shape[0] = (int64_t)C;
            } else {
                t->kind = ZOFF_GPT_LN1_W + j;
                t->layer = g - 1;
                snprintf(t->name, sizeof t->name, "h.%d.%s", g - 1, block_names[j]);
                t->shape[0] = block_shapes[j][0];
                t->shape[1] = block_shapes[j][1];
            }
            t->ndim = t->shape[1] ? 2 : 1;
            t->hf_transposed = t->ndim == 2 && g != 0; /* GPT-2's Conv1D stores (in, out) */
            t->numel = (size_t)t->shape[0] * (t->ndim == 2 ? (size_t)t->shape[1] : 1);
            t->weight_decay = t->ndim == 2;
            out->n_params += t->numel;
            off = align_up(off + t->numel);
        }
    }
    out->group_begin[out->n_groups] = off;
    out->total = off;
    return 0;
}

void zoff_layout_free(zoff_layout *layout) {
    free(layout->tensors);
    free(layout->group_begin);
    memset(layout, 0, sizeof *layout);
}

const zoff_tensor *zoff_gpt_layout_find(const zoff_layout *layout,
                                            zoff_gpt_tensor_kind kind, int layer) {
    switch (kind) {
    case ZOFF_GPT_WTE:
        return &layout->tensors[0];
    case ZOFF_GPT_WPE:
        return &layout->tensors[1];
    case ZOFF_GPT_LNF_W:
    case ZOFF_GPT_LNF_B:
        return &layout->tensors[layout->n_tensors - 2 + (kind - ZOFF_GPT_LNF_W)];
    default: {
        int L = layout->n_groups - 2;
        if (layer < 0 || layer >= L || kind >= ZOFF_GPT_KIND_COUNT) return NULL;
        return &layout->tensors[2 + 12 * layer + (kind - ZOFF_GPT_LN1_W)];
    }
    }
}

const zoff_tensor *zoff_layout_find_name(const zoff_layout *layout, const char *name) {
    for (int i = 0; i < layout->n_tensors; i++)
        if (strcmp(layout->tensors[i].name, name) == 0) return &layout->tensors[i];
    return NULL;
}

double zoff_gpt_train_flops(const zoff_gpt_config *c, int B, int T) {
    double L = c->n_layer, C = c->n_embd, V = c->vocab_size;
    /* matrices touched per token: blocks 12*C^2 each, plus the tied output projection */
    double n_matmul = L * 12.0 * C * C + V * C;
    double tokens = (double)B * T;
    return 6.0 * n_matmul * tokens + 12.0 * L * T * C * tokens / 2.0; /* causal: half of T*T */
}

/* --- random numbers ------------------------------------------------------------------- */

uint64_t zoff_rng_next(uint64_t *s) {
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

float zoff_rng_uniform(uint64_t *s) {
    return (float)(zoff_rng_next(s) >> 40) / 16777216.0f;
}

float zoff_rng_normal(uint64_t *s) {
    /* Box-Muller; u1 in (0, 1] so the log is finite */
    float u1 = 1.0f - zoff_rng_uniform(s), u2 = zoff_rng_uniform(s);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

int zoff_sample_token(const float *probs, int V, float temperature, int top_k, uint64_t *rng) {
    /* p^(1/temperature), restricted to the top_k most likely, renormalized */
    float inv_t = temperature > 0.0f ? 1.0f / temperature : 1.0f;
    float thresh = 0.0f;
    if (top_k > 0 && top_k < V) {
        /* the k-th largest probability by repeated selection: V is small or k is */
        float *tmp = malloc((size_t)V * sizeof *tmp);
        if (tmp) {
            memcpy(tmp, probs, (size_t)V * sizeof *tmp);
            for (int k = 0; k < top_k; k++) {
                int best = 0;
                for (int i = 1; i < V; i++)
                    if (tmp[i] > tmp[best]) best = i;
                thresh = tmp[best];
                tmp[best] = -1.0f;
            }
            free(tmp);
        }
    }
    double total = 0.0;
    for (int i = 0; i < V; i++)
        if (probs[i] >= thresh && probs[i] > 0.0f) total += pow(probs[i], inv_t);
    double r = zoff_rng_uniform(rng) * total, acc = 0.0;
    int last = 0;
    for (int i = 0; i < V; i++)
        if (probs[i] >= thresh && probs[i] > 0.0f) {
            acc += pow(probs[i], inv_t);
            last = i;
            if (r < acc) return i;
        }
    return last;
}
