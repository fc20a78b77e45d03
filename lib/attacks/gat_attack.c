/*
 * GAT's guided attack (Sriramanan et al., NeurIPS 2020), the training
 * attack of guided adversarial training, in its clean form
 * (spec/reference-implementations.md §2.8, docs/attacks.md):
 *
 *   P     = softmax(f(x))                                 a constant here
 *   x_0   = C(x + k eps s),  s = +-1 per element, P(+1) = 1/2   (random_start)
 *   J(z)  = CE_mean(f(z), y) + w (1/n) sum_i ||P_i - softmax(f(z))_i||^2
 *   x_adv = C(x_0 + alpha sign(grad_z J(x_0)))
 *
 * with k = noise_mult (1), w = gat_weight (10), alpha = eps by default, and
 * C the projection onto B[x, eps] (project) then the clamp to [0, 1]
 * (clamp_image), as every perturbed point. The reference does not project
 * (its point may reach 2 eps from x) and its cost.backward() also fills the
 * parameter gradients, which leak into the training step; here the
 * backward is input-gradient-only.
 *
 * Cost: two forwards (x, x_0) and one backward. The logits are (n, K),
 * small, so P, the softmax at x_0 and d J / d logits are computed on the
 * host in double and the backward starts from those logit gradients
 * (elle__model_backward_logits_dev). In training mode both forwards update
 * the BatchNorm running statistics, as the reference's.
 */
#include <math.h>

#include "attacks/attack_internal.h"
#include "core/error.h"
#include "core/rng.h"
#include "nn/model_internal.h"

/* Logits of the model's last forward into a->h_logits, and their softmax
 * into p (n rows of k). */
static int softmax_rows(elle_attack *a, int64_t n, double *p)
{
    elle__backend *be = elle__model_backend(a->model);
    const int64_t k = a->classes;
    float *z = a->h_logits;
    ELLE_TRY(be->ops->copy_to_host(be, z, elle__model_logits_dev(a->model),
                                   (size_t)(n * k) * sizeof(float)));
    for (int64_t i = 0; i < n; i++) {
        const float *zi = z + i * k;
        double *pi = p + i * k;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < k; j++) {
            if (!isfinite(zi[j]))
                ELLE_FAIL(ELLE_ENUMERIC, "gat attack: logit %lld of sample %lld is %g",
                          (long long)j, (long long)i, (double)zi[j]);
            mx = zi[j] > mx ? zi[j] : mx;
        }
        for (int64_t j = 0; j < k; j++)
            sum += pi[j] = exp((double)zi[j] - mx);
        for (int64_t j = 0; j < k; j++)
            pi[j] /= sum;
    }
    return ELLE_OK;
}

int elle__attack_gat_clean(elle_attack *a, const int32_t *y, int64_t n)
{
    elle__backend *be = elle__model_backend(a->model);
    /* the cross-entropy's gradient is formed on the host: it needs the labels */
    ELLE_TRY(be->ops->copy_to_host(be, a->h_labels, y, (size_t)n * sizeof(int32_t)));
    ELLE_TRY(elle__model_forward_dev(a->model, a->x0, y, n, NULL));
    return softmax_rows(a, n, a->h_prob);
}

int elle__attack_gat_cost(elle_attack *a, const int32_t *y, int64_t n, const float *cur,
                          double *cost)
{
    elle__backend *be = elle__model_backend(a->model);
    const int64_t k = a->classes;
    const double w = a->p[ELLE_ATTACK_PARAM_GAT_WEIGHT];
    const double *P = a->h_prob;
    double *Q = a->h_prob + n * k;
    double ce = 0.0, dist = 0.0;
    ELLE_TRY(elle__model_forward_dev(a->model, cur, y, n, NULL));
    ELLE_TRY(softmax_rows(a, n, Q));
    /* d J / d z row by row, into h_logits (row i is read before written):
     *   CE part    (Q_i - onehot(y_i)) / n
     *   distance   J_softmax(Q_i)^T d_i = Q_i * (d_i - <d_i, Q_i>),
     *              d_i = d J / d Q_i = -(2 w / n) (P_i - Q_i)  */
    float *dl = a->h_logits;
    for (int64_t i = 0; i < n; i++) {
        const double *pi = P + i * k, *qi = Q + i * k;
        const int32_t yi = a->h_labels[i];
        const float *zi = a->h_logits + i * k;
        double dot = 0.0, mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < k; j++) {
            dot += -2.0 * w / (double)n * (pi[j] - qi[j]) * qi[j];
            dist += (pi[j] - qi[j]) * (pi[j] - qi[j]);
            mx = zi[j] > mx ? zi[j] : mx;
        }
        for (int64_t j = 0; j < k; j++)
            sum += exp((double)zi[j] - mx);
        ce += mx + log(sum) - (double)zi[yi];
        for (int64_t j = 0; j < k; j++) {
            const double d = -2.0 * w / (double)n * (pi[j] - qi[j]);
            dl[i * k + j] = (float)((qi[j] - (j == yi ? 1.0 : 0.0)) / (double)n +
                                    qi[j] * (d - dot));
        }
    }
    if (cost)
        *cost = ce / (double)n + w * dist / (double)n;
    ELLE_TRY(be->ops->copy_to_device(be, a->dlogits, dl, (size_t)(n * k) * sizeof(float)));
    /* input gradient only: the parameter gradients are not touched */
    return elle__model_backward_logits_dev(a->model, n, a->dlogits, 0, a->grad);
}

/* cur := x0 + k eps s, s = +-1 per element, then constrained. */
static int gat_start(elle_attack *a, int64_t n, float *cur)
{
    elle__backend *be = elle__model_backend(a->model);
    const int64_t count = n * a->numel;
    if (cur != a->x0)
        ELLE_TRY(be->ops->copy(be, cur, a->x0, (size_t)count * sizeof(float)));
    if (a->p[ELLE_ATTACK_PARAM_RANDOM_START] == 0)
        return ELLE_OK;
    const float r = (float)(a->p[ELLE_ATTACK_PARAM_NOISE_MULT] * a->p[ELLE_ATTACK_PARAM_EPS]);
    /* s = sign(v), v = -1 + 2u, u on the 2^-24 grid: v = 0 exactly when
     * u = 1/2, which sign maps to 0; sign(sign(v) + 1/2) sends it to +1, so
     * s = +1 exactly when u >= 1/2: a fair coin, never 0. a->grad and
     * a->best are free until the step. */
    ELLE_TRY(be->ops->uniform(be, count, (uint64_t)a->p[ELLE_ATTACK_PARAM_SEED], a->counter,
                              -1.0f, 1.0f, a->grad));
    a->counter += elle__rng_blocks(count);
    ELLE_TRY(be->ops->sign(be, count, a->grad, a->grad));
    ELLE_TRY(be->ops->fill(be, count, 0.5f, a->best));
    ELLE_TRY(be->ops->axpy(be, count, 1.0f, a->grad, a->best));
    ELLE_TRY(be->ops->sign(be, count, a->best, a->best));
    ELLE_TRY(be->ops->axpy(be, count, r, a->best, cur));
    return elle__attack_constrain(a, n, cur);
}

int elle__attack_gat_run(elle_attack *a, const int32_t *y, int64_t n, float *x_adv,
                         unsigned char *fooled)
{
    elle__backend *be = elle__model_backend(a->model);
    const int64_t count = n * a->numel;
    ELLE_TRY(elle__attack_gat_clean(a, y, n));
    ELLE_TRY(gat_start(a, n, x_adv));
    ELLE_TRY(elle__attack_gat_cost(a, y, n, x_adv, NULL));
    ELLE_TRY(be->ops->sign(be, count, a->grad, a->grad));
    ELLE_TRY(be->ops->axpy(be, count, (float)elle__attack_alpha(a), a->grad, x_adv));
    ELLE_TRY(elle__attack_constrain(a, n, x_adv));
    if (!fooled)
        return ELLE_OK;
    /* evaluation: classify the point returned (one extra forward) */
    ELLE_TRY(elle__attack_forward(a, y, n, x_adv, 0));
    return elle__attack_misclassified(a, n, fooled);
}
