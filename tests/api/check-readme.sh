#!/bin/sh
# The C example of README.md works as documented, and examples/quickstart.c
# still agrees with it.
#
#   check-readme.sh SRCROOT BUILDROOT PKGCONFIG CC...
#
# 1. Extracts the first ```c block of README.md, compiles it with the
#    README's uninstalled-build recipe
#      cc app.c $(PKG_CONFIG_PATH=build/meson-uninstalled pkg-config --cflags --libs elle)
#    and runs it with LD_LIBRARY_PATH=build/lib (it must exit 0).
# 2. Every line of that block from the first declaration to the return,
#    except the elle_context_create line (quickstart takes the backend from
#    its command line), appears verbatim in examples/quickstart.c.
set -eu

srcroot=${1:?usage: check-readme.sh SRCROOT BUILDROOT PKGCONFIG CC...}
buildroot=${2:?build root}
pkgconfig=${3:?pkg-config}
shift 3
[ "$#" -gt 0 ] || { echo "check-readme.sh: no C compiler given" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

awk '/^```c[ \t]*$/ && !done { f = 1; next } f && /^```/ { f = 0; done = 1 } f' \
    "$srcroot/README.md" >"$tmp/app.c"
if [ ! -s "$tmp/app.c" ]; then
    echo "FAIL: README.md has no \`\`\`c block"
    exit 1
fi

# 2. agreement with examples/quickstart.c
awk '/elle_context \*ctx = NULL;/ { f = 1 } f { print } /return rc == ELLE_OK/ { f = 0 }' "$tmp/app.c" |
    grep -v 'elle_context_create(' | sed 's/^[ \t]*//; s/[ \t]*$//' | grep -v '^$' >"$tmp/lines"
if [ ! -s "$tmp/lines" ]; then
    echo "FAIL: could not find the example body in README.md"
    fail=1
fi
sed 's/^[ \t]*//; s/[ \t]*$//' "$srcroot/examples/quickstart.c" >"$tmp/quickstart"
while IFS= read -r line; do
    if ! grep -qxF -- "$line" "$tmp/quickstart"; then
        echo "FAIL: README.md line not in examples/quickstart.c: $line"
        fail=1
    fi
done <"$tmp/lines"
[ "$fail" -eq 0 ] && echo "README example and examples/quickstart.c agree ($(wc -l <"$tmp/lines") lines)"

# 1. compile and run as the README says
if ! flags=$(PKG_CONFIG_PATH="$buildroot/meson-uninstalled" "$pkgconfig" --cflags --libs elle); then
    echo "FAIL: pkg-config --cflags --libs elle failed with PKG_CONFIG_PATH=$buildroot/meson-uninstalled"
    exit 1
fi
# shellcheck disable=SC2086 # pkg-config output is a list of flags
if ! "$@" -std=c11 -Wall -Wextra -Werror "$tmp/app.c" $flags -o "$tmp/app"; then
    echo "FAIL: the README example does not compile with: cc app.c $flags"
    exit 1
fi
echo "compiled: cc app.c $flags"
if ! LD_LIBRARY_PATH="$buildroot/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/app"; then
    echo "FAIL: the README example exits with an error (output above)"
    fail=1
fi
exit "$fail"
