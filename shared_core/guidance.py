"""Classifier-free guidance (Ho & Salimans 2022) as one wrapper over any denoiser.

The guided estimate is eps = (1 + w) eps_c - w eps_u (Ho & Salimans, eq. 6; w = 0 is the plain
conditional model). Most libraries write it with the scale s = 1 + w:
eps = eps_u + s (eps_c - eps_u). Because eps = (x - x0) / sigma is affine in x0 at fixed (x, sigma),
guiding x0 is identical to guiding eps (or v), so the wrapper works on the denoiser contract and
guides every channel. The conditional and unconditional passes run as one batched forward.

Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of Itself") has the
same form with a weaker model (smaller or trained for less) in place of the unconditional branch:
x0 = x0_bad + s (x0_good - x0_bad), both under the same condition. It pushes samples away from
the errors the weaker model makes more of, without CFG's loss of variety.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from shared_core.denoiser import Denoiser, as_sigma_batch
from shared_core.diffusion import append_dims

__all__ = ["AutoGuidanceDenoiser", "CFGDenoiser", "rescale_guidance"]


def rescale_guidance(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    """Guidance rescale (Lin et al. 2024, eq. 15-16): match the per-sample std of the guided
    prediction to the conditional one, then blend by phi."""
    dims = tuple(range(1, guided.ndim))
    std_c = cond.std(dim=dims, keepdim=True)
    std_g = guided.std(dim=dims, keepdim=True).clamp(min=1e-12)
    return phi * guided * (std_c / std_g) + (1 - phi) * guided


class CFGDenoiser(nn.Module):
    """denoiser(x, sigma, **cond) guided towards ``cond`` and away from the null condition.

    Args:
        denoiser: any denoiser meeting the contract.
        w: guidance weight in the form (1 + w) eps_c - w eps_u (so the common scale is s = 1 + w).
        null_cond: the unconditional inputs, as a dict of tensors with batch size 1 (e.g. the null
            class index or the empty prompt's tokens and mask), or a callable batch_size -> dict. They
            are expanded to the batch once and cached.
        rescale: guidance-rescale factor phi (0 disables), applied to the eps prediction.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        w: float,
        null_cond: dict[str, Tensor] | Callable[[int], dict[str, Tensor]],
        rescale: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"rescale must be in [0, 1], got {rescale}")
        self.denoiser, self.w, self.null_cond, self.rescale = denoiser, float(w), null_cond, rescale
        self._null_cache: dict[tuple[int, torch.device], dict[str, Tensor]] = {}

    @classmethod
    def from_scale(
        cls, denoiser: Denoiser, scale: float, null_cond: Any, rescale: float = 0.0
    ) -> CFGDenoiser:
        """Build from the common scale s = 1 + w."""
        return cls(denoiser, scale - 1.0, null_cond, rescale)

    def _null(self, batch: int, device: torch.device) -> dict[str, Tensor]:
        key = (batch, device)
        if key not in self._null_cache:
            if callable(self.null_cond):
                null = self.null_cond(batch)
            else:
                null = {
                    k: v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v
                    for k, v in self.null_cond.items()
                }
            self._null_cache[key] = {k: v.to(device) for k, v in null.items()}
        return self._null_cache[key]

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        sigma_b = as_sigma_batch(sigma, x).to(x.dtype)
        if self.w == 0.0:
            return self.denoiser(x, sigma_b, **cond)
        null = self._null(x.shape[0], x.device)
        if set(null) != {k for k, v in cond.items() if isinstance(v, Tensor)}:
            raise ValueError(f"null condition keys {sorted(null)} do not match condition keys {sorted(cond)}")
        both = {
            k: torch.cat([v, null[k].to(v.dtype)]) if isinstance(v, Tensor) else v for k, v in cond.items()
        }
        out = self.denoiser(torch.cat([x, x]), torch.cat([sigma_b, sigma_b]), **both)
        x0_c, x0_u = out.chunk(2)
        x0 = x0_u + (1.0 + self.w) * (x0_c - x0_u)
        if self.rescale > 0:
            s = append_dims(sigma_b, x.ndim)
            eps_c, eps = (x - x0_c) / s, (x - x0) / s
            x0 = x - s * rescale_guidance(eps, eps_c, self.rescale)
        return x0


class AutoGuidanceDenoiser(nn.Module):
    """``bad(x) + scale (good(x) - bad(x))``: autoguidance by a weaker denoiser (Karras et al. 2024).

    Args:
        good: the denoiser being sampled.
        bad: a weaker denoiser of the same data and condition (e.g. an earlier checkpoint).
        scale: 1 is the good denoiser alone; larger values extrapolate away from the bad one.
    """

    def __init__(self, good: Denoiser, bad: Denoiser, scale: float) -> None:
        super().__init__()
        if scale < 0:
            raise ValueError(f"autoguidance scale must be >= 0, got {scale}")
        self.good, self.bad, self.scale = good, bad, float(scale)

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        sigma_b = as_sigma_batch(sigma, x).to(x.dtype)
        x0_good = self.good(x, sigma_b, **cond)
        if self.scale == 1.0:
            return x0_good
        x0_bad = self.bad(x, sigma_b, **cond)
        return x0_bad + self.scale * (x0_good - x0_bad)
