/*
 * elle_trainer_fit: the training loop.
 *
 *   for each epoch e:
 *       model in training mode
 *       for each batch b of the (shuffled, augmented) training set:
 *           zero the gradients
 *           stage (train_stage):
 *               x_adv = attack(x)                      (x without an attack)
 *               per-sample CE at x_adv, ACCUMULATE the gradient of their mean
 *               [train_acc: argmax of that forward's logits]
 *               each regularizer: elle_regularizer_apply(x, y, x_adv)
 *                                   ACCUMULATES lambda * grad R, runs ELLE-A
 *               [extra_clean_forward: one more training-mode forward of x]
 *           stop with ELLE_ENUMERIC if the loss is NaN or infinite
 *           steps_per_batch times: lr, momentum = schedule(step); optimizer step
 *           step metrics -> JSON line (log_every), step callback, progress bar
 *       evaluate (eval mode): clean loss and accuracy on the test and
 *           validation sets, the PGD monitor on pgd_test_n test images and
 *           on the validation set (pgd_val)
 *       save the best-validation model when its accuracy strictly improves
 *       CO flag; epoch metrics -> JSON line, epoch callback
 *   save the final model
 *
 * All the computing goes through the public API (elle.h): datasets, model,
 * attacks, regularizers, optimizer and schedule, so this file is a template
 * users can copy and adapt (STYLE.md §8.10). What it takes from the inside
 * is only the trainer's own plumbing: the struct, the metrics record and the
 * CO rules (train_internal.h), and elle__error_set / elle__error_prefix to
 * leave a message for elle_error_last() — a copy outside the library would
 * report its own way.
 *
 * Every stage runs in the model's training mode, so each forward — the
 * attack's, the training loss's, the regularizer's 3B forward and the extra
 * clean one — moves the BatchNorm running statistics once, in the
 * reference's order (spec/reference-implementations.md §1.3).
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

/* What one step's stage measured, for the step record. */
typedef struct step_out {
    int64_t correct;       /* argmax == y at the training points (want_acc) */
    int64_t clean_correct; /* the same on the clean batch (extra_clean_forward) */
    double reg_value;      /* first regularizer: its value R */
    double lambda;         /* the lambda that weighted this step's gradient */
    double reg_mean, reg_std; /* the statistics R was tested against */
    int alarm;             /* R > reg_mean + co_k * reg_std (elle__co_elin_alarm) */
} step_out;

/* Everything one fit uses; allocated in fit_setup, released in fit_release. */
typedef struct fit {
    elle_trainer *t;
    elle_model *model;
    elle_dataset *train, *test, *val;
    elle_schedule *sched;
    int64_t c, h, w, classes;
    int64_t batch, eval_batch, steps_per_batch, epochs, batches_per_epoch, total_batches;
    int want_acc, extra_clean;
    float *x;          /* (max(batch, eval_batch), C, H, W) */
    float *x_adv;      /* (batch, C, H, W) the attack's points (with an attack) */
    int32_t *y;        /* (max(batch, eval_batch)) */
    float *loss;       /* (batch) per-sample training losses */
    float *logits;     /* (max(batch, eval_batch), classes) */
    float *state_buf;  /* the largest state entry, for the finiteness check */
    FILE *log;
    int64_t steps_done; /* training steps (batches) completed in this fit */
    int64_t epoch;      /* the current epoch */
    double t_start;     /* now_s() when the fit started */
    step_out so;        /* the current step's stage results */
    /* the PGD monitor: the trainer's monitor attack, or own_monitor */
    elle_attack *monitor, *own_monitor;
    int64_t pgd_test_n; /* test images it runs on (0: off) */
    int pgd_val;        /* runs on the validation set */
    double best_val;    /* best validation accuracy by the criterion (-1 before) */
    int64_t best_epoch;
    elle__co_state co;  /* the co_flag rule */
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

/*
 * The "loss and gradient" stage of one training step: given the batch in
 * f->x / f->y (n samples), write the n per-sample training losses into
 * loss_out, ACCUMULATE the gradient of the objective — the mean loss plus
 * every regularizer — into the model's parameter gradients, which the loop
 * has zeroed, and leave what it measured in f->so. The model is in training
 * mode. This is the seam to change for another training method; the rest
 * of the loop (schedule, optimizer steps, NaN checks, evaluation, saving,
 * metrics) does not depend on it.
 */
typedef int (*batch_stage)(fit *f, int64_t n, float *loss_out);

static int train_stage(fit *f, int64_t n, float *loss_out)
{
    elle_trainer *t = f->t;
    step_out *so = &f->so;
    const float *xt = f->x; /* the training points */
    if (t->attack) {
        ELLE_TRY(elle_attack_perturb(t->attack, f->x, f->y, n, f->x_adv));
        xt = f->x_adv;
    }
    ELLE_TRY(elle_model_backward(f->model, xt, f->y, n, loss_out, NULL));
    if (f->want_acc) {
        /* the prediction at x_adv from the forward just run: no second pass */
        ELLE_TRY(elle_model_logits(f->model, n, f->logits));
        so->correct = count_correct(f->logits, f->y, n, f->classes);
    }
    /* a non-finite loss stops the loop before the update (it names the
     * step); the regularizers would only fail on it with another message */
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(loss_out[i]))
            return ELLE_OK;
    for (int r = 0; r < t->n_regs; r++) {
        elle_regularizer *reg = t->regs[r];
        double count = 0, value = 0;
        if (r == 0) {
            /* what this step's value is tested against: the history before it */
            ELLE_TRY(elle_regularizer_get_stat(reg, ELLE_REGULARIZER_STAT_COUNT, &count));
            ELLE_TRY(elle_regularizer_get_stat(reg, ELLE_REGULARIZER_STAT_MEAN, &so->reg_mean));
            ELLE_TRY(elle_regularizer_get_stat(reg, ELLE_REGULARIZER_STAT_STD, &so->reg_std));
        }
        ELLE_TRY(elle_regularizer_apply(reg, f->x, f->y, xt, n, &value));
        if (r == 0) {
            so->reg_value = value;
            ELLE_TRY(elle_regularizer_get_stat(reg, ELLE_REGULARIZER_STAT_APPLIED_LAMBDA,
                                               &so->lambda));
            so->alarm = elle__co_elin_alarm((int64_t)count, so->reg_mean, so->reg_std, value,
                                            t->p[ELLE_TRAIN_PARAM_CO_K]);
        }
    }
    if (f->extra_clean) {
        /* the reference's metric forward: training mode, so it also moves
         * the BatchNorm running statistics */
        ELLE_TRY(elle_model_forward(f->model, f->x, n, f->logits));
        so->clean_correct = count_correct(f->logits, f->y, n, f->classes);
    }
    return ELLE_OK;
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

/* {"kind": name, <param>: value, ...} of an attack, every parameter by name. */
static json_t *attack_json(const elle_attack *a)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = json_object_set_new(
        o, "kind", json_string(elle_attack_kind_name((elle_attack_kind)elle_attack_get_kind(a))));
    for (int id = 1; id < 64 && !bad; id++) {
        const char *name = elle_attack_param_name((elle_attack_param)id);
        double v;
        if (name && elle_attack_get_param(a, (elle_attack_param)id, &v) == ELLE_OK)
            bad = json_object_set_new(o, name, json_real(v));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The same for a regularizer: the parameters its kind has. */
static json_t *regularizer_json(const elle_regularizer *r)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    elle_regularizer_kind kind = (elle_regularizer_kind)elle_regularizer_get_kind(r);
    int bad = json_object_set_new(o, "kind", json_string(elle_regularizer_kind_name(kind)));
    for (int id = 1; id < 64 && !bad; id++) {
        const char *name = elle_regularizer_param_name((elle_regularizer_param)id);
        double v;
        if (!name || elle_regularizer_param_bounds(kind, (elle_regularizer_param)id, NULL,
                                                   NULL) != ELLE_OK)
            continue; /* a parameter of another kind */
        if (elle_regularizer_get_param(r, (elle_regularizer_param)id, &v) == ELLE_OK)
            bad = json_object_set_new(o, name, json_real(v));
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Parameters written as JSON reals (the others are counts and flags). */
static int param_is_real(int id)
{
    return id == ELLE_TRAIN_PARAM_LR || id == ELLE_TRAIN_PARAM_MOMENTUM ||
           id == ELLE_TRAIN_PARAM_BASE_MOMENTUM || id == ELLE_TRAIN_PARAM_UP_FRACTION ||
           id == ELLE_TRAIN_PARAM_WEIGHT_DECAY || id == ELLE_TRAIN_PARAM_CO_DROP ||
           id == ELLE_TRAIN_PARAM_CO_K;
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
        else if (v == floor(v) && fabs(v) < 9007199254740992.0 && !param_is_real(id))
            j = json_integer((json_int_t)v);
        else
            j = json_real(v);
        bad |= json_object_set_new(o, name, j);
    }
    /* the composition: training attack, regularizers, PGD monitor */
    bad |= json_object_set_new(o, "attack", t->attack ? attack_json(t->attack) : json_null());
    json_t *regs = json_array();
    bad |= regs == NULL;
    for (int r = 0; r < t->n_regs && !bad; r++)
        bad |= json_array_append_new(regs, regularizer_json(t->regs[r]));
    bad |= json_object_set_new(o, "regularizers", regs);
    bad |= json_object_set_new(o, "monitor", f->monitor ? attack_json(f->monitor) : json_null());
    bad |= json_object_set_new(o, "best_by",
                               f->val ? json_string(f->pgd_val ? "pgd_val_acc" : "val_acc")
                                      : json_null());
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

/* Robust accuracy of the PGD monitor on the first n samples of d (0: all),
 * correct / total, the model in eval mode (elle_attack_evaluate). */
static int evaluate_pgd(fit *f, elle_dataset *d, int64_t n, double *acc_out)
{
    int64_t robust = 0, total = 0;
    ELLE_TRY(with_context(f, elle_attack_evaluate(f->monitor, d, n, f->eval_batch, NULL, &robust,
                                                  &total)));
    *acc_out = total > 0 ? (double)robust / (double)total : 0.0;
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
    f->want_acc = p[ELLE_TRAIN_PARAM_TRAIN_ACC] != 0.0;
    f->extra_clean = p[ELLE_TRAIN_PARAM_EXTRA_CLEAN_FORWARD] != 0.0;
    elle__co_init(&f->co);

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

    /* the PGD monitor: the caller's, or PGD-20 at the training eps */
    f->monitor = t->monitor;
    int want_pgd_test = f->test && p[ELLE_TRAIN_PARAM_PGD_TEST_N] > 0;
    int want_pgd_val = f->val && p[ELLE_TRAIN_PARAM_PGD_VAL] != 0.0;
    if (!f->monitor && (want_pgd_test || want_pgd_val) && (t->attack || t->n_regs > 0)) {
        double eps;
        if (t->attack)
            ELLE_TRY(elle_attack_get_param(t->attack, ELLE_ATTACK_PARAM_EPS, &eps));
        else
            ELLE_TRY(elle_regularizer_get_param(t->regs[0], ELLE_REGULARIZER_PARAM_EPS, &eps));
        elle_attack *a = NULL;
        ELLE_TRY(elle_attack_create(&a, model, ELLE_ATTACK_PGD));
        f->own_monitor = a;
        ELLE_TRY(elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, eps));
        ELLE_TRY(elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 20));
        ELLE_TRY(elle_attack_set_param(a, ELLE_ATTACK_PARAM_ALPHA, eps / 8.0));
        ELLE_TRY(elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 1));
        ELLE_TRY(elle_attack_set_param(a, ELLE_ATTACK_PARAM_SEED, p[ELLE_TRAIN_PARAM_SEED]));
        f->monitor = a;
    }
    if (f->monitor) {
        int64_t ts = f->test ? elle_dataset_size(f->test) : 0;
        int64_t want = (int64_t)p[ELLE_TRAIN_PARAM_PGD_TEST_N];
        f->pgd_test_n = want_pgd_test ? (want < ts ? want : ts) : 0;
        f->pgd_val = want_pgd_val;
    }

    /* every buffer now, none inside the loop: the model holds the largest
     * batch of any stage (a regularizer's forward: 3B for ELLE) */
    int64_t nmax = f->batch > f->eval_batch ? f->batch : f->eval_batch;
    int64_t reserve = nmax;
    for (int r = 0; r < t->n_regs; r++) {
        int64_t need = elle_regularizer_batch_samples(t->regs[r], f->batch);
        if (need < 0)
            ELLE_FAIL(ELLE_EINVAL, "elle_trainer_fit: regularizer %d cannot say its batch size",
                      r);
        if (need > reserve)
            reserve = need;
    }
    ELLE_TRY(elle_model_reserve(model, reserve));
    int64_t largest = 1, count = elle_model_state_count(model);
    for (int64_t i = 0; i < count; i++) {
        int64_t d[4];
        ELLE_TRY(elle_model_state_info(model, i, NULL, NULL, NULL, d));
        if (d[0] * d[1] * d[2] * d[3] > largest)
            largest = d[0] * d[1] * d[2] * d[3];
    }
    ELLE_TRY(alloc_array((void **)&f->x, nmax * f->c * f->h * f->w, sizeof(float)));
    if (t->attack)
        ELLE_TRY(alloc_array((void **)&f->x_adv, f->batch * f->c * f->h * f->w, sizeof(float)));
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
    elle_attack_free(f->own_monitor);
    free(f->x);
    free(f->x_adv);
    free(f->y);
    free(f->loss);
    free(f->logits);
    free(f->state_buf);
}

/* ---- the loop ------------------------------------------------------------------------------ */

static int run_epoch(fit *f, batch_stage stage)
{
    elle_trainer *t = f->t;
    const int want_acc = f->want_acc, has_reg = t->n_regs > 0;
    const int64_t log_every = (int64_t)t->p[ELLE_TRAIN_PARAM_LOG_EVERY];
    double loss_sum = 0.0, lr0 = 0.0, m0 = 0.0;
    int64_t samples = 0, correct = 0, clean_correct = 0;
    /* the first regularizer over the epoch */
    double reg_sum = 0.0, lam_sum = 0.0, lam_min = INFINITY, lam_max = -INFINITY;
    double detections0 = 0.0, detections1 = 0.0, lambda_now = 0.0;
    int64_t alarms = 0;
    elle__progress pb;
    elle_train_metrics m;

    if (has_reg)
        ELLE_TRY(elle_regularizer_get_stat(t->regs[0], ELLE_REGULARIZER_STAT_DETECTIONS,
                                           &detections0));
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
        memset(&f->so, 0, sizeof f->so);
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
        const step_out *so = &f->so;
        loss_sum += batch_loss * (double)n;
        samples += n;
        correct += so->correct;
        clean_correct += so->clean_correct;
        if (has_reg) {
            reg_sum += so->reg_value;
            lam_sum += so->lambda;
            lam_min = so->lambda < lam_min ? so->lambda : lam_min;
            lam_max = so->lambda > lam_max ? so->lambda : lam_max;
            alarms += so->alarm;
        }

        elle__metrics_clear(&m, ELLE_TRAIN_EVENT_STEP);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_EPOCH, (double)f->epoch);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_STEP, (double)f->steps_done);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_BATCH, (double)b);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_SAMPLES, (double)n);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_LOSS, batch_loss);
        if (want_acc)
            elle__metrics_set(&m, ELLE_TRAIN_METRIC_TRAIN_ACC, (double)so->correct / (double)n);
        if (f->extra_clean)
            elle__metrics_set(&m, ELLE_TRAIN_METRIC_CLEAN_TRAIN_ACC,
                              (double)so->clean_correct / (double)n);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_LR, lr0);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_MOMENTUM, m0);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TIME, now_s() - t_step);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TOTAL_EPOCHS, (double)f->epochs);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TOTAL_STEPS, (double)f->total_batches);
        if (has_reg) {
            elle__metrics_set(&m, ELLE_TRAIN_METRIC_REG_VALUE, so->reg_value);
            elle__metrics_set(&m, ELLE_TRAIN_METRIC_LAMBDA, so->lambda);
            elle__metrics_set(&m, ELLE_TRAIN_METRIC_REG_MEAN, so->reg_mean);
            elle__metrics_set(&m, ELLE_TRAIN_METRIC_REG_STD, so->reg_std);
            elle__metrics_set(&m, ELLE_TRAIN_METRIC_ELIN_ALARMS, (double)so->alarm);
        }
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_WALL_TIME, now_s() - f->t_start);
        ELLE_TRY(report(f, &m, log_every > 0 && f->steps_done % log_every == 0));
        elle__progress_step(&pb, b + 1, batch_loss, lr0);
    }
    double train_time = now_s() - t_epoch;
    if (has_reg) {
        ELLE_TRY(elle_regularizer_get_stat(t->regs[0], ELLE_REGULARIZER_STAT_DETECTIONS,
                                           &detections1));
        ELLE_TRY(elle_regularizer_get_stat(t->regs[0], ELLE_REGULARIZER_STAT_LAMBDA,
                                           &lambda_now));
    }

    /* evaluation, eval mode */
    double t_eval = now_s(), test_loss = 0, test_acc = 0, val_loss = 0, val_acc = 0;
    double pgd_test = 0, pgd_val = 0;
    ELLE_TRY(with_context(f, elle_model_set_training(f->model, 0)));
    if (f->test)
        ELLE_TRY(evaluate(f, f->test, "test", &test_loss, &test_acc));
    if (f->pgd_test_n > 0)
        ELLE_TRY(evaluate_pgd(f, f->test, f->pgd_test_n, &pgd_test));
    if (f->val) {
        ELLE_TRY(evaluate(f, f->val, "validation", &val_loss, &val_acc));
        if (f->pgd_val)
            ELLE_TRY(evaluate_pgd(f, f->val, 0, &pgd_val));
        /* strictly better, as the reference's val_best (by PGD-20 there) */
        double crit = f->pgd_val ? pgd_val : val_acc;
        if (crit > f->best_val) {
            f->best_val = crit;
            f->best_epoch = f->epoch;
            if (t->path[ELLE_TRAIN_PATH_BEST_MODEL])
                ELLE_TRY(save_model(f, t->path[ELLE_TRAIN_PATH_BEST_MODEL], "best model"));
        }
    }
    double eval_time = now_s() - t_eval;
    double train_acc = samples > 0 ? (double)correct / (double)samples : 0.0;
    /* the CO flag needs a PGD accuracy (test, else validation) and the
     * training accuracy against the training attack */
    int have_pgd = f->pgd_test_n > 0 || f->pgd_val;
    int co_flag = 0;
    if (have_pgd && want_acc)
        co_flag = elle__co_epoch(&f->co, f->epoch, f->pgd_test_n > 0 ? pgd_test : pgd_val,
                                 train_acc, t->p[ELLE_TRAIN_PARAM_CO_DROP]);

    elle__metrics_clear(&m, ELLE_TRAIN_EVENT_EPOCH);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_EPOCH, (double)f->epoch);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_STEP, (double)f->steps_done);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_SAMPLES, (double)samples);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_LOSS, loss_sum / (double)samples);
    if (want_acc)
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TRAIN_ACC, train_acc);
    if (f->extra_clean)
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_CLEAN_TRAIN_ACC,
                          (double)clean_correct / (double)samples);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_LR, lr0);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_MOMENTUM, m0);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_TIME, train_time);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_SAMPLES_PER_S,
                      train_time > 0 ? (double)samples / train_time : 0.0);
    if (f->test) {
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TEST_LOSS, test_loss);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_TEST_ACC, test_acc);
    }
    if (f->pgd_test_n > 0)
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_PGD_TEST_ACC, pgd_test);
    if (f->val) {
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_VAL_LOSS, val_loss);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_VAL_ACC, val_acc);
        if (f->pgd_val)
            elle__metrics_set(&m, ELLE_TRAIN_METRIC_PGD_VAL_ACC, pgd_val);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_BEST_VAL_ACC, f->best_val);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_BEST_VAL_EPOCH, (double)f->best_epoch);
    }
    if (has_reg) {
        double steps = (double)f->batches_per_epoch;
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_REG_VALUE, reg_sum / steps);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_LAMBDA, lambda_now);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_LAMBDA_MIN, lam_min);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_LAMBDA_MEAN, lam_sum / steps);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_LAMBDA_MAX, lam_max);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_LAMBDA_RESETS, detections1 - detections0);
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_ELIN_ALARMS, (double)alarms);
    }
    if (have_pgd && want_acc)
        elle__metrics_set(&m, ELLE_TRAIN_METRIC_CO_FLAG, (double)co_flag);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_EVAL_TIME, eval_time);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_TOTAL_EPOCHS, (double)f->epochs);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_TOTAL_STEPS, (double)f->total_batches);
    elle__metrics_set(&m, ELLE_TRAIN_METRIC_WALL_TIME, now_s() - f->t_start);
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
    f.t_start = now_s();
    elle__metrics_clear(&t->last_epoch, 0);

    batch_stage stage = train_stage;
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
