/*
 * AutoAttack's pipeline (lib/attacks/autoattack.c) and the elle_attack
 * kinds built on it, on a small_cnn trained briefly (public trainer, clean
 * SGD) on a synthetic 10-class problem (class k: a bright row band at row
 * k + 1 of a noisy 12x12 grey image), oneDNN CPU backend:
 *
 * - the requirement: robust accuracy under AutoAttack <= under
 *   APGD-CE alone and <= under PGD-20, robust <= clean, the per-stage
 *   robust counts non-increasing, in the reference's order;
 * - AA's first stage equals APGD-CE alone (same seed, same chunks), and
 *   the same seed reproduces every stage's count;
 * - every point the driver counts as broken, checked by an independent
 *   forward (public elle_model_forward): misclassified, with the recorded
 *   prediction, inside the eps-ball and [0, 1]; every robust point left at
 *   x; clean mistakes never attacked;
 * - chunking: the result does not depend on the chunk size for the
 *   deterministic FAB-T, and every chunk is seeded alike (a chunk of one
 *   point gives the same APGD-CE point as that point inside a larger chunk
 *   at the same position of the random stream);
 * - the 'rand' version: apgd-ce then apgd-dlr; on a deterministic model
 *   eot_iter 20 and 1 give the same counts;
 * - elle_attack_perturb for every AutoAttack kind: inside B(x), changed
 *   only where misclassified;
 * - errors: bs above the reserved batch, invalid eps, n_max < 0, batch < 1,
 *   before reserve, too few classes, pixels outside [0, 1], stages out of
 *   range, the trainer's device path.
 *
 * The attacks run with reduced budgets (steps, queries, targets) where a
 * test does not need the standard ones, to stay well under a minute.
 */
#include <stdint.h>
#include <string.h>

#include "elle_test.h"
#include "attacks/attack_internal.h"
#include "attacks/autoattack_internal.h"

enum { H = 12, W = 12, PIX = H * W, K = 10, N_TRAIN = 600, N_TEST = 64, RESERVE = 64 };

/* where PGD-20 breaks about half the test points of this model */
#define EPS 0.09

static float pseudo(uint32_t i)
{
    uint32_t h = i * 2654435761u + 0x9e3779b9u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return (float)(h & 0xffffff) / 16777216.0f; /* [0, 1) */
}

static void make_images(int64_t n, uint32_t salt, float *x, int32_t *y)
{
    for (int64_t i = 0; i < n; i++) {
        y[i] = (int32_t)((i * 7 + salt) % K);
        for (int r = 0; r < H; r++)
            for (int c = 0; c < W; c++) {
                float v = 0.25f + 0.3f * pseudo((uint32_t)(i * PIX + r * W + c) + salt);
                if (r == y[i] + 1)
                    v += 0.35f;
                x[i * PIX + r * W + c] = v;
            }
    }
}

static elle_dataset *make_data(int64_t n, uint32_t salt)
{
    float *x = malloc((size_t)n * PIX * sizeof(float));
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    make_images(n, salt, x, y);
    elle_dataset *d = NULL;
    assert_elle_ok(elle_dataset_from_host(&d, x, y, n, 1, H, W, K));
    free(x);
    free(y);
    return d;
}

static elle_model *make_model(elle_context *ctx, int classes)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, "small_cnn"));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, H));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, W));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 4));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_DEPTH, 1));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, 32));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, classes));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, 5));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    return m;
}

typedef struct world {
    elle_context *ctx;
    elle_dataset *train, *test;
    elle_model *model; /* trained, eval mode, reserved for RESERVE */
    float *x;          /* the test images and labels as host arrays */
    int32_t *y;
} world;

static world *g_world;

static int group_setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    assert_elle_ok(elle_context_create(&w->ctx, ELLE_BACKEND_CPU, 0));
    /* small batches: one thread is faster, and immune to a loaded machine */
    assert_elle_ok(elle_context_set_param(w->ctx, ELLE_CONTEXT_PARAM_THREADS, 1));
    w->train = make_data(N_TRAIN, 0);
    w->test = make_data(N_TEST, 100003);
    w->x = malloc((size_t)N_TEST * PIX * sizeof(float));
    w->y = malloc((size_t)N_TEST * sizeof(int32_t));
    make_images(N_TEST, 100003, w->x, w->y);
    w->model = make_model(w->ctx, K);
    elle_trainer *t = NULL;
    assert_elle_ok(elle_trainer_create(&t, w->model));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EPOCHS, 4));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_BATCH_SIZE, 32));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, 0.1));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_PGD_TEST_N, 0));
    assert_elle_ok(elle_trainer_fit(t, w->train, NULL, NULL));
    elle_trainer_free(t);
    assert_elle_ok(elle_model_reserve(w->model, RESERVE));
    assert_elle_ok(elle_model_set_training(w->model, 0));
    g_world = w;
    *state = w;
    return 0;
}

static int group_teardown(void **state)
{
    world *w = *state;
    elle_model_free(w->model);
    elle_dataset_free(w->train);
    elle_dataset_free(w->test);
    elle_context_free(w->ctx);
    free(w->x);
    free(w->y);
    free(w);
    return 0;
}

static elle_attack *make_attack(elle_model *m, elle_attack_kind kind)
{
    elle_attack *a = NULL;
    assert_elle_ok(elle_attack_create(&a, m, kind));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, EPS));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_SEED, 3));
    return a;
}

static int32_t argmax(const float *z)
{
    int32_t best = 0;
    for (int32_t j = 1; j < K; j++)
        if (z[j] > z[best])
            best = j;
    return best;
}

static int in_ball(const float *xa, const float *x, float eps)
{
    for (int j = 0; j < PIX; j++)
        if (!(xa[j] >= 0.0f && xa[j] <= 1.0f && fabsf(xa[j] - x[j]) <= eps * (1 + 1e-6f)))
            return 0;
    return 1;
}

/* ---- the requirement ---------------------------------------------------- */

static void test_standard_vs_apgd_and_pgd(void **state)
{
    world *w = *state;
    int64_t clean, robust, total, stage_robust[4];
    double seconds[4];
    const char *names[4];
    elle_attack *aa = make_attack(w->model, ELLE_ATTACK_AUTOATTACK);
    assert_int_equal(elle_attack_num_stages(aa), 0);
    assert_elle_ok(elle_attack_evaluate(aa, w->test, 0, 24, &clean, &robust, &total));
    assert_int_equal(total, N_TEST);
    assert_int_equal(elle_attack_num_stages(aa), 4);
    static const char *const order[] = {"apgd-ce", "apgd-t", "fab-t", "square"};
    int64_t prev = clean;
    for (int s = 0; s < 4; s++) {
        assert_elle_ok(elle_attack_stage_result(aa, s, &names[s], &stage_robust[s], &seconds[s]));
        assert_string_equal(names[s], order[s]);
        assert_true(stage_robust[s] <= prev);
        assert_true(seconds[s] >= 0);
        prev = stage_robust[s];
    }
    assert_int_equal(robust, stage_robust[3]);
    print_message("clean %lld/%d; robust after apgd-ce %lld, apgd-t %lld, fab-t %lld, square "
                  "%lld (%.2f %.2f %.2f %.2f s)\n",
                  (long long)clean, N_TEST, (long long)stage_robust[0], (long long)stage_robust[1],
                  (long long)stage_robust[2], (long long)stage_robust[3], seconds[0], seconds[1],
                  seconds[2], seconds[3]);
    /* the fixture must leave the attacks something to do */
    assert_true(clean >= N_TEST * 3 / 4);
    assert_true(stage_robust[0] < clean);
    assert_true(robust > 0);

    /* APGD-CE alone: the same seed and chunks give AA's first stage exactly */
    elle_attack *ce = make_attack(w->model, ELLE_ATTACK_APGD_CE);
    int64_t clean_ce, robust_ce;
    assert_elle_ok(elle_attack_evaluate(ce, w->test, 0, 24, &clean_ce, &robust_ce, NULL));
    assert_int_equal(clean_ce, clean);
    assert_int_equal(robust_ce, stage_robust[0]);
    assert_int_equal(elle_attack_num_stages(ce), 1);
    const char *nm;
    assert_elle_ok(elle_attack_stage_result(ce, 0, &nm, NULL, NULL));
    assert_string_equal(nm, "apgd-ce");

    /* PGD-20 (alpha eps/8, the reference's per-epoch monitor), clamped to the image */
    elle_attack *pgd = make_attack(w->model, ELLE_ATTACK_PGD);
    assert_elle_ok(elle_attack_set_param(pgd, ELLE_ATTACK_PARAM_STEPS, 20));
    assert_elle_ok(elle_attack_set_param(pgd, ELLE_ATTACK_PARAM_ALPHA, EPS / 8));
    assert_elle_ok(elle_attack_set_param(pgd, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 1));
    int64_t clean_pgd, robust_pgd;
    assert_elle_ok(elle_attack_evaluate(pgd, w->test, 0, 24, &clean_pgd, &robust_pgd, NULL));
    assert_int_equal(clean_pgd, clean);
    assert_int_equal(elle_attack_num_stages(pgd), 1);
    print_message("PGD-20 robust %lld, APGD-CE robust %lld, AA robust %lld\n",
                  (long long)robust_pgd, (long long)robust_ce, (long long)robust);
    assert_true(robust <= robust_ce);
    assert_true(robust <= robust_pgd);
    assert_true(robust <= clean);

    /* the same seed reproduces every stage */
    int64_t robust2;
    assert_elle_ok(elle_attack_evaluate(aa, w->test, 0, 24, NULL, &robust2, NULL));
    assert_int_equal(robust2, robust);
    for (int s = 0; s < 4; s++) {
        int64_t r;
        assert_elle_ok(elle_attack_stage_result(aa, s, NULL, &r, NULL));
        assert_int_equal(r, stage_robust[s]);
    }
    elle_attack_free(aa);
    elle_attack_free(ce);
    elle_attack_free(pgd);
}

/* ---- the driver, checked point by point ----------------------------------------- */

static void run_driver(world *w, const elle__aa_attack *attacks, int n_attacks, int64_t bs,
                       elle__aa_params *p, unsigned char *robust, float *x_adv, int32_t *y_adv,
                       elle__aa_report *rep)
{
    elle__aa_model am;
    assert_elle_ok(elle__aa_model_init(&am, w->model));
    assert_elle_ok(elle__autoattack_run(&am, p, attacks, n_attacks, w->x, w->y, N_TEST, bs,
                                        robust, x_adv, y_adv, rep));
    elle__aa_model_release(&am);
}

static void test_driver_points(void **state)
{
    world *w = *state;
    static const elle__aa_attack attacks[] = {ELLE__AA_APGD_CE, ELLE__AA_APGD_T,
                                              ELLE__AA_FAB_T, ELLE__AA_SQUARE};
    elle__aa_params p;
    elle__aa_params_standard(&p, (float)EPS, 9);
    p.n_iter = 20;
    p.n_target_classes = 3;
    p.n_queries = 300;
    unsigned char robust[N_TEST];
    int32_t y_adv[N_TEST];
    float *x_adv = malloc((size_t)N_TEST * PIX * sizeof(float));
    float *z = malloc((size_t)N_TEST * K * sizeof(float));
    elle__aa_report rep;
    run_driver(w, attacks, 4, 20, &p, robust, x_adv, y_adv, &rep);
    assert_int_equal(rep.total, N_TEST);
    assert_int_equal(rep.n_stages, 4);

    /* independent forwards: at x, and at every returned point */
    assert_elle_ok(elle_model_forward(w->model, w->x, N_TEST, z));
    int64_t clean = 0, n_robust = 0, broken = 0;
    unsigned char correct[N_TEST];
    for (int i = 0; i < N_TEST; i++) {
        correct[i] = argmax(z + i * K) == w->y[i];
        clean += correct[i];
    }
    assert_int_equal(rep.clean, clean);
    assert_elle_ok(elle_model_forward(w->model, x_adv, N_TEST, z));
    for (int i = 0; i < N_TEST; i++) {
        const float *xa = x_adv + i * PIX, *x = w->x + i * PIX;
        if (robust[i]) {
            n_robust++;
            assert_true(correct[i]);
            assert_memory_equal(xa, x, PIX * sizeof(float));
            assert_int_equal(y_adv[i], w->y[i]);
        } else if (!correct[i]) {
            /* a clean mistake: never attacked */
            assert_memory_equal(xa, x, PIX * sizeof(float));
            assert_int_not_equal(y_adv[i], w->y[i]);
        } else {
            broken++;
            assert_true(in_ball(xa, x, (float)EPS));
            assert_int_not_equal(argmax(z + i * K), w->y[i]);
            assert_int_equal(argmax(z + i * K), y_adv[i]);
        }
    }
    assert_int_equal(n_robust, rep.stages[3].robust);
    assert_true(broken > 0);
    for (int s = 0; s < 4; s++) {
        assert_int_equal(rep.stages[s].attack, attacks[s]);
        assert_true(rep.stages[s].robust <= (s ? rep.stages[s - 1].robust : rep.clean));
    }

    /* NULL outputs are allowed and change nothing */
    elle__aa_report rep2;
    run_driver(w, attacks, 4, 20, &p, NULL, NULL, NULL, &rep2);
    for (int s = 0; s < 4; s++)
        assert_int_equal(rep2.stages[s].robust, rep.stages[s].robust);
    free(x_adv);
    free(z);
}

/* FAB-T draws no random numbers: its result cannot depend on how the
 * robust points are chunked. APGD-CE seeds every chunk alike: a chunk of
 * one point draws the first numel uniforms of the stream, as the first
 * point of any chunk does. */
static void test_chunking(void **state)
{
    world *w = *state;
    elle__aa_params p;
    elle__aa_params_standard(&p, (float)EPS, 4);
    p.n_iter = 10;
    p.n_target_classes = 2;
    const elle__aa_attack fab[] = {ELLE__AA_FAB_T};
    unsigned char r1[N_TEST], r2[N_TEST];
    elle__aa_report rep1, rep2;
    run_driver(w, fab, 1, 64, &p, r1, NULL, NULL, &rep1);
    run_driver(w, fab, 1, 7, &p, r2, NULL, NULL, &rep2);
    assert_memory_equal(r1, r2, N_TEST);
    assert_int_equal(rep1.stages[0].robust, rep2.stages[0].robust);

    /* APGD-CE: a chunk's first point draws the first numel uniforms of the
     * stream whatever the chunk size (each chunk is seeded alike), and in
     * eval mode the points of a chunk do not interact: the first point of
     * every chunk of 20 gets exactly what it gets in a chunk of its own */
    const elle__aa_attack ce[] = {ELLE__AA_APGD_CE};
    float *xa1 = malloc((size_t)N_TEST * PIX * sizeof(float));
    float *xa2 = malloc((size_t)N_TEST * PIX * sizeof(float));
    run_driver(w, ce, 1, 1, &p, r1, xa1, NULL, &rep1);
    run_driver(w, ce, 1, 20, &p, r2, xa2, NULL, &rep2);
    float z[K];
    int64_t j = 0, firsts = 0, others_differ = 0;
    for (int i = 0; i < N_TEST; i++) {
        assert_elle_ok(elle_model_forward(w->model, w->x + i * PIX, 1, z));
        if (argmax(z) != w->y[i])
            continue; /* not attacked */
        if (j % 20 == 0) {
            firsts++;
            assert_int_equal(r1[i], r2[i]);
            assert_memory_equal(xa1 + i * PIX, xa2 + i * PIX, PIX * sizeof(float));
        } else if (!r1[i] && !r2[i]) {
            others_differ += memcmp(xa1 + i * PIX, xa2 + i * PIX, PIX * sizeof(float)) != 0;
        }
        j++;
    }
    assert_true(firsts >= 2);
    /* elsewhere the starts differ (other positions of the stream) */
    assert_true(others_differ > 0);
    free(xa1);
    free(xa2);
}

/* ---- the 'rand' version ----------------------------------------------------------- */

static void test_rand_version(void **state)
{
    world *w = *state;
    elle_attack *a = make_attack(w->model, ELLE_ATTACK_AUTOATTACK);
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_VERSION, 1));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 5));
    int64_t clean, robust20, robust1, r20[2], r1[2];
    const char *names[2];
    assert_elle_ok(elle_attack_evaluate(a, w->test, 16, 16, &clean, &robust20, NULL));
    assert_int_equal(elle_attack_num_stages(a), 2);
    for (int s = 0; s < 2; s++)
        assert_elle_ok(elle_attack_stage_result(a, s, &names[s], &r20[s], NULL));
    assert_string_equal(names[0], "apgd-ce");
    assert_string_equal(names[1], "apgd-dlr");
    /* eot_iter 20 (the version's default) and 1 agree on a deterministic model */
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EOT_ITER, 1));
    assert_elle_ok(elle_attack_evaluate(a, w->test, 16, 16, NULL, &robust1, NULL));
    for (int s = 0; s < 2; s++) {
        assert_elle_ok(elle_attack_stage_result(a, s, NULL, &r1[s], NULL));
        assert_int_equal(r1[s], r20[s]);
    }
    assert_int_equal(robust1, robust20);
    assert_true(robust20 <= clean);
    elle_attack_free(a);
}

/* ---- elle_attack_perturb for every AutoAttack kind --------------------------------- */

static void test_perturb_kinds(void **state)
{
    world *w = *state;
    enum { N = 12 };
    static const elle_attack_kind kinds[] = {ELLE_ATTACK_APGD_CE, ELLE_ATTACK_APGD_DLR,
                                             ELLE_ATTACK_APGD_T,  ELLE_ATTACK_FAB_T,
                                             ELLE_ATTACK_SQUARE,  ELLE_ATTACK_AUTOATTACK};
    float *xa = malloc((size_t)N * PIX * sizeof(float));
    float z[N * K];
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        elle_attack *a = make_attack(w->model, kinds[k]);
        double steps;
        assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_STEPS, &steps));
        assert_true(kinds[k] == ELLE_ATTACK_SQUARE ? steps == 10 : steps == 100);
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 8));
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_N_QUERIES, 200));
        assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_N_TARGET_CLASSES, 2));
        assert_elle_ok(elle_attack_perturb(a, w->x, w->y, N, xa));
        assert_elle_ok(elle_model_forward(w->model, xa, N, z));
        int changed = 0;
        for (int i = 0; i < N; i++) {
            assert_true(in_ball(xa + i * PIX, w->x + i * PIX, (float)EPS));
            if (memcmp(xa + i * PIX, w->x + i * PIX, PIX * sizeof(float)) != 0) {
                changed++;
                /* every component returns x where it did not succeed */
                assert_int_not_equal(argmax(z + i * K), w->y[i]);
            }
        }
        /* (Square's 200 queries need not break any of these points) */
        if (kinds[k] != ELLE_ATTACK_SQUARE)
            assert_true(changed > 0);
        /* x_adv_out may be x */
        float *copy = malloc((size_t)N * PIX * sizeof(float));
        memcpy(copy, w->x, (size_t)N * PIX * sizeof(float));
        assert_elle_ok(elle_attack_perturb(a, copy, w->y, N, copy));
        assert_memory_equal(copy, xa, (size_t)N * PIX * sizeof(float));
        free(copy);
        elle_attack_free(a);
    }
    free(xa);
}

/* ---- errors --------------------------------------------------------------------- */

static void test_errors(void **state)
{
    world *w = *state;
    elle_attack *a = make_attack(w->model, ELLE_ATTACK_AUTOATTACK);
    int64_t c, r, t;
    /* bs above the reserved batch; batch < 1; n_max < 0 */
    assert_elle_status(elle_attack_evaluate(a, w->test, 0, RESERVE + 1, &c, &r, &t), ELLE_ESHAPE);
    assert_elle_status(elle_attack_evaluate(a, w->test, 0, 0, &c, &r, &t), ELLE_EINVAL);
    assert_elle_status(elle_attack_evaluate(a, w->test, -1, 16, &c, &r, &t), ELLE_EINVAL);
    assert_elle_status(elle_attack_evaluate(NULL, w->test, 0, 16, &c, &r, &t), ELLE_EINVAL);
    assert_elle_status(elle_attack_evaluate(a, NULL, 0, 16, &c, &r, &t), ELLE_EINVAL);
    /* eps outside [0, 1] or NaN: refused, the attack unchanged */
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, 1.5), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, -0.1), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, NAN), ELLE_EINVAL);
    double eps;
    assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_EPS, &eps));
    assert_true(eps == EPS);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_VERSION, 2), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_N_QUERIES, 0), ELLE_EINVAL);
    assert_elle_status(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EOT_ITER, 1.5), ELLE_EINVAL);
    /* the driver itself */
    elle__aa_model am;
    elle__aa_params p;
    elle__aa_params_standard(&p, (float)EPS, 0);
    const elle__aa_attack ce[] = {ELLE__AA_APGD_CE};
    assert_elle_ok(elle__aa_model_init(&am, w->model));
    assert_elle_status(elle__autoattack_run(&am, &p, ce, 1, w->x, w->y, 4, RESERVE + 1, NULL,
                                            NULL, NULL, NULL),
                       ELLE_ESHAPE);
    assert_elle_status(elle__autoattack_run(&am, &p, ce, 1, w->x, w->y, -1, 4, NULL, NULL, NULL,
                                            NULL),
                       ELLE_EINVAL);
    p.eps = NAN;
    assert_elle_status(elle__autoattack_run(&am, &p, ce, 1, w->x, w->y, 4, 4, NULL, NULL, NULL,
                                            NULL),
                       ELLE_EINVAL);
    elle__aa_model_release(&am);

    /* pixels outside [0, 1]; labels outside the classes */
    float x[2 * PIX], xa[2 * PIX];
    memcpy(x, w->x, sizeof x);
    int32_t y[2] = {w->y[0], w->y[1]};
    x[PIX + 5] = 1.5f;
    assert_elle_status(elle_attack_perturb(a, x, y, 2, xa), ELLE_EINVAL);
    x[PIX + 5] = 0.5f;
    y[1] = K;
    assert_elle_status(elle_attack_perturb(a, x, y, 2, xa), ELLE_EINVAL);
    y[1] = 0;
    assert_elle_status(elle_attack_perturb(a, x, y, RESERVE + 1, xa), ELLE_ESHAPE);
    assert_elle_status(elle_attack_perturb(a, x, y, 0, xa), ELLE_EINVAL);

    /* stages: before any evaluate, out of range, NULL */
    assert_int_equal(elle_attack_num_stages(a), 0);
    assert_elle_status(elle_attack_stage_result(a, 0, NULL, NULL, NULL), ELLE_EINVAL);
    assert_elle_status(elle_attack_num_stages(NULL), ELLE_EINVAL);
    assert_elle_status(elle_attack_stage_result(NULL, 0, NULL, NULL, NULL), ELLE_EINVAL);
    assert_elle_status(elle_attack_stage_result(a, -1, NULL, NULL, NULL), ELLE_EINVAL);

    /* the training path (device arrays) refuses the host-side kinds */
    assert_elle_status(elle__attack_run(a, NULL, 1, NULL, NULL), ELLE_EUNSUPPORTED);
    elle_attack_free(a);

    /* before elle_model_reserve; too few classes for the DLR losses */
    elle_model *m3 = make_model(w->ctx, 3);
    elle_attack *b = make_attack(m3, ELLE_ATTACK_AUTOATTACK);
    elle_dataset *d3 = NULL;
    float one[PIX];
    int32_t lab = 0;
    memcpy(one, w->x, sizeof one);
    assert_elle_ok(elle_dataset_from_host(&d3, one, &lab, 1, 1, H, W, 3));
    assert_elle_status(elle_attack_evaluate(b, d3, 0, 1, &c, &r, &t), ELLE_ESTATE);
    assert_elle_status(elle_attack_perturb(b, one, &lab, 1, xa), ELLE_ESTATE);
    assert_elle_ok(elle_model_reserve(m3, 4));
    assert_elle_ok(elle_model_set_training(m3, 0));
    assert_elle_status(elle_attack_evaluate(b, d3, 0, 1, &c, &r, &t), ELLE_EUNSUPPORTED);
    /* the rand version needs only 3 */
    assert_elle_ok(elle_attack_set_param(b, ELLE_ATTACK_PARAM_VERSION, 1));
    assert_elle_ok(elle_attack_set_param(b, ELLE_ATTACK_PARAM_STEPS, 2));
    assert_elle_ok(elle_attack_set_param(b, ELLE_ATTACK_PARAM_EOT_ITER, 1));
    assert_elle_ok(elle_attack_evaluate(b, d3, 0, 1, &c, &r, &t));
    assert_int_equal(t, 1);
    elle_attack_free(b);
    elle_attack *b2 = make_attack(m3, ELLE_ATTACK_APGD_T);
    assert_elle_status(elle_attack_perturb(b2, one, &lab, 1, xa), ELLE_EUNSUPPORTED);
    elle_attack_free(b2);
    elle_dataset_free(d3);
    elle_model_free(m3);
}

/* Names, kinds and the appended parameters. */
static void test_names_and_params(void **state)
{
    (void)state;
    static const char *const names[] = {"apgd-ce", "apgd-dlr", "apgd-t",
                                        "fab-t",   "square",   "autoattack"};
    for (int i = 0; i < 6; i++) {
        elle_attack_kind k;
        assert_string_equal(elle_attack_kind_name((elle_attack_kind)(4 + i)), names[i]);
        assert_elle_ok(elle_attack_kind_from_name(names[i], &k));
        assert_int_equal(k, 4 + i);
    }
    elle_attack_kind k;
    assert_elle_ok(elle_attack_kind_from_name("apgd_ce", &k));
    assert_int_equal(k, ELLE_ATTACK_APGD_CE);
    assert_elle_ok(elle_attack_kind_from_name("rs_fgsm", &k));
    assert_int_equal(k, ELLE_ATTACK_RS_FGSM);
    assert_elle_status(elle_attack_kind_from_name("apgd", &k), ELLE_EINVAL);
    assert_elle_status(elle_attack_kind_from_name("apgd-ce-", &k), ELLE_EINVAL);
    assert_null(elle_attack_kind_name((elle_attack_kind)11));
    static const struct {
        const char *name;
        elle_attack_param p;
        double lo, hi;
    } params[] = {{"n_target_classes", ELLE_ATTACK_PARAM_N_TARGET_CLASSES, 1, 100000},
                  {"n_queries", ELLE_ATTACK_PARAM_N_QUERIES, 1, 10000000},
                  {"eot_iter", ELLE_ATTACK_PARAM_EOT_ITER, 0, 1000},
                  {"version", ELLE_ATTACK_PARAM_VERSION, 0, 1}};
    for (int i = 0; i < 4; i++) {
        elle_attack_param p;
        double lo, hi;
        assert_elle_ok(elle_attack_param_from_name(params[i].name, &p));
        assert_int_equal(p, params[i].p);
        assert_string_equal(elle_attack_param_name(p), params[i].name);
        assert_elle_ok(elle_attack_param_bounds(p, &lo, &hi));
        assert_true(lo == params[i].lo && hi == params[i].hi);
    }
    /* the kinds' defaults */
    elle_attack *a = NULL;
    assert_elle_ok(elle_attack_create(&a, g_world->model, ELLE_ATTACK_AUTOATTACK));
    double v;
    assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_N_TARGET_CLASSES, &v));
    assert_true(v == 9);
    assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_N_QUERIES, &v));
    assert_true(v == 5000);
    assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_EOT_ITER, &v));
    assert_true(v == 0);
    assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_VERSION, &v));
    assert_true(v == 0);
    assert_elle_ok(elle_attack_get_param(a, ELLE_ATTACK_PARAM_RESTARTS, &v));
    assert_true(v == 1);
    elle__aa_params p;
    elle__aa_attack list[ELLE__AA_MAX_STAGES];
    int n = 0;
    elle__attack_aa_config(a, &p, list, &n);
    assert_int_equal(n, 4);
    assert_int_equal(p.n_iter, 100);
    assert_int_equal(p.eot_iter, 1);
    assert_true(p.eps == (float)(8.0 / 255.0));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_VERSION, 1));
    elle__attack_aa_config(a, &p, list, &n);
    assert_int_equal(n, 2);
    assert_int_equal(p.eot_iter, 20);
    elle_attack_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_params),
        cmocka_unit_test(test_standard_vs_apgd_and_pgd),
        cmocka_unit_test(test_driver_points),
        cmocka_unit_test(test_chunking),
        cmocka_unit_test(test_rand_version),
        cmocka_unit_test(test_perturb_kinds),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests_name("autoattack", tests, group_setup, group_teardown);
}
