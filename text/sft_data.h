/* SFT data: JSONL conversations rendered with a chat template, tokenized, and served as
 * packed or padded rows with loss only on the responses.
 *
 * A line of the JSONL file is one of
 *   {"prompt": "...", "response": "..."}           (a user turn and an assistant turn)
 *   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
 *   {"text": "..."}                                 (plain text, all of it trained)
 * Blank lines are skipped; anything else is refused with the file, line number and field.
 *
 * Templates (exact strings in tests/test_text_sft_data.c):
 *   chatml  "<|im_start|>{role}\n{content}<|im_end|>\n" per message (Qwen2, no default system)
 *   llama3  "<|begin_of_text|>" then "<|start_header_id|>{role}<|end_header_id|>\n\n{content,
 *           trimmed}<|eot_id|>" per message
 *   plain   the contents one after another, each assistant content followed by eos_token
 *           (when one is configured, e.g. from zoff_chat_config_token)
 * The trained part of an assistant message is its content and the end-of-turn token
 * (<|im_end|>, <|eot_id|>, EOS); everything else (system, user, role headers, separators) gets
 * label -100. Each segment is tokenized on its own, so no token spans a trained/untrained edge.
 * A {"text"} line is the template's BOS (llama3) + text + eos_token (if configured), all
 * trained.
 *
 * A batch (zoff_sft_batch) is B rows of T positions; per row:
 *   inputs[t]    token id (pad_id on padding)
 *   targets[t]   inputs[t + 1] of the same sample when that token is trained, else -100: on
 *                prompt tokens, padding, and the last position of each sample
 *   doc_start[t] row position of the first token of t's sample (position id t - doc_start[t];
 *                attention keys before doc_start[t] are masked); on padding doc_start[t] = t
 * Packed rows take samples in order while they fit (no reordering, so a cursor is just the
 * next sample); padded rows hold one sample each. A sample longer than T is cut to its first
 * T tokens and counted (n_truncated, logged once at WARN) by default, or refused with its line
 * number (on_overflow = ZOFF_SFT_REFUSE): cutting keeps a long-tail dataset usable.
 *
 * Split and order: a held-out fraction of the samples, chosen by a permutation seeded with
 * split_seed (the same split whatever the training seed), is the validation set, served in
 * file order once per pass. Training samples are shuffled per epoch with (seed, epoch); the
 * cursor (epoch, index) can be saved and restored so that a resumed run sees the same order.
 *
 * Threads: a zoff_sft_data is read-only after load and may be shared by iterators; an
 * iterator belongs to one thread. The library never prints (errors through zoff_fail).
 */
#ifndef ZOFF_TEXT_SFT_DATA_H
#define ZOFF_TEXT_SFT_DATA_H

#include "text/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZOFF_SFT_IGNORE (-100) /* the label of a position that has no loss */

typedef enum zoff_chat_template {
    ZOFF_CHAT_PLAIN,
    ZOFF_CHAT_CHATML,
    ZOFF_CHAT_LLAMA3,
} zoff_chat_template;

/* "plain", "chatml", "llama3" -> template; ZOFF_ECONFIG naming the value otherwise. */
int zoff_chat_template_parse(const char *name, zoff_chat_template *out);
const char *zoff_chat_template_name(zoff_chat_template t);
/* Recognizes the template from DIR/tokenizer_config.json's chat_template (ChatML markers or
 * Llama 3 headers). -ENOENT (no file), ZOFF_EFORMAT (bad JSON) or ZOFF_ECONFIG (no template
 * field, or one that is none of these) with the file named. */
int zoff_chat_template_detect(const char *dir, zoff_chat_template *out);

/* The text of a token that DIR/tokenizer_config.json names under key ("eos_token",
 * "bos_token"; a string or an {"content": ...} object) in a malloc'd *out. -ENOENT when the
 * file or the key is missing, ZOFF_EFORMAT for another type; the file is named. */
int zoff_chat_config_token(const char *dir, const char *key, char **out);

typedef struct zoff_chat_msg {
    const char *role; /* "system", "user" or "assistant" */
    const char *content;
} zoff_chat_msg;

/* One piece of a rendered conversation: text and whether its tokens are trained. */
typedef struct zoff_chat_segment {
    char *text; /* malloc'd */
    bool train;
} zoff_chat_segment;

/* Renders msgs with template t into segments (*out, *n_out; free with
 * zoff_chat_segments_free). eos is the EOS token's text for the plain template (may be NULL
 * there: no EOS). -EINVAL for an unknown role, naming it. */
int zoff_chat_render(zoff_chat_template t, const zoff_chat_msg *msgs, size_t n, const char *eos,
                     zoff_chat_segment **out, size_t *n_out);
void zoff_chat_segments_free(zoff_chat_segment *s, size_t n);

enum zoff_sft_overflow { ZOFF_SFT_TRUNCATE, ZOFF_SFT_REFUSE };

typedef struct zoff_sft_config {
    zoff_chat_template chat_template; /* default chatml */
    int seq_len;                      /* T, positions per row (default 1024) */
    int on_overflow;                  /* enum zoff_sft_overflow (default truncate) */
    const char *eos_token;            /* after plain responses and text lines; NULL: none */
} zoff_sft_config;

void zoff_sft_config_default(zoff_sft_config *cfg);

typedef struct zoff_sft_data zoff_sft_data;

/* Reads and tokenizes PATH (JSONL). ZOFF_EFORMAT names the file, line and field. */
int zoff_sft_load(const char *path, zoff_tok *tok, const zoff_sft_config *cfg, zoff_sft_data **out);
void zoff_sft_free(zoff_sft_data *d);
size_t zoff_sft_num_samples(const zoff_sft_data *d);
size_t zoff_sft_num_truncated(const zoff_sft_data *d);
/* Sample i's tokens and trained flags (1: its label is kept); *line its JSONL line number. */
void zoff_sft_sample(const zoff_sft_data *d, size_t i, const int32_t **tokens,
                     const uint8_t **train, size_t *len, size_t *line);

typedef struct zoff_sft_iter_config {
    int seq_len;         /* T (<= the data's seq_len) */
    bool packed;         /* several samples per row (default) or one, padded */
    uint64_t seed;       /* training order */
    uint64_t split_seed; /* which samples are held out (default 0) */
    double val_frac; /* held-out fraction in [0, 1) (default 0.05; at least one sample if > 0) */
    uint64_t epochs; /* 0: endless */
    int32_t pad_id;  /* inputs on padding (default 0; its label is -100 anyway) */
} zoff_sft_iter_config;

void zoff_sft_iter_config_default(zoff_sft_iter_config *cfg);

typedef struct zoff_sft_cursor {
    uint64_t epoch; /* training: the epoch; validation: passes completed */
    uint64_t index; /* the next sample in this epoch's order */
} zoff_sft_cursor;

typedef struct zoff_sft_iter zoff_sft_iter;

int zoff_sft_iter_create(const zoff_sft_data *d, const zoff_sft_iter_config *cfg, bool validation,
                         zoff_sft_iter **out);
void zoff_sft_iter_free(zoff_sft_iter *it);
/* Samples in this iterator's set (training or held out). */
size_t zoff_sft_iter_num_samples(const zoff_sft_iter *it);
/* Fills one row (inputs, targets, doc_start: T int32 each). *n_samples: samples placed in the
 * row; 0 at the end (training: after `epochs` epochs; validation: after one pass, then the
 * next call starts the next pass). */
int zoff_sft_next_row(zoff_sft_iter *it, int32_t *inputs, int32_t *targets, int32_t *doc_start,
                      int *n_samples);
/* The batch the model consumes: B rows of T positions, row-major. */
typedef struct zoff_sft_batch {
    int B, T;
    int32_t *inputs;    /* (B, T) */
    int32_t *targets;   /* (B, T), ZOFF_SFT_IGNORE where there is no loss */
    int32_t *doc_start; /* (B, T) */
    int n_samples;      /* samples in the batch; 0: the iterator is at its end */
    long n_targets;     /* targets that are not ZOFF_SFT_IGNORE: the loss's denominator */
} zoff_sft_batch;

int zoff_sft_batch_alloc(zoff_sft_batch *b, int B, int T);
void zoff_sft_batch_free(zoff_sft_batch *b);
/* Fills b's B rows from the iterator (T must be the iterator's). Rows past the end are all
 * padding; b->n_samples == 0 when nothing was left. */
int zoff_sft_next_batch(zoff_sft_iter *it, zoff_sft_batch *b);

zoff_sft_cursor zoff_sft_iter_cursor(const zoff_sft_iter *it);
/* Continues from a saved cursor (-EINVAL if it lies outside the data). */
int zoff_sft_iter_seek(zoff_sft_iter *it, zoff_sft_cursor c);

#endif
