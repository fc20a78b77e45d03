/*
 * LLR, local linearity regularization (Qin et al., NeurIPS 2019), in the
 * simplified form of the ELLE paper and repo (spec/algorithms.md §2,
 * spec/reference-implementations.md §2.6): no inner maximisation, no
 * mu |delta . grad| term,
 *
 *   x2, x3 = x + eps U[-1, 1]        (independent, per element; one fill over
 *                                      [x2; x3], not clamped unless clamp_image)
 *   g      = grad_{x2} CE_mean(f(x2))  (differentiated: double backpropagation)
 *   r_i    = l_i(x3) - l_i(x2) - <x3_i - x2_i, g_i>
 *   R      = (1/B) sum_i r_i^2
 *
 * with g from a forward of x2 alone (B samples) and the losses l_i from one
 * forward of [x2; x3] (2B samples), as the reference: in training mode the
 * two see different batch-norm statistics. CE_mean makes g_i = (1/B) grad l_i,
 * so the linear term is B times smaller than in a per-sample formulation;
 * per_sample = 1 takes g = grad of the summed loss (grad l_i) instead.
 *
 * The gradient: with w_i = 2 r_i / B,
 *
 *   grad_theta R = sum_i w_i (grad l_i(x3) - grad l_i(x2))      [the 2B forward]
 *                + H(x2, y, v),  v_i = -w_i (x3_i - x2_i)        [the x2 forward]
 *
 * The first part is one backward of the 2B forward with coefficients
 * (-w; +w). The second is the tangent pass (model_internal.h) on the x2
 * forward and backward — but v needs r, which needs the 2B losses, and the
 * model keeps only its last forward. So backward() runs the x2 forward and
 * input-gradient backward once more before the tangent, with the batch-norm
 * running statistics saved and restored around it: the recomputation is
 * exact (same batch, same parameters, same batch statistics) and the
 * running statistics move exactly as in the reference (once for x2, once
 * for [x2; x3]). Cost per step: F(B) + B(B) + F(2B) + B(2B) + F(B) + B(B) +
 * tangent(B), one forward and input backward of B more than PyTorch's
 * double backpropagation.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "nn/model_internal.h"
#include "regularizers/regularizer_internal.h"

static const elle__param_spec llr_params[] = {
    {ELLE_REGULARIZER_PARAM_LAMBDA, "lambda", 0.0, 1e12, 0, 200.0},
    {ELLE_REGULARIZER_PARAM_EPS, "eps", 0.0, 1.0, 0, 8.0 / 255.0},
    {ELLE_REGULARIZER_PARAM_ADAPTIVE, "adaptive", 0.0, 1.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_MAX, "lambda_max", 0.0, 1e12, 0, 200.0},
    {ELLE_REGULARIZER_PARAM_DECAY, "decay", 0.0, 1.0, 0, 0.99},
    {ELLE_REGULARIZER_PARAM_SENSITIVITY, "sensitivity", 0.0, 1e6, 0, 2.0},
    {ELLE_REGULARIZER_PARAM_WINDOW, "window", 0.0, 2147483647.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_START, "lambda_start", 0.0, 1e12, 0, 0.0},
    {ELLE_REGULARIZER_PARAM_SEED, "seed", 0.0, 9007199254740991.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_CLAMP_IMAGE, "clamp_image", 0.0, 1.0, 1, 0.0},
    {ELLE_REGULARIZER_PARAM_LAMBDA_LAG, "lambda_lag", 0.0, 1.0, 1, 1.0},
    {ELLE_REGULARIZER_PARAM_PER_SAMPLE, "per_sample", 0.0, 1.0, 1, 0.0},
};
#define N_LLR_PARAMS (sizeof llr_params / sizeof llr_params[0])

typedef struct llr_impl {
    elle__reg_buf pts;    /* backend: [x2; x3], (2n, C, H, W) */
    elle__reg_buf g;      /* backend: g at x2, then v */
    elle__reg_stats stats; /* the running statistics, saved around the re-forward */
    elle__reg_buf hpts, hg; /* host copies */
    elle__reg_buf loss;   /* host: 2n floats */
    elle__reg_buf res;    /* host: n doubles r_i */
    elle__reg_buf coef;   /* host: 2n floats, the 2B backward's coefficients */
    int64_t n;            /* batch of the last value(); 0 before */
    float gcoef;          /* loss coefficient of g (1/n or 1) */
    const int32_t *y;     /* the labels of the last value() (the caller's, backend) */
} llr_impl;

static void llr_release(elle_regularizer *r)
{
    llr_impl *s = r->impl;
    if (!s)
        return;
    elle__reg_buf *bufs[] = {&s->pts, &s->g, &s->hpts, &s->hg, &s->loss, &s->res, &s->coef};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        elle__reg_buf_release(r, bufs[i]);
    elle__reg_stats_release(r, &s->stats);
    free(s);
    r->impl = NULL;
}

static int64_t llr_forward_samples(const elle_regularizer *r, int64_t n)
{
    (void)r;
    return 2 * n;
}

static int llr_needs_adv(const elle_regularizer *r)
{
    (void)r;
    return 0;
}

static int overlaps(const void *p, size_t bytes, const void *q, size_t bytes_q)
{
    const char *a = p, *b = q;
    return a < b + bytes_q && b < a + bytes;
}

static int llr_value(elle_regularizer *r, const float *x, const int32_t *y, const float *x_adv,
                     int64_t n, double *value)
{
    (void)x_adv;
    elle_model *m = r->model;
    elle__net *net = elle__model_net(m);
    elle__backend *be = net->be;
    const elle__backend_ops *ops = be->ops;
    const float eps = (float)r->p[ELLE_REGULARIZER_PARAM_EPS];
    const int clamp = r->p[ELLE_REGULARIZER_PARAM_CLAMP_IMAGE] != 0.0;
    const int64_t d = elle__model_image_numel(m), nd = n * d;
    int32_t *labels = net->labels;

    llr_impl *s = r->impl;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            ELLE_FAIL(ELLE_ENOMEM, "llr: out of memory");
        s->pts.dev = s->g.dev = 1;
        r->impl = s;
    }
    s->n = 0;
    if (overlaps(y, (size_t)n * sizeof(int32_t), labels, (size_t)(2 * n) * sizeof(int32_t)))
        ELLE_FAIL(ELLE_EINVAL, "y overlaps the model's label buffer; pass a copy");
    ELLE_TRY(elle__reg_buf_grow(r, &s->pts, (size_t)(2 * nd) * sizeof(float)));
    ELLE_TRY(elle__reg_buf_grow(r, &s->g, (size_t)nd * sizeof(float)));
    ELLE_TRY(elle__reg_buf_grow(r, &s->loss, (size_t)(2 * n) * sizeof(float)));
    ELLE_TRY(elle__reg_buf_grow(r, &s->res, (size_t)n * sizeof(double)));
    ELLE_TRY(elle__reg_buf_grow(r, &s->coef, (size_t)(2 * n) * sizeof(float)));
    s->gcoef = r->p[ELLE_REGULARIZER_PARAM_PER_SAMPLE] != 0.0 ? 1.0f : 1.0f / (float)n;
    float *x2 = s->pts.p, *x3 = x2 + nd;

    /* x2, x3 = x + U[-eps, eps], one fill over both (as ELLE's x_a, x_b) */
    const uint64_t key = elle__regularizer_stream_key(r);
    uint64_t ctr = r->counter;
    ELLE_TRY(ops->uniform(be, 2 * nd, key, ctr, -eps, eps, x2));
    ctr += elle__rng_blocks(2 * nd);
    ELLE_TRY(ops->axpy(be, nd, 1.0f, x, x2));
    ELLE_TRY(ops->axpy(be, nd, 1.0f, x, x3));
    if (clamp)
        ELLE_TRY(ops->clamp(be, 2 * nd, 0.0f, 1.0f, x2));

    /* g at x2: its own forward of B samples */
    ELLE_TRY(elle__reg_input_grad(r, x2, y, n, s->gcoef, s->g.p, NULL));

    /* the losses: one forward of [x2; x3] with the labels tiled */
    const size_t lab = (size_t)n * sizeof(int32_t);
    ELLE_TRY(ops->copy(be, labels, y, lab));
    ELLE_TRY(ops->copy(be, labels + n, y, lab));
    ELLE_TRY(elle__model_forward_dev(m, x2, labels, 2 * n, net->loss));
    float *loss = s->loss.p;
    ELLE_TRY(ops->copy_to_host(be, loss, net->loss, (size_t)(2 * n) * sizeof(float)));
    for (int64_t j = 0; j < 2 * n; j++)
        if (!isfinite(loss[j]))
            ELLE_FAIL(ELLE_ENUMERIC, "the loss of sample %lld at %s is %g", (long long)(j % n),
                      j < n ? "x2" : "x3", (double)loss[j]);

    /* r_i and R in double on the host */
    ELLE_TRY(elle__reg_host_copy(r, &s->hpts, x2, 2 * nd));
    ELLE_TRY(elle__reg_host_copy(r, &s->hg, s->g.p, nd));
    const float *hp = s->hpts.p, *hg = s->hg.p;
    double *res = s->res.p, sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *a = hp + i * d, *b = hp + nd + i * d, *gi = hg + i * d;
        double dot = 0.0;
        for (int64_t j = 0; j < d; j++)
            dot += ((double)b[j] - (double)a[j]) * gi[j];
        res[i] = (double)loss[n + i] - (double)loss[i] - dot;
        sum += res[i] * res[i];
    }
    *value = sum / (double)n;
    s->y = y;
    s->n = n;
    r->counter = ctr;
    return ELLE_OK;
}

static int llr_backward(elle_regularizer *r, double lambda)
{
    llr_impl *s = r->impl;
    ELLE_ASSERT(s != NULL && s->n > 0);
    elle_model *m = r->model;
    elle__net *net = elle__model_net(m);
    elle__backend *be = net->be;
    const elle__backend_ops *ops = be->ops;
    const int64_t n = s->n, d = elle__model_image_numel(m), nd = n * d;
    const double *res = s->res.p;
    float *coef = s->coef.p;
    s->n = 0;

    /* 1. the losses' part, on the 2B forward (still the model's last) */
    for (int64_t i = 0; i < n; i++) {
        double w = lambda * 2.0 * res[i] / (double)n;
        coef[i] = (float)-w;
        coef[n + i] = (float)w;
    }
    ELLE_TRY(ops->copy_to_device(be, net->coef, coef, (size_t)(2 * n) * sizeof(float)));
    ELLE_TRY(elle__model_backward_dev(m, 2 * n, net->coef, 1, NULL));

    /* 2. v_i = -lambda w_i (x3_i - x2_i), formed over g */
    const float *x2 = s->pts.p, *x3 = x2 + nd;
    float *v = s->g.p;
    ELLE_TRY(ops->copy(be, v, x3, (size_t)nd * sizeof(float)));
    ELLE_TRY(ops->axpy(be, nd, -1.0f, x2, v));
    int any = 0;
    for (int64_t i = 0; i < n; i++) {
        float w = (float)(-lambda * 2.0 * res[i] / (double)n);
        any |= w != 0.0f;
        ELLE_TRY(ops->scale(be, d, w, v + i * d));
    }
    if (!any)
        return ELLE_OK;

    /* 3. the x2 forward and backward again (running statistics kept as they
     * are), then the tangent pass on them */
    ELLE_TRY(elle__reg_stats_save(r, &s->stats));
    int rc = elle__reg_input_grad(r, x2, s->y, n, s->gcoef, NULL, NULL);
    if (rc >= 0)
        rc = elle__model_tangent_dev(m, n, v, 1.0f, NULL, NULL);
    int rc2 = elle__reg_stats_restore(r, &s->stats);
    return rc < 0 ? rc : rc2;
}

const elle__regularizer_ops elle__reg_llr_ops = {
    .name = "llr",
    .params = llr_params,
    .n_params = N_LLR_PARAMS,
    .release = llr_release,
    .attach = elle__reg_attach_second_order,
    .forward_samples = llr_forward_samples,
    .needs_adv = llr_needs_adv,
    .value = llr_value,
    .backward = llr_backward,
};
