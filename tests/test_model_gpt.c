/* The GPT model on the host backend: the flat layout's invariants, a finite-difference
 * gradient check of the whole tiny model (fp32), activation checkpointing giving the same
 * gradients, bf16/fp16 GEMM modes close to fp32, the trainer's phases and optimizer hook, the
 * grad-ready hook order, and a tiny model overfitting one batch. */
#include "model/model.h"
#include "tests/test_util.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

static zoff_dev *dev;
static zoff_dev_stream *st;

static void tiny_config(zoff_gpt_config *c) {
    c->n_layer = 2;
    c->n_head = 2;
    c->n_embd = 16;
    c->vocab_size = 23;
    c->seq_len = 8;
}

static void test_layout(void) {
    zoff_gpt_config c;
    zoff_gpt_config_gpt2_124m(&c);
    zoff_layout l;
    REQUIRE_OK(zoff_gpt_layout_build(&c, &l));
    CHECK_EQ_INT(l.n_params, 124439808); /* GPT-2 small with 1024 positions, tied head */
    CHECK_EQ_INT(l.n_groups, 14);
    CHECK_EQ_INT(l.group_begin[0], 0);
    CHECK_EQ_INT(l.group_begin[l.n_groups], l.total);
    size_t prev_end = 0;
    for (int i = 0; i < l.n_tensors; i++) {
        const zoff_tensor *t = &l.tensors[i];
        CHECK(t->offset % ZOFF_LAYOUT_ALIGN == 0);
        CHECK(t->offset >= prev_end);
        CHECK(t->offset - prev_end < ZOFF_LAYOUT_ALIGN);
        CHECK(t->offset >= l.group_begin[t->group] &&
              t->offset + t->numel <= l.group_begin[t->group + 1]);
        prev_end = t->offset + t->numel;
        CHECK(zoff_layout_find_name(&l, t->name) == t);
        CHECK(zoff_gpt_layout_find(&l, t->kind, t->layer) == t);
    }
    const zoff_tensor *t = zoff_gpt_layout_find(&l, ZOFF_GPT_QKV_W, 5);
    CHECK(strcmp(t->name, "h.5.attn.c_attn.weight") == 0);
    CHECK(t->shape[0] == 3 * 768 && t->shape[1] == 768 && t->group == 6 && t->weight_decay);
    CHECK(!zoff_gpt_layout_find(&l, ZOFF_GPT_LN1_B, 5)->weight_decay);
    zoff_layout_free(&l);
    c.n_head = 5;
    CHECK(zoff_gpt_config_validate(&c) == ZOFF_ECONFIG);
    CHECK(strstr(zoff_last_error_detail(), "n_head") != NULL);
}

static void random_params(zoff_model *m, unsigned long long seed, float *h) {
    const zoff_layout *l = zoff_model_get_layout(m);
    memset(h, 0, l->total * sizeof *h);
    for (int i = 0; i < l->n_tensors; i++) {
        const zoff_tensor *t = &l->tensors[i];
        int is_lnw =
            t->kind == ZOFF_GPT_LN1_W || t->kind == ZOFF_GPT_LN2_W || t->kind == ZOFF_GPT_LNF_W;
        for (size_t j = 0; j < t->numel; j++)
            h[t->offset + j] =
                is_lnw ? zoff_test_randf(&seed, 0.8f, 1.2f) : zoff_test_randf(&seed, -0.3f, 0.3f);
    }
    REQUIRE_OK(zoff_model_params_from_host(m, h));
}

static void make_batch(int B, int T, int V, unsigned long long seed, int32_t *x, int32_t *y) {
    for (int i = 0; i < B * T; i++) {
        x[i] = (int32_t)(zoff_test_rand(&seed) % V);
        y[i] = (int32_t)(zoff_test_rand(&seed) % V);
    }
}

static void grads(zoff_model *m, const int32_t *x, const int32_t *y, int B, int T, float *g,
                  float *loss) {
    REQUIRE_OK(zoff_model_alloc_grads(m));
    REQUIRE_OK(zoff_model_zero_grads(m, st));
    REQUIRE_OK(zoff_model_forward_backward(m, st, BATCH(x, y, B, T), 1.0f, loss));
    REQUIRE_OK(zoff_model_grads_to_host(m, g));
}

static void test_whole_model_gradients(void) {
    zoff_gpt_config c;
    tiny_config(&c);
    zoff_model_options o;
    zoff_model_options_default(&o);
    o.batch = 2;
    o.seq_len = 6;
    zoff_model *m;
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &m));
    CHECK(zoff_model_weight_dtype(m) == ZOFF_F32);
    const zoff_layout *l = zoff_model_get_layout(m);
    float *p = malloc(l->total * 4), *g = malloc(l->total * 4), *g2 = malloc(l->total * 4);
    random_params(m, 7, p);
    int32_t x[12], y[12];
    make_batch(2, 6, c.vocab_size, 99, x, y);
    float loss;
    grads(m, x, y, 2, 6, g, &loss);
    CHECK(isfinite(loss) && loss > 0);
    /* padding between tensors gets no gradient */
    for (int i = 0; i + 1 < l->n_tensors; i++)
        for (size_t j = l->tensors[i].offset + l->tensors[i].numel; j < l->tensors[i + 1].offset;
             j++)
            CHECK(g[j] == 0.0f);

    /* central differences on a few coordinates of every tensor */
    unsigned long long rng = 5;
    int bad = 0, checked = 0;
    const float eps = 1e-2f;
    for (int ti = 0; ti < l->n_tensors; ti++) {
        const zoff_tensor *t = &l->tensors[ti];
        for (int k = 0; k < 4; k++) {
            size_t i = t->offset + (size_t)(zoff_test_rand(&rng) % t->numel);
            if (t->kind == ZOFF_GPT_WTE && k < 2) i = t->offset + (size_t)x[k] * c.n_embd + k;
            float orig = p[i], lp, lm;
            p[i] = orig + eps;
            REQUIRE_OK(zoff_model_params_from_host(m, p));
            REQUIRE_OK(zoff_model_forward(m, st, BATCH(x, y, 2, 6), &lp));
            p[i] = orig - eps;
            REQUIRE_OK(zoff_model_params_from_host(m, p));
            REQUIRE_OK(zoff_model_forward(m, st, BATCH(x, y, 2, 6), &lm));
            p[i] = orig;
            double fd = ((double)lp - lm) / (2.0 * eps);
            checked++;
            if (fabs(fd - g[i]) > 1e-3 + 5e-2 * fabs(fd)) {
                fprintf(stderr, "%s[%zu]: analytic %.6g, finite difference %.6g\n", t->name,
                        i - t->offset, g[i], fd);
                bad++;
            }
        }
    }
    REQUIRE_OK(zoff_model_params_from_host(m, p));
    printf("whole-model gradient check: %d coordinates, %d off\n", checked, bad);
    CHECK_EQ_INT(bad, 0);

    /* activation checkpointing: the same gradients */
    zoff_model *mc;
    o.activation_checkpoint = true;
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &mc));
    zoff_device_plan pm, pc;
    zoff_model_memory(m, &pm);
    zoff_model_memory(mc, &pc);
    CHECK(pc.activations < pm.activations);
    REQUIRE_OK(zoff_model_params_from_host(mc, p));
    float loss2;
    grads(mc, x, y, 2, 6, g2, &loss2);
    CHECK(loss2 == loss);
    double maxd = 0;
    for (size_t i = 0; i < l->total; i++)
        maxd = fmax(maxd, fabs(g2[i] - g[i]));
    CHECK(maxd <= 1e-6);
    zoff_model_destroy(mc);

    /* bf16 / fp16 GEMM operands: close to fp32 */
    zoff_dtype types[2] = {ZOFF_BF16, ZOFF_F16};
    for (int k = 0; k < 2; k++) {
        o.activation_checkpoint = false;
        o.matmul_dtype = types[k];
        zoff_model *mb;
        REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &mb));
        REQUIRE_OK(zoff_model_params_from_host(mb, p));
        float lb;
        grads(mb, x, y, 2, 6, g2, &lb);
        double num = 0, den = 0;
        for (size_t i = 0; i < l->total; i++) {
            num += (g2[i] - g[i]) * (double)(g2[i] - g[i]);
            den += (double)g[i] * g[i];
        }
        double gerr = sqrt(num / den), lerr = fabs(lb - loss) / loss;
        printf("%s vs f32: loss rel diff %.3g, grad normalized error %.3g\n",
               zoff_dtype_name(types[k]), lerr, gerr);
        CHECK(lerr < 1e-2);
        CHECK(gerr < (types[k] == ZOFF_BF16 ? 5e-2 : 1e-2));
        /* the device holds the weights in 16 bits only: every op reads them */
        size_t total = zoff_model_get_layout(mb)->total;
        CHECK(zoff_model_weight_dtype(mb) == types[k]);
        zoff_device_plan p16;
        zoff_model_memory(mb, &p16);
        CHECK_EQ_INT(p16.weights, (total * 2 + 255) / 256 * 256);
        float lz;
        REQUIRE_OK(zoff_dev_memset_async(st, zoff_model_weights(mb), 0, total * 2));
        REQUIRE_OK(zoff_model_forward(mb, st, BATCH(x, y, 2, 6), &lz));
        CHECK(fabsf(lz - logf((float)c.vocab_size)) < 1e-3f); /* zero weights: uniform logits */
        REQUIRE_OK(zoff_model_params_from_host(mb, p));
        REQUIRE_OK(zoff_model_forward(mb, st, BATCH(x, y, 2, 6), &lz));
        CHECK(lz == lb);
        zoff_model_destroy(mb);
    }
    free(p), free(g), free(g2);
    zoff_model_destroy(m);
}

/* A gradient sink that records the order of `done` calls (by layer group) and hands out a
 * flat fp32 buffer. */
typedef struct hook_log {
    const zoff_layout *l;
    float *flat;
    int groups[64];
    int n;
} hook_log;

static int log_buffer(void *ctx, int t, zoff_dev_stream *s, void **g) {
    hook_log *h = ctx;
    (void)s;
    *g = h->flat + h->l->tensors[t].offset;
    return 0;
}

static int log_done(void *ctx, int t, zoff_dev_stream *s) {
    hook_log *h = ctx;
    (void)s;
    int g = h->l->tensors[t].group;
    if (h->n < 64 && (h->n == 0 || h->groups[h->n - 1] != g)) h->groups[h->n++] = g;
    return 0;
}

typedef struct opt_hook {
    int calls;
    int last_step;
    float last_lr, last_scale;
} opt_hook;

static int my_step(void *ctx, zoff_dev_stream *s, const zoff_optimizer_step_args *a) {
    opt_hook *h = ctx;
    (void)s;
    h->calls++;
    h->last_step = a->step;
    h->last_lr = a->lr;
    h->last_scale = a->grad_scale;
    return 0; /* parameters untouched */
}

static void test_overfit_and_hooks(void) {
    zoff_gpt_config c;
    tiny_config(&c);
    zoff_model_options o;
    zoff_model_options_default(&o);
    o.batch = 2;
    o.seq_len = 8;
    zoff_model *m;
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &m));
    REQUIRE_OK(zoff_model_init_params(m, 1));
    hook_log hl = {.l = zoff_model_get_layout(m)};
    zoff_trainer_config tc;
    zoff_trainer_config_default(&tc);
    tc.lr = 1e-2f;
    tc.warmup_steps = 5;
    tc.total_steps = 150;
    tc.weight_decay = 0.0f;
    zoff_trainer *tr;
    REQUIRE_OK(zoff_trainer_create(m, st, &tc, NULL, &tr));
    int32_t x[16], y[16];
    make_batch(2, 8, c.vocab_size, 3, x, y);
    zoff_step_stats s0, s;
    /* a sink sees ln_f's gradients done first, then the blocks in reverse, then the
     * embeddings (the tied wte last), and gets the same gradients as the flat buffer */
    hl.flat = zoff_model_grads(m);
    zoff_grad_sink sink = {.dtype = ZOFF_F32, .buffer = log_buffer, .done = log_done, .ctx = &hl};
    zoff_model_set_grad_sink(m, &sink);
    REQUIRE_OK(zoff_trainer_step(tr, BATCH(x, y, 2, 8), &s0));
    CHECK_EQ_INT(hl.n, 4);
    CHECK(hl.groups[0] == 3 && hl.groups[1] == 2 && hl.groups[2] == 1 && hl.groups[3] == 0);
    zoff_model_set_grad_sink(m, NULL);
    for (int i = 1; i < 150; i++)
        REQUIRE_OK(zoff_trainer_step(tr, BATCH(x, y, 2, 8), &s));
    printf("overfit: loss %.4f -> %.4f\n", s0.loss, s.loss);
    CHECK(s0.loss > 2.5f);
    CHECK(s.loss < 0.3f);
    CHECK_EQ_INT(zoff_trainer_get_step(tr), 150);

    /* an optimizer hook takes over the step: parameters stay as they are */
    opt_hook oh = {0};
    zoff_trainer_set_optimizer(tr, my_step, &oh);
    float l1, l2;
    REQUIRE_OK(zoff_trainer_compute_grads(tr, BATCH(x, y, 2, 4), true, &l1));
    REQUIRE_OK(zoff_trainer_compute_grads(tr, BATCH(x + 8, y + 8, 2, 4), false, &l2));
    REQUIRE_OK(zoff_trainer_optimizer_step(tr, &s));
    CHECK_EQ_INT(oh.calls, 1);
    CHECK_EQ_INT(oh.last_step, 151);
    CHECK(fabsf(s.loss - 0.5f * (l1 + l2)) < 1e-6f);
    CHECK(oh.last_scale > 0.0f && oh.last_scale <= 0.5f); /* two micro-batches averaged */
    float before, after;
    REQUIRE_OK(zoff_model_forward(m, st, BATCH(x, y, 2, 8), &before));
    REQUIRE_OK(zoff_trainer_step(tr, BATCH(x, y, 2, 8), &s));
    REQUIRE_OK(zoff_model_forward(m, st, BATCH(x, y, 2, 8), &after));
    CHECK(before == after);
    zoff_trainer_destroy(tr);

    /* fp16 with dynamic loss scaling trains without non-finite losses */
    o.matmul_dtype = ZOFF_F16;
    zoff_model *mh;
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &mh));
    REQUIRE_OK(zoff_model_init_params(mh, 1));
    REQUIRE_OK(zoff_trainer_create(mh, st, &tc, NULL, &tr));
    for (int i = 0; i < 60; i++)
        REQUIRE_OK(zoff_trainer_step(tr, BATCH(x, y, 2, 8), &s));
    printf("fp16: loss %.4f, loss scale %g\n", s.loss, s.loss_scale);
    CHECK(isfinite(s.loss) && s.loss < s0.loss);
    CHECK(s.loss_scale >= 1.0f);
    zoff_trainer_destroy(tr);
    zoff_model_destroy(mh);

    /* bad inputs are refused with a message */
    x[3] = c.vocab_size;
    CHECK(zoff_model_forward(m, st, BATCH(x, y, 2, 8), NULL) == -EINVAL);
    CHECK(strstr(zoff_last_error_detail(), "position 3") != NULL);
    x[3] = 0;
    CHECK(zoff_model_forward(m, st, BATCH(x, y, 3, 8), NULL) == -EINVAL);
    zoff_model_destroy(m);
}

/* An optimizer hook as the offload engine will install it: gradients come down to host
 * memory, AdamW runs on the CPU over the flat layout, parameters go back up. Training with it
 * must match the built-in device AdamW step for step. */
typedef struct host_adam {
    zoff_model *m;
    float *p, *g, *mom, *var;
    size_t total;
} host_adam;

static int host_adam_step(void *ctx, zoff_dev_stream *s, const zoff_optimizer_step_args *a) {
    host_adam *h = ctx;
    zoff_dev *d = zoff_model_get_dev(h->m);
    int rc = zoff_dev_stream_synchronize(s);
    if (!rc) rc = zoff_dev_memcpy(d, h->g, a->grads, h->total * 4, ZOFF_COPY_D2H);
    if (!rc) rc = zoff_dev_memcpy(d, h->p, a->params, h->total * 4, ZOFF_COPY_D2H);
    if (rc) return rc;
    const zoff_trainer_config *c = a->cfg;
    float c1 = 1.0f - powf(c->beta1, (float)a->step), c2 = 1.0f - powf(c->beta2, (float)a->step);
    for (int t = 0; t < a->layout->n_tensors; t++) {
        const zoff_tensor *tt = &a->layout->tensors[t];
        float wd = tt->weight_decay ? c->weight_decay : 0.0f;
        for (size_t i = tt->offset; i < tt->offset + tt->numel; i++) {
            float g = h->g[i] * a->grad_scale;
            h->mom[i] = c->beta1 * h->mom[i] + (1.0f - c->beta1) * g;
            h->var[i] = c->beta2 * h->var[i] + (1.0f - c->beta2) * g * g;
            h->p[i] -= a->lr * ((h->mom[i] / c1) / (sqrtf(h->var[i] / c2) + c->eps) + wd * h->p[i]);
        }
    }
    return zoff_dev_memcpy(d, a->params, h->p, h->total * 4, ZOFF_COPY_H2D);
}

static void test_optimizer_hook_parity(void) {
    zoff_gpt_config c;
    tiny_config(&c);
    zoff_model_options o;
    zoff_model_options_default(&o);
    o.batch = 4;
    o.seq_len = 8;
    zoff_model *ma, *mb;
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &ma));
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &mb));
    REQUIRE_OK(zoff_model_init_params(ma, 2));
    REQUIRE_OK(zoff_model_init_params(mb, 2));
    size_t total = zoff_model_get_layout(ma)->total;
    host_adam h = {mb,   calloc(total, 4), calloc(total, 4), calloc(total, 4), calloc(total, 4),
                   total};
    zoff_trainer_config tc;
    zoff_trainer_config_default(&tc);
    tc.warmup_steps = 2;
    tc.total_steps = 6;
    zoff_trainer *ta, *tb;
    REQUIRE_OK(zoff_trainer_create(ma, st, &tc, NULL, &ta));
    REQUIRE_OK(zoff_trainer_create(mb, st, &tc, NULL, &tb));
    zoff_trainer_set_optimizer(tb, host_adam_step, &h);
    int32_t x[32], y[32];
    float *pa = malloc(total * 4), *pb = malloc(total * 4);
    for (int step = 0; step < 6; step++) {
        make_batch(4, 8, c.vocab_size, 100 + step, x, y);
        zoff_step_stats sa, sb;
        /* a: one batch of 4; b: two micro-batches of 2 (gradient accumulation) */
        REQUIRE_OK(zoff_trainer_step(ta, BATCH(x, y, 4, 8), &sa));
        REQUIRE_OK(zoff_trainer_compute_grads(tb, BATCH(x, y, 2, 8), true, NULL));
        REQUIRE_OK(zoff_trainer_compute_grads(tb, BATCH(x + 16, y + 16, 2, 8), false, NULL));
        REQUIRE_OK(zoff_trainer_optimizer_step(tb, &sb));
        CHECK(fabsf(sa.loss - sb.loss) < 1e-5f);
        CHECK(fabsf(sa.grad_norm - sb.grad_norm) < 1e-4f * sa.grad_norm);
        CHECK(sa.lr == sb.lr);
    }
    REQUIRE_OK(zoff_model_params_to_host(ma, pa));
    REQUIRE_OK(zoff_model_params_to_host(mb, pb));
    double maxd = 0;
    for (size_t i = 0; i < total; i++)
        maxd = fmax(maxd, fabs(pa[i] - pb[i]));
    printf("optimizer hook + accumulation vs device AdamW: max param difference %.3g\n", maxd);
    CHECK(maxd < 1e-4);
    zoff_trainer_destroy(ta);
    zoff_trainer_destroy(tb);
    zoff_model_destroy(ma);
    zoff_model_destroy(mb);
    free(h.p), free(h.g), free(h.mom), free(h.var), free(pa), free(pb);
}

static void test_schedule_and_sampling(void) {
    zoff_trainer_config tc;
    zoff_trainer_config_default(&tc);
    tc.lr = 1.0f;
    tc.min_lr_frac = 0.1f;
    tc.warmup_steps = 10;
    tc.total_steps = 110;
    CHECK(fabsf(zoff_trainer_lr_at(&tc, 1) - 0.1f) < 1e-6f);
    CHECK(fabsf(zoff_trainer_lr_at(&tc, 10) - 1.0f) < 1e-6f);
    CHECK(fabsf(zoff_trainer_lr_at(&tc, 60) - 0.55f) < 1e-4f); /* half-way down the cosine */
    CHECK(fabsf(zoff_trainer_lr_at(&tc, 110) - 0.1f) < 1e-6f);
    CHECK(fabsf(zoff_trainer_lr_at(&tc, 500) - 0.1f) < 1e-6f);

    float probs[5] = {0.1f, 0.5f, 0.05f, 0.3f, 0.05f};
    uint64_t rng = 9;
    int counts[5] = {0};
    for (int i = 0; i < 2000; i++) {
        CHECK_EQ_INT(zoff_sample_token(probs, 5, 1.0f, 1, &rng), 1); /* top-1: the argmax */
        int t = zoff_sample_token(probs, 5, 1.0f, 2, &rng);          /* top-2: 1 or 3 */
        CHECK(t == 1 || t == 3);
        counts[zoff_sample_token(probs, 5, 1.0f, 0, &rng)]++;
    }
    CHECK(counts[1] > 850 && counts[1] < 1150); /* ~1000 */
    CHECK(counts[2] > 40 && counts[2] < 170);   /* ~100 */
    int cold = 0;
    for (int i = 0; i < 1000; i++)
        cold += zoff_sample_token(probs, 5, 0.1f, 0, &rng) == 1;
    CHECK(cold > 990); /* a low temperature concentrates on the argmax */
}

/* A model larger than the device fails cleanly and gives back everything it took. */
static void test_device_oom(void) {
    zoff_dev_config cfg;
    zoff_dev_config_default(&cfg);
    cfg.kind = ZOFF_DEV_HOST;
    cfg.capacity = 4u << 20;
    zoff_dev *small;
    REQUIRE_OK(zoff_dev_open(&cfg, &small));
    zoff_gpt_config c = {
        .n_layer = 4, .n_head = 4, .n_embd = 256, .vocab_size = 256, .seq_len = 64};
    zoff_model *m = NULL;
    CHECK(zoff_gpt_create(small, &c, NULL, &m) == ZOFF_EDEVICE_OOM);
    CHECK(m == NULL);
    zoff_dev_mem_stats ms;
    zoff_dev_mem_stats_get(small, &ms);
    CHECK_EQ_INT(ms.used, 0);
    CHECK(ms.n_oom >= 1);
    zoff_dev_close(small);
}

/* Exact resumption: 3 steps, save weights and optimizer state, load both into a fresh model
 * and trainer, 3 more steps == 6 steps in one go (bit for bit on the host). */
static void test_resume(void) {
    zoff_gpt_config c;
    tiny_config(&c);
    zoff_model_options o;
    zoff_model_options_default(&o);
    o.batch = 2;
    o.seq_len = 8;
    zoff_trainer_config tc;
    zoff_trainer_config_default(&tc);
    tc.total_steps = 6;
    tc.warmup_steps = 2;
    char dir[] = "/tmp/zoff_resume_XXXXXX";
    REQUIRE_OK(mkdtemp(dir) ? 0 : -1);
    char ck[128], opt[160];
    snprintf(ck, sizeof ck, "%s/step_3", dir);
    snprintf(opt, sizeof opt, "%s/optimizer.safetensors", ck);
    int32_t x[6][16], y[6][16];
    for (int i = 0; i < 6; i++)
        make_batch(2, 8, c.vocab_size, 40 + i, x[i], y[i]);
    zoff_model *a, *b, *r;
    zoff_trainer *ta, *tb, *tr;
    zoff_step_stats sa, sr;
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &a));
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &b));
    REQUIRE_OK(zoff_model_init_params(a, 3));
    REQUIRE_OK(zoff_model_init_params(b, 3));
    REQUIRE_OK(zoff_trainer_create(a, st, &tc, NULL, &ta));
    REQUIRE_OK(zoff_trainer_create(b, st, &tc, NULL, &tb));
    for (int i = 0; i < 6; i++)
        REQUIRE_OK(zoff_trainer_step(ta, BATCH(x[i], y[i], 2, 8), &sa));
    for (int i = 0; i < 3; i++)
        REQUIRE_OK(zoff_trainer_step(tb, BATCH(x[i], y[i], 2, 8), NULL));
    REQUIRE_OK(zoff_model_checkpoint_save(b, ck, NULL));
    REQUIRE_OK(zoff_trainer_save_state(tb, opt));
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &r));
    REQUIRE_OK(zoff_model_checkpoint_load(r, ck));
    REQUIRE_OK(zoff_trainer_create(r, st, &tc, NULL, &tr));
    REQUIRE_OK(zoff_trainer_load_state(tr, opt));
    CHECK_EQ_INT(zoff_trainer_get_step(tr), 3);
    for (int i = 3; i < 6; i++)
        REQUIRE_OK(zoff_trainer_step(tr, BATCH(x[i], y[i], 2, 8), &sr));
    CHECK(sa.loss == sr.loss && sa.lr == sr.lr);
    size_t total = zoff_model_get_layout(a)->total;
    float *pa = malloc(total * 4), *pr = malloc(total * 4);
    REQUIRE_OK(zoff_model_params_to_host(a, pa));
    REQUIRE_OK(zoff_model_params_to_host(r, pr));
    CHECK(memcmp(pa, pr, total * 4) == 0);
    /* a truncated state file names the file and the tensor; another model's is refused */
    FILE *f = fopen(opt, "r+b");
    REQUIRE_OK(f ? 0 : -1);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fclose(f);
    REQUIRE_OK(truncate(opt, sz - 16));
    CHECK(zoff_trainer_load_state(tr, opt) == ZOFF_EFORMAT);
    CHECK(strstr(zoff_last_error_detail(), opt) && strstr(zoff_last_error_detail(), "adamw.v"));
    float one = 0;
    int step = 0;
    CHECK(zoff_optimizer_state_load(opt, &one, &one, 1, &step, &one) == ZOFF_ESHAPE);
    free(pa), free(pr);
    zoff_trainer_destroy(ta), zoff_trainer_destroy(tb), zoff_trainer_destroy(tr);
    zoff_model_destroy(a), zoff_model_destroy(b), zoff_model_destroy(r);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* The loss over chunks of rows equals the loss over all rows at once; ignored targets (-100)
 * carry no loss and no gradient; samples packed into one row with doc_start see only
 * themselves (positions restart, attention stays inside), as if run one by one. */
static void test_chunked_loss_ignore_and_packing(void) {
    zoff_gpt_config c;
    tiny_config(&c);
    zoff_model_options o;
    zoff_model_options_default(&o);
    o.batch = 2;
    o.seq_len = 8;
    zoff_model *whole, *chunked;
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &whole));
    o.loss_chunk_rows = 3; /* 16 rows: chunks of 3, 3, 3, 3, 3, 1 */
    REQUIRE_OK(zoff_gpt_create(dev, &c, &o, &chunked));
    const zoff_layout *l = zoff_model_get_layout(whole);
    float *p = malloc(l->total * 4), *g1 = malloc(l->total * 4), *g2 = malloc(l->total * 4);
    random_params(whole, 11, p);
    REQUIRE_OK(zoff_model_params_from_host(chunked, p));
    int32_t x[16], y[16];
    make_batch(2, 8, c.vocab_size, 21, x, y);
    y[2] = y[9] = y[15] = -100;
    float l1, l2;
    grads(whole, x, y, 2, 8, g1, &l1);
    grads(chunked, x, y, 2, 8, g2, &l2);
    double maxd = 0, maxg = 0;
    for (size_t i = 0; i < l->total; i++) {
        maxd = fmax(maxd, fabs(g1[i] - g2[i]));
        maxg = fmax(maxg, fabs(g1[i]));
    }
    printf("chunked loss: %.7f vs %.7f, max gradient difference %.3g (of %.3g)\n", l2, l1, maxd,
           maxg);
    CHECK(fabsf(l1 - l2) <= 1e-6f * l1);
    CHECK(maxd <= 1e-5 * maxg);

    /* the mean over the targets that count, from the model's own next-token probabilities */
    float *probs = malloc((size_t)c.vocab_size * sizeof *probs);
    float lf;
    REQUIRE_OK(zoff_model_forward(whole, st, BATCH(x, y, 2, 8), &lf));
    double sum = 0;
    int n = 0;
    for (int i = 0; i < 16; i++) {
        if (y[i] < 0) continue;
        REQUIRE_OK(zoff_model_probs_row(whole, st, i / 8, i % 8, probs));
        sum -= log((double)probs[y[i]]);
        n++;
    }
    printf("ignore index: loss %.7f, direct mean over %d targets %.7f\n", lf, n, sum / n);
    CHECK(fabs(lf - sum / n) <= 1e-5 * fabs(lf));
    CHECK(lf == l1);
    /* an ignored target's value does not matter: a different token there, same gradients */
    int32_t y2[16];
    memcpy(y2, y, sizeof y2);
    y2[2] = 0;
    grads(whole, x, y2, 2, 8, g2, &l2);
    CHECK(l2 != l1); /* it counts now */
    y2[2] = -100;
    grads(whole, x, y2, 2, 8, g2, &l2);
    CHECK(memcmp(g1, g2, l->total * 4) == 0);
    CHECK(zoff_model_forward(whole, st, BATCH(x, (y2[3] = -7, y2), 2, 8), &lf) == -EINVAL);

    /* packing: samples of 5 and 3 tokens in one row == each alone */
    int32_t px[8], py[8], ds[8] = {0, 0, 0, 0, 0, 5, 5, 5};
    make_batch(1, 8, c.vocab_size, 31, px, py);
    zoff_batch packed = {.tokens = px, .targets = py, .doc_start = ds, .B = 1, .T = 8};
    float lp, la, lb;
    REQUIRE_OK(zoff_model_forward(whole, st, &packed, &lp));
    REQUIRE_OK(zoff_model_forward(whole, st, BATCH(px, py, 1, 5), &la));
    REQUIRE_OK(zoff_model_forward(whole, st, BATCH(px + 5, py + 5, 1, 3), &lb));
    printf("packed: %.7f, one by one: %.7f\n", lp, (5 * la + 3 * lb) / 8);
    CHECK(fabsf(lp - (5 * la + 3 * lb) / 8) <= 1e-6f * lp);
    ds[6] = 6; /* a sample may not start in the middle of another's positions */
    ds[7] = 5;
    CHECK(zoff_model_forward(whole, st, &packed, &lp) == -EINVAL);
    CHECK(strstr(zoff_last_error_detail(), "doc_start") != NULL);
    free(p), free(g1), free(g2), free(probs);
    zoff_model_destroy(whole);
    zoff_model_destroy(chunked);
}

int main(void) {
    zoff_test_init();
    zoff_dev_config cfg;
    zoff_dev_config_default(&cfg);
    cfg.kind = ZOFF_DEV_HOST;
    REQUIRE_OK(zoff_dev_open(&cfg, &dev));
    REQUIRE_OK(zoff_dev_stream_create(dev, &st));
    test_layout();
    test_whole_model_gradients();
    test_chunked_loss_ignore_and_packing();
    test_overfit_and_hooks();
    test_optimizer_hook_parity();
    test_schedule_and_sampling();
    test_device_oom();
    test_resume();
    CHECK_OK(zoff_dev_stream_destroy(st));
    zoff_dev_close(dev);
    return zoff_test_finish("test_model_gpt");
}
