/*
 * libelle — adversarial attacks in the L-inf ball: FGSM, RS-FGSM, N-FGSM and
 * PGD (training PGD-k and evaluation PGD-K-R), and robust accuracy over a
 * dataset.
 *
 *     elle_attack *a;
 *     elle_attack_create(&a, model, ELLE_ATTACK_PGD);
 *     elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, 8.0 / 255);
 *     elle_attack_set_param(a, ELLE_ATTACK_PARAM_STEPS, 50);
 *     elle_attack_set_param(a, ELLE_ATTACK_PARAM_RESTARTS, 10);
 *     elle_attack_set_param(a, ELLE_ATTACK_PARAM_CLAMP_IMAGE, 1);
 *     elle_model_set_training(model, 0);
 *     elle_attack_evaluate(a, test, 0, 512, &clean, &robust, &total);
 *     elle_attack_free(a);
 *
 * Every attack ascends the batch-mean cross-entropy CE_mean = (1/n) sum_i
 * CE(f(x_i), y_i) by signed-gradient steps, starting at x (FGSM) or at x
 * plus uniform noise. docs/attacks.md gives each definition exactly, the
 * defaults, and where they follow or depart from the reference code.
 *
 * The model is used in whatever mode it is in: in training mode (the
 * reference's training attacks) every forward of the attack uses batch
 * statistics and updates the BatchNorm running statistics; in eval mode the
 * model is not modified. The attack never touches the parameter gradients.
 *
 * Images are float NCHW arrays (n, C, H, W) in [0, 1] of the model's input
 * shape; labels int32 in [0, classes). The attack's random numbers come from
 * the Philox4x32-10 stream (seed, counter): the counter advances with every
 * draw and can be saved and restored (elle_attack_get_rng_counter), so a resumed
 * run continues the same stream on every backend.
 *
 * Lifetime: the model must outlive the attack. The attack allocates its
 * buffers on first use, sized for the model's reserved batch
 * (elle_model_reserve); later calls allocate nothing unless the model was
 * re-reserved with a larger batch. One thread per attack (and per model).
 */
#ifndef ELLE_ATTACK_H
#define ELLE_ATTACK_H

#include "common.h"
#include "dataset.h"
#include "model.h"

ELLE_BEGIN_DECL

typedef struct elle_attack elle_attack;

/** Attack algorithms (stable values; appended only). @since v0.1 */
typedef enum elle_attack_kind {
    ELLE_ATTACK_FGSM = 0,    /**< "fgsm": x + alpha*sign(grad at x); alpha = eps */
    ELLE_ATTACK_RS_FGSM = 1, /**< "rs-fgsm" (Fast AT): start x + U[-eps, eps], one step of
                                  alpha = 1.25 eps, projected onto the eps-ball */
    ELLE_ATTACK_N_FGSM = 2,  /**< "n-fgsm": start x + U[-k eps, k eps] (k = 2), one step of
                                  alpha = eps, no projection */
    ELLE_ATTACK_PGD = 3      /**< "pgd": start x + U[-eps, eps], `steps` steps of alpha
                                  (eps/4) projected onto the eps-ball, `restarts` restarts */
} elle_attack_kind;

/**
 * Attack parameters (stable values; appended only). Set with
 * elle_attack_set_param; values stay set. Defaults marked "kind" depend on
 * the kind the attack was created with (docs/attacks.md has the table).
 * @since v0.1
 */
typedef enum elle_attack_param {
    ELLE_ATTACK_PARAM_EPS = 1,          /**< "eps": L-inf radius in pixel units [0, 1],
                                             0 .. 1 (8/255) */
    ELLE_ATTACK_PARAM_ALPHA = 2,        /**< "alpha": step size, 0 .. 1; 0 = the kind's
                                             default relative to eps (fgsm, n-fgsm: eps;
                                             rs-fgsm: 1.25 eps; pgd: eps/4) (0) */
    ELLE_ATTACK_PARAM_STEPS = 3,        /**< "steps": pgd iterations, 1 .. 100000 (10);
                                             the FGSM kinds always take one step */
    ELLE_ATTACK_PARAM_RESTARTS = 4,     /**< "restarts": pgd restarts, 1 .. 10000 (1); per
                                             sample the restart ending at the highest loss
                                             is kept */
    ELLE_ATTACK_PARAM_NOISE_MULT = 5,   /**< "noise_mult": the random start is
                                             x + U[-k eps, k eps], k = this, 0 .. 64
                                             (kind: n-fgsm 2, others 1) */
    ELLE_ATTACK_PARAM_RANDOM_START = 6, /**< "random_start": 0 = start at x, 1 = uniform
                                             noise start (kind: fgsm 0, others 1) */
    ELLE_ATTACK_PARAM_PROJECT = 7,      /**< "project": 1 = project every point onto the
                                             eps-ball around x (kind: rs-fgsm and pgd 1,
                                             fgsm and n-fgsm 0) */
    ELLE_ATTACK_PARAM_CLAMP_IMAGE = 8,  /**< "clamp_image": 1 = clamp every perturbed point
                                             to [0, 1]; 0 or 1 (0, as the reference CIFAR
                                             training code; set 1 for evaluation) */
    ELLE_ATTACK_PARAM_EARLY_STOP = 9,   /**< "early_stop": pgd only; 1 = a sample stops
                                             once an iterate misclassifies it, and that
                                             iterate is kept over any later restart; 0 or 1
                                             (0) */
    ELLE_ATTACK_PARAM_SEED = 10         /**< "seed": key of the noise stream,
                                             0 .. 2^53-1 (0); setting it resets the counter
                                             to 0 */
} elle_attack_param;

/**
 * Create an attack of `kind` on `model` with the kind's default parameters.
 * The model is borrowed and must outlive the attack. ELLE_EINVAL for NULL
 * arguments or an unknown kind. `*out` is set only on success. @since v0.1
 */
ELLE_API int elle_attack_create(elle_attack **out, elle_model *model, elle_attack_kind kind);

/** Free an attack and its buffers (NULL accepted). @since v0.1 */
ELLE_API void elle_attack_free(elle_attack *a);

/** The kind of an attack (an elle_attack_kind), -1 when a is NULL. @since v0.1 */
ELLE_API int elle_attack_get_kind(const elle_attack *a);

/**
 * The model the attack was created on (borrowed), NULL when a is NULL. The
 * trainer uses it to refuse an attack made for another model. @since v0.1
 */
ELLE_API elle_model *elle_attack_get_model(const elle_attack *a);

/**
 * Set a parameter. ELLE_EINVAL (the message names the parameter, the value
 * and the bounds) for an unknown parameter, NaN, a value outside
 * elle_attack_param_bounds or a non-integer value of an integer parameter;
 * the attack is unchanged on failure. @since v0.1
 */
ELLE_API int elle_attack_set_param(elle_attack *a, elle_attack_param param, double value);

/** Read a parameter into *out (ALPHA reads 0 while it is the kind's default). @since v0.1 */
ELLE_API int elle_attack_get_param(const elle_attack *a, elle_attack_param param, double *out);

/** Inclusive bounds of a parameter. ELLE_EINVAL for an unknown parameter. @since v0.1 */
ELLE_API int elle_attack_param_bounds(elle_attack_param param, double *lo, double *hi);

/**
 * Parameter by name: "eps", "alpha", "steps", "restarts", "noise_mult",
 * "random_start", "project", "clamp_image", "early_stop", "seed".
 * ELLE_EINVAL if unknown. @since v0.1
 */
ELLE_API int elle_attack_param_from_name(const char *name, elle_attack_param *out);

/** Static name of a parameter, NULL if unknown. @since v0.1 */
ELLE_API const char *elle_attack_param_name(elle_attack_param param);

/** Static name of a kind ("fgsm", "rs-fgsm", "n-fgsm", "pgd"), NULL if unknown. @since v0.1 */
ELLE_API const char *elle_attack_kind_name(elle_attack_kind kind);

/**
 * Kind by name: "fgsm", "rs-fgsm", "n-fgsm", "pgd" (the underscore
 * spellings "rs_fgsm", "n_fgsm" are accepted too). ELLE_EINVAL if unknown.
 * @since v0.1
 */
ELLE_API int elle_attack_kind_from_name(const char *name, elle_attack_kind *out);

/**
 * The counter of the attack's noise stream: the next draw uses Philox
 * blocks from this value on. Save it with a checkpoint and restore it with
 * elle_attack_set_rng_counter to continue the same stream. @since v0.1
 */
ELLE_API int elle_attack_get_rng_counter(const elle_attack *a, uint64_t *out);

/** Set the counter of the noise stream (see elle_attack_get_rng_counter). @since v0.1 */
ELLE_API int elle_attack_set_rng_counter(elle_attack *a, uint64_t counter);

/**
 * Adversarial examples for n images. x: (n, C, H, W); y: n labels;
 * x_adv_out: (n, C, H, W), may be the same array as x.
 *
 * ELLE_EINVAL for NULL pointers, n < 1, a label outside [0, classes) or a
 * non-finite pixel (the message gives the index); ELLE_ESTATE before
 * elle_model_reserve; ELLE_ESHAPE when n exceeds the reserved batch;
 * ELLE_ENUMERIC when the result holds NaN or Inf (a diverged model);
 * ELLE_ENOMEM when the first call cannot allocate the buffers. In training
 * mode the BatchNorm running statistics are updated by every forward of the
 * attack (one per step, plus one per restart when restarts > 1 or
 * early_stop is on). @since v0.1
 */
ELLE_API int elle_attack_perturb(elle_attack *a, const float *x, const int32_t *y, int64_t n,
                                 float *x_adv_out);

/**
 * Clean and robust accuracy counts on the first `n_max` samples of `d` (all
 * of them when n_max is 0 or exceeds its size), in the dataset's order,
 * without augmentation (elle_dataset_get), in batches of `batch`.
 *
 * clean_correct_out: samples the model classifies correctly at x.
 * robust_correct_out: samples classified correctly at x AND at every point
 * the attack checked: the final point of every restart and, with
 * early_stop, every iterate (so a sample found misclassified by any restart
 * is not robust, whichever restart the loss rule would keep).
 * total_out: samples evaluated. Any out pointer may be NULL. Accuracies are
 * counts over all samples, not the reference's mean of batch means.
 *
 * The model is used in its current mode: set eval mode first
 * (elle_model_set_training(model, 0)) for the standard evaluation; in
 * training mode the running statistics change. Set CLAMP_IMAGE to 1 for the
 * reference's PGD evaluation. The noise counter advances as for
 * elle_attack_perturb.
 *
 * ELLE_EINVAL for NULL a or d, n_max < 0, batch < 1, or a dataset label
 * outside the model's classes; ELLE_ESHAPE when the dataset's image shape
 * differs from the model's input or batch exceeds the reserved batch;
 * ELLE_ESTATE before elle_model_reserve; ELLE_ENUMERIC for non-finite
 * logits. @since v0.1
 */
ELLE_API int elle_attack_evaluate(elle_attack *a, const elle_dataset *d, int64_t n_max,
                                  int64_t batch, int64_t *clean_correct_out,
                                  int64_t *robust_correct_out, int64_t *total_out);

/** Bytes of memory the attack holds (its buffers; 0 before first use). @since v0.1 */
ELLE_API size_t elle_attack_memory_size(const elle_attack *a);

ELLE_END_DECL

#endif /* ELLE_ATTACK_H */
