/*
 * Shared pieces of the `elle` command-line program: error reporting, number
 * parsing (fractions like 8/255 for epsilon-style values), and the options
 * every command that builds a model or opens a dataset accepts.
 */
#ifndef ELLE_CLI_H
#define ELLE_CLI_H

#include <stdint.h>

#include "elle.h"

#define CLI_MAX_MODEL_PARAMS 16

/* Print "elle <cmd>: <message>" and a usage hint to stderr; returns 2 (bad usage). */
int cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Print "elle <cmd>: <what>: <library message>" to stderr; returns 1. */
int cli_lib_error(const char *cmd, const char *what, int rc);

/* Parse a finite number; accepts "a/b" fractions ("8/255") and plain decimals. */
int cli_parse_double(const char *s, double *out);
/* Parse an integer in [lo, hi]. */
int cli_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out);

/* "NAME=VALUE" with a number (fractions accepted): the name into `name`
 * (at most size - 1 characters), the number into *value. 0 ok, -1 malformed. */
int cli_parse_kv(const char *s, char *name, size_t size, double *value);

/* An attack spec: "fgsm", "rs-fgsm", "n-fgsm", "pgd" (10 steps), "pgd-K"
 * or "pgd-K-R" (K steps, R restarts). *restarts is 0 when R is not written.
 * 0 ok, -1 not an attack spec. */
int cli_parse_attack(const char *s, elle_attack_kind *kind, int64_t *steps, int64_t *restarts);

/* Check "NAME=VALUE" against the attack's parameters (by name and bounds).
 * Returns 0, or prints a usage error naming `flag` and returns 2. */
int cli_check_attack_param(const char *cmd, const char *flag, const char *kv);

/* Set the attack parameter "NAME=VALUE" (checked by cli_check_attack_param);
 * a value the attack refuses (e.g. a fraction for an integer) is a usage
 * error (2). */
int cli_apply_attack_param(const char *cmd, const char *flag, elle_attack *a, const char *kv);

/* Options shared by commands that build a model and open data. */
typedef struct cli_common {
    const char *backend;     /* --backend cpu|reference|cuda */
    int64_t threads;         /* --threads N (0 = all cores) */
    const char *model;       /* --model small_cnn|preact_resnet18|wide_resnet */
    const char *model_params[CLI_MAX_MODEL_PARAMS]; /* --model-param name=value */
    int n_model_params;
    const char *dataset;     /* --dataset fashion-mnist|mnist|cifar10|cifar100|svhn */
    const char *data;        /* --data DIR (default: the dataset's usual place) */
    int64_t seed;            /* --seed */
} cli_common;

/* Defaults: cpu backend, 2 threads... */
void cli_common_init(cli_common *c);

/* If `opt` (a long option name without dashes) is one of the common options,
 * consume `arg` into c and return 1; 0 if not common; 2 on a bad value
 * (message printed). */
int cli_common_option(const char *cmd, cli_common *c, const char *opt, const char *arg);

/* Help text for the common options. */
extern const char cli_common_help[];

/* Create the context from --backend/--threads. Returns an exit code (0 = ok). */
int cli_open_context(const char *cmd, const cli_common *c, elle_context **ctx);

/* Open --dataset/--data split `split` (default directory for fashion-mnist
 * and mnist: Debian's /usr/share/datasets/...). Returns an exit code. */
int cli_open_dataset(const char *cmd, const cli_common *c, int split, elle_dataset **out);

/* Create the model named by --model, shaped for dataset `d` (input channels,
 * size and classes from the data), with --model-param and --seed applied.
 * Returns an exit code. */
int cli_create_model(const char *cmd, const cli_common *c, elle_context *ctx,
                     const elle_dataset *d, elle_model **out);

/* Commands. */
int cmd_info(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
