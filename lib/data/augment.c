/* Random orders, crop and flip for datasets; see augment.h for the streams. */
#include "data/augment.h"

#include <string.h>

#include "core/rng.h"

void elle__draws_init(elle__draws *d, uint64_t seed, uint32_t epoch, uint32_t domain)
{
    d->key[0] = (uint32_t)seed;
    d->key[1] = (uint32_t)(seed >> 32);
    d->epoch = epoch;
    d->domain = domain;
    d->block = 0;
    d->lane = 4;
}

uint32_t elle__draws_next(elle__draws *d)
{
    if (d->lane == 4) {
        uint32_t ctr[4] = {(uint32_t)d->block, (uint32_t)(d->block >> 32), d->epoch, d->domain};
        elle__philox4x32_10(ctr, d->key, d->buf);
        d->block++;
        d->lane = 0;
    }
    return d->buf[d->lane++];
}

uint32_t elle__draws_below(elle__draws *d, uint32_t bound)
{
    uint64_t m = (uint64_t)elle__draws_next(d) * bound;
    uint32_t low = (uint32_t)m;
    if (low < bound) {
        uint32_t threshold = (uint32_t)(-bound) % bound; /* 2^32 mod bound */
        while (low < threshold) {
            m = (uint64_t)elle__draws_next(d) * bound;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void elle__shuffle_prefix(int64_t *perm, int64_t n, int64_t k, uint64_t seed, uint32_t epoch,
                          uint32_t domain)
{
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    if (k > n - 1)
        k = n - 1; /* the last step would swap an element with itself */
    elle__draws d;
    elle__draws_init(&d, seed, epoch, domain);
    for (int64_t i = 0; i < k; i++) {
        int64_t j = i + (int64_t)elle__draws_below(&d, (uint32_t)(n - i));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

elle__aug elle__aug_draw(uint64_t seed, uint32_t epoch, int64_t sample, int pad,
                         int flip_enabled)
{
    elle__aug a = {0, 0, 0};
    if (pad <= 0 && !flip_enabled)
        return a;
    uint32_t ctr[4] = {(uint32_t)(uint64_t)sample, (uint32_t)((uint64_t)sample >> 32), epoch,
                       ELLE__RNG_DOMAIN_AUGMENT};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t r[4];
    elle__philox4x32_10(ctr, key, r);
    if (pad > 0) {
        uint64_t span = 2 * (uint64_t)pad + 1;
        a.dy = (int)(((uint64_t)r[0] * span) >> 32) - pad;
        a.dx = (int)(((uint64_t)r[1] * span) >> 32) - pad;
    }
    if (flip_enabled)
        a.flip = (int)(r[2] >> 31);
    return a;
}

/* v / 255 for every byte, folded at compile time (the same values as a
 * division at run time, as torchvision's ToTensor computes them). */
#define E(v) ((float)(v) / 255.0f)
#define R(b)                                                                              \
    E(b), E(b + 1), E(b + 2), E(b + 3), E(b + 4), E(b + 5), E(b + 6), E(b + 7), E(b + 8),  \
        E(b + 9), E(b + 10), E(b + 11), E(b + 12), E(b + 13), E(b + 14), E(b + 15)
static const float u8_to_float[256] = {R(0),   R(16),  R(32),  R(48),  R(64),  R(80),
                                       R(96),  R(112), R(128), R(144), R(160), R(176),
                                       R(192), R(208), R(224), R(240)};
#undef R
#undef E

void elle__sample_to_float(const elle__dstore *s, int64_t idx, const elle__aug *a, float *out)
{
    const int64_t c = s->c, h = s->h, w = s->w;
    const int64_t hw = h * w, chw = c * hw;
    const uint8_t *u8 = s->is_float ? NULL : s->u8 + idx * chw;
    const float *f32 = s->is_float ? s->f32 + idx * chw : NULL;

    if (!a || (a->dy == 0 && a->dx == 0 && !a->flip)) {
        if (f32) {
            memcpy(out, f32, (size_t)chw * sizeof *out);
        } else {
            for (int64_t i = 0; i < chw; i++)
                out[i] = u8_to_float[u8[i]];
        }
        return;
    }
    /* out(y, x) = in(y + dy, x' + dx) with x' = flip ? w-1-x : x, zero
     * outside the image: the crop of the zero-padded image, then the flip. */
    for (int64_t ch = 0; ch < c; ch++) {
        for (int64_t y = 0; y < h; y++) {
            float *row = out + ch * hw + y * w;
            int64_t sy = y + a->dy;
            if (sy < 0 || sy >= h) {
                for (int64_t x = 0; x < w; x++)
                    row[x] = 0.0f;
                continue;
            }
            int64_t base = ch * hw + sy * w;
            for (int64_t x = 0; x < w; x++) {
                int64_t sx = (a->flip ? w - 1 - x : x) + a->dx;
                if (sx < 0 || sx >= w)
                    row[x] = 0.0f;
                else
                    row[x] = f32 ? f32[base + sx] : u8_to_float[u8[base + sx]];
            }
        }
    }
}
