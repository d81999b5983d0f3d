/* The output folder of `zoff train` (see train_support.h): a previous run's results are never
 * replaced without being asked, and what a killed save left behind is tidied first. */
#include "cli/train_support.h"
#include "model/checkpoint_dir.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What zoff train writes into OUT: metrics.jsonl, final/, step_N/. */
static bool is_run_output(const char *name) {
    int n = 0;
    return strcmp(name, "metrics.jsonl") == 0 || strcmp(name, "final") == 0 ||
           (sscanf(name, "step_%d%n", &(int){0}, &n) == 1 && name[n] == 0);
}

void zoff_train_recover_parent(const char *dir) {
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", dir);
    size_t len = strlen(parent);
    while (len > 1 && parent[len - 1] == '/')
        parent[--len] = 0;
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = 0;
    else
        *slash = 0;
    int fixed = 0;
    if (zoff_ckpt_dir_recover(parent, &fixed) == 0 && fixed)
        printf("zoff train: %s: tidied %d entr%s left by an interrupted save\n", parent, fixed,
               fixed == 1 ? "y" : "ies");
}

/* The run whose final checkpoint OUT holds ("" if none or unstamped). */
static void out_run_id(const char *out, char id[ZOFF_RUN_ID_LEN + 1]) {
    char p[PATH_MAX];
    zoff_ckpt_stamp st;
    id[0] = 0;
    if (snprintf(p, sizeof p, "%s/final/config.json", out) < (int)sizeof p &&
        access(p, F_OK) == 0 && zoff_ckpt_stamp_read(p, &st) == 0)
        snprintf(id, ZOFF_RUN_ID_LEN + 1, "%s", st.run_id);
}

int zoff_train_prepare_out(const char *out, const char *resume_run_id, bool overwrite,
                           bool remove_old) {
    int fixed = 0;
    if (zoff_ckpt_dir_recover(out, &fixed) != 0) {
        fprintf(stderr, "zoff train: --out %s: cannot read it: %s\n", out, strerror(errno));
        return 1;
    }
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s/metrics.jsonl.tmp", out) < (int)sizeof p && unlink(p) == 0)
        fixed++; /* a resumed run killed while rewriting metrics.jsonl */
    if (fixed)
        printf("zoff train: %s: tidied %d entr%s left by an interrupted save\n", out, fixed,
               fixed == 1 ? "y" : "ies");
    if (resume_run_id) {
        char id[ZOFF_RUN_ID_LEN + 1];
        out_run_id(out, id);
        if (!id[0] || strcmp(id, resume_run_id) == 0) return 0; /* its own run: continued */
        if (!overwrite) {
            fprintf(stderr,
                    "zoff train: --out %s holds the results of run %s, and the resumed "
                    "checkpoint is of run %s: choose another --out, or pass --overwrite to "
                    "replace them\n",
                    out, id, resume_run_id[0] ? resume_run_id : "(unstamped)");
            return 2;
        }
        /* the other run's metrics go; its checkpoint folders are replaced as this run saves
         * (not removed now: the checkpoint being resumed may be among them) */
        if (!remove_old) return 0;
        if (snprintf(p, sizeof p, "%s/metrics.jsonl", out) < (int)sizeof p) unlink(p);
        printf("zoff train: --overwrite: %s held run %s's results; its metrics.jsonl removed\n",
               out, id);
        return 0;
    }
    DIR *d = opendir(out);
    if (!d) return 0; /* created later */
    char first[256] = "";
    int n = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        if (!n++) snprintf(first, sizeof first, "%s", de->d_name);
    }
    closedir(d);
    if (n == 0) return 0;
    if (!overwrite && !resume_run_id) {
        fprintf(stderr,
                "zoff train: --out %s is not empty (%s%s): a fresh run does not write over a "
                "previous one; pass --overwrite to replace its results, --resume %s/final to "
                "continue it, or choose another --out\n",
                out, first, n > 1 ? ", ..." : "", out);
        return 2;
    }
    if (!remove_old) return 0;
    d = opendir(out);
    if (!d) return 1;
    int removed = 0, rc = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (!is_run_output(de->d_name)) continue;
        if (snprintf(p, sizeof p, "%s/%s", out, de->d_name) >= (int)sizeof p) continue;
        if (zoff_remove_tree(p) == 0)
            removed++;
        else
            rc = 1;
    }
    closedir(d);
    if (rc) {
        fprintf(stderr, "zoff train: --overwrite: cannot remove the previous results in %s\n", out);
        return 1;
    }
    if (removed)
        printf("zoff train: --overwrite: removed the previous run's results in %s (%d entr%s)\n",
               out, removed, removed == 1 ? "y" : "ies");
    return 0;
}

int zoff_train_check_writable(const char *path) {
    struct stat sb;
    bool existed = stat(path, &sb) == 0;
    FILE *f = fopen(path, "a");
    if (!f) {
        fprintf(stderr, "zoff train: --trace %s: cannot write it: %s\n", path, strerror(errno));
        return -1;
    }
    fclose(f);
    if (!existed) remove(path);
    return 0;
}
