/* Minimal test harness shared by the ctest executables: CHECK macros that report the file,
 * line and expression, and the exit code 77 convention for a skipped test. */
#ifndef ZOFF_TESTS_TEST_UTIL_H
#define ZOFF_TESTS_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#define ZOFF_TEST_SKIP 77

extern _Atomic int zoff_test_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            zoff_test_failures++;                                                                  \
        }                                                                                          \
    } while (0)

/* Checks a zoff return code is 0 and prints the code's text and detail otherwise. */
#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s:%d: %s returned %d (%s: %s)\n", __FILE__, __LINE__, #expr, rc_,    \
                    zoff_strerror(rc_), zoff_last_error_detail());                                 \
            zoff_test_failures++;                                                                  \
        }                                                                                          \
    } while (0)

/* Like CHECK_OK but stops the test: for set-up steps the rest depends on. */
#define REQUIRE_OK(expr)                                                                           \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != 0) {                                                                            \
            fprintf(stderr, "%s:%d: %s returned %d (%s: %s)\n", __FILE__, __LINE__, #expr, rc_,    \
                    zoff_strerror(rc_), zoff_last_error_detail());                                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s = %lld, %s = %lld\n", __FILE__, __LINE__,  \
                    #a, a_, #b, b_);                                                               \
            zoff_test_failures++;                                                                  \
        }                                                                                          \
    } while (0)

/* Installs a stderr log callback at WARN (ZOFF_TEST_LOG=debug for more). */
void zoff_test_init(void);
/* Prints "name: N checks failed" / "name: ok" and returns the process exit code. */
int zoff_test_finish(const char *name);
/* A deterministic xorshift generator for test data. */
unsigned long long zoff_test_rand(unsigned long long *state);
/* Uniform float in [lo, hi). */
float zoff_test_randf(unsigned long long *state, float lo, float hi);

/* A model batch (model/model.h) of host token and target arrays, as a pointer argument. */
#define BATCH(x, y, B_, T_) (&(zoff_batch){.tokens = (x), .targets = (y), .B = (B_), .T = (T_)})

#endif
