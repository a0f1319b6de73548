"""Training checkpoints that never unpickle.

A checkpoint is a folder ``<run>/checkpoints/step_00001200/`` holding

* ``model.safetensors``, ``ema.safetensors``: the weights (safetensors: a JSON header plus raw
  tensors, so loading cannot run code);
* ``optimizer.safetensors``: the optimizer's tensors (Adam moments, step counts) and any other
  trainer tensors (e.g. a loss-aware timestep sampler's history), keyed by name;
* ``config.yaml``: the run's resolved config;
* ``state.json``: step, counters, optimizer hyper-parameters and RNG states as lists of ints.

It is written into a hidden temporary folder beside the final one and renamed into place, so a
run killed at any moment leaves either the complete checkpoint or none (the rename is atomic on
POSIX filesystems). Only the newest ``keep_last`` are kept. Loading checks keys and shapes and
raises ``CheckpointError`` naming the file and the mismatch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from shared_core.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "checkpoint_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_module_state",
    "optimizer_state_from_tensors",
    "optimizer_state_to_tensors",
    "read_safetensors",
    "rng_state_from_list",
    "rng_state_to_list",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "extradim-checkpoint/1"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")
_TMP_PREFIX = ".tmp-"
_REQUIRED_STATE = ("format", "step")


def checkpoint_dir(root: str | os.PathLike[str], step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def list_checkpoints(root: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as (step, folder), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


# ----------------------------------------------------------------------------------------------
# Encoding: RNG states and optimizer state as JSON + flat tensor dicts
# ----------------------------------------------------------------------------------------------


def rng_state_to_list(state: Tensor) -> list[int]:
    """A generator's ByteTensor state as a JSON-able list of ints."""
    return [int(v) for v in state.tolist()]


def rng_state_from_list(values: list[int]) -> Tensor:
    return torch.tensor(values, dtype=torch.uint8)


def optimizer_state_to_tensors(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors ``state.<param id>.<name>`` and JSON metadata."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, Tensor):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state_from_tensors(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of ``optimizer_state_to_tensors``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, per_param in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(per_param)
    # JSON turned tuples (e.g. Adam's betas) into lists; give the optimizer back what it saved.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _plain(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # safetensors wants contiguous CPU tensors without shared storage (tied weights would share).
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_checkpoint(
    root: str | os.PathLike[str],
    step: int,
    *,
    tensors: Mapping[str, Mapping[str, Tensor]],
    config_yaml: str,
    state: Mapping[str, Any],
    keep_last: int = 0,
) -> Path:
    """Write a checkpoint atomically and prune old ones.

    Args:
        root: the checkpoints folder (created if needed).
        step: completed optimizer steps; names the folder.
        tensors: file stem -> tensors, e.g. {"model": ..., "ema": ..., "optimizer": ...}.
        config_yaml: the resolved config.
        state: JSON-able small state; ``format`` and ``step`` are added.
        keep_last: keep only the newest N checkpoints (0 keeps all).

    Returns:
        The checkpoint folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, step)
    # Leftovers of a run killed mid-save are never valid checkpoints: remove them.
    for p in root.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)
    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    tmp.mkdir()
    try:
        for stem, group in tensors.items():
            path = tmp / f"{stem}.safetensors"
            save_file(_plain(group), str(path), metadata={"format": CHECKPOINT_FORMAT, "step": str(step)})
            _fsync_file(path)
        (tmp / "config.yaml").write_text(config_yaml)
        full_state = {"format": CHECKPOINT_FORMAT, "step": step, **state}
        (tmp / "state.json").write_text(json.dumps(full_state, indent=1, sort_keys=True) + "\n")
        for name in ("config.yaml", "state.json"):
            _fsync_file(tmp / name)
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step (e.g. after a resume): swap the old one out first
            old = root / f"{_TMP_PREFIX}old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last > 0:
        for _, p in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(p, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load a safetensors file to CPU; a missing or corrupt file is a ``CheckpointError``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint file missing: {p}")
    try:
        return load_file(str(p), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for truncated/garbled files
        raise CheckpointError(f"corrupt checkpoint file {p}: {exc}") from None


def load_module_state(
    module: nn.Module, tensors: Mapping[str, Tensor], source: str | os.PathLike[str]
) -> None:
    """Copy ``tensors`` into ``module`` after checking that keys and shapes match exactly.

    Raises:
        CheckpointError: naming ``source`` and the missing/unexpected keys or the first shape
            mismatches.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    shapes = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if shapes:
        problems.append(f"shape mismatch {_few(shapes)}")
    if problems:
        raise CheckpointError(f"{source} does not match the model: {'; '.join(problems)}")
    module.load_state_dict(dict(tensors), strict=True)


def _few(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return f"[{shown}{f', ... ({len(items) - n} more)' if len(items) > n else ''}]"


@dataclass
class Checkpoint:
    """A checkpoint folder whose ``state.json`` and ``config.yaml`` have been read and checked.

    Tensor files are read on demand by ``tensors(stem)``.
    """

    path: Path
    state: dict[str, Any]
    config_yaml: str
    _cache: dict[str, dict[str, Tensor]] = field(default_factory=dict, repr=False)

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def tensors(self, stem: str) -> dict[str, Tensor]:
        if stem not in self._cache:
            self._cache[stem] = read_safetensors(self.path / f"{stem}.safetensors")
        return self._cache[stem]

    def load_module(self, stem: str, module: nn.Module) -> None:
        """Load ``<stem>.safetensors`` into ``module`` with key/shape checks."""
        load_module_state(module, self.tensors(stem), self.path / f"{stem}.safetensors")

    def load_optimizer(self, optimizer: torch.optim.Optimizer, stem: str = "optimizer") -> None:
        """Restore the optimizer from ``<stem>.safetensors`` + ``state.json['optimizer']``."""
        file = self.path / f"{stem}.safetensors"
        meta = self.state.get("optimizer")
        if not isinstance(meta, dict) or "param_groups" not in meta:
            raise CheckpointError(f"{self.path / 'state.json'}: no optimizer state recorded")
        tensors = {k: v for k, v in self.tensors(stem).items() if k.startswith("state.")}
        sd = optimizer_state_from_tensors(tensors, meta)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        saved_groups = [len(g["params"]) for g in sd["param_groups"]]
        groups = [len(g["params"]) for g in optimizer.param_groups]
        if saved_groups != groups:
            raise CheckpointError(
                f"{file}: optimizer has parameter groups of sizes {saved_groups}, the model needs {groups}"
            )
        for pid, per_param in sd["state"].items():
            if not 0 <= pid < len(params):
                raise CheckpointError(f"{file}: state for parameter #{pid}, but the model has {len(params)}")
            for name, value in per_param.items():
                if isinstance(value, Tensor) and value.ndim and value.shape != params[pid].shape:
                    raise CheckpointError(
                        f"{file}: optimizer state {name!r} of parameter #{pid} has shape "
                        f"{tuple(value.shape)}, the parameter has {tuple(params[pid].shape)}"
                    )
        try:
            optimizer.load_state_dict(sd)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{file}: optimizer state does not match: {exc}") from None


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a checkpoint folder, validating ``state.json`` and reading ``config.yaml``."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {p}")
    state_file = p / "state.json"
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {state_file}") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint file {state_file}: {exc}") from None
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED_STATE):
        raise CheckpointError(
            f"{state_file}: not an extradim checkpoint state (needs keys {_REQUIRED_STATE})"
        )
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{state_file}: format {state['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise CheckpointError(f"{state_file}: invalid step {state['step']!r}")
    config_file = p / "config.yaml"
    try:
        config_yaml = config_file.read_text()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {config_file}") from None
    return Checkpoint(p, state, config_yaml)
