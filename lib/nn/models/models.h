/* Architecture registry: each model file provides defaults and a builder. */
#ifndef ELLE_NN_MODELS_H
#define ELLE_NN_MODELS_H

#include "elle/model.h"
#include "nn/net.h"

#define ELLE__MODEL_NPARAMS 13 /* 1 + largest elle_model_param value */

struct elle_model_config {
    const struct elle__arch *arch;
    double p[ELLE__MODEL_NPARAMS];
    int norm_channels;
    float norm_mean[16];
    float norm_std[16];
};

typedef struct elle__arch {
    const char *name;
    /* Fill p[] with this architecture's defaults. */
    void (*defaults)(double *p);
    /* Append the layers (after an optional normalisation layer reading
     * value `x`); returns the logits value index in *out. */
    int (*build)(elle__net *net, const elle_model_config *cfg, int x, int *out);
} elle__arch;

extern const elle__arch elle__arch_small_cnn;
extern const elle__arch elle__arch_preact_resnet18;
extern const elle__arch elle__arch_wide_resnet;

/* Shorthand for integer parameters. */
#define ELLE__P(cfg, id) ((int64_t)(cfg)->p[(id)])

#endif
