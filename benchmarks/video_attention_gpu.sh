#!/usr/bin/env bash
# Joint vs factorised space-time attention at full training length, on a lent GPU (the CPU takes
# ~1 s per DiT step, so a side-by-side of full runs does not fit a CPU session). Each run trains the
# shipped recipe (configs/video/shapes.yaml, fp32) on the shipped frame autoencoder
# (autoencoder.init, stage 1 skipped), then `extradim eval video` (252 clips, default sampling)
# evaluates its final EMA weights on the CPU.
# Expects .gpucheck/minilm16 (git-ignored, carried; the carry limit is 64 MiB with the tracked files):
# MiniLM-L6's config and tokenizer files and its weights cast to fp16, the word-embedding table cut
# to the 101 token ids the Shapes captions use (".rows" + ".ids"); rebuilt here in fp32 (other rows 0).
set -uo pipefail
OUT=${OUT:-/tmp/video_attention}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 3; }
mkdir -p /tmp/minilm && cp .gpucheck/minilm16/*.json .gpucheck/minilm16/vocab.txt /tmp/minilm/
python3 -c "
from safetensors.torch import load_file, save_file
import torch
s = load_file('.gpucheck/minilm16/model.safetensors')
k = 'embeddings.word_embeddings.weight'
w = torch.zeros(s.pop(k + '.shape').tolist())
w[s.pop(k + '.ids')] = s.pop(k + '.rows').float()
save_file({k: w, **{n: v.float() for n, v in s.items()}}, '/tmp/minilm/model.safetensors', metadata={'format': 'pt'})"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
run() {  # name attention steps
  local name=$1 att=$2 steps=$3 t0=$SECONDS
  OMP_NUM_THREADS=4 EXTRADIM_NUM_THREADS=4 timeout 420 extradim train video --config configs/video/shapes.yaml \
    --out "/tmp/runs/$name" train.steps="$steps" train.device=cuda train.precision=fp32 \
    train.checkpoint.every="$steps" model.attention="$att" \
    autoencoder.init=checkpoints/video/shapes.safetensors data.text_encoder=/tmp/minilm \
    >"/tmp/runs/$name.log" 2>&1
  echo "$name train rc=$? wall=$((SECONDS - t0))s" | tee -a "$OUT/summary.txt"
  tr '\r' '\n' <"/tmp/runs/$name.log" | grep -v "it/s\]\|step/s\]" | tail -40 >"$OUT/$name.train.log"
  t0=$SECONDS
  OMP_NUM_THREADS=4 timeout 200 extradim eval video --checkpoint "/tmp/runs/$name/checkpoints/step_$(printf %08d "$steps")" \
    --out "$OUT/eval_$name" >"$OUT/$name.eval.log" 2>&1
  echo "$name eval rc=$? wall=$((SECONDS - t0))s" | tee -a "$OUT/summary.txt"
}
mkdir -p /tmp/runs
run fact3000 factorised 3000 &
run joint3000 joint 3000 &
run fact2000 factorised 2000 &
wait
rm -f "$OUT"/eval_*/contact_sheet.png.tmp
ls "$OUT"/eval_*
