#!/bin/sh
# Public header checks (run by meson, suite 'api').
#
#   check-headers.sh alone    SRCROOT c|c++ COMPILER...
#       every header under include/ compiles on its own, included twice
#       (include guards), as strict C99 or C++11
#   check-headers.sh umbrella SRCROOT
#       include/elle.h includes every include/elle/*.h
#   check-headers.sh link     SRCROOT c|c++ LIBELLE COMPILER...
#       headertest.c / headertest.cpp (elle.h plus the address of every
#       ELLE_API function, from gen-refs.sh) compiles strictly, links
#       against LIBELLE (the built libelle.so) and runs
#
# Strict means -std=c99 or -std=c++11 with -Wall -Wextra -pedantic -Werror.
set -eu

mode=${1:?usage: check-headers.sh alone|umbrella|link SRCROOT ...}
srcroot=${2:?source root}
shift 2
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
inc="$srcroot/include"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

lang_flags() {
    case "$1" in
    c) echo '-x c -std=c99 -Wall -Wextra -pedantic -Werror' ;;
    c++) echo '-x c++ -std=c++11 -Wall -Wextra -pedantic -Werror' ;;
    *) echo "check-headers.sh: unknown language '$1'" >&2; exit 2 ;;
    esac
}

case "$mode" in
alone)
    lang=${1:?language}
    shift
    [ "$#" -gt 0 ] || { echo "check-headers.sh: no compiler given" >&2; exit 2; }
    flags=$(lang_flags "$lang")
    count=0
    for h in $(cd "$inc" && find . -name '*.h' -type f | sed 's:^\./::' | LC_ALL=C sort); do
        count=$((count + 1))
        printf '#include <%s>\n#include <%s>\nint elle_headertest_dummy;\n' "$h" "$h" >"$tmp/t.src"
        # shellcheck disable=SC2086 # $flags is a list
        if "$@" $flags -fsyntax-only -I"$inc" "$tmp/t.src" 2>"$tmp/err"; then
            echo "ok   $h ($lang)"
        else
            echo "FAIL $h ($lang):"
            sed 's/^/    /' "$tmp/err"
            fail=1
        fi
    done
    if [ "$count" -eq 0 ]; then
        echo "FAIL: no headers found under $inc"
        fail=1
    fi
    ;;

umbrella)
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]\([^>"]*\)[>"].*/\1/p' \
        "$inc/elle.h" >"$tmp/included"
    for h in $(cd "$inc" && find elle -maxdepth 1 -name '*.h' -type f | LC_ALL=C sort); do
        if grep -qxF "$h" "$tmp/included"; then
            echo "ok   elle.h includes $h"
        else
            echo "FAIL: include/elle.h does not include $h (add #include \"$h\")"
            fail=1
        fi
    done
    ;;

link)
    lang=${1:?language}
    lib=${2:?libelle.so}
    shift 2
    [ "$#" -gt 0 ] || { echo "check-headers.sh: no compiler given" >&2; exit 2; }
    flags=$(lang_flags "$lang")
    case "$lang" in
    c) src="$here/headertest.c" ;;
    *) src="$here/headertest.cpp" ;;
    esac
    libdir=$(CDPATH='' cd -- "$(dirname -- "$lib")" && pwd)
    "$here/gen-refs.sh" "$tmp/elle_api_refs.h"
    echo "referencing $(grep -c 'ELLE_HT_REF(elle_' "$tmp/elle_api_refs.h") ELLE_API functions"
    # shellcheck disable=SC2086 # $flags is a list
    if ! "$@" $flags -I"$inc" -I"$tmp" -c "$src" -o "$tmp/headertest.o" 2>"$tmp/err"; then
        head -n 60 "$tmp/err" | sed 's/^/    /'
        echo "FAIL: $(basename "$src") does not compile as $lang (first errors above; an ELLE_API"
        echo "      function not declared through elle.h shows as 'undeclared')"
        exit 1
    fi
    if ! "$@" "$tmp/headertest.o" -L"$libdir" -lelle -o "$tmp/headertest" 2>"$tmp/err"; then
        head -n 60 "$tmp/err" | sed 's/^/    /'
        echo "FAIL: $(basename "$src") does not link against $libdir/libelle.so (errors above):"
        echo "      a declared function is not exported, or lacks extern \"C\""
        exit 1
    fi
    if ! LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/headertest"; then
        echo "FAIL: $(basename "$src") ran and returned an error"
        fail=1
    else
        echo "ok   $(basename "$src") compiled as $lang, linked and ran"
    fi
    ;;

*)
    echo "check-headers.sh: unknown mode '$mode'" >&2
    exit 2
    ;;
esac
exit "$fail"
