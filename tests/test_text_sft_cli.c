/* `zoff sft` and `zoff generate` end to end (argv[1] = the zoff binary, argv[2] = the tokenizer
 * fixtures), on the host backend with a tiny Llama from scratch and the qwen2 fixture's
 * tokenizer (ChatML tokens): a run trains, validates (loss and greedy exact match on the
 * held-out split), and writes checkpoints holding the SFT cursor and the tokenizer files; a run
 * resumed mid-epoch from its middle checkpoint gives the same losses as the uninterrupted one
 * (the same sample order); the final folder fine-tunes again with --model and answers through
 * zoff generate; offloaded runs trace the prefetch thread; bad input (malformed JSONL, missing
 * tokenizer files, options of the wrong command, a resume with another seed) exits non-zero naming
 * the file, line and field. */
#include "tests/cli_test_util.h"
#include "tests/test_util.h"
#include "zoff/zoff.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char fixtures[4096]; /* absolute */

/* zoff on the host backend; output in out.txt */
static int run(const char *args) {
    return cli_run_env("ZOFF_DEVICE=host ZOFF_LOG=warn", args);
}

/* The metrics line of a step ("loss" through "grad_norm"), copied into out. */
static int step_line(const char *rel, int step, char *out, size_t n) {
    char *buf = cli_slurp(rel, NULL), key[64];
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
    int rc = cli_setup_fixtures(argc, argv, "/tmp/zoff_sft_cli_XXXXXX", fixtures);
    if (rc) return rc;
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
    REQUIRE_OK(cli_write_file("data.jsonl", jsonl));
    free(jsonl);
    char args[sizeof fixtures + 2048];

    /* uninterrupted: 24 steps, checkpoints every 12 */
    snprintf(args, sizeof args,
             "sft --tokenizer %s/qwen2 --data data.jsonl " TINY
             "--steps 24 --ckpt-every 12 --val-every 12 --eval-generate 3 --show 2 --out a",
             fixtures);
    CHECK_EQ_INT(run(args), 0);
    CHECK(cli_output_has("zoff sft: "));
    CHECK(cli_output_has("chatml template, packed rows"));
    CHECK(cli_output_has("| epoch "));
    CHECK(cli_output_has("samples/s"));
    CHECK(cli_output_has("exact match"));
    CHECK(cli_output_has("held-out prompts and the model's greedy answers"));
    CHECK(cli_output_has("ms per batch prepared on the prefetch thread"));
    CHECK(cli_exists("a/step_12/sft_state.json"));
    CHECK(cli_exists("a/step_12/tokenizer.json"));
    CHECK(cli_exists("a/final/tokenizer_config.json"));
    CHECK(cli_exists("a/final/optimizer.safetensors"));

    /* the same run stopped at step 12, then resumed mid-epoch: the same later steps */
    snprintf(args, sizeof args,
             "sft --tokenizer %s/qwen2 --data data.jsonl " TINY
             "--steps 24 --ckpt-every 12 --val-every 12 --show 0 --out b",
             fixtures);
    CHECK_EQ_INT(run(args), 0);
    char *state = cli_slurp("b/step_12/sft_state.json", NULL);
    CHECK(state && strstr(state, "\"epoch\":\t\"0\"") && !strstr(state, "\"index\":\t\"0\""));
    free(state);
    CHECK_EQ_INT(run("sft --resume b/step_12 --data data.jsonl " TINY
                     "--steps 24 --val-every 12 --show 0 --out b"),
                 0);
    CHECK(cli_output_has("trained steps 13..24"));
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
    CHECK(cli_output_has("sft_state.json: field 'seed (--seed)'"));

    /* the final folder is a model folder: fine-tuned again (template found in its
     * tokenizer_config.json), and zoff generate answers with the template applied */
    CHECK_EQ_INT(run("sft --model a/final --data data.jsonl --steps 2 --batch 2 --threads 1 "
                     "--val-frac 0.1 --show 1 --out c"),
                 0);
    CHECK(cli_output_has("chatml template"));
    CHECK_EQ_INT(run("generate --model a/final --prompt 'is 7 odd or even?' --greedy "
                     "--max-new-tokens 8"),
                 0);
    CHECK(cli_output_has("yes\n"));
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
    char *trace = cli_slurp("t.json", NULL);
    CHECK(trace && strstr(trace, "prepare batch") && strstr(trace, "wait for batch") &&
          strstr(trace, "data prefetch"));
    free(trace);

    /* bad input */
    REQUIRE_OK(cli_write_file("bad.jsonl",
                              "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"a\"}\n"));
    snprintf(args, sizeof args,
             "sft --tokenizer %s/qwen2 --data bad.jsonl " TINY "--steps 2 --out d", fixtures);
    CHECK(run(args) != 0);
    CHECK(cli_output_has("bad.jsonl:2: field 'response'"));
    CHECK(run("sft --model nowhere --data data.jsonl --out d") == 2);
    CHECK(cli_output_has("nowhere/tokenizer.json"));
    snprintf(args, sizeof args, "sft --tokenizer %s/qwen2 --data data.jsonl --steps 2 --out d",
             fixtures);
    CHECK(run(args) == 2); /* no tokenizer_config.json: the template must be named */
    CHECK(cli_output_has("qwen2/tokenizer_config.json: missing"));
    CHECK(cli_output_has("--template"));
    snprintf(args, sizeof args, "sft --tokenizer %s/qwen2 --steps 2 --out d", fixtures);
    CHECK(run(args) == 2);
    CHECK(cli_output_has("needs --data FILE.jsonl"));
    CHECK(run("train --template chatml --steps 1") == 2);
    CHECK(cli_output_has("--template is an option of zoff sft"));
    CHECK(run("generate --model nowhere --prompt hi") == 1);
    CHECK(cli_output_has("nowhere/tokenizer.json"));
    CHECK(run("generate --prompt hi") == 2);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cli_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", cli_dir);
    return zoff_test_finish("test_text_sft_cli");
}
