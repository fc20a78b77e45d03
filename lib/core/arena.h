/*
 * Arena: one backend allocation carved into aligned slices. Used in two
 * passes, as llm.c and ggml's gallocr: first `measure` (slices counted, no
 * memory), then `commit` (one allocation), then the same sequence of
 * `take` calls hands out pointers. Nothing is freed individually.
 */
#ifndef ELLE_CORE_ARENA_H
#define ELLE_CORE_ARENA_H

#include <stddef.h>

#include "backend/backend.h"

#define ELLE__ARENA_ALIGN 64

typedef struct elle__arena {
    elle__backend *be;
    char *base;     /* NULL while measuring */
    size_t size;    /* committed size */
    size_t used;    /* bytes handed out (or measured) so far */
} elle__arena;

/* Start measuring (no memory). */
void elle__arena_measure(elle__arena *a, elle__backend *be);
/* Reserve `bytes` (aligned). While measuring returns NULL in *out and only
 * counts; after commit returns the slice. ELLE_ENOMEM if the committed size
 * would be exceeded. */
int elle__arena_take(elle__arena *a, size_t bytes, void **out);
/* Allocate what was measured and rewind, so the same take sequence can run. */
int elle__arena_commit(elle__arena *a);
/* Rewind a committed arena to its start (memory kept). */
void elle__arena_rewind(elle__arena *a);
/* Free the memory. */
void elle__arena_release(elle__arena *a);

#endif
