/* The tokenizer against Hugging Face `tokenizers` (argv[1] = tests/fixtures/tokenizer): every id
 * of every case in NAME/expected.tsv, written by scripts/make_tokenizer_fixtures.py, and the
 * decoded text; then the legacy "a b" merges format, and files that must be refused with the
 * field named. */
#include "tests/test_util.h"
#include "text/tokenizer.h"
#include "zoff/zoff.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *fixtures;
static char tmpdir[256];

static size_t unhex(const char *h, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v;
        sscanf(h + i, "%2x", &v);
        out[o++] = (char)v;
    }
    return o;
}

static int valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t l = c < 0x80                 ? 1
                   : c >= 0xC2 && c <= 0xDF ? 2
                   : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4
                                            : 0;
        if (!l || i + l > n) return 0;
        for (size_t k = 1; k < l; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80) return 0;
        if ((c == 0xE0 && (unsigned char)s[i + 1] < 0xA0) ||
            (c == 0xED && (unsigned char)s[i + 1] > 0x9F) ||
            (c == 0xF0 && (unsigned char)s[i + 1] < 0x90) ||
            (c == 0xF4 && (unsigned char)s[i + 1] > 0x8F))
            return 0;
        i += l;
    }
    return 1;
}

/* Checks every case of NAME/expected.tsv with the tokenizer at PATH; returns the case count. */
static int check_cases(const char *name, const char *path, int byte_level) {
    zoff_tok *tok;
    REQUIRE_OK(zoff_tok_load(path, &tok));
    char file[512];
    snprintf(file, sizeof file, "%s/%s/expected.tsv", fixtures, name);
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "%s: cannot open\n", file);
        exit(1);
    }
    static char line[1 << 20], input[1 << 19], expect_dec[1 << 19];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!t2) break;
        size_t in_len = unhex(line, (size_t)(t1 - line), input);
        char *nl = strchr(t2 + 1, '\n');
        size_t dec_len;
        if (t2[1] == '=') { /* decoding gives back the input */
            memcpy(expect_dec, input, in_len);
            dec_len = in_len;
        } else {
            dec_len = unhex(t2 + 1, nl ? (size_t)(nl - t2 - 1) : strlen(t2 + 1), expect_dec);
        }
        zoff_tok_ids want = {0}, got = {0};
        *t2 = 0;
        for (char *p = t1 + 1; *p;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            zoff_tok_ids_push(&want, (int32_t)v);
            p = end;
        }
        CHECK_OK(zoff_tok_encode(tok, input, in_len, &got));
        int same = got.n == want.n &&
                   (got.n == 0 || memcmp(got.ids, want.ids, got.n * sizeof(int32_t)) == 0);
        if (!same) {
            fprintf(stderr, "%s case %d (%.60s): %zu ids, expected %zu\n  got:", name, cases, input,
                    got.n, want.n);
            for (size_t i = 0; i < got.n && i < 40; i++)
                fprintf(stderr, " %d", got.ids[i]);
            fprintf(stderr, "\n want:");
            for (size_t i = 0; i < want.n && i < 40; i++)
                fprintf(stderr, " %d", want.ids[i]);
            fprintf(stderr, "\n");
        }
        CHECK(same);
        char *dec;
        size_t dn;
        CHECK_OK(zoff_tok_decode(tok, want.ids, want.n, false, &dec, &dn));
        int dec_same = dec && dn == dec_len && memcmp(dec, expect_dec, dn) == 0;
        if (!dec_same)
            fprintf(stderr, "%s case %d: decoded '%s', expected '%.*s'\n", name, cases,
                    dec ? dec : "", (int)dec_len, expect_dec);
        CHECK(dec_same);
        /* byte-level: decoding gives back the very text, but for white space that added
         * tokens with lstrip/rstrip take */
        if (byte_level && valid_utf8(input, in_len) && !memmem(input, in_len, "<mask>", 6) &&
            !memmem(input, in_len, "[END]", 5))
            CHECK(dn == in_len && memcmp(dec, input, dn) == 0);
        free(dec);
        zoff_tok_ids_free(&want);
        zoff_tok_ids_free(&got);
        cases++;
    }
    fclose(f);
    zoff_tok_free(tok);
    return cases;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    fputs(text, f);
    fclose(f);
}

/* Loading text must fail with code `want` and a detail that contains `field`. */
static void check_refused(const char *text, int want, const char *field) {
    char path[512];
    snprintf(path, sizeof path, "%s/bad.json", tmpdir);
    write_file(path, text);
    zoff_tok *tok = NULL;
    int rc = zoff_tok_load(path, &tok);
    CHECK_EQ_INT(rc, want);
    CHECK(tok == NULL);
    if (!strstr(zoff_last_error_detail(), field)) {
        fprintf(stderr, "detail '%s' lacks '%s'\n", zoff_last_error_detail(), field);
        CHECK(0);
    }
}

#define MINIMAL_MODEL                                                                              \
    "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "                  \
    "\"merges\": [[\"a\", \"b\"]]}"

static void check_errors(void) {
    char path[512];
    zoff_tok *tok = NULL;
    snprintf(path, sizeof path, "%s/missing.json", tmpdir);
    CHECK_EQ_INT(zoff_tok_load(path, &tok), -ENOENT);
    CHECK(strstr(zoff_last_error_detail(), "missing.json") != NULL);
    CHECK_EQ_INT(zoff_tok_load(tmpdir, &tok), -ENOENT); /* a directory without tokenizer.json */
    CHECK(strstr(zoff_last_error_detail(), "tokenizer.json") != NULL);
    check_refused("{\"model\": ", ZOFF_EFORMAT, "not valid JSON");
    check_refused("{}", ZOFF_EFORMAT, "model");
    check_refused("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", ZOFF_EFORMAT,
                  "model.type");
    check_refused("{\"normalizer\": {\"type\": \"NFKC\"}, " MINIMAL_MODEL "}", ZOFF_EFORMAT,
                  "normalizer.type: normalizer 'NFKC'");
    check_refused("{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
                  "\"Prepend\", \"prepend\": \"x\"}, {\"type\": \"Lowercase\"}]}, " MINIMAL_MODEL
                  "}",
                  ZOFF_EFORMAT, "normalizer.normalizers[1].type");
    check_refused("{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, " MINIMAL_MODEL "}",
                  ZOFF_EFORMAT, "pre_tokenizer.type");
    check_refused("{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                  "\"behavior\": \"Isolated\"}, " MINIMAL_MODEL "}",
                  ZOFF_EFORMAT, "pre_tokenizer.pattern");
    check_refused("{\"decoder\": {\"type\": \"WordPiece\"}, " MINIMAL_MODEL "}", ZOFF_EFORMAT,
                  "decoder.type");
    check_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\", "
                  "\"b\"]]}}",
                  ZOFF_EFORMAT, "model.merges[0]");
    check_refused("{\"model\": {\"type\": \"BPE\", \"dropout\": 0.1, \"vocab\": {}}}", ZOFF_EFORMAT,
                  "model.dropout");
    check_refused("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}}}", ZOFF_EFORMAT,
                  "model.vocab[\"a\"]");
    check_refused("{\"added_tokens\": [{\"id\": 3, \"content\": \"<m>\", \"single_word\": "
                  "true}], " MINIMAL_MODEL "}",
                  ZOFF_EFORMAT, "added_tokens[0].single_word");

    /* a minimal valid file: ids, decoding without a decoder (tokens joined by spaces), errors */
    snprintf(path, sizeof path, "%s/ok.json", tmpdir);
    write_file(
        path,
        "{\"added_tokens\": [{\"id\": 3, \"content\": \"<m>\", \"special\": true}], " MINIMAL_MODEL
        "}");
    REQUIRE_OK(zoff_tok_load(path, &tok));
    zoff_tok_ids ids = {0};
    CHECK_OK(zoff_tok_encode(tok, "abba<m>a", 8, &ids));
    int32_t want[] = {2, 1, 0, 3, 0};
    CHECK(ids.n == 5 && memcmp(ids.ids, want, sizeof want) == 0);
    char *s;
    size_t n;
    CHECK_OK(zoff_tok_decode(tok, ids.ids, ids.n, false, &s, &n));
    CHECK(strcmp(s, "ab b a <m> a") == 0);
    free(s);
    CHECK_OK(zoff_tok_decode(tok, ids.ids, ids.n, true, &s, &n));
    CHECK(strcmp(s, "ab b a a") == 0);
    free(s);
    int32_t bad_id = 7;
    CHECK_EQ_INT(zoff_tok_decode(tok, &bad_id, 1, false, &s, &n), -EINVAL);
    CHECK(strstr(zoff_last_error_detail(), "id 7") != NULL);
    CHECK_EQ_INT(zoff_tok_vocab_size(tok), 4);
    CHECK_EQ_INT(zoff_tok_find(tok, "<m>"), 3);
    CHECK_EQ_INT(zoff_tok_find(tok, "ab"), 2);
    CHECK_EQ_INT(zoff_tok_find(tok, "zz"), -1);
    CHECK(zoff_tok_is_special(tok, 3) && !zoff_tok_is_special(tok, 2));
    zoff_tok_ids_free(&ids);
    zoff_tok_free(tok);
}

/* The gpt2 fixture rewritten with "a b" merges (files before tokenizers 0.20) gives the same
 * ids. */
static void check_legacy_merges(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/gpt2/tokenizer.json", fixtures);
    FILE *f = fopen(path, "rb");
    REQUIRE_OK(f ? 0 : -errno);
    static char buf[1 << 21];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *doc = cJSON_Parse(buf);
    cJSON *merges = cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "model"), "merges");
    cJSON *legacy = cJSON_CreateArray();
    cJSON *m;
    cJSON_ArrayForEach(m, merges) {
        char pair[256];
        snprintf(pair, sizeof pair, "%s %s", cJSON_GetArrayItem(m, 0)->valuestring,
                 cJSON_GetArrayItem(m, 1)->valuestring);
        cJSON_AddItemToArray(legacy, cJSON_CreateString(pair));
    }
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(doc, "model"), "merges", legacy);
    char *text = cJSON_PrintUnformatted(doc);
    snprintf(path, sizeof path, "%s/legacy.json", tmpdir);
    write_file(path, text);
    free(text);
    cJSON_Delete(doc);
    CHECK(check_cases("gpt2", path, 1) > 50);
}

int main(int argc, char **argv) {
    zoff_test_init();
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURES_DIR\n", argv[0]);
        return 2;
    }
    fixtures = argv[1];
    snprintf(tmpdir, sizeof tmpdir, "/tmp/zoff_tok_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    const char *names[] = {"gpt2", "llama3", "qwen2", "spm", "metaspace"};
    for (int i = 0; i < 5; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", fixtures, names[i]); /* a directory is accepted */
        int cases = check_cases(names[i], dir, i < 2); /* qwen2's NFC does not give back all */
        CHECK(cases > 50);
        printf("%s: %d cases\n", names[i], cases);
    }
    check_legacy_merges();
    check_errors();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return zoff_test_finish("test_text_tokenizer");
}
