# extradim — the two commands a fresh machine needs: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# The local CPU wheel: on a CPU machine pip takes it from disk instead of a multi-GB CUDA build.
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: setup demo demo-core test test-slow lint format typecheck bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,video,threed]"
	touch $(STAMP)

setup: $(STAMP)

# The main job on the shipped weights: a clip from text, then a coloured point cloud + mesh.
demo: $(STAMP)
	mkdir -p outputs
	$(BIN)/extradim video "a red circle moving left" -o outputs/demo.gif --seed 0
	$(BIN)/extradim points "a blue torus" -o outputs/torus.ply --mesh outputs/torus.glb --seed 0

demo-core: $(STAMP)
	mkdir -p outputs
	$(BIN)/extradim demo -o outputs/demo.png

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_samplers.py --out benchmarks/results/samplers.json
	$(BIN)/python benchmarks/bench_dit.py --out benchmarks/results/dit.json
	$(BIN)/python benchmarks/train_toy2d.py
	$(BIN)/python benchmarks/bench_video.py --out benchmarks/results/video_speed.json
	$(BIN)/python benchmarks/bench_points.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache .mypy_cache
