/* `zoff info`: what a user needs to know before a long run (like nvidia-smi plus
 * DeepSpeed's ds_report). Every section is gathered into one JSON document, printed as is
 * with --json or as indented text for people. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

static void info_usage(FILE *out) {
    fprintf(out,
            "usage: zoff info [--json] [--device auto|cuda|host] [--nvme-path DIR]\n"
            "\n"
            "  --json             machine-readable output\n"
            "  --device KIND      backend to report as selected (default: ZOFF_DEVICE or auto)\n"
            "  --nvme-path DIR    check DIR for NVMe offload: io_uring, O_DIRECT, free space\n");
}

static void print_bytes(double b) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    double v = b;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    printf("%.1f %s", v, units[u]);
}

static void print_value(const cJSON *item) {
    size_t klen = item->string ? strlen(item->string) : 0;
    if (cJSON_IsBool(item))
        printf("%s", cJSON_IsTrue(item) ? "yes" : "no");
    else if (cJSON_IsString(item))
        printf("%s", item->valuestring);
    else if (cJSON_IsNumber(item) && klen > 6 && strcmp(item->string + klen - 6, "_bytes") == 0)
        print_bytes(item->valuedouble);
    else if (cJSON_IsNumber(item))
        printf("%.15g", item->valuedouble);
}

static void print_node(const cJSON *node, int depth) {
    for (const cJSON *it = node->child; it; it = it->next) {
        printf("%*s", depth * 2, "");
        if (cJSON_IsObject(it) || cJSON_IsArray(it)) {
            if (it->string) printf("%s:", it->string);
            if (cJSON_IsArray(it) && !it->child) printf(" none");
            printf("\n");
            if (cJSON_IsArray(it)) {
                int i = 0;
                for (const cJSON *el = it->child; el; el = el->next, i++) {
                    printf("%*s[%d]\n", (depth + 1) * 2, "", i);
                    print_node(el, depth + 2);
                }
            } else {
                print_node(it, depth + 1);
            }
            continue;
        }
        printf("%s: ", it->string ? it->string : "-");
        print_value(it);
        printf("\n");
    }
}

void zoff_info_print_text(const cJSON *doc) {
    print_node(doc, 0);
}

int zoff_cmd_info(int argc, char **argv) {
    int json = 0;
    const char *device = NULL, *nvme_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
            device = argv[++i];
        else if (strcmp(argv[i], "--nvme-path") == 0 && i + 1 < argc)
            nvme_path = argv[++i];
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            info_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "zoff info: unknown or incomplete option '%s'\n", argv[i]);
            info_usage(stderr);
            return 2;
        }
    }
    zoff_dev_config cfg;
    int isa;
    if (zoff_cli_device_config(&cfg, device) != 0 || zoff_cli_adam_isa(&isa) != 0) return 2;
    cJSON *doc = cJSON_CreateObject();
    zoff_info_add_build(doc);
    zoff_info_add_devices(doc, &cfg);
    zoff_info_add_cpu(doc);
    zoff_info_add_cpu_adam(doc);
    zoff_info_add_memory(doc);
    if (nvme_path) zoff_info_add_nvme(doc, nvme_path);
    if (json) {
        char *s = cJSON_Print(doc);
        printf("%s\n", s);
        cJSON_free(s);
    } else {
        zoff_info_print_text(doc);
    }
    cJSON_Delete(doc);
    return 0;
}
