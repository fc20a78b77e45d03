#!/bin/sh
# Run the benchmark program and keep its result.
#
#   scripts/bench.sh [elle-bench arguments...]
#
# Contract with bench/ (built as build/bench/elle-bench): `elle-bench --json
# PATH` prints a table on stdout, writes one JSON object to PATH and exits 0
# on success. This script stores that object as out/bench/bench.json; the
# file is replaced only when the run succeeds. Arguments are passed through
# (elle-bench --help lists them, e.g. --batch 64 --threads 2).
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$root"
builddir=${ELLE_BUILD_DIR:-build}
bin="$builddir/bench/elle-bench"
outdir=out/bench

if [ ! -x "$bin" ]; then
    echo "bench.sh: $bin does not exist." >&2
    echo "bench.sh: the benchmark program is not part of this build yet (bench/meson.build" >&2
    echo "bench.sh: must define the 'elle-bench' executable); run scripts/build.sh after adding it." >&2
    exit 1
fi

mkdir -p "$outdir"
tmp="$outdir/.bench.json.tmp"
trap 'rm -f "$tmp"' EXIT
rm -f "$tmp"
"$bin" --json "$tmp" "$@"
if [ ! -s "$tmp" ]; then
    echo "bench.sh: $bin wrote no JSON to $tmp" >&2
    exit 1
fi
if command -v python3 >/dev/null 2>&1; then
    if ! python3 -m json.tool "$tmp" >/dev/null; then
        echo "bench.sh: $bin wrote invalid JSON" >&2
        exit 1
    fi
fi
mv "$tmp" "$outdir/bench.json"
echo "bench.sh: wrote $outdir/bench.json"
