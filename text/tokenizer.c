/* Encoding and decoding with the tables that tokenizer_load.c builds, step for step as the
 * `tokenizers` library does it:
 *   text -> (invalid UTF-8 replaced) -> split off added tokens that are not normalized
 *        -> per remaining segment: normalizers -> split off normalized added tokens
 *        -> pre-tokenizer steps (each a text transform and a regex split, depth first)
 *        -> BPE per piece (cache, ignore_merges, byte fallback/unk, merges by rank) -> ids.
 * The BPE merge loop replays `tokenizers`' Word::merge_all: a min-heap on (rank, position)
 * with stale entries skipped by the same test, so ties and overlaps resolve identically.
 * Encode scratch (cache, heap, per-depth buffers, PCRE2 match data) lives in the tokenizer:
 * one encoding thread per tokenizer (tokenizer.h). */
#include "text/tokenizer_internal.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <utf8proc.h>
#include <string.h>

/* --- small utilities -------------------------------------------------------------------- */

uint64_t tok_hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static int strmap_grow(tok_strmap *m) {
    size_t nc = m->cap ? m->cap * 2 : 1024;
    uint32_t *slots = calloc(nc, sizeof *slots);
    if (!slots) return -ENOMEM;
    for (size_t i = 0; i < m->n; i++) {
        size_t j = (size_t)m->entries[i].hash & (nc - 1);
        while (slots[j])
            j = (j + 1) & (nc - 1);
        slots[j] = (uint32_t)i + 1;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = nc;
    return 0;
}

int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t value) {
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m)) return -ENOMEM;
    uint64_t h = tok_hash_bytes(key, len);
    size_t j = (size_t)h & (m->cap - 1);
    while (m->slots[j]) {
        struct tok_strmap_entry *e = &m->entries[m->slots[j] - 1];
        if (e->hash == h && e->len == len && memcmp(m->arena + e->off, key, len) == 0) {
            e->value = value;
            return 0;
        }
        j = (j + 1) & (m->cap - 1);
    }
    if (m->n == m->entries_cap) {
        size_t nc = m->entries_cap ? m->entries_cap * 2 : 1024;
        void *p = realloc(m->entries, nc * sizeof *m->entries);
        if (!p) return -ENOMEM;
        m->entries = p;
        m->entries_cap = nc;
    }
    if (m->arena_len + len > m->arena_cap) {
        size_t nc = m->arena_cap ? m->arena_cap * 2 : 16384;
        while (nc < m->arena_len + len)
            nc *= 2;
        char *p = realloc(m->arena, nc);
        if (!p) return -ENOMEM;
        m->arena = p;
        m->arena_cap = nc;
    }
    memcpy(m->arena + m->arena_len, key, len);
    m->entries[m->n] = (struct tok_strmap_entry){h, m->arena_len, (uint32_t)len, value};
    m->arena_len += len;
    m->slots[j] = (uint32_t)++m->n;
    return 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len) {
    if (!m->cap) return -1;
    uint64_t h = tok_hash_bytes(key, len);
    size_t j = (size_t)h & (m->cap - 1);
    while (m->slots[j]) {
        const struct tok_strmap_entry *e = &m->entries[m->slots[j] - 1];
        if (e->hash == h && e->len == len && memcmp(m->arena + e->off, key, len) == 0)
            return e->value;
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

void tok_strmap_free(tok_strmap *m) {
    free(m->slots);
    free(m->entries);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

static inline size_t merge_slot(uint64_t key, size_t cap) {
    key *= 0x9E3779B97F4A7C15ull;
    return (size_t)(key >> 20) & (cap - 1);
}

int tok_merges_put(tok_merges *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if ((m->n + 1) * 2 > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 1024;
        struct tok_merge_slot *s = calloc(nc, sizeof *s);
        if (!s) return -ENOMEM;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->slots[i].key) continue;
            size_t j = merge_slot(m->slots[i].key, nc);
            while (s[j].key)
                j = (j + 1) & (nc - 1);
            s[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = s;
        m->cap = nc;
    }
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t j = merge_slot(key, m->cap);
    while (m->slots[j].key && m->slots[j].key != key)
        j = (j + 1) & (m->cap - 1);
    if (!m->slots[j].key) m->n++;
    /* a repeated pair takes the later rank, as a Rust HashMap built from the list does */
    m->slots[j] = (struct tok_merge_slot){key, rank, id};
    return 0;
}

static inline const struct tok_merge_slot *merges_get(const tok_merges *m, int32_t a, int32_t b) {
    if (!m->cap) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t j = merge_slot(key, m->cap);
    while (m->slots[j].key) {
        if (m->slots[j].key == key) return &m->slots[j];
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}

uint32_t tok_byte_to_cp(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    /* the others, in byte order, take 256, 257, ... */
    uint32_t n = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174)) n++;
    return 256 + n;
}

int tok_cp_to_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp < 256 || cp >= 256 + 68) return -1;
    uint32_t n = 0;
    for (int i = 0; i < 256; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174) && n++ == cp - 256)
            return i;
    return -1;
}

size_t tok_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t l = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
    if (!l || l > n) return 0;
    uint32_t v = c & (0x7F >> l);
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    *cp = v;
    return l;
}

size_t tok_utf8_encode(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 with *bad set to the length of the
 * maximal invalid subpart to replace by one U+FFFD (at least 1): the Unicode "best practice"
 * that Python's errors='replace' and Rust's from_utf8_lossy follow. */
static size_t utf8_step(const unsigned char *s, size_t n, size_t *bad) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0;
    else if (c == 0xED)
        need = 2, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF)
        need = 2;
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c == 0xF4)
        need = 3, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80, hi = 0xBF;
    }
    return need + 1;
}

/* --- scratch buffers -------------------------------------------------------------------- */

static int reserve(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, nc * elem);
    if (!q) return -ENOMEM;
    *p = q;
    *cap = nc;
    return 0;
}

int zoff_tok_ids_push(zoff_tok_ids *v, int32_t id) {
    if (v->n == v->cap && reserve((void **)&v->ids, &v->cap, v->n + 1, sizeof(int32_t)))
        return -ENOMEM;
    v->ids[v->n++] = id;
    return 0;
}

void zoff_tok_ids_free(zoff_tok_ids *v) {
    free(v->ids);
    memset(v, 0, sizeof *v);
}

#define MAX_DEPTH TOK_MAX_DEPTH

typedef struct piece {
    size_t off, len;
    bool is_match;
} piece;

typedef struct sym {
    int32_t id;
    int32_t prev, next;
    bool alive;
} sym;

typedef struct heap_item {
    int32_t rank, pos, id;
} heap_item;

/* Encode scratch, kept by the tokenizer between calls (one encoding thread, tokenizer.h) so
 * that encoding many short texts does not allocate each time. */
typedef struct tok_enc {
    zoff_tok *tok;
    zoff_tok_ids *out;
    char *buf[MAX_DEPTH + 2]; /* per depth: transformed text */
    size_t buf_cap[MAX_DEPTH + 2];
    piece *pieces[MAX_DEPTH];
    size_t pieces_cap[MAX_DEPTH];
    sym *syms;
    size_t syms_cap;
    heap_item *heap;
    size_t heap_cap;
} enc;

#define SCRATCH_KEEP (1u << 20) /* buffers above this are freed after a call */

/* Frees one scratch buffer if a long text grew it beyond SCRATCH_KEEP bytes. */
static void trim_buf(void **p, size_t *cap, size_t elem) {
    if (*cap * elem > SCRATCH_KEEP) {
        free(*p);
        *p = NULL;
        *cap = 0;
    }
}

static void enc_trim(enc *e) {
    for (int i = 0; i < MAX_DEPTH + 2; i++)
        trim_buf((void **)&e->buf[i], &e->buf_cap[i], 1);
    for (int i = 0; i < MAX_DEPTH; i++)
        trim_buf((void **)&e->pieces[i], &e->pieces_cap[i], sizeof(piece));
    trim_buf((void **)&e->syms, &e->syms_cap, sizeof(sym));
    trim_buf((void **)&e->heap, &e->heap_cap, sizeof(heap_item));
}

static void enc_free(enc *e) {
    for (int i = 0; i < MAX_DEPTH + 2; i++)
        free(e->buf[i]);
    for (int i = 0; i < MAX_DEPTH; i++)
        free(e->pieces[i]);
    free(e->syms);
    free(e->heap);
}

/* --- BPE -------------------------------------------------------------------------------- */

static inline bool heap_less(const heap_item *a, const heap_item *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(heap_item *h, size_t *n, heap_item it) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&it, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = it;
}

static heap_item heap_pop(heap_item *h, size_t *n) {
    heap_item top = h[0], last = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;
        const heap_item *best = &last;
        if (l < m && heap_less(&h[l], best)) s = l, best = &h[l];
        if (r < m && heap_less(&h[r], best)) s = r;
        if (s == i) break;
        h[i] = h[s];
        i = s;
    }
    if (m) h[i] = last;
    return top;
}

/* Word::merge_all of `tokenizers`, on syms[0, n). */
static int bpe_merge(enc *e, size_t n) {
    const tok_merges *mg = &e->tok->merges;
    sym *s = e->syms;
    if (reserve((void **)&e->heap, &e->heap_cap, 3 * n + 4, sizeof(heap_item))) return -ENOMEM;
    heap_item *h = e->heap;
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const struct tok_merge_slot *m = merges_get(mg, s[i].id, s[i + 1].id);
        if (m) heap_push(h, &hn, (heap_item){m->rank, (int32_t)i, m->id});
    }
    while (hn) {
        heap_item top = heap_pop(h, &hn);
        sym *cur = &s[top.pos];
        if (!cur->alive || cur->next < 0) continue;
        sym *right = &s[cur->next];
        const struct tok_merge_slot *m = merges_get(mg, cur->id, right->id);
        if (!m || m->id != top.id) continue;
        cur->id = top.id;
        right->alive = false;
        cur->next = right->next;
        if (cur->next >= 0) s[cur->next].prev = top.pos;
        if (hn + 2 > e->heap_cap) { /* cannot happen: each merge pushes at most 2, pops 1 */
            if (reserve((void **)&e->heap, &e->heap_cap, hn + 2, sizeof(heap_item))) return -ENOMEM;
            h = e->heap;
        }
        if (cur->prev >= 0) {
            const struct tok_merge_slot *pm = merges_get(mg, s[cur->prev].id, cur->id);
            if (pm) heap_push(h, &hn, (heap_item){pm->rank, cur->prev, pm->id});
        }
        if (cur->next >= 0) {
            const struct tok_merge_slot *nm = merges_get(mg, cur->id, s[cur->next].id);
            if (nm) heap_push(h, &hn, (heap_item){nm->rank, top.pos, nm->id});
        }
    }
    return 0;
}

static inline int add_sym(enc *e, size_t *n, int32_t id) {
    if (*n == e->syms_cap && reserve((void **)&e->syms, &e->syms_cap, *n + 1, sizeof(sym)))
        return -ENOMEM;
    e->syms[*n] = (sym){id, (int32_t)*n - 1, (int32_t)*n + 1, true};
    (*n)++;
    return 0;
}

/* One character (its text as the model sees it) that is not in the vocabulary: its bytes'
 * fallback tokens, else the unknown token (pending, to fuse), else nothing. */
static int unit_missing(enc *e, size_t *n, const char *u, size_t ul, bool *unk_pending) {
    zoff_tok *tok = e->tok;
    if (tok->byte_fallback) {
        bool all = true;
        for (size_t i = 0; i < ul; i++)
            all = all && tok->fallback_id[(unsigned char)u[i]] >= 0;
        if (all) {
            for (size_t i = 0; i < ul; i++)
                if (add_sym(e, n, tok->fallback_id[(unsigned char)u[i]])) return -ENOMEM;
            return 0;
        }
    }
    if (tok->unk_id >= 0) {
        if (*unk_pending && !tok->fuse_unk && add_sym(e, n, tok->unk_id)) return -ENOMEM;
        *unk_pending = true;
    }
    return 0;
}

/* BPE of one pre-tokenized piece (model-level bytes), appended to e->out. */
static int bpe_word(enc *e, const char *p, size_t len) {
    zoff_tok *tok = e->tok;
    size_t n = 0;
    bool unk = false;
    if (tok->byte_level) {
        for (size_t i = 0; i < len; i++) {
            int32_t id = tok->byte_id[(unsigned char)p[i]];
            if (id >= 0) {
                if (unk && add_sym(e, &n, tok->unk_id)) return -ENOMEM;
                unk = false;
                if (add_sym(e, &n, id)) return -ENOMEM;
            } else {
                char ch[4];
                size_t cl = tok_utf8_encode(tok_byte_to_cp((unsigned char)p[i]), ch);
                if (unit_missing(e, &n, ch, cl, &unk)) return -ENOMEM;
            }
        }
    } else {
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            size_t l = tok_utf8_decode((const unsigned char *)p + i, len - i, &cp);
            if (!l) l = 1; /* cannot happen: the text was made valid UTF-8 */
            int32_t id = l == 1 && (unsigned char)p[i] < 128
                             ? tok->ascii_id[(unsigned char)p[i]]
                             : tok_strmap_get(&tok->model_map, p + i, l);
            if (id >= 0) {
                if (unk && add_sym(e, &n, tok->unk_id)) return -ENOMEM;
                unk = false;
                if (add_sym(e, &n, id)) return -ENOMEM;
            } else if (unit_missing(e, &n, p + i, l, &unk)) {
                return -ENOMEM;
            }
            i += l;
        }
    }
    if (unk && add_sym(e, &n, tok->unk_id)) return -ENOMEM;
    if (n == 0) return 0;
    e->syms[n - 1].next = -1;
    if (n > 1 && bpe_merge(e, n)) return -ENOMEM;
    for (int32_t i = 0; i >= 0; i = e->syms[i].next)
        if (zoff_tok_ids_push(e->out, e->syms[i].id)) return -ENOMEM;
    return 0;
}

#define CACHE_CAP     (1u << 15)
#define CACHE_MAX_KEY 128

static int cache_clear(zoff_tok *tok) {
    if (!tok->cache) {
        tok->cache = calloc(CACHE_CAP, sizeof *tok->cache);
        if (!tok->cache) return -ENOMEM;
        tok->cache_cap = CACHE_CAP;
    } else {
        memset(tok->cache, 0, tok->cache_cap * sizeof *tok->cache);
    }
    tok->cache_n = tok->cache_keys_len = tok->cache_ids_len = 0;
    return 0;
}

static int model_piece(enc *e, const char *p, size_t len) {
    zoff_tok *tok = e->tok;
    if (len == 0) return 0;
    if (tok->ignore_merges) {
        int32_t id = tok_strmap_get(&tok->model_map, p, len);
        if (id >= 0) return zoff_tok_ids_push(e->out, id);
    }
    if (len > CACHE_MAX_KEY) return bpe_word(e, p, len);
    if (!tok->cache && cache_clear(tok)) return -ENOMEM;
    uint64_t h = tok_hash_bytes(p, len) | 1;
    size_t j = (size_t)h & (tok->cache_cap - 1);
    while (tok->cache[j].hash) {
        tok_cache_entry *c = &tok->cache[j];
        if (c->hash == h && c->key_len == len &&
            memcmp(tok->cache_keys + c->key_off, p, len) == 0) {
            zoff_tok_ids *o = e->out;
            if (reserve((void **)&o->ids, &o->cap, o->n + c->n_ids, sizeof(int32_t)))
                return -ENOMEM;
            if (c->n_ids)
                memcpy(o->ids + o->n, tok->cache_ids + c->ids_off, c->n_ids * sizeof(int32_t));
            o->n += c->n_ids;
            return 0;
        }
        j = (j + 1) & (tok->cache_cap - 1);
    }
    size_t before = e->out->n;
    int rc = bpe_word(e, p, len);
    if (rc) return rc;
    size_t n_ids = e->out->n - before;
    if (tok->cache_n * 2 >= tok->cache_cap) { /* full: start over (results do not depend on it) */
        if (cache_clear(tok)) return -ENOMEM;
        j = (size_t)h & (tok->cache_cap - 1);
    }
    if (reserve((void **)&tok->cache_keys, &tok->cache_keys_cap, tok->cache_keys_len + len, 1) ||
        reserve((void **)&tok->cache_ids, &tok->cache_ids_cap, tok->cache_ids_len + n_ids,
                sizeof(int32_t)))
        return -ENOMEM;
    memcpy(tok->cache_keys + tok->cache_keys_len, p, len);
    if (n_ids)
        memcpy(tok->cache_ids + tok->cache_ids_len, e->out->ids + before, n_ids * sizeof(int32_t));
    tok->cache[j] = (tok_cache_entry){h, (uint32_t)tok->cache_keys_len, (uint32_t)len,
                                      (uint32_t)tok->cache_ids_len, (uint32_t)n_ids};
    tok->cache_keys_len += len;
    tok->cache_ids_len += n_ids;
    tok->cache_n++;
    return 0;
}

/* One pre-tokenized word; cut before each run of the word boundary where that is exact. */
static int model_word(enc *e, const char *p, size_t len) {
    const zoff_tok *tok = e->tok;
    size_t sl = tok->word_sep_len;
    if (!sl) return model_piece(e, p, len);
    size_t start = 0, k = 0;
    const char *s = tok->word_sep;
    for (;;) {
        const char *hit = memmem(p + k, len - k, s, sl);
        if (!hit) break;
        size_t at = (size_t)(hit - p);
        if (at > start && !(at >= sl && memcmp(p + at - sl, s, sl) == 0)) {
            int rc = model_piece(e, p + start, at - start);
            if (rc) return rc;
            start = at;
        }
        k = at + sl;
    }
    return model_piece(e, p + start, len - start);
}

/* --- pre-tokenizers --------------------------------------------------------------------- */

static int push_piece(enc *e, int depth, size_t *n, piece p) {
    if (reserve((void **)&e->pieces[depth], &e->pieces_cap[depth], *n + 1, sizeof(piece)))
        return -ENOMEM;
    e->pieces[depth][(*n)++] = p;
    return 0;
}

static int pre_step(enc *e, int depth, const char *p, size_t len, bool first);

/* The regex split of one step into e->pieces[depth] (covering segments, matches marked), then
 * the behavior's merging, as NormalizedString::split does. */
/* The next non-empty match of st's regex in p[*off, len): 1 with [*s, *t), 0 if none, or an
 * error. Empty matches are stepped over by one character. */
static int next_match(enc *e, const tok_pre *st, const char *p, size_t len, size_t *off, size_t *s,
                      size_t *t) {
    while (*off < len) {
        int r = st->re_jit ? pcre2_jit_match(st->re, (PCRE2_SPTR)p, len, *off, 0, e->tok->md, NULL)
                           : pcre2_match(st->re, (PCRE2_SPTR)p, len, *off, PCRE2_NO_UTF_CHECK,
                                         e->tok->md, NULL);
        if (r == PCRE2_ERROR_NOMATCH) return 0;
        if (r < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(r, msg, sizeof msg);
            return zoff_fail(ZOFF_EFORMAT, TOK_MOD, "%s: pre-tokenizer regex failed: %s",
                             e->tok->path, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->tok->md);
        if (ov[1] > ov[0]) {
            *s = ov[0];
            *t = ov[1];
            return 1;
        }
        *off = ov[0] + 1;
        while (*off < len && ((unsigned char)p[*off] & 0xC0) == 0x80)
            (*off)++;
    }
    return 0;
}

static int split_pieces(enc *e, int depth, const tok_pre *st, const char *p, size_t len,
                        size_t *count) {
    size_t n = 0, prev = 0, off = 0, s, t;
    int r;
    while ((r = next_match(e, st, p, len, &off, &s, &t)) > 0) {
        if (s > prev && push_piece(e, depth, &n, (piece){prev, s - prev, st->invert}))
            return -ENOMEM;
        if (push_piece(e, depth, &n, (piece){s, t - s, !st->invert})) return -ENOMEM;
        prev = off = t;
    }
    if (r < 0) return r;
    if (prev < len && push_piece(e, depth, &n, (piece){prev, len - prev, st->invert}))
        return -ENOMEM;
    piece *v = e->pieces[depth];
    size_t m = 0;
    bool prev_match = false;
    switch (st->behavior) {
    case SPLIT_ISOLATED:
        m = n;
        break;
    case SPLIT_REMOVED:
        for (size_t i = 0; i < n; i++)
            if (!v[i].is_match) v[m++] = v[i];
        break;
    case SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < n; i++) {
            if (v[i].is_match && !prev_match && m > 0)
                v[m - 1].len = v[i].off + v[i].len - v[m - 1].off;
            else
                v[m++] = v[i];
            prev_match = v[i].is_match;
        }
        break;
    case SPLIT_MERGED_WITH_NEXT: /* the same, walking backwards */
        m = n;
        for (size_t k = n; k-- > 0;) {
            piece cur = v[k];
            if (cur.is_match && !prev_match && m < n) {
                v[m].len += v[m].off - cur.off;
                v[m].off = cur.off;
            } else {
                v[--m] = cur;
            }
            prev_match = cur.is_match;
        }
        memmove(v, v + m, (n - m) * sizeof *v);
        m = n - m;
        break;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < n; i++) {
            if (m > 0 && v[i].is_match == prev_match)
                v[m - 1].len = v[i].off + v[i].len - v[m - 1].off;
            else
                v[m++] = v[i];
            prev_match = v[i].is_match;
        }
        break;
    }
    *count = m;
    return 0;
}

static int pre_step(enc *e, int depth, const char *p, size_t len, bool first) {
    zoff_tok *tok = e->tok;
    if (len == 0) return 0;
    if ((size_t)depth == tok->n_pres) return model_word(e, p, len);
    const tok_pre *st = &tok->pres[depth];
    if (st->prefix_space && p[0] != ' ') {
        if (reserve((void **)&e->buf[depth], &e->buf_cap[depth], len + 1, 1)) return -ENOMEM;
        e->buf[depth][0] = ' ';
        memcpy(e->buf[depth] + 1, p, len);
        p = e->buf[depth];
        len++;
    } else if (st->metaspace) {
        size_t spaces = 0;
        for (size_t i = 0; i < len; i++)
            spaces += p[i] == ' ';
        size_t rl = st->repl_len, need = len + spaces * (rl - 1) + rl;
        if (reserve((void **)&e->buf[depth], &e->buf_cap[depth], need, 1)) return -ENOMEM;
        char *o = e->buf[depth];
        size_t k = 0;
        bool starts = (p[0] == ' ') || (len >= rl && memcmp(p, st->repl, rl) == 0);
        if (!starts && (st->prepend_scheme == PREPEND_ALWAYS ||
                        (st->prepend_scheme == PREPEND_FIRST && first))) {
            memcpy(o, st->repl, rl);
            k = rl;
        }
        for (size_t i = 0; i < len; i++) {
            if (p[i] == ' ') {
                memcpy(o + k, st->repl, rl);
                k += rl;
            } else {
                o[k++] = p[i];
            }
        }
        p = o;
        len = k;
    }
    if (!st->re) return pre_step(e, depth + 1, p, len, first);
    int rc;
    if (st->behavior == SPLIT_ISOLATED) { /* every gap and match a piece: no list needed */
        size_t prev = 0, off = 0, s, t;
        while ((rc = next_match(e, st, p, len, &off, &s, &t)) > 0) {
            /* the children match with the same match data: s and t are copied out first */
            if (s > prev && (rc = pre_step(e, depth + 1, p + prev, s - prev, first && prev == 0)))
                return rc;
            if ((rc = pre_step(e, depth + 1, p + s, t - s, first && s == 0))) return rc;
            prev = off = t;
        }
        if (rc < 0) return rc;
        return prev < len ? pre_step(e, depth + 1, p + prev, len - prev, first && prev == 0) : 0;
    }
    size_t n;
    rc = split_pieces(e, depth, st, p, len, &n);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        piece pc = e->pieces[depth][i]; /* deeper steps use their own piece lists */
        if ((rc = pre_step(e, depth + 1, p + pc.off, pc.len, first && pc.off == 0))) return rc;
    }
    return 0;
}

/* --- added tokens and normalizers ------------------------------------------------------- */

/* Unicode White_Space (Rust's char::is_whitespace, the regex \s of tokenizers' strip). */
static bool is_white_space(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* The length of the white-space character that starts at s (n bytes), or 0. */
static size_t space_at(const char *s, size_t n) {
    uint32_t cp;
    size_t l = tok_utf8_decode((const unsigned char *)s, n, &cp);
    return l && is_white_space(cp) ? l : 0;
}

/* The length of the white-space character that ends at s[end], or 0. */
static size_t space_before(const char *s, size_t end) {
    size_t b = end;
    while (b > 0 && end - b < 4) {
        b--;
        if (((unsigned char)s[b] & 0xC0) != 0x80) break;
    }
    return end > 0 && space_at(s + b, end - b) == end - b ? end - b : 0;
}

/* The leftmost-longest added token in s[from, n): its index in tok->added and its span with
 * lstrip/rstrip applied (never reaching before `from`). */
static bool find_added(const zoff_tok *tok, const tok_added_set *set, const char *s, size_t n,
                       size_t from, size_t *start, size_t *stop, int32_t *which) {
    for (size_t i = from; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        for (uint32_t k = set->first[b]; k < set->first[b + 1]; k++) {
            const tok_added *a = &tok->added[set->order[k]];
            if (a->match_len <= n - i && memcmp(s + i, a->match, a->match_len) == 0) {
                size_t st = i, sp = i + a->match_len;
                if (a->lstrip) { /* Unicode white space before, not into the previous match */
                    size_t w;
                    while ((w = space_before(s, st)) > 0 && st - w >= from)
                        st -= w;
                }
                if (a->rstrip) {
                    size_t w;
                    while ((w = space_at(s + sp, n - sp)) > 0)
                        sp += w;
                }
                *start = st;
                *stop = sp;
                *which = set->order[k];
                return true;
            }
        }
    }
    return false;
}

/* Runs the normalizers over s into e->buf[MAX_DEPTH] / [MAX_DEPTH + 1] (ping-pong). */
static int normalize(enc *e, const char *s, size_t n, const char **out, size_t *out_len) {
    zoff_tok *tok = e->tok;
    int cur = MAX_DEPTH;
    for (size_t k = 0; k < tok->n_norms; k++) {
        const tok_norm *nm = &tok->norms[k];
        char **b = &e->buf[cur];
        size_t *cap = &e->buf_cap[cur];
        if (nm->kind == NORM_NFC) { /* utf8proc; ASCII is its own NFC */
            size_t i = 0;
            while (i < n && (unsigned char)s[i] < 0x80)
                i++;
            if (i == n) continue;
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n,
                                              &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (r < 0) {
                free(nfc);
                return r == UTF8PROC_ERROR_NOMEM
                           ? -ENOMEM
                           : zoff_fail(ZOFF_EFORMAT, TOK_MOD, "%s: NFC normalization failed: %s",
                                       tok->path, utf8proc_errmsg(r));
            }
            int rc = reserve((void **)b, cap, (size_t)r + 1, 1);
            if (!rc) memcpy(*b, nfc, (size_t)r);
            free(nfc);
            if (rc) return rc;
            n = (size_t)r;
        } else if (nm->kind == NORM_PREPEND) {
            if (n == 0) continue; /* Prepend leaves an empty string alone */
            if (reserve((void **)b, cap, n + nm->a_len, 1)) return -ENOMEM;
            memcpy(*b, nm->a, nm->a_len);
            memcpy(*b + nm->a_len, s, n);
            n += nm->a_len;
        } else {
            size_t hits = 0;
            for (size_t i = 0; i + nm->a_len <= n;) {
                if (memcmp(s + i, nm->a, nm->a_len) == 0)
                    hits++, i += nm->a_len;
                else
                    i++;
            }
            if (reserve((void **)b, cap, n + hits * nm->b_len + 1, 1)) return -ENOMEM;
            size_t o = 0;
            for (size_t i = 0; i < n;) {
                if (i + nm->a_len <= n && memcmp(s + i, nm->a, nm->a_len) == 0) {
                    memcpy(*b + o, nm->b, nm->b_len);
                    o += nm->b_len;
                    i += nm->a_len;
                } else {
                    (*b)[o++] = s[i++];
                }
            }
            n = o;
        }
        s = *b;
        cur = cur == MAX_DEPTH ? MAX_DEPTH + 1 : MAX_DEPTH;
    }
    *out = s;
    *out_len = n;
    return 0;
}

int tok_normalize_copy(zoff_tok *tok, const char *s, size_t n, char **out, size_t *out_len) {
    enc e = {.tok = tok};
    const char *t;
    size_t tn;
    int rc = normalize(&e, s, n, &t, &tn);
    *out = rc ? NULL : malloc(tn + 1);
    if (!rc && !*out) rc = -ENOMEM;
    if (!rc) {
        memcpy(*out, t, tn);
        (*out)[tn] = 0;
        *out_len = tn;
    }
    enc_free(&e);
    return rc;
}

/* One segment between non-normalized added tokens. */
static int encode_segment(enc *e, const char *s, size_t n, bool first) {
    zoff_tok *tok = e->tok;
    const char *t = s;
    size_t tn = n;
    int rc;
    if (tok->n_norms && (rc = normalize(e, s, n, &t, &tn))) return rc;
    if (tok->norm_set.n == 0) return pre_step(e, 0, t, tn, first);
    size_t from = 0, st, sp;
    int32_t which;
    while (find_added(tok, &tok->norm_set, t, tn, from, &st, &sp, &which)) {
        if (st > from && (rc = pre_step(e, 0, t + from, st - from, first && from == 0))) return rc;
        if ((rc = zoff_tok_ids_push(e->out, tok->added[which].id))) return rc;
        from = sp;
    }
    return pre_step(e, 0, t + from, tn - from, first && from == 0);
}

int zoff_tok_encode(zoff_tok *tok, const char *text, size_t len, zoff_tok_ids *out) {
    /* invalid UTF-8 -> U+FFFD, so that PCRE2 and the model see valid text */
    char *fixed = NULL;
    for (size_t i = 0; i < len;) {
        if ((unsigned char)text[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad = 0, l = utf8_step((const unsigned char *)text + i, len - i, &bad);
        if (l) {
            i += l;
            continue;
        }
        fixed = malloc(len * 3 + 1); /* each bad byte becomes at most 3 */
        if (!fixed) return -ENOMEM;
        size_t o = 0, j = 0;
        while (j < len) {
            bad = 0;
            l = utf8_step((const unsigned char *)text + j, len - j, &bad);
            if (l) {
                memcpy(fixed + o, text + j, l);
                o += l;
                j += l;
            } else {
                memcpy(fixed + o, "\xEF\xBF\xBD", 3);
                o += 3;
                j += bad;
            }
        }
        text = fixed;
        len = o;
        break;
    }
    if (!tok->enc && !(tok->enc = calloc(1, sizeof *tok->enc))) {
        free(fixed);
        return -ENOMEM;
    }
    enc *e = tok->enc;
    e->tok = tok;
    e->out = out;
    int rc = 0;
    size_t from = 0, st, sp;
    int32_t which;
    while (find_added(tok, &tok->raw_set, text, len, from, &st, &sp, &which)) {
        if (st > from && (rc = encode_segment(e, text + from, st - from, from == 0))) goto out;
        if ((rc = zoff_tok_ids_push(out, tok->added[which].id))) goto out;
        from = sp;
    }
    if (from < len || len == 0) rc = encode_segment(e, text + from, len - from, from == 0);
out:
    e->out = NULL;
    enc_trim(e);
    free(fixed);
    return rc;
}

/* --- decoding --------------------------------------------------------------------------- */

/* A list of byte strings: token i is data[start[i], start[i + 1]). */
typedef struct slist {
    char *data;
    size_t len, cap;
    size_t *start;
    size_t count, scap;
} slist;

static int sl_begin(slist *l) {
    if (reserve((void **)&l->start, &l->scap, l->count + 2, sizeof(size_t))) return -ENOMEM;
    l->start[l->count++] = l->len;
    l->start[l->count] = l->len;
    return 0;
}

static int sl_add(slist *l, const char *p, size_t n) {
    if (reserve((void **)&l->data, &l->cap, l->len + n + 1, 1)) return -ENOMEM;
    if (n) memcpy(l->data + l->len, p, n);
    l->len += n;
    l->start[l->count] = l->len;
    return 0;
}

static inline const char *sl_tok(const slist *l, size_t i, size_t *n) {
    *n = l->start[i + 1] - l->start[i];
    return l->data + l->start[i];
}

static void sl_free(slist *l) {
    free(l->data);
    free(l->start);
    memset(l, 0, sizeof *l);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* One decoder step: in -> out. */
static int decode_step(const tok_dec *d, const slist *in, slist *out) {
    size_t n;
    const char *t;
    int rc = 0;
    switch (d->kind) {
    case DEC_BYTELEVEL: /* tokens whose characters are all bytes' become those bytes */
    case DEC_FUSE:
        if ((rc = sl_begin(out))) return rc;
        for (size_t i = 0; i < in->count && !rc; i++) {
            t = sl_tok(in, i, &n);
            if (d->kind == DEC_FUSE) {
                rc = sl_add(out, t, n);
                continue;
            }
            size_t mark = out->len;
            bool ok = true;
            for (size_t k = 0; k < n && ok && !rc;) {
                uint32_t cp;
                size_t l = tok_utf8_decode((const unsigned char *)t + k, n - k, &cp);
                int b = l ? tok_cp_to_byte(cp) : -1;
                if (b < 0) {
                    ok = false;
                    break;
                }
                char c = (char)b;
                rc = sl_add(out, &c, 1);
                k += l;
            }
            if (!ok) {
                out->len = mark;
                rc = sl_add(out, t, n);
            }
        }
        return rc;
    case DEC_BYTEFALLBACK: {
        /* consecutive "<0xXX>" tokens join one string of those bytes (passed through as they
         * are, where `tokenizers` would put U+FFFD for invalid UTF-8) */
        bool prev_byte = false;
        for (size_t i = 0; i < in->count && !rc; i++) {
            t = sl_tok(in, i, &n);
            int hi = n == 6 ? hexval(t[3]) : -1, lo = n == 6 ? hexval(t[4]) : -1;
            bool byte = n == 6 && memcmp(t, "<0x", 3) == 0 && t[5] == '>' && hi >= 0 && lo >= 0;
            if (!(byte && prev_byte) && (rc = sl_begin(out))) return rc;
            if (byte) {
                char c = (char)(hi * 16 + lo);
                rc = sl_add(out, &c, 1);
            } else {
                rc = sl_add(out, t, n);
            }
            prev_byte = byte;
        }
        return rc;
    }
    case DEC_REPLACE:
        for (size_t i = 0; i < in->count && !rc; i++) {
            t = sl_tok(in, i, &n);
            if ((rc = sl_begin(out))) return rc;
            for (size_t k = 0; k < n && !rc;) {
                if (k + d->a_len <= n && memcmp(t + k, d->a, d->a_len) == 0) {
                    rc = sl_add(out, d->b, d->b_len);
                    k += d->a_len;
                } else {
                    rc = sl_add(out, t + k, 1);
                    k++;
                }
            }
        }
        return rc;
    case DEC_STRIP:
        for (size_t i = 0; i < in->count && !rc; i++) {
            t = sl_tok(in, i, &n);
            size_t s = 0, e = n, cl = d->a_len;
            for (int k = 0; k < d->start && s + cl <= e && memcmp(t + s, d->a, cl) == 0; k++)
                s += cl;
            for (int k = 0; k < d->stop && e >= s + cl && memcmp(t + e - cl, d->a, cl) == 0; k++)
                e -= cl;
            if ((rc = sl_begin(out))) return rc;
            rc = sl_add(out, t + s, e - s);
        }
        return rc;
    case DEC_METASPACE:
        for (size_t i = 0; i < in->count && !rc; i++) {
            t = sl_tok(in, i, &n);
            if ((rc = sl_begin(out))) return rc;
            for (size_t k = 0; k < n && !rc;) {
                if (k + d->a_len <= n && memcmp(t + k, d->a, d->a_len) == 0) {
                    if (!(i == 0 && d->prepend_scheme != PREPEND_NEVER)) rc = sl_add(out, " ", 1);
                    k += d->a_len;
                } else {
                    rc = sl_add(out, t + k, 1);
                    k++;
                }
            }
        }
        return rc;
    }
    return -EINVAL;
}

static const tok_added *added_by_id(const zoff_tok *tok, int32_t id) {
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].id == id) return &tok->added[i];
    return NULL;
}

int zoff_tok_decode(const zoff_tok *tok, const int32_t *ids, size_t n, bool skip_special,
                    char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    slist a = {0}, b = {0};
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const tok_added *ad = added_by_id(tok, ids[i]);
        /* a normalized added token decodes from its normalized form, as in tokenizers */
        const char *t = ad ? ad->match : zoff_tok_token_text(tok, ids[i]);
        if (!t) {
            rc = zoff_fail(-EINVAL, TOK_MOD, "%s: id %d (position %zu) is not in the vocabulary",
                           tok->path, ids[i], i);
            goto fail;
        }
        if (skip_special && ad && ad->special) continue;
        if ((rc = sl_begin(&a)) || (rc = sl_add(&a, t, strlen(t)))) goto fail;
    }
    if (!tok->has_decoder) { /* `tokenizers` joins the tokens with spaces */
        if ((rc = sl_begin(&b))) goto fail;
        for (size_t i = 0; i < a.count; i++) {
            size_t tn;
            const char *t = sl_tok(&a, i, &tn);
            if ((i && (rc = sl_add(&b, " ", 1))) || (rc = sl_add(&b, t, tn))) goto fail;
        }
        slist tmp = a;
        a = b;
        b = tmp;
    }
    for (size_t k = 0; k < tok->n_decs; k++) {
        b.len = b.count = 0;
        if ((rc = decode_step(&tok->decs[k], &a, &b))) goto fail;
        slist tmp = a;
        a = b;
        b = tmp;
    }
    char *s = malloc(a.len + 1);
    if (!s) {
        rc = -ENOMEM;
        goto fail;
    }
    if (a.len) memcpy(s, a.data, a.len);
    s[a.len] = 0;
    *out = s;
    *out_len = a.len;
fail:
    sl_free(&a);
    sl_free(&b);
    return rc;
}

/* --- look-ups and teardown -------------------------------------------------------------- */

size_t zoff_tok_vocab_size(const zoff_tok *tok) {
    return tok->n_total;
}

int32_t zoff_tok_find(const zoff_tok *tok, const char *text) {
    size_t n = strlen(text);
    for (size_t i = 0; i < tok->n_added; i++)
        if (tok->added[i].len == n && memcmp(tok->added[i].content, text, n) == 0)
            return tok->added[i].id;
    for (size_t i = 0; i < tok->n_vocab; i++)
        if (tok->vocab_text[i] && strcmp(tok->vocab_text[i], text) == 0) return (int32_t)i;
    return -1;
}

const char *zoff_tok_token_text(const zoff_tok *tok, int32_t id) {
    if (id < 0) return NULL;
    const tok_added *a = added_by_id(tok, id);
    if (a) return a->content;
    return (size_t)id < tok->n_vocab ? tok->vocab_text[id] : NULL;
}

bool zoff_tok_is_special(const zoff_tok *tok, int32_t id) {
    const tok_added *a = added_by_id(tok, id);
    return a && a->special;
}

const char *zoff_tok_describe(const zoff_tok *tok) {
    return tok->byte_level ? "byte-level BPE" : "SentencePiece-style BPE";
}

void zoff_tok_free(zoff_tok *tok) {
    if (!tok) return;
    for (size_t i = 0; i < tok->n_vocab; i++)
        free(tok->vocab_text[i]);
    free(tok->vocab_text);
    tok_strmap_free(&tok->model_map);
    free(tok->merges.slots);
    for (size_t i = 0; i < tok->n_added; i++) {
        free(tok->added[i].content);
        free(tok->added[i].match);
    }
    free(tok->added);
    free(tok->raw_set.order);
    free(tok->norm_set.order);
    for (size_t i = 0; i < tok->n_norms; i++) {
        free(tok->norms[i].a);
        free(tok->norms[i].b);
    }
    free(tok->norms);
    for (size_t i = 0; i < tok->n_pres; i++)
        pcre2_code_free(tok->pres[i].re);
    free(tok->pres);
    for (size_t i = 0; i < tok->n_decs; i++) {
        free(tok->decs[i].a);
        free(tok->decs[i].b);
    }
    free(tok->decs);
    pcre2_match_data_free(tok->md);
    if (tok->enc) enc_free(tok->enc);
    free(tok->enc);
    free(tok->cache);
    free(tok->cache_keys);
    free(tok->cache_ids);
    free(tok->path);
    free(tok);
}
