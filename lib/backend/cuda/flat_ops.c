/*
 * The CUDA backend's flat elementwise ops, relu and add: argument checks in
 * the CPU backend's rules and words, then one kernel queued on the
 * context's stream (flat_kernels.cu). Nothing here allocates or waits.
 *
 * Agreement with the CPU and reference backends: relu, add, sign, scale,
 * fill, clamp, project_linf, uniform, axpy and sgd_update compute the same
 * IEEE operations in the same order with no fused multiply-add, so the
 * results are bit-identical to an x86-64 build of those backends (which
 * compiles without FMA). Two exceptions: the sign of a zero returned by
 * clamp when x and a bound are zeros of opposite signs follows the device's
 * fminf/fmaxf, and a host build that does contract (e.g. -march with FMA,
 * or an AArch64 compiler in GNU mode) rounds axpy, uniform and sgd_update
 * once where this rounds twice.
 */
#include <math.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/flat_kernels.h"
#include "core/error.h"

/* Flat ops take a count and arrays; n == 0 is a valid empty call. */
static int check_flat(const char *op, int64_t n, const void *x, const char *xname)
{
    if (n < 0)
        ELLE_FAIL(ELLE_EINVAL, "cuda %s: negative element count %" PRId64, op, n);
    return elle__cuda_check_ptr(op, xname, x);
}

/* ---- relu and add ------------------------------------------------------- */

int elle__cuda_relu_fwd(elle__backend *be, const elle__tensor *x, elle__tensor *y)
{
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_TRY(elle__cuda_check_same_shape("relu_fwd", "x", x, "y", y));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_relu_fwd(elle__cuda(be)->stream, elle__tensor_numel(x),
                                                x->data, y->data));
    return ELLE_OK;
}

int elle__cuda_relu_bwd(elle__backend *be, const elle__tensor *y, const elle__tensor *dy,
                        elle__tensor *dx)
{
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_TRY(elle__cuda_check_same_shape("relu_bwd", "y", y, "dy", dy));
    ELLE_TRY(elle__cuda_check_same_shape("relu_bwd", "y", y, "dx", dx));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_relu_bwd(elle__cuda(be)->stream, elle__tensor_numel(y),
                                                y->data, dy->data, dx->data));
    return ELLE_OK;
}

int elle__cuda_add(elle__backend *be, const elle__tensor *a, const elle__tensor *b,
                   elle__tensor *y)
{
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_TRY(elle__cuda_check_same_shape("add", "a", a, "b", b));
    ELLE_TRY(elle__cuda_check_same_shape("add", "a", a, "y", y));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_add(elle__cuda(be)->stream, elle__tensor_numel(a),
                                           a->data, b->data, y->data));
    return ELLE_OK;
}

/* ---- flat elementwise ops ----------------------------------------------- */

int elle__cuda_sign(elle__backend *be, int64_t n, const float *x, float *y)
{
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_TRY(check_flat("sign", n, x, "x"));
    ELLE_TRY(elle__cuda_check_ptr("sign", "y", y));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_sign(elle__cuda(be)->stream, n, x, y));
    return ELLE_OK;
}

int elle__cuda_axpy(elle__backend *be, int64_t n, float a, const float *x, float *y)
{
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_TRY(check_flat("axpy", n, x, "x"));
    ELLE_TRY(elle__cuda_check_ptr("axpy", "y", y));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_axpy(elle__cuda(be)->stream, n, a, x, y));
    return ELLE_OK;
}

int elle__cuda_scale(elle__backend *be, int64_t n, float a, float *x)
{
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_TRY(check_flat("scale", n, x, "x"));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_scale(elle__cuda(be)->stream, n, a, x));
    return ELLE_OK;
}

int elle__cuda_fill(elle__backend *be, int64_t n, float value, float *x)
{
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_TRY(check_flat("fill", n, x, "x"));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_fill(elle__cuda(be)->stream, n, value, x));
    return ELLE_OK;
}

int elle__cuda_clamp(elle__backend *be, int64_t n, float lo, float hi, float *x)
{
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_TRY(check_flat("clamp", n, x, "x"));
    if (!(lo <= hi))
        ELLE_FAIL(ELLE_EINVAL, "cuda clamp: empty or NaN interval [%g, %g]", (double)lo, (double)hi);
    ELLE_CUDA_LAUNCH(elle__cuda_launch_clamp(elle__cuda(be)->stream, n, lo, hi, x));
    return ELLE_OK;
}

int elle__cuda_project_linf(elle__backend *be, int64_t nsamples, int64_t per_sample,
                            const float *x0, float eps, const float *eps_per_sample,
                            int do_clamp, float lo, float hi, float *x)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = "project_linf";
    if (nsamples < 0 || per_sample < 0)
        ELLE_FAIL(ELLE_EINVAL, "cuda project_linf: negative size (%" PRId64 " samples of %" PRId64 ")",
                  nsamples, per_sample);
    if (per_sample > 0 && nsamples > INT64_MAX / (int64_t)sizeof(float) / per_sample)
        ELLE_FAIL(ELLE_EINVAL, "cuda project_linf: %" PRId64 " samples of %" PRId64 " floats is too large",
                  nsamples, per_sample);
    ELLE_TRY(elle__cuda_check_ptr(op, "x0", x0));
    ELLE_TRY(elle__cuda_check_ptr(op, "x", x));
    if (do_clamp && !(lo <= hi))
        ELLE_FAIL(ELLE_EINVAL, "cuda project_linf: empty or NaN clamp interval [%g, %g]", (double)lo,
                  (double)hi);
    /* per-sample radii are device memory, which the host does not read:
     * the kernel leaves a sample with a negative or NaN radius untouched */
    if (!eps_per_sample && nsamples > 0 && !(eps >= 0.0f))
        ELLE_FAIL(ELLE_EINVAL, "cuda project_linf: radius of sample 0 is %g (must be >= 0)",
                  (double)eps);
    ELLE_CUDA_LAUNCH(elle__cuda_launch_project_linf(elle__cuda(be)->stream, nsamples, per_sample,
                                                    x0, eps, eps_per_sample, do_clamp, lo, hi, x));
    return ELLE_OK;
}

int elle__cuda_uniform(elle__backend *be, int64_t n, uint64_t seed, uint64_t counter, float lo,
                       float hi, float *out)
{
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_TRY(check_flat("uniform", n, out, "out"));
    if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi))
        ELLE_FAIL(ELLE_EINVAL, "cuda uniform: invalid interval [%g, %g)", (double)lo, (double)hi);
    ELLE_CUDA_LAUNCH(elle__cuda_launch_uniform(elle__cuda(be)->stream, n, seed, counter, lo, hi,
                                               out));
    return ELLE_OK;
}

/* ---- optimisers ------------------------------------------------------ */

int elle__cuda_sgd_update(elle__backend *be, int64_t n, float lr, float momentum, float wd,
                          int nesterov, float *p, const float *grad, float *buf)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = "sgd_update";
    ELLE_TRY(check_flat(op, n, p, "p"));
    ELLE_TRY(elle__cuda_check_ptr(op, "grad", grad));
    ELLE_TRY(elle__cuda_check_ptr(op, "buf", buf));
    ELLE_CUDA_LAUNCH(elle__cuda_launch_sgd_update(elle__cuda(be)->stream, n, lr, momentum, wd,
                                                  nesterov != 0, p, grad, buf));
    return ELLE_OK;
}
