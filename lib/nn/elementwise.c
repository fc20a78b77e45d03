/*
 * ReLU and residual addition layers.
 *   relu: y = max(x, 0); dx = dy * (y > 0)   (PyTorch's convention at 0)
 *   add:  y = a + b;     da = db = dy
 * Tangents: relu masks with the forward's y > 0 both ways (its second
 * derivative is zero, as autograd's): y' = x' (y > 0), dx' = dy' (y > 0);
 * add is linear: y' = a' + b', da' = db' = dy'.
 */
#include "core/error.h"
#include "nn/net.h"

static int same_shape_infer(elle__net *net, elle__layer *l)
{
    const elle__value *a = &net->values[l->in[0]];
    if (l->in[1] >= 0) {
        const elle__value *b = &net->values[l->in[1]];
        if (a->c != b->c || a->h != b->h || a->w != b->w)
            ELLE_FAIL(ELLE_ESHAPE, "add: operands differ: (%lld, %lld, %lld) vs (%lld, %lld, %lld)",
                      (long long)a->c, (long long)a->h, (long long)a->w, (long long)b->c,
                      (long long)b->h, (long long)b->w);
        if (a->layout != b->layout)
            ELLE_FAIL(ELLE_ESHAPE, "add: operands have different layouts (%d, %d)", a->layout,
                      b->layout);
    }
    elle__value *y = &net->values[l->out];
    y->c = a->c;
    y->h = a->h;
    y->w = a->w;
    y->layout = a->layout;
    return ELLE_OK;
}

static int relu_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    return net->be->ops->relu_fwd(net->be, &x, &y);
}

static int relu_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dx[2],
                         int param_grads)
{
    (void)param_grads;
    if (!dx[0])
        return ELLE_OK;
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__tensor dy = elle__net_grad(net, l->out, n);
    return net->be->ops->relu_bwd(net->be, &y, &dy, dx[0]);
}

static int relu_tangent_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__tensor xt = elle__net_tact(net, l->in[0], n);
    elle__tensor yt = elle__net_tact(net, l->out, n);
    return net->be->ops->relu_bwd(net->be, &y, &xt, &yt); /* the same mask */
}

static int relu_tangent_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dxt[2],
                                 int param_grads)
{
    (void)param_grads;
    if (!dxt[0])
        return ELLE_OK;
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__tensor dyt = elle__net_tgrad(net, l->out, n);
    return net->be->ops->relu_bwd(net->be, &y, &dyt, dxt[0]);
}

static const elle__layer_ops relu_ops = {
    .kind = "relu",
    /* backward reads: the mask y > 0 */
    .bwd_reads = ELLE__READS_OUT,
    .infer = same_shape_infer,
    .forward = relu_forward,
    .backward = relu_backward,
    .tangent_forward = relu_tangent_forward,
    .tangent_backward = relu_tangent_backward,
};

int elle__net_relu(elle__net *net, int x, int *out)
{
    elle__layer l = {0};
    l.ops = &relu_ops;
    l.in[0] = x;
    l.in[1] = -1;
    l.counter = -1;
    return elle__net_append(net, &l, out);
}

static int add_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__tensor a = elle__net_act(net, l->in[0], n);
    elle__tensor b = elle__net_act(net, l->in[1], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    return net->be->ops->add(net->be, &a, &b, &y);
}

static int add_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dx[2],
                        int param_grads)
{
    (void)param_grads;
    elle__backend *be = net->be;
    elle__tensor dy = elle__net_grad(net, l->out, n);
    size_t bytes = be->ops->tensor_bytes(be, &dy);
    for (int k = 0; k < 2; k++)
        if (dx[k])
            ELLE_TRY(be->ops->copy(be, dx[k]->data, dy.data, bytes));
    return ELLE_OK;
}

static int add_tangent_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__tensor at = elle__net_tact(net, l->in[0], n);
    elle__tensor bt = elle__net_tact(net, l->in[1], n);
    elle__tensor yt = elle__net_tact(net, l->out, n);
    return net->be->ops->add(net->be, &at, &bt, &yt);
}

static int add_tangent_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dxt[2],
                                int param_grads)
{
    (void)param_grads;
    elle__backend *be = net->be;
    elle__tensor dyt = elle__net_tgrad(net, l->out, n);
    size_t bytes = be->ops->tensor_bytes(be, &dyt);
    for (int k = 0; k < 2; k++)
        if (dxt[k])
            ELLE_TRY(be->ops->copy(be, dxt[k]->data, dyt.data, bytes));
    return ELLE_OK;
}

static const elle__layer_ops add_ops = {
    .kind = "add",
    /* backward reads: dx = dy for both inputs */
    .bwd_reads = 0,
    .infer = same_shape_infer,
    .forward = add_forward,
    .backward = add_backward,
    .tangent_forward = add_tangent_forward,
    .tangent_backward = add_tangent_backward,
};

int elle__net_add(elle__net *net, int a, int b, int *out)
{
    elle__layer l = {0};
    l.ops = &add_ops;
    l.in[0] = a;
    l.in[1] = b;
    l.counter = -1;
    return elle__net_append(net, &l, out);
}
