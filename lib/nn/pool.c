/*
 * Pooling layers: max (padding = -inf, workspace kept for the backward),
 * average (padding counted in the divisor, PyTorch's default) and global
 * average (window = the whole feature map, F.avg_pool2d(x, 4) on 4x4 maps).
 *
 * Tangents: pooling is linear once max pooling's routing is fixed (the
 * forward's argmax, as autograd's): y' = pool_fwd_tangent(x') and
 * dx' = pool_bwd(dy') with the forward's workspace.
 */
#include "core/error.h"
#include "nn/net.h"

static int pool_infer(elle__net *net, elle__layer *l)
{
    const elle__value *x = &net->values[l->in[0]];
    elle__pool_desc *pd = &l->d.pool;
    if (pd->kh == 0) { /* global */
        pd->kh = x->h;
        pd->kw = x->w;
        pd->sh = x->h;
        pd->sw = x->w;
    }
    if (pd->ph * 2 > pd->kh || pd->pw * 2 > pd->kw)
        ELLE_FAIL(ELLE_EINVAL, "pool: padding %lld exceeds half the window %lld",
                  (long long)pd->ph, (long long)pd->kh);
    if (x->h + 2 * pd->ph < pd->kh || x->w + 2 * pd->pw < pd->kw)
        ELLE_FAIL(ELLE_ESHAPE, "pool: window %lldx%lld larger than input %lldx%lld",
                  (long long)pd->kh, (long long)pd->kw, (long long)x->h, (long long)x->w);
    elle__value *y = &net->values[l->out];
    y->c = x->c;
    y->h = (x->h + 2 * pd->ph - pd->kh) / pd->sh + 1;
    y->w = (x->w + 2 * pd->pw - pd->kw) / pd->sw + 1;
    y->layout = x->layout; /* pooling keeps the layout of its input */
    return ELLE_OK;
}

static int pool_plan(elle__net *net, elle__layer *l, elle__arena *a, int64_t max_n)
{
    elle__backend *be = net->be;
    elle__tensor x = elle__net_act(net, l->in[0], max_n);
    elle__tensor y = elle__net_act(net, l->out, max_n);
    size_t ws = be->ops->pool_workspace_bytes(be, &l->d.pool, &x, &y);
    void *p = NULL;
    if (ws)
        ELLE_TRY(elle__arena_take(a, ws, &p));
    l->ws = p;
    return ELLE_OK;
}

static int pool_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    return net->be->ops->pool_fwd(net->be, &l->d.pool, &x, &y, l->ws);
}

static int pool_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dx[2],
                         int param_grads)
{
    (void)param_grads;
    if (!dx[0])
        return ELLE_OK;
    elle__tensor dy = elle__net_grad(net, l->out, n);
    return net->be->ops->pool_bwd(net->be, &l->d.pool, &dy, l->ws, dx[0]);
}

static int pool_tangent_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__backend *be = net->be;
    if (!be->ops->pool_fwd_tangent)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "pool: the %s backend has no pool_fwd_tangent op",
                  be->ops->name);
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__tensor xt = elle__net_tact(net, l->in[0], n);
    elle__tensor yt = elle__net_tact(net, l->out, n);
    return be->ops->pool_fwd_tangent(be, &l->d.pool, &x, &y, l->ws, &xt, &yt);
}

static int pool_tangent_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dxt[2],
                                 int param_grads)
{
    (void)param_grads;
    if (!dxt[0])
        return ELLE_OK;
    elle__tensor dyt = elle__net_tgrad(net, l->out, n);
    return net->be->ops->pool_bwd(net->be, &l->d.pool, &dyt, l->ws, dxt[0]);
}

static const elle__layer_ops pool_ops = {
    .kind = "pool",
    /* backward reads nothing: max pooling routes through its workspace */
    .bwd_reads = 0,
    .infer = pool_infer,
    .plan = pool_plan,
    .forward = pool_forward,
    .backward = pool_backward,
    .tangent_forward = pool_tangent_forward,
    .tangent_backward = pool_tangent_backward,
};

static int add_pool(elle__net *net, int kind, int x, int64_t k, int64_t stride, int64_t pad,
                    int *out)
{
    if (k < 0 || (k > 0 && stride < 1) || pad < 0)
        ELLE_FAIL(ELLE_EINVAL, "pool: invalid window %lld stride %lld pad %lld", (long long)k,
                  (long long)stride, (long long)pad);
    elle__layer l = {0};
    l.ops = &pool_ops;
    l.in[0] = x;
    l.in[1] = -1;
    l.counter = -1;
    l.d.pool = (elle__pool_desc){.kind = kind, .kh = k, .kw = k, .sh = stride, .sw = stride,
                                 .ph = pad, .pw = pad};
    return elle__net_append(net, &l, out);
}

int elle__net_maxpool(elle__net *net, int x, int64_t k, int64_t stride, int64_t pad, int *out)
{
    if (k < 1)
        ELLE_FAIL(ELLE_EINVAL, "maxpool: window must be >= 1, got %lld", (long long)k);
    return add_pool(net, ELLE__POOL_MAX, x, k, stride, pad, out);
}

int elle__net_avgpool(elle__net *net, int x, int64_t k, int64_t stride, int64_t pad, int *out)
{
    if (k < 1)
        ELLE_FAIL(ELLE_EINVAL, "avgpool: window must be >= 1, got %lld", (long long)k);
    return add_pool(net, ELLE__POOL_AVG, x, k, stride, pad, out);
}

int elle__net_global_avgpool(elle__net *net, int x, int *out)
{
    return add_pool(net, ELLE__POOL_AVG, x, 0, 0, 0, out);
}
