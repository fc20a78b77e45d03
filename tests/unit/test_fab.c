/*
 * FAB-T (lib/attacks/fab.c) and its L-inf hyperplane-box projection
 * (lib/attacks/fab_projection.c), spec/autoattack.md §4 and §8 items 4, 6.
 *
 * Projection: against an independent brute force in double precision
 * (bisection on lambda over phi(lambda) = -sum |w_i| min(lambda, p_i) = c),
 * for random cases and the special ones: unreachable (corner), no
 * saturation, zero weights, t on the box faces, D = 1, t on the plane; plus
 * the invariance under (w, b) -> (-w, -b).
 *
 * FAB-T on a linear model z = A x + c (a test-local architecture: one
 * linear layer, built with the internal net API), where FAB's
 * linearisation is exact: the minimal L-inf distance to the class-t
 * boundary is delta_t = (z_y - z_t) / ||a_t - a_y||_1 while the box is not
 * active, reached by x + delta_t sgn(a_t - a_y). Under exact linearity the
 * reference's iteration reduces to a scalar recursion on the step s (the
 * point is x + s delta_t sgn(...)): s_1 = eta, and with s_b = beta s after
 * each adversarial step, alpha = min((1-s_b)/(2-s_b), alpha_max) and
 * s' = (1-alpha)(s_b + eta(1-s_b)) + alpha eta. The test evaluates that
 * recursion itself (in double) and expects FAB's kept point at the
 * smallest adversarial s (1.00521 delta_t for the standard constants).
 * With 10 classes: fooled exactly when the best target's point fits in eps.
 * On a small_cnn: every returned point is x or a misclassified point inside
 * the eps-ball and [0,1], and two runs are bit-identical.
 */
#include <stdint.h>
#include <string.h>

#include "elle_test.h"
#include "attacks/autoattack_internal.h"
#include "nn/models/models.h"

#define TEST_RAND_SEED 0x9E3779B97F4A7C15ull
#include "test_rand.h"
static double nrand(void)
{
    double u = frand() + 1e-12, v = frand();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* ---- projection ------------------------------------------------------------------ */

typedef struct proj_ref {
    double lambda; /* budget; -1 when unreachable */
    int oriented_sign;
} proj_ref;

/* Brute force in double: orientation, phi, bisection. d (D doubles). */
static proj_ref brute_projection(const float *t, const float *w, float b, int64_t D, double *d)
{
    double wt = 0;
    for (int64_t i = 0; i < D; i++)
        wt += (double)w[i] * (double)t[i];
    const double sg = (wt - (double)b >= 0) ? 1.0 : -1.0;
    const double c = sg * ((double)b - wt); /* <= 0 */
    double b0 = 0;
    for (int64_t i = 0; i < D; i++) {
        const double wi = sg * w[i];
        const double p = wi < 0 ? 1.0 - t[i] : t[i];
        b0 -= fabs(wi) * p;
    }
    proj_ref r = {-1.0, (int)sg};
    if (c <= b0) { /* corner */
        for (int64_t i = 0; i < D; i++) {
            const double wi = sg * w[i];
            d[i] = wi == 0 ? 0.0 : (wi < 0 ? 1.0 - t[i] : -(double)t[i]);
        }
        return r;
    }
    double lo = 0, hi = 1.0;
    for (int it = 0; it < 200; it++) {
        const double mid = 0.5 * (lo + hi);
        double phi = 0;
        for (int64_t i = 0; i < D; i++) {
            const double wi = sg * w[i];
            const double p = wi < 0 ? 1.0 - t[i] : t[i];
            phi -= fabs(wi) * fmin(mid, p);
        }
        if (phi > c)
            lo = mid; /* not enough budget yet */
        else
            hi = mid;
    }
    const double lam = 0.5 * (lo + hi);
    r.lambda = lam;
    for (int64_t i = 0; i < D; i++) {
        const double wi = sg * w[i];
        const double p = wi < 0 ? 1.0 - t[i] : t[i];
        d[i] = wi == 0 ? 0.0 : (wi < 0 ? fmin(lam, p) : -fmin(lam, p));
    }
    return r;
}

/* Runs the projection and checks it against the brute force and the
 * problem's constraints. Returns the float result in d. */
static void check_projection(const float *t, const float *w, float b, int64_t D, float *d,
                             const char *what)
{
    void *scratch = malloc(elle__fab_projection_scratch_bytes(D));
    double *dr = malloc((size_t)D * sizeof *dr);
    elle__fab_projection_linf(t, w, b, D, d, scratch);
    proj_ref r = brute_projection(t, w, b, D, dr);
    double dmax = 0, scale = fabs((double)b), dot = 0;
    for (int64_t i = 0; i < D; i++) {
        dmax = fmax(dmax, fabs(dr[i]));
        scale += fabs((double)w[i]) * (fabs((double)t[i]) + fabs(dr[i]));
        dot += (double)w[i] * ((double)t[i] + (double)d[i]);
    }
    for (int64_t i = 0; i < D; i++) {
        if (fabs((double)d[i] - dr[i]) > 1e-6 + 1e-4 * dmax) {
            print_error("%s: D = %lld, d[%lld] = %.9g, brute force %.9g (lambda %.9g)\n", what,
                        (long long)D, (long long)i, (double)d[i], dr[i], r.lambda);
            fail();
        }
        const double v = (double)t[i] + (double)d[i];
        if (!(v >= -1e-6 && v <= 1.0 + 1e-6)) {
            print_error("%s: t + d = %.9g leaves the box at %lld\n", what, v, (long long)i);
            fail();
        }
        if (w[i] == 0.0f && d[i] != 0.0f) {
            print_error("%s: zero-weight coordinate %lld moved by %g\n", what, (long long)i,
                        (double)d[i]);
            fail();
        }
    }
    if (r.lambda >= 0 && fabs(dot - (double)b) > 1e-5 * scale + 1e-7) {
        print_error("%s: <w, t + d> = %.9g, b = %.9g\n", what, dot, (double)b);
        fail();
    }
    /* (-w, -b) is the same hyperplane: bit-identical answer */
    float *wn = malloc((size_t)D * sizeof *wn);
    float *dn = malloc((size_t)D * sizeof *dn);
    for (int64_t i = 0; i < D; i++)
        wn[i] = -w[i];
    elle__fab_projection_linf(t, wn, -b, D, dn, scratch);
    double wt = 0;
    for (int64_t i = 0; i < D; i++)
        wt += (double)(w[i] * t[i]);
    if ((float)wt != b) /* exactly on the plane the orientation rule is asymmetric */
        assert_memory_equal(d, dn, (size_t)D * sizeof *d);
    free(wn);
    free(dn);
    free(dr);
    free(scratch);
}

enum { CASE_RANDOM, CASE_UNREACHABLE, CASE_NOSAT, CASE_ZEROS, CASE_FACES };

/* A random case of kind `kind`: t, w and a b giving c = frac * (the case's scale). */
static float make_case(int kind, int64_t D, float *t, float *w)
{
    for (int64_t i = 0; i < D; i++) {
        t[i] = (float)frand();
        w[i] = (float)nrand();
        if (kind == CASE_ZEROS && frand() < 0.5)
            w[i] = 0.0f;
        if (kind == CASE_FACES && frand() < 0.3)
            t[i] = frand() < 0.5 ? 0.0f : 1.0f;
    }
    /* with orientation +1: c = b - <w,t> in (b0, 0] is reachable */
    double wt = 0, b0 = 0, s = 0, pmin = 1;
    for (int64_t i = 0; i < D; i++) {
        wt += (double)(w[i] * t[i]);
        const double p = w[i] < 0 ? 1.0 - t[i] : t[i];
        b0 -= fabs(w[i]) * p;
        s += fabs(w[i]);
        pmin = fmin(pmin, p);
    }
    double c;
    switch (kind) {
    case CASE_UNREACHABLE:
        c = (1.2 + frand()) * b0 - 0.01;
        break;
    case CASE_NOSAT:
        c = -(0.1 + 0.8 * frand()) * s * pmin;
        break;
    default:
        c = (0.02 + 0.96 * frand()) * b0;
        break;
    }
    float b = (float)(wt + c);
    if (frand() < 0.5) { /* the same plane, the other way round */
        for (int64_t i = 0; i < D; i++)
            w[i] = -w[i];
        b = -b;
    }
    return b;
}

static void test_projection_random(void **state)
{
    (void)state;
    static const int64_t dims[] = {1, 2, 3, 5, 16, 100, 784, 3072};
    for (int kind = CASE_RANDOM; kind <= CASE_FACES; kind++) {
        for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++) {
            const int64_t D = dims[k];
            float *t = malloc((size_t)D * sizeof *t), *w = malloc((size_t)D * sizeof *w);
            float *d = malloc((size_t)D * sizeof *d);
            for (int rep = 0; rep < 20; rep++) {
                float b = make_case(kind, D, t, w);
                check_projection(t, w, b, D, d, "random case");
                double dmax = 0;
                for (int64_t i = 0; i < D; i++)
                    dmax = fmax(dmax, fabs((double)d[i]));
                if (kind == CASE_UNREACHABLE) {
                    /* the corner, exactly as the reference computes it */
                    double wt = 0;
                    for (int64_t i = 0; i < D; i++)
                        wt += (double)(w[i] * t[i]);
                    const float sg = ((float)wt - b >= 0) ? 1.0f : -1.0f;
                    for (int64_t i = 0; i < D; i++) {
                        const float wi = sg * w[i];
                        const float corner = wi == 0 ? 0.0f : (wi < 0 ? 1.0f - t[i] : -t[i]);
                        assert_true(d[i] == corner);
                    }
                } else if (kind == CASE_NOSAT) {
                    /* one common magnitude lambda = -c / ||w||_1 on every moving coordinate */
                    for (int64_t i = 0; i < D; i++)
                        if (w[i] != 0.0f)
                            assert_true(fabs(fabs((double)d[i]) - dmax) <= 1e-6 * dmax);
                }
            }
            free(t);
            free(w);
            free(d);
        }
    }
}

static void test_projection_special(void **state)
{
    (void)state;
    float d[8];
    /* all weights zero: nothing can move */
    {
        const float t[4] = {0.2f, 0.5f, 0.9f, 0.0f}, w[4] = {0, 0, 0, 0};
        check_projection(t, w, 0.7f, 4, d, "zero w");
        for (int i = 0; i < 4; i++)
            assert_true(d[i] == 0.0f);
    }
    /* t on the plane: no move */
    {
        const float t[4] = {0.25f, 0.5f, 0.75f, 0.5f}, w[4] = {1.0f, -2.0f, 0.5f, 4.0f};
        const float b = 0.25f - 1.0f + 0.375f + 2.0f; /* exact in float */
        check_projection(t, w, b, 4, d, "on the plane");
        for (int i = 0; i < 4; i++)
            assert_true(fabsf(d[i]) <= 1e-7f);
    }
    /* hand-solved saturation: w = (1, 1), t = (0.1, 0.8), need <w, .> to drop by 0.5:
     * coordinate 0 saturates at 0.1, coordinate 1 moves 0.4 -> d = (-0.1, -0.4) */
    {
        const float t[2] = {0.1f, 0.8f}, w[2] = {1.0f, 1.0f};
        check_projection(t, w, 0.4f, 2, d, "hand solved");
        assert_true(fabsf(d[0] + 0.1f) < 1e-6f && fabsf(d[1] + 0.4f) < 1e-6f);
    }
    /* t on the faces, blocked in the helpful direction: w > 0 and t = 0 cannot
     * decrease, the others take the whole change */
    {
        const float t[4] = {0.0f, 0.0f, 1.0f, 0.6f}, w[4] = {3.0f, 1.0f, -1.0f, 1.0f};
        /* <w,t> = -1 + 0.6 = -0.4; target -0.6: coordinate 3 moves -0.2 alone
         * (coordinate 2 is at 1 with w < 0: blocked too) */
        check_projection(t, w, -0.6f, 4, d, "faces");
        assert_true(d[0] == 0.0f && d[1] == 0.0f && d[2] == 0.0f);
        assert_true(fabsf(d[3] + 0.2f) < 1e-6f);
    }
    /* D = 1, reachable and not */
    {
        const float t[1] = {0.3f}, w[1] = {2.0f};
        check_projection(t, w, 0.2f, 1, d, "D=1");
        assert_true(fabsf(d[0] + 0.2f) < 1e-6f);
        check_projection(t, w, 3.0f, 1, d, "D=1 unreachable");
        assert_true(d[0] == 0.7f); /* to the corner 1 */
    }
}

/* ---- models ---------------------------------------------------------------------- */

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
        cfg->arch = arch; /* same parameters, another builder */
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, (double)classes));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_CHANNELS, (double)c));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, (double)h));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, (double)w));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, 3));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    assert_elle_ok(elle_model_reserve(m, max_batch));
    assert_elle_ok(elle_model_set_training(m, 0));
    return m;
}

/* The linear model's A (K x D, "fc.weight") and c ("fc.bias"), read back
 * from its state. */
static void linear_params(elle_model *m, float *A, float *c)
{
    assert_int_equal(elle_model_state_count(m), 2);
    assert_elle_ok(elle_model_state_get(m, 0, A));
    assert_elle_ok(elle_model_state_get(m, 1, c));
}

/* z_k(x) in double */
static double zk(const float *A, const float *c, int64_t D, const float *x, int64_t k)
{
    double s = c[k];
    for (int64_t j = 0; j < D; j++)
        s += (double)A[k * D + j] * x[j];
    return s;
}

static int32_t argmax_d(const float *A, const float *c, int64_t K, int64_t D, const float *x)
{
    int32_t best = 0;
    double zb = zk(A, c, D, x, 0);
    for (int64_t k = 1; k < K; k++) {
        double z = zk(A, c, D, x, k);
        if (z > zb) {
            zb = z;
            best = (int32_t)k;
        }
    }
    return best;
}

/* delta_k = (z_y - z_k) / ||a_k - a_y||_1, the unboxed minimal L-inf distance */
static double delta_k(const float *A, const float *c, int64_t D, const float *x, int64_t y,
                      int64_t k)
{
    double l1 = 0;
    for (int64_t j = 0; j < D; j++)
        l1 += fabs((double)A[k * D + j] - (double)A[y * D + j]);
    return (zk(A, c, D, x, y) - zk(A, c, D, x, k)) / l1;
}

/* The scalar recursion of FAB on an exactly linear f (see the file comment):
 * the smallest adversarial step s over n_iter iterations, in units of delta. */
static double fab_linear_best_step(double eta, double beta, double alpha_max, int n_iter)
{
    double s = 0.0, best = 1e300;
    for (int it = 0; it < n_iter; it++) {
        const double a1 = fmax(1.0 - s, 1e-8), a2 = 1.0;
        const double alpha = fmin(a1 / (a1 + a2), alpha_max);
        const double sn = (1 - alpha) * (s + eta * (1.0 - s)) + alpha * eta;
        if (sn > 1.0) {
            best = fmin(best, sn);
            s = beta * sn;
        } else {
            s = sn;
        }
    }
    return best;
}

static const elle_backend backends[] = {ELLE_BACKEND_REFERENCE, ELLE_BACKEND_CPU};

/* Two classes: FAB-T has one target, and its kept point is x + s* delta sgn(a_t - a_y). */
static void test_fab_linear_two_classes(void **state)
{
    (void)state;
    const int64_t K = 2, C = 2, H = 4, W = 4, D = C * H * W, N = 12;
    for (int be = 0; be < 2; be++) {
        elle_context *ctx = NULL;
        assert_elle_ok(elle_context_create(&ctx, backends[be], 0));
        elle_model *m = make_model(ctx, &linear_arch, K, C, H, W, N);
        float A[2 * 32], c[2];
        linear_params(m, A, c);
        /* points in [0.35, 0.65]^D: the boundary is within 0.15 (||a_1 - a_0||_1 * 0.15 /
         * ||a_1 - a_0||_1) of the centre, so the box never binds */
        float x[12 * 32];
        int32_t y[12];
        for (int64_t i = 0; i < N * D; i++)
            x[i] = (float)(0.35 + 0.3 * frand());
        /* centre the classes: c := -A 0.5 + small offsets, so margins are small */
        float cnew[2];
        for (int64_t k = 0; k < K; k++) {
            double s = 0;
            for (int64_t j = 0; j < D; j++)
                s += A[k * D + j] * 0.5;
            cnew[k] = (float)(-s + 0.01 * (double)k);
        }
        assert_elle_ok(elle_model_state_set(m, 1, cnew));
        memcpy(c, cnew, sizeof c);
        for (int64_t i = 0; i < N; i++)
            y[i] = argmax_d(A, c, K, D, x + i * D);

        elle__aa_model am;
        assert_elle_ok(elle__aa_model_init(&am, m));
        elle__aa_params p;
        elle__aa_params_standard(&p, 1.0f, 0);
        float xa[12 * 32];
        for (int n_iter = 2; n_iter <= 100; n_iter += 98) {
            p.n_iter = n_iter;
            assert_elle_ok(elle__fab_t_perturb(&am, &p, x, y, N, xa));
            const double s_star = fab_linear_best_step(1.05, 0.9, 0.1, n_iter);
            assert_true(s_star > 1.0 && s_star < 1.006);
            for (int64_t i = 0; i < N; i++) {
                const int64_t t = 1 - y[i];
                const double delta = delta_k(A, c, D, x + i * D, y[i], t);
                assert_true(delta > 0 && delta < 0.2);
                for (int64_t j = 0; j < D; j++) {
                    const double dir = A[t * D + j] - A[y[i] * D + j];
                    const double want = (dir > 0 ? 1 : dir < 0 ? -1 : 0) * s_star * delta;
                    const double got = (double)xa[i * D + j] - (double)x[i * D + j];
                    if (fabs(got - want) > 2e-4 * delta + 2e-7) {
                        print_error("n_iter %d sample %lld coord %lld: moved %.9g, expected "
                                    "%.9g (delta %.6g)\n",
                                    n_iter, (long long)i, (long long)j, got, want, delta);
                        fail();
                    }
                }
                assert_true(argmax_d(A, c, K, D, xa + i * D) != y[i]);
            }
        }
        /* eps below every point's distance: nothing is accepted, x comes back */
        p.n_iter = 10;
        p.eps = 1e-3f;
        assert_elle_ok(elle__fab_t_perturb(&am, &p, x, y, N, xa));
        for (int64_t i = 0; i < N; i++) {
            const double delta = delta_k(A, c, D, x + i * D, y[i], 1 - y[i]);
            if (delta * 1.0053 > 1e-3)
                assert_memory_equal(xa + i * D, x + i * D, (size_t)D * sizeof(float));
        }
        elle__aa_model_release(&am);
        elle_model_free(m);
        elle_context_free(ctx);
    }
}

/* Ten classes: FAB-T tries every target rank; a point is fooled iff some
 * target's kept point fits in eps. Bounds from the closed form: fooled
 * points are at least min_k delta_k away; points with 1.05 min_k delta_k
 * below eps must be fooled (the nearest target's first step lands there). */
static void test_fab_linear_ten_classes(void **state)
{
    (void)state;
    const int64_t K = 10, C = 1, H = 6, W = 6, D = C * H * W, N = 40;
    elle_context *ctx = NULL;
    assert_elle_ok(elle_context_create(&ctx, ELLE_BACKEND_CPU, 0));
    elle_model *m = make_model(ctx, &linear_arch, K, C, H, W, N);
    float *A = malloc((size_t)(K * D) * sizeof *A), c[10];
    linear_params(m, A, c);
    for (int64_t k = 0; k < K; k++) {
        double s = 0;
        for (int64_t j = 0; j < D; j++)
            s += A[k * D + j] * 0.5;
        c[k] = (float)(-s + 0.02 * nrand());
    }
    assert_elle_ok(elle_model_state_set(m, 1, c));
    float *x = malloc((size_t)(N * D) * sizeof *x), *xa = malloc((size_t)(N * D) * sizeof *xa);
    int32_t y[40];
    for (int64_t i = 0; i < N * D; i++)
        x[i] = (float)(0.4 + 0.2 * frand());
    for (int64_t i = 0; i < N; i++)
        y[i] = argmax_d(A, c, K, D, x + i * D);
    y[0] = (y[0] + 1) % (int32_t)K; /* one misclassified point: never attacked */

    elle__aa_model am;
    assert_elle_ok(elle__aa_model_init(&am, m));
    elle__aa_params p;
    const float eps = 0.02f;
    elle__aa_params_standard(&p, eps, 0);
    p.n_iter = 10; /* the bounds below hold from the first iteration on */
    assert_elle_ok(elle__fab_t_perturb(&am, &p, x, y, N, xa));
    assert_memory_equal(xa, x, (size_t)D * sizeof(float));
    int fooled = 0, kept = 0;
    for (int64_t i = 1; i < N; i++) {
        double dmin = 1e300;
        for (int64_t k = 0; k < K; k++)
            if (k != y[i])
                dmin = fmin(dmin, delta_k(A, c, D, x + i * D, y[i], k));
        const float *xi = x + i * D, *ai = xa + i * D;
        double dist = 0;
        for (int64_t j = 0; j < D; j++) {
            dist = fmax(dist, fabs((double)ai[j] - (double)xi[j]));
            assert_true(ai[j] >= 0.0f && ai[j] <= 1.0f);
        }
        if (memcmp(xi, ai, (size_t)D * sizeof(float)) == 0) {
            kept++;
            assert_false(1.05 * dmin < 0.999 * eps);
        } else {
            fooled++;
            assert_true(dist <= eps);
            assert_true(dist >= dmin * (1 - 1e-4));
            assert_true(argmax_d(A, c, K, D, ai) != y[i]);
        }
    }
    /* the case split must exercise both outcomes */
    assert_true(fooled > 0 && kept > 0);
    elle__aa_model_release(&am);
    elle_model_free(m);
    elle_context_free(ctx);
    free(A);
    free(x);
    free(xa);
}

/* small_cnn at random initialisation: invariants and determinism. */
static void test_fab_small_cnn(void **state)
{
    (void)state;
    const int64_t K = 10, C = 1, H = 12, W = 12, D = C * H * W, N = 16;
    elle_context *ctx = NULL;
    assert_elle_ok(elle_context_create(&ctx, ELLE_BACKEND_CPU, 0));
    elle_model *m = make_model(ctx, NULL, K, C, H, W, N);
    float *x = malloc((size_t)(N * D) * sizeof *x);
    float *xa = malloc((size_t)(N * D) * sizeof *xa), *xb = malloc((size_t)(N * D) * sizeof *xb);
    float *z = malloc((size_t)(N * K) * sizeof *z);
    int32_t y[16];
    for (int64_t i = 0; i < N * D; i++)
        x[i] = (float)frand();
    assert_elle_ok(elle_model_forward(m, x, N, z));
    for (int64_t i = 0; i < N; i++)
        y[i] = elle__aa_argmax(z + i * K, K);
    y[1] = (y[1] + 3) % (int32_t)K;

    elle__aa_model am;
    assert_elle_ok(elle__aa_model_init(&am, m));
    elle__aa_params p;
    const float eps = 0.03f;
    elle__aa_params_standard(&p, eps, 0);
    p.n_iter = 20;
    p.n_target_classes = 3;
    assert_elle_ok(elle__fab_t_perturb(&am, &p, x, y, N, xa));
    assert_elle_ok(elle__fab_t_perturb(&am, &p, x, y, N, xb));
    assert_memory_equal(xa, xb, (size_t)(N * D) * sizeof(float));
    assert_elle_ok(elle_model_forward(m, xa, N, z));
    int fooled = 0;
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * D, *ai = xa + i * D;
        if (memcmp(xi, ai, (size_t)D * sizeof(float)) == 0)
            continue;
        fooled++;
        assert_true(i != 1); /* misclassified at x: untouched */
        assert_true(elle__aa_argmax(z + i * K, K) != y[i]);
        for (int64_t j = 0; j < D; j++) {
            assert_true(ai[j] >= 0.0f && ai[j] <= 1.0f);
            assert_true(fabsf(ai[j] - xi[j]) <= eps);
        }
    }
    assert_true(fooled > 0);
    /* bad input */
    y[0] = (int32_t)K;
    assert_elle_status(elle__fab_t_perturb(&am, &p, x, y, N, xa), ELLE_EINVAL);
    y[0] = 0;
    assert_elle_status(elle__fab_t_perturb(&am, &p, x, y, N + 1, xa), ELLE_ESHAPE);
    elle__aa_model_release(&am);
    elle_model_free(m);
    elle_context_free(ctx);
    free(x);
    free(xa);
    free(xb);
    free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_projection_random),
        cmocka_unit_test(test_projection_special),
        cmocka_unit_test(test_fab_linear_two_classes),
        cmocka_unit_test(test_fab_linear_ten_classes),
        cmocka_unit_test(test_fab_small_cnn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
