/* `zoff train` end to end (argv[1] = the zoff binary), on the host backend with a tiny model:
 * a short run writes metrics.jsonl, checkpoints and a sample; --init-from resumes from its
 * checkpoint; --config sets options; bad flags and values exit 2 naming the flag. */
#include "tests/cli_test_util.h"
#include "tests/test_util.h"

#include <stdio.h>
#include <stdlib.h>

#define HOST "ZOFF_DEVICE=host ZOFF_LOG=warn"

/* zoff on the host backend; output in out.txt */
static int run(const char *args) {
    return cli_run_env(HOST, args);
}

#define TINY                                                                                       \
    "--n-layer 1 --n-head 2 --n-embd 16 --seq-len 16 --batch 2 --val-batches 1 --threads 1 "

int main(int argc, char **argv) {
    zoff_test_init();
    /* (checked first: a skipped test leaves no scratch folder behind) */
    if (!cli_have_train_data()) return ZOFF_TEST_SKIP;
    int rc = cli_setup(argc, argv, "/tmp/zoff_train_XXXXXX");
    if (rc) return rc;

    CHECK_EQ_INT(run("train " TINY "--steps 6 --ckpt-every 3 --val-every 2 --sample-tokens 20 "
                     "--out run1"),
                 0);
    CHECK(cli_output_has("step 6/6"));
    CHECK(cli_output_has("--- sample"));
    CHECK(cli_exists("run1/metrics.jsonl"));
    CHECK(cli_exists("run1/step_3/model.safetensors"));
    CHECK(cli_exists("run1/step_3/config.json"));
    CHECK(cli_exists("run1/final/model.safetensors"));

    /* resume from the checkpoint: the shape comes from its config.json */
    CHECK_EQ_INT(run("train --init-from run1/final --batch 2 --seq-len 8 --steps 2 --threads 1 "
                     "--sample-tokens 0 --out run2"),
                 0);
    CHECK(cli_output_has("1 layers"));
    CHECK(cli_exists("run2/final/config.json"));

    /* --resume continues weights, optimizer state, step and batches: the same final model */
    CHECK(cli_exists("run1/step_3/optimizer.safetensors"));
    CHECK_EQ_INT(run("train " TINY "--steps 6 --resume run1/step_3 --sample-tokens 0 --out run4"),
                 0);
    char cmp[1024];
    snprintf(cmp, sizeof cmp,
             "cmp -s '%s/run1/final/model.safetensors' "
             "'%s/run4/final/model.safetensors'",
             cli_dir, cli_dir);
    CHECK(system(cmp) == 0);
    CHECK_EQ_INT(run("train --resume run1/final --init-from run1/final"), 2);

    /* a config file, overridden by a flag */
    cli_write_file("cfg.json",
                   "{\"n_layer\": 1, \"n_head\": 2, \"n_embd\": 16, \"seq_len\": 16, \"batch\": 2, "
                   "\"steps\": 50, \"dtype\": \"bf16\", \"sample_tokens\": 0}\n");
    CHECK_EQ_INT(run("train --config cfg.json --steps 2 --threads 1 --out run3"), 0);
    CHECK(cli_output_has("2 steps"));
    CHECK(cli_output_has("bf16"));

    /* a GPT whose fp32 training state (16 B/param: 25.4M params, 406 MB) is over 6x the device
     * (64 MiB) trains with the optimizer offloaded; without offload it is refused at start, with
     * the plan */
#define BIG "--n-layer 8 --n-head 8 --n-embd 512 --seq-len 32 --batch 1 --dtype bf16 " \
            "--steps 2 --val-batches 1 --sample-tokens 0 --bucket-size 1MiB "
    CHECK_EQ_INT(
        cli_run_env(HOST " ZOFF_HOST_DEVICE_MEM=64MiB", "train " BIG "--offload none --out big0"),
        1);
    CHECK(cli_output_has("the device plan needs"));
    CHECK(cli_output_has("optimizer"));
    CHECK(!cli_exists("big0/metrics.jsonl"));
    CHECK_EQ_INT(
        cli_run_env(HOST " ZOFF_HOST_DEVICE_MEM=64MiB", "train " BIG "--offload cpu --out big1"),
        0);
    CHECK(cli_output_has("optimizer offloaded"));
    CHECK(cli_output_has("step 2/2"));
    /* its 16-bit weights (51 MB) do not fit in 48 MiB beside the rest: auto keeps the front
     * groups that fit resident and streams the others */
    CHECK_EQ_INT(cli_run_env(HOST " ZOFF_HOST_DEVICE_MEM=48MiB",
                             "train " BIG "--offload cpu --offload-params auto --out big2"),
                 0);
    CHECK(cli_output_has("2 of 10 layer groups resident, 8 streamed"));
    CHECK(cli_output_has("step 2/2"));
#undef BIG

    /* bad usage: exit 2 with the flag named */
    CHECK_EQ_INT(run("train --bogus 3"), 2);
    CHECK(cli_output_has("--bogus"));
    CHECK_EQ_INT(run("train --steps abc"), 2);
    CHECK(cli_output_has("--steps"));
    CHECK_EQ_INT(run("train --steps"), 2);
    CHECK(cli_output_has("--steps"));
    CHECK_EQ_INT(run("train --n-head 3"), 2);
    CHECK(cli_output_has("--n-head"));
    CHECK_EQ_INT(run("train --dtype f8"), 2);
    CHECK(cli_output_has("--dtype"));
    CHECK_EQ_INT(run("train --lr -1"), 2);
    CHECK(cli_output_has("--lr"));
    CHECK_EQ_INT(run("train --config /nonexistent.json"), 2);
    CHECK(cli_output_has("/nonexistent.json"));
    cli_write_file("cfg.json", "{\"n_layers\": 2}\n");
    CHECK_EQ_INT(run("train --config cfg.json"), 2);
    CHECK(cli_output_has("n_layers"));
    /* run-time failures: exit 1 naming the file */
    CHECK_EQ_INT(run("train " TINY "--data /nonexistent/data.txt"), 1);
    CHECK(cli_output_has("/nonexistent/data.txt"));
    CHECK_EQ_INT(run("train --init-from /nonexistent/ckpt"), 1);
    CHECK(cli_output_has("/nonexistent/ckpt"));

    /* offloaded training: each target and schedule trains, checkpoints and reports PCIe bytes */
    CHECK_EQ_INT(run("train " TINY "--dtype bf16 --steps 4 --val-every 2 --ckpt-every 2 "
                     "--sample-tokens 5 --offload cpu --bucket-size 16KiB --trace t.json "
                     "--out off1"),
                 0);
    CHECK(cli_output_has("PCIe 4.0 B/p"));
    CHECK(cli_exists("off1/step_2/model.safetensors"));
    CHECK(cli_exists("off1/final/model.safetensors"));
    CHECK(cli_exists("t.json"));
    CHECK_EQ_INT(run("train " TINY "--dtype bf16 --steps 4 --sample-tokens 0 --offload nvme "
                     "--nvme-path . --schedule dpu --dpu-warmup 1 --moments bf16 --out off2"),
                 0);
    CHECK(cli_output_has("NVMe"));
    CHECK_EQ_INT(run("train " TINY "--steps 3 --sample-tokens 0 --offload cpu --schedule overlap "
                     "--grad-clip 0 --grad-accum 2 --out off3"),
                 0);
    CHECK(cli_output_has("step 3/3"));
    /* resuming an offloaded run's checkpoint */
    CHECK_EQ_INT(run("train --init-from off1/final --batch 2 --steps 2 --threads 1 "
                     "--sample-tokens 0 --offload cpu --out off4"),
                 0);
    /* an offloaded run resumes exactly from its checkpoint (the engine's optimizer state is
     * saved in the trainer's format), and either kind of run resumes the other's */
    CHECK_EQ_INT(run("train " TINY "--steps 6 --ckpt-every 3 --sample-tokens 0 --offload cpu "
                     "--bucket-size 16KiB --out off5"),
                 0);
    CHECK(cli_exists("off5/step_3/optimizer.safetensors"));
    /* (resumed with the state on NVMe: the same arithmetic, so the same model) */
    CHECK_EQ_INT(run("train " TINY
                     "--steps 6 --resume off5/step_3 --sample-tokens 0 --offload nvme "
                     "--nvme-path . --bucket-size 16KiB --out off6"),
                 0);
    snprintf(cmp, sizeof cmp,
             "cmp -s '%s/off5/final/model.safetensors' '%s/off6/final/model.safetensors'", cli_dir,
             cli_dir);
    CHECK(system(cmp) == 0);
    CHECK_EQ_INT(run("train " TINY "--steps 6 --resume off5/step_3 --sample-tokens 0 --out off7"),
                 0);
    CHECK_EQ_INT(run("train " TINY "--steps 6 --resume run1/step_3 --sample-tokens 0 --offload cpu "
                     "--out off8"),
                 0);
    CHECK(cli_output_has("step 6/6"));
    /* streamed weights (--offload-params): a run resumes exactly from its checkpoint, with its
     * weights streamed from CPU memory before and from NVMe after */
    CHECK_EQ_INT(
        run("train " TINY "--steps 6 --ckpt-every 3 --sample-tokens 3 --offload cpu "
            "--offload-params cpu --prefetch 1 --bucket-size 16KiB --activation-checkpoint "
            "--offload-activations cpu --out par1"),
        0);
    CHECK(cli_output_has("weights streamed"));
    CHECK(cli_output_has("layer groups resident"));
    CHECK_EQ_INT(run("train " TINY "--steps 6 --resume par1/step_3 --sample-tokens 0 --offload cpu "
                     "--offload-params nvme --nvme-path . --bucket-size 16KiB --out par2"),
                 0);
    snprintf(cmp, sizeof cmp,
             "cmp -s '%s/par1/final/model.safetensors' '%s/par2/final/model.safetensors' && "
             "grep -q param_fetch_bytes '%s/par2/metrics.jsonl'",
             cli_dir, cli_dir, cli_dir);
    CHECK(system(cmp) == 0);
    CHECK_EQ_INT(run("train --offload-params gpu --offload cpu"), 2);
    CHECK(cli_output_has("--offload-params"));
    CHECK_EQ_INT(run("train --offload-activations cpu"), 2); /* needs checkpointing */
    CHECK(cli_output_has("--offload-activations"));
    CHECK_EQ_INT(run("train --offload none --offload-params cpu"), 2);
    CHECK(cli_output_has("--offload cpu|nvme"));
    /* offload flags checked, naming the flag */
    CHECK_EQ_INT(run("train --offload gpu"), 2);
    CHECK(cli_output_has("--offload"));
    CHECK_EQ_INT(run("train --offload nvme"), 2);
    CHECK(cli_output_has("--nvme-path"));
    CHECK_EQ_INT(run("train --offload cpu --schedule later"), 2);
    CHECK(cli_output_has("--schedule"));
    CHECK_EQ_INT(run("train --offload cpu --schedule overlap"), 2); /* clipping is on */
    CHECK(cli_output_has("--grad-clip 0"));
    CHECK_EQ_INT(run("train --offload cpu --bucket-size lots"), 2);
    CHECK(cli_output_has("--bucket-size"));
    CHECK_EQ_INT(run("train " TINY "--offload nvme --nvme-path /nonexistent/swap --steps 1"), 1);
    CHECK(cli_output_has("/nonexistent/swap"));

    /* Llama from scratch (--arch llama, GQA), offloaded, 16-bit, resumed exactly */
#define LL TINY "--arch llama --n-kv-head 1 --dtype bf16 --offload cpu --bucket-size 16KiB "
    CHECK_EQ_INT(run("train " LL "--steps 6 --ckpt-every 3 --sample-tokens 5 --out ll1"), 0);
    CHECK(cli_output_has("llama 1 layers, 2 heads (1 KV)"));
    CHECK(cli_output_has("--- sample"));
    CHECK(cli_exists("ll1/step_3/optimizer.safetensors"));
    CHECK_EQ_INT(run("train " LL "--steps 6 --resume ll1/step_3 --sample-tokens 0 --out ll2"), 0);
    snprintf(cmp, sizeof cmp,
             "cmp -s '%s/ll1/final/model.safetensors' '%s/ll2/final/model.safetensors' && "
             "grep -q LlamaForCausalLM '%s/ll1/final/config.json'",
             cli_dir, cli_dir, cli_dir);
    CHECK(system(cmp) == 0);
#undef LL
    /* a Hugging Face Qwen2 checkpoint (architecture from its config.json), with activation
     * checkpointing, on ASCII data (its vocabulary is 128) */
    char path[512];
    snprintf(path, sizeof path, "%s/ascii.txt", cli_dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 200; i++)
        fprintf(f, "the quick brown fox %d jumps over the lazy dog.\n", i);
    fclose(f);
    CHECK_EQ_INT(run("train --init-from " ZOFF_FIXTURES "/hf/qwen2_bias --data ascii.txt "
                     "--seq-len 16 --batch 2 --steps 2 --threads 1 --activation-checkpoint "
                     "--sample-tokens 5 --prompt fox --max-shard-size 64KiB --save-dtype bf16 "
                     "--out ll3"),
                 0);
    CHECK(cli_output_has("qwen2 2 layers, 4 heads (1 KV), 64 wide"));
    CHECK(cli_exists("ll3/final/model.safetensors.index.json"));
    CHECK(cli_exists("ll3/final/model-00002-of-00004.safetensors"));
    CHECK(!cli_exists("ll3/final/model.safetensors"));
    CHECK_EQ_INT(run("train --init-from ll3/final --data ascii.txt --seq-len 16 --batch 2 "
                     "--steps 1 --threads 1 --sample-tokens 0 --out ll4"),
                 0);
    CHECK_EQ_INT(run("train --save-dtype f8"), 2);
    CHECK(cli_output_has("--save-dtype"));
    CHECK_EQ_INT(run("train --arch mamba"), 2);
    CHECK(cli_output_has("--arch mamba"));

    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cli_dir);
    CHECK(system(cmd) == 0);
    return zoff_test_finish("test_model_train_cli");
}
