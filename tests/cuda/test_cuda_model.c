/*
 * The CUDA backend end to end, through the public API only: the same small
 * models on a CPU context and on a CUDA context with identical weights
 * (copied through safetensors or the state API, so the host-to-device
 * paths are exercised too), then
 *
 * - forward logits, per-sample losses, parameter gradients, input gradients
 *   and the running statistics, in training and in eval mode;
 * - one FGSM adversarial training step (RS-FGSM: Philox random start,
 *   projection) and one FGSM + ELLE step, and one GradAlign step (the
 *   second-order tangent passes), from identical weights and random
 *   counters: the random counters agree exactly, the updated weights within
 *   tolerance;
 * - PGD's points stay in the eps-ball around x and, with clamp_image, in
 *   [0, 1];
 * - AutoAttack's components (APGD-CE, APGD-T, FAB-T, Square) on short
 *   budgets: both backends' points stay in the ball and [0, 1], agree
 *   normwise, and fool the model on the same samples but for at most one.
 *
 * Tolerances. Both backends compute in float, in different orders; what is
 * compared is the normwise relative error ||cuda - cpu|| / ||cpu||. The
 * forward (logits, losses) must agree to 1e-4. Gradients pass through
 * training-mode batch norm and several layers, where the CPU backend itself
 * needs 1e-3 against the double-accumulating reference
 * (tests/unit/test_models.c), so gradients and weight updates get 1e-3, and
 * the adversarial steps 3e-3: an input-gradient element within rounding of
 * zero may take the other sign on the other backend, which moves that one
 * pixel by 2 alpha (those pixels are counted and bounded separately).
 *
 * Without a CUDA device the program exits with 77 (meson: skipped). The
 * same program also runs, in every build, on the emulated GPU of
 * tests/cuda_emu (suite cuda_emu), where it cannot skip.
 */
#include "elle_test.h"

#include <string.h>
#include <unistd.h>

#include "cuda_test.h"

#define REL_FWD 1e-4
#define REL_GRAD 1e-3
#define REL_STEP 3e-3
#define EPS (8.0 / 255.0)

/* ---- helpers ----------------------------------------------------------------- */

#define TEST_RAND_SEED 0x2545F4914F6CDD1Dull
#include "test_rand.h"

typedef struct spec {
    const char *arch;
    int width, depth, hidden, classes, c, h, w;
    int normalize;
} spec;

static const spec small_cnn = {"small_cnn", 8, 2, 32, 10, 1, 16, 16, 0};
static const spec wrn = {"wide_resnet", 1, 10, 0, 10, 3, 16, 16, 1};
static const spec prn = {"preact_resnet18", 4, 0, 0, 10, 3, 16, 16, 0};

typedef struct world {
    elle_context *cpu, *gpu;
} world;

static int setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    if (elle_context_create(&w->cpu, ELLE_BACKEND_CPU, 0) != ELLE_OK ||
        elle_context_create(&w->gpu, ELLE_BACKEND_CUDA, 0) != ELLE_OK) {
        fprintf(stderr, "contexts: %s\n", elle_error_last()->message);
        return -1;
    }
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world *w = *state;
    elle_context_free(w->cpu);
    elle_context_free(w->gpu);
    free(w);
    return 0;
}

static elle_model *make_model(elle_context *ctx, const spec *s, uint64_t seed, int64_t max_batch)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, s->arch));
    if (s->width)
        assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, s->width));
    if (s->depth)
        assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_DEPTH, s->depth));
    if (s->hidden)
        assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, s->hidden));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, s->classes));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_CHANNELS, s->c));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, s->h));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, s->w));
    if (s->normalize) {
        const float mean[3] = {0.49f, 0.48f, 0.45f}, std[3] = {0.25f, 0.24f, 0.26f};
        assert_elle_ok(elle_model_config_set_normalization(cfg, mean, std, s->c));
    }
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, (double)seed));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    assert_elle_ok(elle_model_reserve(m, max_batch));
    return m;
}

static int64_t state_numel(const elle_model *m, int64_t i)
{
    int64_t dims[4];
    assert_elle_ok(elle_model_state_info(m, i, NULL, NULL, NULL, dims));
    return dims[0] * dims[1] * dims[2] * dims[3];
}

/* dst := src's parameters, buffers and counters, through host copies. */
static void copy_state(elle_model *dst, const elle_model *src)
{
    assert_int_equal(elle_model_state_count(dst), elle_model_state_count(src));
    for (int64_t i = 0; i < elle_model_state_count(src); i++) {
        int64_t numel = state_numel(src, i);
        void *buf = malloc((size_t)(numel > 0 ? numel : 1) * 8);
        assert_non_null(buf);
        assert_elle_ok(elle_model_state_get(src, i, buf));
        assert_elle_ok(elle_model_state_set(dst, i, buf));
        free(buf);
    }
}

/* dst := src through a safetensors file (elle_model_save / elle_model_load). */
static void copy_via_file(elle_model *dst, const elle_model *src)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/elle_cuda_model_%d.safetensors", (int)getpid());
    assert_elle_ok(elle_model_save(src, path));
    assert_elle_ok(elle_model_load(dst, path));
    unlink(path);
}

static int64_t image_numel(const elle_model *m)
{
    int64_t c, h, w;
    assert_elle_ok(elle_model_input_shape(m, &c, &h, &w));
    return c * h * w;
}

static float *random_images(const elle_model *m, int64_t n)
{
    int64_t count = n * image_numel(m);
    float *x = malloc((size_t)count * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < count; i++)
        x[i] = (float)frand();
    x[0] = 0.0f; /* the image's edges, where clamping bites */
    x[count - 1] = 1.0f;
    return x;
}

static int32_t *labels_for(const elle_model *m, int64_t n)
{
    int32_t *y = malloc((size_t)n * sizeof *y);
    assert_non_null(y);
    for (int64_t i = 0; i < n; i++)
        y[i] = (int32_t)((i * 7 + 3) % elle_model_num_classes(m));
    return y;
}

/* ||got - want|| / ||want|| <= rel (want != 0), else ||got|| <= rel. */
static void assert_rel_impl(const float *got, const float *want, size_t n, double rel,
                            const char *what, const char *file, int line)
{
    double e = elle_test_nmse(got, want, n);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(got[i])) {
            print_error("%s: element %zu is %g\n", what, i, (double)got[i]);
            _fail(file, line);
        }
    if (!(e <= rel * rel)) {
        print_error("%s: relative error %.3g above %.3g\n", what, sqrt(e), rel);
        _fail(file, line);
    }
}
#define assert_rel(got, want, n, rel, what) \
    assert_rel_impl((got), (want), (n), (rel), (what), __FILE__, __LINE__)

/* Every parameter (and its gradient when grads), buffer and counter of g
 * against c. With base != NULL (a snapshot of both models' common start,
 * from snapshot()), parameters are compared as updates p - base. */
static float **snapshot(const elle_model *m)
{
    int64_t ns = elle_model_state_count(m);
    float **s = calloc((size_t)ns, sizeof *s);
    assert_non_null(s);
    for (int64_t i = 0; i < ns; i++) {
        s[i] = malloc((size_t)state_numel(m, i) * 8);
        assert_non_null(s[i]);
        assert_elle_ok(elle_model_state_get(m, i, s[i]));
    }
    return s;
}

static void free_snapshot(const elle_model *m, float **s)
{
    for (int64_t i = 0; i < elle_model_state_count(m); i++)
        free(s[i]);
    free(s);
}

static void compare_models(const elle_model *g, const elle_model *c, int grads, float **base,
                           double rel, const char *what)
{
    for (int64_t i = 0; i < elle_model_state_count(c); i++) {
        const char *name;
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(c, i, &name, &kind, NULL, NULL));
        int64_t numel = state_numel(c, i);
        float *a = malloc((size_t)numel * 8), *b = malloc((size_t)numel * 8);
        assert_non_null(a);
        assert_non_null(b);
        char label[192];
        if (kind == ELLE_STATE_COUNTER) {
            int64_t ca, cb;
            assert_elle_ok(elle_model_state_get(c, i, &ca));
            assert_elle_ok(elle_model_state_get(g, i, &cb));
            if (ca != cb)
                fail_msg("%s: counter '%s' is %lld on cuda, %lld on cpu", what, name,
                         (long long)cb, (long long)ca);
        } else {
            assert_elle_ok(elle_model_state_get(c, i, a));
            assert_elle_ok(elle_model_state_get(g, i, b));
            if (base && kind == ELLE_STATE_PARAMETER)
                for (int64_t k = 0; k < numel; k++) {
                    a[k] -= base[i][k];
                    b[k] -= base[i][k];
                }
            snprintf(label, sizeof label, "%s: '%s'%s", what, name,
                     base && kind == ELLE_STATE_PARAMETER ? " update" : "");
            /* running statistics move by momentum * batch statistic: forward accuracy */
            assert_rel(b, a, (size_t)numel, kind == ELLE_STATE_BUFFER ? REL_GRAD : rel, label);
            if (grads && kind == ELLE_STATE_PARAMETER) {
                assert_elle_ok(elle_model_grad_get(c, i, a));
                assert_elle_ok(elle_model_grad_get(g, i, b));
                snprintf(label, sizeof label, "%s: gradient of '%s'", what, name);
                assert_rel(b, a, (size_t)numel, REL_GRAD, label);
            }
        }
        free(a);
        free(b);
    }
}

/* ---- forward and backward -------------------------------------------------------- */

static void compare_passes(world *wd, const spec *s, int64_t n, int via_file)
{
    print_message("%s, batch %lld\n", s->arch, (long long)n);
    elle_model *mc = make_model(wd->cpu, s, 11, n), *mg = make_model(wd->gpu, s, 99, n);
    if (via_file)
        copy_via_file(mg, mc);
    else
        copy_state(mg, mc);
    compare_models(mg, mc, 0, NULL, 0.0, "identical weights");
    const int64_t k = elle_model_num_classes(mc), count = n * image_numel(mc);
    float *x = random_images(mc, n);
    int32_t *y = labels_for(mc, n);
    float *zc = malloc((size_t)(n * k) * 4), *zg = malloc((size_t)(n * k) * 4);
    float *dc = malloc((size_t)count * 4), *dg = malloc((size_t)count * 4);
    float *lc = malloc((size_t)n * 4), *lg = malloc((size_t)n * 4);
    assert_true(zc && zg && dc && dg && lc && lg);

    for (int training = 1; training >= 0; training--) {
        assert_elle_ok(elle_model_set_training(mc, training));
        assert_elle_ok(elle_model_set_training(mg, training));
        assert_elle_ok(elle_model_forward(mc, x, n, zc));
        assert_elle_ok(elle_model_forward(mg, x, n, zg));
        assert_rel(zg, zc, (size_t)(n * k), REL_FWD, training ? "logits (train)" : "logits (eval)");
        /* elle_model_logits reads the same forward back */
        assert_elle_ok(elle_model_logits(mg, n, dg));
        assert_memory_equal(dg, zg, (size_t)(n * k) * 4);

        assert_elle_ok(elle_model_zero_grad(mc));
        assert_elle_ok(elle_model_zero_grad(mg));
        assert_elle_ok(elle_model_backward(mc, x, y, n, lc, dc));
        assert_elle_ok(elle_model_backward(mg, x, y, n, lg, dg));
        assert_rel(lg, lc, (size_t)n, REL_FWD, "per-sample losses");
        assert_rel(dg, dc, (size_t)count, REL_GRAD, "input gradient");
        compare_models(mg, mc, 1, NULL, REL_GRAD, training ? "train-mode pass" : "eval-mode pass");

        /* gradients accumulate: a second backward doubles them */
        float *g1 = malloc((size_t)elle_model_num_params(mg) * 4);
        assert_non_null(g1);
        int64_t first = -1;
        for (int64_t i = 0; i < elle_model_state_count(mg) && first < 0; i++) {
            elle_state_kind kind;
            assert_elle_ok(elle_model_state_info(mg, i, NULL, &kind, NULL, NULL));
            if (kind == ELLE_STATE_PARAMETER)
                first = i;
        }
        int64_t pn = state_numel(mg, first);
        assert_elle_ok(elle_model_grad_get(mg, first, g1));
        if (!training) { /* eval mode: the same forward, so exactly twice */
            float *g2 = malloc((size_t)pn * 4);
            assert_non_null(g2);
            assert_elle_ok(elle_model_backward(mg, x, y, n, NULL, NULL));
            assert_elle_ok(elle_model_grad_get(mg, first, g2));
            for (int64_t i = 0; i < pn; i++)
                g1[i] *= 2.0f;
            assert_rel(g2, g1, (size_t)pn, 1e-5, "accumulated gradient");
            free(g2);
        }
        free(g1);

        /* the input gradient alone equals the full backward's (both models:
         * a train-mode forward moves the running statistics) */
        assert_elle_ok(elle_model_input_grad(mc, x, y, n, dc, lc));
        assert_elle_ok(elle_model_input_grad(mg, x, y, n, dg, lg));
        assert_rel(dg, dc, (size_t)count, REL_GRAD, "input gradient alone");
    }
    /* the weights come back out through a file as well */
    copy_via_file(mc, mg);
    compare_models(mg, mc, 0, NULL, 0.0, "saved from cuda");
    free(x), free(y), free(zc), free(zg), free(dc), free(dg), free(lc), free(lg);
    elle_model_free(mc);
    elle_model_free(mg);
}

static void test_small_cnn(void **state)
{
    compare_passes(*state, &small_cnn, 8, 1);
    compare_passes(*state, &small_cnn, 3, 0);
}

static void test_wide_resnet(void **state)
{
    compare_passes(*state, &wrn, 4, 1); /* with the input normalisation layer */
}

static void test_preact_resnet18(void **state)
{
    compare_passes(*state, &prn, 4, 0);
}

/* ---- training steps ------------------------------------------------------------- */

typedef struct step_cfg {
    elle_attack_kind attack; /* -1: none */
    int regularizer;         /* -1: none, else an elle_regularizer_kind */
    double lambda;           /* its constant strength: large enough to steer the update */
    const char *what;
} step_cfg;

/* One training step on model m (training mode): attack, CE backward,
 * regularizer, SGD step. x_adv and the random counters are returned. */
static void train_step(elle_model *m, const step_cfg *sc, const float *x, const int32_t *y,
                       int64_t n, float *x_adv, uint64_t *attack_ctr, uint64_t *reg_ctr,
                       double *reg_value)
{
    elle_attack *a = NULL;
    elle_regularizer *r = NULL;
    elle_optimizer *o = NULL;
    assert_elle_ok(elle_model_set_training(m, 1));
    assert_elle_ok(elle_optimizer_create_sgd(&o, m));
    assert_elle_ok(elle_optimizer_set_param(o, ELLE_OPTIM_PARAM_LR, 0.05));
    assert_elle_ok(elle_optimizer_set_param(o, ELLE_OPTIM_PARAM_MOMENTUM, 0.9));
    assert_elle_ok(elle_optimizer_set_param(o, ELLE_OPTIM_PARAM_WEIGHT_DECAY, 5e-4));
    if ((int)sc->attack >= 0) {
        assert_elle_ok(elle_attack_create(&a, m, sc->attack));
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, EPS));
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 1));
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_SEED, 5));
        assert_elle_ok(elle_attack_set_rng_counter(a, 1000));
    }
    if (sc->regularizer >= 0) {
        assert_elle_ok(elle_regularizer_create(&r, m, (elle_regularizer_kind)sc->regularizer));
        assert_elle_ok(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_EPS, EPS));
        assert_elle_ok(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_ADAPTIVE, 0));
        assert_elle_ok(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_LAMBDA, sc->lambda));
        assert_elle_ok(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_SEED, 17));
        assert_elle_ok(elle_regularizer_set_rng_counter(r, 77));
    }
    const int64_t count = n * image_numel(m);
    float *loss = malloc((size_t)n * 4);
    assert_non_null(loss);
    assert_elle_ok(elle_model_zero_grad(m));
    if (a)
        assert_elle_ok(elle_attack_perturb(a, x, y, n, x_adv));
    else
        memcpy(x_adv, x, (size_t)count * 4);
    assert_elle_ok(elle_model_backward(m, x_adv, y, n, loss, NULL));
    *reg_value = 0.0;
    if (r)
        assert_elle_ok(elle_regularizer_apply(r, x, y, x_adv, n, reg_value));
    assert_elle_ok(elle_optimizer_step(o));
    *attack_ctr = 0;
    *reg_ctr = 0;
    if (a)
        assert_elle_ok(elle_attack_get_rng_counter(a, attack_ctr));
    if (r)
        assert_elle_ok(elle_regularizer_get_rng_counter(r, reg_ctr));
    free(loss);
    elle_attack_free(a);
    elle_regularizer_free(r);
    elle_optimizer_free(o);
}

static void compare_step(world *wd, const step_cfg *sc)
{
    print_message("step: %s\n", sc->what);
    const int64_t n = 8;
    /* ELLE forwards its three points as one batch of 3n */
    elle_model *mc = make_model(wd->cpu, &small_cnn, 3, 3 * n);
    elle_model *mg = make_model(wd->gpu, &small_cnn, 4, 3 * n);
    copy_state(mg, mc);
    float **base = snapshot(mc);
    const int64_t count = n * image_numel(mc);
    float *x = random_images(mc, n);
    int32_t *y = labels_for(mc, n);
    float *ac = malloc((size_t)count * 4), *ag = malloc((size_t)count * 4);
    assert_true(ac && ag);
    uint64_t actr_c, actr_g, rctr_c, rctr_g;
    double vc, vg;
    train_step(mc, sc, x, y, n, ac, &actr_c, &rctr_c, &vc);
    train_step(mg, sc, x, y, n, ag, &actr_g, &rctr_g, &vg);

    /* the random streams advanced identically */
    assert_true(actr_c == actr_g);
    assert_true(rctr_c == rctr_g);
    /* the adversarial points: equal up to rounding, but for the few pixels
     * whose input gradient is within rounding of zero (sign flips) */
    int64_t flips = 0;
    for (int64_t i = 0; i < count; i++) {
        assert_true(ag[i] >= 0.0f && ag[i] <= 1.0f);
        assert_true(fabs((double)ag[i] - (double)x[i]) <= EPS + 1e-6);
        if (fabs((double)ag[i] - (double)ac[i]) > 1e-5)
            flips++;
    }
    if (flips > count / 500 + 2)
        fail_msg("%s: %lld of %lld adversarial pixels differ between the backends", sc->what,
                 (long long)flips, (long long)count);
    if (sc->regularizer >= 0 &&
        !(fabs(vg - vc) <= REL_STEP * fabs(vc) + 1e-6))
        fail_msg("%s: regularizer value %.9g on cuda, %.9g on cpu", sc->what, vg, vc);
    compare_models(mg, mc, 1, base, REL_STEP, sc->what);
    free_snapshot(mc, base);
    free(x), free(y), free(ac), free(ag);
    elle_model_free(mc);
    elle_model_free(mg);
}

static void test_fgsm_step(void **state)
{
    const step_cfg sc = {ELLE_ATTACK_RS_FGSM, -1, 0.0, "RS-FGSM training step"};
    compare_step(*state, &sc);
}

static void test_elle_step(void **state)
{
    const step_cfg sc = {ELLE_ATTACK_FGSM, ELLE_REGULARIZER_ELLE, 100.0,
                         "FGSM + ELLE training step"};
    compare_step(*state, &sc);
}

static void test_gradalign_step(void **state)
{
    const step_cfg sc = {ELLE_ATTACK_FGSM, ELLE_REGULARIZER_GRADALIGN, 2.0,
                         "FGSM + GradAlign training step (tangent passes)"};
    compare_step(*state, &sc);
}

/* ---- PGD's constraints ----------------------------------------------------------- */

static void check_pgd(elle_model *m, int64_t n, int clamp, int restarts, int early)
{
    elle_attack *a = NULL;
    assert_elle_ok(elle_attack_create(&a, m, ELLE_ATTACK_PGD));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, EPS));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_ALPHA, 4.0 / 255.0));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 7));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_RESTARTS, restarts));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EARLY_STOP, early));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, clamp));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_SEED, 123));
    const int64_t count = n * image_numel(m);
    float *x = random_images(m, n), *adv = malloc((size_t)count * 4);
    int32_t *y = labels_for(m, n);
    assert_non_null(adv);
    assert_elle_ok(elle_attack_perturb(a, x, y, n, adv));
    const float eps = (float)EPS;
    int64_t moved = 0;
    for (int64_t i = 0; i < count; i++) {
        /* the projection is min(max(x, x0 - eps), x0 + eps) in float
         * (backend.h), so the float bounds x0 -+ eps hold exactly */
        const float lo = x[i] - eps, hi = x[i] + eps;
        if (!(adv[i] >= lo && adv[i] <= hi))
            fail_msg("pgd: pixel %lld = %.9g outside [%.9g, %.9g]", (long long)i, (double)adv[i],
                     (double)lo, (double)hi);
        if (clamp && !(adv[i] >= 0.0f && adv[i] <= 1.0f))
            fail_msg("pgd (clamp_image): pixel %lld = %.9g outside [0, 1]", (long long)i,
                     (double)adv[i]);
        moved += adv[i] != x[i];
    }
    assert_true(moved > count / 2); /* the attack did move the points */
    free(x), free(adv), free(y);
    elle_attack_free(a);
}

static void test_pgd_bounds(void **state)
{
    world *wd = *state;
    elle_model *m = make_model(wd->gpu, &small_cnn, 8, 16);
    for (int training = 0; training <= 1; training++) {
        assert_elle_ok(elle_model_set_training(m, training));
        check_pgd(m, 16, 1, 1, 0);
        check_pgd(m, 5, 1, 3, 0); /* restarts: the per-sample selection copies rows */
        check_pgd(m, 16, 1, 2, 1); /* early stop */
        check_pgd(m, 9, 0, 1, 0);  /* no clamp: the ball alone */
    }
    elle_model_free(m);
}

/* ---- AutoAttack's components, CPU against CUDA -------------------------------- */

/* The model's predicted class (argmax of the logits) per sample. */
static void predict(elle_model *m, const float *x, int64_t n, int32_t *out)
{
    const int64_t k = elle_model_num_classes(m);
    float *z = malloc((size_t)(n * k) * sizeof *z);
    assert_non_null(z);
    assert_elle_ok(elle_model_forward(m, x, n, z));
    for (int64_t i = 0; i < n; i++) {
        int32_t best = 0;
        for (int32_t j = 1; j < k; j++)
            if (z[i * k + j] > z[i * k + best])
                best = j;
        out[i] = best;
    }
    free(z);
}

/* One component with short budgets on both contexts from identical weights
 * and seeds: both answers lie in the eps-ball and [0, 1], the points agree
 * (normwise), and the two backends fool the model on the same samples but
 * for at most one, which rounding near a decision boundary may flip. */
static void compare_attack(world *wd, elle_attack_kind kind)
{
    const int64_t n = 12;
    elle_model *mc = make_model(wd->cpu, &small_cnn, 21, n);
    elle_model *mg = make_model(wd->gpu, &small_cnn, 21, n);
    copy_state(mg, mc);
    assert_elle_ok(elle_model_set_training(mc, 0));
    assert_elle_ok(elle_model_set_training(mg, 0));
    const int64_t count = n * image_numel(mc);
    float *x = random_images(mc, n);
    /* each image labelled with the model's clean prediction: every sample
     * starts correctly classified, only the attack can fool the model */
    int32_t y[12], pred[2][12];
    predict(mc, x, n, y);
    float *adv[2];
    elle_model *models[2] = {mc, mg};
    for (int b = 0; b < 2; b++) {
        elle_attack *a = NULL;
        assert_elle_ok(elle_attack_create(&a, models[b], kind));
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, 4.0 / 255.0));
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_SEED, 5));
        if (kind == ELLE_ATTACK_SQUARE)
            assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_N_QUERIES, 40));
        else
            assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 10));
        if (kind == ELLE_ATTACK_APGD_T || kind == ELLE_ATTACK_FAB_T)
            assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_N_TARGET_CLASSES, 3));
        adv[b] = malloc((size_t)count * sizeof(float));
        assert_non_null(adv[b]);
        assert_elle_ok(elle_attack_perturb(a, x, y, n, adv[b]));
        elle_attack_free(a);
        const float eps = (float)(4.0 / 255.0);
        for (int64_t i = 0; i < count; i++)
            if (!(adv[b][i] >= x[i] - eps && adv[b][i] <= x[i] + eps && adv[b][i] >= 0.0f &&
                  adv[b][i] <= 1.0f))
                fail_msg("%s on %s: pixel %lld = %.9g leaves the ball or [0, 1] (x %.9g)",
                         elle_attack_kind_name(kind), b ? "cuda" : "cpu", (long long)i,
                         (double)adv[b][i], (double)x[i]);
        predict(models[b], adv[b], n, pred[b]);
    }
    int differ = 0, fooled_cpu = 0;
    for (int64_t i = 0; i < n; i++) {
        differ += (pred[0][i] != y[i]) != (pred[1][i] != y[i]);
        fooled_cpu += pred[0][i] != y[i];
    }
    double dd = 0.0, nn = 0.0;
    for (int64_t i = 0; i < count; i++) {
        dd += ((double)adv[1][i] - adv[0][i]) * ((double)adv[1][i] - adv[0][i]);
        nn += (double)adv[0][i] * adv[0][i];
    }
    printf("%s: cpu fools %d of %lld, cuda differs on %d, points differ by %.2g (normwise)\n",
           elle_attack_kind_name(kind), fooled_cpu, (long long)n, differ, sqrt(dd / nn));
    assert_true(differ <= 1);
    assert_rel(adv[1], adv[0], (size_t)count, 0.05, "adversarial points");
    free(adv[0]), free(adv[1]), free(x);
    elle_model_free(mc);
    elle_model_free(mg);
}

static void test_autoattack_components(void **state)
{
    const elle_attack_kind kinds[] = {ELLE_ATTACK_APGD_CE, ELLE_ATTACK_APGD_T, ELLE_ATTACK_FAB_T,
                                      ELLE_ATTACK_SQUARE};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        compare_attack(*state, kinds[i]);
}

int main(void)
{
    if (elle_cuda_test_unavailable())
        return ELLE_CUDA_TEST_SKIP;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_cnn),
        cmocka_unit_test(test_wide_resnet),
        cmocka_unit_test(test_preact_resnet18),
        cmocka_unit_test(test_fgsm_step),
        cmocka_unit_test(test_elle_step),
        cmocka_unit_test(test_gradalign_step),
        cmocka_unit_test(test_pgd_bounds),
        cmocka_unit_test(test_autoattack_components),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
