"""The one contract every model meets: ``denoiser(x, sigma, **cond) -> x0``.

``x`` is in VE coordinates (x = x0 + sigma eps), ``sigma`` a scalar or (B,) tensor of VE noise
levels, and the result is the denoised estimate of x0 with the shape of ``x`` (k-diffusion's
contract). Samplers, guidance, likelihood and score distillation speak only this. A network trained
in a schedule's own coordinates on (x_t, t) is adapted to it by ``NetworkDenoiser``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from shared_core.diffusion import PREDICTIONS, append_dims, convert_prediction
from shared_core.schedules import Schedule

__all__ = ["Denoiser", "NetworkDenoiser", "SelfConditioning", "as_sigma_batch"]


class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor: ...


def as_sigma_batch(sigma: Tensor | float, x: Tensor) -> Tensor:
    """sigma as a (B,) tensor on x's device, float64 for schedule arithmetic."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or shape ({x.shape[0]},), got {tuple(s.shape)}")
    return s


class NetworkDenoiser(nn.Module):
    """Adapts ``net(x_t, t, **cond)`` trained on a schedule to the denoiser contract.

    At VE level sigma: alpha, s = the schedule's native (alpha_t, sigma_t) at t = t_from_sigma(sigma);
    the network sees x_t = alpha x (VP input scaling, EDM's c_in) and t * time_scale, and its output is
    converted from ``prediction`` to x0.

    Args:
        net: the network; for ``learned_variance`` it returns twice the channels along
            ``channel_dim`` (prediction, then the variance interpolation v in [-1, 1]).
        schedule: the schedule the network was trained with.
        prediction: what the network predicts: eps, x0, v or score.
        quantize: round t to the nearest training step (a discrete network never saw fractional t).
        clip_x0: clamp the x0 estimate to [-clip_x0, clip_x0] (DDPM/DDIM ``clip_sample``).
        return_variance: return (x0, v) instead of x0 (for DDPM with learned variance).
    """

    def __init__(
        self,
        net: Callable[..., Tensor],
        schedule: Schedule,
        prediction: str = "eps",
        *,
        quantize: bool = False,
        clip_x0: float | None = None,
        learned_variance: bool = False,
        return_variance: bool = False,
        channel_dim: int = 1,
    ) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
        if return_variance and not learned_variance:
            raise ValueError("return_variance needs learned_variance=True")
        self.net, self.schedule, self.prediction = net, schedule, prediction
        self.quantize, self.clip_x0 = quantize, clip_x0
        self.learned_variance, self.return_variance, self.channel_dim = (
            learned_variance,
            return_variance,
            channel_dim,
        )

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor | tuple[Tensor, Tensor]:
        s_ve = as_sigma_batch(sigma, x)
        t = self.schedule.t_from_sigma(s_ve, quantize=self.quantize)
        if self.schedule.variance_preserving:
            alpha = (1 + s_ve**2).rsqrt()
            s_native = s_ve * alpha
        else:
            alpha, s_native = torch.ones_like(s_ve), s_ve
        x_in = x * append_dims(alpha.to(x.dtype), x.ndim)
        out = self.net(x_in, (t * self.schedule.time_scale).to(x.dtype), **cond)
        v = None
        if self.learned_variance:
            out, v = out.chunk(2, dim=self.channel_dim)
        if self.prediction == "eps":  # x0 = (x_in - s eps) / alpha = x - sigma eps: one fused op
            x0 = torch.addcmul(x, append_dims(s_ve.to(x.dtype), x.ndim), out, value=-1)
        elif self.prediction == "x0":
            x0 = out
        else:
            x0 = convert_prediction(out, x_in, alpha.to(x.dtype), s_native.to(x.dtype), self.prediction, "x0")
        if self.clip_x0 is not None:
            x0 = x0.clamp(-self.clip_x0, self.clip_x0)
        if self.return_variance:
            return x0, v  # type: ignore[return-value]
        return x0


class SelfConditioning(nn.Module):
    """A denoiser whose network takes its own previous x0 estimate as ``self_cond=`` (Chen et al.
    2022; trained with ``diffusion_loss(..., self_cond_mask=)``).

    Each call passes the estimate of the previous call (zeros on the first call, or when the batch
    shape changes, e.g. under a batched classifier-free guidance pass each half keeps its own) and
    remembers the new one. It holds state across a sampler's calls, so make one per sampling run
    (or call ``reset``); samplers stay pure functions of (denoiser, x, sigmas).
    """

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.previous: Tensor | None = None

    def reset(self) -> None:
        self.previous = None

    def forward(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        prev = self.previous
        if prev is None or prev.shape != x.shape:
            prev = torch.zeros_like(x)
        x0 = self.denoiser(x, as_sigma_batch(sigma, x), **cond, self_cond=prev)
        self.previous = x0.detach()
        return x0
