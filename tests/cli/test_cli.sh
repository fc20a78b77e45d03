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
# without a usable CUDA device (not compiled in, or no GPU) the backend is refused
if ! "$elle" info | grep -Eq '^[[:space:]]*cuda[[:space:]]+available'; then
    expect 1 "cuda" -- "$elle" train --backend cuda --out "$tmp/o"
fi
expect 2 "unknown model parameter" -- "$elle" train --model-param frobs=3 --dataset mnist --data "$tmp" --out "$tmp/o"
expect 2 "--weights FILE is required" -- "$elle" eval
# adversarial training flags: bad values are usage errors before any data is read
expect 2 "--method wants" -- "$elle" train --method bogus
expect 2 "--method wants" -- "$elle" train --method pgd-x
expect 2 "--method wants" -- "$elle" train --method elle+fgsm
expect 2 "--method wants" -- "$elle" train --method pgd-10-2
expect 2 "--method wants" -- "$elle" train --method gat+bogus
expect 2 "--eps wants" -- "$elle" train --method fgsm --eps 2
expect 2 "--eps wants" -- "$elle" train --method fgsm --eps 8/0
expect 2 "--alpha wants" -- "$elle" train --method fgsm --alpha 0
expect 2 "needs a method with an attack" -- "$elle" train --alpha 2/255
expect 2 "--lambda sets" -- "$elle" train --method elle-a --lambda 5
expect 2 "--lambda-max sets" -- "$elle" train --method elle --lambda-max 5
expect 2 "--lambda wants" -- "$elle" train --method elle --lambda -1
expect 2 "unknown attack parameter 'foo'" -- "$elle" train --method fgsm --attack-param foo=1
expect 2 "outside" -- "$elle" train --method fgsm --attack-param eps=3
expect 2 "NAME=NUMBER" -- "$elle" train --method elle --reg-param sensitivity
expect 2 "unknown regularizer parameter" -- "$elle" train --method elle --reg-param steps=3
expect 2 "needs a method with a regularizer" -- "$elle" train --method fgsm --reg-param window=1
expect 2 "--preset wants paper" -- "$elle" train --preset fast
expect 2 "--pgd-test-n wants" -- "$elle" train --pgd-test-n -1
expect 2 "--pgd-val wants" -- "$elle" train --pgd-val 2
expect 0 "--method NAME" -- "$elle" train --help
expect 2 "--attack wants" -- "$elle" eval --weights x --attack pgd
expect 2 "--attack wants" -- "$elle" eval --weights x --attack pgd-0
expect 2 "--attack wants" -- "$elle" eval --weights x --attack rs-fgsm
expect 2 "--attack wants" -- "$elle" eval --weights x --attack gat
expect 2 "--eps wants" -- "$elle" eval --weights x --attack pgd-20 --eps 1.5
expect 2 "needs --attack" -- "$elle" eval --weights x --alpha 0.01
expect 2 "unknown attack parameter" -- "$elle" eval --weights x --attack pgd-20 --attack-param k=1
expect 0 "--attack NAME" -- "$elle" eval --help
expect 2 "--version needs --attack autoattack" -- "$elle" eval --weights x --attack pgd-20 --version rand
expect 2 "--version wants standard or rand" -- "$elle" eval --weights x --attack autoattack --version plus
expect 2 "--alpha applies to fgsm and pgd" -- "$elle" eval --weights x --attack apgd-ce --alpha 0.01
expect 2 "--bs wants" -- "$elle" eval --weights x --attack autoattack --bs 0
expect 0 "--batch" -- "$elle" bench --help

# A tiny MNIST-shaped data set: class k images are bright in row band k.
"$python" "$(dirname -- "$0")/tiny_mnist.py" "$tmp/data" ||
    { echo "FAIL: cannot generate data"; exit 1; }

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

# a tiny ELLE-A run: FGSM + ELLE-A at 8/255, the PGD-20 monitor, lambda in the log
expect 0 "PGD-20 accuracy" -- "$elle" train --dataset mnist --data "$tmp/data" \
    --method elle-a --eps 8/255 --epochs 2 --batch 32 --val-size 32 --lr 0.05 \
    --pgd-test-n 50 --log-every 3 --out "$tmp/adv" --threads 1
for key in reg_value lambda reg_mean reg_std elin_alarms; do
    grep '"event": "step"' "$tmp/adv/log.jsonl" | grep -q "\"$key\"" ||
        { echo "FAIL: the step lines of the elle-a log lack $key"; fail=1; }
done
for key in pgd_test_acc pgd_val_acc lambda_min lambda_mean lambda_max lambda_resets co_flag; do
    grep '"event": "epoch"' "$tmp/adv/log.jsonl" | grep -q "\"$key\"" ||
        { echo "FAIL: the epoch lines of the elle-a log lack $key"; fail=1; }
done
grep -q '"kind": "elle"' "$tmp/adv/log.jsonl" || { echo "FAIL: config lacks the regularizer"; fail=1; }
grep -q '"best_by": "pgd_val_acc"' "$tmp/adv/log.jsonl" || { echo "FAIL: config lacks best_by"; fail=1; }
for key in '"method": "elle-a"' '"eps": 0.0313725' '"pgd_test_acc"' '"test_acc"'; do
    grep -q "$key" "$tmp/adv/summary.json" || { echo "FAIL: summary.json lacks $key"; fail=1; }
done
# --preset paper: the reference's quirks in the config line, an explicit flag wins
expect 0 "preset paper" -- "$elle" train --dataset mnist --data "$tmp/data" \
    --method n-fgsm+elle-a --preset paper --epochs 1 --batch 32 --val-size 32 \
    --out "$tmp/paper" --threads 1
head -n 1 "$tmp/paper/log.jsonl" >"$tmp/config"
for key in '"steps_per_batch": 2' '"extra_clean_forward": 1' '"cycle_momentum": 1' \
    '"epochs": 1' '"pgd_test_n": 100' '"lr": 0.2' '"kind": "n-fgsm"' '"noise_mult": 2' \
    '"clamp_image": 0' '"lambda_max": 4000'; do
    grep -q "$key" "$tmp/config" || { echo "FAIL: --preset paper config lacks $key"; fail=1; }
done
grep -q '"clean_train_acc"' "$tmp/paper/summary.json" ||
    { echo "FAIL: --preset paper summary lacks clean_train_acc"; fail=1; }
grep -q '"preset": "paper"' "$tmp/paper/summary.json" ||
    { echo "FAIL: summary.json lacks the preset"; fail=1; }
# GAT: its guided attack + its output-distance term; gat+elle adds ELLE
expect 0 "method gat," -- "$elle" train --dataset mnist --data "$tmp/data" --method gat \
    --epochs 1 --train-n 256 --batch 32 --val-size 32 --pgd-test-n 20 --out "$tmp/gat" --threads 1
head -n 1 "$tmp/gat/log.jsonl" | grep -o '"attack": {[^}]*}' >"$tmp/config"
for key in '"kind": "gat", "eps"' '"clamp_image": 1' '"project": 1' '"gat_weight": 10'; do
    grep -q "$key" "$tmp/config" || { echo "FAIL: --method gat attack config lacks $key"; fail=1; }
done
grep -q '"kind": "gat", "lambda": 10' "$tmp/gat/log.jsonl" ||
    { echo "FAIL: --method gat lacks the gat term"; fail=1; }
expect 0 "method gat+elle," -- "$elle" train --dataset mnist --data "$tmp/data" \
    --method gat+elle --epochs 1 --train-n 128 --batch 32 --val-size 32 --pgd-test-n 0 \
    --out "$tmp/gat-elle" --threads 1
grep -q '"kind": "elle"' "$tmp/gat-elle/log.jsonl" && grep -q '"kind": "gat", "eps"' "$tmp/gat-elle/log.jsonl" ||
    { echo "FAIL: --method gat+elle lacks the gat attack or the elle term"; fail=1; }
# a value the regularizer refuses is a usage error too
expect 2 "points" -- "$elle" train --dataset mnist --data "$tmp/data" --method elle \
    --reg-param points=4 --val-size 0 --out "$tmp/o" --threads 1
# robust accuracy of that model: PGD-20 (alpha eps/8), PGD-K-R, FGSM; robust <= clean
expect 0 "robust accuracy" -- "$elle" eval --dataset mnist --data "$tmp/data" \
    --weights "$tmp/adv/model.safetensors" --attack pgd-20 --eps 8/255 --threads 1
grep -q "pgd-20 (eps 0.0313725, alpha 0.00392157)" "$tmp/out" || { echo "FAIL: pgd-20 alpha is not eps/8"; fail=1; }
clean=$(sed -n 's/.*clean accuracy \([0-9]*\)\/.*/\1/p' "$tmp/out")
robust=$(sed -n 's/.*robust accuracy \([0-9]*\)\/.*/\1/p' "$tmp/out")
[ -n "$clean" ] && [ -n "$robust" ] && [ "$robust" -le "$clean" ] ||
    { echo "FAIL: robust '$robust' vs clean '$clean'"; fail=1; }
expect 0 "alpha 0.00784314): robust accuracy" -- "$elle" eval --dataset mnist --data "$tmp/data" \
    --weights "$tmp/adv/model.safetensors" --attack pgd-5-2 --n 40 --threads 1
grep -q "/40 = " "$tmp/out" || { echo "FAIL: --n 40 not honoured"; fail=1; }
expect 0 "fgsm (eps 0.1, alpha 0.1): robust accuracy" -- "$elle" eval --dataset mnist \
    --data "$tmp/data" --weights "$tmp/adv/model.safetensors" --attack fgsm --eps 0.1 --threads 1

# AutoAttack (standard, small budgets) on 20 points in chunks of 8: the
# per-attack table in the reference's order, robust <= clean, non-increasing
expect 0 "autoattack (eps 0.0313725): robust accuracy" -- "$elle" eval --dataset mnist \
    --data "$tmp/data" --weights "$tmp/adv/model.safetensors" --attack autoattack --n 20 \
    --bs 8 --seed 1 --attack-param steps=5 --attack-param n_queries=50 \
    --attack-param n_target_classes=2 --threads 1
for stage in clean apgd-ce apgd-t fab-t square; do
    grep -q "^  $stage " "$tmp/out" || { echo "FAIL: autoattack table lacks $stage"; fail=1; }
done
counts=$(sed -n 's/^  \(clean\|apgd-ce\|apgd-t\|fab-t\|square\) *\([0-9]*\) .*/\2/p' "$tmp/out" | tr '\n' ' ')
"$python" -c "import sys; c=[int(v) for v in '$counts'.split()]; sys.exit(0 if len(c)==5 and c==sorted(c, reverse=True) and c[0]<=20 else 1)" ||
    { echo "FAIL: autoattack counts '$counts' not non-increasing"; fail=1; }
grep -q "robust accuracy [0-9]*/20 = " "$tmp/out" || { echo "FAIL: autoattack --n 20 not honoured"; fail=1; }
# the rand version: apgd-ce then apgd-dlr; a single component by name
expect 0 "version rand (apgd-ce, apgd-dlr)" -- "$elle" eval --dataset mnist --data "$tmp/data" \
    --weights "$tmp/adv/model.safetensors" --attack autoattack --version rand --n 8 \
    --attack-param steps=3 --attack-param eot_iter=2 --threads 1
expect 0 "apgd-t (eps 0.0313725): robust accuracy" -- "$elle" eval --dataset mnist \
    --data "$tmp/data" --weights "$tmp/adv/model.safetensors" --attack apgd-t --n 8 \
    --attack-param steps=3 --attack-param n_target_classes=1 --threads 1

# a model of another width does not load: a clear error, exit 1
expect 1 "conv1.weight" -- "$elle" eval --dataset mnist --data "$tmp/data" \
    --weights "$tmp/run/model.safetensors" --model-param width=8
# a truncated checkpoint
head -c 100 "$tmp/run/model.safetensors" >"$tmp/trunc.safetensors"
expect 1 "ELLE_EFORMAT" -- "$elle" eval --dataset mnist --data "$tmp/data" \
    --weights "$tmp/trunc.safetensors"

exit $fail
