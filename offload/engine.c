/* The offload engine's life cycle: configuration and its checks, registration of the
 * parameter buffer and tensors, allocation of the bounded device slots and pinned rings, the
 * CPU threads, flush, reports, and tear-down. See engine_internal.h for the pipeline. */
#include "core/log.h"
#include "offload/engine_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void zoff_engine_config_default(zoff_engine_config *c) {
    memset(c, 0, sizeof *c);
    c->target = ZOFF_OFFLOAD_CPU;
    c->schedule = ZOFF_SCHEDULE_SYNC;
    c->dpu_warmup_steps = 2;
    c->dtype = ZOFF_BF16;
    c->moment_dtype = ZOFF_F32;
    c->bucket_bytes = (size_t)32 << 20;
    c->device_slots = 3;
    c->grad_ring_slots = 3;
    c->param_ring_slots = 2;
    zoff_optimizer_defaults d = zoff_optimizer_get_defaults(); /* shared with the trainer */
    c->lr = d.lr;
    c->beta1 = d.beta1;
    c->beta2 = d.beta2;
    c->eps = d.eps;
    c->weight_decay = d.weight_decay;
    c->clip_norm = d.grad_clip;
    c->adamw = 1;
    c->grad_accum_steps = 1;
    c->loss_scale_init = d.loss_scale_init;
    c->loss_scale_window = d.loss_scale_window;
    c->loss_scale_min = d.loss_scale_min;
    c->cpu_isa = -1;
    c->nvme_checksums = 1;
    c->nvme_queue_depth = 32;
    c->params = ZOFF_PARAMS_DEVICE;
    c->prefetch_depth = 2;
}

const char *zoff_param_location_name(zoff_param_location p) {
    return p == ZOFF_PARAMS_DEVICE ? "none"
           : p == ZOFF_PARAMS_CPU  ? "cpu"
           : p == ZOFF_PARAMS_NVME ? "nvme"
                                   : "?";
}

const char *zoff_schedule_name(zoff_schedule s) {
    switch (s) {
    case ZOFF_SCHEDULE_SYNC:
        return "sync";
    case ZOFF_SCHEDULE_OVERLAP:
        return "overlap";
    case ZOFF_SCHEDULE_DPU:
        return "dpu";
    }
    return "?";
}

int zoff_schedule_parse(const char *text, zoff_schedule *out) {
    for (int s = 0; s <= ZOFF_SCHEDULE_DPU; s++)
        if (text && strcmp(text, zoff_schedule_name((zoff_schedule)s)) == 0) {
            *out = (zoff_schedule)s;
            return 0;
        }
    return -EINVAL;
}

const char *zoff_offload_target_name(zoff_offload_target t) {
    return t == ZOFF_OFFLOAD_CPU ? "cpu" : t == ZOFF_OFFLOAD_NVME ? "nvme" : "?";
}

static int bad(const char *field, const char *why) {
    return zoff_fail(ZOFF_ECONFIG, MOD, "engine config: %s %s", field, why);
}

static int check_config(const zoff_engine_config *c) {
    if (c->target != ZOFF_OFFLOAD_CPU && c->target != ZOFF_OFFLOAD_NVME)
        return bad("target", "must be cpu or nvme");
    if ((unsigned)c->schedule > ZOFF_SCHEDULE_DPU)
        return bad("schedule", "must be sync, overlap or dpu");
    if (c->dtype != ZOFF_BF16 && c->dtype != ZOFF_F16 && c->dtype != ZOFF_F32)
        return bad("dtype", "must be bf16, f16 or f32");
    if (c->moment_dtype != ZOFF_F32 && c->moment_dtype != ZOFF_BF16)
        return bad("moment_dtype", "must be f32 or bf16");
    if (c->bucket_bytes < 4096) return bad("bucket_bytes", "must be at least 4096");
    if (c->device_slots < 2) return bad("device_slots", "must be at least 2");
    if (c->grad_ring_slots < 1 || c->param_ring_slots < 1)
        return bad("ring slots", "must be at least 1");
    if (c->grad_accum_steps < 1) return bad("grad_accum_steps", "must be at least 1");
    if (c->dpu_warmup_steps < 0) return bad("dpu_warmup_steps", "must be >= 0");
    if (!isfinite(c->lr) || c->lr < 0) return bad("lr", "must be a finite number >= 0");
    if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
        return bad("beta1/beta2", "must be in [0, 1)");
    if (!(c->eps >= 0) || !(c->clip_norm >= 0) || !isfinite(c->weight_decay))
        return bad("eps/clip_norm/weight_decay", "must be finite and >= 0");
    if (c->dtype == ZOFF_F16 && !(c->loss_scale_init >= 1 && c->loss_scale_window >= 1))
        return bad("loss_scale_init/window", "must be >= 1 for fp16");
    if (c->schedule == ZOFF_SCHEDULE_OVERLAP && (c->clip_norm > 0 || c->dtype == ZOFF_F16))
        return bad("schedule overlap",
                   "updates each bucket as it arrives, so it cannot clip by the global norm or "
                   "check fp16 overflow first: use sync or dpu");
    if (c->target == ZOFF_OFFLOAD_NVME && c->n_nvme_dirs == 0)
        return bad("nvme_dirs", "must name at least one directory for the nvme target");
    if (c->n_nvme_dirs > 16) return bad("nvme_dirs", "at most 16");
    if ((unsigned)c->params > ZOFF_PARAMS_NVME) return bad("params", "must be device, cpu or nvme");
    if (c->params == ZOFF_PARAMS_NVME && c->n_nvme_dirs == 0)
        return bad("nvme_dirs", "must name at least one directory for weights on nvme");
    if (zoff_dist_size(c->dist) > 1 && c->params != ZOFF_PARAMS_DEVICE)
        return bad("params", "must be device (resident weights) with several ranks: streamed "
                             "weights are not partitioned across ranks yet");
    return 0;
}

static int check_tensors(const zoff_engine_tensor *t, size_t n, size_t n_params) {
    if (!t || n == 0) return bad("tensors", "none registered");
    size_t end = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = t[i].name ? t[i].name : "(unnamed)";
        if (t[i].numel == 0)
            return zoff_fail(ZOFF_ECONFIG, MOD, "tensor %zu '%s' has no elements", i, name);
        if (t[i].offset < end)
            return zoff_fail(ZOFF_ECONFIG, MOD,
                             "tensor %zu '%s' at offset %zu overlaps or precedes the previous one "
                             "(tensors must be in increasing offset order)",
                             i, name, t[i].offset);
        end = t[i].offset + t[i].numel;
        if (end > n_params)
            return zoff_fail(ZOFF_ECONFIG, MOD,
                             "tensor %zu '%s' ends at %zu, past the %zu parameters", i, name, end,
                             n_params);
    }
    return 0;
}

static int alloc_pinned(zoff_engine *e, size_t bytes, void **p) {
    int rc = zoff_dev_host_alloc(e->dev, bytes, p);
    if (rc) return zoff_fail(rc, MOD, "cannot allocate %zu bytes of pinned staging memory", bytes);
    memset(*p, 0, bytes);
    return 0;
}

/* Data parallelism: the stream and communicators of the collectives and the all-gather's
 * buffer, created in the same order on every rank (creating a communicator is collective). */
static int alloc_collectives(zoff_engine *e) {
    int rc;
    if ((rc = zoff_dist_dup(e->cfg.dist, &e->dist))) return rc;
    if ((rc = zoff_dev_comm_create(e->dev, e->cfg.dist, &e->rs_comm))) return rc;
    if ((rc = zoff_dev_comm_create(e->dev, e->cfg.dist, &e->ag_comm))) return rc;
    if ((rc = zoff_dev_stream_create(e->dev, &e->rs))) return rc;
    if ((rc = zoff_dev_malloc(e->dev, e->slot_elems * e->esize, &e->gather_buf)))
        return zoff_fail(rc, MOD, "no device memory for the all-gather buffer of %zu bytes",
                         e->slot_elems * e->esize);
    return 0;
}

static int alloc_device_side(zoff_engine *e) {
    size_t slot_bytes = e->slot_elems * e->esize, ring_bytes = e->own_max * e->esize;
    int n = e->n_slots;
    e->slot_buf = calloc((size_t)n, sizeof *e->slot_buf);
    e->slot_owner = calloc((size_t)n, sizeof *e->slot_owner);
    e->slot_open = calloc((size_t)n, sizeof *e->slot_open);
    e->slot_uses = calloc((size_t)n, sizeof *e->slot_uses);
    e->slot_ready = calloc((size_t)n, sizeof *e->slot_ready);
    e->tensor_done = calloc(e->n_tensors, sizeof *e->tensor_done);
    if (!e->slot_buf || !e->slot_owner || !e->slot_open || !e->slot_uses || !e->slot_ready ||
        !e->tensor_done)
        return -ENOMEM;
    int rc;
    for (int k = 0; k < n; k++) {
        e->slot_owner[k] = -1;
        if ((rc = zoff_dev_malloc(e->dev, slot_bytes, &e->slot_buf[k])))
            return zoff_fail(rc, MOD, "no device memory for %d gradient buckets of %zu bytes", n,
                             slot_bytes);
        if ((rc = zoff_dev_event_create(e->dev, &e->slot_ready[k]))) return rc;
    }
    if ((rc = zoff_dev_malloc(e->dev, (size_t)n * 2 * sizeof(float), (void **)&e->slot_stats)))
        return rc;
    if ((rc = zoff_dev_stream_create(e->dev, &e->d2h))) return rc;
    if ((rc = zoff_dev_stream_create(e->dev, &e->h2d))) return rc;
    if (e->world > 1 && (rc = alloc_collectives(e))) return rc;

    size_t ctr_bytes = sizeof(engine_counters) + ((size_t)n + e->n_buckets) * sizeof(uint32_t);
    if ((rc = alloc_pinned(e, ctr_bytes, (void **)&e->ctr))) return rc;
    e->slot_free = (uint32_t *)(e->ctr + 1);
    e->version = e->slot_free + n;
    e->grad_ring = calloc((size_t)e->n_grad_ring, sizeof *e->grad_ring);
    e->param_ring = calloc((size_t)e->n_param_ring, sizeof *e->param_ring);
    if (!e->grad_ring || !e->param_ring) return -ENOMEM;
    /* the rings carry this rank's blocks only */
    if (ring_bytes == 0) ring_bytes = e->esize;
    for (int r = 0; r < e->n_grad_ring; r++)
        if ((rc = alloc_pinned(e, ring_bytes, &e->grad_ring[r]))) return rc;
    if ((rc = alloc_pinned(e, (size_t)e->n_grad_ring * 2 * sizeof(float),
                           (void **)&e->grad_ring_stats)))
        return rc;
    for (int r = 0; r < e->n_param_ring; r++)
        if ((rc = alloc_pinned(e, ring_bytes, &e->param_ring[r]))) return rc;
    return 0;
}

static int alloc_host_side(zoff_engine *e) {
    int accum = e->cfg.grad_accum_steps > 1;
    for (int s = 0; s < e->n_sets; s++) {
        e->set_step[s] = -1;
        e->bucket_sumsq[s] = calloc(e->n_buckets, sizeof(double));
        e->bucket_nonfinite[s] = calloc(e->n_buckets, sizeof(bool));
        if (!e->bucket_sumsq[s] || !e->bucket_nonfinite[s]) return -ENOMEM;
        /* this rank's blocks, compact (bucket host_offset) */
        if (accum) {
            e->grad_accum[s] = malloc((e->n_own ? e->n_own : 1) * sizeof(float));
            if (!e->grad_accum[s])
                return zoff_fail(-ENOMEM, MOD, "no memory for gradient accumulation");
        } else if (e->cfg.schedule != ZOFF_SCHEDULE_OVERLAP) {
            e->grad_host[s] = malloc((e->n_own ? e->n_own : 1) * e->esize);
            if (!e->grad_host[s])
                return zoff_fail(-ENOMEM, MOD, "no memory for the host gradient copy");
        }
    }
    if (accum && !(e->accum_scratch = malloc((e->own_max ? e->own_max : 1) * sizeof(float))))
        return -ENOMEM;
    e->next_arrival = malloc(e->n_buckets * sizeof *e->next_arrival);
    if (!e->next_arrival) return -ENOMEM;
    for (size_t b = 0; b < e->n_buckets; b++)
        e->next_arrival[b] = SIZE_MAX;
    e->last_arrival = SIZE_MAX;
    return 0;
}

/* fp32 master weights from the device's parameters, when the trainer gives none. */
static int master_from_device(zoff_engine *e, float **out) {
    void *tmp = malloc(e->n_params * e->esize);
    float *master = malloc(e->n_params * sizeof(float));
    int rc = (!tmp || !master) ? -ENOMEM : 0;
    if (!rc) rc = zoff_dev_memcpy(e->dev, tmp, e->dparams, e->n_params * e->esize, ZOFF_COPY_D2H);
    if (!rc) rc = zoff_adam_cast(e->pool, tmp, e->cfg.dtype, master, ZOFF_F32, e->n_params);
    free(tmp);
    if (rc) {
        free(master);
        return rc;
    }
    *out = master;
    return 0;
}

int zoff_engine_create(zoff_dev *dev, const zoff_engine_config *cfg, void *device_params,
                       size_t n_params, const zoff_engine_tensor *tensors, size_t n_tensors,
                       const float *init_master, zoff_engine **out) {
    bool streamed = cfg && cfg->params != ZOFF_PARAMS_DEVICE;
    if (!dev || !cfg || (!device_params && !streamed) || !out || n_params == 0) return -EINVAL;
    if (streamed && !init_master)
        return zoff_fail(ZOFF_ECONFIG, MOD,
                         "streamed weights need the initial master weights (init_master)");
    *out = NULL;
    int rc = check_config(cfg);
    if (!rc) rc = check_tensors(tensors, n_tensors, n_params);
    if (rc) return rc;
    zoff_engine *e = calloc(1, sizeof *e);
    if (!e) return -ENOMEM;
    e->dev = dev;
    e->cfg = *cfg;
    for (unsigned i = 0; i < cfg->n_nvme_dirs; i++)
        e->cfg.nvme_dirs[i] = NULL; /* copied below */
    e->esize = zoff_dtype_size(cfg->dtype);
    e->dparams = device_params;
    e->n_params = n_params;
    e->n_tensors = n_tensors;
    e->rank = zoff_dist_rank(cfg->dist);
    e->world = zoff_dist_size(cfg->dist);
    e->loss_scale = cfg->dtype == ZOFF_F16 ? cfg->loss_scale_init : 1.0f;
    e->decided_scale = e->loss_scale;
    e->lr = cfg->lr;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->cond, NULL);
    float *own_master = NULL;

    e->tensors = calloc(n_tensors, sizeof *e->tensors);
    e->tensor_names = calloc(n_tensors, sizeof *e->tensor_names);
    if (!e->tensors || !e->tensor_names) goto oom;
    for (size_t i = 0; i < n_tensors; i++) {
        e->tensors[i] = tensors[i];
        char fallback[32];
        snprintf(fallback, sizeof fallback, "tensor%zu", i);
        e->tensor_names[i] = strdup(tensors[i].name ? tensors[i].name : fallback);
        if (!e->tensor_names[i]) goto oom;
        e->tensors[i].name = e->tensor_names[i];
    }
    for (unsigned i = 0; i < cfg->n_nvme_dirs; i++)
        if (!(e->cfg.nvme_dirs[i] = strdup(cfg->nvme_dirs[i]))) goto oom;
    if ((rc = engine_build_buckets(e))) goto fail;
    e->n_slots = cfg->device_slots;
    e->n_grad_ring = cfg->grad_ring_slots;
    /* DPU sends step s's weights only after step s+1's backward, while step s+1's gradients
     * must keep flowing: its weight ring holds every bucket. */
    e->n_param_ring =
        cfg->schedule == ZOFF_SCHEDULE_DPU ? (int)e->n_buckets : cfg->param_ring_slots;
    e->n_sets = cfg->schedule == ZOFF_SCHEDULE_DPU ? 2 : 1;
    if ((rc = alloc_device_side(e))) goto fail;

    zoff_adam_pool_config pc = zoff_adam_pool_config_default();
    pc.n_threads = cfg->cpu_threads;
    pc.reserve_cores = cfg->reserve_cores;
    pc.isa = (zoff_adam_isa)cfg->cpu_isa;
    if ((rc = zoff_adam_pool_create(&pc, &e->pool))) goto fail;
    if (!init_master) {
        if ((rc = master_from_device(e, &own_master))) goto fail;
        init_master = own_master;
    }
    if ((rc = state_store_create(e, init_master, &e->store))) goto fail;
    if (streamed && (rc = param_store_create(e, init_master, &e->params))) goto fail;
    e->cfg.group_begin = NULL; /* the caller's arrays are read at creation only */
    e->cfg.group_resident = NULL;
    free(own_master);
    own_master = NULL;
    if ((rc = alloc_host_side(e))) goto fail;
    if (cfg->trace_path && (rc = zoff_trace_create(dev, e->d2h, 200000, &e->trace))) goto fail;

    if ((rc = -pthread_create(&e->receiver, NULL, engine_receiver_main, e))) goto fail;
    e->receiver_started = true;
    if (cfg->schedule != ZOFF_SCHEDULE_OVERLAP) {
        if ((rc = -pthread_create(&e->updater, NULL, engine_updater_main, e))) goto fail;
        e->updater_started = true;
    }
    zoff_engine_memory mem;
    zoff_engine_get_memory(e, &mem);
    char ranks[64] = "";
    if (e->world > 1)
        snprintf(ranks, sizeof ranks, ", rank %d of %d owns %zu params", e->rank, e->world,
                 e->n_own);
    zoff_log(
        ZOFF_LOG_INFO, MOD,
        "offload to %s, schedule %s, weights %s: %zu buckets (up to %zu params)%s, device %.1f "
        "MiB, pinned %.1f MiB, host %.1f MiB, nvme %.1f MiB, %d CPU threads (%s)",
        zoff_offload_target_name(cfg->target), zoff_schedule_name(cfg->schedule),
        zoff_param_location_name(cfg->params), mem.n_buckets, mem.bucket_elems_max, ranks,
        (mem.device_bytes + mem.param_device_bytes) / 1048576.0, mem.pinned_bytes / 1048576.0,
        mem.host_bytes / 1048576.0, mem.nvme_bytes / 1048576.0, zoff_adam_pool_threads(e->pool),
        zoff_adam_isa_name(zoff_adam_pool_isa(e->pool)));
    *out = e;
    return 0;
oom:
    rc = -ENOMEM;
fail:
    free(own_master);
    zoff_engine_destroy(e);
    return rc;
}

static void stop_threads(zoff_engine *e) {
    if (!e->receiver_started) return;
    /* DPU's last weights wait for a step end that will not come: release them. */
    zoff_dev_host_write_value(e->dev, &e->ctr->step_end, (uint32_t)(e->step + 1));
    work_item stop = {.kind = WORK_STOP};
    engine_queue_push(e, &stop);
    pthread_join(e->receiver, NULL);
    if (e->updater_started) pthread_join(e->updater, NULL);
    e->receiver_started = e->updater_started = false;
    /* the weight uploads the updater queued land before stopping raises the versions they
     * would have set: a stream let through by that raise must not read a copy's target
     * while it is written. The h2d stream waits only on step_end, released above, and on
     * the other ranks' all-gathers, which the device synchronize in destroy waits for too. */
    zoff_dev_stream_synchronize(e->h2d);
    param_store_stop(e->params);
}

void zoff_engine_destroy(zoff_engine *e) {
    if (!e) return;
    stop_threads(e);
    zoff_dev_synchronize(e->dev);
    if (e->trace) {
        if (e->cfg.trace_path) {
            int rc = zoff_trace_write(e->trace, e->cfg.trace_path);
            if (rc == 0) zoff_log(ZOFF_LOG_INFO, MOD, "trace written to %s", e->cfg.trace_path);
        }
        zoff_trace_destroy(e->trace);
    }
    if (e->store) state_store_drain(e->store);
    state_store_destroy(e->store);
    param_store_destroy(e->params);
    zoff_nvme_swap_destroy(e->swap);
    zoff_adam_pool_destroy(e->pool);
    for (int k = 0; e->slot_buf && k < e->n_slots; k++) {
        zoff_dev_free(e->dev, e->slot_buf[k]);
        if (e->slot_ready[k]) zoff_dev_event_destroy(e->slot_ready[k]);
    }
    zoff_dev_free(e->dev, e->slot_stats);
    for (int r = 0; e->grad_ring && r < e->n_grad_ring; r++)
        zoff_dev_host_free(e->dev, e->grad_ring[r]);
    for (int r = 0; e->param_ring && r < e->n_param_ring; r++)
        zoff_dev_host_free(e->dev, e->param_ring[r]);
    zoff_dev_host_free(e->dev, e->grad_ring_stats);
    zoff_dev_host_free(e->dev, e->ctr);
    if (e->d2h) zoff_dev_stream_destroy(e->d2h);
    if (e->h2d) zoff_dev_stream_destroy(e->h2d);
    if (e->rs) zoff_dev_stream_destroy(e->rs);
    zoff_dev_free(e->dev, e->gather_buf);
    zoff_dev_comm_destroy(e->rs_comm);
    zoff_dev_comm_destroy(e->ag_comm);
    zoff_dist_finalize(e->dist);
    for (int s = 0; s < 2; s++) {
        free(e->grad_host[s]);
        free(e->grad_accum[s]);
        free(e->bucket_sumsq[s]);
        free(e->bucket_nonfinite[s]);
    }
    for (size_t i = 0; e->tensor_names && i < e->n_tensors; i++)
        free(e->tensor_names[i]);
    for (unsigned i = 0; i < e->cfg.n_nvme_dirs; i++)
        free((char *)e->cfg.nvme_dirs[i]);
    free(e->accum_scratch);
    free(e->next_arrival);
    free(e->tensor_names);
    free(e->tensors);
    free(e->tensor_bucket);
    free(e->buckets);
    free(e->slot_buf);
    free(e->slot_owner);
    free(e->slot_open);
    free(e->slot_uses);
    free(e->slot_ready);
    free(e->tensor_done);
    free(e->grad_ring);
    free(e->param_ring);
    free(e->queue);
    free(e->uqueue);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->cond);
    free(e);
}

int zoff_engine_flush(zoff_engine *e, zoff_dev_stream *s) {
    if (!e || !s) return -EINVAL;
    int rc = zoff_dev_stream_write_value(s, &e->ctr->step_end, (uint32_t)(e->step + 1));
    if (rc) return rc;
    pthread_mutex_lock(&e->lock);
    while (e->steps_completed < e->step && !e->error)
        pthread_cond_wait(&e->cond, &e->lock);
    rc = e->error;
    pthread_mutex_unlock(&e->lock);
    if (rc) return engine_worker_error(e); /* with the failing thread's detail */
    for (size_t b = 0; b < e->n_buckets; b++)
        if ((rc = zoff_dev_host_wait_value(e->dev, &e->version[b], (uint32_t)e->step))) return rc;
    return engine_worker_error(e);
}

/* Several ranks: bucket b's parts, each rank's block read from its store and gathered into
 * rank 0's outputs by offset (want: bit i set for outs[i], as rank 0 asked). */
static int gather_bucket(zoff_engine *e, size_t b, unsigned want, float *outs[3], float *tmp,
                         size_t *counts, size_t *displs) {
    const engine_bucket *bk = &e->buckets[b];
    size_t n = bk->own_numel;
    int rc = n ? state_store_read(e->store, b, (want & 1) ? tmp : NULL,
                                  (want & 2) ? tmp + n : NULL, (want & 4) ? tmp + 2 * n : NULL)
               : 0;
    if (rc) return rc;
    for (int r = 0; r < e->world; r++) {
        size_t start = (size_t)r * bk->shard < bk->numel ? (size_t)r * bk->shard : bk->numel;
        size_t end = start + bk->shard < bk->numel ? start + bk->shard : bk->numel;
        counts[r] = (end - start) * sizeof(float);
        displs[r] = start * sizeof(float);
    }
    for (int i = 0; i < 3 && !rc; i++) {
        if (!(want & (1u << i))) continue;
        void *dst = e->rank == 0 ? (void *)(outs[i] + bk->offset) : NULL;
        rc = zoff_dist_gatherv(e->dist, tmp + (size_t)i * n, n * sizeof(float), dst, counts,
                               displs, 0);
    }
    return rc;
}

int zoff_engine_save_state(zoff_engine *e, zoff_dev_stream *s, float *master, float *m, float *v,
                           int64_t *updates, float *loss_scale) {
    if (!e || (e->rank == 0 && !master && !m && !v)) return -EINVAL;
    int rc = zoff_engine_flush(e, s);
    /* the CPU threads are idle after a flush: the store may be used from here */
    if (!rc) rc = state_store_drain(e->store);
    if (rc) return rc;
    float *outs[3] = {master, m, v};
    if (e->rank == 0)
        for (int i = 0; i < 3; i++) /* padding outside buckets reads as 0 */
            if (outs[i]) memset(outs[i], 0, e->n_params * sizeof(float));
    if (updates) *updates = e->applied_steps;
    if (loss_scale) *loss_scale = e->loss_scale;
    if (e->world == 1) {
        for (size_t b = 0; b < e->n_buckets && !rc; b++) {
            size_t off = e->buckets[b].offset;
            rc = state_store_read(e->store, b, master ? master + off : NULL, m ? m + off : NULL,
                                  v ? v + off : NULL);
        }
        return rc;
    }
    /* every rank takes part; what is gathered is what rank 0 asked for */
    int64_t want = (master ? 1 : 0) | (m ? 2 : 0) | (v ? 4 : 0);
    if ((rc = zoff_dist_bcast(e->dist, &want, sizeof want, 0))) return rc;
    float *tmp = malloc((e->own_max ? e->own_max : 1) * 3 * sizeof(float));
    size_t *counts = calloc(2 * (size_t)e->world, sizeof(size_t));
    if (!tmp || !counts) rc = zoff_fail(-ENOMEM, MOD, "no memory to gather the optimizer state");
    for (size_t b = 0; b < e->n_buckets && !rc; b++)
        rc = gather_bucket(e, b, (unsigned)want, outs, tmp, counts, counts + e->world);
    free(tmp);
    free(counts);
    return rc;
}

int zoff_engine_get_master(zoff_engine *e, zoff_dev_stream *s, float *out) {
    if (!out && (!e || e->rank == 0)) return -EINVAL;
    return zoff_engine_save_state(e, s, out, NULL, NULL, NULL, NULL);
}

int zoff_engine_load_state(zoff_engine *e, zoff_dev_stream *s, const float *m, const float *v,
                           int64_t updates, float loss_scale) {
    if (!e || !m || !v || updates < 0) return -EINVAL;
    if (e->cfg.dtype == ZOFF_F16 && !(loss_scale >= 1.0f))
        return zoff_fail(ZOFF_ECONFIG, MOD, "loss scale %g in the optimizer state is below 1",
                         (double)loss_scale);
    int rc = zoff_engine_flush(e, s);
    if (!rc) rc = state_store_drain(e->store);
    for (size_t b = 0; b < e->n_buckets && !rc; b++) {
        size_t off = e->buckets[b].own_offset; /* this rank's block */
        if (e->buckets[b].own_numel) rc = state_store_write_moments(e->store, b, m + off, v + off);
    }
    if (rc) return rc;
    e->applied_steps = updates;
    /* a resumed DPU run does not warm up again: its next steps are those of the run it
     * continues (the flush at the save left no update in flight there either) */
    e->step_base = updates - e->step;
    if (e->cfg.dtype == ZOFF_F16) {
        pthread_mutex_lock(&e->lock);
        e->loss_scale = e->decided_scale = loss_scale;
        pthread_mutex_unlock(&e->lock);
    }
    return 0;
}

int zoff_engine_last_report(zoff_engine *e, zoff_engine_step_report *out) {
    if (!e || !out) return -EINVAL;
    pthread_mutex_lock(&e->lock);
    int have = e->have_report;
    if (have) *out = e->last_report;
    pthread_mutex_unlock(&e->lock);
    return have ? 0 : -EAGAIN;
}

int zoff_engine_report_of_step(zoff_engine *e, int64_t step, zoff_engine_step_report *out) {
    if (!e || !out || step < 0) return -EINVAL;
    pthread_mutex_lock(&e->lock);
    bool queued = step < e->step;
    while (queued && e->steps_completed <= step && !e->error)
        pthread_cond_wait(&e->cond, &e->lock);
    int rc = e->error;
    bool kept = queued && !rc && step + ENGINE_REPORTS >= e->steps_completed;
    if (kept) *out = e->reports[step % ENGINE_REPORTS];
    pthread_mutex_unlock(&e->lock);
    if (rc) return engine_worker_error(e);
    if (!queued)
        return zoff_fail(-EINVAL, MOD, "step %lld has not ended yet (%lld steps ended)",
                         (long long)step, (long long)e->step);
    if (!kept)
        return zoff_fail(-ENOENT, MOD, "the report of step %lld is no longer kept",
                         (long long)step);
    return 0;
}

void zoff_engine_get_memory(const zoff_engine *e, zoff_engine_memory *out) {
    size_t slot = e->slot_elems * e->esize;
    out->n_buckets = e->n_buckets;
    out->n_params = e->buckets[e->n_buckets - 1].offset + e->buckets[e->n_buckets - 1].numel -
                    e->buckets[0].offset;
    out->bucket_elems_max = e->bucket_elems_max;
    out->device_bytes = engine_device_bytes(e->n_slots, slot, e->world);
    out->pinned_bytes = (size_t)(e->n_grad_ring + e->n_param_ring) * e->own_max * e->esize;
    out->param_device_bytes = e->params ? param_store_device_bytes(e->params) : 0;
    if (e->params) out->pinned_bytes += param_store_pinned_bytes(e->params);
    out->host_bytes = e->store ? state_store_host_bytes(e->store) : 0;
    for (int s = 0; s < e->n_sets; s++) {
        if (e->grad_host[s]) out->host_bytes += e->n_own * e->esize;
        if (e->grad_accum[s]) out->host_bytes += e->n_own * sizeof(float);
    }
    out->nvme_bytes = e->store ? state_store_nvme_bytes(e->store) : 0;
}

int zoff_engine_trace_begin(zoff_engine *e, zoff_dev_stream *s, const char *name) {
    return e && e->trace ? zoff_trace_device_begin(e->trace, s, "compute", name) : -1;
}

void zoff_engine_trace_end(zoff_engine *e, zoff_dev_stream *s, int id) {
    if (e && e->trace) zoff_trace_device_end(e->trace, s, id);
}

double zoff_engine_trace_now_us(const zoff_engine *e) {
    return e && e->trace ? zoff_trace_now_us(e->trace) : 0.0;
}

void zoff_engine_trace_host(zoff_engine *e, const char *lane, const char *name, double t0_us,
                            double t1_us) {
    if (e && e->trace) zoff_trace_host_span(e->trace, lane, name, t0_us, t1_us);
}
