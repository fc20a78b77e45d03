/*
 * libelle — the trainer: fits a model on a training dataset with SGD and a
 * learning-rate schedule, evaluates it every epoch, reports metrics through
 * callbacks and JSON lines, and saves the final and best-validation models.
 *
 *     elle_trainer *t;
 *     elle_trainer_create(&t, model);
 *     elle_trainer_set_param(t, ELLE_TRAIN_PARAM_EPOCHS, 30);
 *     elle_trainer_set_param(t, ELLE_TRAIN_PARAM_LR, 0.2);
 *     elle_trainer_set_path(t, ELLE_TRAIN_PATH_LOG, "run/log.jsonl");
 *     elle_trainer_set_path(t, ELLE_TRAIN_PATH_FINAL_MODEL, "run/final.safetensors");
 *     int rc = elle_trainer_fit(t, train, test, val);   (val may be NULL)
 *     elle_trainer_free(t);
 *
 * Adversarial training composes one training attack and any number of
 * regularizers (all created on the trainer's model):
 *
 *     elle_attack_create(&fgsm, model, ELLE_ATTACK_FGSM);
 *     elle_regularizer_create(&elle_a, model, ELLE_REGULARIZER_ELLE);
 *     elle_regularizer_set_param(elle_a, ELLE_REGULARIZER_PARAM_ADAPTIVE, 1);
 *     elle_trainer_set_attack(t, fgsm);
 *     elle_trainer_add_regularizer(t, elle_a);
 *
 * One training step is one batch, the model in training mode throughout:
 * x_adv = attack(x) (x without an attack); the gradient of CE_mean(f(x_adv));
 * each regularizer's elle_regularizer_apply(x, y, x_adv) adds lambda * grad R;
 * then ELLE_TRAIN_PARAM_STEPS_PER_BATCH optimizer updates from that
 * gradient. Every epoch is evaluated in eval mode: clean accuracy, and a
 * PGD monitor (PGD-20, alpha = eps/8, as the reference) on test and
 * validation images. docs/training.md describes the loop, the metrics, the
 * catastrophic-overfitting flags and the files written.
 *
 * The trainer is written against the public API only (lib/train/trainer.c),
 * so it can be copied and adapted.
 *
 * Lifetime: the model, and the attacks and regularizers given to the
 * trainer, must outlive it (or be detached first); the datasets must stay
 * valid during elle_trainer_fit. One thread per trainer.
 */
#ifndef ELLE_TRAIN_H
#define ELLE_TRAIN_H

#include "attack.h"
#include "common.h"
#include "dataset.h"
#include "model.h"
#include "optim.h"
#include "regularizer.h"

ELLE_BEGIN_DECL

typedef struct elle_trainer elle_trainer;
typedef struct elle_train_metrics elle_train_metrics;

/**
 * Trainer parameters (stable values; appended only). Those whose default is
 * -1 ("auto") take the schedule kind's default (elle_schedule_param) unless
 * set; -1 restores auto. @since v0.1
 */
typedef enum elle_train_param {
    ELLE_TRAIN_PARAM_EPOCHS = 1,          /**< "epochs": 1 .. 1e6 (30) */
    ELLE_TRAIN_PARAM_BATCH_SIZE = 2,      /**< "batch_size": training batch, 1 .. 2^24 (128) */
    ELLE_TRAIN_PARAM_EVAL_BATCH_SIZE = 3, /**< "eval_batch_size": evaluation batch, 0 .. 2^24;
                                               0 = batch_size (0) */
    ELLE_TRAIN_PARAM_LR = 4,              /**< "lr": the schedule's lr_max, -1 or 0 .. 3.4e38
                                               (-1: 0.2 for short, 0.1 otherwise) */
    ELLE_TRAIN_PARAM_SCHEDULE = 5,        /**< "schedule": an elle_schedule_kind
                                               (ELLE_SCHEDULE_SHORT) */
    ELLE_TRAIN_PARAM_MOMENTUM = 6,        /**< "momentum": momentum, or its value at the lr
                                               minimum when cycled; -1 or 0 .. 1 (-1: 0.9;
                                               long-cos 0.95) */
    ELLE_TRAIN_PARAM_BASE_MOMENTUM = 7,   /**< "base_momentum": momentum at the lr peak when
                                               cycled; -1 or 0 .. 1 (-1: 0.8; long-cos 0.85) */
    ELLE_TRAIN_PARAM_CYCLE_MOMENTUM = 8,  /**< "cycle_momentum": -1, 0 or 1 (-1: 1 for short
                                               and long-cos, 0 otherwise) */
    ELLE_TRAIN_PARAM_UP_FRACTION = 9,     /**< "up_fraction": short: rising part of the cycle
                                               (SVHN recipe 0.4); long-cos: pct_start; -1 or
                                               0 .. 1 (-1: 0.5; long-cos 0.025) */
    ELLE_TRAIN_PARAM_WEIGHT_DECAY = 10,   /**< "weight_decay": coupled L2 on every parameter,
                                               0 .. 10 (5e-4) */
    ELLE_TRAIN_PARAM_NESTEROV = 11,       /**< "nesterov": 0 or 1 (0) */
    ELLE_TRAIN_PARAM_STEPS_PER_BATCH = 12, /**< "steps_per_batch": optimizer updates per batch
                                                from the same gradient, the schedule advanced
                                                between them; 1 or 2 (1; the ELLE code and
                                                --preset paper: 2) */
    ELLE_TRAIN_PARAM_SEED = 13,           /**< "seed": data order and augmentation, written
                                               into the training set's ELLE_DATASET_PARAM_SEED
                                               when a fit starts; 0 .. 2^53-1 (0) */
    ELLE_TRAIN_PARAM_SHUFFLE = 14,        /**< "shuffle": written into the training set's
                                               ELLE_DATASET_PARAM_SHUFFLE; 0 or 1 (1) */
    ELLE_TRAIN_PARAM_TRAIN_ACC = 15,      /**< "train_acc": 1 = report the training accuracy:
                                               on the points the training loss is computed
                                               at (x_adv; x without an attack), read from
                                               that forward's logits, no extra pass; 0 or 1
                                               (1) */
    ELLE_TRAIN_PARAM_LOG_EVERY = 16,      /**< "log_every": also write a JSON line every k
                                               steps; 0 = epoch lines only, 0 .. 1e9 (0) */
    ELLE_TRAIN_PARAM_PROGRESS = 17,       /**< "progress": 1 = progress bar on stderr when
                                               stderr is a terminal; 0 or 1 (0) */
    ELLE_TRAIN_PARAM_EXTRA_CLEAN_FORWARD = 18, /**< "extra_clean_forward": 1 = one more
                                               training-mode forward of the clean batch after
                                               the regularizers, as the ELLE code's metric
                                               forward: it moves the BatchNorm running
                                               statistics and gives clean_train_acc; 0 or 1
                                               (0; --preset paper: 1) */
    ELLE_TRAIN_PARAM_PGD_TEST_N = 19,     /**< "pgd_test_n": PGD monitor on the first n test
                                               images every epoch (all when n >= the test
                                               size); 0 = off; 0 .. 2^31-1 (1000) */
    ELLE_TRAIN_PARAM_PGD_VAL = 20,        /**< "pgd_val": 1 = PGD monitor on the whole
                                               validation set every epoch, and the best model
                                               chosen by it; 0 or 1 (1) */
    ELLE_TRAIN_PARAM_CO_DROP = 21,        /**< "co_drop": co_flag when the PGD accuracy is
                                               below (1 - co_drop) * its best while the
                                               training accuracy rose; 0 .. 1 (0.5) */
    ELLE_TRAIN_PARAM_CO_K = 22            /**< "co_k": an E_lin alarm when a step's value
                                               exceeds mean + co_k * std of the earlier
                                               values (the ELLE-A test); 0 .. 1e6 (2) */
} elle_train_param;

/** Files the trainer writes (stable values). @since v0.1 */
typedef enum elle_train_path {
    ELLE_TRAIN_PATH_FINAL_MODEL = 1, /**< "final_model": safetensors of the model after the
                                          last epoch */
    ELLE_TRAIN_PATH_BEST_MODEL = 2,  /**< "best_model": safetensors of the model at the epoch
                                          of the best validation accuracy so far (needs a
                                          validation set): PGD accuracy when the PGD monitor
                                          runs on it (pgd_val), clean accuracy otherwise */
    ELLE_TRAIN_PATH_LOG = 3          /**< "log": JSON lines, truncated when a fit starts */
} elle_train_path;

/** Kinds of callback events (stable values). @since v0.1 */
typedef enum elle_train_event {
    ELLE_TRAIN_EVENT_STEP = 1, /**< after every training step (batch) */
    ELLE_TRAIN_EVENT_EPOCH = 2 /**< after every epoch's evaluation */
} elle_train_event;

/**
 * Metrics, read with elle_train_metrics_get (stable values; appended only).
 * The name is the key in the JSON lines. docs/training.md lists which
 * records carry which: "step" events carry EPOCH .. TIME, TOTAL_*, WALL_TIME
 * and, with a regularizer, REG_VALUE, LAMBDA, REG_MEAN, REG_STD and
 * ELIN_ALARMS; "epoch" events carry the rest (all but BATCH, REG_MEAN and
 * REG_STD) when they apply. @since v0.1
 */
typedef enum elle_train_metric {
    ELLE_TRAIN_METRIC_EPOCH = 1,          /**< "epoch": 0-based epoch */
    ELLE_TRAIN_METRIC_STEP = 2,           /**< "step": training steps (batches) completed so far
                                               in the run, this one included */
    ELLE_TRAIN_METRIC_BATCH = 3,          /**< "batch": 0-based batch index in the epoch (step
                                               events) */
    ELLE_TRAIN_METRIC_SAMPLES = 4,        /**< "samples": training samples in the batch / epoch */
    ELLE_TRAIN_METRIC_LOSS = 5,           /**< "loss": mean cross-entropy at the training
                                               points (x_adv) over the batch / the epoch's
                                               samples; regularizers not included */
    ELLE_TRAIN_METRIC_TRAIN_ACC = 6,      /**< "train_acc": training accuracy in [0, 1] on the
                                               training points (x_adv: accuracy against the
                                               training attack), with
                                               ELLE_TRAIN_PARAM_TRAIN_ACC */
    ELLE_TRAIN_METRIC_LR = 7,             /**< "lr": lr of the batch's first optimizer step
                                               (epoch: of the epoch's last batch) */
    ELLE_TRAIN_METRIC_MOMENTUM = 8,       /**< "momentum": its momentum, likewise */
    ELLE_TRAIN_METRIC_TIME = 9,           /**< "time": seconds spent on the step / on the
                                               epoch's training steps (evaluation excluded) */
    ELLE_TRAIN_METRIC_SAMPLES_PER_S = 10, /**< "samples_per_s": training throughput of the epoch */
    ELLE_TRAIN_METRIC_TEST_LOSS = 11,     /**< "test_loss": mean clean cross-entropy on the test
                                               set, eval mode (only with a test set) */
    ELLE_TRAIN_METRIC_TEST_ACC = 12,      /**< "test_acc": clean accuracy, correct / total */
    ELLE_TRAIN_METRIC_VAL_LOSS = 13,      /**< "val_loss": as test_loss on the validation set
                                               (only with a validation set) */
    ELLE_TRAIN_METRIC_VAL_ACC = 14,       /**< "val_acc": clean validation accuracy */
    ELLE_TRAIN_METRIC_BEST_VAL_ACC = 15,  /**< "best_val_acc": best validation accuracy so
                                               far by the best-model criterion (pgd_val_acc
                                               when measured, else val_acc) */
    ELLE_TRAIN_METRIC_BEST_VAL_EPOCH = 16, /**< "best_val_epoch": the epoch it was reached */
    ELLE_TRAIN_METRIC_EVAL_TIME = 17,     /**< "eval_time": seconds spent evaluating */
    ELLE_TRAIN_METRIC_TOTAL_EPOCHS = 18,  /**< "total_epochs": epochs of the run */
    ELLE_TRAIN_METRIC_TOTAL_STEPS = 19,   /**< "total_steps": training steps of the run */
    ELLE_TRAIN_METRIC_PGD_TEST_ACC = 20,  /**< "pgd_test_acc": robust accuracy of the PGD
                                               monitor on the first pgd_test_n test images,
                                               correct / total */
    ELLE_TRAIN_METRIC_PGD_VAL_ACC = 21,   /**< "pgd_val_acc": the same on the validation set
                                               (pgd_val) */
    ELLE_TRAIN_METRIC_CLEAN_TRAIN_ACC = 22, /**< "clean_train_acc": accuracy on the clean
                                               training batches, from the extra clean forward
                                               (extra_clean_forward) */
    ELLE_TRAIN_METRIC_REG_VALUE = 23,     /**< "reg_value": the first regularizer's value R
                                               (E_lin) of the step / its mean over the epoch */
    ELLE_TRAIN_METRIC_LAMBDA = 24,        /**< "lambda": step: the lambda that weighted the
                                               step's gradient; epoch: the current lambda at
                                               its end (first regularizer) */
    ELLE_TRAIN_METRIC_LAMBDA_MIN = 25,    /**< "lambda_min": smallest step lambda of the epoch */
    ELLE_TRAIN_METRIC_LAMBDA_MEAN = 26,   /**< "lambda_mean": mean step lambda of the epoch */
    ELLE_TRAIN_METRIC_LAMBDA_MAX = 27,    /**< "lambda_max": largest step lambda of the epoch */
    ELLE_TRAIN_METRIC_LAMBDA_RESETS = 28, /**< "lambda_resets": the regularizer's detections
                                               in the epoch (ELLE-A: resets to lambda_max) */
    ELLE_TRAIN_METRIC_REG_MEAN = 29,      /**< "reg_mean": mean of the earlier values the
                                               step's value was tested against (step) */
    ELLE_TRAIN_METRIC_REG_STD = 30,       /**< "reg_std": their population std (step) */
    ELLE_TRAIN_METRIC_ELIN_ALARMS = 31,   /**< "elin_alarms": steps of the batch / epoch whose
                                               value exceeded reg_mean + co_k * reg_std
                                               (0 or 1 for a step) */
    ELLE_TRAIN_METRIC_CO_FLAG = 32,       /**< "co_flag": 1 when the epoch looks like
                                               catastrophic overfitting: PGD accuracy below
                                               (1 - co_drop) * its best while the training
                                               accuracy is above that of the best epoch */
    ELLE_TRAIN_METRIC_WALL_TIME = 33      /**< "wall_time": seconds since the fit started */
} elle_train_metric;

/**
 * Callback for step and epoch events. `metrics` is borrowed for the duration
 * of the call. Return 0 to continue; any other value stops the fit, which
 * then returns ELLE_EUSER. Must not call back into the trainer.
 */
typedef int (*elle_train_callback)(const elle_train_metrics *metrics, void *user_data);

/**
 * Create a trainer for `model` (borrowed; it must outlive the trainer),
 * with default parameters. Allocates the SGD momentum buffer.
 * `*out` is set only on success. @since v0.1
 */
ELLE_API int elle_trainer_create(elle_trainer **out, elle_model *model);

/** Free a trainer (NULL accepted). @since v0.1 */
ELLE_API void elle_trainer_free(elle_trainer *t);

/**
 * Set a parameter. ELLE_EINVAL for an unknown parameter, NaN, a value
 * outside elle_trainer_param_bounds, a non-integer count, an unknown
 * schedule kind or a negative value other than -1 for the auto parameters.
 * @since v0.1
 */
ELLE_API int elle_trainer_set_param(elle_trainer *t, elle_train_param param, double value);

/** Read a parameter into *out (-1 for an auto parameter left unset). @since v0.1 */
ELLE_API int elle_trainer_get_param(const elle_trainer *t, elle_train_param param, double *out);

/** Inclusive bounds of a parameter (lo, hi may be NULL). @since v0.1 */
ELLE_API int elle_trainer_param_bounds(elle_train_param param, double *lo, double *hi);

/**
 * Parameter by name ("epochs", "batch_size", "lr", "schedule", ...; the
 * names in elle_train_param). ELLE_EINVAL if unknown. @since v0.1
 */
ELLE_API int elle_trainer_param_from_name(const char *name, elle_train_param *out);

/** Static name of a parameter, NULL if unknown. @since v0.1 */
ELLE_API const char *elle_trainer_param_name(elle_train_param param);

/**
 * Set the file written for `which` (the string is copied); NULL or ""
 * means "do not write it" (the default for every path). @since v0.1
 */
ELLE_API int elle_trainer_set_path(elle_trainer *t, elle_train_path which, const char *path);

/** The path set for `which` (borrowed until the next set_path), NULL when unset. @since v0.1 */
ELLE_API const char *elle_trainer_get_path(const elle_trainer *t, elle_train_path which);

/** Static name of a path kind ("final_model", "best_model", "log"), NULL if unknown. @since v0.1 */
ELLE_API const char *elle_train_path_name(elle_train_path which);

/** Path kind by name; ELLE_EINVAL if unknown. @since v0.1 */
ELLE_API int elle_train_path_from_name(const char *name, elle_train_path *out);

/**
 * Train against `attack` (borrowed; NULL = clean training, the default):
 * every batch x is replaced by attack(x) for the training loss, the model in
 * training mode (the attack's forwards update the BatchNorm running
 * statistics, as the reference). The attack keeps its own parameters and
 * random stream. The training kinds are FGSM, RS-FGSM, N-FGSM, PGD and
 * GAT's guided attack (GAT trains with it plus the gat regularizer).
 * ELLE_EINVAL when the attack was created on another model;
 * ELLE_EUNSUPPORTED for the evaluation-only kinds (APGD, FAB-T, Square,
 * AutoAttack). @since v0.1
 */
ELLE_API int elle_trainer_set_attack(elle_trainer *t, elle_attack *attack);

/** The training attack (borrowed), NULL for clean training or t NULL. @since v0.1 */
ELLE_API elle_attack *elle_trainer_get_attack(const elle_trainer *t);

/**
 * Add a regularizer (borrowed), applied every step after the training
 * loss's backward in the order added: elle_regularizer_apply(reg, x, y,
 * x_adv) accumulates lambda * grad R (and runs its ELLE-A rule). The
 * metrics report the first one's value and lambda. ELLE_EINVAL for NULL, a
 * regularizer created on another model or one already added; ELLE_ENOMEM.
 * @since v0.1
 */
ELLE_API int elle_trainer_add_regularizer(elle_trainer *t, elle_regularizer *reg);

/** Number of regularizers added (-1 for NULL). @since v0.1 */
ELLE_API int elle_trainer_num_regularizers(const elle_trainer *t);

/** Remove every regularizer (they are not freed). @since v0.1 */
ELLE_API int elle_trainer_clear_regularizers(elle_trainer *t);

/**
 * The attack of the per-epoch PGD monitor (borrowed; used as it is, in eval
 * mode, through elle_attack_evaluate). NULL (the default) = the trainer's
 * own PGD-20: steps 20, alpha = eps/8, one random start, clamp_image 1,
 * seed = ELLE_TRAIN_PARAM_SEED, with eps of the training attack (else of
 * the first regularizer; no monitor when neither exists). ELLE_EINVAL when
 * the attack was created on another model. @since v0.1
 */
ELLE_API int elle_trainer_set_monitor_attack(elle_trainer *t, elle_attack *attack);

/**
 * Call `fn(metrics, user_data)` on every `event`; a NULL fn removes the
 * callback. One callback per event kind. @since v0.1
 */
ELLE_API int elle_trainer_set_callback(elle_trainer *t, elle_train_event event,
                                       elle_train_callback fn, void *user_data);

/**
 * Train the model for ELLE_TRAIN_PARAM_EPOCHS epochs on `train`, evaluating
 * clean accuracy (and the PGD monitor) on `test` and `val` after every
 * epoch (either may be NULL). Starts from the model's current weights and a
 * zero momentum buffer; the attacks and regularizers continue from their
 * current state (random streams, ELLE-A history). Sets the training set's
 * SEED and SHUFFLE parameters from the trainer's. Reserves the model for
 * the largest batch any stage needs: max(batch_size, eval_batch_size,
 * elle_regularizer_batch_samples of each regularizer). Leaves the model in
 * eval mode.
 *
 * Writes (when their paths are set) the JSON-lines log as it goes, the
 * best-validation model whenever the validation accuracy (PGD with
 * pgd_val, else clean) strictly improves, and the final model after the
 * last epoch. Model files are written atomically and never with
 * non-finite values.
 *
 * Returns ELLE_OK; ELLE_EINVAL for NULL model or train, a best-model path
 * without a validation set, or a dataset whose labels exceed the model's
 * classes; ELLE_ESHAPE when a dataset's image shape differs from the
 * model's input; ELLE_ENUMERIC when a loss or the weights become NaN or
 * infinite (the message names the step; nothing is saved from then on);
 * ELLE_EUSER when a callback returned non-zero; ELLE_EIO when a file cannot
 * be written; or any error of the calls it makes. @since v0.1
 */
ELLE_API int elle_trainer_fit(elle_trainer *t, elle_dataset *train, elle_dataset *test,
                              elle_dataset *val);

/**
 * Metrics of the last completed epoch of the last fit (borrowed, valid until
 * the next fit or elle_trainer_free), NULL before any epoch completed.
 * @since v0.1
 */
ELLE_API const elle_train_metrics *elle_trainer_last_epoch(const elle_trainer *t);

/** The event a metrics record belongs to (an elle_train_event), -1 for NULL. @since v0.1 */
ELLE_API int elle_train_metrics_event(const elle_train_metrics *m);

/**
 * 1 when the record holds `key`, else 0 (also for NULL or an unknown key).
 * @since v0.1
 */
ELLE_API int elle_train_metrics_has(const elle_train_metrics *m, elle_train_metric key);

/**
 * Read metric `key` into *out. ELLE_ESTATE (and *out = NaN) when the record
 * does not hold it (e.g. val_acc without a validation set), ELLE_EINVAL for
 * NULL arguments or an unknown key. @since v0.1
 */
ELLE_API int elle_train_metrics_get(const elle_train_metrics *m, elle_train_metric key,
                                    double *out);

/** Static name (JSON key) of a metric, NULL if unknown. @since v0.1 */
ELLE_API const char *elle_train_metric_name(elle_train_metric key);

/** Metric by name; ELLE_EINVAL if unknown. @since v0.1 */
ELLE_API int elle_train_metric_from_name(const char *name, elle_train_metric *out);

ELLE_END_DECL

#endif /* ELLE_TRAIN_H */
