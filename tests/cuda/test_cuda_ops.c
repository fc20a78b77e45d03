/*
 * The CUDA backend against the reference backend, op by op.
 *
 * Both backends get the same random plain inputs; the CUDA copies live in
 * device memory (ops->alloc, copy_to_device) and every result is read back
 * with copy_to_host before it is compared, so the host never touches device
 * memory. Outputs that an op WRITES start dirty (values in [5, 6]) so an op
 * that skips elements is caught; outputs it ACCUMULATES start at a random
 * non-zero value and the op runs twice on both backends.
 *
 * Tolerances (the reasoning of tests/unit/test_cpu_ops.c): the reference
 * accumulates in double, cuDNN / cuBLAS / our kernels in float in their own
 * order. The largest sums here (conv over 576 products, linear over 1568
 * products of values in [-1, 1]) carry float errors around 1e-5, so
 * ATOL = RTOL = 1e-4 leaves a margin while an indexing error (O(1)) cannot
 * pass; every comparison also bounds the normalised MSE (< 1e-10), which
 * catches a systematic error under the elementwise bound (TF32 tensor-core
 * math, ~1e-3 relative, fails it). The flat ops whose reference arithmetic
 * is a single rounding are compared bit for bit; axpy and the SGD step allow
 * the one rounding a fused multiply-add saves.
 *
 * Without a CUDA device the program exits with 77 (meson: skipped). The
 * same program also runs, in every build, on the emulated GPU of
 * tests/cuda_emu (suite cuda_emu), where it cannot skip.
 */
#include "elle_test.h"

#include <inttypes.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_internal.h"
#include "core/rng.h"
#include "cuda_test.h"

#define ATOL 1e-4
#define RTOL 1e-4
#define NMSE_MAX 1e-10

/* ---- fixtures ------------------------------------------------------------ */

#define TRNG_SEED 7
#include "op_compare.h"

static elle__backend cu, ref;

static int group_setup(void **state)
{
    (void)state;
    return backends_setup(&cu, elle__backend_cuda_create, &ref);
}

static int group_teardown(void **state)
{
    (void)state;
    backends_teardown(&cu, &ref);
    return 0;
}

/* Per-test host memory (op_compare.h's scratch) and device memory, both
 * released by each test's teardown. */
#define MAX_DEV_SCRATCH 4096
static void *dev_scratch[MAX_DEV_SCRATCH];
static int n_dev;

/* Device memory from the backend's allocator (zero-filled by contract). */
static void *dmem(size_t bytes)
{
    assert_true(n_dev < MAX_DEV_SCRATCH);
    void *p = NULL;
    assert_elle_ok(cu.ops->alloc(&cu, bytes ? bytes : 4, &p));
    assert_non_null(p);
    dev_scratch[n_dev++] = p;
    return p;
}

static int free_scratch(void **state)
{
    (void)state;
    scratch_free_all();
    for (int i = 0; i < n_dev; i++)
        cu.ops->free(&cu, dev_scratch[i]);
    n_dev = 0;
    return 0;
}

/* A device copy of n host floats. */
static float *dev_of(const float *h, size_t n)
{
    float *d = dmem(n * sizeof(float));
    assert_elle_ok(cu.ops->copy_to_device(&cu, d, h, n * sizeof(float)));
    return d;
}

static int32_t *dev_of_i32(const int32_t *h, size_t n)
{
    int32_t *d = dmem(n * sizeof(int32_t));
    assert_elle_ok(cu.ops->copy_to_device(&cu, d, h, n * sizeof(int32_t)));
    return d;
}

/* Host copy of n device floats (waits for the queued work). */
static float *host_of(const float *d, size_t n)
{
    float *h = scratch_floats(n);
    assert_elle_ok(cu.ops->copy_to_host(&cu, h, d, n * sizeof(float)));
    return h;
}


/* A dirty device buffer: what a WRITTEN output starts from. */
static float *dev_dirty(size_t n)
{
    return dev_of(random_floats(n, 5, 6), n);
}

/* ---- comparisons ---------------------------------------------------------- */

/* got: device memory, read back; want: host (the reference's). */
#define assert_dev_match(dev, want, n, atol, rtol)                                            \
    assert_match_impl(host_of((dev), (n)), (want), (n), (atol), (rtol), #dev " vs " #want,   \
                      __FILE__, __LINE__)

#define assert_dev_bitwise(dev, want, n)                                                      \
    assert_bitwise_impl(host_of((dev), (n)), (want), (n), #dev " vs " #want, __FILE__, __LINE__)

/* ---- table, memory, layouts ----------------------------------------------- */

static void test_table(void **state)
{
    (void)state;
    assert_table_complete(&cu, "cuda", ELLE_BACKEND_CUDA);
    const elle__backend_ops *o = cu.ops;
    assert_elle_ok(o->sync(&cu));
    /* every tensor is plain, stored densely */
    assert_int_equal(o->layout_for(&cu, 3, 32, 32), ELLE__LAYOUT_PLAIN);
    assert_int_equal(o->layout_for(&cu, 64, 16, 16), ELLE__LAYOUT_PLAIN);
    assert_int_equal(o->layout_for(&cu, 512, 1, 1), ELLE__LAYOUT_PLAIN);
    elle__tensor t = plain(NULL, 3, 24, 7, 5);
    assert_int_equal(o->tensor_bytes(&cu, &t), 3 * 24 * 7 * 5 * 4);
}

static void test_memory(void **state)
{
    (void)state;
    const size_t n = 100003;
    /* zero-filled, even when the allocator hands back memory it held before */
    for (int round = 0; round < 3; round++) {
        void *p = NULL;
        assert_elle_ok(cu.ops->alloc(&cu, n * sizeof(float), &p));
        assert_true(((uintptr_t)p & 63) == 0);
        float *h = scratch_floats(n);
        memset(h, 0xff, n * sizeof(float));
        assert_elle_ok(cu.ops->copy_to_host(&cu, h, p, n * sizeof(float)));
        for (size_t i = 0; i < n; i++)
            assert_true(((uint32_t *)h)[i] == 0);
        assert_elle_ok(cu.ops->fill(&cu, (int64_t)n, 3.0f, p));
        cu.ops->free(&cu, p);
    }
    void *tiny = NULL; /* odd sizes */
    assert_elle_ok(cu.ops->alloc(&cu, 3, &tiny));
    unsigned char b[3] = {1, 1, 1};
    assert_elle_ok(cu.ops->copy_to_host(&cu, b, tiny, 3));
    assert_true(b[0] == 0 && b[1] == 0 && b[2] == 0);
    cu.ops->free(&cu, tiny);
    cu.ops->free(&cu, NULL); /* freeing NULL is a no-op, as free() */

    /* round trip, device-to-device copy at odd offsets, partial memzero */
    float *x = random_floats(n, -1, 1);
    float *d = dev_of(x, n), *e = dev_dirty(n);
    assert_dev_bitwise(d, x, n);
    assert_elle_ok(cu.ops->copy(&cu, e + 1, d + 3, (n - 5) * sizeof(float)));
    float *got = host_of(e, n);
    assert_bitwise_impl(got + 1, x + 3, n - 5, "copy at offsets", __FILE__, __LINE__);
    assert_true(got[0] >= 5.0f && got[n - 1] >= 5.0f); /* outside the range: untouched */
    /* overlapping ranges of one block: memmove semantics, both directions */
    for (int dir = 0; dir < 2; dir++) {
        float *o = dev_of(x, n);
        float *want = copy_of(x, n);
        const size_t from = dir ? 2 : 5, to = dir ? 5 : 2, len = n - 9;
        memmove(want + to, want + from, len * sizeof(float));
        assert_elle_ok(cu.ops->copy(&cu, o + to, o + from, len * sizeof(float)));
        assert_dev_bitwise(o, want, n);
    }
    assert_elle_ok(cu.ops->memzero(&cu, d + 7, 13 * sizeof(float)));
    got = host_of(d, n);
    for (size_t i = 0; i < n; i++) {
        float want = (i >= 7 && i < 20) ? 0.0f : x[i];
        assert_true(memcmp(&got[i], &want, sizeof want) == 0);
    }
    /* host staging: the source may be reused right after copy_to_device */
    float *stage = copy_of(x, n);
    float *f = dmem(n * sizeof(float));
    assert_elle_ok(cu.ops->copy_to_device(&cu, f, stage, n * sizeof(float)));
    memset(stage, 0, n * sizeof(float));
    assert_dev_bitwise(f, x, n);

    /* to_plain / from_plain are copies for the plain layout */
    elle__tensor t = plain(dmem(numel4(2, 3, 5, 7) * 4), 2, 3, 5, 7);
    float *src = dev_of(x, numel4(2, 3, 5, 7)), *dst = dev_dirty(numel4(2, 3, 5, 7));
    assert_elle_ok(cu.ops->from_plain(&cu, src, &t));
    assert_elle_ok(cu.ops->to_plain(&cu, &t, dst));
    assert_dev_bitwise(dst, x, numel4(2, 3, 5, 7));
}

/* ---- convolution ------------------------------------------------------------- */

typedef struct conv_case {
    int64_t n, ic, oc, h, w, kh, kw, s, p;
    int bias;
} conv_case;

/* One forward, data and weight backward at the case's shapes (for the cache). */
static void conv_round(const elle__conv_desc *cd, elle__tensor *x, const float *w, const float *b,
                       elle__tensor *y, elle__tensor *dy, elle__tensor *dx, float *dw, float *db)
{
    assert_elle_ok(cu.ops->conv2d_fwd(&cu, cd, x, w, b, y));
    assert_elle_ok(cu.ops->conv2d_bwd_data(&cu, cd, dy, w, dx));
    assert_elle_ok(cu.ops->conv2d_bwd_weights(&cu, cd, x, dy, dw, db));
}

static void run_conv_case(const conv_case *cc)
{
    const elle__conv_desc cd = {.ic = cc->ic, .oc = cc->oc, .kh = cc->kh, .kw = cc->kw,
                                .sh = cc->s, .sw = cc->s, .ph = cc->p, .pw = cc->p,
                                .has_bias = cc->bias};
    const int64_t oh = (cc->h + 2 * cc->p - cc->kh) / cc->s + 1;
    const int64_t ow = (cc->w + 2 * cc->p - cc->kw) / cc->s + 1;
    const size_t nx = numel4(cc->n, cc->ic, cc->h, cc->w), ny = numel4(cc->n, cc->oc, oh, ow);
    const size_t nw = (size_t)(cc->oc * cc->ic * cc->kh * cc->kw), nb = (size_t)cc->oc;
    float *x = random_floats(nx, -1, 1), *w = random_floats(nw, -1, 1);
    float *b = cc->bias ? random_floats(nb, -1, 1) : NULL;
    float *dy = random_floats(ny, -1, 1);
    float *x_d = dev_of(x, nx), *w_d = dev_of(w, nw), *b_d = b ? dev_of(b, nb) : NULL;
    float *dy_d = dev_of(dy, ny);

    /* forward */
    elle__tensor rx = plain(x, cc->n, cc->ic, cc->h, cc->w);
    elle__tensor ry = plain(scratch_floats(ny), cc->n, cc->oc, oh, ow);
    assert_elle_ok(ref.ops->conv2d_fwd(&ref, &cd, &rx, w, b, &ry));
    elle__tensor cx = plain(x_d, cc->n, cc->ic, cc->h, cc->w);
    elle__tensor cy = plain(dev_dirty(ny), cc->n, cc->oc, oh, ow);
    assert_elle_ok(cu.ops->conv2d_fwd(&cu, &cd, &cx, w_d, b_d, &cy));
    assert_dev_match(cy.data, ry.data, ny, ATOL, RTOL);

    /* backward data (written) */
    elle__tensor rdy = plain(dy, cc->n, cc->oc, oh, ow);
    elle__tensor rdx = plain(scratch_floats(nx), cc->n, cc->ic, cc->h, cc->w);
    assert_elle_ok(ref.ops->conv2d_bwd_data(&ref, &cd, &rdy, w, &rdx));
    elle__tensor cdy = plain(dy_d, cc->n, cc->oc, oh, ow);
    elle__tensor cdx = plain(dev_dirty(nx), cc->n, cc->ic, cc->h, cc->w);
    assert_elle_ok(cu.ops->conv2d_bwd_data(&cu, &cd, &cdy, w_d, &cdx));
    assert_dev_match(cdx.data, rdx.data, nx, ATOL, RTOL);

    /* backward weights: accumulated onto a non-zero start, twice */
    float *dw0 = random_floats(nw, -1, 1), *db0 = random_floats(nb, -1, 1);
    float *rdw = copy_of(dw0, nw), *rdb = copy_of(db0, nb);
    float *cdw = dev_of(dw0, nw), *cdb = dev_of(db0, nb);
    for (int rep = 0; rep < 2; rep++) {
        assert_elle_ok(ref.ops->conv2d_bwd_weights(&ref, &cd, &rx, &rdy, rdw, rdb));
        assert_elle_ok(cu.ops->conv2d_bwd_weights(&cu, &cd, &cx, &cdy, cdw, cdb));
    }
    assert_dev_match(cdw, rdw, nw, ATOL, RTOL);
    assert_dev_match(cdb, rdb, nb, ATOL, RTOL);

    /* from zero, then again with db NULL: the weights double, the bias
     * gradient stays as it was */
    float *g = dmem(nw * 4), *gb = dmem(nb * 4);
    assert_elle_ok(cu.ops->conv2d_bwd_weights(&cu, &cd, &cx, &cdy, g, gb));
    float *g1 = host_of(g, nw), *gb1 = host_of(gb, nb);
    assert_elle_ok(cu.ops->conv2d_bwd_weights(&cu, &cd, &cx, &cdy, g, NULL));
    for (size_t i = 0; i < nw; i++)
        g1[i] *= 2.0f;
    assert_dev_match(g, g1, nw, 1e-5, 1e-5);
    assert_dev_bitwise(gb, gb1, nb);

    /* the algorithm cache: the same shapes again add no entry */
    size_t entries = elle__cuda_conv_cache_size(&cu);
    assert_true(entries > 0);
    conv_round(&cd, &cx, w_d, b_d, &cy, &cdy, &cdx, g, gb);
    conv_round(&cd, &cx, w_d, b_d, &cy, &cdy, &cdx, g, NULL);
    assert_int_equal(elle__cuda_conv_cache_size(&cu), entries);
    assert_dev_match(cy.data, ry.data, ny, ATOL, RTOL); /* and the cached path agrees */
    assert_dev_match(cdx.data, rdx.data, nx, ATOL, RTOL);
}

static void test_conv(void **state)
{
    (void)state;
    static const conv_case cases[] = {
        /* n, ic, oc, h, w, kh, kw, s, p, bias */
        {3, 3, 16, 7, 5, 3, 3, 1, 1, 1},    /* stem, odd sizes, bias */
        {1, 3, 16, 8, 8, 3, 3, 1, 1, 0},    /* batch 1, no bias */
        {3, 16, 24, 7, 5, 3, 3, 2, 1, 1},   /* 3x3 stride 2 on odd sizes */
        {3, 24, 64, 7, 5, 1, 1, 2, 0, 0},   /* 1x1 stride 2 shortcut */
        {3, 24, 64, 7, 5, 1, 1, 2, 0, 1},   /* with bias */
        {2, 8, 12, 9, 9, 1, 1, 1, 0, 1},    /* 1x1 stride 1 */
        {1, 64, 64, 7, 5, 3, 3, 1, 1, 1},   /* 64 -> 64: 576-term sums */
        {3, 64, 24, 7, 5, 3, 3, 2, 1, 0},
        {2, 5, 7, 11, 6, 3, 3, 2, 0, 1},    /* no padding, odd channel counts */
        {2, 6, 5, 9, 7, 5, 3, 1, 2, 0},     /* rectangular kernel, padding 2 */
        {8, 32, 32, 16, 16, 3, 3, 1, 1, 0}, /* a size where algorithms need workspace */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *c = &cases[i];
        print_message("conv case %zu: n %" PRId64 ", %" PRId64 " -> %" PRId64 ", %" PRId64
                      "x%" PRId64 ", k %" PRId64 "x%" PRId64 " s %" PRId64 " p %" PRId64 "%s\n",
                      i, c->n, c->ic, c->oc, c->h, c->w, c->kh, c->kw, c->s, c->p,
                      c->bias ? " bias" : "");
        run_conv_case(c);
    }
    /* a new batch size is a new shape: entries are added once, then reused */
    size_t before = elle__cuda_conv_cache_size(&cu);
    const conv_case again = {5, 3, 16, 7, 5, 3, 3, 1, 1, 1};
    run_conv_case(&again);
    assert_true(elle__cuda_conv_cache_size(&cu) > before);
}

/* ---- batch norm ---------------------------------------------------------------- */

static void run_bn_case(int64_t n, int64_t c, int64_t h, int64_t w, int fuse)
{
    const elle__bn_desc bd = {.c = c, .eps = 1e-5f, .momentum = 0.1f, .fuse_relu = fuse};
    const size_t nx = numel4(n, c, h, w), nc = (size_t)c;
    float *x = random_floats(nx, -2, 3);
    float *gamma = random_floats(nc, 0.5f, 1.5f), *beta = random_floats(nc, -0.5f, 0.5f);
    float *rm0 = random_floats(nc, -0.2f, 0.2f), *rv0 = random_floats(nc, 0.5f, 2.0f);
    float *dy = random_floats(nx, -1, 1);
    float *dg0 = random_floats(nc, -1, 1), *db0 = random_floats(nc, -1, 1);
    float *gamma_d = dev_of(gamma, nc), *beta_d = dev_of(beta, nc);
    float *rm0_d = dev_of(rm0, nc), *rv0_d = dev_of(rv0, nc);

    elle__tensor rx = plain(x, n, c, h, w), ry = plain(scratch_floats(nx), n, c, h, w);
    elle__tensor rdy = plain(dy, n, c, h, w), rdx = plain(scratch_floats(nx), n, c, h, w);
    elle__tensor cx = plain(dev_of(x, nx), n, c, h, w), cy = plain(dev_dirty(nx), n, c, h, w);
    elle__tensor cdy = plain(dev_of(dy, nx), n, c, h, w);
    elle__tensor cdx = plain(dev_dirty(nx), n, c, h, w);
    size_t wsb = cu.ops->bn_workspace_bytes(&cu, &bd, &cx);
    elle__tensor nodata = cx; /* arena planning asks before any memory exists */
    nodata.data = NULL;
    assert_int_equal(cu.ops->bn_workspace_bytes(&cu, &bd, &nodata), wsb);
    void *ws = wsb ? dmem(wsb) : NULL;

    /* training forward twice: the running statistics after two updates */
    float *rrm = copy_of(rm0, nc), *rrv = copy_of(rv0, nc);
    float *crm = dev_of(rm0, nc), *crv = dev_of(rv0, nc);
    float *rsm = scratch_floats(nc), *rsv = scratch_floats(nc);
    float *csm = dev_dirty(nc), *csv = dev_dirty(nc);
    for (int rep = 0; rep < 2; rep++) {
        assert_elle_ok(ref.ops->bn_fwd_train(&ref, &bd, &rx, gamma, beta, rrm, rrv, &ry, rsm, rsv,
                                             NULL));
        assert_elle_ok(cu.ops->bn_fwd_train(&cu, &bd, &cx, gamma_d, beta_d, crm, crv, &cy, csm,
                                            csv, ws));
    }
    assert_dev_match(cy.data, ry.data, nx, ATOL, RTOL);
    assert_dev_match(csm, rsm, nc, 1e-5, 1e-5);
    assert_dev_match(csv, rsv, nc, 1e-5, 1e-5);
    assert_dev_match(crm, rrm, nc, 1e-5, 1e-5);
    assert_dev_match(crv, rrv, nc, 1e-5, 1e-5);

    /* training backward: dx written, dgamma and dbeta accumulated */
    float *rdg = copy_of(dg0, nc), *rdb = copy_of(db0, nc);
    float *cdg = dev_of(dg0, nc), *cdb = dev_of(db0, nc);
    assert_elle_ok(ref.ops->bn_bwd(&ref, &bd, 1, &rx, &ry, &rdy, gamma, rsm, rsv, NULL, &rdx, rdg,
                                   rdb));
    assert_elle_ok(cu.ops->bn_bwd(&cu, &bd, 1, &cx, &cy, &cdy, gamma_d, csm, csv, ws, &cdx, cdg,
                                  cdb));
    assert_dev_match(cdx.data, rdx.data, nx, ATOL, RTOL);
    assert_dev_match(cdg, rdg, nc, ATOL, RTOL);
    assert_dev_match(cdb, rdb, nc, ATOL, RTOL);
    /* a second backward adds the same again */
    assert_elle_ok(ref.ops->bn_bwd(&ref, &bd, 1, &rx, &ry, &rdy, gamma, rsm, rsv, NULL, &rdx, rdg,
                                   rdb));
    assert_elle_ok(cu.ops->bn_bwd(&cu, &bd, 1, &cx, &cy, &cdy, gamma_d, csm, csv, ws, &cdx, cdg,
                                  cdb));
    assert_dev_match(cdg, rdg, nc, ATOL, RTOL);
    assert_dev_match(cdb, rdb, nc, ATOL, RTOL);
    /* NULL parameter gradients: dx only */
    elle__tensor cdx2 = plain(dev_dirty(nx), n, c, h, w);
    assert_elle_ok(cu.ops->bn_bwd(&cu, &bd, 1, &cx, &cy, &cdy, gamma_d, csm, csv, ws, &cdx2, NULL,
                                  NULL));
    assert_dev_match(cdx2.data, rdx.data, nx, ATOL, RTOL);
    /* in place: dx aliases dy */
    elle__tensor g = plain(dev_of(dy, nx), n, c, h, w);
    assert_elle_ok(cu.ops->bn_bwd(&cu, &bd, 1, &cx, &cy, &g, gamma_d, csm, csv, ws, &g, NULL,
                                  NULL));
    assert_dev_match(g.data, rdx.data, nx, ATOL, RTOL);

    /* inference forward and backward (running statistics are constants) */
    assert_elle_ok(ref.ops->bn_fwd_infer(&ref, &bd, &rx, gamma, beta, rm0, rv0, &ry, NULL));
    assert_elle_ok(cu.ops->bn_fwd_infer(&cu, &bd, &cx, gamma_d, beta_d, rm0_d, rv0_d, &cy, ws));
    assert_dev_match(cy.data, ry.data, nx, ATOL, RTOL);
    rdg = copy_of(dg0, nc), rdb = copy_of(db0, nc);
    cdg = dev_of(dg0, nc), cdb = dev_of(db0, nc);
    assert_elle_ok(ref.ops->bn_bwd(&ref, &bd, 0, &rx, &ry, &rdy, gamma, rm0, rv0, NULL, &rdx, rdg,
                                   rdb));
    assert_elle_ok(cu.ops->bn_bwd(&cu, &bd, 0, &cx, &cy, &cdy, gamma_d, rm0_d, rv0_d, ws, &cdx,
                                  cdg, cdb));
    assert_dev_match(cdx.data, rdx.data, nx, ATOL, RTOL);
    assert_dev_match(cdg, rdg, nc, ATOL, RTOL);
    assert_dev_match(cdb, rdb, nc, ATOL, RTOL);
    /* inference leaves the running statistics alone */
    assert_dev_bitwise(rm0_d, rm0, nc);
    assert_dev_bitwise(rv0_d, rv0, nc);
}

static void test_bn(void **state)
{
    (void)state;
    static const int64_t shapes[][4] = {
        {3, 24, 7, 5},   {2, 16, 4, 4}, {4, 3, 5, 5},  {8, 64, 1, 1}, /* BatchNorm1d-like */
        {5, 40, 1, 1},   {2, 32, 3, 3}, {4, 8, 33, 31}, /* 4092 values per channel */
        {16, 4, 64, 64}, /* 65536 values per channel: multi-block reductions */
        {2, 1, 1, 1},    /* the smallest training batch: m = 2 */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int fuse = 0; fuse < 2; fuse++) {
            const int64_t *s = shapes[i];
            print_message("bn (%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 ")%s\n", s[0],
                          s[1], s[2], s[3], fuse ? " fused relu" : "");
            run_bn_case(s[0], s[1], s[2], s[3], fuse);
        }
}

/* The input normalisation layer's use: eps 0, 3 channels, no workspace, no
 * parameter gradients. */
static void test_bn_normalize_use(void **state)
{
    (void)state;
    const elle__bn_desc bd = {.c = 3, .eps = 0.0f, .momentum = 0.0f, .fuse_relu = 0};
    const float k[12] = {1, 1, 1, 0, 0, 0, 0.49f, 0.48f, 0.45f, 0.06f, 0.05f, 0.07f};
    const size_t nx = numel4(2, 3, 4, 4);
    float *x = random_floats(nx, 0, 1), *dy = random_floats(nx, -1, 1);
    float *kd = dev_of(k, 12);
    elle__tensor rx = plain(x, 2, 3, 4, 4), ry = plain(scratch_floats(nx), 2, 3, 4, 4);
    elle__tensor cx = plain(dev_of(x, nx), 2, 3, 4, 4), cy = plain(dev_dirty(nx), 2, 3, 4, 4);
    assert_elle_ok(ref.ops->bn_fwd_infer(&ref, &bd, &rx, k, k + 3, k + 6, k + 9, &ry, NULL));
    assert_elle_ok(cu.ops->bn_fwd_infer(&cu, &bd, &cx, kd, kd + 3, kd + 6, kd + 9, &cy, NULL));
    assert_dev_match(cy.data, ry.data, nx, ATOL, RTOL);
    elle__tensor rdy = plain(dy, 2, 3, 4, 4), rdx = plain(scratch_floats(nx), 2, 3, 4, 4);
    elle__tensor cdy = plain(dev_of(dy, nx), 2, 3, 4, 4), cdx = plain(dev_dirty(nx), 2, 3, 4, 4);
    assert_elle_ok(ref.ops->bn_bwd(&ref, &bd, 0, &rx, &ry, &rdy, k, k + 6, k + 9, NULL, &rdx,
                                   NULL, NULL));
    assert_elle_ok(cu.ops->bn_bwd(&cu, &bd, 0, &cx, &cy, &cdy, kd, kd + 6, kd + 9, NULL, &cdx,
                                  NULL, NULL));
    assert_dev_match(cdx.data, rdx.data, nx, ATOL, RTOL);
    /* the tangent pass's use: mean := the zero beta constants */
    assert_elle_ok(ref.ops->bn_fwd_infer(&ref, &bd, &rx, k, k + 3, k + 3, k + 9, &ry, NULL));
    assert_elle_ok(cu.ops->bn_fwd_infer(&cu, &bd, &cx, kd, kd + 3, kd + 3, kd + 9, &cy, NULL));
    assert_dev_match(cy.data, ry.data, nx, ATOL, RTOL);
}

static void test_bn_tangent(void **state)
{
    (void)state;
    static const int64_t shapes[][4] = {{3, 3, 5, 4}, {2, 12, 3, 3}, {5, 40, 2, 3},
                                        {3, 16, 1, 1}, {8, 4, 17, 19}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t n = shapes[si][0], c = shapes[si][1], h = shapes[si][2], w = shapes[si][3];
        const size_t nx = numel4(n, c, h, w), nc = (size_t)c;
        for (int fuse = 0; fuse <= 1; fuse++)
            for (int training = 0; training <= 1; training++) {
                const elle__bn_desc bd = {.c = c, .eps = 1e-5f, .momentum = 0.1f,
                                          .fuse_relu = fuse};
                float *gamma = random_floats(nc, -1.5f, 1.5f), *beta = random_floats(nc, -.5f, .5f);
                float *rm = random_floats(nc, -0.3f, 0.3f), *rv = random_floats(nc, 0.5f, 2.0f);
                float *x = random_floats(nx, -1, 1), *xt = random_floats(nx, -1, 1);
                float *dy = random_floats(nx, -1, 1), *dyt = random_floats(nx, -1, 1);
                float *gamma_d = dev_of(gamma, nc), *beta_d = dev_of(beta, nc);
                float *rm_d = dev_of(rm, nc), *rv_d = dev_of(rv, nc);
                elle__tensor rx = plain(x, n, c, h, w), rxt = plain(xt, n, c, h, w);
                elle__tensor rdy = plain(dy, n, c, h, w), rdyt = plain(dyt, n, c, h, w);
                elle__tensor ry = plain(scratch_floats(nx), n, c, h, w);
                elle__tensor cx = plain(dev_of(x, nx), n, c, h, w);
                elle__tensor cxt = plain(dev_of(xt, nx), n, c, h, w);
                elle__tensor cdy = plain(dev_of(dy, nx), n, c, h, w);
                elle__tensor cdyt = plain(dev_of(dyt, nx), n, c, h, w);
                elle__tensor cy = plain(dev_dirty(nx), n, c, h, w);
                size_t wsb = cu.ops->bn_workspace_bytes(&cu, &bd, &cx);
                void *ws = wsb ? dmem(wsb) : NULL;
                /* each backend's own forward: its y, statistics and workspace */
                float *sm = scratch_floats(nc), *sv = scratch_floats(nc);
                float *sm_d = dev_dirty(nc), *sv_d = dev_dirty(nc);
                if (training) {
                    float *rm2 = copy_of(rm, nc), *rv2 = copy_of(rv, nc);
                    assert_elle_ok(ref.ops->bn_fwd_train(&ref, &bd, &rx, gamma, beta, rm2, rv2,
                                                         &ry, sm, sv, NULL));
                    float *rm2_d = dev_of(rm, nc), *rv2_d = dev_of(rv, nc);
                    assert_elle_ok(cu.ops->bn_fwd_train(&cu, &bd, &cx, gamma_d, beta_d, rm2_d,
                                                        rv2_d, &cy, sm_d, sv_d, ws));
                } else {
                    assert_elle_ok(ref.ops->bn_fwd_infer(&ref, &bd, &rx, gamma, beta, rm, rv, &ry,
                                                         NULL));
                    assert_elle_ok(cu.ops->bn_fwd_infer(&cu, &bd, &cx, gamma_d, beta_d, rm_d,
                                                        rv_d, &cy, ws));
                }
                const float *mean = training ? sm : rm, *var = training ? sv : rv;
                const float *mean_d = training ? sm_d : rm_d, *var_d = training ? sv_d : rv_d;

                elle__tensor ryt = plain(scratch_floats(nx), n, c, h, w);
                elle__tensor cyt = plain(dev_dirty(nx), n, c, h, w);
                assert_elle_ok(ref.ops->bn_fwd_tangent(&ref, &bd, training, &rx, &ry, &rxt, gamma,
                                                       mean, var, NULL, &ryt));
                assert_elle_ok(cu.ops->bn_fwd_tangent(&cu, &bd, training, &cx, &cy, &cxt,
                                                      gamma_d, mean_d, var_d, ws, &cyt));
                assert_dev_match(cyt.data, ryt.data, nx, ATOL, RTOL);
                /* yt may alias xt */
                elle__tensor alias = plain(dev_of(xt, nx), n, c, h, w);
                assert_elle_ok(cu.ops->bn_fwd_tangent(&cu, &bd, training, &cx, &cy, &alias,
                                                      gamma_d, mean_d, var_d, ws, &alias));
                assert_dev_match(alias.data, ryt.data, nx, ATOL, RTOL);

                elle__tensor rdxt = plain(scratch_floats(nx), n, c, h, w);
                elle__tensor cdxt = plain(dev_dirty(nx), n, c, h, w);
                float *gr = scratch_floats(nc), *br = scratch_floats(nc), *start = scratch_floats(nc);
                for (size_t i = 0; i < nc; i++) /* accumulate onto a common start */
                    gr[i] = br[i] = start[i] = 0.25f;
                float *gc = dev_of(start, nc), *bc = dev_of(start, nc);
                assert_elle_ok(ref.ops->bn_bwd_tangent(&ref, &bd, training, &rx, &ry, &rxt, &rdy,
                                                       &rdyt, gamma, mean, var, NULL, &rdxt, gr,
                                                       br));
                assert_elle_ok(cu.ops->bn_bwd_tangent(&cu, &bd, training, &cx, &cy, &cxt, &cdy,
                                                      &cdyt, gamma_d, mean_d, var_d, ws, &cdxt, gc,
                                                      bc));
                assert_dev_match(cdxt.data, rdxt.data, nx, ATOL, RTOL);
                assert_dev_match(gc, gr, nc, ATOL, RTOL);
                assert_dev_match(bc, br, nc, ATOL, RTOL);
                /* dxt NULL: only the parameter tangents, the same ones again */
                assert_elle_ok(cu.ops->bn_bwd_tangent(&cu, &bd, training, &cx, &cy, &cxt, &cdy,
                                                      &cdyt, gamma_d, mean_d, var_d, ws, NULL, gc,
                                                      NULL));
                float *twice = scratch_floats(nc);
                for (size_t i = 0; i < nc; i++)
                    twice[i] = 0.25f + 2.0f * (gr[i] - 0.25f);
                assert_dev_match(gc, twice, nc, ATOL, RTOL);
                assert_dev_match(bc, br, nc, ATOL, RTOL); /* dbeta_t NULL: untouched */
            }
    }
}

/* ---- relu, add ---------------------------------------------------------------- */

static void test_relu_add(void **state)
{
    (void)state;
    static const int64_t shapes[][4] = {{3, 24, 7, 5}, {2, 12, 3, 3}, {1, 1, 1, 1},
                                        {4, 64, 33, 35}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t n = shapes[s][0], c = shapes[s][1], h = shapes[s][2], w = shapes[s][3];
        const size_t nx = numel4(n, c, h, w);
        float *a = random_floats(nx, -1, 1), *b = random_floats(nx, -1, 1);
        float *dy = random_floats(nx, -1, 1);
        a[0] = 0.0f; /* relu(0) and its mask at exactly 0 */
        if (nx > 1)
            a[1] = -0.0f;
        elle__tensor ra = plain(a, n, c, h, w), rb = plain(b, n, c, h, w);
        elle__tensor ry = plain(scratch_floats(nx), n, c, h, w), rdy = plain(dy, n, c, h, w);
        elle__tensor rdx = plain(scratch_floats(nx), n, c, h, w);
        elle__tensor ca = plain(dev_of(a, nx), n, c, h, w), cb = plain(dev_of(b, nx), n, c, h, w);
        elle__tensor cy = plain(dev_dirty(nx), n, c, h, w);
        elle__tensor cdy = plain(dev_of(dy, nx), n, c, h, w);
        elle__tensor cdx = plain(dev_dirty(nx), n, c, h, w);

        assert_elle_ok(ref.ops->relu_fwd(&ref, &ra, &ry));
        assert_elle_ok(cu.ops->relu_fwd(&cu, &ca, &cy));
        assert_dev_bitwise(cy.data, ry.data, nx);
        assert_elle_ok(ref.ops->relu_bwd(&ref, &ry, &rdy, &rdx));
        assert_elle_ok(cu.ops->relu_bwd(&cu, &cy, &cdy, &cdx));
        assert_dev_bitwise(cdx.data, rdx.data, nx);
        /* dx aliases dy */
        assert_elle_ok(cu.ops->relu_bwd(&cu, &cy, &cdy, &cdy));
        assert_dev_bitwise(cdy.data, rdx.data, nx);

        assert_elle_ok(ref.ops->add(&ref, &ra, &rb, &ry));
        assert_elle_ok(cu.ops->add(&cu, &ca, &cb, &cy));
        assert_dev_bitwise(cy.data, ry.data, nx);
        /* y aliases b, then a */
        elle__tensor cb2 = plain(dev_of(b, nx), n, c, h, w);
        assert_elle_ok(cu.ops->add(&cu, &ca, &cb2, &cb2));
        assert_dev_bitwise(cb2.data, ry.data, nx);
        assert_elle_ok(cu.ops->add(&cu, &ca, &cb, &ca));
        assert_dev_bitwise(ca.data, ry.data, nx);
        /* relu in place */
        assert_elle_ok(ref.ops->relu_fwd(&ref, &ry, &ry));
        assert_elle_ok(cu.ops->relu_fwd(&cu, &ca, &ca));
        assert_dev_bitwise(ca.data, ry.data, nx);
    }
}

/* ---- pooling ---------------------------------------------------------------- */

static void run_pool_case(int kind, int64_t n, int64_t c, int64_t h, int64_t w, int64_t kh,
                          int64_t kw, int64_t s, int64_t p)
{
    const elle__pool_desc pd = {.kind = kind, .kh = kh, .kw = kw, .sh = s, .sw = s, .ph = p,
                                .pw = p};
    const int64_t oh = (h + 2 * p - kh) / s + 1, ow = (w + 2 * p - kw) / s + 1;
    const size_t nx = numel4(n, c, h, w), ny = numel4(n, c, oh, ow);
    float *x = distinct_floats(nx, 1e-2f), *dy = random_floats(ny, -1, 1);
    float *xt = random_floats(nx, -1, 1);
    elle__tensor rx = plain(x, n, c, h, w), ry = plain(scratch_floats(ny), n, c, oh, ow);
    elle__tensor rdy = plain(dy, n, c, oh, ow), rdx = plain(scratch_floats(nx), n, c, h, w);
    elle__tensor cx = plain(dev_of(x, nx), n, c, h, w), cy = plain(dev_dirty(ny), n, c, oh, ow);
    elle__tensor cdy = plain(dev_of(dy, ny), n, c, oh, ow);
    elle__tensor cdx = plain(dev_dirty(nx), n, c, h, w);
    size_t rwsb = ref.ops->pool_workspace_bytes(&ref, &pd, &rx, &ry);
    size_t cwsb = cu.ops->pool_workspace_bytes(&cu, &pd, &cx, &cy);
    elle__tensor xnd = cx, ynd = cy; /* arena planning: no memory yet */
    xnd.data = ynd.data = NULL;
    assert_int_equal(cu.ops->pool_workspace_bytes(&cu, &pd, &xnd, &ynd), cwsb);
    void *rws = rwsb ? scratch_mem(rwsb) : NULL, *cws = cwsb ? dmem(cwsb) : NULL;

    assert_elle_ok(ref.ops->pool_fwd(&ref, &pd, &rx, &ry, rws));
    assert_elle_ok(cu.ops->pool_fwd(&cu, &pd, &cx, &cy, cws));
    if (kind == ELLE__POOL_MAX)
        assert_dev_bitwise(cy.data, ry.data, ny);
    else
        assert_dev_match(cy.data, ry.data, ny, 1e-6, 1e-5);
    assert_elle_ok(ref.ops->pool_bwd(&ref, &pd, &rdy, rws, &rdx));
    assert_elle_ok(cu.ops->pool_bwd(&cu, &pd, &cdy, cws, &cdx));
    assert_dev_match(cdx.data, rdx.data, nx, 1e-6, 1e-5);

    /* tangent: max gathers xt at the forward's argmax (exact), avg pools xt */
    elle__tensor rxt = plain(xt, n, c, h, w), ryt = plain(scratch_floats(ny), n, c, oh, ow);
    elle__tensor cxt = plain(dev_of(xt, nx), n, c, h, w);
    elle__tensor cyt = plain(dev_dirty(ny), n, c, oh, ow);
    assert_elle_ok(ref.ops->pool_fwd_tangent(&ref, &pd, &rx, &ry, rws, &rxt, &ryt));
    assert_elle_ok(cu.ops->pool_fwd_tangent(&cu, &pd, &cx, &cy, cws, &cxt, &cyt));
    if (kind == ELLE__POOL_MAX)
        assert_dev_bitwise(cyt.data, ryt.data, ny);
    else
        assert_dev_match(cyt.data, ryt.data, ny, 1e-6, 1e-5);
}

static void test_pool(void **state)
{
    (void)state;
    run_pool_case(ELLE__POOL_MAX, 3, 24, 8, 6, 2, 2, 2, 0);
    run_pool_case(ELLE__POOL_MAX, 3, 16, 7, 5, 2, 2, 2, 0); /* odd: last row/column unread */
    run_pool_case(ELLE__POOL_MAX, 2, 12, 7, 7, 3, 3, 2, 1); /* padded, overlapping windows */
    run_pool_case(ELLE__POOL_MAX, 2, 3, 6, 6, 2, 2, 1, 0);  /* stride 1: overlapping */
    run_pool_case(ELLE__POOL_MAX, 4, 32, 28, 28, 2, 2, 2, 0);
    run_pool_case(ELLE__POOL_AVG, 3, 24, 8, 6, 2, 2, 2, 0);
    run_pool_case(ELLE__POOL_AVG, 3, 16, 7, 5, 2, 2, 2, 0);
    run_pool_case(ELLE__POOL_AVG, 2, 12, 7, 7, 3, 3, 2, 1); /* padding counted */
    run_pool_case(ELLE__POOL_AVG, 3, 64, 4, 4, 4, 4, 4, 0); /* global 4x4 -> 1x1 */
    run_pool_case(ELLE__POOL_AVG, 3, 10, 7, 5, 7, 5, 1, 0); /* global, non-square */
    run_pool_case(ELLE__POOL_AVG, 2, 640, 8, 8, 8, 8, 8, 0); /* WRN head: many channels */
}

/* ---- linear ---------------------------------------------------------------- */

static void run_linear_case(int64_t n, int64_t c, int64_t h, int64_t w, int64_t out, int bias)
{
    const int64_t in = c * h * w;
    const size_t nx = numel4(n, c, h, w), ny = (size_t)(n * out), nw = (size_t)(out * in);
    const size_t nb = (size_t)out;
    float *x = random_floats(nx, -1, 1), *wt = random_floats(nw, -1, 1);
    float *b = bias ? random_floats(nb, -1, 1) : NULL;
    float *dy = random_floats(ny, -1, 1);
    float *wt_d = dev_of(wt, nw), *b_d = b ? dev_of(b, nb) : NULL;
    elle__tensor rx = plain(x, n, c, h, w), ry = plain(scratch_floats(ny), n, out, 1, 1);
    elle__tensor cx = plain(dev_of(x, nx), n, c, h, w), cy = plain(dev_dirty(ny), n, out, 1, 1);
    assert_elle_ok(ref.ops->linear_fwd(&ref, &rx, wt, b, &ry));
    assert_elle_ok(cu.ops->linear_fwd(&cu, &cx, wt_d, b_d, &cy));
    assert_dev_match(cy.data, ry.data, ny, ATOL, RTOL);

    elle__tensor rdy = plain(dy, n, out, 1, 1), rdx = plain(scratch_floats(nx), n, c, h, w);
    elle__tensor cdy = plain(dev_of(dy, ny), n, out, 1, 1), cdx = plain(dev_dirty(nx), n, c, h, w);
    assert_elle_ok(ref.ops->linear_bwd_data(&ref, &rdy, wt, &rdx));
    assert_elle_ok(cu.ops->linear_bwd_data(&cu, &cdy, wt_d, &cdx));
    assert_dev_match(cdx.data, rdx.data, nx, ATOL, RTOL);

    float *dw0 = random_floats(nw, -1, 1), *db0 = random_floats(nb, -1, 1);
    float *rdw = copy_of(dw0, nw), *rdb = copy_of(db0, nb);
    float *cdw = dev_of(dw0, nw), *cdb = dev_of(db0, nb);
    for (int rep = 0; rep < 2; rep++) {
        assert_elle_ok(ref.ops->linear_bwd_weights(&ref, &rx, &rdy, rdw, rdb));
        assert_elle_ok(cu.ops->linear_bwd_weights(&cu, &cx, &cdy, cdw, cdb));
    }
    assert_dev_match(cdw, rdw, nw, ATOL, RTOL);
    assert_dev_match(cdb, rdb, nb, ATOL, RTOL);
    /* db NULL: the weights only */
    float *cdw2 = dev_of(dw0, nw);
    assert_elle_ok(cu.ops->linear_bwd_weights(&cu, &cx, &cdy, cdw2, NULL));
    assert_elle_ok(cu.ops->linear_bwd_weights(&cu, &cx, &cdy, cdw2, NULL));
    assert_dev_match(cdw2, rdw, nw, ATOL, RTOL);
}

static void test_linear(void **state)
{
    (void)state;
    run_linear_case(3, 32, 7, 7, 10, 1);  /* 4-D input, flattened in NCHW order */
    run_linear_case(3, 24, 3, 3, 10, 0);  /* no bias */
    run_linear_case(2, 512, 1, 1, 10, 1); /* after global pooling */
    run_linear_case(1, 12, 2, 2, 7, 1);   /* batch 1 */
    run_linear_case(5, 3, 5, 7, 1, 1);    /* one output */
    run_linear_case(64, 32, 7, 7, 128, 1); /* small_cnn's fc1: 1568 inputs */
}

/* ---- cross-entropy ----------------------------------------------------------- */

static void run_xent_case(int64_t n, int64_t k, int huge)
{
    const size_t nz = (size_t)(n * k), nn = (size_t)n;
    float *z = random_floats(nz, -4, 4);
    if (huge && n >= 4) {
        /* row 1 all ~1e30 with distinct values, row 2 one huge, row 3 one very negative */
        for (int64_t j = 0; j < k; j++)
            z[1 * k + j] = 1e30f * (1.0f + 0.01f * (float)j);
        z[2 * k + (k > 3 ? 3 : 0)] = 1e30f;
        z[3 * k + 0] = -1e30f;
    }
    int32_t *labels = scratch_mem(nn * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++)
        labels[i] = (int32_t)(trng_next() % (uint64_t)k);
    float *coef = random_floats(nn, 0.1f, 0.5f), *gcoef = random_floats(nn, -1, 1);
    float *zt = random_floats(nz, -1, 1);
    float *z_d = dev_of(z, nz), *coef_d = dev_of(coef, nn), *gcoef_d = dev_of(gcoef, nn);
    int32_t *labels_d = dev_of_i32(labels, nn);
    elle__tensor rz = plain(z, n, k, 1, 1), cz = plain(z_d, n, k, 1, 1);

    float *rl = scratch_floats(nn), *cl = dev_dirty(nn);
    assert_elle_ok(ref.ops->xent_fwd(&ref, &rz, labels, rl));
    assert_elle_ok(cu.ops->xent_fwd(&cu, &cz, labels_d, cl));
    float *got = host_of(cl, nn);
    for (size_t i = 0; i < nn; i++)
        assert_true(isfinite(got[i]));
    assert_match_impl(got, rl, nn, 1e-6, 1e-6, "xent_fwd", __FILE__, __LINE__);

    elle__tensor rd = plain(scratch_floats(nz), n, k, 1, 1), cd = plain(dev_dirty(nz), n, k, 1, 1);
    assert_elle_ok(ref.ops->xent_bwd(&ref, &rz, labels, coef, &rd));
    assert_elle_ok(cu.ops->xent_bwd(&cu, &cz, labels_d, coef_d, &cd));
    got = host_of(cd.data, nz);
    for (size_t i = 0; i < nz; i++)
        assert_true(isfinite(got[i]));
    assert_match_impl(got, rd.data, nz, 1e-7, 1e-6, "xent_bwd", __FILE__, __LINE__);

    /* tangent, with and without the ordinary gradient and loss_t */
    if (huge)
        return; /* the tangent's p * zt is not defined with 1e30 logits in the reference test */
    elle__tensor rzt = plain(zt, n, k, 1, 1), czt = plain(dev_of(zt, nz), n, k, 1, 1);
    for (int with = 0; with <= 1; with++) {
        elle__tensor rdt = plain(scratch_floats(nz), n, k, 1, 1), cdt = plain(dev_dirty(nz), n, k, 1, 1);
        float *rlt = scratch_floats(nn), *clt = dev_dirty(nn);
        assert_elle_ok(ref.ops->xent_tangent(&ref, &rz, labels, coef, with ? gcoef : NULL, &rzt,
                                             &rdt, with ? rlt : NULL));
        assert_elle_ok(cu.ops->xent_tangent(&cu, &cz, labels_d, coef_d, with ? gcoef_d : NULL,
                                            &czt, &cdt, with ? clt : NULL));
        assert_dev_match(cdt.data, rdt.data, nz, 1e-6, 1e-5);
        if (with)
            assert_dev_match(clt, rlt, nn, 1e-6, 1e-5);
        /* dzt may alias zt */
        elle__tensor al = plain(dev_of(zt, nz), n, k, 1, 1);
        assert_elle_ok(cu.ops->xent_tangent(&cu, &cz, labels_d, coef_d, with ? gcoef_d : NULL,
                                            &al, &al, NULL));
        assert_dev_match(al.data, rdt.data, nz, 1e-6, 1e-5);
    }
}

static void test_xent(void **state)
{
    (void)state;
    run_xent_case(5, 10, 1);
    run_xent_case(5, 7, 0);
    run_xent_case(1, 2, 0);
    run_xent_case(300, 10, 0);
    run_xent_case(37, 1000, 0); /* many classes: a reduction over several warps */
    run_xent_case(3, 5000, 1);
}

/* ---- flat ops ------------------------------------------------------------------ */

static void test_flat_ops(void **state)
{
    (void)state;
    /* odd sizes, one past the float4 boundary, and one over a capped grid */
    const int64_t sizes[] = {1, 37, 100003, 20000003};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int64_t n = sizes[s];
        const size_t un = (size_t)n;
        print_message("flat ops, n = %" PRId64 "\n", n);
        float *x = random_floats(un, -2, 2);
        x[0] = 0.0f;
        if (n > 2) {
            x[1] = -0.0f;
            x[2] = NAN;
        }
        float *xd = dev_of(x, un);
        float *ry = scratch_floats(un), *cy = dev_dirty(un);
        assert_elle_ok(ref.ops->sign(&ref, n, x, ry));
        assert_elle_ok(cu.ops->sign(&cu, n, xd, cy));
        assert_dev_bitwise(cy, ry, un);
        assert_elle_ok(cu.ops->sign(&cu, n, xd, xd)); /* in place */
        assert_dev_bitwise(xd, ry, un);
        if (n > 2)
            x[2] = 0.5f;
        xd = dev_of(x, un);

        float *y0 = random_floats(un, -1, 1);
        float *ra = copy_of(y0, un), *ca = dev_of(y0, un);
        assert_elle_ok(ref.ops->axpy(&ref, n, 0.37f, x, ra));
        assert_elle_ok(cu.ops->axpy(&cu, n, 0.37f, xd, ca));
        assert_dev_match(ca, ra, un, 1e-6, 0);

        float *rs = copy_of(x, un), *cs = dev_of(x, un);
        assert_elle_ok(ref.ops->scale(&ref, n, -1.5f, rs));
        assert_elle_ok(cu.ops->scale(&cu, n, -1.5f, cs));
        assert_dev_bitwise(cs, rs, un);

        assert_elle_ok(ref.ops->fill(&ref, n, 0.25f, rs));
        assert_elle_ok(cu.ops->fill(&cu, n, 0.25f, cs));
        assert_dev_bitwise(cs, rs, un);

        float *rc = copy_of(x, un), *cc = dev_of(x, un);
        assert_elle_ok(ref.ops->clamp(&ref, n, -0.5f, 0.75f, rc));
        assert_elle_ok(cu.ops->clamp(&cu, n, -0.5f, 0.75f, cc));
        assert_dev_bitwise(cc, rc, un);
    }
    /* pointers off the 16-byte grid (per-sample slices of a batch) and n = 0 */
    const int64_t n = 1001;
    float *x = random_floats(1003, -2, 2), *y0 = random_floats(1003, -1, 1);
    float *xd = dev_of(x, 1003), *yd = dev_of(y0, 1003);
    float *ry = copy_of(y0, 1003);
    assert_elle_ok(ref.ops->axpy(&ref, n, -0.75f, x + 1, ry + 2));
    assert_elle_ok(cu.ops->axpy(&cu, n, -0.75f, xd + 1, yd + 2));
    assert_dev_match(yd, ry, 1003, 1e-6, 0); /* the first two and the last: untouched */
    assert_elle_ok(ref.ops->scale(&ref, n, 3.0f, ry + 1));
    assert_elle_ok(cu.ops->scale(&cu, n, 3.0f, yd + 1));
    assert_dev_match(yd, ry, 1003, 1e-6, 0);
    assert_elle_ok(ref.ops->sign(&ref, n, x + 3, ry + 1));
    assert_elle_ok(cu.ops->sign(&cu, n, xd + 3, yd + 1));
    assert_dev_match(yd, ry, 1003, 1e-6, 0);
    assert_elle_ok(ref.ops->clamp(&ref, n, -0.1f, 0.2f, ry + 2));
    assert_elle_ok(cu.ops->clamp(&cu, n, -0.1f, 0.2f, yd + 2));
    assert_dev_match(yd, ry, 1003, 1e-6, 0);
    assert_elle_ok(ref.ops->fill(&ref, n, -7.0f, ry + 1));
    assert_elle_ok(cu.ops->fill(&cu, n, -7.0f, yd + 1));
    assert_dev_bitwise(yd, ry, 1003);
    assert_elle_ok(cu.ops->fill(&cu, 0, 1.0f, yd));
    assert_elle_ok(cu.ops->axpy(&cu, 0, 1.0f, xd, yd));
    assert_dev_bitwise(yd, ry, 1003);
}

static void test_sgd_update(void **state)
{
    (void)state;
    const int64_t sizes[] = {100003, 5};
    for (size_t s = 0; s < 2; s++)
        for (int nesterov = 0; nesterov <= 1; nesterov++)
            for (int wdi = 0; wdi <= 1; wdi++) {
                const int64_t n = sizes[s];
                const size_t un = (size_t)n;
                const float wd = wdi ? 5e-4f : 0.0f;
                float *p0 = random_floats(un, -1, 1);
                float *rp = copy_of(p0, un), *rb = scratch_floats(un);
                float *cp = dev_of(p0, un), *cb = dmem(un * 4);
                for (int step = 0; step < 3; step++) {
                    float *g = random_floats(un, -1, 1);
                    float *gd = dev_of(g, un);
                    assert_elle_ok(
                        ref.ops->sgd_update(&ref, n, 0.1f, 0.9f, wd, nesterov, rp, g, rb));
                    assert_elle_ok(cu.ops->sgd_update(&cu, n, 0.1f, 0.9f, wd, nesterov, cp, gd, cb));
                    assert_dev_match(gd, g, un, 0, 0); /* the gradient is only read */
                }
                assert_dev_match(cp, rp, un, 1e-6, 1e-6);
                assert_dev_match(cb, rb, un, 1e-6, 1e-6);
            }
}

static void test_project_linf(void **state)
{
    (void)state;
    const int64_t per = 3073;
    for (int big = 0; big < 2; big++) {
        const int64_t nsamp = big ? 301 : 7;
        const size_t n = (size_t)(nsamp * per);
        float *x0 = random_floats(n, 0, 1);
        float *x = scratch_floats(n);
        for (size_t i = 0; i < n; i++)
            x[i] = x0[i] + trng_range(-0.1f, 0.1f);
        float *eps_s = random_floats((size_t)nsamp, 0.0f, 0.06f);
        eps_s[0] = 0.0f; /* a zero radius pins the sample to x0 */
        float *x0_d = dev_of(x0, n), *eps_d = dev_of(eps_s, (size_t)nsamp);
        for (int variant = 0; variant < 4; variant++) {
            const int per_sample = variant & 1, do_clamp = (variant & 2) != 0;
            float *rx = copy_of(x, n), *cx = dev_of(x, n);
            assert_elle_ok(ref.ops->project_linf(&ref, nsamp, per, x0, 8.0f / 255,
                                                 per_sample ? eps_s : NULL, do_clamp, 0.0f, 1.0f,
                                                 rx));
            assert_elle_ok(cu.ops->project_linf(&cu, nsamp, per, x0_d, 8.0f / 255,
                                                per_sample ? eps_d : NULL, do_clamp, 0.0f, 1.0f,
                                                cx));
            assert_dev_bitwise(cx, rx, n);
        }
    }
}

static void test_uniform(void **state)
{
    (void)state;
    static const struct {
        int64_t n;
        uint64_t seed, counter;
    } cases[] = {
        {1, 0, 0},
        {7, 0x1234abcdULL, 12345},
        {1001, 0xffffffffffffffffULL, 3},
        {100003, 42, 0xfffffffeULL},                /* the counter's low word carries */
        {262147, 9007199254740991ULL, 1ULL << 40},  /* a regularizer-style stream */
        {4099, 5, 0xfffffffffffffffdULL},           /* the counter wraps around 2^64 */
        {20000001, 77, 123456789012345ULL},         /* over a capped grid */
    };
    for (size_t s = 0; s < sizeof cases / sizeof cases[0]; s++) {
        const size_t n = (size_t)cases[s].n;
        float *r = scratch_floats(n), *c = dev_dirty(n);
        assert_elle_ok(ref.ops->uniform(&ref, cases[s].n, cases[s].seed, cases[s].counter, -0.03f,
                                        0.03f, r));
        assert_elle_ok(cu.ops->uniform(&cu, cases[s].n, cases[s].seed, cases[s].counter, -0.03f,
                                       0.03f, c));
        assert_dev_bitwise(c, r, n);
    }
    /* into a slice off the 16-byte grid */
    float *r = scratch_floats(1003), *c = dev_dirty(1003);
    float *c0 = host_of(c, 1003);
    memcpy(r, c0, 1003 * sizeof(float));
    assert_elle_ok(ref.ops->uniform(&ref, 1001, 3, 17, 0.0f, 1.0f, r + 1));
    assert_elle_ok(cu.ops->uniform(&cu, 1001, 3, 17, 0.0f, 1.0f, c + 1));
    assert_dev_bitwise(c, r, 1003);
}

/* ---- errors ------------------------------------------------------------------- */

static void test_errors(void **state)
{
    (void)state;
    float *buf = dmem(4096 * 4), *w = dmem(4096 * 4);
    const elle__conv_desc cd = {.ic = 16, .oc = 16, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                                .ph = 1, .pw = 1, .has_bias = 0};
    elle__tensor x = plain(dmem(2 * 16 * 6 * 6 * 4), 2, 16, 6, 6);
    elle__tensor y = plain(dmem(2 * 16 * 6 * 6 * 4), 2, 16, 6, 6);
    elle__tensor bad_y = plain(dmem(2 * 16 * 6 * 6 * 4), 2, 16, 5, 6); /* should be 6x6 */
    assert_elle_status(cu.ops->conv2d_fwd(&cu, &cd, &x, w, NULL, &bad_y), ELLE_ESHAPE);
    assert_message_has("cuda");
    assert_message_has("conv2d_fwd");
    elle__tensor x8 = plain(buf, 2, 8, 6, 6);
    assert_elle_status(cu.ops->conv2d_bwd_data(&cu, &cd, &y, w, &x8), ELLE_ESHAPE);
    assert_message_has("conv2d_bwd_data");
    assert_elle_status(cu.ops->conv2d_bwd_weights(&cu, &cd, &x8, &y, w, NULL), ELLE_ESHAPE);
    assert_elle_status(cu.ops->conv2d_fwd(&cu, &cd, NULL, w, NULL, &y), ELLE_EINVAL);
    assert_elle_status(cu.ops->conv2d_fwd(&cu, &cd, &x, NULL, NULL, &y), ELLE_EINVAL);
    elle__tensor nodata = plain(NULL, 2, 16, 6, 6);
    assert_elle_status(cu.ops->conv2d_fwd(&cu, &cd, &nodata, w, NULL, &y), ELLE_EINVAL);
    assert_elle_status(cu.ops->conv2d_bwd_weights(&cu, &cd, &x, &y, NULL, NULL), ELLE_EINVAL);

    const elle__bn_desc bd = {.c = 12, .eps = 1e-5f, .momentum = 0.1f, .fuse_relu = 0};
    assert_elle_status(cu.ops->bn_fwd_infer(&cu, &bd, &x, w, w, w, w, &y, NULL), ELLE_ESHAPE);
    assert_message_has("bn_fwd_infer");
    assert_bn_desc_rules(&cu, &x, &y, w);
    const elle__bn_desc bd16 = {.c = 16, .eps = 1e-5f, .momentum = 0.1f, .fuse_relu = 0};
    assert_elle_status(cu.ops->bn_fwd_infer(&cu, &bd16, &x, NULL, w, w, w, &y, NULL), ELLE_EINVAL);
    assert_elle_status(cu.ops->bn_fwd_train(&cu, &bd16, &x, w, w, w, w, &bad_y, w, w, NULL),
                       ELLE_ESHAPE);
    assert_elle_status(cu.ops->bn_bwd(&cu, &bd16, 1, &x, &y, NULL, w, w, w, NULL, &y, NULL, NULL),
                       ELLE_EINVAL);

    elle__tensor a = plain(buf, 2, 16, 6, 6), b = plain(w, 2, 16, 6, 5);
    assert_elle_status(cu.ops->add(&cu, &a, &b, &a), ELLE_ESHAPE);
    assert_message_has("add");
    assert_elle_status(cu.ops->relu_fwd(&cu, &a, &b), ELLE_ESHAPE);
    assert_elle_status(cu.ops->relu_fwd(&cu, NULL, &a), ELLE_EINVAL);
    assert_elle_status(cu.ops->relu_bwd(&cu, &a, &a, NULL), ELLE_EINVAL);

    elle__tensor lo = plain(buf, 3, 10, 1, 1); /* batch 3 for an input of 2 */
    assert_elle_status(cu.ops->linear_fwd(&cu, &x, w, NULL, &lo), ELLE_ESHAPE);
    assert_message_has("linear_fwd");
    elle__tensor lo2 = plain(buf, 2, 10, 1, 1);
    assert_elle_status(cu.ops->linear_fwd(&cu, &x, NULL, NULL, &lo2), ELLE_EINVAL);

    const elle__pool_desc pd = {.kind = ELLE__POOL_MAX, .kh = 2, .kw = 2, .sh = 2, .sw = 2};
    assert_elle_status(cu.ops->pool_fwd(&cu, &pd, &x, &y, w), ELLE_ESHAPE); /* needs 3x3 */
    assert_message_has("pool_fwd");

    elle__tensor z = plain(buf, 2, 10, 2, 1); /* logits must be (n, k, 1, 1) */
    assert_elle_status(cu.ops->xent_fwd(&cu, &z, (const int32_t *)w, buf), ELLE_ESHAPE);
    elle__tensor z1 = plain(buf, 2, 10, 1, 1);
    assert_elle_status(cu.ops->xent_fwd(&cu, &z1, NULL, w), ELLE_EINVAL);

    elle__tensor unknown = elle__tensor_make(buf, 1, 4, 2, 2, 99);
    assert_elle_status(cu.ops->relu_fwd(&cu, &unknown, &unknown), ELLE_EINVAL);
    assert_elle_status(cu.ops->uniform(&cu, 4, 1, 0, 1.0f, 0.0f, buf), ELLE_EINVAL);
    assert_elle_status(cu.ops->clamp(&cu, 4, 1.0f, 0.0f, buf), ELLE_EINVAL);
    assert_elle_status(cu.ops->axpy(&cu, -1, 1.0f, buf, w), ELLE_EINVAL);
    assert_elle_status(cu.ops->sign(&cu, 4, NULL, buf), ELLE_EINVAL);
    assert_elle_status(cu.ops->sgd_update(&cu, 4, 0.1f, 0.9f, 0, 0, buf, NULL, w), ELLE_EINVAL);
    assert_elle_status(cu.ops->project_linf(&cu, 2, 4, NULL, 0.1f, NULL, 0, 0, 1, buf),
                       ELLE_EINVAL);
    /* a failed check leaves the stream usable */
    assert_elle_ok(cu.ops->fill(&cu, 4, 1.0f, buf));
    assert_elle_ok(cu.ops->sync(&cu));
}

int main(void)
{
    if (elle_cuda_test_unavailable())
        return ELLE_CUDA_TEST_SKIP;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_table, free_scratch),
        cmocka_unit_test_teardown(test_memory, free_scratch),
        cmocka_unit_test_teardown(test_conv, free_scratch),
        cmocka_unit_test_teardown(test_bn, free_scratch),
        cmocka_unit_test_teardown(test_bn_normalize_use, free_scratch),
        cmocka_unit_test_teardown(test_bn_tangent, free_scratch),
        cmocka_unit_test_teardown(test_relu_add, free_scratch),
        cmocka_unit_test_teardown(test_pool, free_scratch),
        cmocka_unit_test_teardown(test_linear, free_scratch),
        cmocka_unit_test_teardown(test_xent, free_scratch),
        cmocka_unit_test_teardown(test_flat_ops, free_scratch),
        cmocka_unit_test_teardown(test_sgd_update, free_scratch),
        cmocka_unit_test_teardown(test_project_linf, free_scratch),
        cmocka_unit_test_teardown(test_uniform, free_scratch),
        cmocka_unit_test_teardown(test_errors, free_scratch),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
