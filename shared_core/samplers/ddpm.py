"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with fixed or learned variances."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from shared_core.denoiser import Denoiser
from shared_core.samplers._common import Callback, Generators, check_inputs, noise_like, report, sigma_batch

VARIANCES = ("fixed_small", "fixed_large", "learned_range", "learned")


@torch.no_grad()
def sample_ddpm(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    variance: str = "fixed_small",
    variance_preserving: bool = True,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """DDPM: x_s ~ q(x_s | x_t, x0_hat) at every step (Ho et al. 2020, Algorithm 2; eq. 6-7).

    In VE coordinates the forward chain is x_t = x_s + sqrt(sigma_t^2 - sigma_s^2) z for VP and VE
    processes alike, so the posterior is N(x0 + sigma_s^2 / sigma_t^2 (x_t - x0), var) with
      fixed_small:   var = sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2  (beta-tilde, Ho et al.),
      fixed_large:   var = beta_t / alpha_s^2 = (sigma_t^2 - sigma_s^2)(1 + sigma_s^2)/(1 + sigma_t^2)
                     for VP (sigma_t^2 - sigma_s^2 for VE),
      learned_range: log var = f log(large) + (1 - f) log(small), f = (v + 1) / 2, with the
                     denoiser returning (x0, v) (Nichol & Dhariwal 2021, eq. 15),
      learned:       the denoiser returns (x0, log of the native variance).
    The last step to sigma = 0 returns x0 without noise.

    Args:
        denoiser: the model; must return (x0, v) for the learned variances.
        x: x_T in VE coordinates (B, ...).
        sigmas: descending VE levels (n + 1,), e.g. ``schedule.sigmas(n)``.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; valid: {', '.join(VARIANCES)}")
    grid = check_inputs(x, sigmas)
    learned = variance.startswith("learned")
    for i in range(len(grid) - 1):
        s, s_next = grid[i], grid[i + 1]
        out = denoiser(x, sigma_batch(x, s), **(extra_args or {}))
        if learned != isinstance(out, tuple):
            raise ValueError(
                f"variance={variance!r} needs a denoiser that returns (x0, v) exactly when learned"
            )
        x0, v = out if learned else (out, None)
        if x0.shape != x.shape:
            raise ValueError(f"denoiser returned shape {tuple(x0.shape)} for input {tuple(x.shape)}")
        if s_next == 0:
            x = x0
        else:
            mean = torch.lerp(x0, x, s_next**2 / s**2)
            small = s_next**2 * (s**2 - s_next**2) / s**2
            large = (s**2 - s_next**2) * ((1 + s_next**2) / (1 + s**2) if variance_preserving else 1.0)
            noise = noise_like(x, generator)
            if variance == "fixed_small":
                x = mean.add_(noise, alpha=math.sqrt(small))
            elif variance == "fixed_large":
                x = mean.add_(noise, alpha=math.sqrt(large))
            elif variance == "learned_range":
                assert v is not None
                frac = (v + 1) / 2
                x = mean + torch.exp(0.5 * (frac * math.log(large) + (1 - frac) * math.log(small))) * noise
            else:
                assert v is not None
                inv_alpha_s = math.sqrt(1 + s_next**2) if variance_preserving else 1.0
                x = mean + torch.exp(0.5 * v) * inv_alpha_s * noise
        report(callback, i, x, s, s_next, x0)
    return x
