#!/bin/sh
# The `elle` program with --backend cuda, on the emulated GPU (the same
# sources as tools/elle, linked against the emulated library): `elle info`
# lists CUDA as available; an FGSM + ELLE-A run and an AutoAttack
# evaluation give the same numbers on the CUDA and the CPU backend.
# Usage: test_cli_cuda.sh ELLE_CUDA_EMU PYTHON CLI_TESTS_DIR
set -u
elle=$1
python=$2
clidir=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

run() { # name command...: run, keep the output, fail on a non-zero exit
    name=$1
    shift
    if "$@" >"$tmp/$name.out" 2>&1; then
        echo "ok: $name"
    else
        echo "FAIL: $name exited $?"; sed 's/^/    /' "$tmp/$name.out"; fail=1
    fi
}

"$elle" info >"$tmp/info" 2>&1
grep -qi "cuda.*available" "$tmp/info" && ! grep -qi "cuda.*not available" "$tmp/info" ||
    { echo "FAIL: elle info does not list cuda as available"; cat "$tmp/info"; fail=1; }

"$python" "$clidir/tiny_mnist.py" "$tmp/data" 96 40 || { echo "FAIL: no data"; exit 1; }

for b in cpu cuda; do
    run "train-$b" "$elle" train --backend "$b" --dataset mnist --data "$tmp/data" \
        --method elle-a --eps 8/255 --epochs 1 --batch 32 --val-size 0 --lr 0.05 \
        --model-param width=8 --pgd-test-n 20 --out "$tmp/run-$b" --threads 1
    run "aa-$b" "$elle" eval --backend "$b" --dataset mnist --data "$tmp/data" \
        --weights "$tmp/run-cpu/model.safetensors" --model-param width=8 --attack autoattack --n 20 --bs 8 \
        --seed 1 --attack-param steps=5 --attack-param n_queries=30 \
        --attack-param n_target_classes=2 --threads 1
done

grep -q "backend cuda" "$tmp/train-cuda.out" ||
    { echo "FAIL: the cuda run does not say it trains on cuda"; fail=1; }

# the two runs' summaries: the same accuracies (counts out of 40 and 20
# images; one image may flip on rounding) and final losses within 2 %
"$python" - "$tmp/run-cpu/summary.json" "$tmp/run-cuda/summary.json" <<'PY' || fail=1
import json, sys
c, g = (json.load(open(p)) for p in sys.argv[1:3])
def find(d, key):
    if isinstance(d, dict):
        if key in d and isinstance(d[key], (int, float)):
            return d[key]
        for v in d.values():
            r = find(v, key)
            if r is not None:
                return r
    return None
bad = []
for key, tol in (("test_acc", 1 / 40 + 1e-9), ("pgd_test_acc", 1 / 20 + 1e-9)):
    a, b = find(c, key), find(g, key)
    print(f"{key}: cpu {a}, cuda {b}")
    if a is None or b is None or abs(a - b) > tol:
        bad.append(key)
a, b = find(c, "loss"), find(g, "loss")
print(f"loss: cpu {a}, cuda {b}")
if a is None or b is None or abs(a - b) > 0.02 * abs(a):
    bad.append("loss")
if bad:
    print("FAIL: cpu and cuda runs differ in", ", ".join(bad))
    sys.exit(1)
PY

# AutoAttack's table: the same counts after every stage (within one image)
table() { sed -n 's/^  \(clean\|apgd-ce\|apgd-t\|fab-t\|square\) *\([0-9]*\) .*/\2/p' "$1" | tr '\n' ' '; }
tc=$(table "$tmp/aa-cpu.out") tg=$(table "$tmp/aa-cuda.out")
echo "autoattack counts: cpu $tc / cuda $tg"
"$python" -c "import sys; c=[int(v) for v in '$tc'.split()]; g=[int(v) for v in '$tg'.split()]; sys.exit(0 if len(c)==5 and len(g)==5 and all(abs(a-b)<=1 for a,b in zip(c,g)) else 1)" ||
    { echo "FAIL: autoattack counts differ"; fail=1; }

exit $fail
