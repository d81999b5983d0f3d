/* One configuration for any architecture (zoff_model_config): what the CLI and benchmarks use
 * to plan, create and load a model without knowing which architecture it is. The architecture
 * comes from --arch or from a checkpoint's config.json (zoff_checkpoint_arch). */
#include "core/log.h"
#include "model/model.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define MOD "model"

int zoff_model_config_from_checkpoint(const char *path, zoff_model_config *c) {
    char arch[16];
    int rc = zoff_checkpoint_arch(path, arch, sizeof arch);
    if (rc) return rc;
    memset(c, 0, sizeof *c);
    if (strcmp(arch, "llama") == 0) {
        c->arch = ZOFF_ARCH_LLAMA;
        return zoff_llama_checkpoint_config(path, &c->llama);
    }
    c->arch = ZOFF_ARCH_GPT2;
    return zoff_gpt_checkpoint_config(path, &c->gpt);
}

int zoff_model_config_validate(const zoff_model_config *c) {
    return c->arch == ZOFF_ARCH_LLAMA ? zoff_llama_config_validate(&c->llama)
                                      : zoff_gpt_config_validate(&c->gpt);
}

int zoff_model_config_plan(const zoff_model_config *c, const zoff_model_options *opt,
                           zoff_device_plan *out) {
    return c->arch == ZOFF_ARCH_LLAMA ? zoff_llama_plan(&c->llama, opt, out)
                                      : zoff_gpt_plan(&c->gpt, opt, out);
}

int zoff_model_config_create(zoff_dev *dev, const zoff_model_config *c,
                             const zoff_model_options *opt, zoff_model **out) {
    return c->arch == ZOFF_ARCH_LLAMA ? zoff_llama_create(dev, &c->llama, opt, out)
                                      : zoff_gpt_create(dev, &c->gpt, opt, out);
}

int zoff_model_config_layout(const zoff_model_config *c, zoff_layout *out) {
    return c->arch == ZOFF_ARCH_LLAMA ? zoff_llama_layout_build(&c->llama, out)
                                      : zoff_gpt_layout_build(&c->gpt, out);
}

double zoff_model_config_train_flops(const zoff_model_config *c, int B, int T) {
    return c->arch == ZOFF_ARCH_LLAMA ? zoff_llama_train_flops(&c->llama, B, T)
                                      : zoff_gpt_train_flops(&c->gpt, B, T);
}

void zoff_model_config_describe(const zoff_model_config *c, char *buf, size_t n) {
    if (c->arch == ZOFF_ARCH_LLAMA) {
        const zoff_llama_config *l = &c->llama;
        snprintf(buf, n, "%s %d layers, %d heads (%d KV), %d wide, FFN %d, vocab %d%s",
                 l->model_type, l->n_layer, l->n_head, l->n_kv_head, l->n_embd, l->n_ffn,
                 l->vocab_size, l->tie_word_embeddings ? ", tied head" : "");
    } else {
        const zoff_gpt_config *g = &c->gpt;
        snprintf(buf, n, "GPT %d layers, %d heads, %d wide, vocab %d", g->n_layer, g->n_head,
                 g->n_embd, g->vocab_size);
    }
}
