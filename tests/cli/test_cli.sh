#!/bin/sh
# Command-line tests of `elle`: exit codes and one-line messages for bad
# flags and missing files, and a tiny end-to-end train + eval on generated
# IDX files.  Usage: test_cli.sh ELLE_BINARY PYTHON
set -u
elle=$1
python=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# expect CODE PATTERN -- command...: exit status CODE and PATTERN in stdout+stderr
expect() {
    want=$1 pattern=$2
    shift 3
    "$@" >"$tmp/out" 2>&1
    got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: '$*' exited $got, expected $want"; sed 's/^/    /' "$tmp/out"; fail=1
    elif ! grep -q -- "$pattern" "$tmp/out"; then
        echo "FAIL: '$*' output lacks '$pattern'"; sed 's/^/    /' "$tmp/out"; fail=1
    else
        echo "ok: $* -> $got"
    fi
}

expect 0 "usage: elle" -- "$elle" --help
expect 2 "unknown command" -- "$elle" frobnicate
expect 2 "usage: elle" -- "$elle"
expect 0 "libelle" -- "$elle" info
expect 0 "--epochs" -- "$elle" train --help
expect 2 "--epochs wants an integer" -- "$elle" train --epochs many
expect 2 "Try 'elle train --help'" -- "$elle" train --epochs 0
expect 2 "--lr wants" -- "$elle" train --lr 1/0
expect 2 "--lr wants" -- "$elle" train --lr 8/255x
expect 2 "unknown option --bogus" -- "$elle" train --bogus 1
expect 2 "needs a value" -- "$elle" train --epochs
expect 2 "--schedule wants" -- "$elle" train --schedule sometimes
expect 2 "unknown backend" -- "$elle" train --backend tpu
expect 2 "--data DIR is required" -- "$elle" train --dataset cifar10
expect 1 "cannot open" -- "$elle" train --dataset cifar10 --data "$tmp/nowhere" --out "$tmp/o"
expect 1 "cuda" -- "$elle" train --backend cuda --out "$tmp/o"
expect 2 "unknown model parameter" -- "$elle" train --model-param frobs=3 --dataset mnist --data "$tmp" --out "$tmp/o"
expect 2 "--weights FILE is required" -- "$elle" eval
expect 0 "--batch" -- "$elle" bench --help

# A tiny MNIST-shaped data set: class k images are bright in row band k.
"$python" - "$tmp/data" <<'PY' || { echo "FAIL: cannot generate data"; exit 1; }
import gzip, os, random, struct, sys
d = sys.argv[1]; os.makedirs(d)
random.seed(0)
def write(split, n):
    labels = [i % 10 for i in range(n)]
    pix = bytearray()
    for k in labels:
        for r in range(28):
            for c in range(28):
                v = 200 if 2 * k <= r < 2 * k + 3 else 0
                pix.append(min(255, v + random.randrange(40)))
    with gzip.open(os.path.join(d, f"{split}-images-idx3-ubyte.gz"), "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28) + bytes(pix))
    with open(os.path.join(d, f"{split}-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 2049, n) + bytes(labels))
write("train", 320); write("t10k", 100)
PY

expect 0 "final test accuracy" -- "$elle" train --dataset mnist --data "$tmp/data" \
    --epochs 3 --batch 32 --val-size 32 --lr 0.05 --out "$tmp/run" --threads 1
for f in model.safetensors best.safetensors log.jsonl summary.json; do
    [ -s "$tmp/run/$f" ] || { echo "FAIL: $tmp/run/$f missing"; fail=1; }
done
grep -q '"test_acc"' "$tmp/run/summary.json" || { echo "FAIL: summary.json lacks test_acc"; fail=1; }
expect 0 "clean accuracy" -- "$elle" eval --dataset mnist --data "$tmp/data" \
    --weights "$tmp/run/model.safetensors" --threads 1
# the bands are trivially separable: three epochs must learn them
acc=$(sed -n 's/.*= \([0-9.]*\)%.*/\1/p' "$tmp/out")
"$python" -c "import sys; sys.exit(0 if float('$acc') >= 90 else 1)" ||
    { echo "FAIL: eval accuracy $acc% < 90%"; fail=1; }
# a model of another width does not load: a clear error, exit 1
expect 1 "conv1.weight" -- "$elle" eval --dataset mnist --data "$tmp/data" \
    --weights "$tmp/run/model.safetensors" --model-param width=8
# a truncated checkpoint
head -c 100 "$tmp/run/model.safetensors" >"$tmp/trunc.safetensors"
expect 1 "ELLE_EFORMAT" -- "$elle" eval --dataset mnist --data "$tmp/data" \
    --weights "$tmp/trunc.safetensors"

exit $fail
