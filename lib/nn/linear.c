/*
 * Fully connected layer: y = flatten(x) W^T + b with W (out, in) as
 * PyTorch's nn.Linear; x may be a 4-D feature map (flattened in NCHW order,
 * torch.flatten) in any backend layout. The output is a plain (n, out) matrix.
 *
 * Tangents, as conv2d's (bilinear): y' = x' W^T, dx' = dy' W,
 * dW' = dy^T x' + dy'^T x, db' = sum(dy').
 */
#include <math.h>
#include <stdio.h>

#include "core/error.h"
#include "nn/net.h"

static int linear_infer(elle__net *net, elle__layer *l)
{
    elle__value *y = &net->values[l->out];
    y->c = l->d.linear.out_features;
    y->h = 1;
    y->w = 1;
    y->layout = ELLE__LAYOUT_PLAIN;
    return ELLE_OK;
}

static int linear_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__backend *be = net->be;
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    const float *b = l->d.linear.has_bias ? net->states[l->state[1]].data : NULL;
    return be->ops->linear_fwd(be, &x, net->states[l->state[0]].data, b, &y);
}

static int linear_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dx[2],
                           int param_grads)
{
    elle__backend *be = net->be;
    elle__tensor dy = elle__net_grad(net, l->out, n);
    const elle__state *w = &net->states[l->state[0]];
    if (dx[0])
        ELLE_TRY(be->ops->linear_bwd_data(be, &dy, w->data, dx[0]));
    if (param_grads) {
        elle__tensor x = elle__net_act(net, l->in[0], n);
        float *db = l->d.linear.has_bias ? net->states[l->state[1]].grad : NULL;
        ELLE_TRY(be->ops->linear_bwd_weights(be, &x, &dy, w->grad, db));
    }
    return ELLE_OK;
}

static int linear_tangent_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__backend *be = net->be;
    elle__tensor xt = elle__net_tact(net, l->in[0], n);
    elle__tensor yt = elle__net_tact(net, l->out, n);
    return be->ops->linear_fwd(be, &xt, net->states[l->state[0]].data, NULL, &yt);
}

static int linear_tangent_backward(elle__net *net, elle__layer *l, int64_t n,
                                   elle__tensor *dxt[2], int param_grads)
{
    elle__backend *be = net->be;
    elle__tensor dyt = elle__net_tgrad(net, l->out, n);
    const elle__state *w = &net->states[l->state[0]];
    if (dxt[0])
        ELLE_TRY(be->ops->linear_bwd_data(be, &dyt, w->data, dxt[0]));
    if (param_grads) {
        elle__tensor x = elle__net_act(net, l->in[0], n);
        elle__tensor xt = elle__net_tact(net, l->in[0], n);
        elle__tensor dy = elle__net_grad(net, l->out, n);
        float *db = l->d.linear.has_bias ? net->states[l->state[1]].grad : NULL;
        ELLE_TRY(be->ops->linear_bwd_weights(be, &xt, &dy, w->grad, NULL));
        ELLE_TRY(be->ops->linear_bwd_weights(be, &x, &dyt, w->grad, db));
    }
    return ELLE_OK;
}

static const elle__layer_ops linear_ops = {
    .kind = "linear",
    /* backward reads: x for the weight gradient; dx needs only W */
    .bwd_reads = ELLE__READS_IN0,
    .infer = linear_infer,
    .forward = linear_forward,
    .backward = linear_backward,
    .tangent_forward = linear_tangent_forward,
    .tangent_backward = linear_tangent_backward,
};

int elle__net_linear(elle__net *net, const char *name, int x, int64_t out_features, int bias,
                     int *out)
{
    if (out_features < 1)
        ELLE_FAIL(ELLE_EINVAL, "linear '%s': out_features must be >= 1, got %lld", name,
                  (long long)out_features);
    const elle__value *xv = &net->values[x];
    int64_t in = xv->c * xv->h * xv->w;
    elle__layer l = {0};
    l.ops = &linear_ops;
    snprintf(l.name, sizeof l.name, "%s", name);
    l.in[0] = x;
    l.in[1] = -1;
    l.counter = -1;
    l.d.linear.out_features = out_features;
    l.d.linear.has_bias = bias;
    float bound = 1.0f / sqrtf((float)in); /* PyTorch nn.Linear default */
    char sname[ELLE__NAME_MAX + 8];
    int64_t wd[2] = {out_features, in};
    snprintf(sname, sizeof sname, "%s.weight", name);
    ELLE_TRY(elle__net_add_state(net, sname, ELLE__STATE_PARAM, 2, wd, ELLE__INIT_UNIFORM, bound,
                                 &l.state[0]));
    l.state[1] = -1;
    if (bias) {
        snprintf(sname, sizeof sname, "%s.bias", name);
        ELLE_TRY(elle__net_add_state(net, sname, ELLE__STATE_PARAM, 1, &out_features,
                                     ELLE__INIT_UNIFORM, bound, &l.state[1]));
    }
    return elle__net_append(net, &l, out);
}
