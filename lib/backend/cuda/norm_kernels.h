/*
 * Launchers of the batch-norm kernels (norm_kernels.cu), called by
 * norm_ops.c once the arguments are checked. Plain C, so both nvcc and the
 * C compiler read it.
 *
 * Tensors are plain NCHW: with hw = h*w, channel k of sample i is the
 * contiguous row (i*c + k)*hw .. +hw. Per-channel sums over the
 * M = n*hw elements are taken in double in a fixed order (per-block partials
 * in a shape-determined number of chunks, added in chunk order), so results
 * are deterministic and follow the reference backend's formulas.
 *
 * Every launcher queues its kernels on `stream`, needs `scratch` of
 * elle__cuda_bn_scratch_bytes(n, c, hw) bytes of device memory (only for
 * the duration of the queued work) and returns the cudaError_t of its
 * launches as an int. `mask` is the forward's y when the relu is fused
 * (g = y > 0 ? dy : 0), else NULL. Outputs may alias the inputs of the same
 * shape (each element is read before it is written, after every sum).
 */
#ifndef ELLE_BACKEND_CUDA_NORM_KERNELS_H
#define ELLE_BACKEND_CUDA_NORM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

size_t elle__cuda_bn_scratch_bytes(int64_t n, int64_t c, int64_t hw);

/* Batch mean and biased variance (two passes) into save_mean/save_var,
 * running statistics updated with the unbiased variance, y normalised (and
 * relu'd when fuse_relu). */
int elle__cuda_launch_bn_fwd_train(cudaStream_t stream, int64_t n, int64_t c, int64_t hw,
                                   float eps, float momentum, int fuse_relu, const float *x,
                                   const float *gamma, const float *beta, float *running_mean,
                                   float *running_var, float *y, float *save_mean,
                                   float *save_var, void *scratch);

/* y = gamma (x - running_mean) / sqrt(running_var + eps) + beta (relu'd). */
int elle__cuda_launch_bn_fwd_infer(cudaStream_t stream, int64_t n, int64_t c, int64_t hw,
                                   float eps, int fuse_relu, const float *x, const float *gamma,
                                   const float *beta, const float *running_mean,
                                   const float *running_var, float *y, void *scratch);

/* dx written; dgamma += sum g xhat, dbeta += sum g unless NULL. */
int elle__cuda_launch_bn_bwd(cudaStream_t stream, int64_t n, int64_t c, int64_t hw, float eps,
                             int training, const float *x, const float *mask, const float *dy,
                             const float *gamma, const float *mean, const float *var, float *dx,
                             float *dgamma, float *dbeta, void *scratch);

int elle__cuda_launch_bn_fwd_tangent(cudaStream_t stream, int64_t n, int64_t c, int64_t hw,
                                     float eps, int training, const float *x, const float *mask,
                                     const float *xt, const float *gamma, const float *mean,
                                     const float *var, float *yt, void *scratch);

/* dxt written unless NULL; dgamma_t, dbeta_t accumulated unless NULL. */
int elle__cuda_launch_bn_bwd_tangent(cudaStream_t stream, int64_t n, int64_t c, int64_t hw,
                                     float eps, int training, const float *x, const float *mask,
                                     const float *xt, const float *dy, const float *dyt,
                                     const float *gamma, const float *mean, const float *var,
                                     float *dxt, float *dgamma_t, float *dbeta_t, void *scratch);

#ifdef __cplusplus
}
#endif

#endif /* ELLE_BACKEND_CUDA_NORM_KERNELS_H */
