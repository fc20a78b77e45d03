/*
 * Regularizers inside the library: the handle, the per-kind operations, and
 * the device-memory entry the trainer uses.
 *
 * regularizer.c owns what every kind shares: parameters (one table per
 * kind), the ELLE-A mechanism (adaptive.h) and its timing relative to the
 * backward, the random stream, statistics, state serialization and the
 * host API boundary. A kind (elle.c, gradalign.c, llr.c, cure.c, gat.c)
 * supplies two steps:
 *
 *   value     forward work: compute R on the batch (backend memory) and
 *             keep what its backward needs;
 *   backward  ACCUMULATE lambda * grad_theta R of the last value call into
 *             the model's parameter gradients.
 *
 * and regularizer.c runs  value -> [observe if lag 0] -> backward(lambda)
 * -> [observe if lag 1].
 */
#ifndef ELLE_REGULARIZERS_INTERNAL_H
#define ELLE_REGULARIZERS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/params.h"
#include "elle/regularizer.h"
#include "regularizers/adaptive.h"

#define ELLE__REG_NPARAMS 17 /* 1 + largest elle_regularizer_param value */

typedef struct elle__regularizer_ops {
    const char *name; /* elle_regularizer_kind_name */
    /* Parameters this kind has, with bounds and defaults. */
    const elle__param_spec *params;
    size_t n_params;
    /* Kind-specific check of a value that passed the table (e.g. POINTS = 4);
     * NULL when the table says everything. */
    int (*check_param)(const elle_regularizer *r, int param, double value);
    /* Release whatever value() allocated (optional). */
    void (*release)(elle_regularizer *r);
    /* Prepare the model when the regularizer is created (optional): the
     * second-order kinds ask for the tangent buffers here
     * (elle__model_set_second_order). A failure fails the create. */
    int (*attach)(elle_regularizer *r);
    /* Samples in one forward for a batch of n (what the model must be
     * reserved for). */
    int64_t (*forward_samples)(const elle_regularizer *r, int64_t n);
    /* Whether apply reads x_adv with the current parameters. */
    int (*needs_adv)(const elle_regularizer *r);
    /* Forward part. x, x_adv: (n, C, H, W) and y: n labels, backend memory
     * (x_adv NULL unless needs_adv). Writes R to *value (not checked for
     * finiteness here) and advances r->counter by the Philox blocks drawn. */
    int (*value)(elle_regularizer *r, const float *x, const int32_t *y, const float *x_adv,
                 int64_t n, double *value);
    /* Accumulate lambda * grad_theta R of the last value() (lambda != 0). */
    int (*backward)(elle_regularizer *r, double lambda);
} elle__regularizer_ops;

struct elle_regularizer {
    elle_model *model;
    const elle__regularizer_ops *ops;
    int kind;
    double p[ELLE__REG_NPARAMS]; /* parameter values by elle_regularizer_param id */
    elle__adaptive adapt;        /* ELLE-A; its parameters mirror p[] */
    uint64_t counter;            /* Philox counter of the next draw */
    double last_value;           /* last observed value */
    double last_lambda;          /* lambda of the last apply's backward */

    /* host-entry staging (backend memory), grown to the largest n seen */
    float *stage_x, *stage_adv;
    int32_t *stage_y;
    int64_t stage_n;

    void *impl; /* kind-specific state (elle.c: host scratch for losses and coefficients) */
};

/* Kinds, indexed by elle_regularizer_kind in regularizer.c. */
extern const elle__regularizer_ops elle__reg_elle_ops;
extern const elle__regularizer_ops elle__reg_gradalign_ops;
extern const elle__regularizer_ops elle__reg_llr_ops;
extern const elle__regularizer_ops elle__reg_cure_ops;
extern const elle__regularizer_ops elle__reg_gat_ops;

/* Philox key of a regularizer's stream: the seed (< 2^53) with a tag for
 * the kind in the top 11 bits, so that an attack and a regularizer given
 * the same seed draw different numbers (docs/regularizers.md). */
uint64_t elle__regularizer_stream_key(const elle_regularizer *r);

/* Device-memory entry for the trainer: elle_regularizer_apply with x, y and
 * x_adv already in the model's backend memory (x_adv may be NULL unless
 * REUSE_ADV). Inputs are trusted (finite pixels, labels in range: they
 * passed the public boundary); they must not lie inside the model's input
 * buffer, which the points are written into (ELLE_EINVAL). Same semantics
 * and errors as the host entry otherwise. */
int elle__regularizer_apply_dev(elle_regularizer *r, const float *x, const int32_t *y,
                                const float *x_adv, int64_t n, double *value_out);

/* Samples in the regularizer's forward for a batch of n (ELLE: points * n),
 * what the model must be reserved for. */
int64_t elle__regularizer_forward_samples(const elle_regularizer *r, int64_t n);

/* ---- ELLE's two halves (elle.c), exposed so tests can drive the estimator
 * with a loss of known shape (linear: E = 0; quadratic: closed form) ---- */

/* Write the points of one ELLE step for the batch x (x_adv for ELLE-2p) into
 * the model's input buffer, (points * n, C, H, W) plain, in the order
 * [x_a; x_b; x_c] or [x_a; x_b; x_c; x_d; x_e], and the per-sample alpha of
 * the 3-point stencil into the scratch elle__elle_alpha returns. *counter_out
 * receives the Philox counter after the draws (r->counter is unchanged). */
int elle__elle_points(elle_regularizer *r, const float *x, const float *x_adv, int64_t n,
                      uint64_t *counter_out);
const float *elle__elle_alpha(const elle_regularizer *r);

/* E from per-sample losses loss[k * n + i] at point k of sample i:
 * e_i = sum_k w_{k,i} l_{k,i}, *value = (1/n) sum_i phi(e_i), and
 * dr[k * n + i] = dE/dl_{k,i} (dr may be NULL). */
void elle__elle_estimate(int points, int error, const float *alpha, const double *loss,
                         int64_t n, double *value, double *dr);

/* ---- shared by the input-gradient kinds (gradalign.c, llr.c, cure.c, gat.c) ---- */

/* A scratch buffer grown on demand, in backend memory (dev = 1) or on the
 * host (dev = 0); no allocation once it has reached the largest batch. */
typedef struct elle__reg_buf {
    void *p;
    size_t bytes;
    int dev;
} elle__reg_buf;

/* Make b hold at least `bytes` (its contents are lost when it grows). */
int elle__reg_buf_grow(elle_regularizer *r, elle__reg_buf *b, size_t bytes);
void elle__reg_buf_release(elle_regularizer *r, elle__reg_buf *b);

/* attach() of the second-order kinds: reserve the model's tangent buffers. */
int elle__reg_attach_second_order(elle_regularizer *r);

/* Forward of n images x (backend memory; may be the model's input buffer)
 * with labels y in the model's current mode, then the input-gradient-only
 * backward of O = coef * sum_i loss_i (coef = 1/n: the batch mean, as the
 * reference's autograd.grad of CE_mean). dx (n images, may be NULL)
 * receives grad_x O; loss_host (n floats on the host, may be NULL) the
 * per-sample losses. The forward and backward stay the model's last, so
 * elle__model_tangent_dev can follow. ELLE_ENUMERIC for a non-finite loss. */
int elle__reg_input_grad(elle_regularizer *r, const float *x, const int32_t *y, int64_t n,
                         float coef, float *dx, float *loss_host);

/* Copy `count` floats from backend memory src into the host buffer `host`
 * (grown as needed). The per-sample reductions of the second-order kinds
 * (dot products, norms) run on the host in double: the backend table has no
 * batched reduction, and at n * C * H * W floats the copy is small next to
 * the forward and backward passes. */
int elle__reg_host_copy(elle_regularizer *r, elle__reg_buf *host, const float *src,
                        int64_t count);

/* The model's running statistics (batch-norm running means and variances,
 * num_batches_tracked), saved before a forward that recomputes an earlier
 * one — the tangent pass and the backward need the model's LAST forward,
 * and a kind whose gradient needs two forwards runs one of them twice — and
 * restored after it, so the running statistics move exactly once per
 * distinct forward, as in the reference. */
typedef struct elle__reg_stats {
    elle__reg_buf buffers;  /* backend copy of the buffer arena */
    elle__reg_buf counters; /* host: one int64 per state entry */
} elle__reg_stats;

int elle__reg_stats_save(elle_regularizer *r, elle__reg_stats *st);
int elle__reg_stats_restore(elle_regularizer *r, elle__reg_stats *st);
void elle__reg_stats_release(elle_regularizer *r, elle__reg_stats *st);

#endif /* ELLE_REGULARIZERS_INTERNAL_H */
