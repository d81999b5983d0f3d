/* zoff public API, core part: version, error codes and logging.
 *
 * Every zoff function that can fail returns int: 0 on success, or a negative value that is
 * either -errno (e.g. -ENOMEM, -EINVAL) or one of the ZOFF_E* codes below. zoff_strerror()
 * turns either into text. The library never prints, exits or aborts on bad input: it
 * reports through the log callback, which the application sets (none is set by default).
 * When a failure has details worth more than a code (the CUDA message, the file and field),
 * they are logged at ZOFF_LOG_ERROR and also kept per thread in zoff_last_error_detail().
 */
#ifndef ZOFF_ZOFF_H
#define ZOFF_ZOFF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZOFF_VERSION_MAJOR 0
#define ZOFF_VERSION_MINOR 1
#define ZOFF_VERSION_PATCH 0

/* The version of the library actually loaded, "MAJOR.MINOR.PATCH". */
const char *zoff_version(void);

/* zoff's own error codes; all below -1000 so they never collide with -errno. */
enum {
    ZOFF_EDEVICE_OOM = -1001, /* device memory capacity exceeded */
    ZOFF_ENODEVICE = -1002,   /* no usable CUDA device */
    ZOFF_ECUDA = -1003,       /* a CUDA runtime call failed (detail holds its message) */
    ZOFF_ECUBLAS = -1004,     /* a cuBLAS call failed */
    ZOFF_ENOBACKEND = -1005,  /* the requested backend is not built into this library */
    ZOFF_ECHECKSUM = -1006,   /* data read back does not match its checksum */
    ZOFF_EFORMAT = -1007,     /* malformed file or header */
    ZOFF_ENOTWRITTEN = -1008, /* a read of a range that was never written */
    ZOFF_ECONFIG = -1009,     /* invalid configuration value */
    ZOFF_ESHAPE = -1010,      /* tensor shape or size mismatch */
    ZOFF_ECANCELED = -1011,   /* request canceled before it completed */
    ZOFF_EHOST_OOM = -1012,   /* a bounded host (pinned) budget is exhausted */
    ZOFF_ECOMM = -1013,       /* a collective or communicator call (MPI, NCCL) failed */
};

/* Text for a zoff return code (0, -errno or ZOFF_E*). Never NULL; thread-safe. */
const char *zoff_strerror(int err);

/* The detail message of the last error raised on this thread (empty if none). */
const char *zoff_last_error_detail(void);

typedef enum zoff_log_level {
    ZOFF_LOG_ERROR = 0,
    ZOFF_LOG_WARN = 1,
    ZOFF_LOG_INFO = 2,
    ZOFF_LOG_DEBUG = 3,
} zoff_log_level;

/* msg is a complete line without a trailing newline. Called from any zoff thread; the
 * callback must be thread-safe. */
typedef void (*zoff_log_fn)(zoff_log_level level, const char *module, const char *msg, void *user);

/* Sets the log callback (NULL: silence) and the most verbose level delivered. */
void zoff_log_set_callback(zoff_log_fn fn, void *user, zoff_log_level max_level);

/* A ready-made callback that writes "zoff[module] level: msg" to stderr; for applications. */
void zoff_log_to_stderr(zoff_log_level level, const char *module, const char *msg, void *user);

/* Element types of tensors and buffers that cross module boundaries. */
typedef enum zoff_dtype {
    ZOFF_F32 = 0,
    ZOFF_F16 = 1,  /* IEEE binary16 */
    ZOFF_BF16 = 2, /* bfloat16 */
} zoff_dtype;

size_t zoff_dtype_size(zoff_dtype t);      /* 4, 2, 2; 0 for an invalid value */
const char *zoff_dtype_name(zoff_dtype t); /* "f32", "f16", "bf16", "?" */
/* Parses "f32"/"fp32"/"float32", "f16"/"fp16"/"float16", "bf16"/"bfloat16". */
int zoff_dtype_parse(const char *text, zoff_dtype *out);

/* The optimizer's defaults, in one place: the reference trainer (zoff_trainer_config_default),
 * the offload engine (zoff_engine_config_default), the CPU Adam kernel and the zoff command all
 * start from them. AdamW as in the GPT-2/3 recipes (nanoGPT, llm.c): betas 0.9 / 0.95, eps 1e-8,
 * decoupled weight decay 0.1, global-norm clip 1.0, lr 1e-3; fp16 dynamic loss scaling from
 * 65536 (never below 1), doubling after 1000 steps without overflow. */
typedef struct zoff_optimizer_defaults {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_clip; /* global gradient norm; 0 = off */
    float loss_scale_init, loss_scale_min;
    int loss_scale_window;
} zoff_optimizer_defaults;
zoff_optimizer_defaults zoff_optimizer_get_defaults(void);

/* Parses sizes like "2GiB", "512M", "4096", "1.5G" (binary units). 0 or -EINVAL. */
int zoff_parse_size(const char *text, size_t *out);

#ifdef __cplusplus
}
#endif
#endif
