/*
 * What the backend-against-reference op tests share (test_cpu_ops.c,
 * tests/cuda/test_cuda_ops.c): the tests' own random generator, input
 * builders and the comparisons.
 *
 * Host memory comes from a per-test scratch list (scratch_mem,
 * scratch_floats) that each test's teardown empties (scratch_free_all).
 * NMSE_MAX (the normalised-MSE bound, default 1e-10) and TRNG_SEED (the
 * generator's start, default 1) may be set before including. Everything is
 * static inline, so a test uses what it needs.
 */
#ifndef ELLE_TEST_OP_COMPARE_H
#define ELLE_TEST_OP_COMPARE_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/tensor.h"
#include "elle_test.h"

#ifndef TRNG_SEED
#define TRNG_SEED 1
#endif
#ifndef NMSE_MAX
#define NMSE_MAX 1e-10
#endif

/* The group fixture of a backend-against-reference test: `be` from
 * create(backend, 0) and the reference backend; -1 (the reason on stderr)
 * when either cannot be created. */
static inline int backends_setup(elle__backend *backend,
                                 int (*create)(elle__backend *, int), elle__backend *reference)
{
    memset(backend, 0, sizeof *backend);
    memset(reference, 0, sizeof *reference);
    if (create(backend, 0) != ELLE_OK) {
        fprintf(stderr, "backend: %s\n", elle_error_last()->message);
        return -1;
    }
    return elle__backend_ref_create(reference) == ELLE_OK ? 0 : -1;
}

static inline void backends_teardown(elle__backend *backend, elle__backend *reference)
{
    if (backend->ops)
        backend->ops->destroy(backend);
    if (reference->ops)
        reference->ops->destroy(reference);
}

/* Per-test host memory: 64-byte aligned, zeroed, freed by scratch_free_all. */
#define SCRATCH_MAX 4096
static void *scratch_list[SCRATCH_MAX];
static int scratch_count;

static inline void *scratch_mem(size_t bytes)
{
    assert_true(scratch_count < SCRATCH_MAX);
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    assert_non_null(p);
    memset(p, 0, rounded ? rounded : 64);
    scratch_list[scratch_count++] = p;
    return p;
}

static inline float *scratch_floats(size_t n)
{
    return scratch_mem(n * sizeof(float));
}

static inline void scratch_free_all(void)
{
    for (int i = 0; i < scratch_count; i++)
        free(scratch_list[i]);
    scratch_count = 0;
}

/* The tests' own generator (splitmix64), independent of the library's. */
static uint64_t trng_state = TRNG_SEED;

static inline uint64_t trng_next(void)
{
    uint64_t z = (trng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline float trng_range(float lo, float hi)
{
    double u = (double)(trng_next() >> 11) / 9007199254740992.0; /* [0,1) */
    return (float)(lo + (hi - lo) * u);
}

static inline float *random_floats(size_t n, float lo, float hi)
{
    float *p = scratch_floats(n);
    for (size_t i = 0; i < n; i++)
        p[i] = trng_range(lo, hi);
    return p;
}

/* n distinct values spaced by `gap` in random order (no max-pool ties). */
static inline float *distinct_floats(size_t n, float gap)
{
    float *p = scratch_floats(n);
    for (size_t i = 0; i < n; i++)
        p[i] = ((float)i - (float)n / 2) * gap;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(trng_next() % (i + 1));
        float t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    return p;
}

static inline float *copy_of(const float *src, size_t n)
{
    float *p = scratch_floats(n);
    memcpy(p, src, n * sizeof *p);
    return p;
}

static inline size_t numel4(int64_t n, int64_t c, int64_t h, int64_t w)
{
    return (size_t)(n * c * h * w);
}

static inline elle__tensor plain(float *data, int64_t n, int64_t c, int64_t h, int64_t w)
{
    return elle__tensor_make(data, n, c, h, w, ELLE__LAYOUT_PLAIN);
}

/* Elementwise closeness plus a normalised MSE bound. */
static inline void assert_match_impl(const float *got, const float *want, size_t n, double atol,
                              double rtol, const char *what, const char *file, int line)
{
    elle_test_close(got, want, n, atol, rtol, what, file, line);
    double e = elle_test_nmse(got, want, n);
    if (!(e <= NMSE_MAX)) {
        print_error("%s: normalised MSE %.3g above %.3g\n", what, e, NMSE_MAX);
        _fail(file, line);
    }
}

static inline void assert_bitwise_impl(const float *a, const float *b, size_t n, const char *what,
                                const char *file, int line)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            print_error("%s: element %zu differs: %.9g vs %.9g\n", what, i, (double)a[i],
                        (double)b[i]);
            _fail(file, line);
        }
}

/* The table names itself as given, carries this ABI version, and fills
 * every op (set_threads is optional: a backend that has it tests it). */
static inline void assert_table_complete(const elle__backend *backend, const char *name,
                                         int kind)
{
    const elle__backend_ops *o = backend->ops;
    assert_non_null(o);
    assert_int_equal(o->abi_version, ELLE__BACKEND_ABI_VERSION);
    assert_string_equal(o->name, name);
    assert_int_equal(backend->kind, kind);
#define F(op) (const void *)(uintptr_t)o->op
    const void *fns[] = {
        F(destroy), F(sync), F(alloc), F(free), F(copy_to_device), F(copy_to_host), F(copy),
        F(memzero), F(layout_for), F(tensor_bytes), F(to_plain), F(from_plain), F(conv2d_fwd),
        F(conv2d_bwd_data), F(conv2d_bwd_weights), F(bn_workspace_bytes), F(bn_fwd_train),
        F(bn_fwd_infer), F(bn_bwd), F(relu_fwd), F(relu_bwd), F(add), F(pool_workspace_bytes),
        F(pool_fwd), F(pool_bwd), F(linear_fwd), F(linear_bwd_data), F(linear_bwd_weights),
        F(xent_fwd), F(xent_bwd), F(sign), F(axpy), F(scale), F(fill), F(clamp),
        F(project_linf), F(uniform), F(sgd_update), F(bn_fwd_tangent), F(bn_bwd_tangent),
        F(pool_fwd_tangent), F(xent_tangent),
    };
#undef F
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (!fns[i])
            fail_msg("%s: op %zu of the table is NULL", name, i);
}

/* The last error message names `needle`. */
static inline void assert_message_has(const char *needle)
{
    const char *msg = elle_error_last()->message;
    if (!strstr(msg, needle)) {
        print_error("message '%s' does not mention '%s'\n", msg, needle);
        fail();
    }
}

/* The batch-norm descriptor rules (backend.h), on a forward and a tangent:
 * x and y have 16 channels, w holds at least 16 floats. */
static inline void assert_bn_desc_rules(elle__backend *b, const elle__tensor *x,
                                        elle__tensor *y, float *w)
{
    const elle__bn_desc no_channels = {.c = 0, .eps = 1e-5f, .momentum = 0.1f};
    const elle__bn_desc nan_eps = {.c = 16, .eps = NAN, .momentum = 0.1f};
    const elle__bn_desc neg_eps = {.c = 16, .eps = -1e-5f, .momentum = 0.1f};
    assert_int_equal(b->ops->bn_fwd_infer(b, NULL, x, w, w, w, w, y, NULL), ELLE_EINVAL);
    assert_message_has("bn descriptor");
    assert_int_equal(b->ops->bn_fwd_infer(b, &no_channels, x, w, w, w, w, y, NULL), ELLE_EINVAL);
    assert_message_has("channel count");
    assert_int_equal(b->ops->bn_fwd_infer(b, &nan_eps, x, w, w, w, w, y, NULL), ELLE_EINVAL);
    assert_message_has("invalid eps");
    assert_int_equal(b->ops->bn_fwd_infer(b, &neg_eps, x, w, w, w, w, y, NULL), ELLE_EINVAL);
    assert_int_equal(b->ops->bn_fwd_tangent(b, &nan_eps, 0, x, y, x, w, w, w, NULL, y),
                     ELLE_EINVAL);
    assert_message_has("invalid eps");
    assert_int_equal(b->ops->bn_fwd_tangent(b, NULL, 0, x, y, x, w, w, w, NULL, y), ELLE_EINVAL);
}

#endif /* ELLE_TEST_OP_COMPARE_H */
