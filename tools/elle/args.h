/*
 * Minimal long-option scanner: "--name value", "--name=value" and flags.
 * Each command loops: while ((r = args_next(&a)) > 0) { a.name, a.value }.
 */
#ifndef ELLE_CLI_ARGS_H
#define ELLE_CLI_ARGS_H

typedef struct args {
    int argc;
    char **argv;
    int i;
    const char *cmd;
    const char *const *flags; /* NULL-terminated names that take no value */
    const char *name;         /* current option name, without "--" */
    const char *value;        /* its value, NULL for a flag */
    char buf[128];
} args;

void args_init(args *a, const char *cmd, int argc, char **argv, const char *const *flags);
/* 1: an option is in a.name/a.value; 0: done; 2: a usage error was printed. */
int args_next(args *a);

#endif
