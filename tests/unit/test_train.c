/*
 * The trainer on a small separable problem (two classes, bright left half
 * vs bright right half, 12x12 grey images, small_cnn, reference backend):
 * it lowers the loss and reaches high accuracy; the same seed gives the same
 * weights bit for bit; two steps per batch match a hand-written loop over
 * the public optimizer and schedule; callbacks stop it with ELLE_EUSER; the
 * JSON lines parse and hold the documented keys; a diverging run stops with
 * ELLE_ENUMERIC and leaves the saved model alone; the best-validation model
 * is the one with the reported accuracy; parameters, paths and metrics
 * accessors reject bad input.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "elle_test.h"

enum { H = 12, W = 12, PIX = H * W, N_TRAIN = 192, N_TEST = 64, N_VAL = 32 };

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
    elle_model *model;
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
    w->model = make_model(w->ctx, 3);
    w->train = make_data(N_TRAIN, 0);
    w->test = make_data(N_TEST, 100000);
    w->val = make_data(N_VAL, 200000);
    strcpy(w->dir, "/tmp/elle_train_XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    *state = w;
    return 0;
}

static void remove_in(const char *dir, const char *name)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
}

static int teardown(void **state)
{
    world *w = *state;
    static const char *const files[] = {"log.jsonl", "final.safetensors", "best.safetensors",
                                        "stderr.txt", "a.jsonl"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        remove_in(w->dir, files[i]);
    rmdir(w->dir);
    elle_dataset_free(w->train);
    elle_dataset_free(w->test);
    elle_dataset_free(w->val);
    elle_model_free(w->model);
    elle_context_free(w->ctx);
    free(w);
    return 0;
}

static void path_in(char *out, size_t size, const world *w, const char *name)
{
    snprintf(out, size, "%s/%s", w->dir, name);
}

/* Trainer with the small problem's settings. */
static elle_trainer *make_trainer(elle_model *m, double epochs)
{
    elle_trainer *t = NULL;
    assert_elle_ok(elle_trainer_create(&t, m));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EPOCHS, epochs));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_BATCH_SIZE, 16));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EVAL_BATCH_SIZE, 20));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, 0.1));
    return t;
}

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

/* ---- learning ------------------------------------------------------------------------------- */

typedef struct epochs_seen {
    int n;
    double loss[16], test_acc[16], val_acc[16];
} epochs_seen;

static int on_epoch(const elle_train_metrics *m, void *user_data)
{
    epochs_seen *e = user_data;
    assert_int_equal(elle_train_metrics_event(m), ELLE_TRAIN_EVENT_EPOCH);
    assert_elle_ok(elle_train_metrics_get(m, ELLE_TRAIN_METRIC_LOSS, &e->loss[e->n]));
    assert_elle_ok(elle_train_metrics_get(m, ELLE_TRAIN_METRIC_TEST_ACC, &e->test_acc[e->n]));
    assert_elle_ok(elle_train_metrics_get(m, ELLE_TRAIN_METRIC_VAL_ACC, &e->val_acc[e->n]));
    e->n++;
    return 0;
}

/* Clean accuracy of the model on the first n samples of d, eval mode. */
static double accuracy(elle_model *m, elle_dataset *d, int n)
{
    float *x = malloc((size_t)n * PIX * sizeof(float));
    float *logits = malloc((size_t)n * 2 * sizeof(float));
    int32_t *y = malloc((size_t)n * sizeof(int32_t));
    assert_non_null(x);
    assert_non_null(logits);
    assert_non_null(y);
    for (int i = 0; i < n; i++)
        assert_elle_ok(elle_dataset_get(d, i, x + i * PIX, &y[i]));
    assert_elle_ok(elle_model_reserve(m, n));
    assert_elle_ok(elle_model_set_training(m, 0));
    assert_elle_ok(elle_model_forward(m, x, n, logits));
    int correct = 0;
    for (int i = 0; i < n; i++)
        correct += (logits[2 * i + 1] > logits[2 * i]) == (y[i] == 1);
    free(x);
    free(logits);
    free(y);
    return (double)correct / n;
}

static void test_fit_learns(void **state)
{
    world *w = *state;
    elle_model *m = make_model(w->ctx, 5);
    double before = accuracy(m, w->test, N_TEST);
    print_message("test accuracy before training %.3f\n", before);
    assert_true(before < 0.75);
    elle_trainer *t = make_trainer(m, 6);
    epochs_seen seen = {0};
    assert_elle_ok(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_EPOCH, on_epoch, &seen));
    assert_elle_ok(elle_trainer_fit(t, w->train, w->test, w->val));
    assert_int_equal(seen.n, 6);
    for (int e = 0; e < seen.n; e++)
        print_message("epoch %d: loss %.4f, test acc %.3f, val acc %.3f\n", e, seen.loss[e],
                      seen.test_acc[e], seen.val_acc[e]);
    assert_true(seen.loss[5] < 0.5 * seen.loss[0]);
    assert_true(seen.test_acc[5] >= 0.95);
    assert_true(seen.val_acc[5] >= 0.9);
    /* the last epoch's record stays readable after the fit */
    const elle_train_metrics *last = elle_trainer_last_epoch(t);
    assert_non_null(last);
    double v;
    assert_elle_ok(elle_train_metrics_get(last, ELLE_TRAIN_METRIC_TEST_ACC, &v));
    assert_true(v == seen.test_acc[5]);
    assert_elle_ok(elle_train_metrics_get(last, ELLE_TRAIN_METRIC_EPOCH, &v));
    assert_true(v == 5);
    assert_elle_ok(elle_train_metrics_get(last, ELLE_TRAIN_METRIC_STEP, &v));
    assert_true(v == 6 * (N_TRAIN / 16));
    assert_elle_ok(elle_train_metrics_get(last, ELLE_TRAIN_METRIC_SAMPLES, &v));
    assert_true(v == N_TRAIN);
    /* the short schedule's last batch: N = 6 epochs x 12 batches = 72 and
     * t = 71: x = 71/72, scale = (71/72 - 1)/(0.5 - 1) = 2/72, lr = 0.1 * 2/72 */
    assert_elle_ok(elle_train_metrics_get(last, ELLE_TRAIN_METRIC_LR, &v));
    assert_true(fabs(v - 0.1 * 2.0 / 72.0) < 1e-12);
    assert_int_equal(elle_model_training(m), 0); /* left in eval mode */
    elle_trainer_free(t);
    elle_model_free(m);
}

/* The same on the CPU backend (oneDNN, its OpenMP sgd_update), twice with
 * one seed: the weights agree bit for bit there too. */
static void test_fit_cpu(void **state)
{
    world *w = *state;
    elle_context *cpu = NULL;
    if (!elle_backend_available(ELLE_BACKEND_CPU) ||
        elle_context_create(&cpu, ELLE_BACKEND_CPU, 0) < 0) {
        print_message("CPU backend unavailable (%s); skipped\n", elle_error_last()->message);
        skip();
    }
    float *weights[2] = {NULL, NULL};
    for (int run = 0; run < 2; run++) {
        elle_model *m = make_model(cpu, 5);
        elle_trainer *t = make_trainer(m, 4);
        assert_elle_ok(elle_trainer_fit(t, w->train, w->test, NULL));
        double acc;
        assert_elle_ok(
            elle_train_metrics_get(elle_trainer_last_epoch(t), ELLE_TRAIN_METRIC_TEST_ACC, &acc));
        print_message("CPU run %d: test accuracy %.3f\n", run, acc);
        assert_true(acc >= 0.95);
        weights[run] = malloc(weights_count(m) * sizeof(float));
        assert_non_null(weights[run]);
        get_weights(m, weights[run]);
        if (run == 1)
            assert_memory_equal(weights[0], weights[1], weights_count(m) * sizeof(float));
        elle_trainer_free(t);
        elle_model_free(m);
    }
    free(weights[0]);
    free(weights[1]);
    elle_context_free(cpu);
}

/* ---- determinism ---------------------------------------------------------------------------- */

static void train_copy(world *w, double seed, float *weights)
{
    elle_model *m = make_model(w->ctx, 9);
    elle_trainer *t = make_trainer(m, 2);
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_SEED, seed));
    assert_elle_ok(elle_trainer_fit(t, w->train, NULL, NULL));
    get_weights(m, weights);
    elle_trainer_free(t);
    elle_model_free(m);
}

static void test_fit_deterministic(void **state)
{
    world *w = *state;
    size_t n = weights_count(w->model);
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    float *c = malloc(n * sizeof(float));
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    train_copy(w, 1234, a);
    train_copy(w, 1234, b);
    train_copy(w, 99, c);
    assert_memory_equal(a, b, n * sizeof(float));
    /* another seed, another data order: other weights */
    assert_memory_not_equal(a, c, n * sizeof(float));
    free(a);
    free(b);
    free(c);
}

/* ---- two steps per batch -------------------------------------------------------------------- */

/* The trainer with steps_per_batch 2 equals a loop written with the public
 * optimizer and schedule: per batch, step(schedule(2i)), step(schedule(2i+1)),
 * both from the same gradient. */
static void test_fit_two_steps_per_batch(void **state)
{
    world *w = *state;
    elle_model *a = make_model(w->ctx, 4), *b = make_model(w->ctx, 4);
    elle_trainer *t = make_trainer(a, 2);
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_STEPS_PER_BATCH, 2));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_SHUFFLE, 0));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_WEIGHT_DECAY, 1e-3));
    assert_elle_ok(elle_trainer_fit(t, w->train, NULL, NULL));
    elle_trainer_free(t);

    /* the same by hand */
    const int64_t bs = 16, nb = N_TRAIN / 16, epochs = 2;
    elle_optimizer *opt = NULL;
    elle_schedule *s = NULL;
    assert_elle_ok(elle_optimizer_create_sgd(&opt, b));
    assert_elle_ok(elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_WEIGHT_DECAY, 1e-3));
    assert_elle_ok(elle_schedule_create(&s, ELLE_SCHEDULE_SHORT));
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_LR_MAX, 0.1));
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_EPOCHS, (double)epochs));
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_BATCHES_PER_EPOCH, (double)nb));
    assert_elle_ok(elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH, 2));
    assert_elle_ok(elle_model_reserve(b, 20));
    assert_elle_ok(elle_dataset_set_param(w->train, ELLE_DATASET_PARAM_SHUFFLE, 0));
    float *x = malloc(bs * PIX * sizeof(float));
    int32_t y[16];
    assert_non_null(x);
    int64_t step = 0;
    for (int64_t e = 0; e < epochs; e++) {
        assert_elle_ok(elle_model_set_training(b, 1));
        for (int64_t i = 0; i < nb; i++) {
            int64_t n;
            assert_elle_ok(elle_dataset_batch(w->train, e, i, bs, x, y, &n));
            assert_elle_ok(elle_model_zero_grad(b));
            assert_elle_ok(elle_model_backward(b, x, y, n, NULL, NULL));
            for (int k = 0; k < 2; k++, step++) {
                double lr, mom;
                assert_elle_ok(elle_schedule_at(s, step, &lr, &mom));
                assert_elle_ok(elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_LR, lr));
                assert_elle_ok(elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_MOMENTUM, mom));
                assert_elle_ok(elle_optimizer_step(opt));
            }
        }
    }
    assert_int_equal(step, elle_schedule_total_steps(s));
    size_t count = weights_count(a);
    float *wa = malloc(count * sizeof(float)), *wb = malloc(count * sizeof(float));
    assert_non_null(wa);
    assert_non_null(wb);
    get_weights(a, wa);
    get_weights(b, wb);
    assert_memory_equal(wa, wb, count * sizeof(float));
    free(wa);
    free(wb);
    free(x);
    elle_schedule_free(s);
    elle_optimizer_free(opt);
    elle_model_free(a);
    elle_model_free(b);
}

/* ---- callbacks ------------------------------------------------------------------------------ */

typedef struct stopper {
    int calls;
    int stop_at;
} stopper;

static int on_step_stop(const elle_train_metrics *m, void *user_data)
{
    stopper *s = user_data;
    double step, batch, loss, lr;
    assert_int_equal(elle_train_metrics_event(m), ELLE_TRAIN_EVENT_STEP);
    assert_elle_ok(elle_train_metrics_get(m, ELLE_TRAIN_METRIC_STEP, &step));
    assert_elle_ok(elle_train_metrics_get(m, ELLE_TRAIN_METRIC_BATCH, &batch));
    assert_elle_ok(elle_train_metrics_get(m, ELLE_TRAIN_METRIC_LOSS, &loss));
    assert_elle_ok(elle_train_metrics_get(m, ELLE_TRAIN_METRIC_LR, &lr));
    assert_true(isfinite(loss) && loss > 0);
    s->calls++;
    assert_true(step == s->calls);
    /* a step record has no evaluation */
    assert_false(elle_train_metrics_has(m, ELLE_TRAIN_METRIC_TEST_ACC));
    return s->calls == s->stop_at ? 1 : 0;
}

static void test_callback_stops(void **state)
{
    world *w = *state;
    char final_path[128];
    path_in(final_path, sizeof final_path, w, "final.safetensors");
    unlink(final_path);
    elle_model *m = make_model(w->ctx, 6);
    elle_trainer *t = make_trainer(m, 3);
    stopper s = {0, 4};
    assert_elle_ok(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_STEP, on_step_stop, &s));
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_FINAL_MODEL, final_path));
    assert_elle_status(elle_trainer_fit(t, w->train, w->test, NULL), ELLE_EUSER);
    assert_int_equal(s.calls, 4);
    assert_non_null(strstr(elle_error_last()->message, "callback"));
    struct stat st;
    assert_int_not_equal(stat(final_path, &st), 0); /* not written */
    /* removing the callback lets it run */
    assert_elle_ok(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_STEP, NULL, NULL));
    assert_elle_ok(elle_trainer_fit(t, w->train, w->test, NULL));
    assert_int_equal(stat(final_path, &st), 0);
    unlink(final_path);
    elle_trainer_free(t);
    elle_model_free(m);
}

static int on_epoch_stop(const elle_train_metrics *m, void *user_data)
{
    (void)m;
    (void)user_data;
    return -7;
}

static void test_epoch_callback_stops(void **state)
{
    world *w = *state;
    elle_model *m = make_model(w->ctx, 6);
    elle_trainer *t = make_trainer(m, 3);
    assert_elle_ok(elle_trainer_set_callback(t, ELLE_TRAIN_EVENT_EPOCH, on_epoch_stop, NULL));
    assert_elle_status(elle_trainer_fit(t, w->train, NULL, NULL), ELLE_EUSER);
    /* the record of the epoch that stopped is there */
    double v;
    assert_elle_ok(elle_train_metrics_get(elle_trainer_last_epoch(t), ELLE_TRAIN_METRIC_EPOCH, &v));
    assert_true(v == 0);
    elle_trainer_free(t);
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

static void test_json_lines(void **state)
{
    world *w = *state;
    char log_path[128], best_path[128];
    path_in(log_path, sizeof log_path, w, "log.jsonl");
    path_in(best_path, sizeof best_path, w, "best.safetensors");
    elle_model *m = make_model(w->ctx, 8);
    elle_trainer *t = make_trainer(m, 2);
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_LOG, log_path));
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_BEST_MODEL, best_path));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LOG_EVERY, 2));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_TRAIN_ACC, 1));
    assert_elle_ok(elle_trainer_fit(t, w->train, w->test, w->val));

    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    char line[8192];
    int n_config = 0, n_step = 0, n_epoch = 0, n_end = 0, n_lines = 0;
    static const char *const config_keys[] = {
        "event", "version", "arch", "num_params", "train_size", "test_size", "val_size",
        "batches_per_epoch", "total_steps", "epochs", "batch_size", "eval_batch_size", "lr",
        "schedule", "momentum", "base_momentum", "cycle_momentum", "up_fraction",
        "weight_decay", "nesterov", "steps_per_batch", "seed", "shuffle"};
    static const char *const step_keys[] = {"event", "epoch", "step", "batch", "samples",
                                            "loss", "train_acc", "lr", "momentum", "time",
                                            "total_epochs", "total_steps"};
    static const char *const epoch_keys[] = {
        "event", "epoch", "step", "samples", "loss", "train_acc", "lr", "momentum", "time",
        "samples_per_s", "test_loss", "test_acc", "val_loss", "val_acc", "best_val_acc",
        "best_val_epoch", "eval_time", "total_epochs", "total_steps"};
    while (fgets(line, sizeof line, f)) {
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        if (!o) {
            print_error("line %d does not parse: %s\n%s", n_lines + 1, err.text, line);
            fail();
        }
        const char *ev = json_string_value(json_object_get(o, "event"));
        assert_non_null(ev);
        if (strcmp(ev, "config") == 0) {
            assert_int_equal(n_lines, 0); /* the first line */
            assert_keys(o, config_keys, sizeof config_keys / sizeof *config_keys, "config");
            assert_string_equal(json_string_value(json_object_get(o, "schedule")), "short");
            assert_true(json_real_value(json_object_get(o, "lr")) == 0.1);
            /* auto momentum resolved by the short schedule */
            assert_true(json_real_value(json_object_get(o, "momentum")) == 0.9);
            assert_true(json_real_value(json_object_get(o, "base_momentum")) == 0.8);
            assert_int_equal(json_integer_value(json_object_get(o, "eval_batch_size")), 20);
            n_config++;
        } else if (strcmp(ev, "step") == 0) {
            assert_keys(o, step_keys, sizeof step_keys / sizeof *step_keys, "step");
            /* log_every 2: steps 2, 4, ... */
            assert_int_equal(json_integer_value(json_object_get(o, "step")) % 2, 0);
            n_step++;
        } else if (strcmp(ev, "epoch") == 0) {
            assert_keys(o, epoch_keys, sizeof epoch_keys / sizeof *epoch_keys, "epoch");
            assert_int_equal(json_integer_value(json_object_get(o, "epoch")), n_epoch);
            double acc = json_real_value(json_object_get(o, "test_acc"));
            assert_true(acc >= 0.0 && acc <= 1.0);
            n_epoch++;
        } else if (strcmp(ev, "end") == 0) {
            assert_string_equal(json_string_value(json_object_get(o, "status")), "ELLE_OK");
            n_end++;
        } else {
            print_error("unknown event '%s'\n", ev);
            fail();
        }
        json_decref(o);
        n_lines++;
    }
    fclose(f);
    assert_int_equal(n_config, 1);
    assert_int_equal(n_step, 2 * (N_TRAIN / 16) / 2);
    assert_int_equal(n_epoch, 2);
    assert_int_equal(n_end, 1);

    /* the best model file holds the best epoch's weights: its validation
     * accuracy is the reported best_val_acc */
    double best;
    assert_elle_ok(
        elle_train_metrics_get(elle_trainer_last_epoch(t), ELLE_TRAIN_METRIC_BEST_VAL_ACC, &best));
    elle_model *check = make_model(w->ctx, 77);
    assert_elle_ok(elle_model_load(check, best_path));
    assert_true(fabs(accuracy(check, w->val, N_VAL) - best) < 1e-12);
    elle_model_free(check);
    elle_trainer_free(t);
    elle_model_free(m);
}

/* ---- divergence ----------------------------------------------------------------------------- */

static void read_file(const char *path, char **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc((size_t)n + 1);
    assert_non_null(*data);
    assert_int_equal(fread(*data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
}

static void test_nan_detection(void **state)
{
    world *w = *state;
    char final_path[128], log_path[128];
    path_in(final_path, sizeof final_path, w, "final.safetensors");
    path_in(log_path, sizeof log_path, w, "log.jsonl");
    elle_model *m = make_model(w->ctx, 10);
    /* a good model already saved where the final model goes */
    assert_elle_ok(elle_model_save(m, final_path));
    char *before, *after;
    size_t nb, na;
    read_file(final_path, &before, &nb);

    elle_trainer *t = make_trainer(m, 3);
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, 1e30));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_SCHEDULE, ELLE_SCHEDULE_CONSTANT));
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_FINAL_MODEL, final_path));
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_LOG, log_path));
    assert_elle_status(elle_trainer_fit(t, w->train, w->test, NULL), ELLE_ENUMERIC);
    const char *msg = elle_error_last()->message;
    print_message("%s\n", msg);
    assert_non_null(strstr(msg, "step"));
    read_file(final_path, &after, &na);
    assert_int_equal(na, nb);
    assert_memory_equal(before, after, nb); /* the saved model is untouched */
    free(before);
    free(after);
    /* the log ends with the status */
    char *log;
    size_t nl;
    read_file(log_path, &log, &nl);
    log[nl] = '\0';
    assert_non_null(strstr(log, "\"status\": \"ELLE_ENUMERIC\""));
    free(log);
    elle_trainer_free(t);
    elle_model_free(m);
}

/* ---- progress bar --------------------------------------------------------------------------- */

/* stderr is not a terminal here: progress = 1 must print nothing. */
static void test_progress_needs_a_tty(void **state)
{
    world *w = *state;
    char err_path[128];
    path_in(err_path, sizeof err_path, w, "stderr.txt");
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    elle_model *m = make_model(w->ctx, 11);
    elle_trainer *t = make_trainer(m, 1);
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_PROGRESS, 1));
    int rc = elle_trainer_fit(t, w->train, w->test, NULL);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    assert_elle_ok(rc);
    struct stat st;
    assert_int_equal(stat(err_path, &st), 0);
    assert_int_equal(st.st_size, 0);
    elle_trainer_free(t);
    elle_model_free(m);
}

/* ---- arguments ------------------------------------------------------------------------------ */

static void test_params_and_errors(void **state)
{
    world *w = *state;
    elle_trainer *t = NULL;
    assert_elle_status(elle_trainer_create(&t, NULL), ELLE_EINVAL);
    assert_null(t);
    assert_elle_ok(elle_trainer_create(&t, w->model));
    double v, lo, hi;
    /* defaults */
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_EPOCHS, &v));
    assert_true(v == 30);
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_BATCH_SIZE, &v));
    assert_true(v == 128);
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_WEIGHT_DECAY, &v));
    assert_true(v == 5e-4);
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_SCHEDULE, &v));
    assert_true(v == ELLE_SCHEDULE_SHORT);
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_LR, &v));
    assert_true(v == -1); /* auto */
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_STEPS_PER_BATCH, &v));
    assert_true(v == 1);
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_TRAIN_ACC, &v));
    assert_true(v == 1);
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_EXTRA_CLEAN_FORWARD, &v));
    assert_true(v == 0);
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_PGD_TEST_N, &v));
    assert_true(v == 1000);
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_PGD_VAL, &v));
    assert_true(v == 1);
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_CO_DROP, &v));
    assert_true(v == 0.5);
    assert_elle_ok(elle_trainer_get_param(t, ELLE_TRAIN_PARAM_CO_K, &v));
    assert_true(v == 2);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_CO_DROP, 1.5), ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_PGD_TEST_N, 2.5), ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_PGD_VAL, 2), ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_CO_K, -1), ELLE_EINVAL);
    /* bounds, NaN, integers, auto */
    assert_elle_ok(elle_trainer_param_bounds(ELLE_TRAIN_PARAM_STEPS_PER_BATCH, &lo, &hi));
    assert_true(lo == 1 && hi == 2);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_STEPS_PER_BATCH, 3),
                       ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EPOCHS, 0), ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_BATCH_SIZE, 2.5), ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, NAN), ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, -0.5), ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_MOMENTUM, 1.5), ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_SCHEDULE, 4), ELLE_EINVAL);
    assert_elle_status(elle_trainer_set_param(t, (elle_train_param)0, 1), ELLE_EINVAL);
    assert_elle_status(elle_trainer_get_param(t, (elle_train_param)23, &v), ELLE_EINVAL);
    assert_elle_status(elle_trainer_param_bounds((elle_train_param)99, &lo, &hi), ELLE_EINVAL);
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, 0.3));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, -1)); /* back to auto */
    /* names both ways, for the CLI's --lr and friends */
    for (int id = 1; id <= 22; id++) {
        const char *name = elle_trainer_param_name((elle_train_param)id);
        assert_non_null(name);
        elle_train_param back;
        assert_elle_ok(elle_trainer_param_from_name(name, &back));
        assert_int_equal(back, id);
    }
    elle_train_param p;
    assert_elle_ok(elle_trainer_param_from_name("lr", &p));
    assert_int_equal(p, ELLE_TRAIN_PARAM_LR);
    assert_elle_status(elle_trainer_param_from_name("learning-rate", &p), ELLE_EINVAL);
    assert_null(elle_trainer_param_name((elle_train_param)23));
    /* paths */
    assert_null(elle_trainer_get_path(t, ELLE_TRAIN_PATH_LOG));
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_LOG, "x.jsonl"));
    assert_string_equal(elle_trainer_get_path(t, ELLE_TRAIN_PATH_LOG), "x.jsonl");
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_LOG, ""));
    assert_null(elle_trainer_get_path(t, ELLE_TRAIN_PATH_LOG));
    assert_elle_status(elle_trainer_set_path(t, (elle_train_path)9, "x"), ELLE_EINVAL);
    elle_train_path which;
    assert_elle_ok(elle_train_path_from_name("best_model", &which));
    assert_int_equal(which, ELLE_TRAIN_PATH_BEST_MODEL);
    assert_string_equal(elle_train_path_name(ELLE_TRAIN_PATH_FINAL_MODEL), "final_model");
    assert_elle_status(elle_train_path_from_name("checkpoint", &which), ELLE_EINVAL);
    /* callbacks */
    assert_elle_status(elle_trainer_set_callback(t, (elle_train_event)5, on_epoch_stop, NULL),
                       ELLE_EINVAL);
    /* metrics names */
    for (int id = 1; id <= 33; id++) {
        const char *name = elle_train_metric_name((elle_train_metric)id);
        assert_non_null(name);
        elle_train_metric back;
        assert_elle_ok(elle_train_metric_from_name(name, &back));
        assert_int_equal(back, id);
    }
    elle_train_metric mk;
    assert_elle_status(elle_train_metric_from_name("accuracy", &mk), ELLE_EINVAL);
    assert_null(elle_train_metric_name((elle_train_metric)34));
    assert_null(elle_trainer_last_epoch(t));
    assert_int_equal(elle_train_metrics_event(NULL), -1);
    assert_int_equal(elle_train_metrics_has(NULL, ELLE_TRAIN_METRIC_LOSS), 0);
    assert_elle_status(elle_train_metrics_get(NULL, ELLE_TRAIN_METRIC_LOSS, &v), ELLE_EINVAL);

    /* fit arguments */
    assert_elle_status(elle_trainer_fit(NULL, w->train, NULL, NULL), ELLE_EINVAL);
    assert_elle_status(elle_trainer_fit(t, NULL, NULL, NULL), ELLE_EINVAL);
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_BEST_MODEL, "best.safetensors"));
    assert_elle_status(elle_trainer_fit(t, w->train, w->test, NULL), ELLE_EINVAL); /* no val */
    assert_elle_ok(elle_trainer_set_path(t, ELLE_TRAIN_PATH_BEST_MODEL, NULL));
    /* images of another shape */
    float img[2 * 8 * 8] = {0};
    int32_t lab[2] = {0, 1};
    elle_dataset *small = NULL, *many = NULL;
    assert_elle_ok(elle_dataset_from_host(&small, img, lab, 2, 1, 8, 8, 2));
    assert_elle_status(elle_trainer_fit(t, small, NULL, NULL), ELLE_ESHAPE);
    assert_elle_status(elle_trainer_fit(t, w->train, small, NULL), ELLE_ESHAPE);
    /* more classes than the model outputs */
    float img12[2 * PIX] = {0};
    int32_t lab5[2] = {0, 4};
    assert_elle_ok(elle_dataset_from_host(&many, img12, lab5, 2, 1, H, W, 5));
    assert_elle_status(elle_trainer_fit(t, many, NULL, NULL), ELLE_EINVAL);
    /* a short schedule without a rising part is refused before training */
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_UP_FRACTION, 0));
    assert_elle_ok(elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EPOCHS, 1));
    assert_elle_status(elle_trainer_fit(t, w->train, NULL, NULL), ELLE_EINVAL);
    elle_dataset_free(small);
    elle_dataset_free(many);
    elle_trainer_free(t);
    elle_trainer_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fit_learns),
        cmocka_unit_test(test_fit_cpu),
        cmocka_unit_test(test_fit_deterministic),
        cmocka_unit_test(test_fit_two_steps_per_batch),
        cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_epoch_callback_stops),
        cmocka_unit_test(test_json_lines),
        cmocka_unit_test(test_nan_detection),
        cmocka_unit_test(test_progress_needs_a_tty),
        cmocka_unit_test(test_params_and_errors),
    };
    return cmocka_run_group_tests_name("train", tests, setup, teardown);
}
