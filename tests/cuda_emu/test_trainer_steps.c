/*
 * The trainer on the CUDA backend, through the public API, on the emulated
 * GPU (which counts device allocations; a real GPU run has no such
 * counter):
 *
 * - No allocation inside a training step (issue 7, item 3): once the first
 *   steps of a shape have run (they may grow the backend's workspace), the
 *   rest of the epoch makes no cudaMalloc, for clean training, RS-FGSM,
 *   PGD, FGSM + ELLE, FGSM + ELLE-A and FGSM + GradAlign.
 * - The whole loop agrees with the CPU backend: the same run on a CPU
 *   context (same weights, data order and random streams) reports the same
 *   per-step training losses, within 2 % (float sums in other orders,
 *   compounded over six SGD steps; an indexing or transfer error is O(1)).
 * - Nothing leaks: after everything is freed, the live device allocations
 *   and streams are back to where they started.
 */
#include "elle_test.h"

#include <math.h>
#include <string.h>

#include <cuda_runtime_api.h>

#define N_IMAGES 96
#define BATCH 16
#define STEPS (N_IMAGES / BATCH)
#define WARM_STEPS 2 /* steps that may still grow the workspace */

typedef struct method {
    const char *name;
    int attack;      /* elle_attack_kind, -1: clean training */
    int regularizer; /* elle_regularizer_kind, -1: none */
    int adaptive;    /* ELLE-A */
} method;

typedef struct record {
    double loss[STEPS];
    size_t mallocs[STEPS];
    int steps;
} record;

static int on_step(const elle_train_metrics *mt, void *user)
{
    record *r = user;
    double loss = NAN;
    if (r->steps < STEPS && elle_train_metrics_get(mt, ELLE_TRAIN_METRIC_LOSS, &loss) == ELLE_OK) {
        r->loss[r->steps] = loss;
        r->mallocs[r->steps] = elle_emu_malloc_calls();
    }
    r->steps++;
    return 0;
}

static elle_dataset *random_dataset(void)
{
    static float images[N_IMAGES * 1 * 12 * 12];
    static int32_t labels[N_IMAGES];
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof images / sizeof images[0]; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        images[i] = (float)(s >> 40) / 16777216.0f;
    }
    for (int i = 0; i < N_IMAGES; i++)
        labels[i] = (i * 7 + 3) % 10;
    elle_dataset *d = NULL;
    assert_elle_ok(elle_dataset_from_host(&d, images, labels, N_IMAGES, 1, 12, 12, 10));
    return d;
}

static void run(elle_context *ctx, const method *me, elle_dataset *d, record *rec)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, "small_cnn"));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 8));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, 32));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_CHANNELS, 1));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, 12));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, 12));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, 7));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);

    elle_trainer *t = NULL;
    assert_elle_ok(elle_trainer_create(&t, m));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EPOCHS, 1));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_BATCH_SIZE, BATCH));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, 0.05));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_SEED, 3));
    elle_attack *a = NULL;
    elle_regularizer *r = NULL;
    if (me->attack >= 0) {
        assert_elle_ok(elle_attack_create(&a, m, (elle_attack_kind)me->attack));
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, 8.0 / 255.0));
        if (me->attack == ELLE_ATTACK_PGD)
            assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 3));
        assert_elle_ok(elle_trainer_set_attack(t, a));
    }
    if (me->regularizer >= 0) {
        assert_elle_ok(elle_regularizer_create(&r, m, (elle_regularizer_kind)me->regularizer));
        assert_elle_ok(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_EPS, 8.0 / 255.0));
        if (me->adaptive)
            assert_elle_ok(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_ADAPTIVE, 1));
        assert_elle_ok(elle_trainer_add_regularizer(t, r));
    }
    memset(rec, 0, sizeof *rec);
    assert_elle_ok(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_STEP, on_step, rec));
    assert_elle_ok(elle_trainer_fit(t, d, NULL, NULL));
    assert_int_equal(rec->steps, STEPS);
    elle_trainer_free(t);
    elle_attack_free(a);
    elle_regularizer_free(r);
    elle_model_free(m);
}

static void test_methods(void **state)
{
    (void)state;
    static const method methods[] = {
        {"clean", -1, -1, 0},
        {"rs-fgsm", ELLE_ATTACK_RS_FGSM, -1, 0},
        {"pgd-3", ELLE_ATTACK_PGD, -1, 0},
        {"fgsm+elle", ELLE_ATTACK_FGSM, ELLE_REGULARIZER_ELLE, 0},
        {"fgsm+elle-a", ELLE_ATTACK_FGSM, ELLE_REGULARIZER_ELLE, 1},
        {"fgsm+gradalign", ELLE_ATTACK_FGSM, ELLE_REGULARIZER_GRADALIGN, 0},
    };
    const size_t live0 = elle_emu_live_allocations(), streams0 = elle_emu_live_streams();
    elle_context *cpu = NULL, *gpu = NULL;
    assert_elle_ok(elle_context_create(&cpu, ELLE_BACKEND_CPU, 0));
    assert_elle_ok(elle_context_create(&gpu, ELLE_BACKEND_CUDA, 0));
    elle_dataset *d = random_dataset();
    for (size_t k = 0; k < sizeof methods / sizeof methods[0]; k++) {
        const method *me = &methods[k];
        record rc, rg;
        run(cpu, me, d, &rc);
        run(gpu, me, d, &rg);
        const size_t grown = rg.mallocs[STEPS - 1] - rg.mallocs[WARM_STEPS - 1];
        printf("%-15s cuda allocations after step %d: %zu; losses cpu/cuda:", me->name,
               WARM_STEPS, grown);
        for (int s = 0; s < STEPS; s++)
            printf(" %.4f/%.4f", rc.loss[s], rg.loss[s]);
        printf("\n");
        if (grown != 0)
            fail_msg("%s: %zu device allocations in steps %d..%d", me->name, grown,
                     WARM_STEPS + 1, STEPS);
        for (int s = 0; s < STEPS; s++)
            if (!(fabs(rg.loss[s] - rc.loss[s]) <= 0.02 * fabs(rc.loss[s])))
                fail_msg("%s: step %d loss %.6f on cuda, %.6f on cpu", me->name, s + 1,
                         rg.loss[s], rc.loss[s]);
    }
    elle_dataset_free(d);
    elle_context_free(cpu);
    elle_context_free(gpu);
    assert_int_equal(elle_emu_live_allocations(), live0);
    assert_int_equal(elle_emu_live_streams(), streams0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_methods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
