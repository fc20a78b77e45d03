#include "core/params.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

const elle__param_spec *elle__param_find(const elle__param_spec *table, size_t n, int id)
{
    for (size_t i = 0; i < n; i++)
        if (table[i].id == id)
            return &table[i];
    return NULL;
}

int elle__param_check(const elle__param_spec *table, size_t n, int id, double value,
                      const char *who)
{
    const elle__param_spec *s = elle__param_find(table, n, id);
    if (!s)
        ELLE_FAIL(ELLE_EINVAL, "%s: unknown parameter %d", who, id);
    if (isnan(value))
        ELLE_FAIL(ELLE_EINVAL, "%s: parameter '%s' is NaN", who, s->name);
    if (value < s->lo || value > s->hi)
        ELLE_FAIL(ELLE_EINVAL, "%s: parameter '%s' = %g outside [%g, %g]", who, s->name, value,
                  s->lo, s->hi);
    if (s->integer && value != floor(value))
        ELLE_FAIL(ELLE_EINVAL, "%s: parameter '%s' = %g must be an integer", who, s->name, value);
    return ELLE_OK;
}

int elle__param_lookup(const elle__param_spec *table, size_t n, const char *name, int *out,
                       const char *who)
{
    if (!name || !out)
        ELLE_FAIL(ELLE_EINVAL, "%s: name and out must not be NULL", who);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(table[i].name, name) == 0) {
            *out = table[i].id;
            return ELLE_OK;
        }
    }
    ELLE_FAIL(ELLE_EINVAL, "%s: unknown parameter name '%s'", who, name);
}
