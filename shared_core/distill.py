"""Score distillation sampling (SDS; Poole et al., "DreamFusion", 2022), over the denoiser contract.

A differentiable generator (a NeRF's render, or anything else) produces ``x``; a frozen diffusion
prior judges it. With ``x_s = x + sigma eps`` (VE coordinates) and the prior's ``D(x_s, sigma) = x0``
estimate, the prior's noise estimate is ``eps_hat = (x_s - D) / sigma`` and SDS pushes ``x`` along

    grad_x = w(sigma) * (eps_hat - eps) = w(sigma) * (x - D(x_s, sigma)) / sigma,

skipping the prior's Jacobian (DreamFusion's insight). ``w`` defaults to DreamFusion's
``1 - alpha_bar = sigma^2 / (1 + sigma^2)`` (a VP variance). The guidance scale belongs to the
denoiser: wrap the prior in ``shared_core.guidance.CFGDenoiser`` (DreamFusion uses ~100).

``sds_loss`` returns a scalar whose gradient with respect to ``x`` is exactly ``grad_x`` (averaged
over the batch), so it drops into any optimiser. Everything is a pure function of its inputs; the
caller draws ``sigma`` and ``eps`` (``sds_sigmas`` draws sigma for a range of schedule times).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from shared_core.denoiser import as_sigma_batch
from shared_core.diffusion import append_dims
from shared_core.random import rand
from shared_core.schedules import Schedule

__all__ = ["SDSOutput", "sds_gradient", "sds_loss", "sds_sigmas", "sds_weight"]

Weighting = Literal["vp_variance", "uniform", "snr_inverse"]


def sds_weight(sigma: Tensor, weighting: Weighting = "vp_variance") -> Tensor:
    """w(sigma) for VE noise levels ``sigma`` (B,): ``vp_variance`` sigma^2/(1+sigma^2) (DreamFusion),
    ``uniform`` 1, or ``snr_inverse`` sigma (weights eps_hat - eps by 1/sqrt(snr), i.e. grad = x - D)."""
    if weighting == "vp_variance":
        return sigma**2 / (1 + sigma**2)
    if weighting == "uniform":
        return torch.ones_like(sigma)
    if weighting == "snr_inverse":
        return sigma
    raise ValueError(f"unknown SDS weighting {weighting!r}; valid: vp_variance, uniform, snr_inverse")


@torch.no_grad()
def sds_gradient(
    denoiser: Callable[..., Tensor],
    x: Tensor,
    sigma: Tensor | float,
    noise: Tensor,
    *,
    weighting: Weighting = "vp_variance",
    **cond: Any,
) -> tuple[Tensor, Tensor]:
    """``(grad_x, x0_hat)``: the SDS direction for ``x`` (no graph) and the prior's denoised estimate."""
    s = as_sigma_batch(sigma, x)
    sx = append_dims(s.to(x.dtype), x.ndim)
    x0 = denoiser(x + sx * noise, s.to(x.dtype), **cond)
    w = append_dims(sds_weight(s, weighting).to(x.dtype), x.ndim)
    return w * (x - x0) / sx, x0


class SDSOutput(NamedTuple):
    loss: Tensor  # scalar; d loss / d x = grad / batch
    grad: Tensor  # (B, ...) the SDS direction
    x0: Tensor  # (B, ...) the prior's denoised estimate (for previews)


def sds_loss(
    denoiser: Callable[..., Tensor],
    x: Tensor,
    sigma: Tensor | float,
    noise: Tensor,
    *,
    weighting: Weighting = "vp_variance",
    grad_clip: float | None = None,
    **cond: Any,
) -> SDSOutput:
    """A scalar with ``d loss / d x = grad_x / B`` (``grad_clip`` clamps grad_x elementwise first)."""
    grad, x0 = sds_gradient(denoiser, x, sigma, noise, weighting=weighting, **cond)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    if grad_clip is not None:
        grad = grad.clamp(-grad_clip, grad_clip)
    target = (x - grad).detach()
    loss = 0.5 * (x - target).pow(2).flatten(1).sum(1).mean()
    return SDSOutput(loss, grad, x0)


def sds_sigmas(
    schedule: Schedule, batch: int, generator: torch.Generator, t_range: tuple[float, float] = (0.02, 0.98)
) -> Tensor:
    """(batch,) VE noise levels at schedule times drawn uniformly from ``t_range`` (fractions of the
    schedule's time axis, as DreamFusion's t ~ U[0.02, 0.98]). For a discrete schedule t is rounded
    to a training step, so a network that sees integer steps is told the noise level it got."""
    lo, hi = t_range
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"t_range must satisfy 0 <= lo < hi <= 1, got {t_range}")
    u = lo + (hi - lo) * rand((batch,), generator, dtype=torch.float64)
    t = u * _t_max(schedule)
    if getattr(schedule, "discrete", False):
        t = t.round()
    return schedule.sigma(t)


def _t_max(schedule: Schedule) -> float:
    """The end of a schedule's time axis (the number of steps for a discrete one, else 1)."""
    return float(getattr(schedule, "num_steps", 2) - 1) if getattr(schedule, "discrete", False) else 1.0
