"""The training loop: one ``Trainer`` for any modality (dataset + model + objective + config).

AdamW with linear warmup then cosine decay, gradient accumulation, gradient clipping, an EMA of
the weights, condition dropout for classifier-free guidance, per-sample augmentation hooks,
optional autocast (bf16/fp16 on a GPU), a guard that skips steps with non-finite loss or gradients,
atomic checkpoints with exact resume, JSONL metrics, and DDP under torchrun.

Determinism: every random draw of a training sample (augmentation, condition dropout, timestep,
noise) comes from its own generator seeded by ``derive_seed(seed, step, position)``, where
``position`` is the sample's place in the step's global batch. The data of a step is a pure
function of (seed, step) (``ShardedBatchSampler``). So the stream does not depend on how the
global batch is split into ranks or micro-batches, and a resumed run continues it exactly: on CPU
a run killed at any step and resumed gives bit-identical weights, and W processes with G / W
samples each match one process with G samples up to float summation order.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from shared_core.config import to_dict, to_yaml
from shared_core.diffusion import (
    PREDICTIONS,
    LogNormalTimesteps,
    LossAwareTimesteps,
    LossOutput,
    UniformTimesteps,
    diffusion_loss,
)
from shared_core.errors import CheckpointError, ConfigError, ExtradimError
from shared_core.io import atomic_path
from shared_core.random import make_generator, rand, randn
from shared_core.schedules import SCHEDULE_NAMES, Schedule, get_schedule
from shared_core.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    optimizer_state_to_tensors,
    rng_state_from_list,
    rng_state_to_list,
    save_checkpoint,
)
from shared_core.train.distributed import DistInfo, ShardedBatchSampler, all_gather_cat, barrier, derive_seed
from shared_core.train.ema import EMA

__all__ = [
    "Augment",
    "CheckpointConfig",
    "DiffusionConfig",
    "DiffusionObjective",
    "EMAConfig",
    "LogConfig",
    "Objective",
    "OptimConfig",
    "RandomFlip",
    "RunConfig",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "checkpoint_root",
    "collate",
    "configure_threads",
    "dataset_size",
    "lr_at",
    "seed_everything",
]

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (Loshchilov & Hutter 2019) with linear warmup, then cosine decay to ``min_lr``."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr: float = 0.0
    grad_clip: float | None = 1.0  # max global grad norm; null disables clipping

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")


@dataclass(frozen=True)
class EMAConfig:
    decay: float = 0.999
    warmup: bool = True  # decay min(decay, (1 + n) / (10 + n)) after n updates
    start_step: int = 0
    update_every: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0 or self.update_every < 1 or self.start_step < 0:
            raise ValueError("need 0 <= decay < 1, update_every >= 1 and start_step >= 0")


@dataclass(frozen=True)
class LogConfig:
    every: int = 10  # steps between metrics.jsonl records
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool = False  # also write TensorBoard scalars to <run>/tensorboard

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 1000  # steps between checkpoints (one is always written at the end)
    keep_last: int = 3  # 0 keeps all

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep_last < 0:
            raise ValueError(f"need every >= 1 and keep_last >= 0, got {self.every}, {self.keep_last}")


@dataclass(frozen=True)
class TrainConfig:
    """The engine's settings; ``batch_size`` is the global batch of one optimizer step.

    Each rank processes batch_size / world_size samples per step, in ``grad_accum`` micro-batches.
    """

    seed: int = 0
    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # "auto": bf16 autocast on a GPU that supports it, fp32 on CPU (where bf16 measured ~5x slower).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    num_threads: int = 0  # torch CPU threads; 0 = cores / local ranks (EXTRADIM_NUM_THREADS wins)
    max_nonfinite_steps: int = 5  # stop after this many consecutive skipped (NaN/Inf) steps
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Weights a fresh run starts from (a shipped .safetensors or a checkpoint folder; ignored on
    # resume): tensors copied by name, the model's others keep their init (e.g. appended blocks).
    init_from: str = ""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("steps must be >= 0, batch_size and grad_accum >= 1")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")


# ``DiffusionConfig.timesteps`` -> its timestep sampler (constructed as ``cls(schedule, **timesteps_args)``).
TIMESTEP_SAMPLERS: dict[str, type[UniformTimesteps | LogNormalTimesteps | LossAwareTimesteps]] = {
    "uniform": UniformTimesteps,
    "lognormal": LogNormalTimesteps,
    "loss_aware": LossAwareTimesteps,
}


def _check_timesteps(timesteps: str, timesteps_args: Mapping[str, Any]) -> None:
    """ValueError unless ``timesteps`` names a sampler that takes ``timesteps_args`` as keywords."""
    if timesteps not in TIMESTEP_SAMPLERS:
        raise ValueError(f"unknown timesteps {timesteps!r}; valid: {', '.join(TIMESTEP_SAMPLERS)}")
    try:
        inspect.signature(TIMESTEP_SAMPLERS[timesteps]).bind(None, **timesteps_args)
    except TypeError as exc:
        raise ValueError(f"timesteps {timesteps!r} / timesteps_args: {exc}") from None


@dataclass(frozen=True)
class DiffusionConfig:
    """The denoising objective (``shared_core.diffusion``)."""

    schedule: str = "cosine"  # a ``get_schedule`` name
    schedule_args: dict[str, float | int | bool | str] = field(default_factory=dict)
    prediction: Literal["eps", "x0", "v"] = "eps"
    weighting: Literal["uniform", "snr", "min_snr"] = "uniform"
    min_snr_gamma: float = 5.0
    timesteps: Literal["uniform", "lognormal", "loss_aware"] = "uniform"
    # Keyword arguments of the timestep sampler, e.g. {p_mean: -2.5, p_std: 1.0} for "lognormal"
    # (EDM's -1.2 / 1.2 by default; a refiner trained for low noise levels only wants a lower mean).
    timesteps_args: dict[str, float | int] = field(default_factory=dict)
    cond_drop_prob: float = 0.1  # replace the condition by the null one (CFG training, Ho & Salimans)
    # p > 0: self-conditioning (Chen et al. 2022): the network also takes ``self_cond=``, an x0
    # estimate; in training a share p of samples sees the estimate of a first pass without gradient,
    # the rest zeros (the paper's p = 0.5). Only for modalities whose model takes it (points).
    self_condition: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1], got {self.cond_drop_prob}")
        if not 0.0 <= self.self_condition <= 1.0:
            raise ValueError(f"self_condition must be in [0, 1], got {self.self_condition}")
        _check_timesteps(self.timesteps, self.timesteps_args)


@dataclass(frozen=True)
class RunConfig:
    """Base of every modality's config: the engine's sections. Modalities add theirs (data, model)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine or constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------------------------
# Data: datasets, augmentation hooks, collation
# ----------------------------------------------------------------------------------------------


class Dataset(Protocol):
    """Map-style: ``dataset[i] -> {"x": Tensor, ...}``, a pure function of i (and the dataset's
    seed). ``len()`` gives the size; a procedural stream without end raises TypeError there."""

    def __getitem__(self, index: int) -> dict[str, Tensor]: ...


Augment = Callable[[dict[str, Tensor], torch.Generator], dict[str, Tensor]]


@dataclass(frozen=True)
class RandomFlip:
    """Flip each sample's tensors under ``keys`` along each of ``dims`` with probability ``p``.

    ``dims`` index a single sample (no batch axis): -1 is the width of a (C, H, W) image.
    """

    dims: tuple[int, ...] = (-1,)
    p: float = 0.5
    keys: tuple[str, ...] = ("x",)

    def __call__(self, sample: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        flip = [d for d in self.dims if float(rand((), generator)) < self.p]
        if not flip:
            return sample
        return {k: v.flip(flip) if k in self.keys else v for k, v in sample.items()}


def dataset_size(dataset: Any) -> int | None:
    """len(dataset), or None for an endless stream."""
    try:
        return len(dataset)
    except TypeError:
        return None


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
    """Stack a list of per-sample dicts into a batch dict (numbers become tensors)."""
    keys = samples[0].keys()
    out = {}
    for k in keys:
        values = [s[k] for s in samples]
        out[k] = torch.stack([torch.as_tensor(v) for v in values])
    return out


# ----------------------------------------------------------------------------------------------
# Objective
# ----------------------------------------------------------------------------------------------


class Objective(Protocol):
    """``objective(net, batch, generators) -> LossOutput`` with a per-sample loss (B,).

    ``generators[i]`` is sample i's own generator; every random draw for sample i must come from it.
    Optional: ``observe(t, mse)``, called after each step with the whole global batch (gathered
    over ranks) when the attribute ``observes`` is true, and ``state_dict() / load_state_dict()``
    of tensors saved with the checkpoint.
    """

    def __call__(
        self, net: Callable[..., Tensor], batch: dict[str, Tensor], generators: Sequence[torch.Generator]
    ) -> LossOutput: ...


class DiffusionObjective:
    """The core's ``diffusion_loss`` with per-sample randomness and condition dropout.

    For each sample, in this order: with probability ``cond_drop_prob`` its condition tensors are
    replaced by ``null_cond`` (training the unconditional model used by classifier-free guidance,
    Ho & Salimans 2022), then its timestep and its noise are drawn from its generator.

    Args:
        schedule: the noise schedule.
        prediction: "eps", "x0" or "v".
        weighting: "uniform", "snr" or "min_snr".
        timesteps: "uniform", "lognormal" (EDM) or "loss_aware" (importance sampling).
        timesteps_args: keyword arguments of that timestep sampler (e.g. ``p_mean``, ``p_std``).
        input_key: batch key of the clean data x0 (B, ...).
        cond_keys: batch keys passed to the network as keyword conditions.
        null_cond: per-sample null value of each condition that dropout may replace (e.g. the
            null class index as a 0-d tensor); conditions not listed are never dropped.
        cond_drop_prob: dropout probability.
        self_condition: probability that a sample sees its own first-pass x0 estimate
            (``diffusion_loss``'s ``self_cond_mask``, drawn per sample after the noise); 0 = the
            network takes no ``self_cond``.
        perturbation_key: batch key of an input perturbation the data gives per sample
            (``diffusion_loss``'s ``perturbation``), used when the batch has it.
    """

    def __init__(
        self,
        schedule: Schedule,
        *,
        prediction: str = "eps",
        weighting: str = "uniform",
        min_snr_gamma: float = 5.0,
        timesteps: str = "uniform",
        timesteps_args: Mapping[str, float | int] | None = None,
        input_key: str = "x",
        cond_keys: Sequence[str] = (),
        null_cond: Mapping[str, Tensor] | None = None,
        cond_drop_prob: float = 0.0,
        self_condition: float = 0.0,
        perturbation_key: str = "perturbation",
    ) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
        _check_timesteps(timesteps, timesteps_args or {})
        self.schedule, self.prediction, self.weighting, self.min_snr_gamma = (
            schedule,
            prediction,
            weighting,
            min_snr_gamma,
        )
        args: dict[str, Any] = dict(timesteps_args or {})  # checked above against the signature
        self.t_sampler = TIMESTEP_SAMPLERS[timesteps](schedule, **args)
        # Only loss-aware sampling learns from the losses; skip the per-step gather otherwise.
        self.observes = isinstance(self.t_sampler, LossAwareTimesteps)
        self.input_key, self.cond_keys = input_key, tuple(cond_keys)
        self.null_cond = {k: torch.as_tensor(v) for k, v in (null_cond or {}).items()}
        unknown = set(self.null_cond) - set(self.cond_keys)
        if unknown:
            raise ValueError(f"null_cond keys {sorted(unknown)} are not condition keys {self.cond_keys}")
        self.cond_drop_prob = cond_drop_prob if self.null_cond else 0.0
        if not 0.0 <= self_condition <= 1.0:
            raise ValueError(f"self_condition must be in [0, 1], got {self_condition}")
        self.self_condition = self_condition
        self.perturbation_key = perturbation_key

    @classmethod
    def from_config(
        cls,
        cfg: DiffusionConfig,
        *,
        input_key: str = "x",
        cond_keys: Sequence[str] = (),
        null_cond: Mapping[str, Tensor] | None = None,
        self_conditioning: bool = False,
    ) -> DiffusionObjective:
        """``self_conditioning``: whether the modality's network takes ``self_cond=``; without it a
        config asking for ``diffusion.self_condition > 0`` is a ``ConfigError``."""
        if cfg.self_condition > 0 and not self_conditioning:
            raise ConfigError(
                f"diffusion.self_condition={cfg.self_condition}: this model does not take a "
                "self-conditioning input (set it to 0)"
            )
        return cls(
            build_schedule(cfg),
            prediction=cfg.prediction,
            weighting=cfg.weighting,
            min_snr_gamma=cfg.min_snr_gamma,
            timesteps=cfg.timesteps,
            timesteps_args=cfg.timesteps_args,
            input_key=input_key,
            cond_keys=cond_keys,
            null_cond=null_cond,
            cond_drop_prob=cfg.cond_drop_prob,
            self_condition=cfg.self_condition,
        )

    def __call__(
        self, net: Callable[..., Tensor], batch: dict[str, Tensor], generators: Sequence[torch.Generator]
    ) -> LossOutput:
        x0 = batch[self.input_key]  # (B, ...)
        if len(generators) != x0.shape[0]:
            raise ValueError(f"{len(generators)} generators for a batch of {x0.shape[0]}")
        cond: dict[str, Any] = {k: batch[k] for k in self.cond_keys}
        if self.cond_drop_prob > 0:
            u = torch.stack([rand((), g, dtype=torch.float64) for g in generators])  # (B,)
            drop = (u < self.cond_drop_prob).to(x0.device)
            for k, null in self.null_cond.items():
                c = cond[k]
                mask = drop.reshape(-1, *([1] * (c.ndim - 1)))
                cond[k] = torch.where(mask, null.to(device=c.device, dtype=c.dtype).expand_as(c), c)
        draws = [self.t_sampler.sample(1, g) for g in generators]
        t = torch.cat([d[0] for d in draws])  # (B,) float64
        w = torch.cat([d[1] for d in draws])  # (B,) importance weights
        noise = torch.stack([randn(tuple(x0.shape[1:]), g) for g in generators]).to(x0.device, x0.dtype)
        self_cond_mask = None
        if self.self_condition > 0:
            u = torch.stack([rand((), g, dtype=torch.float64) for g in generators])
            self_cond_mask = (u < self.self_condition).to(x0.device)
        out = diffusion_loss(
            net,
            x0,
            self.schedule,
            prediction=self.prediction,
            weighting=self.weighting,
            min_snr_gamma=self.min_snr_gamma,
            t=t,
            noise=noise,
            self_cond_mask=self_cond_mask,
            perturbation=batch.get(self.perturbation_key),
            **cond,
        )
        return LossOutput(out.loss * w.to(out.loss), out.mse, t)

    def observe(self, t: Tensor, mse: Tensor) -> None:
        if isinstance(self.t_sampler, LossAwareTimesteps):
            self.t_sampler.update(t, mse)

    def state_dict(self) -> dict[str, Tensor]:
        if isinstance(self.t_sampler, LossAwareTimesteps):
            return self.t_sampler.state_dict()
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if isinstance(self.t_sampler, LossAwareTimesteps):
            self.t_sampler.load_state_dict(state)


def build_schedule(cfg: DiffusionConfig) -> Schedule:
    """The schedule a ``DiffusionConfig`` names; bad arguments are a ``ConfigError``."""
    try:
        return get_schedule(cfg.schedule, **cfg.schedule_args)
    except (TypeError, ValueError) as exc:
        valid = ", ".join(SCHEDULE_NAMES)
        raise ConfigError(
            f"diffusion.schedule {cfg.schedule!r} / schedule_args: {exc} (schedules: {valid})"
        ) from None


# ----------------------------------------------------------------------------------------------
# Process setup
# ----------------------------------------------------------------------------------------------


class TrainingDiverged(ExtradimError):
    """Too many consecutive steps had a non-finite loss or gradient."""


def seed_everything(seed: int) -> None:
    """Seed the global RNGs (model initialisation and anything outside the per-sample generators)."""
    random.seed(seed)
    torch.manual_seed(seed)


def configure_threads(num_threads: int = 0, local_world_size: int = 1) -> int:
    """Set torch's CPU thread count and return it.

    Precedence: $EXTRADIM_NUM_THREADS, then ``num_threads`` > 0, then an explicit $OMP_NUM_THREADS
    (torchrun sets 1 per process), else the cores divided among the local ranks, so ranks on one
    machine do not oversubscribe it.
    """
    env = os.environ.get("EXTRADIM_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ConfigError(f"EXTRADIM_NUM_THREADS={env!r} is not an integer") from None
    elif num_threads > 0:
        n = num_threads
    elif os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    else:
        n = max(1, (os.cpu_count() or 1) // max(1, local_world_size))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def _resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if name == "fp32":
        return None
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision fp16 needs a GPU; use fp32 (or bf16) on CPU")
    return torch.bfloat16 if name == "bf16" else torch.float16


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------


@dataclass
class StepStats:
    loss: float
    grad_norm: float
    lr: float
    skipped: bool


def checkpoint_root(out_dir: str | os.PathLike[str]) -> Path:
    """The folder of a run directory's checkpoints (``<out_dir>/checkpoints``)."""
    return Path(out_dir) / "checkpoints"


class Trainer:
    """Trains ``model`` on ``dataset`` with ``objective`` as ``cfg.train`` says, in ``out_dir``.

    Run directory: ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON record
    every ``log.every`` steps), ``checkpoints/step_XXXXXXXX/`` and optionally ``tensorboard/``.
    Only rank 0 writes.

    Args:
        cfg: the run config (``RunConfig`` or a modality's subclass); ``cfg.train`` drives the loop.
        model: the network, initialised identically on every rank (seed before building it).
        dataset: ``dataset[i] -> dict of tensors``; ``len()`` or an endless stream.
        objective: ``objective(net, batch, generators) -> LossOutput`` (e.g. ``DiffusionObjective``).
        out_dir: the run directory.
        augment: optional per-sample hook ``augment(sample, generator) -> sample``.
        modality: name recorded in checkpoints (resuming another modality's run is an error).
        dist_info: this process's place in the process group (``init_distributed()``).
    """

    def __init__(
        self,
        cfg: RunConfig,
        model: nn.Module,
        dataset: Dataset,
        objective: Objective,
        out_dir: str | os.PathLike[str],
        *,
        augment: Augment | None = None,
        modality: str = "custom",
        dist_info: DistInfo | None = None,
    ) -> None:
        self.cfg, self.tc = cfg, cfg.train
        self.dist = dist_info or DistInfo()
        self.out_dir = Path(out_dir)
        self.modality = modality
        self.num_threads = configure_threads(self.tc.num_threads, self.dist.local_world_size)
        self.device = _resolve_device(self.tc.device, self.dist)
        self.amp_dtype = _resolve_precision(self.tc.precision, self.device)
        per_rank, rem = divmod(self.tc.batch_size, self.dist.world_size * self.tc.grad_accum)
        if rem or per_rank < 1:
            raise ConfigError(
                f"train.batch_size {self.tc.batch_size} must be a multiple of world size "
                f"{self.dist.world_size} x train.grad_accum {self.tc.grad_accum}"
            )

        self.model = model.to(self.device)
        self.ema = EMA(
            self.model,
            self.tc.ema.decay,
            self.tc.ema.warmup,
            self.tc.ema.start_step,
            self.tc.ema.update_every,
        )
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        o = self.tc.optim
        self.optimizer = torch.optim.AdamW(
            self.params, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, foreach=True
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.net: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)

        self.dataset, self.objective, self.augment = dataset, objective, augment
        self.sampler = ShardedBatchSampler(
            dataset_size(dataset), self.tc.batch_size, seed=derive_seed(self.tc.seed, 1)
        )
        self.step = 0
        self.nonfinite_total = 0
        self.nonfinite_consecutive = 0
        self._tb: Any = None

    # --------------------------------------------------------------------------- one step

    def _sample_generators(self, positions: Sequence[int]) -> list[torch.Generator]:
        # Seeded by (seed, step, position in the global batch): the whole per-sample stream is
        # stateless, so resuming needs no generator state and sharding cannot change it.
        return [make_generator(derive_seed(self.tc.seed, 3, self.step, p)) for p in positions]

    def _make_batch(self, indices: Sequence[int], generators: Sequence[torch.Generator]) -> dict[str, Tensor]:
        samples = []
        for i, g in zip(indices, generators):
            s = self.dataset[i]
            samples.append(self.augment(s, g) if self.augment is not None else s)
        return {k: v.to(self.device, non_blocking=True) for k, v in collate(samples).items()}

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self) -> StepStats:
        """One optimizer step over the global batch of ``self.step``; advances ``self.step``."""
        tc = self.tc
        lr = lr_at(self.step, tc.optim, tc.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        indices, positions = self.sampler.shard(self.step, self.dist.rank, self.dist.world_size)
        n_local, accum = len(indices), tc.grad_accum
        micro = n_local // accum
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        ts, mses = [], []
        for k in range(accum):
            part = slice(k * micro, (k + 1) * micro)
            gens = self._sample_generators(positions[part])
            batch = self._make_batch(indices[part], gens)
            # DDP all-reduces gradients only on the last micro-batch of the step.
            sync = k == accum - 1 or not isinstance(self.net, DistributedDataParallel)
            with contextlib.nullcontext() if sync else self.net.no_sync(), self._autocast():  # type: ignore[operator]
                out = self.objective(self.net, batch, gens)
                # Sum / local batch: the micro-batches add up to this rank's mean, and DDP's average
                # over ranks makes it the mean over the global batch, whatever the split.
                loss = out.loss.float().sum() / n_local
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_sum += loss.detach().double()
            ts.append(out.t.detach().to(self.device, torch.float64))
            mses.append(out.mse.detach().to(self.device, torch.float64))

        if self.dist.enabled:
            dist.all_reduce(loss_sum)
            loss_sum /= self.dist.world_size
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = tc.optim.grad_clip if tc.optim.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        loss_value, norm_value = float(loss_sum), float(grad_norm)
        # Gradients are all-reduced, so every rank reaches the same verdict.
        finite = math.isfinite(loss_value) and (math.isfinite(norm_value) or self.scaler is not None)
        if finite:
            stepped = True
            if self.scaler is not None:  # the scaler itself skips steps whose fp16 gradients overflowed
                scale = self.scaler.get_scale()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                stepped = self.scaler.get_scale() >= scale  # it lowers the scale when it skips
            else:
                self.optimizer.step()
            if stepped:
                self.ema.update(self.model, self.step)
            self.nonfinite_consecutive = 0
        else:
            if self.scaler is not None:
                self.scaler.update()
            self.nonfinite_total += 1
            self.nonfinite_consecutive += 1
        self.optimizer.zero_grad(set_to_none=True)
        if getattr(self.objective, "observes", False):
            self.objective.observe(  # type: ignore[attr-defined]
                all_gather_cat(torch.cat(ts)).cpu(), all_gather_cat(torch.cat(mses)).cpu()
            )
        self.step += 1
        if self.nonfinite_consecutive > tc.max_nonfinite_steps:
            raise TrainingDiverged(
                f"{self.nonfinite_consecutive} consecutive steps (up to step {self.step}) had a non-finite "
                f"loss or gradient norm; stopping (train.max_nonfinite_steps={tc.max_nonfinite_steps}). "
                "Try a lower train.optim.lr or tighter train.optim.grad_clip."
            )
        return StepStats(loss_value, norm_value, lr, not finite)

    # --------------------------------------------------------------------------- checkpoints

    @property
    def checkpoint_root(self) -> Path:
        return checkpoint_root(self.out_dir)

    def _state(self) -> dict[str, Any]:
        _, optim_meta = optimizer_state_to_tensors(self.optimizer.state_dict())
        rng: dict[str, Any] = {
            "torch": rng_state_to_list(torch.get_rng_state()),
            "python": _python_rng_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = [rng_state_to_list(s) for s in torch.cuda.get_rng_state_all()]
        state = {
            "modality": self.modality,
            "samples_seen": self.step * self.tc.batch_size,
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_consecutive": self.nonfinite_consecutive,
            "ema_num_updates": self.ema.num_updates,
            "optimizer": optim_meta,
            "rng": rng,
            "world_size": self.dist.world_size,
        }
        if self.scaler is not None:
            state["grad_scaler"] = {
                k: v for k, v in self.scaler.state_dict().items() if not isinstance(v, Tensor)
            }
        return state

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 only); returns its folder there."""
        path = None
        if self.dist.is_main:
            optim_tensors, _ = optimizer_state_to_tensors(self.optimizer.state_dict())
            extra = getattr(self.objective, "state_dict", None)
            objective_tensors = extra() if extra is not None else {}
            path = save_checkpoint(
                self.checkpoint_root,
                self.step,
                tensors={
                    "model": self.model.state_dict(),
                    "ema": self.ema.state_dict(),
                    "optimizer": {
                        **optim_tensors,
                        **{f"objective.{k}": v for k, v in objective_tensors.items()},
                    },
                },
                config_yaml=to_yaml(self.cfg),
                state=self._state(),
                keep_last=self.tc.checkpoint.keep_last,
            )
        barrier()
        return path

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore model, EMA, optimizer, objective state, counters and RNG states."""
        ckpt = load_checkpoint(path)
        saved_modality = ckpt.state.get("modality")
        if saved_modality != self.modality:
            raise CheckpointError(
                f"{ckpt.path / 'state.json'}: checkpoint is for modality {saved_modality!r}, "
                f"not {self.modality!r}"
            )
        ckpt.load_module("model", self.model)
        ckpt.load_module("ema", self.ema.module)
        ckpt.load_optimizer(self.optimizer)
        load_extra = getattr(self.objective, "load_state_dict", None)
        objective_tensors = {
            k.removeprefix("objective."): v
            for k, v in ckpt.tensors("optimizer").items()
            if k.startswith("objective.")
        }
        if load_extra is not None and objective_tensors:
            load_extra(objective_tensors)
        s = ckpt.state
        state_file = ckpt.path / "state.json"
        try:
            self.step = ckpt.step
            self.nonfinite_total = int(s["nonfinite_total"])
            self.nonfinite_consecutive = int(s["nonfinite_consecutive"])
            self.ema.num_updates = int(s["ema_num_updates"])
            torch.set_rng_state(rng_state_from_list(s["rng"]["torch"]))
            _set_python_rng_state(s["rng"]["python"])
            if "cuda" in s["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([rng_state_from_list(v) for v in s["rng"]["cuda"]])
            if self.scaler is not None and "grad_scaler" in s:
                self.scaler.load_state_dict(s["grad_scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{state_file}: missing or invalid entry: {exc!r}") from None
        self._warn_config_changes(ckpt.config_yaml, ckpt.path / "config.yaml")

    def _warn_config_changes(self, saved_yaml: str, source: Path) -> None:
        import yaml

        old, new = _flatten(yaml.safe_load(saved_yaml) or {}), _flatten(to_dict(self.cfg))
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if changed and self.dist.is_main:
            print(
                f"extradim: note: resuming with config changes vs {source}: {', '.join(changed)}",
                file=sys.stderr,
            )

    # --------------------------------------------------------------------------- the loop

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"train/{k}", v, record["step"])

    def _truncate_metrics(self) -> None:
        """After a resume, drop records a killed run logged past the checkpoint (they get redone)."""
        path = self.out_dir / "metrics.jsonl"
        if not self.dist.is_main or not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the kill
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in keep))

    def _open_tensorboard(self) -> None:
        if not (self.tc.log.tensorboard and self.dist.is_main):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                f"train.log.tensorboard is true but TensorBoard is not installed ({exc}); "
                "pip install tensorboard"
            ) from None
        self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def fit(self, *, resume: bool = False, max_steps: int | None = None) -> dict[str, Any]:
        """Train until ``train.steps`` (or ``max_steps`` more steps); returns a summary dict.

        Args:
            resume: continue from the newest checkpoint in ``out_dir`` (start fresh if none).
            max_steps: stop after this many steps of this call (checkpointing there).

        Raises:
            ExtradimError: ``out_dir`` already holds checkpoints and ``resume`` is False.
            TrainingDiverged: too many consecutive non-finite steps.
        """
        latest = latest_checkpoint(self.checkpoint_root)
        if latest is not None and not resume:
            raise ExtradimError(
                f"{self.out_dir} already holds checkpoints (newest {latest.name}); pass --resume to continue "
                "that run or choose another --out"
            )
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        barrier()
        if resume and latest is not None:
            self.load_checkpoint(latest)
            self._truncate_metrics()
        if self.dist.is_main:
            with atomic_path(self.out_dir / "config.yaml") as tmp:
                tmp.write_text(to_yaml(self.cfg))
        self._open_tensorboard()
        tc = self.tc
        end = tc.steps if max_steps is None else min(tc.steps, self.step + max_steps)
        bar = None
        if tc.log.progress and self.dist.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=tc.steps,
                initial=self.step,
                desc=f"train {self.modality}",
                unit="step",
                dynamic_ncols=True,
            )
        t_start = time.perf_counter()
        t_log, step_log = t_start, self.step
        losses: list[float] = []
        last: StepStats | None = None
        try:
            while self.step < end:
                last = self.train_step()
                losses.append(last.loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last.loss:.4f}", lr=f"{last.lr:.2e}", refresh=False)
                if self.step % tc.log.every == 0 or self.step == end:
                    now = time.perf_counter()
                    finite = [v for v in losses if math.isfinite(v)]
                    rate = (self.step - step_log) / max(now - t_log, 1e-9)
                    self._log(
                        {
                            "step": self.step,
                            "loss": sum(finite) / len(finite) if finite else float("nan"),
                            "lr": last.lr,
                            "grad_norm": last.grad_norm,
                            "it_per_s": rate,
                            "samples_per_s": rate * tc.batch_size,
                            "nonfinite_skipped": self.nonfinite_total,
                            "elapsed_s": now - t_start,
                        }
                    )
                    t_log, step_log, losses = now, self.step, []
                if self.step % tc.checkpoint.every == 0 or self.step == end:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            if self._tb is not None:
                self._tb.close()
        return {
            "step": self.step,
            "loss": last.loss if last is not None else None,
            "nonfinite_skipped": self.nonfinite_total,
            "elapsed_s": time.perf_counter() - t_start,
            "checkpoint": str(latest_checkpoint(self.checkpoint_root)),
        }


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _python_rng_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_rng_state(state: list[Any]) -> None:
    version, internal, gauss = state
    random.setstate((version, tuple(internal), gauss))
