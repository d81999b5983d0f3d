/* Shared pieces of the zoff command: subcommand entry points and the environment-to-config
 * helpers (only cli/ and bench/ read flags and environment). */
#ifndef ZOFF_CLI_CLI_H
#define ZOFF_CLI_CLI_H

#include "gpu/device.h"
#include "zoff/zoff.h"

#include <cjson/cJSON.h>

/* Installs the stderr log callback at the level named by ZOFF_LOG (default info).
 * 0, or prints what is wrong with ZOFF_LOG and returns -1. */
int zoff_cli_setup_logging(void);

/* Fills a device config from ZOFF_DEVICE and ZOFF_HOST_DEVICE_MEM, then from an explicit
 * --device value if given (may be NULL). Prints the offending variable and returns -1 on
 * bad values. */
int zoff_cli_device_config(zoff_dev_config *cfg, const char *device_flag);
/* auto becomes host when this zoff has no CUDA backend or the machine no GPU (quietly). */
void zoff_cli_device_resolve_auto(zoff_dev_config *cfg);

/* The CPU Adam instruction set from ZOFF_ISA (scalar|avx2|avx512|avx512bf16|auto; unset: auto, -1).
 * Prints what is wrong and returns -1 on a bad value or one this CPU lacks. */
int zoff_cli_adam_isa(int *isa);

int zoff_cmd_info(int argc, char **argv);

/* cli/info_*.c: each adds one section of `zoff info` to the JSON document. */
void zoff_info_add_build(cJSON *doc);
void zoff_info_add_devices(cJSON *doc, const zoff_dev_config *cfg);
void zoff_info_add_cpu(cJSON *doc);
void zoff_info_add_memory(cJSON *doc);
void zoff_info_add_nvme(cJSON *doc, const char *path);
void zoff_info_add_cpu_adam(cJSON *doc);

/* Prints a JSON document as indented "key: value" text for people. */
void zoff_info_print_text(const cJSON *doc);

#endif
