/*
 * Helpers for the public-API client tests. These tests see libelle the way
 * a user does: only <elle.h> and libelle.so (no internal headers, no static
 * library), so a symbol missing from the ABI is a link error here.
 */
#ifndef ELLE_CLIENT_TEST_H
#define ELLE_CLIENT_TEST_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <elle.h>

/* `expr` must succeed; on failure print the status and elle_error_last(). */
static inline void client_ok(int rc, const char *expr, const char *file, int line)
{
    if (rc != ELLE_OK) {
        print_error("%s returned %s (%d): %s\n", expr, elle_status_name(rc), rc,
                    elle_error_last()->message);
        _fail(file, line);
    }
}
#define assert_ok(expr) client_ok((expr), #expr, __FILE__, __LINE__)

/*
 * `expr` must return `want`, record the same code in elle_error_last(), and
 * leave a non-empty message. The error is cleared first, so a message left
 * over from an earlier call does not count.
 */
static inline void client_status(int rc, int want, const char *expr, const char *file, int line)
{
    const elle_error *e = elle_error_last();
    if (rc != want) {
        print_error("%s returned %s (%d), expected %s (%d); message: \"%s\"\n", expr,
                    elle_status_name(rc), rc, elle_status_name(want), want, e->message);
        _fail(file, line);
    }
    if (want != ELLE_OK) {
        if (e->code != want) {
            print_error("%s returned %s but elle_error_last()->code is %s\n", expr,
                        elle_status_name(rc), elle_status_name(e->code));
            _fail(file, line);
        }
        if (e->message == NULL || e->message[0] == '\0') {
            print_error("%s failed with %s but left no message\n", expr, elle_status_name(rc));
            _fail(file, line);
        }
    }
}
#define assert_status(expr, want)                                        \
    do {                                                                 \
        elle_error_clear();                                              \
        client_status((expr), (want), #expr, __FILE__, __LINE__);        \
    } while (0)

/* Case-insensitive substring test. */
static inline int client_contains_ci(const char *haystack, const char *needle)
{
    size_t n = strlen(needle);
    for (; *haystack; haystack++) {
        size_t i = 0;
        while (i < n && haystack[i] &&
               (haystack[i] | 0x20) == (needle[i] | 0x20))
            i++;
        if (i == n)
            return 1;
    }
    return n == 0;
}

/* Deterministic images in [0, 1]. */
static inline void client_fill_images(float *x, size_t count, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < count; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) / 16777216.0f;
    }
}

static inline int client_all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* A fresh temporary file name (the file is created empty). Caller frees. */
static inline char *client_temp_path(const char *tag)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    size_t len = strlen(dir) + strlen(tag) + 32;
    char *path = malloc(len);
    assert_non_null(path);
    snprintf(path, len, "%s/elle-%s-XXXXXX", dir, tag);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    return path;
}

#endif /* ELLE_CLIENT_TEST_H */
