/*
 * The reference backend (lib/backend/ref).
 *
 * Every backward is checked against its own forward by central finite
 * differences of a scalar objective J = sum_i r_i y_i with fixed random r:
 * the analytic gradient is the backward run with dy = r, the numerical one
 * is (J(p + h) - J(p - h)) / 2h evaluated in double for each of up to 64
 * elements of each input. Forwards are pinned separately by small examples
 * worked out by hand or by the defining formula (BN statistics, cross-
 * entropy), so a backward that is consistent with a wrong forward cannot
 * pass. The flat ops are checked against their invariants.
 */
#include "elle_test.h"

#include <string.h>

#include "backend/backend.h"
#include "core/rng.h"

/* ---- fixtures ------------------------------------------------------------ */

static elle__backend be;

static int group_setup(void **state)
{
    (void)state;
    memset(&be, 0, sizeof be);
    return elle__backend_ref_create(&be) == ELLE_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (be.ops && be.ops->destroy)
        be.ops->destroy(&be);
    return 0;
}

/* Host memory is op_compare.h's per-test scratch, freed by each test's
 * teardown. */
#include "op_compare.h"

static int free_scratch(void **state)
{
    (void)state;
    scratch_free_all();
    return 0;
}

static void trng_seed(uint64_t s)
{
    trng_state = s;
}

static float *filled(size_t n, float value)
{
    float *p = scratch_floats(n);
    for (size_t i = 0; i < n; i++)
        p[i] = value;
    return p;
}

/* a - b elementwise (the amount a backward accumulated into a buffer) */
static float *minus(const float *a, const float *b, size_t n)
{
    float *p = scratch_floats(n);
    for (size_t i = 0; i < n; i++)
        p[i] = a[i] - b[i];
    return p;
}

/* ---- the finite-difference harness --------------------------------------- */

#define FD_H 1e-2
#define FD_ATOL 1e-3
#define FD_RTOL 1e-2
#define FD_MAX_POINTS 64
/* A gradient buffer prefilled with this must be overwritten, not added to. */
#define SENTINEL 777.0f

typedef void (*forward_fn)(void *ctx);

typedef struct fd_spec {
    forward_fn forward; /* recomputes y from the inputs held by ctx */
    void *ctx;
    const float *y;     /* the output forward writes */
    size_t ny;
    const float *r;     /* J = sum r_i y_i */
    int relu_mask;      /* skip perturbations that flip any y > 0 (relu kinks) */
} fd_spec;

static double objective(const fd_spec *s)
{
    double j = 0.0;
    for (size_t i = 0; i < s->ny; i++)
        j += (double)s->r[i] * (double)s->y[i];
    return j;
}

static int mask_changed(const fd_spec *s, const unsigned char *mask0)
{
    for (size_t i = 0; i < s->ny; i++)
        if ((s->y[i] > 0.0f) != mask0[i])
            return 1;
    return 0;
}

/* Checks grad = dJ/dp at up to FD_MAX_POINTS elements of p (all of them
 * when p is small, a random subset otherwise). */
static void fd_check_impl(const fd_spec *s, float *p, size_t np, const float *grad,
                          const char *what, const char *file, int line)
{
    unsigned char *mask0 = NULL;
    s->forward(s->ctx);
    if (s->relu_mask) {
        mask0 = malloc(s->ny);
        assert_non_null(mask0);
        for (size_t i = 0; i < s->ny; i++)
            mask0[i] = s->y[i] > 0.0f;
    }
    size_t points = np < FD_MAX_POINTS ? np : FD_MAX_POINTS;
    size_t checked = 0;
    double max_grad = 0.0;
    for (size_t k = 0; k < points; k++) {
        size_t i = np <= FD_MAX_POINTS ? k : (size_t)(trng_next() % np);
        float orig = p[i];
        float up = (float)(orig + FD_H), down = (float)(orig - FD_H);
        int flipped = 0;
        p[i] = up;
        s->forward(s->ctx);
        double j_up = objective(s);
        if (mask0)
            flipped |= mask_changed(s, mask0);
        p[i] = down;
        s->forward(s->ctx);
        double j_down = objective(s);
        if (mask0)
            flipped |= mask_changed(s, mask0);
        p[i] = orig;
        if (flipped)
            continue; /* the step crossed a relu kink: J is not smooth there */
        /* divide by the step actually taken in float */
        double numeric = (j_up - j_down) / ((double)up - (double)down);
        double analytic = grad[i];
        if (!(fabs(numeric - analytic) <= FD_ATOL + FD_RTOL * fabs(numeric))) {
            print_error("%s: d J / d[%zu]: analytic %.7g, finite difference %.7g "
                        "(atol %g, rtol %g)\n",
                        what, i, analytic, numeric, FD_ATOL, FD_RTOL);
            free(mask0);
            _fail(file, line);
        }
        if (fabs(numeric) > max_grad)
            max_grad = fabs(numeric);
        checked++;
    }
    free(mask0);
    s->forward(s->ctx); /* leave the outputs (and saved statistics) at p */
    if (checked * 4 < points * 3) {
        print_error("%s: only %zu of %zu points away from relu kinks\n", what, checked, points);
        _fail(file, line);
    }
    /* a gradient that is zero everywhere would make the check vacuous */
    if (!(max_grad > 1e-3)) {
        print_error("%s: the objective does not depend on the input (max |dJ| %g)\n", what,
                    max_grad);
        _fail(file, line);
    }
}
#define fd_check(spec, p, np, grad, what) \
    fd_check_impl((spec), (p), (np), (grad), (what), __FILE__, __LINE__)

/* ---- the backend object and memory ----------------------------------------- */

static void test_table_complete(void **state)
{
    (void)state;
    assert_table_complete(&be, "reference", ELLE_BACKEND_REFERENCE);
    const elle__backend_ops *o = be.ops;
    assert_non_null(o->set_threads);
    assert_elle_ok(o->set_threads(&be, 3));
    assert_elle_ok(o->sync(&be));
    assert_elle_status(elle__backend_ref_create(NULL), ELLE_EINVAL);
}

static void test_memory(void **state)
{
    (void)state;
    const elle__backend_ops *o = be.ops;
    const size_t sizes[] = {0, 1, 63, 64, 100, 4096 + 4};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        unsigned char *p = NULL;
        assert_elle_ok(o->alloc(&be, sizes[k], (void **)&p));
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 64, 0);
        for (size_t i = 0; i < sizes[k]; i++)
            assert_int_equal(p[i], 0);
        o->free(&be, p);
    }
    o->free(&be, NULL);
    assert_elle_status(o->alloc(&be, 16, NULL), ELLE_EINVAL);
    /* recycled memory (the allocator usually hands the freed block back) is
     * zeroed too */
    for (int round = 0; round < 3; round++) {
        unsigned char *p = NULL;
        assert_elle_ok(o->alloc(&be, 4100, (void **)&p));
        for (size_t i = 0; i < 4100; i++)
            assert_int_equal(p[i], 0);
        memset(p, 0xab, 4100);
        o->free(&be, p);
    }

    float host[10], back[10];
    for (int i = 0; i < 10; i++)
        host[i] = (float)i + 0.5f;
    float *a = NULL, *b = NULL;
    assert_elle_ok(o->alloc(&be, sizeof host, (void **)&a));
    assert_elle_ok(o->alloc(&be, sizeof host, (void **)&b));
    assert_elle_ok(o->copy_to_device(&be, a, host, sizeof host));
    assert_elle_ok(o->copy(&be, b, a, sizeof host));
    assert_elle_ok(o->copy_to_host(&be, back, b, sizeof host));
    assert_memory_equal(host, back, sizeof host);
    /* overlapping copy inside one block */
    assert_elle_ok(o->copy(&be, a + 1, a, 5 * sizeof(float)));
    assert_true(a[1] == 0.5f && a[5] == 4.5f && a[6] == 6.5f);
    assert_elle_ok(o->memzero(&be, b + 2, 3 * sizeof(float)));
    assert_true(b[1] == 1.5f && b[2] == 0.0f && b[4] == 0.0f && b[5] == 5.5f);
    assert_elle_ok(o->copy(&be, NULL, NULL, 0));
    assert_elle_status(o->copy_to_host(&be, NULL, a, 4), ELLE_EINVAL);
    o->free(&be, a);
    o->free(&be, b);
}

static void test_layouts(void **state)
{
    (void)state;
    const elle__backend_ops *o = be.ops;
    assert_int_equal(o->layout_for(&be, 3, 32, 32), ELLE__LAYOUT_PLAIN);
    assert_int_equal(o->layout_for(&be, 64, 8, 8), ELLE__LAYOUT_PLAIN);
    float *data = random_floats(2 * 3 * 4 * 5, -1, 1);
    elle__tensor t = plain(data, 2, 3, 4, 5);
    assert_int_equal(o->tensor_bytes(&be, &t), 2 * 3 * 4 * 5 * sizeof(float));
    float *out = scratch_floats(120), *back = scratch_floats(120);
    assert_elle_ok(o->to_plain(&be, &t, out));
    assert_memory_equal(out, data, 120 * sizeof(float));
    elle__tensor t2 = plain(back, 2, 3, 4, 5);
    assert_elle_ok(o->from_plain(&be, out, &t2));
    assert_memory_equal(back, data, 120 * sizeof(float));
    elle__tensor blocked = elle__tensor_make(data, 2, 3, 4, 5, 1);
    assert_elle_status(o->to_plain(&be, &blocked, out), ELLE_EUNSUPPORTED);
    assert_elle_status(o->from_plain(&be, out, &blocked), ELLE_EUNSUPPORTED);
}

/* ---- convolution --------------------------------------------------------- */

/* Hand-worked examples: x = 1..9 as a 3x3 image, kernel [[1,2],[3,4]]. */
static void test_conv_forward_by_hand(void **state)
{
    (void)state;
    float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float w[4] = {1, 2, 3, 4};
    float b[1] = {0.5f};
    float y[4];
    elle__tensor tx = plain(x, 1, 1, 3, 3), ty = plain(y, 1, 1, 2, 2);

    /* stride 1, no padding: 1+4+12+20, 2+6+15+24, 4+10+21+32, 5+12+24+36 */
    elle__conv_desc cd = {.ic = 1, .oc = 1, .kh = 2, .kw = 2, .sh = 1, .sw = 1, .has_bias = 1};
    assert_elle_ok(be.ops->conv2d_fwd(&be, &cd, &tx, w, b, &ty));
    const float want1[4] = {37.5f, 47.5f, 67.5f, 77.5f};
    assert_floats_close(y, want1, 4, 1e-6, 1e-6);

    /* stride 2, padding 1: windows rows {-1,0},{1,2} x cols {-1,0},{1,2}:
     * 1*4; 2*3+3*4; 4*2+7*4; 5*1+6*2+8*3+9*4 */
    cd.sh = cd.sw = 2;
    cd.ph = cd.pw = 1;
    cd.has_bias = 0;
    assert_elle_ok(be.ops->conv2d_fwd(&be, &cd, &tx, w, NULL, &ty));
    const float want2[4] = {4, 18, 36, 77};
    assert_floats_close(y, want2, 4, 1e-6, 1e-6);

    /* weights are (oc, ic, kh, kw): 1x1 conv with w = [[2, -1], [0, 1]] maps
     * channels (x0, x1) to (2*x0 - x1, x1) */
    float x2[8] = {1, 2, 3, 4, 10, 20, 30, 40};
    float w2[4] = {2, -1, 0, 1};
    float y2[8];
    elle__tensor tx2 = plain(x2, 1, 2, 2, 2), ty2 = plain(y2, 1, 2, 2, 2);
    elle__conv_desc cd2 = {.ic = 2, .oc = 2, .kh = 1, .kw = 1, .sh = 1, .sw = 1};
    assert_elle_ok(be.ops->conv2d_fwd(&be, &cd2, &tx2, w2, NULL, &ty2));
    const float want3[8] = {-8, -16, -24, -32, 10, 20, 30, 40};
    assert_floats_close(y2, want3, 8, 1e-6, 1e-6);
}

typedef struct conv_case {
    int64_t n, ic, h, w, oc, kh, kw, sh, sw, ph, pw;
    int bias;
} conv_case;

typedef struct conv_ctx {
    elle__conv_desc cd;
    elle__tensor x, y;
    float *w, *b;
} conv_ctx;

static void conv_forward(void *p)
{
    conv_ctx *c = p;
    assert_elle_ok(be.ops->conv2d_fwd(&be, &c->cd, &c->x, c->w, c->cd.has_bias ? c->b : NULL,
                                      &c->y));
}

static void check_conv_case(const conv_case *k)
{
    /* output size straight from the documented formula */
    int64_t oh = (k->h + 2 * k->ph - k->kh) / k->sh + 1;
    int64_t ow = (k->w + 2 * k->pw - k->kw) / k->sw + 1;
    size_t nx = (size_t)(k->n * k->ic * k->h * k->w), ny = (size_t)(k->n * k->oc * oh * ow);
    size_t nw = (size_t)(k->oc * k->ic * k->kh * k->kw), nb = (size_t)k->oc;

    conv_ctx c;
    c.cd = (elle__conv_desc){.ic = k->ic, .oc = k->oc, .kh = k->kh, .kw = k->kw, .sh = k->sh,
                             .sw = k->sw, .ph = k->ph, .pw = k->pw, .has_bias = k->bias};
    c.x = plain(random_floats(nx, -1, 1), k->n, k->ic, k->h, k->w);
    c.y = plain(scratch_floats(ny), k->n, k->oc, oh, ow);
    c.w = random_floats(nw, -0.5f, 0.5f);
    c.b = random_floats(nb, -0.5f, 0.5f);
    float *r = random_floats(ny, -1, 1);
    conv_forward(&c);

    elle__tensor dy = plain(r, k->n, k->oc, oh, ow);
    elle__tensor dx = plain(filled(nx, SENTINEL), k->n, k->ic, k->h, k->w);
    assert_elle_ok(be.ops->conv2d_bwd_data(&be, &c.cd, &dy, c.w, &dx));

    /* parameter gradients accumulate onto whatever is there */
    float *dw0 = random_floats(nw, -1, 1), *db0 = random_floats(nb, -1, 1);
    float *dw = copy_of(dw0, nw), *db = copy_of(db0, nb);
    assert_elle_ok(be.ops->conv2d_bwd_weights(&be, &c.cd, &c.x, &dy, dw, k->bias ? db : NULL));
    float *gw = minus(dw, dw0, nw), *gb = minus(db, db0, nb);
    if (!k->bias)
        assert_memory_equal(db, db0, nb * sizeof(float));

    /* db == NULL skips the bias gradient and leaves dw as before */
    float *dw_nobias = copy_of(dw0, nw);
    assert_elle_ok(be.ops->conv2d_bwd_weights(&be, &c.cd, &c.x, &dy, dw_nobias, NULL));
    assert_memory_equal(dw_nobias, dw, nw * sizeof(float));

    fd_spec s = {conv_forward, &c, c.y.data, ny, r, 0};
    fd_check(&s, c.x.data, nx, dx.data, "conv dx");
    fd_check(&s, c.w, nw, gw, "conv dw");
    if (k->bias)
        fd_check(&s, c.b, nb, gb, "conv db");
}

static void test_conv_gradients(void **state)
{
    (void)state;
    trng_seed(101);
    const conv_case cases[] = {
        /* n ic  h  w oc kh kw sh sw ph pw bias */
        {2, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1, 1}, /* 3x3 stride 1 pad 1 */
        {3, 2, 7, 5, 3, 3, 3, 2, 2, 1, 1, 1}, /* 3x3 stride 2 pad 1, odd sizes, batch 3 */
        {1, 4, 6, 6, 5, 1, 1, 2, 2, 0, 0, 0}, /* 1x1 stride 2 shortcut, no bias */
        {1, 3, 7, 5, 2, 3, 3, 1, 1, 1, 1, 0}, /* batch 1, odd sizes, no bias */
        {2, 2, 7, 6, 3, 5, 3, 2, 1, 2, 0, 1}, /* rectangular kernel, mixed strides */
        {2, 3, 8, 8, 4, 3, 3, 2, 2, 0, 0, 1}, /* last row and column never covered */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_conv_case(&cases[i]);
        free_scratch(NULL);
    }
}

/* ---- batch normalisation --------------------------------------------------- */

typedef struct bn_ctx {
    elle__bn_desc bd;
    int training;
    elle__tensor x, y;
    float *gamma, *beta, *rm, *rv, *sm, *sv;
} bn_ctx;

static void bn_forward(void *p)
{
    bn_ctx *b = p;
    if (b->training)
        assert_elle_ok(be.ops->bn_fwd_train(&be, &b->bd, &b->x, b->gamma, b->beta, b->rm, b->rv,
                                            &b->y, b->sm, b->sv, NULL));
    else
        assert_elle_ok(be.ops->bn_fwd_infer(&be, &b->bd, &b->x, b->gamma, b->beta, b->rm, b->rv,
                                            &b->y, NULL));
}

/* x with a different offset and spread per channel, like real activations */
static float *bn_input(int64_t n, int64_t c, int64_t hw)
{
    float *x = scratch_floats((size_t)(n * c * hw));
    for (int64_t i = 0; i < n; i++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t j = 0; j < hw; j++)
                x[(i * c + ch) * hw + j] = 0.3f * (float)ch - 0.2f +
                                           (1.0f + 0.5f * (float)ch) * trng_range(-1, 1);
    return x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* With a fused relu, moves zero into the widest gap between a channel's
 * pre-activations gamma*(x - mean)/sqrt(var + eps) (among the middle half
 * of them) by choosing beta, so that no finite-difference step crosses the
 * kink. mean/var: the statistics the forward normalises with, computed here
 * from their definition for training mode. */
static void bn_beta_in_gap(bn_ctx *b)
{
    const int64_t n = b->x.n, c = b->x.c, hw = b->x.h * b->x.w, m_count = n * hw;
    double *v = malloc((size_t)m_count * sizeof *v);
    assert_non_null(v);
    for (int64_t ch = 0; ch < c; ch++) {
        double mean = b->rm[ch], var = b->rv[ch];
        if (b->training) {
            double sum = 0, sq = 0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < hw; j++)
                    sum += b->x.data[(i * c + ch) * hw + j];
            mean = sum / (double)m_count;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < hw; j++) {
                    double d = b->x.data[(i * c + ch) * hw + j] - mean;
                    sq += d * d;
                }
            var = sq / (double)m_count;
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < hw; j++)
                v[i * hw + j] = b->gamma[ch] * (b->x.data[(i * c + ch) * hw + j] - mean) /
                                sqrt(var + (double)b->bd.eps);
        qsort(v, (size_t)m_count, sizeof *v, cmp_double);
        int64_t best = m_count / 4;
        for (int64_t k = m_count / 4; k < (3 * m_count) / 4 && k + 1 < m_count; k++)
            if (v[k + 1] - v[k] > v[best + 1] - v[best])
                best = k;
        b->beta[ch] = (float)(-(v[best] + v[best + 1]) / 2);
    }
    free(v);
}

static void check_bn_gradients(int64_t n, int64_t c, int64_t h, int64_t w, int training,
                               int fuse_relu)
{
    size_t nx = (size_t)(n * c * h * w), nc = (size_t)c;
    bn_ctx b;
    b.bd = (elle__bn_desc){.c = c, .eps = 1e-5f, .momentum = 0.1f, .fuse_relu = fuse_relu};
    b.training = training;
    b.x = plain(bn_input(n, c, h * w), n, c, h, w);
    b.y = plain(scratch_floats(nx), n, c, h, w);
    b.gamma = random_floats(nc, 0.5f, 1.5f);
    b.beta = random_floats(nc, -0.5f, 0.5f);
    b.rm = random_floats(nc, -0.3f, 0.3f);
    b.rv = random_floats(nc, 0.5f, 2.0f);
    b.sm = scratch_floats(nc);
    b.sv = scratch_floats(nc);
    if (fuse_relu)
        bn_beta_in_gap(&b);
    float *r = random_floats(nx, -1, 1);
    assert_int_equal(be.ops->bn_workspace_bytes(&be, &b.bd, &b.x), 0);
    bn_forward(&b);

    /* the statistics the backward is given: saved batch stats or running */
    float *mean = training ? copy_of(b.sm, nc) : b.rm;
    float *var = training ? copy_of(b.sv, nc) : b.rv;
    elle__tensor dy = plain(r, n, c, h, w);
    elle__tensor dx = plain(filled(nx, SENTINEL), n, c, h, w);
    float *dg0 = random_floats(nc, -1, 1), *db0 = random_floats(nc, -1, 1);
    float *dg = copy_of(dg0, nc), *db = copy_of(db0, nc);
    assert_elle_ok(be.ops->bn_bwd(&be, &b.bd, training, &b.x, &b.y, &dy, b.gamma, mean, var, NULL,
                                  &dx, dg, db));
    float *gg = minus(dg, dg0, nc), *gb = minus(db, db0, nc);

    /* the input-gradient-only call gives the same dx */
    elle__tensor dx2 = plain(scratch_floats(nx), n, c, h, w);
    assert_elle_ok(be.ops->bn_bwd(&be, &b.bd, training, &b.x, &b.y, &dy, b.gamma, mean, var, NULL,
                                  &dx2, NULL, NULL));
    assert_memory_equal(dx2.data, dx.data, nx * sizeof(float));

    fd_spec s = {bn_forward, &b, b.y.data, nx, r, fuse_relu};
    fd_check(&s, b.x.data, nx, dx.data, training ? "bn train dx" : "bn infer dx");
    fd_check(&s, b.gamma, nc, gg, "bn dgamma");
    fd_check(&s, b.beta, nc, gb, "bn dbeta");
}

static void test_bn_gradients(void **state)
{
    (void)state;
    trng_seed(202);
    for (int training = 1; training >= 0; training--) {
        for (int fuse = 0; fuse <= 1; fuse++) {
            check_bn_gradients(2, 3, 4, 5, training, fuse);
            free_scratch(NULL);
            check_bn_gradients(3, 2, 3, 3, training, fuse);
            free_scratch(NULL);
            /* BatchNorm1d: (n, c, 1, 1), statistics over the batch only */
            check_bn_gradients(6, 4, 1, 1, training, fuse);
            free_scratch(NULL);
        }
    }
}

/* Batch statistics, the training output and the running statistics after
 * two steps, all computed here in double from the definitions. */
static void test_bn_train_statistics(void **state)
{
    (void)state;
    trng_seed(303);
    const int64_t n = 3, c = 2, h = 4, w = 3, hw = h * w, m_count = n * hw;
    const size_t nx = (size_t)(n * c * hw);
    const double momentum = 0.25;
    elle__bn_desc bd = {.c = c, .eps = 1e-3f, .momentum = (float)momentum, .fuse_relu = 0};
    float *gamma = random_floats(2, 0.5f, 1.5f), *beta = random_floats(2, -1, 1);
    float rm[2] = {0.1f, -0.4f}, rv[2] = {1.5f, 0.7f};
    double want_rm[2] = {0.1, -0.4}, want_rv[2] = {1.5, 0.7};
    float sm[2], sv[2];
    float *y = scratch_floats(nx);
    elle__tensor ty = plain(y, n, c, h, w);

    for (int step = 0; step < 2; step++) {
        float *x = bn_input(n, c, hw);
        elle__tensor tx = plain(x, n, c, h, w);
        assert_elle_ok(
            be.ops->bn_fwd_train(&be, &bd, &tx, gamma, beta, rm, rv, &ty, sm, sv, NULL));
        for (int64_t ch = 0; ch < c; ch++) {
            double sum = 0, sq = 0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < hw; j++)
                    sum += x[(i * c + ch) * hw + j];
            double mean = sum / (double)m_count;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < hw; j++) {
                    double d = x[(i * c + ch) * hw + j] - mean;
                    sq += d * d;
                }
            double var = sq / (double)m_count;
            assert_true(fabs(sm[ch] - mean) <= 1e-6 + 1e-6 * fabs(mean));
            assert_true(fabs(sv[ch] - var) <= 1e-6 + 1e-6 * var);
            want_rm[ch] = (1 - momentum) * want_rm[ch] + momentum * mean;
            want_rv[ch] = (1 - momentum) * want_rv[ch] +
                          momentum * var * (double)m_count / (double)(m_count - 1);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < hw; j++) {
                    int64_t at = (i * c + ch) * hw + j;
                    double want = gamma[ch] * (x[at] - mean) / sqrt(var + 1e-3) + beta[ch];
                    assert_true(fabs(y[at] - want) <= 1e-5 + 1e-5 * fabs(want));
                }
        }
    }
    for (int ch = 0; ch < 2; ch++) {
        assert_true(fabs(rm[ch] - want_rm[ch]) <= 1e-6 + 1e-5 * fabs(want_rm[ch]));
        assert_true(fabs(rv[ch] - want_rv[ch]) <= 1e-6 + 1e-5 * fabs(want_rv[ch]));
    }

    /* M = 1 (one sample of a (1, c, 1, 1) BatchNorm1d): PyTorch refuses; the
     * reference uses the zero biased variance instead of dividing by zero */
    float x1[2] = {0.7f, -2.0f}, y1[2];
    float rm1[2] = {0, 0}, rv1[2] = {1, 1};
    elle__tensor tx1 = plain(x1, 1, 2, 1, 1), ty1 = plain(y1, 1, 2, 1, 1);
    assert_elle_ok(be.ops->bn_fwd_train(&be, &bd, &tx1, gamma, beta, rm1, rv1, &ty1, sm, sv, NULL));
    assert_true(sv[0] == 0.0f && sv[1] == 0.0f);
    assert_true(fabs(rv1[0] - (1 - momentum)) < 1e-7 && fabs(rm1[1] - momentum * -2.0) < 1e-7);
    assert_true(fabs(y1[0] - beta[0]) < 1e-6 && fabs(y1[1] - beta[1]) < 1e-6);
}

static void test_bn_infer_forward(void **state)
{
    (void)state;
    trng_seed(404);
    const int64_t n = 2, c = 3, hw = 6;
    const size_t nx = (size_t)(n * c * hw);
    float *x = bn_input(n, c, hw), *y = scratch_floats(nx);
    float *gamma = random_floats(3, 0.5f, 1.5f), *beta = random_floats(3, -1, 1);
    float *rm = random_floats(3, -1, 1), *rv = random_floats(3, 0.2f, 3.0f);
    elle__tensor tx = plain(x, n, c, 2, 3), ty = plain(y, n, c, 2, 3);
    for (int fuse = 0; fuse <= 1; fuse++) {
        elle__bn_desc bd = {.c = c, .eps = 1e-5f, .momentum = 0.1f, .fuse_relu = fuse};
        float *rm_before = copy_of(rm, 3), *rv_before = copy_of(rv, 3);
        assert_elle_ok(be.ops->bn_fwd_infer(&be, &bd, &tx, gamma, beta, rm, rv, &ty, NULL));
        assert_memory_equal(rm, rm_before, 3 * sizeof(float));
        assert_memory_equal(rv, rv_before, 3 * sizeof(float));
        int negatives = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t ch = 0; ch < c; ch++)
                for (int64_t j = 0; j < hw; j++) {
                    int64_t at = (i * c + ch) * hw + j;
                    double want =
                        gamma[ch] * (x[at] - rm[ch]) / sqrt((double)rv[ch] + 1e-5) + beta[ch];
                    if (want < 0)
                        negatives++;
                    if (fuse && want < 0)
                        want = 0;
                    assert_true(fabs(y[at] - want) <= 1e-6 + 1e-5 * fabs(want));
                }
        assert_true(negatives > 0); /* the relu case really clips something */
    }
}

/* ---- relu and add ------------------------------------------------------- */

typedef struct unary_ctx {
    elle__tensor x, y;
} unary_ctx;

static void relu_forward(void *p)
{
    unary_ctx *u = p;
    assert_elle_ok(be.ops->relu_fwd(&be, &u->x, &u->y));
}

static void test_relu(void **state)
{
    (void)state;
    trng_seed(505);
    const size_t nx = 2 * 3 * 4 * 4;
    float *x = scratch_floats(nx);
    /* |x| >= 0.1: a step of 1e-2 never crosses the kink */
    for (size_t i = 0; i < nx; i++) {
        float v = trng_range(0.1f, 1.5f);
        x[i] = (trng_next() & 1) ? v : -v;
    }
    unary_ctx u = {plain(x, 2, 3, 4, 4), plain(scratch_floats(nx), 2, 3, 4, 4)};
    relu_forward(&u);
    for (size_t i = 0; i < nx; i++)
        assert_true(u.y.data[i] == (x[i] > 0 ? x[i] : 0.0f));

    float *r = random_floats(nx, -1, 1);
    elle__tensor dy = plain(r, 2, 3, 4, 4), dx = plain(filled(nx, SENTINEL), 2, 3, 4, 4);
    assert_elle_ok(be.ops->relu_bwd(&be, &u.y, &dy, &dx));
    fd_spec s = {relu_forward, &u, u.y.data, nx, r, 1};
    fd_check(&s, x, nx, dx.data, "relu dx");

    /* in place: y aliases x, dx aliases dy */
    float *x2 = copy_of(x, nx), *g2 = copy_of(r, nx);
    elle__tensor t2 = plain(x2, 2, 3, 4, 4), tg = plain(g2, 2, 3, 4, 4);
    assert_elle_ok(be.ops->relu_fwd(&be, &t2, &t2));
    assert_memory_equal(x2, u.y.data, nx * sizeof(float));
    assert_elle_ok(be.ops->relu_bwd(&be, &t2, &tg, &tg));
    assert_memory_equal(g2, dx.data, nx * sizeof(float));
}

typedef struct add_ctx {
    elle__tensor a, b, y;
} add_ctx;

static void add_forward(void *p)
{
    add_ctx *c = p;
    assert_elle_ok(be.ops->add(&be, &c->a, &c->b, &c->y));
}

static void test_add(void **state)
{
    (void)state;
    trng_seed(606);
    const size_t n = 2 * 3 * 5 * 4;
    float *a = random_floats(n, -2, 2), *b = random_floats(n, -2, 2);
    add_ctx c = {plain(a, 2, 3, 5, 4), plain(b, 2, 3, 5, 4), plain(scratch_floats(n), 2, 3, 5, 4)};
    add_forward(&c);
    for (size_t i = 0; i < n; i++)
        assert_true(c.y.data[i] == a[i] + b[i]);

    /* the gradient of a sum reaches both inputs unchanged: dJ/da = dJ/db = r */
    float *r = random_floats(n, -1, 1);
    fd_spec s = {add_forward, &c, c.y.data, n, r, 0};
    fd_check(&s, a, n, r, "add da");
    fd_check(&s, b, n, r, "add db");

    /* y may alias a or b (residual connections add in place) */
    float *a2 = copy_of(a, n), *b2 = copy_of(b, n);
    elle__tensor ta = plain(a2, 2, 3, 5, 4), tb = plain(b2, 2, 3, 5, 4);
    assert_elle_ok(be.ops->add(&be, &ta, &c.b, &ta));
    assert_memory_equal(a2, c.y.data, n * sizeof(float));
    assert_elle_ok(be.ops->add(&be, &c.a, &tb, &tb));
    assert_memory_equal(b2, c.y.data, n * sizeof(float));
}

/* ---- pooling ------------------------------------------------------------ */

static void test_pool_forward_by_hand(void **state)
{
    (void)state;
    /* all-negative input, 3x3 window, padding 1: padding must not win the
     * max (it is -inf) and counts in the average's divisor (9) */
    float x[4] = {-1, -2, -3, -4}, y[4];
    int32_t ws[4];
    elle__tensor tx = plain(x, 1, 1, 2, 2), ty = plain(y, 1, 1, 2, 2);
    elle__pool_desc max3 = {ELLE__POOL_MAX, 3, 3, 1, 1, 1, 1};
    assert_int_equal(be.ops->pool_workspace_bytes(&be, &max3, &tx, &ty), 4 * sizeof(int32_t));
    assert_elle_ok(be.ops->pool_fwd(&be, &max3, &tx, &ty, ws));
    for (int i = 0; i < 4; i++) {
        assert_true(y[i] == -1.0f);
        assert_int_equal(ws[i], 0);
    }
    elle__pool_desc avg3 = {ELLE__POOL_AVG, 3, 3, 1, 1, 1, 1};
    assert_int_equal(be.ops->pool_workspace_bytes(&be, &avg3, &tx, &ty), 0);
    assert_elle_ok(be.ops->pool_fwd(&be, &avg3, &tx, &ty, NULL));
    for (int i = 0; i < 4; i++)
        assert_true(fabsf(y[i] - (-10.0f / 9.0f)) < 1e-6f);

    /* ties: the first maximum in scan order takes the gradient */
    float xt[4] = {1, 3, 3, 0}, yt[1], dy[1] = {2.5f}, dx[4];
    int32_t wt[1];
    elle__tensor txt = plain(xt, 1, 1, 2, 2), tyt = plain(yt, 1, 1, 1, 1);
    elle__tensor tdy = plain(dy, 1, 1, 1, 1), tdx = plain(dx, 1, 1, 2, 2);
    elle__pool_desc max2 = {ELLE__POOL_MAX, 2, 2, 2, 2, 0, 0};
    assert_elle_ok(be.ops->pool_fwd(&be, &max2, &txt, &tyt, wt));
    assert_true(yt[0] == 3.0f);
    assert_int_equal(wt[0], 1);
    assert_elle_ok(be.ops->pool_bwd(&be, &max2, &tdy, wt, &tdx));
    const float want_dx[4] = {0, 2.5f, 0, 0};
    assert_memory_equal(dx, want_dx, sizeof dx);

    /* 2x2 average over a 4x4 image of 0..15 */
    float x16[16], y4[4];
    for (int i = 0; i < 16; i++)
        x16[i] = (float)i;
    elle__tensor t16 = plain(x16, 1, 1, 4, 4), t4 = plain(y4, 1, 1, 2, 2);
    elle__pool_desc avg2 = {ELLE__POOL_AVG, 2, 2, 2, 2, 0, 0};
    assert_elle_ok(be.ops->pool_fwd(&be, &avg2, &t16, &t4, NULL));
    const float want_avg[4] = {2.5f, 4.5f, 10.5f, 12.5f};
    assert_floats_close(y4, want_avg, 4, 1e-6, 1e-6);
}

typedef struct pool_ctx {
    elle__pool_desc pd;
    elle__tensor x, y;
    int32_t *ws;
} pool_ctx;

static void pool_forward(void *p)
{
    pool_ctx *c = p;
    assert_elle_ok(be.ops->pool_fwd(&be, &c->pd, &c->x, &c->y, c->ws));
}

static void check_pool_case(elle__pool_desc pd, int64_t n, int64_t c, int64_t h, int64_t w)
{
    int64_t oh = (h + 2 * pd.ph - pd.kh) / pd.sh + 1, ow = (w + 2 * pd.pw - pd.kw) / pd.sw + 1;
    size_t nx = (size_t)(n * c * h * w), ny = (size_t)(n * c * oh * ow);
    pool_ctx p;
    p.pd = pd;
    /* max: distinct values 0.05 apart, so no step of 1e-2 changes an argmax */
    p.x = plain(pd.kind == ELLE__POOL_MAX ? distinct_floats(nx, 0.05f) : random_floats(nx, -1, 1),
                n, c, h, w);
    p.y = plain(scratch_floats(ny), n, c, oh, ow);
    size_t ws_bytes = be.ops->pool_workspace_bytes(&be, &pd, &p.x, &p.y);
    assert_int_equal(ws_bytes, pd.kind == ELLE__POOL_MAX ? ny * sizeof(int32_t) : 0);
    p.ws = ws_bytes ? (int32_t *)scratch_floats(ny) : NULL;
    pool_forward(&p);

    float *r = random_floats(ny, -1, 1);
    elle__tensor dy = plain(r, n, c, oh, ow), dx = plain(filled(nx, SENTINEL), n, c, h, w);
    assert_elle_ok(be.ops->pool_bwd(&be, &pd, &dy, p.ws, &dx));
    fd_spec s = {pool_forward, &p, p.y.data, ny, r, 0};
    fd_check(&s, p.x.data, nx, dx.data, pd.kind == ELLE__POOL_MAX ? "max pool dx" : "avg pool dx");
}

static void test_pool_gradients(void **state)
{
    (void)state;
    trng_seed(707);
    check_pool_case((elle__pool_desc){ELLE__POOL_MAX, 2, 2, 2, 2, 0, 0}, 2, 3, 6, 6);
    check_pool_case((elle__pool_desc){ELLE__POOL_MAX, 3, 3, 2, 2, 1, 1}, 1, 2, 7, 5);
    check_pool_case((elle__pool_desc){ELLE__POOL_AVG, 2, 2, 2, 2, 0, 0}, 2, 3, 6, 6);
    check_pool_case((elle__pool_desc){ELLE__POOL_AVG, 3, 3, 2, 2, 1, 1}, 2, 2, 7, 5);
    /* global average pooling: the window is the whole image */
    check_pool_case((elle__pool_desc){ELLE__POOL_AVG, 5, 7, 1, 1, 0, 0}, 2, 3, 5, 7);
}

/* ---- fully connected ---------------------------------------------------- */

static void test_linear_forward_by_hand(void **state)
{
    (void)state;
    /* x (1, 2, 1, 2) flattens in NCHW order to (1, 2, 3, 4) */
    float x[4] = {1, 2, 3, 4}, w[8] = {1, 2, 3, 4, -1, 0, 1, 0}, b[2] = {0.5f, -0.5f}, y[2];
    elle__tensor tx = plain(x, 1, 2, 1, 2), ty = plain(y, 1, 2, 1, 1);
    assert_elle_ok(be.ops->linear_fwd(&be, &tx, w, b, &ty));
    const float want[2] = {30.5f, 1.5f};
    assert_floats_close(y, want, 2, 1e-6, 1e-6);
    assert_elle_ok(be.ops->linear_fwd(&be, &tx, w, NULL, &ty));
    const float want_nob[2] = {30, 2};
    assert_floats_close(y, want_nob, 2, 1e-6, 1e-6);
}

typedef struct linear_ctx {
    elle__tensor x, y;
    float *w, *b;
} linear_ctx;

static void linear_forward(void *p)
{
    linear_ctx *l = p;
    assert_elle_ok(be.ops->linear_fwd(&be, &l->x, l->w, l->b, &l->y));
}

static void test_linear_gradients(void **state)
{
    (void)state;
    trng_seed(808);
    const int64_t n = 3, c = 2, h = 3, w = 2, in = c * h * w, out = 5;
    const size_t nx = (size_t)(n * in), ny = (size_t)(n * out), nw = (size_t)(out * in);
    linear_ctx l = {plain(random_floats(nx, -1, 1), n, c, h, w), plain(scratch_floats(ny), n, out, 1, 1),
                    random_floats(nw, -0.5f, 0.5f), random_floats((size_t)out, -0.5f, 0.5f)};
    linear_forward(&l);
    float *r = random_floats(ny, -1, 1);
    elle__tensor dy = plain(r, n, out, 1, 1), dx = plain(filled(nx, SENTINEL), n, c, h, w);
    assert_elle_ok(be.ops->linear_bwd_data(&be, &dy, l.w, &dx));
    float *dw0 = random_floats(nw, -1, 1), *db0 = random_floats((size_t)out, -1, 1);
    float *dw = copy_of(dw0, nw), *db = copy_of(db0, (size_t)out);
    assert_elle_ok(be.ops->linear_bwd_weights(&be, &l.x, &dy, dw, db));
    float *gw = minus(dw, dw0, nw), *gb = minus(db, db0, (size_t)out);
    float *dw2 = copy_of(dw0, nw);
    assert_elle_ok(be.ops->linear_bwd_weights(&be, &l.x, &dy, dw2, NULL));
    assert_memory_equal(dw2, dw, nw * sizeof(float));

    fd_spec s = {linear_forward, &l, l.y.data, ny, r, 0};
    fd_check(&s, l.x.data, nx, dx.data, "linear dx");
    fd_check(&s, l.w, nw, gw, "linear dw");
    fd_check(&s, l.b, (size_t)out, gb, "linear db");
}

/* ---- softmax cross-entropy ------------------------------------------------ */

typedef struct xent_ctx {
    elle__tensor z;
    const int32_t *labels;
    float *loss;
} xent_ctx;

static void xent_forward(void *p)
{
    xent_ctx *x = p;
    assert_elle_ok(be.ops->xent_fwd(&be, &x->z, x->labels, x->loss));
}

static void test_xent_gradients(void **state)
{
    (void)state;
    trng_seed(909);
    enum { N = 4, K = 6 };
    int32_t labels[N] = {0, 5, 2, 2};
    xent_ctx x = {plain(random_floats(N * K, -3, 3), N, K, 1, 1), labels, scratch_floats(N)};
    xent_forward(&x);
    /* the loss is the definition, evaluated naively (the logits are small) */
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int j = 0; j < K; j++)
            s += exp(x.z.data[i * K + j]);
        double want = log(s) - x.z.data[i * K + labels[i]];
        assert_true(fabs(x.loss[i] - want) <= 1e-6 + 1e-6 * want);
    }

    /* J = sum coef_i loss_i: coef = 1/n (the batch mean), then arbitrary */
    float *coefs[2] = {filled(N, 1.0f / N), random_floats(N, -1, 2)};
    for (int t = 0; t < 2; t++) {
        elle__tensor dz = plain(filled(N * K, SENTINEL), N, K, 1, 1);
        assert_elle_ok(be.ops->xent_bwd(&be, &x.z, labels, coefs[t], &dz));
        fd_spec s = {xent_forward, &x, x.loss, N, coefs[t], 0};
        fd_check(&s, x.z.data, N * K, dz.data, t == 0 ? "xent dz (mean)" : "xent dz (coef)");
    }
}

/* One row of logits: checks loss and the gradient with coef 1. */
static void check_xent_row(const float *z, int k, int32_t label, double want_loss,
                           const float *want_grad)
{
    float zz[8], loss[1], dz[8], coef[1] = {1.0f};
    memcpy(zz, z, (size_t)k * sizeof(float));
    elle__tensor tz = plain(zz, 1, k, 1, 1), tdz = plain(dz, 1, k, 1, 1);
    assert_elle_ok(be.ops->xent_fwd(&be, &tz, &label, loss));
    assert_true(isfinite(loss[0]));
    if (!(fabs(loss[0] - want_loss) <= 1e-6 + 1e-6 * fabs(want_loss))) {
        print_error("loss %.9g, expected %.9g\n", (double)loss[0], want_loss);
        fail();
    }
    assert_elle_ok(be.ops->xent_bwd(&be, &tz, &label, coef, &tdz));
    for (int j = 0; j < k; j++)
        assert_true(isfinite(dz[j]));
    assert_floats_close(dz, want_grad, (size_t)k, 1e-6, 1e-6);
}

static void test_xent_extreme_logits(void **state)
{
    (void)state;
    const float huge[3] = {1e30f, -1e30f, 0.0f};
    const float g0[3] = {0, 0, 0}, g1[3] = {1, -1, 0}, g2[3] = {1, 0, -1};
    check_xent_row(huge, 3, 0, 0.0, g0);
    check_xent_row(huge, 3, 1, 2e30, g1);
    check_xent_row(huge, 3, 2, 1e30, g2);

    const float equal[2] = {1000, 1000}, half[2] = {-0.5f, 0.5f};
    check_xent_row(equal, 2, 0, log(2.0), half);
    const float equal_huge[2] = {1e30f, 1e30f};
    check_xent_row(equal_huge, 2, 0, log(2.0), half);
    const float low[4] = {-1000, -1000, -1000, -1000};
    const float quarter[4] = {0.25f, 0.25f, 0.25f, -0.75f};
    check_xent_row(low, 4, 3, log(4.0), quarter);
}

/* ---- flat ops ------------------------------------------------------------ */

static void test_flat_ops(void **state)
{
    (void)state;
    const elle__backend_ops *o = be.ops;
    float x[7] = {-2.0f, -0.0f, 0.0f, 3e-30f, -1e-30f, 5.0f, 1e30f}, y[7];
    const float want_sign[7] = {-1, 0, 0, 1, -1, 1, 1};
    assert_elle_ok(o->sign(&be, 7, x, y));
    assert_memory_equal(y, want_sign, sizeof y);
    assert_elle_ok(o->sign(&be, 7, x, x)); /* in place */
    assert_memory_equal(x, want_sign, sizeof x);

    float a[3] = {1, 2, 3}, b[3] = {1, 1, 2};
    assert_elle_ok(o->axpy(&be, 3, 0.5f, b, a));
    const float want_axpy[3] = {1.5f, 2.5f, 4.0f};
    assert_memory_equal(a, want_axpy, sizeof a);
    assert_elle_ok(o->scale(&be, 3, -2.0f, a));
    const float want_scale[3] = {-3.0f, -5.0f, -8.0f};
    assert_memory_equal(a, want_scale, sizeof a);
    assert_elle_ok(o->fill(&be, 2, 7.0f, a));
    assert_true(a[0] == 7.0f && a[1] == 7.0f && a[2] == -8.0f);
    float c[5] = {-1.0f, 0.0f, 0.5f, 1.0f, 2.0f};
    assert_elle_ok(o->clamp(&be, 5, 0.0f, 1.0f, c));
    const float want_clamp[5] = {0.0f, 0.0f, 0.5f, 1.0f, 1.0f};
    assert_memory_equal(c, want_clamp, sizeof c);

    /* empty calls are fine; negative counts and bad intervals are not */
    assert_elle_ok(o->fill(&be, 0, 1.0f, a));
    assert_elle_status(o->fill(&be, -1, 1.0f, a), ELLE_EINVAL);
    assert_elle_status(o->scale(&be, 3, 1.0f, NULL), ELLE_EINVAL);
    assert_elle_status(o->clamp(&be, 3, 1.0f, 0.0f, c), ELLE_EINVAL);
    assert_elle_status(o->clamp(&be, 3, NAN, 1.0f, c), ELLE_EINVAL);
}

static void test_project_linf(void **state)
{
    (void)state;
    trng_seed(1010);
    enum { S = 4, P = 200 };
    const float *x0 = random_floats(S * P, 0, 1);
    float *start = scratch_floats(S * P);
    for (int i = 0; i < S * P; i++)
        start[i] = x0[i] + trng_range(-0.3f, 0.3f);
    const float eps_s[S] = {0.0f, 0.05f, 0.1f, 0.2f};

    for (int variant = 0; variant < 4; variant++) {
        const int per_sample = variant & 1, do_clamp = (variant >> 1) & 1;
        float *x = copy_of(start, S * P);
        assert_elle_ok(be.ops->project_linf(&be, S, P, x0, 0.1f, per_sample ? eps_s : NULL,
                                            do_clamp, 0.0f, 1.0f, x));
        int inside = 0, moved = 0;
        for (int s = 0; s < S; s++) {
            double e = per_sample ? eps_s[s] : 0.1;
            for (int j = 0; j < P; j++) {
                int i = s * P + j;
                double d0 = (double)start[i] - x0[i], d = (double)x[i] - x0[i];
                /* in the ball (up to float rounding of x0 +- e) */
                assert_true(fabs(d) <= e + 1e-6);
                if (do_clamp)
                    assert_true(x[i] >= 0.0f && x[i] <= 1.0f);
                /* where the projection alone would put it */
                double p = fabs(d0) <= e ? (double)start[i] : x0[i] + (d0 > 0 ? e : -e);
                int clamped = do_clamp && (p < 0.0 || p > 1.0);
                if (clamped) {
                    assert_true(x[i] == (p < 0.0 ? 0.0f : 1.0f));
                } else if (fabs(d0) <= e) {
                    /* already inside: untouched, bit for bit */
                    assert_true(x[i] == start[i]);
                    inside++;
                } else {
                    /* outside: on the face of the ball, on the same side */
                    assert_true(fabs(fabs(d) - e) <= 1e-6);
                    assert_true(d * d0 >= 0.0);
                    moved++;
                }
            }
        }
        assert_true(inside > 0 && moved > 0);
        if (per_sample)
            for (int j = 0; j < P; j++) /* radius 0: x collapses onto x0 */
                assert_true(x[j] == x0[j]);
    }

    float x1[2] = {0, 0}, bad_eps[2] = {0.1f, -0.1f};
    assert_elle_status(be.ops->project_linf(&be, 2, 1, x0, 0.1f, bad_eps, 0, 0, 1, x1),
                       ELLE_EINVAL);
    assert_elle_status(be.ops->project_linf(&be, 2, 1, x0, -1.0f, NULL, 0, 0, 1, x1), ELLE_EINVAL);
    assert_elle_status(be.ops->project_linf(&be, 2, 1, NULL, 0.1f, NULL, 0, 0, 1, x1), ELLE_EINVAL);
}

static void test_uniform(void **state)
{
    (void)state;
    enum { N = 100000 };
    float *u = scratch_floats(N), *v = scratch_floats(N), *w = scratch_floats(N), *ref = scratch_floats(N);
    assert_elle_ok(be.ops->uniform(&be, N, 2024, 17, -1.0f, 1.0f, u));
    double sum = 0, sq = 0;
    for (int i = 0; i < N; i++) {
        assert_true(u[i] >= -1.0f && u[i] < 1.0f);
        sum += u[i];
        sq += (double)u[i] * u[i];
    }
    double mean = sum / N, var = sq / N - mean * mean;
    /* sd of the mean: 0.577/sqrt(1e5) = 1.8e-3 */
    assert_true(fabs(mean) < 1e-2);
    assert_true(fabs(var - 4.0 / 12.0) < 1e-2);

    /* same (seed, counter): same numbers, also on a shifted interval */
    assert_elle_ok(be.ops->uniform(&be, N, 2024, 17, -1.0f, 1.0f, v));
    assert_memory_equal(u, v, N * sizeof(float));
    /* it is the stream of core/rng.h that every backend shares */
    elle__rng_uniform_range(2024, 17, 0, N, -1.0f, 1.0f, ref);
    assert_memory_equal(u, ref, N * sizeof(float));
    /* another counter or seed: other numbers */
    assert_elle_ok(be.ops->uniform(&be, N, 2024, 18, -1.0f, 1.0f, w));
    assert_memory_not_equal(u, w, N * sizeof(float));
    assert_elle_ok(be.ops->uniform(&be, N, 2025, 17, -1.0f, 1.0f, w));
    assert_memory_not_equal(u, w, N * sizeof(float));

    assert_elle_ok(be.ops->uniform(&be, 1000, 1, 0, 2.0f, 5.0f, w));
    for (int i = 0; i < 1000; i++)
        assert_true(w[i] >= 2.0f && w[i] <= 5.0f);
    assert_elle_status(be.ops->uniform(&be, 10, 1, 0, 1.0f, 0.0f, w), ELLE_EINVAL);
    assert_elle_status(be.ops->uniform(&be, -1, 1, 0, 0.0f, 1.0f, w), ELLE_EINVAL);
}

/* ---- error paths ---------------------------------------------------------- */

static void expect_error(int rc, int want, const char *needle, const char *expr, int line)
{
    elle_test_status(rc, want, expr, __FILE__, line);
    if (needle && !strstr(elle_error_last()->message, needle)) {
        print_error("%s: message \"%s\" does not mention \"%s\"\n", expr,
                    elle_error_last()->message, needle);
        _fail(__FILE__, line);
    }
    elle_error_clear();
}
#define EXPECT_ERROR(expr, want, needle) expect_error((expr), (want), (needle), #expr, __LINE__)

static void test_errors(void **state)
{
    (void)state;
    const elle__backend_ops *o = be.ops;
    float *xd = scratch_floats(2 * 4 * 6 * 6), *yd = scratch_floats(2 * 8 * 6 * 6), *wd = scratch_floats(8 * 4 * 9);
    elle_error_clear();

    elle__conv_desc cd = {.ic = 3, .oc = 8, .kh = 3, .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1};
    elle__tensor x4 = plain(xd, 2, 4, 6, 6), y = plain(yd, 2, 8, 6, 6);
    EXPECT_ERROR(o->conv2d_fwd(&be, &cd, &x4, wd, NULL, &y), ELLE_ESHAPE, "conv2d_fwd");
    EXPECT_ERROR(o->conv2d_fwd(&be, &cd, &x4, wd, NULL, &y), ELLE_ESHAPE, "4 channels");
    cd.ic = 4;
    elle__tensor y_bad = plain(yd, 2, 8, 5, 6);
    EXPECT_ERROR(o->conv2d_fwd(&be, &cd, &x4, wd, NULL, &y_bad), ELLE_ESHAPE, "(2, 8, 5, 6)");
    EXPECT_ERROR(o->conv2d_bwd_data(&be, &cd, &y_bad, wd, &x4), ELLE_ESHAPE, "conv2d_bwd_data");
    EXPECT_ERROR(o->conv2d_bwd_weights(&be, &cd, &x4, &y_bad, wd, NULL), ELLE_ESHAPE,
                 "conv2d_bwd_weights");
    EXPECT_ERROR(o->conv2d_fwd(&be, &cd, NULL, wd, NULL, &y), ELLE_EINVAL, "x");
    EXPECT_ERROR(o->conv2d_fwd(&be, NULL, &x4, wd, NULL, &y), ELLE_EINVAL, "conv2d_fwd");
    EXPECT_ERROR(o->conv2d_fwd(&be, &cd, &x4, NULL, NULL, &y), ELLE_EINVAL, "w");
    cd.has_bias = 1;
    EXPECT_ERROR(o->conv2d_fwd(&be, &cd, &x4, wd, NULL, &y), ELLE_EINVAL, "has_bias");
    cd.has_bias = 0;
    cd.sh = 0;
    EXPECT_ERROR(o->conv2d_fwd(&be, &cd, &x4, wd, NULL, &y), ELLE_EINVAL, "stride");
    cd.sh = 1;
    assert_elle_ok(o->conv2d_fwd(&be, &cd, &x4, wd, NULL, &y));
    elle__tensor x_blocked = elle__tensor_make(xd, 2, 4, 6, 6, 1);
    EXPECT_ERROR(o->conv2d_fwd(&be, &cd, &x_blocked, wd, NULL, &y), ELLE_EUNSUPPORTED, "layout");
    elle__tensor x_empty = plain(xd, 0, 4, 6, 6);
    EXPECT_ERROR(o->conv2d_fwd(&be, &cd, &x_empty, wd, NULL, &y), ELLE_ESHAPE, "positive");
    elle__tensor x_nodata = plain(NULL, 2, 4, 6, 6);
    EXPECT_ERROR(o->conv2d_fwd(&be, &cd, &x_nodata, wd, NULL, &y), ELLE_EINVAL, "no data");

    elle__bn_desc bd = {.c = 3, .eps = 1e-5f, .momentum = 0.1f};
    float st[8] = {1, 1, 1, 1, 1, 1, 1, 1}, st2[8], st3[8], st4[8], st5[8], st6[8];
    elle__tensor x4b = plain(xd, 2, 4, 6, 6), y4b = plain(yd, 2, 4, 6, 6);
    EXPECT_ERROR(o->bn_fwd_train(&be, &bd, &x4b, st, st, st2, st3, &y4b, st4, st5, NULL),
                 ELLE_ESHAPE, "bn_fwd_train");
    bd.c = 4;
    elle__tensor y_wrong = plain(yd, 2, 4, 6, 5);
    EXPECT_ERROR(o->bn_fwd_infer(&be, &bd, &x4b, st, st, st2, st3, &y_wrong, NULL), ELLE_ESHAPE,
                 "bn_fwd_infer");
    EXPECT_ERROR(o->bn_fwd_train(&be, &bd, &x4b, st, st, st2, st3, &y4b, NULL, st5, NULL),
                 ELLE_EINVAL, "save_mean");
    EXPECT_ERROR(o->bn_bwd(&be, &bd, 1, &x4b, &y4b, &y_wrong, st, st, st, NULL, &y4b, st6, NULL),
                 ELLE_ESHAPE, "bn_bwd");

    elle__tensor a = plain(xd, 2, 3, 4, 5), b = plain(yd, 2, 3, 5, 4);
    EXPECT_ERROR(o->add(&be, &a, &b, &a), ELLE_ESHAPE, "add");
    EXPECT_ERROR(o->relu_fwd(&be, &a, &b), ELLE_ESHAPE, "relu_fwd");
    EXPECT_ERROR(o->relu_bwd(&be, &a, &a, NULL), ELLE_EINVAL, "dx");

    elle__pool_desc pd = {ELLE__POOL_MAX, 2, 2, 2, 2, 0, 0};
    elle__tensor px = plain(xd, 2, 4, 6, 6), py = plain(yd, 2, 4, 2, 3);
    int32_t ws[64];
    EXPECT_ERROR(o->pool_fwd(&be, &pd, &px, &py, ws), ELLE_ESHAPE, "pool_fwd");
    py = plain(yd, 2, 4, 3, 3);
    EXPECT_ERROR(o->pool_fwd(&be, &pd, &px, &py, NULL), ELLE_EINVAL, "ws");
    pd.ph = 2;
    EXPECT_ERROR(o->pool_fwd(&be, &pd, &px, &py, ws), ELLE_EINVAL, "padding");

    elle__tensor lx = plain(xd, 2, 4, 3, 3), ly = plain(yd, 3, 5, 1, 1);
    EXPECT_ERROR(o->linear_fwd(&be, &lx, wd, NULL, &ly), ELLE_ESHAPE, "linear_fwd");
    ly = plain(yd, 2, 5, 1, 2);
    EXPECT_ERROR(o->linear_bwd_weights(&be, &lx, &ly, wd, NULL), ELLE_ESHAPE, "linear_bwd_weights");

    int32_t labels[2] = {0, 3};
    float loss[2];
    elle__tensor z = plain(xd, 2, 3, 1, 1), z_bad = plain(xd, 2, 3, 2, 1);
    EXPECT_ERROR(o->xent_fwd(&be, &z_bad, labels, loss), ELLE_ESHAPE, "xent_fwd");
    EXPECT_ERROR(o->xent_fwd(&be, &z, labels, loss), ELLE_EINVAL, "label");
    EXPECT_ERROR(o->xent_fwd(&be, &z, NULL, loss), ELLE_EINVAL, "labels");
    labels[1] = 2;
    EXPECT_ERROR(o->xent_bwd(&be, &z, labels, NULL, &z), ELLE_EINVAL, "coef");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_table_complete, free_scratch),
        cmocka_unit_test_teardown(test_memory, free_scratch),
        cmocka_unit_test_teardown(test_layouts, free_scratch),
        cmocka_unit_test_teardown(test_conv_forward_by_hand, free_scratch),
        cmocka_unit_test_teardown(test_conv_gradients, free_scratch),
        cmocka_unit_test_teardown(test_bn_gradients, free_scratch),
        cmocka_unit_test_teardown(test_bn_train_statistics, free_scratch),
        cmocka_unit_test_teardown(test_bn_infer_forward, free_scratch),
        cmocka_unit_test_teardown(test_relu, free_scratch),
        cmocka_unit_test_teardown(test_add, free_scratch),
        cmocka_unit_test_teardown(test_pool_forward_by_hand, free_scratch),
        cmocka_unit_test_teardown(test_pool_gradients, free_scratch),
        cmocka_unit_test_teardown(test_linear_forward_by_hand, free_scratch),
        cmocka_unit_test_teardown(test_linear_gradients, free_scratch),
        cmocka_unit_test_teardown(test_xent_gradients, free_scratch),
        cmocka_unit_test_teardown(test_xent_extreme_logits, free_scratch),
        cmocka_unit_test_teardown(test_flat_ops, free_scratch),
        cmocka_unit_test_teardown(test_project_linf, free_scratch),
        cmocka_unit_test_teardown(test_uniform, free_scratch),
        cmocka_unit_test_teardown(test_errors, free_scratch),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
