/*
 * Softmax cross-entropy kernels: forward loss, backward, and the tangent of
 * the backward (backend.h; lib/backend/ref/ref_misc.c and ref_tangent.c are
 * the formulas followed here term by term).
 *
 * One warp per row: rows are short (10 to 1000 classes), and a warp reduces
 * with shuffles, no shared memory and no atomics. Row sums accumulate in
 * double as in the reference. The xor-butterfly reduction leaves the same
 * bits in every lane (each step adds the same two values, in either order)
 * and its order depends only on k, so results are deterministic.
 *
 * Lane l owns the row elements j = l, l + 32, ...: it is the only thread
 * that reads or writes them in every pass, so an output that aliases its
 * input (dz = z, dzt = zt) is safe once each lane reads an element before
 * writing it. The one cross-element read, zt[label] for loss_t, is done by
 * the lane that owns the label, just before it overwrites that element.
 */
#include <math.h>
#include <stdint.h>

#include <cuda_runtime.h>

#include "xent_kernels.h"
#include "launch.h"

namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = kWarp * kWarpsPerBlock;
constexpr int64_t kMaxBlocks = 8192;
constexpr unsigned kFullMask = 0xffffffffu;

unsigned grid_for_rows(int64_t n)
{
    int64_t blocks = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
    return (unsigned)(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int m = kWarp / 2; m > 0; m >>= 1)
        v = fmaxf(v, __shfl_xor_sync(kFullMask, v, m));
    return v;
}

__device__ __forceinline__ double warp_sum(double v)
{
    for (int m = kWarp / 2; m > 0; m >>= 1)
        v += __shfl_xor_sync(kFullMask, v, m);
    return v;
}

/* The row's maximum (fmaxf skips NaNs; a NaN logit still makes the sum, and
 * so every output of the row, NaN, as in the reference) and
 * sum(exp(z - max)) in double: nothing overflows however large the logits. */
__device__ __forceinline__ void row_max_sum(const float *z, int64_t k, int lane, double *mx_out,
                                            double *sum_out)
{
    float m = -INFINITY;
    for (int64_t j = lane; j < k; j += kWarp)
        m = fmaxf(m, z[j]);
    const double mx = warp_max(m);
    double s = 0.0;
    for (int64_t j = lane; j < k; j += kWarp)
        s += exp((double)z[j] - mx);
    *mx_out = mx;
    *sum_out = warp_sum(s);
}

__device__ __forceinline__ float nan_f()
{
    return __int_as_float(0x7fc00000);
}

/* Every lane of a warp walks the same rows, so the shuffles see all 32. */
#define FOR_EACH_ROW(row, lane, n)                                                          \
    const int lane = (int)(threadIdx.x % kWarp);                                            \
    for (int64_t row = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarp; row < (n); \
         row += (int64_t)gridDim.x * kWarpsPerBlock)

__global__ void xent_fwd_kernel(int64_t n, int64_t k, const float *z, const int32_t *labels,
                                float *loss)
{
    FOR_EACH_ROW(row, lane, n)
    {
        const float *zr = z + row * k;
        double mx, sum;
        row_max_sum(zr, k, lane, &mx, &sum);
        if (lane == 0) {
            const int32_t y = labels[row];
            /* (max - z_y) first: both may be ~1e30 while the loss is small */
            loss[row] = y >= 0 && y < k ? (float)((mx - (double)zr[y]) + log(sum)) : nan_f();
        }
    }
}

__global__ void xent_bwd_kernel(int64_t n, int64_t k, const float *z, const int32_t *labels,
                                const float *coef, float *dz)
{
    FOR_EACH_ROW(row, lane, n)
    {
        const float *zr = z + row * k;
        float *dzr = dz + row * k;
        double mx, sum;
        row_max_sum(zr, k, lane, &mx, &sum);
        const int32_t y = labels[row];
        const bool valid = y >= 0 && y < k;
        const double log_sum = log(sum);
        const double cf = coef[row];
        for (int64_t j = lane; j < k; j += kWarp) {
            const double p = exp((double)zr[j] - mx - log_sum);
            const double onehot = j == y ? 1.0 : 0.0;
            dzr[j] = valid ? (float)(cf * (p - onehot)) : nan_f();
        }
    }
}

__global__ void xent_tangent_kernel(int64_t n, int64_t k, const float *z, const int32_t *labels,
                                    const float *coef, const float *gcoef, const float *zt,
                                    float *dzt, float *loss_t)
{
    FOR_EACH_ROW(row, lane, n)
    {
        const float *zr = z + row * k, *ztr = zt + row * k;
        float *dztr = dzt + row * k;
        double mx, sum;
        row_max_sum(zr, k, lane, &mx, &sum);
        /* p . zt before any element is written (dzt may alias zt) */
        double pz = 0.0;
        for (int64_t j = lane; j < k; j += kWarp)
            pz += exp((double)zr[j] - mx) / sum * (double)ztr[j];
        pz = warp_sum(pz);
        const int32_t y = labels[row];
        if (!(y >= 0 && y < k)) {
            for (int64_t j = lane; j < k; j += kWarp)
                dztr[j] = nan_f();
            if (loss_t && lane == 0)
                loss_t[row] = nan_f();
            continue;
        }
        const double cf = coef[row], gc = gcoef ? gcoef[row] : 0.0;
        for (int64_t j = lane; j < k; j += kWarp) {
            const double p = exp((double)zr[j] - mx) / sum;
            const double onehot = j == y ? 1.0 : 0.0;
            const double ztj = ztr[j];
            if (loss_t && j == y)
                loss_t[row] = (float)(pz - ztj);
            dztr[j] = (float)(cf * p * (ztj - pz) + gc * (p - onehot));
        }
    }
}

#undef FOR_EACH_ROW

} // namespace

extern "C" {

int elle__cuda_launch_xent_fwd(cudaStream_t stream, int64_t n, int64_t k, const float *z,
                               const int32_t *labels, float *loss)
{
    if (n <= 0 || k <= 0)
        return (int)cudaSuccess;
    ELLE_LAUNCH(grid_for_rows(n), kThreads, stream, xent_fwd_kernel)(n, k, z, labels, loss);
    return (int)cudaGetLastError();
}

int elle__cuda_launch_xent_bwd(cudaStream_t stream, int64_t n, int64_t k, const float *z,
                               const int32_t *labels, const float *coef, float *dz)
{
    if (n <= 0 || k <= 0)
        return (int)cudaSuccess;
    ELLE_LAUNCH(grid_for_rows(n), kThreads, stream, xent_bwd_kernel)(n, k, z, labels, coef, dz);
    return (int)cudaGetLastError();
}

int elle__cuda_launch_xent_tangent(cudaStream_t stream, int64_t n, int64_t k, const float *z,
                                   const int32_t *labels, const float *coef, const float *gcoef,
                                   const float *zt, float *dzt, float *loss_t)
{
    if (n <= 0 || k <= 0)
        return (int)cudaSuccess;
    ELLE_LAUNCH(grid_for_rows(n), kThreads, stream, xent_tangent_kernel)
        (n, k, z, labels, coef, gcoef, zt, dzt, loss_t);
    return (int)cudaGetLastError();
}

} // extern "C"
