/* elle_model_config: architecture choice and construction parameters. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/params.h"
#include "nn/models/models.h"

static const elle__arch *const archs[] = {
    &elle__arch_small_cnn,
    &elle__arch_preact_resnet18,
    &elle__arch_wide_resnet,
};

/* Bounds are architecture independent; builders reject combinations that do
 * not fit (e.g. a wide_resnet depth that is not 6n+4). */
static const elle__param_spec model_params[] = {
    {ELLE_MODEL_PARAM_IN_CHANNELS, "in_channels", 1, 16, 1, 3},
    {ELLE_MODEL_PARAM_IN_HEIGHT, "in_height", 1, 4096, 1, 32},
    {ELLE_MODEL_PARAM_IN_WIDTH, "in_width", 1, 4096, 1, 32},
    {ELLE_MODEL_PARAM_NUM_CLASSES, "num_classes", 2, 100000, 1, 10},
    {ELLE_MODEL_PARAM_WIDTH, "width", 1, 4096, 1, 16},
    {ELLE_MODEL_PARAM_DEPTH, "depth", 1, 1000, 1, 2},
    {ELLE_MODEL_PARAM_HIDDEN, "hidden", 1, 1 << 20, 1, 128},
    {ELLE_MODEL_PARAM_SHORTCUT_RAW_X, "shortcut_raw_x", 0, 1, 1, 0},
    {ELLE_MODEL_PARAM_NORMALIZE, "normalize", 0, 1, 1, 0},
    {ELLE_MODEL_PARAM_SEED, "seed", 0, 9007199254740991.0, 1, 0},
    {ELLE_MODEL_PARAM_BN_MOMENTUM, "bn_momentum", 0, 1, 0, 0.1},
    {ELLE_MODEL_PARAM_BN_EPS, "bn_eps", 1e-12, 1, 0, 1e-5},
};
#define N_MODEL_PARAMS (sizeof model_params / sizeof model_params[0])

int elle_model_config_create(elle_model_config **out, const char *arch)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(arch != NULL);
    const elle__arch *a = NULL;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strcmp(archs[i]->name, arch) == 0)
            a = archs[i];
    if (!a)
        ELLE_FAIL(ELLE_EINVAL,
                  "elle_model_config_create: unknown architecture '%s' (small_cnn, "
                  "preact_resnet18, wide_resnet)",
                  arch);
    elle_model_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        ELLE_FAIL(ELLE_ENOMEM, "elle_model_config_create: out of memory");
    cfg->arch = a;
    for (size_t i = 0; i < N_MODEL_PARAMS; i++)
        cfg->p[model_params[i].id] = model_params[i].default_value;
    a->defaults(cfg->p);
    *out = cfg;
    return ELLE_OK;
}

void elle_model_config_free(elle_model_config *cfg)
{
    free(cfg);
}

int elle_model_config_set_param(elle_model_config *cfg, elle_model_param param, double value)
{
    ELLE_CHECK_ARG(cfg != NULL);
    ELLE_TRY(elle__param_check(model_params, N_MODEL_PARAMS, (int)param, value,
                               "elle_model_config_set_param"));
    if (param == ELLE_MODEL_PARAM_NORMALIZE && value != 0 && cfg->norm_channels == 0)
        ELLE_FAIL(ELLE_EINVAL, "elle_model_config_set_param: set the normalisation constants "
                               "with elle_model_config_set_normalization");
    cfg->p[param] = value;
    return ELLE_OK;
}

int elle_model_config_get_param(const elle_model_config *cfg, elle_model_param param, double *out)
{
    ELLE_CHECK_ARG(cfg != NULL);
    ELLE_CHECK_ARG(out != NULL);
    if (!elle__param_find(model_params, N_MODEL_PARAMS, (int)param))
        ELLE_FAIL(ELLE_EINVAL, "elle_model_config_get_param: unknown parameter %d", (int)param);
    *out = cfg->p[param];
    return ELLE_OK;
}

int elle_model_param_bounds(elle_model_param param, double *lo, double *hi)
{
    ELLE_CHECK_ARG(lo != NULL);
    ELLE_CHECK_ARG(hi != NULL);
    const elle__param_spec *s = elle__param_find(model_params, N_MODEL_PARAMS, (int)param);
    if (!s)
        ELLE_FAIL(ELLE_EINVAL, "elle_model_param_bounds: unknown parameter %d", (int)param);
    *lo = s->lo;
    *hi = s->hi;
    return ELLE_OK;
}

int elle_model_param_from_name(const char *name, elle_model_param *out)
{
    int id = 0;
    ELLE_CHECK_ARG(out != NULL);
    ELLE_TRY(elle__param_lookup(model_params, N_MODEL_PARAMS, name, &id,
                                "elle_model_param_from_name"));
    *out = (elle_model_param)id;
    return ELLE_OK;
}

const char *elle_model_param_name(elle_model_param param)
{
    const elle__param_spec *s = elle__param_find(model_params, N_MODEL_PARAMS, (int)param);
    return s ? s->name : NULL;
}

int elle_model_config_set_normalization(elle_model_config *cfg, const float *mean,
                                        const float *std, int channels)
{
    ELLE_CHECK_ARG(cfg != NULL);
    ELLE_CHECK_ARG(mean != NULL);
    ELLE_CHECK_ARG(std != NULL);
    if (channels < 1 || channels > 16)
        ELLE_FAIL(ELLE_EINVAL, "elle_model_config_set_normalization: channels = %d outside [1, 16]",
                  channels);
    for (int i = 0; i < channels; i++) {
        if (!isfinite(mean[i]) || !(std[i] > 0.0f) || !isfinite(std[i]))
            ELLE_FAIL(ELLE_EINVAL,
                      "elle_model_config_set_normalization: channel %d has mean %g, std %g "
                      "(need finite mean and std > 0)",
                      i, (double)mean[i], (double)std[i]);
    }
    for (int i = 0; i < channels; i++) {
        cfg->norm_mean[i] = mean[i];
        cfg->norm_std[i] = std[i];
    }
    cfg->norm_channels = channels;
    cfg->p[ELLE_MODEL_PARAM_NORMALIZE] = 1;
    return ELLE_OK;
}
