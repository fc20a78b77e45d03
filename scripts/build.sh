#!/bin/sh
# Configure (once) and build libelle.
#
#   scripts/build.sh [meson options...]
#
# The build directory is build/ at the repository root (ELLE_BUILD_DIR
# overrides it). It is configured with `meson setup` the first time; when it
# is already configured it is left as it is, and any options given are
# applied with `meson configure`. Then `ninja` builds everything.
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$root"
builddir=${ELLE_BUILD_DIR:-build}

if [ -f "$builddir/meson-private/coredata.dat" ] && [ -f "$builddir/build.ninja" ]; then
    if [ "$#" -gt 0 ]; then
        meson configure "$builddir" "$@"
    fi
else
    meson setup "$builddir" "$@"
fi

ninja -C "$builddir"
