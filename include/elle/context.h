/*
 * libelle — contexts: which device computes, with how many threads.
 *
 * A context owns the backend state (oneDNN engine and stream, cached
 * primitives, cuDNN handles) and must outlive every object created from it.
 * One context per thread; a handle is never used from two threads at once.
 */
#ifndef ELLE_CONTEXT_H
#define ELLE_CONTEXT_H

#include "common.h"

ELLE_BEGIN_DECL

typedef struct elle_context elle_context;

/** Compute backends (stable values). @since v0.1 */
typedef enum elle_backend {
    ELLE_BACKEND_CPU = 0,       /**< oneDNN on the host CPU */
    ELLE_BACKEND_CUDA = 1,      /**< cuDNN + cuBLAS on an NVIDIA GPU */
    ELLE_BACKEND_REFERENCE = 2  /**< naive C loops; slow, for checking the others */
} elle_backend;

/** Context parameters, set with elle_context_set_param (stable values). @since v0.1 */
typedef enum elle_context_param {
    ELLE_CONTEXT_PARAM_THREADS = 1 /**< CPU threads for compute (0 = all cores) */
} elle_context_param;

/**
 * Create a context on backend `kind`, device `device_index` (0 for the CPU
 * and the reference backend; for CUDA, a GPU index below
 * elle_backend_device_count(ELLE_BACKEND_CUDA)). Returns ELLE_EUNSUPPORTED
 * when the backend is not compiled in (the message says how to build it) and
 * ELLE_EDEVICE when no such device exists (for CUDA also when the driver is
 * missing or the GPU cannot be initialised; the message names the CUDA
 * error). A CUDA context makes its GPU the calling thread's current CUDA
 * device whenever it is used, so contexts on several GPUs can share a thread.
 * `*out` is set only on success. @since v0.1
 */
ELLE_API int elle_context_create(elle_context **out, elle_backend kind, int device_index);

/** Free a context (NULL is accepted). Every child object must be freed first. @since v0.1 */
ELLE_API void elle_context_free(elle_context *ctx);

/** Backend of a context, or -1 when ctx is NULL. @since v0.1 */
ELLE_API int elle_context_backend(const elle_context *ctx);

/** Set a context parameter; ELLE_EINVAL outside elle_context_param_bounds. @since v0.1 */
ELLE_API int elle_context_set_param(elle_context *ctx, elle_context_param param, double value);

/** Read a context parameter into *out. @since v0.1 */
ELLE_API int elle_context_get_param(const elle_context *ctx, elle_context_param param, double *out);

/** Inclusive bounds of a context parameter. @since v0.1 */
ELLE_API int elle_context_param_bounds(elle_context_param param, double *lo, double *hi);

/** Look a context parameter up by name ("threads"); ELLE_EINVAL if unknown. @since v0.1 */
ELLE_API int elle_context_param_from_name(const char *name, elle_context_param *out);

/** Static name of a context parameter, NULL if unknown. @since v0.1 */
ELLE_API const char *elle_context_param_name(elle_context_param param);

/** 1 when `kind` is compiled into this build (and, for CUDA, a device exists), else 0. @since v0.1 */
ELLE_API int elle_backend_available(elle_backend kind);

/**
 * Number of devices of a backend: 1 for the CPU and reference, the GPUs the
 * driver reports for CUDA, 0 if unavailable. @since v0.1
 */
ELLE_API int elle_backend_device_count(elle_backend kind);

/** Static name of a backend ("cpu", "cuda", "reference"), NULL if unknown. @since v0.1 */
ELLE_API const char *elle_backend_name(elle_backend kind);

/** Look a backend up by name; ELLE_EINVAL if unknown. @since v0.1 */
ELLE_API int elle_backend_from_name(const char *name, elle_backend *out);

/** Log levels for elle_log_set. @since v0.1 */
typedef enum elle_log_level {
    ELLE_LOG_DEBUG = 0,
    ELLE_LOG_INFO = 1,
    ELLE_LOG_WARN = 2,
    ELLE_LOG_ERROR = 3
} elle_log_level;

/** Log callback: receives a level, a NUL-terminated line and user_data. */
typedef void (*elle_log_fn)(int level, const char *message, void *user_data);

/**
 * Route library log lines (process-wide) to `fn`. NULL silences the library
 * (the default: libelle never prints on its own). @since v0.1
 */
ELLE_API void elle_log_set(elle_log_fn fn, void *user_data);

ELLE_END_DECL

#endif /* ELLE_CONTEXT_H */
