/* Convolution, pooling and batch-norm descriptor checks shared by the cpu
 * and cuda backends (desc_check.h). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "backend/desc_check.h"
#include "core/error.h"

typedef struct shape_str {
    char s[96];
} shape_str;

static shape_str shape(const elle__tensor *t)
{
    shape_str r;
    snprintf(r.s, sizeof r.s, "(%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 ")", t->n,
             t->c, t->h, t->w);
    return r;
}

int64_t elle__window_out(int64_t in, int64_t k, int64_t s, int64_t p)
{
    if (in + 2 * p < k)
        return 0;
    return (in + 2 * p - k) / s + 1;
}

int elle__check_conv_desc(const char *be, const char *op, const elle__conv_desc *cd)
{
    if (!cd)
        ELLE_FAIL(ELLE_EINVAL, "%s %s: conv descriptor is NULL", be, op);
    if (cd->ic <= 0 || cd->oc <= 0 || cd->kh <= 0 || cd->kw <= 0 || cd->sh <= 0 || cd->sw <= 0 ||
        cd->ph < 0 || cd->pw < 0)
        ELLE_FAIL(ELLE_EINVAL,
                  "%s %s: invalid conv descriptor (ic %" PRId64 ", oc %" PRId64
                  ", kernel %" PRId64 "x%" PRId64 ", stride %" PRId64 "x%" PRId64
                  ", padding %" PRId64 "x%" PRId64 ")",
                  be, op, cd->ic, cd->oc, cd->kh, cd->kw, cd->sh, cd->sw, cd->ph, cd->pw);
    return ELLE_OK;
}

int elle__check_conv_geometry(const char *be, const char *op, const elle__conv_desc *cd,
                              const char *xname, const elle__tensor *x, const char *yname,
                              const elle__tensor *y)
{
    if (x->c != cd->ic)
        ELLE_FAIL(ELLE_ESHAPE, "%s %s: %s %s has %" PRId64 " channels, conv expects %" PRId64,
                  be, op, xname, shape(x).s, x->c, cd->ic);
    int64_t oh = elle__window_out(x->h, cd->kh, cd->sh, cd->ph);
    int64_t ow = elle__window_out(x->w, cd->kw, cd->sw, cd->pw);
    if (oh <= 0 || ow <= 0)
        ELLE_FAIL(ELLE_ESHAPE,
                  "%s %s: kernel %" PRId64 "x%" PRId64 " with padding %" PRId64 "x%" PRId64
                  " does not fit %s %s",
                  be, op, cd->kh, cd->kw, cd->ph, cd->pw, xname, shape(x).s);
    if (y->n != x->n || y->c != cd->oc || y->h != oh || y->w != ow)
        ELLE_FAIL(ELLE_ESHAPE,
                  "%s %s: %s is %s, expected (%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                  ") for %s %s, kernel %" PRId64 "x%" PRId64 ", stride %" PRId64 "x%" PRId64
                  ", padding %" PRId64 "x%" PRId64,
                  be, op, yname, shape(y).s, x->n, cd->oc, oh, ow, xname, shape(x).s, cd->kh,
                  cd->kw, cd->sh, cd->sw, cd->ph, cd->pw);
    return ELLE_OK;
}

int elle__check_pool_desc(const char *be, const char *op, const elle__pool_desc *pd)
{
    if (!pd)
        ELLE_FAIL(ELLE_EINVAL, "%s %s: pool descriptor is NULL", be, op);
    if (pd->kind != ELLE__POOL_MAX && pd->kind != ELLE__POOL_AVG)
        ELLE_FAIL(ELLE_EINVAL, "%s %s: unknown pooling kind %d", be, op, pd->kind);
    if (pd->kh <= 0 || pd->kw <= 0 || pd->sh <= 0 || pd->sw <= 0 || pd->ph < 0 || pd->pw < 0)
        ELLE_FAIL(ELLE_EINVAL,
                  "%s %s: invalid pool descriptor (window %" PRId64 "x%" PRId64
                  ", stride %" PRId64 "x%" PRId64 ", padding %" PRId64 "x%" PRId64 ")",
                  be, op, pd->kh, pd->kw, pd->sh, pd->sw, pd->ph, pd->pw);
    /* PyTorch's rule; it also guarantees every max window holds a real input */
    if (2 * pd->ph > pd->kh || 2 * pd->pw > pd->kw)
        ELLE_FAIL(ELLE_EINVAL,
                  "%s %s: padding %" PRId64 "x%" PRId64 " is more than half the window %" PRId64
                  "x%" PRId64,
                  be, op, pd->ph, pd->pw, pd->kh, pd->kw);
    return ELLE_OK;
}

int elle__check_pool_geometry(const char *be, const char *op, const elle__pool_desc *pd,
                              const char *xname, const elle__tensor *x, const char *yname,
                              const elle__tensor *y)
{
    int64_t oh = elle__window_out(x->h, pd->kh, pd->sh, pd->ph);
    int64_t ow = elle__window_out(x->w, pd->kw, pd->sw, pd->pw);
    if (oh <= 0 || ow <= 0)
        ELLE_FAIL(ELLE_ESHAPE,
                  "%s %s: window %" PRId64 "x%" PRId64 " with padding %" PRId64 "x%" PRId64
                  " does not fit %s %s",
                  be, op, pd->kh, pd->kw, pd->ph, pd->pw, xname, shape(x).s);
    if (y->n != x->n || y->c != x->c || y->h != oh || y->w != ow)
        ELLE_FAIL(ELLE_ESHAPE,
                  "%s %s: %s is %s, expected (%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                  ") for %s %s, window %" PRId64 "x%" PRId64 ", stride %" PRId64 "x%" PRId64
                  ", padding %" PRId64 "x%" PRId64,
                  be, op, yname, shape(y).s, x->n, x->c, oh, ow, xname, shape(x).s, pd->kh,
                  pd->kw, pd->sh, pd->sw, pd->ph, pd->pw);
    return ELLE_OK;
}

int elle__check_bn(const char *be, const char *op, const elle__bn_desc *bd,
                   const elle__tensor *x)
{
    if (!bd)
        ELLE_FAIL(ELLE_EINVAL, "%s %s: bn descriptor is NULL", be, op);
    if (bd->c <= 0)
        ELLE_FAIL(ELLE_EINVAL, "%s %s: invalid channel count %" PRId64, be, op, bd->c);
    if (!(bd->eps >= 0.0f) || !isfinite(bd->eps))
        ELLE_FAIL(ELLE_EINVAL, "%s %s: invalid eps %g", be, op, (double)bd->eps);
    if (x->c != bd->c)
        ELLE_FAIL(ELLE_ESHAPE, "%s %s: x %s has %" PRId64 " channels, batch norm expects %" PRId64,
                  be, op, shape(x).s, x->c, bd->c);
    return ELLE_OK;
}
