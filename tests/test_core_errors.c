/* Core conventions: every error code has text, details reach the log callback and the
 * per-thread detail, sizes and dtypes parse, and bad input is rejected with -EINVAL. */
#include "core/log.h"
#include "tests/test_util.h"

#include <errno.h>
#include <string.h>

static int calls;
static char last[256];

static void capture(zoff_log_level level, const char *module, const char *msg, void *user) {
    (void)user;
    calls++;
    snprintf(last, sizeof last, "%d %s %s", (int)level, module, msg);
}

int main(void) {
    zoff_test_init();
    CHECK(strcmp(zoff_version(), "0.1.0") == 0);
    for (int code = -1012; code <= -1001; code++)
        CHECK(strcmp(zoff_strerror(code), "unknown zoff error") != 0);
    CHECK(strcmp(zoff_strerror(-ENOENT), "No such file or directory") == 0);
    CHECK(strcmp(zoff_strerror(-999999), "unknown zoff error") == 0);
    CHECK(strcmp(zoff_strerror(0), "success") == 0);

    zoff_log_set_callback(capture, NULL, ZOFF_LOG_WARN);
    zoff_log(ZOFF_LOG_DEBUG, "t", "hidden");
    CHECK_EQ_INT(calls, 0);
    int rc = zoff_fail(-ENOSPC, "nvme", "swap file %s: %d bytes", "/x/y", 5);
    CHECK_EQ_INT(rc, -ENOSPC);
    CHECK_EQ_INT(calls, 1);
    CHECK(strstr(last, "swap file /x/y: 5 bytes") != NULL);
    CHECK(strstr(last, "nvme") != NULL);
    CHECK(strcmp(zoff_last_error_detail(), "swap file /x/y: 5 bytes") == 0);
    zoff_log_set_callback(NULL, NULL, ZOFF_LOG_DEBUG);
    zoff_log(ZOFF_LOG_ERROR, "t", "dropped");
    CHECK_EQ_INT(calls, 1);
    zoff_test_init();

    size_t sz = 0;
    CHECK_OK(zoff_parse_size("2GiB", &sz));
    CHECK_EQ_INT(sz, 2ull << 30);
    CHECK_OK(zoff_parse_size("512M", &sz));
    CHECK_EQ_INT(sz, 512ull << 20);
    CHECK_OK(zoff_parse_size("1.5k", &sz));
    CHECK_EQ_INT(sz, 1536);
    CHECK_OK(zoff_parse_size("4096", &sz));
    CHECK_EQ_INT(sz, 4096);
    CHECK_EQ_INT(zoff_parse_size("12 parsecs", &sz), -EINVAL);
    CHECK_EQ_INT(zoff_parse_size("-1G", &sz), -EINVAL);
    CHECK_EQ_INT(zoff_parse_size("", &sz), -EINVAL);
    CHECK_EQ_INT(zoff_parse_size("0.3", &sz), -EINVAL);

    zoff_dtype t;
    CHECK_OK(zoff_dtype_parse("bf16", &t));
    CHECK_EQ_INT(t, ZOFF_BF16);
    CHECK_OK(zoff_dtype_parse("fp16", &t));
    CHECK_EQ_INT(t, ZOFF_F16);
    CHECK_EQ_INT(zoff_dtype_parse("int8", &t), -EINVAL);
    CHECK_EQ_INT(zoff_dtype_size(ZOFF_F32), 4);
    CHECK_EQ_INT(zoff_dtype_size((zoff_dtype)9), 0);
    return zoff_test_finish("test_core_errors");
}
