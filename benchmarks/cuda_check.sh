#!/usr/bin/env bash
# The CUDA check on a lent GPU machine (see benchmarks/cuda_check.py). Expects, in .gpucheck/ (git-
# ignored, carried): whl/ with nerfacc, xformers, trimesh and rtree wheels, and tok/ with MiniLM's tokenizer.
# Prepared here by hand: pip download --no-deps nerfacc==0.5.3 trimesh rtree xformers (manylinux, cp312)
# into .gpucheck/whl, and MiniLM's tokenizer*.json, vocab.txt, special_tokens_map.json and config.json
# into .gpucheck/tok. Then run this script through the device tool, carrying .gpucheck.
set -uo pipefail
OUT=${OUT:-/tmp/cuda_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpucheck/whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 HF_HUB_OFFLINE=1
# entry points (video, points, views modalities) come from the installed distribution's metadata
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 3; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
timeout 360 python3 benchmarks/cuda_check.py --out "$OUT/check" --tokenizer .gpucheck/tok "$@" 2>&1 | grep -v "it/s\]\|step/s\]\|object/s\]" | tee "$OUT/cuda_check.log"
rc_check=${PIPESTATUS[0]}
cp "$OUT/check/cuda_check.json" "$OUT/" 2>/dev/null
# the suite's CUDA tests (skipped on CPU CI) plus the attention, engine and NeRF tests with CUDA present
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/nn tests/threed/test_nerf.py \
  tests/train/test_loop.py tests/train/test_resume.py -k "not ddp" 2>&1 | tail -15 | tee "$OUT/pytest.log"
rc_tests=${PIPESTATUS[0]}
echo "cuda_check rc=$rc_check pytest rc=$rc_tests"
