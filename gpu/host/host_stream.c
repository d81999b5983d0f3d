/* Host backend streams and events (see host_backend.h for the model).
 * Threads: the issuing thread appends commands under the stream's lock; the stream's worker
 * pops and runs them with the lock released, then publishes done_seq. Cross-stream waits
 * run on the waiting stream's worker and block on the other stream's condition variable. */
#include "gpu/host/host_backend.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOD "host"

struct host_cmd {
    host_cmd *next;
    uint64_t seq;
    host_cmd_fn fn;
    _Alignas(16) unsigned char payload[];
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* --- reference counting ---------------------------------------------------------------- */

static void stream_retain(host_stream *s) {
    atomic_fetch_add(&s->refs, 1);
}

static void stream_release(host_stream *s) {
    if (atomic_fetch_sub(&s->refs, 1) != 1) return;
    free(s->gemm_scratch);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}

static void event_retain(host_event *e) {
    atomic_fetch_add(&e->refs, 1);
}

static void event_release(host_event *e) {
    if (atomic_fetch_sub(&e->refs, 1) != 1) return;
    if (e->stream) stream_release(e->stream);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

/* Blocks until stream s has finished the command numbered seq. */
static void stream_wait_seq(host_stream *s, uint64_t seq) {
    pthread_mutex_lock(&s->lock);
    while (s->done_seq < seq)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

/* --- the worker ------------------------------------------------------------------------ */

static void *stream_worker(void *arg) {
    host_stream *s = arg;
    /* before any kernel: the threads of the kernels' OpenMP team inherit this mask */
    if (s->hdev->bind) {
        int rc = pthread_setaffinity_np(pthread_self(), sizeof s->hdev->kernel_cpus,
                                        &s->hdev->kernel_cpus);
        if (rc)
            zoff_log(ZOFF_LOG_WARN, MOD, "a stream thread could not bind to the kernel cores: %s",
                     zoff_strerror(-rc));
    }
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cond, &s->lock);
        if (!s->head) break; /* stopped and drained */
        host_cmd *c = s->head;
        s->head = c->next;
        if (!s->head) s->tail = NULL;
        pthread_mutex_unlock(&s->lock);
        c->fn(c->payload);
        pthread_mutex_lock(&s->lock);
        s->done_seq = c->seq;
        pthread_cond_broadcast(&s->cond);
        free(c);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int host_stream_enqueue_seq(host_stream *s, host_cmd_fn fn, const void *payload, size_t size,
                            uint64_t *seq) {
    host_cmd *c = malloc(sizeof *c + size);
    if (!c) return zoff_fail(-ENOMEM, MOD, "no memory to queue a %zu-byte command", size);
    c->next = NULL;
    c->fn = fn;
    if (size) memcpy(c->payload, payload, size);
    pthread_mutex_lock(&s->lock);
    c->seq = ++s->issued_seq;
    if (seq) *seq = c->seq;
    if (s->tail)
        s->tail->next = c;
    else
        s->head = c;
    s->tail = c;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int host_stream_enqueue(host_stream *s, host_cmd_fn fn, const void *payload, size_t size) {
    return host_stream_enqueue_seq(s, fn, payload, size, NULL);
}

int host_stream_create(zoff_dev *dev, void **impl) {
    host_stream *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    atomic_init(&s->refs, 1);
    s->hdev = dev->impl;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    int rc = pthread_create(&s->thread, NULL, stream_worker, s);
    if (rc) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s);
        return zoff_fail(-rc, MOD, "cannot start a stream thread");
    }
    *impl = s;
    return 0;
}

int host_stream_destroy(zoff_dev *dev, void *impl) {
    host_stream *s = impl;
    (void)dev;
    pthread_mutex_lock(&s->lock);
    s->stop = 1; /* the worker drains the queue first */
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    stream_release(s);
    return 0;
}

int host_stream_synchronize(void *impl) {
    host_stream *s = impl;
    pthread_mutex_lock(&s->lock);
    uint64_t seq = s->issued_seq;
    pthread_mutex_unlock(&s->lock);
    stream_wait_seq(s, seq);
    return 0;
}

/* --- events ---------------------------------------------------------------------------- */

int host_event_create(zoff_dev *dev, void **impl) {
    (void)dev;
    host_event *e = calloc(1, sizeof *e);
    if (!e) return -ENOMEM;
    atomic_init(&e->refs, 1);
    pthread_mutex_init(&e->lock, NULL);
    *impl = e;
    return 0;
}

/* A snapshot of an event's current record, with a reference on its stream. */
typedef struct record_ref {
    host_stream *stream; /* NULL: never recorded, complete */
    uint64_t seq;
} record_ref;

static record_ref event_current(host_event *e) {
    pthread_mutex_lock(&e->lock);
    record_ref r = {e->stream, e->seq};
    if (r.stream) stream_retain(r.stream);
    pthread_mutex_unlock(&e->lock);
    return r;
}

int host_event_destroy(void *impl) {
    host_event *e = impl;
    host_event_synchronize(e);
    event_release(e);
    return 0;
}

typedef struct stamp_payload {
    host_event *event;
    uint64_t record_id;
} stamp_payload;

static void run_stamp(void *p) {
    stamp_payload *sp = p;
    uint64_t t = now_ns();
    pthread_mutex_lock(&sp->event->lock);
    if (sp->record_id > sp->event->stamped_id) {
        sp->event->stamped_id = sp->record_id;
        sp->event->stamp_ns = t;
    }
    pthread_mutex_unlock(&sp->event->lock);
    event_release(sp->event);
}

int host_event_record(void *event, void *stream) {
    host_event *e = event;
    host_stream *s = stream;
    /* The record is a timestamp command; its seq is the position the event marks. */
    pthread_mutex_lock(&e->lock);
    uint64_t id = ++e->record_id;
    pthread_mutex_unlock(&e->lock);
    event_retain(e);
    stamp_payload sp = {e, id};
    uint64_t seq;
    int rc = host_stream_enqueue_seq(s, run_stamp, &sp, sizeof sp, &seq);
    if (rc) {
        event_release(e);
        return rc;
    }
    stream_retain(s);
    pthread_mutex_lock(&e->lock);
    host_stream *old = e->stream;
    e->stream = s;
    e->seq = seq;
    pthread_mutex_unlock(&e->lock);
    if (old) stream_release(old);
    return 0;
}

typedef struct wait_payload {
    record_ref rec;
} wait_payload;

static void run_wait(void *p) {
    wait_payload *wp = p;
    stream_wait_seq(wp->rec.stream, wp->rec.seq);
    stream_release(wp->rec.stream);
}

int host_stream_wait_event(void *stream, void *event) {
    wait_payload wp = {event_current(event)};
    if (!wp.rec.stream) return 0; /* never recorded: nothing to wait for */
    int rc = host_stream_enqueue(stream, run_wait, &wp, sizeof wp);
    if (rc) stream_release(wp.rec.stream);
    return rc;
}

int host_event_synchronize(void *event) {
    record_ref r = event_current(event);
    if (!r.stream) return 0;
    stream_wait_seq(r.stream, r.seq);
    stream_release(r.stream);
    return 0;
}

int host_event_query(void *event) {
    record_ref r = event_current(event);
    if (!r.stream) return 0;
    pthread_mutex_lock(&r.stream->lock);
    int done = r.stream->done_seq >= r.seq;
    pthread_mutex_unlock(&r.stream->lock);
    stream_release(r.stream);
    return done ? 0 : -EAGAIN;
}

int host_event_elapsed_ms(void *start, void *end, float *ms) {
    host_event *a = start, *b = end;
    if (host_event_query(a) || host_event_query(b))
        return zoff_fail(-EAGAIN, MOD, "elapsed time of events not yet complete");
    pthread_mutex_lock(&a->lock);
    uint64_t ta = a->stamp_ns, ida = a->record_id, sa = a->stamped_id;
    pthread_mutex_unlock(&a->lock);
    pthread_mutex_lock(&b->lock);
    uint64_t tb = b->stamp_ns, idb = b->record_id, sb = b->stamped_id;
    pthread_mutex_unlock(&b->lock);
    if (!ida || !idb || sa != ida || sb != idb)
        return zoff_fail(-EINVAL, MOD, "elapsed time needs two recorded, completed events");
    *ms = (float)((double)((int64_t)(tb - ta)) / 1e6);
    return 0;
}

typedef struct host_fn_payload {
    zoff_dev_host_fn fn;
    void *arg;
} host_fn_payload;

static void run_host_fn(void *p) {
    host_fn_payload *hp = p;
    hp->fn(hp->arg);
}

int host_launch_host_fn(void *stream, zoff_dev_host_fn fn, void *arg) {
    host_fn_payload hp = {fn, arg};
    return host_stream_enqueue(stream, run_host_fn, &hp, sizeof hp);
}

/* --- counter signals ------------------------------------------------------------------- */

typedef struct value_payload {
    host_device *hdev;
    uint32_t *flag;
    uint32_t value;
} value_payload;

static void write_value(host_device *h, uint32_t *flag, uint32_t value) {
    pthread_mutex_lock(&h->value_lock);
    __atomic_store_n(flag, value, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&h->value_cond);
    pthread_mutex_unlock(&h->value_lock);
}

static void wait_value(host_device *h, const uint32_t *flag, uint32_t value) {
    pthread_mutex_lock(&h->value_lock);
    while ((int32_t)(__atomic_load_n(flag, __ATOMIC_ACQUIRE) - value) < 0)
        pthread_cond_wait(&h->value_cond, &h->value_lock);
    pthread_mutex_unlock(&h->value_lock);
}

static void run_wait_value(void *p) {
    value_payload *vp = p;
    wait_value(vp->hdev, vp->flag, vp->value);
}

int host_host_wait_value(zoff_dev *dev, const uint32_t *flag, uint32_t value) {
    wait_value(dev->impl, flag, value);
    return 0;
}

static void run_write_value(void *p) {
    value_payload *vp = p;
    write_value(vp->hdev, vp->flag, vp->value);
}

int host_stream_wait_value(void *stream, const uint32_t *flag, uint32_t value) {
    host_stream *s = stream;
    value_payload vp = {s->hdev, (uint32_t *)flag, value};
    return host_stream_enqueue(s, run_wait_value, &vp, sizeof vp);
}

int host_stream_write_value(void *stream, uint32_t *flag, uint32_t value) {
    host_stream *s = stream;
    value_payload vp = {s->hdev, flag, value};
    return host_stream_enqueue(s, run_write_value, &vp, sizeof vp);
}

int host_host_write_value(zoff_dev *dev, uint32_t *flag, uint32_t value) {
    write_value(dev->impl, flag, value);
    return 0;
}
