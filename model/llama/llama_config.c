/* Llama-family configuration: defaults, checks, Hugging Face config.json (LlamaConfig,
 * MistralConfig, Qwen2Config) read strictly and written back, the RoPE inverse frequencies
 * (as transformers' _compute_default / linear / llama3 rope parameters) and the model FLOPs.
 *
 * Reading: each field that changes the computation is either honoured or refused with
 * ZOFF_ECONFIG naming the file, the field and its value; fields that do not (token ids,
 * torch_dtype, initializer_range, use_cache) are ignored. */
#include "core/log.h"
#include "model/checkpoint_dir.h"
#include "model/model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "llama"

void zoff_llama_config_default(zoff_llama_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "llama");
    c->n_layer = 4;
    c->n_head = 4;
    c->n_kv_head = 2;
    c->n_embd = 128;
    c->head_dim = 32;
    c->n_ffn = 352;
    c->vocab_size = 256;
    c->seq_len = 64;
    c->rms_eps = 1e-5f;
    c->rope_theta = 10000.0;
    c->rope_type = ZOFF_ROPE_DEFAULT;
    c->rope_factor = 1.0f;
}

int zoff_llama_config_validate(const zoff_llama_config *c) {
    if (c->n_layer < 1 || c->n_layer > 4096)
        return zoff_fail(ZOFF_ECONFIG, MOD, "num_hidden_layers = %d: must be 1..4096", c->n_layer);
    if (c->n_embd < 1 || c->n_embd > 65536)
        return zoff_fail(ZOFF_ECONFIG, MOD, "hidden_size = %d: must be 1..65536", c->n_embd);
    if (c->n_head < 1 || c->n_head > 4096)
        return zoff_fail(ZOFF_ECONFIG, MOD, "num_attention_heads = %d: must be 1..4096", c->n_head);
    if (c->n_kv_head < 1 || c->n_head % c->n_kv_head)
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "num_key_value_heads = %d: must be >= 1 and divide num_attention_heads "
                         "= %d",
                         c->n_kv_head, c->n_head);
    if (c->head_dim < 2 || c->head_dim % 2 || c->head_dim > 1024)
        return zoff_fail(ZOFF_ECONFIG, MOD, "head_dim = %d: must be even, 2..1024", c->head_dim);
    if (c->n_ffn < 1 || c->n_ffn > (1 << 20))
        return zoff_fail(ZOFF_ECONFIG, MOD, "intermediate_size = %d: must be 1..%d", c->n_ffn,
                         1 << 20);
    if (c->vocab_size < 1 || c->vocab_size > (1 << 20))
        return zoff_fail(ZOFF_ECONFIG, MOD, "vocab_size = %d: must be 1..%d", c->vocab_size,
                         1 << 20);
    if (c->seq_len < 1 || c->seq_len > (1 << 20))
        return zoff_fail(ZOFF_ECONFIG, MOD, "max_position_embeddings = %d: must be 1..%d",
                         c->seq_len, 1 << 20);
    if (!(c->rms_eps > 0.0f) || !(c->rms_eps < 1.0f))
        return zoff_fail(ZOFF_ECONFIG, MOD, "rms_norm_eps = %g: must be in (0, 1)",
                         (double)c->rms_eps);
    if (!(c->rope_theta > 1.0) || !isfinite(c->rope_theta))
        return zoff_fail(ZOFF_ECONFIG, MOD, "rope_theta = %g: must be > 1", c->rope_theta);
    if (c->rope_type != ZOFF_ROPE_DEFAULT && !(c->rope_factor >= 1.0f))
        return zoff_fail(ZOFF_ECONFIG, MOD, "rope_scaling.factor = %g: must be >= 1",
                         (double)c->rope_factor);
    if (c->rope_type == ZOFF_ROPE_LLAMA3 &&
        (!(c->rope_low_freq_factor > 0.0f) ||
         !(c->rope_high_freq_factor > c->rope_low_freq_factor) || c->rope_original_max_pos < 1))
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "rope_scaling (llama3): low_freq_factor = %g, high_freq_factor = %g, "
                         "original_max_position_embeddings = %d: need 0 < low < high and a "
                         "positive length",
                         (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor,
                         c->rope_original_max_pos);
    if (c->sliding_window < 0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "sliding_window = %d: must be >= 0", c->sliding_window);
    return 0;
}

/* transformers computes these in fp32 torch ops; each step below is the same fp32 operation. */
void zoff_llama_rope_inv_freq(const zoff_llama_config *c, float *inv_freq) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)c->head_dim;
        float f = 1.0f / powf((float)c->rope_theta, expo);
        if (c->rope_type == ZOFF_ROPE_LINEAR) {
            f = f / c->rope_factor;
        } else if (c->rope_type == ZOFF_ROPE_LLAMA3) {
            double old = (double)c->rope_original_max_pos;
            double low_wl = old / c->rope_low_freq_factor, high_wl = old / c->rope_high_freq_factor;
            float wavelen = (float)(2.0 * M_PI) / f;
            float scaled = (double)wavelen > low_wl ? f / c->rope_factor : f;
            float smooth = ((float)old / wavelen - c->rope_low_freq_factor) /
                           (c->rope_high_freq_factor - c->rope_low_freq_factor);
            float smoothed = (1.0f - smooth) * scaled / c->rope_factor + smooth * scaled;
            bool medium = !((double)wavelen < high_wl) && !((double)wavelen > low_wl);
            f = medium ? smoothed : scaled;
        }
        inv_freq[i] = f;
    }
}

double zoff_llama_train_flops(const zoff_llama_config *c, int B, int T) {
    double L = c->n_layer, C = c->n_embd, V = c->vocab_size, F = c->n_ffn;
    double QD = (double)c->n_head * c->head_dim, KD = (double)c->n_kv_head * c->head_dim;
    double n_matmul = L * (2.0 * C * QD + 2.0 * C * KD + 3.0 * C * F) + V * C; /* + the head */
    double tokens = (double)B * T;
    /* attention: q.k and att.v, forward and backward, causal (half of T*T) */
    return 6.0 * n_matmul * tokens + 12.0 * L * T * QD * tokens / 2.0;
}

bool zoff_llama_config_equal(const zoff_llama_config *a, const zoff_llama_config *b) {
    return strcmp(a->model_type, b->model_type) == 0 && a->n_layer == b->n_layer &&
           a->n_head == b->n_head && a->n_kv_head == b->n_kv_head && a->n_embd == b->n_embd &&
           a->head_dim == b->head_dim && a->n_ffn == b->n_ffn && a->vocab_size == b->vocab_size &&
           a->seq_len == b->seq_len && a->rms_eps == b->rms_eps && a->rope_theta == b->rope_theta &&
           a->rope_type == b->rope_type && a->rope_factor == b->rope_factor &&
           a->rope_low_freq_factor == b->rope_low_freq_factor &&
           a->rope_high_freq_factor == b->rope_high_freq_factor &&
           a->rope_original_max_pos == b->rope_original_max_pos &&
           a->tie_word_embeddings == b->tie_word_embeddings && a->qkv_bias == b->qkv_bias &&
           a->o_bias == b->o_bias && a->mlp_bias == b->mlp_bias &&
           a->sliding_window == b->sliding_window;
}

/* --- config.json ---------------------------------------------------------------------------- */

typedef struct jctx {
    const cJSON *o;
    const char *what;
} jctx;

static const cJSON *item(const jctx *j, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j->o, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* 0 (set), 1 (absent or null, *out unchanged) or an error. */
static int get_int(const jctx *j, const char *key, int *out, bool required) {
    const cJSON *v = item(j, key);
    if (!v) {
        if (required) return zoff_fail(ZOFF_EFORMAT, MOD, "%s: missing key \"%s\"", j->what, key);
        return 1;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1.0;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < 0 || d > 2147483647.0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: \"%s\" must be a non-negative integer", j->what,
                         key);
    *out = (int)d;
    return 0;
}

static int get_num(const jctx *j, const char *key, double *out) {
    const cJSON *v = item(j, key);
    if (!v) return 1;
    if (!cJSON_IsNumber(v))
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: \"%s\" must be a number", j->what, key);
    *out = v->valuedouble;
    return 0;
}

static int get_bool(const jctx *j, const char *key, bool *out) {
    const cJSON *v = item(j, key);
    if (!v) return 1;
    if (!cJSON_IsBool(v))
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: \"%s\" must be true or false", j->what, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static const char *get_str(const jctx *j, const char *key) {
    const cJSON *v = item(j, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

#define TRYJ(x)                                                                                    \
    do {                                                                                           \
        int r_ = (x);                                                                              \
        if (r_ < 0) return r_;                                                                     \
    } while (0)

/* rope_scaling (transformers 4.x) or rope_parameters (5.x): {"rope_type" or "type": ...}. */
static int parse_rope(const jctx *top, const cJSON *rs, const char *field, zoff_llama_config *c) {
    if (!rs) return 0;
    if (!cJSON_IsObject(rs))
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: \"%s\" must be an object or null", top->what,
                         field);
    jctx j = {rs, top->what};
    const char *kind = get_str(&j, "rope_type");
    if (!kind) kind = get_str(&j, "type");
    double theta = 0.0;
    if (get_num(&j, "rope_theta", &theta) == 0) c->rope_theta = theta;
    if (!kind || strcmp(kind, "default") == 0) {
        c->rope_type = ZOFF_ROPE_DEFAULT;
        return 0;
    }
    double d = 0.0;
    if (strcmp(kind, "linear") == 0) {
        c->rope_type = ZOFF_ROPE_LINEAR;
    } else if (strcmp(kind, "llama3") == 0) {
        c->rope_type = ZOFF_ROPE_LLAMA3;
        if (get_num(&j, "low_freq_factor", &d) != 0 ||
            (c->rope_low_freq_factor = (float)d, get_num(&j, "high_freq_factor", &d) != 0) ||
            (c->rope_high_freq_factor = (float)d,
             get_int(&j, "original_max_position_embeddings", &c->rope_original_max_pos, true)))
            return zoff_fail(ZOFF_ECONFIG, MOD,
                             "%s: %s (llama3) needs low_freq_factor, high_freq_factor and "
                             "original_max_position_embeddings",
                             top->what, field);
    } else {
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "%s: %s.rope_type = \"%s\" is not supported (default, linear, llama3)",
                         top->what, field, kind);
    }
    if (get_num(&j, "factor", &d) != 0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: %s (%s) needs \"factor\"", top->what, field, kind);
    c->rope_factor = (float)d;
    if (get_num(&j, "attention_factor", &d) == 0 && d != 1.0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: %s.attention_factor = %g is not supported",
                         top->what, field, d);
    return 0;
}

static int parse(const jctx *j, zoff_llama_config *c) {
    const char *mt = get_str(j, "model_type");
    if (!mt) return zoff_fail(ZOFF_EFORMAT, MOD, "%s: missing key \"model_type\"", j->what);
    if (strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "qwen2"))
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "%s: model_type = \"%s\" is not a Llama-family model (llama, mistral, "
                         "qwen2)",
                         j->what, mt);
    bool qwen2 = strcmp(mt, "qwen2") == 0, mistral = strcmp(mt, "mistral") == 0;
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    TRYJ(get_int(j, "num_hidden_layers", &c->n_layer, true));
    TRYJ(get_int(j, "num_attention_heads", &c->n_head, true));
    TRYJ(get_int(j, "hidden_size", &c->n_embd, true));
    TRYJ(get_int(j, "intermediate_size", &c->n_ffn, true));
    TRYJ(get_int(j, "vocab_size", &c->vocab_size, true));
    TRYJ(get_int(j, "max_position_embeddings", &c->seq_len, true));
    c->n_kv_head = c->n_head;
    TRYJ(get_int(j, "num_key_value_heads", &c->n_kv_head, false));
    c->head_dim = c->n_head > 0 ? c->n_embd / c->n_head : 0;
    TRYJ(get_int(j, "head_dim", &c->head_dim, false));
    double d = 1e-6;
    TRYJ(get_num(j, "rms_norm_eps", &d));
    c->rms_eps = (float)d;
    d = 10000.0;
    TRYJ(get_num(j, "rope_theta", &d));
    c->rope_theta = d;
    c->rope_factor = 1.0f;
    TRYJ(parse_rope(j, item(j, "rope_scaling"), "rope_scaling", c));
    TRYJ(parse_rope(j, item(j, "rope_parameters"), "rope_parameters", c));
    c->tie_word_embeddings = false;
    TRYJ(get_bool(j, "tie_word_embeddings", &c->tie_word_embeddings));
    bool ab = false, mb = false;
    TRYJ(get_bool(j, "attention_bias", &ab));
    TRYJ(get_bool(j, "mlp_bias", &mb));
    if (qwen2 && (ab || mb))
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: qwen2 with %s = true is not a Qwen2 model",
                         j->what, ab ? "attention_bias" : "mlp_bias");
    c->qkv_bias = ab || qwen2; /* Qwen2's q, k, v projections always have biases */
    c->o_bias = ab;
    c->mlp_bias = mb;
    const char *act = get_str(j, "hidden_act");
    if (item(j, "hidden_act") && (!act || strcmp(act, "silu") != 0))
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: hidden_act = %s is not supported (silu)", j->what,
                         act ? act : "(not a string)");
    d = 0.0;
    TRYJ(get_num(j, "attention_dropout", &d));
    if (d != 0.0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: attention_dropout = %g is not supported (0)",
                         j->what, d);
    d = 1.0;
    TRYJ(get_num(j, "partial_rotary_factor", &d));
    if (d != 1.0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: partial_rotary_factor = %g is not supported (1)",
                         j->what, d);
    /* Mistral: a window when sliding_window is a number (null: none); Qwen2: only with
     * use_sliding_window; newer configs name each layer's kind in layer_types */
    int sw = mistral && !cJSON_GetObjectItemCaseSensitive(j->o, "sliding_window") ? 4096 : 0;
    TRYJ(get_int(j, "sliding_window", &sw, false)); /* MistralConfig's default: 4096 */
    bool use_sw = mistral && sw > 0;
    TRYJ(get_bool(j, "use_sliding_window", &use_sw));
    const cJSON *lt = item(j, "layer_types");
    if (lt) {
        use_sw = false;
        const cJSON *e;
        cJSON_ArrayForEach(e, lt) {
            if (!cJSON_IsString(e) || (strcmp(e->valuestring, "full_attention") &&
                                       strcmp(e->valuestring, "sliding_attention")))
                return zoff_fail(ZOFF_ECONFIG, MOD,
                                 "%s: layer_types holds %s (full_attention, sliding_attention)",
                                 j->what, cJSON_IsString(e) ? e->valuestring : "a non-string");
            use_sw |= strcmp(e->valuestring, "sliding_attention") == 0;
        }
    }
    c->sliding_window = use_sw ? sw : 0;
    if (use_sw && sw < 1)
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: sliding_window = %d with a sliding window on",
                         j->what, sw);
    return 0;
}

int zoff_llama_config_parse_json(const char *text, const char *what, zoff_llama_config *cfg) {
    cJSON *doc = cJSON_Parse(text);
    if (!doc || !cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return zoff_fail(ZOFF_EFORMAT, MOD, "%s: not a JSON object", what);
    }
    zoff_llama_config c;
    memset(&c, 0, sizeof c);
    jctx j = {doc, what};
    int rc = parse(&j, &c);
    cJSON_Delete(doc);
    if (rc) return rc;
    if ((rc = zoff_llama_config_validate(&c))) {
        char detail[512];
        snprintf(detail, sizeof detail, "%s", zoff_last_error_detail());
        return zoff_fail(rc, MOD, "%s: %s", what, detail);
    }
    *cfg = c;
    return 0;
}

static const char *arch_name(const char *model_type) {
    if (strcmp(model_type, "mistral") == 0) return "MistralForCausalLM";
    if (strcmp(model_type, "qwen2") == 0) return "Qwen2ForCausalLM";
    return "LlamaForCausalLM";
}

int zoff_llama_config_save_json(const char *path, const zoff_llama_config *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return -ENOMEM;
    const char *mt = c->model_type[0] ? c->model_type : "llama";
    bool qwen2 = strcmp(mt, "qwen2") == 0;
    cJSON *arch = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(arch_name(mt)));
    cJSON_AddStringToObject(o, "model_type", mt);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layer);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->n_head);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_head);
    cJSON_AddNumberToObject(o, "hidden_size", c->n_embd);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "intermediate_size", c->n_ffn);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->seq_len);
    cJSON_AddNumberToObject(o, "rms_norm_eps", (double)c->rms_eps);
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    if (c->rope_type == ZOFF_ROPE_DEFAULT) {
        cJSON_AddNullToObject(o, "rope_scaling");
    } else {
        cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
        cJSON_AddStringToObject(rs, "rope_type",
                                c->rope_type == ZOFF_ROPE_LINEAR ? "linear" : "llama3");
        cJSON_AddNumberToObject(rs, "factor", (double)c->rope_factor);
        if (c->rope_type == ZOFF_ROPE_LLAMA3) {
            cJSON_AddNumberToObject(rs, "low_freq_factor", (double)c->rope_low_freq_factor);
            cJSON_AddNumberToObject(rs, "high_freq_factor", (double)c->rope_high_freq_factor);
            cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                    c->rope_original_max_pos);
        }
    }
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    if (!qwen2) {
        cJSON_AddBoolToObject(o, "attention_bias", c->o_bias);
        cJSON_AddBoolToObject(o, "mlp_bias", c->mlp_bias);
    }
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddNumberToObject(o, "attention_dropout", 0.0);
    if (strcmp(mt, "mistral") == 0) {
        if (c->sliding_window)
            cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
        else
            cJSON_AddNullToObject(o, "sliding_window");
    } else if (qwen2) {
        cJSON_AddBoolToObject(o, "use_sliding_window", c->sliding_window > 0);
        if (c->sliding_window) cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
    }
    cJSON_AddStringToObject(o, "torch_dtype", "float32");
    zoff_ckpt_stamp_add_json(o); /* the step and run id of the checkpoint being written */
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return -ENOMEM;
    char tmp[4096];
    int rc = 0;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        cJSON_free(text);
        return zoff_fail(-ENAMETOOLONG, MOD, "%s: path too long", path);
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = zoff_fail(-errno, MOD, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        size_t n = strlen(text);
        bool ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
        ok = (fclose(f) == 0) && ok;
        if (!ok)
            rc = zoff_fail(-EIO, MOD, "%s: write failed", tmp);
        else if (rename(tmp, path) != 0)
            rc = zoff_fail(-errno, MOD, "%s: rename failed: %s", path, strerror(errno));
        if (rc) remove(tmp);
    }
    cJSON_free(text);
    return rc;
}
