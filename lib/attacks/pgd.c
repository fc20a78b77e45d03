/*
 * Projected gradient descent in the L-inf ball: the training attack PGD-k
 * and the evaluation attack PGD-K-R.
 *
 * Each restart r = 1..R:
 *   x_0     = x + U[-k eps, k eps]      (random_start; k = noise_mult = 1)
 *   x_{t+1} = P(x_t + alpha * sign(grad_x CE_mean(f(x_t), y))),  t < K
 * with P the projection onto B[x, eps] (and onto [0, 1] with clamp_image),
 * applied to x_0 as to every iterate.
 *
 * Selection (R > 1): after each restart one more forward gives the
 * per-sample loss at x_K; per sample the restart with the highest loss is
 * kept, ties going to the later restart (the reference's `>=`).
 *
 * early_stop: every iterate's forward also classifies it. The first iterate
 * that misclassifies a sample is kept for that sample whatever later
 * restarts find, and the sample stops: its coefficient in the objective
 * becomes 0, so in eval mode its gradient is exactly zero and sign(0) = 0
 * leaves it in place. (In training mode batch norm couples the samples and
 * a stopped sample may still move, but the kept iterate is what is
 * returned.) When every sample has stopped the attack ends.
 *
 * R = 1 without early_stop or tracking is the training PGD-k: exactly K
 * forwards and K input-gradient backwards, nothing more, so a train-mode
 * attack updates the BatchNorm running statistics K times, as the
 * reference.
 */
#include <string.h>

#include "attacks/attack_internal.h"
#include "core/error.h"
#include "nn/model_internal.h"

int elle__attack_pgd_run(elle_attack *a, const int32_t *y, int64_t n, float *x_adv,
                         unsigned char *fooled)
{
    elle__backend *be = elle__model_backend(a->model);
    const int64_t restarts = (int64_t)a->p[ELLE_ATTACK_PARAM_RESTARTS];
    const int64_t steps = (int64_t)a->p[ELLE_ATTACK_PARAM_STEPS];
    const int early = a->p[ELLE_ATTACK_PARAM_EARLY_STOP] != 0;
    const int check = early || fooled != NULL; /* classify points */
    const int keep = restarts > 1 || early;    /* per-sample kept points in a->best */
    const float alpha = (float)elle__attack_alpha(a);
    unsigned char *found = a->h_fooled; /* a checked point misclassified the sample */
    unsigned char *mis = a->h_mask;     /* this point misclassifies; then: rows to keep */
    int64_t n_found = 0;

    if (check) {
        ELLE_TRY(be->ops->copy_to_host(be, a->h_labels, y, (size_t)n * sizeof(int32_t)));
        memset(found, 0, (size_t)n);
    }
    if (early)
        for (int64_t i = 0; i < n; i++)
            a->h_coef[i] = 1.0f / (float)n;

    float *cur = x_adv;
    for (int64_t r = 0; r < restarts && n_found < n; r++) {
        ELLE_TRY(elle__attack_start(a, n, cur));
        for (int64_t t = 0; t < steps && n_found < n; t++) {
            ELLE_TRY(elle__attack_forward(a, y, n, cur, 0));
            if (early) {
                ELLE_TRY(elle__attack_misclassified(a, n, mis));
                int64_t newly = 0;
                for (int64_t i = 0; i < n; i++) {
                    mis[i] = mis[i] && !found[i];
                    if (mis[i]) {
                        found[i] = 1;
                        a->h_coef[i] = 0.0f;
                        newly++;
                    }
                }
                if (newly) {
                    ELLE_TRY(elle__attack_copy_rows(a, n, mis, a->best, cur));
                    ELLE_TRY(be->ops->copy_to_device(be, a->coef, a->h_coef,
                                                     (size_t)n * sizeof(float)));
                    n_found += newly;
                    if (n_found == n)
                        break; /* every sample stopped: its kept iterate is final */
                }
            }
            ELLE_TRY(elle__attack_ascend(a, n, alpha, cur));
        }
        if (n_found == n || !(keep || check))
            continue;

        /* the restart's final point: its loss (selection) and class (tracking) */
        ELLE_TRY(elle__attack_forward(a, y, n, cur, keep));
        if (check)
            ELLE_TRY(elle__attack_misclassified(a, n, mis));
        else
            memset(mis, 0, (size_t)n);
        if (keep)
            ELLE_TRY(be->ops->copy_to_host(be, a->h_loss, a->loss, (size_t)n * sizeof(float)));
        int coef_changed = 0;
        for (int64_t i = 0; i < n; i++) {
            const int misclassified = mis[i];
            if (early && found[i]) {
                mis[i] = 0; /* a stopped sample keeps its first misclassifying iterate */
                continue;
            }
            if (misclassified && !found[i]) {
                found[i] = 1;
                if (early) {
                    /* the final iterate is this sample's first misclassifying one */
                    a->h_coef[i] = 0.0f;
                    coef_changed = 1;
                    n_found++;
                    mis[i] = 1;
                    continue;
                }
            }
            if (keep) {
                mis[i] = r == 0 || a->h_loss[i] >= a->h_best_loss[i];
                if (mis[i])
                    a->h_best_loss[i] = a->h_loss[i];
            }
        }
        if (keep)
            ELLE_TRY(elle__attack_copy_rows(a, n, mis, a->best, cur));
        if (coef_changed && r + 1 < restarts)
            ELLE_TRY(be->ops->copy_to_device(be, a->coef, a->h_coef, (size_t)n * sizeof(float)));
    }

    if (keep)
        ELLE_TRY(be->ops->copy(be, x_adv, a->best, (size_t)(n * a->numel) * sizeof(float)));
    if (fooled)
        for (int64_t i = 0; i < n; i++)
            fooled[i] |= found[i];
    return ELLE_OK;
}
