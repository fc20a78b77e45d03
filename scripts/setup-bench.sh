#!/bin/sh
# Install what the PyTorch side of `make bench` needs: Debian's python3-torch
# and python3-numpy, for Debian's own interpreter /usr/bin/python3 (not a
# pyenv or virtualenv python3 that may come first on PATH). Idempotent: does
# nothing when /usr/bin/python3 can already import torch; apt-get update runs
# only when something is missing. Uses sudo when not root. BENCH_PYTHON
# names another interpreter to check (default /usr/bin/python3).
#
#   scripts/setup-bench.sh          install if missing
#   scripts/setup-bench.sh --check  exit 0 if torch imports, 1 if not; install nothing
set -eu

PY=${BENCH_PYTHON:-/usr/bin/python3}
PACKAGES='python3-torch python3-numpy'

have_torch() {
    [ -x "$PY" ] && "$PY" -c 'import torch, numpy' >/dev/null 2>&1
}

case "${1:-}" in
--check)
    have_torch
    exit $?
    ;;
'') ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

if have_torch; then
    echo "setup-bench.sh: $PY already imports torch $("$PY" -c 'import torch; print(torch.__version__)')"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-bench.sh: apt-get not found; install PyTorch for $PY by hand ($PACKAGES on Debian)." >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=''
elif command -v sudo >/dev/null 2>&1; then
    SUDO='sudo'
else
    echo "setup-bench.sh: not root and no sudo; run as root: apt-get install -y --no-install-recommends $PACKAGES" >&2
    exit 1
fi

echo "setup-bench.sh: installing $PACKAGES (for $PY)"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # SUDO and PACKAGES are word lists
$SUDO apt-get update -q || true
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $PACKAGES

if ! have_torch; then
    echo "setup-bench.sh: installed, but $PY still cannot import torch" >&2
    exit 1
fi
echo "setup-bench.sh: $PY imports torch $("$PY" -c 'import torch; print(torch.__version__)')"
