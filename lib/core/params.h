/*
 * Parameter tables behind every elle_<obj>_set_param / _get_param /
 * _param_bounds / _param_from_name family: one row per stable enum value with
 * its name, bounds and whether it must be an integer. Objects share this
 * lookup instead of each writing its own switch.
 */
#ifndef ELLE_CORE_PARAMS_H
#define ELLE_CORE_PARAMS_H

#include <stddef.h>

typedef struct elle__param_spec {
    int id;            /* the public enum value */
    const char *name;  /* lookup key for bindings and the CLI */
    double lo, hi;     /* inclusive bounds */
    int integer;       /* 1: value must be integral */
    double default_value;
} elle__param_spec;

/* Row for `id`, or NULL. */
const elle__param_spec *elle__param_find(const elle__param_spec *table, size_t n, int id);

/* Check `value` against the row for `id`: ELLE_EINVAL (message names `who`,
 * the parameter and the bounds) when unknown, NaN, out of bounds or not integral. */
int elle__param_check(const elle__param_spec *table, size_t n, int id, double value,
                      const char *who);

/* Id by name, ELLE_EINVAL when unknown. */
int elle__param_lookup(const elle__param_spec *table, size_t n, const char *name, int *out,
                       const char *who);

#endif
