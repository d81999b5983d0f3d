/* `zoff info`: CPU topology from hwloc (packages, NUMA nodes and their memory, cores,
 * hardware threads) and the SIMD features the CPU Adam dispatches on. */
#include "cli/cli.h"

#include <hwloc.h>
#include <stdio.h>

static void add_simd(cJSON *cpu) {
    cJSON *s = cJSON_AddObjectToObject(cpu, "simd");
    __builtin_cpu_init();
    cJSON_AddBoolToObject(s, "avx2", __builtin_cpu_supports("avx2"));
    cJSON_AddBoolToObject(s, "fma", __builtin_cpu_supports("fma"));
    cJSON_AddBoolToObject(s, "f16c", __builtin_cpu_supports("f16c"));
    cJSON_AddBoolToObject(s, "avx512f", __builtin_cpu_supports("avx512f"));
    cJSON_AddBoolToObject(s, "avx512bw", __builtin_cpu_supports("avx512bw"));
    cJSON_AddBoolToObject(s, "avx512bf16", __builtin_cpu_supports("avx512bf16"));
}

void zoff_info_add_cpu(cJSON *doc) {
    cJSON *cpu = cJSON_AddObjectToObject(doc, "cpu");
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0) {
        cJSON_AddStringToObject(cpu, "error", "hwloc could not load the topology");
        add_simd(cpu);
        return;
    }
    hwloc_obj_t pkg = hwloc_get_obj_by_type(topo, HWLOC_OBJ_PACKAGE, 0);
    const char *model = pkg ? hwloc_obj_get_info_by_name(pkg, "CPUModel") : NULL;
    cJSON_AddStringToObject(cpu, "model", model ? model : "unknown");
    cJSON_AddNumberToObject(cpu, "sockets", hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE));
    cJSON_AddNumberToObject(cpu, "cores", hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE));
    cJSON_AddNumberToObject(cpu, "hardware_threads", hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU));
    int nnuma = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
    cJSON *numa = cJSON_AddArrayToObject(cpu, "numa_nodes");
    for (int i = 0; i < nnuma; i++) {
        hwloc_obj_t n = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "os_index", n->os_index);
        cJSON_AddNumberToObject(o, "memory_bytes", (double)n->attr->numanode.local_memory);
        char *cpus = NULL;
        if (n->cpuset && hwloc_bitmap_list_asprintf(&cpus, n->cpuset) >= 0) {
            cJSON_AddStringToObject(o, "cpus", cpus);
            free(cpus);
        }
        cJSON_AddItemToArray(numa, o);
    }
    hwloc_topology_destroy(topo);
    add_simd(cpu);
}
