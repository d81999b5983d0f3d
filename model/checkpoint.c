/* Checkpoint I/O for the GPT model: Hugging Face model.safetensors + config.json (read and
 * written in the Hugging Face GPT-2 layout) and llm.c's gpt2 .bin (read and written).
 *
 * Parsers treat files as untrusted: every length, offset and shape is checked before use and
 * errors name the file and the tensor or key (ZOFF_EFORMAT malformed, ZOFF_ESHAPE wrong shape,
 * ZOFF_ECONFIG bad config values). Writers go to "PATH.tmp" and rename, so a failed save never
 * destroys the previous checkpoint. Conv1D weights (c_attn, c_proj, c_fc) are stored (in, out)
 * in Hugging Face files and (out, in) in zoff's layout: they are transposed on the way. */
#include "model/model.h"
#include "core/half.h"
#include "model/checkpoint_dir.h"
#include "core/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MOD              "checkpoint"
#define ST_MAX_HEADER    (100u << 20)
#define LLMC_MODEL_MAGIC 20240326
#define LLMC_HEADER_INTS 256

/* --- config.json ------------------------------------------------------------------------- */

static int json_int(const cJSON *o, const char *what, const char *key, int *out, bool required) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        if (required) return zoff_fail(ZOFF_EFORMAT, MOD, "%s: missing key \"%s\"", what, key);
        return 1;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1.0;
    if (!cJSON_IsNumber(v) || d != (double)(int)d || d < 1 || d > INT_MAX)
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: \"%s\" must be a positive integer", what, key);
    *out = (int)d;
    return 0;
}

/* GPT2Config fields that change the computation: honoured (tie_word_embeddings) or refused. */
static int gpt_strict_fields(const cJSON *doc, const char *what, zoff_gpt_config *c) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "tie_word_embeddings");
    if (v && !cJSON_IsBool(v))
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: \"tie_word_embeddings\" must be true or false",
                         what);
    c->untied_head = v && cJSON_IsFalse(v);
    v = cJSON_GetObjectItemCaseSensitive(doc, "layer_norm_epsilon");
    if (v && (!cJSON_IsNumber(v) || v->valuedouble != 1e-5))
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: layer_norm_epsilon = %g is not supported (1e-05)",
                         what, cJSON_IsNumber(v) ? v->valuedouble : -1.0);
    v = cJSON_GetObjectItemCaseSensitive(doc, "activation_function");
    if (v && (!cJSON_IsString(v) ||
              (strcmp(v->valuestring, "gelu_new") && strcmp(v->valuestring, "gelu_pytorch_tanh"))))
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "%s: activation_function = %s is not supported (gelu_new)", what,
                         cJSON_IsString(v) ? v->valuestring : "(not a string)");
    v = cJSON_GetObjectItemCaseSensitive(doc, "n_inner");
    if (v && !cJSON_IsNull(v) && (!cJSON_IsNumber(v) || v->valuedouble != 4.0 * c->n_embd))
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "%s: n_inner = %g is not supported (null or 4 * n_embd = %d)", what,
                         cJSON_IsNumber(v) ? v->valuedouble : -1.0, 4 * c->n_embd);
    v = cJSON_GetObjectItemCaseSensitive(doc, "scale_attn_weights");
    if (v && !cJSON_IsTrue(v))
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: scale_attn_weights = false is not supported",
                         what);
    v = cJSON_GetObjectItemCaseSensitive(doc, "scale_attn_by_inverse_layer_idx");
    if (v && !cJSON_IsFalse(v))
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "%s: scale_attn_by_inverse_layer_idx = true is not supported", what);
    return 0;
}

int zoff_gpt_config_parse_json(const char *text, const char *what, zoff_gpt_config *cfg) {
    cJSON *doc = cJSON_Parse(text);
    if (!doc || !cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return zoff_fail(ZOFF_EFORMAT, MOD, "%s: not a JSON object", what);
    }
    zoff_gpt_config c;
    memset(&c, 0, sizeof c);
    int rc = json_int(doc, what, "n_layer", &c.n_layer, true);
    if (!rc) rc = json_int(doc, what, "n_head", &c.n_head, true);
    if (!rc) rc = json_int(doc, what, "n_embd", &c.n_embd, true);
    if (!rc) rc = json_int(doc, what, "vocab_size", &c.vocab_size, true);
    if (!rc) {
        rc = json_int(doc, what, "n_positions", &c.seq_len, false);
        if (rc == 1) rc = json_int(doc, what, "n_ctx", &c.seq_len, false);
        if (rc == 1) rc = json_int(doc, what, "seq_len", &c.seq_len, false);
        if (rc == 1)
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: missing key \"n_positions\" (or n_ctx)", what);
    }
    if (!rc) rc = gpt_strict_fields(doc, what, &c);
    cJSON_Delete(doc);
    if (rc) return rc;
    if ((rc = zoff_gpt_config_validate(&c))) {
        char detail[512];
        snprintf(detail, sizeof detail, "%s", zoff_last_error_detail());
        return zoff_fail(rc, MOD, "%s: %s", what, detail);
    }
    *cfg = c;
    return 0;
}

static int read_file(const char *path, char **data, size_t *size, size_t limit) {
    FILE *f = fopen(path, "rb");
    if (!f) return zoff_fail(-errno, MOD, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > limit + 8192) {
                free(buf);
                fclose(f);
                return zoff_fail(ZOFF_EFORMAT, MOD, "%s: larger than %zu bytes", path, limit);
            }
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return -ENOMEM;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return zoff_fail(-EIO, MOD, "%s: read error", path);
    }
    buf[n] = 0;
    *data = buf;
    *size = n;
    return 0;
}

int zoff_gpt_config_load_json(const char *path, zoff_gpt_config *cfg) {
    char *text = NULL;
    size_t n = 0;
    int rc = read_file(path, &text, &n, 16u << 20);
    if (rc) return rc;
    rc = zoff_gpt_config_parse_json(text, path, cfg);
    free(text);
    return rc;
}

/* Writes `size` bytes to path via path.tmp + rename. */
static int write_atomic(const char *path, const void *a, size_t na, const void *b, size_t nb) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return zoff_fail(-ENAMETOOLONG, MOD, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return zoff_fail(-errno, MOD, "%s: cannot create: %s", tmp, strerror(errno));
    int ok = fwrite(a, 1, na, f) == na && (!nb || fwrite(b, 1, nb, f) == nb);
    ok = fflush(f) == 0 && ok;
    int err = errno;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        unlink(tmp);
        return zoff_fail(-(err ? err : EIO), MOD, "%s: write failed: %s", tmp,
                         strerror(err ? err : EIO));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        return zoff_fail(-err, MOD, "%s: rename from %s failed: %s", path, tmp, strerror(err));
    }
    return 0;
}

int zoff_gpt_config_save_json(const char *path, const zoff_gpt_config *cfg) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return -ENOMEM;
    cJSON *arch = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("GPT2LMHeadModel"));
    cJSON_AddStringToObject(o, "model_type", "gpt2");
    cJSON_AddNumberToObject(o, "n_layer", cfg->n_layer);
    cJSON_AddNumberToObject(o, "n_head", cfg->n_head);
    cJSON_AddNumberToObject(o, "n_embd", cfg->n_embd);
    cJSON_AddNumberToObject(o, "vocab_size", cfg->vocab_size);
    cJSON_AddNumberToObject(o, "n_positions", cfg->seq_len);
    cJSON_AddNumberToObject(o, "n_ctx", cfg->seq_len);
    cJSON_AddStringToObject(o, "activation_function", "gelu_new");
    cJSON_AddNumberToObject(o, "layer_norm_epsilon", 1e-5);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", !cfg->untied_head);
    cJSON_AddNullToObject(o, "n_inner");
    zoff_ckpt_stamp_add_json(o); /* the step and run id of the checkpoint being written */
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return -ENOMEM;
    int rc = write_atomic(path, text, strlen(text), "\n", 1);
    cJSON_free(text);
    return rc;
}

/* --- safetensors -------------------------------------------------------------------------- */

/* The shape a tensor has in a Hugging Face file. */
static void hf_shape(const zoff_tensor *t, int64_t shape[2]) {
    shape[0] = t->shape[0];
    shape[1] = t->shape[1];
    if (t->hf_transposed) {
        shape[0] = t->shape[1];
        shape[1] = t->shape[0];
    }
}

static int st_dtype(const char *s, zoff_dtype *t) {
    if (strcmp(s, "F32") == 0)
        *t = ZOFF_F32;
    else if (strcmp(s, "F16") == 0)
        *t = ZOFF_F16;
    else if (strcmp(s, "BF16") == 0)
        *t = ZOFF_BF16;
    else
        return -1;
    return 0;
}

static float load_elem(const uint8_t *p, zoff_dtype t, size_t i) {
    if (t == ZOFF_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return t == ZOFF_F16 ? zoff_f16_to_f32(h) : zoff_bf16_to_f32(h);
}

/* Weights or optimizer state with NaN/Inf poison every step after them: refused at load. */
static int check_finite(const char *what, const char *tensor, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return zoff_fail(ZOFF_EFORMAT, MOD,
                             "%s: tensor \"%s\": element %zu is %s: refusing non-finite values",
                             what, tensor, i, isnan(x[i]) ? "NaN" : "infinite");
    return 0;
}

static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (d < 0 || d > 9007199254740992.0 || d != (double)(uint64_t)d) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* found NULL: every tensor of the layout must be in this file (params zeroed first); else one
 * shard of several: tensors absent here are skipped, those present marked in found. */
static int st_parse(const uint8_t *data, size_t size, const char *what, const zoff_layout *layout,
                    float *params, uint8_t *found) {
    if (size < 8)
        return zoff_fail(ZOFF_EFORMAT, MOD, "%s: truncated: %zu bytes, no header length", what,
                         size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | data[i];
    if (hlen > size - 8 || hlen > ST_MAX_HEADER)
        return zoff_fail(ZOFF_EFORMAT, MOD,
                         "%s: header length %" PRIu64 " exceeds the file (%zu bytes): truncated "
                         "or not safetensors",
                         what, hlen, size);
    cJSON *hdr = cJSON_ParseWithLength((const char *)data + 8, (size_t)hlen);
    if (!hdr || !cJSON_IsObject(hdr)) {
        cJSON_Delete(hdr);
        return zoff_fail(ZOFF_EFORMAT, MOD, "%s: header is not a JSON object", what);
    }
    const uint8_t *body = data + 8 + hlen;
    uint64_t body_size = size - 8 - hlen;
    int rc = 0;
    if (!found) memset(params, 0, layout->total * sizeof *params);
    for (int ti = 0; ti < layout->n_tensors && !rc; ti++) {
        const zoff_tensor *t = &layout->tensors[ti];
        char alt[128];
        snprintf(alt, sizeof alt, "transformer.%s", t->name);
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(hdr, t->name);
        if (!e) e = cJSON_GetObjectItemCaseSensitive(hdr, alt);
        if (!e && found) continue;
        if (!e) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: missing tensor \"%s\"", what, t->name);
            break;
        }
        if (found && found[ti]) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: tensor \"%s\" is in two shards", what, t->name);
            break;
        }
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        zoff_dtype type;
        if (!cJSON_IsString(dt) || st_dtype(dt->valuestring, &type) != 0) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: tensor \"%s\": dtype %s is not F32, F16 or BF16",
                           what, t->name, cJSON_IsString(dt) ? dt->valuestring : "(missing)");
            break;
        }
        int64_t want[2];
        hf_shape(t, want);
        int nd = cJSON_IsArray(sh) ? cJSON_GetArraySize(sh) : -1;
        bool shape_ok = nd == t->ndim;
        uint64_t dims[2] = {0, 0};
        for (int d = 0; shape_ok && d < nd; d++)
            shape_ok =
                json_u64(cJSON_GetArrayItem(sh, d), &dims[d]) == 0 && dims[d] == (uint64_t)want[d];
        if (!shape_ok) {
            char got[96] = "(not a shape)";
            if (nd >= 0) {
                char *tx = cJSON_PrintUnformatted(sh);
                if (tx) snprintf(got, sizeof got, "%s", tx);
                cJSON_free(tx);
            }
            if (t->ndim == 2)
                rc = zoff_fail(ZOFF_ESHAPE, MOD,
                               "%s: tensor \"%s\": shape %s, expected [%" PRId64 ",%" PRId64 "]",
                               what, t->name, got, want[0], want[1]);
            else
                rc = zoff_fail(ZOFF_ESHAPE, MOD,
                               "%s: tensor \"%s\": shape %s, expected [%" PRId64 "]", what, t->name,
                               got, want[0]);
            break;
        }
        uint64_t b = 0, en = 0;
        if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 ||
            json_u64(cJSON_GetArrayItem(of, 0), &b) || json_u64(cJSON_GetArrayItem(of, 1), &en) ||
            b > en) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: tensor \"%s\": bad data_offsets", what, t->name);
            break;
        }
        uint64_t need = (uint64_t)t->numel * zoff_dtype_size(type);
        if (en - b != need) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD,
                           "%s: tensor \"%s\": data_offsets span %" PRIu64
                           " bytes, shape needs %" PRIu64,
                           what, t->name, en - b, need);
            break;
        }
        if (en > body_size) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD,
                           "%s: tensor \"%s\": data ends at byte %" PRIu64 " of a %" PRIu64
                           "-byte data section: file truncated",
                           what, t->name, en, body_size);
            break;
        }
        const uint8_t *src = body + b;
        float *dst = params + t->offset;
        if (t->hf_transposed) {
            size_t out = (size_t)t->shape[0], in = (size_t)t->shape[1]; /* file (in, out) */
            for (size_t i = 0; i < in; i++)
                for (size_t o = 0; o < out; o++)
                    dst[o * in + i] = load_elem(src, type, i * out + o);
        } else {
            for (size_t i = 0; i < t->numel; i++)
                dst[i] = load_elem(src, type, i);
        }
        rc = check_finite(what, t->name, dst, t->numel);
        if (found) found[ti] = 1;
    }
    cJSON_Delete(hdr);
    return rc;
}

int zoff_safetensors_parse(const uint8_t *data, size_t size, const char *what,
                           const zoff_layout *layout, float *params) {
    return st_parse(data, size, what, layout, params, NULL);
}

static int map_file(const char *path, const uint8_t **data, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return zoff_fail(-errno, MOD, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return zoff_fail(-e, MOD, "%s: stat failed: %s", path, strerror(e));
    }
    *size = (size_t)sb.st_size;
    if (*size == 0) {
        close(fd);
        *data = NULL;
        return 0;
    }
    void *p = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) return zoff_fail(-e, MOD, "%s: mmap failed: %s", path, strerror(e));
    *data = p;
    return 0;
}

static int st_load(const char *path, const zoff_layout *layout, float *params, uint8_t *found) {
    const uint8_t *data = NULL;
    size_t size = 0;
    int rc = map_file(path, &data, &size);
    if (rc) return rc;
    static const uint8_t empty[1];
    rc = st_parse(size ? data : empty, size, path, layout, params, found);
    if (size) munmap((void *)data, size);
    return rc;
}

int zoff_safetensors_load(const char *path, const zoff_layout *layout, float *params) {
    return st_load(path, layout, params, NULL);
}

/* A sharded checkpoint: index (model.safetensors.index.json) maps each tensor name to a shard
 * file beside it. Each shard is mapped and converted straight into params in turn, so host
 * memory never holds more than params and one mapped shard. */
int zoff_safetensors_load_sharded(const char *index, const zoff_layout *layout, float *params) {
    char *text = NULL;
    size_t n = 0;
    int rc = read_file(index, &text, &n, 64u << 20);
    if (rc) return rc;
    cJSON *doc = cJSON_Parse(text);
    free(text);
    const cJSON *map = doc ? cJSON_GetObjectItemCaseSensitive(doc, "weight_map") : NULL;
    uint8_t *found = calloc((size_t)layout->n_tensors, 1);
    if (!found)
        rc = -ENOMEM;
    else if (!cJSON_IsObject(map))
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: no \"weight_map\" object", index);
    memset(params, 0, layout->total * sizeof *params);
    /* each distinct shard once, in the index's order of first mention */
    const cJSON *e;
    int k = 0;
    cJSON_ArrayForEach(e, map) {
        if (rc) break;
        k++;
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || !e->valuestring[0]) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: weight_map[\"%s\"] is not a shard file name",
                           index, e->string);
            break;
        }
        bool seen = false;
        const cJSON *p;
        int j = 0;
        cJSON_ArrayForEach(p, map) {
            if (++j >= k) break;
            if (cJSON_IsString(p) && strcmp(p->valuestring, e->valuestring) == 0) seen = true;
        }
        if (seen) continue;
        char shard[PATH_MAX];
        const char *slash = strrchr(index, '/');
        if (snprintf(shard, sizeof shard, "%.*s%s", slash ? (int)(slash - index + 1) : 0, index,
                     e->valuestring) >= (int)sizeof shard) {
            rc = zoff_fail(-ENAMETOOLONG, MOD, "%s: shard path too long", index);
            break;
        }
        rc = st_load(shard, layout, params, found);
    }
    for (int ti = 0; !rc && ti < layout->n_tensors; ti++)
        if (!found[ti])
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: missing tensor \"%s\" (in no shard)", index,
                           layout->tensors[ti].name);
    free(found);
    cJSON_Delete(doc);
    return rc;
}

/* Tensors [first, last) of the layout into one safetensors file, stored as `dtype`. */
static int st_write(const char *path, const zoff_layout *layout, const float *params, int first,
                    int last, zoff_dtype dtype) {
    size_t es = zoff_dtype_size(dtype);
    const char *dname = dtype == ZOFF_F32 ? "F32" : dtype == ZOFF_BF16 ? "BF16" : "F16";
    cJSON *hdr = cJSON_CreateObject();
    if (!hdr) return -ENOMEM;
    cJSON *meta = cJSON_AddObjectToObject(hdr, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    zoff_ckpt_stamp_add_json(meta);
    uint64_t off = 0;
    for (int ti = first; ti < last; ti++) {
        const zoff_tensor *t = &layout->tensors[ti];
        cJSON *e = cJSON_AddObjectToObject(hdr, t->name);
        cJSON_AddStringToObject(e, "dtype", dname);
        int64_t s[2];
        hf_shape(t, s);
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)s[d]));
        cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        off += (uint64_t)t->numel * es;
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
    }
    char *text = cJSON_PrintUnformatted(hdr);
    cJSON_Delete(hdr);
    if (!text) return -ENOMEM;
    size_t tl = strlen(text), hl = (tl + 7) / 8 * 8; /* pad the header with spaces to 8 */
    size_t total = 8 + hl + (size_t)off;
    uint8_t *buf = malloc(total);
    if (!buf) {
        cJSON_free(text);
        return -ENOMEM;
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, text, tl);
    memset(buf + 8 + tl, ' ', hl - tl);
    cJSON_free(text);
    uint8_t *body = buf + 8 + hl; /* 8-aligned: hl is a multiple of 8 */
    size_t k = 0;                 /* elements written */
    for (int ti = first; ti < last; ti++) {
        const zoff_tensor *t = &layout->tensors[ti];
        const float *src = params + t->offset;
        if (t->hf_transposed) {
            size_t out = (size_t)t->shape[0], in = (size_t)t->shape[1];
            for (size_t i = 0; i < in; i++)
                for (size_t o = 0; o < out; o++)
                    zoff_store_from_f32(body, dtype, k + i * out + o, src[o * in + i]);
        } else if (dtype == ZOFF_F32) {
            memcpy(body + k * 4, src, t->numel * sizeof(float));
        } else {
            for (size_t i = 0; i < t->numel; i++)
                zoff_store_from_f32(body, dtype, k + i, src[i]);
        }
        k += t->numel;
    }
    int rc = write_atomic(path, buf, total, NULL, 0);
    free(buf);
    return rc;
}

int zoff_safetensors_save(const char *path, const zoff_layout *layout, const float *params) {
    return st_write(path, layout, params, 0, layout->n_tensors, ZOFF_F32);
}

void zoff_save_options_default(zoff_save_options *o) {
    o->dtype = ZOFF_F32;
    o->max_shard_bytes = 5000000000ull; /* transformers' "5GB" */
}

int zoff_safetensors_save_dir(const char *dir, const zoff_layout *layout, const float *params,
                              const zoff_save_options *o) {
    size_t es = zoff_dtype_size(o->dtype);
    if (!es) return zoff_fail(-EINVAL, MOD, "%s: save dtype %d is not a dtype", dir, o->dtype);
    /* shard boundaries: a new shard when the next tensor would pass the limit */
    int *start = malloc(((size_t)layout->n_tensors + 1) * sizeof *start), n_shards = 0;
    if (!start) return -ENOMEM;
    uint64_t cur = 0, total_bytes = 0;
    for (int ti = 0; ti < layout->n_tensors; ti++) {
        uint64_t b = (uint64_t)layout->tensors[ti].numel * es;
        if (ti == 0 || (cur > 0 && cur + b > o->max_shard_bytes)) {
            start[n_shards++] = ti;
            cur = 0;
        }
        cur += b;
        total_bytes += b;
    }
    start[n_shards] = layout->n_tensors;
    char path[PATH_MAX + 64], single[PATH_MAX + 64], index[PATH_MAX + 64];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    int rc = 0;
    if (n_shards == 1) {
        rc = st_write(single, layout, params, 0, layout->n_tensors, o->dtype);
        if (!rc) remove(index); /* a stale index from an earlier sharded save */
        free(start);
        return rc;
    }
    cJSON *doc = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(doc, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total_bytes);
    cJSON *map = cJSON_AddObjectToObject(doc, "weight_map");
    for (int k = 0; !rc && k < n_shards; k++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, n_shards);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        rc = st_write(path, layout, params, start[k], start[k + 1], o->dtype);
        for (int ti = start[k]; ti < start[k + 1]; ti++)
            cJSON_AddStringToObject(map, layout->tensors[ti].name, name);
    }
    char *text = rc ? NULL : cJSON_Print(doc);
    cJSON_Delete(doc);
    free(start);
    if (rc) return rc;
    if (!text) return -ENOMEM;
    rc = write_atomic(index, text, strlen(text), "\n", 1);
    cJSON_free(text);
    if (!rc) remove(single); /* it would be read instead of the shards */
    return rc;
}

/* --- llm.c .bin --------------------------------------------------------------------------- */

/* llm.c's parameter order: each kind over all layers, then the next kind. */
static const zoff_gpt_tensor_kind llmc_order[16] = {
    ZOFF_GPT_WTE,      ZOFF_GPT_WPE,      ZOFF_GPT_LN1_W,     ZOFF_GPT_LN1_B,
    ZOFF_GPT_QKV_W,    ZOFF_GPT_QKV_B,    ZOFF_GPT_ATTPROJ_W, ZOFF_GPT_ATTPROJ_B,
    ZOFF_GPT_LN2_W,    ZOFF_GPT_LN2_B,    ZOFF_GPT_FC_W,      ZOFF_GPT_FC_B,
    ZOFF_GPT_FCPROJ_W, ZOFF_GPT_FCPROJ_B, ZOFF_GPT_LNF_W,     ZOFF_GPT_LNF_B};

int zoff_llmc_load_gpt(const char *path, zoff_gpt_config *cfg, const zoff_layout *layout,
                       float *params) {
    FILE *f = fopen(path, "rb");
    if (!f) return zoff_fail(-errno, MOD, "%s: cannot open: %s", path, strerror(errno));
    int32_t h[LLMC_HEADER_INTS];
    int rc = 0;
    float *row = NULL;
    if (fread(h, sizeof(int32_t), LLMC_HEADER_INTS, f) != LLMC_HEADER_INTS) {
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: truncated: no 1024-byte llm.c header", path);
        goto out;
    }
    if (h[0] != LLMC_MODEL_MAGIC) {
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: bad magic %d (an llm.c model file has %d)", path,
                       h[0], LLMC_MODEL_MAGIC);
        goto out;
    }
    if (h[1] != 3 && h[1] != 5) {
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: version %d is not supported (3: fp32, 5: bf16)",
                       path, h[1]);
        goto out;
    }
    zoff_gpt_config c = {
        .seq_len = h[2], .vocab_size = h[3], .n_layer = h[4], .n_head = h[5], .n_embd = h[6]};
    int Vp = h[7] > 0 ? h[7] : h[3];
    if ((rc = zoff_gpt_config_validate(&c)) || Vp < c.vocab_size) {
        char d[400];
        snprintf(d, sizeof d, "%s", rc ? zoff_last_error_detail() : "padded vocab < vocab");
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: header: %s", path, d);
        goto out;
    }
    if (cfg) *cfg = c;
    if (!params) goto out;
    if (layout->n_groups != c.n_layer + 2 ||
        zoff_gpt_layout_find(layout, ZOFF_GPT_WTE, 0)->shape[0] != c.vocab_size ||
        zoff_gpt_layout_find(layout, ZOFF_GPT_WPE, 0)->shape[0] != c.seq_len ||
        zoff_gpt_layout_find(layout, ZOFF_GPT_WTE, 0)->shape[1] != c.n_embd) {
        rc = zoff_fail(ZOFF_ESHAPE, MOD, "%s: model shape does not match the layout", path);
        goto out;
    }
    size_t es = h[1] == 3 ? 4 : 2;
    zoff_dtype type = h[1] == 3 ? ZOFF_F32 : ZOFF_BF16;
    memset(params, 0, layout->total * sizeof *params);
    size_t C = (size_t)c.n_embd;
    size_t rows = (size_t)Vp;
    if ((size_t)c.seq_len > rows) rows = (size_t)c.seq_len;
    if (4 * C > rows) rows = 4 * C;
    row = malloc(rows * C * es); /* the largest tensor */
    if (!row) {
        rc = -ENOMEM;
        goto out;
    }
    for (int k = 0; k < 16; k++) {
        zoff_gpt_tensor_kind kind = llmc_order[k];
        bool per_layer = kind != ZOFF_GPT_WTE && kind != ZOFF_GPT_WPE && kind != ZOFF_GPT_LNF_W &&
                         kind != ZOFF_GPT_LNF_B;
        for (int l = 0; l < (per_layer ? c.n_layer : 1); l++) {
            const zoff_tensor *t = zoff_gpt_layout_find(layout, kind, l);
            size_t n = kind == ZOFF_GPT_WTE ? (size_t)Vp * C : t->numel; /* wte is padded */
            if (fread(row, es, n, f) != n) {
                rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: truncated in tensor \"%s\"", path, t->name);
                goto out;
            }
            for (size_t i = 0; i < t->numel; i++)
                params[t->offset + i] = load_elem((const uint8_t *)row, type, i);
            if ((rc = check_finite(path, t->name, params + t->offset, t->numel))) goto out;
        }
    }
out:
    free(row);
    fclose(f);
    return rc;
}

int zoff_llmc_save_gpt(const char *path, const zoff_gpt_config *cfg, const zoff_layout *layout,
                       const float *params) {
    if (cfg->untied_head)
        return zoff_fail(ZOFF_ECONFIG, MOD, "%s: llm.c files hold tied GPT-2s only", path);
    int32_t h[LLMC_HEADER_INTS] = {0};
    h[0] = LLMC_MODEL_MAGIC;
    h[1] = 3;
    h[2] = cfg->seq_len;
    h[3] = cfg->vocab_size;
    h[4] = cfg->n_layer;
    h[5] = cfg->n_head;
    h[6] = cfg->n_embd;
    h[7] = cfg->vocab_size;
    float *body = malloc(layout->n_params * sizeof(float));
    if (!body) return -ENOMEM;
    size_t n = 0;
    for (int k = 0; k < 16; k++) {
        zoff_gpt_tensor_kind kind = llmc_order[k];
        bool per_layer = kind != ZOFF_GPT_WTE && kind != ZOFF_GPT_WPE && kind != ZOFF_GPT_LNF_W &&
                         kind != ZOFF_GPT_LNF_B;
        for (int l = 0; l < (per_layer ? cfg->n_layer : 1); l++) {
            const zoff_tensor *t = zoff_gpt_layout_find(layout, kind, l);
            memcpy(body + n, params + t->offset, t->numel * sizeof(float));
            n += t->numel;
        }
    }
    int rc = write_atomic(path, h, sizeof h, body, n * sizeof(float));
    free(body);
    return rc;
}

/* --- directory checkpoints ----------------------------------------------------------------- */

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int zoff_model_checkpoint_save(zoff_model *m, const char *dir, const float *master) {
    return zoff_model_checkpoint_save_opts(m, dir, master, NULL);
}

int zoff_model_checkpoint_save_opts(zoff_model *m, const char *dir, const float *master,
                                    const zoff_save_options *opts) {
    int rc = zoff_mkdirs(dir);
    if (rc) return rc;
    const zoff_layout *l = zoff_model_get_layout(m);
    float *p = NULL;
    if (!master) { /* no optimizer copy: the device weights, widened */
        if (!(p = malloc(l->total * sizeof *p))) return -ENOMEM;
        rc = zoff_model_params_to_host(m, p);
        master = p;
    }
    char path[PATH_MAX];
    zoff_save_options def;
    zoff_save_options_default(&def);
    if (!rc) rc = zoff_safetensors_save_dir(dir, l, master, opts ? opts : &def);
    if (!rc) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        rc = zoff_llama_get_config(m) ? zoff_llama_config_save_json(path, zoff_llama_get_config(m))
                                      : zoff_gpt_config_save_json(path, zoff_gpt_get_config(m));
    }
    free(p);
    return rc;
}

/* Resolves a checkpoint path to its weights file and config file (NULL for .bin). */
static int resolve(const char *path, char *weights, char *config) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return zoff_fail(-errno, MOD, "%s: no such checkpoint (a directory, .safetensors or .bin)",
                         path);
    if (is_dir(path)) {
        snprintf(weights, PATH_MAX, "%s/model.safetensors", path);
        snprintf(config, PATH_MAX, "%s/config.json", path);
        char index[PATH_MAX];
        snprintf(index, sizeof index, "%s.index.json", weights); /* a sharded checkpoint */
        bool w = stat(weights, &sb) == 0 || stat(index, &sb) == 0, c = stat(config, &sb) == 0;
        if (!w || !c)
            return zoff_fail(ZOFF_EFORMAT, MOD,
                             "%s: incomplete checkpoint: %s missing (a checkpoint folder holds "
                             "config.json and model.safetensors, or its shards and their "
                             "model.safetensors.index.json)",
                             path,
                             !w && !c ? "config.json, model.safetensors"
                             : !w     ? "model.safetensors"
                                      : "config.json");
        return 0;
    }
    if (ends_with(path, ".bin")) {
        snprintf(weights, PATH_MAX, "%s", path);
        config[0] = 0;
        return 0;
    }
    snprintf(weights, PATH_MAX, "%s", path);
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(config, PATH_MAX, "%.*s/config.json", (int)(slash - path), path);
    else
        snprintf(config, PATH_MAX, "config.json");
    return 0;
}

int zoff_checkpoint_arch(const char *path, char *arch, size_t n) {
    char weights[PATH_MAX], config[PATH_MAX];
    int rc = resolve(path, weights, config);
    if (rc) return rc;
    if (!config[0]) { /* llm.c .bin */
        snprintf(arch, n, "gpt2");
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    if ((rc = read_file(config, &text, &len, 16u << 20))) return rc;
    cJSON *doc = cJSON_Parse(text);
    free(text);
    const cJSON *mt = doc ? cJSON_GetObjectItemCaseSensitive(doc, "model_type") : NULL;
    const cJSON *ar = doc ? cJSON_GetObjectItemCaseSensitive(doc, "architectures") : NULL;
    const char *name = cJSON_IsString(mt) ? mt->valuestring : NULL;
    const char *a0 = cJSON_IsArray(ar) && cJSON_IsString(cJSON_GetArrayItem(ar, 0))
                         ? cJSON_GetArrayItem(ar, 0)->valuestring
                         : NULL;
    if (!doc || !cJSON_IsObject(doc))
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: not a JSON object", config);
    else if (name && strcmp(name, "gpt2") == 0)
        snprintf(arch, n, "gpt2");
    else if (name && (!strcmp(name, "llama") || !strcmp(name, "mistral") || !strcmp(name, "qwen2")))
        snprintf(arch, n, "llama");
    else if (name)
        rc = zoff_fail(ZOFF_ECONFIG, MOD,
                       "%s: model_type = \"%s\" is not supported (gpt2, llama, mistral, qwen2)",
                       config, name);
    else if (a0 && !strcmp(a0, "GPT2LMHeadModel"))
        snprintf(arch, n, "gpt2");
    else if (a0 && (!strcmp(a0, "LlamaForCausalLM") || !strcmp(a0, "MistralForCausalLM") ||
                    !strcmp(a0, "Qwen2ForCausalLM")))
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: architectures = %s but no \"model_type\"", config,
                       a0);
    else if (a0)
        rc = zoff_fail(ZOFF_ECONFIG, MOD, "%s: architectures = %s is not supported", config, a0);
    else
        snprintf(arch, n, "gpt2"); /* zoff's own early GPT configs carry neither */
    cJSON_Delete(doc);
    return rc;
}

int zoff_llama_checkpoint_config(const char *path, zoff_llama_config *cfg) {
    char weights[PATH_MAX], config[PATH_MAX];
    int rc = resolve(path, weights, config);
    if (rc) return rc;
    if (!config[0])
        return zoff_fail(ZOFF_EFORMAT, MOD, "%s: an llm.c file holds a GPT-2, not a Llama", path);
    char *text = NULL;
    size_t len = 0;
    if ((rc = read_file(config, &text, &len, 16u << 20))) return rc;
    rc = zoff_llama_config_parse_json(text, config, cfg);
    free(text);
    return rc;
}

/* The weights of a directory checkpoint: model.safetensors, or the sharded index beside it. */
static int load_weights(const char *weights, const zoff_layout *l, float *host) {
    struct stat sb;
    if (stat(weights, &sb) != 0 && ends_with(weights, "/model.safetensors")) {
        char index[PATH_MAX + 16];
        snprintf(index, sizeof index, "%s.index.json", weights);
        if (stat(index, &sb) == 0) return zoff_safetensors_load_sharded(index, l, host);
    }
    return zoff_safetensors_load(weights, l, host);
}

int zoff_gpt_checkpoint_config(const char *path, zoff_gpt_config *cfg) {
    char weights[PATH_MAX], config[PATH_MAX];
    int rc = resolve(path, weights, config);
    if (rc) return rc;
    if (!config[0]) return zoff_llmc_load_gpt(weights, cfg, NULL, NULL);
    return zoff_gpt_config_load_json(config, cfg);
}

int zoff_model_checkpoint_read(zoff_model *m, const char *path, float *host, bool to_device) {
    char weights[PATH_MAX], config[PATH_MAX];
    int rc = resolve(path, weights, config);
    if (rc) return rc;
    const zoff_llama_config *lc = zoff_llama_get_config(m);
    if (lc) {
        zoff_llama_config c;
        if ((rc = zoff_llama_checkpoint_config(path, &c))) return rc;
        if (!zoff_llama_config_equal(&c, lc))
            return zoff_fail(ZOFF_ESHAPE, MOD,
                             "%s: the checkpoint's config.json differs from the model's "
                             "(layers %d/%d, width %d/%d, heads %d:%d/%d:%d, vocab %d/%d)",
                             path, c.n_layer, lc->n_layer, c.n_embd, lc->n_embd, c.n_head,
                             c.n_kv_head, lc->n_head, lc->n_kv_head, c.vocab_size, lc->vocab_size);
        rc = load_weights(weights, zoff_model_get_layout(m), host);
        if (!rc && to_device) rc = zoff_model_params_from_host(m, host);
        return rc;
    }
    zoff_gpt_config c;
    rc = zoff_gpt_checkpoint_config(path, &c);
    if (rc) return rc;
    const zoff_gpt_config *mc = zoff_gpt_get_config(m);
    if (!mc) return zoff_fail(ZOFF_ECONFIG, MOD, "%s: a GPT-2 checkpoint, but the model is %s",
                              path, zoff_model_arch(m));
    if (c.n_layer != mc->n_layer || c.n_head != mc->n_head || c.n_embd != mc->n_embd ||
        c.vocab_size != mc->vocab_size || c.seq_len != mc->seq_len ||
        c.untied_head != mc->untied_head)
        return zoff_fail(ZOFF_ESHAPE, MOD,
                         "%s: checkpoint is n_layer=%d n_head=%d n_embd=%d vocab_size=%d "
                         "seq_len=%d%s but the model is %d/%d/%d/%d/%d%s",
                         path, c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.seq_len,
                         c.untied_head ? " (untied head)" : "", mc->n_layer, mc->n_head, mc->n_embd,
                         mc->vocab_size, mc->seq_len, mc->untied_head ? " (untied head)" : "");
    const zoff_layout *l = zoff_model_get_layout(m);
    rc = config[0] ? load_weights(weights, l, host) : zoff_llmc_load_gpt(weights, NULL, l, host);
    if (!rc && to_device) rc = zoff_model_params_from_host(m, host);
    return rc;
}

int zoff_model_checkpoint_load(zoff_model *m, const char *path) {
    float *p = malloc(zoff_model_get_layout(m)->total * sizeof *p);
    if (!p) return -ENOMEM;
    int rc = zoff_model_checkpoint_read(m, path, p, true);
    free(p);
    return rc;
}

/* --- optimizer state ----------------------------------------------------------------------- */

/* optimizer.safetensors: "adamw.m" and "adamw.v", F32 [n] each over the flat layout, with
 * the step and the loss scale in __metadata__ (safetensors metadata values are strings). */
int zoff_optimizer_state_save(const char *path, const float *m, const float *v, size_t n, int step,
                              float loss_scale) {
    cJSON *hdr = cJSON_CreateObject();
    if (!hdr) return -ENOMEM;
    cJSON *meta = cJSON_AddObjectToObject(hdr, "__metadata__");
    char text[64];
    cJSON_AddStringToObject(meta, "format", "zoff-adamw");
    snprintf(text, sizeof text, "%d", step);
    cJSON_AddStringToObject(meta, "step", text);
    snprintf(text, sizeof text, "%.9g", loss_scale);
    cJSON_AddStringToObject(meta, "loss_scale", text);
    zoff_ckpt_stamp_add_json(meta);
    const char *names[2] = {"adamw.m", "adamw.v"};
    for (int k = 0; k < 2; k++) {
        cJSON *e = cJSON_AddObjectToObject(hdr, names[k]);
        cJSON_AddStringToObject(e, "dtype", "F32");
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)n));
        cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(k * n * 4)));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)((k + 1) * n * 4)));
    }
    char *json = cJSON_PrintUnformatted(hdr);
    cJSON_Delete(hdr);
    if (!json) return -ENOMEM;
    size_t tl = strlen(json), hl = (tl + 7) / 8 * 8, total = 8 + hl + 2 * n * 4;
    uint8_t *buf = malloc(total);
    if (!buf) {
        cJSON_free(json);
        return -ENOMEM;
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, json, tl);
    memset(buf + 8 + tl, ' ', hl - tl);
    cJSON_free(json);
    memcpy(buf + 8 + hl, m, n * 4);
    memcpy(buf + 8 + hl + n * 4, v, n * 4);
    int rc = write_atomic(path, buf, total, NULL, 0);
    free(buf);
    return rc;
}

int zoff_optimizer_state_load(const char *path, float *m, float *v, size_t n, int *step,
                              float *loss_scale) {
    const uint8_t *data = NULL;
    size_t size = 0;
    int rc = map_file(path, &data, &size);
    if (rc) return rc;
    cJSON *hdr = NULL;
    uint64_t hlen = 0;
    if (size < 8) {
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: truncated: no header length", path);
        goto out;
    }
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | data[i];
    if (hlen > size - 8 || hlen > ST_MAX_HEADER) {
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: header length exceeds the file: truncated", path);
        goto out;
    }
    hdr = cJSON_ParseWithLength((const char *)data + 8, (size_t)hlen);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(hdr, "__metadata__");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(meta, "step");
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(meta, "loss_scale");
    if (!cJSON_IsObject(hdr) || !cJSON_IsString(st) || !cJSON_IsString(ls)) {
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: not a zoff optimizer state (no step/loss_scale)",
                       path);
        goto out;
    }
    char *end;
    long sv = strtol(st->valuestring, &end, 10);
    float lv = strtof(ls->valuestring, NULL);
    if (*end || sv < 0 || sv > INT_MAX || !(lv > 0.0f)) {
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: bad step or loss_scale in the metadata", path);
        goto out;
    }
    const char *names[2] = {"adamw.m", "adamw.v"};
    float *dst[2] = {m, v};
    const uint8_t *body = data + 8 + hlen;
    uint64_t body_size = size - 8 - hlen;
    for (int k = 0; k < 2; k++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(hdr, names[k]);
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        uint64_t dim = 0, b = 0, en = 0;
        if (!e || !cJSON_IsString(dt) || strcmp(dt->valuestring, "F32") != 0 ||
            !cJSON_IsArray(sh) || cJSON_GetArraySize(sh) != 1 ||
            json_u64(cJSON_GetArrayItem(sh, 0), &dim) || !cJSON_IsArray(of) ||
            cJSON_GetArraySize(of) != 2 || json_u64(cJSON_GetArrayItem(of, 0), &b) ||
            json_u64(cJSON_GetArrayItem(of, 1), &en)) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: tensor \"%s\" missing or not F32 [n]", path,
                           names[k]);
            goto out;
        }
        if (dim != n || en < b || en - b != (uint64_t)n * 4) {
            rc = zoff_fail(ZOFF_ESHAPE, MOD,
                           "%s: tensor \"%s\" has %" PRIu64 " elements, the model needs %zu", path,
                           names[k], dim, n);
            goto out;
        }
        if (en > body_size) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: tensor \"%s\": file truncated", path, names[k]);
            goto out;
        }
        memcpy(dst[k], body + b, n * 4);
        if ((rc = check_finite(path, names[k], dst[k], n))) goto out;
        for (size_t i = 0; k == 1 && i < n; i++)
            if (dst[k][i] < 0.0f) {
                rc = zoff_fail(ZOFF_EFORMAT, MOD,
                               "%s: tensor \"adamw.v\": element %zu is %g: a second moment "
                               "cannot be negative",
                               path, i, (double)dst[k][i]);
                goto out;
            }
    }
    *step = (int)sv;
    *loss_scale = lv;
out:
    cJSON_Delete(hdr);
    if (size) munmap((void *)data, size);
    return rc;
}
