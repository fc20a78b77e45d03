#!/bin/sh
# The GPU rows of the benchmark: libelle's CUDA backend against PyTorch on
# the same GPU, in the same run.
#
#   scripts/bench_cuda.sh BUILD OUT_JSON [--threads N] [--batch B] [--width W]
#                         [--iters K] [--warmup W] [--quick]
#
# 1. BUILD/bench/elle-bench-methods --backend cuda --methods
#    fgsm,elle,elle-a,gradalign: the trainer's step per method (median);
# 2. bench/torch_bench.py --device cuda: the same steps in PyTorch
#    (torch.cuda.synchronize() before every clock read, NCHW, fp32,
#    cudnn.benchmark on, recorded as torch_cuda_cudnn_benchmark);
# 3. torch_bench.py cuda-rows writes OUT_JSON, one flat object:
#    cuda_{fgsm,elle,ellea,gradalign}_step_ms, torch_cuda_*_step_ms,
#    cuda_*_vs_torch (libelle / PyTorch), cuda_device_name (a string), and
#    both runs' settings.
#
# Both sides default to 20 timed steps after 5 warm-up steps (a GPU step
# takes milliseconds; cuDNN's algorithm search falls in the warm-up); the
# options override that for both (--quick: smoke-test sizes).
#
# Exit status: 0 done; 77 "no CUDA device, GPU rows skipped" (no GPU, or
# libelle built without the CUDA backend), OUT_JSON not written; 1 a run
# failed (OUT_JSON still holds what was measured, when libelle's side ran).
#
# The PyTorch side needs a torch whose torch.cuda is available: the first of
# BENCH_PYTHON (when set), /usr/bin/python3 and the python3 on PATH (the GPU
# machine's image has a CUDA PyTorch there) that has one. Without one, only
# libelle's rows are written (torch_cuda_available: 0) and the exit status
# is 1.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: scripts/bench_cuda.sh BUILD OUT_JSON [elle-bench-methods/torch_bench.py options]" >&2
    exit 2
fi
root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
builddir=$1
out_json=$2
shift 2
case $builddir in /*) ;; *) builddir=$(pwd)/$builddir ;; esac
case $out_json in /*) ;; *) out_json=$(pwd)/$out_json ;; esac
cd "$root"

skip() {
    echo "bench_cuda.sh: no CUDA device, GPU rows skipped ($1)"
    exit 77
}

methods_bin="$builddir/bench/elle-bench-methods"
elle_bin="$builddir/tools/elle/elle"
if [ ! -x "$methods_bin" ]; then
    echo "bench_cuda.sh: $methods_bin does not exist (build first)" >&2
    exit 1
fi
# `elle info` lists "cuda  available, N device(s)" only when this libelle has
# the CUDA backend and sees a device; without the tool, elle-bench-methods
# answers 77 itself below.
if [ -x "$elle_bin" ]; then
    if ! "$elle_bin" info 2>/dev/null | grep -Eq '^[[:space:]]*cuda[[:space:]]+available'; then
        skip "elle info: cuda not available: no device, or libelle built without -Dcuda"
    fi
fi

# Defaults for both sides unless --quick (which sets its own sizes).
defaults='--iters 20 --warmup 5'
threads=2
prev=''
for a do
    case $prev in --threads) threads=$a ;; esac
    case $a in --quick) defaults='' ;; esac
    prev=$a
done

# a python with torch.cuda for PyTorch; any python3 for the JSON work
has_torch_cuda() {
    "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        >/dev/null 2>&1
}
torch_py=''
for cand in ${BENCH_PYTHON:+"$BENCH_PYTHON"} /usr/bin/python3 python3; do
    if command -v "$cand" >/dev/null 2>&1 && has_torch_cuda "$cand"; then
        torch_py=$cand
        break
    fi
    if [ "$cand" = "${BENCH_PYTHON:-}" ]; then
        echo "bench_cuda.sh: BENCH_PYTHON=$cand has no torch with CUDA; trying the others" >&2
    fi
done
if [ -n "$torch_py" ]; then
    py=$torch_py
elif [ -x /usr/bin/python3 ]; then
    py=/usr/bin/python3
else
    py=python3
fi

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/bench_cuda.XXXXXX")
trap 'rm -rf "$tmpdir"' EXIT
status=0

echo "bench_cuda.sh: libelle CUDA backend, trainer step per method (elle-bench-methods)"
rc=0
# shellcheck disable=SC2086 # $defaults is a word list of flags and numbers
"$methods_bin" --backend cuda --methods fgsm,elle,elle-a,gradalign \
    --json "$tmpdir/methods.json" $defaults "$@" || rc=$?
case $rc in
0) ;;
77) skip "elle-bench-methods: the cuda backend is not available" ;;
*)
    echo "bench_cuda.sh: elle-bench-methods --backend cuda failed (exit $rc)" >&2
    exit 1
    ;;
esac

torch_args=''
if [ -z "$torch_py" ]; then
    echo "bench_cuda.sh: no python with a CUDA PyTorch (BENCH_PYTHON, /usr/bin/python3, python3):" >&2
    echo "bench_cuda.sh: libelle's GPU rows only (torch_cuda_available: 0)" >&2
    status=1
else
    echo
    echo "bench_cuda.sh: PyTorch on the GPU ($torch_py bench/torch_bench.py --device cuda)"
    rc=0
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=$threads "$torch_py" bench/torch_bench.py --device cuda \
        --json "$tmpdir/torch.json" $defaults "$@" || rc=$?
    if [ "$rc" = 0 ]; then
        torch_args="--torch $tmpdir/torch.json"
    else
        echo "bench_cuda.sh: torch_bench.py --device cuda failed (exit $rc); no PyTorch GPU rows" >&2
        status=1
    fi
fi

name=''
if command -v nvidia-smi >/dev/null 2>&1; then
    name=$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 2>/dev/null | head -n 1) || name=''
fi
# shellcheck disable=SC2086 # $torch_args is ours, without spaces in the path
"$py" bench/torch_bench.py cuda-rows --out "$out_json" --methods "$tmpdir/methods.json" \
    $torch_args --device-name "$name"
echo "bench_cuda.sh: wrote $out_json"
exit "$status"
