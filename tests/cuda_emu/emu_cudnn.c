/*
 * Host emulation of the cuDNN subset in cudnn.h: a test oracle written from
 * NVIDIA's cuDNN API documentation (not from any implementation), used only
 * by the emulated build in tests/cuda_emu.
 *
 * Results are the documented math by direct loops accumulated in double,
 * whatever the algorithm or math type asked for. The checks are stricter
 * than a GPU run would notice: descriptors must be set and agree, the
 * workspace must be device memory of at least what the size query reported,
 * every tensor must be device memory (cudaMalloc'd) covering all of it,
 * alpha and beta must be host memory, and an output must not overlap an
 * input. Every refusal goes through elle_emu_report, so a test says why.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cudnn.h"

struct cudnnContext {
    cudaStream_t stream;
};
struct cudnnTensorStruct {
    int set, n, c, h, w;
};
struct cudnnFilterStruct {
    int set, k, c, h, w;
};
struct cudnnConvolutionStruct {
    int set, pad_h, pad_w, u, v, dil_h, dil_w;
    cudnnConvolutionMode_t mode;
    cudnnMathType_t math;
};

#define BAD CUDNN_STATUS_BAD_PARAM
#define TRY(expr)                                                                       \
    do {                                                                                \
        cudnnStatus_t st_ = (expr);                                                     \
        if (st_ != CUDNN_STATUS_SUCCESS)                                                \
            return st_;                                                                 \
    } while (0)

static cudnnStatus_t fail(cudnnStatus_t st, const char *call, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    elle_emu_report("cuDNN", call, msg);
    return st;
}

const char *cudnnGetErrorString(cudnnStatus_t status)
{
    switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_INVALID_VALUE: return "CUDNN_STATUS_INVALID_VALUE";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED:
        return "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_UNKNOWN_STATUS_FOUND";
}

/* ---- handles and descriptors ------------------------------------------- */

/* Create / destroy of the handle and each descriptor kind: calloc'd, so a
 * descriptor starts "never set" (its math type CUDNN_DEFAULT_MATH, the
 * documented default); destroying NULL is a no-op, as free. */
#define LIFETIME(Name, type)                                                            \
    cudnnStatus_t cudnnCreate##Name(type *out)                                          \
    {                                                                                   \
        if (!out)                                                                       \
            return fail(BAD, "cudnnCreate" #Name, "the output pointer is NULL");        \
        *out = calloc(1, sizeof **out);                                                 \
        return *out ? CUDNN_STATUS_SUCCESS                                              \
                    : fail(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED,          \
                           "cudnnCreate" #Name, "out of host memory");                  \
    }                                                                                   \
    cudnnStatus_t cudnnDestroy##Name(type d)                                            \
    {                                                                                   \
        free(d);                                                                        \
        return CUDNN_STATUS_SUCCESS;                                                    \
    }
LIFETIME(, cudnnHandle_t)
LIFETIME(TensorDescriptor, cudnnTensorDescriptor_t)
LIFETIME(FilterDescriptor, cudnnFilterDescriptor_t)
LIFETIME(ConvolutionDescriptor, cudnnConvolutionDescriptor_t)

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId)
{
    if (!handle)
        return fail(BAD, "cudnnSetStream", "handle is NULL");
    handle->stream = streamId;
    return CUDNN_STATUS_SUCCESS;
}

/* Dimensions of a 4-d NCHW float tensor or filter; cuDNN's documented limit
 * is fewer than 2^31 elements. */
static cudnnStatus_t check4d(const char *call, cudnnTensorFormat_t format, cudnnDataType_t type,
                             int a, int b, int c, int d)
{
    if (format != CUDNN_TENSOR_NCHW || type != CUDNN_DATA_FLOAT)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, call,
                    "format %d, data type %d: the emulation takes NCHW float only", format, type);
    if (a <= 0 || b <= 0 || c <= 0 || d <= 0)
        return fail(BAD, call, "dimensions (%d, %d, %d, %d) must be positive", a, b, c, d);
    if ((int64_t)a * b > INT32_MAX || (int64_t)a * b * c > INT32_MAX ||
        (int64_t)a * b * c * d > INT32_MAX)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, call,
                    "(%d, %d, %d, %d) has 2^31 elements or more", a, b, c, d);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                         cudnnDataType_t dataType, int n, int c, int h, int w)
{
    const char *call = "cudnnSetTensor4dDescriptor";
    if (!d)
        return fail(BAD, call, "tensorDesc is NULL");
    TRY(check4d(call, format, dataType, n, c, h, w));
    *d = (struct cudnnTensorStruct){1, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t dataType,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w)
{
    const char *call = "cudnnSetFilter4dDescriptor";
    if (!d)
        return fail(BAD, call, "filterDesc is NULL");
    TRY(check4d(call, format, dataType, k, c, h, w));
    *d = (struct cudnnFilterStruct){1, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h,
                                              int pad_w, int u, int v, int dilation_h,
                                              int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t computeType)
{
    const char *call = "cudnnSetConvolution2dDescriptor";
    if (!d)
        return fail(BAD, call, "convDesc is NULL");
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0)
        return fail(BAD, call, "pad (%d, %d) must be >= 0, stride (%d, %d) and dilation "
                    "(%d, %d) > 0", pad_h, pad_w, u, v, dilation_h, dilation_w);
    if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION)
        return fail(BAD, call, "mode %d is not a convolution mode", mode);
    if (computeType != CUDNN_DATA_FLOAT)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, call, "compute type %d: float only", computeType);
    /* the math type is a separate setting: keep it */
    *d = (struct cudnnConvolutionStruct){1, pad_h, pad_w, u, v, dilation_h, dilation_w, mode,
                                         d->math};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m)
{
    const char *call = "cudnnSetConvolutionMathType";
    if (!d)
        return fail(BAD, call, "convDesc is NULL");
    if (m != CUDNN_DEFAULT_MATH && m != CUDNN_TENSOR_OP_MATH &&
        m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && m != CUDNN_FMA_MATH)
        return fail(BAD, call, "math type %d is not one of cudnnMathType_t", m);
    d->math = m; /* recorded only: the emulation computes in double */
    return CUDNN_STATUS_SUCCESS;
}

/* ---- geometry ------------------------------------------------------------ */

typedef struct geom {
    int64_t n, c, h, w;  /* x */
    int64_t k, r, s;     /* filter (k, c, r, s) */
    int64_t p, q;        /* output height and width */
    int64_t ph, pw, u, v, dh, dw;
    int flip;            /* CUDNN_CONVOLUTION: the filter is flipped */
} geom;

/* conv(x, w) under cd: descriptors set, channels agreeing, output >= 1x1. */
static cudnnStatus_t geometry(const char *call, cudnnConvolutionDescriptor_t cd,
                              cudnnTensorDescriptor_t xd, cudnnFilterDescriptor_t wd, geom *g)
{
    if (!cd || !cd->set)
        return fail(BAD, call, "convDesc is NULL or was never set");
    if (!xd || !xd->set)
        return fail(BAD, call, "the input-shaped tensor descriptor is NULL or was never set");
    if (!wd || !wd->set)
        return fail(BAD, call, "the filter descriptor is NULL or was never set");
    if (xd->c != wd->c)
        return fail(BAD, call, "the input has %d channels but the filter %d", xd->c, wd->c);
    *g = (geom){xd->n, xd->c, xd->h, xd->w, wd->k, wd->h, wd->w, 0, 0, cd->pad_h, cd->pad_w,
                cd->u, cd->v, cd->dil_h, cd->dil_w, cd->mode == CUDNN_CONVOLUTION};
    const int64_t eh = (g->r - 1) * g->dh + 1, ew = (g->s - 1) * g->dw + 1;
    const int64_t nh = g->h + 2 * g->ph - eh, nw = g->w + 2 * g->pw - ew;
    if (nh < 0 || nw < 0)
        return fail(BAD, call,
                    "the padded input %lldx%lld is smaller than the dilated filter %lldx%lld",
                    (long long)(g->h + 2 * g->ph), (long long)(g->w + 2 * g->pw),
                    (long long)eh, (long long)ew);
    g->p = 1 + nh / g->u;
    g->q = 1 + nw / g->v;
    return CUDNN_STATUS_SUCCESS;
}

/* The output-shaped descriptor (y or dy) must be exactly conv(x, w)'s. */
static cudnnStatus_t match_out(const char *call, const char *name, const geom *g,
                               cudnnTensorDescriptor_t yd)
{
    if (!yd || !yd->set)
        return fail(BAD, call, "%s is NULL or was never set", name);
    if (yd->n != g->n || yd->c != g->k || yd->h != g->p || yd->w != g->q)
        return fail(BAD, call, "%s is (%d, %d, %d, %d), the convolution gives (%lld, %lld, "
                    "%lld, %lld)", name, yd->n, yd->c, yd->h, yd->w, (long long)g->n,
                    (long long)g->k, (long long)g->p, (long long)g->q);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t cd,
                                                    const cudnnTensorDescriptor_t xd,
                                                    const cudnnFilterDescriptor_t wd, int *n,
                                                    int *c, int *h, int *w)
{
    const char *call = "cudnnGetConvolution2dForwardOutputDim";
    geom g = {0};
    if (!n || !c || !h || !w)
        return fail(BAD, call, "an output pointer is NULL");
    TRY(geometry(call, cd, xd, wd, &g));
    if (g.p > INT32_MAX || g.q > INT32_MAX)
        return fail(BAD, call, "the output %lldx%lld does not fit in int", (long long)g.p,
                    (long long)g.q);
    *n = (int)g.n, *c = (int)g.k, *h = (int)g.p, *w = (int)g.q;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- algorithms and workspaces ------------------------------------------ */

enum { FWD, BWD_DATA, BWD_FILTER };
static const int algo_count[3] = {CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT};

/* Nonzero and per algorithm, so the caller's workspace handling is used. */
static size_t ws_need(int algo) { return (size_t)256 * (size_t)(1 + algo); }

/* Descriptors, algorithm and handle of any of the three directions: x-, w-
 * and y-shaped descriptors are the forward's whichever are inputs. */
static cudnnStatus_t check_call(const char *call, int kind, cudnnHandle_t h,
                                cudnnTensorDescriptor_t xd, cudnnFilterDescriptor_t wd,
                                cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t yd,
                                int algo, geom *g)
{
    if (!h)
        return fail(BAD, call, "handle is NULL");
    TRY(geometry(call, cd, xd, wd, g));
    TRY(match_out(call, kind == FWD ? "yDesc" : "dyDesc", g, yd));
    if (algo < 0 || algo >= algo_count[kind])
        return fail(BAD, call, "algorithm %d is out of range [0, %d)", algo, algo_count[kind]);
    if (kind == BWD_FILTER && algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, call, "BWD_FILTER_ALGO_WINOGRAD is not implemented");
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t ws_size(const char *call, int kind, cudnnHandle_t h,
                             cudnnTensorDescriptor_t xd, cudnnFilterDescriptor_t wd,
                             cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t yd,
                             int algo, size_t *bytes)
{
    geom g = {0};
    if (!bytes)
        return fail(BAD, call, "sizeInBytes is NULL");
    TRY(check_call(call, kind, h, xd, wd, cd, yd, algo, &g));
    *bytes = ws_need(algo);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(
    cudnnHandle_t h, const cudnnTensorDescriptor_t xd, const cudnnFilterDescriptor_t wd,
    const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t yd,
    cudnnConvolutionFwdAlgo_t algo, size_t *bytes)
{
    return ws_size("cudnnGetConvolutionForwardWorkspaceSize", FWD, h, xd, wd, cd, yd, algo,
                   bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t h, const cudnnFilterDescriptor_t wd, const cudnnTensorDescriptor_t dyd,
    const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t dxd,
    cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes)
{
    return ws_size("cudnnGetConvolutionBackwardDataWorkspaceSize", BWD_DATA, h, dxd, wd, cd,
                   dyd, algo, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t h, const cudnnTensorDescriptor_t xd, const cudnnTensorDescriptor_t dyd,
    const cudnnConvolutionDescriptor_t cd, const cudnnFilterDescriptor_t dwd,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes)
{
    return ws_size("cudnnGetConvolutionBackwardFilterWorkspaceSize", BWD_FILTER, h, xd, dwd, cd,
                   dyd, algo, bytes);
}

/* Two candidates, ranked as a GPU's heuristics might: a non-deterministic
 * one first, so a caller that must be reproducible has to skip it, then a
 * deterministic one. */
#define HEURISTICS(call, kind, first, second)                                           \
    do {                                                                                \
        geom g_;                                                                        \
        if (!returned || !perf)                                                         \
            return fail(BAD, call, "returnedAlgoCount or perfResults is NULL");          \
        if (requested < 1)                                                              \
            return fail(BAD, call, "requestedAlgoCount %d must be >= 1", requested);   \
        TRY(check_call(call, kind, h, xd, wd, cd, yd, first, &g_));                     \
        *returned = requested < 2 ? requested : 2;                                      \
        for (int i_ = 0; i_ < *returned; i_++) {                                        \
            memset(&perf[i_], 0, sizeof perf[i_]);                                      \
            perf[i_].algo = i_ ? (second) : (first);                                    \
            perf[i_].status = CUDNN_STATUS_SUCCESS;                                     \
            perf[i_].memory = ws_need(perf[i_].algo);                                   \
            perf[i_].determinism = i_ ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;  \
            perf[i_].mathType = cd->math;                                               \
        }                                                                               \
        return CUDNN_STATUS_SUCCESS;                                                    \
    } while (0)

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t h, const cudnnTensorDescriptor_t xd, const cudnnFilterDescriptor_t wd,
    const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t yd,
    const int requested, int *returned, cudnnConvolutionFwdAlgoPerf_t *perf)
{
    HEURISTICS("cudnnGetConvolutionForwardAlgorithm_v7", FWD, CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
               CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t h, const cudnnFilterDescriptor_t wd, const cudnnTensorDescriptor_t yd,
    const cudnnConvolutionDescriptor_t cd, const cudnnTensorDescriptor_t xd,
    const int requested, int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf)
{
    HEURISTICS("cudnnGetConvolutionBackwardDataAlgorithm_v7", BWD_DATA,
               CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t h, const cudnnTensorDescriptor_t xd, const cudnnTensorDescriptor_t yd,
    const cudnnConvolutionDescriptor_t cd, const cudnnFilterDescriptor_t wd,
    const int requested, int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf)
{
    HEURISTICS("cudnnGetConvolutionBackwardFilterAlgorithm_v7", BWD_FILTER,
               CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1);
}

/* ---- pointer checks ------------------------------------------------------ */

/* alpha and beta: host floats (float data), per the documentation. */
static cudnnStatus_t scalars(const char *call, const void *alpha, const void *beta, double *a,
                             double *b)
{
    if (!alpha || !beta)
        return fail(BAD, call, "alpha or beta is NULL");
    if (elle_emu_is_device_range(alpha, sizeof(float)) ||
        elle_emu_is_device_range(beta, sizeof(float)))
        return fail(BAD, call, "alpha and beta must point to host memory, not device memory");
    *a = *(const float *)alpha;
    *b = *(const float *)beta;
    return CUDNN_STATUS_SUCCESS;
}

static cudnnStatus_t device(const char *call, const char *name, const void *p, size_t bytes)
{
    if (!p || !elle_emu_is_device_range(p, bytes))
        return fail(BAD, call, "%s (%p) is not device memory of %zu bytes", name, p, bytes);
    return CUDNN_STATUS_SUCCESS;
}

static int overlap(const void *a, size_t na, const void *b, size_t nb)
{
    const uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return pa < pb + nb && pb < pa + na;
}

/* ---- the convolutions ---------------------------------------------------- */

/* The one sum behind all three directions, over every (n, k, p, q, c, r, s)
 * whose input position lies inside x (padding reads zeros): FWD gathers
 * into y, BWD_DATA scatters its adjoint into dx, BWD_FILTER into dw. */
static void conv_sum(const geom *g, int kind, const float *x, const float *w, const float *y,
                     double *acc)
{
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t k = 0; k < g->k; k++)
            for (int64_t p = 0; p < g->p; p++)
                for (int64_t q = 0; q < g->q; q++) {
                    const int64_t yi = ((n * g->k + k) * g->p + p) * g->q + q;
                    for (int64_t c = 0; c < g->c; c++)
                        for (int64_t r = 0; r < g->r; r++) {
                            const int64_t ih = p * g->u - g->ph + r * g->dh;
                            if (ih < 0 || ih >= g->h)
                                continue;
                            for (int64_t s = 0; s < g->s; s++) {
                                const int64_t iw = q * g->v - g->pw + s * g->dw;
                                if (iw < 0 || iw >= g->w)
                                    continue;
                                const int64_t xi = ((n * g->c + c) * g->h + ih) * g->w + iw;
                                const int64_t rr = g->flip ? g->r - 1 - r : r;
                                const int64_t ss = g->flip ? g->s - 1 - s : s;
                                const int64_t wi = ((k * g->c + c) * g->r + rr) * g->s + ss;
                                if (kind == FWD)
                                    acc[yi] += (double)x[xi] * w[wi];
                                else if (kind == BWD_DATA)
                                    acc[xi] += (double)y[yi] * w[wi];
                                else
                                    acc[wi] += (double)y[yi] * x[xi];
                            }
                        }
                }
}

/* out = alpha * acc + beta * out; beta == 0 never reads out (it may be NaN). */
static void store(float *out, const double *acc, int64_t count, double alpha, double beta)
{
    for (int64_t i = 0; i < count; i++) {
        const double v = alpha * acc[i];
        out[i] = (float)(beta == 0 ? v : v + beta * out[i]);
    }
}

/* One direction: `out` is the x-, w- or y-shaped operand that `kind` writes
 * (its slot among x, w, y is ignored). */
static cudnnStatus_t conv_run(const char *call, int kind, cudnnHandle_t h, const void *alpha,
                              cudnnTensorDescriptor_t xd, const float *x,
                              cudnnFilterDescriptor_t wd, const float *w,
                              cudnnConvolutionDescriptor_t cd, cudnnTensorDescriptor_t yd,
                              const float *y, int algo, void *ws, size_t ws_bytes,
                              const void *beta, float *out)
{
    static const char *const names[3][3] = {
        {"x", "w", "y"}, {"dx", "w", "dy"}, {"x", "dw", "dy"}};
    const int o = kind == FWD ? 2 : kind == BWD_DATA ? 0 : 1;
    geom g = {0};
    double a = 0, b = 0; /* set by scalars() */
    TRY(check_call(call, kind, h, xd, wd, cd, yd, algo, &g));
    TRY(scalars(call, alpha, beta, &a, &b));
    if (ws_bytes < ws_need(algo))
        return fail(BAD, call, "workSpaceSizeInBytes %zu is less than the %zu bytes algorithm "
                    "%d needs", ws_bytes, ws_need(algo), algo);
    TRY(device(call, "workSpace", ws, ws_bytes));
    const int64_t count[3] = {g.n * g.c * g.h * g.w, g.k * g.c * g.r * g.s,
                              g.n * g.k * g.p * g.q};
    const void *ptr[3] = {x, w, y};
    ptr[o] = out;
    for (int i = 0; i < 3; i++)
        TRY(device(call, names[kind][i], ptr[i], (size_t)count[i] * sizeof(float)));
    for (int i = 0; i < 3; i++) {
        const size_t bytes = (size_t)count[i] * sizeof(float);
        if (i != o && overlap(ptr[o], (size_t)count[o] * sizeof(float), ptr[i], bytes))
            return fail(BAD, call, "the output %s overlaps the input %s", names[kind][o],
                        names[kind][i]);
        if (overlap(ws, ws_bytes, ptr[i], bytes))
            return fail(BAD, call, "workSpace overlaps %s", names[kind][i]);
    }
    double *acc = calloc((size_t)count[o], sizeof *acc);
    if (!acc)
        return fail(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED, call, "out of host memory");
    elle_emu_device_begin();
    conv_sum(&g, kind, x, w, y, acc);
    store(out, acc, count[o], a, b);
    elle_emu_device_end();
    free(acc);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
                                      const cudnnTensorDescriptor_t xd, const void *x,
                                      const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t cd,
                                      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_bytes,
                                      const void *beta, const cudnnTensorDescriptor_t yd, void *y)
{
    return conv_run("cudnnConvolutionForward", FWD, h, alpha, xd, x, wd, w, cd, yd, NULL, algo,
                    ws, ws_bytes, beta, y);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
                                           const cudnnFilterDescriptor_t wd, const void *w,
                                           const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const cudnnConvolutionDescriptor_t cd,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *ws,
                                           size_t ws_bytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxd, void *dx)
{
    return conv_run("cudnnConvolutionBackwardData", BWD_DATA, h, alpha, dxd, NULL, wd, w, cd,
                    dyd, dy, algo, ws, ws_bytes, beta, dx);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
                                             const cudnnTensorDescriptor_t xd, const void *x,
                                             const cudnnTensorDescriptor_t dyd, const void *dy,
                                             const cudnnConvolutionDescriptor_t cd,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *ws,
                                             size_t ws_bytes, const void *beta,
                                             const cudnnFilterDescriptor_t dwd, void *dw)
{
    return conv_run("cudnnConvolutionBackwardFilter", BWD_FILTER, h, alpha, xd, x, dwd, NULL, cd,
                    dyd, dy, algo, ws, ws_bytes, beta, dw);
}

/* ---- bias ---------------------------------------------------------------- */

static int64_t numel(cudnnTensorDescriptor_t d) { return (int64_t)d->n * d->c * d->h * d->w; }

/* C = alpha * A + beta * C, A broadcast over the dimensions where it is 1. */
cudnnStatus_t cudnnAddTensor(cudnnHandle_t h, const void *alpha, const cudnnTensorDescriptor_t ad,
                             const void *A, const void *beta, const cudnnTensorDescriptor_t cdd,
                             void *C)
{
    const char *call = "cudnnAddTensor";
    double a = 0, b = 0; /* set by scalars() */
    if (!h)
        return fail(BAD, call, "handle is NULL");
    if (!ad || !ad->set || !cdd || !cdd->set)
        return fail(BAD, call, "aDesc or cDesc is NULL or was never set");
    const int ad4[4] = {ad->n, ad->c, ad->h, ad->w}, cd4[4] = {cdd->n, cdd->c, cdd->h, cdd->w};
    for (int i = 0; i < 4; i++)
        if (ad4[i] != 1 && ad4[i] != cd4[i])
            return fail(BAD, call, "A (%d, %d, %d, %d) does not broadcast to C (%d, %d, %d, %d)",
                        ad4[0], ad4[1], ad4[2], ad4[3], cd4[0], cd4[1], cd4[2], cd4[3]);
    TRY(scalars(call, alpha, beta, &a, &b));
    const size_t abytes = (size_t)numel(ad) * sizeof(float), cbytes = (size_t)numel(cdd) * sizeof(float);
    TRY(device(call, "A", A, abytes));
    TRY(device(call, "C", C, cbytes));
    if (overlap(A, abytes, C, cbytes))
        return fail(BAD, call, "A overlaps C");
    /* A's strides, 0 along the broadcast dimensions */
    const int64_t st[4] = {ad4[0] == 1 ? 0 : (int64_t)ad4[1] * ad4[2] * ad4[3],
                           ad4[1] == 1 ? 0 : (int64_t)ad4[2] * ad4[3], ad4[2] == 1 ? 0 : ad4[3],
                           ad4[3] == 1 ? 0 : 1};
    const float *pa = A;
    float *pc = C;
    elle_emu_device_begin();
    for (int64_t n = 0, i = 0; n < cd4[0]; n++)
        for (int64_t c = 0; c < cd4[1]; c++)
            for (int64_t y = 0; y < cd4[2]; y++)
                for (int64_t x = 0; x < cd4[3]; x++, i++) {
                    const double v = a * pa[n * st[0] + c * st[1] + y * st[2] + x * st[3]];
                    pc[i] = (float)(b == 0 ? v : v + b * pc[i]);
                }
    elle_emu_device_end();
    return CUDNN_STATUS_SUCCESS;
}

/* db[k] = alpha * sum over n, h, w of dy + beta * db[k]; db is (1, K, 1, 1). */
cudnnStatus_t cudnnConvolutionBackwardBias(cudnnHandle_t h, const void *alpha,
                                           const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const void *beta, const cudnnTensorDescriptor_t dbd,
                                           void *db)
{
    const char *call = "cudnnConvolutionBackwardBias";
    double a = 0, b = 0; /* set by scalars() */
    if (!h)
        return fail(BAD, call, "handle is NULL");
    if (!dyd || !dyd->set || !dbd || !dbd->set)
        return fail(BAD, call, "dyDesc or dbDesc is NULL or was never set");
    if (dbd->n != 1 || dbd->c != dyd->c || dbd->h != 1 || dbd->w != 1)
        return fail(BAD, call, "dbDesc is (%d, %d, %d, %d), expected (1, %d, 1, 1)", dbd->n,
                    dbd->c, dbd->h, dbd->w, dyd->c);
    TRY(scalars(call, alpha, beta, &a, &b));
    const size_t ybytes = (size_t)numel(dyd) * sizeof(float), bbytes = (size_t)dbd->c * sizeof(float);
    TRY(device(call, "dy", dy, ybytes));
    TRY(device(call, "db", db, bbytes));
    if (overlap(dy, ybytes, db, bbytes))
        return fail(BAD, call, "db overlaps dy");
    const float *py = dy;
    float *pb = db;
    const int64_t hw = (int64_t)dyd->h * dyd->w;
    elle_emu_device_begin();
    for (int64_t k = 0; k < dyd->c; k++) {
        double sum = 0;
        for (int64_t n = 0; n < dyd->n; n++)
            for (int64_t i = 0; i < hw; i++)
                sum += py[(n * dyd->c + k) * hw + i];
        store(&pb[k], &sum, 1, a, b);
    }
    elle_emu_device_end();
    return CUDNN_STATUS_SUCCESS;
}
