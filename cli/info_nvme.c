/* `zoff info`: the CPU Adam's instruction set, and for --nvme-path DIR what the NVMe
 * swapper would do there (io_uring, O_DIRECT, free space, file system). */
#include "cli/cli.h"
#include "cpu_adam/cpu_adam.h"
#include "nvme/nvme.h"

#include <stdio.h>
#include <string.h>

void zoff_info_add_cpu_adam(cJSON *doc) {
    cJSON *a = cJSON_AddObjectToObject(doc, "cpu_adam");
    int forced = -1;
    zoff_cli_adam_isa(&forced); /* a bad ZOFF_ISA was reported before */
    zoff_adam_isa isa = forced >= 0 ? (zoff_adam_isa)forced : zoff_adam_isa_best();
    char text[64];
    snprintf(text, sizeof text, "%s (%s)", zoff_adam_isa_name(isa),
             forced >= 0 ? "forced by ZOFF_ISA" : "best this CPU runs");
    cJSON_AddStringToObject(a, "isa", text);
}

void zoff_info_add_nvme(cJSON *doc, const char *path) {
    cJSON *n = cJSON_AddObjectToObject(doc, "nvme");
    cJSON_AddStringToObject(n, "path", path);
    zoff_nvme_probe_result r;
    int rc = zoff_nvme_probe(path, &r);
    if (rc) {
        char err[600];
        snprintf(err, sizeof err, "%s: %s", zoff_strerror(rc), zoff_last_error_detail());
        cJSON_AddStringToObject(n, "error", err);
        return;
    }
    char why[128];
    cJSON_AddStringToObject(n, "filesystem", r.fs_type);
    cJSON_AddNumberToObject(n, "free_bytes", (double)r.free_bytes);
    cJSON_AddNumberToObject(n, "total_bytes", (double)r.total_bytes);
    snprintf(why, sizeof why, "no (%s)", zoff_strerror(-r.uring_errno));
    cJSON_AddStringToObject(n, "io_uring", r.uring_ok ? "yes" : why);
    snprintf(why, sizeof why, "no (%s)", zoff_strerror(-r.direct_errno));
    cJSON_AddStringToObject(n, "o_direct", r.direct_ok ? "yes" : why);
    cJSON_AddStringToObject(n, "backend", r.backend);
}
