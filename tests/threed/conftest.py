"""Shared fixtures of the threed tests: the real MiniLM text encoder (loaded once), a tiny random
base + upsampler pair saved as checkpoints, a barely trained PointNet, and the CLI with the threed
entry points registered. Random weights: the tests check behaviour, not quality."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shared_core.config import from_dict
from shared_core.text import TextEncoder

# Base: 32 coarse points; upsampler: conditioned on them, adds the rest (e.g. 48 points in all).
TINY_POINTS = {
    "diffusion": {"schedule": "cosine", "prediction": "x0"},
    "data": {"num_points": 32, "coarse_points": 16, "max_text_length": 16},
    "model": {"hidden_size": 32, "depth": 1, "num_heads": 2},
    "sample": {"steps": 2},
}


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """adaLN-Zero starts at output 0 whatever the input: give the zero weights values."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    return TextEncoder.load("minilm", max_length=16)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(base.safetensors, upsampler.safetensors)`` (each with its ``.yaml``) of random tiny models."""
    from threed.modality import PointsConfig, PointsModel
    from threed.pipeline import save_points_checkpoint

    folder = tmp_path_factory.mktemp("points_ckpt")
    paths = []
    for stage in ("base", "upsampler"):
        cfg = from_dict(PointsConfig, {**TINY_POINTS, "model": {**TINY_POINTS["model"], "stage": stage}})
        model = randomise(PointsModel(cfg))
        paths.append(save_points_checkpoint(model, cfg, folder / f"{stage}.safetensors"))
    return paths[0], paths[1]


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_checkpoints: tuple[Path, Path], text_encoder: TextEncoder):  # -> PointsPipeline
    from threed.pipeline import PointsPipeline

    pipe = PointsPipeline.load(*tiny_checkpoints)
    pipe.text = text_encoder
    return pipe


@pytest.fixture(scope="session")
def tiny_pointnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PointNet trained for 2 steps on 64-point clouds (enough to test the plumbing)."""
    from threed.features import PointNetConfig, build_point_net

    path = tmp_path_factory.mktemp("pointnet") / "pointnet.safetensors"
    cfg = PointNetConfig(width=8, steps=2, batch_size=2, num_points=64, test_clouds=4)
    build_point_net(path, cfg, log=False)
    return path


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, text_encoder: TextEncoder):  # -> Callable[[list[str]], int]
    """``shared_core.cli.main`` with the threed entry points registered (as pyproject declares them),
    so the tests run the real command path before the package is reinstalled; loading MiniLM returns
    the session's encoder."""
    from importlib.metadata import EntryPoint

    import shared_core.cli as core_cli

    real_load = TextEncoder.load

    def load(name_or_path: str = "minilm", **kwargs):
        if str(name_or_path) == "minilm" and kwargs.get("max_length", 16) == text_encoder.max_length:
            return text_encoder
        return real_load(name_or_path, **kwargs)

    monkeypatch.setattr(TextEncoder, "load", staticmethod(load))
    declared = {
        "extradim.commands": [
            EntryPoint("points", "threed.cli:register", "extradim.commands"),
            EntryPoint("dream", "threed.dream_cli:register", "extradim.commands"),
        ],
        "extradim.evals": [EntryPoint("points", "threed.evaluate:register", "extradim.evals")],
    }
    real = core_cli.entry_points

    def fake(*, group: str):
        installed = [ep for ep in real(group=group) if ep.name not in ("points", "dream")]
        return installed + declared.get(group, [])

    monkeypatch.setattr(core_cli, "entry_points", fake)
    return core_cli.main


TINY_VIEWS = {
    "diffusion": {"schedule": "cosine", "prediction": "x0"},
    "data": {"size": 16, "objects": 3, "views_per_object": 2, "max_text_length": 16},
    "model": {"patch_size": 4, "hidden_size": 32, "depth": 1, "num_heads": 2, "camera_dim": 8},
    "sample": {"steps": 2},
}


@pytest.fixture(scope="session")
def tiny_views_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny ``views`` prior saved as safetensors + YAML."""
    from shared_core.pretrained import save_pretrained
    from threed.prior import ViewPriorModel, ViewsConfig

    cfg = from_dict(ViewsConfig, TINY_VIEWS)
    folder = tmp_path_factory.mktemp("views")
    return save_pretrained(randomise(ViewPriorModel(cfg)), cfg, folder / "v.safetensors", kind="views")
