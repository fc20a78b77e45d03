/*
 * Launchers of the flat elementwise kernels (flat_kernels.cu), called by
 * flat_ops.c once the arguments are checked. Plain C, so both nvcc and the
 * C compiler read it.
 *
 * Every launcher queues its kernel on `stream` and returns the cudaError_t
 * of the launch as an int (cudaSuccess, without launching, when there is
 * nothing to do). Counts are int64_t and may exceed 2^31.
 */
#ifndef ELLE_BACKEND_CUDA_FLAT_KERNELS_H
#define ELLE_BACKEND_CUDA_FLAT_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y = x < 0 ? 0 : x; y may alias x. */
int elle__cuda_launch_relu_fwd(cudaStream_t stream, int64_t n, const float *x, float *y);
/* dx = y > 0 ? dy : 0; dx may alias dy. */
int elle__cuda_launch_relu_bwd(cudaStream_t stream, int64_t n, const float *y, const float *dy,
                               float *dx);
/* y = a + b; y may alias a or b. */
int elle__cuda_launch_add(cudaStream_t stream, int64_t n, const float *a, const float *b,
                          float *y);
/* y = sign(x), sign(+-0) = 0, NaN kept; y may alias x. */
int elle__cuda_launch_sign(cudaStream_t stream, int64_t n, const float *x, float *y);
/* y += a * x, a separate multiply and add. */
int elle__cuda_launch_axpy(cudaStream_t stream, int64_t n, float a, const float *x, float *y);
int elle__cuda_launch_scale(cudaStream_t stream, int64_t n, float a, float *x);
int elle__cuda_launch_fill(cudaStream_t stream, int64_t n, float value, float *x);
/* x = fminf(fmaxf(x, lo), hi). */
int elle__cuda_launch_clamp(cudaStream_t stream, int64_t n, float lo, float hi, float *x);
/* The reference's projection (double arithmetic, one rounding); a sample
 * whose per-sample radius is not >= 0 is left untouched. */
int elle__cuda_launch_project_linf(cudaStream_t stream, int64_t nsamples, int64_t per_sample,
                                   const float *x0, float eps, const float *eps_per_sample,
                                   int do_clamp, float lo, float hi, float *x);
/* out[i] = lo + (hi - lo) * u_i, the Philox stream of lib/core/rng.c. */
int elle__cuda_launch_uniform(cudaStream_t stream, int64_t n, uint64_t seed, uint64_t counter,
                              float lo, float hi, float *out);
/* PyTorch SGD step in the reference's float order, without contraction. */
int elle__cuda_launch_sgd_update(cudaStream_t stream, int64_t n, float lr, float momentum,
                                 float wd, int nesterov, float *p, const float *grad,
                                 float *buf);

#ifdef __cplusplus
}
#endif

#endif /* ELLE_BACKEND_CUDA_FLAT_KERNELS_H */
