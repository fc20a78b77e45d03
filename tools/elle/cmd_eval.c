/*
 * elle eval: accuracy of a saved model on a dataset split.
 *
 *   elle eval --model small_cnn --weights out/model.safetensors [--dataset ...]
 *
 * Reports clean accuracy as correct/total over all evaluated samples (the
 * reference code averages per-batch accuracies; see docs/cli.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "cli.h"

static void help(void)
{
    printf("usage: elle eval --weights FILE [options]\n"
           "\n"
           "Evaluates a model saved by 'elle train' (safetensors, PyTorch names) in eval mode.\n"
           "\n"
           "  --weights FILE        model state to load (required)\n"
           "  --split NAME          test (default) or train\n"
           "  --n N                 evaluate the first N samples only (default: all)\n"
           "  --batch N             evaluation batch size (default 256)\n"
           "%s",
           cli_common_help);
}

int cmd_eval(int argc, char **argv)
{
    static const char *const flags[] = {"help", NULL};
    const char *cmd = "eval";
    cli_common c;
    const char *weights = NULL;
    int64_t n_max = 0, batch = 256;
    elle_split split = ELLE_SPLIT_TEST;
    args a;
    int r;
    cli_common_init(&c);
    args_init(&a, cmd, argc, argv, flags);
    while ((r = args_next(&a)) == 1) {
        int k = cli_common_option(cmd, &c, a.name, a.value ? a.value : "");
        if (k == 2)
            return 2;
        if (k == 1)
            continue;
        if (strcmp(a.name, "help") == 0) {
            help();
            return 0;
        } else if (strcmp(a.name, "weights") == 0) {
            weights = a.value;
        } else if (strcmp(a.name, "split") == 0) {
            if (elle_split_from_name(a.value, &split))
                return cli_usage_error(cmd, "--split wants train or test, got '%s'", a.value);
        } else if (strcmp(a.name, "n") == 0) {
            if (cli_parse_int(a.value, 1, INT64_MAX, &n_max))
                return cli_usage_error(cmd, "--n wants a positive integer, got '%s'", a.value);
        } else if (strcmp(a.name, "batch") == 0) {
            if (cli_parse_int(a.value, 1, 1 << 20, &batch))
                return cli_usage_error(cmd, "--batch wants an integer in [1, 2^20], got '%s'",
                                       a.value);
        } else {
            return cli_usage_error(cmd, "unknown option --%s", a.name);
        }
    }
    if (r)
        return r;
    if (!weights)
        return cli_usage_error(cmd, "--weights FILE is required");

    elle_context *ctx = NULL;
    elle_dataset *d = NULL;
    elle_model *m = NULL;
    float *x = NULL, *z = NULL;
    int32_t *y = NULL;
    int code = cli_open_context(cmd, &c, &ctx);
    if (!code)
        code = cli_open_dataset(cmd, &c, split, &d);
    if (!code)
        code = cli_create_model(cmd, &c, ctx, d, &m);
    if (code)
        goto done;
    int rc = elle_model_load(m, weights);
    if (rc == ELLE_OK)
        rc = elle_model_reserve(m, batch);
    if (rc == ELLE_OK)
        rc = elle_model_set_training(m, 0);
    if (rc != ELLE_OK) {
        code = cli_lib_error(cmd, weights, rc);
        goto done;
    }
    int64_t ch, h, w, k = elle_model_num_classes(m);
    elle_dataset_shape(d, &ch, &h, &w);
    int64_t total = elle_dataset_size(d);
    if (n_max && n_max < total)
        total = n_max;
    x = malloc((size_t)(batch * ch * h * w) * sizeof *x);
    z = malloc((size_t)(batch * k) * sizeof *z);
    y = malloc((size_t)batch * sizeof *y);
    if (!x || !z || !y) {
        fprintf(stderr, "elle eval: out of memory\n");
        code = 1;
        goto done;
    }
    int64_t correct = 0;
    for (int64_t start = 0; start < total; start += batch) {
        int64_t nb = total - start < batch ? total - start : batch;
        for (int64_t i = 0; i < nb; i++) {
            rc = elle_dataset_get(d, start + i, x + i * ch * h * w, &y[i]);
            if (rc != ELLE_OK) {
                code = cli_lib_error(cmd, "reading the dataset", rc);
                goto done;
            }
        }
        if ((rc = elle_model_forward(m, x, nb, z)) != ELLE_OK) {
            code = cli_lib_error(cmd, "forward", rc);
            goto done;
        }
        for (int64_t i = 0; i < nb; i++) {
            int64_t best = 0;
            for (int64_t j = 1; j < k; j++)
                if (z[i * k + j] > z[i * k + best])
                    best = j;
            correct += best == y[i];
        }
    }
    printf("%s %s, %s split: clean accuracy %lld/%lld = %.2f%%\n", c.model, weights,
           elle_split_name(split), (long long)correct, (long long)total,
           100.0 * (double)correct / (double)total);
done:
    free(x);
    free(z);
    free(y);
    elle_model_free(m);
    elle_dataset_free(d);
    elle_context_free(ctx);
    return code;
}
