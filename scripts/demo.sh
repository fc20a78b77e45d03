#!/bin/sh
# The demo: train the small CNN on Fashion-MNIST (Debian's dataset-fashion-mnist)
# for one epoch with the paper's short (cyclic) schedule, evaluate clean test
# accuracy, and leave out/demo/{model.safetensors, best.safetensors, log.jsonl,
# summary.json}. Usage: scripts/demo.sh [BUILD_DIR]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
elle="$build/tools/elle/elle"
[ -x "$elle" ] || { echo "demo.sh: $elle not built (run make build)" >&2; exit 1; }
cd "$root"
"$elle" train --dataset fashion-mnist --model small_cnn --epochs 1 --batch 128 \
    --schedule short --seed 0 --out out/demo --no-progress
acc=$(sed -n 's/.*"test_acc": \([0-9.e+-]*\).*/\1/p' out/demo/summary.json)
echo "demo: Fashion-MNIST test accuracy after one epoch: $acc (expected >= 0.85);" \
    "figures in out/demo/summary.json"
awk -v a="$acc" 'BEGIN { exit !(a >= 0.85) }' ||
    { echo "demo: accuracy below the expected 0.85" >&2; exit 1; }
