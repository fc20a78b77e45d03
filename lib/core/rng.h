/*
 * Philox4x32-10 counter-based random numbers (Salmon et al., SC'11), the
 * generator of cuRAND and PyTorch's CUDA RNG.
 *
 * A stream is (seed, counter): block b of the stream is
 *   philox4x32_10(ctr = {lo32(counter+b), hi32(counter+b), 0, 0},
 *                 key = {lo32(seed), hi32(seed)})
 * and element i of a fill is lane i%4 of block i/4. Because each element is a
 * pure function of (seed, counter, i), CPU threads and GPU threads produce
 * the same numbers regardless of how work is split.
 *
 * Floats: u = (x >> 8) * 2^-24, uniform on [0, 1) with 24 bits.
 */
#ifndef ELLE_CORE_RNG_H
#define ELLE_CORE_RNG_H

#include <stddef.h>
#include <stdint.h>

/* One Philox4x32-10 block. */
void elle__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Counter blocks consumed by a fill of n numbers. */
static inline uint64_t elle__rng_blocks(int64_t n)
{
    return (uint64_t)((n + 3) / 4);
}

/* u in [0,1) from a 32-bit draw. */
static inline float elle__rng_u01(uint32_t x)
{
    return (float)(x >> 8) * (1.0f / 16777216.0f);
}

/* out[i] = lo + (hi - lo) * u_i for i in [begin, end) of the stream
 * (seed, counter). Backends split [0, n) into ranges across threads. */
void elle__rng_uniform_range(uint64_t seed, uint64_t counter, int64_t begin, int64_t end,
                             float lo, float hi, float *out);

/* Standard normal draws (Box-Muller on consecutive pairs of uniforms of the
 * stream), used for weight initialisation. */
void elle__rng_normal(uint64_t seed, uint64_t counter, int64_t n, float mean, float std,
                      float *out);

#endif /* ELLE_CORE_RNG_H */
