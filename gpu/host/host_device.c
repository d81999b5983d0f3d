/* Host backend: device memory is host memory counted against an enforced capacity (so a
 * test can make a model larger than the "device" and see a GPU-like OOM), pinned memory is
 * page-aligned ordinary memory, and each stream is a worker thread (host_stream.c). */
#include "gpu/host/host_backend.h"
#include "core/log.h"
#include "zoff_build_config.h"

#include <cblas.h>
#include <errno.h>
#include <hwloc.h>
#include <hwloc/glibc-sched.h>
#include <stdlib.h>
#include <stdio.h>
#include <unistd.h>

#define MOD                   "host"
#define HOST_DEFAULT_CAPACITY ((size_t)2 << 30)

static int host_sync_all(zoff_dev *dev) {
    /* Workers never take dev->lock, so holding it while they drain cannot deadlock. */
    pthread_mutex_lock(&dev->lock);
    for (zoff_dev_stream *s = dev->streams; s; s = s->next)
        host_stream_synchronize(s->impl);
    pthread_mutex_unlock(&dev->lock);
    return 0;
}

static void host_close(zoff_dev *dev) {
    host_device *h = dev->impl;
    pthread_mutex_destroy(&h->value_lock);
    pthread_cond_destroy(&h->value_cond);
    free(h);
}

static int host_malloc(zoff_dev *dev, size_t bytes, void **ptr) {
    (void)dev;
    void *p = aligned_alloc(ZOFF_DEV_ALIGN, bytes); /* bytes is a multiple of the alignment */
    if (!p)
        return zoff_fail(ZOFF_EDEVICE_OOM, MOD, "host arena: malloc of %zu bytes failed", bytes);
    *ptr = p;
    return 0;
}

static int host_free(zoff_dev *dev, void *ptr) {
    host_sync_all(dev); /* as cudaFree: work still using the block finishes first */
    free(ptr);
    return 0;
}

static int host_pinned_alloc(zoff_dev *dev, size_t bytes, void **ptr) {
    (void)dev;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t rounded = (bytes + page - 1) / page * page;
    void *p = aligned_alloc(page, rounded);
    if (!p) return zoff_fail(-ENOMEM, MOD, "pinned host allocation of %zu bytes failed", bytes);
    *ptr = p;
    return 0;
}

static int host_pinned_free(zoff_dev *dev, void *ptr) {
    host_sync_all(dev);
    free(ptr);
    return 0;
}

static const zoff_dev_iface host_iface = {
    .close = host_close,
    .synchronize = host_sync_all,
    .malloc = host_malloc,
    .free = host_free,
    .host_alloc = host_pinned_alloc,
    .host_free = host_pinned_free,
    .stream_create = host_stream_create,
    .stream_destroy = host_stream_destroy,
    .stream_synchronize = host_stream_synchronize,
    .event_create = host_event_create,
    .event_destroy = host_event_destroy,
    .event_record = host_event_record,
    .stream_wait_event = host_stream_wait_event,
    .event_synchronize = host_event_synchronize,
    .event_query = host_event_query,
    .event_elapsed_ms = host_event_elapsed_ms,
    .launch_host_fn = host_launch_host_fn,
    .stream_wait_value = host_stream_wait_value,
    .stream_write_value = host_stream_write_value,
    .host_write_value = host_host_write_value,
    .host_wait_value = host_host_wait_value,
    .memcpy_async = host_memcpy_async,
    .memset_async = host_memset_async,
#if ZOFF_HAVE_MPI /* without MPI every world is of one, which the dispatcher serves */
    .comm_create = host_comm_create,
    .comm_destroy = host_comm_destroy,
    .comm_allreduce = host_comm_allreduce,
    .comm_reduce_scatter = host_comm_reduce_scatter,
    .comm_allgather = host_comm_allgather,
    .comm_broadcast = host_comm_broadcast,
#endif
    .op_cast = host_op_cast,
    .op_scale = host_op_scale,
    .op_sumsq_nonfinite = host_op_sumsq_nonfinite,
    .op_gemm = host_op_gemm,
    .op_bias_init = host_op_bias_init,
    .op_bias_grad = host_op_bias_grad,
    .op_add = host_op_add,
    .op_layernorm_fwd = host_op_layernorm_fwd,
    .op_layernorm_bwd = host_op_layernorm_bwd,
    .op_gelu_fwd = host_op_gelu_fwd,
    .op_gelu_bwd = host_op_gelu_bwd,
    .op_attention_fwd = host_op_attention_fwd,
    .op_attention_bwd = host_op_attention_bwd,
    .op_flash_attention_fwd = host_op_flash_attention_fwd,
    .op_flash_attention_bwd = host_op_flash_attention_bwd,
    .op_softmax_xent_fwd = host_op_softmax_xent_fwd,
    .op_softmax_xent_bwd = host_op_softmax_xent_bwd,
    .op_xent_fused = host_op_xent_fused,
    .op_embedding_fwd = host_op_embedding_fwd,
    .op_embedding_bwd = host_op_embedding_bwd,
    .op_adamw = host_op_adamw,
    .op_rmsnorm_fwd = host_op_rmsnorm_fwd,
    .op_rmsnorm_bwd = host_op_rmsnorm_bwd,
    .op_rope = host_op_rope,
    .op_swiglu_fwd = host_op_swiglu_fwd,
    .op_swiglu_bwd = host_op_swiglu_bwd,
};

/* The processing units of the first n cores in hwloc's logical order (as the CPU Adam pool
 * counts the cores it reserves; processing units where a virtual machine exposes no cores).
 * 0 with *any = false when n covers every core: nothing to bind. */
static int plan_kernel_cpus(int n, cpu_set_t *set, bool *any) {
    hwloc_topology_t topo;
    *any = false;
    if (hwloc_topology_init(&topo) != 0) return zoff_fail(-EIO, MOD, "hwloc_topology_init failed");
    int rc = 0;
    if (hwloc_topology_load(topo) != 0) {
        rc = zoff_fail(-EIO, MOD, "hwloc_topology_load failed");
        goto out;
    }
    hwloc_obj_type_t type = HWLOC_OBJ_CORE;
    int cores = hwloc_get_nbobjs_by_type(topo, type);
    if (cores <= 0) cores = hwloc_get_nbobjs_by_type(topo, type = HWLOC_OBJ_PU);
    if (n >= cores) goto out;
    hwloc_bitmap_t cpus = hwloc_bitmap_alloc();
    if (!cpus) {
        rc = -ENOMEM;
        goto out;
    }
    for (int c = 0; c < n; c++) {
        hwloc_obj_t obj = hwloc_get_obj_by_type(topo, type, (unsigned)c);
        if (obj && obj->cpuset) hwloc_bitmap_or(cpus, cpus, obj->cpuset);
    }
    if (hwloc_cpuset_to_glibc_sched_affinity(topo, cpus, set, sizeof *set) != 0)
        rc = zoff_fail(-EIO, MOD, "cannot express the kernel cores as a CPU mask");
    else
        *any = true;
    hwloc_bitmap_free(cpus);
out:
    hwloc_topology_destroy(topo);
    return rc;
}

int zoff_dev_host_open(zoff_dev *dev) {
    host_device *h = calloc(1, sizeof *h);
    if (!h) return -ENOMEM;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    h->kernel_threads = dev->cfg.host_kernel_threads > 0 ? dev->cfg.host_kernel_threads
                                                         : (int)(cores > 0 ? cores : 1);
    if (dev->cfg.capacity == 0) dev->cfg.capacity = HOST_DEFAULT_CAPACITY;
    h->copy_delay_us = dev->cfg.host_debug_copy_delay_us;
    if (dev->cfg.host_bind_kernel_cores) {
        int rc = plan_kernel_cpus(h->kernel_threads, &h->kernel_cpus, &h->bind);
        if (rc) {
            free(h);
            return rc;
        }
    }
    /* Host kernels spread GEMMs over their own OpenMP team (ops_gemm.c); OpenBLAS's thread
     * pool would compete with it for the same cores. Process-wide, set once per open. */
    openblas_set_num_threads(1);
    pthread_mutex_init(&h->value_lock, NULL);
    pthread_cond_init(&h->value_cond, NULL);
    dev->impl = h;
    dev->iface = &host_iface;
    snprintf(dev->name, sizeof dev->name, "host CPU (%d kernel threads%s, %.2f GiB arena)",
             h->kernel_threads, h->bind ? " on their own cores" : "",
             (double)dev->cfg.capacity / (1u << 30));
    return 0;
}
