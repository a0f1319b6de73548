"""Shipped model files: ``<name>.safetensors`` (weights) beside ``<name>.yaml`` (the typed config).

Every modality ships its trained weights this way, and can also load straight from a training
checkpoint folder (``<run>/checkpoints/step_N/``: its EMA weights and ``config.yaml``). Loading
never unpickles; missing, corrupt or mismatched files raise a one-line ``CheckpointError``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from shared_core.config import from_yaml, to_yaml
from shared_core.errors import CheckpointError, ConfigError
from shared_core.io import atomic_path

__all__ = ["checkpoint_files", "load_pretrained", "save_pretrained"]

C = TypeVar("C")
M = TypeVar("M", bound=nn.Module)


def save_pretrained(model: nn.Module, cfg: object, path: str | os.PathLike[str], *, kind: str) -> Path:
    """Write ``path`` (.safetensors, metadata ``format = extradim-<kind>/1``) and its ``.yaml`` atomically."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path.with_suffix(".yaml")) as tmp:
        tmp.write_text(to_yaml(cfg))
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": f"extradim-{kind}/1"})
    return path


def checkpoint_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(weights, config) of a shipped ``.safetensors`` file or of a training checkpoint folder."""
    path = Path(path)
    if path.is_dir():
        weights, config = path / "ema.safetensors", path / "config.yaml"
    elif path.suffix == ".safetensors":
        weights, config = path, path.with_suffix(".yaml")
    else:
        raise CheckpointError(f"a checkpoint is a .safetensors file or a training checkpoint folder: {path}")
    for p in (weights, config):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file not found: {p}")
    return weights, config


def load_pretrained(
    path: str | os.PathLike[str], config_cls: type[C], build: Callable[[C], M]
) -> tuple[M, C, Path]:
    """``(model, config, weights path)``: the config read strictly, the model built and loaded strictly."""
    weights, yaml_path = checkpoint_files(path)
    try:
        cfg = from_yaml(config_cls, yaml_path)
    except ConfigError as exc:
        raise CheckpointError(f"bad checkpoint config {yaml_path}: {exc}") from exc
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint {weights}: {str(exc).splitlines()[0]}") from exc
    model = build(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise CheckpointError(f"checkpoint {weights} does not match its config: {first}") from exc
    return model, cfg, weights
