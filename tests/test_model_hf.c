/* Exactness against transformers, without PyTorch: each fixture in tests/fixtures/hf/ (made by
 * scripts/make_hf_fixtures.py) is a random-init Hugging Face checkpoint and what transformers
 * computed from it in fp32 on a fixed batch. The model is built from the checkpoint alone
 * (architecture detected from config.json, sharded and 16-bit files included) on one backend
 * (argv[1]) and must give the same logits (normalized error <= 1e-4), loss (<= 1e-4 relative)
 * and per-tensor gradient norms (<= 1e-3 relative); a checkpoint it saves must reload bit for
 * bit with an equal config. Also: fields that change the computation are refused by name. */
#include "core/half.h"
#include "model/model.h"
#include "tests/device_test_util.h"
#include "tests/test_util.h"

#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef ZOFF_FIXTURES
#error "ZOFF_FIXTURES must name tests/fixtures"
#endif

static double nerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-30);
}

/* The reference file's tensors as a layout: tokens, targets, logits, loss, then one gradient
 * norm per model tensor. */
static void ref_layout(const zoff_layout *ml, int BT, int V, zoff_layout *rl) {
    rl->n_tensors = 4 + ml->n_tensors;
    rl->tensors = calloc((size_t)rl->n_tensors, sizeof *rl->tensors);
    rl->n_groups = 1;
    rl->group_begin = calloc(2, sizeof *rl->group_begin);
    REQUIRE_OK(rl->tensors && rl->group_begin ? 0 : -ENOMEM);
    size_t off = 0;
    for (int i = 0; i < rl->n_tensors; i++) {
        zoff_tensor *t = &rl->tensors[i];
        t->ndim = 1;
        t->shape[0] = 1;
        if (i == 0) snprintf(t->name, sizeof t->name, "tokens"), t->shape[0] = BT;
        if (i == 1) snprintf(t->name, sizeof t->name, "targets"), t->shape[0] = BT;
        if (i == 2) {
            snprintf(t->name, sizeof t->name, "logits");
            t->ndim = 2;
            t->shape[0] = BT;
            t->shape[1] = V;
        }
        if (i == 3) snprintf(t->name, sizeof t->name, "loss");
        if (i >= 4) snprintf(t->name, sizeof t->name, "grad_norm.%.80s", ml->tensors[i - 4].name);
        t->numel = (size_t)t->shape[0] * (t->ndim == 2 ? (size_t)t->shape[1] : 1);
        t->offset = off;
        off += (t->numel + ZOFF_LAYOUT_ALIGN - 1) / ZOFF_LAYOUT_ALIGN * ZOFF_LAYOUT_ALIGN;
    }
    rl->total = rl->group_begin[1] = off;
}

static bool same_config(const zoff_model_config *a, const zoff_model_config *b) {
    if (a->arch != b->arch) return false;
    if (a->arch == ZOFF_ARCH_LLAMA) return zoff_llama_config_equal(&a->llama, &b->llama);
    const zoff_gpt_config *x = &a->gpt, *y = &b->gpt;
    return x->n_layer == y->n_layer && x->n_head == y->n_head && x->n_embd == y->n_embd &&
           x->vocab_size == y->vocab_size && x->seq_len == y->seq_len &&
           x->untied_head == y->untied_head;
}

static void check_fixture(zoff_dev *dev, const char *name, const char *want_arch) {
    char path[512], ref_path[600], out_dir[256];
    snprintf(path, sizeof path, "%s/hf/%s", ZOFF_FIXTURES, name);
    snprintf(ref_path, sizeof ref_path, "%s/reference.safetensors", path);
    char arch[16];
    REQUIRE_OK(zoff_checkpoint_arch(path, arch, sizeof arch));
    CHECK(strcmp(arch, want_arch) == 0);
    zoff_model_config cfg;
    REQUIRE_OK(zoff_model_config_from_checkpoint(path, &cfg));
    const int B = 2, T = 16, BT = B * T;
    const int V = cfg.arch == ZOFF_ARCH_LLAMA ? cfg.llama.vocab_size : cfg.gpt.vocab_size;
    zoff_model_options o;
    zoff_model_options_default(&o);
    o.batch = B;
    o.seq_len = T;
    o.loss_chunk_rows = 7; /* several chunks, one partial */
    zoff_dev_stream *s;
    REQUIRE_OK(zoff_dev_stream_create(dev, &s));
    zoff_model *m;
    REQUIRE_OK(zoff_model_config_create(dev, &cfg, &o, &m));
    REQUIRE_OK(zoff_model_checkpoint_load(m, path));
    const zoff_layout *ml = zoff_model_get_layout(m);
    zoff_device_plan plan, mem;
    REQUIRE_OK(zoff_model_config_plan(&cfg, &o, &plan));
    zoff_model_memory(m, &mem);
    CHECK(plan.total == mem.total && plan.activations == mem.activations); /* plan = allocated */

    zoff_layout rl;
    ref_layout(ml, BT, V, &rl);
    float *ref = malloc(rl.total * sizeof *ref);
    REQUIRE_OK(zoff_safetensors_load(ref_path, &rl, ref));
    int32_t tok[32], tgt[32];
    for (int i = 0; i < BT; i++) {
        tok[i] = (int32_t)ref[rl.tensors[0].offset + (size_t)i];
        tgt[i] = (int32_t)ref[rl.tensors[1].offset + (size_t)i];
    }
    /* logits */
    float *logits = malloc((size_t)BT * V * sizeof *logits);
    REQUIRE_OK(zoff_model_forward(m, s, BATCH(tok, NULL, B, T), NULL));
    for (int i = 0; i < BT; i++)
        REQUIRE_OK(zoff_model_logits_row(m, s, i / T, i % T, logits + (size_t)i * V));
    double e_logits = nerr(logits, ref + rl.tensors[2].offset, (size_t)BT * V);
    /* loss and gradients */
    float loss = 0.0f, ref_loss = ref[rl.tensors[3].offset];
    REQUIRE_OK(zoff_model_alloc_grads(m));
    REQUIRE_OK(zoff_model_zero_grads(m, s));
    REQUIRE_OK(zoff_model_forward_backward(m, s, BATCH(tok, tgt, B, T), 1.0f, &loss));
    float *grads = malloc(ml->total * sizeof *grads);
    REQUIRE_OK(zoff_model_grads_to_host(m, grads));
    double e_loss = fabs((double)loss - ref_loss) / fabs((double)ref_loss), e_grad = 0.0;
    const char *worst = "";
    for (int i = 0; i < ml->n_tensors; i++) {
        const zoff_tensor *t = &ml->tensors[i];
        double ss = 0.0;
        for (size_t j = 0; j < t->numel; j++)
            ss += (double)grads[t->offset + j] * grads[t->offset + j];
        double want = ref[rl.tensors[4 + i].offset], e = fabs(sqrt(ss) - want) / want;
        CHECK(want > 0.0);
        if (e > 1e-3)
            fprintf(stderr, "%s: %s: gradient norm %.7g, transformers %.7g\n", name, t->name,
                    sqrt(ss), want);
        if (e > e_grad) e_grad = e, worst = t->name;
    }
    printf("%s: %d tensors; logits nerr %.2e, loss %.6f vs %.6f (rel %.2e), worst gradient norm "
           "rel %.2e (%s)\n",
           name, ml->n_tensors, e_logits, (double)loss, (double)ref_loss, e_loss, e_grad, worst);
    CHECK(e_logits <= 1e-4);
    CHECK(e_loss <= 1e-4);
    CHECK(e_grad <= 1e-3);

    /* activation checkpointing recomputes the same gradients, bit for bit */
    {
        zoff_model_options oc = o;
        oc.activation_checkpoint = true;
        zoff_model *mc;
        REQUIRE_OK(zoff_model_config_create(dev, &cfg, &oc, &mc));
        REQUIRE_OK(zoff_model_checkpoint_load(mc, path));
        REQUIRE_OK(zoff_model_alloc_grads(mc));
        REQUIRE_OK(zoff_model_zero_grads(mc, s));
        float loss_c = 0.0f;
        REQUIRE_OK(zoff_model_forward_backward(mc, s, BATCH(tok, tgt, B, T), 1.0f, &loss_c));
        float *gc = malloc(ml->total * sizeof *gc);
        REQUIRE_OK(zoff_model_grads_to_host(mc, gc));
        CHECK(loss_c == loss);
        CHECK(memcmp(gc, grads, ml->total * sizeof *gc) == 0);
        free(gc);
        zoff_model_destroy(mc);
    }
    /* packed samples: a row holding two samples (doc_start) gives the second the logits it has
     * alone (positions restart, attention stays inside the sample) */
    {
        int32_t ds[32], tok2[16];
        for (int i = 0; i < BT; i++)
            ds[i] = i / T == 0 && i % T >= 8 ? 8 : 0;
        for (int i = 0; i < 8; i++)
            tok2[i] = tok[8 + i];
        zoff_batch pb = {.tokens = tok, .doc_start = ds, .B = B, .T = T};
        float *lp = malloc((size_t)8 * V * sizeof *lp), *la = malloc((size_t)8 * V * sizeof *la);
        REQUIRE_OK(zoff_model_forward(m, s, &pb, NULL));
        for (int i = 0; i < 8; i++)
            REQUIRE_OK(zoff_model_logits_row(m, s, 0, 8 + i, lp + (size_t)i * V));
        REQUIRE_OK(zoff_model_forward(m, s, BATCH(tok2, NULL, 1, 8), NULL));
        for (int i = 0; i < 8; i++)
            REQUIRE_OK(zoff_model_logits_row(m, s, 0, i, la + (size_t)i * V));
        double e = nerr(lp, la, (size_t)8 * V);
        printf("%s: packed sample vs alone: logits nerr %.2e\n", name, e);
        CHECK(e <= 1e-5);
        free(lp);
        free(la);
    }
    /* 16-bit mode (bf16 weights, GEMM operands and activations): close to transformers' fp32 */
    {
        zoff_model_options ob = o;
        ob.matmul_dtype = ZOFF_BF16;
        zoff_model *mb;
        REQUIRE_OK(zoff_model_config_create(dev, &cfg, &ob, &mb));
        REQUIRE_OK(zoff_model_checkpoint_load(mb, path));
        REQUIRE_OK(zoff_model_alloc_grads(mb));
        REQUIRE_OK(zoff_model_zero_grads(mb, s));
        float loss_b = 0.0f;
        REQUIRE_OK(zoff_model_forward_backward(mb, s, BATCH(tok, tgt, B, T), 1.0f, &loss_b));
        float *gb = malloc(ml->total * sizeof *gb);
        REQUIRE_OK(zoff_model_grads_to_host(mb, gb));
        double eg = nerr(gb, grads, ml->total), el = fabs((double)loss_b - ref_loss) / ref_loss;
        printf("%s: bf16: loss rel %.2e, gradients nerr %.2e vs fp32\n", name, el, eg);
        CHECK(el <= 1e-2);
        CHECK(eg <= 5e-2);
        free(gb);
        zoff_model_destroy(mb);
    }

    /* a saved checkpoint reloads bit for bit, with the same config */
    snprintf(out_dir, sizeof out_dir, "/tmp/zoff_test_hf_%d_%s", (int)getpid(), name);
    REQUIRE_OK(zoff_model_checkpoint_save(m, out_dir, NULL));
    zoff_model_config cfg2;
    REQUIRE_OK(zoff_model_config_from_checkpoint(out_dir, &cfg2));
    CHECK(same_config(&cfg, &cfg2));
    zoff_model *m2;
    REQUIRE_OK(zoff_model_config_create(dev, &cfg2, &o, &m2));
    REQUIRE_OK(zoff_model_checkpoint_load(m2, out_dir));
    float *p1 = malloc(ml->total * sizeof *p1), *p2 = malloc(ml->total * sizeof *p2);
    REQUIRE_OK(zoff_model_params_to_host(m, p1));
    REQUIRE_OK(zoff_model_params_to_host(m2, p2));
    CHECK(memcmp(p1, p2, ml->total * sizeof *p1) == 0);
    /* sharded (64 KiB shards) in bf16: the index replaces model.safetensors, and the reload is
     * the bf16 rounding of the weights, bit for bit */
    zoff_save_options so;
    zoff_save_options_default(&so);
    so.dtype = ZOFF_BF16;
    so.max_shard_bytes = 64 << 10;
    REQUIRE_OK(zoff_model_checkpoint_save_opts(m, out_dir, NULL, &so));
    char f[512];
    snprintf(f, sizeof f, "%s/model.safetensors", out_dir);
    CHECK(access(f, F_OK) != 0);
    snprintf(f, sizeof f, "%s/model.safetensors.index.json", out_dir);
    CHECK(access(f, F_OK) == 0);
    snprintf(f, sizeof f, "%s/model-*-of-*.safetensors", out_dir);
    glob_t gl;
    CHECK(glob(f, 0, NULL, &gl) == 0 && gl.gl_pathc >= 3);
    globfree(&gl);
    REQUIRE_OK(zoff_model_checkpoint_load(m2, out_dir));
    REQUIRE_OK(zoff_model_params_to_host(m2, p2));
    size_t off_bits = 0;
    for (size_t i = 0; i < ml->total; i++)
        off_bits += p2[i] != zoff_bf16_to_f32(zoff_f32_to_bf16(p1[i]));
    CHECK_EQ_INT(off_bits, 0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out_dir);
    CHECK(system(cmd) == 0);
    free(p1);
    free(p2);
    zoff_model_destroy(m2);
    free(grads);
    free(logits);
    free(ref);
    zoff_layout_free(&rl);
    zoff_model_destroy(m);
    CHECK_OK(zoff_dev_stream_destroy(s));
}

/* config.json fields that change the computation: refused, the detail naming field and value. */
static void check_refusals(void) {
    static const struct {
        const char *json, *needle;
    } cases[] = {
        {"\"hidden_act\": \"gelu\"", "hidden_act = gelu"},
        {"\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}", "\"yarn\""},
        {"\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}", "\"dynamic\""},
        {"\"attention_dropout\": 0.1", "attention_dropout = 0.1"},
        {"\"partial_rotary_factor\": 0.5", "partial_rotary_factor = 0.5"},
        {"\"num_key_value_heads\": 3", "num_key_value_heads = 3"},
        {"\"rms_norm_eps\": 0", "rms_norm_eps = 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text,
                 "{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"num_attention_heads\": "
                 "4, \"hidden_size\": 64, \"intermediate_size\": 128, \"vocab_size\": 100, "
                 "\"max_position_embeddings\": 64, %s}",
                 cases[i].json);
        zoff_llama_config c;
        int rc = zoff_llama_config_parse_json(text, "cfg.json", &c);
        CHECK(rc == ZOFF_ECONFIG);
        if (!strstr(zoff_last_error_detail(), cases[i].needle) ||
            !strstr(zoff_last_error_detail(), "cfg.json")) {
            fprintf(stderr, "case %zu: detail \"%s\" lacks \"%s\"\n", i, zoff_last_error_detail(),
                    cases[i].needle);
            CHECK(0);
        }
    }
    /* rope_scaling "linear" (transformers 4.x spelling, "type"): the default frequencies over the
     * factor */
    zoff_llama_config lin, def;
    CHECK_OK(zoff_llama_config_parse_json(
        "{\"model_type\": \"llama\", \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
        "\"hidden_size\": 32, \"intermediate_size\": 64, \"vocab_size\": 50, "
        "\"max_position_embeddings\": 64, \"rope_theta\": 500.0, "
        "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 4.0}}",
        "linear.json", &lin));
    def = lin;
    def.rope_type = ZOFF_ROPE_DEFAULT;
    float fl[8], fd[8];
    zoff_llama_rope_inv_freq(&lin, fl);
    zoff_llama_rope_inv_freq(&def, fd);
    for (int i = 0; i < 8; i++)
        CHECK(fl[i] == fd[i] / 4.0f);
    CHECK(fd[0] == 1.0f && fabsf(fd[1] - powf(500.0f, -2.0f / 16.0f)) < 1e-7f);
    /* GPT-2's too */
    static const struct {
        const char *json, *needle;
    } gpt[] = {
        {"\"layer_norm_epsilon\": 1e-6", "layer_norm_epsilon = 1e-06"},
        {"\"activation_function\": \"relu\"", "activation_function = relu"},
        {"\"n_inner\": 100", "n_inner = 100"},
        {"\"scale_attn_weights\": false", "scale_attn_weights = false"},
        {"\"scale_attn_by_inverse_layer_idx\": true", "scale_attn_by_inverse_layer_idx = true"},
        {"\"tie_word_embeddings\": 0", "tie_word_embeddings"},
    };
    for (size_t i = 0; i < sizeof gpt / sizeof gpt[0]; i++) {
        char text[512];
        snprintf(text, sizeof text,
                 "{\"n_layer\": 2, \"n_head\": 2, \"n_embd\": 16, \"vocab_size\": 50, "
                 "\"n_positions\": 32, %s}",
                 gpt[i].json);
        zoff_gpt_config c;
        CHECK(zoff_gpt_config_parse_json(text, "gpt.json", &c) == ZOFF_ECONFIG);
        if (!strstr(zoff_last_error_detail(), gpt[i].needle)) {
            fprintf(stderr, "gpt case %zu: detail \"%s\" lacks \"%s\"\n", i,
                    zoff_last_error_detail(), gpt[i].needle);
            CHECK(0);
        }
    }
    zoff_gpt_config gc;
    CHECK_OK(zoff_gpt_config_parse_json("{\"n_layer\": 2, \"n_head\": 2, \"n_embd\": 16, "
                                        "\"vocab_size\": 50, \"n_positions\": 32, "
                                        "\"tie_word_embeddings\": false, \"n_inner\": 64}",
                                        "gpt.json", &gc));
    CHECK(gc.untied_head);
    /* a sliding window the sequence exceeds is refused at creation; within it, accepted */
    zoff_llama_config c;
    CHECK_OK(zoff_llama_config_parse_json(
        "{\"model_type\": \"mistral\", \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
        "\"num_key_value_heads\": 1, \"hidden_size\": 32, \"intermediate_size\": 64, "
        "\"vocab_size\": 50, \"max_position_embeddings\": 64, \"sliding_window\": 16}",
        "mistral.json", &c));
    CHECK_EQ_INT(c.sliding_window, 16);
    zoff_llama_config c0;
    CHECK_OK(zoff_llama_config_parse_json(
        "{\"model_type\": \"mistral\", \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
        "\"hidden_size\": 32, \"intermediate_size\": 64, \"vocab_size\": 50, "
        "\"max_position_embeddings\": 64, \"sliding_window\": null}",
        "mistral.json", &c0));
    CHECK_EQ_INT(c0.sliding_window, 0);
    CHECK(c0.rope_theta == 10000.0);
    CHECK_OK(zoff_llama_config_parse_json(
        "{\"model_type\": \"mistral\", \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
        "\"hidden_size\": 32, \"intermediate_size\": 64, \"vocab_size\": 50, "
        "\"max_position_embeddings\": 64}",
        "mistral.json", &c0));
    CHECK_EQ_INT(c0.sliding_window, 4096); /* MistralConfig's default when the key is absent */
    zoff_model_options o;
    zoff_model_options_default(&o);
    o.batch = 1;
    o.seq_len = 32;
    zoff_device_plan p;
    CHECK(zoff_llama_plan(&c, &o, &p) == ZOFF_ECONFIG);
    CHECK(strstr(zoff_last_error_detail(), "sliding_window = 16") != NULL);
    o.seq_len = 16;
    CHECK_OK(zoff_llama_plan(&c, &o, &p));
}

/* Malformed Hugging Face directories: each error names the file and what is wrong. */
static void check_bad_checkpoints(zoff_dev *dev) {
    char dir[] = "/tmp/zoff_hf_bad_XXXXXX", cmd[2048], path[600], arch[16];
    REQUIRE_OK(mkdtemp(dir) ? 0 : -1);
    snprintf(cmd, sizeof cmd, "cp %s/hf/llama_gqa/* %s/", ZOFF_FIXTURES, dir);
    REQUIRE_OK(system(cmd));
    zoff_model_config cfg;
    REQUIRE_OK(zoff_model_config_from_checkpoint(dir, &cfg));
    zoff_model_options o;
    zoff_model_options_default(&o);
    o.batch = 1;
    o.seq_len = 8;
    zoff_model *m;
    REQUIRE_OK(zoff_model_config_create(dev, &cfg, &o, &m));
    CHECK_OK(zoff_model_checkpoint_load(m, dir));
    /* a shard gone: named */
    snprintf(path, sizeof path, "%s/model-00003-of-00004.safetensors", dir);
    snprintf(cmd, sizeof cmd, "mv %s %s.away", path, path);
    REQUIRE_OK(system(cmd));
    CHECK(zoff_model_checkpoint_load(m, dir) != 0);
    CHECK(strstr(zoff_last_error_detail(), "model-00003-of-00004.safetensors") != NULL);
    snprintf(cmd, sizeof cmd, "mv %s.away %s", path, path);
    REQUIRE_OK(system(cmd));
    /* a tensor in no shard (lm_head, alone in the 4th shard, dropped from the index): named,
     * with the index */
    snprintf(cmd, sizeof cmd, "sed -i '/\"lm_head.weight\"/d' %s/model.safetensors.index.json",
             dir);
    REQUIRE_OK(system(cmd));
    CHECK(zoff_model_checkpoint_load(m, dir) == ZOFF_EFORMAT);
    CHECK(strstr(zoff_last_error_detail(), "lm_head.weight") != NULL);
    CHECK(strstr(zoff_last_error_detail(), "model.safetensors.index.json") != NULL);
    zoff_model_destroy(m);
    /* an architecture zoff does not know: refused by name */
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    REQUIRE_OK(f ? 0 : -1);
    fprintf(f, "{\"model_type\": \"mamba\", \"architectures\": [\"MambaForCausalLM\"]}\n");
    fclose(f);
    CHECK(zoff_checkpoint_arch(dir, arch, sizeof arch) == ZOFF_ECONFIG);
    CHECK(strstr(zoff_last_error_detail(), "\"mamba\"") != NULL);
    CHECK(strstr(zoff_last_error_detail(), "config.json") != NULL);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

int main(int argc, char **argv) {
    zoff_dev *dev = zoff_test_open_device(argc, argv, (size_t)512 << 20);
    check_refusals();
    check_bad_checkpoints(dev);
    check_fixture(dev, "llama_gqa", "llama");
    check_fixture(dev, "qwen2_bias", "llama");
    check_fixture(dev, "llama3_rope", "llama");
    check_fixture(dev, "llama_biases", "llama");
    check_fixture(dev, "gpt2_untied", "gpt2");
    zoff_dev_close(dev);
    return zoff_test_finish("test_model_hf");
}
