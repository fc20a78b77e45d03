/*
 * Pooling kernels: one thread per output (forward, max tangent) or per
 * input (backward, a gather over the covering outputs), sums in double as
 * the reference. Global average pooling (the window is the whole input, no
 * padding) gets a warp per (n, c) plane instead, whose lanes read the plane
 * coalesced and add up in a fixed shuffle tree.
 */
#include <cuda_runtime.h>
#include <math.h>

#include "pool_kernels.h"
#include "launch.h"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxGrid = 1 << 16;

int grid_of(int64_t work, int64_t per_block)
{
    int64_t b = (work + per_block - 1) / per_block;
    return (int)(b < 1 ? 1 : b > kMaxGrid ? kMaxGrid : b);
}

/* Geometry in the kernel's index type. */
template <typename I>
struct Geom {
    I n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
};

template <typename I>
Geom<I> geom_as(const elle__cuda_pool_geom &g)
{
    Geom<I> r;
    r.n = (I)g.n;
    r.c = (I)g.c;
    r.h = (I)g.h;
    r.w = (I)g.w;
    r.oh = (I)g.oh;
    r.ow = (I)g.ow;
    r.kh = (I)g.kh;
    r.kw = (I)g.kw;
    r.sh = (I)g.sh;
    r.sw = (I)g.sw;
    r.ph = (I)g.ph;
    r.pw = (I)g.pw;
    return r;
}

/* Signed: window positions start at -padding. I is int (when every index
 * fits) or long long; the divisions dominate the index arithmetic. */
template <bool IS_MAX, typename I>
__global__ void __launch_bounds__(kThreads)
    pool_fwd(Geom<I> g, const float *__restrict__ x, float *__restrict__ y,
             int32_t *__restrict__ argmax)
{
    const I total = g.n * g.c * g.oh * g.ow;
    const double divisor = (double)g.kh * (double)g.kw; /* kh*kw may overflow int */
    for (I o = (I)blockIdx.x * kThreads + threadIdx.x; o < total; o += (I)gridDim.x * kThreads) {
        const I ox = o % g.ow, t = o / g.ow, oy = t % g.oh, plane = t / g.oh;
        const float *xp = x + plane * g.h * g.w;
        double sum = 0.0;
        float best = -INFINITY;
        I best_at = -1;
        for (I ky = 0; ky < g.kh; ky++) {
            const I iy = oy * g.sh - g.ph + ky;
            if (iy < 0 || iy >= g.h)
                continue; /* padding: -inf for max, 0 for avg */
            for (I kx = 0; kx < g.kw; kx++) {
                const I ix = ox * g.sw - g.pw + kx;
                if (ix < 0 || ix >= g.w)
                    continue;
                const float v = xp[iy * g.w + ix];
                if constexpr (IS_MAX) {
                    /* strict > keeps the first maximum; a NaN wins once and
                     * then stays, as in PyTorch */
                    if (best_at < 0 || v > best || (isnan(v) && !isnan(best))) {
                        best = v;
                        best_at = iy * g.w + ix;
                    }
                } else {
                    sum += (double)v;
                }
            }
        }
        if constexpr (IS_MAX) {
            y[o] = best;
            argmax[o] = (int32_t)best_at;
        } else {
            y[o] = (float)(sum / divisor);
        }
    }
}

/* Global average pooling: warp `plane` sums its h*w inputs. */
template <typename I>
__global__ void __launch_bounds__(kThreads)
    pool_global_avg(I planes, I hw, const float *__restrict__ x, float *__restrict__ y)
{
    const int lane = threadIdx.x % 32;
    const double divisor = (double)hw;
    for (I p = (I)blockIdx.x * kWarps + threadIdx.x / 32; p < planes;
         p += (I)gridDim.x * kWarps) {
        const float *xp = x + p * hw;
        double sum = 0.0;
        for (I i = lane; i < hw; i += 32)
            sum += (double)xp[i];
        for (int off = 16; off > 0; off >>= 1)
            sum += __shfl_xor_sync(0xffffffffu, sum, off);
        if (lane == 0)
            y[p] = (float)(sum / divisor);
    }
}

/* The outputs [lo, hi] (empty when lo > hi) whose windows cover input
 * coordinate i: output o covers o*s - p .. o*s - p + k - 1. */
template <typename I>
__device__ __forceinline__ void covering(I i, I k, I s, I p, I out, I *lo, I *hi)
{
    const I first = i + p - k + 1; /* smallest o*s that still covers i */
    *lo = first <= 0 ? 0 : (first + s - 1) / s;
    *hi = (i + p) / s;
    if (*hi > out - 1)
        *hi = out - 1;
}

template <bool IS_MAX, typename I>
__global__ void __launch_bounds__(kThreads)
    pool_bwd(Geom<I> g, const float *__restrict__ dy, const int32_t *__restrict__ argmax,
             float *__restrict__ dx)
{
    const I total = g.n * g.c * g.h * g.w;
    const double divisor = (double)g.kh * (double)g.kw; /* kh*kw may overflow int */
    for (I i = (I)blockIdx.x * kThreads + threadIdx.x; i < total; i += (I)gridDim.x * kThreads) {
        const I ix = i % g.w, t = i / g.w, iy = t % g.h, plane = t / g.h;
        I oy0, oy1, ox0, ox1;
        covering(iy, g.kh, g.sh, g.ph, g.oh, &oy0, &oy1);
        covering(ix, g.kw, g.sw, g.pw, g.ow, &ox0, &ox1);
        const I here = iy * g.w + ix, base = plane * g.oh * g.ow;
        double sum = 0.0;
        for (I oy = oy0; oy <= oy1; oy++)
            for (I ox = ox0; ox <= ox1; ox++) {
                const I o = base + oy * g.ow + ox;
                if constexpr (!IS_MAX)
                    sum += (double)dy[o] / divisor;
                else if ((I)argmax[o] == here)
                    sum += (double)dy[o];
            }
        dx[i] = (float)sum;
    }
}

template <typename I>
__global__ void __launch_bounds__(kThreads)
    pool_max_tangent(Geom<I> g, const int32_t *__restrict__ argmax, const float *__restrict__ xt,
                     float *__restrict__ yt)
{
    const I total = g.n * g.c * g.oh * g.ow, plane_out = g.oh * g.ow, plane_in = g.h * g.w;
    for (I o = (I)blockIdx.x * kThreads + threadIdx.x; o < total; o += (I)gridDim.x * kThreads) {
        const I at = argmax[o];
        yt[o] = at >= 0 && at < plane_in ? xt[o / plane_out * plane_in + at] : nanf("");
    }
}

/* 32-bit indices when every index (and a grid stride past the end) fits. */
bool fits_int(const elle__cuda_pool_geom &g, int grid)
{
    const int64_t in = g.n * g.c * g.h * g.w, out = g.n * g.c * g.oh * g.ow;
    const int64_t big = (in > out ? in : out) + (int64_t)grid * kThreads;
    /* window positions and the covering bounds reach h + kh + sh */
    return big < INT32_MAX && g.h + g.kh + g.sh < INT32_MAX / 2 &&
           g.w + g.kw + g.sw < INT32_MAX / 2;
}

} /* namespace */

extern "C" int elle__cuda_launch_pool_fwd(cudaStream_t stream, const elle__cuda_pool_geom *g,
                                          int is_max, const float *x, float *y, int32_t *argmax)
{
    const int64_t planes = g->n * g->c;
    if (!is_max && g->oh == 1 && g->ow == 1 && g->ph == 0 && g->pw == 0 && g->kh == g->h &&
        g->kw == g->w) {
        const int64_t hw = g->h * g->w;
        const int grid = grid_of(planes, kWarps);
        if (planes * hw + (int64_t)grid * kThreads < INT32_MAX)
            ELLE_LAUNCH(grid, kThreads, stream, pool_global_avg<int>)((int)planes, (int)hw, x, y);
        else
            ELLE_LAUNCH(grid, kThreads, stream, pool_global_avg<long long>)(planes, hw, x, y);
        return (int)cudaGetLastError();
    }
    const int grid = grid_of(planes * g->oh * g->ow, kThreads);
    if (fits_int(*g, grid)) {
        if (is_max)
            ELLE_LAUNCH(grid, kThreads, stream, pool_fwd<true, int>)
                (geom_as<int>(*g), x, y, argmax);
        else
            ELLE_LAUNCH(grid, kThreads, stream, pool_fwd<false, int>)
                (geom_as<int>(*g), x, y, argmax);
    } else {
        if (is_max)
            ELLE_LAUNCH(grid, kThreads, stream, pool_fwd<true, long long>)
                (geom_as<long long>(*g), x, y, argmax);
        else
            ELLE_LAUNCH(grid, kThreads, stream, pool_fwd<false, long long>)
                (geom_as<long long>(*g), x, y, argmax);
    }
    return (int)cudaGetLastError();
}

extern "C" int elle__cuda_launch_pool_bwd(cudaStream_t stream, const elle__cuda_pool_geom *g,
                                          int is_max, const float *dy, const int32_t *argmax,
                                          float *dx)
{
    const int grid = grid_of(g->n * g->c * g->h * g->w, kThreads);
    if (fits_int(*g, grid)) {
        if (is_max)
            ELLE_LAUNCH(grid, kThreads, stream, pool_bwd<true, int>)
                (geom_as<int>(*g), dy, argmax, dx);
        else
            ELLE_LAUNCH(grid, kThreads, stream, pool_bwd<false, int>)
                (geom_as<int>(*g), dy, argmax, dx);
    } else {
        if (is_max)
            ELLE_LAUNCH(grid, kThreads, stream, pool_bwd<true, long long>)
                (geom_as<long long>(*g), dy, argmax, dx);
        else
            ELLE_LAUNCH(grid, kThreads, stream, pool_bwd<false, long long>)
                (geom_as<long long>(*g), dy, argmax, dx);
    }
    return (int)cudaGetLastError();
}

extern "C" int elle__cuda_launch_pool_max_tangent(cudaStream_t stream,
                                                  const elle__cuda_pool_geom *g,
                                                  const int32_t *argmax, const float *xt,
                                                  float *yt)
{
    const int grid = grid_of(g->n * g->c * g->oh * g->ow, kThreads);
    if (fits_int(*g, grid))
        ELLE_LAUNCH(grid, kThreads, stream, pool_max_tangent<int>)
            (geom_as<int>(*g), argmax, xt, yt);
    else
        ELLE_LAUNCH(grid, kThreads, stream, pool_max_tangent<long long>)
            (geom_as<long long>(*g), argmax, xt, yt);
    return (int)cudaGetLastError();
}
