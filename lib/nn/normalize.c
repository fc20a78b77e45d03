/*
 * Input normalisation: y = (x - mean_c) / std_c per channel, inside the
 * model so attacks work in [0, 1] pixel space. It has no state_dict entries
 * (constants, like the reference's normalisation module). It reuses the
 * backend's inference batch norm with gamma = 1, beta = 0, running_mean =
 * mean, running_var = std^2 and eps = 0, so it needs no op of its own; the
 * constants are placed in backend memory by elle__net_finalize.
 *
 * Tangents: the layer is affine with constant coefficients, so y' = x'/std
 * (the same op with a zero mean: the zero beta constants stand in for it)
 * and dx' is the backward applied to dy'.
 */
#include "core/error.h"
#include "nn/net.h"

static int norm_infer(elle__net *net, elle__layer *l)
{
    const elle__value *x = &net->values[l->in[0]];
    if (x->c != l->d.norm.c)
        ELLE_FAIL(ELLE_ESHAPE, "normalize: input has %lld channels, %lld constants given",
                  (long long)x->c, (long long)l->d.norm.c);
    elle__value *y = &net->values[l->out];
    *y = *x;
    y->act = y->grad = NULL;
    return ELLE_OK;
}

static elle__bn_desc norm_desc(const elle__layer *l)
{
    return (elle__bn_desc){.c = l->d.norm.c, .eps = 0.0f, .momentum = 0.0f, .fuse_relu = 0};
}

static int norm_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__bn_desc bd = norm_desc(l);
    int64_t c = l->d.norm.c;
    const float *k = l->consts;
    return net->be->ops->bn_fwd_infer(net->be, &bd, &x, k, k + c, k + 2 * c, k + 3 * c, &y, NULL);
}

static int norm_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dx[2],
                         int param_grads)
{
    (void)param_grads;
    if (!dx[0])
        return ELLE_OK;
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__tensor dy = elle__net_grad(net, l->out, n);
    elle__bn_desc bd = norm_desc(l);
    int64_t c = l->d.norm.c;
    const float *k = l->consts;
    return net->be->ops->bn_bwd(net->be, &bd, 0, &x, &y, &dy, k, k + 2 * c, k + 3 * c, NULL,
                                dx[0], NULL, NULL);
}

static int norm_tangent_forward(elle__net *net, elle__layer *l, int64_t n)
{
    elle__tensor xt = elle__net_tact(net, l->in[0], n);
    elle__tensor yt = elle__net_tact(net, l->out, n);
    elle__bn_desc bd = norm_desc(l);
    int64_t c = l->d.norm.c;
    const float *k = l->consts; /* gamma 1, beta 0, mean, var: mean := beta's zeros */
    return net->be->ops->bn_fwd_infer(net->be, &bd, &xt, k, k + c, k + c, k + 3 * c, &yt, NULL);
}

static int norm_tangent_backward(elle__net *net, elle__layer *l, int64_t n, elle__tensor *dxt[2],
                                 int param_grads)
{
    (void)param_grads;
    if (!dxt[0])
        return ELLE_OK;
    elle__tensor x = elle__net_act(net, l->in[0], n);
    elle__tensor y = elle__net_act(net, l->out, n);
    elle__tensor dyt = elle__net_tgrad(net, l->out, n);
    elle__bn_desc bd = norm_desc(l);
    int64_t c = l->d.norm.c;
    const float *k = l->consts;
    return net->be->ops->bn_bwd(net->be, &bd, 0, &x, &y, &dyt, k, k + 2 * c, k + 3 * c, NULL,
                                dxt[0], NULL, NULL);
}

static const elle__layer_ops norm_ops = {
    .kind = "normalize",
    /* backward reads: bn_bwd is handed x and y */
    .bwd_reads = ELLE__READS_IN0 | ELLE__READS_OUT,
    .infer = norm_infer,
    .forward = norm_forward,
    .backward = norm_backward,
    .tangent_forward = norm_tangent_forward,
    .tangent_backward = norm_tangent_backward,
};

int elle__net_normalize(elle__net *net, int x, const float *mean, const float *std, int *out)
{
    int64_t c = net->values[x].c;
    if (c > 16)
        ELLE_FAIL(ELLE_EINVAL, "normalize: at most 16 channels supported, input has %lld",
                  (long long)c);
    elle__layer l = {0};
    l.ops = &norm_ops;
    l.in[0] = x;
    l.in[1] = -1;
    l.counter = -1;
    l.d.norm.c = c;
    for (int64_t i = 0; i < c; i++) {
        if (!(std[i] > 0.0f))
            ELLE_FAIL(ELLE_EINVAL, "normalize: std[%lld] = %g must be > 0", (long long)i,
                      (double)std[i]);
        l.d.norm.mean[i] = mean[i];
        l.d.norm.std[i] = std[i];
    }
    return elle__net_append(net, &l, out);
}
