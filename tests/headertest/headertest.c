/*
 * The public headers compiled as strict C99 (-std=c99 -Wall -Wextra
 * -pedantic -Werror), linked against libelle.so: every ELLE_API function is
 * referenced (elle_api_refs.h), so a declaration the library does not export
 * fails to link.
 */
#include <elle.h>

#include "elle_api_refs.h"

int main(void)
{
    size_t i, n = 0;
    for (i = 0; i < ELLE_HEADERTEST_NREFS; i++)
        n += elle_headertest_refs[i] != 0;
    return n == ELLE_HEADERTEST_NREFS && elle_version_number() == ELLE_VERSION_NUMBER ? 0 : 1;
}
