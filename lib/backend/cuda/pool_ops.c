/*
 * Pooling on the CUDA backend: the argument checks (the CPU backend's rules,
 * plus the reference's int32 limit on a plane, the width of an argmax) in
 * front of the kernels of pool_kernels.cu.
 *
 * Max pooling's workspace is the reference's: one int32 argmax per output
 * element, its position inside the (n, c) input plane. Average pooling has
 * none.
 */
#include "backend/cuda/cuda_internal.h"
#include "backend/desc_check.h"
#include "backend/cuda/pool_kernels.h"
#include "core/error.h"

/* The descriptor, `x` (input shaped: x or dx) and `y` (output shaped: y or
 * dy); need_data 0: shapes only (the workspace size query). */
static int check_pool(const char *op, const elle__pool_desc *pd, const char *xname,
                      const elle__tensor *x, const char *yname, const elle__tensor *y,
                      int need_data)
{
    int (*check)(const char *, const char *, const elle__tensor *) =
        need_data ? elle__cuda_check_tensor : elle__cuda_check_shape;
    ELLE_TRY(elle__check_pool_desc("cuda", op, pd));
    ELLE_TRY(check(op, xname, x));
    ELLE_TRY(check(op, yname, y));
    ELLE_TRY(elle__check_pool_geometry("cuda", op, pd, xname, x, yname, y));
    if (pd->kind == ELLE__POOL_MAX && x->h * x->w > INT32_MAX)
        ELLE_FAIL(ELLE_ESHAPE, "cuda %s: %s plane %s is too large for int32 argmax indices", op,
                  xname, elle__cuda_shape(x).s);
    return ELLE_OK;
}

static elle__cuda_pool_geom geom(const elle__pool_desc *pd, const elle__tensor *x,
                                 const elle__tensor *y)
{
    elle__cuda_pool_geom g = {.n = x->n, .c = x->c, .h = x->h, .w = x->w, .oh = y->h,
                              .ow = y->w, .kh = pd->kh, .kw = pd->kw, .sh = pd->sh,
                              .sw = pd->sw, .ph = pd->ph, .pw = pd->pw};
    return g;
}

size_t elle__cuda_pool_workspace_bytes(elle__backend *be, const elle__pool_desc *pd,
                                       const elle__tensor *x, const elle__tensor *y)
{
    if (!be || !pd || pd->kind != ELLE__POOL_MAX ||
        check_pool("pool_workspace_bytes", pd, "x", x, "y", y, 0) < 0)
        return 0; /* the forward reports the error */
    return (size_t)elle__tensor_numel(y) * sizeof(int32_t);
}

int elle__cuda_pool_fwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *x,
                        elle__tensor *y, void *ws)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = "pool_fwd";
    ELLE_TRY(check_pool(op, pd, "x", x, "y", y, 1));
    const int is_max = pd->kind == ELLE__POOL_MAX;
    if (is_max)
        ELLE_TRY(elle__cuda_check_ptr(op, "ws (max pooling)", ws));
    const elle__cuda_pool_geom g = geom(pd, x, y);
    ELLE_CUDA_LAUNCH(elle__cuda_launch_pool_fwd(elle__cuda(be)->stream, &g, is_max, x->data,
                                                y->data, is_max ? (int32_t *)ws : NULL));
    return ELLE_OK;
}

int elle__cuda_pool_bwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *dy,
                        const void *ws, elle__tensor *dx)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = "pool_bwd";
    ELLE_TRY(check_pool(op, pd, "dx", dx, "dy", dy, 1));
    const int is_max = pd->kind == ELLE__POOL_MAX;
    if (is_max)
        ELLE_TRY(elle__cuda_check_ptr(op, "ws (max pooling)", ws));
    const elle__cuda_pool_geom g = geom(pd, dx, dy);
    ELLE_CUDA_LAUNCH(elle__cuda_launch_pool_bwd(elle__cuda(be)->stream, &g, is_max, dy->data,
                                                is_max ? (const int32_t *)ws : NULL, dx->data));
    return ELLE_OK;
}

int elle__cuda_pool_fwd_tangent(elle__backend *be, const elle__pool_desc *pd,
                                const elle__tensor *x, const elle__tensor *y, const void *ws,
                                const elle__tensor *xt, elle__tensor *yt)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = "pool_fwd_tangent";
    ELLE_TRY(elle__cuda_check_ptr(op, "pool descriptor", pd));
    ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "xt", xt));
    ELLE_TRY(elle__cuda_check_same_shape(op, "y", y, "yt", yt));
    if (pd->kind != ELLE__POOL_MAX)
        return elle__cuda_pool_fwd(be, pd, xt, yt, NULL); /* linear: the same average */
    if (pd->kh <= 0 || pd->kw <= 0 || pd->sh <= 0 || pd->sw <= 0 || pd->ph < 0 || pd->pw < 0 ||
        y->n != x->n || y->c != x->c ||
        y->h != elle__window_out(x->h, pd->kh, pd->sh, pd->ph) ||
        y->w != elle__window_out(x->w, pd->kw, pd->sw, pd->pw))
        ELLE_FAIL(ELLE_ESHAPE,
                  "cuda %s: y %s is not the max pooling of x %s (window %" PRId64 "x%" PRId64
                  ", stride %" PRId64 ", padding %" PRId64 ")",
                  op, elle__cuda_shape(y).s, elle__cuda_shape(x).s, pd->kh, pd->kw, pd->sh,
                  pd->ph);
    if (x->h * x->w > INT32_MAX)
        ELLE_FAIL(ELLE_ESHAPE, "cuda %s: x plane %s is too large for int32 argmax indices", op,
                  elle__cuda_shape(x).s);
    ELLE_TRY(elle__cuda_check_ptr(op, "ws (max pooling)", ws));
    /* the forward's routing, as the reference; an index that is not this
     * forward's cannot be checked from the host, the kernel writes NaN */
    const elle__cuda_pool_geom g = geom(pd, x, y);
    ELLE_CUDA_LAUNCH(elle__cuda_launch_pool_max_tangent(elle__cuda(be)->stream, &g, ws, xt->data,
                                                        yt->data));
    return ELLE_OK;
}
