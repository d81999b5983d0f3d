/* Chat generation for `zoff generate`, `zoff sft`'s exact-match evaluation and its end-of-run
 * answers: a prompt rendered with the chat template up to the start of the assistant's turn,
 * then one token at a time (greedy or sampled) until the template's end-of-turn token.
 * Runs on the caller's thread; the model does one B=1 forward per new token over a window of
 * its last `window` ids (no KV cache: replies here are short). */
#include "cli/train_source.h"
#include "core/log.h"
#include "zoff/zoff.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MOD "generate"

static void add_stop(zoff_chat_tokens *ct, int32_t id) {
    if (id < 0) return;
    for (int i = 0; i < ct->n_stop; i++)
        if (ct->stop[i] == id) return;
    if (ct->n_stop < (int)(sizeof ct->stop / sizeof ct->stop[0])) ct->stop[ct->n_stop++] = id;
}

/* Whether DIR/tokenizer_config.json has key (asked first: a missing key is no error here). */
static bool config_has(const char *dir, const char *key) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char *text = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && n < (64l << 20) && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)n + 1)))
        text[fread(text, 1, (size_t)n, f)] = 0;
    fclose(f);
    cJSON *doc = text ? cJSON_Parse(text) : NULL;
    free(text);
    bool has = cJSON_GetObjectItemCaseSensitive(doc, key) != NULL;
    cJSON_Delete(doc);
    return has;
}

int zoff_chat_tokens_init(zoff_chat_tokens *ct, zoff_tok *tok, const char *dir,
                          const char *tmpl_name) {
    memset(ct, 0, sizeof *ct);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    bool have_config = access(path, F_OK) == 0;
    /* a checkpoint of zoff sft names its template (the plain one has no Jinja marker) */
    char *saved = NULL;
    if (strcmp(tmpl_name, "auto") == 0 && config_has(dir, "zoff_chat_template") &&
        zoff_chat_config_token(dir, "zoff_chat_template", &saved) == 0)
        tmpl_name = saved;
    if (strcmp(tmpl_name, "auto") == 0 && !have_config)
        return zoff_fail(-ENOENT, MOD,
                         "%s: missing, so the chat template is unknown: give --template "
                         "chatml|llama3|plain",
                         path);
    int rc = strcmp(tmpl_name, "auto") == 0 ? zoff_chat_template_detect(dir, &ct->tmpl)
                                            : zoff_chat_template_parse(tmpl_name, &ct->tmpl);
    free(saved);
    if (rc) return rc;
    /* no file or no key: the template's own end token only */
    if (config_has(dir, "eos_token") && (rc = zoff_chat_config_token(dir, "eos_token", &ct->eos)))
        return rc;
    /* the end of an assistant turn is what the template trains after the content */
    zoff_chat_msg msg = {"assistant", ""};
    zoff_chat_segment *seg;
    size_t n;
    if ((rc = zoff_chat_render(ct->tmpl, &msg, 1, ct->eos, &seg, &n))) goto fail;
    for (size_t i = 0; i < n && !rc; i++) {
        if (!seg[i].train || !seg[i].text[0]) continue;
        zoff_tok_ids ids = {0};
        rc = zoff_tok_encode(tok, seg[i].text, strlen(seg[i].text), &ids);
        if (!rc && ids.n == 1) add_stop(ct, ids.ids[0]);
        zoff_tok_ids_free(&ids);
    }
    zoff_chat_segments_free(seg, n);
    if (rc) goto fail;
    if (ct->eos) add_stop(ct, zoff_tok_find(tok, ct->eos));
    if (ct->n_stop == 0) {
        rc = zoff_fail(ZOFF_ECONFIG, MOD,
                       "%s: the %s template has no end-of-turn token here (the plain template "
                       "needs eos_token in tokenizer_config.json)",
                       dir, zoff_chat_template_name(ct->tmpl));
        goto fail;
    }
    return 0;
fail:
    zoff_chat_tokens_free(ct);
    return rc;
}

void zoff_chat_tokens_free(zoff_chat_tokens *ct) {
    free(ct->eos);
    ct->eos = NULL;
}

int zoff_chat_prompt_ids(const zoff_chat_tokens *ct, zoff_tok *tok, const char *system,
                         const char *user, zoff_tok_ids *out) {
    zoff_chat_msg msgs[3];
    size_t nm = 0;
    if (system && *system) msgs[nm++] = (zoff_chat_msg){"system", system};
    msgs[nm++] = (zoff_chat_msg){"user", user};
    msgs[nm++] = (zoff_chat_msg){"assistant", ""};
    zoff_chat_segment *seg;
    size_t n;
    int rc = zoff_chat_render(ct->tmpl, msgs, nm, ct->eos, &seg, &n);
    if (rc) return rc;
    /* everything before the assistant's (trained) content: the generation prompt */
    for (size_t i = 0; i < n && !rc && !seg[i].train; i++)
        rc = zoff_tok_encode(tok, seg[i].text, strlen(seg[i].text), out);
    zoff_chat_segments_free(seg, n);
    return rc;
}

static int argmax(const float *p, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (p[i] > p[best]) best = i;
    return best;
}

int zoff_generate_reply(zoff_model *m, zoff_dev_stream *s, int window, int vocab,
                        const zoff_chat_tokens *ct, const int32_t *prompt, size_t n,
                        const zoff_gen_options *go, zoff_tok_ids *out) {
    if (n == 0) return zoff_fail(-EINVAL, MOD, "empty prompt");
    size_t cap = n + (size_t)go->max_new_tokens;
    int32_t *seq = malloc(cap * sizeof *seq);
    float *probs = malloc((size_t)vocab * sizeof *probs);
    int rc = 0;
    if (!seq || !probs) {
        rc = zoff_fail(-ENOMEM, MOD, "out of memory");
        goto out;
    }
    memcpy(seq, prompt, n * sizeof *seq);
    size_t len = n;
    uint64_t rng = go->seed ? go->seed : 1;
    for (int i = 0; i < go->max_new_tokens; i++) {
        size_t start = len > (size_t)window ? len - (size_t)window : 0;
        int w = (int)(len - start);
        zoff_batch b = {.tokens = seq + start, .B = 1, .T = w};
        if ((rc = zoff_model_forward(m, s, &b, NULL))) break;
        if ((rc = zoff_model_probs_row(m, s, 0, w - 1, probs))) break;
        int t = go->greedy ? argmax(probs, vocab)
                           : zoff_sample_token(probs, vocab, go->temperature, go->top_k, &rng);
        bool stop = false;
        for (int k = 0; k < ct->n_stop; k++)
            stop = stop || ct->stop[k] == t;
        if (stop) break;
        seq[len++] = t;
        if ((rc = zoff_tok_ids_push(out, t))) break;
    }
out:
    free(seq);
    free(probs);
    return rc;
}
