/* The reference trainer: plain AdamW on the device, no offload. It keeps what mixed-precision
 * training needs on the device: fp32 master weights (the model's own in f32 mode, a copy in
 * 16-bit mode, rounded into the model's 16-bit weights after each step), the model's flat fp32
 * gradient buffer, and the moments. It is split into the two
 * phases the offload engine needs to separate: compute_grads (zero, forward, backward into
 * the flat gradient buffer) and optimizer_step (norm and inf/nan check, clip, schedule, then
 * the step, which a hook may take over). fp16 dynamic loss scaling: the loss gradient is
 * multiplied by the scale, gradients are un-scaled through grad_scale, and a step with
 * non-finite gradients is skipped and halves the scale. */
#include "model/model.h"
#include "core/log.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MOD "trainer"

struct zoff_trainer {
    zoff_model *m;
    zoff_dev_stream *s;
    zoff_trainer_config cfg;
    float *master;    /* device, layout.total: the model's weights (f32) or the trainer's copy */
    bool own_master;
    float *mom, *var; /* device, layout.total each; allocated on first built-in step */
    float *d_sumsq;   /* device (2) */
    float *h_sumsq;   /* pinned (2) */
    int step;         /* steps taken */
    double loss_sum;  /* over the current step's micro-batches */
    int n_micro;
    float loss_scale;
    int good_steps; /* since the last overflow */
    zoff_optimizer_step_fn hook;
    void *hook_ctx;
};

void zoff_trainer_config_default(zoff_trainer_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    zoff_optimizer_defaults d = zoff_optimizer_get_defaults(); /* shared with the engine */
    cfg->lr = d.lr;
    cfg->min_lr_frac = 0.1f;
    cfg->warmup_steps = 20;
    cfg->total_steps = 1000;
    cfg->beta1 = d.beta1;
    cfg->beta2 = d.beta2;
    cfg->eps = d.eps;
    cfg->weight_decay = d.weight_decay;
    cfg->grad_clip = d.grad_clip;
    cfg->loss_scale_init = d.loss_scale_init;
    cfg->loss_scale_window = d.loss_scale_window;
}

float zoff_trainer_lr_at(const zoff_trainer_config *c, int step) {
    /* step is 1-based: linear warm-up to lr, then cosine decay to lr * min_lr_frac */
    if (c->warmup_steps > 0 && step <= c->warmup_steps)
        return c->lr * (float)step / (float)c->warmup_steps;
    int span = c->total_steps - c->warmup_steps;
    if (span <= 0) return c->lr;
    float frac = (float)(step - c->warmup_steps) / (float)span;
    if (frac > 1.0f) frac = 1.0f;
    float coeff = 0.5f * (1.0f + cosf(3.14159265f * frac));
    float min_lr = c->lr * c->min_lr_frac;
    return min_lr + coeff * (c->lr - min_lr);
}

/* f32: the model's weights are the master. 16-bit: a device copy from `master` (host fp32) or,
 * without one, from the model's weights widened. */
static int init_master(zoff_trainer *tr, const float *master) {
    zoff_model *m = tr->m;
    if (!zoff_model_weights(m))
        return zoff_fail(ZOFF_ECONFIG, "trainer",
                         "the reference trainer needs the model's weights on the device: create "
                         "the model without stream_weights");
    if (zoff_model_weight_dtype(m) == ZOFF_F32) {
        tr->master = zoff_model_weights(m);
        return master ? zoff_model_params_from_host(m, master) : 0;
    }
    size_t n = zoff_model_get_layout(m)->total;
    zoff_dev *dev = zoff_model_get_dev(m);
    int rc = zoff_dev_malloc(dev, n * sizeof(float), (void **)&tr->master);
    if (rc) return rc;
    tr->own_master = true;
    float *h = NULL;
    if (!master) {
        if (!(h = malloc(n * sizeof *h))) return -ENOMEM;
        rc = zoff_model_params_to_host(m, h);
        master = h;
    }
    if (!rc) rc = zoff_dev_memcpy(dev, tr->master, master, n * sizeof(float), ZOFF_COPY_H2D);
    if (!rc && !h) rc = zoff_model_params_from_host(m, master);
    free(h);
    return rc;
}

int zoff_trainer_master_to_host(zoff_trainer *tr, float *dst) {
    int rc = zoff_dev_stream_synchronize(tr->s);
    return rc ? rc
              : zoff_dev_memcpy(zoff_model_get_dev(tr->m), dst, tr->master,
                                zoff_model_get_layout(tr->m)->total * sizeof(float),
                                ZOFF_COPY_D2H);
}

int zoff_trainer_create(zoff_model *m, zoff_dev_stream *s, const zoff_trainer_config *cfg,
                        const float *master, zoff_trainer **out) {
    if (!m || !s || !out) return -EINVAL;
    zoff_trainer_config def;
    if (!cfg) {
        zoff_trainer_config_default(&def);
        cfg = &def;
    }
    if (!(cfg->lr > 0.0f) || !(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) ||
        !(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f) || !(cfg->eps > 0.0f) || cfg->total_steps < 1 ||
        cfg->warmup_steps < 0 || !(cfg->grad_clip >= 0.0f))
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "invalid optimizer settings (lr %g, betas %g %g, eps %g, steps %d, "
                         "warmup %d, clip %g)",
                         cfg->lr, cfg->beta1, cfg->beta2, cfg->eps, cfg->total_steps,
                         cfg->warmup_steps, cfg->grad_clip);
    zoff_trainer *tr = calloc(1, sizeof *tr);
    if (!tr) return -ENOMEM;
    tr->m = m;
    tr->s = s;
    tr->cfg = *cfg;
    tr->loss_scale =
        zoff_model_get_options(m)->matmul_dtype == ZOFF_F16 ? cfg->loss_scale_init : 1.0f;
    zoff_dev *dev = zoff_model_get_dev(m);
    int rc = zoff_dev_malloc(dev, 2 * sizeof(float), (void **)&tr->d_sumsq);
    if (!rc) rc = zoff_dev_host_alloc(dev, 2 * sizeof(float), (void **)&tr->h_sumsq);
    if (!rc) rc = zoff_model_alloc_grads(m);
    if (!rc) rc = init_master(tr, master);
    if (rc) {
        zoff_trainer_destroy(tr);
        return rc;
    }
    *out = tr;
    return 0;
}

void zoff_trainer_destroy(zoff_trainer *tr) {
    if (!tr) return;
    zoff_dev *dev = zoff_model_get_dev(tr->m);
    zoff_dev_stream_synchronize(tr->s);
    if (tr->own_master) zoff_dev_free(dev, tr->master);
    zoff_dev_free(dev, tr->mom);
    zoff_dev_free(dev, tr->var);
    zoff_dev_free(dev, tr->d_sumsq);
    zoff_dev_host_free(dev, tr->h_sumsq);
    free(tr);
}

void zoff_trainer_set_optimizer(zoff_trainer *tr, zoff_optimizer_step_fn fn, void *ctx) {
    tr->hook = fn;
    tr->hook_ctx = ctx;
}

int zoff_trainer_get_step(const zoff_trainer *tr) {
    return tr->step;
}

int zoff_trainer_compute_grads(zoff_trainer *tr, const zoff_batch *b, bool first_micro_batch,
                               float *loss) {
    int rc;
    if (first_micro_batch) {
        tr->loss_sum = 0.0;
        tr->n_micro = 0;
        if ((rc = zoff_model_zero_grads(tr->m, tr->s))) return rc;
    }
    float l = 0.0f;
    if ((rc = zoff_model_forward_backward(tr->m, tr->s, b, tr->loss_scale, &l))) return rc;
    tr->loss_sum += l;
    tr->n_micro++;
    if (loss) *loss = l;
    return 0;
}

static int ensure_moments(zoff_trainer *tr, size_t total);

/* The built-in step: device AdamW per tensor (weight decay only where the layout says). */
static int builtin_adamw(zoff_trainer *tr, const zoff_optimizer_step_args *a) {
    size_t total = a->layout->total;
    int rc = ensure_moments(tr, total);
    if (rc) return rc;
    for (int i = 0; i < a->layout->n_tensors; i++) {
        const zoff_tensor *t = &a->layout->tensors[i];
        zoff_dev_adamw_args h = {.lr = a->lr,
                                 .beta1 = tr->cfg.beta1,
                                 .beta2 = tr->cfg.beta2,
                                 .eps = tr->cfg.eps,
                                 .weight_decay = t->weight_decay ? tr->cfg.weight_decay : 0.0f,
                                 .grad_scale = a->grad_scale,
                                 .step = a->step};
        rc = zoff_dev_op_adamw(tr->s, a->params + t->offset, a->grads + t->offset,
                               tr->mom + t->offset, tr->var + t->offset, t->numel, &h);
        if (rc) return rc;
    }
    return 0;
}

int zoff_trainer_optimizer_step(zoff_trainer *tr, zoff_step_stats *stats) {
    const zoff_layout *layout = zoff_model_get_layout(tr->m);
    float *grads = zoff_model_grads(tr->m);
    int rc = zoff_dev_op_sumsq_nonfinite(tr->s, grads, ZOFF_F32, layout->total, tr->d_sumsq);
    if (!rc)
        rc = zoff_dev_memcpy_async(tr->s, tr->h_sumsq, tr->d_sumsq, 2 * sizeof(float),
                                   ZOFF_COPY_D2H);
    if (!rc) rc = zoff_dev_stream_synchronize(tr->s);
    if (rc) return rc;
    int n_micro = tr->n_micro > 0 ? tr->n_micro : 1;
    /* grads hold the sum over micro-batches of loss_scale * d(mean loss): un-scale to the mean */
    float unscale = 1.0f / (tr->loss_scale * (float)n_micro);
    float norm = sqrtf(tr->h_sumsq[0]) * unscale;
    bool nonfinite = tr->h_sumsq[1] != 0.0f || !isfinite(norm);
    zoff_step_stats st = {.loss = (float)(tr->loss_sum / n_micro),
                          .grad_norm = norm,
                          .lr = 0.0f,
                          .loss_scale = tr->loss_scale,
                          .skipped = false};
    if (nonfinite) {
        st.skipped = true;
        if (zoff_model_get_options(tr->m)->matmul_dtype == ZOFF_F16) {
            tr->loss_scale = fmaxf(tr->loss_scale * 0.5f, 1.0f);
            tr->good_steps = 0;
            zoff_log(ZOFF_LOG_DEBUG, MOD, "non-finite gradients: step skipped, loss scale %g",
                     tr->loss_scale);
        } else {
            zoff_log(ZOFF_LOG_WARN, MOD, "non-finite gradients at step %d: step skipped",
                     tr->step + 1);
        }
        if (stats) *stats = st;
        return 0;
    }
    float clip = 1.0f;
    if (tr->cfg.grad_clip > 0.0f && norm > tr->cfg.grad_clip) clip = tr->cfg.grad_clip / norm;
    int step = tr->step + 1;
    st.lr = zoff_trainer_lr_at(&tr->cfg, step);
    zoff_optimizer_step_args a = {.params = tr->master,
                                  .grads = grads,
                                  .layout = layout,
                                  .step = step,
                                  .lr = st.lr,
                                  .grad_scale = unscale * clip,
                                  .cfg = &tr->cfg};
    rc = tr->hook ? tr->hook(tr->hook_ctx, tr->s, &a) : builtin_adamw(tr, &a);
    /* 16-bit: the model's weights are the master's rounding */
    if (!rc && tr->own_master)
        rc = zoff_dev_op_cast(tr->s, zoff_model_weights(tr->m), zoff_model_weight_dtype(tr->m),
                              tr->master, ZOFF_F32, layout->total);
    if (rc) return rc;
    tr->step = step;
    if (zoff_model_get_options(tr->m)->matmul_dtype == ZOFF_F16 &&
        ++tr->good_steps >= tr->cfg.loss_scale_window) {
        tr->loss_scale *= 2.0f;
        tr->good_steps = 0;
    }
    if (stats) *stats = st;
    return 0;
}

int zoff_trainer_step(zoff_trainer *tr, const zoff_batch *b, zoff_step_stats *stats) {
    int rc = zoff_trainer_compute_grads(tr, b, true, NULL);
    return rc ? rc : zoff_trainer_optimizer_step(tr, stats);
}

static int ensure_moments(zoff_trainer *tr, size_t total) {
    if (tr->mom) return 0;
    zoff_dev *dev = zoff_model_get_dev(tr->m);
    int rc = zoff_dev_malloc(dev, total * sizeof(float), (void **)&tr->mom);
    if (!rc) rc = zoff_dev_malloc(dev, total * sizeof(float), (void **)&tr->var);
    if (!rc) rc = zoff_dev_memset_async(tr->s, tr->mom, 0, total * sizeof(float));
    if (!rc) rc = zoff_dev_memset_async(tr->s, tr->var, 0, total * sizeof(float));
    return rc;
}

int zoff_trainer_save_state(zoff_trainer *tr, const char *path) {
    size_t total = zoff_model_get_layout(tr->m)->total;
    zoff_dev *dev = zoff_model_get_dev(tr->m);
    float *m = calloc(total, sizeof *m), *v = calloc(total, sizeof *v);
    int rc = m && v ? 0 : -ENOMEM;
    if (!rc) rc = zoff_dev_stream_synchronize(tr->s);
    if (!rc && tr->mom) rc = zoff_dev_memcpy(dev, m, tr->mom, total * 4, ZOFF_COPY_D2H);
    if (!rc && tr->var) rc = zoff_dev_memcpy(dev, v, tr->var, total * 4, ZOFF_COPY_D2H);
    if (!rc) rc = zoff_optimizer_state_save(path, m, v, total, tr->step, tr->loss_scale);
    free(m);
    free(v);
    return rc;
}

int zoff_trainer_load_state(zoff_trainer *tr, const char *path) {
    size_t total = zoff_model_get_layout(tr->m)->total;
    zoff_dev *dev = zoff_model_get_dev(tr->m);
    float *m = malloc(total * sizeof *m), *v = malloc(total * sizeof *v);
    int step = 0;
    float scale = 1.0f;
    int rc = m && v ? 0 : -ENOMEM;
    if (!rc) rc = zoff_optimizer_state_load(path, m, v, total, &step, &scale);
    if (!rc) rc = ensure_moments(tr, total);
    if (!rc) rc = zoff_dev_stream_synchronize(tr->s);
    if (!rc) rc = zoff_dev_memcpy(dev, tr->mom, m, total * 4, ZOFF_COPY_H2D);
    if (!rc) rc = zoff_dev_memcpy(dev, tr->var, v, total * 4, ZOFF_COPY_H2D);
    if (!rc) {
        tr->step = step;
        tr->loss_scale = scale;
        tr->good_steps = 0;
    }
    free(m);
    free(v);
    return rc;
}
