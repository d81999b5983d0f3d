/* Internal logging and error helpers shared by every module.
 *
 * zoff_log() formats a line and hands it to the application's callback (if any).
 * zoff_fail() is the one way a module raises an error with details: it stores the detail
 * for zoff_last_error_detail(), logs it at ERROR, and returns the code so a caller can
 * write `return zoff_fail(-EINVAL, "nvme", "stripe size %zu is not a multiple of 4096", s);`.
 */
#ifndef ZOFF_CORE_LOG_H
#define ZOFF_CORE_LOG_H

#include "zoff/zoff.h"

#if defined(__GNUC__)
#define ZOFF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ZOFF_PRINTF(a, b)
#endif

void zoff_log(zoff_log_level level, const char *module, const char *fmt, ...) ZOFF_PRINTF(3, 4);
int zoff_fail(int err, const char *module, const char *fmt, ...) ZOFF_PRINTF(3, 4);
/* As zoff_fail, but logs at DEBUG: for expected failures such as probing for a GPU. */
int zoff_fail_quiet(int err, const char *module, const char *fmt, ...) ZOFF_PRINTF(3, 4);
/* A prefix put before every log line (e.g. "[rank 1] " in a multi-process job); NULL or ""
 * clears it. Set once at start-up (zoff_dist_init), before worker threads log; copied. */
void zoff_log_set_prefix(const char *prefix);
/* Whether a message at this level would be delivered (skip costly formatting otherwise). */
int zoff_log_enabled(zoff_log_level level);

#define ZOFF_UNUSED(x)    ((void)(x))
#define ZOFF_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
