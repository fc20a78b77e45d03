/*
 * elle_trainer_fit: the training loop.
 *
 *   for each epoch e:
 *       for each batch b of the (shuffled, augmented) training set:
 *           zero the gradients
 *           stage: per-sample losses + their mean's gradient   (clean: one backward)
 *           stop with ELLE_ENUMERIC if the loss is NaN or infinite
 *           [train_acc: one more training-mode forward of the batch]
 *           steps_per_batch times: lr, momentum = schedule(step); optimizer step
 *           step metrics -> JSON line (log_every), step callback, progress bar
 *       evaluate (eval mode): clean loss and accuracy on the test and validation sets
 *       save the best-validation model when val_acc strictly improves
 *       epoch metrics -> JSON line, epoch callback
 *   save the final model
 *
 * All the computing goes through the public API (elle.h): datasets, model,
 * optimizer and schedule, so this file is a template users can copy and
 * adapt (STYLE.md §8.10). What it takes from the inside is only the trainer's
 * own plumbing: the struct and the metrics record (train_internal.h), and
 * elle__error_set / elle__error_prefix to leave a message for
 * elle_error_last() — a copy outside the library would report its own way.
 *
 * Adversarial training plugs into one place, the per-batch stage (see
 * batch_stage below); everything else — schedule, optimizer steps, NaN
 * checks, evaluation, saving, metrics — stays as it is.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/error.h"
#include "elle.h"
#include "train/train_internal.h"

#define AUTO (-1.0)
#define JSON_FLAGS (JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10))

/* Everything one fit uses; allocated in fit_setup, released in fit_release. */
typedef struct fit {
    elle_trainer *t;
    elle_model *model;
    elle_dataset *train, *test, *val;
    elle_schedule *sched;
    int64_t c, h, w, classes;
    int64_t batch, eval_batch, steps_per_batch, epochs, batches_per_epoch, total_batches;
    float *x;          /* (max(batch, eval_batch), C, H, W) */
    int32_t *y;        /* (max(batch, eval_batch)) */
    float *loss;       /* (batch) per-sample training losses */
    float *logits;     /* (max(batch, eval_batch), classes) */
    float *state_buf;  /* the largest state entry, for the finiteness check */
    FILE *log;
    int64_t steps_done; /* training steps (batches) completed in this fit */
    int64_t epoch;      /* the current epoch */
    double best_val;    /* highest val_acc so far (-1 before the first evaluation) */
    int64_t best_epoch;
} fit;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Add where-we-are context to the message of a failed library call. */
static int with_context(fit *f, int rc)
{
    if (rc < 0)
        elle__error_prefix("elle_trainer_fit: epoch %lld, after %lld steps", (long long)f->epoch,
                           (long long)f->steps_done);
    return rc;
}

/* ---- the per-batch stage ------------------------------------------------------ */

/*
 * The "loss and gradient" stage of one training step: given the batch in
 * f->x / f->y (n samples), write the n per-sample training losses into
 * loss_out and ACCUMULATE the gradient of the objective (their mean, plus
 * any regularizer) into the model's parameter gradients, which the loop has
 * zeroed. The model is in training mode.
 *
 * Clean training is a single elle_model_backward. Adversarial training
 * provides another stage (attack the batch, then the training loss and the
 * regularizers) and leaves the rest of the loop unchanged.
 */
typedef int (*batch_stage)(fit *f, int64_t n, float *loss_out);

static int clean_stage(fit *f, int64_t n, float *loss_out)
{
    return elle_model_backward(f->model, f->x, f->y, n, loss_out, NULL);
}

/* ---- output ---------------------------------------------------------------------- */

/* Write one JSON object as a line and flush it (a killed run keeps its lines). Steals o. */
static int write_line(fit *f, json_t *o)
{
    if (!f->log) {
        json_decref(o);
        return ELLE_OK;
    }
    if (!o)
        ELLE_FAIL(ELLE_ENOMEM, "elle_trainer_fit: out of memory building a log line");
    int bad = json_dumpf(o, f->log, JSON_FLAGS) != 0;
    json_decref(o);
    bad = bad || fputc('\n', f->log) == EOF || fflush(f->log) != 0;
    if (bad)
        ELLE_FAIL(ELLE_EIO, "elle_trainer_fit: cannot write the log '%s': %s",
                  f->t->path[ELLE_TRAIN_PATH_LOG], strerror(errno));
    return ELLE_OK;
}

/* Log the record (when asked) and call the event's callback. */
static int report(fit *f, const elle_train_metrics *m, int to_log)
{
    elle_trainer *t = f->t;
    if (to_log)
        ELLE_TRY(write_line(f, elle__metrics_json(m)));
    elle_train_callback fn = t->cb[m->event];
    if (fn) {
        int r = fn(m, t->cb_data[m->event]);
        if (r != 0)
            ELLE_FAIL(ELLE_EUSER, "elle_trainer_fit: the %s callback returned %d at epoch %lld "
                                  "after %lld steps; training stopped",
                      elle__train_event_name(m->event), r, (long long)f->epoch,
                      (long long)f->steps_done);
    }
    return ELLE_OK;
}

/* The first line: what this run is, with every "auto" parameter resolved. */
static int write_config(fit *f)
{
    if (!f->log)
        return ELLE_OK;
    const elle_trainer *t = f->t;
    json_t *o = json_object();
    if (!o)
        ELLE_FAIL(ELLE_ENOMEM, "elle_trainer_fit: out of memory building a log line");
    double v;
    int bad = json_object_set_new(o, "event", json_string("config"));
    bad |= json_object_set_new(o, "version", json_string(elle_version_string()));
    bad |= json_object_set_new(o, "arch", json_string(elle_model_arch(f->model)));
    bad |= json_object_set_new(o, "num_params", json_integer(elle_model_num_params(f->model)));
    bad |= json_object_set_new(o, "train_size", json_integer(elle_dataset_size(f->train)));
    bad |= json_object_set_new(o, "test_size",
                               f->test ? json_integer(elle_dataset_size(f->test)) : json_null());
    bad |= json_object_set_new(o, "val_size",
                               f->val ? json_integer(elle_dataset_size(f->val)) : json_null());
    bad |= json_object_set_new(o, "batches_per_epoch", json_integer(f->batches_per_epoch));
    bad |= json_object_set_new(o, "total_steps", json_integer(f->total_batches));
    /* trainer parameters by name, auto ones as the schedule resolved them */
    for (int id = 1; id < ELLE__TRAIN_N_PARAMS && !bad; id++) {
        const char *name = elle_trainer_param_name((elle_train_param)id);
        if (!name)
            continue;
        v = t->p[id];
        switch (id) {
        case ELLE_TRAIN_PARAM_LR:
            elle_schedule_get_param(f->sched, ELLE_SCHEDULE_PARAM_LR_MAX, &v);
            break;
        case ELLE_TRAIN_PARAM_MOMENTUM:
            elle_schedule_get_param(f->sched, ELLE_SCHEDULE_PARAM_MOMENTUM, &v);
            break;
        case ELLE_TRAIN_PARAM_BASE_MOMENTUM:
            elle_schedule_get_param(f->sched, ELLE_SCHEDULE_PARAM_BASE_MOMENTUM, &v);
            break;
        case ELLE_TRAIN_PARAM_CYCLE_MOMENTUM:
            elle_schedule_get_param(f->sched, ELLE_SCHEDULE_PARAM_CYCLE_MOMENTUM, &v);
            break;
        case ELLE_TRAIN_PARAM_UP_FRACTION:
            elle_schedule_get_param(f->sched, ELLE_SCHEDULE_PARAM_UP_FRACTION, &v);
            break;
        case ELLE_TRAIN_PARAM_EVAL_BATCH_SIZE:
            v = (double)f->eval_batch;
            break;
        default:
            break;
        }
        json_t *j;
        if (id == ELLE_TRAIN_PARAM_SCHEDULE)
            j = json_string(elle_schedule_kind_name((elle_schedule_kind)(int)v));
        else if (v == floor(v) && fabs(v) < 9007199254740992.0 && id != ELLE_TRAIN_PARAM_LR &&
                 id != ELLE_TRAIN_PARAM_MOMENTUM && id != ELLE_TRAIN_PARAM_BASE_MOMENTUM &&
                 id != ELLE_TRAIN_PARAM_UP_FRACTION && id != ELLE_TRAIN_PARAM_WEIGHT_DECAY)
            j = json_integer((json_int_t)v);
        else
            j = json_real(v);
        bad |= json_object_set_new(o, name, j);
    }
    if (bad) {
        json_decref(o);
        ELLE_FAIL(ELLE_ENOMEM, "elle_trainer_fit: out of memory building a log line");
    }
    return write_line(f, o);
}

/* The last line: how the run ended. Best effort: never replaces the run's status. */
static void write_end(fit *f, int rc)
{
    if (!f->log)
        return;
    json_t *o = json_object();
    if (!o)
        return;
    json_object_set_new(o, "event", json_string("end"));
    json_object_set_new(o, "status", json_string(elle_status_name(rc)));
    json_object_set_new(o, "epoch", json_integer(f->epoch));
    json_object_set_new(o, "step", json_integer(f->steps_done));
    if (rc < 0)
        json_object_set_new(o, "message", json_string(elle_error_last()->message));
    if (json_dumpf(o, f->log, JSON_FLAGS) == 0)
        fputc('\n', f->log);
    json_decref(o);
}

/* ---- model files ----------------------------------------------------------------------- */

/* ELLE_ENUMERIC naming the first non-finite parameter or buffer value. */
static int check_weights(fit *f, const char *not_saved)
{
    int64_t count = elle_model_state_count(f->model);
    for (int64_t i = 0; i < count; i++) {
        const char *name;
        elle_state_kind kind;
        int64_t dims[4];
        ELLE_TRY(elle_model_state_info(f->model, i, &name, &kind, NULL, dims));
        if (kind == ELLE_STATE_COUNTER)
            continue;
        ELLE_TRY(elle_model_state_get(f->model, i, f->state_buf));
        int64_t numel = dims[0] * dims[1] * dims[2] * dims[3];
        for (int64_t k = 0; k < numel; k++)
            if (!isfinite(f->state_buf[k]))
                ELLE_FAIL(ELLE_ENUMERIC, "elle_trainer_fit: '%s'[%lld] = %g after step %lld "
                                         "(epoch %lld): the weights diverged; the %s was not "
                                         "written",
                          name, (long long)k, (double)f->state_buf[k], (long long)f->steps_done,
                          (long long)f->epoch, not_saved);
    }
    return ELLE_OK;
}

/* Save the model to `path` (atomically, by elle_model_save) if all its values are finite. */
static int save_model(fit *f, const char *path, const char *what)
{
    ELLE_TRY(check_weights(f, what));
    int rc = elle_model_save(f->model, path);
    if (rc < 0)
        elle__error_prefix("elle_trainer_fit: saving the %s", what);
    return rc;
}

/* ---- evaluation -------------------------------------------------------------------------- */

/* Clean mean cross-entropy and accuracy (correct / total) of the model in eval mode. */
static int evaluate(fit *f, elle_dataset *d, const char *what, double *loss_out, double *acc_out)
{
    int64_t nb = elle_dataset_num_batches(d, f->eval_batch);
    if (nb < 0)
        return with_context(f, (int)nb);
    double loss_sum = 0.0;
    int64_t correct = 0, total = 0;
    const int64_t k = f->classes;
    for (int64_t b = 0; b < nb; b++) {
        int64_t n = 0;
        ELLE_TRY(with_context(
            f, elle_dataset_batch(d, f->epoch, b, f->eval_batch, f->x, f->y, &n)));
        ELLE_TRY(with_context(f, elle_model_forward(f->model, f->x, n, f->logits)));
        for (int64_t i = 0; i < n; i++) {
            const float *z = f->logits + i * k;
            int64_t arg = 0;
            for (int64_t j = 0; j < k; j++) {
                if (!isfinite(z[j]))
                    ELLE_FAIL(ELLE_ENUMERIC, "elle_trainer_fit: %s logit %g (sample %lld) at "
                                             "epoch %lld after step %lld: the weights diverged",
                              what, (double)z[j], (long long)(total + i), (long long)f->epoch,
                              (long long)f->steps_done);
                if (z[j] > z[arg])
                    arg = j; /* first maximum, as torch.argmax */
            }
            /* log-sum-exp shifted by the maximum, in double */
            double zmax = z[arg], s = 0.0;
            for (int64_t j = 0; j < k; j++)
                s += exp((double)z[j] - zmax);
            loss_sum += zmax + log(s) - (double)z[f->y[i]];
            correct += arg == f->y[i];
        }
        total += n;
    }
    *loss_out = loss_sum / (double)total;
    *acc_out = (double)correct / (double)total;
    return ELLE_OK;
}

/* ---- setup --------------------------------------------------------------------------------- */

static int check_dataset(fit *f, elle_dataset *d, const char *what, int64_t batch)
{
    int64_t c, h, w;
    ELLE_TRY(elle_dataset_shape(d, &c, &h, &w));
    if (c != f->c || h != f->h || w != f->w)
        ELLE_FAIL(ELLE_ESHAPE, "elle_trainer_fit: the %s images are (%lld, %lld, %lld), the "
                               "model takes (%lld, %lld, %lld)",
                  what, (long long)c, (long long)h, (long long)w, (long long)f->c,
                  (long long)f->h, (long long)f->w);
    int64_t k = elle_dataset_num_classes(d);
    if (k > f->classes)
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_fit: the %s set has %lld classes, the model "
                               "outputs %lld",
                  what, (long long)k, (long long)f->classes);
    int64_t nb = elle_dataset_num_batches(d, batch);
    if (nb < 0)
        return (int)nb;
    if (nb == 0)
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_fit: the %s set (%lld samples, drop_last) has no "
                               "complete batch of %lld",
                  what, (long long)elle_dataset_size(d), (long long)batch);
    return ELLE_OK;
}

static int alloc_array(void **p, int64_t count, size_t size)
{
    *p = malloc((size_t)(count > 0 ? count : 1) * size);
    if (!*p)
        ELLE_FAIL(ELLE_ENOMEM, "elle_trainer_fit: out of memory (%lld x %zu bytes)",
                  (long long)count, size);
    return ELLE_OK;
}

static int fit_setup(fit *f)
{
    elle_trainer *t = f->t;
    elle_model *model = f->model;
    const double *p = t->p;

    f->batch = (int64_t)p[ELLE_TRAIN_PARAM_BATCH_SIZE];
    f->eval_batch = p[ELLE_TRAIN_PARAM_EVAL_BATCH_SIZE] > 0
                        ? (int64_t)p[ELLE_TRAIN_PARAM_EVAL_BATCH_SIZE]
                        : f->batch;
    f->epochs = (int64_t)p[ELLE_TRAIN_PARAM_EPOCHS];
    f->steps_per_batch = (int64_t)p[ELLE_TRAIN_PARAM_STEPS_PER_BATCH];
    f->best_val = -1.0;
    f->best_epoch = -1;

    if (t->path[ELLE_TRAIN_PATH_BEST_MODEL] && !f->val)
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_fit: a best-model path ('%s') needs a validation "
                               "set",
                  t->path[ELLE_TRAIN_PATH_BEST_MODEL]);
    ELLE_TRY(elle_model_input_shape(model, &f->c, &f->h, &f->w));
    f->classes = elle_model_num_classes(model);

    /* the run's data order is a function of the trainer's parameters */
    ELLE_TRY(elle_dataset_set_param(f->train, ELLE_DATASET_PARAM_SHUFFLE,
                                    p[ELLE_TRAIN_PARAM_SHUFFLE]));
    ELLE_TRY(elle_dataset_set_param(f->train, ELLE_DATASET_PARAM_SEED, p[ELLE_TRAIN_PARAM_SEED]));
    ELLE_TRY(check_dataset(f, f->train, "training", f->batch));
    if (f->test)
        ELLE_TRY(check_dataset(f, f->test, "test", f->eval_batch));
    if (f->val)
        ELLE_TRY(check_dataset(f, f->val, "validation", f->eval_batch));
    f->batches_per_epoch = elle_dataset_num_batches(f->train, f->batch);
    f->total_batches = f->batches_per_epoch * f->epochs;

    /* schedule: the kind's defaults, then every parameter the user set */
    elle_schedule_kind kind = (elle_schedule_kind)(int)p[ELLE_TRAIN_PARAM_SCHEDULE];
    ELLE_TRY(elle_schedule_create(&f->sched, kind));
    ELLE_TRY(elle_schedule_set_param(f->sched, ELLE_SCHEDULE_PARAM_EPOCHS, (double)f->epochs));
    ELLE_TRY(elle_schedule_set_param(f->sched, ELLE_SCHEDULE_PARAM_BATCHES_PER_EPOCH,
                                     (double)f->batches_per_epoch));
    ELLE_TRY(elle_schedule_set_param(f->sched, ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH,
                                     (double)f->steps_per_batch));
    static const struct {
        elle_train_param from;
        elle_schedule_param to;
    } overrides[] = {
        {ELLE_TRAIN_PARAM_LR, ELLE_SCHEDULE_PARAM_LR_MAX},
        {ELLE_TRAIN_PARAM_MOMENTUM, ELLE_SCHEDULE_PARAM_MOMENTUM},
        {ELLE_TRAIN_PARAM_BASE_MOMENTUM, ELLE_SCHEDULE_PARAM_BASE_MOMENTUM},
        {ELLE_TRAIN_PARAM_CYCLE_MOMENTUM, ELLE_SCHEDULE_PARAM_CYCLE_MOMENTUM},
        {ELLE_TRAIN_PARAM_UP_FRACTION, ELLE_SCHEDULE_PARAM_UP_FRACTION},
    };
    for (size_t i = 0; i < sizeof overrides / sizeof overrides[0]; i++)
        if (p[overrides[i].from] != AUTO)
            ELLE_TRY(elle_schedule_set_param(f->sched, overrides[i].to, p[overrides[i].from]));
    ELLE_TRY(elle_schedule_at(f->sched, 0, NULL, NULL)); /* reject e.g. short with up_fraction 0 */

    /* optimizer: fresh momentum, the run's decay */
    ELLE_TRY(elle_optimizer_zero_state(t->opt));
    ELLE_TRY(elle_optimizer_set_param(t->opt, ELLE_OPTIM_PARAM_WEIGHT_DECAY,
                                      p[ELLE_TRAIN_PARAM_WEIGHT_DECAY]));
    ELLE_TRY(elle_optimizer_set_param(t->opt, ELLE_OPTIM_PARAM_NESTEROV,
                                      p[ELLE_TRAIN_PARAM_NESTEROV]));

    /* every buffer now, none inside the loop */
    int64_t nmax = f->batch > f->eval_batch ? f->batch : f->eval_batch;
    ELLE_TRY(elle_model_reserve(model, nmax));
    int64_t largest = 1, count = elle_model_state_count(model);
    for (int64_t i = 0; i < count; i++) {
        int64_t d[4];
        ELLE_TRY(elle_model_state_info(model, i, NULL, NULL, NULL, d));
        if (d[0] * d[1] * d[2] * d[3] > largest)
            largest = d[0] * d[1] * d[2] * d[3];
    }
    ELLE_TRY(alloc_array((void **)&f->x, nmax * f->c * f->h * f->w, sizeof(float)));
    ELLE_TRY(alloc_array((void **)&f->y, nmax, sizeof(int32_t)));
    ELLE_TRY(alloc_array((void **)&f->loss, f->batch, sizeof(float)));
    ELLE_TRY(alloc_array((void **)&f->logits, nmax * f->classes, sizeof(float)));
    ELLE_TRY(alloc_array((void **)&f->state_buf, largest, sizeof(float)));

    const char *log_path = t->path[ELLE_TRAIN_PATH_LOG];
    if (log_path) {
        f->log = fopen(log_path, "w");
        if (!f->log)
            ELLE_FAIL(ELLE_EIO, "elle_trainer_fit: cannot open the log '%s': %s", log_path,
                      strerror(errno));
    }
    return write_config(f);
}

static void fit_release(fit *f)
{
    if (f->log)
        fclose(f->log);
    elle_schedule_free(f->sched);
    free(f->x);
    free(f->y);
    free(f->loss);
    free(f->logits);
    free(f->state_buf);
}

/* ---- the loop ------------------------------------------------------------------------------ */

/* Count of argmax(logits_i) == y_i over n samples (first maximum wins). */
static int64_t count_correct(const float *logits, const int32_t *y, int64_t n, int64_t k)
{
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        const float *z = logits + i * k;
        int64_t arg = 0;
        for (int64_t j = 1; j < k; j++)
            if (z[j] > z[arg])
                arg = j;
        correct += arg == y[i];
    }
    return correct;
}

static int run_epoch(fit *f, batch_stage stage)
{
    elle_trainer *t = f->t;
    const int want_acc = t->p[ELLE_TRAIN_PARAM_TRAIN_ACC] != 0.0;
    const int64_t log_every = (int64_t)t->p[ELLE_TRAIN_PARAM_LOG_EVERY];
    double loss_sum = 0.0, lr0 = 0.0, m0 = 0.0;
    int64_t samples = 0, correct = 0;
    elle__progress pb;
    elle_train_metrics m;

    elle__progress_start(&pb, t->p[ELLE_TRAIN_PARAM_PROGRESS] != 0.0, f->epoch, f->epochs,
                         f->batches_per_epoch);
    ELLE_TRY(with_context(f, elle_model_set_training(f->model, 1)));
    double t_epoch = now_s();
    for (int64_t b = 0; b < f->batches_per_epoch; b++) {
        double t_step = now_s();
        int64_t n = 0;
        ELLE_TRY(with_context(f, elle_dataset_batch(f->train, f->epoch, b, f->batch, f->x, f->y,
                                                    &n)));
        ELLE_TRY(with_context(f, elle_model_zero_grad(f->model)));
        ELLE_TRY(with_context(f, stage(f, n, f->loss)));
        double batch_loss = 0.0;
        for (int64_t i = 0; i < n; i++)
            batch_loss += (double)f->loss[i];
        batch_loss /= (double)n;
        /* stop before the optimizer turns a bad gradient into bad weights */
        if (!isfinite(batch_loss))
            ELLE_FAIL(ELLE_ENUMERIC, "elle_trainer_fit: the training loss is %g at step %lld "
                                     "(epoch %lld, batch %lld); stopped before the update, "
                                     "nothing saved from here on",
                      batch_loss, (long long)f->steps_done + 1, (long long)f->epoch, (long long)b);
        int64_t batch_correct = 0;
        if (want_acc) {
            ELLE_TRY(with_context(f, elle_model_forward(f->model, f->x, n, f->logits)));
            batch_correct = count_correct(f->logits, f->y, n, f->classes);
        }
        /* steps_per_batch updates from the same gradient; the schedule moves
         * between them (elle_schedule_at decides what each step sees) */
        int64_t batch_index = f->epoch * f->batches_per_epoch + b;
        for (int64_t k = 0; k < f->steps_per_batch; k++) {
            double lr, mom;
            int64_t step = batch_index * f->steps_per_batch + k;
            ELLE_TRY(with_context(f, elle_schedule_at(f->sched, step, &lr, &mom)));
            if (k == 0) {
                lr0 = lr;
                m0 = mom;
            }
            ELLE_TRY(with_context(f, elle_optimizer_set_param(t->opt, ELLE_OPTIM_PARAM_LR, lr)));
            ELLE_TRY(with_context(f, elle_optimizer_set_param(t->opt, ELLE_OPTIM_PARAM_MOMENTUM,
                                                              mom)));
            ELLE_TRY(with_context(f, elle_optimizer_step(t->opt)));
        }
        f->steps_done++;
        loss_sum += batch_loss * (double)n;
        samples += n;
        correct += batch_correct;

        elle__metrics_clear(&m, ELLE_TRAIN_EVENT_STEP);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_EPOCH, (double)f->epoch);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_STEP, (double)f->steps_done);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_BATCH, (double)b);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_SAMPLES, (double)n);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_LOSS, batch_loss);
        if (want_acc)
            elle__metrics_set(&m, ELLE_TRAIN_METRIC_TRAIN_ACC, (double)batch_correct / (double)n);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_LR, lr0);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_MOMENTUM, m0);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TIME, now_s() - t_step);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TOTAL_EPOCHS, (double)f->epochs);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TOTAL_STEPS, (double)f->total_batches);
        ELLE_TRY(report(f, &m, log_every > 0 && f->steps_done % log_every == 0));
        elle__progress_step(&pb, b + 1, batch_loss, lr0);
    }
    double train_time = now_s() - t_epoch;

    /* evaluation, eval mode */
    double t_eval = now_s(), test_loss = 0, test_acc = 0, val_loss = 0, val_acc = 0;
    ELLE_TRY(with_context(f, elle_model_set_training(f->model, 0)));
    if (f->test)
        ELLE_TRY(evaluate(f, f->test, "test", &test_loss, &test_acc));
    if (f->val) {
        ELLE_TRY(evaluate(f, f->val, "validation", &val_loss, &val_acc));
        /* strictly better, as the reference's val_best */
        if (val_acc > f->best_val) {
            f->best_val = val_acc;
            f->best_epoch = f->epoch;
            if (t->path[ELLE_TRAIN_PATH_BEST_MODEL])
                ELLE_TRY(save_model(f, t->path[ELLE_TRAIN_PATH_BEST_MODEL], "best model"));
        }
    }
    double eval_time = now_s() - t_eval;

    elle__metrics_clear(&m, ELLE_TRAIN_EVENT_EPOCH);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_EPOCH, (double)f->epoch);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_STEP, (double)f->steps_done);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_SAMPLES, (double)samples);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_LOSS, loss_sum / (double)samples);
    if (want_acc)
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TRAIN_ACC, (double)correct / (double)samples);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_LR, lr0);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_MOMENTUM, m0);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_TIME, train_time);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_SAMPLES_PER_S,
                      train_time > 0 ? (double)samples / train_time : 0.0);
    if (f->test) {
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TEST_LOSS, test_loss);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TEST_ACC, test_acc);
    }
    if (f->val) {
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_VAL_LOSS, val_loss);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_VAL_ACC, val_acc);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_BEST_VAL_ACC, f->best_val);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_BEST_VAL_EPOCH, (double)f->best_epoch);
    }
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_EVAL_TIME, eval_time);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_TOTAL_EPOCHS, (double)f->epochs);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_TOTAL_STEPS, (double)f->total_batches);
    t->last_epoch = m;
    elle__progress_finish(&pb, &m);
    return report(f, &m, 1);
}

int elle_trainer_fit(elle_trainer *t, elle_dataset *train, elle_dataset *test, elle_dataset *val)
{
    ELLE_CHECK_ARG(t != NULL);
    ELLE_CHECK_ARG(train != NULL);
    fit f;
    memset(&f, 0, sizeof f);
    f.t = t;
    f.model = t->model;
    f.train = train;
    f.test = test;
    f.val = val;
    elle__metrics_clear(&t->last_epoch, 0);

    batch_stage stage = clean_stage;
    int rc = fit_setup(&f);
    for (f.epoch = 0; rc == ELLE_OK && f.epoch < f.epochs; f.epoch++)
        rc = run_epoch(&f, stage);
    if (rc == ELLE_OK) {
        f.epoch = f.epochs - 1; /* for messages: the last epoch run */
        if (t->path[ELLE_TRAIN_PATH_FINAL_MODEL])
            rc = save_model(&f, t->path[ELLE_TRAIN_PATH_FINAL_MODEL], "final model");
    }
    elle_model_set_training(f.model, 0);
    write_end(&f, rc);
    fit_release(&f);
    return rc;
}
