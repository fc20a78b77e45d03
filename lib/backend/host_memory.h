/*
 * Host-memory implementations of the backend table's memory ops, shared by
 * the backends whose "device" is the host (cpu, reference): 64-byte aligned,
 * zero-filled blocks; memcpy/memmove copies. Messages name the backend
 * (be->ops->name) and the op. A device backend supplies its own.
 */
#ifndef ELLE_BACKEND_HOST_MEMORY_H
#define ELLE_BACKEND_HOST_MEMORY_H

#include <stddef.h>

#include "backend/backend.h"

#define ELLE__HOST_ALIGN 64

/* 64-byte aligned, zero-filled block of at least max(bytes, 1) bytes;
 * `who` prefixes the messages. ELLE_EINVAL for out == NULL, ELLE_ENOMEM. */
int elle__host_alloc(const char *who, size_t bytes, void **out);

int elle__host_op_alloc(elle__backend *be, size_t bytes, void **out);
void elle__host_op_free(elle__backend *be, void *ptr);
int elle__host_op_copy_to_device(elle__backend *be, void *dst, const void *src, size_t bytes);
int elle__host_op_copy_to_host(elle__backend *be, void *dst, const void *src, size_t bytes);
/* memmove: both ends may be parts of one arena block. */
int elle__host_op_copy(elle__backend *be, void *dst, const void *src, size_t bytes);
int elle__host_op_memzero(elle__backend *be, void *dst, size_t bytes);

#endif
