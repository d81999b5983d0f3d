/* `zoff train --offload cpu|nvme`: the flags that configure the offload engine, checked
 * with messages that name the flag, and the offloaded training step with its report. */
#include "cli/train_offload.h"
#include "cli/cli.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int zoff_train_offload_configure(const zoff_train_offload_flags *f, const zoff_trainer_config *tc,
                                 int grad_accum, zoff_engine_config *ec, bool *enabled) {
    zoff_engine_config_default(ec);
    *enabled = false;
    bool params_on = f->params && strcmp(f->params, "none") != 0;
    if (!f->offload || strcmp(f->offload, "none") == 0) {
        if (params_on) {
            fprintf(stderr,
                    "zoff train: --offload-params %s needs the optimizer offloaded too "
                    "(--offload cpu|nvme)\n",
                    f->params);
            return -1;
        }
        if (f->nvme_path || f->trace)
            fprintf(stderr, "zoff train: --nvme-path and --trace apply to --offload cpu|nvme only; "
                            "ignored\n");
        return 0;
    }
    if (strcmp(f->offload, "cpu") == 0) {
        ec->target = ZOFF_OFFLOAD_CPU;
    } else if (strcmp(f->offload, "nvme") == 0) {
        ec->target = ZOFF_OFFLOAD_NVME;
        if (!f->nvme_path) {
            fprintf(stderr, "zoff train: --offload nvme needs --nvme-path DIR (a directory on the "
                            "NVMe drive; check it with zoff info --nvme-path DIR)\n");
            return -1;
        }
        ec->nvme_dirs[0] = f->nvme_path;
        ec->n_nvme_dirs = 1;
    } else {
        fprintf(stderr, "zoff train: --offload '%s': expected none, cpu or nvme\n", f->offload);
        return -1;
    }
    if (zoff_schedule_parse(f->schedule, &ec->schedule)) {
        fprintf(stderr, "zoff train: --schedule '%s': expected sync, overlap or dpu\n",
                f->schedule);
        return -1;
    }
    if (zoff_dtype_parse(f->moments, &ec->moment_dtype) ||
        (ec->moment_dtype != ZOFF_F32 && ec->moment_dtype != ZOFF_BF16)) {
        fprintf(stderr, "zoff train: --moments '%s': expected f32 or bf16\n", f->moments);
        return -1;
    }
    if (strcmp(f->bucket_size, "auto") == 0) {
        ec->bucket_bytes = 0; /* the caller sizes it to the model: zoff_model_offload_auto_bucket */
    } else if (zoff_parse_size(f->bucket_size, &ec->bucket_bytes) || ec->bucket_bytes < 4096) {
        fprintf(stderr,
                "zoff train: --bucket-size '%s': expected auto or a size of at least 4KiB, "
                "like 32MiB\n",
                f->bucket_size);
        return -1;
    }
    if (ec->schedule == ZOFF_SCHEDULE_OVERLAP && tc->grad_clip > 0) {
        fprintf(stderr,
                "zoff train: --schedule overlap updates each bucket before the global "
                "gradient norm is known: add --grad-clip 0, or use --schedule sync or dpu\n");
        return -1;
    }
    int isa;
    if (zoff_cli_adam_isa(&isa)) return -1;
    ec->cpu_isa = isa;
    ec->dpu_warmup_steps = f->dpu_warmup;
    ec->lr = tc->lr;
    ec->beta1 = tc->beta1;
    ec->beta2 = tc->beta2;
    ec->eps = tc->eps;
    ec->weight_decay = tc->weight_decay;
    ec->clip_norm = tc->grad_clip;
    ec->grad_accum_steps = grad_accum;
    ec->loss_scale_init = tc->loss_scale_init;
    ec->loss_scale_window = tc->loss_scale_window;
    ec->trace_path = f->trace;
    ec->prefetch_depth = f->prefetch;
    if (!params_on || strcmp(f->params, "auto") == 0) {
        ec->params = params_on ? ZOFF_PARAMS_CPU : ZOFF_PARAMS_DEVICE; /* auto: fitted later */
    } else if (strcmp(f->params, "cpu") == 0) {
        ec->params = ZOFF_PARAMS_CPU;
    } else if (strcmp(f->params, "nvme") == 0) {
        ec->params = ZOFF_PARAMS_NVME;
        if (!f->nvme_path) {
            fprintf(stderr, "zoff train: --offload-params nvme needs --nvme-path DIR\n");
            return -1;
        }
        ec->nvme_dirs[0] = f->nvme_path;
        ec->n_nvme_dirs = 1;
    } else {
        fprintf(stderr, "zoff train: --offload-params '%s': expected none, cpu, nvme or auto\n",
                f->params);
        return -1;
    }
    *enabled = true;
    return 0;
}

static size_t group_bytes(const zoff_layout *lay, int g, size_t es) {
    return (lay->group_begin[g + 1] - lay->group_begin[g]) * es;
}

int zoff_train_offload_fit(const zoff_layout *lay, zoff_dtype dt, size_t capacity,
                           zoff_engine_config *ec, unsigned char *resident,
                           zoff_device_plan *plan) {
    size_t es = zoff_dtype_size(dt), ring = plan->weights, others = plan->total - ring;
    memset(resident, 0, (size_t)lay->n_groups);
    if (others + lay->total * es <= capacity) { /* everything fits: nothing streams */
        ec->params = ZOFF_PARAMS_DEVICE;
        plan->weights = lay->total * es;
        zoff_device_plan_sum(plan);
        return 0;
    }
    if (others + ring > capacity) return 0; /* does not fit even streamed: the plan says so */
    size_t room = capacity - others - ring, used = 0;
    for (int g = 0; g < lay->n_groups; g++) {
        size_t b = (group_bytes(lay, g, es) + 255) / 256 * 256;
        if (used + b > room) break;
        used += b;
        resident[g] = 1;
    }
    ec->group_resident = resident;
    zoff_engine_config pc = *ec; /* the model's layout and dtype give these at creation */
    pc.n_groups = (size_t)lay->n_groups;
    pc.group_begin = lay->group_begin;
    pc.dtype = dt;
    size_t bytes = 0;
    int rc = zoff_engine_plan_param_bytes(&pc, &bytes);
    if (rc) return rc;
    plan->weights = bytes;
    zoff_device_plan_sum(plan);
    return 0;
}

void zoff_train_offload_describe_params(const zoff_layout *lay, zoff_dtype dt,
                                        const zoff_engine_config *ec, char *buf, size_t n) {
    size_t es = zoff_dtype_size(dt), np = lay->n_params ? lay->n_params : 1;
    if (ec->params == ZOFF_PARAMS_DEVICE) {
        snprintf(buf, n,
                 "weights resident: PCIe per step %.2f B/param down (gradients), %.2f up "
                 "(updated weights)",
                 (double)es, (double)es);
        return;
    }
    int G = lay->n_groups, n_res = 0,
        slots = ec->ring_groups ? ec->ring_groups : ec->prefetch_depth + 2;
    size_t fwd = 0, res = 0, tail = 0;
    int kept = slots - 1; /* streamed groups still in the ring when the backward starts */
    for (int g = G - 1; g >= 0; g--) {
        size_t b = group_bytes(lay, g, es);
        if (ec->group_resident && ec->group_resident[g]) {
            n_res++;
            res += b;
            continue;
        }
        fwd += b;
        if (kept-- > 0) tail += b;
    }
    double d = (double)np;
    int w = snprintf(buf, n,
                     "weights %s, prefetch %d, ring %d slots: %d of %d layer groups resident, %d "
                     "streamed; PCIe per step about %.2f B/param up (%.2f forward fetch, %.2f "
                     "backward re-fetch, %.2f resident updates), %.2f down (gradients)",
                     zoff_param_location_name(ec->params), ec->prefetch_depth, slots, n_res, G,
                     G - n_res, (double)(fwd + fwd - tail + res) / d, (double)fwd / d,
                     (double)(fwd - tail) / d, (double)res / d, (double)es);
    if (ec->params == ZOFF_PARAMS_NVME && w > 0 && (size_t)w < n)
        snprintf(buf + w, n - (size_t)w, "; NVMe about %.2f B/param read, %.2f written",
                 (double)(fwd + fwd - tail) / d, (double)fwd / d);
}

int zoff_train_offload_step(zoff_model_offload *off, const zoff_trainer_config *tc, int step,
                            int grad_accum, zoff_train_batch_fn next_batch, void *ctx,
                            zoff_step_stats *st, zoff_engine_step_report *rep) {
    zoff_engine *e = zoff_model_offload_engine(off);
    float lr = zoff_trainer_lr_at(tc, step);
    int rc = zoff_engine_set_lr(e, lr);
    double loss_sum = 0;
    for (int k = 0; !rc && k < grad_accum; k++) {
        zoff_batch b;
        next_batch(ctx, &b);
        float loss = 0;
        rc = zoff_model_offload_micro_batch(off, &b, &loss);
        loss_sum += loss;
    }
    if (rc) return rc;
    memset(st, 0, sizeof *st);
    st->loss = (float)(loss_sum / grad_accum);
    st->lr = lr;
    st->grad_norm = NAN; /* the step's own report fills it: zoff_train_offload_report() */
    st->loss_scale = 1.0f;
    memset(rep, 0, sizeof *rep);
    rep->step = -1;
    return 0;
}

int zoff_train_offload_report(zoff_model_offload *off, int64_t engine_step, zoff_step_stats *st,
                              zoff_engine_step_report *rep) {
    int rc = zoff_engine_report_of_step(zoff_model_offload_engine(off), engine_step, rep);
    if (rc) return rc;
    st->grad_norm = (float)rep->grad_norm;
    st->loss_scale = rep->loss_scale;
    st->skipped = rep->skipped;
    return 0;
}
