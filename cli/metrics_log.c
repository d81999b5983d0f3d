/* metrics.jsonl for `zoff train` (see train_support.h): one JSON object per line that any JSON
 * parser accepts (NaN and infinities become null, named in "nonfinite"), and a resumed run
 * that continues the file after its resumed step instead of truncating or duplicating it. */
#include "cli/train_support.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The step a line belongs to, or -1 for lines without one (the config line). */
static long line_step(const char *line) {
    long step;
    if (sscanf(line, "{\"step\":%ld", &step) == 1) return step;
    return -1;
}

int zoff_metrics_open(const char *path, bool resume, int resume_step, FILE **out) {
    *out = NULL;
    if (!resume) {
        *out = fopen(path, "w");
        if (!*out) fprintf(stderr, "zoff train: %s: %s\n", path, strerror(errno));
        return *out ? 0 : -1;
    }
    /* keep the lines of the steps the resumed checkpoint holds; later ones (a run that went
     * on past that checkpoint) are replaced by this run's */
    FILE *in = fopen(path, "r");
    if (!in && errno != ENOENT) {
        fprintf(stderr, "zoff train: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "zoff train: %s: %s\n", tmp, strerror(errno));
        if (in) fclose(in);
        return -1;
    }
    size_t dropped = 0;
    if (in) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, in)) > 0) {
            if (line_step(line) > resume_step) {
                dropped++;
                continue;
            }
            fwrite(line, 1, (size_t)n, f);
            if (line[n - 1] != '\n') fputc('\n', f);
        }
        free(line);
        fclose(in);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        fprintf(stderr, "zoff train: %s: cannot rewrite: %s\n", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    if (dropped)
        printf("zoff train: %s: %zu lines after step %d (of a run that went past the resumed "
               "checkpoint) replaced by this run's\n",
               path, dropped, resume_step);
    *out = fopen(path, "a");
    if (!*out) fprintf(stderr, "zoff train: %s: %s\n", path, strerror(errno));
    return *out ? 0 : -1;
}

static void put(zoff_metrics_line *l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = sizeof l->buf - l->len;
    int n = vsnprintf(l->buf + l->len, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room)
        l->overflow = true;
    else
        l->len += (size_t)n;
}

static void key(zoff_metrics_line *l, const char *k) {
    put(l, "%s\"%s\":", l->len > 1 ? "," : "", k);
}

void zoff_metrics_begin(zoff_metrics_line *l) {
    l->len = 0;
    l->overflow = false;
    l->nonfinite[0] = 0;
    put(l, "{");
}

void zoff_metrics_int(zoff_metrics_line *l, const char *k, long long v) {
    key(l, k);
    put(l, "%lld", v);
}

void zoff_metrics_num(zoff_metrics_line *l, const char *k, double v, const char *fmt) {
    key(l, k);
    if (isfinite(v)) {
        put(l, fmt, v);
        return;
    }
    put(l, "null");
    size_t n = strlen(l->nonfinite);
    snprintf(l->nonfinite + n, sizeof l->nonfinite - n, "%s\"%s\"", n ? "," : "", k);
}

void zoff_metrics_bool(zoff_metrics_line *l, const char *k, bool v) {
    key(l, k);
    put(l, v ? "true" : "false");
}

void zoff_metrics_str(zoff_metrics_line *l, const char *k, const char *v) {
    key(l, k);
    put(l, "\"");
    for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
        if (*c == '"' || *c == '\\')
            put(l, "\\%c", *c);
        else if (*c < 0x20)
            put(l, "\\u%04x", *c);
        else
            put(l, "%c", *c);
    }
    put(l, "\"");
}

void zoff_metrics_raw(zoff_metrics_line *l, const char *json) {
    put(l, "%s", json);
}

int zoff_metrics_write(zoff_metrics_line *l, FILE *f) {
    if (l->nonfinite[0]) put(l, ",\"nonfinite\":[%s]", l->nonfinite);
    put(l, "}\n");
    if (l->overflow) return -1; /* never a cut line: it would not parse */
    return fwrite(l->buf, 1, l->len, f) == l->len ? 0 : -1;
}
