/* `zoff train` under faults (argv[1] = the zoff binary), on the host backend:
 *   - kill -9 at random points of a re-save into an existing checkpoint folder, again and
 *     again: the folder is always the old or the new checkpoint, complete and consistent, and
 *     the run resumes from it;
 *   - SIGTERM mid-run saves a checkpoint and exits 143; resuming it gives the very model of
 *     the uninterrupted run (reference trainer, offload sync); a second signal exits at once;
 *     no swap file is left behind, and a kill -9'd run's are reclaimed by the next run;
 *   - DPU: 10 + 10 steps equal 20, bit for bit;
 *   - checkpoints with NaN weights or moments, or a negative second moment, are refused naming
 *     the tensor; a run whose loss stays non-finite stops with exit 1 and keeps the last good
 *     checkpoint; every metrics.jsonl line parses as JSON and belongs to its step;
 *   - the output folder: a fresh run refuses a non-empty --out; a resumed one continues it;
 *   - the smaller cases: --flag=value with '_', --config over 64 KiB, JSON syntax errors with a
 *     position, duplicate keys, --data naming a directory or a bad .bin, --seq-len longer than
 *     the data, --resume's errors, an incomplete checkpoint, the resumed step count, an
 *     unwritable --trace, flags a checkpoint overrides, no CUDA error without a GPU, the model
 *     memory with the Adam moments. */
#include "model/checkpoint_dir.h"
#include "tests/cli_test_util.h"
#include "tests/test_util.h"
#include "zoff/zoff.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TINY                                                                                       \
    "--n-layer 1 --n-head 2 --n-embd 16 --seq-len 16 --batch 2 --val-batches 1 --threads 1 "       \
    "--sample-tokens 0 "

/* zoff on the host backend; output in out.txt */
static int run(const char *args) {
    return cli_run_env("ZOFF_DEVICE=host ZOFF_LOG=warn", args);
}

/* Starts zoff in the background (its own pid: the shell execs it, so that the signals reach
 * zoff itself); output in OUTFILE. */
static pid_t spawn(const char *args, const char *outfile) {
    char cmd[sizeof cli_zoff + 4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && ZOFF_DEVICE=host ZOFF_LOG=warn exec '%s' %s > %s 2>&1",
             cli_dir, cli_zoff, args, outfile);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_status(pid_t pid, int *signaled) {
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (signaled) *signaled = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The tensor data of two safetensors files (headers aside: they hold the run id). */
static int same_tensors(const char *a, const char *b) {
    size_t na, nb;
    char *x = cli_slurp(a, &na), *y = cli_slurp(b, &nb);
    int same = 0;
    if (x && y && na >= 8 && nb >= 8) {
        uint64_t ha = 0, hb = 0;
        for (int i = 7; i >= 0; i--) {
            ha = ha << 8 | (uint8_t)x[i];
            hb = hb << 8 | (uint8_t)y[i];
        }
        same = 8 + ha <= na && 8 + hb <= nb && na - ha == nb - hb &&
               memcmp(x + 8 + ha, y + 8 + hb, na - 8 - ha) == 0;
    }
    if (!same) fprintf(stderr, "%s and %s hold different tensors\n", a, b);
    free(x);
    free(y);
    return same;
}

/* Overwrites elements [first, first + count) of a tensor in a safetensors file with value. */
static int patch_tensor(const char *rel, const char *tensor, size_t first, size_t count,
                        float value) {
    size_t n;
    char *buf = cli_slurp(rel, &n);
    if (!buf || n < 8) return -1;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | (uint8_t)buf[i];
    cJSON *h = cJSON_ParseWithLength(buf + 8, (size_t)hl);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(h, tensor);
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    int rc = -1;
    if (cJSON_IsArray(of)) {
        size_t b = (size_t)cJSON_GetArrayItem(of, 0)->valuedouble;
        size_t en = (size_t)cJSON_GetArrayItem(of, 1)->valuedouble;
        if (first + count == 0) count = (en - b) / 4 - first; /* 0, 0: the whole tensor */
        for (size_t i = first; i < first + count && b + 4 * i + 4 <= en; i++)
            memcpy(buf + 8 + hl + b + 4 * i, &value, 4);
        char path[512];
        snprintf(path, sizeof path, "%s/%s", cli_dir, rel);
        FILE *f = fopen(path, "wb");
        if (f) {
            rc = fwrite(buf, 1, n, f) == n ? 0 : -1;
            fclose(f);
        }
    }
    cJSON_Delete(h);
    free(buf);
    return rc;
}

/* Every line of a metrics file is a JSON object; step lines carry non-decreasing steps, and
 * an offloaded step's report is its own (offload.step + offset == step). Returns the number
 * of training-step lines; *nonfinite counts lines flagging non-finite values. */
static int check_metrics(const char *rel, int offload_offset, int *nonfinite) {
    char *text = cli_slurp(rel, NULL);
    if (!text) {
        CHECK(!"metrics file missing");
        return 0;
    }
    int steps = 0, last = -1;
    if (nonfinite) *nonfinite = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        if (!cJSON_IsObject(o)) {
            fprintf(stderr, "%s: not JSON: %s\n", rel, line);
            CHECK(!"a metrics line does not parse");
            cJSON_Delete(o);
            continue;
        }
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "step");
        const cJSON *loss = cJSON_GetObjectItemCaseSensitive(o, "loss");
        if (cJSON_IsNumber(st) && loss) {
            int s = (int)st->valuedouble;
            CHECK(s > last);
            last = s;
            steps++;
            const cJSON *off = cJSON_GetObjectItemCaseSensitive(o, "offload");
            if (off && offload_offset >= 0) {
                const cJSON *os = cJSON_GetObjectItemCaseSensitive(off, "step");
                CHECK(cJSON_IsNumber(os) && (int)os->valuedouble + offload_offset == s);
            }
            if (nonfinite && cJSON_GetObjectItemCaseSensitive(o, "nonfinite")) (*nonfinite)++;
        } else if (cJSON_IsNumber(st)) {
            CHECK((int)st->valuedouble <= last || last < 0);
        }
        cJSON_Delete(o);
    }
    free(text);
    return steps;
}

/* The step the checkpoint folder rel holds, after tidying its parent as a run would; -1 if
 * it is not a complete, consistent checkpoint. */
static long checkpoint_step(const char *rel, char *run_id) {
    char path[512], parent[512];
    snprintf(path, sizeof path, "%s/%s", cli_dir, rel);
    snprintf(parent, sizeof parent, "%s", path);
    *strrchr(parent, '/') = 0;
    int fixed = 0;
    if (zoff_ckpt_dir_recover(parent, &fixed)) return -1;
    zoff_ckpt_stamp st;
    if (zoff_ckpt_dir_verify(path, true, &st)) {
        fprintf(stderr, "%s: %s\n", rel, zoff_last_error_detail());
        return -1;
    }
    if (run_id) snprintf(run_id, ZOFF_RUN_ID_LEN + 1, "%s", st.run_id);
    return (long)st.step;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Waits (polling) until the run's save into k/final has begun; returns the time. */
static double wait_for_save(double timeout) {
    double t0 = now_s();
    while (!cli_exists("k/.final.tmp") && now_s() - t0 < timeout)
        sleep_s(0.0005);
    return now_s();
}

/* kill -9 at random points while a resumed run re-saves into its own OUT/final. */
static void test_kill_resave(void) {
#define KMODEL                                                                                     \
    "--n-layer 2 --n-head 4 --n-embd 128 --seq-len 16 --batch 1 --val-batches 1 --threads 1 "      \
    "--sample-tokens 0 --val-every 0 --ckpt-every 0 --out k "
    CHECK_EQ_INT(run("train " KMODEL "--steps 1"), 0);
    char id0[ZOFF_RUN_ID_LEN + 1], id[ZOFF_RUN_ID_LEN + 1];
    long step = checkpoint_step("k/final", id0);
    CHECK_EQ_INT(step, 1);
    /* how long a re-save takes: from its temporary folder's appearance to the exit */
    char args[1024];
    snprintf(args, sizeof args, "train " KMODEL "--steps 2 --resume k/final");
    pid_t pid = spawn(args, "kill.txt");
    double t_save = wait_for_save(60);
    CHECK_EQ_INT(wait_status(pid, NULL), 0);
    double span = now_s() - t_save;
    if (span < 0.002) span = 0.002;
    step = checkpoint_step("k/final", id);
    CHECK_EQ_INT(step, 2);
    unsigned long long rng = 12345;
    int interrupted = 0, mid_save = 0;
    for (int i = 0; i < 24 && step > 0; i++) {
        snprintf(args, sizeof args, "train " KMODEL "--steps %ld --resume k/final", step + 1);
        pid = spawn(args, "kill.txt");
        /* at a random point of the save: once it has begun, up to a little past its end */
        wait_for_save(60);
        sleep_s(zoff_test_randf(&rng, 0.0f, 1.2f) * span);
        kill(pid, SIGKILL);
        int sig = 0;
        wait_status(pid, &sig);
        interrupted += sig == SIGKILL;
        mid_save += cli_exists("k/.final.tmp") || cli_exists("k/.final.old");
        long now = checkpoint_step("k/final", id);
        /* always the old checkpoint or the new one, whole, of the same run */
        CHECK(now == step || now == step + 1);
        CHECK(strcmp(id, id0) == 0);
        CHECK(!cli_exists("k/.final.tmp") && !cli_exists("k/.final.old"));
        if (now < 0) break;
        step = now;
    }
    printf("kill -9 during re-saves: %d of 24 runs killed, %d with a save in progress\n",
           interrupted, mid_save);
    CHECK(interrupted >= 5); /* timing decides how many; most, on an idle machine */
    /* and the run resumes from what is there */
    snprintf(args, sizeof args, "train " KMODEL "--steps %ld --resume k/final", step + 1);
    CHECK_EQ_INT(run(args), 0);
    CHECK_EQ_INT(checkpoint_step("k/final", NULL), step + 1);
    check_metrics("k/metrics.jsonl", -1, NULL);
}

/* Waits until a metrics file shows a step line at or after `step`. */
static int wait_for_step(const char *rel, int step, double timeout) {
    double t0 = now_s();
    while (now_s() - t0 < timeout) {
        char *text = cli_slurp(rel, NULL);
        int seen = -1;
        for (char *p = text ? strstr(text, "{\"step\":") : NULL; p; p = strstr(p + 1, "{\"step\":"))
            seen = atoi(p + 8);
        free(text);
        if (seen >= step) return 1;
        sleep_s(0.01);
    }
    return 0;
}

static int swap_files_in(const char *rel) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", cli_dir, rel);
    DIR *d = opendir(path);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strncmp(e->d_name, "zoff-swap.", 10) == 0;
    if (d) closedir(d);
    return n;
}

static void test_sigterm(void) {
#define SMODEL TINY "--steps 2500 --val-every 0 --ckpt-every 0 "
    CHECK_EQ_INT(run("train " SMODEL "--out full"), 0);
    pid_t pid = spawn("train " SMODEL "--out part", "part.txt");
    CHECK(wait_for_step("part/metrics.jsonl", 20, 60));
    kill(pid, SIGTERM);
    CHECK_EQ_INT(wait_status(pid, NULL), 143);
    long at = checkpoint_step("part/final", NULL);
    CHECK(at >= 20 && at < 2500);
    printf("SIGTERM: saved after step %ld\n", at);
    CHECK_EQ_INT(run("train " SMODEL "--resume part/final --out part"), 0);
    CHECK(cli_output_has("resumed after step"));
    CHECK(same_tensors("full/final/model.safetensors", "part/final/model.safetensors"));
    CHECK(same_tensors("full/final/optimizer.safetensors", "part/final/optimizer.safetensors"));
    CHECK_EQ_INT(check_metrics("part/metrics.jsonl", -1, NULL), 2500);
    /* the same through the offload engine (sync schedule) */
#define OMODEL SMODEL "--offload cpu --bucket-size 16KiB "
    CHECK_EQ_INT(run("train " OMODEL "--out ofull"), 0);
    pid = spawn("train " OMODEL "--out opart", "opart.txt");
    CHECK(wait_for_step("opart/metrics.jsonl", 20, 60));
    kill(pid, SIGTERM);
    CHECK_EQ_INT(wait_status(pid, NULL), 143);
    at = checkpoint_step("opart/final", NULL);
    CHECK(at >= 20 && at < 2500);
    CHECK_EQ_INT(run("train " OMODEL "--resume opart/final --out opart"), 0);
    CHECK(same_tensors("ofull/final/model.safetensors", "opart/final/model.safetensors"));
    CHECK(same_tensors("ofull/final/optimizer.safetensors", "opart/final/optimizer.safetensors"));
    CHECK_EQ_INT(check_metrics("opart/metrics.jsonl", -1, NULL), 2500);

    /* NVMe offload: SIGTERM saves and releases the swap; two signals exit at once, still
     * releasing it */
    mkdir("swap", 0700);
#define NMODEL SMODEL "--offload nvme --nvme-path swap --bucket-size 16KiB "
    pid = spawn("train " NMODEL "--out nv", "nv.txt");
    CHECK(wait_for_step("nv/metrics.jsonl", 3, 60));
    CHECK(swap_files_in("swap") > 0);
    kill(pid, SIGTERM);
    CHECK_EQ_INT(wait_status(pid, NULL), 143);
    CHECK(checkpoint_step("nv/final", NULL) >= 3);
    CHECK_EQ_INT(swap_files_in("swap"), 0);
    pid = spawn("train " NMODEL "--out nv2", "nv2.txt");
    CHECK(wait_for_step("nv2/metrics.jsonl", 3, 60));
    kill(pid, SIGTERM);
    sleep_s(0.002);
    kill(pid, SIGTERM); /* may come after the orderly stop already finished: 143 either way */
    CHECK_EQ_INT(wait_status(pid, NULL), 143);
    CHECK_EQ_INT(swap_files_in("swap"), 0);
    /* kill -9 leaks the swap files; the next run reclaims them, its owner being gone */
    pid = spawn("train " NMODEL "--out nv3", "nv3.txt");
    CHECK(wait_for_step("nv3/metrics.jsonl", 3, 60));
    kill(pid, SIGKILL);
    wait_status(pid, NULL);
    CHECK(swap_files_in("swap") > 0);
    CHECK_EQ_INT(run("train " TINY "--steps 1 --offload nvme --nvme-path swap --bucket-size 16KiB "
                     "--out nv4"),
                 0);
    CHECK(cli_output_has("reclaimed stale swap file"));
    CHECK_EQ_INT(swap_files_in("swap"), 0);
}

static void test_dpu_resume(void) {
#define DMODEL TINY "--offload cpu --schedule dpu --bucket-size 16KiB --val-every 5 "
    CHECK_EQ_INT(run("train " DMODEL "--steps 20 --ckpt-every 10 --out p20"), 0);
    CHECK_EQ_INT(run("train " DMODEL "--steps 20 --resume p20/step_10 --out p10"), 0);
    char cmp[1024];
    snprintf(cmp, sizeof cmp,
             "cmp -s '%s/p20/final/model.safetensors' '%s/p10/final/model.safetensors'", cli_dir,
             cli_dir);
    CHECK(system(cmp) == 0); /* the same run id and step too: byte for byte */
    snprintf(cmp, sizeof cmp,
             "cmp -s '%s/p20/final/optimizer.safetensors' '%s/p10/final/optimizer.safetensors'",
             cli_dir, cli_dir);
    CHECK(system(cmp) == 0);
    /* each line's report is its own step's: engine step s is training step s + 1 */
    CHECK_EQ_INT(check_metrics("p20/metrics.jsonl", 1, NULL), 20);
    CHECK_EQ_INT(check_metrics("p10/metrics.jsonl", 11, NULL), 10);
    CHECK_EQ_INT(run("train " TINY "--offload cpu --steps 4 --out s4"), 0);
    CHECK_EQ_INT(check_metrics("s4/metrics.jsonl", 1, NULL), 4);
}

static void test_nonfinite(void) {
    CHECK_EQ_INT(run("train " TINY "--steps 3 --out g"), 0);
    /* NaN weights, NaN first moments, negative second moments: refused, naming the tensor */
    CHECK(cli_sh("cp -r g/final n1 && cp -r g/final n2 && cp -r g/final n3") == 0);
    CHECK(patch_tensor("n1/model.safetensors", "ln_f.weight", 3, 1, NAN) == 0);
    CHECK_EQ_INT(run("train " TINY "--steps 5 --resume n1 --out r1"), 1);
    CHECK(cli_output_has("ln_f.weight") && cli_output_has("NaN") && cli_output_has("--resume"));
    CHECK_EQ_INT(run("train " TINY "--steps 5 --init-from n1 --out r1b"), 1);
    CHECK(cli_output_has("ln_f.weight"));
    CHECK(patch_tensor("n2/optimizer.safetensors", "adamw.m", 10, 1, INFINITY) == 0);
    CHECK_EQ_INT(run("train " TINY "--steps 5 --resume n2 --out r2"), 1);
    CHECK(cli_output_has("adamw.m") && cli_output_has("infinite"));
    CHECK(patch_tensor("n3/optimizer.safetensors", "adamw.v", 20, 1, -0.5f) == 0);
    CHECK_EQ_INT(run("train " TINY "--steps 5 --resume n3 --out r3"), 1);
    CHECK(cli_output_has("adamw.v") && cli_output_has("negative"));

    /* finite but absurd weights: every loss is non-finite; the run stops with exit 1, writes
     * no checkpoint, and its metrics still parse (null values, flagged) */
    CHECK(cli_sh("cp -r g n4") == 0);
    CHECK(patch_tensor("n4/final/model.safetensors", "ln_f.weight", 0, 0, 3e38f) == 0);
    CHECK(patch_tensor("n4/final/model.safetensors", "ln_f.bias", 0, 0, 3e38f) == 0);
    CHECK_EQ_INT(run("train " TINY "--steps 12 --ckpt-every 1 --resume n4/final --out n4 "
                     "--max-nonfinite-steps 2"),
                 1);
    CHECK(cli_output_has("non-finite"));
    CHECK(!cli_exists("n4/step_4") && !cli_exists("n4/step_5"));
    CHECK_EQ_INT(checkpoint_step("n4/final", NULL), 3); /* the last good one, untouched */
    int flagged = 0;
    check_metrics("n4/metrics.jsonl", -1, &flagged);
    CHECK(flagged >= 2);
    /* the same with the offload engine */
    CHECK_EQ_INT(run("train " TINY "--steps 12 --resume n4/final --out n5 --offload cpu "
                     "--max-nonfinite-steps 2"),
                 1);
    CHECK(cli_output_has("non-finite"));
    CHECK(!cli_exists("n5/final"));
    check_metrics("n5/metrics.jsonl", 4, &flagged);
    CHECK(flagged >= 2);
}

static void test_out_folder(void) {
    CHECK_EQ_INT(run("train " TINY "--steps 4 --ckpt-every 2 --out o"), 0);
    /* a fresh run does not write over it */
    CHECK_EQ_INT(run("train " TINY "--steps 4 --out o"), 2);
    CHECK(cli_output_has("--overwrite"));
    CHECK(cli_exists("o/final/model.safetensors"));
    /* resuming into the same folder: metrics continue after the resumed step */
    CHECK_EQ_INT(run("train " TINY "--steps 6 --resume o/step_2 --out o"), 0);
    CHECK(cli_output_has("trained steps 3..6 (4 this run, resumed after step 2)"));
    CHECK_EQ_INT(check_metrics("o/metrics.jsonl", -1, NULL), 6);
    CHECK_EQ_INT(checkpoint_step("o/final", NULL), 6);
    /* stray temporaries of a killed save are tidied at the next start */
    CHECK(
        cli_sh(
            "mkdir -p o/.final.tmp && touch o/.final.tmp/model.safetensors o/metrics.jsonl.tmp") ==
        0);
    CHECK_EQ_INT(run("train " TINY "--steps 7 --resume o/final --out o"), 0);
    CHECK(cli_output_has("tidied"));
    CHECK(!cli_exists("o/.final.tmp") && !cli_exists("o/metrics.jsonl.tmp"));
    /* --overwrite with a run that fails to start (its data missing) keeps them */
    CHECK_EQ_INT(run("train " TINY "--steps 2 --out o --overwrite --data no-such-tokens.bin"), 1);
    CHECK(cli_output_has("no-such-tokens.bin"));
    CHECK(cli_exists("o/step_2") && cli_exists("o/final/model.safetensors"));
    CHECK_EQ_INT(check_metrics("o/metrics.jsonl", -1, NULL), 7);
    /* --overwrite replaces the previous results */
    CHECK_EQ_INT(run("train " TINY "--steps 2 --out o --overwrite"), 0);
    CHECK(!cli_exists("o/step_2") && cli_exists("o/final"));
    CHECK_EQ_INT(check_metrics("o/metrics.jsonl", -1, NULL), 2);
    /* resuming another run's checkpoint into this run's folder: refused unless asked */
    CHECK_EQ_INT(run("train " TINY "--steps 5 --resume g/final --out o"), 2);
    CHECK(cli_output_has("holds the results of run"));
    CHECK_EQ_INT(run("train " TINY "--steps 5 --resume g/final --out o --overwrite"), 0);
    CHECK_EQ_INT(check_metrics("o/metrics.jsonl", -1, NULL), 2); /* steps 4 and 5 */
    /* files of two checkpoints mixed in one folder: refused, naming them */
    CHECK(cli_sh("cp -r o/final mix && cp g/final/optimizer.safetensors mix/") == 0);
    CHECK_EQ_INT(run("train " TINY "--steps 5 --resume mix --out mixo"), 1);
    CHECK(cli_output_has("disagree") && cli_output_has("optimizer.safetensors is step 3"));
}

static void test_small_fixes(void) {
    /* --flag=value where the value holds '_' */
    CHECK_EQ_INT(run("train " TINY "--steps 1 --out=run_under_score"), 0);
    CHECK(cli_exists("run_under_score/final"));
    /* a --config file over 64 KiB is read whole */
    size_t big = 70000;
    char *cfg = malloc(big + 64);
    strcpy(cfg, "{");
    memset(cfg + 1, ' ', big);
    strcpy(cfg + 1 + big, "\"steps\": 2}");
    cli_write_file("big.json", cfg);
    free(cfg);
    CHECK_EQ_INT(run("train " TINY "--config big.json --out big"), 0);
    CHECK(cli_output_has("step 2/2"));
    /* a syntax error says where */
    cli_write_file("bad.json", "{\n  \"steps\": 2,\n  \"batch\" 4\n}\n");
    CHECK_EQ_INT(run("train --config bad.json"), 2);
    CHECK(cli_output_has("bad.json:3:"));
    /* duplicate keys, also under two names */
    cli_write_file("dup.json", "{\"steps\": 2, \"steps\": 3}");
    CHECK_EQ_INT(run("train --config dup.json"), 2);
    CHECK(cli_output_has("given twice"));
    cli_write_file("dup2.json", "{\"seq_len\": 8, \"n_positions\": 16}");
    CHECK_EQ_INT(run("train --config dup2.json"), 2);
    CHECK(cli_output_has("given twice"));
    /* --data naming a directory */
    CHECK_EQ_INT(run("train " TINY "--steps 1 --data swap --out d1"), 1);
    CHECK(cli_output_has("swap: a directory") && cli_output_lacks("Cannot allocate memory"));
    /* a .bin that is not a token file */
    cli_write_file("junk.bin",
                   "this is not an llm.c token file, just some text that goes on and on "
                   "long enough to hold a few windows of sixteen tokens each, twice.");
    CHECK_EQ_INT(run("train " TINY "--steps 1 --data junk.bin --out d2"), 1);
    CHECK(cli_output_has("junk.bin") && cli_output_has("bad magic"));
    /* --seq-len longer than the data */
    cli_write_file("short.txt", "a short text of sixty-odd bytes, too short for long windows.");
    CHECK_EQ_INT(run("train " TINY "--steps 1 --data short.txt --seq-len 40 --out d3"), 1);
    CHECK(cli_output_has("too few") && cli_output_lacks("malformed"));
    /* --resume's errors say --resume */
    CHECK_EQ_INT(run("train " TINY "--steps 1 --resume /nonexistent/ckpt --out d4"), 1);
    CHECK(cli_output_has("--resume") && cli_output_lacks("--init-from"));
    /* an incomplete checkpoint says so */
    CHECK(
        cli_sh("mkdir -p inc && cp g/final/model.safetensors g/final/optimizer.safetensors inc/") ==
        0);
    CHECK_EQ_INT(run("train " TINY "--steps 5 --resume inc --out d5"), 1);
    CHECK(cli_output_has("incomplete checkpoint") && cli_output_has("config.json missing"));
    CHECK_EQ_INT(run("train " TINY "--steps 5 --init-from inc --out d6"), 1);
    CHECK(cli_output_has("incomplete checkpoint"));
    /* an unwritable --trace is found before training */
    CHECK_EQ_INT(run("train " TINY "--steps 1 --offload cpu --trace /nonexistent/t.json --out d7"),
                 2);
    CHECK(cli_output_has("--trace /nonexistent/t.json") && cli_output_lacks("step 1/1"));
    /* flags the checkpoint overrides are reported */
    CHECK_EQ_INT(run("train --init-from g/final --vocab-size 300 --seq-len 64 --batch 2 --steps 1 "
                     "--threads 1 --sample-tokens 0 --out d8"),
                 0);
    CHECK(cli_output_has("--vocab-size 300 ignored") &&
          cli_output_has("--seq-len 64 shortened to 16"));
    /* the device plan counts the Adam moments (allocated at the first step) */
    CHECK(cli_output_has("without offload the same run needs") &&
          cli_output_has("gradients and Adam moments on the device"));
    /* no CUDA error line on a machine without one (auto device) */
    CHECK_EQ_INT(cli_run_env("ZOFF_DEVICE=auto ZOFF_LOG=warn", "train " TINY "--steps 1 --out d9"),
                 0);
    CHECK(cli_output_lacks("[cuda] error"));
}

int main(int argc, char **argv) {
    zoff_test_init();
    /* (checked first: a skipped test leaves no scratch folder behind) */
    if (!cli_have_train_data()) return ZOFF_TEST_SKIP;
    int rc = cli_setup(argc, argv, "/tmp/zoff_faults_XXXXXX");
    if (rc) return rc;
    if (chdir(cli_dir) != 0) return 1;
    test_kill_resave();
    test_sigterm();
    test_dpu_resume();
    test_nonfinite();
    test_out_folder();
    test_small_fixes();
    rc = zoff_test_finish("test_model_train_faults");
    if (rc == 0) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", cli_dir);
        CHECK(system(cmd) == 0);
    }
    return rc;
}
