/*
 * libelle — models: image classifiers built by name, with forward, input
 * gradients, parameter gradients and PyTorch-compatible safetensors I/O.
 *
 * Architectures ("small_cnn", "preact_resnet18", "wide_resnet") are chosen
 * by name in an elle_model_config; their hyperparameters are set with
 * elle_model_config_set_param. Images cross the API as float NCHW arrays in
 * [0, 1] (shape (n, C, H, W), row-major), labels as int32 in [0, classes),
 * logits as float (n, classes).
 *
 * Lifetime: a model must be freed before its context. Call
 * elle_model_reserve(model, max_batch) once before computing: it plans and
 * allocates every activation, gradient and workspace buffer; afterwards no
 * call with n <= max_batch allocates.
 */
#ifndef ELLE_MODEL_H
#define ELLE_MODEL_H

#include "common.h"
#include "context.h"

ELLE_BEGIN_DECL

typedef struct elle_model elle_model;
typedef struct elle_model_config elle_model_config;

/** Model construction parameters (stable values; appended only). @since v0.1 */
typedef enum elle_model_param {
    ELLE_MODEL_PARAM_IN_CHANNELS = 1,  /**< input channels (small_cnn 1, resnets 3) */
    ELLE_MODEL_PARAM_IN_HEIGHT = 2,    /**< input height (28 / 32) */
    ELLE_MODEL_PARAM_IN_WIDTH = 3,     /**< input width (28 / 32) */
    ELLE_MODEL_PARAM_NUM_CLASSES = 4,  /**< output classes (10) */
    ELLE_MODEL_PARAM_WIDTH = 5,        /**< small_cnn: channels of the first conv (16);
                                            preact_resnet18: stem width (64);
                                            wide_resnet: widen factor (10) */
    ELLE_MODEL_PARAM_DEPTH = 6,        /**< small_cnn: conv blocks (2); wide_resnet: depth (28) */
    ELLE_MODEL_PARAM_HIDDEN = 7,       /**< small_cnn: hidden units of the first linear (128) */
    ELLE_MODEL_PARAM_SHORTCUT_RAW_X = 8, /**< preact_resnet18: 1 = projection shortcut from raw x
                                              (FA/NF/GA repos); 0 = from BN-ReLU(x) (ELLE) */
    ELLE_MODEL_PARAM_NORMALIZE = 9,    /**< 1 = per-channel (x - mean)/std input layer (see
                                            elle_model_config_set_normalization) */
    ELLE_MODEL_PARAM_SEED = 10,        /**< initialisation seed (0) */
    ELLE_MODEL_PARAM_BN_MOMENTUM = 11, /**< BatchNorm momentum (0.1) */
    ELLE_MODEL_PARAM_BN_EPS = 12       /**< BatchNorm epsilon (1e-5) */
} elle_model_param;

/**
 * Create a configuration for architecture `arch` ("small_cnn",
 * "preact_resnet18", "wide_resnet"), filled with that architecture's
 * defaults. ELLE_EINVAL for an unknown name. @since v0.1
 */
ELLE_API int elle_model_config_create(elle_model_config **out, const char *arch);
/** Free a configuration (NULL accepted). @since v0.1 */
ELLE_API void elle_model_config_free(elle_model_config *cfg);
/** Set a parameter; ELLE_EINVAL when out of elle_model_param_bounds. @since v0.1 */
ELLE_API int elle_model_config_set_param(elle_model_config *cfg, elle_model_param param,
                                         double value);
/** Read a parameter. @since v0.1 */
ELLE_API int elle_model_config_get_param(const elle_model_config *cfg, elle_model_param param,
                                         double *out);
/** Inclusive bounds of a parameter. @since v0.1 */
ELLE_API int elle_model_param_bounds(elle_model_param param, double *lo, double *hi);
/** Parameter by name ("width", "num_classes", ...). @since v0.1 */
ELLE_API int elle_model_param_from_name(const char *name, elle_model_param *out);
/** Static name of a parameter, NULL if unknown. @since v0.1 */
ELLE_API const char *elle_model_param_name(elle_model_param param);
/**
 * Per-channel normalisation constants (`channels` values each; std > 0).
 * Also sets ELLE_MODEL_PARAM_NORMALIZE to 1. @since v0.1
 */
ELLE_API int elle_model_config_set_normalization(elle_model_config *cfg, const float *mean,
                                                 const float *std, int channels);

/** Create a model on `ctx` from `cfg` (the config may be freed afterwards). @since v0.1 */
ELLE_API int elle_model_create(elle_model **out, elle_context *ctx, const elle_model_config *cfg);
/** Free a model (NULL accepted). @since v0.1 */
ELLE_API void elle_model_free(elle_model *model);

/**
 * Plan and allocate buffers for batches of up to `max_batch` images and
 * build the backend's primitives for that size. May be called again with a
 * different size (re-plans). ELLE_EINVAL for max_batch < 1. @since v0.1
 */
ELLE_API int elle_model_reserve(elle_model *model, int64_t max_batch);

/** Select training (1: batch statistics, running stats updated) or eval (0) mode. @since v0.1 */
ELLE_API int elle_model_set_training(elle_model *model, int training);
/** 1 in training mode, 0 in eval mode, -1 for NULL. @since v0.1 */
ELLE_API int elle_model_training(const elle_model *model);

/**
 * Logits for n images. x: (n, C, H, W) floats; logits_out: (n, classes).
 * ELLE_ESTATE before elle_model_reserve, ELLE_ESHAPE if n > max_batch.
 * @since v0.1
 */
ELLE_API int elle_model_forward(elle_model *model, const float *x, int64_t n, float *logits_out);

/**
 * Gradient of the mean cross-entropy (1/n) sum_i CE(f(x_i), y_i) with
 * respect to the input, without computing parameter gradients (what attacks
 * need). dx_out: (n, C, H, W). loss_out (may be NULL): n per-sample losses.
 * In training mode the forward updates BN running statistics. ELLE_EINVAL
 * for a label outside [0, classes). @since v0.1
 */
ELLE_API int elle_model_input_grad(elle_model *model, const float *x, const int32_t *labels,
                                   int64_t n, float *dx_out, float *loss_out);

/**
 * Forward and backward of the mean cross-entropy: ACCUMULATES the parameter
 * gradients (call elle_model_zero_grad first for a fresh gradient) and, if
 * dx_out is not NULL, writes the input gradient. loss_out (may be NULL): n
 * per-sample losses. @since v0.1
 */
ELLE_API int elle_model_backward(elle_model *model, const float *x, const int32_t *labels,
                                 int64_t n, float *loss_out, float *dx_out);

/** Set every parameter gradient to zero. @since v0.1 */
ELLE_API int elle_model_zero_grad(elle_model *model);

/**
 * Copy the logits of the model's last forward — of elle_model_forward,
 * elle_model_backward, elle_model_input_grad, or an attack's or
 * regularizer's forward — to host memory: the first n rows, logits_out
 * (n, classes). Lets a caller read predictions from a training forward it
 * already ran (the trainer's accuracy against the training attack) instead
 * of a second forward, which in training mode would also move the
 * batch-norm running statistics. ELLE_ESTATE before any forward (and after
 * elle_model_reserve, which discards them); ELLE_EINVAL for NULL or n
 * outside [1, the last forward's batch]. @since v0.1
 */
ELLE_API int elle_model_logits(const elle_model *model, int64_t n, float *logits_out);

/** Kinds of state entries (stable values). @since v0.1 */
typedef enum elle_state_kind {
    ELLE_STATE_PARAMETER = 0, /**< trainable float tensor (has a gradient) */
    ELLE_STATE_BUFFER = 1,    /**< float buffer (BN running_mean / running_var) */
    ELLE_STATE_COUNTER = 2    /**< int64 scalar (BN num_batches_tracked) */
} elle_state_kind;

/** Number of state entries (parameters, buffers and counters, in state_dict order). @since v0.1 */
ELLE_API int64_t elle_model_state_count(const elle_model *model);
/**
 * Describe state entry i: its PyTorch state_dict name (borrowed, valid while
 * the model lives), kind, rank (0..4) and dims (4 values, unused ones 1).
 * Any out pointer may be NULL. @since v0.1
 */
ELLE_API int elle_model_state_info(const elle_model *model, int64_t i, const char **name_out,
                                   elle_state_kind *kind_out, int *ndim_out, int64_t dims_out[4]);
/** Copy state entry i to host memory (numel floats; one int64 for a counter). @since v0.1 */
ELLE_API int elle_model_state_get(const elle_model *model, int64_t i, void *host_out);
/** Overwrite state entry i from host memory. @since v0.1 */
ELLE_API int elle_model_state_set(elle_model *model, int64_t i, const void *host_in);
/** Copy the gradient of parameter entry i to host memory (EINVAL for buffers). @since v0.1 */
ELLE_API int elle_model_grad_get(const elle_model *model, int64_t i, float *host_out);

/** Trainable scalars (sum of parameter sizes). @since v0.1 */
ELLE_API int64_t elle_model_num_params(const elle_model *model);
/** Bytes of memory the model holds (parameters, gradients, reserved buffers). @since v0.1 */
ELLE_API size_t elle_model_memory_size(const elle_model *model);
/** Number of output classes. @since v0.1 */
ELLE_API int64_t elle_model_num_classes(const elle_model *model);
/** Input shape (C, H, W) into the three pointers (any may be NULL). @since v0.1 */
ELLE_API int elle_model_input_shape(const elle_model *model, int64_t *c, int64_t *h, int64_t *w);
/** Architecture name (borrowed). @since v0.1 */
ELLE_API const char *elle_model_arch(const elle_model *model);

/**
 * Save the state (parameters and buffers) as safetensors with PyTorch
 * state_dict names; written atomically (temporary file, fsync, rename).
 * @since v0.1
 */
ELLE_API int elle_model_save(const elle_model *model, const char *path);
/**
 * Load a safetensors state. Every state entry must be present with the same
 * shape (strict, as PyTorch's load_state_dict): ELLE_EFORMAT for a malformed
 * file, ELLE_ESHAPE for a shape mismatch, with the tensor named. The model is
 * unchanged on failure. @since v0.1
 */
ELLE_API int elle_model_load(elle_model *model, const char *path);

ELLE_END_DECL

#endif /* ELLE_MODEL_H */
