/* Internals of the tokenizer shared by tokenizer_load.c (tokenizer.json to these tables) and
 * tokenizer.c (encoding, BPE merges, decoding). All tables are built once at load time and are
 * read-only afterwards, except the encode scratch (cache, match data, buffers) that belongs to
 * the one thread encoding at a time. */
#ifndef ZOFF_TEXT_TOKENIZER_INTERNAL_H
#define ZOFF_TEXT_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/tokenizer.h"

#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOK_MOD       "tokenizer"
#define TOK_MAX_DEPTH 16 /* pre-tokenizer steps after flattening Sequences */

/* A byte-string -> int32 hash map (open addressing, linear probing); keys live in an arena. */
typedef struct tok_strmap {
    uint32_t *slots; /* index+1 into entries, 0 = empty; capacity is a power of two */
    size_t cap;
    struct tok_strmap_entry {
        uint64_t hash;
        size_t off; /* key offset in arena */
        uint32_t len;
        int32_t value;
    } * entries;
    size_t n, entries_cap;
    char *arena;
    size_t arena_len, arena_cap;
} tok_strmap;

uint64_t tok_hash_bytes(const void *p, size_t n);
int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t value); /* overwrites */
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len);      /* -1 if absent */
void tok_strmap_free(tok_strmap *m);

/* (left id, right id) -> (rank, merged id). */
typedef struct tok_merges {
    struct tok_merge_slot {
        uint64_t key; /* (left << 32 | right) + 1; 0 = empty */
        int32_t rank, id;
    } * slots;
    size_t cap, n;
} tok_merges;

enum tok_norm_kind { NORM_PREPEND, NORM_REPLACE, NORM_NFC };
typedef struct tok_norm {
    int kind;
    char *a, *b; /* PREPEND: a = text; REPLACE: a = pattern, b = content */
    size_t a_len, b_len;
} tok_norm;

enum tok_split_behavior {
    SPLIT_REMOVED,
    SPLIT_ISOLATED,
    SPLIT_MERGED_WITH_PREVIOUS,
    SPLIT_MERGED_WITH_NEXT,
    SPLIT_CONTIGUOUS
};
enum tok_prepend_scheme { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
/* One pre-tokenizer step: an optional text transform, then an optional regex split. */
typedef struct tok_pre {
    bool prefix_space;  /* ByteLevel add_prefix_space */
    bool metaspace;     /* replace ' ' by repl, prepend repl by scheme */
    int prepend_scheme; /* enum tok_prepend_scheme */
    char repl[8];
    size_t repl_len;
    pcre2_code *re; /* NULL: no split */
    bool re_jit;
    int behavior;
    bool invert;
} tok_pre;

enum tok_dec_kind {
    DEC_BYTELEVEL,
    DEC_REPLACE,
    DEC_BYTEFALLBACK,
    DEC_FUSE,
    DEC_STRIP,
    DEC_METASPACE
};
typedef struct tok_dec {
    int kind;
    char *a, *b; /* REPLACE: pattern, content; STRIP/METASPACE: a = the character */
    size_t a_len, b_len;
    int start, stop;    /* STRIP */
    int prepend_scheme; /* METASPACE */
} tok_dec;

typedef struct tok_added {
    char *content; /* as written: what decoding gives */
    size_t len;
    char *match; /* what is matched: content, normalized when `normalized` (as tokenizers does) */
    size_t match_len;
    int32_t id;
    bool special, normalized, lstrip, rstrip;
} tok_added;

/* Added tokens of one kind (normalized or not), for leftmost-longest matching. */
typedef struct tok_added_set {
    int32_t *order; /* indices into added[], sorted by first byte, then longest first */
    size_t n;
    uint32_t first[257]; /* order[first[b] .. first[b+1]) start with byte b */
} tok_added_set;

typedef struct tok_cache_entry {
    uint64_t hash; /* 0 = empty */
    uint32_t key_off, key_len, ids_off, n_ids;
} tok_cache_entry;

struct zoff_tok {
    char *path;
    bool byte_level; /* the model sees bytes mapped to characters (GPT-2's bytes_to_unicode) */
    /* model */
    size_t n_vocab;       /* one past the largest model id */
    char **vocab_text;    /* (n_vocab) id -> token as written in the file, or NULL */
    tok_strmap model_map; /* model-level bytes -> id (byte-level: unmapped raw bytes) */
    tok_merges merges;
    int32_t byte_id[256];     /* byte-level: raw byte -> id of its character, -1 if none */
    int32_t fallback_id[256]; /* byte_fallback: "<0xXX>" ids, -1 if none */
    int32_t ascii_id[128];    /* SentencePiece-style: one-character ASCII token ids */
    bool byte_fallback, fuse_unk, ignore_merges;
    int32_t unk_id; /* -1: no unk token */
    /* SentencePiece-style: words may be cut before each run of this character (the word
     * boundary, U+2581) without changing the result, because no token holds it after another
     * character; empty when that does not hold (see find_word_sep) */
    char word_sep[8];
    size_t word_sep_len;
    /* added tokens */
    tok_added *added;
    size_t n_added;
    tok_added_set raw_set, norm_set;
    size_t n_total; /* one past the largest id overall */
    /* pipeline */
    tok_norm *norms;
    size_t n_norms;
    tok_pre *pres;
    size_t n_pres;
    tok_dec *decs;
    size_t n_decs;
    bool has_decoder;
    /* encode scratch (one thread) */
    struct tok_enc *enc;
    pcre2_match_data *md;
    tok_cache_entry *cache;
    size_t cache_cap, cache_n;
    char *cache_keys;
    size_t cache_keys_len, cache_keys_cap;
    int32_t *cache_ids;
    size_t cache_ids_len, cache_ids_cap;
};

/* GPT-2's byte <-> character map. */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp); /* -1 if cp is no byte's character */
/* Decodes one UTF-8 character of valid text at s (n bytes available); returns its length. */
size_t tok_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
size_t tok_utf8_encode(uint32_t cp, char *out);

/* Runs the normalizers over s[0, n) into a malloc'd copy (*out, *out_len). */
int tok_normalize_copy(zoff_tok *tok, const char *s, size_t n, char **out, size_t *out_len);
int tok_merges_put(tok_merges *m, int32_t a, int32_t b, int32_t rank, int32_t id);

#endif
