#!/bin/sh
# The demo: the ELLE paper in miniature on Fashion-MNIST (Debian's
# dataset-fashion-mnist). The same small CNN is trained twice at eps = 0.2,
# where single-step adversarial training catastrophically overfits:
#
#   fgsm    FGSM adversarial training. E_lin is measured alongside by an ELLE
#           term with lambda = 0 (value only, no gradient), as a thermometer.
#   elle-a  FGSM + ELLE-A (adaptive lambda, lambda_max 200).
#
# Configuration (docs/demo.md explains how it was found): small_cnn,
# 30,000 training images drawn at random, 5 epochs, batch 128, triangular
# cyclic LR 0 -> 0.1 -> 0 peaking at 40% of the run, SGD momentum 0.9,
# weight decay 5e-4, every perturbed point clamped to [0, 1], PGD-20
# (alpha = eps/8) on the first 1000 test images after every epoch.
#
# Prints both per-epoch tables (clean, PGD-20, E_lin, lambda, CO flag) and a
# one-line verdict; writes out/demo/summary.json and out/demo/{fgsm,elle-a}/.
# A few minutes on two cores.
# Usage: scripts/demo.sh [BUILD_DIR]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
elle="$build/tools/elle/elle"
[ -x "$elle" ] || { echo "demo.sh: $elle not built (run make build)" >&2; exit 1; }
cd "$root"
rm -rf out/demo
mkdir -p out/demo

common="--dataset fashion-mnist --model small_cnn --eps 0.2 --epochs 5 --batch 128
        --train-n 30000 --schedule short --lr 0.1 --train-param up_fraction=0.4
        --attack-param clamp_image=1 --reg-param clamp_image=1
        --pgd-test-n 1000 --pgd-val 0 --seed 0 --no-progress"

echo "demo 1/2: FGSM adversarial training (E_lin measured with lambda 0)"
# shellcheck disable=SC2086 # word splitting of $common is intended
"$elle" train --method fgsm+elle --lambda 0 $common --out out/demo/fgsm
echo
echo "demo 2/2: FGSM + ELLE-A (lambda_max 200)"
# shellcheck disable=SC2086
"$elle" train --method elle-a --lambda-max 200 $common --out out/demo/elle-a

/usr/bin/python3 "$root/scripts/demo_report.py" out/demo fgsm=out/demo/fgsm elle-a=out/demo/elle-a
echo "figures in out/demo/summary.json"
