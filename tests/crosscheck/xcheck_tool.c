/*
 * Helper for the PyTorch cross-check (torch_models.py): runs a libelle model
 * on a batch given as raw float32 and writes raw float32 logits.
 *
 *   xcheck_tool export ARCH PARAMS SEED OUT.safetensors IN.bin N LOGITS_EVAL.bin LOGITS_TRAIN.bin
 *       create ARCH (PARAMS: "name=value,..." or "-") with SEED, save its state,
 *       write eval-mode logits, then train-mode logits (one batch-statistics
 *       forward), then, in training mode with labels i % classes, the input
 *       gradient of the mean cross-entropy to LOGITS_TRAIN.bin.dx and every
 *       parameter gradient, concatenated in state order, to LOGITS_TRAIN.bin.grads
 *   xcheck_tool import ARCH PARAMS IN.safetensors IN.bin N LOGITS_EVAL.bin LOGITS_TRAIN.bin
 *       load the state written by PyTorch, same outputs
 *
 * Backend: cpu, or the one named by the environment variable
 * ELLE_XCHECK_BACKEND. Links only the public API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elle.h"

static int die(const char *what)
{
    fprintf(stderr, "xcheck_tool: %s: %s\n", what, elle_error_last()->message);
    return 1;
}

static int apply_params(elle_model_config *cfg, const char *spec)
{
    if (strcmp(spec, "-") == 0)
        return 0;
    char *copy = strdup(spec), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return free(copy), -1;
        *eq = '\0';
        elle_model_param p;
        if (elle_model_param_from_name(tok, &p) || elle_model_config_set_param(cfg, p, atof(eq + 1)))
            return free(copy), -1;
    }
    free(copy);
    return 0;
}

static int write_file(const char *path, const void *data, size_t bytes)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes)
        return -1;
    return fclose(f);
}

int main(int argc, char **argv)
{
    int export = argc > 1 && strcmp(argv[1], "export") == 0;
    int import = argc > 1 && strcmp(argv[1], "import") == 0;
    if (!((export && argc == 10) || (import && argc == 9))) {
        fprintf(stderr, "usage: xcheck_tool export|import ARCH PARAMS SEED|IN.safetensors "
                        "[OUT.safetensors] ...\n");
        return 2;
    }
    const char *arch = argv[2], *params = argv[3];
    const char *st = export ? argv[5] : argv[4];
    const char *in_path = export ? argv[6] : argv[5];
    long n = atol(export ? argv[7] : argv[6]);
    const char *eval_path = export ? argv[8] : argv[7];
    const char *train_path = export ? argv[9] : argv[8];
    elle_context *ctx;
    elle_model_config *cfg;
    elle_model *m;
    elle_backend kind = ELLE_BACKEND_CPU; /* ELLE_XCHECK_BACKEND=reference to check the other */
    const char *bk = getenv("ELLE_XCHECK_BACKEND");
    if (bk && elle_backend_from_name(bk, &kind))
        return die("ELLE_XCHECK_BACKEND");
    if (elle_context_create(&ctx, kind, 0))
        return die("context");
    if (elle_model_config_create(&cfg, arch) || apply_params(cfg, params))
        return die("config");
    if (export && elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, atof(argv[4])))
        return die("seed");
    if (elle_model_create(&m, ctx, cfg) || elle_model_reserve(m, n))
        return die("model");
    int64_t c, h, w;
    elle_model_input_shape(m, &c, &h, &w);
    size_t count = (size_t)(n * c * h * w);
    float *x = malloc(count * sizeof *x);
    FILE *f = fopen(in_path, "rb");
    if (!f || fread(x, sizeof *x, count, f) != count) {
        fprintf(stderr, "xcheck_tool: cannot read %zu floats from %s\n", count, in_path);
        return 1;
    }
    fclose(f);
    if (export) {
        if (elle_model_save(m, st))
            return die("save");
    } else if (elle_model_load(m, st)) {
        return die("load");
    }
    int64_t k = elle_model_num_classes(m);
    float *z = malloc((size_t)(n * k) * sizeof *z);
    if (elle_model_set_training(m, 0) || elle_model_forward(m, x, n, z))
        return die("eval forward");
    if (write_file(eval_path, z, (size_t)(n * k) * sizeof *z))
        return 1;
    if (elle_model_set_training(m, 1) || elle_model_forward(m, x, n, z))
        return die("train forward");
    if (write_file(train_path, z, (size_t)(n * k) * sizeof *z))
        return 1;
    if (export) {
        int32_t *y = malloc((size_t)n * sizeof *y);
        float *dx = malloc(count * sizeof *dx);
        for (long i = 0; i < n; i++)
            y[i] = (int32_t)(i % k);
        if (elle_model_zero_grad(m) || elle_model_backward(m, x, y, n, NULL, dx))
            return die("backward");
        char path[4096];
        snprintf(path, sizeof path, "%s.dx", train_path);
        if (write_file(path, dx, count * sizeof *dx))
            return 1;
        snprintf(path, sizeof path, "%s.grads", train_path);
        FILE *g = fopen(path, "wb");
        for (int64_t i = 0; g && i < elle_model_state_count(m); i++) {
            elle_state_kind sk;
            int64_t d[4];
            elle_model_state_info(m, i, NULL, &sk, NULL, d);
            if (sk != ELLE_STATE_PARAMETER)
                continue;
            size_t numel = (size_t)(d[0] * d[1] * d[2] * d[3]);
            float *buf = malloc(numel * sizeof *buf);
            if (elle_model_grad_get(m, i, buf) || fwrite(buf, sizeof *buf, numel, g) != numel)
                return die("grads");
            free(buf);
        }
        if (!g || fclose(g))
            return 1;
        free(y);
        free(dx);
    }
    free(x);
    free(z);
    elle_model_free(m);
    elle_model_config_free(cfg);
    elle_context_free(ctx);
    return 0;
}
