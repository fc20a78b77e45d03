/*
 * Host emulation of what the CUDA backend's kernels (the .cu files of lib/backend/cuda)
 * use from <cuda_runtime.h>: the runtime API (cuda_runtime_api.h) and, when
 * compiled as C++, the device side: __global__ and friends, the built-in
 * indices, __syncthreads, __shfl_xor_sync, the rounding intrinsics, and the
 * ELLE_LAUNCH macro that replaces kernel<<<grid, block, 0, stream>>>.
 *
 * A launch runs every block of the grid, one after another, on the calling
 * thread; within a block every CUDA thread is a coroutine (emu_device.cc)
 * that runs until it finishes or reaches a barrier (__syncthreads for the
 * block, a shuffle for its warp), so barrier semantics are real: a thread
 * that reads shared memory before the barrier that orders it sees stale
 * data, and ELLE_CUDA_EMU_ORDER=reverse runs blocks and threads in reverse
 * order to make such races change the result. Divergent barriers, shuffles
 * with missing lanes and invalid launch configurations fail the launch
 * (cudaGetLastError) with a message on stderr.
 *
 * Arithmetic is the host's: IEEE float and double without contraction
 * (-ffp-contract=off), which is what __fmul_rn / __fadd_rn promise on the
 * GPU; expressions nvcc may contract into FMAs (the double-precision batch
 * norm formulas) can differ from the GPU in their last bit.
 */
#ifndef ELLE_CUDA_EMU_RUNTIME_H
#define ELLE_CUDA_EMU_RUNTIME_H

#include "cuda_runtime_api.h"

#ifdef __cplusplus

#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* One instance per kernel (per template instantiation), shared by every
 * thread: blocks run one at a time, so that is one block's shared memory. */
#define __shared__ static

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

/* The running thread's indices, set by the scheduler at every switch. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
constexpr int warpSize = 32;

struct alignas(16) float4 {
    float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w)
{
    return float4{x, y, z, w};
}

inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline unsigned __umulhi(unsigned a, unsigned b)
{
    return (unsigned)(((uint64_t)a * (uint64_t)b) >> 32);
}
inline float __int_as_float(int v)
{
    float f;
    std::memcpy(&f, &v, sizeof f);
    return f;
}
inline int __float_as_int(float f)
{
    int v;
    std::memcpy(&v, &f, sizeof v);
    return v;
}

namespace elle_emu {

/* Block barrier and warp exchange (emu_device.cc). */
void syncthreads();
uint64_t shfl_xor_bits(unsigned mask, uint64_t bits, int lane_mask, int width);

/* Run body(ctx) once per thread of every block of the grid; `key`
 * identifies the kernel. Launch errors go to cudaGetLastError. */
void run_grid(dim3 grid, dim3 block, const void *key, void (*body)(void *), void *ctx);
/* A kernel argument that is a pointer must be NULL or point into device
 * memory; records a launch error otherwise. */
void check_kernel_pointer(const void *key, int index, const void *p);

template <class... P>
struct Launch {
    dim3 grid, block;
    void (*kernel)(P...);

    template <class... A>
    void operator()(A &&...a) const
    {
        /* the arguments converted to the parameter types once, as the
         * runtime copies them into the launch; each thread gets its own
         * copy of the by-value parameters */
        std::tuple<std::decay_t<P>...> args(std::forward<A>(a)...);
        const void *key = reinterpret_cast<const void *>(kernel);
        std::apply(
            [key](const auto &...v) {
                int index = 0;
                (check_arg(key, index++, v), ...);
            },
            args);
        auto one_thread = [&]() { std::apply(kernel, args); };
        run_grid(grid, block, key,
                 [](void *c) { (*static_cast<decltype(one_thread) *>(c))(); }, &one_thread);
    }

  private:
    template <class T>
    static void check_arg(const void *key, int index, const T &v)
    {
        if constexpr (std::is_pointer_v<T>)
            check_kernel_pointer(key, index, (const void *)v);
    }
};

template <class... P>
Launch<P...> launch_of(dim3 grid, dim3 block, cudaStream_t stream, void (*kernel)(P...))
{
    (void)stream;
    return Launch<P...>{grid, block, kernel};
}

} // namespace elle_emu

#define ELLE_LAUNCH(grid, block, stream, ...) \
    ::elle_emu::launch_of((grid), (block), (stream), __VA_ARGS__)

inline void __syncthreads()
{
    elle_emu::syncthreads();
}

template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of at most 8 bytes");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    bits = elle_emu::shfl_xor_bits(mask, bits, lane_mask, width);
    T r;
    std::memcpy(&r, &bits, sizeof r);
    return r;
}

#endif /* __cplusplus */

#endif /* ELLE_CUDA_EMU_RUNTIME_H */
