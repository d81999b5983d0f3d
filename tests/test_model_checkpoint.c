/* Checkpoints and data: safetensors, config.json and llm.c .bin round trips (bit-exact),
 * 16-bit safetensors loading, and malformed inputs (truncated files, bad headers, missing
 * tensors, wrong shapes and dtypes, bad config values, wrong magic) each failing with an
 * error whose detail names the file and the tensor or key. Also the data loader on text and
 * llm.c token files, its split and batches; non-finite state refused at load; the atomic,
 * stamped checkpoint folder (verification, replacement, recovery after a kill). */
#include "core/half.h"
#include "model/model.h"
#include "tests/test_util.h"
#include "model/checkpoint_dir.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];
static zoff_gpt_config cfg = {
    .n_layer = 2, .n_head = 2, .n_embd = 8, .vocab_size = 19, .seq_len = 6};
static zoff_layout layout;

static void path_of(char *out, const char *name) {
    snprintf(out, 512, "%s/%s", dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    REQUIRE_OK(f ? 0 : -1);
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    uint8_t *b = malloc(*n + 1);
    CHECK(fread(b, 1, *n, f) == *n);
    fclose(f);
    return b;
}

/* An error whose detail mentions every given string. */
static void expect_error(int rc, int code, const char *a, const char *b) {
    const char *d = zoff_last_error_detail();
    if (rc != code || (a && !strstr(d, a)) || (b && !strstr(d, b)))
        fprintf(stderr, "expected error %d naming '%s' '%s', got %d: %s\n", code, a ? a : "",
                b ? b : "", rc, d);
    CHECK(rc == code);
    if (a) CHECK(strstr(d, a) != NULL);
    if (b) CHECK(strstr(d, b) != NULL);
}

/* A safetensors image of the layout's tensors (Hugging Face shapes) in `dtype`, optionally
 * without one tensor or with one tensor's first dimension off by one. */
static uint8_t *craft(const float *params, const char *dtype, const char *skip,
                      const char *bad_shape, size_t *size) {
    size_t es = strcmp(dtype, "F32") == 0 ? 4 : 2;
    cJSON *h = cJSON_CreateObject();
    size_t off = 0;
    for (int i = 0; i < layout.n_tensors; i++) {
        const zoff_tensor *t = &layout.tensors[i];
        if (skip && strcmp(skip, t->name) == 0) continue;
        bool conv = t->kind == ZOFF_GPT_QKV_W || t->kind == ZOFF_GPT_ATTPROJ_W ||
                    t->kind == ZOFF_GPT_FC_W || t->kind == ZOFF_GPT_FCPROJ_W;
        cJSON *e = cJSON_AddObjectToObject(h, t->name);
        cJSON_AddStringToObject(e, "dtype", dtype);
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        double d0 = (double)(conv ? t->shape[1] : t->shape[0]);
        if (bad_shape && strcmp(bad_shape, t->name) == 0) d0 += 1;
        cJSON_AddItemToArray(sh, cJSON_CreateNumber(d0));
        if (t->ndim == 2)
            cJSON_AddItemToArray(sh,
                                 cJSON_CreateNumber((double)(conv ? t->shape[0] : t->shape[1])));
        cJSON *of = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        off += t->numel * es;
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
    }
    char *text = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t tl = strlen(text);
    *size = 8 + tl + off;
    uint8_t *b = calloc(1, *size);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)tl >> (8 * i));
    memcpy(b + 8, text, tl);
    free(text);
    uint8_t *body = b + 8 + tl;
    for (int i = 0; i < layout.n_tensors; i++) {
        const zoff_tensor *t = &layout.tensors[i];
        if (skip && strcmp(skip, t->name) == 0) continue;
        bool conv = t->kind == ZOFF_GPT_QKV_W || t->kind == ZOFF_GPT_ATTPROJ_W ||
                    t->kind == ZOFF_GPT_FC_W || t->kind == ZOFF_GPT_FCPROJ_W;
        size_t out = (size_t)t->shape[0], in = t->ndim == 2 ? (size_t)t->shape[1] : 1;
        for (size_t k = 0; k < t->numel; k++) {
            /* file order: conv weights transposed to (in, out) */
            size_t src = conv ? (k % out) * in + k / out : k;
            float v = params[t->offset + src];
            if (es == 4)
                memcpy(body + 4 * k, &v, 4);
            else {
                uint16_t hv = strcmp(dtype, "BF16") == 0 ? zoff_f32_to_bf16(v) : zoff_f32_to_f16(v);
                memcpy(body + 2 * k, &hv, 2);
            }
        }
        body += t->numel * es;
    }
    return b;
}

static void test_safetensors(const float *p) {
    char path[512];
    float *q = malloc(layout.total * 4);
    path_of(path, "m.safetensors");
    REQUIRE_OK(zoff_safetensors_save(path, &layout, p));
    REQUIRE_OK(zoff_safetensors_load(path, &layout, q));
    CHECK(memcmp(p, q, layout.total * 4) == 0);

    /* our writer and the independent crafted image agree */
    size_t n, cn;
    uint8_t *img = read_bytes(path, &n), *c = craft(p, "F32", NULL, NULL, &cn);
    REQUIRE_OK(zoff_safetensors_parse(c, cn, "crafted", &layout, q));
    CHECK(memcmp(p, q, layout.total * 4) == 0);
    free(c);

    /* 16-bit files load as the rounded values */
    const char *types[2] = {"BF16", "F16"};
    for (int k = 0; k < 2; k++) {
        c = craft(p, types[k], NULL, NULL, &cn);
        REQUIRE_OK(zoff_safetensors_parse(c, cn, "crafted16", &layout, q));
        int bad = 0;
        for (size_t i = 0; i < layout.total; i++) {
            float r = k == 0 ? zoff_bf16_to_f32(zoff_f32_to_bf16(p[i]))
                             : zoff_f16_to_f32(zoff_f32_to_f16(p[i]));
            bad += q[i] != r;
        }
        CHECK_EQ_INT(bad, 0);
        free(c);
    }

    /* truncated file: names the file and the first tensor that does not fit */
    char tpath[512];
    path_of(tpath, "trunc.safetensors");
    write_bytes(tpath, img, n - 10);
    expect_error(zoff_safetensors_load(tpath, &layout, q), ZOFF_EFORMAT, tpath, "ln_f.bias");
    write_bytes(tpath, img, 5);
    expect_error(zoff_safetensors_load(tpath, &layout, q), ZOFF_EFORMAT, tpath, "truncated");
    write_bytes(tpath, img, 0);
    expect_error(zoff_safetensors_load(tpath, &layout, q), ZOFF_EFORMAT, tpath, NULL);
    write_bytes(tpath, img, 40); /* header cut */
    expect_error(zoff_safetensors_load(tpath, &layout, q), ZOFF_EFORMAT, tpath, "header");
    /* header is not JSON */
    uint8_t *bad = malloc(n);
    memcpy(bad, img, n);
    bad[8] = 'X';
    expect_error(zoff_safetensors_parse(bad, n, "bad.st", &layout, q), ZOFF_EFORMAT, "bad.st",
                 "JSON");
    free(bad);
    /* missing tensor, wrong shape, unsupported dtype */
    c = craft(p, "F32", "h.1.mlp.c_fc.bias", NULL, &cn);
    expect_error(zoff_safetensors_parse(c, cn, "miss.st", &layout, q), ZOFF_EFORMAT, "miss.st",
                 "h.1.mlp.c_fc.bias");
    free(c);
    c = craft(p, "F32", NULL, "h.0.attn.c_attn.weight", &cn);
    expect_error(zoff_safetensors_parse(c, cn, "shape.st", &layout, q), ZOFF_ESHAPE, "shape.st",
                 "h.0.attn.c_attn.weight");
    free(c);
    c = craft(p, "I64", NULL, NULL, &cn);
    expect_error(zoff_safetensors_parse(c, cn, "dtype.st", &layout, q), ZOFF_EFORMAT,
                 "dtype.st", "wte.weight");
    free(c);
    /* the "transformer." prefix of some Hugging Face exports is accepted */
    {
        char *text = malloc(n);
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--)
            hl = hl << 8 | img[i];
        cJSON *h = cJSON_ParseWithLength((const char *)img + 8, hl);
        cJSON *ren = cJSON_CreateObject();
        for (cJSON *e = h->child; e; e = e->next) {
            char name[128];
            snprintf(name, sizeof name, "transformer.%s", e->string);
            cJSON_AddItemToObject(ren, name, cJSON_Duplicate(e, 1));
        }
        char *t = cJSON_PrintUnformatted(ren);
        size_t tl = strlen(t), nn = 8 + tl + (n - 8 - hl);
        uint8_t *img2 = malloc(nn);
        for (int i = 0; i < 8; i++)
            img2[i] = (uint8_t)((uint64_t)tl >> (8 * i));
        memcpy(img2 + 8, t, tl);
        memcpy(img2 + 8 + tl, img + 8 + hl, n - 8 - hl);
        CHECK_OK(zoff_safetensors_parse(img2, nn, "prefixed", &layout, q));
        CHECK(memcmp(p, q, layout.total * 4) == 0);
        free(img2);
        free(t);
        cJSON_Delete(h);
        cJSON_Delete(ren);
        free(text);
    }
    free(img);
    free(q);
}

static void test_config(void) {
    char path[512];
    path_of(path, "config.json");
    REQUIRE_OK(zoff_gpt_config_save_json(path, &cfg));
    zoff_gpt_config c;
    REQUIRE_OK(zoff_gpt_config_load_json(path, &c));
    CHECK(memcmp(&c, &cfg, sizeof c) == 0);
    expect_error(zoff_gpt_config_parse_json("{\"n_layer\": 2}", "cfg1.json", &c), ZOFF_EFORMAT,
                 "cfg1.json", "n_head");
    expect_error(zoff_gpt_config_parse_json("{\"n_layer\": 2, \"n_head\": 3, \"n_embd\": 8, "
                                            "\"vocab_size\": 5, \"n_positions\": 4}",
                                            "cfg2.json", &c),
                 ZOFF_ECONFIG, "cfg2.json", "n_head");
    expect_error(zoff_gpt_config_parse_json("{\"n_layer\": -2, \"n_head\": 2, \"n_embd\": 8, "
                                            "\"vocab_size\": 5, \"n_positions\": 4}",
                                            "cfg3.json", &c),
                 ZOFF_ECONFIG, "cfg3.json", "n_layer");
    expect_error(zoff_gpt_config_parse_json("[1,2", "cfg4.json", &c), ZOFF_EFORMAT, "cfg4.json",
                 NULL);
    expect_error(zoff_gpt_config_load_json("/nonexistent/config.json", &c), -ENOENT,
                 "/nonexistent/config.json", NULL);
}

static void test_llmc(const float *p) {
    char path[512];
    path_of(path, "m.bin");
    REQUIRE_OK(zoff_llmc_save_gpt(path, &cfg, &layout, p));
    zoff_gpt_config c;
    float *q = malloc(layout.total * 4);
    REQUIRE_OK(zoff_llmc_load_gpt(path, &c, &layout, q));
    CHECK(memcmp(&c, &cfg, sizeof c) == 0);
    CHECK(memcmp(p, q, layout.total * 4) == 0);
    size_t n;
    uint8_t *img = read_bytes(path, &n);
    char tpath[512];
    path_of(tpath, "trunc.bin");
    write_bytes(tpath, img, n - 10); /* last tensor cut */
    expect_error(zoff_llmc_load_gpt(tpath, &c, &layout, q), ZOFF_EFORMAT, tpath, "ln_f.bias");
    write_bytes(tpath, img, 100);
    expect_error(zoff_llmc_load_gpt(tpath, &c, &layout, q), ZOFF_EFORMAT, tpath, "header");
    img[0] ^= 1;
    write_bytes(tpath, img, n);
    expect_error(zoff_llmc_load_gpt(tpath, &c, &layout, q), ZOFF_EFORMAT, tpath, "magic");
    img[0] ^= 1;
    ((int32_t *)img)[5] = 3; /* n_head 3 does not divide n_embd 8 */
    write_bytes(tpath, img, n);
    expect_error(zoff_llmc_load_gpt(tpath, &c, &layout, q), ZOFF_EFORMAT, tpath, "n_head");
    free(img);
    free(q);
}

static void test_model_checkpoint(const float *p) {
    zoff_dev_config dc;
    zoff_dev_config_default(&dc);
    dc.kind = ZOFF_DEV_HOST;
    zoff_dev *dev;
    REQUIRE_OK(zoff_dev_open(&dc, &dev));
    zoff_model *a, *b;
    zoff_model_options opt;
    zoff_model_options_default(&opt);
    opt.batch = 1;
    opt.seq_len = cfg.seq_len;
    REQUIRE_OK(zoff_gpt_create(dev, &cfg, &opt, &a));
    REQUIRE_OK(zoff_gpt_create(dev, &cfg, &opt, &b));
    REQUIRE_OK(zoff_model_params_from_host(a, p));
    char ck[512], bin[512];
    path_of(ck, "ckpt/step_10");
    REQUIRE_OK(zoff_model_checkpoint_save(a, ck, NULL));
    REQUIRE_OK(zoff_model_checkpoint_load(b, ck));
    float *q = malloc(layout.total * 4);
    REQUIRE_OK(zoff_model_params_to_host(b, q));
    CHECK(memcmp(p, q, layout.total * 4) == 0);
    zoff_gpt_config c;
    REQUIRE_OK(zoff_gpt_checkpoint_config(ck, &c));
    CHECK(memcmp(&c, &cfg, sizeof c) == 0);
    path_of(bin, "m.bin");
    REQUIRE_OK(zoff_model_checkpoint_load(b, bin));
    /* a checkpoint of another shape is refused */
    zoff_gpt_config other = cfg;
    other.n_layer = 1;
    zoff_model *o;
    REQUIRE_OK(zoff_gpt_create(dev, &other, &opt, &o));
    expect_error(zoff_model_checkpoint_load(o, ck), ZOFF_ESHAPE, ck, "n_layer");
    zoff_model_destroy(o);
    zoff_model_destroy(a);
    zoff_model_destroy(b);
    zoff_dev_close(dev);
    free(q);
}

static void test_data(void) {
    char path[512];
    path_of(path, "text.txt");
    char text[600];
    for (int i = 0; i < 600; i++)
        text[i] = (char)('a' + i % 26);
    write_bytes(path, text, sizeof text);
    zoff_dataset ds;
    REQUIRE_OK(zoff_dataset_load(path, 0.1f, 16, &ds));
    CHECK(ds.is_text && ds.n_tokens == 600 && ds.n_train == 540 && ds.max_token == 'z');
    int32_t x[64], y[64];
    uint64_t rng = 1;
    zoff_dataset_batch(&ds, false, 4, 16, &rng, x, y);
    for (int i = 0; i < 64; i++)
        CHECK((x[i] - 'a' + 1) % 26 == y[i] - 'a');
    zoff_dataset_batch(&ds, true, 4, 16, &rng, x, y);
    zoff_dataset_free(&ds);
    expect_error(zoff_dataset_load(path, 0.1f, 400, &ds), ZOFF_ECONFIG, path, "too few");

    /* llm.c token file */
    int32_t hdr[256] = {20240520, 1, 300};
    uint16_t toks[300];
    for (int i = 0; i < 300; i++)
        toks[i] = (uint16_t)(i * 7 % 1000);
    uint8_t buf[1024 + 600];
    memcpy(buf, hdr, 1024);
    memcpy(buf + 1024, toks, 600);
    path_of(path, "tok.bin");
    write_bytes(path, buf, sizeof buf);
    REQUIRE_OK(zoff_dataset_load(path, 0.1f, 8, &ds));
    CHECK(!ds.is_text && ds.n_tokens == 300 && ds.tokens[5] == 35 && ds.max_token == 995);
    zoff_dataset_free(&ds);
    write_bytes(path, buf, sizeof buf - 1);
    expect_error(zoff_dataset_load(path, 0.1f, 8, &ds), ZOFF_EFORMAT, path, "truncated");
    char mpath[512];
    path_of(mpath, "m.bin"); /* the llm.c model file written by test_llmc */
    expect_error(zoff_dataset_load(mpath, 0.1f, 8, &ds), ZOFF_EFORMAT, mpath, "model");
    expect_error(zoff_dataset_load("/nonexistent/data", 0.1f, 8, &ds), -ENOENT, "/nonexistent/data",
                 NULL);
    /* a directory is named as one (not "Cannot allocate memory") */
    expect_error(zoff_dataset_load(dir, 0.1f, 8, &ds), -EISDIR, dir, "directory");
    /* a .bin without the token magic is not trained on as byte text */
    path_of(path, "text.bin");
    write_bytes(path, text, sizeof text);
    expect_error(zoff_dataset_load(path, 0.1f, 8, &ds), ZOFF_EFORMAT, path, "magic");
}

/* NaN/Inf weights, moments, and negative second moments are refused at load, naming the
 * tensor. */
static void test_nonfinite(const float *p) {
    char path[512];
    float *q = malloc(layout.total * 4), *m = calloc(layout.total, 4), *v = calloc(layout.total, 4);
    memcpy(q, p, layout.total * 4);
    const zoff_tensor *t = zoff_gpt_layout_find(&layout, ZOFF_GPT_LN2_W, 1);
    q[t->offset + 3] = NAN;
    path_of(path, "nan.safetensors");
    REQUIRE_OK(zoff_safetensors_save(path, &layout, q));
    float *r = malloc(layout.total * 4);
    expect_error(zoff_safetensors_load(path, &layout, r), ZOFF_EFORMAT, t->name, "NaN");
    q[t->offset + 3] = INFINITY;
    REQUIRE_OK(zoff_safetensors_save(path, &layout, q));
    expect_error(zoff_safetensors_load(path, &layout, r), ZOFF_EFORMAT, t->name, "infinite");

    path_of(path, "opt.safetensors");
    int step;
    float scale;
    REQUIRE_OK(zoff_optimizer_state_save(path, m, v, layout.total, 5, 1.0f));
    REQUIRE_OK(zoff_optimizer_state_load(path, m, v, layout.total, &step, &scale));
    CHECK_EQ_INT(step, 5);
    m[7] = NAN;
    REQUIRE_OK(zoff_optimizer_state_save(path, m, v, layout.total, 5, 1.0f));
    expect_error(zoff_optimizer_state_load(path, m, v, layout.total, &step, &scale), ZOFF_EFORMAT,
                 "adamw.m", "NaN");
    m[7] = 0;
    v[9] = -1e-3f;
    REQUIRE_OK(zoff_optimizer_state_save(path, m, v, layout.total, 5, 1.0f));
    expect_error(zoff_optimizer_state_load(path, m, v, layout.total, &step, &scale), ZOFF_EFORMAT,
                 "adamw.v", "negative");
    free(q);
    free(r);
    free(m);
    free(v);
}

/* The checkpoint folder protocol: stamps, verification, atomic replacement and recovery. */
static void test_folder(const float *p) {
    char ck[512], tmp[600], path[700];
    path_of(ck, "atomic");
    float *m = calloc(layout.total, 4), *v = calloc(layout.total, 4);
    zoff_ckpt_stamp st = {.step = 7};
    REQUIRE_OK(zoff_ckpt_new_run_id(st.run_id));
    CHECK_EQ_INT(strlen(st.run_id), ZOFF_RUN_ID_LEN);
    /* written into .ckpt.tmp, swapped in by commit */
    REQUIRE_OK(zoff_ckpt_dir_begin(ck, tmp, sizeof tmp));
    CHECK(strstr(tmp, "/.atomic.tmp") != NULL);
    zoff_ckpt_stamp_set(&st);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    REQUIRE_OK(zoff_safetensors_save(path, &layout, p));
    snprintf(path, sizeof path, "%s/config.json", tmp);
    REQUIRE_OK(zoff_gpt_config_save_json(path, &cfg));
    snprintf(path, sizeof path, "%s/optimizer.safetensors", tmp);
    REQUIRE_OK(zoff_optimizer_state_save(path, m, v, layout.total, 7, 1.0f));
    zoff_ckpt_stamp_set(NULL);
    struct stat sb;
    CHECK(stat(ck, &sb) != 0); /* nothing visible before the commit */
    REQUIRE_OK(zoff_ckpt_dir_commit(tmp, ck));
    CHECK(stat(tmp, &sb) != 0);
    zoff_ckpt_stamp got;
    REQUIRE_OK(zoff_ckpt_dir_verify(ck, true, &got));
    CHECK_EQ_INT(got.step, 7);
    CHECK(strcmp(got.run_id, st.run_id) == 0);

    /* a file of another step: refused, naming both */
    zoff_ckpt_stamp other = st;
    other.step = 9;
    zoff_ckpt_stamp_set(&other);
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ck);
    char saved[700];
    snprintf(saved, sizeof saved, "%s/opt.keep", dir);
    rename(path, saved);
    REQUIRE_OK(zoff_optimizer_state_save(path, m, v, layout.total, 9, 1.0f));
    zoff_ckpt_stamp_set(NULL);
    expect_error(zoff_ckpt_dir_verify(ck, true, &got), ZOFF_EFORMAT,
                 "optimizer.safetensors is step 9", "model.safetensors is step 7");
    rename(saved, path);
    REQUIRE_OK(zoff_ckpt_dir_verify(ck, true, &got));
    /* a missing file: "incomplete", naming it */
    snprintf(path, sizeof path, "%s/config.json", ck);
    snprintf(saved, sizeof saved, "%s/config.keep", dir);
    rename(path, saved);
    expect_error(zoff_ckpt_dir_verify(ck, true, &got), ZOFF_EFORMAT, "incomplete", "config.json");
    zoff_gpt_config c2;
    expect_error(zoff_gpt_checkpoint_config(ck, &c2), ZOFF_EFORMAT, "incomplete", "config.json");
    rename(saved, path);

    /* a re-save replaces the folder whole; a kill between the fallback's two renames leaves
     * .atomic.old, which recovery puts back; a stray .atomic.tmp is removed */
    REQUIRE_OK(zoff_ckpt_dir_begin(ck, tmp, sizeof tmp));
    char old[600];
    snprintf(old, sizeof old, "%s/.atomic.old", dir);
    CHECK(rename(ck, old) == 0);
    int fixed = -1;
    REQUIRE_OK(zoff_ckpt_dir_recover(dir, &fixed));
    CHECK_EQ_INT(fixed, 2);
    CHECK(stat(tmp, &sb) != 0 && stat(old, &sb) != 0);
    REQUIRE_OK(zoff_ckpt_dir_verify(ck, true, &got));
    CHECK_EQ_INT(got.step, 7);
    snprintf(path, sizeof path, "%s/model.safetensors.tmp", ck);
    write_bytes(path, "x", 1);
    REQUIRE_OK(zoff_ckpt_dir_recover(dir, &fixed));
    CHECK_EQ_INT(fixed, 1);
    CHECK(stat(path, &sb) != 0);
    /* what is not a checkpoint's is left alone: a hidden .old folder of other files, a
     * FILE.tmp that no checkpoint writes */
    char notes[600];
    snprintf(notes, sizeof notes, "%s/.notes.old", dir);
    mkdir(notes, 0700);
    snprintf(path, sizeof path, "%s/todo.txt", notes);
    write_bytes(path, "x", 1);
    snprintf(path, sizeof path, "%s/notes.tmp", ck);
    write_bytes(path, "x", 1);
    REQUIRE_OK(zoff_ckpt_dir_recover(dir, &fixed));
    CHECK_EQ_INT(fixed, 0);
    CHECK(stat(notes, &sb) == 0 && stat(path, &sb) == 0);
    unlink(path);

    /* a folder of an older zoff (no stamps at all) is accepted; half stamped is not */
    char legacy[512];
    path_of(legacy, "legacy");
    mkdir(legacy, 0700);
    snprintf(path, sizeof path, "%s/model.safetensors", legacy);
    REQUIRE_OK(zoff_safetensors_save(path, &layout, p));
    snprintf(path, sizeof path, "%s/config.json", legacy);
    REQUIRE_OK(zoff_gpt_config_save_json(path, &cfg));
    snprintf(path, sizeof path, "%s/optimizer.safetensors", legacy);
    REQUIRE_OK(zoff_optimizer_state_save(path, m, v, layout.total, 7, 1.0f));
    REQUIRE_OK(zoff_ckpt_dir_verify(legacy, true, &got));
    CHECK(got.run_id[0] == 0);
    zoff_ckpt_stamp_set(&st);
    REQUIRE_OK(zoff_optimizer_state_save(path, m, v, layout.total, 7, 1.0f));
    zoff_ckpt_stamp_set(NULL);
    expect_error(zoff_ckpt_dir_verify(legacy, true, &got), ZOFF_EFORMAT, "has no step or run id",
                 "optimizer.safetensors is step 7");
    free(m);
    free(v);
}

int main(void) {
    zoff_test_init();
    snprintf(dir, sizeof dir, "/tmp/zoff_ckpt_XXXXXX");
    REQUIRE_OK(mkdtemp(dir) ? 0 : -1);
    REQUIRE_OK(zoff_gpt_layout_build(&cfg, &layout));
    float *p = calloc(layout.total, sizeof *p);
    unsigned long long rng = 3;
    for (int i = 0; i < layout.n_tensors; i++)
        for (size_t k = 0; k < layout.tensors[i].numel; k++)
            p[layout.tensors[i].offset + k] = zoff_test_randf(&rng, -1, 1);
    test_safetensors(p);
    test_config();
    test_llmc(p);
    test_model_checkpoint(p);
    test_data();
    test_nonfinite(p);
    test_folder(p);
    free(p);
    zoff_layout_free(&layout);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return zoff_test_finish("test_model_checkpoint");
}
