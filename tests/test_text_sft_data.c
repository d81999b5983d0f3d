/* SFT data (argv[1] = tests/fixtures/tokenizer): the chat templates' exact strings and trained
 * parts, JSONL loading with labels only on responses, packed and padded rows (targets,
 * doc_start, every sample once per epoch), the held-out split, seeded order, resuming from a
 * cursor, truncation, and malformed lines reported with line number and field. */
#include "tests/test_util.h"
#include "text/sft_data.h"
#include "zoff/zoff.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256];

static void write_file(const char *name, const char *text, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

/* Renders and checks the joined text and the joined trained text. */
static void check_render(zoff_chat_template t, const zoff_chat_msg *m, size_t n, const char *eos,
                         const char *want_all, const char *want_trained) {
    zoff_chat_segment *s;
    size_t k;
    REQUIRE_OK(zoff_chat_render(t, m, n, eos, &s, &k));
    char all[2048] = "", trained[2048] = "";
    for (size_t i = 0; i < k; i++) {
        strcat(all, s[i].text);
        if (s[i].train) strcat(trained, s[i].text);
        if (i > 0) CHECK(s[i].train != s[i - 1].train); /* runs are joined */
    }
    if (strcmp(all, want_all) != 0)
        fprintf(stderr, "%s rendered:\n[%s]\n", zoff_chat_template_name(t), all);
    CHECK(strcmp(all, want_all) == 0);
    if (strcmp(trained, want_trained) != 0) fprintf(stderr, "trained: [%s]\n", trained);
    CHECK(strcmp(trained, want_trained) == 0);
    zoff_chat_segments_free(s, k);
}

static void check_templates(void) {
    zoff_chat_msg m[] = {{"system", "Be brief."},
                         {"user", "Hi"},
                         {"assistant", " Hello! "},
                         {"user", "2+2?"},
                         {"assistant", "4"}};
    check_render(ZOFF_CHAT_CHATML, m, 5, NULL,
                 "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                 "<|im_start|>assistant\n Hello! <|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
                 "<|im_start|>assistant\n4<|im_end|>\n",
                 " Hello! <|im_end|>4<|im_end|>");
    check_render(
        ZOFF_CHAT_LLAMA3, m, 5, NULL,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>",
        "Hello!<|eot_id|>4<|eot_id|>");
    check_render(ZOFF_CHAT_PLAIN, m + 1, 2, "</s>", "Hi Hello! </s>", " Hello! </s>");
    zoff_chat_msg bad = {"robot", "x"};
    zoff_chat_segment *s;
    size_t k;
    CHECK_EQ_INT(zoff_chat_render(ZOFF_CHAT_CHATML, &bad, 1, NULL, &s, &k), -EINVAL);
    CHECK(strstr(zoff_last_error_detail(), "robot") != NULL);
    zoff_chat_template t;
    CHECK_OK(zoff_chat_template_parse("llama3", &t));
    CHECK_EQ_INT(t, ZOFF_CHAT_LLAMA3);
    CHECK_EQ_INT(zoff_chat_template_parse("vicuna", &t), ZOFF_ECONFIG);
    CHECK(strstr(zoff_last_error_detail(), "vicuna") != NULL);

    char path[512];
    write_file("tokenizer_config.json",
               "{\"chat_template\": \"{% for m in messages %}<|im_start|>{{ m.role }}\\n...\"}",
               path, sizeof path);
    CHECK_OK(zoff_chat_template_detect(tmpdir, &t));
    CHECK_EQ_INT(t, ZOFF_CHAT_CHATML);
    write_file("tokenizer_config.json",
               "{\"chat_template\": [{\"name\": \"default\", \"template\": "
               "\"<|start_header_id|>{{ role }}\"}]}",
               path, sizeof path);
    CHECK_OK(zoff_chat_template_detect(tmpdir, &t));
    CHECK_EQ_INT(t, ZOFF_CHAT_LLAMA3);
    write_file("tokenizer_config.json",
               "{\"bos_token\": \"<s>\", \"eos_token\": {\"content\": \"</s>\", \"lstrip\": "
               "false}, \"pad_token\": 3}",
               path, sizeof path);
    CHECK_EQ_INT(zoff_chat_template_detect(tmpdir, &t), ZOFF_ECONFIG);
    CHECK(strstr(zoff_last_error_detail(), "tokenizer_config.json") != NULL);
    char *tk;
    CHECK_OK(zoff_chat_config_token(tmpdir, "bos_token", &tk));
    CHECK(tk && strcmp(tk, "<s>") == 0);
    free(tk);
    CHECK_OK(zoff_chat_config_token(tmpdir, "eos_token", &tk));
    CHECK(tk && strcmp(tk, "</s>") == 0);
    free(tk);
    CHECK_EQ_INT(zoff_chat_config_token(tmpdir, "unk_token", &tk), -ENOENT);
    CHECK(strstr(zoff_last_error_detail(), "unk_token") != NULL);
    CHECK_EQ_INT(zoff_chat_config_token(tmpdir, "pad_token", &tk), ZOFF_EFORMAT);
    CHECK(tk == NULL);
    write_file("tokenizer_config.json", "{\"chat_template\": ", path, sizeof path);
    CHECK_EQ_INT(zoff_chat_template_detect(tmpdir, &t), ZOFF_EFORMAT);
    unlink(path);
    CHECK_EQ_INT(zoff_chat_template_detect(tmpdir, &t), -ENOENT);
}

/* Decodes the trained tokens of sample i. */
static char *trained_text(zoff_tok *tok, const zoff_sft_data *d, size_t i) {
    const int32_t *tk;
    const uint8_t *tr;
    size_t len, line;
    zoff_sft_sample(d, i, &tk, &tr, &len, &line);
    int32_t ids[4096];
    size_t n = 0;
    for (size_t k = 0; k < len; k++)
        if (tr[k]) ids[n++] = tk[k];
    char *s;
    size_t sl;
    REQUIRE_OK(zoff_tok_decode(tok, ids, n, false, &s, &sl));
    return s;
}

static void check_load(zoff_tok *tok) {
    char path[512];
    write_file("a.jsonl",
               "{\"prompt\": \"What is 2+2?\", \"response\": \"It is 4.\"}\n"
               "\n"
               "{\"messages\": [{\"role\": \"system\", \"content\": \"Be nice.\"}, {\"role\": "
               "\"user\", \"content\": \"Hello\"}, {\"role\": \"assistant\", \"content\": \"Hi "
               "there!\"}]}\n"
               "{\"text\": \"Plain text, all of it trained.\"}\n",
               path, sizeof path);
    zoff_sft_config cfg;
    zoff_sft_config_default(&cfg);
    cfg.seq_len = 64;
    zoff_sft_data *d;
    REQUIRE_OK(zoff_sft_load(path, tok, &cfg, &d));
    CHECK_EQ_INT(zoff_sft_num_samples(d), 3);
    char *s = trained_text(tok, d, 0);
    CHECK(strcmp(s, "It is 4.<|im_end|>") == 0);
    free(s);
    s = trained_text(tok, d, 1);
    CHECK(strcmp(s, "Hi there!<|im_end|>") == 0);
    free(s);
    s = trained_text(tok, d, 2);
    CHECK(strcmp(s, "Plain text, all of it trained.") == 0);
    free(s);
    /* the whole sample is the rendered conversation, segment by segment */
    const int32_t *tk;
    const uint8_t *tr;
    size_t len, line;
    zoff_sft_sample(d, 1, &tk, &tr, &len, &line);
    CHECK_EQ_INT(line, 3);
    char *all;
    size_t al;
    REQUIRE_OK(zoff_tok_decode(tok, tk, len, false, &all, &al));
    CHECK(strcmp(all, "<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
                      "<|im_start|>assistant\nHi there!<|im_end|>\n") == 0);
    free(all);
    zoff_sft_free(d);

    /* llama3 template; text lines get BOS */
    cfg.chat_template = ZOFF_CHAT_LLAMA3;
    REQUIRE_OK(zoff_sft_load(path, tok, &cfg, &d));
    zoff_sft_sample(d, 2, &tk, &tr, &len, &line);
    CHECK_EQ_INT(tk[0], zoff_tok_find(tok, "<|begin_of_text|>"));
    s = trained_text(tok, d, 0);
    CHECK(strcmp(s, "It is 4.<|eot_id|>") == 0);
    free(s);
    zoff_sft_free(d);

    /* truncation (default) and refusal of long samples */
    cfg.seq_len = 8;
    REQUIRE_OK(zoff_sft_load(path, tok, &cfg, &d));
    CHECK_EQ_INT(zoff_sft_num_truncated(d), 3);
    zoff_sft_sample(d, 0, &tk, &tr, &len, &line);
    CHECK_EQ_INT(len, 8);
    zoff_sft_free(d);
    cfg.on_overflow = ZOFF_SFT_REFUSE;
    CHECK_EQ_INT(zoff_sft_load(path, tok, &cfg, &d), ZOFF_EFORMAT);
    CHECK(strstr(zoff_last_error_detail(), "a.jsonl:1:") != NULL);
}

/* Malformed lines: code, and the detail names file:line and the field. */
static void check_bad(zoff_tok *tok, const char *text, const char *want) {
    char path[512];
    write_file("bad.jsonl", text, path, sizeof path);
    zoff_sft_config cfg;
    zoff_sft_config_default(&cfg);
    zoff_sft_data *d = NULL;
    CHECK_EQ_INT(zoff_sft_load(path, tok, &cfg, &d), ZOFF_EFORMAT);
    CHECK(d == NULL);
    if (!strstr(zoff_last_error_detail(), want)) {
        fprintf(stderr, "detail '%s' lacks '%s'\n", zoff_last_error_detail(), want);
        CHECK(0);
    }
}

static void check_errors(zoff_tok *tok, zoff_tok *gpt2) {
    const char *ok = "{\"text\": \"fine\"}\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%s%s{\"prompt\": \"x\", \"respon", ok, ok);
    check_bad(tok, buf, "bad.jsonl:3: not a JSON object");
    snprintf(buf, sizeof buf,
             "%s{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]}\n",
             ok);
    check_bad(tok, buf, "bad.jsonl:2: field 'messages[1].role'");
    check_bad(tok, "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}",
              ":1: field 'messages[0].content'");
    check_bad(tok, "{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}",
              ":1: field 'messages[0].role': expected system, user or assistant");
    check_bad(tok, "{\"prompt\": \"x\"}", ":1: field 'response'");
    check_bad(tok, "{\"text\": 5}", ":1: field 'text'");
    check_bad(tok, "{\"input\": \"x\"}", ":1: expected \"prompt\" and \"response\"");
    check_bad(tok, "[1, 2]", ":1: not a JSON object");
    check_bad(tok, "\n\n", "no samples");
    zoff_sft_config cfg;
    zoff_sft_config_default(&cfg);
    zoff_sft_data *d;
    char path[512];
    snprintf(path, sizeof path, "%s/nonexistent.jsonl", tmpdir);
    CHECK_EQ_INT(zoff_sft_load(path, tok, &cfg, &d), -ENOENT);
    CHECK(strstr(zoff_last_error_detail(), "nonexistent.jsonl") != NULL);
    /* the gpt2 fixture has no <|im_start|> token: the chatml template is refused */
    write_file("ok.jsonl", ok, path, sizeof path);
    CHECK_EQ_INT(zoff_sft_load(path, gpt2, &cfg, &d), ZOFF_ECONFIG);
    CHECK(strstr(zoff_last_error_detail(), "<|im_start|>") != NULL);
}

/* A data set of n prompt/response samples of varying lengths. */
static zoff_sft_data *make_data(zoff_tok *tok, int n, int T) {
    char path[512];
    snprintf(path, sizeof path, "%s/many.jsonl", tmpdir);
    FILE *f = fopen(path, "w");
    unsigned long long rng = 7;
    for (int i = 0; i < n; i++) {
        int words = 1 + (int)(zoff_test_rand(&rng) % 12);
        fprintf(f, "{\"prompt\": \"question %d\", \"response\": \"", i);
        for (int w = 0; w < words; w++)
            fprintf(f, "%sword%d", w ? " " : "", w * i);
        fprintf(f, "\"}\n");
    }
    fclose(f);
    zoff_sft_config cfg;
    zoff_sft_config_default(&cfg);
    cfg.seq_len = T;
    zoff_sft_data *d;
    REQUIRE_OK(zoff_sft_load(path, tok, &cfg, &d));
    return d;
}

/* Finds the sample whose tokens are row[a, b); -1 if none. */
static long find_sample(const zoff_sft_data *d, const int32_t *row, int a, int b) {
    for (size_t i = 0; i < zoff_sft_num_samples(d); i++) {
        const int32_t *tk;
        const uint8_t *tr;
        size_t len, line;
        zoff_sft_sample(d, i, &tk, &tr, &len, &line);
        if ((int)len == b - a && memcmp(tk, row + a, len * sizeof(int32_t)) == 0) return (long)i;
    }
    return -1;
}

/* Checks a row's invariants; records the samples it holds (in order) into seen[]. */
static void check_row(const zoff_sft_data *d, int T, const int32_t *in, const int32_t *tg,
                      const int32_t *ds, int n_samples, bool packed, long *seen, int *n_seen) {
    int t = 0, found = 0;
    while (t < T) {
        if (ds[t] == t && (t + 1 >= T || ds[t + 1] != t)) {
            /* a one-position sample or padding: padding runs to the end */
            long s = find_sample(d, in, t, t + 1);
            if (s < 0 || found == n_samples) {
                for (int k = t; k < T; k++)
                    CHECK(ds[k] == k && tg[k] == ZOFF_SFT_IGNORE);
                break;
            }
        }
        int a = t;
        CHECK_EQ_INT(ds[a], a);
        int b = a + 1;
        while (b < T && ds[b] == a)
            b++;
        long s = find_sample(d, in, a, b);
        CHECK(s >= 0);
        if (s < 0) return;
        const int32_t *tk;
        const uint8_t *tr;
        size_t len, line;
        zoff_sft_sample(d, (size_t)s, &tk, &tr, &len, &line);
        for (int k = a; k < b; k++) {
            int i = k - a;
            int32_t want = i + 1 < (int)len && tr[i + 1] ? tk[i + 1] : ZOFF_SFT_IGNORE;
            CHECK_EQ_INT(tg[k], want);
        }
        CHECK_EQ_INT(tg[b - 1], ZOFF_SFT_IGNORE);
        if (!packed) CHECK_EQ_INT(a, 0);
        seen[(*n_seen)++] = s;
        found++;
        t = b;
    }
    CHECK_EQ_INT(found, n_samples);
}

/* A batch is its rows as next_row gives them, with the counts; past the end, padding. */
static void check_batches(const zoff_sft_data *d) {
    zoff_sft_iter_config ic;
    zoff_sft_iter_config_default(&ic);
    ic.seed = 5;
    ic.epochs = 1;
    zoff_sft_iter *a, *b;
    REQUIRE_OK(zoff_sft_iter_create(d, &ic, false, &a));
    REQUIRE_OK(zoff_sft_iter_create(d, &ic, false, &b));
    zoff_sft_batch batch;
    REQUIRE_OK(zoff_sft_batch_alloc(&batch, 4, 48));
    int32_t in[48], tg[48], ds[48];
    int total = 0, ns, ended = 0;
    for (int k = 0; k < 40 && !ended; k++) {
        CHECK_OK(zoff_sft_next_batch(b, &batch));
        int samples = 0;
        long targets = 0;
        for (int r = 0; r < 4; r++) {
            CHECK_OK(zoff_sft_next_row(a, in, tg, ds, &ns));
            if (ns == 0) { /* the end: padding rows */
                ended = 1;
                for (int t = 0; t < 48; t++) {
                    CHECK_EQ_INT(batch.targets[r * 48 + t], ZOFF_SFT_IGNORE);
                    CHECK_EQ_INT(batch.doc_start[r * 48 + t], t);
                }
                continue;
            }
            CHECK(memcmp(in, batch.inputs + r * 48, sizeof in) == 0);
            CHECK(memcmp(tg, batch.targets + r * 48, sizeof tg) == 0);
            CHECK(memcmp(ds, batch.doc_start + r * 48, sizeof ds) == 0);
            for (int t = 0; t < 48; t++)
                targets += tg[t] != ZOFF_SFT_IGNORE;
            samples += ns;
        }
        CHECK_EQ_INT(batch.n_samples, samples);
        CHECK_EQ_INT(batch.n_targets, targets);
        CHECK(ended || targets > 0);
        total += samples;
    }
    CHECK(ended);
    CHECK_EQ_INT(total, (int)zoff_sft_iter_num_samples(a));
    CHECK_OK(zoff_sft_next_batch(b, &batch)); /* after the end: nothing */
    CHECK_EQ_INT(batch.n_samples, 0);
    CHECK_EQ_INT(batch.n_targets, 0);
    zoff_sft_batch_free(&batch);
    REQUIRE_OK(zoff_sft_batch_alloc(&batch, 2, 16));
    CHECK_EQ_INT(zoff_sft_next_batch(b, &batch), ZOFF_ECONFIG);
    zoff_sft_batch_free(&batch);
    CHECK_EQ_INT(zoff_sft_batch_alloc(&batch, 0, 16), ZOFF_ECONFIG);
    zoff_sft_iter_free(a);
    zoff_sft_iter_free(b);
}

static void check_iter(zoff_tok *tok) {
    const int N = 60, T = 48;
    zoff_sft_data *d = make_data(tok, N, T);
    CHECK_EQ_INT(zoff_sft_num_samples(d), N);
    for (int packed = 0; packed < 2; packed++) {
        zoff_sft_iter_config ic;
        zoff_sft_iter_config_default(&ic);
        ic.packed = packed;
        ic.seed = 42;
        ic.val_frac = 0.1;
        ic.epochs = 2;
        zoff_sft_iter *tr, *va;
        REQUIRE_OK(zoff_sft_iter_create(d, &ic, false, &tr));
        REQUIRE_OK(zoff_sft_iter_create(d, &ic, true, &va));
        CHECK_EQ_INT(zoff_sft_iter_num_samples(va), 6);
        CHECK_EQ_INT(zoff_sft_iter_num_samples(tr), 54);
        int32_t in[48], tg[48], ds[48];
        long seen[400];
        int n_seen = 0, rows = 0, ns;
        /* validation: one pass in file order, then an end row, then the next pass */
        long vseen[64];
        int n_v = 0;
        for (;;) {
            CHECK_OK(zoff_sft_next_row(va, in, tg, ds, &ns));
            if (ns == 0) break;
            check_row(d, T, in, tg, ds, ns, packed, vseen, &n_v);
        }
        CHECK_EQ_INT(n_v, 6);
        for (int i = 1; i < n_v; i++)
            CHECK(vseen[i] > vseen[i - 1]);
        CHECK_OK(zoff_sft_next_row(va, in, tg, ds, &ns));
        CHECK(ns > 0);
        /* training: two epochs, each a permutation of the 54 training samples */
        for (;;) {
            CHECK_OK(zoff_sft_next_row(tr, in, tg, ds, &ns));
            if (ns == 0) break;
            check_row(d, T, in, tg, ds, ns, packed, seen, &n_seen);
            if (!packed) CHECK_EQ_INT(ns, 1);
            rows++;
        }
        CHECK_EQ_INT(n_seen, 108);
        if (packed) CHECK(rows < 108); /* several samples per row */
        for (int e = 0; e < 2; e++) {
            int count[60] = {0};
            for (int i = 0; i < 54; i++)
                count[seen[e * 54 + i]]++;
            for (int i = 0; i < n_v; i++)
                CHECK_EQ_INT(count[vseen[i]], 0); /* held out */
            int ones = 0;
            for (int i = 0; i < 60; i++)
                ones += count[i] == 1;
            CHECK_EQ_INT(ones, 54);
        }
        CHECK(memcmp(seen, seen + 54, 54 * sizeof(long)) != 0); /* reshuffled per epoch */
        zoff_sft_iter_free(tr);
        zoff_sft_iter_free(va);

        /* the same seed gives the same order, another seed another; the split stays */
        long a[60], b[60];
        int na = 0, nb = 0;
        for (int k = 0; k < 2; k++) {
            ic.seed = k == 0 ? 42 : 43;
            REQUIRE_OK(zoff_sft_iter_create(d, &ic, false, &tr));
            long *dst = k == 0 ? a : b;
            int *nd = k == 0 ? &na : &nb;
            while (*nd < 54) {
                CHECK_OK(zoff_sft_next_row(tr, in, tg, ds, &ns));
                check_row(d, T, in, tg, ds, ns, packed, dst, nd);
            }
            zoff_sft_iter_free(tr);
        }
        CHECK(memcmp(a, seen, 54 * sizeof(long)) == 0);
        CHECK(memcmp(a, b, 54 * sizeof(long)) != 0);

        /* resume mid-epoch: a cursor saved after 5 rows continues with the same rows, into the next
         * epoch */
        ic.seed = 42;
        ic.epochs = 0;
        REQUIRE_OK(zoff_sft_iter_create(d, &ic, false, &tr));
        for (int r = 0; r < 5; r++)
            CHECK_OK(zoff_sft_next_row(tr, in, tg, ds, &ns));
        zoff_sft_cursor cur = zoff_sft_iter_cursor(tr);
        CHECK(cur.index > 0 && cur.epoch == 0);
        static int32_t rows_a[60][3][48];
        for (int r = 0; r < 60; r++)
            CHECK_OK(zoff_sft_next_row(tr, rows_a[r][0], rows_a[r][1], rows_a[r][2], &ns));
        CHECK(zoff_sft_iter_cursor(tr).epoch >= 1); /* crossed into the next epoch */
        zoff_sft_iter *tr2;
        ic.seed = 42;
        REQUIRE_OK(zoff_sft_iter_create(d, &ic, false, &tr2));
        CHECK_OK(zoff_sft_iter_seek(tr2, cur));
        for (int r = 0; r < 60; r++) {
            CHECK_OK(zoff_sft_next_row(tr2, in, tg, ds, &ns));
            CHECK(memcmp(in, rows_a[r][0], sizeof in) == 0);
            CHECK(memcmp(tg, rows_a[r][1], sizeof tg) == 0);
            CHECK(memcmp(ds, rows_a[r][2], sizeof ds) == 0);
        }
        cur.index = 1000;
        CHECK_EQ_INT(zoff_sft_iter_seek(tr2, cur), -EINVAL);
        zoff_sft_iter_free(tr);
        zoff_sft_iter_free(tr2);
    }
    check_batches(d);
    zoff_sft_iter_config ic;
    zoff_sft_iter_config_default(&ic);
    zoff_sft_iter *it;
    ic.val_frac = 1.0;
    CHECK_EQ_INT(zoff_sft_iter_create(d, &ic, false, &it), ZOFF_ECONFIG);
    ic.val_frac = 0;
    ic.seq_len = 16;
    CHECK_EQ_INT(zoff_sft_iter_create(d, &ic, false, &it), ZOFF_ECONFIG);
    zoff_sft_free(d);
}

int main(int argc, char **argv) {
    zoff_test_init();
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/zoff_sft_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    char path[512];
    zoff_tok *tok, *gpt2;
    snprintf(path, sizeof path, "%s/llama3", argv[1]);
    REQUIRE_OK(zoff_tok_load(path, &tok));
    snprintf(path, sizeof path, "%s/gpt2", argv[1]);
    REQUIRE_OK(zoff_tok_load(path, &gpt2));
    check_templates();
    check_load(tok);
    check_errors(tok, gpt2);
    check_iter(tok);
    zoff_tok_free(tok);
    zoff_tok_free(gpt2);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return zoff_test_finish("test_text_sft_data");
}
