/*
 * Private to the CPU backend: its layout tags, the argument checks shared by
 * its files, and the ops implemented on oneDNN (dnnl_*.c), which cpu_backend.c
 * gathers into the op table.
 *
 * Nothing here includes oneDNN: every oneDNN call and type lives in the
 * dnnl_*.c files and dnnl_util.h, so that moving to oneDNN's v3 API touches
 * only those (STYLE.md §8.9).
 */
#ifndef ELLE_BACKEND_CPU_INTERNAL_H
#define ELLE_BACKEND_CPU_INTERNAL_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

/* Layouts of elle__tensor.layout on this backend (ELLE__LAYOUT_PLAIN is 0):
 * oneDNN's channel-blocked nChw8c / nChw16c. The channel count is padded up
 * to the block and the padding is kept at zero, so elementwise loops can run
 * over the whole padded buffer. */
enum {
    ELLE__CPU_LAYOUT_NCHW8C = 1,
    ELLE__CPU_LAYOUT_NCHW16C = 2,
};

/* The opaque state in be->impl (defined in dnnl_util.h). */
typedef struct elle__cpu_impl elle__cpu_impl;

/* ---- dnnl_util.c: lifetime, cache, layouts ------------------------------ */

/* Engine (cpu, device_index), stream, empty cache. */
int elle__cpu_impl_create(elle__cpu_impl **out, int device_index);
/* Frees every cached primitive, memory object and buffer. NULL is fine. */
void elle__cpu_impl_destroy(elle__cpu_impl *impl);
/* Channel block of the layout feature maps of >= 16 channels get: 16 on
 * AVX-512 machines, 8 below. */
int elle__cpu_wide_block(const elle__cpu_impl *impl);
/* Number of cached primitive entries (the tests check that a second call
 * with the same shapes does not add one). */
size_t elle__cpu_cache_size(const elle__backend *be);
/* Waits for the stream (a formality on the CPU: execution is synchronous). */
int elle__cpu_stream_wait(elle__backend *be);

/* A host buffer of at least `bytes` owned by the impl, for loops that need
 * scratch (per-thread partial sums). Grown on demand, so the first call per
 * shape may allocate and later ones do not; valid until the next call. */
int elle__cpu_loop_scratch(elle__backend *be, size_t bytes, void **out);

/* Channel block of a layout tag (1 for plain), 0 for an unknown tag. */
int elle__cpu_layout_block(int layout);

int elle__cpu_to_plain(elle__backend *be, const elle__tensor *src, float *dst);
int elle__cpu_from_plain(elle__backend *be, const float *src, elle__tensor *dst);

/* ---- cpu_backend.c: argument checks -------------------------------------- */

/* "(n, c, h, w)" of a tensor, valid until the end of the full expression. */
typedef struct elle__cpu_shape_str {
    char s[112];
} elle__cpu_shape_str;
elle__cpu_shape_str elle__cpu_shape(const elle__tensor *t);

/* Each sets a message "cpu <op>: ..." and returns the status, or ELLE_OK. */
int elle__cpu_check_ptr(const char *op, const char *name, const void *p);
/* t and t->data non-NULL (ELLE_EINVAL), dimensions positive and the padded
 * size representable (ELLE_ESHAPE), a layout of this backend (ELLE_EINVAL). */
int elle__cpu_check_tensor(const char *op, const char *name, const elle__tensor *t);
/* The same without requiring data: the size queries (bn/pool_workspace_bytes)
 * are asked during arena planning, before any memory exists. */
int elle__cpu_check_shape(const char *op, const char *name, const elle__tensor *t);
/* Both checked and of the same logical shape (ELLE_ESHAPE). */
int elle__cpu_check_same_shape(const char *op, const char *name_a, const elle__tensor *a,
                               const char *name_b, const elle__tensor *b);
/* Same shape and, in addition, the same layout (ELLE_EINVAL otherwise); for
 * the elementwise loops that walk the raw buffers side by side. */
int elle__cpu_check_same_layout(const char *op, const char *name_a, const elle__tensor *a,
                                const char *name_b, const elle__tensor *b);

/* ---- dnnl_conv.c ---------------------------------------------------------- */

int elle__cpu_conv2d_fwd(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *x,
                         const float *w, const float *b, elle__tensor *y);
int elle__cpu_conv2d_bwd_data(elle__backend *be, const elle__conv_desc *cd,
                              const elle__tensor *dy, const float *w, elle__tensor *dx);
int elle__cpu_conv2d_bwd_weights(elle__backend *be, const elle__conv_desc *cd,
                                 const elle__tensor *x, const elle__tensor *dy, float *dw,
                                 float *db);

/* ---- dnnl_bn.c ------------------------------------------------------------ */

size_t elle__cpu_bn_workspace_bytes(elle__backend *be, const elle__bn_desc *bd,
                                    const elle__tensor *x);
int elle__cpu_bn_fwd_train(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                           const float *gamma, const float *beta, float *running_mean,
                           float *running_var, elle__tensor *y, float *save_mean, float *save_var,
                           void *ws);
int elle__cpu_bn_fwd_infer(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                           const float *gamma, const float *beta, const float *running_mean,
                           const float *running_var, elle__tensor *y, void *ws);
int elle__cpu_bn_bwd(elle__backend *be, const elle__bn_desc *bd, int training,
                     const elle__tensor *x, const elle__tensor *y, const elle__tensor *dy,
                     const float *gamma, const float *mean, const float *var, const void *ws,
                     elle__tensor *dx, float *dgamma, float *dbeta);

/* ---- dnnl_pool.c ---------------------------------------------------------- */

size_t elle__cpu_pool_workspace_bytes(elle__backend *be, const elle__pool_desc *pd,
                                      const elle__tensor *x, const elle__tensor *y);
int elle__cpu_pool_fwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *x,
                       elle__tensor *y, void *ws);
int elle__cpu_pool_bwd(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *dy,
                       const void *ws, elle__tensor *dx);

/* ---- dnnl_linear.c -------------------------------------------------------- */

int elle__cpu_linear_fwd(elle__backend *be, const elle__tensor *x, const float *w, const float *b,
                         elle__tensor *y);
int elle__cpu_linear_bwd_data(elle__backend *be, const elle__tensor *dy, const float *w,
                              elle__tensor *dx);
int elle__cpu_linear_bwd_weights(elle__backend *be, const elle__tensor *x, const elle__tensor *dy,
                                 float *dw, float *db);

/* ---- cpu_tangent.c: tangent ops (OpenMP loops over the blocked layouts) - */

int elle__cpu_bn_fwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                             const elle__tensor *x, const elle__tensor *y, const elle__tensor *xt,
                             const float *gamma, const float *mean, const float *var,
                             const void *ws, elle__tensor *yt);
int elle__cpu_bn_bwd_tangent(elle__backend *be, const elle__bn_desc *bd, int training,
                             const elle__tensor *x, const elle__tensor *y, const elle__tensor *xt,
                             const elle__tensor *dy, const elle__tensor *dyt, const float *gamma,
                             const float *mean, const float *var, const void *ws,
                             elle__tensor *dxt, float *dgamma_t, float *dbeta_t);
int elle__cpu_pool_fwd_tangent(elle__backend *be, const elle__pool_desc *pd,
                               const elle__tensor *x, const elle__tensor *y, const void *ws,
                               const elle__tensor *xt, elle__tensor *yt);
int elle__cpu_xent_tangent(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                           const float *coef, const float *gcoef, const elle__tensor *logits_t,
                           elle__tensor *dlogits_t, float *loss_t);

#endif /* ELLE_BACKEND_CPU_INTERNAL_H */
