/*
 * Random orders and augmentation for datasets, from Philox4x32-10.
 *
 * Every random number here is a pure function of (seed, epoch, domain, k):
 * word k of a stream is lane k % 4 of
 *     philox4x32_10(ctr = {lo32(k / 4), hi32(k / 4), epoch, domain},
 *                   key = {lo32(seed), hi32(seed)}).
 * The domain tags keep shuffling, splitting and augmentation independent of
 * each other and of the streams in core/rng.h (which use ctr word 3 = 0).
 * docs/datasets.md states these rules for users.
 */
#ifndef ELLE_DATA_AUGMENT_H
#define ELLE_DATA_AUGMENT_H

#include <stdint.h>

#include "data/data.h"

#define ELLE__RNG_DOMAIN_SHUFFLE 0x53687566u /* "Shuf" */
#define ELLE__RNG_DOMAIN_SPLIT 0x53706c74u   /* "Splt" */
#define ELLE__RNG_DOMAIN_AUGMENT 0x41756721u /* "Aug!" */

/* A sequential reader of one stream. */
typedef struct elle__draws {
    uint32_t key[2];
    uint32_t epoch, domain;
    uint64_t block; /* next block to generate */
    uint32_t buf[4];
    int lane;       /* next lane of buf to hand out; 4 = empty */
} elle__draws;

void elle__draws_init(elle__draws *d, uint64_t seed, uint32_t epoch, uint32_t domain);

/* The next 32-bit word of the stream. */
uint32_t elle__draws_next(elle__draws *d);

/* Uniform integer in [0, bound), bound >= 1, without bias (Lemire's
 * multiply-and-reject: a word is rejected only when the low half of
 * word * bound falls below 2^32 mod bound). */
uint32_t elle__draws_below(elle__draws *d, uint32_t bound);

/* perm[0 .. n) := 0 .. n-1, then the first k steps of a forward
 * Fisher-Yates shuffle: for i = 0 .. k-1 swap perm[i] with perm[i + j],
 * j uniform in [0, n - i). With k = n - 1 (or n) the whole array is a uniform
 * random permutation; with k < n, perm[0 .. k) is a uniform random k-subset
 * in random order. Requires n <= 2^32. */
void elle__shuffle_prefix(int64_t *perm, int64_t n, int64_t k, uint64_t seed, uint32_t epoch,
                          uint32_t domain);

/* Augmentation of one sample: shift (dy, dx) in [-pad, pad] and a flip. */
typedef struct elle__aug {
    int dy, dx; /* output pixel (y, x) reads input (y + dy, x + dx) before the flip */
    int flip;   /* 1: mirror horizontally after the crop */
} elle__aug;

/* The augmentation of sample `sample` in epoch `epoch`: one Philox block
 * (ctr = {lo32(sample), hi32(sample), epoch, AUGMENT}) gives
 * offset_y = floor(w0 (2 pad + 1) / 2^32), offset_x likewise from w1 (the
 * crop offsets in [0, 2 pad] of the zero-padded image, dy = offset_y - pad),
 * and flip = top bit of w2. Disabled parts are 0. */
elle__aug elle__aug_draw(uint64_t seed, uint32_t epoch, int64_t sample, int pad,
                         int flip_enabled);

/* Write image `idx` of the store as (c, h, w) floats in [0, 1], augmented by
 * `a` (NULL: unchanged). Pixels read from outside the image are 0. */
void elle__sample_to_float(const elle__dstore *s, int64_t idx, const elle__aug *a, float *out);

#endif /* ELLE_DATA_AUGMENT_H */
