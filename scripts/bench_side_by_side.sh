#!/usr/bin/env bash
# One training step of the SALT paper's SAM, salt vs PyTorch, interleaved (A B A B ...) in one
# run on the same machine, and the ratio of the medians.
#
#   scripts/bench_side_by_side.sh [--model salt_paper|unet|unetr|regunet|segnet|deeplabv3plus|segformer]
#       [--method salt|lora|ssam|full|frozen] [--batch N]
#       [--steps K] [--rounds R] [--device cpu] [--threads T] [--out FILE.jsonl]
#
# Needs `pip install -r scripts/requirements-sam.txt` (torch, segment-anything) and builds
# `xtask` in release (`cargo build --release -p xtask`). Each round runs both programs once,
# each timing --steps steps after one warm-up step; the summary takes the median over every
# timed step of every round. Run it on a quiet machine: load (a build, a test run) slows
# PyTorch's threads more than ours and flatters salt. Results: docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

model=salt_paper method=salt batch=2 steps=2 rounds=2 device=cpu threads=$(nproc) out=target/bench-side-by-side.jsonl
while [ $# -gt 0 ]; do
    case "$1" in
        --model) model=$2; shift 2 ;;
        --method) method=$2; shift 2 ;;
        --batch) batch=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --device) device=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

cargo build --release -q -p xtask
mkdir -p "$(dirname "$out")"
: >"$out"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds: salt (load $(cut -d' ' -f1 /proc/loadavg))"
    RUST_LOG=warn ./target/release/xtask bench-train --device "$device" --model "$model" --method "$method" \
        --batch "$batch" --steps "$steps" --warmup 1 --json "$out" >/dev/null
    echo "round $r/$rounds: pytorch (load $(cut -d' ' -f1 /proc/loadavg))"
    python3 scripts/torch_train_bench.py --device "$device" --model "$model" --method "$method" --batch "$batch" \
        --steps "$steps" --warmup 1 --threads "$threads" --json "$out" >/dev/null
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def steps(impl):
    return [t for r in rows if r["impl"] == impl for t in r["step_s"]]
def peak(impl):
    vals = [r.get("peak_rss_bytes") or r.get("peak_bytes") or 0 for r in rows if r["impl"] == impl]
    return max(vals) / 2**30
s, p = steps("salt"), steps("pytorch")
ms, mp = statistics.median(s), statistics.median(p)
print(f"salt    median {ms:.2f} s/step (min {min(s):.2f}), peak {peak('salt'):.2f} GiB, steps {[round(x, 2) for x in s]}")
print(f"pytorch median {mp:.2f} s/step (min {min(p):.2f}), peak {peak('pytorch'):.2f} GiB, steps {[round(x, 2) for x in p]}")
print(f"ratio salt/pytorch: {ms / mp:.2f}x time, {peak('salt') / peak('pytorch'):.2f}x peak memory")
EOF
