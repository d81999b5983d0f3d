/* What every architecture shares (see model/model_impl.h): creation and memory accounting,
 * weights between host and device, gradient sinks, batch staging, the chunked loss head, and
 * the forward / forward_backward drivers that call an architecture's table. */
#include "model/model_impl.h"
#include "core/half.h"
#include "core/log.h"
#include "gpu/device_impl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "model"
#define LOSS_CHUNK_LOGITS (16u << 20) /* auto chunk: about this many logits (64 MiB fp32) */

void zoff_model_options_default(zoff_model_options *opt) {
    memset(opt, 0, sizeof *opt);
    opt->batch = 8;
    opt->seq_len = 64;
    opt->matmul_dtype = ZOFF_F32;
}

/* --- the device plan --------------------------------------------------------------------- */

void zoff_device_plan_sum(zoff_device_plan *p) {
    p->total = p->weights + p->master + p->grads + p->optimizer + p->buckets + p->activations +
               p->workspace;
}

void zoff_trainer_plan(zoff_device_plan *p, zoff_dtype matmul_dtype) {
    size_t n = p->weights / zoff_dtype_size(matmul_dtype); /* layout.total elements */
    p->master = matmul_dtype == ZOFF_F32 ? 0 : n * sizeof(float);
    p->grads = n * sizeof(float);
    p->optimizer = 2 * n * sizeof(float);
    zoff_device_plan_sum(p);
}

static void fmt_mib(char *buf, size_t n, size_t bytes) {
    snprintf(buf, n, "%.1f MiB", (double)bytes / 1048576.0);
}

void zoff_device_plan_format(const zoff_device_plan *p, char *buf, size_t n) {
    static const char *names[] = {"weights", "master",  "gradients", "optimizer",
                                  "buckets", "activations", "workspace"};
    size_t vals[] = {p->weights, p->master,      p->grads,    p->optimizer,
                     p->buckets, p->activations, p->workspace};
    double np = p->n_params ? (double)p->n_params : 1.0;
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < 7 && k < n; i++) {
        if (!vals[i]) continue;
        char mib[32];
        fmt_mib(mib, sizeof mib, vals[i]);
        k += (size_t)snprintf(buf + k, n - k, "%s%s %s (%.2f B/param)", k ? ", " : "", names[i],
                              mib, (double)vals[i] / np);
    }
    if (k < n) {
        char mib[32];
        fmt_mib(mib, sizeof mib, p->total);
        size_t excl = p->total - p->activations;
        snprintf(buf + k, n - k, "; total %s = %.2f B/param (%.2f without activations)", mib,
                 (double)p->total / np, (double)excl / np);
    }
}

/* --- allocation -------------------------------------------------------------------------- */

int model_alloc(zoff_model *m, model_term term, size_t bytes, void *ptr) {
    size_t counted = (bytes + ZOFF_DEV_ALIGN - 1) / ZOFF_DEV_ALIGN * ZOFF_DEV_ALIGN;
    size_t *slot = term == TERM_WEIGHTS       ? &m->mem.weights
                   : term == TERM_GRADS       ? &m->mem.grads
                   : term == TERM_ACTIVATIONS ? &m->mem.activations
                                              : &m->mem.workspace;
    if (m->counting) {
        *slot += counted;
        *(void **)ptr = NULL;
        return 0;
    }
    void *p = NULL;
    int rc = zoff_dev_malloc(m->dev, bytes ? bytes : 1, &p);
    if (rc) return rc;
    void **na = realloc(m->allocs, (size_t)(m->n_allocs + 1) * sizeof *na);
    if (!na) {
        zoff_dev_free(m->dev, p);
        return -ENOMEM;
    }
    m->allocs = na;
    m->allocs[m->n_allocs++] = p;
    *slot += counted;
    *(void **)ptr = p;
    return 0;
}

static int chunk_rows_for(const zoff_model *m) {
    int BT = m->opt.batch * m->opt.seq_len;
    int r = m->opt.loss_chunk_rows;
    if (r <= 0) {
        size_t auto_rows = LOSS_CHUNK_LOGITS / (size_t)m->V;
        r = auto_rows < 1 ? 1 : auto_rows > (size_t)BT ? BT : (int)auto_rows;
    }
    return r > BT ? BT : r;
}

int model_create_common(zoff_model *m) {
    size_t BT = (size_t)m->opt.batch * m->opt.seq_len, total = m->layout.total;
    int rc;
    if (!m->opt.stream_weights &&
        (rc = model_alloc(m, TERM_WEIGHTS, total * zoff_dtype_size(m->wdt), &m->weights)))
        return rc;
    if ((rc = model_alloc(m, TERM_WORKSPACE, 4 * BT * sizeof(int32_t), &m->d_tokens))) return rc;
    if (!m->counting) {
        m->d_targets = m->d_tokens + BT;
        m->d_pos = m->d_tokens + 2 * BT;
    }
    m->chunk_rows = chunk_rows_for(m);
    size_t R = (size_t)m->chunk_rows, V = (size_t)m->V;
    if ((rc = model_alloc(m, TERM_WORKSPACE, BT * sizeof(float), &m->losses))) return rc;
    if ((rc = model_alloc(m, TERM_WORKSPACE, BT * (size_t)m->C * sizeof(float), &m->dhead)))
        return rc;
    if ((rc = model_alloc(m, TERM_WORKSPACE, R * V * sizeof(float), &m->logits))) return rc;
    if (m->wdt != ZOFF_F32) {
        if ((rc = model_alloc(m, TERM_WORKSPACE, model_act_bytes(m, R * V), &m->dlogits16)))
            return rc;
        if (m->tied_group >= 0) {
            size_t g = (size_t)m->tied_group;
            size_t n = m->layout.group_begin[g + 1] - m->layout.group_begin[g];
            if ((rc = model_alloc(m, TERM_WORKSPACE, n * sizeof(float), &m->tied_scratch)))
                return rc;
        }
    }
    if ((rc = m->ops->alloc(m))) return rc;
    if (m->counting) return 0;
    m->group_base = calloc((size_t)m->layout.n_groups, sizeof *m->group_base);
    if (!m->group_base) return -ENOMEM;
    for (int g = 0; m->weights && g < m->layout.n_groups; g++)
        m->group_base[g] = (char *)m->weights + m->layout.group_begin[g] * zoff_dtype_size(m->wdt);
    m->gptr = calloc((size_t)m->layout.n_tensors, sizeof *m->gptr);
    m->gstate = calloc((size_t)m->layout.n_tensors, 1);
    if (!m->gptr || !m->gstate) return -ENOMEM;
    for (int i = 0; i < 2; i++) {
        if ((rc = zoff_dev_host_alloc(m->dev, 4 * BT * sizeof(int32_t), (void **)&m->h_stage[i])))
            return rc;
        if ((rc = zoff_dev_event_create(m->dev, &m->stage_done[i]))) return rc;
    }
    if ((rc = zoff_dev_host_alloc(m->dev, BT * sizeof(float), (void **)&m->h_losses))) return rc;
    if ((rc = zoff_dev_event_create(m->dev, &m->loss_ready))) return rc;
    if (m->opt.stream_weights) return 0;
    return zoff_model_params_from_host(m, NULL); /* weights and padding start at zero */
}

int model_check_options(const zoff_model_options *opt, int max_seq, const char *max_seq_name,
                        size_t widest) {
    if (opt->batch < 1) return zoff_fail(ZOFF_ECONFIG, MOD, "batch = %d: must be >= 1", opt->batch);
    if (opt->seq_len < 1 || opt->seq_len > max_seq)
        return zoff_fail(ZOFF_ECONFIG, MOD, "seq_len = %d: must be 1..%d (%s)", opt->seq_len,
                         max_seq, max_seq_name);
    if ((size_t)opt->batch * (size_t)opt->seq_len * widest > (size_t)INT32_MAX)
        return zoff_fail(ZOFF_ECONFIG, MOD, "batch %d x seq_len %d is too large for this model",
                         opt->batch, opt->seq_len);
    if (!zoff_dtype_size(opt->matmul_dtype))
        return zoff_fail(ZOFF_ECONFIG, MOD, "matmul dtype %d is not a dtype", opt->matmul_dtype);
    if (opt->loss_chunk_rows < 0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "loss_chunk_rows = %d: must be >= 0 (0 = auto)",
                         opt->loss_chunk_rows);
    return 0;
}

int model_plan_of(zoff_model *m, zoff_device_plan *out) {
    m->counting = true;
    int rc = model_create_common(m);
    if (!rc) zoff_model_memory(m, out);
    zoff_model_destroy(m);
    return rc;
}

int model_open(zoff_model *m, zoff_dev *dev, const zoff_device_plan *plan, zoff_model **out) {
    m->dev = dev;
    int rc = model_create_common(m);
    if (rc) {
        if (rc == ZOFF_EDEVICE_OOM) {
            char text[512];
            zoff_device_plan_format(plan, text, sizeof text);
            zoff_fail(rc, MOD, "the model does not fit in device memory: %s", text);
        }
        zoff_model_destroy(m);
        return rc;
    }
    *out = m;
    return 0;
}

void zoff_model_destroy(zoff_model *m) {
    if (!m) return;
    if (m->dev) zoff_dev_synchronize(m->dev);
    if (m->ops && m->ops->destroy) m->ops->destroy(m);
    model_kept_free(m);
    for (int i = 0; i < m->n_allocs; i++)
        zoff_dev_free(m->dev, m->allocs[i]);
    for (int i = 0; i < 2; i++) {
        if (m->h_stage[i]) zoff_dev_host_free(m->dev, m->h_stage[i]);
        if (m->stage_done[i]) zoff_dev_event_destroy(m->stage_done[i]);
    }
    if (m->h_losses) zoff_dev_host_free(m->dev, m->h_losses);
    if (m->loss_ready) zoff_dev_event_destroy(m->loss_ready);
    free(m->allocs);
    free(m->group_base);
    free(m->gptr);
    free(m->gstate);
    zoff_layout_free(&m->layout);
    free(m);
}

const char *zoff_model_arch(const zoff_model *m) {
    return m->ops->arch;
}
const zoff_layout *zoff_model_get_layout(const zoff_model *m) {
    return &m->layout;
}
const zoff_model_options *zoff_model_get_options(const zoff_model *m) {
    return &m->opt;
}
zoff_dev *zoff_model_get_dev(const zoff_model *m) {
    return m->dev;
}
void *zoff_model_weights(zoff_model *m) {
    return m->weights;
}
zoff_dtype zoff_model_weight_dtype(const zoff_model *m) {
    return m->wdt;
}
void zoff_model_memory(const zoff_model *m, zoff_device_plan *out) {
    *out = m->mem;
    out->n_params = m->layout.n_params;
    zoff_device_plan_sum(out);
}
void zoff_model_set_params_needed_hook(zoff_model *m, zoff_model_params_needed_fn fn, void *ctx) {
    m->need_hook = fn;
    m->need_ctx = ctx;
}
double zoff_model_train_flops(const zoff_model *m, int B, int T) {
    return m->ops->train_flops(m, B, T);
}

void zoff_model_set_group_weights(zoff_model *m, int group, void *base) {
    if (group >= 0 && group < m->layout.n_groups) m->group_base[group] = base;
}

void *model_weight(zoff_model *m, int tensor) {
    const zoff_tensor *t = &m->layout.tensors[tensor];
    return (char *)m->group_base[t->group] +
           (t->offset - m->layout.group_begin[t->group]) * zoff_dtype_size(m->wdt);
}

/* The loss head's group (the tied embedding's or the last), made current for its reads. */
static int head_needed(zoff_model *m, zoff_dev_stream *s) {
    return model_params_needed(m, s, m->layout.tensors[m->head_tensor].group);
}

static int need_flat(const zoff_model *m, const char *what) {
    return m->weights ? 0
                      : zoff_fail(-EINVAL, MOD,
                                  "%s: the model's weights are streamed (held by the offload "
                                  "engine, not in a device buffer)",
                                  what);
}

int model_params_needed(zoff_model *m, zoff_dev_stream *s, int group) {
    MODEL_TRY(model_kept_hook(m, s, group));
    return m->need_hook ? m->need_hook(m->need_ctx, group, s) : 0;
}

/* --- weights between host and device ------------------------------------------------------ */

int zoff_model_params_to_host(zoff_model *m, float *dst) {
    size_t n = m->layout.total;
    MODEL_TRY(need_flat(m, "params_to_host"));
    int rc = zoff_dev_synchronize(m->dev);
    if (rc) return rc;
    if (m->wdt == ZOFF_F32) return zoff_dev_memcpy(m->dev, dst, m->weights, n * 4, ZOFF_COPY_D2H);
    uint16_t *h = malloc(n * sizeof *h);
    if (!h) return -ENOMEM;
    rc = zoff_dev_memcpy(m->dev, h, m->weights, n * 2, ZOFF_COPY_D2H);
    for (size_t i = 0; !rc && i < n; i++)
        dst[i] = zoff_load_as_f32(h, m->wdt, i);
    free(h);
    return rc;
}

/* src NULL: zeros. Converted and copied in chunks, so that loading a checkpoint never holds a
 * second full copy of the weights in host memory. */
int zoff_model_params_from_host(zoff_model *m, const float *src) {
    size_t n = m->layout.total, es = zoff_dtype_size(m->wdt), chunk = (size_t)4 << 20;
    MODEL_TRY(need_flat(m, "params_from_host"));
    int rc = zoff_dev_synchronize(m->dev);
    if (rc) return rc;
    if (src && m->wdt == ZOFF_F32)
        return zoff_dev_memcpy(m->dev, m->weights, src, n * es, ZOFF_COPY_H2D);
    if (chunk > n) chunk = n ? n : 1;
    void *h = calloc(chunk, es);
    if (!h) return -ENOMEM;
    for (size_t i0 = 0; !rc && i0 < n; i0 += chunk) {
        size_t k = n - i0 < chunk ? n - i0 : chunk;
        if (src)
            for (size_t i = 0; i < k; i++)
                zoff_store_from_f32(h, m->wdt, i, src[i0 + i]);
        rc = zoff_dev_memcpy(m->dev, (char *)m->weights + i0 * es, h, k * es, ZOFF_COPY_H2D);
    }
    free(h);
    return rc;
}

int zoff_model_init_host(const zoff_model *m, uint64_t seed, float *host) {
    memset(host, 0, m->layout.total * sizeof *host);
    return m->ops->init_host(m, seed, host);
}

int zoff_model_init_params(zoff_model *m, uint64_t seed) {
    float *h = malloc(m->layout.total * sizeof *h);
    if (!h) return -ENOMEM;
    int rc = zoff_model_init_host(m, seed, h);
    if (!rc) rc = zoff_model_params_from_host(m, h);
    free(h);
    return rc;
}

/* --- gradients -------------------------------------------------------------------------- */

int zoff_model_alloc_grads(zoff_model *m) {
    if (m->flat_grads) return 0;
    size_t bytes = m->layout.total * sizeof(float);
    int rc = model_alloc(m, TERM_GRADS, bytes, &m->flat_grads);
    if (!rc) {
        float *zero = calloc(m->layout.total, sizeof(float));
        if (!zero) return -ENOMEM;
        rc = zoff_dev_memcpy(m->dev, m->flat_grads, zero, bytes, ZOFF_COPY_H2D);
        free(zero);
    }
    return rc;
}

float *zoff_model_grads(zoff_model *m) {
    return m->flat_grads;
}

int zoff_model_zero_grads(zoff_model *m, zoff_dev_stream *s) {
    if (!m->flat_grads) return zoff_fail(-EINVAL, MOD, "no flat gradient buffer to zero");
    return zoff_dev_memset_async(s, m->flat_grads, 0, m->layout.total * sizeof(float));
}

int zoff_model_grads_to_host(zoff_model *m, float *dst) {
    if (!m->flat_grads) return zoff_fail(-EINVAL, MOD, "no flat gradient buffer to read");
    int rc = zoff_dev_synchronize(m->dev);
    return rc ? rc
              : zoff_dev_memcpy(m->dev, dst, m->flat_grads, m->layout.total * sizeof(float),
                                ZOFF_COPY_D2H);
}

void zoff_model_set_grad_sink(zoff_model *m, const zoff_grad_sink *sink) {
    m->have_sink = sink != NULL;
    if (sink) m->sink = *sink;
}

static bool scratch_group(const zoff_model *m, int group) {
    return m->tied_scratch && group == m->tied_group && m->have_sink &&
           m->sink.dtype != ZOFF_F32;
}

zoff_dtype model_grad_dtype(const zoff_model *m, int group) {
    if (!m->have_sink || scratch_group(m, group)) return ZOFF_F32;
    return m->sink.dtype;
}

int model_grad_take(zoff_model *m, zoff_dev_stream *s, int tensor) {
    const zoff_tensor *ten = &m->layout.tensors[tensor];
    if (m->gstate[tensor] || scratch_group(m, ten->group)) return 0;
    if (!m->have_sink) {
        if (!m->flat_grads)
            return zoff_fail(-EINVAL, MOD,
                             "backward without a gradient buffer: call zoff_model_alloc_grads "
                             "or install a gradient sink");
        m->gptr[tensor] = m->flat_grads + ten->offset;
    } else {
        void *g = NULL;
        MODEL_TRY(m->sink.buffer(m->sink.ctx, tensor, s, &g));
        m->gptr[tensor] = g;
    }
    m->gstate[tensor] = 1;
    return 0;
}

int model_grad_give(zoff_model *m, zoff_dev_stream *s, int tensor) {
    if (m->gstate[tensor] == 2 || scratch_group(m, m->layout.tensors[tensor].group)) return 0;
    MODEL_TRY(model_grad_take(m, s, tensor)); /* never written: a zero gradient */
    m->gstate[tensor] = 2;
    return m->have_sink ? m->sink.done(m->sink.ctx, tensor, s) : 0;
}

void *model_grad(zoff_model *m, int tensor) {
    const zoff_tensor *t = &m->layout.tensors[tensor];
    if (scratch_group(m, t->group))
        return m->tied_scratch + (t->offset - m->layout.group_begin[t->group]);
    return m->gptr[tensor];
}

int model_grad_end_group(zoff_model *m, zoff_dev_stream *s, int group) {
    const zoff_layout *l = &m->layout;
    bool scratch = scratch_group(m, group);
    for (int t = 0; t < l->n_tensors; t++) {
        const zoff_tensor *ten = &l->tensors[t];
        if (ten->group != group || m->gstate[t] == 2) continue;
        if (scratch) { /* the sink's buffer is zero: the fp32 sum goes in rounded once */
            void *g = NULL;
            MODEL_TRY(m->sink.buffer(m->sink.ctx, t, s, &g));
            MODEL_TRY(zoff_dev_op_cast(s, g, m->sink.dtype, model_grad(m, t), ZOFF_F32,
                                       ten->numel));
            m->gstate[t] = 2;
            MODEL_TRY(m->sink.done(m->sink.ctx, t, s));
        } else {
            MODEL_TRY(model_grad_give(m, s, t));
        }
    }
    return 0;
}

/* Resets the per-backward gradient state; a 16-bit sink's tied scratch starts at zero. */
static int grads_begin_backward(zoff_model *m, zoff_dev_stream *s) {
    memset(m->gstate, 0, (size_t)m->layout.n_tensors);
    if (m->tied_group < 0 || !scratch_group(m, m->tied_group)) return 0;
    size_t g = (size_t)m->tied_group;
    return zoff_dev_memset_async(
        s, m->tied_scratch, 0, (m->layout.group_begin[g + 1] - m->layout.group_begin[g]) * 4);
}

/* --- linear layers ------------------------------------------------------------------------- */

int model_linear_fwd(zoff_model *m, zoff_dev_stream *s, void *out, zoff_dtype out_type,
                     const void *inp, int w_tensor, int b_tensor, int N, int K, int OC,
                     const float *res) {
    /* bias and residual first, then the product added onto them (beta 1): one pass over out
     * for what a bias add and a residual add after the GEMM took two more (a GEMM with beta 0
     * clears its C in a pass of its own, at least OpenBLAS's) */
    float beta = 0.0f;
    if (b_tensor >= 0 || res) {
        MODEL_TRY(zoff_dev_op_bias_init(s, out, out_type,
                                        b_tensor >= 0 ? model_weight(m, b_tensor) : NULL, m->wdt,
                                        res, (size_t)N, OC));
        beta = 1.0f;
    }
    return zoff_dev_op_gemm(s, false, true, N, OC, K, 1.0f, inp, K, model_weight(m, w_tensor), K,
                            m->wdt, beta, out, out_type, OC);
}

int model_linear_bwd(zoff_model *m, zoff_dev_stream *s, void *dinp, zoff_dtype dinp_type,
                     const void *dout, const float *dbias_src, const void *inp, int w_tensor,
                     int b_tensor, int N, int K, int OC) {
    int g = m->layout.tensors[w_tensor].group;
    zoff_dtype gt = model_grad_dtype(m, g);
    MODEL_TRY(model_grad_take(m, s, w_tensor));
    if (b_tensor >= 0) MODEL_TRY(model_grad_take(m, s, b_tensor));
    if (dinp)
        MODEL_TRY(zoff_dev_op_gemm(s, false, false, N, K, OC, 1.0f, dout, OC,
                                   model_weight(m, w_tensor), K, m->wdt, 0.0f, dinp, dinp_type,
                                   K));
    MODEL_TRY(zoff_dev_op_gemm(s, true, false, OC, K, N, 1.0f, dout, OC, inp, K, m->wdt, 1.0f,
                               model_grad(m, w_tensor), gt, K));
    if (b_tensor >= 0) {
        if (dbias_src)
            MODEL_TRY(zoff_dev_op_bias_grad(s, model_grad(m, b_tensor), gt, dbias_src, ZOFF_F32,
                                            (size_t)N, OC));
        else
            MODEL_TRY(zoff_dev_op_bias_grad(s, model_grad(m, b_tensor), gt, dout, m->wdt,
                                            (size_t)N, OC));
        MODEL_TRY(model_grad_give(m, s, b_tensor));
    }
    return model_grad_give(m, s, w_tensor);
}

/* --- batches ------------------------------------------------------------------------------- */

/* Checks the batch, fills the next pinned slot and copies it to the device on s. */
static int stage_batch(zoff_model *m, zoff_dev_stream *s, const zoff_batch *b, bool need_targets) {
    int B = b->B, T = b->T, V = m->V;
    if (!b->tokens || B < 1 || B > m->opt.batch || T < 1 || T > m->opt.seq_len)
        return zoff_fail(-EINVAL, MOD, "batch %dx%d does not fit the model's %dx%d", B, T,
                         m->opt.batch, m->opt.seq_len);
    if (need_targets && !b->targets)
        return zoff_fail(-EINVAL, MOD, "training needs targets");
    int BT = B * T, slot = m->stage_slot;
    /* the slot's previous copies must be done before the host overwrites it */
    MODEL_TRY(zoff_dev_event_synchronize(m->stage_done[slot]));
    int32_t *tok = m->h_stage[slot], *tgt = tok + BT, *pos = tok + 2 * BT, *doc = tok + 3 * BT;
    int n_valid = 0;
    for (int i = 0; i < BT; i++) {
        int t = i % T;
        if (b->tokens[i] < 0 || b->tokens[i] >= V)
            return zoff_fail(-EINVAL, MOD, "token %d at position %d is outside the vocabulary (%d)",
                             (int)b->tokens[i], i, V);
        if (b->targets) {
            if (b->targets[i] >= V || (b->targets[i] < 0 && b->targets[i] != -100))
                return zoff_fail(-EINVAL, MOD,
                                 "target %d at position %d is outside the vocabulary (%d) and "
                                 "not the ignore index -100",
                                 (int)b->targets[i], i, V);
            n_valid += b->targets[i] >= 0;
        }
        if (b->doc_start) {
            int ds = b->doc_start[i];
            bool ok = ds >= 0 && ds <= t &&
                      (t == 0 || ds == t || ds == b->doc_start[i - 1]);
            if (!ok)
                return zoff_fail(-EINVAL, MOD,
                                 "doc_start %d at row %d, position %d: must be the position "
                                 "where the token's sample begins",
                                 ds, i / T, t);
            doc[i] = ds;
            pos[i] = t - ds;
        }
    }
    memcpy(tok, b->tokens, (size_t)BT * sizeof *tok);
    if (b->targets) memcpy(tgt, b->targets, (size_t)BT * sizeof *tgt);
    size_t n = (size_t)BT * sizeof(int32_t);
    MODEL_TRY(zoff_dev_memcpy_async(s, m->d_tokens, tok, n, ZOFF_COPY_H2D));
    if (b->targets) MODEL_TRY(zoff_dev_memcpy_async(s, m->d_targets, tgt, n, ZOFF_COPY_H2D));
    m->has_pos = b->doc_start != NULL;
    if (m->has_pos) {
        /* d_pos holds positions, then the doc starts right behind them */
        MODEL_TRY(zoff_dev_memcpy_async(s, m->d_pos, pos, 2 * n, ZOFF_COPY_H2D));
    }
    MODEL_TRY(zoff_dev_event_record(m->stage_done[slot], s));
    m->stage_slot ^= 1;
    m->n_valid = n_valid;
    return 0;
}

/* --- the loss head --------------------------------------------------------------------------- */

/* Runs the loss over chunks of rows of head_in; with train, also the head's gradients: dhead
 * (written) and the head weight's (accumulated). */
static int head_loss(zoff_model *m, zoff_dev_stream *s, bool train, float dloss_scale) {
    int BT = m->cur_B * m->cur_T, C = m->C, V = m->V, R = m->chunk_rows;
    size_t es = zoff_dtype_size(m->wdt);
    const void *W = model_weight(m, m->head_tensor);
    float dloss = m->n_valid > 0 ? dloss_scale / (float)m->n_valid : 0.0f;
    void *dl = m->wdt == ZOFF_F32 ? (void *)m->logits : m->dlogits16;
    void *gW = NULL;
    zoff_dtype gt = ZOFF_F32;
    if (train) {
        int g = m->layout.tensors[m->head_tensor].group;
        gW = model_grad(m, m->head_tensor);
        gt = model_grad_dtype(m, g);
    }
    for (int r0 = 0; r0 < BT; r0 += R) {
        int rows = BT - r0 < R ? BT - r0 : R;
        const char *h = (const char *)m->head_in + (size_t)r0 * C * es;
        MODEL_TRY(zoff_dev_op_gemm(s, false, true, rows, V, C, 1.0f, h, C, W, C, m->wdt, 0.0f,
                                   m->logits, ZOFF_F32, V));
        MODEL_TRY(zoff_dev_op_xent_fused(s, m->losses + r0, train ? dl : NULL, m->wdt, m->logits,
                                         m->d_targets + r0, dloss, (size_t)rows, V));
        if (!train) continue;
        MODEL_TRY(zoff_dev_op_gemm(s, false, false, rows, C, V, 1.0f, dl, V, W, C, m->wdt, 0.0f,
                                   m->dhead + (size_t)r0 * C, ZOFF_F32, C));
        MODEL_TRY(zoff_dev_op_gemm(s, true, false, V, C, rows, 1.0f, dl, V, h, C, m->wdt, 1.0f, gW,
                                   gt, C));
    }
    return 0;
}

/* The per-row losses go to pinned memory right behind the loss head, before the backward is
 * even issued, so that reading them waits for the forward only. */
static int send_losses(zoff_model *m, zoff_dev_stream *s) {
    int BT = m->cur_B * m->cur_T;
    MODEL_TRY(zoff_dev_memcpy_async(s, m->h_losses, m->losses, (size_t)BT * sizeof(float),
                                    ZOFF_COPY_D2H));
    m->loss_valid = m->n_valid;
    return zoff_dev_event_record(m->loss_ready, s);
}

int zoff_model_loss_wait(zoff_model *m, zoff_dev_stream *s, float *loss) {
    (void)s;
    MODEL_TRY(zoff_dev_event_synchronize(m->loss_ready));
    int BT = m->cur_B * m->cur_T;
    double sum = 0.0;
    for (int i = 0; i < BT; i++)
        sum += m->h_losses[i]; /* ignored targets contribute 0 */
    *loss = m->loss_valid > 0 ? (float)(sum / m->loss_valid) : 0.0f;
    return 0;
}

int zoff_model_forward(zoff_model *m, zoff_dev_stream *s, const zoff_batch *b, float *loss) {
    if (!m || !s || !b) return -EINVAL;
    m->have_fwd = false;
    MODEL_TRY(stage_batch(m, s, b, false));
    m->cur_B = b->B;
    m->cur_T = b->T;
    m->kept_phase = 1;
    int rc = m->ops->forward_body(m, s, b->B, b->T);
    m->kept_phase = 0;
    MODEL_TRY(rc);
    m->have_fwd = true;
    if (!b->targets || !loss) return 0;
    MODEL_TRY(head_needed(m, s));
    MODEL_TRY(head_loss(m, s, false, 0.0f));
    MODEL_TRY(send_losses(m, s));
    return zoff_model_loss_wait(m, s, loss);
}

int zoff_model_forward_backward(zoff_model *m, zoff_dev_stream *s, const zoff_batch *b,
                                float dloss_scale, float *loss) {
    if (!m || !s || !b) return -EINVAL;
    m->have_fwd = false;
    MODEL_TRY(stage_batch(m, s, b, true));
    m->cur_B = b->B;
    m->cur_T = b->T;
    m->kept_phase = 1;
    int rc = m->ops->forward_body(m, s, b->B, b->T);
    m->kept_phase = 0;
    MODEL_TRY(rc);
    m->have_fwd = true;
    MODEL_TRY(grads_begin_backward(m, s));
    /* the head's weight gradient starts here (tied: it is also the embedding's) */
    MODEL_TRY(model_grad_take(m, s, m->head_tensor));
    MODEL_TRY(head_needed(m, s));
    MODEL_TRY(head_loss(m, s, true, dloss_scale));
    MODEL_TRY(send_losses(m, s));
    m->kept_phase = 2;
    rc = m->ops->backward_body(m, s, b->B, b->T);
    m->kept_phase = 0;
    MODEL_TRY(rc);
    return loss ? zoff_model_loss_wait(m, s, loss) : 0;
}

/* The head's fp32 logits at (b, t) of the last forward into m->logits' first row. */
static int head_row(zoff_model *m, zoff_dev_stream *s, int b, int t) {
    if (!m->have_fwd || b < 0 || b >= m->cur_B || t < 0 || t >= m->cur_T)
        return zoff_fail(-EINVAL, MOD, "no logits at (%d, %d) from the last forward", b, t);
    int C = m->C, V = m->V;
    const char *h =
        (const char *)m->head_in + ((size_t)b * m->cur_T + t) * C * zoff_dtype_size(m->wdt);
    MODEL_TRY(head_needed(m, s));
    return zoff_dev_op_gemm(s, false, true, 1, V, C, 1.0f, h, C, model_weight(m, m->head_tensor), C,
                            m->wdt, 0.0f, m->logits, ZOFF_F32, V);
}

int zoff_model_logits_row(zoff_model *m, zoff_dev_stream *s, int b, int t, float *logits) {
    MODEL_TRY(head_row(m, s, b, t));
    MODEL_TRY(
        zoff_dev_memcpy_async(s, logits, m->logits, (size_t)m->V * sizeof(float), ZOFF_COPY_D2H));
    return zoff_dev_stream_synchronize(s);
}

int zoff_model_probs_row(zoff_model *m, zoff_dev_stream *s, int b, int t, float *probs) {
    if (!m->have_fwd || b < 0 || b >= m->cur_B || t < 0 || t >= m->cur_T)
        return zoff_fail(-EINVAL, MOD, "no probabilities at (%d, %d) from the last forward", b, t);
    int C = m->C, V = m->V;
    const char *h =
        (const char *)m->head_in + ((size_t)b * m->cur_T + t) * C * zoff_dtype_size(m->wdt);
    MODEL_TRY(head_needed(m, s));
    MODEL_TRY(zoff_dev_op_gemm(s, false, true, 1, V, C, 1.0f, h, C, model_weight(m, m->head_tensor),
                               C, m->wdt, 0.0f, m->logits, ZOFF_F32, V));
    MODEL_TRY(zoff_dev_op_softmax_xent_fwd(s, m->logits, NULL, m->logits, NULL, 1, V));
    MODEL_TRY(zoff_dev_memcpy_async(s, probs, m->logits, (size_t)V * sizeof(float),
                                    ZOFF_COPY_D2H));
    return zoff_dev_stream_synchronize(s);
}
