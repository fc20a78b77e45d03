/*
 * Metrics records: what the trainer hands to callbacks and writes as JSON
 * lines. A record is a sparse map from the stable elle_train_metric ids to
 * doubles, read through accessors so the set can grow without changing any
 * struct a caller sees. The names double as the JSON keys.
 */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "train/train_internal.h"

static const char *const metric_names[ELLE__TRAIN_N_METRICS] = {
    [ELLE_TRAIN_METRIC_EPOCH] = "epoch",
    [ELLE_TRAIN_METRIC_STEP] = "step",
    [ELLE_TRAIN_METRIC_BATCH] = "batch",
    [ELLE_TRAIN_METRIC_SAMPLES] = "samples",
    [ELLE_TRAIN_METRIC_LOSS] = "loss",
    [ELLE_TRAIN_METRIC_TRAIN_ACC] = "train_acc",
    [ELLE_TRAIN_METRIC_LR] = "lr",
    [ELLE_TRAIN_METRIC_MOMENTUM] = "momentum",
    [ELLE_TRAIN_METRIC_TIME] = "time",
    [ELLE_TRAIN_METRIC_SAMPLES_PER_S] = "samples_per_s",
    [ELLE_TRAIN_METRIC_TEST_LOSS] = "test_loss",
    [ELLE_TRAIN_METRIC_TEST_ACC] = "test_acc",
    [ELLE_TRAIN_METRIC_VAL_LOSS] = "val_loss",
    [ELLE_TRAIN_METRIC_VAL_ACC] = "val_acc",
    [ELLE_TRAIN_METRIC_BEST_VAL_ACC] = "best_val_acc",
    [ELLE_TRAIN_METRIC_BEST_VAL_EPOCH] = "best_val_epoch",
    [ELLE_TRAIN_METRIC_EVAL_TIME] = "eval_time",
    [ELLE_TRAIN_METRIC_TOTAL_EPOCHS] = "total_epochs",
    [ELLE_TRAIN_METRIC_TOTAL_STEPS] = "total_steps",
    [ELLE_TRAIN_METRIC_PGD_TEST_ACC] = "pgd_test_acc",
    [ELLE_TRAIN_METRIC_PGD_VAL_ACC] = "pgd_val_acc",
    [ELLE_TRAIN_METRIC_CLEAN_TRAIN_ACC] = "clean_train_acc",
    [ELLE_TRAIN_METRIC_REG_VALUE] = "reg_value",
    [ELLE_TRAIN_METRIC_LAMBDA] = "lambda",
    [ELLE_TRAIN_METRIC_LAMBDA_MIN] = "lambda_min",
    [ELLE_TRAIN_METRIC_LAMBDA_MEAN] = "lambda_mean",
    [ELLE_TRAIN_METRIC_LAMBDA_MAX] = "lambda_max",
    [ELLE_TRAIN_METRIC_LAMBDA_RESETS] = "lambda_resets",
    [ELLE_TRAIN_METRIC_REG_MEAN] = "reg_mean",
    [ELLE_TRAIN_METRIC_REG_STD] = "reg_std",
    [ELLE_TRAIN_METRIC_ELIN_ALARMS] = "elin_alarms",
    [ELLE_TRAIN_METRIC_CO_FLAG] = "co_flag",
    [ELLE_TRAIN_METRIC_WALL_TIME] = "wall_time",
};

/* Metrics that count things: written to JSON as integers. */
static int metric_is_count(int key)
{
    switch (key) {
    case ELLE_TRAIN_METRIC_EPOCH:
    case ELLE_TRAIN_METRIC_STEP:
    case ELLE_TRAIN_METRIC_BATCH:
    case ELLE_TRAIN_METRIC_SAMPLES:
    case ELLE_TRAIN_METRIC_BEST_VAL_EPOCH:
    case ELLE_TRAIN_METRIC_TOTAL_EPOCHS:
    case ELLE_TRAIN_METRIC_TOTAL_STEPS:
    case ELLE_TRAIN_METRIC_LAMBDA_RESETS:
    case ELLE_TRAIN_METRIC_ELIN_ALARMS:
    case ELLE_TRAIN_METRIC_CO_FLAG:
        return 1;
    default:
        return 0;
    }
}

static int known(int key)
{
    return key > 0 && key < ELLE__TRAIN_N_METRICS && metric_names[key] != NULL;
}

const char *elle__train_event_name(int event)
{
    switch (event) {
    case ELLE_TRAIN_EVENT_STEP: return "step";
    case ELLE_TRAIN_EVENT_EPOCH: return "epoch";
    default: return NULL;
    }
}

void elle__metrics_clear(elle_train_metrics *m, elle_train_event event)
{
    memset(m, 0, sizeof *m);
    m->event = (int)event;
}

void elle__metrics_set(elle_train_metrics *m, elle_train_metric key, double value)
{
    if (!known((int)key))
        return;
    m->value[key] = value;
    m->has |= UINT64_C(1) << (unsigned)key;
}

json_t *elle__metrics_json(const elle_train_metrics *m)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = json_object_set_new(o, "event", json_string(elle__train_event_name(m->event)));
    for (int k = 1; k < ELLE__TRAIN_N_METRICS && !bad; k++) {
        if (!(m->has & (UINT64_C(1) << (unsigned)k)))
            continue;
        double v = m->value[k];
        json_t *j;
        if (!isfinite(v))
            j = json_null(); /* JSON has no NaN or infinity */
        else if (metric_is_count(k))
            j = json_integer((json_int_t)v);
        else
            j = json_real(v);
        bad = json_object_set_new(o, metric_names[k], j);
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- public accessors ------------------------------------------------------ */

int elle_train_metrics_event(const elle_train_metrics *m)
{
    return m ? m->event : -1;
}

int elle_train_metrics_has(const elle_train_metrics *m, elle_train_metric key)
{
    if (!m || !known((int)key))
        return 0;
    return (int)((m->has >> (unsigned)key) & 1u);
}

int elle_train_metrics_get(const elle_train_metrics *m, elle_train_metric key, double *out)
{
    ELLE_CHECK_ARG(m != NULL);
    ELLE_CHECK_ARG(out != NULL);
    if (!known((int)key)) {
        *out = NAN;
        ELLE_FAIL(ELLE_EINVAL, "elle_train_metrics_get: unknown metric %d", (int)key);
    }
    if (!elle_train_metrics_has(m, key)) {
        *out = NAN;
        ELLE_FAIL(ELLE_ESTATE, "elle_train_metrics_get: this %s record has no '%s'",
                  elle__train_event_name(m->event) ? elle__train_event_name(m->event) : "empty",
                  metric_names[key]);
    }
    *out = m->value[key];
    return ELLE_OK;
}

const char *elle_train_metric_name(elle_train_metric key)
{
    return known((int)key) ? metric_names[key] : NULL;
}

int elle_train_metric_from_name(const char *name, elle_train_metric *out)
{
    ELLE_CHECK_ARG(name != NULL);
    ELLE_CHECK_ARG(out != NULL);
    for (int k = 1; k < ELLE__TRAIN_N_METRICS; k++) {
        if (metric_names[k] && strcmp(metric_names[k], name) == 0) {
            *out = (elle_train_metric)k;
            return ELLE_OK;
        }
    }
    ELLE_FAIL(ELLE_EINVAL, "elle_train_metric_from_name: unknown metric '%s'", name);
}
