/* Training data: llm.c token files and byte-level text, a validation split at the end of the
 * file, and seeded random batches. The whole file is loaded into host memory as int32. */
#include "model/model.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MOD              "data"
#define LLMC_TOKEN_MAGIC 20240520

int zoff_dataset_load(const char *path, float val_frac, int seq_len, zoff_dataset *out) {
    memset(out, 0, sizeof *out);
    if (!(val_frac > 0.0f && val_frac < 1.0f) || seq_len < 1)
        return zoff_fail(-EINVAL, MOD, "validation fraction %g or seq_len %d out of range",
                         val_frac, seq_len);
    FILE *f = fopen(path, "rb");
    if (!f) return zoff_fail(-errno, MOD, "%s: cannot open: %s", path, strerror(errno));
    int rc = 0;
    uint8_t *raw = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        rc = zoff_fail(-EISDIR, MOD, "%s: a directory, not a token file or text", path);
        goto out;
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        rc = zoff_fail(-errno, MOD, "%s: cannot seek: %s", path, strerror(errno));
        goto out;
    }
    long size = ftell(f);
    rewind(f);
    if (size < 0) {
        rc = zoff_fail(-EIO, MOD, "%s: cannot tell its size", path);
        goto out;
    }
    raw = malloc((size_t)size + 1);
    if (!raw) {
        rc = -ENOMEM;
        goto out;
    }
    if (fread(raw, 1, (size_t)size, f) != (size_t)size) {
        rc = zoff_fail(-EIO, MOD, "%s: read error", path);
        goto out;
    }
    int32_t magic = 0;
    if (size >= 4) memcpy(&magic, raw, 4);
    if (magic == 20240326 || magic == 20240327) { /* llm.c model or optimizer state */
        rc = zoff_fail(ZOFF_EFORMAT, MOD,
                       "%s: an llm.c model/state file, not training data (tokens or text)", path);
        goto out;
    }
    if (size >= 1024 && magic == LLMC_TOKEN_MAGIC) {
        int32_t h[256];
        memcpy(h, raw, sizeof h);
        if (h[1] != 1) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: llm.c token file version %d, expected 1", path,
                           h[1]);
            goto out;
        }
        size_t n = (size_t)(uint32_t)h[2];
        if (n == 0 || (size_t)size != 1024 + 2 * n) {
            rc = zoff_fail(ZOFF_EFORMAT, MOD,
                           "%s: header says %zu tokens (%zu bytes) but the file has %ld bytes: "
                           "truncated or corrupt",
                           path, n, 1024 + 2 * n, size);
            goto out;
        }
        out->tokens = malloc(n * sizeof(int32_t));
        if (!out->tokens) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            uint16_t t;
            memcpy(&t, raw + 1024 + 2 * i, 2);
            out->tokens[i] = t;
            if (t > out->max_token) out->max_token = t;
        }
        out->n_tokens = n;
    } else if (size >= 4 && magic == LLMC_TOKEN_MAGIC) {
        rc = zoff_fail(ZOFF_EFORMAT, MOD, "%s: llm.c token file truncated inside its header", path);
        goto out;
    } else if (strlen(path) > 4 && strcmp(path + strlen(path) - 4, ".bin") == 0) {
        /* a .bin is meant to be tokens: training on it as byte text would be silent garbage */
        rc = zoff_fail(ZOFF_EFORMAT, MOD,
                       "%s: bad magic %d: not an llm.c token file (magic %d); rename it if it "
                       "is byte text",
                       path, magic, LLMC_TOKEN_MAGIC);
        goto out;
    } else {
        size_t n = (size_t)size;
        out->tokens = malloc((n ? n : 1) * sizeof(int32_t));
        if (!out->tokens) {
            rc = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            out->tokens[i] = raw[i];
            if (raw[i] > out->max_token) out->max_token = raw[i];
        }
        out->n_tokens = n;
        out->is_text = true;
    }
    size_t need = (size_t)seq_len + 1;
    size_t n_val = (size_t)((double)out->n_tokens * val_frac);
    if (n_val < need) n_val = need;
    if (out->n_tokens < n_val + need) {
        rc = zoff_fail(ZOFF_ECONFIG, MOD,
                       "%s: %zu tokens are too few for sequences of %d: the training and the "
                       "validation split each need at least %zu (seq_len + 1); shorten seq_len "
                       "or use more data",
                       path, out->n_tokens, seq_len, need);
        goto out;
    }
    out->n_train = out->n_tokens - n_val;
out:
    free(raw);
    fclose(f);
    if (rc) zoff_dataset_free(out);
    return rc;
}

void zoff_dataset_free(zoff_dataset *ds) {
    free(ds->tokens);
    memset(ds, 0, sizeof *ds);
}

void zoff_dataset_batch(const zoff_dataset *ds, bool validation, int B, int T, uint64_t *rng,
                        int32_t *inputs, int32_t *targets) {
    size_t begin = validation ? ds->n_train : 0;
    size_t len = validation ? ds->n_tokens - ds->n_train : ds->n_train;
    size_t starts = len - (size_t)T; /* >= 1: load() guarantees len >= T + 1 */
    for (int b = 0; b < B; b++) {
        size_t s = begin + (size_t)(zoff_rng_next(rng) % starts);
        memcpy(inputs + (size_t)b * T, ds->tokens + s, (size_t)T * sizeof(int32_t));
        memcpy(targets + (size_t)b * T, ds->tokens + s + 1, (size_t)T * sizeof(int32_t));
    }
}
