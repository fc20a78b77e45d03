#!/bin/sh
# Run the benchmark programs and keep their results.
#
#   scripts/bench.sh [--no-torch] [elle-bench arguments...]
#
# 1. build/bench/elle-bench --json ...: libelle's figures (PreActResNet-18
#    forward/backward, training and FGSM-AT steps, conv primitives against
#    the FMA peak, per-layer breakdown);
# 2. elle-bench --only fgsm: the FGSM-AT loop alone in its own process, for
#    its peak RSS;
# 3. the same workloads in PyTorch (bench/torch_bench.py, run by Debian's
#    /usr/bin/python3 with GLIBC_TUNABLES=glibc.malloc.mmap_max=0 and
#    OMP_NUM_THREADS set), the FGSM-AT loop again in its own process.
#    scripts/setup-bench.sh installs python3-torch first when /usr/bin/python3
#    cannot import torch; if that fails (offline, no sudo) the PyTorch part is
#    left out with a message and the result has torch_available: 0;
# 4. when a CUDA device is available (`elle info` lists cuda as available:
#    libelle built with the CUDA backend and a GPU present), the GPU rows:
#    scripts/bench_cuda.sh runs elle-bench-methods --backend cuda and
#    torch_bench.py --device cuda (cuda_*_step_ms, torch_cuda_*_step_ms,
#    cuda_*_vs_torch, cuda_device_name); otherwise cuda_available: 0;
# 5. torch_bench.py merge: one flat JSON object with every key of the runs
#    and the ratios libelle/PyTorch (fgsm_vs_torch, ...), and the comparison
#    table on stdout.
#
# The result is out/bench/bench.json; it is replaced only when the libelle
# run succeeds. Both sides use the same thread count: --threads N if given,
# else $BENCH_THREADS, else 2 (the issue's setting). --batch, --width,
# --iters, --warmup and --quick are passed to both sides; other arguments go
# to elle-bench only (elle-bench --help lists them). --no-torch skips steps 2
# and 3. Contract with bench/: `elle-bench --json PATH` prints a table on
# stdout, writes one JSON object to PATH and exits 0 on success.
#
# BENCH_PYTHON names the interpreter for the PyTorch side (default Debian's
# /usr/bin/python3; scripts/setup-bench.sh checks the same one).
#
# Benchmark numbers are only meaningful on an otherwise idle machine: the
# 1-minute load average is printed and recorded (loadavg_1min_start, ...).
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$root"
builddir=${ELLE_BUILD_DIR:-build}
bin="$builddir/bench/elle-bench"
outdir=out/bench
debian_python=${BENCH_PYTHON:-/usr/bin/python3}

if [ ! -x "$bin" ]; then
    echo "bench.sh: $bin does not exist." >&2
    echo "bench.sh: the benchmark program is not part of this build yet (bench/meson.build" >&2
    echo "bench.sh: must define the 'elle-bench' executable); run scripts/build.sh after adding it." >&2
    exit 1
fi

# Split the arguments: bench.sh's own, those both sides take, elle-bench's.
no_torch=0
threads=''
both=''  # numbers and flags only, so a plain word list is safe
prev=''
for a do
    shift
    case $prev in
    --threads)
        threads=$a
        prev=''
        continue
        ;;
    --batch | --width | --iters | --warmup)
        both="$both $prev $a"
        set -- "$@" "$a"
        prev=''
        continue
        ;;
    esac
    case $a in
    --no-torch)
        no_torch=1
        continue
        ;;
    --threads)
        prev=$a
        continue
        ;;
    --batch | --width | --iters | --warmup) prev=$a ;;
    --quick) both="$both --quick" ;;
    esac
    set -- "$@" "$a"
done
if [ -n "$prev" ]; then
    echo "bench.sh: $prev needs a value" >&2
    exit 2
fi
threads=${threads:-${BENCH_THREADS:-2}}
case $threads in
'' | *[!0-9]* | 0)
    echo "bench.sh: --threads needs a positive integer, got '$threads'" >&2
    exit 2
    ;;
esac
export OMP_NUM_THREADS="$threads"

mkdir -p "$outdir"
tmp="$outdir/.bench.json.tmp"
tmp_rss="$outdir/.bench-rss.json.tmp"
tmp_torch="$outdir/.torch.json.tmp"
tmp_torch_rss="$outdir/.torch-rss.json.tmp"
trap 'rm -f "$tmp" "$tmp_rss" "$tmp_torch" "$tmp_torch_rss"' EXIT
rm -f "$tmp" "$tmp_rss" "$tmp_torch" "$tmp_torch_rss"

echo "bench.sh: $(uptime)"
echo "bench.sh: $threads threads on both sides (OMP_NUM_THREADS=$threads)"
# shellcheck disable=SC2086 # $both is a word list of flags and numbers
"$bin" --json "$tmp" --threads "$threads" "$@"
if [ ! -s "$tmp" ]; then
    echo "bench.sh: $bin wrote no JSON to $tmp" >&2
    exit 1
fi

# One python for the JSON work: Debian's (standard library only), else PATH's.
if [ -x "$debian_python" ]; then
    py=$debian_python
elif command -v python3 >/dev/null 2>&1; then
    py=python3
else
    py=''
fi
if [ -z "$py" ]; then
    echo "bench.sh: no python3: keeping elle-bench's JSON as it is, no PyTorch comparison" >&2
    mv "$tmp" "$outdir/bench.json"
    echo "bench.sh: wrote $outdir/bench.json"
    exit 0
fi
if ! "$py" -m json.tool "$tmp" >/dev/null; then
    echo "bench.sh: $bin wrote invalid JSON" >&2
    exit 1
fi

status=0
merge_args="--elle $tmp"
methods_bin="$builddir/bench/elle-bench-methods"
tmp_methods="$outdir/.methods.json.tmp"
tmp_methods_rss="$outdir/.methods-rss.json.tmp"
tmp_torch_elle_rss="$outdir/.torch-elle-rss.json.tmp"
tmp_cuda="$outdir/.cuda.json.tmp"
trap 'rm -f "$tmp" "$tmp_rss" "$tmp_torch" "$tmp_torch_rss" "$tmp_methods" "$tmp_methods_rss" "$tmp_torch_elle_rss" "$outdir/.aa.json.tmp" "$tmp_cuda"' EXIT
# AutoAttack on 1000 Fashion-MNIST test images (the demo's ELLE-A model)
tmp_aa="$outdir/.aa.json.tmp"
case " $both " in *" --quick "*) aa_n=20 ;; *) aa_n=1000 ;; esac
echo
echo "bench.sh: AutoAttack on $aa_n Fashion-MNIST test images (scripts/bench_aa.sh)"
if "$root/scripts/bench_aa.sh" "$builddir" "$tmp_aa" "$threads" "$aa_n"; then
    merge_args="$merge_args --extra $tmp_aa"
else
    echo "bench.sh: the AutoAttack run failed; no aa_fmnist_* figures" >&2
    status=1
fi

if [ -x "$methods_bin" ]; then
    echo
    echo "bench.sh: adversarial training step per method (elle-bench-methods)"
    # shellcheck disable=SC2086
    if "$methods_bin" --json "$tmp_methods" --threads "$threads" $both; then
        merge_args="$merge_args --methods $tmp_methods"
    else
        echo "bench.sh: elle-bench-methods failed; no per-method figures" >&2
        status=1
    fi
    echo
    echo "bench.sh: libelle ELLE loop in its own process (peak RSS)"
    # shellcheck disable=SC2086
    if "$methods_bin" --only elle --json "$tmp_methods_rss" --threads "$threads" $both \
        --iters 1 --warmup 1; then
        merge_args="$merge_args --methods-rss $tmp_methods_rss"
    else
        echo "bench.sh: elle-bench-methods --only elle failed; no ELLE peak RSS" >&2
        status=1
    fi
fi
if [ "$no_torch" = 0 ]; then
    # peak RSS of the FGSM-AT loop alone (one timed iteration is enough)
    echo
    echo "bench.sh: libelle FGSM-AT loop in its own process (peak RSS)"
    # shellcheck disable=SC2086
    if "$bin" --only fgsm --json "$tmp_rss" --threads "$threads" $both --iters 1 --warmup 1; then
        merge_args="$merge_args --elle-rss $tmp_rss"
    else
        echo "bench.sh: elle-bench --only fgsm failed; no libelle peak RSS" >&2
        status=1
    fi

    torch_ok=0
    if "$root/scripts/setup-bench.sh" --check; then
        torch_ok=1
    else
        echo
        echo "bench.sh: $debian_python cannot import torch; running scripts/setup-bench.sh"
        if "$root/scripts/setup-bench.sh"; then
            torch_ok=1
        else
            echo "bench.sh: PyTorch could not be installed (offline? no sudo?): no PyTorch" >&2
            echo "bench.sh: comparison this time; out/bench/bench.json gets torch_available: 0" >&2
        fi
    fi
    if [ "$torch_ok" = 1 ]; then
        tun="glibc.malloc.mmap_max=0${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}"
        echo
        echo "bench.sh: PyTorch ($debian_python bench/torch_bench.py, GLIBC_TUNABLES=$tun)"
        # shellcheck disable=SC2086
        if GLIBC_TUNABLES=$tun "$debian_python" bench/torch_bench.py --json "$tmp_torch" \
            --threads "$threads" $both; then
            merge_args="$merge_args --torch $tmp_torch"
            echo
            echo "bench.sh: PyTorch FGSM-AT loop in its own process (peak RSS)"
            # shellcheck disable=SC2086
            if GLIBC_TUNABLES=$tun "$debian_python" bench/torch_bench.py --only fgsm \
                --json "$tmp_torch_rss" --threads "$threads" $both --iters 1 --warmup 1; then
                merge_args="$merge_args --torch-rss $tmp_torch_rss"
            else
                echo "bench.sh: torch_bench.py --only fgsm failed; no PyTorch peak RSS" >&2
                status=1
            fi
            echo
            echo "bench.sh: PyTorch ELLE loop in its own process (peak RSS)"
            # shellcheck disable=SC2086
            if GLIBC_TUNABLES=$tun "$debian_python" bench/torch_bench.py --only elle \
                --json "$tmp_torch_elle_rss" --threads "$threads" $both --iters 1 --warmup 1; then
                merge_args="$merge_args --torch-rss $tmp_torch_elle_rss"
            else
                echo "bench.sh: torch_bench.py --only elle failed; no PyTorch ELLE peak RSS" >&2
                status=1
            fi
        else
            echo "bench.sh: torch_bench.py failed; no PyTorch comparison (torch_available: 0)" >&2
            status=1
        fi
    fi
fi

# The GPU rows, only where a CUDA device is there to run them.
rm -f "$tmp_cuda"
echo
if "$builddir/tools/elle/elle" info 2>/dev/null |
    grep -Eq '^[[:space:]]*cuda[[:space:]]+available'; then
    echo "bench.sh: CUDA device available: GPU rows (scripts/bench_cuda.sh)"
    cuda_rc=0
    # shellcheck disable=SC2086
    "$root/scripts/bench_cuda.sh" "$builddir" "$tmp_cuda" --threads "$threads" $both ||
        cuda_rc=$?
    case $cuda_rc in
    0) ;;
    77) echo "bench.sh: GPU rows skipped (cuda_available: 0)" ;;
    *)
        echo "bench.sh: scripts/bench_cuda.sh failed (exit $cuda_rc); keeping what it measured" >&2
        status=1
        ;;
    esac
    if [ "$cuda_rc" != 77 ] && [ -s "$tmp_cuda" ]; then
        merge_args="$merge_args --cuda $tmp_cuda"
    fi
else
    echo "bench.sh: no CUDA device ($builddir/tools/elle/elle info), GPU rows skipped (cuda_available: 0)"
fi

# shellcheck disable=SC2086 # the paths are ours, without spaces
"$py" bench/torch_bench.py merge --out "$outdir/bench.json" $merge_args
echo "bench.sh: wrote $outdir/bench.json"
exit "$status"
