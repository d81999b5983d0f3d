/* Activation offload (zoff_model_options.offload_activations, with activation checkpointing):
 * the kept block inputs (an architecture's fp32 residual stream between blocks, kept i being the
 * input of layer group i+1 and the output of group i) live in pinned CPU memory, and the device
 * holds KEPT_SLOTS of them: kept i is always in slot i % KEPT_SLOTS.
 *
 * Forward, before group g's work is issued: kept g-1 is complete, so its copy to the host is
 * queued on the model's copy stream (behind an event on the compute stream); group g will
 * write kept g into a slot whose previous copy out must be done first (the compute stream waits
 * for its event). Backward, before group g (which reads kept g-1 and, recomputing, writes
 * kept g): kept g-1 comes back from the host unless the slot still holds it (the last
 * KEPT_SLOTS of the forward do), and kept g-2 and g-3 are fetched ahead, each once the compute
 * stream is done with what the slot held. KEPT_SLOTS = 4: the input, the output and the two
 * fetched ahead are in distinct slots.
 *
 * Threads: the model's thread only; its work goes to the compute stream given and to the
 * model's own copy stream. */
#include "core/log.h"
#include "model/model_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MOD        "model"
#define KEPT_SLOTS 4
#define KEPT_AHEAD 2

struct model_kept {
    float **res; /* the architecture's table: res[i] = slot (i % KEPT_SLOTS) */
    size_t n, bytes;
    void *host; /* (n, bytes) pinned */
    zoff_dev_stream *copy;
    zoff_dev_event *cready[KEPT_SLOTS]; /* compute stream: done with what the slot held */
    zoff_dev_event *d2h_done[KEPT_SLOTS], *h2d_done[KEPT_SLOTS];
    bool d2h_any[KEPT_SLOTS], h2d_pending[KEPT_SLOTS];
    long long holds[KEPT_SLOTS]; /* kept index whose data the slot holds, -1 none */
    uint64_t d2h_bytes, h2d_bytes;
};

size_t model_kept_count(const zoff_model *m, size_t n) {
    return m->opt.offload_activations && n > KEPT_SLOTS ? KEPT_SLOTS : n;
}

int model_kept_register(zoff_model *m, float **res, size_t n, float *base, size_t bytes) {
    if (m->opt.offload_activations && !m->opt.activation_checkpoint)
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "offload_activations sends the kept block inputs of activation "
                         "checkpointing to the host: it needs activation_checkpoint");
    size_t slots = model_kept_count(m, n), stride = bytes / sizeof(float);
    for (size_t i = 0; !m->counting && i < n; i++)
        res[i] = base + (i % slots) * stride;
    if (!m->opt.offload_activations || m->counting) return 0;
    model_kept *k = calloc(1, sizeof *k);
    if (!k) return -ENOMEM;
    m->kept = k;
    k->res = res;
    k->n = n;
    k->bytes = bytes;
    int rc = zoff_dev_host_alloc(m->dev, n * bytes, &k->host);
    if (rc)
        return zoff_fail(rc, MOD, "cannot allocate %zu bytes of pinned memory for activations",
                         n * bytes);
    if ((rc = zoff_dev_stream_create(m->dev, &k->copy))) return rc;
    for (int s = 0; s < KEPT_SLOTS; s++) {
        k->holds[s] = -1;
        if ((rc = zoff_dev_event_create(m->dev, &k->cready[s]))) return rc;
        if ((rc = zoff_dev_event_create(m->dev, &k->d2h_done[s]))) return rc;
        if ((rc = zoff_dev_event_create(m->dev, &k->h2d_done[s]))) return rc;
    }
    return 0;
}

void model_kept_free(zoff_model *m) {
    model_kept *k = m->kept;
    if (!k) return;
    if (k->copy) zoff_dev_stream_destroy(k->copy);
    for (int s = 0; s < KEPT_SLOTS; s++) {
        if (k->cready[s]) zoff_dev_event_destroy(k->cready[s]);
        if (k->d2h_done[s]) zoff_dev_event_destroy(k->d2h_done[s]);
        if (k->h2d_done[s]) zoff_dev_event_destroy(k->h2d_done[s]);
    }
    if (k->host) zoff_dev_host_free(m->dev, k->host);
    free(k);
    m->kept = NULL;
}

static char *host_of(model_kept *k, size_t i) {
    return (char *)k->host + i * k->bytes;
}

/* Kept i back from the host into its slot, once s is done with what the slot holds. */
static int fetch(model_kept *k, zoff_dev_stream *s, size_t i) {
    int slot = (int)(i % KEPT_SLOTS);
    MODEL_TRY(zoff_dev_event_record(k->cready[slot], s));
    MODEL_TRY(zoff_dev_stream_wait_event(k->copy, k->cready[slot]));
    MODEL_TRY(zoff_dev_memcpy_async(k->copy, k->res[i], host_of(k, i), k->bytes, ZOFF_COPY_H2D));
    MODEL_TRY(zoff_dev_event_record(k->h2d_done[slot], k->copy));
    k->holds[slot] = (long long)i;
    k->h2d_pending[slot] = true;
    k->h2d_bytes += k->bytes;
    return 0;
}

int model_kept_hook(zoff_model *m, zoff_dev_stream *s, int group) {
    model_kept *k = m->kept;
    if (!k || group < 0 || m->kept_phase == 0) return 0;
    size_t g = (size_t)group;
    if (m->kept_phase == 1) {         /* forward */
        if (g >= 1 && g - 1 < k->n) { /* kept g-1 is complete: to the host */
            int slot = (int)((g - 1) % KEPT_SLOTS);
            MODEL_TRY(zoff_dev_event_record(k->cready[slot], s));
            MODEL_TRY(zoff_dev_stream_wait_event(k->copy, k->cready[slot]));
            MODEL_TRY(zoff_dev_memcpy_async(k->copy, host_of(k, g - 1), k->res[g - 1], k->bytes,
                                            ZOFF_COPY_D2H));
            MODEL_TRY(zoff_dev_event_record(k->d2h_done[slot], k->copy));
            k->d2h_any[slot] = true;
            k->d2h_bytes += k->bytes;
        }
        if (g < k->n) { /* group g writes kept g: the slot's copy out must be done */
            int slot = (int)(g % KEPT_SLOTS);
            if (k->d2h_any[slot]) MODEL_TRY(zoff_dev_stream_wait_event(s, k->d2h_done[slot]));
            k->holds[slot] = (long long)g;
            k->h2d_pending[slot] = false;
        }
        return 0;
    }
    /* backward: group g reads kept g-1 (and recomputing, writes kept g into its own slot) */
    if (g == 0 || g - 1 >= k->n) return 0;
    size_t i = g - 1;
    int slot = (int)(i % KEPT_SLOTS);
    if (k->holds[slot] != (long long)i) MODEL_TRY(fetch(k, s, i));
    if (k->h2d_pending[slot]) {
        MODEL_TRY(zoff_dev_stream_wait_event(s, k->h2d_done[slot]));
        k->h2d_pending[slot] = false;
    }
    for (size_t a = 1; a <= KEPT_AHEAD && a <= i; a++) {
        size_t j = i - a;
        if (k->holds[j % KEPT_SLOTS] != (long long)j) MODEL_TRY(fetch(k, s, j));
    }
    return 0;
}

void zoff_model_activation_traffic(const zoff_model *m, uint64_t *d2h, uint64_t *h2d) {
    *d2h = m->kept ? m->kept->d2h_bytes : 0;
    *h2d = m->kept ? m->kept->h2d_bytes : 0;
}
