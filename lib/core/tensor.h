/*
 * Internal tensor: a view of backend memory with a logical NCHW shape and a
 * backend-chosen memory layout.
 *
 * The logical shape is always (n, c, h, w); a matrix such as logits is
 * (n, k, 1, 1). `layout` says how the elements are stored:
 *   ELLE__LAYOUT_PLAIN (0)  contiguous NCHW (row-major (n, c*h*w));
 *   other values             backend-specific (the CPU backend uses oneDNN's
 *                            channel-blocked nChw8c / nChw16c, channel count
 *                            padded up to the block, padding kept at zero).
 * Layers never look inside a non-plain layout: they ask the backend for the
 * layout of a feature map (backend->layout_for) and its size
 * (backend->tensor_bytes), and pass tensors to backend ops, which read and
 * write whatever layout the tensor carries. Images and logits at the API
 * boundary are plain.
 *
 * `data` points into backend memory: host memory for the CPU and reference
 * backends, device memory for CUDA.
 */
#ifndef ELLE_CORE_TENSOR_H
#define ELLE_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

enum { ELLE__LAYOUT_PLAIN = 0 };

typedef struct elle__tensor {
    float *data;
    int64_t n, c, h, w;
    int layout;
} elle__tensor;

/* A tensor view over `data` with the given shape and layout. */
static inline elle__tensor elle__tensor_make(float *data, int64_t n, int64_t c, int64_t h,
                                             int64_t w, int layout)
{
    elle__tensor t;
    t.data = data;
    t.n = n;
    t.c = c;
    t.h = h;
    t.w = w;
    t.layout = layout;
    return t;
}

/* Number of logical elements n*c*h*w. */
static inline int64_t elle__tensor_numel(const elle__tensor *t)
{
    return t->n * t->c * t->h * t->w;
}

#endif /* ELLE_CORE_TENSOR_H */
