/*
 * The backend op table: everything a compute backend provides.
 *
 * Layers, models, attacks and regularizers call only these functions; they
 * never include oneDNN, cuDNN or CUDA headers. A backend is a filled-in
 * `elle__backend_ops` plus an opaque `impl`. Adding a backend means filling
 * in this table (docs/adding-a-backend.md).
 *
 * Conventions for every op:
 * - Return ELLE_OK or a negative elle_status, with a message set through
 *   elle__error_set naming the op and the offending shapes (ELLE_EDEVICE for
 *   a library failure, ELLE_ESHAPE for inconsistent shapes).
 * - Pointers are backend memory (host for cpu/ref, device for cuda),
 *   allocated with ops->alloc. Parameters (weights, biases, gamma, beta),
 *   running statistics, saved statistics, labels and per-sample vectors are
 *   plain contiguous float/int32 arrays. Activations are elle__tensor views
 *   that carry a layout (lib/core/tensor.h).
 * - Activation gradients are WRITTEN (dx := ...). Parameter gradients are
 *   ACCUMULATED (dw += ...), so several backward passes can add into one
 *   gradient arena. A NULL parameter-gradient pointer means "do not compute
 *   it" (input-gradient-only backward for attacks).
 * - A gradient tensor always has the same shape and layout as the
 *   activation it is the gradient of; the caller sets that up.
 * - Ops create and cache whatever they need (oneDNN primitives, cuDNN
 *   algorithms, scratch) on the first call for a given shape, keyed by shape,
 *   inside `impl`. Later calls with the same shapes allocate nothing.
 * - Reductions in the reference backend accumulate in double.
 * - Ops run synchronously with respect to the host for cpu/ref; a CUDA
 *   backend may queue work and synchronise in ops->sync and in copies to
 *   the host.
 */
#ifndef ELLE_BACKEND_H
#define ELLE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

#define ELLE__BACKEND_ABI_VERSION 1

typedef struct elle__backend elle__backend;

/* 2-D convolution, NCHW logical shapes, weights (oc, ic, kh, kw) as PyTorch.
 * Output size: oh = (h + 2*ph - kh)/sh + 1, likewise ow. Dilation 1, groups 1. */
typedef struct elle__conv_desc {
    int64_t ic, oc;
    int64_t kh, kw;
    int64_t sh, sw;
    int64_t ph, pw;
    int has_bias;
} elle__conv_desc;

/* Batch normalisation over the channel dimension (PyTorch BatchNorm2d; also
 * BatchNorm1d on (n, c, 1, 1)). */
typedef struct elle__bn_desc {
    int64_t c;
    float eps;      /* 1e-5 */
    float momentum; /* 0.1: running = (1-momentum)*running + momentum*batch */
    int fuse_relu;  /* y = relu(bn(x)); backward applies the relu mask */
} elle__bn_desc;

enum { ELLE__POOL_MAX = 0, ELLE__POOL_AVG = 1 };

/* Pooling. Average pooling counts padding in the divisor (PyTorch's
 * count_include_pad=True default); global average pooling is a window equal
 * to the input size. Max pooling pads with -inf. */
typedef struct elle__pool_desc {
    int kind;
    int64_t kh, kw;
    int64_t sh, sw;
    int64_t ph, pw;
} elle__pool_desc;

typedef struct elle__backend_ops {
    int abi_version; /* ELLE__BACKEND_ABI_VERSION */
    const char *name; /* "cpu", "reference", "cuda" */

    /* Release impl and everything cached in it. */
    void (*destroy)(elle__backend *be);

    /* Compute threads (CPU backends); 0 = all cores. Optional. */
    int (*set_threads)(elle__backend *be, int threads);

    /* Wait for queued work (no-op on synchronous backends). */
    int (*sync)(elle__backend *be);

    /* ---- memory ---------------------------------------------------------- */

    /* Allocate `bytes` (64-byte aligned, zero-filled). */
    int (*alloc)(elle__backend *be, size_t bytes, void **out);
    void (*free)(elle__backend *be, void *ptr);
    /* Copies between host and backend memory, and within backend memory. */
    int (*copy_to_device)(elle__backend *be, void *dst, const void *host_src, size_t bytes);
    int (*copy_to_host)(elle__backend *be, void *host_dst, const void *src, size_t bytes);
    int (*copy)(elle__backend *be, void *dst, const void *src, size_t bytes);
    int (*memzero)(elle__backend *be, void *dst, size_t bytes);

    /* ---- layouts ------------------------------------------------------- */

    /* The layout this backend keeps a feature map of (c, h, w) in between
     * layers. The reference backend always answers ELLE__LAYOUT_PLAIN. */
    int (*layout_for)(elle__backend *be, int64_t c, int64_t h, int64_t w);
    /* Bytes needed to store `t` (its shape and layout, padding included). */
    size_t (*tensor_bytes)(elle__backend *be, const elle__tensor *t);
    /* Reorder between a tensor in any layout and a plain NCHW buffer of the
     * same logical shape. to_plain writes `dst`; from_plain writes `dst`
     * (padding zeroed). */
    int (*to_plain)(elle__backend *be, const elle__tensor *src, float *dst);
    int (*from_plain)(elle__backend *be, const float *src, elle__tensor *dst);

    /* ---- convolution ----------------------------------------------------- */

    /* y = conv(x, w) + b. b is NULL when !cd->has_bias. */
    int (*conv2d_fwd)(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *x,
                      const float *w, const float *b, elle__tensor *y);
    /* dx := conv_transpose(dy, w). */
    int (*conv2d_bwd_data)(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *dy,
                           const float *w, elle__tensor *dx);
    /* dw += corr(x, dy); db += sum over n,h,w of dy (db NULL: skip). */
    int (*conv2d_bwd_weights)(elle__backend *be, const elle__conv_desc *cd, const elle__tensor *x,
                              const elle__tensor *dy, float *dw, float *db);

    /* ---- batch normalisation --------------------------------------------- */

    /* Bytes of the workspace the fused-ReLU backward needs (0 if none). */
    size_t (*bn_workspace_bytes)(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x);
    /* Training mode: batch statistics over (n, h, w). Writes y, the batch mean
     * and biased variance (save_mean, save_var: c floats each) and the
     * workspace `ws`; updates running_mean and running_var in place with
     * momentum, using the UNBIASED batch variance (m/(m-1), m = n*h*w) for
     * running_var, as PyTorch. */
    int (*bn_fwd_train)(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                        const float *gamma, const float *beta, float *running_mean,
                        float *running_var, elle__tensor *y, float *save_mean, float *save_var,
                        void *ws);
    /* Inference mode: y = gamma*(x - running_mean)/sqrt(running_var + eps) + beta
     * (then relu if fused). Writes ws when fuse_relu (for a later backward). */
    int (*bn_fwd_infer)(elle__backend *be, const elle__bn_desc *bd, const elle__tensor *x,
                        const float *gamma, const float *beta, const float *running_mean,
                        const float *running_var, elle__tensor *y, void *ws);
    /* Backward. training != 0: `mean`/`var` are the saved batch statistics
     * and the gradient flows through them; training == 0: they are the
     * running statistics (constants). x, y and ws are the forward's input,
     * output and workspace (a backend uses y or ws for the fused relu mask).
     * Writes dx; accumulates dgamma, dbeta unless NULL. */
    int (*bn_bwd)(elle__backend *be, const elle__bn_desc *bd, int training,
                  const elle__tensor *x, const elle__tensor *y, const elle__tensor *dy,
                  const float *gamma, const float *mean, const float *var, const void *ws,
                  elle__tensor *dx, float *dgamma, float *dbeta);

    /* ---- elementwise on activations -------------------------------------- */

    /* y = max(x, 0). y may alias x. */
    int (*relu_fwd)(elle__backend *be, const elle__tensor *x, elle__tensor *y);
    /* dx = dy * (y > 0), y the forward output. dx may alias dy. */
    int (*relu_bwd)(elle__backend *be, const elle__tensor *y, const elle__tensor *dy,
                    elle__tensor *dx);
    /* y = a + b; all of one shape and layout; y may alias a or b. */
    int (*add)(elle__backend *be, const elle__tensor *a, const elle__tensor *b, elle__tensor *y);

    /* ---- pooling --------------------------------------------------------- */

    /* Bytes of the workspace max pooling keeps for its backward (0 for avg). */
    size_t (*pool_workspace_bytes)(elle__backend *be, const elle__pool_desc *pd,
                                   const elle__tensor *x, const elle__tensor *y);
    int (*pool_fwd)(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *x,
                    elle__tensor *y, void *ws);
    /* dx := gradient of the pooling; ws from the forward (max). */
    int (*pool_bwd)(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *dy,
                    const void *ws, elle__tensor *dx);

    /* ---- fully connected ------------------------------------------------- */

    /* y (n, out, 1, 1, plain) = flatten(x) w^T + b; x (n, c, h, w) in any
     * layout with c*h*w == in, flattened in NCHW order (PyTorch's
     * torch.flatten); w (out, in) row-major; b NULL when no bias. */
    int (*linear_fwd)(elle__backend *be, const elle__tensor *x, const float *w, const float *b,
                      elle__tensor *y);
    /* dx := dy w (dx has x's shape and layout). */
    int (*linear_bwd_data)(elle__backend *be, const elle__tensor *dy, const float *w,
                           elle__tensor *dx);
    /* dw += dy^T flatten(x); db += sum over n of dy (db NULL: skip). */
    int (*linear_bwd_weights)(elle__backend *be, const elle__tensor *x, const elle__tensor *dy,
                              float *dw, float *db);

    /* ---- softmax cross-entropy ------------------------------------------- */

    /* loss[i] = logsumexp(z_i) - z_i[labels[i]] for logits z (n, k, 1, 1,
     * plain); stable for huge logits. Labels are trusted here (checked at
     * the API boundary). */
    int (*xent_fwd)(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                    float *loss);
    /* dz_i := coef[i] * (softmax(z_i) - onehot(labels[i])). coef (n floats)
     * is d(objective)/d(loss_i): 1/n for the batch mean. */
    int (*xent_bwd)(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                    const float *coef, elle__tensor *dlogits);

    /* ---- elementwise on flat arrays (attacks, optimisers) ---------------- */

    /* y[i] = sign(x[i]) with sign(0) = 0. y may alias x. */
    int (*sign)(elle__backend *be, int64_t n, const float *x, float *y);
    /* y[i] += a * x[i]. */
    int (*axpy)(elle__backend *be, int64_t n, float a, const float *x, float *y);
    /* x[i] *= a. */
    int (*scale)(elle__backend *be, int64_t n, float a, float *x);
    /* x[i] = value. */
    int (*fill)(elle__backend *be, int64_t n, float value, float *x);
    /* x[i] = min(max(x[i], lo), hi). */
    int (*clamp)(elle__backend *be, int64_t n, float lo, float hi, float *x);
    /* Per-sample projection onto the L-inf ball around x0 (nsamples rows of
     * `per_sample` floats): x = x0 + clamp(x - x0, -e_s, e_s), with e_s =
     * eps_per_sample[s] when that pointer is non-NULL, else `eps`; then, if
     * do_clamp, x = clamp(x, lo, hi). One pass. A coordinate already inside
     * its interval is left bit-identical (computed as min(max(x, x0 - e),
     * x0 + e), not re-added to x0). */
    int (*project_linf)(elle__backend *be, int64_t nsamples, int64_t per_sample, const float *x0,
                        float eps, const float *eps_per_sample, int do_clamp, float lo, float hi,
                        float *x);
    /* out[i] = lo + (hi - lo) * u_i with u_i from Philox4x32-10 (key = seed,
     * counter block = counter + i/4, lane i%4; lib/core/rng.h). The same
     * (seed, counter) gives the same numbers on every backend and for any
     * number of threads. The caller advances its counter by
     * elle__rng_blocks(n). Values lie in [lo, hi]: float rounding of
     * lo + (hi - lo) * u can reach hi although u < 1. */
    int (*uniform)(elle__backend *be, int64_t n, uint64_t seed, uint64_t counter, float lo,
                   float hi, float *out);

    /* ---- optimisers (appended: members are only ever added at the end) --- */

    /* SGD step on flat arrays, PyTorch semantics (dampening 0): g = grad + wd*p;
     * buf = momentum*buf + g (buf starts at zero, so the first step gives buf = g);
     * p -= lr * (nesterov ? g + momentum*buf : buf). One pass. (optional: NULL
     * makes lib/train compose it from scale and axpy, equal up to rounding) */
    int (*sgd_update)(elle__backend *be, int64_t n, float lr, float momentum, float wd,
                      int nesterov, float *p, const float *grad, float *buf);

    /* ---- tangent ops (appended): forward-mode derivatives of the ops above,
     * for the second-order primitive (DESIGN.md §4, docs/second-order.md).
     * A tangent has the shape and layout of the value it is the tangent of;
     * all of an op's activation tensors share one layout. The forward's
     * routing is kept: a fused ReLU masks with the forward's y > 0 (its
     * second derivative is zero), max pooling uses the forward's argmax.
     * (optional: NULL makes every tangent pass of the model fail with
     * ELLE_EUNSUPPORTED) */

    /* yt := d/dt y(x + t xt), y the batch norm of bn_fwd_train (training:
     * mean/var are the forward's saved batch statistics, through which the
     * tangent flows) or bn_fwd_infer (!training: the running statistics,
     * constants). With s = 1/sqrt(var + eps), xhat = (x - mean) s and
     * per-channel means over (n, h, w):
     *   training: yt = mask * gamma * s * (xt - mean(xt) - xhat * mean(xhat xt))
     *   !training: yt = mask * gamma * s * xt
     * mask = (y > 0) with fuse_relu, else 1. Running statistics are not
     * touched. yt may alias xt. */
    int (*bn_fwd_tangent)(elle__backend *be, const elle__bn_desc *bd, int training,
                          const elle__tensor *x, const elle__tensor *y, const elle__tensor *xt,
                          const float *gamma, const float *mean, const float *var,
                          const void *ws, elle__tensor *yt);
    /* Tangent of bn_bwd along the input tangent xt and the output gradient's
     * tangent dyt (x, y, dy, gamma, mean, var, ws as given to bn_bwd).
     * Writes dxt := d/dt dx (NULL: skip); accumulates dgamma_t += d/dt
     * dgamma and dbeta_t += d/dt dbeta unless NULL. The closed form is
     * derived in docs/second-order.md. */
    int (*bn_bwd_tangent)(elle__backend *be, const elle__bn_desc *bd, int training,
                          const elle__tensor *x, const elle__tensor *y, const elle__tensor *xt,
                          const elle__tensor *dy, const elle__tensor *dyt, const float *gamma,
                          const float *mean, const float *var, const void *ws,
                          elle__tensor *dxt, float *dgamma_t, float *dbeta_t);
    /* yt := tangent of pool_fwd(x) along xt: average pooling is pool_fwd of
     * xt; max pooling takes, per window, xt at the forward's argmax (x, y,
     * ws from that forward; the first maximum in scan order, the forward's
     * rule). The tangent of pool_bwd is pool_bwd itself (linear). */
    int (*pool_fwd_tangent)(elle__backend *be, const elle__pool_desc *pd, const elle__tensor *x,
                            const elle__tensor *y, const void *ws, const elle__tensor *xt,
                            elle__tensor *yt);
    /* Tangent of xent_bwd along the logits' tangent zt, plus an optional
     * ordinary gradient: with p = softmax(z_i),
     *   dzt_i := coef[i] * (p * zt_i - p (p . zt_i))
     *            + (gcoef ? gcoef[i] * (p - onehot(labels[i])) : 0)
     *   loss_t[i] := (p - onehot(labels[i])) . zt_i   (d loss_i / dt; NULL: skip)
     * logits, zt, dzt (n, k, 1, 1) plain; dzt may alias zt. */
    int (*xent_tangent)(elle__backend *be, const elle__tensor *logits, const int32_t *labels,
                        const float *coef, const float *gcoef, const elle__tensor *logits_t,
                        elle__tensor *dlogits_t, float *loss_t);
} elle__backend_ops;

struct elle__backend {
    const elle__backend_ops *ops;
    void *impl;
    int kind;    /* elle_backend */
    int threads; /* as last set, 0 = all */
};

/* Backend constructors: fill *be on success. */
int elle__backend_ref_create(elle__backend *be);
int elle__backend_cpu_create(elle__backend *be, int device_index);
/* CUDA (only in builds with ELLE_HAVE_CUDA): ELLE_EDEVICE when there is no
 * driver, no device or no device `device_index`. */
int elle__backend_cuda_create(elle__backend *be, int device_index);
/* Number of CUDA devices, 0 when there is no driver or none (never fails). */
int elle__cuda_device_count(void);

#endif /* ELLE_BACKEND_H */
