/*
 * Philox4x32-10 and the stream helpers of lib/core/rng.h.
 *
 * The known answers are Random123's kat_vectors for philox4x32 with 10
 * rounds; the stream tests pin down the layout documented in rng.h (block b
 * = counter + b, lane i%4) that every backend must reproduce.
 */
#include "elle_test.h"

#include <string.h>

#include "core/rng.h"

typedef struct kat {
    uint32_t ctr[4];
    uint32_t key[2];
    uint32_t expect[4];
} kat;

static const kat kats[] = {
    {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

static void test_philox_known_answers(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof kats / sizeof kats[0]; k++) {
        uint32_t out[4];
        elle__philox4x32_10(kats[k].ctr, kats[k].key, out);
        for (int lane = 0; lane < 4; lane++) {
            if (out[lane] != kats[k].expect[lane]) {
                print_error("KAT %zu lane %d: got 0x%08x, expected 0x%08x\n", k, lane, out[lane],
                            kats[k].expect[lane]);
                fail();
            }
        }
    }
}

/* Element i of a fill is lane i%4 of block counter + i/4, where block b
 * has ctr = {lo32(b), hi32(b), 0, 0} and key = {lo32(seed), hi32(seed)}. */
static void test_stream_layout(void **state)
{
    (void)state;
    const uint64_t seed = 0x0123456789abcdefull;
    /* a counter whose low word wraps inside the fill: the carry must reach
     * ctr[1] */
    const uint64_t counter = 0x00000001fffffffeull;
    enum { N = 23 };
    float out[N];
    elle__rng_uniform_range(seed, counter, 0, N, -2.0f, 3.0f, out);
    for (int i = 0; i < N; i++) {
        uint64_t b = counter + (uint64_t)(i / 4);
        uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), 0, 0};
        uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
        uint32_t r[4];
        elle__philox4x32_10(ctr, key, r);
        float u = (float)(r[i % 4] >> 8) / 16777216.0f;
        float want = -2.0f + 5.0f * u;
        if (out[i] != want) {
            print_error("element %d: got %.9g, expected %.9g\n", i, (double)out[i], (double)want);
            fail();
        }
    }
}

/* Splitting [0, n) at any k, as threads do, gives the same numbers; odd k
 * starts the second range in the middle of a block. */
static void test_uniform_range_split(void **state)
{
    (void)state;
    enum { N = 37 };
    float whole[N], split[N];
    elle__rng_uniform_range(42, 7, 0, N, 0.0f, 1.0f, whole);
    const int64_t ks[] = {1, 3, 5, 7, 13, 35};
    for (size_t t = 0; t < sizeof ks / sizeof ks[0]; t++) {
        int64_t k = ks[t];
        for (int i = 0; i < N; i++)
            split[i] = -1.0f;
        elle__rng_uniform_range(42, 7, 0, k, 0.0f, 1.0f, split);
        elle__rng_uniform_range(42, 7, k, N, 0.0f, 1.0f, split);
        assert_memory_equal(whole, split, sizeof whole);
    }
    /* three ranges with both cuts inside blocks */
    for (int i = 0; i < N; i++)
        split[i] = -1.0f;
    elle__rng_uniform_range(42, 7, 0, 6, 0.0f, 1.0f, split);
    elle__rng_uniform_range(42, 7, 6, 19, 0.0f, 1.0f, split);
    elle__rng_uniform_range(42, 7, 19, N, 0.0f, 1.0f, split);
    assert_memory_equal(whole, split, sizeof whole);
}

static void test_u01_range(void **state)
{
    (void)state;
    assert_true(elle__rng_u01(0u) == 0.0f);
    assert_true(elle__rng_u01(0xffffffffu) < 1.0f);
    assert_true(elle__rng_u01(0xffffffffu) == 1.0f - 1.0f / 16777216.0f);
    assert_true(elle__rng_u01(0xffffff00u) == elle__rng_u01(0xffffffffu)); /* 24 bits used */

    enum { N = 100000 };
    float *u = malloc(N * sizeof *u);
    assert_non_null(u);
    elle__rng_uniform_range(123, 0, 0, N, 0.0f, 1.0f, u);
    double mean = 0.0;
    for (int i = 0; i < N; i++) {
        assert_true(u[i] >= 0.0f && u[i] < 1.0f);
        mean += u[i];
    }
    mean /= N;
    /* sd of the mean is 0.289/sqrt(N) = 9e-4: 5e-3 is > 5 sd */
    assert_true(fabs(mean - 0.5) < 5e-3);
    free(u);
}

static void test_normal_moments(void **state)
{
    (void)state;
    enum { N = 100000 };
    float *x = malloc(N * sizeof *x);
    assert_non_null(x);
    const double want_mean = 1.5, want_std = 0.25;
    elle__rng_normal(99, 1000, N, (float)want_mean, (float)want_std, x);
    double sum = 0.0, sq = 0.0;
    int within_one_sd = 0;
    for (int i = 0; i < N; i++) {
        assert_true(isfinite(x[i]));
        sum += x[i];
        if (fabs(x[i] - want_mean) < want_std)
            within_one_sd++;
    }
    double mean = sum / N;
    for (int i = 0; i < N; i++)
        sq += (x[i] - mean) * (x[i] - mean);
    double sd = sqrt(sq / (N - 1));
    /* sd of the sample mean: 0.25/sqrt(1e5) = 8e-4; of the sample sd: ~6e-4 */
    assert_true(fabs(mean - want_mean) < 5e-3);
    assert_true(fabs(sd - want_std) < 5e-3);
    /* a normal puts 68.27% within one sd (binomial sd 0.15%) */
    assert_true(fabs((double)within_one_sd / N - 0.6827) < 0.01);
    free(x);
}

/* An odd-length fill is the prefix of the even-length one, and the same
 * (seed, counter) repeats while a different one does not. */
static void test_normal_stream(void **state)
{
    (void)state;
    float a[6], b[5], c[6], d[6];
    elle__rng_normal(5, 11, 6, 0.0f, 1.0f, a);
    elle__rng_normal(5, 11, 5, 0.0f, 1.0f, b);
    elle__rng_normal(5, 11, 6, 0.0f, 1.0f, c);
    elle__rng_normal(5, 12, 6, 0.0f, 1.0f, d);
    assert_memory_equal(a, b, sizeof b);
    assert_memory_equal(a, c, sizeof a);
    assert_memory_not_equal(a, d, sizeof a);
    /* a block gives 4 numbers (two Box-Muller pairs), so callers advance
     * their counter by ceil(n/4) */
    assert_int_equal(elle__rng_blocks(6), 2);
    assert_int_equal(elle__rng_blocks(0), 0);
    assert_int_equal(elle__rng_blocks(4), 1);
    assert_int_equal(elle__rng_blocks(5), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_stream_layout),
        cmocka_unit_test(test_uniform_range_split),
        cmocka_unit_test(test_u01_range),
        cmocka_unit_test(test_normal_moments),
        cmocka_unit_test(test_normal_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
