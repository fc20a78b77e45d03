/*
 * MT19937 with PyTorch's float32 mapping (lib/attacks/mt19937.h).
 *
 * Independent sources:
 * - the canonical MT19937 check value: the 10000th output for the default
 *   seed 5489 is 4123659995 (C++11 [rand.predef], std::mt19937);
 * - the spec's seed-0 / seed-42 prefixes (spec/autoattack.md §6);
 * - torch.rand values generated once with Debian's PyTorch, written here as
 *   integers k with value = k * 2^-24 (every torch.rand float32 is such a
 *   multiple, so the comparison is bit-exact):
 *     /usr/bin/python3 -c 'import torch
 *     def ints(t): return [int(v*2**24) for v in t.tolist()]
 *     torch.manual_seed(0); print(ints(torch.rand(20)))
 *     torch.manual_seed(42); print(ints(torch.rand(8)))
 *     torch.manual_seed(2**32+7); print(ints(torch.rand(5)))
 *     torch.manual_seed(1234); x=torch.rand(1300)
 *     print(ints(x[620:630])); print(ints(x[1245:1250]))
 *     torch.manual_seed(3); print(ints(torch.rand(2,3,1,4).flatten()))'
 */
#include "elle_test.h"

#include "attacks/mt19937.h"

static const uint32_t seed0_k[20] = {8325804,  12888623, 1484405,  2215104, 5157699,
                                     10638075, 8222403,  15039847, 7644169, 10608339,
                                     5853461,  6739698,  374564,   2832983, 4930630,
                                     8699352,  11704920, 13421964, 2701626, 4735681};
static const uint32_t seed42_k[8] = {14802022, 15351219, 6423388, 16094478,
                                     6550634,  10081351, 4304572, 13315092};
static const uint32_t seed2p32p7_k[5] = {8974511, 3335364, 11059737, 11020790, 3905091};
static const uint32_t seed1234_620_k[10] = {13210305, 3118382, 528377,  3319105, 1647877,
                                            8096208,  5897346, 7618371, 6020543, 7003048};
static const uint32_t seed1234_1245_k[5] = {60994, 7446659, 2390299, 13235865, 13461236};
static const uint32_t seed3_2x3x1x4_k[24] = {
    71530,   1771160,  4795641,  452227,   7912376,  1008584,  12949760, 12477205,
    9972733, 14895763, 7567050,  13413227, 2513913,  6735529,  908938,   7707541,
    2946167, 15924646, 14215648, 14677652, 10876844, 3603037,  15926695, 203150};

static void expect_k(const float *got, const uint32_t *k, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        float want = (float)k[i] / 16777216.0f;
        if (got[i] != want) {
            print_error("%s[%d]: got %.9g, torch.rand gives %.9g\n", what, i, (double)got[i],
                        (double)want);
            fail();
        }
    }
}

static void test_canonical_10000th(void **state)
{
    (void)state;
    elle__mt19937 g;
    elle__mt19937_seed(&g, 5489);
    uint32_t v = 0;
    for (int i = 0; i < 10000; i++)
        v = elle__mt19937_next_u32(&g);
    assert_int_equal(v, 4123659995u);
}

static void test_spec_prefixes(void **state)
{
    (void)state;
    static const double s0[4] = {0.49626, 0.76822, 0.08848, 0.13203};
    static const double s42[4] = {0.88227, 0.91500, 0.38286, 0.95931};
    elle__mt19937 g;
    elle__mt19937_seed(&g, 0);
    for (int i = 0; i < 4; i++)
        assert_true(fabs((double)elle__mt19937_uniform(&g) - s0[i]) < 5e-6);
    elle__mt19937_seed(&g, 42);
    for (int i = 0; i < 4; i++)
        assert_true(fabs((double)elle__mt19937_uniform(&g) - s42[i]) < 5e-6);
}

static void test_torch_rand_values(void **state)
{
    (void)state;
    elle__mt19937 g;
    float buf[1300];

    elle__mt19937_seed(&g, 0);
    elle__mt19937_fill(&g, buf, 20);
    expect_k(buf, seed0_k, 20, "seed 0");

    elle__mt19937_seed(&g, 42);
    elle__mt19937_fill(&g, buf, 8);
    expect_k(buf, seed42_k, 8, "seed 42");

    /* torch.manual_seed reduces the seed mod 2^32 */
    elle__mt19937_seed(&g, (1ull << 32) + 7);
    elle__mt19937_fill(&g, buf, 5);
    expect_k(buf, seed2p32p7_k, 5, "seed 2^32+7");

    /* across the first and second regeneration of the 624-word state */
    elle__mt19937_seed(&g, 1234);
    elle__mt19937_fill(&g, buf, 1300);
    expect_k(buf + 620, seed1234_620_k, 10, "seed 1234 [620:630]");
    expect_k(buf + 1245, seed1234_1245_k, 5, "seed 1234 [1245:1250]");

    /* a shaped draw is the flat stream in C order (Square's N x C x 1 x W) */
    elle__mt19937_seed(&g, 3);
    elle__mt19937_fill(&g, buf, 24);
    expect_k(buf, seed3_2x3x1x4_k, 24, "seed 3 (2,3,1,4)");
}

/* fill(n) and n single draws consume the same stream, one word per float,
 * and every value lies in [0, 1) on the 2^-24 grid. */
static void test_fill_matches_singles(void **state)
{
    (void)state;
    elle__mt19937 a, b, c;
    elle__mt19937_seed(&a, 99);
    elle__mt19937_seed(&b, 99);
    elle__mt19937_seed(&c, 99);
    float buf[2000];
    elle__mt19937_fill(&a, buf, 2000);
    for (int i = 0; i < 2000; i++) {
        float u = elle__mt19937_uniform(&b);
        uint32_t w = elle__mt19937_next_u32(&c);
        assert_true(u == buf[i]);
        assert_true(u == (float)(w & 0xffffffu) / 16777216.0f);
        assert_true(u >= 0.0f && u < 1.0f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_10000th),
        cmocka_unit_test(test_spec_prefixes),
        cmocka_unit_test(test_torch_rand_values),
        cmocka_unit_test(test_fill_matches_singles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
