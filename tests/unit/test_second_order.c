/*
 * The model-level second-order primitive (nn/model_internal.h,
 * docs/second-order.md): H(x, y, v) = grad_theta(v . grad_x O) with
 * O = sum_i coef_i loss_i.
 *
 * - H against central differences of the parameter gradient along v,
 *   (grad_theta O(x + hv) - grad_theta O(x - hv)) / 2h, which is the same
 *   mixed derivative taken in the other order; the per-sample loss tangents
 *   against differences of the losses. Whole models on the reference
 *   backend, eval and training mode. Float storage and the ReLU / max-pool
 *   kinks that some of the thousands of units cross inside the stencil make
 *   this a normwise check: ||fd - H|| / ||H|| over all parameters. x and v
 *   are redrawn until no ReLU mask or max-pool argmax differs between
 *   x - hv, x and x + hv (a single flipped unit would add a spike of
 *   |dy x| / 2h, larger than H). Measured 7e-4 .. 9e-3 (h = 1e-4 eval,
 *   3e-5 training), limit 3e-2; a missing layer term or a wrong batch-norm
 *   tangent gives O(0.1 - 1).
 * - The returned input gradient is exactly elle__model_backward_dev's; the
 *   split form (forward, backward, tangent) equals the one-shot call bit for
 *   bit; gcoef adds exactly the ordinary gradient; scale is linear.
 * - oneDNN against the reference on small_cnn, PreActResNet-18 and
 *   WideResNet-10-1 (nmse per parameter tensor).
 * - ELLE_ESTATE / ELLE_EINVAL / ELLE_EUNSUPPORTED paths, memory (unchanged
 *   without second-order use), running statistics untouched by the tangent.
 *
 * ELLE_TEST_BENCH=1 adds a timing of PreActResNet-18, batch 128, 32x32 on
 * the CPU backend: forward+backward against the second-order call.
 */
#include "elle_test.h"

#include <string.h>
#include <time.h>

#include "nn/model_internal.h"

#define TEST_RAND_SEED 0x2545F4914F6CDD1Dull
#include "test_rand.h"

static void fill_uniform(float *p, int64_t n, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(lo + (hi - lo) * frand());
}

static double rel_err(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int verbose(void)
{
    return getenv("ELLE_TEST_VERBOSE") != NULL;
}

typedef struct spec {
    const char *arch;
    int width, depth, hidden, classes, c, h, w;
} spec;

static elle_model *make_model(elle_context *ctx, const spec *s, uint64_t seed, int64_t max_batch,
                              int second_order)
{
    elle_model_config *cfg = NULL;
    elle_model *m = NULL;
    assert_elle_ok(elle_model_config_create(&cfg, s->arch));
    const struct {
        elle_model_param p;
        int v;
    } kv[] = {{ELLE_MODEL_PARAM_WIDTH, s->width},     {ELLE_MODEL_PARAM_DEPTH, s->depth},
              {ELLE_MODEL_PARAM_HIDDEN, s->hidden},   {ELLE_MODEL_PARAM_NUM_CLASSES, s->classes},
              {ELLE_MODEL_PARAM_IN_CHANNELS, s->c},   {ELLE_MODEL_PARAM_IN_HEIGHT, s->h},
              {ELLE_MODEL_PARAM_IN_WIDTH, s->w}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (kv[i].v)
            assert_elle_ok(elle_model_config_set_param(cfg, kv[i].p, kv[i].v));
    assert_elle_ok(elle_model_config_set_param(cfg, ELLE_MODEL_PARAM_SEED, (double)seed));
    assert_elle_ok(elle_model_create(&m, ctx, cfg));
    elle_model_config_free(cfg);
    if (second_order)
        assert_elle_ok(elle__model_set_second_order(m, 1));
    if (max_batch)
        assert_elle_ok(elle_model_reserve(m, max_batch));
    return m;
}

static elle_context *context(elle_backend kind)
{
    elle_context *ctx = NULL;
    assert_elle_ok(elle_context_create(&ctx, kind, 0));
    return ctx;
}

static void copy_state(elle_model *dst, elle_model *src)
{
    int64_t ns = elle_model_state_count(src);
    for (int64_t i = 0; i < ns; i++) {
        int64_t d[4];
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(src, i, NULL, &kind, NULL, d));
        size_t bytes = kind == ELLE_STATE_COUNTER ? 8 : (size_t)(d[0] * d[1] * d[2] * d[3]) * 4;
        void *buf = malloc(bytes);
        assert_elle_ok(elle_model_state_get(src, i, buf));
        assert_elle_ok(elle_model_state_set(dst, i, buf));
        free(buf);
    }
}

/* All parameter gradients, concatenated in state order (host). */
static int64_t grad_count(elle_model *m)
{
    int64_t total = 0;
    for (int64_t i = 0; i < elle_model_state_count(m); i++) {
        int64_t d[4];
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
        if (kind == ELLE_STATE_PARAMETER)
            total += d[0] * d[1] * d[2] * d[3];
    }
    return total;
}

static void grads_get(elle_model *m, float *out)
{
    for (int64_t i = 0; i < elle_model_state_count(m); i++) {
        int64_t d[4];
        elle_state_kind kind;
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
        if (kind != ELLE_STATE_PARAMETER)
            continue;
        assert_elle_ok(elle_model_grad_get(m, i, out));
        out += d[0] * d[1] * d[2] * d[3];
    }
}

/* A batch in backend memory (cpu and reference backends: host memory, but
 * allocated through the op table as the device-resident entry points
 * expect). */
typedef struct batch {
    elle__backend *be;
    int64_t n, numel;
    float *x, *v, *coef, *dx, *jvp, *loss, *xs;
    int32_t *y;
} batch;

static void *dev_alloc(elle__backend *be, size_t bytes)
{
    void *p;
    assert_elle_ok(be->ops->alloc(be, bytes ? bytes : 4, &p));
    return p;
}

static batch make_batch(elle_model *m, int64_t n)
{
    batch b;
    b.be = elle__model_backend(m);
    b.n = n;
    b.numel = n * elle__model_image_numel(m);
    size_t img = (size_t)b.numel * 4, per = (size_t)n * 4;
    b.x = dev_alloc(b.be, img);
    b.v = dev_alloc(b.be, img);
    b.dx = dev_alloc(b.be, img);
    b.xs = dev_alloc(b.be, img);
    b.coef = dev_alloc(b.be, per);
    b.jvp = dev_alloc(b.be, per);
    b.loss = dev_alloc(b.be, per);
    b.y = dev_alloc(b.be, per);
    fill_uniform(b.x, b.numel, 0, 1);
    fill_uniform(b.v, b.numel, -1, 1);
    int64_t k = elle_model_num_classes(m);
    for (int64_t i = 0; i < n; i++) {
        b.y[i] = (int32_t)((i * 7 + 3) % k);
        b.coef[i] = (float)(0.5 + frand()) / (float)n; /* per-sample weights, not only 1/n */
    }
    return b;
}

static void free_batch(batch *b)
{
    void *ps[] = {b->x, b->v, b->dx, b->xs, b->coef, b->jvp, b->loss, b->y};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        b->be->ops->free(b->be, ps[i]);
}

/* ---- H against finite differences ---------------------------------------------- */

/* The routing of the last forward (reference backend: host memory): the
 * output sign of every ReLU and fused BN-ReLU, the argmax workspace of every
 * max pooling. *len bytes are written to out (grown as needed). */
static void routing(elle_model *m, int64_t n, unsigned char **out, size_t *cap, size_t *len)
{
    elle__net *net = elle__model_net(m);
    elle__backend *be = elle__model_backend(m);
    *len = 0;
    for (int i = 0; i < net->n_layers; i++) {
        elle__layer *l = &net->layers[i];
        elle__tensor y = elle__net_act(net, l->out, n);
        int is_max = strcmp(l->ops->kind, "pool") == 0 && l->d.pool.kind == ELLE__POOL_MAX;
        int is_relu = strcmp(l->ops->kind, "relu") == 0 ||
                      (strcmp(l->ops->kind, "batchnorm") == 0 && l->d.bn.fuse_relu);
        size_t add = 0;
        if (is_max) {
            elle__tensor x = elle__net_act(net, l->in[0], n);
            add = be->ops->pool_workspace_bytes(be, &l->d.pool, &x, &y);
        } else if (is_relu) {
            add = (size_t)elle__tensor_numel(&y);
        }
        if (*len + add > *cap) {
            *cap = 2 * (*len + add);
            *out = realloc(*out, *cap);
            assert_non_null(*out);
        }
        if (is_max)
            memcpy(*out + *len, l->ws, add);
        else
            for (size_t k = 0; k < add; k++)
                (*out)[*len + k] = y.data[k] > 0.0f;
        *len += add;
    }
}

static void check_fd(const spec *s, int training, double tol)
{
    const int64_t n = 3;
    /* training mode puts many more pre-activations near zero (batch
     * statistics centre them), so a smaller step keeps kink-free draws
     * frequent; float rounding of the gradients (~1e-7 relative) over 2h
     * stays well below the tolerance at both steps (measured <= 7e-3) */
    const double h = getenv("ELLE_FD_H") ? atof(getenv("ELLE_FD_H")) : training ? 3e-5 : 1e-4;
    elle_context *ctx = context(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, s, 17, n, 1);
    assert_elle_ok(elle_model_set_training(m, training));
    batch b = make_batch(m, n);
    int64_t np = grad_count(m);
    float *H = malloc((size_t)np * 4), *gp = malloc((size_t)np * 4), *gm = malloc((size_t)np * 4);
    float jvp[8], lp[8], lm[8], fdl[8];

    /* redraw x and v until no ReLU mask and no max-pool argmax differs
     * between x - hv, x and x + hv: the stencil then stays on one smooth
     * piece, where a central difference of the gradient is O(h^2) accurate.
     * (One flipped unit would add a spike of |dy x| / 2h to the difference
     * of the gradients, larger than H itself.) */
    unsigned char *r[2] = {NULL, NULL};
    size_t cap[2] = {0, 0}, len[2];
    int tries = 0, safe = 0;
    while (!safe) {
        assert_true(++tries <= 400);
        fill_uniform(b.x, b.numel, 0, 1);
        fill_uniform(b.v, b.numel, -1, 1);
        safe = 1;
        for (int sgn = -1; sgn <= 1 && safe; sgn++) {
            for (int64_t i = 0; i < b.numel; i++)
                b.xs[i] = b.x[i] + (float)(sgn * h) * b.v[i];
            assert_elle_ok(elle__model_forward_dev(m, b.xs, b.y, n, NULL));
            routing(m, n, &r[sgn >= 0], &cap[sgn >= 0], &len[sgn >= 0]);
            if (sgn >= 0)
                safe = len[0] == len[1] && memcmp(r[0], r[1], len[0]) == 0;
        }
    }
    free(r[0]);
    free(r[1]);

    assert_elle_ok(elle_model_zero_grad(m));
    assert_elle_ok(elle__model_second_order_dev(m, b.x, b.y, n, b.coef, b.v, 1.0f, NULL, NULL,
                                                b.jvp));
    grads_get(m, H);
    memcpy(jvp, b.jvp, (size_t)n * 4);

    for (int sgn = -1; sgn <= 1; sgn += 2) {
        for (int64_t i = 0; i < b.numel; i++)
            b.xs[i] = b.x[i] + (float)(sgn * h) * b.v[i];
        assert_elle_ok(elle_model_zero_grad(m));
        assert_elle_ok(elle__model_forward_dev(m, b.xs, b.y, n, sgn > 0 ? lp : lm));
        assert_elle_ok(elle__model_backward_dev(m, n, b.coef, 1, NULL));
        grads_get(m, sgn > 0 ? gp : gm);
    }
    for (int64_t i = 0; i < np; i++)
        gp[i] = (float)(((double)gp[i] - gm[i]) / (2 * h));
    double e = rel_err(gp, H, np);
    /* the loss tangents: the difference of float losses carries a rounding
     * error of about 1.2e-7 |loss| / 2h, which at this h is not small next
     * to the (small, at initialisation) input derivatives, so it is allowed
     * for explicitly */
    double lmax = 0, nj = 0, nd = 0;
    for (int64_t i = 0; i < n; i++) {
        fdl[i] = (float)(((double)lp[i] - lm[i]) / (2 * h));
        lmax = fmax(lmax, fabs(lp[i]));
        nj += (double)jvp[i] * jvp[i];
        nd += ((double)fdl[i] - jvp[i]) * ((double)fdl[i] - jvp[i]);
    }
    double ej = rel_err(fdl, jvp, n);
    double noise = 4.0 * 1.2e-7 * lmax / (2 * h) * sqrt((double)n);
    if (!(sqrt(nd) <= tol * sqrt(nj) + noise))
        fail_msg("%s (training=%d): loss tangents differ from finite differences, |fd - jvp| "
                 "%.3g, |jvp| %.3g, rounding allowance %.3g", s->arch, training, sqrt(nd),
                 sqrt(nj), noise);
    if (!training) {
        /* eval mode: samples are independent, so jvp_i = v_i . dx_i / coef_i
         * with dx the input gradient of the objective - an exact relation
         * between the tangent forward and the ordinary backward */
        assert_elle_ok(elle__model_forward_dev(m, b.x, b.y, n, NULL));
        assert_elle_ok(elle__model_backward_dev(m, n, b.coef, 0, b.dx));
        int64_t per = b.numel / n;
        for (int64_t i = 0; i < n; i++) {
            double dot = 0;
            for (int64_t j = 0; j < per; j++)
                dot += (double)b.v[i * per + j] * b.dx[i * per + j];
            fdl[i] = (float)(dot / b.coef[i]);
        }
        assert_floats_close(jvp, fdl, (size_t)n, 1e-7, 1e-3);
    }
    if (verbose())
        fprintf(stderr, "  %-16s training=%d: H rel. error %.2e, jvp rel. error %.2e (h %g, %d "
                        "draws)\n",
                s->arch, training, e, ej, h, tries);
    if (!(e < tol))
        fail_msg("%s (training=%d): H differs from finite differences, rel. error %.3g", s->arch,
                 training, e);
    free(H);
    free(gp);
    free(gm);
    free_batch(&b);
    elle_model_free(m);
    elle_context_free(ctx);
}

static const spec cnn_s = {"small_cnn", 4, 2, 8, 5, 1, 12, 12};
static const spec prn_s = {"preact_resnet18", 4, 0, 0, 4, 3, 16, 16};
static const spec wrn_s = {"wide_resnet", 1, 10, 0, 4, 3, 8, 8};

static void test_fd_small_cnn(void **state)
{
    (void)state;
    check_fd(&cnn_s, 0, 3e-2);
    check_fd(&cnn_s, 1, 3e-2);
}

static void test_fd_preact_resnet18(void **state)
{
    (void)state;
    check_fd(&prn_s, 0, 3e-2);
    check_fd(&prn_s, 1, 3e-2);
}

static void test_fd_wide_resnet(void **state)
{
    (void)state;
    check_fd(&wrn_s, 0, 3e-2);
    check_fd(&wrn_s, 1, 3e-2);
}

/* ---- exact relations ---------------------------------------------------------- */

static void test_relations(void **state)
{
    (void)state;
    const int64_t n = 4;
    elle_context *ctx = context(ELLE_BACKEND_CPU);
    elle_model *m = make_model(ctx, &cnn_s, 3, n, 1);
    batch b = make_batch(m, n);
    int64_t np = grad_count(m);
    float *g1 = malloc((size_t)np * 4), *g2 = malloc((size_t)np * 4), *g3 = malloc((size_t)np * 4);
    float *dx = malloc((size_t)b.numel * 4), jvp1[4];
    for (int training = 1; training >= 0; training--) {
        assert_elle_ok(elle_model_set_training(m, training));
        /* the input gradient is the plain backward's, bit for bit */
        assert_elle_ok(elle__model_forward_dev(m, b.x, b.y, n, NULL));
        assert_elle_ok(elle__model_backward_dev(m, n, b.coef, 0, b.dx));
        memcpy(dx, b.dx, (size_t)b.numel * 4);
        assert_elle_ok(elle_model_zero_grad(m));
        assert_elle_ok(elle__model_second_order_dev(m, b.x, b.y, n, b.coef, b.v, 1.0f, NULL,
                                                    b.dx, b.jvp));
        assert_memory_equal(dx, b.dx, (size_t)b.numel * 4);
        grads_get(m, g1);
        memcpy(jvp1, b.jvp, sizeof jvp1);

        /* the split form is the same computation */
        assert_elle_ok(elle_model_zero_grad(m));
        assert_elle_ok(elle__model_forward_dev(m, b.x, b.y, n, NULL));
        assert_elle_ok(elle__model_backward_dev(m, n, b.coef, 0, NULL));
        assert_elle_ok(elle__model_tangent_dev(m, n, b.v, 1.0f, NULL, NULL));
        grads_get(m, g2);
        assert_memory_equal(g1, g2, (size_t)np * 4);

        /* scale is linear (applied to v), the loss tangents do not scale */
        assert_elle_ok(elle_model_zero_grad(m));
        assert_elle_ok(elle__model_second_order_dev(m, b.x, b.y, n, b.coef, b.v, -2.5f, NULL,
                                                    NULL, b.jvp));
        grads_get(m, g2);
        for (int64_t i = 0; i < np; i++)
            g3[i] = -2.5f * g1[i];
        assert_true(rel_err(g2, g3, np) < 1e-5);
        assert_floats_close(b.jvp, jvp1, (size_t)n, 1e-6, 1e-5);

        /* gcoef adds exactly the ordinary gradient of sum gcoef_i loss_i */
        float gc[4] = {0.3f, -0.1f, 0.7f, 0.2f};
        float *gcd = dev_alloc(b.be, sizeof gc);
        memcpy(gcd, gc, sizeof gc);
        assert_elle_ok(elle_model_zero_grad(m));
        assert_elle_ok(elle__model_second_order_dev(m, b.x, b.y, n, b.coef, b.v, 1.0f, gcd, NULL,
                                                    NULL));
        grads_get(m, g2);
        assert_elle_ok(elle_model_zero_grad(m));
        assert_elle_ok(elle__model_forward_dev(m, b.x, b.y, n, NULL));
        assert_elle_ok(elle__model_backward_dev(m, n, gcd, 1, NULL));
        grads_get(m, g3);
        for (int64_t i = 0; i < np; i++)
            g2[i] -= g1[i];
        double e = rel_err(g2, g3, np);
        if (!(e < 1e-4))
            fail_msg("training=%d: gcoef part differs from the gradient, rel. error %.3g",
                     training, e);
        b.be->ops->free(b.be, gcd);
    }
    free(g1);
    free(g2);
    free(g3);
    free(dx);
    free_batch(&b);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- oneDNN against the reference ------------------------------------------------- */

static void compare_backends(const spec *s, int64_t n, double rtol)
{
    elle_context *rc = context(ELLE_BACKEND_REFERENCE), *cc = context(ELLE_BACKEND_CPU);
    elle_model *mr = make_model(rc, s, 11, n, 1), *mc = make_model(cc, s, 99, n, 1);
    copy_state(mc, mr);
    batch br = make_batch(mr, n), bc = make_batch(mc, n);
    memcpy(bc.x, br.x, (size_t)br.numel * 4);
    memcpy(bc.v, br.v, (size_t)br.numel * 4);
    memcpy(bc.coef, br.coef, (size_t)n * 4);
    memcpy(bc.y, br.y, (size_t)n * 4);
    float *gcr = dev_alloc(br.be, (size_t)n * 4), *gcc = dev_alloc(bc.be, (size_t)n * 4);
    fill_uniform(gcr, n, -0.5, 0.5);
    memcpy(gcc, gcr, (size_t)n * 4);
    for (int training = 1; training >= 0; training--) {
        assert_elle_ok(elle_model_set_training(mr, training));
        assert_elle_ok(elle_model_set_training(mc, training));
        for (int with_g = 0; with_g <= 1; with_g++) {
            assert_elle_ok(elle_model_zero_grad(mr));
            assert_elle_ok(elle_model_zero_grad(mc));
            assert_elle_ok(elle__model_second_order_dev(mr, br.x, br.y, n, br.coef, br.v, 0.5f,
                                                        with_g ? gcr : NULL, br.dx, br.jvp));
            assert_elle_ok(elle__model_second_order_dev(mc, bc.x, bc.y, n, bc.coef, bc.v, 0.5f,
                                                        with_g ? gcc : NULL, bc.dx, bc.jvp));
            double e = elle_test_nmse(bc.dx, br.dx, (size_t)br.numel);
            if (!(e < rtol * rtol))
                fail_msg("%s dx (training=%d): nmse %.3g", s->arch, training, e);
            assert_floats_close(bc.jvp, br.jvp, (size_t)n, 1e-5, 10 * rtol);
            double worst = 0;
            for (int64_t si = 0; si < elle_model_state_count(mr); si++) {
                elle_state_kind kind;
                const char *name;
                int64_t d[4];
                assert_elle_ok(elle_model_state_info(mr, si, &name, &kind, NULL, d));
                if (kind != ELLE_STATE_PARAMETER)
                    continue;
                int64_t numel = d[0] * d[1] * d[2] * d[3];
                float *a = malloc((size_t)numel * 4), *c = malloc((size_t)numel * 4);
                assert_elle_ok(elle_model_grad_get(mr, si, a));
                assert_elle_ok(elle_model_grad_get(mc, si, c));
                e = elle_test_nmse(c, a, (size_t)numel);
                worst = fmax(worst, e);
                if (!(e < rtol * rtol))
                    fail_msg("%s H '%s' (training=%d, gcoef=%d): nmse %.3g", s->arch, name,
                             training, with_g, e);
                free(a);
                free(c);
            }
            if (verbose())
                fprintf(stderr, "  %-16s training=%d gcoef=%d: worst H nmse %.2e\n", s->arch,
                        training, with_g, worst);
        }
    }
    br.be->ops->free(br.be, gcr);
    bc.be->ops->free(bc.be, gcc);
    free_batch(&br);
    free_batch(&bc);
    elle_model_free(mr);
    elle_model_free(mc);
    elle_context_free(rc);
    elle_context_free(cc);
}

static void test_cpu_vs_ref_small_cnn(void **state)
{
    (void)state;
    spec s = {"small_cnn", 0, 0, 0, 0, 0, 0, 0}; /* the demo model: 16 and 32 channels */
    compare_backends(&s, 3, 2e-3);
}

static void test_cpu_vs_ref_preact_resnet18(void **state)
{
    (void)state;
    spec s = {"preact_resnet18", 16, 0, 0, 10, 3, 16, 16};
    compare_backends(&s, 2, 3e-3);
}

static void test_cpu_vs_ref_wide_resnet(void **state)
{
    (void)state;
    spec s = {"wide_resnet", 1, 10, 0, 10, 3, 16, 16};
    compare_backends(&s, 3, 3e-3);
}

/* ---- states, errors, memory -------------------------------------------------------- */

static void test_errors_and_state(void **state)
{
    (void)state;
    const int64_t n = 2;
    elle_context *ctx = context(ELLE_BACKEND_REFERENCE);
    elle_model *m = make_model(ctx, &cnn_s, 1, n, 0);
    batch b = make_batch(m, n);
    size_t plain_bytes = elle_model_memory_size(m);
    int64_t counter0, counter1;
    assert_elle_ok(elle_model_state_get(m, 5, &counter0)); /* bn1.num_batches_tracked */

    /* not reserved for second order: refused before the forward runs */
    assert_false(elle__model_has_second_order(m));
    assert_elle_status(elle__model_second_order_dev(m, b.x, b.y, n, b.coef, b.v, 1.0f, NULL, NULL,
                                                    NULL),
                       ELLE_ESTATE);
    assert_elle_ok(elle_model_state_get(m, 5, &counter1));
    assert_int_equal(counter0, counter1);
    assert_elle_ok(elle__model_forward_dev(m, b.x, b.y, n, NULL));
    assert_elle_ok(elle__model_backward_dev(m, n, b.coef, 0, NULL));
    assert_elle_status(elle__model_tangent_dev(m, n, b.v, 1.0f, NULL, NULL), ELLE_ESTATE);

    /* sticky: set before or after reserve, kept by a later reserve */
    assert_elle_ok(elle__model_set_second_order(m, 1));
    assert_true(elle__model_has_second_order(m));
    size_t so_bytes = elle_model_memory_size(m);
    assert_true(so_bytes > plain_bytes);
    assert_elle_ok(elle_model_reserve(m, n));
    assert_true(elle__model_has_second_order(m));
    assert_int_equal(elle_model_memory_size(m), so_bytes);

    /* the tangent needs a forward and a cross-entropy backward of the batch */
    assert_elle_status(elle__model_tangent_dev(m, n, b.v, 1.0f, NULL, NULL), ELLE_ESTATE);
    assert_elle_ok(elle__model_forward_dev(m, b.x, b.y, n, NULL));
    assert_elle_status(elle__model_tangent_dev(m, n, b.v, 1.0f, NULL, NULL), ELLE_ESTATE);
    assert_elle_ok(elle__model_backward_dev(m, n, b.coef, 0, NULL));
    assert_elle_status(elle__model_tangent_dev(m, 1, b.v, 1.0f, NULL, NULL), ELLE_ESTATE);
    assert_elle_status(elle__model_tangent_dev(m, n, NULL, 1.0f, NULL, NULL), ELLE_EINVAL);
    assert_elle_status(elle__model_tangent_dev(m, n, b.v, 0.0f, NULL, NULL), ELLE_EINVAL);
    assert_elle_status(elle__model_tangent_dev(m, n, b.v, NAN, NULL, NULL), ELLE_EINVAL);
    assert_elle_status(elle__model_tangent_dev(m, n + 1, b.v, 1.0f, NULL, NULL), ELLE_ESHAPE);
    /* a mode change between the forward and the tangent */
    assert_elle_ok(elle_model_set_training(m, 0));
    assert_elle_status(elle__model_tangent_dev(m, n, b.v, 1.0f, NULL, NULL), ELLE_ESTATE);
    assert_elle_ok(elle_model_set_training(m, 1));

    /* the tangent leaves the running statistics and counters alone */
    int64_t ns = elle_model_state_count(m), nb = 0;
    float *before[64] = {0};
    for (int64_t i = 0; i < ns && i < 64; i++) {
        elle_state_kind kind;
        int64_t d[4];
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
        before[i] = malloc((size_t)(d[0] * d[1] * d[2] * d[3]) * 4 + 8);
        assert_elle_ok(elle_model_state_get(m, i, before[i]));
        nb++;
    }
    assert_elle_ok(elle__model_tangent_dev(m, n, b.v, 1.0f, NULL, b.jvp));
    for (int64_t i = 0; i < nb; i++) {
        elle_state_kind kind;
        int64_t d[4];
        assert_elle_ok(elle_model_state_info(m, i, NULL, &kind, NULL, d));
        size_t bytes = kind == ELLE_STATE_COUNTER ? 8 : (size_t)(d[0] * d[1] * d[2] * d[3]) * 4;
        void *now = malloc(bytes);
        assert_elle_ok(elle_model_state_get(m, i, now));
        assert_memory_equal(now, before[i], bytes);
        free(now);
        free(before[i]);
    }
    /* a tangent may be taken again on the same forward and backward */
    assert_elle_ok(elle__model_tangent_dev(m, n, b.v, 1.0f, NULL, NULL));

    /* a backward from given logit gradients has no known tangent */
    float *dl = dev_alloc(b.be, (size_t)(n * elle_model_num_classes(m)) * 4);
    assert_elle_ok(elle__model_forward_dev(m, b.x, b.y, n, NULL));
    assert_elle_ok(elle__model_backward_logits_dev(m, n, dl, 0, NULL));
    assert_elle_status(elle__model_tangent_dev(m, n, b.v, 1.0f, NULL, NULL), ELLE_ESTATE);
    b.be->ops->free(b.be, dl);

    /* a layer without tangent passes, a backend without a tangent op */
    elle__net *net = elle__model_net(m);
    const elle__layer_ops *orig = net->layers[0].ops;
    elle__layer_ops fake = *orig;
    fake.tangent_backward = NULL;
    net->layers[0].ops = &fake;
    assert_elle_status(elle__model_second_order_dev(m, b.x, b.y, n, b.coef, b.v, 1.0f, NULL, NULL,
                                                    NULL),
                       ELLE_EUNSUPPORTED);
    net->layers[0].ops = orig;
    elle__backend *be = elle__model_backend(m);
    const elle__backend_ops *bops = be->ops;
    elle__backend_ops nobn = *bops;
    nobn.bn_fwd_tangent = NULL;
    be->ops = &nobn;
    assert_elle_status(elle__model_second_order_dev(m, b.x, b.y, n, b.coef, b.v, 1.0f, NULL, NULL,
                                                    NULL),
                       ELLE_EUNSUPPORTED);
    nobn = *bops;
    nobn.xent_tangent = NULL;
    assert_elle_status(elle__model_second_order_dev(m, b.x, b.y, n, b.coef, b.v, 1.0f, NULL, NULL,
                                                    NULL),
                       ELLE_EUNSUPPORTED);
    be->ops = bops;
    assert_elle_ok(elle__model_second_order_dev(m, b.x, b.y, n, b.coef, b.v, 1.0f, NULL, NULL,
                                                NULL));

    /* dropping it gives the plain memory back */
    assert_elle_ok(elle__model_set_second_order(m, 0));
    assert_false(elle__model_has_second_order(m));
    assert_int_equal(elle_model_memory_size(m), plain_bytes);
    free_batch(&b);
    elle_model_free(m);
    elle_context_free(ctx);
}

/* ---- optional timing ---------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_bench_preact_resnet18(void **state)
{
    (void)state;
    if (!getenv("ELLE_TEST_BENCH"))
        skip();
    const int64_t n = 128;
    spec s = {"preact_resnet18", 0, 0, 0, 10, 3, 32, 32};
    elle_context *ctx = context(ELLE_BACKEND_CPU);
    elle_model *m = make_model(ctx, &s, 1, n, 1);
    batch b = make_batch(m, n);
    double t_plain = 1e30, t_so = 1e30, t_tan = 1e30;
    for (int rep = 0; rep < 4; rep++) { /* the first of each warms the caches */
        double t0 = now_s();
        assert_elle_ok(elle__model_forward_dev(m, b.x, b.y, n, NULL));
        assert_elle_ok(elle__model_backward_dev(m, n, b.coef, 1, NULL));
        double t1 = now_s();
        assert_elle_ok(elle__model_second_order_dev(m, b.x, b.y, n, b.coef, b.v, 1.0f, b.coef,
                                                    NULL, NULL));
        double t2 = now_s();
        assert_elle_ok(elle__model_tangent_dev(m, n, b.v, 1.0f, b.coef, NULL));
        double t3 = now_s();
        if (rep > 0) {
            t_plain = fmin(t_plain, t1 - t0);
            t_so = fmin(t_so, t2 - t1);
            t_tan = fmin(t_tan, t3 - t2);
        }
    }
    fprintf(stderr,
            "  preact_resnet18 batch 128 32x32 cpu: forward+backward %.3f s, second order "
            "(+ordinary gradient) %.3f s (of which the tangent passes %.3f s), ratio %.2f "
            "(best of 3)\n",
            t_plain, t_so, t_tan, t_so / t_plain);
    free_batch(&b);
    elle_model_free(m);
    elle_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_and_state),
        cmocka_unit_test(test_relations),
        cmocka_unit_test(test_fd_small_cnn),
        cmocka_unit_test(test_fd_preact_resnet18),
        cmocka_unit_test(test_fd_wide_resnet),
        cmocka_unit_test(test_cpu_vs_ref_small_cnn),
        cmocka_unit_test(test_cpu_vs_ref_preact_resnet18),
        cmocka_unit_test(test_cpu_vs_ref_wide_resnet),
        cmocka_unit_test(test_bench_preact_resnet18),
    };
    return cmocka_run_group_tests_name("second_order", tests, NULL, NULL);
}
