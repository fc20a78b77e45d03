/*
 * libelle — adversarial attacks in the L-inf ball: FGSM, RS-FGSM, N-FGSM,
 * PGD (training PGD-k and evaluation PGD-K-R), GAT's guided attack,
 * AutoAttack (APGD-CE, APGD-DLR, APGD-T, FAB-T, Square and the standard and
 * 'rand' pipelines), and robust accuracy over a dataset.
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
 * The FGSM and PGD kinds ascend the batch-mean cross-entropy CE_mean = (1/n)
 * sum_i CE(f(x_i), y_i) by signed-gradient steps, starting at x (FGSM) or at
 * x plus uniform noise; GAT's guided attack adds to it the distance between
 * the softmax outputs at x and at the point. The AutoAttack kinds follow the AutoAttack reference
 * code (fra31/auto-attack, the commit RobustBench pins), including its
 * random-number stream: with SEED = S they draw the numbers
 * torch.manual_seed(S) would. docs/attacks.md gives each definition exactly,
 * the defaults, and where they follow or depart from the reference code.
 *
 *     elle_attack_create(&a, model, ELLE_ATTACK_AUTOATTACK);
 *     elle_attack_set_param(a, ELLE_ATTACK_PARAM_EPS, 8.0 / 255);
 *     elle_attack_evaluate(a, test, 1000, 250, &clean, &robust, &total);
 *     for (int s = 0; s < elle_attack_num_stages(a); s++)
 *         elle_attack_stage_result(a, s, &name, &robust_after, &seconds);
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
    ELLE_ATTACK_PGD = 3,     /**< "pgd": start x + U[-eps, eps], `steps` steps of alpha
                                  (eps/4) projected onto the eps-ball, `restarts` restarts */
    ELLE_ATTACK_APGD_CE = 4, /**< "apgd-ce": APGD on the cross-entropy, `steps` (100)
                                  iterations, `restarts` (1) */
    ELLE_ATTACK_APGD_DLR = 5, /**< "apgd-dlr": APGD on the untargeted DLR loss (>= 3
                                   classes) */
    ELLE_ATTACK_APGD_T = 6,  /**< "apgd-t": APGD on the targeted DLR loss, targets the
                                  classes of clean-logit ranks 2 .. n_target_classes+1
                                  (>= 4 classes) */
    ELLE_ATTACK_FAB_T = 7,   /**< "fab-t": targeted FAB (minimum-norm), `steps` (100)
                                  iterations per target, no random start */
    ELLE_ATTACK_SQUARE = 8,  /**< "square": Square Attack (score-based), `n_queries`
                                  (5000) queries, margin loss */
    ELLE_ATTACK_AUTOATTACK = 9, /**< "autoattack": `version` standard (apgd-ce, apgd-t,
                                     fab-t, square) or rand (apgd-ce, apgd-dlr with
                                     eot_iter 20), each on the points still robust */
    ELLE_ATTACK_GAT = 10     /**< "gat": GAT's guided attack (a training attack): start
                                  x + eps s, s = +-1 per element, one step of alpha (eps)
                                  on CE_mean + gat_weight * mean_i ||P_i - softmax(f)_i||^2,
                                  P = softmax(f(x)) a constant; projected onto the eps-ball
                                  and clamped to [0, 1] */
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
                                             x + U[-k eps, k eps] (gat: x + k eps s,
                                             s = +-1), k = this, 0 .. 64 (kind: n-fgsm 2,
                                             others 1) */
    ELLE_ATTACK_PARAM_RANDOM_START = 6, /**< "random_start": 0 = start at x, 1 = noise
                                             start (kind: fgsm 0, others 1) */
    ELLE_ATTACK_PARAM_PROJECT = 7,      /**< "project": 1 = project every point onto the
                                             eps-ball around x (kind: rs-fgsm, pgd and gat
                                             1, fgsm and n-fgsm 0) */
    ELLE_ATTACK_PARAM_CLAMP_IMAGE = 8,  /**< "clamp_image": 1 = clamp every perturbed point
                                             to [0, 1]; 0 or 1 (kind: gat 1, as its
                                             reference; others 0, as the reference CIFAR
                                             training code; set 1 for evaluation) */
    ELLE_ATTACK_PARAM_EARLY_STOP = 9,   /**< "early_stop": pgd only; 1 = a sample stops
                                             once an iterate misclassifies it, and that
                                             iterate is kept over any later restart; 0 or 1
                                             (0) */
    ELLE_ATTACK_PARAM_SEED = 10,        /**< "seed": key of the noise stream,
                                             0 .. 2^53-1 (0); setting it resets the counter
                                             to 0. AutoAttack kinds: the torch seed S
                                             (MT19937 seeded with S mod 2^32 per attack
                                             and chunk, as `adversary.seed = S`) */
    ELLE_ATTACK_PARAM_N_TARGET_CLASSES = 11, /**< "n_target_classes": apgd-t and fab-t
                                                  targets, 1 .. 100000 (9); at most
                                                  classes - 1 are used */
    ELLE_ATTACK_PARAM_N_QUERIES = 12,   /**< "n_queries": square queries, 1 .. 10^7
                                             (5000) */
    ELLE_ATTACK_PARAM_EOT_ITER = 13,    /**< "eot_iter": APGD gradients averaged per
                                             iterate (expectation over transformation),
                                             0 .. 1000; 0 = the version's default: 20 for
                                             autoattack version rand, 1 otherwise (0) */
    ELLE_ATTACK_PARAM_VERSION = 14,     /**< "version": autoattack only; 0 = standard,
                                             1 = rand (0) */
    ELLE_ATTACK_PARAM_GAT_WEIGHT = 15   /**< "gat_weight": gat only; weight of the
                                             output-distance term in the guided cost,
                                             0 .. 1e6 (10, the reference's) */
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
 * "random_start", "project", "clamp_image", "early_stop", "seed",
 * "n_target_classes", "n_queries", "eot_iter", "version", "gat_weight".
 * ELLE_EINVAL if unknown. @since v0.1
 */
ELLE_API int elle_attack_param_from_name(const char *name, elle_attack_param *out);

/** Static name of a parameter, NULL if unknown. @since v0.1 */
ELLE_API const char *elle_attack_param_name(elle_attack_param param);

/**
 * Static name of a kind ("fgsm", "rs-fgsm", "n-fgsm", "pgd", "apgd-ce",
 * "apgd-dlr", "apgd-t", "fab-t", "square", "autoattack", "gat"), NULL if
 * unknown.
 * @since v0.1
 */
ELLE_API const char *elle_attack_kind_name(elle_attack_kind kind);

/**
 * Kind by name: the names of elle_attack_kind_name (the underscore
 * spellings "rs_fgsm", "apgd_ce", ... are accepted too). ELLE_EINVAL if
 * unknown. @since v0.1
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
 * early_stop is on).
 *
 * AutoAttack kinds: the reference's perturb(x, y) on these n points (one
 * chunk; autoattack runs its attacks in order on the points still robust);
 * x_adv_out holds, per sample, the adversarial point found (inside the
 * eps-ball and [0, 1]) or x. They also need x in [0, 1] (ELLE_EINVAL), are
 * host-side loops around the model's forward and backward (the model is
 * used in its current mode; use eval mode), and return ELLE_EUNSUPPORTED
 * for apgd-dlr with fewer than 3 classes and apgd-t (and autoattack's
 * standard version) with fewer than 4. @since v0.1
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
 * logits.
 *
 * AutoAttack kinds: the reference's run_standard_evaluation over the first
 * n_max samples with bs = batch: a clean pass, then each attack (one for
 * the single-attack kinds) on the still-robust samples, in index order, in
 * chunks of `batch` (batches span the whole set, not one batch at a time),
 * each chunk judged by a fresh forward. robust_correct_out is the count
 * after the last attack; elle_attack_stage_result gives it after each.
 * Their errors are elle_attack_perturb's, plus ELLE_ERROR if an attack
 * returned a misclassified point outside the eps-ball (an internal bug;
 * never counted). @since v0.1
 */
ELLE_API int elle_attack_evaluate(elle_attack *a, const elle_dataset *d, int64_t n_max,
                                  int64_t batch, int64_t *clean_correct_out,
                                  int64_t *robust_correct_out, int64_t *total_out);

/** Bytes of memory the attack holds (its buffers; 0 before first use). @since v0.1 */
ELLE_API size_t elle_attack_memory_size(const elle_attack *a);

/**
 * Number of stages of the last successful elle_attack_evaluate: the
 * attacks autoattack ran in order (4 for the standard version, 2 for rand),
 * 1 for every other kind, 0 before any evaluate. ELLE_EINVAL (negative)
 * when a is NULL. @since v0.1
 */
ELLE_API int elle_attack_num_stages(const elle_attack *a);

/**
 * Result of stage `stage` (0 .. elle_attack_num_stages - 1) of the last
 * successful elle_attack_evaluate: the attack's static name ("apgd-ce",
 * "apgd-t", "fab-t", "square", "apgd-dlr", or the kind's name), the robust
 * count after it (samples correct at x and not broken by this or an
 * earlier stage; non-increasing over the stages) and its wall time in
 * seconds (0 for a stage that had no robust sample left to attack). Any out
 * pointer may be NULL. ELLE_EINVAL for NULL a or a stage out of range.
 * @since v0.1
 */
ELLE_API int elle_attack_stage_result(const elle_attack *a, int stage, const char **name,
                                      int64_t *robust_correct, double *seconds);

ELLE_END_DECL

#endif /* ELLE_ATTACK_H */
