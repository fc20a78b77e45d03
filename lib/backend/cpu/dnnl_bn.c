/*
 * Batch normalisation on oneDNN (dnnl_use_scale | dnnl_use_shift: gamma and
 * beta arrive as separate arrays, which 2.6 takes as they are).
 *
 * Training forward: oneDNN computes the batch mean and biased variance into
 * save_mean/save_var; the running statistics are then updated here with the
 * UNBIASED variance (m/(m-1)), as PyTorch does and oneDNN does not.
 *
 * Fused ReLU uses dnnl_fuse_norm_relu, whose training forward leaves a
 * bit mask workspace (dnnl_query_workspace_md) for the backward; that is the
 * op's `ws` and bn_workspace_bytes is its size. The inference forward with a
 * fused relu is built as forward_training + dnnl_use_global_stats so that it
 * too leaves the workspace an eval-mode backward (attacks on a model in eval
 * mode) needs. Without a `ws` from the caller the forward keeps the mask in
 * an entry buffer, and the backward masks dy with y > 0 itself and runs the
 * plain (unfused) backward.
 *
 * The data descriptor is x's layout: oneDNN requires src and dst (and
 * diff_src and diff_dst) to share one, so a y or dx in another layout goes
 * through the entry's reorder.
 */
#include <string.h>

#include "backend/cpu/dnnl_util.h"
#include "backend/desc_check.h"

/* Key bits; BN_MASK: fused relu applied by hand (no workspace given). */
enum { BN_TRAIN = 1, BN_FUSE = 2, BN_FUSE_WS = 4, BN_MASK = 8 };

/* need_data 0: shape only (the workspace size query). */
static int check_bn(const char *op, const elle__bn_desc *bd, const elle__tensor *x, int need_data)
{
    if (need_data)
        ELLE_TRY(elle__cpu_check_tensor(op, "x", x));
    else
        ELLE_TRY(elle__cpu_check_shape(op, "x", x));
    return elle__check_bn("cpu", op, bd, x);
}

static int64_t eps_bits(float eps)
{
    uint32_t u;
    memcpy(&u, &eps, sizeof u);
    return u;
}

/* Flags for batch statistics (train) or given ones (global stats), with or
 * without the fused relu; a backward uses its forward's flags. */
static unsigned bn_flags(int train, int fuse)
{
    unsigned f = dnnl_use_scale | dnnl_use_shift;
    if (!train)
        f |= dnnl_use_global_stats;
    if (fuse)
        f |= dnnl_fuse_norm_relu;
    return f;
}

static int bn_fwd_pd(elle__cpu_impl *impl, const dnnl_memory_desc_t *data, float eps, int train,
                     int fuse, dnnl_primitive_desc_t *out)
{
    dnnl_batch_normalization_desc_t d;
    dnnl_primitive_attr_t attr;
    int rc = ELLE_OK;
    /* forward_training even for inference: with a fused relu only training
     * leaves the workspace; with global stats it reads mean/variance */
    ELLE__DNNL_TRY(dnnl_batch_normalization_forward_desc_init(&d, dnnl_forward_training, data, eps,
                                                              bn_flags(train, fuse)));
    ELLE_TRY(elle__cpu_attr_create(&attr, 0));
    ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(out, &d, attr, impl->engine, NULL));
cleanup:
    dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* Forward entry for x (and y's layout). */
static int fwd_entry(elle__cpu_impl *impl, const elle__bn_desc *bd, const elle__tensor *x,
                     int y_layout, int train, elle__cpu_entry **out)
{
    const int fuse = bd->fuse_relu != 0;
    elle__cpu_key key;
    elle__cpu_key_init(&key, ELLE__CPU_OP_BN_FWD);
    elle__cpu_key_tensor(&key, x);
    elle__cpu_key_add(&key, y_layout);
    elle__cpu_key_add(&key, eps_bits(bd->eps));
    elle__cpu_key_add(&key, (train ? BN_TRAIN : 0) | (fuse ? BN_FUSE : 0));
    *out = elle__cpu_cache_find(impl, &key);
    if (*out)
        return ELLE_OK;

    elle__cpu_entry *e;
    dnnl_primitive_desc_t pd;
    dnnl_memory_desc_t xmd, ymd, cmd;
    const int64_t cd[1] = {x->c};
    int rc;
    ELLE_TRY(elle__cpu_entry_new(&key, &e));
    ELLE_TRY_GOTO(rc, elle__cpu_md_tensor(&xmd, x));
    ELLE_TRY_GOTO(rc, elle__cpu_md_4d(&ymd, x->n, x->c, x->h, x->w, y_layout));
    ELLE_TRY_GOTO(rc, elle__cpu_md(&cmd, 1, cd, dnnl_x));
    ELLE_TRY_GOTO(rc, bn_fwd_pd(impl, &xmd, bd->eps, train, fuse, &pd));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_set_pd(impl, e, pd));
    /* order: x, y, gamma, beta, mean, var, ws */
    const int stats = train ? ELLE__CPU_OUT : ELLE__CPU_IN;
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_SRC, NULL, &xmd, ELLE__CPU_IN));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DST, &ymd, dnnl_query_dst_md,
                                            ELLE__CPU_OUT));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_SCALE, NULL, &cmd, ELLE__CPU_IN));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_SHIFT, NULL, &cmd, ELLE__CPU_IN));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_MEAN, NULL, &cmd, stats));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_VARIANCE, NULL, &cmd, stats));
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_workspace_md, 0);
    e->ws_bytes = wmd ? dnnl_memory_desc_get_size(wmd) : 0;
    if (e->ws_bytes) {
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_WORKSPACE, NULL, wmd,
                                              ELLE__CPU_OUT));
        /* where the mask goes when the caller has no ws for it */
        ELLE_TRY_GOTO(rc, elle__cpu_buf_alloc(e->ws_bytes, &e->extra));
        e->extra_bytes = e->ws_bytes;
    }
    rc = elle__cpu_cache_add(impl, e);
    *out = rc < 0 ? NULL : e;
    return rc;
cleanup:
    elle__cpu_entry_free(e);
    return rc;
}

size_t elle__cpu_bn_workspace_bytes(elle__backend *be, const elle__bn_desc *bd,
                                    const elle__tensor *x)
{
    if (!be || !bd || !bd->fuse_relu || check_bn("bn_workspace_bytes", bd, x, 0) < 0)
        return 0;
    elle__cpu_impl *impl = elle__cpu_impl_of(be);
    /* the training and the inference forward leave the same mask; ask both
     * in case an implementation differs */
    size_t bytes = 0;
    for (int train = 1; train >= 0; train--) {
        elle__cpu_entry *e;
        if (fwd_entry(impl, bd, x, x->layout, train, &e) == ELLE_OK && e->ws_bytes > bytes)
            bytes = e->ws_bytes;
    }
    return bytes;
}

static int fwd_run(elle__backend *be, const char *op, const elle__bn_desc *bd, int train,
                   const elle__tensor *x, const float *gamma, const float *beta, const float *mean,
                   const float *var, elle__tensor *y, void *ws)
{
    elle__cpu_impl *impl = elle__cpu_impl_of(be);
    elle__cpu_entry *e;
    int rc = fwd_entry(impl, bd, x, y->layout, train, &e);
    if (rc == ELLE_OK) {
        void *ptrs[7] = {x->data,
                         y->data,
                         (void *)(uintptr_t)gamma,
                         (void *)(uintptr_t)beta,
                         (void *)(uintptr_t)mean,
                         (void *)(uintptr_t)var,
                         ws ? ws : e->extra};
        rc = elle__cpu_entry_run(impl, e, ptrs);
    }
    if (rc < 0)
        elle__error_prefix("cpu %s %s%s", op, elle__cpu_shape(x).s,
                           bd->fuse_relu ? " (fused relu)" : "");
    return rc;
}

int elle__cpu_bn_fwd_train(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                           const float *gamma, const float *beta, float *running_mean,
                           float *running_var, elle__tensor *y, float *save_mean, float *save_var,
                           void *ws)
{
    const char *op = "bn_fwd_train";
    ELLE_TRY(check_bn(op, bd, x, 1));
    if (!(bd->momentum >= 0.0f && bd->momentum <= 1.0f))
        ELLE_FAIL(ELLE_EINVAL, "cpu %s: momentum %g is outside [0, 1]", op, (double)bd->momentum);
    ELLE_TRY(elle__cpu_check_same_shape(op, "x", x, "y", y));
    ELLE_TRY(elle__cpu_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__cpu_check_ptr(op, "beta", beta));
    ELLE_TRY(elle__cpu_check_ptr(op, "running_mean", running_mean));
    ELLE_TRY(elle__cpu_check_ptr(op, "running_var", running_var));
    ELLE_TRY(elle__cpu_check_ptr(op, "save_mean", save_mean));
    ELLE_TRY(elle__cpu_check_ptr(op, "save_var", save_var));
    ELLE_TRY(fwd_run(be, op, bd, 1, x, gamma, beta, save_mean, save_var, y, ws));

    /* oneDNN gives the biased variance; PyTorch's running_var takes the
     * unbiased one. M == 1 keeps the (zero) biased one, as the reference. */
    const int64_t m_count = x->n * x->h * x->w;
    const double m = bd->momentum;
    const double unbias = m_count > 1 ? (double)m_count / (double)(m_count - 1) : 1.0;
    for (int64_t c = 0; c < x->c; c++) {
        running_mean[c] = (float)((1.0 - m) * (double)running_mean[c] + m * (double)save_mean[c]);
        running_var[c] =
            (float)((1.0 - m) * (double)running_var[c] + m * (double)save_var[c] * unbias);
    }
    return ELLE_OK;
}

int elle__cpu_bn_fwd_infer(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                           const float *gamma, const float *beta, const float *running_mean,
                           const float *running_var, elle__tensor *y, void *ws)
{
    const char *op = "bn_fwd_infer";
    ELLE_TRY(check_bn(op, bd, x, 1));
    ELLE_TRY(elle__cpu_check_same_shape(op, "x", x, "y", y));
    ELLE_TRY(elle__cpu_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__cpu_check_ptr(op, "beta", beta));
    ELLE_TRY(elle__cpu_check_ptr(op, "running_mean", running_mean));
    ELLE_TRY(elle__cpu_check_ptr(op, "running_var", running_var));
    return fwd_run(be, op, bd, 0, x, gamma, beta, running_mean, running_var, y, ws);
}

/* ---- backward ----------------------------------------------------------- */

/* mode: BN_TRAIN, BN_FUSE_WS (the workspace carries the relu mask) or
 * BN_MASK (the backward applies the mask from y itself). */
static int bwd_entry(elle__cpu_impl *impl, const elle__bn_desc *bd, const elle__tensor *x,
                     const elle__tensor *dy, int dx_layout, int mode, elle__cpu_entry **out)
{
    const int train = (mode & BN_TRAIN) != 0, fuse = (mode & BN_FUSE_WS) != 0;
    elle__cpu_key key;
    elle__cpu_key_init(&key, ELLE__CPU_OP_BN_BWD);
    elle__cpu_key_tensor(&key, x);
    elle__cpu_key_add(&key, dy->layout);
    elle__cpu_key_add(&key, dx_layout);
    elle__cpu_key_add(&key, eps_bits(bd->eps));
    elle__cpu_key_add(&key, mode);
    *out = elle__cpu_cache_find(impl, &key);
    if (*out)
        return ELLE_OK;

    elle__cpu_entry *e;
    dnnl_primitive_desc_t pd = NULL, hint = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_batch_normalization_desc_t d;
    dnnl_memory_desc_t xmd, dymd, dxmd, cmd;
    const int64_t cd[1] = {x->c};
    int rc;
    ELLE_TRY(elle__cpu_entry_new(&key, &e));
    ELLE_TRY_GOTO(rc, elle__cpu_md_tensor(&xmd, x));
    ELLE_TRY_GOTO(rc, elle__cpu_md_tensor(&dymd, dy));
    ELLE_TRY_GOTO(rc, elle__cpu_md_4d(&dxmd, x->n, x->c, x->h, x->w, dx_layout));
    ELLE_TRY_GOTO(rc, elle__cpu_md(&cmd, 1, cd, dnnl_x));
    ELLE_TRY_GOTO(rc, bn_fwd_pd(impl, &xmd, bd->eps, train, fuse, &hint));
    ELLE__DNNL_TRY_GOTO(rc, dnnl_batch_normalization_backward_desc_init(
                                &d, dnnl_backward, &dymd, &xmd, bd->eps, bn_flags(train, fuse)));
    ELLE_TRY_GOTO(rc, elle__cpu_attr_create(&attr, 0));
    ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_desc_create(&pd, &d, attr, impl->engine, hint));
    rc = elle__cpu_entry_set_pd(impl, e, pd);
    pd = NULL; /* owned by the entry, even on failure */
    if (rc < 0)
        goto cleanup;
    /* order: x, mean, var, dy, gamma, shift (= gamma), dx, dgamma, dbeta, ws */
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_SRC, NULL, &xmd, ELLE__CPU_IN));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_MEAN, NULL, &cmd, ELLE__CPU_IN));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_VARIANCE, NULL, &cmd, ELLE__CPU_IN));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_DIFF_DST, NULL, &dymd, ELLE__CPU_IN));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_SCALE, NULL, &cmd, ELLE__CPU_IN));
    /* oneDNN 2.6 counts the shift among the backward's inputs although
     * nothing depends on it; the op has no beta, so gamma's (valid, C
     * floats) memory stands in */
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_SHIFT, NULL, &cmd, ELLE__CPU_IN));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg_q(impl, e, DNNL_ARG_DIFF_SRC, &dxmd,
                                            dnnl_query_diff_src_md, ELLE__CPU_OUT));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_DIFF_SCALE, NULL, &cmd,
                                          ELLE__CPU_OUT_ACC));
    ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_DIFF_SHIFT, NULL, &cmd,
                                          ELLE__CPU_OUT_ACC));
    if (fuse) {
        const dnnl_memory_desc_t *wmd =
            dnnl_primitive_desc_query_md(e->pd, dnnl_query_workspace_md, 0);
        e->ws_bytes = wmd ? dnnl_memory_desc_get_size(wmd) : 0;
        if (!e->ws_bytes) {
            rc = elle__error_set(ELLE_ERROR, "cpu bn_bwd: internal error: %s has no workspace",
                                 elle__cpu_pd_impl(e->pd));
            goto cleanup;
        }
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_WORKSPACE, NULL, wmd,
                                              ELLE__CPU_IN));
    } else if (mode & BN_MASK) {
        /* the relu mask applied by hand: dy * (y > 0) in dy's layout */
        e->extra_bytes = dnnl_memory_desc_get_size(&dymd);
        ELLE_TRY_GOTO(rc, elle__cpu_buf_alloc(e->extra_bytes, &e->extra));
    }
    rc = elle__cpu_cache_add(impl, e);
    *out = rc < 0 ? NULL : e;
    e = NULL; /* cached, or freed by cache_add */
cleanup:
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (hint)
        dnnl_primitive_desc_destroy(hint);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (e)
        elle__cpu_entry_free(e);
    return rc;
}

int elle__cpu_bn_bwd(elle__backend *be, const elle__bn_desc *bd, int training,
                     const elle__tensor *x, const elle__tensor *y, const elle__tensor *dy,
                     const float *gamma, const float *mean, const float *var, const void *ws,
                     elle__tensor *dx, float *dgamma, float *dbeta)
{
    const char *op = "bn_bwd";
    ELLE_TRY(check_bn(op, bd, x, 1));
    ELLE_TRY(elle__cpu_check_same_shape(op, "x", x, "dy", dy));
    ELLE_TRY(elle__cpu_check_same_shape(op, "x", x, "dx", dx));
    const int mask_by_hand = bd->fuse_relu && !ws;
    /* y is only needed for a fused relu without its workspace */
    if (mask_by_hand)
        ELLE_TRY(elle__cpu_check_same_layout(op, "y (fuse_relu without ws)", y, "dy", dy));
    ELLE_TRY(elle__cpu_check_ptr(op, "gamma", gamma));
    ELLE_TRY(elle__cpu_check_ptr(op, "mean", mean));
    ELLE_TRY(elle__cpu_check_ptr(op, "var", var));

    elle__cpu_impl *impl = elle__cpu_impl_of(be);
    const int mode = (training ? BN_TRAIN : 0) | (bd->fuse_relu && ws ? BN_FUSE_WS : 0) |
                     (mask_by_hand ? BN_MASK : 0);
    elle__cpu_entry *e;
    int rc = bwd_entry(impl, bd, x, dy, dx->layout, mode, &e);
    if (rc == ELLE_OK) {
        void *g = dy->data;
        if (mask_by_hand) {
            const int64_t n = (int64_t)(e->extra_bytes / sizeof(float));
            const float *ys = y->data, *dys = dy->data;
            float *m = e->extra;
#pragma omp parallel for schedule(static) if (n > 32768)
            for (int64_t i = 0; i < n; i++)
                m[i] = ys[i] > 0.0f ? dys[i] : 0.0f;
            g = m;
        }
        void *ptrs[10] = {x->data,
                          (void *)(uintptr_t)mean,
                          (void *)(uintptr_t)var,
                          g,
                          (void *)(uintptr_t)gamma,
                          (void *)(uintptr_t)gamma,
                          dx->data,
                          dgamma,
                          dbeta,
                          (void *)(uintptr_t)ws};
        rc = elle__cpu_entry_run(impl, e, ptrs);
    }
    if (rc < 0)
        elle__error_prefix("cpu %s %s%s%s", op, elle__cpu_shape(x).s,
                           training ? " (training)" : " (inference)",
                           bd->fuse_relu ? " (fused relu)" : "");
    return rc;
}
