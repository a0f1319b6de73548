"""Euler and Heun samplers of Karras et al. 2022 (EDM), with optional stochastic churn."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from shared_core.denoiser import Denoiser
from shared_core.samplers._common import Callback, Generators, check_inputs, denoise, noise_like, report


def _churn(
    x: Tensor, s: float, n: int, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float, generator
) -> tuple[Tensor, float]:
    """EDM Algorithm 2, lines 5-6: raise the noise level to s_hat = s (1 + gamma) by adding noise."""
    gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= s <= s_tmax else 0.0
    if gamma == 0:
        return x, s
    s_hat = s * (1 + gamma)
    return x + math.sqrt(s_hat**2 - s**2) * s_noise * noise_like(x, generator), s_hat


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """Euler on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without the Heun
    correction); ``s_churn`` > 0 adds EDM's stochastic churn."""
    grid = check_inputs(x, sigmas)
    n = len(grid) - 1
    for i in range(n):
        x, s = _churn(x, grid[i], n, s_churn, s_tmin, s_tmax, s_noise, generator)
        x0 = denoise(denoiser, x, s, extra_args)
        x = torch.lerp(x0, x, grid[i + 1] / s)  # = x + (x - x0) / s * (s_next - s)
        report(callback, i, x, s, grid[i + 1], x0)
    return x


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 2): an Euler step, then the average of
    the slopes at both ends; the last step to sigma = 0 stays Euler (line 9)."""
    grid = check_inputs(x, sigmas)
    n = len(grid) - 1
    for i in range(n):
        x, s = _churn(x, grid[i], n, s_churn, s_tmin, s_tmax, s_noise, generator)
        s_next = grid[i + 1]
        x0 = denoise(denoiser, x, s, extra_args)
        x_euler = torch.lerp(x0, x, s_next / s)  # x + d dt, d = (x - x0) / s
        if s_next == 0:
            x = x_euler
        else:
            # x + (d + d') dt / 2 with d' = (x_euler - x0') / s_next, rearranged as
            # (x + x_euler + c (x_euler - x0')) / 2, c = dt / s_next: three fused tensor ops
            x0_next = denoise(denoiser, x_euler, s_next, extra_args)
            c = 0.5 * (s_next - s) / s_next
            x = (x_euler * (0.5 + c)).add_(x, alpha=0.5).add_(x0_next, alpha=-c)
        report(callback, i, x, s, s_next, x0)
    return x
