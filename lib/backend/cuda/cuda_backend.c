/*
 * The CUDA backend: cuDNN for convolutions, cuBLAS for the fully connected
 * layer, hand-written kernels for everything else (cuda_internal.h lists the
 * files).
 *
 * This file: the op table, create/destroy, memory and copies, layouts, the
 * shared device workspace, the error checker and the argument checks the
 * *_ops.c files share.
 *
 * Devices. A program may hold contexts on several GPUs from one thread, and
 * the CUDA runtime's current device is per thread, so every entry point
 * that touches the device first makes the context's device current
 * (elle__cuda_enter; a cudaGetDevice compare, cheap when it already is).
 *
 * Precision. cuBLAS runs in CUBLAS_DEFAULT_MATH, which for FP32 GEMMs means
 * true FP32 (no TF32 tensor cores), so results match the reference backend
 * to float rounding. TF32 (CUBLAS_TF32_TENSOR_OP_MATH) would be several
 * times faster on sm_80+ at ~1e-3 relative error; it could become a context
 * parameter later. cuBLAS's default atomics mode (not allowed) keeps its
 * results deterministic.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_internal.h"
#include "core/error.h"
#include "elle/context.h"

/* cudaMalloc aligns to 256 bytes, which covers the table's 64-byte rule;
 * sizes are rounded to it so that a 0-byte request still gets a block. */
#define CUDA_ALIGN ((size_t)256)

/* Workspace sizes grow in steps of this, so that a sequence of slightly
 * larger requests does not reallocate each time. */
#define WORKSPACE_STEP ((size_t)1 << 20)

/* ---- the checker ------------------------------------------------------- */

int elle__cuda_fail(const char *file, int line, const char *lib, const char *call,
                    const char *message)
{
    const char *base = file ? file : "?";
    for (const char *p = base; *p; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    /* a non-sticky runtime error stays "last" until read: clear it so that
     * the next launcher's cudaGetLastError does not report it again */
    (void)cudaGetLastError();
    return elle__error_set(ELLE_EDEVICE, "cuda: %s:%d: %s failed (%s): %s", base, line, call,
                           lib, message ? message : "unknown error");
}

/* ---- the current device ------------------------------------------------ */

int elle__cuda_enter(elle__backend *be)
{
    const elle__cuda_impl *impl = elle__cuda(be);
    int cur = -1;
    ELLE_CUDA_TRY(cudaGetDevice(&cur));
    if (cur != impl->device)
        ELLE_CUDA_TRY(cudaSetDevice(impl->device));
    return ELLE_OK;
}

int elle__cuda_device_count(void)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return count > 0 ? count : 0;
}

/* ---- argument checks (the CPU backend's rules, plain layout only) ------ */

elle__cuda_shape_str elle__cuda_shape(const elle__tensor *t)
{
    elle__cuda_shape_str r;
    snprintf(r.s, sizeof r.s, "(%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 ", %s)", t->n,
             t->c, t->h, t->w, t->layout == ELLE__LAYOUT_PLAIN ? "plain" : "unknown layout");
    return r;
}

int elle__cuda_check_ptr(const char *op, const char *name, const void *p)
{
    if (!p)
        ELLE_FAIL(ELLE_EINVAL, "cuda %s: %s is NULL", op, name);
    return ELLE_OK;
}

int elle__cuda_check_shape(const char *op, const char *name, const elle__tensor *t)
{
    if (!t)
        ELLE_FAIL(ELLE_EINVAL, "cuda %s: tensor %s is NULL", op, name);
    if (t->layout != ELLE__LAYOUT_PLAIN)
        ELLE_FAIL(ELLE_EINVAL,
                  "cuda %s: tensor %s has layout %d, not one of this backend's (only the plain "
                  "NCHW layout, %d)",
                  op, name, t->layout, ELLE__LAYOUT_PLAIN);
    const int64_t dims[4] = {t->n, t->c, t->h, t->w};
    int64_t numel = 1;
    for (int i = 0; i < 4; i++) {
        if (dims[i] <= 0)
            ELLE_FAIL(ELLE_ESHAPE,
                      "cuda %s: tensor %s has shape %s; every dimension must be positive", op,
                      name, elle__cuda_shape(t).s);
        /* the byte size must fit in int64 (and so in size_t): kernels index
         * with int64_t */
        if (dims[i] > INT64_MAX / (int64_t)sizeof(float) / numel)
            ELLE_FAIL(ELLE_ESHAPE, "cuda %s: tensor %s of shape %s is too large", op, name,
                      elle__cuda_shape(t).s);
        numel *= dims[i];
    }
    return ELLE_OK;
}

int elle__cuda_check_tensor(const char *op, const char *name, const elle__tensor *t)
{
    ELLE_TRY(elle__cuda_check_shape(op, name, t));
    if (!t->data)
        ELLE_FAIL(ELLE_EINVAL, "cuda %s: tensor %s has no data (NULL)", op, name);
    return ELLE_OK;
}

int elle__cuda_check_same_shape(const char *op, const char *name_a, const elle__tensor *a,
                                const char *name_b, const elle__tensor *b)
{
    ELLE_TRY(elle__cuda_check_tensor(op, name_a, a));
    ELLE_TRY(elle__cuda_check_tensor(op, name_b, b));
    if (a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
        ELLE_FAIL(ELLE_ESHAPE, "cuda %s: %s has shape %s but %s has shape %s", op, name_a,
                  elle__cuda_shape(a).s, name_b, elle__cuda_shape(b).s);
    return ELLE_OK;
}

/* ---- device memory ----------------------------------------------------- */

/* cudaMalloc, with running out of memory reported as ELLE_ENOMEM (the
 * caller may free something and retry) rather than as a device failure. */
static int device_malloc(const char *op, size_t bytes, void **out)
{
    *out = NULL;
    cudaError_t ce = cudaMalloc(out, bytes);
    if (ce == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        *out = NULL;
        ELLE_FAIL(ELLE_ENOMEM, "cuda %s: out of device memory allocating %zu bytes", op, bytes);
    }
    if (ce != cudaSuccess) {
        *out = NULL;
        return elle__cuda_fail(__FILE__, __LINE__, "CUDA", "cudaMalloc(out, bytes)",
                               cudaGetErrorString(ce));
    }
    return ELLE_OK;
}

static int round_up(size_t bytes, size_t step, size_t *out)
{
    if (bytes > SIZE_MAX - (step - 1))
        return 0;
    *out = (bytes + step - 1) / step * step;
    if (*out == 0)
        *out = step;
    return 1;
}

int elle__cuda_workspace(elle__backend *be, size_t bytes, void **out)
{
    elle__cuda_impl *impl = elle__cuda(be);
    if (!out)
        ELLE_FAIL(ELLE_EINVAL, "cuda workspace: out is NULL");
    if (impl->workspace && bytes <= impl->workspace_bytes) {
        *out = impl->workspace;
        return ELLE_OK;
    }
    *out = NULL;
    /* a quarter of headroom, so that a shape a little larger than the last
     * does not reallocate again */
    size_t want = bytes <= SIZE_MAX / 2 ? bytes + bytes / 4 : bytes;
    if (!round_up(want, WORKSPACE_STEP, &want) && !round_up(bytes, CUDA_ALIGN, &want))
        ELLE_FAIL(ELLE_ENOMEM, "cuda workspace: %zu bytes cannot be allocated", bytes);
    ELLE_TRY(elle__cuda_enter(be));
    /* queued ops may still be using the old block */
    ELLE_CUDA_TRY(cudaStreamSynchronize(impl->stream));
    if (impl->workspace) {
        void *old = impl->workspace;
        impl->workspace = NULL;
        impl->workspace_bytes = 0;
        ELLE_CUDA_TRY(cudaFree(old));
    }
    void *p;
    ELLE_TRY(device_malloc("workspace", want, &p));
    impl->workspace = p;
    impl->workspace_bytes = want;
    *out = p;
    return ELLE_OK;
}

/* ---- lifetime ---------------------------------------------------------- */

/* Frees whatever part of the state exists (create's failure path too). */
static void release(elle__cuda_impl *impl)
{
    if (!impl)
        return;
    /* errors are ignored: nothing can be reported from here, and the rest
     * must still be freed */
    (void)cudaSetDevice(impl->device);
    if (impl->stream)
        (void)cudaStreamSynchronize(impl->stream);
    if (impl->conv)
        elle__cuda_conv_cache_destroy(impl->conv);
    if (impl->workspace)
        (void)cudaFree(impl->workspace);
    if (impl->linear_ones)
        (void)cudaFree(impl->linear_ones);
    if (impl->host_scratch)
        (void)cudaFreeHost(impl->host_scratch);
    if (impl->cublas)
        (void)cublasDestroy(impl->cublas);
    if (impl->cudnn)
        (void)cudnnDestroy(impl->cudnn);
    if (impl->stream)
        (void)cudaStreamDestroy(impl->stream);
    (void)cudaGetLastError();
    free(impl);
}

static void cuda_destroy(elle__backend *be)
{
    if (!be)
        return;
    release(elle__cuda(be));
    be->impl = NULL;
}

static int cuda_sync(elle__backend *be)
{
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_CUDA_TRY(cudaStreamSynchronize(elle__cuda(be)->stream));
    return ELLE_OK;
}

/* ---- memory ops -------------------------------------------------------- */

static int cuda_alloc(elle__backend *be, size_t bytes, void **out)
{
    if (!out)
        ELLE_FAIL(ELLE_EINVAL, "cuda alloc: out is NULL");
    *out = NULL;
    /* as the host backends: a 0-byte request still gets a real, unique
     * block, so that free is uniform */
    size_t rounded;
    if (!round_up(bytes, CUDA_ALIGN, &rounded))
        ELLE_FAIL(ELLE_ENOMEM, "cuda alloc: %zu bytes cannot be allocated", bytes);
    ELLE_TRY(elle__cuda_enter(be));
    cudaStream_t stream = elle__cuda(be)->stream;
    void *p;
    ELLE_TRY(device_malloc("alloc", rounded, &p));
    /* waits, so that the zeros are in place before any other stream (or a
     * copy the caller makes with another context) can see the block */
    cudaError_t ce = cudaMemsetAsync(p, 0, rounded, stream);
    if (ce == cudaSuccess)
        ce = cudaStreamSynchronize(stream);
    if (ce != cudaSuccess) {
        int rc = elle__cuda_fail(__FILE__, __LINE__, "CUDA", "cudaMemsetAsync(p, 0, rounded, stream)",
                                 cudaGetErrorString(ce));
        (void)cudaFree(p);
        (void)cudaGetLastError();
        return rc;
    }
    *out = p;
    return ELLE_OK;
}

static void cuda_free(elle__backend *be, void *ptr)
{
    if (!ptr)
        return;
    const elle__cuda_impl *impl = elle__cuda(be);
    /* raw calls, no elle__cuda_enter: free runs in cleanup paths, where a
     * message of its own would overwrite the error being unwound */
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != impl->device)
        (void)cudaSetDevice(impl->device);
    /* work still queued on the stream may read or write the block */
    (void)cudaStreamSynchronize(impl->stream);
    (void)cudaFree(ptr);
    (void)cudaGetLastError();
}

static int check_copy(const char *op, const void *dst, const void *src, size_t bytes)
{
    if (bytes && (!dst || !src))
        ELLE_FAIL(ELLE_EINVAL, "cuda %s: %s is NULL", op, !dst ? "dst" : "src");
    return ELLE_OK;
}

static int cuda_copy_to_device(elle__backend *be, void *dst, const void *host_src, size_t bytes)
{
    ELLE_TRY(check_copy("copy_to_device", dst, host_src, bytes));
    if (!bytes)
        return ELLE_OK;
    ELLE_TRY(elle__cuda_enter(be));
    cudaStream_t stream = elle__cuda(be)->stream;
    ELLE_CUDA_TRY(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream));
    /* the caller may free or reuse its host buffer as soon as we return */
    ELLE_CUDA_TRY(cudaStreamSynchronize(stream));
    return ELLE_OK;
}

static int cuda_copy_to_host(elle__backend *be, void *host_dst, const void *src, size_t bytes)
{
    ELLE_TRY(check_copy("copy_to_host", host_dst, src, bytes));
    if (!bytes)
        return ELLE_OK;
    ELLE_TRY(elle__cuda_enter(be));
    cudaStream_t stream = elle__cuda(be)->stream;
    ELLE_CUDA_TRY(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream));
    ELLE_CUDA_TRY(cudaStreamSynchronize(stream));
    return ELLE_OK;
}

/* Device-to-device with memmove semantics: the host backends' copy is a
 * memmove (both ends may lie in one arena block), while cudaMemcpy leaves
 * overlapping ranges undefined, so an overlap goes through the workspace. */
static int device_move(elle__backend *be, void *dst, const void *src, size_t bytes)
{
    if (!bytes || dst == src)
        return ELLE_OK;
    ELLE_TRY(elle__cuda_enter(be));
    cudaStream_t stream = elle__cuda(be)->stream;
    const uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src;
    const int overlap = d < s ? s - d < bytes : d - s < bytes;
    if (!overlap) {
        ELLE_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
        return ELLE_OK;
    }
    void *tmp;
    ELLE_TRY(elle__cuda_workspace(be, bytes, &tmp));
    ELLE_CUDA_TRY(cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, stream));
    ELLE_CUDA_TRY(cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, stream));
    return ELLE_OK;
}

static int cuda_copy(elle__backend *be, void *dst, const void *src, size_t bytes)
{
    ELLE_TRY(check_copy("copy", dst, src, bytes));
    return device_move(be, dst, src, bytes);
}

static int cuda_memzero(elle__backend *be, void *dst, size_t bytes)
{
    if (bytes && !dst)
        ELLE_FAIL(ELLE_EINVAL, "cuda memzero: dst is NULL");
    if (!bytes)
        return ELLE_OK;
    ELLE_TRY(elle__cuda_enter(be));
    ELLE_CUDA_TRY(cudaMemsetAsync(dst, 0, bytes, elle__cuda(be)->stream));
    return ELLE_OK;
}

/* ---- layouts ----------------------------------------------------------- */

static int cuda_layout_for(elle__backend *be, int64_t c, int64_t h, int64_t w)
{
    (void)be;
    (void)c;
    (void)h;
    (void)w;
    return ELLE__LAYOUT_PLAIN;
}

static size_t cuda_tensor_bytes(elle__backend *be, const elle__tensor *t)
{
    (void)be;
    if (!t || t->n < 0 || t->c < 0 || t->h < 0 || t->w < 0 || t->layout != ELLE__LAYOUT_PLAIN)
        return 0;
    /* 0 (as for an invalid tensor) rather than a wrapped size: the ops'
     * shape checks then reject the tensor with ELLE_ESHAPE */
    const int64_t dims[4] = {t->n, t->c, t->h, t->w};
    int64_t numel = 1;
    for (int i = 0; i < 4; i++) {
        if (dims[i] && numel > INT64_MAX / (int64_t)sizeof(float) / dims[i])
            return 0;
        numel *= dims[i];
    }
    return (size_t)numel * sizeof(float);
}

/* Both ends of to_plain / from_plain are backend memory: the CPU backend
 * runs them as oneDNN reorders between two buffers of its engine, the
 * reference backend as a memmove, the tests hand them ops->alloc'd buffers,
 * and host transfers go through copy_to_host / copy_to_device instead. With
 * only the plain layout here, both are a device-to-device move. */
static int cuda_to_plain(elle__backend *be, const elle__tensor *src, float *dst)
{
    ELLE_TRY(elle__cuda_check_tensor("to_plain", "src", src));
    ELLE_TRY(elle__cuda_check_ptr("to_plain", "dst", dst));
    return device_move(be, dst, src->data, (size_t)elle__tensor_numel(src) * sizeof(float));
}

static int cuda_from_plain(elle__backend *be, const float *src, elle__tensor *dst)
{
    ELLE_TRY(elle__cuda_check_ptr("from_plain", "src", src));
    ELLE_TRY(elle__cuda_check_tensor("from_plain", "dst", dst));
    return device_move(be, dst->data, src, (size_t)elle__tensor_numel(dst) * sizeof(float));
}

/* ---- the table --------------------------------------------------------- */

static const elle__backend_ops cuda_ops = {
    .abi_version = ELLE__BACKEND_ABI_VERSION,
    .name = "cuda",
    .destroy = cuda_destroy,
    .set_threads = NULL, /* the GPU has no thread setting */
    .sync = cuda_sync,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .copy_to_device = cuda_copy_to_device,
    .copy_to_host = cuda_copy_to_host,
    .copy = cuda_copy,
    .memzero = cuda_memzero,
    .layout_for = cuda_layout_for,
    .tensor_bytes = cuda_tensor_bytes,
    .to_plain = cuda_to_plain,
    .from_plain = cuda_from_plain,
    .conv2d_fwd = elle__cuda_conv2d_fwd,
    .conv2d_bwd_data = elle__cuda_conv2d_bwd_data,
    .conv2d_bwd_weights = elle__cuda_conv2d_bwd_weights,
    .bn_workspace_bytes = elle__cuda_bn_workspace_bytes,
    .bn_fwd_train = elle__cuda_bn_fwd_train,
    .bn_fwd_infer = elle__cuda_bn_fwd_infer,
    .bn_bwd = elle__cuda_bn_bwd,
    .relu_fwd = elle__cuda_relu_fwd,
    .relu_bwd = elle__cuda_relu_bwd,
    .add = elle__cuda_add,
    .pool_workspace_bytes = elle__cuda_pool_workspace_bytes,
    .pool_fwd = elle__cuda_pool_fwd,
    .pool_bwd = elle__cuda_pool_bwd,
    .linear_fwd = elle__cuda_linear_fwd,
    .linear_bwd_data = elle__cuda_linear_bwd_data,
    .linear_bwd_weights = elle__cuda_linear_bwd_weights,
    .xent_fwd = elle__cuda_xent_fwd,
    .xent_bwd = elle__cuda_xent_bwd,
    .sign = elle__cuda_sign,
    .axpy = elle__cuda_axpy,
    .scale = elle__cuda_scale,
    .fill = elle__cuda_fill,
    .clamp = elle__cuda_clamp,
    .project_linf = elle__cuda_project_linf,
    .uniform = elle__cuda_uniform,
    .sgd_update = elle__cuda_sgd_update,
    .bn_fwd_tangent = elle__cuda_bn_fwd_tangent,
    .bn_bwd_tangent = elle__cuda_bn_bwd_tangent,
    .pool_fwd_tangent = elle__cuda_pool_fwd_tangent,
    .xent_tangent = elle__cuda_xent_tangent,
};

/* Stream, cuDNN and cuBLAS handles on the current device (impl->device). */
static int build(elle__cuda_impl *impl)
{
    ELLE_CUDA_TRY(cudaSetDevice(impl->device));
    /* non-blocking: the legacy default stream, which other code in the
     * process may use, does not serialise with ours */
    ELLE_CUDA_TRY(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
    ELLE_CUDNN_TRY(cudnnCreate(&impl->cudnn));
    ELLE_CUDNN_TRY(cudnnSetStream(impl->cudnn, impl->stream));
    ELLE_CUBLAS_TRY(cublasCreate(&impl->cublas));
    /* this also puts the handle on cuBLAS's default workspace pool, which
     * cuBLAS allocates once per handle: GEMMs allocate nothing per call */
    ELLE_CUBLAS_TRY(cublasSetStream(impl->cublas, impl->stream));
    /* alpha and beta are host floats in every call */
    ELLE_CUBLAS_TRY(cublasSetPointerMode(impl->cublas, CUBLAS_POINTER_MODE_HOST));
    /* FP32 without TF32 (the header comment says why) */
    ELLE_CUBLAS_TRY(cublasSetMathMode(impl->cublas, CUBLAS_DEFAULT_MATH));
    return ELLE_OK;
}

int elle__backend_cuda_create(elle__backend *be, int device_index)
{
    if (!be)
        ELLE_FAIL(ELLE_EINVAL, "elle__backend_cuda_create: be is NULL");
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        ELLE_FAIL(ELLE_EDEVICE,
                  "cuda backend: no usable CUDA device: cudaGetDeviceCount failed: %s (%s)",
                  cudaGetErrorName(ce), cudaGetErrorString(ce));
    }
    if (count <= 0)
        ELLE_FAIL(ELLE_EDEVICE, "cuda backend: no CUDA device found");
    if (device_index < 0 || device_index >= count)
        ELLE_FAIL(ELLE_EDEVICE, "cuda backend: device index %d out of range (%d CUDA device%s)",
                  device_index, count, count == 1 ? "" : "s");

    elle__cuda_impl *impl = calloc(1, sizeof *impl);
    if (!impl)
        ELLE_FAIL(ELLE_ENOMEM, "cuda backend: out of memory");
    impl->device = device_index;
    int rc = build(impl);
    if (rc < 0) {
        elle__error_prefix("cuda backend (device %d)", device_index);
        release(impl);
        return rc;
    }
    be->ops = &cuda_ops;
    be->impl = impl;
    be->kind = ELLE_BACKEND_CUDA;
    be->threads = 0;
    return ELLE_OK;
}
