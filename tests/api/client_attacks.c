/*
 * Public-API client test: the AutoAttack part of include/elle/attack.h —
 * the appended kinds and parameters (pinned values, names, bounds, per-kind
 * defaults), elle_attack_num_stages / elle_attack_stage_result, and every
 * documented error of perturb and evaluate for those kinds. Links only
 * libelle.so.
 *
 * Each failing call must return the documented status, record the same code
 * in elle_error_last() and leave a non-empty message.
 */
#include "client_test.h"

/* A pointer value a failed call must not overwrite. */
#define SENTINEL ((const char *)(uintptr_t)0x5eed)

typedef struct fixture {
    elle_context *ctx;
    elle_model *model; /* small_cnn, 1x28x28, 10 classes, eval mode, NOT reserved */
    elle_dataset *data; /* 8 images */
    float *x;
    int32_t y[8];
    int64_t per;
} fixture;

static elle_model *make_model(elle_context *ctx, int classes)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    if (elle_model_config_create(&cfg, "small_cnn") != ELLE_OK ||
        elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 4) != ELLE_OK ||
        elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, 16) != ELLE_OK ||
        elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, classes) != ELLE_OK ||
        elle_model_create(&m, ctx, cfg) != ELLE_OK ||
        elle_model_set_training(m, 0) != ELLE_OK) {
        print_error("fixture: %s\n", elle_error_last()->message);
        elle_model_free(m);
        m = NULL;
    }
    elle_model_config_free(cfg);
    return m;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->per = 28 * 28;
    f->x = malloc((size_t)(8 * f->per) * sizeof(float));
    if (!f->x || elle_context_create(&f->ctx, ELLE_BACKEND_CPU, 0) != ELLE_OK ||
        elle_context_set_param(f->ctx, ELLE_CONTEXT_PARAM_THREADS, 1) != ELLE_OK)
        return -1;
    f->model = make_model(f->ctx, 10);
    client_fill_images(f->x, (size_t)(8 * f->per), 7);
    for (int i = 0; i < 8; i++)
        f->y[i] = i % 10;
    if (!f->model || elle_dataset_from_host(&f->data, f->x, f->y, 8, 1, 28, 28, 10) != ELLE_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    elle_dataset_free(f->data);
    elle_model_free(f->model);
    elle_context_free(f->ctx);
    free(f->x);
    free(f);
    return 0;
}

static void test_values_pinned(void **state)
{
    (void)state;
    assert_int_equal(ELLE_ATTACK_APGD_CE, 4);
    assert_int_equal(ELLE_ATTACK_APGD_DLR, 5);
    assert_int_equal(ELLE_ATTACK_APGD_T, 6);
    assert_int_equal(ELLE_ATTACK_FAB_T, 7);
    assert_int_equal(ELLE_ATTACK_SQUARE, 8);
    assert_int_equal(ELLE_ATTACK_AUTOATTACK, 9);
    assert_int_equal(ELLE_ATTACK_PARAM_N_TARGET_CLASSES, 11);
    assert_int_equal(ELLE_ATTACK_PARAM_N_QUERIES, 12);
    assert_int_equal(ELLE_ATTACK_PARAM_EOT_ITER, 13);
    assert_int_equal(ELLE_ATTACK_PARAM_VERSION, 14);
    static const char *const kinds[] = {"apgd-ce", "apgd-dlr", "apgd-t",
                                        "fab-t",   "square",   "autoattack"};
    for (int i = 0; i < 6; i++) {
        elle_attack_kind k;
        assert_string_equal(elle_attack_kind_name((elle_attack_kind)(4 + i)), kinds[i]);
        assert_ok(elle_attack_kind_from_name(kinds[i], &k));
        assert_int_equal(k, 4 + i);
    }
    assert_null(elle_attack_kind_name((elle_attack_kind)11));
    elle_attack_kind k;
    assert_status(elle_attack_kind_from_name("auto-attack", &k), ELLE_EINVAL);
    static const char *const params[] = {"n_target_classes", "n_queries", "eot_iter", "version"};
    for (int i = 0; i < 4; i++) {
        elle_attack_param p;
        assert_ok(elle_attack_param_from_name(params[i], &p));
        assert_int_equal(p, 11 + i);
        assert_string_equal(elle_attack_param_name(p), params[i]);
    }
    assert_null(elle_attack_param_name((elle_attack_param)16));
    double lo, hi;
    assert_status(elle_attack_param_bounds((elle_attack_param)16, &lo, &hi), ELLE_EINVAL);
    assert_ok(elle_attack_param_bounds(ELLE_ATTACK_PARAM_VERSION, &lo, &hi));
    assert_true(lo == 0 && hi == 1);
}

static void test_defaults_and_params(void **state)
{
    fixture *f = *state;
    elle_attack *a = NULL;
    double v;
    assert_status(elle_attack_create(&a, f->model, (elle_attack_kind)11), ELLE_EINVAL);
    assert_null(a);
    for (int kind = 4; kind <= 9; kind++) {
        assert_ok(elle_attack_create(&a, f->model, (elle_attack_kind)kind));
        assert_int_equal(elle_attack_get_kind(a), kind);
        assert_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_STEPS, &v));
        assert_true(v == (kind == ELLE_ATTACK_SQUARE ? 10 : 100));
        assert_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_N_TARGET_CLASSES, &v));
        assert_true(v == 9);
        assert_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_N_QUERIES, &v));
        assert_true(v == 5000);
        assert_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_EOT_ITER, &v));
        assert_true(v == 0);
        assert_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_VERSION, &v));
        assert_true(v == 0);
        assert_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_VERSION, 2), ELLE_EINVAL);
        assert_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_N_TARGET_CLASSES, 0),
                      ELLE_EINVAL);
        assert_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EOT_ITER, 0.5), ELLE_EINVAL);
        assert_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_N_QUERIES, NAN), ELLE_EINVAL);
        assert_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, 1.5), ELLE_EINVAL);
        assert_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_N_QUERIES, &v));
        assert_true(v == 5000); /* unchanged by the failed set */
        elle_attack_free(a);
        a = NULL;
    }
}

static void test_stage_errors(void **state)
{
    fixture *f = *state;
    elle_attack *a = NULL;
    const char *name = SENTINEL;
    int64_t r = -7;
    double s = -7;
    assert_status(elle_attack_num_stages(NULL), ELLE_EINVAL);
    assert_status(elle_attack_stage_result(NULL, 0, &name, &r, &s), ELLE_EINVAL);
    assert_ok(elle_attack_create(&a, f->model, ELLE_ATTACK_AUTOATTACK));
    assert_int_equal(elle_attack_num_stages(a), 0);
    assert_status(elle_attack_stage_result(a, 0, &name, &r, &s), ELLE_EINVAL);
    assert_status(elle_attack_stage_result(a, -1, &name, &r, &s), ELLE_EINVAL);
    /* a failed call leaves the outputs alone */
    assert_ptr_equal(name, SENTINEL);
    assert_int_equal(r, -7);
    elle_attack_free(a);
}

static void test_perturb_evaluate_errors(void **state)
{
    fixture *f = *state;
    elle_attack *a = NULL;
    float *xa = malloc((size_t)(8 * f->per) * sizeof(float));
    int64_t c, r, t;
    assert_ok(elle_attack_create(&a, f->model, ELLE_ATTACK_AUTOATTACK));
    /* before elle_model_reserve */
    assert_status(elle_attack_perturb(a, f->x, f->y, 2, xa), ELLE_ESTATE);
    assert_status(elle_attack_evaluate(a, f->data, 0, 4, &c, &r, &t), ELLE_ESTATE);
    assert_ok(elle_model_reserve(f->model, 4));
    /* NULL, sizes, batch */
    assert_status(elle_attack_perturb(NULL, f->x, f->y, 2, xa), ELLE_EINVAL);
    assert_status(elle_attack_perturb(a, NULL, f->y, 2, xa), ELLE_EINVAL);
    assert_status(elle_attack_perturb(a, f->x, NULL, 2, xa), ELLE_EINVAL);
    assert_status(elle_attack_perturb(a, f->x, f->y, 2, NULL), ELLE_EINVAL);
    assert_status(elle_attack_perturb(a, f->x, f->y, 0, xa), ELLE_EINVAL);
    assert_status(elle_attack_perturb(a, f->x, f->y, 5, xa), ELLE_ESHAPE);
    assert_status(elle_attack_evaluate(a, f->data, 0, 5, &c, &r, &t), ELLE_ESHAPE);
    assert_status(elle_attack_evaluate(a, f->data, 0, 0, &c, &r, &t), ELLE_EINVAL);
    assert_status(elle_attack_evaluate(a, f->data, -1, 4, &c, &r, &t), ELLE_EINVAL);
    assert_status(elle_attack_evaluate(NULL, f->data, 0, 4, &c, &r, &t), ELLE_EINVAL);
    assert_status(elle_attack_evaluate(a, NULL, 0, 4, &c, &r, &t), ELLE_EINVAL);
    /* a label outside the classes; a pixel outside [0, 1] */
    int32_t y[2] = {0, 10};
    assert_status(elle_attack_perturb(a, f->x, y, 2, xa), ELLE_EINVAL);
    float bad[2 * 28 * 28];
    memcpy(bad, f->x, sizeof bad);
    bad[100] = -0.25f;
    assert_status(elle_attack_perturb(a, bad, f->y, 2, xa), ELLE_EINVAL);
    bad[100] = NAN;
    assert_status(elle_attack_perturb(a, bad, f->y, 2, xa), ELLE_EINVAL);
    elle_attack_free(a);

    /* too few classes for the DLR losses: apgd-t and autoattack standard need
     * 4, apgd-dlr and autoattack rand 3 */
    elle_model *m3 = make_model(f->ctx, 3);
    assert_non_null(m3);
    assert_ok(elle_model_reserve(m3, 2));
    int32_t y3[2] = {0, 1};
    static const struct {
        elle_attack_kind kind;
        double version;
        int want;
    } cases[] = {{ELLE_ATTACK_APGD_T, 0, ELLE_EUNSUPPORTED},
                 {ELLE_ATTACK_AUTOATTACK, 0, ELLE_EUNSUPPORTED},
                 {ELLE_ATTACK_APGD_DLR, 0, ELLE_OK},
                 {ELLE_ATTACK_AUTOATTACK, 1, ELLE_OK}};
    for (int i = 0; i < 4; i++) {
        assert_ok(elle_attack_create(&a, m3, cases[i].kind));
        assert_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_VERSION, cases[i].version));
        assert_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 2));
        assert_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EOT_ITER, 1));
        assert_status(elle_attack_perturb(a, f->x, y3, 2, xa), cases[i].want);
        elle_attack_free(a);
    }
    elle_model_free(m3);
    free(xa);
}

/* The whole cycle through the public API: evaluate with the standard
 * version (small budgets), stages in order, non-increasing, consistent. */
static void test_evaluate_stages(void **state)
{
    fixture *f = *state;
    elle_attack *a = NULL;
    assert_ok(elle_model_reserve(f->model, 4));
    assert_ok(elle_attack_create(&a, f->model, ELLE_ATTACK_AUTOATTACK));
    assert_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, 0.1));
    assert_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 5));
    assert_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_N_TARGET_CLASSES, 2));
    assert_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_N_QUERIES, 20));
    int64_t clean = -1, robust = -1, total = -1;
    assert_ok(elle_attack_evaluate(a, f->data, 0, 3, &clean, &robust, &total));
    assert_int_equal(total, 8);
    assert_true(robust >= 0 && robust <= clean && clean <= total);
    assert_int_equal(elle_attack_num_stages(a), 4);
    static const char *const order[] = {"apgd-ce", "apgd-t", "fab-t", "square"};
    int64_t prev = clean, last = -1;
    for (int s = 0; s < 4; s++) {
        const char *name = NULL;
        int64_t r = -1;
        double sec = -1;
        assert_ok(elle_attack_stage_result(a, s, &name, &r, &sec));
        assert_string_equal(name, order[s]);
        assert_true(r <= prev);
        assert_true(sec >= 0);
        prev = last = r;
    }
    assert_int_equal(last, robust);
    /* the NULL outputs are optional */
    assert_ok(elle_attack_stage_result(a, 3, NULL, NULL, NULL));
    /* a failed evaluate keeps the last successful one's stages */
    assert_status(elle_attack_evaluate(a, f->data, -1, 3, NULL, NULL, NULL), ELLE_EINVAL);
    assert_int_equal(elle_attack_num_stages(a), 4);
    elle_attack_free(a);

    /* the other kinds report one stage, named after the kind */
    assert_ok(elle_attack_create(&a, f->model, ELLE_ATTACK_FGSM));
    assert_ok(elle_attack_evaluate(a, f->data, 4, 4, &clean, &robust, &total));
    assert_int_equal(elle_attack_num_stages(a), 1);
    const char *name = NULL;
    int64_t r = -1;
    assert_ok(elle_attack_stage_result(a, 0, &name, &r, NULL));
    assert_string_equal(name, "fgsm");
    assert_int_equal(r, robust);
    assert_status(elle_attack_stage_result(a, 1, NULL, NULL, NULL), ELLE_EINVAL);
    elle_attack_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_pinned),
        cmocka_unit_test_setup_teardown(test_defaults_and_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stage_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_perturb_evaluate_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evaluate_stages, setup, teardown),
    };
    return cmocka_run_group_tests_name("api.client_attacks", tests, NULL, NULL);
}
