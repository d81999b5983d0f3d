/* `zoff info`: device backends, which one ZOFF_DEVICE/--device selects, and each GPU with
 * its memory, compute capability, PCIe link and NUMA node (read from sysfs, which is what
 * nvidia-smi and hwloc read too). */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

/* Reads a one-line sysfs attribute of a PCI device; empty string if unavailable. */
static void read_pci_attr(const char *bus_id, const char *attr, char *out, size_t cap) {
    char path[256];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/%s", bus_id, attr);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fgets(out, (int)cap, f)) out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

static void add_gpu(cJSON *gpus, int ordinal) {
    zoff_dev_gpu_info gi;
    cJSON *g = cJSON_CreateObject();
    cJSON_AddItemToArray(gpus, g);
    cJSON_AddNumberToObject(g, "index", ordinal);
    if (zoff_dev_cuda_gpu_info(ordinal, &gi) != 0) {
        cJSON_AddStringToObject(g, "error", zoff_last_error_detail());
        return;
    }
    cJSON_AddStringToObject(g, "name", gi.name);
    cJSON_AddNumberToObject(g, "memory_total_bytes", (double)gi.total_mem);
    cJSON_AddNumberToObject(g, "memory_free_bytes", (double)gi.free_mem);
    char cc[16];
    snprintf(cc, sizeof cc, "%d.%d", gi.cc_major, gi.cc_minor);
    cJSON_AddStringToObject(g, "compute_capability", cc);
    cJSON_AddNumberToObject(g, "multiprocessors", gi.sm_count);
    cJSON_AddStringToObject(g, "pci_bus_id", gi.pci_bus_id);
    char speed[64], width[16], max_speed[64], max_width[16], numa[16];
    read_pci_attr(gi.pci_bus_id, "current_link_speed", speed, sizeof speed);
    read_pci_attr(gi.pci_bus_id, "current_link_width", width, sizeof width);
    read_pci_attr(gi.pci_bus_id, "max_link_speed", max_speed, sizeof max_speed);
    read_pci_attr(gi.pci_bus_id, "max_link_width", max_width, sizeof max_width);
    read_pci_attr(gi.pci_bus_id, "numa_node", numa, sizeof numa);
    char link[256];
    if (speed[0])
        snprintf(link, sizeof link, "%s x%s (max %s x%s)", speed, width, max_speed, max_width);
    else
        snprintf(link, sizeof link, "unknown (no sysfs entry for %s)", gi.pci_bus_id);
    cJSON_AddStringToObject(g, "pcie_link", link);
    cJSON_AddStringToObject(g, "numa_node", numa[0] ? numa : "unknown");
    char ver[32];
    snprintf(ver, sizeof ver, "%d.%d", gi.driver_version / 1000, gi.driver_version % 1000 / 10);
    cJSON_AddStringToObject(g, "driver_cuda_version", ver);
    snprintf(ver, sizeof ver, "%d.%d", gi.runtime_version / 1000, gi.runtime_version % 1000 / 10);
    cJSON_AddStringToObject(g, "runtime_cuda_version", ver);
}

void zoff_info_add_devices(cJSON *doc, const zoff_dev_config *cfg) {
    cJSON *d = cJSON_AddObjectToObject(doc, "devices");
    cJSON *backends = cJSON_AddObjectToObject(d, "backends");
    cJSON_AddStringToObject(backends, "host", "available");
    int count = 0;
    int rc = zoff_dev_cuda_gpu_count(&count);
    char cuda_state[600];
    if (rc == ZOFF_ENOBACKEND)
        snprintf(cuda_state, sizeof cuda_state, "not built (configure with ZOFF_CUDA=ON)");
    else if (rc)
        snprintf(cuda_state, sizeof cuda_state, "unavailable: %s", zoff_last_error_detail());
    else
        snprintf(cuda_state, sizeof cuda_state, "available (%d GPU%s)", count,
                 count == 1 ? "" : "s");
    cJSON_AddStringToObject(backends, "cuda", cuda_state);

    cJSON *gpus = cJSON_AddArrayToObject(d, "gpus");
    for (int i = 0; i < count; i++)
        add_gpu(gpus, i);

    cJSON *chosen = cJSON_AddObjectToObject(d, "selected");
    cJSON_AddStringToObject(chosen, "requested", zoff_dev_kind_name(cfg->kind));
    zoff_dev *dev = NULL;
    rc = zoff_dev_open(cfg, &dev);
    if (rc) {
        char err[600];
        snprintf(err, sizeof err, "%s: %s", zoff_strerror(rc), zoff_last_error_detail());
        cJSON_AddStringToObject(chosen, "error", err);
        return;
    }
    zoff_dev_mem_stats st;
    zoff_dev_mem_stats_get(dev, &st);
    cJSON_AddStringToObject(chosen, "backend", zoff_dev_kind_name(zoff_dev_get_kind(dev)));
    cJSON_AddStringToObject(chosen, "device", zoff_dev_name(dev));
    cJSON_AddNumberToObject(chosen, "capacity_bytes", (double)st.capacity);
    zoff_dev_close(dev);
}
