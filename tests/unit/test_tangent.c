/*
 * Tangent passes of every layer (DESIGN §4, docs/second-order.md).
 *
 * Finite differences, reference backend. Each layer is driven on its own
 * inside a small net: inputs X (and their tangents T), an output gradient
 * DY (and its tangent DYT) are drawn at random; then
 *   tangent_forward   must equal (Y(X + hT) - Y(X - hT)) / 2h,
 *   tangent_backward  must equal the same central difference of the
 *                     backward's input gradient(s) and parameter gradients
 *                     at (X +- hT, DY +- h DYT).
 * Inputs are kept away from ReLU kinks and max-pool ties by construction:
 * a draw is rejected (and the next seed tried) unless the forward's routing
 * - the sign pattern of the layer's output for ReLU and fused BN-ReLU, the
 * argmax workspace for max pooling - is identical at X - hT, X and X + hT,
 * so the stencil never straddles a kink and the function is smooth (in fact
 * polynomial or rational) along it.
 *
 * Tolerance. The reference backend stores floats, so a central difference
 * of values of size ~1 at h = 1e-3 carries a rounding error of about
 * 6e-8 / 1e-3 = 6e-5 per element, and the truncation error is O(h^2) =
 * 1e-6 relative for the smooth batch-norm statistics. The comparison is the
 * normwise relative error ||fd - t|| / ||t|| < 2e-3 (measured below 3e-4
 * for every layer); a missing or wrong term of a closed form moves it to
 * O(0.1 - 1).
 *
 * oneDNN against the reference: every new tangent op on plain, nChw8c and
 * nChw16c tensors (channel counts that leave block padding), same inputs,
 * outputs reordered back to plain, |cpu - ref| <= 1e-4 + 1e-4 |ref|.
 */
#include "elle_test.h"

#include <string.h>

#include "backend/backend.h"
#include "core/rng.h"
#include "nn/net.h"

/* ---- helpers -------------------------------------------------------------- */

#define TEST_RAND_SEED 0x9E3779B97F4A7C15ull
#include "test_rand.h"

static void fill_uniform(float *p, int64_t n, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(lo + (hi - lo) * frand());
}

static double rel_err(const float *a, const float *b, int64_t n) /* ||a - b|| / ||b|| */
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static float *fmalloc(int64_t n)
{
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    assert_non_null(p);
    return p;
}

static int64_t value_numel(elle__net *net, int v, int64_t n)
{
    elle__tensor t = elle__net_act(net, v, n);
    return elle__tensor_numel(&t);
}

static void zero_param_grads(elle__net *net)
{
    if (net->param_bytes)
        memset(net->grads.base, 0, net->param_bytes);
}

/* Net on the reference backend with input (c, h, w); the caller appends
 * layers, then net_ready finalises and reserves with tangents. */
static elle__backend ref_be;

static void net_start(elle__net *net, int64_t c, int64_t h, int64_t w)
{
    assert_elle_ok(elle__backend_ref_create(&ref_be));
    assert_elle_ok(elle__net_init(net, &ref_be, c, h, w));
}

static void net_ready(elle__net *net, int64_t max_n)
{
    assert_elle_ok(elle__net_finalize(net, 5));
    assert_elle_ok(elle__net_set_tangents(net, 1));
    assert_elle_ok(elle__net_reserve(net, max_n));
    assert_true(elle__net_has_tangents(net));
    /* random parameters and running statistics (variances positive) */
    for (int64_t i = 0; i < net->n_states; i++) {
        elle__state *s = &net->states[i];
        if (s->kind == ELLE__STATE_COUNTER)
            continue;
        int is_var = strstr(s->name, "running_var") != NULL;
        fill_uniform(s->data, s->numel, is_var ? 0.5 : -1.0, is_var ? 2.0 : 1.0);
    }
}

/* The routing a central difference must not cross: output signs (relu,
 * fused BN-ReLU) or the argmax workspace (max pooling). */
static void routing(elle__net *net, elle__layer *l, int64_t n, unsigned char *out, size_t cap,
                    size_t *len)
{
    *len = 0;
    if (strcmp(l->ops->kind, "pool") == 0 && l->d.pool.kind == ELLE__POOL_MAX) {
        elle__tensor x = elle__net_act(net, l->in[0], n), y = elle__net_act(net, l->out, n);
        size_t bytes = ref_be.ops->pool_workspace_bytes(&ref_be, &l->d.pool, &x, &y);
        assert_true(bytes <= cap);
        memcpy(out, l->ws, bytes);
        *len = bytes;
        return;
    }
    int relu = strcmp(l->ops->kind, "relu") == 0 ||
               (strcmp(l->ops->kind, "batchnorm") == 0 && l->d.bn.fuse_relu);
    if (!relu)
        return;
    int64_t count = value_numel(net, l->out, n);
    assert_true((size_t)count <= cap);
    const float *y = net->values[l->out].act;
    for (int64_t i = 0; i < count; i++)
        out[i] = y[i] > 0.0f;
    *len = (size_t)count;
}

/* Checks layer `li` of `net` (see the header). Returns the worst relative
 * error; fails when it exceeds tol. */
static double check_layer(elle__net *net, int li, int64_t n, double h, double tol)
{
    elle__layer *l = &net->layers[li];
    const int nin = l->in[1] >= 0 ? 2 : 1;
    int64_t in_numel[2] = {0, 0};
    float *X[2] = {0}, *T[2] = {0}, *DX[2] = {0}, *DXT[2] = {0}, *DXp[2] = {0}, *DXm[2] = {0};
    for (int k = 0; k < nin; k++) {
        in_numel[k] = value_numel(net, l->in[k], n);
        X[k] = fmalloc(in_numel[k]);
        T[k] = fmalloc(in_numel[k]);
        DX[k] = fmalloc(in_numel[k]);
        DXT[k] = fmalloc(in_numel[k]);
        DXp[k] = fmalloc(in_numel[k]);
        DXm[k] = fmalloc(in_numel[k]);
    }
    const int64_t out_numel = value_numel(net, l->out, n);
    const int64_t pfl = (int64_t)(net->param_bytes / sizeof(float));
    float *Y = fmalloc(out_numel), *YT = fmalloc(out_numel), *Yp = fmalloc(out_numel),
          *Ym = fmalloc(out_numel), *DY = fmalloc(out_numel), *DYT = fmalloc(out_numel);
    float *G = fmalloc(pfl), *GT = fmalloc(pfl), *Gp = fmalloc(pfl), *Gm = fmalloc(pfl);
    int64_t fd_len = out_numel > pfl ? out_numel : pfl;
    for (int k = 0; k < nin; k++)
        fd_len = in_numel[k] > fd_len ? in_numel[k] : fd_len;
    float *fd = fmalloc(fd_len);
    enum { CAP = 1 << 16 };
    unsigned char *r0 = malloc(CAP), *r1 = malloc(CAP);
    size_t len0, len1;

    int tries = 0, ok = 0;
    while (!ok) {
        assert_true(++tries <= 60); /* a routing-safe draw is found within a few */
        for (int k = 0; k < nin; k++) {
            fill_uniform(X[k], in_numel[k], -1.0, 1.0);
            fill_uniform(T[k], in_numel[k], -1.0, 1.0);
        }
        fill_uniform(DY, out_numel, -1.0, 1.0);
        fill_uniform(DYT, out_numel, -1.0, 1.0);
        ok = 1;
        for (int sgn = -1; sgn <= 1 && ok; sgn++) {
            for (int k = 0; k < nin; k++)
                for (int64_t i = 0; i < in_numel[k]; i++)
                    net->values[l->in[k]].act[i] = X[k][i] + (float)(sgn * h) * T[k][i];
            assert_elle_ok(l->ops->forward(net, l, n));
            routing(net, l, n, sgn == -1 ? r0 : r1, CAP, sgn == -1 ? &len0 : &len1);
            if (sgn >= 0)
                ok = len0 == len1 && memcmp(r0, r1, len0) == 0;
        }
    }

    /* the point itself: forward, tangent forward, backward, tangent backward */
    for (int k = 0; k < nin; k++) {
        memcpy(net->values[l->in[k]].act, X[k], (size_t)in_numel[k] * 4);
        memcpy(net->values[l->in[k]].tact, T[k], (size_t)in_numel[k] * 4);
    }
    assert_elle_ok(l->ops->forward(net, l, n));
    memcpy(Y, net->values[l->out].act, (size_t)out_numel * 4);
    assert_elle_ok(l->ops->tangent_forward(net, l, n));
    memcpy(YT, net->values[l->out].tact, (size_t)out_numel * 4);

    elle__tensor dxs[2], dxts[2];
    elle__tensor *dx[2] = {NULL, NULL}, *dxt[2] = {NULL, NULL};
    for (int k = 0; k < nin; k++) {
        dxs[k] = elle__net_grad(net, l->in[k], n);
        dxts[k] = elle__net_tgrad(net, l->in[k], n);
        dx[k] = &dxs[k];
        dxt[k] = &dxts[k];
    }
    memcpy(net->values[l->out].grad, DY, (size_t)out_numel * 4);
    zero_param_grads(net);
    assert_elle_ok(l->ops->backward(net, l, n, dx, 1));
    for (int k = 0; k < nin; k++)
        memcpy(DX[k], dxs[k].data, (size_t)in_numel[k] * 4);
    if (pfl)
        memcpy(G, net->grads.base, (size_t)pfl * 4);
    memcpy(net->values[l->out].tgrad, DYT, (size_t)out_numel * 4);
    zero_param_grads(net);
    assert_elle_ok(l->ops->tangent_backward(net, l, n, dxt, 1));
    for (int k = 0; k < nin; k++)
        memcpy(DXT[k], dxts[k].data, (size_t)in_numel[k] * 4);
    if (pfl)
        memcpy(GT, net->grads.base, (size_t)pfl * 4);

    /* central differences */
    for (int sgn = -1; sgn <= 1; sgn += 2) {
        for (int k = 0; k < nin; k++)
            for (int64_t i = 0; i < in_numel[k]; i++)
                net->values[l->in[k]].act[i] = X[k][i] + (float)(sgn * h) * T[k][i];
        assert_elle_ok(l->ops->forward(net, l, n));
        memcpy(sgn > 0 ? Yp : Ym, net->values[l->out].act, (size_t)out_numel * 4);
        for (int64_t i = 0; i < out_numel; i++)
            net->values[l->out].grad[i] = DY[i] + (float)(sgn * h) * DYT[i];
        zero_param_grads(net);
        assert_elle_ok(l->ops->backward(net, l, n, dx, 1));
        for (int k = 0; k < nin; k++)
            memcpy(sgn > 0 ? DXp[k] : DXm[k], dxs[k].data, (size_t)in_numel[k] * 4);
        if (pfl)
            memcpy(sgn > 0 ? Gp : Gm, net->grads.base, (size_t)pfl * 4);
    }
    double worst = 0;
    for (int64_t i = 0; i < out_numel; i++)
        fd[i] = (float)(((double)Yp[i] - Ym[i]) / (2 * h));
    double e = rel_err(fd, YT, out_numel);
    if (!(e < tol))
        fail_msg("%s '%s': tangent forward rel. error %.3g", l->ops->kind, l->name, e);
    worst = fmax(worst, e);
    for (int k = 0; k < nin; k++) {
        for (int64_t i = 0; i < in_numel[k]; i++)
            fd[i] = (float)(((double)DXp[k][i] - DXm[k][i]) / (2 * h));
        e = rel_err(fd, DXT[k], in_numel[k]);
        if (!(e < tol))
            fail_msg("%s '%s': input-gradient tangent %d rel. error %.3g", l->ops->kind, l->name,
                     k, e);
        worst = fmax(worst, e);
    }
    for (int64_t si = 0; si < net->n_states; si++) {
        const elle__state *s = &net->states[si];
        if (s->kind != ELLE__STATE_PARAM)
            continue;
        const int64_t off = (int64_t)(s->offset / sizeof(float));
        for (int64_t i = 0; i < s->numel; i++)
            fd[i] = (float)(((double)Gp[off + i] - Gm[off + i]) / (2 * h));
        e = rel_err(fd, GT + off, s->numel);
        if (!(e < tol))
            fail_msg("%s: tangent of the gradient of '%s' rel. error %.3g", l->ops->kind,
                     s->name, e);
        worst = fmax(worst, e);
        /* the tangent is not the gradient itself (a test that would pass
         * with H := g would prove nothing) */
        assert_true(rel_err(G + off, GT + off, s->numel) > 1e-2);
    }
    for (int k = 0; k < nin; k++) {
        free(X[k]);
        free(T[k]);
        free(DX[k]);
        free(DXT[k]);
        free(DXp[k]);
        free(DXm[k]);
    }
    free(Y);
    free(YT);
    free(Yp);
    free(Ym);
    free(DY);
    free(DYT);
    free(G);
    free(GT);
    free(Gp);
    free(Gm);
    free(fd);
    free(r0);
    free(r1);
    return worst;
}

#define H_FD 1e-3
#define TOL_FD 2e-3

static void report(const char *what, double e)
{
    if (getenv("ELLE_TEST_VERBOSE"))
        fprintf(stderr, "  %-40s worst rel. error %.2e\n", what, e);
}

/* ---- per-layer finite differences ------------------------------------------ */

static void test_fd_conv2d(void **state)
{
    (void)state;
    elle__net net;
    int v;
    net_start(&net, 3, 7, 6);
    assert_elle_ok(elle__net_conv2d(&net, "conv", 0, 4, 3, 2, 1, 1, &v));
    net_ready(&net, 2);
    report("conv2d 3x3 stride 2 pad 1 bias", check_layer(&net, 0, 2, H_FD, TOL_FD));
    elle__net_release(&net);
    net_start(&net, 5, 5, 5);
    assert_elle_ok(elle__net_conv2d(&net, "conv1x1", 0, 3, 1, 1, 0, 0, &v));
    net_ready(&net, 3);
    report("conv2d 1x1 no bias", check_layer(&net, 0, 3, H_FD, TOL_FD));
    elle__net_release(&net);
}

static void test_fd_linear(void **state)
{
    (void)state;
    elle__net net;
    int v;
    net_start(&net, 3, 2, 2); /* flattens a feature map */
    assert_elle_ok(elle__net_linear(&net, "fc", 0, 5, 1, &v));
    net_ready(&net, 3);
    report("linear (3x2x2 -> 5, bias)", check_layer(&net, 0, 3, H_FD, TOL_FD));
    elle__net_release(&net);
}

static void check_bn(int fuse, int training)
{
    elle__net net;
    int v;
    net_start(&net, 3, 3, 4);
    assert_elle_ok(elle__net_batchnorm(&net, "bn", 0, fuse, 1e-5f, 0.1f, &v));
    net_ready(&net, 3);
    net.training = training;
    char what[64];
    snprintf(what, sizeof what, "batchnorm fuse_relu=%d training=%d", fuse, training);
    report(what, check_layer(&net, 0, 3, H_FD, TOL_FD));
    elle__net_release(&net);
}

static void test_fd_batchnorm(void **state)
{
    (void)state;
    for (int fuse = 0; fuse <= 1; fuse++)
        for (int training = 1; training >= 0; training--)
            check_bn(fuse, training);
}

static void test_fd_relu_add(void **state)
{
    (void)state;
    elle__net net;
    int r, a;
    net_start(&net, 2, 3, 3);
    assert_elle_ok(elle__net_relu(&net, 0, &r));
    assert_elle_ok(elle__net_add(&net, 0, r, &a));
    net_ready(&net, 2);
    report("relu", check_layer(&net, 0, 2, H_FD, TOL_FD));
    report("add", check_layer(&net, 1, 2, H_FD, TOL_FD));
    elle__net_release(&net);
}

static void test_fd_pooling(void **state)
{
    (void)state;
    static const struct {
        int kind;
        int64_t k, s, p;
        const char *what;
    } cases[] = {
        {ELLE__POOL_MAX, 2, 2, 0, "max 2x2 stride 2"},
        {ELLE__POOL_MAX, 3, 2, 1, "max 3x3 stride 2 pad 1 (overlapping)"},
        {ELLE__POOL_AVG, 3, 2, 1, "avg 3x3 stride 2 pad 1"},
        {ELLE__POOL_AVG, 0, 0, 0, "global avg"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        elle__net net;
        int v;
        net_start(&net, 2, 6, 5);
        if (cases[i].k == 0)
            assert_elle_ok(elle__net_global_avgpool(&net, 0, &v));
        else if (cases[i].kind == ELLE__POOL_MAX)
            assert_elle_ok(elle__net_maxpool(&net, 0, cases[i].k, cases[i].s, cases[i].p, &v));
        else
            assert_elle_ok(elle__net_avgpool(&net, 0, cases[i].k, cases[i].s, cases[i].p, &v));
        net_ready(&net, 2);
        report(cases[i].what, check_layer(&net, 0, 2, H_FD, TOL_FD));
        elle__net_release(&net);
    }
}

static void test_fd_normalize(void **state)
{
    (void)state;
    elle__net net;
    int v;
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, sd[3] = {0.2471f, 0.2435f, 0.2616f};
    net_start(&net, 3, 4, 4);
    assert_elle_ok(elle__net_normalize(&net, 0, mean, sd, &v));
    net_ready(&net, 2);
    report("normalize", check_layer(&net, 0, 2, H_FD, TOL_FD));
    elle__net_release(&net);
}

/* The running statistics and num_batches_tracked are never touched by the
 * tangent passes. */
static void test_bn_tangent_keeps_running_stats(void **state)
{
    (void)state;
    elle__net net;
    int v;
    net_start(&net, 3, 3, 3);
    assert_elle_ok(elle__net_batchnorm(&net, "bn", 0, 1, 1e-5f, 0.1f, &v));
    net_ready(&net, 2);
    elle__layer *l = &net.layers[0];
    elle__state *rm = &net.states[l->state[2]], *rv = &net.states[l->state[3]];
    fill_uniform(net.values[0].act, 54, -1, 1);
    fill_uniform(net.values[0].tact, 54, -1, 1);
    fill_uniform(net.values[1].grad, 54, -1, 1);
    fill_uniform(net.values[1].tgrad, 54, -1, 1);
    assert_elle_ok(l->ops->forward(&net, l, 2));
    float m0[3], v0[3];
    memcpy(m0, rm->data, sizeof m0);
    memcpy(v0, rv->data, sizeof v0);
    int64_t count = net.states[l->counter].counter;
    elle__tensor dxt = elle__net_tgrad(&net, 0, 2);
    elle__tensor *dxts[2] = {&dxt, NULL};
    assert_elle_ok(l->ops->tangent_forward(&net, l, 2));
    assert_elle_ok(l->ops->tangent_backward(&net, l, 2, dxts, 1));
    assert_memory_equal(m0, rm->data, sizeof m0);
    assert_memory_equal(v0, rv->data, sizeof v0);
    assert_int_equal(count, net.states[l->counter].counter);
    elle__net_release(&net);
}

/* ---- oneDNN against the reference, op by op --------------------------------- */

static elle__backend cpu_be;

/* A tensor of (n, c, h, w) on both backends: plain host data `plain`, the
 * CPU copy in the CPU's layout. */
typedef struct pair {
    float *plain;
    elle__tensor r, c;
} pair;

static pair make_pair(int64_t n, int64_t c, int64_t h, int64_t w, const float *src)
{
    pair p;
    int64_t numel = n * c * h * w;
    p.plain = fmalloc(numel);
    if (src)
        memcpy(p.plain, src, (size_t)numel * 4);
    else
        fill_uniform(p.plain, numel, -1, 1);
    p.r = elle__tensor_make(p.plain, n, c, h, w, ELLE__LAYOUT_PLAIN);
    int lay = cpu_be.ops->layout_for(&cpu_be, c, h, w);
    elle__tensor t = elle__tensor_make(NULL, n, c, h, w, lay);
    void *d;
    assert_elle_ok(cpu_be.ops->alloc(&cpu_be, cpu_be.ops->tensor_bytes(&cpu_be, &t), &d));
    t.data = d;
    assert_elle_ok(cpu_be.ops->from_plain(&cpu_be, p.plain, &t));
    p.c = t;
    return p;
}

static void free_pair(pair *p)
{
    free(p->plain);
    cpu_be.ops->free(&cpu_be, p->c.data);
}

/* The CPU tensor back in plain order. */
static float *cpu_plain(const pair *p)
{
    float *out = fmalloc(elle__tensor_numel(&p->c));
    assert_elle_ok(cpu_be.ops->to_plain(&cpu_be, &p->c, out));
    return out;
}

static void assert_close_pair(const pair *p, const char *what)
{
    float *got = cpu_plain(p);
    int64_t numel = elle__tensor_numel(&p->r);
    for (int64_t i = 0; i < numel; i++) {
        double d = fabs((double)got[i] - (double)p->plain[i]);
        if (!(d <= 1e-4 + 1e-4 * fabs((double)p->plain[i])))
            fail_msg("%s: element %lld: cpu %.8g ref %.8g", what, (long long)i, (double)got[i],
                     (double)p->plain[i]);
    }
    free(got);
}

static void test_cpu_bn_tangent_ops(void **state)
{
    (void)state;
    assert_elle_ok(elle__backend_cpu_create(&cpu_be, 0));
    assert_elle_ok(elle__backend_ref_create(&ref_be));
    static const int64_t shapes[][4] = {{3, 3, 5, 4}, {2, 12, 3, 3}, {5, 40, 2, 3}, {3, 16, 1, 1}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t n = shapes[si][0], c = shapes[si][1], h = shapes[si][2], w = shapes[si][3];
        for (int fuse = 0; fuse <= 1; fuse++)
            for (int training = 0; training <= 1; training++) {
                elle__bn_desc bd = {.c = c, .eps = 1e-5f, .momentum = 0.1f, .fuse_relu = fuse};
                float *gamma = fmalloc(c), *beta = fmalloc(c), *rm = fmalloc(c), *rv = fmalloc(c),
                      *sm = fmalloc(c), *sv = fmalloc(c);
                fill_uniform(gamma, c, -1.5, 1.5);
                fill_uniform(beta, c, -0.5, 0.5);
                fill_uniform(rm, c, -0.3, 0.3);
                fill_uniform(rv, c, 0.5, 2.0);
                pair x = make_pair(n, c, h, w, NULL), xt = make_pair(n, c, h, w, NULL);
                pair y = make_pair(n, c, h, w, NULL), dy = make_pair(n, c, h, w, NULL);
                pair dyt = make_pair(n, c, h, w, NULL);
                /* y, mean and var from the reference forward, given to both */
                float *rm2 = fmalloc(c), *rv2 = fmalloc(c);
                memcpy(rm2, rm, (size_t)c * 4);
                memcpy(rv2, rv, (size_t)c * 4);
                if (training)
                    assert_elle_ok(ref_be.ops->bn_fwd_train(&ref_be, &bd, &x.r, gamma, beta, rm2,
                                                            rv2, &y.r, sm, sv, NULL));
                else
                    assert_elle_ok(ref_be.ops->bn_fwd_infer(&ref_be, &bd, &x.r, gamma, beta, rm,
                                                            rv, &y.r, NULL));
                assert_elle_ok(cpu_be.ops->from_plain(&cpu_be, y.plain, &y.c));
                const float *mean = training ? sm : rm, *var = training ? sv : rv;

                pair yt = make_pair(n, c, h, w, NULL);
                assert_elle_ok(ref_be.ops->bn_fwd_tangent(&ref_be, &bd, training, &x.r, &y.r,
                                                          &xt.r, gamma, mean, var, NULL, &yt.r));
                assert_elle_ok(cpu_be.ops->bn_fwd_tangent(&cpu_be, &bd, training, &x.c, &y.c,
                                                          &xt.c, gamma, mean, var, NULL, &yt.c));
                assert_close_pair(&yt, "bn_fwd_tangent");

                pair dxt = make_pair(n, c, h, w, NULL);
                float *gr = fmalloc(c), *br = fmalloc(c), *gc = fmalloc(c), *bc = fmalloc(c);
                for (int64_t i = 0; i < c; i++) /* accumulate onto a common start */
                    gr[i] = gc[i] = br[i] = bc[i] = 0.25f;
                assert_elle_ok(ref_be.ops->bn_bwd_tangent(&ref_be, &bd, training, &x.r, &y.r,
                                                          &xt.r, &dy.r, &dyt.r, gamma, mean, var,
                                                          NULL, &dxt.r, gr, br));
                assert_elle_ok(cpu_be.ops->bn_bwd_tangent(&cpu_be, &bd, training, &x.c, &y.c,
                                                          &xt.c, &dy.c, &dyt.c, gamma, mean, var,
                                                          NULL, &dxt.c, gc, bc));
                assert_close_pair(&dxt, "bn_bwd_tangent dxt");
                assert_floats_close(gc, gr, (size_t)c, 1e-4, 1e-4);
                assert_floats_close(bc, br, (size_t)c, 1e-4, 1e-4);
                /* dxt NULL: only the parameter tangents, the same ones */
                assert_elle_ok(cpu_be.ops->bn_bwd_tangent(&cpu_be, &bd, training, &x.c, &y.c,
                                                          &xt.c, &dy.c, &dyt.c, gamma, mean, var,
                                                          NULL, NULL, gc, NULL));
                for (int64_t i = 0; i < c; i++)
                    assert_true(fabsf((gc[i] - 0.25f) - 2 * (gr[i] - 0.25f)) <=
                                1e-4f + 1e-4f * fabsf(gr[i]));
                free(gamma), free(beta), free(rm), free(rv), free(sm), free(sv), free(rm2);
                free(rv2), free(gr), free(br), free(gc), free(bc);
                pair *ps[] = {&x, &xt, &y, &dy, &dyt, &yt, &dxt};
                for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++)
                    free_pair(ps[k]);
            }
    }
    cpu_be.ops->destroy(&cpu_be);
}

static void test_cpu_pool_xent_tangent_ops(void **state)
{
    (void)state;
    assert_elle_ok(elle__backend_cpu_create(&cpu_be, 0));
    assert_elle_ok(elle__backend_ref_create(&ref_be));
    static const struct {
        int kind;
        int64_t c, h, w, k, s, p;
    } cases[] = {
        {ELLE__POOL_MAX, 3, 6, 6, 2, 2, 0},  {ELLE__POOL_MAX, 12, 7, 7, 3, 2, 1},
        {ELLE__POOL_MAX, 40, 5, 4, 2, 1, 0}, {ELLE__POOL_AVG, 40, 5, 5, 3, 2, 1},
        {ELLE__POOL_AVG, 20, 4, 4, 4, 4, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int64_t n = 2, c = cases[i].c, h = cases[i].h, w = cases[i].w;
        elle__pool_desc pd = {.kind = cases[i].kind, .kh = cases[i].k, .kw = cases[i].k,
                              .sh = cases[i].s, .sw = cases[i].s, .ph = cases[i].p,
                              .pw = cases[i].p};
        const int64_t oh = (h + 2 * pd.ph - pd.kh) / pd.sh + 1, ow = (w + 2 * pd.pw - pd.kw) / pd.sw + 1;
        pair x = make_pair(n, c, h, w, NULL), xt = make_pair(n, c, h, w, NULL);
        pair y = make_pair(n, c, oh, ow, NULL), yt = make_pair(n, c, oh, ow, NULL);
        size_t wsb = ref_be.ops->pool_workspace_bytes(&ref_be, &pd, &x.r, &y.r);
        void *ws = wsb ? malloc(wsb) : NULL;
        assert_elle_ok(ref_be.ops->pool_fwd(&ref_be, &pd, &x.r, &y.r, ws));
        assert_elle_ok(cpu_be.ops->from_plain(&cpu_be, y.plain, &y.c));
        assert_elle_ok(ref_be.ops->pool_fwd_tangent(&ref_be, &pd, &x.r, &y.r, ws, &xt.r, &yt.r));
        assert_elle_ok(cpu_be.ops->pool_fwd_tangent(&cpu_be, &pd, &x.c, &y.c, NULL, &xt.c, &yt.c));
        assert_close_pair(&yt, "pool_fwd_tangent");
        if (pd.kind == ELLE__POOL_MAX) { /* an exact gather on both backends */
            float *got = cpu_plain(&yt);
            assert_memory_equal(got, yt.plain, (size_t)elle__tensor_numel(&yt.r) * 4);
            free(got);
        }
        free(ws);
        free_pair(&x), free_pair(&xt), free_pair(&y), free_pair(&yt);
    }

    /* cross-entropy tangent, with and without gcoef and loss_t */
    const int64_t n = 5, k = 7;
    pair z = make_pair(n, k, 1, 1, NULL), zt = make_pair(n, k, 1, 1, NULL);
    pair dr = make_pair(n, k, 1, 1, NULL);
    for (int64_t i = 0; i < n * k; i++)
        z.plain[i] *= 4.0f;
    memcpy(z.c.data, z.plain, (size_t)(n * k) * 4);
    int32_t labels[5] = {0, 6, 3, 3, 1};
    float coef[5], gcoef[5], lr[5], lc[5];
    fill_uniform(coef, n, -1, 1);
    fill_uniform(gcoef, n, -1, 1);
    for (int with = 0; with <= 1; with++) {
        assert_elle_ok(ref_be.ops->xent_tangent(&ref_be, &z.r, labels, coef, with ? gcoef : NULL,
                                                &zt.r, &dr.r, with ? lr : NULL));
        assert_elle_ok(cpu_be.ops->xent_tangent(&cpu_be, &z.c, labels, coef, with ? gcoef : NULL,
                                                &zt.c, &dr.c, with ? lc : NULL));
        assert_close_pair(&dr, "xent_tangent");
        if (with)
            assert_floats_close(lc, lr, (size_t)n, 1e-6, 1e-5);
    }
    free_pair(&z), free_pair(&zt), free_pair(&dr);
    cpu_be.ops->destroy(&cpu_be);
}

/* The cross-entropy tangent against central differences of xent_bwd (and of
 * xent_fwd for loss_t) on the reference backend, in double-checked float. */
static void test_fd_xent_tangent(void **state)
{
    (void)state;
    assert_elle_ok(elle__backend_ref_create(&ref_be));
    const int64_t n = 4, k = 6;
    const double h = 1e-3;
    float z[24], zt[24], zp[24], zm[24], dp[24], dm[24], dzt[24], dzg[24], fd[24];
    float coef[4], gcoef[4], lt[4], lp[4], lm[4];
    int32_t y[4] = {1, 0, 5, 2};
    fill_uniform(z, n * k, -3, 3);
    fill_uniform(zt, n * k, -1, 1);
    fill_uniform(coef, n, 0.1, 1);
    fill_uniform(gcoef, n, -1, 1);
    elle__tensor Z = elle__tensor_make(z, n, k, 1, 1, 0), ZT = elle__tensor_make(zt, n, k, 1, 1, 0);
    elle__tensor DZT = elle__tensor_make(dzt, n, k, 1, 1, 0);
    assert_elle_ok(ref_be.ops->xent_tangent(&ref_be, &Z, y, coef, NULL, &ZT, &DZT, lt));
    for (int sgn = -1; sgn <= 1; sgn += 2) {
        float *zz = sgn > 0 ? zp : zm;
        for (int i = 0; i < n * k; i++)
            zz[i] = z[i] + (float)(sgn * h) * zt[i];
        elle__tensor ZZ = elle__tensor_make(zz, n, k, 1, 1, 0);
        elle__tensor D = elle__tensor_make(sgn > 0 ? dp : dm, n, k, 1, 1, 0);
        assert_elle_ok(ref_be.ops->xent_bwd(&ref_be, &ZZ, y, coef, &D));
        assert_elle_ok(ref_be.ops->xent_fwd(&ref_be, &ZZ, y, sgn > 0 ? lp : lm));
    }
    for (int i = 0; i < n * k; i++)
        fd[i] = (float)(((double)dp[i] - dm[i]) / (2 * h));
    assert_true(rel_err(fd, dzt, n * k) < TOL_FD);
    for (int i = 0; i < n; i++)
        fd[i] = (float)(((double)lp[i] - lm[i]) / (2 * h));
    assert_true(rel_err(fd, lt, n) < TOL_FD);
    /* gcoef adds gcoef_i (softmax - onehot), i.e. xent_bwd with gcoef */
    elle__tensor DZG = elle__tensor_make(dzg, n, k, 1, 1, 0);
    assert_elle_ok(ref_be.ops->xent_tangent(&ref_be, &Z, y, coef, gcoef, &ZT, &DZG, NULL));
    elle__tensor D = elle__tensor_make(dp, n, k, 1, 1, 0);
    assert_elle_ok(ref_be.ops->xent_bwd(&ref_be, &Z, y, gcoef, &D));
    for (int i = 0; i < n * k; i++)
        fd[i] = dzt[i] + dp[i];
    assert_floats_close(dzg, fd, (size_t)(n * k), 1e-6, 1e-5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_conv2d),
        cmocka_unit_test(test_fd_linear),
        cmocka_unit_test(test_fd_batchnorm),
        cmocka_unit_test(test_fd_relu_add),
        cmocka_unit_test(test_fd_pooling),
        cmocka_unit_test(test_fd_normalize),
        cmocka_unit_test(test_fd_xent_tangent),
        cmocka_unit_test(test_bn_tangent_keeps_running_stats),
        cmocka_unit_test(test_cpu_bn_tangent_ops),
        cmocka_unit_test(test_cpu_pool_xent_tangent_ops),
    };
    return cmocka_run_group_tests_name("tangent", tests, NULL, NULL);
}
