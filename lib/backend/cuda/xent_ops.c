/*
 * The CUDA backend's softmax cross-entropy and its tangent: argument checks
 * in the CPU backend's rules and words, then one kernel queued on the
 * context's stream (xent_kernels.cu). Nothing here allocates or waits.
 *
 * Unlike the CPU and reference backends, the labels are not range-checked
 * here: they are device memory, which the host does not read (that would
 * synchronise every step). The API boundary checks them; a bad label that
 * still got through turns its row's outputs into NaN (xent_kernels.h).
 */
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/xent_kernels.h"
#include "core/error.h"

static int check_logits(const char *op, const elle__tensor *logits)
{
    ELLE_TRY(elle__cuda_check_tensor(op, "logits", logits));
    if (logits->h != 1 || logits->w != 1)
        ELLE_FAIL(ELLE_ESHAPE, "cuda %s: logits are %s, expected (n, classes, 1, 1)", op,
                  elle__cuda_shape(logits).s);
    return ELLE_OK;
}

int elle__cuda_xent_fwd(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                        float *loss)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = "xent_fwd";
    ELLE_TRY(check_logits(op, logits));
    ELLE_TRY(elle__cuda_check_ptr(op, "labels", labels));
    ELLE_TRY(elle__cuda_check_ptr(op, "loss", loss));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_xent_fwd(elle__cuda(be)->stream, logits->n, logits->c,
                                                logits->data, labels, loss));
    return ELLE_OK;
}

int elle__cuda_xent_bwd(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                        const float *coef, elle__tensor *dlogits)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = "xent_bwd";
    ELLE_TRY(check_logits(op, logits));
    ELLE_TRY(elle__cuda_check_ptr(op, "labels", labels));
    ELLE_TRY(elle__cuda_check_ptr(op, "coef", coef));
    ELLE_TRY(elle__cuda_check_same_shape(op, "logits", logits, "dlogits", dlogits));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_xent_bwd(elle__cuda(be)->stream, logits->n, logits->c,
                                                logits->data, labels, coef, dlogits->data));
    return ELLE_OK;
}

int elle__cuda_xent_tangent(elle__backend *be, const elle__tensor *logits,
                            const int32_t *labels, const float *coef, const float *gcoef,
                            const elle__tensor *logits_t, elle__tensor *dlogits_t,
                            float *loss_t)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = "xent_tangent";
    ELLE_TRY(check_logits(op, logits));
    ELLE_TRY(elle__cuda_check_same_shape(op, "logits", logits, "logits_t", logits_t));
    ELLE_TRY(elle__cuda_check_same_shape(op, "logits", logits, "dlogits_t", dlogits_t));
    ELLE_TRY(elle__cuda_check_ptr(op, "labels", labels));
    ELLE_TRY(elle__cuda_check_ptr(op, "coef", coef));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_xent_tangent(elle__cuda(be)->stream, logits->n, logits->c,
                                                    logits->data, labels, coef, gcoef,
                                                    logits_t->data, dlogits_t->data, loss_t));
    return ELLE_OK;
}
