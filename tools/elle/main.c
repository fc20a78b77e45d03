/*
 * elle — command-line front end of libelle.
 *
 *   elle info                      version, backends, threads, CPU features
 *   elle train [options]           train a model (see elle train --help)
 *   elle eval  [options]           evaluate a saved model
 *   elle bench [options]           time PreActResNet-18 steps on this machine
 *
 * Exit status: 0 success, 1 a library error (message printed), 2 bad usage.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: elle <command> [options]\n"
               "\n"
               "commands:\n"
               "  info     version, backends, threads and CPU features\n"
               "  train    train a model on a dataset\n"
               "  eval     evaluate a saved model on a dataset\n"
               "  bench    time forward / backward steps of PreActResNet-18\n"
               "\n"
               "'elle <command> --help' lists a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("elle %s\n", elle_version_string());
        return 0;
    }
    if (strcmp(cmd, "info") == 0)
        return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "train") == 0)
        return cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0)
        return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc - 1, argv + 1);
    fprintf(stderr, "elle: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
