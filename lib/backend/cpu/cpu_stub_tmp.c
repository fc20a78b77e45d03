/* TEMPORARY: replaced by the oneDNN backend. */
#include "backend/backend.h"
#include "core/error.h"
int elle__backend_cpu_create(elle__backend *be, int device_index)
{
    (void)be; (void)device_index;
    ELLE_FAIL(ELLE_EUNSUPPORTED, "cpu backend under construction");
}
