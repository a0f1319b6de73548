"""Shared fixtures of the video tests: the real MiniLM text encoder (loaded once) and a tiny random
text-to-clip pipeline saved as a checkpoint (random weights: tests check behaviour, not quality)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_core.config import from_dict
from shared_core.text import TextEncoder

TINY_CONFIG = {
    "diffusion": {"schedule": "cosine", "prediction": "x0"},
    "data": {"captions_per_combo": 1},
    "autoencoder": {"width": 16, "steps": 0},
    "model": {"hidden_size": 32, "depth": 1, "num_heads": 2},
    "sample": {"steps": 2, "num_eval_clips": 4, "batch_size": 8},
}


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    return TextEncoder.load("minilm", max_length=32)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny.safetensors`` + ``tiny.yaml`` of a random ``LatentVideoModel`` (seeded)."""
    import torch

    from video.modality import LatentVideoModel, VideoConfig
    from video.pipeline import save_pipeline_checkpoint

    cfg = from_dict(VideoConfig, TINY_CONFIG)
    torch.manual_seed(0)
    model = LatentVideoModel(cfg)
    with torch.no_grad():  # adaLN-Zero starts at x0 = 0 whatever the noise: make the output depend on it
        for p in model.dit.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return save_pipeline_checkpoint(model, cfg, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_checkpoint: Path, text_encoder: TextEncoder):  # -> VideoPipeline
    """The tiny checkpoint loaded as a pipeline, sharing the session's text encoder."""
    from video.pipeline import VideoPipeline

    pipe = VideoPipeline.load(tiny_checkpoint)
    pipe.text = text_encoder
    return pipe


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, text_encoder: TextEncoder):  # -> Callable[[list[str]], int]
    """``shared_core.cli.main`` with the video entry points registered (as pyproject declares them),
    so the tests run the real command path even before the package is reinstalled. Loading the
    text encoder returns the session's (its prompt cache is shared: use fresh prompts where a
    test needs the encoder's warnings)."""
    from importlib.metadata import EntryPoint

    import shared_core.cli as core_cli

    real_load = TextEncoder.load

    def load(name_or_path: str = "minilm", **kwargs):
        if str(name_or_path) == "minilm" and kwargs.get("max_length", 32) == text_encoder.max_length:
            return text_encoder
        return real_load(name_or_path, **kwargs)

    monkeypatch.setattr(TextEncoder, "load", staticmethod(load))

    declared = {
        "extradim.commands": [EntryPoint("video", "video.cli:register", "extradim.commands")],
        "extradim.evals": [EntryPoint("video", "video.evaluate:register", "extradim.evals")],
    }
    real = core_cli.entry_points

    def fake(*, group: str):
        installed = [ep for ep in real(group=group) if ep.name != "video"]
        return installed + declared.get(group, [])

    monkeypatch.setattr(core_cli, "entry_points", fake)
    return core_cli.main


@pytest.fixture(scope="session")
def tiny_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A feature network trained for 3 steps (random-ish features: enough to test the plumbing)."""
    from video.features import FeatureNetConfig, build_feature_net

    path = tmp_path_factory.mktemp("features") / "features.safetensors"
    build_feature_net(path, FeatureNetConfig(width=8, steps=3, batch_size=4, test_clips=16), log=False)
    return path
