/* bench_tokenizer: encoding speed of the C tokenizer, single thread, one JSON line per
 * (tokenizer, text, mode) point; mode "text" encodes the whole text in one call, "lines" each
 * line in its own call. The in-run baseline is `tokenizers` itself on the same text:
 * scripts/bench_tokenizer_vs_hf.py times it and runs this program, printing both lines.
 *   bench_tokenizer TOKENIZER [TEXT_FILE] [--repeat N]
 * Without TEXT_FILE the text is /usr/share/common-licenses/GPL-3. The best of N runs counts
 * (the first run also fills the word cache, as it does for `tokenizers`); cold_mb_per_s is
 * that first run's. */
#include "text/tokenizer.h"
#include "zoff/zoff.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *tok_path = NULL, *text_path = "/usr/share/common-licenses/GPL-3";
    int repeat = 5, npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (npos == 0)
            tok_path = argv[i], npos++;
        else if (npos == 1)
            text_path = argv[i], npos++;
        else {
            fprintf(stderr, "bench_tokenizer: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!tok_path || repeat < 1) {
        fprintf(stderr, "usage: bench_tokenizer TOKENIZER [TEXT_FILE] [--repeat N]\n");
        return 2;
    }
    zoff_tok *tok = NULL;
    int rc = 0;
    FILE *f = fopen(text_path, "rb");
    if (!f) {
        perror(text_path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "%s: read error\n", text_path);
        return 1;
    }
    fclose(f);
    /* two points: the whole text in one call, and each line in a call of its own (what
     * loading a JSONL data set does: many short texts). Each loads the tokenizer afresh, so
     * that its first run ("cold") starts with an empty word cache. */
    for (int mode = 0; mode < 2; mode++) {
        zoff_tok_ids ids = {0};
        double best = 1e30, cold = 0;
        zoff_tok_free(tok);
        if ((rc = zoff_tok_load(tok_path, &tok))) {
            fprintf(stderr, "bench_tokenizer: %s: %s\n", zoff_strerror(rc),
                    zoff_last_error_detail());
            return 1;
        }
        for (int r = 0; r < repeat; r++) {
            ids.n = 0;
            double t0 = now();
            if (mode == 0) {
                rc = zoff_tok_encode(tok, text, (size_t)size, &ids);
            } else {
                for (char *p = text, *end = text + size; p < end && !rc;) {
                    char *nl = memchr(p, '\n', (size_t)(end - p));
                    char *stop = nl ? nl : end;
                    rc = zoff_tok_encode(tok, p, (size_t)(stop - p), &ids);
                    p = stop + 1;
                }
            }
            double dt = now() - t0;
            if (rc) {
                fprintf(stderr, "bench_tokenizer: %s: %s\n", zoff_strerror(rc),
                        zoff_last_error_detail());
                return 1;
            }
            if (dt < best) best = dt;
            if (r == 0) cold = dt;
        }
        printf("{\"bench\": \"tokenizer\", \"impl\": \"zoff\", \"mode\": \"%s\", \"tokenizer\": "
               "\"%s\", \"kind\": \"%s\", \"text\": \"%s\", \"bytes\": %ld, \"tokens\": %zu, "
               "\"threads\": 1, \"seconds\": %.6f, \"mb_per_s\": %.2f, \"tokens_per_s\": %.0f, "
               "\"cold_mb_per_s\": %.2f}\n",
               mode ? "lines" : "text", tok_path, zoff_tok_describe(tok), text_path, size, ids.n,
               best, (double)size / best / 1e6, (double)ids.n / best, (double)size / cold / 1e6);
        zoff_tok_ids_free(&ids);
    }
    free(text);
    zoff_tok_free(tok);
    return 0;
}
