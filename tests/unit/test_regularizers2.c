/*
 * Tests of the input-gradient regularizers GradAlign, LLR, CURE and of GAT's
 * output-distance term (lib/regularizers/{gradalign,llr,cure,gat}.c):
 *
 * - each value against an independent computation through the public model
 *   API (input gradients from elle_model_input_grad, losses and logits from
 *   the public forward, the random points rebuilt from the documented
 *   Philox stream; cosines, norms and residuals in double);
 * - each parameter gradient against central finite differences of that
 *   independent value, on a linear softmax model (smooth: a tight relative
 *   error) and on a small CNN with batch norm in eval and training mode (the
 *   fraction of agreeing coordinates, as test_regularizers.c: a ReLU or
 *   max-pool kink inside the stencil moves a few coordinates, a wrong term
 *   moves nearly all);
 * - GradAlign on a two-class linear model: the input gradient of CE keeps
 *   its direction for every x of a label, so R = 0 and its gradient is 0;
 * - the running statistics after a training-mode apply equal those of the
 *   reference's sequence of forwards (the re-forwards of LLR and GAT leave
 *   no trace);
 * - the oneDNN backend against the reference; parameters, names, defaults
 *   and error paths.
 */
#include <stdint.h>
#include <string.h>

#include "elle_test.h"
#include "core/rng.h"
#include "nn/model_internal.h"
#include "nn/models/models.h"
#include "regularizers/regularizer_internal.h"

/* ---- helpers -------------------------------------------------------------------- */

#define TEST_RAND_SEED 0x2545F4914F6CDD1Dull
#include "test_rand.h"

enum { C = 1, H = 8, W = 8, D = C * H * W };

static elle_context *make_ctx(elle_backend kind)
{
    elle_context *ctx = NULL;
    assert_elle_ok(elle_context_create(&ctx, kind, 0));
    return ctx;
}

/* A linear softmax model, logits = W x + b: built through the internal
 * architecture hook (no such model is public). */
static int build_linear(elle__net *net, const elle_model_config *cfg, int x, int *out)
{
    return elle__net_linear(net, "fc", x, ELLE__P(cfg, ELLE_MODEL_PARAM_NUM_CLASSES), 1, out);
}
static void linear_defaults(double *p)
{
    (void)p;
}
static const elle__arch linear_arch = {"linear_test", linear_defaults, build_linear};

typedef enum { LINEAR, CNN } arch_kind;

/* small_cnn: conv-BN-ReLU-maxpool x2, linear-ReLU-linear, (1, 8, 8) -> k;
 * or the linear model. */
static elle_model *make_model(elle_context *ctx, arch_kind arch, int64_t k, uint64_t seed,
                              int64_t max_batch)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, "small_cnn"));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 4));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_DEPTH, 2));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, 8));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, (double)k));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_CHANNELS, C));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, H));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, W));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, (double)seed));
    if (arch == LINEAR)
        cfg->arch = &linear_arch;
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    if (max_batch)
        assert_elle_ok(elle_model_reserve(m, max_batch));
    return m;
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

static int32_t *labels_for(int64_t n, int64_t k)
{
    int32_t *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++)
        y[i] = (int32_t)((i * 3 + 1) % k);
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

static int64_t state_numel(elle_model *m, int64_t i)
{
    int64_t d[4];
    assert_elle_ok(elle_model_state_info(m, i, NULL, NULL, NULL, d));
    return d[0] * d[1] * d[2] * d[3];
}

/* All parameter gradients, concatenated in state order. */
static float *all_grads(elle_model *m)
{
    float *g = malloc((size_t)elle_model_num_params(m) * sizeof *g);
    int64_t off = 0;
    for (int64_t si = 0; si < elle_model_state_count(m); si++) {
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(m, si, NULL, &kind, NULL, NULL));
        if (kind != ELLE_STATE_PARAMETER)
            continue;
        assert_elle_ok(elle_model_grad_get(m, si, g + off));
        off += state_numel(m, si);
    }
    assert_int_equal(off, elle_model_num_params(m));
    return g;
}

/* All buffers (running statistics), concatenated; counters as floats. */
static double *all_buffers(elle_model *m, int64_t *count)
{
    int64_t total = 0;
    for (int64_t si = 0; si < elle_model_state_count(m); si++) {
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(m, si, NULL, &kind, NULL, NULL));
        if (kind != ELLE_STATE_PARAMETER)
            total += kind == ELLE_STATE_COUNTER ? 1 : state_numel(m, si);
    }
    double *b = malloc((size_t)(total + 1) * sizeof *b);
    int64_t off = 0;
    for (int64_t si = 0; si < elle_model_state_count(m); si++) {
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(m, si, NULL, &kind, NULL, NULL));
        if (kind == ELLE_STATE_PARAMETER)
            continue;
        if (kind == ELLE_STATE_COUNTER) {
            int64_t c;
            assert_elle_ok(elle_model_state_get(m, si, &c));
            b[off++] = (double)c;
        } else {
            int64_t k = state_numel(m, si);
            float *f = malloc((size_t)k * sizeof *f);
            assert_elle_ok(elle_model_state_get(m, si, f));
            for (int64_t i = 0; i < k; i++)
                b[off++] = f[i];
            free(f);
        }
    }
    *count = total;
    return b;
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

static void scale_entry(elle_model *m, const char *name, float f)
{
    int64_t e = entry(m, name);
    int64_t k = state_numel(m, e);
    float *w = malloc((size_t)k * sizeof *w);
    assert_elle_ok(elle_model_state_get(m, e, w));
    for (int64_t i = 0; i < k; i++)
        w[i] *= f;
    assert_elle_ok(elle_model_state_set(m, e, w));
    free(w);
}

static void assert_rel(double got, double want, double rtol, const char *what)
{
    if (!(fabs(got - want) <= rtol * fabs(want) + 1e-12))
        fail_msg("%s: got %.9g, independent %.9g (relative difference %.3g, tolerance %.3g)",
                 what, got, want, fabs(got - want) / fmax(fabs(want), 1e-300), rtol);
}

/* ---- the independent computations --------------------------------------------------
 *
 * The random points as docs/regularizers.md defines them: Philox key = seed
 * with (0x400 + kind) in the top 11 bits, U[-eps, eps] from the counter the
 * apply started at: GradAlign one fill of n*D (eta); LLR one fill of 2n*D
 * (x2 then x3). */

typedef struct setup {
    elle_regularizer_kind kind;
    int64_t n;
    const float *x, *adv; /* adv: CURE and GAT */
    const int32_t *y;
    float *pts;           /* GradAlign: x + eta; LLR: [x2; x3] */
    float *frozen;        /* GradAlign's g1, CURE's g2 at the unperturbed parameters: the
                             references detach them, so finite differences must too (NULL:
                             computed) */
} setup;

static uint64_t key_of(const elle_regularizer *r)
{
    return (uint64_t)getp(r, ELLE_REGULARIZER_PARAM_SEED) |
           ((uint64_t)(0x400 + elle_regularizer_get_kind(r)) << 53);
}

static setup make_setup(const elle_regularizer *r, const float *x, const float *adv,
                        const int32_t *y, int64_t n, uint64_t c0)
{
    setup s = {(elle_regularizer_kind)elle_regularizer_get_kind(r), n, x, adv, y, NULL, NULL};
    int64_t nd = n * D;
    if (s.kind == ELLE_REGULARIZER_GRADALIGN || s.kind == ELLE_REGULARIZER_LLR) {
        int copies = s.kind == ELLE_REGULARIZER_LLR ? 2 : 1;
        float eps = (float)getp(r, ELLE_REGULARIZER_PARAM_EPS);
        int clamp = getp(r, ELLE_REGULARIZER_PARAM_CLAMP_IMAGE) != 0;
        s.pts = malloc((size_t)(copies * nd) * sizeof *s.pts);
        elle__rng_uniform_range(key_of(r), c0, 0, copies * nd, -eps, eps, s.pts);
        for (int64_t i = 0; i < copies * nd; i++) {
            s.pts[i] += x[i % nd];
            if (clamp)
                s.pts[i] = fminf(fmaxf(s.pts[i], 0.0f), 1.0f);
        }
    }
    return s;
}

static double dot(const float *a, const float *b, int64_t d)
{
    double s = 0;
    for (int64_t j = 0; j < d; j++)
        s += (double)a[j] * b[j];
    return s;
}

/* Softmax rows of the logits of n images, in double. */
static void softmax_rows(elle_model *m, const float *x, int64_t n, double *p)
{
    int64_t k = elle_model_num_classes(m);
    float *z = malloc((size_t)(n * k) * sizeof *z);
    assert_elle_ok(elle_model_forward(m, x, n, z));
    for (int64_t i = 0; i < n; i++) {
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < k; j++)
            mx = fmax(mx, z[i * k + j]);
        for (int64_t j = 0; j < k; j++)
            sum += p[i * k + j] = exp(z[i * k + j] - mx);
        for (int64_t j = 0; j < k; j++)
            p[i * k + j] /= sum;
    }
    free(z);
}

/* The regularizer's value computed from the public model API, in the
 * reference's order of forwards. The model's parameters may be perturbed
 * between calls (finite differences); the points stay. */
static double value_ref(elle_model *m, const elle_regularizer *r, const setup *s)
{
    const int64_t n = s->n, nd = n * D;
    float *g1 = malloc((size_t)(2 * nd) * sizeof *g1), *g2 = g1 + nd;
    double v = 0;
    switch (s->kind) {
    case ELLE_REGULARIZER_GRADALIGN: {
        int original = getp(r, ELLE_REGULARIZER_PARAM_VARIANT) != 0;
        float *xc = malloc((size_t)nd * sizeof *xc);
        for (int64_t i = 0; i < nd; i++)
            xc[i] = original ? fminf(fmaxf(s->x[i], 0.0f), 1.0f) : s->x[i];
        if (s->frozen)
            memcpy(g1, s->frozen, (size_t)nd * sizeof *g1);
        else
            assert_elle_ok(elle_model_input_grad(m, xc, s->y, n, g1, NULL));
        assert_elle_ok(elle_model_input_grad(m, s->pts, s->y, n, g2, NULL));
        free(xc);
        double sum = 0;
        int64_t kept = 0;
        for (int64_t i = 0; i < n; i++) {
            double a = sqrt(dot(g1 + i * D, g1 + i * D, D));
            double b = sqrt(dot(g2 + i * D, g2 + i * D, D));
            if (original && (a == 0 || b == 0))
                continue;
            double den = original ? a * b : fmax(a * b, 1e-8);
            sum += dot(g1 + i * D, g2 + i * D, D) / den;
            kept++;
        }
        v = kept ? 1.0 - sum / (double)kept : 0.0;
        break;
    }
    case ELLE_REGULARIZER_CURE: {
        int per = getp(r, ELLE_REGULARIZER_PARAM_PER_SAMPLE) != 0;
        if (s->frozen)
            memcpy(g1, s->frozen, (size_t)nd * sizeof *g1);
        else
            assert_elle_ok(elle_model_input_grad(m, s->x, s->y, n, g1, NULL));
        assert_elle_ok(elle_model_input_grad(m, s->adv, s->y, n, g2, NULL));
        double sum = 0, f = per ? (double)n : 1.0; /* input_grad is of the mean */
        for (int64_t j = 0; j < nd; j++)
            sum += (f * g1[j] - f * g2[j]) * (f * g1[j] - f * g2[j]);
        v = sum / (double)n;
        break;
    }
    case ELLE_REGULARIZER_LLR: {
        int per = getp(r, ELLE_REGULARIZER_PARAM_PER_SAMPLE) != 0;
        float *loss = malloc((size_t)(2 * n) * sizeof *loss);
        float *dx2 = malloc((size_t)(2 * nd) * sizeof *dx2);
        int32_t *y2 = malloc((size_t)(2 * n) * sizeof *y2);
        memcpy(y2, s->y, (size_t)n * sizeof *y2);
        memcpy(y2 + n, s->y, (size_t)n * sizeof *y2);
        assert_elle_ok(elle_model_input_grad(m, s->pts, s->y, n, g1, NULL));
        assert_elle_ok(elle_model_input_grad(m, s->pts, y2, 2 * n, dx2, loss));
        double sum = 0, f = per ? (double)n : 1.0;
        for (int64_t i = 0; i < n; i++) {
            double lin = 0;
            for (int64_t j = 0; j < D; j++)
                lin += ((double)s->pts[nd + i * D + j] - s->pts[i * D + j]) * f * g1[i * D + j];
            double e = (double)loss[n + i] - loss[i] - lin;
            sum += e * e;
        }
        v = sum / (double)n;
        free(loss);
        free(dx2);
        free(y2);
        break;
    }
    case ELLE_REGULARIZER_GAT: {
        int64_t k = elle_model_num_classes(m);
        double *p = malloc((size_t)(2 * n * k) * sizeof *p), *q = p + n * k;
        softmax_rows(m, s->x, n, p);
        softmax_rows(m, s->adv, n, q);
        double sum = 0;
        for (int64_t j = 0; j < n * k; j++)
            sum += (p[j] - q[j]) * (p[j] - q[j]);
        v = sum / (double)n;
        free(p);
        break;
    }
    default:
        fail_msg("kind %d", (int)s->kind);
    }
    free(g1);
    return v;
}

static elle_regularizer *make_reg(elle_model *m, elle_regularizer_kind kind)
{
    elle_regularizer *r = NULL;
    assert_elle_ok(elle_regularizer_create(&r, m, kind));
    return r;
}

/* ---- parameters, names, defaults ---------------------------------------------------- */

static void test_params_and_names(void **state)
{
    (void)state;
    static const struct {
        elle_regularizer_kind kind;
        const char *name;
    } kinds[] = {{ELLE_REGULARIZER_GRADALIGN, "gradalign"},
                 {ELLE_REGULARIZER_LLR, "llr"},
                 {ELLE_REGULARIZER_CURE, "cure"},
                 {ELLE_REGULARIZER_GAT, "gat"}};
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, CNN, 5, 1, 8);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        elle_regularizer_kind k;
        assert_elle_ok(elle_regularizer_kind_from_name(kinds[i].name, &k));
        assert_int_equal(k, kinds[i].kind);
        assert_string_equal(elle_regularizer_kind_name(kinds[i].kind), kinds[i].name);
        elle_regularizer *r = make_reg(m, kinds[i].kind);
        assert_int_equal(elle_regularizer_get_kind(r), kinds[i].kind);
        /* shared parameters are validated as ELLE's */
        assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_LAMBDA, -1),
                           ELLE_EINVAL);
        assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_LAMBDA, NAN),
                           ELLE_EINVAL);
        assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_EPS, 1.5),
                           ELLE_EINVAL);
        assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_EPS, -0.1),
                           ELLE_EINVAL);
        assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_ADAPTIVE, 0.5),
                           ELLE_EINVAL);
        /* ELLE-only parameters do not exist here */
        assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_POINTS, 3),
                           ELLE_EINVAL);
        assert_elle_status(elle_regularizer_param_bounds(kinds[i].kind,
                                                         ELLE_REGULARIZER_PARAM_REUSE_ADV, NULL,
                                                         NULL),
                           ELLE_EINVAL);
        /* ELLE-A is available to every kind */
        setp(r, ELLE_REGULARIZER_PARAM_ADAPTIVE, 1);
        setp(r, ELLE_REGULARIZER_PARAM_LAMBDA_MAX, 123);
        double lam;
        assert_elle_ok(elle_regularizer_get_stat(r, ELLE_REGULARIZER_STAT_LAMBDA, &lam));
        assert_true(lam == 0.0); /* lambda_start */
        for (int t = 0; t < 3; t++)
            assert_elle_ok(elle_regularizer_observe(r, 1.0));
        assert_elle_ok(elle_regularizer_observe(r, 100.0));
        assert_elle_ok(elle_regularizer_get_stat(r, ELLE_REGULARIZER_STAT_LAMBDA, &lam));
        assert_true(lam == 123.0);
        /* the batch the model must hold */
        assert_int_equal(elle_regularizer_batch_samples(r, 10),
                         kinds[i].kind == ELLE_REGULARIZER_LLR ? 20 : 10);
        elle_regularizer_free(r);
    }
    elle_regularizer *r = make_reg(m, ELLE_REGULARIZER_GRADALIGN);
    assert_true(getp(r, ELLE_REGULARIZER_PARAM_VARIANT) == 0);
    setp(r, ELLE_REGULARIZER_PARAM_VARIANT, 1);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_VARIANT, 2),
                       ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_PER_SAMPLE, 1),
                       ELLE_EINVAL);
    elle_regularizer_free(r);
    r = make_reg(m, ELLE_REGULARIZER_CURE);
    setp(r, ELLE_REGULARIZER_PARAM_PER_SAMPLE, 1);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_PER_SAMPLE, -1),
                       ELLE_EINVAL);
    assert_elle_status(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_SEED, 1),
                       ELLE_EINVAL); /* CURE draws nothing */
    elle_regularizer_free(r);
    elle_regularizer_param p;
    assert_elle_ok(elle_regularizer_param_from_name("variant", &p));
    assert_int_equal(p, ELLE_REGULARIZER_PARAM_VARIANT);
    assert_elle_ok(elle_regularizer_param_from_name("per_sample", &p));
    assert_int_equal(p, ELLE_REGULARIZER_PARAM_PER_SAMPLE);
    assert_string_equal(elle_regularizer_param_name(ELLE_REGULARIZER_PARAM_PER_SAMPLE),
                        "per_sample");

    /* the reference scripts' lambdas */
    double v;
    for (int k = 1; k <= 16; k++) {
        assert_elle_ok(elle_regularizer_default_lambda(ELLE_REGULARIZER_GRADALIGN, k / 255.0, 0,
                                                       &v));
        assert_rel(v, 0.02 * pow(10.0, k / 8.0), 1e-9, "GradAlign lambda(eps)");
    }
    assert_elle_ok(elle_regularizer_default_lambda(ELLE_REGULARIZER_GRADALIGN, 8 / 255.0, 0,
                                                   &v));
    assert_rel(v, 0.2, 1e-9, "GradAlign lambda(8/255)");
    assert_elle_ok(elle_regularizer_default_lambda(ELLE_REGULARIZER_GRADALIGN, 18 / 255.0, 0,
                                                   &v));
    assert_true(v == 2.0);
    static const double llr_table[][2] = {{2, 200},  {8, 200},   {10, 500}, {12, 500},
                                          {14, 1000}, {16, 500}, {18, 1000}, {20, 500},
                                          {22, 2000}, {24, 5000}, {26, 2000}};
    for (size_t i = 0; i < sizeof llr_table / sizeof llr_table[0]; i++) {
        assert_elle_ok(elle_regularizer_default_lambda(ELLE_REGULARIZER_LLR,
                                                       llr_table[i][0] / 255.0, 1, &v));
        assert_true(v == llr_table[i][1]);
    }
    assert_elle_ok(elle_regularizer_default_lambda(ELLE_REGULARIZER_CURE, 8 / 255.0, 1, &v));
    assert_true(v == 1000);
    assert_elle_ok(elle_regularizer_default_lambda(ELLE_REGULARIZER_CURE, 16 / 255.0, 1, &v));
    assert_true(v == 50000);
    assert_elle_status(elle_regularizer_default_lambda(ELLE_REGULARIZER_LLR, 2.0, 1, &v),
                       ELLE_EINVAL);
    elle_model_free(m);
    elle_context_free(ctx);
}

static void test_errors(void **state)
{
    (void)state;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    const int64_t n = 4;
    elle_model *m = make_model(ctx, CNN, 5, 2, n);
    float *x = random_images(n);
    int32_t *y = labels_for(n, 5);
    /* CURE and GAT need the attack's points */
    elle_regularizer *r = make_reg(m, ELLE_REGULARIZER_CURE);
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, NULL), ELLE_EINVAL);
    elle_regularizer_free(r);
    r = make_reg(m, ELLE_REGULARIZER_GAT);
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, NULL), ELLE_EINVAL);
    elle_regularizer_free(r);
    /* LLR forwards 2n: a model reserved for n is refused with the size to reserve */
    r = make_reg(m, ELLE_REGULARIZER_LLR);
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, NULL), ELLE_ESHAPE);
    assert_non_null(strstr(elle_error_last()->message, "elle_model_reserve(model, 8)"));
    /* bad labels and pixels are refused before anything runs */
    assert_elle_ok(elle_model_reserve(m, 2 * n));
    y[1] = 5;
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, NULL), ELLE_EINVAL);
    y[1] = 1;
    x[3] = NAN;
    assert_elle_status(elle_regularizer_apply(r, x, y, NULL, n, NULL), ELLE_EINVAL);
    x[3] = 0.5f;
    assert_int_equal(counter_of(r), 0);
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, NULL));
    assert_true(counter_of(r) > 0);
    elle_regularizer_free(r);
    free(x);
    free(y);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- values --------------------------------------------------------------------------- */

typedef struct config {
    const char *name;
    elle_regularizer_kind kind;
    arch_kind arch;
    int64_t classes;
    int training;
    double eps;
    int variant, per_sample;
    float head_scale; /* fc / fc2 weight factor: sharper softmax, more curvature */
} config;

/* apply once; compare the value with the independent one. Returns the model
 * and regularizer ready for a gradient check (gradients hold lambda grad R). */
static double apply_and_check_value(const config *cf, elle_model *m, elle_regularizer *r,
                                    setup *s_out, float **x_out, int32_t **y_out,
                                    float **adv_out, int64_t n, double lambda)
{
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, lambda);
    setp(r, ELLE_REGULARIZER_PARAM_EPS, cf->eps);
    if (cf->kind == ELLE_REGULARIZER_GRADALIGN)
        setp(r, ELLE_REGULARIZER_PARAM_VARIANT, cf->variant);
    if (cf->kind == ELLE_REGULARIZER_LLR || cf->kind == ELLE_REGULARIZER_CURE)
        setp(r, ELLE_REGULARIZER_PARAM_PER_SAMPLE, cf->per_sample);
    float *x = random_images(n);
    int32_t *y = labels_for(n, cf->classes);
    float *adv = fake_adv(x, n, (float)cf->eps);
    uint64_t c0 = counter_of(r);
    double v;
    assert_elle_ok(elle_model_zero_grad(m));
    assert_elle_ok(elle_regularizer_apply(r, x, y, adv, n, &v));
    double st;
    assert_elle_ok(elle_regularizer_get_stat(r, ELLE_REGULARIZER_STAT_APPLIED_LAMBDA, &st));
    assert_true(st == lambda);
    *s_out = make_setup(r, x, adv, y, n, c0);
    double want = value_ref(m, r, s_out);
    print_message("%s: R = %.6g (independent %.6g)\n", cf->name, v, want);
    assert_rel(v, want, 2e-4, cf->name);
    *x_out = x;
    *y_out = y;
    *adv_out = adv;
    return v;
}

/* Fraction of coordinates where finite differences and the analytic
 * gradient agree to atol + 3% |analytic|. */
static double agreement(const double *fd, const double *an, int n, double atol)
{
    int good = 0;
    for (int i = 0; i < n; i++)
        good += fabs(fd[i] - an[i]) <= atol + 3e-2 * fabs(an[i]);
    return (double)good / n;
}

/* lambda grad R from apply against Richardson-extrapolated central
 * differences of the independent value, on sampled coordinates of every
 * parameter entry (all of them for the linear model). */
static int check_gradient(const config *cf)
{
    const int64_t n = 4;
    const double lambda = 1.0;
    rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(cf->kind * 131 + cf->arch * 17 +
                                                   cf->training * 7 + cf->variant * 3 +
                                                   cf->per_sample);
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, cf->arch, cf->classes, 8, 2 * n);
    assert_elle_ok(elle_model_set_training(m, cf->training));
    if (cf->head_scale != 1.0f)
        scale_entry(m, cf->arch == LINEAR ? "fc.weight" : "fc2.weight", cf->head_scale);
    elle_regularizer *r = make_reg(m, cf->kind);
    setup s;
    float *x, *adv;
    int32_t *y;
    double v = apply_and_check_value(cf, m, r, &s, &x, &y, &adv, n, lambda);
    float *g = all_grads(m);
    if (cf->kind == ELLE_REGULARIZER_GRADALIGN || cf->kind == ELLE_REGULARIZER_CURE) {
        /* the detached gradient, at the unperturbed parameters */
        s.frozen = malloc((size_t)(n * D) * sizeof *s.frozen);
        float *xc = malloc((size_t)(n * D) * sizeof *xc);
        for (int64_t i = 0; i < n * D; i++)
            xc[i] = cf->variant ? fminf(fmaxf(x[i], 0.0f), 1.0f) : x[i];
        assert_elle_ok(elle_model_input_grad(m, xc, y, n, s.frozen, NULL));
        free(xc);
    }

    const double h = cf->arch == LINEAR ? 1e-2 : 1e-3;
    enum { NP = 12, MAXC = 512 };
    double *fd = malloc(MAXC * sizeof *fd), *an = malloc(MAXC * sizeof *an);
    int total = 0;
    double num = 0, den = 0;
    int64_t off = 0;
    for (int64_t si = 0; si < elle_model_state_count(m); si++) {
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(m, si, NULL, &kind, NULL, NULL));
        if (kind != ELLE_STATE_PARAMETER)
            continue;
        int64_t numel = state_numel(m, si);
        float *w = malloc((size_t)numel * sizeof *w);
        assert_elle_ok(elle_model_state_get(m, si, w));
        int64_t picks = cf->arch == LINEAR ? numel : NP;
        for (int64_t t = 0; t < picks && total < MAXC; t++) {
            int64_t i = cf->arch == LINEAR ? t : (int64_t)(frand() * (double)numel);
            float keep = w[i];
            double dq[2];
            for (int q = 0; q < 2; q++) {
                float hq = (float)(q ? h / 2 : h);
                w[i] = keep + hq;
                assert_elle_ok(elle_model_state_set(m, si, w));
                double ep = value_ref(m, r, &s);
                w[i] = keep - hq;
                assert_elle_ok(elle_model_state_set(m, si, w));
                double em = value_ref(m, r, &s);
                dq[q] = (ep - em) / ((double)(keep + hq) - (double)(keep - hq));
            }
            w[i] = keep;
            assert_elle_ok(elle_model_state_set(m, si, w));
            fd[total] = lambda * (4 * dq[1] - dq[0]) / 3;
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
    print_message("%s: %.0f%% of %d coordinates agree, relative error %.3g, |grad| rms %.3g\n",
                  cf->name, 100 * a, total, rel, scale);
    if (!(den > 0))
        fail_msg("%s: the gradient is zero (R = %g): the test cannot check it", cf->name, v);
    int ok = cf->arch == LINEAR ? rel < 2e-3 : a >= 0.85;
    if (!ok) {
        for (int t = 0; t < total && t < 12; t++)
            print_error("  coord %d: fd %.6g analytic %.6g\n", t, fd[t], an[t]);
        print_error("%s: gradient agrees on %.0f%% of %d coordinates, relative error %.3g "
                    "(R = %g)\n", cf->name, 100 * a, total, rel, v);
    }
    free(fd);
    free(an);
    free(s.pts);
    free(s.frozen);
    free(g);
    free(x);
    free(y);
    free(adv);
    elle_regularizer_free(r);
    elle_model_free(m);
    elle_context_free(ctx);
    return ok;
}

static const config grad_configs[] = {
    {"gradalign, linear", ELLE_REGULARIZER_GRADALIGN, LINEAR, 5, 0, 0.3, 0, 0, 3.0f},
    {"gradalign original, linear", ELLE_REGULARIZER_GRADALIGN, LINEAR, 5, 0, 0.3, 1, 0, 3.0f},
    {"gradalign, cnn eval", ELLE_REGULARIZER_GRADALIGN, CNN, 5, 0, 0.3, 0, 0, 10.0f},
    {"gradalign, cnn training", ELLE_REGULARIZER_GRADALIGN, CNN, 5, 1, 0.3, 0, 0, 1.0f},
    {"llr, linear", ELLE_REGULARIZER_LLR, LINEAR, 5, 0, 0.3, 0, 0, 3.0f},
    {"llr per-sample, linear", ELLE_REGULARIZER_LLR, LINEAR, 5, 0, 0.3, 0, 1, 3.0f},
    {"llr, cnn eval", ELLE_REGULARIZER_LLR, CNN, 5, 0, 0.3, 0, 0, 10.0f},
    {"llr, cnn training", ELLE_REGULARIZER_LLR, CNN, 5, 1, 0.3, 0, 0, 1.0f},
    {"cure, linear", ELLE_REGULARIZER_CURE, LINEAR, 5, 0, 0.3, 0, 0, 3.0f},
    {"cure per-sample, linear", ELLE_REGULARIZER_CURE, LINEAR, 5, 0, 0.3, 0, 1, 3.0f},
    {"cure, cnn eval", ELLE_REGULARIZER_CURE, CNN, 5, 0, 0.3, 0, 0, 10.0f},
    {"cure, cnn training", ELLE_REGULARIZER_CURE, CNN, 5, 1, 0.3, 0, 0, 1.0f},
    {"gat, linear", ELLE_REGULARIZER_GAT, LINEAR, 5, 0, 0.3, 0, 0, 3.0f},
    {"gat, cnn eval", ELLE_REGULARIZER_GAT, CNN, 5, 0, 0.3, 0, 0, 10.0f},
    {"gat, cnn training", ELLE_REGULARIZER_GAT, CNN, 5, 1, 0.3, 0, 0, 1.0f},
};

static void test_gradient_fd(void **state)
{
    (void)state;
    int failed = 0;
    for (size_t i = 0; i < sizeof grad_configs / sizeof grad_configs[0]; i++)
        failed += !check_gradient(&grad_configs[i]);
    if (failed)
        fail_msg("%d of %zu gradient checks failed", failed,
                 sizeof grad_configs / sizeof grad_configs[0]);
}

/* ---- GradAlign on two classes of a linear model: R = 0 and grad R = 0 ----------------- */

static void test_gradalign_aligned(void **state)
{
    (void)state;
    const int64_t n = 6;
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, LINEAR, 2, 3, n);
    elle_regularizer *r = make_reg(m, ELLE_REGULARIZER_GRADALIGN);
    setp(r, ELLE_REGULARIZER_PARAM_EPS, 0.5); /* far apart: only the model makes it 0 */
    setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 1.0);
    float *x = random_images(n);
    int32_t *y = labels_for(n, 2);
    double v;
    assert_elle_ok(elle_model_zero_grad(m));
    assert_elle_ok(elle_regularizer_apply(r, x, y, NULL, n, &v));
    float *g = all_grads(m);
    double gmax = 0;
    for (int64_t i = 0; i < elle_model_num_params(m); i++)
        gmax = fmax(gmax, fabs(g[i]));
    print_message("aligned: R = %.3g, max |grad| = %.3g\n", v, gmax);
    assert_true(fabs(v) < 1e-6);
    assert_true(gmax < 1e-5);
    free(g);
    /* the same with three classes is not aligned: the check above can fail */
    elle_model *m3 = make_model(ctx, LINEAR, 3, 3, n);
    elle_regularizer *r3 = make_reg(m3, ELLE_REGULARIZER_GRADALIGN);
    setp(r3, ELLE_REGULARIZER_PARAM_EPS, 0.5);
    setp(r3, ELLE_REGULARIZER_PARAM_LAMBDA, 1.0);
    scale_entry(m3, "fc.weight", 5.0f);
    int32_t *y3 = labels_for(n, 3);
    assert_elle_ok(elle_model_zero_grad(m3));
    assert_elle_ok(elle_regularizer_apply(r3, x, y3, NULL, n, &v));
    g = all_grads(m3);
    gmax = 0;
    for (int64_t i = 0; i < elle_model_num_params(m3); i++)
        gmax = fmax(gmax, fabs(g[i]));
    print_message("three classes: R = %.3g, max |grad| = %.3g\n", v, gmax);
    assert_true(v > 1e-4);
    assert_true(gmax > 1e-4);
    free(g);
    free(y3);
    elle_regularizer_free(r3);
    elle_model_free(m3);
    free(x);
    free(y);
    elle_regularizer_free(r);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- lambda, accumulation, ELLE-A on real values -------------------------------------- */

static void test_accumulates_and_scales(void **state)
{
    (void)state;
    const int64_t n = 4;
    static const elle_regularizer_kind kinds[] = {ELLE_REGULARIZER_GRADALIGN, ELLE_REGULARIZER_LLR,
                                                  ELLE_REGULARIZER_CURE, ELLE_REGULARIZER_GAT};
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    for (size_t kk = 0; kk < sizeof kinds / sizeof kinds[0]; kk++) {
        elle_model *m = make_model(ctx, CNN, 5, 4, 2 * n);
        scale_entry(m, "fc2.weight", 5.0f);
        elle_regularizer *r = make_reg(m, kinds[kk]);
        setp(r, ELLE_REGULARIZER_PARAM_EPS, 0.2);
        float *x = random_images(n);
        int32_t *y = labels_for(n, 5);
        float *adv = fake_adv(x, n, 0.2f);
        int64_t np = elle_model_num_params(m);
        /* lambda 1, then lambda 3 on the same points (counter rewound):
         * the second adds 3x the first on top of it */
        setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 1.0);
        assert_elle_ok(elle_model_zero_grad(m));
        uint64_t c0 = counter_of(r);
        double v1, v2;
        assert_elle_ok(elle_regularizer_apply(r, x, y, adv, n, &v1));
        float *g1 = all_grads(m);
        setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 3.0);
        assert_elle_ok(elle_regularizer_set_rng_counter(r, c0));
        assert_elle_ok(elle_regularizer_apply(r, x, y, adv, n, &v2));
        float *g4 = all_grads(m);
        assert_true(v1 == v2);
        double num = 0, den = 0;
        for (int64_t i = 0; i < np; i++) {
            num += (g4[i] - 4.0 * g1[i]) * (g4[i] - 4.0 * g1[i]);
            den += 16.0 * g1[i] * g1[i];
        }
        if (!(den > 0 && num / den < 1e-10))
            fail_msg("%s: lambda 3 on top of lambda 1 gives nmse %.3g against 4x",
                     elle_regularizer_kind_name(kinds[kk]), num / den);
        /* lambda 0 adds nothing */
        setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 0.0);
        assert_elle_ok(elle_regularizer_apply(r, x, y, adv, n, &v2));
        float *g0 = all_grads(m);
        assert_memory_equal(g0, g4, (size_t)np * sizeof *g0);
        free(g0);
        free(g1);
        free(g4);
        free(x);
        free(y);
        free(adv);
        elle_regularizer_free(r);
        elle_model_free(m);
    }
    elle_context_free(ctx);
}

/* ---- the running statistics move as in the reference ---------------------------------- */

static void test_running_stats(void **state)
{
    (void)state;
    const int64_t n = 4;
    static const elle_regularizer_kind kinds[] = {ELLE_REGULARIZER_GRADALIGN, ELLE_REGULARIZER_LLR,
                                                  ELLE_REGULARIZER_CURE, ELLE_REGULARIZER_GAT};
    elle_context *ctx = make_ctx(ELLE_BACKEND_REFERENCE);
    for (size_t kk = 0; kk < sizeof kinds / sizeof kinds[0]; kk++) {
        elle_model *a = make_model(ctx, CNN, 5, 5, 2 * n), *b = make_model(ctx, CNN, 5, 5, 2 * n);
        assert_elle_ok(elle_model_set_training(a, 1));
        assert_elle_ok(elle_model_set_training(b, 1));
        elle_regularizer *r = make_reg(a, kinds[kk]);
        setp(r, ELLE_REGULARIZER_PARAM_LAMBDA, 1.0);
        setp(r, ELLE_REGULARIZER_PARAM_EPS, 0.2);
        float *x = random_images(n);
        int32_t *y = labels_for(n, 5);
        float *adv = fake_adv(x, n, 0.2f);
        assert_elle_ok(elle_regularizer_apply(r, x, y, adv, n, NULL));
        /* the independent value runs the reference's forwards on b, once each */
        setup s = make_setup(r, x, adv, y, n, 0);
        value_ref(b, r, &s);
        int64_t ca, cb;
        double *ba = all_buffers(a, &ca), *bb = all_buffers(b, &cb);
        assert_int_equal(ca, cb);
        for (int64_t i = 0; i < ca; i++)
            if (!(fabs(ba[i] - bb[i]) <= 1e-6 * (1 + fabs(bb[i]))))
                fail_msg("%s: running statistic %lld is %.9g, the reference's forwards give "
                         "%.9g", elle_regularizer_kind_name(kinds[kk]), (long long)i, ba[i],
                         bb[i]);
        free(ba);
        free(bb);
        free(s.pts);
        free(x);
        free(y);
        free(adv);
        elle_regularizer_free(r);
        elle_model_free(a);
        elle_model_free(b);
    }
    elle_context_free(ctx);
}

/* ---- oneDNN against the reference ---------------------------------------------------- */

static void test_cpu_vs_reference(void **state)
{
    (void)state;
    const int64_t n = 8;
    static const elle_regularizer_kind kinds[] = {ELLE_REGULARIZER_GRADALIGN, ELLE_REGULARIZER_LLR,
                                                  ELLE_REGULARIZER_CURE, ELLE_REGULARIZER_GAT};
    elle_context *rc = make_ctx(ELLE_BACKEND_REFERENCE), *cc = make_ctx(ELLE_BACKEND_CPU);
    float *x = random_images(n);
    int32_t *y = labels_for(n, 5);
    float *adv = fake_adv(x, n, 0.2f);
    for (size_t kk = 0; kk < sizeof kinds / sizeof kinds[0]; kk++) {
        for (int training = 1; training >= 0; training--) {
            elle_model *mr = make_model(rc, CNN, 5, 13, 2 * n),
                       *mc = make_model(cc, CNN, 5, 14, 2 * n);
            scale_entry(mr, "fc2.weight", 4.0f);
            copy_state(mc, mr);
            assert_elle_ok(elle_model_set_training(mr, training));
            assert_elle_ok(elle_model_set_training(mc, training));
            elle_regularizer *rr = make_reg(mr, kinds[kk]), *rcpu = make_reg(mc, kinds[kk]);
            setp(rr, ELLE_REGULARIZER_PARAM_EPS, 0.2);
            setp(rcpu, ELLE_REGULARIZER_PARAM_EPS, 0.2);
            setp(rr, ELLE_REGULARIZER_PARAM_LAMBDA, 1.0);
            setp(rcpu, ELLE_REGULARIZER_PARAM_LAMBDA, 1.0);
            assert_elle_ok(elle_model_zero_grad(mr));
            assert_elle_ok(elle_model_zero_grad(mc));
            double vr, vc;
            assert_elle_ok(elle_regularizer_apply(rr, x, y, adv, n, &vr));
            assert_elle_ok(elle_regularizer_apply(rcpu, x, y, adv, n, &vc));
            char what[96];
            snprintf(what, sizeof what, "%s value, oneDNN vs reference (training %d)",
                     elle_regularizer_kind_name(kinds[kk]), training);
            assert_rel(vc, vr, 2e-3, what);
            float *gr = all_grads(mr), *gc = all_grads(mc);
            double e = elle_test_nmse(gc, gr, (size_t)elle_model_num_params(mr));
            print_message("%s: R %.6g / %.6g, gradient nmse %.3g\n", what, vr, vc, e);
            if (!(e < 1e-5))
                fail_msg("%s: gradient nmse %.3g", what, e);
            free(gr);
            free(gc);
            elle_regularizer_free(rr);
            elle_regularizer_free(rcpu);
            elle_model_free(mr);
            elle_model_free(mc);
        }
    }
    free(x);
    free(y);
    free(adv);
    elle_context_free(rc);
    elle_context_free(cc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_and_names),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_gradient_fd),
        cmocka_unit_test(test_gradalign_aligned),
        cmocka_unit_test(test_accumulates_and_scales),
        cmocka_unit_test(test_running_stats),
        cmocka_unit_test(test_cpu_vs_reference),
    };
    return cmocka_run_group_tests_name("regularizers2", tests, NULL, NULL);
}
