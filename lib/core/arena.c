#include "core/arena.h"

#include "core/error.h"

static size_t align_up(size_t n)
{
    return (n + ELLE__ARENA_ALIGN - 1) & ~(size_t)(ELLE__ARENA_ALIGN - 1);
}

void elle__arena_measure(elle__arena *a, elle__backend *be)
{
    a->be = be;
    a->base = NULL;
    a->size = 0;
    a->used = 0;
}

int elle__arena_take(elle__arena *a, size_t bytes, void **out)
{
    size_t n = align_up(bytes);
    if (!a->base) {
        *out = NULL;
        a->used += n;
        return ELLE_OK;
    }
    if (a->used + n > a->size)
        ELLE_FAIL(ELLE_ENOMEM, "arena: request of %zu bytes exceeds the planned %zu (used %zu)",
                  bytes, a->size, a->used);
    *out = a->base + a->used;
    a->used += n;
    return ELLE_OK;
}

int elle__arena_commit(elle__arena *a)
{
    size_t n = a->used ? a->used : ELLE__ARENA_ALIGN;
    void *p = NULL;
    ELLE_TRY(a->be->ops->alloc(a->be, n, &p));
    a->base = p;
    a->size = n;
    a->used = 0;
    return ELLE_OK;
}

void elle__arena_rewind(elle__arena *a)
{
    a->used = 0;
}

void elle__arena_release(elle__arena *a)
{
    if (a->base && a->be)
        a->be->ops->free(a->be, a->base);
    a->base = NULL;
    a->size = 0;
    a->used = 0;
}
