/*
 * WideResNet-depth-k as in the ELLE code (reference-implementations.md §3.2):
 *
 *   conv1: conv3x3(3 -> 16)
 *   block1..3: n = (depth - 4) / 6 BasicBlocks, widths 16k, 32k, 64k, strides 1, 2, 2
 *   BasicBlock(x): if in != out: x = ReLU(BN1(x)); out = conv path(x) + convShortcut(x)
 *                  else:         out = conv path(ReLU(BN1(x))) + x
 *                  conv path: conv3x3(stride) -> ReLU(BN2) -> conv3x3
 *   head: ReLU(BN) -> average pool over the whole map -> fc
 *
 * Init as the reference: conv weights N(0, sqrt(2 / (k*k*out_channels))),
 * BN gamma 1 beta 0, fc bias 0 (fc weight PyTorch default). No conv biases.
 * Names: conv1, block<g>.layer.<i>.{bn1,conv1,bn2,conv2,convShortcut}, bn1, fc.
 */
#include <math.h>
#include <stdio.h>

#include "core/error.h"
#include "nn/models/models.h"

static void wrn_defaults(double *p)
{
    p[ELLE_MODEL_PARAM_IN_CHANNELS] = 3;
    p[ELLE_MODEL_PARAM_IN_HEIGHT] = 32;
    p[ELLE_MODEL_PARAM_IN_WIDTH] = 32;
    p[ELLE_MODEL_PARAM_NUM_CLASSES] = 10;
    p[ELLE_MODEL_PARAM_WIDTH] = 10;
    p[ELLE_MODEL_PARAM_DEPTH] = 28;
}

/* Conv with the WRN initialisation N(0, sqrt(2 / (k*k*oc))). */
static int wrn_conv(elle__net *net, const char *name, int x, int64_t oc, int64_t k, int64_t stride,
                    int64_t pad, int *out)
{
    ELLE_TRY(elle__net_conv2d(net, name, x, oc, k, stride, pad, 0, out));
    elle__state *w = &net->states[net->n_states - 1];
    w->init = ELLE__INIT_NORMAL;
    w->init_scale = sqrtf(2.0f / (float)(k * k * oc));
    return ELLE_OK;
}

static int basic_block(elle__net *net, const char *prefix, int x, int64_t out_planes,
                       int64_t stride, float eps, float mom, int *out)
{
    char name[64];
    int a, h, o, sc = -1;
    int equal = net->values[x].c == out_planes;
    snprintf(name, sizeof name, "%s.bn1", prefix);
    ELLE_TRY(elle__net_batchnorm(net, name, x, 1, eps, mom, &a));
    snprintf(name, sizeof name, "%s.conv1", prefix);
    ELLE_TRY(wrn_conv(net, name, a, out_planes, 3, stride, 1, &h));
    snprintf(name, sizeof name, "%s.bn2", prefix);
    ELLE_TRY(elle__net_batchnorm(net, name, h, 1, eps, mom, &h));
    snprintf(name, sizeof name, "%s.conv2", prefix);
    ELLE_TRY(wrn_conv(net, name, h, out_planes, 3, 1, 1, &o));
    if (!equal) {
        snprintf(name, sizeof name, "%s.convShortcut", prefix);
        ELLE_TRY(wrn_conv(net, name, a, out_planes, 1, stride, 0, &sc));
    } else {
        if (stride != 1)
            ELLE_FAIL(ELLE_EINVAL, "wide_resnet: identity block with stride %lld",
                      (long long)stride);
        sc = x;
    }
    return elle__net_add(net, sc, o, out);
}

static int wrn_build(elle__net *net, const elle_model_config *cfg, int x, int *out)
{
    int64_t depth = ELLE__P(cfg, ELLE_MODEL_PARAM_DEPTH);
    int64_t k = ELLE__P(cfg, ELLE_MODEL_PARAM_WIDTH);
    float eps = (float)cfg->p[ELLE_MODEL_PARAM_BN_EPS];
    float mom = (float)cfg->p[ELLE_MODEL_PARAM_BN_MOMENTUM];
    if (depth < 10 || (depth - 4) % 6 != 0)
        ELLE_FAIL(ELLE_EINVAL, "wide_resnet: depth must be 6n+4 with n >= 1, got %lld",
                  (long long)depth);
    int64_t n = (depth - 4) / 6;
    int64_t widths[3] = {16 * k, 32 * k, 64 * k};
    int v;
    ELLE_TRY(wrn_conv(net, "conv1", x, 16, 3, 1, 1, &v));
    for (int g = 0; g < 3; g++) {
        for (int64_t i = 0; i < n; i++) {
            char prefix[48];
            snprintf(prefix, sizeof prefix, "block%d.layer.%lld", g + 1, (long long)i);
            int64_t stride = (i == 0 && g > 0) ? 2 : 1;
            ELLE_TRY(basic_block(net, prefix, v, widths[g], stride, eps, mom, &v));
        }
    }
    ELLE_TRY(elle__net_batchnorm(net, "bn1", v, 1, eps, mom, &v));
    ELLE_TRY(elle__net_global_avgpool(net, v, &v));
    ELLE_TRY(elle__net_linear(net, "fc", v, ELLE__P(cfg, ELLE_MODEL_PARAM_NUM_CLASSES), 1, &v));
    net->states[net->n_states - 1].init = ELLE__INIT_ZEROS; /* fc.bias */
    *out = v;
    return ELLE_OK;
}

const elle__arch elle__arch_wide_resnet = {"wide_resnet", wrn_defaults, wrn_build};
