/*
 * CURE (Moosavi-Dezfooli et al., CVPR 2019) as the ELLE repo implements it
 * (spec/algorithms.md §2, spec/reference-implementations.md §2.7): the
 * change of the input gradient between x and the training attack's point,
 *
 *   g2 = grad_x CE_mean(f(x))         (a constant: not differentiated)
 *   g3 = grad_x CE_mean(f(x_adv))     (x_adv: the caller's, e.g. the FGSM point)
 *   R  = (1/B) sum_i ||g2_i - g3_i||^2
 *
 * With CE_mean each gradient carries a 1/B factor, so R is
 * (1/B^2) mean_i ||grad l_i(x_adv) - grad l_i(x)||^2 — the reference's scale,
 * which its lambda values are tuned for. per_sample = 1 takes the gradients
 * of the summed loss instead (grad l_i; R = mean_i ||.||^2). The finite
 * difference step is the attack's own (eps sign(g) for FGSM), not CURE's
 * normalised h sign(g) / ||sign(g)||.
 *
 * Only g3 is differentiated: v = dR/dg3 = (2/B)(g3 - g2), and
 * grad_theta R = H(x_adv, y, v) from the tangent pass on the forward and
 * backward that produced g3. Per step: one forward and input-gradient
 * backward at x, one at x_adv, one tangent sweep (the reference: the same
 * forward/backward at x and a create_graph=True double backpropagation at
 * x_adv).
 */
#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "nn/model_internal.h"
#include "regularizers/regularizer_internal.h"

static const elle__param_spec cure_params[] = {
    {ELLE_REGULARIZER_PARAM_LAMBDA, "lambda", 0.0, 1e12, 0, 1000.0},
    {ELLE_REGULARIZER_PARAM_EPS, "eps", 0.0, 1.0, 0, 8.0 / 255.0},
    {ELLE_REGULARIZER_PARAM_ADAPTIVE, "adaptive", 0.0, 1.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_MAX, "lambda_max", 0.0, 1e12, 0, 1000.0},
    {ELLE_REGULARIZER_PARAM_DECAY, "decay", 0.0, 1.0, 0, 0.99},
    {ELLE_REGULARIZER_PARAM_SENSITIVITY, "sensitivity", 0.0, 1e6, 0, 2.0},
    {ELLE_REGULARIZER_PARAM_WINDOW, "window", 0.0, 2147483647.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_START, "lambda_start", 0.0, 1e12, 0, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_LAG, "lambda_lag", 0.0, 1.0, 1, 1.0},
    {ELLE_REGULARIZER_PARAM_PER_SAMPLE, "per_sample", 0.0, 1.0, 1, 0.0},
};
#define N_CURE_PARAMS (sizeof cure_params / sizeof cure_params[0])

typedef struct cure_impl {
    elle__reg_buf g2, g3; /* backend: (n, C, H, W) */
    elle__reg_buf h;      /* host copy of g3 - g2 */
    int64_t n;            /* batch of the last value(); 0 before */
    float coef;           /* the loss coefficient of the gradients (1/n or 1) */
} cure_impl;

static void cure_release(elle_regularizer *r)
{
    cure_impl *s = r->impl;
    if (!s)
        return;
    elle__reg_buf_release(r, &s->g2);
    elle__reg_buf_release(r, &s->g3);
    elle__reg_buf_release(r, &s->h);
    free(s);
    r->impl = NULL;
}

static int64_t cure_forward_samples(const elle_regularizer *r, int64_t n)
{
    (void)r;
    return n;
}

static int cure_needs_adv(const elle_regularizer *r)
{
    (void)r;
    return 1;
}

static int cure_value(elle_regularizer *r, const float *x, const int32_t *y, const float *x_adv,
                      int64_t n, double *value)
{
    elle_model *m = r->model;
    elle__backend *be = elle__model_backend(m);
    const int64_t d = elle__model_image_numel(m), nd = n * d;
    cure_impl *s = r->impl;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            ELLE_FAIL(ELLE_ENOMEM, "cure: out of memory");
        s->g2.dev = s->g3.dev = 1;
        r->impl = s;
    }
    s->n = 0;
    ELLE_TRY(elle__reg_buf_grow(r, &s->g2, (size_t)nd * sizeof(float)));
    ELLE_TRY(elle__reg_buf_grow(r, &s->g3, (size_t)nd * sizeof(float)));
    s->coef = r->p[ELLE_REGULARIZER_PARAM_PER_SAMPLE] != 0.0 ? 1.0f : 1.0f / (float)n;
    float *g2 = s->g2.p, *g3 = s->g3.p;

    ELLE_TRY(elle__reg_input_grad(r, x, y, n, s->coef, g2, NULL));
    /* last: the tangent of backward() reuses this forward and backward */
    ELLE_TRY(elle__reg_input_grad(r, x_adv, y, n, s->coef, g3, NULL));

    /* g2 <- g3 - g2 (g2 itself is not needed again) */
    ELLE_TRY(be->ops->scale(be, nd, -1.0f, g2));
    ELLE_TRY(be->ops->axpy(be, nd, 1.0f, g3, g2));
    ELLE_TRY(elle__reg_host_copy(r, &s->h, g2, nd));
    const float *h = s->h.p;
    double sum = 0.0;
    for (int64_t j = 0; j < nd; j++)
        sum += (double)h[j] * h[j];
    *value = sum / (double)n;
    s->n = n;
    return ELLE_OK;
}

static int cure_backward(elle_regularizer *r, double lambda)
{
    cure_impl *s = r->impl;
    ELLE_ASSERT(s != NULL && s->n > 0);
    const int64_t n = s->n;
    /* v = dR/dg3 = (2/B)(g3 - g2); lambda and 2/B go in as the scale */
    float scale = (float)(lambda * 2.0 / (double)n);
    s->n = 0;
    if (scale == 0.0f)
        return ELLE_OK; /* lambda below float range: nothing to add */
    return elle__model_tangent_dev(r->model, n, s->g2.p, scale, NULL, NULL);
}

const elle__regularizer_ops elle__reg_cure_ops = {
    .name = "cure",
    .params = cure_params,
    .n_params = N_CURE_PARAMS,
    .release = cure_release,
    .attach = elle__reg_attach_second_order,
    .forward_samples = cure_forward_samples,
    .needs_adv = cure_needs_adv,
    .value = cure_value,
    .backward = cure_backward,
};
