/*
 * libelle — regularizers: terms added to the adversarial training loss,
 * with their parameter gradients, and the adaptive regularization strength
 * of ELLE-A.
 *
 * A regularizer is bound to a model. Each training step the caller (the
 * trainer, or a hand-written loop) computes its training loss and gradient
 * and then calls elle_regularizer_apply, which evaluates the regularizer R
 * on the batch, ACCUMULATES lambda * grad_theta R into the model's
 * parameter gradients, and returns R; then the caller takes its optimizer
 * step:
 *
 *     elle_regularizer *reg;  double e_lin;
 *     elle_regularizer_create(&reg, model, ELLE_REGULARIZER_ELLE);
 *     elle_regularizer_set_param(reg, ELLE_REGULARIZER_PARAM_EPS, 8.0 / 255);
 *     elle_regularizer_set_param(reg, ELLE_REGULARIZER_PARAM_ADAPTIVE, 1);   (ELLE-A)
 *     elle_model_reserve(model, 3 * 128);          (ELLE forwards 3B samples at once)
 *     for each batch (x, y) of 128:
 *         elle_model_zero_grad(model);
 *         ... x_adv = attack(x); elle_model_backward(model, x_adv, y, 128, NULL, NULL);
 *         elle_regularizer_apply(reg, x, y, x_adv, 128, &e_lin);
 *         elle_optimizer_step(opt);
 *
 * ELLE (Rocamora et al., ICLR 2024, Algorithm 1), per batch of B images:
 *
 *     x_a = x + eps * U[-1,1],  x_b = x + eps * U[-1,1]   (independent, per element)
 *     alpha_i ~ U[0,1) per sample,  x_c = (1 - alpha_i) x_a + alpha_i x_b
 *     e_i = l_i(x_c) - (1 - alpha_i) l_i(x_a) - alpha_i l_i(x_b)
 *     E_lin = (1/B) sum_i e_i^2
 *
 * with l_i the per-sample cross-entropy, from ONE forward of the
 * concatenation [x_a; x_b; x_c] (3B samples) in the model's current mode
 * (training mode: batch-norm statistics over all 3B, running statistics
 * updated once), and one backward of lambda * E_lin through the three losses
 * (no input gradients). The model must therefore be reserved for 3B
 * samples (5B with ELLE_REGULARIZER_PARAM_POINTS = 5). docs/regularizers.md
 * gives the variants, the gradient coefficients, the random-number stream
 * and the ELLE-A rule in full.
 *
 * ELLE-A (ELLE_REGULARIZER_PARAM_ADAPTIVE = 1): every apply appends its value
 * E_t to a history; if the history already holds more than 2 values and
 * E_t > mean + sensitivity * std (population std over the last `window`
 * values, all when 0), lambda <- lambda_max, else lambda <- decay * lambda.
 * With ELLE_REGULARIZER_PARAM_LAMBDA_LAG = 1 (default, the released code)
 * this update happens after the step's backward, so the new lambda weights
 * the next step's gradient; with 0 it happens before (the paper's
 * Algorithm 1).
 *
 * Lifetime: a regularizer must be freed before its model. One thread per
 * handle.
 */
#ifndef ELLE_REGULARIZER_H
#define ELLE_REGULARIZER_H

#include "common.h"
#include "model.h"

ELLE_BEGIN_DECL

typedef struct elle_regularizer elle_regularizer;

/** Regularizers (stable values; appended only). @since v0.1 */
typedef enum elle_regularizer_kind {
    ELLE_REGULARIZER_ELLE = 0,      /**< "elle": local, linear approximation error E_lin
                                         (ELLE; ELLE-A with ELLE_REGULARIZER_PARAM_ADAPTIVE) */
    ELLE_REGULARIZER_GRADALIGN = 1, /**< "gradalign": mean_i (1 - cos(g1_i, g2_i)) of the
                                         input gradients at x and at x + U[-eps, eps]
                                         (Andriushchenko & Flammarion 2020; the ELLE repo's
                                         version by default) @since v0.1 */
    ELLE_REGULARIZER_LLR = 2,       /**< "llr": local linearity (Qin et al. 2019), the ELLE
                                         paper's simplified form: (1/B) sum_i (l_i(x3) -
                                         l_i(x2) - <x3 - x2, g_i>)^2, g at x2 @since v0.1 */
    ELLE_REGULARIZER_CURE = 3,      /**< "cure": curvature (Moosavi-Dezfooli et al. 2019) as
                                         the ELLE repo: (1/B) sum_i ||g(x)_i - g(x_adv)_i||^2
                                         @since v0.1 */
    ELLE_REGULARIZER_GAT = 4        /**< "gat": guided adversarial training's
                                         (Sriramanan et al. 2020) output-distance term
                                         mean_i ||softmax f(x)_i - softmax f(x_adv)_i||^2 at
                                         the caller's x_adv (docs/regularizers.md) @since v0.1 */
} elle_regularizer_kind;

/**
 * Error functions for ELLE_REGULARIZER_PARAM_ERROR: the per-sample penalty
 * phi(e_i) averaged over the batch (stable values). @since v0.1
 */
typedef enum elle_regularizer_error_kind {
    ELLE_REGULARIZER_ERROR_SQUARED = 0,   /**< e^2: MSELoss, the CIFAR/SVHN code and the paper */
    ELLE_REGULARIZER_ERROR_SMOOTH_L1 = 1, /**< 0.5 e^2 if |e| < 1 else |e| - 0.5: PyTorch's
                                               smooth_l1_loss (beta 1, mean), the ImageNet code */
    ELLE_REGULARIZER_ERROR_ABS = 2        /**< |e|: the paper's Eq. (6) for ELLE-2p */
} elle_regularizer_error_kind;

/**
 * Regularizer parameters (stable values; appended only). Defaults in
 * parentheses are ELLE's; they follow the released CIFAR-10 code at
 * eps = 8/255 (each kind's table is in docs/regularizers.md; a kind has
 * only the parameters that mean something for it). Parameters stay set for
 * every later apply.
 * @since v0.1
 */
typedef enum elle_regularizer_param {
    ELLE_REGULARIZER_PARAM_LAMBDA = 1,       /**< "lambda": constant strength when not adaptive,
                                                  0 .. 1e12 (1000; see
                                                  elle_regularizer_default_lambda) */
    ELLE_REGULARIZER_PARAM_EPS = 2,          /**< "eps": radius of the L-inf ball the points are
                                                  drawn from, in [0, 1] pixel units, 0 .. 1
                                                  (8/255) */
    ELLE_REGULARIZER_PARAM_ADAPTIVE = 3,     /**< "adaptive": 1 = ELLE-A adaptive lambda, 0 or 1
                                                  (0) */
    ELLE_REGULARIZER_PARAM_LAMBDA_MAX = 4,   /**< "lambda_max": ELLE-A: lambda after a
                                                  detection, 0 .. 1e12 (4000) */
    ELLE_REGULARIZER_PARAM_DECAY = 5,        /**< "decay": ELLE-A: lambda factor per step
                                                  without detection (gamma), 0 .. 1 (0.99) */
    ELLE_REGULARIZER_PARAM_SENSITIVITY = 6,  /**< "sensitivity": ELLE-A: k in mean + k * std,
                                                  0 .. 1e6 (2) */
    ELLE_REGULARIZER_PARAM_WINDOW = 7,       /**< "window": ELLE-A: statistics over the last
                                                  `window` values, 0 = the whole history,
                                                  0 .. 2^31-1 (0; the ImageNet code: 500) */
    ELLE_REGULARIZER_PARAM_LAMBDA_START = 8, /**< "lambda_start": ELLE-A: lambda before the
                                                  first update, 0 .. 1e12 (0; the ImageNet
                                                  eps = 16/255 run: lambda_max) */
    ELLE_REGULARIZER_PARAM_POINTS = 9,       /**< "points": 3 = Definition 1 (x_a, x_b, x_c),
                                                  5 = Definition 3, the five-point stencil;
                                                  3 or 5 (3) */
    ELLE_REGULARIZER_PARAM_REUSE_ADV = 10,   /**< "reuse_adv": 1 = ELLE-2p (paper Appx. B.11):
                                                  x_b := x_adv, the caller's adversarial
                                                  batch; 0 or 1 (0) */
    ELLE_REGULARIZER_PARAM_ERROR = 11,       /**< "error": an elle_regularizer_error_kind,
                                                  0 .. 2 (0, squared) */
    ELLE_REGULARIZER_PARAM_SEED = 12,        /**< "seed": Philox key of the random points,
                                                  0 .. 2^53-1 (0); setting it resets the
                                                  counter to 0 */
    ELLE_REGULARIZER_PARAM_CLAMP_IMAGE = 13, /**< "clamp_image": 1 = clamp x_a and x_b to
                                                  [0, 1] before x_c is formed (the ImageNet
                                                  code); 0 or 1 (0, the CIFAR code) */
    ELLE_REGULARIZER_PARAM_LAMBDA_LAG = 14,  /**< "lambda_lag": ELLE-A: 1 = a step's value
                                                  updates lambda after its backward, so it
                                                  weights the next step (the CIFAR code);
                                                  0 = before (Algorithm 1, the ImageNet code);
                                                  0 or 1 (1) */
    ELLE_REGULARIZER_PARAM_VARIANT = 15,     /**< "variant": GradAlign: 0 = the ELLE repo's
                                                  (g1 at x, cosine with a 1e-8 floor on
                                                  ||g1|| ||g2||), 1 = the original (g1 at
                                                  clamp(x, 0, 1), samples with a zero gradient
                                                  dropped, no floor); 0 or 1 (0) @since v0.1 */
    ELLE_REGULARIZER_PARAM_PER_SAMPLE = 16   /**< "per_sample": LLR, CURE: 1 = input gradients
                                                  of the summed loss (per-sample gradients
                                                  grad l_i), 0 = of the batch mean, which
                                                  carries a 1/B factor (the reference); 0 or 1
                                                  (0) @since v0.1 */
} elle_regularizer_param;

/**
 * Read-only statistics for metrics and logs (stable values; appended only).
 * @since v0.1
 */
typedef enum elle_regularizer_stat {
    ELLE_REGULARIZER_STAT_LAMBDA = 1,       /**< "lambda": the current lambda: the constant
                                                 lambda, or ELLE-A's after the last update
                                                 (lambda_start before the first) */
    ELLE_REGULARIZER_STAT_APPLIED_LAMBDA = 2, /**< "applied_lambda": the lambda the last apply
                                                 weighted its gradient with (0 before) */
    ELLE_REGULARIZER_STAT_VALUE = 3,        /**< "value": the last observed value (E_lin of
                                                 the last apply; 0 before) */
    ELLE_REGULARIZER_STAT_DETECTIONS = 4,   /**< "detections": values that exceeded
                                                 mean + sensitivity * std; in adaptive mode
                                                 the times lambda was reset to lambda_max */
    ELLE_REGULARIZER_STAT_COUNT = 5,        /**< "count": values in the history */
    ELLE_REGULARIZER_STAT_MEAN = 6,         /**< "mean": mean of the last `window` values
                                                 (all when 0): what the next value is tested
                                                 against (0 when empty) */
    ELLE_REGULARIZER_STAT_STD = 7           /**< "std": their population standard deviation
                                                 (0 when empty) */
} elle_regularizer_stat;

/**
 * Create a regularizer of `kind` for `model`, its parameters at the kind's
 * defaults, the ELLE-A history empty and the random stream at counter 0.
 * The model must outlive the regularizer. ELLE_EINVAL for NULL arguments
 * or an unknown kind, ELLE_ENOMEM. `*out` is set only on success.
 * @since v0.1
 */
ELLE_API int elle_regularizer_create(elle_regularizer **out, elle_model *model,
                                     elle_regularizer_kind kind);

/** Free a regularizer (NULL accepted). @since v0.1 */
ELLE_API void elle_regularizer_free(elle_regularizer *reg);

/** The kind of a regularizer (an elle_regularizer_kind), -1 when reg is NULL. @since v0.1 */
ELLE_API int elle_regularizer_get_kind(const elle_regularizer *reg);

/**
 * The model the regularizer was created on (borrowed), NULL when reg is
 * NULL. The trainer uses it to refuse a regularizer made for another model.
 * @since v0.1
 */
ELLE_API elle_model *elle_regularizer_get_model(const elle_regularizer *reg);

/** Static name of a kind ("elle"), NULL if unknown. @since v0.1 */
ELLE_API const char *elle_regularizer_kind_name(elle_regularizer_kind kind);

/** Kind by name ("elle"). ELLE_EINVAL if unknown. @since v0.1 */
ELLE_API int elle_regularizer_kind_from_name(const char *name, elle_regularizer_kind *out);

/**
 * Set a parameter. ELLE_EINVAL for NULL, a parameter the kind does not
 * have, NaN, a value outside elle_regularizer_param_bounds, a non-integer
 * count or flag, or POINTS = 4 (the message names the parameter and the
 * bounds); the regularizer is then unchanged. @since v0.1
 */
ELLE_API int elle_regularizer_set_param(elle_regularizer *reg, elle_regularizer_param param,
                                        double value);

/** Read a parameter into *out. ELLE_EINVAL for NULL or an unknown parameter. @since v0.1 */
ELLE_API int elle_regularizer_get_param(const elle_regularizer *reg,
                                        elle_regularizer_param param, double *out);

/**
 * Inclusive bounds of a parameter of `kind` (lo, hi may be NULL). ELLE_EINVAL
 * for an unknown kind or a parameter the kind does not have. @since v0.1
 */
ELLE_API int elle_regularizer_param_bounds(elle_regularizer_kind kind,
                                           elle_regularizer_param param, double *lo,
                                           double *hi);

/**
 * Parameter by name: "lambda", "eps", "adaptive", "lambda_max", "decay",
 * "sensitivity", "window", "lambda_start", "points", "reuse_adv", "error",
 * "seed", "clamp_image", "lambda_lag", "variant", "per_sample".
 * ELLE_EINVAL if unknown. @since v0.1
 */
ELLE_API int elle_regularizer_param_from_name(const char *name, elle_regularizer_param *out);

/** Static name of a parameter, NULL if unknown. @since v0.1 */
ELLE_API const char *elle_regularizer_param_name(elle_regularizer_param param);

/**
 * One regularization step on n images.
 *
 * x: (n, C, H, W) floats, the clean batch; y: n labels in [0, classes);
 * x_adv: (n, C, H, W), the batch the training loss was computed on — read
 * only with ELLE_REGULARIZER_PARAM_REUSE_ADV = 1, may be NULL otherwise.
 *
 * Computes the regularizer's value R (ELLE: E_lin, see the top of this
 * header) from one forward of points * n samples in the model's current
 * mode, writes it to *value_out (may be NULL), ACCUMULATES lambda * grad_theta
 * R into the model's parameter gradients (skipped when lambda is 0: it would
 * add zeros) and feeds R to the ELLE-A history (before the backward with
 * LAMBDA_LAG = 0, after it with 1). Then the caller steps its optimizer.
 * The forward is the last one of the model (its logits and batch buffers
 * are overwritten) and, in training mode, updates batch-norm running
 * statistics once. Advances the random stream (elle_regularizer_get_rng_counter).
 *
 * Returns ELLE_EINVAL for NULL pointers, n < 1, a non-finite pixel or a
 * label out of range; ELLE_ESTATE before elle_model_reserve; ELLE_ESHAPE
 * when points * n exceeds the model's reserved batch (the message says what
 * to reserve); ELLE_ENUMERIC when a loss or R is not finite (nothing is
 * accumulated or recorded then). @since v0.1
 */
ELLE_API int elle_regularizer_apply(elle_regularizer *reg, const float *x, const int32_t *y,
                                    const float *x_adv, int64_t n, double *value_out);

/**
 * Samples the regularizer forwards as one batch for a batch of n images
 * (ELLE: points * n): reserve the model for at least this many
 * (elle_model_reserve). -1 when reg is NULL or n < 1. @since v0.1
 */
ELLE_API int64_t elle_regularizer_batch_samples(const elle_regularizer *reg, int64_t n);

/**
 * Feed one value computed elsewhere to the history and the ELLE-A rule,
 * exactly as elle_regularizer_apply does with its own value (apply calls
 * this itself: do not observe its value again). ELLE_EINVAL for a
 * non-finite value. @since v0.1
 */
ELLE_API int elle_regularizer_observe(elle_regularizer *reg, double value);

/**
 * Empty the ELLE-A history: lambda returns to lambda_start and the
 * statistics to 0. Parameters and the random stream are kept. @since v0.1
 */
ELLE_API int elle_regularizer_reset(elle_regularizer *reg);

/** Read a statistic into *out. ELLE_EINVAL for NULL or an unknown statistic. @since v0.1 */
ELLE_API int elle_regularizer_get_stat(const elle_regularizer *reg, elle_regularizer_stat stat,
                                       double *out);

/** Static name of a statistic ("lambda", "detections", ...), NULL if unknown. @since v0.1 */
ELLE_API const char *elle_regularizer_stat_name(elle_regularizer_stat stat);

/**
 * Counter of the Philox stream the random points are drawn from (the key is
 * ELLE_REGULARIZER_PARAM_SEED). Each apply advances it by the blocks it
 * drew. @since v0.1
 */
ELLE_API int elle_regularizer_get_rng_counter(const elle_regularizer *reg, uint64_t *out);

/** Move the random stream to `counter` (a resumed run restores it). @since v0.1 */
ELLE_API int elle_regularizer_set_rng_counter(elle_regularizer *reg, uint64_t counter);

/**
 * Bytes of the serialized state (random counter, ELLE-A lambda, history and
 * statistics), or -1 when reg is NULL. It grows by 8 bytes per observed
 * value: query it right before elle_regularizer_state_get. @since v0.1
 */
ELLE_API int64_t elle_regularizer_state_size(const elle_regularizer *reg);

/**
 * Write the state to `buf` (`size` >= elle_regularizer_state_size bytes; a
 * versioned little-endian format with a magic number, docs/regularizers.md).
 * Parameters are not part of it. ELLE_EINVAL for NULL or a short buffer.
 * @since v0.1
 */
ELLE_API int elle_regularizer_state_get(const elle_regularizer *reg, void *buf, size_t size);

/**
 * Restore a state written by elle_regularizer_state_get (for checkpoints:
 * set the parameters first, then the state — setting SEED afterwards would
 * reset the counter; the next apply then draws the same points and uses the
 * same lambda as the uninterrupted run). ELLE_EFORMAT for a malformed buffer (bad magic, size,
 * kind, or a non-finite value), ELLE_EVERSION for an unknown format version;
 * the regularizer is unchanged on failure. @since v0.1
 */
ELLE_API int elle_regularizer_state_set(elle_regularizer *reg, const void *buf, size_t size);

/**
 * The reference scripts' strength for `kind` at radius eps (CIFAR-10, pixel
 * units; k = eps * 255). ELLE, adaptive = 0: lambda = 1000 for eps <= 8/255,
 * 5000 up to 20/255, 10000 above. ELLE, adaptive = 1: lambda_max = 4000 at
 * every eps. GradAlign (constant in its scripts; the same value either way):
 * 0.02 * 10^(k/8), capped at 2.0 above 16/255. LLR (adaptive in its scripts;
 * the same value either way): the ELLE repo's table, 200 up to 8/255, then
 * by k rounded up to even: 10: 500, 12: 500, 14: 1000, 16: 500, 18: 1000,
 * 20: 500, 22: 2000, 24: 5000, 26 and above: 2000. CURE (adaptive in its
 * scripts): 1000 up to 8/255, 50000 above (the scripts have 8 and 16 only).
 * GAT: 10, the weight of its term in the reference. docs/regularizers.md.
 * ELLE_EINVAL for an unknown kind, NULL out or eps outside [0, 1].
 * @since v0.1
 */
ELLE_API int elle_regularizer_default_lambda(elle_regularizer_kind kind, double eps,
                                             int adaptive, double *out);

ELLE_END_DECL

#endif /* ELLE_REGULARIZER_H */
