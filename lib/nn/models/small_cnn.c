/*
 * small_cnn: the demo model for 28x28 grey images.
 *
 *   for i in 1..depth:  conv3x3(width * 2^(i-1), pad 1, no bias) -> BN -> ReLU -> maxpool 2
 *   flatten -> linear(hidden) -> ReLU -> linear(classes)
 *
 * Defaults (width 16, depth 2, hidden 128): 28x28x1 -> 14x14x16 -> 7x7x32 ->
 * 1568 -> 128 -> 10, the configuration measured to show catastrophic
 * overfitting with FGSM on Fashion-MNIST. State names follow a PyTorch
 * module with attributes conv<i>, bn<i>, fc1, fc2.
 */
#include <stdio.h>

#include "core/error.h"
#include "nn/models/models.h"

static void small_cnn_defaults(double *p)
{
    p[ELLE_MODEL_PARAM_IN_CHANNELS] = 1;
    p[ELLE_MODEL_PARAM_IN_HEIGHT] = 28;
    p[ELLE_MODEL_PARAM_IN_WIDTH] = 28;
    p[ELLE_MODEL_PARAM_NUM_CLASSES] = 10;
    p[ELLE_MODEL_PARAM_WIDTH] = 16;
    p[ELLE_MODEL_PARAM_DEPTH] = 2;
    p[ELLE_MODEL_PARAM_HIDDEN] = 128;
}

static int small_cnn_build(elle__net *net, const elle_model_config *cfg, int x, int *out)
{
    int64_t width = ELLE__P(cfg, ELLE_MODEL_PARAM_WIDTH);
    int64_t depth = ELLE__P(cfg, ELLE_MODEL_PARAM_DEPTH);
    float eps = (float)cfg->p[ELLE_MODEL_PARAM_BN_EPS];
    float mom = (float)cfg->p[ELLE_MODEL_PARAM_BN_MOMENTUM];
    char name[32];
    int v = x;
    for (int64_t i = 1; i <= depth; i++) {
        if (net->values[v].h < 2 || net->values[v].w < 2)
            ELLE_FAIL(ELLE_ESHAPE, "small_cnn: depth %lld too large for a %lldx%lld input",
                      (long long)depth, (long long)net->values[0].h, (long long)net->values[0].w);
        snprintf(name, sizeof name, "conv%lld", (long long)i);
        ELLE_TRY(elle__net_conv2d(net, name, v, width << (i - 1), 3, 1, 1, 0, &v));
        snprintf(name, sizeof name, "bn%lld", (long long)i);
        ELLE_TRY(elle__net_batchnorm(net, name, v, 1, eps, mom, &v));
        ELLE_TRY(elle__net_maxpool(net, v, 2, 2, 0, &v));
    }
    ELLE_TRY(elle__net_linear(net, "fc1", v, ELLE__P(cfg, ELLE_MODEL_PARAM_HIDDEN), 1, &v));
    ELLE_TRY(elle__net_relu(net, v, &v));
    ELLE_TRY(elle__net_linear(net, "fc2", v, ELLE__P(cfg, ELLE_MODEL_PARAM_NUM_CLASSES), 1, &v));
    *out = v;
    return ELLE_OK;
}

const elle__arch elle__arch_small_cnn = {"small_cnn", small_cnn_defaults, small_cnn_build};
