/*
 * Shared helpers for the CMocka unit tests. Failures point at the test line
 * (the macros forward __FILE__/__LINE__) and print elle_error_last().
 */
#ifndef ELLE_TEST_H
#define ELLE_TEST_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "elle.h"

static inline void elle_test_ok(int rc, const char *expr, const char *file, int line)
{
    if (rc != ELLE_OK) {
        print_error("%s returned %s: %s\n", expr, elle_status_name(rc),
                    elle_error_last()->message);
        _fail(file, line);
    }
}
#define assert_elle_ok(expr) elle_test_ok((expr), #expr, __FILE__, __LINE__)

static inline void elle_test_status(int rc, int want, const char *expr, const char *file,
                                    int line)
{
    if (rc != want) {
        print_error("%s returned %s, expected %s (message: %s)\n", expr, elle_status_name(rc),
                    elle_status_name(want), elle_error_last()->message);
        _fail(file, line);
    }
    if (want != ELLE_OK && elle_error_last()->message[0] == '\0') {
        print_error("%s failed with %s but left no message\n", expr, elle_status_name(rc));
        _fail(file, line);
    }
}
/* expr must return `want`, and a failure must leave a message. */
#define assert_elle_status(expr, want) elle_test_status((expr), (want), #expr, __FILE__, __LINE__)

/* |a-b| <= atol + rtol*|b| elementwise (b is the reference). */
static inline void elle_test_close(const float *a, const float *b, size_t n, double atol,
                                   double rtol, const char *what, const char *file, int line)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= atol + rtol * fabs((double)b[i]))) {
            print_error("%s: element %zu differs: got %.9g, reference %.9g (|d| = %.3g, "
                        "atol %.3g, rtol %.3g)\n",
                        what, i, (double)a[i], (double)b[i], d, atol, rtol);
            _fail(file, line);
        }
    }
}
#define assert_floats_close(a, b, n, atol, rtol) \
    elle_test_close((a), (b), (n), (atol), (rtol), #a " vs " #b, __FILE__, __LINE__)

/* Normalised mean squared error sum((a-b)^2) / sum(b^2). */
static inline double elle_test_nmse(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? num / den : num;
}

#endif
