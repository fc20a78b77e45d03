/*
 * SGD with momentum and coupled weight decay (torch.optim.SGD, dampening 0).
 *
 * The model keeps its parameters and their gradients in two arenas of one
 * layout (lib/nn/net.h), so the whole update is one flat pass over
 * net->param_bytes / 4 floats: parameters, gradients and this optimizer's
 * momentum buffer, which is a third allocation of the same layout. The
 * alignment padding between parameter entries is zero in all three (backend
 * allocations are zero-filled, zero_grad clears whole arenas) and stays zero
 * under the update, so updating it is harmless and saves per-entry calls.
 *
 * The fused backend op sgd_update does it in one pass. A backend without it
 * gets the same update composed from scale and axpy (four or five passes; the
 * same values up to float rounding, since the terms are added in another
 * order).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/params.h"
#include "elle/optim.h"
#include "nn/model_internal.h"

struct elle_optimizer {
    elle_model *model;
    elle__net *net;   /* the model's network (arenas, states, backend) */
    float *buf;       /* momentum buffer, backend memory, net->param_bytes */
    double lr, momentum, weight_decay;
    int nesterov;
};

static const elle__param_spec sgd_params[] = {
    {ELLE_OPTIM_PARAM_LR, "lr", 0.0, 3.4e38, 0, 0.1},
    {ELLE_OPTIM_PARAM_MOMENTUM, "momentum", 0.0, 1.0, 0, 0.9},
    {ELLE_OPTIM_PARAM_WEIGHT_DECAY, "weight_decay", 0.0, 10.0, 0, 5e-4},
    {ELLE_OPTIM_PARAM_NESTEROV, "nesterov", 0.0, 1.0, 1, 0.0},
};
#define N_SGD_PARAMS (sizeof sgd_params / sizeof sgd_params[0])

int elle_optimizer_create_sgd(elle_optimizer **out, elle_model *model)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(model != NULL);
    elle_optimizer *o = calloc(1, sizeof *o);
    if (!o)
        ELLE_FAIL(ELLE_ENOMEM, "elle_optimizer_create_sgd: out of memory");
    o->model = model;
    o->net = elle__model_net(model);
    o->lr = elle__param_find(sgd_params, N_SGD_PARAMS, ELLE_OPTIM_PARAM_LR)->default_value;
    o->momentum =
        elle__param_find(sgd_params, N_SGD_PARAMS, ELLE_OPTIM_PARAM_MOMENTUM)->default_value;
    o->weight_decay =
        elle__param_find(sgd_params, N_SGD_PARAMS, ELLE_OPTIM_PARAM_WEIGHT_DECAY)->default_value;
    o->nesterov = 0;
    elle__backend *be = o->net->be;
    void *p = NULL;
    /* zero-filled by contract (backend.h: alloc), which is the PyTorch start */
    int rc = be->ops->alloc(be, o->net->param_bytes ? o->net->param_bytes : 64, &p);
    if (rc < 0) {
        elle__error_prefix("elle_optimizer_create_sgd: momentum buffer of %zu bytes",
                           o->net->param_bytes);
        free(o);
        return rc;
    }
    o->buf = p;
    *out = o;
    return ELLE_OK;
}

void elle_optimizer_free(elle_optimizer *opt)
{
    if (!opt)
        return;
    opt->net->be->ops->free(opt->net->be, opt->buf);
    free(opt);
}

const char *elle_optimizer_name(const elle_optimizer *opt)
{
    return opt ? "sgd" : NULL;
}

int elle_optimizer_set_param(elle_optimizer *opt, elle_optim_param param, double value)
{
    ELLE_CHECK_ARG(opt != NULL);
    ELLE_TRY(elle__param_check(sgd_params, N_SGD_PARAMS, (int)param, value,
                               "elle_optimizer_set_param"));
    switch (param) {
    case ELLE_OPTIM_PARAM_LR: opt->lr = value; break;
    case ELLE_OPTIM_PARAM_MOMENTUM: opt->momentum = value; break;
    case ELLE_OPTIM_PARAM_WEIGHT_DECAY: opt->weight_decay = value; break;
    case ELLE_OPTIM_PARAM_NESTEROV: opt->nesterov = (int)value; break;
    }
    return ELLE_OK;
}

int elle_optimizer_get_param(const elle_optimizer *opt, elle_optim_param param, double *out)
{
    ELLE_CHECK_ARG(opt != NULL);
    ELLE_CHECK_ARG(out != NULL);
    switch (param) {
    case ELLE_OPTIM_PARAM_LR: *out = opt->lr; return ELLE_OK;
    case ELLE_OPTIM_PARAM_MOMENTUM: *out = opt->momentum; return ELLE_OK;
    case ELLE_OPTIM_PARAM_WEIGHT_DECAY: *out = opt->weight_decay; return ELLE_OK;
    case ELLE_OPTIM_PARAM_NESTEROV: *out = opt->nesterov; return ELLE_OK;
    }
    ELLE_FAIL(ELLE_EINVAL, "elle_optimizer_get_param: unknown parameter %d", (int)param);
}

int elle_optimizer_param_bounds(elle_optim_param param, double *lo, double *hi)
{
    const elle__param_spec *s = elle__param_find(sgd_params, N_SGD_PARAMS, (int)param);
    if (!s)
        ELLE_FAIL(ELLE_EINVAL, "elle_optimizer_param_bounds: unknown parameter %d", (int)param);
    if (lo)
        *lo = s->lo;
    if (hi)
        *hi = s->hi;
    return ELLE_OK;
}

int elle_optimizer_param_from_name(const char *name, elle_optim_param *out)
{
    int id;
    ELLE_CHECK_ARG(out != NULL);
    ELLE_TRY(elle__param_lookup(sgd_params, N_SGD_PARAMS, name, &id,
                                "elle_optimizer_param_from_name"));
    *out = (elle_optim_param)id;
    return ELLE_OK;
}

const char *elle_optimizer_param_name(elle_optim_param param)
{
    const elle__param_spec *s = elle__param_find(sgd_params, N_SGD_PARAMS, (int)param);
    return s ? s->name : NULL;
}

/* The update composed from scale and axpy, for backends without sgd_update.
 * buf and (for nesterov) p take the terms one at a time; the gradient is
 * only read, so a second step reuses it unchanged. */
static int sgd_composed(elle__backend *be, int64_t n, float lr, float m, float wd, int nesterov,
                        float *p, const float *grad, float *buf)
{
    const elle__backend_ops *ops = be->ops;
    if (!ops->scale || !ops->axpy)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "elle_optimizer_step: backend '%s' has neither sgd_update "
                                     "nor scale and axpy", ops->name);
    ELLE_TRY(ops->scale(be, n, m, buf));            /* buf = m*buf               */
    ELLE_TRY(ops->axpy(be, n, 1.0f, grad, buf));    /*     + grad                */
    if (wd != 0.0f)
        ELLE_TRY(ops->axpy(be, n, wd, p, buf));     /*     + wd*p  (= m*buf + g) */
    if (!nesterov)
        return ops->axpy(be, n, -lr, buf, p);       /* p -= lr*buf               */
    /* p -= lr*(g + m*buf) = p*(1 - lr*wd) - lr*grad - lr*m*buf; buf already
     * holds the new value, which is what the wd term of g must not see, so
     * the decay is applied to p directly. */
    if (wd != 0.0f)
        ELLE_TRY(ops->scale(be, n, (float)(1.0 - (double)lr * (double)wd), p));
    ELLE_TRY(ops->axpy(be, n, -lr, grad, p));
    return ops->axpy(be, n, (float)(-(double)lr * (double)m), buf, p);
}

int elle_optimizer_step(elle_optimizer *opt)
{
    ELLE_CHECK_ARG(opt != NULL);
    elle__net *net = opt->net;
    elle__backend *be = net->be;
    int64_t n = (int64_t)(net->param_bytes / sizeof(float));
    if (n == 0)
        return ELLE_OK;
    float *p = (float *)net->params.base;
    const float *g = (const float *)net->grads.base;
    /* float, as PyTorch applies Python-float hyperparameters to float32 tensors */
    float lr = (float)opt->lr, m = (float)opt->momentum, wd = (float)opt->weight_decay;
    int rc;
    if (be->ops->sgd_update)
        rc = be->ops->sgd_update(be, n, lr, m, wd, opt->nesterov, p, g, opt->buf);
    else
        rc = sgd_composed(be, n, lr, m, wd, opt->nesterov, p, g, opt->buf);
    if (rc < 0)
        elle__error_prefix("elle_optimizer_step");
    return rc;
}

int elle_optimizer_zero_state(elle_optimizer *opt)
{
    ELLE_CHECK_ARG(opt != NULL);
    elle__backend *be = opt->net->be;
    return be->ops->memzero(be, opt->buf, opt->net->param_bytes);
}

int64_t elle_optimizer_state_size(const elle_optimizer *opt)
{
    return opt ? opt->net->num_params : -1;
}

int elle_optimizer_state_get(const elle_optimizer *opt, float *host_out)
{
    ELLE_CHECK_ARG(opt != NULL);
    ELLE_CHECK_ARG(host_out != NULL);
    const elle__net *net = opt->net;
    elle__backend *be = net->be;
    float *dst = host_out;
    for (int64_t i = 0; i < net->n_states; i++) {
        const elle__state *s = &net->states[i];
        if (s->kind != ELLE__STATE_PARAM)
            continue;
        ELLE_TRY(be->ops->copy_to_host(be, dst, (const char *)opt->buf + s->offset,
                                       (size_t)s->numel * sizeof(float)));
        dst += s->numel;
    }
    return ELLE_OK;
}

int elle_optimizer_state_set(elle_optimizer *opt, const float *host_in)
{
    ELLE_CHECK_ARG(opt != NULL);
    ELLE_CHECK_ARG(host_in != NULL);
    const elle__net *net = opt->net;
    elle__backend *be = net->be;
    /* check everything first so a bad state leaves the optimizer untouched */
    for (int64_t k = 0; k < net->num_params; k++)
        if (!isfinite(host_in[k]))
            ELLE_FAIL(ELLE_EINVAL, "elle_optimizer_state_set: value %lld is %g (not finite)",
                      (long long)k, (double)host_in[k]);
    const float *src = host_in;
    for (int64_t i = 0; i < net->n_states; i++) {
        const elle__state *s = &net->states[i];
        if (s->kind != ELLE__STATE_PARAM)
            continue;
        ELLE_TRY(be->ops->copy_to_device(be, (char *)opt->buf + s->offset, src,
                                         (size_t)s->numel * sizeof(float)));
        src += s->numel;
    }
    return ELLE_OK;
}
