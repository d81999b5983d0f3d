/* Environment variables that configure the zoff command (ZOFF_LOG, ZOFF_DEVICE,
 * ZOFF_HOST_DEVICE_MEM), turned into library configuration with clear errors. */
#include "cli/cli.h"
#include "cpu_adam/cpu_adam.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int zoff_cli_setup_logging(void) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    const char *v = getenv("ZOFF_LOG");
    zoff_log_level level = ZOFF_LOG_INFO;
    if (v && *v) {
        size_t i = 0;
        while (i < 4 && strcmp(v, names[i]) != 0)
            i++;
        if (i == 4) {
            fprintf(stderr, "zoff: ZOFF_LOG='%s' is not one of error, warn, info, debug\n", v);
            return -1;
        }
        level = (zoff_log_level)i;
    }
    zoff_log_set_callback(zoff_log_to_stderr, NULL, level);
    return 0;
}

int zoff_cli_adam_isa(int *isa) {
    *isa = ZOFF_ADAM_ISA_AUTO;
    const char *v = getenv("ZOFF_ISA");
    if (!v || !*v) return 0;
    zoff_adam_isa parsed, resolved;
    if (zoff_adam_isa_parse(v, &parsed) != 0) {
        fprintf(stderr,
                "zoff: ZOFF_ISA='%s' is not one of scalar, avx2, avx512, avx512bf16, auto\n", v);
        return -1;
    }
    if (zoff_adam_isa_resolve(parsed, &resolved) != 0) {
        fprintf(stderr, "zoff: ZOFF_ISA=%s: %s\n", v, zoff_last_error_detail());
        return -1;
    }
    *isa = (int)resolved;
    return 0;
}

int zoff_cli_device_config(zoff_dev_config *cfg, const char *device_flag) {
    zoff_dev_config_default(cfg);
    const char *kind = device_flag ? device_flag : getenv("ZOFF_DEVICE");
    const char *what = device_flag ? "--device" : "ZOFF_DEVICE";
    if (kind && *kind && zoff_dev_kind_parse(kind, &cfg->kind) != 0) {
        fprintf(stderr, "zoff: %s='%s' is not one of auto, cuda, host\n", what, kind);
        return -1;
    }
    const char *mem = getenv("ZOFF_HOST_DEVICE_MEM");
    if (mem && *mem) {
        size_t bytes = 0;
        if (zoff_parse_size(mem, &bytes) != 0 || bytes == 0) {
            fprintf(stderr, "zoff: ZOFF_HOST_DEVICE_MEM='%s' is not a size like 2GiB or 512M\n",
                    mem);
            return -1;
        }
        if (cfg->kind != ZOFF_DEV_CUDA) cfg->capacity = bytes; /* applies to the host backend */
    }
    return 0;
}

void zoff_cli_device_resolve_auto(zoff_dev_config *cfg) {
    if (cfg->kind != ZOFF_DEV_AUTO) return;
    /* no CUDA backend, or no GPU: the host backend, decided before the device is opened so
     * that probing for CUDA does not log an error on every run */
    int gpus = 0;
    if (!zoff_dev_backend_built(ZOFF_DEV_CUDA) || zoff_dev_cuda_gpu_count(&gpus) != 0 || gpus == 0)
        cfg->kind = ZOFF_DEV_HOST;
}
