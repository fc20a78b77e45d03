/* TEMPORARY: replaced by the reference backend. */
#include "backend/backend.h"
#include "core/error.h"
int elle__backend_ref_create(elle__backend *be)
{
    (void)be;
    ELLE_FAIL(ELLE_EUNSUPPORTED, "reference backend under construction");
}
