/* Shared helpers of the `elle` program (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "elle %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'elle %s --help'.\n", cmd);
    return 2;
}

int cli_lib_error(const char *cmd, const char *what, int rc)
{
    fprintf(stderr, "elle %s: %s: %s (%s)\n", cmd, what, elle_error_last()->message,
            elle_status_name(rc));
    return 1;
}

int cli_parse_double(const char *s, double *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    errno = 0;
    double num = strtod(s, &end);
    if (errno || end == s)
        return -1;
    if (*end == '/') {
        const char *d = end + 1;
        double den = strtod(d, &end);
        if (errno || end == d || *end || den == 0)
            return -1;
        num /= den;
    } else if (*end) {
        return -1;
    }
    if (!isfinite(num))
        return -1;
    *out = num;
    return 0;
}

int cli_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

void cli_common_init(cli_common *c)
{
    memset(c, 0, sizeof *c);
    c->backend = "cpu";
    c->threads = 0;
    c->model = "small_cnn";
    c->dataset = "fashion-mnist";
    c->seed = 0;
}

const char cli_common_help[] =
    "  --backend NAME        cpu (oneDNN, default), reference, cuda\n"
    "  --threads N           compute threads (default 0 = all cores)\n"
    "  --dataset NAME        fashion-mnist (default), mnist, cifar10, cifar100, svhn\n"
    "  --data DIR            dataset directory (default for fashion-mnist and mnist:\n"
    "                        /usr/share/datasets/<name>, Debian's dataset packages)\n"
    "  --model NAME          small_cnn (default), preact_resnet18, wide_resnet\n"
    "  --model-param K=V     model parameter by name (width, depth, hidden,\n"
    "                        shortcut_raw_x, bn_momentum, ...); repeatable\n"
    "  --seed N              seed of initialisation, shuffling and noise (default 0)\n";

int cli_common_option(const char *cmd, cli_common *c, const char *opt, const char *arg)
{
    if (strcmp(opt, "backend") == 0) {
        elle_backend b;
        if (elle_backend_from_name(arg, &b))
            return cli_usage_error(cmd, "unknown backend '%s' (cpu, reference, cuda)", arg), 2;
        c->backend = arg;
    } else if (strcmp(opt, "threads") == 0) {
        if (cli_parse_int(arg, 0, 4096, &c->threads))
            return cli_usage_error(cmd, "--threads wants an integer in [0, 4096], got '%s'", arg), 2;
    } else if (strcmp(opt, "model") == 0) {
        c->model = arg;
    } else if (strcmp(opt, "model-param") == 0) {
        if (c->n_model_params == CLI_MAX_MODEL_PARAMS)
            return cli_usage_error(cmd, "too many --model-param options"), 2;
        const char *eq = strchr(arg, '=');
        char name[64];
        elle_model_param p;
        double v;
        if (!eq)
            return cli_usage_error(cmd, "--model-param wants NAME=VALUE, got '%s'", arg), 2;
        snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
        if (elle_model_param_from_name(name, &p) != ELLE_OK)
            return cli_usage_error(cmd, "unknown model parameter '%s'", name), 2;
        if (cli_parse_double(eq + 1, &v))
            return cli_usage_error(cmd, "--model-param %s: '%s' is not a number", name, eq + 1), 2;
        c->model_params[c->n_model_params++] = arg;
    } else if (strcmp(opt, "dataset") == 0) {
        c->dataset = arg;
    } else if (strcmp(opt, "data") == 0) {
        c->data = arg;
    } else if (strcmp(opt, "seed") == 0) {
        if (cli_parse_int(arg, 0, INT64_MAX, &c->seed))
            return cli_usage_error(cmd, "--seed wants a non-negative integer, got '%s'", arg), 2;
    } else {
        return 0;
    }
    return 1;
}

int cli_open_context(const char *cmd, const cli_common *c, elle_context **ctx)
{
    elle_backend b;
    int rc = elle_backend_from_name(c->backend, &b);
    if (rc == ELLE_OK)
        rc = elle_context_create(ctx, b, 0);
    if (rc != ELLE_OK)
        return cli_lib_error(cmd, "cannot create the compute context", rc);
    rc = elle_context_set_param(*ctx, ELLE_CONTEXT_PARAM_THREADS, (double)c->threads);
    if (rc != ELLE_OK) {
        elle_context_free(*ctx);
        *ctx = NULL;
        return cli_lib_error(cmd, "--threads", rc);
    }
    return 0;
}

int cli_open_dataset(const char *cmd, const cli_common *c, int split, elle_dataset **out)
{
    char dir[4096];
    const char *path = c->data;
    if (!path) {
        if (strcmp(c->dataset, "fashion-mnist") == 0 || strcmp(c->dataset, "mnist") == 0) {
            snprintf(dir, sizeof dir, "/usr/share/datasets/%s", c->dataset);
            path = dir;
        } else {
            return cli_usage_error(cmd, "--data DIR is required for dataset '%s'", c->dataset);
        }
    }
    int rc = elle_dataset_open(out, c->dataset, path, (elle_split)split);
    if (rc != ELLE_OK) {
        char what[4200];
        snprintf(what, sizeof what, "cannot open the %s split of %s in %s",
                 split == ELLE_SPLIT_TRAIN ? "training" : "test", c->dataset, path);
        return cli_lib_error(cmd, what, rc);
    }
    return 0;
}

int cli_create_model(const char *cmd, const cli_common *c, elle_context *ctx,
                     const elle_dataset *d, elle_model **out)
{
    elle_model_config *cfg = NULL;
    int rc = elle_model_config_create(&cfg, c->model);
    if (rc != ELLE_OK)
        return cli_lib_error(cmd, "--model", rc);
    int64_t ch, h, w;
    int code = 0;
    if (d) {
        elle_dataset_shape(d, &ch, &h, &w);
        if ((rc = elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_CHANNELS, (double)ch)) ||
            (rc = elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, (double)h)) ||
            (rc = elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, (double)w)) ||
            (rc = elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES,
                                              (double)elle_dataset_num_classes(d)))) {
            code = cli_lib_error(cmd, "the dataset's shape does not fit the model", rc);
            goto done;
        }
    }
    rc = elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, (double)c->seed);
    if (rc != ELLE_OK) {
        code = cli_lib_error(cmd, "--seed", rc);
        goto done;
    }
    for (int i = 0; i < c->n_model_params; i++) {
        char name[64];
        const char *eq = strchr(c->model_params[i], '=');
        size_t len = (size_t)(eq - c->model_params[i]);
        double v;
        elle_model_param p;
        snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1),
                 c->model_params[i]);
        if (elle_model_param_from_name(name, &p) != ELLE_OK) {
            code = cli_usage_error(cmd, "unknown model parameter '%s'", name);
            goto done;
        }
        if (cli_parse_double(eq + 1, &v)) {
            code = cli_usage_error(cmd, "--model-param %s: '%s' is not a number", name, eq + 1);
            goto done;
        }
        if ((rc = elle_model_config_set_param(cfg, p, v)) != ELLE_OK) {
            code = cli_lib_error(cmd, "--model-param", rc);
            goto done;
        }
    }
    if ((rc = elle_model_create(out, ctx, cfg)) != ELLE_OK)
        code = cli_lib_error(cmd, "cannot create the model", rc);
done:
    elle_model_config_free(cfg);
    return code;
}

int cli_parse_kv(const char *s, char *name, size_t size, double *value)
{
    const char *eq = s ? strchr(s, '=') : NULL;
    if (!eq || eq == s || (size_t)(eq - s) >= size)
        return -1;
    memcpy(name, s, (size_t)(eq - s));
    name[eq - s] = '\0';
    return cli_parse_double(eq + 1, value);
}

int cli_parse_attack(const char *s, elle_attack_kind *kind, int64_t *steps, int64_t *restarts)
{
    *steps = 10;
    *restarts = 0;
    if (strncmp(s, "pgd", 3) == 0) {
        *kind = ELLE_ATTACK_PGD;
        const char *p = s + 3;
        if (*p == '\0')
            return 0;
        char num[32];
        if (*p++ != '-')
            return -1;
        const char *dash = strchr(p, '-');
        size_t len = dash ? (size_t)(dash - p) : strlen(p);
        if (len == 0 || len >= sizeof num)
            return -1;
        memcpy(num, p, len);
        num[len] = '\0';
        if (cli_parse_int(num, 1, 100000, steps))
            return -1;
        if (dash && cli_parse_int(dash + 1, 1, 10000, restarts))
            return -1;
        return 0;
    }
    /* the single-step kinds by their library names, not pgd's bare name */
    if (elle_attack_kind_from_name(s, kind) == ELLE_OK && *kind != ELLE_ATTACK_PGD)
        return 0;
    return -1;
}

int cli_check_attack_param(const char *cmd, const char *flag, const char *kv)
{
    char name[64];
    double v, lo, hi;
    elle_attack_param p;
    if (cli_parse_kv(kv, name, sizeof name, &v))
        return cli_usage_error(cmd, "--%s wants NAME=NUMBER, got '%s'", flag, kv);
    if (elle_attack_param_from_name(name, &p) != ELLE_OK)
        return cli_usage_error(cmd, "--%s: unknown attack parameter '%s' (eps, alpha, steps, "
                                    "restarts, noise_mult, random_start, project, clamp_image, "
                                    "early_stop, seed)",
                               flag, name);
    elle_attack_param_bounds(p, &lo, &hi);
    if (v < lo || v > hi)
        return cli_usage_error(cmd, "--%s: attack parameter '%s' = %g outside [%g, %g]", flag,
                               name, v, lo, hi);
    return 0;
}

int cli_apply_attack_param(const char *cmd, const char *flag, elle_attack *a, const char *kv)
{
    char name[64];
    double v;
    elle_attack_param p;
    if (cli_parse_kv(kv, name, sizeof name, &v) || elle_attack_param_from_name(name, &p))
        return cli_usage_error(cmd, "--%s wants NAME=NUMBER, got '%s'", flag, kv);
    if (elle_attack_set_param(a, p, v) != ELLE_OK)
        return cli_usage_error(cmd, "--%s: %s", flag, elle_error_last()->message);
    return 0;
}
