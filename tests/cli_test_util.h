/* Running the zoff command from the end-to-end tests: in a scratch folder of their own, with
 * the output captured in out.txt there, and reading back what a run wrote. One copy for all of
 * the CLI tests (train, faults, sft, tokenize, dist), so that they capture and compare alike. */
#ifndef ZOFF_TESTS_CLI_TEST_UTIL_H
#define ZOFF_TESTS_CLI_TEST_UTIL_H

#include <stddef.h>

extern char cli_zoff[4096]; /* absolute path of the zoff binary */
extern char cli_dir[256];   /* the scratch folder, e.g. /tmp/zoff_dist_XXXXXX */

/* Resolves the zoff binary (argv[1]) and makes the scratch folder from `pattern` (ending in
 * XXXXXX). 0, or prints why and returns the exit code to end the test with. */
int cli_setup(int argc, char **argv, const char *pattern);
/* cli_setup for a test given the fixtures folder too (argv[2]): its absolute path into fixtures
 * (PATH_MAX bytes). */
int cli_setup_fixtures(int argc, char **argv, const char *pattern, char *fixtures);
/* Whether zoff train's default data (/usr/share/common-licenses/GPL-3) is there; prints the
 * skip line when not (the caller then returns ZOFF_TEST_SKIP). */
int cli_have_train_data(void);
/* Runs a shell command (printf format) in cli_dir, output into out.txt; its exit status, or
 * -1 when it did not exit (a signal). */
int cli_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* As cli_sh, but stderr into err.txt: for checks that a message went to stderr, not stdout. */
int cli_sh_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* zoff with the environment assignments env (may be "") and args, as cli_sh runs it. */
int cli_run_env(const char *env, const char *args);
/* Whether out.txt holds text (prints the output when it does not). */
int cli_output_has(const char *text);
/* Whether out.txt exists and does not hold text (prints the output when it does). */
int cli_output_lacks(const char *text);
/* Whether cli_dir/rel holds text (prints the file when it does not). */
int cli_file_has(const char *rel, const char *text);
/* Whether cli_dir/rel exists. */
int cli_exists(const char *rel);
/* The whole of cli_dir/rel, NUL-terminated (n: its size; may be NULL), or NULL. Free it. */
char *cli_slurp(const char *rel, size_t *n);
/* Writes text (up to its NUL) to cli_dir/rel. 0, or prints why and returns -1. */
int cli_write_file(const char *rel, const char *text);

#endif
