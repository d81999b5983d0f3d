/* The loss zoff sft trains on, checked against a direct computation (argv[1] = the tokenizer
 * fixtures): conversations rendered with ChatML (the qwen2 fixture's tokens), packed several
 * to a row by the SFT iterator, run through a small random Llama with their doc_start; the
 * model's loss must equal the mean of -log p(target) over the response tokens only, where each
 * sample is run alone (positions from 0, nothing else in its attention) and p comes from its
 * own forward. Padded rows give the same mean. Host backend, f32. */
#include "tests/test_util.h"
#include "gpu/device.h"
#include "model/model.h"
#include "text/sft_data.h"
#include "zoff/zoff.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROW 128
#define NB  3

static zoff_dev *dev;
static zoff_dev_stream *st;

/* Sum of -log p(target) over the counted targets of one row, each sample run alone. */
static double direct_row(zoff_model *m, int V, const int32_t *in, const int32_t *tg,
                         const int32_t *ds, long *count) {
    float *probs = malloc((size_t)V * sizeof *probs);
    double sum = 0;
    for (int a = 0; a < ROW;) {
        int e = a + 1;
        while (e < ROW && ds[e] == a)
            e++;
        bool any = false;
        for (int t = a; t < e; t++)
            any = any || tg[t] >= 0;
        if (any) {
            zoff_batch b = {.tokens = in + a, .B = 1, .T = e - a};
            REQUIRE_OK(zoff_model_forward(m, st, &b, NULL));
            for (int t = a; t < e; t++) {
                if (tg[t] < 0) continue;
                REQUIRE_OK(zoff_model_probs_row(m, st, 0, t - a, probs));
                sum -= log((double)probs[tg[t]]);
                (*count)++;
            }
        }
        a = e;
    }
    free(probs);
    return sum;
}

int main(int argc, char **argv) {
    zoff_test_init();
    if (argc < 2) {
        fprintf(stderr, "usage: %s TOKENIZER_FIXTURES\n", argv[0]);
        return 2;
    }
    zoff_dev_config cfg;
    zoff_dev_config_default(&cfg);
    cfg.kind = ZOFF_DEV_HOST;
    REQUIRE_OK(zoff_dev_open(&cfg, &dev));
    REQUIRE_OK(zoff_dev_stream_create(dev, &st));
    char path[512], dir[] = "/tmp/zoff_sft_loss_XXXXXX";
    REQUIRE_OK(mkdtemp(dir) ? 0 : -1);
    snprintf(path, sizeof path, "%s/qwen2", argv[1]);
    zoff_tok *tok;
    REQUIRE_OK(zoff_tok_load(path, &tok));
    snprintf(path, sizeof path, "%s/d.jsonl", dir);
    FILE *f = fopen(path, "w");
    REQUIRE_OK(f ? 0 : -1);
    for (int i = 0; i < 9; i++)
        fprintf(f,
                "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": "
                "\"user\", \"content\": \"what is %d times %d?\"}, {\"role\": \"assistant\", "
                "\"content\": \"%d, I think%s\"}]}\n",
                i, i + 3, i * (i + 3), i % 2 ? " so" : "");
    fclose(f);
    zoff_sft_config sc;
    zoff_sft_config_default(&sc);
    sc.seq_len = ROW;
    zoff_sft_data *d;
    REQUIRE_OK(zoff_sft_load(path, tok, &sc, &d));

    zoff_model_config mc = {.arch = ZOFF_ARCH_LLAMA};
    zoff_llama_config_default(&mc.llama);
    mc.llama.n_layer = 2;
    mc.llama.n_head = 2;
    mc.llama.n_kv_head = 1;
    mc.llama.n_embd = 32;
    mc.llama.head_dim = 16;
    mc.llama.n_ffn = 64;
    mc.llama.vocab_size = (int)zoff_tok_vocab_size(tok);
    mc.llama.seq_len = ROW;
    zoff_model_options mo;
    zoff_model_options_default(&mo);
    mo.batch = NB;
    mo.seq_len = ROW;
    zoff_model *m;
    REQUIRE_OK(zoff_model_config_create(dev, &mc, &mo, &m));
    REQUIRE_OK(zoff_model_init_params(m, 5));
    int V = mc.llama.vocab_size;

    double loss[2];
    for (int packed = 1; packed >= 0; packed--) {
        zoff_sft_iter_config ic;
        zoff_sft_iter_config_default(&ic);
        ic.seq_len = ROW;
        ic.packed = packed;
        ic.val_frac = 0;
        ic.epochs = 1;
        zoff_sft_iter *it;
        REQUIRE_OK(zoff_sft_iter_create(d, &ic, false, &it));
        zoff_sft_batch sb;
        REQUIRE_OK(zoff_sft_batch_alloc(&sb, NB, ROW));
        double model_sum = 0, direct_sum = 0;
        long n_model = 0, n_direct = 0, n_samples = 0;
        bool shared = false; /* several samples in one row */
        for (;;) {
            REQUIRE_OK(zoff_sft_next_batch(it, &sb));
            if (sb.n_samples == 0) break;
            n_samples += sb.n_samples;
            if (sb.n_samples > NB) shared = true;
            zoff_batch b = {.tokens = sb.inputs,
                            .targets = sb.targets,
                            .doc_start = sb.doc_start,
                            .B = NB,
                            .T = ROW};
            float l;
            REQUIRE_OK(zoff_model_forward(m, st, &b, &l));
            model_sum += (double)l * sb.n_targets;
            n_model += sb.n_targets;
            CHECK(sb.n_targets < (long)NB * ROW / 4); /* prompts, headers, padding: no loss */
            long nb = 0;
            double db = 0;
            for (int r = 0; r < NB; r++)
                db += direct_row(m, V, sb.inputs + r * ROW, sb.targets + r * ROW,
                                 sb.doc_start + r * ROW, &nb);
            CHECK_EQ_INT(nb, sb.n_targets);
            printf("%s batch: model loss %.7f, direct mean over %ld response tokens %.7f\n",
                   packed ? "packed" : "padded", l, nb, db / nb);
            CHECK(fabs(l - db / nb) <= 2e-5 * fabs(db / nb));
            direct_sum += db;
            n_direct += nb;
        }
        CHECK_EQ_INT(n_samples, 9);
        CHECK(shared == (packed != 0));
        CHECK_EQ_INT(n_model, n_direct);
        loss[packed] = model_sum / n_model;
        zoff_sft_batch_free(&sb);
        zoff_sft_iter_free(it);
    }
    /* the same tokens scored, whether packed or padded */
    printf("epoch mean: packed %.7f, padded %.7f\n", loss[1], loss[0]);
    CHECK(fabs(loss[1] - loss[0]) <= 2e-5 * loss[0]);

    zoff_model_destroy(m);
    zoff_sft_free(d);
    zoff_tok_free(tok);
    zoff_dev_close(dev);
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    if (system(path) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return zoff_test_finish("test_model_sft_loss");
}
