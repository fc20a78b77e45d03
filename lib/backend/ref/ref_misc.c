/*
 * Reference relu, add, pooling and softmax cross-entropy.
 *
 * Pooling is PyTorch's MaxPool2d/AvgPool2d in floor mode: max pooling pads
 * with -inf and remembers, per output, the input position (h*W + w inside
 * its (n, c) plane, int32) of the first maximum in scan order; average
 * pooling divides by kh*kw always (count_include_pad=True). Backward passes
 * gather over the outputs whose windows cover each input.
 */
#include <math.h>

#include "backend/ref/ref_internal.h"
#include "core/error.h"

/* ---- relu and add ------------------------------------------------------- */

int elle__ref_relu_fwd(elle__backend *be, const elle__tensor *x, elle__tensor *y)
{
    (void)be;
    ELLE_TRY(elle__ref_check_same_shape("relu_fwd", "x", x, "y", y));
    int64_t n = elle__tensor_numel(x);
    for (int64_t i = 0; i < n; i++) {
        float v = x->data[i];
        y->data[i] = v < 0.0f ? 0.0f : v; /* NaN propagates */
    }
    return ELLE_OK;
}

int elle__ref_relu_bwd(elle__backend *be, const elle__tensor *y, const elle__tensor *dy,
                       elle__tensor *dx)
{
    (void)be;
    ELLE_TRY(elle__ref_check_same_shape("relu_bwd", "y", y, "dy", dy));
    ELLE_TRY(elle__ref_check_same_shape("relu_bwd", "y", y, "dx", dx));
    int64_t n = elle__tensor_numel(y);
    for (int64_t i = 0; i < n; i++)
        dx->data[i] = y->data[i] > 0.0f ? dy->data[i] : 0.0f;
    return ELLE_OK;
}

int elle__ref_add(elle__backend *be, const elle__tensor *a, const elle__tensor *b,
                  elle__tensor *y)
{
    (void)be;
    ELLE_TRY(elle__ref_check_same_shape("add", "a", a, "b", b));
    ELLE_TRY(elle__ref_check_same_shape("add", "a", a, "y", y));
    int64_t n = elle__tensor_numel(a);
    for (int64_t i = 0; i < n; i++)
        y->data[i] = a->data[i] + b->data[i];
    return ELLE_OK;
}

/* ---- pooling ----------------------------------------------------------- */

/* The descriptor, `x` (input shaped: x or dx) and `y` (output shaped: y or
 * dy). */
static int check_pool(const char *op, const elle__pool_desc *pd, const char *xname,
                      const elle__tensor *x, const char *yname, const elle__tensor *y)
{
    ELLE_TRY(elle__ref_check_ptr(op, "pool descriptor", pd));
    if (pd->kind != ELLE__POOL_MAX && pd->kind != ELLE__POOL_AVG)
        ELLE_FAIL(ELLE_EINVAL, "ref %s: unknown pooling kind %d", op, pd->kind);
    if (pd->kh <= 0 || pd->kw <= 0 || pd->sh <= 0 || pd->sw <= 0 || pd->ph < 0 || pd->pw < 0)
        ELLE_FAIL(ELLE_EINVAL,
                  "ref %s: invalid pool descriptor (window %" PRId64 "x%" PRId64 ", stride %" PRId64
                  "x%" PRId64 ", padding %" PRId64 "x%" PRId64 ")",
                  op, pd->kh, pd->kw, pd->sh, pd->sw, pd->ph, pd->pw);
    /* PyTorch's rule; it also guarantees every max window holds a real input */
    if (2 * pd->ph > pd->kh || 2 * pd->pw > pd->kw)
        ELLE_FAIL(ELLE_EINVAL,
                  "ref %s: padding %" PRId64 "x%" PRId64 " is more than half the window %" PRId64
                  "x%" PRId64,
                  op, pd->ph, pd->pw, pd->kh, pd->kw);
    ELLE_TRY(elle__ref_check_tensor(op, xname, x));
    ELLE_TRY(elle__ref_check_tensor(op, yname, y));
    int64_t oh = elle__ref_out_size(x->h, pd->kh, pd->sh, pd->ph);
    int64_t ow = elle__ref_out_size(x->w, pd->kw, pd->sw, pd->pw);
    if (oh <= 0 || ow <= 0)
        ELLE_FAIL(ELLE_ESHAPE,
                  "ref %s: window %" PRId64 "x%" PRId64 " with padding %" PRId64 "x%" PRId64
                  " does not fit %s %s",
                  op, pd->kh, pd->kw, pd->ph, pd->pw, xname, elle__ref_shape(x).s);
    if (y->n != x->n || y->c != x->c || y->h != oh || y->w != ow)
        ELLE_FAIL(ELLE_ESHAPE,
                  "ref %s: %s is %s, expected (%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                  ") for %s %s, window %" PRId64 "x%" PRId64 ", stride %" PRId64 "x%" PRId64
                  ", padding %" PRId64 "x%" PRId64,
                  op, yname, elle__ref_shape(y).s, x->n, x->c, oh, ow, xname, elle__ref_shape(x).s,
                  pd->kh, pd->kw, pd->sh, pd->sw, pd->ph, pd->pw);
    if (pd->kind == ELLE__POOL_MAX && x->h * x->w > INT32_MAX)
        ELLE_FAIL(ELLE_ESHAPE, "ref %s: %s plane %s is too large for int32 argmax indices", op,
                  xname, elle__ref_shape(x).s);
    return ELLE_OK;
}

size_t elle__ref_pool_workspace_bytes(elle__backend *be, const elle__pool_desc *pd,
                                      const elle__tensor *x, const elle__tensor *y)
{
    (void)be;
    (void)x;
    if (!pd || !y || pd->kind != ELLE__POOL_MAX || elle__tensor_numel(y) <= 0)
        return 0;
    return (size_t)elle__tensor_numel(y) * sizeof(int32_t);
}

int elle__ref_pool_fwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *x,
                       elle__tensor *y, void *ws)
{
    (void)be;
    const char *op = "pool_fwd";
    ELLE_TRY(check_pool(op, pd, "x", x, "y", y));
    const int is_max = pd->kind == ELLE__POOL_MAX;
    if (is_max)
        ELLE_TRY(elle__ref_check_ptr(op, "ws (max pooling)", ws));
    int32_t *argmax = ws;
    const double divisor = (double)(pd->kh * pd->kw);

    for (int64_t n = 0; n < x->n; n++)
        for (int64_t c = 0; c < x->c; c++)
            for (int64_t oy = 0; oy < y->h; oy++)
                for (int64_t ox = 0; ox < y->w; ox++) {
                    double sum = 0.0;
                    float best = -INFINITY;
                    int64_t best_at = -1;
                    for (int64_t ky = 0; ky < pd->kh; ky++) {
                        int64_t iy = oy * pd->sh - pd->ph + ky;
                        if (iy < 0 || iy >= x->h)
                            continue; /* padding: -inf for max, 0 for avg */
                        for (int64_t kx = 0; kx < pd->kw; kx++) {
                            int64_t ix = ox * pd->sw - pd->pw + kx;
                            if (ix < 0 || ix >= x->w)
                                continue;
                            float v = x->data[elle__ref_at(x, n, c, iy, ix)];
                            sum += (double)v;
                            /* strict > keeps the first maximum; a NaN wins
                             * once and then stays, as in PyTorch */
                            if (best_at < 0 || v > best || (isnan(v) && !isnan(best))) {
                                best = v;
                                best_at = iy * x->w + ix;
                            }
                        }
                    }
                    int64_t o = elle__ref_at(y, n, c, oy, ox);
                    if (is_max) {
                        y->data[o] = best;
                        argmax[o] = (int32_t)best_at;
                    } else {
                        y->data[o] = (float)(sum / divisor);
                    }
                }
    return ELLE_OK;
}

int elle__ref_pool_bwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *dy,
                       const void *ws, elle__tensor *dx)
{
    (void)be;
    const char *op = "pool_bwd";
    ELLE_TRY(check_pool(op, pd, "dx", dx, "dy", dy));
    const int is_max = pd->kind == ELLE__POOL_MAX;
    if (is_max)
        ELLE_TRY(elle__ref_check_ptr(op, "ws (max pooling)", ws));
    const int32_t *argmax = ws;
    const double divisor = (double)(pd->kh * pd->kw);

    for (int64_t n = 0; n < dx->n; n++)
        for (int64_t c = 0; c < dx->c; c++)
            for (int64_t iy = 0; iy < dx->h; iy++)
                for (int64_t ix = 0; ix < dx->w; ix++) {
                    int64_t oy0, oy1, ox0, ox1;
                    elle__ref_covering(iy, pd->kh, pd->sh, pd->ph, dy->h, &oy0, &oy1);
                    elle__ref_covering(ix, pd->kw, pd->sw, pd->pw, dy->w, &ox0, &ox1);
                    const int64_t here = iy * dx->w + ix;
                    double sum = 0.0;
                    for (int64_t oy = oy0; oy <= oy1; oy++)
                        for (int64_t ox = ox0; ox <= ox1; ox++) {
                            int64_t o = elle__ref_at(dy, n, c, oy, ox);
                            if (!is_max)
                                sum += (double)dy->data[o] / divisor;
                            else if (argmax[o] == here)
                                sum += (double)dy->data[o];
                        }
                    dx->data[elle__ref_at(dx, n, c, iy, ix)] = (float)sum;
                }
    return ELLE_OK;
}

/* ---- softmax cross-entropy ----------------------------------------------- */

static int check_xent(const char *op, const elle__tensor *logits, const int32_t *labels)
{
    ELLE_TRY(elle__ref_check_tensor(op, "logits", logits));
    if (logits->h != 1 || logits->w != 1)
        ELLE_FAIL(ELLE_ESHAPE, "ref %s: logits are %s, expected (n, classes, 1, 1)", op,
                  elle__ref_shape(logits).s);
    ELLE_TRY(elle__ref_check_ptr(op, "labels", labels));
    /* the API checks labels; checking again here costs nothing and keeps a
     * bad label from reading out of bounds */
    for (int64_t i = 0; i < logits->n; i++)
        if (labels[i] < 0 || labels[i] >= logits->c)
            ELLE_FAIL(ELLE_EINVAL, "ref %s: label %d of sample %" PRId64 " is outside [0, %" PRId64 ")",
                      op, (int)labels[i], i, logits->c);
    return ELLE_OK;
}

/* The maximum and log(sum(exp(z - max))) of one row, in double, so that
 * logsumexp = max + that and nothing overflows for huge logits. */
static void row_lse(const float *z, int64_t k, double *max_out, double *log_sum_out)
{
    double mx = z[0];
    for (int64_t j = 1; j < k; j++)
        if ((double)z[j] > mx)
            mx = z[j];
    double sum = 0.0;
    for (int64_t j = 0; j < k; j++)
        sum += exp((double)z[j] - mx);
    *max_out = mx;
    *log_sum_out = log(sum);
}

int elle__ref_xent_fwd(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                       float *loss)
{
    (void)be;
    const char *op = "xent_fwd";
    ELLE_TRY(check_xent(op, logits, labels));
    ELLE_TRY(elle__ref_check_ptr(op, "loss", loss));
    const int64_t k = logits->c;
    for (int64_t i = 0; i < logits->n; i++) {
        const float *z = logits->data + i * k;
        double mx, log_sum;
        row_lse(z, k, &mx, &log_sum);
        /* (max - z_y) first: both may be ~1e30 while the loss is small */
        loss[i] = (float)((mx - (double)z[labels[i]]) + log_sum);
    }
    return ELLE_OK;
}

int elle__ref_xent_bwd(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                       const float *coef, elle__tensor *dlogits)
{
    (void)be;
    const char *op = "xent_bwd";
    ELLE_TRY(check_xent(op, logits, labels));
    ELLE_TRY(elle__ref_check_ptr(op, "coef", coef));
    ELLE_TRY(elle__ref_check_same_shape(op, "logits", logits, "dlogits", dlogits));
    const int64_t k = logits->c;
    for (int64_t i = 0; i < logits->n; i++) {
        const float *z = logits->data + i * k;
        float *dz = dlogits->data + i * k;
        double mx, log_sum;
        row_lse(z, k, &mx, &log_sum);
        /* element by element, reading z[j] before writing dz[j]: in place is fine */
        for (int64_t j = 0; j < k; j++) {
            double p = exp((double)z[j] - mx - log_sum);
            double onehot = j == labels[i] ? 1.0 : 0.0;
            dz[j] = (float)((double)coef[i] * (p - onehot));
        }
    }
    return ELLE_OK;
}
