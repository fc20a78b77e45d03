#!/bin/sh
# ABI checks for libelle.so, run by meson (suite 'api').
#
#   check-abi.sh symbols  SRCROOT LIB NM       headers == libelle.map == exports
#   check-abi.sh soname   SRCROOT LIB READELF  SONAME is libelle.so.0.<MINOR> before 1.0, libelle.so.<MAJOR> after
#   check-abi.sh pkgconfig SRCROOT BUILDROOT PKGCONFIG CC...
#                         elle.pc exists with the project version, and a client
#                         compiled with `pkg-config --cflags --libs elle`
#                         against the uninstalled build links and runs
#
# Every check prints what differs and exits 1 on a failure.
set -eu

mode=${1:?usage: check-abi.sh symbols|soname|pkgconfig ...}
shift
srcroot=${1:?source root}
shift

fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

version=$("$srcroot/scripts/version.sh")
major=${version%%.*}

# Print the lines of $2 missing from $3 under the heading $1; mark a failure.
report_missing() {
    only=$(LC_ALL=C comm -23 "$2" "$3")
    if [ -n "$only" ]; then
        echo "FAIL: $1:"
        printf '%s\n' "$only" | sed 's/^/    /'
        fail=1
    fi
}

case "$mode" in
symbols)
    lib=${1:?library path}
    nm=${2:-nm}

    # 1. names declared with ELLE_API in include/
    "$srcroot/scripts/gen-map.sh" --names >"$tmp/headers"

    # 2. global names of libelle.map (comments removed, one name per entry)
    sed -e 's:/\*.*\*/::g' "$srcroot/libelle.map" | tr -s '[:space:]' '\n' | awk '
        /\/\*/ { incomment = 1 }
        incomment { if ($0 ~ /\*\//) incomment = 0; next }
        $0 == "global:" { g = 1; next }
        $0 == "local:" { g = 0; next }
        g && $0 != "" { sub(/;$/, ""); if ($0 != "") print }
    ' | LC_ALL=C sort -u >"$tmp/map"
    if grep -n '[*?[]' "$tmp/map" >/dev/null; then
        echo "FAIL: libelle.map exports wildcard patterns (list every symbol; run scripts/gen-map.sh):"
        grep '[*?[]' "$tmp/map" | sed 's/^/    /'
        fail=1
    fi

    # 3. dynamic symbols libelle.so defines (functions and data), without
    #    version suffixes and without the version node itself (type A)
    "$nm" -D --defined-only "$lib" | awk 'NF >= 3 && $2 != "A" { sub(/@.*$/, "", $3); print $3 }' |
        LC_ALL=C sort -u >"$tmp/exports"

    echo "ELLE_API declarations: $(wc -l <"$tmp/headers"), libelle.map entries: $(wc -l <"$tmp/map"), exported by $(basename "$lib"): $(wc -l <"$tmp/exports")"
    report_missing "declared ELLE_API in include/ but not in libelle.map (run scripts/gen-map.sh)" "$tmp/headers" "$tmp/map"
    report_missing "in libelle.map but not declared ELLE_API in include/ (run scripts/gen-map.sh)" "$tmp/map" "$tmp/headers"
    report_missing "declared ELLE_API but not exported by the library (not implemented, or not in a meson.build)" "$tmp/headers" "$tmp/exports"
    report_missing "exported by the library but not declared ELLE_API (a symbol leaks)" "$tmp/exports" "$tmp/headers"

    # libelle.map must be exactly what the generator writes
    "$srcroot/scripts/gen-map.sh" --stdout >"$tmp/map.expected"
    if ! diff -u "$srcroot/libelle.map" "$tmp/map.expected" >"$tmp/map.diff"; then
        echo "FAIL: libelle.map is not what scripts/gen-map.sh generates (run it); diff:"
        sed 's/^/    /' "$tmp/map.diff"
        fail=1
    fi
    ;;

soname)
    lib=${1:?library path}
    readelf=${2:-readelf}
    # 0.x: libelle.so.0.<MINOR> (the ABI may break in a minor release); else libelle.so.<MAJOR>
    if [ "$major" = 0 ]; then
        want="libelle.so.0.$(echo "$version" | cut -d. -f2)"
    else
        want="libelle.so.$major"
    fi
    got=$("$readelf" -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    echo "SONAME of $(basename "$lib"): '${got}', expected '$want' (version $version)"
    if [ "$got" != "$want" ]; then
        echo "FAIL: wrong soname"
        fail=1
    fi
    ;;

pkgconfig)
    buildroot=${1:?build root}
    pkgconfig=${2:?pkg-config}
    shift 2
    [ "$#" -gt 0 ] || { echo "check-abi.sh pkgconfig: no C compiler given" >&2; exit 2; }

    pc="$buildroot/meson-private/elle.pc"
    if [ ! -f "$pc" ]; then
        echo "FAIL: $pc does not exist"
        fail=1
    else
        pcver=$(sed -n 's/^Version: *//p' "$pc")
        echo "$pc: Version: $pcver (project $version)"
        if [ "$pcver" != "$version" ]; then
            echo "FAIL: elle.pc has version '$pcver', expected '$version'"
            fail=1
        fi
        if ! grep -q -- '-lelle' "$pc"; then
            echo "FAIL: elle.pc does not link -lelle"
            fail=1
        fi
    fi

    # The README's recipe for an uninstalled build.
    export PKG_CONFIG_PATH="$buildroot/meson-uninstalled"
    if ! flags=$("$pkgconfig" --cflags --libs elle); then
        echo "FAIL: PKG_CONFIG_PATH=$PKG_CONFIG_PATH pkg-config --cflags --libs elle failed"
        exit 1
    fi
    echo "PKG_CONFIG_PATH=$PKG_CONFIG_PATH pkg-config --cflags --libs elle: $flags"
    cat >"$tmp/app.c" <<'C'
#include <elle.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    printf("libelle %s (headers %s)\n", elle_version_string(), ELLE_VERSION_STRING);
    return elle_version_number() == ELLE_VERSION_NUMBER
                   && strcmp(elle_version_string(), ELLE_VERSION_STRING) == 0
               ? 0
               : 1;
}
C
    # shellcheck disable=SC2086 # pkg-config output is a list of flags
    if ! "$@" "$tmp/app.c" -o "$tmp/app" $flags; then
        echo "FAIL: a client does not compile and link with the pkg-config flags above"
        fail=1
    else
        libdir=$("$pkgconfig" --variable=libdir elle)
        # the uninstalled .pc's Libs point at $prefix/lib; run with both on the path
        if ! LD_LIBRARY_PATH="$buildroot/lib:$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/app"; then
            echo "FAIL: the client compiled with pkg-config does not run"
            fail=1
        fi
    fi
    ;;

*)
    echo "check-abi.sh: unknown mode '$mode'" >&2
    exit 2
    ;;
esac

if [ "$fail" -ne 0 ]; then
    exit 1
fi
echo "OK"
