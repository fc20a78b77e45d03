/*
 * Public-API client test: every error path of include/elle/{version,error,
 * context,model}.h, as documented in the headers. Links only libelle.so.
 *
 * Each failing call must return the documented status, record the same code
 * in elle_error_last() and leave a non-empty message (assert_status clears
 * the error first). *_free(NULL) must be harmless, and a failed create must
 * leave *out untouched.
 */
#include <limits.h>
#include <pthread.h>

#include "client_test.h"

#ifndef ELLE_TEST_HAVE_CUDA
#define ELLE_TEST_HAVE_CUDA 0
#endif

/* A pointer value a failed create must not overwrite. */
#define SENTINEL ((void *)(uintptr_t)0x5eed)

/* ---- version ------------------------------------------------------------------- */

static void test_version(void **state)
{
    (void)state;
    char expect[64];
    assert_int_equal(elle_version_number(), ELLE_VERSION_NUMBER);
    assert_int_equal(ELLE_VERSION_NUMBER,
                     ELLE_VERSION_MAJOR * 10000 + ELLE_VERSION_MINOR * 100 + ELLE_VERSION_PATCH);
    assert_non_null(elle_version_string());
    assert_string_equal(elle_version_string(), ELLE_VERSION_STRING);
    snprintf(expect, sizeof expect, "%d.%d.%d", ELLE_VERSION_MAJOR, ELLE_VERSION_MINOR,
             ELLE_VERSION_PATCH);
    assert_string_equal(elle_version_string(), expect);
}

/* ---- errors -------------------------------------------------------------------- */

static void test_status_values_pinned(void **state)
{
    (void)state;
    /* The numeric values are ABI: never renumbered. */
    assert_int_equal(ELLE_OK, 0);
    assert_int_equal(ELLE_ERROR, -1);
    assert_int_equal(ELLE_EINVAL, -2);
    assert_int_equal(ELLE_ESHAPE, -3);
    assert_int_equal(ELLE_ENOMEM, -4);
    assert_int_equal(ELLE_EIO, -5);
    assert_int_equal(ELLE_EFORMAT, -6);
    assert_int_equal(ELLE_EUNSUPPORTED, -7);
    assert_int_equal(ELLE_EDEVICE, -8);
    assert_int_equal(ELLE_ENUMERIC, -9);
    assert_int_equal(ELLE_EUSER, -10);
    assert_int_equal(ELLE_EVERSION, -11);
    assert_int_equal(ELLE_ESTATE, -12);
    assert_int_equal(ELLE_BACKEND_CPU, 0);
    assert_int_equal(ELLE_BACKEND_CUDA, 1);
    assert_int_equal(ELLE_BACKEND_REFERENCE, 2);
    assert_int_equal(ELLE_CONTEXT_PARAM_THREADS, 1);
    assert_int_equal(ELLE_LOG_DEBUG, 0);
    assert_int_equal(ELLE_LOG_ERROR, 3);
    assert_int_equal(ELLE_MODEL_PARAM_IN_CHANNELS, 1);
    assert_int_equal(ELLE_MODEL_PARAM_BN_EPS, 12);
    assert_int_equal(ELLE_STATE_PARAMETER, 0);
    assert_int_equal(ELLE_STATE_BUFFER, 1);
    assert_int_equal(ELLE_STATE_COUNTER, 2);
}

static void test_status_names(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *name;
    } names[] = {
        {ELLE_OK, "ELLE_OK"},
        {ELLE_ERROR, "ELLE_ERROR"},
        {ELLE_EINVAL, "ELLE_EINVAL"},
        {ELLE_ESHAPE, "ELLE_ESHAPE"},
        {ELLE_ENOMEM, "ELLE_ENOMEM"},
        {ELLE_EIO, "ELLE_EIO"},
        {ELLE_EFORMAT, "ELLE_EFORMAT"},
        {ELLE_EUNSUPPORTED, "ELLE_EUNSUPPORTED"},
        {ELLE_EDEVICE, "ELLE_EDEVICE"},
        {ELLE_ENUMERIC, "ELLE_ENUMERIC"},
        {ELLE_EUSER, "ELLE_EUSER"},
        {ELLE_EVERSION, "ELLE_EVERSION"},
        {ELLE_ESTATE, "ELLE_ESTATE"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *got = elle_status_name(names[i].code);
        assert_non_null(got);
        assert_string_equal(got, names[i].name);
    }
    static const int unknown[] = {1, 2, 100, -1000, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *got = elle_status_name(unknown[i]);
        assert_non_null(got);
        assert_string_equal(got, "ELLE_UNKNOWN");
    }
}

static void test_error_last_and_clear(void **state)
{
    (void)state;
    elle_error_clear();
    const elle_error *e = elle_error_last();
    assert_non_null(e);
    assert_int_equal(e->code, ELLE_OK);
    assert_non_null(e->message);
    assert_string_equal(e->message, "");

    assert_status(elle_context_create(NULL, ELLE_BACKEND_REFERENCE, 0), ELLE_EINVAL);
    e = elle_error_last();
    assert_non_null(e);
    assert_int_equal(e->code, ELLE_EINVAL);
    assert_true(strlen(e->message) > 0);

    elle_error_clear();
    e = elle_error_last();
    assert_non_null(e);
    assert_int_equal(e->code, ELLE_OK);
    assert_non_null(e->message);
    assert_string_equal(e->message, "");
    elle_error_clear(); /* twice is fine */
    assert_int_equal(elle_error_last()->code, ELLE_OK);
}

static void *fail_on_other_thread(void *arg)
{
    (void)arg;
    elle_error_clear();
    int rc = elle_backend_from_name("no-such-backend", NULL);
    return (void *)(intptr_t)(rc == ELLE_EINVAL && elle_error_last()->code == ELLE_EINVAL);
}

static void test_error_is_thread_local(void **state)
{
    (void)state;
    elle_error_clear();
    pthread_t t;
    void *ok = NULL;
    assert_int_equal(pthread_create(&t, NULL, fail_on_other_thread, NULL), 0);
    assert_int_equal(pthread_join(t, &ok), 0);
    assert_true(ok != NULL);
    /* the other thread's failure is not visible here */
    assert_int_equal(elle_error_last()->code, ELLE_OK);
    assert_string_equal(elle_error_last()->message, "");
}

/* ---- contexts ------------------------------------------------------------------ */

static void test_context_create_errors(void **state)
{
    (void)state;
    elle_context *ctx = SENTINEL;
    assert_status(elle_context_create(NULL, ELLE_BACKEND_CPU, 0), ELLE_EINVAL);
    assert_status(elle_context_create(NULL, ELLE_BACKEND_REFERENCE, 0), ELLE_EINVAL);
    assert_status(elle_context_create(&ctx, (elle_backend)3, 0), ELLE_EINVAL);
    assert_status(elle_context_create(&ctx, (elle_backend)99, 0), ELLE_EINVAL);
    assert_status(elle_context_create(&ctx, (elle_backend)-1, 0), ELLE_EINVAL);
    /* no such device */
    assert_status(elle_context_create(&ctx, ELLE_BACKEND_REFERENCE, 1), ELLE_EDEVICE);
    assert_ptr_equal(ctx, SENTINEL);
}

/* Without the backend compiled in: ELLE_EUNSUPPORTED saying how to build it.
 * Compiled in but no usable device (a CUDA build on a machine without a GPU
 * or driver): ELLE_EDEVICE naming CUDA, never a crash. With a device: the
 * context works and an index past the last device is ELLE_EDEVICE. */
static void test_context_cuda(void **state)
{
    (void)state;
    const int available = elle_backend_available(ELLE_BACKEND_CUDA);
    elle_context *ctx = SENTINEL;
    if (!ELLE_TEST_HAVE_CUDA) {
        assert_status(elle_context_create(&ctx, ELLE_BACKEND_CUDA, 0), ELLE_EUNSUPPORTED);
        const char *msg = elle_error_last()->message;
        if (!client_contains_ci(msg, "cuda") || !strstr(msg, "-Dcuda=enabled"))
            fail_msg("the message should name CUDA and say how to build it (-Dcuda=enabled): "
                     "\"%s\"",
                     msg);
        assert_ptr_equal(ctx, SENTINEL);
        assert_int_equal(available, 0);
        assert_int_equal(elle_backend_device_count(ELLE_BACKEND_CUDA), 0);
        return;
    }
    if (!available) {
        assert_status(elle_context_create(&ctx, ELLE_BACKEND_CUDA, 0), ELLE_EDEVICE);
        const char *msg = elle_error_last()->message;
        if (!client_contains_ci(msg, "cuda"))
            fail_msg("the message should name CUDA: \"%s\"", msg);
        assert_ptr_equal(ctx, SENTINEL);
        assert_int_equal(elle_backend_device_count(ELLE_BACKEND_CUDA), 0);
        return;
    }
    assert_ok(elle_context_create(&ctx, ELLE_BACKEND_CUDA, 0));
    assert_int_equal(elle_context_backend(ctx), ELLE_BACKEND_CUDA);
    elle_context_free(ctx);
    const int n = elle_backend_device_count(ELLE_BACKEND_CUDA);
    assert_true(n >= 1);
    ctx = SENTINEL;
    assert_status(elle_context_create(&ctx, ELLE_BACKEND_CUDA, n), ELLE_EDEVICE);
    assert_ptr_equal(ctx, SENTINEL);
    assert_status(elle_context_create(&ctx, ELLE_BACKEND_CUDA, -1), ELLE_EDEVICE);
    assert_ptr_equal(ctx, SENTINEL);
}

static void test_context_free_null(void **state)
{
    (void)state;
    elle_context_free(NULL);
    assert_int_equal(elle_context_backend(NULL), -1);
}

static void test_context_params(void **state)
{
    (void)state;
    elle_context *ctx = NULL;
    double lo = -1, hi = -1, v = -1;
    assert_ok(elle_context_create(&ctx, ELLE_BACKEND_REFERENCE, 0));
    assert_non_null(ctx);
    assert_int_equal(elle_context_backend(ctx), ELLE_BACKEND_REFERENCE);

    /* bounds */
    assert_ok(elle_context_param_bounds(ELLE_CONTEXT_PARAM_THREADS, &lo, &hi));
    assert_true(lo == 0.0); /* 0 = all cores */
    assert_true(hi >= 1.0);
    assert_status(elle_context_param_bounds(ELLE_CONTEXT_PARAM_THREADS, NULL, &hi), ELLE_EINVAL);
    assert_status(elle_context_param_bounds(ELLE_CONTEXT_PARAM_THREADS, &lo, NULL), ELLE_EINVAL);
    assert_status(elle_context_param_bounds((elle_context_param)0, &lo, &hi), ELLE_EINVAL);
    assert_status(elle_context_param_bounds((elle_context_param)999, &lo, &hi), ELLE_EINVAL);

    /* set: out of bounds, NaN, infinite, not an integer, unknown, NULL */
    assert_status(elle_context_set_param(NULL, ELLE_CONTEXT_PARAM_THREADS, 1), ELLE_EINVAL);
    assert_status(elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, lo - 1), ELLE_EINVAL);
    assert_status(elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, hi + 1), ELLE_EINVAL);
    assert_status(elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, NAN), ELLE_EINVAL);
    assert_status(elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, INFINITY), ELLE_EINVAL);
    assert_status(elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, -INFINITY), ELLE_EINVAL);
    assert_status(elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, 1.5), ELLE_EINVAL);
    assert_status(elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, 0.25), ELLE_EINVAL);
    assert_status(elle_context_set_param(ctx, (elle_context_param)0, 1), ELLE_EINVAL);
    assert_status(elle_context_set_param(ctx, (elle_context_param)999, 1), ELLE_EINVAL);

    /* a valid value round-trips; a rejected one leaves it unchanged */
    assert_ok(elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, 1));
    assert_ok(elle_context_get_param(ctx, ELLE_CONTEXT_PARAM_THREADS, &v));
    assert_true(v == 1.0);
    assert_status(elle_context_set_param(ctx, ELLE_CONTEXT_PARAM_THREADS, 2.5), ELLE_EINVAL);
    assert_ok(elle_context_get_param(ctx, ELLE_CONTEXT_PARAM_THREADS, &v));
    assert_true(v == 1.0);

    /* get */
    assert_status(elle_context_get_param(NULL, ELLE_CONTEXT_PARAM_THREADS, &v), ELLE_EINVAL);
    assert_status(elle_context_get_param(ctx, ELLE_CONTEXT_PARAM_THREADS, NULL), ELLE_EINVAL);
    assert_status(elle_context_get_param(ctx, (elle_context_param)999, &v), ELLE_EINVAL);

    /* names */
    elle_context_param p = (elle_context_param)0;
    assert_ok(elle_context_param_from_name("threads", &p));
    assert_int_equal(p, ELLE_CONTEXT_PARAM_THREADS);
    p = (elle_context_param)0;
    assert_status(elle_context_param_from_name("no_such_param", &p), ELLE_EINVAL);
    assert_int_equal(p, 0);
    assert_status(elle_context_param_from_name("", &p), ELLE_EINVAL);
    assert_status(elle_context_param_from_name(NULL, &p), ELLE_EINVAL);
    assert_status(elle_context_param_from_name("threads", NULL), ELLE_EINVAL);
    assert_non_null(elle_context_param_name(ELLE_CONTEXT_PARAM_THREADS));
    assert_string_equal(elle_context_param_name(ELLE_CONTEXT_PARAM_THREADS), "threads");
    assert_null(elle_context_param_name((elle_context_param)0));
    assert_null(elle_context_param_name((elle_context_param)999));

    elle_context_free(ctx);
}

static void test_backend_queries(void **state)
{
    (void)state;
    static const struct {
        elle_backend kind;
        const char *name;
    } b[] = {{ELLE_BACKEND_CPU, "cpu"},
             {ELLE_BACKEND_CUDA, "cuda"},
             {ELLE_BACKEND_REFERENCE, "reference"}};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        elle_backend k = (elle_backend)-1;
        assert_non_null(elle_backend_name(b[i].kind));
        assert_string_equal(elle_backend_name(b[i].kind), b[i].name);
        assert_ok(elle_backend_from_name(b[i].name, &k));
        assert_int_equal(k, b[i].kind);
    }
    assert_null(elle_backend_name((elle_backend)-1));
    assert_null(elle_backend_name((elle_backend)3));
    assert_null(elle_backend_name((elle_backend)99));

    elle_backend k = ELLE_BACKEND_REFERENCE;
    assert_status(elle_backend_from_name("tpu", &k), ELLE_EINVAL);
    assert_int_equal(k, ELLE_BACKEND_REFERENCE);
    assert_status(elle_backend_from_name("", &k), ELLE_EINVAL);
    assert_status(elle_backend_from_name(NULL, &k), ELLE_EINVAL);
    assert_status(elle_backend_from_name("cpu", NULL), ELLE_EINVAL);

    assert_int_equal(elle_backend_available(ELLE_BACKEND_CPU), 1);
    assert_int_equal(elle_backend_available(ELLE_BACKEND_REFERENCE), 1);
    assert_int_equal(elle_backend_available((elle_backend)99), 0);
    assert_int_equal(elle_backend_available((elle_backend)-1), 0);
    assert_int_equal(elle_backend_device_count(ELLE_BACKEND_CPU), 1);
    assert_int_equal(elle_backend_device_count(ELLE_BACKEND_REFERENCE), 1);
    assert_int_equal(elle_backend_device_count((elle_backend)99), 0);
}

static int log_calls;
static void count_log(int level, const char *message, void *user_data)
{
    (void)level;
    (void)message;
    (void)user_data;
    log_calls++;
}

static void test_log_set(void **state)
{
    (void)state;
    int tag = 0;
    elle_log_set(count_log, &tag);
    elle_log_set(NULL, NULL); /* back to silent */
    elle_log_set(NULL, &tag);
    assert_true(log_calls >= 0);
}

/* ---- model configurations ------------------------------------------------------ */

static const elle_model_param all_model_params[] = {
    ELLE_MODEL_PARAM_IN_CHANNELS, ELLE_MODEL_PARAM_IN_HEIGHT, ELLE_MODEL_PARAM_IN_WIDTH,
    ELLE_MODEL_PARAM_NUM_CLASSES, ELLE_MODEL_PARAM_WIDTH,     ELLE_MODEL_PARAM_DEPTH,
    ELLE_MODEL_PARAM_HIDDEN,      ELLE_MODEL_PARAM_SHORTCUT_RAW_X, ELLE_MODEL_PARAM_NORMALIZE,
    ELLE_MODEL_PARAM_SEED,        ELLE_MODEL_PARAM_BN_MOMENTUM, ELLE_MODEL_PARAM_BN_EPS,
};
#define N_MODEL_PARAMS (sizeof all_model_params / sizeof all_model_params[0])

static void test_model_config_create_errors(void **state)
{
    (void)state;
    elle_model_config *cfg = SENTINEL;
    assert_status(elle_model_config_create(NULL, "small_cnn"), ELLE_EINVAL);
    assert_status(elle_model_config_create(&cfg, NULL), ELLE_EINVAL);
    assert_status(elle_model_config_create(&cfg, ""), ELLE_EINVAL);
    assert_status(elle_model_config_create(&cfg, "resnet9000"), ELLE_EINVAL);
    assert_status(elle_model_config_create(&cfg, "small_cnn "), ELLE_EINVAL);
    assert_ptr_equal(cfg, SENTINEL);
    elle_model_config_free(NULL);

    static const char *const archs[] = {"small_cnn", "preact_resnet18", "wide_resnet"};
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        cfg = NULL;
        assert_ok(elle_model_config_create(&cfg, archs[i]));
        assert_non_null(cfg);
        elle_model_config_free(cfg);
    }
}

static void test_model_config_params(void **state)
{
    (void)state;
    elle_model_config *cfg = NULL;
    double lo, hi, v;
    assert_ok(elle_model_config_create(&cfg, "small_cnn"));

    for (size_t i = 0; i < N_MODEL_PARAMS; i++) {
        elle_model_param p = all_model_params[i];
        const char *name = elle_model_param_name(p);
        assert_non_null(name);
        elle_model_param q = (elle_model_param)0;
        assert_ok(elle_model_param_from_name(name, &q));
        assert_int_equal(q, p);

        assert_ok(elle_model_param_bounds(p, &lo, &hi));
        assert_true(lo <= hi);
        assert_ok(elle_model_config_get_param(cfg, p, &v));
        assert_true(v >= lo && v <= hi); /* defaults lie within bounds */

        /* outside the bounds, NaN and infinities are rejected and change nothing */
        double before = v;
        assert_status(elle_model_config_set_param(cfg, p, lo - 1), ELLE_EINVAL);
        assert_status(elle_model_config_set_param(cfg, p, hi + 1), ELLE_EINVAL);
        assert_status(elle_model_config_set_param(cfg, p, hi * 2 + 1), ELLE_EINVAL);
        assert_status(elle_model_config_set_param(cfg, p, NAN), ELLE_EINVAL);
        assert_status(elle_model_config_set_param(cfg, p, INFINITY), ELLE_EINVAL);
        assert_status(elle_model_config_set_param(cfg, p, -INFINITY), ELLE_EINVAL);
        assert_ok(elle_model_config_get_param(cfg, p, &v));
        assert_true(v == before);
    }

    /* sizes and counts must be integers */
    static const elle_model_param integral[] = {
        ELLE_MODEL_PARAM_IN_CHANNELS, ELLE_MODEL_PARAM_NUM_CLASSES, ELLE_MODEL_PARAM_WIDTH,
        ELLE_MODEL_PARAM_DEPTH, ELLE_MODEL_PARAM_HIDDEN, ELLE_MODEL_PARAM_SEED};
    for (size_t i = 0; i < sizeof integral / sizeof integral[0]; i++)
        assert_status(elle_model_config_set_param(cfg, integral[i], 2.5), ELLE_EINVAL);

    /* unknown parameters */
    assert_status(elle_model_config_set_param(cfg, (elle_model_param)0, 1), ELLE_EINVAL);
    assert_status(elle_model_config_set_param(cfg, (elle_model_param)999, 1), ELLE_EINVAL);
    assert_status(elle_model_config_get_param(cfg, (elle_model_param)0, &v), ELLE_EINVAL);
    assert_status(elle_model_config_get_param(cfg, (elle_model_param)999, &v), ELLE_EINVAL);
    assert_status(elle_model_param_bounds((elle_model_param)0, &lo, &hi), ELLE_EINVAL);
    assert_status(elle_model_param_bounds((elle_model_param)999, &lo, &hi), ELLE_EINVAL);
    assert_null(elle_model_param_name((elle_model_param)0));
    assert_null(elle_model_param_name((elle_model_param)999));

    /* NULL handles and pointers */
    assert_status(elle_model_config_set_param(NULL, ELLE_MODEL_PARAM_WIDTH, 8), ELLE_EINVAL);
    assert_status(elle_model_config_get_param(NULL, ELLE_MODEL_PARAM_WIDTH, &v), ELLE_EINVAL);
    assert_status(elle_model_config_get_param(cfg, ELLE_MODEL_PARAM_WIDTH, NULL), ELLE_EINVAL);
    assert_status(elle_model_param_bounds(ELLE_MODEL_PARAM_WIDTH, NULL, &hi), ELLE_EINVAL);
    assert_status(elle_model_param_bounds(ELLE_MODEL_PARAM_WIDTH, &lo, NULL), ELLE_EINVAL);

    /* names */
    elle_model_param p = (elle_model_param)0;
    assert_ok(elle_model_param_from_name("width", &p));
    assert_int_equal(p, ELLE_MODEL_PARAM_WIDTH);
    assert_ok(elle_model_param_from_name("num_classes", &p));
    assert_int_equal(p, ELLE_MODEL_PARAM_NUM_CLASSES);
    assert_status(elle_model_param_from_name("no_such_param", &p), ELLE_EINVAL);
    assert_status(elle_model_param_from_name("", &p), ELLE_EINVAL);
    assert_status(elle_model_param_from_name(NULL, &p), ELLE_EINVAL);
    assert_status(elle_model_param_from_name("width", NULL), ELLE_EINVAL);

    /* a valid value round-trips */
    assert_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 8));
    assert_ok(elle_model_config_get_param(cfg, ELLE_MODEL_PARAM_WIDTH, &v));
    assert_true(v == 8.0);

    elle_model_config_free(cfg);
}

static void test_model_config_normalization(void **state)
{
    (void)state;
    elle_model_config *cfg = NULL;
    const float mean[3] = {0.5f, 0.5f, 0.5f};
    const float std[3] = {0.25f, 0.25f, 0.25f};
    const float std_zero[3] = {0.25f, 0.0f, 0.25f};
    const float std_neg[3] = {0.25f, -1.0f, 0.25f};
    const float std_nan[3] = {0.25f, NAN, 0.25f};
    const float mean_nan[3] = {NAN, 0.5f, 0.5f};
    double v = -1;
    assert_ok(elle_model_config_create(&cfg, "preact_resnet18"));
    assert_status(elle_model_config_set_normalization(NULL, mean, std, 3), ELLE_EINVAL);
    assert_status(elle_model_config_set_normalization(cfg, NULL, std, 3), ELLE_EINVAL);
    assert_status(elle_model_config_set_normalization(cfg, mean, NULL, 3), ELLE_EINVAL);
    assert_status(elle_model_config_set_normalization(cfg, mean, std, 0), ELLE_EINVAL);
    assert_status(elle_model_config_set_normalization(cfg, mean, std, -3), ELLE_EINVAL);
    assert_status(elle_model_config_set_normalization(cfg, mean, std_zero, 3), ELLE_EINVAL);
    assert_status(elle_model_config_set_normalization(cfg, mean, std_neg, 3), ELLE_EINVAL);
    assert_status(elle_model_config_set_normalization(cfg, mean, std_nan, 3), ELLE_EINVAL);
    assert_status(elle_model_config_set_normalization(cfg, mean_nan, std, 3), ELLE_EINVAL);
    assert_ok(elle_model_config_get_param(cfg, ELLE_MODEL_PARAM_NORMALIZE, &v));
    assert_true(v == 0.0); /* failures did not switch it on */
    assert_ok(elle_model_config_set_normalization(cfg, mean, std, 3));
    assert_ok(elle_model_config_get_param(cfg, ELLE_MODEL_PARAM_NORMALIZE, &v));
    assert_true(v == 1.0);
    elle_model_config_free(cfg);
}

/* ---- models -------------------------------------------------------------------- */

typedef struct fixture {
    elle_context *ctx;
    elle_model_config *cfg;
    elle_model *model; /* small_cnn, reference backend, NOT reserved */
    int64_t c, h, w, k, per;
} fixture;

static int model_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    if (elle_context_create(&f->ctx, ELLE_BACKEND_REFERENCE, 0) != ELLE_OK ||
        elle_model_config_create(&f->cfg, "small_cnn") != ELLE_OK ||
        elle_model_config_set_param(f->cfg, ELLE_MODEL_PARAM_WIDTH, 4) != ELLE_OK ||
        elle_model_config_set_param(f->cfg, ELLE_MODEL_PARAM_HIDDEN, 16) != ELLE_OK ||
        elle_model_create(&f->model, f->ctx, f->cfg) != ELLE_OK) {
        print_error("fixture: %s\n", elle_error_last()->message);
        elle_model_config_free(f->cfg);
        elle_context_free(f->ctx);
        free(f);
        return -1;
    }
    f->c = 1;
    f->h = 28;
    f->w = 28;
    f->k = 10;
    f->per = f->c * f->h * f->w;
    *state = f;
    return 0;
}

static int model_teardown(void **state)
{
    fixture *f = *state;
    if (f) {
        elle_model_free(f->model);
        elle_model_config_free(f->cfg);
        elle_context_free(f->ctx);
        free(f);
    }
    return 0;
}

static void test_model_create_errors(void **state)
{
    fixture *f = *state;
    elle_model *m = SENTINEL;
    assert_status(elle_model_create(NULL, f->ctx, f->cfg), ELLE_EINVAL);
    assert_status(elle_model_create(&m, NULL, f->cfg), ELLE_EINVAL);
    assert_status(elle_model_create(&m, f->ctx, NULL), ELLE_EINVAL);
    assert_ptr_equal(m, SENTINEL);
    elle_model_free(NULL);
}

static void test_model_null_handles(void **state)
{
    (void)state;
    float buf[16] = {0};
    int32_t labels[1] = {0};
    int64_t c, h, w, dims[4];
    const char *name;
    elle_state_kind kind;
    int ndim;
    assert_status(elle_model_reserve(NULL, 8), ELLE_EINVAL);
    assert_status(elle_model_set_training(NULL, 1), ELLE_EINVAL);
    assert_int_equal(elle_model_training(NULL), -1);
    assert_status(elle_model_forward(NULL, buf, 1, buf), ELLE_EINVAL);
    assert_status(elle_model_input_grad(NULL, buf, labels, 1, buf, NULL), ELLE_EINVAL);
    assert_status(elle_model_backward(NULL, buf, labels, 1, NULL, NULL), ELLE_EINVAL);
    assert_status(elle_model_zero_grad(NULL), ELLE_EINVAL);
    assert_status(elle_model_logits(NULL, 1, buf), ELLE_EINVAL);
    assert_true(elle_model_state_count(NULL) <= 0);
    assert_status(elle_model_state_info(NULL, 0, &name, &kind, &ndim, dims), ELLE_EINVAL);
    assert_status(elle_model_state_get(NULL, 0, buf), ELLE_EINVAL);
    assert_status(elle_model_state_set(NULL, 0, buf), ELLE_EINVAL);
    assert_status(elle_model_grad_get(NULL, 0, buf), ELLE_EINVAL);
    assert_true(elle_model_num_params(NULL) <= 0);
    assert_true(elle_model_memory_size(NULL) == 0);
    assert_true(elle_model_num_classes(NULL) <= 0);
    assert_status(elle_model_input_shape(NULL, &c, &h, &w), ELLE_EINVAL);
    assert_null(elle_model_arch(NULL));
    assert_status(elle_model_save(NULL, "/tmp/never-written.safetensors"), ELLE_EINVAL);
    assert_status(elle_model_load(NULL, "/tmp/never-read.safetensors"), ELLE_EINVAL);
}

static void test_model_queries(void **state)
{
    fixture *f = *state;
    int64_t c = 0, h = 0, w = 0;
    assert_ok(elle_model_input_shape(f->model, &c, &h, &w));
    assert_int_equal(c, f->c);
    assert_int_equal(h, f->h);
    assert_int_equal(w, f->w);
    assert_ok(elle_model_input_shape(f->model, NULL, NULL, NULL)); /* any may be NULL */
    assert_int_equal(elle_model_num_classes(f->model), f->k);
    assert_non_null(elle_model_arch(f->model));
    assert_string_equal(elle_model_arch(f->model), "small_cnn");
    assert_true(elle_model_num_params(f->model) > 0);
    assert_true(elle_model_memory_size(f->model) > 0);
    assert_true(elle_model_state_count(f->model) > 0);
    int t = elle_model_training(f->model);
    assert_true(t == 0 || t == 1);
}

static void test_model_training_flag(void **state)
{
    fixture *f = *state;
    assert_ok(elle_model_set_training(f->model, 1));
    assert_int_equal(elle_model_training(f->model), 1);
    assert_ok(elle_model_set_training(f->model, 0));
    assert_int_equal(elle_model_training(f->model), 0);
    assert_status(elle_model_set_training(f->model, 2), ELLE_EINVAL);
    assert_status(elle_model_set_training(f->model, -1), ELLE_EINVAL);
    assert_int_equal(elle_model_training(f->model), 0);
}

static void test_model_before_reserve(void **state)
{
    fixture *f = *state;
    float *x = calloc((size_t)f->per, sizeof *x);
    float *dx = calloc((size_t)f->per, sizeof *dx);
    float logits[10], loss[1];
    int32_t labels[1] = {3};
    assert_non_null(x);
    assert_non_null(dx);
    assert_status(elle_model_forward(f->model, x, 1, logits), ELLE_ESTATE);
    assert_status(elle_model_input_grad(f->model, x, labels, 1, dx, loss), ELLE_ESTATE);
    assert_status(elle_model_backward(f->model, x, labels, 1, loss, dx), ELLE_ESTATE);
    assert_status(elle_model_logits(f->model, 1, logits), ELLE_ESTATE); /* no forward */
    free(x);
    free(dx);
}

static void test_model_reserve_errors(void **state)
{
    fixture *f = *state;
    assert_status(elle_model_reserve(f->model, 0), ELLE_EINVAL);
    assert_status(elle_model_reserve(f->model, -1), ELLE_EINVAL);
    assert_status(elle_model_reserve(f->model, INT64_MIN), ELLE_EINVAL);
    assert_ok(elle_model_reserve(f->model, 2));
    assert_ok(elle_model_reserve(f->model, 3)); /* re-plan */
}

static void test_model_batch_errors(void **state)
{
    fixture *f = *state;
    const int64_t max = 2;
    float *x = calloc((size_t)(f->per * (max + 1)), sizeof *x);
    float *dx = calloc((size_t)(f->per * (max + 1)), sizeof *dx);
    float logits[30], loss[3];
    int32_t labels[3] = {0, 1, 2};
    assert_non_null(x);
    assert_non_null(dx);
    assert_ok(elle_model_reserve(f->model, max));

    /* n > max_batch */
    assert_status(elle_model_forward(f->model, x, max + 1, logits), ELLE_ESHAPE);
    assert_status(elle_model_input_grad(f->model, x, labels, max + 1, dx, loss), ELLE_ESHAPE);
    assert_status(elle_model_backward(f->model, x, labels, max + 1, loss, dx), ELLE_ESHAPE);

    /* n <= 0 */
    static const int64_t bad_n[] = {0, -1, INT64_MIN};
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++) {
        assert_status(elle_model_forward(f->model, x, bad_n[i], logits), ELLE_EINVAL);
        assert_status(elle_model_input_grad(f->model, x, labels, bad_n[i], dx, loss), ELLE_EINVAL);
        assert_status(elle_model_backward(f->model, x, labels, bad_n[i], loss, dx), ELLE_EINVAL);
    }

    /* NULL arrays */
    assert_status(elle_model_forward(f->model, NULL, 1, logits), ELLE_EINVAL);
    assert_status(elle_model_forward(f->model, x, 1, NULL), ELLE_EINVAL);
    assert_status(elle_model_input_grad(f->model, NULL, labels, 1, dx, loss), ELLE_EINVAL);
    assert_status(elle_model_input_grad(f->model, x, NULL, 1, dx, loss), ELLE_EINVAL);
    assert_status(elle_model_input_grad(f->model, x, labels, 1, NULL, loss), ELLE_EINVAL);
    assert_status(elle_model_backward(f->model, NULL, labels, 1, loss, dx), ELLE_EINVAL);
    assert_status(elle_model_backward(f->model, x, NULL, 1, loss, dx), ELLE_EINVAL);

    /* labels outside [0, classes) */
    int32_t bad_labels[][2] = {{0, -1}, {(int32_t)f->k, 0}, {INT32_MAX, 0}, {INT32_MIN, 0}};
    for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++) {
        assert_status(elle_model_input_grad(f->model, x, bad_labels[i], 2, dx, loss), ELLE_EINVAL);
        assert_status(elle_model_backward(f->model, x, bad_labels[i], 2, loss, dx), ELLE_EINVAL);
    }

    /* the documented optional outputs really are optional */
    assert_ok(elle_model_forward(f->model, x, max, logits));
    assert_ok(elle_model_input_grad(f->model, x, labels, max, dx, NULL));
    assert_ok(elle_model_zero_grad(f->model));
    assert_ok(elle_model_backward(f->model, x, labels, max, NULL, NULL));
    assert_ok(elle_model_backward(f->model, x, labels, 1, loss, NULL));
    /* the last forward's logits: rows 1 .. its batch (1 here) */
    assert_ok(elle_model_logits(f->model, 1, logits));
    assert_status(elle_model_logits(f->model, 2, logits), ELLE_EINVAL);
    assert_status(elle_model_logits(f->model, 0, logits), ELLE_EINVAL);
    assert_status(elle_model_logits(f->model, 1, NULL), ELLE_EINVAL);
    /* a re-reserve discards them */
    assert_ok(elle_model_reserve(f->model, max));
    assert_status(elle_model_logits(f->model, 1, logits), ELLE_ESTATE);
    free(x);
    free(dx);
}

static void test_model_state_errors(void **state)
{
    fixture *f = *state;
    int64_t n = elle_model_state_count(f->model);
    assert_true(n > 0);
    float *buf = calloc(1 << 16, sizeof *buf);
    assert_non_null(buf);
    const char *name = NULL;
    elle_state_kind kind;
    int ndim;
    int64_t dims[4];
    const int64_t bad[] = {-1, n, n + 1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_status(elle_model_state_info(f->model, bad[i], &name, &kind, &ndim, dims),
                      ELLE_EINVAL);
        assert_status(elle_model_state_get(f->model, bad[i], buf), ELLE_EINVAL);
        assert_status(elle_model_state_set(f->model, bad[i], buf), ELLE_EINVAL);
        assert_status(elle_model_grad_get(f->model, bad[i], buf), ELLE_EINVAL);
    }
    assert_ok(elle_model_state_info(f->model, 0, NULL, NULL, NULL, NULL)); /* outs optional */
    assert_status(elle_model_state_get(f->model, 0, NULL), ELLE_EINVAL);
    assert_status(elle_model_state_set(f->model, 0, NULL), ELLE_EINVAL);
    assert_status(elle_model_grad_get(f->model, 0, NULL), ELLE_EINVAL);

    /* grad_get of a buffer or counter entry: EINVAL */
    int checked = 0;
    for (int64_t i = 0; i < n; i++) {
        assert_ok(elle_model_state_info(f->model, i, &name, &kind, &ndim, dims));
        if (kind != ELLE_STATE_PARAMETER) {
            assert_status(elle_model_grad_get(f->model, i, buf), ELLE_EINVAL);
            checked++;
        }
    }
    assert_true(checked > 0); /* small_cnn has BatchNorm buffers */
    free(buf);
}

static void test_model_save_load_errors(void **state)
{
    fixture *f = *state;
    assert_status(elle_model_save(f->model, NULL), ELLE_EINVAL);
    assert_status(elle_model_load(f->model, NULL), ELLE_EINVAL);
    assert_status(elle_model_save(f->model, "/nonexistent-dir-elle/sub/model.safetensors"),
                  ELLE_EIO);
    assert_status(elle_model_load(f->model, "/nonexistent-dir-elle/model.safetensors"), ELLE_EIO);

    char *path = client_temp_path("missing");
    unlink(path);
    assert_status(elle_model_load(f->model, path), ELLE_EIO);
    free(path);
}

/* Reference logits for the unchanged-on-failure checks. */
static void logits_of(fixture *f, const float *x, float *out)
{
    assert_ok(elle_model_forward(f->model, x, 2, out));
}

static void test_model_load_bad_files(void **state)
{
    fixture *f = *state;
    float *x = malloc(sizeof(float) * (size_t)(2 * f->per));
    float before[20], after[20];
    assert_non_null(x);
    client_fill_images(x, (size_t)(2 * f->per), 7);
    assert_ok(elle_model_reserve(f->model, 2));
    assert_ok(elle_model_set_training(f->model, 0));
    logits_of(f, x, before);

    /* garbage, an empty file and a truncated real file: ELLE_EFORMAT */
    char *path = client_temp_path("bad");
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    fputs("this is not a safetensors file, not even close", fp);
    fclose(fp);
    assert_status(elle_model_load(f->model, path), ELLE_EFORMAT);

    fp = fopen(path, "wb");
    assert_non_null(fp);
    fclose(fp);
    assert_status(elle_model_load(f->model, path), ELLE_EFORMAT);

    assert_ok(elle_model_save(f->model, path));
    fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fclose(fp);
    assert_true(size > 100);
    assert_int_equal(truncate(path, size / 2), 0);
    assert_status(elle_model_load(f->model, path), ELLE_EFORMAT);

    /* a file of a model with other shapes: ELLE_ESHAPE */
    elle_model_config *cfg2 = NULL;
    elle_model *other = NULL;
    assert_ok(elle_model_config_create(&cfg2, "small_cnn"));
    assert_ok(elle_model_config_set_param(cfg2, ELLE_MODEL_PARAM_WIDTH, 8)); /* fixture: 4 */
    assert_ok(elle_model_config_set_param(cfg2, ELLE_MODEL_PARAM_HIDDEN, 16));
    assert_ok(elle_model_create(&other, f->ctx, cfg2));
    assert_ok(elle_model_save(other, path));
    assert_status(elle_model_load(f->model, path), ELLE_ESHAPE);
    elle_model_free(other);
    elle_model_config_free(cfg2);

    /* the model is unchanged by every failed load */
    logits_of(f, x, after);
    assert_memory_equal(before, after, sizeof before);

    unlink(path);
    free(path);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_status_values_pinned),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_error_last_and_clear),
        cmocka_unit_test(test_error_is_thread_local),
        cmocka_unit_test(test_context_create_errors),
        cmocka_unit_test(test_context_cuda),
        cmocka_unit_test(test_context_free_null),
        cmocka_unit_test(test_context_params),
        cmocka_unit_test(test_backend_queries),
        cmocka_unit_test(test_log_set),
        cmocka_unit_test(test_model_config_create_errors),
        cmocka_unit_test(test_model_config_params),
        cmocka_unit_test(test_model_config_normalization),
        cmocka_unit_test(test_model_null_handles),
        cmocka_unit_test_setup_teardown(test_model_create_errors, model_setup, model_teardown),
        cmocka_unit_test_setup_teardown(test_model_queries, model_setup, model_teardown),
        cmocka_unit_test_setup_teardown(test_model_training_flag, model_setup, model_teardown),
        cmocka_unit_test_setup_teardown(test_model_before_reserve, model_setup, model_teardown),
        cmocka_unit_test_setup_teardown(test_model_reserve_errors, model_setup, model_teardown),
        cmocka_unit_test_setup_teardown(test_model_batch_errors, model_setup, model_teardown),
        cmocka_unit_test_setup_teardown(test_model_state_errors, model_setup, model_teardown),
        cmocka_unit_test_setup_teardown(test_model_save_load_errors, model_setup, model_teardown),
        cmocka_unit_test_setup_teardown(test_model_load_bad_files, model_setup, model_teardown),
    };
    return cmocka_run_group_tests_name("api.client_errors", tests, NULL, NULL);
}
