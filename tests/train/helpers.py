"""Small, fast stand-ins for the engine tests: a Gaussian dataset and an MLP noise predictor."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from shared_core.config import from_dict
from shared_core.random import make_generator, randn
from shared_core.schedules import get_schedule
from shared_core.train.distributed import derive_seed
from shared_core.train.loop import DiffusionObjective, RunConfig, Trainer, seed_everything

DIM = 8


class GaussDataset:
    """Item i: x ~ N(1, 0.5^2) in DIM dims and a label in {0, 1}, a pure function of (seed, i)."""

    def __init__(self, size: int | None = 64, seed: int = 0) -> None:
        self.size, self.seed = size, seed

    def __len__(self) -> int:
        if self.size is None:
            raise TypeError("endless")
        return self.size

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        g = make_generator(derive_seed(self.seed, i))
        return {"x": 1.0 + 0.5 * randn((DIM,), g), "y": torch.tensor(i % 2)}


class MLP(nn.Module):
    """eps(x_t, t, y): an MLP on [x_t, t / 100, onehot(y)] (class 2 is the null class)."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM + 1 + 3, hidden), nn.SiLU(), nn.Linear(hidden, DIM))

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        h = torch.cat([x, t[:, None] / 100, nn.functional.one_hot(y, 3).to(x)], dim=1)
        return self.net(h)


def mlp_config(**train: Any) -> RunConfig:
    base: dict[str, Any] = {
        "steps": 10,
        "batch_size": 8,
        "num_threads": 1,
        "log": {"progress": False, "every": 1},
        "checkpoint": {"every": 5, "keep_last": 0},
        "optim": {"lr": 1e-2, "warmup_steps": 2},
        "ema": {"decay": 0.9},
    }
    for k, v in train.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return from_dict(
        RunConfig, {"train": base, "diffusion": {"schedule": "linear", "schedule_args": {"num_steps": 100}}}
    )


def mlp_trainer(
    out_dir: Any,
    cfg: RunConfig | None = None,
    *,
    dataset: Any = None,
    modality: str = "mlp",
    objective: Any = None,
    augment: Any = None,
) -> Trainer:
    cfg = cfg or mlp_config()
    seed_everything(cfg.train.seed)
    model = MLP()
    if objective is None:
        objective = DiffusionObjective(
            get_schedule("linear", num_steps=100),
            cond_keys=("y",),
            null_cond={"y": torch.tensor(2)},
            cond_drop_prob=cfg.diffusion.cond_drop_prob,
        )
    return Trainer(
        cfg,
        model,
        dataset if dataset is not None else GaussDataset(),
        objective,
        out_dir,
        modality=modality,
        augment=augment,
    )
