/* The trainer-facing calls of the offload engine (trainer thread only): stream-side waits
 * for weights, device bucket slots for gradients, and the issue of each full bucket's D2H
 * copy into the pinned gradient ring. Nothing here blocks on the pipeline except the fp16
 * loss-scale look-up, which waits for the previous step's overflow decision. */
#include "core/log.h"
#include "offload/engine_internal.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

uint32_t engine_required_version(const zoff_engine *e) {
    int64_t s = e->step;
    /* DPU past its warm-up (counting the steps of a resumed state): one step stale. The first
     * step after a resume has nothing in flight: its weights are the loaded ones. */
    if (e->cfg.schedule == ZOFF_SCHEDULE_DPU && s + e->step_base > e->cfg.dpu_warmup_steps && s > 0)
        s -= 1;
    return (uint32_t)s;
}

int engine_worker_error(zoff_engine *e) {
    char detail[512];
    pthread_mutex_lock(&e->lock);
    int err = e->error;
    if (err) snprintf(detail, sizeof detail, "%s", e->error_detail);
    pthread_mutex_unlock(&e->lock);
    /* the failure happened on an engine thread: give the caller its detail (logged there) */
    if (err) zoff_fail_quiet(err, MOD, "offload pipeline failed: %s", detail);
    return err;
}

static int check_tensor(zoff_engine *e, size_t tensor, zoff_dev_stream *s) {
    if (!e || !s) return -EINVAL;
    if (tensor >= e->n_tensors)
        return zoff_fail(-EINVAL, MOD, "tensor index %zu out of range (%zu tensors registered)",
                         tensor, e->n_tensors);
    return engine_worker_error(e);
}

int zoff_engine_acquire_group(zoff_engine *e, size_t group, zoff_dev_stream *s, void **base) {
    if (!e || !s || !base) return -EINVAL;
    if (!e->params)
        return zoff_fail(-EINVAL, MOD, "acquire_group: the weights are not streamed (params none)");
    int rc = engine_worker_error(e);
    return rc ? rc : param_store_acquire(e->params, group, s, base);
}

int zoff_engine_release_groups(zoff_engine *e, zoff_dev_stream *s) {
    if (!e || !s) return -EINVAL;
    return e->params ? param_store_release(e->params, s) : 0;
}

int zoff_engine_wait_params(zoff_engine *e, size_t tensor, zoff_dev_stream *s) {
    int rc = check_tensor(e, tensor, s);
    if (rc) return rc;
    if (e->params)
        return zoff_fail(-EINVAL, MOD,
                         "wait_params on streamed weights: use zoff_engine_acquire_group");
    size_t b = e->tensor_bucket[tensor];
    return zoff_dev_stream_wait_value(s, &e->version[b], engine_required_version(e));
}

/* A device slot for bucket b: one whose previous gradient is complete (its copy out may still
 * be in flight: the stream waits for that), least recently used first. */
static int assign_slot(zoff_engine *e, size_t b, zoff_dev_stream *s) {
    int best = -1;
    for (int k = 0; k < e->n_slots; k++)
        if (!e->slot_open[k] && (best < 0 || e->slot_uses[k] < e->slot_uses[best] ||
                                 (e->slot_uses[k] == e->slot_uses[best] && e->slot_owner[k] < 0)))
            best = k;
    if (best < 0)
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "all %d device bucket slots hold gradients still being written when "
                         "tensor '%s' needs one: raise device_slots",
                         e->n_slots, e->tensors[e->buckets[b].first_tensor].name);
    engine_bucket *bk = &e->buckets[b];
    int rc = zoff_dev_stream_wait_value(s, &e->slot_free[best], e->slot_uses[best]);
    /* several ranks: the padding up to world whole blocks takes part in the reduce-scatter */
    if (!rc) rc = zoff_dev_memset_async(s, e->slot_buf[best], 0, bk->shard * e->world * e->esize);
    if (rc) return rc;
    e->slot_open[best] = true;
    e->slot_owner[best] = (int)b;
    bk->slot = best;
    return 0;
}

int zoff_engine_grad_buffer(zoff_engine *e, size_t tensor, zoff_dev_stream *s, void **grad) {
    int rc = check_tensor(e, tensor, s);
    if (rc) return rc;
    if (!grad) return -EINVAL;
    size_t b = e->tensor_bucket[tensor];
    engine_bucket *bk = &e->buckets[b];
    if (bk->slot >= 0 && !e->slot_open[bk->slot])
        return zoff_fail(-EINVAL, MOD,
                         "gradient of tensor '%s' asked for after its bucket was complete",
                         e->tensors[tensor].name);
    if (bk->slot < 0 && (rc = assign_slot(e, b, s))) return rc;
    *grad = (char *)e->slot_buf[bk->slot] + (e->tensors[tensor].offset - bk->offset) * e->esize;
    return 0;
}

/* fp16: the scale of the current step, fixed at its first use. */
static int current_scale(zoff_engine *e, float *scale) {
    if (e->cfg.dtype != ZOFF_F16) {
        *scale = 1.0f;
        return 0;
    }
    if (e->loss_scale_used > 0) {
        *scale = e->loss_scale_used;
        return 0;
    }
    /* wait for every earlier step's overflow decision */
    int rc = zoff_dev_host_wait_value(e->dev, &e->ctr->decided, (uint32_t)e->step);
    if (rc) return rc;
    pthread_mutex_lock(&e->lock);
    e->loss_scale_used = e->decided_scale;
    pthread_mutex_unlock(&e->lock);
    *scale = e->loss_scale_used;
    return 0;
}

int zoff_engine_set_lr(zoff_engine *e, float lr) {
    if (!e || !isfinite(lr) || lr < 0)
        return zoff_fail(ZOFF_ECONFIG, MOD, "learning rate %g must be finite and >= 0", (double)lr);
    e->lr = lr;
    return 0;
}

int zoff_engine_loss_scale(zoff_engine *e, float *scale) {
    if (!e || !scale) return -EINVAL;
    int rc = engine_worker_error(e);
    if (!rc) rc = current_scale(e, scale);
    /* several ranks: each gradient comes divided by the ranks (before the 16-bit sum, as
     * DeepSpeed's pre-divide), so the reduce-scatter leaves their mean */
    if (!rc && e->world > 1) *scale /= (float)e->world;
    return rc;
}

/* Several ranks: on the reduce-scatter stream, after the bucket's compute on s, every rank's
 * gradient of the bucket is summed into each rank's own block of the slot (in place). Returns
 * the stream that holds the summed block. */
static int reduce_bucket(zoff_engine *e, const engine_bucket *bk, int k, zoff_dev_stream *s,
                         zoff_dev_stream **out) {
    *out = s;
    if (e->world == 1) return 0;
    size_t b = (size_t)(bk - e->buckets);
    int rc = zoff_dev_event_record(e->slot_ready[k], s);
    if (!rc) rc = zoff_dev_stream_wait_event(e->rs, e->slot_ready[k]);
    if (rc) return rc;
    char name[48];
    snprintf(name, sizeof name, "reduce-scatter b%zu", b);
    int span = zoff_trace_device_begin(e->trace, e->rs, "reduce-scatter", name);
    char *slot = e->slot_buf[k];
    rc = zoff_dev_reduce_scatter(e->rs, e->rs_comm, slot, slot + bk->shard * e->rank * e->esize,
                                 bk->shard, e->cfg.dtype);
    zoff_trace_device_end(e->trace, e->rs, span);
    *out = e->rs;
    return rc;
}

/* The bucket in slot k is complete: the reduce-scatter (several ranks), the statistics of
 * this rank's block, then the block's copy into the gradient ring. */
static int send_bucket(zoff_engine *e, size_t b, zoff_dev_stream *s) {
    engine_bucket *bk = &e->buckets[b];
    int k = bk->slot;
    float scale;
    int rc = current_scale(e, &scale);
    if (rc) return rc;
    uint32_t i = e->fills_issued;
    int r = (int)(i % (uint32_t)e->n_grad_ring);
    size_t bytes = bk->own_numel * e->esize;
    float *stats = &e->slot_stats[2 * k];
    zoff_dev_stream *gs; /* where the own block is final */
    rc = reduce_bucket(e, bk, k, s, &gs);
    char *own = (char *)e->slot_buf[k] + (bk->own_offset - bk->offset) * e->esize;
    if (!rc && bk->own_numel)
        rc = zoff_dev_op_sumsq_nonfinite(gs, own, e->cfg.dtype, bk->own_numel, stats);
    else if (!rc)
        rc = zoff_dev_memset_async(gs, stats, 0, 2 * sizeof(float));
    if (!rc) rc = zoff_dev_event_record(e->slot_ready[k], gs);
    if (!rc) rc = zoff_dev_stream_wait_event(e->d2h, e->slot_ready[k]);
    if (!rc && i >= (uint32_t)e->n_grad_ring)
        rc =
            zoff_dev_stream_wait_value(e->d2h, &e->ctr->consumed, i - (uint32_t)e->n_grad_ring + 1);
    if (rc) return rc;
    char name[48];
    snprintf(name, sizeof name, "d2h b%zu", b);
    int span = zoff_trace_device_begin(e->trace, e->d2h, "d2h", name);
    if (bytes) rc = zoff_dev_memcpy_async(e->d2h, e->grad_ring[r], own, bytes, ZOFF_COPY_D2H);
    if (!rc)
        rc = zoff_dev_memcpy_async(e->d2h, &e->grad_ring_stats[2 * r], stats, 2 * sizeof(float),
                                   ZOFF_COPY_D2H);
    zoff_trace_device_end(e->trace, e->d2h, span);
    if (!rc) rc = zoff_dev_stream_write_value(e->d2h, &e->slot_free[k], ++e->slot_uses[k]);
    if (!rc) rc = zoff_dev_stream_write_value(e->d2h, &e->ctr->d2h_count, i + 1);
    if (rc) return rc;
    e->fills_issued = i + 1;
    e->slot_open[k] = false;
    work_item w = {.kind = WORK_FILL,
                   .fill = i,
                   .bucket = b,
                   .micro = e->micro,
                   .step = e->step,
                   .loss_scale = scale,
                   .lr = e->lr};
    return engine_queue_push(e, &w);
}

int zoff_engine_grad_done(zoff_engine *e, size_t tensor, zoff_dev_stream *s) {
    int rc = check_tensor(e, tensor, s);
    if (rc) return rc;
    size_t b = e->tensor_bucket[tensor];
    engine_bucket *bk = &e->buckets[b];
    if (e->tensor_done[tensor])
        return zoff_fail(-EINVAL, MOD, "tensor '%s' marked done twice in one micro-batch",
                         e->tensors[tensor].name);
    if (bk->slot < 0 && (rc = assign_slot(e, b, s))) return rc; /* never written: zero grad */
    e->tensor_done[tensor] = true;
    if (++bk->tensors_done < bk->n_tensors) return 0;
    return send_bucket(e, b, s);
}

int zoff_engine_end_micro(zoff_engine *e, zoff_dev_stream *s) {
    if (!e || !s) return -EINVAL;
    int rc = engine_worker_error(e);
    if (rc) return rc;
    for (size_t t = 0; t < e->n_tensors; t++)
        if (!e->tensor_done[t])
            return zoff_fail(-EINVAL, MOD,
                             "micro-batch ended before the gradient of tensor '%s' was done",
                             e->tensors[t].name);
    for (size_t b = 0; b < e->n_buckets; b++) {
        e->buckets[b].slot = -1;
        e->buckets[b].tensors_done = 0;
    }
    memset(e->tensor_done, 0, e->n_tensors * sizeof *e->tensor_done);
    work_item w = {
        .kind = WORK_STEP_END, .step = e->step, .loss_scale = e->loss_scale_used, .lr = e->lr};
    bool last = e->micro + 1 >= e->cfg.grad_accum_steps;
    if (e->params && (rc = param_store_end_micro(e->params, s, last ? &w : NULL))) return rc;
    if (++e->micro < e->cfg.grad_accum_steps) return 0;
    /* the optimizer step is complete on the trainer's side */
    rc = zoff_dev_stream_write_value(s, &e->ctr->step_end, (uint32_t)(e->step + 1));
    if (rc) return rc;
    if (w.loss_scale <= 0) w.loss_scale = 1.0f;
    rc = engine_queue_push(e, &w);
    e->micro = 0;
    e->step++;
    e->loss_scale_used = 0;
    return rc;
}
