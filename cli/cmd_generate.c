/* `zoff generate --model DIR --prompt TEXT`: a reply from a chat model. The prompt is rendered
 * with the chat template zoff sft trains with (from DIR/tokenizer_config.json, or --template),
 * as a user turn followed by the start of the assistant's turn; tokens are generated greedily
 * or sampled until the template's end-of-turn token or --max-new-tokens, and the reply is
 * printed decoded (special tokens skipped). Exit codes: 0 done, 1 run-time failure, 2 bad
 * usage. Everything runs on the main thread. */
#include "cli/cli.h"
#include "cli/train_source.h"
#include "model/model.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: zoff generate --model DIR --prompt TEXT [options]\n\n"
               "Prints a chat model's reply to TEXT: DIR is a Hugging Face folder (config.json, "
               "weights,\n"
               "tokenizer.json, tokenizer_config.json), such as a checkpoint of zoff sft.\n\n"
               "  --max-new-tokens N   longest reply in tokens (256)\n"
               "  --greedy             the most likely token each time (default when "
               "--temperature is 0)\n"
               "  --temperature X      sampling temperature (0.7)\n"
               "  --top-k N            sample from the k most likely, 0 = all (40)\n"
               "  --seed N             sampling seed (1337)\n"
               "  --system TEXT        a system turn before the prompt\n"
               "  --template NAME      auto, chatml, llama3, plain (auto: tokenizer_config.json)\n"
               "  --seq-len N          window of tokens the model sees (the model's, at most "
               "2048)\n"
               "  --device NAME        auto, cuda or host\n");
}

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "zoff generate: %s '%s': expected a number in %g..%g\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int zoff_cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *system = NULL, *tmpl = "auto", *device = NULL;
    double max_new = 256, temperature = 0.7, top_k = 40, seed = 1337, seq_len = 0;
    bool greedy = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--greedy") == 0) {
            greedy = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "zoff generate: unknown option or missing value: '%s'\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(a, "--model") == 0)
            model = v;
        else if (strcmp(a, "--prompt") == 0)
            prompt = v;
        else if (strcmp(a, "--system") == 0)
            system = v;
        else if (strcmp(a, "--template") == 0)
            tmpl = v;
        else if (strcmp(a, "--device") == 0)
            device = v;
        else if (strcmp(a, "--max-new-tokens") == 0)
            rc = parse_num(a, v, 1, 1 << 20, &max_new);
        else if (strcmp(a, "--temperature") == 0)
            rc = parse_num(a, v, 0, 100, &temperature);
        else if (strcmp(a, "--top-k") == 0)
            rc = parse_num(a, v, 0, 1 << 24, &top_k);
        else if (strcmp(a, "--seed") == 0)
            rc = parse_num(a, v, 0, 9e15, &seed);
        else if (strcmp(a, "--seq-len") == 0)
            rc = parse_num(a, v, 1, 1 << 20, &seq_len);
        else {
            fprintf(stderr, "zoff generate: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (rc) return 2;
    }
    if (!model || !prompt) {
        fprintf(stderr, "zoff generate: needs --model DIR and --prompt TEXT\n");
        return 2;
    }
    if (temperature == 0) greedy = true;

    int ret = 1, rc;
    zoff_tok *tok = NULL;
    zoff_chat_tokens ct = {0};
    zoff_dev *dev = NULL;
    zoff_dev_stream *s = NULL;
    zoff_model *m = NULL;
    zoff_tok_ids ids = {0}, reply = {0};
    char *text = NULL;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/tokenizer.json", model);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "zoff generate: %s: %s (the model folder needs its tokenizer files)\n",
                path, strerror(errno));
        return 1;
    }
    fclose(f);
    zoff_model_config mc;
    if ((rc = zoff_tok_load(path, &tok)) || (rc = zoff_chat_tokens_init(&ct, tok, model, tmpl)) ||
        (rc = zoff_model_config_from_checkpoint(model, &mc)) ||
        (rc = zoff_chat_prompt_ids(&ct, tok, system, prompt, &ids))) {
        fprintf(stderr, "zoff generate: %s\n", zoff_last_error_detail());
        goto out;
    }
    bool ll = mc.arch == ZOFF_ARCH_LLAMA;
    int V = ll ? mc.llama.vocab_size : mc.gpt.vocab_size;
    int max_t = ll ? mc.llama.seq_len : mc.gpt.seq_len;
    int T = seq_len > 0 ? (int)seq_len : max_t < 2048 ? max_t : 2048;
    if (T > max_t) T = max_t;
    if (zoff_tok_vocab_size(tok) > (size_t)V) {
        fprintf(stderr, "zoff generate: %s has %zu token ids but the model's vocabulary is %d\n",
                path, zoff_tok_vocab_size(tok), V);
        goto out;
    }
    zoff_dev_config dc;
    if (zoff_cli_device_config(&dc, device) != 0) {
        ret = 2;
        goto out;
    }
    zoff_cli_device_resolve_auto(&dc);
    zoff_model_options mo;
    zoff_model_options_default(&mo);
    mo.batch = 1;
    mo.seq_len = T;
    if ((rc = zoff_dev_open(&dc, &dev)) || (rc = zoff_dev_stream_create(dev, &s))) {
        fprintf(stderr, "zoff generate: opening the device: %s\n", zoff_last_error_detail());
        goto out;
    }
    mo.matmul_dtype = zoff_dev_get_kind(dev) == ZOFF_DEV_CUDA ? ZOFF_BF16 : ZOFF_F32;
    if ((rc = zoff_model_config_create(dev, &mc, &mo, &m)) ||
        (rc = zoff_model_checkpoint_load(m, model))) {
        fprintf(stderr, "zoff generate: %s: %s\n", model, zoff_last_error_detail());
        goto out;
    }
    zoff_gen_options go = {.max_new_tokens = (int)max_new,
                           .greedy = greedy,
                           .temperature = (float)temperature,
                           .top_k = (int)top_k,
                           .seed = (uint64_t)seed};
    size_t len;
    if ((rc = zoff_generate_reply(m, s, T, V, &ct, ids.ids, ids.n, &go, &reply)) ||
        (rc = zoff_tok_decode(tok, reply.ids, reply.n, true, &text, &len))) {
        fprintf(stderr, "zoff generate: %s\n", zoff_last_error_detail());
        goto out;
    }
    fwrite(text, 1, len, stdout);
    putchar('\n');
    ret = 0;
out:
    free(text);
    zoff_tok_ids_free(&ids);
    zoff_tok_ids_free(&reply);
    zoff_model_destroy(m);
    if (dev) zoff_dev_close(dev);
    zoff_chat_tokens_free(&ct);
    zoff_tok_free(tok);
    return ret;
}
