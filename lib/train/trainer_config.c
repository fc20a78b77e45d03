/*
 * The trainer handle: creation, parameters, output paths and callbacks.
 * The training loop itself is in trainer.c.
 */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/params.h"
#include "train/train_internal.h"

#define AUTO (-1.0)

static const elle__param_spec train_params[] = {
    {ELLE_TRAIN_PARAM_EPOCHS, "epochs", 1.0, 1e6, 1, 30},
    {ELLE_TRAIN_PARAM_BATCH_SIZE, "batch_size", 1.0, 16777216.0, 1, 128},
    {ELLE_TRAIN_PARAM_EVAL_BATCH_SIZE, "eval_batch_size", 0.0, 16777216.0, 1, 0},
    {ELLE_TRAIN_PARAM_LR, "lr", AUTO, 3.4e38, 0, AUTO},
    {ELLE_TRAIN_PARAM_SCHEDULE, "schedule", 0.0, 3.0, 1, ELLE_SCHEDULE_SHORT},
    {ELLE_TRAIN_PARAM_MOMENTUM, "momentum", AUTO, 1.0, 0, AUTO},
    {ELLE_TRAIN_PARAM_BASE_MOMENTUM, "base_momentum", AUTO, 1.0, 0, AUTO},
    {ELLE_TRAIN_PARAM_CYCLE_MOMENTUM, "cycle_momentum", AUTO, 1.0, 1, AUTO},
    {ELLE_TRAIN_PARAM_UP_FRACTION, "up_fraction", AUTO, 1.0, 0, AUTO},
    {ELLE_TRAIN_PARAM_WEIGHT_DECAY, "weight_decay", 0.0, 10.0, 0, 5e-4},
    {ELLE_TRAIN_PARAM_NESTEROV, "nesterov", 0.0, 1.0, 1, 0},
    {ELLE_TRAIN_PARAM_STEPS_PER_BATCH, "steps_per_batch", 1.0, 2.0, 1, 1},
    {ELLE_TRAIN_PARAM_SEED, "seed", 0.0, 9007199254740991.0, 1, 0},
    {ELLE_TRAIN_PARAM_SHUFFLE, "shuffle", 0.0, 1.0, 1, 1},
    {ELLE_TRAIN_PARAM_TRAIN_ACC, "train_acc", 0.0, 1.0, 1, 1},
    {ELLE_TRAIN_PARAM_LOG_EVERY, "log_every", 0.0, 1e9, 1, 0},
    {ELLE_TRAIN_PARAM_PROGRESS, "progress", 0.0, 1.0, 1, 0},
    {ELLE_TRAIN_PARAM_EXTRA_CLEAN_FORWARD, "extra_clean_forward", 0.0, 1.0, 1, 0},
    {ELLE_TRAIN_PARAM_PGD_TEST_N, "pgd_test_n", 0.0, 2147483647.0, 1, 1000},
    {ELLE_TRAIN_PARAM_PGD_VAL, "pgd_val", 0.0, 1.0, 1, 1},
    {ELLE_TRAIN_PARAM_CO_DROP, "co_drop", 0.0, 1.0, 0, 0.5},
    {ELLE_TRAIN_PARAM_CO_K, "co_k", 0.0, 1e6, 0, 2},
};
#define N_SPECS (sizeof train_params / sizeof train_params[0])

static const char *const path_names[ELLE__TRAIN_N_PATHS] = {
    [ELLE_TRAIN_PATH_FINAL_MODEL] = "final_model",
    [ELLE_TRAIN_PATH_BEST_MODEL] = "best_model",
    [ELLE_TRAIN_PATH_LOG] = "log",
};

int elle_trainer_create(elle_trainer **out, elle_model *model)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(model != NULL);
    elle_trainer *t = calloc(1, sizeof *t);
    if (!t)
        ELLE_FAIL(ELLE_ENOMEM, "elle_trainer_create: out of memory");
    t->model = model;
    for (size_t i = 0; i < N_SPECS; i++)
        t->p[train_params[i].id] = train_params[i].default_value;
    int rc = elle_optimizer_create_sgd(&t->opt, model);
    if (rc < 0) {
        elle__error_prefix("elle_trainer_create");
        free(t);
        return rc;
    }
    *out = t;
    return ELLE_OK;
}

void elle_trainer_free(elle_trainer *t)
{
    if (!t)
        return;
    elle_optimizer_free(t->opt);
    for (int i = 0; i < ELLE__TRAIN_N_PATHS; i++)
        free(t->path[i]);
    free(t->regs);
    free(t);
}

static int is_auto_param(int id)
{
    return id == ELLE_TRAIN_PARAM_LR || id == ELLE_TRAIN_PARAM_MOMENTUM ||
           id == ELLE_TRAIN_PARAM_BASE_MOMENTUM || id == ELLE_TRAIN_PARAM_CYCLE_MOMENTUM ||
           id == ELLE_TRAIN_PARAM_UP_FRACTION;
}

int elle_trainer_set_param(elle_trainer *t, elle_train_param param, double value)
{
    ELLE_CHECK_ARG(t != NULL);
    ELLE_TRY(elle__param_check(train_params, N_SPECS, (int)param, value,
                               "elle_trainer_set_param"));
    if (is_auto_param((int)param) && value < 0.0 && value != AUTO)
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_set_param: parameter '%s' = %g: use -1 (auto) or a "
                               "value >= 0",
                  elle_trainer_param_name(param), value);
    t->p[param] = value;
    return ELLE_OK;
}

int elle_trainer_get_param(const elle_trainer *t, elle_train_param param, double *out)
{
    ELLE_CHECK_ARG(t != NULL);
    ELLE_CHECK_ARG(out != NULL);
    if (!elle__param_find(train_params, N_SPECS, (int)param))
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_get_param: unknown parameter %d", (int)param);
    *out = t->p[param];
    return ELLE_OK;
}

int elle_trainer_param_bounds(elle_train_param param, double *lo, double *hi)
{
    const elle__param_spec *s = elle__param_find(train_params, N_SPECS, (int)param);
    if (!s)
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_param_bounds: unknown parameter %d", (int)param);
    if (lo)
        *lo = s->lo;
    if (hi)
        *hi = s->hi;
    return ELLE_OK;
}

int elle_trainer_param_from_name(const char *name, elle_train_param *out)
{
    int id;
    ELLE_CHECK_ARG(out != NULL);
    ELLE_TRY(elle__param_lookup(train_params, N_SPECS, name, &id,
                                "elle_trainer_param_from_name"));
    *out = (elle_train_param)id;
    return ELLE_OK;
}

const char *elle_trainer_param_name(elle_train_param param)
{
    const elle__param_spec *s = elle__param_find(train_params, N_SPECS, (int)param);
    return s ? s->name : NULL;
}

static int path_known(int which)
{
    return which > 0 && which < ELLE__TRAIN_N_PATHS && path_names[which] != NULL;
}

int elle_trainer_set_path(elle_trainer *t, elle_train_path which, const char *path)
{
    ELLE_CHECK_ARG(t != NULL);
    if (!path_known((int)which))
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_set_path: unknown path kind %d", (int)which);
    char *copy = NULL;
    if (path && path[0]) {
        size_t n = strlen(path) + 1;
        copy = malloc(n);
        if (!copy)
            ELLE_FAIL(ELLE_ENOMEM, "elle_trainer_set_path: out of memory");
        memcpy(copy, path, n);
    }
    free(t->path[which]);
    t->path[which] = copy;
    return ELLE_OK;
}

const char *elle_trainer_get_path(const elle_trainer *t, elle_train_path which)
{
    if (!t || !path_known((int)which))
        return NULL;
    return t->path[which];
}

const char *elle_train_path_name(elle_train_path which)
{
    return path_known((int)which) ? path_names[which] : NULL;
}

int elle_train_path_from_name(const char *name, elle_train_path *out)
{
    ELLE_CHECK_ARG(name != NULL);
    ELLE_CHECK_ARG(out != NULL);
    for (int k = 1; k < ELLE__TRAIN_N_PATHS; k++) {
        if (path_names[k] && strcmp(path_names[k], name) == 0) {
            *out = (elle_train_path)k;
            return ELLE_OK;
        }
    }
    ELLE_FAIL(ELLE_EINVAL, "elle_train_path_from_name: unknown path kind '%s' (final_model, "
                           "best_model, log)",
              name);
}

int elle_trainer_set_callback(elle_trainer *t, elle_train_event event, elle_train_callback fn,
                              void *user_data)
{
    ELLE_CHECK_ARG(t != NULL);
    if (event != ELLE_TRAIN_EVENT_STEP && event != ELLE_TRAIN_EVENT_EPOCH)
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_set_callback: unknown event %d", (int)event);
    t->cb[event] = fn;
    t->cb_data[event] = fn ? user_data : NULL;
    return ELLE_OK;
}

const elle_train_metrics *elle_trainer_last_epoch(const elle_trainer *t)
{
    if (!t || t->last_epoch.event != ELLE_TRAIN_EVENT_EPOCH)
        return NULL;
    return &t->last_epoch;
}

/* ---- composition: the training attack, regularizers and the PGD monitor ---- */

int elle_trainer_set_attack(elle_trainer *t, elle_attack *attack)
{
    ELLE_CHECK_ARG(t != NULL);
    if (attack && elle_attack_get_model(attack) != t->model)
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_set_attack: the %s attack was created on another "
                               "model than the trainer's",
                  elle_attack_kind_name((elle_attack_kind)elle_attack_get_kind(attack)));
    /* the AutoAttack family (4 .. 9) runs on host arrays only */
    if (attack && elle_attack_get_kind(attack) > ELLE_ATTACK_PGD &&
        elle_attack_get_kind(attack) != ELLE_ATTACK_GAT)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "elle_trainer_set_attack: '%s' is an evaluation attack "
                                     "(AutoAttack family); training attacks are fgsm, rs-fgsm, "
                                     "n-fgsm, pgd and gat",
                  elle_attack_kind_name((elle_attack_kind)elle_attack_get_kind(attack)));
    t->attack = attack;
    return ELLE_OK;
}

elle_attack *elle_trainer_get_attack(const elle_trainer *t)
{
    return t ? t->attack : NULL;
}

int elle_trainer_add_regularizer(elle_trainer *t, elle_regularizer *reg)
{
    ELLE_CHECK_ARG(t != NULL);
    ELLE_CHECK_ARG(reg != NULL);
    const char *kind = elle_regularizer_kind_name(
        (elle_regularizer_kind)elle_regularizer_get_kind(reg));
    if (elle_regularizer_get_model(reg) != t->model)
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_add_regularizer: the %s regularizer was created on "
                               "another model than the trainer's",
                  kind);
    for (int i = 0; i < t->n_regs; i++)
        if (t->regs[i] == reg)
            ELLE_FAIL(ELLE_EINVAL, "elle_trainer_add_regularizer: this %s regularizer is "
                                   "already regularizer %d of the trainer",
                      kind, i);
    if (t->n_regs == t->cap_regs) {
        int cap = t->cap_regs ? 2 * t->cap_regs : 4;
        elle_regularizer **p = realloc(t->regs, (size_t)cap * sizeof *p);
        if (!p)
            ELLE_FAIL(ELLE_ENOMEM, "elle_trainer_add_regularizer: out of memory");
        t->regs = p;
        t->cap_regs = cap;
    }
    t->regs[t->n_regs++] = reg;
    return ELLE_OK;
}

int elle_trainer_num_regularizers(const elle_trainer *t)
{
    return t ? t->n_regs : -1;
}

int elle_trainer_clear_regularizers(elle_trainer *t)
{
    ELLE_CHECK_ARG(t != NULL);
    t->n_regs = 0;
    return ELLE_OK;
}

int elle_trainer_set_monitor_attack(elle_trainer *t, elle_attack *attack)
{
    ELLE_CHECK_ARG(t != NULL);
    if (attack && elle_attack_get_model(attack) != t->model)
        ELLE_FAIL(ELLE_EINVAL, "elle_trainer_set_monitor_attack: the %s attack was created on "
                               "another model than the trainer's",
                  elle_attack_kind_name((elle_attack_kind)elle_attack_get_kind(attack)));
    t->monitor = attack;
    return ELLE_OK;
}
