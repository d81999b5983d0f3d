/* SFT data: JSONL lines to tokenized samples (tokens + trained flags, one pool), and the
 * iterator that serves them as packed or padded rows with a held-out split, seeded epochs
 * and a resumable cursor. See sft_data.h for the row format and the policies. */
#include "text/sft_data.h"
#include "core/log.h"
#include "zoff/zoff.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "sft"

typedef struct sample {
    size_t off;
    uint32_t len;
    uint32_t line;
} sample;

struct zoff_sft_data {
    int32_t *tokens;
    uint8_t *train;
    size_t n_tokens, cap_tokens, cap_train;
    sample *samples;
    size_t n_samples, cap_samples;
    size_t n_truncated;
    int seq_len;
};

void zoff_sft_config_default(zoff_sft_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->chat_template = ZOFF_CHAT_CHATML;
    cfg->seq_len = 1024;
    cfg->on_overflow = ZOFF_SFT_TRUNCATE;
}

void zoff_sft_iter_config_default(zoff_sft_iter_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->packed = true;
    cfg->val_frac = 0.05;
}

/* A marker the template writes must be one token (an added token of this tokenizer). */
static int require_token(zoff_tok *tok, const char *text, const char *why) {
    zoff_tok_ids ids = {0};
    int rc = zoff_tok_encode(tok, text, strlen(text), &ids);
    if (!rc && ids.n != 1)
        rc = zoff_fail(ZOFF_ECONFIG, MOD,
                       "%s needs '%s' as one token, but this tokenizer makes %zu tokens of it", why,
                       text, ids.n);
    zoff_tok_ids_free(&ids);
    return rc;
}

#define LINE_ERR(field, what)                                                                      \
    zoff_fail(ZOFF_EFORMAT, MOD, "%s:%zu: field '%s': %s", path, line, field, what)

static const char *str_field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* One JSONL object -> segments. */
static int line_segments(const char *path, size_t line, const cJSON *doc,
                         const zoff_sft_config *cfg, zoff_chat_segment **segs, size_t *n_segs) {
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(doc, "prompt");
    const cJSON *response = cJSON_GetObjectItemCaseSensitive(doc, "response");
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(doc, "messages");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(doc, "text");
    zoff_chat_msg two[2];
    zoff_chat_msg *msgs = two;
    size_t n = 0;
    int rc = 0;
    if (prompt || response) {
        if (!cJSON_IsString(prompt)) return LINE_ERR("prompt", "expected a string");
        if (!cJSON_IsString(response)) return LINE_ERR("response", "expected a string");
        two[0] = (zoff_chat_msg){"user", prompt->valuestring};
        two[1] = (zoff_chat_msg){"assistant", response->valuestring};
        n = 2;
    } else if (messages) {
        if (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0)
            return LINE_ERR("messages", "expected a non-empty array");
        n = (size_t)cJSON_GetArraySize(messages);
        msgs = calloc(n, sizeof *msgs);
        if (!msgs) return -ENOMEM;
        size_t i = 0;
        const cJSON *m;
        cJSON_ArrayForEach(m, messages) {
            char field[64];
            const char *role = str_field(m, "role"), *content = str_field(m, "content");
            if (!role) {
                snprintf(field, sizeof field, "messages[%zu].role", i);
                rc = LINE_ERR(field, "expected a string");
            } else if (strcmp(role, "system") && strcmp(role, "user") &&
                       strcmp(role, "assistant")) {
                snprintf(field, sizeof field, "messages[%zu].role", i);
                rc = LINE_ERR(field, "expected system, user or assistant");
            } else if (!content) {
                snprintf(field, sizeof field, "messages[%zu].content", i);
                rc = LINE_ERR(field, "expected a string");
            }
            if (rc) break;
            msgs[i++] = (zoff_chat_msg){role, content};
        }
    } else if (text) {
        if (!cJSON_IsString(text)) return LINE_ERR("text", "expected a string");
        zoff_chat_segment *s = calloc(2, sizeof *s);
        if (!s) return -ENOMEM;
        size_t k = 0;
        if (cfg->chat_template == ZOFF_CHAT_LLAMA3)
            s[k++] = (zoff_chat_segment){strdup("<|begin_of_text|>"), false};
        size_t tl = strlen(text->valuestring), el = cfg->eos_token ? strlen(cfg->eos_token) : 0;
        char *t = malloc(tl + el + 1);
        if (t) {
            memcpy(t, text->valuestring, tl);
            memcpy(t + tl, cfg->eos_token ? cfg->eos_token : "", el);
            t[tl + el] = 0;
        }
        s[k++] = (zoff_chat_segment){t, true};
        for (size_t i = 0; i < k; i++)
            if (!s[i].text) {
                zoff_chat_segments_free(s, k);
                return -ENOMEM;
            }
        *segs = s;
        *n_segs = k;
        return 0;
    } else {
        return zoff_fail(ZOFF_EFORMAT, MOD,
                         "%s:%zu: expected \"prompt\" and \"response\", \"messages\" or \"text\"",
                         path, line);
    }
    if (!rc) rc = zoff_chat_render(cfg->chat_template, msgs, n, cfg->eos_token, segs, n_segs);
    if (msgs != two) free(msgs);
    return rc;
}

static int reserve(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 1024;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q) return -ENOMEM;
    *p = q;
    *cap = nc;
    return 0;
}

int zoff_sft_load(const char *path, zoff_tok *tok, const zoff_sft_config *cfg,
                  zoff_sft_data **out) {
    *out = NULL;
    if (cfg->seq_len < 2)
        return zoff_fail(ZOFF_ECONFIG, MOD, "sequence length %d: at least 2", cfg->seq_len);
    int rc = 0;
    if (cfg->chat_template == ZOFF_CHAT_CHATML) {
        if (!(rc = require_token(tok, "<|im_start|>", "the chatml template")))
            rc = require_token(tok, "<|im_end|>", "the chatml template");
    } else if (cfg->chat_template == ZOFF_CHAT_LLAMA3) {
        const char *need[] = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                              "<|eot_id|>"};
        for (int i = 0; i < 4 && !rc; i++)
            rc = require_token(tok, need[i], "the llama3 template");
    }
    if (!rc && cfg->eos_token) rc = require_token(tok, cfg->eos_token, "the EOS token");
    if (rc) return rc;
    FILE *f = fopen(path, "rb");
    if (!f) return zoff_fail(-errno, MOD, "%s: cannot open: %s", path, strerror(errno));
    zoff_sft_data *d = calloc(1, sizeof *d);
    char *buf = NULL;
    size_t buf_cap = 0, line = 0;
    zoff_tok_ids ids = {0};
    if (!d) {
        rc = -ENOMEM;
        goto out;
    }
    d->seq_len = cfg->seq_len;
    ssize_t got;
    while ((got = getline(&buf, &buf_cap, f)) >= 0) {
        line++;
        size_t len = (size_t)got;
        size_t k = 0;
        while (k < len && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\n' || buf[k] == '\r'))
            k++;
        if (k == len) continue;
        cJSON *doc = cJSON_ParseWithLength(buf, len);
        if (!doc || !cJSON_IsObject(doc)) {
            cJSON_Delete(doc);
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s:%zu: not a JSON object", path, line);
            goto out;
        }
        zoff_chat_segment *segs = NULL;
        size_t n_segs = 0;
        rc = line_segments(path, line, doc, cfg, &segs, &n_segs);
        cJSON_Delete(doc);
        if (rc) goto out;
        size_t start = d->n_tokens;
        for (size_t s = 0; s < n_segs && !rc; s++) {
            ids.n = 0;
            rc = zoff_tok_encode(tok, segs[s].text, strlen(segs[s].text), &ids);
            if (rc || ids.n == 0) continue;
            size_t need = d->n_tokens + ids.n;
            if ((rc = reserve((void **)&d->tokens, &d->cap_tokens, need, sizeof(int32_t))) ||
                (rc = reserve((void **)&d->train, &d->cap_train, need, 1)))
                break;
            memcpy(d->tokens + d->n_tokens, ids.ids, ids.n * sizeof(int32_t));
            memset(d->train + d->n_tokens, segs[s].train, ids.n);
            d->n_tokens += ids.n;
        }
        zoff_chat_segments_free(segs, n_segs);
        if (rc) goto out;
        size_t n = d->n_tokens - start;
        if (n == 0) continue;
        if (n > (size_t)cfg->seq_len) {
            if (cfg->on_overflow == ZOFF_SFT_REFUSE) {
                rc = zoff_fail(ZOFF_EFORMAT, MOD,
                               "%s:%zu: %zu tokens, longer than the sequence length %d", path, line,
                               n, cfg->seq_len);
                goto out;
            }
            d->n_tokens = start + (size_t)cfg->seq_len;
            n = (size_t)cfg->seq_len;
            d->n_truncated++;
        }
        if ((rc = reserve((void **)&d->samples, &d->cap_samples, d->n_samples + 1, sizeof(sample))))
            goto out;
        d->samples[d->n_samples++] = (sample){start, (uint32_t)n, (uint32_t)line};
    }
    if (ferror(f)) {
        rc = zoff_fail(-EIO, MOD, "%s: read error after line %zu", path, line);
        goto out;
    }
    if (d->n_samples == 0) {
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: no samples", path);
        goto out;
    }
    if (d->n_truncated)
        zoff_log(ZOFF_LOG_WARN, MOD, "%s: %zu of %zu samples cut to the sequence length %d", path,
                 d->n_truncated, d->n_samples, cfg->seq_len);
out:
    zoff_tok_ids_free(&ids);
    free(buf);
    fclose(f);
    if (rc) {
        zoff_sft_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

void zoff_sft_free(zoff_sft_data *d) {
    if (!d) return;
    free(d->tokens);
    free(d->train);
    free(d->samples);
    free(d);
}

size_t zoff_sft_num_samples(const zoff_sft_data *d) {
    return d->n_samples;
}
size_t zoff_sft_num_truncated(const zoff_sft_data *d) {
    return d->n_truncated;
}

void zoff_sft_sample(const zoff_sft_data *d, size_t i, const int32_t **tokens,
                     const uint8_t **train, size_t *len, size_t *line) {
    const sample *s = &d->samples[i];
    *tokens = d->tokens + s->off;
    *train = d->train + s->off;
    *len = s->len;
    *line = s->line;
}

/* --- iterator --------------------------------------------------------------------------- */

struct zoff_sft_iter {
    const zoff_sft_data *d;
    zoff_sft_iter_config cfg;
    int T;
    bool validation;
    uint32_t *set; /* sample indices of this set, in file order */
    size_t n_set;
    uint32_t *order; /* this epoch's order */
    uint64_t order_epoch;
    bool order_valid;
    zoff_sft_cursor cur;
};

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void shuffle(uint32_t *v, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(splitmix64(&s) % i);
        uint32_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void make_order(zoff_sft_iter *it) {
    if (it->n_set) memcpy(it->order, it->set, it->n_set * sizeof(uint32_t));
    if (!it->validation) {
        uint64_t s = it->cfg.seed;
        uint64_t seed = splitmix64(&s) ^ (it->cur.epoch * 0xD1B54A32D192ED03ull + 1);
        shuffle(it->order, it->n_set, seed);
    }
    it->order_epoch = it->cur.epoch;
    it->order_valid = true;
}

int zoff_sft_iter_create(const zoff_sft_data *d, const zoff_sft_iter_config *cfg, bool validation,
                         zoff_sft_iter **out) {
    *out = NULL;
    int T = cfg->seq_len ? cfg->seq_len : d->seq_len;
    if (T < d->seq_len)
        return zoff_fail(ZOFF_ECONFIG, MOD, "row length %d is shorter than the data's %d", T,
                         d->seq_len);
    if (!(cfg->val_frac >= 0 && cfg->val_frac < 1))
        return zoff_fail(ZOFF_ECONFIG, MOD, "held-out fraction %g: expected [0, 1)", cfg->val_frac);
    size_t n = d->n_samples;
    size_t n_val = 0;
    if (cfg->val_frac > 0) {
        n_val = (size_t)(cfg->val_frac * (double)n + 0.5);
        if (n_val == 0) n_val = 1;
    }
    if (n_val >= n)
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "held-out fraction %g of %zu samples leaves none for training",
                         cfg->val_frac, n);
    zoff_sft_iter *it = calloc(1, sizeof *it);
    uint32_t *perm = malloc(n * sizeof *perm);
    if (!it || !perm) goto oom;
    for (size_t i = 0; i < n; i++)
        perm[i] = (uint32_t)i;
    shuffle(perm, n, cfg->split_seed ^ 0x5EEDull);
    it->n_set = validation ? n_val : n - n_val;
    it->set = malloc((it->n_set ? it->n_set : 1) * sizeof(uint32_t));
    it->order = malloc((it->n_set ? it->n_set : 1) * sizeof(uint32_t));
    if (!it->set || !it->order) goto oom;
    if (it->n_set) memcpy(it->set, perm + (validation ? 0 : n_val), it->n_set * sizeof(uint32_t));
    qsort(it->set, it->n_set, sizeof(uint32_t), cmp_u32);
    free(perm);
    it->d = d;
    it->cfg = *cfg;
    it->T = T;
    it->validation = validation;
    make_order(it);
    *out = it;
    return 0;
oom:
    free(perm);
    zoff_sft_iter_free(it);
    return -ENOMEM;
}

void zoff_sft_iter_free(zoff_sft_iter *it) {
    if (!it) return;
    free(it->set);
    free(it->order);
    free(it);
}

size_t zoff_sft_iter_num_samples(const zoff_sft_iter *it) {
    return it->n_set;
}

zoff_sft_cursor zoff_sft_iter_cursor(const zoff_sft_iter *it) {
    return it->cur;
}

int zoff_sft_iter_seek(zoff_sft_iter *it, zoff_sft_cursor c) {
    if (c.index > it->n_set)
        return zoff_fail(-EINVAL, MOD, "cursor index %llu beyond the %zu samples of the set",
                         (unsigned long long)c.index, it->n_set);
    it->cur = c;
    make_order(it);
    return 0;
}

int zoff_sft_next_row(zoff_sft_iter *it, int32_t *inputs, int32_t *targets, int32_t *doc_start,
                      int *n_samples) {
    const zoff_sft_data *d = it->d;
    int T = it->T, used = 0;
    *n_samples = 0;
    for (;;) {
        if (it->cur.index >= it->n_set) {
            if (it->validation) { /* one pass per call sequence */
                if (used > 0) break;
                it->cur.epoch++;
                it->cur.index = 0;
                make_order(it);
                goto pad;
            }
            if (it->cfg.epochs && it->cur.epoch + 1 >= it->cfg.epochs) {
                it->cur.epoch = it->cfg.epochs;
                it->cur.index = 0;
                break;
            }
            it->cur.epoch++;
            it->cur.index = 0;
        }
        if (it->cfg.epochs && it->cur.epoch >= it->cfg.epochs) break;
        if (!it->order_valid || it->order_epoch != it->cur.epoch) make_order(it);
        const sample *s = &d->samples[it->order[it->cur.index]];
        int L = (int)s->len;
        if (used > 0 && used + L > T) break;
        const int32_t *tk = d->tokens + s->off;
        const uint8_t *tr = d->train + s->off;
        for (int i = 0; i < L; i++) {
            inputs[used + i] = tk[i];
            targets[used + i] = i + 1 < L && tr[i + 1] ? tk[i + 1] : ZOFF_SFT_IGNORE;
            doc_start[used + i] = used;
        }
        used += L;
        ++*n_samples;
        it->cur.index++;
        if (!it->cfg.packed) break;
    }
pad:
    for (int t = used; t < T; t++) {
        inputs[t] = it->cfg.pad_id;
        targets[t] = ZOFF_SFT_IGNORE;
        doc_start[t] = t;
    }
    return 0;
}

int zoff_sft_batch_alloc(zoff_sft_batch *b, int B, int T) {
    memset(b, 0, sizeof *b);
    if (B < 1 || T < 1) return zoff_fail(ZOFF_ECONFIG, MOD, "batch %d x %d: both at least 1", B, T);
    size_t n = (size_t)B * (size_t)T;
    b->inputs = malloc(n * sizeof(int32_t));
    b->targets = malloc(n * sizeof(int32_t));
    b->doc_start = malloc(n * sizeof(int32_t));
    if (!b->inputs || !b->targets || !b->doc_start) {
        zoff_sft_batch_free(b);
        return -ENOMEM;
    }
    b->B = B;
    b->T = T;
    return 0;
}

void zoff_sft_batch_free(zoff_sft_batch *b) {
    free(b->inputs);
    free(b->targets);
    free(b->doc_start);
    memset(b, 0, sizeof *b);
}

int zoff_sft_next_batch(zoff_sft_iter *it, zoff_sft_batch *b) {
    if (b->T != it->T)
        return zoff_fail(ZOFF_ECONFIG, MOD, "batch rows of %d positions, the iterator's are %d",
                         b->T, it->T);
    b->n_samples = 0;
    b->n_targets = 0;
    bool ended = false;
    for (int r = 0; r < b->B; r++) {
        size_t o = (size_t)r * (size_t)b->T;
        int n = 0;
        if (!ended) {
            int rc = zoff_sft_next_row(it, b->inputs + o, b->targets + o, b->doc_start + o, &n);
            if (rc) return rc;
        }
        if (n == 0) { /* the end: the rest is padding (a validation pass is not restarted) */
            ended = true;
            for (int t = 0; t < b->T; t++) {
                b->inputs[o + t] = it->cfg.pad_id;
                b->targets[o + t] = ZOFF_SFT_IGNORE;
                b->doc_start[o + t] = t;
            }
        }
        b->n_samples += n;
        for (int t = 0; t < b->T; t++)
            b->n_targets += b->targets[o + t] != ZOFF_SFT_IGNORE;
    }
    return 0;
}
