/* A Chrome/Perfetto trace ("traceEvents" JSON) of the offload pipeline: host spans timed
 * with the host clock, device spans timed with device events, both on one timeline whose
 * origin is a base event synchronized at creation. Device spans are resolved when the trace
 * is written, after the device is idle. Thread-safe; spans past the cap are dropped (with
 * one warning) so a long run cannot grow it without bound. */
#ifndef ZOFF_OFFLOAD_TRACE_H
#define ZOFF_OFFLOAD_TRACE_H

#include "gpu/device.h"

typedef struct zoff_trace zoff_trace;

int zoff_trace_create(zoff_dev *dev, zoff_dev_stream *s, size_t max_spans, zoff_trace **out);
void zoff_trace_destroy(zoff_trace *t);
/* Microseconds since the trace's origin, by the host clock. */
double zoff_trace_now_us(const zoff_trace *t);
void zoff_trace_host_span(zoff_trace *t, const char *lane, const char *name, double t0_us,
                          double t1_us);
/* Device span: begin records an event on s and returns an id for end (-1: dropped). */
int zoff_trace_device_begin(zoff_trace *t, zoff_dev_stream *s, const char *lane, const char *name);
void zoff_trace_device_end(zoff_trace *t, zoff_dev_stream *s, int id);
/* Resolves device spans (all work must be complete) and writes the JSON file. */
int zoff_trace_write(zoff_trace *t, const char *path);

#endif
