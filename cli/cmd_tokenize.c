/* `zoff tokenize`: a tokenizer.json at work on text. Prints the ids of each input line (or a
 * JSON array per line), writes a whole corpus as an llm.c token file for `zoff train --data`,
 * or with --decode turns ids (lines of numbers, or a .bin token file) back into text. */
#include "cli/cli.h"
#include "text/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LLMC_TOKEN_MAGIC 20240520

static void tokenize_usage(FILE *out) {
    fprintf(out,
            "usage: zoff tokenize --tokenizer DIR [--in FILE] [--out tokens.bin] [--json]\n"
            "       zoff tokenize --tokenizer DIR --decode [--in FILE|tokens.bin]\n"
            "\n"
            "  --tokenizer DIR   a directory holding tokenizer.json (or the file itself)\n"
            "  --in FILE         input (default: standard input)\n"
            "  --out FILE        write the whole input, tokenized as one text, as an llm.c token\n"
            "                    file (256 int32 header, magic 20240520, uint16 ids) for\n"
            "                    `zoff train --data`; needs ids below 65536 (the input and its\n"
            "                    ids are held in memory: about 3 bytes per byte of text)\n"
            "  --json            print a JSON array of ids per input line\n"
            "  --decode          the reverse: lines of ids (or an llm.c token file) to text\n"
            "  --skip-special    with --decode: leave special tokens out\n"
            "\n"
            "Without --out, each input line (without its newline) is encoded on its own and\n"
            "printed as one line of ids. Ids are those of Hugging Face tokenizers'\n"
            "encode(text, add_special_tokens=False).\n");
}

static char *read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 20, n = 0, got;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static int lib_error(const char *what, int rc) {
    fprintf(stderr, "zoff tokenize: %s: %s (%s)\n", what, zoff_last_error_detail(),
            zoff_strerror(rc));
    return 1;
}

static int write_bin(zoff_tok *tok, FILE *in, const char *in_name, const char *out_path) {
    size_t vocab = zoff_tok_vocab_size(tok);
    if (vocab > 65536) {
        fprintf(stderr,
                "zoff tokenize: --out: the vocabulary has %zu ids, but an llm.c token file holds "
                "ids below 65536 (uint16)\n",
                vocab);
        return 1;
    }
    size_t len;
    char *text = read_all(in, &len);
    if (!text) {
        fprintf(stderr, "zoff tokenize: %s: read error\n", in_name);
        return 1;
    }
    zoff_tok_ids ids = {0};
    int rc = zoff_tok_encode(tok, text, len, &ids);
    free(text);
    if (rc) return lib_error(in_name, rc);
    if (ids.n > INT32_MAX) {
        fprintf(stderr, "zoff tokenize: %zu tokens exceed an llm.c header's count\n", ids.n);
        zoff_tok_ids_free(&ids);
        return 1;
    }
    int status = 0;
    FILE *f = fopen(out_path, "wb");
    if (!f) {
        fprintf(stderr, "zoff tokenize: --out %s: %s\n", out_path, strerror(errno));
        zoff_tok_ids_free(&ids);
        return 1;
    }
    int32_t header[256] = {LLMC_TOKEN_MAGIC, 1, (int32_t)ids.n};
    uint16_t *u = malloc((ids.n ? ids.n : 1) * sizeof(uint16_t));
    if (!u) {
        fclose(f);
        zoff_tok_ids_free(&ids);
        return 1;
    }
    for (size_t i = 0; i < ids.n; i++)
        u[i] = (uint16_t)ids.ids[i];
    if (fwrite(header, sizeof header, 1, f) != 1 ||
        (ids.n && fwrite(u, sizeof(uint16_t), ids.n, f) != ids.n))
        status = 1;
    if (fclose(f) != 0) status = 1;
    if (status)
        fprintf(stderr, "zoff tokenize: --out %s: write error\n", out_path);
    else
        fprintf(stderr, "zoff tokenize: %zu tokens (%zu bytes of text) written to %s\n", ids.n, len,
                out_path);
    free(u);
    zoff_tok_ids_free(&ids);
    return status;
}

static int print_decoded(zoff_tok *tok, const int32_t *ids, size_t n, bool skip_special,
                         bool newline) {
    char *s;
    size_t sl;
    int rc = zoff_tok_decode(tok, ids, n, skip_special, &s, &sl);
    if (rc) return lib_error("--decode", rc);
    fwrite(s, 1, sl, stdout);
    if (newline) fputc('\n', stdout);
    free(s);
    return 0;
}

static int decode_input(zoff_tok *tok, FILE *in, const char *in_name, bool skip_special) {
    size_t len;
    char *buf = read_all(in, &len);
    if (!buf) {
        fprintf(stderr, "zoff tokenize: %s: read error\n", in_name);
        return 1;
    }
    int status = 0;
    int32_t magic = 0;
    if (len >= 4) memcpy(&magic, buf, 4);
    zoff_tok_ids ids = {0};
    if (len >= 1024 && magic == LLMC_TOKEN_MAGIC) { /* an llm.c token file */
        int32_t h[256];
        memcpy(h, buf, sizeof h);
        size_t n = (size_t)(uint32_t)h[2];
        if (h[1] != 1 || len != 1024 + 2 * n) {
            fprintf(stderr,
                    "zoff tokenize: %s: not an llm.c token file of version 1 with %zu "
                    "tokens\n",
                    in_name, n);
            status = 1;
        }
        for (size_t i = 0; i < n && !status; i++) {
            uint16_t t;
            memcpy(&t, buf + 1024 + 2 * i, 2);
            zoff_tok_ids_push(&ids, t);
        }
        if (!status) status = print_decoded(tok, ids.ids, ids.n, skip_special, false);
    } else { /* lines of ids */
        size_t line = 0;
        for (char *p = buf, *end = buf + len; p < end && !status;) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            char *stop = nl ? nl : end;
            line++;
            ids.n = 0;
            for (char *q = p; q < stop;) {
                while (q < stop && (*q == ' ' || *q == '\t' || *q == ',' || *q == '[' ||
                                    *q == ']' || *q == '\r'))
                    q++;
                if (q >= stop) break;
                char *e;
                errno = 0;
                long v = strtol(q, &e, 10);
                if (e == q || e > stop || errno || v < 0 || v > INT32_MAX) {
                    fprintf(stderr, "zoff tokenize: %s:%zu: '%.*s' is not a token id\n", in_name,
                            line, (int)(stop - q < 20 ? stop - q : 20), q);
                    status = 1;
                    break;
                }
                zoff_tok_ids_push(&ids, (int32_t)v);
                q = e;
            }
            if (!status) status = print_decoded(tok, ids.ids, ids.n, skip_special, true);
            p = stop + 1;
        }
    }
    zoff_tok_ids_free(&ids);
    free(buf);
    return status;
}

static int encode_lines(zoff_tok *tok, FILE *in, const char *in_name, bool json) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    zoff_tok_ids ids = {0};
    int status = 0;
    while ((got = getline(&line, &cap, in)) >= 0) {
        size_t n = (size_t)got;
        if (n && line[n - 1] == '\n') n--;
        ids.n = 0;
        int rc = zoff_tok_encode(tok, line, n, &ids);
        if (rc) {
            status = lib_error(in_name, rc);
            break;
        }
        if (json) fputc('[', stdout);
        for (size_t i = 0; i < ids.n; i++)
            printf(json ? (i ? ", %d" : "%d") : (i ? " %d" : "%d"), ids.ids[i]);
        fputs(json ? "]\n" : "\n", stdout);
    }
    if (!status && ferror(in)) {
        fprintf(stderr, "zoff tokenize: %s: read error\n", in_name);
        status = 1;
    }
    free(line);
    zoff_tok_ids_free(&ids);
    return status;
}

int zoff_cmd_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *in_path = NULL, *out_path = NULL;
    bool json = false, decode = false, skip_special = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(a, "--tokenizer") == 0 || strcmp(a, "--in") == 0 || strcmp(a, "--out") == 0) {
            if (!has_value) {
                fprintf(stderr, "zoff tokenize: %s needs a value\n", a);
                return 2;
            }
            const char **dst = a[2] == 't' ? &tok_path : a[2] == 'i' ? &in_path : &out_path;
            *dst = argv[++i];
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--decode") == 0) {
            decode = true;
        } else if (strcmp(a, "--skip-special") == 0) {
            skip_special = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            tokenize_usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "zoff tokenize: unknown option '%s'\n\n", a);
            tokenize_usage(stderr);
            return 2;
        }
    }
    if (!tok_path) {
        fprintf(stderr, "zoff tokenize: --tokenizer DIR is required\n");
        return 2;
    }
    if (decode && (out_path || json)) {
        fprintf(stderr, "zoff tokenize: --decode prints text: no --out or --json with it\n");
        return 2;
    }
    if (out_path && json) {
        fprintf(stderr, "zoff tokenize: --json prints ids: no --out with it\n");
        return 2;
    }
    zoff_tok *tok;
    int rc = zoff_tok_load(tok_path, &tok);
    if (rc) return lib_error("--tokenizer", rc);
    FILE *in = stdin;
    const char *in_name = in_path ? in_path : "<stdin>";
    if (in_path && !(in = fopen(in_path, "rb"))) {
        fprintf(stderr, "zoff tokenize: --in %s: %s\n", in_path, strerror(errno));
        zoff_tok_free(tok);
        return 1;
    }
    int status = decode     ? decode_input(tok, in, in_name, skip_special)
                 : out_path ? write_bin(tok, in, in_name, out_path)
                            : encode_lines(tok, in, in_name, json);
    if (fflush(stdout) != 0) status = 1;
    if (in != stdin) fclose(in);
    zoff_tok_free(tok);
    return status;
}
