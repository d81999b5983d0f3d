/* The zoff command: dispatches to subcommands (info, ...). Owns what the library must not
 * do: parsing flags and environment, printing, and choosing exit codes. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

/* cli/cmd_train.c (declared here: cli.h belongs to the info command's owners) */
int zoff_cmd_train(int argc, char **argv);
/* cli/cmd_tokenize.c */
int zoff_cmd_tokenize(int argc, char **argv);
/* cli/cmd_sft.c, cli/cmd_generate.c */
int zoff_cmd_sft(int argc, char **argv);
int zoff_cmd_generate(int argc, char **argv);

static void usage(FILE *out) {
    fprintf(out, "usage: zoff <command> [options]\n"
                 "\n"
                 "commands:\n"
                 "  train    train a GPT (no options: the built-in demo on GPL-3 text, ~1 min)\n"
                 "  sft      fine-tune on JSONL conversations with a chat template (no options:\n"
                 "           the built-in demo, a model learns 3-digit addition, a few minutes)\n"
                 "  generate a chat model's reply to a prompt (--model DIR --prompt TEXT)\n"
                 "  tokenize text to token ids with a tokenizer.json, an llm.c .bin, or back\n"
                 "  info     what this machine offers zoff: build, backends, GPUs, CPU topology,\n"
                 "           SIMD, memory limits, and (with --nvme-path) the swap directory\n"
                 "  version  print the version\n"
                 "\n"
                 "environment:\n"
                 "  ZOFF_DEVICE=auto|cuda|host   device backend (default auto)\n"
                 "  ZOFF_HOST_DEVICE_MEM=SIZE    host backend device capacity (default 2GiB)\n"
                 "  ZOFF_LOG=error|warn|info|debug  log verbosity (default info)\n"
                 "\n"
                 "Run 'zoff <command> --help' for a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (zoff_cli_setup_logging() != 0) return 2;
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("zoff %s\n", zoff_version());
        return 0;
    }
    if (strcmp(cmd, "info") == 0) return zoff_cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "train") == 0) return zoff_cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0) return zoff_cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "sft") == 0) return zoff_cmd_sft(argc - 1, argv + 1);
    if (strcmp(cmd, "generate") == 0) return zoff_cmd_generate(argc - 1, argv + 1);
    fprintf(stderr, "zoff: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
