#include "args.h"

#include <stdio.h>
#include <string.h>

#include "cli.h"

void args_init(args *a, const char *cmd, int argc, char **argv, const char *const *flags)
{
    memset(a, 0, sizeof *a);
    a->argc = argc;
    a->argv = argv;
    a->i = 1;
    a->cmd = cmd;
    a->flags = flags;
}

static int is_flag(const args *a, const char *name)
{
    for (const char *const *f = a->flags; f && *f; f++)
        if (strcmp(*f, name) == 0)
            return 1;
    return 0;
}

int args_next(args *a)
{
    if (a->i >= a->argc)
        return 0;
    const char *s = a->argv[a->i++];
    if (strcmp(s, "-h") == 0)
        s = "--help";
    if (strncmp(s, "--", 2) != 0 || s[2] == '\0')
        return cli_usage_error(a->cmd, "unexpected argument '%s'", s);
    s += 2;
    const char *eq = strchr(s, '=');
    if (eq) {
        size_t len = (size_t)(eq - s);
        if (len >= sizeof a->buf)
            return cli_usage_error(a->cmd, "option name too long");
        memcpy(a->buf, s, len);
        a->buf[len] = '\0';
        a->name = a->buf;
        a->value = eq + 1;
        if (is_flag(a, a->name))
            return cli_usage_error(a->cmd, "--%s takes no value", a->name);
        return 1;
    }
    a->name = s;
    a->value = NULL;
    if (is_flag(a, s))
        return 1;
    if (a->i >= a->argc)
        return cli_usage_error(a->cmd, "--%s needs a value", s);
    a->value = a->argv[a->i++];
    return 1;
}
