/*
 * APGD (lib/attacks/apgd.c; spec/autoattack.md §3):
 *
 * - the checkpoint schedule against the paper's definition w_j = ceil(p_j N)
 *   (p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06)) and against
 *   the spec's list: checks after iterations 21, 40, 56, 69, 79, 86, 92, 98
 *   (0-based; i.e. after 22, 41, 57, ... steps) with intervals 22, 19, 16,
 *   13, 10, 7, 6, 6, and for other n_iter against the reference's integer
 *   recursion written out here;
 * - CE, DLR and targeted DLR: values against definitions evaluated with a
 *   full sort, gradients with respect to the logits against central finite
 *   differences (K = 10 and 100);
 * - the random start against tau = 2u - 1 rescaled, computed here from the
 *   raw MT19937 stream (and the first uniform of torch.manual_seed(0));
 * - a run: the best loss never below the loss at the start, equal to the
 *   loss recomputed at the returned point, above the clean loss on average;
 *   every returned point in B(x); the "fooled" flags agree with a fresh
 *   forward; the forward/backward counts of the reference (1 + n_iter FB
 *   per run, one extra forward per target);
 * - perturb: inside the eps-ball and [0, 1]; a point is returned changed
 *   only when it is misclassified there; clean mistakes are left alone;
 *   the same seed gives bit-identical results, another seed other ones;
 *   eot_iter > 1 on a deterministic model gives the same points at eot_iter
 *   times the passes;
 * - errors: the DLR losses with too few classes.
 *
 * Models: small_cnn at random initialisation (oneDNN CPU backend), 10
 * classes of 1x12x12 images; the attacks are run with few iterations.
 */
#include <stdint.h>
#include <string.h>

#include "elle_test.h"
#include "attacks/autoattack_internal.h"

#define EPS (8.0f / 255.0f)

#define TEST_RAND_SEED 0x9E3779B97F4A7C15ull
#include "test_rand.h"

typedef struct fixture {
    elle_context *ctx;
    elle_model *model; /* 10 classes, reserved for 32 */
    elle__aa_model am;
    int64_t numel, k;
} fixture;

static elle_model *make_model(elle_context *ctx, int classes, uint64_t seed)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, "small_cnn"));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 4));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_DEPTH, 1));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, 16));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, classes));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_CHANNELS, 1));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, 12));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, 12));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, (double)seed));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    assert_elle_ok(elle_model_reserve(m, 32));
    assert_elle_ok(elle_model_set_training(m, 0));
    return m;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_elle_ok(elle_context_create(&f->ctx, ELLE_BACKEND_CPU, 0));
    /* small batches: one thread is faster, and immune to a loaded machine */
    assert_elle_ok(elle_context_set_param(f->ctx, ELLE_CONTEXT_PARAM_THREADS, 1));
    f->model = make_model(f->ctx, 10, 3);
    assert_elle_ok(elle__aa_model_init(&f->am, f->model));
    f->numel = f->am.numel;
    f->k = f->am.classes;
    assert_int_equal(f->numel, 144);
    assert_int_equal(f->k, 10);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    elle__aa_model_release(&f->am);
    elle_model_free(f->model);
    elle_context_free(f->ctx);
    free(f);
    return 0;
}

static float *random_images(int64_t count)
{
    float *x = malloc((size_t)count * sizeof *x);
    for (int64_t i = 0; i < count; i++)
        x[i] = (float)frand();
    return x;
}

/* The model's clean predictions (public forward). */
static void predict(fixture *f, const float *x, int64_t n, int32_t *pred)
{
    float *z = malloc((size_t)(n * f->k) * sizeof *z);
    assert_elle_ok(elle_model_forward(f->model, x, n, z));
    for (int64_t i = 0; i < n; i++) {
        int64_t arg = 0;
        for (int64_t j = 1; j < f->k; j++)
            if (z[i * f->k + j] > z[i * f->k + arg])
                arg = j;
        pred[i] = (int32_t)arg;
    }
    free(z);
}

/* Per-sample cross-entropy in double via the public forward. */
static void ce_losses(fixture *f, const float *x, const int32_t *y, int64_t n, double *loss)
{
    float *z = malloc((size_t)(n * f->k) * sizeof *z);
    assert_elle_ok(elle_model_forward(f->model, x, n, z));
    for (int64_t i = 0; i < n; i++) {
        const float *zi = z + i * f->k;
        double mx = zi[0], s = 0;
        for (int64_t j = 1; j < f->k; j++)
            mx = fmax(mx, zi[j]);
        for (int64_t j = 0; j < f->k; j++)
            s += exp(zi[j] - mx);
        loss[i] = mx + log(s) - zi[y[i]];
    }
    free(z);
}

/* Every coordinate inside [x - eps, x + eps] (as float32 computes the
 * bounds) and [0, 1]. */
static void assert_in_ball(const float *xa, const float *x, int64_t count, float eps)
{
    for (int64_t i = 0; i < count; i++) {
        if (!(xa[i] >= 0.0f && xa[i] <= 1.0f && xa[i] >= x[i] - eps && xa[i] <= x[i] + eps)) {
            print_error("coordinate %lld: %.9g, centre %.9g, eps %.9g\n", (long long)i,
                        (double)xa[i], (double)x[i], (double)eps);
            fail();
        }
    }
}

/* ---- schedule ------------------------------------------------------------------- */

/* The iteration indices (0-based) after which a check fires, and the
 * intervals, by stepping the schedule the way a run does. */
static int schedule_of(int n_iter, int *iters, int *ks)
{
    elle__apgd_schedule s;
    elle__apgd_schedule_init(&s, n_iter);
    int count = 0;
    for (int i = 0; i < n_iter; i++) {
        int k = elle__apgd_schedule_step(&s);
        if (k) {
            iters[count] = i;
            ks[count] = k;
            count++;
        }
    }
    return count;
}

static void test_schedule_100(void **state)
{
    (void)state;
    int iters[128], ks[128];
    /* the spec's list */
    static const int want_iters[] = {21, 40, 56, 69, 79, 86, 92, 98};
    static const int want_ks[] = {22, 19, 16, 13, 10, 7, 6, 6};
    int count = schedule_of(100, iters, ks);
    assert_int_equal(count, 8);
    for (int j = 0; j < 8; j++) {
        assert_int_equal(iters[j], want_iters[j]);
        assert_int_equal(ks[j], want_ks[j]);
    }
    /* the paper: checkpoints w_j = ceil(p_j N) steps, p_1 = 0.22, p_j+1 = p_j
     * + max(p_j - p_j-1 - 0.03, 0.06); after w_j steps = after iteration w_j - 1 */
    double p_prev = 0, p = 0.22;
    for (int j = 0; j < 8; j++) {
        int w = (int)ceil(p * 100.0 - 1e-9);
        assert_int_equal(iters[j], w - 1);
        double next = p + fmax(p - p_prev - 0.03, 0.06);
        p_prev = p;
        p = next;
    }
    assert_true(p * 100.0 > 100.0 - 1e-9); /* the next one would be past the end */
}

static void test_schedule_other_lengths(void **state)
{
    (void)state;
    static const int lengths[] = {1, 2, 5, 10, 20, 33, 50, 250, 1000};
    for (size_t t = 0; t < sizeof lengths / sizeof lengths[0]; t++) {
        const int n = lengths[t];
        int iters[2048], ks[2048];
        int count = schedule_of(n, iters, ks);
        /* the reference: int(0.22 n), int(0.03 n), int(0.06 n), each at least 1,
         * a counter that fires when it reaches k */
        int k = (int)floor(0.22 * n), dec = (int)floor(0.03 * n), kmin = (int)floor(0.06 * n);
        k = k < 1 ? 1 : k;
        dec = dec < 1 ? 1 : dec;
        kmin = kmin < 1 ? 1 : kmin;
        int j = 0, last = -1;
        for (int i = last + k; i < n; i = last + k) {
            assert_true(j < count);
            assert_int_equal(iters[j], i);
            assert_int_equal(ks[j], k);
            j++;
            last = i;
            k = k - dec > kmin ? k - dec : kmin;
        }
        assert_int_equal(count, j);
    }
    /* n = 1000 follows the paper's fractions exactly: 220, 410, 570, ... */
    int iters[2048], ks[2048];
    int count = schedule_of(1000, iters, ks);
    assert_true(count >= 8);
    static const int w[] = {220, 410, 570, 700, 800, 870, 930, 990};
    for (int j = 0; j < 8; j++)
        assert_int_equal(iters[j], w[j] - 1);
}

/* ---- losses --------------------------------------------------------------------- */

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* The losses from their definitions (double, full sort). */
static double loss_ref(elle__aa_loss loss, const float *z, int64_t k, int32_t y, int32_t t)
{
    double s[128];
    for (int64_t j = 0; j < k; j++)
        s[j] = z[j];
    qsort(s, (size_t)k, sizeof s[0], cmp_desc);
    if (loss == ELLE__AA_LOSS_CE) {
        double sum = 0;
        for (int64_t j = 0; j < k; j++)
            sum += exp((double)z[j] - s[0]);
        return s[0] + log(sum) - z[y];
    }
    if (loss == ELLE__AA_LOSS_DLR) {
        double other = -INFINITY;
        for (int64_t j = 0; j < k; j++)
            if (j != y)
                other = fmax(other, z[j]);
        return -((double)z[y] - other) / (s[0] - s[2] + 1e-12);
    }
    return -((double)z[y] - z[t]) / (s[0] - 0.5 * (s[2] + s[3]) + 1e-12);
}

static void check_loss_grad(elle__aa_loss loss, int64_t k)
{
    float z[128], dz[128], scratch[128];
    int checked = 0;
    for (int trial = 0; trial < 40; trial++) {
        for (int64_t j = 0; j < k; j++)
            z[j] = (float)(6.0 * frand() - 3.0);
        const int32_t y = (int32_t)(frand() * (double)k);
        int32_t t = (int32_t)(frand() * (double)(k - 1));
        t += t >= y; /* t != y */
        if (trial % 2 == 0) {
            /* half of the trials: y is the top class, as for a point the
             * attack has not broken yet */
            float mx = z[0];
            for (int64_t j = 1; j < k; j++)
                mx = fmaxf(mx, z[j]);
            z[y] = mx + 0.5f;
        }
        /* central differences need the order of the top four to hold
         * within +-h: skip draws with near ties */
        double s[128];
        for (int64_t j = 0; j < k; j++)
            s[j] = z[j];
        qsort(s, (size_t)k, sizeof s[0], cmp_desc);
        const double h = 1e-3;
        if (s[0] - s[1] < 4 * h || s[1] - s[2] < 4 * h || s[2] - s[3] < 4 * h ||
            s[3] - s[4] < 4 * h)
            continue;
        checked++;
        float v = elle__aa_loss_grad(loss, z, k, y, t, dz);
        double ref = loss_ref(loss, z, k, y, t);
        assert_true(fabs(v - ref) <= 1e-5 + 1e-5 * fabs(ref));
        for (int64_t j = 0; j < k; j++) {
            float zp[128];
            memcpy(zp, z, (size_t)k * sizeof(float));
            zp[j] = (float)(z[j] + h);
            double hp = (double)zp[j] - z[j];
            double lp = loss_ref(loss, zp, k, y, t);
            zp[j] = (float)(z[j] - h);
            double hm = (double)z[j] - zp[j];
            double lm = loss_ref(loss, zp, k, y, t);
            double fd = (lp - lm) / (hp + hm);
            if (!(fabs(dz[j] - fd) <= 1e-4 + 2e-3 * fabs(fd))) {
                print_error("loss %d K %lld class %lld: analytic %.7g, finite difference %.7g\n",
                            (int)loss, (long long)k, (long long)j, (double)dz[j], fd);
                fail();
            }
        }
        /* the float32 loss itself moves as the gradient says */
        float zp[128];
        memcpy(zp, z, (size_t)k * sizeof(float));
        double dot = 0;
        for (int64_t j = 0; j < k; j++) {
            zp[j] = z[j] + 1e-3f * (dz[j] > 0 ? 1.0f : dz[j] < 0 ? -1.0f : 0.0f);
            dot += fabs(dz[j]);
        }
        if (dot > 0)
            assert_true(elle__aa_loss_grad(loss, zp, k, y, t, scratch) > v);
    }
    assert_true(checked >= 10);
}

static void test_loss_gradients(void **state)
{
    (void)state;
    static const elle__aa_loss kinds[] = {ELLE__AA_LOSS_CE, ELLE__AA_LOSS_DLR,
                                          ELLE__AA_LOSS_DLR_TARGETED};
    for (int i = 0; i < 3; i++) {
        check_loss_grad(kinds[i], 10);
        check_loss_grad(kinds[i], 100);
    }
}

/* Ties among the ranked logits: the targeted loss depends on sorted values
 * only, and the tied classes share the weight of ranks 3 and 4. */
static void test_dlr_targeted_ties(void **state)
{
    (void)state;
    const float z[6] = {3.0f, 1.0f, 1.0f, 1.0f, -2.0f, 0.5f};
    float d[6];
    float l = elle__aa_loss_grad(ELLE__AA_LOSS_DLR_TARGETED, z, 6, 0, 5, d);
    /* N = z_y - z_t = 3 - 0.5 = 2.5, D = 3 - (1 + 1)/2 = 2: L = -1.25 */
    assert_true(fabsf(l - (-1.25f)) < 1e-6f);
    /* y = pi1: -1/D + N/D^2 = 0.125; t: 1/D = 0.5; the tied ranks 2..4 get
     * -N/(2 D^2) twice in all = -0.625; class 4 (last) nothing */
    assert_true(fabsf(d[0] - 0.125f) < 1e-6f);
    assert_true(fabsf(d[5] - 0.5f) < 1e-6f);
    assert_true(fabsf(d[1] + d[2] + d[3] + 0.625f) < 1e-6f);
    assert_true(d[4] == 0.0f);
    /* DLR on the same logits, y = 0 the top class: m = pi2 (one of the tied
     * classes, +1/D), D = z_pi1 - z_pi3 = 2 */
    l = elle__aa_loss_grad(ELLE__AA_LOSS_DLR, z, 6, 0, 0, d);
    assert_true(fabsf(l - (-1.0f)) < 1e-6f);
    double sum = 0;
    for (int j = 0; j < 6; j++)
        sum += d[j];
    assert_true(fabs(sum) < 1e-6);
}

/* ---- random start --------------------------------------------------------------- */

static void test_random_start(void **state)
{
    (void)state;
    enum { M = 3, NUMEL = 50 };
    float x[M * NUMEL], x0[M * NUMEL], u[M * NUMEL], raw[M * NUMEL];
    for (int i = 0; i < M * NUMEL; i++)
        x[i] = i < NUMEL ? 0.5f : (float)frand(); /* sample 0 far from the box faces */
    elle__mt19937 g, h;
    elle__mt19937_seed(&g, 0);
    elle__apgd_random_start(&g, x, M, NUMEL, EPS, u, x0);
    /* independently: the raw 24-bit words of the same stream */
    elle__mt19937_seed(&h, 0);
    for (int i = 0; i < M * NUMEL; i++)
        raw[i] = (float)(elle__mt19937_next_u32(&h) & 0xffffffu) / 16777216.0f;
    /* torch.manual_seed(0); torch.rand(1) = 8325804 * 2^-24 */
    assert_true(raw[0] == 8325804.0f / 16777216.0f);
    for (int s = 0; s < M; s++) {
        double mx = 0;
        for (int j = 0; j < NUMEL; j++)
            mx = fmax(mx, fabs(2.0 * raw[s * NUMEL + j] - 1.0));
        for (int j = 0; j < NUMEL; j++) {
            const int i = s * NUMEL + j;
            double tau = 2.0 * raw[i] - 1.0;
            double want = fmin(fmax(x[i] + (double)EPS * tau / mx, 0.0), 1.0);
            assert_true(fabs(x0[i] - want) <= 1e-7);
        }
    }
    /* sample 0 is not clipped: its largest move is eps itself */
    double mv = 0;
    for (int j = 0; j < NUMEL; j++)
        mv = fmax(mv, fabs((double)x0[j] - x[j]));
    assert_true(fabs(mv - EPS) <= 1e-7);
    assert_in_ball(x0, x, M * NUMEL, EPS);
    /* the stream advanced by exactly M * NUMEL words */
    assert_true(elle__mt19937_next_u32(&g) == elle__mt19937_next_u32(&h));
}

/* ---- one run -------------------------------------------------------------------- */

static elle__aa_params params(float eps, int n_iter, uint64_t seed)
{
    elle__aa_params p;
    elle__aa_params_standard(&p, eps, seed);
    p.n_iter = n_iter;
    return p;
}

static void test_run_ce(void **state)
{
    fixture *f = *state;
    enum { N = 24, ITERS = 20 };
    float *x = random_images(N * f->numel);
    int32_t y[N];
    predict(f, x, N, y); /* every point starts correctly classified */
    float *best = malloc((size_t)(N * f->numel) * sizeof(float));
    float *best_adv = malloc((size_t)(N * f->numel) * sizeof(float));
    float *x0 = malloc((size_t)(N * f->numel) * sizeof(float));
    float *u = malloc((size_t)(N * f->numel) * sizeof(float));
    float lbest[N];
    unsigned char acc[N];
    elle__aa_params p = params(EPS, ITERS, 7);
    elle__mt19937 g;
    elle__mt19937_seed(&g, p.seed);
    int64_t fw = f->am.forwards, bw = f->am.backwards;
    assert_elle_ok(elle__apgd_run(&f->am, &p, ELLE__AA_LOSS_CE, &g, x, y, NULL, N, best, lbest,
                                  acc, best_adv));
    /* the reference's cost: one forward+backward at the start, one per iteration */
    assert_int_equal(f->am.forwards - fw, ITERS + 1);
    assert_int_equal(f->am.backwards - bw, ITERS + 1);

    /* the start, reproduced from the same seed */
    elle__mt19937_seed(&g, p.seed);
    elle__apgd_random_start(&g, x, N, f->numel, EPS, u, x0);
    double l0[N], lb[N], lc[N];
    ce_losses(f, x0, y, N, l0);
    ce_losses(f, best, y, N, lb);
    ce_losses(f, x, y, N, lc);
    double mean_best = 0, mean_clean = 0;
    for (int i = 0; i < N; i++) {
        assert_true(lbest[i] >= l0[i] - 1e-5 * (1 + fabs(l0[i])));
        assert_true(fabs(lbest[i] - lb[i]) <= 1e-5 * (1 + fabs(lb[i])));
        mean_best += lb[i] / N;
        mean_clean += lc[i] / N;
    }
    assert_true(mean_best > mean_clean);
    assert_in_ball(best, x, N * f->numel, EPS);
    assert_in_ball(best_adv, x, N * f->numel, EPS);
    /* acc = 0 exactly where an iterate was misclassified: the kept one is */
    int32_t pred[N];
    predict(f, best_adv, N, pred);
    for (int i = 0; i < N; i++)
        if (!acc[i])
            assert_int_not_equal(pred[i], y[i]);
    free(x);
    free(best);
    free(best_adv);
    free(x0);
    free(u);
}

/* ---- perturb -------------------------------------------------------------------- */

static void check_perturb(fixture *f, elle__aa_loss loss, float eps, int iters)
{
    enum { N = 20 };
    const int64_t cnt = N * f->numel;
    float *x = random_images(cnt);
    int32_t y[N], pred[N];
    predict(f, x, N, y);
    y[3] = (y[3] + 1) % 10; /* two clean mistakes: never attacked, returned as x */
    y[11] = (y[11] + 3) % 10;
    float *a1 = malloc((size_t)cnt * sizeof(float)), *a2 = malloc((size_t)cnt * sizeof(float));
    float *a3 = malloc((size_t)cnt * sizeof(float)), *a4 = malloc((size_t)cnt * sizeof(float));
    elle__aa_params p = params(eps, iters, 11);
    assert_elle_ok(elle__apgd_perturb(&f->am, &p, loss, x, y, N, a1));
    assert_in_ball(a1, x, cnt, eps);
    predict(f, a1, N, pred);
    int fooled = 0;
    for (int i = 0; i < N; i++) {
        int same = memcmp(a1 + i * f->numel, x + i * f->numel, (size_t)f->numel * 4) == 0;
        if (i == 3 || i == 11)
            assert_true(same);
        else if (!same) {
            assert_int_not_equal(pred[i], y[i]);
            fooled++;
        }
    }
    assert_true(fooled > 0);
    /* determinism; another seed, other points */
    assert_elle_ok(elle__apgd_perturb(&f->am, &p, loss, x, y, N, a2));
    assert_memory_equal(a1, a2, (size_t)cnt * sizeof(float));
    p.seed = 12;
    assert_elle_ok(elle__apgd_perturb(&f->am, &p, loss, x, y, N, a3));
    assert_true(memcmp(a1, a3, (size_t)cnt * sizeof(float)) != 0);
    /* EOT on a deterministic model: the mean of equal gradients has their
     * signs, so the same points, at eot_iter times the passes */
    p.seed = 11;
    int64_t bw = f->am.backwards;
    assert_elle_ok(elle__apgd_perturb(&f->am, &p, loss, x, y, N, a2));
    const int64_t passes1 = f->am.backwards - bw;
    p.eot_iter = 3;
    bw = f->am.backwards;
    assert_elle_ok(elle__apgd_perturb(&f->am, &p, loss, x, y, N, a4));
    assert_memory_equal(a1, a4, (size_t)cnt * sizeof(float));
    assert_int_equal(f->am.backwards - bw, 3 * passes1);
    free(x);
    free(a1);
    free(a2);
    free(a3);
    free(a4);
}

static void test_perturb_ce(void **state)
{
    check_perturb(*state, ELLE__AA_LOSS_CE, EPS, 10);
}

static void test_perturb_dlr(void **state)
{
    check_perturb(*state, ELLE__AA_LOSS_DLR, EPS, 10);
}

static void test_perturb_targeted(void **state)
{
    check_perturb(*state, ELLE__AA_LOSS_DLR_TARGETED, EPS, 5);
}

/* APGD-T: one extra forward per target rank (the clean logits of the
 * remaining points) plus n_iter + 1 forward+backward passes; at most
 * n_target_classes targets; with eps = 0 nothing is fooled, so every
 * target runs on all points and the output is x. */
static void test_targeted_costs(void **state)
{
    fixture *f = *state;
    enum { N = 6, ITERS = 3 };
    const int64_t cnt = N * f->numel;
    float *x = random_images(cnt), *a = malloc((size_t)cnt * sizeof(float));
    int32_t y[N];
    predict(f, x, N, y);
    elle__aa_params p = params(0.0f, ITERS, 1);
    static const int targets[] = {1, 4, 9, 20};
    for (int t = 0; t < 4; t++) {
        p.n_target_classes = targets[t];
        int used = targets[t] < 9 ? targets[t] : 9; /* 10 classes: ranks 2..10 at most */
        int64_t fw = f->am.forwards, bw = f->am.backwards;
        assert_elle_ok(elle__apgd_perturb(&f->am, &p, ELLE__AA_LOSS_DLR_TARGETED, x, y, N, a));
        assert_int_equal(f->am.forwards - fw, 1 + used * (1 + ITERS + 1));
        assert_int_equal(f->am.backwards - bw, used * (ITERS + 1));
        assert_memory_equal(a, x, (size_t)cnt * sizeof(float));
    }
    free(x);
    free(a);
}

static void test_too_few_classes(void **state)
{
    fixture *f = *state;
    elle_model *m2 = make_model(f->ctx, 2, 1), *m3 = make_model(f->ctx, 3, 1);
    elle__aa_model a2, a3;
    assert_elle_ok(elle__aa_model_init(&a2, m2));
    assert_elle_ok(elle__aa_model_init(&a3, m3));
    float x[144], out[144];
    for (int i = 0; i < 144; i++)
        x[i] = 0.5f;
    int32_t y = 0;
    elle__aa_params p = params(EPS, 2, 0);
    assert_elle_status(elle__apgd_perturb(&a2, &p, ELLE__AA_LOSS_DLR, x, &y, 1, out),
                       ELLE_EUNSUPPORTED);
    assert_elle_status(elle__apgd_perturb(&a3, &p, ELLE__AA_LOSS_DLR_TARGETED, x, &y, 1, out),
                       ELLE_EUNSUPPORTED);
    assert_elle_ok(elle__apgd_perturb(&a3, &p, ELLE__AA_LOSS_DLR, x, &y, 1, out));
    assert_elle_ok(elle__apgd_perturb(&a2, &p, ELLE__AA_LOSS_CE, x, &y, 1, out));
    assert_elle_status(elle__apgd_perturb(&a2, &p, ELLE__AA_LOSS_CE, x, &y, 33, out),
                       ELLE_ESHAPE);
    elle__aa_model_release(&a2);
    elle__aa_model_release(&a3);
    elle_model_free(m2);
    elle_model_free(m3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_100),
        cmocka_unit_test(test_schedule_other_lengths),
        cmocka_unit_test(test_loss_gradients),
        cmocka_unit_test(test_dlr_targeted_ties),
        cmocka_unit_test(test_random_start),
        cmocka_unit_test_setup_teardown(test_run_ce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_perturb_ce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_perturb_dlr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_perturb_targeted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_targeted_costs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_few_classes, setup, teardown),
    };
    return cmocka_run_group_tests_name("apgd", tests, NULL, NULL);
}
