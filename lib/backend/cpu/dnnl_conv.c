/*
 * Convolution on oneDNN: forward, backward_data and backward_weights
 * primitives, one cache entry each per shape.
 *
 * Activations are given to oneDNN in the tensors' own layouts; the weights
 * descriptor is `any`, so oneDNN picks its blocked weight layout (OIhw16i16o
 * and relatives) and the caller's plain OIHW floats are reordered into an
 * entry-owned buffer on every call (weights change between steps; the
 * reorder is small next to the convolution). The weight gradient comes back
 * through an accumulating reorder into the caller's OIHW dw (dw += ...).
 *
 * Should oneDNN only offer its reference kernel for the tensors' layouts
 * (a plain 3-channel dx under a 16-channel dy, for instance), the
 * descriptor is built again with `any` activations and the tensors are
 * reordered into the layouts the fast kernel wants.
 */
#include <stdlib.h>

#include "elle/error.h"
#include "backend/cpu/dnnl_util.h"
#include "backend/desc_check.h"

enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_WEIGHTS };

static const char *const conv_op_name[] = {"conv2d_fwd", "conv2d_bwd_data",
                                           "conv2d_bwd_weights"};

/* The descriptor, `x` (input shaped: x or dx) and `y` (output shaped: y or
 * dy), as the reference checks them. */
static int check_conv(const char *op, const elle__conv_desc *cd, const char *xname,
                      const elle__tensor *x, const char *yname, const elle__tensor *y)
{
    ELLE_TRY(elle__check_conv_desc("cpu", op, cd));
    ELLE_TRY(elle__cpu_check_tensor(op, xname, x));
    ELLE_TRY(elle__cpu_check_tensor(op, yname, y));
    return elle__check_conv_geometry("cpu", op, cd, xname, x, yname, y);
}

/* Build the primitive descriptor of `kind` for input-shaped x and
 * output-shaped y. act_any: activations as `any` (oneDNN chooses). */
static int conv_pd(elle__cpu_impl *impl, int kind, const elle__conv_desc *cd,
                   const elle__tensor *x, const elle__tensor *y, int act_any,
                   dnnl_alg_kind_t alg, dnnl_primitive_desc_t *out)
{
    *out = NULL;
    dnnl_memory_desc_t src, dst, wei, bias;
    if (act_any) {
        const int64_t sd[4] = {x->n, x->c, x->h, x->w}, dd[4] = {y->n, y->c, y->h, y->w};
        ELLE_TRY(elle__cpu_md(&src, 4, sd, dnnl_format_tag_any));
        ELLE_TRY(elle__cpu_md(&dst, 4, dd, dnnl_format_tag_any));
    } else {
        ELLE_TRY(elle__cpu_md_tensor(&src, x));
        ELLE_TRY(elle__cpu_md_tensor(&dst, y));
    }
    const int64_t wd[4] = {cd->oc, cd->ic, cd->kh, cd->kw}, bd[1] = {cd->oc};
    ELLE_TRY(elle__cpu_md(&wei, 4, wd, dnnl_format_tag_any));
    ELLE_TRY(elle__cpu_md(&bias, 1, bd, dnnl_x));
    /* oneDNN wants the right padding that makes its output size formula
     * match floor mode: (oh-1)*s + k - in - pl, which may be negative (the
     * last input rows are never read) but is always > -s */
    const dnnl_dims_t strides = {cd->sh, cd->sw}, pad_l = {cd->ph, cd->pw};
    const dnnl_dims_t pad_r = {(y->h - 1) * cd->sh + cd->kh - x->h - cd->ph,
                               (y->w - 1) * cd->sw + cd->kw - x->w - cd->pw};
    /* the forward descriptor carries the bias whenever the forward or the
     * weight gradient needs it; backward_data's hint has none */
    const int with_bias = kind == CONV_BWD_WEIGHTS || (kind == CONV_FWD && cd->has_bias);

    dnnl_convolution_desc_t fd, bdsc;
    dnnl_primitive_attr_t attr;
    dnnl_primitive_desc_t hint = NULL;
    int rc = ELLE_OK;
    ELLE__DNNL_TRY(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training,
                                                      alg, &src, &wei,
                                                      with_bias ? &bias : NULL, &dst, strides,
                                                      pad_l, pad_r));
    ELLE_TRY(elle__cpu_attr_create(&attr, 0));
    if (kind == CONV_FWD) {
        ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(out, &fd, attr, impl->engine, NULL));
        goto cleanup;
    }
    ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(&hint, &fd, attr, impl->engine, NULL));
    if (kind == CONV_BWD_DATA)
        ELLE__DNNL_TRY_GOTO(rc, dnnl_convolution_backward_data_desc_init(
                                    &bdsc, alg, &src, &wei, &dst, strides,
                                    pad_l, pad_r));
    else
        ELLE__DNNL_TRY_GOTO(rc, dnnl_convolution_backward_weights_desc_init(
                                    &bdsc, alg, &src, &wei, &bias, &dst,
                                    strides, pad_l, pad_r));
    ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(out, &bdsc, attr, impl->engine, hint));
cleanup:
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* Winograd is tried for 3x3 stride-1 convolutions unless ELLE_CPU_WINOGRAD=0
 * in the environment (read once per call: primitive creation is cached). */
static int winograd_candidate(const elle__conv_desc *cd)
{
    if (cd->kh != 3 || cd->kw != 3 || cd->sh != 1 || cd->sw != 1)
        return 0;
    const char *env = getenv("ELLE_CPU_WINOGRAD");
    return !(env && env[0] == '0');
}

/* The tensors' layouts first; oneDNN's own choice when that only gets the
 * reference kernel (or nothing). */
static int conv_pick_pd(elle__cpu_impl *impl, int kind, const elle__conv_desc *cd,
                        const elle__tensor *x, const elle__tensor *y, dnnl_primitive_desc_t *out)
{
    dnnl_primitive_desc_t first = NULL, second = NULL;
    if (winograd_candidate(cd)) {
        /* Winograd F(4x4, 3x3) where oneDNN has it (AVX-512, blocked
         * channels): about twice the throughput of the direct kernels for
         * 3x3 stride-1 layers, at ~1e-6 relative error; anything else falls
         * through to the direct algorithm */
        dnnl_primitive_desc_t wino = NULL;
        if (conv_pd(impl, kind, cd, x, y, 0, dnnl_convolution_winograd, &wino) == ELLE_OK &&
            !elle__cpu_pd_is_ref(wino)) {
            *out = wino;
            return ELLE_OK;
        }
        if (wino)
            dnnl_primitive_desc_destroy(wino);
        elle_error_clear(); /* the failed attempt is not an error */
    }
    int rc = conv_pd(impl, kind, cd, x, y, 0, dnnl_convolution_direct, &first);
    if (rc == ELLE_OK && !elle__cpu_pd_is_ref(first)) {
        *out = first;
        return ELLE_OK;
    }
    int rc2 = conv_pd(impl, kind, cd, x, y, 1, dnnl_convolution_direct, &second);
    if (rc2 == ELLE_OK && (rc < 0 || !elle__cpu_pd_is_ref(second))) {
        if (first)
            dnnl_primitive_desc_destroy(first);
        *out = second;
        return ELLE_OK;
    }
    if (second)
        dnnl_primitive_desc_destroy(second);
    if (rc < 0)
        return rc; /* neither worked: report the first failure */
    *out = first;
    return ELLE_OK;
}

/* The cache entry of `kind` for input-shaped x and output-shaped y. */
static int conv_entry(elle__cpu_impl *impl, int kind, const elle__conv_desc *cd,
                      const elle__tensor *x, const elle__tensor *y, elle__cpu_entry **out)
{
    static const int ops[] = {ELLE__CPU_OP_CONV_FWD, ELLE__CPU_OP_CONV_BWD_DATA,
                              ELLE__CPU_OP_CONV_BWD_WEIGHTS};
    elle__cpu_key key;
    elle__cpu_key_init(&key, ops[kind]);
    elle__cpu_key_tensor(&key, x);
    elle__cpu_key_tensor(&key, y);
    elle__cpu_key_add(&key, cd->kh);
    elle__cpu_key_add(&key, cd->kw);
    elle__cpu_key_add(&key, cd->sh);
    elle__cpu_key_add(&key, cd->sw);
    elle__cpu_key_add(&key, cd->ph);
    elle__cpu_key_add(&key, cd->pw);
    elle__cpu_key_add(&key, kind == CONV_FWD && cd->has_bias);
    *out = elle__cpu_cache_find(impl, &key);
    if (*out)
        return ELLE_OK;

    elle__cpu_entry *e;
    dnnl_primitive_desc_t pd;
    int rc;
    ELLE_TRY(elle__cpu_entry_new(&key, &e));
    ELLE_TRY_GOTO(rc, conv_pick_pd(impl, kind, cd, x, y, &pd));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_set_pd(impl, e, pd));

    dnnl_memory_desc_t xmd, ymd, wmd, bmd;
    const int64_t wd[4] = {cd->oc, cd->ic, cd->kh, cd->kw}, bd[1] = {cd->oc};
    ELLE_TRY_GOTO(rc, elle__cpu_md_tensor(&xmd, x));
    ELLE_TRY_GOTO(rc, elle__cpu_md_tensor(&ymd, y));
    ELLE_TRY_GOTO(rc, elle__cpu_md(&wmd, 4, wd, dnnl_oihw));
    ELLE_TRY_GOTO(rc, elle__cpu_md(&bmd, 1, bd, dnnl_x));
    /* the argument order is the order of the pointers given to run */
    switch (kind) {
    case CONV_FWD:
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_SRC, &xmd, dnnl_query_src_md,
                                                ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_WEIGHTS, &wmd,
                                                dnnl_query_weights_md, ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DST, &ymd, dnnl_query_dst_md,
                                                ELLE__CPU_OUT));
        if (cd->has_bias)
            ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_BIAS, NULL, &bmd,
                                                  ELLE__CPU_IN));
        break;
    case CONV_BWD_DATA:
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DIFF_DST, &ymd,
                                                dnnl_query_diff_dst_md, ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_WEIGHTS, &wmd,
                                                dnnl_query_weights_md, ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DIFF_SRC, &xmd,
                                                dnnl_query_diff_src_md, ELLE__CPU_OUT));
        break;
    default:
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_SRC, &xmd, dnnl_query_src_md,
                                                ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DIFF_DST, &ymd,
                                                dnnl_query_diff_dst_md, ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DIFF_WEIGHTS, &wmd,
                                                dnnl_query_diff_weights_md, ELLE__CPU_OUT_ACC));
        /* the bias gradient is a cheap reduction: always computed, added
         * into db only when db is given */
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_DIFF_BIAS, NULL, &bmd,
                                              ELLE__CPU_OUT_ACC));
        break;
    }
    rc = elle__cpu_cache_add(impl, e);
    *out = rc < 0 ? NULL : e;
    return rc;
cleanup:
    elle__cpu_entry_free(e);
    return rc;
}

static int conv_run(elle__backend *be, int kind, const elle__conv_desc *cd, const elle__tensor *x,
                    const elle__tensor *y, void *const *ptrs)
{
    elle__cpu_impl *impl = elle__cpu_impl_of(be);
    elle__cpu_entry *e;
    int rc = conv_entry(impl, kind, cd, x, y, &e);
    if (rc == ELLE_OK)
        rc = elle__cpu_entry_run(impl, e, ptrs);
    if (rc < 0)
        elle__error_prefix("cpu %s %s -> %s, kernel %" PRId64 "x%" PRId64 " stride %" PRId64
                           " padding %" PRId64,
                           conv_op_name[kind], elle__cpu_shape(x).s, elle__cpu_shape(y).s, cd->kh,
                           cd->kw, cd->sh, cd->ph);
    return rc;
}

int elle__cpu_conv2d_fwd(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *x,
                         const float *w, const float *b, elle__tensor *y)
{
    const char *op = conv_op_name[CONV_FWD];
    ELLE_TRY(check_conv(op, cd, "x", x, "y", y));
    ELLE_TRY(elle__cpu_check_ptr(op, "w", w));
    if (cd->has_bias)
        ELLE_TRY(elle__cpu_check_ptr(op, "b (has_bias is set)", b));
    void *ptrs[4] = {x->data, (void *)(uintptr_t)w, y->data, (void *)(uintptr_t)b};
    return conv_run(be, CONV_FWD, cd, x, y, ptrs);
}

int elle__cpu_conv2d_bwd_data(elle__backend *be, const elle__conv_desc *cd,
                              const elle__tensor *dy, const float *w, elle__tensor *dx)
{
    const char *op = conv_op_name[CONV_BWD_DATA];
    ELLE_TRY(check_conv(op, cd, "dx", dx, "dy", dy));
    ELLE_TRY(elle__cpu_check_ptr(op, "w", w));
    void *ptrs[3] = {dy->data, (void *)(uintptr_t)w, dx->data};
    return conv_run(be, CONV_BWD_DATA, cd, dx, dy, ptrs);
}

int elle__cpu_conv2d_bwd_weights(elle__backend *be, const elle__conv_desc *cd,
                                 const elle__tensor *x, const elle__tensor *dy, float *dw,
                                 float *db)
{
    const char *op = conv_op_name[CONV_BWD_WEIGHTS];
    ELLE_TRY(check_conv(op, cd, "x", x, "dy", dy));
    ELLE_TRY(elle__cpu_check_ptr(op, "dw", dw));
    void *ptrs[4] = {x->data, dy->data, dw, db};
    return conv_run(be, CONV_BWD_WEIGHTS, cd, x, dy, ptrs);
}
