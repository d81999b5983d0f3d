/* The tokenizer: Hugging Face tokenizer.json files with a BPE model, encoded and decoded in C
 * with the same ids as the `tokenizers` library.
 *
 * Served: byte-level BPE (GPT-2, Llama 3, Qwen2: ByteLevel pre-tokenizer, Split by a regex run
 * through PCRE2, Digits, Metaspace, the NFC normalizer through utf8proc), SentencePiece-style
 * BPE (Llama 2, Mistral: Prepend/Replace normalizers or Metaspace, byte_fallback, unk fusing),
 * added and special tokens (matched leftmost-longest before the normalizer and pre-tokenizers,
 * as `tokenizers` does), merges by rank, ignore_merges, and the ByteLevel, Metaspace, Replace,
 * ByteFallback, Fuse and Strip decoders. Anything else (another model type, a normalizer such as
 * NFKC or Lowercase, a pre-tokenizer such as Whitespace, dropout, subword prefixes) is refused at
 * load time with the JSON field that names it.
 *
 * Encoding gives what `tokenizer.encode(text, add_special_tokens=False).ids` gives: no
 * post-processor runs (a caller adds BOS/EOS itself) and the file's truncation and padding
 * settings are not applied (callers cut and pad sequences themselves). Text that is not valid
 * UTF-8 is encoded as if each maximal invalid subsequence were U+FFFD (Python's
 * errors='replace', Rust's from_utf8_lossy). Decoding follows `tokenizers`' decode, except that
 * it returns bytes: byte-fallback tokens that do not form valid UTF-8 are passed through
 * rather than replaced by U+FFFD.
 *
 * Threads: encoding uses a word cache and regex match data held in the tokenizer, so one
 * tokenizer encodes on one thread at a time; decoding and the look-ups are read-only and may
 * run concurrently with each other. The library never prints: errors come back as 0 / negative
 * errno / ZOFF_E* with a detail through zoff_fail (zoff_last_error_detail()).
 */
#ifndef ZOFF_TEXT_TOKENIZER_H
#define ZOFF_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct zoff_tok zoff_tok;

/* A growable array of token ids; zero-initialize, free with zoff_tok_ids_free. */
typedef struct zoff_tok_ids {
    int32_t *ids;
    size_t n, cap;
} zoff_tok_ids;

void zoff_tok_ids_free(zoff_tok_ids *v);
/* Appends one id (grows the array). 0 or -ENOMEM. */
int zoff_tok_ids_push(zoff_tok_ids *v, int32_t id);

/* Loads PATH: a tokenizer.json file, or a directory that holds one. ZOFF_EFORMAT names the file
 * and the JSON field for anything malformed or unsupported; -ENOENT etc. for a missing file. */
int zoff_tok_load(const char *path, zoff_tok **out);
void zoff_tok_free(zoff_tok *tok);

/* Appends the ids of text[0, len) to out. 0, -ENOMEM, or ZOFF_EFORMAT for a regex failure. */
int zoff_tok_encode(zoff_tok *tok, const char *text, size_t len, zoff_tok_ids *out);

/* Decodes ids into a malloc'd, NUL-terminated byte string (*out, length *out_len), skipping
 * special added tokens when skip_special. An id outside the vocabulary is -EINVAL naming it. */
int zoff_tok_decode(const zoff_tok *tok, const int32_t *ids, size_t n, bool skip_special,
                    char **out, size_t *out_len);

/* One past the largest id (model vocabulary and added tokens). */
size_t zoff_tok_vocab_size(const zoff_tok *tok);
/* The id of a token by its text as written in tokenizer.json (added tokens first, then the
 * model's vocabulary), or -1. */
int32_t zoff_tok_find(const zoff_tok *tok, const char *text);
/* The text of an id as written in tokenizer.json, or NULL outside the vocabulary. */
const char *zoff_tok_token_text(const zoff_tok *tok, int32_t id);
/* Whether id is an added token marked special. */
bool zoff_tok_is_special(const zoff_tok *tok, int32_t id);
/* "byte-level BPE" or "SentencePiece-style BPE": for messages. */
const char *zoff_tok_describe(const zoff_tok *tok);

#endif
