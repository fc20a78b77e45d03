/*
 * Launchers of the softmax cross-entropy kernels (xent_kernels.cu), called
 * by xent_ops.c once the arguments are checked. Plain C, so both nvcc and
 * the C compiler read it.
 *
 * Logits are n rows of k floats (plain (n, k, 1, 1)); labels are n int32 in
 * device memory, trusted to lie in [0, k) (the API checks them). A label
 * outside that range cannot be reported from a kernel, so the row's outputs
 * become NaN instead of reading out of bounds.
 *
 * Every launcher queues its kernel on `stream` and returns the cudaError_t
 * of the launch as an int (cudaSuccess, without launching, for n == 0).
 */
#ifndef ELLE_BACKEND_CUDA_XENT_KERNELS_H
#define ELLE_BACKEND_CUDA_XENT_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* loss[i] = logsumexp(z_i) - z_i[labels[i]]. */
int elle__cuda_launch_xent_fwd(cudaStream_t stream, int64_t n, int64_t k, const float *z,
                               const int32_t *labels, float *loss);
/* dz_i = coef[i] * (softmax(z_i) - onehot(labels[i])); dz may alias z. */
int elle__cuda_launch_xent_bwd(cudaStream_t stream, int64_t n, int64_t k, const float *z,
                               const int32_t *labels, const float *coef, float *dz);
/* backend.h's xent_tangent: gcoef and loss_t may be NULL; dzt may alias zt. */
int elle__cuda_launch_xent_tangent(cudaStream_t stream, int64_t n, int64_t k, const float *z,
                                   const int32_t *labels, const float *coef, const float *gcoef,
                                   const float *zt, float *dzt, float *loss_t);

#ifdef __cplusplus
}
#endif

#endif /* ELLE_BACKEND_CUDA_XENT_KERNELS_H */
