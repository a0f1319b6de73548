"""What every sampler shares: input checks, denoiser calls, noise draws and the step callback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from shared_core.diffusion import append_dims
from shared_core.random import randn_like

Callback = Callable[[dict[str, Any]], None]


def check_inputs(x: Tensor, sigmas: Tensor) -> Tensor:
    """Validate a sampler's inputs; returns sigmas as float64 on x's device.

    sigmas must be 1-D, finite, non-negative and strictly decreasing, with at least two entries
    (one step); x must be finite with a batch dimension.
    """
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError("x must be a tensor with a leading batch dimension")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf")
    if not isinstance(sigmas, Tensor):
        sigmas = torch.as_tensor(sigmas)
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    if len(sigmas) < 2:
        raise ValueError("sigmas must hold at least 2 levels (steps >= 1)")
    if not torch.isfinite(sigmas).all():
        raise ValueError("sigmas contains NaN or Inf")
    if (sigmas < 0).any():
        raise ValueError("sigmas must be non-negative")
    if not (sigmas[1:] < sigmas[:-1]).all():
        raise ValueError("sigmas must be strictly decreasing")
    return sigmas.to(device=x.device, dtype=torch.float64)


def denoise(
    denoiser: Callable[..., Any], x: Tensor, sigma: Tensor, extra_args: dict[str, Any] | None
) -> Tensor:
    """Call the denoiser at a scalar level, check the result, return x0 (drops a learned variance)."""
    out = denoiser(x, sigma.to(x.dtype).expand(x.shape[0]), **(extra_args or {}))
    if isinstance(out, tuple):
        out = out[0]
    if out.shape != x.shape:
        raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
    return out


def to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma (Karras eq. 3)."""
    return (x - denoised) / append_dims(sigma.to(x.dtype), x.ndim)


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return randn_like(x, generator)


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """Split a step into a deterministic move to sigma_down and fresh noise sigma_up.

    sigma_up^2 = eta^2 sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2 is DDIM's sigma_t(eta)
    (Song et al. 2021, eq. 16) written in VE coordinates; eta = 1 is DDPM's posterior variance.
    """
    if eta == 0 or sigma_to == 0:
        return sigma_to, sigma_to.new_zeros(())
    up = eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).sqrt()
    up = torch.minimum(up, sigma_to)
    down = (sigma_to**2 - up**2).sqrt()
    return down, up


def report(
    callback: Callback | None, i: int, x: Tensor, sigma: Tensor, sigma_next: Tensor, denoised: Tensor
) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})
