/* Shared test harness implementation (see test_util.h). */
#include "tests/test_util.h"
#include "zoff/zoff.h"

#include <string.h>

_Atomic int zoff_test_failures;

void zoff_test_init(void) {
    const char *lvl = getenv("ZOFF_TEST_LOG");
    zoff_log_level max = ZOFF_LOG_WARN;
    if (lvl && strcmp(lvl, "debug") == 0) max = ZOFF_LOG_DEBUG;
    if (lvl && strcmp(lvl, "info") == 0) max = ZOFF_LOG_INFO;
    zoff_log_set_callback(zoff_log_to_stderr, NULL, max);
}

int zoff_test_finish(const char *name) {
    if (zoff_test_failures) {
        fprintf(stderr, "%s: %d checks failed\n", name, zoff_test_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

unsigned long long zoff_test_rand(unsigned long long *s) {
    unsigned long long x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

float zoff_test_randf(unsigned long long *s, float lo, float hi) {
    return lo + (hi - lo) * (float)((zoff_test_rand(s) >> 40) * (1.0 / 16777216.0));
}
