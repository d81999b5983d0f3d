/* Where the training loop of `zoff train` and `zoff sft` (cli/cmd_train.c, one loop for both)
 * gets its batches: the token dataset (zoff train: random windows of a token file) or the SFT
 * iterator (zoff sft: JSONL conversations with a chat template, cli/sft_source.c). Everything
 * else - options, device plan, offload, schedules, checkpoints, metrics, signals - is shared.
 *
 * A source is used by the main thread only; the SFT source prepares its next batch on a
 * prefetch thread of its own (see sft_source.c), which the main thread never touches except
 * through the source's functions. */
#ifndef ZOFF_CLI_TRAIN_SOURCE_H
#define ZOFF_CLI_TRAIN_SOURCE_H

#include "cli/train_support.h"
#include "model/model.h"
#include "text/sft_data.h"
#include "text/tokenizer.h"
#include "zoff/engine.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct zoff_train_source {
    void *ctx;
    /* The next training micro-batch, valid until the next call. An error is kept (and the
     * batch is all ignored targets) so that the step completes; `error` reports it after. */
    void (*next)(void *ctx, zoff_batch *b);
    int (*error)(void *ctx);
    /* Validation batch i of one pass over the held-out data: 0 with *b filled and *weight its
     * share of the mean (targets that count), 1 after the last, or a negative error. */
    int (*val_next)(void *ctx, int i, zoff_batch *b, double *weight);
    /* Resuming from checkpoint DIR after `micro_batches` training micro-batches: continue the
     * training order where it was. */
    int (*resume)(void *ctx, const char *dir, long micro_batches);
    /* Writes the source's state into a checkpoint folder being written (tmp, stamped like the
     * other files); NULL if it has none. */
    int (*save)(void *ctx, const char *tmp);
    /* The source's part of the progress line (" | epoch 1.25 | 40 samples/s") for a step
     * that took dt seconds; NULL if none. */
    void (*progress)(void *ctx, double dt, char *buf, size_t n);
    /* After a validation: extra evaluation with the model (greedy exact match), its part of
     * the progress line and of the JSON line; NULL if none. */
    int (*evaluate)(void *ctx, zoff_model *m, zoff_dev_stream *s, char *line, size_t ln,
                    zoff_metrics_line *json);
    /* At the end, after the final checkpoint: shows what the model does (NULL: none). */
    void (*show)(void *ctx, zoff_model *m, zoff_dev_stream *s);
    /* The offload engine, for trace spans of data loading (NULL without offload). */
    void (*set_engine)(void *ctx, zoff_engine *e);
} zoff_train_source;

/* --- the SFT source (sft_source.c) -------------------------------------------------------- */

typedef struct zoff_sft_source_args {
    const char *tokenizer;     /* folder with tokenizer.json (tokenizer_config.json optional) */
    const char *data;          /* JSONL */
    const char *chat_template; /* auto (from tokenizer_config.json), chatml, llama3, plain */
    bool packed;
    int batch, seq_len, grad_accum;
    double val_frac;
    uint64_t seed;
    int eval_generate; /* held-out samples answered greedily for exact match (0: none) */
    int show;          /* held-out prompts shown with the model's answers at the end */
} zoff_sft_source_args;

typedef struct zoff_sft_source zoff_sft_source;

/* Loads the tokenizer (and tokenizer_config.json when there is one) first, so that the model's
 * vocabulary can follow it; prints what is wrong and returns -1. */
int zoff_sft_source_create(const zoff_sft_source_args *a, zoff_sft_source **out);
size_t zoff_sft_source_vocab(const zoff_sft_source *s);
/* Stops the prefetch thread (before the engine whose trace it writes goes) and frees all;
 * NULL is fine. */
void zoff_sft_source_destroy(zoff_sft_source *s);
/* Reads and tokenizes the data with the final seq_len and batch; fills src. *rows_per_epoch:
 * training rows in one epoch. Prints what is wrong and returns -1. */
int zoff_sft_source_load(zoff_sft_source *s, int seq_len, int vocab_size, zoff_train_source *src,
                         long *rows_per_epoch, char *what, size_t wn);
/* Copies the tokenizer files into a checkpoint folder (and writes a tokenizer_config.json
 * naming the template when the tokenizer had none). */
int zoff_sft_source_copy_tokenizer(const zoff_sft_source *s, const char *dir);

/* --- chat generation (sft_generate.c) ----------------------------------------------------- */

typedef struct zoff_chat_tokens {
    zoff_chat_template tmpl;
    char *eos;       /* eos_token text, or NULL */
    int32_t stop[4]; /* ids that end a reply */
    int n_stop;
} zoff_chat_tokens;

/* The template and the stop ids of a tokenizer folder: tmpl_name "auto" reads
 * DIR/tokenizer_config.json. Sets a detail (zoff_fail) and returns an error. */
int zoff_chat_tokens_init(zoff_chat_tokens *ct, zoff_tok *tok, const char *dir,
                          const char *tmpl_name);
void zoff_chat_tokens_free(zoff_chat_tokens *ct);
/* The ids of a prompt rendered as a user turn (after an optional system turn) and the start
 * of the assistant's turn. */
int zoff_chat_prompt_ids(const zoff_chat_tokens *ct, zoff_tok *tok, const char *system,
                         const char *user, zoff_tok_ids *out);

typedef struct zoff_gen_options {
    int max_new_tokens;
    bool greedy;
    float temperature;
    int top_k;
    uint64_t seed;
} zoff_gen_options;

/* Continues prompt (n ids) with the model (B=1, a window of the model's seq_len) until a stop
 * id or max_new_tokens; the reply's ids (stop id excluded) are appended to out. */
int zoff_generate_reply(zoff_model *m, zoff_dev_stream *s, int window, int vocab,
                        const zoff_chat_tokens *ct, const int32_t *prompt, size_t n,
                        const zoff_gen_options *go, zoff_tok_ids *out);

/* The training loop of cmd_train.c run as `zoff sft` (argv[0] is "sft"). */
int zoff_train_sft_main(int argc, char **argv);

#endif
