/*
 * Batch normalisation (PyTorch BatchNorm2d, eps 1e-5, momentum 0.1), with an
 * optional fused ReLU (PreAct blocks are BN -> ReLU -> conv).
 *
 * Training mode normalises with the batch statistics and updates the running
 * averages (unbiased variance) and num_batches_tracked, as PyTorch does on
 * every train-mode forward. Eval mode uses the running statistics and the
 * backward treats them as constants.
 *
 * Tangents (bn_fwd_tangent / bn_bwd_tangent, closed forms derived in
 * docs/second-order.md): in training mode they flow through the batch mean
 * and variance the forward saved; the fused ReLU keeps the forward's mask.
 * The running statistics are never touched by a tangent pass.
 */
#include <stdio.h>

#include "core/error.h"
#include "nn/net.h"

static int bn_infer(elle__net *net, elle__layer *l)
{
    const elle__value *x = &net->values[l->in[0]];
    if (x->c != l->d.bn.c)
        ELLE_FAIL(ELLE_ESHAPE, "batchnorm: input has %lld channels, layer expects %lld",
                  (long long)x->c, (long long)l->d.bn.c);
    elle__value *y = &net->values[l->out];
    y->c = x->c;
    y->h = x->h;
    y->w = x->w;
    y->layout = x->layout;
    return ELLE_OK;
}

static int bn_plan(elle__net *net, elle__layer *l, elle__arena *a, int64_t max_n)
{
    elle__backend *be = net->be;
    void *p;
    ELLE_TRY(elle__arena_take(a, (size_t)l->d.bn.c * sizeof(float), &p));
    l->save_mean = p;
    ELLE_TRY(elle__arena_take(a, (size_t)l->d.bn.c * sizeof(float), &p));
    l->save_var = p;
    elle__tensor x = elle__net_act(net, l->in[0], max_n);
    size_t ws = be->ops->bn_workspace_bytes(be, &l->d.bn, &x);
    l->ws = NULL;
    if (ws) {
        ELLE_TRY(elle__arena_take(a, ws, &p));
        l->ws = p;
    }
    return ELLE_OK;
}

static int bn_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__backend *be = net->be;
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    const float *gamma = net->states[l->state[0]].data;
    const float *beta = net->states[l->state[1]].data;
    float *rm = net->states[l->state[2]].data;
    float *rv = net->states[l->state[3]].data;
    if (!net->training)
        return be->ops->bn_fwd_infer(be, &l->d.bn, &x, gamma, beta, rm, rv, &y, l->ws);
    if (n * x.h * x.w < 2)
        ELLE_FAIL(ELLE_ESHAPE,
                  "batchnorm: training mode needs more than one value per channel, got batch "
                  "%lld of %lldx%lld (use eval mode)",
                  (long long)n, (long long)x.h, (long long)x.w);
    ELLE_TRY(be->ops->bn_fwd_train(be, &l->d.bn, &x, gamma, beta, rm, rv, &y, l->save_mean,
                                   l->save_var, l->ws));
    net->states[l->counter].counter++;
    return ELLE_OK;
}

static int bn_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dx[2],
                       int param_grads)
{
    elle__backend *be = net->be;
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__tensor dy = elle__net_grad(net, l->out, n);
    elle__tensor scratch;
    elle__tensor *target = dx[0];
    if (!target) { /* the op always produces dx; park it when nobody needs it */
        scratch = x;
        scratch.data = net->scratch_grad[0];
        target = &scratch;
    }
    const elle__state *g = &net->states[l->state[0]];
    const elle__state *b = &net->states[l->state[1]];
    const float *mean = net->training ? l->save_mean : net->states[l->state[2]].data;
    const float *var = net->training ? l->save_var : net->states[l->state[3]].data;
    return be->ops->bn_bwd(be, &l->d.bn, net->training, &x, &y, &dy, g->data, mean, var, l->ws,
                           target, param_grads ? g->grad : NULL, param_grads ? b->grad : NULL);
}

static int bn_tangent_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__backend *be = net->be;
    if (!be->ops->bn_fwd_tangent)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "batchnorm: the %s backend has no bn_fwd_tangent op",
                  be->ops->name);
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__tensor xt = elle__net_tact(net, l->in[0], n);
    elle__tensor yt = elle__net_tact(net, l->out, n);
    const float *mean = net->training ? l->save_mean : net->states[l->state[2]].data;
    const float *var = net->training ? l->save_var : net->states[l->state[3]].data;
    return be->ops->bn_fwd_tangent(be, &l->d.bn, net->training, &x, &y, &xt,
                                   net->states[l->state[0]].data, mean, var, l->ws, &yt);
}

static int bn_tangent_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dxt[2],
                               int param_grads)
{
    elle__backend *be = net->be;
    if (!be->ops->bn_bwd_tangent)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "batchnorm: the %s backend has no bn_bwd_tangent op",
                  be->ops->name);
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__tensor xt = elle__net_tact(net, l->in[0], n);
    elle__tensor dy = elle__net_grad(net, l->out, n);
    elle__tensor dyt = elle__net_tgrad(net, l->out, n);
    const elle__state *g = &net->states[l->state[0]];
    const elle__state *b = &net->states[l->state[1]];
    const float *mean = net->training ? l->save_mean : net->states[l->state[2]].data;
    const float *var = net->training ? l->save_var : net->states[l->state[3]].data;
    return be->ops->bn_bwd_tangent(be, &l->d.bn, net->training, &x, &y, &xt, &dy, &dyt, g->data,
                                   mean, var, l->ws, dxt[0], param_grads ? g->grad : NULL,
                                   param_grads ? b->grad : NULL);
}

static const elle__layer_ops bn_ops = {
    .kind = "batchnorm",
    /* backward reads x (statistics' gradient) and y (the fused ReLU's mask, cpu) */
    .bwd_reads = ELLE__READS_IN0 | ELLE__READS_OUT,
    .infer = bn_infer,
    .plan = bn_plan,
    .forward = bn_forward,
    .backward = bn_backward,
    .tangent_forward = bn_tangent_forward,
    .tangent_backward = bn_tangent_backward,
};

int elle__net_batchnorm(elle__net *net, const char *name, int x, int fuse_relu, float eps,
                        float momentum, int *out)
{
    elle__layer l = {0};
    l.ops = &bn_ops;
    snprintf(l.name, sizeof l.name, "%s", name);
    l.in[0] = x;
    l.in[1] = -1;
    int64_t c = net->values[x].c;
    l.d.bn = (elle__bn_desc){.c = c, .eps = eps, .momentum = momentum, .fuse_relu = fuse_relu};
    static const char *const suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    static const int kind[4] = {ELLE__STATE_PARAM, ELLE__STATE_PARAM, ELLE__STATE_BUFFER,
                                ELLE__STATE_BUFFER};
    static const int init[4] = {ELLE__INIT_ONES, ELLE__INIT_ZEROS, ELLE__INIT_ZEROS,
                                ELLE__INIT_ONES};
    char sname[ELLE__NAME_MAX + 24];
    for (int i = 0; i < 4; i++) {
        snprintf(sname, sizeof sname, "%s.%s", name, suffix[i]);
        ELLE_TRY(elle__net_add_state(net, sname, kind[i], 1, &c, init[i], 0, &l.state[i]));
    }
    snprintf(sname, sizeof sname, "%s.num_batches_tracked", name);
    ELLE_TRY(elle__net_add_state(net, sname, ELLE__STATE_COUNTER, 0, NULL, ELLE__INIT_ZEROS, 0,
                                 &l.counter));
    return elle__net_append(net, &l, out);
}
