/*
 * Reference tangent ops (forward-mode derivatives for the second-order
 * primitive; the math and the batch-norm derivation are in
 * docs/second-order.md). Plain layout, every sum in double, each formula
 * written exactly as derived so that the oneDNN backend's rearranged
 * versions are checked against it.
 */
#include <math.h>

#include "backend/ref/ref_internal.h"
#include "core/error.h"

/* ---- batch norm ----------------------------------------------------------- */

static int check_bn_t(const char *op, const elle__bn_desc *bd, const elle__tensor *x,
                      const float *gamma, const float *mean, const float *var)
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
    ELLE_TRY(elle__ref_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__ref_check_ptr(op, "mean", mean));
    ELLE_TRY(elle__ref_check_ptr(op, "var", var));
    return ELLE_OK;
}

/* The fused ReLU's mask (the forward's y > 0; its second derivative is 0). */
static double bn_mask(const elle__bn_desc *bd, const elle__tensor *y, int64_t i)
{
    return bd->fuse_relu && !(y->data[i] > 0.0f) ? 0.0 : 1.0;
}

int elle__ref_bn_fwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                             const elle__tensor *x, const elle__tensor *y, const elle__tensor *xt,
                             const float *gamma, const float *mean, const float *var,
                             const void *ws, elle__tensor *yt)
{
    (void)be;
    (void)ws;
    const char *op = "bn_fwd_tangent";
    ELLE_TRY(check_bn_t(op, bd, x, gamma, mean, var));
    ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "xt", xt));
    ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "yt", yt));
    if (bd->fuse_relu)
        ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "y (fuse_relu)", y));

    const double m_count = (double)(x->n * x->h * x->w);
    for (int64_t c = 0; c < x->c; c++) {
        const double mu = mean[c], s = 1.0 / sqrt((double)var[c] + (double)bd->eps);
        /* mean(xt) and mean(xhat xt): the tangents of the batch mean and of
         * the inverse standard deviation (ds = -s^2 mean(xhat xt)) */
        double b = 0.0, a = 0.0;
        if (training) {
            for (int64_t n = 0; n < x->n; n++)
                for (int64_t h = 0; h < x->h; h++)
                    for (int64_t w = 0; w < x->w; w++) {
                        int64_t i = elle__ref_at(x, n, c, h, w);
                        double t = xt->data[i];
                        b += t;
                        a += ((double)x->data[i] - mu) * s * t;
                    }
            b /= m_count;
            a /= m_count;
        }
        for (int64_t n = 0; n < x->n; n++)
            for (int64_t h = 0; h < x->h; h++)
                for (int64_t w = 0; w < x->w; w++) {
                    int64_t i = elle__ref_at(x, n, c, h, w);
                    double t = xt->data[i], xhat_t;
                    if (training) {
                        double xhat = ((double)x->data[i] - mu) * s;
                        xhat_t = s * (t - b - xhat * a);
                    } else {
                        xhat_t = s * t;
                    }
                    yt->data[i] = (float)(bn_mask(bd, y, i) * (double)gamma[c] * xhat_t);
                }
    }
    return ELLE_OK;
}

int elle__ref_bn_bwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                             const elle__tensor *x, const elle__tensor *y, const elle__tensor *xt,
                             const elle__tensor *dy, const elle__tensor *dyt, const float *gamma,
                             const float *mean, const float *var, const void *ws,
                             elle__tensor *dxt, float *dgamma_t, float *dbeta_t)
{
    (void)be;
    (void)ws;
    const char *op = "bn_bwd_tangent";
    ELLE_TRY(check_bn_t(op, bd, x, gamma, mean, var));
    ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "xt", xt));
    ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "dy", dy));
    ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "dyt", dyt));
    if (dxt)
        ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "dxt", dxt));
    if (bd->fuse_relu)
        ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "y (fuse_relu)", y));

    const double m_count = (double)(x->n * x->h * x->w);
    for (int64_t c = 0; c < x->c; c++) {
        const double mu = mean[c], s = 1.0 / sqrt((double)var[c] + (double)bd->eps);
        const double gm = gamma[c];

        /* g = masked dy, gt = masked dyt (the mask is the forward's), t = xt */
        double sg = 0, sgx = 0, sgt = 0, sgtx = 0, sgt_ = 0, st = 0, sxt = 0;
        for (int64_t n = 0; n < x->n; n++)
            for (int64_t h = 0; h < x->h; h++)
                for (int64_t w = 0; w < x->w; w++) {
                    int64_t i = elle__ref_at(x, n, c, h, w);
                    double mk = bn_mask(bd, y, i);
                    double g = mk * dy->data[i], gt = mk * dyt->data[i], t = xt->data[i];
                    double xhat = ((double)x->data[i] - mu) * s;
                    sg += g;
                    sgx += g * xhat;
                    sgt += gt;
                    sgtx += gt * xhat;
                    sgt_ += g * t;
                    st += t;
                    sxt += xhat * t;
                }

        if (!training) {
            /* dx = gamma s g; dgamma = sum g xhat with xhat_t = s t */
            if (dxt)
                for (int64_t n = 0; n < x->n; n++)
                    for (int64_t h = 0; h < x->h; h++)
                        for (int64_t w = 0; w < x->w; w++) {
                            int64_t i = elle__ref_at(x, n, c, h, w);
                            dxt->data[i] = (float)(gm * s * bn_mask(bd, y, i) * dyt->data[i]);
                        }
            if (dgamma_t)
                dgamma_t[c] += (float)(sgtx + s * sgt_);
            if (dbeta_t)
                dbeta_t[c] += (float)sgt;
            continue;
        }

        /* means over the channel; b = mean(t), a = mean(xhat t) */
        const double mg = sg / m_count, mgx = sgx / m_count, mgt = sgt / m_count,
                     mgtx = sgtx / m_count, b = st / m_count, a = sxt / m_count;
        /* mean(g xhat_t) with xhat_t = s (t - b - xhat a) */
        const double mg_xhat_t = s * (sgt_ / m_count - b * mg - a * mgx);
        if (dxt)
            for (int64_t n = 0; n < x->n; n++)
                for (int64_t h = 0; h < x->h; h++)
                    for (int64_t w = 0; w < x->w; w++) {
                        int64_t i = elle__ref_at(x, n, c, h, w);
                        double mk = bn_mask(bd, y, i);
                        double g = mk * dy->data[i], gt = mk * dyt->data[i], t = xt->data[i];
                        double xhat = ((double)x->data[i] - mu) * s;
                        double xhat_t = s * (t - b - xhat * a);
                        /* d/dt of gamma s (g - mean g - xhat mean(g xhat)):
                         * s_t = -s^2 a, then the bracket's own tangent */
                        double d = -s * a * (g - mg - xhat * mgx) + gt - mgt - xhat_t * mgx -
                                   xhat * (mgtx + mg_xhat_t);
                        dxt->data[i] = (float)(gm * s * d);
                    }
        if (dgamma_t)
            dgamma_t[c] += (float)(sgtx + m_count * mg_xhat_t);
        if (dbeta_t)
            dbeta_t[c] += (float)sgt;
    }
    return ELLE_OK;
}

/* ---- pooling ---------------------------------------------------------------- */

int elle__ref_pool_fwd_tangent(elle__backend *be, const elle__pool_desc *pd,
                               const elle__tensor *x, const elle__tensor *y, const void *ws,
                               const elle__tensor *xt, elle__tensor *yt)
{
    const char *op = "pool_fwd_tangent";
    ELLE_TRY(elle__ref_check_ptr(op, "pool descriptor", pd));
    ELLE_TRY(elle__ref_check_same_shape(op, "x", x, "xt", xt));
    ELLE_TRY(elle__ref_check_same_shape(op, "y", y, "yt", yt));
    if (pd->kind != ELLE__POOL_MAX)
        return elle__ref_pool_fwd(be, pd, xt, yt, NULL); /* linear: the same average */
    if (pd->kh <= 0 || pd->kw <= 0 || pd->sh <= 0 || pd->sw <= 0 || pd->ph < 0 || pd->pw < 0 ||
        y->n != x->n || y->c != x->c ||
        y->h != elle__ref_out_size(x->h, pd->kh, pd->sh, pd->ph) ||
        y->w != elle__ref_out_size(x->w, pd->kw, pd->sw, pd->pw))
        ELLE_FAIL(ELLE_ESHAPE,
                  "ref %s: y %s is not the max pooling of x %s (window %" PRId64 "x%" PRId64
                  ", stride %" PRId64 ", padding %" PRId64 ")",
                  op, elle__ref_shape(y).s, elle__ref_shape(x).s, pd->kh, pd->kw, pd->sh, pd->ph);
    ELLE_TRY(elle__ref_check_ptr(op, "ws (max pooling)", ws));
    const int32_t *argmax = ws;
    const int64_t plane = x->h * x->w;
    for (int64_t n = 0; n < y->n; n++)
        for (int64_t c = 0; c < y->c; c++)
            for (int64_t oy = 0; oy < y->h; oy++)
                for (int64_t ox = 0; ox < y->w; ox++) {
                    int64_t o = elle__ref_at(y, n, c, oy, ox);
                    int64_t at = argmax[o];
                    if (at < 0 || at >= plane)
                        ELLE_FAIL(ELLE_EINVAL,
                                  "ref %s: workspace index %" PRId64 " outside the %" PRId64
                                  "-element plane (not this forward's workspace?)",
                                  op, at, plane);
                    yt->data[o] = xt->data[(n * x->c + c) * plane + at];
                }
    return ELLE_OK;
}

/* ---- softmax cross-entropy -------------------------------------------------- */

int elle__ref_xent_tangent(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                           const float *coef, const float *gcoef, const elle__tensor *logits_t,
                           elle__tensor *dlogits_t, float *loss_t)
{
    (void)be;
    const char *op = "xent_tangent";
    ELLE_TRY(elle__ref_check_tensor(op, "logits", logits));
    if (logits->h != 1 || logits->w != 1)
        ELLE_FAIL(ELLE_ESHAPE, "ref %s: logits are %s, expected (n, classes, 1, 1)", op,
                  elle__ref_shape(logits).s);
    ELLE_TRY(elle__ref_check_same_shape(op, "logits", logits, "logits_t", logits_t));
    ELLE_TRY(elle__ref_check_same_shape(op, "logits", logits, "dlogits_t", dlogits_t));
    ELLE_TRY(elle__ref_check_ptr(op, "labels", labels));
    ELLE_TRY(elle__ref_check_ptr(op, "coef", coef));
    const int64_t k = logits->c;
    for (int64_t i = 0; i < logits->n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            ELLE_FAIL(ELLE_EINVAL, "ref %s: label %d of sample %" PRId64 " is outside [0, %" PRId64 ")",
                      op, (int)labels[i], i, k);
    for (int64_t i = 0; i < logits->n; i++) {
        const float *z = logits->data + i * k, *zt = logits_t->data + i * k;
        float *dzt = dlogits_t->data + i * k;
        double mx = z[0];
        for (int64_t j = 1; j < k; j++)
            mx = fmax(mx, (double)z[j]);
        double sum = 0.0;
        for (int64_t j = 0; j < k; j++)
            sum += exp((double)z[j] - mx);
        /* p . zt first: every dzt[j] needs it (and dzt may alias zt) */
        double pz = 0.0;
        for (int64_t j = 0; j < k; j++)
            pz += exp((double)z[j] - mx) / sum * (double)zt[j];
        if (loss_t)
            loss_t[i] = (float)(pz - (double)zt[labels[i]]);
        const double cf = coef[i], gc = gcoef ? gcoef[i] : 0.0;
        for (int64_t j = 0; j < k; j++) {
            double p = exp((double)z[j] - mx) / sum;
            double onehot = j == labels[i] ? 1.0 : 0.0;
            dzt[j] = (float)(cf * p * ((double)zt[j] - pz) + gc * (p - onehot));
        }
    }
    return ELLE_OK;
}
