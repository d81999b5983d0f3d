/* `zoff sft`: supervised fine-tuning on JSONL conversations. The training run is `zoff train`'s
 * (cmd_train.c: one loop, every option) with the SFT source (sft_source.c) for its batches.
 *
 * With no arguments (or --demo, followed by any option to change) it is the built-in demo: a
 * task it makes itself - 3-digit addition written as prompts and answers ("345+78=" -> "423")
 * - in a temporary folder with a byte-level tokenizer.json, and a small Llama trained from
 * scratch on it with the optimizer offloaded to the CPU; held-out exact-match accuracy (greedy
 * answers to prompts it never trained on) is printed at each validation, rising from 0, and a
 * few held-out prompts with the model's answers at the end. Deterministic by --seed. */
#include "cli/train_source.h"
#include "model/checkpoint_dir.h"
#include "model/model.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_SAMPLES 40000

/* GPT-2's byte-to-unicode map: printable bytes stand for themselves, the others for
 * U+0100 onwards (what a ByteLevel tokenizer.json spells its byte tokens with). */
static void byte_char(int b, char out[3]) {
    int cp;
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
        cp = b;
    } else {
        int n = 0; /* the rank of b among the bytes that are remapped */
        for (int k = 0; k < b; k++)
            if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF)))
                n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* A byte-level BPE tokenizer.json with no merges (one token per byte, ids 0..255) and the end
 * token <|endoftext|> (256), and its tokenizer_config.json. */
static int write_tokenizer(const char *dir) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -errno;
    fprintf(f, "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,\n"
               " \"added_tokens\": [{\"id\": 256, \"content\": \"<|endoftext|>\", "
               "\"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
               "\"normalized\": false, \"special\": true}],\n"
               " \"normalizer\": null,\n"
               " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
               "\"trim_offsets\": true, \"use_regex\": false},\n"
               " \"post_processor\": null,\n"
               " \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
               "\"trim_offsets\": true, \"use_regex\": false},\n"
               " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
               "\"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, "
               "\"fuse_unk\": false, \"byte_fallback\": false, \"ignore_merges\": false,\n"
               "  \"vocab\": {");
    for (int b = 0; b < 256; b++) {
        char c[3];
        byte_char(b, c);
        fprintf(f, "%s\"%s%s\": %d", b ? ", " : "", c[0] == '"' || c[0] == '\\' ? "\\" : "", c, b);
    }
    fprintf(f, "},\n  \"merges\": []}}\n");
    int rc = ferror(f) ? -EIO : 0;
    if (fclose(f) && !rc) rc = -errno;
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (!(f = fopen(path, "w"))) return -errno;
    fprintf(f, "{\"eos_token\": \"<|endoftext|>\", \"zoff_chat_template\": \"plain\"}\n");
    rc = ferror(f) ? -EIO : 0;
    if (fclose(f) && !rc) rc = -errno;
    return rc;
}

/* The task: a + b for a, b in 0..999, as {"prompt": "a+b=", "response": "sum"}. */
static int write_task(const char *path, uint64_t seed) {
    FILE *f = fopen(path, "w");
    if (!f) return -errno;
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < DEMO_SAMPLES; i++) {
        int a = (int)(zoff_rng_next(&rng) % 1000), b = (int)(zoff_rng_next(&rng) % 1000);
        fprintf(f, "{\"prompt\": \"%d+%d=\", \"response\": \"%d\"}\n", a, b, a + b);
    }
    int rc = ferror(f) ? -EIO : 0;
    if (fclose(f) && !rc) rc = -errno;
    return rc;
}

static int demo(int argc, char **argv) {
    long long seed = 1337;
    for (int i = 1; i + 1 < argc; i++) /* the task follows --seed too */
        if (strcmp(argv[i], "--seed") == 0) seed = atoll(argv[i + 1]);
    char dir[] = "/tmp/zoff_sft_demo_XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "zoff sft: demo: a temporary folder: %s\n", strerror(errno));
        return 1;
    }
    char data[PATH_MAX];
    snprintf(data, sizeof data, "%s/addition.jsonl", dir);
    int rc = write_tokenizer(dir);
    if (!rc) rc = write_task(data, (uint64_t)seed);
    if (rc) {
        fprintf(stderr, "zoff sft: demo: writing to %s: %s\n", dir, strerror(-rc));
        zoff_remove_tree(dir);
        return 1;
    }
    printf("zoff sft demo: %d prompts of 3-digit addition (\"345+78=\" -> \"423\") in %s, "
           "a byte-level tokenizer, a small Llama from scratch; held-out exact match (greedy) "
           "at each validation\n",
           DEMO_SAMPLES, data);
    /* clang-format off */
    const char *fixed[] = {
        "sft", "--tokenizer", dir, "--data", data, "--template", "plain",
        "--arch", "llama", "--n-layer", "2", "--n-head", "4", "--n-kv-head", "2",
        "--n-embd", "128", "--seq-len", "64", "--batch", "32", "--steps", "1500",
        "--lr", "3e-3", "--warmup", "50", "--weight-decay", "0",
        "--val-frac", "0.01", "--val-every", "150", "--val-batches", "4",
        "--eval-generate", "100", "--show", "6", "--ckpt-every", "0",
        "--offload", "cpu", "--out", "zoff_sft_demo", "--overwrite"};
    /* clang-format on */
    int nf = (int)(sizeof fixed / sizeof fixed[0]);
    char **args = malloc((size_t)(nf + argc) * sizeof *args);
    if (!args) {
        zoff_remove_tree(dir);
        return 1;
    }
    int n = 0;
    for (int i = 0; i < nf; i++)
        args[n++] = (char *)fixed[i];
    for (int i = 1; i < argc; i++) /* the user's options come later and win */
        if (strcmp(argv[i], "--demo") != 0) args[n++] = argv[i];
    args[n] = NULL;
    int ret = zoff_train_sft_main(n, args);
    free(args);
    zoff_remove_tree(dir);
    return ret;
}

int zoff_cmd_sft(int argc, char **argv) {
    bool is_demo = argc == 1;
    for (int i = 1; i < argc; i++)
        is_demo = is_demo || strcmp(argv[i], "--demo") == 0;
    return is_demo ? demo(argc, argv) : zoff_train_sft_main(argc, argv);
}
