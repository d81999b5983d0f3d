/* `zoff train`: trains a GPT with the reference trainer (AdamW on the device), or with
 * --offload cpu|nvme through the offload engine (cli/train_offload.c).
 *
 * With no arguments it is the built-in demo: a 4-layer, 128-wide GPT trained from scratch on
 * /usr/share/common-licenses/GPL-3 with byte tokens, about a minute on two cores. Settings
 * come from defaults, then a --config JSON file, then flags (the later wins); every option
 * has a flag and a JSON key (the flag's name with '_' for '-'). Output: a live progress line,
 * OUT/metrics.jsonl (one JSON object per step and per validation), checkpoints OUT/step_N
 * and OUT/final (model.safetensors + config.json), and a sampled generation at the end.
 * Checkpoint folders are replaced atomically and record their step and run id (see
 * model/checkpoint_dir.h); a fresh run refuses a non-empty OUT unless --overwrite.
 * Exit codes: 0 done, 1 run-time failure (including a run whose loss or gradients stay
 * non-finite for --max-nonfinite-steps steps: the last good checkpoint is kept), 2 bad usage,
 * 128 + signal after SIGINT (130) or SIGTERM (143), having saved a checkpoint.
 * Under `mpirun -np N` the ranks train data-parallel with the optimizer state partitioned
 * across them (cli/train_dist.h); the output is the same as one process with N x --batch. */
#include "cli/cli.h"
#include "cli/train_dist.h"
#include "cli/train_offload.h"
#include "cli/train_source.h"
#include "cli/train_support.h"
#include "model/checkpoint_dir.h"
#include "model/model.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DATA "/usr/share/common-licenses/GPL-3"

typedef struct train_opts {
    int n_layer, n_head, n_embd, vocab_size, seq_len;
    int batch, steps, warmup, val_every, val_batches, ckpt_every, sample_tokens, top_k;
    int log_every, threads, grad_accum;
    double collective_timeout; /* seconds, under mpirun */
    double lr, min_lr_frac, weight_decay, grad_clip, temperature;
    long long seed;
    const char *dtype, *data, *init_from, *resume, *out, *device, *config, *prompt;
    const char *arch;                        /* from scratch: gpt2 or llama */
    int n_kv_head, n_ffn;                    /* llama: 0 = n_head, 0 = about 8/3 n_embd */
    double rope_theta;                       /* llama */
    const char *max_shard_size, *save_dtype; /* checkpoints' weights */
    int activation_checkpoint, overwrite, max_nonfinite;
    const char *offload_activations; /* none | cpu */
    double val_frac;
    /* zoff sft (cli/sft_source.c) */
    const char *model, *tokenizer, *chat_template;
    int pack, pad, eval_generate, show;
    double epochs;
    unsigned long long given;     /* bit i: specs[i] was set by a flag or the config file */
    zoff_train_offload_flags off; /* --offload and the engine's settings */
} train_opts;

typedef enum opt_kind { OPT_INT, OPT_LL, OPT_FLOAT, OPT_STR, OPT_FLAG } opt_kind;

typedef struct opt_spec {
    const char *name; /* flag without "--"; JSON key with '_' */
    opt_kind kind;
    size_t off;
    double min, max;
    const char *help;
} opt_spec;

#define O(f) offsetof(train_opts, f)
static const opt_spec specs[] = {
    {"arch", OPT_STR, O(arch), 0, 0,
     "architecture from scratch: gpt2, llama (gpt2; --init-from: the checkpoint's)"},
    {"n-layer", OPT_INT, O(n_layer), 1, 4096, "transformer blocks (4)"},
    {"n-head", OPT_INT, O(n_head), 1, 4096, "attention heads, divides n-embd (4)"},
    {"n-embd", OPT_INT, O(n_embd), 1, 65536, "model width (128)"},
    {"vocab-size", OPT_INT, O(vocab_size), 1, 1 << 20, "vocabulary (256: bytes)"},
    {"seq-len", OPT_INT, O(seq_len), 1, 65536, "tokens per sequence (64)"},
    {"n-kv-head", OPT_INT, O(n_kv_head), 0, 4096,
     "llama: key/value heads, divides n-head (n-head)"},
    {"n-ffn", OPT_INT, O(n_ffn), 0, 1 << 20, "llama: MLP width (8/3 n-embd, rounded up to 64)"},
    {"rope-theta", OPT_FLOAT, O(rope_theta), 2, 1e12, "llama: RoPE base (10000)"},
    {"batch", OPT_INT, O(batch), 1, 1 << 20, "sequences per step (16)"},
    {"steps", OPT_INT, O(steps), 1, INT_MAX, "optimizer steps (600)"},
    {"grad-accum", OPT_INT, O(grad_accum), 1, 1 << 20, "micro-batches per step (1)"},
    {"lr", OPT_FLOAT, O(lr), 1e-12, 10, "peak learning rate (3e-3)"},
    {"min-lr-frac", OPT_FLOAT, O(min_lr_frac), 0, 1, "cosine floor as a fraction of lr (0.1)"},
    {"warmup", OPT_INT, O(warmup), 0, INT_MAX, "linear warm-up steps (20)"},
    {"weight-decay", OPT_FLOAT, O(weight_decay), 0, 10, "AdamW weight decay (0.1)"},
    {"grad-clip", OPT_FLOAT, O(grad_clip), 0, 1e9, "global norm clip, 0 = off (1.0)"},
    {"dtype", OPT_STR, O(dtype), 0, 0,
     "GEMM operand type: auto, f32, bf16, f16 (auto: bf16 on cuda, f32 on host)"},
    {"activation-checkpoint", OPT_FLAG, O(activation_checkpoint), 0, 1,
     "recompute each block in backward"},
    {"offload-activations", OPT_STR, O(offload_activations), 0, 0,
     "with --activation-checkpoint: kept block inputs in pinned CPU memory: none, cpu (none)"},
    {"data", OPT_STR, O(data), 0, 0, "text file (byte tokens) or llm.c .bin tokens"},
    {"val-frac", OPT_FLOAT, O(val_frac), 1e-6, 0.9, "validation split at the end (0.1)"},
    {"val-every", OPT_INT, O(val_every), 0, INT_MAX, "validate every N steps, 0 = end only (50)"},
    {"val-batches", OPT_INT, O(val_batches), 1, 1 << 20, "batches per validation (4)"},
    {"init-from", OPT_STR, O(init_from), 0, 0, "checkpoint dir, .safetensors or llm.c .bin"},
    {"resume", OPT_STR, O(resume), 0, 0, "checkpoint dir: weights, optimizer state and step"},
    {"out", OPT_STR, O(out), 0, 0, "output directory (zoff_out)"},
    {"ckpt-every", OPT_INT, O(ckpt_every), 0, INT_MAX, "checkpoint every N steps, 0 = end (200)"},
    {"max-shard-size", OPT_STR, O(max_shard_size), 0, 0,
     "checkpoint weights in shards of at most this size (5e9 bytes, transformers' 5GB)"},
    {"save-dtype", OPT_STR, O(save_dtype), 0, 0,
     "checkpoint weights stored as f32, bf16, f16 (f32)"},
    {"sample-tokens", OPT_INT, O(sample_tokens), 0, 1 << 20, "tokens to generate at the end (300)"},
    {"temperature", OPT_FLOAT, O(temperature), 1e-3, 100, "sampling temperature (0.8)"},
    {"top-k", OPT_INT, O(top_k), 0, 1 << 20, "sample from the k most likely, 0 = all (40)"},
    {"prompt", OPT_STR, O(prompt), 0, 0, "text to start the sample with (byte vocab)"},
    {"seed", OPT_LL, O(seed), 0, 9e15, "random seed (1337)"},
    {"log-every", OPT_INT, O(log_every), 1, INT_MAX, "progress line refresh, steps (1)"},
    {"device", OPT_STR, O(device), 0, 0, "auto, cuda or host (ZOFF_DEVICE or auto)"},
    {"threads", OPT_INT, O(threads), 0, 4096,
     "host backend kernel threads, 0 = all cores, shared among the ranks on a node (0)"},
    {"collective-timeout", OPT_FLOAT, O(collective_timeout), 1, 1e7,
     "mpirun: seconds a collective may wait for the other ranks before the job ends (300)"},
    {"offload", OPT_STR, O(off.offload), 0, 0,
     "optimizer state: none (on the device), cpu, nvme (cpu on the demo data, else none)"},
    {"nvme-path", OPT_STR, O(off.nvme_path), 0, 0, "swap directory for --offload nvme"},
    {"schedule", OPT_STR, O(off.schedule), 0, 0, "offload schedule: sync, overlap, dpu (sync)"},
    {"moments", OPT_STR, O(off.moments), 0, 0, "offloaded Adam moments: f32, bf16 (f32)"},
    {"bucket-size", OPT_STR, O(off.bucket_size), 0, 0,
     "offload gradient bucket, or auto: an eighth of the weights, 1..32MiB (auto)"},
    {"dpu-warmup", OPT_INT, O(off.dpu_warmup), 0, INT_MAX, "sync steps before DPU (2)"},
    {"trace", OPT_STR, O(off.trace), 0, 0, "offload: write a Chrome/Perfetto trace here"},
    {"offload-params", OPT_STR, O(off.params), 0, 0,
     "16-bit weights: none (on the device), cpu, nvme (streamed a layer group at a time), auto "
     "(what does not fit streams from CPU memory) (none)"},
    {"prefetch", OPT_INT, O(off.prefetch), 0, 64, "streamed weights: groups fetched ahead (2)"},
    {"overwrite", OPT_FLAG, O(overwrite), 0, 1, "a fresh run may replace the results in --out"},
    {"max-nonfinite-steps", OPT_INT, O(max_nonfinite), 1, INT_MAX,
     "stop (exit 1) after N non-finite steps in a row (3)"},
    /* zoff sft only (sft_only()): the model folder, the chat template, rows, epochs */
    {"model", OPT_STR, O(model), 0, 0,
     "sft: Hugging Face folder to fine-tune (config.json, weights, tokenizer.json)"},
    {"tokenizer", OPT_STR, O(tokenizer), 0, 0,
     "sft: tokenizer folder for a model from scratch (--arch and shape flags)"},
    {"template", OPT_STR, O(chat_template), 0, 0,
     "sft: chat template auto, chatml, llama3, plain (auto: tokenizer_config.json)"},
    {"pack", OPT_FLAG, O(pack), 0, 1, "sft: several samples per row, attention kept apart (on)"},
    {"pad", OPT_FLAG, O(pad), 0, 1, "sft: one sample per row, padded"},
    {"epochs", OPT_FLOAT, O(epochs), 1e-3, 1e6,
     "sft: passes over the training samples; sets --steps unless given (1)"},
    {"eval-generate", OPT_INT, O(eval_generate), 0, 1 << 20,
     "sft: held-out prompts answered greedily at each validation: exact match (0)"},
    {"show", OPT_INT, O(show), 0, 1 << 20,
     "sft: held-out prompts shown with the model's answers at the end (3)"},
    {"config", OPT_STR, O(config), 0, 0, "JSON file with any of these options"},
};
#define N_SPECS (sizeof specs / sizeof specs[0])
/* specs from "model" up to "config" belong to zoff sft */
static bool sft_only(const opt_spec *s) {
    return s >= &specs[N_SPECS - 9] && s < &specs[N_SPECS - 1];
}

/* "zoff train" or "zoff sft": which command runs the loop (messages, options) */
static const char *cmd_name = "zoff train";
static bool is_sft(void) {
    return strcmp(cmd_name, "zoff sft") == 0;
}
static bool given(const train_opts *o, const char *name);

static void defaults(train_opts *o) {
    memset(o, 0, sizeof *o);
    zoff_gpt_config c;
    zoff_gpt_config_default(&c);
    o->n_layer = c.n_layer;
    o->n_head = c.n_head;
    o->n_embd = c.n_embd;
    o->vocab_size = c.vocab_size;
    o->seq_len = c.seq_len;
    o->arch = "gpt2";
    o->rope_theta = 10000.0;
    o->batch = 16;
    o->steps = 600;
    o->grad_accum = 1;
    /* the optimizer's defaults are the library's (zoff_optimizer_get_defaults), as for an
     * embedder; only the learning rate is the built-in demo's own, higher for its tiny model */
    zoff_optimizer_defaults od = zoff_optimizer_get_defaults();
    o->lr = 3e-3;
    o->min_lr_frac = 0.1;
    o->warmup = 20;
    o->weight_decay = od.weight_decay;
    o->grad_clip = od.grad_clip;
    o->dtype = "auto";
    o->data = DEFAULT_DATA;
    o->val_frac = 0.1;
    o->val_every = 50;
    o->val_batches = 4;
    o->out = "zoff_out";
    o->ckpt_every = 200;
    o->sample_tokens = 300;
    o->temperature = 0.8;
    o->top_k = 40;
    o->prompt = "This program is ";
    o->seed = 1337;
    o->log_every = 1;
    o->off.offload = NULL; /* cpu for the built-in demo, none otherwise */
    o->off.schedule = "sync";
    o->off.moments = "f32";
    o->off.bucket_size = "auto";
    o->off.dpu_warmup = 2;
    o->off.params = "none";
    o->collective_timeout = 300;
    o->offload_activations = "none";
    o->off.prefetch = 2;
    o->max_nonfinite = 3;
    o->chat_template = "auto";
    o->pack = 1;
    o->epochs = 1;
    o->show = 3;
}

static const opt_spec *find_spec(const char *name, size_t len);

/* Whether the flags or the config file set option name. */
static bool given(const train_opts *o, const char *name) {
    const opt_spec *s = find_spec(name, strlen(name));
    return s && (o->given >> (s - specs) & 1);
}

static void usage(FILE *f) {
    if (is_sft())
        fprintf(f,
                "usage: zoff sft --model DIR --data FILE.jsonl [options]\n"
                "       zoff sft --tokenizer DIR --data FILE.jsonl --arch llama ... (from "
                "scratch)\n"
                "       zoff sft --resume OUT/step_N --data FILE.jsonl (the same settings)\n\n"
                "Supervised fine-tuning on JSONL conversations ({\"prompt\",\"response\"}, "
                "{\"messages\"} or {\"text\"}\n"
                "per line) rendered with a chat template, with loss on the responses only. "
                "Every option of\n"
                "zoff train applies (offload, schedules, accumulation, checkpointing, resume). "
                "With no\n"
                "options: the built-in demo (a model learns 3-digit addition from scratch).\n\n");
    else
        fprintf(f, "usage: zoff train [options]\n\n"
                   "Trains a GPT-2 or Llama-family model: AdamW on the device (the reference "
                   "trainer), or with --offload\n"
                   "cpu|nvme through the offload engine. With no options: the built-in demo "
                   "on\n" DEFAULT_DATA " (byte tokens, about a minute).\n\n");
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        const opt_spec *s = &specs[i];
        if (sft_only(s) && !is_sft()) continue;
        const char *arg = s->kind == OPT_FLAG    ? ""
                          : s->kind == OPT_STR   ? " S"
                          : s->kind == OPT_FLOAT ? " X"
                                                 : " N";
        fprintf(f, "  --%s%-*s %s\n", s->name, (int)(24 - strlen(s->name)), arg, s->help);
    }
    fprintf(f,
            "\nEvery option is also a key of the --config JSON file (with _ for -).\n"
            "Environment: ZOFF_DEVICE, ZOFF_HOST_DEVICE_MEM (host device capacity), ZOFF_LOG.\n");
}

/* Sets one option from text; prints what is wrong and returns -1 on a bad value. */
static int set_value(train_opts *o, const opt_spec *s, const char *text, const char *src) {
    void *p = (char *)o + s->off;
    o->given |= 1ull << (s - specs);
    char *end = NULL;
    errno = 0;
    switch (s->kind) {
    case OPT_INT:
    case OPT_LL: {
        long long v = strtoll(text, &end, 10);
        if (errno || end == text || *end || v < (long long)s->min || v > (long long)s->max) {
            fprintf(stderr, "zoff train: %s%s '%s': not an integer in %.0f..%.0f\n", src, s->name,
                    text, s->min, s->max);
            return -1;
        }
        if (s->kind == OPT_INT)
            *(int *)p = (int)v;
        else
            *(long long *)p = v;
        return 0;
    }
    case OPT_FLOAT: {
        double v = strtod(text, &end);
        if (errno || end == text || *end || !isfinite(v) || v < s->min || v > s->max) {
            fprintf(stderr, "zoff train: %s%s '%s': not a number in %g..%g\n", src, s->name, text,
                    s->min, s->max);
            return -1;
        }
        *(double *)p = v;
        return 0;
    }
    case OPT_STR:
        if (!*text) {
            fprintf(stderr, "zoff train: %s%s: empty value\n", src, s->name);
            return -1;
        }
        *(const char **)p = text;
        return 0;
    case OPT_FLAG:
        if (strcmp(text, "1") && strcmp(text, "true") && strcmp(text, "0") &&
            strcmp(text, "false")) {
            fprintf(stderr, "zoff train: %s%s '%s': expected true or false\n", src, s->name, text);
            return -1;
        }
        *(int *)p = text[0] == '1' || text[0] == 't';
        return 0;
    }
    return -1;
}

static const opt_spec *find_spec(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        const char *n = specs[i].name;
        if (strlen(n) != len) continue;
        size_t k = 0;
        while (k < len && (n[k] == name[k] || (n[k] == '-' && name[k] == '_')))
            k++;
        if (k == len) return &specs[i];
    }
    return NULL;
}

/* The canonical option a config key names: Hugging Face's n_positions is seq_len. */
static const char *config_key(const char *key) {
    return strcmp(key, "n_positions") == 0 ? "seq_len" : key;
}

/* Reads a whole --config file (up to 16 MiB: a config is small; anything bigger is refused,
 * never cut). Returns a malloc'd string or NULL after printing why. */
static char *read_config_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "zoff train: --config %s: %s\n", path, strerror(errno));
        return NULL;
    }
    const size_t limit = (size_t)16 << 20;
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1 || ferror(f)) break;
        if (cap > limit) {
            fprintf(stderr, "zoff train: --config %s: larger than 16 MiB; not a config file?\n",
                    path);
            free(buf);
            fclose(f);
            return NULL;
        }
        char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    bool err = !buf || ferror(f);
    fclose(f);
    if (err) {
        fprintf(stderr, "zoff train: --config %s: %s\n", path,
                buf ? "read error" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

/* Applies a --config JSON file; strings it returns stay owned by *doc. */
static int apply_config_file(train_opts *o, const char *path, cJSON **doc) {
    char *buf = read_config_text(path);
    if (!buf) return -1;
    const char *end = NULL;
    *doc = cJSON_ParseWithOpts(buf, &end, 1);
    if (!*doc) {
        /* cJSON stops where the text stops making sense: say where, as line:column */
        const char *at = end && end >= buf ? end : cJSON_GetErrorPtr();
        int line = 1, col = 1;
        for (const char *c = buf; at && c < at && *c; c++, col++)
            if (*c == '\n') line++, col = 0;
        fprintf(stderr, "zoff train: --config %s:%d:%d: JSON syntax error near '%.20s'\n", path,
                line, col, at && *at ? at : "(end of file)");
        free(buf);
        return -1;
    }
    free(buf);
    if (!cJSON_IsObject(*doc)) {
        fprintf(stderr, "zoff train: --config %s: not a JSON object\n", path);
        return -1;
    }
    for (cJSON *it = (*doc)->child; it; it = it->next)
        for (cJSON *prev = (*doc)->child; prev != it; prev = prev->next) {
            const char *a = config_key(it->string), *b = config_key(prev->string);
            const opt_spec *sa = find_spec(a, strlen(a)), *sb = find_spec(b, strlen(b));
            if (strcmp(a, b) == 0 || (sa && sa == sb)) {
                fprintf(stderr, "zoff train: %s: key \"%s\" given twice (as \"%s\" before)\n", path,
                        it->string, prev->string);
                return -1;
            }
        }
    char src[600];
    snprintf(src, sizeof src, "%s: key ", path);
    for (cJSON *it = (*doc)->child; it; it = it->next) {
        /* Hugging Face config.json keys are accepted too */
        const char *key = config_key(it->string);
        const opt_spec *s = find_spec(key, strlen(key));
        if (!s || strcmp(key, "config") == 0) {
            if (strcmp(key, "n_ctx") == 0 || strcmp(key, "model_type") == 0 ||
                strcmp(key, "architectures") == 0 || strcmp(key, "activation_function") == 0 ||
                strcmp(key, "layer_norm_epsilon") == 0 || strcmp(key, "tie_word_embeddings") == 0 ||
                strcmp(key, "zoff_step") == 0 || strcmp(key, "zoff_run_id") == 0)
                continue;
            fprintf(stderr, "zoff train: %s: unknown key \"%s\"\n", path, it->string);
            return -1;
        }
        char text[64];
        const char *val = text;
        if (cJSON_IsString(it))
            val = it->valuestring;
        else if (cJSON_IsBool(it))
            val = cJSON_IsTrue(it) ? "true" : "false";
        else if (cJSON_IsNumber(it))
            snprintf(text, sizeof text, "%.17g", it->valuedouble);
        else {
            fprintf(stderr, "zoff train: %s: key \"%s\" has a value of the wrong type\n", path,
                    it->string);
            return -1;
        }
        if (set_value(o, s, val, src)) return -1;
    }
    return 0;
}

/* The model from scratch: --arch and the shape flags. */
static int model_config_from_flags(const train_opts *o, zoff_model_config *mc) {
    memset(mc, 0, sizeof *mc);
    if (strcmp(o->arch, "gpt2") == 0) {
        mc->arch = ZOFF_ARCH_GPT2;
        mc->gpt =
            (zoff_gpt_config){o->n_layer, o->n_head, o->n_embd, o->vocab_size, o->seq_len, false};
        return 0;
    }
    if (strcmp(o->arch, "llama") != 0) {
        fprintf(stderr, "zoff train: --arch %s: expected gpt2 or llama\n", o->arch);
        return -1;
    }
    mc->arch = ZOFF_ARCH_LLAMA;
    zoff_llama_config *c = &mc->llama;
    zoff_llama_config_default(c);
    c->n_layer = o->n_layer;
    c->n_head = o->n_head;
    c->n_kv_head = o->n_kv_head ? o->n_kv_head : o->n_head;
    c->n_embd = o->n_embd;
    c->head_dim = o->n_embd / o->n_head;
    c->n_ffn = o->n_ffn ? o->n_ffn : (8 * o->n_embd / 3 + 63) / 64 * 64;
    c->vocab_size = o->vocab_size;
    c->seq_len = o->seq_len;
    c->rope_theta = o->rope_theta;
    if (o->n_embd % o->n_head) {
        fprintf(stderr, "zoff train: --n-head %d must divide --n-embd %d\n", o->n_head, o->n_embd);
        return -1;
    }
    return 0;
}

static int parse_args(int argc, char **argv, train_opts *o, cJSON **doc) {
    /* the config file first, so that flags override it */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--config=", 9) == 0 && apply_config_file(o, a + 9, doc)) return -1;
        if (strcmp(a, "--config") == 0 && i + 1 < argc && apply_config_file(o, argv[i + 1], doc))
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "zoff train: unexpected argument '%s' (options start with --)\n", a);
            return -1;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const opt_spec *s = find_spec(name, len);
        if (!s || memchr(name, '_', len)) { /* flags use '-'; a value may hold '_' */
            fprintf(stderr, "zoff train: unknown option '%.*s' (see zoff train --help)\n",
                    (int)(len + 2), a);
            return -1;
        }
        const char *val;
        if (eq)
            val = eq + 1;
        else if (s->kind == OPT_FLAG)
            val = "true";
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            fprintf(stderr, "zoff train: --%s needs a value\n", s->name);
            return -1;
        }
        if (sft_only(s) && !is_sft()) {
            fprintf(stderr, "zoff train: --%s is an option of zoff sft\n", s->name);
            return -1;
        }
        if (s == &specs[sizeof specs / sizeof specs[0] - 1]) continue; /* --config: done */
        if (set_value(o, s, val, "--")) return -1;
    }
    zoff_dtype t;
    if (strcmp(o->dtype, "auto") != 0 && zoff_dtype_parse(o->dtype, &t) != 0) {
        fprintf(stderr, "zoff train: --dtype '%s': expected auto, f32, bf16 or f16\n", o->dtype);
        return -1;
    }
    if (o->n_embd % o->n_head != 0) {
        fprintf(stderr, "zoff train: --n-head %d must divide --n-embd %d\n", o->n_head, o->n_embd);
        return -1;
    }
    return 0;
}

/* --- run ----------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_bytes(char *buf, size_t n, double b) {
    if (b >= 1024.0 * 1024 * 1024)
        snprintf(buf, n, "%.2f GiB", b / (1024.0 * 1024 * 1024));
    else
        snprintf(buf, n, "%.1f MiB", b / (1024.0 * 1024));
}

static void fmt_time(char *buf, size_t n, double s) {
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

typedef struct run {
    train_opts o;
    zoff_dev *dev;
    zoff_dev_stream *s;
    zoff_model *m;
    zoff_trainer *tr;
    zoff_model_offload *off; /* --offload cpu|nvme: the engine owns the optimizer */
    unsigned char *resident; /* --offload-params auto: layer groups kept on the device */
    zoff_trainer_config tc;
    uint64_t rng;
    zoff_dataset ds;
    FILE *metrics;
    int32_t *x, *y;
    float *master; /* host fp32 weights, for checkpoints (filled from the optimizer's copy) */
    bool tty;
    char run_id[ZOFF_RUN_ID_LEN + 1]; /* recorded in every checkpoint file; kept on resume */
    int bad_streak;                   /* steps in a row with a non-finite loss or gradients */
    zoff_save_options save_opts;
    zoff_train_source src; /* the batches: the token dataset, or SFT conversations */
    zoff_sft_source *sft;  /* zoff sft */
    uint64_t val_rng;
    zoff_train_dist td;                    /* the job's ranks (a world of one without mpirun) */
    int gbatch;                            /* rows of a global batch: ranks x --batch */
    bool stop;                             /* a stop signal, agreed among the ranks */
    char nvme_dir[4096], trace_path[4096]; /* this rank's */
} run;

static zoff_train_dist *g_td; /* for fail(): a failure on one rank ends the job */

static zoff_batch batch_of(run *r, int B, int T) {
    zoff_batch b = {.tokens = r->x, .targets = r->y, .B = B, .T = T};
    return b;
}

static int fail(const char *what, int rc) {
    char rank[32] = "";
    if (g_td && g_td->world > 1) snprintf(rank, sizeof rank, "[rank %d] ", g_td->rank);
    fprintf(stderr, "\n%s%s: %s: %s: %s\n", rank, cmd_name, what, zoff_strerror(rc),
            zoff_last_error_detail());
    if (g_td) zoff_train_dist_fail(g_td, what);
    return 1;
}

/* --- the token dataset as a batch source (zoff train) ------------------------------------ */

static void tokens_next(void *ctx, zoff_batch *b) {
    run *r = ctx;
    zoff_dataset_batch(&r->ds, false, r->gbatch, r->o.seq_len, &r->rng, r->x, r->y);
    *b = batch_of(r, r->gbatch, r->o.seq_len);
}

static int tokens_val_next(void *ctx, int i, zoff_batch *b, double *weight) {
    run *r = ctx;
    if (i == 0) r->val_rng = 0x5eed ^ (uint64_t)r->o.seed; /* the same batches every time */
    if (i >= r->o.val_batches) return 1;
    zoff_dataset_batch(&r->ds, true, r->gbatch, r->o.seq_len, &r->val_rng, r->x, r->y);
    *b = batch_of(r, r->gbatch, r->o.seq_len);
    *weight = 1;
    return 0;
}

/* continue the training batch sequence where it was: the same random windows */
static int tokens_resume(void *ctx, const char *dir, long micro_batches) {
    (void)dir;
    run *r = ctx;
    for (long i = 0; i < micro_batches; i++)
        zoff_dataset_batch(&r->ds, false, r->gbatch, r->o.seq_len, &r->rng, r->x, r->y);
    return 0;
}

/* The mean loss over one pass of the source's validation batches, each weighted by its
 * share (the targets that count, for SFT). */
static int validate(run *r, float *val_loss) {
    double sum = 0, wsum = 0;
    /* SFT: the whole held-out split unless --val-batches limits it */
    int max = r->sft && !given(&r->o, "val-batches") ? INT_MAX : r->o.val_batches;
    for (int i = 0; i < max; i++) {
        zoff_batch b;
        double w = 0;
        int rc = r->src.val_next(r->src.ctx, i, &b, &w);
        if (rc < 0) return rc;
        if (rc > 0) break;
        if (r->td.world > 1) { /* this rank's rows, weighted by the targets they score */
            b = zoff_train_dist_slice(&r->td, b);
            w = b.targets ? 0 : 1;
            for (size_t k = 0; b.targets && k < (size_t)b.B * b.T; k++)
                w += b.targets[k] >= 0;
        }
        float l;
        if ((rc = zoff_model_forward(r->m, r->s, &b, &l))) return rc;
        if (w > 0) sum += w * l;
        wsum += w;
    }
    int rc = zoff_train_dist_sum2(&r->td, &sum, &wsum);
    if (rc) return rc;
    *val_loss = wsum > 0 ? (float)(sum / wsum) : NAN;
    return 0;
}

/* Writes OUT/name whole or not at all: into a temporary folder swapped in when complete,
 * every file stamped with the step and the run id. */
static int save(run *r, const char *name, int step) {
    /* several ranks: the others send their blocks of the optimizer state to rank 0 */
    if (r->td.rank != 0) return zoff_model_offload_save_state(r->off, NULL, NULL);
    char dir[PATH_MAX], tmp[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", r->o.out, name);
    int rc = zoff_mkdirs(r->o.out);
    if (!rc) rc = zoff_ckpt_dir_begin(dir, tmp, sizeof tmp);
    if (rc) return rc;
    /* the fp32 master weights come from whoever runs the optimizer: the engine (with its
     * state) or the trainer; no round trip through the device */
    char opt[PATH_MAX + 32];
    snprintf(opt, sizeof opt, "%s/optimizer.safetensors", tmp);
    zoff_ckpt_stamp stamp = {.step = step};
    snprintf(stamp.run_id, sizeof stamp.run_id, "%s", r->run_id);
    zoff_ckpt_stamp_set(&stamp);
    rc = r->off ? zoff_model_offload_save_state(r->off, opt, r->master)
                : zoff_trainer_master_to_host(r->tr, r->master);
    if (!rc) rc = zoff_model_checkpoint_save_opts(r->m, tmp, r->master, &r->save_opts);
    if (!rc && !r->off) rc = zoff_trainer_save_state(r->tr, opt);
    if (!rc && r->src.save) rc = r->src.save(r->src.ctx, tmp); /* SFT: cursor, tokenizer */
    zoff_ckpt_stamp_set(NULL);
    if (!rc) rc = zoff_ckpt_dir_commit(tmp, dir);
    if (rc) {
        zoff_ckpt_dir_abort(tmp);
        return rc;
    }
    if (r->metrics) {
        zoff_metrics_line l;
        zoff_metrics_begin(&l);
        zoff_metrics_int(&l, "step", step);
        zoff_metrics_str(&l, "checkpoint", dir);
        zoff_metrics_write(&l, r->metrics);
        fflush(r->metrics);
    }
    return 0;
}

static void print_sample(run *r) {
    int V = r->o.vocab_size, T = r->o.seq_len, n = r->o.sample_tokens;
    if (n == 0) return;
    bool bytes = r->ds.is_text && V == 256;
    int cap = n + (int)strlen(r->o.prompt) + 1;
    int32_t *seq = malloc((size_t)cap * sizeof *seq);
    float *probs = malloc((size_t)V * sizeof *probs);
    if (!seq || !probs) goto out;
    int len = 0;
    if (bytes)
        for (const char *c = r->o.prompt; *c; c++)
            seq[len++] = (unsigned char)*c;
    if (len == 0) seq[len++] = V > 50256 ? 50256 : 0; /* GPT-2's <|endoftext|> */
    uint64_t rng = (uint64_t)r->o.seed + 77;
    printf("\n--- sample (%d tokens, temperature %.2f, top-k %d) ---\n", n, r->o.temperature,
           r->o.top_k);
    if (bytes) fwrite(r->o.prompt, 1, strlen(r->o.prompt), stdout);
    for (int i = 0; i < n && !zoff_train_stop_signal(); i++) {
        int start = len > T ? len - T : 0, w = len - start;
        zoff_batch b = {.tokens = seq + start, .B = 1, .T = w};
        int rc = zoff_model_forward(r->m, r->s, &b, NULL);
        if (!rc) rc = zoff_model_probs_row(r->m, r->s, 0, w - 1, probs);
        if (rc) {
            fail("sampling", rc);
            break;
        }
        int t = zoff_sample_token(probs, V, (float)r->o.temperature, r->o.top_k, &rng);
        seq[len++] = t;
        if (bytes)
            putchar(t);
        else
            printf("%d ", t);
        fflush(stdout);
    }
    printf("\n--- end of sample ---\n");
out:
    free(seq);
    free(probs);
}

static void next_train_batch(void *ctx, zoff_batch *b) {
    run *r = ctx;
    r->src.next(r->src.ctx, b);
    *b = zoff_train_dist_slice(&r->td, *b); /* this rank's rows of the global batch */
}

/* The offload part of a step's metrics line and progress line. */
static void offload_metrics(run *r, const zoff_engine_step_report *rep, char *json, size_t jn,
                            char *line, size_t ln) {
    json[0] = line[0] = '\0';
    if (!r->off || rep->step < 0) return;
    double n = (double)zoff_model_get_layout(r->m)->total;
    char clip[32];
    if (isfinite(rep->clip_coef))
        snprintf(clip, sizeof clip, "%.4g", rep->clip_coef);
    else
        snprintf(clip, sizeof clip, "null");
    snprintf(json, jn,
             ",\"offload\":{\"step\":%lld,\"pcie_d2h_bytes\":%llu,\"pcie_h2d_bytes\":%llu,"
             "\"nvme_read_bytes\":%llu,\"nvme_write_bytes\":%llu,\"cpu_adam_ms\":%.3f,"
             "\"cpu_wait_grad_ms\":%.3f,\"nvme_wait_ms\":%.3f,\"update_ms\":%.3f,"
             "\"loss_scale\":%g,\"clip_coef\":%s,\"param_fetch_bytes\":%llu,"
             "\"param_refetch_bytes\":%llu,\"param_fetches\":%llu,\"param_nvme_read_bytes\":%llu,"
             "\"param_nvme_write_bytes\":%llu}",
             (long long)rep->step, (unsigned long long)rep->pcie_d2h_bytes,
             (unsigned long long)rep->pcie_h2d_bytes, (unsigned long long)rep->nvme_read_bytes,
             (unsigned long long)rep->nvme_write_bytes, rep->cpu_adam_ms, rep->cpu_wait_grad_ms,
             rep->nvme_wait_ms, rep->step_ms, rep->loss_scale, clip,
             (unsigned long long)rep->param_fetch_bytes,
             (unsigned long long)rep->param_refetch_bytes, (unsigned long long)rep->param_fetches,
             (unsigned long long)rep->param_nvme_read_bytes,
             (unsigned long long)rep->param_nvme_write_bytes);
    snprintf(line, ln, " | PCIe %.1f B/p, adam %.0f ms",
             (double)(rep->pcie_d2h_bytes + rep->pcie_h2d_bytes) / n, rep->cpu_adam_ms);
    if (r->o.off.offload[0] == 'n' || rep->param_nvme_read_bytes) {
        size_t k = strlen(line);
        snprintf(line + k, ln - k, ", NVMe %.1f B/p",
                 (double)(rep->nvme_read_bytes + rep->nvme_write_bytes +
                          rep->param_nvme_read_bytes + rep->param_nvme_write_bytes) /
                     n);
    }
}

/* A step whose metrics line waits for its engine report (offloaded runs). */
typedef struct pending_step {
    bool have;
    int step;
    zoff_step_stats st;
    double tps, elapsed;
    size_t used, peak;
} pending_step;

/* Whether a step's loss or gradients were non-finite in a way that is not simply fp16 loss
 * scaling at work (an overflow with a finite loss, while the scale can still come down). */
static bool bad_step(const run *r, const zoff_step_stats *st) {
    if (!isfinite(st->loss)) return true;
    bool f16 = strcmp(r->o.dtype, "f16") == 0;
    return st->skipped && (!f16 || st->loss_scale <= 1.0f);
}

/* Completes a step's line: its own engine report (offloaded), the JSON line, and the count
 * of non-finite steps in a row. Returns 0, a negative error, or 1 when that count reached
 * --max-nonfinite-steps. off_line gets the progress line's offload part. */
static int finish_step(run *r, pending_step *p, char *off_line, size_t ol) {
    if (!p->have) return 0;
    p->have = false;
    int first = r->tr ? 0 : zoff_model_offload_resumed_step(r->off) + 1;
    zoff_engine_step_report rep = {.step = -1};
    char off_json[512];
    if (r->off) {
        int rc = zoff_train_offload_report(r->off, p->step - first, &p->st, &rep);
        if (rc) return rc;
    }
    offload_metrics(r, &rep, off_json, sizeof off_json, off_line, ol);
    zoff_metrics_line l;
    zoff_metrics_begin(&l);
    zoff_metrics_int(&l, "step", p->step);
    zoff_metrics_num(&l, "loss", p->st.loss, "%.6f");
    zoff_metrics_num(&l, "lr", p->st.lr, "%.6g");
    zoff_metrics_num(&l, "grad_norm", p->st.grad_norm, "%.6g");
    zoff_metrics_num(&l, "tokens_per_s", p->tps, "%.1f");
    zoff_metrics_num(&l, "elapsed_s", p->elapsed, "%.3f");
    zoff_metrics_int(&l, "mem_used_bytes", (long long)p->used);
    zoff_metrics_int(&l, "mem_peak_bytes", (long long)p->peak);
    zoff_metrics_num(&l, "loss_scale", p->st.loss_scale, "%g");
    if (p->st.skipped) zoff_metrics_bool(&l, "skipped", true);
    zoff_metrics_raw(&l, off_json);
    if (r->metrics) zoff_metrics_write(&l, r->metrics);
    if (!bad_step(r, &p->st)) {
        r->bad_streak = 0;
        return 0;
    }
    r->bad_streak++;
    if (r->bad_streak < r->o.max_nonfinite) return 0;
    fprintf(stderr,
            "\nzoff train: step %d: the loss or the gradients have been non-finite for %d "
            "steps in a row (--max-nonfinite-steps %d): stopping; the last checkpoint written "
            "is kept as it was\n",
            p->step, r->bad_streak, r->o.max_nonfinite);
    return 1;
}

/* The device plan of the run (plan) and of the same model without offload (ref). */
static int plan_device(const zoff_model_config *mc, zoff_model_options *go, bool offload,
                       zoff_engine_config *ec, bool params_auto, size_t capacity,
                       unsigned char **resident, char *params_line, size_t pn,
                       zoff_device_plan *plan, zoff_device_plan *ref) {
    params_line[0] = '\0';
    int rc = zoff_model_config_plan(mc, go, plan);
    if (rc) return rc;
    *ref = *plan;
    zoff_trainer_plan(ref, go->matmul_dtype);
    if (!offload) {
        *plan = *ref;
        return 0;
    }
    zoff_layout lay;
    if ((rc = zoff_model_config_layout(mc, &lay))) return rc;
    if (ec->bucket_bytes == 0) /* --bucket-size auto */
        ec->bucket_bytes =
            zoff_model_offload_auto_bucket(lay.total * zoff_dtype_size(go->matmul_dtype));
    if (ec->params != ZOFF_PARAMS_DEVICE) { /* the model holds no weights: streamed */
        go->stream_weights = true;
        if ((rc = zoff_model_config_plan(mc, go, plan))) goto out;
    }
    if ((rc = zoff_model_offload_plan(&lay, go->matmul_dtype, ec, plan))) goto out;
    if (params_auto) {
        if (!(*resident = calloc((size_t)lay.n_groups, 1))) {
            rc = -ENOMEM;
            goto out;
        }
        if ((rc = zoff_train_offload_fit(&lay, go->matmul_dtype, capacity, ec, *resident, plan)))
            goto out;
        if (ec->params == ZOFF_PARAMS_DEVICE) { /* everything fits: back to resident */
            go->stream_weights = false;
            if ((rc = zoff_model_config_plan(mc, go, plan))) goto out;
            rc = zoff_model_offload_plan(&lay, go->matmul_dtype, ec, plan);
        }
    }
    if (ec->params != ZOFF_PARAMS_DEVICE || *resident)
        zoff_train_offload_describe_params(&lay, go->matmul_dtype, ec, params_line, pn);
out:
    zoff_layout_free(&lay);
    return rc;
}

/* Prints the device plan beside what the same model needs without offload; refuses a plan that
 * exceeds the device's capacity, with the figure and the ways out. */
static int print_plan(run *r, const zoff_device_plan *plan, const zoff_device_plan *ref,
                      bool offload, const char *params_line) {
    char text[768], a[32], b[32], cap[32];
    zoff_dev_mem_stats ms;
    zoff_dev_mem_stats_get(r->dev, &ms);
    if (r->td.rank != 0) return plan->total > ms.capacity; /* rank 0 says it */
    zoff_device_plan_format(plan, text, sizeof text);
    printf("device plan (%s%s%s): %s\n", r->o.dtype, offload ? ", optimizer offloaded" : "",
           params_line[0] ? ", weights streamed" : "", text);
    if (params_line[0]) printf("  %s\n", params_line);
    fmt_bytes(a, sizeof a, (double)plan->total);
    fmt_bytes(b, sizeof b, (double)ref->total);
    fmt_bytes(cap, sizeof cap, (double)ms.capacity);
    if (offload) {
        /* model state: what grows with the parameters (activations and workspace grow with
         * the batch) */
        double np = (double)plan->n_params;
        double st = (double)(plan->weights + plan->buckets) / np;
        double st_ref = (double)(ref->weights + ref->master + ref->grads + ref->optimizer) / np;
        printf("  without offload the same run needs %s (gradients and Adam moments on the "
               "device): model state %.1f B/param there, %.1f B/param here (weights + gradient "
               "buckets); capacity %s\n",
               b, st_ref, st, cap);
    }
    if (plan->total > ms.capacity) {
        fprintf(stderr,
                "zoff train: the device plan needs %s but the device has %s: use a larger "
                "device (ZOFF_HOST_DEVICE_MEM on the host backend), --offload cpu, "
                "--activation-checkpoint or a smaller --batch\n",
                a, cap);
        return 1;
    }
    return 0;
}

static int train(run *r) {
    train_opts *o = &r->o;
    int rc;
    char buf[64];
    double t0 = now_s(), last = t0;
    float val_loss = NAN;
    zoff_step_stats st = {0};
    r->rng = (uint64_t)o->seed;
    size_t tokens_per_step = (size_t)r->gbatch * o->seq_len * o->grad_accum; /* all ranks */
    bool lead = r->td.rank == 0; /* prints the progress */
    double ema_tps = 0;
    int done = 0;
    zoff_engine_step_report rep = {.step = -1};
    char off_line[96] = "";
    /* DPU: a step's report is asked for once the next step is issued (the update in flight
     * must not wait for it); other schedules and the reference trainer: at once */
    bool lag = r->off && strcmp(o->off.schedule, "dpu") == 0;
    pending_step prev = {0};
    /* resuming: continue the step count and the training batch sequence where they were */
    int first =
        (r->tr ? zoff_trainer_get_step(r->tr) : zoff_model_offload_resumed_step(r->off)) + 1;
    if (first > 1 && (rc = r->src.resume(r->src.ctx, o->resume, (long)(first - 1) * o->grad_accum)))
        return fail("--resume", rc);
    if (zoff_train_stop_signal()) { /* during the set-up: nothing trained, nothing to save */
        printf("stopped by signal %d before the first step\n", zoff_train_stop_signal());
        return 128 + zoff_train_stop_signal();
    }
    if (first > o->steps) {
        printf("nothing to do: the checkpoint is at step %d of %d\n", first - 1, o->steps);
        return 0;
    }
    done = first - 1;
    r->stop = zoff_train_stop_signal() != 0;
    for (int step = first; step <= o->steps && !r->stop; step++) {
        zoff_train_dist_debug_fault(&r->td, step);
        if (r->off) {
            rc = zoff_train_offload_step(r->off, &r->tc, step, o->grad_accum, next_train_batch, r,
                                         &st, &rep);
            if (rc) return fail("offloaded step", rc);
        } else {
            for (int k = 0; k < o->grad_accum; k++) {
                zoff_batch b;
                next_train_batch(r, &b);
                if ((rc = zoff_trainer_compute_grads(r->tr, &b, k == 0, NULL)))
                    return fail("forward/backward", rc);
            }
            if ((rc = zoff_trainer_optimizer_step(r->tr, &st))) return fail("optimizer step", rc);
        }
        if (r->src.error && (rc = r->src.error(r->src.ctx))) return fail("the next batch", rc);
        /* the ranks agree on the loss shown and on stopping after this step */
        r->stop = zoff_train_stop_signal() != 0;
        if ((rc = zoff_train_dist_step(&r->td, &st.loss, &r->stop)))
            return fail("agreeing on the step with the other ranks", rc);
        done = step;
        double t = now_s(), dt = t - last;
        last = t;
        double tps = tokens_per_step / (dt > 0 ? dt : 1e-9);
        ema_tps = step == first ? tps : 0.9 * ema_tps + 0.1 * tps;
        zoff_dev_mem_stats ms;
        zoff_dev_mem_stats_get(r->dev, &ms);
        pending_step cur = {true, step, st, tps, t - t0, ms.used, ms.peak};
        bool do_val = o->val_every > 0 && step % o->val_every == 0;
        bool do_ckpt = o->ckpt_every > 0 && step % o->ckpt_every == 0 && step != o->steps;
        /* lines in step order; a lagging step's line is completed before the next one's, and
         * before anything (validation, checkpoint, the end) that follows its step */
        rc = finish_step(r, &prev, off_line, sizeof off_line);
        if (!rc) {
            prev = cur;
            if (!lag || do_val || do_ckpt || step == o->steps || r->stop)
                rc = finish_step(r, &prev, off_line, sizeof off_line);
        }
        if (rc < 0) return fail("offloaded step report", rc);
        if (rc > 0) {
            if (r->metrics) fflush(r->metrics);
            return 1;
        }
        char src_line[96] = "", eval_line[96] = "";
        if (r->src.progress) r->src.progress(r->src.ctx, dt, src_line, sizeof src_line);
        if (do_val || step == o->steps) {
            if ((rc = validate(r, &val_loss))) return fail("validation", rc);
            zoff_metrics_line l;
            zoff_metrics_begin(&l);
            zoff_metrics_int(&l, "step", step);
            zoff_metrics_num(&l, "val_loss", val_loss, "%.6f");
            if (lead && r->src.evaluate &&
                (rc = r->src.evaluate(r->src.ctx, r->m, r->s, eval_line, sizeof eval_line, &l)))
                return fail("held-out answers", rc);
            if (lead) zoff_metrics_write(&l, r->metrics);
        }
        if (lead) fflush(r->metrics);
        if (do_ckpt) {
            snprintf(buf, sizeof buf, "step_%d", step);
            if (r->bad_streak > 0)
                fprintf(stderr,
                        "\nzoff train: step %d: not checkpointed: the last %d step(s) had a "
                        "non-finite loss or gradients\n",
                        step, r->bad_streak);
            else if ((rc = save(r, buf, step)))
                return fail("checkpoint", rc);
        }
        if (step % o->log_every == 0 || step == o->steps || do_val) {
            char eta[32], used[32], peak[32], vl[32] = "";
            fmt_time(eta, sizeof eta, (o->steps - step) * tokens_per_step / ema_tps);
            fmt_bytes(used, sizeof used, (double)ms.used);
            fmt_bytes(peak, sizeof peak, (double)ms.peak);
            if (!isnan(val_loss)) snprintf(vl, sizeof vl, " | val %.4f", val_loss);
            bool line_end = !r->tty && (do_val || step == o->steps || step == 1);
            if (lead && (r->tty || line_end)) {
                printf("%sstep %*d/%d | loss %.4f%s%s%s | lr %.2e | %.0f tok/s | ETA %s | "
                       "mem %s / peak %s%s%s",
                       r->tty ? "\r\033[K" : "", (int)snprintf(NULL, 0, "%d", o->steps), step,
                       o->steps, st.loss, vl, eval_line, src_line, st.lr, ema_tps, eta, used, peak,
                       off_line, r->tty && !do_val ? "" : "\n");
                fflush(stdout);
            }
        }
    }
    if ((rc = finish_step(r, &prev, off_line, sizeof off_line)) != 0) {
        if (r->metrics) fflush(r->metrics);
        return rc < 0 ? fail("offloaded step report", rc) : 1;
    }
    if (r->tty && lead) printf("\n");
    if (!r->off) done = zoff_trainer_get_step(r->tr); /* skipped steps do not count */
    if (r->bad_streak > 0) {
        fprintf(stderr,
                "zoff train: the last %d step(s) had a non-finite loss or gradients: no final "
                "checkpoint written\n",
                r->bad_streak);
        return 1;
    }
    if ((rc = save(r, "final", done))) return fail("final checkpoint", rc);
    if (!lead) {
        int sg = zoff_train_stop_signal();
        return r->stop ? 128 + (sg ? sg : SIGTERM) : 0;
    }
    if (first > 1)
        printf("trained steps %d..%d (%d this run, resumed after step %d) in %.1f s", first, done,
               done - first + 1, first - 1, now_s() - t0);
    else
        printf("trained %d steps in %.1f s", done, now_s() - t0);
    printf(": loss %.4f, val loss %.4f; checkpoint %s/final, metrics %s/metrics.jsonl\n", st.loss,
           val_loss, o->out, o->out);
    int sig = r->stop ? zoff_train_stop_signal() : 0;
    if (r->stop && !sig) sig = SIGTERM; /* another rank was asked to stop */
    if (sig) {
        printf("%s: saved after step %d\n", sig == SIGTERM ? "terminated (SIGTERM)" : "interrupted",
               done);
        return 128 + sig;
    }
    if (r->src.show)
        r->src.show(r->src.ctx, r->m, r->s);
    else
        print_sample(r);
    sig = zoff_train_stop_signal(); /* during the sample: the checkpoint is saved already */
    return sig ? 128 + sig : 0;
}

/* With --init-from / --resume the checkpoint decides the model's shape: say so when the flags
 * (or the config file) asked for something else. */
static void report_overrides(const train_opts *o, int n_layer, int n_head, int n_embd,
                             int vocab_size, int seq_len, const char *flag) {
    const struct {
        const char *name;
        int asked, ckpt;
    } f[] = {{"n-layer", o->n_layer, n_layer},
             {"n-head", o->n_head, n_head},
             {"n-embd", o->n_embd, n_embd},
             {"vocab-size", o->vocab_size, vocab_size}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const opt_spec *s = find_spec(f[i].name, strlen(f[i].name));
        if ((o->given >> (s - specs) & 1) && f[i].asked != f[i].ckpt)
            printf("zoff train: --%s %d ignored: %s %s has %d\n", f[i].name, f[i].asked, flag,
                   o->init_from, f[i].ckpt);
    }
    const opt_spec *s = find_spec("seq-len", 7);
    if ((o->given >> (s - specs) & 1) && o->seq_len > seq_len)
        printf("zoff train: --seq-len %d shortened to %d: %s %s has %d positions\n", o->seq_len,
               seq_len, flag, o->init_from, seq_len);
}

/* zoff sft's own settings: the model folder or the tokenizer, the data, the SFT source (its
 * tokenizer loaded now: a model from scratch takes its vocabulary). Prints what is wrong;
 * returns 0 or 2. */
static int sft_setup(run *r) {
    train_opts *o = &r->o;
    if (o->model && (o->resume || o->init_from)) {
        fprintf(stderr, "zoff sft: --model excludes --resume and --init-from\n");
        return 2;
    }
    if (o->pad && given(o, "pack") && o->pack) {
        fprintf(stderr, "zoff sft: --pack and --pad exclude each other\n");
        return 2;
    }
    const char *dir = o->resume      ? o->resume
                      : o->model     ? o->model
                      : o->init_from ? o->init_from
                                     : o->tokenizer;
    if (!dir) {
        fprintf(stderr, "zoff sft: needs --model DIR (a Hugging Face folder to fine-tune), "
                        "--tokenizer DIR (a model from scratch) or --resume DIR\n");
        return 2;
    }
    if (!given(o, "data")) {
        fprintf(stderr, "zoff sft: needs --data FILE.jsonl\n");
        return 2;
    }
    if (o->model) o->init_from = o->model;
    zoff_sft_source_args a = {.tokenizer = dir,
                              .data = o->data,
                              .chat_template = o->chat_template,
                              .packed = !o->pad,
                              .batch = o->batch * r->td.world, /* the global batch */
                              .grad_accum = o->grad_accum,
                              .val_frac = o->val_frac,
                              .seed = (uint64_t)o->seed,
                              .eval_generate = o->eval_generate,
                              .show = o->show};
    if (zoff_sft_source_create(&a, &r->sft)) return 2;
    if (!o->init_from && !o->resume && !given(o, "vocab-size"))
        o->vocab_size = (int)zoff_sft_source_vocab(r->sft);
    return 0;
}

static int train_main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
    run r;
    memset(&r, 0, sizeof r);
    /* from the start: a signal during the set-up (the NVMe swap may already exist) still
     * ends through the orderly path that releases everything */
    zoff_train_signals_install();
    defaults(&r.o);
    cJSON *doc = NULL;
    if (parse_args(argc, argv, &r.o, &doc)) {
        cJSON_Delete(doc);
        return 2;
    }
    train_opts *o = &r.o;
    zoff_dev_config dc;
    if (zoff_cli_device_config(&dc, o->device) != 0) {
        cJSON_Delete(doc);
        return 2;
    }
    zoff_cli_device_resolve_auto(&dc);
    dc.host_kernel_threads = o->threads;
    int ret = 1, rc;
    zoff_save_options_default(&r.save_opts);
    size_t shard = 0;
    if (o->max_shard_size && (zoff_parse_size(o->max_shard_size, &shard) != 0 || shard < 1024)) {
        fprintf(stderr, "zoff train: --max-shard-size %s: expected a size of at least 1KiB\n",
                o->max_shard_size);
        cJSON_Delete(doc);
        return 2;
    }
    if (shard) r.save_opts.max_shard_bytes = shard;
    if (o->save_dtype && zoff_dtype_parse(o->save_dtype, &r.save_opts.dtype) != 0) {
        fprintf(stderr, "zoff train: --save-dtype %s: expected f32, bf16 or f16\n", o->save_dtype);
        cJSON_Delete(doc);
        return 2;
    }
    /* under mpirun: this process's rank; from here every exit goes through `out` */
    if (zoff_train_dist_start(&r.td, o->collective_timeout)) {
        cJSON_Delete(doc);
        return 1;
    }
    g_td = &r.td;
    r.gbatch = o->batch * r.td.world;
    bool lead = r.td.rank == 0;
    if (r.td.world > 1) {
        dc.host_kernel_threads = zoff_train_dist_threads(&r.td, o->threads);
        if (dc.kind == ZOFF_DEV_CUDA) dc.cuda_ordinal = r.td.local_rank; /* a GPU per rank */
    }
    if (is_sft() && (ret = sft_setup(&r))) goto out;
    ret = 1;
    zoff_model_config mc;
    if (model_config_from_flags(o, &mc)) {
        ret = 2;
        goto out;
    }
    if (o->resume && o->init_from) {
        fprintf(stderr, "zoff train: --resume and --init-from exclude each other\n");
        ret = 2;
        goto out;
    }
    const char *ckpt_flag = o->resume ? "--resume" : "--init-from";
    if (o->resume) {
        /* a folder caught between two renames by a kill is put back before it is read */
        if (lead) zoff_train_recover_parent(o->resume);
        zoff_train_dist_agree(&r.td, 0); /* the others read it after rank 0 */
        zoff_ckpt_stamp stamp;
        if ((rc = zoff_ckpt_dir_verify(o->resume, true, &stamp))) {
            fail("--resume", rc);
            goto out;
        }
        snprintf(r.run_id, sizeof r.run_id, "%s", stamp.run_id);
        o->init_from = o->resume;
    }
    /* a run never writes over another one's results unasked; stray temporaries go first (and
     * with --overwrite the previous results once this run has started, below) */
    ret =
        lead ? zoff_train_prepare_out(o->out, o->resume ? r.run_id : NULL, o->overwrite, false) : 0;
    if ((ret = zoff_train_dist_agree(&r.td, ret)) != 0) goto out;
    ret = 1;
    if (!r.run_id[0]) zoff_ckpt_new_run_id(r.run_id);
    /* rank 0's run id is the run's (stamped into the checkpoints it writes) */
    if ((rc = zoff_dist_bcast(r.td.d, r.run_id, sizeof r.run_id, 0))) {
        fail("sharing the run id", rc);
        goto out;
    }
    if (o->off.trace) { /* a trace per rank */
        zoff_train_dist_rank_file(&r.td, o->off.trace, r.trace_path, sizeof r.trace_path);
        o->off.trace = r.trace_path;
        if (zoff_train_check_writable(o->off.trace)) {
            ret = 2;
            goto out;
        }
    }
    if (o->init_from) {
        /* the checkpoint decides the model's shape; --seq-len may only shorten the window */
        if ((rc = zoff_model_config_from_checkpoint(o->init_from, &mc))) {
            fail(ckpt_flag, rc);
            goto out;
        }
        bool ll = mc.arch == ZOFF_ARCH_LLAMA;
        report_overrides(o, ll ? mc.llama.n_layer : mc.gpt.n_layer,
                         ll ? mc.llama.n_head : mc.gpt.n_head, ll ? mc.llama.n_embd : mc.gpt.n_embd,
                         ll ? mc.llama.vocab_size : mc.gpt.vocab_size,
                         ll ? mc.llama.seq_len : mc.gpt.seq_len, ckpt_flag);
        o->arch = ll ? "llama" : "gpt2";
        o->n_layer = ll ? mc.llama.n_layer : mc.gpt.n_layer;
        o->n_head = ll ? mc.llama.n_head : mc.gpt.n_head;
        o->n_embd = ll ? mc.llama.n_embd : mc.gpt.n_embd;
        o->vocab_size = ll ? mc.llama.vocab_size : mc.gpt.vocab_size;
        int max_t = ll ? mc.llama.seq_len : mc.gpt.seq_len;
        /* fine-tuning: the model's window (up to 1024) unless --seq-len says otherwise */
        if (is_sft() && !given(o, "seq-len")) o->seq_len = max_t < 1024 ? max_t : 1024;
        if (o->seq_len > max_t) o->seq_len = max_t;
    }
    if ((rc = zoff_model_config_validate(&mc))) {
        fprintf(stderr, "zoff train: %s\n", zoff_last_error_detail());
        ret = 2;
        goto out;
    }
    char data_what[640];
    if (is_sft()) {
        long rows;
        if (zoff_sft_source_load(r.sft, o->seq_len, o->vocab_size, &r.src, &rows, data_what,
                                 sizeof data_what))
            goto out;
        /* --epochs: the steps that take every training row through the model that often */
        long per_step = (long)o->batch * o->grad_accum;
        if (!given(o, "steps")) {
            double st = ceil(o->epochs * (double)rows / (double)per_step);
            o->steps = st < 1 ? 1 : st > INT_MAX ? INT_MAX : (int)st;
        }
    } else if ((rc = zoff_dataset_load(o->data, (float)o->val_frac, o->seq_len, &r.ds))) {
        fail("--data", rc);
        goto out;
    } else {
        r.src = (zoff_train_source){
            .ctx = &r, .next = tokens_next, .val_next = tokens_val_next, .resume = tokens_resume};
        snprintf(data_what, sizeof data_what, "%s (%zu tokens, %zu train)", o->data, r.ds.n_tokens,
                 r.ds.n_train);
    }
    if (!is_sft() && r.ds.max_token >= o->vocab_size) {
        fprintf(stderr,
                "zoff train: --data %s holds token id %d but --vocab-size is %d (llm.c GPT-2 "
                "tokens need --vocab-size 50257)\n",
                o->data, r.ds.max_token, o->vocab_size);
        ret = 2;
        goto out;
    }
    zoff_model_options go;
    zoff_model_options_default(&go);
    go.batch = o->batch;
    go.seq_len = o->seq_len;
    go.activation_checkpoint = o->activation_checkpoint;
    if (strcmp(o->offload_activations, "none") != 0) {
        if (strcmp(o->offload_activations, "cpu") != 0 || !o->activation_checkpoint) {
            fprintf(stderr,
                    "zoff train: --offload-activations '%s': expected none or cpu, "
                    "with --activation-checkpoint\n",
                    o->offload_activations);
            ret = 2;
            goto out;
        }
        go.offload_activations = true;
    }
    zoff_trainer_config tc;
    zoff_trainer_config_default(&tc);
    tc.lr = (float)o->lr;
    tc.min_lr_frac = (float)o->min_lr_frac;
    tc.warmup_steps = o->warmup;
    tc.total_steps = o->steps;
    tc.weight_decay = (float)o->weight_decay;
    tc.grad_clip = (float)o->grad_clip;

    if ((rc = zoff_dev_open(&dc, &r.dev))) {
        fail("opening the device", rc);
        goto out;
    }
    if ((rc = zoff_dev_stream_create(r.dev, &r.s))) {
        fail("creating a stream", rc);
        goto out;
    }
    /* auto: bf16 GEMMs where they are fast (tensor cores), fp32 on the host */
    if (strcmp(o->dtype, "auto") == 0)
        o->dtype = zoff_dev_get_kind(r.dev) == ZOFF_DEV_CUDA ? "bf16" : "f32";
    zoff_dtype_parse(o->dtype, &go.matmul_dtype);
    r.tc = tc;
    /* the built-in demo shows what zoff is for: the optimizer offloaded to the CPU */
    if (!o->off.offload) o->off.offload = strcmp(o->data, DEFAULT_DATA) == 0 ? "cpu" : "none";
    zoff_engine_config ec;
    bool offload;
    if (zoff_train_offload_configure(&o->off, &tc, o->grad_accum, &ec, &offload)) {
        ret = 2;
        goto out;
    }
    if (r.td.world > 1) {
        if (!offload || strcmp(o->off.params, "none") != 0) {
            fprintf(stderr,
                    "%s: %d ranks train with ZeRO partitioning of the offloaded optimizer state: "
                    "add --offload cpu or nvme (and keep --offload-params none)\n",
                    cmd_name, r.td.world);
            ret = 2;
            goto out;
        }
        ec.dist = r.td.d;
        ec.cpu_threads = zoff_train_dist_threads(&r.td, 0);
        if (ec.target == ZOFF_OFFLOAD_NVME) { /* each rank swaps in a folder of its own */
            snprintf(r.nvme_dir, sizeof r.nvme_dir, "%s/rank%d", o->off.nvme_path, r.td.rank);
            if ((rc = zoff_mkdirs(r.nvme_dir))) {
                fprintf(stderr, "%s: --nvme-path %s: %s\n", cmd_name, r.nvme_dir, strerror(-rc));
                goto out;
            }
            ec.nvme_dirs[0] = r.nvme_dir;
        }
    }
    /* the device plan, every term, before anything is allocated; refused if it cannot fit */
    zoff_device_plan plan, ref_plan;
    zoff_dev_mem_stats dms;
    zoff_dev_mem_stats_get(r.dev, &dms);
    char params_line[512];
    rc = plan_device(&mc, &go, offload, &ec, strcmp(o->off.params, "auto") == 0, dms.capacity,
                     &r.resident, params_line, sizeof params_line, &plan, &ref_plan);
    if (rc) {
        fail("planning device memory", rc);
        goto out;
    }
    if (print_plan(&r, &plan, &ref_plan, offload, params_line)) goto out;
    if ((rc = zoff_model_config_create(r.dev, &mc, &go, &r.m))) {
        fail("creating the model", rc);
        goto out;
    }
    if (!(r.master = malloc(zoff_model_get_layout(r.m)->total * sizeof *r.master))) {
        fprintf(stderr, "zoff train: out of memory\n");
        goto out;
    }
    /* the fp32 master weights start on the host and go to whoever runs the optimizer */
    rc = o->init_from ? zoff_model_checkpoint_read(r.m, o->init_from, r.master, false)
                      : zoff_model_init_host(r.m, (uint64_t)o->seed, r.master);
    if (rc) {
        fail(o->init_from ? ckpt_flag : "initializing parameters", rc);
        goto out;
    }
    if (offload) {
        if ((rc = zoff_model_offload_create(r.m, r.s, &ec, r.master, &r.off))) {
            fail("starting the offload engine", rc);
            goto out;
        }
        if (r.src.set_engine) r.src.set_engine(r.src.ctx, zoff_model_offload_engine(r.off));
    } else if ((rc = zoff_trainer_create(r.m, r.s, &tc, r.master, &r.tr))) {
        fail("creating the trainer", rc);
        goto out;
    }
    if (o->resume) {
        char opt[PATH_MAX + 32];
        snprintf(opt, sizeof opt, "%s/optimizer.safetensors", o->resume);
        rc = r.off ? zoff_model_offload_load_state(r.off, opt) : zoff_trainer_load_state(r.tr, opt);
        if (rc) {
            fail("--resume", rc);
            goto out;
        }
    }
    /* started: --overwrite's previous results go now, not before (a run that failed to
     * start would have lost them for nothing) */
    ret =
        lead ? zoff_train_prepare_out(o->out, o->resume ? r.run_id : NULL, o->overwrite, true) : 0;
    if ((ret = zoff_train_dist_agree(&r.td, ret)) != 0) goto out;
    ret = 1;
    if (lead && (rc = zoff_mkdirs(o->out))) {
        fprintf(stderr, "zoff train: --out %s: %s\n", o->out, strerror(-rc));
        goto out;
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", o->out);
    int resumed_at = r.tr ? zoff_trainer_get_step(r.tr) : zoff_model_offload_resumed_step(r.off);
    if (lead && zoff_metrics_open(path, o->resume != NULL, resumed_at, &r.metrics)) goto out;
    r.x = malloc((size_t)r.gbatch * o->seq_len * sizeof(int32_t)); /* the global batch */
    r.y = malloc((size_t)r.gbatch * o->seq_len * sizeof(int32_t));
    if (!r.x || !r.y) {
        fprintf(stderr, "zoff train: out of memory\n");
        goto out;
    }
    r.tty = isatty(STDOUT_FILENO);
    const zoff_layout *l = zoff_model_get_layout(r.m);
    /* the device memory the run holds, the reference trainer's Adam moments (allocated at the
     * first step) included, was printed with the plan above */
    char what[160];
    zoff_model_config_describe(&mc, what, sizeof what);
    char ranks[128] = "";
    if (r.td.world > 1)
        snprintf(ranks, sizeof ranks, " x %d ranks (ZeRO-2, 1/%d of the optimizer state each)",
                 r.td.world, r.td.world);
    if (lead)
        printf("%s: %s | %s, %.2fM params | "
               "batch %dx%d x%d%s, %d steps, lr %g, %s%s | data %s\n",
               cmd_name, zoff_dev_name(r.dev), what, (double)l->n_params / 1e6, o->batch,
               o->seq_len, o->grad_accum, ranks, o->steps, o->lr, o->dtype,
               o->activation_checkpoint ? ", activation checkpointing" : "", data_what);
    zoff_metrics_line cl, line;
    zoff_metrics_begin(&cl);
    zoff_metrics_str(&cl, "arch", o->arch);
    zoff_metrics_int(&cl, "n_layer", o->n_layer);
    zoff_metrics_int(&cl, "n_head", o->n_head);
    zoff_metrics_int(&cl, "n_embd", o->n_embd);
    zoff_metrics_int(&cl, "vocab_size", o->vocab_size);
    zoff_metrics_int(&cl, "seq_len", o->seq_len);
    zoff_metrics_int(&cl, "batch", o->batch);
    zoff_metrics_int(&cl, "ranks", r.td.world);
    zoff_metrics_int(&cl, "steps", o->steps);
    zoff_metrics_num(&cl, "lr", o->lr, "%g");
    zoff_metrics_str(&cl, "dtype", o->dtype);
    zoff_metrics_str(&cl, "device", zoff_dev_kind_name(zoff_dev_get_kind(r.dev)));
    zoff_metrics_str(&cl, "data", o->data);
    zoff_metrics_int(&cl, "n_params", (long long)l->n_params);
    zoff_metrics_str(&cl, "run_id", r.run_id);
    zoff_metrics_str(&cl, "offload", o->off.offload);
    if (is_sft()) {
        zoff_metrics_str(&cl, "command", "sft");
        zoff_metrics_str(&cl, "template", o->chat_template);
        zoff_metrics_bool(&cl, "packed", !o->pad);
        zoff_metrics_num(&cl, "val_frac", o->val_frac, "%g");
    }
    char plan_json[512];
    snprintf(plan_json, sizeof plan_json,
             ",\"device_plan\":{\"weights\":%zu,\"master\":%zu,\"grads\":%zu,\"optimizer\":%zu,"
             "\"buckets\":%zu,\"activations\":%zu,\"workspace\":%zu,\"total\":%zu},"
             "\"device_plan_without_offload\":%zu",
             plan.weights, plan.master, plan.grads, plan.optimizer, plan.buckets, plan.activations,
             plan.workspace, plan.total, ref_plan.total);
    zoff_metrics_raw(&cl, plan_json);
    if (o->resume) {
        zoff_metrics_str(&cl, "resume", o->resume);
        zoff_metrics_int(&cl, "resumed_step", resumed_at);
    }
    zoff_metrics_raw(&cl, "}");
    zoff_metrics_begin(&line);
    zoff_metrics_raw(&line, "\"config\":");
    zoff_metrics_raw(&line, cl.buf);
    if (lead) zoff_metrics_write(&line, r.metrics);
    ret = train(&r);
out:
    zoff_sft_source_destroy(r.sft); /* its prefetch thread first: it writes engine trace spans */
    if (r.metrics) fclose(r.metrics);
    free(r.x);
    free(r.y);
    zoff_trainer_destroy(r.tr);
    zoff_model_offload_destroy(r.off);
    free(r.resident);
    zoff_model_destroy(r.m);
    free(r.master);
    zoff_dataset_free(&r.ds);
    if (r.dev) zoff_dev_close(r.dev);
    cJSON_Delete(doc);
    /* a signal stop is agreed among the ranks (each saved): a clean end; any other failure
     * ends every rank at once */
    zoff_train_dist_end(&r.td, ret >= 128 ? 0 : ret);
    g_td = NULL;
    return ret;
}

int zoff_cmd_train(int argc, char **argv) {
    cmd_name = "zoff train";
    return train_main(argc, argv);
}

int zoff_train_sft_main(int argc, char **argv) {
    cmd_name = "zoff sft";
    return train_main(argc, argv);
}
