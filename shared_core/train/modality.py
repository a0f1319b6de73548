"""Modalities: what the engine needs to know about a kind of data, and a registry that fails loudly.

A modality bundles a typed config class (a ``RunConfig`` subclass adding e.g. ``data`` and
``model`` sections) with builders for the dataset, the model and the objective, optional
augmentation, and optional evaluation (e.g. sampling with the EMA weights). The engine never
imports a modality by itself: built-in ones are listed here, extensions register through the
``extradim.modalities`` entry-point group (``name = "package.module:OBJECT"``, an instance or a
class to instantiate). An unknown name lists the valid ones; an extension that fails to import
raises with its own error attached.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from shared_core.config import apply_overrides, from_dict, from_yaml
from shared_core.errors import ExtradimError
from shared_core.pretrained import load_state_partial
from shared_core.train.checkpoint import latest_checkpoint
from shared_core.train.distributed import DistInfo
from shared_core.train.loop import (
    Augment,
    Dataset,
    DiffusionObjective,
    Objective,
    RunConfig,
    Trainer,
    checkpoint_root,
    seed_everything,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Modality",
    "available_modalities",
    "build_trainer",
    "get_modality",
    "register_modality",
]

ENTRY_POINT_GROUP = "extradim.modalities"


class Modality:
    """Base class of a modality; subclass it and set ``name`` and ``config_cls``.

    Required: ``build_dataset``, ``build_model``. Defaults: the core diffusion objective on batch
    key ``"x"`` without conditions, no augmentation, no evaluation.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[RunConfig]] = RunConfig

    def load_config(self, path: str | os.PathLike[str] | None, overrides: Iterable[str] = ()) -> RunConfig:
        """The typed config from a YAML file (or the defaults) plus ``key=value`` overrides."""
        if path is None:
            return from_dict(self.config_cls, apply_overrides({}, overrides), source="overrides")
        return from_yaml(self.config_cls, path, overrides)

    def build_dataset(self, cfg: Any) -> Dataset:
        raise NotImplementedError

    def build_model(self, cfg: Any) -> nn.Module:
        raise NotImplementedError

    def build_model_to_resume(self, cfg: Any) -> nn.Module:
        """The model a checkpoint is about to overwrite (``--resume`` with a checkpoint present).

        Defaults to ``build_model``. Override it to skip work whose result the checkpoint holds
        anyway, e.g. a frozen first stage trained inside ``build_model``.
        """
        return self.build_model(cfg)

    def build_objective(self, cfg: Any, model: nn.Module) -> Objective:
        return DiffusionObjective.from_config(cfg.diffusion)

    def build_augment(self, cfg: Any) -> Augment | None:
        return None

    def evaluate(
        self, model: nn.Module, cfg: Any, *, out_dir: Path | None = None, dist_info: DistInfo | None = None
    ) -> dict[str, Any] | None:
        """Measure a trained (EMA) model; None when the modality has no evaluation."""
        return None


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def _toy2d() -> Modality:
    from shared_core.train.toy_modality import Toy2D

    return Toy2D()


_BUILTIN: dict[str, Callable[[], Modality]] = {"toy2d": _toy2d}
_REGISTERED: dict[str, Modality] = {}


def register_modality(modality: Modality) -> None:
    """Register an in-process modality (tests, notebooks); a taken name is an error."""
    if not modality.name:
        raise ValueError("a modality needs a non-empty name")
    if modality.name in _BUILTIN or modality.name in _REGISTERED:
        raise ValueError(f"modality {modality.name!r} is already registered")
    _REGISTERED[modality.name] = modality


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_modalities() -> list[str]:
    """Names of all modalities: built-in, registered and entry points (not imported)."""
    return sorted({*_BUILTIN, *_REGISTERED, *_entry_points()})


def get_modality(name: str) -> Modality:
    """The modality called ``name``.

    Raises:
        ExtradimError: unknown name (listing the valid ones), or an extension that fails to load
            or is not a ``Modality`` (with the original error chained).
    """
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        return _BUILTIN[name]()
    eps = _entry_points()
    if name not in eps:
        raise ExtradimError(f"unknown modality {name!r}; valid: {', '.join(available_modalities())}")
    ep = eps[name]
    try:
        obj = ep.load()
    except Exception as exc:  # report a broken extension with its cause, never skip it
        raise ExtradimError(f"modality {name!r} ({ep.value}) failed to load: {exc!r}") from exc
    modality = obj() if isinstance(obj, type) else obj
    if not isinstance(modality, Modality):
        raise ExtradimError(f"modality {name!r} ({ep.value}) is a {type(modality).__name__}, not a Modality")
    return modality


def build_trainer(
    modality: Modality,
    cfg: RunConfig,
    out_dir: str | os.PathLike[str],
    *,
    dist_info: DistInfo | None = None,
    resume: bool = False,
) -> Trainer:
    """Seed, build the modality's dataset, model, objective and augmentation, and wrap a ``Trainer``.

    With ``resume`` and a checkpoint in ``out_dir``, the model comes from ``build_model_to_resume``
    (its weights are about to be loaded from that checkpoint); otherwise ``train.init_from`` names
    weights it starts from (``load_state_partial``).
    """
    seed_everything(cfg.train.seed)
    resuming = resume and latest_checkpoint(checkpoint_root(out_dir)) is not None
    model = modality.build_model_to_resume(cfg) if resuming else modality.build_model(cfg)
    if not resuming and cfg.train.init_from:
        copied, kept = load_state_partial(model, cfg.train.init_from)
        if (dist_info or DistInfo()).is_main:
            print(f"[train] init from {cfg.train.init_from}: {copied} tensors copied, {kept} as initialised")
    dataset = modality.build_dataset(cfg)
    objective = modality.build_objective(cfg, model)
    augment = modality.build_augment(cfg)
    return Trainer(
        cfg, model, dataset, objective, out_dir, augment=augment, modality=modality.name, dist_info=dist_info
    )
