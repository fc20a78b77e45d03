/*
 * Optimiser and schedules: the backend's fused SGD op against a hand loop
 * (bit for bit) and against torch.optim.SGD's algorithm in double; the
 * optimizer handle on a real model (fused and composed paths, two steps
 * from one gradient, state get/set); every schedule at chosen steps against
 * numbers worked out by hand below; parameter bounds, NaN and name lookups.
 */
#include <string.h>

#include "elle_test.h"

#include "backend/backend.h"
#include "core/context.h"

/* ---- helpers -------------------------------------------------------------------- */

/* One SGD step in float, written as the reference op documents it. */
static void hand_sgd(int64_t n, float lr, float m, float wd, int nesterov, float *p,
                     const float *grad, float *buf)
{
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i] + wd * p[i];
        float b = m * buf[i] + g;
        buf[i] = b;
        p[i] -= lr * (nesterov ? g + m * b : b);
    }
}

/* torch.optim.SGD (_single_tensor_sgd, dampening 0) in double: the momentum
 * buffer is created as a clone of d_p on the first step. */
static void torch_sgd(int64_t n, double lr, double m, double wd, int nesterov, double *p,
                      const double *grad, double *buf, int first)
{
    for (int64_t i = 0; i < n; i++) {
        double d_p = grad[i] + wd * p[i];
        buf[i] = first ? d_p : m * buf[i] + d_p;
        if (nesterov)
            d_p = d_p + m * buf[i];
        else
            d_p = buf[i];
        p[i] = p[i] - lr * d_p;
    }
}

/* Deterministic values in [-1, 1). */
static float pseudo(uint32_t i)
{
    uint32_t h = i * 2654435761u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return (float)(h & 0xffffff) / 8388608.0f - 1.0f;
}

typedef struct fixture {
    elle_context *ctx;
    elle_model *model;
    int64_t n; /* trainable scalars */
    float *x;
    int32_t *y;
} fixture;

enum { BATCH = 6 };

/* A small CNN on (1, 12, 12) inputs, 3 classes. */
static int make_fixture(fixture *f, elle_backend kind)
{
    memset(f, 0, sizeof *f);
    elle_model_config *cfg = NULL;
    int rc = elle_context_create(&f->ctx, kind, 0);
    if (rc < 0)
        return rc;
    assert_elle_ok(elle_model_config_create(&cfg, "small_cnn"));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, 12));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, 12));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 4));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_DEPTH, 1));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, 8));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, 3));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, 7));
    assert_elle_ok(elle_model_create(&f->model, f->ctx, cfg));
    elle_model_config_free(cfg);
    assert_elle_ok(elle_model_reserve(f->model, BATCH));
    f->n = elle_model_num_params(f->model);
    f->x = malloc(BATCH * 144 * sizeof(float));
    f->y = malloc(BATCH * sizeof(int32_t));
    assert_non_null(f->x);
    assert_non_null(f->y);
    for (int i = 0; i < BATCH * 144; i++)
        f->x[i] = 0.5f + 0.5f * pseudo((uint32_t)i + 11);
    for (int i = 0; i < BATCH; i++)
        f->y[i] = i % 3;
    return ELLE_OK;
}

static void free_fixture(fixture *f)
{
    elle_model_free(f->model);
    elle_context_free(f->ctx);
    free(f->x);
    free(f->y);
}

/* All parameters (or their gradients), packed in state order. */
static void get_params(elle_model *m, float *out, int grads)
{
    int64_t count = elle_model_state_count(m);
    for (int64_t i = 0; i < count; i++) {
        elle_state_kind kind;
        int64_t d[4];
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
        if (kind != ELLE_STATE_PARAMETER)
            continue;
        if (grads)
            assert_elle_ok(elle_model_grad_get(m, i, out));
        else
            assert_elle_ok(elle_model_state_get(m, i, out));
        out += d[0] * d[1] * d[2] * d[3];
    }
}

static void fresh_gradient(fixture *f)
{
    assert_elle_ok(elle_model_zero_grad(f->model));
    assert_elle_ok(elle_model_backward(f->model, f->x, f->y, BATCH, NULL, NULL));
}

/* ---- the backend op ------------------------------------------------------------- */

static void test_ref_sgd_update_exact(void **state)
{
    (void)state;
    elle__backend be;
    assert_elle_ok(elle__backend_ref_create(&be));
    assert_non_null(be.ops->sgd_update);
    enum { N = 257 };
    static const struct {
        float lr, m, wd;
        int nesterov;
    } cases[] = {
        {0.1f, 0.9f, 5e-4f, 0}, {0.2f, 0.8f, 5e-4f, 1}, {0.05f, 0.0f, 0.0f, 0},
        {0.3f, 0.95f, 0.1f, 1}, {0.0f, 0.9f, 5e-4f, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float p[N], g[N], buf[N], hp[N], hbuf[N];
        double dp[N], dg[N], dbuf[N];
        for (int i = 0; i < N; i++) {
            p[i] = hp[i] = pseudo((uint32_t)(i + 1000 * c));
            g[i] = pseudo((uint32_t)(i + 7919 + 1000 * c));
            buf[i] = hbuf[i] = 0.0f; /* a fresh buffer, as PyTorch's first step */
            dp[i] = p[i];
            dg[i] = g[i];
        }
        for (int step = 0; step < 4; step++) {
            assert_elle_ok(be.ops->sgd_update(&be, N, cases[c].lr, cases[c].m, cases[c].wd,
                                              cases[c].nesterov, p, g, buf));
            hand_sgd(N, cases[c].lr, cases[c].m, cases[c].wd, cases[c].nesterov, hp, g, hbuf);
            torch_sgd(N, cases[c].lr, cases[c].m, cases[c].wd, cases[c].nesterov, dp, dg, dbuf,
                      step == 0);
            /* bit for bit against the hand loop */
            assert_memory_equal(p, hp, sizeof p);
            assert_memory_equal(buf, hbuf, sizeof buf);
        }
        /* and the torch algorithm in double, within float rounding of 4 steps */
        for (int i = 0; i < N; i++) {
            assert_true(fabs((double)p[i] - dp[i]) <= 1e-6 + 1e-5 * fabs(dp[i]));
            assert_true(fabs((double)buf[i] - dbuf[i]) <= 1e-5 + 1e-5 * fabs(dbuf[i]));
        }
    }
    /* the first step from a zero buffer gives buf = g + wd*p exactly */
    float p1[3] = {1.0f, -2.0f, 0.5f}, g1[3] = {0.25f, 0.5f, -1.0f}, b1[3] = {0, 0, 0};
    assert_elle_ok(be.ops->sgd_update(&be, 3, 0.0f, 0.9f, 0.5f, 0, p1, g1, b1));
    /* g + wd*p = 0.25 + 0.5*1 = 0.75; 0.5 + 0.5*(-2) = -0.5; -1 + 0.5*0.5 = -0.75; lr 0: p kept */
    assert_true(b1[0] == 0.75f && b1[1] == -0.5f && b1[2] == -0.75f);
    assert_true(p1[0] == 1.0f && p1[1] == -2.0f && p1[2] == 0.5f);
    /* nesterov, hand arithmetic: p=1, grad=0.5, wd=0, m=0.5, lr=0.1, buf=0:
     * g = 0.5; buf = 0.5; p -= 0.1*(0.5 + 0.5*0.5) = 0.075 -> 0.925 */
    float p2 = 1.0f, g2 = 0.5f, b2 = 0.0f;
    assert_elle_ok(be.ops->sgd_update(&be, 1, 0.1f, 0.5f, 0.0f, 1, &p2, &g2, &b2));
    assert_true(b2 == 0.5f);
    assert_true(fabsf(p2 - 0.925f) <= 1e-7f);
    /* bad arguments */
    assert_elle_status(be.ops->sgd_update(&be, -1, 0.1f, 0.9f, 0.0f, 0, &p2, &g2, &b2),
                       ELLE_EINVAL);
    assert_elle_status(be.ops->sgd_update(&be, 1, 0.1f, 0.9f, 0.0f, 0, NULL, &g2, &b2),
                       ELLE_EINVAL);
    assert_elle_status(be.ops->sgd_update(&be, 1, 0.1f, 0.9f, 0.0f, 0, &p2, NULL, &b2),
                       ELLE_EINVAL);
    assert_elle_status(be.ops->sgd_update(&be, 1, 0.1f, 0.9f, 0.0f, 0, &p2, &g2, NULL),
                       ELLE_EINVAL);
}

/* ---- the optimizer on a model ----------------------------------------------------- */

/* Steps of the optimizer against the hand loop on the packed parameters;
 * exact on the reference backend's fused op, within rounding otherwise. */
static void check_optimizer_steps(fixture *f, int nesterov, double tol)
{
    elle_optimizer *opt = NULL;
    assert_elle_ok(elle_optimizer_create_sgd(&opt, f->model));
    assert_string_equal(elle_optimizer_name(opt), "sgd");
    assert_int_equal(elle_optimizer_state_size(opt), f->n);
    assert_elle_ok(elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_NESTEROV, nesterov));
    assert_elle_ok(elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_WEIGHT_DECAY, 0.01));
    size_t bytes = (size_t)f->n * sizeof(float);
    float *p = malloc(bytes), *g = malloc(bytes), *buf = calloc((size_t)f->n, sizeof(float));
    float *got = malloc(bytes), *gbuf = malloc(bytes), *g_after = malloc(bytes);
    assert_non_null(p);
    assert_non_null(g);
    assert_non_null(buf);
    assert_non_null(got);
    assert_non_null(gbuf);
    assert_non_null(g_after);
    get_params(f->model, p, 0);
    static const double lrs[] = {0.0, 0.1, 0.05, 0.2};
    static const double ms[] = {0.9, 0.85, 0.8, 0.9};
    for (int step = 0; step < 4; step++) {
        /* a new gradient every other step; the steps in between reuse it,
         * like the reference's second step per batch */
        if (step % 2 == 0)
            fresh_gradient(f);
        get_params(f->model, g, 1);
        assert_elle_ok(elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_LR, lrs[step]));
        assert_elle_ok(elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_MOMENTUM, ms[step]));
        assert_elle_ok(elle_optimizer_step(opt));
        hand_sgd(f->n, (float)lrs[step], (float)ms[step], 0.01f, nesterov, p, g, buf);
        get_params(f->model, got, 0);
        assert_elle_ok(elle_optimizer_state_get(opt, gbuf));
        /* the gradient is read, never written */
        get_params(f->model, g_after, 1);
        assert_memory_equal(g, g_after, bytes);
        if (tol == 0.0) {
            assert_memory_equal(got, p, bytes);
            assert_memory_equal(gbuf, buf, bytes);
        } else {
            assert_floats_close(got, p, (size_t)f->n, tol, tol);
            assert_floats_close(gbuf, buf, (size_t)f->n, tol, tol);
        }
    }
    /* zero_state: the buffer reads back as zeros */
    assert_elle_ok(elle_optimizer_zero_state(opt));
    assert_elle_ok(elle_optimizer_state_get(opt, gbuf));
    for (int64_t i = 0; i < f->n; i++)
        assert_true(gbuf[i] == 0.0f);
    elle_optimizer_free(opt);
    free(p);
    free(g);
    free(buf);
    free(got);
    free(gbuf);
    free(g_after);
}

static void test_optimizer_reference(void **state)
{
    (void)state;
    fixture f;
    assert_elle_ok(make_fixture(&f, ELLE_BACKEND_REFERENCE));
    check_optimizer_steps(&f, 0, 0.0);
    check_optimizer_steps(&f, 1, 0.0);
    free_fixture(&f);
}

/* The composed path (a backend without sgd_update): the reference backend
 * with that op removed from a copy of its table. */
static void test_optimizer_composed_fallback(void **state)
{
    (void)state;
    fixture f;
    assert_elle_ok(make_fixture(&f, ELLE_BACKEND_REFERENCE));
    elle__backend_ops ops = *f.ctx->be.ops;
    const elle__backend_ops *saved = f.ctx->be.ops;
    ops.sgd_update = NULL;
    f.ctx->be.ops = &ops;
    check_optimizer_steps(&f, 0, 2e-6);
    check_optimizer_steps(&f, 1, 2e-6);
    f.ctx->be.ops = saved;
    free_fixture(&f);
}

/* The CPU backend (its OpenMP sgd_update, or the composed path on a build
 * without it) matches the hand loop within float rounding. */
static void test_optimizer_cpu(void **state)
{
    (void)state;
    fixture f;
    if (!elle_backend_available(ELLE_BACKEND_CPU) || make_fixture(&f, ELLE_BACKEND_CPU) < 0) {
        print_message("CPU backend unavailable (%s); skipped\n", elle_error_last()->message);
        skip();
    }
    check_optimizer_steps(&f, 0, 2e-6);
    check_optimizer_steps(&f, 1, 2e-6);
    free_fixture(&f);
}

static void test_optimizer_state_roundtrip(void **state)
{
    (void)state;
    fixture f;
    assert_elle_ok(make_fixture(&f, ELLE_BACKEND_REFERENCE));
    elle_optimizer *a = NULL, *b = NULL;
    assert_elle_ok(elle_optimizer_create_sgd(&a, f.model));
    assert_elle_ok(elle_optimizer_create_sgd(&b, f.model));
    fresh_gradient(&f);
    assert_elle_ok(elle_optimizer_step(a));
    size_t bytes = (size_t)f.n * sizeof(float);
    float *s = malloc(bytes), *s2 = malloc(bytes);
    assert_non_null(s);
    assert_non_null(s2);
    assert_elle_ok(elle_optimizer_state_get(a, s));
    /* after one step from zero the buffer is g + wd*p: not all zero */
    int nonzero = 0;
    for (int64_t i = 0; i < f.n; i++)
        nonzero |= s[i] != 0.0f;
    assert_true(nonzero);
    assert_elle_ok(elle_optimizer_state_set(b, s));
    assert_elle_ok(elle_optimizer_state_get(b, s2));
    assert_memory_equal(s, s2, bytes);
    /* a non-finite value is refused and leaves the state untouched */
    s[f.n / 2] = NAN;
    assert_elle_status(elle_optimizer_state_set(b, s), ELLE_EINVAL);
    assert_elle_ok(elle_optimizer_state_get(b, s));
    assert_memory_equal(s, s2, bytes);
    assert_elle_status(elle_optimizer_state_get(NULL, s), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_state_get(a, NULL), ELLE_EINVAL);
    assert_int_equal(elle_optimizer_state_size(NULL), -1);
    elle_optimizer_free(a);
    elle_optimizer_free(b);
    elle_optimizer_free(NULL);
    free(s);
    free(s2);
    free_fixture(&f);
}

static void test_optimizer_params(void **state)
{
    (void)state;
    fixture f;
    assert_elle_ok(make_fixture(&f, ELLE_BACKEND_REFERENCE));
    elle_optimizer *o = NULL;
    assert_elle_status(elle_optimizer_create_sgd(NULL, f.model), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_create_sgd(&o, NULL), ELLE_EINVAL);
    assert_null(o);
    assert_elle_ok(elle_optimizer_create_sgd(&o, f.model));
    double v, lo, hi;
    /* defaults of spec §4 */
    assert_elle_ok(elle_optimizer_get_param(o, ELLE_OPTIM_PARAM_MOMENTUM, &v));
    assert_true(v == 0.9);
    assert_elle_ok(elle_optimizer_get_param(o, ELLE_OPTIM_PARAM_WEIGHT_DECAY, &v));
    assert_true(v == 5e-4);
    assert_elle_ok(elle_optimizer_get_param(o, ELLE_OPTIM_PARAM_NESTEROV, &v));
    assert_true(v == 0.0);
    assert_elle_ok(elle_optimizer_get_param(o, ELLE_OPTIM_PARAM_LR, &v));
    assert_true(v == 0.1);
    /* bounds, NaN, integrality, unknown ids */
    assert_elle_ok(elle_optimizer_param_bounds(ELLE_OPTIM_PARAM_MOMENTUM, &lo, &hi));
    assert_true(lo == 0.0 && hi == 1.0);
    assert_elle_status(elle_optimizer_set_param(o, ELLE_OPTIM_PARAM_MOMENTUM, 1.5), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_set_param(o, ELLE_OPTIM_PARAM_LR, -0.1), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_set_param(o, ELLE_OPTIM_PARAM_LR, NAN), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_set_param(o, ELLE_OPTIM_PARAM_LR, INFINITY), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_set_param(o, ELLE_OPTIM_PARAM_NESTEROV, 0.5), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_set_param(o, (elle_optim_param)99, 1), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_get_param(o, (elle_optim_param)99, &v), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_param_bounds((elle_optim_param)0, &lo, &hi), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_set_param(NULL, ELLE_OPTIM_PARAM_LR, 0.1), ELLE_EINVAL);
    /* a refused value leaves the old one */
    assert_elle_ok(elle_optimizer_get_param(o, ELLE_OPTIM_PARAM_LR, &v));
    assert_true(v == 0.1);
    /* names both ways */
    static const char *const names[] = {"lr", "momentum", "weight_decay", "nesterov"};
    for (int i = 0; i < 4; i++) {
        elle_optim_param id;
        assert_elle_ok(elle_optimizer_param_from_name(names[i], &id));
        assert_int_equal(id, i + 1);
        assert_string_equal(elle_optimizer_param_name(id), names[i]);
    }
    elle_optim_param id;
    assert_elle_status(elle_optimizer_param_from_name("learning_rate", &id), ELLE_EINVAL);
    assert_elle_status(elle_optimizer_param_from_name(NULL, &id), ELLE_EINVAL);
    assert_null(elle_optimizer_param_name((elle_optim_param)42));
    assert_null(elle_optimizer_name(NULL));
    assert_elle_status(elle_optimizer_step(NULL), ELLE_EINVAL);
    elle_optimizer_free(o);
    free_fixture(&f);
}

/* ---- schedules -------------------------------------------------------------------- */

static elle_schedule *make_schedule(elle_schedule_kind kind, double epochs, double batches,
                                    double steps_per_batch)
{
    elle_schedule *s = NULL;
    assert_elle_ok(elle_schedule_create(&s, kind));
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_EPOCHS, epochs));
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_BATCHES_PER_EPOCH, batches));
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH,
                                           steps_per_batch));
    return s;
}

static void expect_at(const elle_schedule *s, int64_t step, double lr, double m, int line)
{
    double got_lr = NAN, got_m = NAN;
    elle_test_ok(elle_schedule_at(s, step, &got_lr, &got_m), "elle_schedule_at", __FILE__, line);
    if (!(fabs(got_lr - lr) <= 1e-12 + 1e-12 * fabs(lr)) ||
        !(fabs(got_m - m) <= 1e-12 + 1e-12 * fabs(m))) {
        print_error("step %lld: lr %.17g momentum %.17g, expected %.17g and %.17g\n",
                    (long long)step, got_lr, got_m, lr, m);
        _fail(__FILE__, line);
    }
}
#define EXPECT_AT(s, step, lr, m) expect_at((s), (step), (lr), (m), __LINE__)

/* CyclicLR(base_lr=0, max_lr=0.2, step_size_up=500, step_size_down=500):
 * N = 10 epochs x 100 batches = 1000, total_size = 1000, step_ratio = 0.5.
 *   cycle = floor(1 + t/1000), x = 1 + t/1000 - cycle,
 *   scale = x/0.5 if x <= 0.5 else (x - 1)/(0.5 - 1),
 *   lr = 0 + 0.2*scale, momentum = 0.9 - (0.9 - 0.8)*scale. */
static void test_schedule_short(void **state)
{
    (void)state;
    elle_schedule *s = make_schedule(ELLE_SCHEDULE_SHORT, 10, 100, 1);
    assert_int_equal(elle_schedule_total_steps(s), 1000);
    /* t = 0: x = 0, scale 0: lr 0, momentum 0.9 (LR minimum) */
    EXPECT_AT(s, 0, 0.0, 0.9);
    /* t = 250: x = 0.25, scale = 0.25/0.5 = 0.5: lr 0.1, momentum 0.9 - 0.05 = 0.85 */
    EXPECT_AT(s, 250, 0.1, 0.85);
    /* t = 500: x = 0.5, scale 1: lr 0.2 (peak), momentum 0.8 */
    EXPECT_AT(s, 500, 0.2, 0.8);
    /* t = 750: x = 0.75, scale = (0.75 - 1)/(0.5 - 1) = 0.5: lr 0.1, momentum 0.85 */
    EXPECT_AT(s, 750, 0.1, 0.85);
    /* t = 999 (last step): x = 0.999, scale = -0.001/-0.5 = 0.002:
     * lr 0.0004, momentum 0.9 - 0.1*0.002 = 0.8998 */
    EXPECT_AT(s, 999, 0.2 * ((0.999 - 1.0) / (0.5 - 1.0)), 0.9 - 0.1 * ((0.999 - 1.0) / -0.5));
    EXPECT_AT(s, 999, 0.0004, 0.8998);
    /* t = 1: x = 0.001, scale 0.002 */
    EXPECT_AT(s, 1, 0.0004, 0.8998);
    assert_elle_status(elle_schedule_at(s, 1000, NULL, NULL), ELLE_EINVAL);
    assert_elle_status(elle_schedule_at(s, -1, NULL, NULL), ELLE_EINVAL);
    /* no momentum cycling: the momentum stays put */
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_CYCLE_MOMENTUM, 0));
    EXPECT_AT(s, 500, 0.2, 0.9);
    elle_schedule_free(s);

    /* the CIFAR-10 run of the spec: 30 epochs x 383 batches = 11490, peak
     * 0.2 at t = 5745 (x = 0.5 exactly) */
    s = make_schedule(ELLE_SCHEDULE_SHORT, 30, 383, 1);
    EXPECT_AT(s, 5745, 0.2, 0.8);
    EXPECT_AT(s, 0, 0.0, 0.9);
    elle_schedule_free(s);
}

/* SVHN: up 2/5, down 3/5. N = 1000: step_size_up = 400, down = 600, step_ratio 0.4. */
static void test_schedule_short_svhn(void **state)
{
    (void)state;
    elle_schedule *s = make_schedule(ELLE_SCHEDULE_SHORT, 10, 100, 1);
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_UP_FRACTION, 0.4));
    EXPECT_AT(s, 0, 0.0, 0.9);
    /* t = 100: x = 0.1, scale = 0.1/0.4 = 0.25: lr 0.05, momentum 0.875 */
    EXPECT_AT(s, 100, 0.05, 0.875);
    /* t = 200: scale 0.5: lr 0.1, momentum 0.85 */
    EXPECT_AT(s, 200, 0.1, 0.85);
    /* t = 400: peak */
    EXPECT_AT(s, 400, 0.2, 0.8);
    /* t = 700: x = 0.7, scale = (0.7 - 1)/(0.4 - 1) = 0.5 */
    EXPECT_AT(s, 700, 0.1, 0.85);
    /* t = 999: scale = (0.999 - 1)/(0.4 - 1) = 1/600: lr 0.2/600 */
    EXPECT_AT(s, 999, 0.2 / 600.0, 0.9 - 0.1 / 600.0);
    /* a short schedule needs a rising part */
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_UP_FRACTION, 0.0));
    assert_elle_status(elle_schedule_at(s, 0, NULL, NULL), ELLE_EINVAL);
    elle_schedule_free(s);
}

/* Two optimizer steps per batch (the ELLE code, Trainer.train): step(lr_t),
 * scheduler.step(), step(lr_t+1) — the per-batch scheduler moves ONCE per
 * batch, between the two steps, so step k of batch i sees counter i + k and
 * the second step of batch i shares its values with the first of batch i+1.
 * The spec (reference-implementations.md §4.3) and the released code agree on
 * this; docs/training.md explains why it is not "twice per batch". */
static void test_schedule_two_steps_per_batch(void **state)
{
    (void)state;
    elle_schedule *s = make_schedule(ELLE_SCHEDULE_SHORT, 10, 100, 2);
    assert_int_equal(elle_schedule_total_steps(s), 2000); /* 1000 batches x 2 */
    EXPECT_AT(s, 0, 0.0, 0.9);        /* batch 0, first step: t = 0 */
    EXPECT_AT(s, 1, 0.0004, 0.8998);  /* batch 0, second step: t = 1 */
    EXPECT_AT(s, 2, 0.0004, 0.8998);  /* batch 1, first step: t = 1 again */
    EXPECT_AT(s, 3, 0.0008, 0.8996);  /* batch 1, second step: t = 2 (scale 0.004) */
    EXPECT_AT(s, 1000, 0.2, 0.8);     /* batch 500, first step: t = 500, the peak */
    EXPECT_AT(s, 1001, 0.2 * (0.499 / 0.5), 0.9 - 0.1 * (0.499 / 0.5)); /* t = 501 */
    /* the run's last step, batch 999's second: t = 1000 = N: cycle 2, x 0: lr 0 */
    EXPECT_AT(s, 1999, 0.0, 0.9);
    elle_schedule_free(s);

    /* per-epoch shapes: both steps of a batch use the epoch's values, also
     * across the epoch boundary (long: 4 epochs x 3 batches, milestones 2, 3) */
    s = make_schedule(ELLE_SCHEDULE_LONG, 4, 3, 2);
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_LR_MAX, 0.1));
    EXPECT_AT(s, 10, 0.1, 0.9);  /* batch 5 = epoch 1, last batch, first step */
    EXPECT_AT(s, 11, 0.1, 0.9);  /* its second step: still epoch 1 */
    EXPECT_AT(s, 12, 0.1 * 0.1, 0.9); /* batch 6 = epoch 2 */
    elle_schedule_free(s);
}

/* MultiStepLR(gamma 0.1, milestones [int(0.5 E), int(0.75 E)]), per epoch. */
static void test_schedule_long(void **state)
{
    (void)state;
    /* E = 200, 10 batches per epoch: milestones 100 and 150; lr_max default 0.1 */
    elle_schedule *s = make_schedule(ELLE_SCHEDULE_LONG, 200, 10, 1);
    double lr;
    assert_elle_ok(elle_schedule_get_param(s, ELLE_SCHEDULE_PARAM_LR_MAX, &lr));
    assert_true(lr == 0.1);
    EXPECT_AT(s, 0, 0.1, 0.9);
    EXPECT_AT(s, 999, 0.1, 0.9);          /* epoch 99, last batch */
    EXPECT_AT(s, 1000, 0.1 * 0.1, 0.9);   /* epoch 100: /10 */
    EXPECT_AT(s, 1499, 0.1 * 0.1, 0.9);   /* epoch 149 */
    EXPECT_AT(s, 1500, 0.1 * 0.1 * 0.1, 0.9); /* epoch 150: /100 */
    EXPECT_AT(s, 1999, 0.1 * 0.1 * 0.1, 0.9); /* epoch 199 */
    elle_schedule_free(s);
    /* E = 30: milestones int(15) = 15 and int(22.5) = 22 (truncated) */
    s = make_schedule(ELLE_SCHEDULE_LONG, 30, 1, 1);
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_LR_MAX, 0.01)); /* SVHN */
    EXPECT_AT(s, 14, 0.01, 0.9);
    EXPECT_AT(s, 15, 0.01 * 0.1, 0.9);
    EXPECT_AT(s, 21, 0.01 * 0.1, 0.9);
    EXPECT_AT(s, 22, 0.01 * 0.1 * 0.1, 0.9);
    elle_schedule_free(s);
}

/* OneCycleLR(max_lr 0.1, total_steps E = 200, pct_start 0.025, cos,
 * div_factor 25, final_div_factor 1e4, momentum 0.95 / 0.85), per epoch:
 *   initial = 0.1/25 = 0.004, min = 0.004/1e4 = 4e-7,
 *   phase 0 ends at 0.025*200 - 1 = 4 (0.004 -> 0.1, momentum 0.95 -> 0.85),
 *   phase 1 ends at 199 (0.1 -> 4e-7, momentum 0.85 -> 0.95),
 *   anneal(a, b, pct) = b + (a - b)/2 * (cos(pi*pct) + 1). */
static void test_schedule_long_cos(void **state)
{
    (void)state;
    const double pi = 3.141592653589793;
    elle_schedule *s = make_schedule(ELLE_SCHEDULE_LONG_COS, 200, 10, 1);
    /* epoch 0: pct 0: lr 0.004, momentum 0.95 */
    EXPECT_AT(s, 0, 0.004, 0.95);
    /* epoch 2: pct 0.5, cos + 1 = 1: lr 0.1 + (0.004 - 0.1)/2 = 0.052, momentum 0.9 */
    EXPECT_AT(s, 20, 0.052, 0.9);
    /* epoch 4: pct 1: the peak 0.1, momentum 0.85 */
    EXPECT_AT(s, 49, 0.1, 0.85);
    /* epoch 5: pct = (5 - 4)/(199 - 4) = 1/195 */
    EXPECT_AT(s, 50, 4e-7 + (0.1 - 4e-7) / 2.0 * (cos(pi / 195.0) + 1.0),
              0.95 + (0.85 - 0.95) / 2.0 * (cos(pi / 195.0) + 1.0));
    /* epoch 101: pct = 97/195 */
    EXPECT_AT(s, 1010, 4e-7 + (0.1 - 4e-7) / 2.0 * (cos(pi * 97.0 / 195.0) + 1.0),
              0.95 + (0.85 - 0.95) / 2.0 * (cos(pi * 97.0 / 195.0) + 1.0));
    /* epoch 199: pct 1: 4e-7, momentum back to 0.95 */
    EXPECT_AT(s, 1999, 4e-7, 0.95);
    elle_schedule_free(s);
    /* E = 40: phase 0 ends at 0.025*40 - 1 = 0, a zero-length phase (torch
     * divides 0 by 0): taken as finished, epoch 0 gets the peak */
    s = make_schedule(ELLE_SCHEDULE_LONG_COS, 40, 1, 1);
    EXPECT_AT(s, 0, 0.1, 0.85);
    /* epoch 1: phase 1, pct = (1 - 0)/(39 - 0) */
    EXPECT_AT(s, 1, 1e-7 * 4 + (0.1 - 4e-7) / 2.0 * (cos(pi / 39.0) + 1.0),
              0.95 + (0.85 - 0.95) / 2.0 * (cos(pi / 39.0) + 1.0));
    elle_schedule_free(s);
}

static void test_schedule_constant(void **state)
{
    (void)state;
    elle_schedule *s = make_schedule(ELLE_SCHEDULE_CONSTANT, 3, 7, 2);
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_LR_MAX, 0.05));
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_MOMENTUM, 0.5));
    assert_int_equal(elle_schedule_total_steps(s), 42);
    EXPECT_AT(s, 0, 0.05, 0.5);
    EXPECT_AT(s, 41, 0.05, 0.5);
    elle_schedule_free(s);
}

static void test_schedule_params(void **state)
{
    (void)state;
    elle_schedule *s = NULL;
    assert_elle_status(elle_schedule_create(&s, (elle_schedule_kind)7), ELLE_EINVAL);
    assert_elle_status(elle_schedule_create(NULL, ELLE_SCHEDULE_SHORT), ELLE_EINVAL);
    assert_null(s);
    assert_elle_ok(elle_schedule_create(&s, ELLE_SCHEDULE_SHORT));
    assert_int_equal(elle_schedule_get_kind(s), ELLE_SCHEDULE_SHORT);
    assert_int_equal(elle_schedule_get_kind(NULL), -1);
    double v;
    /* the short recipe's defaults: lr 0.2, half up, momentum 0.9 / 0.8, cycled */
    assert_elle_ok(elle_schedule_get_param(s, ELLE_SCHEDULE_PARAM_LR_MAX, &v));
    assert_true(v == 0.2);
    assert_elle_ok(elle_schedule_get_param(s, ELLE_SCHEDULE_PARAM_UP_FRACTION, &v));
    assert_true(v == 0.5);
    assert_elle_ok(elle_schedule_get_param(s, ELLE_SCHEDULE_PARAM_BASE_MOMENTUM, &v));
    assert_true(v == 0.8);
    assert_elle_ok(elle_schedule_get_param(s, ELLE_SCHEDULE_PARAM_CYCLE_MOMENTUM, &v));
    assert_true(v == 1.0);
    /* counts are integers within bounds, no NaN */
    assert_elle_status(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_EPOCHS, 0), ELLE_EINVAL);
    assert_elle_status(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_EPOCHS, 2.5), ELLE_EINVAL);
    assert_elle_status(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH, 3),
                       ELLE_EINVAL);
    assert_elle_status(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_LR_MAX, NAN), ELLE_EINVAL);
    assert_elle_status(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_MOMENTUM, -0.1),
                       ELLE_EINVAL);
    assert_elle_status(elle_schedule_set_param(s, (elle_schedule_param)0, 1), ELLE_EINVAL);
    assert_elle_status(elle_schedule_get_param(s, (elle_schedule_param)15, &v), ELLE_EINVAL);
    double lo, hi;
    assert_elle_ok(elle_schedule_param_bounds(ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH, &lo, &hi));
    assert_true(lo == 1 && hi == 2);
    assert_elle_status(elle_schedule_param_bounds((elle_schedule_param)99, &lo, &hi),
                       ELLE_EINVAL);
    /* names */
    for (int id = 1; id <= 14; id++) {
        const char *name = elle_schedule_param_name((elle_schedule_param)id);
        assert_non_null(name);
        elle_schedule_param back;
        assert_elle_ok(elle_schedule_param_from_name(name, &back));
        assert_int_equal(back, id);
    }
    elle_schedule_param sp;
    assert_elle_status(elle_schedule_param_from_name("warmup", &sp), ELLE_EINVAL);
    static const char *const kinds[] = {"constant", "short", "long", "long-cos"};
    for (int k = 0; k < 4; k++) {
        elle_schedule_kind kind;
        assert_string_equal(elle_schedule_kind_name((elle_schedule_kind)k), kinds[k]);
        assert_elle_ok(elle_schedule_kind_from_name(kinds[k], &kind));
        assert_int_equal(kind, k);
    }
    elle_schedule_kind kind;
    assert_elle_ok(elle_schedule_kind_from_name("long_cos", &kind));
    assert_int_equal(kind, ELLE_SCHEDULE_LONG_COS);
    assert_elle_status(elle_schedule_kind_from_name("cosine", &kind), ELLE_EINVAL);
    assert_null(elle_schedule_kind_name((elle_schedule_kind)4));
    assert_int_equal(elle_schedule_total_steps(NULL), -1);
    assert_elle_status(elle_schedule_at(NULL, 0, &v, &v), ELLE_EINVAL);
    elle_schedule_free(s);
    elle_schedule_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_sgd_update_exact),
        cmocka_unit_test(test_optimizer_reference),
        cmocka_unit_test(test_optimizer_composed_fallback),
        cmocka_unit_test(test_optimizer_cpu),
        cmocka_unit_test(test_optimizer_state_roundtrip),
        cmocka_unit_test(test_optimizer_params),
        cmocka_unit_test(test_schedule_short),
        cmocka_unit_test(test_schedule_short_svhn),
        cmocka_unit_test(test_schedule_two_steps_per_batch),
        cmocka_unit_test(test_schedule_long),
        cmocka_unit_test(test_schedule_long_cos),
        cmocka_unit_test(test_schedule_constant),
        cmocka_unit_test(test_schedule_params),
    };
    return cmocka_run_group_tests_name("optim", tests, NULL, NULL);
}
