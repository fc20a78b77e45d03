/*
 * GradAlign (Andriushchenko & Flammarion, NeurIPS 2020; spec/algorithms.md
 * §2, spec/reference-implementations.md §2.5): the misalignment of the
 * input gradients at x and at a random point of the eps-ball,
 *
 *   g1 = grad_x CE_mean(f(x))                    (a constant: not differentiated)
 *   g2 = grad_x CE_mean(f(x + eta)),  eta ~ U[-eps, eps] per element (not clamped)
 *   R  = (1/B) sum_i (1 - cos(g1_i, g2_i))
 *
 * variant 0 (default, the ELLE repo's Trainer.loss): g1 is recomputed at x by
 * its own forward and backward, and cos = <g1, g2> / max(||g1|| ||g2||, 1e-8)
 * — the formula of PyTorch's F.cosine_similarity(eps = 1e-8) as documented
 * up to 1.11 (later releases clamp each norm separately; the two agree
 * whenever both norms exceed 1e-8, i.e. for any gradient that is not exactly
 * zero in float). variant 1 (the original train.py): g1 at clamp(x, 0, 1)
 * (the FGSM gradient of their zero-init FGSM, recomputed here because the
 * trainer's attack hands over only its points), samples where either
 * gradient is exactly zero are dropped, cos without a floor, and
 * R = 1 - mean over the kept samples (0 when none is kept).
 *
 * Only g2 is differentiated: with c_i = cos_i and d_i the denominator,
 *
 *   dR/dg2_i = -(1/B) (g1_i / d_i - [d_i > floor] c_i g2_i / ||g2_i||^2) =: v_i
 *   grad_theta R = H(x + eta, y, v)     (model_internal.h: the tangent pass)
 *
 * and v depends on g2, so the tangent runs on the forward and backward at
 * x + eta that produced g2 (elle__model_tangent_dev): per step one forward
 * and input-gradient backward at x, one at x + eta, and one tangent sweep —
 * the same work as PyTorch's create_graph=True double backpropagation.
 */
#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/rng.h"
#include "nn/model_internal.h"
#include "regularizers/regularizer_internal.h"

static const elle__param_spec ga_params[] = {
    {ELLE_REGULARIZER_PARAM_LAMBDA, "lambda", 0.0, 1e12, 0, 0.2},
    {ELLE_REGULARIZER_PARAM_EPS, "eps", 0.0, 1.0, 0, 8.0 / 255.0},
    {ELLE_REGULARIZER_PARAM_ADAPTIVE, "adaptive", 0.0, 1.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_MAX, "lambda_max", 0.0, 1e12, 0, 0.2},
    {ELLE_REGULARIZER_PARAM_DECAY, "decay", 0.0, 1.0, 0, 0.99},
    {ELLE_REGULARIZER_PARAM_SENSITIVITY, "sensitivity", 0.0, 1e6, 0, 2.0},
    {ELLE_REGULARIZER_PARAM_WINDOW, "window", 0.0, 2147483647.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_START, "lambda_start", 0.0, 1e12, 0, 0.0},
    {ELLE_REGULARIZER_PARAM_SEED, "seed", 0.0, 9007199254740991.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_CLAMP_IMAGE, "clamp_image", 0.0, 1.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_LAG, "lambda_lag", 0.0, 1.0, 1, 1.0},
    {ELLE_REGULARIZER_PARAM_VARIANT, "variant", 0.0, 1.0, 1, 0.0},
};
#define N_GA_PARAMS (sizeof ga_params / sizeof ga_params[0])

/* PyTorch's cosine_similarity eps */
#define COS_FLOOR 1e-8

typedef struct ga_impl {
    elle__reg_buf g1, g2; /* backend: (n, C, H, W) input gradients at x and x + eta */
    elle__reg_buf h1, h2; /* host copies for the per-sample reductions */
    elle__reg_buf coef;   /* host: 2n doubles, v_i = coef[i] g1_i + coef[n + i] g2_i */
    int64_t n;            /* batch of the last value(); 0 before */
    int any;              /* some v_i is non-zero */
} ga_impl;

static void ga_release(elle_regularizer *r)
{
    ga_impl *s = r->impl;
    if (!s)
        return;
    elle__reg_buf_release(r, &s->g1);
    elle__reg_buf_release(r, &s->g2);
    elle__reg_buf_release(r, &s->h1);
    elle__reg_buf_release(r, &s->h2);
    elle__reg_buf_release(r, &s->coef);
    free(s);
    r->impl = NULL;
}

static int64_t ga_forward_samples(const elle_regularizer *r, int64_t n)
{
    (void)r;
    return n;
}

static int ga_needs_adv(const elle_regularizer *r)
{
    (void)r;
    return 0;
}

static int ga_scratch(elle_regularizer *r, int64_t n, int64_t d)
{
    ga_impl *s = r->impl;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            ELLE_FAIL(ELLE_ENOMEM, "gradalign: out of memory");
        s->g1.dev = s->g2.dev = 1;
        r->impl = s;
    }
    size_t img = (size_t)(n * d) * sizeof(float);
    ELLE_TRY(elle__reg_buf_grow(r, &s->g1, img));
    ELLE_TRY(elle__reg_buf_grow(r, &s->g2, img));
    ELLE_TRY(elle__reg_buf_grow(r, &s->coef, (size_t)(2 * n) * sizeof(double)));
    return ELLE_OK;
}

static int overlaps(const void *p, size_t bytes, const void *q, size_t bytes_q)
{
    const char *a = p, *b = q;
    return a < b + bytes_q && b < a + bytes;
}

static int ga_value(elle_regularizer *r, const float *x, const int32_t *y, const float *x_adv,
                    int64_t n, double *value)
{
    (void)x_adv;
    elle_model *m = r->model;
    elle__net *net = elle__model_net(m);
    elle__backend *be = net->be;
    const elle__backend_ops *ops = be->ops;
    const int original = r->p[ELLE_REGULARIZER_PARAM_VARIANT] != 0.0;
    const int clamp = r->p[ELLE_REGULARIZER_PARAM_CLAMP_IMAGE] != 0.0;
    const float eps = (float)r->p[ELLE_REGULARIZER_PARAM_EPS];
    const int64_t d = elle__model_image_numel(m);
    const int64_t nd = n * d;
    const float mean_coef = 1.0f / (float)n; /* the reference's CE_mean */

    ELLE_TRY(ga_scratch(r, n, d));
    ga_impl *s = r->impl;
    s->n = 0;
    float *in = elle__net_input(net, n).data;
    if (overlaps(x, (size_t)nd * sizeof(float), in, (size_t)nd * sizeof(float)))
        ELLE_FAIL(ELLE_EINVAL, "x lies inside the model's input buffer, which the points are "
                               "written to; pass a copy");
    float *g1 = s->g1.p, *g2 = s->g2.p;

    /* g1 at x (the original: at clamp(x, 0, 1)); its own forward, as both
     * references, so the running statistics move once for it */
    if (original) {
        ELLE_TRY(ops->copy(be, in, x, (size_t)nd * sizeof(float)));
        ELLE_TRY(ops->clamp(be, nd, 0.0f, 1.0f, in));
        ELLE_TRY(elle__reg_input_grad(r, in, y, n, mean_coef, g1, NULL));
    } else {
        ELLE_TRY(elle__reg_input_grad(r, x, y, n, mean_coef, g1, NULL));
    }

    /* g2 at x + eta, written straight into the input buffer; this forward
     * and backward are the ones the tangent pass of backward() reuses */
    const uint64_t key = elle__regularizer_stream_key(r);
    uint64_t ctr = r->counter;
    ELLE_TRY(ops->uniform(be, nd, key, ctr, -eps, eps, in));
    ctr += elle__rng_blocks(nd);
    ELLE_TRY(ops->axpy(be, nd, 1.0f, x, in));
    if (clamp)
        ELLE_TRY(ops->clamp(be, nd, 0.0f, 1.0f, in));
    ELLE_TRY(elle__reg_input_grad(r, in, y, n, mean_coef, g2, NULL));

    /* per-sample cosines, in double on the host */
    ELLE_TRY(elle__reg_host_copy(r, &s->h1, g1, nd));
    ELLE_TRY(elle__reg_host_copy(r, &s->h2, g2, nd));
    const float *a = s->h1.p, *b = s->h2.p;
    /* d cos_i / d g2_i = ca_i g1_i + cb_i g2_i, scaled to dR/dg2 below */
    double *ca = s->coef.p, *cb = ca + n;
    int64_t kept = 0;
    double cos_sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double ab = 0.0, aa = 0.0, bb = 0.0;
        const float *ai = a + i * d, *bi = b + i * d;
        for (int64_t j = 0; j < d; j++) {
            ab += (double)ai[j] * bi[j];
            aa += (double)ai[j] * ai[j];
            bb += (double)bi[j] * bi[j];
        }
        double prod = sqrt(aa) * sqrt(bb);
        if (!isfinite(ab) || !isfinite(prod))
            ELLE_FAIL(ELLE_ENUMERIC, "the input gradients of sample %lld are not finite",
                      (long long)i);
        ca[i] = cb[i] = 0.0;
        if (original && prod == 0.0)
            continue; /* dropped: no term, no gradient */
        /* at the floor the denominator is a constant: no g2 term */
        double den = original || prod > COS_FLOOR ? prod : COS_FLOOR;
        double c = ab / den;
        ca[i] = 1.0 / den;
        cb[i] = den == prod ? -c / bb : 0.0;
        kept++;
        cos_sum += c;
    }
    /* R = 1 - (1/m) sum_i cos_i over the m samples counted, so
     * v_i = dR/dg2_i = -(1/m) d cos_i / d g2_i */
    s->any = 0;
    if (kept == 0) {
        *value = 0.0;
    } else {
        *value = 1.0 - cos_sum / (double)kept;
        const double w = -1.0 / (double)kept;
        for (int64_t i = 0; i < n; i++) {
            ca[i] *= w;
            cb[i] *= w;
            s->any |= ca[i] != 0.0 || cb[i] != 0.0;
        }
    }
    s->n = n;
    r->counter = ctr;
    return ELLE_OK;
}

static int ga_backward(elle_regularizer *r, double lambda)
{
    ga_impl *s = r->impl;
    ELLE_ASSERT(s != NULL && s->n > 0);
    if (!s->any)
        return ELLE_OK; /* every sample dropped: R is a constant */
    elle_model *m = r->model;
    elle__backend *be = elle__model_backend(m);
    const int64_t n = s->n, d = elle__model_image_numel(m);
    const double *ca = s->coef.p, *cb = ca + n;
    float *v = s->g1.p; /* v = lambda (ca_i g1_i + cb_i g2_i), formed over g1 */
    const float *g2 = s->g2.p;
    for (int64_t i = 0; i < n; i++) {
        ELLE_TRY(be->ops->scale(be, d, (float)(lambda * ca[i]), v + i * d));
        ELLE_TRY(be->ops->axpy(be, d, (float)(lambda * cb[i]), g2 + i * d, v + i * d));
    }
    /* g1 is spent: a second backward of the same value is not possible */
    s->n = 0;
    return elle__model_tangent_dev(m, n, v, 1.0f, NULL, NULL);
}

const elle__regularizer_ops elle__reg_gradalign_ops = {
    .name = "gradalign",
    .params = ga_params,
    .n_params = N_GA_PARAMS,
    .release = ga_release,
    .attach = elle__reg_attach_second_order,
    .forward_samples = ga_forward_samples,
    .needs_adv = ga_needs_adv,
    .value = ga_value,
    .backward = ga_backward,
};
