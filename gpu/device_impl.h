/* Internals of the device layer shared by the dispatcher (device.c) and the backends.
 *
 * The dispatcher owns what is common to every backend: argument checks, the capacity
 * limit and memory counters, the pointer->size map of live allocations, and the lists of
 * live streams and events (so that close can reclaim them). A backend fills a
 * zoff_dev_iface table, ggml-backend style, and sees only its own `impl` pointers.
 */
#ifndef ZOFF_GPU_DEVICE_IMPL_H
#define ZOFF_GPU_DEVICE_IMPL_H

#include "gpu/device.h"
#include "gpu/ptr_map.h"

#include <pthread.h>

typedef struct zoff_dev_iface {
    void (*close)(zoff_dev *dev);
    int (*synchronize)(zoff_dev *dev);
    int (*malloc)(zoff_dev *dev, size_t bytes, void **ptr);
    int (*free)(zoff_dev *dev, void *ptr);
    int (*host_alloc)(zoff_dev *dev, size_t bytes, void **ptr);
    int (*host_free)(zoff_dev *dev, void *ptr);

    int (*stream_create)(zoff_dev *dev, void **impl);
    int (*stream_destroy)(zoff_dev *dev, void *impl);
    int (*stream_synchronize)(void *impl);
    int (*event_create)(zoff_dev *dev, void **impl);
    int (*event_destroy)(void *impl);
    int (*event_record)(void *event, void *stream);
    int (*stream_wait_event)(void *stream, void *event);
    int (*event_synchronize)(void *event);
    int (*event_query)(void *event);
    int (*event_elapsed_ms)(void *start, void *end, float *ms);
    int (*launch_host_fn)(void *stream, zoff_dev_host_fn fn, void *arg);
    int (*stream_wait_value)(void *stream, const uint32_t *flag, uint32_t value);
    int (*stream_write_value)(void *stream, uint32_t *flag, uint32_t value);
    int (*host_write_value)(zoff_dev *dev, uint32_t *flag, uint32_t value);
    int (*host_wait_value)(zoff_dev *dev, const uint32_t *flag, uint32_t value);
    int (*memcpy_async)(void *stream, void *dst, const void *src, size_t bytes,
                        zoff_dev_copy_kind kind);
    int (*memset_async)(void *stream, void *dst, int value, size_t bytes);

    /* kernels (the op table); arguments already validated by the dispatcher */
    int (*op_cast)(void *stream, void *dst, zoff_dtype dst_type, const void *src,
                   zoff_dtype src_type, size_t n);
    int (*op_scale)(void *stream, void *x, zoff_dtype type, float alpha, size_t n);
    int (*op_sumsq_nonfinite)(void *stream, const void *x, zoff_dtype type, size_t n, float *out);
} zoff_dev_iface;

struct zoff_dev_stream {
    zoff_dev *dev;
    void *impl;
    zoff_dev_stream *next; /* in dev->streams */
};

struct zoff_dev_event {
    zoff_dev *dev;
    void *impl;
    zoff_dev_event *next; /* in dev->events */
};

struct zoff_dev {
    const zoff_dev_iface *iface;
    zoff_dev_kind kind;
    zoff_dev_config cfg;
    char name[384];
    void *impl;

    pthread_mutex_t lock; /* guards everything below */
    zoff_dev_mem_stats stats;
    zoff_ptr_map device_allocs; /* ptr -> bytes */
    zoff_ptr_map pinned_allocs;
    zoff_dev_stream *streams;
    zoff_dev_event *events;
    zoff_dev_stream *sync_stream; /* for zoff_dev_memcpy */
};

/* Backend constructors: fill dev->iface, dev->impl, dev->name and cfg.capacity defaults.
 * A backend that is not built returns ZOFF_ENOBACKEND. */
int zoff_dev_host_open(zoff_dev *dev);
int zoff_dev_cuda_open(zoff_dev *dev);

#define ZOFF_DEV_ALIGN 256

#endif
