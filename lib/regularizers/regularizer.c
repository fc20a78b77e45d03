/*
 * elle_regularizer: the handle, its parameters, the ELLE-A timing, the
 * random stream, statistics and checkpoint state, and the host API
 * boundary. The kinds (elle.c, ...) only compute a value and its gradient;
 * see regularizer_internal.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "nn/model_internal.h"
#include "regularizers/regularizer_internal.h"

/* Indexed by elle_regularizer_kind. */
static const elle__regularizer_ops *const kinds[] = {
    &elle__reg_elle_ops, &elle__reg_gradalign_ops, &elle__reg_llr_ops, &elle__reg_cure_ops,
    &elle__reg_gat_ops,
};
#define N_KINDS ((int)(sizeof kinds / sizeof kinds[0]))

static const elle__regularizer_ops *kind_ops(int kind)
{
    return (kind >= 0 && kind < N_KINDS) ? kinds[kind] : NULL;
}

/* Parameters the ELLE-A mechanism reads, copied into r->adapt whenever one
 * changes (every kind's table has them). */
static void sync_adaptive(elle_regularizer *r)
{
    elle__adaptive *a = &r->adapt;
    a->enabled = r->p[ELLE_REGULARIZER_PARAM_ADAPTIVE] != 0.0;
    a->lambda_const = r->p[ELLE_REGULARIZER_PARAM_LAMBDA];
    a->lambda_max = r->p[ELLE_REGULARIZER_PARAM_LAMBDA_MAX];
    a->decay = r->p[ELLE_REGULARIZER_PARAM_DECAY];
    a->sensitivity = r->p[ELLE_REGULARIZER_PARAM_SENSITIVITY];
    a->window = (int64_t)r->p[ELLE_REGULARIZER_PARAM_WINDOW];
    a->lambda_start = r->p[ELLE_REGULARIZER_PARAM_LAMBDA_START];
}

uint64_t elle__regularizer_stream_key(const elle_regularizer *r)
{
    /* seeds are < 2^53 (the parameter bound), so the top 11 bits are free */
    return (uint64_t)r->p[ELLE_REGULARIZER_PARAM_SEED] | ((uint64_t)(0x400 + r->kind) << 53);
}

/* ---- lifetime ---------------------------------------------------------------------- */

int elle_regularizer_create(elle_regularizer **out, elle_model *model, elle_regularizer_kind kind)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(model != NULL);
    const elle__regularizer_ops *ops = kind_ops((int)kind);
    if (!ops)
        ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_create: unknown kind %d", (int)kind);
    elle_regularizer *r = calloc(1, sizeof *r);
    if (!r)
        ELLE_FAIL(ELLE_ENOMEM, "elle_regularizer_create: out of memory");
    r->model = model;
    r->ops = ops;
    r->kind = (int)kind;
    for (size_t i = 0; i < ops->n_params; i++)
        r->p[ops->params[i].id] = ops->params[i].default_value;
    elle__adaptive_init(&r->adapt);
    sync_adaptive(r);
    if (ops->attach) {
        int rc = ops->attach(r);
        if (rc < 0) {
            elle__adaptive_release(&r->adapt);
            free(r);
            elle__error_prefix("elle_regularizer_create(%s)", ops->name);
            return rc;
        }
    }
    *out = r;
    return ELLE_OK;
}

static void free_staging(elle_regularizer *r)
{
    elle__backend *be = elle__model_backend(r->model);
    be->ops->free(be, r->stage_x);
    be->ops->free(be, r->stage_adv);
    be->ops->free(be, r->stage_y);
    r->stage_x = r->stage_adv = NULL;
    r->stage_y = NULL;
    r->stage_n = 0;
}

void elle_regularizer_free(elle_regularizer *reg)
{
    if (!reg)
        return;
    if (reg->ops->release)
        reg->ops->release(reg);
    free_staging(reg);
    elle__adaptive_release(&reg->adapt);
    free(reg);
}

int elle_regularizer_get_kind(const elle_regularizer *reg)
{
    return reg ? reg->kind : -1;
}

elle_model *elle_regularizer_get_model(const elle_regularizer *reg)
{
    return reg ? reg->model : NULL;
}

const char *elle_regularizer_kind_name(elle_regularizer_kind kind)
{
    const elle__regularizer_ops *ops = kind_ops((int)kind);
    return ops ? ops->name : NULL;
}

int elle_regularizer_kind_from_name(const char *name, elle_regularizer_kind *out)
{
    ELLE_CHECK_ARG(name != NULL);
    ELLE_CHECK_ARG(out != NULL);
    for (int k = 0; k < N_KINDS; k++) {
        if (strcmp(kinds[k]->name, name) == 0) {
            *out = (elle_regularizer_kind)k;
            return ELLE_OK;
        }
    }
    ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_kind_from_name: unknown regularizer '%s' (known: "
                           "elle, gradalign, llr, cure, gat)", name);
}

/* ---- parameters ------------------------------------------------------------------- */

int elle_regularizer_set_param(elle_regularizer *reg, elle_regularizer_param param, double value)
{
    ELLE_CHECK_ARG(reg != NULL);
    const elle__regularizer_ops *ops = reg->ops;
    if (!elle__param_find(ops->params, ops->n_params, (int)param)) {
        const char *name = elle_regularizer_param_name(param);
        ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_set_param: regularizer '%s' has no parameter %d "
                               "(%s)", ops->name, (int)param, name ? name : "unknown");
    }
    ELLE_TRY(elle__param_check(ops->params, ops->n_params, (int)param, value,
                               "elle_regularizer_set_param"));
    if (ops->check_param)
        ELLE_TRY(ops->check_param(reg, (int)param, value));
    reg->p[param] = value;
    /* a new seed is a new stream, from its start (as elle_attack's seed) */
    if (param == ELLE_REGULARIZER_PARAM_SEED)
        reg->counter = 0;
    sync_adaptive(reg);
    return ELLE_OK;
}

int elle_regularizer_get_param(const elle_regularizer *reg, elle_regularizer_param param,
                               double *out)
{
    ELLE_CHECK_ARG(reg != NULL);
    ELLE_CHECK_ARG(out != NULL);
    if (!elle__param_find(reg->ops->params, reg->ops->n_params, (int)param))
        ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_get_param: regularizer '%s' has no parameter %d",
                  reg->ops->name, (int)param);
    *out = reg->p[param];
    return ELLE_OK;
}

int elle_regularizer_param_bounds(elle_regularizer_kind kind, elle_regularizer_param param,
                                  double *lo, double *hi)
{
    const elle__regularizer_ops *ops = kind_ops((int)kind);
    if (!ops)
        ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_param_bounds: unknown kind %d", (int)kind);
    const elle__param_spec *s = elle__param_find(ops->params, ops->n_params, (int)param);
    if (!s)
        ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_param_bounds: regularizer '%s' has no "
                               "parameter %d", ops->name, (int)param);
    if (lo)
        *lo = s->lo;
    if (hi)
        *hi = s->hi;
    return ELLE_OK;
}

/* Names are shared across kinds: the first table that knows one answers. */
int elle_regularizer_param_from_name(const char *name, elle_regularizer_param *out)
{
    ELLE_CHECK_ARG(name != NULL);
    ELLE_CHECK_ARG(out != NULL);
    for (int k = 0; k < N_KINDS; k++) {
        for (size_t i = 0; i < kinds[k]->n_params; i++) {
            if (strcmp(kinds[k]->params[i].name, name) == 0) {
                *out = (elle_regularizer_param)kinds[k]->params[i].id;
                return ELLE_OK;
            }
        }
    }
    ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_param_from_name: unknown parameter name '%s'", name);
}

const char *elle_regularizer_param_name(elle_regularizer_param param)
{
    for (int k = 0; k < N_KINDS; k++) {
        const elle__param_spec *s = elle__param_find(kinds[k]->params, kinds[k]->n_params,
                                                     (int)param);
        if (s)
            return s->name;
    }
    return NULL;
}

int elle_regularizer_default_lambda(elle_regularizer_kind kind, double eps, int adaptive,
                                    double *out)
{
    ELLE_CHECK_ARG(out != NULL);
    if (!kind_ops((int)kind))
        ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_default_lambda: unknown kind %d", (int)kind);
    if (!(eps >= 0.0 && eps <= 1.0))
        ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_default_lambda: eps = %g outside [0, 1]", eps);
    /* the CIFAR-10 scripts (spec/reference-implementations.md §1.4, §2.5-2.7);
     * they use whole multiples of 1/255, the slack absorbs the rounding of
     * eps = k/255 */
    double k = eps * 255.0;
    switch (kind) {
    case ELLE_REGULARIZER_GRADALIGN:
        /* GradAlign's log-linear rule; the ELLE repo's script caps it at 2.0 */
        *out = k <= 16.0 + 1e-6 ? 0.02 * pow(10.0, k / 8.0) : 2.0;
        return ELLE_OK;
    case ELLE_REGULARIZER_LLR: {
        /* run_LLR_cifar10.sh: lambda_max at eps = 10, 12, ..., 26 */
        static const double table[9] = {500, 500, 1000, 500, 1000, 500, 2000, 5000, 2000};
        if (k <= 8.0 + 1e-6) {
            *out = 200.0;
        } else {
            int even = 2 * (int)ceil(k / 2.0 - 1e-6); /* 10 .. */
            int idx = (even - 10) / 2;
            *out = table[idx > 8 ? 8 : idx];
        }
        return ELLE_OK;
    }
    case ELLE_REGULARIZER_CURE:
        *out = k <= 8.0 + 1e-6 ? 1000.0 : 50000.0;
        return ELLE_OK;
    case ELLE_REGULARIZER_GAT:
        *out = 10.0;
        return ELLE_OK;
    default:
        break;
    }
    if (adaptive)
        *out = 4000.0;
    else if (k <= 8.0 + 1e-6)
        *out = 1000.0;
    else if (k <= 20.0 + 1e-6)
        *out = 5000.0;
    else
        *out = 10000.0;
    return ELLE_OK;
}

/* ---- the step ------------------------------------------------------------------------ */

int64_t elle__regularizer_forward_samples(const elle_regularizer *r, int64_t n)
{
    return r->ops->forward_samples(r, n);
}

int64_t elle_regularizer_batch_samples(const elle_regularizer *reg, int64_t n)
{
    if (!reg || n < 1)
        return -1;
    return elle__regularizer_forward_samples(reg, n);
}

static int observe(elle_regularizer *r, double value)
{
    ELLE_TRY(elle__adaptive_observe(&r->adapt, value, NULL));
    r->last_value = value;
    return ELLE_OK;
}

/* The batch must fit the model's reservation in one forward. */
static int check_reserve(const elle_regularizer *r, int64_t n, const char *who)
{
    int64_t need = elle__regularizer_forward_samples(r, n);
    int64_t have = elle__model_max_batch(r->model);
    if (have == 0)
        ELLE_FAIL(ELLE_ESTATE, "%s: call elle_model_reserve(model, %lld) first (regularizer "
                               "'%s' forwards %lld samples for a batch of %lld)",
                  who, (long long)need, r->ops->name, (long long)need, (long long)n);
    if (need > have)
        ELLE_FAIL(ELLE_ESHAPE, "%s: regularizer '%s' forwards its %lld points per image as one "
                               "batch of %lld x %lld = %lld samples, but the model is reserved "
                               "for %lld; call elle_model_reserve(model, %lld)",
                  who, r->ops->name, (long long)(need / n), (long long)(need / n), (long long)n,
                  (long long)need, (long long)have, (long long)need);
    return ELLE_OK;
}

/* value -> [observe, lag 0] -> backward(lambda) -> [observe, lag 1]: the one
 * place where the ELLE-A timing lives. */
static int run_step(elle_regularizer *r, const float *x, const int32_t *y, const float *x_adv,
                    int64_t n, double *value_out, const char *who)
{
    double value = 0.0;
    int rc = r->ops->value(r, x, y, x_adv, n, &value);
    if (rc < 0) {
        elle__error_prefix("%s(%s)", who, r->ops->name);
        return rc;
    }
    if (!isfinite(value))
        ELLE_FAIL(ELLE_ENUMERIC, "%s(%s): the regularizer's value is %g", who, r->ops->name,
                  value);
    int lag = r->p[ELLE_REGULARIZER_PARAM_LAMBDA_LAG] != 0.0;
    if (!lag)
        ELLE_TRY(observe(r, value));
    double lambda = elle__adaptive_lambda(&r->adapt);
    if (lambda != 0.0) {
        rc = r->ops->backward(r, lambda);
        if (rc < 0) {
            elle__error_prefix("%s(%s): backward", who, r->ops->name);
            return rc;
        }
    }
    r->last_lambda = lambda;
    if (lag)
        ELLE_TRY(observe(r, value));
    if (value_out)
        *value_out = value;
    return ELLE_OK;
}

int elle__regularizer_apply_dev(elle_regularizer *r, const float *x, const int32_t *y,
                                const float *x_adv, int64_t n, double *value_out)
{
    static const char who[] = "elle__regularizer_apply_dev";
    ELLE_CHECK_ARG(r != NULL);
    ELLE_CHECK_ARG(x != NULL);
    ELLE_CHECK_ARG(y != NULL);
    if (n < 1)
        ELLE_FAIL(ELLE_EINVAL, "%s: n = %lld, need n >= 1", who, (long long)n);
    int adv = r->ops->needs_adv(r);
    if (adv && !x_adv)
        ELLE_FAIL(ELLE_EINVAL, "%s: regularizer '%s' needs x_adv (%s)", who, r->ops->name,
                  r->kind == ELLE_REGULARIZER_ELLE ? "reuse_adv = 1" : "the attack's points");
    ELLE_TRY(check_reserve(r, n, who));
    return run_step(r, x, y, adv ? x_adv : NULL, n, value_out, who);
}

/* Grow the host-entry staging buffers to n images (backend memory). */
static int reserve_staging(elle_regularizer *r, int64_t n, int adv)
{
    if (n <= r->stage_n && (!adv || r->stage_adv))
        return ELLE_OK;
    elle__backend *be = elle__model_backend(r->model);
    int64_t cap = n > r->stage_n ? n : r->stage_n;
    size_t img = (size_t)cap * (size_t)elle__model_image_numel(r->model) * sizeof(float);
    void *px = NULL, *pa = NULL, *py = NULL;
    int rc = be->ops->alloc(be, img, &px);
    if (rc >= 0 && adv)
        rc = be->ops->alloc(be, img, &pa);
    if (rc >= 0)
        rc = be->ops->alloc(be, (size_t)cap * sizeof(int32_t), &py);
    if (rc < 0) {
        be->ops->free(be, px);
        be->ops->free(be, pa);
        elle__error_prefix("elle_regularizer_apply: staging a batch of %lld", (long long)cap);
        return rc;
    }
    free_staging(r);
    r->stage_x = px;
    r->stage_adv = pa;
    r->stage_y = py;
    r->stage_n = cap;
    return ELLE_OK;
}

int elle_regularizer_apply(elle_regularizer *reg, const float *x, const int32_t *y,
                           const float *x_adv, int64_t n, double *value_out)
{
    static const char who[] = "elle_regularizer_apply";
    ELLE_CHECK_ARG(reg != NULL);
    ELLE_CHECK_ARG(x != NULL);
    ELLE_CHECK_ARG(y != NULL);
    if (n < 1)
        ELLE_FAIL(ELLE_EINVAL, "%s: n = %lld, need n >= 1", who, (long long)n);
    int adv = reg->ops->needs_adv(reg);
    if (adv && !x_adv)
        ELLE_FAIL(ELLE_EINVAL, "%s: regularizer '%s' needs x_adv (the training attack's batch%s)",
                  who, reg->ops->name, reg->kind == ELLE_REGULARIZER_ELLE ? ", reuse_adv = 1" : "");
    ELLE_TRY(check_reserve(reg, n, who));
    int64_t d = elle__model_image_numel(reg->model);
    int64_t count = n * d;
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(x[i]))
            ELLE_FAIL(ELLE_EINVAL, "%s: x[%lld] = %g is not finite (sample %lld)", who,
                      (long long)i, (double)x[i], (long long)(i / d));
    if (adv)
        for (int64_t i = 0; i < count; i++)
            if (!isfinite(x_adv[i]))
                ELLE_FAIL(ELLE_EINVAL, "%s: x_adv[%lld] = %g is not finite (sample %lld)", who,
                          (long long)i, (double)x_adv[i], (long long)(i / d));
    int64_t k = elle_model_num_classes(reg->model);
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= k)
            ELLE_FAIL(ELLE_EINVAL, "%s: label y[%lld] = %d outside [0, %lld)", who, (long long)i,
                      (int)y[i], (long long)k);
    ELLE_TRY(reserve_staging(reg, n, adv));
    elle__backend *be = elle__model_backend(reg->model);
    ELLE_TRY(be->ops->copy_to_device(be, reg->stage_x, x, (size_t)count * sizeof(float)));
    ELLE_TRY(be->ops->copy_to_device(be, reg->stage_y, y, (size_t)n * sizeof(int32_t)));
    if (adv)
        ELLE_TRY(be->ops->copy_to_device(be, reg->stage_adv, x_adv,
                                         (size_t)count * sizeof(float)));
    return run_step(reg, reg->stage_x, reg->stage_y, adv ? reg->stage_adv : NULL, n, value_out,
                    who);
}

int elle_regularizer_observe(elle_regularizer *reg, double value)
{
    ELLE_CHECK_ARG(reg != NULL);
    if (!isfinite(value))
        ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_observe: value %g is not finite", value);
    return observe(reg, value);
}

int elle_regularizer_reset(elle_regularizer *reg)
{
    ELLE_CHECK_ARG(reg != NULL);
    elle__adaptive_reset(&reg->adapt);
    reg->last_value = 0.0;
    reg->last_lambda = 0.0;
    return ELLE_OK;
}

/* ---- statistics ---------------------------------------------------------------------- */

static const char *const stat_names[] = {
    NULL, "lambda", "applied_lambda", "value", "detections", "count", "mean", "std",
};
#define N_STATS ((int)(sizeof stat_names / sizeof stat_names[0]))

const char *elle_regularizer_stat_name(elle_regularizer_stat stat)
{
    return ((int)stat > 0 && (int)stat < N_STATS) ? stat_names[stat] : NULL;
}

int elle_regularizer_get_stat(const elle_regularizer *reg, elle_regularizer_stat stat,
                              double *out)
{
    ELLE_CHECK_ARG(reg != NULL);
    ELLE_CHECK_ARG(out != NULL);
    double mean, std;
    switch (stat) {
    case ELLE_REGULARIZER_STAT_LAMBDA: *out = elle__adaptive_lambda(&reg->adapt); return ELLE_OK;
    case ELLE_REGULARIZER_STAT_APPLIED_LAMBDA: *out = reg->last_lambda; return ELLE_OK;
    case ELLE_REGULARIZER_STAT_VALUE: *out = reg->last_value; return ELLE_OK;
    case ELLE_REGULARIZER_STAT_DETECTIONS: *out = (double)reg->adapt.detections; return ELLE_OK;
    case ELLE_REGULARIZER_STAT_COUNT: *out = (double)reg->adapt.count; return ELLE_OK;
    case ELLE_REGULARIZER_STAT_MEAN:
    case ELLE_REGULARIZER_STAT_STD:
        elle__adaptive_stats(&reg->adapt, &mean, &std);
        *out = stat == ELLE_REGULARIZER_STAT_MEAN ? mean : std;
        return ELLE_OK;
    }
    ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_get_stat: unknown statistic %d", (int)stat);
}

int elle_regularizer_get_rng_counter(const elle_regularizer *reg, uint64_t *out)
{
    ELLE_CHECK_ARG(reg != NULL);
    ELLE_CHECK_ARG(out != NULL);
    *out = reg->counter;
    return ELLE_OK;
}

int elle_regularizer_set_rng_counter(elle_regularizer *reg, uint64_t counter)
{
    ELLE_CHECK_ARG(reg != NULL);
    reg->counter = counter;
    return ELLE_OK;
}

/* ---- checkpoint state ------------------------------------------------------------------
 *
 *   0  magic "ELRS"             4 bytes
 *   4  format version (1)       u32
 *   8  kind                     u32
 *  12  reserved (0)             u32
 *  16  random counter           u64
 *  24  last value               f64
 *  32  last applied lambda      f64
 *  40  ELLE-A state             adaptive.c: lambda f64, detections u64, count u64,
 *                               count x f64 history
 * all little-endian.
 */
#define STATE_MAGIC "ELRS"
#define STATE_VERSION 1u
enum { STATE_HEADER = 40 };

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int64_t elle_regularizer_state_size(const elle_regularizer *reg)
{
    return reg ? (int64_t)(STATE_HEADER + elle__adaptive_state_bytes(&reg->adapt)) : -1;
}

int elle_regularizer_state_get(const elle_regularizer *reg, void *buf, size_t size)
{
    ELLE_CHECK_ARG(reg != NULL);
    ELLE_CHECK_ARG(buf != NULL);
    size_t need = (size_t)elle_regularizer_state_size(reg);
    if (size < need)
        ELLE_FAIL(ELLE_EINVAL, "elle_regularizer_state_get: buffer of %zu bytes, the state needs "
                               "%zu (elle_regularizer_state_size)", size, need);
    unsigned char *p = buf;
    memcpy(p, STATE_MAGIC, 4);
    put_u32(p + 4, STATE_VERSION);
    put_u32(p + 8, (uint32_t)reg->kind);
    put_u32(p + 12, 0);
    elle__reg_put_u64(p + 16, reg->counter);
    elle__reg_put_f64(p + 24, reg->last_value);
    elle__reg_put_f64(p + 32, reg->last_lambda);
    elle__adaptive_state_write(&reg->adapt, p + STATE_HEADER);
    return ELLE_OK;
}

int elle_regularizer_state_set(elle_regularizer *reg, const void *buf, size_t size)
{
    static const char who[] = "elle_regularizer_state_set";
    ELLE_CHECK_ARG(reg != NULL);
    ELLE_CHECK_ARG(buf != NULL);
    const unsigned char *p = buf;
    if (size < STATE_HEADER || memcmp(p, STATE_MAGIC, 4) != 0)
        ELLE_FAIL(ELLE_EFORMAT, "%s: not a regularizer state (%zu bytes, magic missing)", who,
                  size);
    uint32_t version = get_u32(p + 4);
    if (version != STATE_VERSION)
        ELLE_FAIL(ELLE_EVERSION, "%s: state format version %u, this library reads %u", who,
                  (unsigned)version, (unsigned)STATE_VERSION);
    uint32_t kind = get_u32(p + 8);
    if (kind != (uint32_t)reg->kind)
        ELLE_FAIL(ELLE_EFORMAT, "%s: the state is of regularizer kind %u ('%s'), this one is "
                                "'%s'", who, (unsigned)kind,
                  kind_ops((int)kind) ? kind_ops((int)kind)->name : "unknown", reg->ops->name);
    double last_value = elle__reg_get_f64(p + 24);
    double last_lambda = elle__reg_get_f64(p + 32);
    if (!isfinite(last_value) || !isfinite(last_lambda))
        ELLE_FAIL(ELLE_EFORMAT, "%s: the state holds a non-finite value (%g) or lambda (%g)", who,
                  last_value, last_lambda);
    /* the adaptive part checks itself completely before it changes anything */
    ELLE_TRY(elle__adaptive_state_read(&reg->adapt, p + STATE_HEADER, size - STATE_HEADER, who));
    reg->counter = elle__reg_get_u64(p + 16);
    reg->last_value = last_value;
    reg->last_lambda = last_lambda;
    return ELLE_OK;
}

/* ---- shared by the input-gradient kinds ---------------------------------------------- */

int elle__reg_buf_grow(elle_regularizer *r, elle__reg_buf *b, size_t bytes)
{
    if (bytes <= b->bytes)
        return ELLE_OK;
    void *p = NULL;
    if (b->dev) {
        elle__backend *be = elle__model_backend(r->model);
        ELLE_TRY(be->ops->alloc(be, bytes, &p));
        be->ops->free(be, b->p);
    } else {
        p = malloc(bytes);
        if (!p)
            ELLE_FAIL(ELLE_ENOMEM, "regularizer '%s': out of memory for %zu bytes of scratch",
                      r->ops->name, bytes);
        free(b->p);
    }
    b->p = p;
    b->bytes = bytes;
    return ELLE_OK;
}

void elle__reg_buf_release(elle_regularizer *r, elle__reg_buf *b)
{
    if (b->dev) {
        elle__backend *be = elle__model_backend(r->model);
        be->ops->free(be, b->p);
    } else {
        free(b->p);
    }
    b->p = NULL;
    b->bytes = 0;
}

int elle__reg_attach_second_order(elle_regularizer *r)
{
    /* sticky on the model: kept after the regularizer is freed (another
     * regularizer on the same model may need it; dropping it would also
     * re-reserve the model under the caller) */
    return elle__model_set_second_order(r->model, 1);
}

int elle__reg_input_grad(elle_regularizer *r, const float *x, const int32_t *y, int64_t n,
                         float coef, float *dx, float *loss_host)
{
    elle_model *m = r->model;
    elle__net *net = elle__model_net(m);
    elle__backend *be = net->be;
    ELLE_TRY(elle__model_forward_dev(m, x, y, n, net->loss));
    ELLE_TRY(be->ops->fill(be, n, coef, net->coef));
    ELLE_TRY(elle__model_backward_dev(m, n, net->coef, 0, dx));
    if (loss_host) {
        ELLE_TRY(be->ops->copy_to_host(be, loss_host, net->loss, (size_t)n * sizeof(float)));
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(loss_host[i]))
                ELLE_FAIL(ELLE_ENUMERIC, "the loss of sample %lld is %g", (long long)i,
                          (double)loss_host[i]);
    }
    return ELLE_OK;
}

int elle__reg_host_copy(elle_regularizer *r, elle__reg_buf *host, const float *src,
                        int64_t count)
{
    ELLE_TRY(elle__reg_buf_grow(r, host, (size_t)count * sizeof(float)));
    elle__backend *be = elle__model_backend(r->model);
    return be->ops->copy_to_host(be, host->p, src, (size_t)count * sizeof(float));
}

int elle__reg_stats_save(elle_regularizer *r, elle__reg_stats *st)
{
    elle__net *net = elle__model_net(r->model);
    elle__backend *be = net->be;
    st->buffers.dev = 1;
    if (net->buffer_bytes) {
        ELLE_TRY(elle__reg_buf_grow(r, &st->buffers, net->buffer_bytes));
        ELLE_TRY(be->ops->copy(be, st->buffers.p, net->buffers.base, net->buffer_bytes));
    }
    ELLE_TRY(elle__reg_buf_grow(r, &st->counters, (size_t)(net->n_states + 1) * sizeof(int64_t)));
    int64_t *c = st->counters.p;
    for (int64_t i = 0; i < net->n_states; i++)
        c[i] = net->states[i].counter;
    return ELLE_OK;
}

int elle__reg_stats_restore(elle_regularizer *r, elle__reg_stats *st)
{
    elle__net *net = elle__model_net(r->model);
    elle__backend *be = net->be;
    if (net->buffer_bytes)
        ELLE_TRY(be->ops->copy(be, net->buffers.base, st->buffers.p, net->buffer_bytes));
    const int64_t *c = st->counters.p;
    for (int64_t i = 0; i < net->n_states; i++)
        net->states[i].counter = c[i];
    return ELLE_OK;
}

void elle__reg_stats_release(elle_regularizer *r, elle__reg_stats *st)
{
    st->buffers.dev = 1;
    elle__reg_buf_release(r, &st->buffers);
    elle__reg_buf_release(r, &st->counters);
}
