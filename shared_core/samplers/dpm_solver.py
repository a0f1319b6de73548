"""DPM-Solver++ multistep samplers (Lu et al. 2022), in VE coordinates with lambda = -log sigma."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from shared_core.denoiser import Denoiser
from shared_core.samplers._common import Callback, Generators, check_inputs, denoise, noise_like, report


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    lower_order_final: bool = True,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2, data prediction, multistep).

    x_next = (sigma_next / sigma) x - expm1(-h) D, with h = lambda_next - lambda and
    D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1} / h (first order at the first step).
    A last step to sigma = 0 is first order (h is infinite there: it returns x0). With
    ``lower_order_final`` the last step is also first order on grids shorter than 15 steps, which
    stabilises few-step sampling (diffusers' default, which we follow).
    """
    grid = check_inputs(x, sigmas)
    n = len(grid) - 1
    old_x0: Tensor | None = None
    h_last = 0.0
    for i in range(n):
        s, s_next = grid[i], grid[i + 1]
        x0 = denoise(denoiser, x, s, extra_args)
        if s_next == 0:
            x = x0
        else:
            h = math.log(s / s_next)
            first = old_x0 is None or (lower_order_final and i == n - 1 and n < 15)
            if first or old_x0 is None:
                d = x0
            else:
                r = h_last / h
                d = torch.lerp(x0, old_x0, -1 / (2 * r))  # (1 + 1/2r) x0 - 1/2r x0_prev
            x = (x * (s_next / s)).add_(d, alpha=-math.expm1(-h))
            h_last = h
        old_x0 = x0
        report(callback, i, x, s, s_next, x0)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, sec. 5 / appendix; midpoint form as in diffusers and
    k-diffusion). Each step solves the linear part of the reverse SDE exactly:
    x_next = (sigma_next / sigma) e^{-eta h} x + (1 - e^{-(1+eta) h}) D + sigma_next sqrt(1 - e^{-2 eta h}) z,
    with the second-order correction 0.5 (1 - e^{-(1+eta) h}) (x0_i - x0_{i-1}) / r."""
    grid = check_inputs(x, sigmas)
    old_x0: Tensor | None = None
    h_last = 0.0
    for i in range(len(grid) - 1):
        s, s_next = grid[i], grid[i + 1]
        x0 = denoise(denoiser, x, s, extra_args)
        if s_next == 0:
            x = x0
        else:
            h = math.log(s / s_next)
            eta_h = eta * h
            x = (x * (s_next / s * math.exp(-eta_h))).add_(x0, alpha=-math.expm1(-h - eta_h))
            if old_x0 is not None:
                r = h_last / h
                x = x.add_(x0 - old_x0, alpha=-0.5 * math.expm1(-h - eta_h) / r)
            if eta > 0:
                std = s_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
                x = x.add_(noise_like(x, generator), alpha=std)
            h_last = h
        old_x0 = x0
        report(callback, i, x, s, s_next, x0)
    return x
