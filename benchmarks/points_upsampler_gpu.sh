#!/usr/bin/env bash
# Is the point upsampler undertrained or too small? Several upsampler trainings side by side on a
# lent GPU (configs/threed/points_upsampler.yaml with overrides, fp32), each then measured with
# benchmarks/points_upsampler_probe.py on the CPU (distance of its points to the true surface; the
# pipelines sample on the CPU only), next to the shipped upsampler. Expects .gpucheck/whl/trimesh-*.whl (git-ignored, carried).
set -uo pipefail
OUT=${OUT:-/tmp/points_upsampler}
mkdir -p "$OUT" /tmp/runs
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpucheck/whl/trimesh-*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 3; }
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/summary.txt"
run() {  # name steps overrides...
  local name=$1 steps=$2 t0=$SECONDS; shift 2
  OMP_NUM_THREADS=3 timeout 220 extradim train points --config configs/threed/points_upsampler.yaml --no-eval \
    --out "/tmp/runs/$name" train.steps="$steps" train.device=cuda train.precision=fp32 \
    train.checkpoint.every="$steps" "$@" >"/tmp/runs/$name.log" 2>&1
  echo "$name train rc=$? wall=$((SECONDS - t0))s $*" >>"$OUT/summary.txt"
  tr '\r' '\n' <"/tmp/runs/$name.log" | grep -v "step/s\]" | tail -3 | sed "s/^/$name: /" >>"$OUT/summary.txt"
  OMP_NUM_THREADS=3 timeout 60 python3 benchmarks/points_upsampler_probe.py --per-class 2 \
    --upsampler "/tmp/runs/$name/checkpoints/step_$(printf %08d "$steps")" --out "$OUT/$name.json" \
    >"/tmp/runs/$name.probe" 2>&1
  echo "$name probe rc=$?: $(grep mean "/tmp/runs/$name.probe")" >>"$OUT/summary.txt"
}
OMP_NUM_THREADS=3 python3 benchmarks/points_upsampler_probe.py --per-class 2 --out "$OUT/shipped.json" 2>&1 \
  | grep "mean\| s$" | sed 's/^/shipped: /' >>"$OUT/summary.txt" &
run a_1200 1200 &
run b_4000 4000 &
run c_b64_3000 3000 train.batch_size=64 &
run d_w128d6_3000 3000 model.hidden_size=128 model.depth=6 &
wait
cat "$OUT/summary.txt"
