/*
 * ELLE: the local, linear approximation error E_lin (Rocamora et al., ICLR
 * 2024, Definition 1 / Algorithm 1; spec/algorithms.md §2), with the
 * five-point stencil of Definition 3, ELLE-2p (x_b := x_adv) and the
 * ImageNet code's smooth-L1 error as parameters.
 *
 * One step for a batch of n images of D = C*H*W pixels:
 *
 *   1. the points are written straight into the model's input buffer, one
 *      block of n images each: [x_a; x_b; x_c] (3 points) or
 *      [x_a; x_b; x_c; x_d; x_e] (5 points). Noise u ~ U[-eps, eps] from
 *      the backend's Philox op, one fill for x_a and x_b together (as the
 *      reference draws over x tiled twice), then x_a = x + u_a and
 *      x_b = x + u_b (ELLE-2p: x_b = x_adv, and only x_a's noise is drawn);
 *      optionally clamped to [0, 1]. 3 points: alpha_i ~ U[0,1) per sample,
 *      from the next counter block (drawn on the host: the stream is the
 *      same on every backend), x_c = (1 - alpha_i) x_a + alpha_i x_b.
 *      5 points: x_c, x_d, x_e = x_a + (1/4, 1/2, 3/4)(x_b - x_a), formed as
 *      (1 - t) x_a + t x_b.
 *   2. ONE forward of the points * n samples with labels tiled (BN batch
 *      statistics over all of them, running statistics updated once),
 *      per-sample cross-entropy l_{k,i} copied to the host.
 *   3. on the host, in double: e_i = sum_k w_{k,i} l_{k,i} with
 *        3 points: w = (-(1 - alpha_i), -alpha_i, 1)            for (a, b, c)
 *        5 points: w = (-1/12, -1/12, 4/3, -5/2, 4/3)           for (a, b, c, d, e)
 *      R = (1/n) sum_i phi(e_i), and dR/dl_{k,i} = phi'(e_i) w_{k,i} / n.
 *   4. backward: ONE model backward over the points * n samples with
 *      per-sample coefficients lambda * dR/dl_{k,i}, accumulating into the
 *      parameter gradients. The points are constants (no input gradient):
 *      this is why ELLE needs no double backpropagation.
 *
 * Everything that scales with D runs as backend ops on backend memory;
 * only the points * n losses and coefficients cross to the host.
 */
#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/rng.h"
#include "nn/model_internal.h"
#include "regularizers/regularizer_internal.h"

static const elle__param_spec elle_params[] = {
    {ELLE_REGULARIZER_PARAM_LAMBDA, "lambda", 0.0, 1e12, 0, 1000.0},
    {ELLE_REGULARIZER_PARAM_EPS, "eps", 0.0, 1.0, 0, 8.0 / 255.0},
    {ELLE_REGULARIZER_PARAM_ADAPTIVE, "adaptive", 0.0, 1.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_MAX, "lambda_max", 0.0, 1e12, 0, 4000.0},
    {ELLE_REGULARIZER_PARAM_DECAY, "decay", 0.0, 1.0, 0, 0.99},
    {ELLE_REGULARIZER_PARAM_SENSITIVITY, "sensitivity", 0.0, 1e6, 0, 2.0},
    {ELLE_REGULARIZER_PARAM_WINDOW, "window", 0.0, 2147483647.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_START, "lambda_start", 0.0, 1e12, 0, 0.0},
    {ELLE_REGULARIZER_PARAM_POINTS, "points", 3.0, 5.0, 1, 3.0},
    {ELLE_REGULARIZER_PARAM_REUSE_ADV, "reuse_adv", 0.0, 1.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_ERROR, "error", 0.0, 2.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_SEED, "seed", 0.0, 9007199254740991.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_CLAMP_IMAGE, "clamp_image", 0.0, 1.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_LAG, "lambda_lag", 0.0, 1.0, 1, 1.0},
};
#define N_ELLE_PARAMS (sizeof elle_params / sizeof elle_params[0])

/* Host scratch, grown to the largest batch seen (no allocation in steady state). */
typedef struct elle_impl {
    int64_t cap;     /* samples of the forward (points * n) the arrays hold */
    float *loss;     /* (points * n) per-sample losses of the last forward */
    double *lossd;   /* the same in double, as the estimator reads them */
    double *dr;      /* (points * n) dR/dl of the last value() */
    float *coef;     /* (points * n) lambda * dR/dl, uploaded for the backward */
    float *alpha;    /* (n) */
    int64_t samples; /* points * n of the last value(); 0 before */
} elle_impl;

static int elle_check_param(const elle_regularizer *r, int param, double value)
{
    (void)r;
    if (param == ELLE_REGULARIZER_PARAM_POINTS && value != 3.0 && value != 5.0)
        ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_set_param: parameter 'points' = %g must be 3 "
                               "(Definition 1) or 5 (Definition 3)", value);
    return ELLE_OK;
}

static void elle_release(elle_regularizer *r)
{
    elle_impl *s = r->impl;
    if (!s)
        return;
    free(s->loss);
    free(s->lossd);
    free(s->dr);
    free(s->coef);
    free(s->alpha);
    free(s);
    r->impl = NULL;
}

static int64_t elle_forward_samples(const elle_regularizer *r, int64_t n)
{
    return (int64_t)r->p[ELLE_REGULARIZER_PARAM_POINTS] * n;
}

static int elle_needs_adv(const elle_regularizer *r)
{
    return r->p[ELLE_REGULARIZER_PARAM_REUSE_ADV] != 0.0;
}

static int reserve_scratch(elle_regularizer *r, int64_t samples)
{
    elle_impl *s = r->impl;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            ELLE_FAIL(ELLE_ENOMEM, "elle: out of memory");
        r->impl = s;
    }
    if (samples <= s->cap)
        return ELLE_OK;
    float *loss = malloc((size_t)samples * sizeof *loss);
    double *lossd = malloc((size_t)samples * sizeof *lossd);
    double *dr = malloc((size_t)samples * sizeof *dr);
    float *coef = malloc((size_t)samples * sizeof *coef);
    float *alpha = malloc((size_t)samples * sizeof *alpha); /* n <= samples */
    if (!loss || !lossd || !dr || !coef || !alpha) {
        free(loss);
        free(lossd);
        free(dr);
        free(coef);
        free(alpha);
        ELLE_FAIL(ELLE_ENOMEM, "elle: out of memory for %lld samples", (long long)samples);
    }
    free(s->loss);
    free(s->lossd);
    free(s->dr);
    free(s->coef);
    free(s->alpha);
    s->loss = loss;
    s->lossd = lossd;
    s->dr = dr;
    s->coef = coef;
    s->alpha = alpha;
    s->cap = samples;
    return ELLE_OK;
}

/* [p, p + bytes) and [q, q + bytes_q) overlap. */
static int overlaps(const void *p, size_t bytes, const void *q, size_t bytes_q)
{
    const char *a = p, *b = q;
    return a < b + bytes_q && b < a + bytes;
}

/* The penalty phi(e) and its derivative. */
static void penalty(int kind, double e, double *phi, double *dphi)
{
    switch (kind) {
    case ELLE_REGULARIZER_ERROR_SMOOTH_L1:
        /* torch.nn.functional.smooth_l1_loss(input, target, beta=1) on
         * e = input - target: quadratic strictly inside |e| < beta */
        if (fabs(e) < 1.0) {
            *phi = 0.5 * e * e;
            *dphi = e;
        } else {
            *phi = fabs(e) - 0.5;
            *dphi = e > 0.0 ? 1.0 : -1.0;
        }
        return;
    case ELLE_REGULARIZER_ERROR_ABS:
        *phi = fabs(e);
        *dphi = e > 0.0 ? 1.0 : e < 0.0 ? -1.0 : 0.0; /* autograd's sign(0) = 0 */
        return;
    default: /* ELLE_REGULARIZER_ERROR_SQUARED */
        *phi = e * e;
        *dphi = 2.0 * e;
        return;
    }
}

static const char *const point_names[5] = {"x_a", "x_b", "x_c", "x_d", "x_e"};

int elle__elle_points(elle_regularizer *r, const float *x, const float *x_adv, int64_t n,
                      uint64_t *counter_out)
{
    elle_model *m = r->model;
    elle__net *net = elle__model_net(m);
    elle__backend *be = net->be;
    const elle__backend_ops *ops = be->ops;
    const int pts = (int)r->p[ELLE_REGULARIZER_PARAM_POINTS];
    const int reuse = r->p[ELLE_REGULARIZER_PARAM_REUSE_ADV] != 0.0;
    const int clamp = r->p[ELLE_REGULARIZER_PARAM_CLAMP_IMAGE] != 0.0;
    const float eps = (float)r->p[ELLE_REGULARIZER_PARAM_EPS];
    const int64_t d = elle__model_image_numel(m);
    const int64_t nd = n * d;
    const int64_t samples = (int64_t)pts * n;
    const size_t img_bytes = (size_t)nd * sizeof(float);

    ELLE_TRY(reserve_scratch(r, samples));
    elle_impl *s = r->impl;
    s->samples = 0;

    float *in = elle__net_input(net, samples).data;
    size_t in_bytes = (size_t)samples * img_bytes / (size_t)n;
    /* the points overwrite the input buffer: inputs living there would be
     * clobbered before they are read */
    if (overlaps(x, img_bytes, in, in_bytes) ||
        (x_adv && overlaps(x_adv, img_bytes, in, in_bytes)))
        ELLE_FAIL(ELLE_EINVAL, "x or x_adv lies inside the model's input buffer, which the "
                               "points are written to; pass a copy");

    float *xa = in, *xb = in + nd;
    const uint64_t key = elle__regularizer_stream_key(r);
    uint64_t ctr = r->counter;

    /* 1. x_a, x_b = x + U[-eps, eps] (one fill over both, as the reference) */
    const int64_t drawn = (reuse ? 1 : 2) * nd;
    ELLE_TRY(ops->uniform(be, drawn, key, ctr, -eps, eps, xa));
    ctr += elle__rng_blocks(drawn);
    ELLE_TRY(ops->axpy(be, nd, 1.0f, x, xa));
    if (reuse)
        ELLE_TRY(ops->copy(be, xb, x_adv, img_bytes));
    else
        ELLE_TRY(ops->axpy(be, nd, 1.0f, x, xb));
    if (clamp) /* the drawn points only: x_adv is the caller's */
        ELLE_TRY(ops->clamp(be, drawn, 0.0f, 1.0f, xa));

    /* 2. the interior points */
    if (pts == 3) {
        float *xc = in + 2 * nd;
        elle__rng_uniform_range(key, ctr, 0, n, 0.0f, 1.0f, s->alpha);
        ctr += elle__rng_blocks(n);
        ELLE_TRY(ops->copy(be, xc, xa, img_bytes));
        for (int64_t i = 0; i < n; i++) {
            const float a = s->alpha[i];
            ELLE_TRY(ops->scale(be, d, 1.0f - a, xc + i * d));
            ELLE_TRY(ops->axpy(be, d, a, xb + i * d, xc + i * d));
        }
    } else {
        static const float t[3] = {0.25f, 0.5f, 0.75f};
        for (int k = 0; k < 3; k++) {
            float *dst = in + (2 + k) * nd;
            ELLE_TRY(ops->copy(be, dst, xa, img_bytes));
            ELLE_TRY(ops->scale(be, nd, 1.0f - t[k], dst));
            ELLE_TRY(ops->axpy(be, nd, t[k], xb, dst));
        }
    }
    *counter_out = ctr;
    return ELLE_OK;
}

const float *elle__elle_alpha(const elle_regularizer *r)
{
    const elle_impl *s = r->impl;
    return s ? s->alpha : NULL;
}

void elle__elle_estimate(int points, int error, const float *alpha, const double *loss,
                         int64_t n, double *value, double *dr)
{
    static const double w5[5] = {-1.0 / 12.0, -1.0 / 12.0, 4.0 / 3.0, -5.0 / 2.0, 4.0 / 3.0};
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double w[5];
        if (points == 3) {
            /* the weights x_c was formed with, rounded to float as there */
            w[0] = -(double)(1.0f - alpha[i]);
            w[1] = -(double)alpha[i];
            w[2] = 1.0;
        } else {
            for (int k = 0; k < 5; k++)
                w[k] = w5[k];
        }
        double e = 0.0;
        for (int k = 0; k < points; k++)
            e += w[k] * loss[k * n + i];
        double phi, dphi;
        penalty(error, e, &phi, &dphi);
        sum += phi;
        if (dr)
            for (int k = 0; k < points; k++)
                dr[k * n + i] = dphi * w[k] / (double)n;
    }
    *value = sum / (double)n;
}

static int elle_value(elle_regularizer *r, const float *x, const int32_t *y, const float *x_adv,
                      int64_t n, double *value)
{
    elle_model *m = r->model;
    elle__net *net = elle__model_net(m);
    elle__backend *be = net->be;
    const elle__backend_ops *ops = be->ops;
    const int pts = (int)r->p[ELLE_REGULARIZER_PARAM_POINTS];
    const int err = (int)r->p[ELLE_REGULARIZER_PARAM_ERROR];
    const int64_t samples = (int64_t)pts * n;
    int32_t *labels = net->labels;

    if (y != labels && overlaps(y, (size_t)n * sizeof(int32_t), labels,
                                (size_t)samples * sizeof(int32_t)))
        ELLE_FAIL(ELLE_EINVAL, "y overlaps the model's label buffer; pass a copy");
    uint64_t ctr;
    ELLE_TRY(elle__elle_points(r, x, x_adv, n, &ctr));
    elle_impl *s = r->impl;
    float *in = elle__net_input(net, samples).data;

    /* 3. labels tiled, one forward of all the points */
    const size_t lab_bytes = (size_t)n * sizeof(int32_t);
    if (y != labels)
        ELLE_TRY(ops->copy(be, labels, y, lab_bytes));
    for (int k = 1; k < pts; k++)
        ELLE_TRY(ops->copy(be, labels + k * n, labels, lab_bytes));
    ELLE_TRY(elle__model_forward_dev(m, in, labels, samples, net->loss));
    ELLE_TRY(ops->copy_to_host(be, s->loss, net->loss, (size_t)samples * sizeof(float)));

    /* 4. e_i, R and dR/dl on the host */
    for (int64_t j = 0; j < samples; j++) {
        if (!isfinite(s->loss[j]))
            ELLE_FAIL(ELLE_ENUMERIC, "the loss of sample %lld at %s is %g", (long long)(j % n),
                      point_names[j / n], (double)s->loss[j]);
        s->lossd[j] = (double)s->loss[j];
    }
    elle__elle_estimate(pts, err, s->alpha, s->lossd, n, value, s->dr);
    s->samples = samples;
    r->counter = ctr;
    return ELLE_OK;
}

static int elle_backward(elle_regularizer *r, double lambda)
{
    elle_impl *s = r->impl;
    ELLE_ASSERT(s != NULL && s->samples > 0);
    elle__net *net = elle__model_net(r->model);
    elle__backend *be = net->be;
    for (int64_t j = 0; j < s->samples; j++)
        s->coef[j] = (float)(lambda * s->dr[j]);
    ELLE_TRY(be->ops->copy_to_device(be, net->coef, s->coef, (size_t)s->samples * sizeof(float)));
    return elle__model_backward_dev(r->model, s->samples, net->coef, 1, NULL);
}

const elle__regularizer_ops elle__reg_elle_ops = {
    .name = "elle",
    .params = elle_params,
    .n_params = N_ELLE_PARAMS,
    .check_param = elle_check_param,
    .release = elle_release,
    .forward_samples = elle_forward_samples,
    .needs_adv = elle_needs_adv,
    .value = elle_value,
    .backward = elle_backward,
};
