/*
 * Private to the CUDA backend: its state, the error checker every CUDA,
 * cuDNN and cuBLAS call goes through, the argument checks shared by its
 * files, and the ops each file implements (cuda_backend.c gathers them into
 * the op table).
 *
 * Files (one concern each):
 *   cuda_backend.c    the op table, create/destroy, memory, copies, layouts,
 *                     workspace, the checker and the argument checks;
 *   cudnn_conv.c      convolutions (cuDNN legacy descriptors, algorithms
 *                     chosen once per shape and cached);
 *   cublas_linear.c   the fully connected layer (cuBLAS SGEMM);
 *   flat_ops.c + flat_kernels.cu     flat elementwise ops, relu, add, the
 *                     Philox uniform fill, L-inf projection, SGD update;
 *   xent_ops.c + xent_kernels.cu     softmax cross-entropy and its tangent;
 *   norm_ops.c + norm_kernels.cu     batch norm (train/infer/backward and
 *                     tangents);
 *   pool_ops.c + pool_kernels.cu     pooling (max with an argmax workspace,
 *                     average) and its tangent.
 * The *.cu files hold kernels and `extern "C"` launchers only (declared in
 * the matching *_kernels.h, a plain C header); argument checks and error
 * messages live in the *_ops.c files, so nvcc compiles no libelle header
 * but its own.
 *
 * Layout: the CUDA backend keeps every tensor in the plain NCHW layout
 * (ELLE__LAYOUT_PLAIN), which cuDNN's NCHW float descriptors take as is.
 *
 * Streams: every op is queued on the context's stream and returns without
 * waiting; ops->sync and copy_to_host wait for it. Nothing in a training
 * step allocates after the first call for a given shape: cuDNN workspaces
 * and reduction scratch come from elle__cuda_workspace, which only grows.
 */
#ifndef ELLE_BACKEND_CUDA_INTERNAL_H
#define ELLE_BACKEND_CUDA_INTERNAL_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "backend/backend.h"

/* ---- the checker ------------------------------------------------------- */

/* Record ELLE_EDEVICE with "cuda: <file>:<line>: <call> failed: <vendor
 * message>" and return it. `lib` is "CUDA", "cuDNN" or "cuBLAS". */
int elle__cuda_fail(const char *file, int line, const char *lib, const char *call,
                    const char *message);

#define ELLE_CUDA_TRY(call)                                                             \
    do {                                                                                \
        cudaError_t elle__ce_ = (call);                                                 \
        if (elle__ce_ != cudaSuccess)                                                   \
            return elle__cuda_fail(__FILE__, __LINE__, "CUDA", #call,                   \
                                   cudaGetErrorString(elle__ce_));                      \
    } while (0)

#define ELLE_CUDNN_TRY(call)                                                            \
    do {                                                                                \
        cudnnStatus_t elle__ds_ = (call);                                               \
        if (elle__ds_ != CUDNN_STATUS_SUCCESS)                                          \
            return elle__cuda_fail(__FILE__, __LINE__, "cuDNN", #call,                  \
                                   cudnnGetErrorString(elle__ds_));                     \
    } while (0)

#define ELLE_CUBLAS_TRY(call)                                                           \
    do {                                                                                \
        cublasStatus_t elle__bs_ = (call);                                              \
        if (elle__bs_ != CUBLAS_STATUS_SUCCESS)                                         \
            return elle__cuda_fail(__FILE__, __LINE__, "cuBLAS", #call,                 \
                                   cublasGetStatusString(elle__bs_));                   \
    } while (0)

/* A launcher from a *_kernels.h returns the cudaError_t of its launch
 * (cudaGetLastError() right after the <<<>>>), as an int. */
#define ELLE_CUDA_LAUNCH(call) ELLE_CUDA_TRY((cudaError_t)(call))

/* ---- state -------------------------------------------------------------- */

/* Opaque per-file caches, owned by the impl, freed by its destroy. */
typedef struct elle__cuda_conv_cache elle__cuda_conv_cache;

typedef struct elle__cuda_impl {
    int device;              /* CUDA device index */
    cudaStream_t stream;     /* every op is queued here */
    cudnnHandle_t cudnn;     /* bound to `stream` */
    cublasHandle_t cublas;   /* bound to `stream` (its default workspace pool), pointer mode host */
    void *workspace;         /* device scratch shared by the ops, grown on demand */
    size_t workspace_bytes;
    void *host_scratch;      /* pinned host scratch (small reductions), grown on demand */
    size_t host_scratch_bytes;
    elle__cuda_conv_cache *conv; /* cudnn_conv.c */
    /* cublas_linear.c: device vector of linear_ones_n ones (bias as a rank-1
     * GEMM, bias gradient as a GEMV), grown with the batch; destroy cudaFrees it */
    void *linear_ones;
    size_t linear_ones_n;
} elle__cuda_impl;

static inline elle__cuda_impl *elle__cuda(const elle__backend *be)
{
    return (elle__cuda_impl *)be->impl;
}

/* Device scratch of at least `bytes`, valid until the next call of any op
 * (ops run one after another on one stream, so they can share it). Grows
 * (after a device synchronisation) when too small: the first call for a
 * shape may allocate, later ones do not. */
int elle__cuda_workspace(elle__backend *be, size_t bytes, void **out);

/* ---- cuda_backend.c: the current device ------------------------------- */

/* Make the context's device current on this thread (a cudaGetDevice
 * compare, so cheap when it already is). A program may hold contexts on
 * several GPUs, so every op that touches the device calls this first. */
int elle__cuda_enter(elle__backend *be);

/* ---- cuda_backend.c: argument checks ----------------------------------- */

typedef struct elle__cuda_shape_str {
    char s[112];
} elle__cuda_shape_str;
elle__cuda_shape_str elle__cuda_shape(const elle__tensor *t);

/* Each sets a message "cuda <op>: ..." and returns the status, or ELLE_OK:
 * the same rules as the CPU backend's checks (cpu_internal.h), with the
 * plain layout as the only one accepted. */
int elle__cuda_check_ptr(const char *op, const char *name, const void *p);
int elle__cuda_check_tensor(const char *op, const char *name, const elle__tensor *t);
/* Shape only (no data): the size queries run before memory exists. */
int elle__cuda_check_shape(const char *op, const char *name, const elle__tensor *t);
int elle__cuda_check_same_shape(const char *op, const char *name_a, const elle__tensor *a,
                                const char *name_b, const elle__tensor *b);

/* ---- ops, by file (signatures as in backend.h) ------------------------ */

/* cudnn_conv.c */
int elle__cuda_conv2d_fwd(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *x,
                          const float *w, const float *b, elle__tensor *y);
int elle__cuda_conv2d_bwd_data(elle__backend *be, const elle__conv_desc *cd,
                               const elle__tensor *dy, const float *w, elle__tensor *dx);
int elle__cuda_conv2d_bwd_weights(elle__backend *be, const elle__conv_desc *cd,
                                  const elle__tensor *x, const elle__tensor *dy, float *dw,
                                  float *db);
void elle__cuda_conv_cache_destroy(elle__cuda_conv_cache *cache);
/* Cached (shape, algorithm) entries, for the test that a second call with
 * the same shapes adds none. */
size_t elle__cuda_conv_cache_size(const elle__backend *be);

/* cublas_linear.c */
int elle__cuda_linear_fwd(elle__backend *be, const elle__tensor *x, const float *w,
                          const float *b, elle__tensor *y);
int elle__cuda_linear_bwd_data(elle__backend *be, const elle__tensor *dy, const float *w,
                               elle__tensor *dx);
int elle__cuda_linear_bwd_weights(elle__backend *be, const elle__tensor *x,
                                  const elle__tensor *dy, float *dw, float *db);

/* flat_ops.c */
int elle__cuda_relu_fwd(elle__backend *be, const elle__tensor *x, elle__tensor *y);
int elle__cuda_relu_bwd(elle__backend *be, const elle__tensor *y, const elle__tensor *dy,
                        elle__tensor *dx);
int elle__cuda_add(elle__backend *be, const elle__tensor *a, const elle__tensor *b,
                   elle__tensor *y);
int elle__cuda_sign(elle__backend *be, int64_t n, const float *x, float *y);
int elle__cuda_axpy(elle__backend *be, int64_t n, float a, const float *x, float *y);
int elle__cuda_scale(elle__backend *be, int64_t n, float a, float *x);
int elle__cuda_fill(elle__backend *be, int64_t n, float value, float *x);
int elle__cuda_clamp(elle__backend *be, int64_t n, float lo, float hi, float *x);
int elle__cuda_project_linf(elle__backend *be, int64_t nsamples, int64_t per_sample,
                            const float *x0, float eps, const float *eps_per_sample,
                            int do_clamp, float lo, float hi, float *x);
int elle__cuda_uniform(elle__backend *be, int64_t n, uint64_t seed, uint64_t counter, float lo,
                       float hi, float *out);
int elle__cuda_sgd_update(elle__backend *be, int64_t n, float lr, float momentum, float wd,
                          int nesterov, float *p, const float *grad, float *buf);

/* xent_ops.c */
int elle__cuda_xent_fwd(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                        float *loss);
int elle__cuda_xent_bwd(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                        const float *coef, elle__tensor *dlogits);
int elle__cuda_xent_tangent(elle__backend *be, const elle__tensor *logits,
                            const int32_t *labels, const float *coef, const float *gcoef,
                            const elle__tensor *logits_t, elle__tensor *dlogits_t,
                            float *loss_t);

/* norm_ops.c */
size_t elle__cuda_bn_workspace_bytes(elle__backend *be, const elle__bn_desc *bd,
                                     const elle__tensor *x);
int elle__cuda_bn_fwd_train(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                            const float *gamma, const float *beta, float *running_mean,
                            float *running_var, elle__tensor *y, float *save_mean,
                            float *save_var, void *ws);
int elle__cuda_bn_fwd_infer(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                            const float *gamma, const float *beta, const float *running_mean,
                            const float *running_var, elle__tensor *y, void *ws);
int elle__cuda_bn_bwd(elle__backend *be, const elle__bn_desc *bd, int training,
                      const elle__tensor *x, const elle__tensor *y, const elle__tensor *dy,
                      const float *gamma, const float *mean, const float *var, const void *ws,
                      elle__tensor *dx, float *dgamma, float *dbeta);
int elle__cuda_bn_fwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                              const elle__tensor *x, const elle__tensor *y,
                              const elle__tensor *xt, const float *gamma, const float *mean,
                              const float *var, const void *ws, elle__tensor *yt);
int elle__cuda_bn_bwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                              const elle__tensor *x, const elle__tensor *y,
                              const elle__tensor *xt, const elle__tensor *dy,
                              const elle__tensor *dyt, const float *gamma, const float *mean,
                              const float *var, const void *ws, elle__tensor *dxt,
                              float *dgamma_t, float *dbeta_t);

/* pool_ops.c */
size_t elle__cuda_pool_workspace_bytes(elle__backend *be, const elle__pool_desc *pd,
                                       const elle__tensor *x, const elle__tensor *y);
int elle__cuda_pool_fwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *x,
                        elle__tensor *y, void *ws);
int elle__cuda_pool_bwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *dy,
                        const void *ws, elle__tensor *dx);
int elle__cuda_pool_fwd_tangent(elle__backend *be, const elle__pool_desc *pd,
                                const elle__tensor *x, const elle__tensor *y, const void *ws,
                                const elle__tensor *xt, elle__tensor *yt);

#endif /* ELLE_BACKEND_CUDA_INTERNAL_H */
