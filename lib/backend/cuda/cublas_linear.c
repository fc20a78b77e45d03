/*
 * The fully connected layer on cuBLAS SGEMM (and SGEMV for the bias
 * gradient).
 *
 * cuBLAS is column-major; a row-major (r, c) matrix M in memory is the
 * column-major (c x r) matrix M^T with leading dimension c. So, with the
 * plain tensors of the op table (x flattened to (n, in) row-major, which is
 * torch.flatten's order for NCHW; w (out, in) row-major; y, dy (n, out)):
 *
 *   forward  y = x w^T       <=>  y^T (out x n, ld out) = w (out x in) x^T (in x n)
 *            w^T is the column-major (in x out, ld in) buffer of w, so
 *            op(A) = T on A = w_buf, lda = in; x^T is x's buffer as is
 *            (in x n, ld in), op(B) = N:
 *            gemm(T, N, m = out, n = n, k = in, w, in, x, in, beta 0, y, out)
 *   bias     y^T += b (out x 1) 1^T (1 x n), a rank-1 gemm with k = 1:
 *            gemm(N, N, out, n, 1, b, out, ones, 1, beta 1, y, out)
 *   dx       dx = dy w       <=>  dx^T (in x n, ld in) = w^T (in x out) dy^T (out x n)
 *            both are the buffers as they are (ld in and ld out):
 *            gemm(N, N, m = in, n = n, k = out, w, in, dy, out, beta 0, dx, in)
 *   dw       dw += dy^T x    <=>  dw^T (in x out, ld in) += x^T (in x n) dy (n x out)
 *            x^T is x's buffer (ld in); dy is the transpose of dy's buffer
 *            (out x n, ld out):
 *            gemm(N, T, m = in, n = out, k = n, x, in, dy, out, beta 1, dw, in)
 *   db       db += dy^T 1    <=>  db (out) += dy_buf (out x n, ld out) ones (n):
 *            gemv(N, out, n, dy, out, ones, beta 1, db)
 *
 * beta 0 means cuBLAS never reads the output, so dx and y are written even
 * over NaN garbage; beta 1 gives the accumulation the op table asks of
 * parameter gradients. The 64-bit (_64) entry points take the int64 sizes
 * as they are.
 *
 * The ones vector lives in the impl (linear_ones), grown on the first call
 * with a larger batch and never shrunk, so later calls allocate nothing.
 * The handle's math mode is CUBLAS_DEFAULT_MATH (set by cuda_backend.c), so
 * SGEMM accumulates in float without TF32, close to the reference's double
 * sums (the relative error grows like sqrt(in) * 2^-24).
 */
#include <stdlib.h>

#include "backend/cuda/cuda_internal.h"
#include "core/error.h"

enum { LIN_FWD, LIN_BWD_DATA, LIN_BWD_WEIGHTS };

static const char *const lin_op_name[] = {"linear_fwd", "linear_bwd_data",
                                          "linear_bwd_weights"};

/* `x` (input shaped: x or dx, any c, h, w, flattened) and `y` (output
 * shaped: y or dy, (n, out, 1, 1)). */
static int check_linear(const char *op, const char *xname, const elle__tensor *x,
                        const char *yname, const elle__tensor *y)
{
    ELLE_TRY(elle__cuda_check_tensor(op, xname, x));
    ELLE_TRY(elle__cuda_check_tensor(op, yname, y));
    if (y->n != x->n || y->h != 1 || y->w != 1)
        ELLE_FAIL(ELLE_ESHAPE, "cuda %s: %s is %s, expected (%" PRId64 ", out, 1, 1) for %s %s",
                  op, yname, elle__cuda_shape(y).s, x->n, xname, elle__cuda_shape(x).s);
    return ELLE_OK;
}

/* A device vector of at least n ones. */
static int ones_vector(elle__backend *be, int64_t n, const float **out)
{
    elle__cuda_impl *impl = elle__cuda(be);
    if (impl->linear_ones && (int64_t)impl->linear_ones_n >= n) {
        *out = impl->linear_ones;
        return ELLE_OK;
    }
    if ((uint64_t)n > SIZE_MAX / sizeof(float))
        ELLE_FAIL(ELLE_ENOMEM, "cuda linear: a ones vector of %" PRId64 " floats is too large",
                  n);
    size_t bytes = (size_t)n * sizeof(float);
    float *host = malloc(bytes);
    if (!host)
        ELLE_FAIL(ELLE_ENOMEM, "cuda linear: out of host memory for %" PRId64 " ones", n);
    for (int64_t i = 0; i < n; i++)
        host[i] = 1.0f;
    int rc = ELLE_OK;
    void *dev = NULL;
    cudaError_t ce;
    if (impl->linear_ones) {
        /* queued ops may still read the old vector */
        ce = cudaStreamSynchronize(impl->stream);
        if (ce != cudaSuccess) {
            rc = elle__cuda_fail(__FILE__, __LINE__, "CUDA", "cudaStreamSynchronize",
                                 cudaGetErrorString(ce));
            goto cleanup;
        }
        cudaFree(impl->linear_ones);
        impl->linear_ones = NULL;
        impl->linear_ones_n = 0;
    }
    ce = cudaMalloc(&dev, bytes);
    if (ce == cudaSuccess)
        ce = cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, impl->stream);
    /* the copy reads pageable memory: wait before the host buffer goes */
    if (ce == cudaSuccess)
        ce = cudaStreamSynchronize(impl->stream);
    if (ce == cudaErrorMemoryAllocation) {
        /* out of device memory is ELLE_ENOMEM, as for every other allocation */
        cudaFree(dev);
        (void)cudaGetLastError();
        rc = elle__error_set(ELLE_ENOMEM,
                             "cuda linear: out of device memory for %" PRId64 " ones", n);
        goto cleanup;
    }
    if (ce != cudaSuccess) {
        cudaFree(dev);
        rc = elle__cuda_fail(__FILE__, __LINE__, "CUDA", "allocating the ones vector",
                             cudaGetErrorString(ce));
        goto cleanup;
    }
    impl->linear_ones = dev;
    impl->linear_ones_n = (size_t)n;
    *out = dev;
cleanup:
    free(host);
    return rc;
}

int elle__cuda_linear_fwd(elle__backend *be, const elle__tensor *x, const float *w,
                          const float *b, elle__tensor *y)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = lin_op_name[LIN_FWD];
    ELLE_TRY(check_linear(op, "x", x, "y", y));
    ELLE_TRY(elle__cuda_check_ptr(op, "w", w));
    const int64_t n = x->n, in = x->c * x->h * x->w, out = y->c;
    const float one = 1.0f, zero = 0.0f;
    const float *ones = NULL;
    if (b)
        ELLE_TRY(ones_vector(be, n, &ones));
    cublasHandle_t h = elle__cuda(be)->cublas;
    ELLE_CUBLAS_TRY(cublasSgemm_64(h, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w, in,
                                   x->data, in, &zero, y->data, out));
    if (b)
        ELLE_CUBLAS_TRY(cublasSgemm_64(h, CUBLAS_OP_N, CUBLAS_OP_N, out, n, 1, &one, b, out,
                                       ones, 1, &one, y->data, out));
    return ELLE_OK;
}

int elle__cuda_linear_bwd_data(elle__backend *be, const elle__tensor *dy, const float *w,
                               elle__tensor *dx)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = lin_op_name[LIN_BWD_DATA];
    ELLE_TRY(check_linear(op, "dx", dx, "dy", dy));
    ELLE_TRY(elle__cuda_check_ptr(op, "w", w));
    const int64_t n = dx->n, in = dx->c * dx->h * dx->w, out = dy->c;
    const float one = 1.0f, zero = 0.0f;
    ELLE_CUBLAS_TRY(cublasSgemm_64(elle__cuda(be)->cublas, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out,
                                   &one, w, in, dy->data, out, &zero, dx->data, in));
    return ELLE_OK;
}

int elle__cuda_linear_bwd_weights(elle__backend *be, const elle__tensor *x,
                                  const elle__tensor *dy, float *dw, float *db)
{
    ELLE_TRY(elle__cuda_enter(be));
    const char *op = lin_op_name[LIN_BWD_WEIGHTS];
    ELLE_TRY(check_linear(op, "x", x, "dy", dy));
    ELLE_TRY(elle__cuda_check_ptr(op, "dw", dw));
    const int64_t n = x->n, in = x->c * x->h * x->w, out = dy->c;
    const float one = 1.0f;
    const float *ones = NULL;
    if (db)
        ELLE_TRY(ones_vector(be, n, &ones));
    cublasHandle_t h = elle__cuda(be)->cublas;
    ELLE_CUBLAS_TRY(cublasSgemm_64(h, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one, x->data, in,
                                   dy->data, out, &one, dw, in));
    if (db)
        ELLE_CUBLAS_TRY(cublasSgemv_64(h, CUBLAS_OP_N, out, n, &one, dy->data, out, ones, 1,
                                       &one, db, 1));
    return ELLE_OK;
}
