/*
 * libelle — optimisers and learning-rate schedules.
 *
 * elle_optimizer updates a model's parameters from its current parameter
 * gradients (elle_model_backward accumulates them). SGD follows
 * torch.optim.SGD with dampening 0, in float arithmetic:
 *
 *     g   = grad + weight_decay * theta          (coupled L2, every parameter:
 *                                                 BN gamma/beta and biases too)
 *     buf = momentum * buf + g                   (buf starts at 0, so the first
 *                                                 step gives buf = g)
 *     theta -= lr * (nesterov ? g + momentum * buf : buf)
 *
 * The momentum buffer is one allocation with the layout of the model's
 * parameters; elle_optimizer_state_get/_set copy it to and from the host
 * (for checkpoints).
 *
 * elle_schedule gives the learning rate and momentum of every optimizer step
 * of a run: "short" (PyTorch's CyclicLR, triangular, momentum cycled),
 * "long" (MultiStepLR, /10 at 50% and 75% of the epochs), "long-cos"
 * (OneCycleLR per epoch, cosine) and "constant". docs/training.md gives the
 * formulas, including the released ELLE code's two optimizer steps per
 * batch (ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH).
 *
 *     elle_optimizer *opt;  elle_schedule *s;  double lr, m;
 *     elle_optimizer_create_sgd(&opt, model);
 *     elle_schedule_create(&s, ELLE_SCHEDULE_SHORT);
 *     elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_EPOCHS, 30);
 *     elle_schedule_set_param(s, ELLE_SCHEDULE_PARAM_BATCHES_PER_EPOCH, 383);
 *     for (int64_t step = 0; step < elle_schedule_total_steps(s); step++) {
 *         ... elle_model_zero_grad(model); elle_model_backward(model, ...);
 *         elle_schedule_at(s, step, &lr, &m);
 *         elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_LR, lr);
 *         elle_optimizer_set_param(opt, ELLE_OPTIM_PARAM_MOMENTUM, m);
 *         elle_optimizer_step(opt);
 *     }
 *
 * Lifetime: an optimizer must be freed before its model. Schedules are plain
 * host objects with no parent. One thread per handle.
 */
#ifndef ELLE_OPTIM_H
#define ELLE_OPTIM_H

#include "common.h"
#include "model.h"

ELLE_BEGIN_DECL

/* ---- optimizer ------------------------------------------------------------- */

typedef struct elle_optimizer elle_optimizer;

/** Optimizer parameters (stable values; appended only). @since v0.1 */
typedef enum elle_optim_param {
    ELLE_OPTIM_PARAM_LR = 1,           /**< "lr": learning rate, 0 .. 3.4e38 (0.1) */
    ELLE_OPTIM_PARAM_MOMENTUM = 2,     /**< "momentum": 0 .. 1 (0.9) */
    ELLE_OPTIM_PARAM_WEIGHT_DECAY = 3, /**< "weight_decay": coupled L2 on every
                                            parameter, 0 .. 10 (5e-4) */
    ELLE_OPTIM_PARAM_NESTEROV = 4      /**< "nesterov": 0 or 1 (0) */
} elle_optim_param;

/**
 * Create an SGD optimizer for `model`: allocates the momentum buffer (zero)
 * with the layout of the model's parameters, in the model's backend memory.
 * Parameters start at their defaults (elle_optim_param). The model must
 * outlive the optimizer. ELLE_EINVAL for NULL arguments, ELLE_ENOMEM.
 * `*out` is set only on success. @since v0.1
 */
ELLE_API int elle_optimizer_create_sgd(elle_optimizer **out, elle_model *model);

/** Free an optimizer (NULL accepted). @since v0.1 */
ELLE_API void elle_optimizer_free(elle_optimizer *opt);

/** Algorithm name ("sgd"; static string), NULL when opt is NULL. @since v0.1 */
ELLE_API const char *elle_optimizer_name(const elle_optimizer *opt);

/**
 * Set a parameter. It stays set for every later step. ELLE_EINVAL for an
 * unknown parameter, NaN, a value outside elle_optimizer_param_bounds or a
 * non-integer NESTEROV (the message names the parameter and the bounds).
 * @since v0.1
 */
ELLE_API int elle_optimizer_set_param(elle_optimizer *opt, elle_optim_param param,
                                      double value);

/** Read a parameter into *out. ELLE_EINVAL for NULL or an unknown parameter. @since v0.1 */
ELLE_API int elle_optimizer_get_param(const elle_optimizer *opt, elle_optim_param param,
                                      double *out);

/** Inclusive bounds of a parameter (lo, hi may be NULL). @since v0.1 */
ELLE_API int elle_optimizer_param_bounds(elle_optim_param param, double *lo, double *hi);

/**
 * Parameter by name: "lr", "momentum", "weight_decay", "nesterov".
 * ELLE_EINVAL if unknown. @since v0.1
 */
ELLE_API int elle_optimizer_param_from_name(const char *name, elle_optim_param *out);

/** Static name of a parameter, NULL if unknown. @since v0.1 */
ELLE_API const char *elle_optimizer_param_name(elle_optim_param param);

/**
 * One update of every parameter of the model from its current parameter
 * gradients, with the current parameters (see the formula at the top of
 * this header). The gradients are read, never modified, so calling this
 * twice applies two updates from the same gradients (the reference's two
 * steps per batch). Does not zero the gradients. @since v0.1
 */
ELLE_API int elle_optimizer_step(elle_optimizer *opt);

/** Reset the momentum buffer to zero (as a freshly created optimizer). @since v0.1 */
ELLE_API int elle_optimizer_zero_state(elle_optimizer *opt);

/**
 * Number of floats in the optimizer state (SGD: the momentum buffer, one
 * value per trainable scalar = elle_model_num_params), or -1 when opt is
 * NULL. @since v0.1
 */
ELLE_API int64_t elle_optimizer_state_size(const elle_optimizer *opt);

/**
 * Copy the state to host memory (elle_optimizer_state_size floats). SGD:
 * the momentum buffer of each parameter entry, in the model's state order
 * (elle_model_state_info entries of kind ELLE_STATE_PARAMETER), each in its
 * PyTorch shape, packed one after the other — the order of PyTorch's
 * optimizer.state_dict()['state'][i]['momentum_buffer']. @since v0.1
 */
ELLE_API int elle_optimizer_state_get(const elle_optimizer *opt, float *host_out);

/**
 * Overwrite the state from host memory laid out as elle_optimizer_state_get
 * writes it. ELLE_EINVAL when a value is not finite (the optimizer is then
 * unchanged). @since v0.1
 */
ELLE_API int elle_optimizer_state_set(elle_optimizer *opt, const float *host_in);

/* ---- learning-rate schedules ------------------------------------------------- */

typedef struct elle_schedule elle_schedule;

/** Schedule shapes (stable values). Formulas: docs/training.md. @since v0.1 */
typedef enum elle_schedule_kind {
    ELLE_SCHEDULE_CONSTANT = 0, /**< "constant": lr_max and momentum throughout */
    ELLE_SCHEDULE_SHORT = 1,    /**< "short": triangular cyclic lr base_lr -> lr_max -> base_lr
                                     over the run, per batch, momentum cycled inversely
                                     (PyTorch CyclicLR, as the ELLE scripts) */
    ELLE_SCHEDULE_LONG = 2,     /**< "long": lr_max, x gamma at milestone_1 and milestone_2
                                     of the epochs, per epoch (PyTorch MultiStepLR) */
    ELLE_SCHEDULE_LONG_COS = 3  /**< "long-cos": one cycle, cosine, per epoch (PyTorch
                                     OneCycleLR with total_steps = epochs) */
} elle_schedule_kind;

/**
 * Schedule parameters (stable values; appended only). Defaults depend on the
 * kind (given as constant / short / long / long-cos where they differ); a
 * parameter a kind does not use is stored and ignored. @since v0.1
 */
typedef enum elle_schedule_param {
    ELLE_SCHEDULE_PARAM_LR_MAX = 1,            /**< "lr_max": peak (short, long-cos) or initial
                                                    (long, constant) lr, 0 .. 3.4e38
                                                    (0.1 / 0.2 / 0.1 / 0.1) */
    ELLE_SCHEDULE_PARAM_EPOCHS = 2,            /**< "epochs": 1 .. 1e6 (1) */
    ELLE_SCHEDULE_PARAM_BATCHES_PER_EPOCH = 3, /**< "batches_per_epoch": training batches
                                                    (iterations) per epoch, 1 .. 2^40 (1) */
    ELLE_SCHEDULE_PARAM_STEPS_PER_BATCH = 4,   /**< "steps_per_batch": optimizer steps per
                                                    batch, 1 or 2 (1; the ELLE code: 2). With 2
                                                    the schedule advances between the two steps
                                                    of a batch, never after the second: see
                                                    elle_schedule_at */
    ELLE_SCHEDULE_PARAM_UP_FRACTION = 5,       /**< "up_fraction": short: fraction of the
                                                    iterations spent rising (0.5; SVHN 0.4);
                                                    long-cos: pct_start (0.025); 0 .. 1
                                                    (short needs > 0) */
    ELLE_SCHEDULE_PARAM_BASE_LR = 6,           /**< "base_lr": short: lr at both ends of the
                                                    cycle, 0 .. 3.4e38 (0) */
    ELLE_SCHEDULE_PARAM_MOMENTUM = 7,          /**< "momentum": the momentum when not cycled;
                                                    when cycled, its value at the lr minimum
                                                    (CyclicLR/OneCycleLR max_momentum), 0 .. 1
                                                    (0.9 / 0.9 / 0.9 / 0.95) */
    ELLE_SCHEDULE_PARAM_BASE_MOMENTUM = 8,     /**< "base_momentum": when cycled, the momentum
                                                    at the lr peak, 0 .. 1 (0.8; long-cos 0.85) */
    ELLE_SCHEDULE_PARAM_CYCLE_MOMENTUM = 9,    /**< "cycle_momentum": 1 = cycle the momentum
                                                    inversely to the lr (short, long-cos only),
                                                    0 or 1 (0 / 1 / 0 / 1) */
    ELLE_SCHEDULE_PARAM_GAMMA = 10,            /**< "gamma": long: lr factor at each milestone,
                                                    0 .. 1 (0.1) */
    ELLE_SCHEDULE_PARAM_MILESTONE_1 = 11,      /**< "milestone_1": long: first decay at epoch
                                                    floor(milestone_1 * epochs), 0 .. 1 (0.5) */
    ELLE_SCHEDULE_PARAM_MILESTONE_2 = 12,      /**< "milestone_2": long: second decay at epoch
                                                    floor(milestone_2 * epochs), 0 .. 1 (0.75) */
    ELLE_SCHEDULE_PARAM_DIV_FACTOR = 13,       /**< "div_factor": long-cos: initial lr =
                                                    lr_max / div_factor, 1 .. 1e12 (25) */
    ELLE_SCHEDULE_PARAM_FINAL_DIV_FACTOR = 14  /**< "final_div_factor": long-cos: final lr =
                                                    initial lr / final_div_factor, 1 .. 1e12
                                                    (1e4) */
} elle_schedule_param;

/**
 * Create a schedule of shape `kind`, its parameters at that kind's
 * defaults. ELLE_EINVAL for NULL or an unknown kind. `*out` is set only on
 * success. @since v0.1
 */
ELLE_API int elle_schedule_create(elle_schedule **out, elle_schedule_kind kind);

/** Free a schedule (NULL accepted). @since v0.1 */
ELLE_API void elle_schedule_free(elle_schedule *s);

/** The kind of a schedule (an elle_schedule_kind), -1 when s is NULL. @since v0.1 */
ELLE_API int elle_schedule_get_kind(const elle_schedule *s);

/** Static name of a kind ("constant", "short", "long", "long-cos"), NULL if unknown. @since v0.1 */
ELLE_API const char *elle_schedule_kind_name(elle_schedule_kind kind);

/**
 * Kind by name: "constant", "short", "long", "long-cos" (also "long_cos").
 * ELLE_EINVAL if unknown. @since v0.1
 */
ELLE_API int elle_schedule_kind_from_name(const char *name, elle_schedule_kind *out);

/**
 * Set a parameter. ELLE_EINVAL for an unknown parameter, NaN, a value
 * outside elle_schedule_param_bounds or a non-integer count.
 * @since v0.1
 */
ELLE_API int elle_schedule_set_param(elle_schedule *s, elle_schedule_param param, double value);

/** Read a parameter into *out. @since v0.1 */
ELLE_API int elle_schedule_get_param(const elle_schedule *s, elle_schedule_param param,
                                     double *out);

/** Inclusive bounds of a parameter (lo, hi may be NULL). @since v0.1 */
ELLE_API int elle_schedule_param_bounds(elle_schedule_param param, double *lo, double *hi);

/**
 * Parameter by name ("lr_max", "epochs", "batches_per_epoch",
 * "steps_per_batch", "up_fraction", "base_lr", "momentum", "base_momentum",
 * "cycle_momentum", "gamma", "milestone_1", "milestone_2", "div_factor",
 * "final_div_factor"). ELLE_EINVAL if unknown. @since v0.1
 */
ELLE_API int elle_schedule_param_from_name(const char *name, elle_schedule_param *out);

/** Static name of a parameter, NULL if unknown. @since v0.1 */
ELLE_API const char *elle_schedule_param_name(elle_schedule_param param);

/**
 * Optimizer steps in the run: epochs * batches_per_epoch * steps_per_batch,
 * or -1 when s is NULL. @since v0.1
 */
ELLE_API int64_t elle_schedule_total_steps(const elle_schedule *s);

/**
 * Learning rate and momentum of optimizer step `step` (0-based,
 * 0 <= step < elle_schedule_total_steps). The step belongs to batch
 * i = step / steps_per_batch (0-based over the run) of epoch
 * i / batches_per_epoch; k = step % steps_per_batch is its place in the batch.
 *
 *  - per-batch shapes (short) are evaluated at the scheduler counter
 *    t = i + k: with two steps per batch the second uses the value the next
 *    batch's first step uses (the ELLE code steps the scheduler once per
 *    batch, between its two optimizer steps);
 *  - per-epoch shapes (long, long-cos) are evaluated at the epoch: every
 *    step of an epoch gets the same values.
 *
 * Either out pointer may be NULL. ELLE_EINVAL for NULL s or a step outside
 * the run. @since v0.1
 */
ELLE_API int elle_schedule_at(const elle_schedule *s, int64_t step, double *lr_out,
                              double *momentum_out);

ELLE_END_DECL

#endif /* ELLE_OPTIM_H */
