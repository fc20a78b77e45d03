/*
 * Adversarial training in the trainer (small separable problem: two
 * classes, bright left half vs bright right half, 12x12 grey images,
 * small_cnn, reference backend):
 *
 * - FGSM + ELLE lowers the training loss and learns; the regularizer's value
 *   and lambda appear in the step and epoch records and equal what the
 *   regularizer itself reports; ELLE-A's lambda, resets and the E_lin alarm
 *   count agree with the regularizer's statistics;
 * - the model is reserved for the largest stage (3B for ELLE, 5B with five
 *   points);
 * - an attack or regularizer created on another model is refused;
 * - the CO rules on scripted sequences (pure functions), and the E_lin alarm
 *   rule against the ELLE-A detector on the same values;
 * - the same seeds give bit-identical weights after adversarial steps, and
 *   another regularizer seed gives other weights;
 * - the PGD monitor: robust <= clean accuracy, PGD-20 with alpha = eps/8 by
 *   default, a caller's monitor attack is used, the best model is chosen by
 *   validation PGD accuracy;
 * - train_acc is the accuracy against the training attack, from the training
 *   forward (checked exactly against a hand-written loop), and the extra
 *   clean forward moves the BatchNorm running statistics;
 * - elle_model_logits reads the last forward's logits;
 * - the JSON lines carry the new keys.
 */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "elle_test.h"
#include "train/train_internal.h"

enum { H = 12, W = 12, PIX = H * W, N_TRAIN = 192, N_TEST = 48, N_VAL = 32, BATCH = 16 };

#define EPS (8.0 / 255.0)

static float pseudo(uint32_t i)
{
    uint32_t h = i * 2654435761u + 0x9e3779b9u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return (float)(h & 0xffffff) / 8388608.0f - 1.0f; /* [-1, 1) */
}

/* Class 0: left half brighter; class 1: right half brighter; plus noise. */
static elle_dataset *make_data(int64_t n, uint32_t salt)
{
    float *x = malloc((size_t)n * PIX * sizeof(float));
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    assert_non_null(x);
    assert_non_null(y);
    for (int64_t i = 0; i < n; i++) {
        y[i] = (int32_t)(i % 2);
        for (int r = 0; r < H; r++)
            for (int c = 0; c < W; c++) {
                float side = (c < W / 2) == (y[i] == 0) ? 1.0f : -1.0f;
                x[i * PIX + r * W + c] =
                    0.5f + 0.08f * side + 0.4f * pseudo((uint32_t)(i * PIX + r * W + c) + salt);
            }
    }
    elle_dataset *d = NULL;
    assert_elle_ok(elle_dataset_from_host(&d, x, y, n, 1, H, W, 2));
    free(x);
    free(y);
    return d;
}

typedef struct world {
    elle_context *ctx;
    elle_dataset *train, *test, *val;
    char dir[64];
} world;

static elle_model *make_model(elle_context *ctx, double seed)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, "small_cnn"));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_HEIGHT, H));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_IN_WIDTH, W));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_WIDTH, 4));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_DEPTH, 1));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_HIDDEN, 16));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_NUM_CLASSES, 2));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, seed));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    return m;
}

static int setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    assert_elle_ok(elle_context_create(&w->ctx, ELLE_BACKEND_REFERENCE, 0));
    w->train = make_data(N_TRAIN, 0);
    w->test = make_data(N_TEST, 100000);
    w->val = make_data(N_VAL, 200000);
    strcpy(w->dir, "/tmp/elle_advtrain_XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world *w = *state;
    static const char *const files[] = {"log.jsonl", "best.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", w->dir, files[i]);
        unlink(p);
    }
    rmdir(w->dir);
    elle_dataset_free(w->train);
    elle_dataset_free(w->test);
    elle_dataset_free(w->val);
    elle_context_free(w->ctx);
    free(w);
    return 0;
}

static elle_trainer *make_trainer(elle_model *m, double epochs)
{
    elle_trainer *t = NULL;
    assert_elle_ok(elle_trainer_create(&t, m));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EPOCHS, epochs));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_BATCH_SIZE, BATCH));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EVAL_BATCH_SIZE, 20));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, 0.1));
    return t;
}

static elle_attack *make_attack(elle_model *m, elle_attack_kind kind, double eps)
{
    elle_attack *a = NULL;
    assert_elle_ok(elle_attack_create(&a, m, kind));
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, eps));
    return a;
}

static elle_regularizer *make_elle(elle_model *m, int adaptive, double lambda, double seed)
{
    elle_regularizer *r = NULL;
    assert_elle_ok(elle_regularizer_create(&r, m, ELLE_REGULARIZER_ELLE));
    assert_elle_ok(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_EPS, EPS));
    assert_elle_ok(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_SEED, seed));
    assert_elle_ok(elle_regularizer_set_param(r, ELLE_REGULARIZER_PARAM_ADAPTIVE, adaptive));
    assert_elle_ok(elle_regularizer_set_param(
        r, adaptive ? ELLE_REGULARIZER_PARAM_LAMBDA_MAX : ELLE_REGULARIZER_PARAM_LAMBDA, lambda));
    return r;
}

static double get(const elle_train_metrics *m, elle_train_metric k)
{
    double v = NAN;
    assert_elle_ok(elle_train_metrics_get(m, k, &v));
    return v;
}

static size_t weights_count(elle_model *m)
{
    size_t total = 0;
    int64_t count = elle_model_state_count(m);
    for (int64_t i = 0; i < count; i++) {
        elle_state_kind kind;
        int64_t d[4];
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
        if (kind != ELLE_STATE_COUNTER)
            total += (size_t)(d[0] * d[1] * d[2] * d[3]);
    }
    return total;
}

/* Every float state entry (parameters and running statistics) in order. */
static void get_weights(elle_model *m, float *out)
{
    int64_t count = elle_model_state_count(m);
    for (int64_t i = 0; i < count; i++) {
        elle_state_kind kind;
        int64_t d[4];
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
        if (kind == ELLE_STATE_COUNTER)
            continue;
        assert_elle_ok(elle_model_state_get(m, i, out));
        out += d[0] * d[1] * d[2] * d[3];
    }
}

/* ---- what the callbacks see ------------------------------------------------------------------ */

typedef struct seen {
    elle_regularizer *reg; /* read back in the step callback */
    int steps, epochs;
    /* per step */
    double step_value[256], step_lambda[256];
    int step_alarm[256];
    /* per epoch */
    double loss[16], train_acc[16], test_acc[16], pgd_test[16], val_acc[16], pgd_val[16];
    double reg_value[16], lam_min[16], lam_mean[16], lam_max[16], resets[16], alarms[16];
    double best_val[16], best_epoch[16];
} seen;

static int on_step(const elle_train_metrics *m, void *user_data)
{
    seen *s = user_data;
    assert_true(s->steps < 256);
    double v;
    s->step_value[s->steps] = get(m, ELLE_TRAIN_METRIC_REG_VALUE);
    s->step_lambda[s->steps] = get(m, ELLE_TRAIN_METRIC_LAMBDA);
    s->step_alarm[s->steps] = (int)get(m, ELLE_TRAIN_METRIC_ELIN_ALARMS);
    assert_true(elle_train_metrics_has(m, ELLE_TRAIN_METRIC_REG_MEAN));
    assert_true(elle_train_metrics_has(m, ELLE_TRAIN_METRIC_REG_STD));
    assert_true(elle_train_metrics_has(m, ELLE_TRAIN_METRIC_WALL_TIME));
    /* the record says what the regularizer says */
    assert_elle_ok(elle_regularizer_get_stat(s->reg, ELLE_REGULARIZER_STAT_VALUE, &v));
    assert_true(v == s->step_value[s->steps]);
    assert_elle_ok(elle_regularizer_get_stat(s->reg, ELLE_REGULARIZER_STAT_APPLIED_LAMBDA, &v));
    assert_true(v == s->step_lambda[s->steps]);
    assert_true(s->step_value[s->steps] >= 0.0);
    s->steps++;
    return 0;
}

static int on_epoch(const elle_train_metrics *m, void *user_data)
{
    seen *s = user_data;
    int e = s->epochs++;
    assert_true(e < 16);
    s->loss[e] = get(m, ELLE_TRAIN_METRIC_LOSS);
    s->train_acc[e] = get(m, ELLE_TRAIN_METRIC_TRAIN_ACC);
    s->test_acc[e] = get(m, ELLE_TRAIN_METRIC_TEST_ACC);
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_PGD_TEST_ACC))
        s->pgd_test[e] = get(m, ELLE_TRAIN_METRIC_PGD_TEST_ACC);
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_VAL_ACC)) {
        s->val_acc[e] = get(m, ELLE_TRAIN_METRIC_VAL_ACC);
        s->best_val[e] = get(m, ELLE_TRAIN_METRIC_BEST_VAL_ACC);
        s->best_epoch[e] = get(m, ELLE_TRAIN_METRIC_BEST_VAL_EPOCH);
    }
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_PGD_VAL_ACC))
        s->pgd_val[e] = get(m, ELLE_TRAIN_METRIC_PGD_VAL_ACC);
    if (elle_train_metrics_has(m, ELLE_TRAIN_METRIC_REG_VALUE)) {
        s->reg_value[e] = get(m, ELLE_TRAIN_METRIC_REG_VALUE);
        s->lam_min[e] = get(m, ELLE_TRAIN_METRIC_LAMBDA_MIN);
        s->lam_mean[e] = get(m, ELLE_TRAIN_METRIC_LAMBDA_MEAN);
        s->lam_max[e] = get(m, ELLE_TRAIN_METRIC_LAMBDA_MAX);
        s->resets[e] = get(m, ELLE_TRAIN_METRIC_LAMBDA_RESETS);
        s->alarms[e] = get(m, ELLE_TRAIN_METRIC_ELIN_ALARMS);
    }
    return 0;
}

/* ---- FGSM + ELLE learns; value and lambda in the metrics ---------------------------------- */

static void test_fgsm_elle_learns(void **state)
{
    world *w = *state;
    elle_model *m = make_model(w->ctx, 5);
    elle_attack *fgsm = make_attack(m, ELLE_ATTACK_FGSM, EPS);
    elle_regularizer *reg = make_elle(m, 0, 50.0, 3);
    elle_trainer *t = make_trainer(m, 10);
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, 0.2));
    seen s;
    memset(&s, 0, sizeof s);
    s.reg = reg;
    assert_elle_ok(elle_trainer_set_attack(t, fgsm));
    assert_true(elle_trainer_get_attack(t) == fgsm);
    assert_elle_ok(elle_trainer_add_regularizer(t, reg));
    assert_int_equal(elle_trainer_num_regularizers(t), 1);
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_PGD_VAL, 0));
    assert_elle_ok(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_STEP, on_step, &s));
    assert_elle_ok(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_EPOCH, on_epoch, &s));
    assert_elle_ok(elle_trainer_fit(t, w->train, w->test, NULL));
    const int spe = N_TRAIN / BATCH;
    assert_int_equal(s.epochs, 10);
    assert_int_equal(s.steps, 10 * spe);
    for (int e = 0; e < s.epochs; e++)
        print_message("epoch %d: loss %.4f train(adv) %.3f test %.3f pgd %.3f E_lin %.3g\n", e,
                      s.loss[e], s.train_acc[e], s.test_acc[e], s.pgd_test[e], s.reg_value[e]);
    /* it learns against the attack */
    assert_true(s.loss[9] < 0.5 * s.loss[0]);
    assert_true(s.test_acc[9] >= 0.9);
    assert_true(s.pgd_test[9] <= s.test_acc[9]);
    for (int e = 0; e < s.epochs; e++) {
        /* constant lambda: every step used it */
        assert_true(s.lam_min[e] == 50.0 && s.lam_mean[e] == 50.0 && s.lam_max[e] == 50.0);
        /* the epoch's value is the mean of its steps' */
        double sum = 0;
        for (int k = 0; k < spe; k++) {
            assert_true(s.step_lambda[e * spe + k] == 50.0);
            sum += s.step_value[e * spe + k];
        }
        assert_true(fabs(s.reg_value[e] - sum / spe) <= 1e-12 * (1 + fabs(sum)));
    }
    assert_true(s.reg_value[0] > 0.0);
    elle_trainer_free(t);
    elle_regularizer_free(reg);
    elle_attack_free(fgsm);
    elle_model_free(m);
}

/* ELLE-A: lambda starts at 0 and follows the detector (one-step lag); the
 * epoch's resets are the regularizer's detections, and with co_k = the
 * sensitivity the E_lin alarms are the same steps. */
static void test_elle_a_metrics(void **state)
{
    world *w = *state;
    elle_model *m = make_model(w->ctx, 6);
    elle_attack *fgsm = make_attack(m, ELLE_ATTACK_FGSM, EPS);
    elle_regularizer *reg = make_elle(m, 1, 400.0, 4);
    /* a sensitive detector, so that resets happen in a short run */
    assert_elle_ok(elle_regularizer_set_param(reg, ELLE_REGULARIZER_PARAM_SENSITIVITY, 0.5));
    elle_trainer *t = make_trainer(m, 3);
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_CO_K, 0.5));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_PGD_TEST_N, 0));
    seen s;
    memset(&s, 0, sizeof s);
    s.reg = reg;
    assert_elle_ok(elle_trainer_set_attack(t, fgsm));
    assert_elle_ok(elle_trainer_add_regularizer(t, reg));
    assert_elle_ok(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_STEP, on_step, &s));
    assert_elle_ok(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_EPOCH, on_epoch, &s));
    assert_elle_ok(elle_trainer_fit(t, w->train, w->test, NULL));
    const int spe = N_TRAIN / BATCH;
    assert_true(s.step_lambda[0] == 0.0); /* lambda_start */
    double detections;
    assert_elle_ok(elle_regularizer_get_stat(reg, ELLE_REGULARIZER_STAT_DETECTIONS, &detections));
    double resets = 0;
    int alarms = 0;
    for (int e = 0; e < s.epochs; e++) {
        resets += s.resets[e];
        assert_true(s.alarms[e] == s.resets[e]);
        int epoch_alarms = 0;
        for (int k = 0; k < spe; k++)
            epoch_alarms += s.step_alarm[e * spe + k];
        assert_true(s.alarms[e] == epoch_alarms);
        alarms += epoch_alarms;
    }
    print_message("ELLE-A: %d alarms, %.0f detections over %d steps\n", alarms, detections,
                  s.steps);
    assert_true(resets == detections);
    assert_true(detections >= 1);
    /* lambda: an alarm at step k puts lambda_max on step k+1 (lag 1), else it decays */
    for (int k = 0; k + 1 < s.steps; k++) {
        double want = s.step_alarm[k] ? 400.0 : 0.99 * s.step_lambda[k];
        assert_true(fabs(s.step_lambda[k + 1] - want) <= 1e-9 * 400.0);
    }
    for (int e = 0; e < s.epochs; e++)
        assert_true(s.lam_min[e] <= s.lam_mean[e] && s.lam_mean[e] <= s.lam_max[e]);
    elle_trainer_free(t);
    elle_regularizer_free(reg);
    elle_attack_free(fgsm);
    elle_model_free(m);
}

/* ---- the reserve ----------------------------------------------------------------------------- */

static void test_reserves_for_regularizer(void **state)
{
    world *w = *state;
    elle_dataset *small = make_data(2 * BATCH, 7);
    float *x = calloc(5 * BATCH * PIX, sizeof(float));
    float *z = malloc(5 * BATCH * 2 * sizeof(float));
    assert_non_null(x);
    assert_non_null(z);
    for (int points = 3; points <= 5; points += 2) {
        elle_model *m = make_model(w->ctx, 8);
        elle_regularizer *reg = make_elle(m, 0, 10.0, 0);
        assert_elle_ok(elle_regularizer_set_param(reg, ELLE_REGULARIZER_PARAM_POINTS, points));
        elle_trainer *t = make_trainer(m, 1);
        /* regularizer only, no attack: x_adv = x, the monitor takes the regularizer's eps */
        assert_elle_ok(elle_trainer_add_regularizer(t, reg));
        assert_elle_ok(elle_trainer_fit(t, small, small, NULL));
        const elle_train_metrics *last = elle_trainer_last_epoch(t);
        assert_true(elle_train_metrics_has(last, ELLE_TRAIN_METRIC_PGD_TEST_ACC));
        /* reserved for points x 16 > eval batch 20 > batch 16 */
        assert_elle_ok(elle_model_forward(m, x, points * BATCH, z));
        assert_elle_status(elle_model_forward(m, x, points * BATCH + 1, z), ELLE_ESHAPE);
        elle_trainer_free(t);
        elle_regularizer_free(reg);
        elle_model_free(m);
    }
    free(x);
    free(z);
    elle_dataset_free(small);
}

/* ---- composition errors ---------------------------------------------------------------------- */

static void test_foreign_model_refused(void **state)
{
    world *w = *state;
    elle_model *m = make_model(w->ctx, 1), *other = make_model(w->ctx, 1);
    elle_attack *mine = make_attack(m, ELLE_ATTACK_FGSM, EPS);
    elle_attack *theirs = make_attack(other, ELLE_ATTACK_FGSM, EPS);
    elle_regularizer *reg_mine = make_elle(m, 0, 1.0, 0);
    elle_regularizer *reg_theirs = make_elle(other, 0, 1.0, 0);
    assert_true(elle_attack_get_model(theirs) == other);
    assert_true(elle_regularizer_get_model(reg_theirs) == other);
    assert_null(elle_attack_get_model(NULL));
    assert_null(elle_regularizer_get_model(NULL));
    elle_trainer *t = make_trainer(m, 1);
    assert_elle_status(elle_trainer_set_attack(t, theirs), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "another model"));
    assert_null(elle_trainer_get_attack(t)); /* unchanged */
    assert_elle_status(elle_trainer_set_monitor_attack(t, theirs), ELLE_EINVAL);
    assert_elle_status(elle_trainer_add_regularizer(t, reg_theirs), ELLE_EINVAL);
    assert_non_null(strstr(elle_error_last()->message, "another model"));
    assert_int_equal(elle_trainer_num_regularizers(t), 0);
    assert_elle_status(elle_trainer_add_regularizer(t, NULL), ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_attack(NULL, mine), ELLE_EINVAL);
    /* evaluation-only kinds (host-array algorithms) are refused for training */
    elle_attack *aa = make_attack(m, ELLE_ATTACK_APGD_CE, EPS);
    assert_elle_status(elle_trainer_set_attack(t, aa), ELLE_EUNSUPPORTED);
    assert_null(elle_trainer_get_attack(t));
    elle_attack_free(aa);
    assert_elle_status(elle_trainer_add_regularizer(NULL, reg_mine), ELLE_EINVAL);
    assert_int_equal(elle_trainer_num_regularizers(NULL), -1);
    assert_null(elle_trainer_get_attack(NULL));
    /* the same regularizer twice */
    assert_elle_ok(elle_trainer_add_regularizer(t, reg_mine));
    assert_elle_status(elle_trainer_add_regularizer(t, reg_mine), ELLE_EINVAL);
    assert_int_equal(elle_trainer_num_regularizers(t), 1);
    assert_elle_ok(elle_trainer_clear_regularizers(t));
    assert_int_equal(elle_trainer_num_regularizers(t), 0);
    assert_elle_status(elle_trainer_clear_regularizers(NULL), ELLE_EINVAL);
    /* many regularizers: the list grows */
    elle_regularizer *many[9];
    for (int i = 0; i < 9; i++) {
        many[i] = make_elle(m, 0, 1.0, i);
        assert_elle_ok(elle_trainer_add_regularizer(t, many[i]));
    }
    assert_int_equal(elle_trainer_num_regularizers(t), 9);
    /* own model: accepted; NULL detaches */
    assert_elle_ok(elle_trainer_set_attack(t, mine));
    assert_true(elle_trainer_get_attack(t) == mine);
    assert_elle_ok(elle_trainer_set_attack(t, NULL));
    assert_null(elle_trainer_get_attack(t));
    assert_elle_ok(elle_trainer_set_monitor_attack(t, mine));
    assert_elle_ok(elle_trainer_set_monitor_attack(t, NULL));
    elle_trainer_free(t);
    for (int i = 0; i < 9; i++)
        elle_regularizer_free(many[i]);
    elle_regularizer_free(reg_mine);
    elle_regularizer_free(reg_theirs);
    elle_attack_free(mine);
    elle_attack_free(theirs);
    elle_model_free(m);
    elle_model_free(other);
}

/* ---- CO rules -------------------------------------------------------------------------------- */

static void test_co_flag_rule(void **state)
{
    (void)state;
    elle__co_state s;
    /* PGD accuracy rises to 0.40 at epoch 2, then collapses while the
     * training accuracy (against FGSM) climbs: catastrophic overfitting */
    static const double pgd[] = {0.20, 0.30, 0.40, 0.35, 0.19, 0.05, 0.45};
    static const double tra[] = {0.30, 0.40, 0.50, 0.52, 0.70, 0.90, 0.60};
    static const int want[] = {0, 0, 0, 0, 1, 1, 0};
    elle__co_init(&s);
    for (int e = 0; e < 7; e++)
        assert_int_equal(elle__co_epoch(&s, e, pgd[e], tra[e], 0.5), want[e]);
    assert_int_equal(s.best_epoch, 6); /* 0.45 is the new best */
    assert_true(s.best_pgd == 0.45 && s.train_at_best == 0.60);

    /* the same collapse with FALLING training accuracy (a diverging run): no flag */
    static const double tra_down[] = {0.30, 0.40, 0.50, 0.45, 0.30, 0.20, 0.10};
    elle__co_init(&s);
    for (int e = 0; e < 6; e++)
        assert_int_equal(elle__co_epoch(&s, e, pgd[e], tra_down[e], 0.5), 0);

    /* the threshold: exactly (1 - drop) * best is not below it */
    elle__co_init(&s);
    assert_int_equal(elle__co_epoch(&s, 0, 0.40, 0.5, 0.5), 0);
    assert_int_equal(elle__co_epoch(&s, 1, 0.20, 0.9, 0.5), 0);
    assert_int_equal(elle__co_epoch(&s, 2, 0.1999, 0.9, 0.5), 1);
    /* equal training accuracy is not a rise */
    assert_int_equal(elle__co_epoch(&s, 3, 0.10, 0.5, 0.5), 0);
    /* drop = 0.2: any fall below 0.32 flags; drop = 1: never */
    assert_int_equal(elle__co_epoch(&s, 4, 0.31, 0.6, 0.2), 1);
    assert_int_equal(elle__co_epoch(&s, 5, 0.0, 0.9, 1.0), 0);
    /* the first epoch never flags, whatever its numbers */
    elle__co_init(&s);
    assert_int_equal(elle__co_epoch(&s, 0, 0.0, 1.0, 0.5), 0);
    assert_true(s.best_pgd == 0.0 && s.best_epoch == 0);
    /* a best of 0 cannot fall */
    assert_int_equal(elle__co_epoch(&s, 1, 0.0, 1.0, 0.5), 0);
}

static void test_elin_alarm_rule(void **state)
{
    (void)state;
    /* scripted E_lin values: quiet, two spikes, quiet, a spike */
    static const double v[] = {1.0, 1.2, 0.9, 5.0, 1.1, 1.0, 1.05, 0.95, 9.0, 1.0, 1.0, 30.0};
    const int n = (int)(sizeof v / sizeof v[0]);
    /* by hand: running mean and population std of the values before each */
    int alarms = 0, want_alarms[12] = {0};
    for (int i = 0; i < n; i++) {
        double mean = 0, var = 0;
        for (int j = 0; j < i; j++)
            mean += v[j];
        mean = i ? mean / i : 0;
        for (int j = 0; j < i; j++)
            var += (v[j] - mean) * (v[j] - mean);
        double sd = i ? sqrt(var / i) : 0;
        want_alarms[i] = i > 2 && v[i] > mean + 2.0 * sd;
        assert_int_equal(elle__co_elin_alarm(i, mean, sd, v[i], 2.0), want_alarms[i]);
        alarms += want_alarms[i];
    }
    assert_int_equal(want_alarms[3], 1); /* 5.0 after 1.0, 1.2, 0.9 */
    assert_int_equal(want_alarms[8], 1);
    assert_int_equal(want_alarms[11], 1);
    assert_int_equal(alarms, 3);
    /* a spike as the third value is not tested (the history needs > 2) */
    assert_int_equal(elle__co_elin_alarm(2, 1.0, 0.0, 100.0, 2.0), 0);
    assert_int_equal(elle__co_elin_alarm(3, 1.0, 0.0, 1.0, 2.0), 0);     /* equal: no */
    assert_int_equal(elle__co_elin_alarm(3, 1.0, 0.0, 1.0001, 2.0), 1);
    assert_int_equal(elle__co_elin_alarm(3, 1.0, 0.5, 1.9, 2.0), 0);
    assert_int_equal(elle__co_elin_alarm(3, 1.0, 0.5, 2.1, 2.0), 1);

    /* the trainer's way (statistics read before each value) against the
     * ELLE-A detector on the same values: the same steps */
    elle_context *ctx = NULL;
    assert_elle_ok(elle_context_create(&ctx, ELLE_BACKEND_REFERENCE, 0));
    elle_model *m = make_model(ctx, 1);
    elle_regularizer *reg = make_elle(m, 1, 100.0, 0);
    int trainer_alarms = 0;
    for (int i = 0; i < n; i++) {
        double count, mean, sd, det_before, det_after;
        assert_elle_ok(elle_regularizer_get_stat(reg, ELLE_REGULARIZER_STAT_COUNT, &count));
        assert_elle_ok(elle_regularizer_get_stat(reg, ELLE_REGULARIZER_STAT_MEAN, &mean));
        assert_elle_ok(elle_regularizer_get_stat(reg, ELLE_REGULARIZER_STAT_STD, &sd));
        assert_elle_ok(elle_regularizer_get_stat(reg, ELLE_REGULARIZER_STAT_DETECTIONS,
                                                 &det_before));
        int a = elle__co_elin_alarm((int64_t)count, mean, sd, v[i], 2.0);
        assert_elle_ok(elle_regularizer_observe(reg, v[i]));
        assert_elle_ok(elle_regularizer_get_stat(reg, ELLE_REGULARIZER_STAT_DETECTIONS,
                                                 &det_after));
        assert_int_equal(a, want_alarms[i]);
        assert_int_equal(a, (int)(det_after - det_before));
        trainer_alarms += a;
    }
    assert_int_equal(trainer_alarms, 3);
    elle_regularizer_free(reg);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- determinism ----------------------------------------------------------------------------- */

static void adv_run(world *w, double reg_seed, float *weights)
{
    elle_model *m = make_model(w->ctx, 9);
    elle_attack *a = make_attack(m, ELLE_ATTACK_N_FGSM, EPS); /* random: exercises the stream */
    assert_elle_ok(elle_attack_set_param(a, ELLE_ATTACK_PARAM_SEED, 11));
    elle_regularizer *reg = make_elle(m, 1, 400.0, reg_seed);
    assert_elle_ok(elle_regularizer_set_param(reg, ELLE_REGULARIZER_PARAM_LAMBDA_START, 400.0));
    elle_trainer *t = make_trainer(m, 1);
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_SEED, 1234));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EXTRA_CLEAN_FORWARD, 1));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_STEPS_PER_BATCH, 2));
    assert_elle_ok(elle_trainer_set_attack(t, a));
    assert_elle_ok(elle_trainer_add_regularizer(t, reg));
    assert_elle_ok(elle_trainer_fit(t, w->train, NULL, NULL));
    get_weights(m, weights);
    elle_trainer_free(t);
    elle_regularizer_free(reg);
    elle_attack_free(a);
    elle_model_free(m);
}

static void test_adv_deterministic(void **state)
{
    world *w = *state;
    elle_model *probe = make_model(w->ctx, 9);
    size_t n = weights_count(probe);
    elle_model_free(probe);
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    float *c = malloc(n * sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    adv_run(w, 5, a);
    adv_run(w, 5, b);
    adv_run(w, 6, c);
    assert_memory_equal(a, b, n * sizeof(float));
    /* another regularizer seed, other points: other weights (the regularizer
     * really takes part in the step) */
    assert_memory_not_equal(a, c, n * sizeof(float));
    free(a);
    free(b);
    free(c);
}

/* ---- the PGD monitor ------------------------------------------------------------------------- */

static void test_pgd_monitor(void **state)
{
    world *w = *state;
    char log_path[128], best_path[128];
    snprintf(log_path, sizeof log_path, "%s/log.jsonl", w->dir);
    snprintf(best_path, sizeof best_path, "%s/best.safetensors", w->dir);
    elle_model *m = make_model(w->ctx, 12);
    elle_attack *fgsm = make_attack(m, ELLE_ATTACK_FGSM, 0.04);
    elle_trainer *t = make_trainer(m, 3);
    seen s;
    memset(&s, 0, sizeof s);
    assert_elle_ok(elle_trainer_set_attack(t, fgsm));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_PGD_TEST_N, 1e6)); /* all */
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_LOG, log_path));
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_BEST_MODEL, best_path));
    assert_elle_ok(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_EPOCH, on_epoch, &s));
    assert_elle_ok(elle_trainer_fit(t, w->train, w->test, w->val));
    double best = -1;
    int best_e = -1;
    for (int e = 0; e < s.epochs; e++) {
        print_message("epoch %d: test %.3f pgd %.3f, val %.3f pgd %.3f, best %.3f @%.0f\n", e,
                      s.test_acc[e], s.pgd_test[e], s.val_acc[e], s.pgd_val[e], s.best_val[e],
                      s.best_epoch[e]);
        /* the same images: robust needs clean-correct */
        assert_true(s.pgd_test[e] <= s.test_acc[e]);
        assert_true(s.pgd_val[e] <= s.val_acc[e]);
        /* the best model follows the validation PGD accuracy */
        if (s.pgd_val[e] > best) {
            best = s.pgd_val[e];
            best_e = e;
        }
        assert_true(s.best_val[e] == best);
        assert_true(s.best_epoch[e] == best_e);
    }
    assert_true(s.pgd_test[2] > 0.0); /* the model learned something robust */
    /* the config line: the default monitor is PGD-20, alpha eps/8, clamped */
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    char line[16384];
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    json_error_t err;
    json_t *o = json_loads(line, 0, &err);
    assert_non_null(o);
    json_t *mon = json_object_get(o, "monitor");
    assert_non_null(mon);
    assert_string_equal(json_string_value(json_object_get(mon, "kind")), "pgd");
    assert_true(json_real_value(json_object_get(mon, "steps")) == 20);
    assert_true(json_real_value(json_object_get(mon, "restarts")) == 1);
    assert_true(json_real_value(json_object_get(mon, "eps")) == 0.04);
    assert_true(json_real_value(json_object_get(mon, "alpha")) == 0.04 / 8);
    assert_true(json_real_value(json_object_get(mon, "clamp_image")) == 1);
    assert_string_equal(json_string_value(json_object_get(o, "best_by")), "pgd_val_acc");
    json_decref(o);

    /* a caller's monitor is used as it is: a huge radius breaks everything */
    elle_attack *strong = make_attack(m, ELLE_ATTACK_PGD, 0.5);
    assert_elle_ok(elle_attack_set_param(strong, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 1));
    assert_elle_ok(elle_trainer_set_monitor_attack(t, strong));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EPOCHS, 1));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, 0));
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_BEST_MODEL, NULL));
    memset(&s, 0, sizeof s);
    assert_elle_ok(elle_trainer_fit(t, w->train, w->test, w->val));
    print_message("eps 0.5 monitor: pgd test %.3f, val %.3f\n", s.pgd_test[0], s.pgd_val[0]);
    assert_true(s.pgd_test[0] <= 0.1 && s.pgd_val[0] <= 0.1);
    assert_true(s.test_acc[0] >= 0.8);

    /* monitor off: no PGD metrics, the best model by clean accuracy */
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_PGD_TEST_N, 0));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_PGD_VAL, 0));
    memset(&s, 0, sizeof s);
    assert_elle_ok(elle_trainer_fit(t, w->train, w->test, w->val));
    const elle_train_metrics *last = elle_trainer_last_epoch(t);
    assert_false(elle_train_metrics_has(last, ELLE_TRAIN_METRIC_PGD_TEST_ACC));
    assert_false(elle_train_metrics_has(last, ELLE_TRAIN_METRIC_PGD_VAL_ACC));
    assert_false(elle_train_metrics_has(last, ELLE_TRAIN_METRIC_CO_FLAG));
    assert_true(s.best_val[0] == s.val_acc[0]);
    elle_trainer_free(t);
    elle_attack_free(strong);
    elle_attack_free(fgsm);
    elle_model_free(m);
}

/* ---- train_acc is against the training attack; the extra clean forward ------------------- */

static void test_train_acc_against_attack(void **state)
{
    world *w = *state;
    /* a model that already separates the classes */
    elle_model *m = make_model(w->ctx, 14);
    elle_trainer *t = make_trainer(m, 3);
    assert_elle_ok(elle_trainer_fit(t, w->train, NULL, NULL));
    elle_trainer_free(t);
    size_t nw = weights_count(m);
    float *w0 = malloc(nw * sizeof(float)), *w1 = malloc(nw * sizeof(float));
    float *w2 = malloc(nw * sizeof(float));
    assert_non_null(w0);
    assert_non_null(w1);
    assert_non_null(w2);
    get_weights(m, w0);

    /* lr 0: the weights stay, the batch statistics decide the predictions */
    elle_attack *fgsm = make_attack(m, ELLE_ATTACK_FGSM, 0.3);
    t = make_trainer(m, 1);
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, 0));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_SCHEDULE, ELLE_SCHEDULE_CONSTANT));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_SHUFFLE, 0));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EXTRA_CLEAN_FORWARD, 1));
    assert_elle_ok(elle_trainer_set_attack(t, fgsm));
    assert_elle_ok(elle_trainer_fit(t, w->train, NULL, NULL));
    const elle_train_metrics *last = elle_trainer_last_epoch(t);
    double adv_acc = get(last, ELLE_TRAIN_METRIC_TRAIN_ACC);
    double clean_acc = get(last, ELLE_TRAIN_METRIC_CLEAN_TRAIN_ACC);
    print_message("train_acc against FGSM(0.3) %.3f, clean %.3f\n", adv_acc, clean_acc);
    get_weights(m, w1); /* running statistics moved by 3 forwards per batch */

    /* by hand, with public calls: the same batches, training mode */
    elle_attack *again = make_attack(m, ELLE_ATTACK_FGSM, 0.3);
    float *x = malloc(BATCH * PIX * sizeof(float)), *xa = malloc(BATCH * PIX * sizeof(float));
    float z[BATCH * 2];
    int32_t y[BATCH];
    assert_non_null(x);
    assert_non_null(xa);
    int64_t adv_correct = 0, clean_correct = 0;
    assert_elle_ok(elle_model_set_training(m, 1));
    for (int64_t b = 0; b < N_TRAIN / BATCH; b++) {
        int64_t n;
        assert_elle_ok(elle_dataset_batch(w->train, 0, b, BATCH, x, y, &n));
        assert_elle_ok(elle_attack_perturb(again, x, y, n, xa));
        assert_elle_ok(elle_model_forward(m, xa, n, z));
        for (int64_t i = 0; i < n; i++)
            adv_correct += (z[2 * i + 1] > z[2 * i]) == (y[i] == 1);
        assert_elle_ok(elle_model_forward(m, x, n, z));
        for (int64_t i = 0; i < n; i++)
            clean_correct += (z[2 * i + 1] > z[2 * i]) == (y[i] == 1);
    }
    assert_true(adv_acc == (double)adv_correct / N_TRAIN);
    assert_true(clean_acc == (double)clean_correct / N_TRAIN);
    assert_true(clean_acc >= 0.9);
    assert_true(adv_acc < clean_acc - 0.1); /* it is measured at x_adv */

    /* without the extra forward: no clean_train_acc, other running statistics */
    elle_model *m2 = make_model(w->ctx, 15);
    size_t k = 0;
    int64_t count = elle_model_state_count(m2);
    for (int64_t i = 0; i < count; i++) { /* the same starting point as m */
        elle_state_kind kind;
        int64_t d[4];
        assert_elle_ok(elle_model_state_info(m2, i, NULL, &kind, NULL, d));
        if (kind == ELLE_STATE_COUNTER)
            continue;
        assert_elle_ok(elle_model_state_set(m2, i, w0 + k));
        k += (size_t)(d[0] * d[1] * d[2] * d[3]);
    }
    elle_attack *fgsm2 = make_attack(m2, ELLE_ATTACK_FGSM, 0.3);
    elle_trainer *t2 = make_trainer(m2, 1);
    assert_elle_ok(elle_trainer_set_param(t2, ELLE_TRAIN_PARAM_LR, 0));
    assert_elle_ok(elle_trainer_set_param(t2, ELLE_TRAIN_PARAM_SCHEDULE, ELLE_SCHEDULE_CONSTANT));
    assert_elle_ok(elle_trainer_set_param(t2, ELLE_TRAIN_PARAM_SHUFFLE, 0));
    assert_elle_ok(elle_trainer_set_attack(t2, fgsm2));
    assert_elle_ok(elle_trainer_fit(t2, w->train, NULL, NULL));
    last = elle_trainer_last_epoch(t2);
    assert_false(elle_train_metrics_has(last, ELLE_TRAIN_METRIC_CLEAN_TRAIN_ACC));
    assert_true(get(last, ELLE_TRAIN_METRIC_TRAIN_ACC) == adv_acc);
    get_weights(m2, w2);
    assert_memory_not_equal(w1, w2, nw * sizeof(float));

    elle_trainer_free(t2);
    elle_attack_free(fgsm2);
    elle_model_free(m2);
    free(x);
    free(xa);
    free(w0);
    free(w1);
    free(w2);
    elle_attack_free(again);
    elle_attack_free(fgsm);
    elle_trainer_free(t);
    elle_model_free(m);
}

/* ---- elle_model_logits ----------------------------------------------------------------------- */

static void test_model_logits(void **state)
{
    world *w = *state;
    elle_model *m = make_model(w->ctx, 2);
    float x[4 * PIX], z[4 * 2], z2[4 * 2];
    int32_t y[4];
    for (int i = 0; i < 4; i++)
        assert_elle_ok(elle_dataset_get(w->test, i, x + i * PIX, &y[i]));
    assert_elle_status(elle_model_logits(m, 1, z), ELLE_ESTATE); /* nothing reserved */
    assert_elle_ok(elle_model_reserve(m, 8));
    assert_elle_status(elle_model_logits(m, 1, z), ELLE_ESTATE); /* no forward yet */
    assert_elle_ok(elle_model_set_training(m, 0));
    assert_elle_ok(elle_model_forward(m, x, 4, z));
    assert_elle_ok(elle_model_logits(m, 4, z2));
    assert_memory_equal(z, z2, sizeof z);
    /* after a backward: its forward's logits (the backward does not touch them) */
    memset(z2, 0, sizeof z2);
    assert_elle_ok(elle_model_backward(m, x, y, 3, NULL, NULL));
    assert_elle_ok(elle_model_logits(m, 3, z2));
    assert_memory_equal(z, z2, 3 * 2 * sizeof(float));
    assert_elle_status(elle_model_logits(m, 4, z2), ELLE_EINVAL); /* the last batch was 3 */
    assert_elle_status(elle_model_logits(m, 0, z2), ELLE_EINVAL);
    assert_elle_status(elle_model_logits(NULL, 1, z2), ELLE_EINVAL);
    assert_elle_status(elle_model_logits(m, 1, NULL), ELLE_EINVAL);
    /* a re-reserve discards them */
    assert_elle_ok(elle_model_reserve(m, 8));
    assert_elle_status(elle_model_logits(m, 1, z2), ELLE_ESTATE);
    elle_model_free(m);
}

/* ---- JSON lines ------------------------------------------------------------------------------ */

static void assert_keys(json_t *o, const char *const *keys, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        if (!json_object_get(o, keys[i])) {
            print_error("%s line lacks '%s'\n", what, keys[i]);
            fail();
        }
    }
}

static void test_adv_json_lines(void **state)
{
    world *w = *state;
    char log_path[128];
    snprintf(log_path, sizeof log_path, "%s/log.jsonl", w->dir);
    elle_model *m = make_model(w->ctx, 13);
    elle_attack *fgsm = make_attack(m, ELLE_ATTACK_FGSM, EPS);
    elle_regularizer *reg = make_elle(m, 1, 4000.0, 0);
    elle_trainer *t = make_trainer(m, 1);
    assert_elle_ok(elle_trainer_set_attack(t, fgsm));
    assert_elle_ok(elle_trainer_add_regularizer(t, reg));
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_LOG, log_path));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LOG_EVERY, 1));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EXTRA_CLEAN_FORWARD, 1));
    assert_elle_ok(elle_trainer_fit(t, w->train, w->test, w->val));
    static const char *const config_keys[] = {
        "attack", "regularizers", "monitor", "best_by", "extra_clean_forward", "pgd_test_n",
        "pgd_val", "co_drop", "co_k", "train_acc"};
    static const char *const step_keys[] = {"loss",     "train_acc", "clean_train_acc",
                                            "reg_value", "lambda",   "reg_mean",
                                            "reg_std",  "elin_alarms", "wall_time"};
    static const char *const epoch_keys[] = {
        "loss",        "train_acc",   "clean_train_acc", "test_acc",      "pgd_test_acc",
        "val_acc",     "pgd_val_acc", "best_val_acc",    "reg_value",     "lambda",
        "lambda_min",  "lambda_mean", "lambda_max",      "lambda_resets", "elin_alarms",
        "co_flag",     "wall_time"};
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    char line[16384];
    int n_step = 0, n_epoch = 0;
    while (fgets(line, sizeof line, f)) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        assert_non_null(o);
        const char *ev = json_string_value(json_object_get(o, "event"));
        assert_non_null(ev);
        if (strcmp(ev, "config") == 0) {
            assert_keys(o, config_keys, sizeof config_keys / sizeof *config_keys, "config");
            json_t *a = json_object_get(o, "attack");
            assert_string_equal(json_string_value(json_object_get(a, "kind")), "fgsm");
            assert_true(fabs(json_real_value(json_object_get(a, "eps")) - EPS) < 1e-9);
            json_t *regs = json_object_get(o, "regularizers");
            assert_int_equal(json_array_size(regs), 1);
            json_t *r0 = json_array_get(regs, 0);
            assert_string_equal(json_string_value(json_object_get(r0, "kind")), "elle");
            assert_true(json_real_value(json_object_get(r0, "adaptive")) == 1);
            assert_true(json_real_value(json_object_get(r0, "lambda_max")) == 4000);
            assert_true(json_is_real(json_object_get(o, "co_drop")));
        } else if (strcmp(ev, "step") == 0) {
            assert_keys(o, step_keys, sizeof step_keys / sizeof *step_keys, "step");
            assert_true(json_is_integer(json_object_get(o, "elin_alarms")));
            n_step++;
        } else if (strcmp(ev, "epoch") == 0) {
            assert_keys(o, epoch_keys, sizeof epoch_keys / sizeof *epoch_keys, "epoch");
            assert_true(json_is_integer(json_object_get(o, "co_flag")));
            assert_true(json_is_integer(json_object_get(o, "lambda_resets")));
            n_epoch++;
        }
        json_decref(o);
    }
    fclose(f);
    assert_int_equal(n_step, N_TRAIN / BATCH);
    assert_int_equal(n_epoch, 1);
    elle_trainer_free(t);
    elle_regularizer_free(reg);
    elle_attack_free(fgsm);
    elle_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fgsm_elle_learns),
        cmocka_unit_test(test_elle_a_metrics),
        cmocka_unit_test(test_reserves_for_regularizer),
        cmocka_unit_test(test_foreign_model_refused),
        cmocka_unit_test(test_co_flag_rule),
        cmocka_unit_test(test_elin_alarm_rule),
        cmocka_unit_test(test_adv_deterministic),
        cmocka_unit_test(test_pgd_monitor),
        cmocka_unit_test(test_train_acc_against_attack),
        cmocka_unit_test(test_model_logits),
        cmocka_unit_test(test_adv_json_lines),
    };
    return cmocka_run_group_tests_name("adv_train", tests, setup, teardown);
}
