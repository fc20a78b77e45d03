#!/bin/sh
# Print the version from include/elle/version.h (the single source of truth).
h="$(dirname "$0")/../include/elle/version.h"
maj=$(sed -n 's/^#define ELLE_VERSION_MAJOR \([0-9]*\).*/\1/p' "$h")
min=$(sed -n 's/^#define ELLE_VERSION_MINOR \([0-9]*\).*/\1/p' "$h")
pat=$(sed -n 's/^#define ELLE_VERSION_PATCH \([0-9]*\).*/\1/p' "$h")
echo "$maj.$min.$pat"
