#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (docs/cuda.md): configure and build
# (Release, NAC_CUDA=ON), run the GPU tests (every op CUDA vs CPU, the op/golden/loss tests
# on the CUDA backend, a seeded run on both), then `nac bench --backend cuda` for ResNet-18
# and ResNet-50 at 32x32, batch 1000 (the paper's), and bench/bench_pytorch.py --device cuda
# beside them when python3 has torch with CUDA. Prints one summary; exits non-zero when a
# stage failed. Budget: 8 minutes. Usage: scripts/gpu-check.sh [build-dir]
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/gpu}
out=$(mktemp -d /tmp/nac_gpu_check_XXXXXX)
t_start=$(date +%s)
declare -a summary
fails=0
note() { summary+=("$1"); echo "== $1"; }
stage() { # stage NAME TIMEOUT CMD...: run, log to $out/NAME.log, note ok/FAILED
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s)
    if timeout "$limit" "$@" >"$out/$name.log" 2>&1; then
        note "$name: ok ($(( $(date +%s) - t0 )) s)"
    else
        local rc=$?
        note "$name: FAILED (exit $rc, $(( $(date +%s) - t0 )) s; log $out/$name.log)"
        tail -n 30 "$out/$name.log"
        fails=$((fails + 1))
    fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null |
    sed 's/^/GPU: /' || echo "GPU: nvidia-smi not available"
jobs=$(nproc 2>/dev/null || echo 4)

stage configure 120 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNAC_CUDA=ON
stage build 240 cmake --build "$build" -j "$jobs"
[ -x "$build/nac" ] || { printf '%s\n' "${summary[@]}"; echo "no nac binary: stopping"; exit 1; }

# every op CUDA vs CPU and the seeded run (a missing GPU is a failure here, not a skip)
stage test_cuda 180 env NAC_TEST_GPU=1 "$build/test_cuda"
# the backend-generic tests (host references, ResNet golden, loss goldens) on the CUDA backend
stage tests_on_cuda 240 env NAC_TEST_BACKEND=cuda NAC_TEST_GPU=1 \
    ctest --test-dir "$build" --output-on-failure -j 4 \
    -R '^test_(backend|ops_dnn|ops_math|losses|resnet_golden|encoders|encfile|optim|checkpoint|recalibrate|vae|vae_is|dist_syncbn)$'

# NCCL all-reduce of device tensors, one rank (built only where MPI and NCCL were found)
if [ -x "$build/test_dist_nccl" ] && command -v mpirun >/dev/null; then
    stage nccl 60 env NAC_TEST_GPU=1 mpirun --allow-run-as-root -np 1 "$build/test_dist_nccl"
else
    note "nccl: skipped (no test_dist_nccl or no mpirun: install openmpi-bin libopenmpi-dev)"
fi

bench() { # bench NAME ARCH
    local name=$1 arch=$2
    stage "$name" 150 "$build/nac" bench --backend cuda --arch "$arch" --batch 1000 --size 32 \
        --steps 5 --warmup 2
    grep '^{' "$out/$name.log" | tail -n 1 >"$out/$name.json" || true
}
bench bench_resnet18 resnet18
bench bench_resnet50 resnet50

# the VAE training step and the IS evaluation of the quick Table 5 row
for st in vae is; do
    stage "bench_$st" 120 "$build/nac" bench --backend cuda --stage "$st" --peak-seconds 0
    grep '^{' "$out/bench_$st.log" | tail -n 1 >"$out/bench_$st.json" || true
done

if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    for arch in resnet18 resnet50; do
        stage "pytorch_$arch" 150 python3 bench/bench_pytorch.py --device cuda --arch "$arch" \
            --batch 1000 --size 32 --steps 5 --warmup 2
        grep '^{' "$out/pytorch_$arch.log" | tail -n 1 >"$out/pytorch_$arch.json" || true
    done
    for st in vae is; do
        stage "pytorch_$st" 120 python3 bench/bench_pytorch.py --device cuda --stage "$st"
        grep '^{' "$out/pytorch_$st.log" | tail -n 1 >"$out/pytorch_$st.json" || true
    done
else
    note "pytorch: skipped (no python3 torch with CUDA)"
fi

echo
echo "==================== gpu-check summary ($(( $(date +%s) - t_start )) s) ===================="
printf '%s\n' "${summary[@]}"
for f in "$out"/*.json; do
    [ -s "$f" ] || continue
    python3 - "$f" <<'PY' 2>/dev/null || { echo "$(basename "$f" .json): $(cat "$f")"; }
import json, sys
j = json.load(open(sys.argv[1]))
name = sys.argv[1].rsplit("/", 1)[1][:-5]
mem = j.get("backend_peak_mb") or j.get("device_peak_mb")
print(f"{name:16s} {j.get('impl','?'):24s} {j.get('arch','?'):9s} batch/view {j.get('batch_per_view','?')}: "
      f"{j.get('images_per_s','?')} images/s, {j.get('step_s','?')} s/step, "
      f"device peak {mem} MB, {j.get('gflop_per_s','?')} GFLOP/s")
PY
done
echo "logs: $out"
exit $(( fails > 0 ))
