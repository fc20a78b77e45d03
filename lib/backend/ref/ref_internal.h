/*
 * Private to the reference backend: the op functions of ref_conv.c,
 * ref_norm.c and ref_misc.c (gathered into one op table by ref_backend.c)
 * and the argument checks they share.
 *
 * The reference backend stores everything in the plain NCHW layout and
 * rejects any other layout with ELLE_EUNSUPPORTED.
 */
#ifndef ELLE_BACKEND_REF_INTERNAL_H
#define ELLE_BACKEND_REF_INTERNAL_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

/* Offset of element (n, c, y, x) in a plain NCHW tensor. */
static inline int64_t elle__ref_at(const elle__tensor *t, int64_t n, int64_t c, int64_t y,
                                   int64_t x)
{
    return ((n * t->c + c) * t->h + y) * t->w + x;
}

/* Output size of a window of `k` with stride `s` and padding `p` sliding over
 * `in` (PyTorch's floor mode): (in + 2p - k)/s + 1, or 0 when the window does
 * not fit at all. Arguments are already checked to be positive. */
static inline int64_t elle__ref_out_size(int64_t in, int64_t k, int64_t s, int64_t p)
{
    if (in + 2 * p < k)
        return 0;
    return (in + 2 * p - k) / s + 1;
}

/* The outputs [*lo, *hi] (inclusive, possibly empty: lo > hi) whose windows
 * cover input coordinate i; output o covers inputs o*s - p .. o*s - p + k - 1.
 * Backward passes gather through this instead of scattering, so that every
 * input gradient is one sum accumulated in double. */
static inline void elle__ref_covering(int64_t i, int64_t k, int64_t s, int64_t p, int64_t out,
                                      int64_t *lo, int64_t *hi)
{
    int64_t first = i + p - k + 1; /* smallest o*s that still covers i */
    *lo = first <= 0 ? 0 : (first + s - 1) / s;
    *hi = (i + p) / s;
    if (*hi > out - 1)
        *hi = out - 1;
}

/* "(n, c, h, w)" of a tensor, for messages: elle__ref_shape(t).s is valid
 * until the end of the full expression that contains it. */
typedef struct elle__ref_shape_str {
    char s[96];
} elle__ref_shape_str;
elle__ref_shape_str elle__ref_shape(const elle__tensor *t);

/* Argument checks; each sets a message "ref <op>: ..." and returns the
 * status, or returns ELLE_OK. */

/* ELLE_EINVAL when p is NULL. */
int elle__ref_check_ptr(const char *op, const char *name, const void *p);
/* t and t->data non-NULL (ELLE_EINVAL), every dimension positive and the
 * size representable (ELLE_ESHAPE), plain layout (ELLE_EUNSUPPORTED). */
int elle__ref_check_tensor(const char *op, const char *name, const elle__tensor *t);
/* Both tensors checked, and of the same shape (ELLE_ESHAPE). */
int elle__ref_check_same_shape(const char *op, const char *name_a, const elle__tensor *a,
                               const char *name_b, const elle__tensor *b);

/* ref_conv.c */
int elle__ref_conv2d_fwd(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *x,
                         const float *w, const float *b, elle__tensor *y);
int elle__ref_conv2d_bwd_data(elle__backend *be, const elle__conv_desc *cd,
                              const elle__tensor *dy, const float *w, elle__tensor *dx);
int elle__ref_conv2d_bwd_weights(elle__backend *be, const elle__conv_desc *cd,
                                 const elle__tensor *x, const elle__tensor *dy, float *dw,
                                 float *db);
int elle__ref_linear_fwd(elle__backend *be, const elle__tensor *x, const float *w, const float *b,
                         elle__tensor *y);
int elle__ref_linear_bwd_data(elle__backend *be, const elle__tensor *dy, const float *w,
                              elle__tensor *dx);
int elle__ref_linear_bwd_weights(elle__backend *be, const elle__tensor *x, const elle__tensor *dy,
                                 float *dw, float *db);

/* ref_norm.c */
size_t elle__ref_bn_workspace_bytes(elle__backend *be, const elle__bn_desc *bd,
                                    const elle__tensor *x);
int elle__ref_bn_fwd_train(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                           const float *gamma, const float *beta, float *running_mean,
                           float *running_var, elle__tensor *y, float *save_mean, float *save_var,
                           void *ws);
int elle__ref_bn_fwd_infer(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                           const float *gamma, const float *beta, const float *running_mean,
                           const float *running_var, elle__tensor *y, void *ws);
int elle__ref_bn_bwd(elle__backend *be, const elle__bn_desc *bd, int training,
                     const elle__tensor *x, const elle__tensor *y, const elle__tensor *dy,
                     const float *gamma, const float *mean, const float *var, const void *ws,
                     elle__tensor *dx, float *dgamma, float *dbeta);

/* ref_misc.c */
int elle__ref_relu_fwd(elle__backend *be, const elle__tensor *x, elle__tensor *y);
int elle__ref_relu_bwd(elle__backend *be, const elle__tensor *y, const elle__tensor *dy,
                       elle__tensor *dx);
int elle__ref_add(elle__backend *be, const elle__tensor *a, const elle__tensor *b,
                  elle__tensor *y);
size_t elle__ref_pool_workspace_bytes(elle__backend *be, const elle__pool_desc *pd,
                                      const elle__tensor *x, const elle__tensor *y);
int elle__ref_pool_fwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *x,
                       elle__tensor *y, void *ws);
int elle__ref_pool_bwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *dy,
                       const void *ws, elle__tensor *dx);
int elle__ref_xent_fwd(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                       float *loss);
int elle__ref_xent_bwd(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                       const float *coef, elle__tensor *dlogits);

/* ref_tangent.c */
int elle__ref_bn_fwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                             const elle__tensor *x, const elle__tensor *y, const elle__tensor *xt,
                             const float *gamma, const float *mean, const float *var,
                             const void *ws, elle__tensor *yt);
int elle__ref_bn_bwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                             const elle__tensor *x, const elle__tensor *y, const elle__tensor *xt,
                             const elle__tensor *dy, const elle__tensor *dyt, const float *gamma,
                             const float *mean, const float *var, const void *ws,
                             elle__tensor *dxt, float *dgamma_t, float *dbeta_t);
int elle__ref_pool_fwd_tangent(elle__backend *be, const elle__pool_desc *pd,
                               const elle__tensor *x, const elle__tensor *y, const void *ws,
                               const elle__tensor *xt, elle__tensor *yt);
int elle__ref_xent_tangent(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                           const float *coef, const float *gcoef, const elle__tensor *logits_t,
                           elle__tensor *dlogits_t, float *loss_t);

#endif /* ELLE_BACKEND_REF_INTERNAL_H */
