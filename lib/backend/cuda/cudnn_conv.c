/*
 * Convolution on cuDNN: forward, backward data and backward filter, with
 * descriptors and algorithms built once per (descriptor, input shape) and
 * cached in the impl.
 *
 * Legacy descriptors rather than the graph API: cuDNN 9 still ships
 * cudnnConvolution* in its cnn library, they need no graph build and
 * finalize per shape, and an entry is a handful of descriptors plus three
 * algorithm numbers, which keeps the cache trivial. The graph API would let
 * a later version fuse bias, batch norm or ReLU into the convolution; the
 * op table has no fused op today, so nothing is lost.
 *
 * Accuracy: results must match the reference's double-accumulated loops to
 * about 1e-4, which TF32 tensor cores (10-bit mantissa inputs) do not, so
 * the descriptors use CUDNN_FMA_MATH. ELLE_CUDA_TF32=1 in the environment
 * (read when an entry is created) allows TF32 instead, for speed.
 *
 * Reproducibility: algorithms come from cuDNN's heuristics (no trial runs,
 * so the choice does not depend on timing noise), and only those reported
 * CUDNN_DETERMINISTIC are taken, so the same seed gives the same weights.
 * The first one whose workspace fits WORKSPACE_CAP wins; otherwise the
 * fallback is the implicit-GEMM forward and the deterministic ALGO_1
 * backward kernels, whose workspaces are small.
 *
 * cuDNN's legacy descriptors take int dimensions and tensors of fewer than
 * 2^31 elements; larger shapes are reported as unsupported.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "backend/desc_check.h"
#include "core/error.h"

enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_FILTER, CONV_KINDS };

static const char *const conv_op_name[CONV_KINDS] = {"conv2d_fwd", "conv2d_bwd_data",
                                                     "conv2d_bwd_weights"};

/* Workspace one algorithm may ask for; beyond it a slower one is taken. */
#define WORKSPACE_CAP ((size_t)256 << 20)

typedef struct conv_entry {
    /* key: the descriptor's geometry and the input shape */
    int64_t n, ic, h, w, oc, kh, kw, sh, sw, ph, pw;
    int64_t oh, ow;
    int tf32;
    cudnnTensorDescriptor_t xd, yd, bd; /* x/dx, y/dy, bias (1, oc, 1, 1) */
    cudnnFilterDescriptor_t wd;
    /* one convolution descriptor per direction: each carries the math type
     * of the algorithm chosen for it */
    cudnnConvolutionDescriptor_t cd[CONV_KINDS];
    int chosen[CONV_KINDS]; /* algorithms are picked on first use of a direction */
    int algo[CONV_KINDS];
    size_t ws_bytes[CONV_KINDS];
} conv_entry;

struct elle__cuda_conv_cache {
    conv_entry **entries;
    size_t count, cap;
};

static void entry_free(conv_entry *e)
{
    if (!e)
        return;
    if (e->xd)
        cudnnDestroyTensorDescriptor(e->xd);
    if (e->yd)
        cudnnDestroyTensorDescriptor(e->yd);
    if (e->bd)
        cudnnDestroyTensorDescriptor(e->bd);
    if (e->wd)
        cudnnDestroyFilterDescriptor(e->wd);
    for (int k = 0; k < CONV_KINDS; k++)
        if (e->cd[k])
            cudnnDestroyConvolutionDescriptor(e->cd[k]);
    free(e);
}

void elle__cuda_conv_cache_destroy(elle__cuda_conv_cache *cache)
{
    if (!cache)
        return;
    for (size_t i = 0; i < cache->count; i++)
        entry_free(cache->entries[i]);
    free(cache->entries);
    free(cache);
}

size_t elle__cuda_conv_cache_size(const elle__backend *be)
{
    const elle__cuda_conv_cache *cache = elle__cuda(be)->conv;
    return cache ? cache->count : 0;
}

/* The descriptor, `x` (input shaped: x or dx) and `y` (output shaped: y or
 * dy), with the reference's rules and cuDNN's int limits. */
static int check_conv(const char *op, const elle__conv_desc *cd, const char *xname,
                      const elle__tensor *x, const char *yname, const elle__tensor *y)
{
    ELLE_TRY(elle__check_conv_desc("cuda", op, cd));
    ELLE_TRY(elle__cuda_check_tensor(op, xname, x));
    ELLE_TRY(elle__cuda_check_tensor(op, yname, y));
    ELLE_TRY(elle__check_conv_geometry("cuda", op, cd, xname, x, yname, y));
    /* every dimension fits in int once the element counts do (all are
     * positive); the weight count is built up without overflowing */
    int too_big = elle__tensor_numel(x) > INT_MAX || elle__tensor_numel(y) > INT_MAX ||
                  cd->ph > INT_MAX || cd->pw > INT_MAX || cd->sh > INT_MAX || cd->sw > INT_MAX ||
                  cd->kh > INT_MAX / cd->kw || cd->oc > INT_MAX / cd->ic ||
                  cd->oc * cd->ic > INT_MAX / (cd->kh * cd->kw);
    if (too_big)
        ELLE_FAIL(ELLE_EUNSUPPORTED,
                  "cuda %s: %s %s -> %s %s, kernel %" PRId64 "x%" PRId64
                  ": cuDNN's convolution descriptors take fewer than 2^31 elements per tensor",
                  op, xname, elle__cuda_shape(x).s, yname, elle__cuda_shape(y).s, cd->kh,
                  cd->kw);
    return ELLE_OK;
}

static int tf32_allowed(void)
{
    const char *env = getenv("ELLE_CUDA_TF32");
    return env && env[0] == '1' && env[1] == '\0';
}

static int math_is_tensor_op(cudnnMathType_t m)
{
    return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

static int entry_build(conv_entry *e)
{
    ELLE_CUDNN_TRY(cudnnCreateTensorDescriptor(&e->xd));
    ELLE_CUDNN_TRY(cudnnCreateTensorDescriptor(&e->yd));
    ELLE_CUDNN_TRY(cudnnCreateTensorDescriptor(&e->bd));
    ELLE_CUDNN_TRY(cudnnCreateFilterDescriptor(&e->wd));
    ELLE_CUDNN_TRY(cudnnSetTensor4dDescriptor(e->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                              (int)e->n, (int)e->ic, (int)e->h, (int)e->w));
    ELLE_CUDNN_TRY(cudnnSetTensor4dDescriptor(e->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                              (int)e->n, (int)e->oc, (int)e->oh, (int)e->ow));
    ELLE_CUDNN_TRY(cudnnSetTensor4dDescriptor(e->bd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1,
                                              (int)e->oc, 1, 1));
    ELLE_CUDNN_TRY(cudnnSetFilter4dDescriptor(e->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                              (int)e->oc, (int)e->ic, (int)e->kh, (int)e->kw));
    for (int k = 0; k < CONV_KINDS; k++) {
        ELLE_CUDNN_TRY(cudnnCreateConvolutionDescriptor(&e->cd[k]));
        /* PyTorch's Conv2d is a cross-correlation */
        ELLE_CUDNN_TRY(cudnnSetConvolution2dDescriptor(e->cd[k], (int)e->ph, (int)e->pw,
                                                       (int)e->sh, (int)e->sw, 1, 1,
                                                       CUDNN_CROSS_CORRELATION,
                                                       CUDNN_DATA_FLOAT));
        ELLE_CUDNN_TRY(cudnnSetConvolutionMathType(
            e->cd[k], e->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    }
    /* cuDNN's output size must be the one the checks computed (floor mode) */
    int dims[4];
    ELLE_CUDNN_TRY(cudnnGetConvolution2dForwardOutputDim(e->cd[CONV_FWD], e->xd, e->wd, &dims[0],
                                                         &dims[1], &dims[2], &dims[3]));
    if (dims[0] != e->n || dims[1] != e->oc || dims[2] != e->oh || dims[3] != e->ow)
        ELLE_FAIL(ELLE_ERROR,
                  "cuda conv: cuDNN computes output (%d, %d, %d, %d), expected (%" PRId64
                  ", %" PRId64 ", %" PRId64 ", %" PRId64 ")",
                  dims[0], dims[1], dims[2], dims[3], e->n, e->oc, e->oh, e->ow);
    return ELLE_OK;
}

/* Workspace cuDNN states for `algo` in direction `kind` under the
 * descriptor's current math type; a status other than success means the
 * algorithm cannot run this shape. */
static cudnnStatus_t algo_workspace(cudnnHandle_t h, const conv_entry *e, int kind, int algo,
                                    size_t *bytes)
{
    *bytes = 0;
    switch (kind) {
    case CONV_FWD:
        return cudnnGetConvolutionForwardWorkspaceSize(h, e->xd, e->wd, e->cd[kind], e->yd,
                                                       (cudnnConvolutionFwdAlgo_t)algo, bytes);
    case CONV_BWD_DATA:
        return cudnnGetConvolutionBackwardDataWorkspaceSize(
            h, e->wd, e->yd, e->cd[kind], e->xd, (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    default:
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(
            h, e->xd, e->yd, e->cd[kind], e->wd, (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
    }
}

/* A heuristic's candidate, whatever the direction. */
typedef struct candidate {
    int algo;
    cudnnStatus_t status;
    size_t memory;
    cudnnDeterminism_t determinism;
    cudnnMathType_t math;
} candidate;

/* cuDNN returns at most the count asked for; kept in range all the same,
 * since the copy below indexes fixed arrays with it. */
static int clamp_count(int count, int max)
{
    return count < 0 ? 0 : count > max ? max : count;
}

/* Heuristic candidates for direction `kind`, best first. */
static int heuristics(cudnnHandle_t h, const conv_entry *e, int kind, candidate *out, int *count)
{
    *count = 0;
    switch (kind) {
    case CONV_FWD: {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        ELLE_CUDNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(
            h, e->xd, e->wd, e->cd[kind], e->yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, count, perf));
        *count = clamp_count(*count, CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
        for (int i = 0; i < *count; i++)
            out[i] = (candidate){(int)perf[i].algo, perf[i].status, perf[i].memory,
                                 perf[i].determinism, perf[i].mathType};
        break;
    }
    case CONV_BWD_DATA: {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        ELLE_CUDNN_TRY(cudnnGetConvolutionBackwardDataAlgorithm_v7(
            h, e->wd, e->yd, e->cd[kind], e->xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, count,
            perf));
        *count = clamp_count(*count, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
        for (int i = 0; i < *count; i++)
            out[i] = (candidate){(int)perf[i].algo, perf[i].status, perf[i].memory,
                                 perf[i].determinism, perf[i].mathType};
        break;
    }
    default: {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        ELLE_CUDNN_TRY(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            h, e->xd, e->yd, e->cd[kind], e->wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, count,
            perf));
        *count = clamp_count(*count, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
        for (int i = 0; i < *count; i++)
            out[i] = (candidate){(int)perf[i].algo, perf[i].status, perf[i].memory,
                                 perf[i].determinism, perf[i].mathType};
        break;
    }
    }
    return ELLE_OK;
}

/* Pick the algorithm of direction `kind` (see the header comment). */
static int choose_algo(cudnnHandle_t h, conv_entry *e, int kind)
{
    enum { MAX_CANDIDATES = 16 };
    candidate cand[MAX_CANDIDATES];
    int count;
    ELLE_TRY(heuristics(h, e, kind, cand, &count));
    const cudnnMathType_t base = e->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    for (int i = 0; i < count; i++) {
        const candidate *c = &cand[i];
        /* ALLOW_CONVERSION may run FP32 data in FP16: never, not even
         * under ELLE_CUDA_TF32 (which promises TF32 and no less) */
        if (c->status != CUDNN_STATUS_SUCCESS || c->determinism != CUDNN_DETERMINISTIC ||
            c->memory > WORKSPACE_CAP || c->math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION ||
            (!e->tf32 && math_is_tensor_op(c->math)))
            continue;
        /* under TF32 the descriptor takes the candidate's own math type, as
         * the heuristics ranked it; without, FMA stays, which every
         * non-tensor-op candidate runs under */
        cudnnMathType_t math = e->tf32 ? c->math : base;
        ELLE_CUDNN_TRY(cudnnSetConvolutionMathType(e->cd[kind], math));
        size_t bytes;
        if (algo_workspace(h, e, kind, c->algo, &bytes) != CUDNN_STATUS_SUCCESS ||
            bytes > WORKSPACE_CAP)
            continue;
        e->algo[kind] = c->algo;
        /* the heuristics' figure and the query can differ: take the larger */
        e->ws_bytes[kind] = bytes > c->memory ? bytes : c->memory;
        e->chosen[kind] = 1;
        return ELLE_OK;
    }
    /* no candidate fit: the deterministic kernels that need little or no
     * workspace */
    static const int fallback[CONV_KINDS] = {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                             CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
                                             CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1};
    ELLE_CUDNN_TRY(cudnnSetConvolutionMathType(e->cd[kind], base));
    size_t bytes;
    ELLE_CUDNN_TRY(algo_workspace(h, e, kind, fallback[kind], &bytes));
    e->algo[kind] = fallback[kind];
    e->ws_bytes[kind] = bytes;
    e->chosen[kind] = 1;
    return ELLE_OK;
}

/* The cache entry of (cd, input-shaped x), created on first use. */
static int conv_entry_get(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *x,
                          const elle__tensor *y, conv_entry **out)
{
    elle__cuda_impl *impl = elle__cuda(be);
    *out = NULL;
    if (!impl->conv) {
        impl->conv = calloc(1, sizeof *impl->conv);
        if (!impl->conv)
            ELLE_FAIL(ELLE_ENOMEM, "cuda conv: out of memory for the algorithm cache");
    }
    elle__cuda_conv_cache *cache = impl->conv;
    for (size_t i = 0; i < cache->count; i++) {
        conv_entry *e = cache->entries[i];
        if (e->n == x->n && e->ic == cd->ic && e->h == x->h && e->w == x->w &&
            e->oc == cd->oc && e->kh == cd->kh && e->kw == cd->kw && e->sh == cd->sh &&
            e->sw == cd->sw && e->ph == cd->ph && e->pw == cd->pw) {
            *out = e;
            return ELLE_OK;
        }
    }
    if (cache->count == cache->cap) {
        size_t cap = cache->cap ? 2 * cache->cap : 16;
        conv_entry **grown = realloc(cache->entries, cap * sizeof *grown);
        if (!grown)
            ELLE_FAIL(ELLE_ENOMEM, "cuda conv: out of memory for the algorithm cache");
        cache->entries = grown;
        cache->cap = cap;
    }
    conv_entry *e = calloc(1, sizeof *e);
    if (!e)
        ELLE_FAIL(ELLE_ENOMEM, "cuda conv: out of memory for a cache entry");
    e->n = x->n;
    e->ic = cd->ic;
    e->h = x->h;
    e->w = x->w;
    e->oc = cd->oc;
    e->kh = cd->kh;
    e->kw = cd->kw;
    e->sh = cd->sh;
    e->sw = cd->sw;
    e->ph = cd->ph;
    e->pw = cd->pw;
    e->oh = y->h;
    e->ow = y->w;
    e->tf32 = tf32_allowed();
    int rc = entry_build(e);
    if (rc < 0) {
        entry_free(e);
        return rc;
    }
    cache->entries[cache->count++] = e;
    *out = e;
    return ELLE_OK;
}

/* The entry, the algorithm of `kind` and its workspace. */
static int conv_prepare(elle__backend *be, int kind, const elle__conv_desc *cd,
                        const elle__tensor *x, const elle__tensor *y, conv_entry **out,
                        void **ws)
{
    conv_entry *e;
    ELLE_TRY(conv_entry_get(be, cd, x, y, &e));
    if (!e->chosen[kind])
        ELLE_TRY(choose_algo(elle__cuda(be)->cudnn, e, kind));
    *ws = NULL;
    if (e->ws_bytes[kind] > 0)
        ELLE_TRY(elle__cuda_workspace(be, e->ws_bytes[kind], ws));
    *out = e;
    return ELLE_OK;
}

static void conv_error_context(int kind, const elle__conv_desc *cd, const elle__tensor *x,
                               const elle__tensor *y)
{
    elle__error_prefix("cuda %s %s -> %s, kernel %" PRId64 "x%" PRId64 " stride %" PRId64
                       "x%" PRId64 " padding %" PRId64 "x%" PRId64,
                       conv_op_name[kind], elle__cuda_shape(x).s, elle__cuda_shape(y).s, cd->kh,
                       cd->kw, cd->sh, cd->sw, cd->ph, cd->pw);
}

static int conv_fwd_run(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *x,
                        const float *w, const float *b, elle__tensor *y)
{
    conv_entry *e = NULL;
    void *ws = NULL;
    ELLE_TRY(conv_prepare(be, CONV_FWD, cd, x, y, &e, &ws));
    cudnnHandle_t h = elle__cuda(be)->cudnn;
    const float one = 1.0f, zero = 0.0f;
    ELLE_CUDNN_TRY(cudnnConvolutionForward(h, &one, e->xd, x->data, e->wd, w, e->cd[CONV_FWD],
                                           (cudnnConvolutionFwdAlgo_t)e->algo[CONV_FWD], ws,
                                           e->ws_bytes[CONV_FWD], &zero, e->yd, y->data));
    if (cd->has_bias)
        ELLE_CUDNN_TRY(cudnnAddTensor(h, &one, e->bd, b, &one, e->yd, y->data));
    return ELLE_OK;
}

int elle__cuda_conv2d_fwd(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *x,
                          const float *w, const float *b, elle__tensor *y)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = conv_op_name[CONV_FWD];
    ELLE_TRY(check_conv(op, cd, "x", x, "y", y));
    ELLE_TRY(elle__cuda_check_ptr(op, "w", w));
    if (cd->has_bias)
        ELLE_TRY(elle__cuda_check_ptr(op, "b (has_bias is set)", b));
    int rc = conv_fwd_run(be, cd, x, w, b, y);
    if (rc < 0)
        conv_error_context(CONV_FWD, cd, x, y);
    return rc;
}

static int conv_bwd_data_run(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *dy,
                             const float *w, elle__tensor *dx)
{
    conv_entry *e = NULL;
    void *ws = NULL;
    ELLE_TRY(conv_prepare(be, CONV_BWD_DATA, cd, dx, dy, &e, &ws));
    const float one = 1.0f, zero = 0.0f;
    /* beta 0: dx is written, never read */
    ELLE_CUDNN_TRY(cudnnConvolutionBackwardData(
        elle__cuda(be)->cudnn, &one, e->wd, w, e->yd, dy->data, e->cd[CONV_BWD_DATA],
        (cudnnConvolutionBwdDataAlgo_t)e->algo[CONV_BWD_DATA], ws, e->ws_bytes[CONV_BWD_DATA],
        &zero, e->xd, dx->data));
    return ELLE_OK;
}

int elle__cuda_conv2d_bwd_data(elle__backend *be, const elle__conv_desc *cd,
                               const elle__tensor *dy, const float *w, elle__tensor *dx)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = conv_op_name[CONV_BWD_DATA];
    ELLE_TRY(check_conv(op, cd, "dx", dx, "dy", dy));
    ELLE_TRY(elle__cuda_check_ptr(op, "w", w));
    int rc = conv_bwd_data_run(be, cd, dy, w, dx);
    if (rc < 0)
        conv_error_context(CONV_BWD_DATA, cd, dx, dy);
    return rc;
}

static int conv_bwd_filter_run(elle__backend *be, const elle__conv_desc *cd,
                               const elle__tensor *x, const elle__tensor *dy, float *dw,
                               float *db)
{
    conv_entry *e = NULL;
    void *ws = NULL;
    ELLE_TRY(conv_prepare(be, CONV_BWD_FILTER, cd, x, dy, &e, &ws));
    cudnnHandle_t h = elle__cuda(be)->cudnn;
    const float one = 1.0f;
    /* beta 1: parameter gradients accumulate */
    ELLE_CUDNN_TRY(cudnnConvolutionBackwardFilter(
        h, &one, e->xd, x->data, e->yd, dy->data, e->cd[CONV_BWD_FILTER],
        (cudnnConvolutionBwdFilterAlgo_t)e->algo[CONV_BWD_FILTER], ws,
        e->ws_bytes[CONV_BWD_FILTER], &one, e->wd, dw));
    if (db)
        ELLE_CUDNN_TRY(cudnnConvolutionBackwardBias(h, &one, e->yd, dy->data, &one, e->bd, db));
    return ELLE_OK;
}

int elle__cuda_conv2d_bwd_weights(elle__backend *be, const elle__conv_desc *cd,
                                  const elle__tensor *x, const elle__tensor *dy, float *dw,
                                  float *db)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = conv_op_name[CONV_BWD_FILTER];
    ELLE_TRY(check_conv(op, cd, "x", x, "dy", dy));
    ELLE_TRY(elle__cuda_check_ptr(op, "dw", dw));
    int rc = conv_bwd_filter_run(be, cd, x, dy, dw, db);
    if (rc < 0)
        conv_error_context(CONV_BWD_FILTER, cd, x, dy);
    return rc;
}
