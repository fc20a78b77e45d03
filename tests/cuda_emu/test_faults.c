/*
 * The CUDA backend's error paths, by fault injection on the emulated GPU
 * (a real GPU cannot be made to fail on cue): one whole FGSM + ELLE
 * training step through the public API (context, model, attack,
 * regularizer, optimizer, forward, backward, the step) is run with
 *
 * - every one of its device allocations failing in turn: the call that
 *   needed the memory returns ELLE_ENOMEM with a message, nothing crashes;
 * - kernel launches failing, at positions spread over the step: the call
 *   returns ELLE_EDEVICE naming the CUDA error; no launch's failure is
 *   swallowed (the step never reports success after one);
 *
 * and after everything is freed no device memory or stream is left.
 */
#include "elle_test.h"

#include <string.h>

#include <cuda_runtime_api.h>

#define N 4

/* One training step from scratch; the first failing status (ELLE_OK when
 * all succeeded). Frees whatever it created, whatever happened. */
static int run_step(void)
{
    static float x[N * 12 * 12], adv[N * 12 * 12], loss[N], logits[N * 10];
    static int32_t y[N];
    for (int i = 0; i < N * 12 * 12; i++)
        x[i] = (float)((i * 37) % 101) / 100.0f;
    for (int i = 0; i < N; i++)
        y[i] = i % 10;
    elle_context *ctx = NULL;
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    elle_attack *a = NULL;
    elle_regularizer *r = NULL;
    elle_optimizer *o = NULL;
    double value = 0.0;
    int rc = elle_context_create(&ctx, ELLE_BACKEND_CUDA, 0);
    if (!rc)
        rc = elle_model_config_create(&cfg, "small_cnn");
    if (!rc)
        rc = elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 4);
    if (!rc)
        rc = elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, 16);
    if (!rc)
        rc = elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, 12);
    if (!rc)
        rc = elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, 12);
    if (!rc)
        rc = elle_model_create(&m, ctx, cfg);
    if (!rc)
        rc = elle_model_reserve(m, 3 * N);
    if (!rc)
        rc = elle_attack_create(&a, m, ELLE_ATTACK_RS_FGSM);
    if (!rc)
        rc = elle_regularizer_create(&r, m, ELLE_REGULARIZER_ELLE);
    if (!rc)
        rc = elle_optimizer_create_sgd(&o, m);
    if (!rc)
        rc = elle_model_set_training(m, 1);
    if (!rc)
        rc = elle_model_zero_grad(m);
    if (!rc)
        rc = elle_attack_perturb(a, x, y, N, adv);
    if (!rc)
        rc = elle_model_backward(m, adv, y, N, loss, NULL);
    if (!rc)
        rc = elle_regularizer_apply(r, x, y, adv, N, &value);
    if (!rc)
        rc = elle_optimizer_step(o);
    if (!rc)
        rc = elle_model_set_training(m, 0);
    if (!rc)
        rc = elle_model_forward(m, x, N, logits);
    elle_optimizer_free(o);
    elle_regularizer_free(r);
    elle_attack_free(a);
    elle_model_free(m);
    elle_model_config_free(cfg);
    elle_context_free(ctx);
    return rc;
}

static void assert_clean(size_t live0, size_t streams0, const char *what, size_t k)
{
    if (elle_emu_live_allocations() != live0 || elle_emu_live_streams() != streams0)
        fail_msg("%s %zu: %zu device allocations and %zu streams left (%zu and %zu before)",
                 what, k, elle_emu_live_allocations(), elle_emu_live_streams(), live0, streams0);
}

static void test_allocation_failures(void **state)
{
    (void)state;
    const size_t live0 = elle_emu_live_allocations(), streams0 = elle_emu_live_streams();
    const size_t before = elle_emu_malloc_calls();
    assert_elle_ok(run_step());
    const size_t mallocs = elle_emu_malloc_calls() - before;
    assert_true(mallocs >= 3); /* model arena, workspace, ... */
    assert_clean(live0, streams0, "clean run", 0);
    for (size_t k = 1; k <= mallocs; k++) {
        elle_emu_fail_nth_malloc(k);
        const int rc = run_step();
        elle_emu_fail_nth_malloc(0);
        const char *msg = elle_error_last()->message;
        printf("allocation %zu of %zu fails: %s (%s)\n", k, mallocs, elle_status_name(rc), msg);
        if (rc != ELLE_ENOMEM)
            fail_msg("allocation %zu: status %s, expected ELLE_ENOMEM (%s)", k,
                     elle_status_name(rc), msg);
        assert_true(msg[0] != '\0');
        assert_clean(live0, streams0, "allocation", k);
    }
}

static void test_launch_failures(void **state)
{
    (void)state;
    const size_t live0 = elle_emu_live_allocations(), streams0 = elle_emu_live_streams();
    const size_t before = elle_emu_launches();
    assert_elle_ok(run_step());
    const size_t launches = elle_emu_launches() - before;
    assert_true(launches > 20);
    /* the first few, then 24 positions spread over the step, the last */
    for (size_t j = 0; j < 30; j++) {
        const size_t k = j < 5 ? j + 1 : j < 29 ? 5 + (j - 5) * (launches - 5) / 24 : launches;
        elle_emu_fail_nth_launch(k);
        const int rc = run_step();
        elle_emu_fail_nth_launch(0);
        const char *msg = elle_error_last()->message;
        if (j < 3 || j == 29)
            printf("launch %zu of %zu fails: %s (%s)\n", k, launches, elle_status_name(rc), msg);
        if (rc != ELLE_EDEVICE)
            fail_msg("launch %zu of %zu: status %s, expected ELLE_EDEVICE (%s)", k, launches,
                     elle_status_name(rc), msg);
        if (!strstr(msg, "launch failure"))
            fail_msg("launch %zu: the message does not give CUDA's error: %s", k, msg);
        assert_clean(live0, streams0, "launch", k);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_launch_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
