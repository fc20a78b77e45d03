/*
 * elle bench: step times of a model on this machine through the public API
 * (make bench runs the fuller build/bench/elle-bench, which also times the
 * individual convolution primitives against the FMA peak).
 *
 *   elle bench [--model preact_resnet18] [--batch 128] [--iters 5] [--threads N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cmd_bench(int argc, char **argv)
{
    static const char *const flags[] = {"help", NULL};
    const char *cmd = "bench";
    cli_common c;
    int64_t batch = 128, iters = 5, size = 32, channels = 3;
    args a;
    int r;
    cli_common_init(&c);
    c.model = "preact_resnet18";
    args_init(&a, cmd, argc, argv, flags);
    while ((r = args_next(&a)) == 1) {
        int k = cli_common_option(cmd, &c, a.name, a.value ? a.value : "");
        if (k == 2)
            return 2;
        if (k == 1)
            continue;
        if (strcmp(a.name, "help") == 0) {
            printf("usage: elle bench [options]\n\n"
                   "  --batch N             batch size (default 128)\n"
                   "  --iters N             timed iterations after one warm-up (default 5)\n"
                   "  --size N              input height and width (default 32)\n"
                   "  --channels N          input channels (default 3)\n%s",
                   cli_common_help);
            return 0;
        } else if (strcmp(a.name, "batch") == 0) {
            if (cli_parse_int(a.value, 1, 1 << 16, &batch))
                return cli_usage_error(cmd, "--batch wants an integer in [1, 65536]");
        } else if (strcmp(a.name, "iters") == 0) {
            if (cli_parse_int(a.value, 1, 100000, &iters))
                return cli_usage_error(cmd, "--iters wants a positive integer");
        } else if (strcmp(a.name, "size") == 0) {
            if (cli_parse_int(a.value, 1, 4096, &size))
                return cli_usage_error(cmd, "--size wants a positive integer");
        } else if (strcmp(a.name, "channels") == 0) {
            if (cli_parse_int(a.value, 1, 16, &channels))
                return cli_usage_error(cmd, "--channels wants an integer in [1, 16]");
        } else {
            return cli_usage_error(cmd, "unknown option --%s", a.name);
        }
    }
    if (r)
        return r;

    elle_context *ctx = NULL;
    elle_model *m = NULL;
    int code = cli_open_context(cmd, &c, &ctx);
    if (code)
        return code;
    /* shape the model through --model-param defaults plus the bench input size */
    char p1[64], p2[64], p3[64];
    snprintf(p1, sizeof p1, "in_channels=%lld", (long long)channels);
    snprintf(p2, sizeof p2, "in_height=%lld", (long long)size);
    snprintf(p3, sizeof p3, "in_width=%lld", (long long)size);
    const char *extra[3] = {p1, p2, p3};
    for (int i = 0; i < 3 && c.n_model_params < CLI_MAX_MODEL_PARAMS; i++) {
        /* user-given values come later and win */
        memmove(&c.model_params[1], &c.model_params[0], (size_t)c.n_model_params * sizeof(char *));
        c.model_params[0] = extra[i];
        c.n_model_params++;
    }
    code = cli_create_model(cmd, &c, ctx, NULL, &m);
    if (code) {
        elle_context_free(ctx);
        return code;
    }
    int64_t k = elle_model_num_classes(m), numel = batch * channels * size * size;
    float *x = malloc((size_t)numel * sizeof *x), *dx = malloc((size_t)numel * sizeof *dx);
    float *z = malloc((size_t)(batch * k) * sizeof *z);
    int32_t *y = malloc((size_t)batch * sizeof *y);
    double *t = malloc((size_t)iters * sizeof *t);
    const char *names[3] = {"forward", "forward+backward", "input gradient"};
    double med[3];
    int rc = elle_model_reserve(m, batch);
    for (int64_t i = 0; x && i < numel; i++)
        x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
    for (int64_t i = 0; y && i < batch; i++)
        y[i] = (int32_t)(i % k);
    for (int what = 0; rc == ELLE_OK && what < 3; what++) {
        for (int64_t it = -1; rc == ELLE_OK && it < iters; it++) {
            double t0 = now_ms();
            if (what == 0)
                rc = elle_model_forward(m, x, batch, z);
            else if (what == 1)
                rc = elle_model_backward(m, x, y, batch, NULL, NULL);
            else
                rc = elle_model_input_grad(m, x, y, batch, dx, NULL);
            if (it >= 0)
                t[it] = now_ms() - t0;
        }
        qsort(t, (size_t)iters, sizeof *t, cmp_double);
        med[what] = t[iters / 2];
    }
    if (rc != ELLE_OK) {
        code = cli_lib_error(cmd, "benchmark step", rc);
    } else {
        printf("%s, batch %lld, %lldx%lldx%lld, backend %s, %lld params\n", c.model,
               (long long)batch, (long long)channels, (long long)size, (long long)size, c.backend,
               (long long)elle_model_num_params(m));
        for (int i = 0; i < 3; i++)
            printf("  %-18s %9.2f ms (median of %lld)\n", names[i], med[i], (long long)iters);
    }
    free(x);
    free(dx);
    free(z);
    free(y);
    free(t);
    elle_model_free(m);
    elle_context_free(ctx);
    return code;
}
