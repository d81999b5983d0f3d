/* Log callback and per-thread error detail. The callback and level are set by the
 * application, usually once at start-up; they are read with relaxed atomics so that a
 * change while worker threads log is not a data race. */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic(zoff_log_fn) g_log_fn;
static _Atomic(void *) g_log_user;
static atomic_int g_log_level = ZOFF_LOG_INFO;
static _Thread_local char t_detail[512];
/* The line prefix: two static buffers, the one not published is rewritten and then published,
 * so a reader never sees a half-written prefix (a third change while a reader still holds the
 * oldest one would race; it is set once at start-up). */
static char g_prefix_buf[2][64];
static _Atomic(const char *) g_prefix;

void zoff_log_set_prefix(const char *prefix) {
    if (!prefix || !*prefix) {
        atomic_store(&g_prefix, NULL);
        return;
    }
    const char *cur = atomic_load(&g_prefix);
    char *buf = cur == g_prefix_buf[0] ? g_prefix_buf[1] : g_prefix_buf[0];
    snprintf(buf, sizeof g_prefix_buf[0], "%s", prefix);
    atomic_store(&g_prefix, buf);
}

void zoff_log_set_callback(zoff_log_fn fn, void *user, zoff_log_level max_level) {
    atomic_store(&g_log_user, user);
    atomic_store(&g_log_level, (int)max_level);
    atomic_store(&g_log_fn, fn);
}

int zoff_log_enabled(zoff_log_level level) {
    return atomic_load_explicit(&g_log_fn, memory_order_relaxed) != NULL &&
           (int)level <= atomic_load_explicit(&g_log_level, memory_order_relaxed);
}

static void log_va(zoff_log_level level, const char *module, const char *fmt, va_list ap) {
    zoff_log_fn fn = atomic_load(&g_log_fn);
    if (!fn || (int)level > atomic_load(&g_log_level)) return;
    char line[1024];
    const char *prefix = atomic_load(&g_prefix);
    size_t at = prefix ? (size_t)snprintf(line, sizeof line, "%s", prefix) : 0;
    vsnprintf(line + at, sizeof line - at, fmt, ap);
    fn(level, module, line, atomic_load(&g_log_user));
}

void zoff_log(zoff_log_level level, const char *module, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_va(level, module, fmt, ap);
    va_end(ap);
}

static int fail_va(int err, zoff_log_level level, const char *module, const char *fmt, va_list ap) {
    vsnprintf(t_detail, sizeof t_detail, fmt, ap);
    zoff_log(level, module, "%s (%s)", t_detail, zoff_strerror(err));
    return err;
}

int zoff_fail(int err, const char *module, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fail_va(err, ZOFF_LOG_ERROR, module, fmt, ap);
    va_end(ap);
    return err;
}

int zoff_fail_quiet(int err, const char *module, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fail_va(err, ZOFF_LOG_DEBUG, module, fmt, ap);
    va_end(ap);
    return err;
}

const char *zoff_last_error_detail(void) {
    return t_detail;
}

void zoff_log_to_stderr(zoff_log_level level, const char *module, const char *msg, void *user) {
    static const char *names[] = {"error", "warning", "info", "debug"};
    (void)user;
    const char *name = (unsigned)level < 4 ? names[level] : "log";
    fprintf(stderr, "zoff[%s] %s: %s\n", module ? module : "-", name, msg);
}
