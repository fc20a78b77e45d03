/*
 * Regularizer tests: ELLE's value against an independent computation
 * through the public model API (the points rebuilt from the documented
 * Philox stream), its parameter gradient against central finite differences
 * of that independent value, the variants (five points, smooth-L1, |e|,
 * ELLE-2p, clamping), batch-norm bookkeeping in training mode, the ELLE-A
 * rule on scripted values (lag, window, decay, lambda_start, the "more than
 * 2 values" condition, population std), checkpoint state, the oneDNN
 * backend against the reference, and the error paths.
 *
 * Most tests run on the reference backend (double accumulation) with a
 * small CNN in float, so finite differences are compared by the fraction of
 * coordinates that agree (a ReLU or max-pool kink inside the stencil moves
 * a few; a wrong coefficient moves nearly all), as in test_models.c.
 */
#include <stdint.h>
#include <string.h>

#include "elle_test.h"
#include "core/rng.h"
#include "nn/model_internal.h"
#include "regularizers/regularizer_internal.h"

/* ---- helpers -------------------------------------------------------------------- */

#define TEST_RAND_SEED 88172645463325252ull
#include "test_rand.h"

enum { C = 1, H = 12, W = 12, D = C * H * W, K = 5 };

static elle_context *make_ctx(elle_backend kind)
{
    elle_context *ctx = NULL;
    assert_elle_ok(elle_context_create(&ctx, kind, 0));
    return ctx;
}

/* small_cnn: conv-BN-ReLU-maxpool x2, linear-ReLU-linear, (1, 12, 12) -> 5 */
static elle_model *make_model(elle_context *ctx, uint64_t seed, int64_t max_batch)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, "small_cnn"));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 4));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_DEPTH, 2));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, 8));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, K));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_CHANNELS, C));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, H));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, W));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, (double)seed));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    if (max_batch)
        assert_elle_ok(elle_model_reserve(m, max_batch));
    return m;
}

static elle_regularizer *make_reg(elle_model *m)
{
    elle_regularizer *r = NULL;
    assert_elle_ok(elle_regularizer_create(&r, m, ELLE_REGULARIZER_ELLE));
    return r;
}

static void setp(elle_regularizer *r, elle_regularizer_param p, double v)
{
    assert_elle_ok(elle_regularizer_set_param(r, p, v));
}

static double getp(const elle_regularizer *r, elle_regularizer_param p)
{
    double v;
    assert_elle_ok(elle_regularizer_get_param(r, p, &v));
    return v;
}

static double stat(const elle_regularizer *r, elle_regularizer_stat s)
{
    double v;
    assert_elle_ok(elle_regularizer_get_stat(r, s, &v));
    return v;
}

static uint64_t counter_of(const elle_regularizer *r)
{
    uint64_t c;
    assert_elle_ok(elle_regularizer_get_rng_counter(r, &c));
    return c;
}

static float *random_images(int64_t n)
{
    float *x = malloc((size_t)(n * D) * sizeof *x);
    for (int64_t i = 0; i < n * D; i++)
        x[i] = (float)frand();
    return x;
}

static int32_t *labels_for(int64_t n)
{
    int32_t *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++)
        y[i] = (int32_t)((i * 3 + 1) % K);
    return y;
}

/* An FGSM-like batch: x + eps * (+-1). */
static float *fake_adv(const float *x, int64_t n, float eps)
{
    float *a = malloc((size_t)(n * D) * sizeof *a);
    for (int64_t i = 0; i < n * D; i++)
        a[i] = x[i] + (frand() < 0.5 ? -eps : eps);
    return a;
}

static int64_t num_params(elle_model *m)
{
    return elle_model_num_params(m);
}

static int64_t state_numel(elle_model *m, int64_t i)
{
    int64_t d[4];
    assert_elle_ok(elle_model_state_info(m, i, NULL, NULL, NULL, d));
    return d[0] * d[1] * d[2] * d[3];
}

/* All parameter gradients, concatenated in state order. */
static float *all_grads(elle_model *m)
{
    float *g = malloc((size_t)num_params(m) * sizeof *g);
    int64_t off = 0;
    for (int64_t si = 0; si < elle_model_state_count(m); si++) {
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(m, si, NULL, &kind, NULL, NULL));
        if (kind != ELLE_STATE_PARAMETER)
            continue;
        assert_elle_ok(elle_model_grad_get(m, si, g + off));
        off += state_numel(m, si);
    }
    assert_int_equal(off, num_params(m));
    return g;
}

static void copy_state(elle_model *dst, elle_model *src)
{
    for (int64_t i = 0; i < elle_model_state_count(src); i++) {
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(src, i, NULL, &kind, NULL, NULL));
        size_t bytes = kind == ELLE_STATE_COUNTER ? 8 : (size_t)state_numel(src, i) * 4;
        void *buf = malloc(bytes);
        assert_elle_ok(elle_model_state_get(src, i, buf));
        assert_elle_ok(elle_model_state_set(dst, i, buf));
        free(buf);
    }
}

/* Index of the state entry called `name`. */
static int64_t entry(elle_model *m, const char *name)
{
    for (int64_t i = 0; i < elle_model_state_count(m); i++) {
        const char *s;
        assert_elle_ok(elle_model_state_info(m, i, &s, NULL, NULL, NULL));
        if (strcmp(s, name) == 0)
            return i;
    }
    fail_msg("no state entry '%s'", name);
    return -1;
}

/* ---- the independent computation ------------------------------------------------
 *
 * The points as docs/regularizers.md defines them: Philox key = seed with
 * (0x400 + kind) in the top 11 bits; from counter c0 one fill of U[-eps, eps]
 * over x_a then x_b (x_a only with reuse_adv), x_a = u_a + x, x_b = u_b + x
 * (or x_adv), optional clamp of the drawn points, then for 3 points
 * alpha ~ U[0,1) per sample from the next block and
 * x_c = (1 - alpha) x_a + alpha x_b; for 5 points x_{c,d,e} = (1 - t) x_a + t x_b
 * with t = 1/4, 1/2, 3/4. */
typedef struct points {
    int pts;
    int64_t n;
    float *p;     /* pts blocks of n images */
    float *alpha; /* n (3 points) */
    uint64_t next_counter;
} points;

static points make_points(const elle_regularizer *r, const float *x, const float *x_adv,
                          int64_t n, uint64_t c0)
{
    points P;
    P.pts = (int)getp(r, ELLE_REGULARIZER_PARAM_POINTS);
    P.n = n;
    int reuse = getp(r, ELLE_REGULARIZER_PARAM_REUSE_ADV) != 0;
    int clamp = getp(r, ELLE_REGULARIZER_PARAM_CLAMP_IMAGE) != 0;
    float eps = (float)getp(r, ELLE_REGULARIZER_PARAM_EPS);
    uint64_t key = (uint64_t)getp(r, ELLE_REGULARIZER_PARAM_SEED) |
                   ((uint64_t)(0x400 + ELLE_REGULARIZER_ELLE) << 53);
    int64_t nd = n * D;
    P.p = malloc((size_t)(P.pts * nd) * sizeof *P.p);
    P.alpha = malloc((size_t)n * sizeof *P.alpha);
    int64_t drawn = (reuse ? 1 : 2) * nd;
    elle__rng_uniform_range(key, c0, 0, drawn, -eps, eps, P.p);
    uint64_t c = c0 + (uint64_t)((drawn + 3) / 4);
    float *xa = P.p, *xb = P.p + nd;
    for (int64_t i = 0; i < nd; i++) {
        xa[i] = xa[i] + x[i];
        xb[i] = reuse ? x_adv[i] : xb[i] + x[i];
    }
    if (clamp)
        for (int64_t i = 0; i < drawn; i++)
            P.p[i] = fminf(fmaxf(P.p[i], 0.0f), 1.0f);
    if (P.pts == 3) {
        elle__rng_uniform_range(key, c, 0, n, 0.0f, 1.0f, P.alpha);
        c += (uint64_t)((n + 3) / 4);
        for (int64_t i = 0; i < nd; i++) {
            float a = P.alpha[i / D];
            float t1 = (1.0f - a) * xa[i];
            P.p[2 * nd + i] = t1 + a * xb[i];
        }
    } else {
        const float t[3] = {0.25f, 0.5f, 0.75f};
        for (int k = 0; k < 3; k++)
            for (int64_t i = 0; i < nd; i++) {
                float t1 = (1.0f - t[k]) * xa[i];
                P.p[(2 + k) * nd + i] = t1 + t[k] * xb[i];
            }
    }
    P.next_counter = c;
    return P;
}

static void free_points(points *P)
{
    free(P->p);
    free(P->alpha);
}

/* Cross-entropy in double from float logits. */
static double xent(const float *z, int32_t y)
{
    double mx = z[0];
    for (int j = 1; j < K; j++)
        mx = fmax(mx, z[j]);
    double s = 0;
    for (int j = 0; j < K; j++)
        s += exp((double)z[j] - mx);
    return mx + log(s) - z[y];
}

/* Per-sample losses at the points: one forward of all blocks (concat) or
 * one forward per block. */
static void point_losses(elle_model *m, const points *P, const int32_t *y, int concat, double *l)
{
    int64_t n = P->n, total = P->pts * n;
    float *z = malloc((size_t)(total * K) * sizeof *z);
    if (concat) {
        assert_elle_ok(elle_model_forward(m, P->p, total, z));
    } else {
        for (int k = 0; k < P->pts; k++)
            assert_elle_ok(elle_model_forward(m, P->p + k * n * D, n, z + k * n * K));
    }
    for (int64_t j = 0; j < total; j++)
        l[j] = xent(z + j * K, y[j % n]);
    free(z);
}

static double phi_ref(int error, double e)
{
    switch (error) {
    case 1: return fabs(e) < 1 ? 0.5 * e * e : fabs(e) - 0.5;
    case 2: return fabs(e);
    default: return e * e;
    }
}

/* E from per-sample losses, the formulas of Definition 1 / 3. */
static double e_lin_ref(const points *P, const double *l, int error, double *e_out)
{
    int64_t n = P->n;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double e;
        if (P->pts == 3) {
            double a = P->alpha[i];
            e = l[2 * n + i] - (1 - a) * l[i] - a * l[n + i];
        } else {
            e = -l[i] / 12 - l[n + i] / 12 + 4.0 / 3 * l[2 * n + i] - 2.5 * l[3 * n + i] +
                4.0 / 3 * l[4 * n + i];
        }
        if (e_out)
            e_out[i] = e;
        sum += phi_ref(error, e);
    }
    return sum / (double)n;
}

static double e_lin_model(elle_model *m, const points *P, const int32_t *y, int concat, int error)
{
    double *l = malloc((size_t)(P->pts * P->n) * sizeof *l);
    point_losses(m, P, y, concat, l);
    double e = e_lin_ref(P, l, error, NULL);
    free(l);
    return e;
}

static void assert_rel(double got, double want, double rtol, const char *what)
{
    if (!(fabs(got - want) <= rtol * fabs(want) + 1e-12))
        fail_msg("%s: got %.10g, independent %.10g (rel %.3g, allowed %.3g)", what, got, want,
                 fabs(got - want) / fabs(want), rtol);
}

/* The library's value against the independent one at the same points. The
 * library's losses are floats, the independent ones doubles from the same
 * logits: each differs by ~1 float rounding, which moves e_i by up to
 * sum_k |w_k| of them and E by phi'(e_i) times that; beyond this, rtol. */
static void assert_value(double v, elle_model *m, const points *P, const int32_t *y, int concat,
                         int error, double rtol, const char *what)
{
    int64_t n = P->n, total = P->pts * n;
    double *l = malloc((size_t)total * sizeof *l), *e = malloc((size_t)n * sizeof *e);
    point_losses(m, P, y, concat, l);
    double ref = e_lin_ref(P, l, error, e);
    double lmax = 1, slope = 0;
    for (int64_t j = 0; j < total; j++)
        lmax = fmax(lmax, fabs(l[j]));
    for (int64_t i = 0; i < n; i++)
        slope += error == 0 ? 2 * fabs(e[i]) : error == 1 ? fmin(fabs(e[i]), 1.0) : 1.0;
    double wsum = P->pts == 3 ? 2.0 : 1.0 / 6 + 8.0 / 3 + 2.5;
    double atol = slope / (double)n * wsum * 3e-7 * lmax;
    if (!(fabs(v - ref) <= rtol * fabs(ref) + atol))
        fail_msg("%s: got %.10g, independent %.10g (|d| %.3g, allowed %.3g + %.3g)", what, v, ref,
                 fabs(v - ref), rtol * fabs(ref), atol);
    free(l);
    free(e);
}

/* ---- parameters, names, errors ---------------------------------------------------- */

static void test_params_and_names(void **state)
{
    (void)state;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, 1, 0);
    elle_regularizer *r = make_reg(m);
    assert_int_equal(elle_regularizer_get_kind(r), ELLE_REGULARIZER_ELLE);
    assert_int_equal(elle_regularizer_get_kind(NULL), -1);

    /* defaults: the released CIFAR-10 code at eps = 8/255 */
    struct { elle_regularizer_param p; const char *name; double v; } defs[] = {
        {ELLE_REGULARIZER_PARAM_LAMBDA, "lambda", 1000},
        {ELLE_REGULARIZER_PARAM_EPS, "eps", 8.0 / 255},
        {ELLE_REGULARIZER_PARAM_ADAPTIVE, "adaptive", 0},
        {ELLE_REGULARIZER_PARAM_LAMBDA_MAX, "lambda_max", 4000},
        {ELLE_REGULARIZER_PARAM_DECAY, "decay", 0.99},
        {ELLE_REGULARIZER_PARAM_SENSITIVITY, "sensitivity", 2},
        {ELLE_REGULARIZER_PARAM_WINDOW, "window", 0},
        {ELLE_REGULARIZER_PARAM_LAMBDA_START, "lambda_start", 0},
        {ELLE_REGULARIZER_PARAM_POINTS, "points", 3},
        {ELLE_REGULARIZER_PARAM_REUSE_ADV, "reuse_adv", 0},
        {ELLE_REGULARIZER_PARAM_ERROR, "error", 0},
        {ELLE_REGULARIZER_PARAM_SEED, "seed", 0},
        {ELLE_REGULARIZER_PARAM_CLAMP_IMAGE, "clamp_image", 0},
        {ELLE_REGULARIZER_PARAM_LAMBDA_LAG, "lambda_lag", 1},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        assert_true(getp(r, defs[i].p) == defs[i].v);
        assert_string_equal(elle_regularizer_param_name(defs[i].p), defs[i].name);
        elle_regularizer_param p;
        assert_elle_ok(elle_regularizer_param_from_name(defs[i].name, &p));
        assert_int_equal(p, defs[i].p);
        double lo, hi;
        assert_elle_ok(elle_regularizer_param_bounds(ELLE_REGULARIZER_ELLE, defs[i].p, &lo, &hi));
        assert_true(lo <= defs[i].v && defs[i].v <= hi);
    }
    assert_null(elle_regularizer_param_name((elle_regularizer_param)99));
    elle_regularizer_param p;
    assert_elle_status(elle_regularizer_param_from_name("lamda", &p), ELLE_EINVAL);
    assert_string_equal(elle_regularizer_kind_name(ELLE_REGULARIZER_ELLE), "elle");
    assert_null(elle_regularizer_kind_name((elle_regularizer_kind)7));
    elle_regularizer_kind k;
    assert_elle_ok(elle_regularizer_kind_from_name("elle", &k));
    assert_int_equal(k, ELLE_REGULARIZER_ELLE);
    assert_elle_status(elle_regularizer_kind_from_name("gradalign2", &k), ELLE_EINVAL);
    assert_string_equal(elle_regularizer_stat_name(ELLE_REGULARIZER_STAT_DETECTIONS),
                        "detections");
    assert_null(elle_regularizer_stat_name((elle_regularizer_stat)0));

    /* invalid values leave the parameter unchanged */
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_POINTS, 4), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_POINTS, 7), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_EPS, -0.1), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_EPS, NAN), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_DECAY, 1.5), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_ADAPTIVE, 0.5),
                       ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_ERROR, 3), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_WINDOW, 2.5),
                       ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_LAMBDA, -1),
                       ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, (elle_regularizer_param)99, 1), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(NULL, ELLE_REGULARIZER_PARAM_EPS, 0.1),
                       ELLE_EINVAL);
    assert_true(getp(r, ELLE_REGULARIZER_PARAM_POINTS) == 3);
    assert_true(getp(r, ELLE_REGULARIZER_PARAM_EPS) == 8.0 / 255);
    setp(r, ELLE_REGULARIZER_PARAM_POINTS, 5);
    assert_true(getp(r, ELLE_REGULARIZER_PARAM_POINTS) == 5);
    double v;
    assert_elle_status(elle_regularizer_get_param(r, (elle_regularizer_param)0, &v), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_get_stat(r, (elle_regularizer_stat)42, &v), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_param_bounds((elle_regularizer_kind)99,
                                                     ELLE_REGULARIZER_PARAM_EPS, NULL, NULL),
                       ELLE_EINVAL);
    assert_elle_status(elle_regularizer_observe(r, NAN), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_observe(r, INFINITY), ELLE_EINVAL);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_COUNT) == 0);

    /* forward batch */
    assert_int_equal(elle_regularizer_batch_samples(r, 16), 80);
    setp(r, ELLE_REGULARIZER_PARAM_POINTS, 3);
    assert_int_equal(elle_regularizer_batch_samples(r, 16), 48);
    assert_int_equal(elle_regularizer_batch_samples(r, 0), -1);
    assert_int_equal(elle_regularizer_batch_samples(NULL, 4), -1);

    /* create */
    elle_regularizer *r2 = NULL;
    assert_elle_status(elle_regularizer_create(&r2, m, (elle_regularizer_kind)99), ELLE_EINVAL);
    assert_null(r2);
    assert_elle_status(elle_regularizer_create(&r2, NULL, ELLE_REGULARIZER_ELLE), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_create(NULL, m, ELLE_REGULARIZER_ELLE), ELLE_EINVAL);
    elle_regularizer_free(NULL);

    /* the lambda table of the reference scripts */
    struct { double eps; int adaptive; double lambda; } tab[] = {
        {2.0 / 255, 0, 1000},   {8.0 / 255, 0, 1000},   {10.0 / 255, 0, 5000},
        {16.0 / 255, 0, 5000},  {20.0 / 255, 0, 5000},  {22.0 / 255, 0, 10000},
        {26.0 / 255, 0, 10000}, {8.0 / 255, 1, 4000},   {26.0 / 255, 1, 4000},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        assert_elle_ok(elle_regularizer_default_lambda(ELLE_REGULARIZER_ELLE, tab[i].eps,
                                                       tab[i].adaptive, &v));
        assert_true(v == tab[i].lambda);
    }
    assert_elle_status(elle_regularizer_default_lambda(ELLE_REGULARIZER_ELLE, -0.1, 0, &v),
                       ELLE_EINVAL);
    assert_elle_status(elle_regularizer_default_lambda((elle_regularizer_kind)9, 0.1, 0, &v),
                       ELLE_EINVAL);

    elle_regularizer_free(r);
    elle_model_free(m);
    elle_context_free(ctx);
}

static void test_apply_errors(void **state)
{
    (void)state;
    const int64_t n = 4;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, 2, 0);
    elle_regularizer *r = make_reg(m);
    float *x = random_images(n);
    int32_t *y = labels_for(n);
    double v;

    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, &v), ELLE_ESTATE);
    /* reserved for the batch but not for its 3 points */
    assert_elle_ok(elle_model_reserve(m, n));
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, &v), ELLE_ESHAPE);
    assert_non_null(strstr(elle_error_last()->message, "elle_model_reserve(model, 12)"));
    assert_elle_ok(elle_model_reserve(m, 3 * n));
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &v));
    setp(r, ELLE_REGULARIZER_PARAM_POINTS, 5);
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, &v), ELLE_ESHAPE);
    assert_non_null(strstr(elle_error_last()->message, "elle_model_reserve(model, 20)"));
    setp(r, ELLE_REGULARIZER_PARAM_POINTS, 3);

    uint64_t c = counter_of(r);
    double count = stat(r, ELLE_REGULARIZER_STAT_COUNT);
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, 0, &v), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_apply(r, NULL, y, NULL, n, &v), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_apply(r, x, NULL, NULL, n, &v), ELLE_EINVAL);
    assert_elle_status(elle_regularizer_apply(NULL, x, y, NULL, n, &v), ELLE_EINVAL);
    y[2] = K;
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, &v), ELLE_EINVAL);
    y[2] = -1;
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, &v), ELLE_EINVAL);
    y[2] = 0;
    x[7] = NAN;
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, &v), ELLE_EINVAL);
    x[7] = 0.5f;
    setp(r, ELLE_REGULARIZER_PARAM_REUSE_ADV, 1);
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, &v), ELLE_EINVAL);
    float *adv = fake_adv(x, n, 0.03f);
    adv[3] = INFINITY;
    assert_elle_status(elle_regularizer_apply(r, x, y, adv, n, &v), ELLE_EINVAL);
    /* failed calls draw nothing and record nothing */
    assert_true(counter_of(r) == c);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_COUNT) == count);
    setp(r, ELLE_REGULARIZER_PARAM_REUSE_ADV, 0);

    /* a model whose logits overflow: ELLE_ENUMERIC, nothing accumulated or recorded */
    int64_t fc2 = entry(m, "fc2.weight");
    int64_t numel = state_numel(m, fc2);
    float *w = malloc((size_t)numel * sizeof *w);
    for (int64_t i = 0; i < numel; i++)
        w[i] = 3e38f;
    assert_elle_ok(elle_model_state_set(m, fc2, w));
    assert_elle_ok(elle_model_zero_grad(m));
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 1);
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, &v), ELLE_ENUMERIC);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_COUNT) == count);
    float *g = all_grads(m);
    for (int64_t i = 0; i < num_params(m); i++)
        assert_true(g[i] == 0.0f);

    free(g);
    free(w);
    free(adv);
    free(x);
    free(y);
    elle_regularizer_free(r);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- the value --------------------------------------------------------------------- */

/* Apply once (lambda 0: value only) and compare with the independent value
 * from the public model API; returns the value. */
static double check_value(elle_model *m, elle_regularizer *r, const float *x, const int32_t *y,
                          const float *x_adv, int64_t n, int concat, double rtol)
{
    uint64_t c0 = counter_of(r);
    double v = -1;
    assert_elle_ok(elle_regularizer_apply(r, x, y, x_adv, n, &v));
    points P = make_points(r, x, x_adv, n, c0);
    /* the stream advanced by exactly the blocks drawn */
    assert_true(counter_of(r) == P.next_counter);
    assert_value(v, m, &P, y, concat, (int)getp(r, ELLE_REGULARIZER_PARAM_ERROR), rtol,
                 "E_lin");
    assert_true(stat(r, ELLE_REGULARIZER_STAT_VALUE) == v);
    free_points(&P);
    return v;
}

static void test_value_eval(void **state)
{
    (void)state;
    const int64_t n = 6;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, 3, 5 * n);
    assert_elle_ok(elle_model_set_training(m, 0));
    elle_regularizer *r = make_reg(m);
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 0);
    setp(r, ELLE_REGULARIZER_PARAM_SEED, 12345);
    float *x = random_images(n);
    int32_t *y = labels_for(n);

    /* eval mode: three separate forwards equal one concatenated forward */
    double e8 = check_value(m, r, x, y, NULL, n, 0, 1e-5);
    assert_true(e8 > 0.0); /* a ReLU network with cross-entropy is not locally linear */
    double e8b = check_value(m, r, x, y, NULL, n, 0, 1e-5);
    assert_true(e8b != e8); /* the stream advanced: new points */

    /* eps -> 0: E_lin vanishes (e_i is second order in eps, E_lin fourth);
     * at this size it is float rounding of the losses, so no comparison
     * with the independent value */
    setp(r, ELLE_REGULARIZER_PARAM_EPS, 1e-4);
    double small;
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &small));
    if (!(small < 1e-4 * e8))
        fail_msg("E_lin at eps 1e-4 is %g, at 8/255 %g", small, e8);
    setp(r, ELLE_REGULARIZER_PARAM_EPS, 0);
    double zero;
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &zero));
    assert_true(zero < 1e-10);

    /* larger eps, clamped points (the ImageNet code) */
    setp(r, ELLE_REGULARIZER_PARAM_EPS, 0.5);
    setp(r, ELLE_REGULARIZER_PARAM_CLAMP_IMAGE, 1);
    check_value(m, r, x, y, NULL, n, 0, 1e-5);
    setp(r, ELLE_REGULARIZER_PARAM_CLAMP_IMAGE, 0);
    double unclamped = check_value(m, r, x, y, NULL, n, 0, 1e-5);
    assert_true(unclamped > e8);

    /* Definition 3: five points, no alpha drawn */
    setp(r, ELLE_REGULARIZER_PARAM_EPS, 8.0 / 255);
    setp(r, ELLE_REGULARIZER_PARAM_POINTS, 5);
    double e5 = check_value(m, r, x, y, NULL, n, 0, 1e-4);
    assert_true(e5 > 0.0);
    setp(r, ELLE_REGULARIZER_PARAM_POINTS, 3);

    /* ELLE-2p: x_b := x_adv (only x_a's noise is drawn); another x_adv, another value */
    setp(r, ELLE_REGULARIZER_PARAM_REUSE_ADV, 1);
    float *adv = fake_adv(x, n, 8.0f / 255);
    uint64_t c = counter_of(r);
    double e2p = check_value(m, r, x, y, adv, n, 0, 1e-5);
    float *adv2 = fake_adv(x, n, 8.0f / 255);
    assert_elle_ok(elle_regularizer_set_rng_counter(r, c));
    double e2p_other = check_value(m, r, x, y, adv2, n, 0, 1e-5);
    assert_true(e2p != e2p_other);
    setp(r, ELLE_REGULARIZER_PARAM_REUSE_ADV, 0);

    /* the counter can be set: the same points, the same value */
    assert_elle_ok(elle_regularizer_set_rng_counter(r, 777));
    double a1, a2;
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &a1));
    assert_elle_ok(elle_regularizer_set_rng_counter(r, 777));
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &a2));
    assert_true(a1 == a2);
    /* the seed selects the stream, from its start */
    setp(r, ELLE_REGULARIZER_PARAM_SEED, 1);
    assert_true(counter_of(r) == 0);
    assert_elle_ok(elle_regularizer_set_rng_counter(r, 777));
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &a2));
    assert_true(a1 != a2);

    free(adv);
    free(adv2);
    free(x);
    free(y);
    elle_regularizer_free(r);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- the estimator on losses of known shape -------------------------------------
 *
 * E_lin measures how far the loss is from linear along the segment between
 * x_a and x_b. The library's own points (elle__elle_points: noise, alpha,
 * interior points, clamping) and its estimator (elle__elle_estimate) are
 * driven here with analytic losses instead of the network's cross-entropy:
 *
 *   linear    L(z) = w.z + b: e_i = 0, so E = 0 up to the float rounding of
 *             the interior points (|x_c - ((1-a) x_a + a x_b)| ~ 1e-7 |x|);
 *   quadratic L(z) = 1/2 z'Qz + w.z (Q diagonal): along d = x_b - x_a,
 *             3 points: e_i = -1/2 a_i (1 - a_i) d'Qd,
 *             5 points: e_i = d'Qd / 16 (the Definition 3 stencil applied
 *             to 1/2 g'' t^2: -1/12 + 4/3 (1/16 + 9/16) - 5/2 / 4 = 1/8).
 *
 * Both closed forms use only x_a, x_b and alpha, so the interior points
 * and the weights are checked against them independently. */
typedef struct analytic_loss {
    double *w, *q, b;
} analytic_loss;

static double analytic_value(const analytic_loss *f, const float *z)
{
    double v = f->b;
    for (int j = 0; j < D; j++)
        v += f->w[j] * z[j] + (f->q ? 0.5 * f->q[j] * (double)z[j] * z[j] : 0.0);
    return v;
}

static void check_estimator(int npoints, int quadratic, int clamp)
{
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    const int64_t n = 6;
    elle_model *m = make_model(ctx, 5, (int64_t)npoints * n);
    elle_regularizer *r = make_reg(m);
    setp(r, ELLE_REGULARIZER_PARAM_POINTS, npoints);
    setp(r, ELLE_REGULARIZER_PARAM_EPS, 0.3);
    setp(r, ELLE_REGULARIZER_PARAM_CLAMP_IMAGE, clamp);
    setp(r, ELLE_REGULARIZER_PARAM_SEED, 11);

    elle__backend *be = elle__model_backend(m);
    float *x = random_images(n);
    void *xd = NULL;
    assert_elle_ok(be->ops->alloc(be, (size_t)(n * D) * sizeof(float), &xd));
    assert_elle_ok(be->ops->copy_to_device(be, xd, x, (size_t)(n * D) * sizeof(float)));
    uint64_t ctr = 0;
    assert_elle_ok(elle__elle_points(r, xd, NULL, n, &ctr));
    assert_true(ctr > counter_of(r)); /* draws were made, the handle's counter unchanged */

    const int64_t samples = (int64_t)npoints * n;
    float *pts = malloc((size_t)(samples * D) * sizeof *pts);
    elle__net *net = elle__model_net(m);
    assert_elle_ok(be->ops->copy_to_host(be, pts, elle__net_input(net, samples).data,
                                         (size_t)(samples * D) * sizeof(float)));

    analytic_loss f = {malloc(D * sizeof(double)), quadratic ? malloc(D * sizeof(double)) : NULL,
                       0.7};
    for (int j = 0; j < D; j++) {
        f.w[j] = 2.0 * frand() - 1.0;
        if (f.q)
            f.q[j] = 4.0 * frand() + 0.5;
    }
    double *loss = malloc((size_t)samples * sizeof *loss);
    for (int64_t k = 0; k < samples; k++)
        loss[k] = analytic_value(&f, pts + k * D);

    const float *alpha = elle__elle_alpha(r);
    double value = -1.0;
    elle__elle_estimate(npoints, ELLE_REGULARIZER_ERROR_SQUARED, alpha, loss, n, &value, NULL);

    if (!quadratic) {
        /* losses are O(10); float rounding of the npoints gives e ~ 1e-6 */
        if (!(value >= 0.0 && value < 1e-10))
            fail_msg("E_lin of a linear loss is %g (points %d, clamp %d), want ~0", value,
                     npoints, clamp);
    } else {
        double want = 0.0;
        for (int64_t i = 0; i < n; i++) {
            const float *xa = pts + i * D, *xb = pts + (n + i) * D;
            double dqd = 0.0;
            for (int j = 0; j < D; j++) {
                double dj = (double)xb[j] - (double)xa[j];
                dqd += f.q[j] * dj * dj;
            }
            double e = npoints == 3 ? -0.5 * (double)alpha[i] * (1.0 - (double)alpha[i]) * dqd
                                   : dqd / 16.0;
            want += e * e / (double)n;
        }
        assert_true(want > 1e-4); /* the check has teeth: E is far from 0 here */
        assert_rel(value, want, 1e-5, "E_lin of a quadratic loss vs the closed form");
    }
    /* the npoints themselves: x_a, x_b within eps of x (and in [0,1] when clamped) */
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < D; j++) {
                float v = pts[(k * n + i) * D + j];
                assert_true(fabsf(v - x[i * D + j]) <= 0.3f + 1e-6f);
                if (clamp)
                    assert_true(v >= 0.0f && v <= 1.0f);
            }

    free(loss);
    free(f.w);
    free(f.q);
    free(pts);
    be->ops->free(be, xd);
    free(x);
    elle_regularizer_free(r);
    elle_model_free(m);
    elle_context_free(ctx);
}

static void test_estimator_linear_loss(void **state)
{
    (void)state;
    check_estimator(3, 0, 0);
    check_estimator(3, 0, 1);
    check_estimator(5, 0, 0);
}

static void test_estimator_quadratic_loss(void **state)
{
    (void)state;
    check_estimator(3, 1, 0);
    check_estimator(3, 1, 1);
    check_estimator(5, 1, 0);
}

/* smooth-L1 and |e| on errors on both sides of |e| = 1: the last layer is
 * scaled up so that the losses (and their curvature) are large. */
static void test_error_functions(void **state)
{
    (void)state;
    const int64_t n = 8;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, 4, 3 * n);
    assert_elle_ok(elle_model_set_training(m, 0));
    int64_t fc2 = entry(m, "fc2.weight");
    int64_t numel = state_numel(m, fc2);
    float *w = malloc((size_t)numel * sizeof *w);
    assert_elle_ok(elle_model_state_get(m, fc2, w));
    for (int64_t i = 0; i < numel; i++)
        w[i] *= 600.0f;
    assert_elle_ok(elle_model_state_set(m, fc2, w));
    elle_regularizer *r = make_reg(m);
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 0);
    setp(r, ELLE_REGULARIZER_PARAM_EPS, 1.0);
    float *x = random_images(n);
    int32_t *y = labels_for(n);

    /* the errors of this batch straddle 1 */
    uint64_t c0 = counter_of(r);
    points P = make_points(r, x, NULL, n, c0);
    double l[3 * 8], e[8];
    point_losses(m, &P, y, 0, l);
    e_lin_ref(&P, l, 0, e);
    int small = 0, big = 0;
    for (int i = 0; i < n; i++) {
        small += fabs(e[i]) < 1;
        big += fabs(e[i]) > 1;
    }
    if (!(small > 0 && big > 0))
        fail_msg("test batch does not straddle |e| = 1 (%d small, %d big)", small, big);
    free_points(&P);

    double vals[3];
    for (int err = 0; err < 3; err++) {
        setp(r, ELLE_REGULARIZER_PARAM_ERROR, err);
        assert_elle_ok(elle_regularizer_set_rng_counter(r, c0));
        vals[err] = check_value(m, r, x, y, NULL, n, 0, 1e-5);
    }
    /* the three really differ */
    assert_true(vals[0] != vals[1] && vals[1] != vals[2] && vals[0] != vals[2]);

    free(w);
    free(x);
    free(y);
    elle_regularizer_free(r);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* Training mode: the value is that of ONE forward of [x_a; x_b; x_c] (batch
 * statistics over 3n samples), which differs from three separate forwards;
 * the running statistics move once, as that forward moves them. */
static void test_value_train_mode(void **state)
{
    (void)state;
    const int64_t n = 6;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *a = make_model(ctx, 5, 3 * n), *b = make_model(ctx, 6, 3 * n);
    copy_state(b, a);
    assert_elle_ok(elle_model_set_training(a, 1));
    assert_elle_ok(elle_model_set_training(b, 1));
    elle_regularizer *r = make_reg(a);
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 0);
    float *x = random_images(n);
    int32_t *y = labels_for(n);

    uint64_t c0 = counter_of(r);
    double v;
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &v));
    points P = make_points(r, x, NULL, n, c0);
    assert_value(v, b, &P, y, 1, 0, 1e-5, "E_lin, training mode, vs one forward of 3n");

    /* running statistics: identical after one 3n forward each */
    for (int64_t i = 0; i < elle_model_state_count(a); i++) {
        elle_state_kind kind;
        const char *name;
        assert_elle_ok(elle_model_state_info(a, i, &name, &kind, NULL, NULL));
        if (kind == ELLE_STATE_COUNTER) {
            int64_t ca, cb;
            assert_elle_ok(elle_model_state_get(a, i, &ca));
            assert_elle_ok(elle_model_state_get(b, i, &cb));
            assert_int_equal(ca, 1); /* num_batches_tracked: one forward */
            assert_int_equal(ca, cb);
        } else if (kind == ELLE_STATE_BUFFER) {
            int64_t k = state_numel(a, i);
            float *sa = malloc((size_t)k * 4), *sb = malloc((size_t)k * 4);
            assert_elle_ok(elle_model_state_get(a, i, sa));
            assert_elle_ok(elle_model_state_get(b, i, sb));
            assert_floats_close(sa, sb, (size_t)k, 1e-6, 1e-5);
            free(sa);
            free(sb);
        }
    }

    /* three forwards of n in training mode give another value */
    double separate = e_lin_model(b, &P, y, 0, 0);
    if (!(fabs(separate - v) > 1e-3 * v))
        fail_msg("separate train-mode forwards give %g, the concatenation %g: the test "
                 "cannot tell them apart", separate, v);
    free_points(&P);
    free(x);
    free(y);
    elle_regularizer_free(r);
    elle_model_free(a);
    elle_model_free(b);
    elle_context_free(ctx);
}

/* ---- the gradient -------------------------------------------------------------------- */

/* Fraction of coordinates where finite differences and the analytic
 * gradient agree to atol + rtol |analytic|. */
static double agreement(const double *fd, const double *an, int n, double atol)
{
    int good = 0;
    for (int i = 0; i < n; i++)
        good += fabs(fd[i] - an[i]) <= atol + 3e-2 * fabs(an[i]);
    return (double)good / n;
}

typedef struct variant {
    const char *name;
    int points, error, reuse, training;
    double eps, lambda;
    float fc2_scale;
} variant;

/* lambda * grad E from apply against central differences of the
 * independent E (the same points every evaluation) on sampled coordinates
 * of every parameter entry. */
static void check_gradient(const variant *vt)
{
    const int64_t n = 4;
    const double h = 2e-4;
    rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(vt->points * 131 + vt->error * 17 +
                                                   vt->reuse * 7 + vt->training * 3);
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, 8, vt->points * n);
    assert_elle_ok(elle_model_set_training(m, vt->training));
    if (vt->fc2_scale != 1.0f) {
        int64_t fc2 = entry(m, "fc2.weight");
        int64_t numel = state_numel(m, fc2);
        float *w = malloc((size_t)numel * sizeof *w);
        assert_elle_ok(elle_model_state_get(m, fc2, w));
        for (int64_t i = 0; i < numel; i++)
            w[i] *= vt->fc2_scale;
        assert_elle_ok(elle_model_state_set(m, fc2, w));
        free(w);
    }
    elle_regularizer *r = make_reg(m);
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, vt->lambda);
    setp(r, ELLE_REGULARIZER_PARAM_EPS, vt->eps);
    setp(r, ELLE_REGULARIZER_PARAM_POINTS, vt->points);
    setp(r, ELLE_REGULARIZER_PARAM_ERROR, vt->error);
    setp(r, ELLE_REGULARIZER_PARAM_REUSE_ADV, vt->reuse);
    float *x = random_images(n);
    int32_t *y = labels_for(n);
    float *adv = vt->reuse ? fake_adv(x, n, (float)vt->eps) : NULL;

    uint64_t c0 = counter_of(r);
    double v;
    assert_elle_ok(elle_model_zero_grad(m));
    assert_elle_ok(elle_regularizer_apply(r, x, y, adv, n, &v));
    assert_true(stat(r, ELLE_REGULARIZER_STAT_APPLIED_LAMBDA) == vt->lambda);
    float *g = all_grads(m);
    points P = make_points(r, x, adv, n, c0);
    assert_value(v, m, &P, y, 1, vt->error, 1e-5, vt->name);

    /* one parameter vector of all entries, perturbed through the public state API */
    enum { NP = 10 };
    double fd[64 * NP], an[64 * NP];
    int total = 0;
    double num = 0, den = 0;
    int64_t off = 0;
    for (int64_t si = 0; si < elle_model_state_count(m); si++) {
        elle_state_kind kind;
        const char *name;
        assert_elle_ok(elle_model_state_info(m, si, &name, &kind, NULL, NULL));
        if (kind != ELLE_STATE_PARAMETER)
            continue;
        int64_t numel = state_numel(m, si);
        float *w = malloc((size_t)numel * sizeof *w);
        assert_elle_ok(elle_model_state_get(m, si, w));
        for (int t = 0; t < NP && total < 64 * NP; t++) {
            int64_t i = (int64_t)(frand() * (double)numel);
            float keep = w[i];
            double dq[2];
            for (int q = 0; q < 2; q++) {
                float hq = (float)(q ? h / 2 : h);
                w[i] = keep + hq;
                assert_elle_ok(elle_model_state_set(m, si, w));
                double ep = e_lin_model(m, &P, y, 1, vt->error);
                w[i] = keep - hq;
                assert_elle_ok(elle_model_state_set(m, si, w));
                double em = e_lin_model(m, &P, y, 1, vt->error);
                /* the step actually taken in float */
                dq[q] = (ep - em) / ((double)(keep + hq) - (double)(keep - hq));
            }
            w[i] = keep;
            assert_elle_ok(elle_model_state_set(m, si, w));
            /* Richardson: the h^2 error of central differences cancels */
            fd[total] = vt->lambda * (4 * dq[1] - dq[0]) / 3;
            an[total] = (double)g[off + i];
            num += (fd[total] - an[total]) * (fd[total] - an[total]);
            den += an[total] * an[total];
            total++;
        }
        off += numel;
        free(w);
    }
    double scale = sqrt(den / total);
    double a = agreement(fd, an, total, 2e-2 * scale);
    double rel = sqrt(num / den);
    print_message("%s: E = %.4g, %.0f%% of %d coordinates agree, relative error %.3g\n",
                  vt->name, v, 100 * a, total, rel);
    if (!(a >= 0.85)) {
        for (int t = 0; t < total; t++)
            print_error("  coord %d: fd %.6g analytic %.6g\n", t, fd[t], an[t]);
        fail_msg("%s: gradient agrees on %.0f%% of %d coordinates, relative error %.3g "
                 "(E = %g)", vt->name, 100 * a, total, rel, v);
    }
    free_points(&P);
    free(g);
    free(adv);
    free(x);
    free(y);
    elle_regularizer_free(r);
    elle_model_free(m);
    elle_context_free(ctx);
}

static void test_gradient_fd(void **state)
{
    (void)state;
    /* In eval mode the freshly initialised model is nearly linear in its
     * input (E ~ 1e-6, too close to float rounding for differences): its
     * last layer is scaled up to make the losses curved. */
    static const variant vs[] = {
        {"3 points, squared, eval", 3, 0, 0, 0, 0.3, 1.0, 10.0f},
        {"3 points, squared, training", 3, 0, 0, 1, 0.3, 1.0, 1.0f},
        {"3 points, squared, eval, lambda 1000", 3, 0, 0, 0, 0.3, 1000.0, 10.0f},
        {"3 points, squared, training, eps 8/255", 3, 0, 0, 1, 8.0 / 255, 1.0, 1.0f},
        {"5 points, squared, eval", 5, 0, 0, 0, 0.3, 1.0, 10.0f},
        {"5 points, squared, training", 5, 0, 0, 1, 0.3, 1.0, 1.0f},
        {"3 points, smooth-L1, eval, |e| around 1", 3, 1, 0, 0, 1.0, 1.0, 300.0f},
        {"3 points, |e|, training", 3, 2, 0, 1, 0.3, 1.0, 1.0f},
        {"ELLE-2p, squared, training", 3, 0, 1, 1, 0.3, 1.0, 1.0f},
    };
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++)
        check_gradient(&vs[i]);
}

/* The gradient is ACCUMULATED and scales with lambda; lambda = 0 adds nothing. */
static void test_gradient_accumulates(void **state)
{
    (void)state;
    const int64_t n = 4;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, 9, 3 * n);
    assert_elle_ok(elle_model_set_training(m, 0));
    elle_regularizer *r = make_reg(m);
    setp(r, ELLE_REGULARIZER_PARAM_EPS, 0.2);
    float *x = random_images(n);
    int32_t *y = labels_for(n);
    int64_t np = num_params(m);

    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 0);
    assert_elle_ok(elle_model_zero_grad(m));
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, NULL));
    float *g0 = all_grads(m);
    for (int64_t i = 0; i < np; i++)
        assert_true(g0[i] == 0.0f);

    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 2);
    assert_elle_ok(elle_regularizer_set_rng_counter(r, 50));
    assert_elle_ok(elle_model_zero_grad(m));
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, NULL));
    float *g2 = all_grads(m);
    /* the training loss's gradient is already there: the regularizer adds to it */
    assert_elle_ok(elle_model_zero_grad(m));
    assert_elle_ok(elle_model_backward(m, x, y, n, NULL, NULL));
    float *gce = all_grads(m);
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 6);
    assert_elle_ok(elle_regularizer_set_rng_counter(r, 50));
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, NULL));
    float *gsum = all_grads(m);
    double nz = 0;
    for (int64_t i = 0; i < np; i++) {
        double want = (double)gce[i] + 3.0 * (double)g2[i];
        assert_true(fabs(gsum[i] - want) <= 1e-6 + 1e-4 * fabs(want));
        nz += fabs(g2[i]);
    }
    assert_true(nz > 0);

    free(g0);
    free(g2);
    free(gce);
    free(gsum);
    free(x);
    free(y);
    elle_regularizer_free(r);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- ELLE-A ------------------------------------------------------------------------ */

static elle_regularizer *adaptive_reg(elle_model *m, double lmax, double decay, double sens)
{
    elle_regularizer *r = make_reg(m);
    setp(r, ELLE_REGULARIZER_PARAM_ADAPTIVE, 1);
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA_MAX, lmax);
    setp(r, ELLE_REGULARIZER_PARAM_DECAY, decay);
    setp(r, ELLE_REGULARIZER_PARAM_SENSITIVITY, sens);
    return r;
}

static void observe_expect(elle_regularizer *r, double value, double lambda, double detections)
{
    assert_elle_ok(elle_regularizer_observe(r, value));
    double l = stat(r, ELLE_REGULARIZER_STAT_LAMBDA);
    if (!(fabs(l - lambda) <= 1e-12 * fabs(lambda)))
        fail_msg("after observing %g: lambda %.17g, expected %.17g", value, l, lambda);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_DETECTIONS) == detections);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_VALUE) == value);
}

static void test_adaptive_rule(void **state)
{
    (void)state;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, 10, 0);

    /* lambda_start, decay, the "more than 2 values" condition, detection */
    elle_regularizer *r = adaptive_reg(m, 100, 0.5, 2);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_LAMBDA) == 0); /* starts at 0 */
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA_START, 40);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_LAMBDA) == 40);
    observe_expect(r, 1, 20, 0);
    observe_expect(r, 1, 10, 0);
    observe_expect(r, 100, 5, 0);  /* a spike, but only 2 values before it */
    observe_expect(r, 1, 2.5, 0);  /* [1,1,100]: 34 + 2*46.7 */
    observe_expect(r, 200, 100, 1); /* [1,1,100,1]: 25.75 + 2*42.87 = 111.5 < 200 */
    observe_expect(r, 1, 50, 1);
    observe_expect(r, 1, 25, 1);
    /* history [1,1,100,1,200,1,1]: mean 305/7, population std */
    double mean = 305.0 / 7, var = 0;
    const double h7[7] = {1, 1, 100, 1, 200, 1, 1};
    for (int i = 0; i < 7; i++)
        var += (h7[i] - mean) * (h7[i] - mean);
    assert_true(fabs(stat(r, ELLE_REGULARIZER_STAT_MEAN) - mean) < 1e-12);
    assert_true(fabs(stat(r, ELLE_REGULARIZER_STAT_STD) - sqrt(var / 7)) < 1e-12);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_COUNT) == 7);
    /* reset: back to lambda_start, empty history */
    assert_elle_ok(elle_regularizer_reset(r));
    assert_true(stat(r, ELLE_REGULARIZER_STAT_LAMBDA) == 40);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_COUNT) == 0);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_DETECTIONS) == 0);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_MEAN) == 0);
    elle_regularizer_free(r);

    /* population std (ddof 0): [1,2,3] -> 2 + 2 sqrt(2/3) = 3.633; the sample
     * std would give 4 */
    r = adaptive_reg(m, 7, 0.9, 2);
    observe_expect(r, 1, 0, 0);
    observe_expect(r, 2, 0, 0);
    observe_expect(r, 3, 0, 0);
    observe_expect(r, 3.7, 7, 1);
    elle_regularizer_free(r);
    r = adaptive_reg(m, 7, 0.9, 2);
    observe_expect(r, 1, 0, 0);
    observe_expect(r, 2, 0, 0);
    observe_expect(r, 3, 0, 0);
    observe_expect(r, 3.6, 0, 0);
    elle_regularizer_free(r);
    /* sensitivity: with 1, 3.0 > 2 + 0.816 */
    r = adaptive_reg(m, 7, 0.9, 1);
    observe_expect(r, 1, 0, 0);
    observe_expect(r, 2, 0, 0);
    observe_expect(r, 3, 0, 0);
    observe_expect(r, 3.0, 7, 1);
    observe_expect(r, 0, 6.3, 1);
    elle_regularizer_free(r);

    /* window: the last 2 values [1, 1] -> threshold 1; the whole history
     * [5, 5, 1, 1] -> 3 + 2*2 = 7 */
    r = adaptive_reg(m, 10, 0.5, 2);
    setp(r, ELLE_REGULARIZER_PARAM_WINDOW, 2);
    observe_expect(r, 5, 0, 0);
    observe_expect(r, 5, 0, 0);
    observe_expect(r, 1, 0, 0);
    observe_expect(r, 1, 0, 0);
    observe_expect(r, 1.5, 10, 1);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_MEAN) == 1.25); /* [1, 1.5] */
    elle_regularizer_free(r);
    r = adaptive_reg(m, 10, 0.5, 2);
    observe_expect(r, 5, 0, 0);
    observe_expect(r, 5, 0, 0);
    observe_expect(r, 1, 0, 0);
    observe_expect(r, 1, 0, 0);
    observe_expect(r, 1.5, 0, 0);
    observe_expect(r, 7.5, 10, 1); /* [5,5,1,1,1.5]: 2.7 + 2*1.8868 = 6.47 */
    elle_regularizer_free(r);
    /* a window of 1 still waits for more than 2 values in the history */
    r = adaptive_reg(m, 10, 0.5, 0);
    setp(r, ELLE_REGULARIZER_PARAM_WINDOW, 1);
    observe_expect(r, 1, 0, 0);
    observe_expect(r, 2, 0, 0);
    observe_expect(r, 3, 0, 0);
    observe_expect(r, 3.5, 10, 1);
    observe_expect(r, 3.5, 5, 1); /* not > 3.5 */
    elle_regularizer_free(r);

    /* constant mode: lambda stays, the statistics and detections are kept,
     * and switching to adaptive picks up the rule's lambda */
    r = make_reg(m);
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 123);
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA_MAX, 9);
    observe_expect(r, 1, 123, 0);
    observe_expect(r, 1, 123, 0);
    observe_expect(r, 1, 123, 0);
    observe_expect(r, 2, 123, 1);
    setp(r, ELLE_REGULARIZER_PARAM_ADAPTIVE, 1);
    assert_true(stat(r, ELLE_REGULARIZER_STAT_LAMBDA) == 9);
    elle_regularizer_free(r);

    elle_model_free(m);
    elle_context_free(ctx);
}

/* The one-step lag through apply: the history is primed with [0, 0, 0], so
 * the first apply's E_lin > 0 is a detection. With lambda_lag 1 that
 * apply's gradient still uses the old lambda (0: nothing accumulated) and
 * the next one lambda_max; with lambda_lag 0 the detection weights the same
 * step. */
static void test_adaptive_lag(void **state)
{
    (void)state;
    const int64_t n = 4;
    const double lmax = 7;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, 11, 3 * n);
    assert_elle_ok(elle_model_set_training(m, 0)); /* the model does not change between steps */
    float *x = random_images(n);
    int32_t *y = labels_for(n);
    int64_t np = num_params(m);

    /* the plain gradient of E_lin at counters 0 and c1 */
    elle_regularizer *ref = make_reg(m);
    setp(ref, ELLE_REGULARIZER_PARAM_LAMBDA, 1);
    assert_elle_ok(elle_model_zero_grad(m));
    double v0;
    assert_elle_ok(elle_regularizer_apply(ref, x, y, NULL, n, &v0));
    float *g_step0 = all_grads(m);
    uint64_t c1 = counter_of(ref);
    assert_elle_ok(elle_model_zero_grad(m));
    assert_elle_ok(elle_regularizer_apply(ref, x, y, NULL, n, NULL));
    float *g_step1 = all_grads(m);
    elle_regularizer_free(ref);

    for (int lag = 1; lag >= 0; lag--) {
        elle_regularizer *r = adaptive_reg(m, lmax, 0.5, 2);
        setp(r, ELLE_REGULARIZER_PARAM_LAMBDA_LAG, lag);
        for (int i = 0; i < 3; i++)
            assert_elle_ok(elle_regularizer_observe(r, 0.0));
        assert_true(stat(r, ELLE_REGULARIZER_STAT_LAMBDA) == 0);

        /* step 0: E > 0 + 2*0 is detected */
        double v;
        assert_elle_ok(elle_model_zero_grad(m));
        assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &v));
        assert_true(v == v0);
        assert_true(stat(r, ELLE_REGULARIZER_STAT_DETECTIONS) == 1);
        assert_true(stat(r, ELLE_REGULARIZER_STAT_LAMBDA) == lmax);
        float *g = all_grads(m);
        if (lag) {
            assert_true(stat(r, ELLE_REGULARIZER_STAT_APPLIED_LAMBDA) == 0);
            for (int64_t i = 0; i < np; i++)
                assert_true(g[i] == 0.0f);
        } else {
            assert_true(stat(r, ELLE_REGULARIZER_STAT_APPLIED_LAMBDA) == lmax);
            for (int64_t i = 0; i < np; i++)
                assert_true(fabs(g[i] - lmax * g_step0[i]) <= 1e-6 + 1e-5 * fabs(lmax * g_step0[i]));
        }
        free(g);

        /* step 1: the history [0,0,0,E0]; whatever E1 is, lambda_max or
         * decay * lambda_max follows. With lag 1 this step uses lambda_max. */
        assert_true(counter_of(r) == c1);
        double before = stat(r, ELLE_REGULARIZER_STAT_LAMBDA);
        assert_elle_ok(elle_model_zero_grad(m));
        assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, NULL));
        double det = stat(r, ELLE_REGULARIZER_STAT_DETECTIONS);
        double after = stat(r, ELLE_REGULARIZER_STAT_LAMBDA);
        assert_true(after == (det == 2 ? lmax : 0.5 * lmax));
        double used = lag ? before : after;
        assert_true(stat(r, ELLE_REGULARIZER_STAT_APPLIED_LAMBDA) == used);
        g = all_grads(m);
        for (int64_t i = 0; i < np; i++)
            assert_true(fabs(g[i] - used * g_step1[i]) <= 1e-6 + 1e-5 * fabs(used * g_step1[i]));
        free(g);
        elle_regularizer_free(r);
    }
    free(g_step0);
    free(g_step1);
    free(x);
    free(y);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- checkpoint state ----------------------------------------------------------------- */

static void test_state_round_trip(void **state)
{
    (void)state;
    const int64_t n = 4;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, 12, 3 * n);
    assert_elle_ok(elle_model_set_training(m, 0));
    float *x = random_images(n);
    int32_t *y = labels_for(n);

    elle_regularizer *r = adaptive_reg(m, 50, 0.9, 2);
    setp(r, ELLE_REGULARIZER_PARAM_WINDOW, 3);
    setp(r, ELLE_REGULARIZER_PARAM_SEED, 99);
    for (int i = 0; i < 4; i++)
        assert_elle_ok(elle_regularizer_observe(r, 1.0 + 0.01 * i));
    assert_elle_ok(elle_regularizer_observe(r, 9.0)); /* a detection */
    for (int i = 0; i < 3; i++)
        assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, NULL));

    int64_t size = elle_regularizer_state_size(r);
    assert_int_equal(size, 40 + 24 + 8 * 8);
    unsigned char *buf = malloc((size_t)size + 8);
    assert_elle_status(elle_regularizer_state_get(r, buf, (size_t)size - 1), ELLE_EINVAL);
    assert_elle_ok(elle_regularizer_state_get(r, buf, (size_t)size));
    assert_memory_equal(buf, "ELRS", 4);

    /* a fresh regularizer with the same parameters continues identically */
    elle_regularizer *s = adaptive_reg(m, 50, 0.9, 2);
    setp(s, ELLE_REGULARIZER_PARAM_WINDOW, 3);
    setp(s, ELLE_REGULARIZER_PARAM_SEED, 99);
    assert_elle_ok(elle_regularizer_state_set(s, buf, (size_t)size));
    for (int st = ELLE_REGULARIZER_STAT_LAMBDA; st <= ELLE_REGULARIZER_STAT_STD; st++)
        assert_true(stat(r, (elle_regularizer_stat)st) == stat(s, (elle_regularizer_stat)st));
    assert_true(counter_of(r) == counter_of(s));
    for (int i = 0; i < 3; i++) {
        double vr, vs;
        assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &vr));
        assert_elle_ok(elle_regularizer_apply(s, x, y, NULL, n, &vs));
        assert_true(vr == vs);
        assert_true(stat(r, ELLE_REGULARIZER_STAT_LAMBDA) == stat(s, ELLE_REGULARIZER_STAT_LAMBDA));
        assert_true(stat(r, ELLE_REGULARIZER_STAT_APPLIED_LAMBDA) ==
                    stat(s, ELLE_REGULARIZER_STAT_APPLIED_LAMBDA));
    }
    assert_elle_ok(elle_regularizer_observe(r, 30.0));
    assert_elle_ok(elle_regularizer_observe(s, 30.0));
    assert_true(stat(r, ELLE_REGULARIZER_STAT_LAMBDA) == stat(s, ELLE_REGULARIZER_STAT_LAMBDA));
    assert_true(stat(r, ELLE_REGULARIZER_STAT_DETECTIONS) ==
                stat(s, ELLE_REGULARIZER_STAT_DETECTIONS));

    /* malformed states are refused and change nothing */
    double count = stat(s, ELLE_REGULARIZER_STAT_COUNT);
    uint64_t c = counter_of(s);
    assert_elle_status(elle_regularizer_state_set(s, buf, (size_t)size - 8), ELLE_EFORMAT);
    assert_elle_status(elle_regularizer_state_set(s, buf, (size_t)size + 8), ELLE_EFORMAT);
    assert_elle_status(elle_regularizer_state_set(s, buf, 10), ELLE_EFORMAT);
    buf[0] = 'X';
    assert_elle_status(elle_regularizer_state_set(s, buf, (size_t)size), ELLE_EFORMAT);
    buf[0] = 'E';
    buf[4] = 2; /* version */
    assert_elle_status(elle_regularizer_state_set(s, buf, (size_t)size), ELLE_EVERSION);
    buf[4] = 1;
    buf[8] = 3; /* kind */
    assert_elle_status(elle_regularizer_state_set(s, buf, (size_t)size), ELLE_EFORMAT);
    buf[8] = 0;
    double nan = NAN;
    unsigned char keep[8];
    memcpy(keep, buf + 40 + 24, 8);
    memcpy(buf + 40 + 24, &nan, 8); /* first history value (little-endian host) */
    assert_elle_status(elle_regularizer_state_set(s, buf, (size_t)size), ELLE_EFORMAT);
    memcpy(buf + 40 + 24, keep, 8);
    assert_true(stat(s, ELLE_REGULARIZER_STAT_COUNT) == count);
    assert_true(counter_of(s) == c);
    assert_elle_ok(elle_regularizer_state_set(s, buf, (size_t)size)); /* intact again */
    assert_int_equal(elle_regularizer_state_size(NULL), -1);

    free(buf);
    free(x);
    free(y);
    elle_regularizer_free(r);
    elle_regularizer_free(s);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- backends and the device entry --------------------------------------------------- */

/* oneDNN against the reference: value and gradient, both modes. */
static void test_cpu_vs_reference(void **state)
{
    (void)state;
    const int64_t n = 8;
    elle_context *rc = make_ctx(ELLE_BACKEND_REFERENCE), *cc = make_ctx(ELLE_BACKEND_CPU);
    elle_model *mr = make_model(rc, 13, 3 * n), *mc = make_model(cc, 14, 3 * n);
    copy_state(mc, mr);
    elle_regularizer *rr = make_reg(mr), *rcpu = make_reg(mc);
    /* a radius where e_i is well above the float rounding of the losses */
    setp(rr, ELLE_REGULARIZER_PARAM_EPS, 0.3);
    setp(rcpu, ELLE_REGULARIZER_PARAM_EPS, 0.3);
    float *x = random_images(n);
    int32_t *y = labels_for(n);
    for (int training = 1; training >= 0; training--) {
        assert_elle_ok(elle_model_set_training(mr, training));
        assert_elle_ok(elle_model_set_training(mc, training));
        for (int pts = 3; pts <= 5; pts += 2) {
            setp(rr, ELLE_REGULARIZER_PARAM_POINTS, pts);
            setp(rcpu, ELLE_REGULARIZER_PARAM_POINTS, pts);
            if (pts == 5) {
                assert_elle_ok(elle_model_reserve(mr, 5 * n));
                assert_elle_ok(elle_model_reserve(mc, 5 * n));
            }
            assert_elle_ok(elle_model_zero_grad(mr));
            assert_elle_ok(elle_model_zero_grad(mc));
            double vr, vc;
            assert_elle_ok(elle_regularizer_apply(rr, x, y, NULL, n, &vr));
            assert_elle_ok(elle_regularizer_apply(rcpu, x, y, NULL, n, &vc));
            assert_rel(vc, vr, 2e-3, "E_lin, oneDNN vs reference");
            float *gr = all_grads(mr), *gc = all_grads(mc);
            double e = elle_test_nmse(gc, gr, (size_t)num_params(mr));
            if (!(e < 1e-5))
                fail_msg("gradient, oneDNN vs reference (training=%d, %d points): nmse %.3g",
                         training, pts, e);
            free(gr);
            free(gc);
        }
    }
    free(x);
    free(y);
    elle_regularizer_free(rr);
    elle_regularizer_free(rcpu);
    elle_model_free(mr);
    elle_model_free(mc);
    elle_context_free(rc);
    elle_context_free(cc);
}

static void test_device_entry(void **state)
{
    (void)state;
    const int64_t n = 4;
    elle_context *ctx = make_ctx(ELLE_BACKEND_CPU);
    elle_model *m = make_model(ctx, 15, 3 * n);
    elle_regularizer *r = make_reg(m);
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 0);
    float *x = random_images(n);
    int32_t *y = labels_for(n);
    elle__backend *be = elle__model_backend(m);
    void *xd = NULL, *yd = NULL;
    assert_elle_ok(be->ops->alloc(be, (size_t)(n * D) * 4, &xd));
    assert_elle_ok(be->ops->alloc(be, (size_t)n * 4, &yd));
    assert_elle_ok(be->ops->copy_to_device(be, xd, x, (size_t)(n * D) * 4));
    assert_elle_ok(be->ops->copy_to_device(be, yd, y, (size_t)n * 4));

    double vh, vd;
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &vh));
    assert_elle_ok(elle_regularizer_set_rng_counter(r, 0));
    assert_elle_ok(elle__regularizer_apply_dev(r, xd, yd, NULL, n, &vd));
    assert_true(vh == vd);
    assert_int_equal(elle__regularizer_forward_samples(r, n), 3 * n);

    /* inputs inside the buffer the points are written to are refused */
    float *in = elle__net_input(elle__model_net(m), 1).data;
    assert_elle_status(elle__regularizer_apply_dev(r, in + D, yd, NULL, n, &vd), ELLE_EINVAL);
    assert_elle_status(elle__regularizer_apply_dev(r, xd, yd, NULL, 100, &vd), ELLE_ESHAPE);

    be->ops->free(be, xd);
    be->ops->free(be, yd);
    free(x);
    free(y);
    elle_regularizer_free(r);
    elle_model_free(m);
    elle_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_and_names),
        cmocka_unit_test(test_apply_errors),
        cmocka_unit_test(test_value_eval),
        cmocka_unit_test(test_estimator_linear_loss),
        cmocka_unit_test(test_estimator_quadratic_loss),
        cmocka_unit_test(test_error_functions),
        cmocka_unit_test(test_value_train_mode),
        cmocka_unit_test(test_gradient_fd),
        cmocka_unit_test(test_gradient_accumulates),
        cmocka_unit_test(test_adaptive_rule),
        cmocka_unit_test(test_adaptive_lag),
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_cpu_vs_reference),
        cmocka_unit_test(test_device_entry),
    };
    return cmocka_run_group_tests_name("regularizers", tests, NULL, NULL);
}
