/*
 * Reference convolution and fully connected layers: direct loops, every sum
 * accumulated in double.
 *
 * Convolution follows PyTorch's Conv2d (cross-correlation, weights
 * (oc, ic, kh, kw), groups 1, dilation 1). Both backward passes are written
 * as gathers, so each output element is one sum over the elements that
 * contribute to it.
 */
#include "backend/ref/ref_internal.h"
#include "core/error.h"

/* Checks shared by the three convolution ops: the descriptor, `x` (input
 * shaped: x, or dx) and `y` (output shaped: y, or dy). */
static int check_conv(const char *op, const elle__conv_desc *cd, const char *xname,
                      const elle__tensor *x, const char *yname, const elle__tensor *y)
{
    ELLE_TRY(elle__ref_check_ptr(op, "conv descriptor", cd));
    if (cd->ic <= 0 || cd->oc <= 0 || cd->kh <= 0 || cd->kw <= 0 || cd->sh <= 0 || cd->sw <= 0 ||
        cd->ph < 0 || cd->pw < 0)
        ELLE_FAIL(ELLE_EINVAL,
                  "ref %s: invalid conv descriptor (ic %" PRId64 ", oc %" PRId64
                  ", kernel %" PRId64 "x%" PRId64 ", stride %" PRId64 "x%" PRId64
                  ", padding %" PRId64 "x%" PRId64 ")",
                  op, cd->ic, cd->oc, cd->kh, cd->kw, cd->sh, cd->sw, cd->ph, cd->pw);
    ELLE_TRY(elle__ref_check_tensor(op, xname, x));
    ELLE_TRY(elle__ref_check_tensor(op, yname, y));
    if (x->c != cd->ic)
        ELLE_FAIL(ELLE_ESHAPE, "ref %s: %s %s has %" PRId64 " channels, conv expects %" PRId64, op,
                  xname, elle__ref_shape(x).s, x->c, cd->ic);
    int64_t oh = elle__ref_out_size(x->h, cd->kh, cd->sh, cd->ph);
    int64_t ow = elle__ref_out_size(x->w, cd->kw, cd->sw, cd->pw);
    if (oh <= 0 || ow <= 0)
        ELLE_FAIL(ELLE_ESHAPE,
                  "ref %s: kernel %" PRId64 "x%" PRId64 " with padding %" PRId64 "x%" PRId64
                  " does not fit %s %s",
                  op, cd->kh, cd->kw, cd->ph, cd->pw, xname, elle__ref_shape(x).s);
    if (y->n != x->n || y->c != cd->oc || y->h != oh || y->w != ow)
        ELLE_FAIL(ELLE_ESHAPE,
                  "ref %s: %s is %s, expected (%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                  ") for %s %s, kernel %" PRId64 "x%" PRId64 ", stride %" PRId64 "x%" PRId64
                  ", padding %" PRId64 "x%" PRId64,
                  op, yname, elle__ref_shape(y).s, x->n, cd->oc, oh, ow, xname,
                  elle__ref_shape(x).s, cd->kh, cd->kw, cd->sh, cd->sw, cd->ph, cd->pw);
    return ELLE_OK;
}

/* Offset of weight (o, i, ky, kx). */
static int64_t w_at(const elle__conv_desc *cd, int64_t o, int64_t i, int64_t ky, int64_t kx)
{
    return ((o * cd->ic + i) * cd->kh + ky) * cd->kw + kx;
}

int elle__ref_conv2d_fwd(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *x,
                         const float *w, const float *b, elle__tensor *y)
{
    (void)be;
    const char *op = "conv2d_fwd";
    ELLE_TRY(check_conv(op, cd, "x", x, "y", y));
    ELLE_TRY(elle__ref_check_ptr(op, "w", w));
    if (cd->has_bias)
        ELLE_TRY(elle__ref_check_ptr(op, "b (has_bias is set)", b));

    for (int64_t n = 0; n < x->n; n++)
        for (int64_t o = 0; o < cd->oc; o++)
            for (int64_t oy = 0; oy < y->h; oy++)
                for (int64_t ox = 0; ox < y->w; ox++) {
                    double sum = cd->has_bias ? (double)b[o] : 0.0;
                    for (int64_t i = 0; i < cd->ic; i++)
                        for (int64_t ky = 0; ky < cd->kh; ky++) {
                            int64_t iy = oy * cd->sh - cd->ph + ky;
                            if (iy < 0 || iy >= x->h)
                                continue; /* zero padding */
                            for (int64_t kx = 0; kx < cd->kw; kx++) {
                                int64_t ix = ox * cd->sw - cd->pw + kx;
                                if (ix < 0 || ix >= x->w)
                                    continue;
                                sum += (double)x->data[elle__ref_at(x, n, i, iy, ix)] *
                                       (double)w[w_at(cd, o, i, ky, kx)];
                            }
                        }
                    y->data[elle__ref_at(y, n, o, oy, ox)] = (float)sum;
                }
    return ELLE_OK;
}

int elle__ref_conv2d_bwd_data(elle__backend *be, const elle__conv_desc *cd,
                              const elle__tensor *dy, const float *w, elle__tensor *dx)
{
    (void)be;
    const char *op = "conv2d_bwd_data";
    ELLE_TRY(check_conv(op, cd, "dx", dx, "dy", dy));
    ELLE_TRY(elle__ref_check_ptr(op, "w", w));

    /* dx[n,i,iy,ix] = sum over every (o, oy, ox) whose window holds (iy, ix)
     * of dy[n,o,oy,ox] * w[o,i,ky,kx], with ky = iy + ph - oy*sh. */
    for (int64_t n = 0; n < dx->n; n++)
        for (int64_t i = 0; i < cd->ic; i++)
            for (int64_t iy = 0; iy < dx->h; iy++)
                for (int64_t ix = 0; ix < dx->w; ix++) {
                    int64_t oy0, oy1, ox0, ox1;
                    elle__ref_covering(iy, cd->kh, cd->sh, cd->ph, dy->h, &oy0, &oy1);
                    elle__ref_covering(ix, cd->kw, cd->sw, cd->pw, dy->w, &ox0, &ox1);
                    double sum = 0.0;
                    for (int64_t o = 0; o < cd->oc; o++)
                        for (int64_t oy = oy0; oy <= oy1; oy++) {
                            int64_t ky = iy + cd->ph - oy * cd->sh;
                            for (int64_t ox = ox0; ox <= ox1; ox++) {
                                int64_t kx = ix + cd->pw - ox * cd->sw;
                                sum += (double)dy->data[elle__ref_at(dy, n, o, oy, ox)] *
                                       (double)w[w_at(cd, o, i, ky, kx)];
                            }
                        }
                    dx->data[elle__ref_at(dx, n, i, iy, ix)] = (float)sum;
                }
    return ELLE_OK;
}

int elle__ref_conv2d_bwd_weights(elle__backend *be, const elle__conv_desc *cd,
                                 const elle__tensor *x, const elle__tensor *dy, float *dw,
                                 float *db)
{
    (void)be;
    const char *op = "conv2d_bwd_weights";
    ELLE_TRY(check_conv(op, cd, "x", x, "dy", dy));
    ELLE_TRY(elle__ref_check_ptr(op, "dw", dw));

    for (int64_t o = 0; o < cd->oc; o++)
        for (int64_t i = 0; i < cd->ic; i++)
            for (int64_t ky = 0; ky < cd->kh; ky++)
                for (int64_t kx = 0; kx < cd->kw; kx++) {
                    double sum = 0.0;
                    for (int64_t n = 0; n < x->n; n++)
                        for (int64_t oy = 0; oy < dy->h; oy++) {
                            int64_t iy = oy * cd->sh - cd->ph + ky;
                            if (iy < 0 || iy >= x->h)
                                continue;
                            for (int64_t ox = 0; ox < dy->w; ox++) {
                                int64_t ix = ox * cd->sw - cd->pw + kx;
                                if (ix < 0 || ix >= x->w)
                                    continue;
                                sum += (double)x->data[elle__ref_at(x, n, i, iy, ix)] *
                                       (double)dy->data[elle__ref_at(dy, n, o, oy, ox)];
                            }
                        }
                    dw[w_at(cd, o, i, ky, kx)] += (float)sum;
                }

    if (db) {
        for (int64_t o = 0; o < cd->oc; o++) {
            double sum = 0.0;
            for (int64_t n = 0; n < dy->n; n++)
                for (int64_t oy = 0; oy < dy->h; oy++)
                    for (int64_t ox = 0; ox < dy->w; ox++)
                        sum += (double)dy->data[elle__ref_at(dy, n, o, oy, ox)];
            db[o] += (float)sum;
        }
    }
    return ELLE_OK;
}

/* ---- fully connected ----------------------------------------------------- */

/* `x` (input shaped: x or dx, any h and w, flattened) and `y` (output shaped:
 * y or dy, (n, out, 1, 1)). */
static int check_linear(const char *op, const char *xname, const elle__tensor *x,
                        const char *yname, const elle__tensor *y)
{
    ELLE_TRY(elle__ref_check_tensor(op, xname, x));
    ELLE_TRY(elle__ref_check_tensor(op, yname, y));
    if (y->n != x->n || y->h != 1 || y->w != 1)
        ELLE_FAIL(ELLE_ESHAPE, "ref %s: %s is %s, expected (%" PRId64 ", out, 1, 1) for %s %s", op,
                  yname, elle__ref_shape(y).s, x->n, xname, elle__ref_shape(x).s);
    return ELLE_OK;
}

int elle__ref_linear_fwd(elle__backend *be, const elle__tensor *x, const float *w, const float *b,
                         elle__tensor *y)
{
    (void)be;
    const char *op = "linear_fwd";
    ELLE_TRY(check_linear(op, "x", x, "y", y));
    ELLE_TRY(elle__ref_check_ptr(op, "w", w));
    int64_t in = x->c * x->h * x->w, out = y->c;
    /* a plain NCHW sample is already flattened in torch.flatten's order */
    for (int64_t n = 0; n < x->n; n++)
        for (int64_t o = 0; o < out; o++) {
            double sum = b ? (double)b[o] : 0.0;
            for (int64_t j = 0; j < in; j++)
                sum += (double)w[o * in + j] * (double)x->data[n * in + j];
            y->data[n * out + o] = (float)sum;
        }
    return ELLE_OK;
}

int elle__ref_linear_bwd_data(elle__backend *be, const elle__tensor *dy, const float *w,
                              elle__tensor *dx)
{
    (void)be;
    const char *op = "linear_bwd_data";
    ELLE_TRY(check_linear(op, "dx", dx, "dy", dy));
    ELLE_TRY(elle__ref_check_ptr(op, "w", w));
    int64_t in = dx->c * dx->h * dx->w, out = dy->c;
    for (int64_t n = 0; n < dx->n; n++)
        for (int64_t j = 0; j < in; j++) {
            double sum = 0.0;
            for (int64_t o = 0; o < out; o++)
                sum += (double)dy->data[n * out + o] * (double)w[o * in + j];
            dx->data[n * in + j] = (float)sum;
        }
    return ELLE_OK;
}

int elle__ref_linear_bwd_weights(elle__backend *be, const elle__tensor *x, const elle__tensor *dy,
                                 float *dw, float *db)
{
    (void)be;
    const char *op = "linear_bwd_weights";
    ELLE_TRY(check_linear(op, "x", x, "dy", dy));
    ELLE_TRY(elle__ref_check_ptr(op, "dw", dw));
    int64_t in = x->c * x->h * x->w, out = dy->c;
    for (int64_t o = 0; o < out; o++)
        for (int64_t j = 0; j < in; j++) {
            double sum = 0.0;
            for (int64_t n = 0; n < x->n; n++)
                sum += (double)dy->data[n * out + o] * (double)x->data[n * in + j];
            dw[o * in + j] += (float)sum;
        }
    if (db) {
        for (int64_t o = 0; o < out; o++) {
            double sum = 0.0;
            for (int64_t n = 0; n < dy->n; n++)
                sum += (double)dy->data[n * out + o];
            db[o] += (float)sum;
        }
    }
    return ELLE_OK;
}
