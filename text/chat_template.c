/* Chat templates: a conversation rendered into segments of text, each trained or not, for the
 * small built-in set (ChatML, Llama 3, plain) and their recognition from tokenizer_config.json.
 * The strings follow the Hugging Face chat templates of Qwen2 (ChatML, without its default
 * system prompt) and Llama 3 (contents trimmed). */
#include "text/sft_data.h"
#include "core/log.h"
#include "zoff/zoff.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "chat"

int zoff_chat_template_parse(const char *name, zoff_chat_template *out) {
    if (strcmp(name, "plain") == 0)
        *out = ZOFF_CHAT_PLAIN;
    else if (strcmp(name, "chatml") == 0)
        *out = ZOFF_CHAT_CHATML;
    else if (strcmp(name, "llama3") == 0)
        *out = ZOFF_CHAT_LLAMA3;
    else
        return zoff_fail(ZOFF_ECONFIG, MOD, "chat template '%s': expected chatml, llama3 or plain",
                         name);
    return 0;
}

const char *zoff_chat_template_name(zoff_chat_template t) {
    switch (t) {
    case ZOFF_CHAT_PLAIN:
        return "plain";
    case ZOFF_CHAT_CHATML:
        return "chatml";
    case ZOFF_CHAT_LLAMA3:
        return "llama3";
    }
    return "?";
}

/* DIR/tokenizer_config.json parsed into *doc (path written into path). */
static int load_config(const char *dir, char *path, size_t path_cap, cJSON **doc) {
    snprintf(path, path_cap, "%s/tokenizer_config.json", dir);
    *doc = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return zoff_fail(-errno, MOD, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[65536];
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *p = realloc(buf, cap);
            if (!p) {
                rc = -ENOMEM;
                goto out;
            }
            buf = p;
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    if (ferror(f)) {
        rc = zoff_fail(-EIO, MOD, "%s: read error", path);
        goto out;
    }
    *doc = buf ? cJSON_ParseWithLength(buf, len) : NULL;
    if (!*doc || !cJSON_IsObject(*doc)) {
        cJSON_Delete(*doc);
        *doc = NULL;
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: not a JSON object", path);
    }
out:
    free(buf);
    fclose(f);
    return rc;
}

int zoff_chat_template_detect(const char *dir, zoff_chat_template *out) {
    char path[4096];
    cJSON *doc;
    int rc = load_config(dir, path, sizeof path, &doc);
    if (rc) return rc;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(doc, "chat_template");
    if (cJSON_IsArray(t)) { /* [{"name": "default", "template": ...}, ...] */
        const cJSON *it, *found = NULL;
        cJSON_ArrayForEach(it, t) {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "name");
            if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0)
                found = cJSON_GetObjectItemCaseSensitive(it, "template");
        }
        t = found;
    }
    if (!cJSON_IsString(t)) {
        rc = zoff_fail(ZOFF_ECONFIG, MOD, "%s: no chat_template string: choose a template by name",
                       path);
    } else if (strstr(t->valuestring, "<|im_start|>")) {
        *out = ZOFF_CHAT_CHATML;
    } else if (strstr(t->valuestring, "<|start_header_id|>")) {
        *out = ZOFF_CHAT_LLAMA3;
    } else {
        rc = zoff_fail(ZOFF_ECONFIG, MOD,
                       "%s: chat_template is neither ChatML nor Llama 3: choose a template by name",
                       path);
    }
    cJSON_Delete(doc);
    return rc;
}

int zoff_chat_config_token(const char *dir, const char *key, char **out) {
    char path[4096];
    cJSON *doc;
    *out = NULL;
    int rc = load_config(dir, path, sizeof path, &doc);
    if (rc) return rc;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content"); /* AddedToken */
    if (cJSON_IsString(v) && *v->valuestring) {
        if (!(*out = strdup(v->valuestring))) rc = -ENOMEM;
    } else if (v && !cJSON_IsNull(v)) {
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: %s: expected a token's text", path, key);
    } else {
        rc = zoff_fail(-ENOENT, MOD, "%s: no %s", path, key);
    }
    cJSON_Delete(doc);
    return rc;
}

void zoff_chat_segments_free(zoff_chat_segment *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        free(s[i].text);
    free(s);
}

typedef struct seglist {
    zoff_chat_segment *v;
    size_t n, cap;
} seglist;

/* Appends a..c (NULLs skipped) as one segment, joined to the previous one when its flag is the
 * same, so that untrained runs are tokenized in one piece. */
static int add(seglist *l, bool train, const char *a, size_t a_len, const char *b, size_t b_len,
               const char *c) {
    size_t c_len = c ? strlen(c) : 0;
    size_t add_len = a_len + b_len + c_len;
    if (l->n > 0 && l->v[l->n - 1].train == train) {
        zoff_chat_segment *s = &l->v[l->n - 1];
        size_t old = strlen(s->text);
        char *p = realloc(s->text, old + add_len + 1);
        if (!p) return -ENOMEM;
        s->text = p;
        memcpy(p + old, a, a_len);
        memcpy(p + old + a_len, b, b_len);
        memcpy(p + old + a_len + b_len, c ? c : "", c_len);
        p[old + add_len] = 0;
        return 0;
    }
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 8;
        zoff_chat_segment *p = realloc(l->v, nc * sizeof *p);
        if (!p) return -ENOMEM;
        l->v = p;
        l->cap = nc;
    }
    char *t = malloc(add_len + 1);
    if (!t) return -ENOMEM;
    memcpy(t, a, a_len);
    memcpy(t + a_len, b, b_len);
    memcpy(t + a_len + b_len, c ? c : "", c_len);
    t[add_len] = 0;
    l->v[l->n++] = (zoff_chat_segment){t, train};
    return 0;
}

static int adds(seglist *l, bool train, const char *a, const char *b, const char *c) {
    return add(l, train, a ? a : "", a ? strlen(a) : 0, b ? b : "", b ? strlen(b) : 0, c);
}

/* ASCII white space, what Jinja's trim removes in Llama 3's template for all practical text. */
static bool is_ws(char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

int zoff_chat_render(zoff_chat_template t, const zoff_chat_msg *msgs, size_t n, const char *eos,
                     zoff_chat_segment **out, size_t *n_out) {
    seglist l = {0};
    int rc = 0;
    *out = NULL;
    *n_out = 0;
    if (t == ZOFF_CHAT_LLAMA3) rc = adds(&l, false, "<|begin_of_text|>", NULL, NULL);
    for (size_t i = 0; i < n && !rc; i++) {
        const char *role = msgs[i].role, *content = msgs[i].content;
        bool asst = strcmp(role, "assistant") == 0;
        if (!asst && strcmp(role, "user") != 0 && strcmp(role, "system") != 0) {
            rc = zoff_fail(-EINVAL, MOD,
                           "message %zu: role '%s': expected system, user or assistant", i, role);
            break;
        }
        switch (t) {
        case ZOFF_CHAT_CHATML:
            rc = adds(&l, false, "<|im_start|>", role, "\n");
            if (!rc && asst) rc = adds(&l, true, content, "<|im_end|>", NULL);
            if (!rc && asst) rc = adds(&l, false, "\n", NULL, NULL);
            if (!rc && !asst) rc = adds(&l, false, content, "<|im_end|>\n", NULL);
            break;
        case ZOFF_CHAT_LLAMA3: {
            size_t s = 0, e = strlen(content);
            while (s < e && is_ws(content[s]))
                s++;
            while (e > s && is_ws(content[e - 1]))
                e--;
            rc = adds(&l, false, "<|start_header_id|>", role, "<|end_header_id|>\n\n");
            if (!rc) rc = add(&l, asst, content + s, e - s, "<|eot_id|>", 10, NULL);
            break;
        }
        case ZOFF_CHAT_PLAIN:
            rc = adds(&l, asst, content, asst ? eos : NULL, NULL);
            break;
        }
    }
    if (rc) {
        zoff_chat_segments_free(l.v, l.n);
        return rc;
    }
    *out = l.v;
    *n_out = l.n;
    return 0;
}
