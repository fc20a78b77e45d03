/*
 * The tests' own uniform stream (xorshift64, U[0,1)), independent of the
 * library's generators. A file defines TEST_RAND_SEED before including this
 * to keep the start its expectations were written with; a test may reseed
 * rng_state.
 */
#ifndef ELLE_TEST_RAND_H
#define ELLE_TEST_RAND_H

#include <stdint.h>

#ifndef TEST_RAND_SEED
#define TEST_RAND_SEED 0x9E3779B97F4A7C15ull
#endif

static uint64_t rng_state = TEST_RAND_SEED;

static inline double frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}

#endif
