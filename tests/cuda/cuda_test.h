/*
 * What both CUDA test programs share: the skip rule. Machines without a GPU
 * (or without a driver) build the CUDA backend but cannot run it, so each
 * program checks for a device before anything else and exits with 77, which
 * meson reports as SKIP rather than FAIL.
 */
#ifndef ELLE_CUDA_TEST_H
#define ELLE_CUDA_TEST_H

#include <stdio.h>

#include "elle.h"

#define ELLE_CUDA_TEST_SKIP 77

/* 1 (after printing the reason) when no CUDA device can be used. */
static inline int elle_cuda_test_unavailable(void)
{
    if (elle_backend_available(ELLE_BACKEND_CUDA))
        return 0;
    /* elle_backend_available gives no reason; a context creation does */
    elle_context *ctx = NULL;
    int rc = elle_context_create(&ctx, ELLE_BACKEND_CUDA, 0);
    if (rc == ELLE_OK) {
        elle_context_free(ctx);
        printf("no CUDA device: elle_backend_available(ELLE_BACKEND_CUDA) is 0\n");
    } else {
        printf("no CUDA device: %s\n", elle_error_last()->message);
    }
    return 1;
}

#endif
