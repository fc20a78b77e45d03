/*
 * libelle — version macros and run-time version queries.
 *
 * The macros describe the headers a program was compiled against; the
 * functions describe the library it runs with. Bindings compare the two.
 * meson reads ELLE_VERSION_MAJOR/MINOR/PATCH from this file (scripts/version.sh),
 * so this is the single source of truth for the version.
 */
#ifndef ELLE_VERSION_H
#define ELLE_VERSION_H

#include "common.h"

#define ELLE_VERSION_MAJOR 0
#define ELLE_VERSION_MINOR 1
#define ELLE_VERSION_PATCH 0
#define ELLE_VERSION_NUMBER \
    (ELLE_VERSION_MAJOR * 10000 + ELLE_VERSION_MINOR * 100 + ELLE_VERSION_PATCH)
#define ELLE_VERSION_STRING "0.1.0"

ELLE_BEGIN_DECL

/** Version of the loaded library as major*10000 + minor*100 + patch. @since v0.1 */
ELLE_API int elle_version_number(void);

/** Version of the loaded library as "MAJOR.MINOR.PATCH" (static string). @since v0.1 */
ELLE_API const char *elle_version_string(void);

ELLE_END_DECL

#endif /* ELLE_VERSION_H */
