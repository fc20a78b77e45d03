#!/bin/sh
# The demo: the paper's main method at demo size. Trains the small CNN on
# Fashion-MNIST (Debian's dataset-fashion-mnist) with ELLE-A (FGSM at
# eps = 8/255 plus the ELLE regularizer with adaptive lambda, lambda_max
# 4000) for three epochs of the short (cyclic) schedule, monitors PGD-20
# (alpha = eps/8) on the first 1000 test images and the validation set every
# epoch, and leaves out/demo/{model.safetensors, best.safetensors, log.jsonl,
# summary.json}. About a minute on two cores (docs/cli.md has the figures).
# Usage: scripts/demo.sh [BUILD_DIR]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
elle="$build/tools/elle/elle"
[ -x "$elle" ] || { echo "demo.sh: $elle not built (run make build)" >&2; exit 1; }
cd "$root"
"$elle" train --dataset fashion-mnist --model small_cnn --method elle-a --eps 8/255 \
    --epochs 3 --batch 128 --schedule short --pgd-test-n 1000 --seed 0 --out out/demo \
    --no-progress
num() { sed -n "s/.*\"$1\": \\([0-9.e+-]*\\).*/\\1/p" out/demo/summary.json; }
acc=$(num test_acc)
pgd=$(num pgd_test_acc)
echo "demo: Fashion-MNIST, small_cnn, ELLE-A at eps = 8/255, 3 epochs:" \
    "clean test accuracy $acc (expected >= 0.85), PGD-20 accuracy $pgd on 1000 test images" \
    "(expected >= 0.70); figures in out/demo/summary.json"
awk -v a="$acc" 'BEGIN { exit !(a >= 0.85) }' ||
    { echo "demo: clean accuracy below the expected 0.85" >&2; exit 1; }
awk -v a="$pgd" 'BEGIN { exit !(a >= 0.70) }' ||
    { echo "demo: PGD-20 accuracy below the expected 0.70" >&2; exit 1; }
