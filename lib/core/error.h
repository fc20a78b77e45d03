/*
 * Internal error idioms.
 *
 *   ELLE_FAIL(code, fmt, ...)  record a message and return `code`
 *   ELLE_CHECK_ARG(cond)        return ELLE_EINVAL naming the function and the condition
 *   ELLE_TRY(expr)              propagate a negative status
 *   ELLE_TRY_GOTO(rc, expr)     store the status in rc and `goto cleanup` on failure
 *   ELLE_ASSERT(cond)           internal invariant: assert() in debug builds,
 *                               ELLE_ERROR with a message in release builds
 *
 * Functions with resources use one `cleanup:` label and free half-built
 * objects only when rc < 0 (libgit2's idiom).
 */
#ifndef ELLE_CORE_ERROR_H
#define ELLE_CORE_ERROR_H

#include <assert.h>

#include "elle/error.h"

/* Record `code` and a printf-style message on this thread; returns `code`. */
int elle__error_set(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prefix the current message with "<prefix>: " (adds context while unwinding). */
void elle__error_prefix(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#define ELLE_FAIL(code, ...) return elle__error_set((code), __VA_ARGS__)

#define ELLE_CHECK_ARG(cond)                                                         \
    do {                                                                             \
        if (!(cond))                                                                 \
            return elle__error_set(ELLE_EINVAL, "%s: invalid argument: %s", __func__, \
                                   #cond);                                           \
    } while (0)

#define ELLE_TRY(expr)                   \
    do {                                 \
        int elle__rc_ = (expr);          \
        if (elle__rc_ < 0)               \
            return elle__rc_;            \
    } while (0)

#define ELLE_TRY_GOTO(rc, expr) \
    do {                        \
        (rc) = (expr);          \
        if ((rc) < 0)           \
            goto cleanup;       \
    } while (0)

#ifdef NDEBUG
#define ELLE_ASSERT(cond)                                                                   \
    do {                                                                                    \
        if (!(cond))                                                                        \
            return elle__error_set(ELLE_ERROR, "%s: internal error: %s (%s:%d)", __func__, \
                                   #cond, __FILE__, __LINE__);                              \
    } while (0)
#else
#define ELLE_ASSERT(cond) assert(cond)
#endif

#endif /* ELLE_CORE_ERROR_H */
