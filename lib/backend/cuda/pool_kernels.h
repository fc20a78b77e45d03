/*
 * Launchers of the pooling kernels (pool_kernels.cu), called by pool_ops.c
 * once the arguments are checked. Plain C, so both nvcc and the C compiler
 * read it.
 *
 * Plain NCHW tensors; the reference's rules (ref_misc.c): max pooling pads
 * with -inf and records, per output, the position iy*w + ix inside its
 * (n, c) plane of the first maximum in scan order (int32); average pooling
 * divides by kh*kw (padding counted). Backward passes gather, per input,
 * over the outputs whose windows cover it (no atomics, deterministic).
 *
 * Every launcher queues its kernel on `stream` and returns the cudaError_t
 * of the launch as an int.
 */
#ifndef ELLE_BACKEND_CUDA_POOL_KERNELS_H
#define ELLE_BACKEND_CUDA_POOL_KERNELS_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Input (n, c, h, w), output (n, c, oh, ow), window, stride, padding. */
typedef struct elle__cuda_pool_geom {
    int64_t n, c, h, w, oh, ow;
    int64_t kh, kw, sh, sw, ph, pw;
} elle__cuda_pool_geom;

/* is_max: y and argmax (output-shaped); else y only (argmax unused). */
int elle__cuda_launch_pool_fwd(cudaStream_t stream, const elle__cuda_pool_geom *g, int is_max,
                               const float *x, float *y, int32_t *argmax);
/* dx := gradient (input-shaped) from dy (output-shaped). */
int elle__cuda_launch_pool_bwd(cudaStream_t stream, const elle__cuda_pool_geom *g, int is_max,
                               const float *dy, const int32_t *argmax, float *dx);
/* yt = xt at each output's argmax; an index outside the plane (not this
 * geometry's workspace) gives NaN, as the host cannot check it. */
int elle__cuda_launch_pool_max_tangent(cudaStream_t stream, const elle__cuda_pool_geom *g,
                                       const int32_t *argmax, const float *xt, float *yt);

#ifdef __cplusplus
}
#endif

#endif /* ELLE_BACKEND_CUDA_POOL_KERNELS_H */
