/*
 * MT19937 with PyTorch's CPU float32 uniform mapping, so that AutoAttack's
 * random draws (APGD's start, Square's windows and signs) are the numbers
 * the Python AutoAttack draws for the same seed (spec/autoattack.md §6).
 *
 *   torch.manual_seed(s)  -> elle__mt19937_seed(g, s): init_genrand(s mod 2^32)
 *   torch.rand(shape)     -> elle__mt19937_fill(g, out, numel): one 32-bit
 *                            output per element, C order,
 *                            (u32 & 0xFFFFFF) * 2^-24
 *
 * Host only; deliberately separate from the Philox stream (lib/core/rng.h)
 * the library uses everywhere else.
 */
#ifndef ELLE_ATTACKS_MT19937_H
#define ELLE_ATTACKS_MT19937_H

#include <stdint.h>

typedef struct elle__mt19937 {
    uint32_t state[624];
    int index; /* next word of state to temper; 624 = regenerate first */
} elle__mt19937;

void elle__mt19937_seed(elle__mt19937 *g, uint64_t seed);
uint32_t elle__mt19937_next_u32(elle__mt19937 *g);
/* One torch.rand float32 in [0, 1). */
float elle__mt19937_uniform(elle__mt19937 *g);
/* torch.rand(numel) into out (host). */
void elle__mt19937_fill(elle__mt19937 *g, float *out, int64_t numel);

#endif /* ELLE_ATTACKS_MT19937_H */
