/*
 * oneDNN plumbing shared by the dnnl_*.c files (oneDNN 2.6 C API: *_desc_init
 * then dnnl_primitive_desc_create, memory descriptors by value).
 *
 * The cache. Every oneDNN op looks up an entry by a key made of the op kind
 * and everything that shapes the primitive (dimensions, strides, padding,
 * layouts, flags, and the OpenMP thread count, because some kernels size their
 * scratchpad for the thread count at creation). A miss builds the entry once:
 * the primitive descriptor, the primitive, a memory object per argument, the
 * reorders and buffers for arguments whose layout differs from the
 * primitive's, and the scratchpad memory. A hit only sets data handles and
 * executes: no allocation, no oneDNN object created. Entries live in a
 * growing array of pointers in the impl (linear search: a network has a few
 * dozen shapes).
 *
 * Arguments. An entry argument pairs the caller's memory (the tensor's own
 * layout, data handle set on every call) with the memory the primitive
 * wants. When the descriptors differ the argument owns a buffer in the
 * primitive's layout and a reorder: inputs are reordered into the buffer
 * before the primitive runs, outputs out of it afterwards. Parameter
 * gradients use an accumulating reorder (a sum post-op: dst += src), which
 * is how "parameter gradients are ACCUMULATED" is met although oneDNN writes
 * them.
 *
 * Scratchpad. Every primitive is created in dnnl_scratchpad_mode_user; the
 * impl owns one scratch buffer, grown at primitive creation only, whose
 * handle is given to the primitive's scratchpad memory before each execute.
 *
 * Errors. ELLE__DNNL_TRY wraps every oneDNN call: a failure records the
 * function, file:line and dnnl_status2str's name and returns ELLE_EDEVICE.
 */
#ifndef ELLE_BACKEND_CPU_DNNL_UTIL_H
#define ELLE_BACKEND_CPU_DNNL_UTIL_H

#include <oneapi/dnnl/dnnl.h>

#include "backend/cpu/cpu_internal.h"
#include "core/error.h"

/* Record a failed oneDNN call; returns ELLE_EDEVICE. */
int elle__cpu_dnnl_fail(const char *call, dnnl_status_t st, const char *file, int line);

#define ELLE__DNNL_TRY(call)                                                   \
    do {                                                                       \
        dnnl_status_t elle__st_ = (call);                                      \
        if (elle__st_ != dnnl_success)                                         \
            return elle__cpu_dnnl_fail(#call, elle__st_, __FILE__, __LINE__);  \
    } while (0)

/* Store ELLE_EDEVICE in rc and `goto cleanup` on failure. */
#define ELLE__DNNL_TRY_GOTO(rc, call)                                            \
    do {                                                                         \
        dnnl_status_t elle__st_ = (call);                                        \
        if (elle__st_ != dnnl_success) {                                         \
            (rc) = elle__cpu_dnnl_fail(#call, elle__st_, __FILE__, __LINE__);    \
            goto cleanup;                                                        \
        }                                                                        \
    } while (0)

/* ---- keys ---------------------------------------------------------------- */

#define ELLE__CPU_KEY_LEN 32

enum {
    ELLE__CPU_OP_TO_PLAIN = 1,
    ELLE__CPU_OP_FROM_PLAIN,
    ELLE__CPU_OP_CONV_FWD,
    ELLE__CPU_OP_CONV_BWD_DATA,
    ELLE__CPU_OP_CONV_BWD_WEIGHTS,
    ELLE__CPU_OP_BN_FWD,
    ELLE__CPU_OP_BN_BWD,
    ELLE__CPU_OP_POOL_FWD,
    ELLE__CPU_OP_POOL_BWD,
    ELLE__CPU_OP_IP_FWD,
    ELLE__CPU_OP_IP_BWD_DATA,
    ELLE__CPU_OP_IP_BWD_WEIGHTS,
};

typedef struct elle__cpu_key {
    int n;
    int64_t v[ELLE__CPU_KEY_LEN];
} elle__cpu_key;

/* A key for `op` that already holds the current OpenMP thread count. */
void elle__cpu_key_init(elle__cpu_key *k, int op);
void elle__cpu_key_add(elle__cpu_key *k, int64_t v);
/* n, c, h, w and layout. */
void elle__cpu_key_tensor(elle__cpu_key *k, const elle__tensor *t);

/* ---- primitives and entries ----------------------------------------------- */

/* A primitive with its scratchpad memory (NULL when it needs none). */
typedef struct elle__cpu_prim {
    dnnl_primitive_t prim;
    dnnl_memory_t scratch;
} elle__cpu_prim;

enum {
    ELLE__CPU_IN = 0,      /* read by the primitive */
    ELLE__CPU_OUT = 1,     /* written by the primitive */
    ELLE__CPU_OUT_ACC = 2, /* written by the primitive, added into the caller's (+=) */
};

#define ELLE__CPU_MAX_ARGS 12

typedef struct elle__cpu_arg {
    int id;                   /* DNNL_ARG_* */
    int mode;                 /* ELLE__CPU_IN / OUT / OUT_ACC */
    dnnl_memory_t user;       /* the caller's layout; handle set per call */
    dnnl_memory_t prim;       /* the primitive's layout (== user without reorder) */
    elle__cpu_prim reorder;   /* user -> prim (IN) or prim -> user (OUT*); prim NULL if none */
    void *buf;                /* backing of `prim` when reordering */
} elle__cpu_arg;

typedef struct elle__cpu_entry {
    elle__cpu_key key;
    dnnl_primitive_desc_t pd; /* kept for queries (workspace) */
    elle__cpu_prim main;
    int nargs;
    elle__cpu_arg args[ELLE__CPU_MAX_ARGS];
    /* the execute list: (id, prim memory) of each argument, + scratchpad */
    dnnl_exec_arg_t exec[ELLE__CPU_MAX_ARGS + 1];
    int nexec;
    size_t ws_bytes; /* workspace size (bn, pool); 0 when none */
    void *extra;     /* an op-specific buffer (bn: workspace or masked gradient) */
    size_t extra_bytes;
} elle__cpu_entry;

struct elle__cpu_impl {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    int wide_block;
    elle__cpu_entry **entries;
    size_t n_entries, cap_entries;
    void *scratch; /* user scratchpad shared by every primitive */
    size_t scratch_bytes;
    void *loop_scratch; /* the OpenMP loops' partial sums (cpu_tangent.c), grown only */
    size_t loop_scratch_bytes;
};

static inline elle__cpu_impl *elle__cpu_impl_of(elle__backend *be)
{
    return (elle__cpu_impl *)be->impl;
}

/* The cached entry for `key`, or NULL. */
elle__cpu_entry *elle__cpu_cache_find(elle__cpu_impl *impl, const elle__cpu_key *key);
/* A new empty entry with `key` (ELLE_ENOMEM). */
int elle__cpu_entry_new(const elle__cpu_key *key, elle__cpu_entry **out);
/* Takes ownership of `e`: caches it, or frees it on failure. */
int elle__cpu_cache_add(elle__cpu_impl *impl, elle__cpu_entry *e);
void elle__cpu_entry_free(elle__cpu_entry *e);

/* Set e->pd (taking ownership) and create e->main from it. */
int elle__cpu_entry_set_pd(elle__cpu_impl *impl, elle__cpu_entry *e, dnnl_primitive_desc_t pd);
/* Add an argument: `prim_md` is what the primitive wants, `user_md` the
 * caller's layout (NULL: the same). OUT_ACC always goes through a buffer and
 * an accumulating reorder. Returns the argument's index, or a negative status. */
int elle__cpu_entry_arg(elle__cpu_impl *impl, elle__cpu_entry *e, int id,
                        const dnnl_memory_desc_t *user_md, const dnnl_memory_desc_t *prim_md,
                        int mode);
/* The same with the primitive's md of `query` (index 0) on e->pd. */
int elle__cpu_entry_arg_q(elle__cpu_impl *impl, elle__cpu_entry *e, int id,
                          const dnnl_memory_desc_t *user_md, dnnl_query_t query, int mode);
/* Run the entry: ptrs[i] is the caller's data for argument i (an OUT_ACC
 * argument with NULL data is computed and dropped). */
int elle__cpu_entry_run(elle__cpu_impl *impl, elle__cpu_entry *e, void *const *ptrs);

/* Create a primitive from `pd` (not taken) with its scratchpad memory. */
int elle__cpu_prim_create(elle__cpu_impl *impl, elle__cpu_prim *p, const_dnnl_primitive_desc_t pd);
void elle__cpu_prim_destroy(elle__cpu_prim *p);

/* An attribute in user scratchpad mode (every primitive here uses it). */
int elle__cpu_attr_create(dnnl_primitive_attr_t *attr, int accumulate);

/* ---- memory descriptors ----------------------------------------------------- */

/* The 4-D descriptor of a tensor in its own layout. */
int elle__cpu_md_tensor(dnnl_memory_desc_t *md, const elle__tensor *t);
/* A 4-D f32 (n, c, h, w) descriptor in its layout `layout` (ELLE__LAYOUT_*). */
int elle__cpu_md_4d(dnnl_memory_desc_t *md, int64_t n, int64_t c, int64_t h, int64_t w,
                    int layout);
/* An f32 descriptor from dims and a format tag (dnnl_format_tag_any allowed). */
int elle__cpu_md(dnnl_memory_desc_t *md, int ndims, const int64_t *dims, dnnl_format_tag_t tag);

/* Whether the implementation oneDNN picked is a reference (slow) one. */
int elle__cpu_pd_is_ref(const_dnnl_primitive_desc_t pd);
/* The implementation name (for messages and timing notes). */
const char *elle__cpu_pd_impl(const_dnnl_primitive_desc_t pd);

/* 64-byte aligned zeroed buffer (ELLE_ENOMEM). */
int elle__cpu_buf_alloc(size_t bytes, void **out);

#endif /* ELLE_BACKEND_CPU_DNNL_UTIL_H */
