/*
 * PreActResNet-18 as in the ELLE code (spec: algorithms.md §6,
 * reference-implementations.md §3.1), PyTorch default initialisation.
 *
 *   conv1: conv3x3(3 -> w), no BN/ReLU after the stem
 *   layer1..4: two PreActBlocks each, planes w, 2w, 4w, 8w, strides 1, 2, 2, 2
 *   PreActBlock(x): a = ReLU(BN1(x))
 *                   shortcut = conv1x1(a, stride) if the shape changes, else x
 *                              (conv1x1(x) with shortcut_raw_x, as the FA/NF/GA repos)
 *                   out = conv3x3(ReLU(BN2(conv3x3(a, stride)))) + shortcut
 *   head: ReLU(BN) -> average pool over the whole map -> linear (bias)
 *
 * The reference pools with F.avg_pool2d(out, 4), which for 32x32 inputs is
 * the whole 4x4 map; pooling the whole map keeps other input sizes working.
 * Layers are created in PyTorch's registration order (bn1, conv1, bn2,
 * conv2, shortcut) so the state entries come out in state_dict order.
 */
#include <stdio.h>

#include "core/error.h"
#include "nn/models/models.h"

static void prn18_defaults(double *p)
{
    p[ELLE_MODEL_PARAM_IN_CHANNELS] = 3;
    p[ELLE_MODEL_PARAM_IN_HEIGHT] = 32;
    p[ELLE_MODEL_PARAM_IN_WIDTH] = 32;
    p[ELLE_MODEL_PARAM_NUM_CLASSES] = 10;
    p[ELLE_MODEL_PARAM_WIDTH] = 64;
    p[ELLE_MODEL_PARAM_DEPTH] = 18;
}

static int preact_block(elle__net *net, const char *prefix, int x, int64_t planes, int64_t stride,
                        int raw_x, float eps, float mom, int *out)
{
    char name[64];
    int a, h, o, sc;
    int64_t in = net->values[x].c;
    snprintf(name, sizeof name, "%s.bn1", prefix);
    ELLE_TRY(elle__net_batchnorm(net, name, x, 1, eps, mom, &a));
    snprintf(name, sizeof name, "%s.conv1", prefix);
    ELLE_TRY(elle__net_conv2d(net, name, a, planes, 3, stride, 1, 0, &h));
    snprintf(name, sizeof name, "%s.bn2", prefix);
    ELLE_TRY(elle__net_batchnorm(net, name, h, 1, eps, mom, &h));
    snprintf(name, sizeof name, "%s.conv2", prefix);
    ELLE_TRY(elle__net_conv2d(net, name, h, planes, 3, 1, 1, 0, &o));
    if (stride != 1 || in != planes) {
        snprintf(name, sizeof name, "%s.shortcut.0", prefix);
        ELLE_TRY(elle__net_conv2d(net, name, raw_x ? x : a, planes, 1, stride, 0, 0, &sc));
    } else {
        sc = x;
    }
    return elle__net_add(net, o, sc, out);
}

static int prn18_build(elle__net *net, const elle_model_config *cfg, int x, int *out)
{
    int64_t width = ELLE__P(cfg, ELLE_MODEL_PARAM_WIDTH);
    int raw_x = ELLE__P(cfg, ELLE_MODEL_PARAM_SHORTCUT_RAW_X) != 0;
    float eps = (float)cfg->p[ELLE_MODEL_PARAM_BN_EPS];
    float mom = (float)cfg->p[ELLE_MODEL_PARAM_BN_MOMENTUM];
    if (ELLE__P(cfg, ELLE_MODEL_PARAM_DEPTH) != 18)
        ELLE_FAIL(ELLE_EINVAL, "preact_resnet18: depth must be 18, got %lld",
                  (long long)ELLE__P(cfg, ELLE_MODEL_PARAM_DEPTH));
    int v;
    ELLE_TRY(elle__net_conv2d(net, "conv1", x, width, 3, 1, 1, 0, &v));
    for (int s = 0; s < 4; s++) {
        for (int b = 0; b < 2; b++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "layer%d.%d", s + 1, b);
            int64_t stride = (b == 0 && s > 0) ? 2 : 1;
            ELLE_TRY(preact_block(net, prefix, v, width << s, stride, raw_x, eps, mom, &v));
        }
    }
    ELLE_TRY(elle__net_batchnorm(net, "bn", v, 1, eps, mom, &v));
    ELLE_TRY(elle__net_global_avgpool(net, v, &v));
    ELLE_TRY(elle__net_linear(net, "linear", v, ELLE__P(cfg, ELLE_MODEL_PARAM_NUM_CLASSES), 1, &v));
    *out = v;
    return ELLE_OK;
}

const elle__arch elle__arch_preact_resnet18 = {"preact_resnet18", prn18_defaults, prn18_build};
