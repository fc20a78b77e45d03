/*
 * Host emulation of the cuBLAS subset in cublas_v2.h: a test oracle written
 * from NVIDIA's cuBLAS documentation (not from any implementation), used
 * only by the emulated build in tests/cuda_emu.
 *
 * Column-major, as cuBLAS. Products are accumulated in double whatever the
 * math mode, and beta == 0 never reads the output. Arguments are checked
 * as the documentation lists (INVALID_VALUE), and more strictly than a GPU
 * would notice: every matrix and vector must be device memory (cudaMalloc'd)
 * covering its whole extent, alpha and beta must live where the pointer
 * mode says, and the output must not overlap an input. Every refusal goes
 * through elle_emu_report, so a test says why.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cublas_v2.h"

struct cublasContext {
    cudaStream_t stream;
    cublasPointerMode_t pointer_mode;
    cublasMath_t math;
};

#define INVALID CUBLAS_STATUS_INVALID_VALUE
#define TRY(expr)                                                                       \
    do {                                                                                \
        cublasStatus_t st_ = (expr);                                                    \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                               \
            return st_;                                                                 \
    } while (0)

static cublasStatus_t fail(cublasStatus_t st, const char *call, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    elle_emu_report("cuBLAS", call, msg);
    return st;
}

const char *cublasGetStatusString(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

/* ---- the handle ---------------------------------------------------------- */

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    if (!handle)
        return fail(INVALID, "cublasCreate", "handle is NULL");
    /* the documented defaults: host pointer mode, default math */
    *handle = calloc(1, sizeof **handle);
    if (!*handle)
        return fail(CUBLAS_STATUS_ALLOC_FAILED, "cublasCreate", "out of host memory");
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    if (!handle)
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasDestroy", "handle is NULL");
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t streamId)
{
    if (!handle)
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetStream", "handle is NULL");
    handle->stream = streamId;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode)
{
    if (!handle)
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetPointerMode", "handle is NULL");
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
        return fail(INVALID, "cublasSetPointerMode", "mode %d is not a pointer mode", mode);
    handle->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    if (!handle)
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetMathMode", "handle is NULL");
    /* one base mode, optionally with the DISALLOW_REDUCED_PRECISION flag */
    const int base = (int)mode & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base != CUBLAS_DEFAULT_MATH && base != CUBLAS_TENSOR_OP_MATH &&
        base != CUBLAS_PEDANTIC_MATH && base != CUBLAS_TF32_TENSOR_OP_MATH &&
        base != CUBLAS_FP32_EMULATED_BF16X9_MATH && base != CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH)
        return fail(INVALID, "cublasSetMathMode", "mode %d is not a math mode", mode);
    handle->math = mode; /* recorded only: the emulation computes in double */
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- checks -------------------------------------------------------------- */

/* Bytes spanned by a column-major rows x cols float matrix of leading
 * dimension ld (>= rows), or by a vector of len elements at stride inc (as
 * rows = 1, cols = len, ld = inc); 0 when there is nothing to read. */
static cublasStatus_t extent(const char *call, const char *name, int64_t rows, int64_t cols,
                             int64_t ld, size_t *bytes)
{
    *bytes = 0;
    if (rows == 0 || cols == 0)
        return CUBLAS_STATUS_SUCCESS;
    if (cols - 1 > (INT64_MAX / (int64_t)sizeof(float) - rows) / ld)
        return fail(INVALID, call, "%s (%lld x %lld, ld %lld) is too large", name,
                    (long long)rows, (long long)cols, (long long)ld);
    *bytes = (size_t)(ld * (cols - 1) + rows) * sizeof(float);
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t device(const char *call, const char *name, const void *p, size_t bytes)
{
    if (bytes && (!p || !elle_emu_is_device_range(p, bytes)))
        return fail(INVALID, call, "%s (%p) is not device memory of %zu bytes", name, p, bytes);
    return CUBLAS_STATUS_SUCCESS;
}

static int overlap(const void *a, size_t na, const void *b, size_t nb)
{
    const uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return na && nb && pa < pb + nb && pb < pa + na;
}

/* alpha and beta where the handle's pointer mode says they are. */
static cublasStatus_t scalars(const char *call, cublasHandle_t h, const float *alpha,
                              const float *beta, double *a, double *b)
{
    if (!alpha || !beta)
        return fail(INVALID, call, "alpha or beta is NULL");
    const int want = h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
    if (elle_emu_is_device_range(alpha, sizeof *alpha) != want ||
        elle_emu_is_device_range(beta, sizeof *beta) != want)
        return fail(INVALID, call, "alpha and beta must be %s memory in pointer mode %s",
                    want ? "device" : "host", want ? "DEVICE" : "HOST");
    /* in DEVICE mode the device reads them */
    if (want)
        elle_emu_device_begin();
    *a = *alpha;
    *b = *beta;
    if (want)
        elle_emu_device_end();
    return CUBLAS_STATUS_SUCCESS;
}

/* CUBLAS_OP_C is CUBLAS_OP_T for real data, as documented. */
static int op_ok(cublasOperation_t op)
{
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}

static int64_t max1(int64_t v) { return v > 1 ? v : 1; }

/* ---- SGEMM / SGEMV ------------------------------------------------------- */

cublasStatus_t cublasSgemm_64(cublasHandle_t h, cublasOperation_t transa,
                              cublasOperation_t transb, int64_t m, int64_t n, int64_t k,
                              const float *alpha, const float *A, int64_t lda, const float *B,
                              int64_t ldb, const float *beta, float *C, int64_t ldc)
{
    const char *call = "cublasSgemm_64";
    if (!h)
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, call, "handle is NULL");
    if (!op_ok(transa) || !op_ok(transb))
        return fail(INVALID, call, "transa %d or transb %d is not N, T or C", transa, transb);
    const int ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
    if (m < 0 || n < 0 || k < 0)
        return fail(INVALID, call, "m %lld, n %lld, k %lld must be >= 0", (long long)m,
                    (long long)n, (long long)k);
    /* A is m x k (N) or k x m (T); B is k x n (N) or n x k (T) */
    const int64_t arows = ta ? k : m, acols = ta ? m : k;
    const int64_t brows = tb ? n : k, bcols = tb ? k : n;
    if (lda < max1(arows) || ldb < max1(brows) || ldc < max1(m))
        return fail(INVALID, call, "lda %lld, ldb %lld, ldc %lld: the minima are %lld, %lld, "
                    "%lld for transa %d, transb %d, m %lld, n %lld, k %lld", (long long)lda,
                    (long long)ldb, (long long)ldc, (long long)max1(arows),
                    (long long)max1(brows), (long long)max1(m), transa, transb, (long long)m,
                    (long long)n, (long long)k);
    double a = 0, b = 0; /* set by scalars() */
    TRY(scalars(call, h, alpha, beta, &a, &b));
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS; /* nothing to compute, nothing read */
    size_t abytes, bbytes, cbytes;
    TRY(extent(call, "A", arows, acols, lda, &abytes));
    TRY(extent(call, "B", brows, bcols, ldb, &bbytes));
    TRY(extent(call, "C", m, n, ldc, &cbytes));
    if (a == 0) /* A and B are not read */
        abytes = bbytes = 0;
    TRY(device(call, "A", A, abytes));
    TRY(device(call, "B", B, bbytes));
    TRY(device(call, "C", C, cbytes));
    if (overlap(C, cbytes, A, abytes) || overlap(C, cbytes, B, bbytes))
        return fail(INVALID, call, "C overlaps %s", overlap(C, cbytes, A, abytes) ? "A" : "B");
    elle_emu_device_begin();
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            double acc = 0;
            for (int64_t l = 0; a != 0 && l < k; l++)
                acc += (double)(ta ? A[l + i * lda] : A[i + l * lda]) *
                       (tb ? B[j + l * ldb] : B[l + j * ldb]);
            float *c = &C[i + j * ldc];
            *c = (float)(b == 0 ? a * acc : a * acc + b * *c);
        }
    elle_emu_device_end();
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemv_64(cublasHandle_t h, cublasOperation_t trans, int64_t m, int64_t n,
                              const float *alpha, const float *A, int64_t lda, const float *x,
                              int64_t incx, const float *beta, float *y, int64_t incy)
{
    const char *call = "cublasSgemv_64";
    if (!h)
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, call, "handle is NULL");
    if (!op_ok(trans))
        return fail(INVALID, call, "trans %d is not N, T or C", trans);
    const int t = trans != CUBLAS_OP_N;
    /* cuBLAS also takes negative increments; libelle passes 1, so the
     * emulation refuses them rather than model the reversed traversal */
    if (m < 0 || n < 0 || lda < max1(m) || incx <= 0 || incy <= 0)
        return fail(INVALID, call, "m %lld, n %lld, lda %lld, incx %lld, incy %lld: need m, n "
                    ">= 0, lda >= max(1, m), incx, incy > 0", (long long)m, (long long)n,
                    (long long)lda, (long long)incx, (long long)incy);
    double a = 0, b = 0; /* set by scalars() */
    TRY(scalars(call, h, alpha, beta, &a, &b));
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    const int64_t xlen = t ? m : n, ylen = t ? n : m;
    size_t abytes, xbytes, ybytes;
    TRY(extent(call, "A", m, n, lda, &abytes));
    TRY(extent(call, "x", 1, xlen, incx, &xbytes));
    TRY(extent(call, "y", 1, ylen, incy, &ybytes));
    if (a == 0)
        abytes = xbytes = 0;
    TRY(device(call, "A", A, abytes));
    TRY(device(call, "x", x, xbytes));
    TRY(device(call, "y", y, ybytes));
    if (overlap(y, ybytes, A, abytes) || overlap(y, ybytes, x, xbytes))
        return fail(INVALID, call, "y overlaps %s", overlap(y, ybytes, A, abytes) ? "A" : "x");
    elle_emu_device_begin();
    for (int64_t i = 0; i < ylen; i++) {
        double acc = 0;
        for (int64_t l = 0; a != 0 && l < xlen; l++)
            acc += (double)(t ? A[l + i * lda] : A[i + l * lda]) * x[l * incx];
        float *yi = &y[i * incy];
        *yi = (float)(b == 0 ? a * acc : a * acc + b * *yi);
    }
    elle_emu_device_end();
    return CUBLAS_STATUS_SUCCESS;
}
