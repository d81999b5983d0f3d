/* Trace recording and the Chrome trace writer (see trace.h). One "thread" row per lane
 * (compute, d2h, cpu adam, nvme, h2d) so the overlap is visible at a glance. */
#include "offload/trace.h"
#include "core/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct span {
    char lane[24], name[40];
    double t0, t1;             /* host spans: microseconds since origin */
    zoff_dev_event *ev0, *ev1; /* device spans: resolved at write */
    int ended;                 /* device spans: ev1 was recorded */
} span;

struct zoff_trace {
    zoff_dev *dev;
    zoff_dev_event *base;
    double base_host_us; /* host clock at the base event's completion */
    pthread_mutex_t lock;
    span *spans;
    size_t n, cap, max;
    int warned;
};

static double host_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int zoff_trace_create(zoff_dev *dev, zoff_dev_stream *s, size_t max_spans, zoff_trace **out) {
    zoff_trace *t = calloc(1, sizeof *t);
    if (!t) return -ENOMEM;
    t->dev = dev;
    t->max = max_spans;
    pthread_mutex_init(&t->lock, NULL);
    int rc = zoff_dev_event_create(dev, &t->base);
    if (!rc) rc = zoff_dev_event_record(t->base, s);
    if (!rc) rc = zoff_dev_event_synchronize(t->base);
    if (rc) {
        if (t->base) zoff_dev_event_destroy(t->base);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return rc;
    }
    t->base_host_us = host_us();
    *out = t;
    return 0;
}

void zoff_trace_destroy(zoff_trace *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n; i++) {
        if (t->spans[i].ev0) zoff_dev_event_destroy(t->spans[i].ev0);
        if (t->spans[i].ev1) zoff_dev_event_destroy(t->spans[i].ev1);
    }
    zoff_dev_event_destroy(t->base);
    pthread_mutex_destroy(&t->lock);
    free(t->spans);
    free(t);
}

double zoff_trace_now_us(const zoff_trace *t) {
    return host_us() - t->base_host_us;
}

/* Appends a span under the lock; NULL when the cap is reached. */
static span *add_span(zoff_trace *t, const char *lane, const char *name) {
    if (t->n == t->max) {
        if (!t->warned)
            zoff_log(ZOFF_LOG_WARN, "trace", "trace holds %zu spans: later ones are dropped",
                     t->max);
        t->warned = 1;
        return NULL;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        span *s = realloc(t->spans, cap * sizeof *s);
        if (!s) return NULL;
        t->spans = s;
        t->cap = cap;
    }
    span *s = &t->spans[t->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->lane, sizeof s->lane, "%s", lane);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

void zoff_trace_host_span(zoff_trace *t, const char *lane, const char *name, double t0_us,
                          double t1_us) {
    if (!t) return;
    pthread_mutex_lock(&t->lock);
    span *s = add_span(t, lane, name);
    if (s) {
        s->t0 = t0_us;
        s->t1 = t1_us;
    }
    pthread_mutex_unlock(&t->lock);
}

int zoff_trace_device_begin(zoff_trace *t, zoff_dev_stream *st, const char *lane,
                            const char *name) {
    if (!t) return -1;
    zoff_dev_event *e0 = NULL, *e1 = NULL;
    if (zoff_dev_event_create(t->dev, &e0) || zoff_dev_event_create(t->dev, &e1) ||
        zoff_dev_event_record(e0, st)) {
        if (e0) zoff_dev_event_destroy(e0);
        if (e1) zoff_dev_event_destroy(e1);
        return -1;
    }
    pthread_mutex_lock(&t->lock);
    span *s = add_span(t, lane, name);
    int id = -1;
    if (s) {
        s->ev0 = e0;
        s->ev1 = e1;
        id = (int)(s - t->spans);
    }
    pthread_mutex_unlock(&t->lock);
    if (id < 0) {
        zoff_dev_event_destroy(e0);
        zoff_dev_event_destroy(e1);
    }
    return id;
}

void zoff_trace_device_end(zoff_trace *t, zoff_dev_stream *st, int id) {
    if (!t || id < 0) return;
    pthread_mutex_lock(&t->lock);
    zoff_dev_event *e1 = t->spans[id].ev1;
    pthread_mutex_unlock(&t->lock);
    int ok = zoff_dev_event_record(e1, st) == 0;
    pthread_mutex_lock(&t->lock);
    t->spans[id].ended = ok;
    pthread_mutex_unlock(&t->lock);
}

static const char *lanes[] = {"compute",   "d2h",       "cpu adam",       "nvme",      "h2d",
                              "data prefetch", "data wait", "reduce-scatter", "all-gather"};

static int lane_tid(const char *lane) {
    for (int i = 0; i < (int)ZOFF_ARRAY_LEN(lanes); i++)
        if (strcmp(lane, lanes[i]) == 0) return i + 1;
    return (int)ZOFF_ARRAY_LEN(lanes) + 1;
}

int zoff_trace_write(zoff_trace *t, const char *path) {
    cJSON *doc = cJSON_CreateObject();
    cJSON *events = cJSON_AddArrayToObject(doc, "traceEvents");
    for (size_t i = 0; i < ZOFF_ARRAY_LEN(lanes); i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "name", "thread_name");
        cJSON_AddStringToObject(m, "ph", "M");
        cJSON_AddNumberToObject(m, "pid", 1);
        cJSON_AddNumberToObject(m, "tid", (double)i + 1);
        cJSON *args = cJSON_AddObjectToObject(m, "args");
        cJSON_AddStringToObject(args, "name", lanes[i]);
        cJSON_AddItemToArray(events, m);
    }
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < t->n; i++) {
        span *s = &t->spans[i];
        double t0 = s->t0, t1 = s->t1;
        if (s->ev0) {
            /* A span whose end was never recorded has no duration: skip it rather than ask
             * for one (a failed elapsed-time query is an error, logged as one). */
            if (!s->ended) continue;
            float a = 0, b = 0;
            if (zoff_dev_event_elapsed_ms(t->base, s->ev0, &a) ||
                zoff_dev_event_elapsed_ms(t->base, s->ev1, &b))
                continue;
            t0 = a * 1e3;
            t1 = b * 1e3;
        }
        cJSON *ev = cJSON_CreateObject();
        cJSON_AddStringToObject(ev, "name", s->name);
        cJSON_AddStringToObject(ev, "cat", s->lane);
        cJSON_AddStringToObject(ev, "ph", "X");
        cJSON_AddNumberToObject(ev, "ts", t0);
        cJSON_AddNumberToObject(ev, "dur", t1 > t0 ? t1 - t0 : 0);
        cJSON_AddNumberToObject(ev, "pid", 1);
        cJSON_AddNumberToObject(ev, "tid", lane_tid(s->lane));
        cJSON_AddItemToArray(events, ev);
    }
    pthread_mutex_unlock(&t->lock);
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!text) return -ENOMEM;
    FILE *f = fopen(path, "w");
    int rc = 0;
    if (!f)
        rc = zoff_fail(-errno, "trace", "cannot write trace file %s", path);
    else {
        if (fputs(text, f) < 0)
            rc = zoff_fail(-EIO, "trace", "write to trace file %s failed", path);
        if (fclose(f) != 0 && !rc)
            rc = zoff_fail(-errno, "trace", "closing trace file %s failed", path);
    }
    cJSON_free(text);
    return rc;
}
