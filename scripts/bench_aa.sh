#!/bin/sh
# AutoAttack timing for `make bench` (issue 6): the standard AutoAttack on the
# first 1000 Fashion-MNIST test images at eps = 0.2, bs 250, seed 0, against
# the demo's ELLE-A model (out/demo/elle-a/model.safetensors; trained here
# with the demo's configuration when `make demo` has not run), next to PGD-20
# and PGD-50-10 on the same images. Writes a flat JSON object to $2:
#   aa_fmnist_1000_s, aa_fmnist_1000_clean_acc, aa_fmnist_1000_robust_acc,
#   aa_fmnist_1000_<stage>_acc, aa_fmnist_1000_pgd20_acc, aa_fmnist_1000_pgd50_10_acc
# Usage: scripts/bench_aa.sh BUILD_DIR OUT_JSON [THREADS] [N]
set -eu
root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$root"
build=$1
out=$2
threads=${3:-2}
n=${4:-1000}
elle="$build/tools/elle/elle"
py=${BENCH_PYTHON:-/usr/bin/python3}
[ -x "$elle" ] || { echo "bench_aa.sh: $elle not built" >&2; exit 1; }

model=out/demo/elle-a/model.safetensors
if [ ! -s "$model" ]; then
    model=out/bench/aa-model/model.safetensors
    if [ ! -s "$model" ]; then
        echo "bench_aa.sh: no demo model; training the demo's ELLE-A model into out/bench/aa-model"
        "$elle" train --method elle-a --lambda-max 200 --dataset fashion-mnist --model small_cnn \
            --eps 0.2 --epochs 5 --batch 128 --train-n 30000 --schedule short --lr 0.1 \
            --train-param up_fraction=0.4 --attack-param clamp_image=1 \
            --reg-param clamp_image=1 --pgd-test-n 0 --pgd-val 0 --seed 0 --no-progress \
            --threads "$threads" --out out/bench/aa-model >/dev/null
    fi
fi
log=out/bench/aa.txt
: >"$log"
now() { "$py" -c 'import time; print(time.monotonic())'; }
for atk in pgd-20 pgd-50-10; do
    "$elle" eval --weights "$model" --eps 0.2 --n "$n" --attack "$atk" --threads "$threads" \
        >>"$log"
done
t0=$(now)
"$elle" eval --weights "$model" --eps 0.2 --n "$n" --bs 250 --seed 0 --attack autoattack \
    --threads "$threads" >>"$log"
t1=$(now)
cat "$log"
"$py" - "$log" "$out" "$t0" "$t1" "$n" <<'PY'
import json, re, sys
log, out, t0, t1, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
doc, key = {}, f"aa_fmnist_{n}"
text = open(log).read()
for name, k in (("pgd-20", "pgd20"), ("pgd-50-10", "pgd50_10")):
    m = re.search(rf"^{name} \(.*robust accuracy (\d+)/(\d+)", text, re.M)
    if m:
        doc[f"{key}_{k}_acc"] = int(m.group(1)) / int(m.group(2))
for m in re.finditer(r"^  (clean|apgd-ce|apgd-t|fab-t|square)\s+(\d+)\s+([\d.]+)%", text, re.M):
    doc[f"{key}_{m.group(1).replace('-', '_')}_acc"] = float(m.group(3)) / 100.0
m = re.search(r"^autoattack .*robust accuracy (\d+)/(\d+)", text, re.M)
if m:
    doc[f"{key}_robust_acc"] = int(m.group(1)) / int(m.group(2))
doc[f"{key}_s"] = t1 - t0
json.dump(doc, open(out, "w"), indent=2)
PY
