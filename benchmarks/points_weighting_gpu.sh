#!/usr/bin/env bash
# Does the loss weighting of low noise decide how sharp the clouds are? Base and upsampler
# trainings side by side on a lent GPU (the shipped configs with overrides, fp32), each then
# measured on the CPU (the pipelines sample on the CPU only): upsamplers with
# benchmarks/points_upsampler_probe.py (distance of their points to the true surface), bases with
# benchmarks/points_base_probe.py (coarse class accuracy, 1-NNA), next to the shipped models.
# min-SNR-5 on v-prediction weights the v error by min(SNR, 5) sigma^2: at sigma 0.1 by 0.05, at
# 0.03 by 0.0045, where uniform v (or eps) weighting gives ~1.
# Expects .gpucheck/whl/trimesh-*.whl and .gpucheck/minilm16 (git-ignored, carried).
# Run once on a lent H100 (2026-11-27 session 5): the upsampler figures are valid (no text in
# them); the base figures were not: the *shipped* base scored 12% class accuracy there against 82%
# on this machine with the same probe, so text conditioning was broken on that machine (the
# rebuilt MiniLM matched the packaged one here to 0.004; not debugged further).
set -uo pipefail
OUT=${OUT:-/tmp/points_weighting}
TRAIN_S=${TRAIN_S:-250}
mkdir -p "$OUT" /tmp/runs /tmp/minilm
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpucheck/whl/trimesh-*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 3; }
cp .gpucheck/minilm16/*.json .gpucheck/minilm16/vocab.txt /tmp/minilm/
python3 - <<'PY'  # the fp16 copy -> fp32, as transformers expects
from safetensors.torch import load_file, save_file
s = load_file('.gpucheck/minilm16/model.safetensors')
save_file({k: v.float() for k, v in s.items()}, '/tmp/minilm/model.safetensors')
PY
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/summary.txt"
last() { ls -d "/tmp/runs/$1/checkpoints/step_"* 2>/dev/null | tail -1; }
run() {  # stage name steps overrides...
  local stage=$1 name=$2 steps=$3 t0=$SECONDS extra=(); shift 3
  [ "$stage" = base ] && extra=(data.text_encoder=/tmp/minilm)
  timeout "$TRAIN_S" extradim train points --config "configs/threed/points_$stage.yaml" --no-eval \
    --out "/tmp/runs/$name" train.steps="$steps" train.device=cuda train.precision=fp32 \
    train.checkpoint.every=600 "${extra[@]}" "$@" >"/tmp/runs/$name.log" 2>&1
  echo "$name train rc=$? wall=$((SECONDS - t0))s $*" >>"$OUT/summary.txt"
  local ck; ck=$(last "$name")
  [ -n "$ck" ] || { echo "$name: no checkpoint" >>"$OUT/summary.txt"; return; }
  if [ "$stage" = base ]; then
    timeout 200 python3 benchmarks/points_base_probe.py --base "$ck" --per-class 10 --out "$OUT/$name.json" >"/tmp/runs/$name.probe" 2>&1
  else
    timeout 100 python3 benchmarks/points_upsampler_probe.py --per-class 2 --upsampler "$ck" --out "$OUT/$name.json" >"/tmp/runs/$name.probe" 2>&1
  fi
  echo "$name probe rc=$? $(basename "$ck"): $(grep mean "/tmp/runs/$name.probe")" >>"$OUT/summary.txt"
}
{ python3 benchmarks/points_upsampler_probe.py --per-class 2 --out "$OUT/up_shipped.json" 2>&1 | grep mean | sed 's/^/up_shipped: /' >>"$OUT/summary.txt"
  python3 benchmarks/points_base_probe.py --per-class 10 --text-encoder /tmp/minilm --out "$OUT/base_shipped.json" 2>&1 | grep mean | sed 's/^/base_shipped: /' >>"$OUT/summary.txt"; } &
run upsampler u_uniform 1200 diffusion.weighting=uniform &
run upsampler u_snr 1200 diffusion.weighting=snr &
run upsampler u_eps 1200 diffusion.prediction=eps diffusion.weighting=uniform &
run upsampler u_uniform_local8 1200 diffusion.weighting=uniform model.local_k=8 &
run base b_uniform 2400 diffusion.weighting=uniform &
run base b_snr 2400 diffusion.weighting=snr &
run base b_uniform_w192d6 2400 diffusion.weighting=uniform model.hidden_size=192 model.depth=6 &
wait
for f in /tmp/runs/*.log /tmp/runs/*.probe; do tr '\r' '\n' <"$f" | tail -4 >"$OUT/$(basename "$f").tail"; done
cat "$OUT/summary.txt"
