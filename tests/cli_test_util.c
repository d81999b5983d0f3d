/* See cli_test_util.h. */
#include "tests/cli_test_util.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

char cli_zoff[4096];
char cli_dir[256];

int cli_setup(int argc, char **argv, const char *pattern) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s ZOFF_BINARY ...\n", argv[0]);
        return 2;
    }
    if (!realpath(argv[1], cli_zoff)) {
        fprintf(stderr, "%s: not found\n", argv[1]);
        return 1;
    }
    snprintf(cli_dir, sizeof cli_dir, "%s", pattern);
    if (!mkdtemp(cli_dir)) {
        perror(pattern);
        return 1;
    }
    return 0;
}

int cli_sh(const char *fmt, ...) {
    char body[6144], cmd[6144 + 512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd '%s' && %s > out.txt 2>&1", cli_dir, body);
    fflush(stdout);
    fflush(stderr);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
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

int cli_output_has(const char *text) {
    char *out = cli_slurp("out.txt", NULL);
    int has = out && strstr(out, text);
    if (!has) fprintf(stderr, "output lacks '%s':\n%s\n", text, out ? out : "(none)");
    free(out);
    return has;
}

int cli_exists(const char *rel) {
    char path[512];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", cli_dir, rel);
    return stat(path, &sb) == 0;
}
