/* Philox4x32-10; see rng.h for the stream definition. */
#include "core/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

void elle__philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = mulhilo(PHILOX_M0, c0, &hi0);
        uint32_t lo1 = mulhilo(PHILOX_M1, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0;
        uint32_t n1 = lo1;
        uint32_t n2 = hi0 ^ c3 ^ k1;
        uint32_t n3 = lo0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static void block(uint64_t seed, uint64_t b, uint32_t out[4])
{
    uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), 0, 0};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    elle__philox4x32_10(ctr, key, out);
}

void elle__rng_uniform_range(uint64_t seed, uint64_t counter, int64_t begin, int64_t end,
                             float lo, float hi, float *out)
{
    float span = hi - lo;
    int64_t i = begin;
    while (i < end) {
        uint32_t r[4];
        int64_t b = i / 4;
        block(seed, counter + (uint64_t)b, r);
        for (int lane = (int)(i % 4); lane < 4 && i < end; lane++, i++)
            out[i] = lo + span * elle__rng_u01(r[lane]);
    }
}

void elle__rng_normal(uint64_t seed, uint64_t counter, int64_t n, float mean, float std,
                      float *out)
{
    for (int64_t i = 0; i < n; i += 2) {
        /* two uniforms per pair of outputs: lanes (0,1) or (2,3) of a block */
        uint32_t r[4];
        int64_t pair = i / 2;
        block(seed, counter + (uint64_t)(pair / 2), r);
        int lane = (int)(pair % 2) * 2;
        double u1 = ((double)(r[lane] >> 8) + 1.0) / 16777217.0; /* (0,1], avoids log(0) */
        double u2 = (double)(r[lane + 1] >> 8) / 16777216.0;
        double rad = sqrt(-2.0 * log(u1));
        double th = 6.283185307179586 * u2;
        out[i] = mean + std * (float)(rad * cos(th));
        if (i + 1 < n)
            out[i + 1] = mean + std * (float)(rad * sin(th));
    }
}
