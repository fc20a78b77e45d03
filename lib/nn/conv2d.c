/*
 * conv2d layer: y = conv(x, W) + b, W (oc, ic, k, k) as PyTorch's Conv2d,
 * dilation 1, groups 1. Backward: dx = conv_transpose(dy, W) (skipped when
 * the input gradient is not needed), dW += corr(x, dy), db += sum(dy).
 *
 * Tangents (x' = d x/dt, dy' = d dy/dt; W is not perturbed): the layer is
 * bilinear in (x, W) and the backward in (dy, W) and (x, dy), so
 *   y'  = conv(x', W)                       (no bias: it is a constant)
 *   dx' = conv_transpose(dy', W)
 *   dW' = corr(x', dy) + corr(x, dy'),  db' = sum(dy')
 * and dW', db' accumulate into the gradients (the second-order term).
 */
#include <math.h>
#include <stdio.h>

#include "core/error.h"
#include "nn/net.h"

static int conv_infer(elle__net *net, elle__layer *l)
{
    const elle__value *x = &net->values[l->in[0]];
    elle__conv_desc *cd = &l->d.conv;
    if (x->c != cd->ic)
        ELLE_FAIL(ELLE_ESHAPE, "conv2d: input has %lld channels, layer expects %lld",
                  (long long)x->c, (long long)cd->ic);
    int64_t oh = (x->h + 2 * cd->ph - cd->kh) / cd->sh + 1;
    int64_t ow = (x->w + 2 * cd->pw - cd->kw) / cd->sw + 1;
    if (x->h + 2 * cd->ph < cd->kh || x->w + 2 * cd->pw < cd->kw || oh < 1 || ow < 1)
        ELLE_FAIL(ELLE_ESHAPE, "conv2d: kernel %lldx%lld does not fit input %lldx%lld (pad %lld)",
                  (long long)cd->kh, (long long)cd->kw, (long long)x->h, (long long)x->w,
                  (long long)cd->ph);
    elle__value *y = &net->values[l->out];
    y->c = cd->oc;
    y->h = oh;
    y->w = ow;
    y->layout = net->be->ops->layout_for(net->be, y->c, y->h, y->w);
    return ELLE_OK;
}

static int conv_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__backend *be = net->be;
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    const float *b = l->d.conv.has_bias ? net->states[l->state[1]].data : NULL;
    return be->ops->conv2d_fwd(be, &l->d.conv, &x, net->states[l->state[0]].data, b, &y);
}

static int conv_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dx[2],
                         int param_grads)
{
    elle__backend *be = net->be;
    elle__tensor dy = elle__net_grad(net, l->out, n);
    const elle__state *w = &net->states[l->state[0]];
    if (dx[0])
        ELLE_TRY(be->ops->conv2d_bwd_data(be, &l->d.conv, &dy, w->data, dx[0]));
    if (param_grads) {
        elle__tensor x = elle__net_act(net, l->in[0], n);
        float *db = l->d.conv.has_bias ? net->states[l->state[1]].grad : NULL;
        ELLE_TRY(be->ops->conv2d_bwd_weights(be, &l->d.conv, &x, &dy, w->grad, db));
    }
    return ELLE_OK;
}

static int conv_tangent_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__backend *be = net->be;
    elle__tensor xt = elle__net_tact(net, l->in[0], n);
    elle__tensor yt = elle__net_tact(net, l->out, n);
    elle__conv_desc cd = l->d.conv;
    cd.has_bias = 0;
    return be->ops->conv2d_fwd(be, &cd, &xt, net->states[l->state[0]].data, NULL, &yt);
}

static int conv_tangent_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dxt[2],
                                 int param_grads)
{
    elle__backend *be = net->be;
    elle__tensor dyt = elle__net_tgrad(net, l->out, n);
    const elle__state *w = &net->states[l->state[0]];
    if (dxt[0])
        ELLE_TRY(be->ops->conv2d_bwd_data(be, &l->d.conv, &dyt, w->data, dxt[0]));
    if (param_grads) {
        elle__tensor x = elle__net_act(net, l->in[0], n);
        elle__tensor xt = elle__net_tact(net, l->in[0], n);
        elle__tensor dy = elle__net_grad(net, l->out, n);
        float *db = l->d.conv.has_bias ? net->states[l->state[1]].grad : NULL;
        ELLE_TRY(be->ops->conv2d_bwd_weights(be, &l->d.conv, &xt, &dy, w->grad, NULL));
        ELLE_TRY(be->ops->conv2d_bwd_weights(be, &l->d.conv, &x, &dyt, w->grad, db));
    }
    return ELLE_OK;
}

static const elle__layer_ops conv2d_ops = {
    .kind = "conv2d",
    /* backward reads: x for the weight gradient; dx needs only W */
    .bwd_reads = ELLE__READS_IN0,
    .infer = conv_infer,
    .forward = conv_forward,
    .backward = conv_backward,
    .tangent_forward = conv_tangent_forward,
    .tangent_backward = conv_tangent_backward,
};

int elle__net_conv2d(elle__net *net, const char *name, int x, int64_t oc, int64_t k,
                     int64_t stride, int64_t pad, int bias, int *out)
{
    if (oc < 1 || k < 1 || stride < 1 || pad < 0)
        ELLE_FAIL(ELLE_EINVAL, "conv2d '%s': invalid oc=%lld k=%lld stride=%lld pad=%lld", name,
                  (long long)oc, (long long)k, (long long)stride, (long long)pad);
    elle__layer l = {0};
    l.ops = &conv2d_ops;
    snprintf(l.name, sizeof l.name, "%s", name);
    l.in[0] = x;
    l.in[1] = -1;
    l.counter = -1;
    int64_t ic = net->values[x].c;
    l.d.conv = (elle__conv_desc){.ic = ic, .oc = oc, .kh = k, .kw = k, .sh = stride,
                                 .sw = stride, .ph = pad, .pw = pad, .has_bias = bias};
    /* PyTorch default: kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in));
     * the bias uses the same bound. */
    float bound = 1.0f / sqrtf((float)(ic * k * k));
    char sname[ELLE__NAME_MAX + 8];
    int64_t wd[4] = {oc, ic, k, k};
    snprintf(sname, sizeof sname, "%s.weight", name);
    ELLE_TRY(elle__net_add_state(net, sname, ELLE__STATE_PARAM, 4, wd, ELLE__INIT_UNIFORM, bound,
                                 &l.state[0]));
    l.state[1] = -1;
    if (bias) {
        snprintf(sname, sizeof sname, "%s.bias", name);
        ELLE_TRY(elle__net_add_state(net, sname, ELLE__STATE_PARAM, 1, &oc, ELLE__INIT_UNIFORM,
                                     bound, &l.state[1]));
    }
    return elle__net_append(net, &l, out);
}
