/*
 * The descriptor rules (convolution, pooling, batch norm) and output-shape
 * checks shared by the cpu and cuda backends. Each backend checks the tensors
 * themselves first (with its own layout rules), then calls these with its
 * name ("cpu", "cuda") for the messages. The reference backend keeps its
 * own copy on purpose: it is the independent yardstick the others are
 * tested against (DESIGN.md §5).
 */
#ifndef ELLE_BACKEND_DESC_CHECK_H
#define ELLE_BACKEND_DESC_CHECK_H

#include <stdint.h>

#include "backend/backend.h"

/* Output size of a window (floor mode), 0 when it does not fit. */
int64_t elle__window_out(int64_t in, int64_t k, int64_t s, int64_t p);

/* Descriptor present and sane (ELLE_EINVAL otherwise). */
int elle__check_conv_desc(const char *be, const char *op, const elle__conv_desc *cd);
int elle__check_pool_desc(const char *be, const char *op, const elle__pool_desc *pd);

/* x (input shaped: x or dx) and y (output shaped: y or dy) agree with the
 * descriptor (ELLE_ESHAPE otherwise, naming both shapes). Tensors already
 * checked. */
int elle__check_conv_geometry(const char *be, const char *op, const elle__conv_desc *cd,
                              const char *xname, const elle__tensor *x, const char *yname,
                              const elle__tensor *y);
int elle__check_pool_geometry(const char *be, const char *op, const elle__pool_desc *pd,
                              const char *xname, const elle__tensor *x, const char *yname,
                              const elle__tensor *y);

/* Batch-norm descriptor present and sane (ELLE_EINVAL: channels, eps) and
 * x, already checked, has its channel count (ELLE_ESHAPE). */
int elle__check_bn(const char *be, const char *op, const elle__bn_desc *bd,
                   const elle__tensor *x);

#endif /* ELLE_BACKEND_DESC_CHECK_H */
