/* The CPU side of the offload engine: two threads.
 *
 * receiver  takes work items in order. For each gradient bucket it waits for the D2H copy
 *           (counter d2h_count), then either updates the bucket straight from the pinned ring
 *           (overlap) or copies/accumulates it into the step's buffer set and frees the ring
 *           slot (sync, DPU). At a step's end it computes the global norm, the clip
 *           coefficient and the fp16 overflow decision, publishes the loss scale, and hands
 *           the step to the updater.
 * updater   (sync, DPU) applies a step: buckets in forward order so the next forward can start
 *           on the first layers, each through the state store, the fused Adam and the pinned
 *           weight ring, then the H2D copy and the bucket's version counter.
 * After an error both threads keep the counters moving (without touching the weights) so no
 * stream waits forever; the trainer's next call returns the error.
 */
#include "core/log.h"
#include "offload/engine_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void engine_set_error(zoff_engine *e, int err) {
    pthread_mutex_lock(&e->lock);
    if (!e->error) {
        e->error = err;
        snprintf(e->error_detail, sizeof e->error_detail, "%s", zoff_last_error_detail());
    }
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

/* --- queues ---------------------------------------------------------------------------- */

static int push(work_item **q, size_t *head, size_t *len, size_t *cap, const work_item *w) {
    if (*len == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        work_item *nq = malloc(ncap * sizeof *nq);
        if (!nq) return -ENOMEM;
        for (size_t i = 0; i < *len; i++)
            nq[i] = (*q)[(*head + i) % *cap];
        free(*q);
        *q = nq;
        *head = 0;
        *cap = ncap;
    }
    (*q)[(*head + *len) % *cap] = *w;
    (*len)++;
    return 0;
}

int engine_queue_push(zoff_engine *e, const work_item *w) {
    pthread_mutex_lock(&e->lock);
    int rc = push(&e->queue, &e->q_head, &e->q_len, &e->q_cap, w);
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
    return rc ? zoff_fail(rc, MOD, "no memory to queue offload work") : 0;
}

static int updater_push(zoff_engine *e, const work_item *w) {
    pthread_mutex_lock(&e->lock);
    int rc = push(&e->uqueue, &e->uq_head, &e->uq_len, &e->uq_cap, w);
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
    return rc;
}

/* Blocks (e->lock held) until the queue has an item; the queue may grow while waiting. */
static work_item pop(zoff_engine *e, work_item **q, size_t *head, size_t *len, const size_t *cap) {
    while (*len == 0)
        pthread_cond_wait(&e->cond, &e->lock);
    work_item w = (*q)[*head];
    *head = (*head + 1) % *cap;
    (*len)--;
    return w;
}

/* --- one bucket's update --------------------------------------------------------------- */

static int has_error(zoff_engine *e) {
    return engine_worker_error(e) != 0;
}

/* Bytes one fused step over n elements reads and writes: the gradient, p (read, write), m and v
 * (read, write) and the 16-bit weights (write). */
static uint64_t adam_pass_bytes(const zoff_engine *e, size_t n, zoff_dtype gdt) {
    size_t msize = zoff_dtype_size(e->cfg.moment_dtype);
    return (uint64_t)n * (zoff_dtype_size(gdt) + 2 * 4 + 4 * msize + e->esize);
}

/* Bytes this rank sends in one reduce-scatter or all-gather of bucket b (ring algorithm). */
static uint64_t collective_bytes(const zoff_engine *e, const engine_bucket *bk) {
    return e->world > 1 ? (uint64_t)(e->world - 1) * bk->shard * e->esize : 0;
}

/* Several ranks, on the h2d stream after this rank's block of bucket b is in the gather
 * buffer: every rank's block gathered, then the whole bucket into the device parameters. */
static int gather_bucket_weights(zoff_engine *e, const engine_bucket *bk, size_t b) {
    char name[40];
    snprintf(name, sizeof name, "all-gather b%zu", b);
    int span = zoff_trace_device_begin(e->trace, e->h2d, "all-gather", name);
    char *g = e->gather_buf;
    int rc = zoff_dev_allgather(e->h2d, e->ag_comm, g + bk->shard * e->rank * e->esize, g,
                                bk->shard, e->cfg.dtype);
    zoff_trace_device_end(e->trace, e->h2d, span);
    if (!rc)
        rc = zoff_dev_memcpy_async(e->h2d, (char *)e->dparams + bk->offset * e->esize, g,
                                   bk->numel * e->esize, ZOFF_COPY_D2D);
    return rc;
}

/* The fused step over this rank's block of a bucket (p, m, v, grad and out hold the block),
 * split into runs of tensors that share their weight-decay setting (padding between tensors
 * goes with the run before it). */
static int adam_runs(zoff_engine *e, const engine_bucket *bk, const zoff_adam_params *ap, float *p,
                     void *m, void *v, const void *grad, zoff_dtype gdt, void *out) {
    size_t gsize = zoff_dtype_size(gdt), msize = zoff_dtype_size(e->cfg.moment_dtype);
    size_t lo = bk->own_offset, hi = bk->own_offset + bk->own_numel;
    size_t run_start = 0; /* relative to the block */
    for (size_t i = 0; i <= bk->n_tensors; i++) {
        const zoff_engine_tensor *t = i < bk->n_tensors ? &e->tensors[bk->first_tensor + i] : NULL;
        const zoff_engine_tensor *prev = i ? &e->tensors[bk->first_tensor + i - 1] : NULL;
        if (i == 0 || (t && t->no_weight_decay == prev->no_weight_decay)) continue;
        size_t end = t ? t->offset : bk->offset + bk->numel; /* the run ends there */
        size_t run_end = (end < lo ? lo : end > hi ? hi : end) - lo;
        if (run_end <= run_start) continue; /* outside the block */
        zoff_adam_params rp = *ap;
        if (prev->no_weight_decay) rp.weight_decay = 0.0f;
        zoff_adam_buffers buf = {.n = run_end - run_start,
                                 .param = p + run_start,
                                 .m = (char *)m + run_start * msize,
                                 .v = (char *)v + run_start * msize,
                                 .moment_dtype = e->cfg.moment_dtype,
                                 .grad = (const char *)grad + run_start * gsize,
                                 .grad_dtype = gdt,
                                 .param_out = (char *)out + run_start * e->esize,
                                 .out_dtype = e->cfg.dtype};
        int rc = zoff_adam_step(e->pool, &rp, &buf);
        if (rc) return rc;
        run_start = run_end;
    }
    return 0;
}

/* The fused step's settings for one optimizer step: Adam step t (bias correction), lr, and
 * the gradient multiplier (clip coefficient over loss scale). */
static zoff_adam_params step_params(const zoff_engine *e, float lr, int64_t t, float grad_scale) {
    zoff_adam_params ap = zoff_adam_params_default();
    ap.lr = lr;
    ap.beta1 = e->cfg.beta1;
    ap.beta2 = e->cfg.beta2;
    ap.eps = e->cfg.eps;
    ap.weight_decay = e->cfg.weight_decay;
    ap.mode = e->cfg.adamw ? ZOFF_ADAM_ADAMW : ZOFF_ADAM_L2;
    ap.step = t;
    ap.grad_scale = grad_scale;
    return ap;
}

/* This rank's block of bucket b through the state store and the fused Adam, new weights into
 * out; counted into rep and traced. Nothing to do for an empty block. */
static int adam_bucket(zoff_engine *e, size_t b, const void *grad, zoff_dtype gdt,
                       const zoff_adam_params *ap, int64_t step, void *out,
                       zoff_engine_step_report *rep) {
    const engine_bucket *bk = &e->buckets[b];
    if (!bk->own_numel) return 0;
    float *p = NULL;
    void *m = NULL, *v = NULL;
    int rc = state_store_acquire(e->store, b, &p, &m, &v);
    if (rc) return rc;
    double t1 = now_ms(), tr1 = e->trace ? zoff_trace_now_us(e->trace) : 0;
    rc = adam_runs(e, bk, ap, p, m, v, grad, gdt, out);
    rep->cpu_adam_ms += now_ms() - t1;
    rep->cpu_pass_bytes += adam_pass_bytes(e, bk->own_numel, gdt);
    if (e->trace) {
        char name[40];
        snprintf(name, sizeof name, "adam b%zu s%lld", b, (long long)step);
        zoff_trace_host_span(e->trace, "cpu adam", name, tr1, zoff_trace_now_us(e->trace));
    }
    return rc ? rc : state_store_release(e->store, b);
}

/* Whether the updated weights of `step` must wait for the next step's backward (DPU). */
static bool dpu_delayed(const zoff_engine *e, int64_t step) {
    return e->cfg.schedule == ZOFF_SCHEDULE_DPU && step + e->step_base >= e->cfg.dpu_warmup_steps;
}

/* A streamed bucket: new weights straight into the parameter store, then its version,
 * host-side (the fetch stream waits on it). DPU past its warm-up computes them into the
 * weight ring and stores them only once the next step's backward has ended, when no fetch of
 * that step can read the store any more. The version moves in every case. */
static int update_streamed(zoff_engine *e, size_t b, const void *grad, zoff_dtype gdt,
                           const zoff_adam_params *ap, int64_t step, zoff_engine_step_report *rep) {
    engine_bucket *bk = &e->buckets[b];
    bool delayed = dpu_delayed(e, step);
    void *dst = param_store_bucket_weights(e->params, b);
    void *out = delayed ? e->param_ring[b] : dst;
    int rc = has_error(e) ? 0 : adam_bucket(e, b, grad, gdt, ap, step, out, rep);
    if (rc) engine_set_error(e, rc);
    if (delayed) {
        int rw = zoff_dev_host_wait_value(e->dev, &e->ctr->step_end, (uint32_t)(step + 2));
        if (rw) engine_set_error(e, rw);
        if (!rw && !has_error(e)) {
            memcpy(dst, out, bk->numel * e->esize);
            rep->cpu_pass_bytes += 2 * (uint64_t)bk->numel * e->esize;
        }
    }
    if (!has_error(e)) {
        int rcw = param_store_commit(e->params, b);
        if (rcw) engine_set_error(e, rcw);
        if (!rc) rc = rcw;
    }
    int rv = zoff_dev_host_write_value(e->dev, &e->version[b], (uint32_t)(step + 1));
    if (rv) engine_set_error(e, rv);
    return rc ? rc : rv;
}

static int update_bucket(zoff_engine *e, size_t b, const void *grad, zoff_dtype gdt,
                         float grad_scale, float lr, int64_t t, int64_t step,
                         zoff_engine_step_report *rep) {
    engine_bucket *bk = &e->buckets[b];
    zoff_adam_params ap = step_params(e, lr, t, grad_scale);
    if (e->params && param_store_bucket_streamed(e->params, b))
        return update_streamed(e, b, grad, gdt, &ap, step, rep);
    uint32_t h = e->h2d_issued;
    int q = (int)(h % (uint32_t)e->n_param_ring);
    int rc = 0;
    if (h >= (uint32_t)e->n_param_ring)
        rc =
            zoff_dev_host_wait_value(e->dev, &e->ctr->h2d_count, h - (uint32_t)e->n_param_ring + 1);
    if (!rc && !has_error(e)) rc = adam_bucket(e, b, grad, gdt, &ap, step, e->param_ring[q], rep);
    if (rc) engine_set_error(e, rc);
    /* The weights go up unless something failed; the counters move in every case. */
    int ok = !has_error(e);
    int rc2 = 0;
    if (dpu_delayed(e, step))
        rc2 = zoff_dev_stream_wait_value(e->h2d, &e->ctr->step_end, (uint32_t)(step + 2));
    /* Several ranks: every rank takes part in the all-gather, whatever failed here (a
     * rank that skipped it would leave the others blocked): a failed update sends the weights
     * the device holds, unchanged. */
    if (e->world > 1 && !rc2) {
        char *blk = (char *)e->gather_buf + bk->shard * e->rank * e->esize;
        const char *src = (char *)e->dparams + bk->own_offset * e->esize;
        char name[40];
        snprintf(name, sizeof name, "h2d b%zu block", b);
        int span = zoff_trace_device_begin(e->trace, e->h2d, "h2d", name);
        if (bk->own_numel)
            rc2 = ok ? zoff_dev_memcpy_async(e->h2d, blk, e->param_ring[q],
                                             bk->own_numel * e->esize, ZOFF_COPY_H2D)
                     : zoff_dev_memcpy_async(e->h2d, blk, src, bk->own_numel * e->esize,
                                             ZOFF_COPY_D2D);
        zoff_trace_device_end(e->trace, e->h2d, span);
        if (!rc2) rc2 = gather_bucket_weights(e, bk, b);
        rep->pcie_h2d_bytes += ok ? bk->own_numel * e->esize : 0;
        rep->collective_bytes += collective_bytes(e, bk);
    } else if (ok && !rc2) {
        char name[40];
        snprintf(name, sizeof name, "h2d b%zu", b);
        int span = zoff_trace_device_begin(e->trace, e->h2d, "h2d", name);
        void *dst = e->params ? param_store_bucket_device(e->params, b)
                              : (char *)e->dparams + bk->offset * e->esize;
        rc2 = zoff_dev_memcpy_async(e->h2d, dst, e->param_ring[q], bk->numel * e->esize,
                                    ZOFF_COPY_H2D);
        zoff_trace_device_end(e->trace, e->h2d, span);
        rep->pcie_h2d_bytes += bk->numel * e->esize;
    }
    if (!rc2) rc2 = zoff_dev_stream_write_value(e->h2d, &e->ctr->h2d_count, h + 1);
    if (!rc2) rc2 = zoff_dev_stream_write_value(e->h2d, &e->version[b], (uint32_t)(step + 1));
    e->h2d_issued = h + 1;
    if (rc2) engine_set_error(e, rc2);
    return rc ? rc : rc2;
}

/* A skipped bucket: weights unchanged, its version advanced in order behind earlier copies. */
static void skip_bucket(zoff_engine *e, size_t b, int64_t step) {
    /* a streamed bucket's version is written by the host only (never behind a copy) */
    int rc = e->params && param_store_bucket_streamed(e->params, b)
                 ? zoff_dev_host_write_value(e->dev, &e->version[b], (uint32_t)(step + 1))
                 : zoff_dev_stream_write_value(e->h2d, &e->version[b], (uint32_t)(step + 1));
    if (rc) engine_set_error(e, rc);
}

static void skip_step(zoff_engine *e, int64_t step) {
    for (size_t b = 0; b < e->n_buckets; b++)
        skip_bucket(e, b, step);
}

static void finish_report(zoff_engine *e, int set, const work_item *w,
                          zoff_engine_step_report *rep) {
    uint64_t nr, nw;
    double nvme_ms;
    state_store_take_counters(e->store, &nr, &nw, &nvme_ms);
    rep->step = w->step;
    rep->skipped = w->skip;
    rep->grad_norm = w->grad_norm;
    rep->clip_coef = w->clip_coef;
    rep->loss_scale = w->loss_scale;
    rep->pcie_d2h_bytes = e->rx[set].pcie_d2h_bytes;
    rep->cpu_wait_grad_ms = e->rx[set].cpu_wait_grad_ms;
    rep->cpu_adam_ms += e->rx[set].cpu_adam_ms;
    rep->cpu_pass_bytes += e->rx[set].cpu_pass_bytes;
    rep->collective_bytes += e->rx[set].collective_bytes;
    rep->pcie_h2d_bytes += e->rx[set].pcie_h2d_bytes + w->fetch_bytes;
    rep->param_fetch_bytes = w->fetch_bytes;
    rep->param_refetch_bytes = w->refetch_bytes;
    rep->param_fetches = w->fetches;
    rep->param_nvme_read_bytes = w->nvme_read_bytes;
    if (e->params) rep->param_nvme_write_bytes = param_store_take_nvme_written(e->params);
    rep->nvme_read_bytes = nr;
    rep->nvme_write_bytes = nw;
    rep->nvme_wait_ms = nvme_ms;
    rep->step_ms = now_ms() - e->rx_first_ms[set];
    pthread_mutex_lock(&e->lock);
    e->last_report = *rep;
    e->reports[w->step % ENGINE_REPORTS] = *rep;
    e->have_report = true;
    e->steps_completed = w->step + 1;
    e->set_busy[set] = false;
    pthread_cond_broadcast(&e->cond);
    pthread_mutex_unlock(&e->lock);
}

/* --- receiver -------------------------------------------------------------------------- */

static void release_ring_slot(zoff_engine *e, uint32_t fill) {
    int rc = zoff_dev_host_write_value(e->dev, &e->ctr->consumed, fill + 1);
    if (rc) engine_set_error(e, rc);
}

/* dst (fp32) = or += src (dtype), through the pool's vectorized cast. */
static int accumulate(zoff_engine *e, float *dst, const void *src, size_t n, int first) {
    if (first) return zoff_adam_cast(e->pool, src, e->cfg.dtype, dst, ZOFF_F32, n);
    int rc = zoff_adam_cast(e->pool, src, e->cfg.dtype, e->accum_scratch, ZOFF_F32, n);
    for (size_t i = 0; !rc && i < n; i++)
        dst[i] += e->accum_scratch[i];
    return rc;
}

static int claim_set(zoff_engine *e, int set, int64_t step) {
    pthread_mutex_lock(&e->lock);
    while (e->set_busy[set] && !e->error)
        pthread_cond_wait(&e->cond, &e->lock);
    pthread_mutex_unlock(&e->lock);
    if (e->set_step[set] == step) return 0;
    e->set_step[set] = step;
    memset(e->bucket_sumsq[set], 0, e->n_buckets * sizeof(double));
    memset(e->bucket_nonfinite[set], 0, e->n_buckets * sizeof(bool));
    memset(&e->rx[set], 0, sizeof e->rx[set]);
    e->rx_first_ms[set] = 0;
    return 0;
}

static void receive_fill(zoff_engine *e, const work_item *w) {
    int set = (int)(w->step % e->n_sets);
    claim_set(e, set, w->step);
    engine_bucket *bk = &e->buckets[w->bucket];
    int r = (int)(w->fill % (uint32_t)e->n_grad_ring);
    double t0 = now_ms();
    int rc = zoff_dev_host_wait_value(e->dev, &e->ctr->d2h_count, w->fill + 1);
    double t1 = now_ms();
    if (rc) engine_set_error(e, rc);
    if (!e->rx_first_ms[set]) e->rx_first_ms[set] = t1;
    e->rx[set].cpu_wait_grad_ms += t1 - t0;
    e->rx[set].pcie_d2h_bytes += bk->own_numel * e->esize;
    e->rx[set].collective_bytes += collective_bytes(e, bk);
    const void *ring = e->grad_ring[r];
    const float *stats = &e->grad_ring_stats[2 * r];
    e->bucket_sumsq[set][w->bucket] += stats[0];
    if (stats[1] != 0.0f) e->bucket_nonfinite[set][w->bucket] = true;
    int last_micro = w->micro == e->cfg.grad_accum_steps - 1;
    int overlap = e->cfg.schedule == ZOFF_SCHEDULE_OVERLAP;
    if (has_error(e)) {
        release_ring_slot(e, w->fill);
        if (overlap && last_micro) skip_step(e, w->step); /* keep versions moving */
        return;
    }
    /* (several ranks: the gradients came divided by their number, zoff_engine_loss_scale) */
    float scale = 1.0f / w->loss_scale;
    /* overlap: the receiver is the only thread that applies steps (no updater runs) */
    int64_t t = overlap ? e->applied_steps + 1 : 0;
    if (e->cfg.grad_accum_steps > 1) {
        float *dst = e->grad_accum[set] + bk->host_offset;
        rc = accumulate(e, dst, ring, bk->own_numel, w->micro == 0);
        /* a cast (16-bit in, fp32 out: into dst, or after the first micro-batch into the
         * scratch, then the sum: two fp32 reads, one write) */
        e->rx[set].cpu_pass_bytes += (uint64_t)bk->own_numel * (e->esize + 4 + (w->micro ? 12 : 0));
        release_ring_slot(e, w->fill);
        if (!rc && overlap && last_micro) {
            if (e->cfg.skip_updates)
                skip_bucket(e, w->bucket, w->step);
            else
                rc = update_bucket(e, w->bucket, dst, ZOFF_F32, scale, w->lr, t, w->step,
                                   &e->rx[set]);
        }
    } else if (overlap && e->cfg.skip_updates) {
        skip_bucket(e, w->bucket, w->step);
        release_ring_slot(e, w->fill);
    } else if (overlap) {
        /* read ahead the bucket that followed this one last step: arrival order repeats */
        if (e->last_arrival != SIZE_MAX) e->next_arrival[e->last_arrival] = w->bucket;
        e->last_arrival = w->bucket;
        if (e->next_arrival[w->bucket] != SIZE_MAX)
            state_store_prefetch(e->store, e->next_arrival[w->bucket]);
        rc = update_bucket(e, w->bucket, ring, e->cfg.dtype, scale, w->lr, t, w->step, &e->rx[set]);
        release_ring_slot(e, w->fill);
    } else {
        memcpy((char *)e->grad_host[set] + bk->host_offset * e->esize, ring,
               bk->own_numel * e->esize);
        e->rx[set].cpu_pass_bytes += 2 * (uint64_t)bk->own_numel * e->esize;
        release_ring_slot(e, w->fill);
    }
    if (rc) engine_set_error(e, rc);
}

/* The receiver's end of a step: global norm, clipping, overflow, loss scale. */
static void decide_step(zoff_engine *e, work_item *w) {
    int set = (int)(w->step % e->n_sets);
    claim_set(e, set, w->step);
    double total = 0;
    bool nonfinite = false;
    for (size_t b = 0; b < e->n_buckets; b++) {
        if (e->cfg.grad_accum_steps > 1 && !has_error(e)) {
            /* the norm of the accumulated gradient, not the sum of the micro-batches' */
            const engine_bucket *bk = &e->buckets[b];
            double sq = 0;
            int rc = bk->own_numel ? zoff_adam_sumsq(e->pool, e->grad_accum[set] + bk->host_offset,
                                                     ZOFF_F32, bk->own_numel, &sq)
                                   : 0;
            if (rc) engine_set_error(e, rc);
            e->bucket_sumsq[set][b] = sq;
            e->rx[set].cpu_pass_bytes += (uint64_t)bk->own_numel * 4;
        }
        total += e->bucket_sumsq[set][b];
        if (e->bucket_nonfinite[set][b] || !isfinite(e->bucket_sumsq[set][b])) nonfinite = true;
    }
    if (e->world > 1) { /* the global gradient: every rank's blocks */
        double g[2] = {total, nonfinite ? 1.0 : 0.0};
        int rc = zoff_dist_allreduce_f64(e->dist, g, 2, ZOFF_DIST_SUM);
        if (rc) engine_set_error(e, rc);
        total = g[0];
        nonfinite = g[1] != 0.0;
    }
    w->grad_norm = nonfinite ? NAN : sqrt(total) / w->loss_scale;
    w->clip_coef = 1.0;
    if (!nonfinite && e->cfg.clip_norm > 0 && w->grad_norm > e->cfg.clip_norm)
        w->clip_coef = e->cfg.clip_norm / (w->grad_norm + 1e-6);
    w->grad_scale = (float)(w->clip_coef / w->loss_scale);
    w->skip = (nonfinite && e->cfg.schedule != ZOFF_SCHEDULE_OVERLAP) || e->cfg.skip_updates;
    if (nonfinite && e->cfg.dtype != ZOFF_F16 && !e->warned_nonfinite) {
        zoff_log(ZOFF_LOG_WARN, MOD, "step %lld: gradient has inf/nan%s", (long long)w->step,
                 w->skip ? ": step skipped" : " (overlap schedule: already applied)");
        e->warned_nonfinite = true;
    }
    if (e->cfg.dtype == ZOFF_F16) { /* dynamic loss scaling */
        if (nonfinite) {
            e->loss_scale = fmaxf(e->loss_scale * 0.5f, e->cfg.loss_scale_min);
            e->good_steps = 0;
            zoff_log(ZOFF_LOG_INFO, MOD, "step %lld: fp16 overflow, skipped; loss scale now %g",
                     (long long)w->step, e->loss_scale);
        } else if (++e->good_steps >= e->cfg.loss_scale_window) {
            e->loss_scale *= 2.0f;
            e->good_steps = 0;
        }
    }
    pthread_mutex_lock(&e->lock);
    e->decided_scale = e->loss_scale;
    pthread_mutex_unlock(&e->lock);
    int rc = zoff_dev_host_write_value(e->dev, &e->ctr->decided, (uint32_t)(w->step + 1));
    if (rc) engine_set_error(e, rc);
}

static void receiver_step_end(zoff_engine *e, work_item *w) {
    decide_step(e, w);
    int set = (int)(w->step % e->n_sets);
    if (e->cfg.schedule == ZOFF_SCHEDULE_OVERLAP) {
        if (!w->skip) e->applied_steps++;
        zoff_engine_step_report rep = {0};
        finish_report(e, set, w, &rep);
        return;
    }
    pthread_mutex_lock(&e->lock);
    e->set_busy[set] = true;
    pthread_mutex_unlock(&e->lock);
    if (updater_push(e, w)) engine_set_error(e, -ENOMEM);
}

void *engine_receiver_main(void *arg) {
    zoff_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        work_item w = pop(e, &e->queue, &e->q_head, &e->q_len, &e->q_cap);
        pthread_mutex_unlock(&e->lock);
        if (w.kind == WORK_STOP) break;
        if (w.kind == WORK_FILL)
            receive_fill(e, &w);
        else
            receiver_step_end(e, &w);
    }
    if (e->updater_started) {
        work_item stop = {.kind = WORK_STOP};
        if (updater_push(e, &stop)) engine_set_error(e, -ENOMEM);
    }
    return NULL;
}

/* --- updater --------------------------------------------------------------------------- */

static void apply_step(zoff_engine *e, const work_item *w) {
    int set = (int)(w->step % e->n_sets);
    zoff_engine_step_report rep = {0};
    if (w->skip || has_error(e)) {
        skip_step(e, w->step);
    } else {
        int64_t t = e->applied_steps + 1;
        int accum = e->cfg.grad_accum_steps > 1;
        for (size_t b = 0; b < e->n_buckets; b++) {
            if (b + 1 < e->n_buckets) state_store_prefetch(e->store, b + 1);
            const engine_bucket *bk = &e->buckets[b];
            const void *g =
                accum ? (const void *)(e->grad_accum[set] + bk->host_offset)
                      : (const void *)((char *)e->grad_host[set] + bk->host_offset * e->esize);
            update_bucket(e, b, g, accum ? ZOFF_F32 : e->cfg.dtype, w->grad_scale, w->lr, t,
                          w->step, &rep);
        }
        e->applied_steps++;
    }
    finish_report(e, set, w, &rep);
}

void *engine_updater_main(void *arg) {
    zoff_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        work_item w = pop(e, &e->uqueue, &e->uq_head, &e->uq_len, &e->uq_cap);
        pthread_mutex_unlock(&e->lock);
        if (w.kind == WORK_STOP) break;
        apply_step(e, &w);
    }
    return NULL;
}
