/*
 * GAT's guided attack (ELLE_ATTACK_GAT, lib/attacks/gat_attack.c):
 *
 * - the start x + eps s (s = +-1 from the Philox stream) and the step, against
 *   a host reconstruction: with gat_weight 0 the step is FGSM from the start,
 *   checked against the public elle_model_input_grad;
 * - the guided cost J = CE_mean + w (1/n) sum_i ||P_i - softmax(f(z))_i||^2 and
 *   its input gradient against central finite differences of J computed on
 *   the host through the public elle_model_forward (directional derivatives
 *   in eval and training mode, every coordinate in eval mode), and the sign
 *   of the attack's step against those differences;
 * - the invariants: inside B[x, eps] and [0, 1] (clamp on), inside the ball
 *   (clamp off), beyond it only with project 0 (the reference's 2 eps);
 * - the model's state: parameter gradients untouched, two train-mode
 *   forwards per perturb, nothing changed in eval mode;
 * - determinism (seed, counter), J(x_adv) > J(x_0) on a fixed eval-mode
 *   model, parameters, names, and the trainer accepting the kind.
 *
 * Each check runs on the reference and the oneDNN backend.
 */
#include <stdint.h>
#include <string.h>

#include "elle_test.h"
#include "attacks/attack_internal.h"
#include "backend/backend.h"
#include "core/rng.h"
#include "nn/model_internal.h"

static const elle_backend backends[] = {ELLE_BACKEND_REFERENCE, ELLE_BACKEND_CPU};
#define N_BACKENDS 2

/* ---- helpers -------------------------------------------------------------------- */

#define TEST_RAND_SEED 0x2545F4914F6CDD1Dull
#include "test_rand.h"

typedef struct spec {
    const char *arch;
    int width, depth, hidden, classes, c, h, w;
} spec;

static const spec cnn_spec = {"small_cnn", 4, 2, 16, 4, 1, 10, 10};
static const spec prn_spec = {"preact_resnet18", 4, 0, 0, 4, 3, 16, 16};

static elle_context *make_ctx(elle_backend kind)
{
    elle_context *ctx = NULL;
    assert_elle_ok(elle_context_create(&ctx, kind, 0));
    return ctx;
}

static elle_model *make_model(elle_context *ctx, const spec *s, uint64_t seed, int64_t max_batch)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, s->arch));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, s->width));
    if (s->depth)
        assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_DEPTH, s->depth));
    if (s->hidden)
        assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, s->hidden));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, s->classes));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_CHANNELS, s->c));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, s->h));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, s->w));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, (double)seed));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    if (max_batch)
        assert_elle_ok(elle_model_reserve(m, max_batch));
    return m;
}

static int64_t image_numel(elle_model *m)
{
    int64_t c, h, w;
    assert_elle_ok(elle_model_input_shape(m, &c, &h, &w));
    return c * h * w;
}

/* Pixels in [0.02, 0.98] except every 7th at 0 or 1, so clamping matters. */
static float *random_images(elle_model *m, int64_t n)
{
    int64_t count = n * image_numel(m);
    float *x = malloc((size_t)count * sizeof *x);
    for (int64_t i = 0; i < count; i++)
        x[i] = i % 7 == 3 ? (float)(frand() < 0.5) : (float)(0.02 + 0.96 * frand());
    return x;
}

static int32_t *random_labels(elle_model *m, int64_t n)
{
    int32_t *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++)
        y[i] = (int32_t)(frand() * (double)elle_model_num_classes(m));
    return y;
}

static elle_attack *make_gat(elle_model *m, double eps)
{
    elle_attack *a = NULL;
    assert_elle_ok(elle_attack_create(&a, m, ELLE_ATTACK_GAT));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, eps));
    return a;
}

static double linf(const float *a, const float *b, int64_t count)
{
    double m = 0;
    for (int64_t i = 0; i < count; i++)
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

static int in_unit_box(const float *x, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        if (!(x[i] >= 0.0f && x[i] <= 1.0f))
            return 0;
    return 1;
}

/* Softmax rows of (n, k) logits, in double. */
static void softmax(const float *z, int64_t n, int64_t k, double *p)
{
    for (int64_t i = 0; i < n; i++) {
        double mx = -INFINITY, s = 0;
        for (int64_t j = 0; j < k; j++)
            mx = fmax(mx, z[i * k + j]);
        for (int64_t j = 0; j < k; j++)
            s += p[i * k + j] = exp(z[i * k + j] - mx);
        for (int64_t j = 0; j < k; j++)
            p[i * k + j] /= s;
    }
}

/* The guided cost at z, given P (n, k): CE_mean + w (1/n) sum ||P - softmax||^2,
 * through the public forward only. */
static double host_cost(elle_model *m, const float *z, const int32_t *y, int64_t n,
                        const double *P, double w)
{
    const int64_t k = elle_model_num_classes(m);
    float *logits = malloc((size_t)(n * k) * sizeof *logits);
    double *q = malloc((size_t)(n * k) * sizeof *q);
    assert_elle_ok(elle_model_forward(m, z, n, logits));
    softmax(logits, n, k, q);
    double ce = 0, dist = 0;
    for (int64_t i = 0; i < n; i++) {
        ce -= log(q[i * k + y[i]]);
        for (int64_t j = 0; j < k; j++)
            dist += (P[i * k + j] - q[i * k + j]) * (P[i * k + j] - q[i * k + j]);
    }
    free(logits);
    free(q);
    return ce / (double)n + w * dist / (double)n;
}

/* P = softmax(f(x)) through the public forward. */
static double *host_clean_probs(elle_model *m, const float *x, int64_t n)
{
    const int64_t k = elle_model_num_classes(m);
    float *logits = malloc((size_t)(n * k) * sizeof *logits);
    double *P = malloc((size_t)(n * k) * sizeof *P);
    assert_elle_ok(elle_model_forward(m, x, n, logits));
    softmax(logits, n, k, P);
    free(logits);
    return P;
}

/* The start the attack must draw: x + r s, s = +1 where the Philox uniform
 * on [-1, 1) at (seed, counter) is >= 0, else -1 (no projection or clamp). */
static float *host_start(const float *x, int64_t count, uint64_t seed, uint64_t counter, float r)
{
    float *v = malloc((size_t)count * sizeof *v);
    elle__rng_uniform_range(seed, counter, 0, count, -1.0f, 1.0f, v);
    for (int64_t i = 0; i < count; i++)
        v[i] = x[i] + r * (v[i] >= 0.0f ? 1.0f : -1.0f);
    return v;
}

/* The library's guided cost and its input gradient at z (host arrays in,
 * host gradient out) through the attack's internal stages. */
static double lib_cost_grad(elle_attack *a, const float *x, const int32_t *y, int64_t n,
                            const float *z, float *grad)
{
    elle__backend *be = elle__model_backend(a->model);
    assert_elle_ok(elle__attack_prepare(a, n, "test"));
    const size_t bytes = (size_t)(n * a->numel) * sizeof(float);
    assert_elle_ok(be->ops->copy_to_device(be, a->x0, x, bytes));
    assert_elle_ok(be->ops->copy_to_device(be, a->adv, z, bytes));
    assert_elle_ok(be->ops->copy_to_device(be, a->labels, y, (size_t)n * sizeof(int32_t)));
    double cost = NAN;
    assert_elle_ok(elle__attack_gat_clean(a, a->labels, n));
    assert_elle_ok(elle__attack_gat_cost(a, a->labels, n, a->adv, &cost));
    assert_elle_ok(be->ops->copy_to_host(be, grad, a->grad, bytes));
    return cost;
}

/* ---- names, parameters, the trainer --------------------------------------------- */

static void test_names_and_params(void **state)
{
    (void)state;
    elle_attack_kind kind;
    assert_int_equal(ELLE_ATTACK_GAT, 10);
    assert_string_equal(elle_attack_kind_name(ELLE_ATTACK_GAT), "gat");
    assert_elle_ok(elle_attack_kind_from_name("gat", &kind));
    assert_int_equal(kind, ELLE_ATTACK_GAT);
    assert_null(elle_attack_kind_name((elle_attack_kind)11));
    assert_elle_status(elle_attack_kind_from_name("gat2", &kind), ELLE_EINVAL);

    elle_attack_param p;
    double lo, hi, v;
    assert_int_equal(ELLE_ATTACK_PARAM_GAT_WEIGHT, 15);
    assert_elle_ok(elle_attack_param_from_name("gat_weight", &p));
    assert_int_equal(p, ELLE_ATTACK_PARAM_GAT_WEIGHT);
    assert_string_equal(elle_attack_param_name(p), "gat_weight");
    assert_elle_ok(elle_attack_param_bounds(p, &lo, &hi));
    assert_true(lo == 0 && hi == 1e6);
    assert_null(elle_attack_param_name((elle_attack_param)16));

    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, &cnn_spec, 1, 4);
    elle_attack *a = make_gat(m, 0.1);
    assert_int_equal(elle_attack_get_kind(a), ELLE_ATTACK_GAT);
    /* defaults: the reference's start, step eps and clamps, plus the projection */
    static const struct {
        elle_attack_param p;
        double v;
    } want[] = {{ELLE_ATTACK_PARAM_RANDOM_START, 1}, {ELLE_ATTACK_PARAM_PROJECT, 1},
                {ELLE_ATTACK_PARAM_CLAMP_IMAGE, 1},  {ELLE_ATTACK_PARAM_NOISE_MULT, 1},
                {ELLE_ATTACK_PARAM_ALPHA, 0},        {ELLE_ATTACK_PARAM_GAT_WEIGHT, 10}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_elle_ok(elle_attack_get_param(a, want[i].p, &v));
        if (v != want[i].v)
            fail_msg("gat default %s = %g, want %g", elle_attack_param_name(want[i].p), v,
                     want[i].v);
    }
    assert_true(elle__attack_alpha(a) == 0.1);
    /* the other kinds keep clamp_image 0 */
    elle_attack *f = NULL;
    assert_elle_ok(elle_attack_create(&f, m, ELLE_ATTACK_FGSM));
    assert_elle_ok(elle_attack_get_param(f, ELLE_ATTACK_PARAM_CLAMP_IMAGE, &v));
    assert_true(v == 0);

    /* invalid weights: EINVAL, the attack unchanged */
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_GAT_WEIGHT, -1), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "gat_weight"));
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_GAT_WEIGHT, NAN), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_GAT_WEIGHT, 2e6), ELLE_EINVAL);
    assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_GAT_WEIGHT, &v));
    assert_true(v == 10);
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_GAT_WEIGHT, 2.5));
    assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_GAT_WEIGHT, &v));
    assert_true(v == 2.5);

    /* boundary errors go through the common entry point */
    float *x = random_images(m, 5);
    int32_t y[5] = {0, 1, 2, 3, 0};
    float *out = malloc((size_t)(5 * image_numel(m)) * sizeof *out);
    assert_elle_status(elle_attack_perturb(a, x, y, 5, out), ELLE_ESHAPE);
    y[1] = 4;
    assert_elle_status(elle_attack_perturb(a, x, y, 4, out), ELLE_EINVAL);
    y[1] = 1;
    x[3] = NAN;
    assert_elle_status(elle_attack_perturb(a, x, y, 4, out), ELLE_EINVAL);
    elle_model *m2 = make_model(ctx, &cnn_spec, 1, 0);
    elle_attack *a2 = make_gat(m2, 0.1);
    assert_elle_status(elle_attack_perturb(a2, x, y, 4, out), ELLE_ESTATE);

    /* the trainer takes GAT as a training attack, still refuses the AutoAttack kinds */
    elle_trainer *t = NULL;
    assert_elle_ok(elle_trainer_create(&t, m));
    assert_elle_ok(elle_trainer_set_attack(t, a));
    assert_ptr_equal(elle_trainer_get_attack(t), a);
    assert_elle_status(elle_trainer_set_attack(t, a2), ELLE_EINVAL); /* another model */
    elle_attack *aa = NULL;
    assert_elle_ok(elle_attack_create(&aa, m, ELLE_ATTACK_APGD_CE));
    assert_elle_status(elle_trainer_set_attack(t, aa), ELLE_EUNSUPPORTED);
    assert_non_null(strstr(elle_error_last()->message, "gat"));
    elle_trainer_free(t);

    elle_attack_free(aa);
    elle_attack_free(a2);
    elle_model_free(m2);
    free(x);
    free(out);
    elle_attack_free(f);
    elle_attack_free(a);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- the ball and the box -------------------------------------------------------- */

static void check_invariants(elle_backend be, const spec *s, int training)
{
    const int64_t n = 6;
    const double eps = 0.05;
    elle_context *ctx = make_ctx(be);
    elle_model *m = make_model(ctx, s, 3, n);
    assert_elle_ok(elle_model_set_training(m, training));
    float *x = random_images(m, n);
    int32_t *y = random_labels(m, n);
    const int64_t count = n * image_numel(m);
    float *xa = malloc((size_t)count * sizeof *xa);
    const char *name = elle_backend_name(be);

    for (int clamp = 0; clamp < 2; clamp++) {
        elle_attack *a = make_gat(m, eps);
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, clamp));
        assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
        double d = linf(xa, x, count);
        if (!(d <= eps + 1e-6))
            fail_msg("%s/%s training=%d clamp=%d: |x_adv - x| = %.9g > eps", name, s->arch,
                     training, clamp, d);
        assert_true(d > 0.5 * eps); /* it moved */
        if (clamp)
            assert_true(in_unit_box(xa, count));
        else
            assert_false(in_unit_box(xa, count)); /* pixels at 0 and 1 are pushed out */
        /* every coordinate is x, or x +- eps (start and step both of size eps) */
        int64_t at_x = 0, at_edge = 0;
        for (int64_t i = 0; i < count; i++) {
            double di = fabs((double)xa[i] - (double)x[i]);
            at_x += di <= 1e-6; /* (x + eps s) - eps rounds to within an ulp of x */
            at_edge += fabs(di - eps) <= 1e-6;
        }
        if (!clamp)
            assert_int_equal(at_x + at_edge, count);
        assert_true(at_x > 0 && at_edge > 0);
        elle_attack_free(a);
    }

    /* without the projection (the reference's point) up to 2 eps, and it gets there */
    elle_attack *a = make_gat(m, eps);
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_PROJECT, 0));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 0));
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    double d = linf(xa, x, count);
    assert_true(d <= 2 * eps + 1e-6);
    assert_true(d > 1.9 * eps);
    elle_attack_free(a);

    free(x);
    free(y);
    free(xa);
    elle_model_free(m);
    elle_context_free(ctx);
}

static void test_ball_and_box(void **state)
{
    (void)state;
    for (int b = 0; b < N_BACKENDS; b++) {
        check_invariants(backends[b], &cnn_spec, 0);
        check_invariants(backends[b], &cnn_spec, 1);
        check_invariants(backends[b], &prn_spec, 1);
    }
}

/* ---- the start and the step, against a host reconstruction ----------------------- */

/* gat_weight 0, no projection or clamp: x_adv = x0 + eps sign(grad CE_mean(x0)),
 * x0 = x + eps s, with the gradient from the public elle_model_input_grad. */
static void check_start_and_step(elle_backend be, const spec *s, int training)
{
    const int64_t n = 5;
    const float eps = 0.03f;
    const uint64_t seed = 77, counter = 5;
    elle_context *ctx = make_ctx(be);
    elle_model *m = make_model(ctx, s, 5, n);
    assert_elle_ok(elle_model_set_training(m, training));
    float *x = random_images(m, n);
    int32_t *y = random_labels(m, n);
    const int64_t count = n * image_numel(m);
    float *xa = malloc((size_t)count * sizeof *xa);
    float *g = malloc((size_t)count * sizeof *g);

    elle_attack *a = make_gat(m, eps);
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_GAT_WEIGHT, 0));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_PROJECT, 0));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 0));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_SEED, (double)seed));
    assert_elle_ok(elle_attack_set_rng_counter(a, counter));
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    uint64_t c;
    assert_elle_ok(elle_attack_get_rng_counter(a, &c));
    assert_int_equal(c, counter + elle__rng_blocks(count));

    float *x0 = host_start(x, count, seed, counter, eps);
    int64_t plus = 0;
    for (int64_t i = 0; i < count; i++)
        plus += x0[i] > x[i];
    /* a fair coin: within 5 standard deviations of count/2 */
    assert_true(fabs((double)plus - count / 2.0) < 5 * sqrt(count / 4.0));
    assert_elle_ok(elle_model_input_grad(m, x0, y, n, g, NULL));
    double gmax = 0;
    for (int64_t i = 0; i < count; i++)
        gmax = fmax(gmax, fabs(g[i]));
    assert_true(gmax > 0);
    int64_t bad = 0;
    for (int64_t i = 0; i < count; i++) {
        float sgn = g[i] > 0 ? 1.0f : g[i] < 0 ? -1.0f : 0.0f;
        float want = x0[i] + eps * sgn;
        /* the attack's gradient comes from host logit gradients in double:
         * a sign may differ only where the gradient is at rounding level */
        if (xa[i] != want && fabs(g[i]) > 1e-5 * gmax)
            fail_msg("%s/%s training=%d: x_adv[%lld] = %.9g, x0 + eps sign(g) = %.9g (g = %g)",
                     elle_backend_name(be), s->arch, training, (long long)i, (double)xa[i],
                     (double)want, (double)g[i]);
        bad += xa[i] != want;
    }
    assert_true(bad <= count / 1000);

    /* random_start 0: the start is x, and no noise is drawn */
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_RANDOM_START, 0));
    assert_elle_ok(elle_attack_set_rng_counter(a, 0));
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    assert_elle_ok(elle_attack_get_rng_counter(a, &c));
    assert_int_equal(c, 0);
    assert_elle_ok(elle_model_input_grad(m, x, y, n, g, NULL));
    for (int64_t i = 0; i < count; i++) {
        float sgn = g[i] > 0 ? 1.0f : g[i] < 0 ? -1.0f : 0.0f;
        if (fabs(g[i]) > 1e-5 * gmax)
            assert_true(xa[i] == x[i] + eps * sgn);
    }

    elle_attack_free(a);
    free(x0);
    free(x);
    free(y);
    free(xa);
    free(g);
    elle_model_free(m);
    elle_context_free(ctx);
}

static void test_start_and_step(void **state)
{
    (void)state;
    for (int b = 0; b < N_BACKENDS; b++) {
        check_start_and_step(backends[b], &cnn_spec, 0);
        check_start_and_step(backends[b], &cnn_spec, 1);
        check_start_and_step(backends[b], &prn_spec, 1);
    }
}

/* ---- the guided cost's gradient against finite differences ----------------------- */

/* Per-sample shares of the two terms at z: ce[i] = CE_i / n, dist[i] =
 * ||P_i - softmax(f(z))_i||^2 / n (public forward). */
static void host_terms(elle_model *m, const float *z, int64_t n, const int32_t *y,
                       const double *P, double *ce, double *dist)
{
    const int64_t k = elle_model_num_classes(m);
    float *logits = malloc((size_t)(n * k) * sizeof *logits);
    double *q = malloc((size_t)(n * k) * sizeof *q);
    assert_elle_ok(elle_model_forward(m, z, n, logits));
    softmax(logits, n, k, q);
    for (int64_t i = 0; i < n; i++) {
        double d = 0;
        for (int64_t c = 0; c < k; c++)
            d += (P[i * k + c] - q[i * k + c]) * (P[i * k + c] - q[i * k + c]);
        ce[i] = -log(q[i * k + y[i]]) / (double)n;
        dist[i] = d / (double)n;
    }
    free(logits);
    free(q);
}

/* Fraction of entries where fd and an agree to atol + 3% |an|. */
static double agreement(const double *fd, const double *an, int64_t n, double atol)
{
    int64_t good = 0;
    for (int64_t i = 0; i < n; i++)
        good += fabs(fd[i] - an[i]) <= atol + 3e-2 * fabs(an[i]);
    return (double)good / (double)n;
}

/* The library's input gradient of J = CE_mean + w D (D the distance term)
 * against Richardson-extrapolated central differences of the host's terms.
 * The CE part comes from a run with gat_weight 0, the distance part is the
 * difference of the two runs, so each is checked on its own. A direction
 * moves coordinate j of every sample at once: in eval mode the samples are
 * independent and each sample's share gives its own derivative; in training
 * mode batch norm couples them and the derivative of the whole sum is
 * compared with the sum over the samples. A ReLU or max-pool kink inside
 * the stencil spoils a few entries (hence the fraction of agreeing ones); a
 * wrong term spoils nearly all. */
static void check_gradient(elle_backend be, const spec *s, int training)
{
    const int64_t n = 4;
    const double w = 50.0, h = 1e-3;
    /* a deep ReLU network, or oneDNN's training-mode batch norm, in float:
     * kinks and rounding inside the stencil spoil more entries than in the
     * small CNN on the reference backend; a wrong term gives errors of
     * order 1 (test_backends_agree holds oneDNN's gradient to the
     * reference's tightly) */
    const int noisy = strcmp(s->arch, "small_cnn") != 0 || (be == ELLE_BACKEND_CPU && training);
    const double min_agree = noisy ? 0.75 : 0.95, max_rel = noisy ? 0.1 : 0.02;
    elle_context *ctx = make_ctx(be);
    elle_model *m = make_model(ctx, s, 9, n);
    assert_elle_ok(elle_model_set_training(m, training));
    float *x = random_images(m, n);
    int32_t *y = random_labels(m, n);
    const int64_t numel = image_numel(m), count = n * numel;
    /* a point where P and softmax(f(z)) differ: another image */
    float *z = random_images(m, n);
    float *gw = malloc((size_t)count * sizeof *gw);
    float *g0 = malloc((size_t)count * sizeof *g0);
    float *zp = malloc((size_t)count * sizeof *zp);
    const char *name = elle_backend_name(be);

    elle_attack *a = make_gat(m, 0.03);
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_GAT_WEIGHT, w));
    const double cost = lib_cost_grad(a, x, y, n, z, gw);
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_GAT_WEIGHT, 0));
    const double cost0 = lib_cost_grad(a, x, y, n, z, g0);
    double *P = host_clean_probs(m, x, n);
    double ce[16], dist[16], J = 0, CE = 0;
    host_terms(m, z, n, y, P, ce, dist);
    for (int64_t i = 0; i < n; i++) {
        CE += ce[i];
        J += ce[i] + w * dist[i];
    }
    if (!(fabs(cost - J) <= 1e-5 * J && fabs(cost0 - CE) <= 1e-5 * CE))
        fail_msg("%s/%s training=%d: library cost %.9g (w = 0: %.9g), host %.9g (%.9g)", name,
                 s->arch, training, cost, cost0, J, CE);

    /* the coordinates: all of small_cnn's, a sample of the resnet's */
    const int64_t picks = numel <= 128 ? numel : 64;
    const int64_t units = training ? 1 : n; /* derivatives per direction */
    double *fd_ce = malloc((size_t)(picks * units) * sizeof(double));
    double *fd_d = malloc((size_t)(picks * units) * sizeof(double));
    double *an_ce = malloc((size_t)(picks * units) * sizeof(double));
    double *an_d = malloc((size_t)(picks * units) * sizeof(double));
    for (int64_t t = 0; t < picks; t++) {
        const int64_t j = numel <= 128 ? t : (int64_t)(frand() * (double)numel);
        double dce[2][16], dd[2][16]; /* central differences at h and h/2 */
        for (int q = 0; q < 2; q++) {
            const double hq = q ? h / 2 : h;
            double cp[16], dp[16], cm[16], dm[16];
            memcpy(zp, z, (size_t)count * sizeof *zp);
            for (int64_t i = 0; i < n; i++)
                zp[i * numel + j] = z[i * numel + j] + (float)hq;
            host_terms(m, zp, n, y, P, cp, dp);
            for (int64_t i = 0; i < n; i++)
                zp[i * numel + j] = z[i * numel + j] - (float)hq;
            host_terms(m, zp, n, y, P, cm, dm);
            /* the step actually taken in float */
            const double step = (double)(z[j] + (float)hq) - (double)(z[j] - (float)hq);
            for (int64_t i = 0; i < n; i++) {
                dce[q][i] = (cp[i] - cm[i]) / step;
                dd[q][i] = (dp[i] - dm[i]) / step;
            }
        }
        for (int64_t u = 0; u < units; u++) {
            double fc = 0, fdd = 0, ac = 0, ad = 0;
            for (int64_t i = 0; i < n; i++) {
                if (!training && i != u)
                    continue;
                fc += (4 * dce[1][i] - dce[0][i]) / 3;
                fdd += (4 * dd[1][i] - dd[0][i]) / 3;
                ac += g0[i * numel + j];
                ad += ((double)gw[i * numel + j] - (double)g0[i * numel + j]) / w;
            }
            fd_ce[t * units + u] = fc;
            fd_d[t * units + u] = fdd;
            an_ce[t * units + u] = ac;
            an_d[t * units + u] = ad;
        }
    }
    const int64_t total = picks * units;
    double rms_ce = 0, rms_d = 0, err_ce = 0, err_d = 0;
    for (int64_t i = 0; i < total; i++) {
        rms_ce += an_ce[i] * an_ce[i];
        rms_d += an_d[i] * an_d[i];
        err_ce += (fd_ce[i] - an_ce[i]) * (fd_ce[i] - an_ce[i]);
        err_d += (fd_d[i] - an_d[i]) * (fd_d[i] - an_d[i]);
    }
    const double agree_ce = agreement(fd_ce, an_ce, total, 2e-2 * sqrt(rms_ce / total));
    const double agree_d = agreement(fd_d, an_d, total, 2e-2 * sqrt(rms_d / total));
    print_message("[ gat      ] %s/%s training=%d: CE part %.0f%% agree (rel. err %.2e), "
                  "distance part %.0f%% agree (rel. err %.2e) of %lld\n",
                  name, s->arch, training, 100 * agree_ce, sqrt(err_ce / rms_ce), 100 * agree_d,
                  sqrt(err_d / rms_d), (long long)total);
    assert_true(rms_d > 0 && rms_ce > 0);
    assert_true(agree_ce >= min_agree && agree_d >= min_agree);
    assert_true(sqrt(err_ce / rms_ce) < max_rel && sqrt(err_d / rms_d) < max_rel);

    free(fd_ce);
    free(fd_d);
    free(an_ce);
    free(an_d);
    elle_attack_free(a);
    free(P);
    free(x);
    free(y);
    free(z);
    free(zp);
    free(gw);
    free(g0);
    elle_model_free(m);
    elle_context_free(ctx);
}

static void test_gradient_fd(void **state)
{
    (void)state;
    for (int b = 0; b < N_BACKENDS; b++) {
        check_gradient(backends[b], &cnn_spec, 0);
        check_gradient(backends[b], &cnn_spec, 1);
    }
    /* the deep ReLU network on oneDNN only (the reference backend is slow) */
    check_gradient(ELLE_BACKEND_CPU, &prn_spec, 1);
}

/* oneDNN's guided-cost gradient against the reference backend's, same model
 * (same seed: identical weights) and batch, both modes. */
static void test_backends_agree(void **state)
{
    (void)state;
    const int64_t n = 4;
    const spec *specs[2] = {&cnn_spec, &prn_spec};
    for (int si = 0; si < 2; si++) {
        for (int training = 0; training < 2; training++) {
            float *g[2] = {NULL, NULL}, *x = NULL, *z = NULL;
            int32_t *y = NULL;
            double cost[2];
            int64_t count = 0;
            for (int b = 0; b < N_BACKENDS; b++) {
                elle_context *ctx = make_ctx(backends[b]);
                elle_model *m = make_model(ctx, specs[si], 31, n);
                assert_elle_ok(elle_model_set_training(m, training));
                count = n * image_numel(m);
                if (!x) {
                    x = random_images(m, n);
                    z = random_images(m, n);
                    y = random_labels(m, n);
                }
                g[b] = malloc((size_t)count * sizeof *g[b]);
                elle_attack *a = make_gat(m, 0.03);
                cost[b] = lib_cost_grad(a, x, y, n, z, g[b]);
                elle_attack_free(a);
                elle_model_free(m);
                elle_context_free(ctx);
            }
            const double nmse = elle_test_nmse(g[1], g[0], (size_t)count);
            print_message("[ gat      ] %s training=%d: cpu vs reference cost %.9g / %.9g, "
                          "gradient nmse %.2e\n",
                          specs[si]->arch, training, cost[1], cost[0], nmse);
            assert_true(fabs(cost[1] - cost[0]) <= 1e-5 * fabs(cost[0]));
            assert_true(nmse < 1e-8);
            free(g[0]);
            free(g[1]);
            free(x);
            free(z);
            free(y);
        }
    }
}

/* The public attack's step has the signs of the finite differences of the
 * host cost at the host-reconstructed start (eval mode, no projection or
 * clamp, so x_adv - x0 = eps sign(grad J(x0))). Checked where J is smooth
 * around x0: the one-sided differences on the two sides agree (a ReLU or
 * max-pool kink at x0 has two different one-sided slopes, and the
 * library's gradient is one of them). */
static void check_step_signs(elle_backend be)
{
    const int64_t n = 4;
    const double h = 1e-3, w = 10.0;
    const float eps = 0.1f; /* large enough that P and softmax(f(x0)) differ */
    elle_context *ctx = make_ctx(be);
    elle_model *m = make_model(ctx, &cnn_spec, 21, n);
    assert_elle_ok(elle_model_set_training(m, 0));
    float *x = random_images(m, n);
    int32_t *y = random_labels(m, n);
    const int64_t numel = image_numel(m), count = n * numel;
    float *xa = malloc((size_t)count * sizeof *xa);
    float *zp = malloc((size_t)count * sizeof *zp);
    double *right = malloc((size_t)count * sizeof *right);
    double *left = malloc((size_t)count * sizeof *left);

    elle_attack *a = make_gat(m, eps);
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_PROJECT, 0));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 0));
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    float *x0 = host_start(x, count, 0, 0, eps);
    double *P = host_clean_probs(m, x, n);

    double c0[16], d0[16], gmax = 0;
    host_terms(m, x0, n, y, P, c0, d0);
    for (int64_t j = 0; j < numel; j++) {
        for (int side = 0; side < 2; side++) {
            double c[16], d[16];
            memcpy(zp, x0, (size_t)count * sizeof *zp);
            for (int64_t i = 0; i < n; i++)
                zp[i * numel + j] += (float)(side ? -h : h);
            host_terms(m, zp, n, y, P, c, d);
            for (int64_t i = 0; i < n; i++) {
                const double dj = (c[i] + w * d[i] - c0[i] - w * d0[i]) / h;
                (side ? left : right)[i * numel + j] = side ? -dj : dj;
            }
        }
    }
    for (int64_t i = 0; i < count; i++)
        gmax = fmax(gmax, fabs(right[i] + left[i]) / 2);
    int64_t checked = 0;
    for (int64_t i = 0; i < count; i++) {
        const double slope = (right[i] + left[i]) / 2;
        if (fabs(slope) < 0.05 * gmax || fabs(right[i] - left[i]) > 0.2 * fabs(slope))
            continue; /* small, or a kink at x0 */
        const float want = x0[i] + eps * (slope > 0 ? 1.0f : -1.0f);
        if (xa[i] != want)
            fail_msg("%s: x_adv[%lld] = %.9g, x0 + eps sign(fd) = %.9g (slopes %g, %g; max %g)",
                     elle_backend_name(be), (long long)i, (double)xa[i], (double)want, left[i],
                     right[i], gmax);
        checked++;
    }
    print_message("[ gat      ] %s: step signs checked on %lld of %lld coordinates\n",
                  elle_backend_name(be), (long long)checked, (long long)count);
    assert_true(checked > count / 4);

    elle_attack_free(a);
    free(P);
    free(x0);
    free(x);
    free(y);
    free(xa);
    free(zp);
    free(right);
    free(left);
    elle_model_free(m);
    elle_context_free(ctx);
}

static void test_step_signs(void **state)
{
    (void)state;
    for (int b = 0; b < N_BACKENDS; b++)
        check_step_signs(backends[b]);
}

/* ---- the model's state ---------------------------------------------------------- */

static int64_t batches_tracked(elle_model *m)
{
    int64_t ns = elle_model_state_count(m);
    for (int64_t i = 0; i < ns; i++) {
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, NULL));
        if (kind == ELLE_STATE_COUNTER) {
            int64_t v;
            assert_elle_ok(elle_model_state_get(m, i, &v));
            return v;
        }
    }
    fail_msg("model has no BatchNorm counter");
    return -1;
}

/* Every parameter gradient concatenated (host copy). */
static float *all_grads(elle_model *m, int64_t *len)
{
    int64_t ns = elle_model_state_count(m), total = 0;
    for (int pass = 0; pass < 2; pass++) {
        float *buf = pass ? malloc((size_t)total * sizeof *buf) : NULL;
        int64_t off = 0;
        for (int64_t i = 0; i < ns; i++) {
            elle_state_kind kind;
            int64_t d[4];
            assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
            if (kind != ELLE_STATE_PARAMETER)
                continue;
            if (pass)
                assert_elle_ok(elle_model_grad_get(m, i, buf + off));
            off += d[0] * d[1] * d[2] * d[3];
        }
        total = off;
        if (pass) {
            *len = total;
            return buf;
        }
    }
    return NULL;
}

static void check_model_state(elle_backend be, const spec *s)
{
    const int64_t n = 4;
    elle_context *ctx = make_ctx(be);
    elle_model *m = make_model(ctx, s, 13, n);
    float *x = random_images(m, n);
    int32_t *y = random_labels(m, n);
    const int64_t count = n * image_numel(m);
    float *xa = malloc((size_t)count * sizeof *xa);
    elle_attack *a = make_gat(m, 0.03);
    int64_t len;

    /* zero before, zero after (training mode, as inside the trainer) */
    assert_elle_ok(elle_model_set_training(m, 1));
    assert_elle_ok(elle_model_zero_grad(m));
    const int64_t t0 = batches_tracked(m);
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    /* two forwards: the clean batch (P) and the start */
    assert_int_equal(batches_tracked(m) - t0, 2);
    float *g = all_grads(m, &len);
    for (int64_t i = 0; i < len; i++)
        if (g[i] != 0.0f)
            fail_msg("%s/%s: parameter gradient %lld = %g after a perturb", elle_backend_name(be),
                     s->arch, (long long)i, (double)g[i]);
    free(g);

    /* an accumulated gradient stays exactly what it was */
    assert_elle_ok(elle_model_backward(m, x, y, n, NULL, NULL));
    float *g1 = all_grads(m, &len);
    double gn = 0;
    for (int64_t i = 0; i < len; i++)
        gn += fabs(g1[i]);
    assert_true(gn > 0);
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    float *g2 = all_grads(m, &len);
    assert_memory_equal(g1, g2, (size_t)len * sizeof *g1);
    free(g1);
    free(g2);

    /* eval mode: nothing in the model changes */
    assert_elle_ok(elle_model_set_training(m, 0));
    const int64_t t1 = batches_tracked(m);
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    assert_int_equal(batches_tracked(m), t1);

    elle_attack_free(a);
    free(x);
    free(y);
    free(xa);
    elle_model_free(m);
    elle_context_free(ctx);
}

static void test_model_state(void **state)
{
    (void)state;
    for (int b = 0; b < N_BACKENDS; b++) {
        check_model_state(backends[b], &cnn_spec);
        check_model_state(backends[b], &prn_spec);
    }
}

/* ---- determinism ---------------------------------------------------------------- */

static void test_determinism(void **state)
{
    (void)state;
    const int64_t n = 4;
    for (int b = 0; b < N_BACKENDS; b++) {
        elle_context *ctx = make_ctx(backends[b]);
        elle_model *m = make_model(ctx, &prn_spec, 17, n);
        float *x = random_images(m, n);
        int32_t *y = random_labels(m, n);
        const int64_t count = n * image_numel(m);
        float *x1 = malloc((size_t)count * sizeof *x1);
        float *x2 = malloc((size_t)count * sizeof *x2);
        for (int training = 0; training < 2; training++) {
            assert_elle_ok(elle_model_set_training(m, training));
            elle_attack *a1 = make_gat(m, 0.03), *a2 = make_gat(m, 0.03);
            assert_elle_ok(elle_attack_set_param(a1, ELLE_ATTACK_PARAM_SEED, 5));
            assert_elle_ok(elle_attack_set_param(a2, ELLE_ATTACK_PARAM_SEED, 5));
            assert_elle_ok(elle_attack_perturb(a1, x, y, n, x1));
            assert_elle_ok(elle_attack_perturb(a2, x, y, n, x2));
            /* same seed: identical (training mode normalises with the batch's
             * statistics, which the running ones do not enter) */
            assert_memory_equal(x1, x2, (size_t)count * sizeof *x1);
            /* the stream moved on: the next batch differs */
            assert_elle_ok(elle_attack_perturb(a2, x, y, n, x2));
            assert_true(memcmp(x1, x2, (size_t)count * sizeof *x1) != 0);
            /* restoring the counter replays it */
            assert_elle_ok(elle_attack_set_rng_counter(a2, 0));
            assert_elle_ok(elle_attack_perturb(a2, x, y, n, x2));
            assert_memory_equal(x1, x2, (size_t)count * sizeof *x1);
            /* another seed, another start */
            assert_elle_ok(elle_attack_set_param(a2, ELLE_ATTACK_PARAM_SEED, 6));
            assert_elle_ok(elle_attack_perturb(a2, x, y, n, x2));
            assert_true(memcmp(x1, x2, (size_t)count * sizeof *x1) != 0);
            /* the host-array and the device entry points agree */
            elle__backend *be = elle__model_backend(m);
            assert_elle_ok(elle_attack_set_param(a2, ELLE_ATTACK_PARAM_SEED, 5));
            assert_elle_ok(elle__attack_prepare(a2, n, "test"));
            float *dx = NULL;
            int32_t *dy = NULL;
            assert_elle_ok(be->ops->alloc(be, (size_t)count * sizeof(float), (void **)&dx));
            assert_elle_ok(be->ops->alloc(be, (size_t)n * sizeof(int32_t), (void **)&dy));
            assert_elle_ok(be->ops->copy_to_device(be, dx, x, (size_t)count * sizeof(float)));
            assert_elle_ok(be->ops->copy_to_device(be, dy, y, (size_t)n * sizeof(int32_t)));
            assert_elle_ok(elle__attack_perturb_dev(a2, dx, dy, n, dx)); /* in place */
            assert_elle_ok(be->ops->copy_to_host(be, x2, dx, (size_t)count * sizeof(float)));
            assert_memory_equal(x1, x2, (size_t)count * sizeof *x1);
            be->ops->free(be, dx);
            be->ops->free(be, dy);
            elle_attack_free(a1);
            elle_attack_free(a2);
        }
        free(x);
        free(y);
        free(x1);
        free(x2);
        elle_model_free(m);
        elle_context_free(ctx);
    }
}

/* ---- the attack raises the guided cost ------------------------------------------ */

static void test_cost_increases(void **state)
{
    (void)state;
    const int64_t n = 8;
    const double eps = 0.03;
    for (int b = 0; b < N_BACKENDS; b++) {
        elle_context *ctx = make_ctx(backends[b]);
        elle_model *m = make_model(ctx, &cnn_spec, 23, n);
        assert_elle_ok(elle_model_set_training(m, 0));
        const int64_t count = n * image_numel(m);
        float *xa = malloc((size_t)count * sizeof *xa);
        elle_attack *a = make_gat(m, eps);
        double gain = 0, gain_away = 0;
        int up = 0;
        const int batches = 6;
        for (int t = 0; t < batches; t++) {
            float *x = random_images(m, n);
            int32_t *y = random_labels(m, n);
            uint64_t c;
            assert_elle_ok(elle_attack_get_rng_counter(a, &c));
            assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
            /* x0 before the step: on the ball's surface, clamped to [0, 1] */
            float *x0 = host_start(x, count, 0, c, (float)eps);
            for (int64_t i = 0; i < count; i++)
                x0[i] = fminf(1.0f, fmaxf(0.0f, x0[i]));
            double *P = host_clean_probs(m, x, n);
            const double j0 = host_cost(m, x0, y, n, P, 10.0);
            const double ja = host_cost(m, xa, y, n, P, 10.0);
            /* the same move the other way lowers it: the direction is real */
            float *xb = malloc((size_t)count * sizeof *xb);
            for (int64_t i = 0; i < count; i++)
                xb[i] = fminf(1.0f, fmaxf(0.0f, x0[i] - (xa[i] - x0[i])));
            const double jb = host_cost(m, xb, y, n, P, 10.0);
            gain += ja - j0;
            gain_away += jb - j0;
            up += ja > j0;
            free(xb);
            free(P);
            free(x0);
            free(x);
            free(y);
        }
        print_message("[ gat      ] %s: mean J(x_adv) - J(x0) = %.3e, reversed step %.3e, "
                      "%d/%d batches up\n",
                      elle_backend_name(backends[b]), gain / batches, gain_away / batches, up,
                      batches);
        assert_true(gain > 0);
        assert_true(gain_away < gain);
        assert_true(up >= batches - 1);
        elle_attack_free(a);
        free(xa);
        elle_model_free(m);
        elle_context_free(ctx);
    }
}

/* ---- evaluate with the kind ----------------------------------------------------- */

static void test_evaluate(void **state)
{
    (void)state;
    const int64_t n = 12;
    elle_context *ctx = make_ctx(ELLE_BACKEND_CPU);
    elle_model *m = make_model(ctx, &cnn_spec, 29, 4);
    assert_elle_ok(elle_model_set_training(m, 0));
    float *x = random_images(m, n);
    int32_t *y = random_labels(m, n);
    elle_dataset *d = NULL;
    assert_elle_ok(elle_dataset_from_host(&d, x, y, n, cnn_spec.c, cnn_spec.h, cnn_spec.w, 4));
    elle_attack *a = make_gat(m, 0.1);
    int64_t clean, robust, total;
    assert_elle_ok(elle_attack_evaluate(a, d, 0, 4, &clean, &robust, &total));
    assert_int_equal(total, n);
    assert_true(robust <= clean);
    assert_int_equal(elle_attack_num_stages(a), 1);
    const char *name;
    assert_elle_ok(elle_attack_stage_result(a, 0, &name, NULL, NULL));
    assert_string_equal(name, "gat");
    elle_attack_free(a);
    elle_dataset_free(d);
    free(x);
    free(y);
    elle_model_free(m);
    elle_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_params), cmocka_unit_test(test_ball_and_box),
        cmocka_unit_test(test_start_and_step),   cmocka_unit_test(test_gradient_fd),
        cmocka_unit_test(test_step_signs),       cmocka_unit_test(test_model_state),
        cmocka_unit_test(test_determinism),      cmocka_unit_test(test_cost_increases),
        cmocka_unit_test(test_evaluate),         cmocka_unit_test(test_backends_agree),
    };
    return cmocka_run_group_tests_name("gat", tests, NULL, NULL);
}
