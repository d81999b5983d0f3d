/* See cli_test_util.h. */
#include "tests/cli_test_util.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char cli_zoff[4096];
char cli_dir[256];

/* The absolute path of arg (a test's argument, an existing path) into out, PATH_MAX bytes. 0, or
 * prints why and returns 1. */
static int resolve(const char *arg, char *out) {
    if (realpath(arg, out)) return 0;
    fprintf(stderr, "%s: not found\n", arg);
    return 1;
}

int cli_setup(int argc, char **argv, const char *pattern) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s ZOFF_BINARY ...\n", argv[0]);
        return 2;
    }
    if (resolve(argv[1], cli_zoff)) return 1;
    snprintf(cli_dir, sizeof cli_dir, "%s", pattern);
    if (!mkdtemp(cli_dir)) {
        perror(pattern);
        return 1;
    }
    return 0;
}

int cli_setup_fixtures(int argc, char **argv, const char *pattern, char *fixtures) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ZOFF_BINARY FIXTURES_DIR ...\n", argv[0]);
        return 2;
    }
    /* (before cli_setup: a bad argument leaves no scratch folder behind) */
    if (resolve(argv[2], fixtures)) return 1;
    return cli_setup(argc, argv, pattern);
}

int cli_have_train_data(void) {
    const char *data = "/usr/share/common-licenses/GPL-3";
    if (access(data, R_OK) == 0) return 1;
    printf("skip: %s is missing\n", data);
    return 0;
}

/* The command of fmt/ap run in cli_dir with its output sent by redirect. */
static int run_sh(const char *redirect, const char *fmt, va_list ap) {
    char body[6144], cmd[6144 + 512];
    vsnprintf(body, sizeof body, fmt, ap);
    snprintf(cmd, sizeof cmd, "cd '%s' && %s %s", cli_dir, body, redirect);
    /* what the test printed so far comes before the child's output */
    fflush(stdout);
    fflush(stderr);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int cli_sh(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = run_sh("> out.txt 2>&1", fmt, ap);
    va_end(ap);
    return rc;
}

int cli_sh_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = run_sh("> out.txt 2> err.txt", fmt, ap);
    va_end(ap);
    return rc;
}

int cli_run_env(const char *env, const char *args) {
    return cli_sh("%s '%s' %s", env, cli_zoff, args);
}

char *cli_slurp(const char *rel, size_t *n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", cli_dir, rel);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (!buf) return NULL;
    buf[len] = 0;
    if (n) *n = (size_t)len;
    return buf;
}

/* Whether rel exists and holds text (want 1) or not (want 0); what: its name in the message. */
static int file_check(const char *rel, const char *what, const char *text, int want) {
    char *s = cli_slurp(rel, NULL);
    int ok = s && (strstr(s, text) != NULL) == want;
    if (!ok)
        fprintf(stderr, "%s %s '%s':\n%s\n", what, want ? "lacks" : "has", text, s ? s : "(none)");
    free(s);
    return ok;
}

int cli_output_has(const char *text) {
    return file_check("out.txt", "output", text, 1);
}

int cli_output_lacks(const char *text) {
    return file_check("out.txt", "output", text, 0);
}

int cli_file_has(const char *rel, const char *text) {
    return file_check(rel, rel, text, 1);
}

int cli_exists(const char *rel) {
    char path[512];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", cli_dir, rel);
    return stat(path, &sb) == 0;
}

int cli_write_file(const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", cli_dir, rel);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t n = strlen(text);
    int rc = fwrite(text, 1, n, f) == n ? 0 : -1;
    if (fclose(f) != 0) rc = -1;
    if (rc) fprintf(stderr, "%s: write failed\n", path);
    return rc;
}
