/*
 * oneDNN plumbing for the CPU backend: engine and stream, the primitive
 * cache, entry arguments with their reorders, the shared user scratchpad,
 * and the to_plain/from_plain reorders. See dnnl_util.h for the design.
 */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl_debug.h>

#include "backend/cpu/dnnl_util.h"
#include "backend/host_memory.h"


/* ---- errors ----------------------------------------------------------- */

int elle__cpu_dnnl_fail(const char *call, dnnl_status_t st, const char *file, int line)
{
    /* the function's name is the call text up to its '(' */
    size_t len = strcspn(call, "(");
    /* build directories see "../lib/..."; keep the path from lib/ on */
    const char *lib = strstr(file, "lib/");
    const char *status = dnnl_status2str(st);
    return elle__error_set(ELLE_EDEVICE, "oneDNN %.*s failed: %s (%s:%d)", (int)len, call,
                           status ? status : "unknown status", lib ? lib : file, line);
}

/* ---- buffers ---------------------------------------------------------- */

int elle__cpu_buf_alloc(size_t bytes, void **out)
{
    return elle__host_alloc("cpu", bytes, out);
}

/* ---- lifetime --------------------------------------------------------- */

int elle__cpu_impl_create(elle__cpu_impl **out, int device_index)
{
    *out = NULL;
    size_t count = dnnl_engine_get_count(dnnl_cpu);
    if (device_index < 0 || (size_t)device_index >= count)
        ELLE_FAIL(ELLE_EDEVICE, "cpu backend: device index %d out of range (oneDNN sees %zu CPU "
                                "engine%s)",
                  device_index, count, count == 1 ? "" : "s");
    elle__cpu_impl *impl = calloc(1, sizeof *impl);
    if (!impl)
        ELLE_FAIL(ELLE_ENOMEM, "cpu backend: out of memory");
    int rc = ELLE_OK;
    ELLE__DNNL_TRY_GOTO(rc, dnnl_engine_create(&impl->engine, dnnl_cpu, (size_t)device_index));
    ELLE__DNNL_TRY_GOTO(rc, dnnl_stream_create(&impl->stream, impl->engine,
                                               dnnl_stream_default_flags));
    /* nChw16c is what oneDNN's AVX-512 kernels want; AVX2 and SSE4.1 kernels
     * use nChw8c */
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    int avx512 = ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core) ==
                     (unsigned)dnnl_cpu_isa_avx512_core ||
                 ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_mic) ==
                     (unsigned)dnnl_cpu_isa_avx512_mic;
    impl->wide_block = avx512 ? 16 : 8;
    *out = impl;
cleanup:
    if (rc < 0)
        elle__cpu_impl_destroy(impl);
    return rc;
}

void elle__cpu_impl_destroy(elle__cpu_impl *impl)
{
    if (!impl)
        return;
    for (size_t i = 0; i < impl->n_entries; i++)
        elle__cpu_entry_free(impl->entries[i]);
    free(impl->entries);
    free(impl->scratch);
    free(impl->loop_scratch);
    if (impl->stream)
        dnnl_stream_destroy(impl->stream);
    if (impl->engine)
        dnnl_engine_destroy(impl->engine);
    free(impl);
}

int elle__cpu_loop_scratch(elle__backend *be, size_t bytes, void **out)
{
    elle__cpu_impl *impl = elle__cpu_impl_of(be);
    if (bytes > impl->loop_scratch_bytes) {
        void *buf;
        ELLE_TRY(elle__cpu_buf_alloc(bytes, &buf));
        free(impl->loop_scratch);
        impl->loop_scratch = buf;
        impl->loop_scratch_bytes = bytes;
    }
    *out = impl->loop_scratch;
    return ELLE_OK;
}

int elle__cpu_wide_block(const elle__cpu_impl *impl)
{
    return impl->wide_block;
}

size_t elle__cpu_cache_size(const elle__backend *be)
{
    const elle__cpu_impl *impl = be ? (const elle__cpu_impl *)be->impl : NULL;
    return impl ? impl->n_entries : 0;
}

int elle__cpu_stream_wait(elle__backend *be)
{
    ELLE__DNNL_TRY(dnnl_stream_wait(elle__cpu_impl_of(be)->stream));
    return ELLE_OK;
}

/* ---- keys --------------------------------------------------------------- */

void elle__cpu_key_init(elle__cpu_key *k, int op)
{
    memset(k, 0, sizeof *k);
    k->v[k->n++] = op;
    /* kernels partition work (and size their scratchpad) for the thread
     * count at creation; a primitive is only reused under the same count */
    k->v[k->n++] = omp_get_max_threads();
}

void elle__cpu_key_add(elle__cpu_key *k, int64_t v)
{
    /* keys are built by this backend's own code with a fixed number of
     * fields, well below the length */
    if (k->n < ELLE__CPU_KEY_LEN)
        k->v[k->n++] = v;
}

void elle__cpu_key_tensor(elle__cpu_key *k, const elle__tensor *t)
{
    elle__cpu_key_add(k, t->n);
    elle__cpu_key_add(k, t->c);
    elle__cpu_key_add(k, t->h);
    elle__cpu_key_add(k, t->w);
    elle__cpu_key_add(k, t->layout);
}

/* ---- cache ------------------------------------------------------------ */

elle__cpu_entry *elle__cpu_cache_find(elle__cpu_impl *impl, const elle__cpu_key *key)
{
    for (size_t i = 0; i < impl->n_entries; i++) {
        const elle__cpu_key *k = &impl->entries[i]->key;
        if (k->n == key->n && memcmp(k->v, key->v, (size_t)key->n * sizeof key->v[0]) == 0)
            return impl->entries[i];
    }
    return NULL;
}

int elle__cpu_entry_new(const elle__cpu_key *key, elle__cpu_entry **out)
{
    elle__cpu_entry *e = calloc(1, sizeof *e);
    *out = e;
    if (!e)
        ELLE_FAIL(ELLE_ENOMEM, "cpu: out of memory creating a primitive cache entry");
    e->key = *key;
    return ELLE_OK;
}

int elle__cpu_cache_add(elle__cpu_impl *impl, elle__cpu_entry *e)
{
    if (impl->n_entries == impl->cap_entries) {
        size_t cap = impl->cap_entries ? 2 * impl->cap_entries : 32;
        elle__cpu_entry **p = realloc(impl->entries, cap * sizeof *p);
        if (!p) {
            elle__cpu_entry_free(e);
            ELLE_FAIL(ELLE_ENOMEM, "cpu: out of memory growing the primitive cache");
        }
        impl->entries = p;
        impl->cap_entries = cap;
    }
    impl->entries[impl->n_entries++] = e;
    return ELLE_OK;
}

void elle__cpu_prim_destroy(elle__cpu_prim *p)
{
    if (p->prim)
        dnnl_primitive_destroy(p->prim);
    if (p->scratch)
        dnnl_memory_destroy(p->scratch);
    p->prim = NULL;
    p->scratch = NULL;
}

void elle__cpu_entry_free(elle__cpu_entry *e)
{
    if (!e)
        return;
    for (int i = 0; i < e->nargs; i++) {
        elle__cpu_arg *a = &e->args[i];
        elle__cpu_prim_destroy(&a->reorder);
        if (a->prim && a->prim != a->user)
            dnnl_memory_destroy(a->prim);
        if (a->user)
            dnnl_memory_destroy(a->user);
        free(a->buf);
    }
    elle__cpu_prim_destroy(&e->main);
    free(e->extra);
    if (e->pd)
        dnnl_primitive_desc_destroy(e->pd);
    free(e);
}

/* ---- primitives ------------------------------------------------------- */

int elle__cpu_attr_create(dnnl_primitive_attr_t *attr, int accumulate)
{
    *attr = NULL;
    int rc = ELLE_OK;
    dnnl_post_ops_t po = NULL;
    ELLE__DNNL_TRY(dnnl_primitive_attr_create(attr));
    ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_attr_set_scratchpad_mode(*attr,
                                                                     dnnl_scratchpad_mode_user));
    if (accumulate) {
        ELLE__DNNL_TRY_GOTO(rc, dnnl_post_ops_create(&po));
        ELLE__DNNL_TRY_GOTO(rc, dnnl_post_ops_append_sum(po, 1.0f));
        ELLE__DNNL_TRY_GOTO(rc, dnnl_primitive_attr_set_post_ops(*attr, po));
    }
cleanup:
    if (po)
        dnnl_post_ops_destroy(po);
    if (rc < 0) {
        dnnl_primitive_attr_destroy(*attr);
        *attr = NULL;
    }
    return rc;
}

int elle__cpu_prim_create(elle__cpu_impl *impl, elle__cpu_prim *p, const_dnnl_primitive_desc_t pd)
{
    p->prim = NULL;
    p->scratch = NULL;
    ELLE__DNNL_TRY(dnnl_primitive_create(&p->prim, pd));
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (bytes == 0)
        return ELLE_OK;
    /* the shared scratchpad grows here, never during execution; nothing
     * keeps its address, every execute sets it anew */
    if (bytes > impl->scratch_bytes) {
        void *buf;
        int rc = elle__cpu_buf_alloc(bytes, &buf);
        if (rc < 0) {
            elle__cpu_prim_destroy(p);
            return rc;
        }
        free(impl->scratch);
        impl->scratch = buf;
        impl->scratch_bytes = bytes;
    }
    dnnl_status_t st = dnnl_memory_create(&p->scratch, smd, impl->engine, DNNL_MEMORY_NONE);
    if (st != dnnl_success) {
        elle__cpu_prim_destroy(p);
        return elle__cpu_dnnl_fail("dnnl_memory_create(scratchpad)", st, __FILE__, __LINE__);
    }
    return ELLE_OK;
}

/* Execute a primitive with its arguments (room for one more: the
 * scratchpad). */
static int prim_exec(elle__cpu_impl *impl, const elle__cpu_prim *p, int nargs,
                     dnnl_exec_arg_t *args)
{
    if (p->scratch) {
        ELLE__DNNL_TRY(dnnl_memory_set_data_handle(p->scratch, impl->scratch));
        args[nargs].arg = DNNL_ARG_SCRATCHPAD;
        args[nargs].memory = p->scratch;
        nargs++;
    }
    ELLE__DNNL_TRY(dnnl_primitive_execute(p->prim, impl->stream, nargs, args));
    return ELLE_OK;
}

static int reorder_create(elle__cpu_impl *impl, elle__cpu_prim *p, const dnnl_memory_desc_t *src,
                          const dnnl_memory_desc_t *dst, int accumulate)
{
    dnnl_primitive_attr_t attr;
    dnnl_primitive_desc_t pd = NULL;
    int rc;
    ELLE_TRY(elle__cpu_attr_create(&attr, accumulate));
    ELLE__DNNL_TRY_GOTO(rc, dnnl_reorder_primitive_desc_create(&pd, src, impl->engine, dst,
                                                               impl->engine, attr));
    rc = elle__cpu_prim_create(impl, p, pd);
cleanup:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return rc;
}

int elle__cpu_entry_set_pd(elle__cpu_impl *impl, elle__cpu_entry *e, dnnl_primitive_desc_t pd)
{
    e->pd = pd;
    ELLE_TRY(elle__cpu_prim_create(impl, &e->main, pd));
    if (e->main.scratch) {
        e->exec[e->nexec].arg = DNNL_ARG_SCRATCHPAD;
        e->exec[e->nexec].memory = e->main.scratch;
        e->nexec++;
    }
    return ELLE_OK;
}

int elle__cpu_entry_arg(elle__cpu_impl *impl, elle__cpu_entry *e, int id,
                        const dnnl_memory_desc_t *user_md, const dnnl_memory_desc_t *prim_md,
                        int mode)
{
    if (e->nargs >= ELLE__CPU_MAX_ARGS || !prim_md)
        ELLE_FAIL(ELLE_ERROR, "cpu: internal error: bad primitive argument %d", id);
    elle__cpu_arg *a = &e->args[e->nargs++]; /* counted now: entry_free cleans a half-built one */
    memset(a, 0, sizeof *a);
    a->id = id;
    a->mode = mode;
    if (!user_md)
        user_md = prim_md;
    ELLE__DNNL_TRY(dnnl_memory_create(&a->user, user_md, impl->engine, DNNL_MEMORY_NONE));
    if (mode != ELLE__CPU_OUT_ACC && dnnl_memory_desc_equal(user_md, prim_md)) {
        a->prim = a->user;
    } else {
        ELLE_TRY(elle__cpu_buf_alloc(dnnl_memory_desc_get_size(prim_md), &a->buf));
        ELLE__DNNL_TRY(dnnl_memory_create(&a->prim, prim_md, impl->engine, a->buf));
        if (mode == ELLE__CPU_IN)
            ELLE_TRY(reorder_create(impl, &a->reorder, user_md, prim_md, 0));
        else
            ELLE_TRY(reorder_create(impl, &a->reorder, prim_md, user_md,
                                    mode == ELLE__CPU_OUT_ACC));
    }
    e->exec[e->nexec].arg = id;
    e->exec[e->nexec].memory = a->prim;
    e->nexec++;
    return e->nargs - 1;
}

int elle__cpu_entry_arg_q(elle__cpu_impl *impl, elle__cpu_entry *e, int id,
                          const dnnl_memory_desc_t *user_md, dnnl_query_t query, int mode)
{
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(e->pd, query, 0);
    if (!md)
        ELLE_FAIL(ELLE_ERROR, "cpu: internal error: primitive %s has no memory for query %d",
                  elle__cpu_pd_impl(e->pd), (int)query);
    return elle__cpu_entry_arg(impl, e, id, user_md, md, mode);
}

int elle__cpu_entry_run(elle__cpu_impl *impl, elle__cpu_entry *e, void *const *ptrs)
{
    dnnl_exec_arg_t args[3];
    for (int i = 0; i < e->nargs; i++) {
        elle__cpu_arg *a = &e->args[i];
        ELLE__DNNL_TRY(dnnl_memory_set_data_handle(a->user, ptrs[i]));
        if (a->mode == ELLE__CPU_IN && a->reorder.prim) {
            args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, a->user};
            args[1] = (dnnl_exec_arg_t){DNNL_ARG_DST, a->prim};
            ELLE_TRY(prim_exec(impl, &a->reorder, 2, args));
        }
    }
    if (e->main.scratch)
        ELLE__DNNL_TRY(dnnl_memory_set_data_handle(e->main.scratch, impl->scratch));
    ELLE__DNNL_TRY(dnnl_primitive_execute(e->main.prim, impl->stream, e->nexec, e->exec));
    for (int i = 0; i < e->nargs; i++) {
        elle__cpu_arg *a = &e->args[i];
        if (a->mode != ELLE__CPU_IN && a->reorder.prim && ptrs[i]) {
            args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, a->prim};
            args[1] = (dnnl_exec_arg_t){DNNL_ARG_DST, a->user};
            ELLE_TRY(prim_exec(impl, &a->reorder, 2, args));
        }
    }
    ELLE__DNNL_TRY(dnnl_stream_wait(impl->stream));
    return ELLE_OK;
}

/* ---- memory descriptors ---------------------------------------------------- */

int elle__cpu_md(dnnl_memory_desc_t *md, int ndims, const int64_t *dims, dnnl_format_tag_t tag)
{
    /* dnnl_dims_t is a full DNNL_MAX_NDIMS array: copy into one */
    dnnl_dims_t d = {0};
    for (int i = 0; i < ndims && i < DNNL_MAX_NDIMS; i++)
        d[i] = dims[i];
    ELLE__DNNL_TRY(dnnl_memory_desc_init_by_tag(md, ndims, d, dnnl_f32, tag));
    return ELLE_OK;
}

int elle__cpu_md_4d(dnnl_memory_desc_t *md, int64_t n, int64_t c, int64_t h, int64_t w,
                    int layout)
{
    dnnl_format_tag_t tag;
    switch (layout) {
    case ELLE__LAYOUT_PLAIN: tag = dnnl_nchw; break;
    case ELLE__CPU_LAYOUT_NCHW8C: tag = dnnl_nChw8c; break;
    case ELLE__CPU_LAYOUT_NCHW16C: tag = dnnl_nChw16c; break;
    default: ELLE_FAIL(ELLE_EINVAL, "cpu: unknown layout %d", layout);
    }
    const int64_t dims[4] = {n, c, h, w};
    return elle__cpu_md(md, 4, dims, tag);
}

int elle__cpu_md_tensor(dnnl_memory_desc_t *md, const elle__tensor *t)
{
    return elle__cpu_md_4d(md, t->n, t->c, t->h, t->w, t->layout);
}

const char *elle__cpu_pd_impl(const_dnnl_primitive_desc_t pd)
{
    const char *name = NULL;
    if (!pd || dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) != dnnl_success ||
        !name)
        return "?";
    return name;
}

int elle__cpu_pd_is_ref(const_dnnl_primitive_desc_t pd)
{
    return strncmp(elle__cpu_pd_impl(pd), "ref", 3) == 0;
}

/* ---- layouts: to_plain / from_plain ------------------------------------ */

int elle__cpu_layout_block(int layout)
{
    switch (layout) {
    case ELLE__LAYOUT_PLAIN: return 1;
    case ELLE__CPU_LAYOUT_NCHW8C: return 8;
    case ELLE__CPU_LAYOUT_NCHW16C: return 16;
    default: return 0;
    }
}

/* One cached reorder between a tensor's layout and plain NCHW. */
static int plain_reorder(elle__backend *be, const char *op, int to_plain, const elle__tensor *t,
                         const float *src, float *dst)
{
    elle__cpu_impl *impl = elle__cpu_impl_of(be);
    elle__cpu_key key;
    elle__cpu_key_init(&key, to_plain ? ELLE__CPU_OP_TO_PLAIN : ELLE__CPU_OP_FROM_PLAIN);
    elle__cpu_key_tensor(&key, t);
    elle__cpu_entry *e = elle__cpu_cache_find(impl, &key);
    if (!e) {
        dnnl_memory_desc_t tmd, pmd;
        ELLE_TRY(elle__cpu_md_tensor(&tmd, t));
        ELLE_TRY(elle__cpu_md_4d(&pmd, t->n, t->c, t->h, t->w, ELLE__LAYOUT_PLAIN));
        const dnnl_memory_desc_t *smd = to_plain ? &tmd : &pmd, *dmd = to_plain ? &pmd : &tmd;
        dnnl_primitive_attr_t attr = NULL;
        dnnl_primitive_desc_t pd = NULL;
        int rc;
        ELLE_TRY(elle__cpu_entry_new(&key, &e));
        ELLE_TRY_GOTO(rc, elle__cpu_attr_create(&attr, 0));
        ELLE__DNNL_TRY_GOTO(rc, dnnl_reorder_primitive_desc_create(&pd, smd, impl->engine, dmd,
                                                                   impl->engine, attr));
        rc = elle__cpu_entry_set_pd(impl, e, pd);
        pd = NULL; /* owned by the entry, even on failure */
        if (rc < 0)
            goto cleanup;
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_SRC, NULL, smd, ELLE__CPU_IN));
        ELLE_TRY_GOTO(rc, elle__cpu_entry_arg(impl, e, DNNL_ARG_DST, NULL, dmd, ELLE__CPU_OUT));
        rc = elle__cpu_cache_add(impl, e);
        e = rc < 0 ? NULL : e;
    cleanup:
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (pd)
            dnnl_primitive_desc_destroy(pd);
        if (rc < 0) {
            if (e)
                elle__cpu_entry_free(e);
            elle__error_prefix("cpu %s of %s", op, elle__cpu_shape(t).s);
            return rc;
        }
    }
    void *ptrs[2] = {(void *)(uintptr_t)src, dst};
    int rc = elle__cpu_entry_run(impl, e, ptrs);
    if (rc < 0)
        elle__error_prefix("cpu %s of %s", op, elle__cpu_shape(t).s);
    return rc;
}

int elle__cpu_to_plain(elle__backend *be, const elle__tensor *src, float *dst)
{
    ELLE_TRY(elle__cpu_check_tensor("to_plain", "src", src));
    ELLE_TRY(elle__cpu_check_ptr("to_plain", "dst", dst));
    if (src->layout == ELLE__LAYOUT_PLAIN) {
        memmove(dst, src->data, (size_t)elle__tensor_numel(src) * sizeof(float));
        return ELLE_OK;
    }
    return plain_reorder(be, "to_plain", 1, src, src->data, dst);
}

int elle__cpu_from_plain(elle__backend *be, const float *src, elle__tensor *dst)
{
    ELLE_TRY(elle__cpu_check_ptr("from_plain", "src", src));
    ELLE_TRY(elle__cpu_check_tensor("from_plain", "dst", dst));
    if (dst->layout == ELLE__LAYOUT_PLAIN) {
        memmove(dst->data, src, (size_t)elle__tensor_numel(dst) * sizeof(float));
        return ELLE_OK;
    }
    /* the reorder writes the padded channels too (zeros) */
    return plain_reorder(be, "from_plain", 0, dst, src, dst->data);
}
