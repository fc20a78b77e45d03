/*
 * The fully connected layer on oneDNN's inner product.
 *
 * The input is given as the 4-D tensor it is, in its own layout (a blocked
 * nChw16c feature map included): inner product flattens (c, h, w) in the
 * logical NCHW order, which is torch.flatten's. The caller's weights
 * (out, c*h*w) row-major are therefore plain OIHW of dims (out, c, h, w);
 * the primitive's own weight layout (`any`, matched by oneDNN to the input's
 * blocking) is reached by a reorder on every call, and the weight gradient
 * comes back through an accumulating reorder (dw += ...). The output and its
 * gradient are plain (n, out) matrices.
 */
#include "backend/cpu/dnnl_util.h"

enum { IP_FWD, IP_BWD_DATA, IP_BWD_WEIGHTS };

static const char *const ip_op_name[] = {"linear_fwd", "linear_bwd_data", "linear_bwd_weights"};

/* `x` (input shaped: x or dx) and `y` (output shaped: y or dy, (n, out, 1,
 * 1) plain). */
static int check_linear(const char *op, const char *xname, const elle__tensor *x,
                        const char *yname, const elle__tensor *y)
{
    ELLE_TRY(elle__cpu_check_tensor(op, xname, x));
    ELLE_TRY(elle__cpu_check_tensor(op, yname, y));
    if (y->n != x->n || y->h != 1 || y->w != 1)
        ELLE_FAIL(ELLE_ESHAPE, "cpu %s: %s is %s, expected (%" PRId64 ", out, 1, 1) for %s %s", op,
                  yname, elle__cpu_shape(y).s, x->n, xname, elle__cpu_shape(x).s);
    if (y->layout != ELLE__LAYOUT_PLAIN)
        ELLE_FAIL(ELLE_EUNSUPPORTED, "cpu %s: %s %s must be in the plain layout", op, yname,
                  elle__cpu_shape(y).s);
    return ELLE_OK;
}

/* Primitive descriptor of `kind`; act_any: the input as `any`. */
static int ip_pd(elle__cpu_impl *impl, int kind, const elle__tensor *x, int64_t out, int with_bias,
                 int act_any, dnnl_primitive_desc_t *res)
{
    *res = NULL;
    dnnl_memory_desc_t src, wei, bias, dst;
    const int64_t sd[4] = {x->n, x->c, x->h, x->w}, wd[4] = {out, x->c, x->h, x->w};
    const int64_t bd[1] = {out}, dd[2] = {x->n, out};
    if (act_any)
        ELLE_TRY(elle__cpu_md(&src, 4, sd, dnnl_format_tag_any));
    else
        ELLE_TRY(elle__cpu_md_tensor(&src, x));
    ELLE_TRY(elle__cpu_md(&wei, 4, wd, dnnl_format_tag_any));
    ELLE_TRY(elle__cpu_md(&bias, 1, bd, dnnl_x));
    ELLE_TRY(elle__cpu_md(&dst, 2, dd, dnnl_nc));

    dnnl_inner_product_desc_t fd, bdsc;
    dnnl_primitive_attr_t attr;
    dnnl_primitive_desc_t hint = NULL;
    int rc = ELLE_OK;
    ELLE__DNNL_TRY(dnnl_inner_product_forward_desc_init(&fd, dnnl_forward_training, &src, &wei,
                                                        with_bias ? &bias : NULL, &dst));
    ELLE_TRY(elle__cpu_attr_create(&attr, 0));
    if (kind == IP_FWD) {
        ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(res, &fd, attr, impl->engine, NULL));
        goto cleanup;
    }
    ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(&hint, &fd, attr, impl->engine, NULL));
    if (kind == IP_BWD_DATA)
        ELLE__DNNL_TRY_GOTO(rc, dnnl_inner_product_backward_data_desc_init(&bdsc, &src, &wei,
                                                                           &dst));
    else
        ELLE__DNNL_TRY_GOTO(rc, dnnl_inner_product_backward_weights_desc_init(&bdsc, &src, &wei,
                                                                              &bias, &dst));
    ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(res, &bdsc, attr, impl->engine, hint));
cleanup:
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* The input's layout first; oneDNN's choice when that only gets the
 * reference kernel (or nothing). */
static int ip_pick_pd(elle__cpu_impl *impl, int kind, const elle__tensor *x, int64_t out,
                      int with_bias, dnnl_primitive_desc_t *res)
{
    dnnl_primitive_desc_t first = NULL, second = NULL;
    int rc = ip_pd(impl, kind, x, out, with_bias, 0, &first);
    if (rc == ELLE_OK && !elle__cpu_pd_is_ref(first)) {
        *res = first;
        return ELLE_OK;
    }
    int rc2 = ip_pd(impl, kind, x, out, with_bias, 1, &second);
    if (rc2 == ELLE_OK && (rc < 0 || !elle__cpu_pd_is_ref(second))) {
        if (first)
            dnnl_primitive_desc_destroy(first);
        *res = second;
        return ELLE_OK;
    }
    if (second)
        dnnl_primitive_desc_destroy(second);
    if (rc < 0)
        return rc;
    *res = first;
    return ELLE_OK;
}

static int ip_entry(elle__cpu_impl *impl, int kind, const elle__tensor *x, int64_t out,
                    int with_bias, elle__cpu_entry **res)
{
    static const int ops[] = {ELLE__CPU_OP_IP_FWD, ELLE__CPU_OP_IP_BWD_DATA,
                              ELLE__CPU_OP_IP_BWD_WEIGHTS};
    elle__cpu_key key;
    elle__cpu_key_init(&key, ops[kind]);
    elle__cpu_key_tensor(&key, x);
    elle__cpu_key_add(&key, out);
    elle__cpu_key_add(&key, with_bias);
    *res = elle__cpu_cache_find(impl, &key);
    if (*res)
        return ELLE_OK;

    elle__cpu_entry *e;
    dnnl_primitive_desc_t pd;
    dnnl_memory_desc_t xmd, wmd, bmd, ymd;
    const int64_t wd[4] = {out, x->c, x->h, x->w}, bd[1] = {out}, yd[2] = {x->n, out};
    int rc;
    ELLE_TRY(elle__cpu_entry_new(&key, &e));
    ELLE_TRY_GOTO(rc, elle__cpu_md_tensor(&xmd, x));
    ELLE_TRY_GOTO(rc, elle__cpu_md(&wmd, 4, wd, dnnl_oihw));
    ELLE_TRY_GOTO(rc, elle__cpu_md(&bmd, 1, bd, dnnl_x));
    ELLE_TRY_GOTO(rc, elle__cpu_md(&ymd, 2, yd, dnnl_nc));
    ELLE_TRY_GOTO(rc, ip_pick_pd(impl, kind, x, out, with_bias, &pd));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_set_pd(impl, e, pd));
    /* the argument order is the order of the pointers given to run */
    switch (kind) {
    case IP_FWD:
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_SRC, &xmd, dnnl_query_src_md,
                                                ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_WEIGHTS, &wmd,
                                                dnnl_query_weights_md, ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DST, &ymd, dnnl_query_dst_md,
                                                ELLE__CPU_OUT));
        if (with_bias)
            ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_BIAS, NULL, &bmd,
                                                  ELLE__CPU_IN));
        break;
    case IP_BWD_DATA:
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
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_DIFF_BIAS, NULL, &bmd,
                                              ELLE__CPU_OUT_ACC));
        break;
    }
    rc = elle__cpu_cache_add(impl, e);
    *res = rc < 0 ? NULL : e;
    return rc;
cleanup:
    elle__cpu_entry_free(e);
    return rc;
}

static int ip_run(elle__backend *be, int kind, const elle__tensor *x, const elle__tensor *y,
                  int with_bias, void *const *ptrs)
{
    elle__cpu_impl *impl = elle__cpu_impl_of(be);
    elle__cpu_entry *e;
    int rc = ip_entry(impl, kind, x, y->c, with_bias, &e);
    if (rc == ELLE_OK)
        rc = elle__cpu_entry_run(impl, e, ptrs);
    if (rc < 0)
        elle__error_prefix("cpu %s %s -> %s", ip_op_name[kind], elle__cpu_shape(x).s,
                           elle__cpu_shape(y).s);
    return rc;
}

int elle__cpu_linear_fwd(elle__backend *be, const elle__tensor *x, const float *w, const float *b,
                         elle__tensor *y)
{
    const char *op = ip_op_name[IP_FWD];
    ELLE_TRY(check_linear(op, "x", x, "y", y));
    ELLE_TRY(elle__cpu_check_ptr(op, "w", w));
    void *ptrs[4] = {x->data, (void *)(uintptr_t)w, y->data, (void *)(uintptr_t)b};
    return ip_run(be, IP_FWD, x, y, b != NULL, ptrs);
}

int elle__cpu_linear_bwd_data(elle__backend *be, const elle__tensor *dy, const float *w,
                              elle__tensor *dx)
{
    const char *op = ip_op_name[IP_BWD_DATA];
    ELLE_TRY(check_linear(op, "dx", dx, "dy", dy));
    ELLE_TRY(elle__cpu_check_ptr(op, "w", w));
    void *ptrs[3] = {dy->data, (void *)(uintptr_t)w, dx->data};
    return ip_run(be, IP_BWD_DATA, dx, dy, 0, ptrs);
}

int elle__cpu_linear_bwd_weights(elle__backend *be, const elle__tensor *x, const elle__tensor *dy,
                                 float *dw, float *db)
{
    const char *op = ip_op_name[IP_BWD_WEIGHTS];
    ELLE_TRY(check_linear(op, "x", x, "dy", dy));
    ELLE_TRY(elle__cpu_check_ptr(op, "dw", dw));
    void *ptrs[4] = {x->data, dy->data, dw, db};
    return ip_run(be, IP_BWD_WEIGHTS, x, dy, 1, ptrs);
}
