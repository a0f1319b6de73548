"""DDIM (Song, Meng & Ermon 2021) and its twin, Euler-ancestral (k-diffusion)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from shared_core.denoiser import Denoiser
from shared_core.samplers._common import (
    Callback,
    Generators,
    ancestral_step,
    check_inputs,
    denoise,
    noise_like,
    report,
)


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    eta: float = 0.0,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12) in VE coordinates.

    With eps_hat = (x - x0_hat) / sigma, x_next = x0_hat + sigma_down eps_hat + sigma_up z, where
    (sigma_down, sigma_up) split sigma_next by eta (``ancestral_step``): eta = 0 is the deterministic
    DDIM (= Euler on the probability-flow ODE), eta = 1 is DDPM with the posterior variance.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    grid = check_inputs(x, sigmas)
    for i in range(len(grid) - 1):
        s, s_next = grid[i], grid[i + 1]
        x0 = denoise(denoiser, x, s, extra_args)
        down, up = ancestral_step(s, s_next, eta)
        x = torch.lerp(x0, x, down / s)  # x0 + sigma_down * eps_hat, eps_hat = (x - x0) / sigma
        if up > 0:
            x = x.add_(noise_like(x, generator), alpha=up)
        report(callback, i, x, s, s_next, x0)
    return x


def sample_euler_ancestral(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    eta: float = 1.0,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """Euler-ancestral (k-diffusion's ``sample_euler_ancestral``): an Euler step to sigma_down, then
    noise sigma_up. x + (sigma_down - sigma) (x - x0) / sigma = x0 + sigma_down eps_hat, so this is the
    very update of DDIM(eta); the only difference is the default eta = 1."""
    return sample_ddim(
        denoiser, x, sigmas, eta=eta, extra_args=extra_args, callback=callback, generator=generator
    )
