#!/bin/sh
# The CUDA backend's first run on a real GPU, as one prepared script for a
# session that is lent a GPU machine (device time is short: one call).
#
#   scripts/gpu_check.sh [OUT_DIR] [BUILD_DIR] [STAGES]
#
# STAGES is a comma list of build, test, bench (default all three); each
# stage's time limit keeps the whole run under the device tool's 10 minutes
# per command, and a second call can run "bench" alone on the same build.
#
# 1. what the machine has: nvidia-smi, nvcc, meson, ninja (missing build
#    tools or libraries end the run here, with the list);
# 2. a release build with the CUDA backend required (-Dcuda=enabled),
#    gpu_archs from the GPU's compute capability;
# 3. meson test --suite cuda (every op against the reference backend, the
#    models, training steps and attacks against the CPU backend) and, for
#    comparison, --suite cuda_emu (the same programs on the emulated GPU);
# 4. scripts/bench_cuda.sh: the GPU rows beside PyTorch on the same GPU.
#
# Everything it learns lands in OUT_DIR (default out/gpu-check; on the
# device machine pass "$OUT"): machine.txt, build.log, test-cuda.log,
# testlog-cuda.txt (meson's full log), test-cuda_emu.log, bench.log,
# bench_cuda.json. Each stage has a time limit, so a hang still leaves the
# earlier stages' files. Exit status: that of the first stage that failed.
set -u

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
out=${1:-$root/out/gpu-check}
build=${2:-$root/build-gpu}
stages=,${3:-build,test,bench},
mkdir -p "$out"
status=0

stage() { # name limit_s command...: run one stage, log it, keep the first failure
    name=$1 limit=$2
    shift 2
    echo "== $name" | tee -a "$out/summary.txt"
    start=$(date +%s)
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    echo "   exit $rc after $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
    tail -n 5 "$out/$name.log" | sed 's/^/   | /' | tee -a "$out/summary.txt"
    [ "$status" -ne 0 ] || status=$rc
    return $rc
}

{
    date -u
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1
    command -v nvcc && nvcc --version | tail -n 2
    for tool in meson ninja cc c++ pkg-config python3; do
        printf '%s: %s\n' "$tool" "$(command -v $tool || echo MISSING)"
    done
    for lib in zlib jansson matio cmocka; do
        printf '%s: %s\n' "$lib" "$(pkg-config --modversion $lib 2>/dev/null || echo MISSING)"
    done
    printf 'oneDNN: %s\n' "$(ls /usr/lib/*/libdnnl.so* /usr/local/lib/libdnnl.so* 2>/dev/null | head -n 1)"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1
} >"$out/machine.txt"
cat "$out/machine.txt"
if ! command -v meson >/dev/null || ! command -v ninja >/dev/null || ! command -v nvcc >/dev/null; then
    echo "gpu_check: meson, ninja or nvcc is missing (see machine.txt)" >&2
    exit 1
fi

cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
archs=${cc:-90}

cd "$root" || exit 1
case $stages in *,build,*)
    stage build 280 sh -c "{ [ -d '$build/meson-private' ] || meson setup '$build' \
        --buildtype=release -Dcuda=enabled -Dgpu_archs=$archs; } && ninja -C '$build'" ||
        exit "$status" ;;
esac
case $stages in *,test,*)
    stage test-cuda 150 meson test -C "$build" --suite cuda --print-errorlogs --no-rebuild
    cp "$build/meson-logs/testlog.txt" "$out/testlog-cuda.txt" 2>/dev/null
    stage test-cuda_emu 120 meson test -C "$build" --suite cuda_emu --no-rebuild ;;
esac
case $stages in *,bench,*)
    stage bench 280 scripts/bench_cuda.sh "$build" "$out/bench_cuda.json" ;;
esac
exit "$status"
