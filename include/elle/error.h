/*
 * libelle — status codes and the thread-local last error.
 *
 * Every fallible function returns an int: ELLE_OK (0) on success, one of the
 * negative codes below otherwise. The values are part of the ABI: they are
 * never renumbered, new codes are appended. After a failure,
 * elle_error_last() holds a message naming the function and the offending
 * values. The library never prints, exits or aborts on bad input.
 */
#ifndef ELLE_ERROR_H
#define ELLE_ERROR_H

#include "common.h"

ELLE_BEGIN_DECL

/** Status codes (stable values). @since v0.1 */
typedef enum elle_status {
    ELLE_OK = 0,
    ELLE_ERROR = -1,        /**< generic or internal error */
    ELLE_EINVAL = -2,       /**< invalid argument: NULL, out of range, NaN */
    ELLE_ESHAPE = -3,       /**< dimension mismatch */
    ELLE_ENOMEM = -4,       /**< allocation failed */
    ELLE_EIO = -5,          /**< file could not be opened, read or written */
    ELLE_EFORMAT = -6,      /**< malformed or truncated file */
    ELLE_EUNSUPPORTED = -7, /**< backend, op or option not available in this build */
    ELLE_EDEVICE = -8,      /**< oneDNN / CUDA / cuDNN / cuBLAS failure */
    ELLE_ENUMERIC = -9,     /**< NaN or Inf appeared in a loss or gradient */
    ELLE_EUSER = -10,       /**< a user callback asked to stop */
    ELLE_EVERSION = -11,    /**< options struct or file format version mismatch */
    ELLE_ESTATE = -12       /**< call not valid in the object's current state */
} elle_status;

/** The last error of the calling thread. */
typedef struct elle_error {
    int code;            /**< an elle_status value; ELLE_OK when cleared */
    const char *message; /**< never NULL; "" when cleared */
} elle_error;

/**
 * The last error recorded on this thread. Never NULL. The pointer stays valid
 * until the next libelle call on this thread. @since v0.1
 */
ELLE_API const elle_error *elle_error_last(void);

/** Clear this thread's last error. @since v0.1 */
ELLE_API void elle_error_clear(void);

/**
 * Static name of a status code ("ELLE_EINVAL"); "ELLE_UNKNOWN" for values
 * outside the set. @since v0.1
 */
ELLE_API const char *elle_status_name(int code);

ELLE_END_DECL

#endif /* ELLE_ERROR_H */
