"""What every sampler shares: input checks, denoiser calls, noise draws and the step callback."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from shared_core.random import randn_like

Callback = Callable[[dict[str, Any]], None]


def check_inputs(x: Tensor, sigmas: Tensor) -> list[float]:
    """Validate a sampler's inputs; returns sigmas as Python floats (scalar arithmetic on floats
    costs nothing next to 0-dim tensor ops, which matters for a cheap denoiser).

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
    return sigmas.double().tolist()


def sigma_batch(x: Tensor, sigma: float) -> Tensor:
    return torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)


def denoise(
    denoiser: Callable[..., Any], x: Tensor, sigma: float, extra_args: dict[str, Any] | None
) -> Tensor:
    """Call the denoiser at a scalar level, check the result, return x0 (drops a learned variance)."""
    out = denoiser(x, sigma_batch(x, sigma), **(extra_args or {}))
    if isinstance(out, tuple):
        out = out[0]
    if out.shape != x.shape:
        raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
    return out


# One generator for the whole batch, or one per batch row (as diffusers accepts): with a list, row
# i's noise comes from generator i alone, so a stochastic sampler's sample does not depend on the
# batch it was drawn in.
Generators = torch.Generator | Sequence[torch.Generator] | None


def noise_like(x: Tensor, generator: Generators) -> Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return randn_like(x, generator)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack([randn_like(x[i], g) for i, g in enumerate(generator)])


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step into a deterministic move to sigma_down and fresh noise sigma_up.

    sigma_up^2 = eta^2 sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2 is DDIM's sigma_t(eta)
    (Song et al. 2021, eq. 16) written in VE coordinates; eta = 1 is DDPM's posterior variance.
    """
    if eta == 0 or sigma_to == 0:
        return sigma_to, 0.0
    up = min(sigma_to, eta * math.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2))
    return math.sqrt(sigma_to**2 - up**2), up


def report(
    callback: Callback | None, i: int, x: Tensor, sigma: float, sigma_next: float, denoised: Tensor
) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})
