/* Model training through the offload engine (see model_offload.h). Runs on the trainer's
 * thread and stream; every wait on the engine is stream-side. */
#include "model/model_offload.h"
#include "core/log.h"
#include "gpu/dist.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MOD "model-offload"

struct zoff_model_offload {
    zoff_model *m;
    zoff_dev *dev;
    zoff_dev_stream *s;
    const zoff_layout *layout;
    zoff_engine *engine;
    int *group_first, *group_count; /* tensors of each layer group */
    int resumed_step;               /* optimizer steps of the state load_state restored */
    int rank;                       /* in the job's world (0: writes checkpoints) */
};

/* Before a group's reads: streamed weights, the engine makes it resident and says where. */
static int group_needed(void *ctx, int group, zoff_dev_stream *s) {
    zoff_model_offload *o = ctx;
    void *base = NULL;
    int rc = zoff_engine_acquire_group(o->engine, (size_t)group, s, &base);
    if (!rc) zoff_model_set_group_weights(o->m, group, base);
    return rc;
}

/* Before a group's forward: the stream waits for its weights. */
static int params_needed(void *ctx, int group, zoff_dev_stream *s) {
    zoff_model_offload *o = ctx;
    int first = o->group_first[group], n = o->group_count[group];
    for (int t = first; t < first + n; t++) {
        int rc = zoff_engine_wait_params(o->engine, (size_t)t, s);
        if (rc) return rc;
    }
    return 0;
}

static int grad_buffer(void *ctx, int tensor, zoff_dev_stream *s, void **grad) {
    zoff_model_offload *o = ctx;
    return zoff_engine_grad_buffer(o->engine, (size_t)tensor, s, grad);
}

static int grad_done(void *ctx, int tensor, zoff_dev_stream *s) {
    zoff_model_offload *o = ctx;
    return zoff_engine_grad_done(o->engine, (size_t)tensor, s);
}

int zoff_model_offload_tensors(const zoff_model *m, zoff_engine_tensor **out) {
    const zoff_layout *L = zoff_model_get_layout(m);
    zoff_engine_tensor *tens = calloc((size_t)L->n_tensors, sizeof *tens);
    if (!tens) return -ENOMEM;
    for (int t = 0; t < L->n_tensors; t++) {
        const zoff_tensor *ten = &L->tensors[t];
        tens[t] = (zoff_engine_tensor){ten->name, ten->offset, ten->numel, ten->layer,
                                       !ten->weight_decay};
    }
    *out = tens;
    return 0;
}

size_t zoff_model_offload_auto_bucket(size_t weight_bytes) {
    size_t b = weight_bytes / 8, lo = (size_t)1 << 20, hi = (size_t)32 << 20;
    b = b < lo ? lo : b > hi ? hi : b;
    return (b + 4095) / 4096 * 4096;
}

int zoff_model_offload_plan(const zoff_layout *L, zoff_dtype weight_dtype,
                            const zoff_engine_config *cfg, zoff_device_plan *plan) {
    zoff_engine_tensor *tens = calloc((size_t)L->n_tensors, sizeof *tens);
    if (!tens) return -ENOMEM;
    for (int t = 0; t < L->n_tensors; t++)
        tens[t] = (zoff_engine_tensor){L->tensors[t].name, L->tensors[t].offset,
                                       L->tensors[t].numel, L->tensors[t].layer, 0};
    zoff_engine_config ec = *cfg;
    ec.dtype = weight_dtype;
    ec.n_groups = (size_t)L->n_groups; /* streamed: buckets stay inside groups */
    ec.group_begin = L->group_begin;
    int rc = zoff_engine_plan_device_bytes(&ec, tens, (size_t)L->n_tensors, &plan->buckets);
    free(tens);
    if (!rc && cfg->params != ZOFF_PARAMS_DEVICE) {
        /* the model allocates no weights: the weights term is the engine's ring and resident
         * groups */
        size_t bytes = 0;
        rc = zoff_engine_plan_param_bytes(&ec, &bytes);
        plan->weights = bytes;
    }
    zoff_device_plan_sum(plan);
    return rc;
}

int zoff_model_offload_create(zoff_model *m, zoff_dev_stream *s, const zoff_engine_config *cfg,
                              const float *init_master, zoff_model_offload **out) {
    zoff_model_offload *o = calloc(1, sizeof *o);
    if (!o) return -ENOMEM;
    o->m = m;
    o->dev = zoff_model_get_dev(m);
    o->s = s;
    o->layout = zoff_model_get_layout(m);
    o->rank = zoff_dist_rank(cfg->dist);
    /* the exchange format is the model's weight format: the engine updates the very weights
     * the model reads */
    zoff_engine_config ec = *cfg;
    ec.dtype = zoff_model_weight_dtype(m);
    const zoff_layout *L = o->layout;
    float *widened = NULL;
    zoff_engine_tensor *tens = NULL;
    o->group_first = calloc((size_t)L->n_groups, sizeof(int));
    o->group_count = calloc((size_t)L->n_groups, sizeof(int));
    int rc = (!o->group_first || !o->group_count) ? -ENOMEM : 0;
    if (!rc) rc = zoff_model_offload_tensors(m, &tens);
    for (int t = 0; !rc && t < L->n_tensors; t++)
        if (o->group_count[L->tensors[t].group]++ == 0) o->group_first[L->tensors[t].group] = t;
    bool streamed = cfg->params != ZOFF_PARAMS_DEVICE;
    if (!rc && streamed != (zoff_model_weights(m) == NULL))
        rc = zoff_fail(ZOFF_ECONFIG, MOD,
                       streamed ? "streamed weights (params cpu/nvme) need a model created with "
                                  "stream_weights"
                                : "a model created with stream_weights needs params cpu or nvme");
    if (!rc && streamed && !init_master)
        rc = zoff_fail(ZOFF_ECONFIG, MOD, "streamed weights need the initial master weights");
    ec.n_groups = (size_t)L->n_groups;
    ec.group_begin = L->group_begin;
    if (!rc && !streamed && !init_master) {
        if (!(widened = malloc(L->total * sizeof(float))))
            rc = -ENOMEM;
        else
            rc = zoff_model_params_to_host(m, widened);
        init_master = widened;
    }
    /* the device weights start as the master's rounding */
    if (!rc && !streamed && widened != init_master)
        rc = zoff_model_params_from_host(m, init_master);
    if (!rc)
        rc = zoff_engine_create(o->dev, &ec, zoff_model_weights(m), L->total, tens,
                                (size_t)L->n_tensors, init_master, &o->engine);
    free(widened);
    free(tens);
    if (rc) {
        zoff_model_offload_destroy(o);
        return rc;
    }
    zoff_grad_sink sink = {.dtype = ec.dtype, .buffer = grad_buffer, .done = grad_done, .ctx = o};
    zoff_model_set_grad_sink(m, &sink);
    zoff_model_set_params_needed_hook(m, streamed ? group_needed : params_needed, o);
    *out = o;
    return 0;
}

zoff_engine *zoff_model_offload_engine(zoff_model_offload *o) {
    return o->engine;
}

int zoff_model_offload_micro_batch(zoff_model_offload *o, const zoff_batch *b, float *loss) {
    float scale = 1.0f;
    int rc = zoff_engine_loss_scale(o->engine, &scale);
    if (rc) return rc;
    int span = zoff_engine_trace_begin(o->engine, o->s, "forward+backward");
    rc = zoff_model_forward_backward(o->m, o->s, b, scale, NULL);
    zoff_engine_trace_end(o->engine, o->s, span);
    if (!rc) rc = zoff_engine_end_micro(o->engine, o->s);
    /* read once the whole micro-batch is queued: the wait ends with the forward, while the
     * backward and the engine's copies still run */
    if (!rc && loss) rc = zoff_model_loss_wait(o->m, o->s, loss);
    return rc;
}

int zoff_model_offload_get_master(zoff_model_offload *o, float *dst) {
    return zoff_engine_get_master(o->engine, o->s, dst);
}

int zoff_model_offload_save_state(zoff_model_offload *o, const char *path, float *master) {
    if (o->rank != 0) /* several ranks: the others send their blocks to rank 0, which writes */
        return zoff_engine_save_state(o->engine, o->s, NULL, NULL, NULL, NULL, NULL);
    size_t n = o->layout->total;
    float *buf = malloc(2 * n * sizeof(float));
    if (!buf) return -ENOMEM;
    int64_t updates = 0;
    float scale = 1.0f;
    int rc = zoff_engine_save_state(o->engine, o->s, master, buf, buf + n, &updates, &scale);
    if (!rc) rc = zoff_optimizer_state_save(path, buf, buf + n, n, (int)updates, scale);
    free(buf);
    return rc;
}

int zoff_model_offload_load_state(zoff_model_offload *o, const char *path) {
    size_t n = o->layout->total;
    float *buf = malloc(2 * n * sizeof(float));
    if (!buf) return -ENOMEM;
    int updates = 0;
    float scale = 1.0f;
    int rc = zoff_optimizer_state_load(path, buf, buf + n, n, &updates, &scale);
    if (!rc) rc = zoff_engine_load_state(o->engine, o->s, buf, buf + n, updates, scale);
    if (!rc) o->resumed_step = updates;
    free(buf);
    return rc;
}

int zoff_model_offload_resumed_step(const zoff_model_offload *o) {
    return o->resumed_step;
}

int zoff_model_offload_finish(zoff_model_offload *o) {
    int rc = zoff_engine_flush(o->engine, o->s);
    zoff_model_offload_destroy(o);
    return rc;
}

void zoff_model_offload_destroy(zoff_model_offload *o) {
    if (!o) return;
    zoff_model_set_params_needed_hook(o->m, NULL, NULL);
    zoff_model_set_grad_sink(o->m, NULL);
    if (!zoff_model_weights(o->m)) /* streamed: the engine's ring goes away */
        for (int g = 0; g < o->layout->n_groups; g++)
            zoff_model_set_group_weights(o->m, g, NULL);
    zoff_engine_destroy(o->engine);
    free(o->group_first);
    free(o->group_count);
    free(o);
}
