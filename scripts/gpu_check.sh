#!/usr/bin/env bash
# The GPU check: salt's training step on CUDA and on wgpu (Vulkan) beside PyTorch's, in one run,
# one JSON line per configuration in $OUT/gpu_check.jsonl plus a summary in $OUT/summary.txt.
#
# Prepared here, run on a machine with an NVIDIA GPU (e.g. through the device tool):
#
#   # here, once:
#   cargo build --release -p xtask --features cuda,wgpu   # the binary to carry
#   mkdir -p .gpu && cp target/release/xtask .gpu/         # (.gpu is git-ignored)
#   python3 -m pip download --no-deps -d .gpu segment-anything==1.0
#   # Vulkan loader for wgpu (device README's recipe), into .gl/*.deb
#   # there (carry .gpu and .gl):
#   scripts/gpu_check.sh [--quick]
#
# What runs (SALT r=48 q=256 on the paper's 512 model; salt-reference.md §7b has PyTorch's H200
# numbers to beat): salt on cuda and wgpu, f32, batch 2 and 16; PyTorch eager fp32,
# fp32 + TF32, bf16 autocast and torch.compile + bf16, batch 2 and 16. Peak memory: PyTorch's
# allocator for PyTorch, the driver's used memory (nvidia-smi, sampled every 100 ms, minus the
# idle reading) for salt, whose backends expose no allocator statistics through burn 0.21.
# --quick: batch 16 only, fewer steps (fits a short lease). Every run has its own timeout, so a
# hang or a crash of one configuration is recorded and the rest still run.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/gpu-check}
mkdir -p "$OUT"
results="$OUT/gpu_check.jsonl"
log="$OUT/gpu_check.log"
: >"$results"
: >"$log"
quick=0
[ "${1:-}" = "--quick" ] && quick=1
batches="2 16"
steps=10
[ $quick = 1 ] && batches="16" && steps=5

say() { echo "$*" | tee -a "$log"; }

# --- environment ------------------------------------------------------------------------------
XTASK=${XTASK:-}
for c in .gpu/xtask target/release/xtask; do
    [ -z "$XTASK" ] && [ -x "$c" ] && XTASK=$c
done
[ -n "$XTASK" ] || { say "no xtask binary: build it with --features cuda,wgpu and carry it in .gpu/"; exit 2; }
if ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
    [ -f "$icd" ] && export VK_DRIVER_FILES=$icd && break
done
[ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ] &&
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
# burn-cuda loads NVRTC at run time: PyTorch's wheel ships it.
nvrtc_dir=$(python3 -c 'import nvidia.cuda_nvrtc as m, os; print(os.path.join(os.path.dirname(m.__file__), "lib"))' 2>/dev/null || true)
[ -n "$nvrtc_dir" ] && export LD_LIBRARY_PATH="$nvrtc_dir:${LD_LIBRARY_PATH:-}"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:$LD_LIBRARY_PATH"
done
if ! python3 -c 'import segment_anything' 2>/dev/null && ls .gpu/segment_anything-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/segment_anything-*.whl &&
        export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
say "xtask: $XTASK; torch: $(python3 -c 'import torch; print(torch.__version__)' 2>&1)"
"$XTASK" bench-train --help >/dev/null 2>&1 || say "warning: $XTASK does not run here"

used_mib() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; }
idle=$(used_mib)
idle=${idle:-0}

# Runs "$@" with a timeout while sampling the driver's used memory; appends
# {"driver_peak_mib": N} to the last JSON line the command added to $results.
run_sampled() {
    local limit=$1; shift
    local before peak=0 pid
    before=$(wc -l <"$results")
    (while :; do used_mib; sleep 0.1; done) >"$OUT/mem.samples" 2>/dev/null &
    pid=$!
    timeout "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    peak=$(sort -n "$OUT/mem.samples" | tail -1)
    peak=${peak:-0}
    if [ "$(wc -l <"$results")" -gt "$before" ]; then
        python3 - "$results" "$((peak - idle))" <<'EOF'
import json, sys
path, peak = sys.argv[1], int(sys.argv[2])
lines = open(path).read().splitlines()
row = json.loads(lines[-1]); row["driver_peak_mib"] = peak
lines[-1] = json.dumps(row)
open(path + ".tmp", "w").write("\n".join(lines) + "\n")
import os; os.replace(path + ".tmp", path)
EOF
    else
        echo "{\"failed\": \"$*\", \"rc\": $rc}" >>"$results"
        say "FAILED (rc $rc): $*"
    fi
}

# --- salt -------------------------------------------------------------------------------------
# bf16 on wgpu is refused by name (WGSL has no bf16): one fast FAILED line that says so.
for dev in cuda wgpu; do
    for prec in f32 bf16; do
        for b in $batches; do
            say "salt $dev $prec batch $b"
            run_sampled 240 "$XTASK" bench-train --device "$dev" --precision "$prec" \
                --method salt --batch "$b" --steps "$steps" --warmup 3 --json "$results"
        done
    done
done

# burn's composed attention (keeps every block's n×n logits and probabilities) against the
# recomputing one above, at the batch where it matters.
say "salt cuda f32 batch 16, SALT_ATTENTION=composed"
SALT_ATTENTION=composed run_sampled 240 "$XTASK" bench-train --device cuda --method salt \
    --batch 16 --steps "$steps" --warmup 3 --json "$results"

# Data-parallel scaling on a machine with several GPUs: the global batch 16 per GPU on 1, 2, …
# all CUDA devices (burn's collective sums the gradients; docs/architecture.md).
ngpu=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
if [ "${ngpu:-0}" -gt 1 ]; then
    for n in $(seq 2 "$ngpu"); do
        devs=$(seq -s, 0 $((n - 1)) | sed 's/\([0-9]\+\)/cuda:\1/g')
        say "salt $devs f32 batch $((16 * n)) (data-parallel)"
        run_sampled 300 "$XTASK" bench-train --device "$devs" --method salt \
            --batch $((16 * n)) --steps "$steps" --warmup 3 --json "$results"
    done
fi

# --- PyTorch ----------------------------------------------------------------------------------
for b in $batches; do
    for variant in "" "--tf32" "--bf16" "--compile --bf16"; do
        say "pytorch batch $b $variant"
        # shellcheck disable=SC2086
        run_sampled 300 python3 scripts/torch_train_bench.py --device cuda --method salt \
            --batch "$b" --steps "$steps" --warmup 3 $variant --json "$results"
    done
done

# --- summary ----------------------------------------------------------------------------------
python3 - "$results" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'impl':8} {'device':16} {'variant':18} {'batch':>5} {'ms/step':>9} {'img/s':>8} {'peak GiB':>9}")
for r in rows:
    if "failed" in r:
        print(f"FAILED: {r['failed']} (rc {r['rc']})")
        continue
    if r["impl"] == "salt":
        o = r["options"]; dev, b = o["device"], o["batch"]
        var = {"f32": "f32 (TF32 matmul)"}.get(o.get("precision", "f32"), o.get("precision"))
        peak = r.get("driver_peak_mib", 0) / 1024
    else:
        dev, b = r["device"], r["batch"]
        var = r["precision"] + (" compile" if r["compile"] else "")
        peak = r["peak_bytes"] / 2**30
    print(f"{r['impl']:8} {dev:16} {var:18} {b:>5} {1000 * r['median_s']:>9.1f} {r['images_per_s']:>8.1f} {peak:>9.2f}")
EOF
