/* `zoff train`'s bookkeeping around the training loop: the output folder (what a fresh or a
 * resumed run may write into), metrics.jsonl lines that are always valid JSON, and the
 * SIGINT/SIGTERM handling. Each lives in its own file (train_out.c, metrics_log.c,
 * train_signals.c); cmd_train.c calls them. Everything here runs on the main thread except
 * the signal handler, which only sets a flag (first signal) or releases the swap files and
 * exits (second signal). */
#ifndef ZOFF_CLI_TRAIN_SUPPORT_H
#define ZOFF_CLI_TRAIN_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* --- the output folder (train_out.c) ---------------------------------------------------- */

/* Readies OUT before a run writes into it: tidies what a killed save left (stray temporary
 * folders and files; a checkpoint caught between two renames is put back). A fresh run
 * (resume_run_id NULL) refuses an OUT that already holds files, and a resumed one an OUT whose
 * final checkpoint is another run's, unless overwrite, which removes the previous run's
 * metrics.jsonl and checkpoint folders (and nothing else) - but only when remove_old is true:
 * a run checks up front (remove_old false) and removes once it has started (its data, device, model
 * and checkpoint loaded), so that a run that fails to start leaves the previous results be.
 * Prints what is wrong; returns 0, 2 (refused: bad usage) or 1 (could not). */
int zoff_train_prepare_out(const char *out, const char *resume_run_id, bool overwrite,
                           bool remove_old);

/* Whether FILE (--trace, written only after training) can be written: checked up front.
 * Prints what is wrong and returns -1. */
int zoff_train_check_writable(const char *path);

/* Tidies the folder holding a checkpoint DIR before it is read (see above). */
void zoff_train_recover_parent(const char *dir);

/* --- metrics.jsonl (metrics_log.c) ------------------------------------------------------- */

/* Opens PATH for the run's lines: a fresh run starts it empty; a resumed one keeps the
 * previous lines up to and including resume_step (config lines too) and appends after them,
 * so the file reads as one run. Prints what is wrong and returns -1. */
int zoff_metrics_open(const char *path, bool resume, int resume_step, FILE **out);

/* One JSON object being built: numbers that are NaN or infinite are written as null and
 * named in a "nonfinite" array at the end, so that every line parses. */
typedef struct zoff_metrics_line {
    char buf[4096];
    size_t len;
    char nonfinite[256]; /* "\"loss\",\"grad_norm\"" */
    bool overflow;
} zoff_metrics_line;

void zoff_metrics_begin(zoff_metrics_line *l);
void zoff_metrics_int(zoff_metrics_line *l, const char *key, long long v);
/* fmt: a printf conversion for a double, like "%.6f" or "%.6g" */
void zoff_metrics_num(zoff_metrics_line *l, const char *key, double v, const char *fmt);
void zoff_metrics_bool(zoff_metrics_line *l, const char *key, bool v);
/* A JSON string value, escaped. */
void zoff_metrics_str(zoff_metrics_line *l, const char *key, const char *v);
/* Appends ready JSON text (",\"key\":{...}") as is. */
void zoff_metrics_raw(zoff_metrics_line *l, const char *json);
/* Closes the object (adding "nonfinite" when needed), writes it with a newline. */
int zoff_metrics_write(zoff_metrics_line *l, FILE *f);

/* --- signals (train_signals.c) ----------------------------------------------------------- */

/* SIGINT and SIGTERM: the first asks the run to stop after the current step (it then saves a
 * checkpoint, releases the swap files and exits 128 + signal); a second exits at once,
 * unlinking the swap files first. */
void zoff_train_signals_install(void);
/* 0, or the first stop signal received. */
int zoff_train_stop_signal(void);

#endif
