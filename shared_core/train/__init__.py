"""The modality-agnostic training engine: ``Trainer`` (loop.py), EMA, checkpoints that never
unpickle, DDP helpers, and the modality registry behind ``extradim train``."""

from shared_core.train.checkpoint import Checkpoint, latest_checkpoint, list_checkpoints, load_checkpoint
from shared_core.train.distributed import (
    DistInfo,
    ShardedBatchSampler,
    derive_seed,
    gather_in_order,
    init_distributed,
    shard_indices,
)
from shared_core.train.ema import EMA
from shared_core.train.loop import (
    CheckpointConfig,
    DiffusionConfig,
    DiffusionObjective,
    EMAConfig,
    LogConfig,
    OptimConfig,
    RandomFlip,
    RunConfig,
    TrainConfig,
    Trainer,
    TrainingDiverged,
)
from shared_core.train.modality import Modality, available_modalities, build_trainer, get_modality

__all__ = [
    "EMA",
    "Checkpoint",
    "CheckpointConfig",
    "DiffusionConfig",
    "DiffusionObjective",
    "DistInfo",
    "EMAConfig",
    "LogConfig",
    "Modality",
    "OptimConfig",
    "RandomFlip",
    "RunConfig",
    "ShardedBatchSampler",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "available_modalities",
    "build_trainer",
    "derive_seed",
    "gather_in_order",
    "get_modality",
    "init_distributed",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "shard_indices",
]
