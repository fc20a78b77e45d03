#ifndef ELLE_CORE_CONTEXT_H
#define ELLE_CORE_CONTEXT_H

#include "backend/backend.h"
#include "elle/context.h"

struct elle_context {
    elle__backend be;
    int device_index;
    int threads;
    int live_children; /* models etc. created from this context and not yet freed */
};

#endif
