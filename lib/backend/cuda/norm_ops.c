/*
 * Batch normalisation on the CUDA backend: the argument checks (the CPU
 * backend's rules) in front of the kernels of norm_kernels.cu.
 *
 * The fused relu's mask is read back from the forward's y (y > 0), as the
 * reference does, so there is no workspace (bn_workspace_bytes is 0 and ws
 * is ignored) and every backward or tangent op with fuse_relu needs y.
 * Per-channel sums and coefficients live in the shared device workspace for
 * the duration of one op.
 */

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/norm_kernels.h"
#include "backend/desc_check.h"
#include "core/error.h"

static int check_bn(const char *op, const elle__bn_desc *bd, const elle__tensor *x)
{
    ELLE_TRY(elle__cuda_check_tensor(op, "x", x));
    return elle__check_bn("cuda", op, bd, x);
}

/* After check_bn: y when the relu is fused (its mask), gamma and the
 * statistics. */
static int check_bn_stats(const char *op, const elle__bn_desc *bd, const elle__tensor *x,
                          const elle__tensor *y, const float *gamma, const float *mean,
                          const float *var)
{
    if (bd->fuse_relu)
        ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "y (fuse_relu)", y));
    ELLE_TRY(elle__cuda_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__cuda_check_ptr(op, "mean", mean));
    ELLE_TRY(elle__cuda_check_ptr(op, "var", var));
    return ELLE_OK;
}

static int scratch(elle__backend *be, const elle__tensor *x, void **out)
{
    return elle__cuda_workspace(be, elle__cuda_bn_scratch_bytes(x->n, x->c, x->h * x->w), out);
}

size_t elle__cuda_bn_workspace_bytes(elle__backend *be, const elle__bn_desc *bd,
                                     const elle__tensor *x)
{
    (void)be;
    (void)bd;
    (void)x;
    return 0; /* the fused relu mask is read back from y */
}

int elle__cuda_bn_fwd_train(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                            const float *gamma, const float *beta, float *running_mean,
                            float *running_var, elle__tensor *y, float *save_mean,
                            float *save_var, void *ws)
{
    ELLE_TRY(elle__cuda_enter(be));
    (void)ws;
    const char *op = "bn_fwd_train";
    ELLE_TRY(check_bn(op, bd, x));
    if (!(bd->momentum >= 0.0f && bd->momentum <= 1.0f))
        ELLE_FAIL(ELLE_EINVAL, "cuda %s: momentum %g is outside [0, 1]", op,
                  (double)bd->momentum);
    ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "y", y));
    ELLE_TRY(elle__cuda_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__cuda_check_ptr(op, "beta", beta));
    ELLE_TRY(elle__cuda_check_ptr(op, "running_mean", running_mean));
    ELLE_TRY(elle__cuda_check_ptr(op, "running_var", running_var));
    ELLE_TRY(elle__cuda_check_ptr(op, "save_mean", save_mean));
    ELLE_TRY(elle__cuda_check_ptr(op, "save_var", save_var));
    void *sc;
    ELLE_TRY(scratch(be, x, &sc));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_bn_fwd_train(
        elle__cuda(be)->stream, x->n, x->c, x->h * x->w, bd->eps, bd->momentum, bd->fuse_relu,
        x->data, gamma, beta, running_mean, running_var, y->data, save_mean, save_var, sc));
    return ELLE_OK;
}

int elle__cuda_bn_fwd_infer(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                            const float *gamma, const float *beta, const float *running_mean,
                            const float *running_var, elle__tensor *y, void *ws)
{
    ELLE_TRY(elle__cuda_enter(be));
    (void)ws;
    const char *op = "bn_fwd_infer";
    ELLE_TRY(check_bn(op, bd, x));
    ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "y", y));
    ELLE_TRY(elle__cuda_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__cuda_check_ptr(op, "beta", beta));
    ELLE_TRY(elle__cuda_check_ptr(op, "running_mean", running_mean));
    ELLE_TRY(elle__cuda_check_ptr(op, "running_var", running_var));
    void *sc;
    ELLE_TRY(scratch(be, x, &sc));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_bn_fwd_infer(
        elle__cuda(be)->stream, x->n, x->c, x->h * x->w, bd->eps, bd->fuse_relu, x->data, gamma,
        beta, running_mean, running_var, y->data, sc));
    return ELLE_OK;
}

int elle__cuda_bn_bwd(elle__backend *be, const elle__bn_desc *bd, int training,
                      const elle__tensor *x, const elle__tensor *y, const elle__tensor *dy,
                      const float *gamma, const float *mean, const float *var, const void *ws,
                      elle__tensor *dx, float *dgamma, float *dbeta)
{
    ELLE_TRY(elle__cuda_enter(be));
    (void)ws;
    const char *op = "bn_bwd";
    ELLE_TRY(check_bn(op, bd, x));
    ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "dy", dy));
    ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "dx", dx));
    ELLE_TRY(check_bn_stats(op, bd, x, y, gamma, mean, var));
    void *sc;
    ELLE_TRY(scratch(be, x, &sc));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_bn_bwd(
        elle__cuda(be)->stream, x->n, x->c, x->h * x->w, bd->eps, training, x->data,
        bd->fuse_relu ? y->data : NULL, dy->data, gamma, mean, var, dx->data, dgamma, dbeta, sc));
    return ELLE_OK;
}

int elle__cuda_bn_fwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                              const elle__tensor *x, const elle__tensor *y,
                              const elle__tensor *xt, const float *gamma, const float *mean,
                              const float *var, const void *ws, elle__tensor *yt)
{
    ELLE_TRY(elle__cuda_enter(be));
    (void)ws;
    const char *op = "bn_fwd_tangent";
    ELLE_TRY(check_bn(op, bd, x));
    ELLE_TRY(check_bn_stats(op, bd, x, y, gamma, mean, var));
    ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "xt", xt));
    ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "yt", yt));
    void *sc;
    ELLE_TRY(scratch(be, x, &sc));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_bn_fwd_tangent(
        elle__cuda(be)->stream, x->n, x->c, x->h * x->w, bd->eps, training, x->data,
        bd->fuse_relu ? y->data : NULL, xt->data, gamma, mean, var, yt->data, sc));
    return ELLE_OK;
}

int elle__cuda_bn_bwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                              const elle__tensor *x, const elle__tensor *y,
                              const elle__tensor *xt, const elle__tensor *dy,
                              const elle__tensor *dyt, const float *gamma, const float *mean,
                              const float *var, const void *ws, elle__tensor *dxt,
                              float *dgamma_t, float *dbeta_t)
{
    ELLE_TRY(elle__cuda_enter(be));
    (void)ws;
    const char *op = "bn_bwd_tangent";
    ELLE_TRY(check_bn(op, bd, x));
    ELLE_TRY(check_bn_stats(op, bd, x, y, gamma, mean, var));
    ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "xt", xt));
    ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "dy", dy));
    ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "dyt", dyt));
    if (dxt)
        ELLE_TRY(elle__cuda_check_same_shape(op, "x", x, "dxt", dxt));
    void *sc;
    ELLE_TRY(scratch(be, x, &sc));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_bn_bwd_tangent(
        elle__cuda(be)->stream, x->n, x->c, x->h * x->w, bd->eps, training, x->data,
        bd->fuse_relu ? y->data : NULL, xt->data, dy->data, dyt->data, gamma, mean, var,
        dxt ? dxt->data : NULL, dgamma_t, dbeta_t, sc));
    return ELLE_OK;
}
