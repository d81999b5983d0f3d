/* Loading a Hugging Face tokenizer.json into the tables of tokenizer_internal.h. Every field
 * that is present but not understood is refused by its JSON path, so that a tokenizer that
 * would encode differently from `tokenizers` never loads silently. */
#include "text/tokenizer_internal.h"
#include "core/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The pre-tokenizer regex of GPT-2, which ByteLevel(use_regex=true) applies. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct load_ctx {
    zoff_tok *tok;
    const char *file;
    tok_strmap file_map; /* token as written -> id (merges name tokens so) */
} load_ctx;

static int bad(load_ctx *c, const char *field, const char *what) {
    return zoff_fail(ZOFF_EFORMAT, TOK_MOD, "%s: %s: %s", c->file, field, what);
}

static char *read_file(const char *path, size_t *len, int *rc) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        *rc = zoff_fail(-errno, TOK_MOD, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        *rc = zoff_fail(-EIO, TOK_MOD, "%s: cannot tell its size", path);
        goto out;
    }
    buf = malloc((size_t)size + 1);
    if (!buf) {
        *rc = -ENOMEM;
        goto out;
    }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        *rc = zoff_fail(-EIO, TOK_MOD, "%s: read error", path);
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[size] = 0;
    *len = (size_t)size;
    *rc = 0;
out:
    fclose(f);
    return buf;
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* A string field; NULL when absent or null. Sets *rc for a field of another type. */
static const char *get_str(load_ctx *c, const cJSON *obj, const char *key, const char *where,
                           int *rc) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return NULL;
    if (!cJSON_IsString(v)) {
        char f[256];
        snprintf(f, sizeof f, "%s.%s", where, key);
        *rc = bad(c, f, "expected a string");
        return NULL;
    }
    return v->valuestring;
}

static bool get_bool(const cJSON *obj, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}

static int compile_re(load_ctx *c, const char *pattern, size_t len, bool literal, const char *field,
                      pcre2_code **out, bool *jit) {
    int err;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return zoff_fail(ZOFF_EFORMAT, TOK_MOD, "%s: %s: PCRE2 cannot compile it at offset %zu: %s",
                         c->file, field, (size_t)off, (const char *)msg);
    }
    *jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    *out = re;
    return 0;
}

/* {"String": s} or {"Regex": s}: a literal or a regex. */
static int get_pattern(load_ctx *c, const cJSON *obj, const char *where, const char **text,
                       bool *literal) {
    char f[256];
    snprintf(f, sizeof f, "%s.pattern", where);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(obj, "pattern");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "Regex");
    if (cJSON_IsString(s)) {
        *text = s->valuestring;
        *literal = true;
    } else if (cJSON_IsString(r)) {
        *text = r->valuestring;
        *literal = false;
    } else {
        return bad(c, f, "expected {\"String\": ...} or {\"Regex\": ...}");
    }
    return 0;
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return p;
    size_t nc = *cap ? *cap * 2 : 4;
    while (nc < need)
        nc *= 2;
    void *q = realloc(p, nc * elem);
    if (q) *cap = nc;
    return q;
}

/* --- normalizer ------------------------------------------------------------------------- */

static int load_normalizer(load_ctx *c, const cJSON *n, const char *where, size_t *cap) {
    zoff_tok *tok = c->tok;
    char f[256];
    if (!n || cJSON_IsNull(n)) return 0;
    int rc = 0;
    const char *type = get_str(c, n, "type", where, &rc);
    if (rc) return rc;
    snprintf(f, sizeof f, "%s.type", where);
    if (!type) return bad(c, f, "missing");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        snprintf(f, sizeof f, "%s.normalizers", where);
        if (!cJSON_IsArray(list)) return bad(c, f, "expected an array");
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, list) {
            char w[256];
            snprintf(w, sizeof w, "%s.normalizers[%d]", where, i++);
            if ((rc = load_normalizer(c, it, w, cap))) return rc;
        }
        return 0;
    }
    tok_norm nm = {0};
    if (strcmp(type, "NFC") == 0) {
        nm.kind = NORM_NFC;
    } else if (strcmp(type, "Prepend") == 0) {
        const char *p = get_str(c, n, "prepend", where, &rc);
        if (rc) return rc;
        snprintf(f, sizeof f, "%s.prepend", where);
        if (!p) return bad(c, f, "missing");
        nm.kind = NORM_PREPEND;
        nm.a_len = strlen(p);
        nm.a = dup_n(p, nm.a_len);
        if (!nm.a) return -ENOMEM;
    } else if (strcmp(type, "Replace") == 0) {
        const char *pat;
        bool literal;
        if ((rc = get_pattern(c, n, where, &pat, &literal))) return rc;
        snprintf(f, sizeof f, "%s.pattern", where);
        if (!literal) return bad(c, f, "a Regex pattern in a Replace normalizer is not supported");
        if (!*pat) return bad(c, f, "empty");
        const char *content = get_str(c, n, "content", where, &rc);
        if (rc) return rc;
        snprintf(f, sizeof f, "%s.content", where);
        if (!content) return bad(c, f, "missing");
        nm.kind = NORM_REPLACE;
        nm.a_len = strlen(pat);
        nm.b_len = strlen(content);
        nm.a = dup_n(pat, nm.a_len);
        nm.b = dup_n(content, nm.b_len);
        if (!nm.a || !nm.b) {
            free(nm.a);
            free(nm.b);
            return -ENOMEM;
        }
    } else {
        char what[160];
        snprintf(what, sizeof what,
                 "normalizer '%s' is not supported (NFC, Prepend, Replace, Sequence are)", type);
        return bad(c, f, what);
    }
    tok_norm *p = grow(tok->norms, cap, tok->n_norms + 1, sizeof *p);
    if (!p) {
        free(nm.a);
        free(nm.b);
        return -ENOMEM;
    }
    tok->norms = p;
    tok->norms[tok->n_norms++] = nm;
    return 0;
}

/* --- pre-tokenizer ---------------------------------------------------------------------- */

static int prepend_scheme(load_ctx *c, const cJSON *o, const char *where, int *out) {
    int rc = 0;
    const char *s = get_str(c, o, "prepend_scheme", where, &rc);
    if (rc) return rc;
    if (!s) { /* files before tokenizers 0.15: add_prefix_space */
        *out = get_bool(o, "add_prefix_space", true) ? PREPEND_ALWAYS : PREPEND_NEVER;
        return 0;
    }
    if (strcmp(s, "always") == 0)
        *out = PREPEND_ALWAYS;
    else if (strcmp(s, "first") == 0)
        *out = PREPEND_FIRST;
    else if (strcmp(s, "never") == 0)
        *out = PREPEND_NEVER;
    else {
        char f[256];
        snprintf(f, sizeof f, "%s.prepend_scheme", where);
        return bad(c, f, "expected always, first or never");
    }
    return 0;
}

static int replacement_char(load_ctx *c, const cJSON *o, const char *where, char *buf,
                            size_t *len) {
    int rc = 0;
    const char *r = get_str(c, o, "replacement", where, &rc);
    if (rc) return rc;
    char f[256];
    snprintf(f, sizeof f, "%s.replacement", where);
    if (!r) return bad(c, f, "missing");
    size_t n = strlen(r);
    uint32_t cp;
    if (n == 0 || n > 4 || tok_utf8_decode((const unsigned char *)r, n, &cp) != n)
        return bad(c, f, "expected one character");
    memcpy(buf, r, n);
    *len = n;
    return 0;
}

static int load_pre(load_ctx *c, const cJSON *p, const char *where, size_t *cap) {
    zoff_tok *tok = c->tok;
    char f[256];
    if (!p || cJSON_IsNull(p)) return 0;
    int rc = 0;
    const char *type = get_str(c, p, "type", where, &rc);
    if (rc) return rc;
    snprintf(f, sizeof f, "%s.type", where);
    if (!type) return bad(c, f, "missing");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        snprintf(f, sizeof f, "%s.pretokenizers", where);
        if (!cJSON_IsArray(list)) return bad(c, f, "expected an array");
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, list) {
            char w[256];
            snprintf(w, sizeof w, "%s.pretokenizers[%d]", where, i++);
            if ((rc = load_pre(c, it, w, cap))) return rc;
        }
        return 0;
    }
    if (tok->n_pres == TOK_MAX_DEPTH) return bad(c, where, "too many pre-tokenizer steps");
    if (tok->byte_level)
        return bad(c, where,
                   "a pre-tokenizer after ByteLevel is not supported (ByteLevel must be last)");
    tok_pre pre = {0};
    pre.behavior = SPLIT_ISOLATED;
    if (strcmp(type, "ByteLevel") == 0) {
        tok->byte_level = true;
        pre.prefix_space = get_bool(p, "add_prefix_space", true);
        if (get_bool(p, "use_regex", true) &&
            (rc = compile_re(c, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, false, where, &pre.re,
                             &pre.re_jit)))
            return rc;
    } else if (strcmp(type, "Split") == 0) {
        const char *pat;
        bool literal;
        if ((rc = get_pattern(c, p, where, &pat, &literal))) return rc;
        snprintf(f, sizeof f, "%s.pattern", where);
        if ((rc = compile_re(c, pat, strlen(pat), literal, f, &pre.re, &pre.re_jit))) return rc;
        const char *b = get_str(c, p, "behavior", where, &rc);
        snprintf(f, sizeof f, "%s.behavior", where);
        if (rc || !b) {
            pcre2_code_free(pre.re);
            return rc ? rc : bad(c, f, "missing");
        }
        if (strcmp(b, "Removed") == 0)
            pre.behavior = SPLIT_REMOVED;
        else if (strcmp(b, "Isolated") == 0)
            pre.behavior = SPLIT_ISOLATED;
        else if (strcmp(b, "MergedWithPrevious") == 0)
            pre.behavior = SPLIT_MERGED_WITH_PREVIOUS;
        else if (strcmp(b, "MergedWithNext") == 0)
            pre.behavior = SPLIT_MERGED_WITH_NEXT;
        else if (strcmp(b, "Contiguous") == 0)
            pre.behavior = SPLIT_CONTIGUOUS;
        else {
            pcre2_code_free(pre.re);
            return bad(c, f,
                       "expected Removed, Isolated, MergedWithPrevious, MergedWithNext or "
                       "Contiguous");
        }
        pre.invert = get_bool(p, "invert", false);
    } else if (strcmp(type, "Metaspace") == 0) {
        pre.metaspace = true;
        if ((rc = replacement_char(c, p, where, pre.repl, &pre.repl_len))) return rc;
        if ((rc = prepend_scheme(c, p, where, &pre.prepend_scheme))) return rc;
        if (get_bool(p, "split", true)) {
            pre.behavior = SPLIT_MERGED_WITH_NEXT;
            if ((rc = compile_re(c, pre.repl, pre.repl_len, true, where, &pre.re, &pre.re_jit)))
                return rc;
        }
    } else if (strcmp(type, "Digits") == 0) {
        const char *pat = get_bool(p, "individual_digits", false) ? "\\p{N}" : "\\p{N}+";
        if ((rc = compile_re(c, pat, strlen(pat), false, where, &pre.re, &pre.re_jit))) return rc;
    } else {
        char what[200];
        snprintf(what, sizeof what,
                 "pre-tokenizer '%s' is not supported (ByteLevel, Split, Metaspace, Digits, "
                 "Sequence are)",
                 type);
        return bad(c, f, what);
    }
    tok_pre *np = grow(tok->pres, cap, tok->n_pres + 1, sizeof *np);
    if (!np) {
        pcre2_code_free(pre.re);
        return -ENOMEM;
    }
    tok->pres = np;
    tok->pres[tok->n_pres++] = pre;
    return 0;
}

/* --- decoder ---------------------------------------------------------------------------- */

static int load_decoder(load_ctx *c, const cJSON *d, const char *where, size_t *cap) {
    zoff_tok *tok = c->tok;
    char f[256];
    if (!d || cJSON_IsNull(d)) return 0;
    tok->has_decoder = true;
    int rc = 0;
    const char *type = get_str(c, d, "type", where, &rc);
    if (rc) return rc;
    snprintf(f, sizeof f, "%s.type", where);
    if (!type) return bad(c, f, "missing");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        snprintf(f, sizeof f, "%s.decoders", where);
        if (!cJSON_IsArray(list)) return bad(c, f, "expected an array");
        int i = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, list) {
            char w[256];
            snprintf(w, sizeof w, "%s.decoders[%d]", where, i++);
            if ((rc = load_decoder(c, it, w, cap))) return rc;
        }
        return 0;
    }
    tok_dec dec = {0};
    if (strcmp(type, "ByteLevel") == 0) {
        dec.kind = DEC_BYTELEVEL;
    } else if (strcmp(type, "ByteFallback") == 0) {
        dec.kind = DEC_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        dec.kind = DEC_FUSE;
    } else if (strcmp(type, "Replace") == 0) {
        const char *pat;
        bool literal;
        if ((rc = get_pattern(c, d, where, &pat, &literal))) return rc;
        snprintf(f, sizeof f, "%s.pattern", where);
        if (!literal || !*pat) return bad(c, f, "only a non-empty String pattern is supported");
        const char *content = get_str(c, d, "content", where, &rc);
        if (rc) return rc;
        snprintf(f, sizeof f, "%s.content", where);
        if (!content) return bad(c, f, "missing");
        dec.kind = DEC_REPLACE;
        dec.a_len = strlen(pat);
        dec.b_len = strlen(content);
        dec.a = dup_n(pat, dec.a_len);
        dec.b = dup_n(content, dec.b_len);
    } else if (strcmp(type, "Strip") == 0) {
        const char *content = get_str(c, d, "content", where, &rc);
        if (rc) return rc;
        snprintf(f, sizeof f, "%s.content", where);
        uint32_t cp;
        if (!content || !*content ||
            tok_utf8_decode((const unsigned char *)content, strlen(content), &cp) !=
                strlen(content))
            return bad(c, f, "expected one character");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(d, "start");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(d, "stop");
        snprintf(f, sizeof f, "%s.start/stop", where);
        if (!cJSON_IsNumber(s) || !cJSON_IsNumber(e) || s->valueint < 0 || e->valueint < 0)
            return bad(c, f, "expected two counts");
        dec.kind = DEC_STRIP;
        dec.a_len = strlen(content);
        dec.a = dup_n(content, dec.a_len);
        dec.start = s->valueint;
        dec.stop = e->valueint;
    } else if (strcmp(type, "Metaspace") == 0) {
        char r[8];
        size_t rl;
        if ((rc = replacement_char(c, d, where, r, &rl))) return rc;
        dec.kind = DEC_METASPACE;
        dec.a = dup_n(r, rl);
        dec.a_len = rl;
        if ((rc = prepend_scheme(c, d, where, &dec.prepend_scheme))) {
            free(dec.a);
            return rc;
        }
    } else {
        char what[200];
        snprintf(what, sizeof what,
                 "decoder '%s' is not supported (ByteLevel, Metaspace, Replace, ByteFallback, "
                 "Fuse, Strip, Sequence are)",
                 type);
        return bad(c, f, what);
    }
    if ((dec.kind == DEC_REPLACE && (!dec.a || !dec.b)) ||
        ((dec.kind == DEC_STRIP || dec.kind == DEC_METASPACE) && !dec.a)) {
        free(dec.a);
        free(dec.b);
        return -ENOMEM;
    }
    tok_dec *nd = grow(tok->decs, cap, tok->n_decs + 1, sizeof *nd);
    if (!nd) {
        free(dec.a);
        free(dec.b);
        return -ENOMEM;
    }
    tok->decs = nd;
    tok->decs[tok->n_decs++] = dec;
    return 0;
}

/* --- model ------------------------------------------------------------------------------ */

/* The model-level bytes of a token as written: byte-level tokens are mapped back to raw bytes
 * (returns false if a character is no byte's), others are taken as they are. */
static bool model_bytes(const zoff_tok *tok, const char *s, char *out, size_t *len) {
    size_t n = strlen(s);
    if (!tok->byte_level) {
        memcpy(out, s, n);
        *len = n;
        return true;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = tok_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        int b = l ? tok_cp_to_byte(cp) : -1;
        if (b < 0) return false;
        out[o++] = (char)b;
        i += l;
    }
    *len = o;
    return true;
}

static int32_t lookup_file(load_ctx *c, const char *s, size_t n) {
    return tok_strmap_get(&c->file_map, s, n);
}

static int load_merge(load_ctx *c, const char *a, size_t an, const char *b, size_t bn, int32_t rank,
                      int i) {
    char f[64];
    snprintf(f, sizeof f, "model.merges[%d]", i);
    int32_t ia = lookup_file(c, a, an), ib = lookup_file(c, b, bn);
    char *ab = malloc(an + bn + 1);
    if (!ab) return -ENOMEM;
    memcpy(ab, a, an);
    memcpy(ab + an, b, bn);
    int32_t id = lookup_file(c, ab, an + bn);
    free(ab);
    if (ia < 0 || ib < 0 || id < 0)
        return bad(c, f, "a token of this merge or the merged token is not in model.vocab");
    return tok_merges_put(&c->tok->merges, ia, ib, rank, id);
}

static int load_model(load_ctx *c, const cJSON *m) {
    zoff_tok *tok = c->tok;
    int rc = 0;
    if (!cJSON_IsObject(m)) return bad(c, "model", "missing");
    const char *type = get_str(c, m, "type", "model", &rc);
    if (rc) return rc;
    if (type && strcmp(type, "BPE") != 0) {
        char what[160];
        snprintf(what, sizeof what, "model type '%s' is not supported (BPE is)", type);
        return bad(c, "model.type", what);
    }
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (dropout && !cJSON_IsNull(dropout) &&
        !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return bad(c, "model.dropout", "BPE dropout is not supported");
    const char *prefix = get_str(c, m, "continuing_subword_prefix", "model", &rc);
    if (rc) return rc;
    if (prefix && *prefix) return bad(c, "model.continuing_subword_prefix", "not supported");
    const char *suffix = get_str(c, m, "end_of_word_suffix", "model", &rc);
    if (rc) return rc;
    if (suffix && *suffix) return bad(c, "model.end_of_word_suffix", "not supported");
    tok->byte_fallback = get_bool(m, "byte_fallback", false);
    tok->fuse_unk = get_bool(m, "fuse_unk", false);
    tok->ignore_merges = get_bool(m, "ignore_merges", false);

    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    if (!cJSON_IsObject(vocab)) return bad(c, "model.vocab", "expected an object");
    int64_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > INT32_MAX - 1 ||
            it->valuedouble != (double)it->valueint) {
            char f[300];
            snprintf(f, sizeof f, "model.vocab[\"%.200s\"]", it->string);
            return bad(c, f, "expected a non-negative integer id");
        }
        if (it->valueint > max_id) max_id = it->valueint;
    }
    tok->n_vocab = (size_t)(max_id + 1);
    tok->vocab_text = calloc(tok->n_vocab ? tok->n_vocab : 1, sizeof(char *));
    if (!tok->vocab_text) return -ENOMEM;
    char *buf = NULL;
    size_t buf_cap = 0;
    cJSON_ArrayForEach(it, vocab) {
        const char *s = it->string;
        size_t n = strlen(s);
        if (!tok->vocab_text[it->valueint]) {
            tok->vocab_text[it->valueint] = dup_n(s, n);
            if (!tok->vocab_text[it->valueint]) {
                rc = -ENOMEM;
                goto out;
            }
        }
        if ((rc = tok_strmap_put(&c->file_map, s, n, it->valueint))) goto out;
        if (buf_cap < n + 1) {
            free(buf);
            buf_cap = 2 * n + 16;
            if (!(buf = malloc(buf_cap))) {
                rc = -ENOMEM;
                goto out;
            }
        }
        size_t bl;
        if (model_bytes(tok, s, buf, &bl) &&
            (rc = tok_strmap_put(&tok->model_map, buf, bl, it->valueint)))
            goto out;
    }

    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (merges && !cJSON_IsArray(merges)) {
        rc = bad(c, "model.merges", "expected an array");
        goto out;
    }
    int i = 0;
    cJSON_ArrayForEach(it, merges) {
        char f[64];
        snprintf(f, sizeof f, "model.merges[%d]", i);
        if (cJSON_IsString(it)) { /* "a b" */
            const char *s = it->valuestring, *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                rc = bad(c, f, "expected two tokens separated by one space");
                goto out;
            }
            rc = load_merge(c, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), i, i);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            const char *a = cJSON_GetArrayItem(it, 0)->valuestring;
            const char *b = cJSON_GetArrayItem(it, 1)->valuestring;
            rc = load_merge(c, a, strlen(a), b, strlen(b), i, i);
        } else {
            rc = bad(c, f, "expected \"a b\" or [\"a\", \"b\"]");
        }
        if (rc) goto out;
        i++;
    }

    tok->unk_id = -1;
    const char *unk = get_str(c, m, "unk_token", "model", &rc);
    if (rc) goto out;
    if (unk) {
        tok->unk_id = lookup_file(c, unk, strlen(unk));
        if (tok->unk_id < 0) {
            rc = bad(c, "model.unk_token", "not in model.vocab");
            goto out;
        }
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        tok->fallback_id[b] = tok->byte_fallback ? lookup_file(c, name, 6) : -1;
        if (tok->byte_level) {
            char ch[4];
            size_t n = tok_utf8_encode(tok_byte_to_cp((uint8_t)b), ch);
            tok->byte_id[b] = lookup_file(c, ch, n);
        } else {
            tok->byte_id[b] = -1;
        }
        if (b < 128) {
            char ch = (char)b;
            tok->ascii_id[b] = lookup_file(c, &ch, 1);
        }
    }
out:
    free(buf);
    return rc;
}

/* --- added tokens ----------------------------------------------------------------------- */

static int cmp_added(const void *a, const void *b, void *base) {
    const tok_added *added = base;
    const tok_added *x = &added[*(const int32_t *)a], *y = &added[*(const int32_t *)b];
    unsigned char fx = (unsigned char)x->match[0], fy = (unsigned char)y->match[0];
    if (fx != fy) return fx < fy ? -1 : 1;
    if (x->match_len != y->match_len) return x->match_len > y->match_len ? -1 : 1;
    return memcmp(x->match, y->match, x->match_len);
}

static int build_set(zoff_tok *tok, tok_added_set *set, bool normalized) {
    set->order = malloc((tok->n_added ? tok->n_added : 1) * sizeof(int32_t));
    if (!set->order) return -ENOMEM;
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].normalized == normalized) set->order[set->n++] = (int32_t)i;
    qsort_r(set->order, set->n, sizeof(int32_t), cmp_added, tok->added);
    size_t j = 0;
    for (int b = 0; b < 256; b++) {
        set->first[b] = (uint32_t)j;
        while (j < set->n && (unsigned char)tok->added[set->order[j]].match[0] == b)
            j++;
    }
    set->first[256] = (uint32_t)j;
    return 0;
}

static int load_added(load_ctx *c, const cJSON *list) {
    zoff_tok *tok = c->tok;
    if (!list || cJSON_IsNull(list)) return 0;
    if (!cJSON_IsArray(list)) return bad(c, "added_tokens", "expected an array");
    size_t n = (size_t)cJSON_GetArraySize(list);
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (!tok->added) return -ENOMEM;
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, list) {
        char w[64], f[80];
        snprintf(w, sizeof w, "added_tokens[%d]", i++);
        int rc = 0;
        const char *content = get_str(c, it, "content", w, &rc);
        if (rc) return rc;
        snprintf(f, sizeof f, "%s.content", w);
        if (!content || !*content) return bad(c, f, "missing or empty");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        snprintf(f, sizeof f, "%s.id", w);
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > INT32_MAX - 1)
            return bad(c, f, "expected a non-negative integer");
        if (get_bool(it, "single_word", false)) {
            snprintf(f, sizeof f, "%s.single_word", w);
            return bad(c, f, "single_word added tokens are not supported");
        }
        tok_added *a = &tok->added[tok->n_added++];
        a->len = strlen(content);
        a->content = dup_n(content, a->len);
        if (!a->content) return -ENOMEM;
        a->id = id->valueint;
        a->special = get_bool(it, "special", false);
        a->normalized = get_bool(it, "normalized", !a->special);
        a->lstrip = get_bool(it, "lstrip", false);
        a->rstrip = get_bool(it, "rstrip", false);
        int nrc = a->normalized && tok->n_norms
                      ? tok_normalize_copy(tok, a->content, a->len, &a->match, &a->match_len)
                      : ((a->match = dup_n(content, a->len)) ? 0 : -ENOMEM);
        if (nrc) return nrc;
        a->match_len = a->match ? a->match_len : 0;
        if (!a->normalized || !tok->n_norms) a->match_len = a->len;
        if (a->match_len == 0) {
            snprintf(f, sizeof f, "%s.content", w);
            return bad(c, f, "empty once normalized");
        }
    }
    int rc = build_set(tok, &tok->raw_set, false);
    if (!rc) rc = build_set(tok, &tok->norm_set, true);
    return rc;
}

/* Whether a SentencePiece-style word can be cut before each run of the boundary character S
 * (what the Metaspace pre-tokenizer or a Replace(' ', S) normalizer writes): BPE then gives
 * the same ids piece by piece, because a merge across the cut would make a token with S after
 * another character, and there is none; the unknown-token fusing stops at S too, since S is a
 * token. Lets the word cache work on texts that are one long "word". */
static void find_word_sep(zoff_tok *tok) {
    const char *s = NULL;
    size_t sl = 0;
    if (tok->byte_level || tok->ignore_merges) return;
    for (size_t i = 0; i < tok->n_pres; i++)
        if (tok->pres[i].metaspace) s = tok->pres[i].repl, sl = tok->pres[i].repl_len;
    for (size_t i = 0; !s && i < tok->n_norms; i++)
        if (tok->norms[i].kind == NORM_REPLACE && tok->norms[i].a_len == 1 &&
            tok->norms[i].a[0] == ' ' && tok->norms[i].b_len > 0 && tok->norms[i].b_len <= 4)
            s = tok->norms[i].b, sl = tok->norms[i].b_len;
    if (!s || tok_strmap_get(&tok->model_map, s, sl) < 0) return;
    const tok_strmap *m = &tok->model_map;
    for (size_t i = 0; i < m->n; i++) {
        const char *k = m->arena + m->entries[i].off;
        size_t n = m->entries[i].len, j = 0;
        while (j + sl <= n && memcmp(k + j, s, sl) == 0)
            j += sl;
        if (j < n && memmem(k + j, n - j, s, sl)) return;
    }
    memcpy(tok->word_sep, s, sl);
    tok->word_sep_len = sl;
}

int zoff_tok_load(const char *path, zoff_tok **out) {
    *out = NULL;
    char file[4096];
    struct stat sb;
    if (stat(path, &sb) != 0) return zoff_fail(-errno, TOK_MOD, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        snprintf(file, sizeof file, "%s/tokenizer.json", path);
        if (stat(file, &sb) != 0)
            return zoff_fail(-ENOENT, TOK_MOD, "%s: no tokenizer.json in this directory", path);
    } else {
        snprintf(file, sizeof file, "%s", path);
    }
    int rc = 0;
    size_t len;
    char *text = read_file(file, &len, &rc);
    if (!text) return rc;
    cJSON *doc = cJSON_ParseWithLength(text, len);
    zoff_tok *tok = calloc(1, sizeof *tok);
    load_ctx c = {.tok = tok, .file = file};
    if (!tok) {
        rc = -ENOMEM;
        goto out;
    }
    if (!doc) {
        const char *e = cJSON_GetErrorPtr();
        rc = zoff_fail(ZOFF_EFORMAT, TOK_MOD, "%s: not valid JSON (near byte %zu)", file,
                       e && e >= text && e <= text + len ? (size_t)(e - text) : (size_t)0);
        goto out;
    }
    if (!(tok->path = dup_n(file, strlen(file)))) {
        rc = -ENOMEM;
        goto out;
    }
    /* the pre-tokenizer first: it decides whether the model's strings are byte-level */
    size_t cap = 0;
    if ((rc = load_pre(&c, cJSON_GetObjectItemCaseSensitive(doc, "pre_tokenizer"), "pre_tokenizer",
                       &cap)))
        goto out;
    cap = 0;
    if ((rc = load_normalizer(&c, cJSON_GetObjectItemCaseSensitive(doc, "normalizer"), "normalizer",
                              &cap)))
        goto out;
    cap = 0;
    if ((rc = load_decoder(&c, cJSON_GetObjectItemCaseSensitive(doc, "decoder"), "decoder", &cap)))
        goto out;
    if ((rc = load_model(&c, cJSON_GetObjectItemCaseSensitive(doc, "model")))) goto out;
    if ((rc = load_added(&c, cJSON_GetObjectItemCaseSensitive(doc, "added_tokens")))) goto out;
    find_word_sep(tok);
    tok->n_total = tok->n_vocab;
    for (size_t i = 0; i < tok->n_added; i++)
        if ((size_t)tok->added[i].id + 1 > tok->n_total)
            tok->n_total = (size_t)tok->added[i].id + 1;
    tok->md = pcre2_match_data_create(8, NULL);
    if (!tok->md) rc = -ENOMEM;
out:
    tok_strmap_free(&c.file_map);
    cJSON_Delete(doc);
    free(text);
    if (rc) {
        zoff_tok_free(tok);
        return rc;
    }
    *out = tok;
    return 0;
}
