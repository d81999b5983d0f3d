/* `zoff sft`'s batch source: JSONL conversations rendered with a chat template (text/sft_data.h),
 * served to the training loop of cmd_train.c as packed or padded rows with loss on the
 * responses only; the held-out split for the validation loss and for greedy exact-match
 * answers; the cursor saved in every checkpoint (sft_state.json, stamped like the other files)
 * so that a resumed run continues with the same sample order, mid-epoch included.
 *
 * Threads: the next training batch is prepared on a prefetch thread while the step runs. The
 * thread owns the training iterator once started; the main thread owns everything else. They
 * share only the two batch slots of `q` (a ring: the main thread uses one while the thread
 * fills the other), under q.lock. When the engine traces (--trace), the thread's work ("prepare
 * batch") and the main thread's wait for it ("wait for batch") are spans of the trace, so that
 * it shows whether data loading ever reaches the step time. */
#include "cli/train_source.h"
#include "core/log.h"
#include "model/checkpoint_dir.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SLOT_FREE, SLOT_READY, SLOT_IN_USE };

struct zoff_sft_source {
    zoff_sft_source_args a;
    char dir[PATH_MAX]; /* the tokenizer's folder */
    zoff_tok *tok;      /* main thread (generation); the data is tokenized before the thread */
    zoff_chat_tokens ct;
    zoff_sft_data *data;
    zoff_sft_iter *train, *val, *eval; /* train: the prefetch thread's once it runs */
    int T, V;
    size_t n_train;
    zoff_sft_batch valb;
    int32_t *ignore; /* (2, B, T): ZOFF_SFT_IGNORE targets and zero tokens: a failed batch */
    zoff_engine *engine;
    /* the main thread's view */
    zoff_sft_cursor cursor; /* after the last batch handed to the loop */
    int err;
    long samples;          /* samples handed out since the last progress line */
    double rate;           /* samples/s, smoothed */
    double wait_s, prep_s; /* totals: the loop waiting for a batch; the thread preparing */
    long n_batches;
    struct {
        pthread_mutex_t lock;
        pthread_cond_t cv;
        pthread_t thread;
        bool started, stop;
        zoff_sft_batch slot[2];
        zoff_sft_cursor cursor[2]; /* the iterator's cursor after each slot was filled */
        int rc[2];
        double prep_s[2];
        int state[2];
        int fill, take, in_use; /* next slot the thread fills / the loop takes; -1: none */
    } q;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *prefetch_main(void *arg) {
    zoff_sft_source *s = arg;
    pthread_mutex_lock(&s->q.lock);
    for (;;) {
        int k = s->q.fill;
        while (!s->q.stop && s->q.state[k] != SLOT_FREE)
            pthread_cond_wait(&s->q.cv, &s->q.lock);
        if (s->q.stop) break;
        pthread_mutex_unlock(&s->q.lock);
        /* the slot is FREE: only this thread touches it until it is marked READY */
        double t0 = zoff_engine_trace_now_us(s->engine), c0 = now_s();
        int rc = zoff_sft_next_batch(s->train, &s->q.slot[k]);
        zoff_sft_cursor cur = zoff_sft_iter_cursor(s->train);
        double dt = now_s() - c0;
        zoff_engine_trace_host(s->engine, "data prefetch", "prepare batch", t0,
                               zoff_engine_trace_now_us(s->engine));
        pthread_mutex_lock(&s->q.lock);
        s->q.rc[k] = rc;
        s->q.cursor[k] = cur;
        s->q.prep_s[k] = dt;
        s->q.state[k] = SLOT_READY;
        s->q.fill = k ^ 1;
        pthread_cond_broadcast(&s->q.cv);
    }
    pthread_mutex_unlock(&s->q.lock);
    return NULL;
}

static void stop_thread(zoff_sft_source *s) {
    if (!s->q.started) return;
    pthread_mutex_lock(&s->q.lock);
    s->q.stop = true;
    pthread_cond_broadcast(&s->q.cv);
    pthread_mutex_unlock(&s->q.lock);
    pthread_join(s->q.thread, NULL);
    s->q.started = false;
}

static void src_next(void *ctx, zoff_batch *b) {
    zoff_sft_source *s = ctx;
    int B = s->a.batch, T = s->T;
    *b = (zoff_batch){.tokens = s->ignore + (size_t)B * T, .targets = s->ignore, .B = B, .T = T};
    if (s->err) return;
    if (!s->q.started) {
        int rc = pthread_create(&s->q.thread, NULL, prefetch_main, s);
        if (rc) {
            s->err = zoff_fail(-rc, "sft", "starting the prefetch thread: %s", strerror(rc));
            return;
        }
        s->q.started = true;
    }
    double t0 = zoff_engine_trace_now_us(s->engine), c0 = now_s();
    pthread_mutex_lock(&s->q.lock);
    if (s->q.in_use >= 0) { /* the previous batch was consumed by the model (copied) */
        s->q.state[s->q.in_use] = SLOT_FREE;
        s->q.in_use = -1;
        pthread_cond_broadcast(&s->q.cv);
    }
    int k = s->q.take;
    while (s->q.state[k] != SLOT_READY)
        pthread_cond_wait(&s->q.cv, &s->q.lock);
    s->q.state[k] = SLOT_IN_USE;
    s->q.in_use = k;
    s->q.take = k ^ 1;
    int rc = s->q.rc[k];
    zoff_sft_cursor cur = s->q.cursor[k];
    double prep = s->q.prep_s[k];
    pthread_mutex_unlock(&s->q.lock);
    s->wait_s += now_s() - c0;
    zoff_engine_trace_host(s->engine, "data wait", "wait for batch", t0,
                           zoff_engine_trace_now_us(s->engine));
    if (rc) {
        s->err = rc;
        return;
    }
    zoff_sft_batch *sb = &s->q.slot[k];
    s->cursor = cur;
    s->samples += sb->n_samples;
    s->prep_s += prep;
    s->n_batches++;
    *b = (zoff_batch){.tokens = sb->inputs,
                      .targets = sb->targets,
                      .doc_start = sb->doc_start,
                      .B = sb->B,
                      .T = sb->T};
}

static int src_error(void *ctx) {
    return ((zoff_sft_source *)ctx)->err;
}

static int src_val_next(void *ctx, int i, zoff_batch *b, double *weight) {
    zoff_sft_source *s = ctx;
    if (!s->val) return 1;
    if (i == 0) {
        int rc = zoff_sft_iter_seek(s->val, (zoff_sft_cursor){0, 0});
        if (rc) return rc;
    }
    for (;;) { /* batches with nothing to score (prompts cut at seq-len) are passed over */
        int rc = zoff_sft_next_batch(s->val, &s->valb);
        if (rc) return rc;
        if (s->valb.n_samples == 0) return 1;
        if (s->valb.n_targets > 0) break;
    }
    *weight = (double)s->valb.n_targets;
    *b = (zoff_batch){.tokens = s->valb.inputs,
                      .targets = s->valb.targets,
                      .doc_start = s->valb.doc_start,
                      .B = s->valb.B,
                      .T = s->valb.T};
    return 0;
}

#define STATE_FILE "sft_state.json"

static int src_save(void *ctx, const char *tmp) {
    zoff_sft_source *s = ctx;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/" STATE_FILE, tmp);
    cJSON *o = cJSON_CreateObject();
    char num[32];
    int rc = 0;
    if (!o) return zoff_fail(-ENOMEM, "sft", "out of memory");
    /* 64-bit values as strings: JSON numbers are doubles */
    snprintf(num, sizeof num, "%llu", (unsigned long long)s->cursor.epoch);
    cJSON_AddStringToObject(o, "epoch", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)s->cursor.index);
    cJSON_AddStringToObject(o, "index", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)s->a.seed);
    cJSON_AddStringToObject(o, "seed", num);
    cJSON_AddNumberToObject(o, "n_samples", (double)zoff_sft_num_samples(s->data));
    cJSON_AddNumberToObject(o, "n_train", (double)s->n_train);
    cJSON_AddNumberToObject(o, "seq_len", s->T);
    cJSON_AddBoolToObject(o, "packed", s->a.packed);
    cJSON_AddNumberToObject(o, "val_frac", s->a.val_frac);
    cJSON_AddStringToObject(o, "template", zoff_chat_template_name(s->ct.tmpl));
    cJSON_AddStringToObject(o, "data", s->a.data);
    zoff_ckpt_stamp_add_json(o);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    FILE *f = text ? fopen(path, "wb") : NULL;
    if (!text)
        rc = zoff_fail(-ENOMEM, "sft", "out of memory");
    else if (!f)
        rc = zoff_fail(-errno, "sft", "%s: %s", path, strerror(errno));
    else if (fputs(text, f) < 0 || fputc('\n', f) < 0)
        rc = zoff_fail(-EIO, "sft", "%s: write error", path);
    if (f && fclose(f) && !rc) rc = zoff_fail(-errno, "sft", "%s: %s", path, strerror(errno));
    free(text);
    if (!rc) rc = zoff_sft_source_copy_tokenizer(s, tmp);
    return rc;
}

static char *read_text(const char *path, long max) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && n <= max && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            size_t got = fread(buf, 1, (size_t)n, f);
            buf[got] = 0;
            if ((long)got != n) {
                free(buf);
                buf = NULL;
            }
        }
    }
    fclose(f);
    return buf;
}

static int src_resume(void *ctx, const char *dir, long micro_batches) {
    (void)micro_batches; /* the cursor says where, whatever the batch size was */
    zoff_sft_source *s = ctx;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/" STATE_FILE, dir);
    char *text = read_text(path, 1 << 20);
    if (!text)
        return zoff_fail(ZOFF_EFORMAT, "sft",
                         "%s: missing or unreadable: not a checkpoint of zoff sft (its sample "
                         "order cannot be continued)",
                         path);
    cJSON *o = cJSON_Parse(text);
    free(text);
    int rc = 0;
    const char *field = NULL;
    char want[64] = "", have[64] = "";
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "epoch"),
                *ix = cJSON_GetObjectItemCaseSensitive(o, "index"),
                *sd = cJSON_GetObjectItemCaseSensitive(o, "seed"),
                *ns = cJSON_GetObjectItemCaseSensitive(o, "n_samples"),
                *sl = cJSON_GetObjectItemCaseSensitive(o, "seq_len"),
                *pk = cJSON_GetObjectItemCaseSensitive(o, "packed"),
                *vf = cJSON_GetObjectItemCaseSensitive(o, "val_frac");
    if (!cJSON_IsObject(o)) {
        rc = zoff_fail(ZOFF_EFORMAT, "sft", "%s: not a JSON object", path);
        goto out;
    }
    const cJSON *need[] = {e, ix, sd, ns, sl, pk, vf};
    const char *names[] = {"epoch", "index", "seed", "n_samples", "seq_len", "packed", "val_frac"};
    for (int i = 0; i < 7; i++)
        if (!need[i]) {
            rc = zoff_fail(ZOFF_EFORMAT, "sft", "%s: field '%s' missing", path, names[i]);
            goto out;
        }
    if (!cJSON_IsString(e) || !cJSON_IsString(ix) || !cJSON_IsString(sd)) {
        rc = zoff_fail(ZOFF_EFORMAT, "sft", "%s: epoch, index and seed are decimal strings", path);
        goto out;
    }
    unsigned long long seed = strtoull(sd->valuestring, NULL, 10);
    /* the order depends on these: a resumed run with other values would not continue it */
    if (seed != s->a.seed) {
        field = "seed (--seed)";
        snprintf(have, sizeof have, "%llu", seed);
        snprintf(want, sizeof want, "%llu", (unsigned long long)s->a.seed);
    } else if (!cJSON_IsNumber(ns) || (size_t)ns->valuedouble != zoff_sft_num_samples(s->data)) {
        field = "n_samples (the --data file's samples)";
        snprintf(have, sizeof have, "%.0f", cJSON_IsNumber(ns) ? ns->valuedouble : -1.0);
        snprintf(want, sizeof want, "%zu", zoff_sft_num_samples(s->data));
    } else if (!cJSON_IsNumber(sl) || (int)sl->valuedouble != s->T) {
        field = "seq_len (--seq-len)";
        snprintf(have, sizeof have, "%.0f", cJSON_IsNumber(sl) ? sl->valuedouble : -1.0);
        snprintf(want, sizeof want, "%d", s->T);
    } else if (!cJSON_IsBool(pk) || cJSON_IsTrue(pk) != s->a.packed) {
        field = "packed (--pack / --pad)";
        snprintf(have, sizeof have, "%s", cJSON_IsTrue(pk) ? "true" : "false");
        snprintf(want, sizeof want, "%s", s->a.packed ? "true" : "false");
    } else if (!cJSON_IsNumber(vf) || fabs(vf->valuedouble - s->a.val_frac) > 1e-12) {
        field = "val_frac (--val-frac)";
        snprintf(have, sizeof have, "%g", cJSON_IsNumber(vf) ? vf->valuedouble : -1.0);
        snprintf(want, sizeof want, "%g", s->a.val_frac);
    }
    if (field) {
        rc = zoff_fail(ZOFF_ECONFIG, "sft",
                       "%s: field '%s' is %s but this run has %s: the sample order would not "
                       "continue; resume with the same settings",
                       path, field, have, want);
        goto out;
    }
    zoff_sft_cursor c = {strtoull(e->valuestring, NULL, 10), strtoull(ix->valuestring, NULL, 10)};
    if ((rc = zoff_sft_iter_seek(s->train, c))) goto out;
    s->cursor = c;
out:
    cJSON_Delete(o);
    return rc;
}

static void src_progress(void *ctx, double dt, char *buf, size_t n) {
    zoff_sft_source *s = ctx;
    double epoch = (double)s->cursor.epoch + (double)s->cursor.index / (double)s->n_train;
    /* smoothed like the loop's tok/s: one step's rate is noisy on a shared machine */
    double rate = s->samples / (dt > 0 ? dt : 1e-9);
    s->rate = s->rate > 0 ? 0.9 * s->rate + 0.1 * rate : rate;
    snprintf(buf, n, " | epoch %.2f | %.0f samples/s", epoch, s->rate);
    s->samples = 0;
}

/* One held-out sample from a padded row: the prompt (everything up to the first trained
 * position, inclusive) and the expected reply (the trained tokens). */
static bool split_row(const int32_t *in, const int32_t *tg, int T, int *n_prompt, int *n_reply) {
    int t = 0;
    while (t < T && tg[t] == ZOFF_SFT_IGNORE)
        t++;
    if (t == T) return false;
    int e = t;
    while (e < T && tg[e] != ZOFF_SFT_IGNORE)
        e++;
    (void)in;
    *n_prompt = t + 1;
    *n_reply = e - t;
    return true;
}

static bool is_stop(const zoff_chat_tokens *ct, int32_t id) {
    for (int i = 0; i < ct->n_stop; i++)
        if (ct->stop[i] == id) return true;
    return false;
}

/* Greedy answers to held-out prompts: how many equal the reference reply exactly. When
 * print, each is printed too. */
static int answer_held_out(zoff_sft_source *s, zoff_model *m, zoff_dev_stream *st, int count,
                           bool print, int *n_right, int *n_asked) {
    *n_right = *n_asked = 0;
    if (!s->eval || count <= 0) return 0;
    int T = s->T, rc = zoff_sft_iter_seek(s->eval, (zoff_sft_cursor){0, 0});
    int32_t *row = malloc(3 * (size_t)T * sizeof *row);
    if (!row) return zoff_fail(-ENOMEM, "sft", "out of memory");
    int32_t *in = row, *tg = row + T, *ds = row + 2 * T;
    while (!rc && *n_asked < count) {
        int ns, np, nr;
        if ((rc = zoff_sft_next_row(s->eval, in, tg, ds, &ns)) || ns == 0) break;
        if (!split_row(in, tg, T, &np, &nr)) continue;
        /* the reference reply without its end-of-turn token; the model must stop there too */
        int want = nr;
        if (want > 0 && is_stop(&s->ct, tg[np - 1 + want - 1])) want--;
        zoff_tok_ids got = {0};
        zoff_gen_options go = {.max_new_tokens = want + 1, .greedy = true};
        rc = zoff_generate_reply(m, st, T, s->V, &s->ct, in, (size_t)np, &go, &got);
        if (rc) {
            zoff_tok_ids_free(&got);
            break;
        }
        bool right = got.n == (size_t)want &&
                     memcmp(got.ids, tg + np - 1, (size_t)want * sizeof(int32_t)) == 0;
        *n_right += right;
        (*n_asked)++;
        if (print) {
            char *p = NULL, *a = NULL, *r = NULL;
            size_t pl, al, rl;
            if (!zoff_tok_decode(s->tok, in, (size_t)np, true, &p, &pl) &&
                !zoff_tok_decode(s->tok, got.ids, got.n, true, &a, &al) &&
                !zoff_tok_decode(s->tok, tg + np - 1, (size_t)want, true, &r, &rl)) {
                printf("  %-5s ", right ? "right" : "wrong");
                for (size_t i = 0; i < pl; i++)
                    fputs(p[i] == '\n' ? "\\n" : (char[2]){p[i], 0}, stdout);
                printf(" -> %s", a);
                if (!right) printf("   (expected %s)", r);
                printf("\n");
            }
            free(p), free(a), free(r);
        }
        zoff_tok_ids_free(&got);
    }
    free(row);
    return rc;
}

static int src_evaluate(void *ctx, zoff_model *m, zoff_dev_stream *st, char *line, size_t ln,
                        zoff_metrics_line *json) {
    zoff_sft_source *s = ctx;
    line[0] = 0;
    if (s->a.eval_generate <= 0) return 0;
    int right, asked;
    int rc = answer_held_out(s, m, st, s->a.eval_generate, false, &right, &asked);
    if (rc || asked == 0) return rc;
    double acc = (double)right / asked;
    snprintf(line, ln, " | exact match %.1f%% (%d/%d)", 100 * acc, right, asked);
    zoff_metrics_num(json, "exact_match", acc, "%.4f");
    zoff_metrics_int(json, "exact_match_n", asked);
    return 0;
}

static void src_show(void *ctx, zoff_model *m, zoff_dev_stream *st) {
    zoff_sft_source *s = ctx;
    if (s->a.show <= 0 || !s->eval) return;
    printf("\n--- held-out prompts and the model's greedy answers ---\n");
    int right, asked;
    int rc = answer_held_out(s, m, st, s->a.show, true, &right, &asked);
    if (rc)
        fprintf(stderr, "zoff sft: answering held-out prompts: %s: %s\n", zoff_strerror(rc),
                zoff_last_error_detail());
    else
        printf("--- %d of %d right ---\n", right, asked);
}

static void src_set_engine(void *ctx, zoff_engine *e) {
    ((zoff_sft_source *)ctx)->engine = e;
}

void zoff_sft_source_destroy(zoff_sft_source *s) {
    if (!s) return;
    stop_thread(s);
    if (s->n_batches > 0)
        printf("data: %.2f ms per batch prepared on the prefetch thread; the steps waited "
               "%.2f ms per batch for it\n",
               1e3 * s->prep_s / s->n_batches, 1e3 * s->wait_s / s->n_batches);
    for (int k = 0; k < 2; k++)
        zoff_sft_batch_free(&s->q.slot[k]);
    pthread_mutex_destroy(&s->q.lock);
    pthread_cond_destroy(&s->q.cv);
    zoff_sft_batch_free(&s->valb);
    free(s->ignore);
    zoff_sft_iter_free(s->train);
    zoff_sft_iter_free(s->val);
    zoff_sft_iter_free(s->eval);
    zoff_sft_free(s->data);
    zoff_chat_tokens_free(&s->ct);
    zoff_tok_free(s->tok);
    free(s);
}

int zoff_sft_source_create(const zoff_sft_source_args *a, zoff_sft_source **out) {
    zoff_sft_source *s = calloc(1, sizeof *s);
    if (!s) return -1;
    s->a = *a;
    s->q.in_use = -1;
    pthread_mutex_init(&s->q.lock, NULL);
    pthread_cond_init(&s->q.cv, NULL);
    snprintf(s->dir, sizeof s->dir, "%s", a->tokenizer);
    *out = s;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/tokenizer.json", a->tokenizer);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr,
                "zoff sft: %s: %s (a model folder for zoff sft holds tokenizer.json and "
                "tokenizer_config.json beside config.json and the weights)\n",
                path, strerror(errno));
        return -1;
    }
    fclose(f);
    int rc = zoff_tok_load(path, &s->tok);
    if (!rc) rc = zoff_chat_tokens_init(&s->ct, s->tok, a->tokenizer, a->chat_template);
    if (rc) {
        fprintf(stderr, "zoff sft: %s\n", zoff_last_error_detail());
        return -1;
    }
    return 0;
}

size_t zoff_sft_source_vocab(const zoff_sft_source *s) {
    return zoff_tok_vocab_size(s->tok);
}

int zoff_sft_source_load(zoff_sft_source *s, int seq_len, int vocab_size, zoff_train_source *src,
                         long *rows_per_epoch, char *what, size_t wn) {
    if (zoff_tok_vocab_size(s->tok) > (size_t)vocab_size) {
        fprintf(stderr,
                "zoff sft: the tokenizer in %s has %zu ids but the model's vocabulary is %d\n",
                s->dir, zoff_tok_vocab_size(s->tok), vocab_size);
        return -1;
    }
    s->T = seq_len;
    s->V = vocab_size;
    zoff_sft_config cfg;
    zoff_sft_config_default(&cfg);
    cfg.chat_template = s->ct.tmpl;
    cfg.seq_len = seq_len;
    cfg.eos_token = s->ct.eos;
    int rc = zoff_sft_load(s->a.data, s->tok, &cfg, &s->data);
    zoff_sft_iter_config ic;
    zoff_sft_iter_config_default(&ic);
    ic.seq_len = seq_len;
    ic.packed = s->a.packed;
    ic.seed = s->a.seed;
    ic.val_frac = s->a.val_frac;
    ic.epochs = 0; /* endless: the step count decides where training ends */
    if (!rc) rc = zoff_sft_iter_create(s->data, &ic, false, &s->train);
    if (!rc && s->a.val_frac > 0) rc = zoff_sft_iter_create(s->data, &ic, true, &s->val);
    ic.packed = false; /* one sample per row: a prompt and its reply */
    if (!rc && s->a.val_frac > 0) rc = zoff_sft_iter_create(s->data, &ic, true, &s->eval);
    int B = s->a.batch;
    for (int k = 0; k < 2 && !rc; k++)
        rc = zoff_sft_batch_alloc(&s->q.slot[k], B, seq_len);
    if (!rc) rc = zoff_sft_batch_alloc(&s->valb, B, seq_len);
    if (!rc && !(s->ignore = calloc(2 * (size_t)B * seq_len, sizeof *s->ignore)))
        rc = zoff_fail(-ENOMEM, "sft", "out of memory");
    if (rc) {
        fprintf(stderr, "zoff sft: --data %s: %s\n", s->a.data, zoff_last_error_detail());
        return -1;
    }
    for (size_t i = 0; i < (size_t)B * seq_len; i++)
        s->ignore[i] = ZOFF_SFT_IGNORE;
    s->n_train = zoff_sft_iter_num_samples(s->train);
    /* rows of one epoch: the training order run through once (packing only, no model work) */
    zoff_sft_iter *count;
    ic.packed = s->a.packed;
    if (zoff_sft_iter_create(s->data, &ic, false, &count)) return -1;
    int32_t *row = malloc(3 * (size_t)seq_len * sizeof *row);
    long rows = 0;
    int ns;
    while (row && zoff_sft_iter_cursor(count).epoch == 0 &&
           !zoff_sft_next_row(count, row, row + seq_len, row + 2 * seq_len, &ns) && ns > 0)
        rows++;
    free(row);
    zoff_sft_iter_free(count);
    *rows_per_epoch = rows;
    size_t nt = zoff_sft_num_truncated(s->data);
    snprintf(what, wn,
             "%s (%zu samples: %zu train, %zu held out; %s template, %s rows, %ld per epoch%s)",
             s->a.data, zoff_sft_num_samples(s->data), s->n_train,
             s->val ? zoff_sft_iter_num_samples(s->val) : 0, zoff_chat_template_name(s->ct.tmpl),
             s->a.packed ? "packed" : "padded", rows, nt ? ", some cut at --seq-len" : "");
    *src = (zoff_train_source){.ctx = s,
                               .next = src_next,
                               .error = src_error,
                               .val_next = src_val_next,
                               .resume = src_resume,
                               .save = src_save,
                               .progress = src_progress,
                               .evaluate = src_evaluate,
                               .show = src_show,
                               .set_engine = src_set_engine};
    return 0;
}

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    if (!in) return zoff_fail(-errno, "sft", "%s: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    int rc = 0;
    if (!out) {
        rc = zoff_fail(-errno, "sft", "%s: %s", to, strerror(errno));
        fclose(in);
        return rc;
    }
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) {
            rc = zoff_fail(-EIO, "sft", "%s: write error", to);
            break;
        }
    if (!rc && ferror(in)) rc = zoff_fail(-EIO, "sft", "%s: read error", from);
    fclose(in);
    if (fclose(out) && !rc) rc = zoff_fail(-errno, "sft", "%s: %s", to, strerror(errno));
    return rc;
}

int zoff_sft_source_copy_tokenizer(const zoff_sft_source *s, const char *dir) {
    static const char *files[] = {"tokenizer.json", "tokenizer_config.json",
                                  "special_tokens_map.json"};
    char from[PATH_MAX + 32], to[PATH_MAX + 32];
    bool have_config = false;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(from, sizeof from, "%s/%s", s->dir, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        FILE *f = fopen(from, "rb");
        if (!f) continue; /* tokenizer.json was checked at the start */
        fclose(f);
        int rc = copy_file(from, to);
        if (rc) return rc;
        have_config = have_config || i == 1;
    }
    if (have_config) return 0;
    /* none: one naming the template (so that zoff generate finds it) and the EOS token */
    cJSON *o = cJSON_CreateObject();
    if (!o) return zoff_fail(-ENOMEM, "sft", "out of memory");
    const char *tmpl = s->ct.tmpl == ZOFF_CHAT_CHATML
                           ? "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
                             "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% "
                             "if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% "
                             "endif %}"
                       : s->ct.tmpl == ZOFF_CHAT_LLAMA3
                           ? "{{ bos_token }}{% for message in messages %}{{ "
                             "'<|start_header_id|>' + message['role'] + "
                             "'<|end_header_id|>\\n\\n' + message['content'] | trim + "
                             "'<|eot_id|>' }}{% endfor %}"
                           : NULL;
    if (tmpl) cJSON_AddStringToObject(o, "chat_template", tmpl);
    if (s->ct.eos) cJSON_AddStringToObject(o, "eos_token", s->ct.eos);
    cJSON_AddStringToObject(o, "zoff_chat_template", zoff_chat_template_name(s->ct.tmpl));
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    snprintf(to, sizeof to, "%s/tokenizer_config.json", dir);
    FILE *f = text ? fopen(to, "wb") : NULL;
    int rc = 0;
    if (!text)
        rc = zoff_fail(-ENOMEM, "sft", "out of memory");
    else if (!f)
        rc = zoff_fail(-errno, "sft", "%s: %s", to, strerror(errno));
    else if (fputs(text, f) < 0)
        rc = zoff_fail(-EIO, "sft", "%s: write error", to);
    if (f && fclose(f) && !rc) rc = zoff_fail(-errno, "sft", "%s: %s", to, strerror(errno));
    free(text);
    return rc;
}
