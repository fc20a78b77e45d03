/*
 * The single-step attacks: FGSM, RS-FGSM (Fast AT) and N-FGSM.
 *
 *   x_start = x                                   FGSM (random_start 0)
 *           = x + U[-k eps, k eps]                RS-FGSM (k = 1), N-FGSM (k = 2)
 *   x_adv   = x_start + alpha * sign(grad_x CE_mean(f(x_start), y))
 *
 * then, as every perturbed point, projected onto B[x, eps] when PROJECT
 * (RS-FGSM) and clamped to [0, 1] when CLAMP_IMAGE. One forward and one
 * input-gradient-only backward, in the model's current mode: in training
 * mode (the reference) the forward's batch statistics update the BatchNorm
 * running averages.
 */
#include "attacks/attack_internal.h"
#include "core/error.h"
#include "nn/model_internal.h"

int elle__attack_fgsm_run(elle_attack *a, const int32_t *y, int64_t n, float *x_adv,
                          unsigned char *fooled)
{
    ELLE_TRY(elle__attack_start(a, n, x_adv));
    ELLE_TRY(elle__attack_forward(a, y, n, x_adv, 0));
    ELLE_TRY(elle__attack_ascend(a, n, (float)elle__attack_alpha(a), x_adv));
    if (!fooled)
        return ELLE_OK;
    /* evaluation: classify the point returned (one extra forward) */
    elle__backend *be = elle__model_backend(a->model);
    ELLE_TRY(be->ops->copy_to_host(be, a->h_labels, y, (size_t)n * sizeof(int32_t)));
    ELLE_TRY(elle__attack_forward(a, y, n, x_adv, 0));
    return elle__attack_misclassified(a, n, fooled);
}
