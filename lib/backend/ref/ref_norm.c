/*
 * Reference batch normalisation, exactly PyTorch's BatchNorm2d: per channel
 * over the M = n*h*w elements of that channel,
 *
 *   train:  mean = sum(x)/M, var = sum((x-mean)^2)/M (biased, two passes),
 *           xhat = (x - mean)/sqrt(var + eps), y = gamma*xhat + beta,
 *           running_mean = (1-m)*running_mean + m*mean,
 *           running_var  = (1-m)*running_var  + m*var*M/(M-1);
 *   infer:  the same y with running_mean/running_var in place of the batch
 *           statistics.
 *
 * With fuse_relu, y = relu(gamma*xhat + beta) and the backward masks dy with
 * y > 0, so no workspace is needed (bn_workspace_bytes is 0, ws unused).
 *
 * Backward, with g = dy (masked), rstd = 1/sqrt(var + eps):
 *   dbeta  = sum(g),  dgamma = sum(g*xhat)
 *   train: dx = gamma*rstd * (g - sum(g)/M - xhat*sum(g*xhat)/M)
 *          (the gradient through the batch mean and variance; the usual
 *          result of differentiating xhat_i = (x_i - mean)*rstd with
 *          d mean/dx_j = 1/M and d var/dx_j = 2(x_j - mean)/M)
 *   infer: dx = gamma*rstd * g (the running statistics are constants).
 *
 * All statistics and sums are accumulated in double.
 */
#include <math.h>

#include "backend/ref/ref_internal.h"
#include "core/error.h"

static int check_bn(const char *op, const elle__bn_desc *bd, const elle__tensor *x)
{
    ELLE_TRY(elle__ref_check_ptr(op, "bn descriptor", bd));
    if (bd->c <= 0)
        ELLE_FAIL(ELLE_EINVAL, "ref %s: invalid channel count %" PRId64, op, bd->c);
    if (!(bd->eps >= 0.0f) || !isfinite(bd->eps))
        ELLE_FAIL(ELLE_EINVAL, "ref %s: invalid eps %g", op, (double)bd->eps);
    ELLE_TRY(elle__ref_check_tensor(op, "x", x));
    if (x->c != bd->c)
        ELLE_FAIL(ELLE_ESHAPE, "ref %s: x %s has %" PRId64 " channels, batch norm expects %" PRId64,
                  op, elle__ref_shape(x).s, x->c, bd->c);
    return ELLE_OK;
}

size_t elle__ref_bn_workspace_bytes(elle__backend *be, const elle__bn_desc *bd,
                                    const elle__tensor *x)
{
    (void)be;
    (void)bd;
    (void)x;
    return 0; /* the fused relu mask is read back from y */
}

/* y = gamma*(x - mean)*rstd + beta over channel c, relu'd when fused. */
static void bn_apply(const elle__bn_desc *bd, const elle__tensor *x, int64_t c, double mean,
                     double rstd, double gamma, double beta, elle__tensor *y)
{
    for (int64_t n = 0; n < x->n; n++)
        for (int64_t h = 0; h < x->h; h++)
            for (int64_t w = 0; w < x->w; w++) {
                int64_t i = elle__ref_at(x, n, c, h, w);
                double v = gamma * ((double)x->data[i] - mean) * rstd + beta;
                if (bd->fuse_relu && v < 0.0)
                    v = 0.0;
                y->data[i] = (float)v;
            }
}

int elle__ref_bn_fwd_train(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                           const float *gamma, const float *beta, float *running_mean,
                           float *running_var, elle__tensor *y, float *save_mean, float *save_var,
                           void *ws)
{
    (void)be;
    (void)ws;
    const char *op = "bn_fwd_train";
    ELLE_TRY(check_bn(op, bd, x));
    if (!(bd->momentum >= 0.0f && bd->momentum <= 1.0f))
        ELLE_FAIL(ELLE_EINVAL, "ref %s: momentum %g is outside [0, 1]", op, (double)bd->momentum);
    ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "y", y));
    ELLE_TRY(elle__ref_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__ref_check_ptr(op, "beta", beta));
    ELLE_TRY(elle__ref_check_ptr(op, "running_mean", running_mean));
    ELLE_TRY(elle__ref_check_ptr(op, "running_var", running_var));
    ELLE_TRY(elle__ref_check_ptr(op, "save_mean", save_mean));
    ELLE_TRY(elle__ref_check_ptr(op, "save_var", save_var));

    const int64_t m_count = x->n * x->h * x->w;
    const double m = bd->momentum;
    for (int64_t c = 0; c < x->c; c++) {
        double sum = 0.0;
        for (int64_t n = 0; n < x->n; n++)
            for (int64_t h = 0; h < x->h; h++)
                for (int64_t w = 0; w < x->w; w++)
                    sum += (double)x->data[elle__ref_at(x, n, c, h, w)];
        double mean = sum / (double)m_count;

        /* second pass around the mean: no cancellation as in E[x^2]-E[x]^2 */
        double sq = 0.0;
        for (int64_t n = 0; n < x->n; n++)
            for (int64_t h = 0; h < x->h; h++)
                for (int64_t w = 0; w < x->w; w++) {
                    double d = (double)x->data[elle__ref_at(x, n, c, h, w)] - mean;
                    sq += d * d;
                }
        double var = sq / (double)m_count;
        double rstd = 1.0 / sqrt(var + (double)bd->eps);

        /* statistics first: y may alias x and bn_apply overwrites it */
        save_mean[c] = (float)mean;
        save_var[c] = (float)var;
        /* PyTorch raises an error for M == 1 in training mode; here the
         * (zero) biased variance is used as is instead of dividing by 0. */
        double unbiased = m_count > 1 ? var * (double)m_count / (double)(m_count - 1) : var;
        running_mean[c] = (float)((1.0 - m) * (double)running_mean[c] + m * mean);
        running_var[c] = (float)((1.0 - m) * (double)running_var[c] + m * unbiased);

        bn_apply(bd, x, c, mean, rstd, (double)gamma[c], (double)beta[c], y);
    }
    return ELLE_OK;
}

int elle__ref_bn_fwd_infer(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                           const float *gamma, const float *beta, const float *running_mean,
                           const float *running_var, elle__tensor *y, void *ws)
{
    (void)be;
    (void)ws;
    const char *op = "bn_fwd_infer";
    ELLE_TRY(check_bn(op, bd, x));
    ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "y", y));
    ELLE_TRY(elle__ref_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__ref_check_ptr(op, "beta", beta));
    ELLE_TRY(elle__ref_check_ptr(op, "running_mean", running_mean));
    ELLE_TRY(elle__ref_check_ptr(op, "running_var", running_var));

    for (int64_t c = 0; c < x->c; c++) {
        double rstd = 1.0 / sqrt((double)running_var[c] + (double)bd->eps);
        bn_apply(bd, x, c, (double)running_mean[c], rstd, (double)gamma[c], (double)beta[c], y);
    }
    return ELLE_OK;
}

int elle__ref_bn_bwd(elle__backend *be, const elle__bn_desc *bd, int training,
                     const elle__tensor *x, const elle__tensor *y, const elle__tensor *dy,
                     const float *gamma, const float *mean, const float *var, const void *ws,
                     elle__tensor *dx, float *dgamma, float *dbeta)
{
    (void)be;
    (void)ws;
    const char *op = "bn_bwd";
    ELLE_TRY(check_bn(op, bd, x));
    ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "dy", dy));
    ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "dx", dx));
    /* y is only needed for the fused relu mask */
    if (bd->fuse_relu)
        ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "y (fuse_relu)", y));
    ELLE_TRY(elle__ref_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__ref_check_ptr(op, "mean", mean));
    ELLE_TRY(elle__ref_check_ptr(op, "var", var));

    const double m_count = (double)(x->n * x->h * x->w);
    for (int64_t c = 0; c < x->c; c++) {
        const double mu = mean[c];
        const double rstd = 1.0 / sqrt((double)var[c] + (double)bd->eps);
        const double gm = gamma[c];

        /* pass 1: sum(g) and sum(g*xhat) */
        double sum_g = 0.0, sum_gx = 0.0;
        for (int64_t n = 0; n < x->n; n++)
            for (int64_t h = 0; h < x->h; h++)
                for (int64_t w = 0; w < x->w; w++) {
                    int64_t i = elle__ref_at(x, n, c, h, w);
                    double g = dy->data[i];
                    if (bd->fuse_relu && !(y->data[i] > 0.0f))
                        g = 0.0;
                    double xhat = ((double)x->data[i] - mu) * rstd;
                    sum_g += g;
                    sum_gx += g * xhat;
                }

        /* pass 2: dx (reads dy[i], x[i] before writing dx[i]: dx may alias) */
        for (int64_t n = 0; n < x->n; n++)
            for (int64_t h = 0; h < x->h; h++)
                for (int64_t w = 0; w < x->w; w++) {
                    int64_t i = elle__ref_at(x, n, c, h, w);
                    double g = dy->data[i];
                    if (bd->fuse_relu && !(y->data[i] > 0.0f))
                        g = 0.0;
                    double d;
                    if (training) {
                        double xhat = ((double)x->data[i] - mu) * rstd;
                        d = gm * rstd * (g - sum_g / m_count - xhat * sum_gx / m_count);
                    } else {
                        d = gm * rstd * g;
                    }
                    dx->data[i] = (float)d;
                }

        if (dgamma)
            dgamma[c] += (float)sum_gx;
        if (dbeta)
            dbeta[c] += (float)sum_g;
    }
    return ELLE_OK;
}
