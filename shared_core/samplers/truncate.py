"""Truncated sampling: start from an intermediate noise level (SDEdit) or stop early and return the
x0 estimate. Works with any sampler in the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from shared_core.denoiser import Denoiser
from shared_core.samplers._common import Generators, check_inputs, denoise, noise_like

Sampler = Callable[..., Tensor]


def sdedit(
    sampler: Sampler,
    denoiser: Denoiser,
    x_ref: Tensor,
    sigmas: Tensor,
    strength: float,
    *,
    generator: Generators = None,
    **kwargs: Any,
) -> Tensor:
    """SDEdit (Meng et al. 2022): noise ``x_ref`` to the level a fraction ``strength`` of the way up
    the grid (0: untouched, 1: pure noise) with q(x_t | x_0) = N(x_0, sigma_t^2) in VE coordinates,
    then run the remaining steps of ``sigmas`` with ``sampler``."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    grid = check_inputs(x_ref, sigmas)
    n = len(grid) - 1
    start = n - max(1, round(strength * n))
    sub = torch.tensor(grid[start:], dtype=torch.float64)
    x = x_ref + grid[start] * noise_like(x_ref, generator)
    return sampler(denoiser, x, sub, generator=generator, **kwargs)


def sample_until(
    sampler: Sampler,
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    stop_sigma: float,
    *,
    extra_args: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Run ``sampler`` over the part of ``sigmas`` at or above ``stop_sigma`` (> 0) and stop there.

    Returns:
        (x at the stop level in VE coordinates, the denoiser's x0 estimate from it).
    """
    grid = check_inputs(x, sigmas)
    if not stop_sigma > 0:
        raise ValueError(f"stop_sigma must be > 0, got {stop_sigma}")
    sub = [s for s in grid if s >= stop_sigma]
    if len(sub) >= 2:
        x = sampler(denoiser, x, torch.tensor(sub, dtype=torch.float64), extra_args=extra_args, **kwargs)
    level = sub[-1] if sub else grid[0]
    return x, denoise(denoiser, x, level, extra_args)
