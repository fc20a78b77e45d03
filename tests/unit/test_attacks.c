/*
 * Attack tests: the invariants every attack must keep (inside the eps-ball,
 * inside [0, 1] with clamp_image, N-FGSM's (k+1) eps bound), FGSM against
 * an independent computation through elle_model_input_grad, the loss and
 * accuracy orderings that hold by construction (restarts never lower a
 * sample's loss, never raise robust accuracy; early stop keeps misclassified
 * samples misclassified), determinism (seed, counter save/restore), the
 * model's state (BatchNorm statistics and parameter gradients), and every
 * error path.
 *
 * Each test runs on the reference and the oneDNN backend. The models are a
 * small_cnn trained a few SGD steps (public API only) on a synthetic
 * separable problem, so clean accuracy is high and attacks have something
 * to break, and a tiny preact_resnet18 at random initialisation.
 *
 * Tolerances: ball membership 1e-6 (x + eps is rounded to float once);
 * points compared across two runs must be bit-identical; losses compared
 * across runs of one model are recomputed by the same forward, so their
 * comparisons are exact up to 1e-6 relative.
 */
#include <stdint.h>
#include <string.h>

#include "elle_test.h"
#include "attacks/attack_internal.h"
#include "backend/backend.h"
#include "nn/model_internal.h"

#define TOL 1e-6

static const elle_backend backends[] = {ELLE_BACKEND_REFERENCE, ELLE_BACKEND_CPU};
#define N_BACKENDS 2

/* ---- helpers -------------------------------------------------------------------- */

#define TEST_RAND_SEED 0x9E3779B97F4A7C15ull
#include "test_rand.h"

typedef struct spec {
    const char *arch;
    int width, depth, hidden, classes, c, h, w;
} spec;

/* 4 classes of 12x12 grey images, and a tiny PreActResNet-18 on 3x16x16 */
static const spec cnn_spec = {"small_cnn", 4, 2, 16, 4, 1, 12, 12};
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

static float *random_images(elle_model *m, int64_t n)
{
    int64_t count = n * image_numel(m);
    float *x = malloc((size_t)count * sizeof *x);
    for (int64_t i = 0; i < count; i++)
        x[i] = (float)frand();
    return x;
}

static int32_t *random_labels(elle_model *m, int64_t n)
{
    int32_t *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++)
        y[i] = (int32_t)(frand() * (double)elle_model_num_classes(m));
    return y;
}

static elle_attack *make_attack(elle_model *m, elle_attack_kind kind, double eps)
{
    elle_attack *a = NULL;
    assert_elle_ok(elle_attack_create(&a, m, kind));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, eps));
    return a;
}

/* Per-sample cross-entropy (double) and correctness at x, via the public forward. */
static void losses(elle_model *m, const float *x, const int32_t *y, int64_t n, double *loss,
                   int *correct)
{
    int64_t k = elle_model_num_classes(m);
    float *z = malloc((size_t)(n * k) * sizeof *z);
    assert_elle_ok(elle_model_forward(m, x, n, z));
    for (int64_t i = 0; i < n; i++) {
        const float *zi = z + i * k;
        int64_t arg = 0;
        double mx = zi[0];
        for (int64_t j = 1; j < k; j++) {
            if (zi[j] > zi[arg])
                arg = j;
            mx = fmax(mx, zi[j]);
        }
        double s = 0;
        for (int64_t j = 0; j < k; j++)
            s += exp(zi[j] - mx);
        if (loss)
            loss[i] = mx + log(s) - zi[y[i]];
        if (correct)
            correct[i] = arg == y[i];
    }
    free(z);
}

static double mean_of(const double *v, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += v[i];
    return s / (double)n;
}

/* max |x_adv - x| over all coordinates */
static double linf(const float *xa, const float *x, int64_t count)
{
    double m = 0;
    for (int64_t i = 0; i < count; i++)
        m = fmax(m, fabs((double)xa[i] - (double)x[i]));
    return m;
}

static int in_unit_box(const float *x, int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        if (!(x[i] >= 0.0f && x[i] <= 1.0f))
            return 0;
    return 1;
}

/* Copy of every BUFFER and COUNTER state entry (BatchNorm statistics). */
typedef struct snapshot {
    size_t bytes;
    unsigned char *data;
} snapshot;

static snapshot take_snapshot(elle_model *m)
{
    snapshot s = {0, NULL};
    int64_t ns = elle_model_state_count(m);
    for (int pass = 0; pass < 2; pass++) {
        size_t off = 0;
        for (int64_t i = 0; i < ns; i++) {
            elle_state_kind kind;
            int64_t d[4];
            assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
            if (kind == ELLE_STATE_PARAMETER)
                continue;
            size_t b = kind == ELLE_STATE_COUNTER ? 8 : (size_t)(d[0] * d[1] * d[2] * d[3]) * 4;
            if (pass == 1)
                assert_elle_ok(elle_model_state_get(m, i, s.data + off));
            off += b;
        }
        if (pass == 0) {
            s.bytes = off;
            s.data = malloc(off ? off : 1);
        }
    }
    return s;
}

/* The first BatchNorm's num_batches_tracked. */
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

/* ---- a trained small_cnn per backend (group fixture) ---------------------------- */

enum { TRAIN_N = 64, TEST_N = 40, MAX_BATCH = 32 };

typedef struct fixture {
    elle_context *ctx;
    elle_model *model; /* small_cnn, trained, left in eval mode */
    float *test_x;     /* TEST_N images */
    int32_t *test_y;
    double clean_acc;
} fixture;

static fixture fixtures[N_BACKENDS];

/* Class c: 0.5 + 0.25 * template_c + 0.15 * noise, clamped to [0, 1]. */
static void synth(const float *templates, int64_t numel, int64_t n, float *x, int32_t *y)
{
    for (int64_t i = 0; i < n; i++) {
        y[i] = (int32_t)(i % 4);
        for (int64_t j = 0; j < numel; j++) {
            double v = 0.5 + 0.25 * templates[y[i] * numel + j] + 0.15 * (2 * frand() - 1);
            x[i * numel + j] = (float)fmin(1.0, fmax(0.0, v));
        }
    }
}

/* Plain SGD through the public API: w -= lr * grad for every parameter. */
static void sgd_steps(elle_model *m, const float *x, const int32_t *y, int64_t n, int steps,
                      float lr)
{
    int64_t ns = elle_model_state_count(m);
    for (int t = 0; t < steps; t++) {
        assert_elle_ok(elle_model_zero_grad(m));
        assert_elle_ok(elle_model_backward(m, x, y, n, NULL, NULL));
        for (int64_t i = 0; i < ns; i++) {
            elle_state_kind kind;
            int64_t d[4];
            assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
            if (kind != ELLE_STATE_PARAMETER)
                continue;
            int64_t numel = d[0] * d[1] * d[2] * d[3];
            float *w = malloc((size_t)numel * sizeof *w);
            float *g = malloc((size_t)numel * sizeof *g);
            assert_elle_ok(elle_model_state_get(m, i, w));
            assert_elle_ok(elle_model_grad_get(m, i, g));
            for (int64_t j = 0; j < numel; j++)
                w[j] -= lr * g[j];
            assert_elle_ok(elle_model_state_set(m, i, w));
            free(w);
            free(g);
        }
    }
}

static int group_setup(void **state)
{
    (void)state;
    const int64_t numel = cnn_spec.c * cnn_spec.h * cnn_spec.w;
    float *templates = malloc((size_t)(4 * numel) * sizeof *templates);
    for (int64_t j = 0; j < 4 * numel; j++)
        templates[j] = frand() < 0.5 ? -1.0f : 1.0f;
    float *train_x = malloc((size_t)(TRAIN_N * numel) * sizeof *train_x);
    int32_t train_y[TRAIN_N];
    synth(templates, numel, TRAIN_N, train_x, train_y);
    float *test_x = malloc((size_t)(TEST_N * numel) * sizeof *test_x);
    int32_t *test_y = malloc(TEST_N * sizeof *test_y);
    synth(templates, numel, TEST_N, test_x, test_y);

    for (int b = 0; b < N_BACKENDS; b++) {
        fixture *f = &fixtures[b];
        f->ctx = make_ctx(backends[b]);
        f->model = make_model(f->ctx, &cnn_spec, 11, MAX_BATCH);
        assert_elle_ok(elle_model_set_training(f->model, 1));
        /* two half batches of 32, 15 passes */
        for (int e = 0; e < 15; e++)
            for (int h = 0; h < 2; h++)
                sgd_steps(f->model, train_x + h * 32 * numel, train_y + h * 32, 32, 1, 0.05f);
        assert_elle_ok(elle_model_set_training(f->model, 0));
        f->test_x = malloc((size_t)(TEST_N * numel) * sizeof *f->test_x);
        memcpy(f->test_x, test_x, (size_t)(TEST_N * numel) * sizeof *f->test_x);
        f->test_y = malloc(TEST_N * sizeof *f->test_y);
        memcpy(f->test_y, test_y, TEST_N * sizeof *f->test_y);
        int correct[TEST_N];
        losses(f->model, f->test_x, f->test_y, 32, NULL, correct);
        losses(f->model, f->test_x + 32 * numel, f->test_y + 32, TEST_N - 32, NULL, correct + 32);
        int c = 0;
        for (int i = 0; i < TEST_N; i++)
            c += correct[i];
        f->clean_acc = (double)c / TEST_N;
        print_message("[ fixture  ] %s: small_cnn clean accuracy after training %.3f\n",
                      elle_backend_name(backends[b]), f->clean_acc);
    }
    free(templates);
    free(train_x);
    free(test_x);
    free(test_y);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int b = 0; b < N_BACKENDS; b++) {
        elle_model_free(fixtures[b].model);
        elle_context_free(fixtures[b].ctx);
        free(fixtures[b].test_x);
        free(fixtures[b].test_y);
    }
    return 0;
}

/* ---- names, parameters, bounds -------------------------------------------------- */

static void test_names_and_params(void **state)
{
    (void)state;
    static const char *const kinds[] = {"fgsm", "rs-fgsm", "n-fgsm", "pgd"};
    for (int k = 0; k < 4; k++) {
        elle_attack_kind kind;
        assert_string_equal(elle_attack_kind_name((elle_attack_kind)k), kinds[k]);
        assert_elle_ok(elle_attack_kind_from_name(kinds[k], &kind));
        assert_int_equal(kind, k);
    }
    elle_attack_kind kind;
    assert_elle_ok(elle_attack_kind_from_name("n_fgsm", &kind));
    assert_int_equal(kind, ELLE_ATTACK_N_FGSM);
    assert_null(elle_attack_kind_name((elle_attack_kind)11));
    assert_null(elle_attack_kind_name((elle_attack_kind)-1));
    assert_elle_status(elle_attack_kind_from_name("pgd-10", &kind), ELLE_EINVAL);
    assert_elle_status(elle_attack_kind_from_name(NULL, &kind), ELLE_EINVAL);

    static const char *const names[] = {"eps",        "alpha",        "steps",   "restarts",
                                        "noise_mult", "random_start", "project", "clamp_image",
                                        "early_stop", "seed"};
    for (int p = 1; p <= 10; p++) {
        elle_attack_param param;
        double lo, hi;
        assert_string_equal(elle_attack_param_name((elle_attack_param)p), names[p - 1]);
        assert_elle_ok(elle_attack_param_from_name(names[p - 1], &param));
        assert_int_equal(param, p);
        assert_elle_ok(elle_attack_param_bounds((elle_attack_param)p, &lo, &hi));
        assert_true(lo <= hi);
    }
    double lo, hi;
    assert_elle_ok(elle_attack_param_bounds(ELLE_ATTACK_PARAM_STEPS, &lo, &hi));
    assert_true(lo == 1);
    assert_elle_ok(elle_attack_param_bounds(ELLE_ATTACK_PARAM_EPS, &lo, &hi));
    assert_true(lo == 0 && hi == 1);
    elle_attack_param param;
    assert_null(elle_attack_param_name((elle_attack_param)0));
    assert_null(elle_attack_param_name((elle_attack_param)16));
    assert_elle_status(elle_attack_param_from_name("epsilon", &param), ELLE_EINVAL);
    assert_elle_status(elle_attack_param_bounds((elle_attack_param)99, &lo, &hi), ELLE_EINVAL);

    /* per-kind defaults */
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, &cnn_spec, 1, 0);
    static const double want[4][4] = {
        /* random_start, project, noise_mult, alpha */
        {0, 0, 1, 0}, {1, 1, 1, 0}, {1, 0, 2, 0}, {1, 1, 1, 0}};
    for (int k = 0; k < 4; k++) {
        elle_attack *a = NULL;
        double v;
        assert_elle_ok(elle_attack_create(&a, m, (elle_attack_kind)k));
        assert_int_equal(elle_attack_get_kind(a), k);
        assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_RANDOM_START, &v));
        assert_true(v == want[k][0]);
        assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_PROJECT, &v));
        assert_true(v == want[k][1]);
        assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_NOISE_MULT, &v));
        assert_true(v == want[k][2]);
        assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_ALPHA, &v));
        assert_true(v == want[k][3]);
        assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_EPS, &v));
        assert_true(fabs(v - 8.0 / 255) < 1e-15);
        assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, &v));
        assert_true(v == 0);
        elle_attack_free(a);
    }
    /* the kind's step size when alpha is 0 */
    static const double alpha_over_eps[4] = {1.0, 1.25, 1.0, 0.25};
    for (int k = 0; k < 4; k++) {
        elle_attack *a = make_attack(m, (elle_attack_kind)k, 0.1);
        assert_true(fabs(elle__attack_alpha(a) - 0.1 * alpha_over_eps[k]) < 1e-15);
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_ALPHA, 0.02));
        assert_true(elle__attack_alpha(a) == 0.02);
        elle_attack_free(a);
    }

    /* invalid values: EINVAL with a message, the attack unchanged */
    elle_attack *a = make_attack(m, ELLE_ATTACK_PGD, 0.1);
    double v;
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, -0.01), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "eps"));
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, NAN), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, 1.5), ELLE_EINVAL);
    assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_EPS, &v));
    assert_true(v == 0.1);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 0), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "steps"));
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 2.5), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_RESTARTS, 0), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 2), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_ALPHA, -1), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_SEED, -1), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, (elle_attack_param)0, 1), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, (elle_attack_param)42, 1), ELLE_EINVAL);
    assert_elle_status(elle_attack_get_param(a, (elle_attack_param)42, &v), ELLE_EINVAL);
    assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_STEPS, &v));
    assert_true(v == 10);
    assert_elle_status(elle_attack_set_param(NULL, ELLE_ATTACK_PARAM_EPS, 0.1), ELLE_EINVAL);
    assert_elle_status(elle_attack_get_param(a, ELLE_ATTACK_PARAM_EPS, NULL), ELLE_EINVAL);

    /* creation */
    elle_attack *b = (elle_attack *)&v;
    assert_elle_status(elle_attack_create(&b, m, (elle_attack_kind)11), ELLE_EINVAL);
    assert_ptr_equal(b, (elle_attack *)&v); /* *out untouched on failure */
    assert_elle_status(elle_attack_create(&b, NULL, ELLE_ATTACK_FGSM), ELLE_EINVAL);
    assert_elle_status(elle_attack_create(NULL, m, ELLE_ATTACK_FGSM), ELLE_EINVAL);
    assert_int_equal(elle_attack_get_kind(NULL), -1);
    assert_int_equal(elle_attack_memory_size(NULL), 0);
    elle_attack_free(NULL);

    /* the seed restarts the stream */
    uint64_t c;
    assert_elle_ok(elle_attack_set_rng_counter(a, 77));
    assert_elle_ok(elle_attack_get_rng_counter(a, &c));
    assert_int_equal(c, 77);
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_SEED, 5));
    assert_elle_ok(elle_attack_get_rng_counter(a, &c));
    assert_int_equal(c, 0);
    assert_elle_status(elle_attack_get_rng_counter(a, NULL), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_rng_counter(NULL, 1), ELLE_EINVAL);

    elle_attack_free(a);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- errors at the boundary ----------------------------------------------------- */

static void test_errors(void **state)
{
    (void)state;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, &cnn_spec, 1, 0); /* not reserved yet */
    elle_attack *a = make_attack(m, ELLE_ATTACK_PGD, 0.1);
    float *x = random_images(m, 5);
    int32_t y[5] = {0, 1, 2, 3, 0};
    const int64_t count = 5 * image_numel(m);
    float *out = malloc((size_t)count * sizeof *out);

    assert_elle_status(elle_attack_perturb(a, x, y, 4, out), ELLE_ESTATE);
    assert_non_null(strstr(elle_error_last()->message, "elle_model_reserve"));
    assert_int_equal(elle_attack_memory_size(a), sizeof(elle_attack));
    assert_elle_ok(elle_model_reserve(m, 4));
    assert_elle_status(elle_attack_perturb(a, x, y, 5, out), ELLE_ESHAPE);
    assert_elle_status(elle_attack_perturb(a, x, y, 0, out), ELLE_EINVAL);
    assert_elle_status(elle_attack_perturb(a, x, y, -1, out), ELLE_EINVAL);
    assert_elle_status(elle_attack_perturb(NULL, x, y, 4, out), ELLE_EINVAL);
    assert_elle_status(elle_attack_perturb(a, NULL, y, 4, out), ELLE_EINVAL);
    assert_elle_status(elle_attack_perturb(a, x, NULL, 4, out), ELLE_EINVAL);
    assert_elle_status(elle_attack_perturb(a, x, y, 4, NULL), ELLE_EINVAL);
    y[2] = 4; /* 4 classes */
    assert_elle_status(elle_attack_perturb(a, x, y, 4, out), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "y[2]"));
    y[2] = -1;
    assert_elle_status(elle_attack_perturb(a, x, y, 4, out), ELLE_EINVAL);
    y[2] = 2;
    x[7] = NAN;
    assert_elle_status(elle_attack_perturb(a, x, y, 4, out), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "not finite"));
    x[7] = INFINITY;
    assert_elle_status(elle_attack_perturb(a, x, y, 4, out), ELLE_EINVAL);
    x[7] = 0.5f;
    assert_elle_ok(elle_attack_perturb(a, x, y, 4, out));

    /* evaluate */
    elle_dataset *d = NULL, *d3 = NULL;
    assert_elle_ok(elle_dataset_from_host(&d, x, y, 5, 1, 12, 12, 4));
    float *x3 = calloc((size_t)(2 * 3 * 12 * 12), sizeof *x3);
    assert_elle_ok(elle_dataset_from_host(&d3, x3, y, 2, 3, 12, 12, 4));
    int64_t c, r, t;
    assert_elle_status(elle_attack_evaluate(a, d, 0, 5, &c, &r, &t), ELLE_ESHAPE);
    assert_elle_status(elle_attack_evaluate(a, d3, 0, 2, &c, &r, &t), ELLE_ESHAPE);
    assert_elle_status(elle_attack_evaluate(a, d, -1, 2, &c, &r, &t), ELLE_EINVAL);
    assert_elle_status(elle_attack_evaluate(a, d, 0, 0, &c, &r, &t), ELLE_EINVAL);
    assert_elle_status(elle_attack_evaluate(NULL, d, 0, 2, &c, &r, &t), ELLE_EINVAL);
    assert_elle_status(elle_attack_evaluate(a, NULL, 0, 2, &c, &r, &t), ELLE_EINVAL);
    assert_elle_ok(elle_attack_evaluate(a, d, 3, 2, &c, &r, &t));
    assert_int_equal(t, 3);
    assert_elle_ok(elle_attack_evaluate(a, d, 100, 4, NULL, NULL, &t));
    assert_int_equal(t, 5);
    /* a dataset with more classes than the model */
    elle_dataset *d10 = NULL;
    int32_t y10[2] = {1, 9};
    assert_elle_ok(elle_dataset_from_host(&d10, x, y10, 2, 1, 12, 12, 10));
    assert_elle_status(elle_attack_evaluate(a, d10, 0, 2, &c, &r, &t), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "label 9"));

    /* an un-reserved model: ELLE_ESTATE from evaluate too */
    elle_model *m2 = make_model(ctx, &cnn_spec, 1, 0);
    elle_attack *a2 = make_attack(m2, ELLE_ATTACK_FGSM, 0.1);
    assert_elle_status(elle_attack_evaluate(a2, d, 0, 2, &c, &r, &t), ELLE_ESTATE);
    elle_attack_free(a2);
    elle_model_free(m2);

    elle_dataset_free(d);
    elle_dataset_free(d3);
    elle_dataset_free(d10);
    free(x3);
    free(x);
    free(out);
    elle_attack_free(a);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- the ball, the box, N-FGSM's bound ------------------------------------------ */

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

    for (int k = 0; k < 4; k++) {
        for (int clamp = 0; clamp < 2; clamp++) {
            elle_attack *a = make_attack(m, (elle_attack_kind)k, eps);
            assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 3));
            assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, clamp));
            if (k == ELLE_ATTACK_PGD)
                assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_ALPHA, 0.03));
            assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
            double d = linf(xa, x, count);
            if (k == ELLE_ATTACK_N_FGSM) {
                /* noise k eps plus one step of eps, no projection: (k + 1) eps */
                if (!(d <= 3 * eps + TOL))
                    fail_msg("%s n-fgsm clamp=%d: |x_adv - x| = %.9g > 3 eps", s->arch, clamp, d);
                /* and the noise does leave the eps-ball (no projection happens) */
                assert_true(d > 1.5 * eps);
            } else {
                if (!(d <= eps + TOL))
                    fail_msg("%s %s clamp=%d: |x_adv - x| = %.9g > eps = %g", s->arch,
                             elle_attack_kind_name((elle_attack_kind)k), clamp, d, eps);
                assert_true(d > 0.5 * eps); /* it moved */
            }
            if (clamp)
                assert_true(in_unit_box(xa, count));
            else if (k == ELLE_ATTACK_FGSM || k == ELLE_ATTACK_N_FGSM)
                assert_false(in_unit_box(xa, count)); /* the reference does not clamp */
            elle_attack_free(a);
        }
    }

    /* N-FGSM with k = 3: the bound moves to 4 eps */
    elle_attack *a = make_attack(m, ELLE_ATTACK_N_FGSM, eps);
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_NOISE_MULT, 3));
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    double d = linf(xa, x, count);
    assert_true(d <= 4 * eps + TOL);
    assert_true(d > 3 * eps);
    elle_attack_free(a);

    /* PGD with projection off and a big step leaves the ball: the projection is real */
    a = make_attack(m, ELLE_ATTACK_PGD, eps);
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_PROJECT, 0));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 3));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_ALPHA, eps));
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    assert_true(linf(xa, x, count) > eps + 1e-3);
    elle_attack_free(a);

    /* x_adv may be x itself */
    a = make_attack(m, ELLE_ATTACK_RS_FGSM, eps);
    float *x2 = malloc((size_t)count * sizeof *x2);
    memcpy(x2, x, (size_t)count * sizeof *x2);
    uint64_t c0;
    assert_elle_ok(elle_attack_get_rng_counter(a, &c0));
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    assert_elle_ok(elle_attack_set_rng_counter(a, c0));
    assert_elle_ok(elle_attack_perturb(a, x2, y, n, x2));
    if (!training)
        assert_memory_equal(x2, xa, (size_t)count * sizeof *x2);
    assert_true(linf(x2, x, count) <= eps + TOL);
    elle_attack_free(a);

    free(x2);
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

/* ---- FGSM against elle_model_input_grad ----------------------------------------- */

static void check_fgsm_matches(elle_backend be, const spec *s, int training)
{
    const int64_t n = 5;
    const float eps = 0.03f;
    elle_context *ctx = make_ctx(be);
    elle_model *m = make_model(ctx, s, 5, n);
    assert_elle_ok(elle_model_set_training(m, training));
    float *x = random_images(m, n);
    int32_t *y = random_labels(m, n);
    const int64_t count = n * image_numel(m);
    float *g = malloc((size_t)count * sizeof *g);
    float *xa = malloc((size_t)count * sizeof *xa);
    assert_elle_ok(elle_model_input_grad(m, x, y, n, g, NULL));
    elle_attack *a = make_attack(m, ELLE_ATTACK_FGSM, eps);
    assert_elle_ok(elle_attack_perturb(a, x, y, n, xa));
    int64_t zero = 0;
    for (int64_t i = 0; i < count; i++) {
        float sgn = g[i] > 0 ? 1.0f : g[i] < 0 ? -1.0f : 0.0f;
        float want = x[i] + eps * sgn;
        zero += g[i] == 0.0f;
        if (!(fabs((double)xa[i] - (double)want) <= 1e-7))
            fail_msg("%s/%s training=%d: x_adv[%lld] = %.9g, x + eps sign(g) = %.9g (g = %g)",
                     elle_backend_name(be), s->arch, training, (long long)i, (double)xa[i],
                     (double)want, (double)g[i]);
    }
    assert_true(zero < count / 2); /* the gradient is not degenerate */
    /* FGSM starts at x and draws no noise */
    uint64_t c;
    assert_elle_ok(elle_attack_get_rng_counter(a, &c));
    assert_int_equal(c, 0);
    elle_attack_free(a);
    free(x);
    free(y);
    free(g);
    free(xa);
    elle_model_free(m);
    elle_context_free(ctx);
}

static void test_fgsm_is_signed_gradient(void **state)
{
    (void)state;
    for (int b = 0; b < N_BACKENDS; b++) {
        check_fgsm_matches(backends[b], &cnn_spec, 0);
        check_fgsm_matches(backends[b], &cnn_spec, 1);
        check_fgsm_matches(backends[b], &prn_spec, 1);
    }
}

/* ---- losses: PGD against FGSM, restarts against one ----------------------------- */

static void test_pgd_loss(void **state)
{
    (void)state;
    const double eps = 0.03;
    for (int b = 0; b < N_BACKENDS; b++) {
        fixture *f = &fixtures[b];
        elle_model *m = f->model; /* eval mode */
        const int64_t n = MAX_BATCH, count = n * image_numel(m);
        float *xa = malloc((size_t)count * sizeof *xa);
        double lf[MAX_BATCH], lp[MAX_BATCH], lr[MAX_BATCH], l0[MAX_BATCH];

        losses(m, f->test_x, f->test_y, n, l0, NULL);
        elle_attack *fg = make_attack(m, ELLE_ATTACK_FGSM, eps);
        assert_elle_ok(elle_attack_perturb(fg, f->test_x, f->test_y, n, xa));
        losses(m, xa, f->test_y, n, lf, NULL);

        elle_attack *pgd = make_attack(m, ELLE_ATTACK_PGD, eps);
        assert_elle_ok(elle_attack_set_param(pgd, ELLE_ATTACK_PARAM_STEPS, 10));
        assert_elle_ok(elle_attack_perturb(pgd, f->test_x, f->test_y, n, xa));
        losses(m, xa, f->test_y, n, lp, NULL);

        assert_elle_ok(elle_attack_set_rng_counter(pgd, 0));
        assert_elle_ok(elle_attack_set_param(pgd, ELLE_ATTACK_PARAM_RESTARTS, 4));
        assert_elle_ok(elle_attack_perturb(pgd, f->test_x, f->test_y, n, xa));
        assert_true(linf(xa, f->test_x, count) <= eps + TOL);
        losses(m, xa, f->test_y, n, lr, NULL);
        print_message("[ losses   ] %s: clean %.4f fgsm %.4f pgd-10 %.4f pgd-10-4 %.4f\n",
                      elle_backend_name(backends[b]), mean_of(l0, n), mean_of(lf, n),
                      mean_of(lp, n), mean_of(lr, n));

        /* both attacks raise the loss; more steps do not lower it */
        assert_true(mean_of(lf, n) > mean_of(l0, n));
        assert_true(mean_of(lp, n) >= mean_of(lf, n));
        /* per sample, the kept restart's loss is at least the first restart's
         * (restart 1 of 4 is the one-restart run: same seed and counter) */
        for (int64_t i = 0; i < n; i++)
            if (!(lr[i] >= lp[i] - 1e-6 * fabs(lp[i])))
                fail_msg("%s sample %lld: 4 restarts give loss %.9g < 1 restart %.9g",
                         elle_backend_name(backends[b]), (long long)i, lr[i], lp[i]);
        elle_attack_free(fg);
        elle_attack_free(pgd);
        free(xa);
    }
}

/* ---- robust accuracy: restarts, clean, early stop, counting --------------------- */

static void eval_counts(elle_attack *a, elle_dataset *d, int64_t batch, int64_t *clean,
                        int64_t *robust)
{
    int64_t t = 0;
    assert_elle_ok(elle_attack_set_rng_counter(a, 0));
    assert_elle_ok(elle_attack_evaluate(a, d, 0, batch, clean, robust, &t));
    assert_int_equal(t, TEST_N);
}

static void test_evaluate(void **state)
{
    (void)state;
    for (int b = 0; b < N_BACKENDS; b++) {
        fixture *f = &fixtures[b];
        elle_model *m = f->model;
        const int64_t numel = image_numel(m);
        elle_dataset *d = NULL;
        assert_elle_ok(elle_dataset_from_host(&d, f->test_x, f->test_y, TEST_N, cnn_spec.c,
                                              cnn_spec.h, cnn_spec.w, 4));
        snapshot before = take_snapshot(m);

        /* clean counts match the public forward; 40 = 16 + 16 + 8 */
        elle_attack *a = make_attack(m, ELLE_ATTACK_PGD, 0.08);
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 1));
        int64_t clean, r1, r4, r4e, r1e;
        eval_counts(a, d, 16, &clean, &r1);
        assert_int_equal(clean, (int64_t)lround(f->clean_acc * TEST_N));
        assert_true(clean >= TEST_N * 3 / 4); /* the fixture learnt its problem */

        /* the one-restart count equals classifying the points perturb returns */
        float *xa = malloc((size_t)(TEST_N * numel) * sizeof *xa);
        int ok_clean[TEST_N], ok_adv[TEST_N];
        assert_elle_ok(elle_attack_set_rng_counter(a, 0));
        for (int64_t s0 = 0; s0 < TEST_N; s0 += 16) {
            int64_t nb = TEST_N - s0 < 16 ? TEST_N - s0 : 16;
            assert_elle_ok(elle_attack_perturb(a, f->test_x + s0 * numel, f->test_y + s0, nb,
                                               xa + s0 * numel));
            losses(m, f->test_x + s0 * numel, f->test_y + s0, nb, NULL, ok_clean + s0);
            losses(m, xa + s0 * numel, f->test_y + s0, nb, NULL, ok_adv + s0);
        }
        int64_t r1_direct = 0;
        for (int i = 0; i < TEST_N; i++)
            r1_direct += ok_clean[i] && ok_adv[i];
        assert_int_equal(r1, r1_direct);

        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_RESTARTS, 4));
        eval_counts(a, d, 16, NULL, &r4);
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EARLY_STOP, 1));
        eval_counts(a, d, 16, NULL, &r4e);
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_RESTARTS, 1));
        eval_counts(a, d, 16, NULL, &r1e);
        print_message("[ accuracy ] %s: clean %lld pgd-10-1 %lld pgd-10-4 %lld early stop: "
                      "pgd-10-4 %lld pgd-10-1 %lld (of %d)\n",
                      elle_backend_name(backends[b]), (long long)clean, (long long)r1,
                      (long long)r4, (long long)r4e, (long long)r1e, TEST_N);
        assert_true(r1 < clean); /* the attack breaks something */
        assert_true(r4 <= r1);
        assert_true(r1 <= clean);
        assert_true(r4e <= r4);
        assert_true(r1e <= r1);
        assert_true(r4e <= r1e);

        /* FGSM: robust <= clean; the batch size does not change the counts in eval mode */
        elle_attack *fg = make_attack(m, ELLE_ATTACK_FGSM, 0.08);
        int64_t fc, fr, fc2, fr2;
        eval_counts(fg, d, 16, &fc, &fr);
        eval_counts(fg, d, 7, &fc2, &fr2);
        assert_int_equal(fc, clean);
        assert_true(fr <= fc);
        assert_int_equal(fc2, fc);
        assert_int_equal(fr2, fr);

        /* eval mode: the BatchNorm statistics did not move */
        snapshot after = take_snapshot(m);
        assert_int_equal(after.bytes, before.bytes);
        assert_memory_equal(after.data, before.data, before.bytes);
        free(after.data);
        free(before.data);
        elle_attack_free(fg);
        elle_attack_free(a);
        elle_dataset_free(d);
        free(xa);
    }
}

/* Early stop, checked against the trajectory itself: in eval mode PGD-s is
 * the first s steps of PGD-K (same seed and counter), so running s = 1..K
 * without early stop shows every iterate. A sample misclassified at any of
 * them must be misclassified at the early-stop result. The step alpha = eps
 * makes iterates jump between faces of the ball, so some samples are
 * misclassified on the way but not at the end (the test is not vacuous). */
static void test_early_stop(void **state)
{
    (void)state;
    const double eps = 0.05;
    enum { K = 10 };
    for (int b = 0; b < N_BACKENDS; b++) {
        fixture *f = &fixtures[b];
        elle_model *m = f->model; /* eval mode */
        const int64_t n = MAX_BATCH, count = n * image_numel(m);
        float *p = malloc((size_t)count * sizeof *p);
        int ok[MAX_BATCH], ok_final[MAX_BATCH], ok_q1[MAX_BATCH], ok_q3[MAX_BATCH];
        unsigned char ever[MAX_BATCH] = {0};
        elle_attack *a = make_attack(m, ELLE_ATTACK_PGD, eps);
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_ALPHA, eps));

        for (int s = 1; s <= K; s++) {
            assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, s));
            assert_elle_ok(elle_attack_set_rng_counter(a, 0));
            assert_elle_ok(elle_attack_perturb(a, f->test_x, f->test_y, n, p));
            losses(m, p, f->test_y, n, NULL, ok);
            for (int64_t i = 0; i < n; i++)
                ever[i] |= !ok[i];
        }
        memcpy(ok_final, ok, sizeof ok);

        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EARLY_STOP, 1));
        assert_elle_ok(elle_attack_set_rng_counter(a, 0));
        assert_elle_ok(elle_attack_perturb(a, f->test_x, f->test_y, n, p));
        assert_true(linf(p, f->test_x, count) <= eps + TOL);
        losses(m, p, f->test_y, n, NULL, ok_q1);
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_RESTARTS, 3));
        assert_elle_ok(elle_attack_set_rng_counter(a, 0));
        assert_elle_ok(elle_attack_perturb(a, f->test_x, f->test_y, n, p));
        assert_true(linf(p, f->test_x, count) <= eps + TOL);
        losses(m, p, f->test_y, n, NULL, ok_q3);

        int n_ever = 0, n_final = 0, n_q1 = 0, n_q3 = 0;
        for (int64_t i = 0; i < n; i++) {
            n_ever += ever[i];
            n_final += !ok_final[i];
            n_q1 += !ok_q1[i];
            n_q3 += !ok_q3[i];
            if (ever[i] && ok_q1[i])
                fail_msg("%s: sample %lld misclassified at an iterate, correct at the early-stop "
                         "result",
                         elle_backend_name(backends[b]), (long long)i);
            /* restart 1 of 3 is the one-restart run: what it found is kept */
            if (!ok_q1[i] && ok_q3[i])
                fail_msg("%s: sample %lld misclassified with 1 restart, correct with 3",
                         elle_backend_name(backends[b]), (long long)i);
        }
        print_message("[ early    ] %s: misclassified at the final iterate %d, at some iterate "
                      "%d, early stop R=1 %d, R=3 %d (of %d)\n",
                      elle_backend_name(backends[b]), n_final, n_ever, n_q1, n_q3, MAX_BATCH);
        assert_true(n_ever > n_final); /* some iterates do come back */
        assert_true(n_q1 >= n_ever);
        elle_attack_free(a);
        free(p);
    }
}

/* ---- determinism ---------------------------------------------------------------- */

static void test_determinism(void **state)
{
    (void)state;
    for (int b = 0; b < N_BACKENDS; b++) {
        for (int k = ELLE_ATTACK_RS_FGSM; k <= ELLE_ATTACK_PGD; k++) {
            elle_context *ctx = make_ctx(backends[b]);
            const int64_t n = 4;
            elle_model *m = make_model(ctx, &cnn_spec, 9, n);
            assert_elle_ok(elle_model_set_training(m, 0));
            float *x = random_images(m, n);
            int32_t *y = random_labels(m, n);
            const int64_t numel = image_numel(m), count = n * numel;
            float *p1 = malloc((size_t)count * sizeof *p1);
            float *p2 = malloc((size_t)count * sizeof *p2);
            float *p3 = malloc((size_t)count * sizeof *p3);
            elle_attack *a1 = make_attack(m, (elle_attack_kind)k, 0.05);
            elle_attack *a2 = make_attack(m, (elle_attack_kind)k, 0.05);
            assert_elle_ok(elle_attack_set_param(a1, ELLE_ATTACK_PARAM_SEED, 1234));
            assert_elle_ok(elle_attack_set_param(a2, ELLE_ATTACK_PARAM_SEED, 1234));
            assert_elle_ok(elle_attack_set_param(a1, ELLE_ATTACK_PARAM_RESTARTS, 2));
            assert_elle_ok(elle_attack_set_param(a2, ELLE_ATTACK_PARAM_RESTARTS, 2));
            assert_elle_ok(elle_attack_set_param(a1, ELLE_ATTACK_PARAM_STEPS, 3));
            assert_elle_ok(elle_attack_set_param(a2, ELLE_ATTACK_PARAM_STEPS, 3));

            /* same seed: identical points */
            assert_elle_ok(elle_attack_perturb(a1, x, y, n, p1));
            assert_elle_ok(elle_attack_perturb(a2, x, y, n, p2));
            assert_memory_equal(p1, p2, (size_t)count * sizeof *p1);

            /* the counter advanced by the blocks drawn: one start per restart */
            uint64_t c;
            const int64_t draws = k == ELLE_ATTACK_PGD ? 2 : 1;
            assert_elle_ok(elle_attack_get_rng_counter(a1, &c));
            assert_int_equal(c, (uint64_t)draws * (uint64_t)((count + 3) / 4));

            /* save, perturb, restore: the same next perturbation */
            assert_elle_ok(elle_attack_perturb(a1, x, y, n, p2));
            assert_memory_not_equal(p1, p2, (size_t)count * sizeof *p1); /* fresh noise */
            assert_elle_ok(elle_attack_set_rng_counter(a1, c));
            assert_elle_ok(elle_attack_perturb(a1, x, y, n, p3));
            assert_memory_equal(p2, p3, (size_t)count * sizeof *p2);

            /* a different seed: different points */
            assert_elle_ok(elle_attack_set_param(a2, ELLE_ATTACK_PARAM_SEED, 1235));
            assert_elle_ok(elle_attack_perturb(a2, x, y, n, p3));
            assert_memory_not_equal(p1, p3, (size_t)count * sizeof *p1);
            /* and back to the first seed: the stream starts over */
            assert_elle_ok(elle_attack_set_param(a2, ELLE_ATTACK_PARAM_SEED, 1234));
            assert_elle_ok(elle_attack_perturb(a2, x, y, n, p3));
            assert_memory_equal(p1, p3, (size_t)count * sizeof *p1);

            elle_attack_free(a1);
            elle_attack_free(a2);
            free(x);
            free(y);
            free(p1);
            free(p2);
            free(p3);
            elle_model_free(m);
            elle_context_free(ctx);
        }
    }
}

/* ---- the model's state: BatchNorm statistics, parameter gradients ------------- */

static void check_model_state(elle_backend be, const spec *s)
{
    const int64_t n = 4;
    elle_context *ctx = make_ctx(be);
    elle_model *m = make_model(ctx, s, 2, n);
    float *x = random_images(m, n);
    int32_t *y = random_labels(m, n);
    const int64_t count = n * image_numel(m);
    float *xa = malloc((size_t)count * sizeof *xa);
    elle_attack *fg = make_attack(m, ELLE_ATTACK_FGSM, 0.03);
    elle_attack *pgd = make_attack(m, ELLE_ATTACK_PGD, 0.03);
    assert_elle_ok(elle_attack_set_param(pgd, ELLE_ATTACK_PARAM_STEPS, 3));

    /* eval mode: nothing moves */
    assert_elle_ok(elle_model_set_training(m, 0));
    snapshot s0 = take_snapshot(m);
    assert_elle_ok(elle_attack_perturb(fg, x, y, n, xa));
    assert_elle_ok(elle_attack_perturb(pgd, x, y, n, xa));
    snapshot s1 = take_snapshot(m);
    assert_memory_equal(s0.data, s1.data, s0.bytes);

    /* training mode: one forward per step updates the statistics (PGD-k: k
     * forwards; with restarts, one more per restart) */
    assert_elle_ok(elle_model_set_training(m, 1));
    int64_t t0 = batches_tracked(m);
    assert_elle_ok(elle_attack_perturb(fg, x, y, n, xa));
    assert_int_equal(batches_tracked(m), t0 + 1);
    snapshot s2 = take_snapshot(m);
    assert_memory_not_equal(s1.data, s2.data, s1.bytes);
    assert_elle_ok(elle_attack_perturb(pgd, x, y, n, xa));
    assert_int_equal(batches_tracked(m), t0 + 1 + 3);
    assert_elle_ok(elle_attack_set_param(pgd, ELLE_ATTACK_PARAM_RESTARTS, 2));
    assert_elle_ok(elle_attack_perturb(pgd, x, y, n, xa));
    assert_int_equal(batches_tracked(m), t0 + 1 + 3 + 2 * (3 + 1));

    /* parameter gradients: never touched (input-gradient-only backward) */
    assert_elle_ok(elle_model_zero_grad(m));
    assert_elle_ok(elle_model_backward(m, x, y, n, NULL, NULL));
    int64_t ns = elle_model_state_count(m);
    for (int64_t i = 0; i < ns; i++) {
        elle_state_kind kind;
        int64_t d[4];
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
        if (kind != ELLE_STATE_PARAMETER)
            continue;
        size_t bytes = (size_t)(d[0] * d[1] * d[2] * d[3]) * sizeof(float);
        float *g0 = malloc(bytes), *g1 = malloc(bytes);
        assert_elle_ok(elle_model_grad_get(m, i, g0));
        assert_elle_ok(elle_attack_perturb(fg, x, y, n, xa));
        assert_elle_ok(elle_attack_perturb(pgd, x, y, n, xa));
        assert_elle_ok(elle_model_grad_get(m, i, g1));
        assert_memory_equal(g0, g1, bytes);
        free(g0);
        free(g1);
        break; /* one entry suffices: the attack never asks for parameter gradients */
    }

    free(s0.data);
    free(s1.data);
    free(s2.data);
    elle_attack_free(fg);
    elle_attack_free(pgd);
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

/* ---- the device-memory entry point and the buffers ----------------------------- */

static void test_perturb_dev_and_buffers(void **state)
{
    (void)state;
    for (int b = 0; b < N_BACKENDS; b++) {
        const int64_t n = 4;
        elle_context *ctx = make_ctx(backends[b]);
        elle_model *m = make_model(ctx, &cnn_spec, 4, n);
        assert_elle_ok(elle_model_set_training(m, 0));
        elle__backend *be = elle__model_backend(m);
        float *x = random_images(m, n);
        int32_t *y = random_labels(m, n);
        const int64_t count = n * image_numel(m);
        const size_t bytes = (size_t)count * sizeof(float);
        float *host = malloc(bytes), *dev_out = malloc(bytes);
        elle_attack *a = make_attack(m, ELLE_ATTACK_PGD, 0.05);
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_RESTARTS, 2));
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 2));

        assert_int_equal(elle_attack_memory_size(a), sizeof(elle_attack));
        assert_elle_ok(elle_attack_perturb(a, x, y, n, host));
        size_t mem = elle_attack_memory_size(a);
        assert_true(mem >= 4 * bytes); /* x0, adv, grad, best */
        float *x0_before = a->x0;

        void *xd = NULL, *yd = NULL;
        assert_elle_ok(be->ops->alloc(be, bytes, &xd));
        assert_elle_ok(be->ops->alloc(be, (size_t)n * sizeof(int32_t), &yd));
        assert_elle_ok(be->ops->copy_to_device(be, xd, x, bytes));
        assert_elle_ok(be->ops->copy_to_device(be, yd, y, (size_t)n * sizeof(int32_t)));
        assert_elle_ok(elle_attack_set_rng_counter(a, 0));
        assert_elle_ok(elle__attack_perturb_dev(a, xd, yd, n, xd)); /* in place */
        assert_elle_ok(be->ops->copy_to_host(be, dev_out, xd, bytes));
        assert_memory_equal(dev_out, host, bytes);
        assert_elle_status(elle__attack_perturb_dev(a, xd, yd, n + 1, xd), ELLE_ESHAPE);

        /* no allocation after the first call */
        assert_int_equal(elle_attack_memory_size(a), mem);
        assert_ptr_equal(a->x0, x0_before);
        /* a larger reserve grows the buffers on the next call */
        assert_elle_ok(elle_model_reserve(m, 2 * n));
        assert_elle_ok(elle_attack_perturb(a, x, y, n, host));
        assert_true(elle_attack_memory_size(a) > mem);

        be->ops->free(be, xd);
        be->ops->free(be, yd);
        elle_attack_free(a);
        free(x);
        free(y);
        free(host);
        free(dev_out);
        elle_model_free(m);
        elle_context_free(ctx);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_params),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_ball_and_box),
        cmocka_unit_test(test_fgsm_is_signed_gradient),
        cmocka_unit_test(test_pgd_loss),
        cmocka_unit_test(test_evaluate),
        cmocka_unit_test(test_early_stop),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_model_state),
        cmocka_unit_test(test_perturb_dev_and_buffers),
    };
    return cmocka_run_group_tests_name("attacks", tests, group_setup, group_teardown);
}
