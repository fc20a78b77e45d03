/* Memory ops of the host backends (see host_memory.h). */
#include "backend/host_memory.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int elle__host_alloc(const char *who, size_t bytes, void **out)
{
    if (!out)
        ELLE_FAIL(ELLE_EINVAL, "%s alloc: out is NULL", who);
    *out = NULL;
    if (bytes > SIZE_MAX - (ELLE__HOST_ALIGN - 1))
        ELLE_FAIL(ELLE_ENOMEM, "%s alloc: %zu bytes cannot be allocated", who, bytes);
    /* aligned_alloc wants a multiple of the alignment; a 0-byte request
     * still gets a real block so that free() is uniform */
    size_t rounded = (bytes + (ELLE__HOST_ALIGN - 1)) / ELLE__HOST_ALIGN * ELLE__HOST_ALIGN;
    if (rounded == 0)
        rounded = ELLE__HOST_ALIGN;
    void *p = aligned_alloc(ELLE__HOST_ALIGN, rounded);
    if (!p)
        ELLE_FAIL(ELLE_ENOMEM, "%s alloc: out of memory allocating %zu bytes", who, bytes);
    memset(p, 0, rounded);
    *out = p;
    return ELLE_OK;
}

int elle__host_op_alloc(elle__backend *be, size_t bytes, void **out)
{
    return elle__host_alloc(be->ops->name, bytes, out);
}

void elle__host_op_free(elle__backend *be, void *ptr)
{
    (void)be;
    free(ptr);
}

static int check_copy(const elle__backend *be, const char *op, const void *dst, const void *src,
                      size_t bytes)
{
    if (bytes && (!dst || !src))
        ELLE_FAIL(ELLE_EINVAL, "%s %s: %s is NULL", be->ops->name, op, !dst ? "dst" : "src");
    return ELLE_OK;
}

int elle__host_op_copy_to_device(elle__backend *be, void *dst, const void *src, size_t bytes)
{
    ELLE_TRY(check_copy(be, "copy_to_device", dst, src, bytes));
    if (bytes)
        memcpy(dst, src, bytes);
    return ELLE_OK;
}

int elle__host_op_copy_to_host(elle__backend *be, void *dst, const void *src, size_t bytes)
{
    ELLE_TRY(check_copy(be, "copy_to_host", dst, src, bytes));
    if (bytes)
        memcpy(dst, src, bytes);
    return ELLE_OK;
}

int elle__host_op_copy(elle__backend *be, void *dst, const void *src, size_t bytes)
{
    ELLE_TRY(check_copy(be, "copy", dst, src, bytes));
    if (bytes)
        memmove(dst, src, bytes);
    return ELLE_OK;
}

int elle__host_op_memzero(elle__backend *be, void *dst, size_t bytes)
{
    if (bytes && !dst)
        ELLE_FAIL(ELLE_EINVAL, "%s memzero: dst is NULL", be->ops->name);
    if (bytes)
        memset(dst, 0, bytes);
    return ELLE_OK;
}
