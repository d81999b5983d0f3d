/* `zoff info`: host memory, and how much of it may be page-locked (RLIMIT_MEMLOCK), which
 * bounds zoff's pinned staging rings. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static double meminfo_bytes(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            unsigned long long kib = 0;
            if (sscanf(line + klen + 1, "%llu", &kib) == 1) v = (double)kib * 1024.0;
            break;
        }
    fclose(f);
    return v;
}

static void add_limit(cJSON *o, const char *key, rlim_t v) {
    if (v == RLIM_INFINITY)
        cJSON_AddStringToObject(o, key, "unlimited");
    else
        cJSON_AddNumberToObject(o, key, (double)v);
}

void zoff_info_add_memory(cJSON *doc) {
    cJSON *m = cJSON_AddObjectToObject(doc, "memory");
    double page = (double)sysconf(_SC_PAGESIZE);
    cJSON_AddNumberToObject(m, "total_bytes", page * (double)sysconf(_SC_PHYS_PAGES));
    double avail = meminfo_bytes("MemAvailable");
    if (avail >= 0) cJSON_AddNumberToObject(m, "available_bytes", avail);
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        add_limit(m, "memlock_soft_bytes", rl.rlim_cur);
        add_limit(m, "memlock_hard_bytes", rl.rlim_max);
    }
}
