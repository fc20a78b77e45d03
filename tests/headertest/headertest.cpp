/*
 * The public headers compiled as C++11 (-std=c++11 -Wall -Wextra -pedantic
 * -Werror), linked against libelle.so. Every ELLE_API function is referenced
 * (elle_api_refs.h): a declaration outside ELLE_BEGIN_DECL/ELLE_END_DECL
 * would get a C++-mangled name and fail to link.
 */
#include <elle.h>

#include <cstring>

#include "elle_api_refs.h"

int main()
{
    std::size_t n = 0;
    for (std::size_t i = 0; i < ELLE_HEADERTEST_NREFS; i++)
        n += elle_headertest_refs[i] != nullptr;
    const bool version_ok = elle_version_number() == ELLE_VERSION_NUMBER &&
                            std::strcmp(elle_version_string(), ELLE_VERSION_STRING) == 0;
    // enums and handles are usable from C++ without casts in the common cases
    elle_backend b = ELLE_BACKEND_REFERENCE;
    elle_context *ctx = nullptr;
    const int rc = elle_context_create(&ctx, b, 0);
    elle_context_free(ctx);
    return n == ELLE_HEADERTEST_NREFS && version_ok && rc == ELLE_OK ? 0 : 1;
}
