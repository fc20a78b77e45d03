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

/* Backward of an arbitrary objective of the last forward's logits:
 * dlogits (n, K) plain, backend memory = d objective / d logits. Otherwise
 * as elle__model_backward_dev (AutoAttack's DLR and FAB's logit-difference
 * gradients go through this). */
int elle__model_backward_logits_dev(elle_model *m, int64_t n, const float *dlogits,
                                    int param_grads, float *dx);

/* ---- the second-order primitive (GradAlign, LLR, CURE; DESIGN.md §4) -------
 *
 * For a batch x (n images) with labels y, per-sample loss coefficients coef
 * (objective O = sum_i coef_i loss_i, loss_i the cross-entropy) and an
 * input-space direction v (n images):
 *
 *   H(x, y, v) = grad_theta ( sum_i v_i . grad_{x_i} O )
 *
 * exactly as PyTorch's double backpropagation (create_graph=True) computes
 * it: ReLU's second derivative is zero, max pooling's routing and the fused
 * ReLU masks are the forward's, and in training mode the batch-norm batch
 * statistics are differentiated through (the same pass, so the same
 * statistics as the forward). It is Pearlmutter's R-operator: the forward
 * and backward carried along v (docs/second-order.md). Cost: per conv
 * layer one more convolution forward, data backward and two weight
 * backwards (PreActResNet-18, batch 128, CPU: the one-shot call with the
 * ordinary gradient took 2.0x a plain forward + backward).
 *
 * The model must be reserved for second-order use (elle__model_set_second_order):
 * activations and gradients then get a tangent each, twice the activation
 * memory. ELLE_ESTATE otherwise. */

/* Ask for (on = 1) or drop the tangent buffers. Sticky: elle_model_reserve
 * keeps honouring it; if the model is reserved already it is re-reserved at
 * the same batch (this drops the last forward). Regularizers that need H
 * call it once when they are attached. */
int elle__model_set_second_order(elle_model *m, int on);
/* 1 when the model is reserved with tangent buffers. */
int elle__model_has_second_order(const elle_model *m);

/* The tangent part alone, on the batch of the last elle__model_forward_dev
 * and elle__model_backward_dev (same n, no other forward or mode change in
 * between; that backward's coef is the objective's; its param_grads and dx
 * choices do not matter). This is the form the regularizers use, since
 * their v depends on the input gradient of the same batch (GradAlign's
 * d(1 - cos)/d g2, CURE's 2(g3 - g2)/B, LLR's residual-weighted step).
 *
 *   v      (n, C, H, W) plain, backend memory: the direction;
 *   scale  != 0, finite: the parameter gradients ACCUMULATE scale * H (the
 *          scale is applied to v, as H is linear in v);
 *   gcoef  n floats or NULL: when given, the parameter gradients also
 *          accumulate grad_theta sum_i gcoef_i loss_i, the ordinary gradient
 *          (gcoef = coef: of O itself), in the same pass at no extra cost;
 *   jvp    n floats or NULL: d loss_i(x + t v)/dt at t = 0, the directional
 *          derivative of each per-sample loss (eval mode: v_i . grad_{x_i}
 *          loss_i; in training mode the batch statistics couple samples,
 *          so it is sum_j v_j . grad_{x_j} loss_i, what autograd gives).
 *
 * Neither the running statistics nor the input gradient change.
 * ELLE_ESTATE without tangent buffers or without that forward + backward
 * (or when the backward came from elle__model_backward_logits_dev: only
 * the cross-entropy's tangent is known); ELLE_EINVAL for a NULL v or a zero
 * or non-finite scale; ELLE_EUNSUPPORTED when a layer or the backend lacks
 * a tangent op. */
int elle__model_tangent_dev(elle_model *m, int64_t n, const float *v, float scale,
                            const float *gcoef, float *jvp);

/* All in one pass over the batch, for a v known in advance: forward of x
 * (labels y, required; training mode updates the running statistics once,
 * as every train-mode forward), backward of O = sum_i coef_i loss_i
 * (input gradient only: dx_out, n images, may be NULL), then
 * elle__model_tangent_dev(m, n, v, scale, gcoef, jvp_out). The parameter
 * gradients accumulate scale * H + grad_theta sum_i gcoef_i loss_i
 * (gcoef NULL: scale * H only). Checks the second-order reservation before
 * the forward, so an ELLE_ESTATE leaves the running statistics alone. */
int elle__model_second_order_dev(elle_model *m, const float *x, const int32_t *y, int64_t n,
                                 const float *coef, const float *v, float scale,
                                 const float *gcoef, float *dx_out, float *jvp_out);

#endif /* ELLE_NN_MODEL_INTERNAL_H */
