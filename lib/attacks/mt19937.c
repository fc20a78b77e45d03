/*
 * MT19937 (Matsumoto & Nishimura 1998) as PyTorch's CPU generator uses it:
 * torch.manual_seed(s) is init_genrand(s mod 2^32), and a float32 uniform
 * takes the low 24 bits of one 32-bit output (so every float is exactly
 * representable and the stream advances by one word per element).
 */
#include "attacks/mt19937.h"

enum { MT_N = 624, MT_M = 397 };

#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

void elle__mt19937_seed(elle__mt19937 *g, uint64_t seed)
{
    g->state[0] = (uint32_t)(seed & 0xffffffffu);
    for (int i = 1; i < MT_N; i++) {
        uint32_t prev = g->state[i - 1];
        g->state[i] = 1812433253u * (prev ^ (prev >> 30)) + (uint32_t)i;
    }
    g->index = MT_N;
}

/* Regenerate the whole state block (the reference "twist"). */
static void mt_twist(elle__mt19937 *g)
{
    uint32_t *s = g->state;
    for (int i = 0; i < MT_N; i++) {
        uint32_t y = (s[i] & MT_UPPER) | (s[(i + 1) % MT_N] & MT_LOWER);
        uint32_t v = s[(i + MT_M) % MT_N] ^ (y >> 1);
        if (y & 1u)
            v ^= MT_MATRIX_A;
        s[i] = v;
    }
    g->index = 0;
}

uint32_t elle__mt19937_next_u32(elle__mt19937 *g)
{
    if (g->index >= MT_N)
        mt_twist(g);
    uint32_t y = g->state[g->index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

float elle__mt19937_uniform(elle__mt19937 *g)
{
    /* 24 bits: exactly float32's significand, so the product is exact */
    return (float)(elle__mt19937_next_u32(g) & 0xffffffu) * (1.0f / 16777216.0f);
}

void elle__mt19937_fill(elle__mt19937 *g, float *out, int64_t numel)
{
    for (int64_t i = 0; i < numel; i++)
        out[i] = elle__mt19937_uniform(g);
}
