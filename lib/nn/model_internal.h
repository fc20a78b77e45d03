/*
 * Internal access to a model's network, for library modules that work on the
 * parameter and gradient arenas directly (the optimisers in lib/train: one
 * flat update over net->params.base / net->grads.base, net->param_bytes).
 * Never exported; code outside lib/ uses include/elle/model.h.
 */
#ifndef ELLE_NN_MODEL_INTERNAL_H
#define ELLE_NN_MODEL_INTERNAL_H

#include "elle/model.h"
#include "nn/net.h"

/* The network behind `m` (borrowed, lives as long as the model). m != NULL. */
elle__net *elle__model_net(elle_model *m);

/* ---- device-resident steps (attacks, regularizers, trainer internals) -------
 *
 * The public elle_model_* functions take host arrays. Attacks and
 * regularizers keep their batches in backend memory (device memory on CUDA)
 * and drive the model through these, so an attack step copies nothing
 * across the API boundary. Every pointer below is backend memory; images
 * are plain NCHW (n, C, H, W), labels int32, per-sample vectors n floats.
 * n must be in [1, max_batch] (ELLE_ESTATE before reserve, ELLE_ESHAPE
 * beyond it). Inputs are not validated for NaN here: the caller's data
 * already passed the public boundary. */

/* The backend the model computes on. */
elle__backend *elle__model_backend(elle_model *m);
/* Reserved batch size (0 before elle_model_reserve). */
int64_t elle__model_max_batch(const elle_model *m);
/* C*H*W of one input image. */
int64_t elle__model_image_numel(const elle_model *m);

/* Forward of n images x (copied into the input buffer) with labels y,
 * writing per-sample cross-entropy to loss (n floats, may be NULL). In
 * training mode batch-norm statistics update, as every train-mode forward. */
int elle__model_forward_dev(elle_model *m, const float *x, const int32_t *y, int64_t n,
                            float *loss);
/* Logits of the last forward: (n, K) plain, backend memory, valid until the
 * next forward. */
const float *elle__model_logits_dev(elle_model *m);
/* Backward of the objective sum_i coef[i] * loss_i of the last forward
 * (coef: n floats, backend memory; 1/n everywhere is the batch mean).
 * Accumulates parameter gradients when param_grads; writes the input
 * gradient to dx (n images) when dx != NULL. param_grads == 0 with dx is the
 * input-gradient-only backward attacks use. */
int elle__model_backward_dev(elle_model *m, int64_t n, const float *coef, int param_grads,
                             float *dx);

#endif /* ELLE_NN_MODEL_INTERNAL_H */
