"""The toy2d modality: its data and checker, and the engine's learning check (tiny config here,
the full config as a slow test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shared_core.config import from_yaml
from shared_core.train.modality import build_trainer, get_modality
from shared_core.train.toy_modality import (
    SHAPES,
    ShapesDataConfig,
    ShapesDataset,
    Toy2DConfig,
    checker_scores,
    classify_shapes,
)

REPO = Path(__file__).resolve().parents[2]


def test_dataset_is_a_pure_function_of_seed_and_index() -> None:
    ds = ShapesDataset(ShapesDataConfig(seed=3))
    a, b = ds[17], ShapesDataset(ShapesDataConfig(seed=3))[17]
    assert torch.equal(a["x"], b["x"]) and int(a["y"]) == int(b["y"])
    assert not torch.equal(ds[18]["x"], a["x"])
    assert a["x"].shape == (3, 16, 16) and a["x"].min() == -1 and a["x"].max() <= 1
    labels = torch.stack([ds[i]["y"] for i in range(400)])
    assert torch.bincount(labels, minlength=4).min() > 60  # classes roughly balanced
    with pytest.raises(TypeError):
        len(ds)  # an endless stream
    assert len(ShapesDataset(ShapesDataConfig(num_samples=5))) == 5


def test_checker_recognises_real_shapes_and_rejects_noise() -> None:
    ds = ShapesDataset(ShapesDataConfig(seed=1))
    items = [ds[i] for i in range(200)]
    x, y = torch.stack([i["x"] for i in items]), torch.stack([i["y"] for i in items])
    assert (classify_shapes(x) == y).float().mean() >= 0.98
    noise = torch.randn(50, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5 - 0.5
    assert (classify_shapes(noise) == -1).all()
    assert (classify_shapes(torch.full((2, 3, 16, 16), -1.0)) == -1).all()  # blank images
    scores = checker_scores(x, y)
    assert scores["accuracy"] >= 0.98 and scores["debiased_accuracy"] >= 0.9
    # A label-blind "model": the same images under shuffled labels score about chance.
    shuffled = checker_scores(x, y[torch.randperm(200, generator=torch.Generator().manual_seed(0))])
    assert shuffled["accuracy"] < 0.4 and shuffled["debiased_accuracy"] < 0.4
    # Only the configured classes count.
    assert set(classify_shapes(x, classes=("circle", "square")).tolist()) <= {-1, 0, 1}
    assert SHAPES == ("circle", "square", "triangle", "cross")


def test_tiny_config_learns(tmp_path: Path) -> None:
    """Seconds on one core: the loss falls and the label steers the samples (beats chance)."""
    modality = get_modality("toy2d")
    cfg = modality.load_config(REPO / "configs/core/toy2d_tiny.yaml")
    trainer = build_trainer(modality, cfg, tmp_path / "run")
    trainer.fit()
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert losses[-1] < 0.4 * losses[0], losses
    result = modality.evaluate(trainer.ema.module, cfg, out_dir=tmp_path / "run")
    assert result["chance"] == 0.25 and result["checker_accuracy_on_data"] >= 0.98
    assert result["debiased_accuracy"] > 0.35, result  # chance 0.25; about 4 standard errors above it
    assert (tmp_path / "run" / "samples.png").exists()


@pytest.mark.slow
def test_full_learning_check(tmp_path: Path) -> None:
    """configs/core/toy2d.yaml: a few CPU minutes to samples most of which the checker accepts."""
    modality = get_modality("toy2d")
    cfg = from_yaml(Toy2DConfig, REPO / "configs/core/toy2d.yaml", ["train.log.progress=false"])
    trainer = build_trainer(modality, cfg, tmp_path / "run")
    trainer.fit()
    result = modality.evaluate(trainer.ema.module, cfg)
    assert result["accuracy"] > 0.5, result
