/*
 * elle_model: the public face of a network (net.h). Host arrays cross the
 * API here and only here: images and labels are validated and copied into
 * the reserved input buffers, logits / losses / input gradients copied out.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/context.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "nn/model_internal.h"
#include "nn/models/models.h"

struct elle_model {
    elle_context *ctx;
    const elle__arch *arch;
    elle__net net;
    int64_t in_c, in_h, in_w;
};

int elle_model_create(elle_model **out, elle_context *ctx, const elle_model_config *cfg)
{
    ELLE_CHECK_ARG(out != NULL);
    ELLE_CHECK_ARG(ctx != NULL);
    ELLE_CHECK_ARG(cfg != NULL);
    int rc = ELLE_OK;
    elle_model *m = calloc(1, sizeof *m);
    if (!m)
        ELLE_FAIL(ELLE_ENOMEM, "elle_model_create: out of memory");
    m->ctx = ctx;
    m->arch = cfg->arch;
    m->in_c = ELLE__P(cfg, ELLE_MODEL_PARAM_IN_CHANNELS);
    m->in_h = ELLE__P(cfg, ELLE_MODEL_PARAM_IN_HEIGHT);
    m->in_w = ELLE__P(cfg, ELLE_MODEL_PARAM_IN_WIDTH);
    ELLE_TRY_GOTO(rc, elle__net_init(&m->net, &ctx->be, m->in_c, m->in_h, m->in_w));
    int x = 0;
    if (ELLE__P(cfg, ELLE_MODEL_PARAM_NORMALIZE)) {
        if (cfg->norm_channels != m->in_c) {
            rc = elle__error_set(ELLE_ESHAPE,
                                 "elle_model_create: %d normalisation constants for %lld input "
                                 "channels",
                                 cfg->norm_channels, (long long)m->in_c);
            goto cleanup;
        }
        ELLE_TRY_GOTO(rc, elle__net_normalize(&m->net, 0, cfg->norm_mean, cfg->norm_std, &x));
    }
    int logits;
    ELLE_TRY_GOTO(rc, cfg->arch->build(&m->net, cfg, x, &logits));
    ELLE_TRY_GOTO(rc, elle__net_finalize(&m->net, (uint64_t)cfg->p[ELLE_MODEL_PARAM_SEED]));
    ctx->live_children++;
    *out = m;
cleanup:
    if (rc < 0) {
        elle__error_prefix("elle_model_create(%s)", cfg->arch->name);
        elle__net_release(&m->net);
        free(m);
    }
    return rc;
}

void elle_model_free(elle_model *model)
{
    if (!model)
        return;
    model->ctx->live_children--;
    elle__net_release(&model->net);
    free(model);
}

int elle_model_reserve(elle_model *model, int64_t max_batch)
{
    ELLE_CHECK_ARG(model != NULL);
    if (max_batch < 1 || max_batch > (1 << 24))
        ELLE_FAIL(ELLE_EINVAL, "elle_model_reserve: max_batch = %lld outside [1, 2^24]",
                  (long long)max_batch);
    int rc = elle__net_reserve(&model->net, max_batch);
    if (rc < 0)
        elle__error_prefix("elle_model_reserve(%lld)", (long long)max_batch);
    return rc;
}

int elle_model_set_training(elle_model *model, int training)
{
    ELLE_CHECK_ARG(model != NULL);
    ELLE_CHECK_ARG(training == 0 || training == 1);
    model->net.training = training;
    return ELLE_OK;
}

int elle_model_training(const elle_model *model)
{
    return model ? model->net.training : -1;
}

/* Validate a batch and copy it (and labels) into the input buffers. */
static int load_batch(elle_model *m, const char *fn, const float *x, const int32_t *labels,
                      int64_t n)
{
    elle__net *net = &m->net;
    elle__backend *be = net->be;
    if (!x)
        ELLE_FAIL(ELLE_EINVAL, "%s: x is NULL", fn);
    if (n < 1)
        ELLE_FAIL(ELLE_EINVAL, "%s: n = %lld, need n >= 1", fn, (long long)n);
    if (net->max_batch == 0)
        ELLE_FAIL(ELLE_ESTATE, "%s: call elle_model_reserve first", fn);
    if (n > net->max_batch)
        ELLE_FAIL(ELLE_ESHAPE, "%s: batch of %lld exceeds the reserved %lld", fn, (long long)n,
                  (long long)net->max_batch);
    int64_t count = n * m->in_c * m->in_h * m->in_w;
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(x[i]))
            ELLE_FAIL(ELLE_EINVAL, "%s: x[%lld] = %g is not finite (sample %lld)", fn,
                      (long long)i, (double)x[i], (long long)(i / (count / n)));
    if (labels) {
        int64_t k = elle__net_num_classes(net);
        for (int64_t i = 0; i < n; i++)
            if (labels[i] < 0 || labels[i] >= k)
                ELLE_FAIL(ELLE_EINVAL, "%s: label[%lld] = %d outside [0, %lld)", fn, (long long)i,
                          (int)labels[i], (long long)k);
        ELLE_TRY(be->ops->copy_to_device(be, net->labels, labels, (size_t)n * sizeof(int32_t)));
    }
    elle__tensor in = elle__net_input(net, n);
    return be->ops->copy_to_device(be, in.data, x, (size_t)count * sizeof(float));
}

int elle_model_forward(elle_model *model, const float *x, int64_t n, float *logits_out)
{
    ELLE_CHECK_ARG(model != NULL);
    ELLE_CHECK_ARG(logits_out != NULL);
    elle__net *net = &model->net;
    ELLE_TRY(load_batch(model, "elle_model_forward", x, NULL, n));
    ELLE_TRY(elle__net_forward(net, n));
    elle__tensor z = elle__net_logits(net, n);
    return net->be->ops->copy_to_host(net->be, logits_out, z.data,
                                      (size_t)elle__tensor_numel(&z) * sizeof(float));
}

/* Forward, loss and backward of the batch-mean cross-entropy. */
static int loss_backward(elle_model *m, const char *fn, const float *x, const int32_t *labels,
                         int64_t n, int param_grads, float *dx_out, float *loss_out)
{
    elle__net *net = &m->net;
    elle__backend *be = net->be;
    if (!labels)
        ELLE_FAIL(ELLE_EINVAL, "%s: labels is NULL", fn);
    ELLE_TRY(load_batch(m, fn, x, labels, n));
    ELLE_TRY(elle__net_forward(net, n));
    ELLE_TRY(elle__net_loss(net, n));
    ELLE_TRY(be->ops->fill(be, n, 1.0f / (float)n, net->coef));
    ELLE_TRY(elle__net_backward(net, n, param_grads, dx_out != NULL));
    if (loss_out)
        ELLE_TRY(be->ops->copy_to_host(be, loss_out, net->loss, (size_t)n * sizeof(float)));
    if (dx_out) {
        elle__tensor g = elle__net_grad(net, 0, n);
        ELLE_TRY(be->ops->copy_to_host(be, dx_out, g.data,
                                       (size_t)elle__tensor_numel(&g) * sizeof(float)));
    }
    return ELLE_OK;
}

int elle_model_input_grad(elle_model *model, const float *x, const int32_t *labels, int64_t n,
                          float *dx_out, float *loss_out)
{
    ELLE_CHECK_ARG(model != NULL);
    ELLE_CHECK_ARG(dx_out != NULL);
    return loss_backward(model, "elle_model_input_grad", x, labels, n, 0, dx_out, loss_out);
}

int elle_model_backward(elle_model *model, const float *x, const int32_t *labels, int64_t n,
                        float *loss_out, float *dx_out)
{
    ELLE_CHECK_ARG(model != NULL);
    return loss_backward(model, "elle_model_backward", x, labels, n, 1, dx_out, loss_out);
}

int elle_model_zero_grad(elle_model *model)
{
    ELLE_CHECK_ARG(model != NULL);
    elle__net *net = &model->net;
    return net->be->ops->memzero(net->be, net->grads.base, net->param_bytes);
}

int elle_model_logits(const elle_model *model, int64_t n, float *logits_out)
{
    ELLE_CHECK_ARG(model != NULL);
    ELLE_CHECK_ARG(logits_out != NULL);
    const elle__net *net = &model->net;
    if (net->last_n == 0)
        ELLE_FAIL(ELLE_ESTATE, "elle_model_logits: no forward since the last elle_model_reserve");
    if (n < 1 || n > net->last_n)
        ELLE_FAIL(ELLE_EINVAL, "elle_model_logits: n = %lld outside [1, %lld] (the last "
                               "forward's batch)",
                  (long long)n, (long long)net->last_n);
    elle__net *mut = (elle__net *)&model->net; /* elle__net_logits only computes a view */
    elle__tensor z = elle__net_logits(mut, n);
    return net->be->ops->copy_to_host(net->be, logits_out, z.data,
                                      (size_t)elle__tensor_numel(&z) * sizeof(float));
}

int64_t elle_model_state_count(const elle_model *model)
{
    return model ? model->net.n_states : 0;
}

static int check_index(const elle_model *model, int64_t i, const char *fn)
{
    if (!model)
        ELLE_FAIL(ELLE_EINVAL, "%s: model is NULL", fn);
    if (i < 0 || i >= model->net.n_states)
        ELLE_FAIL(ELLE_EINVAL, "%s: state index %lld outside [0, %lld)", fn, (long long)i,
                  (long long)model->net.n_states);
    return ELLE_OK;
}

int elle_model_state_info(const elle_model *model, int64_t i, const char **name_out,
                          elle_state_kind *kind_out, int *ndim_out, int64_t dims_out[4])
{
    ELLE_TRY(check_index(model, i, "elle_model_state_info"));
    const elle__state *s = &model->net.states[i];
    if (name_out)
        *name_out = s->name;
    if (kind_out)
        *kind_out = (elle_state_kind)s->kind;
    if (ndim_out)
        *ndim_out = s->ndim;
    if (dims_out)
        for (int k = 0; k < 4; k++)
            dims_out[k] = s->dims[k];
    return ELLE_OK;
}

int elle_model_state_get(const elle_model *model, int64_t i, void *host_out)
{
    ELLE_TRY(check_index(model, i, "elle_model_state_get"));
    ELLE_CHECK_ARG(host_out != NULL);
    const elle__state *s = &model->net.states[i];
    if (s->kind == ELLE__STATE_COUNTER) {
        memcpy(host_out, &s->counter, sizeof(int64_t));
        return ELLE_OK;
    }
    elle__backend *be = model->net.be;
    return be->ops->copy_to_host(be, host_out, s->data, (size_t)s->numel * sizeof(float));
}

int elle_model_state_set(elle_model *model, int64_t i, const void *host_in)
{
    ELLE_TRY(check_index(model, i, "elle_model_state_set"));
    ELLE_CHECK_ARG(host_in != NULL);
    elle__state *s = &model->net.states[i];
    if (s->kind == ELLE__STATE_COUNTER) {
        memcpy(&s->counter, host_in, sizeof(int64_t));
        return ELLE_OK;
    }
    const float *v = host_in;
    for (int64_t k = 0; k < s->numel; k++)
        if (!isfinite(v[k]))
            ELLE_FAIL(ELLE_EINVAL, "elle_model_state_set: '%s'[%lld] = %g is not finite", s->name,
                      (long long)k, (double)v[k]);
    elle__backend *be = model->net.be;
    return be->ops->copy_to_device(be, s->data, host_in, (size_t)s->numel * sizeof(float));
}

int elle_model_grad_get(const elle_model *model, int64_t i, float *host_out)
{
    ELLE_TRY(check_index(model, i, "elle_model_grad_get"));
    ELLE_CHECK_ARG(host_out != NULL);
    const elle__state *s = &model->net.states[i];
    if (s->kind != ELLE__STATE_PARAM)
        ELLE_FAIL(ELLE_EINVAL, "elle_model_grad_get: '%s' is a buffer, not a parameter", s->name);
    elle__backend *be = model->net.be;
    return be->ops->copy_to_host(be, host_out, s->grad, (size_t)s->numel * sizeof(float));
}

int64_t elle_model_num_params(const elle_model *model)
{
    return model ? model->net.num_params : 0;
}

size_t elle_model_memory_size(const elle_model *model)
{
    if (!model)
        return 0;
    const elle__net *net = &model->net;
    return sizeof *model + net->params.size + net->grads.size + net->buffers.size +
           net->acts.size + (size_t)net->n_states * sizeof(elle__state) +
           (size_t)net->cap_layers * sizeof(elle__layer) +
           (size_t)net->cap_values * sizeof(elle__value);
}

int64_t elle_model_num_classes(const elle_model *model)
{
    return model ? elle__net_num_classes(&model->net) : 0;
}

int elle_model_input_shape(const elle_model *model, int64_t *c, int64_t *h, int64_t *w)
{
    ELLE_CHECK_ARG(model != NULL);
    if (c)
        *c = model->in_c;
    if (h)
        *h = model->in_h;
    if (w)
        *w = model->in_w;
    return ELLE_OK;
}

const char *elle_model_arch(const elle_model *model)
{
    return model ? model->arch->name : NULL;
}

/* ---- safetensors ---------------------------------------------------------------- */

int elle_model_save(const elle_model *model, const char *path)
{
    ELLE_CHECK_ARG(model != NULL);
    ELLE_CHECK_ARG(path != NULL);
    const elle__net *net = &model->net;
    elle__backend *be = net->be;
    int rc = ELLE_OK;
    size_t total = 0;
    for (int64_t i = 0; i < net->n_states; i++)
        total += (size_t)net->states[i].numel * sizeof(float);
    float *host = malloc(total ? total : 1);
    elle__st_tensor *ts = calloc((size_t)net->n_states + 1, sizeof *ts);
    if (!host || !ts) {
        rc = elle__error_set(ELLE_ENOMEM, "elle_model_save: out of memory");
        goto cleanup;
    }
    float *p = host;
    for (int64_t i = 0; i < net->n_states; i++) {
        const elle__state *s = &net->states[i];
        elle__st_tensor *t = &ts[i];
        t->name = s->name;
        t->ndim = s->ndim;
        for (int k = 0; k < s->ndim; k++)
            t->shape[k] = s->dims[k];
        if (s->kind == ELLE__STATE_COUNTER) {
            t->dtype = ELLE__ST_I64;
            t->data = &s->counter;
            continue;
        }
        t->dtype = ELLE__ST_F32;
        ELLE_TRY_GOTO(rc, be->ops->copy_to_host(be, p, s->data, (size_t)s->numel * sizeof(float)));
        t->data = p;
        p += s->numel;
    }
    static const char *const meta[] = {"format", "pt", "producer", "libelle", NULL};
    ELLE_TRY_GOTO(rc, elle__safetensors_write(path, ts, (size_t)net->n_states, meta));
cleanup:
    free(host);
    free(ts);
    if (rc < 0)
        elle__error_prefix("elle_model_save(%s)", path);
    return rc;
}

/* Entry for state `name`, accepting the "module." prefix nn.DataParallel adds. */
static const elle__st_entry *find_entry(const elle__st_file *f, const char *name)
{
    const elle__st_entry *e = elle__safetensors_find(f, name);
    if (!e) {
        char prefixed[ELLE__NAME_MAX + 8];
        snprintf(prefixed, sizeof prefixed, "module.%s", name);
        e = elle__safetensors_find(f, prefixed);
    }
    return e;
}

int elle_model_load(elle_model *model, const char *path)
{
    ELLE_CHECK_ARG(model != NULL);
    ELLE_CHECK_ARG(path != NULL);
    elle__net *net = &model->net;
    elle__backend *be = net->be;
    elle__st_file *f = NULL;
    float *host = NULL;
    int64_t *counters = NULL;
    int rc = ELLE_OK;
    ELLE_TRY_GOTO(rc, elle__safetensors_open(&f, path));

    /* Strict, as load_state_dict(strict=True): every entry present with its
     * shape, nothing extra. Everything is read and checked before the model
     * is touched, so a failed load leaves it unchanged. */
    size_t total = 0;
    for (int64_t i = 0; i < net->n_states; i++)
        total += (size_t)net->states[i].numel * sizeof(float);
    host = malloc(total ? total : 1);
    counters = calloc((size_t)net->n_states + 1, sizeof *counters);
    if (!host || !counters) {
        rc = elle__error_set(ELLE_ENOMEM, "out of memory");
        goto cleanup;
    }
    if (elle__safetensors_count(f) != (size_t)net->n_states) {
        /* find the first unexpected name for the message */
        for (size_t j = 0; j < elle__safetensors_count(f); j++) {
            const char *nm = elle__safetensors_entry(f, j)->name;
            int known = 0;
            for (int64_t i = 0; i < net->n_states && !known; i++)
                known = find_entry(f, net->states[i].name) == elle__safetensors_entry(f, j);
            if (!known) {
                rc = elle__error_set(ELLE_EFORMAT, "unexpected tensor '%s' (model %s has %lld "
                                                   "state entries, file has %zu)",
                                     nm, model->arch->name, (long long)net->n_states,
                                     elle__safetensors_count(f));
                goto cleanup;
            }
        }
    }
    float *p = host;
    for (int64_t i = 0; i < net->n_states; i++) {
        const elle__state *s = &net->states[i];
        const elle__st_entry *e = find_entry(f, s->name);
        if (!e) {
            rc = elle__error_set(ELLE_EFORMAT, "missing tensor '%s'", s->name);
            goto cleanup;
        }
        int shape_ok = e->ndim == s->ndim;
        for (int k = 0; shape_ok && k < s->ndim; k++)
            shape_ok = e->shape[k] == s->dims[k];
        if (!shape_ok) {
            rc = elle__error_set(ELLE_ESHAPE,
                                 "tensor '%s' has rank %d shape (%lld, %lld, ...) in the file, "
                                 "the model expects rank %d shape (%lld, %lld, ...)",
                                 s->name, e->ndim, (long long)(e->ndim > 0 ? e->shape[0] : 0),
                                 (long long)(e->ndim > 1 ? e->shape[1] : 0), s->ndim,
                                 (long long)(s->ndim > 0 ? s->dims[0] : 0),
                                 (long long)(s->ndim > 1 ? s->dims[1] : 0));
            goto cleanup;
        }
        if (s->kind == ELLE__STATE_COUNTER) {
            ELLE_TRY_GOTO(rc, elle__safetensors_read_i64(f, e, &counters[i]));
            continue;
        }
        ELLE_TRY_GOTO(rc, elle__safetensors_read_f32(f, e, p));
        for (int64_t k = 0; k < s->numel; k++) {
            if (!isfinite(p[k])) {
                rc = elle__error_set(ELLE_EFORMAT, "tensor '%s' holds a non-finite value at %lld",
                                     s->name, (long long)k);
                goto cleanup;
            }
        }
        p += s->numel;
    }
    p = host;
    for (int64_t i = 0; i < net->n_states; i++) {
        elle__state *s = &net->states[i];
        if (s->kind == ELLE__STATE_COUNTER) {
            s->counter = counters[i];
            continue;
        }
        ELLE_TRY_GOTO(rc, be->ops->copy_to_device(be, s->data, p, (size_t)s->numel * sizeof(float)));
        p += s->numel;
    }
cleanup:
    elle__safetensors_close(f);
    free(host);
    free(counters);
    if (rc < 0)
        elle__error_prefix("elle_model_load(%s)", path);
    return rc;
}

/* ---- internal, device-resident entry points (nn/model_internal.h) --------------- */

elle__net *elle__model_net(elle_model *m)
{
    return &m->net;
}

elle__backend *elle__model_backend(elle_model *m)
{
    return m->net.be;
}

int64_t elle__model_max_batch(const elle_model *m)
{
    return m->net.max_batch;
}

int64_t elle__model_image_numel(const elle_model *m)
{
    return m->in_c * m->in_h * m->in_w;
}

static int check_dev_batch(const elle_model *m, int64_t n, const char *fn)
{
    if (m->net.max_batch == 0)
        ELLE_FAIL(ELLE_ESTATE, "%s: call elle_model_reserve first", fn);
    if (n < 1 || n > m->net.max_batch)
        ELLE_FAIL(ELLE_ESHAPE, "%s: batch of %lld outside [1, %lld]", fn, (long long)n,
                  (long long)m->net.max_batch);
    return ELLE_OK;
}

int elle__model_forward_dev(elle_model *m, const float *x, const int32_t *y, int64_t n,
                            float *loss)
{
    elle__net *net = &m->net;
    elle__backend *be = net->be;
    ELLE_TRY(check_dev_batch(m, n, "model forward"));
    elle__tensor in = elle__net_input(net, n);
    if (in.data != x)
        ELLE_TRY(be->ops->copy(be, in.data, x,
                               (size_t)elle__tensor_numel(&in) * sizeof(float)));
    if (y && y != net->labels)
        ELLE_TRY(be->ops->copy(be, net->labels, y, (size_t)n * sizeof(int32_t)));
    ELLE_TRY(elle__net_forward(net, n));
    if (loss) {
        if (!y)
            ELLE_FAIL(ELLE_EINVAL, "model forward: a loss needs labels");
        ELLE_TRY(elle__net_loss(net, n));
        if (loss != net->loss)
            ELLE_TRY(be->ops->copy(be, loss, net->loss, (size_t)n * sizeof(float)));
    }
    return ELLE_OK;
}

const float *elle__model_logits_dev(elle_model *m)
{
    return elle__net_logits(&m->net, 1).data;
}

int elle__model_backward_logits_dev(elle_model *m, int64_t n, const float *dlogits,
                                    int param_grads, float *dx)
{
    elle__net *net = &m->net;
    elle__backend *be = net->be;
    ELLE_TRY(check_dev_batch(m, n, "model backward"));
    if (!dlogits)
        ELLE_FAIL(ELLE_EINVAL, "model backward: dlogits is NULL");
    if (net->last_n != n)
        ELLE_FAIL(ELLE_ESTATE, "model backward: the last forward was of %lld samples, not %lld",
                  (long long)net->last_n, (long long)n);
    ELLE_TRY(elle__net_backward_logits(net, n, dlogits, param_grads, dx != NULL));
    if (dx) {
        elle__tensor g = elle__net_grad(net, 0, n);
        ELLE_TRY(be->ops->copy(be, dx, g.data, (size_t)elle__tensor_numel(&g) * sizeof(float)));
    }
    return ELLE_OK;
}

int elle__model_backward_dev(elle_model *m, int64_t n, const float *coef, int param_grads,
                             float *dx)
{
    elle__net *net = &m->net;
    elle__backend *be = net->be;
    ELLE_TRY(check_dev_batch(m, n, "model backward"));
    if (coef != net->coef)
        ELLE_TRY(be->ops->copy(be, net->coef, coef, (size_t)n * sizeof(float)));
    ELLE_TRY(elle__net_backward(net, n, param_grads, dx != NULL));
    if (dx) {
        elle__tensor g = elle__net_grad(net, 0, n);
        ELLE_TRY(be->ops->copy(be, dx, g.data, (size_t)elle__tensor_numel(&g) * sizeof(float)));
    }
    return ELLE_OK;
}

/* ---- the second-order primitive (model_internal.h, docs/second-order.md) -------- */

int elle__model_set_second_order(elle_model *m, int on)
{
    ELLE_CHECK_ARG(m != NULL);
    ELLE_CHECK_ARG(on == 0 || on == 1);
    int rc = elle__net_set_tangents(&m->net, on);
    if (rc < 0)
        elle__error_prefix("second-order reservation of %s", m->arch->name);
    return rc;
}

int elle__model_has_second_order(const elle_model *m)
{
    return m && elle__net_has_tangents(&m->net);
}

static int check_second_order(const elle_model *m, const char *fn)
{
    if (!elle__net_has_tangents(&m->net))
        ELLE_FAIL(ELLE_ESTATE, "%s: the model is not reserved for second-order use (call "
                               "elle__model_set_second_order, then elle_model_reserve)", fn);
    return ELLE_OK;
}

int elle__model_tangent_dev(elle_model *m, int64_t n, const float *v, float scale,
                            const float *gcoef, float *jvp)
{
    const char *fn = "model tangent";
    elle__net *net = &m->net;
    elle__backend *be = net->be;
    ELLE_TRY(check_dev_batch(m, n, fn));
    ELLE_TRY(check_second_order(m, fn));
    if (!v)
        ELLE_FAIL(ELLE_EINVAL, "%s: v is NULL", fn);
    if (!isfinite(scale) || scale == 0.0f)
        ELLE_FAIL(ELLE_EINVAL, "%s: scale = %g must be finite and non-zero (skip the call for a "
                               "zero weight)", fn, (double)scale);
    if (net->last_n != n || net->last_bwd_n != n || !net->bwd_xent)
        ELLE_FAIL(ELLE_ESTATE, "%s: needs a forward and a cross-entropy backward of %lld samples "
                               "first (last forward: %lld, backward since: %lld%s)",
                  fn, (long long)n, (long long)net->last_n, (long long)net->last_bwd_n,
                  net->last_bwd_n && !net->bwd_xent ? ", from given logit gradients" : "");
    elle__tensor vt = elle__net_tact(net, 0, n);
    int64_t count = elle__tensor_numel(&vt);
    ELLE_TRY(be->ops->copy(be, vt.data, v, (size_t)count * sizeof(float)));
    if (scale != 1.0f) /* H is linear in v: scale the seed, not every term */
        ELLE_TRY(be->ops->scale(be, count, scale, vt.data));
    ELLE_TRY(elle__net_tangent_forward(net, n));
    ELLE_TRY(elle__net_tangent_backward(net, n, gcoef, jvp, 1, 0));
    if (jvp && scale != 1.0f)
        ELLE_TRY(be->ops->scale(be, n, 1.0f / scale, jvp));
    return ELLE_OK;
}

int elle__model_second_order_dev(elle_model *m, const float *x, const int32_t *y, int64_t n,
                                 const float *coef, const float *v, float scale,
                                 const float *gcoef, float *dx_out, float *jvp_out)
{
    const char *fn = "model second order";
    ELLE_TRY(check_dev_batch(m, n, fn));
    ELLE_TRY(check_second_order(m, fn));
    if (!x || !y || !coef || !v)
        ELLE_FAIL(ELLE_EINVAL, "%s: x, y, coef and v are required (x %p, y %p, coef %p, v %p)",
                  fn, (const void *)x, (const void *)y, (const void *)coef, (const void *)v);
    if (!isfinite(scale) || scale == 0.0f)
        ELLE_FAIL(ELLE_EINVAL, "%s: scale = %g must be finite and non-zero", fn, (double)scale);
    ELLE_TRY(elle__model_forward_dev(m, x, y, n, NULL));
    ELLE_TRY(elle__model_backward_dev(m, n, coef, 0, dx_out));
    return elle__model_tangent_dev(m, n, v, scale, gcoef, jvp_out);
}
