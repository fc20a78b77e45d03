/*
 * Pooling on oneDNN: dnnl_pooling_max (its forward leaves a workspace of
 * argmax indices, the op's `ws`, read by the backward) and
 * dnnl_pooling_avg_include_padding (PyTorch's count_include_pad=True: the
 * divisor is always kh*kw). Global average pooling is the window equal to
 * the input.
 *
 * The backward primitive is created with a forward descriptor of the same
 * shapes as its hint, so oneDNN pairs it with the forward implementation
 * that wrote the workspace.
 */
#include "backend/cpu/dnnl_util.h"
#include "backend/desc_check.h"

/* The descriptor, `x` (input shaped: x or dx) and `y` (output shaped: y or
 * dy), as the reference checks them; need_data 0: shapes only (the
 * workspace size query). */
static int check_pool(const char *op, const elle__pool_desc *pd, const char *xname,
                      const elle__tensor *x, const char *yname, const elle__tensor *y,
                      int need_data)
{
    int (*check)(const char *, const char *, const elle__tensor *) =
        need_data ? elle__cpu_check_tensor : elle__cpu_check_shape;
    ELLE_TRY(elle__check_pool_desc("cpu", op, pd));
    ELLE_TRY(check(op, xname, x));
    ELLE_TRY(check(op, yname, y));
    return elle__check_pool_geometry("cpu", op, pd, xname, x, yname, y);
}

/* Primitive descriptor (backward when bwd != 0) for input-shaped x and
 * output-shaped y in their layouts. */
static int pool_pd(elle__cpu_impl *impl, int bwd, const elle__pool_desc *p,
                   const elle__tensor *x, const elle__tensor *y, dnnl_primitive_desc_t *out)
{
    *out = NULL;
    dnnl_memory_desc_t xmd, ymd;
    ELLE_TRY(elle__cpu_md_tensor(&xmd, x));
    ELLE_TRY(elle__cpu_md_tensor(&ymd, y));
    const dnnl_alg_kind_t alg =
        p->kind == ELLE__POOL_MAX ? dnnl_pooling_max : dnnl_pooling_avg_include_padding;
    /* floor mode: the right padding that gives oneDNN our output size; it
     * may be negative (last rows unread) but is always > -stride */
    const dnnl_dims_t strides = {p->sh, p->sw}, kernel = {p->kh, p->kw}, pad_l = {p->ph, p->pw};
    const dnnl_dims_t pad_r = {(y->h - 1) * p->sh + p->kh - x->h - p->ph,
                               (y->w - 1) * p->sw + p->kw - x->w - p->pw};
    dnnl_pooling_desc_t fd, bd;
    dnnl_primitive_attr_t attr;
    dnnl_primitive_desc_t hint = NULL;
    int rc = ELLE_OK;
    ELLE__DNNL_TRY(dnnl_pooling_forward_desc_init(&fd, dnnl_forward_training, alg, &xmd, &ymd,
                                                  strides, kernel, pad_l, pad_r));
    ELLE_TRY(elle__cpu_attr_create(&attr, 0));
    if (!bwd) {
        ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(out, &fd, attr, impl->engine, NULL));
        goto cleanup;
    }
    ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(&hint, &fd, attr, impl->engine, NULL));
    ELLE__DNNL_TRY_GOTO(rc, dnnl_pooling_backward_desc_init(&bd, alg, &xmd, &ymd, strides, kernel,
                                                            pad_l, pad_r));
    ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(out, &bd, attr, impl->engine, hint));
cleanup:
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    dnnl_primitive_attr_destroy(attr);
    return rc;
}

static int pool_entry(elle__cpu_impl *impl, int bwd, const elle__pool_desc *p,
                      const elle__tensor *x, const elle__tensor *y, elle__cpu_entry **out)
{
    elle__cpu_key key;
    elle__cpu_key_init(&key, bwd ? ELLE__CPU_OP_POOL_BWD : ELLE__CPU_OP_POOL_FWD);
    elle__cpu_key_tensor(&key, x);
    elle__cpu_key_tensor(&key, y);
    elle__cpu_key_add(&key, p->kind);
    elle__cpu_key_add(&key, p->kh);
    elle__cpu_key_add(&key, p->kw);
    elle__cpu_key_add(&key, p->sh);
    elle__cpu_key_add(&key, p->sw);
    elle__cpu_key_add(&key, p->ph);
    elle__cpu_key_add(&key, p->pw);
    *out = elle__cpu_cache_find(impl, &key);
    if (*out)
        return ELLE_OK;

    elle__cpu_entry *e;
    dnnl_primitive_desc_t pd;
    dnnl_memory_desc_t xmd, ymd;
    int rc;
    ELLE_TRY(elle__cpu_entry_new(&key, &e));
    ELLE_TRY_GOTO(rc, elle__cpu_md_tensor(&xmd, x));
    ELLE_TRY_GOTO(rc, elle__cpu_md_tensor(&ymd, y));
    ELLE_TRY_GOTO(rc, pool_pd(impl, bwd, p, x, y, &pd));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_set_pd(impl, e, pd));
    /* order: fwd x, y, ws; bwd dy, dx, ws */
    if (!bwd) {
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_SRC, &xmd, dnnl_query_src_md,
                                                ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DST, &ymd, dnnl_query_dst_md,
                                                ELLE__CPU_OUT));
    } else {
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DIFF_DST, &ymd,
                                                dnnl_query_diff_dst_md, ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DIFF_SRC, &xmd,
                                                dnnl_query_diff_src_md, ELLE__CPU_OUT));
    }
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_workspace_md, 0);
    e->ws_bytes = wmd ? dnnl_memory_desc_get_size(wmd) : 0;
    if (e->ws_bytes)
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_WORKSPACE, NULL, wmd,
                                              bwd ? ELLE__CPU_IN : ELLE__CPU_OUT));
    rc = elle__cpu_cache_add(impl, e);
    *out = rc < 0 ? NULL : e;
    return rc;
cleanup:
    elle__cpu_entry_free(e);
    return rc;
}

static int pool_run(elle__backend *be, int bwd, const elle__pool_desc *p, const elle__tensor *x,
                    const elle__tensor *y, void *ws)
{
    elle__cpu_impl *impl = elle__cpu_impl_of(be);
    elle__cpu_entry *e;
    const char *op = bwd ? "pool_bwd" : "pool_fwd";
    int rc = pool_entry(impl, bwd, p, x, y, &e);
    if (rc == ELLE_OK && e->ws_bytes && !ws)
        rc = elle__error_set(ELLE_EINVAL, "cpu %s: ws (max pooling) is NULL", op);
    if (rc == ELLE_OK) {
        void *ptrs[3] = {bwd ? y->data : x->data, bwd ? x->data : y->data, ws};
        rc = elle__cpu_entry_run(impl, e, ptrs);
    }
    if (rc < 0)
        elle__error_prefix("cpu %s %s %s -> %s, window %" PRId64 "x%" PRId64 " stride %" PRId64
                           " padding %" PRId64,
                           op, p->kind == ELLE__POOL_MAX ? "max" : "avg", elle__cpu_shape(x).s,
                           elle__cpu_shape(y).s, p->kh, p->kw, p->sh, p->ph);
    return rc;
}

size_t elle__cpu_pool_workspace_bytes(elle__backend *be, const elle__pool_desc *pd,
                                      const elle__tensor *x, const elle__tensor *y)
{
    if (!be || !pd || pd->kind != ELLE__POOL_MAX ||
        check_pool("pool_workspace_bytes", pd, "x", x, "y", y, 0) < 0)
        return 0;
    elle__cpu_entry *e;
    if (pool_entry(elle__cpu_impl_of(be), 0, pd, x, y, &e) < 0)
        return 0; /* the forward reports the error */
    return e->ws_bytes;
}

int elle__cpu_pool_fwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *x,
                       elle__tensor *y, void *ws)
{
    ELLE_TRY(check_pool("pool_fwd", pd, "x", x, "y", y, 1));
    return pool_run(be, 0, pd, x, y, ws);
}

int elle__cpu_pool_bwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *dy,
                       const void *ws, elle__tensor *dx)
{
    ELLE_TRY(check_pool("pool_bwd", pd, "dx", dx, "dy", dy, 1));
    return pool_run(be, 1, pd, dx, dy, (void *)(uintptr_t)ws);
}
