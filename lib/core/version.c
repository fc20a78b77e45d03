#include "elle/version.h"

int elle_version_number(void)
{
    return ELLE_VERSION_NUMBER;
}

const char *elle_version_string(void)
{
    return ELLE_VERSION_STRING;
}
