/* `zoff tokenize` end to end (argv[1] = the zoff binary, argv[2] = tests/fixtures/tokenizer):
 * ids per line equal the library's, --json, an llm.c .bin of a corpus (header and ids),
 * --decode of both back to the text, and errors that exit non-zero naming what is wrong. */
#include "tests/cli_test_util.h"
#include "tests/test_util.h"
#include "text/tokenizer.h"
#include "zoff/zoff.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char fixtures[PATH_MAX]; /* absolute */

/* zoff tokenize; stdout in out.txt (the ids or text it writes, compared whole) and stderr in
 * err.txt (its messages) */
static int run(const char *args) {
    return cli_sh_err("ZOFF_LOG=warn '%s' tokenize %s", cli_zoff, args);
}

static const char CORPUS[] = "Hello world!\n"
                             "<|begin_of_text|>Special tokens inside text<|eot_id|>\n"
                             "    indented code(x, y) = 42;\n"
                             "Grüße, 你好, 😀\n";

int main(int argc, char **argv) {
    zoff_test_init();
    int rc = cli_setup_fixtures(argc, argv, "/tmp/zoff_tokenize_XXXXXX", fixtures);
    if (rc) return rc;
    char tokdir[PATH_MAX + 16], args[PATH_MAX + 256];
    snprintf(tokdir, sizeof tokdir, "%s/llama3", fixtures);
    zoff_tok *tok;
    REQUIRE_OK(zoff_tok_load(tokdir, &tok));
    cli_write_file("corpus.txt", CORPUS);

    /* one line of ids per input line, as the library gives them */
    snprintf(args, sizeof args, "--tokenizer '%s' --in corpus.txt", tokdir);
    CHECK_EQ_INT(run(args), 0);
    char *out = cli_slurp("out.txt", NULL);
    char expect[16384] = "", expect_json[16384] = "";
    for (const char *p = CORPUS; *p;) {
        const char *nl = strchr(p, '\n');
        zoff_tok_ids ids = {0};
        CHECK_OK(zoff_tok_encode(tok, p, (size_t)(nl - p), &ids));
        strcat(expect_json, "[");
        for (size_t i = 0; i < ids.n; i++) {
            char num[32];
            snprintf(num, sizeof num, "%s%d", i ? " " : "", ids.ids[i]);
            strcat(expect, num);
            snprintf(num, sizeof num, "%s%d", i ? ", " : "", ids.ids[i]);
            strcat(expect_json, num);
        }
        strcat(expect, "\n");
        strcat(expect_json, "]\n");
        zoff_tok_ids_free(&ids);
        p = nl + 1;
    }
    CHECK(out && strcmp(out, expect) == 0);
    free(out);
    /* standard input and --json */
    snprintf(args, sizeof args, "--tokenizer '%s' --json < corpus.txt", tokdir);
    CHECK_EQ_INT(run(args), 0);
    out = cli_slurp("out.txt", NULL);
    CHECK(out && strcmp(out, expect_json) == 0);
    free(out);
    /* --decode of the ids gives the lines back */
    cli_write_file("ids.txt", expect);
    snprintf(args, sizeof args, "--tokenizer '%s' --decode --in ids.txt", tokdir);
    CHECK_EQ_INT(run(args), 0);
    out = cli_slurp("out.txt", NULL);
    CHECK(out && strcmp(out, CORPUS) == 0);
    free(out);
    snprintf(args, sizeof args, "--tokenizer '%s' --decode --skip-special --in ids.txt", tokdir);
    CHECK_EQ_INT(run(args), 0);
    CHECK(cli_output_has("\nSpecial tokens inside text\n"));

    /* an llm.c token file of the whole corpus, tokenized as one text */
    snprintf(args, sizeof args, "--tokenizer '%s' --in corpus.txt --out tokens.bin", tokdir);
    CHECK_EQ_INT(run(args), 0);
    size_t blen;
    char *bin = cli_slurp("tokens.bin", &blen);
    zoff_tok_ids all = {0};
    CHECK_OK(zoff_tok_encode(tok, CORPUS, sizeof CORPUS - 1, &all));
    CHECK(bin && blen == 1024 + 2 * all.n);
    if (bin && blen == 1024 + 2 * all.n) {
        int32_t h[3];
        memcpy(h, bin, sizeof h);
        CHECK_EQ_INT(h[0], 20240520);
        CHECK_EQ_INT(h[1], 1);
        CHECK_EQ_INT(h[2], all.n);
        for (size_t i = 0; i < all.n; i++) {
            uint16_t t;
            memcpy(&t, bin + 1024 + 2 * i, 2);
            CHECK_EQ_INT(t, all.ids[i]);
        }
    }
    free(bin);
    zoff_tok_ids_free(&all);
    snprintf(args, sizeof args, "--tokenizer '%s' --decode --in tokens.bin", tokdir);
    CHECK_EQ_INT(run(args), 0);
    out = cli_slurp("out.txt", NULL);
    CHECK(out && strcmp(out, CORPUS) == 0);
    free(out);

    /* errors */
    CHECK_EQ_INT(run("--in corpus.txt"), 2);
    CHECK(cli_file_has("err.txt", "--tokenizer"));
    CHECK_EQ_INT(run("--tokenizer"), 2);
    CHECK(cli_file_has("err.txt", "--tokenizer needs a value"));
    snprintf(args, sizeof args, "--tokenizer '%s' --bogus", tokdir);
    CHECK_EQ_INT(run(args), 2);
    CHECK(cli_file_has("err.txt", "--bogus"));
    CHECK_EQ_INT(run("--tokenizer no_such_dir"), 1);
    CHECK(cli_file_has("err.txt", "no_such_dir"));
    CHECK_EQ_INT(run("--tokenizer . < corpus.txt"), 1); /* a directory without tokenizer.json */
    CHECK(cli_file_has("err.txt", "tokenizer.json"));
    snprintf(args, sizeof args, "--tokenizer '%s' --in missing.txt", tokdir);
    CHECK_EQ_INT(run(args), 1);
    CHECK(cli_file_has("err.txt", "missing.txt"));
    cli_write_file("bad_ids.txt", "1 2 x3\n");
    snprintf(args, sizeof args, "--tokenizer '%s' --decode --in bad_ids.txt", tokdir);
    CHECK_EQ_INT(run(args), 1);
    CHECK(cli_file_has("err.txt", "bad_ids.txt:1"));
    cli_write_file("big_id.txt", "5000000\n");
    snprintf(args, sizeof args, "--tokenizer '%s' --decode --in big_id.txt", tokdir);
    CHECK_EQ_INT(run(args), 1);
    CHECK(cli_file_has("err.txt", "5000000"));
    /* a vocabulary beyond uint16 cannot go into a .bin */
    const char big[] = "{\"added_tokens\": [{\"id\": 70000, \"content\": \"<big>\"}], \"model\": "
                       "{\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}";
    cli_write_file("big.json", big);
    CHECK_EQ_INT(run("--tokenizer big.json --in corpus.txt --out big.bin"), 1);
    CHECK(cli_file_has("err.txt", "70001 ids"));
    CHECK_EQ_INT(run("--tokenizer big.json --in corpus.txt"), 0); /* printing ids is fine */

    zoff_tok_free(tok);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cli_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", cli_dir);
    return zoff_test_finish("test_text_tokenize_cli");
}
