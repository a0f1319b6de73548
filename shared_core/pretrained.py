"""Shipped model files: ``<name>.safetensors`` (weights) beside ``<name>.yaml`` (the typed config).

Every modality ships its trained weights this way, and can also load straight from a training
checkpoint folder (``<run>/checkpoints/step_N/``: its EMA weights and ``config.yaml``). Loading
never unpickles; missing, corrupt or mismatched files raise a one-line ``CheckpointError``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from shared_core.config import from_yaml, to_yaml
from shared_core.errors import CheckpointError, ConfigError, first_line
from shared_core.io import atomic_path

__all__ = [
    "checkpoint_files",
    "load_pretrained",
    "load_state_partial",
    "load_state_strict",
    "load_tagged",
    "save_pretrained",
    "save_tagged",
    "tagged_stats",
]

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


def _read_weights(weights: Path) -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file; a corrupt one is a one-line ``CheckpointError``."""
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint {weights}: {first_line(exc)}") from exc


def load_pretrained(
    path: str | os.PathLike[str], config_cls: type[C], build: Callable[[C], M]
) -> tuple[M, C, Path]:
    """``(model, config, weights path)``: the config read strictly, the model built and loaded strictly."""
    weights, yaml_path = checkpoint_files(path)
    try:
        cfg = from_yaml(config_cls, yaml_path)
    except ConfigError as exc:
        raise CheckpointError(f"bad checkpoint config {yaml_path}: {exc}") from exc
    state = _read_weights(weights)
    model = build(cfg)
    load_state_strict(model, state, f"checkpoint {weights} does not match its config")
    return model, cfg, weights


def load_state_strict(module: nn.Module, state: dict[str, Any], context: str) -> None:
    """``module.load_state_dict(state)`` (strict); a mismatch raises ``CheckpointError("<context>:
    <the first missing, unexpected or mis-shaped key>")``, one line."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise CheckpointError(f"{context}: {first}") from exc


def load_state_partial(module: nn.Module, path: str | os.PathLike[str]) -> tuple[int, int]:
    """Start ``module`` from the weights of checkpoint ``path``; returns (tensors copied, kept).

    Every tensor of the checkpoint must exist in ``module`` under its name with its shape; the
    module's tensors the checkpoint lacks keep their initialisation. Growing a trained DiT this way
    (more blocks appended, each adaLN-Zero so the identity at init) starts from the same function.
    """
    weights, _ = checkpoint_files(path)
    state = _read_weights(weights)
    own = module.state_dict()
    for name, tensor in state.items():
        if name not in own:
            raise CheckpointError(f"{weights} does not fit the model: it has no tensor {name!r}")
        if own[name].shape != tensor.shape:
            raise CheckpointError(
                f"{weights} does not fit the model: {name!r} is {tuple(tensor.shape)} there, "
                f"{tuple(own[name].shape)} here"
            )
    module.load_state_dict(state, strict=False)
    return len(state), len(own) - len(state)


# Small self-describing networks (evaluation feature extractors): one .safetensors file whose
# metadata holds its format tag, its config as JSON and its training stats.


def save_tagged(
    model: nn.Module, path: str | os.PathLike[str], fmt: str, config: dict[str, Any], stats: dict[str, Any]
) -> Path:
    """Write ``model``'s weights to ``path`` (its folder created if missing) atomically with
    ``format``, ``config`` and ``stats`` metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": fmt, "config": json.dumps(config), "stats": json.dumps(stats)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def tagged_stats(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The training stats stored in a ``save_tagged`` file."""
    with safe_open(str(path), framework="pt") as f:
        return dict(json.loads((f.metadata() or {}).get("stats", "{}")))


def load_tagged(path: str | os.PathLike[str], fmt: str, build: Callable[[dict[str, Any]], M], what: str) -> M:
    """The network in a ``save_tagged`` file, built from its stored config, in eval mode.

    Raises:
        CheckpointError: ``what`` is missing, has another format tag, or does not load.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
        if meta.get("format") != fmt:
            raise ValueError(f"not a {what} (format {meta.get('format')!r})")
        net = build(json.loads(meta["config"]))
        net.load_state_dict(state)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"bad {what} {path}: {first_line(exc)}") from exc
    return net.eval()
