/*
 * GAT, guided adversarial training (Sriramanan et al., NeurIPS 2020; the
 * ELLE repo's Trainer.GAT_loss, spec/reference-implementations.md §2.8):
 * the output-distance term
 *
 *   P = softmax(f(x)),  Q = softmax(f(x_adv))          (both differentiated)
 *   R = (1/B) sum_i sum_k (P_ik - Q_ik)^2
 *
 * at the caller's x_adv (the training attack's points), with lambda the
 * weight of the term (the reference: 10). The total GAT objective is
 * CE_mean(f(x_adv)) + 10 R, which is what the trainer composes: the training
 * loss at the attack's points plus this regularizer; GAT + ELLE adds an ELLE
 * regularizer next to it. The guided attack itself (x + eps s, s = +-1,
 * one sign step on CE_mean + 10 R, projected and clamped) is an attack:
 * ELLE_ATTACK_GAT, lib/attacks/gat_attack.c (docs/regularizers.md: what
 * differs from the reference).
 *
 * Unlike the input-gradient kinds this needs no tangent pass, but two
 * forwards whose gradients both reach the parameters: dR/dQ = -(2/B)(P - Q)
 * on the x_adv forward and dR/dP = +(2/B)(P - Q) on the x forward, each
 * through the softmax Jacobian (dz = p * (dp - <dp, p>)) and one backward
 * from those logit gradients. The model keeps only its last forward, so
 * backward() repeats the x forward with the running statistics saved and
 * restored (exact: same batch, same parameters): per step F(x_adv) + F(x)
 * + B(x) + F(x_adv) + B(x_adv).
 */
#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "nn/model_internal.h"
#include "regularizers/regularizer_internal.h"

static const elle__param_spec gat_params[] = {
    {ELLE_REGULARIZER_PARAM_LAMBDA, "lambda", 0.0, 1e12, 0, 10.0},
    {ELLE_REGULARIZER_PARAM_EPS, "eps", 0.0, 1.0, 0, 8.0 / 255.0},
    {ELLE_REGULARIZER_PARAM_ADAPTIVE, "adaptive", 0.0, 1.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_MAX, "lambda_max", 0.0, 1e12, 0, 10.0},
    {ELLE_REGULARIZER_PARAM_DECAY, "decay", 0.0, 1.0, 0, 0.99},
    {ELLE_REGULARIZER_PARAM_SENSITIVITY, "sensitivity", 0.0, 1e6, 0, 2.0},
    {ELLE_REGULARIZER_PARAM_WINDOW, "window", 0.0, 2147483647.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_START, "lambda_start", 0.0, 1e12, 0, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_LAG, "lambda_lag", 0.0, 1.0, 1, 1.0},
};
#define N_GAT_PARAMS (sizeof gat_params / sizeof gat_params[0])

typedef struct gat_impl {
    elle__reg_buf prob;   /* host: 2 n K doubles, P then Q */
    elle__reg_buf logits; /* host: n K floats */
    elle__reg_buf dl;     /* host: n K floats, a logit gradient */
    elle__reg_buf dl_dev; /* backend: the same */
    elle__reg_stats stats;
    const float *x;       /* the clean batch of the last value() (backend) */
    const int32_t *y;
    int64_t n;            /* batch of the last value(); 0 before */
} gat_impl;

static void gat_release(elle_regularizer *r)
{
    gat_impl *s = r->impl;
    if (!s)
        return;
    elle__reg_buf_release(r, &s->prob);
    elle__reg_buf_release(r, &s->logits);
    elle__reg_buf_release(r, &s->dl);
    elle__reg_buf_release(r, &s->dl_dev);
    elle__reg_stats_release(r, &s->stats);
    free(s);
    r->impl = NULL;
}

static int64_t gat_forward_samples(const elle_regularizer *r, int64_t n)
{
    (void)r;
    return n;
}

static int gat_needs_adv(const elle_regularizer *r)
{
    (void)r;
    return 1;
}

/* Forward of n images and the softmax of their logits into p (n K doubles). */
static int softmax_of(elle_regularizer *r, gat_impl *s, const float *x, const int32_t *y,
                      int64_t n, int64_t k, double *p)
{
    elle_model *m = r->model;
    elle__backend *be = elle__model_backend(m);
    ELLE_TRY(elle__model_forward_dev(m, x, y, n, NULL));
    float *z = s->logits.p;
    ELLE_TRY(be->ops->copy_to_host(be, z, elle__model_logits_dev(m),
                                   (size_t)(n * k) * sizeof(float)));
    for (int64_t i = 0; i < n; i++) {
        const float *zi = z + i * k;
        double mx = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < k; j++)
            mx = zi[j] > mx ? zi[j] : mx;
        if (!isfinite(mx))
            ELLE_FAIL(ELLE_ENUMERIC, "the logits of sample %lld are not finite", (long long)i);
        for (int64_t j = 0; j < k; j++)
            sum += p[i * k + j] = exp((double)zi[j] - mx);
        for (int64_t j = 0; j < k; j++)
            p[i * k + j] /= sum;
    }
    return ELLE_OK;
}

static int gat_value(elle_regularizer *r, const float *x, const int32_t *y, const float *x_adv,
                     int64_t n, double *value)
{
    elle_model *m = r->model;
    const int64_t k = elle_model_num_classes(m);
    gat_impl *s = r->impl;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            ELLE_FAIL(ELLE_ENOMEM, "gat: out of memory");
        s->dl_dev.dev = 1;
        r->impl = s;
    }
    s->n = 0;
    ELLE_TRY(elle__reg_buf_grow(r, &s->prob, (size_t)(2 * n * k) * sizeof(double)));
    ELLE_TRY(elle__reg_buf_grow(r, &s->logits, (size_t)(n * k) * sizeof(float)));
    ELLE_TRY(elle__reg_buf_grow(r, &s->dl, (size_t)(n * k) * sizeof(float)));
    ELLE_TRY(elle__reg_buf_grow(r, &s->dl_dev, (size_t)(n * k) * sizeof(float)));
    double *p = s->prob.p, *q = p + n * k;
    ELLE_TRY(softmax_of(r, s, x, y, n, k, p));
    /* last: backward() starts from this forward */
    ELLE_TRY(softmax_of(r, s, x_adv, y, n, k, q));
    double sum = 0.0;
    for (int64_t j = 0; j < n * k; j++)
        sum += (p[j] - q[j]) * (p[j] - q[j]);
    *value = sum / (double)n;
    s->x = x;
    s->y = y;
    s->n = n;
    return ELLE_OK;
}

/* dl = lambda * J_softmax(p)^T (sign * (2/n)(P - Q)) for every sample, uploaded. */
static int logit_grad(elle_regularizer *r, gat_impl *s, const double *p, double sign,
                      double lambda, int64_t n, int64_t k)
{
    const double *P = s->prob.p, *Q = P + n * k;
    float *dl = s->dl.p;
    for (int64_t i = 0; i < n; i++) {
        const double *pi = p + i * k;
        double dot = 0.0;
        for (int64_t j = 0; j < k; j++)
            dot += sign * 2.0 / (double)n * (P[i * k + j] - Q[i * k + j]) * pi[j];
        for (int64_t j = 0; j < k; j++) {
            double dp = sign * 2.0 / (double)n * (P[i * k + j] - Q[i * k + j]);
            dl[i * k + j] = (float)(lambda * pi[j] * (dp - dot));
        }
    }
    elle__backend *be = elle__model_backend(r->model);
    return be->ops->copy_to_device(be, s->dl_dev.p, dl, (size_t)(n * k) * sizeof(float));
}

static int gat_backward(elle_regularizer *r, double lambda)
{
    gat_impl *s = r->impl;
    ELLE_ASSERT(s != NULL && s->n > 0);
    elle_model *m = r->model;
    const int64_t n = s->n, k = elle_model_num_classes(m);
    const double *P = s->prob.p, *Q = P + n * k;
    s->n = 0;

    /* through Q, on the x_adv forward (the model's last) */
    ELLE_TRY(logit_grad(r, s, Q, -1.0, lambda, n, k));
    ELLE_TRY(elle__model_backward_logits_dev(m, n, s->dl_dev.p, 1, NULL));

    /* through P: the x forward again, the running statistics kept */
    ELLE_TRY(logit_grad(r, s, P, 1.0, lambda, n, k));
    ELLE_TRY(elle__reg_stats_save(r, &s->stats));
    int rc = elle__model_forward_dev(m, s->x, s->y, n, NULL);
    if (rc >= 0)
        rc = elle__model_backward_logits_dev(m, n, s->dl_dev.p, 1, NULL);
    int rc2 = elle__reg_stats_restore(r, &s->stats);
    return rc < 0 ? rc : rc2;
}

const elle__regularizer_ops elle__reg_gat_ops = {
    .name = "gat",
    .params = gat_params,
    .n_params = N_GAT_PARAMS,
    .release = gat_release,
    .forward_samples = gat_forward_samples,
    .needs_adv = gat_needs_adv,
    .value = gat_value,
    .backward = gat_backward,
};
