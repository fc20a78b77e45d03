/*
 * Flat elementwise kernels: relu, add, the attack and optimiser helpers,
 * the L-inf projection, the Philox uniform fill and the SGD step.
 *
 * The results are meant to be bit-identical to the CPU and reference
 * backends (x86-64, built without FMA: separate IEEE multiplies and adds in
 * float, no excess precision). nvcc contracts a*b + c into an FMA by
 * default, which rounds once instead of twice, so every product that feeds
 * a sum goes through __fmul_rn / __fadd_rn, which nvcc never contracts.
 *
 * Every kernel is one grid-stride loop over an int64_t index with a capped
 * grid, so counts beyond 2^31 work and a launch never asks for more blocks
 * than the hardware allows.
 */
#include <stdint.h>

#include <cuda_runtime.h>

#include "flat_kernels.h"
#include "launch.h"

namespace {

constexpr int kThreads = 256;
/* Enough resident blocks to fill an H100 several times over; the loop
 * covers the rest. */
constexpr int64_t kMaxBlocks = 8192;

unsigned grid_for(int64_t n)
{
    int64_t blocks = (n + kThreads - 1) / kThreads;
    return (unsigned)(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

/* No __restrict__ anywhere: several ops allow their output to alias an
 * input. Each element is read and written by the same thread, so aliasing
 * is safe without further care. */
template <class F>
__global__ void each_kernel(int64_t n, F f)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        f(i);
}

template <class F>
int launch_each(cudaStream_t stream, int64_t n, const F &f)
{
    if (n <= 0)
        return (int)cudaSuccess;
    ELLE_LAUNCH(grid_for(n), kThreads, stream, each_kernel<F>)(n, f);
    return (int)cudaGetLastError();
}

struct ReluFwd {
    const float *x;
    float *y;
    __device__ void operator()(int64_t i) const
    {
        float v = x[i];
        y[i] = v < 0.0f ? 0.0f : v; /* NaN propagates, -0 stays -0: the reference */
    }
};

struct ReluBwd {
    const float *y, *dy;
    float *dx;
    __device__ void operator()(int64_t i) const { dx[i] = y[i] > 0.0f ? dy[i] : 0.0f; }
};

struct Add {
    const float *a, *b;
    float *y;
    __device__ void operator()(int64_t i) const { y[i] = a[i] + b[i]; }
};

struct Sign {
    const float *x;
    float *y;
    __device__ void operator()(int64_t i) const
    {
        float v = x[i];
        /* the reference's chain: +-0 gives +0, a NaN falls through unchanged */
        y[i] = v > 0.0f ? 1.0f : v < 0.0f ? -1.0f : v == 0.0f ? 0.0f : v;
    }
};

struct Axpy {
    float a;
    const float *x;
    float *y;
    __device__ void operator()(int64_t i) const { y[i] = __fadd_rn(y[i], __fmul_rn(a, x[i])); }
};

struct Scale {
    float a;
    float *x;
    __device__ void operator()(int64_t i) const { x[i] = x[i] * a; }
};

struct Fill {
    float value;
    float *x;
    __device__ void operator()(int64_t i) const { x[i] = value; }
};

/* fmaxf/fminf return the other operand for a NaN, like C's: a NaN lands on
 * lo, as in the reference. */
__device__ __forceinline__ float clampf(float v, float lo, float hi)
{
    return fminf(fmaxf(v, lo), hi);
}

struct Clamp {
    float lo, hi;
    float *x;
    __device__ void operator()(int64_t i) const { x[i] = clampf(x[i], lo, hi); }
};

struct ProjectLinf {
    int64_t per_sample;
    const float *x0;
    float eps;
    const float *eps_per_sample;
    int do_clamp;
    float lo, hi;
    float *x;
    __device__ void operator()(int64_t i) const
    {
        const int64_t s = i / per_sample;
        const float ef = eps_per_sample ? eps_per_sample[s] : eps;
        /* per-sample radii live on the device, so the host cannot reject a
         * bad one as the reference does; leaving the sample as it was is the
         * nearest thing to that failure */
        if (!(ef >= 0.0f))
            return;
        /* the reference's arithmetic: double differences (no products, so
         * nothing to contract) and one rounding to float; a coordinate
         * inside its interval keeps its bits */
        const double e = ef;
        const double c = x0[i];
        float v = x[i];
        const double d = (double)v - c;
        if (d > e)
            v = (float)(c + e);
        else if (d < -e)
            v = (float)(c - e);
        if (do_clamp)
            v = clampf(v, lo, hi);
        x[i] = v;
    }
};

/* ---- Philox4x32-10 --------------------------------------------------- */

/* MUST equal elle__philox4x32_10 in lib/core/rng.c (constants, round order,
 * key schedule): the CPU and GPU streams are promised bit-identical. */
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

__device__ __forceinline__ void philox4x32_10(uint64_t block, uint64_t seed, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#pragma unroll
    for (int r = 0; r < 10; r++) {
        const uint32_t hi0 = __umulhi(kPhiloxM0, c0), lo0 = kPhiloxM0 * c0;
        const uint32_t hi1 = __umulhi(kPhiloxM1, c2), lo1 = kPhiloxM1 * c2;
        const uint32_t n0 = hi1 ^ c1 ^ k0;
        const uint32_t n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += kPhiloxW0;
        k1 += kPhiloxW1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* elle__rng_u01: a 24-bit integer times 2^-24 (exact). */
__device__ __forceinline__ float u01(uint32_t x)
{
    return __fmul_rn((float)(x >> 8), 1.0f / 16777216.0f);
}

/* One thread per Philox block, i.e. per four outputs. */
struct Uniform {
    int64_t n;
    uint64_t seed, counter;
    float lo, span;
    int aligned16; /* out is 16-byte aligned: full blocks go out as one float4 */
    float *out;
    __device__ void operator()(int64_t b) const
    {
        uint32_t r[4];
        philox4x32_10(counter + (uint64_t)b, seed, r);
        float v[4];
#pragma unroll
        for (int lane = 0; lane < 4; lane++)
            /* lib/core/rng.c: lo + span * u, multiply then add, each rounded */
            v[lane] = __fadd_rn(lo, __fmul_rn(span, u01(r[lane])));
        const int64_t i = 4 * b;
        if (aligned16 && i + 3 < n) {
            *reinterpret_cast<float4 *>(out + i) = make_float4(v[0], v[1], v[2], v[3]);
        } else {
            for (int lane = 0; lane < 4 && i + lane < n; lane++)
                out[i + lane] = v[lane];
        }
    }
};

/* The reference's float order (PyTorch, foreach=False); each product is
 * rounded before it is added, as on the CPU. */
struct SgdUpdate {
    float lr, momentum, wd;
    int nesterov;
    float *p;
    const float *grad;
    float *buf;
    __device__ void operator()(int64_t i) const
    {
        const float g = __fadd_rn(grad[i], __fmul_rn(wd, p[i]));
        const float b = __fadd_rn(__fmul_rn(momentum, buf[i]), g);
        buf[i] = b;
        const float step = nesterov ? __fadd_rn(g, __fmul_rn(momentum, b)) : b;
        p[i] = __fsub_rn(p[i], __fmul_rn(lr, step));
    }
};

} // namespace

extern "C" {

int elle__cuda_launch_relu_fwd(cudaStream_t stream, int64_t n, const float *x, float *y)
{
    return launch_each(stream, n, ReluFwd{x, y});
}

int elle__cuda_launch_relu_bwd(cudaStream_t stream, int64_t n, const float *y, const float *dy,
                               float *dx)
{
    return launch_each(stream, n, ReluBwd{y, dy, dx});
}

int elle__cuda_launch_add(cudaStream_t stream, int64_t n, const float *a, const float *b,
                          float *y)
{
    return launch_each(stream, n, Add{a, b, y});
}

int elle__cuda_launch_sign(cudaStream_t stream, int64_t n, const float *x, float *y)
{
    return launch_each(stream, n, Sign{x, y});
}

int elle__cuda_launch_axpy(cudaStream_t stream, int64_t n, float a, const float *x, float *y)
{
    return launch_each(stream, n, Axpy{a, x, y});
}

int elle__cuda_launch_scale(cudaStream_t stream, int64_t n, float a, float *x)
{
    return launch_each(stream, n, Scale{a, x});
}

int elle__cuda_launch_fill(cudaStream_t stream, int64_t n, float value, float *x)
{
    return launch_each(stream, n, Fill{value, x});
}

int elle__cuda_launch_clamp(cudaStream_t stream, int64_t n, float lo, float hi, float *x)
{
    return launch_each(stream, n, Clamp{lo, hi, x});
}

int elle__cuda_launch_project_linf(cudaStream_t stream, int64_t nsamples, int64_t per_sample,
                                   const float *x0, float eps, const float *eps_per_sample,
                                   int do_clamp, float lo, float hi, float *x)
{
    if (nsamples <= 0 || per_sample <= 0)
        return (int)cudaSuccess;
    return launch_each(stream, nsamples * per_sample,
                       ProjectLinf{per_sample, x0, eps, eps_per_sample, do_clamp, lo, hi, x});
}

int elle__cuda_launch_uniform(cudaStream_t stream, int64_t n, uint64_t seed, uint64_t counter,
                              float lo, float hi, float *out)
{
    /* computed once in float, as lib/core/rng.c does */
    const float span = hi - lo;
    const int aligned16 = ((uintptr_t)out & 15u) == 0;
    return launch_each(stream, (n + 3) / 4, Uniform{n, seed, counter, lo, span, aligned16, out});
}

int elle__cuda_launch_sgd_update(cudaStream_t stream, int64_t n, float lr, float momentum,
                                 float wd, int nesterov, float *p, const float *grad, float *buf)
{
    return launch_each(stream, n, SgdUpdate{lr, momentum, wd, nesterov, p, grad, buf});
}

} // extern "C"
