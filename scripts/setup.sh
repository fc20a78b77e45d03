#!/bin/sh
# Install the Debian 12 packages libelle needs to build, test and run its
# demo. Idempotent: asks dpkg which packages are missing and installs only
# those (apt-get update runs only when something is missing).
#
#   scripts/setup.sh          install what is missing
#   scripts/setup.sh --check  list what is missing, install nothing (exit 1 if any)
set -eu

# ---------------------------------------------------------------------------
# Debian packages, one per line. Later work appends here (and only here).
# ---------------------------------------------------------------------------
ELLE_PACKAGES='
build-essential
pkg-config
meson
ninja-build
cmake
libdnnl-dev
libcmocka-dev
zlib1g-dev
libjansson-dev
libmatio-dev
dataset-fashion-mnist
binutils
g++
'
#   build-essential, pkg-config, meson, ninja-build: the build
#   cmake:                 meson finds oneDNN through its CMake package (no .pc in Debian)
#   libdnnl-dev:           oneDNN 2.6, the CPU backend
#   libcmocka-dev:         unit and API tests
#   zlib1g-dev:            gzip-compressed data sets (.gz IDX files), CRC checksums
#   libjansson-dev:        JSON (run summaries, safetensors headers)
#   libmatio-dev:          MATLAB .mat files (SVHN)
#   dataset-fashion-mnist: the demo's data set (/usr/share/datasets/fashion-mnist)
#   binutils:              nm / readelf for the ABI test
#   g++:                   the C++ header test

check_only=0
case "${1:-}" in
--check) check_only=1 ;;
'') ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "setup.sh: dpkg-query not found; this script supports Debian 12 only." >&2
    # shellcheck disable=SC2086 # one word per package
    echo "setup.sh: install the equivalents of:" $ELLE_PACKAGES >&2
    exit 1
fi

missing=''
for p in $ELLE_PACKAGES; do
    # A package removed but not purged is listed with status "deinstall ok
    # config-files": only "install ok installed" counts.
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
    *" installed") ;;
    *) missing="$missing $p" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "setup.sh: all packages present"
    exit 0
fi

echo "setup.sh: missing:$missing"
if [ "$check_only" -eq 1 ]; then
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=''
elif command -v sudo >/dev/null 2>&1; then
    sudo='sudo'
else
    echo "setup.sh: not root and sudo is not available; install as root:" >&2
    echo "    apt-get install -y --no-install-recommends$missing" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update
# shellcheck disable=SC2086 # word splitting of the package list is intended
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
echo "setup.sh: installed:$missing"
