/* `mpirun -np 2 zoff train` (argv[1] = the zoff binary, argv[2] = mpiexec, argv[3] = the
 * tokenizer fixtures), host backend, f32:
 *   - two ranks with --batch b train as one process with --batch 2b, step for step (losses,
 *     gradient norms, validation) and to the same final weights within rounding (the sum of
 *     the two half-batch gradients is not bit-equal to the whole batch's), for --offload cpu
 *     and nvme and each schedule (sync, overlap, dpu);
 *   - fp16 (loss scaling, gradient accumulation) on two ranks as in one process, no step
 *     skipped for an overflow one process would not have;
 *   - zoff sft too: two ranks with --batch b fine-tune as one process with 2b;
 *   - each rank owns and keeps half of the optimizer state;
 *   - a checkpoint does not depend on the ranks: a 2-rank one resumes on 1 rank and a 1-rank
 *     one on 2, each ending where the uninterrupted run ends;
 *   - a rank killed mid-run ends the job with an error naming it; a rank that stops
 *     responding makes the others end at --collective-timeout, saying so;
 *   - without an offloaded optimizer, several ranks are refused, naming the flag. */
#include "tests/cli_test_util.h"
#include "tests/test_util.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_STEPS 16
#define TINY                                                                                       \
    "train --n-layer 2 --n-head 2 --n-embd 32 --seq-len 16 --val-batches 2 --val-every 2 "       \
    "--sample-tokens 0 --dtype f32 --bucket-size 4KiB --threads 1 --steps 4 "
#define ENV "ZOFF_DEVICE=host ZOFF_LOG=warn"

static const char *mpiexec;

/* zoff under mpirun with n ranks */
static int run_ranks(int n, const char *env, const char *args) {
    return cli_sh("%s %s '%s' --allow-run-as-root --oversubscribe --bind-to none -np %d '%s' %s",
                  ENV, env, mpiexec, n, cli_zoff, args);
}

static int run_one(const char *args) {
    return cli_run_env(ENV, args);
}

typedef struct metrics {
    double loss[MAX_STEPS + 1], norm[MAX_STEPS + 1], val[MAX_STEPS + 1];
    int n; /* the last step seen */
} metrics;

static int read_metrics(const char *out, metrics *m) {
    char rel[256];
    snprintf(rel, sizeof rel, "%s/metrics.jsonl", out);
    char *text = cli_slurp(rel, NULL);
    memset(m, 0, sizeof *m);
    if (!text) {
        fprintf(stderr, "%s: missing\n", rel);
        return -1;
    }
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        cJSON *step = cJSON_GetObjectItem(j, "step");
        if (cJSON_IsNumber(step) && step->valueint >= 0 && step->valueint <= MAX_STEPS) {
            int s = step->valueint;
            cJSON *l = cJSON_GetObjectItem(j, "loss"), *g = cJSON_GetObjectItem(j, "grad_norm"),
                  *v = cJSON_GetObjectItem(j, "val_loss");
            if (cJSON_IsNumber(l)) m->loss[s] = l->valuedouble;
            if (cJSON_IsNumber(g)) m->norm[s] = g->valuedouble;
            if (cJSON_IsNumber(v)) m->val[s] = v->valuedouble;
            if (s > m->n) m->n = s;
        }
        cJSON_Delete(j);
    }
    free(text);
    return 0;
}

static double rel_diff(double a, double b) {
    return fabs(a - b) / (fabs(b) > 1e-30 ? fabs(b) : 1e-30);
}

/* Step for step: the same losses, norms and validation losses (relative tol). */
static void check_same_run(const char *a, const char *b, double tol) {
    metrics ma, mb;
    if (read_metrics(a, &ma) || read_metrics(b, &mb)) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(ma.n, mb.n);
    double worst = 0;
    for (int s = 1; s <= ma.n && s <= mb.n; s++) {
        double d[3] = {rel_diff(ma.loss[s], mb.loss[s]), rel_diff(ma.norm[s], mb.norm[s]),
                       rel_diff(ma.val[s], mb.val[s])};
        for (int i = 0; i < 3; i++)
            if (d[i] > worst) worst = d[i];
        CHECK(ma.loss[s] > 0 && mb.loss[s] > 0);
    }
    printf("  %s vs %s: %d steps, largest relative difference %.3g\n", a, b, ma.n, worst);
    CHECK(worst < tol);
}

/* The f32 tensors of two model.safetensors with the same layout: largest absolute
 * difference. */
static double weights_diff(const char *a, const char *b) {
    char ra[256], rb[256];
    snprintf(ra, sizeof ra, "%s/model.safetensors", a);
    snprintf(rb, sizeof rb, "%s/model.safetensors", b);
    size_t na = 0, nb = 0;
    char *fa = cli_slurp(ra, &na), *fb = cli_slurp(rb, &nb);
    double worst = INFINITY;
    if (fa && fb && na > 8 && nb > 8) {
        uint64_t ha, hb;
        memcpy(&ha, fa, 8);
        memcpy(&hb, fb, 8);
        size_t da = na - 8 - ha, db = nb - 8 - hb;
        if (ha < na && hb < nb && da == db && da % 4 == 0) {
            const float *x = (const float *)(fa + 8 + ha), *y = (const float *)(fb + 8 + hb);
            worst = 0;
            for (size_t i = 0; i < da / 4; i++) {
                double d = fabs((double)x[i] - (double)y[i]);
                if (!(d <= worst)) worst = d; /* NaN counts */
            }
        }
    }
    free(fa);
    free(fb);
    return worst;
}

static void check_same_weights(const char *a, const char *b, double tol) {
    double d = weights_diff(a, b);
    printf("  weights %s vs %s: largest difference %.3g\n", a, b, d);
    CHECK(d < tol);
}

/* The number after `key` in out.txt's line that also holds `tag` (0 when absent). */
static double logged(const char *tag, const char *key) {
    char *out = cli_slurp("out.txt", NULL);
    double v = 0;
    for (char *line = out ? strtok(out, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        char *k = strstr(line, key);
        if (strstr(line, tag) && k) {
            v = atof(k + strlen(key));
            break;
        }
    }
    free(out);
    return v;
}

int main(int argc, char **argv) {
    zoff_test_init();
    int rc = cli_setup(argc, argv, "/tmp/zoff_dist_XXXXXX");
    if (rc) return rc;
    if (argc < 3 || access(argv[2], X_OK) != 0) {
        printf("skip: no mpiexec\n");
        return ZOFF_TEST_SKIP;
    }
    mpiexec = argv[2];
    if (access("/usr/share/common-licenses/GPL-3", R_OK) != 0) {
        printf("skip: /usr/share/common-licenses/GPL-3 is missing\n");
        return ZOFF_TEST_SKIP;
    }
    /* f32: the two half-batch gradients summed differ from the whole batch's by rounding */
    const double loss_tol = 1e-4, weight_tol = 1e-4;
    static const char *targets[] = {"cpu", "nvme"};
    static const char *schedules[] = {"sync", "overlap", "dpu"};
    char args[2048], a[64], b[64];
    cli_sh("mkdir -p swap");
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < 3; s++) {
            char extra[128];
            snprintf(extra, sizeof extra, "--offload %s --schedule %s %s %s --ckpt-every 2",
                     targets[t], schedules[s], s == 1 ? "--grad-clip 0" : "",
                     t == 1 ? "--nvme-path swap" : "");
            snprintf(a, sizeof a, "one_%s_%s", targets[t], schedules[s]);
            snprintf(b, sizeof b, "two_%s_%s", targets[t], schedules[s]);
            snprintf(args, sizeof args, TINY "--batch 4 %s --out %s", extra, a);
            CHECK_EQ_INT(run_one(args), 0);
            snprintf(args, sizeof args, TINY "--batch 2 %s --out %s", extra, b);
            int r2 = run_ranks(2, "", args);
            CHECK_EQ_INT(r2, 0);
            if (r2 != 0) cli_output_has("(the 2-rank run's output)");
            check_same_run(b, a, loss_tol);
            char fa[96], fb[96];
            snprintf(fa, sizeof fa, "%s/final", a);
            snprintf(fb, sizeof fb, "%s/final", b);
            check_same_weights(fb, fa, weight_tol);
        }

    /* fp16 with loss scaling: each rank's gradient is divided by the ranks before the 16-bit
     * sum, so two ranks overflow (and skip a step) only where one process does */
    CHECK_EQ_INT(run_one(TINY "--batch 4 --offload cpu --dtype f16 --grad-accum 2 --out f16one"), 0);
    CHECK_EQ_INT(
        run_ranks(2, "", TINY "--batch 2 --offload cpu --dtype f16 --grad-accum 2 --out f16two"),
        0);
    check_same_run("f16two", "f16one", 2e-3);
    char *f16 = cli_slurp("f16two/metrics.jsonl", NULL);
    CHECK(f16 && !strstr(f16, "\"skipped\""));
    free(f16);

    /* zoff sft: prompt/response data, the loss on the responses only */
    if (argc > 3) {
        char path[512];
        snprintf(path, sizeof path, "%s/data.jsonl", cli_dir);
        FILE *f = fopen(path, "w");
        for (int i = 0; f && i < 40; i++)
            fprintf(f, "{\"prompt\": \"is %d odd or even?\", \"response\": \"yes\"}\n", i);
        if (f) fclose(f);
        char sft[1024];
        snprintf(sft, sizeof sft,
                 "sft --tokenizer %s/qwen2 --data data.jsonl --arch llama --n-layer 1 --n-head 2 "
                 "--n-embd 32 --seq-len 32 --threads 1 --lr 1e-2 --warmup 0 --val-frac 0.1 "
                 "--template chatml --steps 8 --val-every 4 --show 0 --dtype f32 --offload cpu",
                 argv[3]);
        snprintf(args, sizeof args, "%s --batch 4 --out sft1", sft);
        CHECK_EQ_INT(run_one(args), 0);
        snprintf(args, sizeof args, "%s --batch 2 --out sft2", sft);
        CHECK_EQ_INT(run_ranks(2, "", args), 0);
        check_same_run("sft2", "sft1", loss_tol);
    }

    /* each rank owns half of every bucket's optimizer state, and keeps only that */
#define WIDE TINY "--n-embd 128 --steps 1 --offload cpu "
    CHECK_EQ_INT(cli_run_env("ZOFF_DEVICE=host ZOFF_LOG=info", WIDE "--batch 4 --out mem1"), 0);
    double host1 = logged("offload to cpu", "host ");
    CHECK_EQ_INT(run_ranks(2, "ZOFF_LOG=info", WIDE "--batch 2 --out mem2"), 0);
    double own0 = logged("[rank 0]", "owns "), own1 = logged("[rank 1]", "owns ");
    double host0 = logged("[rank 0] offload", "host "), hostr1 = logged("[rank 1] offload", "host ");
    printf("  optimizer state: one process %.2f MiB; rank 0 owns %.0f params (%.2f MiB), rank 1 "
           "%.0f (%.2f MiB)\n",
           host1, own0, host0, own1, hostr1);
    CHECK(own0 > 0 && own1 > 0 && fabs(own0 - own1) <= 0.02 * (own0 + own1));
    CHECK(host0 > 0 && fabs(host0 - host1 / 2) <= 0.05 * host1);
    CHECK(hostr1 > 0 && fabs(hostr1 - host1 / 2) <= 0.05 * host1);

    /* checkpoints do not depend on the ranks: 2 -> 1 and 1 -> 2 */
    CHECK_EQ_INT(run_one(TINY "--batch 4 --offload cpu --resume two_cpu_sync/step_2 --out r21"), 0);
    check_same_weights("r21/final", "two_cpu_sync/final", weight_tol);
    check_same_weights("r21/final", "one_cpu_sync/final", weight_tol);
    CHECK_EQ_INT(
        run_ranks(2, "", TINY "--batch 2 --offload cpu --resume one_cpu_sync/step_2 --out r12"), 0);
    check_same_weights("r12/final", "one_cpu_sync/final", weight_tol);
    metrics m;
    CHECK(read_metrics("r12", &m) == 0 && m.n == 4 && m.loss[3] > 0);

    /* a killed rank ends the job, named */
    time_t t0 = time(NULL);
    int st = run_ranks(2, "ZOFF_DEBUG_RANK_FAULT=1:3:kill",
                       TINY "--batch 2 --offload cpu --steps 50 --out killed");
    printf("  rank 1 killed at step 3: exit %d after %ld s\n", st, (long)(time(NULL) - t0));
    CHECK(st != 0);
    CHECK(time(NULL) - t0 < 120);
    CHECK(cli_output_has("rank 1"));
    /* a rank that stops responding: the others give up after --collective-timeout */
    t0 = time(NULL);
    st = run_ranks(2, "ZOFF_DEBUG_RANK_FAULT=1:3:stall",
                   TINY "--batch 2 --offload cpu --steps 50 --collective-timeout 3 --out stalled");
    printf("  rank 1 stalled at step 3: exit %d after %ld s\n", st, (long)(time(NULL) - t0));
    CHECK(st != 0);
    CHECK(time(NULL) - t0 < 120);
    CHECK(cli_output_has("did not complete"));

    /* several ranks need the optimizer offloaded */
    CHECK_EQ_INT(run_ranks(2, "", TINY "--batch 2 --offload none --out refused"), 2);
    CHECK(cli_output_has("--offload cpu or nvme"));

    if (zoff_test_failures == 0) cli_sh("rm -rf '%s'", cli_dir);
    return zoff_test_finish("test_dist_train_cli");
}
