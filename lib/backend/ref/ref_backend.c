/*
 * The reference backend: every op of backend.h in the most obvious C loops,
 * plain NCHW layout only, reductions accumulated in double. It is the yard
 * stick the oneDNN and CUDA backends are checked against (DESIGN.md §5), so
 * clarity wins over speed everywhere.
 *
 * This file: the op table, memory, layouts, the argument checks shared by
 * the ref_*.c files, and the flat elementwise ops used by attacks and
 * optimisers. Convolution and linear layers are in ref_conv.c, batch norm in
 * ref_norm.c, relu/add/pooling/cross-entropy in ref_misc.c, the tangent ops
 * of the second-order primitive in ref_tangent.c.
 *
 * The backend keeps no state: nothing is cached (there is nothing to plan),
 * so `impl` stays NULL and ops never allocate.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/host_memory.h"
#include "backend/ref/ref_internal.h"
#include "core/error.h"
#include "core/rng.h"
#include "elle/context.h"


/* ---- shared argument checks ------------------------------------------- */

elle__ref_shape_str elle__ref_shape(const elle__tensor *t)
{
    elle__ref_shape_str r;
    snprintf(r.s, sizeof r.s, "(%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 ")", t->n, t->c,
             t->h, t->w);
    return r;
}

int elle__ref_check_ptr(const char *op, const char *name, const void *p)
{
    if (!p)
        ELLE_FAIL(ELLE_EINVAL, "ref %s: %s is NULL", op, name);
    return ELLE_OK;
}

int elle__ref_check_tensor(const char *op, const char *name, const elle__tensor *t)
{
    if (!t)
        ELLE_FAIL(ELLE_EINVAL, "ref %s: tensor %s is NULL", op, name);
    if (!t->data)
        ELLE_FAIL(ELLE_EINVAL, "ref %s: tensor %s has no data (NULL)", op, name);
    const int64_t dims[4] = {t->n, t->c, t->h, t->w};
    int64_t numel = 1;
    for (int i = 0; i < 4; i++) {
        if (dims[i] <= 0)
            ELLE_FAIL(ELLE_ESHAPE, "ref %s: tensor %s has shape %s; every dimension must be positive",
                      op, name, elle__ref_shape(t).s);
        /* the byte size must fit in int64 (and so in size_t on 64-bit hosts) */
        if (dims[i] > INT64_MAX / (int64_t)sizeof(float) / numel)
            ELLE_FAIL(ELLE_ESHAPE, "ref %s: tensor %s of shape %s is too large", op, name,
                      elle__ref_shape(t).s);
        numel *= dims[i];
    }
    if (t->layout != ELLE__LAYOUT_PLAIN)
        ELLE_FAIL(ELLE_EUNSUPPORTED,
                  "ref %s: tensor %s has layout %d; the reference backend only handles the plain "
                  "NCHW layout (%d)",
                  op, name, t->layout, ELLE__LAYOUT_PLAIN);
    return ELLE_OK;
}

int elle__ref_check_same_shape(const char *op, const char *name_a, const elle__tensor *a,
                               const char *name_b, const elle__tensor *b)
{
    ELLE_TRY(elle__ref_check_tensor(op, name_a, a));
    ELLE_TRY(elle__ref_check_tensor(op, name_b, b));
    if (a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
        ELLE_FAIL(ELLE_ESHAPE, "ref %s: %s has shape %s but %s has shape %s", op, name_a,
                  elle__ref_shape(a).s, name_b, elle__ref_shape(b).s);
    return ELLE_OK;
}

/* Flat ops take a count and arrays; n == 0 is a valid empty call. */
static int check_flat(const char *op, int64_t n, const void *x, const char *xname)
{
    if (n < 0)
        ELLE_FAIL(ELLE_EINVAL, "ref %s: negative element count %" PRId64, op, n);
    return elle__ref_check_ptr(op, xname, x);
}

/* ---- lifetime ----------------------------------------------------------- */

static void ref_destroy(elle__backend *be)
{
    if (!be)
        return;
    be->impl = NULL; /* nothing was allocated */
}

static int ref_set_threads(elle__backend *be, int threads)
{
    /* single-threaded by design: results must not depend on a thread count */
    (void)be;
    (void)threads;
    return ELLE_OK;
}

static int ref_sync(elle__backend *be)
{
    (void)be;
    return ELLE_OK; /* every op has finished when it returns */
}

/* ---- memory ------------------------------------------------------------- */

/* ---- layouts ------------------------------------------------------------ */

static int ref_layout_for(elle__backend *be, int64_t c, int64_t h, int64_t w)
{
    (void)be;
    (void)c;
    (void)h;
    (void)w;
    return ELLE__LAYOUT_PLAIN;
}

static size_t ref_tensor_bytes(elle__backend *be, const elle__tensor *t)
{
    (void)be;
    if (!t || t->n < 0 || t->c < 0 || t->h < 0 || t->w < 0)
        return 0;
    return (size_t)elle__tensor_numel(t) * sizeof(float);
}

static int ref_to_plain(elle__backend *be, const elle__tensor *src, float *dst)
{
    (void)be;
    ELLE_TRY(elle__ref_check_tensor("to_plain", "src", src));
    ELLE_TRY(elle__ref_check_ptr("to_plain", "dst", dst));
    memmove(dst, src->data, (size_t)elle__tensor_numel(src) * sizeof(float));
    return ELLE_OK;
}

static int ref_from_plain(elle__backend *be, const float *src, elle__tensor *dst)
{
    (void)be;
    ELLE_TRY(elle__ref_check_ptr("from_plain", "src", src));
    ELLE_TRY(elle__ref_check_tensor("from_plain", "dst", dst));
    memmove(dst->data, src, (size_t)elle__tensor_numel(dst) * sizeof(float));
    return ELLE_OK;
}

/* ---- flat elementwise ops ----------------------------------------------- */

static int ref_sign(elle__backend *be, int64_t n, const float *x, float *y)
{
    (void)be;
    ELLE_TRY(check_flat("sign", n, x, "x"));
    ELLE_TRY(elle__ref_check_ptr("sign", "y", y));
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        /* sign(0) = sign(-0) = 0; NaN stays NaN (the last branch) */
        y[i] = v > 0.0f ? 1.0f : v < 0.0f ? -1.0f : v == 0.0f ? 0.0f : v;
    }
    return ELLE_OK;
}

static int ref_axpy(elle__backend *be, int64_t n, float a, const float *x, float *y)
{
    (void)be;
    ELLE_TRY(check_flat("axpy", n, x, "x"));
    ELLE_TRY(elle__ref_check_ptr("axpy", "y", y));
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
    return ELLE_OK;
}

static int ref_scale(elle__backend *be, int64_t n, float a, float *x)
{
    (void)be;
    ELLE_TRY(check_flat("scale", n, x, "x"));
    for (int64_t i = 0; i < n; i++)
        x[i] *= a;
    return ELLE_OK;
}

static int ref_fill(elle__backend *be, int64_t n, float value, float *x)
{
    (void)be;
    ELLE_TRY(check_flat("fill", n, x, "x"));
    for (int64_t i = 0; i < n; i++)
        x[i] = value;
    return ELLE_OK;
}

static int ref_clamp(elle__backend *be, int64_t n, float lo, float hi, float *x)
{
    (void)be;
    ELLE_TRY(check_flat("clamp", n, x, "x"));
    if (!(lo <= hi))
        ELLE_FAIL(ELLE_EINVAL, "ref clamp: empty or NaN interval [%g, %g]", (double)lo, (double)hi);
    for (int64_t i = 0; i < n; i++)
        x[i] = fminf(fmaxf(x[i], lo), hi);
    return ELLE_OK;
}

static int ref_project_linf(elle__backend *be, int64_t nsamples, int64_t per_sample,
                            const float *x0, float eps, const float *eps_per_sample, int do_clamp,
                            float lo, float hi, float *x)
{
    (void)be;
    if (nsamples < 0 || per_sample < 0)
        ELLE_FAIL(ELLE_EINVAL, "ref project_linf: negative size (%" PRId64 " samples of %" PRId64 ")",
                  nsamples, per_sample);
    ELLE_TRY(elle__ref_check_ptr("project_linf", "x0", x0));
    ELLE_TRY(elle__ref_check_ptr("project_linf", "x", x));
    if (do_clamp && !(lo <= hi))
        ELLE_FAIL(ELLE_EINVAL, "ref project_linf: empty or NaN clamp interval [%g, %g]", (double)lo,
                  (double)hi);
    /* check every radius before touching x, so a failure leaves x as it was */
    for (int64_t s = 0; s < nsamples; s++) {
        float e = eps_per_sample ? eps_per_sample[s] : eps;
        if (!(e >= 0.0f))
            ELLE_FAIL(ELLE_EINVAL, "ref project_linf: radius of sample %" PRId64 " is %g (must be >= 0)",
                      s, (double)e);
    }
    for (int64_t s = 0; s < nsamples; s++) {
        double e = eps_per_sample ? eps_per_sample[s] : eps;
        for (int64_t j = 0; j < per_sample; j++) {
            int64_t i = s * per_sample + j;
            double c = x0[i];
            double d = (double)x[i] - c;
            /* points inside the ball are left bit-for-bit unchanged; outside
             * ones land on its face */
            if (d > e)
                x[i] = (float)(c + e);
            else if (d < -e)
                x[i] = (float)(c - e);
            if (do_clamp)
                x[i] = fminf(fmaxf(x[i], lo), hi);
        }
    }
    return ELLE_OK;
}

static int ref_uniform(elle__backend *be, int64_t n, uint64_t seed, uint64_t counter, float lo,
                       float hi, float *out)
{
    (void)be;
    ELLE_TRY(check_flat("uniform", n, out, "out"));
    if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi))
        ELLE_FAIL(ELLE_EINVAL, "ref uniform: invalid interval [%g, %g)", (double)lo, (double)hi);
    /* the one stream definition shared by every backend (core/rng.c) */
    elle__rng_uniform_range(seed, counter, 0, n, lo, hi, out);
    return ELLE_OK;
}

/* ---- optimisers -------------------------------------------------------- */

static int ref_sgd_update(elle__backend *be, int64_t n, float lr, float momentum, float wd,
                          int nesterov, float *p, const float *grad, float *buf)
{
    (void)be;
    ELLE_TRY(check_flat("sgd_update", n, p, "p"));
    ELLE_TRY(elle__ref_check_ptr("sgd_update", "grad", grad));
    ELLE_TRY(elle__ref_check_ptr("sgd_update", "buf", buf));
    /* float arithmetic in PyTorch's order (torch.optim.SGD, foreach=False), so
     * the result is the one a float32 PyTorch step gives up to its use of FMA */
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i] + wd * p[i];
        float b = momentum * buf[i] + g;
        buf[i] = b;
        p[i] -= lr * (nesterov ? g + momentum * b : b);
    }
    return ELLE_OK;
}

/* ---- the table ------------------------------------------------------- */

static const elle__backend_ops ref_ops = {
    .abi_version = ELLE__BACKEND_ABI_VERSION,
    .name = "reference",
    .destroy = ref_destroy,
    .set_threads = ref_set_threads,
    .sync = ref_sync,
    .alloc = elle__host_op_alloc,
    .free = elle__host_op_free,
    .copy_to_device = elle__host_op_copy_to_device,
    .copy_to_host = elle__host_op_copy_to_host,
    .copy = elle__host_op_copy,
    .memzero = elle__host_op_memzero,
    .layout_for = ref_layout_for,
    .tensor_bytes = ref_tensor_bytes,
    .to_plain = ref_to_plain,
    .from_plain = ref_from_plain,
    .conv2d_fwd = elle__ref_conv2d_fwd,
    .conv2d_bwd_data = elle__ref_conv2d_bwd_data,
    .conv2d_bwd_weights = elle__ref_conv2d_bwd_weights,
    .bn_workspace_bytes = elle__ref_bn_workspace_bytes,
    .bn_fwd_train = elle__ref_bn_fwd_train,
    .bn_fwd_infer = elle__ref_bn_fwd_infer,
    .bn_bwd = elle__ref_bn_bwd,
    .relu_fwd = elle__ref_relu_fwd,
    .relu_bwd = elle__ref_relu_bwd,
    .add = elle__ref_add,
    .pool_workspace_bytes = elle__ref_pool_workspace_bytes,
    .pool_fwd = elle__ref_pool_fwd,
    .pool_bwd = elle__ref_pool_bwd,
    .linear_fwd = elle__ref_linear_fwd,
    .linear_bwd_data = elle__ref_linear_bwd_data,
    .linear_bwd_weights = elle__ref_linear_bwd_weights,
    .xent_fwd = elle__ref_xent_fwd,
    .xent_bwd = elle__ref_xent_bwd,
    .sign = ref_sign,
    .axpy = ref_axpy,
    .scale = ref_scale,
    .fill = ref_fill,
    .clamp = ref_clamp,
    .project_linf = ref_project_linf,
    .uniform = ref_uniform,
    .sgd_update = ref_sgd_update,
    .bn_fwd_tangent = elle__ref_bn_fwd_tangent,
    .bn_bwd_tangent = elle__ref_bn_bwd_tangent,
    .pool_fwd_tangent = elle__ref_pool_fwd_tangent,
    .xent_tangent = elle__ref_xent_tangent,
};

int elle__backend_ref_create(elle__backend *be)
{
    if (!be)
        ELLE_FAIL(ELLE_EINVAL, "elle__backend_ref_create: be is NULL");
    be->ops = &ref_ops;
    be->impl = NULL;
    be->kind = ELLE_BACKEND_REFERENCE;
    be->threads = 0;
    return ELLE_OK;
}
