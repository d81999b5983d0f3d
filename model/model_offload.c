/* GPT training through the offload engine (see gpt_offload.h). Runs on the trainer's thread
 * and stream; every wait on the engine is stream-side. */
#include "model/model_offload.h"
#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MOD "gpt-offload"

struct zoff_model_offload {
    zoff_model *m;
    zoff_dev *dev;
    zoff_dev_stream *s;
    const zoff_layout *layout;
    zoff_engine *engine;
    zoff_dtype dtype;
    void *weights16; /* the model's 16-bit GEMM weights, which the engine updates; NULL in f32 */
    int *group_first, *group_count; /* tensors of each layer group */
    int status;                     /* first error raised inside a model hook */
    int resumed_step;               /* optimizer steps of the state load_state restored */
};

/* Before a group's forward: wait for its weights, then widen them into the model's. */
static void params_needed(void *ctx, int group, zoff_dev_stream *s) {
    zoff_model_offload *o = ctx;
    if (o->status) return;
    int first = o->group_first[group], n = o->group_count[group];
    for (int t = first; t < first + n && !o->status; t++)
        o->status = zoff_engine_wait_params(o->engine, (size_t)t, s);
    if (o->status || !o->weights16) return;
    size_t begin = o->layout->group_begin[group], end = o->layout->group_begin[group + 1];
    o->status = zoff_dev_op_cast(s, zoff_model_params(o->m) + begin, ZOFF_F32,
                                 (char *)o->weights16 + begin * zoff_dtype_size(o->dtype), o->dtype,
                                 end - begin);
}

/* A group's gradients are complete: narrow them into the engine's buckets. */
static void grads_ready(void *ctx, int group, zoff_dev_stream *s) {
    zoff_model_offload *o = ctx;
    if (o->status) return;
    const float *grads = zoff_model_grads(o->m);
    int first = o->group_first[group], n = o->group_count[group];
    for (int t = first; t < first + n && !o->status; t++) {
        const zoff_tensor *ten = &o->layout->tensors[t];
        void *dst;
        o->status = zoff_engine_grad_buffer(o->engine, (size_t)t, s, &dst);
        if (!o->status)
            o->status =
                zoff_dev_op_cast(s, dst, o->dtype, grads + ten->offset, ZOFF_F32, ten->numel);
        if (!o->status) o->status = zoff_engine_grad_done(o->engine, (size_t)t, s);
    }
}

int zoff_model_offload_create(zoff_model *m, zoff_dev_stream *s, const zoff_engine_config *cfg,
                            zoff_model_offload **out) {
    zoff_model_offload *o = calloc(1, sizeof *o);
    if (!o) return -ENOMEM;
    o->m = m;
    o->dev = zoff_model_get_dev(m);
    o->s = s;
    o->layout = zoff_model_get_layout(m);
    /* the exchange format is the model's GEMM format: the engine updates the very 16-bit
     * weights the GEMMs read (or, in f32, the model's weights) */
    zoff_engine_config ec = *cfg;
    ec.dtype = o->dtype = zoff_model_get_options(m)->matmul_dtype;
    const zoff_layout *L = o->layout;
    size_t total = L->total;
    float *master = malloc(total * sizeof(float));
    zoff_engine_tensor *tens = calloc((size_t)L->n_tensors, sizeof *tens);
    o->group_first = calloc((size_t)L->n_groups, sizeof(int));
    o->group_count = calloc((size_t)L->n_groups, sizeof(int));
    int rc = (!master || !tens || !o->group_first || !o->group_count) ? -ENOMEM : 0;
    if (!rc) rc = zoff_model_params_to_host(m, master);
    for (int t = 0; !rc && t < L->n_tensors; t++) {
        const zoff_tensor *ten = &L->tensors[t];
        tens[t] = (zoff_engine_tensor){ten->name, ten->offset, ten->numel, ten->layer,
                                       !ten->weight_decay};
        if (o->group_count[ten->group]++ == 0) o->group_first[ten->group] = t;
    }
    void *dparams = zoff_model_params(m);
    if (!rc && o->dtype != ZOFF_F32) {
        o->weights16 = dparams = zoff_gpt_params16(m);
        rc = zoff_dev_op_cast(s, dparams, o->dtype, zoff_model_params(m), ZOFF_F32, total);
        if (!rc) rc = zoff_dev_stream_synchronize(s);
    }
    if (!rc)
        rc = zoff_engine_create(o->dev, &ec, dparams, total, tens, (size_t)L->n_tensors, master,
                                &o->engine);
    free(master);
    free(tens);
    if (rc) {
        zoff_model_offload_destroy(o);
        return rc;
    }
    if (o->weights16) zoff_gpt_set_params16_external(m, true);
    zoff_model_set_params_needed_hook(m, params_needed, o);
    zoff_gpt_set_grad_ready_hook(m, grads_ready, o);
    *out = o;
    return 0;
}

zoff_engine *zoff_model_offload_engine(zoff_model_offload *o) {
    return o->engine;
}

int zoff_model_offload_micro_batch(zoff_model_offload *o, const int32_t *tokens, const int32_t *targets,
                                 int B, int T, float *loss) {
    float scale = 1.0f;
    int rc = zoff_engine_loss_scale(o->engine, &scale);
    if (!rc) rc = zoff_model_zero_grads(o->m, o->s); /* the engine accumulates on the CPU */
    int span = zoff_engine_trace_begin(o->engine, o->s, "forward");
    if (!rc) rc = zoff_model_forward(o->m, o->s, tokens, targets, B, T, loss);
    zoff_engine_trace_end(o->engine, o->s, span);
    span = zoff_engine_trace_begin(o->engine, o->s, "backward");
    if (!rc) rc = zoff_model_backward(o->m, o->s, scale);
    zoff_engine_trace_end(o->engine, o->s, span);
    if (!rc) rc = o->status;
    if (!rc) rc = zoff_engine_end_micro(o->engine, o->s);
    return rc;
}

int zoff_model_offload_sync_model(zoff_model_offload *o) {
    float *master = malloc(o->layout->total * sizeof(float));
    if (!master) return -ENOMEM;
    int rc = zoff_engine_get_master(o->engine, o->s, master);
    if (!rc) rc = zoff_model_params_from_host(o->m, master);
    free(master);
    return rc;
}

int zoff_model_offload_save_state(zoff_model_offload *o, const char *path) {
    size_t n = o->layout->total;
    float *buf = malloc(3 * n * sizeof(float));
    if (!buf) return -ENOMEM;
    int64_t updates = 0;
    float scale = 1.0f;
    int rc = zoff_engine_save_state(o->engine, o->s, buf, buf + n, buf + 2 * n, &updates, &scale);
    if (!rc) rc = zoff_model_params_from_host(o->m, buf);
    if (!rc) rc = zoff_optimizer_state_save(path, buf + n, buf + 2 * n, n, (int)updates, scale);
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
    int rc = zoff_model_offload_sync_model(o);
    zoff_model_offload_destroy(o);
    return rc;
}

void zoff_model_offload_destroy(zoff_model_offload *o) {
    if (!o) return;
    zoff_model_set_params_needed_hook(o->m, NULL, NULL);
    zoff_gpt_set_grad_ready_hook(o->m, NULL, NULL);
    zoff_engine_destroy(o->engine);
    zoff_gpt_set_params16_external(o->m, false);
    free(o->group_first);
    free(o->group_count);
    free(o);
}
