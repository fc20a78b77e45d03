/*
 * Square Attack, L-inf (lib/attacks/square.c), spec/autoattack.md §5, §6
 * and §8 item 3.
 *
 * - The schedule: the side-length tables the spec lists for 32x32 (and
 *   28x28, 224x224) at the iteration boundaries {11, 51, 201, 501, 1001,
 *   2001, 4001}, and the cap at min(h, w).
 * - The random stream: the stripes of the initial point are recomputed
 *   from an independent MT19937 (N x C x 1 x W draws, C order); the first
 *   iteration is replayed in full (vh then vw then C signs, the window, the
 *   candidate's margin by a public forward, acceptance); after a run the
 *   generator has advanced by exactly N*C*W + iterations*(2 + C) draws, with
 *   the iteration count checked against the model's forward counter.
 * - Invariants: every coordinate of x_best is inside the float32 bounds
 *   [x - eps, x + eps] and [0,1], and is x or clip(x +- eps) (up to one
 *   rounding: x_best + 2 eps may round inside the bound); margins never increase
 *   over the queries; returned points are x or misclassified; runs are
 *   deterministic for a seed; the early return when every initial margin is
 *   negative (a linear model built so that any + stripe flips the class).
 */
#include <stdint.h>
#include <string.h>

#include "elle_test.h"
#include "attacks/autoattack_internal.h"
#include "nn/models/models.h"

#define TEST_RAND_SEED 0x2545F4914F6CDD1Dull
#include "test_rand.h"

/* ---- schedule ---------------------------------------------------------------------- */

static void check_table(int64_t c, int64_t hw, const int64_t want[8])
{
    /* first and last iteration of each p stage (5000 queries) */
    static const int starts[8] = {0, 11, 51, 201, 501, 1001, 2001, 4001};
    static const int ends[8] = {10, 50, 200, 500, 1000, 2000, 4000, 4999};
    for (int k = 0; k < 8; k++) {
        const int64_t s0 = elle__square_side(elle__square_p_selection(0.8, starts[k]), c, hw, hw);
        const int64_t s1 = elle__square_side(elle__square_p_selection(0.8, ends[k]), c, hw, hw);
        if (s0 != want[k] || s1 != want[k]) {
            print_error("%lldx%lld stage %d: s = %lld at %d, %lld at %d, spec %lld\n",
                        (long long)hw, (long long)hw, k, (long long)s0, starts[k], (long long)s1,
                        ends[k], (long long)want[k]);
            fail();
        }
    }
}

static void test_schedule(void **state)
{
    (void)state;
    static const int64_t cifar[8] = {29, 20, 14, 10, 7, 5, 4, 3};
    static const int64_t mnist[8] = {25, 18, 13, 9, 6, 4, 3, 2};
    static const int64_t imagenet[8] = {200, 142, 100, 71, 50, 35, 25, 18};
    check_table(3, 32, cifar);
    check_table(1, 32, cifar); /* n_features / c: channels do not matter */
    check_table(1, 28, mnist);
    check_table(3, 224, imagenet);
    /* p stages and the unreachable tail of the reference schedule */
    assert_true(elle__square_p_selection(0.8, 10) == 0.8);
    assert_true(elle__square_p_selection(0.8, 11) == 0.4);
    assert_true(elle__square_p_selection(0.8, 6000) == 0.8 / 128);
    assert_true(elle__square_p_selection(0.8, 6001) == 0.8 / 256);
    assert_true(elle__square_p_selection(0.8, 8001) == 0.8 / 512);
    /* the cap at min(h, w): sqrt(0.8 * 16) = 3.58 -> 4, capped at 2 */
    assert_int_equal(elle__square_side(0.8, 1, 2, 8), 2);
    assert_int_equal(elle__square_side(0.8, 1, 4, 4), 4);
    /* the floor at 1 */
    assert_int_equal(elle__square_side(0.8 / 512, 1, 8, 8), 1);
    /* round half to even: sqrt(p*h*w) = 2.5 -> 2, 3.5 -> 4 */
    assert_int_equal(elle__square_side(6.25 / 25.0, 1, 5, 5), 2);
    assert_int_equal(elle__square_side(12.25 / 49.0, 1, 7, 7), 4);
}

/* ---- models ------------------------------------------------------------------------ */

static int linear_build(elle__net *net, const elle_model_config *cfg, int x, int *out)
{
    return elle__net_linear(net, "fc", x, ELLE__P(cfg, ELLE_MODEL_PARAM_NUM_CLASSES), 1, out);
}
static void linear_defaults(double *p)
{
    (void)p;
}
static const elle__arch linear_arch = {"test_linear", linear_defaults, linear_build};

static elle_model *make_model(elle_context *ctx, const elle__arch *arch, int64_t classes,
                              int64_t c, int64_t h, int64_t w, int64_t max_batch)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, "small_cnn"));
    if (arch)
        cfg->arch = arch;
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, (double)classes));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_CHANNELS, (double)c));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, (double)h));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, (double)w));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, 5));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 4));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, 16));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    assert_elle_ok(elle_model_reserve(m, max_batch));
    assert_elle_ok(elle_model_set_training(m, 0));
    return m;
}

static float margin_ref(const float *z, int64_t K, int32_t y)
{
    float best = -INFINITY;
    for (int64_t k = 0; k < K; k++)
        if (k != y)
            best = fmaxf(best, z[k]);
    return z[y] - best;
}

static float clip01(float v)
{
    return fminf(fmaxf(v, 0.0f), 1.0f);
}

static float sign_of(float u)
{
    const float t = 2.0f * u - 1.0f;
    return (float)((t > 0.0f) - (t < 0.0f));
}

/* A generator advanced by `draws` 32-bit outputs from seed. */
static void advanced(elle__mt19937 *g, uint64_t seed, int64_t draws)
{
    elle__mt19937_seed(g, seed);
    for (int64_t i = 0; i < draws; i++)
        (void)elle__mt19937_next_u32(g);
}

static void assert_same_stream(const elle__mt19937 *a, const elle__mt19937 *b)
{
    /* equal positions: the next outputs agree */
    elle__mt19937 x = *a, y = *b;
    for (int i = 0; i < 700; i++)
        assert_true(elle__mt19937_next_u32(&x) == elle__mt19937_next_u32(&y));
}

typedef struct fixture {
    elle_context *ctx;
    elle_model *m;
    elle__aa_model am;
    int64_t N, C, H, W, D, K;
    float *x, *z;
    int32_t *y;
    int n_correct;
} fixture;

/* a narrow small_cnn (width 4, hidden 16) at random initialisation on 3 x 16 x 16; labels = predictions
 * except two points made wrong (never attacked). */
static void fixture_init(fixture *f)
{
    f->N = 12, f->C = 3, f->H = 16, f->W = 16, f->K = 10;
    f->D = f->C * f->H * f->W;
    assert_elle_ok(elle_context_create(&f->ctx, ELLE_BACKEND_CPU, 0));
    f->m = make_model(f->ctx, NULL, f->K, f->C, f->H, f->W, f->N);
    f->x = malloc((size_t)(f->N * f->D) * sizeof(float));
    f->z = malloc((size_t)(f->N * f->K) * sizeof(float));
    f->y = malloc((size_t)f->N * sizeof(int32_t));
    for (int64_t i = 0; i < f->N * f->D; i++)
        f->x[i] = (float)frand();
    for (int64_t j = 0; j < f->D; j += 7)
        f->x[j] = (j % 2) ? 1.0f : 0.0f; /* some pixels on the box faces */
    assert_elle_ok(elle_model_forward(f->m, f->x, f->N, f->z));
    for (int64_t i = 0; i < f->N; i++)
        f->y[i] = elle__aa_argmax(f->z + i * f->K, f->K);
    f->y[3] = (f->y[3] + 1) % (int32_t)f->K;
    f->y[8] = (f->y[8] + 5) % (int32_t)f->K;
    f->n_correct = (int)f->N - 2;
    assert_elle_ok(elle__aa_model_init(&f->am, f->m));
}

static void fixture_free(fixture *f)
{
    elle__aa_model_release(&f->am);
    elle_model_free(f->m);
    elle_context_free(f->ctx);
    free(f->x);
    free(f->z);
    free(f->y);
}

/* v is w up to the rounding of one float32 operation on values below 2 */
static int within_ulp(float v, float w)
{
    return fabsf(v - w) <= 2.4e-7f;
}

/* x_best of an attacked point: inside [x - eps, x + eps] as float32 bounds
 * (the reference clamps to exactly those) and [0,1], and every coordinate is
 * x, clip(x + eps) or clip(x - eps): the window's x_best + 2 eps sgn clamped
 * back to the ball lands on the bound, or, when the sum rounds inside it,
 * within that sum's rounding. */
static void check_values(const fixture *f, const float *xb, int64_t i, float eps)
{
    for (int64_t j = 0; j < f->D; j++) {
        const float x0 = f->x[i * f->D + j], v = xb[i * f->D + j];
        if (!(v == x0 || within_ulp(v, clip01(x0 + eps)) || within_ulp(v, clip01(x0 - eps)))) {
            print_error("sample %lld coord %lld: %.9g is none of x = %.9g, clip(x +- eps)\n",
                        (long long)i, (long long)j, (double)v, (double)x0);
            fail();
        }
        assert_true(v >= 0.0f && v <= 1.0f && v >= x0 - eps && v <= x0 + eps);
    }
}

/* The initial stripes and the first iteration, replayed from an independent
 * MT19937 and public forwards. */
static void test_stream_replay(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    const int64_t N = f.N, C = f.C, H = f.H, W = f.W, D = f.D, K = f.K;
    elle__aa_params p;
    const float eps = 8.0f / 255.0f;
    elle__aa_params_standard(&p, eps, 1234);
    p.p_init = 0.05f; /* s = round(sqrt(0.05 * 256)) = 4: the window can start anywhere in 0..11 */
    float *xa = malloc((size_t)(N * D) * sizeof(float));
    float *xb0 = malloc((size_t)(N * D) * sizeof(float));
    float *xb1 = malloc((size_t)(N * D) * sizeof(float));
    float *cand = malloc((size_t)(N * D) * sizeof(float));
    float m0[12], m1[12];
    elle__square_trace tr = {.x_best = xb0, .margin = m0};

    /* n_queries = 0: the stripes alone */
    p.n_queries = 0;
    assert_elle_ok(elle__square_perturb_traced(&f.am, &p, f.x, f.y, N, xa, &tr));
    const int64_t ns = f.n_correct;
    elle__mt19937 g;
    elle__mt19937_seed(&g, p.seed);
    float *u = malloc((size_t)(ns * C * W) * sizeof(float));
    elle__mt19937_fill(&g, u, ns * C * W);
    int64_t s_row = 0;
    for (int64_t i = 0; i < N; i++) {
        if (i == 3 || i == 8) {
            assert_true(isnan(m0[i]));
            assert_memory_equal(xb0 + i * D, f.x + i * D, (size_t)D * sizeof(float));
            continue;
        }
        for (int64_t c = 0; c < C; c++)
            for (int64_t row = 0; row < H; row++)
                for (int64_t col = 0; col < W; col++) {
                    const int64_t j = i * D + (c * H + row) * W + col;
                    const float want =
                        clip01(f.x[j] + eps * sign_of(u[(s_row * C + c) * W + col]));
                    assert_true(xb0[j] == want);
                }
        s_row++;
    }
    if (!tr.early_return)
        assert_int_equal(tr.iterations, 0);
    assert_same_stream(&tr.g, &g);

    /* n_queries = 1: the next draws are vh, vw, then C signs */
    const int64_t s = elle__square_side(elle__square_p_selection(0.05, 0), C, H, W);
    assert_int_equal(s, 4);
    const int64_t vh = (int64_t)((float)(H - s) * elle__mt19937_uniform(&g));
    const int64_t vw = (int64_t)((float)(W - s) * elle__mt19937_uniform(&g));
    float sg[3];
    for (int64_t c = 0; c < C; c++)
        sg[c] = sign_of(elle__mt19937_uniform(&g));
    memcpy(cand, xb0, (size_t)(N * D) * sizeof(float));
    for (int64_t i = 0; i < N; i++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t row = vh; row < vh + s; row++)
                for (int64_t col = vw; col < vw + s; col++) {
                    const int64_t j = i * D + (c * H + row) * W + col;
                    /* the reference's ops: x_best + 2 eps sgn, clamped to the ball, to [0,1] */
                    const float v = fminf(fmaxf(xb0[j] + 2.0f * eps * sg[c], f.x[j] - eps),
                                          f.x[j] + eps);
                    cand[j] = clip01(v);
                }
    assert_elle_ok(elle_model_forward(f.m, cand, N, f.z));

    p.n_queries = 1;
    tr.x_best = xb1;
    tr.margin = m1;
    assert_elle_ok(elle__square_perturb_traced(&f.am, &p, f.x, f.y, N, xa, &tr));
    int accepted = 0, rejected = 0;
    for (int64_t i = 0; i < N; i++) {
        if (i == 3 || i == 8)
            continue;
        const float mc = margin_ref(f.z + i * K, K, f.y[i]);
        const float *want = xb0 + i * D;
        if (m0[i] > 0.0f && (mc < m0[i] || mc <= 0.0f))
            want = cand + i * D;
        (want == xb0 + i * D) ? rejected++ : accepted++;
        for (int64_t j = 0; j < D; j++)
            if (xb1[i * D + j] != want[j]) {
                print_error("sample %lld coord %lld after one query: %.9g, replay %.9g "
                            "(window %lld,%lld side %lld)\n",
                            (long long)i, (long long)j, (double)xb1[i * D + j], (double)want[j],
                            (long long)vh, (long long)vw, (long long)s);
                fail();
            }
    }
    assert_true(accepted > 0 && rejected > 0); /* both branches seen */
    free(u);
    free(xa);
    free(xb0);
    free(xb1);
    free(cand);
    fixture_free(&f);
}

/* Margins never increase with more queries; values; draw count; returned
 * points; determinism. */
static void test_invariants(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f);
    const int64_t N = f.N, C = f.C, W = f.W, D = f.D, K = f.K;
    elle__aa_params p;
    const float eps = 4.0f / 255.0f;
    elle__aa_params_standard(&p, eps, 7);
    float *xa = malloc((size_t)(N * D) * sizeof(float));
    float *xa2 = malloc((size_t)(N * D) * sizeof(float));
    float *xb = malloc((size_t)(N * D) * sizeof(float));
    float mprev[12], m[12];
    static const int queries[] = {0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 300};
    int ever_fooled = 0;
    for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
        p.n_queries = queries[q];
        elle__square_trace tr = {.x_best = xb, .margin = m};
        const int64_t f0 = f.am.forwards;
        assert_elle_ok(elle__square_perturb_traced(&f.am, &p, f.x, f.y, N, xa, &tr));
        const int64_t forwards = f.am.forwards - f0;
        if (!tr.early_return) {
            /* clean + initial margins + one per iteration + the final check */
            assert_int_equal(forwards, 3 + tr.iterations);
            assert_true(tr.iterations <= queries[q]);
        }
        elle__mt19937 g;
        advanced(&g, p.seed, f.n_correct * C * W + tr.iterations * (2 + C));
        assert_same_stream(&tr.g, &g);

        /* recorded margins are the margins of the recorded points */
        assert_elle_ok(elle_model_forward(f.m, xb, N, f.z));
        int all_done = 1;
        for (int64_t i = 0; i < N; i++) {
            if (i == 3 || i == 8) {
                assert_memory_equal(xa + i * D, f.x + i * D, (size_t)D * sizeof(float));
                continue;
            }
            check_values(&f, xb, i, eps);
            const float mr = margin_ref(f.z + i * K, K, f.y[i]);
            assert_true(fabsf(mr - m[i]) <= 1e-5f * (1.0f + fabsf(mr)));
            if (q > 0)
                assert_true(m[i] <= mprev[i]); /* monotone best margin */
            mprev[i] = m[i];
            all_done &= m[i] <= 0.0f;
            /* returned: the attack's point where it misclassifies, x elsewhere */
            const int wrong = elle__aa_argmax(f.z + i * K, K) != f.y[i];
            assert_memory_equal(xa + i * D, wrong ? xb + i * D : f.x + i * D,
                                (size_t)D * sizeof(float));
            ever_fooled |= wrong;
        }
        /* the run stops early only when the whole batch is fooled */
        if (tr.iterations < queries[q])
            assert_true(all_done);
    }
    assert_true(ever_fooled);

    /* deterministic for a seed; another seed draws other stripes */
    p.n_queries = 50;
    assert_elle_ok(elle__square_perturb(&f.am, &p, f.x, f.y, N, xa));
    assert_elle_ok(elle__square_perturb(&f.am, &p, f.x, f.y, N, xa2));
    assert_memory_equal(xa, xa2, (size_t)(N * D) * sizeof(float));
    elle__square_trace t1 = {.x_best = xb, .margin = NULL};
    assert_elle_ok(elle__square_perturb_traced(&f.am, &p, f.x, f.y, N, xa2, &t1));
    memcpy(xa, xb, (size_t)(N * D) * sizeof(float));
    p.seed = 8;
    assert_elle_ok(elle__square_perturb_traced(&f.am, &p, f.x, f.y, N, xa2, &t1));
    assert_memory_not_equal(xa, xb, (size_t)(N * D) * sizeof(float));

    /* bad input */
    int32_t ybad[12];
    memcpy(ybad, f.y, sizeof ybad);
    ybad[0] = -1;
    assert_elle_status(elle__square_perturb(&f.am, &p, f.x, ybad, N, xa), ELLE_EINVAL);
    assert_elle_status(elle__square_perturb(&f.am, &p, f.x, f.y, 0, xa), ELLE_ESHAPE);
    free(xa);
    free(xa2);
    free(xb);
    fixture_free(&f);
}

/* A linear model where any + stripe flips the class: every initial margin is
 * negative, so Square returns after the stripes (N*C*W draws, no iteration). */
static void test_early_return(void **state)
{
    (void)state;
    const int64_t N = 5, C = 2, H = 4, W = 4, D = C * H * W, K = 2;
    elle_context *ctx = NULL;
    assert_elle_ok(elle_context_create(&ctx, ELLE_BACKEND_REFERENCE, 0));
    elle_model *m = make_model(ctx, &linear_arch, K, C, H, W, N);
    float A[2 * 32], c[2] = {1e-3f, 0.0f};
    for (int64_t j = 0; j < D; j++) {
        A[j] = 0.0f;
        A[D + j] = 1000.0f; /* z_1 - z_0 = 1000 sum(x) - 1e-3 */
    }
    assert_elle_ok(elle_model_state_set(m, 0, A));
    assert_elle_ok(elle_model_state_set(m, 1, c));
    float x[5 * 32], xa[5 * 32], xb[5 * 32], mg[5];
    int32_t y[5] = {0, 0, 0, 0, 0};
    memset(x, 0, sizeof x); /* x = 0: class 0 by 1e-3 */
    elle__aa_model am;
    assert_elle_ok(elle__aa_model_init(&am, m));
    elle__aa_params p;
    elle__aa_params_standard(&p, 0.1f, 0);
    elle__square_trace tr = {.x_best = xb, .margin = mg};
    assert_elle_ok(elle__square_perturb_traced(&am, &p, x, y, N, xa, &tr));
    assert_true(tr.early_return);
    assert_int_equal(tr.iterations, 0);
    elle__mt19937 g;
    advanced(&g, 0, N * C * W);
    assert_same_stream(&tr.g, &g);
    for (int64_t i = 0; i < N; i++)
        assert_true(mg[i] < 0.0f);
    assert_memory_equal(xa, xb, sizeof xa); /* all fooled: the stripes are returned */

    /* A = 0, c = 0: every margin is exactly 0 (pred = 0 by the first-index
     * tie rule, so y = 0 is "correct"). Not all < 0, so no early return; the
     * first iteration has no active sample but still draws its 2 + C numbers
     * before the loop stops, as the reference (its forward of an empty batch
     * is skipped here). */
    memset(A, 0, sizeof A);
    c[0] = 0.0f;
    assert_elle_ok(elle_model_state_set(m, 0, A));
    assert_elle_ok(elle_model_state_set(m, 1, c));
    const int64_t f0 = am.forwards;
    assert_elle_ok(elle__square_perturb_traced(&am, &p, x, y, N, xa, &tr));
    assert_false(tr.early_return);
    assert_int_equal(tr.iterations, 1);
    assert_int_equal(am.forwards - f0, 3); /* clean, initial margins, final check */
    advanced(&g, 0, N * C * W + (2 + C));
    assert_same_stream(&tr.g, &g);
    for (int64_t i = 0; i < N; i++)
        assert_true(mg[i] == 0.0f);
    assert_memory_equal(xa, x, sizeof xa); /* pred stays 0 = y: nothing returned */
    elle__aa_model_release(&am);
    elle_model_free(m);
    elle_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_stream_replay),
        cmocka_unit_test(test_invariants),
        cmocka_unit_test(test_early_return),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
