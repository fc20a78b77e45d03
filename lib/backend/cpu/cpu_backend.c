/*
 * The CPU backend: oneDNN 2.6 for convolution, batch norm, pooling and the
 * fully connected layer (dnnl_*.c), OpenMP loops for everything elementwise.
 *
 * This file: the op table, lifetime, memory, layouts, the argument checks
 * shared with the dnnl_*.c files, and the loops (relu, add, softmax
 * cross-entropy, the flat attack/optimiser ops). The tangent ops of the
 * second-order primitive are in cpu_tangent.c.
 *
 * Layouts. A feature map of c >= 16 channels lives in nChw16c (nChw8c on
 * machines without AVX-512), one of 8..15 channels in nChw8c, anything
 * smaller (the image, logits) plain. Padded channels stay zero: oneDNN keeps
 * them so, and the loops here map zero to zero (relu(0) = 0, 0 + 0 = 0,
 * mask * 0 = 0), so they run over the whole padded buffer without looking at
 * the layout.
 *
 * Loops whose result must not depend on the thread count (every one here is
 * elementwise or per row) use static OpenMP schedules; uniform splits the
 * stream at multiples of 4 so that no Philox block is shared by two threads
 * and each element is a pure function of its index.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "backend/host_memory.h"
#include "core/error.h"
#include "core/rng.h"
#include "elle/context.h"


/* Loops shorter than this run on one thread: forking costs more. */
#define PAR_MIN 32768

/* ---- shared argument checks ------------------------------------------- */

elle__cpu_shape_str elle__cpu_shape(const elle__tensor *t)
{
    elle__cpu_shape_str r;
    const char *lay = t->layout == ELLE__LAYOUT_PLAIN         ? "plain"
                      : t->layout == ELLE__CPU_LAYOUT_NCHW8C  ? "nChw8c"
                      : t->layout == ELLE__CPU_LAYOUT_NCHW16C ? "nChw16c"
                                                              : "unknown layout";
    snprintf(r.s, sizeof r.s, "(%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 ", %s)", t->n,
             t->c, t->h, t->w, lay);
    return r;
}

int elle__cpu_check_ptr(const char *op, const char *name, const void *p)
{
    if (!p)
        ELLE_FAIL(ELLE_EINVAL, "cpu %s: %s is NULL", op, name);
    return ELLE_OK;
}

int elle__cpu_check_tensor(const char *op, const char *name, const elle__tensor *t)
{
    ELLE_TRY(elle__cpu_check_shape(op, name, t));
    if (!t->data)
        ELLE_FAIL(ELLE_EINVAL, "cpu %s: tensor %s has no data (NULL)", op, name);
    return ELLE_OK;
}

int elle__cpu_check_shape(const char *op, const char *name, const elle__tensor *t)
{
    if (!t)
        ELLE_FAIL(ELLE_EINVAL, "cpu %s: tensor %s is NULL", op, name);
    int block = elle__cpu_layout_block(t->layout);
    if (block == 0)
        ELLE_FAIL(ELLE_EINVAL, "cpu %s: tensor %s has layout %d, not one of this backend's", op,
                  name, t->layout);
    const int64_t dims[4] = {t->n, (t->c + block - 1) / block * block, t->h, t->w};
    int64_t numel = 1;
    for (int i = 0; i < 4; i++) {
        if (dims[i] <= 0 || t->c <= 0)
            ELLE_FAIL(ELLE_ESHAPE, "cpu %s: tensor %s has shape %s; every dimension must be positive",
                      op, name, elle__cpu_shape(t).s);
        /* the padded byte size must fit in int64 (and so in size_t); oneDNN
         * dims are int64 */
        if (dims[i] > INT64_MAX / (int64_t)sizeof(float) / numel)
            ELLE_FAIL(ELLE_ESHAPE, "cpu %s: tensor %s of shape %s is too large", op, name,
                      elle__cpu_shape(t).s);
        numel *= dims[i];
    }
    return ELLE_OK;
}

int elle__cpu_check_same_shape(const char *op, const char *name_a, const elle__tensor *a,
                               const char *name_b, const elle__tensor *b)
{
    ELLE_TRY(elle__cpu_check_tensor(op, name_a, a));
    ELLE_TRY(elle__cpu_check_tensor(op, name_b, b));
    if (a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
        ELLE_FAIL(ELLE_ESHAPE, "cpu %s: %s has shape %s but %s has shape %s", op, name_a,
                  elle__cpu_shape(a).s, name_b, elle__cpu_shape(b).s);
    return ELLE_OK;
}

int elle__cpu_check_same_layout(const char *op, const char *name_a, const elle__tensor *a,
                                const char *name_b, const elle__tensor *b)
{
    ELLE_TRY(elle__cpu_check_same_shape(op, name_a, a, name_b, b));
    if (a->layout != b->layout)
        ELLE_FAIL(ELLE_EINVAL, "cpu %s: %s %s and %s %s must have the same layout", op, name_a,
                  elle__cpu_shape(a).s, name_b, elle__cpu_shape(b).s);
    return ELLE_OK;
}

/* Flat ops take a count and arrays; n == 0 is a valid empty call. */
static int check_flat(const char *op, int64_t n, const void *x, const char *xname)
{
    if (n < 0)
        ELLE_FAIL(ELLE_EINVAL, "cpu %s: negative element count %" PRId64, op, n);
    return elle__cpu_check_ptr(op, xname, x);
}

/* Floats stored for a tensor, padding included. */
static int64_t padded_numel(const elle__tensor *t)
{
    int64_t block = elle__cpu_layout_block(t->layout);
    return t->n * ((t->c + block - 1) / block * block) * t->h * t->w;
}

/* ---- lifetime --------------------------------------------------------- */

static void cpu_destroy(elle__backend *be)
{
    if (!be)
        return;
    elle__cpu_impl_destroy(be->impl);
    be->impl = NULL;
}

static int cpu_set_threads(elle__backend *be, int threads)
{
    if (threads < 0)
        ELLE_FAIL(ELLE_EINVAL, "cpu set_threads: negative thread count %d", threads);
    /* oneDNN (OpenMP build) and the loops here both follow this setting;
     * cached primitives are keyed by it */
    omp_set_num_threads(threads == 0 ? omp_get_num_procs() : threads);
    be->threads = threads;
    return ELLE_OK;
}

static int cpu_sync(elle__backend *be)
{
    return elle__cpu_stream_wait(be);
}

/* ---- memory ------------------------------------------------------------- */

/* ---- layouts ------------------------------------------------------------ */

static int cpu_layout_for(elle__backend *be, int64_t c, int64_t h, int64_t w)
{
    (void)h;
    (void)w;
    if (c >= 16)
        return elle__cpu_wide_block(be->impl) == 16 ? ELLE__CPU_LAYOUT_NCHW16C
                                                    : ELLE__CPU_LAYOUT_NCHW8C;
    if (c >= 8)
        return ELLE__CPU_LAYOUT_NCHW8C;
    return ELLE__LAYOUT_PLAIN;
}

static size_t cpu_tensor_bytes(elle__backend *be, const elle__tensor *t)
{
    (void)be;
    if (!t || t->n < 0 || t->c < 0 || t->h < 0 || t->w < 0 || !elle__cpu_layout_block(t->layout))
        return 0;
    return (size_t)padded_numel(t) * sizeof(float);
}

/* ---- relu and add ------------------------------------------------------- */

static int cpu_relu_fwd(elle__backend *be, const elle__tensor *x, elle__tensor *y)
{
    (void)be;
    ELLE_TRY(elle__cpu_check_same_layout("relu_fwd", "x", x, "y", y));
    const int64_t n = padded_numel(x);
    const float *xs = x->data;
    float *ys = y->data;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float v = xs[i];
        ys[i] = v < 0.0f ? 0.0f : v; /* NaN propagates, as in the reference */
    }
    return ELLE_OK;
}

static int cpu_relu_bwd(elle__backend *be, const elle__tensor *y, const elle__tensor *dy,
                        elle__tensor *dx)
{
    (void)be;
    ELLE_TRY(elle__cpu_check_same_layout("relu_bwd", "y", y, "dy", dy));
    ELLE_TRY(elle__cpu_check_same_layout("relu_bwd", "y", y, "dx", dx));
    const int64_t n = padded_numel(y);
    const float *ys = y->data, *dys = dy->data;
    float *dxs = dx->data;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        dxs[i] = ys[i] > 0.0f ? dys[i] : 0.0f;
    return ELLE_OK;
}

static int cpu_add(elle__backend *be, const elle__tensor *a, const elle__tensor *b,
                   elle__tensor *y)
{
    (void)be;
    ELLE_TRY(elle__cpu_check_same_layout("add", "a", a, "b", b));
    ELLE_TRY(elle__cpu_check_same_layout("add", "a", a, "y", y));
    const int64_t n = padded_numel(a);
    const float *as = a->data, *bs = b->data;
    float *ys = y->data;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        ys[i] = as[i] + bs[i];
    return ELLE_OK;
}

/* ---- softmax cross-entropy ----------------------------------------------- */

static int check_xent(const char *op, const elle__tensor *logits, const int32_t *labels)
{
    ELLE_TRY(elle__cpu_check_tensor(op, "logits", logits));
    if (logits->h != 1 || logits->w != 1)
        ELLE_FAIL(ELLE_ESHAPE, "cpu %s: logits are %s, expected (n, classes, 1, 1)", op,
                  elle__cpu_shape(logits).s);
    if (logits->layout != ELLE__LAYOUT_PLAIN)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "cpu %s: logits %s must be in the plain layout", op,
                  elle__cpu_shape(logits).s);
    ELLE_TRY(elle__cpu_check_ptr(op, "labels", labels));
    /* checked at the API; a second check here keeps a bad label from
     * reading out of bounds */
    for (int64_t i = 0; i < logits->n; i++)
        if (labels[i] < 0 || labels[i] >= logits->c)
            ELLE_FAIL(ELLE_EINVAL, "cpu %s: label %d of sample %" PRId64 " is outside [0, %" PRId64 ")",
                      op, (int)labels[i], i, logits->c);
    return ELLE_OK;
}

/* The row's maximum and log(sum(exp(z - max))): logsumexp = max + that, and
 * nothing overflows however large the logits (a row of 1e30s gives
 * exp(0) terms). Double: k is small and the loss is then as accurate as the
 * reference's. */
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

static int cpu_xent_fwd(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                        float *loss)
{
    (void)be;
    const char *op = "xent_fwd";
    ELLE_TRY(check_xent(op, logits, labels));
    ELLE_TRY(elle__cpu_check_ptr(op, "loss", loss));
    const int64_t k = logits->c, n = logits->n;
    const float *zs = logits->data;
#pragma omp parallel for schedule(static) if (n * k > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *z = zs + i * k;
        double mx, log_sum;
        row_lse(z, k, &mx, &log_sum);
        /* (max - z_y) first: both may be ~1e30 while the loss is small */
        loss[i] = (float)((mx - (double)z[labels[i]]) + log_sum);
    }
    return ELLE_OK;
}

static int cpu_xent_bwd(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                        const float *coef, elle__tensor *dlogits)
{
    (void)be;
    const char *op = "xent_bwd";
    ELLE_TRY(check_xent(op, logits, labels));
    ELLE_TRY(elle__cpu_check_ptr(op, "coef", coef));
    ELLE_TRY(elle__cpu_check_same_layout(op, "logits", logits, "dlogits", dlogits));
    const int64_t k = logits->c, n = logits->n;
    const float *zs = logits->data;
    float *dzs = dlogits->data;
#pragma omp parallel for schedule(static) if (n * k > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *z = zs + i * k;
        float *dz = dzs + i * k;
        double mx, log_sum;
        row_lse(z, k, &mx, &log_sum);
        /* z[j] is read before dz[j] is written: in place is fine */
        for (int64_t j = 0; j < k; j++) {
            double p = exp((double)z[j] - mx - log_sum);
            double onehot = j == labels[i] ? 1.0 : 0.0;
            dz[j] = (float)((double)coef[i] * (p - onehot));
        }
    }
    return ELLE_OK;
}

/* ---- flat elementwise ops ----------------------------------------------- */

static int cpu_sign(elle__backend *be, int64_t n, const float *x, float *y)
{
    (void)be;
    ELLE_TRY(check_flat("sign", n, x, "x"));
    ELLE_TRY(elle__cpu_check_ptr("sign", "y", y));
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        /* sign(0) = sign(-0) = 0; NaN stays NaN (the last branch) */
        y[i] = v > 0.0f ? 1.0f : v < 0.0f ? -1.0f : v == 0.0f ? 0.0f : v;
    }
    return ELLE_OK;
}

static int cpu_axpy(elle__backend *be, int64_t n, float a, const float *x, float *y)
{
    (void)be;
    ELLE_TRY(check_flat("axpy", n, x, "x"));
    ELLE_TRY(elle__cpu_check_ptr("axpy", "y", y));
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
    return ELLE_OK;
}

static int cpu_scale(elle__backend *be, int64_t n, float a, float *x)
{
    (void)be;
    ELLE_TRY(check_flat("scale", n, x, "x"));
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        x[i] *= a;
    return ELLE_OK;
}

static int cpu_fill(elle__backend *be, int64_t n, float value, float *x)
{
    (void)be;
    ELLE_TRY(check_flat("fill", n, x, "x"));
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        x[i] = value;
    return ELLE_OK;
}

static int cpu_clamp(elle__backend *be, int64_t n, float lo, float hi, float *x)
{
    (void)be;
    ELLE_TRY(check_flat("clamp", n, x, "x"));
    if (!(lo <= hi))
        ELLE_FAIL(ELLE_EINVAL, "cpu clamp: empty or NaN interval [%g, %g]", (double)lo, (double)hi);
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        x[i] = fminf(fmaxf(x[i], lo), hi);
    return ELLE_OK;
}

static int cpu_project_linf(elle__backend *be, int64_t nsamples, int64_t per_sample,
                            const float *x0, float eps, const float *eps_per_sample, int do_clamp,
                            float lo, float hi, float *x)
{
    (void)be;
    if (nsamples < 0 || per_sample < 0)
        ELLE_FAIL(ELLE_EINVAL, "cpu project_linf: negative size (%" PRId64 " samples of %" PRId64 ")",
                  nsamples, per_sample);
    ELLE_TRY(elle__cpu_check_ptr("project_linf", "x0", x0));
    ELLE_TRY(elle__cpu_check_ptr("project_linf", "x", x));
    if (do_clamp && !(lo <= hi))
        ELLE_FAIL(ELLE_EINVAL, "cpu project_linf: empty or NaN clamp interval [%g, %g]", (double)lo,
                  (double)hi);
    /* every radius is checked before x is touched: a failure leaves x as it was */
    for (int64_t s = 0; s < nsamples; s++) {
        float e = eps_per_sample ? eps_per_sample[s] : eps;
        if (!(e >= 0.0f))
            ELLE_FAIL(ELLE_EINVAL, "cpu project_linf: radius of sample %" PRId64 " is %g (must be >= 0)",
                      s, (double)e);
    }
    const int64_t n = nsamples * per_sample;
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const int64_t s = i / per_sample;
        /* the reference's arithmetic exactly (double, then one rounding), so
         * the two backends agree bit for bit: a point inside the ball is left
         * unchanged, one outside lands on its face */
        const double e = eps_per_sample ? eps_per_sample[s] : eps;
        const double c = x0[i];
        const double d = (double)x[i] - c;
        float v = x[i];
        if (d > e)
            v = (float)(c + e);
        else if (d < -e)
            v = (float)(c - e);
        if (do_clamp)
            v = fminf(fmaxf(v, lo), hi);
        x[i] = v;
    }
    return ELLE_OK;
}

static int cpu_uniform(elle__backend *be, int64_t n, uint64_t seed, uint64_t counter, float lo,
                       float hi, float *out)
{
    (void)be;
    ELLE_TRY(check_flat("uniform", n, out, "out"));
    if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi))
        ELLE_FAIL(ELLE_EINVAL, "cpu uniform: invalid interval [%g, %g)", (double)lo, (double)hi);
    if (n <= PAR_MIN) {
        elle__rng_uniform_range(seed, counter, 0, n, lo, hi, out);
        return ELLE_OK;
    }
    /* each element is a function of (seed, counter, i) only; ranges start
     * at multiples of 4 so no Philox block is computed by two threads */
#pragma omp parallel
    {
        const int64_t nthr = omp_get_num_threads(), ithr = omp_get_thread_num();
        const int64_t blocks = (n + 3) / 4;
        const int64_t per = (blocks + nthr - 1) / nthr;
        int64_t begin = ithr * per * 4, end = (ithr + 1) * per * 4;
        if (end > n)
            end = n;
        if (begin < end)
            elle__rng_uniform_range(seed, counter, begin, end, lo, hi, out);
    }
    return ELLE_OK;
}

/* ---- optimisers ------------------------------------------------------ */

/* One fused pass over the parameter, gradient and momentum arenas, in the
 * reference backend's float order (PyTorch's SGD, foreach=False). */
static int cpu_sgd_update(elle__backend *be, int64_t n, float lr, float momentum, float wd,
                          int nesterov, float *p, const float *grad, float *buf)
{
    (void)be;
    ELLE_TRY(check_flat("sgd_update", n, p, "p"));
    if (!grad || !buf)
        ELLE_FAIL(ELLE_EINVAL, "cpu sgd_update: grad and buf must not be NULL");
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i] + wd * p[i];
        float b = momentum * buf[i] + g;
        buf[i] = b;
        p[i] -= lr * (nesterov ? g + momentum * b : b);
    }
    return ELLE_OK;
}

/* ---- the table ------------------------------------------------------- */

static const elle__backend_ops cpu_ops = {
    .abi_version = ELLE__BACKEND_ABI_VERSION,
    .name = "cpu",
    .destroy = cpu_destroy,
    .set_threads = cpu_set_threads,
    .sync = cpu_sync,
    .alloc = elle__host_op_alloc,
    .free = elle__host_op_free,
    .copy_to_device = elle__host_op_copy_to_device,
    .copy_to_host = elle__host_op_copy_to_host,
    .copy = elle__host_op_copy,
    .memzero = elle__host_op_memzero,
    .layout_for = cpu_layout_for,
    .tensor_bytes = cpu_tensor_bytes,
    .to_plain = elle__cpu_to_plain,
    .from_plain = elle__cpu_from_plain,
    .conv2d_fwd = elle__cpu_conv2d_fwd,
    .conv2d_bwd_data = elle__cpu_conv2d_bwd_data,
    .conv2d_bwd_weights = elle__cpu_conv2d_bwd_weights,
    .bn_workspace_bytes = elle__cpu_bn_workspace_bytes,
    .bn_fwd_train = elle__cpu_bn_fwd_train,
    .bn_fwd_infer = elle__cpu_bn_fwd_infer,
    .bn_bwd = elle__cpu_bn_bwd,
    .relu_fwd = cpu_relu_fwd,
    .relu_bwd = cpu_relu_bwd,
    .add = cpu_add,
    .pool_workspace_bytes = elle__cpu_pool_workspace_bytes,
    .pool_fwd = elle__cpu_pool_fwd,
    .pool_bwd = elle__cpu_pool_bwd,
    .linear_fwd = elle__cpu_linear_fwd,
    .linear_bwd_data = elle__cpu_linear_bwd_data,
    .linear_bwd_weights = elle__cpu_linear_bwd_weights,
    .xent_fwd = cpu_xent_fwd,
    .xent_bwd = cpu_xent_bwd,
    .sign = cpu_sign,
    .axpy = cpu_axpy,
    .scale = cpu_scale,
    .fill = cpu_fill,
    .clamp = cpu_clamp,
    .project_linf = cpu_project_linf,
    .uniform = cpu_uniform,
    .sgd_update = cpu_sgd_update,
    .bn_fwd_tangent = elle__cpu_bn_fwd_tangent,
    .bn_bwd_tangent = elle__cpu_bn_bwd_tangent,
    .pool_fwd_tangent = elle__cpu_pool_fwd_tangent,
    .xent_tangent = elle__cpu_xent_tangent,
};

int elle__backend_cpu_create(elle__backend *be, int device_index)
{
    if (!be)
        ELLE_FAIL(ELLE_EINVAL, "elle__backend_cpu_create: be is NULL");
    elle__cpu_impl *impl;
    ELLE_TRY(elle__cpu_impl_create(&impl, device_index));
    be->ops = &cpu_ops;
    be->impl = impl;
    be->kind = ELLE_BACKEND_CPU;
    be->threads = 0;
    return ELLE_OK;
}
