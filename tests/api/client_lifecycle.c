/*
 * Public-API client test: the whole flow a user goes through, on the CPU
 * (oneDNN) and on the reference backend. Links only libelle.so.
 *
 *   context -> config "small_cnn" -> model -> reserve(8) -> forward ->
 *   input_grad -> zero_grad + backward -> state count/info/get/set ->
 *   save -> load into a fresh model (identical logits) -> free
 *
 * A last test copies the reference model's state into a CPU model through
 * the public state API and compares the logits and gradients of the two
 * backends.
 */
#include "client_test.h"

#define BATCH 8

typedef struct flow {
    elle_backend kind;
    elle_context *ctx;
    elle_model_config *cfg;
    elle_model *model;
    int64_t per, k;
    float *x, *x2, *dx, *logits, *loss;
    int32_t labels[BATCH];
} flow;

static int flow_setup(void **state, elle_backend kind)
{
    flow *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->kind = kind;
    *state = f;
    return 0;
}
static int setup_cpu(void **state) { return flow_setup(state, ELLE_BACKEND_CPU); }
static int setup_ref(void **state) { return flow_setup(state, ELLE_BACKEND_REFERENCE); }

static int flow_teardown(void **state)
{
    flow *f = *state;
    if (!f)
        return 0;
    elle_model_free(f->model);
    elle_model_config_free(f->cfg);
    elle_context_free(f->ctx);
    free(f->x);
    free(f->x2);
    free(f->dx);
    free(f->logits);
    free(f->loss);
    free(f);
    return 0;
}

/* Size of state entry i in bytes (float entries; a counter is one int64). */
static size_t entry_bytes(const elle_model *m, int64_t i, elle_state_kind *kind_out)
{
    elle_state_kind kind;
    int ndim = -1;
    int64_t dims[4] = {-1, -1, -1, -1};
    assert_ok(elle_model_state_info(m, i, NULL, &kind, &ndim, dims));
    if (kind_out)
        *kind_out = kind;
    if (kind == ELLE_STATE_COUNTER)
        return sizeof(int64_t);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++)
        numel *= dims[d];
    return (size_t)numel * sizeof(float);
}

static void run_flow(flow *f)
{
    int64_t c = 0, h = 0, w = 0;
    double v = 0;

    /* context and configuration */
    assert_ok(elle_context_create(&f->ctx, f->kind, 0));
    assert_int_equal(elle_context_backend(f->ctx), f->kind);
    assert_ok(elle_context_set_param(f->ctx, ELLE_CONTEXT_PARAM_THREADS, 2));
    assert_ok(elle_model_config_create(&f->cfg, "small_cnn"));
    /* documented small_cnn defaults */
    static const struct {
        elle_model_param p;
        double v;
    } defaults[] = {{ELLE_MODEL_PARAM_IN_CHANNELS, 1}, {ELLE_MODEL_PARAM_IN_HEIGHT, 28},
                    {ELLE_MODEL_PARAM_IN_WIDTH, 28},   {ELLE_MODEL_PARAM_NUM_CLASSES, 10},
                    {ELLE_MODEL_PARAM_WIDTH, 16},      {ELLE_MODEL_PARAM_DEPTH, 2},
                    {ELLE_MODEL_PARAM_HIDDEN, 128},    {ELLE_MODEL_PARAM_SEED, 0},
                    {ELLE_MODEL_PARAM_BN_MOMENTUM, 0.1}, {ELLE_MODEL_PARAM_BN_EPS, 1e-5}};
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
        assert_ok(elle_model_config_get_param(f->cfg, defaults[i].p, &v));
        if (fabs(v - defaults[i].v) > 1e-12)
            fail_msg("small_cnn default of %s is %g, documented %g",
                     elle_model_param_name(defaults[i].p), v, defaults[i].v);
    }
    assert_ok(elle_model_config_set_param(f->cfg, ELLE_MODEL_PARAM_SEED, 1234));

    /* model */
    assert_ok(elle_model_create(&f->model, f->ctx, f->cfg));
    elle_model_config_free(f->cfg); /* the config may be freed after create */
    f->cfg = NULL;
    assert_string_equal(elle_model_arch(f->model), "small_cnn");
    assert_ok(elle_model_input_shape(f->model, &c, &h, &w));
    assert_true(c == 1 && h == 28 && w == 28);
    f->per = c * h * w;
    f->k = elle_model_num_classes(f->model);
    assert_int_equal(f->k, 10);
    /* conv 16x1x3x3, bn 16+16, conv 32x16x3x3, bn 32+32, fc 1568->128, fc 128->10 */
    assert_int_equal(elle_model_num_params(f->model),
                     144 + 32 + 4608 + 64 + (1568 * 128 + 128) + (128 * 10 + 10));

    size_t mem_before = elle_model_memory_size(f->model);
    assert_ok(elle_model_reserve(f->model, BATCH));
    assert_true(elle_model_memory_size(f->model) > mem_before);

    f->x = malloc(sizeof(float) * (size_t)(BATCH * f->per));
    f->x2 = malloc(sizeof(float) * (size_t)(BATCH * f->per));
    f->dx = malloc(sizeof(float) * (size_t)(BATCH * f->per));
    f->logits = malloc(sizeof(float) * (size_t)(BATCH * f->k));
    f->loss = malloc(sizeof(float) * BATCH);
    assert_true(f->x && f->x2 && f->dx && f->logits && f->loss);
    client_fill_images(f->x, (size_t)(BATCH * f->per), 1);
    for (int i = 0; i < BATCH; i++)
        f->labels[i] = (int32_t)(i % f->k);

    /* forward (eval mode: deterministic, running statistics untouched) */
    assert_ok(elle_model_set_training(f->model, 0));
    assert_ok(elle_model_forward(f->model, f->x, BATCH, f->logits));
    assert_true(client_all_finite(f->logits, (size_t)(BATCH * f->k)));
    float *again = malloc(sizeof(float) * (size_t)(BATCH * f->k));
    assert_non_null(again);
    assert_ok(elle_model_forward(f->model, f->x, BATCH, again));
    assert_memory_equal(f->logits, again, sizeof(float) * (size_t)(BATCH * f->k));
    /* a smaller batch gives the same logits for its samples */
    assert_ok(elle_model_forward(f->model, f->x, 3, again));
    for (int64_t i = 0; i < 3 * f->k; i++)
        assert_true(fabsf(again[i] - f->logits[i]) <= 1e-5f + 1e-5f * fabsf(f->logits[i]));
    free(again);

    /* input gradient: finite, not all zero; losses positive */
    assert_ok(elle_model_input_grad(f->model, f->x, f->labels, BATCH, f->dx, f->loss));
    assert_true(client_all_finite(f->dx, (size_t)(BATCH * f->per)));
    assert_true(client_all_finite(f->loss, BATCH));
    double gnorm = 0;
    for (int64_t i = 0; i < BATCH * f->per; i++)
        gnorm += (double)f->dx[i] * f->dx[i];
    assert_true(gnorm > 0);
    for (int i = 0; i < BATCH; i++)
        assert_true(f->loss[i] > 0);
    /* per-sample loss = logsumexp(z) - z[y], from the forward's logits */
    for (int i = 0; i < BATCH; i++) {
        const float *z = f->logits + i * f->k;
        double mx = z[0], s = 0;
        for (int64_t j = 1; j < f->k; j++)
            mx = z[j] > mx ? z[j] : mx;
        for (int64_t j = 0; j < f->k; j++)
            s += exp(z[j] - mx);
        double want = mx + log(s) - z[f->labels[i]];
        if (fabs(f->loss[i] - want) > 1e-4 + 1e-4 * fabs(want))
            fail_msg("loss[%d] = %g, logsumexp - z[y] = %g", i, (double)f->loss[i], want);
    }

    /* backward: the gradient accumulates, and zero_grad resets it */
    int64_t n_states = elle_model_state_count(f->model);
    assert_true(n_states > 0);
    int64_t pidx = -1;
    for (int64_t i = 0; i < n_states && pidx < 0; i++) {
        elle_state_kind kind;
        assert_ok(elle_model_state_info(f->model, i, NULL, &kind, NULL, NULL));
        if (kind == ELLE_STATE_PARAMETER)
            pidx = i;
    }
    assert_true(pidx >= 0);
    size_t pbytes = entry_bytes(f->model, pidx, NULL);
    float *g1 = malloc(pbytes), *g2 = malloc(pbytes);
    assert_true(g1 && g2);
    assert_ok(elle_model_zero_grad(f->model));
    assert_ok(elle_model_grad_get(f->model, pidx, g1));
    for (size_t i = 0; i < pbytes / sizeof(float); i++)
        assert_true(g1[i] == 0.0f);
    float *dx2 = malloc(sizeof(float) * (size_t)(BATCH * f->per));
    assert_non_null(dx2);
    assert_ok(elle_model_backward(f->model, f->x, f->labels, BATCH, f->loss, dx2));
    assert_true(client_all_finite(dx2, (size_t)(BATCH * f->per)));
    for (int64_t i = 0; i < BATCH * f->per; i++)
        assert_true(fabsf(dx2[i] - f->dx[i]) <= 1e-6f + 1e-4f * fabsf(f->dx[i]));
    free(dx2);
    assert_ok(elle_model_grad_get(f->model, pidx, g1));
    assert_true(client_all_finite(g1, pbytes / sizeof(float)));
    double g1norm = 0;
    for (size_t i = 0; i < pbytes / sizeof(float); i++)
        g1norm += (double)g1[i] * g1[i];
    assert_true(g1norm > 0);
    assert_ok(elle_model_backward(f->model, f->x, f->labels, BATCH, NULL, NULL));
    assert_ok(elle_model_grad_get(f->model, pidx, g2));
    for (size_t i = 0; i < pbytes / sizeof(float); i++)
        assert_true(fabsf(g2[i] - 2 * g1[i]) <= 1e-6f + 1e-4f * fabsf(g1[i]));
    free(g1);
    free(g2);

    /* state: info for every entry; get -> set -> get round trip */
    int have_param = 0, have_buffer = 0, have_counter = 0;
    for (int64_t i = 0; i < n_states; i++) {
        const char *name = NULL;
        elle_state_kind kind;
        int ndim = -1;
        int64_t dims[4] = {0, 0, 0, 0};
        assert_ok(elle_model_state_info(f->model, i, &name, &kind, &ndim, dims));
        assert_non_null(name);
        assert_true(name[0] != '\0');
        assert_true(ndim >= 0 && ndim <= 4);
        for (int d = 0; d < 4; d++)
            assert_true(d < ndim ? dims[d] >= 1 : dims[d] == 1);
        have_param |= kind == ELLE_STATE_PARAMETER;
        have_buffer |= kind == ELLE_STATE_BUFFER;
        have_counter |= kind == ELLE_STATE_COUNTER;

        size_t bytes = entry_bytes(f->model, i, NULL);
        void *a = malloc(bytes), *b = malloc(bytes);
        assert_true(a && b);
        assert_ok(elle_model_state_get(f->model, i, a));
        if (kind == ELLE_STATE_COUNTER) {
            int64_t cnt = *(int64_t *)a + 5;
            assert_ok(elle_model_state_set(f->model, i, &cnt));
            assert_ok(elle_model_state_get(f->model, i, b));
            assert_memory_equal(&cnt, b, sizeof cnt);
        } else {
            float *fa = a;
            for (size_t j = 0; j < bytes / sizeof(float); j++)
                fa[j] = fa[j] * 0.5f + 0.125f;
            assert_ok(elle_model_state_set(f->model, i, fa));
            assert_ok(elle_model_state_get(f->model, i, b));
            assert_memory_equal(fa, b, bytes);
        }
        free(a);
        free(b);
    }
    assert_true(have_param && have_buffer && have_counter);
    /* "bn1.running_mean"-style PyTorch names */
    {
        const char *name = NULL;
        assert_ok(elle_model_state_info(f->model, 0, &name, NULL, NULL, NULL));
        assert_non_null(strchr(name, '.'));
    }

    /* logits of the modified model, then save and load into a fresh model */
    assert_ok(elle_model_forward(f->model, f->x, BATCH, f->logits));
    assert_true(client_all_finite(f->logits, (size_t)(BATCH * f->k)));
    char *path = client_temp_path("lifecycle");
    assert_ok(elle_model_save(f->model, path));

    elle_model_config *cfg2 = NULL;
    elle_model *m2 = NULL;
    assert_ok(elle_model_config_create(&cfg2, "small_cnn"));
    assert_ok(elle_model_config_set_param(cfg2, ELLE_MODEL_PARAM_SEED, 99)); /* other weights */
    assert_ok(elle_model_create(&m2, f->ctx, cfg2));
    elle_model_config_free(cfg2);
    assert_ok(elle_model_reserve(m2, BATCH));
    assert_ok(elle_model_set_training(m2, 0));
    float *l2 = malloc(sizeof(float) * (size_t)(BATCH * f->k));
    assert_non_null(l2);
    assert_ok(elle_model_forward(m2, f->x, BATCH, l2));
    assert_true(memcmp(l2, f->logits, sizeof(float) * (size_t)(BATCH * f->k)) != 0);
    assert_ok(elle_model_load(m2, path));
    assert_ok(elle_model_forward(m2, f->x, BATCH, l2));
    assert_memory_equal(l2, f->logits, sizeof(float) * (size_t)(BATCH * f->k));
    /* every state entry came back bit for bit */
    for (int64_t i = 0; i < n_states; i++) {
        size_t bytes = entry_bytes(f->model, i, NULL);
        void *a = malloc(bytes), *b = malloc(bytes);
        assert_true(a && b);
        assert_ok(elle_model_state_get(f->model, i, a));
        assert_ok(elle_model_state_get(m2, i, b));
        assert_memory_equal(a, b, bytes);
        free(a);
        free(b);
    }
    free(l2);
    elle_model_free(m2);
    unlink(path);
    free(path);

    /* training mode: a forward updates the running statistics */
    assert_ok(elle_model_set_training(f->model, 1));
    assert_ok(elle_model_input_grad(f->model, f->x, f->labels, BATCH, f->dx, NULL));
    assert_ok(elle_model_set_training(f->model, 0));

    elle_model_free(f->model);
    f->model = NULL;
    elle_context_free(f->ctx);
    f->ctx = NULL;
}

static void test_flow(void **state)
{
    run_flow(*state);
}

/* The reference model's weights, copied into a CPU model, give the same logits. */
static void test_cpu_matches_reference(void **state)
{
    (void)state;
    elle_context *cref = NULL, *ccpu = NULL;
    elle_model_config *cfg = NULL;
    elle_model *mref = NULL, *mcpu = NULL;
    const int64_t per = 28 * 28, k = 10;
    float *x = malloc(sizeof(float) * BATCH * per);
    float *lr = malloc(sizeof(float) * BATCH * k), *lc = malloc(sizeof(float) * BATCH * k);
    float *dr = malloc(sizeof(float) * BATCH * per), *dc = malloc(sizeof(float) * BATCH * per);
    int32_t labels[BATCH];
    assert_true(x && lr && lc && dr && dc);
    client_fill_images(x, (size_t)(BATCH * per), 3);
    for (int i = 0; i < BATCH; i++)
        labels[i] = (int32_t)((3 * i) % k);

    assert_ok(elle_context_create(&cref, ELLE_BACKEND_REFERENCE, 0));
    assert_ok(elle_context_create(&ccpu, ELLE_BACKEND_CPU, 0));
    assert_ok(elle_model_config_create(&cfg, "small_cnn"));
    assert_ok(elle_model_create(&mref, cref, cfg));
    assert_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, 77));
    assert_ok(elle_model_create(&mcpu, ccpu, cfg));
    elle_model_config_free(cfg);
    int64_t n = elle_model_state_count(mref);
    assert_int_equal(elle_model_state_count(mcpu), n);
    for (int64_t i = 0; i < n; i++) {
        const char *na = NULL, *nb = NULL;
        assert_ok(elle_model_state_info(mref, i, &na, NULL, NULL, NULL));
        assert_ok(elle_model_state_info(mcpu, i, &nb, NULL, NULL, NULL));
        assert_string_equal(na, nb);
        size_t bytes = entry_bytes(mref, i, NULL);
        void *buf = malloc(bytes);
        assert_non_null(buf);
        assert_ok(elle_model_state_get(mref, i, buf));
        assert_ok(elle_model_state_set(mcpu, i, buf));
        free(buf);
    }
    assert_ok(elle_model_reserve(mref, BATCH));
    assert_ok(elle_model_reserve(mcpu, BATCH));
    assert_ok(elle_model_set_training(mref, 0));
    assert_ok(elle_model_set_training(mcpu, 0));
    assert_ok(elle_model_forward(mref, x, BATCH, lr));
    assert_ok(elle_model_forward(mcpu, x, BATCH, lc));
    for (int64_t i = 0; i < BATCH * k; i++)
        if (!(fabsf(lc[i] - lr[i]) <= 1e-4f + 1e-3f * fabsf(lr[i])))
            fail_msg("logit %lld: cpu %.7g, reference %.7g", (long long)i, (double)lc[i],
                     (double)lr[i]);
    assert_ok(elle_model_input_grad(mref, x, labels, BATCH, dr, NULL));
    assert_ok(elle_model_input_grad(mcpu, x, labels, BATCH, dc, NULL));
    double num = 0, den = 0;
    for (int64_t i = 0; i < BATCH * per; i++) {
        num += ((double)dc[i] - dr[i]) * ((double)dc[i] - dr[i]);
        den += (double)dr[i] * dr[i];
    }
    if (!(den > 0 && num / den < 1e-6))
        fail_msg("input gradient: cpu vs reference NMSE %g", den > 0 ? num / den : num);

    elle_model_free(mref);
    elle_model_free(mcpu);
    elle_context_free(cref);
    elle_context_free(ccpu);
    free(x);
    free(lr);
    free(lc);
    free(dr);
    free(dc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        {"flow_reference", test_flow, setup_ref, flow_teardown, NULL},
        {"flow_cpu", test_flow, setup_cpu, flow_teardown, NULL},
        {"cpu_matches_reference", test_cpu_matches_reference, NULL, NULL, NULL},
    };
    return cmocka_run_group_tests_name("api.client_lifecycle", tests, NULL, NULL);
}
