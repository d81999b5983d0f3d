/* `zoff sft` and `zoff generate` end to end (argv[1] = the zoff binary, argv[2] = the tokenizer
 * fixtures), on the host backend with a tiny Llama from scratch and the qwen2 fixture's
 * tokenizer (ChatML tokens): a run trains, validates (loss and greedy exact match on the
 * held-out split), and writes checkpoints holding the SFT cursor and the tokenizer files; a run
 * resumed mid-epoch from its middle checkpoint gives the same losses as the uninterrupted one
 * (the same sample order); the final folder fine-tunes again with --model and answers through
 * zoff generate; offloaded runs trace the prefetch thread; bad input (malformed JSONL, missing
 * tokenizer files, options of the wrong command, a resume with another seed) exits non-zero naming
 * the file, line and field. */
#include "tests/test_util.h"
#include "zoff/zoff.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *zoff, *fixtures;
static char dir[256];

static int run(const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && ZOFF_DEVICE=host ZOFF_LOG=warn '%s' %s > out.txt 2>&1",
             dir, zoff, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *read_all(const char *rel) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 20);
    if (buf) buf[fread(buf, 1, (1 << 20) - 1, f)] = 0;
    fclose(f);
    return buf;
}

static int output_has(const char *text) {
    char *buf = read_all("out.txt");
    int ok = buf && strstr(buf, text);
    if (!ok) fprintf(stderr, "output lacks '%s':\n%s\n", text, buf ? buf : "(none)");
    free(buf);
    return ok;
}

static int exists(const char *rel) {
    char path[512];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return stat(path, &sb) == 0;
}

static void write_file(const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "w");
    REQUIRE_OK(f ? 0 : -1);
    fputs(text, f);
    fclose(f);
}

/* The metrics line of a step ("loss" through "grad_norm"), copied into out. */
static int step_line(const char *rel, int step, char *out, size_t n) {
    char *buf = read_all(rel), key[64];
    snprintf(key, sizeof key, "{\"step\":%d,\"loss\":", step);
    char *p = buf ? strstr(buf, key) : NULL, *e = p ? strstr(p, ",\"tokens_per_s\"") : NULL;
    int ok = p && e && (size_t)(e - p) < n;
    if (ok) snprintf(out, n, "%.*s", (int)(e - p), p);
    free(buf);
    return ok;
}

#define TINY                                                                                       \
    "--arch llama --n-layer 1 --n-head 2 --n-embd 32 --seq-len 32 --batch 2 --threads 1 "          \
    "--lr 1e-2 --warmup 0 --val-frac 0.1 --template chatml "

int main(int argc, char **argv) {
    zoff_test_init();
    if (argc < 3) {
        fprintf(stderr, "usage: %s ZOFF_BINARY TOKENIZER_FIXTURES\n", argv[0]);
        return 2;
    }
    static char abs_zoff[4096], abs_fix[4096];
    if (!realpath(argv[1], abs_zoff) || !realpath(argv[2], abs_fix)) {
        fprintf(stderr, "%s or %s: not found\n", argv[1], argv[2]);
        return 1;
    }
    zoff = abs_zoff;
    fixtures = abs_fix;
    snprintf(dir, sizeof dir, "/tmp/zoff_sft_cli_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    /* 40 conversations whose answer is always "yes": a tiny model learns it in a few steps */
    char *jsonl = malloc(1 << 16);
    size_t k = 0;
    for (int i = 0; i < 40; i++)
        k +=
            (size_t)snprintf(jsonl + k, (1 << 16) - k,
                             i % 3 ? "{\"prompt\": \"is %d odd or even?\", \"response\": \"yes\"}\n"
                                   : "{\"messages\": [{\"role\": \"user\", \"content\": \"tell me "
                                     "%d\"}, {\"role\": \"assistant\", \"content\": \"yes\"}]}\n",
                             i);
    write_file("data.jsonl", jsonl);
    free(jsonl);
    char args[2048];

    /* uninterrupted: 24 steps, checkpoints every 12 */
    snprintf(args, sizeof args,
             "sft --tokenizer %s/qwen2 --data data.jsonl " TINY
             "--steps 24 --ckpt-every 12 --val-every 12 --eval-generate 3 --show 2 --out a",
             fixtures);
    CHECK_EQ_INT(run(args), 0);
    CHECK(output_has("zoff sft: "));
    CHECK(output_has("chatml template, packed rows"));
    CHECK(output_has("| epoch "));
    CHECK(output_has("samples/s"));
    CHECK(output_has("exact match"));
    CHECK(output_has("held-out prompts and the model's greedy answers"));
    CHECK(output_has("ms per batch prepared on the prefetch thread"));
    CHECK(exists("a/step_12/sft_state.json"));
    CHECK(exists("a/step_12/tokenizer.json"));
    CHECK(exists("a/final/tokenizer_config.json"));
    CHECK(exists("a/final/optimizer.safetensors"));

    /* the same run stopped at step 12, then resumed mid-epoch: the same later steps */
    snprintf(args, sizeof args,
             "sft --tokenizer %s/qwen2 --data data.jsonl " TINY
             "--steps 24 --ckpt-every 12 --val-every 12 --show 0 --out b",
             fixtures);
    CHECK_EQ_INT(run(args), 0);
    char *state = read_all("b/step_12/sft_state.json");
    CHECK(state && strstr(state, "\"epoch\":\t\"0\"") && !strstr(state, "\"index\":\t\"0\""));
    free(state);
    CHECK_EQ_INT(run("sft --resume b/step_12 --data data.jsonl " TINY
                     "--steps 24 --val-every 12 --show 0 --out b"),
                 0);
    CHECK(output_has("trained steps 13..24"));
    char la[512], lb[512];
    for (int step = 13; step <= 24; step += 11) {
        CHECK(step_line("a/metrics.jsonl", step, la, sizeof la));
        CHECK(step_line("b/metrics.jsonl", step, lb, sizeof lb));
        if (strcmp(la, lb) != 0) fprintf(stderr, "step %d: %s\nresumed: %s\n", step, la, lb);
        CHECK(strcmp(la, lb) == 0);
    }
    /* another seed would not continue the order: refused, naming the file and field */
    CHECK_EQ_INT(
        run("sft --resume b/step_12 --data data.jsonl " TINY "--steps 24 --seed 7 --out b"), 1);
    CHECK(output_has("sft_state.json: field 'seed (--seed)'"));

    /* the final folder is a model folder: fine-tuned again (template found in its
     * tokenizer_config.json), and zoff generate answers with the template applied */
    CHECK_EQ_INT(run("sft --model a/final --data data.jsonl --steps 2 --batch 2 --threads 1 "
                     "--val-frac 0.1 --show 1 --out c"),
                 0);
    CHECK(output_has("chatml template"));
    CHECK_EQ_INT(run("generate --model a/final --prompt 'is 7 odd or even?' --greedy "
                     "--max-new-tokens 8"),
                 0);
    CHECK(output_has("yes\n"));
    CHECK_EQ_INT(run("generate --model a/final --prompt 'hi' --temperature 0.8 --seed 3 "
                     "--max-new-tokens 4"),
                 0);

    /* zoff train's options apply: offloaded (DPU), accumulation, activation checkpointing;
     * the trace shows the batches prepared on the prefetch thread and the loop's waits */
    snprintf(args, sizeof args,
             "sft --tokenizer %s/qwen2 --data data.jsonl " TINY
             "--steps 4 --grad-accum 2 --activation-checkpoint --offload cpu --schedule dpu "
             "--trace t.json --show 0 --out e",
             fixtures);
    CHECK_EQ_INT(run(args), 0);
    char *trace = read_all("t.json");
    CHECK(trace && strstr(trace, "prepare batch") && strstr(trace, "wait for batch") &&
          strstr(trace, "data prefetch"));
    free(trace);

    /* bad input */
    write_file("bad.jsonl", "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"a\"}\n");
    snprintf(args, sizeof args,
             "sft --tokenizer %s/qwen2 --data bad.jsonl " TINY "--steps 2 --out d", fixtures);
    CHECK(run(args) != 0);
    CHECK(output_has("bad.jsonl:2: field 'response'"));
    CHECK(run("sft --model nowhere --data data.jsonl --out d") == 2);
    CHECK(output_has("nowhere/tokenizer.json"));
    snprintf(args, sizeof args, "sft --tokenizer %s/qwen2 --data data.jsonl --steps 2 --out d",
             fixtures);
    CHECK(run(args) == 2); /* no tokenizer_config.json: the template must be named */
    CHECK(output_has("qwen2/tokenizer_config.json: missing"));
    CHECK(output_has("--template"));
    snprintf(args, sizeof args, "sft --tokenizer %s/qwen2 --steps 2 --out d", fixtures);
    CHECK(run(args) == 2);
    CHECK(output_has("needs --data FILE.jsonl"));
    CHECK(run("train --template chatml --steps 1") == 2);
    CHECK(output_has("--template is an option of zoff sft"));
    CHECK(run("generate --model nowhere --prompt hi") == 1);
    CHECK(output_has("nowhere/tokenizer.json"));
    CHECK(run("generate --prompt hi") == 2);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return zoff_test_finish("test_text_sft_cli");
}
