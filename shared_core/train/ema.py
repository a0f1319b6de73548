"""Exponential moving average of a model's weights, with a warmup of the decay.

The EMA model is a full copy of the network in eval mode, so sampling code uses it like any
model. Early in training the long-memory average would mostly remember the random init, so the
decay ramps up as d_n = min(decay, (1 + n) / (10 + n)) after n updates (the warmup of TensorFlow's
``ExponentialMovingAverage(num_updates=...)``, used by the DDPM and latent-diffusion codebases).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA", "ema_decay"]


def ema_decay(num_updates: int, decay: float, warmup: bool = True) -> float:
    """The decay of update number ``num_updates`` (0-based): min(decay, (1 + n) / (10 + n))."""
    if not warmup:
        return decay
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates))


class EMA:
    """An EMA copy of ``model``: ema <- d ema + (1 - d) param, buffers copied.

    Args:
        model: the trained network (not a DDP wrapper); its current weights seed the average.
        decay: the asymptotic decay, e.g. 0.999.
        warmup: ramp the decay up as (1 + n) / (10 + n).
        start_step: before this training step the EMA just copies the weights.
        update_every: update every k optimizer steps (the decay is applied once per update).
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.999,
        warmup: bool = True,
        start_step: int = 0,
        update_every: int = 1,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.decay, self.warmup, self.start_step, self.update_every = decay, warmup, start_step, update_every
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the weights after optimizer step ``step`` (0-based)."""
        if step < self.start_step:
            self.copy_from(model)
            return
        if (step - self.start_step) % self.update_every:
            return
        d = ema_decay(self.num_updates, self.decay, self.warmup)
        ema_params: list[torch.Tensor] = list(self.module.parameters())
        params = [p.detach().to(e.dtype) for p, e in zip(model.parameters(), ema_params)]
        # lerp: e + (1 - d) (p - e), one fused op per tensor list.
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)
        self.num_updates += 1

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        for e, p in zip(self.module.state_dict().values(), model.state_dict().values()):
            e.copy_(p)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        self.module.load_state_dict(state)
        self.num_updates = num_updates
