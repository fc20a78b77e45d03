/*
 * The CPU (oneDNN) backend against the reference backend.
 *
 * Both backends get the same plain inputs: the CPU backend's copies are
 * reordered (from_plain) into the layout its layout_for picks, and its
 * outputs are reordered back (to_plain) for the comparison. Shapes cover
 * the plain, nChw8c and nChw16c layouts, channel counts that are not a
 * multiple of the block (padding must stay zero), odd spatial sizes,
 * batches 1 and 3.
 *
 * Tolerances. The reference accumulates in double; oneDNN in float, in its
 * own order. A float sum of K terms carries an error of about
 * sqrt(K) * 6e-8 * (the size of the partial sums) when the rounding errors
 * are random. The largest sums here are conv forward sums over
 * ic*k*k = 576 products and linear sums over 1568 products of values in
 * [-1, 1], with outputs up to ~30: measured errors are at most 1.2e-5
 * (conv) and 1e-5 (linear), BN and pooling stay below 4e-6. CONV_ATOL =
 * ATOL = 1e-4 plus rtol 1e-4 leaves a margin of ~8x over the worst case
 * while an indexing or layout error (O(1) differences) cannot pass; each
 * comparison also bounds the normalised MSE (< 1e-10, measured <= 1e-13),
 * which catches a systematic error that stays under the elementwise bound.
 * The flat ops are compared bit for bit where the reference's arithmetic is
 * deterministic.
 */
#include "elle_test.h"

#include <omp.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_internal.h"
#include "core/rng.h"

#define ATOL 1e-4
#define RTOL 1e-4
#define CONV_ATOL 1e-4
#define NMSE_MAX 1e-10

/* ---- fixtures ------------------------------------------------------------ */

#include "op_compare.h"

static elle__backend cpu, ref;

static int group_setup(void **state)
{
    (void)state;
    return backends_setup(&cpu, elle__backend_cpu_create, &ref);
}

static int group_teardown(void **state)
{
    (void)state;
    backends_teardown(&cpu, &ref);
    return 0;
}


static int free_scratch(void **state)
{
    (void)state;
    scratch_free_all();
    return 0;
}

/* A CPU tensor in the layout the backend picks for (c, h, w) (or `layout`
 * when >= 0), zeroed. */
static elle__tensor cpu_empty(int64_t n, int64_t c, int64_t h, int64_t w, int layout)
{
    if (layout < 0)
        layout = cpu.ops->layout_for(&cpu, c, h, w);
    elle__tensor t = elle__tensor_make(NULL, n, c, h, w, layout);
    size_t bytes = cpu.ops->tensor_bytes(&cpu, &t);
    assert_true(bytes >= numel4(n, c, h, w) * sizeof(float));
    t.data = scratch_mem(bytes);
    return t;
}

/* A CPU tensor holding the plain values `src`. */
static elle__tensor cpu_from(const float *src, int64_t n, int64_t c, int64_t h, int64_t w,
                             int layout)
{
    elle__tensor t = cpu_empty(n, c, h, w, layout);
    assert_elle_ok(cpu.ops->from_plain(&cpu, src, &t));
    return t;
}

/* The plain values of a CPU tensor. */
static float *cpu_values(const elle__tensor *t)
{
    float *p = scratch_floats(numel4(t->n, t->c, t->h, t->w));
    assert_elle_ok(cpu.ops->to_plain(&cpu, t, p));
    return p;
}

/* Padded channels of a blocked tensor must hold zeros. */
static void assert_padding_zero_impl(const elle__tensor *t, const char *what, const char *file,
                                     int line)
{
    int block = elle__cpu_layout_block(t->layout);
    int64_t cp = (t->c + block - 1) / block * block;
    if (cp == t->c)
        return;
    /* nChwXc: (n, C/X, h, w, X) */
    for (int64_t n = 0; n < t->n; n++)
        for (int64_t cb = 0; cb < cp / block; cb++)
            for (int64_t s = 0; s < t->h * t->w; s++)
                for (int64_t k = 0; k < block; k++) {
                    if (cb * block + k < t->c)
                        continue;
                    float v = t->data[((n * (cp / block) + cb) * t->h * t->w + s) * block + k];
                    if (v != 0.0f) {
                        print_error("%s: padded channel %" PRId64 " holds %g\n", what,
                                    cb * block + k, (double)v);
                        _fail(file, line);
                    }
                }
}
#define assert_padding_zero(t) assert_padding_zero_impl((t), #t, __FILE__, __LINE__)

#define assert_match(got, want, n, atol, rtol) \
    assert_match_impl((got), (want), (n), (atol), (rtol), #got " vs " #want, __FILE__, __LINE__)

#define assert_bitwise(a, b, n) assert_bitwise_impl((a), (b), (n), #a " vs " #b, __FILE__, __LINE__)

/* ---- table, layouts ------------------------------------------------------- */

static void test_table(void **state)
{
    (void)state;
    assert_table_complete(&cpu, "cpu", ELLE_BACKEND_CPU);
    const elle__backend_ops *o = cpu.ops;
    assert_non_null(o->set_threads);
    assert_elle_ok(o->set_threads(&cpu, 1));
    assert_int_equal(omp_get_max_threads(), 1);
    assert_elle_ok(o->set_threads(&cpu, 0));
    assert_int_equal(omp_get_max_threads(), omp_get_num_procs());
    assert_elle_ok(o->set_threads(&cpu, 2));
    assert_elle_ok(o->sync(&cpu));
    void *p = NULL;
    assert_elle_ok(o->alloc(&cpu, 100, &p));
    assert_true(((uintptr_t)p & 63) == 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(((unsigned char *)p)[i], 0);
    o->free(&cpu, p);
}

static void test_layouts(void **state)
{
    (void)state;
    assert_int_equal(cpu.ops->layout_for(&cpu, 1, 32, 32), ELLE__LAYOUT_PLAIN);
    assert_int_equal(cpu.ops->layout_for(&cpu, 3, 32, 32), ELLE__LAYOUT_PLAIN);
    assert_int_equal(cpu.ops->layout_for(&cpu, 8, 32, 32), ELLE__CPU_LAYOUT_NCHW8C);
    assert_int_equal(cpu.ops->layout_for(&cpu, 12, 32, 32), ELLE__CPU_LAYOUT_NCHW8C);
    int wide = cpu.ops->layout_for(&cpu, 16, 32, 32);
    assert_true(wide == ELLE__CPU_LAYOUT_NCHW16C || wide == ELLE__CPU_LAYOUT_NCHW8C);
    assert_int_equal(cpu.ops->layout_for(&cpu, 512, 1, 1), wide);
    int wb = elle__cpu_layout_block(wide);

    elle__tensor t = elle__tensor_make(NULL, 3, 24, 7, 5, wide);
    assert_int_equal(cpu.ops->tensor_bytes(&cpu, &t), 3 * ((24 + wb - 1) / wb * wb) * 7 * 5 * 4);
    t = elle__tensor_make(NULL, 2, 12, 3, 3, ELLE__CPU_LAYOUT_NCHW8C);
    assert_int_equal(cpu.ops->tensor_bytes(&cpu, &t), 2 * 16 * 3 * 3 * 4);
    t = elle__tensor_make(NULL, 2, 3, 3, 3, ELLE__LAYOUT_PLAIN);
    assert_int_equal(cpu.ops->tensor_bytes(&cpu, &t), 2 * 3 * 3 * 3 * 4);

    /* round trips are exact and leave the padding zero */
    const int64_t shapes[][4] = {{3, 24, 7, 5}, {1, 12, 4, 4}, {2, 3, 5, 5}, {4, 64, 1, 1}};
    const int layouts[] = {ELLE__LAYOUT_PLAIN, ELLE__CPU_LAYOUT_NCHW8C, ELLE__CPU_LAYOUT_NCHW16C};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t l = 0; l < 3; l++) {
            const int64_t *d = shapes[s];
            size_t n = numel4(d[0], d[1], d[2], d[3]);
            float *x = random_floats(n, -1, 1);
            elle__tensor c = cpu_empty(d[0], d[1], d[2], d[3], layouts[l]);
            /* dirty the buffer first: from_plain must zero the padding */
            memset(c.data, 0xff, cpu.ops->tensor_bytes(&cpu, &c));
            assert_elle_ok(cpu.ops->from_plain(&cpu, x, &c));
            assert_padding_zero(&c);
            assert_bitwise(cpu_values(&c), x, n);
        }
}

/* ---- convolution ----------------------------------------------------------- */

typedef struct conv_case {
    int64_t n, ic, oc, h, w, k, s, p;
    int bias;
    int xl, yl; /* layouts of x and y; 0 in the table: layout_for's choice */
} conv_case;

static void run_conv_case(const conv_case *cc)
{
    const elle__conv_desc cd = {.ic = cc->ic, .oc = cc->oc, .kh = cc->k, .kw = cc->k,
                                .sh = cc->s, .sw = cc->s, .ph = cc->p, .pw = cc->p,
                                .has_bias = cc->bias};
    const int64_t oh = (cc->h + 2 * cc->p - cc->k) / cc->s + 1;
    const int64_t ow = (cc->w + 2 * cc->p - cc->k) / cc->s + 1;
    const size_t nx = numel4(cc->n, cc->ic, cc->h, cc->w), ny = numel4(cc->n, cc->oc, oh, ow);
    const size_t nw = (size_t)(cc->oc * cc->ic * cc->k * cc->k);
    float *x = random_floats(nx, -1, 1);
    float *w = random_floats(nw, -1, 1);
    float *b = cc->bias ? random_floats((size_t)cc->oc, -1, 1) : NULL;
    float *dy = random_floats(ny, -1, 1);

    /* forward */
    elle__tensor rx = plain(x, cc->n, cc->ic, cc->h, cc->w);
    elle__tensor ry = plain(scratch_floats(ny), cc->n, cc->oc, oh, ow);
    assert_elle_ok(ref.ops->conv2d_fwd(&ref, &cd, &rx, w, b, &ry));
    const int xl = cc->xl ? cc->xl - 1 : -1, yl = cc->yl ? cc->yl - 1 : -1;
    elle__tensor cx = cpu_from(x, cc->n, cc->ic, cc->h, cc->w, xl);
    elle__tensor cy = cpu_empty(cc->n, cc->oc, oh, ow, yl);
    assert_elle_ok(cpu.ops->conv2d_fwd(&cpu, &cd, &cx, w, b, &cy));
    assert_padding_zero(&cy);
    assert_match(cpu_values(&cy), ry.data, ny, CONV_ATOL, RTOL);

    /* backward data (written: dx starts dirty) */
    elle__tensor rdy = plain(dy, cc->n, cc->oc, oh, ow);
    elle__tensor rdx = plain(scratch_floats(nx), cc->n, cc->ic, cc->h, cc->w);
    assert_elle_ok(ref.ops->conv2d_bwd_data(&ref, &cd, &rdy, w, &rdx));
    elle__tensor cdy = cpu_from(dy, cc->n, cc->oc, oh, ow, yl);
    elle__tensor cdx = cpu_from(random_floats(nx, 5, 6), cc->n, cc->ic, cc->h, cc->w, xl);
    assert_elle_ok(cpu.ops->conv2d_bwd_data(&cpu, &cd, &cdy, w, &cdx));
    assert_padding_zero(&cdx);
    assert_match(cpu_values(&cdx), rdx.data, nx, CONV_ATOL, RTOL);

    /* backward weights: accumulated onto a nonzero start, twice */
    float *dw0 = random_floats(nw, -1, 1), *db0 = random_floats((size_t)cc->oc, -1, 1);
    float *rdw = copy_of(dw0, nw), *rdb = copy_of(db0, (size_t)cc->oc);
    float *cdw = copy_of(dw0, nw), *cdb = copy_of(db0, (size_t)cc->oc);
    for (int rep = 0; rep < 2; rep++) {
        assert_elle_ok(ref.ops->conv2d_bwd_weights(&ref, &cd, &rx, &rdy, rdw, rdb));
        assert_elle_ok(cpu.ops->conv2d_bwd_weights(&cpu, &cd, &cx, &cdy, cdw, cdb));
    }
    assert_match(cdw, rdw, nw, CONV_ATOL, RTOL);
    assert_match(cdb, rdb, (size_t)cc->oc, CONV_ATOL, RTOL);

    /* from zero: the second call adds exactly what the first did; db NULL
     * leaves the bias gradient alone */
    float *g = scratch_floats(nw), *db = scratch_floats((size_t)cc->oc);
    assert_elle_ok(cpu.ops->conv2d_bwd_weights(&cpu, &cd, &cx, &cdy, g, db));
    float *g1 = copy_of(g, nw), *db1 = copy_of(db, (size_t)cc->oc);
    assert_elle_ok(cpu.ops->conv2d_bwd_weights(&cpu, &cd, &cx, &cdy, g, NULL));
    for (size_t i = 0; i < nw; i++)
        g1[i] *= 2.0f;
    assert_bitwise(g, g1, nw);
    assert_bitwise(db, db1, (size_t)cc->oc);
}

static void test_conv(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        /* n, ic, oc, h, w, k, s, p, bias, x layout, y layout */
        {3, 3, 16, 7, 5, 3, 1, 1, 1, 0, 0},   /* stem: plain -> 16c */
        {1, 3, 16, 8, 8, 3, 1, 1, 0, 0, 0},   /* stem, batch 1, no bias */
        {1, 16, 16, 8, 8, 3, 1, 1, 0, 0, 0},  /* 16c -> 16c */
        {3, 16, 24, 7, 5, 3, 2, 1, 1, 0, 0},  /* 3x3 s2, padded 24 channels */
        {3, 24, 64, 7, 5, 1, 2, 0, 0, 0, 0},  /* 1x1 s2 shortcut */
        {3, 24, 64, 7, 5, 1, 2, 0, 1, 0, 0},  /* with bias */
        {1, 64, 64, 7, 5, 3, 1, 1, 1, 0, 0},  /* 64 -> 64 */
        {3, 64, 24, 7, 5, 3, 2, 1, 0, 0, 0},  /* 64 -> 24, s2 */
        {3, 8, 12, 5, 5, 3, 1, 1, 1, 0, 0},   /* 8c -> 8c (12 padded to 16) */
        {3, 3, 8, 7, 5, 3, 1, 1, 0, 0, 0},    /* plain -> 8c */
        {3, 12, 3, 6, 6, 3, 2, 1, 1, 0, 0},   /* 8c -> plain */
        {3, 16, 8, 7, 5, 1, 1, 0, 0, 0, 0},   /* 16c -> 8c */
        /* tensors in layouts other than layout_for's (1 + layout) */
        {3, 16, 16, 7, 5, 3, 1, 1, 1, 1 + ELLE__LAYOUT_PLAIN, 0},
        {3, 16, 32, 7, 5, 3, 2, 1, 0, 0, 1 + ELLE__LAYOUT_PLAIN},
        {2, 24, 24, 6, 6, 3, 1, 1, 1, 1 + ELLE__CPU_LAYOUT_NCHW8C, 1 + ELLE__LAYOUT_PLAIN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("conv case %zu: n %lld, %lld -> %lld, %lldx%lld, k %lld s %lld p %lld%s "
                      "layouts %d %d\n",
                      i, (long long)cases[i].n, (long long)cases[i].ic, (long long)cases[i].oc,
                      (long long)cases[i].h, (long long)cases[i].w, (long long)cases[i].k,
                      (long long)cases[i].s, (long long)cases[i].p, cases[i].bias ? " bias" : "",
                      cases[i].xl - 1, cases[i].yl - 1);
        run_conv_case(&cases[i]);
    }
}

/* ---- batch norm ------------------------------------------------------------ */

static void run_bn_case(int64_t n, int64_t c, int64_t h, int64_t w, int layout, int fuse)
{
    const elle__bn_desc bd = {.c = c, .eps = 1e-5f, .momentum = 0.1f, .fuse_relu = fuse};
    const size_t nx = numel4(n, c, h, w), nc = (size_t)c;
    float *x = random_floats(nx, -2, 3);
    float *gamma = random_floats(nc, 0.5f, 1.5f), *beta = random_floats(nc, -0.5f, 0.5f);
    float *rm0 = random_floats(nc, -0.2f, 0.2f), *rv0 = random_floats(nc, 0.5f, 2.0f);
    float *dy = random_floats(nx, -1, 1);
    float *dg0 = random_floats(nc, -1, 1), *db0 = random_floats(nc, -1, 1);

    elle__tensor rx = plain(x, n, c, h, w), ry = plain(scratch_floats(nx), n, c, h, w);
    elle__tensor rdy = plain(dy, n, c, h, w), rdx = plain(scratch_floats(nx), n, c, h, w);
    elle__tensor cx = cpu_from(x, n, c, h, w, layout), cy = cpu_empty(n, c, h, w, layout);
    elle__tensor cdy = cpu_from(dy, n, c, h, w, layout), cdx = cpu_empty(n, c, h, w, layout);
    size_t wsb = cpu.ops->bn_workspace_bytes(&cpu, &bd, &cx);
    assert_true(fuse ? wsb > 0 : wsb == 0);
    /* arena planning asks before any memory exists */
    elle__tensor nodata = cx;
    nodata.data = NULL;
    assert_int_equal(cpu.ops->bn_workspace_bytes(&cpu, &bd, &nodata), wsb);
    void *ws = wsb ? scratch_mem(wsb) : NULL;

    /* training forward twice (running statistics after two updates) */
    float *rrm = copy_of(rm0, nc), *rrv = copy_of(rv0, nc), *crm = copy_of(rm0, nc),
          *crv = copy_of(rv0, nc);
    float *rsm = scratch_floats(nc), *rsv = scratch_floats(nc), *csm = scratch_floats(nc), *csv = scratch_floats(nc);
    for (int rep = 0; rep < 2; rep++) {
        assert_elle_ok(ref.ops->bn_fwd_train(&ref, &bd, &rx, gamma, beta, rrm, rrv, &ry, rsm, rsv,
                                             NULL));
        assert_elle_ok(cpu.ops->bn_fwd_train(&cpu, &bd, &cx, gamma, beta, crm, crv, &cy, csm, csv,
                                             ws));
    }
    assert_padding_zero(&cy);
    assert_match(cpu_values(&cy), ry.data, nx, ATOL, RTOL);
    assert_match(csm, rsm, nc, 1e-5, 1e-5);
    assert_match(csv, rsv, nc, 1e-5, 1e-5);
    assert_match(crm, rrm, nc, 1e-5, 1e-5);
    assert_match(crv, rrv, nc, 1e-5, 1e-5);

    /* training backward: dx written, dgamma/dbeta accumulated */
    float *rdg = copy_of(dg0, nc), *rdb = copy_of(db0, nc), *cdg = copy_of(dg0, nc),
          *cdb = copy_of(db0, nc);
    assert_elle_ok(ref.ops->bn_bwd(&ref, &bd, 1, &rx, &ry, &rdy, gamma, rsm, rsv, NULL, &rdx, rdg,
                                   rdb));
    assert_elle_ok(cpu.ops->bn_bwd(&cpu, &bd, 1, &cx, &cy, &cdy, gamma, csm, csv, ws, &cdx, cdg,
                                   cdb));
    assert_padding_zero(&cdx);
    assert_match(cpu_values(&cdx), rdx.data, nx, ATOL, RTOL);
    assert_match(cdg, rdg, nc, ATOL, RTOL);
    assert_match(cdb, rdb, nc, ATOL, RTOL);
    /* NULL parameter gradients: dx only */
    assert_elle_ok(cpu.ops->bn_bwd(&cpu, &bd, 1, &cx, &cy, &cdy, gamma, csm, csv, ws, &cdx, NULL,
                                   NULL));
    assert_match(cpu_values(&cdx), rdx.data, nx, ATOL, RTOL);
    /* in place: dx aliases dy */
    elle__tensor g = cpu_from(dy, n, c, h, w, layout);
    assert_elle_ok(cpu.ops->bn_bwd(&cpu, &bd, 1, &cx, &cy, &g, gamma, csm, csv, ws, &g, NULL,
                                   NULL));
    assert_match(cpu_values(&g), rdx.data, nx, ATOL, RTOL);

    if (fuse) {
        /* without a workspace the relu mask comes from y */
        elle__tensor cy2 = cpu_empty(n, c, h, w, layout), cdx2 = cpu_empty(n, c, h, w, layout);
        float *m = copy_of(rm0, nc), *v = copy_of(rv0, nc), *sm = scratch_floats(nc), *sv = scratch_floats(nc);
        assert_elle_ok(cpu.ops->bn_fwd_train(&cpu, &bd, &cx, gamma, beta, m, v, &cy2, sm, sv,
                                             NULL));
        assert_match(cpu_values(&cy2), ry.data, nx, ATOL, RTOL);
        assert_elle_ok(cpu.ops->bn_bwd(&cpu, &bd, 1, &cx, &cy2, &cdy, gamma, sm, sv, NULL, &cdx2,
                                       NULL, NULL));
        assert_match(cpu_values(&cdx2), rdx.data, nx, ATOL, RTOL);
    }

    /* inference forward and backward (running statistics are constants) */
    assert_elle_ok(ref.ops->bn_fwd_infer(&ref, &bd, &rx, gamma, beta, rm0, rv0, &ry, NULL));
    assert_elle_ok(cpu.ops->bn_fwd_infer(&cpu, &bd, &cx, gamma, beta, rm0, rv0, &cy, ws));
    assert_padding_zero(&cy);
    assert_match(cpu_values(&cy), ry.data, nx, ATOL, RTOL);
    rdg = copy_of(dg0, nc), rdb = copy_of(db0, nc), cdg = copy_of(dg0, nc), cdb = copy_of(db0, nc);
    assert_elle_ok(ref.ops->bn_bwd(&ref, &bd, 0, &rx, &ry, &rdy, gamma, rm0, rv0, NULL, &rdx, rdg,
                                   rdb));
    assert_elle_ok(cpu.ops->bn_bwd(&cpu, &bd, 0, &cx, &cy, &cdy, gamma, rm0, rv0, ws, &cdx, cdg,
                                   cdb));
    assert_match(cpu_values(&cdx), rdx.data, nx, ATOL, RTOL);
    assert_match(cdg, rdg, nc, ATOL, RTOL);
    assert_match(cdb, rdb, nc, ATOL, RTOL);
    if (fuse) { /* inference without ws: the mask from y */
        elle__tensor cy2 = cpu_empty(n, c, h, w, layout), cdx2 = cpu_empty(n, c, h, w, layout);
        assert_elle_ok(cpu.ops->bn_fwd_infer(&cpu, &bd, &cx, gamma, beta, rm0, rv0, &cy2, NULL));
        assert_match(cpu_values(&cy2), ry.data, nx, ATOL, RTOL);
        assert_elle_ok(cpu.ops->bn_bwd(&cpu, &bd, 0, &cx, &cy2, &cdy, gamma, rm0, rv0, NULL,
                                       &cdx2, NULL, NULL));
        assert_match(cpu_values(&cdx2), rdx.data, nx, ATOL, RTOL);
    }
}

static void test_bn(void **state)
{
    (void)state;
    /* n, c, h, w, layout (-1: layout_for's) */
    static const int64_t shapes[][5] = {
        {3, 24, 7, 5, -1}, /* 16c, padded */
        {2, 16, 4, 4, -1}, /* 16c */
        {3, 12, 5, 3, -1}, /* 8c, padded */
        {4, 3, 5, 5, -1},  /* plain */
        {8, 64, 1, 1, -1}, /* BatchNorm1d-like (n, c, 1, 1), blocked */
        {6, 10, 1, 1, -1}, /* (n, c, 1, 1), 8c */
        {5, 40, 1, 1, ELLE__LAYOUT_PLAIN}, /* (n, c, 1, 1) after a linear layer */
        {2, 32, 3, 3, ELLE__LAYOUT_PLAIN}, /* wide but plain */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int fuse = 0; fuse < 2; fuse++) {
            const int64_t *s = shapes[i];
            print_message("bn (%lld, %lld, %lld, %lld) layout %d%s\n", (long long)s[0],
                          (long long)s[1], (long long)s[2], (long long)s[3], (int)s[4],
                          fuse ? " fused relu" : "");
            run_bn_case(s[0], s[1], s[2], s[3], (int)s[4], fuse);
        }
}

/* The input normalisation layer's use: eps 0, plain 3 channels, backward
 * without parameter gradients. */
static void test_bn_normalize_use(void **state)
{
    (void)state;
    const elle__bn_desc bd = {.c = 3, .eps = 0.0f, .momentum = 0.0f, .fuse_relu = 0};
    const float k[12] = {1, 1, 1, 0, 0, 0, 0.49f, 0.48f, 0.45f, 0.06f, 0.05f, 0.07f};
    const size_t nx = numel4(2, 3, 4, 4);
    float *x = random_floats(nx, 0, 1), *dy = random_floats(nx, -1, 1);
    elle__tensor rx = plain(x, 2, 3, 4, 4), ry = plain(scratch_floats(nx), 2, 3, 4, 4);
    elle__tensor cx = cpu_from(x, 2, 3, 4, 4, -1), cy = cpu_empty(2, 3, 4, 4, -1);
    assert_elle_ok(ref.ops->bn_fwd_infer(&ref, &bd, &rx, k, k + 3, k + 6, k + 9, &ry, NULL));
    assert_elle_ok(cpu.ops->bn_fwd_infer(&cpu, &bd, &cx, k, k + 3, k + 6, k + 9, &cy, NULL));
    assert_match(cpu_values(&cy), ry.data, nx, ATOL, RTOL);
    elle__tensor rdy = plain(dy, 2, 3, 4, 4), rdx = plain(scratch_floats(nx), 2, 3, 4, 4);
    elle__tensor cdy = cpu_from(dy, 2, 3, 4, 4, -1), cdx = cpu_empty(2, 3, 4, 4, -1);
    assert_elle_ok(ref.ops->bn_bwd(&ref, &bd, 0, &rx, &ry, &rdy, k, k + 6, k + 9, NULL, &rdx,
                                   NULL, NULL));
    assert_elle_ok(cpu.ops->bn_bwd(&cpu, &bd, 0, &cx, &cy, &cdy, k, k + 6, k + 9, NULL, &cdx,
                                   NULL, NULL));
    assert_match(cpu_values(&cdx), rdx.data, nx, ATOL, RTOL);
}

/* ---- relu, add ----------------------------------------------------------- */

static void test_relu_add(void **state)
{
    (void)state;
    static const int64_t shapes[][4] = {{3, 24, 7, 5}, {2, 12, 3, 3}, {2, 3, 5, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t n = shapes[s][0], c = shapes[s][1], h = shapes[s][2], w = shapes[s][3];
        const size_t nx = numel4(n, c, h, w);
        float *a = random_floats(nx, -1, 1), *b = random_floats(nx, -1, 1);
        float *dy = random_floats(nx, -1, 1);
        elle__tensor ra = plain(a, n, c, h, w), rb = plain(b, n, c, h, w);
        elle__tensor ry = plain(scratch_floats(nx), n, c, h, w), rdy = plain(dy, n, c, h, w);
        elle__tensor rdx = plain(scratch_floats(nx), n, c, h, w);
        elle__tensor ca = cpu_from(a, n, c, h, w, -1), cb = cpu_from(b, n, c, h, w, -1);
        elle__tensor cy = cpu_empty(n, c, h, w, -1), cdy = cpu_from(dy, n, c, h, w, -1);
        elle__tensor cdx = cpu_empty(n, c, h, w, -1);

        assert_elle_ok(ref.ops->relu_fwd(&ref, &ra, &ry));
        assert_elle_ok(cpu.ops->relu_fwd(&cpu, &ca, &cy));
        assert_bitwise(cpu_values(&cy), ry.data, nx);
        assert_elle_ok(ref.ops->relu_bwd(&ref, &ry, &rdy, &rdx));
        assert_elle_ok(cpu.ops->relu_bwd(&cpu, &cy, &cdy, &cdx));
        assert_bitwise(cpu_values(&cdx), rdx.data, nx);
        assert_padding_zero(&cdx);

        assert_elle_ok(ref.ops->add(&ref, &ra, &rb, &ry));
        assert_elle_ok(cpu.ops->add(&cpu, &ca, &cb, &cy));
        assert_bitwise(cpu_values(&cy), ry.data, nx);
        /* in place: y aliases a */
        assert_elle_ok(cpu.ops->add(&cpu, &ca, &cb, &ca));
        assert_bitwise(cpu_values(&ca), ry.data, nx);
        assert_padding_zero(&ca);
        assert_elle_ok(cpu.ops->relu_fwd(&cpu, &ca, &ca));
        assert_padding_zero(&ca);
    }
}

/* ---- pooling ------------------------------------------------------------- */

static void run_pool_case(int kind, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k,
                          int64_t s, int64_t p)
{
    const elle__pool_desc pd = {.kind = kind, .kh = k, .kw = k, .sh = s, .sw = s, .ph = p,
                                .pw = p};
    const int64_t oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1;
    const size_t nx = numel4(n, c, h, w), ny = numel4(n, c, oh, ow);
    float *x = distinct_floats(nx, 1e-2f), *dy = random_floats(ny, -1, 1);
    elle__tensor rx = plain(x, n, c, h, w), ry = plain(scratch_floats(ny), n, c, oh, ow);
    elle__tensor rdy = plain(dy, n, c, oh, ow), rdx = plain(scratch_floats(nx), n, c, h, w);
    elle__tensor cx = cpu_from(x, n, c, h, w, -1), cy = cpu_empty(n, c, oh, ow, -1);
    elle__tensor cdy = cpu_from(dy, n, c, oh, ow, -1);
    elle__tensor cdx = cpu_from(random_floats(nx, 5, 6), n, c, h, w, -1);
    size_t rwsb = ref.ops->pool_workspace_bytes(&ref, &pd, &rx, &ry);
    size_t cwsb = cpu.ops->pool_workspace_bytes(&cpu, &pd, &cx, &cy);
    assert_true(kind == ELLE__POOL_MAX ? cwsb > 0 : cwsb == 0);
    elle__tensor xnd = cx, ynd = cy; /* arena planning: no memory yet */
    xnd.data = ynd.data = NULL;
    assert_int_equal(cpu.ops->pool_workspace_bytes(&cpu, &pd, &xnd, &ynd), cwsb);
    void *rws = rwsb ? scratch_mem(rwsb) : NULL, *cws = cwsb ? scratch_mem(cwsb) : NULL;

    assert_elle_ok(ref.ops->pool_fwd(&ref, &pd, &rx, &ry, rws));
    assert_elle_ok(cpu.ops->pool_fwd(&cpu, &pd, &cx, &cy, cws));
    assert_padding_zero(&cy);
    assert_match(cpu_values(&cy), ry.data, ny, 1e-6, 1e-6);
    assert_elle_ok(ref.ops->pool_bwd(&ref, &pd, &rdy, rws, &rdx));
    assert_elle_ok(cpu.ops->pool_bwd(&cpu, &pd, &cdy, cws, &cdx));
    assert_padding_zero(&cdx);
    assert_match(cpu_values(&cdx), rdx.data, nx, 1e-6, 1e-6);
}

static void test_pool(void **state)
{
    (void)state;
    run_pool_case(ELLE__POOL_MAX, 3, 24, 8, 6, 2, 2, 0);
    run_pool_case(ELLE__POOL_MAX, 3, 16, 7, 5, 2, 2, 0); /* odd: last row/column unread */
    run_pool_case(ELLE__POOL_MAX, 2, 12, 7, 7, 3, 2, 1); /* 8c, padded window */
    run_pool_case(ELLE__POOL_MAX, 2, 3, 6, 6, 2, 2, 0);  /* plain */
    run_pool_case(ELLE__POOL_AVG, 3, 24, 8, 6, 2, 2, 0);
    run_pool_case(ELLE__POOL_AVG, 3, 16, 7, 5, 2, 2, 0);
    run_pool_case(ELLE__POOL_AVG, 2, 12, 7, 7, 3, 2, 1); /* padding counted */
    run_pool_case(ELLE__POOL_AVG, 3, 64, 4, 4, 4, 4, 0); /* global 4x4 -> 1x1 */
    run_pool_case(ELLE__POOL_AVG, 3, 24, 4, 4, 4, 4, 0); /* global, padded channels */
}

/* ---- linear -------------------------------------------------------------- */

static void run_linear_case(int64_t n, int64_t c, int64_t h, int64_t w, int layout, int64_t out,
                            int bias)
{
    const int64_t in = c * h * w;
    const size_t nx = numel4(n, c, h, w), ny = (size_t)(n * out), nw = (size_t)(out * in);
    float *x = random_floats(nx, -1, 1), *wt = random_floats(nw, -1, 1);
    float *b = bias ? random_floats((size_t)out, -1, 1) : NULL;
    float *dy = random_floats(ny, -1, 1);
    elle__tensor rx = plain(x, n, c, h, w), ry = plain(scratch_floats(ny), n, out, 1, 1);
    elle__tensor cx = cpu_from(x, n, c, h, w, layout);
    elle__tensor cy = elle__tensor_make(scratch_floats(ny), n, out, 1, 1, ELLE__LAYOUT_PLAIN);
    assert_elle_ok(ref.ops->linear_fwd(&ref, &rx, wt, b, &ry));
    assert_elle_ok(cpu.ops->linear_fwd(&cpu, &cx, wt, b, &cy));
    assert_match(cy.data, ry.data, ny, CONV_ATOL, RTOL);

    elle__tensor rdy = plain(dy, n, out, 1, 1), rdx = plain(scratch_floats(nx), n, c, h, w);
    elle__tensor cdy = elle__tensor_make(dy, n, out, 1, 1, ELLE__LAYOUT_PLAIN);
    elle__tensor cdx = cpu_from(random_floats(nx, 5, 6), n, c, h, w, layout);
    assert_elle_ok(ref.ops->linear_bwd_data(&ref, &rdy, wt, &rdx));
    assert_elle_ok(cpu.ops->linear_bwd_data(&cpu, &cdy, wt, &cdx));
    assert_padding_zero(&cdx);
    assert_match(cpu_values(&cdx), rdx.data, nx, ATOL, RTOL);

    float *dw0 = random_floats(nw, -1, 1), *db0 = random_floats((size_t)out, -1, 1);
    float *rdw = copy_of(dw0, nw), *rdb = copy_of(db0, (size_t)out);
    float *cdw = copy_of(dw0, nw), *cdb = copy_of(db0, (size_t)out);
    for (int rep = 0; rep < 2; rep++) {
        assert_elle_ok(ref.ops->linear_bwd_weights(&ref, &rx, &rdy, rdw, rdb));
        assert_elle_ok(cpu.ops->linear_bwd_weights(&cpu, &cx, &cdy, cdw, cdb));
    }
    assert_match(cdw, rdw, nw, ATOL, RTOL);
    assert_match(cdb, rdb, (size_t)out, ATOL, RTOL);
    /* db NULL: the weights only */
    float *cdw2 = copy_of(dw0, nw);
    assert_elle_ok(cpu.ops->linear_bwd_weights(&cpu, &cx, &cdy, cdw2, NULL));
    assert_elle_ok(cpu.ops->linear_bwd_weights(&cpu, &cx, &cdy, cdw2, NULL));
    assert_match(cdw2, rdw, nw, ATOL, RTOL);
}

static void test_linear(void **state)
{
    (void)state;
    run_linear_case(3, 32, 7, 7, -1, 10, 1);                  /* blocked 4-D input */
    run_linear_case(3, 24, 3, 3, -1, 10, 0);                  /* padded channels, no bias */
    run_linear_case(2, 512, 1, 1, -1, 10, 1);                 /* after global pooling */
    run_linear_case(3, 50, 1, 1, ELLE__LAYOUT_PLAIN, 10, 1);  /* plain 2-D */
    run_linear_case(2, 3, 4, 4, ELLE__LAYOUT_PLAIN, 10, 1);   /* plain 4-D */
    run_linear_case(1, 12, 2, 2, ELLE__CPU_LAYOUT_NCHW8C, 7, 1);
}

/* ---- cross-entropy --------------------------------------------------------- */

static void test_xent(void **state)
{
    (void)state;
    const int64_t n = 5, k = 10;
    float *z = random_floats((size_t)(n * k), -4, 4);
    /* huge logits: row 1 all ~1e30 with distinct values, row 2 one huge */
    for (int64_t j = 0; j < k; j++)
        z[1 * k + j] = 1e30f * (1.0f + 0.01f * (float)j);
    z[2 * k + 3] = 1e30f;
    z[3 * k + 0] = -1e30f;
    int32_t labels[5] = {3, 9, 3, 0, 7};
    float coef[5] = {0.2f, 0.2f, 0.2f, 0.2f, 0.5f};
    elle__tensor t = plain(z, n, k, 1, 1);
    float *rl = scratch_floats((size_t)n), *cl = scratch_floats((size_t)n);
    assert_elle_ok(ref.ops->xent_fwd(&ref, &t, labels, rl));
    assert_elle_ok(cpu.ops->xent_fwd(&cpu, &t, labels, cl));
    for (int64_t i = 0; i < n; i++)
        assert_true(isfinite(cl[i]));
    assert_match(cl, rl, (size_t)n, 1e-6, 1e-6);
    elle__tensor rd = plain(scratch_floats((size_t)(n * k)), n, k, 1, 1);
    elle__tensor cd = plain(scratch_floats((size_t)(n * k)), n, k, 1, 1);
    assert_elle_ok(ref.ops->xent_bwd(&ref, &t, labels, coef, &rd));
    assert_elle_ok(cpu.ops->xent_bwd(&cpu, &t, labels, coef, &cd));
    for (int64_t i = 0; i < n * k; i++)
        assert_true(isfinite(cd.data[i]));
    assert_match(cd.data, rd.data, (size_t)(n * k), 1e-7, 1e-6);
}

/* ---- flat ops -------------------------------------------------------------- */

/* The fused SGD step equals the reference's over several steps (momentum,
 * weight decay, nesterov), and NULL arguments are refused. */
static void test_sgd_update(void **state)
{
    (void)state;
    const int64_t n = 100003;
    for (int nesterov = 0; nesterov <= 1; nesterov++) {
        float *p0 = random_floats((size_t)n, -1, 1);
        float *rp = copy_of(p0, (size_t)n), *cp = copy_of(p0, (size_t)n);
        float *rb = scratch_floats((size_t)n), *cb = scratch_floats((size_t)n);
        memset(rb, 0, (size_t)n * sizeof *rb);
        memset(cb, 0, (size_t)n * sizeof *cb);
        for (int step = 0; step < 3; step++) {
            float *g = random_floats((size_t)n, -1, 1);
            assert_elle_ok(ref.ops->sgd_update(&ref, n, 0.1f, 0.9f, 5e-4f, nesterov, rp, g, rb));
            assert_elle_ok(cpu.ops->sgd_update(&cpu, n, 0.1f, 0.9f, 5e-4f, nesterov, cp, g, cb));
        }
        assert_floats_close(cp, rp, (size_t)n, 1e-6, 1e-6);
        assert_floats_close(cb, rb, (size_t)n, 1e-6, 1e-6);
        assert_memory_not_equal(cp, p0, (size_t)n * sizeof *cp);
    }
    float v = 0;
    assert_elle_status(cpu.ops->sgd_update(&cpu, 1, 0.1f, 0.9f, 0, 0, &v, NULL, &v), ELLE_EINVAL);
}

static void test_flat_ops(void **state)
{
    (void)state;
    const int64_t sizes[] = {37, 100003};
    for (size_t s = 0; s < 2; s++) {
        const int64_t n = sizes[s];
        float *x = random_floats((size_t)n, -2, 2);
        x[0] = 0.0f;
        x[1] = -0.0f;
        x[2] = NAN;
        float *ry = scratch_floats((size_t)n), *cy = scratch_floats((size_t)n);
        assert_elle_ok(ref.ops->sign(&ref, n, x, ry));
        assert_elle_ok(cpu.ops->sign(&cpu, n, x, cy));
        assert_bitwise(cy, ry, (size_t)n);
        x[2] = 0.5f;

        float *y0 = random_floats((size_t)n, -1, 1);
        float *ra = copy_of(y0, (size_t)n), *ca = copy_of(y0, (size_t)n);
        assert_elle_ok(ref.ops->axpy(&ref, n, 0.37f, x, ra));
        assert_elle_ok(cpu.ops->axpy(&cpu, n, 0.37f, x, ca));
        assert_floats_close(ca, ra, (size_t)n, 1e-6, 0);

        float *rs = copy_of(x, (size_t)n), *cs = copy_of(x, (size_t)n);
        assert_elle_ok(ref.ops->scale(&ref, n, -1.5f, rs));
        assert_elle_ok(cpu.ops->scale(&cpu, n, -1.5f, cs));
        assert_bitwise(cs, rs, (size_t)n);

        assert_elle_ok(ref.ops->fill(&ref, n, 0.25f, rs));
        assert_elle_ok(cpu.ops->fill(&cpu, n, 0.25f, cs));
        assert_bitwise(cs, rs, (size_t)n);

        float *rc = copy_of(x, (size_t)n), *cc = copy_of(x, (size_t)n);
        assert_elle_ok(ref.ops->clamp(&ref, n, -0.5f, 0.75f, rc));
        assert_elle_ok(cpu.ops->clamp(&cpu, n, -0.5f, 0.75f, cc));
        assert_bitwise(cc, rc, (size_t)n);
    }
}

static void test_project_linf(void **state)
{
    (void)state;
    const int64_t ns = 7, per = 3073; /* 21511 floats; the long case crosses threads */
    for (int big = 0; big < 2; big++) {
        const int64_t nsamp = big ? 7 * 5 : ns;
        const size_t n = (size_t)(nsamp * per);
        float *x0 = random_floats(n, 0, 1);
        float *x = scratch_floats(n);
        for (size_t i = 0; i < n; i++)
            x[i] = x0[i] + trng_range(-0.1f, 0.1f);
        float *eps_s = random_floats((size_t)nsamp, 0.0f, 0.06f);
        for (int variant = 0; variant < 4; variant++) {
            const float *eps_ps = (variant & 1) ? eps_s : NULL;
            const int do_clamp = (variant & 2) != 0;
            float *rx = copy_of(x, n), *cx = copy_of(x, n);
            assert_elle_ok(ref.ops->project_linf(&ref, nsamp, per, x0, 8.0f / 255, eps_ps,
                                                 do_clamp, 0.0f, 1.0f, rx));
            assert_elle_ok(cpu.ops->project_linf(&cpu, nsamp, per, x0, 8.0f / 255, eps_ps,
                                                 do_clamp, 0.0f, 1.0f, cx));
            assert_bitwise(cx, rx, n);
        }
    }
}

static void test_uniform(void **state)
{
    (void)state;
    const int64_t sizes[] = {1, 7, 1001, 100003, 262147};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int64_t n = sizes[s];
        float *r = scratch_floats((size_t)n), *c1 = scratch_floats((size_t)n), *c2 = scratch_floats((size_t)n);
        const uint64_t seed = 0x1234abcdULL + s, counter = 12345 + 3 * s;
        assert_elle_ok(ref.ops->uniform(&ref, n, seed, counter, -0.03f, 0.03f, r));
        assert_elle_ok(cpu.ops->set_threads(&cpu, 1));
        assert_elle_ok(cpu.ops->uniform(&cpu, n, seed, counter, -0.03f, 0.03f, c1));
        assert_elle_ok(cpu.ops->set_threads(&cpu, 2));
        assert_elle_ok(cpu.ops->uniform(&cpu, n, seed, counter, -0.03f, 0.03f, c2));
        assert_bitwise(c1, r, (size_t)n);
        assert_bitwise(c2, r, (size_t)n);
        /* three threads on two cores: an uneven split still agrees */
        assert_elle_ok(cpu.ops->set_threads(&cpu, 3));
        assert_elle_ok(cpu.ops->uniform(&cpu, n, seed, counter, -0.03f, 0.03f, c1));
        assert_bitwise(c1, r, (size_t)n);
        assert_elle_ok(cpu.ops->set_threads(&cpu, 2));
    }
}

/* ---- the primitive cache --------------------------------------------------- */

/* One pass over the oneDNN ops at fixed shapes. */
static void cache_round(const float *x, const float *w, float *dw, float *db, void *bnws,
                        void *poolws, elle__tensor *cx, elle__tensor *cy, elle__tensor *cp)
{
    const elle__conv_desc cd = {.ic = 16, .oc = 16, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                                .ph = 1, .pw = 1, .has_bias = 1};
    const elle__bn_desc bd = {.c = 16, .eps = 1e-5f, .momentum = 0.1f, .fuse_relu = 1};
    const elle__pool_desc pd = {.kind = ELLE__POOL_MAX, .kh = 2, .kw = 2, .sh = 2, .sw = 2};
    float stats[4][16];
    for (int i = 0; i < 16; i++)
        stats[0][i] = 0.0f, stats[1][i] = 1.0f;
    assert_elle_ok(cpu.ops->from_plain(&cpu, x, cx));
    assert_elle_ok(cpu.ops->conv2d_fwd(&cpu, &cd, cx, w, w, cy));
    assert_elle_ok(cpu.ops->conv2d_bwd_data(&cpu, &cd, cy, w, cx));
    assert_elle_ok(cpu.ops->conv2d_bwd_weights(&cpu, &cd, cx, cy, dw, db));
    assert_elle_ok(cpu.ops->bn_fwd_train(&cpu, &bd, cx, w, w, stats[0], stats[1], cy, stats[2],
                                         stats[3], bnws));
    assert_elle_ok(cpu.ops->bn_bwd(&cpu, &bd, 1, cx, cy, cy, w, stats[2], stats[3], bnws, cx, db,
                                   db));
    assert_elle_ok(cpu.ops->pool_fwd(&cpu, &pd, cx, cp, poolws));
    assert_elle_ok(cpu.ops->pool_bwd(&cpu, &pd, cp, poolws, cx));
    float lo_buf[10];
    elle__tensor lo = plain(lo_buf, 2, 5, 1, 1);
    assert_elle_ok(cpu.ops->linear_fwd(&cpu, cp, w, NULL, &lo));
    assert_elle_ok(cpu.ops->linear_bwd_data(&cpu, &lo, w, cp));
    assert_elle_ok(cpu.ops->linear_bwd_weights(&cpu, cp, &lo, dw, NULL));
    float *plain_out = dw;
    assert_elle_ok(cpu.ops->to_plain(&cpu, cx, plain_out));
}

static void test_cache(void **state)
{
    (void)state;
    float *x = random_floats(2 * 16 * 6 * 6, -1, 1), *w = random_floats(16 * 16 * 9, -1, 1);
    float *dw = scratch_floats(2 * 16 * 6 * 6 + 16 * 16 * 9), *db = scratch_floats(16);
    elle__tensor cx = cpu_empty(2, 16, 6, 6, -1), cy = cpu_empty(2, 16, 6, 6, -1);
    elle__tensor cp = cpu_empty(2, 16, 3, 3, -1);
    const elle__bn_desc bd = {.c = 16, .eps = 1e-5f, .momentum = 0.1f, .fuse_relu = 1};
    const elle__pool_desc pd = {.kind = ELLE__POOL_MAX, .kh = 2, .kw = 2, .sh = 2, .sw = 2};
    void *bnws = scratch_mem(cpu.ops->bn_workspace_bytes(&cpu, &bd, &cx));
    void *poolws = scratch_mem(cpu.ops->pool_workspace_bytes(&cpu, &pd, &cx, &cp));
    cache_round(x, w, dw, db, bnws, poolws, &cx, &cy, &cp);
    size_t after_first = elle__cpu_cache_size(&cpu);
    assert_true(after_first > 0);
    cache_round(x, w, dw, db, bnws, poolws, &cx, &cy, &cp);
    cache_round(x, w, dw, db, bnws, poolws, &cx, &cy, &cp);
    assert_int_equal(elle__cpu_cache_size(&cpu), after_first);
    /* a new batch size is a new shape */
    elle__tensor cx3 = cpu_empty(3, 16, 6, 6, -1), cy3 = cpu_empty(3, 16, 6, 6, -1);
    const elle__conv_desc cd = {.ic = 16, .oc = 16, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                                .ph = 1, .pw = 1, .has_bias = 0};
    float *x3 = random_floats(3 * 16 * 6 * 6, -1, 1);
    assert_elle_ok(cpu.ops->from_plain(&cpu, x3, &cx3));
    assert_elle_ok(cpu.ops->conv2d_fwd(&cpu, &cd, &cx3, w, NULL, &cy3));
    assert_int_equal(elle__cpu_cache_size(&cpu), after_first + 2); /* from_plain + conv */
    assert_elle_ok(cpu.ops->conv2d_fwd(&cpu, &cd, &cx3, w, NULL, &cy3));
    assert_int_equal(elle__cpu_cache_size(&cpu), after_first + 2);
}

/* ---- errors ------------------------------------------------------------- */

static void test_errors(void **state)
{
    (void)state;
    float *buf = scratch_floats(4096), *w = scratch_floats(4096);
    const elle__conv_desc cd = {.ic = 16, .oc = 16, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                                .ph = 1, .pw = 1, .has_bias = 0};
    elle__tensor x = cpu_empty(2, 16, 6, 6, -1);
    elle__tensor bad_y = cpu_empty(2, 16, 5, 6, -1); /* should be 6x6 */
    assert_elle_status(cpu.ops->conv2d_fwd(&cpu, &cd, &x, w, NULL, &bad_y), ELLE_ESHAPE);
    assert_message_has("conv2d_fwd");
    assert_message_has("(2, 16, 5, 6");
    elle__tensor x8 = cpu_empty(2, 8, 6, 6, -1), y = cpu_empty(2, 16, 6, 6, -1);
    assert_elle_status(cpu.ops->conv2d_bwd_data(&cpu, &cd, &y, w, &x8), ELLE_ESHAPE);
    assert_message_has("conv2d_bwd_data");
    assert_elle_status(cpu.ops->conv2d_bwd_weights(&cpu, &cd, &x8, &y, w, NULL), ELLE_ESHAPE);

    const elle__bn_desc bd = {.c = 12, .eps = 1e-5f, .momentum = 0.1f, .fuse_relu = 0};
    assert_elle_status(cpu.ops->bn_fwd_infer(&cpu, &bd, &x, w, w, w, w, &y, NULL), ELLE_ESHAPE);
    assert_message_has("bn_fwd_infer");
    assert_bn_desc_rules(&cpu, &x, &y, w);

    elle__tensor a = cpu_empty(2, 16, 6, 6, -1), b = cpu_empty(2, 16, 6, 5, -1);
    assert_elle_status(cpu.ops->add(&cpu, &a, &b, &a), ELLE_ESHAPE);
    assert_message_has("add");

    elle__tensor lo = plain(buf, 3, 10, 1, 1); /* batch 3 for an input of 2 */
    assert_elle_status(cpu.ops->linear_fwd(&cpu, &x, w, NULL, &lo), ELLE_ESHAPE);
    assert_message_has("linear_fwd");

    const elle__pool_desc pd = {.kind = ELLE__POOL_MAX, .kh = 2, .kw = 2, .sh = 2, .sw = 2};
    assert_elle_status(cpu.ops->pool_fwd(&cpu, &pd, &x, &y, w), ELLE_ESHAPE);
    assert_message_has("pool_fwd");

    elle__tensor unknown = elle__tensor_make(buf, 1, 4, 2, 2, 99);
    assert_elle_status(cpu.ops->relu_fwd(&cpu, &unknown, &unknown), ELLE_EINVAL);
    assert_elle_status(cpu.ops->uniform(&cpu, 4, 1, 0, 1.0f, 0.0f, buf), ELLE_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_table, free_scratch),
        cmocka_unit_test_teardown(test_layouts, free_scratch),
        cmocka_unit_test_teardown(test_conv, free_scratch),
        cmocka_unit_test_teardown(test_bn, free_scratch),
        cmocka_unit_test_teardown(test_bn_normalize_use, free_scratch),
        cmocka_unit_test_teardown(test_relu_add, free_scratch),
        cmocka_unit_test_teardown(test_pool, free_scratch),
        cmocka_unit_test_teardown(test_linear, free_scratch),
        cmocka_unit_test_teardown(test_xent, free_scratch),
        cmocka_unit_test_teardown(test_flat_ops, free_scratch),
        cmocka_unit_test_teardown(test_sgd_update, free_scratch),
        cmocka_unit_test_teardown(test_project_linf, free_scratch),
        cmocka_unit_test_teardown(test_uniform, free_scratch),
        cmocka_unit_test_teardown(test_cache, free_scratch),
        cmocka_unit_test_teardown(test_errors, free_scratch),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
