/*
 * libelle — adversarial training without catastrophic overfitting.
 *
 * Umbrella header: includes every public module header.
 *
 *     elle_context *ctx;
 *     elle_model_config *cfg;
 *     elle_model *model;
 *     elle_context_create(&ctx, ELLE_BACKEND_CPU, 0);
 *     elle_model_config_create(&cfg, "small_cnn");
 *     elle_model_create(&model, ctx, cfg);
 *     elle_model_reserve(model, 128);
 *     elle_model_forward(model, images, 128, logits);      (128, 1, 28, 28) -> (128, 10)
 *     elle_model_free(model);
 *     elle_model_config_free(cfg);
 *     elle_context_free(ctx);
 *
 * Every call returns ELLE_OK or a negative status; elle_error_last() says why.
 */
#ifndef ELLE_H
#define ELLE_H

#include "elle/common.h"
#include "elle/version.h"
#include "elle/error.h"
#include "elle/context.h"
#include "elle/model.h"
#include "elle/dataset.h"
#include "elle/attack.h"
#include "elle/optim.h"
#include "elle/regularizer.h"
#include "elle/train.h"

#endif /* ELLE_H */
